/*
 * vault_store_test.c - the vault's storage semantics (vault/store.c) over
 * real RocksDB databases in temporary directories: commits and their
 * presence checks, reference counts over shared page trees, leases, GC
 * racing uploads, retention, holds, purge down to the bytes on disk,
 * corruption, append-only puts.
 *
 * Snapshots are built as an agent builds them: sorted random 32-byte IDs
 * through cfr_snap_refs_writer, whose pages go to the vault in clear, and
 * fake sealed objects (a plausible 64-byte envelope header, then filler
 * derived from the ID, so the same ID always has the same bytes).
 */
/* nftw: removing and grepping the temporary trees. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "err.h"
#include "id.h"
#include "log.h"
#include "mem.h"
#include "snap.h"
#include "store.h"

#define T0       (INT64_C(1790000000000)) /* the manual clock's start */
#define LEASE_MS (CFR_MS_PER_HOUR)
#define OBJ_LEN  120

/* ---- helpers ------------------------------------------------------------ */

static uint64_t
prng(uint64_t *s)
{
    /* xorshift64*: deterministic per seed, so a failure can be replayed. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static void
rand_id(uint64_t *s, uint8_t id[VAULT_ID_LEN])
{
    for (size_t i = 0; i < VAULT_ID_LEN; i += 8) {
        uint64_t v = prng(s);
        memcpy(id + i, &v, 8);
    }
}

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, VAULT_ID_LEN);
}

static double
mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A sealed object's bytes for id: envelope version 1, type chunk, then the
 * ID repeated (or a marker when given), OBJ_LEN bytes or len when set.
 */
static uint8_t *
sealed_bytes(const uint8_t id[VAULT_ID_LEN], const char *marker, size_t len)
{
    if (len == 0) {
        len = OBJ_LEN;
    }
    uint8_t *p = malloc(len);
    assert_non_null(p);
    memset(p, 0, 64);
    p[0] = 1;
    p[1] = 1;
    size_t ml = marker != NULL ? strlen(marker) : 0;
    for (size_t i = 8; i < len; i++) {
        p[i] =
            ml > 0 ? (uint8_t)marker[(i - 8) % ml] : id[(i - 8) % VAULT_ID_LEN];
    }
    return p;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)f;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void
remove_tree(const char *dir)
{
    assert_int_equal(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* nftw has no context argument: the grep's state lives here. */
static const char *grep_needle;
static int grep_hits;

static const uint8_t *
find_bytes(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (hay[i] == *(const uint8_t *)needle &&
            memcmp(hay + i, needle, m) == 0) {
            return hay + i;
        }
    }
    return NULL;
}

static int
grep_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void)f;
    if (flag != FTW_F || sb->st_size == 0) {
        return 0;
    }
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return 0; /* removed by RocksDB meanwhile */
    }
    size_t n = (size_t)sb->st_size;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    if (find_bytes(buf, got, grep_needle, strlen(grep_needle)) != NULL) {
        grep_hits++;
    }
    free(buf);
    return 0;
}

static int
grep_tree(const char *dir, const char *needle)
{
    grep_needle = needle;
    grep_hits = 0;
    assert_int_equal(nftw(dir, grep_one, 16, FTW_PHYS), 0);
    return grep_hits;
}

/* ---- fixture ------------------------------------------------------------ */

struct fx {
    char dir[256];
    struct cfr_clock *clock;
    struct vault_store *st;
    struct vault_tenant *t;
    uint64_t rng;
};

static void
fx_open_store(struct fx *f)
{
    struct cfr_err err;
    struct vault_store_opts o = {
        .dir = f->dir,
        .cache_bytes = 16u << 20,
        .clock = f->clock,
        .lease_max_ms = LEASE_MS,
        .tombstone_keep_ms = 7 * CFR_MS_PER_DAY,
    };
    f->st = vault_store_open(&o, &err);
    if (f->st == NULL) {
        fail_msg("store open: %s", err.msg);
    }
    f->t = vault_store_tenant(f->st, "acme", true, &err);
    if (f->t == NULL) {
        fail_msg("tenant: %s", err.msg);
    }
}

static int
fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    int w =
        snprintf(f->dir, sizeof(f->dir), "%s/vault_store_test.XXXXXX", base);
    assert_true(w > 0 && (size_t)w < sizeof(f->dir));
    assert_non_null(mkdtemp(f->dir));
    f->clock = cfr_clock_manual_new(T0);
    assert_non_null(f->clock);
    f->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^ 0x5eed;
    print_message("seed %llu\n", (unsigned long long)f->rng);
    fx_open_store(f);
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;
    vault_store_close(f->st);
    cfr_clock_free(f->clock);
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* ---- building and uploading snapshots ----------------------------------- */

/* A snapshot as an agent holds it before upload. */
struct build {
    uint8_t (*ids)[VAULT_ID_LEN]; /* sealed objects, sorted */
    size_t n_ids;
    struct vault_object *pages; /* reference pages, ids and data owned */
    size_t n_pages, cap_pages;
    struct vault_tree_root root;
    uint8_t mailbox[VAULT_ID_LEN];
    uint8_t header_id[VAULT_ID_LEN];
    const char *marker; /* for every sealed object's bytes, or NULL */
    const char *header; /* the sealed header's bytes, or NULL */
    size_t obj_len;
};

static int
page_sink(void *ctx, uint32_t level, const uint8_t *page, size_t len,
          uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct build *b = ctx;
    (void)level;
    (void)err;
    cfr_id_plain(page, len, id_r);
    if (b->n_pages == b->cap_pages) {
        b->cap_pages = b->cap_pages == 0 ? 16 : 2 * b->cap_pages;
        b->pages = realloc(b->pages, b->cap_pages * sizeof(*b->pages));
        assert_non_null(b->pages);
    }
    uint8_t *id = malloc(VAULT_ID_LEN);
    uint8_t *data = malloc(len > 0 ? len : 1);
    assert_non_null(id);
    assert_non_null(data);
    memcpy(id, id_r, VAULT_ID_LEN);
    if (len > 0) {
        memcpy(data, page, len);
    }
    b->pages[b->n_pages++] =
        (struct vault_object){id, VAULT_OBJ_REF_PAGE, data, len};
    return 0;
}

/* Takes ids (malloc'd, n entries); sorts them and writes the tree. */
static void
build_init(struct build *b, uint8_t (*ids)[VAULT_ID_LEN], size_t n,
           const uint8_t mailbox[VAULT_ID_LEN], uint64_t *rng)
{
    struct cfr_err err;
    struct cfr_snap_refs_writer *w;
    memset(b, 0, sizeof(*b));
    qsort(ids, n, VAULT_ID_LEN, id_cmp);
    b->ids = ids;
    b->n_ids = n;
    memcpy(b->mailbox, mailbox, VAULT_ID_LEN);
    rand_id(rng, b->header_id);
    assert_int_equal(cfr_snap_refs_writer_new(NULL, page_sink, b, &w, &err), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(cfr_snap_refs_writer_add(w, ids[i], &err), 0);
    }
    struct cfr_tree_root root;
    assert_int_equal(cfr_snap_refs_writer_finish(w, &root, &err), 0);
    cfr_snap_refs_writer_free(w);
    memcpy(b->root.id, root.id, VAULT_ID_LEN);
    b->root.height = root.height;
    b->root.entries = root.entries;
}

