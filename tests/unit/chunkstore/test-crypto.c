/*
 * Known-answer tests for chunkstore/crypto: Wycheproof AES-GCM, RFC 4231 HMAC-SHA-256, RFC 5869
 * HKDF and RFC 7914 scrypt, plus properties of the AEAD (round trips, tamper detection) and the
 * per-thread context cache under concurrency. Every vector is run; a missing vector file fails.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "chunkstore/crypto.h"
#include "common/macro.h"
#include "tests/unit/harness.h"

#ifndef VECTORS_DIR
#define VECTORS_DIR "/usr/lib/python3/dist-packages/cryptography_vectors"
#endif
#define VECTORS_PKG "python3-cryptography-vectors"

/* jansson already provides json_decrefp for _cleanup_. */
DEFINE_CLEANUP_FUNC(FILE *, fclose)

/* --- helpers --- */

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes hex into a fresh buffer that is never NULL, so empty fields still make valid pointers. */
static uint8_t *hex_decode(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    if (n % 2 != 0)
        fail_msg("odd-length hex string \"%s\"", hex);
    uint8_t *b = malloc(n / 2 + 1);
    assert_non_null(b);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            fail_msg("bad hex string \"%s\"", hex);
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return b;
}

static uint64_t parse_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        fail_msg("bad number \"%s\"", s);
    return (uint64_t)v;
}

static void random_buf(void *p, size_t n)
{
    ASSERT_OK(cs_random_bytes(p, n));
}

static uint32_t random_u32(void)
{
    uint32_t v;
    random_buf(&v, sizeof(v));
    return v;
}

/* --- NIST-style "Name = value" vector files --- */

typedef struct Field {
    char name[32];
    char value[4096];
} Field;

typedef struct Record {
    Field f[16];
    size_t n;
} Record;

typedef struct ParseCounts {
    size_t starts;      /* lines naming the field that opens a record */
    size_t terminators; /* lines naming the field that closes a record */
} ParseCounts;

typedef void (*RecordFn)(const Record *rec, void *userdata);

static const char *rec_get(const Record *rec, const char *name)
{
    for (size_t i = 0; i < rec->n; i++)
        if (strcmp(rec->f[i].name, name) == 0)
            return rec->f[i].value;
    fail_msg("vector record lacks field \"%s\"", name);
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Calls fn for every record, a record being the fields from `start` through `terminator`. Fields
 * are reset at each start line so a record can never inherit values from the previous one. */
static ParseCounts parse_vectors(const char *rel, const char *start, const char *terminator,
                                 RecordFn fn, void *userdata)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", VECTORS_DIR, rel);
    _cleanup_(fclosep) FILE *f = fopen(path, "re");
    if (!f)
        fail_msg("cannot open test vectors \"%s\": %s; they come from the Debian package %s "
                 "(apt-get install %s, or `make deps`)",
                 path, strerror(errno), VECTORS_PKG, VECTORS_PKG);

    ParseCounts counts = { 0, 0 };
    Record *rec = calloc(1, sizeof(*rec));
    assert_non_null(rec);
    bool in_record = false;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == '[')
            continue;
        char *eq = strchr(s, '=');
        if (!eq)
            fail_msg("%s: unparsable line \"%s\"", path, s);
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        if (strcmp(name, start) == 0) {
            counts.starts++;
            rec->n = 0;
            in_record = true;
        }
        if (!in_record)
            fail_msg("%s: field \"%s\" outside a record", path, name);
        if (rec->n == ARRAY_SIZE(rec->f) || strlen(name) >= sizeof(rec->f[0].name) ||
            strlen(value) >= sizeof(rec->f[0].value))
            fail_msg("%s: record too large at \"%s\"", path, name);
        strcpy(rec->f[rec->n].name, name);
        strcpy(rec->f[rec->n].value, value);
        rec->n++;
        if (strcmp(name, terminator) == 0) {
            counts.terminators++;
            fn(rec, userdata);
            rec->n = 0;
            in_record = false;
        }
    }
    if (in_record)
        fail_msg("%s: truncated last record", path);
    free(line);
    free(rec);
    return counts;
}

/* --- Wycheproof AES-GCM --- */

typedef struct WycheproofCounts {
    size_t total, valid, invalid, acceptable, fixed_api, long_iv;
} WycheproofCounts;

static const char *json_str(json_t *obj, const char *key, int64_t tc_id)
{
    const char *s = json_string_value(json_object_get(obj, key));
    if (!s)
        fail_msg("wycheproof tcId %" PRId64 ": missing string \"%s\"", tc_id, key);
    return s;
}

static size_t json_bits_to_bytes(json_t *group, const char *key)
{
    json_t *v = json_object_get(group, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) % 8 != 0)
        fail_msg("wycheproof group: bad \"%s\"", key);
    return (size_t)json_integer_value(v) / 8;
}

