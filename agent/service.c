#include "agent/service.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>

#include "agent/basebackup.h"
#include "agent/node-restore.h"
#include "agent/service-conn.h"
#include "agent/service-pg.h"
#include "agent/service-tls.h"
#include "chunkstore/keysource.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/macro.h"
#include "common/time-util.h"
#include "common/version.h"

/* Requests that wait for PostgreSQL (probe, pg_ctl) run on their own thread; more than this
 * many at once get 503 rather than a pile of threads. */
#define MAX_CALLS        32
#define PROBE_TIMEOUT_S  5
/* Large enough that evhttp does not drop a connection whose request waits for pg_ctl. A
 * connection that has not finished its TLS handshake gets far less (service-conn.h). */
#define CONN_TIMEOUT_S   180
/* evhttp refuses bodies above this itself (with its own HTML page); between
 * AGENT_SERVE_MAX_BODY and this, the reply is our JSON 413. */
#define EVHTTP_MAX_BODY  (1024 * 1024)

typedef enum JobKind { JOB_BACKUP, JOB_RESTORE, N_JOB_KINDS } JobKind;
typedef enum JobState { JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, N_JOB_STATES } JobState;
static const char *const job_kind_name[] = { "backup", "restore" };
static const char *const job_state_name[] = { "running", "succeeded", "failed" };

typedef struct Server Server;

typedef struct Job {
    Server *srv;
    char id[17];
    JobKind kind;
    /* Below, fields that change while the job runs are guarded by srv->lock. */
    JobState state;
    double started, finished;         /* wall clock, seconds since the epoch */
    double t0, t1;                    /* monotonic, for durations */
    AgentBackupProgress progress;
    json_t *params;                   /* immutable after creation; strings the worker uses */
    json_t *result;
    char *error;
    pthread_t thread;
    bool joinable;
} Job;

struct Server {
    AgentServeParams params; /* a copy: threads may outlive agent_serve()'s caller */
    const AgentServeParams *p; /* &params */
    char *bindir, *pg_log, *listen_desc;
    char *abs_paths[6]; /* absolute copies of relative paths in params */
    struct event_base *base;
    struct evhttp *http;
    AgentConnLimits *conns;
    SSL_CTX *ssl_ctx;
    struct event *sig_term, *sig_int, *job_done;
    double started_at;
    unsigned n_calls; /* loop thread only */
    int signals;      /* loop thread only */
    bool forced;      /* loop thread only */

    pthread_mutex_t state_file_lock; /* taken before `lock`, never after */
    pthread_mutex_t lock;
    Job *jobs[AGENT_SERVE_JOBS_KEPT]; /* oldest first */
    size_t n_jobs;
    Job *running;
    const char *pg_op; /* "start" or "stop" while pg_ctl runs */
    bool shutting_down;
    uint64_t jobs_total[N_JOB_KINDS][N_JOB_STATES];
    double last_backup_time;
    uint64_t last_backup_bytes;
    bool stopped;
};

/* ---- small helpers ---- */

static double now_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ISO 8601 UTC, or JSON null for "never" (0). */
static json_t *json_time(double t)
{
    if (t <= 0)
        return json_null();
    time_t s = (time_t)t;
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&s, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return json_null();
    return json_string(buf);
}

static json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void reply_text(struct evhttp_request *req, int code, const char *content_type,
                       const char *text, size_t n)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *buf = evbuffer_new();
    if (buf)
        evbuffer_add(buf, text, n);
    evhttp_send_reply(req, code, reason_phrase(code), buf);
    if (buf)
        evbuffer_free(buf);
}

/* Takes the reference to j. */
static void reply_json(struct evhttp_request *req, int code, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) {
        static const char oom[] = "{\"error\":\"out of memory\"}\n";
        reply_text(req, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = 0;
    }
    reply_text(req, code, "application/json", s, n);
    free(s);
}

static json_t *error_json(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    return json_pack("{s:s}", "error", msg);
}

static void _printf_(3, 4) reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *j = error_json(fmt, ap);
    va_end(ap);
    reply_json(req, code, j);
}

/* ---- jobs: JSON ---- */

/* Caller holds srv->lock. */
static json_t *job_json(const Job *job)
{
    double end = job->state == JOB_RUNNING ? mono_now() : job->t1;
    json_t *j = json_pack("{s:s,s:s,s:s,s:o,s:o,s:{s:I,s:I,s:I,s:f},s:o,s:o,s:o}", "id",
                          job->id, "kind", job_kind_name[job->kind], "state",
                          job_state_name[job->state], "started", json_time(job->started),
                          "finished", json_time(job->finished), "progress", "bytes_done",
                          (json_int_t)job->progress.bytes_done, "bytes_total",
                          (json_int_t)job->progress.bytes_total, "new_bytes",
                          (json_int_t)job->progress.new_bytes, "seconds", end - job->t0,
                          "params", json_deep_copy(job->params), "result",
                          job->result ? json_deep_copy(job->result) : json_null(), "error",
                          json_str_or_null(job->error));
    return j;
}

/* The newest job of `kind` (or of any kind when kind is N_JOB_KINDS). Caller holds the lock. */
static const Job *newest_job(const Server *srv, JobKind kind)
{
    for (size_t i = srv->n_jobs; i-- > 0;)
        if (kind == N_JOB_KINDS || srv->jobs[i]->kind == kind)
            return srv->jobs[i];
    return NULL;
}

static json_t *restore_result_json(const AgentRestoreResult *res, const char *target)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f}", "snapshot_id", res->snapshot_id,
                     "target_dir", target, "files", (json_int_t)res->tree.files, "bytes",
                     (json_int_t)res->tree.bytes, "bytes_written",
                     (json_int_t)res->bytes_written, "files_unchanged",
                     (json_int_t)res->files_unchanged, "files_removed",
                     (json_int_t)res->files_removed, "seconds", res->seconds);
}

/* ---- the state file ---- */

static void write_state(Server *srv)
{
    if (!srv->p->state_file)
        return;
    pthread_mutex_lock(&srv->state_file_lock);
    pthread_mutex_lock(&srv->lock);
    json_t *jobs = json_object();
    for (int k = 0; jobs && k < N_JOB_KINDS; k++) {
        const Job *job = newest_job(srv, (JobKind)k);
        json_object_set_new(jobs, job_kind_name[k], job ? job_json(job) : json_null());
    }
    json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s,s:o,s:o,s:o,s:o}", "node", srv->p->node,
                          "agent_version", PITR_VERSION, "pid", (int)getpid(), "listen",
                          srv->listen_desc, "pgdata", srv->p->pgdata, "started_at",
                          json_time(srv->started_at), "stopped_at",
                          srv->stopped ? json_time(now_real()) : json_null(), "running_job",
                          srv->running ? json_string(srv->running->id) : json_null(), "jobs",
                          jobs ? jobs : json_object());
    pthread_mutex_unlock(&srv->lock);
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    int r = -ENOMEM;
    if (s) {
        size_t n = strlen(s);
        s[n] = '\n'; /* json_dumps leaves room: replace the NUL, write n + 1 bytes */
        r = write_file_atomic(srv->p->state_file, s, n + 1, 0644);
        free(s);
    }
    if (r < 0)
        log_warning_errno(r, "could not write the state file \"%s\": %m", srv->p->state_file);
    pthread_mutex_unlock(&srv->state_file_lock);
}

