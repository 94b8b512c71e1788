/*
 * vault_gc_test.c - GC and retention in a loop against a real coffer-vault
 * while agents upload and commit: no referenced chunk is ever lost, and
 * what retention dropped is collected.
 *
 * Set-up: one vault (test mode), run in EPOCHS epochs on the same data
 * directory; epoch e runs with the test clock e * 31 days ahead, so at the
 * first APPLY_RETENTION of an epoch every snapshot of earlier epochs is
 * outside the 30-day window (and every earlier lease has expired). In each
 * epoch, at the same time:
 *  - UPLOADERS threads (agent certificate, own connection and sealing
 *    session) open a lease, ask Missing under it for a snapshot's chunks
 *    (some from a shared pool: dedup hits, which the lease must protect
 *    from a concurrent GC), put what is missing, put the reference pages
 *    and commit, over and over, each into its own mailboxes; every
 *    ABANDON_EVERY-th upload is left uncommitted;
 *  - one thread (admin certificate) runs APPLY_RETENTION then GC, cycle
 *    after cycle;
 *  - the main thread (restore certificate) checks, again and again, that
 *    every snapshot the model says must be retained is listed and that
 *    every chunk it references reads back byte for byte.
 *
 * The model (what must be retained): every snapshot committed in the
 * current epoch (inside the window), every held one, and for a mailbox the
 * newest snapshot of earlier epochs: superseded by a commit of the current
 * epoch, it stays until the next epoch (retention counts the window from
 * the superseding snapshot's receive time), when end_epoch lets it drop.
 *
 * At the end of each epoch (uploads stopped) a last retention + GC runs,
 * then: the listed snapshots are exactly the model's retained ones; the
 * chunks only dropped snapshots or expired uploads used are gone; the
 * chunks of uploads abandoned under a still-live lease are still there.
 *
 * Bounds: GC_CYCLES cycles in all (300; 180 in a sanitizer build; env
 * COFFER_GC_TEST_CYCLES, 20..5000, overrides), and EPOCH_WALL_MS per epoch
 * for the loop; every other loop is bounded by a count or a deadline.
 * About 13 s in a RelWithDebInfo build, 45 s under ASan.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <pthread.h>   /* uploaders, the GC loop */
#include <signal.h>    /* SIGTERM */
#include <stdatomic.h> /* stop flags, counters */
#include <stdio.h>     /* snprintf */
#include <stdlib.h>    /* getenv, strtol */
#include <string.h>    /* memcmp */
#include <time.h>      /* clock_gettime for the condition wait */

#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* sealing sessions */
#include "keys.h"                 /* the tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "vault_client_support.h" /* objects and RPC wrappers */
#include "vault_support.h"        /* the harness */

#define EPOCHS 3
/* GC cycles in all, over the epochs: a sanitizer build's vault is about
 * four times slower, so it gets fewer to stay within a minute. */
#if defined(__SANITIZE_ADDRESS__)
#define GC_CYCLES 180
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GC_CYCLES 180
#endif
#endif
#ifndef GC_CYCLES
#define GC_CYCLES 300
#endif
#define UPLOADERS     3
#define MBOX_PER      2 /* mailboxes per uploader */
#define N_MBOX        (UPLOADERS * MBOX_PER)
#define POOL          24 /* shared chunks */
#define UNIQUE_PER    5  /* new chunks per snapshot */
#define SHARED_PER    3  /* pool chunks per snapshot */
#define ABANDON_EVERY 7
#define UPLOADS       30    /* per uploader and epoch */
#define CHECK_EVERY   10    /* GC cycles between two checks */
#define EPOCH_WALL_MS 15000 /* per epoch, for the GC loop */
#define CHUNK_MIN     600
#define CHUNK_SPREAD  2500
#define POOL_REF(i)   (i)
#define UNIQUE_REF(i) (POOL + (i))
#define FAIL_MSG_LEN  512
#define HOLDS_WANTED  2

enum snap_state {
    S_MUST,     /* must be listed, every chunk readable */
    S_MAY_DROP, /* retention may drop it (outside window, superseded) */
    S_DROPPED,  /* checked gone */
};

struct snap_rec {
    uint8_t header_id[VC_ID_LEN];
    int mailbox;
    int epoch;
    enum snap_state state;
    bool held;
    size_t *refs; /* chunk refs: POOL_REF / UNIQUE_REF */
    size_t n_refs;
};

