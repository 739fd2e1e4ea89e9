#include "chunkstore/read.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/endian.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/out-buf.h"

/* Reading the chunks of a group one after another needs one slot; a few more let readers
 * of neighbouring groups share. Reading a file that was backed up several times decodes,
 * around each position, the first backup's record and the delta records of later ones, whose
 * bases are near by: once a reader meets a delta record it uses enough slots to keep each
 * record decoded once. Buffers are allocated as slots are first used. */
#define RECORD_CACHE_SLOTS_PLAIN 4
/* A framed delta record (version 4) decodes only the members asked for, each against one base
 * stored whole: the record, the whole pages around it and their bases' records fit in a few
 * slots. Chained delta records (versions 2 and 3) need many. */
#define RECORD_CACHE_SLOTS_FRAMED 8
#define RECORD_CACHE_SLOTS 32
#define RECENT_LOOKUPS 8

typedef struct CachedRecord {
    bool is_valid;
    uint8_t depth; /* delta depth (writers keep chains short with it) */
    CsPackId pack;
    uint64_t record_off;
    uint32_t record_len; /* stored size: with plain.size, how well the record compressed */
    Buf plain;
    Buf members; /* the authenticated member list, CS_RECORD_MEMBER_SIZE bytes each */
    uint64_t last_use;
    unsigned pins; /* a member of it is being decoded: not to be evicted */
    /* A framed record: its decrypted frames, decoded into `plain` one member at a time. */
    bool is_framed;
    Buf frames;
    Buf bases;    /* the authenticated base list, one CS_SLICE_SIZE slice per member */
    Buf offsets;  /* uint32_t: frame offsets in `frames` (n + 1), then member offsets (n + 1) */
    Buf decoded;  /* bool per member */
} CachedRecord;

struct CsReader {
    CsRepo *repo;
    CsIndexReader *index;
    Buf raw; /* the encrypted record being decoded */
    void *zstd_dctx;
    CachedRecord cache[RECORD_CACHE_SLOTS];
    size_t n_slots; /* in use: RECORD_CACHE_SLOTS_PLAIN until a delta record is read */
    unsigned nesting; /* delta records being decoded, one inside the other */
    uint64_t clock;
    bool has_synced; /* the index was brought up to date with the packs once for a miss */
    /* The places of the chunks looked up last. Reading a snapshot with deltas alternates
     * between a few chunks (a run of whole pages, the deltas between its pages, and the run
     * again as their key): they are found again without the index. A place found here is
     * checked against the record's authenticated member list like any other. */
    struct {
        CsChunkId id;
        CsChunkLoc loc;
    } recent[RECENT_LOOKUPS];
    unsigned recent_next;
    CsBaseSource base_source; /* get == NULL: bases come from the record cache */
    /* Where the last chunk returned ends: files are mostly read in the order their chunks were
     * stored, so the next chunk asked for is usually the next member of the same record, found
     * without an index lookup. */
    struct {
        CachedRecord *rec; /* valid while it still holds the record below */
        CsPackId pack;
        uint64_t record_off;
        size_t next;  /* member index */
        uint64_t off; /* its offset in the plaintext */
    } seq;
};

struct CsContentIndex {
    CsChunkSlice *entries;
    uint64_t *offsets; /* offsets[i] = start of entry i; offsets[count] = size */
    size_t count;
};

int cs_reader_new(CsRepo *repo, CsReader **ret)
{
    _cleanup_free_ CsReader *rd = calloc(1, sizeof(*rd));
    if (!rd)
        return -ENOMEM;
    int r = cs_index_reader_begin(repo->index, &rd->index);
    if (r < 0)
        return r;
    rd->repo = repo;
    rd->n_slots = RECORD_CACHE_SLOTS_PLAIN;
    if (!(rd->zstd_dctx = cs_zstd_dctx_new())) {
        cs_index_reader_end(rd->index);
        return -ENOMEM;
    }
    *ret = TAKE_PTR(rd);
    return 0;
}

