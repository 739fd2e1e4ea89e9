#include "agent/service-pg.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

extern char **environ;

/* ---- probe ---- */

/* libpq's messages span lines ("...failed: Connection refused\n\tIs the server running...");
 * a status field wants one. */
static char *one_line(const char *msg)
{
    char *s = strdup(msg ? msg : "unknown error");
    if (!s)
        return NULL;
    char *w = s;
    for (const char *p = s; *p; p++) {
        char c = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (c == ' ' && (w == s || w[-1] == ' '))
            continue;
        *w++ = c;
    }
    while (w > s && w[-1] == ' ')
        w--;
    *w = 0;
    return s;
}

static int dup_field(PGresult *res, int col, char **ret)
{
    *ret = NULL;
    if (PQgetisnull(res, 0, col))
        return 0;
    *ret = strdup(PQgetvalue(res, 0, col));
    return *ret ? 0 : -ENOMEM;
}

int agent_pg_probe(const char *conninfo, unsigned timeout_s, AgentPgProbe *ret)
{
    *ret = (AgentPgProbe){ 0 };
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%u", timeout_s ? timeout_s : 5);
    /* Later keywords override what the expanded connection string says: ours win for the
     * timeout, the user's for the application name. */
    const char *const keys[] = { "application_name", "dbname", "connect_timeout", NULL };
    const char *const values[] = { "pitr-agent", conninfo ? conninfo : "", timeout, NULL };
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn)
        return -ENOMEM;
    PGresult *res = NULL;
    int r = 0;
    if (PQstatus(conn) != CONNECTION_OK) {
        ret->error = one_line(PQerrorMessage(conn));
        r = ret->error ? 0 : -ENOMEM;
        goto out;
    }
    res = PQexec(conn,
                 "SELECT current_setting('server_version'), "
                 "current_setting('server_version_num')::int, pg_is_in_recovery(), "
                 "archived_count, failed_count, last_archived_wal, "
                 "coalesce(extract(epoch FROM last_archived_time), 0)::float8, "
                 "last_failed_wal, coalesce(extract(epoch FROM last_failed_time), 0)::float8 "
                 "FROM pg_stat_archiver");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ret->error = one_line(PQresultErrorMessage(res));
        r = ret->error ? 0 : -ENOMEM;
        goto out;
    }
    ret->reachable = true;
    ret->server_version_num = atoi(PQgetvalue(res, 0, 1));
    ret->in_recovery = PQgetvalue(res, 0, 2)[0] == 't';
    ret->archived_count = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    ret->failed_count = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    ret->last_archived_time = strtod(PQgetvalue(res, 0, 6), NULL);
    ret->last_failed_time = strtod(PQgetvalue(res, 0, 8), NULL);
    if ((r = dup_field(res, 0, &ret->server_version)) < 0 ||
        (r = dup_field(res, 5, &ret->last_archived_wal)) < 0 ||
        (r = dup_field(res, 7, &ret->last_failed_wal)) < 0)
        goto out;
out:
    PQclear(res);
    PQfinish(conn);
    if (r < 0)
        agent_pg_probe_clear(ret);
    return r;
}

void agent_pg_probe_clear(AgentPgProbe *p)
{
    free(p->error);
    free(p->server_version);
    free(p->last_archived_wal);
    free(p->last_failed_wal);
    *p = (AgentPgProbe){ 0 };
}

bool agent_pg_probe_archiving_healthy(const AgentPgProbe *p)
{
    return p->reachable &&
           (p->failed_count == 0 || p->last_archived_time >= p->last_failed_time);
}

/* ---- owner ---- */

int agent_pg_owner(const char *path, AgentPgOwner *ret)
{
    *ret = (AgentPgOwner){ 0 };
    struct stat st;
    if (stat(path, &st) < 0) {
        int r = -errno;
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
            return -ENOMEM;
        if (r != -ENOENT || stat(dirname(copy), &st) < 0)
            return r;
    }
    long bufsize = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t n = bufsize > 0 ? (size_t)bufsize : 16384;
    _cleanup_free_ char *buf = malloc(n);
    if (!buf)
        return -ENOMEM;
    struct passwd pw, *found = NULL;
    int e = getpwuid_r(st.st_uid, &pw, buf, n, &found);
    if (e != 0)
        return -e;
    if (!found)
        return -ENOENT;
    int ngroups = 16;
    gid_t *groups = NULL;
    for (;;) {
        gid_t *g = realloc(groups, (size_t)ngroups * sizeof(gid_t));
        if (!g) {
            free(groups);
            return -ENOMEM;
        }
        groups = g;
        int want = ngroups;
        if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &want) >= 0) {
            ngroups = want;
            break;
        }
        if (want <= ngroups || want > 65536) { /* no progress: give up on the extras */
            groups[0] = pw.pw_gid;
            ngroups = 1;
            break;
        }
        ngroups = want;
    }
    ret->name = strdup(pw.pw_name);
    if (!ret->name) {
        free(groups);
        return -ENOMEM;
    }
    ret->uid = pw.pw_uid;
    ret->gid = pw.pw_gid;
    ret->groups = groups;
    ret->n_groups = ngroups;
    return 0;
}

