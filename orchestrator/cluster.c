#include "orchestrator/cluster.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/basebackup.h"
#include "agent/pq.h"
#include "agent/wal-format.h"
#include "chunkstore/backend.h"
#include "chunkstore/tree.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"
#include "orchestrator/agent-client.h"
#include "orchestrator/barrier.h"
#include "orchestrator/timeline.h"

#define HOLDER_OBJECT "locks/cluster.holder"
#define POLL_MS       300

/* What a failure of a node (its server, its agent, its archive) returns from the operations
 * here, whatever the node's own error was: an agent's "busy" (409) is not this repository's
 * lock, nor its "bad request" (400) the user's command line. Each node's own error and message
 * stay in its NodeRun and in the restore result. */
#define NODE_FAILED (-EREMOTEIO)

/* ---- small helpers ---- */

static const char *json_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static uint64_t json_u64(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v)
         : json_is_real(v)    ? (uint64_t)json_real_value(v)
                              : 0;
}

/* ---- the cluster lock ---- */

typedef struct ClusterLock {
    CsLock *lock;
    CsRepo *repo;
} ClusterLock;

static int cluster_lock(CsRepo *repo, const char *what, ClusterLock *ret)
{
    CsLock *l = NULL;
    int r = cs_backend_lock(repo->backend, "cluster", CS_LOCK_EXCLUSIVE, false, &l);
    if (r == -EWOULDBLOCK || r == -EAGAIN) {
        uint8_t *p = NULL;
        size_t n = 0;
        json_t *h = NULL;
        if (cs_backend_get(repo->backend, HOLDER_OBJECT, 4096, &p, &n) == 0)
            h = json_loadb((const char *)p, n, 0, NULL);
        free(p);
        if (h)
            log_error("another cluster operation is running: %s (pid %" PRIu64 " on %s, "
                      "since %s)",
                      json_str(h, "operation"), json_u64(h, "pid"), json_str(h, "host"),
                      json_str(h, "since"));
        else
            log_error("another cluster operation is running on this repository");
        json_decref(h);
        return -EBUSY;
    }
    if (r < 0)
        return log_error_errno(r, "could not take the cluster lock: %m");
    char host[256] = "?", since[32];
    gethostname(host, sizeof(host) - 1);
    time_t t = time(NULL);
    strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    json_t *h = json_pack("{s:s,s:I,s:s,s:s}", "operation", what, "pid", (json_int_t)getpid(),
                          "host", host, "since", since);
    char *text = h ? json_dumps(h, JSON_COMPACT) : NULL;
    /* Only for the message above: a failure to write it does not stop the operation. */
    if (text)
        cs_backend_put(repo->backend, HOLDER_OBJECT, text, strlen(text), true);
    free(text);
    json_decref(h);
    *ret = (ClusterLock){ .lock = l, .repo = repo };
    return 0;
}

static void cluster_unlock(ClusterLock *l)
{
    if (!l->lock)
        return;
    cs_backend_delete(l->repo->backend, HOLDER_OBJECT);
    cs_lock_release(l->lock);
    l->lock = NULL;
}

/* ---- per-node state ---- */

typedef struct NodeRun {
    const OrchNode *node;
    size_t index; /* in cfg->nodes */
    OrchAgentClient *agent;
    PGconn *conn;
    char *job_id;
    bool is_running, is_done;
    double unreachable_since; /* orch_agent_poll_job */
    int error;
    char *message;
    json_t *result; /* the finished job's result */
    uint64_t bytes_done, bytes_total;
    double seconds;
    /* restore */
    char *backup_id;
    uint32_t timeline;
    char lsn[24];
} NodeRun;

static void node_fail(NodeRun *n, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void node_fail(NodeRun *n, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    log_error("node %s: %s", n->node->name, msg ? msg : "failed");
    if (!n->error) {
        n->error = r < 0 ? r : -EIO;
        free(n->message);
        n->message = msg;
    } else
        free(msg);
}

static void nodes_free(NodeRun *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        orch_agent_client_free(v[i].agent);
        if (v[i].conn)
            PQfinish(v[i].conn);
        free(v[i].job_id);
        free(v[i].message);
        free(v[i].backup_id);
        json_decref(v[i].result);
    }
    free(v);
}