/* ---- jobs: running ---- */

/* What a job failure means, from the errors agent/basebackup.h and agent/node-restore.h
 * promise; the details are in the agent's log. */
static const char *job_errno_meaning(JobKind kind, int r)
{
    switch (r) {
    case -ENOSYS: return "not built yet in this agent";
    case -ECONNREFUSED: return "the PostgreSQL server cannot be reached";
    case -EBUSY:
        return kind == JOB_BACKUP ? "the repository is locked exclusively"
                                  : "PostgreSQL is running in the target directory";
    case -EACCES: return "permission denied (authentication, PGDATA or repository)";
    case -EINVAL:
        return kind == JOB_BACKUP
                       ? "the server is not PostgreSQL 15 or later, is a standby, or PGDATA "
                         "does not belong to it"
                       : "invalid restore parameters";
    case -ENOENT: return kind == JOB_RESTORE ? "no such base backup for this node" : NULL;
    case -ENOTEMPTY: return "the target directory or a tablespace location is not empty";
    case -EBADMSG: return "damaged data in the repository";
    case -EKEYREJECTED: return "wrong passphrase or key for the repository";
    case -ENOMEDIUM: return "not a repository";
    default: return NULL;
    }
}

static char *job_error(JobKind kind, const char *what, int r)
{
    const char *meaning = job_errno_meaning(kind, r);
    char *s = NULL;
    if (asprintf(&s, "%s failed: %s%s%s (see the agent's log)", what,
                 meaning ? meaning : strerror(-r), meaning ? ": " : "",
                 meaning ? strerror(-r) : "") < 0)
        return NULL;
    return s;
}

/* Jobs run with the file system identity of PGDATA's owner when the agent is root: see
 * service.h. setfsuid() changes only the calling thread (and the threads it starts). */
typedef struct FsIdentity {
    bool switched;
} FsIdentity;

static int fs_identity_enter(const Server *srv, FsIdentity *id)
{
    id->switched = false;
    if (geteuid() != 0)
        return 0;
    AgentPgOwner o;
    int r = agent_pg_owner(srv->p->pgdata, &o);
    if (r < 0)
        return log_error_errno(r, "could not find the owner of \"%s\": %m", srv->p->pgdata);
    if (o.uid == 0) {
        agent_pg_owner_clear(&o);
        return 0;
    }
    setfsgid(o.gid);
    setfsuid(o.uid);
    bool ok = (uid_t)setfsuid((uid_t)-1) == o.uid && (gid_t)setfsgid((gid_t)-1) == o.gid;
    agent_pg_owner_clear(&o);
    id->switched = true;
    return ok ? 0 : log_error_errno(-EPERM, "could not take the identity of PGDATA's owner");
}

static void fs_identity_leave(FsIdentity *id)
{
    if (!id->switched)
        return;
    setfsuid(0);
    setfsgid(0);
    id->switched = false;
}

static void job_progress(const AgentBackupProgress *pr, void *userdata)
{
    Job *job = userdata;
    pthread_mutex_lock(&job->srv->lock);
    job->progress = *pr;
    pthread_mutex_unlock(&job->srv->lock);
}

static const char *param_str(const Job *job, const char *key)
{
    return json_string_value(json_object_get(job->params, key));
}

static int open_repo(const Server *srv, bool read_only, CsRepo **ret, char **ret_error)
{
    int r = cs_repo_unlock(srv->p->repo, srv->p->passphrase_file, srv->p->keyfile,
                           &(CsOpenParams){ .read_only = read_only }, ret);
    if (r < 0)
        *ret_error = job_error(JOB_BACKUP, "opening the repository", r);
    return r;
}

static int run_backup(Job *job, json_t **ret_result, char **ret_error)
{
    const Server *srv = job->srv;
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(srv, false, &repo, ret_error);
    if (r < 0)
        return r;
    AgentBackupResult res = { 0 };
    r = agent_backup(repo,
                     &(AgentBackupParams){ .node = srv->p->node,
                                           .conninfo = srv->p->conninfo ? srv->p->conninfo : "",
                                           .pgdata = srv->p->pgdata,
                                           .label = param_str(job, "label"),
                                           .threads = srv->p->threads,
                                           .progress = job_progress,
                                           .userdata = job },
                     &res);
    /* A backup with checksum failures is published and reported, and still fails. */
    if (r == 0 || res.snapshot_id[0]) {
        *ret_result = agent_backup_result_json(&res, srv->p->node, 100);
        /* The writer reports progress only now and then: end with the true totals. */
        pthread_mutex_lock(&job->srv->lock);
        job->progress = (AgentBackupProgress){ .bytes_done = res.tree.bytes,
                                               .bytes_total = res.tree.bytes,
                                               .new_bytes = res.writer.new_bytes,
                                               .seconds = res.seconds };
        pthread_mutex_unlock(&job->srv->lock);
    }
    if (r == -EIO && res.snapshot_id[0]) {
        if (asprintf(ret_error, "backup %s was stored, but %" PRIu64 " pages failed their "
                                "checksum (see result.checksum_failures)",
                     res.snapshot_id, res.n_checksum_failures) < 0)
            *ret_error = NULL;
    } else if (r < 0)
        *ret_error = job_error(JOB_BACKUP, "backup", r);
    agent_backup_result_clear(&res);
    return r;
}

/* The recovery targets of POST /v1/restore, by their names in the API ("target_kind"). */
static const struct {
    const char *name;
    AgentRecoveryTarget kind;
    bool needs_value; /* "target_value" */
} target_kinds[] = {
    { "latest", AGENT_TARGET_LATEST, false }, { "name", AGENT_TARGET_NAME, true },
    { "lsn", AGENT_TARGET_LSN, true },        { "time", AGENT_TARGET_TIME, true },
    { "immediate", AGENT_TARGET_IMMEDIATE, false },
};

/* Index in target_kinds, or ARRAY_SIZE(target_kinds) for an unknown name. */
static size_t find_target_kind(const char *name)
{
    size_t k = 0;
    while (k < ARRAY_SIZE(target_kinds) && strcmp(name, target_kinds[k].name) != 0)
        k++;
    return k;
}

