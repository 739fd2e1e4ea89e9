#include "agent/pagecheck.h"

#include <stdio.h>
#include <string.h>

/* Pages are in the host's byte order (see the header), so fields are loaded natively. */
static inline uint16_t load16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* ---- the page header ---- */

#define PD_CHECKSUM_OFFSET 8
#define PD_VALID_FLAG_BITS 0x0007 /* PD_HAS_FREE_LINES | PD_PAGE_FULL | PD_ALL_VISIBLE */
#define PAGE_MAXALIGN      8      /* MAXIMUM_ALIGNOF on every 64-bit platform */

void agent_page_header_parse(const uint8_t *page, AgentPageHeader *ret)
{
    *ret = (AgentPageHeader){
        .lsn = agent_page_lsn(page),
        .checksum = load16(page + PD_CHECKSUM_OFFSET),
        .flags = load16(page + 10),
        .lower = load16(page + 12),
        .upper = load16(page + 14),
        .special = load16(page + 16),
        .pagesize_version = load16(page + 18),
        .prune_xid = load32(page + 20),
    };
}

uint64_t agent_page_lsn(const uint8_t *page)
{
    /* PageXLogRecPtr is two uint32s (xlogid, xrecoff) for historical reasons, not a uint64:
     * each half is in host order, but the high half comes first on every host. */
    return (uint64_t)load32(page) << 32 | load32(page + 4);
}

/* ---- checksum (checksum_impl.h) ----
 *
 * The page is a 64 x 32 matrix of uint32 words. Each of the 32 columns ("lanes") is folded
 * into its own FNV-1a-like sum, mixed with two more rounds of zero, and the lanes are xored
 * together. The lanes are independent, which is what lets the compiler turn the inner loop
 * into 32-bit vector multiplies: the number of lanes is part of the algorithm, so changing it
 * would change every checksum. */

#define N_LANES   32
#define N_ROWS    (AGENT_PAGE_SIZE / (sizeof(uint32_t) * N_LANES))
#define ROW_BYTES (sizeof(uint32_t) * N_LANES)
#define FNV_PRIME 16777619u

/* checksumBaseOffsets: random starting points, one per lane, so that the lanes differ. */
static const uint32_t checksum_base_offsets[N_LANES] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
};

/* CHECKSUM_COMP: FNV-1a's multiply, plus the xor of the high bits shifted down by 17 that
 * PostgreSQL adds because plain FNV-1a never carries high input bits into low output bits. */
static inline uint32_t checksum_comp(uint32_t sum, uint32_t value)
{
    uint32_t t = sum ^ value;
    return t * FNV_PRIME ^ (t >> 17);
}

/* Unrolled in full, so that the sums stay in vector registers from row to row: at -O2 GCC
 * otherwise vectorizes the loop but stores the sums back to memory after every row, which
 * halves the speed on data in cache. */
static inline void checksum_row(uint32_t *restrict sums, const uint8_t *restrict row)
{
    _Pragma("GCC unroll 32")
    for (size_t j = 0; j < N_LANES; j++)
        sums[j] = checksum_comp(sums[j], load32(row + j * sizeof(uint32_t)));
}

/*
 * The x86-64 baseline (SSE2) has no 32-bit vector multiply, so the compiler emulates it with
 * 64-bit multiplies and shuffles; an AVX2 clone, picked once at load time through an ifunc,
 * has vpmulld. Measured on one core at -O2 over pages in cache: 11 GB/s with SSE2, 53 GB/s
 * with AVX2 (over 64 MiB, memory bound, 24 GB/s); without vectorization under 4 GB/s.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__has_attribute)
#if __has_attribute(target_clones)
/* GCC only: clang 14 names the dispatcher "agent_page_checksum.ifunc", which other
 * translation units cannot link to. */
#define CHECKSUM_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef CHECKSUM_CLONES
#define CHECKSUM_CLONES
#endif

CHECKSUM_CLONES
uint16_t agent_page_checksum(const uint8_t *page, uint32_t blkno)
{
    uint32_t sums[N_LANES];
    uint8_t first[ROW_BYTES];
    uint32_t checksum = 0;

    memcpy(sums, checksum_base_offsets, sizeof(sums));
    /* pg_checksum_page() zeroes pd_checksum while it sums; the page is const here, so the
     * first row is summed from a copy with those two bytes cleared. */
    memcpy(first, page, sizeof(first));
    first[PD_CHECKSUM_OFFSET] = first[PD_CHECKSUM_OFFSET + 1] = 0;
    checksum_row(sums, first);
    for (size_t i = 1; i < N_ROWS; i++)
        checksum_row(sums, page + i * ROW_BYTES);

    /* Two rounds of zeros, so that the last words get mixed as well as the others. */
    for (int round = 0; round < 2; round++)
        for (size_t j = 0; j < N_LANES; j++)
            sums[j] = checksum_comp(sums[j], 0);
    for (size_t j = 0; j < N_LANES; j++)
        checksum ^= sums[j];

    /* The block number catches a page written to the wrong place (mostly: it is xored in
     * before the reduction, and 2^16 is 1 modulo 65535, so block 2 and block 131072 can
     * share a checksum). The offset of one keeps a checksum from ever being 0. */
    checksum ^= blkno;
    return (uint16_t)(checksum % 65535 + 1);
}

