/*
 * UTF-8 checks for text that comes from outside (paths, decoded URIs, configuration) on its way
 * into JSON, whose strings must be UTF-8.
 */
#pragma once

#include <stdbool.h>

/* Whether `s` is UTF-8 as a JSON string must be (no overlong forms, surrogates or code points
 * past U+10FFFF). */
bool utf8_is_valid(const char *s);
/* A copy of `s` with every byte that is not part of UTF-8 written as "\xHH", so that a JSON
 * string can hold it and a reader can still tell the bytes. NULL when out of memory. */
char *utf8_escape(const char *s);
