/*
 * FastCDC 2020 chunker: known answers against nlfiedler/fastcdc-rs (v2020), streaming in pieces
 * of any size, keyed gear tables, boundary stability under insertion and parameter checks.
 */
#include "tests/unit/harness.h"

#include <stdbool.h>

#include "chunkstore/chunker.h"
#include "common/macro.h"

typedef struct SizeVec {
    size_t *v;
    size_t n, cap;
} SizeVec;

static void size_vec_push(SizeVec *s, size_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        assert_non_null(s->v);
    }
    s->v[s->n++] = x;
}

static void size_vec_free(SizeVec *s)
{
    free(s->v);
    *s = (SizeVec){ 0 };
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static uint8_t *random_buffer(size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n);
    uint64_t s = seed;

    assert_non_null(b);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t x = xorshift64(&s);

        for (size_t j = 0; j < 8 && i + j < n; j++)
            b[i + j] = (uint8_t)(x >> (8 * j));
    }
    return b;
}

/*
 * Feed buf[0..len-1] in pieces and collect the chunk lengths (the pending tail is the last
 * chunk). piece == 0 draws piece sizes from `seed`; piece >= len feeds the whole buffer at once.
 */
static void chunk_stream(CsChunker *c, const uint8_t *buf, size_t len, size_t piece, uint64_t seed,
                         SizeVec *out)
{
    uint64_t rng = seed | 1;
    size_t start = 0; /* first byte of the current chunk */
    size_t off = 0;   /* first byte not yet fed */

    cs_chunker_reset(c);
    while (off < len) {
        size_t n = piece ? piece : (size_t)(1 + xorshift64(&rng) % 100000);
        size_t end = off + MIN(n, len - off);

        for (;;) {
            size_t r = cs_chunker_scan(c, buf + off, end - off);

            if (r == SIZE_MAX)
                break;
            assert_true(r <= end - off);
            off += r;
            /* A cut may sit at the start of a piece, but never makes an empty chunk. */
            assert_true(off > start);
            size_vec_push(out, off - start);
            start = off;
        }
        off = end;
    }
    if (start < len)
        size_vec_push(out, len - start);
}

static void chunker_setup(CsChunker *c, const CsGearTable *t, uint32_t min, uint32_t avg,
                          uint32_t max, uint32_t level)
{
    CsChunkerParams p = {
        .min_size = min, .avg_size = avg, .max_size = max, .normalization = level,
    };

    ASSERT_OK(cs_chunker_init(c, t, &p));
}

static void assert_lengths(const SizeVec *got, const size_t *expected, size_t n)
{
    for (size_t i = 0; i < MIN(got->n, n); i++)
        if (got->v[i] != expected[i])
            fail_msg("chunk %zu: length %zu, expected %zu", i, got->v[i], expected[i]);
    assert_int_equal(got->n, n);
}

static void test_reference_table(void **state)
{
    const CsGearTable *t = cs_gear_table_reference();

    (void)state;
    /* Spot values of the published GEAR and GEAR_LS tables, first and last entries. */
    assert_true(t->gear[0] == UINT64_C(0x3b5d3c7d207e37dc));
    assert_true(t->gear[255] == UINT64_C(0xaabd2b2a451504e1));
    assert_true(t->gear_ls[0] == UINT64_C(0x76ba78fa40fc6fb8));
    assert_true(t->gear_ls[128] == UINT64_C(0x819c8ff11266c68c));
    assert_true(t->gear_ls[255] == UINT64_C(0x557a56548a2a09c2));
    for (size_t i = 0; i < 256; i++)
        assert_true(t->gear_ls[i] == t->gear[i] << 1);
}

static void test_known_answer_sekien(void **state)
{
    static const size_t expected[] = { 21325, 17140, 28084, 18217, 24700 };
    _cleanup_free_ uint8_t *buf = NULL;
    SizeVec got = { 0 };
    CsChunker c;
    size_t len, total = 0;

    (void)state;
    buf = test_read_data_file("SekienAkashita.jpg", &len);
    assert_int_equal(len, 109466);
    chunker_setup(&c, cs_gear_table_reference(), 4096, 16384, 65535, 1);
    chunk_stream(&c, buf, len, len, 0, &got);
    assert_lengths(&got, expected, ARRAY_SIZE(expected));
    for (size_t i = 0; i < got.n; i++)
        total += got.v[i];
    assert_int_equal(total, 109466);
    size_vec_free(&got);
}

