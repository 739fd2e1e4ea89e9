/*
 * The commit barrier: one consistent cut through every node's WAL, named by a commit sequence
 * number (CSN). docs/BARRIER.md explains the protocol and why it is safe.
 *
 * orch_barrier_run() draws the CSN from the coordinator's sequence and creates the restore
 * point "pitr_csn_<CSN>" on the nodes, as the configured adapter says:
 *
 *   plain  On the coordinator session: BEGIN; SET LOCAL lock_timeout to barrier.lock_timeout,
 *          idle_in_transaction_session_timeout to the barrier timeout (statement_timeout to
 *          one second more than either, so that a lock not granted in time reads as such);
 *          take pg_advisory_xact_lock(lock_key) (exclusive: the application's commit path
 *          holds the same key shared from drawing its CSN until its last COMMIT PREPARED);
 *          nextval(); pg_create_restore_point() sent to every node at once and collected (one
 *          round trip); COMMIT. The lock is transaction-level, so a server whose orchestrator
 *          stalls or dies releases it by itself within the timeout.
 *          Every commit that arrives while the exclusive request waits queues behind it, so
 *          an attempt that does not get the lock within lock_timeout rolls back (the commits
 *          go on), pauses (random, growing, at least as long as it waited) and tries again;
 *          the last attempt ends by barrier.deadline. No commit waits because of the barrier
 *          much longer than lock_timeout plus the time the lock is held.
 *   citus  nextval() on the coordinator, then citus_create_restore_point() there (Citus
 *          blocks distributed commits and writes the restore point on every worker itself).
 *          Only the coordinator's LSN is known: the workers' points are left empty.
 *   none   nextval(), then the restore points on every node with no barrier. A transaction
 *          that commits on several nodes can be cut in half: only for clusters whose
 *          transactions never span nodes.
 *
 * The barrier is bounded in time. Waiting for the lock is bounded by lock_timeout per attempt
 * and by the deadline over all attempts. Once the lock is held, a watchdog thread cancels
 * (PQcancel) whatever is still running when the timeout passes; the call then returns
 * -ETIMEDOUT. The caller never waits more than about one second past the deadline, even when
 * a server does not answer the cancel request either (PQcancel itself may block on a hung
 * host: that happens on the watchdog thread, never on the caller's); an attempt whose server
 * answers neither within lock_timeout nor a second later is cancelled the same way.
 *
 * Connections: conns[i] is an open connection to cfg->nodes[i], its own (not shared with
 * another node's entry), idle (no transaction, no query in flight), in blocking mode. The
 * coordinator's must be to the database the application's commit path uses: advisory locks
 * and the sequence live in one database.
 *
 * Node errors are logged once, naming the node ("node w1: could not create restore point:
 * ..."). After an error, a connection may be left in a transaction or with a query in flight
 * (a node that did not answer): close every connection whose PQtransactionStatus() is not
 * PQTRANS_IDLE. Restore points created before a failure stay in the WAL, harmless: their CSN
 * is never published, and the next run draws a new one.
 *
 * Errors: -EINVAL bad arguments (lock_timeout 0 or longer than the deadline) or connection not
 * idle; -ETIME plain: no attempt got the lock before the deadline (logged with a hint; nothing
 * was drawn or created: only the waits happened); -ETIMEDOUT a server did not answer in time,
 * or the barrier was held past the timeout (watchdog); -ECONNRESET a connection was lost;
 * -EIO an SQL error; -ENOMEM.
 */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "orchestrator/config.h"

#define ORCH_RESTORE_POINT_PREFIX "pitr_csn_"

typedef struct OrchRestorePoint {
    char lsn[24];      /* end of the restore point record as PostgreSQL prints it ("0/3000060");
                        * "" when not known (citus: the workers) */
    char walfile[32];  /* WAL segment holding that record (pg_walfile_name); citus workers:
                        * the segment current just after, which holds it or follows it */
    uint32_t timeline; /* the node's insert timeline, from walfile */
} OrchRestorePoint;

typedef struct OrchBarrierResult {
    uint64_t csn;
    char name[64];            /* "pitr_csn_<csn>" */
    OrchRestorePoint *points; /* one per config node, same order */
    size_t n_points;
    /* How long distributed commits were blocked, in milliseconds, as the orchestrator saw it
     * (round trips included, so upper bounds):
     *   lock_wait_ms  plain: in the attempt that got the lock, from asking for it to getting
     *                 it; every commit that arrived meanwhile waited behind the request
     *   held_ms       plain: from getting the lock to COMMIT answered; citus: the
     *                 citus_create_restore_point() call; none: 0
     *   blocked_ms    the longest a commit can have waited because of the barrier: the
     *                 granted attempt's lock_wait_ms + held_ms, or the longest wait of an
     *                 attempt that was refused, whichever is longer
     *   attempts      plain: attempts made, the last one granted; else 1 */
    double lock_wait_ms, held_ms, blocked_ms;
    unsigned attempts;
} OrchBarrierResult;

/* Runs the barrier of cfg->barrier_adapter with cfg's lock key, sequence and timeout. On
 * success fills *ret (free with orch_barrier_result_done()); on error *ret is untouched. */
int orch_barrier_run(const OrchConfig *cfg, PGconn *const *conns, OrchBarrierResult *ret);
/* Releases what a result holds and zeroes it; safe on a zeroed result. */
void orch_barrier_result_done(OrchBarrierResult *r);

/* Writes the SQL to run once on the coordinator (in the database of its conninfo) before the
 * first barrier: schema and sequence of the CSN source. Returns 0 or -EIO. */
int orch_barrier_setup_sql(const OrchConfig *cfg, FILE *f);
/* Writes a commented, copy-pastable example of the application's distributed commit path
 * under the plain protocol, with this configuration's lock key and sequence. 0 or -EIO. */
int orch_barrier_app_sql(const OrchConfig *cfg, FILE *f);
