/*
 * meta_growth.c - how snapshot metadata grows with hourly change.
 *
 * Simulates a Maildir++ mailbox of N messages backed up every hour for H
 * hours; each hour 5 messages arrive (names begin with the delivery time,
 * so they sort after their folder's newest), 5 change flags (one entry
 * rewritten, key kept) and 2 are deleted, at places drawn from a fixed
 * seed. Every hour the whole manifest and reference list are rebuilt from
 * the sorted mailbox, as the agent will, into a content-addressed store
 * that keeps each page ID once. Prints the unique bytes of the first
 * snapshot's metadata (manifest + reference list pages), the unique bytes
 * of all snapshots together, and their ratio; the requirement (B9) is a
 * ratio of at most 10 for N = 100,000 and H = 720. Snapshot headers are
 * counted apart (one per snapshot, a few hundred bytes).
 *
 * Page IDs are real: unkeyed BLAKE2b-256 (cfr_id_plain) for both trees;
 * the agent keys the manifest's, which changes no size.
 *
 * Build (from a configured build directory, e.g. /tmp/build):
 *   cc -std=c17 -O2 -D_DEFAULT_SOURCE -I core -I /tmp/build/proto \
 *      bench/meta_growth.c /tmp/build/core/libcoffer_core.a \
 *      /tmp/build/proto/libcoffer_proto.a -lprotobuf-c -lsodium \
 *      -lzstd -lconfig -lpthread -o /tmp/meta_growth
 * or include bench/snap.cmake from bench/CMakeLists.txt (target
 * meta_growth). Run:
 *   meta_growth [messages [hours [seed]]]      (default 100000 720 1)
 * META_GROWTH_MANIFEST and META_GROWTH_REFS, each
 * "leaf_target,leaf_min,inner_target,inner_min", override the page
 * parameters for tuning (each max becomes 4 * (target + min)).
 * With META_GROWTH_VERIFY set it keeps every page and reads the last
 * snapshot back through the readers, comparing it with the mailbox.
 *
 * tests/unit/snap_test.c includes this file with META_GROWTH_NO_MAIN to run
 * the same simulation at a smaller scale with a test hash.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "mem.h"
#include "snap.h"
#include "tree.h"

#ifndef META_GROWTH_NO_MAIN
#include "id.h" /* cfr_id_plain */
#endif

#define MG_KEY_MAX    96
#define MG_INFO_MAX   8
#define MG_MSGID_MAX  64
#define MG_CHUNKS_MAX 3
#define MG_ARRIVALS   5
#define MG_FLAGS      5
#define MG_DELETIONS  2

typedef void mg_id_fn(const void *data, size_t len, uint8_t out[32]);

/* A content-addressed store: page IDs seen, their bytes if kept. */
struct mg_slot {
    uint8_t id[32];
    bool used;
    uint32_t len;
    uint8_t *bytes;
};

struct mg_store {
    struct mg_slot *slots;
    size_t cap, n;
    mg_id_fn *id_fn;
    bool keep;
    uint64_t unique_bytes, unique_pages;
    uint64_t puts; /* every page handed over, new or not */
    /* New bytes by tree (0 manifest, 1 references) and level. */
    uint64_t level_bytes[2][CFR_TREE_HEIGHT_MAX];
};

struct mg_msg {
    uint8_t key[MG_KEY_MAX];
    uint8_t key_len;
    uint8_t info[MG_INFO_MAX];
    uint8_t info_len;
    bool in_new;
    uint64_t size;
    int64_t mtime_ns;
    uint8_t msgid[MG_MSGID_MAX];
    uint8_t msgid_len;
    uint8_t chunks[MG_CHUNKS_MAX * 32];
    uint8_t n_chunks;
};

struct mg_sim {
    uint64_t rng;
    struct mg_msg *pool; /* every message ever, deleted ones included */
    size_t n_pool, cap_pool;
    uint32_t *order; /* live messages, sorted by key */
    size_t n_live;
    uint8_t *chunk_set; /* live chunk IDs, sorted */
    size_t n_chunk_set;
    uint8_t *page_ids; /* this snapshot's manifest page IDs */
    size_t n_page_ids, cap_page_ids;
    bool collecting;
    uint64_t next_time;
    struct mg_store store;
    struct cfr_tree_root manifest, refs;
    uint64_t header_bytes;
    int hours;
    /* Page parameters; NULL for the defaults of snap.h. */
    const struct cfr_tree_params *mparams, *rparams;
};