static int run_restore(Job *job, json_t **ret_result, char **ret_error)
{
    const Server *srv = job->srv;
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(srv, true, &repo, ret_error);
    if (r < 0)
        return r;
    size_t k = find_target_kind(param_str(job, "target_kind"));
    if (k == ARRAY_SIZE(target_kinds)) /* handle_restore let only known kinds through */
        return -EINVAL;
    AgentRecoveryTarget kind = target_kinds[k].kind;
    json_t *map = json_object_get(job->params, "tablespace_map");
    size_t n_map = json_object_size(map);
    _cleanup_free_ AgentTablespaceMap *ts = calloc(n_map ? n_map : 1, sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    const char *key;
    json_t *value;
    size_t i = 0;
    json_object_foreach(map, key, value) {
        ts[i++] = (AgentTablespaceMap){ .oid = key, .path = json_string_value(value) };
    }
    const char *target = param_str(job, "target_dir");
    AgentRestoreResult res = { 0 };
    r = agent_node_restore(repo,
                           &(AgentRestoreParams){ .node = srv->p->node,
                                                  .backup = param_str(job, "backup"),
                                                  .target = target,
                                                  .target_kind = kind,
                                                  .target_value = param_str(job, "target_value"),
                                                  .target_timeline = (uint32_t)json_integer_value(
                                                          json_object_get(job->params,
                                                                          "target_timeline")),
                                                  .delta = json_is_true(json_object_get(
                                                          job->params, "delta")),
                                                  .repo_location = srv->p->repo,
                                                  .keyfile = srv->p->keyfile,
                                                  .tablespace_map = ts,
                                                  .n_tablespace_map = n_map,
                                                  .threads = srv->p->threads },
                           &res);
    if (r < 0)
        *ret_error = job_error(JOB_RESTORE, "restore", r);
    else
        *ret_result = restore_result_json(&res, target);
    return r;
}

/* Record how a job ended (r < 0: failed with `error`; else its `result`, both taken) and that
 * the agent is free again, in memory and in the state file. */
static void job_finish(Server *srv, Job *job, int r, json_t *result, char *error)
{
    pthread_mutex_lock(&srv->lock);
    job->state = r < 0 ? JOB_FAILED : JOB_SUCCEEDED;
    job->finished = now_real();
    job->t1 = mono_now();
    job->result = result;
    job->error = error;
    srv->jobs_total[job->kind][job->state]++;
    if (job->kind == JOB_BACKUP && r == 0) {
        srv->last_backup_time = job->finished;
        srv->last_backup_bytes =
                (uint64_t)json_integer_value(json_object_get(result, "bytes"));
    }
    srv->running = NULL;
    pthread_mutex_unlock(&srv->lock);
    write_state(srv);
}

static void *job_thread(void *arg)
{
    Job *job = arg;
    Server *srv = job->srv;
    json_t *result = NULL;
    char *error = NULL;
    FsIdentity fsid;
    log_info("job %s (%s) started", job->id, job_kind_name[job->kind]);
    int r = fs_identity_enter(srv, &fsid);
    if (r < 0)
        error = job_error(job->kind, job_kind_name[job->kind], r);
    else if (job->kind == JOB_BACKUP)
        r = run_backup(job, &result, &error);
    else
        r = run_restore(job, &result, &error);
    fs_identity_leave(&fsid);
    if (r < 0 && !error)
        error = strdup("the job failed (see the agent's log)");

    job_finish(srv, job, r, result, error);
    if (r < 0)
        log_error("job %s (%s) failed after %.1f s: %s", job->id, job_kind_name[job->kind],
                  job->t1 - job->t0, error ? error : "?");
    else
        log_info("job %s (%s) succeeded in %.1f s", job->id, job_kind_name[job->kind],
                 job->t1 - job->t0);
    /* The loop thread joins us and, when stopping, exits. */
    event_active(srv->job_done, EV_TIMEOUT, 0);
    return NULL;
}

static void job_free(Job *job)
{
    if (!job)
        return;
    if (job->joinable)
        pthread_join(job->thread, NULL);
    json_decref(job->params);
    json_decref(job->result);
    free(job->error);
    free(job);
}

/* ---- stopping ---- */

/* Loop thread: end the loop once stopping and nothing is left running. */
static void maybe_exit(Server *srv)
{
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->shutting_down;
    bool busy = srv->running || srv->pg_op;
    pthread_mutex_unlock(&srv->lock);
    if (stopping && !busy && srv->n_calls == 0)
        event_base_loopbreak(srv->base);
}

static void job_done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    Server *srv = arg;
    pthread_mutex_lock(&srv->lock);
    for (size_t i = 0; i < srv->n_jobs; i++) {
        Job *job = srv->jobs[i];
        if (job->joinable && job->state != JOB_RUNNING) {
            /* It has finished its work: the join only waits for its last instructions. */
            pthread_mutex_unlock(&srv->lock);
            pthread_join(job->thread, NULL);
            pthread_mutex_lock(&srv->lock);
            job->joinable = false;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    maybe_exit(srv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    Server *srv = arg;
    if (++srv->signals > 1) {
        log_warning("second signal: exiting now, without waiting for the running job");
        srv->forced = true;
        event_base_loopbreak(srv->base);
        return;
    }
    pthread_mutex_lock(&srv->lock);
    srv->shutting_down = true;
    const Job *running = srv->running;
    if (running)
        log_info("%s: waiting for job %s (%s) to finish; a second signal exits at once",
                 strsignal((int)sig), running->id, job_kind_name[running->kind]);
    else
        log_info("%s: stopping", strsignal((int)sig));
    pthread_mutex_unlock(&srv->lock);
    maybe_exit(srv);
}

/* ---- requests on worker threads ---- */

typedef struct Call Call;
struct Call {
    Server *srv;
    struct evhttp_request *req;
    struct event *done;
    pthread_t thread;
    void (*fn)(Call *c);
    const char *arg;
    int code;
    json_t *json; /* the reply, or */
    char *text;   /* a text/plain reply */
    size_t text_len;
};

static void call_done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    Call *c = arg;
    Server *srv = c->srv;
    pthread_join(c->thread, NULL);
    if (c->text)
        reply_text(c->req, c->code, "text/plain; version=0.0.4; charset=utf-8", c->text,
                   c->text_len);
    else
        reply_json(c->req, c->code, c->json);
    free(c->text);
    event_free(c->done);
    free(c);
    srv->n_calls--;
    maybe_exit(srv);
}

static void *call_thread(void *arg)
{
    Call *c = arg;
    c->fn(c);
    if (!c->json && !c->text) {
        c->code = 500;
        c->json = json_pack("{s:s}", "error", "out of memory");
    }
    event_active(c->done, EV_TIMEOUT, 0);
    return NULL;
}

/* Run fn on a thread and reply with what it leaves in the Call. Returns false (after
 * replying) when it could not be started. */
static bool call_start(Server *srv, struct evhttp_request *req, void (*fn)(Call *c),
                       const char *arg)
{
    if (srv->n_calls >= MAX_CALLS) {
        reply_error(req, 503, "too many requests in progress");
        return false;
    }
    Call *c = calloc(1, sizeof(*c));
    if (!c) {
        reply_error(req, 500, "out of memory");
        return false;
    }
    *c = (Call){ .srv = srv, .req = req, .fn = fn, .arg = arg };
    c->done = event_new(srv->base, -1, 0, call_done_cb, c);
    int e = c->done ? pthread_create(&c->thread, NULL, call_thread, c) : ENOMEM;
    if (e != 0) {
        if (c->done)
            event_free(c->done);
        free(c);
        reply_error(req, 500, "could not start a thread: %s", strerror(e));
        return false;
    }
    srv->n_calls++;
    return true;
}

static json_t *probe_json(const AgentPgProbe *pr, json_t **ret_archiving)
{
    json_t *pg = json_pack("{s:b,s:o,s:o,s:o,s:o}", "reachable", pr->reachable,
                           "server_version", json_str_or_null(pr->server_version),
                           "server_version_num",
                           pr->reachable ? json_integer(pr->server_version_num) : json_null(),
                           "in_recovery", pr->reachable ? json_boolean(pr->in_recovery)
                                                        : json_null(),
                           "error", json_str_or_null(pr->error));
    if (pr->reachable)
        *ret_archiving = json_pack(
            "{s:b,s:I,s:I,s:o,s:o,s:o,s:o}", "healthy",
            agent_pg_probe_archiving_healthy(pr), "archived_count",
            (json_int_t)pr->archived_count, "failed_count", (json_int_t)pr->failed_count,
            "last_archived_wal", json_str_or_null(pr->last_archived_wal),
            "last_archived_time", json_time(pr->last_archived_time), "last_failed_wal",
            json_str_or_null(pr->last_failed_wal), "last_failed_time",
            json_time(pr->last_failed_time));
    else
        *ret_archiving = json_pack("{s:b,s:n,s:n,s:n,s:n,s:n,s:n}", "healthy", false,
                                   "archived_count", "failed_count", "last_archived_wal",
                                   "last_archived_time", "last_failed_wal",
                                   "last_failed_time");
    return pg;
}

static void status_fn(Call *c)
{
    Server *srv = c->srv;
    AgentPgProbe pr;
    if (agent_pg_probe(srv->p->conninfo, PROBE_TIMEOUT_S, &pr) < 0)
        return;
    json_t *archiving = NULL;
    json_t *pg = probe_json(&pr, &archiving);
    agent_pg_probe_clear(&pr);
    pthread_mutex_lock(&srv->lock);
    const Job *job = srv->running ? srv->running : newest_job(srv, N_JOB_KINDS);
    json_t *jj = job ? job_json(job) : json_null();
    pthread_mutex_unlock(&srv->lock);
    c->code = 200;
    c->json = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o}", "node", srv->p->node, "agent_version",
                        PITR_VERSION, "pgdata", srv->p->pgdata, "postgres", pg, "archiving",
                        archiving, "job", jj);
}

