#include "chunkstore/crypto.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "common/macro.h"

DEFINE_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free)
DEFINE_CLEANUP_FUNC(EVP_KDF *, EVP_KDF_free)
DEFINE_CLEANUP_FUNC(EVP_KDF_CTX *, EVP_KDF_CTX_free)

/* The OpenSSL 3 GCM provider refuses IVs longer than this (GCM_IV_MAX_SIZE); longer ones are
 * folded into an equivalent 16-byte IV first, see gcm_fold_iv(). */
#define GCM_PROVIDER_IV_MAX 128
#define GCM_BLOCK           16
#define HKDF_SHA256_MAX_OUT (255 * CS_MAC_SIZE)

/* OSSL_PARAM builders take non-const buffers even for inputs they only read. */
#define UNCONST(p) ((void *)(uintptr_t)(p))

/* Pops the first queued OpenSSL error, logs it and drops the rest of the queue so that it does
 * not leak into an unrelated later failure on this thread. */
static int openssl_error(const char *what)
{
    unsigned long e = ERR_get_error();
    int r = -EIO;
    char buf[256];

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            r = -ENOMEM;
    } else {
        snprintf(buf, sizeof(buf), "no error queued");
    }
    log_debug("%s failed: %s", what, buf);
    ERR_clear_error();
    return r;
}

static const EVP_CIPHER *gcm_cipher(size_t key_len)
{
    switch (key_len) {
    case 16:
        return EVP_aes_128_gcm();
    case 24:
        return EVP_aes_192_gcm();
    case 32:
        return EVP_aes_256_gcm();
    default:
        return NULL;
    }
}

static const EVP_CIPHER *ecb_cipher(size_t key_len)
{
    switch (key_len) {
    case 16:
        return EVP_aes_128_ecb();
    case 24:
        return EVP_aes_192_ecb();
    case 32:
        return EVP_aes_256_ecb();
    default:
        return NULL;
    }
}

/* --- GF(2^128) in GCM's bit order, only for folding over-long IVs --- */

typedef struct Gf128 {
    uint64_t hi, lo; /* bytes 0..7 and 8..15 of the block, big-endian */
} Gf128;

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static Gf128 gf_load(const uint8_t b[GCM_BLOCK])
{
    return (Gf128){ load_be64(b), load_be64(b + 8) };
}

static void gf_store(Gf128 x, uint8_t b[GCM_BLOCK])
{
    store_be64(b, x.hi);
    store_be64(b + 8, x.lo);
}

/* SP 800-38D algorithm 1, with masks instead of branches: one operand is derived from the hash
 * subkey H, which must not leak through timing. */
static Gf128 gf_mul(Gf128 x, Gf128 y)
{
    Gf128 z = { 0, 0 }, v = y;

    for (int i = 0; i < 128; i++) {
        uint64_t bit = i < 64 ? (x.hi >> (63 - i)) & 1 : (x.lo >> (127 - i)) & 1;
        uint64_t m = (uint64_t)0 - bit;
        z.hi ^= v.hi & m;
        z.lo ^= v.lo & m;
        uint64_t carry = (uint64_t)0 - (v.lo & 1);
        v.lo = (v.lo >> 1) | (v.hi << 63);
        v.hi = (v.hi >> 1) ^ (UINT64_C(0xe100000000000000) & carry);
    }
    return z;
}

/* x^(2^128 - 2), the inverse of x (and 0 for x = 0), by a fixed addition chain: a_k = x^(2^k - 1)
 * with a_{k+1} = a_k^2 * x. */
static Gf128 gf_inv(Gf128 x)
{
    Gf128 a = x;
    for (int k = 1; k < 127; k++)
        a = gf_mul(gf_mul(a, a), x);
    return gf_mul(a, a);
}

/*
 * GCM derives its pre-counter block J0 from a non-96-bit IV as GHASH_H(IV || pad || [len]_64), and
 * nothing else in the mode depends on the IV. OpenSSL only accepts IVs up to 128 bytes, so for a
 * longer IV compute J0 here and solve for the 16-byte IV X that OpenSSL would hash to the same J0:
 *   J0 = ((X*H) ^ L) * H  with L = [0]_64 || [128]_64   =>   X = ((J0 * H^-1) ^ L) * H^-1.
 * When H = 0 every IV hashes to 0, and the formula yields X = 0, which also hashes to 0.
 */