CsReader *cs_reader_free(CsReader *rd)
{
    if (!rd)
        return NULL;
    cs_index_reader_end(rd->index);
    cs_zstd_dctx_free(rd->zstd_dctx);
    buf_free(&rd->raw);
    for (size_t i = 0; i < RECORD_CACHE_SLOTS; i++) {
        CachedRecord *c = &rd->cache[i];
        buf_free(&c->plain);
        buf_free(&c->members);
        buf_free(&c->frames);
        buf_free(&c->bases);
        buf_free(&c->offsets);
        buf_free(&c->decoded);
    }
    free(rd);
    return NULL;
}

CsRepo *cs_reader_repo(const CsReader *rd)
{
    return rd->repo;
}

static int index_lookup(CsReader *rd, const CsChunkId *id, CsChunkLoc *loc);

static int lookup(CsReader *rd, const CsChunkId *id, CsChunkLoc *loc)
{
    for (unsigned i = 0; i < RECENT_LOOKUPS; i++)
        if (memcmp(rd->recent[i].id.bytes, id->bytes, CS_CHUNK_ID_SIZE) == 0 &&
            rd->recent[i].loc.record_len) {
            *loc = rd->recent[i].loc;
            return 0;
        }
    int r = index_lookup(rd, id, loc);
    if (r == 0) {
        unsigned k = rd->recent_next++ % RECENT_LOOKUPS;
        rd->recent[k].id = *id;
        rd->recent[k].loc = *loc;
    }
    return r;
}

static int index_lookup(CsReader *rd, const CsChunkId *id, CsChunkLoc *loc)
{
    int r = cs_index_reader_lookup(rd->index, id, loc);
    if (r == -ENOENT) {
        /* The read snapshot may predate a pack published since: look again on a fresh one. */
        if ((r = cs_index_reader_refresh(rd->index)) < 0)
            return r;
        r = cs_index_reader_lookup(rd->index, id, loc);
    }
    uint64_t n = 0;
    if (r == -ENOENT && !rd->has_synced) {
        /* A pack may be published but not indexed (a crash between the two): index what the
         * backend holds and look once more. Failure here only means the miss stands. */
        rd->has_synced = true;
        if (cs_repo_index_sync(rd->repo, false, &n) == 0 && n > 0 &&
            cs_index_reader_refresh(rd->index) == 0)
            r = cs_index_reader_lookup(rd->index, id, loc);
    }
    return r;
}

static CachedRecord *cache_find(CsReader *rd, const CsChunkLoc *loc)
{
    for (size_t i = 0; i < rd->n_slots; i++) {
        CachedRecord *c = &rd->cache[i];
        if (c->is_valid && c->record_off == loc->record_off &&
            memcmp(c->pack.bytes, loc->pack.bytes, CS_PACK_ID_SIZE) == 0)
            return c;
    }
    return NULL;
}

/* The least recently used slot that no decode in progress holds; NULL when every one is held
 * (a crafted nesting of framed records deeper than the cache). */
static CachedRecord *cache_victim(CsReader *rd)
{
    CachedRecord *victim = NULL;
    for (size_t i = 0; i < rd->n_slots; i++) {
        CachedRecord *c = &rd->cache[i];
        if (!c->is_valid)
            return c;
        if (!c->pins && (!victim || c->last_use < victim->last_use))
            victim = c;
    }
    return victim;
}

static void cache_use_slots(CsReader *rd, size_t n)
{
    rd->n_slots = MAX(rd->n_slots, n);
}

static int chunk_get(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n,
                     uint8_t *ret_depth);

/* A delta record's reference prefix: its bases' plaintexts in order. A base normally lives in a
 * shallower record, but the index may know a copy of it in another record (two writers stored
 * it at once), so the depth bytes are not trusted for termination: the nesting is bounded. */
static int load_prefix(CsReader *rd, const CsRecordInfo *in, Buf *prefix)
{
    if (rd->nesting >= CS_DELTA_MAX_NESTING)
        return -ELOOP;
    if (!buf_extend(prefix, in->prefix_len))
        return -ENOMEM;
    prefix->size = 0;
    rd->nesting++;
    for (size_t i = 0; i < in->n_bases; i++) {
        CsChunkSlice base = cs_record_base(in, i);
        const uint8_t *p;
        size_t n;
        int r = chunk_get(rd, &base.id, &p, &n, NULL);
        /* A whole-chunk base (before slices) must be exactly the chunk. */
        if (r == 0 && ((uint64_t)base.offset + base.length > n ||
                       (in->base_size == CS_RECORD_MEMBER_SIZE && base.length != n)))
            r = -EBADMSG;
        if (r < 0) {
            rd->nesting--;
            return r;
        }
        memcpy(prefix->data + prefix->size, p + base.offset, base.length);
        prefix->size += base.length;
    }
    rd->nesting--;
    return 0;
}