static void wycheproof_one(json_t *t, size_t key_size, size_t iv_size, size_t tag_size,
                           WycheproofCounts *c)
{
    int64_t id = (int64_t)json_integer_value(json_object_get(t, "tcId"));
    const char *result = json_str(t, "result", id);
    size_t key_len, iv_len, aad_len, msg_len, ct_len, tag_len;
    _cleanup_free_ uint8_t *key = hex_decode(json_str(t, "key", id), &key_len);
    _cleanup_free_ uint8_t *iv = hex_decode(json_str(t, "iv", id), &iv_len);
    _cleanup_free_ uint8_t *aad = hex_decode(json_str(t, "aad", id), &aad_len);
    _cleanup_free_ uint8_t *msg = hex_decode(json_str(t, "msg", id), &msg_len);
    _cleanup_free_ uint8_t *ct = hex_decode(json_str(t, "ct", id), &ct_len);
    _cleanup_free_ uint8_t *tag = hex_decode(json_str(t, "tag", id), &tag_len);
    _cleanup_free_ uint8_t *out = test_xmalloc(MAX(msg_len, ct_len));
    uint8_t got_tag[CS_TAG_SIZE];
    int r;

    c->total++;
    if (strcmp(result, "valid") == 0) {
        c->valid++;
        if (key_len != key_size || iv_len != iv_size || tag_len != tag_size || ct_len != msg_len)
            fail_msg("wycheproof tcId %" PRId64 ": sizes disagree with its group", id);
        if (iv_len > 128)
            c->long_iv++;

        ASSERT_OK(cs_aead_seal_ex(key, key_len, iv, iv_len, aad, aad_len, msg, msg_len, out,
                                  got_tag, tag_len));
        if (memcmp(out, ct, ct_len) != 0 || memcmp(got_tag, tag, tag_len) != 0)
            fail_msg("wycheproof tcId %" PRId64 ": seal does not match ct||tag", id);
        memset(out, 0, msg_len);
        r = cs_aead_open_ex(key, key_len, iv, iv_len, aad, aad_len, ct, ct_len, out, tag,
                            tag_len);
        if (r != 0 || memcmp(out, msg, msg_len) != 0)
            fail_msg("wycheproof tcId %" PRId64 ": open returned %d or wrong plaintext", id, r);

        if (key_len == CS_KEY_SIZE && iv_len == CS_NONCE_SIZE && tag_len == CS_TAG_SIZE) {
            c->fixed_api++;
            ASSERT_OK(cs_aead_seal(key, iv, aad, aad_len, msg, msg_len, out, got_tag));
            if (memcmp(out, ct, ct_len) != 0 || memcmp(got_tag, tag, tag_len) != 0)
                fail_msg("wycheproof tcId %" PRId64 ": cs_aead_seal mismatch", id);
            memset(out, 0, msg_len);
            r = cs_aead_open(key, iv, aad, aad_len, ct, ct_len, out, tag);
            if (r != 0 || memcmp(out, msg, msg_len) != 0)
                fail_msg("wycheproof tcId %" PRId64 ": cs_aead_open returned %d", id, r);
        }
    } else if (strcmp(result, "invalid") == 0) {
        c->invalid++;
        r = cs_aead_open_ex(key, key_len, iv, iv_len, aad, aad_len, ct, ct_len, out, tag,
                            tag_len);
        if (r != -EBADMSG && r != -EINVAL)
            fail_msg("wycheproof tcId %" PRId64 " (invalid) : open returned %d", id, r);
        if (key_len == CS_KEY_SIZE && iv_len == CS_NONCE_SIZE && tag_len == CS_TAG_SIZE) {
            c->fixed_api++;
            ASSERT_ERR(EBADMSG, cs_aead_open(key, iv, aad, aad_len, ct, ct_len, out, tag));
        }
    } else if (strcmp(result, "acceptable") == 0) {
        /* Either outcome is allowed, but an acceptance must yield the right plaintext. */
        c->acceptable++;
        r = cs_aead_open_ex(key, key_len, iv, iv_len, aad, aad_len, ct, ct_len, out, tag,
                            tag_len);
        if (r == 0 && (ct_len != msg_len || memcmp(out, msg, msg_len) != 0))
            fail_msg("wycheproof tcId %" PRId64 ": accepted with wrong plaintext", id);
        if (r != 0 && r != -EBADMSG && r != -EINVAL)
            fail_msg("wycheproof tcId %" PRId64 ": open returned %d", id, r);
    } else {
        fail_msg("wycheproof tcId %" PRId64 ": unknown result \"%s\"", id, result);
    }
}

