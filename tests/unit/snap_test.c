/*
 * snap_test.c - manifests, reference lists and headers: round trips,
 * locality of edits, determinism, frozen vectors, hostile pages, and
 * metadata growth over hourly snapshots (bench/meta_growth.c, scaled).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "coffer_format.pb-c.h"
#include "err.h"
#include "id.h"
#include "mem.h"
#include "snap.h"
#include "tree.h"

/* The growth simulation, shared with the full-size benchmark. */
#define META_GROWTH_NO_MAIN
#include "../../bench/meta_growth.c"

/*
 * A test page ID: two 64-bit lanes over the page plus its length. It only
 * has to tell pages apart, fast, without sodium.
 */
static void
fake_id(const void *data, size_t len, uint8_t out[32])
{
    const uint8_t *p = data;
    uint64_t a = UINT64_C(0x243f6a8885a308d3) ^ len;
    uint64_t b = UINT64_C(0x13198a2e03707344) + len;
    size_t n = len;
    while (n >= 8) {
        uint64_t w = cfr_get_le64(p);
        a = (a ^ w) * UINT64_C(0x9e3779b97f4a7c15);
        a ^= a >> 29;
        b = (b + w) * UINT64_C(0xc2b2ae3d27d4eb4f);
        b ^= b >> 31;
        p += 8;
        n -= 8;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, p, n);
    a = (a ^ cfr_get_le64(tail)) * UINT64_C(0x9e3779b97f4a7c15);
    b = (b + cfr_get_le64(tail)) * UINT64_C(0xc2b2ae3d27d4eb4f);
    cfr_put_le64(out, cfr_tree_hash(1, &a, 8));
    cfr_put_le64(out + 8, cfr_tree_hash(2, &b, 8));
    cfr_put_le64(out + 16, cfr_tree_hash(3, out, 16));
    cfr_put_le64(out + 24, (uint64_t)len);
}

/* A store: the simulation's, with no mailbox. */
static struct mg_sim *
store_new(mg_id_fn *id_fn)
{
    struct mg_sim *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(mg_store_init(&s->store, id_fn, true), 0);
    return s;
}

static void
store_free(struct mg_sim *s)
{
    mg_sim_free(s);
    free(s);
}

/* Entry i of a synthetic manifest, with every field varied. */
struct test_entry {
    uint8_t key[64];
    uint8_t info[8];
    uint8_t msgid[48];
    uint8_t chunks[3 * 32];
    struct cfr_snap_entry e;
};

static void
make_entry(struct test_entry *t, unsigned i, unsigned variant)
{
    memset(t, 0, sizeof(*t));
    int n = snprintf((char *)t->key, sizeof(t->key), "%c.F%u%c%010u.M%uP1.h",
                     i % 7 == 0 ? 'A' : 'B', i % 3, 0, 1600000000 + i * 17, i);
    t->e.key = t->key;
    t->e.key_len = (size_t)n;
    t->e.kind = (enum cfr_snap_kind)(1 + i % 4);
    if (i % 5 != 0) {
        memcpy(t->info, variant % 2 ? ":2,RS" : ":2,S", variant % 2 ? 5 : 4);
        t->e.info = t->info;
        t->e.info_len = variant % 2 ? 5 : 4;
    }
    t->e.in_new = i % 11 == 0;
    t->e.size = (uint64_t)i * 977 + (i % 13 == 0 ? UINT64_C(1) << 40 : 0);
    t->e.mtime_ns = (int64_t)i * 1000000007 - (i % 17 == 0 ? 5 : 0);
    t->e.mode = 0600 | (i % 2);
    if (i % 9 != 0) {
        n = snprintf((char *)t->msgid, sizeof(t->msgid), "<%u.%u@x>", i,
                     i * 31);
        t->e.message_id = t->msgid;
        t->e.message_id_len = (size_t)n;
    }
    t->e.n_chunks = i % 4;
    for (size_t k = 0; k < sizeof(t->chunks); k++) {
        t->chunks[k] = (uint8_t)(i * 131 + k * 7);
    }
    t->e.chunk_ids = t->e.n_chunks > 0 ? t->chunks : NULL;
}

static void
assert_entry_equal(const struct cfr_snap_entry *got,
                   const struct cfr_snap_entry *want)
{
    assert_int_equal(got->key_len, want->key_len);
    assert_memory_equal(got->key, want->key, want->key_len);
    assert_int_equal(got->kind, want->kind);
    assert_int_equal(got->info_len, want->info_len);
    if (want->info_len > 0) {
        assert_memory_equal(got->info, want->info, want->info_len);
    }
    assert_int_equal(got->in_new, want->in_new);
    assert_true(got->size == want->size);
    assert_true(got->mtime_ns == want->mtime_ns);
    assert_int_equal(got->mode, want->mode);
    assert_int_equal(got->message_id_len, want->message_id_len);
    if (want->message_id_len > 0) {
        assert_memory_equal(got->message_id, want->message_id,
                            want->message_id_len);
    }
    assert_int_equal(got->n_chunks, want->n_chunks);
    if (want->n_chunks > 0) {
        assert_memory_equal(got->chunk_ids, want->chunk_ids,
                            32 * want->n_chunks);
    }
}

/*
 * make_entry's keys sort by their first byte, then by the folder digit,
 * then by time: the order of i is not key order. This lists i in key
 * order.
 */
