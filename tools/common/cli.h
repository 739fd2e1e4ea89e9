/*
 * What the command-line tools share beyond the libraries: key options, human-readable sizes
 * and progress lines on stderr. Exit codes are in common/exit-code.h.
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chunkstore/repo.h"
#include "common/exit-code.h"

typedef struct CliKeyOptions {
    const char *passphrase_file;
    const char *keyfile;
} CliKeyOptions;

/* "1.5 GiB" into buf. */
const char *cli_size(uint64_t bytes, char *buf, size_t n);

/* The --json output: `o` on stdout, indented, keys sorted, and a newline. */
void cli_print_json(const json_t *o);

/* True when stderr is a terminal (progress lines redraw with \r only then). */
bool cli_is_tty(void);

/*
 * getopt_long's answer `c` ('?' or ':') about an option it could not take, with opterr = 0 and
 * an optstring that starts with ':'. Logs one error naming the option as it was typed (unknown,
 * ambiguous with the options it could be, a value missing, or a value it does not take) and a
 * hint to `program --help`, instead of getopt's message and the whole help. Returns -EINVAL.
 */
int cli_option_error(int c, char *const argv[], const char *optstring,
                     const struct option *longopts, const char *program);