static int gcm_fold_iv(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                       uint8_t folded[GCM_BLOCK])
{
    static const uint8_t zero[GCM_BLOCK];
    uint8_t hblock[GCM_BLOCK + GCM_BLOCK], block[GCM_BLOCK];
    int outl = 0;

    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -ENOMEM;
    if (!EVP_EncryptInit_ex(ctx, ecb_cipher(key_len), NULL, key, NULL) ||
        !EVP_CIPHER_CTX_set_padding(ctx, 0) ||
        !EVP_EncryptUpdate(ctx, hblock, &outl, zero, GCM_BLOCK) || outl != GCM_BLOCK)
        return openssl_error("AES-ECB for the GCM hash subkey");

    Gf128 h = gf_load(hblock);
    Gf128 y = { 0, 0 };
    for (size_t off = 0; off < iv_len; off += GCM_BLOCK) {
        size_t take = MIN(iv_len - off, (size_t)GCM_BLOCK);
        memset(block, 0, sizeof(block));
        memcpy(block, iv + off, take);
        Gf128 b = gf_load(block);
        y.hi ^= b.hi;
        y.lo ^= b.lo;
        y = gf_mul(y, h);
    }
    y.lo ^= (uint64_t)iv_len * 8;
    Gf128 j0 = gf_mul(y, h);

    Gf128 hinv = gf_inv(h);
    Gf128 x = gf_mul(j0, hinv);
    x.lo ^= 128;
    x = gf_mul(x, hinv);
    gf_store(x, folded);

    OPENSSL_cleanse(hblock, sizeof(hblock));
    OPENSSL_cleanse(&h, sizeof(h));
    OPENSSL_cleanse(&hinv, sizeof(hinv));
    OPENSSL_cleanse(&j0, sizeof(j0));
    OPENSSL_cleanse(&y, sizeof(y));
    OPENSSL_cleanse(&x, sizeof(x));
    return 0;
}

/* --- AES-GCM --- */

static int aead_check(size_t key_len, size_t iv_len, const void *aad, size_t aad_len,
                      const void *in, size_t n, const void *out, size_t tag_len)
{
    if (!gcm_cipher(key_len))
        return -EINVAL;
    /* GCM bounds the IV at 2^64 - 1 bits; OpenSSL's int lengths bound everything else. */
    if (iv_len == 0 || iv_len > INT_MAX || tag_len == 0 || tag_len > CS_TAG_SIZE)
        return -EINVAL;
    if (aad_len > INT_MAX || n > INT_MAX)
        return -EINVAL;
    if ((aad_len > 0 && !aad) || (n > 0 && (!in || !out)))
        return -EINVAL;
    return 0;
}

/* One GCM operation on a context that already holds the cipher and the IV length. Re-keying with
 * both key and IV resets all of the provider's per-message state (GHASH accumulator, counter,
 * tag), which is what makes reusing the context across messages and keys safe. */
static int aead_run(EVP_CIPHER_CTX *ctx, int enc, const uint8_t *key, const uint8_t *iv,
                    const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                    uint8_t *tag, size_t tag_len)
{
    uint8_t final_buf[GCM_BLOCK];
    int outl = 0;

    if (!EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc))
        return openssl_error("AES-GCM init");
    if (aad_len > 0 && !EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len))
        return openssl_error("AES-GCM AAD");
    if (n > 0) {
        if (!EVP_CipherUpdate(ctx, out, &outl, in, (int)n))
            return openssl_error("AES-GCM update");
        if ((size_t)outl != n) {
            log_debug("AES-GCM update produced %d bytes instead of %zu", outl, n);
            return -EIO;
        }
    }
    if (!enc && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)tag_len, tag))
        return openssl_error("AES-GCM set tag");

    /* GCM is a stream mode: final emits no bytes, it only computes or checks the tag. */
    if (!EVP_CipherFinal_ex(ctx, final_buf, &outl)) {
        if (!enc) {
            /* A tag mismatch is not an OpenSSL error, but drop anything it may have queued. */
            ERR_clear_error();
            return -EBADMSG;
        }
        return openssl_error("AES-GCM final");
    }
    if (enc && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, (int)tag_len, tag))
        return openssl_error("AES-GCM get tag");
    return 0;
}