static uint64_t
mg_rand(struct mg_sim *s)
{
    uint64_t z = (s->rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static size_t
mg_below(struct mg_sim *s, size_t n)
{
    return (size_t)(mg_rand(s) % n);
}

static int
mg_store_init(struct mg_store *st, mg_id_fn *id_fn, bool keep)
{
    memset(st, 0, sizeof(*st));
    st->cap = 1 << 16;
    st->slots = cfr_calloc(st->cap, sizeof(*st->slots));
    st->id_fn = id_fn;
    st->keep = keep;
    return st->slots == NULL ? CFR_ENOMEM : 0;
}

static void
mg_store_fini(struct mg_store *st)
{
    for (size_t i = 0; i < st->cap && st->slots != NULL; i++) {
        cfr_free(st->slots[i].bytes);
    }
    cfr_free(st->slots);
    memset(st, 0, sizeof(*st));
}

static struct mg_slot *
mg_store_find(struct mg_store *st, const uint8_t id[32])
{
    size_t i = (size_t)cfr_get_le64(id) & (st->cap - 1);
    while (st->slots[i].used && memcmp(st->slots[i].id, id, 32) != 0) {
        i = (i + 1) & (st->cap - 1);
    }
    return &st->slots[i];
}

static int
mg_store_grow(struct mg_store *st)
{
    struct mg_slot *old = st->slots;
    size_t old_cap = st->cap;
    st->slots = cfr_calloc(old_cap * 2, sizeof(*st->slots));
    if (st->slots == NULL) {
        st->slots = old;
        return CFR_ENOMEM;
    }
    st->cap = old_cap * 2;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].used) {
            *mg_store_find(st, old[i].id) = old[i];
        }
    }
    cfr_free(old);
    return 0;
}

static int
mg_store_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
             uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct mg_sim *s = ctx;
    struct mg_store *st = &s->store;
    st->id_fn(page, len, id_r);
    st->puts++;
    if (s->collecting) {
        if (s->n_page_ids == s->cap_page_ids) {
            size_t cap = s->cap_page_ids == 0 ? 1024 : 2 * s->cap_page_ids;
            uint8_t *p = cfr_realloc(s->page_ids, cap * 32);
            if (p == NULL) {
                return CFR_ERR(err, CFR_ENOMEM, "page ids");
            }
            s->page_ids = p;
            s->cap_page_ids = cap;
        }
        memcpy(s->page_ids + 32 * s->n_page_ids++, id_r, 32);
    }
    if (2 * (st->n + 1) > st->cap && mg_store_grow(st) != 0) {
        return CFR_ERR(err, CFR_ENOMEM, "store");
    }
    struct mg_slot *slot = mg_store_find(st, id_r);
    if (slot->used) {
        return 0;
    }
    if (st->keep) {
        if ((slot->bytes = cfr_malloc(len == 0 ? 1 : len)) == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "store page");
        }
        memcpy(slot->bytes, page, len);
    }
    memcpy(slot->id, id_r, 32);
    st->level_bytes[s->collecting ? 0 : 1][level] += len;
    slot->used = true;
    slot->len = (uint32_t)len;
    st->n++;
    st->unique_pages++;
    st->unique_bytes += len;
    return 0;
}

static int
mg_store_get(void *ctx, const uint8_t id[CFR_TREE_ID_LEN], struct cfr_buf *page,
             struct cfr_err *err)
{
    struct mg_sim *s = ctx;
    struct mg_slot *slot = mg_store_find(&s->store, id);
    if (!slot->used || (!s->store.keep && slot->len > 0)) {
        return CFR_ERR(err, CFR_ENOTFOUND, "page not stored");
    }
    return cfr_buf_append(page, slot->bytes, slot->len, err);
}

static const char *const mg_folders[] = {
    "",           ".Archive.2022", ".Archive.2023", ".Lists.announce",
    ".Lists.dev", ".Sent",         ".Trash",
};
/* Cumulative shares of the initial messages, per mille. */
static const unsigned mg_folder_share[] = {400, 520, 650, 720, 850, 960, 1000};