static void
build_fini(struct build *b)
{
    for (size_t i = 0; i < b->n_pages; i++) {
        free((void *)b->pages[i].id);
        free((void *)b->pages[i].data);
    }
    free(b->pages);
    free(b->ids);
    memset(b, 0, sizeof(*b));
}

static uint8_t (*rand_ids(uint64_t *rng, size_t n))[VAULT_ID_LEN]
{
    uint8_t(*ids)[VAULT_ID_LEN] = calloc(n, VAULT_ID_LEN);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        rand_id(rng, ids[i]);
    }
    return ids;
}

static void
lease_ok(struct vault_tenant *t, uint8_t lease[VAULT_LEASE_LEN])
{
    struct cfr_err err;
    int64_t exp;
    const uint8_t session[32] = {7};
    int rc = vault_lease_open(t, session, sizeof(session), LEASE_MS, lease,
                              &exp, &err);
    if (rc != 0) {
        fail_msg("lease: %s", err.msg);
    }
}

/* Puts one sealed object of the build (by its bytes rule). */
static int
put_sealed(struct vault_tenant *t, const uint8_t *lease, const struct build *b,
           const uint8_t id[VAULT_ID_LEN], struct cfr_err *err)
{
    uint8_t *data = sealed_bytes(id, b->marker, b->obj_len);
    struct vault_object o = {id, VAULT_OBJ_SEALED, data,
                             b->obj_len != 0 ? b->obj_len : OBJ_LEN};
    int rc = vault_store_put(t, lease, &o, 1, NULL, err);
    free(data);
    return rc;
}

/*
 * Uploads what the store lacks (asking missing() under the lease, as an
 * agent does), except skip_obj / skip_page when not SIZE_MAX, then puts
 * the pages; returns the commit's code.
 */
static int
upload(struct vault_tenant *t, const uint8_t *lease, const struct build *b,
       size_t skip_obj, size_t skip_page, struct vault_snapshot *snap_r,
       bool *already_r, struct cfr_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < b->n_ids && rc == 0; i += VAULT_IDS_MAX) {
        size_t n = b->n_ids - i < VAULT_IDS_MAX ? b->n_ids - i : VAULT_IDS_MAX;
        uint32_t *miss = calloc(n, sizeof(*miss));
        size_t n_miss;
        assert_non_null(miss);
        rc = vault_store_missing(t, lease,
                                 (const uint8_t(*)[VAULT_ID_LEN])b->ids + i, n,
                                 miss, &n_miss, err);
        for (size_t k = 0; k < n_miss && rc == 0; k++) {
            if (i + miss[k] != skip_obj) {
                rc = put_sealed(t, lease, b, b->ids[i + miss[k]], err);
            }
        }
        free(miss);
    }
    for (size_t i = 0; i < b->n_pages && rc == 0; i++) {
        if (i != skip_page) {
            rc = vault_store_put(t, lease, &b->pages[i], 1, NULL, err);
        }
    }
    if (rc != 0) {
        return rc;
    }
    struct vault_commit c = {
        .lease_id = lease,
        .mailbox_id = b->mailbox,
        .header_id = b->header_id,
        .header =
            (const uint8_t *)(b->header != NULL ? b->header : "sealed-header"),
        .header_len = b->header != NULL ? strlen(b->header) : 13,
        .refs = b->root,
    };
    bool already = false;
    rc = vault_store_commit(t, &c, snap_r, &already, err);
    if (already_r != NULL) {
        *already_r = already;
    }
    return rc;
}

static void
upload_ok(struct vault_tenant *t, const struct build *b,
          struct vault_snapshot *snap_r)
{
    struct cfr_err err;
    uint8_t lease[VAULT_LEASE_LEN];
    lease_ok(t, lease);
    int rc = upload(t, lease, b, SIZE_MAX, SIZE_MAX, snap_r, NULL, &err);
    if (rc != 0) {
        fail_msg("upload: %s", err.msg);
    }
    assert_int_equal(vault_lease_close(t, lease, &err), 0);
}

static bool
present(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN])
{
    struct cfr_err err;
    uint32_t miss[1];
    size_t n_miss = 9;
    assert_int_equal(vault_store_missing(t, NULL,
                                         (const uint8_t(*)[VAULT_ID_LEN])id, 1,
                                         miss, &n_miss, &err),
                     0);
    return n_miss == 0;
}

static void
gc_ok(struct vault_tenant *t, struct vault_maint_stats *ms)
{
    struct cfr_err err;
    struct vault_maint_stats local;
    int rc = vault_store_gc(t, ms != NULL ? ms : &local, &err);
    if (rc != 0) {
        fail_msg("gc: %s", err.msg);
    }
}

struct listing {
    size_t n;
    struct vault_snapshot s[64];
    char header[64][16];
};

static int
list_fn(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
        size_t header_len)
{
    struct listing *l = ctx;
    assert_true(l->n < 64);
    l->s[l->n] = *s;
    if (header != NULL) {
        assert_true(header_len < 16);
        memcpy(l->header[l->n], header, header_len);
        l->header[l->n][header_len] = '\0';
    }
    l->n++;
    return 0;
}

static void
list_ok(struct vault_tenant *t, const uint8_t *mailbox, struct listing *l)
{
    struct cfr_err err;
    memset(l, 0, sizeof(*l));
    assert_int_equal(vault_store_snapshots(t, mailbox, true, list_fn, l, &err),
                     0);
}