static int
index_cmp(const void *a, const void *b)
{
    struct test_entry ta, tb;
    make_entry(&ta, *(const unsigned *)a, 0);
    make_entry(&tb, *(const unsigned *)b, 0);
    size_t n = ta.e.key_len < tb.e.key_len ? ta.e.key_len : tb.e.key_len;
    int c = memcmp(ta.key, tb.key, n);
    return c != 0 ? c : (int)ta.e.key_len - (int)tb.e.key_len;
}

static unsigned *
sorted_indices(unsigned n)
{
    unsigned *idx = calloc(n, sizeof(*idx));
    assert_non_null(idx);
    for (unsigned i = 0; i < n; i++) {
        idx[i] = i;
    }
    qsort(idx, n, sizeof(*idx), index_cmp);
    return idx;
}

/* Builds idx[0..n) in order, entry `edited` changed, position `skip` left
 * out (n for none). */
static void
build_sorted(struct mg_sim *s, const struct cfr_tree_params *params,
             const unsigned *idx, unsigned n, unsigned edited, unsigned skip,
             struct cfr_tree_root *root)
{
    struct cfr_snap_manifest_writer *w;
    struct cfr_err err;
    struct test_entry t;
    assert_int_equal(
        cfr_snap_manifest_writer_new(params, mg_store_put, s, &w, &err), 0);
    for (unsigned k = 0; k < n; k++) {
        if (k == skip) {
            continue;
        }
        make_entry(&t, idx[k], idx[k] == edited);
        assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), 0);
    }
    assert_int_equal(cfr_snap_manifest_writer_finish(w, root, &err), 0);
    cfr_snap_manifest_writer_free(w);
}

static void
test_snap_manifest_round_trip(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct mg_sim *s = store_new(fake_id);
    unsigned *idx = sorted_indices(N);
    struct cfr_tree_root root;
    struct cfr_err err;
    build_sorted(s, NULL, idx, N, N, N, &root);
    assert_int_equal(root.entries, N);
    assert_true(root.height >= 2);

    struct cfr_snap_manifest_reader *r;
    struct cfr_snap_entry got;
    struct test_entry want;
    assert_int_equal(
        cfr_snap_manifest_reader_new(mg_store_get, s, &root, &r, &err), 0);
    unsigned k = 0;
    int rc;
    while ((rc = cfr_snap_manifest_reader_next(r, &got, &err)) == 1) {
        assert_true(k < N);
        make_entry(&want, idx[k++], 0);
        assert_entry_equal(&got, &want.e);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(k, N);
    /* The end stays the end. */
    assert_int_equal(cfr_snap_manifest_reader_next(r, &got, &err), 0);
    cfr_snap_manifest_reader_free(r);
    free(idx);
    store_free(s);
}

static void
test_snap_manifest_edit_rewrites_one_path(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct mg_sim *s = store_new(fake_id);
    unsigned *idx = sorted_indices(N);
    struct cfr_tree_root a, b, c;
    build_sorted(s, NULL, idx, N, N, N, &a);
    assert_true(a.height >= 3);
    uint64_t pages = s->store.unique_pages;
    uint64_t puts = s->store.puts;

    /* A flag change: same key, one entry rewritten (one with flags). */
    unsigned mid = N / 2;
    while (idx[mid] % 5 == 0) {
        mid++;
    }
    build_sorted(s, NULL, idx, N, idx[mid], N, &b);
    assert_memory_not_equal(a.id, b.id, 32);
    assert_int_equal(b.height, a.height);
    assert_int_equal(s->store.unique_pages - pages, a.height);
    assert_int_equal(s->store.puts - puts, puts);

    /* Deleting an entry moves at most the boundaries around it. */
    pages = s->store.unique_pages;
    build_sorted(s, NULL, idx, N, N, N / 3, &c);
    assert_int_equal(c.entries, N - 1);
    assert_true(s->store.unique_pages - pages <= 2 * (uint64_t)a.height);
    assert_true(s->store.unique_pages - pages >= 1);
    free(idx);
    store_free(s);
}

static void
test_snap_manifest_deterministic(void **state)
{
    (void)state;
    struct mg_sim *s1 = store_new(fake_id);
    struct mg_sim *s2 = store_new(fake_id);
    unsigned *idx = sorted_indices(3000);
    struct cfr_tree_root a, b, again;
    build_sorted(s1, NULL, idx, 3000, 3000, 3000, &a);
    build_sorted(s2, NULL, idx, 3000, 3000, 3000, &b);
    assert_memory_equal(a.id, b.id, 32);
    assert_int_equal(a.height, b.height);
    assert_int_equal(s1->store.unique_bytes, s2->store.unique_bytes);
    /* Built again into the same store, nothing new is stored. */
    uint64_t bytes = s1->store.unique_bytes;
    build_sorted(s1, NULL, idx, 3000, 3000, 3000, &again);
    assert_memory_equal(a.id, again.id, 32);
    assert_int_equal(s1->store.unique_bytes, bytes);
    /* Another seed moves the boundaries: another tree. */
    struct cfr_tree_params p;
    cfr_snap_manifest_params(&p);
    p.seed = 42;
    build_sorted(s1, &p, idx, 3000, 3000, 3000, &again);
    assert_memory_not_equal(a.id, again.id, 32);
    free(idx);
    store_free(s1);
    store_free(s2);
}

static void
test_snap_manifest_empty(void **state)
{
    (void)state;
    struct mg_sim *s = store_new(fake_id);
    struct cfr_tree_root root;
    struct cfr_err err;
    build_sorted(s, NULL, NULL, 0, 0, 0, &root);
    assert_int_equal(root.height, 1);
    assert_int_equal(root.entries, 0);
    assert_int_equal(s->store.unique_pages, 1);
    assert_int_equal(s->store.unique_bytes, 0);
    struct cfr_snap_manifest_reader *r;
    struct cfr_snap_entry e;
    assert_int_equal(
        cfr_snap_manifest_reader_new(mg_store_get, s, &root, &r, &err), 0);
    assert_int_equal(cfr_snap_manifest_reader_next(r, &e, &err), 0);
    cfr_snap_manifest_reader_free(r);
    /* A root that claims entries over the empty page is corrupt. */
    root.entries = 1;
    assert_int_equal(
        cfr_snap_manifest_reader_new(mg_store_get, s, &root, &r, &err), 0);
    assert_int_equal(cfr_snap_manifest_reader_next(r, &e, &err), CFR_ECORRUPT);
    cfr_snap_manifest_reader_free(r);
    store_free(s);
}

static void
test_snap_manifest_writer_rejects_bad_entries(void **state)
{
    (void)state;
    struct mg_sim *s = store_new(fake_id);
    struct cfr_snap_manifest_writer *w;
    struct cfr_err err;
    struct test_entry t;
    struct cfr_tree_root root;

    assert_int_equal(
        cfr_snap_manifest_writer_new(NULL, mg_store_put, s, &w, &err), 0);
    make_entry(&t, 1, 0);
    t.e.kind = 0;
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_EINVAL);
    t.e.kind = 5;
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_EINVAL);
    make_entry(&t, 1, 0);
    t.e.key_len = 0;
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_EINVAL);
    make_entry(&t, 1, 0);
    t.e.n_chunks = CFR_SNAP_CHUNKS_MAX + 1;
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_ELIMIT);
    make_entry(&t, 1, 0);
    t.e.info_len = CFR_SNAP_INFO_MAX + 1;
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_EINVAL);
    /* Checks before the tree leave the writer usable... */
    make_entry(&t, 1, 0);
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), 0);
    /* ...a key out of order does not. */
    assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "order"));
    assert_int_equal(cfr_snap_manifest_writer_finish(w, &root, &err),
                     CFR_EINVAL);
    cfr_snap_manifest_writer_free(w);
    /* Nothing partial reached the store. */
    assert_int_equal(s->store.unique_pages, 0);
    store_free(s);
}

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

