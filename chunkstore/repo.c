#include "chunkstore/repo.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/format.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/macro.h"

#define CONFIG_HEADER  "pitrfs repository"
#define KEY_HEADER     "pitrfs key"
#define KEYFILE_HEADER "pitrfs keyfile"
#define KEY_OBJECT     "keys/passphrase"
#define TEXT_MAX       65536
#define SCRYPT_N_MAX   (1u << 22) /* 4 GiB of memory at r = 8 */
#define SCRYPT_R_MAX   32u
#define SCRYPT_P_MAX   16u
/* What unlocking may cost, the most `init` can ask for (N = 2^22, r = 8, p = 1): a key object
 * asking for more is refused, not obeyed (it could ask for 16 GiB and hours of CPU). */
#define SCRYPT_MEM_MAX  (UINT64_C(128) * 8 * SCRYPT_N_MAX)
#define SCRYPT_WORK_MAX (UINT64_C(8) * SCRYPT_N_MAX) /* N * r * p */

/* The scrypt parameters this build derives keys with, at init and when unlocking alike. */
static bool scrypt_params_valid(uint64_t n, uint64_t r, uint64_t p)
{
    return n >= 1024 && n <= SCRYPT_N_MAX && (n & (n - 1)) == 0 && r >= 1 &&
           r <= SCRYPT_R_MAX && p >= 1 && p <= SCRYPT_P_MAX && 128 * r * n <= SCRYPT_MEM_MAX &&
           n * r * p <= SCRYPT_WORK_MAX;
}

/* Find "name = value" in a text object; copies the value (trimmed) into out. */
static int kv_get(const char *text, const char *name, char *out, size_t out_size)
{
    size_t name_len = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, name, name_len) != 0)
            continue;
        const char *p = line + name_len;
        while (*p == ' ')
            p++;
        if (*p != '=')
            continue;
        p++;
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, "\n");
        if (len >= out_size)
            return -EBADMSG;
        memcpy(out, p, len);
        out[len] = 0;
        return 0;
    }
    return -EBADMSG;
}

static int kv_get_u64(const char *text, const char *name, uint64_t *ret)
{
    char v[32];
    int r = kv_get(text, name, v, sizeof(v));
    if (r < 0)
        return r;
    unsigned long long x;
    if (parse_unsigned(v, 0, ULLONG_MAX, &x) < 0)
        return -EBADMSG;
    *ret = x;
    return 0;
}

static int kv_get_u32(const char *text, const char *name, uint32_t *ret)
{
    uint64_t v;
    int r = kv_get_u64(text, name, &v);
    if (r == 0 && v > UINT32_MAX)
        r = -EBADMSG;
    if (r == 0)
        *ret = (uint32_t)v;
    return r;
}

static int kv_get_hex(const char *text, const char *name, void *out, size_t n)
{
    char v[512];
    int r = kv_get(text, name, v, sizeof(v));
    if (r < 0)
        return r;
    return hex_decode(v, out, n) < 0 ? -EBADMSG : 0;
}

static bool text_has_header(const char *text, const char *header)
{
    size_t n = strlen(header);
    return strncmp(text, header, n) == 0 && text[n] == '\n';
}

static int key_check_compute(const CsKeys *k, const uint8_t repo_id[16], uint8_t out[32])
{
    uint8_t msg[sizeof(CS_INFO_KEY_CHECK) - 1 + 16];
    memcpy(msg, CS_INFO_KEY_CHECK, sizeof(CS_INFO_KEY_CHECK) - 1);
    memcpy(msg + sizeof(CS_INFO_KEY_CHECK) - 1, repo_id, 16);
    return cs_hmac_sha256(k, sizeof(*k), msg, sizeof(msg), out);
}

