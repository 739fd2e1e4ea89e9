/*
 * A growable byte buffer (casync's ReallocBuffer). Zero-initialise with BUF_INIT; buf_free()
 * releases it and may be used as a _cleanup_ function.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct Buf {
    uint8_t *data;
    size_t size;     /* bytes in use */
    size_t capacity; /* bytes allocated */
} Buf;

#define BUF_INIT { 0 }

void buf_free(Buf *b);
/* Make room for at least `extra` more bytes; returns 0 or -ENOMEM. */
int buf_reserve(Buf *b, size_t extra);
int buf_append(Buf *b, const void *p, size_t n);
/* Append formatted text (without a terminating NUL). */
int buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append n bytes of uninitialised space and return a pointer to it (NULL on -ENOMEM). */
uint8_t *buf_extend(Buf *b, size_t n);
int buf_append_le16(Buf *b, uint16_t v);
int buf_append_le32(Buf *b, uint32_t v);
int buf_append_le64(Buf *b, uint64_t v);
void buf_clear(Buf *b);
/* Exchange the contents of two buffers (no copy). */
void buf_swap(Buf *a, Buf *b);

/*
 * Bounded reader over a byte range, pg_basebackup's GetCopyData* idea: every get checks the
 * remaining length and returns -EBADMSG when the data is short. Values are little-endian.
 */
typedef struct Cursor {
    const uint8_t *p;
    size_t left;
} Cursor;

static inline Cursor cursor_make(const void *p, size_t n)
{
    return (Cursor){ .p = p, .left = n };
}
int cursor_u8(Cursor *c, uint8_t *ret);
int cursor_le16(Cursor *c, uint16_t *ret);
int cursor_le32(Cursor *c, uint32_t *ret);
int cursor_le64(Cursor *c, uint64_t *ret);
/* Points *ret into the cursor's buffer; no copy. */
int cursor_bytes(Cursor *c, size_t n, const uint8_t **ret);
int cursor_copy(Cursor *c, void *out, size_t n);