static void
test_snap_refs_round_trip(void **state)
{
    (void)state;
    enum { N = 50000 };
    struct mg_sim *s = store_new(fake_id);
    struct cfr_snap_refs_writer *w;
    struct cfr_snap_refs_reader *r;
    struct cfr_tree_root root;
    struct cfr_err err;
    uint8_t *ids = malloc((size_t)N * 32);
    assert_non_null(ids);
    s->rng = 7;
    for (size_t i = 0; i < (size_t)N * 32; i += 8) {
        cfr_put_le64(ids + i, mg_rand(s));
    }
    qsort(ids, N, 32, id_cmp);
    assert_int_equal(cfr_snap_refs_writer_new(NULL, mg_store_put, s, &w, &err),
                     0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(cfr_snap_refs_writer_add(w, ids + 32 * i, &err), 0);
    }
    assert_int_equal(cfr_snap_refs_writer_finish(w, &root, &err), 0);
    cfr_snap_refs_writer_free(w);
    assert_int_equal(root.entries, N);
    assert_true(root.height >= 3);

    uint8_t id[32];
    size_t k = 0;
    int rc;
    assert_int_equal(cfr_snap_refs_reader_new(mg_store_get, s, &root, &r, &err),
                     0);
    while ((rc = cfr_snap_refs_reader_next(r, id, &err)) == 1) {
        assert_true(k < N);
        assert_memory_equal(id, ids + 32 * k, 32);
        k++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(k, N);
    cfr_snap_refs_reader_free(r);

    /* A set: a duplicate or a step back is refused. */
    assert_int_equal(cfr_snap_refs_writer_new(NULL, mg_store_put, s, &w, &err),
                     0);
    assert_int_equal(cfr_snap_refs_writer_add(w, ids + 32, &err), 0);
    assert_int_equal(cfr_snap_refs_writer_add(w, ids + 32, &err), CFR_EINVAL);
    cfr_snap_refs_writer_free(w);
    assert_int_equal(cfr_snap_refs_writer_new(NULL, mg_store_put, s, &w, &err),
                     0);
    assert_int_equal(cfr_snap_refs_writer_add(w, ids + 32, &err), 0);
    assert_int_equal(cfr_snap_refs_writer_add(w, ids, &err), CFR_EINVAL);
    cfr_snap_refs_writer_free(w);
    free(ids);
    store_free(s);
}

static void
fill_header(struct cfr_snap_header *h)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->mailbox, "alice@example.org", 18);
    memcpy(h->host, "mx1", 4);
    memcpy(h->agent_version, "coffer 0.1.0", 13);
    h->agent_time_ms = INT64_C(1700000000123);
    memset(h->manifest.id, 0xab, 32);
    h->manifest.height = 3;
    h->manifest.entries = 100000;
    memset(h->refs.id, 0xcd, 32);
    h->refs.height = 4;
    h->refs.entries = 206000;
    h->total_bytes = UINT64_C(12345678901);
    h->has_parent = true;
    memset(h->parent, 0x11, 32);
    h->mass_deletion = true;
    h->vanished = 77;
}

