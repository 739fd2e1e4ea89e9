/*
 * `pitr-agent serve`: the node agent's HTTP service over mutual TLS, which the orchestrator
 * (orchestrator/agent-client.h) drives.
 *
 * Only clients with a certificate signed by the cluster CA get past the handshake
 * (agent/service-tls.h), which must end within seconds; connections are limited in number,
 * and running out of file descriptors pauses accepting instead of spinning
 * (agent/service-conn.h). Bodies are JSON, at most 64 KiB; every error is a JSON object
 * {"error": "..."}. Endpoints (v1):
 *
 *   GET  /v1/status           node, agent_version, pgdata, postgres {reachable, server_version,
 *                             server_version_num, in_recovery, error}, archiving {healthy,
 *                             archived_count, failed_count, last_archived_wal,
 *                             last_archived_time, last_failed_wal, last_failed_time} (from
 *                             pg_stat_archiver), job (the running or last job, or null)
 *   POST /v1/backup           {"label"?} -> 202 {"job": ID}: agent_backup() on a worker thread
 *   POST /v1/restore          {"backup"?: "latest"|ID, "target_dir"?: DIR (default PGDATA),
 *                             "target_kind"?: "latest"|"name"|"lsn"|"time"|"immediate",
 *                             "target_value"?, "delta"?: bool, "tablespace_map"?: {OID: DIR}}
 *                             -> 202 {"job": ID}: agent_node_restore() on a worker thread
 *   GET  /v1/jobs/ID          id, kind, state ("running"|"succeeded"|"failed"), started,
 *                             finished, progress {bytes_done, bytes_total, new_bytes, seconds},
 *                             params, result, error
 *   GET  /v1/jobs             the jobs kept (the last AGENT_SERVE_JOBS_KEPT), newest first
 *   POST /v1/postgres/stop    pg_ctl stop -m fast -w, as the owner of PGDATA -> {"ok": true}
 *   POST /v1/postgres/start   pg_ctl start -w -l LOG -> {"ok": true}; both do nothing when the
 *                             server is already in the state asked for ("changed": false)
 *   GET  /metrics             Prometheus text format
 *
 * One operation at a time: a backup, a restore, or a pg_ctl stop/start. Another POST meanwhile
 * gets 409 {"error", "running_job"}. Times are ISO 8601 UTC strings.
 *
 * The repository is opened for each job (writable for a backup, read-only for a restore) and
 * closed when it ends. When the agent runs as root, jobs create and read files with the file
 * system identity (setfsuid/setfsgid, per thread) of PGDATA's owner, so a backup leaves nothing
 * in the repository that archive_command, running as that owner, could not write, and a
 * restored data directory belongs to the server's user; pg_ctl runs as that user.
 *
 * The state file, when asked for, is rewritten atomically at start, on every job start and
 * end, and at exit: node, agent_version, pid, listen, started_at, stopped_at, pgdata,
 * running_job, and the last job of each kind with its result.
 *
 * SIGTERM or SIGINT: new operations are refused (503), a running job is waited for, then the
 * agent exits 0. A second signal exits at once (the job's repository writes are crash-safe;
 * the job is simply not finished).
 */
#pragma once

#include <stdint.h>

#define AGENT_SERVE_DEFAULT_PORT 18080
#define AGENT_SERVE_JOBS_KEPT    16
#define AGENT_SERVE_MAX_BODY     (64 * 1024)

typedef struct AgentServeParams {
    const char *listen_address; /* NULL: 0.0.0.0 */
    uint16_t port;              /* 0: any free port (logged and in the state file) */
    const char *tls_cert, *tls_key, *tls_ca; /* PEM files, all required */
    const char *state_file;     /* NULL: none */
    const char *node;
    const char *pgdata;         /* required: the node's data directory */
    const char *conninfo;       /* libpq connection string; NULL or "": PG* variables */
    const char *repo;
    const char *keyfile, *passphrase_file; /* else $PITR_KEY_FILE, $PITR_PASSPHRASE */
    const char *pg_bin;         /* NULL: `pg_config --bindir`, else /usr/lib/postgresql/15/bin */
    const char *pg_log;         /* NULL: <parent of PGDATA>/<node>-postgres.log */
    unsigned threads;           /* pipeline threads of a job; 0: one per CPU */
    unsigned pg_ctl_timeout;    /* seconds; 0: 60 */
    unsigned max_connections;   /* 0: 64, or half the open-file limit if that is less */
    unsigned handshake_timeout_s; /* 0: 5 */
} AgentServeParams;

/* Parse --listen: "ADDR:PORT", "[ADDR6]:PORT", "ADDR" or ":PORT" (NULL: 0.0.0.0:18080).
 * *ret_address is allocated. -EINVAL (logged) when it does not parse. */
int agent_serve_parse_listen(const char *arg, char **ret_address, uint16_t *ret_port);

/* Serve until SIGTERM or SIGINT. Returns 0 after a clean shutdown, or -errno, logged: -EINVAL
 * (missing option, bad certificate, key or CA file, no key source that works without a
 * terminal), -ENOENT / -EACCES (unreadable file, no pg_ctl), -EADDRINUSE (port busy). */
int agent_serve(const AgentServeParams *p);