/* The other SekienAkashita vectors of fastcdc-rs v2020: other sizes and normalization levels. */
static void test_known_answer_sekien_more(void **state)
{
    static const struct {
        uint32_t min, avg, max, level;
        size_t n;
        size_t lengths[8];
    } vectors[] = {
        { 8192, 32768, 131072, 1, 2, { 66549, 42917 } },
        { 16384, 65536, 262144, 1, 1, { 109466 } },
        { 4096, 16384, 65535, 0, 5, { 6634, 59915, 25597, 5237, 12083 } },
        { 8192, 16384, 32768, 3, 6, { 17350, 19911, 17426, 17519, 19940, 17320 } },
    };
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len;

    (void)state;
    buf = test_read_data_file("SekienAkashita.jpg", &len);
    for (size_t v = 0; v < ARRAY_SIZE(vectors); v++) {
        SizeVec got = { 0 };
        CsChunker c;

        chunker_setup(&c, cs_gear_table_reference(), vectors[v].min, vectors[v].avg,
                      vectors[v].max, vectors[v].level);
        chunk_stream(&c, buf, len, len, 0, &got);
        assert_lengths(&got, vectors[v].lengths, vectors[v].n);
        size_vec_free(&got);
    }
}

/* fastcdc-rs test_cut_all_zeros: no hash ever matches, every chunk is max long. */
static void test_all_zeros(void **state)
{
    static const uint32_t maxes[] = { 1024, 1023, 1025 };
    _cleanup_free_ uint8_t *buf = calloc(10240, 1);

    (void)state;
    assert_non_null(buf);
    for (size_t m = 0; m < ARRAY_SIZE(maxes); m++) {
        SizeVec got = { 0 };
        CsChunker c;

        chunker_setup(&c, cs_gear_table_reference(), 64, 256, maxes[m], 1);
        chunk_stream(&c, buf, 10240, 10240, 0, &got);
        for (size_t i = 0; i + 1 < got.n; i++)
            assert_int_equal(got.v[i], maxes[m]);
        assert_int_equal(got.n, (10240 + maxes[m] - 1) / maxes[m]);
        size_vec_free(&got);
    }
}

static void assert_same_in_pieces(CsChunker *c, const uint8_t *buf, size_t len)
{
    static const size_t pieces[] = { 1, 2, 7, 4096, 65537 };
    SizeVec whole = { 0 };

    chunk_stream(c, buf, len, len, 0, &whole);
    assert_true(whole.n > 1);
    for (size_t k = 0; k < ARRAY_SIZE(pieces) + 3; k++) {
        SizeVec got = { 0 };

        if (k < ARRAY_SIZE(pieces))
            chunk_stream(c, buf, len, pieces[k], 0, &got);
        else
            chunk_stream(c, buf, len, 0, 0x9e3779b97f4a7c15u * (k + 1), &got);
        assert_lengths(&got, whole.v, whole.n);
        size_vec_free(&got);
    }
    size_vec_free(&whole);
}

static void test_streaming_pieces(void **state)
{
    _cleanup_free_ uint8_t *jpg = NULL;
    _cleanup_free_ uint8_t *rnd = NULL;
    static const uint8_t key[32] = { 1, 2, 3 };
    CsGearTable table;
    CsChunker c;
    size_t len;

    (void)state;
    jpg = test_read_data_file("SekienAkashita.jpg", &len);
    chunker_setup(&c, cs_gear_table_reference(), 4096, 16384, 65535, 1);
    assert_same_in_pieces(&c, jpg, len);
    chunker_setup(&c, cs_gear_table_reference(), 64, 256, 1024, 2);
    assert_same_in_pieces(&c, jpg, len);

    /* Small chunks over random data, so many cuts land at piece edges; odd min and max too. */
    ASSERT_OK(cs_gear_table_from_key(key, &table));
    rnd = random_buffer(1u << 20, 42);
    chunker_setup(&c, &table, 256, 1024, 4096, 1);
    assert_same_in_pieces(&c, rnd, 1u << 20);
    chunker_setup(&c, &table, 255, 1024, 2047, 1);
    assert_same_in_pieces(&c, rnd, 1u << 20);
    chunker_setup(&c, &table, 1024, 1024, 1024, 0);
    assert_same_in_pieces(&c, rnd, 1u << 20);
}