/* Prometheus label values escape backslash, double quote and newline. */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_fn(Call *c)
{
    Server *srv = c->srv;
    AgentPgProbe pr;
    if (agent_pg_probe(srv->p->conninfo, PROBE_TIMEOUT_S, &pr) < 0)
        return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        agent_pg_probe_clear(&pr);
        return;
    }
    metric_head(f, "pitr_agent_info", "gauge", "Agent version and node name.");
    fprintf(f, "pitr_agent_info{version=\"%s\",node=\"", PITR_VERSION);
    put_label(f, srv->p->node);
    fputs("\"} 1\n", f);
    metric_head(f, "pitr_postgres_up", "gauge",
                "Whether the agent could connect to PostgreSQL and query it.");
    fprintf(f, "pitr_postgres_up %d\n", pr.reachable ? 1 : 0);
    if (pr.reachable) {
        metric_head(f, "pitr_archive_archived_count", "counter",
                    "WAL files archived successfully (pg_stat_archiver.archived_count).");
        fprintf(f, "pitr_archive_archived_count %" PRId64 "\n", pr.archived_count);
        metric_head(f, "pitr_archive_failed_count", "counter",
                    "Failed attempts to archive WAL files (pg_stat_archiver.failed_count).");
        fprintf(f, "pitr_archive_failed_count %" PRId64 "\n", pr.failed_count);
        metric_head(f, "pitr_archive_healthy", "gauge",
                    "1 when the last archiving attempt succeeded.");
        fprintf(f, "pitr_archive_healthy %d\n", agent_pg_probe_archiving_healthy(&pr) ? 1 : 0);
        if (pr.last_archived_time > 0) {
            metric_head(f, "pitr_last_archived_age_seconds", "gauge",
                        "Seconds since the last WAL file was archived.");
            fprintf(f, "pitr_last_archived_age_seconds %.3f\n",
                    MAX(0.0, now_real() - pr.last_archived_time));
        }
    }
    agent_pg_probe_clear(&pr);
    pthread_mutex_lock(&srv->lock);
    metric_head(f, "pitr_jobs_total", "counter", "Jobs finished since the agent started.");
    for (int k = 0; k < N_JOB_KINDS; k++)
        for (int s = JOB_SUCCEEDED; s < N_JOB_STATES; s++)
            fprintf(f, "pitr_jobs_total{kind=\"%s\",state=\"%s\"} %" PRIu64 "\n",
                    job_kind_name[k], job_state_name[s], srv->jobs_total[k][s]);
    metric_head(f, "pitr_job_running", "gauge", "1 while a backup or restore job runs.");
    fprintf(f, "pitr_job_running %d\n", srv->running ? 1 : 0);
    if (srv->last_backup_time > 0) {
        metric_head(f, "pitr_last_backup_timestamp_seconds", "gauge",
                    "When the last successful base backup finished (Unix time).");
        fprintf(f, "pitr_last_backup_timestamp_seconds %.3f\n", srv->last_backup_time);
        metric_head(f, "pitr_last_backup_bytes", "gauge",
                    "Bytes of PGDATA read by the last successful base backup.");
        fprintf(f, "pitr_last_backup_bytes %" PRIu64 "\n", srv->last_backup_bytes);
    }
    pthread_mutex_unlock(&srv->lock);
    if (fclose(f) != 0) {
        free(text);
        return;
    }
    c->code = 200;
    c->text = text;
    c->text_len = len;
}