static int
mg_key_cmp(const struct mg_msg *a, const struct mg_msg *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    return c != 0 ? c : (int)a->key_len - (int)b->key_len;
}

static void
mg_set_info(struct mg_msg *m, const char *info)
{
    m->info_len = (uint8_t)strlen(info);
    memcpy(m->info, info, m->info_len);
}

/* Makes a message in folder f delivered at time t (seconds). */
static struct mg_msg *
mg_new_msg(struct mg_sim *s, size_t f, uint64_t t, bool fresh)
{
    if (s->n_pool == s->cap_pool) {
        size_t cap = s->cap_pool == 0 ? 1024 : 2 * s->cap_pool;
        struct mg_msg *p = cfr_realloc(s->pool, cap * sizeof(*p));
        if (p == NULL) {
            return NULL;
        }
        s->pool = p;
        s->cap_pool = cap;
    }
    struct mg_msg *m = &s->pool[s->n_pool++];
    memset(m, 0, sizeof(*m));
    /* Sizes from 2 KiB to about 256 KiB, most of them small. */
    unsigned shift = 11 + (unsigned)mg_below(s, 8);
    m->size = ((uint64_t)1 << shift) + mg_below(s, (size_t)1 << shift);
    size_t fl = strlen(mg_folders[f]);
    memcpy(m->key, mg_folders[f], fl);
    m->key[fl] = '\0';
    int n = snprintf((char *)m->key + fl + 1, MG_KEY_MAX - fl - 1,
                     "%llu.M%uP%u.mail.example.org,S=%llu,W=%llu",
                     (unsigned long long)t, (unsigned)mg_below(s, 1000000),
                     (unsigned)mg_below(s, 100000), (unsigned long long)m->size,
                     (unsigned long long)(m->size + m->size / 40));
    m->key_len = (uint8_t)(fl + 1 + (size_t)n);
    if (fresh) {
        m->in_new = true;
    } else {
        static const char *const infos[] = {":2,S",  ":2,S", ":2,S",
                                            ":2,RS", ":2,",  ":2,FS"};
        mg_set_info(m, infos[mg_below(s, 6)]);
    }
    m->mtime_ns = (int64_t)t * 1000000000 + (int64_t)mg_below(s, 1000000000);
    m->msgid_len = (uint8_t)snprintf(
        (char *)m->msgid, MG_MSGID_MAX, "<%016llx.%u@mx%u.example.net>",
        (unsigned long long)mg_rand(s), (unsigned)mg_below(s, 100000),
        (unsigned)mg_below(s, 50));
    m->n_chunks = (uint8_t)(1 + (m->size > 16384) + (m->size > 65536));
    for (size_t i = 0; i < m->n_chunks * 32u; i += 8) {
        cfr_put_le64(m->chunks + i, mg_rand(s));
    }
    return m;
}

static int
mg_id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

/* qsort has no context argument; the pool stays put while sorting. */
static const struct mg_msg *mg_sort_pool;

static int
mg_order_cmp(const void *a, const void *b)
{
    return mg_key_cmp(&mg_sort_pool[*(const uint32_t *)a],
                      &mg_sort_pool[*(const uint32_t *)b]);
}

static void
mg_sim_free(struct mg_sim *s)
{
    cfr_free(s->pool);
    cfr_free(s->order);
    cfr_free(s->chunk_set);
    cfr_free(s->page_ids);
    mg_store_fini(&s->store);
    memset(s, 0, sizeof(*s));
}

