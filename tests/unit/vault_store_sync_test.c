/*
 * vault_store_sync_test.c - the store's replication primitives
 * (vault/store.c, "replication" in store.h) over real RocksDB databases:
 * bucket digests that two replicas agree on whatever their clocks and
 * commit orders, bucket-filtered listings, peer tombstones and holds,
 * counted pages, checked reads, repair of damaged objects with the
 * on_corrupt callback, and version 1 snapshot records.
 *
 * Damage is made the way a disk makes it, below the store: the test opens
 * the closed tenant database with core/kv.h and overwrites an object's
 * value with other bytes of the same length, keeping its index record.
 */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
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
#include "kv.h"
#include "log.h"
#include "snap.h"
#include "store.h"

#define T0       (INT64_C(1790000000000))
#define LEASE_MS (CFR_MS_PER_HOUR)
#define OBJ_LEN  120

/* The tenant database's families, as store.c opens them (docs/FORMAT.md). */
static const char *const tenant_cfs[] = {
    CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX, "refcounts",
    "snapshots",      "mailbox_index",       "leases",
    "lease_objects",  "tombstones"};
#define CF_CHUNKS 0
#define CF_SNAPS  3

/* ---- helpers ------------------------------------------------------------ */

static uint64_t
prng(uint64_t *s)
{
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

/* A plausible sealed object for id: envelope version 1, then the ID. */
static uint8_t *
sealed_bytes(const uint8_t id[VAULT_ID_LEN])
{
    uint8_t *p = malloc(OBJ_LEN);
    assert_non_null(p);
    memset(p, 0, 64);
    p[0] = 1;
    p[1] = 1;
    for (size_t i = 8; i < OBJ_LEN; i++) {
        p[i] = id[(i - 8) % VAULT_ID_LEN];
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

/* ---- fixture: up to two stores (replicas), each with tenant "acme" ------ */

struct corrupt_log {
    size_t n;
    char tenant[VAULT_TENANT_MAX + 1];
    uint8_t id[VAULT_ID_LEN];
};

static void
on_corrupt(void *ctx, const char *tenant, const uint8_t id[VAULT_ID_LEN])
{
    struct corrupt_log *l = ctx;
    l->n++;
    snprintf(l->tenant, sizeof(l->tenant), "%s", tenant);
    memcpy(l->id, id, VAULT_ID_LEN);
}

struct replica {
    char dir[256];
    struct cfr_clock *clock;
    struct vault_store *st;
    struct vault_tenant *t;
    struct corrupt_log corrupt;
};

struct fx {
    struct replica r[2];
    uint64_t rng;
};

static void
replica_open(struct replica *r)
{
    struct cfr_err err;
    struct vault_store_opts o = {
        .dir = r->dir,
        .cache_bytes = 8u << 20,
        .clock = r->clock,
        .lease_max_ms = LEASE_MS,
        .tombstone_keep_ms = 7 * CFR_MS_PER_DAY,
        .on_corrupt = on_corrupt,
        .on_corrupt_ctx = &r->corrupt,
    };
    r->st = vault_store_open(&o, &err);
    if (r->st == NULL) {
        fail_msg("store open: %s", err.msg);
    }
    r->t = vault_store_tenant(r->st, "acme", true, &err);
    if (r->t == NULL) {
        fail_msg("tenant: %s", err.msg);
    }
}

static void
replica_init(struct replica *r, int64_t start_ms)
{
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    int w =
        snprintf(r->dir, sizeof(r->dir), "%s/vault_store_sync.XXXXXX", base);
    assert_true(w > 0 && (size_t)w < sizeof(r->dir));
    assert_non_null(mkdtemp(r->dir));
    r->clock = cfr_clock_manual_new(start_ms);
    assert_non_null(r->clock);
    replica_open(r);
}

static int
fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^ 0x51c;
    print_message("seed %llu\n", (unsigned long long)f->rng);
    /* Clocks a day apart: nothing may depend on them agreeing. */
    replica_init(&f->r[0], T0);
    replica_init(&f->r[1], T0 + CFR_MS_PER_DAY);
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 2; i++) {
        vault_store_close(f->r[i].st);
        cfr_clock_free(f->r[i].clock);
        assert_int_equal(nftw(f->r[i].dir, rm_one, 16, FTW_DEPTH | FTW_PHYS),
                         0);
    }
    free(f);
    return 0;
}

/*
 * Runs fn on the closed tenant database of replica r through kv directly,
 * then reopens the store: how the tests damage bytes and write old
 * records.
 */
static struct cfr_kv_env *raw_env;

static struct cfr_kv *
raw_open(struct replica *r)
{
    struct cfr_err err;
    char path[512];
    vault_store_close(r->st);
    r->st = NULL;
    r->t = NULL;
    snprintf(path, sizeof(path), "%s/acme", r->dir);
    raw_env = cfr_kv_env_new(4u << 20, &err);
    assert_non_null(raw_env);
    struct cfr_kv *kv =
        cfr_kv_open(raw_env, path, tenant_cfs,
                    sizeof(tenant_cfs) / sizeof(tenant_cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("raw open: %s", err.msg);
    }
    return kv;
}

static void
raw_close(struct replica *r, struct cfr_kv *kv)
{
    cfr_kv_close(kv);
    cfr_kv_env_free(raw_env);
    raw_env = NULL;
    replica_open(r);
}

/* ---- snapshots ---------------------------------------------------------- */

struct build {
    uint8_t (*ids)[VAULT_ID_LEN];
    size_t n_ids;
    struct vault_object *pages;
    size_t n_pages, cap_pages;
    struct vault_tree_root root;
    uint8_t mailbox[VAULT_ID_LEN];
    uint8_t header_id[VAULT_ID_LEN];
    char header[16];
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

/*
 * A snapshot of n random objects plus the shared ones, of mailbox, with a
 * header ID whose first byte (its bucket) is bucket.
 */
static void
build_init(struct build *b, uint64_t *rng, size_t n,
           const uint8_t (*shared)[VAULT_ID_LEN], size_t n_shared,
           const uint8_t mailbox[VAULT_ID_LEN], uint8_t bucket)
{
    struct cfr_err err;
    struct cfr_snap_refs_writer *w;
    memset(b, 0, sizeof(*b));
    b->n_ids = n + n_shared;
    b->ids = calloc(b->n_ids, VAULT_ID_LEN);
    assert_non_null(b->ids);
    for (size_t i = 0; i < n; i++) {
        rand_id(rng, b->ids[i]);
    }
    if (n_shared > 0) {
        memcpy(b->ids + n, shared, n_shared * VAULT_ID_LEN);
    }
    qsort(b->ids, b->n_ids, VAULT_ID_LEN, id_cmp);
    memcpy(b->mailbox, mailbox, VAULT_ID_LEN);
    rand_id(rng, b->header_id);
    b->header_id[0] = bucket;
    snprintf(b->header, sizeof(b->header), "hdr-%02x%02x", b->header_id[0],
             b->header_id[1]);
    assert_int_equal(cfr_snap_refs_writer_new(NULL, page_sink, b, &w, &err), 0);
    for (size_t i = 0; i < b->n_ids; i++) {
        assert_int_equal(cfr_snap_refs_writer_add(w, b->ids[i], &err), 0);
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

/* Puts the build's objects and pages under a lease (as sync pulls them),
 * then commits (hold_previous as given; received_ms 0 = now). */
static void
upload_at(struct vault_tenant *t, const struct build *b, bool hold_previous,
          int64_t received_ms, struct vault_snapshot *s_r)
{
    struct cfr_err err;
    uint8_t lease[VAULT_LEASE_LEN];
    int64_t exp;
    assert_int_equal(vault_lease_open(t, NULL, 0, 0, lease, &exp, &err), 0);
    /* One batch (one fsync) for all objects, as a pull's SyncGet answer. */
    assert_true(b->n_ids <= VAULT_IDS_MAX);
    struct vault_object *objs = calloc(b->n_ids + 1, sizeof(*objs));
    assert_non_null(objs);
    for (size_t i = 0; i < b->n_ids; i++) {
        objs[i] = (struct vault_object){b->ids[i], VAULT_OBJ_SEALED,
                                        sealed_bytes(b->ids[i]), OBJ_LEN};
    }
    int rc = vault_store_put(t, lease, objs, b->n_ids, NULL, &err);
    for (size_t i = 0; i < b->n_ids; i++) {
        free((void *)objs[i].data);
    }
    free(objs);
    if (rc != 0) {
        fail_msg("put: %s", err.msg);
    }
    if (vault_store_put(t, lease, b->pages, b->n_pages, NULL, &err) != 0) {
        fail_msg("put pages: %s", err.msg);
    }
    struct vault_commit c = {
        .lease_id = NULL, /* as replication commits */
        .mailbox_id = b->mailbox,
        .header_id = b->header_id,
        .header = (const uint8_t *)b->header,
        .header_len = strlen(b->header),
        .refs = b->root,
        .hold_previous = hold_previous,
        .received_ms = received_ms,
    };
    bool already = true;
    if (vault_store_commit(t, &c, s_r, &already, &err) != 0) {
        fail_msg("commit: %s", err.msg);
    }
    assert_false(already);
    assert_int_equal(vault_lease_close(t, lease, &err), 0);
}

static void
upload(struct vault_tenant *t, const struct build *b, bool hold_previous,
       struct vault_snapshot *s_r)
{
    upload_at(t, b, hold_previous, 0, s_r);
}

static void
digest_ok(struct vault_tenant *t, uint8_t d[VAULT_SYNC_BUCKETS][VAULT_ID_LEN],
          uint64_t *ns, uint64_t *nt)
{
    struct cfr_err err;
    if (vault_store_digest(t, d, ns, nt, &err) != 0) {
        fail_msg("digest: %s", err.msg);
    }
}

/* Buckets where two digests differ, as a count, the first in *which. */
static size_t
digest_diff(uint8_t a[VAULT_SYNC_BUCKETS][VAULT_ID_LEN],
            uint8_t b[VAULT_SYNC_BUCKETS][VAULT_ID_LEN], unsigned *which)
{
    size_t n = 0;
    for (unsigned i = 0; i < VAULT_SYNC_BUCKETS; i++) {
        if (memcmp(a[i], b[i], VAULT_ID_LEN) != 0) {
            if (n == 0) {
                *which = i;
            }
            n++;
        }
    }
    return n;
}

struct one_snap {
    const uint8_t *want;
    bool found;
    struct vault_snapshot s;
};

static int
find_snap(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
          size_t header_len)
{
    (void)header;
    (void)header_len;
    struct one_snap *o = ctx;
    if (memcmp(s->header_id, o->want, VAULT_ID_LEN) == 0) {
        o->found = true;
        o->s = *s;
    }
    return 0;
}

/* The snapshot record of header_id as vault_store_snapshots reports it. */
static struct vault_snapshot
snap_of(struct vault_tenant *t, const struct build *b)
{
    struct cfr_err err;
    struct one_snap o = {.want = b->header_id};
    assert_int_equal(
        vault_store_snapshots(t, b->mailbox, false, find_snap, &o, &err), 0);
    assert_true(o.found);
    assert_memory_equal(o.s.header_id, b->header_id, VAULT_ID_LEN);
    return o.s;
}

/* ---- tests -------------------------------------------------------------- */

/*
 * The same snapshots, holds and tombstones reached in different orders at
 * different times on two replicas give equal digests, and each bucket's
 * digest is exactly BLAKE2b-256 of its entries as store.h defines them.
 */
static void
test_sync_digest_order_independent(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    enum { N = 6 };
    struct build b[N];
    uint8_t m1[VAULT_ID_LEN], m2[VAULT_ID_LEN];
    rand_id(&f->rng, m1);
    rand_id(&f->rng, m2);
    /* Buckets: two snapshots share 0x42; the rest apart. */
    const uint8_t buckets[N] = {0x42, 0x42, 0x00, 0x97, 0xff, 0x10};
    for (int i = 0; i < N; i++) {
        build_init(&b[i], &f->rng, 5 + (size_t)i, NULL, 0, i % 2 ? m2 : m1,
                   buckets[i]);
    }
    /* Replica 0 forwards, replica 1 backwards, clocks moving apart. */
    for (int i = 0; i < N; i++) {
        cfr_clock_advance(f->r[0].clock, 1000);
        upload(f->r[0].t, &b[i], false, NULL);
        cfr_clock_advance(f->r[1].clock, 7777);
        upload(f->r[1].t, &b[N - 1 - i], false, NULL);
    }
    /* Hold b[1] on both (at different times), drop b[4] on both, and a
     * tombstone for a snapshot neither has ever seen. */
    uint8_t ghost[VAULT_ID_LEN];
    rand_id(&f->rng, ghost);
    ghost[0] = 0x42;
    bool done;
    for (int r = 0; r < 2; r++) {
        cfr_clock_advance(f->r[r].clock, 500 + 300 * r);
        assert_int_equal(
            vault_store_hold(f->r[r].t, b[1].header_id, true, &err), 0);
        assert_int_equal(
            vault_store_drop_synced(f->r[r].t, b[4].header_id, 0, &done, &err),
            0);
        assert_true(done);
        assert_int_equal(
            vault_store_drop_synced(f->r[r].t, ghost, 0, &done, &err), 0);
        assert_false(done);
    }
    uint8_t d0[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint8_t d1[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint64_t ns0, nt0, ns1, nt1;
    digest_ok(f->r[0].t, d0, &ns0, &nt0);
    digest_ok(f->r[1].t, d1, &ns1, &nt1);
    unsigned which = 0;
    assert_int_equal(digest_diff(d0, d1, &which), 0);
    assert_int_equal(ns0, N - 1);
    assert_int_equal(nt0, 2);
    assert_int_equal(ns1, N - 1);
    assert_int_equal(nt1, 2);

    /* The definition, recomputed here: bucket 0x42 holds b[0], b[1] (held)
     * and the ghost tombstone, in header-ID order. */
    struct entry {
        const uint8_t *id;
        uint8_t tag, held;
    } e[3] = {
        {b[0].header_id, 'S', 0}, {b[1].header_id, 'S', 1}, {ghost, 'T', 0}};
    for (int i = 0; i < 3; i++) {
        for (int j = i + 1; j < 3; j++) {
            if (memcmp(e[j].id, e[i].id, VAULT_ID_LEN) < 0) {
                struct entry x = e[i];
                e[i] = e[j];
                e[j] = x;
            }
        }
    }
    uint8_t acc[3 * (VAULT_ID_LEN + 2)];
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(acc + n, e[i].id, VAULT_ID_LEN);
        n += VAULT_ID_LEN;
        acc[n++] = e[i].tag;
        if (e[i].tag == 'S') {
            acc[n++] = e[i].held;
        }
    }
    uint8_t want[VAULT_ID_LEN];
    cfr_id_plain(acc, n, want);
    assert_memory_equal(d0[0x42], want, VAULT_ID_LEN);
    /* A tombstone alone: bucket 0xff is b[4]'s. */
    memcpy(acc, b[4].header_id, VAULT_ID_LEN);
    acc[VAULT_ID_LEN] = 'T';
    cfr_id_plain(acc, VAULT_ID_LEN + 1, want);
    assert_memory_equal(d0[0xff], want, VAULT_ID_LEN);
    /* Empty buckets are zeros; used ones are not. */
    static const uint8_t zero[VAULT_ID_LEN];
    size_t used = 0;
    for (unsigned i = 0; i < VAULT_SYNC_BUCKETS; i++) {
        used += memcmp(d0[i], zero, VAULT_ID_LEN) != 0;
    }
    assert_int_equal(used, 5); /* 0x42, 0x00, 0x97, 0xff, 0x10 */
    assert_memory_equal(d0[0x43], zero, VAULT_ID_LEN);

    /* An empty tenant: all zeros, no counts. */
    struct vault_tenant *empty =
        vault_store_tenant(f->r[0].st, "empty", true, &err);
    assert_non_null(empty);
    digest_ok(empty, d1, &ns1, &nt1);
    assert_int_equal(ns1, 0);
    assert_int_equal(nt1, 0);
    for (unsigned i = 0; i < VAULT_SYNC_BUCKETS; i++) {
        assert_memory_equal(d1[i], zero, VAULT_ID_LEN);
    }
    for (int i = 0; i < N; i++) {
        build_fini(&b[i]);
    }
}

/* A hold change or a tombstone changes exactly the one bucket it is in. */
static void
test_sync_digest_one_bucket_changes(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    enum { N = 8 };
    struct build b[N];
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    for (int i = 0; i < N; i++) {
        build_init(&b[i], &f->rng, 3, NULL, 0, m, (uint8_t)(i * 31 + 7));
        cfr_clock_advance(f->r[0].clock, 10);
        upload(t, &b[i], false, NULL);
    }
    uint8_t before[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint8_t after[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint64_t ns, nt;
    unsigned which = 999;
    digest_ok(t, before, &ns, &nt);
    assert_int_equal(ns, N);

    assert_int_equal(vault_store_hold(t, b[3].header_id, true, &err), 0);
    digest_ok(t, after, &ns, &nt);
    assert_int_equal(digest_diff(before, after, &which), 1);
    assert_int_equal(which, b[3].header_id[0]);
    /* Holding again changes nothing; releasing restores the old digest. */
    assert_int_equal(vault_store_hold(t, b[3].header_id, true, &err), 0);
    digest_ok(t, before, &ns, &nt);
    assert_int_equal(digest_diff(before, after, &which), 0);
    assert_int_equal(vault_store_hold(t, b[3].header_id, false, &err), 0);
    digest_ok(t, before, &ns, &nt);

    bool dropped;
    assert_int_equal(
        vault_store_drop_synced(t, b[5].header_id, 0, &dropped, &err), 0);
    assert_true(dropped);
    digest_ok(t, after, &ns, &nt);
    assert_int_equal(ns, N - 1);
    assert_int_equal(nt, 1);
    which = 999;
    assert_int_equal(digest_diff(before, after, &which), 1);
    assert_int_equal(which, b[5].header_id[0]);
    /* A tombstone for an unknown snapshot: one more bucket. */
    uint8_t ghost[VAULT_ID_LEN];
    rand_id(&f->rng, ghost);
    ghost[0] = 0x01; /* no snapshot is in bucket 1 (i * 31 + 7) */
    memcpy(before, after, sizeof(before));
    assert_int_equal(vault_store_drop_synced(t, ghost, 0, &dropped, &err), 0);
    assert_false(dropped);
    digest_ok(t, after, &ns, &nt);
    assert_int_equal(nt, 2);
    assert_int_equal(digest_diff(before, after, &which), 1);
    assert_int_equal(which, 0x01);
    for (int i = 0; i < N; i++) {
        build_fini(&b[i]);
    }
}

struct listed {
    size_t n_snaps, n_tombs;
    struct vault_snapshot s[16];
    char header[16][16];
    uint8_t tomb[16][VAULT_ID_LEN];
    int64_t dropped[16];
    size_t stop_after; /* non-zero: return 7 once this many were seen */
};

static int
list_snap(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
          size_t header_len)
{
    struct listed *l = ctx;
    assert_true(l->n_snaps < 16);
    assert_non_null(header);
    assert_true(header_len < 16);
    l->s[l->n_snaps] = *s;
    memcpy(l->header[l->n_snaps], header, header_len);
    l->header[l->n_snaps][header_len] = '\0';
    l->n_snaps++;
    return l->stop_after != 0 && l->n_snaps == l->stop_after ? 7 : 0;
}

static int
list_tomb(void *ctx, const uint8_t header_id[VAULT_ID_LEN], int64_t dropped_ms)
{
    struct listed *l = ctx;
    assert_true(l->n_tombs < 16);
    memcpy(l->tomb[l->n_tombs], header_id, VAULT_ID_LEN);
    l->dropped[l->n_tombs] = dropped_ms;
    l->n_tombs++;
    return 0;
}

/* sync_list gives exactly the wanted buckets, headers and hold times. */
static void
test_sync_list_filters_buckets(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    enum { N = 6 };
    struct build b[N];
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    /* b[0..1] in 0x20, b[2] in 0x21, b[3] in 0x80, b[4] in 0xff, b[5] 0x00 */
    const uint8_t buckets[N] = {0x20, 0x20, 0x21, 0x80, 0xff, 0x00};
    for (int i = 0; i < N; i++) {
        build_init(&b[i], &f->rng, 2, NULL, 0, m, buckets[i]);
        cfr_clock_advance(f->r[0].clock, 100);
        upload(t, &b[i], false, NULL);
    }
    cfr_clock_advance(f->r[0].clock, 5000);
    int64_t hold_at = cfr_clock_now_ms(f->r[0].clock);
    assert_int_equal(vault_store_hold(t, b[1].header_id, true, &err), 0);
    cfr_clock_advance(f->r[0].clock, 5000);
    int64_t drop_at = cfr_clock_now_ms(f->r[0].clock);
    bool dropped;
    assert_int_equal(
        vault_store_drop_synced(t, b[4].header_id, 0, &dropped, &err), 0);
    assert_true(dropped);

    bool want[VAULT_SYNC_BUCKETS] = {false};
    want[0x20] = true;
    want[0xff] = true;
    struct listed l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(
        vault_store_sync_list(t, want, list_snap, list_tomb, &l, &err), 0);
    assert_int_equal(l.n_snaps, 2);
    assert_int_equal(l.n_tombs, 1);
    /* Header-ID order, both from bucket 0x20. */
    int first =
        memcmp(b[0].header_id, b[1].header_id, VAULT_ID_LEN) < 0 ? 0 : 1;
    const struct build *in_order[2] = {&b[first], &b[1 - first]};
    for (int i = 0; i < 2; i++) {
        assert_memory_equal(l.s[i].header_id, in_order[i]->header_id,
                            VAULT_ID_LEN);
        assert_memory_equal(l.s[i].mailbox_id, m, VAULT_ID_LEN);
        assert_memory_equal(l.s[i].refs.id, in_order[i]->root.id, VAULT_ID_LEN);
        assert_string_equal(l.header[i], in_order[i]->header);
        bool is_held = in_order[i] == &b[1];
        assert_int_equal(l.s[i].held, is_held);
        assert_int_equal(l.s[i].hold_changed_ms, is_held ? hold_at : 0);
    }
    assert_memory_equal(l.tomb[0], b[4].header_id, VAULT_ID_LEN);
    assert_int_equal(l.dropped[0], drop_at);
    /* vault_store_snapshots reports the hold time too. */
    struct vault_snapshot s1 = snap_of(t, &b[1]);
    assert_true(s1.held);
    assert_int_equal(s1.hold_changed_ms, hold_at);

    /* Every bucket: every snapshot and tombstone, only NULL callbacks
     * skipped; a non-zero return stops the walk and is returned. */
    for (unsigned i = 0; i < VAULT_SYNC_BUCKETS; i++) {
        want[i] = true;
    }
    memset(&l, 0, sizeof(l));
    assert_int_equal(vault_store_sync_list(t, want, list_snap, NULL, &l, &err),
                     0);
    assert_int_equal(l.n_snaps, N - 1);
    assert_int_equal(l.n_tombs, 0);
    assert_int_equal(l.s[0].header_id[0], 0x00);
    assert_int_equal(l.s[N - 2].header_id[0], 0x80);
    memset(&l, 0, sizeof(l));
    l.stop_after = 2;
    assert_int_equal(
        vault_store_sync_list(t, want, list_snap, list_tomb, &l, &err), 7);
    assert_int_equal(l.n_snaps, 2);
    assert_int_equal(l.n_tombs, 0);
    /* Nothing wanted: nothing listed. */
    memset(want, 0, sizeof(want));
    memset(&l, 0, sizeof(l));
    assert_int_equal(
        vault_store_sync_list(t, want, list_snap, list_tomb, &l, &err), 0);
    assert_int_equal(l.n_snaps + l.n_tombs, 0);
    for (int i = 0; i < N; i++) {
        build_fini(&b[i]);
    }
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

struct tomb_find {
    const uint8_t *id;
    int64_t dropped;
    size_t n;
};

static int
tomb_find(void *ctx, const uint8_t header_id[VAULT_ID_LEN], int64_t dropped_ms)
{
    struct tomb_find *c = ctx;
    c->n++;
    if (memcmp(header_id, c->id, VAULT_ID_LEN) == 0) {
        c->dropped = dropped_ms;
    }
    return 0;
}

/*
 * A peer's tombstone drops a held snapshot, uncounts its references (GC
 * then removes only its own objects), leaves a tombstone whose time a
 * repeat does not renew, tombstones an absent snapshot too, and no commit
 * brings a tombstoned snapshot back.
 */
static void
test_sync_drop_synced(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    uint8_t shared[4][VAULT_ID_LEN];
    for (int i = 0; i < 4; i++) {
        rand_id(&f->rng, shared[i]);
    }
    struct build keep, gone;
    build_init(&keep, &f->rng, 5, (const uint8_t(*)[VAULT_ID_LEN])shared, 4, m,
               0x11);
    build_init(&gone, &f->rng, 7, (const uint8_t(*)[VAULT_ID_LEN])shared, 4, m,
               0x12);
    upload(t, &keep, false, NULL);
    cfr_clock_advance(f->r[0].clock, 1000);
    upload(t, &gone, false, NULL);
    assert_int_equal(vault_store_hold(t, gone.header_id, true, &err), 0);

    bool has = true;
    assert_int_equal(vault_store_has_tombstone(t, gone.header_id, &has, &err),
                     0);
    assert_false(has);
    cfr_clock_advance(f->r[0].clock, 1000);
    int64_t drop_at = cfr_clock_now_ms(f->r[0].clock);
    bool dropped = false;
    assert_int_equal(
        vault_store_drop_synced(t, gone.header_id, 0, &dropped, &err), 0);
    assert_true(dropped); /* held, and dropped all the same */
    assert_int_equal(vault_store_has_tombstone(t, gone.header_id, &has, &err),
                     0);
    assert_true(has);
    struct vault_tenant_stats ts;
    assert_int_equal(vault_store_stats(t, &ts, &err), 0);
    assert_int_equal(ts.snapshots, 1);

    /* GC removes gone's own objects and pages, nothing shared. */
    size_t gone_pages = 0;
    for (size_t i = 0; i < gone.n_pages; i++) {
        bool shared_page = false;
        for (size_t j = 0; j < keep.n_pages; j++) {
            shared_page |=
                memcmp(gone.pages[i].id, keep.pages[j].id, VAULT_ID_LEN) == 0;
        }
        gone_pages += !shared_page;
    }
    struct vault_maint_stats ms;
    assert_int_equal(vault_store_gc(t, &ms, &err), 0);
    assert_int_equal(ms.objects_removed, 7 + gone_pages);
    for (size_t i = 0; i < gone.n_ids; i++) {
        bool is_shared = false;
        for (int j = 0; j < 4; j++) {
            is_shared |= memcmp(gone.ids[i], shared[j], VAULT_ID_LEN) == 0;
        }
        assert_int_equal(present(t, gone.ids[i]), is_shared);
    }
    for (size_t i = 0; i < keep.n_ids; i++) {
        assert_true(present(t, keep.ids[i]));
    }

    /* Again, later: nothing to drop, and the tombstone keeps its time. */
    cfr_clock_advance(f->r[0].clock, 60000);
    assert_int_equal(
        vault_store_drop_synced(t, gone.header_id, 0, &dropped, &err), 0);
    assert_false(dropped);
    struct tomb_find tf = {gone.header_id, 0, 0};
    assert_int_equal(vault_store_tombstones(t, tomb_find, &tf, &err), 0);
    assert_int_equal(tf.n, 1);
    assert_int_equal(tf.dropped, drop_at);

    /* An absent snapshot gets a tombstone (now), so it cannot come back
     * through this replica. */
    struct build never;
    build_init(&never, &f->rng, 2, NULL, 0, m, 0x13);
    int64_t never_at = cfr_clock_now_ms(f->r[0].clock);
    assert_int_equal(
        vault_store_drop_synced(t, never.header_id, 0, &dropped, &err), 0);
    assert_false(dropped);
    assert_int_equal(vault_store_has_tombstone(t, never.header_id, &has, &err),
                     0);
    assert_true(has);
    tf = (struct tomb_find){never.header_id, 0, 0};
    assert_int_equal(vault_store_tombstones(t, tomb_find, &tf, &err), 0);
    assert_int_equal(tf.n, 2);
    assert_int_equal(tf.dropped, never_at);

    /* A commit of a tombstoned snapshot is refused, changing nothing. */
    uint8_t lease[VAULT_LEASE_LEN];
    int64_t exp;
    assert_int_equal(vault_lease_open(t, NULL, 0, 0, lease, &exp, &err), 0);
    for (size_t i = 0; i < never.n_ids; i++) {
        uint8_t *data = sealed_bytes(never.ids[i]);
        struct vault_object o = {never.ids[i], VAULT_OBJ_SEALED, data, OBJ_LEN};
        assert_int_equal(vault_store_put(t, lease, &o, 1, NULL, &err), 0);
        free(data);
    }
    assert_int_equal(
        vault_store_put(t, lease, never.pages, never.n_pages, NULL, &err), 0);
    struct vault_commit c = {
        .mailbox_id = never.mailbox,
        .header_id = never.header_id,
        .header = (const uint8_t *)never.header,
        .header_len = strlen(never.header),
        .refs = never.root,
    };
    bool already;
    assert_int_equal(vault_store_commit(t, &c, NULL, &already, &err),
                     CFR_EEXIST);
    assert_non_null(strstr(err.msg, "tombstone"));
    assert_int_equal(vault_store_stats(t, &ts, &err), 0);
    assert_int_equal(ts.snapshots, 1);
    bool counted = true;
    assert_int_equal(vault_store_page_counted(t, never.root.id, &counted, &err),
                     0);
    assert_false(counted);
    assert_int_equal(vault_lease_close(t, lease, &err), 0);
    build_fini(&keep);
    build_fini(&gone);
    build_fini(&never);
}

/* Newer change wins, older is ignored, a tie goes to held. */
static void
test_sync_hold_synced(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build a, b2;
    build_init(&a, &f->rng, 2, NULL, 0, m, 0x31);
    build_init(&b2, &f->rng, 2, NULL, 0, m, 0x32);
    upload(t, &a, false, NULL);
    assert_int_equal(snap_of(t, &a).hold_changed_ms, 0);

    cfr_clock_advance(f->r[0].clock, 1000);
    int64_t t1 = cfr_clock_now_ms(f->r[0].clock);
    assert_int_equal(vault_store_hold(t, a.header_id, true, &err), 0);
    struct vault_snapshot s = snap_of(t, &a);
    assert_true(s.held);
    assert_int_equal(s.hold_changed_ms, t1);

    bool applied = true;
    /* Older: ignored. */
    assert_int_equal(
        vault_store_hold_synced(t, a.header_id, false, t1 - 1, &applied, &err),
        0);
    assert_false(applied);
    assert_true(snap_of(t, &a).held);
    /* Same state, newer: nothing to change. */
    assert_int_equal(
        vault_store_hold_synced(t, a.header_id, true, t1 + 9, &applied, &err),
        0);
    assert_false(applied);
    assert_int_equal(snap_of(t, &a).hold_changed_ms, t1);
    /* Tie, released: held wins. */
    assert_int_equal(
        vault_store_hold_synced(t, a.header_id, false, t1, &applied, &err), 0);
    assert_false(applied);
    assert_true(snap_of(t, &a).held);
    /* Newer release: adopted with the peer's time. */
    assert_int_equal(
        vault_store_hold_synced(t, a.header_id, false, t1 + 5, &applied, &err),
        0);
    assert_true(applied);
    s = snap_of(t, &a);
    assert_false(s.held);
    assert_int_equal(s.hold_changed_ms, t1 + 5);
    /* Tie, held: held wins. */
    assert_int_equal(
        vault_store_hold_synced(t, a.header_id, true, t1 + 5, &applied, &err),
        0);
    assert_true(applied);
    s = snap_of(t, &a);
    assert_true(s.held);
    assert_int_equal(s.hold_changed_ms, t1 + 5);
    /* Unknown snapshot. */
    uint8_t ghost[VAULT_ID_LEN];
    rand_id(&f->rng, ghost);
    assert_int_equal(
        vault_store_hold_synced(t, ghost, true, t1, &applied, &err),
        CFR_ENOTFOUND);
    assert_false(applied);

    /* A local release stamps this vault's clock; commit's hold_previous
     * stamps the snapshot it holds. */
    cfr_clock_advance(f->r[0].clock, 2000);
    int64_t t2 = cfr_clock_now_ms(f->r[0].clock);
    assert_int_equal(vault_store_hold(t, a.header_id, false, &err), 0);
    s = snap_of(t, &a);
    assert_false(s.held);
    assert_int_equal(s.hold_changed_ms, t2);
    cfr_clock_advance(f->r[0].clock, 3000);
    int64_t t3 = cfr_clock_now_ms(f->r[0].clock);
    upload(t, &b2, true, NULL);
    s = snap_of(t, &a);
    assert_true(s.held);
    assert_int_equal(s.hold_changed_ms, t3);
    s = snap_of(t, &b2);
    assert_false(s.held);
    assert_int_equal(s.hold_changed_ms, 0);
    build_fini(&a);
    build_fini(&b2);
}

/* Counted after commit; a page only put under a lease is not. */
static void
test_sync_page_counted(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build a, loose;
    /* Enough IDs for an inner level. */
    build_init(&a, &f->rng, 1500, NULL, 0, m, 0x41);
    assert_true(a.root.height >= 2);
    build_init(&loose, &f->rng, 3, NULL, 0, m, 0x42);
    upload(t, &a, false, NULL);
    bool counted;
    for (size_t i = 0; i < a.n_pages; i++) {
        counted = false;
        assert_int_equal(
            vault_store_page_counted(t, a.pages[i].id, &counted, &err), 0);
        assert_true(counted);
    }
    /* A leaf object is counted as a leaf, never as a page. */
    counted = true;
    assert_int_equal(vault_store_page_counted(t, a.ids[0], &counted, &err), 0);
    assert_false(counted);

    uint8_t lease[VAULT_LEASE_LEN];
    int64_t exp;
    assert_int_equal(vault_lease_open(t, NULL, 0, 0, lease, &exp, &err), 0);
    assert_int_equal(
        vault_store_put(t, lease, loose.pages, loose.n_pages, NULL, &err), 0);
    assert_true(present(t, loose.root.id));
    counted = true;
    assert_int_equal(vault_store_page_counted(t, loose.root.id, &counted, &err),
                     0);
    assert_false(counted);
    assert_int_equal(vault_lease_close(t, lease, &err), 0);

    /* Dropped: no longer counted. */
    bool dropped;
    assert_int_equal(vault_store_drop_synced(t, a.header_id, 0, &dropped, &err),
                     0);
    assert_true(dropped);
    counted = true;
    assert_int_equal(vault_store_page_counted(t, a.root.id, &counted, &err), 0);
    assert_false(counted);
    build_fini(&a);
    build_fini(&loose);
}

/* The checksum a peer gets is BLAKE2b-256 of the bytes it gets. */
static void
test_sync_get_checked(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct vault_tenant *t = f->r[0].t;
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build a;
    build_init(&a, &f->rng, 4, NULL, 0, m, 0x51);
    upload(t, &a, false, NULL);
    struct cfr_buf out;
    cfr_buf_init(&out, 1u << 20);
    uint8_t sum[VAULT_ID_LEN], want[VAULT_ID_LEN];
    enum vault_object_kind kind = 0;
    for (size_t i = 0; i < a.n_ids; i++) {
        memset(sum, 0, sizeof(sum));
        assert_int_equal(
            vault_store_get_checked(t, a.ids[i], &out, &kind, sum, &err), 0);
        assert_int_equal(kind, VAULT_OBJ_SEALED);
        uint8_t *data = sealed_bytes(a.ids[i]);
        assert_int_equal(out.len, OBJ_LEN);
        assert_memory_equal(out.data, data, OBJ_LEN);
        free(data);
        cfr_id_plain(out.data, out.len, want);
        assert_memory_equal(sum, want, VAULT_ID_LEN);
    }
    /* A page's checksum is its ID. */
    assert_int_equal(
        vault_store_get_checked(t, a.root.id, &out, &kind, sum, &err), 0);
    assert_int_equal(kind, VAULT_OBJ_REF_PAGE);
    assert_memory_equal(sum, a.root.id, VAULT_ID_LEN);
    uint8_t ghost[VAULT_ID_LEN];
    rand_id(&f->rng, ghost);
    assert_int_equal(vault_store_get_checked(t, ghost, &out, &kind, sum, &err),
                     CFR_ENOTFOUND);
    assert_int_equal(f->r[0].corrupt.n, 0);
    cfr_buf_fini(&out);
    build_fini(&a);
}

/* Overwrites the stored value of id with one byte flipped (same length). */
static void
damage(struct cfr_kv *kv, const uint8_t id[VAULT_ID_LEN], size_t at)
{
    struct cfr_err err;
    struct cfr_buf v;
    cfr_buf_init(&v, 1u << 20);
    assert_int_equal(cfr_kv_get(kv, CF_CHUNKS, id, VAULT_ID_LEN, &v, &err), 0);
    assert_true(at < v.len);
    v.data[at] ^= 0x10;
    assert_int_equal(
        cfr_kv_put(kv, CF_CHUNKS, id, VAULT_ID_LEN, v.data, v.len, &err), 0);
    cfr_buf_fini(&v);
}

/*
 * Damaged objects: every corrupt read calls on_corrupt once with the
 * tenant and ID (gets, and a drop's walk over a damaged page); repair
 * refuses a wrong copy, replaces with the right one, leaves a healthy
 * object alone, and GC afterwards compacts with the store whole.
 */
static void
test_sync_repair_and_on_corrupt(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct replica *r = &f->r[0];
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build a, p;
    build_init(&a, &f->rng, 4, NULL, 0, m, 0x61);
    build_init(&p, &f->rng, 3, NULL, 0, m, 0x62);
    upload(r->t, &a, false, NULL);
    upload(r->t, &p, false, NULL);
    assert_int_equal(p.n_pages, 1);

    struct cfr_kv *kv = raw_open(r);
    damage(kv, a.ids[1], 70);
    damage(kv, p.root.id, 3);
    raw_close(r, kv);
    struct vault_tenant *t = r->t;

    struct cfr_buf out;
    cfr_buf_init(&out, 1u << 20);
    enum vault_object_kind kind;
    uint8_t sum[VAULT_ID_LEN];
    assert_int_equal(r->corrupt.n, 0);
    assert_int_equal(vault_store_get(t, a.ids[1], &out, &kind, &err),
                     CFR_ECORRUPT);
    assert_int_equal(r->corrupt.n, 1);
    assert_string_equal(r->corrupt.tenant, "acme");
    assert_memory_equal(r->corrupt.id, a.ids[1], VAULT_ID_LEN);
    assert_int_equal(
        vault_store_get_checked(t, a.ids[1], &out, &kind, sum, &err),
        CFR_ECORRUPT);
    assert_int_equal(r->corrupt.n, 2);
    /* Healthy reads report nothing. */
    assert_int_equal(vault_store_get(t, a.ids[0], &out, &kind, &err), 0);
    assert_int_equal(r->corrupt.n, 2);

    /* A drop walks the damaged page: it fails, names it, and reports it. */
    bool dropped = true;
    assert_int_equal(vault_store_drop_synced(t, p.header_id, 0, &dropped, &err),
                     CFR_ECORRUPT);
    assert_false(dropped);
    assert_int_equal(r->corrupt.n, 3);
    assert_memory_equal(r->corrupt.id, p.root.id, VAULT_ID_LEN);
    struct vault_tenant_stats ts;
    assert_int_equal(vault_store_stats(t, &ts, &err), 0);
    assert_int_equal(ts.corrupt_reads, 3);
    assert_int_equal(ts.snapshots, 2);

    /* Wrong copies: other bytes of the same length, then another valid
     * object's bytes. Nothing is written. */
    uint8_t *good = sealed_bytes(a.ids[1]);
    uint8_t *wrong = sealed_bytes(a.ids[1]);
    wrong[OBJ_LEN - 1] ^= 0x01;
    bool repaired = true;
    assert_int_equal(vault_store_repair(t, a.ids[1], VAULT_OBJ_SEALED, wrong,
                                        OBJ_LEN, &repaired, &err),
                     CFR_ECORRUPT);
    assert_false(repaired);
    uint8_t *other = sealed_bytes(a.ids[2]);
    assert_int_equal(vault_store_repair(t, a.ids[1], VAULT_OBJ_SEALED, other,
                                        OBJ_LEN, &repaired, &err),
                     CFR_ECORRUPT);
    assert_int_equal(vault_store_get(t, a.ids[1], &out, &kind, &err),
                     CFR_ECORRUPT);
    assert_int_equal(r->corrupt.n, 4);
    /* A page copy must hash to its ID, whatever its kind claims. */
    assert_int_equal(vault_store_repair(t, p.root.id, VAULT_OBJ_REF_PAGE, good,
                                        OBJ_LEN, &repaired, &err),
                     CFR_ECORRUPT);
    assert_false(repaired);

    /* The right copies. */
    assert_int_equal(vault_store_repair(t, a.ids[1], VAULT_OBJ_SEALED, good,
                                        OBJ_LEN, &repaired, &err),
                     0);
    assert_true(repaired);
    assert_int_equal(vault_store_get(t, a.ids[1], &out, &kind, &err), 0);
    assert_int_equal(out.len, OBJ_LEN);
    assert_memory_equal(out.data, good, OBJ_LEN);
    assert_int_equal(vault_store_repair(t, p.root.id, VAULT_OBJ_REF_PAGE,
                                        p.pages[0].data, p.pages[0].len,
                                        &repaired, &err),
                     0);
    assert_true(repaired);
    /* Healthy now (and healthy all along for a.ids[0]): nothing written. */
    assert_int_equal(vault_store_repair(t, a.ids[1], VAULT_OBJ_SEALED, good,
                                        OBJ_LEN, &repaired, &err),
                     0);
    assert_false(repaired);
    uint8_t *zero_good = sealed_bytes(a.ids[0]);
    assert_int_equal(vault_store_repair(t, a.ids[0], VAULT_OBJ_SEALED,
                                        zero_good, OBJ_LEN, &repaired, &err),
                     0);
    assert_false(repaired);
    /* Not stored here. */
    uint8_t ghost[VAULT_ID_LEN];
    rand_id(&f->rng, ghost);
    uint8_t *ghost_bytes = sealed_bytes(ghost);
    assert_int_equal(vault_store_repair(t, ghost, VAULT_OBJ_SEALED, ghost_bytes,
                                        OBJ_LEN, &repaired, &err),
                     CFR_ENOTFOUND);

    /* Whole again: the drop goes through, GC compacts, scrub is clean. */
    assert_int_equal(vault_store_drop_synced(t, p.header_id, 0, &dropped, &err),
                     0);
    assert_true(dropped);
    struct vault_maint_stats ms;
    assert_int_equal(vault_store_gc(t, &ms, &err), 0);
    assert_int_equal(ms.objects_removed, 3 + 1);
    assert_int_equal(vault_store_scrub(t, NULL, NULL, &ms, &err), 0);
    assert_int_equal(ms.bad_objects, 0);
    for (size_t i = 0; i < a.n_ids; i++) {
        assert_int_equal(vault_store_get(t, a.ids[i], &out, &kind, &err), 0);
    }
    assert_int_equal(r->corrupt.n, 4);
    free(good);
    free(wrong);
    free(other);
    free(zero_good);
    free(ghost_bytes);
    cfr_buf_fini(&out);
    build_fini(&a);
    build_fini(&p);
}

/* A version 1 snapshot record (before hold times) still reads. */
static void
test_sync_v1_record_decodes(void **state)
{
    struct fx *f = *state;
    struct cfr_err err;
    struct replica *r = &f->r[0];
    uint8_t m[VAULT_ID_LEN];
    rand_id(&f->rng, m);
    struct build a;
    build_init(&a, &f->rng, 3, NULL, 0, m, 0x71);
    struct vault_snapshot s;
    cfr_clock_advance(r->clock, 4242);
    upload(r->t, &a, false, &s);
    uint8_t d_before[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint64_t ns, nt;

    /* Rewrite its record as version 1 (docs/FORMAT.md), held. */
    struct cfr_kv *kv = raw_open(r);
    uint8_t rec[94 + 16];
    size_t hl = strlen(a.header);
    rec[0] = 1;
    memcpy(rec + 1, m, VAULT_ID_LEN);
    cfr_put_le64(rec + 33, (uint64_t)s.received_ms);
    memcpy(rec + 41, a.root.id, VAULT_ID_LEN);
    cfr_put_le32(rec + 73, a.root.height);
    cfr_put_le64(rec + 77, a.root.entries);
    cfr_put_le32(rec + 85, 0x5);
    rec[89] = 1;
    cfr_put_le32(rec + 90, (uint32_t)hl);
    memcpy(rec + 94, a.header, hl);
    assert_int_equal(
        cfr_kv_put(kv, CF_SNAPS, a.header_id, VAULT_ID_LEN, rec, 94 + hl, &err),
        0);
    raw_close(r, kv);

    struct listed l;
    memset(&l, 0, sizeof(l));
    bool want[VAULT_SYNC_BUCKETS] = {false};
    want[0x71] = true;
    assert_int_equal(
        vault_store_sync_list(r->t, want, list_snap, NULL, &l, &err), 0);
    assert_int_equal(l.n_snaps, 1);
    assert_true(l.s[0].held);
    assert_int_equal(l.s[0].hold_changed_ms, 0);
    assert_int_equal(l.s[0].received_ms, T0 + 4242);
    assert_int_equal(l.s[0].flags, 0x5);
    assert_int_equal(l.s[0].refs.height, a.root.height);
    assert_string_equal(l.header[0], a.header);
    digest_ok(r->t, d_before, &ns, &nt);
    assert_int_equal(ns, 1);

    /* A peer's newer release applies to it; the record is version 2 now
     * and keeps the header. */
    bool applied;
    assert_int_equal(
        vault_store_hold_synced(r->t, a.header_id, false, 1, &applied, &err),
        0);
    assert_true(applied);
    struct vault_snapshot s2 = snap_of(r->t, &a);
    assert_false(s2.held);
    assert_int_equal(s2.hold_changed_ms, 1);
    assert_int_equal(s2.received_ms, T0 + 4242);
    memset(&l, 0, sizeof(l));
    assert_int_equal(
        vault_store_sync_list(r->t, want, list_snap, NULL, &l, &err), 0);
    assert_string_equal(l.header[0], a.header);
    /* And it drops like any other. */
    bool dropped;
    assert_int_equal(
        vault_store_drop_synced(r->t, a.header_id, 0, &dropped, &err), 0);
    assert_true(dropped);
    build_fini(&a);
}

/* The mailbox's snapshots in order, as header IDs' first two bytes. */
struct order {
    size_t n;
    uint8_t first[8][2];
};

static int
order_fn(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
         size_t header_len)
{
    struct order *o = ctx;
    (void)header;
    (void)header_len;
    assert_true(o->n < 8);
    memcpy(o->first[o->n++], s->header_id, 2);
    return 0;
}

/*
 * Finding 1: a snapshot pulled late keeps its age. Quorum scenario: S1
 * reached A and B only, S2 (newer) reached C directly; C pulls S1 later.
 * With S1 filed at the pull time, C would order S2 before S1 and its
 * retention would drop S2, the mailbox's real newest, as superseded.
 */
static void
test_sync_commit_keeps_peer_age(void **state)
{
    struct fx *f = *state;
    struct replica *c = &f->r[0];
    struct cfr_err err;
    struct vault_maint_stats ms;
    uint8_t mbox[VAULT_ID_LEN];
    struct build s1, s2;
    struct vault_snapshot r1, r2;
    rand_id(&f->rng, mbox);
    build_init(&s1, &f->rng, 3, NULL, 0, mbox, 0x11);
    build_init(&s2, &f->rng, 3, NULL, 0, mbox, 0x22);
    /* S1 taken at T0 (on its peers); S2 arrives here at T0 + 1 h. */
    cfr_clock_advance(c->clock, CFR_MS_PER_HOUR);
    upload(c->t, &s2, false, &r2);
    assert_int_equal(r2.received_ms, T0 + CFR_MS_PER_HOUR);
    /* Two hours later, the pull of S1 with its age mapped here. */
    cfr_clock_advance(c->clock, 2 * CFR_MS_PER_HOUR);
    upload_at(c->t, &s1, false, T0, &r1);
    assert_int_equal(r1.received_ms, T0);
    struct order o = {0};
    assert_int_equal(
        vault_store_snapshots(c->t, mbox, false, order_fn, &o, &err), 0);
    assert_int_equal(o.n, 2);
    assert_memory_equal(o.first[0], s1.header_id, 2);
    assert_memory_equal(o.first[1], s2.header_id, 2);
    /* Retention past the window drops S1 (superseded), keeps S2. */
    cfr_clock_advance(c->clock, CFR_MS_PER_DAY);
    assert_int_equal(vault_store_retention(c->t, CFR_MS_PER_HOUR, &ms, &err),
                     0);
    assert_int_equal(ms.snapshots_removed, 1);
    struct vault_snapshot kept = snap_of(c->t, &s2);
    assert_memory_equal(kept.header_id, s2.header_id, VAULT_ID_LEN);
    bool gone = false;
    assert_int_equal(vault_store_has_tombstone(c->t, s1.header_id, &gone, &err),
                     0);
    assert_true(gone);
    assert_int_equal(vault_store_has_tombstone(c->t, s2.header_id, &gone, &err),
                     0);
    assert_false(gone);

    /* A time in the future is clamped to now: never newer than a commit
     * made after it. */
    struct build s3;
    struct vault_snapshot r3;
    build_init(&s3, &f->rng, 2, NULL, 0, mbox, 0x33);
    int64_t now = cfr_clock_now_ms(c->clock);
    upload_at(c->t, &s3, false, now + CFR_MS_PER_DAY, &r3);
    assert_int_equal(r3.received_ms, now);
    build_fini(&s1);
    build_fini(&s2);
    build_fini(&s3);
}

/* Finding 3: an adopted tombstone keeps the peer's age; never future. */
static void
test_sync_drop_synced_time(void **state)
{
    struct fx *f = *state;
    struct replica *r = &f->r[0];
    struct cfr_err err;
    uint8_t mbox[VAULT_ID_LEN];
    struct build a;
    struct vault_snapshot sa;
    uint8_t ghost[VAULT_ID_LEN], future[VAULT_ID_LEN];
    rand_id(&f->rng, mbox);
    build_init(&a, &f->rng, 2, NULL, 0, mbox, 0x44);
    upload(r->t, &a, false, &sa);
    cfr_clock_advance(r->clock, 10 * CFR_MS_PER_HOUR);
    int64_t now = cfr_clock_now_ms(r->clock);
    bool dropped = false;
    assert_int_equal(vault_store_drop_synced(r->t, a.header_id,
                                             now - 3 * CFR_MS_PER_HOUR,
                                             &dropped, &err),
                     0);
    assert_true(dropped);
    rand_id(&f->rng, ghost);
    ghost[0] = 0x45;
    assert_int_equal(vault_store_drop_synced(r->t, ghost,
                                             now - 5 * CFR_MS_PER_HOUR,
                                             &dropped, &err),
                     0);
    assert_false(dropped);
    rand_id(&f->rng, future);
    future[0] = 0x46;
    assert_int_equal(vault_store_drop_synced(r->t, future,
                                             now + 5 * CFR_MS_PER_HOUR,
                                             &dropped, &err),
                     0);
    struct listed l;
    memset(&l, 0, sizeof(l));
    bool want[VAULT_SYNC_BUCKETS] = {false};
    want[0x44] = want[0x45] = want[0x46] = true;
    assert_int_equal(
        vault_store_sync_list(r->t, want, NULL, list_tomb, &l, &err), 0);
    assert_int_equal(l.n_tombs, 3);
    assert_memory_equal(l.tomb[0], a.header_id, VAULT_ID_LEN);
    assert_int_equal(l.dropped[0], now - 3 * CFR_MS_PER_HOUR);
    assert_memory_equal(l.tomb[1], ghost, VAULT_ID_LEN);
    assert_int_equal(l.dropped[1], now - 5 * CFR_MS_PER_HOUR);
    assert_memory_equal(l.tomb[2], future, VAULT_ID_LEN);
    assert_int_equal(l.dropped[2], now);
    /* Re-applying keeps the first time (re-stamping would let a
     * tombstone live forever). */
    assert_int_equal(vault_store_drop_synced(r->t, ghost, now, &dropped, &err),
                     0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(
        vault_store_sync_list(r->t, want, NULL, list_tomb, &l, &err), 0);
    assert_int_equal(l.dropped[1], now - 5 * CFR_MS_PER_HOUR);
    build_fini(&a);
}

/* Finding 2: the seeding marker is persisted and leaves the digest and
 * listings alone. */
static void
test_sync_seed_marker(void **state)
{
    struct fx *f = *state;
    struct replica *r = &f->r[0];
    struct cfr_err err;
    uint8_t d0[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint8_t d1[VAULT_SYNC_BUCKETS][VAULT_ID_LEN];
    uint64_t ns = 9, nt = 9;
    unsigned which = 0;
    bool seeding = true;
    assert_int_equal(vault_store_seed_get(r->t, &seeding, &err), 0);
    assert_false(seeding);
    digest_ok(r->t, d0, &ns, &nt);
    assert_int_equal(vault_store_seed_set(r->t, true, &err), 0);
    assert_int_equal(vault_store_seed_get(r->t, &seeding, &err), 0);
    assert_true(seeding);
    digest_ok(r->t, d1, &ns, &nt);
    assert_int_equal(digest_diff(d0, d1, &which), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(nt, 0);
    /* Survives a restart (a seed cut by kill -9 is still one). */
    vault_store_close(r->st);
    replica_open(r);
    assert_int_equal(vault_store_seed_get(r->t, &seeding, &err), 0);
    assert_true(seeding);
    /* A snapshot committed and collected around it does not disturb it,
     * and GC leaves it alone. */
    uint8_t mbox[VAULT_ID_LEN];
    struct build a;
    struct vault_snapshot sa;
    struct vault_maint_stats ms;
    rand_id(&f->rng, mbox);
    build_init(&a, &f->rng, 2, NULL, 0, mbox, 0x51);
    upload(r->t, &a, false, &sa);
    assert_int_equal(vault_store_gc(r->t, &ms, &err), 0);
    assert_int_equal(vault_store_seed_get(r->t, &seeding, &err), 0);
    assert_true(seeding);
    assert_int_equal(vault_store_seed_set(r->t, false, &err), 0);
    vault_store_close(r->st);
    replica_open(r);
    assert_int_equal(vault_store_seed_get(r->t, &seeding, &err), 0);
    assert_false(seeding);
    /* Clearing twice is harmless. */
    assert_int_equal(vault_store_seed_set(r->t, false, &err), 0);
    build_fini(&a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_digest_order_independent,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_digest_one_bucket_changes,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_list_filters_buckets,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_drop_synced, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_hold_synced, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_page_counted, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_get_checked, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_repair_and_on_corrupt,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_v1_record_decodes, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_commit_keeps_peer_age,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_drop_synced_time, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_sync_seed_marker, fx_setup,
                                        fx_teardown),
    };
    /* Warnings and errors only: drops and GC log every run. */
    cfr_log_set_level(CFR_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