static char *file_tail(const char *path, size_t max)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = calloc(1, max + 1);
    if (buf && fseeko(f, 0, SEEK_END) == 0) {
        off_t size = ftello(f);
        if (size > (off_t)max)
            fseeko(f, size - (off_t)max, SEEK_SET);
        else
            rewind(f);
        size_t got = fread(buf, 1, max, f);
        buf[got] = 0;
    }
    fclose(f);
    return buf;
}

static void pg_fn(Call *c)
{
    Server *srv = c->srv;
    const char *action = c->arg;
    AgentPgOwner owner = { 0 };
    bool as_owner = geteuid() == 0;
    int r = as_owner ? agent_pg_owner(srv->p->pgdata, &owner) : 0;
    AgentPgCtlResult st = { 0 }, res = { 0 };
    char *log_tail = NULL;
    if (r < 0) {
        c->code = 500;
        c->json = json_pack("{s:s+++}", "error", "could not find the owner of \"",
                            srv->p->pgdata, "\": ", strerror(-r));
        goto out;
    }
    if (as_owner && owner.uid == 0) {
        c->code = 500;
        c->json = json_pack("{s:s++}", "error", "the data directory \"", srv->p->pgdata,
                            "\" belongs to root, and PostgreSQL does not run as root");
        goto out;
    }
    AgentPgCtlParams params = { .bindir = srv->bindir,
                                .pgdata = srv->p->pgdata,
                                .log = srv->pg_log,
                                .timeout_s = srv->p->pg_ctl_timeout,
                                .as = as_owner ? &owner : NULL };
    if ((r = agent_pg_ctl(&params, "status", &st)) < 0) {
        c->code = 500;
        c->json = json_pack("{s:s+}", "error", "could not run pg_ctl: ", strerror(-r));
        goto out;
    }
    if (st.exit_status == 4 || (st.exit_status != 0 && st.exit_status != 3)) {
        c->code = 500;
        c->json = json_pack("{s:s+}", "error", "pg_ctl status failed: ",
                            agent_text_tail(st.output, 1024));
        goto out;
    }
    bool running = st.exit_status == 0;
    if (running == (strcmp(action, "start") == 0)) {
        c->code = 200;
        c->json = json_pack("{s:b,s:b,s:s}", "ok", true, "changed", false, "output",
                            agent_text_tail(st.output, 2048));
        goto out;
    }
    log_info("pg_ctl %s of %s%s%s", action, srv->p->pgdata, as_owner ? " as " : "",
             as_owner ? owner.name : "");
    if ((r = agent_pg_ctl(&params, action, &res)) < 0) {
        c->code = 500;
        c->json = json_pack("{s:s+}", "error", "could not run pg_ctl: ", strerror(-r));
        goto out;
    }
    const char *tail = agent_text_tail(res.output, 2048);
    if (res.exit_status == 0) {
        c->code = 200;
        c->json = json_pack("{s:b,s:b,s:s}", "ok", true, "changed", true, "output", tail);
        goto out;
    }
    if (strcmp(action, "start") == 0)
        log_tail = file_tail(srv->pg_log, 2048);
    char code[64];
    if (res.timed_out)
        snprintf(code, sizeof(code), "killed after %u s", res.kill_after_s);
    else
        snprintf(code, sizeof(code), "exit status %d", res.exit_status);
    log_error("pg_ctl %s failed (%s): %s", action, code, tail);
    c->code = 500;
    c->json = json_pack("{s:s+++++,s:s,s:o}", "error", "pg_ctl ", action, " failed (", code,
                        "): ", tail, "output", tail, "log_tail", json_str_or_null(log_tail));
out:
    free(log_tail);
    agent_pg_ctl_result_clear(&st);
    agent_pg_ctl_result_clear(&res);
    agent_pg_owner_clear(&owner);
    pthread_mutex_lock(&srv->lock);
    srv->pg_op = NULL;
    pthread_mutex_unlock(&srv->lock);
}

/* ---- request handlers on the loop thread ---- */

/* The body as a JSON object ({} when empty), or a reply and NULL. */
static json_t *read_body(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return json_object();
    if (len > AGENT_SERVE_MAX_BODY) {
        reply_error(req, 413, "the request body is larger than %d bytes", AGENT_SERVE_MAX_BODY);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES,
                           &e);
    if (!j) {
        reply_error(req, 400, "the body is not valid JSON: %s (line %d)", e.text, e.line);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        reply_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Refuse fields we do not know: a misspelt "tagret_dir" must not restore over PGDATA. */
static bool check_fields(struct evhttp_request *req, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value) {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            known = known || strcmp(key, *a) == 0;
        if (!known) {
            reply_error(req, 400, "unknown field \"%s\"", key);
            return false;
        }
    }
    return true;
}

static bool want_string(struct evhttp_request *req, json_t *body, const char *key,
                        const char *def)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) {
        if (def)
            json_object_set_new(body, key, json_string(def));
        else
            json_object_del(body, key);
        return true;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096) {
        reply_error(req, 400, "\"%s\" must be a non-empty string", key);
        return false;
    }
    return true;
}

static void new_job_id(char id[17])
{
    uint8_t b[8];
    if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
        uint64_t t = (uint64_t)(now_real() * 1e6);
        memcpy(b, &t, sizeof(b));
    }
    hex_encode(b, sizeof(b), id);
    id[16] = 0;
}

/* Whether the agent is busy and cannot take on `what` (a job kind or a pg_ctl action) now:
 * one job or pg_ctl call at a time, none while shutting down. If so, *ret_body gets the reply
 * (NULL when out of memory: reply_json answers 500 then) and *ret_code its HTTP status. Called
 * with srv->lock held. */
static bool is_busy_locked(const Server *srv, const char *what, int *ret_code, json_t **ret_body)
{
    *ret_code = 409;
    *ret_body = NULL;
    if (srv->shutting_down) {
        *ret_code = 503;
        *ret_body = json_pack("{s:s}", "error", "the agent is shutting down");
    } else if (srv->running)
        *ret_body = json_pack("{s:s+++++,s:s}", "error", "cannot ", what, ": job ",
                              srv->running->id,
                              srv->running->kind == JOB_BACKUP ? " (backup)" : " (restore)",
                              " is running", "running_job", srv->running->id);
    else if (srv->pg_op)
        *ret_body = json_pack("{s:s+++}", "error", "cannot ", what, ": pg_ctl is running: ",
                              srv->pg_op);
    else
        return false;
    return true;
}