/* ---- verdict ---- */

static bool page_is_zero(const uint8_t *page)
{
    for (size_t i = 0; i < AGENT_PAGE_SIZE; i += sizeof(uint64_t)) {
        uint64_t w;
        memcpy(&w, page + i, sizeof(w));
        if (w != 0)
            return false;
    }
    return true;
}

/*
 * PageIsVerifiedExtended()'s header_sane test, plus pd_lower >= SizeOfPageHeaderData, which
 * PageIsVerifiedExtended() leaves out but PageAddItemExtended() and PageRepairFragmentation()
 * report as "corrupted page pointers": PageInit() never sets pd_lower lower than that.
 */
static bool header_is_sane(const AgentPageHeader *h)
{
    return (h->flags & ~PD_VALID_FLAG_BITS) == 0 && h->lower >= AGENT_PAGE_HEADER_SIZE &&
           h->lower <= h->upper && h->upper <= h->special && h->special <= AGENT_PAGE_SIZE &&
           h->special % PAGE_MAXALIGN == 0;
}

const char *agent_page_verdict_to_string(AgentPageVerdict v)
{
    switch (v) {
    case AGENT_PAGE_OK: return "ok";
    case AGENT_PAGE_NEW: return "new";
    case AGENT_PAGE_SKIPPED_NEWER: return "skipped (newer than backup start)";
    case AGENT_PAGE_CORRUPT_CHECKSUM: return "checksum mismatch";
    case AGENT_PAGE_CORRUPT_HEADER: return "invalid header";
    default: return "unknown";
    }
}

AgentPageVerdict agent_page_verify(const uint8_t *page, uint32_t blkno, uint64_t backup_start_lsn,
                                   AgentPageChecksums *ret)
{
    AgentPageHeader h;
    AgentPageChecksums sums;

    agent_page_header_parse(page, &h);
    sums = (AgentPageChecksums){ .stored = h.checksum };
    if (ret)
        *ret = sums;

    /* PageIsNew() is pd_upper == 0. pg_basebackup skips such pages unread; PageIsVerified()
     * accepts them only when all zeros, and so do we: pd_upper is 0 only until PageInit(),
     * and PostgreSQL writes such a page only as zeros, when it extends a relation. */
    if (h.upper == 0 && page_is_zero(page))
        return AGENT_PAGE_NEW;

    /* basebackup.c checks only pages with an LSN before the backup's start: one written
     * since may be torn, and replay restores it from the full-page image that the first
     * change after the start's checkpoint logs (backups force full_page_writes). */
    if (backup_start_lsn != 0 && h.lsn >= backup_start_lsn)
        return AGENT_PAGE_SKIPPED_NEWER;

    /* Not all zeros, yet "new": PageIsVerified() rejects it. Its checksum is not computed,
     * as pg_checksum_page() asserts !PageIsNew(). */
    if (h.upper == 0)
        return AGENT_PAGE_CORRUPT_HEADER;

    sums.computed = agent_page_checksum(page, blkno);
    if (ret)
        *ret = sums;
    /* The checksum first: a damaged page usually fails it, and a wrong checksum says more
     * than a header that merely looks odd. */
    if (sums.computed != sums.stored)
        return AGENT_PAGE_CORRUPT_CHECKSUM;
    if (!header_is_sane(&h))
        return AGENT_PAGE_CORRUPT_HEADER;
    return AGENT_PAGE_OK;
}

/* ---- a buffer of pages ---- */

static void count_verdict(AgentPageCheckStats *stats, AgentPageVerdict v)
{
    switch (v) {
    case AGENT_PAGE_OK: stats->verified++; break;
    case AGENT_PAGE_NEW: stats->new_pages++; break;
    case AGENT_PAGE_SKIPPED_NEWER: stats->skipped++; break;
    default: stats->bad++; break;
    }
}