static void test_keyed_table(void **state)
{
    static const uint8_t key0[32] = { 0 };
    static const uint8_t key1[32] = { 1 };
    const size_t len = 32u << 20;
    _cleanup_free_ uint8_t *buf = random_buffer(len, 0x0123456789abcdefu);
    _cleanup_free_ CsGearTable *t0 = malloc(sizeof(*t0));
    _cleanup_free_ CsGearTable *t0b = malloc(sizeof(*t0b));
    _cleanup_free_ CsGearTable *t1 = malloc(sizeof(*t1));
    SizeVec c0 = { 0 }, c1 = { 0 };
    CsChunker c;
    size_t total = 0;
    bool differ;

    (void)state;
    assert_non_null(t0);
    assert_non_null(t0b);
    assert_non_null(t1);
    ASSERT_OK(cs_gear_table_from_key(key0, t0));
    ASSERT_OK(cs_gear_table_from_key(key0, t0b));
    ASSERT_OK(cs_gear_table_from_key(key1, t1));
    assert_memory_equal(t0, t0b, sizeof(*t0));
    assert_memory_not_equal(t0->gear, t1->gear, sizeof(t0->gear));
    for (size_t i = 0; i < 256; i++)
        assert_true(t0->gear_ls[i] == t0->gear[i] << 1);

    chunker_setup(&c, t0, CS_CHUNKER_DEFAULT_MIN, CS_CHUNKER_DEFAULT_AVG, CS_CHUNKER_DEFAULT_MAX,
                  1);
    chunk_stream(&c, buf, len, len, 0, &c0);
    for (size_t i = 0; i < c0.n; i++) {
        if (i + 1 < c0.n)
            assert_true(c0.v[i] >= CS_CHUNKER_DEFAULT_MIN);
        assert_true(c0.v[i] <= CS_CHUNKER_DEFAULT_MAX);
        total += c0.v[i];
    }
    assert_int_equal(total, len);
    print_message("keyed table: %zu chunks, average %zu bytes\n", c0.n, len / c0.n);
    assert_true(len / c0.n >= CS_CHUNKER_DEFAULT_AVG / 2);
    assert_true(len / c0.n <= CS_CHUNKER_DEFAULT_AVG * 2);

    chunker_setup(&c, t1, CS_CHUNKER_DEFAULT_MIN, CS_CHUNKER_DEFAULT_AVG, CS_CHUNKER_DEFAULT_MAX,
                  1);
    chunk_stream(&c, buf, len, len, 0, &c1);
    differ = c0.n != c1.n || memcmp(c0.v, c1.v, c0.n * sizeof(*c0.v)) != 0;
    assert_true(differ);
    size_vec_free(&c0);
    size_vec_free(&c1);
}

/* Pins the derivation (HMAC-SHA-256(key, "pitrfs gear table" || le32 counter), four little-endian
 * words per block): it is part of the repository format. Expected values from Python's hmac. */
static void test_keyed_table_known_answer(void **state)
{
    uint8_t key[32];
    CsGearTable t;

    (void)state;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)i;
    ASSERT_OK(cs_gear_table_from_key(key, &t));
    assert_true(t.gear[0] == UINT64_C(0xc18b5bfda5325a4c));
    assert_true(t.gear[1] == UINT64_C(0x003b9f8b25348acc));
    assert_true(t.gear[2] == UINT64_C(0x7e9c597985710f86));
    assert_true(t.gear[3] == UINT64_C(0x0dbe7a3279be36fb));
    assert_true(t.gear[252] == UINT64_C(0xd4550e1403001260));
    assert_true(t.gear[255] == UINT64_C(0x26203e11755a61e4));
    assert_true(t.gear_ls[0] == UINT64_C(0xc18b5bfda5325a4c) << 1);
}

/* Chunks of `b` (by content) that do not occur in `a`. */
static size_t count_new_chunks(const uint8_t *a, const SizeVec *ca, const uint8_t *b,
                               const SizeVec *cb)
{
    size_t missing = 0, ob = 0;

    for (size_t i = 0; i < cb->n; i++) {
        bool found = false;
        size_t oa = 0;

        for (size_t j = 0; j < ca->n && !found; j++) {
            found = ca->v[j] == cb->v[i] && memcmp(a + oa, b + ob, cb->v[i]) == 0;
            oa += ca->v[j];
        }
        missing += !found;
        ob += cb->v[i];
    }
    return missing;
}