/* Takes params. */
static void start_job(Server *srv, struct evhttp_request *req, JobKind kind, json_t *params)
{
    Job *job = calloc(1, sizeof(*job));
    if (!job) {
        json_decref(params);
        reply_error(req, 500, "out of memory");
        return;
    }
    *job = (Job){ .srv = srv, .kind = kind, .state = JOB_RUNNING, .params = params };
    new_job_id(job->id);
    Job *evicted = NULL;
    pthread_mutex_lock(&srv->lock);
    int code;
    json_t *err;
    if (is_busy_locked(srv, job_kind_name[kind], &code, &err)) {
        pthread_mutex_unlock(&srv->lock);
        job_free(job);
        reply_json(req, code, err);
        return;
    }
    if (srv->n_jobs == AGENT_SERVE_JOBS_KEPT) {
        evicted = srv->jobs[0];
        memmove(srv->jobs, srv->jobs + 1, (srv->n_jobs - 1) * sizeof(Job *));
        srv->n_jobs--;
    }
    srv->jobs[srv->n_jobs++] = job;
    srv->running = job;
    job->started = now_real();
    job->t0 = mono_now();
    pthread_mutex_unlock(&srv->lock);
    job_free(evicted);
    write_state(srv);

    int e = pthread_create(&job->thread, NULL, job_thread, job);
    if (e != 0) {
        job_finish(srv, job, -e, NULL, strdup("could not start a thread"));
        reply_error(req, 500, "could not start a thread: %s", strerror(e));
        return;
    }
    job->joinable = true;
    reply_json(req, 202, json_pack("{s:s,s:s}", "job", job->id, "kind", job_kind_name[kind]));
}

static void handle_backup(Server *srv, struct evhttp_request *req)
{
    static const char *const fields[] = { "label", NULL };
    json_t *body = read_body(req);
    if (!body)
        return;
    if (!check_fields(req, body, fields) || !want_string(req, body, "label", NULL)) {
        json_decref(body);
        return;
    }
    start_job(srv, req, JOB_BACKUP, body);
}

static void handle_restore(Server *srv, struct evhttp_request *req)
{
    static const char *const fields[] = { "backup",         "target_dir",     "target_kind",
                                          "target_value",   "target_timeline", "delta",
                                          "tablespace_map", NULL };
    json_t *body = read_body(req);
    if (!body)
        return;
    if (!check_fields(req, body, fields) || !want_string(req, body, "backup", "latest") ||
        !want_string(req, body, "target_dir", srv->p->pgdata) ||
        !want_string(req, body, "target_kind", "latest") ||
        !want_string(req, body, "target_value", NULL))
        goto fail;
    const char *dir = json_string_value(json_object_get(body, "target_dir"));
    if (dir[0] != '/') {
        reply_error(req, 400, "\"target_dir\" must be an absolute path");
        goto fail;
    }
    const char *kind = json_string_value(json_object_get(body, "target_kind"));
    size_t k = find_target_kind(kind);
    if (k == ARRAY_SIZE(target_kinds)) {
        reply_error(req, 400, "\"target_kind\" must be latest, name, lsn, time or immediate");
        goto fail;
    }
    bool needs_value = target_kinds[k].needs_value;
    if (needs_value != (json_object_get(body, "target_value") != NULL)) {
        reply_error(req, 400, needs_value ? "target_kind \"%s\" needs a \"target_value\""
                                          : "target_kind \"%s\" takes no \"target_value\"",
                    kind);
        goto fail;
    }
    json_t *tli = json_object_get(body, "target_timeline");
    if (tli && (!json_is_integer(tli) || json_integer_value(tli) < 1 ||
                json_integer_value(tli) > UINT32_MAX)) {
        reply_error(req, 400, "\"target_timeline\" must be a timeline number");
        goto fail;
    }
    json_t *delta = json_object_get(body, "delta");
    if (!delta)
        json_object_set_new(body, "delta", json_false());
    else if (!json_is_boolean(delta)) {
        reply_error(req, 400, "\"delta\" must be true or false");
        goto fail;
    }
    json_t *map = json_object_get(body, "tablespace_map");
    if (map) {
        const char *oid;
        json_t *path;
        bool ok = json_is_object(map);
        json_object_foreach(map, oid, path) {
            ok = ok && *oid && json_is_string(path) && json_string_value(path)[0] == '/';
        }
        if (!ok) {
            reply_error(req, 400, "\"tablespace_map\" must map OIDs to absolute paths");
            goto fail;
        }
    }
    start_job(srv, req, JOB_RESTORE, body);
    return;
fail:
    json_decref(body);
}

static void handle_job(Server *srv, struct evhttp_request *req, const char *id)
{
    json_t *j = NULL;
    pthread_mutex_lock(&srv->lock);
    for (size_t i = 0; i < srv->n_jobs && !j; i++)
        if (strcmp(srv->jobs[i]->id, id) == 0)
            j = job_json(srv->jobs[i]);
    pthread_mutex_unlock(&srv->lock);
    if (!j) {
        reply_error(req, 404, "no job \"%s\" (the agent keeps the last %d jobs)", id,
                    AGENT_SERVE_JOBS_KEPT);
        return;
    }
    reply_json(req, 200, j);
}

static void handle_jobs(Server *srv, struct evhttp_request *req)
{
    json_t *a = json_array();
    pthread_mutex_lock(&srv->lock);
    for (size_t i = srv->n_jobs; a && i-- > 0;)
        json_array_append_new(a, job_json(srv->jobs[i]));
    pthread_mutex_unlock(&srv->lock);
    reply_json(req, 200, json_pack("{s:o}", "jobs", a ? a : json_array()));
}

static void handle_pg(Server *srv, struct evhttp_request *req, const char *action)
{
    pthread_mutex_lock(&srv->lock);
    int code;
    json_t *err;
    bool busy = is_busy_locked(srv, action, &code, &err);
    if (!busy)
        srv->pg_op = action;
    pthread_mutex_unlock(&srv->lock);
    if (busy) {
        reply_json(req, code, err);
        return;
    }
    if (!call_start(srv, req, pg_fn, action)) {
        pthread_mutex_lock(&srv->lock);
        srv->pg_op = NULL;
        pthread_mutex_unlock(&srv->lock);
    }
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
    }
}

static void log_request(struct evhttp_request *req, const char *path)
{
    if (log_get_level() < LOG_LEVEL_DEBUG)
        return;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    char peer[80], subject[256] = "-";
    agent_tls_peer_address(bev ? (int)bufferevent_getfd(bev) : -1, peer, sizeof(peer));
    if (ssl)
        agent_tls_peer_subject(ssl, subject, sizeof(subject));
    log_debug("%s %s from %s (%s)", method_name(evhttp_request_get_command(req)), path, peer,
              subject);
}