static uint64_t
object_count(struct vault_tenant *t)
{
    struct cfr_err err;
    struct vault_tenant_stats s;
    assert_int_equal(vault_store_stats(t, &s, &err), 0);
    return s.objects;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_store_commit_round_trip(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct build b;
    uint8_t mbox[VAULT_ID_LEN], mbox2[VAULT_ID_LEN];
    rand_id(&f->rng, mbox);
    rand_id(&f->rng, mbox2);
    build_init(&b, rand_ids(&f->rng, 1500), 1500, mbox, &f->rng);
    /* Big enough for an inner level: the walk must cross pages. */
    assert_true(b.root.height >= 2);
    assert_true(b.n_pages > 10);

    cfr_clock_advance(f->clock, 5000);
    struct vault_snapshot s;
    upload_ok(f->t, &b, &s);
    assert_memory_equal(s.header_id, b.header_id, VAULT_ID_LEN);
    assert_memory_equal(s.mailbox_id, mbox, VAULT_ID_LEN);
    assert_memory_equal(s.refs.id, b.root.id, VAULT_ID_LEN);
    assert_int_equal(s.refs.height, b.root.height);
    assert_int_equal(s.refs.entries, 1500);
    /* received_ms is the store's clock: there is no client time at all. */
    assert_int_equal(s.received_ms, T0 + 5000);
    assert_false(s.held);

    /* A second snapshot of another mailbox, later. */
    struct build b2;
    build_init(&b2, rand_ids(&f->rng, 40), 40, mbox2, &f->rng);
    cfr_clock_advance(f->clock, 1000);
    upload_ok(f->t, &b2, NULL);

    /* The same commit again: the first record, not a new one. */
    cfr_clock_advance(f->clock, 60000);
    uint8_t lease[VAULT_LEASE_LEN];
    lease_ok(f->t, lease);
    bool already = false;
    struct vault_snapshot again;
    assert_int_equal(
        upload(f->t, lease, &b, SIZE_MAX, SIZE_MAX, &again, &already, &err), 0);
    assert_true(already);
    assert_int_equal(again.received_ms, T0 + 5000);

    struct listing l;
    list_ok(f->t, mbox, &l);
    assert_int_equal(l.n, 1);
    assert_memory_equal(l.s[0].header_id, b.header_id, VAULT_ID_LEN);
    assert_string_equal(l.header[0], "sealed-header");
    list_ok(f->t, mbox2, &l);
    assert_int_equal(l.n, 1);
    assert_memory_equal(l.s[0].header_id, b2.header_id, VAULT_ID_LEN);
    assert_int_equal(l.s[0].received_ms, T0 + 6000);
    list_ok(f->t, NULL, &l);
    assert_int_equal(l.n, 2);

    /* Every object and page round-trips with its kind. */
    struct cfr_buf out;
    enum vault_object_kind kind;
    cfr_buf_init(&out, 1u << 20);
    assert_int_equal(vault_store_get(f->t, b.ids[7], &out, &kind, &err), 0);
    assert_int_equal(kind, VAULT_OBJ_SEALED);
    uint8_t *want = sealed_bytes(b.ids[7], NULL, 0);
    assert_int_equal(out.len, OBJ_LEN);
    assert_memory_equal(out.data, want, OBJ_LEN);
    free(want);
    assert_int_equal(vault_store_get(f->t, b.pages[3].id, &out, &kind, &err),
                     0);
    assert_int_equal(kind, VAULT_OBJ_REF_PAGE);
    assert_int_equal(out.len, b.pages[3].len);
    assert_memory_equal(out.data, b.pages[3].data, out.len);
    cfr_buf_fini(&out);

    struct vault_tenant_stats ts;
    assert_int_equal(vault_store_stats(f->t, &ts, &err), 0);
    assert_int_equal(ts.snapshots, 2);
    assert_int_equal(ts.objects, 1540 + b.n_pages + b2.n_pages);
    assert_int_equal(ts.live_leases, 1);

    /* A different snapshot under a used header ID is refused. */
    struct vault_commit c = {.lease_id = lease,
                             .mailbox_id = mbox2,
                             .header_id = b.header_id,
                             .header = (const uint8_t *)"x",
                             .header_len = 1,
                             .refs = b.root};
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_EEXIST);
    build_fini(&b);
    build_fini(&b2);
}

static void
test_store_commit_refuses_missing(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct build b;
    uint8_t mbox[VAULT_ID_LEN];
    uint8_t lease[VAULT_LEASE_LEN];
    char hex[2 * VAULT_ID_LEN + 1];
    rand_id(&f->rng, mbox);
    build_init(&b, rand_ids(&f->rng, 800), 800, mbox, &f->rng);
    assert_true(b.root.height >= 2);
    lease_ok(f->t, lease);

    /* One sealed object short: refused, naming it. */
    assert_int_equal(upload(f->t, lease, &b, 433, SIZE_MAX, NULL, NULL, &err),
                     CFR_ENOTFOUND);
    assert_non_null(strstr(err.msg, cfr_hex_encode(b.ids[433], 32, hex)));
    struct listing l;
    list_ok(f->t, NULL, &l);
    assert_int_equal(l.n, 0);

    /* One leaf page short (pages come leaves first): refused too. */
    assert_int_equal(put_sealed(f->t, lease, &b, b.ids[433], &err), 0);
    size_t leaf = 2;
    struct cfr_err e2;
    /* Forget the page by never having put it: use a fresh tenant. */
    struct vault_tenant *t2 = vault_store_tenant(f->st, "other", true, &e2);
    assert_non_null(t2);
    uint8_t lease2[VAULT_LEASE_LEN];
    lease_ok(t2, lease2);
    assert_int_equal(upload(t2, lease2, &b, SIZE_MAX, leaf, NULL, NULL, &err),
                     CFR_ENOTFOUND);
    assert_non_null(strstr(err.msg, cfr_hex_encode(b.pages[leaf].id, 32, hex)));
    list_ok(t2, NULL, &l);
    assert_int_equal(l.n, 0);
    /* Nothing was counted by the refused commits: once the leases end,
     * GC takes every object of both tenants. */
    assert_true(object_count(f->t) > 800);
    assert_int_equal(vault_lease_close(f->t, lease, &err), 0);
    assert_int_equal(vault_lease_close(t2, lease2, &err), 0);
    gc_ok(f->t, NULL);
    gc_ok(t2, NULL);
    assert_int_equal(object_count(f->t), 0);
    assert_int_equal(object_count(t2), 0);

    /* With everything present the same commit goes through. */
    upload_ok(f->t, &b, NULL);
    list_ok(f->t, mbox, &l);
    assert_int_equal(l.n, 1);
    /* A tenant does not see another's snapshots or objects. */
    list_ok(t2, NULL, &l);
    assert_int_equal(l.n, 0);
    assert_false(present(t2, b.ids[0]));
    build_fini(&b);
}

static void
test_store_commit_rejects_bad_trees(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct build b;
    uint8_t mbox[VAULT_ID_LEN];
    uint8_t lease[VAULT_LEASE_LEN];
    rand_id(&f->rng, mbox);
    build_init(&b, rand_ids(&f->rng, 600), 600, mbox, &f->rng);
    assert_true(b.root.height >= 2);
    lease_ok(f->t, lease);
    /* Everything present, but the commit names its tree wrongly. */
    for (size_t i = 0; i < b.n_ids; i++) {
        assert_int_equal(put_sealed(f->t, lease, &b, b.ids[i], &err), 0);
    }
    for (size_t i = 0; i < b.n_pages; i++) {
        assert_int_equal(
            vault_store_put(f->t, lease, &b.pages[i], 1, NULL, &err), 0);
    }
    struct vault_commit c = {.lease_id = lease,
                             .mailbox_id = mbox,
                             .header_id = b.header_id,
                             .header = (const uint8_t *)"h",
                             .header_len = 1,
                             .refs = b.root};
    bool already;
    /* A root one level too high or too low: its level does not match. */
    c.refs.height = b.root.height + 1;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_ECORRUPT);
    c.refs.height = b.root.height - 1;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_ECORRUPT);
    c.refs.height = 0;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_EINVAL);
    c.refs.height = CFR_TREE_HEIGHT_MAX + 1;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_EINVAL);
    /* A sealed object as the root: not a reference page. */
    memcpy(c.refs.id, b.ids[0], VAULT_ID_LEN);
    c.refs.height = 1;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_ECORRUPT);
    /* A header over the limit. */
    c.refs = b.root;
    c.header_len = VAULT_HEADER_MAX + 1;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_ELIMIT);
    struct listing l;
    list_ok(f->t, NULL, &l);
    assert_int_equal(l.n, 0);
    /* Nothing was counted: all of it is garbage once the lease ends. */
    assert_int_equal(vault_lease_close(f->t, lease, &err), 0);
    struct vault_maint_stats ms;
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 600 + b.n_pages);
    build_fini(&b);
}