static void test_wycheproof_aes_gcm(void **state)
{
    (void)state;
    char path[512];
    json_error_t err;

    snprintf(path, sizeof(path), "%s/wycheproof_aes_gcm_test.json", test_data_dir());
    _cleanup_(json_decrefp) json_t *root = json_load_file(path, 0, &err);
    if (!root)
        fail_msg("cannot load \"%s\": %s (line %d)", path, err.text, err.line);
    if (strcmp(json_string_value(json_object_get(root, "algorithm")) ?: "", "AES-GCM") != 0)
        fail_msg("\"%s\" is not an AES-GCM vector file", path);
    json_t *declared = json_object_get(root, "numberOfTests");
    json_t *groups = json_object_get(root, "testGroups");
    assert_true(json_is_integer(declared));
    assert_true(json_is_array(groups));

    WycheproofCounts c = { 0 };
    size_t gi;
    json_t *group;
    json_array_foreach(groups, gi, group) {
        size_t key_size = json_bits_to_bytes(group, "keySize");
        size_t iv_size = json_bits_to_bytes(group, "ivSize");
        size_t tag_size = json_bits_to_bytes(group, "tagSize");
        json_t *tests = json_object_get(group, "tests");
        assert_true(json_is_array(tests));
        size_t ti;
        json_t *t;
        json_array_foreach(tests, ti, t)
            wycheproof_one(t, key_size, iv_size, tag_size, &c);
    }

    printf("wycheproof AES-GCM: %zu tests in %zu groups: %zu valid, %zu invalid, %zu acceptable; "
           "%zu also through cs_aead_seal/open, %zu with IVs over 128 bytes\n",
           c.total, json_array_size(groups), c.valid, c.invalid, c.acceptable, c.fixed_api,
           c.long_iv);
    assert_int_equal(c.total, json_integer_value(declared));
    assert_int_equal(c.valid + c.invalid + c.acceptable, c.total);
    assert_true(c.valid > 0);
    assert_true(c.invalid > 0);
    assert_true(c.fixed_api > 0);
}

/* --- RFC 4231 HMAC-SHA-256 --- */

typedef struct HmacCounts {
    size_t run, truncated;
} HmacCounts;

static void hmac_one(const Record *rec, void *userdata)
{
    HmacCounts *c = userdata;
    size_t key_len, msg_len, md_len;
    _cleanup_free_ uint8_t *key = hex_decode(rec_get(rec, "Key"), &key_len);
    _cleanup_free_ uint8_t *msg = hex_decode(rec_get(rec, "Msg"), &msg_len);
    _cleanup_free_ uint8_t *md = hex_decode(rec_get(rec, "MD"), &md_len);
    uint8_t out[CS_MAC_SIZE];

    /* Len is the message length in bits; checking it catches a mis-split record. */
    assert_int_equal(parse_u64(rec_get(rec, "Len")), (uint64_t)msg_len * 8);
    /* RFC 4231 test case 5 publishes only a 128-bit prefix of the MAC. */
    if (md_len == 0 || md_len > CS_MAC_SIZE)
        fail_msg("HMAC vector %zu: MD of %zu bytes", c->run + 1, md_len);
    if (md_len < CS_MAC_SIZE)
        c->truncated++;
    ASSERT_OK(cs_hmac_sha256(key, key_len, msg, msg_len, out));
    if (memcmp(out, md, md_len) != 0)
        fail_msg("HMAC vector %zu: mismatch", c->run + 1);
    c->run++;
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    HmacCounts c = { 0, 0 };
    ParseCounts p = parse_vectors("HMAC/rfc-4231-sha256.txt", "Len", "MD", hmac_one, &c);
    printf("RFC 4231 HMAC-SHA-256: %zu vectors run (%zu truncated), %zu in file\n", c.run,
           c.truncated, p.starts);
    assert_true(c.run > 0);
    assert_int_equal(c.run, p.starts);
    assert_int_equal(c.run, p.terminators);
}

