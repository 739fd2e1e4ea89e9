/*
 * What the agent service knows about its PostgreSQL server, outside of backups: a quick probe
 * over libpq (version, recovery, pg_stat_archiver), and pg_ctl stop / start / status run as the
 * owner of the data directory.
 *
 * pg_ctl refuses to run as root, so when the agent is root every command runs in a child that
 * takes the owner's groups, gid and uid (read from the data directory) before exec. The child
 * gets its own process group, no descriptors of the agent beyond stdin, stdout and stderr, and
 * an environment without PITR_PASSPHRASE (the postmaster it starts would keep it for life).
 *
 * Functions return 0 or -errno; they log nothing at error level: the service turns their
 * results into HTTP replies, which is where the messages go.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- probe ---- */

typedef struct AgentPgProbe {
    bool reachable;
    char *error;          /* why not reachable (libpq's message, one line); NULL if reachable */
    char *server_version; /* current_setting('server_version') */
    int server_version_num;
    bool in_recovery;
    /* pg_stat_archiver; times in seconds since the epoch, 0 when never */
    int64_t archived_count, failed_count;
    char *last_archived_wal, *last_failed_wal; /* NULL when never */
    double last_archived_time, last_failed_time;
} AgentPgProbe;

/* Connect with `conninfo` ("" or NULL: libpq's PG* variables) within `timeout_s` seconds and
 * fill *ret. A server that cannot be reached is not an error: ret->reachable is false and
 * ret->error says why. Returns 0, or -ENOMEM. */
int agent_pg_probe(const char *conninfo, unsigned timeout_s, AgentPgProbe *ret);
void agent_pg_probe_clear(AgentPgProbe *p);
/* Archiving is healthy when the server answers and its last failure, if any, is older than
 * its last success. */
bool agent_pg_probe_archiving_healthy(const AgentPgProbe *p);

/* ---- who owns the data directory ---- */

typedef struct AgentPgOwner {
    uid_t uid;
    gid_t gid;
    char *name;
    gid_t *groups; /* supplementary groups of `name`, for setgroups() */
    int n_groups;
} AgentPgOwner;

/* The owner of `path` (the data directory; when it does not exist, of its parent) and that
 * user's groups. -ENOENT when neither exists or the uid has no passwd entry. */
int agent_pg_owner(const char *path, AgentPgOwner *ret);
void agent_pg_owner_clear(AgentPgOwner *o);

/* ---- binaries and pg_ctl ---- */

/* The directory of PostgreSQL's programs: `configured` if given, else `pg_config --bindir`,
 * else /usr/lib/postgresql/15/bin. The result must hold an executable pg_ctl: -ENOENT
 * otherwise. *ret is allocated. */
int agent_pg_bindir(const char *configured, char **ret);

typedef struct AgentPgCtlResult {
    int exit_status; /* pg_ctl's exit status; -1 when killed (timeout) */
    bool timed_out;
    unsigned kill_after_s; /* how long pg_ctl was given before it was killed */
    char *output;    /* stdout and stderr together, at most AGENT_PG_CTL_OUTPUT_MAX bytes */
} AgentPgCtlResult;

#define AGENT_PG_CTL_OUTPUT_MAX (64 * 1024)

typedef struct AgentPgCtlParams {
    const char *bindir;
    const char *pgdata;
    const char *log;        /* start: server log file (pg_ctl -l) */
    unsigned timeout_s;     /* pg_ctl -t; the child is killed 15 s after it */
    const AgentPgOwner *as; /* run as this user (when the agent is root); NULL: as we are */
} AgentPgCtlParams;

/* Run `pg_ctl -D PGDATA -w -t T ACTION` for ACTION "start" (with -l LOG), "stop" (-m fast) or
 * "status". Returns 0 once pg_ctl ran, whatever its exit status (status: 0 running, 3 not
 * running, 4 no data directory), or -errno when it could not be run. */
int agent_pg_ctl(const AgentPgCtlParams *p, const char *action, AgentPgCtlResult *ret);
void agent_pg_ctl_result_clear(AgentPgCtlResult *r);

/* The last `max` bytes of `text`, starting at a line boundary when one is near. */
const char *agent_text_tail(const char *text, size_t max);