static void
test_store_refcounts_shared_pages(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct build a, b;
    uint8_t mbox[VAULT_ID_LEN];
    rand_id(&f->rng, mbox);
    /* b keeps 1900 of a's 2000 IDs and has 100 others. */
    const size_t n = 2000, drop = 100;
    uint8_t(*ia)[VAULT_ID_LEN] = rand_ids(&f->rng, n);
    qsort(ia, n, VAULT_ID_LEN, id_cmp);
    uint8_t(*ib)[VAULT_ID_LEN] = calloc(n, VAULT_ID_LEN);
    assert_non_null(ib);
    bool *only_a = calloc(n, sizeof(*only_a));
    assert_non_null(only_a);
    /* The replaced IDs are one run of a's sorted IDs, and their
     * replacements sort among them (only the last byte differs), as an
     * edit of one folder's messages changes one stretch of the list. */
    for (size_t i = 0; i < n; i++) {
        memcpy(ib[i], ia[i], VAULT_ID_LEN);
        if (i >= 900 && i < 900 + drop) {
            only_a[i] = true;
            ib[i][VAULT_ID_LEN - 1] ^= 0x5a;
        }
    }
    uint8_t(*ia_copy)[VAULT_ID_LEN] = malloc(n * VAULT_ID_LEN);
    assert_non_null(ia_copy);
    memcpy(ia_copy, ia, n * VAULT_ID_LEN);
    build_init(&a, ia, n, mbox, &f->rng);
    build_init(&b, ib, n, mbox, &f->rng);
    upload_ok(f->t, &a, NULL);
    cfr_clock_advance(f->clock, CFR_MS_PER_DAY);
    upload_ok(f->t, &b, NULL);

    /* Pages of a not in b, and how many are shared. */
    size_t shared = 0;
    bool *page_only_a = calloc(a.n_pages, sizeof(*page_only_a));
    assert_non_null(page_only_a);
    for (size_t i = 0; i < a.n_pages; i++) {
        page_only_a[i] = true;
        for (size_t j = 0; j < b.n_pages; j++) {
            if (memcmp(a.pages[i].id, b.pages[j].id, VAULT_ID_LEN) == 0) {
                page_only_a[i] = false;
                shared++;
                break;
            }
        }
    }
    print_message("pages: a %zu, b %zu, shared %zu\n", a.n_pages, b.n_pages,
                  shared);
    /* Content-defined pages: most survive an edit of one stretch. */
    assert_true(shared > a.n_pages / 2);
    assert_true(shared < a.n_pages);

    /* Nothing is collected while both snapshots stand. */
    struct vault_maint_stats ms;
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 0);

    /* Retention drops a (older than the window, not the newest). */
    cfr_clock_advance(f->clock, 31 * CFR_MS_PER_DAY);
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 1);
    gc_ok(f->t, &ms);
    size_t n_pages_only_a = 0;
    for (size_t i = 0; i < a.n_pages; i++) {
        n_pages_only_a += page_only_a[i];
        assert_int_equal(present(f->t, a.pages[i].id), !page_only_a[i]);
    }
    for (size_t i = 0; i < n; i++) {
        /* ia_copy is a's IDs in a's order; b replaced exactly only_a. */
        bool in_b = bsearch(ia_copy[i], b.ids, n, VAULT_ID_LEN, id_cmp) != NULL;
        assert_int_equal(in_b, !only_a[i]);
        assert_int_equal(present(f->t, ia_copy[i]), in_b);
    }
    for (size_t i = 0; i < b.n_pages; i++) {
        assert_true(present(f->t, b.pages[i].id));
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(present(f->t, b.ids[i]));
    }
    assert_int_equal(ms.objects_removed, drop + n_pages_only_a);
    assert_int_equal(object_count(f->t), n + b.n_pages);

    /* Drop b too (purge); then nothing is left. */
    assert_int_equal(vault_store_purge_mailbox(f->t, mbox, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 1);
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, n + b.n_pages);
    assert_int_equal(object_count(f->t), 0);
    free(page_only_a);
    free(only_a);
    free(ia_copy);
    build_fini(&a);
    build_fini(&b);
}

static void
test_store_lease_protects_uploads(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct build b;
    uint8_t mbox[VAULT_ID_LEN];
    uint8_t l1[VAULT_LEASE_LEN], l2[VAULT_LEASE_LEN];
    rand_id(&f->rng, mbox);
    build_init(&b, rand_ids(&f->rng, 10), 10, mbox, &f->rng);

    /* Put under a live lease, not committed: GC keeps them. */
    lease_ok(f->t, l1);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(put_sealed(f->t, l1, &b, b.ids[i], &err), 0);
    }
    gc_ok(f->t, NULL);
    for (size_t i = 0; i < 10; i++) {
        assert_true(present(f->t, b.ids[i]));
    }

    /* A second upload finds ids 0..4 present: missing() under its lease
     * protects them even after the first lease is gone. */
    cfr_clock_advance(f->clock, LEASE_MS / 2);
    lease_ok(f->t, l2);
    uint32_t miss[5];
    size_t n_miss = 99;
    assert_int_equal(vault_store_missing(f->t, l2,
                                         (const uint8_t(*)[VAULT_ID_LEN])b.ids,
                                         5, miss, &n_miss, &err),
                     0);
    assert_int_equal(n_miss, 0);
    /* l1 expires (its own clock: half a lease later plus one ms). */
    cfr_clock_advance(f->clock, LEASE_MS / 2 + 1);
    struct vault_maint_stats ms;
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 5);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(present(f->t, b.ids[i]), i < 5);
    }
    /* An expired lease no longer accepts puts. */
    assert_int_equal(put_sealed(f->t, l1, &b, b.ids[7], &err), CFR_ENOTFOUND);
    /* Nor commits. */
    struct vault_commit c = {.lease_id = l1,
                             .mailbox_id = mbox,
                             .header_id = b.header_id,
                             .header = (const uint8_t *)"h",
                             .header_len = 1,
                             .refs = b.root};
    bool already;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err),
                     CFR_ENOTFOUND);
    assert_false(present(f->t, b.ids[7]));
    /* And l2 expires too. */
    cfr_clock_advance(f->clock, LEASE_MS);
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 5);
    assert_int_equal(object_count(f->t), 0);
    struct vault_tenant_stats ts;
    assert_int_equal(vault_store_stats(f->t, &ts, &err), 0);
    assert_int_equal(ts.live_leases, 0);
    /* missing() under an unknown lease is refused. */
    assert_int_equal(vault_store_missing(f->t, l2,
                                         (const uint8_t(*)[VAULT_ID_LEN])b.ids,
                                         5, miss, &n_miss, &err),
                     CFR_ENOTFOUND);
    build_fini(&b);
}