static int
mg_sim_init(struct mg_sim *s, size_t messages, uint64_t seed, mg_id_fn *id_fn,
            bool keep)
{
    int rc = CFR_ENOMEM;
    memset(s, 0, sizeof(*s));
    s->rng = seed;
    if (mg_store_init(&s->store, id_fn, keep) != 0) {
        goto out;
    }
    /* A year of mail before the first backup, one message every 5 min. */
    uint64_t t = 1700000000 - (uint64_t)messages * 300;
    for (size_t i = 0; i < messages; i++) {
        unsigned r = (unsigned)mg_below(s, 1000);
        size_t f = 0;
        while (r >= mg_folder_share[f]) {
            f++;
        }
        t += 1 + mg_below(s, 600);
        if (mg_new_msg(s, f, t, false) == NULL) {
            goto out;
        }
    }
    s->next_time = t + 60;
    if ((s->order = cfr_calloc(s->n_pool, sizeof(*s->order))) == NULL) {
        goto out;
    }
    for (size_t i = 0; i < s->n_pool; i++) {
        s->order[i] = (uint32_t)i;
    }
    s->n_live = s->n_pool;
    mg_sort_pool = s->pool;
    qsort(s->order, s->n_live, sizeof(*s->order), mg_order_cmp);
    size_t n_ids = 0;
    for (size_t i = 0; i < s->n_pool; i++) {
        n_ids += s->pool[i].n_chunks;
    }
    if ((s->chunk_set = cfr_malloc(n_ids * 32)) == NULL) {
        goto out;
    }
    for (size_t i = 0; i < s->n_pool; i++) {
        memcpy(s->chunk_set + 32 * s->n_chunk_set, s->pool[i].chunks,
               32u * s->pool[i].n_chunks);
        s->n_chunk_set += s->pool[i].n_chunks;
    }
    qsort(s->chunk_set, s->n_chunk_set, 32, mg_id_cmp);
    rc = 0;
out:
    return rc;
}

static void
mg_entry(const struct mg_msg *m, struct cfr_snap_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->key = m->key;
    e->key_len = m->key_len;
    e->kind = CFR_SNAP_MAILDIR_MESSAGE;
    e->info = m->info;
    e->info_len = m->info_len;
    e->in_new = m->in_new;
    e->size = m->size;
    e->mtime_ns = m->mtime_ns;
    e->mode = 0600;
    e->message_id = m->msgid;
    e->message_id_len = m->msgid_len;
    e->chunk_ids = m->chunks;
    e->n_chunks = m->n_chunks;
}

/*
 * One backup: the manifest from the sorted mailbox, then the reference
 * list from the sorted chunk IDs merged with the manifest's page IDs.
 */