int cs_config_parse(const char *text, CsRepoConfig *ret, uint8_t ret_key_check[32])
{
    CsRepoConfig c = { 0 };
    uint32_t level = 0;
    if (!text_has_header(text, CONFIG_HEADER))
        return -ENOMEDIUM;
    int r = kv_get_u32(text, "format_version", &c.format_version);
    if (r < 0)
        return r;
    if (c.format_version > CS_FORMAT_VERSION)
        return -EPROTONOSUPPORT;
    if ((r = kv_get_hex(text, "repo_id", c.repo_id, 16)) < 0 ||
        (r = kv_get_u32(text, "chunker_min", &c.chunker.min_size)) < 0 ||
        (r = kv_get_u32(text, "chunker_avg", &c.chunker.avg_size)) < 0 ||
        (r = kv_get_u32(text, "chunker_max", &c.chunker.max_size)) < 0 ||
        (r = kv_get_u32(text, "chunker_normalization", &c.chunker.normalization)) < 0 ||
        (r = kv_get_u32(text, "page_size", &c.page_size)) < 0 ||
        (r = kv_get_u32(text, "zstd_level", &level)) < 0 ||
        (r = kv_get_u32(text, "pack_size", &c.pack_size)) < 0 ||
        (r = kv_get_u32(text, "group_size", &c.group_size)) < 0 ||
        (r = kv_get_hex(text, "key_check", ret_key_check, 32)) < 0)
        return r;
    c.zstd_level = (int)level;
    if (cs_chunker_params_check(&c.chunker) < 0 || c.page_size < 512 ||
        c.page_size > (1u << 20) || level < 1 || level > 19 || c.pack_size < (1u << 20) ||
        c.group_size > CS_MAX_GROUP_SIZE)
        return -EBADMSG;
    *ret = c;
    return 0;
}

static int config_format(const CsRepoConfig *c, const uint8_t key_check[32], char **ret)
{
    char id[33], kc[65];
    hex_encode(c->repo_id, 16, id);
    hex_encode(key_check, 32, kc);
    if (asprintf(ret,
                 CONFIG_HEADER "\n"
                               "format_version = %u\n"
                               "repo_id = %s\n"
                               "chunker_min = %u\n"
                               "chunker_avg = %u\n"
                               "chunker_max = %u\n"
                               "chunker_normalization = %u\n"
                               "page_size = %u\n"
                               "zstd_level = %d\n"
                               "pack_size = %u\n"
                               "group_size = %u\n"
                               "key_check = %s\n",
                 c->format_version, id, c->chunker.min_size, c->chunker.avg_size,
                 c->chunker.max_size, c->chunker.normalization, c->page_size, c->zstd_level,
                 c->pack_size, c->group_size, kc) < 0)
        return -ENOMEM;
    return 0;
}

/* A group by name, or by number when no group has that name. */
static int group_resolve(const char *name, gid_t *ret)
{
    char scratch[4096];
    struct group gr, *found = NULL;
    if (getgrnam_r(name, &gr, scratch, sizeof(scratch), &found) == 0 && found) {
        *ret = found->gr_gid;
        return 0;
    }
    unsigned long long n;
    if (parse_unsigned(name, 0, UINT32_MAX - 1, &n) == 0) {
        *ret = (gid_t)n;
        return 0;
    }
    return log_error_errno(-EINVAL, "no group \"%s\"\nHINT: create it first (groupadd %s)", name,
                           name);
}

static int wrap_key_derive(const CsKeySource *src, const uint8_t salt[32], uint64_t n, uint64_t r,
                           uint64_t p, uint8_t out[32])
{
    return cs_scrypt(src->passphrase, src->passphrase_len, salt, 32, n, r, p, out, 32);
}