void agent_pg_owner_clear(AgentPgOwner *o)
{
    free(o->name);
    free(o->groups);
    *o = (AgentPgOwner){ 0 };
}

/* ---- running programs ---- */

/* Keep the last AGENT_PG_CTL_OUTPUT_MAX bytes: the end of pg_ctl's output says what failed. */
static int output_append(char **buf, size_t *len, const char *p, size_t n)
{
    if (n > AGENT_PG_CTL_OUTPUT_MAX) {
        p += n - AGENT_PG_CTL_OUTPUT_MAX;
        n = AGENT_PG_CTL_OUTPUT_MAX;
    }
    if (*len + n > AGENT_PG_CTL_OUTPUT_MAX) {
        size_t drop = *len + n - AGENT_PG_CTL_OUTPUT_MAX;
        memmove(*buf, *buf + drop, *len - drop);
        *len -= drop;
    }
    if (!*buf && !(*buf = malloc(AGENT_PG_CTL_OUTPUT_MAX + 1)))
        return -ENOMEM;
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Only async-signal-safe calls between fork and exec: the agent has other threads, and one of
 * them may hold the malloc lock at the moment of the fork. */
static _Noreturn void child_exec(char *const argv[], char *const envp[], int out_fd,
                                 int null_fd, const AgentPgOwner *as, const char *cwd)
{
    static const char msg_ids[] = "pitr-agent: could not switch to the data directory owner\n";
    static const char msg_exec[] = "pitr-agent: could not execute the program\n";
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(out_fd, STDERR_FILENO) < 0)
        _exit(126);
    if (close_range(3, ~0U, 0) < 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    if (as && (setgroups((size_t)as->n_groups, as->groups) < 0 || setgid(as->gid) < 0 ||
               setuid(as->uid) < 0)) {
        ssize_t _unused_ w = write(STDERR_FILENO, msg_ids, sizeof(msg_ids) - 1);
        _exit(126);
    }
    if (!cwd || chdir(cwd) < 0)
        (void)!chdir("/");
    execve(argv[0], argv, envp);
    ssize_t _unused_ w = write(STDERR_FILENO, msg_exec, sizeof(msg_exec) - 1);
    _exit(127);
}

/* Run argv[0] (an absolute path) and collect its output; kill its process group after
 * `timeout_s`. Returns 0 with ret filled, or -errno when it could not be started. */
static int run_command(char *const argv[], const AgentPgOwner *as, const char *cwd,
                       unsigned timeout_s, AgentPgCtlResult *ret)
{
    *ret = (AgentPgCtlResult){ .exit_status = -1 };
    size_t n_env = 0;
    while (environ && environ[n_env])
        n_env++;
    _cleanup_free_ char **envp = calloc(n_env + 1, sizeof(char *));
    if (!envp)
        return -ENOMEM;
    for (size_t i = 0, j = 0; i < n_env; i++)
        if (strncmp(environ[i], "PITR_PASSPHRASE=", 16) != 0)
            envp[j++] = environ[i];
    _cleanup_close_ int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0)
        return -errno;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(pfd[0]);
        close(pfd[1]);
        return r;
    }
    if (pid == 0)
        child_exec(argv, envp, pfd[1], null_fd, as, cwd);
    close(pfd[1]);
    _cleanup_close_ int rfd = pfd[0];

    size_t len = 0;
    double deadline = mono_now() + timeout_s;
    int status = 0, r = 0;
    bool exited = false, eof = false;
    /* Read until EOF and exit; a grandchild that keeps the pipe open (a daemon that did not
     * redirect its output) must not make us wait for the timeout, so the exit ends it too. */
    while (!exited || !eof) {
        double left = deadline - mono_now();
        if (left <= 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            ret->timed_out = true;
            break;
        }
        struct pollfd p = { .fd = rfd, .events = POLLIN };
        int wait_ms = exited ? 0 : (int)MIN(left * 1000 + 1, 100);
        int k = eof ? 0 : poll(&p, 1, wait_ms);
        if (k < 0 && errno != EINTR) {
            r = -errno;
            kill(-pid, SIGKILL);
            break;
        }
        if (k > 0) {
            char buf[4096];
            ssize_t got = read(rfd, buf, sizeof(buf));
            if (got > 0) {
                if ((r = output_append(&ret->output, &len, buf, (size_t)got)) < 0) {
                    kill(-pid, SIGKILL);
                    break;
                }
                continue;
            }
            if (got == 0 || errno != EINTR)
                eof = true;
        } else if (exited)
            break; /* exited and nothing more to read right now */
        if (!exited) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                exited = true;
            else if (eof) /* the pipe closed first: only the exit is left to wait for */
                usleep(10000);
        }
    }
    if (!exited) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (r < 0) {
        agent_pg_ctl_result_clear(ret);
        return r;
    }
    if (!ret->timed_out && WIFEXITED(status))
        ret->exit_status = WEXITSTATUS(status);
    if (!ret->output && !(ret->output = strdup("")))
        return -ENOMEM;
    return 0;
}