static int nodes_new(const OrchConfig *cfg, bool with_sql, NodeRun **ret)
{
    NodeRun *v = calloc(cfg->n_nodes, sizeof(*v));
    if (!v)
        return -ENOMEM;
    OrchTlsFiles tls = { .ca = cfg->tls_ca, .cert = cfg->tls_cert, .key = cfg->tls_key };
    int r = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        NodeRun *n = &v[i];
        n->node = &cfg->nodes[i];
        n->index = i;
        int q = orch_agent_client_new(n->node->agent, &tls, &n->agent);
        if (q < 0) {
            /* The configuration's problem, not the node's. */
            if (q == -EINVAL && (!tls.ca || !tls.cert || !tls.key))
                node_fail(n, q, "cannot call agent %s: the configuration has no tls ca, cert "
                                "and key", n->node->agent);
            else
                node_fail(n, q, "bad agent address \"%s\"", n->node->agent);
            r = q;
            continue;
        }
        if (!with_sql)
            continue;
        n->conn = PQconnectdb(n->node->conninfo);
        if (!n->conn || PQstatus(n->conn) != CONNECTION_OK) {
            const char *e = n->conn ? PQerrorMessage(n->conn) : "out of memory";
            node_fail(n, -ECONNREFUSED, "could not connect to PostgreSQL: %.*s",
                      pq_message_len(e), e);
            if (r == 0)
                r = NODE_FAILED;
        }
    }
    *ret = v;
    return r;
}

/* ---- progress ---- */

static void draw_progress(const NodeRun *v, size_t n, bool redraw, const char *what)
{
    if (redraw)
        fprintf(stderr, "\033[%zuA", n);
    for (size_t i = 0; i < n; i++) {
        const NodeRun *x = &v[i];
        const char *state = x->error ? "failed" : x->is_done ? "done" : x->is_running ? what : "waiting";
        double mb = (double)x->bytes_done / 1e6;
        fprintf(stderr, "\r\033[K  %-16s %9.1f / %-9.1f MB %8.1f MB/s  %s\n", x->node->name, mb,
                (double)x->bytes_total / 1e6, x->seconds > 0 ? mb / x->seconds : 0.0, state);
    }
}

/* ---- jobs on every agent ---- */

/* The job's parameters for one node; NULL when they cannot be made, after node_fail() saying
 * why (else the failure is taken for a lack of memory). */
typedef json_t *(*JobBodyFn)(NodeRun *n, void *userdata);

/* Run one job kind on the selected nodes, at most `parallel` at once, until all have finished.
 * Returns 0 if all succeeded, else NODE_FAILED (every failure is logged by node). */