int cs_repo_init(const char *location, const CsInitParams *params, const CsKeySource *key)
{
    CsRepoConfig c = params->config;
    int r;

    if (!key->passphrase)
        return log_error_errno(-EINVAL, "a passphrase is needed to create a repository");
    /* An older version on request (tests of what older repositories do); never a newer one. */
    if (!c.format_version || c.format_version > CS_FORMAT_VERSION)
        c.format_version = CS_FORMAT_VERSION;
    if (!c.chunker.min_size)
        c.chunker.min_size = CS_CHUNKER_DEFAULT_MIN;
    if (!c.chunker.avg_size)
        c.chunker.avg_size = CS_CHUNKER_DEFAULT_AVG;
    if (!c.chunker.max_size)
        c.chunker.max_size = CS_CHUNKER_DEFAULT_MAX;
    if (!c.chunker.normalization)
        c.chunker.normalization = 1;
    if (!c.page_size)
        c.page_size = CS_DEFAULT_PAGE_SIZE;
    if (!c.zstd_level)
        c.zstd_level = CS_DEFAULT_ZSTD_LEVEL;
    if (!c.pack_size)
        c.pack_size = CS_DEFAULT_PACK_SIZE;
    if (!c.group_size)
        c.group_size = CS_DEFAULT_GROUP_SIZE;
    if (cs_chunker_params_check(&c.chunker) < 0)
        return log_error_errno(-EINVAL, "invalid chunker sizes %u/%u/%u", c.chunker.min_size,
                               c.chunker.avg_size, c.chunker.max_size);
    if (c.page_size < 512 || c.page_size > (1u << 20) || (c.page_size & (c.page_size - 1)))
        return log_error_errno(-EINVAL, "invalid page size %u: a power of two from 512 to 1 MiB",
                               c.page_size);
    if (c.zstd_level < 1 || c.zstd_level > 19)
        return log_error_errno(-EINVAL, "invalid compression level %d: 1 to 19", c.zstd_level);
    if (c.pack_size < (1u << 20))
        return log_error_errno(-EINVAL, "pack size must be at least 1 MiB");

    gid_t group;
    if (params->group && (r = group_resolve(params->group, &group)) < 0)
        return r;

    uint64_t sn = params->scrypt_n ? params->scrypt_n : CS_DEFAULT_SCRYPT_N;
    uint64_t sr = params->scrypt_r ? params->scrypt_r : CS_DEFAULT_SCRYPT_R;
    uint64_t sp = params->scrypt_p ? params->scrypt_p : CS_DEFAULT_SCRYPT_P;
    if (!scrypt_params_valid(sn, sr, sp))
        return log_error_errno(-EINVAL,
                               "invalid scrypt parameters N=%llu r=%llu p=%llu: N a power of two "
                               "from 1024 to %u, r 1 to %u, p 1 to %u, at most %llu MiB and "
                               "N*r*p at most %llu",
                               (unsigned long long)sn, (unsigned long long)sr,
                               (unsigned long long)sp, SCRYPT_N_MAX, SCRYPT_R_MAX, SCRYPT_P_MAX,
                               (unsigned long long)(SCRYPT_MEM_MAX >> 20),
                               (unsigned long long)SCRYPT_WORK_MAX);

    CsKeys keys;
    uint8_t salt[32], nonce[CS_NONCE_SIZE], wrap[32], tag[CS_TAG_SIZE], wrapped[sizeof(keys)];
    uint8_t key_check[32];
    if ((r = cs_random_bytes(c.repo_id, 16)) < 0 || (r = cs_random_bytes(&keys, sizeof(keys))) < 0 ||
        (r = cs_random_bytes(salt, sizeof(salt))) < 0 ||
        (r = cs_random_bytes(nonce, sizeof(nonce))) < 0 ||
        (r = wrap_key_derive(key, salt, sn, sr, sp, wrap)) < 0 ||
        (r = cs_aead_seal(wrap, nonce, c.repo_id, 16, &keys, sizeof(keys), wrapped, tag)) < 0 ||
        (r = key_check_compute(&keys, c.repo_id, key_check)) < 0)
        return log_error_errno(r, "could not create keys: %m");

    /* Refuse to overwrite anything: an existing directory must be empty. */
    _cleanup_free_ char *cfg = path_join(location, "config");
    if (!cfg)
        return -ENOMEM;
    if (access(cfg, F_OK) == 0)
        return log_error_errno(-EEXIST, "a repository already exists at \"%s\"", location);
    DIR *d = opendir(location);
    if (d) {
        struct dirent *de;
        bool is_empty = true;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                is_empty = false;
        closedir(d);
        if (!is_empty)
            return log_error_errno(-ENOTEMPTY, "\"%s\" is not empty\nHINT: a repository is "
                                                "created in a new or empty directory",
                                   location);
    }
    CsBackend *b;
    if ((r = cs_backend_create(location, params->group ? &group : NULL, &b)) < 0)
        return log_error_errno(r, "could not create repository directory \"%s\": %m", location);

    char salt_hex[65], nonce_hex[25], wrapped_hex[2 * sizeof(wrapped) + 1], tag_hex[33];
    hex_encode(salt, sizeof(salt), salt_hex);
    hex_encode(nonce, sizeof(nonce), nonce_hex);
    hex_encode(wrapped, sizeof(wrapped), wrapped_hex);
    hex_encode(tag, sizeof(tag), tag_hex);
    _cleanup_free_ char *key_text = NULL, *config_text = NULL;
    if (asprintf(&key_text,
                 KEY_HEADER "\nformat_version = %d\nkdf = scrypt\nscrypt_n = %" PRIu64
                            "\nscrypt_r = %" PRIu64 "\nscrypt_p = %" PRIu64
                            "\nsalt = %s\nnonce = %s\nwrapped = %s\ntag = %s\n",
                 CS_FORMAT_VERSION, sn, sr, sp, salt_hex, nonce_hex, wrapped_hex, tag_hex) < 0 ||
        config_format(&c, key_check, &config_text) < 0) {
        cs_backend_free(b);
        return -ENOMEM;
    }
    /* The key object first: config is what makes the directory a repository. */
    if ((r = cs_backend_put(b, KEY_OBJECT, key_text, strlen(key_text), false)) < 0 ||
        (r = cs_backend_put(b, "config", config_text, strlen(config_text), false)) < 0) {
        cs_backend_free(b);
        return log_error_errno(r, "could not write repository \"%s\": %m", location);
    }
    cs_backend_free(b);
    return 0;
}