/*
 * Per-thread cache for the fixed-parameter AES-256-GCM context used on every stored byte. Creating
 * a context and binding it to a cipher makes OpenSSL 3 fetch the provider implementation and
 * allocate its state (about 0.3 us, as much as sealing 1 KiB); a context set up once only needs
 * re-keying per message. A context is lent out while in use (the slot is emptied) and
 * dropped instead of returned after any failure, so a half-used context is never reused.
 * The cached context keeps the last key schedule until the next call or thread exit.
 */
static pthread_key_t aead_cache_key;
static bool aead_cache_ok;
static pthread_once_t aead_cache_once = PTHREAD_ONCE_INIT;

static void aead_cache_destroy(void *p)
{
    EVP_CIPHER_CTX_free(p);
}

static void aead_cache_init(void)
{
    aead_cache_ok = pthread_key_create(&aead_cache_key, aead_cache_destroy) == 0;
}

static int aead_cache_take(EVP_CIPHER_CTX **ret)
{
    EVP_CIPHER_CTX *ctx = NULL;

    if (pthread_once(&aead_cache_once, aead_cache_init) == 0 && aead_cache_ok) {
        ctx = pthread_getspecific(aead_cache_key);
        /* Cannot fail once this thread has stored a value under the key; if it did, leaving the
         * context in the slot and building another one leaks it rather than sharing it. */
        if (ctx && pthread_setspecific(aead_cache_key, NULL) != 0)
            ctx = NULL;
    }
    if (!ctx) {
        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
            return -ENOMEM;
        if (!EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, 1)) {
            EVP_CIPHER_CTX_free(ctx);
            return openssl_error("AES-256-GCM context setup");
        }
    }
    *ret = ctx;
    return 0;
}

static void aead_cache_give_back(EVP_CIPHER_CTX *ctx)
{
    if (aead_cache_ok && pthread_setspecific(aead_cache_key, ctx) == 0)
        return;
    EVP_CIPHER_CTX_free(ctx);
}

static int aead_fixed(int enc, const uint8_t *key, const uint8_t *nonce, const void *aad,
                      size_t aad_len, const void *in, size_t n, void *out, uint8_t *tag)
{
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
    int r;

    if (!key || !nonce || !tag)
        return -EINVAL;
    r = aead_check(CS_KEY_SIZE, CS_NONCE_SIZE, aad, aad_len, in, n, out, CS_TAG_SIZE);
    if (r < 0)
        return r;
    r = aead_cache_take(&ctx);
    if (r < 0)
        return r;
    r = aead_run(ctx, enc, key, nonce, aad, aad_len, in, n, out, tag, CS_TAG_SIZE);
    if (r < 0)
        return r;
    aead_cache_give_back(TAKE_PTR(ctx));
    return 0;
}

int cs_aead_seal(const uint8_t key[CS_KEY_SIZE], const uint8_t nonce[CS_NONCE_SIZE],
                 const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                 uint8_t tag[CS_TAG_SIZE])
{
    return aead_fixed(1, key, nonce, aad, aad_len, in, n, out, tag);
}

int cs_aead_open(const uint8_t key[CS_KEY_SIZE], const uint8_t nonce[CS_NONCE_SIZE],
                 const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                 const uint8_t tag[CS_TAG_SIZE])
{
    uint8_t tag_copy[CS_TAG_SIZE];

    if (!tag)
        return -EINVAL;
    memcpy(tag_copy, tag, sizeof(tag_copy)); /* OpenSSL's set-tag call takes a non-const pointer */
    return aead_fixed(0, key, nonce, aad, aad_len, in, n, out, tag_copy);
}

static int aead_generic(int enc, const uint8_t *key, size_t key_len, const uint8_t *iv,
                        size_t iv_len, const void *aad, size_t aad_len, const void *in, size_t n,
                        void *out, uint8_t *tag, size_t tag_len)
{
    uint8_t folded[GCM_BLOCK];
    int r;

    if (!key || !iv || !tag)
        return -EINVAL;
    r = aead_check(key_len, iv_len, aad, aad_len, in, n, out, tag_len);
    if (r < 0)
        return r;

    if (iv_len > GCM_PROVIDER_IV_MAX) {
        r = gcm_fold_iv(key, key_len, iv, iv_len, folded);
        if (r < 0)
            return r;
        iv = folded;
        iv_len = sizeof(folded);
    }

    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        r = -ENOMEM;
    else if (!EVP_CipherInit_ex(ctx, gcm_cipher(key_len), NULL, NULL, NULL, enc))
        r = openssl_error("AES-GCM context setup");
    else if (iv_len != CS_NONCE_SIZE &&
             !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL))
        r = openssl_error("AES-GCM set IV length");
    else
        r = aead_run(ctx, enc, key, iv, aad, aad_len, in, n, out, tag, tag_len);
    OPENSSL_cleanse(folded, sizeof(folded));
    return r;
}