static int run_jobs(NodeRun *v, size_t n, const char *kind, JobBodyFn body, void *userdata,
                    unsigned parallel, bool progress)
{
    size_t next = 0, running = 0, finished = 0;
    bool drawn = false;
    if (parallel == 0)
        parallel = (unsigned)n;
    for (size_t i = 0; i < n; i++)
        if (v[i].error) /* failed before the job */
            finished++;
    while (finished < n) {
        while (running < parallel && next < n) {
            NodeRun *x = &v[next++];
            if (x->error)
                continue;
            json_t *b = body(x, userdata);
            int r = b ? orch_agent_start_job(x->agent, kind, b, &x->job_id) : -ENOMEM;
            json_decref(b);
            if (!b && x->error) {
                finished++;
                continue;
            }
            if (r < 0) {
                node_fail(x, r, "could not start the %s: %s", kind,
                          orch_agent_client_error(x->agent));
                finished++;
                continue;
            }
            x->is_running = true;
            running++;
        }
        sleep_ms(POLL_MS);
        for (size_t i = 0; i < n; i++) {
            NodeRun *x = &v[i];
            if (!x->is_running)
                continue;
            json_t *j;
            int r = orch_agent_poll_job(x->agent, x->job_id, &x->unreachable_since, &j);
            if (j) {
                json_t *pr = json_object_get(j, "progress");
                x->bytes_done = json_u64(pr, "bytes_done");
                x->bytes_total = json_u64(pr, "bytes_total");
                x->seconds = json_number_value(json_object_get(pr, "seconds"));
            }
            if (r == 0) {
                x->is_done = true;
                x->result = json_incref(json_object_get(j, "result"));
            } else if (r == -EIO && j) {
                node_fail(x, r, "%s failed: %s", kind, json_str(j, "error"));
            } else if (r < 0) {
                node_fail(x, r, "lost track of the %s job: %s", kind,
                          orch_agent_client_error(x->agent));
            }
            json_decref(j);
            if (x->is_done || x->error) {
                x->is_running = false;
                running--;
                finished++;
            }
        }
        if (progress) {
            draw_progress(v, n, drawn, kind);
            drawn = true;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (v[i].error)
            return NODE_FAILED;
    return 0;
}

/* ---- create ---- */

static json_t *backup_body(NodeRun *n, void *userdata)
{
    (void)n;
    const char *label = userdata;
    return label ? json_pack("{s:s}", "label", label) : json_object();
}

/* The node's current timeline, its history and its system identifier, from the server. */
static int node_timeline(NodeRun *n, OrchTimelineHistory *ret_history, char *ret_sysid,
                         size_t sysid_size)
{
    _cleanup_(PQclearp) PGresult *q = PQexec(
            n->conn, "SELECT pg_walfile_name(pg_current_wal_lsn()), system_identifier::text "
                     "FROM pg_control_system()");
    if (PQresultStatus(q) != PGRES_TUPLES_OK || PQntuples(q) != 1) {
        const char *e = PQresultErrorMessage(q);
        node_fail(n, -EIO, "could not read its timeline: %.*s", pq_message_len(e), e);
        return NODE_FAILED;
    }
    const char *walfile = PQgetvalue(q, 0, 0);
    char tli_hex[9] = "";
    if (strlen(walfile) == 24)
        memcpy(tli_hex, walfile, 8);
    uint32_t tli = (uint32_t)strtoul(tli_hex, NULL, 16);
    snprintf(ret_sysid, sysid_size, "%s", PQgetvalue(q, 0, 1));

    /* Timeline 1 has no history. Every later one has its file in pg_wal/, written at the
     * promotion that began it (or fetched by recovery), and kept there. */
    char path[32];
    snprintf(path, sizeof(path), "pg_wal/%08X.history", tli);
    _cleanup_(PQclearp) PGresult *h = NULL;
    const char *text = NULL;
    if (tli > 1) {
        const char *param = path;
        h = PQexecParams(n->conn, "SELECT pg_read_file($1)", 1, NULL, &param, NULL, NULL, 0);
        if (PQresultStatus(h) != PGRES_TUPLES_OK || PQntuples(h) != 1) {
            const char *e = PQresultErrorMessage(h);
            const char *state = PQresultErrorField(h, PG_DIAG_SQLSTATE);
            node_fail(n, -EIO, "could not read the history of its timeline %u (%s): %.*s%s", tli,
                      path, pq_message_len(e), e,
                      state && strcmp(state, "42501") == 0
                              ? "\nHINT: the role in the conninfo needs pg_read_server_files, "
                                "or EXECUTE on pg_read_file(text)"
                              : "");
            return NODE_FAILED;
        }
        text = PQgetvalue(h, 0, 0);
    }
    unsigned line = 0;
    int r = orch_timeline_history_parse(tli, text, ret_history, &line);
    if (r == -EINVAL) {
        node_fail(n, r, "%s of timeline %u does not parse (line %u)", path, tli, line);
        return NODE_FAILED;
    }
    return r;
}

/*
 * For --restore-point-only: the node's newest base backup that recovers along the timeline the
 * node is on now (orchestrator/timeline.h). After a restore to an earlier point the newest
 * backup may belong to the abandoned timeline, or to the stretch of an ancestor after the
 * switch: recovery from it would never reach a restore point made now. Says which backup it
 * took and which newer ones it passed over.
 */
static int backup_on_timeline(const CsSnapshot *catalog, size_t n_catalog, NodeRun *n)
{
    OrchTimelineHistory h;
    char sysid[32];
    int r = node_timeline(n, &h, sysid, sizeof(sysid));
    if (r < 0)
        return r;
    unsigned passed_over = 0;
    for (size_t i = n_catalog; i-- > 0 && !n->backup_id;) { /* oldest first: from the end */
        const CsSnapshot *s = &catalog[i];
        if (strcmp(s->kind, AGENT_BASEBACKUP_KIND) != 0 || strcmp(s->name, n->node->name) != 0)
            continue;
        uint32_t tli = (uint32_t)json_u64(s->meta, "timeline");
        const char *start = json_str(s->meta, "start_lsn"), *stop = json_str(s->meta, "stop_lsn");
        const char *backup_sysid = json_str(s->meta, "system_identifier");
        uint64_t start_lsn = 0, stop_lsn = 0, end = 0;
        char why[128] = "";
        if (*backup_sysid && strcmp(backup_sysid, sysid) != 0)
            snprintf(why, sizeof(why), "it is of another database system");
        else if (cs_wal_lsn_parse(start, &start_lsn) < 0 || tli == 0)
            snprintf(why, sizeof(why), "it records no timeline or start LSN");
        else if (*stop && cs_wal_lsn_parse(stop, &stop_lsn) < 0)
            snprintf(why, sizeof(why), "it records a bad stop LSN");
        else if (!orch_timeline_history_find(&h, tli, &end))
            snprintf(why, sizeof(why), "timeline %u is not on the node's history", tli);
        else if (!orch_timeline_history_has_backup(&h, tli, start_lsn, stop_lsn))
            snprintf(why, sizeof(why),
                     "on the node's history, timeline %u ends at %X/%X, before the backup "
                     "was over",
                     tli, (unsigned)(end >> 32), (unsigned)end);
        if (*why) {
            log_info("node %s: passing over base backup %s (timeline %u, %s to %s): %s",
                     n->node->name, s->id, tli, start, stop, why);
            passed_over++;
            continue;
        }
        if (!(n->backup_id = strdup(s->id))) {
            orch_timeline_history_done(&h);
            return -ENOMEM;
        }
        log_info("node %s: on timeline %u; restore point against base backup %s (timeline %u, "
                 "%s to %s)",
                 n->node->name, h.tli, s->id, tli, start, stop);
    }
    if (!n->backup_id) {
        if (passed_over)
            node_fail(n, -ENOENT,
                      "has no base backup on the history of its timeline %u (%u newer ones are "
                      "not): run a full create first",
                      h.tli, passed_over);
        else
            node_fail(n, -ENOENT, "has no base backup: run a full create first");
        r = NODE_FAILED;
    }
    orch_timeline_history_done(&h);
    return r;
}

/* After pg_switch_wal(), the segment holding each restore point must reach the archive. */
static int wait_archived(const OrchConfig *cfg, CsRepo *repo, NodeRun *v, size_t n,
                         const OrchBarrierResult *br)
{
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        _cleanup_(PQclearp) PGresult *q = PQexec(v[i].conn, "SELECT pg_switch_wal()");
        if (PQresultStatus(q) != PGRES_TUPLES_OK) {
            node_fail(&v[i], -EIO, "pg_switch_wal() failed: %s", PQresultErrorMessage(q));
            r = NODE_FAILED;
        }
    }
    if (r < 0)
        return r;
    double deadline = mono_now() + (double)cfg->wal_timeout_ms / 1000.0;
    for (size_t i = 0; i < n; i++) {
        const OrchRestorePoint *pt = &br->points[v[i].index];
        CsWalName wal;
        char name[CS_WAL_OBJECT_NAME_MAX];
        if (cs_wal_name_parse(pt->walfile, &wal) < 0 ||
            cs_wal_object_name(v[i].node->name, &wal, name, sizeof(name)) < 0) {
            node_fail(&v[i], -EPROTO, "restore point in an unexpected WAL file \"%s\"",
                      pt->walfile);
            return NODE_FAILED;
        }
        uint64_t size;
        while (cs_backend_stat(repo->backend, name, &size) < 0) {
            if (mono_now() > deadline) {
                _cleanup_(PQclearp) PGresult *q = PQexec(
                    v[i].conn, "SELECT coalesce(last_archived_wal, '-'), "
                               "coalesce(last_failed_wal, '-') FROM pg_stat_archiver");
                node_fail(&v[i], -ETIMEDOUT,
                          "WAL file %s with restore point %s was not archived within %.0f s "
                          "(pg_stat_archiver: last archived %s, last failed %s); check "
                          "archive_command and that its --node is \"%s\"",
                          pt->walfile, br->name, (double)cfg->wal_timeout_ms / 1000.0,
                          PQresultStatus(q) == PGRES_TUPLES_OK ? PQgetvalue(q, 0, 0) : "?",
                          PQresultStatus(q) == PGRES_TUPLES_OK ? PQgetvalue(q, 0, 1) : "?",
                          v[i].node->name);
                return NODE_FAILED;
            }
            sleep_ms(100);
        }
    }
    return 0;
}

/* The snapshot's tree: one directory per node holding its base backup's tree. */
static int publish(const OrchConfig *cfg, CsRepo *repo, NodeRun *v, size_t n,
                   const OrchBarrierResult *br, const OrchCreateParams *p, OrchCreateResult *ret)
{
    CsDirEntry *entries = calloc(n, sizeof(*entries));
    json_t *nodes = json_array();
    int r = entries && nodes ? 0 : -ENOMEM;
    for (size_t i = 0; r == 0 && i < n; i++) {
        CsSnapshot base = { 0 };
        if ((r = cs_catalog_find(repo, v[i].backup_id, &base)) < 0) {
            node_fail(&v[i], r, "base backup %s cannot be read", v[i].backup_id);
            break;
        }
        const OrchRestorePoint *pt = &br->points[v[i].index];
        /* The node's directory is its data directory: its mode and owner when the base backup
         * recorded them (root's 0700 for backups of earlier versions). */
        json_int_t mode = S_IFDIR | 0700, uid = 0, gid = 0;
        json_t *ra = json_object_get(base.meta, "root_attr");
        if (ra && json_unpack(ra, "{s:I, s:I, s:I}", "mode", &mode, "uid", &uid, "gid", &gid) < 0)
            mode = S_IFDIR | 0700, uid = gid = 0;
        entries[i] = (CsDirEntry){ .type = CS_ENTRY_DIR,
                                   .mode = (uint32_t)mode,
                                   .uid = (uint32_t)uid,
                                   .gid = (uint32_t)gid,
                                   .mtime_sec = base.time,
                                   .mtime_nsec = base.time_nsec,
                                   .name = strdup(v[i].node->name) };
        if (!entries[i].name || cs_content_ref_copy(&base.root, &entries[i].content) < 0)
            r = -ENOMEM;
        json_t *m = base.meta;
        json_array_append_new(
            nodes, json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:O*}", "name",
                             v[i].node->name, "role", orch_node_role_to_string(v[i].node->role),
                             "base_backup", base.id, "restore_point_lsn", pt->lsn, "walfile",
                             pt->walfile, "timeline", (int)pt->timeline, "system_identifier",
                             json_str(m, "system_identifier"), "backup_start_lsn",
                             json_str(m, "start_lsn"), "backup_stats",
                             json_object_get(m, "stats")));
        cs_snapshot_clear(&base);
    }
    CsSnapshot snap = { 0 };
    if (r == 0) {
        _cleanup_(cs_writer_freep) CsWriter *w = NULL;
        if ((r = cs_writer_new(repo, NULL, &w)) == 0 &&
            (r = cs_dir_store(w, entries, n, &snap.root)) == 0)
            r = cs_writer_flush(w);
        if (r < 0)
            log_error_errno(r, "could not write the snapshot's tree: %m");
    }
    cs_dir_entries_free(entries, entries ? n : 0);
    if (r == 0) {
        snap.name = strdup(p->label ? p->label : cfg->cluster);
        snap.kind = strdup(ORCH_SNAPSHOT_KIND);
        snap.meta = json_pack("{s:s,s:I,s:s,s:s*,s:{s:s,s:f,s:f,s:f,s:i},s:b,s:o}", "cluster",
                              cfg->cluster, "csn", (json_int_t)br->csn, "restore_point",
                              br->name, "label", p->label, "barrier", "adapter",
                              orch_barrier_adapter_to_string(cfg->barrier_adapter),
                              "lock_wait_ms", br->lock_wait_ms, "held_ms", br->held_ms,
                              "blocked_ms", br->blocked_ms, "attempts", (int)br->attempts,
                              "restore_point_only", p->restore_point_only, "nodes", nodes);
        nodes = NULL;
        r = !snap.name || !snap.kind || !snap.meta ? -ENOMEM : cs_catalog_add(repo, &snap);
        if (r == 0)
            memcpy(ret->snapshot_id, snap.id, sizeof(ret->snapshot_id));
        else
            log_error_errno(r, "could not record the snapshot: %m");
    }
    json_decref(nodes);
    cs_snapshot_clear(&snap);
    return r;
}