static void test_hmac_extra(void **state)
{
    (void)state;
    uint8_t out[CS_MAC_SIZE], out2[CS_MAC_SIZE];
    size_t len;
    _cleanup_free_ uint8_t *empty = hex_decode(
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", &len);

    /* Empty key and empty message, with NULL pointers allowed for zero lengths. */
    ASSERT_OK(cs_hmac_sha256(NULL, 0, NULL, 0, out));
    assert_memory_equal(out, empty, CS_MAC_SIZE);
    ASSERT_OK(cs_hmac_sha256("", 0, "", 0, out));
    assert_memory_equal(out, empty, CS_MAC_SIZE);

    /* HMAC zero-pads short keys, so an empty key equals a block of zeros. */
    static const uint8_t zeros[64];
    ASSERT_OK(cs_hmac_sha256(zeros, sizeof(zeros), "abc", 3, out));
    ASSERT_OK(cs_hmac_sha256(NULL, 0, "abc", 3, out2));
    assert_memory_equal(out, out2, CS_MAC_SIZE);

    ASSERT_ERR(EINVAL, cs_hmac_sha256(NULL, 1, "abc", 3, out));
    ASSERT_ERR(EINVAL, cs_hmac_sha256("k", 1, NULL, 3, out));
}

/* --- RFC 5869 HKDF-SHA-256 --- */

static void hkdf_one(const Record *rec, void *userdata)
{
    size_t *run = userdata;
    size_t ikm_len, salt_len, info_len, prk_len, okm_len;
    _cleanup_free_ uint8_t *ikm = hex_decode(rec_get(rec, "IKM"), &ikm_len);
    _cleanup_free_ uint8_t *salt = hex_decode(rec_get(rec, "salt"), &salt_len);
    _cleanup_free_ uint8_t *info = hex_decode(rec_get(rec, "info"), &info_len);
    _cleanup_free_ uint8_t *prk = hex_decode(rec_get(rec, "PRK"), &prk_len);
    _cleanup_free_ uint8_t *okm = hex_decode(rec_get(rec, "OKM"), &okm_len);
    uint64_t l = parse_u64(rec_get(rec, "L"));
    static const uint8_t zero_salt[CS_MAC_SIZE];
    uint8_t mac[CS_MAC_SIZE];

    assert_string_equal(rec_get(rec, "Hash"), "SHA-256");
    assert_int_equal(l, okm_len);
    assert_int_equal(prk_len, CS_MAC_SIZE);
    _cleanup_free_ uint8_t *out = test_xmalloc(okm_len);

    ASSERT_OK(cs_hkdf_sha256(ikm, ikm_len, salt_len ? salt : NULL, salt_len,
                             info_len ? info : NULL, info_len, out, okm_len));
    if (memcmp(out, okm, okm_len) != 0)
        fail_msg("HKDF vector %zu: OKM mismatch", *run + 1);

    /* The extract step is HMAC(salt, IKM), an absent salt being HashLen zeros. */
    ASSERT_OK(cs_hmac_sha256(salt_len ? salt : zero_salt, salt_len ? salt_len : sizeof(zero_salt),
                             ikm, ikm_len, mac));
    if (memcmp(mac, prk, CS_MAC_SIZE) != 0)
        fail_msg("HKDF vector %zu: PRK mismatch", *run + 1);

    if (salt_len == 0) {
        /* Non-NULL empty salt and explicit zero salt must agree with the absent salt. */
        memset(out, 0, okm_len);
        ASSERT_OK(cs_hkdf_sha256(ikm, ikm_len, "", 0, info, info_len, out, okm_len));
        assert_memory_equal(out, okm, okm_len);
        memset(out, 0, okm_len);
        ASSERT_OK(cs_hkdf_sha256(ikm, ikm_len, zero_salt, sizeof(zero_salt), info, info_len, out,
                                 okm_len));
        assert_memory_equal(out, okm, okm_len);
    }
    (*run)++;
}

static void test_hkdf_rfc5869(void **state)
{
    (void)state;
    size_t run = 0;
    ParseCounts p = parse_vectors("KDF/rfc-5869-HKDF-SHA256.txt", "COUNT", "OKM", hkdf_one, &run);
    printf("RFC 5869 HKDF-SHA-256: %zu vectors run, %zu in file\n", run, p.starts);
    assert_true(run > 0);
    assert_int_equal(run, p.starts);
    assert_int_equal(run, p.terminators);
}

static void test_hkdf_limits(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *out = test_xmalloc(255 * 32 + 1);
    uint8_t a[32], b[64];

    ASSERT_OK(cs_hkdf_sha256("k", 1, NULL, 0, NULL, 0, out, 255 * 32));
    ASSERT_ERR(EINVAL, cs_hkdf_sha256("k", 1, NULL, 0, NULL, 0, out, 255 * 32 + 1));
    ASSERT_ERR(EINVAL, cs_hkdf_sha256("k", 1, NULL, 0, NULL, 0, out, 0));
    ASSERT_ERR(EINVAL, cs_hkdf_sha256(NULL, 1, NULL, 0, NULL, 0, out, 32));
    ASSERT_OK(cs_hkdf_sha256(NULL, 0, NULL, 0, NULL, 0, out, 32));

    /* Output is a prefix-consistent stream, and info separates keys. */
    ASSERT_OK(cs_hkdf_sha256("ikm", 3, "salt", 4, "one", 3, a, sizeof(a)));
    ASSERT_OK(cs_hkdf_sha256("ikm", 3, "salt", 4, "one", 3, b, sizeof(b)));
    assert_memory_equal(a, b, sizeof(a));
    ASSERT_OK(cs_hkdf_sha256("ikm", 3, "salt", 4, "two", 3, b, sizeof(a)));
    assert_memory_not_equal(a, b, sizeof(a));
}

/* --- RFC 7914 scrypt --- */

#define SCRYPT_MAX_N 1048576 /* 1 GiB at r = 8 */

typedef struct ScryptCounts {
    size_t run, skipped_large;
} ScryptCounts;

static void scrypt_one(const Record *rec, void *userdata)
{
    ScryptCounts *c = userdata;
    const char *pass = rec_get(rec, "PASSWORD"), *salt = rec_get(rec, "SALT");
    uint64_t n = parse_u64(rec_get(rec, "N")), r = parse_u64(rec_get(rec, "r"));
    uint64_t p = parse_u64(rec_get(rec, "p")), len = parse_u64(rec_get(rec, "LENGTH"));
    size_t dk_len;
    _cleanup_free_ uint8_t *dk = hex_decode(rec_get(rec, "DERIVED_KEY"), &dk_len);

    assert_int_equal(len, dk_len);
    if (n > SCRYPT_MAX_N) {
        c->skipped_large++;
        return;
    }
    _cleanup_free_ uint8_t *out = test_xmalloc(dk_len);
    ASSERT_OK(cs_scrypt(pass, strlen(pass), salt, strlen(salt), n, r, p, out, dk_len));
    if (memcmp(out, dk, dk_len) != 0)
        fail_msg("scrypt vector N=%" PRIu64 " r=%" PRIu64 " p=%" PRIu64 ": mismatch", n, r, p);
    c->run++;
}

static void test_scrypt_rfc7914(void **state)
{
    (void)state;
    ScryptCounts c = { 0, 0 };
    ParseCounts p = parse_vectors("KDF/scrypt.txt", "COUNT", "DERIVED_KEY", scrypt_one, &c);
    printf("RFC 7914 scrypt: %zu vectors run (N <= %d), %zu above that skipped, %zu in file\n",
           c.run, SCRYPT_MAX_N, c.skipped_large, p.starts);
    assert_int_equal(c.run + c.skipped_large, p.starts);
    assert_int_equal(p.starts, p.terminators);
    /* RFC 7914 section 12 has four vectors, the last one at N = 2^20. */
    assert_true(c.run >= 4);
}

static void test_scrypt_params(void **state)
{
    (void)state;
    uint8_t out[32];

    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 0, 1, 1, out, sizeof(out)));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 1, 1, 1, out, sizeof(out)));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 1000, 1, 1, out, sizeof(out)));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 16, 0, 1, out, sizeof(out)));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 16, 1, 0, out, sizeof(out)));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, 16, 1, 1, out, 0));
    ASSERT_ERR(EINVAL, cs_scrypt("p", 1, "s", 1, UINT64_C(1) << 62, 1u << 20, 1, out, 32));
    ASSERT_OK(cs_scrypt(NULL, 0, NULL, 0, 16, 1, 1, out, sizeof(out)));
}

