/*
 * The full-page images of a PostgreSQL 15 WAL segment (agent/wal-images.h):
 * agent_wal_images_find reads the records of a segment that `pitr-agent` and a tree store
 * are given, and agent_wal_image_page puts an image back together.
 *
 * Input: the first bytes of a segment (the parser takes any length).
 *
 * Promises checked: no crash, leak or undefined behaviour; every image's pieces lie inside
 * the segment, in order, and add up to the page less its hole.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/wal-images.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    AgentWalImage *images = NULL;
    size_t n = 0;
    if (agent_wal_images_find(data, size, &images, &n) < 0)
        return 0;
    FUZZ_CHECK(n == 0 || images);
    static uint8_t page[AGENT_WAL_PAGE_SIZE];
    for (size_t i = 0; i < n; i++) {
        const AgentWalImage *im = &images[i];
        FUZZ_CHECK(im->n_pieces >= 1 && im->n_pieces <= AGENT_WAL_IMAGE_PIECES);
        uint64_t total = 0, end = 0;
        for (size_t k = 0; k < im->n_pieces; k++) {
            const AgentWalPiece *p = &im->pieces[k];
            FUZZ_CHECK((uint64_t)p->off + p->len <= size);
            FUZZ_CHECK(p->off >= end);
            end = (uint64_t)p->off + p->len;
            total += p->len;
        }
        FUZZ_CHECK((uint64_t)im->hole_offset + im->hole_length <= AGENT_WAL_PAGE_SIZE);
        FUZZ_CHECK(total + im->hole_length == AGENT_WAL_PAGE_SIZE);
        agent_wal_image_page(data, im, page);
    }
    free(images);
    return 0;
}
