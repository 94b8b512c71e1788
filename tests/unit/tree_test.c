/*
 * tree_test.c - the generic page tree: the boundary hash, parameter and
 * wire checks, page layout, limits, and the locality of insertions.
 * Manifest- and reference-specific behaviour is in snap_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "coffer_format.pb-c.h"
#include "err.h"
#include "tree.h"

/* Records every page: level, bytes, and an ID that is its index. */
struct rec {
    uint32_t level[4096];
    uint8_t *page[4096];
    size_t len[4096];
    size_t n;
};

static int
rec_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
        uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct rec *r = ctx;
    if (r->n == 4096) {
        return CFR_ERR(err, CFR_ELIMIT, "test store full");
    }
    r->level[r->n] = level;
    r->page[r->n] = malloc(len + 1);
    memcpy(r->page[r->n], page, len);
    r->len[r->n] = len;
    memset(id_r, 0, CFR_TREE_ID_LEN);
    cfr_put_le64(id_r, r->n + 1);
    r->n++;
    return 0;
}

static void
rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->page[i]);
    }
    r->n = 0;
}

static void
params(struct cfr_tree_params *p)
{
    memset(p, 0, sizeof(*p));
    p->leaf_target = 16;
    p->leaf_min = 4;
    p->leaf_max = 64;
    p->inner_target = 8;
    p->inner_min = 2;
    p->inner_max = 32;
    p->page_bytes = 64 * 1024;
}

static const struct cfr_tree_layout packed = {CFR_TREE_LEAF_PACKED, false};
static const struct cfr_tree_layout records = {CFR_TREE_LEAF_RECORDS, true};

/* Key i: 8 bytes, big-endian, so numeric order is key order. */
static void
key_of(uint64_t i, uint8_t k[8])
{
    for (int b = 7; b >= 0; b--) {
        k[b] = (uint8_t)i;
        i >>= 8;
    }
}

static void
build(struct rec *r, const struct cfr_tree_layout *layout,
      const struct cfr_tree_params *p, uint64_t n, uint64_t skip,
      struct cfr_tree_root *root)
{
    struct cfr_tree_builder *b;
    struct cfr_err err;
    uint8_t k[8];
    assert_int_equal(cfr_tree_builder_new(p, layout, rec_put, r, &b, &err), 0);
    for (uint64_t i = 0; i < n; i++) {
        if (i == skip) {
            continue;
        }
        key_of(i * 2, k);
        assert_int_equal(cfr_tree_builder_add(b, k, 8, k, 8, &err), 0);
    }
    assert_int_equal(cfr_tree_builder_finish(b, root, &err), 0);
    cfr_tree_builder_free(b);
}

static void
test_tree_hash_is_frozen(void **state)
{
    (void)state;
    /* Boundaries are part of the format: these values must never move. */
    assert_true(cfr_tree_hash(0, "", 0) == UINT64_C(0xcc9906237c04c32a));
    assert_true(cfr_tree_hash(0, "abc", 3) == UINT64_C(0xd84ebb63a1f57bf2));
    assert_true(cfr_tree_hash(1, "abc", 3) != cfr_tree_hash(0, "abc", 3));
    /* Length is mixed in: a trailing NUL is another key. */
    assert_true(cfr_tree_hash(0, "abc\0", 4) != cfr_tree_hash(0, "abc", 3));
    /* Roughly uniform: 1 in 16 of 64k keys hit 0 mod 16. */
    unsigned hits = 0;
    uint8_t k[8];
    for (uint64_t i = 0; i < 65536; i++) {
        key_of(i, k);
        hits += cfr_tree_hash(0, k, 8) % 16 == 0;
    }
    assert_in_range(hits, 4096 - 300, 4096 + 300);
}

static void
test_tree_params_check(void **state)
{
    (void)state;
    struct cfr_tree_params p;
    struct cfr_err err;
    params(&p);
    assert_int_equal(cfr_tree_params_check(&p, &err), 0);
    p.leaf_target = 0;
    assert_int_equal(cfr_tree_params_check(&p, &err), CFR_EINVAL);
    params(&p);
    p.inner_min = 1; /* chains of single children */
    assert_int_equal(cfr_tree_params_check(&p, &err), CFR_EINVAL);
    params(&p);
    p.leaf_max = CFR_TREE_ITEMS_MAX + 1;
    assert_int_equal(cfr_tree_params_check(&p, &err), CFR_EINVAL);
    params(&p);
    p.page_bytes = CFR_TREE_PAGE_MAX + 1;
    assert_int_equal(cfr_tree_params_check(&p, &err), CFR_EINVAL);
}

