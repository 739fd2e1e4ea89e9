/*
 * Strict parsing of unsigned decimal numbers from options and configuration: digits only (no
 * sign, no spaces, no suffix), no overflow, and within [min, max]. Returns 0 or -EINVAL; the
 * caller says what was wrong, in its own words.
 */
#pragma once

int parse_unsigned(const char *s, unsigned long long min, unsigned long long max,
                   unsigned long long *ret);
