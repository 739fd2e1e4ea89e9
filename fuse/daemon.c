#include "fuse/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

static struct {
    bool is_running;
    pthread_t thread;
    int in_fd;  /* read end of the pipe that is now stderr */
    int log_fd; /* -1: syslog */
} fwd = { .in_fd = -1, .log_fd = -1 };

int pfs_daemon_fork(int *ret_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(p[0]);
        close(p[1]);
        return r;
    }
    if (pid > 0) {
        close(p[1]);
        uint8_t status;
        ssize_t n;
        do
            n = read(p[0], &status, 1);
        while (n < 0 && errno == EINTR);
        if (n == 1)
            _exit(status);
        /* The child died without a verdict: say how. */
        int ws;
        if (waitpid(pid, &ws, 0) == pid && WIFSIGNALED(ws))
            fprintf(stderr, "mount.pitrfs: error: the mount process was killed by signal %d\n",
                    WTERMSIG(ws));
        _exit(1);
    }
    close(p[0]);
    *ret_fd = p[1];
    return 0;
}

void pfs_daemon_fail(int fd, int status)
{
    uint8_t b = (uint8_t)status;
    ssize_t _unused_ w = write(fd, &b, 1);
    close(fd);
}

/* Strip "mount.pitrfs: " and "error: " etc. from a log line, returning the syslog priority. */
static int line_priority(const char **line)
{
    static const struct {
        const char *prefix;
        int prio;
    } levels[] = { { "error: ", LOG_ERR }, { "warning: ", LOG_WARNING }, { "debug: ", LOG_DEBUG } };
    const char *p = *line;
    const char *colon = strstr(p, ": ");
    if (colon && strncmp(p, "mount.pitrfs", (size_t)(colon - p)) == 0 && colon - p == 12)
        p = colon + 2;
    *line = p;
    for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
        if (strncmp(p, levels[i].prefix, strlen(levels[i].prefix)) == 0)
            return levels[i].prio;
    return LOG_INFO;
}

static void emit(const char *line)
{
    if (fwd.log_fd < 0) {
        const char *text = line;
        int prio = line_priority(&text);
        syslog(prio, "%s", line);
        return;
    }
    char stamp[40];
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S UTC ", gmtime_r(&now, &tm));
    char *out;
    int n = asprintf(&out, "%s%s\n", stamp, line);
    if (n > 0) {
        (void)write_all(fwd.log_fd, out, (size_t)n);
        free(out);
    }
}

static void *forwarder(void *arg)
{
    (void)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fwd.in_fd, buf + have, sizeof(buf) - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
            *nl = 0;
            emit(start);
            start = nl + 1;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof(buf) - 1) { /* an overlong line: pass it on in pieces */
            buf[have] = 0;
            emit(buf);
            have = 0;
        }
    }
    if (have > 0) {
        buf[have] = 0;
        emit(buf);
    }
    return NULL;
}

int pfs_daemon_detach(int fd, const char *log_path)
{
    int log_fd = -1, p[2];
    if (log_path && (log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
        return log_error_errno(-errno, "could not open log file \"%s\": %m", log_path);
    if (pipe2(p, O_CLOEXEC) < 0) {
        int r = log_error_errno(-errno, "could not create a pipe: %m");
        if (log_fd >= 0)
            close(log_fd);
        return r;
    }
    if (!log_path)
        openlog("mount.pitrfs", LOG_PID, LOG_DAEMON);
    fwd.in_fd = p[0];
    fwd.log_fd = log_fd;
    int rc = pthread_create(&fwd.thread, NULL, forwarder, NULL);
    if (rc != 0) {
        close(p[0]);
        close(p[1]);
        if (log_fd >= 0)
            close(log_fd);
        fwd.in_fd = fwd.log_fd = -1;
        return log_error_errno(-rc, "could not start a thread: %m");
    }
    fwd.is_running = true;

    (void)setsid();
    if (chdir("/") < 0) {
        /* cannot happen; keep going in the old directory */
    }
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        close(null_fd);
    }
    dup2(p[1], STDERR_FILENO); /* dup2 clears O_CLOEXEC on the new descriptor */
    close(p[1]);

    uint8_t ok = 0;
    ssize_t _unused_ w = write(fd, &ok, 1);
    close(fd);
    return 0;
}

void pfs_daemon_log_close(void)
{
    if (!fwd.is_running)
        return;
    /* Replacing stderr closes the pipe's last write end: the forwarder drains it and ends. */
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd >= 0) {
        dup2(null_fd, STDERR_FILENO);
        close(null_fd);
    } else
        close(STDERR_FILENO);
    pthread_join(fwd.thread, NULL);
    fwd.is_running = false;
    close(fwd.in_fd);
    if (fwd.log_fd >= 0)
        close(fwd.log_fd);
    fwd.in_fd = fwd.log_fd = -1;
}