static int
mg_sim_snapshot(struct mg_sim *s, struct cfr_err *err)
{
    int rc;
    struct cfr_snap_manifest_writer *mw = NULL;
    struct cfr_snap_refs_writer *rw = NULL;
    struct cfr_snap_entry e;
    struct cfr_buf hbuf;
    cfr_buf_init(&hbuf, CFR_SNAP_HEADER_MAX);
    s->n_page_ids = 0;
    s->collecting = true;
    if ((rc = cfr_snap_manifest_writer_new(s->mparams, mg_store_put, s, &mw,
                                           err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < s->n_live; i++) {
        mg_entry(&s->pool[s->order[i]], &e);
        if ((rc = cfr_snap_manifest_writer_add(mw, &e, err)) != 0) {
            goto out;
        }
    }
    if ((rc = cfr_snap_manifest_writer_finish(mw, &s->manifest, err)) != 0) {
        goto out;
    }
    s->collecting = false;
    qsort(s->page_ids, s->n_page_ids, 32, mg_id_cmp);
    if ((rc = cfr_snap_refs_writer_new(s->rparams, mg_store_put, s, &rw,
                                       err)) != 0) {
        goto out;
    }
    size_t a = 0, b = 0;
    const uint8_t *last = NULL;
    while (a < s->n_chunk_set || b < s->n_page_ids) {
        const uint8_t *next;
        if (b == s->n_page_ids ||
            (a < s->n_chunk_set &&
             memcmp(s->chunk_set + 32 * a, s->page_ids + 32 * b, 32) < 0)) {
            next = s->chunk_set + 32 * a++;
        } else {
            next = s->page_ids + 32 * b++;
        }
        /* A page that occurs twice in one tree is referenced once. */
        if (last != NULL && memcmp(last, next, 32) == 0) {
            continue;
        }
        if ((rc = cfr_snap_refs_writer_add(rw, next, err)) != 0) {
            goto out;
        }
        last = next;
    }
    if ((rc = cfr_snap_refs_writer_finish(rw, &s->refs, err)) != 0) {
        goto out;
    }
    struct cfr_snap_header h;
    memset(&h, 0, sizeof(h));
    memcpy(h.mailbox, "user@example.org", sizeof("user@example.org"));
    memcpy(h.host, "mail.example.org", sizeof("mail.example.org"));
    memcpy(h.agent_version, "coffer 0.1.0", sizeof("coffer 0.1.0"));
    h.agent_time_ms = (int64_t)s->next_time * 1000;
    h.manifest = s->manifest;
    h.refs = s->refs;
    h.has_parent = s->hours > 0;
    if ((rc = cfr_snap_header_encode(&h, &hbuf, err)) != 0) {
        goto out;
    }
    s->header_bytes += hbuf.len;
out:
    s->collecting = false;
    cfr_buf_fini(&hbuf);
    cfr_snap_manifest_writer_free(mw);
    cfr_snap_refs_writer_free(rw);
    return rc;
}

/* Finds where m belongs in order (the first live key not below it). */
static size_t
mg_lower_bound(struct mg_sim *s, const struct mg_msg *m)
{
    size_t lo = 0, hi = s->n_live;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mg_key_cmp(&s->pool[s->order[mid]], m) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* One hour of mail: arrivals, flag changes, deletions. */
static int
mg_sim_hour(struct mg_sim *s)
{
    uint8_t added[MG_ARRIVALS * MG_CHUNKS_MAX * 32];
    uint8_t gone[MG_DELETIONS * MG_CHUNKS_MAX * 32];
    size_t n_added = 0, n_gone = 0;
    int rc = CFR_ENOMEM;
    s->hours++;
    s->next_time += 3600;
    uint32_t *order =
        cfr_realloc(s->order, (s->n_live + MG_ARRIVALS) * sizeof(*s->order));
    if (order == NULL) {
        goto out;
    }
    s->order = order;
    for (int i = 0; i < MG_ARRIVALS; i++) {
        /* INBOX mostly, the rest to the mailing-list folders. */
        size_t f = mg_below(s, 10) < 7 ? 0 : 3 + mg_below(s, 2);
        struct mg_msg *m =
            mg_new_msg(s, f, s->next_time + (uint64_t)i * 600, true);
        if (m == NULL) {
            goto out;
        }
        size_t at = mg_lower_bound(s, m);
        memmove(s->order + at + 1, s->order + at,
                (s->n_live - at) * sizeof(*s->order));
        s->order[at] = (uint32_t)(s->n_pool - 1);
        s->n_live++;
        memcpy(added + 32 * n_added, m->chunks, 32u * m->n_chunks);
        n_added += m->n_chunks;
    }
    for (int i = 0; i < MG_FLAGS; i++) {
        struct mg_msg *m = &s->pool[s->order[mg_below(s, s->n_live)]];
        if (m->in_new) {
            m->in_new = false;
            mg_set_info(m, ":2,S");
        } else if (m->info_len == 4 && m->info[3] == 'S') {
            mg_set_info(m, ":2,RS");
        } else {
            mg_set_info(m, ":2,S");
        }
    }
    for (int i = 0; i < MG_DELETIONS; i++) {
        size_t at = mg_below(s, s->n_live);
        const struct mg_msg *m = &s->pool[s->order[at]];
        memcpy(gone + 32 * n_gone, m->chunks, 32u * m->n_chunks);
        n_gone += m->n_chunks;
        memmove(s->order + at, s->order + at + 1,
                (s->n_live - at - 1) * sizeof(*s->order));
        s->n_live--;
    }
    /* One merge pass keeps the live chunk set sorted. */
    qsort(added, n_added, 32, mg_id_cmp);
    qsort(gone, n_gone, 32, mg_id_cmp);
    uint8_t *set = cfr_malloc((s->n_chunk_set + n_added) * 32);
    if (set == NULL) {
        goto out;
    }
    size_t a = 0, b = 0, g = 0, n = 0;
    while (a < s->n_chunk_set || b < n_added) {
        const uint8_t *next;
        if (b == n_added ||
            (a < s->n_chunk_set &&
             memcmp(s->chunk_set + 32 * a, added + 32 * b, 32) < 0)) {
            next = s->chunk_set + 32 * a++;
        } else {
            next = added + 32 * b++;
        }
        while (g < n_gone && memcmp(gone + 32 * g, next, 32) < 0) {
            g++;
        }
        if (g < n_gone && memcmp(gone + 32 * g, next, 32) == 0) {
            g++;
            continue;
        }
        memcpy(set + 32 * n++, next, 32);
    }
    cfr_free(s->chunk_set);
    s->chunk_set = set;
    s->n_chunk_set = n;
    rc = 0;
out:
    return rc;
}

/*
 * Reads the last snapshot back through the readers (needs a store that
 * keeps pages) and compares it with the mailbox. Returns 0 when equal.
 */
static int
mg_sim_verify(struct mg_sim *s, struct cfr_err *err)
{
    int rc;
    struct cfr_snap_manifest_reader *mr = NULL;
    struct cfr_snap_refs_reader *rr = NULL;
    struct cfr_snap_entry got, want;
    uint8_t id[32];
    size_t i = 0, n_refs = 0;
    if ((rc = cfr_snap_manifest_reader_new(mg_store_get, s, &s->manifest, &mr,
                                           err)) != 0) {
        goto out;
    }
    while ((rc = cfr_snap_manifest_reader_next(mr, &got, err)) == 1) {
        if (i >= s->n_live) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "extra entry");
            goto out;
        }
        mg_entry(&s->pool[s->order[i++]], &want);
        if (got.key_len != want.key_len ||
            memcmp(got.key, want.key, got.key_len) != 0 ||
            got.info_len != want.info_len ||
            memcmp(got.info, want.info, got.info_len) != 0 ||
            got.in_new != want.in_new || got.size != want.size ||
            got.mtime_ns != want.mtime_ns || got.n_chunks != want.n_chunks ||
            memcmp(got.chunk_ids, want.chunk_ids, 32 * got.n_chunks) != 0 ||
            got.message_id_len != want.message_id_len ||
            memcmp(got.message_id, want.message_id, got.message_id_len) != 0) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "entry %zu differs", i - 1);
            goto out;
        }
    }
    if (rc != 0) {
        goto out;
    }
    if (i != s->n_live) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "%zu entries of %zu", i, s->n_live);
        goto out;
    }
    if ((rc = cfr_snap_refs_reader_new(mg_store_get, s, &s->refs, &rr, err)) !=
        0) {
        goto out;
    }
    while ((rc = cfr_snap_refs_reader_next(rr, id, err)) == 1) {
        n_refs++;
    }
    if (rc != 0) {
        goto out;
    }
    if (n_refs != s->refs.entries || n_refs < s->n_chunk_set) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "%zu references", n_refs);
        goto out;
    }
