#include "common/parse.h"

#include <errno.h>
#include <stdlib.h>

int parse_unsigned(const char *s, unsigned long long min, unsigned long long max,
                   unsigned long long *ret)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL; /* strtoull would take spaces, a sign, and "-1" as a huge number */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}