static void
test_snap_header_round_trip_and_version(void **state)
{
    (void)state;
    struct cfr_snap_header h, got;
    struct cfr_buf b;
    struct cfr_err err;
    fill_header(&h);
    cfr_buf_init(&b, CFR_SNAP_HEADER_MAX);
    assert_int_equal(cfr_snap_header_encode(&h, &b, &err), 0);
    assert_int_equal(cfr_snap_header_decode(b.data, b.len, &got, &err), 0);
    assert_memory_equal(&got, &h, sizeof(h));

    /* Another version is refused as such, a missing one as corrupt. */
    Coffer__V1__SnapshotHeader *m =
        coffer__v1__snapshot_header__unpack(NULL, b.len, b.data);
    assert_non_null(m);
    uint8_t raw[CFR_SNAP_HEADER_MAX];
    m->format_version = CFR_SNAP_FORMAT_VERSION + 1;
    size_t n = coffer__v1__snapshot_header__pack(m, raw);
    assert_int_equal(cfr_snap_header_decode(raw, n, &got, &err), CFR_EVERSION);
    assert_int_equal(got.manifest.height, 0);
    m->format_version = 0;
    n = coffer__v1__snapshot_header__pack(m, raw);
    assert_int_equal(cfr_snap_header_decode(raw, n, &got, &err), CFR_ECORRUPT);
    /* A root of 31 bytes, a height of 0. */
    m->format_version = CFR_SNAP_FORMAT_VERSION;
    m->manifest_root.len = 31;
    n = coffer__v1__snapshot_header__pack(m, raw);
    assert_int_equal(cfr_snap_header_decode(raw, n, &got, &err), CFR_ECORRUPT);
    m->manifest_root.len = 32;
    m->refs_height = 0;
    n = coffer__v1__snapshot_header__pack(m, raw);
    assert_int_equal(cfr_snap_header_decode(raw, n, &got, &err), CFR_ECORRUPT);
    coffer__v1__snapshot_header__free_unpacked(m, NULL);

    /* Every truncation fails cleanly or decodes to something else. */
    int refused = 0;
    for (size_t cut = 0; cut < b.len; cut++) {
        int rc = cfr_snap_header_decode(b.data, cut, &got, &err);
        assert_true(rc == CFR_ECORRUPT || rc == 0);
        if (rc == 0) {
            assert_memory_not_equal(&got, &h, sizeof(h));
        } else {
            refused++;
        }
    }
    assert_true(refused > (int)b.len / 2);
    /* An unknown field (99, varint) is refused. */
    memcpy(raw, b.data, b.len);
    raw[b.len] = 0x98;
    raw[b.len + 1] = 0x06;
    raw[b.len + 2] = 0x01;
    assert_int_equal(cfr_snap_header_decode(raw, b.len + 3, &got, &err),
                     CFR_ECORRUPT);
    /* A NUL inside a name cannot be represented. */
    m = coffer__v1__snapshot_header__unpack(NULL, b.len, b.data);
    m->host.data[1] = 0;
    n = coffer__v1__snapshot_header__pack(m, raw);
    assert_int_equal(cfr_snap_header_decode(raw, n, &got, &err), CFR_ECORRUPT);
    coffer__v1__snapshot_header__free_unpacked(m, NULL);
    cfr_buf_fini(&b);
}

/*
 * Frozen vectors: a 12-entry manifest cut into a 2-level tree by small
 * params, page IDs plain BLAKE2b-256. COFFER_WRITE_VECTORS=1 rewrites the
 * files (after a deliberate format change only).
 */
#define VEC_ENTRIES 12

static void
vector_params(struct cfr_tree_params *p)
{
    memset(p, 0, sizeof(*p));
    p->leaf_target = 2;
    p->leaf_min = 2;
    p->leaf_max = 4;
    p->inner_target = 64;
    p->inner_min = 2;
    p->inner_max = 64;
    p->page_bytes = 65536;
}

static void
vector_entry(struct test_entry *t, unsigned i)
{
    memset(t, 0, sizeof(*t));
    static const char *const folders[] = {"", ".Lists.dev", ".Sent"};
    const char *f = folders[i / 5 % 3];
    size_t fl = strlen(f);
    memcpy(t->key, f, fl);
    int n = snprintf((char *)t->key + fl + 1, sizeof(t->key) - fl - 1,
                     "17000%05u.M%uP%u.mx,S=%u", i * 3607, 100 + i, 7 * i,
                     1000 + 10 * i);
    t->e.key = t->key;
    t->e.key_len = fl + 1 + (size_t)n;
    t->e.kind = i == 11 ? CFR_SNAP_DOVECOT_META : CFR_SNAP_MAILDIR_MESSAGE;
    if (i == 11) {
        /* "/dovecot-uidlist" sorts before any Maildir name in INBOX. */
        t->e.key_len = fl + 1 + 16;
        memcpy(t->key + fl + 1, "/dovecot-uidlist", 16);
    } else if (i % 4 != 0) {
        memcpy(t->info, ":2,S", 4);
        t->e.info = t->info;
        t->e.info_len = 4;
    }
    t->e.in_new = i % 4 == 0 && i != 11;
    t->e.size = 1000 + 10 * i;
    t->e.mtime_ns = (int64_t)(1700000000 + i * 3607) * 1000000000;
    t->e.mode = 0600;
    if (i != 11) {
        n = snprintf((char *)t->msgid, sizeof(t->msgid), "<m%u@example.org>",
                     i);
        t->e.message_id = t->msgid;
        t->e.message_id_len = (size_t)n;
    }
    t->e.n_chunks = i == 11 ? 1 : 1 + i % 3;
    for (size_t k = 0; k < 32 * t->e.n_chunks; k++) {
        t->chunks[k] = (uint8_t)(i * 16 + k);
    }
    t->e.chunk_ids = t->chunks;
}

