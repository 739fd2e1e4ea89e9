#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static LogLevel current_level = LOG_LEVEL_INFO;
static const char *program = NULL;

void log_set_level(LogLevel level)
{
    current_level = level;
}

LogLevel log_get_level(void)
{
    return current_level;
}

void log_set_program(const char *name)
{
    program = name;
}

static void log_emit(LogLevel level, const char *fmt, va_list ap)
{
    static const char *const prefix[] = {
        [LOG_LEVEL_ERROR] = "error: ",
        [LOG_LEVEL_WARNING] = "warning: ",
        [LOG_LEVEL_INFO] = "",
        [LOG_LEVEL_DEBUG] = "debug: ",
    };
    char line[4096];
    int n = snprintf(line, sizeof(line), "%s%s%s", program ? program : "", program ? ": " : "",
                     prefix[level]);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = MIN((size_t)n + (size_t)m, sizeof(line) - 2);
    line[len++] = '\n';
    ssize_t _unused_ w = write(STDERR_FILENO, line, len);
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    if (level > current_level)
        return;
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, fmt, ap);
    va_end(ap);
    errno = saved;
}

int log_msg_errno(LogLevel level, int r, const char *fmt, ...)
{
    if (level > current_level)
        return r;
    errno = r < 0 ? -r : r;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, fmt, ap);
    va_end(ap);
    return r;
}