static int keys_unwrap(CsBackend *b, const CsRepoConfig *c, const CsKeySource *src, CsKeys *ret)
{
    _cleanup_free_ uint8_t *text = NULL;
    size_t n;
    int r = cs_backend_get(b, KEY_OBJECT, TEXT_MAX, &text, &n);
    if (r < 0)
        return r;
    const char *t = (const char *)text;
    uint64_t sn, sr, sp;
    uint8_t salt[32], nonce[CS_NONCE_SIZE], wrapped[sizeof(CsKeys)], tag[CS_TAG_SIZE], wrap[32];
    char kdf[16];
    if (!text_has_header(t, KEY_HEADER) || kv_get(t, "kdf", kdf, sizeof(kdf)) < 0 ||
        strcmp(kdf, "scrypt") != 0 || kv_get_u64(t, "scrypt_n", &sn) < 0 ||
        kv_get_u64(t, "scrypt_r", &sr) < 0 || kv_get_u64(t, "scrypt_p", &sp) < 0 ||
        kv_get_hex(t, "salt", salt, sizeof(salt)) < 0 ||
        kv_get_hex(t, "nonce", nonce, sizeof(nonce)) < 0 ||
        kv_get_hex(t, "wrapped", wrapped, sizeof(wrapped)) < 0 ||
        kv_get_hex(t, "tag", tag, sizeof(tag)) < 0)
        return -EBADMSG;
    if (!scrypt_params_valid(sn, sr, sp))
        return -EBADMSG;
    if ((r = wrap_key_derive(src, salt, sn, sr, sp, wrap)) < 0)
        return r;
    r = cs_aead_open(wrap, nonce, c->repo_id, 16, wrapped, sizeof(wrapped), ret, tag);
    return r == -EBADMSG ? -EKEYREJECTED : r;
}

static int keys_from_file(const char *path, const CsRepoConfig *c, CsKeys *ret)
{
    _cleanup_free_ char *text = NULL;
    int r = read_file(path, TEXT_MAX, &text, NULL);
    if (r < 0)
        return log_error_errno(r, "could not read key file \"%s\": %m", path);
    uint8_t id[16];
    uint32_t version;
    if (text_has_header(text, KEYFILE_HEADER) && kv_get_u32(text, "format_version", &version) == 0 &&
        version > CS_FORMAT_VERSION)
        return log_error_errno(-EPROTONOSUPPORT, "key file \"%s\" has a newer format (%u)", path,
                               version);
    if (!text_has_header(text, KEYFILE_HEADER) || kv_get_hex(text, "repo_id", id, 16) < 0 ||
        kv_get_hex(text, "master", ret, sizeof(*ret)) < 0)
        return log_error_errno(-EKEYREJECTED, "\"%s\" is not a pitrfs key file", path);
    if (memcmp(id, c->repo_id, 16) != 0)
        return log_error_errno(-EKEYREJECTED, "key file \"%s\" belongs to another repository",
                               path);
    return 0;
}