static void handle_request(struct evhttp_request *req, void *arg)
{
    Server *srv = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path) {
        reply_error(req, 400, "no path in the request");
        return;
    }
    log_request(req, path);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    static const struct {
        const char *path;
        enum evhttp_cmd_type method;
        bool prefix;
    } routes[] = {
        { "/v1/status", EVHTTP_REQ_GET, false },     { "/metrics", EVHTTP_REQ_GET, false },
        { "/v1/backup", EVHTTP_REQ_POST, false },    { "/v1/restore", EVHTTP_REQ_POST, false },
        { "/v1/jobs", EVHTTP_REQ_GET, false },       { "/v1/jobs/", EVHTTP_REQ_GET, true },
        { "/v1/postgres/stop", EVHTTP_REQ_POST, false },
        { "/v1/postgres/start", EVHTTP_REQ_POST, false },
    };
    size_t i;
    for (i = 0; i < ARRAY_SIZE(routes); i++)
        if (routes[i].prefix ? strncmp(path, routes[i].path, strlen(routes[i].path)) == 0 &&
                                       path[strlen(routes[i].path)] &&
                                       !strchr(path + strlen(routes[i].path), '/')
                             : strcmp(path, routes[i].path) == 0)
            break;
    if (i == ARRAY_SIZE(routes)) {
        reply_error(req, 404, "no such endpoint: %s", path);
        return;
    }
    if (m != routes[i].method) {
        const char *allow = routes[i].method == EVHTTP_REQ_GET ? "GET" : "POST";
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        reply_error(req, 405, "%s wants %s, not %s", routes[i].path, allow, method_name(m));
        return;
    }
    if (m == EVHTTP_REQ_GET && evbuffer_get_length(evhttp_request_get_input_buffer(req)) > 0) {
        reply_error(req, 400, "GET takes no body");
        return;
    }
    switch (i) {
    case 0: call_start(srv, req, status_fn, NULL); break;
    case 1: call_start(srv, req, metrics_fn, NULL); break;
    case 2: handle_backup(srv, req); break;
    case 3: handle_restore(srv, req); break;
    case 4: handle_jobs(srv, req); break;
    case 5: handle_job(srv, req, path + strlen(routes[i].path)); break;
    case 6: handle_pg(srv, req, "stop"); break;
    case 7: handle_pg(srv, req, "start"); break;
    }
}

/* evhttp asks for a bufferevent for each accepted connection and sets its socket after. */
static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    Server *srv = arg;
    SSL *ssl = agent_tls_ssl_new(srv->ssl_ctx);
    struct bufferevent *bev = ssl ? bufferevent_openssl_socket_new(base, -1, ssl,
                                                                   BUFFEREVENT_SSL_ACCEPTING,
                                                                   BEV_OPT_CLOSE_ON_FREE)
                                  : NULL;
    if (!bev) {
        /* evhttp would serve the connection over a plain socket instead: never. */
        log_error("out of memory for the TLS state of a new connection: stopping rather than "
                  "serving it without TLS");
        abort();
    }
    /* Clients may close without close_notify once they have their reply. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    int r = agent_conn_track(srv->conns, ssl);
    if (r < 0)
        log_warning_errno(r, "a new connection is not counted nor timed: %m");
    return bev;
}

/* ---- setup ---- */

int agent_serve_parse_listen(const char *arg, char **ret_address, uint16_t *ret_port)
{
    *ret_address = NULL;
    *ret_port = AGENT_SERVE_DEFAULT_PORT;
    const char *host = "0.0.0.0";
    size_t host_len = strlen(host);
    const char *port = NULL;
    if (arg && *arg) {
        if (arg[0] == '[') {
            const char *end = strchr(arg, ']');
            if (!end || (end[1] && end[1] != ':'))
                goto bad;
            host = arg + 1;
            host_len = (size_t)(end - host);
            port = end[1] ? end + 2 : NULL;
        } else {
            const char *colon = strrchr(arg, ':');
            if (colon && strchr(arg, ':') != colon)
                goto bad; /* IPv6 wants brackets */
            if (colon) {
                if (colon != arg) {
                    host = arg;
                    host_len = (size_t)(colon - arg);
                }
                port = colon + 1;
            } else {
                host = arg;
                host_len = strlen(arg);
            }
        }
        if (host_len == 0)
            goto bad;
        unsigned long long n;
        if (port) {
            if (parse_unsigned(port, 0, 65535, &n) < 0)
                goto bad;
            *ret_port = (uint16_t)n;
        }
    }
    *ret_address = strndup(host, host_len);
    return *ret_address ? 0 : -ENOMEM;
bad:
    return log_error_errno(-EINVAL, "--listen wants ADDR:PORT, [ADDR6]:PORT, ADDR or :PORT, "
                                    "not \"%s\"",
                           arg);
}