static void
test_tree_scan_rejects_malformed(void **state)
{
    (void)state;
    struct cfr_err err;
    size_t c[4];
    static const uint8_t ok[] = {0x08, 0x01, 0x1a, 0x00, 0x1a, 0x00};
    assert_int_equal(cfr_tree_page_scan(ok, sizeof(ok), c, &err), 0);
    assert_int_equal(c[1], 1);
    assert_int_equal(c[3], 2);
    static const uint8_t twice[] = {0x08, 0x01, 0x08, 0x02};
    assert_int_equal(cfr_tree_page_scan(twice, sizeof(twice), c, &err),
                     CFR_ECORRUPT);
    static const uint8_t past[] = {0x12, 0x05, 0x00};
    assert_int_equal(cfr_tree_page_scan(past, sizeof(past), c, &err),
                     CFR_ECORRUPT);
    static const uint8_t wire[] = {0x0a, 0x00}; /* level as bytes */
    assert_int_equal(cfr_tree_page_scan(wire, sizeof(wire), c, &err),
                     CFR_ECORRUPT);
    static const uint8_t field[] = {0x28, 0x00};
    assert_int_equal(cfr_tree_page_scan(field, sizeof(field), c, &err),
                     CFR_ECORRUPT);
    static const uint8_t varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(cfr_tree_page_scan(varint, sizeof(varint), c, &err),
                     CFR_ECORRUPT);
    static const uint8_t big_level[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x10};
    assert_int_equal(cfr_tree_page_scan(big_level, sizeof(big_level), c, &err),
                     CFR_ECORRUPT);
    /* Too many records for one page, each of them empty. */
    size_t n = 2 * (CFR_TREE_ITEMS_MAX + 1);
    uint8_t *many = calloc(1, n);
    for (size_t i = 0; i < n; i += 2) {
        many[i] = 0x12;
    }
    assert_int_equal(cfr_tree_page_scan(many, n, c, &err), CFR_ECORRUPT);
    assert_int_equal(cfr_tree_page_scan(many, n - 2, c, &err), 0);
    free(many);
}

/* Pages are exactly what protobuf-c packs for the same message. */
static void
test_tree_pages_match_protobuf_c(void **state)
{
    (void)state;
    struct rec r = {0};
    struct cfr_tree_params p;
    struct cfr_tree_root root;
    params(&p);
    build(&r, &packed, &p, 2000, UINT64_MAX, &root);
    assert_true(root.height >= 3);
    assert_int_equal(root.entries, 2000);
    assert_int_equal(r.level[r.n - 1], root.height - 1);
    uint64_t leaf_ids = 0;
    size_t short_leaves = 0;
    static uint8_t again[CFR_TREE_PAGE_MAX];
    for (size_t i = 0; i < r.n; i++) {
        Coffer__V1__RefPage *m =
            coffer__v1__ref_page__unpack(NULL, r.len[i], r.page[i]);
        assert_non_null(m);
        assert_int_equal(m->level, r.level[i]);
        assert_int_equal(coffer__v1__ref_page__pack(m, again), r.len[i]);
        assert_memory_equal(again, r.page[i], r.len[i]);
        if (m->level == 0) {
            assert_int_equal(m->ids.len % 8, 0);
            size_t count = m->ids.len / 8;
            short_leaves += count < p.leaf_min; /* only the last may be */
            assert_true(count <= p.leaf_max);
            leaf_ids += count;
        } else {
            assert_true(m->n_children >= 1);
            assert_true(m->n_children <= p.inner_max);
            for (size_t c = 0; c < m->n_children; c++) {
                assert_int_equal(m->children[c]->first_key.len, 0);
                assert_int_equal(m->children[c]->id.len, CFR_TREE_ID_LEN);
                /* Children were emitted before their parent. */
                assert_true(cfr_get_le64(m->children[c]->id.data) <= i);
            }
        }
        coffer__v1__ref_page__free_unpacked(m, NULL);
    }
    assert_int_equal(leaf_ids, 2000);
    assert_true(short_leaves <= 1);
    rec_free(&r);

    /* With child keys, each reference carries its child's first key. */
    build(&r, &records, &p, 300, UINT64_MAX, &root);
    Coffer__V1__ManifestPage *m = coffer__v1__manifest_page__unpack(
        NULL, r.len[r.n - 1], r.page[r.n - 1]);
    assert_non_null(m);
    assert_true(m->level >= 1);
    uint8_t k0[8];
    key_of(0, k0);
    assert_int_equal(m->children[0]->first_key.len, 8);
    assert_memory_equal(m->children[0]->first_key.data, k0, 8);
    coffer__v1__manifest_page__free_unpacked(m, NULL);
    rec_free(&r);
}

/* Counts pages of b that a does not have, byte for byte. */
static size_t
new_pages(const struct rec *a, const struct rec *b)
{
    size_t fresh = 0;
    for (size_t i = 0; i < b->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < a->n && !seen; j++) {
            seen = a->level[j] == b->level[i] && a->len[j] == b->len[i] &&
                   memcmp(a->page[j], b->page[i], b->len[i]) == 0;
        }
        fresh += !seen;
    }
    return fresh;
}