struct abandoned {
    size_t ref; /* UNIQUE_REF */
    int epoch;
};

/* Everything the threads share; mu guards all of it but pool (immutable)
 * and check_mu, which a check holds from start to end. */
static struct {
    pthread_mutex_t mu;
    pthread_mutex_t check_mu;
    pthread_cond_t cycle_cv;  /* broadcast at each GC cycle and at stop */
    size_t cycles;            /* GC cycles done in this epoch */
    int64_t deadline_ms;      /* of this epoch */
    struct vc_objset pool;    /* shared chunks, sealed once */
    struct vc_objset uniques; /* every unique chunk, by UNIQUE_REF - POOL */
    struct snap_rec *snaps;
    size_t n_snaps, alloc_snaps;
    struct abandoned *aband;
    size_t n_aband, alloc_aband;
    int prior_newest[N_MBOX]; /* snap index, or -1 */
    atomic_bool stop;
    atomic_int failed;
    char fail_msg[FAIL_MSG_LEN];
} m;

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *keyring;
static struct cfr_session *session; /* the main thread's */
static int epoch;

/* Records the first failure of a thread (cmocka asserts belong to the
 * main thread); the main thread fails the test with it. */
static void
thread_fail(const char *what, int st, const char *detail)
{
    pthread_mutex_lock(&m.mu);
    if (atomic_load(&m.failed) == 0) {
        snprintf(m.fail_msg, sizeof(m.fail_msg), "%s: %s: %s", what,
                 cfr_rpc_status_name(st), detail != NULL ? detail : "");
        atomic_store(&m.failed, 1);
    }
    pthread_mutex_unlock(&m.mu);
    atomic_store(&m.stop, true);
}

/* A chunk by ref; the caller holds m.mu (uniques may be reallocated). */
static const struct vc_obj *
chunk_at(size_t ref)
{
    return ref < POOL ? &m.pool.v[ref] : &m.uniques.v[ref - POOL];
}

static void
mailbox_name(int mb, char *out, size_t n)
{
    snprintf(out, n, "u%d-box%d", mb / MBOX_PER, mb % MBOX_PER);
}

/*
 * Waits until the GC loop has done at least n cycles of this epoch (or
 * stopped, or the epoch deadline passed). Returns false once stopped.
 */
static bool
wait_cycles(size_t n)
{
    bool go;
    pthread_mutex_lock(&m.mu);
    while (m.cycles < n && !atomic_load(&m.stop) &&
           vc_now_ms() < m.deadline_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L; /* to re-check the deadline */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&m.cycle_cv, &m.mu, &ts);
    }
    go = !atomic_load(&m.stop);
    pthread_mutex_unlock(&m.mu);
    return go;
}

/* ---- uploaders ----------------------------------------------------------- */

struct uploader {
    int idx;
    pthread_t th;
    struct cfr_session *ses;
    uint64_t rng;
    size_t cycles_per_epoch;
    /* Counters of the epoch, read by the main thread after join. */
    size_t commits, dedup_hits, abandoned, uploads;
};

static uint64_t
up_rnd(struct uploader *u)
{
    u->rng ^= u->rng >> 12;
    u->rng ^= u->rng << 25;
    u->rng ^= u->rng >> 27;
    return u->rng * UINT64_C(2685821657736338717);
}

/* Unique chunks never repeat: epoch, uploader, upload and index. */
static uint64_t
unique_seed(int up, size_t upload, int k)
{
    return ((uint64_t)(epoch + 1) << 48) | ((uint64_t)up << 40) |
           ((uint64_t)upload << 8) | (uint64_t)k;
}

/*
 * One upload: new unique chunks plus pool chunks, Missing under the lease,
 * put what is missing; then either abandon (no commit) or put the pages
 * and commit. Returns false on a failure (recorded).
 */