static int open_listener(Server *srv, int *ret_fd)
{
    const char *addr = srv->p->listen_address ? srv->p->listen_address : "0.0.0.0";
    char port[8];
    snprintf(port, sizeof(port), "%u", srv->p->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    int e = getaddrinfo(addr, port, &hints, &ai);
    if (e != 0)
        return log_error_errno(-EINVAL, "could not resolve the listen address \"%s\": %s", addr,
                               gai_strerror(e));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = 0;
    if (fd < 0)
        r = -errno;
    else {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
            r = -errno;
    }
    freeaddrinfo(ai);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        return log_error_errno(r, "could not listen on %s:%s: %m", addr, port);
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        r = asprintf(&srv->listen_desc, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, serv);
    else
        r = asprintf(&srv->listen_desc, "%s:%s", addr, port);
    if (r < 0) {
        srv->listen_desc = NULL;
        close(fd);
        return -ENOMEM;
    }
    *ret_fd = fd;
    return 0;
}

static int check_params(const AgentServeParams *p)
{
    if (!p->pgdata)
        return log_error_errno(-EINVAL, "serve needs the data directory\nHINT: use --pgdata");
    if (!p->repo)
        return log_error_errno(-EINVAL, "no repository given\nHINT: use --repo or PITR_REPO");
    if (!p->node || !*p->node)
        return log_error_errno(-EINVAL, "no node name\nHINT: use --node or PITR_NODE");
    /* A job on a worker thread must never wait for a passphrase typed on a terminal. */
    if (!p->keyfile && !p->passphrase_file && !getenv("PITR_KEY_FILE") &&
        !getenv("PITR_PASSPHRASE"))
        return log_error_errno(-EINVAL, "serve needs a key that does not have to be typed\n"
                                        "HINT: use --key-file or --passphrase-file, or set "
                                        "PITR_KEY_FILE or PITR_PASSPHRASE");
    return 0;
}

static void server_free(Server *srv)
{
    if (!srv)
        return;
    /* First: evhttp_free() frees the listener, then the connections, whose end the limits
     * would count against the listener. */
    agent_conn_limits_free(srv->conns);
    if (srv->http)
        evhttp_free(srv->http);
    if (srv->sig_term)
        event_free(srv->sig_term);
    if (srv->sig_int)
        event_free(srv->sig_int);
    if (srv->job_done)
        event_free(srv->job_done);
    if (srv->base)
        event_base_free(srv->base);
    for (size_t i = 0; i < srv->n_jobs; i++)
        job_free(srv->jobs[i]);
    SSL_CTX_free(srv->ssl_ctx);
    free(srv->bindir);
    free(srv->pg_log);
    free(srv->listen_desc);
    for (size_t i = 0; i < ARRAY_SIZE(srv->abs_paths); i++)
        free(srv->abs_paths[i]);
    pthread_mutex_destroy(&srv->lock);
    pthread_mutex_destroy(&srv->state_file_lock);
    free(srv);
}

int agent_serve(const AgentServeParams *p)
{
    int r = check_params(p);
    if (r < 0)
        return r;
    /* On the heap: after a forced stop, worker threads still use it until the process exits. */
    Server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    *srv = (Server){ .params = *p, .started_at = now_real() };
    srv->p = &srv->params;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->state_file_lock, NULL);
    int fd = -1;
    /* PostgreSQL runs restore_command in PGDATA, and pg_ctl runs there: relative paths would
     * name other files. */
    const char **paths[] = { &srv->params.pgdata, &srv->params.repo,
                             &srv->params.keyfile, &srv->params.passphrase_file,
                             &srv->params.state_file, &srv->params.pg_log };
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        const char *path = *paths[i];
        if (!path || path[0] == '/' || strstr(path, "://"))
            continue;
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd))) {
            r = log_error_errno(-errno, "could not get the current directory: %m");
            goto out;
        }
        if (asprintf(&srv->abs_paths[i], "%s/%s", cwd, path) < 0) {
            srv->abs_paths[i] = NULL;
            r = -ENOMEM;
            goto out;
        }
        *paths[i] = srv->abs_paths[i];
    }
    p = srv->p;
    /* Not fatal: the repository may be created after the agent starts. */
    if (cs_repo_probe(p->repo) < 0)
        log_warning("jobs will fail until \"%s\" is a repository", p->repo);
    if ((r = agent_tls_server_ctx(p->tls_cert, p->tls_key, p->tls_ca, &srv->ssl_ctx)) < 0)
        goto out;
    if ((r = agent_pg_bindir(p->pg_bin, &srv->bindir)) < 0) {
        if (p->pg_bin)
            log_error_errno(r, "no pg_ctl in \"%s\"", p->pg_bin);
        else
            log_error_errno(r, "could not find PostgreSQL's pg_ctl\nHINT: use --pg-bin");
        goto out;
    }
    if (p->pg_log)
        srv->pg_log = strdup(p->pg_log);
    else {
        _cleanup_free_ char *copy = strdup(p->pgdata);
        if (copy && asprintf(&srv->pg_log, "%s/%s-postgres.log", dirname(copy), p->node) < 0)
            srv->pg_log = NULL;
    }
    if (!srv->pg_log) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = open_listener(srv, &fd)) < 0)
        goto out;
    /* Worker threads wake the loop with event_active(): libevent must lock its base. */
    if (evthread_use_pthreads() < 0 || !(srv->base = event_base_new()) ||
        !(srv->http = evhttp_new(srv->base))) {
        r = log_error_errno(-ENOMEM, "could not set up the event loop");
        goto out;
    }
    evhttp_set_bevcb(srv->http, bevcb, srv);
    evhttp_set_gencb(srv->http, handle_request, srv);
    evhttp_set_timeout(srv->http, CONN_TIMEOUT_S);
    evhttp_set_max_body_size(srv->http, EVHTTP_MAX_BODY);
    evhttp_set_max_headers_size(srv->http, 16 * 1024);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(srv->http, fd);
    if (!bound) {
        r = log_error_errno(-ENOMEM, "could not accept connections on %s", srv->listen_desc);
        goto out;
    }
    fd = -1; /* evhttp owns it now */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) < 0)
        nofile.rlim_cur = RLIM_INFINITY;
    bool is_over_half;
    unsigned max_conns = agent_conn_max(p->max_connections, nofile.rlim_cur, &is_over_half);
    if (is_over_half)
        log_warning("--max-connections %u is more than half the open-file limit (%llu): "
                    "connections and jobs may fail with \"Too many open files\"\nHINT: raise "
                    "the limit (ulimit -n, LimitNOFILE=) or lower --max-connections",
                    max_conns, (unsigned long long)nofile.rlim_cur);
    else if (!p->max_connections && max_conns < AGENT_CONN_DEFAULT_MAX)
        log_info("at most %u connections at once: half the open-file limit (%llu)", max_conns,
                 (unsigned long long)nofile.rlim_cur);
    unsigned handshake_s = p->handshake_timeout_s ? p->handshake_timeout_s
                                                  : AGENT_CONN_DEFAULT_HANDSHAKE_S;
    if ((r = agent_conn_limits_new(srv->base, evhttp_bound_socket_get_listener(bound),
                                   srv->listen_desc, max_conns, handshake_s, &srv->conns)) < 0) {
        log_error_errno(r, "could not set up connection limits: %m");
        goto out;
    }
    srv->sig_term = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, signal_cb, srv);
    srv->job_done = event_new(srv->base, -1, 0, job_done_cb, srv);
    if (!srv->sig_term || !srv->sig_int || !srv->job_done || event_add(srv->sig_term, NULL) < 0 ||
        event_add(srv->sig_int, NULL) < 0) {
        r = -ENOMEM;
        goto out;
    }
    /* A client that goes away mid-reply must not kill the agent. */
    signal(SIGPIPE, SIG_IGN);
    write_state(srv);
    log_info("node %s: serving on %s (TLS, client certificates from \"%s\"; at most %u "
             "connections, %u s for a handshake), PGDATA %s, pg_ctl in %s",
             p->node, srv->listen_desc, p->tls_ca, max_conns, handshake_s, p->pgdata,
             srv->bindir);
    if (event_base_dispatch(srv->base) < 0) {
        r = log_error_errno(-EIO, "the event loop failed");
        goto out;
    }
    pthread_mutex_lock(&srv->lock);
    srv->stopped = true;
    pthread_mutex_unlock(&srv->lock);
    write_state(srv);
    if (srv->forced) {
        /* Threads still use srv: leave it to the process exit. */
        log_warning("stopped with work in progress");
        return -EINTR;
    }
    log_info("stopped");
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    server_free(srv);
    return r;
}