static void
test_tree_insert_stays_local(void **state)
{
    (void)state;
    struct rec a = {0}, b = {0};
    struct cfr_tree_params p;
    struct cfr_tree_root ra, rb;
    params(&p);
    build(&a, &packed, &p, 3000, 1500, &ra);
    build(&b, &packed, &p, 3000, UINT64_MAX, &rb);
    assert_int_equal(rb.entries, ra.entries + 1);
    /*
     * Adding key 1500 rewrites its leaf (or splits it in two) and the
     * path above; every other leaf keeps its bytes. Inner pages of IDs
     * that are page numbers all shift here, so only leaves are compared.
     */
    size_t leaves_a = 0, fresh_leaves = 0;
    for (size_t i = 0; i < a.n; i++) {
        leaves_a += a.level[i] == 0;
    }
    struct rec only_leaves = {0};
    for (size_t i = 0; i < b.n; i++) {
        if (b.level[i] == 0) {
            only_leaves.level[only_leaves.n] = 0;
            only_leaves.page[only_leaves.n] = b.page[i];
            only_leaves.len[only_leaves.n++] = b.len[i];
        }
    }
    fresh_leaves = new_pages(&a, &only_leaves);
    assert_true(leaves_a > 100);
    assert_in_range(fresh_leaves, 1, 2);
    rec_free(&a);
    rec_free(&b);
}

static void
test_tree_limits_and_misuse(void **state)
{
    (void)state;
    struct rec r = {0};
    struct cfr_tree_params p;
    struct cfr_tree_builder *b;
    struct cfr_tree_root root;
    struct cfr_err err;
    uint8_t k[8];
    params(&p);

    /* An empty tree is one empty leaf. */
    build(&r, &records, &p, 0, UINT64_MAX, &root);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.len[0], 0);
    assert_int_equal(root.height, 1);
    assert_int_equal(root.entries, 0);
    rec_free(&r);
    /* One record: a single leaf, no parent. */
    build(&r, &records, &p, 1, UINT64_MAX, &root);
    assert_int_equal(r.n, 1);
    assert_int_equal(root.height, 1);
    rec_free(&r);

    assert_int_equal(cfr_tree_builder_new(&p, &records, rec_put, &r, &b, &err),
                     0);
    assert_int_equal(cfr_tree_builder_add(b, k, 0, k, 8, &err), CFR_EINVAL);
    cfr_tree_builder_free(b);
    assert_int_equal(cfr_tree_builder_new(&p, &records, rec_put, &r, &b, &err),
                     0);
    key_of(5, k);
    assert_int_equal(cfr_tree_builder_add(b, k, 8, k, 8, &err), 0);
    assert_int_equal(cfr_tree_builder_add(b, k, 8, k, 8, &err), CFR_EINVAL);
    assert_int_equal(cfr_tree_builder_finish(b, &root, &err), CFR_EINVAL);
    cfr_tree_builder_free(b);

    /* An item too big for any page; page_bytes bounds every page. */
    uint8_t *big = calloc(1, CFR_TREE_PAGE_MAX);
    assert_int_equal(cfr_tree_builder_new(&p, &records, rec_put, &r, &b, &err),
                     0);
    assert_int_equal(
        cfr_tree_builder_add(b, k, 8, big, CFR_TREE_PAGE_MAX, &err),
        CFR_ELIMIT);
    cfr_tree_builder_free(b);
    assert_int_equal(cfr_tree_builder_new(&p, &records, rec_put, &r, &b, &err),
                     0);
    for (uint64_t i = 0; i < 40; i++) {
        key_of(i, k);
        assert_int_equal(cfr_tree_builder_add(b, k, 8, big, 10000, &err), 0);
    }
    assert_int_equal(cfr_tree_builder_finish(b, &root, &err), 0);
    cfr_tree_builder_free(b);
    for (size_t i = 0; i < r.n; i++) {
        assert_true(r.len[i] <= p.page_bytes);
    }
    assert_true(r.n >= 7); /* 400 kB of records in 64 KiB pages */
    rec_free(&r);
    free(big);

    /* A sink error stops the builder for good. */
    struct rec full = {0};
    full.n = 4096;
    assert_int_equal(
        cfr_tree_builder_new(&p, &records, rec_put, &full, &b, &err), 0);
    int rc = 0;
    for (uint64_t i = 0; i < 1000 && rc == 0; i++) {
        key_of(i, k);
        rc = cfr_tree_builder_add(b, k, 8, k, 8, &err);
    }
    assert_int_equal(rc, CFR_ELIMIT);
    key_of(5000, k);
    assert_int_equal(cfr_tree_builder_add(b, k, 8, k, 8, &err), CFR_EINVAL);
    cfr_tree_builder_free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_hash_is_frozen),
        cmocka_unit_test(test_tree_params_check),
        cmocka_unit_test(test_tree_scan_rejects_malformed),
        cmocka_unit_test(test_tree_pages_match_protobuf_c),
        cmocka_unit_test(test_tree_insert_stays_local),
        cmocka_unit_test(test_tree_limits_and_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
