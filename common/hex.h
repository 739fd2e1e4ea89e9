/* Lowercase hex encoding for ids in object names and output. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Writes 2*n hex digits and a NUL to out (which must hold 2*n+1 bytes). */
void hex_encode(const void *p, size_t n, char *out);
/* Decodes exactly 2*n hex digits from s; returns 0 or -EINVAL. */
int hex_decode(const char *s, void *out, size_t n);