/* Vector entries in key order. */
static int
vector_cmp(const void *a, const void *b)
{
    struct test_entry ta, tb;
    vector_entry(&ta, *(const unsigned *)a);
    vector_entry(&tb, *(const unsigned *)b);
    size_t n = ta.e.key_len < tb.e.key_len ? ta.e.key_len : tb.e.key_len;
    int c = memcmp(ta.key, tb.key, n);
    return c != 0 ? c : (int)ta.e.key_len - (int)tb.e.key_len;
}

/* Records every page in emission order. */
struct page_log {
    uint8_t *pages[32];
    size_t lens[32];
    size_t n;
};

static int
log_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
        uint8_t id_r[32], struct cfr_err *err)
{
    struct page_log *log = ctx;
    (void)level;
    if (log->n == 32) {
        return CFR_ERR(err, CFR_ELIMIT, "too many pages");
    }
    log->pages[log->n] = malloc(len + 1);
    memcpy(log->pages[log->n], page, len);
    log->lens[log->n++] = len;
    cfr_id_plain(page, len, id_r);
    return 0;
}

/* Serves the logged pages by their BLAKE2b ID. */
static int
log_get(void *ctx, const uint8_t id[32], struct cfr_buf *page,
        struct cfr_err *err)
{
    struct page_log *log = ctx;
    uint8_t have[32];
    for (size_t i = 0; i < log->n; i++) {
        cfr_id_plain(log->pages[i], log->lens[i], have);
        if (memcmp(have, id, 32) == 0) {
            return cfr_buf_append(page, log->pages[i], log->lens[i], err);
        }
    }
    return CFR_ERR(err, CFR_ENOTFOUND, "no such page");
}

static void
log_free(struct page_log *log)
{
    for (size_t i = 0; i < log->n; i++) {
        free(log->pages[i]);
    }
    log->n = 0;
}

static size_t
read_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("missing vector %s", path);
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void
test_snap_vectors_manifest(void **state)
{
    (void)state;
    struct cfr_tree_params p;
    struct page_log log = {0};
    struct cfr_snap_manifest_writer *w;
    struct cfr_tree_root root;
    struct cfr_err err;
    struct test_entry t;
    unsigned order[VEC_ENTRIES];
    for (unsigned i = 0; i < VEC_ENTRIES; i++) {
        order[i] = i;
    }
    qsort(order, VEC_ENTRIES, sizeof(order[0]), vector_cmp);
    vector_params(&p);
    assert_int_equal(cfr_snap_manifest_writer_new(&p, log_put, &log, &w, &err),
                     0);
    for (unsigned i = 0; i < VEC_ENTRIES; i++) {
        vector_entry(&t, order[i]);
        assert_int_equal(cfr_snap_manifest_writer_add(w, &t.e, &err), 0);
    }
    assert_int_equal(cfr_snap_manifest_writer_finish(w, &root, &err), 0);
    cfr_snap_manifest_writer_free(w);
    assert_int_equal(root.height, 2);
    assert_true(log.n >= 4);

    bool write = getenv("COFFER_WRITE_VECTORS") != NULL;
    char path[512];
    static uint8_t want[65536];
    for (size_t i = 0; i < log.n; i++) {
        bool is_root = i + 1 == log.n;
        if (is_root) {
            snprintf(path, sizeof(path), "%s/manifest-root.bin",
                     COFFER_VECTORS_DIR);
        } else {
            snprintf(path, sizeof(path), "%s/manifest-leaf-%zu.bin",
                     COFFER_VECTORS_DIR, i);
        }
        if (write) {
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(log.pages[i], 1, log.lens[i], f),
                             log.lens[i]);
            fclose(f);
        }
        size_t n = read_file(path, want, sizeof(want));
        assert_int_equal(n, log.lens[i]);
        assert_memory_equal(want, log.pages[i], n);
        /* protobuf-c packs the decoded page to the very same bytes. */
        Coffer__V1__ManifestPage *m =
            coffer__v1__manifest_page__unpack(NULL, n, want);
        assert_non_null(m);
        assert_int_equal(m->level, is_root ? 1 : 0);
        uint8_t again[65536];
        assert_int_equal(coffer__v1__manifest_page__pack(m, again), n);
        assert_memory_equal(again, want, n);
        coffer__v1__manifest_page__free_unpacked(m, NULL);
    }
    /* No stale vector beyond the pages written. */
    snprintf(path, sizeof(path), "%s/manifest-leaf-%zu.bin", COFFER_VECTORS_DIR,
             log.n - 1);
    FILE *stale = fopen(path, "rb");
    assert_null(stale);

    /* The root ID is BLAKE2b-256 of the root file. */
    uint8_t id[32];
    cfr_id_plain(log.pages[log.n - 1], log.lens[log.n - 1], id);
    assert_memory_equal(id, root.id, 32);

    /* Read back from the stored bytes, in key order. */
    struct cfr_snap_manifest_reader *r;
    struct cfr_snap_entry got;
    assert_int_equal(
        cfr_snap_manifest_reader_new(log_get, &log, &root, &r, &err), 0);
    for (unsigned i = 0; i < VEC_ENTRIES; i++) {
        assert_int_equal(cfr_snap_manifest_reader_next(r, &got, &err), 1);
        vector_entry(&t, order[i]);
        assert_entry_equal(&got, &t.e);
    }
    assert_int_equal(cfr_snap_manifest_reader_next(r, &got, &err), 0);
    cfr_snap_manifest_reader_free(r);

    /* One flipped bit in a leaf: its ID no longer matches, or it decodes
     * to a leaf that disagrees with the root. */
    log.pages[0][log.lens[0] / 2] ^= 0x01;
    assert_int_equal(
        cfr_snap_manifest_reader_new(log_get, &log, &root, &r, &err), 0);
    int rc;
    while ((rc = cfr_snap_manifest_reader_next(r, &got, &err)) == 1) {
    }
    assert_true(rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT);
    cfr_snap_manifest_reader_free(r);
    log_free(&log);
}