/* ---- GC racing uploads -------------------------------------------------- */

#define RACE_WRITERS   3
#define RACE_CYCLES    120
#define RACE_SECONDS   25.0
#define RACE_NEW       30
#define RACE_KEEP      40
#define RACE_HISTORY   12
#define RACE_WINDOW_MS (20 * CFR_MS_PER_SEC)

struct race {
    struct fx *f;
    atomic_int writers_left;
    atomic_int failures;
    atomic_int commits;
    atomic_int gcs;
    double deadline;
};

struct writer {
    struct race *r;
    unsigned idx;
    uint64_t rng;
};

static void *
race_writer(void *arg)
{
    struct writer *w = arg;
    struct fx *f = w->r->f;
    struct cfr_err err;
    uint8_t mbox[VAULT_ID_LEN];
    /* The IDs of this writer's last RACE_HISTORY snapshots, a ring. */
    uint8_t(*hist[RACE_HISTORY])[VAULT_ID_LEN] = {NULL};
    size_t n_hist[RACE_HISTORY] = {0};
    rand_id(&w->rng, mbox);
    for (int c = 0; c < RACE_CYCLES && mono_s() < w->r->deadline; c++) {
        /*
         * Reuse IDs of the previous snapshot (alive) and of the oldest one
         * remembered, which retention has likely dropped and GC may be
         * deleting right now: missing() says present, its lease must keep
         * them until the commit counts them.
         */
        const uint8_t(*prev)[VAULT_ID_LEN] =
            hist[(c + RACE_HISTORY - 1) % RACE_HISTORY];
        size_t n_prev = n_hist[(c + RACE_HISTORY - 1) % RACE_HISTORY];
        const uint8_t(*old)[VAULT_ID_LEN] = hist[c % RACE_HISTORY];
        size_t n_old = n_hist[c % RACE_HISTORY];
        size_t k1 = n_prev < RACE_KEEP ? n_prev : RACE_KEEP;
        size_t k2 = n_old < RACE_KEEP ? n_old : RACE_KEEP;
        size_t n = k1 + k2 + RACE_NEW;
        uint8_t(*ids)[VAULT_ID_LEN] = calloc(n, VAULT_ID_LEN);
        if (ids == NULL) {
            atomic_fetch_add(&w->r->failures, 1);
            break;
        }
        for (size_t i = 0; i < k1; i++) {
            memcpy(ids[i], prev[i], VAULT_ID_LEN);
        }
        for (size_t i = 0; i < k2; i++) {
            memcpy(ids[k1 + i], old[n_old - 1 - i], VAULT_ID_LEN);
        }
        for (size_t i = k1 + k2; i < n; i++) {
            rand_id(&w->rng, ids[i]);
        }
        /* Sort and drop duplicates (prev and old may share IDs). */
        qsort(ids, n, VAULT_ID_LEN, id_cmp);
        size_t u = 0;
        for (size_t i = 0; i < n; i++) {
            if (u == 0 || memcmp(ids[u - 1], ids[i], VAULT_ID_LEN) != 0) {
                memmove(ids[u++], ids[i], VAULT_ID_LEN);
            }
        }
        n = u;
        struct build b;
        build_init(&b, ids, n, mbox, &w->rng);
        uint8_t lease[VAULT_LEASE_LEN];
        int64_t exp;
        int rc = vault_lease_open(f->t, NULL, 0, 0, lease, &exp, &err);
        if (rc == 0) {
            rc = upload(f->t, lease, &b, SIZE_MAX, SIZE_MAX, NULL, NULL, &err);
        }
        if (rc == 0) {
            rc = vault_lease_close(f->t, lease, &err);
        }
        if (rc != 0) {
            print_message("writer %u cycle %d: %s\n", w->idx, c, err.msg);
            atomic_fetch_add(&w->r->failures, 1);
        } else {
            atomic_fetch_add(&w->r->commits, 1);
        }
        size_t slot = c % RACE_HISTORY;
        free(hist[slot]);
        hist[slot] = b.ids; /* taken from the build */
        n_hist[slot] = n;
        b.ids = NULL;
        build_fini(&b);
        cfr_clock_advance(f->clock, CFR_MS_PER_SEC);
    }
    for (size_t i = 0; i < RACE_HISTORY; i++) {
        free(hist[i]);
    }
    atomic_fetch_sub(&w->r->writers_left, 1);
    return NULL;
}

static void *
race_gc(void *arg)
{
    struct race *r = arg;
    struct cfr_err err;
    struct vault_maint_stats ms;
    while (atomic_load(&r->writers_left) > 0) {
        if (vault_store_retention(r->f->t, RACE_WINDOW_MS, &ms, &err) != 0 ||
            vault_store_gc(r->f->t, &ms, &err) != 0) {
            print_message("gc: %s\n", err.msg);
            atomic_fetch_add(&r->failures, 1);
            break;
        }
        atomic_fetch_add(&r->gcs, 1);
    }
    return NULL;
}

static int
tree_get(void *ctx, const uint8_t id[CFR_TREE_ID_LEN], struct cfr_buf *page,
         struct cfr_err *err)
{
    return vault_store_get(ctx, id, page, NULL, err);
}

struct verify {
    struct vault_tenant *t;
    size_t snapshots;
    size_t ids;
    size_t lost;
};

/* Walks a snapshot's whole tree (every page read back) and every ID. */
static int
verify_fn(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
          size_t header_len)
{
    struct verify *v = ctx;
    struct cfr_err err;
    struct cfr_snap_refs_reader *r;
    struct cfr_tree_root root;
    uint8_t id[VAULT_ID_LEN];
    (void)header;
    (void)header_len;
    memcpy(root.id, s->refs.id, VAULT_ID_LEN);
    root.height = s->refs.height;
    root.entries = s->refs.entries;
    assert_int_equal(cfr_snap_refs_reader_new(tree_get, v->t, &root, &r, &err),
                     0);
    int rc;
    while ((rc = cfr_snap_refs_reader_next(r, id, &err)) == 1) {
        v->ids++;
        if (!present(v->t, id)) {
            v->lost++;
        }
    }
    if (rc != 0) {
        print_message("tree walk: %s\n", err.msg);
        v->lost++;
    }
    cfr_snap_refs_reader_free(r);
    v->snapshots++;
    return 0;
}

