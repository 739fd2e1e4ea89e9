/*
 * FastCDC 2020 (Xia et al.), bit-compatible with the `v2020` module of nlfiedler/fastcdc-rs.
 *
 * The reference cuts a whole buffer at once; here the same decisions are taken one byte at a time
 * so that a stream can be fed in pieces of any size. The reference's "rolling two bytes each
 * step" is the gear hash h = (h << 1) + gear[b] evaluated two bytes at a time:
 *     ((h << 1) + gear[b0]) << 1 == (h << 2) + gear_ls[b0]
 * so testing that value against mask << 1 is the same test as testing the one-byte hash against
 * mask (no mask has bit 63 set). The two forms therefore agree at every byte whatever the parity,
 * and the streaming state only needs the one-byte hash and the position in the chunk.
 *
 * Reference semantics reproduced here, for a chunk whose bytes are numbered from 0:
 *  - bytes before (min & ~1) are not hashed; the hash starts from 0 there;
 *  - byte i is tested with mask_s while i < avg, with mask_l afterwards;
 *  - when byte i matches, the chunk is bytes 0..i-1: the matching byte starts the next chunk;
 *  - bytes from (max & ~1) on are never tested, and a chunk that reaches max bytes ends there.
 * Two documented differences, both only reachable in corner cases:
 *  - with an odd min the reference can cut at min - 1; we hash that byte but never cut before
 *    min, as the header promises;
 *  - at the very end of a stream, when the last chunk has an odd length below max, the reference
 *    does not test its last byte (its loop walks whole pairs); a streaming chunker cannot know
 *    the byte is the last, so it may cut one byte before the end and leave a 1-byte last chunk.
 * Because the decision for "cut after byte i-1" is taken on byte i, a cut can fall right at the
 * start of a piece: cs_chunker_scan() then returns 0 (the pending bytes alone are the chunk).
 */
#include "chunkstore/chunker.h"

#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/endian.h"
#include "common/log.h"
#include "common/macro.h"

#define CS_CHUNKER_MIN_MIN 64u
#define CS_CHUNKER_MAX_MAX (16u * 1024 * 1024)
#define CS_CHUNKER_MAX_NORMALIZATION 3u

/*
 * FastCDC masks indexed by the number of bits (fastcdc-rs MASKS, from the destor C reference and
 * restic-FastCDC). Entries 0..4 are padding: a zero mask would cut at every byte.
 */
static const uint64_t cs_masks[26] = {
    0,
    0,
    0,
    0,
    0,
    0x0000000001804110, /* only reached with normalization 3 */
    0x0000000001803110, /* 64 B */
    0x0000000018035100, /* 128 B */
    0x0000001800035300, /* 256 B */
    0x0000019000353000, /* 512 B */
    0x0000590003530000, /* 1 KiB */
    0x0000d90003530000, /* 2 KiB */
    0x0000d90103530000, /* 4 KiB */
    0x0000d90303530000, /* 8 KiB */
    0x0000d90313530000, /* 16 KiB */
    0x0000d90f03530000, /* 32 KiB */
    0x0000d90303537000, /* 64 KiB */
    0x0000d90703537000, /* 128 KiB */
    0x0000d90707537000, /* 256 KiB */
    0x0000d91707537000, /* 512 KiB */
    0x0000d91747537000, /* 1 MiB */
    0x0000d91767537000, /* 2 MiB */
    0x0000d93767537000, /* 4 MiB */
    0x0000d93777537000, /* 8 MiB */
    0x0000d93777577000, /* 16 MiB */
    0x0000db3777577000, /* only reached with normalization >= 1 at 16 MiB */
};

/*
 * The FastCDC 2020 gear table (high 8 bytes of MD5(i) for i = 0..255), as published. Written
 * once and expanded twice, so gear_ls cannot drift from gear.
 */