static bool
upload_one(struct uploader *u, struct cfr_rpc_client *cli, size_t upload)
{
    struct vc_objset chunks = {0}, put = {0};
    struct vc_snapshot sn;
    int mb = u->idx * MBOX_PER + (int)(upload % MBOX_PER);
    size_t refs[UNIQUE_PER + SHARED_PER], n_refs = 0, n_missing = 0;
    bool miss[UNIQUE_PER + SHARED_PER];
    bool abandon = upload % ABANDON_EVERY == ABANDON_EVERY - 1, ok = false;
    char name[32];
    uint8_t lease[16];
    struct cfr_err err;
    size_t first_unique;
    int st;

    mailbox_name(mb, name, sizeof(name));
    for (int k = 0; k < UNIQUE_PER; k++) {
        vc_make_chunk(keyring, u->ses, &chunks, unique_seed(u->idx, upload, k),
                      CHUNK_MIN + (size_t)(up_rnd(u) % CHUNK_SPREAD));
    }
    for (int k = 0; k < SHARED_PER; k++) {
        /* Copies of the one sealed envelope: the vault keeps the first
         * put, so every uploader must send the same bytes. */
        size_t p = (size_t)(up_rnd(u) % POOL);
        vc_objset_add(&chunks, m.pool.v[p].id, m.pool.v[p].kind,
                      m.pool.v[p].data, m.pool.v[p].len);
        refs[UNIQUE_PER + k] = POOL_REF(p);
    }
    if ((st = vc_open_lease(u->ses, cli, lease, &err)) != CFR_RPC_OK) {
        thread_fail("OpenLease", st, err.msg);
        goto out;
    }
    /* As the agent does: what the vault has is protected by the lease
     * from here on, and not sent again. */
    if ((st = vc_missing(cli, lease, &chunks, miss, &n_missing)) !=
        CFR_RPC_OK) {
        thread_fail("Missing", st, "");
        goto out;
    }
    for (size_t i = 0; i < chunks.n; i++) {
        if (miss[i]) {
            vc_objset_add(&put, chunks.v[i].id, chunks.v[i].kind,
                          chunks.v[i].data, chunks.v[i].len);
        } else if (i < UNIQUE_PER) {
            thread_fail("Missing", CFR_RPC_OK, "a new chunk reported present");
            goto out;
        } else {
            u->dedup_hits++;
        }
    }
    if (put.n > 0 && (st = vc_put_objects(cli, lease, &put, 0, put.n, 4, NULL,
                                          &err)) != CFR_RPC_OK) {
        thread_fail("PutObjects", st, err.msg);
        goto out;
    }
    /* The unique chunks join the model once the vault has them. */
    pthread_mutex_lock(&m.mu);
    first_unique = m.uniques.n;
    for (int k = 0; k < UNIQUE_PER; k++) {
        vc_objset_add(&m.uniques, chunks.v[k].id, chunks.v[k].kind,
                      chunks.v[k].data, chunks.v[k].len);
        refs[k] = UNIQUE_REF(first_unique + (size_t)k);
    }
    n_refs = UNIQUE_PER + SHARED_PER;
    if (abandon) {
        for (int k = 0; k < UNIQUE_PER; k++) {
            if (m.n_aband == m.alloc_aband) {
                m.alloc_aband = m.alloc_aband ? 2 * m.alloc_aband : 64;
                m.aband =
                    cfr_realloc(m.aband, m.alloc_aband * sizeof(*m.aband));
                assert_non_null(m.aband);
            }
            m.aband[m.n_aband].ref = refs[k];
            m.aband[m.n_aband++].epoch = epoch;
        }
    }
    pthread_mutex_unlock(&m.mu);
    if (abandon) {
        u->abandoned++;
        ok = true;
        goto out;
    }

    vc_make_snapshot(keyring, u->ses, &sn, &chunks, name, up_rnd(u));
    if ((st = vc_put_objects(cli, lease, &sn.pages, 0, sn.pages.n, 16, NULL,
                             &err)) != CFR_RPC_OK) {
        thread_fail("PutObjects (pages)", st, err.msg);
        vc_snapshot_fini(&sn);
        goto out;
    }
    /* This commit supersedes the mailbox's newest snapshot of an earlier
     * epoch inside the window, so retention keeps that one for the rest
     * of this epoch (the window runs from the superseding snapshot's
     * receive time, docs/RETENTION.md); end_epoch lets it drop next. */
    pthread_mutex_lock(&m.check_mu);
    pthread_mutex_lock(&m.mu);
    if (m.prior_newest[mb] >= 0) {
        m.prior_newest[mb] = -1;
    }
    pthread_mutex_unlock(&m.mu);
    pthread_mutex_unlock(&m.check_mu);
    if ((st = vc_commit(cli, lease, &sn, NULL, &err)) != CFR_RPC_OK) {
        /* Every chunk was present under the lease: GC must not have
         * taken one away in between. */
        thread_fail("Commit", st, err.msg);
        vc_snapshot_fini(&sn);
        goto out;
    }
    pthread_mutex_lock(&m.mu);
    if (m.n_snaps == m.alloc_snaps) {
        m.alloc_snaps = m.alloc_snaps ? 2 * m.alloc_snaps : 64;
        m.snaps = cfr_realloc(m.snaps, m.alloc_snaps * sizeof(*m.snaps));
        assert_non_null(m.snaps);
    }
    {
        struct snap_rec *r = &m.snaps[m.n_snaps++];
        memset(r, 0, sizeof(*r));
        memcpy(r->header_id, sn.header_id, VC_ID_LEN);
        r->mailbox = mb;
        r->epoch = epoch;
        r->state = S_MUST;
        r->refs = cfr_calloc(n_refs, sizeof(*r->refs));
        assert_non_null(r->refs);
        memcpy(r->refs, refs, n_refs * sizeof(*refs));
        r->n_refs = n_refs;
    }
    pthread_mutex_unlock(&m.mu);
    vc_snapshot_fini(&sn);
    u->commits++;
    ok = true;
out:
    vc_objset_fini(&chunks);
    vc_objset_fini(&put);
    return ok;
}