static void cache_fill(CsReader *rd, CachedRecord *c, const CsChunkLoc *loc, uint8_t depth)
{
    c->is_valid = true;
    c->depth = depth;
    c->pack = loc->pack;
    c->record_off = loc->record_off;
    c->record_len = loc->record_len;
    c->last_use = rd->clock;
}

static uint32_t *framed_offsets(const CachedRecord *c)
{
    return (uint32_t *)(void *)c->offsets.data;
}

/* A framed record gets its slot decrypted but not decoded: a member is decoded when it is
 * asked for (framed_member_ready), against its own base, so a read of one page never decodes
 * the bases of its neighbours. */
static int framed_open(CsReader *rd, const CsChunkLoc *loc, Buf *raw, CachedRecord **ret)
{
    uint8_t key[32];
    int r = cs_pack_key(rd->repo->keys.enc_key, &loc->pack, key);
    if (r < 0)
        return r;
    cache_use_slots(rd, RECORD_CACHE_SLOTS_FRAMED);
    CachedRecord *c = cache_victim(rd);
    if (!c)
        return -ELOOP;
    c->is_valid = false;
    CsRecordInfo in;
    if ((r = cs_record_open_framed(key, raw->data, raw->size, &c->frames, &in)) < 0)
        return r;
    size_t n = in.n_members;
    buf_clear(&c->members);
    buf_clear(&c->bases);
    buf_clear(&c->offsets);
    buf_clear(&c->decoded);
    buf_clear(&c->plain);
    if (buf_append(&c->members, in.members, n * CS_RECORD_MEMBER_SIZE) < 0 ||
        buf_append(&c->bases, in.bases, n * CS_SLICE_SIZE) < 0 ||
        !buf_extend(&c->offsets, 2 * (n + 1) * sizeof(uint32_t)) || !buf_extend(&c->decoded, n) ||
        !buf_extend(&c->plain, in.raw_len))
        return -ENOMEM;
    uint32_t *offs = framed_offsets(c), *member_off = offs + n + 1;
    if ((r = cs_frames_index(c->frames.data, c->frames.size, n, offs)) < 0)
        return r;
    member_off[0] = 0;
    for (size_t i = 0; i < n; i++)
        member_off[i + 1] = member_off[i] + get_le32(in.members + i * CS_RECORD_MEMBER_SIZE +
                                                     CS_CHUNK_ID_SIZE);
    memset(c->decoded.data, 0, n);
    cache_fill(rd, c, loc, in.depth);
    c->is_framed = true;
    *ret = c;
    return 0;
}

/* Decode member i of a framed record in place, unless it is decoded already. Its base is read
 * like any chunk (nested, bounded like a delta record's prefix); the slot is held meanwhile. */
static int framed_member_ready(CsReader *rd, CachedRecord *c, size_t i)
{
    if (!c->is_framed || c->decoded.data[i])
        return 0;
    if (rd->nesting >= CS_DELTA_MAX_NESTING)
        return -ELOOP;
    size_t n = c->members.size / CS_RECORD_MEMBER_SIZE;
    const uint32_t *offs = framed_offsets(c), *member_off = offs + n + 1;
    CsChunkSlice base = cs_slice_decode(c->bases.data + i * CS_SLICE_SIZE, true);
    const uint8_t *p;
    size_t len;
    void *pin = NULL;
    const CsBaseSource *src = &rd->base_source;
    c->pins++;
    rd->nesting++;
    int r = src->get ? src->get(src->userdata, rd, &base.id, &p, &len, &pin) : 1;
    if (r == 1)
        r = chunk_get(rd, &base.id, &p, &len, NULL);
    rd->nesting--;
    c->pins--;
    if (r == 0 && (uint64_t)base.offset + base.length > len)
        r = -EBADMSG;
    if (r == 0)
        r = cs_frame_decode(rd->zstd_dctx, c->frames.data + offs[i], offs[i + 1] - offs[i],
                            p + base.offset, base.length, c->plain.data + member_off[i],
                            member_off[i + 1] - member_off[i]);
    if (pin)
        src->put(src->userdata, pin);
    if (r < 0) {
        char name[CS_PACK_NAME_MAX], hex[2 * CS_CHUNK_ID_SIZE + 1];
        cs_pack_name(&c->pack, name);
        hex_encode(c->members.data + i * CS_RECORD_MEMBER_SIZE, CS_CHUNK_ID_SIZE, hex);
        log_error("chunk %s of the delta record at offset %llu of pack \"%s\" cannot be decoded "
                  "(its base is missing or damaged)",
                  hex, (unsigned long long)c->record_off, name);
        return r == -ENOENT || r == -ELOOP ? -EBADMSG : r;
    }
    c->decoded.data[i] = 1;
    return 0;
}

