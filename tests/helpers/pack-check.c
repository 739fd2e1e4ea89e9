/*
 * pack-check REPO [PACK...]: check pack files of a local repository without a key.
 *
 * For every pack (the names given, relative to REPO like "packs/ab/ab...ef.pack", or every
 * file under packs/ when none is given): the trailer must read (cs_pack_read_trailer), the id
 * in the header must match the file name, and every record the trailer points to must pass
 * cs_record_verify (framing and xxh3). Prints "ok NAME (N chunks, M records)" or
 * "damaged NAME: reason" per pack, a line counting the records by kind ("records: P plain,
 * C chained delta (deepest D), F framed delta (deepest E)") and a summary line; exits 1 if any
 * pack is damaged, 2 on usage or I/O errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/backend.h"
#include "chunkstore/pack.h"

typedef struct Ctx {
    CsBackend *b;
    unsigned ok, damaged;
    unsigned long plain, chained, framed;
    unsigned chained_depth, framed_depth; /* the deepest seen */
} Ctx;

static void count_kind(Ctx *ctx, const uint8_t *rec, size_t len)
{
    CsRecordInfo in;
    if (cs_record_info(rec, len, &in) < 0)
        return;
    if (in.flags & CS_RECORD_FLAG_FRAMED) {
        ctx->framed++;
        ctx->framed_depth = in.depth > ctx->framed_depth ? in.depth : ctx->framed_depth;
    } else if (in.flags & CS_RECORD_FLAG_DELTA) {
        ctx->chained++;
        ctx->chained_depth = in.depth > ctx->chained_depth ? in.depth : ctx->chained_depth;
    } else
        ctx->plain++;
}

static int check_one(Ctx *ctx, const char *name)
{
    CsPackId name_id, id;
    CsPackEntry *entries = NULL;
    size_t n = 0;
    if (cs_pack_name_parse(name, &name_id) < 0) {
        printf("damaged %s: not a pack name\n", name);
        ctx->damaged++;
        return 0;
    }
    int r = cs_pack_read_trailer(ctx->b, name, &id, &entries, &n);
    if (r < 0) {
        printf("damaged %s: trailer: %s\n", name, strerror(-r));
        ctx->damaged++;
        return 0;
    }
    if (memcmp(id.bytes, name_id.bytes, CS_PACK_ID_SIZE) != 0) {
        printf("damaged %s: header id does not match the name\n", name);
        ctx->damaged++;
        free(entries);
        return 0;
    }
    /* Entries of one record share record_off; verify each record once. */
    unsigned records = 0;
    uint64_t last_off = UINT64_MAX;
    uint8_t *rec = NULL;
    for (size_t i = 0; i < n && r == 0; i++) {
        const CsChunkLoc *loc = &entries[i].loc;
        if (loc->record_off == last_off)
            continue;
        last_off = loc->record_off;
        uint8_t *p = realloc(rec, loc->record_len ? loc->record_len : 1);
        if (!p) {
            r = -ENOMEM;
            break;
        }
        rec = p;
        size_t got = 0;
        r = cs_backend_get_range(ctx->b, name, loc->record_off, rec, loc->record_len, &got);
        if (r == 0 && got != loc->record_len)
            r = -EBADMSG;
        if (r == 0)
            r = cs_record_verify(rec, loc->record_len);
        if (r == 0)
            count_kind(ctx, rec, loc->record_len);
        if (r < 0)
            printf("damaged %s: record at offset %llu: %s\n", name,
                   (unsigned long long)loc->record_off, strerror(-r));
        records++;
    }
    free(rec);
    free(entries);
    if (r < 0) {
        ctx->damaged++;
        return r == -ENOMEM ? r : 0;
    }
    printf("ok %s (%zu chunks, %u records)\n", name, n, records);
    ctx->ok++;
    return 0;
}

static int list_fn(const char *name, uint64_t size, void *userdata)
{
    (void)size;
    return check_one(userdata, name);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pack-check REPO [PACK...]\n");
        return 2;
    }
    Ctx ctx = { 0 };
    int r = cs_backend_local_open(argv[1], false, &ctx.b);
    if (r < 0) {
        fprintf(stderr, "pack-check: cannot open %s: %s\n", argv[1], strerror(-r));
        return 2;
    }
    if (argc == 2)
        r = cs_backend_list(ctx.b, "packs/", list_fn, &ctx);
    for (int i = 2; r == 0 && i < argc; i++)
        r = check_one(&ctx, argv[i]);
    cs_backend_free(ctx.b);
    if (r < 0) {
        fprintf(stderr, "pack-check: %s\n", strerror(-r));
        return 2;
    }
    printf("records: %lu plain, %lu chained delta (deepest %u), %lu framed delta (deepest %u)\n",
           ctx.plain, ctx.chained, ctx.chained_depth, ctx.framed, ctx.framed_depth);
    printf("%u packs ok, %u damaged\n", ctx.ok, ctx.damaged);
    return ctx.damaged ? 1 : 0;
}