out:
    cfr_snap_manifest_reader_free(mr);
    cfr_snap_refs_reader_free(rr);
    return rc;
}

#ifndef META_GROWTH_NO_MAIN
static double
mg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long
mg_arg(int argc, char **argv, int i, unsigned long def)
{
    if (argc <= i) {
        return def;
    }
    char *end;
    unsigned long v = strtoul(argv[i], &end, 10);
    if (*end != '\0' || v == 0) {
        fprintf(stderr, "meta_growth: bad argument %s\n", argv[i]);
        exit(2);
    }
    return v;
}

/*
 * "leaf_target,leaf_min,inner_target,inner_min"; each max is four times
 * min + target.
 */
static void
mg_params_env(const char *name, struct cfr_tree_params *p, bool *set_r)
{
    const char *v = getenv(name);
    unsigned lt, lm, it, im;
    if (v == NULL || sscanf(v, "%u,%u,%u,%u", &lt, &lm, &it, &im) != 4 ||
        lt < 1 || lm < 1 || it < 1 || im < 2) {
        return;
    }
    p->leaf_target = lt;
    p->leaf_min = lm;
    p->leaf_max = 4 * (lt + lm);
    p->inner_target = it;
    p->inner_min = im;
    p->inner_max = 4 * (it + im);
    *set_r = true;
}

static void
mg_print_levels(const char *what, const uint64_t *first, const uint64_t *all,
                int hours)
{
    printf("%s new bytes per level (first snapshot / later hours' mean):",
           what);
    for (size_t l = 0; l < CFR_TREE_HEIGHT_MAX; l++) {
        if (all[l] != 0) {
            printf(" L%zu %llu/%.0f", l, (unsigned long long)first[l],
                   hours > 1 ? (double)(all[l] - first[l]) / (hours - 1) : 0.0);
        }
    }
    printf("\n");
}

