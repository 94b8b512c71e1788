/*
 * manifest_fuzz.c - snapshot metadata decoding under hostile bytes.
 *
 * Every input is tried three ways:
 *  1. whole, as one manifest page, one reference-list page and one
 *     snapshot header (each decoder on its own);
 *  2. split into pages, each prefixed by a 16-bit little-endian length,
 *     served by a getter: page 0 is the root of a manifest and of a
 *     reference list, and the readers walk them to the end. The getter
 *     finds a page by its BLAKE2b-256 ID when one matches (so genuine
 *     trees, like the vectors in the corpus, walk whole) and otherwise
 *     serves page id[0] % n, so the fuzzer can wire pages together.
 * Any outcome but a crash, a leak or a sanitizer report is fine; the
 * decoders must never accept a tree that breaks its invariants, which the
 * unit tests check.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "coffer_format.pb-c.h"
#include "err.h"
#include "id.h"
#include "snap.h"
#include "tree.h"

#define MAX_PAGES 16

struct pages {
    const uint8_t *p[MAX_PAGES];
    size_t len[MAX_PAGES];
    uint8_t id[MAX_PAGES][32];
    size_t n;
};

static int
get_page(void *ctx, const uint8_t id[32], struct cfr_buf *page,
         struct cfr_err *err)
{
    const struct pages *pg = ctx;
    size_t i = id[0] % pg->n;
    for (size_t k = 0; k < pg->n; k++) {
        if (memcmp(pg->id[k], id, 32) == 0) {
            i = k;
            break;
        }
    }
    return cfr_buf_append(page, pg->p[i], pg->len[i], err);
}

/* The root a header would name for page 0: its level and its count. */
static void
root_of(const struct pages *pg, bool manifest, struct cfr_tree_root *root)
{
    struct cfr_err err;
    uint32_t level = 0;
    size_t count = 0;
    memset(root, 0, sizeof(*root));
    memcpy(root->id, pg->id[0], 32);
    int rc = manifest ? cfr_snap_manifest_page_check(pg->p[0], pg->len[0],
                                                     &level, &count, &err)
                      : cfr_snap_refs_page_check(pg->p[0], pg->len[0], &level,
                                                 &count, &err);
    root->height = rc == 0 ? level + 1 : 1;
    root->entries = count;
    if (rc != 0 || level == 0) {
        return;
    }
    /* An inner root: the entries below it are the sum its children say. */
    Coffer__V1__ManifestPage *m =
        coffer__v1__manifest_page__unpack(NULL, pg->len[0], pg->p[0]);
    if (m == NULL) {
        return;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n_children; i++) {
        sum += m->children[i]->entries;
    }
    root->entries = sum;
    coffer__v1__manifest_page__free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfr_err err;
    uint32_t level;
    size_t count;
    struct cfr_snap_header h;

    (void)cfr_snap_manifest_page_check(data, size, &level, &count, &err);
    (void)cfr_snap_refs_page_check(data, size, &level, &count, &err);
    (void)cfr_snap_header_decode(data, size, &h, &err);

    struct pages pg;
    memset(&pg, 0, sizeof(pg));
    size_t pos = 0;
    while (pg.n < MAX_PAGES && size - pos >= 2) {
        size_t len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
        pos += 2;
        if (len > size - pos) {
            len = size - pos;
        }
        pg.p[pg.n] = data + pos;
        pg.len[pg.n] = len;
        cfr_id_plain(data + pos, len, pg.id[pg.n]);
        pg.n++;
        pos += len;
    }
    if (pg.n == 0) {
        return 0;
    }

    struct cfr_tree_root root;
    root_of(&pg, true, &root);
    struct cfr_snap_manifest_reader *mr = NULL;
    struct cfr_snap_entry e;
    if (cfr_snap_manifest_reader_new(get_page, &pg, &root, &mr, &err) == 0) {
        /* Bounded: every entry read is one the input spelled out. */
        while (cfr_snap_manifest_reader_next(mr, &e, &err) == 1) {
        }
    }
    cfr_snap_manifest_reader_free(mr);

    root_of(&pg, false, &root);
    struct cfr_snap_refs_reader *rr = NULL;
    uint8_t id[32];
    if (cfr_snap_refs_reader_new(get_page, &pg, &root, &rr, &err) == 0) {
        while (cfr_snap_refs_reader_next(rr, id, &err) == 1) {
        }
    }
    cfr_snap_refs_reader_free(rr);
    return 0;
}