/* Read, check and decode one record into a cache slot. `raw` holds the encrypted record; bases
 * are loaded (recursively, each with its own buffer) before the record gets its slot. */
static int record_decode_into(CsReader *rd, const CsChunkLoc *loc, Buf *raw, CachedRecord **ret)
{
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&loc->pack, name);
    _cleanup_(buf_free) Buf prefix = BUF_INIT, payload = BUF_INIT;
    buf_clear(raw);
    /* The location comes from the index, a cache: its numbers size a buffer and a read only
     * within what the format allows. */
    if (loc->record_len < CS_RECORD_HEADER_SIZE + CS_RECORD_TRAILER_SIZE ||
        loc->record_len > CS_RECORD_MAX_SIZE || loc->record_off > (uint64_t)INT64_MAX - loc->record_len) {
        log_error("the index names a record of %u bytes at offset %llu of pack \"%s\": not a "
                  "record (the index is damaged; remove it and it is rebuilt from the packs)",
                  loc->record_len, (unsigned long long)loc->record_off, name);
        return -EBADMSG;
    }
    if (!buf_extend(raw, loc->record_len))
        return -ENOMEM;
    size_t got;
    int r = cs_backend_get_range(rd->repo->backend, name, loc->record_off, raw->data,
                                 loc->record_len, &got);
    if (r == 0 && got != loc->record_len)
        r = -EBADMSG;
    if (r < 0)
        return r;
    if (raw->size > 4 && (raw->data[4] & CS_RECORD_FLAG_FRAMED))
        return framed_open(rd, loc, raw, ret);
    uint8_t key[32];
    if ((r = cs_pack_key(rd->repo->keys.enc_key, &loc->pack, key)) < 0)
        return r;
    /* Authenticated before anything in it is acted on: a delta record's base list drives
     * reads of other records. */
    CsRecordInfo info;
    if ((r = cs_record_open(key, raw->data, raw->size, &payload, &info)) < 0)
        return r;
    if (info.flags & CS_RECORD_FLAG_DELTA) {
        cache_use_slots(rd, RECORD_CACHE_SLOTS);
        if ((r = load_prefix(rd, &info, &prefix)) < 0) {
            char hex[2 * CS_CHUNK_ID_SIZE + 1];
            hex_encode(info.members, CS_CHUNK_ID_SIZE, hex);
            log_error("a base of the delta record at offset %llu of pack \"%s\" (first chunk %s) "
                      "cannot be read",
                      (unsigned long long)loc->record_off, name, hex);
            return r == -ENOENT || r == -ELOOP ? -EBADMSG : r;
        }
    }
    CachedRecord *victim = cache_victim(rd);
    if (!victim)
        return -ELOOP;
    victim->is_valid = false;
    r = cs_record_expand(rd->zstd_dctx, &info, &payload, prefix.data, prefix.size,
                         &victim->plain);
    if (r < 0)
        return r;
    buf_clear(&victim->members);
    if ((r = buf_append(&victim->members, info.members, info.n_members * CS_RECORD_MEMBER_SIZE)) <
        0)
        return r;
    cache_fill(rd, victim, loc, info.depth);
    victim->is_framed = false;
    *ret = victim;
    return 0;
}

