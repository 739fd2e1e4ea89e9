#include "common/utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the UTF-8 sequence at p (1 to 4), or 0 when the bytes there are not one. */
static size_t utf8_sequence_length(const unsigned char *p)
{
    static const uint32_t least[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    size_t n;
    uint32_t c;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        n = 2, c = p[0] & 0x1f;
    else if ((p[0] & 0xf0) == 0xe0)
        n = 3, c = p[0] & 0x0f;
    else if ((p[0] & 0xf8) == 0xf0)
        n = 4, c = p[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < least[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return n;
}

bool utf8_is_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_sequence_length(p);
        if (!n)
            return false;
        p += n;
    }
    return true;
}

char *utf8_escape(const char *s)
{
    char *out = malloc(4 * strlen(s) + 1), *q = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_sequence_length(p);
        if (n) {
            memcpy(q, p, n);
            q += n;
            p += n;
        } else
            q += sprintf(q, "\\x%02X", *p++);
    }
    *q = 0;
    return out;
}
