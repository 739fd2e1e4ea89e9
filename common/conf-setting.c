#include "common/conf-setting.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "common/macro.h"

int conf_append_setting(Buf *out, const char *key, const char *value)
{
    int r = buf_printf(out, "%s = '", key);
    for (const char *p = value; r == 0 && *p; p++)
        r = *p == '\'' || *p == '\\' ? buf_printf(out, "%c%c", *p, *p) : buf_append(out, p, 1);
    return r < 0 ? r : buf_append(out, "'\n", 2);
}

/* Whether the line sets a recovery setting: its first word, before blanks or "=", is one of
 * them (setting names are case-insensitive). */
static bool sets_recovery(const char *line, size_t n)
{
    static const char *const keys[] = {
        "restore_command",        "recovery_target",        "recovery_target_name",
        "recovery_target_lsn",    "recovery_target_time",   "recovery_target_xid",
        "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action",
    };
    size_t i = 0;
    while (i < n && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t start = i;
    while (i < n && line[i] != ' ' && line[i] != '\t' && line[i] != '=' && line[i] != '\n')
        i++;
    size_t len = i - start;
    for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
        if (len == strlen(keys[k]) && strncasecmp(line + start, keys[k], len) == 0)
            return true;
    return false;
}

int conf_append_without_recovery(Buf *out, const char *text, size_t n)
{
    int r = 0;
    for (size_t at = 0; r == 0 && at < n;) {
        const char *nl = memchr(text + at, '\n', n - at);
        size_t len = nl ? (size_t)(nl - (text + at)) + 1 : n - at;
        if (sets_recovery(text + at, len))
            r = buf_append(out, "# ", 2);
        if (r == 0)
            r = buf_append(out, text + at, len);
        if (r == 0 && !nl)
            r = buf_append(out, "\n", 1);
        at += len;
    }
    return r;
}
