/*
 * What the libFuzzer targets of tests/fuzz/ share.
 *
 * Most decoders sit behind authentication: a record's payload, a snapshot object and a key
 * object only reach their parsers after an AES-256-GCM tag and an xxh3 check pass, which a
 * fuzzer never forges. So the targets hold fixed keys and seal the fuzz input the way a writer
 * with the key would (fuzz_record_seal), and the fuzzer explores the plaintext formats. The
 * fixed repository (fuzz_repo_create) makes the seeds of the key targets unlock it.
 *
 * Every target is one C file with LLVMFuzzerTestOneInput; make-seeds.c writes the committed
 * seed corpora with the same keys.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/pack.h"
#include "chunkstore/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Stop the harness the way a sanitizer report does, naming the broken promise: libFuzzer keeps
 * the input that got here. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)
_Noreturn void fuzz_fail(const char *file, int line, const char *what);

/* The largest length the harnesses seal into a record or allocate for: inside an authenticated
 * record a length is trusted, so larger ones (up to 4 GiB) test the allocator, not the parser,
 * and each such input costs a large allocation (the fuzzer ran 15 times slower at 64 MiB).
 * Whether a reader should bound them itself is a separate question. */
#define FUZZ_MAX_ALLOC (1u << 20)

/* The fixed key of every record the record target seals. */
extern const uint8_t fuzz_pack_key[32];

/* Log errors only (damaged input is logged at error level by design; warnings add nothing). */
void fuzz_quiet(void);

/* A private scratch directory for this process, made on first use and removed at exit. */
const char *fuzz_scratch_dir(void);
/* Write p[0..n) to path (replacing it, directories made as needed). 0 or -errno. */
int fuzz_write_file(const char *path, const void *p, size_t n);
/* Remove a directory tree (best effort). */
void fuzz_remove_tree(const char *path);

/* The bytes the targets take as the content of a base slice: any fixed function of the
 * chunk id and the position in the chunk, so that two slices of one chunk agree where they
 * overlap. The seeds' delta frames were compressed against the same bytes. */
void fuzz_base_bytes(const CsChunkSlice *s, uint8_t *out);

/* Where the ciphertext of the record rec[0..len) starts (its AAD length), or -EBADMSG when the
 * fixed header and the counts do not add up to len. */
long fuzz_record_header_len(const uint8_t *rec, size_t len);
/* Encrypt the payload of a record in place under `key` (the payload bytes are taken as its
 * plaintext), write its tag and its xxh3: what a writer would have made of that plaintext.
 * -EBADMSG when the framing does not parse (the record is left as it is). */
int fuzz_record_seal(const uint8_t key[32], uint8_t *rec, size_t len);
/* The inverse, for the seeds: decrypt the payload in place (the tag is left as it is). */
int fuzz_record_unseal(const uint8_t key[32], uint8_t *rec, size_t len);
/* Recompute the xxh3 at the end of a record whose framing parses. */
void fuzz_record_fix_xxh3(uint8_t *rec, size_t len);

/*
 * A repository with fixed keys (repo id, master key, passphrase and scrypt salt): the text of
 * its config, its keys/passphrase object and its exported key file, as `pitr-snap init` and
 * `key export` write them (docs/FORMAT.md 3). Each returns a malloc'd NUL-terminated string.
 */
#define FUZZ_PASSPHRASE "fuzz passphrase"
char *fuzz_config_text(void);
char *fuzz_key_object_text(void);
char *fuzz_key_file_text(void);
/* The id of the one snapshot object the snapshot target writes (its seeds name it). */
#define FUZZ_SNAPSHOT_ID "5eed5eed00c0ffee"
/* Write config and keys/passphrase of that repository into `dir` (created). 0 or -errno. */
int fuzz_repo_create(const char *dir);
/* The repository's master key (enc_key first). */
void fuzz_master_key(uint8_t out[CS_MASTER_SIZE]);
/* Make that repository in a new directory below the scratch directory and open it with its
 * key file (no scrypt): *ret_dir is where it is (malloc'd). 0 or -errno. */
int fuzz_repo_open(char **ret_dir, CsRepo **ret);
