/*
 * How to keep compression ratio on small (page-sized) chunks: compare, on the pages of real
 * files, (1) each page compressed alone, (2) each page compressed with a zstd dictionary
 * trained on a sample of the pages, (3) pages compressed in groups of GROUP bytes (what the
 * repository does). Prints compressed sizes and the ratio to the input.
 *
 * usage: bench-smallchunks PAGE_SIZE GROUP_SIZE LEVEL FILE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZDICT_STATIC_LINKING_ONLY
#include <zdict.h>
#include <zstd.h>

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s PAGE_SIZE GROUP_SIZE LEVEL FILE...\n", argv[0]);
        return 64;
    }
    size_t page = strtoul(argv[1], NULL, 10), group = strtoul(argv[2], NULL, 10);
    int level = atoi(argv[3]);
    size_t total = 0, cap = 0;
    unsigned char *all = NULL;
    for (int i = 4; i < argc; i++) {
        size_t n;
        unsigned char *p = slurp(argv[i], &n);
        if (!p)
            continue;
        n -= n % page;
        if (total + n > cap) {
            cap = (total + n) * 2;
            all = realloc(all, cap);
        }
        memcpy(all + total, p, n);
        total += n;
        free(p);
    }
    size_t pages = total / page;
    if (pages == 0) {
        fprintf(stderr, "no whole pages in the input\n");
        return 1;
    }
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t bound = ZSTD_compressBound(group > page ? group : page);
    unsigned char *out = malloc(bound);
    size_t alone = 0, grouped = 0, dicted = 0;
    for (size_t i = 0; i < pages; i++)
        alone += ZSTD_compressCCtx(cctx, out, bound, all + i * page, page, level);
    for (size_t off = 0; off < total; off += group) {
        size_t n = total - off < group ? total - off : group;
        grouped += ZSTD_compressCCtx(cctx, out, bound, all + off, n, level);
    }
    /* Train on every 10th page (as a repository would train on a sample), 112 KiB dictionary. */
    size_t sample_n = pages / 10 ? pages / 10 : 1, dict_cap = 112 * 1024;
    size_t *sizes = malloc(sample_n * sizeof(*sizes));
    unsigned char *samples = malloc(sample_n * page), *dict = malloc(dict_cap);
    for (size_t i = 0; i < sample_n; i++) {
        memcpy(samples + i * page, all + (i * 10 % pages) * page, page);
        sizes[i] = page;
    }
    size_t dict_len = ZDICT_trainFromBuffer(dict, dict_cap, samples, sizes, (unsigned)sample_n);
    if (ZDICT_isError(dict_len)) {
        fprintf(stderr, "dictionary training failed: %s\n", ZDICT_getErrorName(dict_len));
        dicted = 0;
    } else {
        ZSTD_CDict *cd = ZSTD_createCDict(dict, dict_len, level);
        for (size_t i = 0; i < pages; i++)
            dicted += ZSTD_compress_usingCDict(cctx, out, bound, all + i * page, page, cd);
        ZSTD_freeCDict(cd);
    }
    printf("input %zu bytes in %zu pages of %zu, zstd level %d\n", total, pages, page, level);
    printf("  each page alone          %12zu bytes  ratio %.3f\n", alone, (double)alone / total);
    if (dicted)
        printf("  each page + %zu B dict %12zu bytes  ratio %.3f\n", dict_len, dicted + dict_len,
               (double)(dicted + dict_len) / total);
    printf("  groups of %zu bytes    %12zu bytes  ratio %.3f\n", group, grouped,
           (double)grouped / total);
    return 0;
}