static void repo_derive(CsRepo *repo)
{
    cs_gear_table_from_key(repo->keys.chunker_key, &repo->gear);
    cs_hkdf_sha256(repo->keys.enc_key, 32, NULL, 0, CS_INFO_CATALOG_KEY,
                   strlen(CS_INFO_CATALOG_KEY), repo->catalog_key, 32);
    cs_hkdf_sha256(repo->keys.id_key, 32, NULL, 0, CS_INFO_RUN_KEY, strlen(CS_INFO_RUN_KEY),
                   repo->run_key, 32);
    cs_hkdf_sha256(repo->keys.id_key, 32, NULL, 0, CS_INFO_PAGE_ROW_KEY,
                   strlen(CS_INFO_PAGE_ROW_KEY), repo->page_row_key, 32);
}

CsRepo *cs_repo_close(CsRepo *repo)
{
    if (!repo)
        return NULL;
    cs_index_close(repo->index);
    cs_backend_free(repo->backend);
    explicit_bzero(&repo->keys, sizeof(repo->keys));
    explicit_bzero(repo->catalog_key, sizeof(repo->catalog_key));
    explicit_bzero(repo->run_key, sizeof(repo->run_key));
    explicit_bzero(repo->page_row_key, sizeof(repo->page_row_key));
    free(repo);
    return NULL;
}