static void
test_store_gc_races_uploads(void **state)
{
    struct fx *f = *state;
    struct race r = {.f = f, .deadline = mono_s() + RACE_SECONDS};
    struct writer w[RACE_WRITERS];
    pthread_t th[RACE_WRITERS], gc;
    atomic_init(&r.writers_left, RACE_WRITERS);
    atomic_init(&r.failures, 0);
    atomic_init(&r.commits, 0);
    atomic_init(&r.gcs, 0);
    for (unsigned i = 0; i < RACE_WRITERS; i++) {
        w[i] = (struct writer){&r, i, f->rng + 977 * (i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, race_writer, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&gc, NULL, race_gc, &r), 0);
    for (unsigned i = 0; i < RACE_WRITERS; i++) {
        pthread_join(th[i], NULL);
    }
    pthread_join(gc, NULL);
    print_message("race: %d commits, %d gc runs\n", atomic_load(&r.commits),
                  atomic_load(&r.gcs));
    assert_int_equal(atomic_load(&r.failures), 0);
    assert_true(atomic_load(&r.commits) >= 3 * 20);
    assert_true(atomic_load(&r.gcs) >= 2);

    /* One last retention and GC, then everything referenced is there. */
    struct cfr_err err;
    struct vault_maint_stats ms;
    assert_int_equal(vault_store_retention(f->t, RACE_WINDOW_MS, &ms, &err), 0);
    gc_ok(f->t, &ms);
    struct verify v = {.t = f->t};
    assert_int_equal(
        vault_store_snapshots(f->t, NULL, false, verify_fn, &v, &err), 0);
    print_message("race: %zu snapshots, %zu IDs checked, %zu lost\n",
                  v.snapshots, v.ids, v.lost);
    assert_true(v.snapshots >= RACE_WRITERS);
    assert_true(v.ids > 0);
    assert_int_equal(v.lost, 0);
}

/* ---- retention, holds, purge -------------------------------------------- */

struct tombs {
    size_t n;
    uint8_t id[8][VAULT_ID_LEN];
    int64_t at[8];
};

static int
tomb_fn(void *ctx, const uint8_t header_id[VAULT_ID_LEN], int64_t dropped_ms)
{
    struct tombs *t = ctx;
    assert_true(t->n < 8);
    memcpy(t->id[t->n], header_id, VAULT_ID_LEN);
    t->at[t->n++] = dropped_ms;
    return 0;
}

static void
test_store_retention_holds_purge(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    uint8_t m1[VAULT_ID_LEN], m2[VAULT_ID_LEN];
    rand_id(&f->rng, m1);
    rand_id(&f->rng, m2);
    /* m1 at days 0, 10, 20, 40; m2 once, at day 0. */
    static const int days[] = {0, 10, 20, 40};
    struct build b1[4], b2;
    int64_t at = 0;
    for (int i = 0; i < 4; i++) {
        cfr_clock_advance(f->clock, (days[i] * CFR_MS_PER_DAY) - at);
        at = days[i] * CFR_MS_PER_DAY;
        build_init(&b1[i], rand_ids(&f->rng, 50), 50, m1, &f->rng);
        upload_ok(f->t, &b1[i], NULL);
        if (i == 0) {
            build_init(&b2, rand_ids(&f->rng, 50), 50, m2, &f->rng);
            upload_ok(f->t, &b2, NULL);
        }
    }
    assert_int_equal(vault_store_hold(f->t, b1[1].header_id, true, &err), 0);
    cfr_clock_advance(f->clock, 5 * CFR_MS_PER_DAY); /* day 45 */

    struct vault_maint_stats ms;
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    /* Day 0 of m1 goes; day 10 is held; 20 and 40 are in the window; m2's
     * only snapshot is its newest, however old. */
    assert_int_equal(ms.snapshots_removed, 1);
    struct listing l;
    list_ok(f->t, m1, &l);
    assert_int_equal(l.n, 3);
    assert_memory_equal(l.s[0].header_id, b1[1].header_id, VAULT_ID_LEN);
    assert_true(l.s[0].held);
    assert_memory_equal(l.s[1].header_id, b1[2].header_id, VAULT_ID_LEN);
    assert_memory_equal(l.s[2].header_id, b1[3].header_id, VAULT_ID_LEN);
    list_ok(f->t, m2, &l);
    assert_int_equal(l.n, 1);
    struct tombs tb = {0};
    assert_int_equal(vault_store_tombstones(f->t, tomb_fn, &tb, &err), 0);
    assert_int_equal(tb.n, 1);
    assert_memory_equal(tb.id[0], b1[0].header_id, VAULT_ID_LEN);
    assert_int_equal(tb.at[0], T0 + 45 * CFR_MS_PER_DAY);

    /* Released, day 10 still stays while what superseded it (day 20) is
     * inside the window: mail deleted between days 10 and 20 was deleted
     * less than 30 days ago. At day 51 (cutoff day 21) it goes. */
    assert_int_equal(vault_store_hold(f->t, b1[1].header_id, false, &err), 0);
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 0);
    cfr_clock_advance(f->clock, 6 * CFR_MS_PER_DAY); /* day 51 */
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 1);
    list_ok(f->t, m1, &l);
    assert_int_equal(l.n, 2);
    assert_memory_equal(l.s[0].header_id, b1[2].header_id, VAULT_ID_LEN);

    /* hold_previous holds the mailbox's newest before committing. */
    struct build b5;
    build_init(&b5, rand_ids(&f->rng, 20), 20, m1, &f->rng);
    uint8_t lease[VAULT_LEASE_LEN];
    lease_ok(f->t, lease);
    for (size_t i = 0; i < b5.n_ids; i++) {
        assert_int_equal(put_sealed(f->t, lease, &b5, b5.ids[i], &err), 0);
    }
    for (size_t i = 0; i < b5.n_pages; i++) {
        assert_int_equal(
            vault_store_put(f->t, lease, &b5.pages[i], 1, NULL, &err), 0);
    }
    struct vault_commit c = {.lease_id = lease,
                             .mailbox_id = m1,
                             .header_id = b5.header_id,
                             .header = (const uint8_t *)"h5",
                             .header_len = 2,
                             .refs = b5.root,
                             .hold_previous = true};
    bool already;
    assert_int_equal(vault_store_commit(f->t, &c, NULL, &already, &err), 0);
    assert_int_equal(vault_lease_close(f->t, lease, &err), 0);
    list_ok(f->t, m1, &l);
    assert_int_equal(l.n, 3);
    assert_false(l.s[0].held);
    assert_true(l.s[1].held); /* day 40, the newest before */
    assert_false(l.s[2].held);

    /* Purge m1: everything of it goes, held or not; m2 keeps all. */
    assert_int_equal(vault_store_purge_mailbox(f->t, m1, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 3);
    list_ok(f->t, m1, &l);
    assert_int_equal(l.n, 0);
    gc_ok(f->t, &ms);
    list_ok(f->t, m2, &l);
    assert_int_equal(l.n, 1);
    for (size_t i = 0; i < b2.n_ids; i++) {
        assert_true(present(f->t, b2.ids[i]));
    }
    for (size_t i = 0; i < b2.n_pages; i++) {
        assert_true(present(f->t, b2.pages[i].id));
    }
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < b1[k].n_ids; i++) {
            assert_false(present(f->t, b1[k].ids[i]));
        }
    }
    assert_int_equal(object_count(f->t), b2.n_ids + b2.n_pages);
    tb.n = 0;
    assert_int_equal(vault_store_tombstones(f->t, tomb_fn, &tb, &err), 0);
    assert_int_equal(tb.n, 5);
    /* Tombstones expire after their keep time (7 days here). */
    cfr_clock_advance(f->clock, 8 * CFR_MS_PER_DAY);
    gc_ok(f->t, NULL);
    tb.n = 0;
    assert_int_equal(vault_store_tombstones(f->t, tomb_fn, &tb, &err), 0);
    assert_int_equal(tb.n, 0);
    for (int k = 0; k < 4; k++) {
        build_fini(&b1[k]);
    }
    build_fini(&b2);
    build_fini(&b5);
}

