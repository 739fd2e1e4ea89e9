#include "tools/common/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"

const char *cli_size(uint64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, n, "%.1f %s", v, units[u]);
    return buf;
}

bool cli_is_tty(void)
{
    return isatty(STDERR_FILENO);
}

void cli_print_json(const json_t *o)
{
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    fputc('\n', stdout);
}


int cli_option_error(int c, char *const argv[], const char *optstring,
                     const struct option *longopts, const char *program)
{
    /* A long option, and a short one that needs a value, is always the argument just passed;
     * an unknown short one may sit inside a group (-qZ) that getopt has not left yet, so only
     * optopt names it. getopt sets optopt to 0 for a long option it does not know, and to the
     * option's value for one that was given a value it does not take. */
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    bool is_long = c == ':' ? strncmp(arg, "--", 2) == 0
                            : optopt == 0 || optopt > UCHAR_MAX || strchr(optstring, optopt);
    if (!is_long) {
        if (c == ':')
            return log_error_errno(-EINVAL, "option '-%c' needs a value\nHINT: see %s --help",
                                   optopt, program);
        return log_error_errno(-EINVAL, "unknown option '-%c'\nHINT: see %s --help", optopt,
                               program);
    }
    int name_len = (int)strcspn(arg, "=");
    if (c == ':')
        return log_error_errno(-EINVAL, "option '%.*s' needs a value\nHINT: see %s --help",
                               name_len, arg, program);
    if (optopt != 0)
        return log_error_errno(-EINVAL, "option '%.*s' takes no value\nHINT: see %s --help",
                               name_len, arg, program);
    /* Unknown, or a prefix of several options. */
    char candidates[256] = "";
    size_t n = 0, used = 0;
    for (const struct option *o = longopts; o->name; o++)
        if (name_len > 2 && strncmp(o->name, arg + 2, (size_t)name_len - 2) == 0) {
            int w = snprintf(candidates + used, sizeof(candidates) - used, "%s--%s",
                             n++ ? ", " : "", o->name);
            if (w > 0 && (size_t)w < sizeof(candidates) - used)
                used += (size_t)w;
        }
    if (n > 1)
        return log_error_errno(-EINVAL,
                               "option '%.*s' is ambiguous: it could be %s\nHINT: see %s --help",
                               name_len, arg, candidates, program);
    return log_error_errno(-EINVAL, "unknown option '%.*s'\nHINT: see %s --help", name_len, arg,
                           program);
}