void agent_pg_ctl_result_clear(AgentPgCtlResult *r)
{
    free(r->output);
    *r = (AgentPgCtlResult){ 0 };
}

static bool has_pg_ctl(const char *dir)
{
    _cleanup_free_ char *p = NULL;
    return asprintf(&p, "%s/pg_ctl", dir) >= 0 && access(p, X_OK) == 0;
}

static int find_in_path(const char *prog, char **ret)
{
    const char *path = getenv("PATH");
    _cleanup_free_ char *copy = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    if (!copy)
        return -ENOMEM;
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", d, prog) < 0)
            return -ENOMEM;
        if (access(p, X_OK) == 0) {
            *ret = p;
            return 0;
        }
        free(p);
    }
    return -ENOENT;
}

int agent_pg_bindir(const char *configured, char **ret)
{
    *ret = NULL;
    if (configured) {
        if (!has_pg_ctl(configured))
            return -ENOENT;
        *ret = strdup(configured);
        return *ret ? 0 : -ENOMEM;
    }
    _cleanup_free_ char *pg_config = NULL;
    if (find_in_path("pg_config", &pg_config) == 0) {
        char bindir_opt[] = "--bindir";
        char *argv[] = { pg_config, bindir_opt, NULL };
        AgentPgCtlResult res;
        if (run_command(argv, NULL, NULL, 10, &res) == 0) {
            res.output[strcspn(res.output, "\r\n")] = 0;
            if (res.exit_status == 0 && res.output[0] == '/' && has_pg_ctl(res.output)) {
                *ret = TAKE_PTR(res.output);
                return 0;
            }
            agent_pg_ctl_result_clear(&res);
        }
    }
    static const char fallback[] = "/usr/lib/postgresql/15/bin";
    if (!has_pg_ctl(fallback))
        return -ENOENT;
    *ret = strdup(fallback);
    return *ret ? 0 : -ENOMEM;
}

int agent_pg_ctl(const AgentPgCtlParams *p, const char *action, AgentPgCtlResult *ret)
{
    *ret = (AgentPgCtlResult){ .exit_status = -1 };
    unsigned timeout = p->timeout_s ? p->timeout_s : 60;
    char t[16];
    snprintf(t, sizeof(t), "%u", timeout);
    _cleanup_free_ char *pg_ctl = NULL;
    if (asprintf(&pg_ctl, "%s/pg_ctl", p->bindir) < 0)
        return -ENOMEM;
    const char *argv[16];
    size_t n = 0;
    argv[n++] = pg_ctl;
    argv[n++] = "-D";
    argv[n++] = p->pgdata;
    if (strcmp(action, "status") != 0) {
        argv[n++] = "-w";
        argv[n++] = "-t";
        argv[n++] = t;
    }
    if (strcmp(action, "start") == 0) {
        if (!p->log)
            return -EINVAL;
        argv[n++] = "-l";
        argv[n++] = p->log;
    } else if (strcmp(action, "stop") == 0) {
        argv[n++] = "-m";
        argv[n++] = "fast";
    } else if (strcmp(action, "status") != 0)
        return -EINVAL;
    argv[n++] = action;
    argv[n] = NULL;
    /* The owner can always enter its data directory; root's working directory it may not. */
    int r = run_command((char *const *)(uintptr_t)argv, p->as, p->pgdata, timeout + 15, ret);
    ret->kill_after_s = timeout + 15;
    return r;
}

const char *agent_text_tail(const char *text, size_t max)
{
    size_t n = strlen(text);
    if (n <= max)
        return text;
    const char *t = text + n - max;
    const char *nl = strchr(t, '\n');
    return nl && nl[1] && (size_t)(nl - t) < max / 2 ? nl + 1 : t;
}