#define CS_GEAR_REFERENCE(X)                                                                       \
    X(0x3b5d3c7d207e37dc) X(0x784d68ba91123086) X(0xcd52880f882e7298) X(0xeacf8e4e19fdcca7)        \
    X(0xc31f385dfbd1632b) X(0x1d5f27001e25abe6) X(0x83130bde3c9ad991) X(0xc4b225676e9b7649)        \
    X(0xaa329b29e08eb499) X(0xb67fcbd21e577d58) X(0x0027baaada2acf6b) X(0xe3ef2d5ac73c2226)        \
    X(0x0890f24d6ed312b7) X(0xa809e036851d7c7e) X(0xf0a6fe5e0013d81b) X(0x1d026304452cec14)        \
    X(0x03864632648e248f) X(0xcdaacf3dcd92b9b4) X(0xf5e012e63c187856) X(0x8862f9d3821c00b6)        \
    X(0xa82f7338750f6f8a) X(0x1e583dc6c1cb0b6f) X(0x7a3145b69743a7f1) X(0xabb20fee404807eb)        \
    X(0xb14b3cfe07b83a5d) X(0xb9dc27898adb9a0f) X(0x3703f5e91baa62be) X(0xcf0bb866815f7d98)        \
    X(0x3d9867c41ea9dcd3) X(0x1be1fa65442bf22c) X(0x14300da4c55631d9) X(0xe698e9cbc6545c99)        \
    X(0x4763107ec64e92a5) X(0xc65821fc65696a24) X(0x76196c064822f0b7) X(0x485be841f3525e01)        \
    X(0xf652bc9c85974ff5) X(0xcad8352face9e3e9) X(0x2a6ed1dceb35e98e) X(0xc6f483badc11680f)        \
    X(0x3cfd8c17e9cf12f1) X(0x89b83c5e2ea56471) X(0xae665cfd24e392a9) X(0xec33c4e504cb8915)        \
    X(0x3fb9b15fc9fe7451) X(0xd7fd1fd1945f2195) X(0x31ade0853443efd8) X(0x255efc9863e1e2d2)        \
    X(0x10eab6008d5642cf) X(0x46f04863257ac804) X(0xa52dc42a789a27d3) X(0xdaaadf9ce77af565)        \
    X(0x6b479cd53d87febb) X(0x6309e2d3f93db72f) X(0xc5738ffbaa1ff9d6) X(0x6bd57f3f25af7968)        \
    X(0x67605486d90d0a4a) X(0xe14d0b9663bfbdae) X(0xb7bbd8d816eb0414) X(0xdef8a4f16b35a116)        \
    X(0xe7932d85aaaffed6) X(0x08161cbae90cfd48) X(0x855507beb294f08b) X(0x91234ea6ffd399b2)        \
    X(0xad70cf4b2435f302) X(0xd289a97565bc2d27) X(0x8e558437ffca99de) X(0x96d2704b7115c040)        \
    X(0x0889bbcdfc660e41) X(0x5e0d4e67dc92128d) X(0x72a9f8917063ed97) X(0x438b69d409e016e3)        \
    X(0xdf4fed8a5d8a4397) X(0x00f41dcf41d403f7) X(0x4814eb038e52603f) X(0x9dafbacc58e2d651)        \
    X(0xfe2f458e4be170af) X(0x4457ec414df6a940) X(0x06e62f1451123314) X(0xbd1014d173ba92cc)        \
    X(0xdef318e25ed57760) X(0x9fea0de9dfca8525) X(0x459de1e76c20624b) X(0xaeec189617e2d666)        \
    X(0x126a2c06ab5a83cb) X(0xb1321532360f6132) X(0x65421503dbb40123) X(0x2d67c287ea089ab3)        \
    X(0x6c93bff5a56bd6b6) X(0x4ffb2036cab6d98d) X(0xce7b785b1be7ad4f) X(0xedb42ef6189fd163)        \
    X(0xdc905288703988f6) X(0x365f9c1d2c691884) X(0xc640583680d99bfe) X(0x3cd4624c07593ec6)        \
    X(0x7f1ea8d85d7c5805) X(0x014842d480b57149) X(0x0b649bcb5a828688) X(0xbcd5708ed79b18f0)        \
    X(0xe987c862fbd2f2f0) X(0x982731671f0cd82c) X(0xbaf13e8b16d8c063) X(0x8ea3109cbd951bba)        \
    X(0xd141045bfb385cad) X(0x2acbc1a0af1f7d30) X(0xe6444d89df03bfdf) X(0xa18cc771b8188ff9)        \
    X(0x9834429db01c39bb) X(0x214add07fe086a1f) X(0x8f07c19b1f6b3ff9) X(0x56a297b1bf4ffe55)        \
    X(0x94d558e493c54fc7) X(0x40bfc24c764552cb) X(0x931a706f8a8520cb) X(0x32229d322935bd52)        \
    X(0x2560d0f5dc4fefaf) X(0x9dbcc48355969bb6) X(0x0fd81c3985c0b56a) X(0xe03817e1560f2bda)        \
    X(0xc1bb4f81d892b2d5) X(0xb0c4864f4e28d2d7) X(0x3ecc49f9d9d6c263) X(0x51307e99b52ba65e)        \
    X(0x8af2b688da84a752) X(0xf5d72523b91b20b6) X(0x6d95ff1ff4634806) X(0x562f21555458339a)        \
    X(0xc0ce47f889336346) X(0x487823e5089b40d8) X(0xe4727c7ebc6d9592) X(0x5a8f7277e94970ba)        \
    X(0xfca2f406b1c8bb50) X(0x5b1f8a95f1791070) X(0xd304af9fc9028605) X(0x5440ab7fc930e748)        \
    X(0x312d25fbca2ab5a1) X(0x10f4a4b234a4d575) X(0x90301d55047e7473) X(0x3b6372886c61591e)        \
    X(0x293402b77c444e06) X(0x451f34a4d3e97dd7) X(0x3158d814d81bc57b) X(0x034942425b9bda69)        \
    X(0xe2032ff9e532d9bb) X(0x62ae066b8b2179e5) X(0x9545e10c2f8d71d8) X(0x7ff7483eb2d23fc0)        \
    X(0x00945fcebdc98d86) X(0x8764bbbe99b26ca2) X(0x1b1ec62284c0bfc3) X(0x58e0fcc4f0aa362b)        \
    X(0x5f4abefa878d458d) X(0xfd74ac2f9607c519) X(0xa4e3fb37df8cbfa9) X(0xbf697e43cac574e5)        \
    X(0x86f14a3f68f4cd53) X(0x24a23d076f1ce522) X(0xe725cd8048868cc8) X(0xbf3c729eb2464362)        \
    X(0xd8f6cd57b3cc1ed8) X(0x6329e52425541577) X(0x62aa688ad5ae1ac0) X(0x0a242566269bf845)        \
    X(0x168b1a4753aca74b) X(0xf789afefff2e7e3c) X(0x6c3362093b6fccdb) X(0x4ce8f50bd28c09b2)        \
    X(0x006a2db95ae8aa93) X(0x975b0d623c3d1a8c) X(0x18605d3935338c5b) X(0x5bb6f6136cad3c71)        \
    X(0x0f53a20701f8d8a6) X(0xab8c5ad2e7e93c67) X(0x40b5ac5127acaa29) X(0x8c7bf63c2075895f)        \
    X(0x78bd9f7e014a805c) X(0xb2c9e9f4f9c8c032) X(0xefd6049827eb91f3) X(0x2be459f482c16fbd)        \
    X(0xd92ce0c5745aaa8c) X(0x0aaa8fb298d965b9) X(0x2b37f92c6c803b15) X(0x8c54a5e94e0f0e78)        \
    X(0x95f9b6e90c0a3032) X(0xe7939faa436c7874) X(0xd16bfe8f6a8a40c9) X(0x44982b86263fd2fa)        \
    X(0xe285fb39f984e583) X(0x779a8df72d7619d3) X(0xf2d79a8de8d5dd1e) X(0xd1037354d66684e2)        \
    X(0x004c82a4e668a8e5) X(0x31d40a7668b044e6) X(0xd70578538bd02c11) X(0xdb45431078c5f482)        \
    X(0x977121bb7f6a51ad) X(0x73d5ccbd34eff8dd) X(0xe437a07d356e17cd) X(0x47b2782043c95627)        \
    X(0x9fb251413e41d49a) X(0xccd70b60652513d3) X(0x1c95b31e8a1b49b2) X(0xcae73dfd1bcb4c1b)        \
    X(0x34d98331b1f5b70f) X(0x784e39f22338d92f) X(0x18613d4a064df420) X(0xf1d8dae25f0bcebe)        \
    X(0x33f77c15ae855efc) X(0x3c88b3b912eb109c) X(0x956a2ec96bafeea5) X(0x1aa005b5e0ad0e87)        \
    X(0x5500d70527c4bb8e) X(0xe36c57196421cc44) X(0x13c4d286cc36ee39) X(0x5654a23d818b2a81)        \
    X(0x77b1dc13d161abdc) X(0x734f44de5f8d5eb5) X(0x60717e174a6c89a2) X(0xd47d9649266a211e)        \
    X(0x5b13a4322bb69e90) X(0xf7669609f8b5fc3c) X(0x21e6ac55bedcdac9) X(0x9b56b62b61166dea)        \
    X(0xf48f66b939797e9c) X(0x35f332f9c0e6ae9a) X(0xcc733f6a9a878db0) X(0x3da161e41cc108c2)        \
    X(0xb7d74ae535914d51) X(0x4d493b0b11d36469) X(0xce264d1dfba9741a) X(0xa9d1f2dc7436dc06)        \
    X(0x70738016604c2a27) X(0x231d36e96e93f3d5) X(0x7666881197838d19) X(0x4a2a83090aaad40c)        \
    X(0xf1e761591668b35d) X(0x7363236497f730a7) X(0x301080e37379dd4d) X(0x502dea2971827042)        \
    X(0xc2c5eb858f32625f) X(0x786afb9edfafbdff) X(0xdaee0d868490b2a4) X(0x617366b3268609f6)        \
    X(0xae0e35a0fe46173e) X(0xd1a07de93e824f11) X(0x079b8b115ea4cca8) X(0x93a99274558faebb)        \
    X(0xfb1e6e22e08a03b3) X(0xea635fdba3698dd0) X(0xcf53659328503a5c) X(0xcde3b31e6fd5d780)        \
    X(0x8e3e4221d3614413) X(0xef14d0d86bf1a22c) X(0xe1d830d3f16c5ddb) X(0xaabd2b2a451504e1)