int orch_snapshot_create(const OrchConfig *cfg, CsRepo *repo, const OrchCreateParams *p,
                         OrchCreateResult *ret)
{
    double t0 = mono_now();
    *ret = (OrchCreateResult){ 0 };
    ClusterLock lock = { 0 };
    int r = cluster_lock(repo, p->restore_point_only ? "create --restore-point-only" : "create",
                         &lock);
    if (r < 0)
        return r;
    NodeRun *v = NULL;
    size_t n = cfg->n_nodes;
    OrchBarrierResult br = { 0 };
    bool has_barrier = false;
    if ((r = nodes_new(cfg, true, &v)) < 0)
        goto out;

    if (p->restore_point_only) {
        CsSnapshot *catalog = NULL;
        size_t n_catalog = 0;
        if ((r = cs_catalog_list(repo, &catalog, &n_catalog)) < 0)
            log_error_errno(r, "could not list the base backups: %m");
        /* Every node, so that each one's problem is told at once. */
        for (size_t i = 0; i < n && (r == 0 || r == NODE_FAILED); i++) {
            int q = backup_on_timeline(catalog, n_catalog, &v[i]);
            if (q < 0 && r == 0)
                r = q;
        }
        cs_snapshots_free(catalog, n_catalog);
    } else {
        log_info("backing up %zu nodes", n);
        r = run_jobs(v, n, "backup", backup_body, (void *)(uintptr_t)p->label, p->parallel,
                     p->progress);
        for (size_t i = 0; r == 0 && i < n; i++) {
            const char *id = json_str(v[i].result, "snapshot_id");
            if (!*id) {
                node_fail(&v[i], -EPROTO, "the agent's backup result names no snapshot");
                r = NODE_FAILED;
            } else if (!(v[i].backup_id = strdup(id)))
                r = -ENOMEM;
        }
    }
    if (r < 0)
        goto out;

    PGconn **conns = calloc(n, sizeof(*conns));
    if (!conns) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        conns[i] = v[i].conn;
    r = orch_barrier_run(cfg, conns, &br);
    free(conns);
    if (r < 0) {
        if (r == -ETIME)
            log_error("the commit barrier failed: not granted before its deadline");
        else
            log_error_errno(r, "the commit barrier failed: %m");
        /* Connections left mid-transaction are closed, as barrier.h asks. */
        for (size_t i = 0; i < n; i++)
            if (v[i].conn && PQtransactionStatus(v[i].conn) != PQTRANS_IDLE) {
                PQfinish(v[i].conn);
                v[i].conn = NULL;
            }
        goto out;
    }
    has_barrier = true;
    ret->csn = br.csn;
    ret->barrier_lock_wait_ms = br.lock_wait_ms;
    ret->barrier_held_ms = br.held_ms;
    ret->barrier_blocked_ms = br.blocked_ms;
    ret->barrier_attempts = br.attempts;
    log_info("restore point %s on %zu nodes; distributed commits blocked for %.1f ms at most "
             "(waited %.1f ms for the lock, held it %.1f ms; attempt %u)",
             br.name, n, br.blocked_ms, br.lock_wait_ms, br.held_ms, br.attempts);
    if ((r = wait_archived(cfg, repo, v, n, &br)) < 0)
        goto out;
    r = publish(cfg, repo, v, n, &br, p, ret);
out:
    if (has_barrier)
        orch_barrier_result_done(&br);
    nodes_free(v, n);
    cluster_unlock(&lock);
    ret->seconds = mono_now() - t0;
    return r;
}