static void *
uploader_main(void *arg)
{
    struct uploader *u = arg;
    struct cfr_rpc_client *cli = vs_client(&vault, "agent");
    if (cli == NULL) {
        thread_fail("client", CFR_RPC_UNKNOWN, "no agent client");
        return NULL;
    }
    /* Spread over the epoch's GC cycles, so that every part of the loop
     * races uploads and commits; a bounded number in all. */
    for (size_t i = 0; i < UPLOADS; i++) {
        if (!wait_cycles(i * u->cycles_per_epoch / UPLOADS)) {
            break;
        }
        u->uploads++;
        if (!upload_one(u, cli, i)) {
            break;
        }
    }
    cfr_rpc_client_free(cli);
    return NULL;
}

/* ---- the GC loop ----------------------------------------------------------
 */

struct gc_loop {
    pthread_t th;
    size_t cycles_wanted;
    int64_t deadline_ms;
    size_t cycles;
    uint64_t snapshots_removed, objects_removed;
};

static void *
gc_main(void *arg)
{
    struct gc_loop *g = arg;
    struct cfr_rpc_client *adm = vs_client(&vault, "acme-admin");
    char msg[256];

    if (adm == NULL) {
        thread_fail("client", CFR_RPC_UNKNOWN, "no admin client");
        return NULL;
    }
    while (g->cycles < g->cycles_wanted && vc_now_ms() < g->deadline_ms &&
           atomic_load(&m.failed) == 0) {
        Coffer__V1__AdminResponse *ar = NULL;
        int st = vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION,
                          NULL, 0, &ar, msg, sizeof(msg));
        if (st != CFR_RPC_OK || ar == NULL) {
            thread_fail("APPLY_RETENTION", st, msg);
            break;
        }
        g->snapshots_removed += ar->snapshots_removed;
        protobuf_c_message_free_unpacked(&ar->base, NULL);
        ar = NULL;
        st = vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, 0, &ar, msg,
                      sizeof(msg));
        if (st != CFR_RPC_OK || ar == NULL) {
            thread_fail("GC", st, msg);
            break;
        }
        g->objects_removed += ar->objects_removed;
        protobuf_c_message_free_unpacked(&ar->base, NULL);
        g->cycles++;
        pthread_mutex_lock(&m.mu);
        m.cycles = g->cycles;
        pthread_cond_broadcast(&m.cycle_cv);
        pthread_mutex_unlock(&m.mu);
    }
    pthread_mutex_lock(&m.mu);
    atomic_store(&m.stop, true);
    pthread_cond_broadcast(&m.cycle_cv);
    pthread_mutex_unlock(&m.mu);
    cfr_rpc_client_free(adm);
    return NULL;
}

/* ---- checks ------------------------------------------------------------- */

static bool
listed(const Coffer__V1__ListSnapshotsResponse *ls, const uint8_t *hid,
       size_t *at_r)
{
    for (size_t k = 0; k < ls->n_snapshots; k++) {
        if (ls->snapshots[k]->header_id.len == VC_ID_LEN &&
            memcmp(ls->snapshots[k]->header_id.data, hid, VC_ID_LEN) == 0) {
            if (at_r != NULL) {
                *at_r = k;
            }
            return true;
        }
    }
    return false;
}