#define CS_GEAR_VALUE(v)    UINT64_C(v),
#define CS_GEAR_VALUE_LS(v) (uint64_t)(UINT64_C(v) << 1),

static const CsGearTable cs_gear_reference = {
    .gear = { CS_GEAR_REFERENCE(CS_GEAR_VALUE) },
    .gear_ls = { CS_GEAR_REFERENCE(CS_GEAR_VALUE_LS) },
};

const CsGearTable *cs_gear_table_reference(void)
{
    return &cs_gear_reference;
}

DEFINE_CLEANUP_FUNC(EVP_MAC *, EVP_MAC_free)
DEFINE_CLEANUP_FUNC(EVP_MAC_CTX *, EVP_MAC_CTX_free)

static int openssl_fail(const char *what)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return log_debug_errno(-EIO, "%s failed: %s", what, buf);
}

int cs_gear_table_from_key(const uint8_t key[32], CsGearTable *ret)
{
    /* The label is part of the repository format: changing it changes every chunk boundary. */
    static const char label[] = "pitrfs gear table";
    static char digest[] = "SHA256"; /* OSSL_PARAM wants a non-const pointer */
    _cleanup_(EVP_MAC_freep) EVP_MAC *mac = NULL;
    _cleanup_(EVP_MAC_CTX_freep) EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    uint8_t msg[sizeof(label) - 1 + 4];
    uint8_t block[32];
    int r = 0;

    if (!key || !ret)
        return -EINVAL;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return openssl_fail("EVP_MAC_fetch(HMAC)");
    ctx = EVP_MAC_CTX_new(mac);
    if (!ctx)
        return openssl_fail("EVP_MAC_CTX_new");

    memcpy(msg, label, sizeof(label) - 1);
    for (uint32_t counter = 0; counter < 256 / 4; counter++) {
        size_t len = 0;

        put_le32(msg + sizeof(label) - 1, counter);
        if (EVP_MAC_init(ctx, key, 32, params) != 1 ||
            EVP_MAC_update(ctx, msg, sizeof(msg)) != 1 ||
            EVP_MAC_final(ctx, block, &len, sizeof(block)) != 1 || len != sizeof(block)) {
            r = openssl_fail("HMAC-SHA-256");
            break;
        }
        for (size_t j = 0; j < 4; j++) {
            uint64_t g = get_le64(block + 8 * j);

            ret->gear[counter * 4 + j] = g;
            ret->gear_ls[counter * 4 + j] = g << 1;
        }
    }

    /* The table is as secret as the key: it reveals content through chunk lengths. */
    OPENSSL_cleanse(block, sizeof(block));
    if (r < 0)
        OPENSSL_cleanse(ret, sizeof(*ret));
    return r;
}