/* ---- restore ---- */

typedef struct RestoreCtx {
    const OrchRestoreParams *p;
    CsRepo *repo;
    const char *restore_point;
} RestoreCtx;

/* Map the tablespaces of the node's base backup to <dir>.tablespaces/<oid>, beside the copy's
 * data directory `dir`: a copy must not write to their original locations, which the running
 * node may be using on the same host. A backup whose record cannot be read fails the node. */
static int add_side_tablespace_map(RestoreCtx *ctx, NodeRun *n, const char *dir, json_t *b)
{
    /* By its full id: a record elsewhere in the catalog that cannot be read says nothing of
     * this one. */
    _cleanup_(cs_snapshot_clear) CsSnapshot base_record = { 0 };
    const CsSnapshot *base = &base_record;
    int r = cs_catalog_find(ctx->repo, n->backup_id, &base_record);
    if (r < 0) {
        node_fail(n, r, "cannot read base backup %s to place its tablespaces: %s", n->backup_id,
                  strerror(-r));
        return r;
    }
    json_t *map = json_object(), *o;
    size_t i;
    r = map ? 0 : -ENOMEM;
    json_array_foreach (json_object_get(base->meta, "tablespaces"), i, o) {
        const char *oid = json_string_value(json_object_get(o, "oid"));
        char *path = NULL;
        if (r < 0 || !oid)
            continue;
        if (asprintf(&path, "%s.tablespaces/%s", dir, oid) < 0)
            path = NULL; /* undefined after a failure */
        if (!path || json_object_set_new(map, oid, json_string(path)) < 0)
            r = -ENOMEM;
        free(path);
    }
    if (r == 0 && json_object_size(map) > 0)
        r = json_object_set(b, "tablespace_map", map) < 0 ? -ENOMEM : 0;
    json_decref(map);
    return r;
}