static int record_load(CsReader *rd, const CsChunkLoc *loc, CachedRecord **ret)
{
    rd->clock++;
    CachedRecord *hit = cache_find(rd, loc);
    if (hit) {
        hit->last_use = rd->clock;
        *ret = hit;
        return 0;
    }
    /* The reader's buffer is lent out for the duration, so a nested load (a base) gets its own
     * and the common case allocates nothing. */
    Buf raw = rd->raw;
    rd->raw = (Buf)BUF_INIT;
    int r = record_decode_into(rd, loc, &raw, ret);
    buf_free(&rd->raw);
    rd->raw = raw;
    return r;
}

/* The index is an unauthenticated cache: trust its location only if the record's authenticated
 * member list holds this id at exactly that offset and length. Returns the member's index, or
 * -1. */
static long record_member_at(const CachedRecord *rec, const CsChunkId *id, const CsChunkLoc *loc)
{
    long i = cs_member_at_offset(rec->members.data, rec->members.size / CS_RECORD_MEMBER_SIZE,
                                 loc->member_off);
    if (i < 0)
        return -1;
    const uint8_t *m = rec->members.data + (size_t)i * CS_RECORD_MEMBER_SIZE;
    bool is_it = get_le32(m + CS_CHUNK_ID_SIZE) == loc->length &&
                 memcmp(m, id->bytes, CS_CHUNK_ID_SIZE) == 0 &&
                 (uint64_t)loc->member_off + loc->length <= rec->plain.size;
    return is_it ? i : -1;
}

static void seq_set(CsReader *rd, CachedRecord *rec, size_t next, uint64_t off)
{
    rd->seq.rec = rec;
    rd->seq.pack = rec->pack;
    rd->seq.record_off = rec->record_off;
    rd->seq.next = next;
    rd->seq.off = off;
}

/* The chunk right after the last one returned, when that is the one asked for. The member list
 * is authenticated, so a matching id there is as good as the index's word. */
static bool seq_get(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n,
                    uint8_t *ret_depth)
{
    CachedRecord *rec = rd->seq.rec;
    if (!rec || !rec->is_valid || rec->record_off != rd->seq.record_off ||
        memcmp(rec->pack.bytes, rd->seq.pack.bytes, CS_PACK_ID_SIZE) != 0 ||
        rd->seq.next >= rec->members.size / CS_RECORD_MEMBER_SIZE)
        return false;
    size_t next = rd->seq.next;
    uint64_t off = rd->seq.off;
    const uint8_t *m = rec->members.data + next * CS_RECORD_MEMBER_SIZE;
    uint32_t len = get_le32(m + CS_CHUNK_ID_SIZE);
    if (memcmp(m, id->bytes, CS_CHUNK_ID_SIZE) != 0 || off + len > rec->plain.size)
        return false;
    /* On failure the full path below reports it. Decoding a member reads its base, which
     * moves the sequence: it is set again after. */
    if (framed_member_ready(rd, rec, next) < 0)
        return false;
    *ret_p = rec->plain.data + off;
    *ret_n = len;
    if (ret_depth)
        *ret_depth = rec->depth;
    rec->last_use = ++rd->clock;
    seq_set(rd, rec, next + 1, off + len);
    return true;
}

/* The record holding chunk `id` (in a cache slot) and the chunk's member index there, with its
 * place; a framed member is not decoded yet. Failures are logged. */
static int chunk_locate(CsReader *rd, const CsChunkId *id, CsChunkLoc *loc, CachedRecord **ret,
                        size_t *ret_member)
{
    char idhex[2 * CS_CHUNK_ID_SIZE + 1], name[CS_PACK_NAME_MAX];
    int r = lookup(rd, id, loc);
    if (r < 0) {
        hex_encode(id->bytes, CS_CHUNK_ID_SIZE, idhex);
        return log_error_errno(r, "chunk %s is missing from the index: %m", idhex);
    }
    r = record_load(rd, loc, ret);
    long member = r == 0 ? record_member_at(*ret, id, loc) : -1;
    if (r == 0 && member < 0)
        r = -EBADMSG;
    if (r == 0) {
        *ret_member = (size_t)member;
        return 0;
    }
    hex_encode(id->bytes, CS_CHUNK_ID_SIZE, idhex);
    cs_pack_name(&loc->pack, name);
    if (r == -EBADMSG)
        return log_error_errno(r, "chunk %s in pack \"%s\" (record at offset %llu) is damaged",
                               idhex, name, (unsigned long long)loc->record_off);
    return log_error_errno(r, "could not read chunk %s from pack \"%s\": %m", idhex, name);
}