static unsigned log2_u32(uint32_t v)
{
    return (unsigned)__builtin_ctz(v);
}

int cs_chunker_params_check(const CsChunkerParams *params)
{
    unsigned bits;

    if (!params)
        return -EINVAL;
    if (params->min_size < CS_CHUNKER_MIN_MIN)
        return -EINVAL;
    if (params->avg_size == 0 || (params->avg_size & (params->avg_size - 1)) != 0)
        return -EINVAL;
    if (params->min_size > params->avg_size || params->avg_size > params->max_size)
        return -EINVAL;
    if (params->max_size > CS_CHUNKER_MAX_MAX)
        return -EINVAL;
    if (params->normalization > CS_CHUNKER_MAX_NORMALIZATION)
        return -EINVAL;

    /* The mask table has no entry beyond these (e.g. avg 64 at level 2, or 16 MiB at level 2). */
    bits = log2_u32(params->avg_size);
    if (bits < 5 + params->normalization || bits + params->normalization >= ARRAY_SIZE(cs_masks))
        return -EINVAL;
    return 0;
}

int cs_chunker_init(CsChunker *c, const CsGearTable *table, const CsChunkerParams *params)
{
    unsigned bits;
    int r;

    if (!c || !table)
        return -EINVAL;
    r = cs_chunker_params_check(params);
    if (r < 0)
        return r;

    /* Rounded log2 in the reference; exact here since avg is a power of two. */
    bits = log2_u32(params->avg_size);
    *c = (CsChunker){
        .table = table,
        .min_size = params->min_size,
        .avg_size = params->avg_size,
        .max_size = params->max_size,
        .mask_s = cs_masks[bits + params->normalization],
        .mask_l = cs_masks[bits - params->normalization],
    };
    c->mask_s_ls = c->mask_s << 1;
    c->mask_l_ls = c->mask_l << 1;
    return 0;
}