static json_t *restore_body(NodeRun *n, void *userdata)
{
    RestoreCtx *ctx = userdata;
    json_t *b = json_pack("{s:s,s:s,s:s,s:b}", "backup", n->backup_id, "target_kind", "name",
                          "target_value", ctx->restore_point, "delta", ctx->p->target_dir == NULL);
    /* 0: not recorded (Citus workers in snapshots of earlier versions); the agent then
     * follows the latest timeline to the named point. */
    if (b && n->timeline > 0 &&
        json_object_set_new(b, "target_timeline", json_integer(n->timeline)) < 0) {
        json_decref(b);
        return NULL;
    }
    if (b && ctx->p->target_dir) {
        char *dir = NULL;
        if (asprintf(&dir, "%s/%s", ctx->p->target_dir, n->node->name) < 0)
            dir = NULL; /* undefined after a failure */
        if (!dir || json_object_set_new(b, "target_dir", json_string(dir)) < 0 ||
            add_side_tablespace_map(ctx, n, dir, b) < 0) {
            free(dir);
            json_decref(b);
            return NULL;
        }
        free(dir);
    }
    return b;
}

/* Match the snapshot's nodes with the configuration's. */
static int match_nodes(const OrchConfig *cfg, const CsSnapshot *s, bool force, NodeRun *v,
                       bool *selected)
{
    json_t *nodes = json_object_get(s->meta, "nodes");
    size_t n_snap = json_array_size(nodes);
    int problems = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        selected[i] = false;
        for (size_t k = 0; k < n_snap; k++) {
            json_t *o = json_array_get(nodes, k);
            if (strcmp(json_str(o, "name"), cfg->nodes[i].name) != 0)
                continue;
            selected[i] = true;
            v[i].backup_id = strdup(json_str(o, "base_backup"));
            v[i].timeline = (uint32_t)json_u64(o, "timeline");
            if (!v[i].backup_id)
                return -ENOMEM;
        }
        if (!selected[i]) {
            log_warning("node %s is not in snapshot %s", cfg->nodes[i].name, s->id);
            problems++;
        }
    }
    for (size_t k = 0; k < n_snap; k++) {
        const char *name = json_str(json_array_get(nodes, k), "name");
        if (!orch_config_find_node(cfg, name)) {
            log_warning("snapshot %s has node %s, which the configuration does not", s->id,
                        name);
            problems++;
        }
    }
    if (problems && !force)
        return log_error_errno(-EINVAL,
                               "the cluster does not match snapshot %s\nHINT: --force restores "
                               "the nodes both have and leaves the others alone",
                               s->id);
    return 0;
}