int cs_repo_open(const char *location, const CsOpenParams *params, const CsKeySource *key,
                 CsRepo **ret)
{
    static const CsOpenParams defaults = { 0 };
    if (!params)
        params = &defaults;
    _cleanup_(cs_repo_closep) CsRepo *repo = calloc(1, sizeof(*repo));
    if (!repo)
        return -ENOMEM;
    repo->read_only = params->read_only;
    int r = cs_backend_open(location, false, &repo->backend);
    if (r == -ENOENT || r == -ENOTDIR)
        return log_error_errno(-ENOMEDIUM, "\"%s\" is not a pitrfs repository: %s", location,
                               strerror(-r));
    if (r < 0)
        return log_error_errno(r, "could not open repository \"%s\": %m", location);

    _cleanup_free_ uint8_t *text = NULL;
    uint8_t key_check[32], check[32];
    r = cs_backend_get(repo->backend, "config", TEXT_MAX, &text, NULL);
    if (r == -ENOENT)
        return log_error_errno(-ENOMEDIUM, "\"%s\" is not a pitrfs repository (no config)",
                               location);
    if (r < 0)
        return log_error_errno(r, "could not read config of \"%s\": %m", location);
    r = cs_config_parse((const char *)text, &repo->config, key_check);
    if (r == -EPROTONOSUPPORT)
        return log_error_errno(r,
                               "repository \"%s\" has a newer format than this version of "
                               "pitrfs supports (%d)\nHINT: upgrade pitrfs to use it",
                               location, CS_FORMAT_VERSION);
    if (r == -ENOMEDIUM)
        return log_error_errno(r, "\"%s\" is not a pitrfs repository", location);
    if (r < 0)
        return log_error_errno(-EBADMSG, "config of repository \"%s\" is damaged", location);

    if (key->keyfile_path)
        r = keys_from_file(key->keyfile_path, &repo->config, &repo->keys);
    else if (key->passphrase)
        r = keys_unwrap(repo->backend, &repo->config, key, &repo->keys);
    else
        r = log_error_errno(-EKEYREJECTED, "no passphrase or key file given");
    if (r == -EKEYREJECTED && !key->keyfile_path)
        return log_error_errno(r, "wrong passphrase for repository \"%s\"", location);
    if (r == -EKEYREJECTED) /* the reason is logged already; strerror() would add nothing */
        return log_error_errno(r, "the key file \"%s\" does not unlock repository \"%s\"",
                               key->keyfile_path, location);
    if (r < 0)
        return log_error_errno(r, "could not unlock repository \"%s\": %m", location);
    if ((r = key_check_compute(&repo->keys, repo->config.repo_id, check)) < 0)
        return r;
    if (!cs_memeq(check, key_check, 32))
        return log_error_errno(-EKEYREJECTED, "the key does not unlock repository \"%s\"",
                               location);
    repo_derive(repo);

    _cleanup_free_ char *index_dir = NULL;
    if (params->index_dir)
        index_dir = strdup(params->index_dir);
    else if ((r = cs_backend_cache_dir(repo->backend, &index_dir)) < 0)
        return r;
    if (!index_dir)
        return -ENOMEM;
    bool had_index = access(index_dir, F_OK) == 0, was_damaged = false;
    /* The index is a cache that any process may bring up to date, readers included; only a
     * user who cannot write it gets it read-only (and as it is). */
    bool can_write_index = true;
    r = cs_index_open(index_dir, repo->config.repo_id, false, &repo->index);
    if (r == -EBADMSG && had_index) {
        /* A cache: a damaged one is dropped and rebuilt, as a missing one is. */
        log_warning("index \"%s\" is damaged: rebuilding it from the packs", index_dir);
        if ((r = cs_index_drop_files(index_dir)) < 0)
            return log_error_errno(r, "could not remove the damaged index \"%s\": %m",
                                   index_dir);
        had_index = false;
        was_damaged = true;
        r = cs_index_open(index_dir, repo->config.repo_id, false, &repo->index);
    }
    if ((r == -EACCES || r == -EROFS) && had_index) {
        can_write_index = false;
        r = cs_index_open(index_dir, repo->config.repo_id, true, &repo->index);
    }
    if (r == -EXDEV)
        return log_error_errno(r, "index \"%s\" belongs to another repository\nHINT: the index "
                                  "is a cache: remove it and it is rebuilt from the packs",
                               index_dir);
    if (r == -EBADMSG)
        return log_error_errno(r, "index \"%s\" is damaged and cannot be rebuilt here: %m\nHINT: "
                                  "the index is a cache: remove it (as its owner) and it is "
                                  "rebuilt from the packs",
                               index_dir);
    if (r == -EACCES)
        return log_error_errno(r, "could not open index \"%s\": %m\nHINT: %s", index_dir,
                               cs_backend_access_hint(repo->backend));
    if (r < 0)
        return log_error_errno(r, "could not open index \"%s\": %m", index_dir);
    /* Listing every pack costs time in proportion to the repository, and archive_command opens
     * it once per WAL segment: sync here only when the index is new or empty. Packs published
     * but not indexed (a crash in between) are picked up when a read misses a chunk. */
    uint64_t indexed_packs = 0;
    if (can_write_index && (r = cs_index_pack_count(repo->index, &indexed_packs)) < 0)
        return log_error_errno(r, "could not read index \"%s\": %m", index_dir);
    if (can_write_index && (!had_index || indexed_packs == 0)) {
        uint64_t n = 0;
        if ((r = cs_repo_index_sync(repo, false, &n)) < 0)
            return r;
        if (n > 0 && !had_index)
            log_info("index \"%s\" was %s: rebuilt it from %llu packs", index_dir,
                     was_damaged ? "damaged" : "missing", (unsigned long long)n);
        else if (n > 0)
            log_info("indexed %llu packs the index did not know", (unsigned long long)n);
    }
    *ret = TAKE_PTR(repo);
    return 0;
}

int cs_repo_probe(const char *location)
{
    CsBackend *b;
    int r = cs_backend_open(location, false, &b);
    if (r == 0) {
        r = cs_backend_stat(b, "config", NULL);
        cs_backend_free(b);
    }
    if (r == -ENOENT || r == -ENOTDIR)
        return log_error_errno(-ENOMEDIUM, "\"%s\" is not a pitrfs repository", location);
    if (r < 0)
        return log_error_errno(r, "could not open repository \"%s\": %m", location);
    return 0;
}

