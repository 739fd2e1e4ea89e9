#include "common/conf-setting.h"

int conf_append_setting(Buf *out, const char *key, const char *value)
{
    int r = buf_printf(out, "%s = '", key);
    for (const char *p = value; r == 0 && *p; p++)
        r = *p == '\'' ? buf_append(out, "''", 2) : buf_append(out, p, 1);
    return r < 0 ? r : buf_append(out, "'\n", 2);
}