/* Wait until the node has finished recovery and promoted; note where it stopped. */
static void wait_promoted(const OrchConfig *cfg, NodeRun *x)
{
    double deadline = mono_now() + 10.0 * (double)cfg->wal_timeout_ms / 1000.0;
    while (mono_now() < deadline) {
        if (x->conn)
            PQfinish(x->conn);
        x->conn = PQconnectdb(x->node->conninfo);
        if (PQstatus(x->conn) == CONNECTION_OK) {
            _cleanup_(PQclearp) PGresult *q = PQexec(
                x->conn, "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, '')");
            if (PQresultStatus(q) == PGRES_TUPLES_OK && strcmp(PQgetvalue(q, 0, 0), "f") == 0) {
                snprintf(x->lsn, sizeof(x->lsn), "%s", PQgetvalue(q, 0, 1));
                return;
            }
        }
        sleep_ms(200);
    }
    node_fail(x, -ETIMEDOUT, "did not finish recovery in time; see its server log");
}

int orch_snapshot_restore(const OrchConfig *cfg, CsRepo *repo, const char *spec,
                          const OrchRestoreParams *p, OrchRestoreResult *ret)
{
    double t0 = mono_now();
    *ret = (OrchRestoreResult){ 0 };
    ClusterLock lock = { 0 };
    int r = cluster_lock(repo, "restore", &lock);
    if (r < 0)
        return r;
    CsSnapshot s = { 0 };
    NodeRun *all = NULL, *v = NULL;
    bool *selected = calloc(cfg->n_nodes, sizeof(*selected));
    size_t n = 0;
    if (!selected) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = cs_catalog_find_or_log(repo, spec, &s)) < 0)
        goto out;
    if (strcmp(s.kind, ORCH_SNAPSHOT_KIND) != 0) {
        r = log_error_errno(-EINVAL, "snapshot %s is a %s, not a cluster snapshot", s.id, s.kind);
        goto out;
    }
    const char *rp = json_str(s.meta, "restore_point");
    memcpy(ret->snapshot_id, s.id, sizeof(ret->snapshot_id));
    ret->csn = json_u64(s.meta, "csn");
    if ((r = nodes_new(cfg, false, &all)) < 0 || (r = match_nodes(cfg, &s, p->force, all, selected)) < 0)
        goto out;
    /* Work on the selected nodes only, in configuration order. */
    v = calloc(cfg->n_nodes, sizeof(*v));
    if (!v) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (selected[i]) {
            v[n++] = all[i];
            all[i] = (NodeRun){ 0 };
        }

    bool in_place = p->target_dir == NULL;
    if (in_place) {
        log_info("stopping %zu nodes", n);
        for (size_t i = 0; i < n; i++)
            if ((r = orch_agent_postgres(v[i].agent, "stop", NULL)) < 0)
                node_fail(&v[i], r, "could not stop PostgreSQL: %s",
                          orch_agent_client_error(v[i].agent));
    }
    RestoreCtx ctx = { .p = p, .repo = repo, .restore_point = rp };
    log_info("restoring %zu nodes to %s", n, rp);
    r = run_jobs(v, n, "restore", restore_body, &ctx, p->parallel, p->progress);
    if (in_place) {
        for (size_t i = 0; i < n; i++) {
            if (v[i].error)
                continue;
            int q = orch_agent_postgres(v[i].agent, "start", NULL);
            if (q < 0)
                node_fail(&v[i], q, "could not start PostgreSQL: %s",
                          orch_agent_client_error(v[i].agent));
        }
        for (size_t i = 0; i < n; i++)
            if (!v[i].error)
                wait_promoted(cfg, &v[i]);
    }
    ret->nodes = calloc(n ? n : 1, sizeof(*ret->nodes));
    if (!ret->nodes) {
        r = -ENOMEM;
        goto out;
    }
    r = 0;
    for (size_t i = 0; i < n; i++) {
        OrchNodeOutcome *o = &ret->nodes[ret->n_nodes++];
        o->node = strdup(v[i].node->name);
        o->error = v[i].error;
        o->message = v[i].message ? strdup(v[i].message) : NULL;
        memcpy(o->lsn, v[i].lsn, sizeof(o->lsn));
        if (v[i].error)
            r = NODE_FAILED;
    }