int cs_repo_export_key(const CsRepo *repo, const char *path)
{
    char id[33], master[2 * sizeof(CsKeys) + 1];
    hex_encode(repo->config.repo_id, 16, id);
    hex_encode(&repo->keys, sizeof(repo->keys), master);
    _cleanup_free_ char *text = NULL;
    if (asprintf(&text, KEYFILE_HEADER "\nformat_version = %d\nrepo_id = %s\nmaster = %s\n",
                 CS_FORMAT_VERSION, id, master) < 0)
        return -ENOMEM;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return log_error_errno(-errno, "could not create key file \"%s\": %m", path);
    int r = write_all(fd, text, strlen(text));
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    explicit_bzero(master, sizeof(master));
    explicit_bzero(text, strlen(text));
    if (r < 0) {
        unlink(path);
        return log_error_errno(r, "could not write key file \"%s\": %m", path);
    }
    return 0;
}

typedef struct SyncCtx {
    CsRepo *repo;
    uint64_t indexed;
    int damaged;
} SyncCtx;

static int sync_pack(const char *name, uint64_t size, void *userdata)
{
    SyncCtx *ctx = userdata;
    CsPackId id;
    if (cs_pack_name_parse(name, &id) < 0)
        return 0;
    int r = cs_index_has_pack(ctx->repo->index, &id);
    if (r != 0)
        return r < 0 ? r : 0;
    _cleanup_free_ CsPackEntry *entries = NULL;
    size_t n;
    CsPackId read_id;
    r = cs_pack_read_trailer(ctx->repo->backend, name, &read_id, &entries, &n);
    if (r == 0 && memcmp(read_id.bytes, id.bytes, CS_PACK_ID_SIZE) != 0)
        r = -EBADMSG;
    if (r < 0) {
        log_warning_errno(r, "pack \"%s\" has a damaged trailer, not indexed: %m", name);
        ctx->damaged++;
        return 0;
    }
    if ((r = cs_index_publish_pack(ctx->repo->index, &id, size, entries, n)) < 0)
        return r;
    ctx->indexed++;
    return 0;
}

static int drop_visit(const CsPackId *id, uint64_t size, void *userdata)
{
    (void)size;
    return cs_index_drop_pack(userdata, id);
}

int cs_repo_index_sync(CsRepo *repo, bool full, uint64_t *ret_packs)
{
    int r;
    if (full && (r = cs_index_foreach_pack(repo->index, drop_visit, repo->index)) < 0)
        return r;
    SyncCtx ctx = { .repo = repo };
    r = cs_backend_list(repo->backend, "packs/", sync_pack, &ctx);
    if (r < 0)
        return log_error_errno(r, "could not rebuild index: %m");
    if (ret_packs)
        *ret_packs = ctx.indexed;
    return 0;
}

int cs_chunk_id(const CsRepo *repo, const void *p, size_t n, CsChunkId *ret)
{
    return cs_hmac_sha256(repo->keys.id_key, sizeof(repo->keys.id_key), p, n, ret->bytes);
}

int cs_page_row_tag(const CsRepo *repo, const CsChunkId *page, const CsChunkSlice *in,
                    uint8_t tag[CS_PAGE_ROW_TAG_SIZE])
{
    uint8_t msg[CS_CHUNK_ID_SIZE + CS_SLICE_SIZE], mac[32];
    memcpy(msg, page->bytes, CS_CHUNK_ID_SIZE);
    cs_slices_encode(msg + CS_CHUNK_ID_SIZE, in, 1, true);
    int r = cs_hmac_sha256(repo->page_row_key, sizeof(repo->page_row_key), msg, sizeof(msg), mac);
    memcpy(tag, mac, CS_PAGE_ROW_TAG_SIZE);
    return r;
}

int cs_run_id(const CsRepo *repo, const CsChunkId *pages, size_t n, CsChunkId *ret)
{
    return cs_hmac_sha256(repo->run_key, sizeof(repo->run_key), pages, n * sizeof(*pages),
                          ret->bytes);
}