size_t agent_pages_verify(const uint8_t *p, size_t n, uint64_t file_offset, uint32_t first_block,
                          uint64_t start_lsn, AgentPageCheckStats *stats, AgentPageBadFn on_bad,
                          void *userdata)
{
    size_t head = (size_t)((AGENT_PAGE_SIZE - file_offset % AGENT_PAGE_SIZE) % AGENT_PAGE_SIZE);
    size_t bad = 0, i;

    /* The tail of a page that began in the previous buffer: the caller's buffers are not
     * page-aligned, and this piece cannot be verified alone. */
    if (head > 0) {
        head = head < n ? head : n;
        stats->partial++;
        stats->partial_bytes += head;
    }
    for (i = head; n - i >= AGENT_PAGE_SIZE; i += AGENT_PAGE_SIZE) {
        uint64_t off = file_offset + i;
        /* BlockNumber arithmetic is 32-bit in PostgreSQL as well (blkno + segno * RELSEG_SIZE). */
        uint32_t blkno = first_block + (uint32_t)(off / AGENT_PAGE_SIZE);
        AgentPageBad b = { .blkno = blkno, .file_offset = off };

        b.verdict = agent_page_verify(p + i, blkno, start_lsn, &b.sums);
        if (agent_page_verdict_is_bad(b.verdict) && on_bad)
            b.verdict = on_bad(&b, userdata);
        count_verdict(stats, b.verdict);
        if (agent_page_verdict_is_bad(b.verdict))
            bad++;
    }
    /* A file whose size is not a multiple of the page size (being extended, or not a relation
     * file after all), or a buffer that ends inside a page. */
    if (i < n) {
        stats->partial++;
        stats->partial_bytes += n - i;
    }
    return bad;
}

/* ---- relation file names ---- */

static const char *const fork_names[_AGENT_FORK_MAX] = {
    [AGENT_FORK_MAIN] = "main",
    [AGENT_FORK_FSM] = "fsm",
    [AGENT_FORK_VM] = "vm",
    [AGENT_FORK_INIT] = "init",
};

const char *agent_relfork_to_string(AgentRelFork fork)
{
    return (unsigned)fork < _AGENT_FORK_MAX ? fork_names[fork] : "unknown";
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Number of digits at s (0 if none). */
static size_t span_digits(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    return n;
}

/* A decimal number at s as PostgreSQL prints it with %u: 1 .. 10 digits, no leading zero
 * unless it is "0", at most UINT32_MAX. Returns the digits consumed, 0 if none would do. */
static size_t parse_u32(const char *s, uint32_t *ret)
{
    size_t n = span_digits(s);
    uint64_t v = 0;

    if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
        return 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > UINT32_MAX)
        return 0;
    *ret = (uint32_t)v;
    return n;
}

/* forkname_chars(): the fork name after a '_' at s, as "_main" is never written, only
 * fsm, vm and init count. Returns its length, 0 if none. */
static size_t parse_fork(const char *s, AgentRelFork *ret)
{
    for (AgentRelFork f = AGENT_FORK_FSM; f < _AGENT_FORK_MAX; f++) {
        size_t len = strlen(fork_names[f]);
        if (strncmp(s, fork_names[f], len) == 0) {
            *ret = f;
            return len;
        }
    }
    return 0;
}

bool agent_relfile_parse(const char *name, AgentRelFile *ret)
{
    AgentRelFile f = { .fork = AGENT_FORK_MAIN };
    const char *s = name;
    size_t len;

    /* Stricter than parse_filename_for_nontemp_relation() in the numbers (no leading zero,
     * in range): such names are not PostgreSQL's, and a file we do not recognise is still
     * backed up, only not verified. pg_basebackup refuses segment 0 the same way. */
    len = parse_u32(s, &f.relfilenode);
    if (len == 0 || f.relfilenode == 0)
        return false;
    s += len;
    if (*s == '_') {
        len = parse_fork(s + 1, &f.fork);
        if (len == 0)
            return false;
        s += 1 + len;
    }
    if (*s == '.') {
        len = parse_u32(s + 1, &f.segno);
        if (len == 0 || f.segno == 0 || f.segno > AGENT_RELSEG_MAX)
            return false;
        s += 1 + len;
    }
    if (*s != '\0')
        return false;
    *ret = f;
    return true;
}

bool agent_relfile_is_temp(const char *name)
{
    /* looks_like_temp_rel_name(), which is lax about the numbers: any non-empty digits. */
    AgentRelFork fork;
    const char *s = name;
    size_t len;

    if (*s++ != 't')
        return false;
    len = span_digits(s);
    if (len == 0 || s[len] != '_')
        return false;
    s += len + 1;
    len = span_digits(s);
    if (len == 0)
        return false;
    s += len;
    if (*s == '_') {
        len = parse_fork(s + 1, &fork);
        if (len == 0)
            return false;
        s += 1 + len;
    }
    if (*s == '.') {
        len = span_digits(s + 1);
        if (len == 0)
            return false;
        s += 1 + len;
    }
    return *s == '\0';
}

void agent_relfile_name(const AgentRelFile *f, char out[AGENT_RELFILE_NAME_MAX])
{
    int k = snprintf(out, AGENT_RELFILE_NAME_MAX, "%u", f->relfilenode);
    if (f->fork != AGENT_FORK_MAIN)
        k += snprintf(out + k, AGENT_RELFILE_NAME_MAX - (size_t)k, "_%s",
                      agent_relfork_to_string(f->fork));
    if (f->segno)
        snprintf(out + k, AGENT_RELFILE_NAME_MAX - (size_t)k, ".%u", f->segno);
}

uint32_t agent_relfile_first_block(const AgentRelFile *f)
{
    return f->segno * AGENT_RELSEG_BLOCKS;
}