/* --- AEAD properties --- */

static const size_t roundtrip_sizes[] = { 0, 1, 15, 16, 17, 65536, 1 << 20 };

static void test_aead_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(roundtrip_sizes); i++) {
        size_t n = roundtrip_sizes[i];
        size_t aad_len = i % 3 == 0 ? 0 : random_u32() % 100;
        uint8_t key[CS_KEY_SIZE], nonce[CS_NONCE_SIZE], tag[CS_TAG_SIZE], tag2[CS_TAG_SIZE];
        uint8_t aad[100];
        _cleanup_free_ uint8_t *msg = test_xmalloc(n);
        _cleanup_free_ uint8_t *ct = test_xmalloc(n);
        _cleanup_free_ uint8_t *buf = test_xmalloc(n);
        random_buf(key, sizeof(key));
        random_buf(nonce, sizeof(nonce));
        random_buf(aad, sizeof(aad));
        random_buf(msg, n);
        const void *a = aad_len ? aad : NULL;

        ASSERT_OK(cs_aead_seal(key, nonce, a, aad_len, msg, n, ct, tag));
        if (n >= 16)
            assert_memory_not_equal(ct, msg, n);

        /* The cached-context path and a fresh context agree. */
        ASSERT_OK(cs_aead_seal_ex(key, sizeof(key), nonce, sizeof(nonce), a, aad_len, msg, n, buf,
                                  tag2, sizeof(tag2)));
        assert_memory_equal(buf, ct, n);
        assert_memory_equal(tag2, tag, sizeof(tag));

        memset(buf, 0xa5, n);
        ASSERT_OK(cs_aead_open(key, nonce, a, aad_len, ct, n, buf, tag));
        assert_memory_equal(buf, msg, n);

        /* In place, both ways. */
        memcpy(buf, msg, n);
        ASSERT_OK(cs_aead_seal(key, nonce, a, aad_len, buf, n, buf, tag2));
        assert_memory_equal(buf, ct, n);
        assert_memory_equal(tag2, tag, sizeof(tag));
        ASSERT_OK(cs_aead_open(key, nonce, a, aad_len, buf, n, buf, tag));
        assert_memory_equal(buf, msg, n);

        memcpy(buf, ct, n);
        ASSERT_OK(cs_aead_open_ex(key, sizeof(key), nonce, sizeof(nonce), a, aad_len, buf, n, buf,
                                  tag, sizeof(tag)));
        assert_memory_equal(buf, msg, n);
    }
}

/* Seals msg, then expects every single-bit flip of ciphertext, tag, AAD and nonce (all of them,
 * or `samples` random ones of the ciphertext when it is large) to be rejected. */