static int chunk_get(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n,
                     uint8_t *ret_depth)
{
    if (seq_get(rd, id, ret_p, ret_n, ret_depth))
        return 0;
    CsChunkLoc loc;
    CachedRecord *rec;
    size_t member;
    int r = chunk_locate(rd, id, &loc, &rec, &member);
    if (r == 0)
        r = framed_member_ready(rd, rec, member);
    if (r < 0)
        return r;
    *ret_p = rec->plain.data + loc.member_off;
    *ret_n = loc.length;
    if (ret_depth)
        *ret_depth = rec->depth;
    seq_set(rd, rec, member + 1, loc.member_off + loc.length);
    return 0;
}

int cs_reader_delta_key(CsReader *rd, const CsChunkSlice *version, CsDeltaKey *ret)
{
    CsChunkLoc loc;
    CachedRecord *rec;
    size_t member;
    int r = chunk_locate(rd, &version->id, &loc, &rec, &member);
    if (r < 0)
        return r;
    if ((uint64_t)version->offset + version->length > loc.length)
        return -EBADMSG;
    CsChunkSlice key = *version;
    if (rec->is_framed) {
        /* A delta member is one page: its key is its base, when that is stored whole. */
        key = cs_slice_decode(rec->bases.data + member * CS_SLICE_SIZE, true);
        if (version->offset != 0 || version->length != loc.length ||
            key.length != version->length)
            return -EXDEV;
        if ((r = chunk_locate(rd, &key.id, &loc, &rec, &member)) < 0)
            return r;
        if ((uint64_t)key.offset + key.length > loc.length)
            return -EBADMSG;
    }
    if (rec->depth != 0)
        return -EXDEV; /* a chained delta (version 2 or 3) is no key */
    *ret = (CsDeltaKey){ .slice = key,
                         .p = rec->plain.data + loc.member_off + key.offset,
                         .stored_ratio = rec->plain.size ? (double)rec->record_len /
                                                               (double)rec->plain.size
                                                         : 1.0 };
    return 0;
}

void cs_reader_set_base_source(CsReader *rd, const CsBaseSource *src)
{
    rd->base_source = src ? *src : (CsBaseSource){ 0 };
}

bool cs_reader_record_is_framed(CsReader *rd, const CsChunkLoc *loc)
{
    CachedRecord *hit = cache_find(rd, loc);
    if (hit)
        return hit->is_framed;
    char name[CS_PACK_NAME_MAX];
    uint8_t h[5];
    size_t got;
    cs_pack_name(&loc->pack, name);
    return cs_backend_get_range(rd->repo->backend, name, loc->record_off, h, sizeof(h), &got) ==
                   0 &&
           got == sizeof(h) && get_le32(h) == CS_RECORD_MAGIC && (h[4] & CS_RECORD_FLAG_FRAMED);
}

int cs_reader_peek_members(CsReader *rd, const CsChunkLoc *loc, Buf *out, size_t *ret_index)
{
    buf_clear(out);
    CachedRecord *hit = cache_find(rd, loc);
    if (hit) {
        if (buf_append(out, hit->members.data, hit->members.size) < 0)
            return -ENOMEM;
    } else {
        char name[CS_PACK_NAME_MAX];
        cs_pack_name(&loc->pack, name);
        int r = cs_record_read_members(rd->repo->backend, name, loc->record_off, loc->record_len,
                                       out);
        if (r < 0)
            return r;
    }
    long i = cs_member_at_offset(out->data, out->size / CS_RECORD_MEMBER_SIZE, loc->member_off);
    if (i < 0)
        return -EBADMSG;
    *ret_index = (size_t)i;
    return 0;
}

int cs_reader_chunk(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n)
{
    return chunk_get(rd, id, ret_p, ret_n, NULL);
}