int cs_aead_seal_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                    uint8_t *tag, size_t tag_len)
{
    return aead_generic(1, key, key_len, iv, iv_len, aad, aad_len, in, n, out, tag, tag_len);
}

int cs_aead_open_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                    const uint8_t *tag, size_t tag_len)
{
    uint8_t tag_copy[CS_TAG_SIZE];

    if (!tag || tag_len == 0 || tag_len > CS_TAG_SIZE)
        return -EINVAL;
    memcpy(tag_copy, tag, tag_len);
    return aead_generic(0, key, key_len, iv, iv_len, aad, aad_len, in, n, out, tag_copy,
                        tag_len);
}

/* --- HMAC, HKDF, scrypt --- */

/*
 * Chunk ids are HMACs of 8 KiB pages under one key, millions of times: setting up an HMAC
 * context costs about 1 us, a sixth of hashing a page. Each thread keeps one context keyed
 * with the last 32-byte key it saw and only re-initializes it for the next message.
 */
typedef struct MacCache {
    EVP_MAC_CTX *ctx;
    uint8_t key[32];
} MacCache;

static pthread_key_t mac_cache_key;
static bool mac_cache_ok;
static pthread_once_t mac_cache_once = PTHREAD_ONCE_INIT;

static void mac_cache_destroy(void *p)
{
    MacCache *c = p;
    EVP_MAC_CTX_free(c->ctx);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c);
}

static void mac_cache_init(void)
{
    mac_cache_ok = pthread_key_create(&mac_cache_key, mac_cache_destroy) == 0;
}

/* HMAC-SHA-256 with a 32-byte key through this thread's cached context. Returns 1 when it
 * computed the MAC, 0 when the caller should take the general path, or a negative errno. */
static int hmac_cached(const uint8_t key[32], const void *data, size_t n, uint8_t out[CS_MAC_SIZE])
{
    if (pthread_once(&mac_cache_once, mac_cache_init) != 0 || !mac_cache_ok)
        return 0;
    MacCache *c = pthread_getspecific(mac_cache_key);
    if (!c) {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        c = calloc(1, sizeof(*c));
        if (c && mac)
            c->ctx = EVP_MAC_CTX_new(mac);
        EVP_MAC_free(mac);
        if (!c || !c->ctx || pthread_setspecific(mac_cache_key, c) != 0) {
            if (c)
                mac_cache_destroy(c);
            return 0;
        }
    }
    static char digest[] = "SHA256"; /* OSSL_PARAM wants a mutable string */
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                            OSSL_PARAM_construct_end() };
    bool same_key = CRYPTO_memcmp(c->key, key, 32) == 0 && EVP_MAC_CTX_get_mac_size(c->ctx) > 0;
    /* A NULL key to EVP_MAC_init keeps the key already set: only the message state resets. */
    if (!EVP_MAC_init(c->ctx, same_key ? NULL : key, same_key ? 0 : 32, same_key ? NULL : params))
        return openssl_error("HMAC-SHA-256 init");
    memcpy(c->key, key, 32);
    size_t out_len = 0;
    if (!EVP_MAC_update(c->ctx, data, n) || !EVP_MAC_final(c->ctx, out, &out_len, CS_MAC_SIZE)) {
        memset(c->key, 0, sizeof(c->key)); /* re-key next time */
        return openssl_error("HMAC-SHA-256");
    }
    return out_len == CS_MAC_SIZE ? 1 : -EIO;
}