static void check_tamper(size_t n, size_t aad_len, size_t samples)
{
    uint8_t key[CS_KEY_SIZE], nonce[CS_NONCE_SIZE], tag[CS_TAG_SIZE];
    _cleanup_free_ uint8_t *aad = test_xmalloc(aad_len);
    _cleanup_free_ uint8_t *msg = test_xmalloc(n);
    _cleanup_free_ uint8_t *ct = test_xmalloc(n);
    _cleanup_free_ uint8_t *out = test_xmalloc(n);
    size_t rejected = 0;

    random_buf(key, sizeof(key));
    random_buf(nonce, sizeof(nonce));
    random_buf(aad, aad_len);
    random_buf(msg, n);
    ASSERT_OK(cs_aead_seal(key, nonce, aad, aad_len, msg, n, ct, tag));

    size_t ct_bits = n * 8;
    size_t ct_checks = samples ? samples : ct_bits;
    for (size_t k = 0; k < ct_checks; k++) {
        size_t bit = samples ? (k == 0 ? 0 : k == 1 ? ct_bits - 1 : random_u32() % ct_bits) : k;
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len, ct, n, out, tag));
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rejected++;
    }
    for (size_t bit = 0; bit < CS_TAG_SIZE * 8; bit++) {
        tag[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len, ct, n, out, tag));
        tag[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rejected++;
    }
    for (size_t bit = 0; bit < aad_len * 8; bit++) {
        aad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len, ct, n, out, tag));
        aad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rejected++;
    }
    for (size_t bit = 0; bit < CS_NONCE_SIZE * 8; bit++) {
        nonce[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len, ct, n, out, tag));
        nonce[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        rejected++;
    }
    /* Dropping or adding trailing AAD changes the authenticated length. */
    if (aad_len > 0)
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len - 1, ct, n, out, tag));
    if (n > 0)
        ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, aad, aad_len, ct, n - 1, out, tag));

    /* After all those failures the (recreated) cached context still works. */
    ASSERT_OK(cs_aead_open(key, nonce, aad, aad_len, ct, n, out, tag));
    assert_memory_equal(out, msg, n);
    printf("tamper n=%zu aad=%zu: %zu single-bit flips rejected\n", n, aad_len, rejected);
}

static void test_aead_tamper(void **state)
{
    (void)state;
    check_tamper(0, 0, 0);
    check_tamper(0, 13, 0);
    check_tamper(33, 20, 0);
    check_tamper(65536, 32, 256);
}

static void test_aead_wrong_key(void **state)
{
    (void)state;
    uint8_t key[CS_KEY_SIZE], other[CS_KEY_SIZE], nonce[CS_NONCE_SIZE], tag[CS_TAG_SIZE];
    uint8_t msg[100], ct[100], out[100];

    random_buf(key, sizeof(key));
    random_buf(nonce, sizeof(nonce));
    random_buf(msg, sizeof(msg));
    ASSERT_OK(cs_aead_seal(key, nonce, "hdr", 3, msg, sizeof(msg), ct, tag));
    for (size_t bit = 0; bit < sizeof(key) * 8; bit++) {
        memcpy(other, key, sizeof(key));
        other[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_aead_open(other, nonce, "hdr", 3, ct, sizeof(ct), out, tag));
    }
    random_buf(other, sizeof(other));
    ASSERT_ERR(EBADMSG, cs_aead_open(other, nonce, "hdr", 3, ct, sizeof(ct), out, tag));

    /* Shorter keys through the generic API, including the folded long-IV path. */
    static const size_t key_lens[] = { 16, 24, 32 };
    static const size_t iv_lens[] = { 12, 16, 300 };
    uint8_t iv[300];
    random_buf(iv, sizeof(iv));
    for (size_t i = 0; i < ARRAY_SIZE(key_lens); i++)
        for (size_t j = 0; j < ARRAY_SIZE(iv_lens); j++) {
            size_t kl = key_lens[i], il = iv_lens[j];
            ASSERT_OK(cs_aead_seal_ex(key, kl, iv, il, NULL, 0, msg, sizeof(msg), ct, tag, 16));
            memcpy(other, key, sizeof(key));
            other[kl - 1] ^= 1;
            ASSERT_ERR(EBADMSG, cs_aead_open_ex(other, kl, iv, il, NULL, 0, ct, sizeof(ct), out,
                                                tag, 16));
            ASSERT_OK(cs_aead_open_ex(key, kl, iv, il, NULL, 0, ct, sizeof(ct), out, tag, 16));
            assert_memory_equal(out, msg, sizeof(msg));
        }
}

/* Generic IV and tag lengths: round trips, IV sensitivity (also past the 128-byte IVs OpenSSL
 * handles natively) and tags of t bytes being the first t bytes of the full tag. */