int cs_reader_chunk_take(CsReader *rd, const CsChunkId *id, uint8_t **ret, size_t *ret_n)
{
    const uint8_t *p;
    size_t n;
    int r = chunk_get(rd, id, &p, &n, NULL);
    if (r < 0)
        return r;
    /* chunk_get leaves seq.rec on the record it served the chunk from. */
    CachedRecord *rec = rd->seq.rec;
    if (rec && rec->is_valid && p == rec->plain.data && n == rec->plain.size && n > 0) {
        uint8_t *whole = rec->plain.data;
        if (rec->plain.capacity > n + n / 4) {
            /* A slot that once held a larger record: give back the slack (in place). */
            uint8_t *shrunk = realloc(whole, n);
            whole = shrunk ? shrunk : whole;
        }
        rec->plain = (Buf)BUF_INIT;
        rec->is_valid = false;
        rd->seq.rec = NULL;
        *ret = whole;
        *ret_n = n;
        return 0;
    }
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, p, n);
    *ret = copy;
    *ret_n = n;
    return 0;
}

int cs_reader_chunk_depth(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n,
                          uint8_t *ret_depth)
{
    return chunk_get(rd, id, ret_p, ret_n, ret_depth);
}

int cs_reader_chunk_length(CsReader *rd, const CsChunkId *id, uint32_t *ret)
{
    CsChunkLoc loc;
    int r = lookup(rd, id, &loc);
    if (r == 0)
        *ret = loc.length;
    return r;
}

int cs_reader_slice(CsReader *rd, const CsChunkSlice *e, const uint8_t **ret_p)
{
    const uint8_t *p;
    size_t n;
    int r = chunk_get(rd, &e->id, &p, &n, NULL);
    if (r < 0)
        return r;
    if ((uint64_t)e->offset + e->length > n) {
        char hex[2 * CS_CHUNK_ID_SIZE + 1];
        hex_encode(e->id.bytes, CS_CHUNK_ID_SIZE, hex);
        return log_error_errno(-EBADMSG,
                               "a content list names bytes %" PRIu32 "..%" PRIu64
                               " of chunk %s, which has %zu",
                               e->offset, (uint64_t)e->offset + e->length, hex, n);
    }
    *ret_p = p + e->offset;
    return 0;
}

int cs_reader_refresh(CsReader *rd)
{
    memset(rd->recent, 0, sizeof(rd->recent));
    return cs_index_reader_refresh(rd->index);
}

void cs_reader_pause(CsReader *rd)
{
    cs_index_reader_pause(rd->index);
}

static int list_append_from(const uint8_t *p, size_t n, size_t size, CsChunkSlice **v,
                            size_t *count, size_t *cap)
{
    if (n % size)
        return -EBADMSG;
    for (size_t off = 0; off < n; off += size) {
        if (GROW_ARRAY(*v, *cap, *count, 256) < 0)
            return -ENOMEM;
        (*v)[(*count)++] = cs_slice_decode(p + off, size == CS_SLICE_SIZE);
    }
    return 0;
}

