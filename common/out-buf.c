#include "common/out-buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fs-util.h"

int out_buf_init(OutBuf *o, int fd, bool positional, uint64_t off, size_t cap)
{
    *o = (OutBuf){ .fd = fd, .positional = positional, .off = off, .cap = cap };
    o->buf = malloc(cap ? cap : 1);
    return o->buf ? 0 : -ENOMEM;
}

static int write_out(OutBuf *o, const void *p, size_t n)
{
    int r = o->positional ? pwrite_all(o->fd, p, n, o->off) : write_all(o->fd, p, n);
    if (r == 0)
        o->off += n;
    return r;
}

int out_buf_flush(OutBuf *o)
{
    if (!o->len)
        return 0;
    size_t n = o->len;
    o->len = 0;
    return write_out(o, o->buf, n);
}

int out_buf_add(OutBuf *o, const void *p, size_t n)
{
    /* A large piece (a run of pages, a big chunk) with nothing gathered before it goes out
     * as it is: copying it first would only cost a pass over its bytes. */
    if (o->len == 0 && n >= o->cap / 4)
        return write_out(o, p, n);
    if (o->len + n > o->cap) {
        int r = out_buf_flush(o);
        if (r < 0)
            return r;
        if (n > o->cap)
            return write_out(o, p, n);
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

int out_buf_skip(OutBuf *o, uint64_t n)
{
    int r = out_buf_flush(o);
    if (r < 0)
        return r;
    o->off += n;
    if (!o->positional && lseek(o->fd, (off_t)n, SEEK_CUR) < 0)
        return -errno;
    return 0;
}

void out_buf_done(OutBuf *o)
{
    free(o->buf);
    o->buf = NULL;
    o->len = 0;
}
