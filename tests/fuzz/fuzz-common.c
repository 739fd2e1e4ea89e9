#include "tests/fuzz/fuzz-common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>
#include <xxhash.h>

#include "chunkstore/crypto.h"
#include "chunkstore/format.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/log.h"

const uint8_t fuzz_pack_key[32] = "pitrfs fuzz pack key, not secret";

_Noreturn void fuzz_fail(const char *file, int line, const char *what)
{
    /* Through the sanitizers' report, which libFuzzer keeps when it closes the target's
     * stderr (the library's messages on damaged input). */
    char msg[512];
    snprintf(msg, sizeof(msg), "broken promise at %s:%d: %s", file, line, what);
    __sanitizer_report_error_summary(msg);
    abort();
}

void fuzz_quiet(void)
{
    log_set_level(LOG_LEVEL_ERROR);
}

void fuzz_remove_tree(const char *path)
{
    (void)rm_rf_at(AT_FDCWD, path);
}

static char *scratch;

static void scratch_remove(void)
{
    if (scratch)
        fuzz_remove_tree(scratch);
}

const char *fuzz_scratch_dir(void)
{
    if (scratch)
        return scratch;
    /* Shared memory when there is some: the targets write a file per input. */
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/pitr-fuzz.XXXXXX", base);
    if (!mkdtemp(tmpl))
        fuzz_fail(__FILE__, __LINE__, "a scratch directory can be made");
    scratch = strdup(tmpl);
    if (!scratch)
        abort();
    atexit(scratch_remove);
    return scratch;
}

int fuzz_write_file(const char *path, const void *p, size_t n)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        int r = mkdir_p(dir, 0700);
        if (r < 0)
            return r;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = write_all(fd, p, n);
    close(fd);
    return r;
}

void fuzz_base_bytes(const CsChunkSlice *s, uint8_t *out)
{
    for (uint32_t j = 0; j < s->length; j++) {
        uint32_t at = s->offset + j;
        out[j] = (uint8_t)(s->id.bytes[at % CS_CHUNK_ID_SIZE] ^ (at * 131u) ^ (at >> 9));
    }
}

long fuzz_record_header_len(const uint8_t *rec, size_t len)
{
    if (len < CS_RECORD_HEADER_SIZE + CS_RECORD_TRAILER_SIZE)
        return -EBADMSG;
    size_t n = get_le16(rec + 6);
    size_t header_len = CS_RECORD_HEADER_SIZE + n * CS_RECORD_MEMBER_SIZE;
    if (rec[4] & CS_RECORD_FLAG_DELTA) {
        if (header_len + CS_RECORD_BASE_COUNT_SIZE > len)
            return -EBADMSG;
        size_t m = get_le32(rec + header_len);
        if (m > CS_RECORD_MAX_BASES)
            return -EBADMSG;
        size_t b = rec[4] & CS_RECORD_FLAG_SLICED_BASES ? CS_SLICE_SIZE : CS_RECORD_MEMBER_SIZE;
        header_len += CS_RECORD_BASE_COUNT_SIZE + m * b;
    }
    size_t payload_len = get_le32(rec + 12);
    if (header_len + payload_len + CS_RECORD_TRAILER_SIZE != len)
        return -EBADMSG;
    return (long)header_len;
}

void fuzz_record_fix_xxh3(uint8_t *rec, size_t len)
{
    if (len >= CS_RECORD_HEADER_SIZE + CS_RECORD_TRAILER_SIZE)
        put_le64(rec + len - 8, XXH3_64bits(rec, len - 8));
}

int fuzz_record_seal(const uint8_t key[32], uint8_t *rec, size_t len)
{
    long header_len = fuzz_record_header_len(rec, len);
    if (header_len < 0)
        return (int)header_len;
    size_t payload_len = get_le32(rec + 12);
    uint8_t *ct = rec + header_len;
    int r = cs_aead_seal(key, rec + 16, rec, (size_t)header_len, ct, payload_len, ct,
                         ct + payload_len);
    if (r < 0)
        return r;
    fuzz_record_fix_xxh3(rec, len);
    return 0;
}

int fuzz_record_unseal(const uint8_t key[32], uint8_t *rec, size_t len)
{
    long header_len = fuzz_record_header_len(rec, len);
    if (header_len < 0)
        return (int)header_len;
    size_t payload_len = get_le32(rec + 12);
    uint8_t *ct = rec + header_len;
    return cs_aead_open(key, rec + 16, rec, (size_t)header_len, ct, payload_len, ct,
                        ct + payload_len);
}

/* ---- the fixed repository ---- */

static const uint8_t repo_id[16] = "fuzz repository!";
static const uint8_t scrypt_salt[32] = "fixed salt of the fuzz repositor";
static const uint8_t wrap_nonce[CS_NONCE_SIZE] = "fuzz nonce!!";
#define FUZZ_SCRYPT_N 1024u

void fuzz_master_key(uint8_t out[CS_MASTER_SIZE])
{
    for (size_t i = 0; i < CS_MASTER_SIZE; i++)
        out[i] = (uint8_t)(i * 37u + 11u);
}

