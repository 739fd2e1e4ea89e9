/*
 * Gathers many small writes to one file into few large ones. Restoring a page file writes
 * 8 KiB at a time; each write(2) takes the inode lock and walks the page cache once, so
 * handing the kernel a megabyte at a time costs far less system time.
 *
 * Bytes are copied into the buffer, so the caller's pointer need only live for the call; a
 * piece of a quarter of the buffer or more that arrives when the buffer is empty is written
 * straight from the caller's memory.
 * Positional mode writes with pwrite(2) at a tracked offset (several threads may fill
 * disjoint ranges of one file, each with its own OutBuf); stream mode appends with write(2)
 * and also works on pipes. All functions return 0 or -errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct OutBuf {
    int fd;
    bool positional;
    uint8_t *buf;
    size_t len, cap;
    uint64_t off; /* file offset of buf[0] (positional mode) */
} OutBuf;

/* The buffer size the restore paths use: large enough that page-sized adds cost little
 * system time, small enough for one buffer per restoring thread. */
#define OUT_BUF_WRITE_SIZE (1u << 20)

/* cap bytes of buffer; positional mode starts writing at `off`. */
int out_buf_init(OutBuf *o, int fd, bool positional, uint64_t off, size_t cap);
int out_buf_add(OutBuf *o, const void *p, size_t n);
/* Leave n bytes unwritten (a hole); stream mode seeks past them. */
int out_buf_skip(OutBuf *o, uint64_t n);
int out_buf_flush(OutBuf *o);
/* Frees the buffer without writing what is left. */
void out_buf_done(OutBuf *o);
