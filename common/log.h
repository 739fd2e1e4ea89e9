/*
 * Diagnostics on stderr. Messages follow PostgreSQL style: lowercase, quoted names, no trailing
 * period. log_*_errno() take a negative errno, set errno from it so "%m" works, and return it, so
 * a caller can write `return log_error_errno(r, "could not open \"%s\": %m", path);`.
 * Thread-safe: each message is written with one write(2).
 */
#pragma once

#include "common/macro.h"

typedef enum LogLevel {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
} LogLevel;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
/* Prefix printed before every message ("pitr-snap: "); the string must outlive the process. */
void log_set_program(const char *name);

void log_msg(LogLevel level, const char *fmt, ...) _printf_(2, 3);
int log_msg_errno(LogLevel level, int r, const char *fmt, ...) _printf_(3, 4);

#define log_error(...)         log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...)       log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...)          log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)         log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_error_errno(r, ...)   log_msg_errno(LOG_LEVEL_ERROR, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_msg_errno(LOG_LEVEL_WARNING, (r), __VA_ARGS__)
#define log_debug_errno(r, ...)   log_msg_errno(LOG_LEVEL_DEBUG, (r), __VA_ARGS__)