/* A getter over a table of hand-made pages, by fake ID. */
struct crafted {
    uint8_t *pages[8];
    size_t lens[8];
    uint8_t ids[8][32];
    size_t n;
};

static const uint8_t *
crafted_add(struct crafted *c, const void *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    c->pages[c->n] = malloc(len + 1);
    protobuf_c_message_pack(msg, c->pages[c->n]);
    c->lens[c->n] = len;
    fake_id(c->pages[c->n], len, c->ids[c->n]);
    return c->ids[c->n++];
}

static int
crafted_get(void *ctx, const uint8_t id[32], struct cfr_buf *page,
            struct cfr_err *err)
{
    struct crafted *c = ctx;
    for (size_t i = 0; i < c->n; i++) {
        if (memcmp(c->ids[i], id, 32) == 0) {
            return cfr_buf_append(page, c->pages[i], c->lens[i], err);
        }
    }
    return CFR_ERR(err, CFR_ENOTFOUND, "no such page");
}

static void
crafted_free(struct crafted *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->pages[i]);
    }
    c->n = 0;
}

/* Walks a manifest to the end and returns the final code. */
static int
walk_manifest(cfr_tree_get_fn *get, void *ctx, const struct cfr_tree_root *root)
{
    struct cfr_snap_manifest_reader *r;
    struct cfr_snap_entry e;
    struct cfr_err err;
    int rc = cfr_snap_manifest_reader_new(get, ctx, root, &r, &err);
    while (rc == 0 && (rc = cfr_snap_manifest_reader_next(r, &e, &err)) == 1) {
        rc = 0;
    }
    cfr_snap_manifest_reader_free(r);
    return rc;
}

static void
set_entry(Coffer__V1__ManifestEntry *m, const char *key)
{
    coffer__v1__manifest_entry__init(m);
    m->key.data = (uint8_t *)key;
    m->key.len = strlen(key);
    m->kind = COFFER__V1__ENTRY_KIND__ENTRY_KIND_MAILDIR_MESSAGE;
}