/*
 * The model's retained snapshots are listed and every chunk they reference
 * reads back byte for byte. Holds check_mu throughout (see the header).
 * Returns the number of chunks checked.
 */
static size_t
check_retained(struct cfr_rpc_client *rest)
{
    struct vc_objset want = {0}, got = {0}, hids = {0};
    size_t n_missing = 0, n_msgs = 0, checked;
    bool *seen;
    Coffer__V1__ListSnapshotsResponse *ls;
    int st;

    pthread_mutex_lock(&m.check_mu);
    pthread_mutex_lock(&m.mu);
    seen = cfr_calloc(POOL + m.uniques.n + 1, sizeof(bool));
    assert_non_null(seen);
    for (size_t i = 0; i < m.n_snaps; i++) {
        const struct snap_rec *r = &m.snaps[i];
        if (r->state != S_MUST) {
            continue;
        }
        vc_objset_add(&hids, r->header_id, 0, r->header_id, VC_ID_LEN);
        for (size_t k = 0; k < r->n_refs; k++) {
            const struct vc_obj *o = chunk_at(r->refs[k]);
            if (!seen[r->refs[k]]) {
                seen[r->refs[k]] = true;
                vc_objset_add(&want, o->id, o->kind, o->data, o->len);
            }
        }
    }
    pthread_mutex_unlock(&m.mu);

    ls = vc_list_snapshots(rest, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    for (size_t i = 0; i < hids.n; i++) {
        if (!listed(ls, hids.v[i].id, NULL)) {
            fail_msg("epoch %d: a retained snapshot is no longer listed",
                     epoch);
        }
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    if (want.n > 0) {
        assert_int_equal(
            vc_get_objects(rest, &want, NULL, &got, &n_missing, &n_msgs),
            CFR_RPC_OK);
        if (n_missing != 0 || got.n != want.n) {
            fail_msg("epoch %d: %zu of %zu referenced chunks lost", epoch,
                     n_missing, want.n);
        }
        /* Fast path when replies keep the request order, find() if not. */
        for (size_t i = 0; i < want.n; i++) {
            const struct vc_obj *g =
                memcmp(got.v[i].id, want.v[i].id, VC_ID_LEN) == 0
                    ? &got.v[i]
                    : vc_objset_find(&got, want.v[i].id);
            assert_non_null(g);
            assert_int_equal(g->kind, want.v[i].kind);
            assert_int_equal(g->len, want.v[i].len);
            assert_memory_equal(g->data, want.v[i].data, g->len);
        }
    }
    pthread_mutex_unlock(&m.check_mu);
    checked = want.n;
    cfr_free(seen);
    vc_objset_fini(&want);
    vc_objset_fini(&got);
    vc_objset_fini(&hids);
    return checked;
}

/* How many of refs (n) the vault still has. */
static size_t
count_present(struct cfr_rpc_client *agent, const size_t *refs, size_t n)
{
    struct vc_objset s = {0};
    bool *miss = cfr_calloc(n + 1, sizeof(bool));
    size_t n_missing = 0;

    assert_non_null(miss);
    pthread_mutex_lock(&m.mu);
    for (size_t i = 0; i < n; i++) {
        const struct vc_obj *o = chunk_at(refs[i]);
        vc_objset_add(&s, o->id, o->kind, o->data, o->len);
    }
    pthread_mutex_unlock(&m.mu);
    assert_int_equal(vc_missing(agent, NULL, &s, miss, &n_missing), CFR_RPC_OK);
    vc_objset_fini(&s);
    cfr_free(miss);
    return n - n_missing;
}

static void
admin_ok(struct cfr_rpc_client *adm, Coffer__V1__AdminOp op, const uint8_t *id,
         Coffer__V1__AdminResponse **ar_r)
{
    char msg[256];
    int st = vc_admin(adm, op, id, 0, ar_r, msg, sizeof(msg));
    if (st != CFR_RPC_OK) {
        fail_msg("admin op %d: %s: %s", (int)op, cfr_rpc_status_name(st), msg);
    }
}

/*
 * End of an epoch, uploads stopped: a last retention + GC, then the listed
 * snapshots must be exactly the retained ones, garbage gone, live-lease
 * uploads kept. Prepares the model for the next epoch: per mailbox the
 * newest (by the vault's rule: received time, then header ID) stays, the
 * rest may drop. Returns the garbage chunks found gone.
 */
static size_t
end_epoch(struct cfr_rpc_client *adm, struct cfr_rpc_client *agent,
          struct cfr_rpc_client *rest, bool hold_some)
{
    Coffer__V1__AdminResponse *ar = NULL;
    Coffer__V1__ListSnapshotsResponse *ls;
    size_t *garbage = NULL, n_garbage = 0, alloc = 0, *live = NULL, n_live = 0;
    int newest[N_MBOX];
    int st, holds = 0;

    admin_ok(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION, NULL, &ar);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    admin_ok(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, &ar);
    protobuf_c_message_free_unpacked(&ar->base, NULL);

    ls = vc_list_snapshots(rest, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    /* No thread runs now: the model needs no lock, but chunk_at users
     * take it anyway. */
    for (size_t k = 0; k < ls->n_snapshots; k++) {
        bool known = false;
        for (size_t i = 0; i < m.n_snaps && !known; i++) {
            known = memcmp(m.snaps[i].header_id,
                           ls->snapshots[k]->header_id.data, VC_ID_LEN) == 0 &&
                    m.snaps[i].state == S_MUST;
        }
        if (!known) {
            fail_msg("epoch %d: listed snapshot %zu is not a retained one",
                     epoch, k);
        }
    }
    for (int mb = 0; mb < N_MBOX; mb++) {
        newest[mb] = -1;
    }
    for (size_t i = 0; i < m.n_snaps; i++) {
        struct snap_rec *r = &m.snaps[i];
        size_t at = 0;
        bool is_listed = listed(ls, r->header_id, &at);
        if (r->state == S_MUST && !is_listed) {
            fail_msg("epoch %d: retained snapshot %zu (epoch %d) is gone",
                     epoch, i, r->epoch);
        }
        if (r->state != S_MUST && is_listed) {
            fail_msg("epoch %d: snapshot %zu (epoch %d) outside the window "
                     "and superseded was not dropped",
                     epoch, i, r->epoch);
        }
        if (r->state == S_MAY_DROP) {
            r->state = S_DROPPED;
            /* Its unique chunks are its alone, and their leases expired
             * an epoch ago: GC must have collected them. */
            for (size_t k = 0; k < r->n_refs; k++) {
                if (r->refs[k] >= POOL) {
                    if (n_garbage == alloc) {
                        alloc = alloc ? 2 * alloc : 256;
                        garbage = cfr_realloc(garbage, alloc * sizeof(size_t));
                        assert_non_null(garbage);
                    }
                    garbage[n_garbage++] = r->refs[k];
                }
            }
        }
        if (is_listed) {
            const Coffer__V1__SnapshotRecord *rec = ls->snapshots[at];
            int mb = r->mailbox;
            if (newest[mb] < 0) {
                newest[mb] = (int)i;
            } else {
                const Coffer__V1__SnapshotRecord *best = NULL;
                listed(ls, m.snaps[newest[mb]].header_id, &at);
                best = ls->snapshots[at];
                if (rec->received_ms > best->received_ms ||
                    (rec->received_ms == best->received_ms &&
                     memcmp(rec->header_id.data, best->header_id.data,
                            VC_ID_LEN) > 0)) {
                    newest[mb] = (int)i;
                }
            }
        }
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* Uploads abandoned in an earlier epoch: the lease expired, GC took
     * them. Abandoned in this one: the live lease still protects them. */
    for (size_t i = 0; i < m.n_aband; i++) {
        if (m.aband[i].epoch < epoch) {
            if (n_garbage == alloc) {
                alloc = alloc ? 2 * alloc : 256;
                garbage = cfr_realloc(garbage, alloc * sizeof(size_t));
                assert_non_null(garbage);
            }
            garbage[n_garbage++] = m.aband[i].ref;
        } else {
            if (live == NULL) {
                live = cfr_calloc(m.n_aband + 1, sizeof(size_t));
                assert_non_null(live);
            }
            live[n_live++] = m.aband[i].ref;
        }
    }
    if (n_garbage > 0) {
        size_t left = count_present(agent, garbage, n_garbage);
        if (left != 0) {
            fail_msg("epoch %d: %zu of %zu unreferenced chunks survived GC",
                     epoch, left, n_garbage);
        }
    }
    if (n_live > 0) {
        size_t have = count_present(agent, live, n_live);
        if (have != n_live) {
            fail_msg("epoch %d: GC took %zu of %zu chunks a live lease "
                     "protects",
                     epoch, n_live - have, n_live);
        }
    }
    /* Drop abandoned entries already checked gone. */
    {
        size_t w = 0;
        for (size_t i = 0; i < m.n_aband; i++) {
            if (m.aband[i].epoch >= epoch) {
                m.aband[w++] = m.aband[i];
            }
        }
        m.n_aband = w;
    }

    /* Hold a few snapshots that retention would otherwise drop next. */
    for (size_t i = 0; hold_some && i < m.n_snaps && holds < HOLDS_WANTED;
         i++) {
        struct snap_rec *r = &m.snaps[i];
        if (r->state == S_MUST && !r->held && newest[r->mailbox] != (int)i) {
            admin_ok(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD, r->header_id,
                     &ar);
            protobuf_c_message_free_unpacked(&ar->base, NULL);
            r->held = true;
            holds++;
        }
    }
    if (hold_some) {
        assert_int_equal(holds, HOLDS_WANTED);
    }
    /* Next epoch: the newest per mailbox stays until superseded there;
     * everything else not held is outside the window. */
    for (size_t i = 0; i < m.n_snaps; i++) {
        struct snap_rec *r = &m.snaps[i];
        if (r->state == S_MUST && !r->held && newest[r->mailbox] != (int)i) {
            r->state = S_MAY_DROP;
        }
    }
    for (int mb = 0; mb < N_MBOX; mb++) {
        m.prior_newest[mb] = newest[mb];
    }
    cfr_free(garbage);
    cfr_free(live);
    return n_garbage;
}

/* ---- the test ----------------------------------------------------------- */

static size_t
cycles_total(void)
{
    const char *e = getenv("COFFER_GC_TEST_CYCLES");
    long v = e != NULL ? strtol(e, NULL, 10) : GC_CYCLES;
    return v >= 20 && v <= 5000 ? (size_t)v : GC_CYCLES;
}

static void
test_vault_gc_loop_loses_no_referenced_chunk(void **state)
{
    (void)state;
    struct uploader up[UPLOADERS];
    size_t total_cycles = 0, total_checks = 0, total_checked = 0;
    size_t total_commits = 0, total_hits = 0, total_aband = 0, garbage = 0;
    uint64_t snaps_removed = 0, objs_removed = 0;
    size_t cycles = cycles_total();
    int64_t t0 = vc_now_ms();
    struct cfr_err err;

    for (epoch = 0; epoch < EPOCHS; epoch++) {
        struct gc_loop g;
        struct cfr_rpc_client *rest, *adm, *agent;
        size_t checks = 0, checked = 0;
        int64_t t_epoch = vc_now_ms();

        /* Each epoch 31 days later: earlier snapshots are outside the
         * 30-day window, earlier leases expired. */
        snprintf(vault.clock_offset, sizeof(vault.clock_offset), "%dd",
                 31 * epoch);
        if (epoch == 0) {
            vault.clock_offset[0] = '\0';
        }
        assert_int_equal(vs_vault_start(&vault, 30000), 0);
        rest = vs_client(&vault, "acme-restore");
        adm = vs_client(&vault, "acme-admin");
        agent = vs_client(&vault, "agent");
        assert_non_null(rest);
        assert_non_null(adm);
        assert_non_null(agent);
        /* A tenant's database exists from its first OpenLease on: before
         * it, the admin calls of the GC loop would find no tenant. */
        {
            uint8_t lease[16];
            assert_int_equal(vc_open_lease(session, agent, lease, &err),
                             CFR_RPC_OK);
        }

        memset(&g, 0, sizeof(g));
        g.cycles_wanted = cycles / EPOCHS;
        g.deadline_ms = vc_now_ms() + EPOCH_WALL_MS;
        m.deadline_ms = g.deadline_ms;
        m.cycles = 0;
        atomic_store(&m.stop, false);
        for (int i = 0; i < UPLOADERS; i++) {
            memset(&up[i], 0, sizeof(up[i]));
            up[i].idx = i;
            up[i].cycles_per_epoch = g.cycles_wanted;
            up[i].rng = UINT64_C(0x243F6A8885A308D3) * (uint64_t)(i + 1) +
                        (uint64_t)epoch;
            up[i].ses = cfr_session_new(keyring, 0, &err);
            assert_non_null(up[i].ses);
            assert_int_equal(
                pthread_create(&up[i].th, NULL, uploader_main, &up[i]), 0);
        }
        assert_int_equal(pthread_create(&g.th, NULL, gc_main, &g), 0);

        /* Check every few cycles while uploads, retention and GC race. */
        for (size_t c = CHECK_EVERY; wait_cycles(c); c += CHECK_EVERY) {
            checked += check_retained(rest);
            checks++;
        }
        pthread_join(g.th, NULL);
        for (int i = 0; i < UPLOADERS; i++) {
            pthread_join(up[i].th, NULL);
            cfr_session_free(up[i].ses);
            total_commits += up[i].commits;
            total_hits += up[i].dedup_hits;
            total_aband += up[i].abandoned;
        }
        if (atomic_load(&m.failed) != 0) {
            fail_msg("epoch %d: %s", epoch, m.fail_msg);
        }
        print_message("epoch %d: %zu GC cycles (%llu snapshots, %llu objects "
                      "removed), %zu checks of %zu chunks, %.1f s\n",
                      epoch, g.cycles, (unsigned long long)g.snapshots_removed,
                      (unsigned long long)g.objects_removed, checks, checked,
                      (double)(vc_now_ms() - t_epoch) / 1000.0);
        /* The loop really ran: not cut short by the deadline to nothing. */
        assert_true(g.cycles >= 10);
        assert_true(checks >= 1);
        total_cycles += g.cycles;
        total_checks += checks;
        total_checked += checked;
        snaps_removed += g.snapshots_removed;
        objs_removed += g.objects_removed;

        garbage += end_epoch(adm, agent, rest, epoch == 0);
        total_checked += check_retained(rest);
        cfr_rpc_client_free(rest);
        cfr_rpc_client_free(adm);
        cfr_rpc_client_free(agent);
        assert_int_equal(vs_vault_stop(&vault, SIGTERM, 30000), 0);
    }
    print_message("%zu GC cycles, %zu commits (%zu dedup hits), %zu "
                  "abandoned uploads, %zu checks (%zu chunk reads), %zu "
                  "garbage chunks checked gone, %.1f s\n",
                  total_cycles, total_commits, total_hits, total_aband,
                  total_checks, total_checked, garbage,
                  (double)(vc_now_ms() - t0) / 1000.0);
    /* The test exercised what it claims to. */
    assert_true(total_commits > 0);
    assert_true(total_hits > 0);
    assert_true(snaps_removed > 0);
    assert_true(objs_removed > 0);
    assert_true(garbage > 0);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;

    memset(&m, 0, sizeof(m));
    pthread_mutex_init(&m.mu, NULL);
    pthread_mutex_init(&m.check_mu, NULL);
    pthread_cond_init(&m.cycle_cv, NULL);
    for (int mb = 0; mb < N_MBOX; mb++) {
        m.prior_newest[mb] = -1;
    }
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    for (int i = 0; i < POOL; i++) {
        vc_make_chunk(keyring, session, &m.pool, 7700 + (uint64_t)i,
                      CHUNK_MIN + (size_t)i * 97);
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&vault, &env, "gc") != 0) {
        return -1;
    }
    vault.test_mode = true;
    /* The test runs retention itself; leases outlive an epoch. */
    snprintf(vault.extra_cfg, sizeof(vault.extra_cfg),
             "lease_ttl = \"1h\";\nretention = { schedule = \"0\"; };\n");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGKILL, 10000);
    }
    vs_env_fini(&env);
    for (size_t i = 0; i < m.n_snaps; i++) {
        cfr_free(m.snaps[i].refs);
    }
    cfr_free(m.snaps);
    cfr_free(m.aband);
    vc_objset_fini(&m.pool);
    vc_objset_fini(&m.uniques);
    pthread_mutex_destroy(&m.mu);
    pthread_mutex_destroy(&m.check_mu);
    pthread_cond_destroy(&m.cycle_cv);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    session = NULL;
    keyring = NULL;
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_vault_gc_loop_loses_no_referenced_chunk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
