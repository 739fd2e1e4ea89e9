#include "common/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/endian.h"

void buf_free(Buf *b)
{
    free(b->data);
    *b = (Buf)BUF_INIT;
}

int buf_reserve(Buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->size)
        return -ENOMEM;
    size_t need = b->size + extra;
    if (need <= b->capacity)
        return 0;
    size_t cap = b->capacity ? b->capacity : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->capacity = cap;
    return 0;
}

void buf_swap(Buf *a, Buf *b)
{
    Buf t = *a;
    *a = *b;
    *b = t;
}

uint8_t *buf_extend(Buf *b, size_t n)
{
    /* Even for n == 0 the result is a valid pointer (never NULL + 0): callers tell failure by
     * NULL alone. */
    if (buf_reserve(b, n ? n : !b->data) < 0)
        return NULL;
    uint8_t *p = b->data + b->size;
    b->size += n;
    return p;
}

int buf_append(Buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *dst = buf_extend(b, n);
    if (!dst)
        return -ENOMEM;
    memcpy(dst, p, n);
    return 0;
}

int buf_printf(Buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    /* room for vsnprintf's NUL, which is not counted in size */
    if (buf_reserve(b, (size_t)n + 1) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->size, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->size += (size_t)n;
    return 0;
}

int buf_append_le16(Buf *b, uint16_t v)
{
    uint8_t *p = buf_extend(b, 2);
    if (!p)
        return -ENOMEM;
    put_le16(p, v);
    return 0;
}

int buf_append_le32(Buf *b, uint32_t v)
{
    uint8_t *p = buf_extend(b, 4);
    if (!p)
        return -ENOMEM;
    put_le32(p, v);
    return 0;
}

int buf_append_le64(Buf *b, uint64_t v)
{
    uint8_t *p = buf_extend(b, 8);
    if (!p)
        return -ENOMEM;
    put_le64(p, v);
    return 0;
}

void buf_clear(Buf *b)
{
    b->size = 0;
}

int cursor_bytes(Cursor *c, size_t n, const uint8_t **ret)
{
    if (c->left < n)
        return -EBADMSG;
    *ret = c->p;
    c->p += n;
    c->left -= n;
    return 0;
}

int cursor_copy(Cursor *c, void *out, size_t n)
{
    const uint8_t *p;
    int r = cursor_bytes(c, n, &p);
    if (r < 0)
        return r;
    memcpy(out, p, n);
    return 0;
}

int cursor_u8(Cursor *c, uint8_t *ret)
{
    return cursor_copy(c, ret, 1);
}

int cursor_le16(Cursor *c, uint16_t *ret)
{
    const uint8_t *p;
    int r = cursor_bytes(c, 2, &p);
    if (r == 0)
        *ret = get_le16(p);
    return r;
}

int cursor_le32(Cursor *c, uint32_t *ret)
{
    const uint8_t *p;
    int r = cursor_bytes(c, 4, &p);
    if (r == 0)
        *ret = get_le32(p);
    return r;
}

int cursor_le64(Cursor *c, uint64_t *ret)
{
    const uint8_t *p;
    int r = cursor_bytes(c, 8, &p);
    if (r == 0)
        *ret = get_le64(p);
    return r;
}