/*
 * Sparse backups: S1 on day 0, S2 (lacking some of S1's messages) only on
 * day 35. Those messages were deleted at the latest on day 35, so S1 must
 * survive until day 65 (the old rule, S1's own receive time, dropped it
 * on day 30 and lost mail deleted a day before).
 */
static void
test_store_retention_sparse(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_maint_stats ms;
    struct listing l;
    uint8_t m[VAULT_ID_LEN];
    struct build s1, s2, s3;
    rand_id(&f->rng, m);
    build_init(&s1, rand_ids(&f->rng, 40), 40, m, &f->rng);
    upload_ok(f->t, &s1, NULL);
    cfr_clock_advance(f->clock, 35 * CFR_MS_PER_DAY);
    build_init(&s2, rand_ids(&f->rng, 30), 30, m, &f->rng);
    upload_ok(f->t, &s2, NULL);

    cfr_clock_advance(f->clock, CFR_MS_PER_DAY); /* day 36 */
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 0);
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 0);
    list_ok(f->t, m, &l);
    assert_int_equal(l.n, 2);
    for (size_t i = 0; i < s1.n_ids; i++) {
        assert_true(present(f->t, s1.ids[i]));
    }

    /* Day 64: superseded 29 days ago, still kept. */
    cfr_clock_advance(f->clock, 28 * CFR_MS_PER_DAY);
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 0);

    /* A third snapshot now supersedes S2, inside the window. */
    build_init(&s3, rand_ids(&f->rng, 20), 20, m, &f->rng);
    upload_ok(f->t, &s3, NULL);

    /* Day 66: S1 superseded 31 days ago goes; S2 (superseded on day 64)
     * and the newest stay. */
    cfr_clock_advance(f->clock, 2 * CFR_MS_PER_DAY);
    assert_int_equal(
        vault_store_retention(f->t, 30 * CFR_MS_PER_DAY, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 1);
    list_ok(f->t, m, &l);
    assert_int_equal(l.n, 2);
    assert_memory_equal(l.s[0].header_id, s2.header_id, VAULT_ID_LEN);
    assert_memory_equal(l.s[1].header_id, s3.header_id, VAULT_ID_LEN);
    gc_ok(f->t, &ms);
    for (size_t i = 0; i < s1.n_ids; i++) {
        assert_false(present(f->t, s1.ids[i]));
    }
    for (size_t i = 0; i < s2.n_ids; i++) {
        assert_true(present(f->t, s2.ids[i]));
    }
    build_fini(&s1);
    build_fini(&s2);
    build_fini(&s3);
}

static void
test_store_purge_gc_removes_bytes(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    uint8_t m1[VAULT_ID_LEN], m2[VAULT_ID_LEN];
    rand_id(&f->rng, m1);
    rand_id(&f->rng, m2);
    /* Large objects (blob files) and small ones (table files). */
    struct build big, small, keep;
    build_init(&big, rand_ids(&f->rng, 8), 8, m1, &f->rng);
    big.marker = "<PURGE-ME-BIG>";
    big.obj_len = 20000;
    build_init(&small, rand_ids(&f->rng, 8), 8, m1, &f->rng);
    small.marker = "<PURGE-ME-SMALL>";
    build_init(&keep, rand_ids(&f->rng, 8), 8, m2, &f->rng);
    keep.marker = "<KEEP-ME>";
    big.header = "<HDR-PURGE>";
    keep.header = "<HDR-KEEP>";
    keep.obj_len = 20000;
    upload_ok(f->t, &big, NULL);
    upload_ok(f->t, &small, NULL);
    upload_ok(f->t, &keep, NULL);
    assert_true(grep_tree(f->dir, "<PURGE-ME-BIG>") > 0);
    assert_true(grep_tree(f->dir, "<PURGE-ME-SMALL>") > 0);
    assert_true(grep_tree(f->dir, "<HDR-PURGE>") > 0);

    struct vault_maint_stats ms;
    assert_int_equal(vault_store_purge_mailbox(f->t, m1, &ms, &err), 0);
    assert_int_equal(ms.snapshots_removed, 2);
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 16 + big.n_pages + small.n_pages);
    assert_int_equal(ms.bytes_removed >= 8 * 20000 + 8 * OBJ_LEN, true);
    assert_int_equal(grep_tree(f->dir, "<PURGE-ME-BIG>"), 0);
    assert_int_equal(grep_tree(f->dir, "<PURGE-ME-SMALL>"), 0);
    /* The snapshot record (with its sealed header) went too. */
    assert_int_equal(grep_tree(f->dir, "<HDR-PURGE>"), 0);
    assert_true(grep_tree(f->dir, "<HDR-KEEP>") > 0);
    /* The other mailbox's bytes are all still there and read back. */
    assert_true(grep_tree(f->dir, "<KEEP-ME>") > 0);
    struct cfr_buf out;
    cfr_buf_init(&out, 1u << 20);
    for (size_t i = 0; i < keep.n_ids; i++) {
        assert_int_equal(vault_store_get(f->t, keep.ids[i], &out, NULL, &err),
                         0);
        assert_int_equal(out.len, 20000);
    }
    cfr_buf_fini(&out);
    build_fini(&big);
    build_fini(&small);
    build_fini(&keep);
}

struct bad {
    size_t n;
    uint8_t id[VAULT_ID_LEN];
    int code;
};

static void
bad_fn(void *ctx, const uint8_t id[VAULT_ID_LEN], const struct cfr_err *why)
{
    struct bad *b = ctx;
    b->n++;
    memcpy(b->id, id, VAULT_ID_LEN);
    b->code = why->code;
}

/* Flips one byte of the first occurrence of needle in a blob file. */
static const char *flip_needle;
static int flipped;

static int
flip_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void)f;
    size_t pl = strlen(path);
    /* Objects this size live in blob files; the WAL is gone after GC's
     * compaction, and flipping a copy elsewhere would prove nothing. */
    if (flipped || flag != FTW_F || sb->st_size == 0 || pl < 5 ||
        strcmp(path + pl - 5, ".blob") != 0) {
        return 0;
    }
    FILE *fp = fopen(path, "r+b");
    if (fp == NULL) {
        return 0;
    }
    size_t n = (size_t)sb->st_size;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    size_t got = fread(buf, 1, n, fp);
    const uint8_t *hit = find_bytes(buf, got, flip_needle, strlen(flip_needle));
    if (hit != NULL) {
        long off = (long)(hit - buf) + 3;
        assert_int_equal(fseek(fp, off, SEEK_SET), 0);
        assert_int_equal(fputc(hit[3] ^ 0x20, fp), hit[3] ^ 0x20);
        flipped = 1;
    }
    fclose(fp);
    free(buf);
    return 0;
}