static void test_aead_ex_shapes(void **state)
{
    (void)state;
    static const size_t key_lens[] = { 16, 24, 32 };
    static const size_t iv_lens[] = { 1, 8, 12, 16, 64, 127, 128, 129, 200, 257, 1000 };
    static const size_t tag_lens[] = { 1, 4, 8, 12, 13, 15, 16 };
    uint8_t key[32], iv[1000], msg[77], ct[77], ct2[77], out[77];
    uint8_t full[16];

    random_buf(key, sizeof(key));
    random_buf(iv, sizeof(iv));
    random_buf(msg, sizeof(msg));
    for (size_t i = 0; i < ARRAY_SIZE(key_lens); i++)
        for (size_t j = 0; j < ARRAY_SIZE(iv_lens); j++) {
            size_t kl = key_lens[i], il = iv_lens[j];
            ASSERT_OK(cs_aead_seal_ex(key, kl, iv, il, "aad", 3, msg, sizeof(msg), ct, full, 16));
            for (size_t t = 0; t < ARRAY_SIZE(tag_lens); t++) {
                size_t tl = tag_lens[t];
                /* Exactly tl bytes, so the sanitizers catch a tag written past its length. */
                _cleanup_free_ uint8_t *tag = test_xmalloc(tl);
                ASSERT_OK(cs_aead_seal_ex(key, kl, iv, il, "aad", 3, msg, sizeof(msg), ct2, tag,
                                          tl));
                assert_memory_equal(ct2, ct, sizeof(ct));
                assert_memory_equal(tag, full, tl);
                ASSERT_OK(cs_aead_open_ex(key, kl, iv, il, "aad", 3, ct, sizeof(ct), out, tag,
                                          tl));
                assert_memory_equal(out, msg, sizeof(msg));
                tag[tl - 1] ^= 0x80;
                ASSERT_ERR(EBADMSG, cs_aead_open_ex(key, kl, iv, il, "aad", 3, ct, sizeof(ct), out,
                                                    tag, tl));
            }
            /* Any IV bit, and the IV length itself, change the keystream and the tag. */
            size_t bit = random_u32() % (il * 8);
            iv[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            ASSERT_ERR(EBADMSG, cs_aead_open_ex(key, kl, iv, il, "aad", 3, ct, sizeof(ct), out,
                                                full, 16));
            iv[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            if (il > 1)
                ASSERT_ERR(EBADMSG, cs_aead_open_ex(key, kl, iv, il - 1, "aad", 3, ct, sizeof(ct),
                                                    out, full, 16));
            ASSERT_ERR(EBADMSG, cs_aead_open_ex(key, kl, iv, il, "aab", 3, ct, sizeof(ct), out,
                                                full, 16));
        }
}

static void test_aead_invalid_args(void **state)
{
    (void)state;
    uint8_t key[32] = { 0 }, iv[12] = { 0 }, buf[16] = { 0 }, tag[16] = { 0 };
    const size_t huge = (size_t)INT_MAX + 1;

    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 20, iv, 12, NULL, 0, buf, 16, buf, tag, 16));
    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 0, iv, 12, NULL, 0, buf, 16, buf, tag, 16));
    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 32, iv, 0, NULL, 0, buf, 16, buf, tag, 16));
    ASSERT_ERR(EINVAL, cs_aead_open_ex(key, 32, iv, 0, NULL, 0, buf, 16, buf, tag, 16));
    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 32, iv, 12, NULL, 0, buf, 16, buf, tag, 0));
    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 32, iv, 12, NULL, 0, buf, 16, buf, tag, 17));
    ASSERT_ERR(EINVAL, cs_aead_open_ex(key, 32, iv, 12, NULL, 0, buf, 16, buf, tag, 0));
    ASSERT_ERR(EINVAL, cs_aead_open_ex(key, 32, iv, 12, NULL, 0, buf, 16, buf, tag, 17));
    ASSERT_ERR(EINVAL, cs_aead_seal(key, iv, NULL, 5, buf, 16, buf, tag));
    ASSERT_ERR(EINVAL, cs_aead_seal(key, iv, NULL, 0, NULL, 16, buf, tag));
    ASSERT_ERR(EINVAL, cs_aead_seal(key, iv, NULL, 0, buf, 16, NULL, tag));
    ASSERT_ERR(EINVAL, cs_aead_open(key, iv, NULL, 0, buf, 16, buf, NULL));
    /* OpenSSL lengths are ints: larger sizes are refused before any byte is touched. */
    ASSERT_ERR(EINVAL, cs_aead_seal(key, iv, NULL, 0, buf, huge, buf, tag));
    ASSERT_ERR(EINVAL, cs_aead_open(key, iv, NULL, 0, buf, huge, buf, tag));
    ASSERT_ERR(EINVAL, cs_aead_seal(key, iv, buf, huge, buf, 16, buf, tag));
    ASSERT_ERR(EINVAL, cs_aead_seal_ex(key, 32, iv, huge, NULL, 0, buf, 16, buf, tag, 16));
    /* Empty everything is fine, with NULL buffers. */
    ASSERT_OK(cs_aead_seal(key, iv, NULL, 0, NULL, 0, NULL, tag));
    ASSERT_OK(cs_aead_open(key, iv, NULL, 0, NULL, 0, NULL, tag));
}

/* --- concurrency of the per-thread context cache --- */

#define THREADS    4
#define ITERATIONS 300

