/*
 * Thin, misuse-resistant wrappers over OpenSSL 3 for the primitives the repository uses:
 * AES-256-GCM (96-bit nonce, 128-bit tag), HMAC-SHA-256, HKDF-SHA-256, scrypt and the CSPRNG.
 *
 * All functions return 0 on success or a negative errno: -EBADMSG when authentication fails
 * (wrong key, flipped bit, wrong AAD), -EINVAL for bad sizes or parameters, -ENOMEM, and -EIO
 * for any other OpenSSL failure (its error text is logged at debug level).
 * All functions are thread-safe (no shared state).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define CS_KEY_SIZE   32
#define CS_NONCE_SIZE 12
#define CS_TAG_SIZE   16
#define CS_MAC_SIZE   32

/* Encrypt n bytes of `in` into `out` (n bytes) and write the tag. `in` and `out` may be the
 * same buffer. aad may be NULL when aad_len is 0. */
int cs_aead_seal(const uint8_t key[CS_KEY_SIZE], const uint8_t nonce[CS_NONCE_SIZE],
                 const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                 uint8_t tag[CS_TAG_SIZE]);

/* Decrypt and verify. On -EBADMSG the contents of `out` are unspecified and must not be used. */
int cs_aead_open(const uint8_t key[CS_KEY_SIZE], const uint8_t nonce[CS_NONCE_SIZE],
                 const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                 const uint8_t tag[CS_TAG_SIZE]);

/* Generic-IV-length variants used by the known-answer tests (Wycheproof covers IV sizes other
 * than 96 bits and tag sizes other than 128). iv_len >= 1, 1 <= tag_len <= 16, key_len 16/24/32. */
int cs_aead_seal_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                    uint8_t *tag, size_t tag_len);
int cs_aead_open_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const void *aad, size_t aad_len, const void *in, size_t n, void *out,
                    const uint8_t *tag, size_t tag_len);

/* HMAC-SHA-256 of data under key (any key length). */
int cs_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
                   uint8_t out[CS_MAC_SIZE]);

/* HKDF-SHA-256 (RFC 5869, extract-and-expand). salt may be NULL/0, info may be NULL/0. */
int cs_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
                   const void *info, size_t info_len, void *out, size_t out_len);

/* scrypt (RFC 7914) via EVP_PBE_scrypt. n must be a power of two > 1. The memory limit passed to
 * OpenSSL is computed from n and r, so large parameters work. */
int cs_scrypt(const void *pass, size_t pass_len, const void *salt, size_t salt_len, uint64_t n,
              uint64_t r, uint64_t p, void *out, size_t out_len);

/* Fill buf with n bytes from the OpenSSL CSPRNG. */
int cs_random_bytes(void *buf, size_t n);

/* Constant-time comparison: returns 1 when equal, 0 otherwise. */
int cs_memeq(const void *a, const void *b, size_t n);