out:
    nodes_free(v, n);
    nodes_free(all, cfg->n_nodes);
    free(selected);
    cs_snapshot_clear(&s);
    cluster_unlock(&lock);
    ret->seconds = mono_now() - t0;
    return r;
}

void orch_restore_result_done(OrchRestoreResult *r)
{
    for (size_t i = 0; i < r->n_nodes; i++) {
        free(r->nodes[i].node);
        free(r->nodes[i].message);
    }
    free(r->nodes);
    *r = (OrchRestoreResult){ 0 };
}

int orch_snapshot_delete(CsRepo *repo, const char *spec, char ret_id[2 * CS_SNAP_ID_SIZE + 1])
{
    ClusterLock lock = { 0 };
    int r = cluster_lock(repo, "delete", &lock);
    if (r < 0)
        return r;
    CsSnapshot s = { 0 };
    if ((r = cs_catalog_find_or_log(repo, spec, &s)) == 0) {
        if ((r = cs_catalog_delete(repo, s.id)) < 0)
            log_error_errno(r, "could not delete snapshot %s: %m", s.id);
        else
            memcpy(ret_id, s.id, 2 * CS_SNAP_ID_SIZE + 1);
    }
    cs_snapshot_clear(&s);
    cluster_unlock(&lock);
    return r;
}

/* ---- config check ---- */

int orch_cluster_check(const OrchConfig *cfg, json_t **ret_report)
{
    NodeRun *v = NULL;
    int r = nodes_new(cfg, true, &v);
    json_t *report = json_array();
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        NodeRun *x = &v[i];
        json_t *st = NULL;
        if (x->agent && orch_agent_status(x->agent, &st) < 0)
            node_fail(x, -ECONNREFUSED, "%s", orch_agent_client_error(x->agent)); /* names it */
        json_t *pg = json_object_get(st, "postgres"), *arch = json_object_get(st, "archiving");
        if (st && !json_is_true(json_object_get(arch, "healthy")))
            node_fail(x, -EIO, "WAL archiving is not healthy (last failed: %s)",
                      json_str(arch, "last_failed_wal"));
        if (x->conn && strcmp(json_str(st, "node"), x->node->name) != 0 && st)
            node_fail(x, -EINVAL, "the agent at %s serves node \"%s\", not \"%s\"",
                      x->node->agent, json_str(st, "node"), x->node->name);
        json_array_append_new(report,
                              json_pack("{s:s,s:b,s:b,s:O*,s:s*}", "node", x->node->name,
                                        "postgres_reachable", x->conn && PQstatus(x->conn) == CONNECTION_OK,
                                        "agent_reachable", st != NULL, "postgres", pg, "error",
                                        x->message));
        json_decref(st);
        if (x->error && r == 0)
            r = x->error;
    }
    nodes_free(v, cfg->n_nodes);
    if (ret_report)
        *ret_report = report;
    else
        json_decref(report);
    return r < 0 ? NODE_FAILED : 0;
}