static void
test_snap_hostile_pages(void **state)
{
    (void)state;
    struct cfr_err err;
    uint32_t level;
    size_t count;
    Coffer__V1__ManifestEntry e[3];
    Coffer__V1__ManifestEntry *ep[3] = {&e[0], &e[1], &e[2]};
    Coffer__V1__ManifestPage page = COFFER__V1__MANIFEST_PAGE__INIT;
    uint8_t buf[4096];

    /* A good leaf, then each way it can be broken. */
    set_entry(&e[0], "a");
    set_entry(&e[1], "b");
    set_entry(&e[2], "c");
    page.entries = ep;
    page.n_entries = 3;
    size_t n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     0);
    assert_int_equal(count, 3);
    /* Truncated inside an entry. */
    assert_int_equal(
        cfr_snap_manifest_page_check(buf, n - 1, &level, &count, &err),
        CFR_ECORRUPT);
    /* Oversized. */
    uint8_t *big = calloc(1, CFR_TREE_PAGE_MAX + 1);
    assert_int_equal(cfr_snap_manifest_page_check(big, CFR_TREE_PAGE_MAX + 1,
                                                  &level, &count, &err),
                     CFR_ECORRUPT);
    free(big);
    /* Unsorted and duplicate keys. */
    set_entry(&e[1], "c");
    set_entry(&e[2], "b");
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    set_entry(&e[2], "c");
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    /* Chunk IDs not a multiple of 32; unknown kind; empty key. */
    set_entry(&e[2], "d");
    uint8_t ids[33] = {0};
    e[2].chunk_ids.data = ids;
    e[2].chunk_ids.len = 33;
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "chunk IDs"));
    set_entry(&e[2], "d");
    e[2].kind = 9;
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    set_entry(&e[2], "");
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    set_entry(&e[2], "d");
    /* Entries on an inner page; a level past the limit. */
    page.level = 1;
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    page.level = CFR_TREE_HEIGHT_MAX;
    page.n_entries = 0;
    n = coffer__v1__manifest_page__pack(&page, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    page.level = 0;
    page.n_entries = 3;
    /* A child with a 31-byte ID. */
    Coffer__V1__PageRef ref = COFFER__V1__PAGE_REF__INIT;
    Coffer__V1__PageRef *refp = &ref;
    uint8_t id[32] = {1};
    ref.id.data = id;
    ref.id.len = 31;
    ref.first_key.data = (uint8_t *)"a";
    ref.first_key.len = 1;
    ref.entries = 3;
    Coffer__V1__ManifestPage inner = COFFER__V1__MANIFEST_PAGE__INIT;
    inner.level = 1;
    inner.children = &refp;
    inner.n_children = 1;
    n = coffer__v1__manifest_page__pack(&inner, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    ref.id.len = 32;
    n = coffer__v1__manifest_page__pack(&inner, buf);
    assert_int_equal(cfr_snap_manifest_page_check(buf, n, &level, &count, &err),
                     0);
    assert_int_equal(level, 1);
    /* Garbage bytes: a field this page type does not have. */
    static const uint8_t junk[] = {0x20, 0x01, 0x12, 0x00};
    assert_int_equal(
        cfr_snap_manifest_page_check(junk, sizeof(junk), &level, &count, &err),
        CFR_ECORRUPT);

    /* Across pages: wrong level, wrong counts, keys out of order. */
    struct crafted c = {0};
    Coffer__V1__ManifestPage leaf1 = COFFER__V1__MANIFEST_PAGE__INIT;
    Coffer__V1__ManifestPage leaf2 = COFFER__V1__MANIFEST_PAGE__INIT;
    Coffer__V1__ManifestEntry l1[2], l2[1];
    Coffer__V1__ManifestEntry *l1p[2] = {&l1[0], &l1[1]}, *l2p[1] = {&l2[0]};
    set_entry(&l1[0], "a");
    set_entry(&l1[1], "z"); /* beyond the next leaf's first key */
    set_entry(&l2[0], "m");
    leaf1.entries = l1p;
    leaf1.n_entries = 2;
    leaf2.entries = l2p;
    leaf2.n_entries = 1;
    const uint8_t *id1 = crafted_add(&c, &leaf1);
    const uint8_t *id2 = crafted_add(&c, &leaf2);
    Coffer__V1__PageRef r1 = COFFER__V1__PAGE_REF__INIT;
    Coffer__V1__PageRef r2 = COFFER__V1__PAGE_REF__INIT;
    Coffer__V1__PageRef *rp[2] = {&r1, &r2};
    r1.id.data = (uint8_t *)id1;
    r1.id.len = 32;
    r1.first_key.data = (uint8_t *)"a";
    r1.first_key.len = 1;
    r1.entries = 2;
    r2.id.data = (uint8_t *)id2;
    r2.id.len = 32;
    r2.first_key.data = (uint8_t *)"m";
    r2.first_key.len = 1;
    r2.entries = 1;
    inner.children = rp;
    inner.n_children = 2;
    struct cfr_tree_root root = {{0}, 2, 3};
    memcpy(root.id, crafted_add(&c, &inner), 32);
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    /* Fixed order, the same tree reads fine... */
    set_entry(&l1[1], "b");
    crafted_free(&c);
    id1 = crafted_add(&c, &leaf1);
    id2 = crafted_add(&c, &leaf2);
    r1.id.data = (uint8_t *)id1;
    r2.id.data = (uint8_t *)id2;
    memcpy(root.id, crafted_add(&c, &inner), 32);
    assert_int_equal(walk_manifest(crafted_get, &c, &root), 0);
    /* ...but not with a wrong count, in the root or in a child ref... */
    root.entries = 4;
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    root.entries = 3;
    r1.entries = 1;
    r2.entries = 2;
    memcpy(root.id, crafted_add(&c, &inner), 32);
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    r1.entries = 2;
    r2.entries = 1;
    /* ...nor a first key that differs from the child's... */
    r2.first_key.data = (uint8_t *)"l";
    memcpy(root.id, crafted_add(&c, &inner), 32);
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    r2.first_key.data = (uint8_t *)"m";
    /* ...nor a root at another level than the height says... */
    memcpy(root.id, crafted_add(&c, &inner), 32);
    root.height = 3;
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    root.height = 1;
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    /* ...nor a height past the limit. */
    root.height = CFR_TREE_HEIGHT_MAX + 1;
    assert_int_equal(walk_manifest(crafted_get, &c, &root), CFR_ECORRUPT);
    crafted_free(&c);

    /* Reference pages. */
    Coffer__V1__RefPage rpg = COFFER__V1__REF_PAGE__INIT;
    uint8_t two[64];
    memset(two, 0x22, 32);
    memset(two + 32, 0x11, 32); /* descending */
    rpg.ids.data = two;
    rpg.ids.len = 64;
    n = coffer__v1__ref_page__pack(&rpg, buf);
    assert_int_equal(cfr_snap_refs_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    memset(two, 0x00, 32);
    n = coffer__v1__ref_page__pack(&rpg, buf);
    assert_int_equal(cfr_snap_refs_page_check(buf, n, &level, &count, &err), 0);
    assert_int_equal(count, 2);
    rpg.ids.len = 63;
    n = coffer__v1__ref_page__pack(&rpg, buf);
    assert_int_equal(cfr_snap_refs_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    /* IDs given twice (protobuf would keep the last; we refuse). */
    rpg.ids.len = 32;
    n = coffer__v1__ref_page__pack(&rpg, buf);
    memcpy(buf + n, buf, n);
    assert_int_equal(cfr_snap_refs_page_check(buf, 2 * n, &level, &count, &err),
                     CFR_ECORRUPT);
    /* A reference-list child carries no key. */
    Coffer__V1__RefPage rinner = COFFER__V1__REF_PAGE__INIT;
    rinner.level = 1;
    rinner.children = &refp;
    rinner.n_children = 1;
    n = coffer__v1__ref_page__pack(&rinner, buf);
    assert_int_equal(cfr_snap_refs_page_check(buf, n, &level, &count, &err),
                     CFR_ECORRUPT);
    ref.first_key.len = 0;
    n = coffer__v1__ref_page__pack(&rinner, buf);
    assert_int_equal(cfr_snap_refs_page_check(buf, n, &level, &count, &err), 0);
}

/*
 * Metadata growth. The requirement is for 100,000 messages over 720
 * hours: at most 10x the metadata of one snapshot, that is at most
 * 9 / 719 of the first snapshot's bytes per later hour on average. The
 * suite runs the same mailbox and hourly change for fewer hours
 * (COFFER_SNAP_GROWTH_HOURS, default 96; the full run is bench/
 * meta_growth) and holds it to that same hourly budget, then checks the
 * last snapshot reads back as the mailbox.
 */
static void
test_snap_metadata_growth(void **state)
{
    (void)state;
    int hours = 96;
    size_t messages = 100000;
    const char *env = getenv("COFFER_SNAP_GROWTH_HOURS");
    if (env != NULL) {
        hours = (int)strtol(env, NULL, 10);
        assert_true(hours >= 2);
    }
    struct mg_sim s;
    struct cfr_err err;
    assert_int_equal(mg_sim_init(&s, messages, 1, fake_id, true), 0);
    uint64_t first = 0;
    for (int h = 0; h < hours; h++) {
        if (h > 0) {
            assert_int_equal(mg_sim_hour(&s), 0);
        }
        assert_int_equal(mg_sim_snapshot(&s, &err), 0);
        if (h == 0) {
            first = s.store.unique_bytes;
        }
    }
    uint64_t total = s.store.unique_bytes;
    double per_hour = (double)(total - first) / (hours - 1);
    double ratio720 = 1.0 + per_hour * 719 / (double)first;
    printf("metadata growth: %zu messages, %d snapshots, first %llu bytes, "
           "total %llu bytes (ratio %.3f), %.0f bytes per hour, "
           "projected 720-snapshot ratio %.3f (limit 10)\n",
           messages, hours, (unsigned long long)first,
           (unsigned long long)total, (double)total / (double)first, per_hour,
           ratio720);
    assert_true(first > 20 * 1000 * 1000);
    assert_true(ratio720 <= 10.0);
    assert_int_equal(s.n_live, messages + (size_t)(hours - 1) * 3);
    assert_int_equal(s.manifest.entries, s.n_live);
    assert_int_equal(mg_sim_verify(&s, &err), 0);
    mg_sim_free(&s);
}

/* Every allocation failure on the way is an error, never a crash. */
static void
test_snap_allocation_failures(void **state)
{
    (void)state;
    struct cfr_err err;
    int failures = 0;
    for (long nth = 1; nth < 400; nth++) {
        struct mg_sim *s = store_new(fake_id);
        struct cfr_snap_manifest_writer *w = NULL;
        struct cfr_snap_manifest_reader *r = NULL;
        struct cfr_tree_root root;
        struct cfr_snap_entry got;
        struct test_entry t;
        int rc;
        cfr_mem_fail_after(nth);
        rc = cfr_snap_manifest_writer_new(NULL, mg_store_put, s, &w, &err);
        for (unsigned i = 0; rc == 0 && i < 200; i++) {
            make_entry(&t, 1000 + i, 0);
            t.key[0] = 'A'; /* all in one folder: keys in i order */
            t.key[3] = '0';
            rc = cfr_snap_manifest_writer_add(w, &t.e, &err);
        }
        if (rc == 0) {
            rc = cfr_snap_manifest_writer_finish(w, &root, &err);
        }
        if (rc == 0) {
            rc = cfr_snap_manifest_reader_new(mg_store_get, s, &root, &r, &err);
        }
        while (rc == 0 &&
               (rc = cfr_snap_manifest_reader_next(r, &got, &err)) == 1) {
            rc = 0;
        }
        cfr_mem_fail_after(0);
        cfr_snap_manifest_writer_free(w);
        cfr_snap_manifest_reader_free(r);
        store_free(s);
        assert_true(rc == 0 || rc == CFR_ENOMEM);
        if (rc == CFR_ENOMEM) {
            failures++;
        } else {
            break; /* past the last allocation: everything succeeded */
        }
    }
    assert_true(failures > 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snap_manifest_round_trip),
        cmocka_unit_test(test_snap_manifest_edit_rewrites_one_path),
        cmocka_unit_test(test_snap_manifest_deterministic),
        cmocka_unit_test(test_snap_manifest_empty),
        cmocka_unit_test(test_snap_manifest_writer_rejects_bad_entries),
        cmocka_unit_test(test_snap_refs_round_trip),
        cmocka_unit_test(test_snap_header_round_trip_and_version),
        cmocka_unit_test(test_snap_vectors_manifest),
        cmocka_unit_test(test_snap_hostile_pages),
        cmocka_unit_test(test_snap_allocation_failures),
        cmocka_unit_test(test_snap_metadata_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