static char *text_printf(const char *fmt, ...) _printf_(1, 2);
static char *text_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        abort();
    return s;
}

char *fuzz_config_text(void)
{
    uint8_t master[CS_MASTER_SIZE], msg[sizeof(CS_INFO_KEY_CHECK) - 1 + 16], check[32];
    fuzz_master_key(master);
    memcpy(msg, CS_INFO_KEY_CHECK, sizeof(CS_INFO_KEY_CHECK) - 1);
    memcpy(msg + sizeof(CS_INFO_KEY_CHECK) - 1, repo_id, 16);
    if (cs_hmac_sha256(master, sizeof(master), msg, sizeof(msg), check) < 0)
        abort();
    char id_hex[33], check_hex[65];
    hex_encode(repo_id, 16, id_hex);
    hex_encode(check, 32, check_hex);
    return text_printf("pitrfs repository\n"
                       "format_version = %d\n"
                       "repo_id = %s\n"
                       "chunker_min = 16384\n"
                       "chunker_avg = 65536\n"
                       "chunker_max = 262144\n"
                       "chunker_normalization = 1\n"
                       "page_size = 8192\n"
                       "zstd_level = 3\n"
                       "pack_size = 33554432\n"
                       "group_size = 524288\n"
                       "key_check = %s\n",
                       CS_FORMAT_VERSION, id_hex, check_hex);
}

char *fuzz_key_object_text(void)
{
    uint8_t master[CS_MASTER_SIZE], wrap[32], wrapped[CS_MASTER_SIZE], tag[CS_TAG_SIZE];
    fuzz_master_key(master);
    if (cs_scrypt(FUZZ_PASSPHRASE, strlen(FUZZ_PASSPHRASE), scrypt_salt, sizeof(scrypt_salt),
                  FUZZ_SCRYPT_N, 8, 1, wrap, sizeof(wrap)) < 0 ||
        cs_aead_seal(wrap, wrap_nonce, repo_id, sizeof(repo_id), master, sizeof(master), wrapped,
                     tag) < 0)
        abort();
    char salt_hex[65], nonce_hex[25], wrapped_hex[2 * CS_MASTER_SIZE + 1], tag_hex[33];
    hex_encode(scrypt_salt, sizeof(scrypt_salt), salt_hex);
    hex_encode(wrap_nonce, sizeof(wrap_nonce), nonce_hex);
    hex_encode(wrapped, sizeof(wrapped), wrapped_hex);
    hex_encode(tag, sizeof(tag), tag_hex);
    return text_printf("pitrfs key\n"
                       "format_version = %d\n"
                       "kdf = scrypt\n"
                       "scrypt_n = %u\n"
                       "scrypt_r = 8\n"
                       "scrypt_p = 1\n"
                       "salt = %s\n"
                       "nonce = %s\n"
                       "wrapped = %s\n"
                       "tag = %s\n",
                       CS_FORMAT_VERSION, FUZZ_SCRYPT_N, salt_hex, nonce_hex, wrapped_hex,
                       tag_hex);
}

char *fuzz_key_file_text(void)
{
    uint8_t master[CS_MASTER_SIZE];
    fuzz_master_key(master);
    char id_hex[33], master_hex[2 * CS_MASTER_SIZE + 1];
    hex_encode(repo_id, 16, id_hex);
    hex_encode(master, sizeof(master), master_hex);
    return text_printf("pitrfs keyfile\n"
                       "format_version = 1\n"
                       "repo_id = %s\n"
                       "master = %s\n",
                       id_hex, master_hex);
}

int fuzz_repo_create(const char *dir)
{
    char path[PATH_MAX];
    int r = 0;
    static const char *const subdirs[] = { "packs", "snapshots", "locks", "tmp", "keys" };
    for (size_t i = 0; r == 0 && i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
        r = mkdir_p(path, 0700);
    }
    char *key = fuzz_key_object_text(), *config = fuzz_config_text();
    if (r == 0) {
        snprintf(path, sizeof(path), "%s/keys/passphrase", dir);
        r = fuzz_write_file(path, key, strlen(key));
    }
    if (r == 0) {
        snprintf(path, sizeof(path), "%s/config", dir);
        r = fuzz_write_file(path, config, strlen(config));
    }
    free(key);
    free(config);
    return r;
}

int fuzz_repo_open(char **ret_dir, CsRepo **ret)
{
    static unsigned made;
    char dir[PATH_MAX], keyfile[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/repo-%u", fuzz_scratch_dir(), made);
    snprintf(keyfile, sizeof(keyfile), "%s/repo-%u.key", fuzz_scratch_dir(), made++);
    char *key = fuzz_key_file_text();
    int r = fuzz_repo_create(dir);
    if (r == 0)
        r = fuzz_write_file(keyfile, key, strlen(key));
    free(key);
    if (r == 0)
        r = cs_repo_open(dir, NULL, &(CsKeySource){ .keyfile_path = keyfile }, ret);
    if (r == 0 && !(*ret_dir = strdup(dir)))
        r = -ENOMEM;
    return r;
}