int cs_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
                   uint8_t out[CS_MAC_SIZE])
{
    size_t out_len = 0;

    if ((key_len > 0 && !key) || (n > 0 && !data) || !out)
        return -EINVAL;
    if (key_len == 32) {
        int r = hmac_cached(key, n ? data : "", n, out);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    /* A NULL key means "keep the previous key" to EVP_MAC_init and fails on a fresh context, so
     * an empty key must still be a valid pointer. */
    if (key_len == 0)
        key = "";
    if (n == 0)
        data = "";
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, n, out, CS_MAC_SIZE,
                   &out_len))
        return openssl_error("HMAC-SHA-256");
    if (out_len != CS_MAC_SIZE) {
        log_debug("HMAC-SHA-256 produced %zu bytes", out_len);
        return -EIO;
    }
    return 0;
}

int cs_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
                   const void *info, size_t info_len, void *out, size_t out_len)
{
    /* RFC 5869: an absent salt is HashLen zero bytes. Passing them explicitly avoids relying on
     * how the provider treats an empty salt parameter. */
    static const uint8_t zero_salt[CS_MAC_SIZE];
    char digest[] = "SHA256";
    int mode = EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND;
    OSSL_PARAM params[6], *p = params;

    if ((ikm_len > 0 && !ikm) || (salt_len > 0 && !salt) || (info_len > 0 && !info) || !out)
        return -EINVAL;
    if (out_len == 0 || out_len > HKDF_SHA256_MAX_OUT)
        return -EINVAL;
    if (salt_len == 0) {
        salt = zero_salt;
        salt_len = sizeof(zero_salt);
    }

    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
    *p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, UNCONST(ikm_len ? ikm : ""),
                                             ikm_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, UNCONST(salt), salt_len);
    if (info_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, UNCONST(info), info_len);
    *p = OSSL_PARAM_construct_end();

    _cleanup_(EVP_KDF_freep) EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
    if (!kdf)
        return openssl_error("HKDF fetch");
    _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    if (!kctx)
        return -ENOMEM;
    if (!EVP_KDF_derive(kctx, out, out_len, params))
        return openssl_error("HKDF-SHA-256");
    return 0;
}

/* Overflow-checked a * b and a + b. */
static bool mul_u64(uint64_t a, uint64_t b, uint64_t *ret)
{
    return !__builtin_mul_overflow(a, b, ret);
}

static bool add_u64(uint64_t a, uint64_t b, uint64_t *ret)
{
    return !__builtin_add_overflow(a, b, ret);
}

int cs_scrypt(const void *pass, size_t pass_len, const void *salt, size_t salt_len, uint64_t n,
              uint64_t r, uint64_t p, void *out, size_t out_len)
{
    /* OpenSSL allocates 128*r*(n+2) bytes for V plus 128*r*p for B and refuses when that exceeds
     * maxmem; the slack keeps us clear of any rounding a future version might add. */
    const uint64_t slack = UINT64_C(1) << 20;
    uint64_t mem;

    if ((pass_len > 0 && !pass) || (salt_len > 0 && !salt) || !out || out_len == 0)
        return -EINVAL;
    if (n < 2 || (n & (n - 1)) != 0 || r == 0 || p == 0 || r > UINT32_MAX || p > UINT32_MAX)
        return -EINVAL;
    /* RFC 7914 section 2: p <= (2^32 - 1) * 32 / (128 * r), and N < 2^(128 * r / 8). */
    if (p > (UINT64_C(0xffffffff) * 32) / (128 * r))
        return -EINVAL;
    if (16 * r < 64 && n >= (UINT64_C(1) << (16 * r)))
        return -EINVAL;
    if (!add_u64(n, p, &mem) || !add_u64(mem, 2, &mem) || !mul_u64(mem, r, &mem) ||
        !mul_u64(mem, 128, &mem) || !add_u64(mem, slack, &mem) || mem > SIZE_MAX)
        return -EINVAL;

    if (!EVP_PBE_scrypt(pass_len ? pass : "", pass_len, salt_len ? salt : (const void *)"",
                        salt_len, n, r, p, mem, out, out_len))
        return openssl_error("scrypt");
    return 0;
}

/* --- randomness and comparison --- */

int cs_random_bytes(void *buf, size_t n)
{
    uint8_t *b = buf;

    if (n > 0 && !buf)
        return -EINVAL;
    /* RAND_bytes takes an int length; larger requests are served piecewise. */
    while (n > 0) {
        size_t chunk = MIN(n, (size_t)1 << 30);
        if (RAND_bytes(b, (int)chunk) != 1)
            return openssl_error("RAND_bytes");
        b += chunk;
        n -= chunk;
    }
    return 0;
}

int cs_memeq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