static void *aead_worker(void *arg)
{
    int *failures = arg;
    uint8_t key[CS_KEY_SIZE], nonce[CS_NONCE_SIZE], tag[CS_TAG_SIZE], tag2[CS_TAG_SIZE];
    uint8_t msg[4096], ct[4096], ct2[4096], out[4096];

    /* cmocka's assertions are not thread-safe: count failures and let the main thread assert. */
    for (int i = 0; i < ITERATIONS; i++) {
        uint32_t rnd;
        if (cs_random_bytes(&rnd, sizeof(rnd)) < 0) {
            (*failures)++;
            continue;
        }
        size_t n = rnd % sizeof(msg);
        if (cs_random_bytes(key, sizeof(key)) < 0 || cs_random_bytes(nonce, sizeof(nonce)) < 0 ||
            cs_random_bytes(msg, n) < 0 ||
            cs_aead_seal(key, nonce, &i, sizeof(i), msg, n, ct, tag) < 0 ||
            cs_aead_seal_ex(key, sizeof(key), nonce, sizeof(nonce), &i, sizeof(i), msg, n, ct2,
                            tag2, sizeof(tag2)) < 0 ||
            memcmp(ct, ct2, n) != 0 || memcmp(tag, tag2, sizeof(tag)) != 0 ||
            cs_aead_open(key, nonce, &i, sizeof(i), ct, n, out, tag) < 0 ||
            memcmp(out, msg, n) != 0) {
            (*failures)++;
            continue;
        }
        tag[i % CS_TAG_SIZE] ^= 1;
        if (cs_aead_open(key, nonce, &i, sizeof(i), ct, n, out, tag) != -EBADMSG)
            (*failures)++;
    }
    return NULL;
}

static void test_aead_threads(void **state)
{
    (void)state;
    pthread_t threads[THREADS];
    int failures[THREADS] = { 0 };

    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, aead_worker, &failures[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(failures[i], 0);
    }
}

/* --- comparison and randomness --- */

static void test_memeq(void **state)
{
    (void)state;
    uint8_t a[64], b[64];

    random_buf(a, sizeof(a));
    memcpy(b, a, sizeof(a));
    assert_int_equal(cs_memeq(a, b, sizeof(a)), 1);
    assert_int_equal(cs_memeq(a, b, 0), 1);
    assert_int_equal(cs_memeq(NULL, NULL, 0), 1);
    for (size_t i = 0; i < sizeof(a); i++) {
        b[i] ^= 0x01;
        assert_int_equal(cs_memeq(a, b, sizeof(a)), 0);
        assert_int_equal(cs_memeq(a, b, i), 1);
        b[i] ^= 0x81;
        assert_int_equal(cs_memeq(a, b, sizeof(a)), 0);
        b[i] ^= 0x80;
    }
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    static const uint8_t zero[32];

    ASSERT_OK(cs_random_bytes(a, sizeof(a)));
    ASSERT_OK(cs_random_bytes(b, sizeof(b)));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, zero, sizeof(a));
    ASSERT_OK(cs_random_bytes(NULL, 0));
    ASSERT_ERR(EINVAL, cs_random_bytes(NULL, 1));
}

/* 32-byte keys go through a per-thread cached context: it must give exactly what a fresh
 * one-shot HMAC gives, however keys alternate and on every thread. */
static void *hmac_cached_round(void *arg)
{
    uint8_t keys[3][32], data[9000], got[CS_MAC_SIZE], want[CS_MAC_SIZE];
    size_t want_len = 0;
    (void)arg;
    ASSERT_OK(cs_random_bytes(keys, sizeof(keys)));
    ASSERT_OK(cs_random_bytes(data, sizeof(data)));
    static const int order[] = { 0, 0, 1, 0, 2, 2, 1, 1, 0, 2 };
    for (size_t i = 0; i < 200; i++) {
        const uint8_t *key = keys[order[i % ARRAY_SIZE(order)]];
        size_t n = (i * 997) % sizeof(data);
        ASSERT_OK(cs_hmac_sha256(key, 32, data, n, got));
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, n ? data : NULL,
                                  n, want, sizeof(want), &want_len));
        assert_int_equal(want_len, CS_MAC_SIZE);
        assert_memory_equal(got, want, CS_MAC_SIZE);
    }
    return NULL;
}

static void test_hmac_cached_context(void **state)
{
    (void)state;
    hmac_cached_round(NULL);
    pthread_t t[4];
    for (size_t i = 0; i < ARRAY_SIZE(t); i++)
        assert_int_equal(pthread_create(&t[i], NULL, hmac_cached_round, NULL), 0);
    for (size_t i = 0; i < ARRAY_SIZE(t); i++)
        pthread_join(t[i], NULL);
}

RUN_TESTS(cmocka_unit_test(test_wycheproof_aes_gcm), cmocka_unit_test(test_hmac_cached_context), cmocka_unit_test(test_hmac_rfc4231),
          cmocka_unit_test(test_hmac_extra), cmocka_unit_test(test_hkdf_rfc5869),
          cmocka_unit_test(test_hkdf_limits), cmocka_unit_test(test_scrypt_rfc7914),
          cmocka_unit_test(test_scrypt_params), cmocka_unit_test(test_aead_roundtrip),
          cmocka_unit_test(test_aead_tamper), cmocka_unit_test(test_aead_wrong_key),
          cmocka_unit_test(test_aead_ex_shapes), cmocka_unit_test(test_aead_invalid_args),
          cmocka_unit_test(test_aead_threads), cmocka_unit_test(test_memeq),
          cmocka_unit_test(test_random_bytes))
