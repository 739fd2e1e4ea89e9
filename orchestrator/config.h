/*
 * The cluster configuration: one YAML file (pitr.yaml) naming the cluster, its repository,
 * the commit barrier, the CSN source, TLS material for calls to the agents, and the nodes.
 *
 *   cluster: demo                      # required, [A-Za-z0-9_.-]+
 *   repository:
 *     location: /var/lib/pitr/repo     # required
 *     key_file: /etc/pitr/repo.key     # at most one of key_file / passphrase_file; with
 *     passphrase_file: ...             # neither, PITR_PASSPHRASE or a prompt at use
 *   barrier:
 *     adapter: plain                   # plain | citus | none (default plain)
 *     lock_key: 7419                   # advisory lock key, int64 (default 7419)
 *     timeout: 5s                      # watchdog: the longest the lock is held (default 5s)
 *     lock_timeout: 50ms               # plain: one attempt's wait for the lock (default 50ms)
 *     deadline: 10s                    # plain: no new attempt after this long (default 10s);
 *                                      # at least lock_timeout
 *   csn:
 *     sequence: pitr.csn               # [schema.]name in the coordinator database (default)
 *   wal_timeout: 60s                   # wait for the archive to cover restore points
 *   tls: { ca: ..., cert: ..., key: ... }   # optional; cert and key go together
 *   nodes:                             # required, at least one, exactly one coordinator
 *     - name: coord                    # required, [A-Za-z0-9_.-]+, unique
 *       role: coordinator              # required: coordinator | worker
 *       conninfo: "host=... dbname=..."   # required, libpq keyword/value string or URI
 *       agent: "127.0.0.1:18080"       # required, host[:port] or [v6addr][:port], port 18080
 *       pgdata: /srv/pg/coord          # optional, absolute (a path on the node's host)
 *
 * Durations are "500ms", "5s", "2m", "1h" or a bare number of seconds (fractions allowed),
 * greater than zero and at most 24h. Relative paths under repository and tls are resolved
 * against the directory of the YAML file, which is made absolute at load; a repository
 * location that looks like a URL ("scheme://...") is left alone.
 *
 * Loading checks everything it can and logs every problem it finds, each as
 * "FILE:LINE:COLUMN: what is wrong (what was expected)", before returning -EINVAL: unknown
 * or duplicate keys, wrong YAML types, missing required keys, bad values, duplicate node
 * names, no or several coordinators. A YAML syntax error stops the parse at its position.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"
#include "orchestrator/agent-address.h"


typedef enum OrchBarrierAdapter {
    ORCH_BARRIER_PLAIN, /* advisory-lock barrier shared by the application's commit path */
    ORCH_BARRIER_CITUS, /* citus_create_restore_point() */
    ORCH_BARRIER_NONE,  /* restore points with no barrier: unsafe across nodes */
    _ORCH_BARRIER_MAX,
} OrchBarrierAdapter;

typedef enum OrchNodeRole {
    ORCH_ROLE_COORDINATOR,
    ORCH_ROLE_WORKER,
    _ORCH_ROLE_MAX,
} OrchNodeRole;

typedef struct OrchNode {
    char *name;
    OrchNodeRole role;
    char *conninfo;   /* as written; may hold a password, see orch_config_to_json() */
    char *agent;      /* normalized "host:port" ("[v6addr]:port") */
    char *agent_host; /* without brackets */
    uint16_t agent_port;
    char *pgdata; /* NULL when not given */
} OrchNode;

typedef struct OrchConfig {
    char *path; /* absolute path of the YAML file */
    char *cluster;

    char *repo_location;
    char *repo_key_file;        /* NULL when not given */
    char *repo_passphrase_file; /* NULL when not given */

    OrchBarrierAdapter barrier_adapter;
    int64_t barrier_lock_key;
    uint64_t barrier_timeout_ms;
    /* plain: every distributed commit that arrives while an attempt waits for the lock waits
     * too, so an attempt gives up after lock_timeout, lets them through and tries again, until
     * the deadline (docs/BARRIER.md) */
    uint64_t barrier_lock_timeout_ms;
    uint64_t barrier_deadline_ms;

    char *csn_sequence; /* "schema.name" or "name", checked to be a plain identifier */

    uint64_t wal_timeout_ms;

    char *tls_ca, *tls_cert, *tls_key; /* each NULL when not given */

    OrchNode *nodes; /* in file order; node indexes everywhere else refer to this order */
    size_t n_nodes;
    size_t coordinator; /* index of the one coordinator in nodes */
} OrchConfig;

#define ORCH_BARRIER_DEFAULT_LOCK_KEY        INT64_C(7419)
#define ORCH_BARRIER_DEFAULT_TIMEOUT_MS      UINT64_C(5000)
#define ORCH_BARRIER_DEFAULT_LOCK_TIMEOUT_MS UINT64_C(50)
#define ORCH_BARRIER_DEFAULT_DEADLINE_MS     UINT64_C(10000)
#define ORCH_CSN_DEFAULT_SEQUENCE            "pitr.csn"
#define ORCH_WAL_DEFAULT_TIMEOUT_MS          UINT64_C(60000)

/* Reads and checks the file. Returns 0 and a new config in *ret, -EINVAL when the file has
 * problems (all of them logged), or another -errno when it cannot be read (logged). */
int orch_config_load(const char *path, OrchConfig **ret);
OrchConfig *orch_config_free(OrchConfig *cfg);
DEFINE_CLEANUP_FUNC(OrchConfig *, orch_config_free)

/* The coordinator node; never NULL for a loaded config. */
const OrchNode *orch_config_coordinator(const OrchConfig *cfg);
/* The node called `name`, or NULL. */
const OrchNode *orch_config_find_node(const OrchConfig *cfg, const char *name);

/* "plain", "citus", "none" and back; parse returns -EINVAL for other strings. */
const char *orch_barrier_adapter_to_string(OrchBarrierAdapter a);
int orch_barrier_adapter_from_string(const char *s, OrchBarrierAdapter *ret);
const char *orch_node_role_to_string(OrchNodeRole r);

/* Checks that the barrier's lock_timeout is not longer than its deadline (after a change by
 * the command line, say); logs the problem naming `lock_timeout_what` and `deadline_what` (how
 * the user set them) and returns -EINVAL, else 0. */
int orch_config_check_barrier(const OrchConfig *cfg, const char *lock_timeout_what,
                              const char *deadline_what);

/* Parses a duration as the file accepts it ("500ms", "5s", "2m", "1h", "2.5"): 0 and
 * milliseconds in *ret_ms, or -EINVAL (not logged; callers know where the text came from). */
int orch_duration_parse(const char *s, uint64_t *ret_ms);

/* The effective configuration (defaults filled in, paths resolved) for `config show --json`.
 * Passwords in conninfo strings are replaced by "********"; text that is not UTF-8 (a path, a
 * decoded conninfo URI) is shown with those bytes as \xHH, or a URI with its escapes as written
 * ("user=%FF"). Returns a new reference, or NULL when out of memory. */
json_t *orch_config_to_json(const OrchConfig *cfg);