void cs_chunker_reset(CsChunker *c)
{
    c->hash = 0;
    c->position = 0;
}

/*
 * Hash b[0..n-1] into *hashp under one mask. Returns the index of the first byte whose hash
 * matches (the cut goes before it), or n with *hashp updated. Two bytes per step as in FastCDC
 * 2020: one shift per pair on the dependency chain instead of two.
 */
static size_t gear_run(const CsGearTable *restrict t, uint64_t *restrict hashp,
                       const uint8_t *restrict b, size_t n, uint64_t mask, uint64_t mask_ls)
{
    const uint64_t *restrict gear = t->gear;
    const uint64_t *restrict gear_ls = t->gear_ls;
    const uint8_t *q = b;
    const uint8_t *const pairs_end = b + (n & ~(size_t)1);
    uint64_t h = *hashp;

    for (; q != pairs_end; q += 2) {
        h = (h << 2) + gear_ls[q[0]];
        if (__builtin_expect((h & mask_ls) == 0, 0))
            return (size_t)(q - b);
        h += gear[q[1]];
        if (__builtin_expect((h & mask) == 0, 0))
            return (size_t)(q - b) + 1;
    }
    if (n & 1) {
        h = (h << 1) + gear[*q];
        if ((h & mask) == 0)
            return n - 1;
    }
    *hashp = h;
    return n;
}

size_t cs_chunker_scan(CsChunker *c, const void *p, size_t n)
{
    const uint8_t *buf = p;
    /* The reference walks byte pairs from min / 2 * 2 up to max / 2 * 2. */
    const uint64_t hash_start = c->min_size & ~UINT32_C(1);
    const uint64_t hash_end = c->max_size & ~UINT32_C(1);
    size_t i = 0;

    while (i < n) {
        uint64_t pos = c->position;
        size_t left = n - i;
        uint64_t end, mask, mask_ls;
        size_t k;

        if (pos < hash_start || pos >= hash_end) {
            /* Not hashed: the cut-point skipping below min, or the untested tail before max. */
            end = pos < hash_start ? hash_start : c->max_size;
            k = (size_t)MIN(end - pos, (uint64_t)left);
        } else if (pos < c->min_size) {
            /* Odd min: byte min - 1 feeds the hash as in the reference but cannot end a chunk. */
            c->hash = (c->hash << 1) + c->table->gear[buf[i]];
            k = 1;
        } else {
            size_t r;

            if (pos < c->avg_size) {
                end = c->avg_size;
                mask = c->mask_s;
                mask_ls = c->mask_s_ls;
            } else {
                end = hash_end;
                mask = c->mask_l;
                mask_ls = c->mask_l_ls;
            }
            k = (size_t)MIN(end - pos, (uint64_t)left);
            r = gear_run(c->table, &c->hash, buf + i, k, mask, mask_ls);
            if (r < k) {
                cs_chunker_reset(c);
                return i + r;
            }
        }

        c->position += k;
        i += k;
        /* Cut as soon as max is reached rather than on the next byte, so a caller holding a
         * full chunk can flush it without waiting for more data. */
        if (c->position == c->max_size) {
            cs_chunker_reset(c);
            return i;
        }
    }
    return SIZE_MAX;
}
