/*
 * A repository: its configuration, its unlocked keys, its backend and its local index.
 *
 * Objects in the backend:
 *   config               plaintext settings and the key check (docs/FORMAT.md)
 *   keys/passphrase      the master keys wrapped under a scrypt-derived key
 *   packs/xx/<id>.pack   chunk data
 *   snapshots/<id>       sealed snapshot records
 * The LMDB index lives in a local cache directory and is rebuilt from packs when missing.
 *
 * Errors from open, each logged with the location: -ENOENT / -ENOTDIR (no repository there),
 * -EPROTONOSUPPORT (format newer than this build), -EKEYREJECTED (wrong passphrase or key file),
 * -EBADMSG (damaged config or key object).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/backend.h"
#include "chunkstore/chunker.h"
#include "chunkstore/index.h"
#include "common/macro.h"

typedef struct CsRepoConfig {
    uint32_t format_version;
    uint8_t repo_id[16];
    CsChunkerParams chunker;
    uint32_t page_size;  /* fixed block size for page files */
    int zstd_level;      /* 1..19 */
    uint32_t pack_size;  /* target pack size */
    uint32_t group_size; /* small chunks are compressed together up to this many bytes */
} CsRepoConfig;

typedef struct CsKeys {
    uint8_t enc_key[32];     /* root of per-pack and catalog keys */
    uint8_t id_key[32];      /* HMAC key of chunk ids */
    uint8_t chunker_key[32]; /* derives the gear table */
} CsKeys;

/* How to unlock: exactly one of passphrase / keyfile_path. */
typedef struct CsKeySource {
    const char *passphrase;
    size_t passphrase_len;
    const char *keyfile_path;
} CsKeySource;

typedef struct CsInitParams {
    CsRepoConfig config; /* zero fields take the defaults */
    uint64_t scrypt_n, scrypt_r, scrypt_p;
    /* A group name or number to share the repository with (cs_backend_create()), or NULL: the
     * directory's own setgid bit, if any, decides. */
    const char *group;
} CsInitParams;

typedef struct CsOpenParams {
    bool read_only;        /* no index writes; for mounts and listings */
    const char *index_dir; /* NULL: the backend's default cache directory */
} CsOpenParams;

typedef struct CsRepo {
    CsBackend *backend;
    CsIndex *index;
    CsRepoConfig config;
    CsKeys keys;
    CsGearTable gear;
    uint8_t catalog_key[32];
    uint8_t run_key[32];      /* HMAC key of run ids, derived from the id key */
    uint8_t page_row_key[32]; /* HMAC key of the index's page rows, likewise */
    bool read_only;
} CsRepo;

/* A chunk's id: HMAC-SHA-256 of its bytes under the repository's id key. */
int cs_chunk_id(const CsRepo *repo, const void *p, size_t n, CsChunkId *ret);
/* A run's id (format version 3): HMAC-SHA-256 of its pages' ids, concatenated, under the run key.
 * A different key from chunk ids, so no chunk's bytes can be made to collide with a run. */
int cs_run_id(const CsRepo *repo, const CsChunkId *pages, size_t n, CsChunkId *ret);
/* The tag of the index row that says where a run holds a page (CsPageAlias): HMAC-SHA-256,
 * under the page row key, of the page id and the slice, cut to CS_PAGE_ROW_TAG_SIZE bytes. The
 * index is a cache anyone can damage; a writer refers to a page by its place in a run only
 * when the row's tag checks, so a damaged row can cost deduplication, never bytes. */
int cs_page_row_tag(const CsRepo *repo, const CsChunkId *page, const CsChunkSlice *in,
                    uint8_t tag[CS_PAGE_ROW_TAG_SIZE]);

/* Create a repository at `location` (absent or empty directory). */
int cs_repo_init(const char *location, const CsInitParams *params, const CsKeySource *key);
int cs_repo_open(const char *location, const CsOpenParams *params, const CsKeySource *key,
                 CsRepo **ret);
CsRepo *cs_repo_close(CsRepo *repo);
DEFINE_CLEANUP_FUNC(CsRepo *, cs_repo_close)
/* Check that `location` holds a repository, without keys (so a tool can say so before asking
 * for a passphrase). Returns 0 or -ENOMEDIUM, logged. */
int cs_repo_probe(const char *location);

/* Write the unwrapped master keys to `path` (mode 0600, must not exist). */
int cs_repo_export_key(const CsRepo *repo, const char *path);

/* Re-index any pack in the backend that the index does not know; with `full`, drop the index
 * contents first. Reports the number of packs indexed. A pack with a damaged trailer is named
 * in a warning and skipped; its chunks stay unindexed (reads of them fail with -ENOENT). */
int cs_repo_index_sync(CsRepo *repo, bool full, uint64_t *ret_packs);

/* Parse/format the config object (exposed for tests and fsck). */
int cs_config_parse(const char *text, CsRepoConfig *ret, uint8_t ret_key_check[32]);