int
main(int argc, char **argv)
{
    size_t messages = mg_arg(argc, argv, 1, 100000);
    int hours = (int)mg_arg(argc, argv, 2, 720);
    uint64_t seed = mg_arg(argc, argv, 3, 1);
    struct mg_sim s;
    struct cfr_err err;
    double t0 = mg_now();
    bool verify = getenv("META_GROWTH_VERIFY") != NULL;
    if (mg_sim_init(&s, messages, seed, cfr_id_plain, verify) != 0) {
        fprintf(stderr, "meta_growth: out of memory\n");
        return 1;
    }
    struct cfr_tree_params mp, rp;
    bool mset = false, rset = false;
    cfr_snap_manifest_params(&mp);
    cfr_snap_refs_params(&rp);
    mg_params_env("META_GROWTH_MANIFEST", &mp, &mset);
    mg_params_env("META_GROWTH_REFS", &rp, &rset);
    s.mparams = mset ? &mp : NULL;
    s.rparams = rset ? &rp : NULL;
    printf("manifest pages: leaf %u [%u,%u], inner %u [%u,%u]; references: "
           "leaf %u [%u,%u], inner %u [%u,%u]\n",
           mp.leaf_target, mp.leaf_min, mp.leaf_max, mp.inner_target,
           mp.inner_min, mp.inner_max, rp.leaf_target, rp.leaf_min, rp.leaf_max,
           rp.inner_target, rp.inner_min, rp.inner_max);
    double t1 = mg_now();
    uint64_t first = 0, first_pages = 0;
    uint64_t first_levels[2][CFR_TREE_HEIGHT_MAX];
    for (int h = 0; h < hours; h++) {
        if (h > 0 && mg_sim_hour(&s) != 0) {
            fprintf(stderr, "meta_growth: out of memory\n");
            return 1;
        }
        if (mg_sim_snapshot(&s, &err) != 0) {
            fprintf(stderr, "meta_growth: %s\n", err.msg);
            return 1;
        }
        if (h == 0) {
            first = s.store.unique_bytes;
            first_pages = s.store.unique_pages;
            memcpy(first_levels, s.store.level_bytes, sizeof(first_levels));
            printf("first snapshot: %zu entries, %llu references, "
                   "manifest height %u, reference height %u, %llu pages, "
                   "%llu bytes\n",
                   s.n_live, (unsigned long long)s.refs.entries,
                   s.manifest.height, s.refs.height,
                   (unsigned long long)first_pages, (unsigned long long)first);
        }
    }
    double t2 = mg_now();
    if (verify && mg_sim_verify(&s, &err) != 0) {
        fprintf(stderr, "meta_growth: read-back: %s\n", err.msg);
        return 1;
    }
    uint64_t total = s.store.unique_bytes;
    printf("messages=%zu snapshots=%d seed=%llu\n", messages, hours,
           (unsigned long long)seed);
    printf("first_bytes=%llu total_bytes=%llu total_pages=%llu "
           "per_hour_bytes=%.0f header_bytes=%llu\n",
           (unsigned long long)first, (unsigned long long)total,
           (unsigned long long)s.store.unique_pages,
           hours > 1 ? (double)(total - first) / (hours - 1) : 0.0,
           (unsigned long long)s.header_bytes);
    mg_print_levels("manifest", first_levels[0], s.store.level_bytes[0], hours);
    mg_print_levels("references", first_levels[1], s.store.level_bytes[1],
                    hours);
    printf("ratio=%.3f (requirement: <= 10; naive: %d)\n",
           (double)total / (double)first, hours);
    printf("ratio_with_headers=%.3f\n",
           (double)(total + s.header_bytes) /
               (double)(first + s.header_bytes / (uint64_t)hours));
    printf("time: setup %.1f s, snapshots %.1f s (%.1f ms each)\n", t1 - t0,
           t2 - t1, 1000 * (t2 - t1) / hours);
    mg_sim_free(&s);
    return total <= 10 * first ? 0 : 1;
}
#endif