static void test_insertion_stability(void **state)
{
    static const size_t offsets[] = { 100, 4u << 20, (8u << 20) - 1000 };
    static const uint8_t key[32] = { 7 };
    const size_t len = 8u << 20;
    _cleanup_free_ uint8_t *buf = random_buffer(len, 99);
    _cleanup_free_ uint8_t *ins = malloc(len + 1);
    CsGearTable table;
    SizeVec before = { 0 };
    CsChunker c;

    (void)state;
    assert_non_null(ins);
    ASSERT_OK(cs_gear_table_from_key(key, &table));
    chunker_setup(&c, &table, CS_CHUNKER_DEFAULT_MIN, CS_CHUNKER_DEFAULT_AVG,
                  CS_CHUNKER_DEFAULT_MAX, 1);
    chunk_stream(&c, buf, len, len, 0, &before);
    for (size_t k = 0; k < ARRAY_SIZE(offsets); k++) {
        SizeVec after = { 0 };
        size_t o = offsets[k], changed;

        memcpy(ins, buf, o);
        ins[o] = 0x5a;
        memcpy(ins + o + 1, buf + o, len - o);
        chunk_stream(&c, ins, len + 1, len + 1, 0, &after);
        changed = count_new_chunks(buf, &before, ins, &after);
        print_message("insert at %zu: %zu of %zu chunks changed\n", o, changed, after.n);
        assert_true(changed >= 1);
        assert_true(changed <= 2);
        size_vec_free(&after);
    }
    size_vec_free(&before);
}

static void test_params_check(void **state)
{
    static const CsChunkerParams bad[] = {
        { 16384, 65535, 262144, 1 },             /* avg not a power of two */
        { 16384, 0, 262144, 1 },                 /* avg zero */
        { 131072, 65536, 262144, 1 },            /* min > avg */
        { 16384, 65536, 32768, 1 },              /* max < avg */
        { 63, 65536, 262144, 1 },                /* min < 64 */
        { 0, 65536, 262144, 1 },                 /* min zero */
        { 16384, 65536, 262144, 4 },             /* normalization > 3 */
        { 16384, 65536, (16u << 20) + 1, 1 },    /* max > 16 MiB */
        { 64, 64, 1024, 2 },                     /* no mask that small */
        { 1u << 20, 16u << 20, 16u << 20, 2 },   /* no mask that large */
    };
    static const CsChunkerParams good[] = {
        { CS_CHUNKER_DEFAULT_MIN, CS_CHUNKER_DEFAULT_AVG, CS_CHUNKER_DEFAULT_MAX, 1 },
        { 4096, 16384, 65535, 1 },
        { 64, 64, 64, 0 },
        { 64, 256, 1024, 3 },
        { 1u << 20, 4u << 20, 16u << 20, 3 },
        { 1u << 20, 16u << 20, 16u << 20, 1 },
    };
    CsChunker c;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        ASSERT_ERR(EINVAL, cs_chunker_params_check(&bad[i]));
        ASSERT_ERR(EINVAL, cs_chunker_init(&c, cs_gear_table_reference(), &bad[i]));
    }
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        ASSERT_OK(cs_chunker_params_check(&good[i]));
        ASSERT_OK(cs_chunker_init(&c, cs_gear_table_reference(), &good[i]));
    }
    ASSERT_ERR(EINVAL, cs_chunker_params_check(NULL));
    ASSERT_ERR(EINVAL, cs_chunker_init(&c, NULL, &good[0]));
}

static void test_short_stream(void **state)
{
    const size_t len = CS_CHUNKER_DEFAULT_MIN;
    _cleanup_free_ uint8_t *buf = random_buffer(len, 5);
    CsChunker c;

    (void)state;
    chunker_setup(&c, cs_gear_table_reference(), CS_CHUNKER_DEFAULT_MIN, CS_CHUNKER_DEFAULT_AVG,
                  CS_CHUNKER_DEFAULT_MAX, 1);
    assert_true(cs_chunker_scan(&c, buf, len) == SIZE_MAX);
    assert_int_equal(c.position, len);
    assert_true(cs_chunker_scan(&c, buf, 0) == SIZE_MAX);

    /* reset forgets the partial chunk: the same bytes again still make no cut */
    cs_chunker_reset(&c);
    for (size_t i = 0; i < len; i++)
        assert_true(cs_chunker_scan(&c, buf + i, 1) == SIZE_MAX);
}

RUN_TESTS(cmocka_unit_test(test_reference_table), cmocka_unit_test(test_known_answer_sekien),
          cmocka_unit_test(test_known_answer_sekien_more), cmocka_unit_test(test_all_zeros),
          cmocka_unit_test(test_streaming_pieces), cmocka_unit_test(test_keyed_table),
          cmocka_unit_test(test_keyed_table_known_answer),
          cmocka_unit_test(test_insertion_stability), cmocka_unit_test(test_params_check),
          cmocka_unit_test(test_short_stream))