static void
test_store_flipped_byte_reported(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build b, junk;
    build_init(&b, rand_ids(&f->rng, 3), 3, m, &f->rng);
    b.obj_len = 10000;
    b.marker = "<FLIP-ME>";
    upload_ok(f->t, &b, NULL);
    /* An uncommitted object whose collection makes GC compact, so the
     * committed ones are in table and blob files, not only the WAL. */
    build_init(&junk, rand_ids(&f->rng, 1), 1, m, &f->rng);
    uint8_t lease[VAULT_LEASE_LEN];
    lease_ok(f->t, lease);
    assert_int_equal(put_sealed(f->t, lease, &junk, junk.ids[0], &err), 0);
    assert_int_equal(vault_lease_close(f->t, lease, &err), 0);
    struct vault_maint_stats ms;
    gc_ok(f->t, &ms);
    assert_int_equal(ms.objects_removed, 1);

    vault_store_close(f->st);
    flip_needle = "<FLIP-ME>";
    flipped = 0;
    assert_int_equal(nftw(f->dir, flip_one, 16, FTW_PHYS), 0);
    assert_true(flipped);
    fx_open_store(f);

    /* Exactly one object is damaged; get and scrub both name it. */
    struct cfr_buf out;
    cfr_buf_init(&out, 1u << 20);
    size_t bad_gets = 0;
    uint8_t bad_id[VAULT_ID_LEN];
    for (size_t i = 0; i < b.n_ids; i++) {
        int rc = vault_store_get(f->t, b.ids[i], &out, NULL, &err);
        if (rc != 0) {
            assert_int_equal(rc, CFR_ECORRUPT);
            memcpy(bad_id, b.ids[i], VAULT_ID_LEN);
            bad_gets++;
        }
    }
    cfr_buf_fini(&out);
    assert_int_equal(bad_gets, 1);
    struct bad bd = {0};
    assert_int_equal(vault_store_scrub(f->t, bad_fn, &bd, &ms, &err), 0);
    assert_int_equal(bd.n, 1);
    assert_int_equal(ms.bad_objects, 1);
    assert_int_equal(bd.code, CFR_ECORRUPT);
    assert_memory_equal(bd.id, bad_id, VAULT_ID_LEN);
    struct vault_tenant_stats ts;
    assert_int_equal(vault_store_stats(f->t, &ts, &err), 0);
    assert_int_equal(ts.corrupt_reads, 1);
    build_fini(&b);
    build_fini(&junk);
}

static void
test_store_append_only_and_checks(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    uint8_t lease[VAULT_LEASE_LEN];
    uint8_t id[VAULT_ID_LEN], id2[VAULT_ID_LEN];
    rand_id(&f->rng, id);
    rand_id(&f->rng, id2);
    lease_ok(f->t, lease);
    uint8_t *a = sealed_bytes(id, "first", 0);
    uint8_t *b = sealed_bytes(id, "second", 0);
    struct vault_object o = {id, VAULT_OBJ_SEALED, a, OBJ_LEN};
    struct vault_put_stats ps;
    assert_int_equal(vault_store_put(f->t, lease, &o, 1, &ps, &err), 0);
    assert_int_equal(ps.stored, 1);
    assert_int_equal(ps.bytes, OBJ_LEN);
    /* Same bytes again: a no-op. */
    assert_int_equal(vault_store_put(f->t, lease, &o, 1, &ps, &err), 0);
    assert_int_equal(ps.stored, 0);
    assert_int_equal(ps.already_present, 1);
    /* Other bytes under the same ID: refused, the first stays. */
    o.data = b;
    assert_int_equal(vault_store_put(f->t, lease, &o, 1, &ps, &err),
                     CFR_EEXIST);
    struct cfr_buf out;
    cfr_buf_init(&out, 1u << 20);
    assert_int_equal(vault_store_get(f->t, id, &out, NULL, &err), 0);
    assert_memory_equal(out.data, a, OBJ_LEN);

    /* A bad object anywhere in a batch stores nothing of it. */
    uint8_t *c = sealed_bytes(id2, NULL, 0);
    uint8_t *notenv = sealed_bytes(id, NULL, 0);
    notenv[0] = 2;
    struct vault_object batch[2] = {{id2, VAULT_OBJ_SEALED, c, OBJ_LEN},
                                    {id, VAULT_OBJ_SEALED, notenv, OBJ_LEN}};
    assert_int_equal(vault_store_put(f->t, lease, batch, 2, &ps, &err),
                     CFR_ECORRUPT);
    assert_false(present(f->t, id2));
    batch[1].len = 40; /* shorter than any envelope */
    notenv[0] = 1;
    assert_int_equal(vault_store_put(f->t, lease, batch, 2, &ps, &err),
                     CFR_ECORRUPT);
    assert_false(present(f->t, id2));
    /* A page whose ID is not its hash, and a sealed object posing as a
     * page (its hash right, but not a reference page). */
    struct vault_object page = {id2, VAULT_OBJ_REF_PAGE, c, OBJ_LEN};
    assert_int_equal(vault_store_put(f->t, lease, &page, 1, &ps, &err),
                     CFR_ECORRUPT);
    uint8_t hid[VAULT_ID_LEN];
    cfr_id_plain(c, OBJ_LEN, hid);
    page.id = hid;
    assert_int_equal(vault_store_put(f->t, lease, &page, 1, &ps, &err),
                     CFR_ECORRUPT);
    assert_false(present(f->t, hid));
    assert_int_equal(object_count(f->t), 1);
    cfr_buf_fini(&out);
    free(a);
    free(b);
    free(c);
    free(notenv);
}

static int
count_tenant(void *ctx, const char *name)
{
    (void)name;
    (*(int *)ctx)++;
    return 0;
}

static void
test_store_tenants(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    assert_null(vault_store_tenant(f->st, "nope", false, &err));
    assert_int_equal(err.code, CFR_ENOTFOUND);
    assert_null(vault_store_tenant(f->st, "../x", true, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    assert_null(vault_store_tenant(f->st, "Upper", true, &err));
    struct vault_tenant *t2 = vault_store_tenant(f->st, "beta", true, &err);
    assert_non_null(t2);
    assert_ptr_equal(vault_store_tenant(f->st, "beta", false, &err), t2);
    int n = 0;
    assert_int_equal(vault_store_tenants(f->st, count_tenant, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(vault_store_tenant_drop(f->st, "beta", &err), 0);
    n = 0;
    assert_int_equal(vault_store_tenants(f->st, count_tenant, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_null(vault_store_tenant(f->st, "beta", false, &err));
    assert_int_equal(vault_store_tenant_drop(f->st, "beta", &err),
                     CFR_ENOTFOUND);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_commit_round_trip, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_commit_refuses_missing,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_commit_rejects_bad_trees,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_refcounts_shared_pages,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_lease_protects_uploads,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_gc_races_uploads, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_retention_holds_purge,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_retention_sparse, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_purge_gc_removes_bytes,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_flipped_byte_reported,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_append_only_and_checks,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_tenants, fx_setup,
                                        fx_teardown),
    };
    /* Warnings and errors only: GC and retention log every run. */
    cfr_log_set_level(CFR_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