int cs_reader_flatten(CsReader *rd, const CsContentRef *ref, CsContentRef *ret)
{
    size_t count = ref->count, cap = ref->count;
    size_t size = cs_slice_size(ref->has_slices);
    CsChunkSlice *v = malloc((cap ? cap : 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    if (count)
        memcpy(v, ref->entries, count * sizeof(*v));
    for (uint8_t level = ref->level; level > 0; level--) {
        CsChunkSlice *next = NULL;
        size_t n_next = 0, cap_next = 0;
        _cleanup_(buf_free) Buf pending = BUF_INIT; /* a list entry may straddle two chunks */
        int r = 0;
        for (size_t i = 0; r == 0 && i < count; i++) {
            const uint8_t *p;
            if ((r = cs_reader_slice(rd, &v[i], &p)) < 0)
                break;
            if ((r = buf_append(&pending, p, v[i].length)) < 0)
                break;
            size_t whole = pending.size - pending.size % size;
            r = list_append_from(pending.data, whole, size, &next, &n_next, &cap_next);
            memmove(pending.data, pending.data + whole, pending.size - whole);
            pending.size -= whole;
        }
        if (r == 0 && pending.size)
            r = -EBADMSG;
        free(v);
        if (r < 0) {
            free(next);
            return r;
        }
        v = next;
        count = n_next;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += v[i].length;
    if (total != ref->size) {
        free(v);
        return log_error_errno(-EBADMSG, "content list does not add up to its size");
    }
    *ret = (CsContentRef){ .size = ref->size, .level = 0, .has_slices = ref->has_slices,
                           .count = (uint32_t)count, .entries = v };
    return 0;
}

int cs_reader_read_all(CsReader *rd, const CsContentRef *ref, size_t max, Buf *out)
{
    if (ref->size > max)
        return -EFBIG;
    CsContentRef flat;
    int r = cs_reader_flatten(rd, ref, &flat);
    if (r < 0)
        return r;
    for (size_t i = 0; r == 0 && i < flat.count; i++) {
        const uint8_t *p;
        if ((r = cs_reader_slice(rd, &flat.entries[i], &p)) == 0)
            r = buf_append(out, p, flat.entries[i].length);
    }
    cs_content_ref_free(&flat);
    return r;
}

bool cs_chunk_is_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

int cs_reader_write_fd(CsReader *rd, const CsContentRef *ref, int fd, bool sparse)
{
    CsContentRef flat;
    int r = cs_reader_flatten(rd, ref, &flat);
    if (r < 0)
        return r;
    off_t pos = sparse ? lseek(fd, 0, SEEK_CUR) : 0;
    if (pos < 0)
        sparse = false;
    OutBuf out;
    if ((r = out_buf_init(&out, fd, false, sparse ? (uint64_t)pos : 0, OUT_BUF_WRITE_SIZE)) < 0) {
        cs_content_ref_free(&flat);
        return r;
    }
    for (size_t i = 0; r == 0 && i < flat.count; i++) {
        const uint8_t *p;
        size_t n = flat.entries[i].length;
        if ((r = cs_reader_slice(rd, &flat.entries[i], &p)) < 0)
            break;
        r = sparse && cs_chunk_is_zero(p, n) ? out_buf_skip(&out, n) : out_buf_add(&out, p, n);
    }
    if (r == 0)
        r = out_buf_flush(&out);
    if (r == 0 && sparse && ftruncate(fd, (off_t)out.off) < 0)
        r = -errno;
    out_buf_done(&out);
    cs_content_ref_free(&flat);
    return r;
}

int cs_content_index_new(CsReader *rd, const CsContentRef *ref, CsContentIndex **ret)
{
    _cleanup_free_ CsContentIndex *ci = calloc(1, sizeof(*ci));
    if (!ci)
        return -ENOMEM;
    CsContentRef flat;
    int r = cs_reader_flatten(rd, ref, &flat);
    if (r < 0)
        return r;
    ci->entries = flat.entries;
    ci->count = flat.count;
    if (!(ci->offsets = cs_content_ref_offsets(&flat))) {
        free(ci->entries);
        return -ENOMEM;
    }
    *ret = TAKE_PTR(ci);
    return 0;
}

CsContentIndex *cs_content_index_free(CsContentIndex *ci)
{
    if (ci) {
        free(ci->entries);
        free(ci->offsets);
        free(ci);
    }
    return NULL;
}

uint64_t cs_content_index_size(const CsContentIndex *ci)
{
    return ci->offsets[ci->count];
}

long cs_content_pread(CsReader *rd, const CsContentIndex *ci, void *buf, size_t n, uint64_t off)
{
    uint64_t size = cs_content_index_size(ci);
    if (off >= size || n == 0)
        return 0;
    n = (size_t)MIN((uint64_t)n, size - off);
    size_t lo = cs_offsets_find(ci->offsets, ci->count, off);
    size_t done = 0;
    for (size_t i = lo; done < n && i < ci->count; i++) {
        const uint8_t *p;
        size_t len = ci->entries[i].length;
        int r = cs_reader_slice(rd, &ci->entries[i], &p);
        if (r < 0)
            return r;
        uint64_t skip = off + done - ci->offsets[i];
        size_t k = (size_t)MIN((uint64_t)(n - done), len - skip);
        memcpy((uint8_t *)buf + done, p + skip, k);
        done += k;
    }
    return (long)done;
}
