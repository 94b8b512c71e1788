/*
 * sync.c - the replication engine: one thread per vault that pulls from
 * its peers what it lacks, applies their deletions and hold changes, and
 * repairs damaged objects (docs/REPLICATION.md).
 *
 * Invariants:
 *  1. Nothing is ever written to a peer: this file calls only the three
 *     read-only Sync* RPCs.
 *  2. A pulled object is stored only when BLAKE2b-256 of the received
 *     bytes equals the checksum the peer reported, and a reference page
 *     only when it also hashes to its ID. A repair additionally has to
 *     match what this vault recorded (vault_store_repair).
 *  3. A round applies a peer's tombstones before it pulls, and never pulls
 *     a snapshot this vault keeps a tombstone for.
 *  4. Memory of a round is bounded whatever the tenant's size: at most
 *     PULL_RECORDS_MAX listed snapshots are kept (the oldest: the rest
 *     waits for the next pass), the reference walk keeps at most about
 *     VAULT_IDS_MAX + one page's IDs per tree level and PULL_LEAVES_MAX
 *     leaves (then fetches them and goes on), its page set at most
 *     PULL_PAGES_MAX, and one stream message (<= max_msg) is held at a
 *     time.
 *  5. One round at a time (round_mu). The status table, the trigger set,
 *     the repair queue and the call in flight live under mu, which is
 *     never held across a store or peer call.
 *
 * The sync thread:
 *
 *   idle --(interval due | vault_sync_trigger | vault_sync_report_bad)-->
 *   round (sync_round_locked) --> repairs (repairs_run) --> idle
 *   any --(vault_sync_stop)--> stopping: the call in flight is cancelled
 *   (cfr_rpc_call_cancel), waits end at once --> joined
 *
 * A round with one peer (peer_round) is: compare digests, list the
 * differing buckets, tombstones, holds, then the pull (pull_group) of all
 * the pass's snapshots together: their trees walked level by level at
 * once, their objects fetched in large batches, the snapshots committed
 * in the peer's receive order as each completes. A round trip costs the
 * same for one snapshot as for hundreds, so a catch-up of many small
 * snapshots takes a handful of calls, not a few per snapshot. When the
 * peer cannot supply something of the group, the rest is pulled one
 * snapshot at a time, so one bad snapshot holds back no other. Its
 * outcome is recorded per (tenant, peer).
 */
#include "sync.h"

#include <errno.h>
#include <inttypes.h> /* PRIu64 */
#include <pthread.h>
#include <stdio.h>  /* snprintf */
#include <stdlib.h> /* qsort, bsearch */
#include <string.h>
#include <time.h>

#include "coffer_format.pb-c.h" /* Coffer__V1__RefPage */
#include "coffer_vault.pb-c.h"  /* Sync* messages */
#include "id.h"                 /* cfr_id_plain: checksums, page IDs */
#include "log.h"
#include "mem.h"
#include "secret.h" /* cfr_wipe: the client key PEM */
#include "snap.h"   /* cfr_snap_refs_page_check */
#include "sysdb.h"  /* registered tenants and their regions */

#define M_DIGEST "/coffer.v1.Vault/SyncDigest"
#define M_LIST   "/coffer.v1.Vault/SyncList"
#define M_GET    "/coffer.v1.Vault/SyncGet"

/* Listed snapshots kept for pulling per pass (headers <= 8 KiB each). */
#define PULL_RECORDS_MAX 4096
/*
 * A peer whose clock differs from this vault's by more than this is not
 * synced with (recorded error): its times decide which snapshots the
 * tombstone-keep guard lets through and how old adopted tombstones and
 * pulled snapshots are, and a clock a day off is a misconfiguration, not
 * drift (docs/REPLICATION.md).
 */
#define CLOCK_SKEW_MAX_MS (24LL * 60 * 60 * 1000)
/*
 * Reference pages one pull may expand (and remember, 32 bytes each at
 * most half load): a tree of distinct pages this large names far more
 * than any mailbox holds; a peer offering more is hostile or broken
 * (CFR_ELIMIT). (refs.entries would bound it tighter, but no vault
 * checks it against the tree, so an honest snapshot may carry a wrong
 * count.) A pull of a whole pass that reaches it is retried one snapshot
 * at a time, each with this bound.
 */
#define PULL_PAGES_MAX (1u << 19)
/*
 * Leaves (object IDs, 36 bytes each with their snapshot) a pull gathers
 * before fetching them (about 4.5 MiB): beyond it the walk fetches what it
 * has and goes on, and the group's commits wait for the end of the walk.
 */
#define PULL_LEAVES_MAX (1u << 17)
/* Between tries of a peer tombstone while the tenant's maintenance runs. */
#define TOMB_RETRY_MS 200
/* Passes per (tenant, peer) in a round when the list was cut. */
#define PASSES_MAX 16
/* Tenants vault_sync_trigger remembers; more means "every tenant". */
#define TRIGGERS_MAX 32
/* Objects waiting for repair. */
#define REPAIR_QUEUE_MAX 1024
/* What a batch of SyncGet starts from before it learnt object sizes. */
#define OBJ_SIZE_GUESS (16u * 1024u)
#define SYNC_SESSION   "sync"

struct peer {
    char name[VAULT_SYNC_NAME_MAX];
    char region[VAULT_SYNC_REGION_MAX];
    char *address;
    char *tls_name;             /* NULL: the host part of address */
    struct cfr_rpc_client *cli; /* lazily made; only under round_mu */
    bool broken; /* a call failed on the link: new channel after it */
};

struct peer_stat {
    int64_t last_attempt_ms;
    int64_t last_ok_ms;
    char last_error[VAULT_SYNC_ERROR_MAX];
    uint64_t snapshots_pulled;
    uint64_t objects_pulled;
    uint64_t bytes_pulled;
    uint64_t tombstones_applied;
    uint64_t behind;
    bool was_ok; /* the last round with it succeeded: a failure notifies */
};

struct tstat {
    char name[CFR_RPC_TENANT_MAX];
    uint64_t repairs;
    uint64_t repair_failures;
    int64_t last_repair_ms;
    struct peer_stat peers[VAULT_SYNC_PEERS_MAX];
};

struct repair_item {
    char tenant[CFR_RPC_TENANT_MAX];
    uint8_t id[VAULT_ID_LEN];
};

struct vault_sync {
    struct vault_store *store;
    struct vault_sysdb *sysdb;
    struct cfr_clock *clock;
    char name[VAULT_SYNC_NAME_MAX];
    char region[VAULT_SYNC_REGION_MAX];
    struct peer peers[VAULT_SYNC_PEERS_MAX];
    size_t n_peers;
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    int64_t interval_ms;
    uint64_t bandwidth_bps;
    int64_t timeout_ms;
    int64_t tombstone_keep_ms;
    size_t max_msg;
    vault_sync_event_fn *on_event;
    void *event_ctx;

    pthread_mutex_t round_mu; /* one round at a time */
    /* Under round_mu: the bandwidth bucket and the batch size estimate. */
    double tokens;
    int64_t tokens_mono_ms;
    /* Per kind: a batch of chunks sized by the pages seen (or the other
     * way round) would be far too large (or small). */
    size_t avg_obj;                 /* sealed objects */
    size_t avg_page;                /* reference pages */
    size_t last_n_obj, last_n_page; /* IDs of the last batch of each */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    bool started;
    bool stopping;
    bool trig_all;
    size_t n_trig;
    char trig[TRIGGERS_MAX][CFR_RPC_TENANT_MAX];
    struct repair_item *rq; /* ring of REPAIR_QUEUE_MAX */
    size_t rq_head, rq_n;
    uint64_t rq_dropped;
    struct cfr_rpc_call *cur_call; /* the call in flight, for stop */
    struct tstat *ts;
    size_t n_ts, cap_ts;
};

/* A registered tenant, as much as a round needs. */
struct tenant_ref {
    char name[CFR_RPC_TENANT_MAX];
    size_t n_regions;
    char regions[VAULT_SYSDB_REGIONS_MAX][VAULT_SYSDB_REGION_MAX];
};

struct idvec {
    uint8_t (*v)[VAULT_ID_LEN];
    size_t n, cap;
};

/* ---- small helpers ---------------------------------------------------- */

static const char *
hex_id(const uint8_t *id, char out[2 * VAULT_ID_LEN + 1])
{
    return cfr_hex_encode(id, VAULT_ID_LEN, out);
}

static void
copy_str(char *dst, size_t n, const char *src)
{
    size_t l = strlen(src);
    if (l >= n) {
        l = n - 1;
    }
    memcpy(dst, src, l);
    dst[l] = '\0';
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv (mu held) until mono time deadline_ms, or a signal. */
static void
cv_wait_until(struct vault_sync *s, int64_t deadline_ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ms / 1000);
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
    (void)pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* a - b, saturating: peer times are untrusted 64-bit values. */
static int64_t
sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b) {
        return INT64_MAX;
    }
    if (b > 0 && a < INT64_MIN + b) {
        return INT64_MIN;
    }
    return a - b;
}

/*
 * A peer's time peer_ms mapped onto this vault's clock: the age it has on
 * the peer (peer_now - peer_ms, at least 0), subtracted from local_now;
 * never later than local_now, never below 1 (0 means "now" to the store).
 * *age_r gets the age.
 */
static int64_t
peer_time_map(int64_t local_now, int64_t peer_now, int64_t peer_ms,
              int64_t *age_r)
{
    int64_t age = sat_sub(peer_now, peer_ms);
    if (age < 0) {
        age = 0;
    }
    if (age_r != NULL) {
        *age_r = age;
    }
    if (local_now <= 1 || age >= local_now - 1) {
        return 1;
    }
    return local_now - age;
}

static bool
stopping(struct vault_sync *s)
{
    pthread_mutex_lock(&s->mu);
    bool st = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return st;
}

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, VAULT_ID_LEN);
}

static int
idvec_push(struct idvec *v, const uint8_t *id, struct cfr_err *err)
{
    if (v->n == v->cap) {
        size_t cap = v->cap == 0 ? 256 : v->cap * 2;
        void *p = cfr_realloc(v->v, cap * VAULT_ID_LEN);
        if (p == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "sync: id list of %zu", cap);
        }
        v->v = p;
        v->cap = cap;
    }
    memcpy(v->v[v->n++], id, VAULT_ID_LEN);
    return 0;
}

static void
idvec_fini(struct idvec *v)
{
    cfr_free_null(&v->v);
    v->n = v->cap = 0;
}

static bool
region_allowed(const struct tenant_ref *t, const char *region)
{
    if (t->n_regions == 0) {
        return true;
    }
    for (size_t i = 0; i < t->n_regions; i++) {
        if (strcmp(t->regions[i], region) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- status table (mu held) ------------------------------------------- */

static struct tstat *
tstat_get(struct vault_sync *s, const char *tenant)
{
    for (size_t i = 0; i < s->n_ts; i++) {
        if (strcmp(s->ts[i].name, tenant) == 0) {
            return &s->ts[i];
        }
    }
    if (s->n_ts == s->cap_ts) {
        size_t cap = s->cap_ts == 0 ? 8 : s->cap_ts * 2;
        void *p = cfr_realloc(s->ts, cap * sizeof(*s->ts));
        if (p == NULL) {
            return NULL;
        }
        s->ts = p;
        s->cap_ts = cap;
    }
    struct tstat *t = &s->ts[s->n_ts++];
    memset(t, 0, sizeof(*t));
    copy_str(t->name, sizeof(t->name), tenant);
    return t;
}

/* ---- tenants ------------------------------------------------------------ */

struct tenant_list {
    struct tenant_ref *v;
    size_t n, cap;
    const char *only; /* NULL: every tenant */
};

static int
collect_tenant(void *ctx, const struct vault_sysdb_tenant *t)
{
    struct tenant_list *l = ctx;
    if (l->only != NULL && strcmp(l->only, t->name) != 0) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap == 0 ? 8 : l->cap * 2;
        void *p = cfr_realloc(l->v, cap * sizeof(*l->v));
        if (p == NULL) {
            return CFR_ENOMEM;
        }
        l->v = p;
        l->cap = cap;
    }
    struct tenant_ref *r = &l->v[l->n++];
    memset(r, 0, sizeof(*r));
    copy_str(r->name, sizeof(r->name), t->name);
    r->n_regions = t->n_regions <= VAULT_SYSDB_REGIONS_MAX
                       ? t->n_regions
                       : VAULT_SYSDB_REGIONS_MAX;
    for (size_t i = 0; i < r->n_regions; i++) {
        copy_str(r->regions[i], sizeof(r->regions[i]), t->regions[i]);
    }
    return 0;
}

/* The registered tenants (only: that one) whose regions include ours. */
static int
tenants_list(struct vault_sync *s, const char *only, struct tenant_list *l,
             struct cfr_err *err)
{
    memset(l, 0, sizeof(*l));
    l->only = only;
    int rc = vault_sysdb_tenant_list(s->sysdb, collect_tenant, l, err);
    if (rc == CFR_ENOMEM) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: listing tenants");
    }
    if (rc != 0) {
        return rc;
    }
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (region_allowed(&l->v[i], s->region)) {
            l->v[w++] = l->v[i];
        }
    }
    l->n = w;
    return 0;
}

/* ---- peer calls -------------------------------------------------------- */

static int
peer_client(struct vault_sync *s, struct peer *p, struct cfr_err *err)
{
    if (p->cli != NULL) {
        return 0;
    }
    struct cfr_rpc_client_opts o;
    memset(&o, 0, sizeof(o));
    o.target = p->address;
    o.target_name = p->tls_name;
    o.ca_pem = s->tls_ca;
    o.cert_pem = s->tls_cert;
    o.key_pem = s->tls_key;
    o.max_msg = s->max_msg;
    return cfr_rpc_client_new(&o, &p->cli, err);
}

/* After a failed call: a fresh channel next time (the address may have
 * come back on another connection, or the channel may be wedged). */
static void
peer_client_drop(struct peer *p)
{
    cfr_rpc_client_free(p->cli);
    p->cli = NULL;
}

/*
 * Opens a server-streaming call registered for cancellation by
 * vault_sync_stop. SyncDigest is unary on the server; on the wire a unary
 * call is a stream of one message, and opening it this way gives a call
 * handle that stop can cancel.
 */
static int
call_open(struct vault_sync *s, struct peer *p, const char *method,
          const void *req, size_t len, struct cfr_rpc_call **call_r,
          struct cfr_err *err)
{
    int rc;
    *call_r = NULL;
    if (stopping(s)) {
        return CFR_ERR(err, CFR_EUNAVAIL, "sync: stopping");
    }
    if ((rc = peer_client(s, p, err)) != 0) {
        return rc;
    }
    if ((rc = cfr_rpc_sstream_open(p->cli, method, req, len, s->timeout_ms,
                                   call_r, err)) != 0) {
        peer_client_drop(p);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    s->cur_call = *call_r;
    if (s->stopping) {
        cfr_rpc_call_cancel(*call_r);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Frees call, then the channel if a call found the link broken (never
 * before: a call must not outlive its channel). */
static void
call_close(struct vault_sync *s, struct peer *p, struct cfr_rpc_call *call)
{
    if (call != NULL) {
        pthread_mutex_lock(&s->mu);
        if (s->cur_call == call) {
            s->cur_call = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        cfr_rpc_call_free(call);
    }
    if (p->broken) {
        peer_client_drop(p);
        p->broken = false;
    }
}

/* Next message: 1, 0 at a clean end, negative on error. */
static int
call_next(struct peer *p, struct cfr_rpc_call *call, struct cfr_buf *msg,
          struct cfr_err *err)
{
    int status;
    int rc = cfr_rpc_sstream_next(call, msg, &status, err);
    if (rc < 0) {
        switch (status) {
        case CFR_RPC_UNAVAILABLE:
        case CFR_RPC_DEADLINE_EXCEEDED:
        case CFR_RPC_CANCELLED:
        case CFR_RPC_INTERNAL:
        case CFR_RPC_UNKNOWN:
            p->broken = true;
            break;
        default:
            break;
        }
    }
    return rc;
}

/* ---- bandwidth --------------------------------------------------------- */

/*
 * The token bucket: a second's worth of burst, spent after each message
 * received; before reading the next one while in debt, waits (woken at
 * once by stop). The debt of a large message is paid before the next
 * read, so the average over a transfer holds the limit.
 */
static int
bw_wait(struct vault_sync *s, int64_t until_ms, struct cfr_err *err)
{
    if (s->bandwidth_bps == 0) {
        return 0;
    }
    double burst = (double)s->bandwidth_bps;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = mono_ms();
        s->tokens += (double)(now - s->tokens_mono_ms) *
                     (double)s->bandwidth_bps / 1000.0;
        s->tokens_mono_ms = now;
        if (s->tokens > burst) {
            s->tokens = burst;
        }
        if (s->stopping || s->tokens >= 0 ||
            (until_ms >= 0 && now >= until_ms)) {
            break;
        }
        int64_t wait =
            (int64_t)(-s->tokens * 1000.0 / (double)s->bandwidth_bps) + 1;
        cv_wait_until(s, now + (wait < 1000 ? wait : 1000));
    }
    bool st = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return st ? CFR_ERR(err, CFR_EUNAVAIL, "sync: stopping") : 0;
}

static void
bw_take(struct vault_sync *s, size_t n)
{
    if (s->bandwidth_bps != 0) {
        pthread_mutex_lock(&s->mu);
        s->tokens -= (double)n;
        pthread_mutex_unlock(&s->mu);
    }
}

/*
 * IDs per SyncGet: about max_msg / 2 bytes at the object sizes seen so
 * far. Under a bandwidth limit, about a quarter second's worth: gRPC reads
 * a stream ahead of the reader, so only small requests, each sent once
 * the budget allows (bw_wait), keep the bytes on the link near the limit
 * rather than bursting and then waiting. There the count also grows at
 * most twofold from one batch of a kind to the next: an estimate made on
 * small objects must not send for a pass's large ones all at once (a pull
 * batches the objects of many snapshots together).
 */
static size_t
get_batch_n(const struct vault_sync *s, int kind)
{
    bool page = kind == COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE;
    size_t budget = s->max_msg / 2;
    size_t floor_n = 16;
    if (s->bandwidth_bps != 0) {
        uint64_t q = s->bandwidth_bps / 4;
        if (q < 16 * 1024) {
            q = 16 * 1024;
        }
        if (q < budget) {
            budget = (size_t)q;
        }
        floor_n = 1;
    }
    size_t known = page ? s->avg_page : s->avg_obj;
    size_t avg = known != 0 ? known : OBJ_SIZE_GUESS;
    size_t n = budget / avg;
    size_t last = page ? s->last_n_page : s->last_n_obj;
    if (s->bandwidth_bps != 0 && last != 0 && n > 2 * last) {
        n = 2 * last;
    }
    if (n < floor_n) {
        n = floor_n;
    }
    return n > VAULT_IDS_MAX ? VAULT_IDS_MAX : n;
}

/* ---- SyncGet ------------------------------------------------------------ */

/* Gets the verified objects of one message. */
typedef int got_fn(void *ctx, const struct vault_object *objs, size_t n,
                   struct cfr_err *err);

struct get_counts {
    uint64_t objects;
    uint64_t bytes;
};

/*
 * SyncGet of ids[0..n) (sorted, unique, n <= VAULT_IDS_MAX) from p. Each
 * object is checked: requested and not seen before, of kind expect (0:
 * any), BLAKE2b-256 of its bytes equal to the checksum the peer reported,
 * and a reference page's hash equal to its ID; then fn gets each
 * message's objects. With all, an ID neither sent nor reported is
 * CFR_ENOTFOUND. CFR_ECORRUPT names a bad object: nothing of its message
 * reaches fn.
 */
static int
sync_get(struct vault_sync *s, struct peer *p, const char *tenant,
         const uint8_t (*ids)[VAULT_ID_LEN], size_t n, int expect, bool all,
         got_fn *fn, void *ctx, struct get_counts *gc, struct cfr_err *err)
{
    int rc = 0;
    char hex[2 * VAULT_ID_LEN + 1];
    struct cfr_rpc_call *call = NULL;
    Coffer__V1__SyncGetResponse *m = NULL;
    uint8_t *req = NULL;
    ProtobufCBinaryData *bins = NULL;
    bool *seen = NULL;
    struct vault_object *objs = NULL;
    struct cfr_buf msg;
    uint64_t got_bytes = 0, got_n = 0;
    cfr_buf_init(&msg, s->max_msg);
    if ((bins = cfr_calloc(n, sizeof(*bins))) == NULL ||
        (seen = cfr_calloc(n, sizeof(*seen))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: get of %zu", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        bins[i].data = (uint8_t *)ids[i];
        bins[i].len = VAULT_ID_LEN;
    }
    Coffer__V1__SyncGetRequest r = COFFER__V1__SYNC_GET_REQUEST__INIT;
    r.tenant = (char *)tenant;
    r.n_ids = n;
    r.ids = bins;
    size_t len = coffer__v1__sync_get_request__get_packed_size(&r);
    if ((req = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: get request");
        goto out;
    }
    (void)coffer__v1__sync_get_request__pack(&r, req);
    if ((rc = bw_wait(s, -1, err)) != 0 ||
        (rc = call_open(s, p, M_GET, req, len, &call, err)) != 0) {
        goto out;
    }
    int64_t paced_until = mono_ms() + s->timeout_ms / 2;
    for (;;) {
        /* Within a call, pace the reads only through half its time: an
         * object larger than guessed must not make the call miss its
         * deadline; the rest of the debt is paid before the next call. */
        if ((rc = bw_wait(s, paced_until, err)) != 0) {
            goto out;
        }
        if ((rc = call_next(p, call, &msg, err)) <= 0) {
            break;
        }
        bw_take(s, msg.len);
        m = coffer__v1__sync_get_response__unpack(NULL, msg.len, msg.data);
        if (m == NULL) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "sync: peer %s: undecodable SyncGet answer", p->name);
            goto out;
        }
        cfr_free_null(&objs);
        if (m->n_objects > 0 &&
            (objs = cfr_calloc(m->n_objects, sizeof(*objs))) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "sync: %zu objects", m->n_objects);
            goto out;
        }
        for (size_t i = 0; i < m->n_objects; i++) {
            const Coffer__V1__SyncObject *o = m->objects[i];
            const uint8_t(*hit)[VAULT_ID_LEN] = NULL;
            if (o->id.len == VAULT_ID_LEN) {
                hit = bsearch(o->id.data, ids, n, VAULT_ID_LEN, id_cmp);
            }
            if (hit == NULL || seen[hit - ids]) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "sync: peer %s sent an object not asked for",
                             p->name);
                goto out;
            }
            seen[hit - ids] = true;
            uint8_t sum[VAULT_ID_LEN];
            cfr_id_plain(o->data.data, o->data.len, sum);
            if ((o->kind != COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED &&
                 o->kind != COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE) ||
                (expect != 0 && (int)o->kind != expect)) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "sync: peer %s: object %s has kind %d", p->name,
                             hex_id(o->id.data, hex), (int)o->kind);
                goto out;
            }
            if (o->checksum.len != VAULT_ID_LEN ||
                memcmp(sum, o->checksum.data, VAULT_ID_LEN) != 0 ||
                (o->kind == COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE &&
                 memcmp(sum, o->id.data, VAULT_ID_LEN) != 0)) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "sync: peer %s: object %s fails its checksum",
                             p->name, hex_id(o->id.data, hex));
                goto out;
            }
            objs[i].id = o->id.data;
            objs[i].kind = (enum vault_object_kind)o->kind;
            objs[i].data = o->data.data;
            objs[i].len = o->data.len;
            got_bytes += o->data.len;
            got_n++;
        }
        for (size_t i = 0; i < m->n_missing; i++) {
            const uint8_t(*hit)[VAULT_ID_LEN] = NULL;
            if (m->missing[i].len == VAULT_ID_LEN) {
                hit = bsearch(m->missing[i].data, ids, n, VAULT_ID_LEN, id_cmp);
            }
            if (hit != NULL && all) {
                rc =
                    CFR_ERR(err, CFR_ENOTFOUND, "sync: peer %s lacks object %s",
                            p->name, hex_id(*hit, hex));
                goto out;
            }
        }
        if (m->n_objects > 0 && (rc = fn(ctx, objs, m->n_objects, err)) != 0) {
            goto out;
        }
        coffer__v1__sync_get_response__free_unpacked(m, NULL);
        m = NULL;
    }
    if (rc < 0) {
        goto out;
    }
    rc = 0;
    if (all) {
        for (size_t i = 0; i < n; i++) {
            if (!seen[i]) {
                rc = CFR_ERR(err, CFR_ENOTFOUND,
                             "sync: peer %s did not send object %s", p->name,
                             hex_id(ids[i], hex));
                goto out;
            }
        }
    }
out:
    if (got_n > 0) {
        size_t avg = (size_t)(got_bytes / got_n) + 1;
        size_t *est = expect == COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE
                          ? &s->avg_page
                          : &s->avg_obj;
        *est = *est == 0 ? avg : (*est * 3 + avg) / 4;
    }
    if (gc != NULL) {
        gc->objects += got_n;
        gc->bytes += got_bytes;
    }
    if (m != NULL) {
        coffer__v1__sync_get_response__free_unpacked(m, NULL);
    }
    call_close(s, p, call);
    cfr_buf_fini(&msg);
    cfr_free(objs);
    cfr_free(seen);
    cfr_free(bins);
    cfr_free(req);
    return rc;
}

/* ---- pulling the snapshots of a pass ------------------------------------ */

/* A snapshot listed by the peer that this vault lacks. */
struct cand {
    uint8_t header_id[VAULT_ID_LEN];
    uint8_t mailbox_id[VAULT_ID_LEN];
    int64_t received_ms;     /* the peer's clock */
    int64_t local_ms;        /* its age on the peer, mapped onto this clock */
    int64_t hold_changed_ms; /* the peer's clock */
    int64_t hold_local_ms;   /* mapped like local_ms; 0: never changed */
    struct vault_tree_root refs;
    uint32_t flags;
    bool held;
    bool skip; /* tombstoned here, or too old to pull */
    bool done; /* committed, or failed for good, in this pass */
    uint8_t *header;
    size_t header_len;
};

/*
 * A reference on the walk's frontier, with the first snapshot of the
 * group (its index in the peer's receive order) that reaches it: leaves
 * are fetched in that order, so the oldest snapshots complete, and are
 * committed, first.
 */
struct fent {
    uint8_t id[VAULT_ID_LEN];
    uint32_t owner;
};

struct fvec {
    struct fent *v;
    size_t n, cap;
};

/*
 * The pull of a group of listed snapshots (cv[from..to), the peer's
 * receive order), all at once: their reference trees are walked together,
 * level by level (one SyncGet per level for all their uncounted pages
 * missing here, batched by IDs and bytes), then all their missing leaves
 * are fetched in big batches, oldest snapshot's first, and each snapshot
 * is committed in order as soon as everything up to it is here. The
 * commit checks the whole tree under the store lock, so one whose objects
 * are not all here yet simply waits (or fails at the end).
 */
struct pull {
    struct vault_sync *s;
    struct vault_tenant *t;
    const char *tenant;
    struct peer *p;
    struct cand *cv;
    size_t from, to;
    size_t next; /* the first of cv[from..to) not yet done */
    bool walked; /* the tree walk is over: commits may start */
    uint8_t lease[VAULT_LEASE_LEN];
    struct fvec lvl[CFR_TREE_HEIGHT_MAX]; /* pages waiting, per level */
    struct fvec leaves;                   /* objects waiting */
    struct get_counts gc;
    uint64_t pulled;    /* snapshots committed new */
    uint64_t committed; /* snapshots committed, new or already there */
    /* The first snapshot that failed for good (the caller's). */
    int *first_rc;
    struct cfr_err *first;
    /* Pages queued for expansion in this pull, an open-addressed set: a
     * page named twice (by a hostile tree, or subtrees shared within or
     * across the group's snapshots) is fetched and expanded once, so the
     * work is bounded by the distinct pages. */
    uint8_t (*seen)[VAULT_ID_LEN];
    size_t n_seen, cap_seen; /* cap: a power of two, or 0 */
};

static int
fvec_push(struct fvec *v, const uint8_t *id, uint32_t owner,
          struct cfr_err *err)
{
    if (v->n == v->cap) {
        size_t cap = v->cap == 0 ? 256 : v->cap * 2;
        void *p = cfr_realloc(v->v, cap * sizeof(*v->v));
        if (p == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "sync: frontier of %zu", cap);
        }
        v->v = p;
        v->cap = cap;
    }
    memcpy(v->v[v->n].id, id, VAULT_ID_LEN);
    v->v[v->n].owner = owner;
    v->n++;
    return 0;
}

static void
fvec_fini(struct fvec *v)
{
    cfr_free_null(&v->v);
    v->n = v->cap = 0;
}

static int
fent_id_cmp(const void *a, const void *b)
{
    const struct fent *x = a, *y = b;
    int c = memcmp(x->id, y->id, VAULT_ID_LEN);
    if (c != 0) {
        return c;
    }
    return x->owner < y->owner ? -1 : x->owner > y->owner ? 1 : 0;
}

static int
fent_owner_cmp(const void *a, const void *b)
{
    const struct fent *x = a, *y = b;
    if (x->owner != y->owner) {
        return x->owner < y->owner ? -1 : 1;
    }
    return memcmp(x->id, y->id, VAULT_ID_LEN);
}

/* Sorts by ID and keeps each ID once, with its first owner. */
static void
fvec_uniq(struct fvec *v)
{
    if (v->n < 2) {
        return;
    }
    qsort(v->v, v->n, sizeof(*v->v), fent_id_cmp);
    size_t w = 1;
    for (size_t i = 1; i < v->n; i++) {
        if (memcmp(v->v[i].id, v->v[w - 1].id, VAULT_ID_LEN) != 0) {
            v->v[w++] = v->v[i];
        }
    }
    v->n = w;
}

static size_t
seen_slot(const struct pull *pl, const uint8_t *id)
{
    uint64_t h;
    /* IDs are BLAKE2b-256 outputs (a page is stored only if its ID
     * hashes its bytes), so their first bytes spread evenly. */
    memcpy(&h, id, sizeof(h));
    size_t i = (size_t)h & (pl->cap_seen - 1);
    static const uint8_t zero[VAULT_ID_LEN];
    while (memcmp(pl->seen[i], zero, VAULT_ID_LEN) != 0 &&
           memcmp(pl->seen[i], id, VAULT_ID_LEN) != 0) {
        i = (i + 1) & (pl->cap_seen - 1);
    }
    return i;
}

/* Adds id to the pull's page set: *fresh_r false when it was there. The
 * all-zero ID is not a BLAKE2b output anyone can find a page for; it is
 * the empty slot and counts as seen. */
static int
seen_add(struct pull *pl, const uint8_t *id, bool *fresh_r, struct cfr_err *err)
{
    static const uint8_t zero[VAULT_ID_LEN];
    *fresh_r = false;
    if (memcmp(id, zero, VAULT_ID_LEN) == 0) {
        return 0;
    }
    if (pl->n_seen >= PULL_PAGES_MAX) {
        return CFR_ERR(err, CFR_ELIMIT,
                       "sync: snapshot trees of more than %u pages",
                       PULL_PAGES_MAX);
    }
    if (2 * (pl->n_seen + 1) > pl->cap_seen) {
        size_t cap = pl->cap_seen == 0 ? 256 : 2 * pl->cap_seen;
        uint8_t(*old)[VAULT_ID_LEN] = pl->seen;
        size_t old_cap = pl->cap_seen;
        if ((pl->seen = cfr_calloc(cap, VAULT_ID_LEN)) == NULL) {
            pl->seen = old;
            return CFR_ERR(err, CFR_ENOMEM, "sync: page set");
        }
        pl->cap_seen = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (memcmp(old[i], zero, VAULT_ID_LEN) != 0) {
                memcpy(pl->seen[seen_slot(pl, old[i])], old[i], VAULT_ID_LEN);
            }
        }
        cfr_free(old);
    }
    size_t i = seen_slot(pl, id);
    if (memcmp(pl->seen[i], id, VAULT_ID_LEN) == 0) {
        return 0;
    }
    memcpy(pl->seen[i], id, VAULT_ID_LEN);
    pl->n_seen++;
    *fresh_r = true;
    return 0;
}

static int
pull_put(void *ctx, const struct vault_object *objs, size_t n,
         struct cfr_err *err)
{
    struct pull *pl = ctx;
    struct vault_put_stats ps;
    return vault_store_put(pl->t, pl->lease, objs, n, &ps, err);
}

/* A snapshot of the group failed for good in this pass: the peer cannot
 * supply it (another peer may), or its tree is malformed. */
static void
cand_failed(struct pull *pl, struct cand *c, int rc, const struct cfr_err *err)
{
    c->done = true;
    if (*pl->first_rc == 0) {
        *pl->first_rc = rc;
        *pl->first = *err;
    }
    cfr_log_err(CFR_LOG_WARN, "vault.sync.pull_failed", err);
}

static int
commit_one(struct pull *pl, struct cand *c, struct cfr_err *err)
{
    int rc;
    struct vault_commit cm;
    memset(&cm, 0, sizeof(cm));
    cm.lease_id = NULL;
    cm.mailbox_id = c->mailbox_id;
    cm.header_id = c->header_id;
    cm.header = c->header;
    cm.header_len = c->header_len;
    cm.refs = c->refs;
    cm.flags = c->flags;
    cm.hold_previous = false;
    /* The peer's age of the snapshot, not the time of this pull: a
     * snapshot taken before one that reached this vault directly must
     * stay older in its mailbox, or retention here would drop the newer
     * one as superseded and the tombstone would travel. */
    cm.received_ms = c->local_ms;
    struct vault_snapshot snap;
    bool already = false;
    if ((rc = vault_store_commit(pl->t, &cm, &snap, &already, err)) != 0) {
        return rc;
    }
    c->done = true;
    pl->committed++;
    pl->pulled += already ? 0 : 1;
    if (c->held) {
        bool applied;
        if ((rc = vault_store_hold_synced(pl->t, c->header_id, true,
                                          c->hold_local_ms, &applied, err)) !=
            0) {
            return rc;
        }
    }
    return 0;
}

/*
 * Commits the group's snapshots in order while their index is below upto.
 * Before the last call (last false) a commit missing an object stops the
 * walk: its objects are still coming. With last, or for a malformed tree,
 * the snapshot fails for good (cand_failed) and the next is tried.
 */
static int
commit_upto(struct pull *pl, size_t upto, bool last, struct cfr_err *err)
{
    if (upto > pl->to) {
        upto = pl->to;
    }
    while (pl->next < upto) {
        struct cand *c = &pl->cv[pl->next];
        if (c->skip || c->done) {
            pl->next++;
            continue;
        }
        int rc = commit_one(pl, c, err);
        if (rc == CFR_ENOTFOUND && !last) {
            cfr_err_clear(err);
            return 0;
        }
        if (rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT) {
            cand_failed(pl, c, rc, err);
            cfr_err_clear(err);
        } else if (rc != 0) {
            return rc;
        }
        pl->next++;
    }
    return 0;
}

/* SyncGet of ids[0..n) (any order, unique, n <= VAULT_IDS_MAX) in one
 * call; sorted first, as sync_get searches them. */
static int
fetch_sorted(struct pull *pl, uint8_t (*ids)[VAULT_ID_LEN], size_t n, int kind,
             struct cfr_err *err)
{
    if (n > 1) {
        qsort(ids, n, VAULT_ID_LEN, id_cmp);
    }
    return sync_get(pl->s, pl->p, pl->tenant,
                    (const uint8_t(*)[VAULT_ID_LEN])ids, n, kind, true,
                    pull_put, pl, &pl->gc, err);
}

/*
 * Makes the objects of f[0..n) (unique IDs, n <= VAULT_IDS_MAX) present
 * here: asks the store which are absent (protecting the present ones by
 * the lease) and fetches those, in f's order, in batches of get_batch_n.
 * With commit, after each batch, commits the group's snapshots below the
 * owner of the first object still absent (f sorted by owner, everything
 * before it is here); after the last batch, below next_owner.
 */
static int
pull_fents(struct pull *pl, const struct fent *f, size_t n, int kind,
           bool commit, size_t next_owner, struct cfr_err *err)
{
    int rc = 0;
    uint32_t *miss = NULL;
    uint8_t(*ids)[VAULT_ID_LEN] = NULL;
    uint8_t(*want)[VAULT_ID_LEN] = NULL;
    size_t n_miss = 0;
    if (n == 0) {
        return commit ? commit_upto(pl, next_owner, false, err) : 0;
    }
    if ((miss = cfr_calloc(n, sizeof(*miss))) == NULL ||
        (ids = cfr_calloc(n, VAULT_ID_LEN)) == NULL ||
        (want = cfr_calloc(n, VAULT_ID_LEN)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: pull of %zu", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(ids[i], f[i].id, VAULT_ID_LEN);
    }
    if ((rc = vault_store_missing(pl->t, pl->lease,
                                  (const uint8_t(*)[VAULT_ID_LEN])ids, n, miss,
                                  &n_miss, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n_miss; i++) {
        if (miss[i] >= n || (i > 0 && miss[i] <= miss[i - 1])) {
            rc =
                CFR_ERR(err, CFR_EINTERNAL, "sync: missing index out of range");
            goto out;
        }
    }
    for (size_t at = 0; at <= n_miss;) {
        if (commit) {
            size_t upto = at < n_miss ? f[miss[at]].owner : next_owner;
            if ((rc = commit_upto(pl, upto, false, err)) != 0) {
                goto out;
            }
        }
        if (at == n_miss) {
            break;
        }
        size_t k = get_batch_n(pl->s, kind);
        if (k > n_miss - at) {
            k = n_miss - at;
        }
        for (size_t i = 0; i < k; i++) {
            memcpy(want[i], ids[miss[at + i]], VAULT_ID_LEN);
        }
        if (kind == COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE) {
            pl->s->last_n_page = k;
        } else {
            pl->s->last_n_obj = k;
        }
        if ((rc = fetch_sorted(pl, want, k, kind, err)) != 0) {
            goto out;
        }
        at += k;
    }
out:
    cfr_free(want);
    cfr_free(ids);
    cfr_free(miss);
    return rc;
}

/*
 * Fetches the leaves gathered so far. Once the walk is over (pl->walked)
 * they go oldest snapshot's first, and each snapshot is committed as soon
 * as the leaves of those before it and its own are here; during the walk
 * (the list reached PULL_LEAVES_MAX) they are only fetched.
 */
static int
flush_leaves(struct pull *pl, struct cfr_err *err)
{
    int rc = 0;
    struct fvec *v = &pl->leaves;
    fvec_uniq(v);
    if (pl->walked && v->n > 1) {
        qsort(v->v, v->n, sizeof(*v->v), fent_owner_cmp);
    }
    for (size_t at = 0; at < v->n && rc == 0; at += VAULT_IDS_MAX) {
        size_t k = v->n - at;
        if (k > VAULT_IDS_MAX) {
            k = VAULT_IDS_MAX;
        }
        size_t next_owner = at + k < v->n ? v->v[at + k].owner : pl->to;
        rc = pull_fents(pl, v->v + at, k,
                        COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED, pl->walked,
                        next_owner, err);
    }
    v->n = 0;
    return rc;
}

static int flush_level(struct pull *pl, uint32_t level, struct cfr_err *err);

/* Reads page id (present here) and queues what it names for owner. */
static int
page_expand(struct pull *pl, const uint8_t *id, uint32_t level, uint32_t owner,
            struct cfr_err *err)
{
    int rc;
    char hex[2 * VAULT_ID_LEN + 1];
    struct cfr_buf page;
    enum vault_object_kind kind;
    uint32_t got_level;
    size_t count;
    Coffer__V1__RefPage *m = NULL;
    cfr_buf_init(&page, CFR_TREE_PAGE_MAX);
    if ((rc = vault_store_get(pl->t, id, &page, &kind, err)) != 0) {
        goto out;
    }
    if (kind != VAULT_OBJ_REF_PAGE ||
        cfr_snap_refs_page_check(page.data, page.len, &got_level, &count,
                                 err) != 0 ||
        got_level != level) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "sync: object %s is not a reference page at level %u",
                     hex_id(id, hex), level);
        goto out;
    }
    struct cfr_tree_alloc alloc;
    cfr_tree_alloc_init(&alloc);
    if ((m = coffer__v1__ref_page__unpack(&alloc.pb, page.len, page.data)) ==
        NULL) {
        rc = CFR_ERR(err, alloc.failed ? CFR_ENOMEM : CFR_ECORRUPT,
                     "sync: decoding page %s", hex_id(id, hex));
        goto out;
    }
    if (level > 0) {
        for (size_t i = 0; i < m->n_children; i++) {
            if (m->children[i]->id.len != VAULT_ID_LEN) {
                rc = CFR_ERR(err, CFR_ECORRUPT, "sync: page %s: bad child",
                             hex_id(id, hex));
                goto out;
            }
            if ((rc = fvec_push(&pl->lvl[level - 1], m->children[i]->id.data,
                                owner, err)) != 0) {
                goto out;
            }
            if (pl->lvl[level - 1].n >= VAULT_IDS_MAX &&
                (rc = flush_level(pl, level - 1, err)) != 0) {
                goto out;
            }
        }
        goto out;
    }
    if (m->ids.len % VAULT_ID_LEN != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "sync: page %s: bad ID list",
                     hex_id(id, hex));
        goto out;
    }
    for (size_t i = 0; i < m->ids.len / VAULT_ID_LEN; i++) {
        if ((rc = fvec_push(&pl->leaves, m->ids.data + i * VAULT_ID_LEN, owner,
                            err)) != 0) {
            goto out;
        }
        if (pl->leaves.n >= PULL_LEAVES_MAX &&
            (rc = flush_leaves(pl, err)) != 0) {
            goto out;
        }
    }
out:
    if (m != NULL) {
        coffer__v1__ref_page__free_unpacked(m, cfr_tree_allocator());
    }
    cfr_buf_fini(&page);
    return rc;
}

/*
 * Processes the pages waiting at level (of every snapshot of the group):
 * skips those counted here (their subtree is complete, store.h invariant
 * 1), fetches the absent ones and queues what each remaining page names,
 * flushing a lower level whenever it fills, so every level holds at most
 * about VAULT_IDS_MAX + one page. The vector of this level is not touched
 * by the lower flushes.
 */
static int
flush_level(struct pull *pl, uint32_t level, struct cfr_err *err)
{
    int rc = 0;
    struct fvec *v = &pl->lvl[level];
    struct fent *todo = NULL;
    fvec_uniq(v);
    if (v->n == 0) {
        goto out;
    }
    if ((todo = cfr_calloc(v->n < VAULT_IDS_MAX ? v->n : VAULT_IDS_MAX,
                           sizeof(*todo))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: page list");
        goto out;
    }
    for (size_t at = 0; at < v->n;) {
        size_t k = v->n - at, n_todo = 0;
        if (k > VAULT_IDS_MAX) {
            k = VAULT_IDS_MAX;
        }
        for (size_t i = 0; i < k; i++) {
            bool counted = false, fresh = false;
            if ((rc = vault_store_page_counted(pl->t, v->v[at + i].id, &counted,
                                               err)) != 0) {
                goto out;
            }
            if (counted) {
                continue;
            }
            if ((rc = seen_add(pl, v->v[at + i].id, &fresh, err)) != 0) {
                goto out;
            }
            if (fresh) {
                todo[n_todo++] = v->v[at + i];
            }
        }
        at += k;
        if ((rc = pull_fents(pl, todo, n_todo,
                             COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE,
                             false, 0, err)) != 0) {
            goto out;
        }
        for (size_t i = 0; i < n_todo; i++) {
            if ((rc = page_expand(pl, todo[i].id, level, todo[i].owner, err)) !=
                0) {
                goto out;
            }
        }
    }
out:
    v->n = 0;
    cfr_free(todo);
    return rc;
}

/*
 * Pulls cv[from..to) that are neither skipped nor done, as one group
 * (struct pull), under one sync lease. Snapshots failing for good at
 * their commit are marked done and reported through first_rc/first;
 * *pulled_r and *committed_r count the others. An error of the walk or
 * of a fetch (the peer lacks or garbles an object, CFR_ENOTFOUND or
 * CFR_ECORRUPT) is returned: the snapshots not done yet are left to the
 * caller, which may pull them one by one.
 */
static int
pull_group(struct vault_sync *s, struct vault_tenant *t, const char *tenant,
           struct peer *p, struct cand *cv, size_t from, size_t to,
           int *first_rc, struct cfr_err *first, uint64_t *pulled_r,
           uint64_t *committed_r, struct get_counts *gc, struct cfr_err *err)
{
    int rc;
    bool lease_open = false;
    struct pull pl;
    int64_t expires = INT64_MAX; /* until the lease is open */
    uint32_t top = 0;
    memset(&pl, 0, sizeof(pl));
    pl.s = s;
    pl.t = t;
    pl.tenant = tenant;
    pl.p = p;
    pl.cv = cv;
    pl.from = pl.next = from;
    pl.to = to;
    pl.first_rc = first_rc;
    pl.first = first;
    if ((rc = vault_lease_open(t, (const uint8_t *)SYNC_SESSION,
                               strlen(SYNC_SESSION), 0, pl.lease, &expires,
                               err)) != 0) {
        goto out;
    }
    lease_open = true;
    for (size_t i = from; i < to; i++) {
        const struct cand *c = &cv[i];
        if (c->skip || c->done) {
            continue;
        }
        if ((rc = fvec_push(&pl.lvl[c->refs.height - 1], c->refs.id,
                            (uint32_t)i, err)) != 0) {
            goto out;
        }
        top = c->refs.height > top ? c->refs.height : top;
    }
    for (uint32_t l = top; l-- > 0;) {
        if ((rc = flush_level(&pl, l, err)) != 0) {
            goto out;
        }
    }
    pl.walked = true;
    if ((rc = flush_leaves(&pl, err)) != 0 ||
        (rc = commit_upto(&pl, to, true, err)) != 0) {
        goto out;
    }
out:
    /*
     * The lease (lease_max_ms, 12 h by default) is not renewed: a pull
     * that outlives it (a huge group over a throttled link) fails here,
     * with the objects it stored kept for the next round (they are
     * present then, and protected again by that round's lease). Its
     * CFR_ENOTFOUND is this vault's, not the peer's: reported as a limit
     * so the round does not read it as "this peer cannot supply".
     */
    if (rc == CFR_ENOTFOUND && cfr_clock_now_ms(s->clock) >= expires) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "sync: pull from %s outlived its lease; resumed next "
                     "round",
                     p->name);
    }
    gc->objects += pl.gc.objects;
    gc->bytes += pl.gc.bytes;
    *pulled_r += pl.pulled;
    *committed_r += pl.committed;
    if (lease_open) {
        struct cfr_err e2;
        cfr_err_clear(&e2);
        (void)vault_lease_close(t, pl.lease, &e2);
    }
    for (size_t i = 0; i < CFR_TREE_HEIGHT_MAX; i++) {
        fvec_fini(&pl.lvl[i]);
    }
    fvec_fini(&pl.leaves);
    cfr_free(pl.seen);
    return rc;
}

/* ---- one round with one peer -------------------------------------------- */

struct local_snap {
    uint8_t id[VAULT_ID_LEN];
    bool held;
};

struct round {
    struct vault_sync *s;
    struct vault_tenant *t;
    const char *tenant;
    struct peer *p;
    bool want[VAULT_SYNC_BUCKETS];
    /* This vault's records of the differing buckets, in ID order. */
    struct local_snap *ls;
    size_t n_ls, cap_ls;
    struct idvec lt; /* its tombstones */
    /* The peer's snapshots lacking here: at most PULL_RECORDS_MAX, the
     * oldest; cut set when newer ones were left for another pass. */
    struct cand *cv;
    size_t n_cv;
    bool cut;
    uint64_t n_cut;   /* records left for a later pass */
    uint64_t n_guard; /* records held back by the tombstone-keep guard */
    int64_t cut_ms;
    uint8_t cut_id[VAULT_ID_LEN];
    /* The peer's clock at its digest and this vault's just after: peer
     * times are mapped onto this clock as ages (peer_time_map). */
    int64_t peer_now, local_now;
    bool seeding; /* the tenant's seeding marker, at this pass */
    /* The peer's tombstones to adopt, with their mapped times: applied
     * once the SyncList stream is closed, because a drop waits for the
     * tenant's maintenance (a GC run, compaction included) and the
     * stream's deadline must not run meanwhile. */
    struct tomb_in {
        uint8_t id[VAULT_ID_LEN];
        int64_t ms;
    } * tv;
    size_t n_tv, cap_tv;
    /* outcome */
    uint64_t tombstones, holds, pulled, behind, skipped;
    bool compared; /* behind is known */
    struct get_counts gc;
};

static int
local_snap_fn(void *ctx, const struct vault_snapshot *sn, const uint8_t *header,
              size_t header_len)
{
    struct round *r = ctx;
    (void)header;
    (void)header_len;
    if (r->n_ls == r->cap_ls) {
        size_t cap = r->cap_ls == 0 ? 64 : r->cap_ls * 2;
        void *p = cfr_realloc(r->ls, cap * sizeof(*r->ls));
        if (p == NULL) {
            return CFR_ENOMEM;
        }
        r->ls = p;
        r->cap_ls = cap;
    }
    memcpy(r->ls[r->n_ls].id, sn->header_id, VAULT_ID_LEN);
    r->ls[r->n_ls].held = sn->held;
    r->n_ls++;
    return 0;
}

static int
local_tomb_fn(void *ctx, const uint8_t header_id[VAULT_ID_LEN],
              int64_t dropped_ms)
{
    struct round *r = ctx;
    (void)dropped_ms;
    return idvec_push(&r->lt, header_id, NULL);
}

static int
cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->received_ms != y->received_ms) {
        return x->received_ms < y->received_ms ? -1 : 1;
    }
    return memcmp(x->header_id, y->header_id, VAULT_ID_LEN);
}

static bool
cand_before_cut(const struct round *r, int64_t ms, const uint8_t *id)
{
    if (!r->cut) {
        return true;
    }
    if (ms != r->cut_ms) {
        return ms < r->cut_ms;
    }
    return memcmp(id, r->cut_id, VAULT_ID_LEN) < 0;
}

static int
cand_add(struct round *r, const Coffer__V1__SnapshotRecord *rec,
         struct cfr_err *err)
{
    /*
     * Older than the tombstone keep time on the peer: its tombstone may be
     * forgotten here already, and pulling it could resurrect a deletion
     * (docs/REPLICATION.md), unless this is a new replica. Decided before
     * the list is capped, so that guarded snapshots (all of them old)
     * cannot fill every pass's list and keep newer ones out for good.
     */
    int64_t age = 0;
    (void)peer_time_map(r->local_now, r->peer_now, rec->received_ms, &age);
    if (!r->seeding && age > r->s->tombstone_keep_ms) {
        bool tomb = false;
        int rc =
            vault_store_has_tombstone(r->t, rec->header_id.data, &tomb, err);
        if (rc != 0) {
            return rc;
        }
        if (!tomb) {
            char hex[2 * VAULT_ID_LEN + 1];
            r->n_guard++;
            cfr_log(CFR_LOG_DEBUG, "vault.sync.skip",
                    "tenant=%s peer=%s snapshot=%s received_ms=%" PRId64
                    " reason=older-than-tombstone-keep keep_ms=%" PRId64,
                    r->tenant, r->p->name, hex_id(rec->header_id.data, hex),
                    rec->received_ms, r->s->tombstone_keep_ms);
        }
        return 0;
    }
    if (!cand_before_cut(r, rec->received_ms, rec->header_id.data)) {
        r->n_cut++;
        return 0;
    }
    if (r->n_cv == PULL_RECORDS_MAX) {
        /* Keep the oldest half: the newer ones come in a later pass, so
         * each mailbox still gets its snapshots in the peer's order. */
        qsort(r->cv, r->n_cv, sizeof(*r->cv), cand_cmp);
        size_t keep = PULL_RECORDS_MAX / 2;
        r->cut = true;
        r->cut_ms = r->cv[keep].received_ms;
        memcpy(r->cut_id, r->cv[keep].header_id, VAULT_ID_LEN);
        for (size_t i = keep; i < r->n_cv; i++) {
            cfr_free(r->cv[i].header);
        }
        r->n_cut += r->n_cv - keep;
        r->n_cv = keep;
        if (!cand_before_cut(r, rec->received_ms, rec->header_id.data)) {
            r->n_cut++;
            return 0;
        }
    }
    struct cand *c = &r->cv[r->n_cv];
    memset(c, 0, sizeof(*c));
    if ((c->header = cfr_malloc(rec->header.len)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "sync: snapshot header");
    }
    memcpy(c->header, rec->header.data, rec->header.len);
    c->header_len = rec->header.len;
    memcpy(c->header_id, rec->header_id.data, VAULT_ID_LEN);
    memcpy(c->mailbox_id, rec->mailbox_id.data, VAULT_ID_LEN);
    c->received_ms = rec->received_ms;
    c->hold_changed_ms = rec->hold_changed_ms;
    memcpy(c->refs.id, rec->refs->id.data, VAULT_ID_LEN);
    c->refs.height = rec->refs->height;
    c->refs.entries = rec->refs->entries;
    c->flags = rec->flags;
    c->held = rec->held;
    r->n_cv++;
    return 0;
}

static int
local_snap_cmp(const void *key, const void *elem)
{
    return memcmp(key, ((const struct local_snap *)elem)->id, VAULT_ID_LEN);
}

static int
local_snap_cmp2(const void *a, const void *b)
{
    return memcmp(((const struct local_snap *)a)->id,
                  ((const struct local_snap *)b)->id, VAULT_ID_LEN);
}

/* Tombstones, holds, and the list of what to pull, from one message. */
static int
list_apply(struct round *r, const Coffer__V1__SyncListResponse *m,
           struct cfr_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < m->n_tombstones; i++) {
        const Coffer__V1__Tombstone *tb = m->tombstones[i];
        if (tb->header_id.len != VAULT_ID_LEN ||
            !r->want[tb->header_id.data[0]]) {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "sync: peer %s listed a bad tombstone", r->p->name);
        }
        if (r->lt.n > 0 && bsearch(tb->header_id.data, r->lt.v, r->lt.n,
                                   VAULT_ID_LEN, id_cmp) != NULL) {
            continue;
        }
        /* A tombstone past the keep time on the peer is one this vault
         * forgot (or is about to): adopting it with a fresh time would
         * bounce it between replicas forever. The snapshot it deleted is
         * older still, so the guard in peer_pass keeps it from coming
         * back. */
        int64_t age = 0;
        int64_t dropped_ms =
            peer_time_map(r->local_now, r->peer_now, tb->dropped_ms, &age);
        if (age > r->s->tombstone_keep_ms) {
            continue;
        }
        if (r->n_tv == r->cap_tv) {
            size_t cap = r->cap_tv == 0 ? 64 : 2 * r->cap_tv;
            void *p = cfr_realloc(r->tv, cap * sizeof(*r->tv));
            if (p == NULL) {
                return CFR_ERR(err, CFR_ENOMEM, "sync: tombstone list");
            }
            r->tv = p;
            r->cap_tv = cap;
        }
        memcpy(r->tv[r->n_tv].id, tb->header_id.data, VAULT_ID_LEN);
        r->tv[r->n_tv].ms = dropped_ms;
        r->n_tv++;
    }
    for (size_t i = 0; i < m->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *rec = m->snapshots[i];
        if (rec->header_id.len != VAULT_ID_LEN ||
            !r->want[rec->header_id.data[0]] ||
            rec->mailbox_id.len != VAULT_ID_LEN || rec->refs == NULL ||
            rec->refs->id.len != VAULT_ID_LEN || rec->refs->height < 1 ||
            rec->refs->height > CFR_TREE_HEIGHT_MAX || rec->header.len == 0 ||
            rec->header.len > VAULT_HEADER_MAX) {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "sync: peer %s listed a malformed snapshot record",
                           r->p->name);
        }
        const struct local_snap *ls =
            r->n_ls == 0 ? NULL
                         : bsearch(rec->header_id.data, r->ls, r->n_ls,
                                   sizeof(*r->ls), local_snap_cmp);
        if (ls != NULL) {
            if (ls->held != rec->held) {
                bool applied = false;
                /* The peer's clock, mapped as in peer_pass. */
                int64_t changed =
                    rec->hold_changed_ms == 0
                        ? 0
                        : peer_time_map(r->local_now, r->peer_now,
                                        rec->hold_changed_ms, NULL);
                if ((rc = vault_store_hold_synced(r->t, rec->header_id.data,
                                                  rec->held, changed, &applied,
                                                  err)) != 0) {
                    return rc;
                }
                r->holds += applied ? 1 : 0;
            }
            continue;
        }
        if ((rc = cand_add(r, rec, err)) != 0) {
            return rc;
        }
    }
    return 0;
}

/*
 * Applies the peer's tombstones gathered by list_apply. A drop does not
 * wait for the tenant's maintenance lock (store.h): while a GC or
 * retention run holds it, this waits here, in short steps that a stop
 * ends, with no call open to any peer.
 */
static int
tombs_apply(struct round *r, struct cfr_err *err)
{
    int rc = 0;
    char hex[2 * VAULT_ID_LEN + 1];
    bool waited = false;
    for (size_t i = 0; i < r->n_tv; i++) {
        bool dropped = false;
        for (;;) {
            rc = vault_store_drop_synced(r->t, r->tv[i].id, r->tv[i].ms,
                                         &dropped, err);
            if (rc != CFR_EUNAVAIL) {
                break;
            }
            if (!waited) {
                waited = true;
                cfr_log(CFR_LOG_INFO, "vault.sync.wait_maintenance",
                        "tenant=%s peer=%s", r->tenant, r->p->name);
            }
            pthread_mutex_lock(&r->s->mu);
            if (!r->s->stopping) {
                cv_wait_until(r->s, mono_ms() + TOMB_RETRY_MS);
            }
            bool st = r->s->stopping;
            pthread_mutex_unlock(&r->s->mu);
            if (st) {
                return CFR_ERR(err, CFR_EUNAVAIL, "sync: stopping");
            }
        }
        if (rc != 0) {
            return rc;
        }
        r->tombstones++;
        if (dropped) {
            cfr_log(CFR_LOG_INFO, "vault.sync.drop",
                    "tenant=%s peer=%s snapshot=%s", r->tenant, r->p->name,
                    hex_id(r->tv[i].id, hex));
        }
    }
    r->n_tv = 0;
    return 0;
}

static void
round_fini(struct round *r)
{
    for (size_t i = 0; i < r->n_cv; i++) {
        cfr_free(r->cv[i].header);
    }
    r->n_cv = 0;
    r->cut = false;
    r->n_cut = 0;
    r->n_guard = 0;
    r->n_ls = 0;
    r->lt.n = 0;
    r->n_tv = 0;
}

/* SyncDigest of tenant from p into buckets. */
static int
peer_digest(struct round *r, uint8_t buckets[VAULT_SYNC_BUCKETS][VAULT_ID_LEN],
            int64_t *peer_time_r, struct cfr_err *err)
{
    int rc;
    struct vault_sync *s = r->s;
    struct cfr_rpc_call *call = NULL;
    Coffer__V1__SyncDigestResponse *m = NULL;
    struct cfr_buf msg;
    uint8_t req[CFR_RPC_TENANT_MAX + 8];
    cfr_buf_init(&msg, s->max_msg);
    Coffer__V1__SyncDigestRequest q = COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
    q.tenant = (char *)r->tenant;
    size_t len = coffer__v1__sync_digest_request__get_packed_size(&q);
    CFR_ASSERT(len <= sizeof(req));
    (void)coffer__v1__sync_digest_request__pack(&q, req);
    if ((rc = call_open(s, r->p, M_DIGEST, req, len, &call, err)) != 0) {
        goto out;
    }
    if ((rc = call_next(r->p, call, &msg, err)) < 0) {
        goto out;
    }
    if (rc == 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "sync: peer %s: no digest", r->p->name);
        goto out;
    }
    m = coffer__v1__sync_digest_response__unpack(NULL, msg.len, msg.data);
    if (m == NULL || m->n_buckets != VAULT_SYNC_BUCKETS) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "sync: peer %s: malformed digest",
                     r->p->name);
        goto out;
    }
    for (size_t b = 0; b < VAULT_SYNC_BUCKETS; b++) {
        if (m->buckets[b].len != VAULT_ID_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "sync: peer %s: malformed digest",
                         r->p->name);
            goto out;
        }
        memcpy(buckets[b], m->buckets[b].data, VAULT_ID_LEN);
    }
    /* A peer standing elsewhere than configured would carry the tenant
     * outside its regions: refuse rather than trust either. */
    if (m->region != NULL && m->region[0] != '\0' &&
        strcmp(m->region, r->p->region) != 0) {
        char q1[VAULT_SYNC_REGION_MAX + 8];
        rc = CFR_ERR(
            err, CFR_ECONFIG, "sync: peer %s reports region %s, configured %s",
            r->p->name, cfr_log_quote(m->region, q1, sizeof(q1)), r->p->region);
        goto out;
    }
    *peer_time_r = m->time_ms;
    rc = 0;
out:
    if (m != NULL) {
        coffer__v1__sync_digest_response__free_unpacked(m, NULL);
    }
    call_close(s, r->p, call);
    cfr_buf_fini(&msg);
    return rc;
}

/* SyncList of the wanted buckets, applied message by message. */
static int
peer_list(struct round *r, struct cfr_err *err)
{
    int rc;
    struct vault_sync *s = r->s;
    struct cfr_rpc_call *call = NULL;
    Coffer__V1__SyncListResponse *m = NULL;
    uint32_t bk[VAULT_SYNC_BUCKETS];
    uint8_t *req = NULL;
    size_t nb = 0;
    struct cfr_buf msg;
    cfr_buf_init(&msg, s->max_msg);
    for (uint32_t b = 0; b < VAULT_SYNC_BUCKETS; b++) {
        if (r->want[b]) {
            bk[nb++] = b;
        }
    }
    Coffer__V1__SyncListRequest q = COFFER__V1__SYNC_LIST_REQUEST__INIT;
    q.tenant = (char *)r->tenant;
    q.n_buckets = nb;
    q.buckets = bk;
    size_t len = coffer__v1__sync_list_request__get_packed_size(&q);
    if ((req = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: list request");
        goto out;
    }
    (void)coffer__v1__sync_list_request__pack(&q, req);
    if ((rc = call_open(s, r->p, M_LIST, req, len, &call, err)) != 0) {
        goto out;
    }
    while ((rc = call_next(r->p, call, &msg, err)) > 0) {
        m = coffer__v1__sync_list_response__unpack(NULL, msg.len, msg.data);
        if (m == NULL) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "sync: peer %s: undecodable SyncList answer",
                         r->p->name);
            goto out;
        }
        if ((rc = list_apply(r, m, err)) != 0) {
            goto out;
        }
        coffer__v1__sync_list_response__free_unpacked(m, NULL);
        m = NULL;
    }
out:
    if (m != NULL) {
        coffer__v1__sync_list_response__free_unpacked(m, NULL);
    }
    call_close(s, r->p, call);
    cfr_buf_fini(&msg);
    cfr_free(req);
    return rc < 0 ? rc : 0;
}

/*
 * One pass: compare, list, apply, pull. *again_r when the list was cut
 * and another pass should follow.
 */
static int
peer_pass(struct round *r, bool *again_r, struct cfr_err *err)
{
    int rc;
    struct vault_sync *s = r->s;
    uint8_t(*theirs)[VAULT_ID_LEN] = NULL;
    uint8_t(*ours)[VAULT_ID_LEN] = NULL;
    uint64_t n_snap = 0, n_tomb = 0;
    int64_t peer_time = 0;
    *again_r = false;
    round_fini(r);
    if ((theirs = cfr_calloc(VAULT_SYNC_BUCKETS, VAULT_ID_LEN)) == NULL ||
        (ours = cfr_calloc(VAULT_SYNC_BUCKETS, VAULT_ID_LEN)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: digests");
        goto out;
    }
    if ((rc = peer_digest(r, theirs, &peer_time, err)) != 0) {
        goto out;
    }
    r->peer_now = peer_time;
    r->local_now = cfr_clock_now_ms(s->clock);
    int64_t skew = sat_sub(peer_time, r->local_now);
    if (skew > CLOCK_SKEW_MAX_MS || skew < -CLOCK_SKEW_MAX_MS) {
        rc = CFR_ERR(err, CFR_ECONFIG,
                     "sync: peer %s clock differs by %" PRId64
                     " s (more than %lld s): not synced",
                     r->p->name, skew / 1000, CLOCK_SKEW_MAX_MS / 1000);
        goto out;
    }
    if (r->t == NULL) {
        struct cfr_err e2;
        cfr_err_clear(&e2);
        r->t = vault_store_tenant(s->store, r->tenant, false, &e2);
        if (r->t == NULL && e2.code != CFR_ENOTFOUND) {
            *err = e2;
            rc = e2.code;
            goto out;
        }
    }
    if (r->t != NULL &&
        (rc = vault_store_digest(r->t, ours, &n_snap, &n_tomb, err)) != 0) {
        goto out;
    }
    bool any = false;
    for (size_t b = 0; b < VAULT_SYNC_BUCKETS; b++) {
        r->want[b] = memcmp(theirs[b], ours[b], VAULT_ID_LEN) != 0;
        any = any || r->want[b];
    }
    r->compared = true;
    if (!any) {
        /* Equal: this vault holds all the peer has, so a seed that an
         * earlier round left unfinished is complete (peer_round clears
         * the marker). */
        r->behind = 0;
        rc = r->t != NULL ? vault_store_seed_get(r->t, &r->seeding, err) : 0;
        goto out;
    }
    /* The peer holds something this vault lacks or the other way round;
     * this vault needs a database for the tenant to take anything. */
    if (r->t == NULL &&
        (r->t = vault_store_tenant(s->store, r->tenant, true, err)) == NULL) {
        rc = err->code != 0 ? err->code : CFR_EINTERNAL;
        goto out;
    }
    /*
     * A replica holding nothing is being seeded: the marker persists
     * until a round took everything (peer_round), so a seed needing
     * several passes, or cut by a restart, keeps pulling old snapshots.
     */
    if (n_snap == 0 && n_tomb == 0 &&
        (rc = vault_store_seed_set(r->t, true, err)) != 0) {
        goto out;
    }
    if ((rc = vault_store_seed_get(r->t, &r->seeding, err)) != 0) {
        goto out;
    }
    bool seeding = r->seeding;
    rc = vault_store_sync_list(r->t, r->want, local_snap_fn, local_tomb_fn, r,
                               err);
    if (rc == CFR_ENOMEM) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: local list");
    }
    if (rc != 0) {
        goto out;
    }
    /* Searched by ID below; sorted here rather than trusting the order. */
    if (r->n_ls > 1) {
        qsort(r->ls, r->n_ls, sizeof(*r->ls), local_snap_cmp2);
    }
    if (r->lt.n > 1) {
        qsort(r->lt.v, r->lt.n, VAULT_ID_LEN, id_cmp);
    }
    if (r->cv == NULL &&
        (r->cv = cfr_calloc(PULL_RECORDS_MAX, sizeof(*r->cv))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync: pull list");
        goto out;
    }
    if ((rc = peer_list(r, err)) != 0 || (rc = tombs_apply(r, err)) != 0) {
        goto out;
    }
    if (r->n_cv > 1) {
        qsort(r->cv, r->n_cv, sizeof(*r->cv), cand_cmp);
    }
    /* What is to pull, counted first so that behind is right even when
     * a pull below fails. */
    uint64_t skipped = 0;
    /* A guarded one stays counted: the peer has it and this vault will
     * not take it, which status must show (re-seed). */
    r->behind = r->n_cut + r->n_guard;
    for (size_t i = 0; i < r->n_cv; i++) {
        struct cand *c = &r->cv[i];
        bool tomb = false;
        if ((rc = vault_store_has_tombstone(r->t, c->header_id, &tomb, err)) !=
            0) {
            goto out;
        }
        /* Older than the tombstone keep time on the peer: its tombstone
         * may be forgotten here already, and pulling it could resurrect
         * a deletion (docs/REPLICATION.md), unless this is a new replica. */
        int64_t age = 0;
        c->local_ms =
            peer_time_map(r->local_now, peer_time, c->received_ms, &age);
        c->skip = tomb || (!seeding && age > s->tombstone_keep_ms);
        /* The peer stamped the hold change with its clock: its age there
         * onto this clock, like received_ms, so "newer wins" compares
         * like with like. */
        c->hold_local_ms = c->hold_changed_ms == 0
                               ? 0
                               : peer_time_map(r->local_now, peer_time,
                                               c->hold_changed_ms, NULL);
        if (!tomb && c->skip) {
            char hex[2 * VAULT_ID_LEN + 1];
            skipped++;
            cfr_log(CFR_LOG_DEBUG, "vault.sync.skip",
                    "tenant=%s peer=%s snapshot=%s received_ms=%" PRId64
                    " reason=older-than-tombstone-keep keep_ms=%" PRId64,
                    r->tenant, r->p->name, hex_id(c->header_id, hex),
                    c->received_ms, s->tombstone_keep_ms);
        }
        /* A guarded one stays counted: the peer has it and this vault
         * will not take it, which status must show (re-seed). */
        r->behind += tomb ? 0 : 1;
    }
    /* Every pass lists every differing bucket again, so the last pass's
     * count is the round's, not a sum over passes. */
    r->skipped = r->n_guard + skipped;
    int first_rc = 0;
    struct cfr_err first;
    cfr_err_clear(&first);
    uint64_t committed = 0;
    /* All of the pass at once: a round trip per tree level and per batch
     * of objects, not per snapshot (struct pull). */
    rc = pull_group(s, r->t, r->tenant, r->p, r->cv, 0, r->n_cv, &first_rc,
                    &first, &r->pulled, &committed, &r->gc, err);
    r->behind -= committed;
    if (rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT ||
        (rc == CFR_ELIMIT && r->n_cv > 1)) {
        /* Something of the group the peer cannot supply (or a group too
         * large): one by one, so the others still come. */
        cfr_log_err(CFR_LOG_INFO, "vault.sync.pull_one_by_one", err);
        for (size_t i = 0; i < r->n_cv; i++) {
            struct cand *c = &r->cv[i];
            if (c->skip || c->done) {
                continue;
            }
            committed = 0;
            rc =
                pull_group(s, r->t, r->tenant, r->p, r->cv, i, i + 1, &first_rc,
                           &first, &r->pulled, &committed, &r->gc, err);
            r->behind -= committed;
            if (rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT) {
                /* The peer cannot supply this one; another peer may. */
                if (first_rc == 0) {
                    first_rc = rc;
                    first = *err;
                }
                cfr_log_err(CFR_LOG_WARN, "vault.sync.pull_failed", err);
                continue;
            }
            if (rc != 0) {
                goto out;
            }
        }
    } else if (rc != 0) {
        goto out;
    }
    if (first_rc != 0) {
        *err = first;
        rc = first_rc;
        goto out;
    }
    *again_r = r->cut;
    rc = 0;
out:
    cfr_free(theirs);
    cfr_free(ours);
    return rc;
}

static int
peer_round(struct vault_sync *s, const char *tenant, size_t pi,
           struct cfr_err *err)
{
    int rc = 0;
    struct peer *p = &s->peers[pi];
    struct round r;
    int64_t started = cfr_clock_now_ms(s->clock);
    memset(&r, 0, sizeof(r));
    r.s = s;
    r.tenant = tenant;
    r.p = p;
    bool again = false;
    for (int pass = 0; pass < PASSES_MAX; pass++) {
        if ((rc = peer_pass(&r, &again, err)) != 0 || !again) {
            break;
        }
    }
    /*
     * The seed is over once a round with a peer took everything it
     * offered: nothing left for another pass, no failed pull (those fail
     * the pass) and nothing held back by the guard.
     */
    if (rc == 0 && !again && r.seeding && r.skipped == 0 && r.t != NULL) {
        struct cfr_err e2;
        cfr_err_clear(&e2);
        if (vault_store_seed_set(r.t, false, &e2) != 0) {
            cfr_log_err(CFR_LOG_WARN, "vault.sync.seed", &e2);
        } else {
            cfr_log(CFR_LOG_INFO, "vault.sync.seeded", "tenant=%s peer=%s",
                    tenant, p->name);
        }
    }
    bool notify = false;
    /* Cut short by vault_sync_stop: what was pulled counts, the rest is
     * no outcome of the peer's. */
    bool cancelled = rc != 0 && stopping(s);
    pthread_mutex_lock(&s->mu);
    /* The attempt is recorded with its outcome, so a status reader never
     * sees a new attempt time next to the previous round's error. */
    struct tstat *ts = tstat_get(s, tenant);
    if (ts != NULL) {
        struct peer_stat *ps = &ts->peers[pi];
        ps->snapshots_pulled += r.pulled;
        ps->objects_pulled += r.gc.objects;
        ps->bytes_pulled += r.gc.bytes;
        ps->tombstones_applied += r.tombstones;
        /* Unknown when the compare itself failed: 0, with the error
         * shown beside it (docs/REPLICATION.md, "What BEHIND counts"). */
        ps->behind = r.compared ? r.behind : 0;
        if (cancelled) {
            /* nothing more */
        } else if (rc == 0) {
            ps->last_attempt_ms = started;
            ps->last_ok_ms = cfr_clock_now_ms(s->clock);
            ps->last_error[0] = '\0';
            if (r.skipped > 0) {
                /* Not a failure of the round, but not to be missed:
                 * these stay in BEHIND until the replica is re-seeded. */
                (void)snprintf(ps->last_error, sizeof(ps->last_error),
                               "%" PRIu64 " snapshot(s) older than the "
                               "tombstone keep time not pulled (guard)",
                               r.skipped);
            }
            ps->was_ok = true;
        } else {
            ps->last_attempt_ms = started;
            copy_str(ps->last_error, sizeof(ps->last_error), err->msg);
            notify = ps->was_ok;
            ps->was_ok = false;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0 && !cancelled) {
        char q[VAULT_SYNC_ERROR_MAX + 16];
        cfr_log(CFR_LOG_WARN, "vault.sync.failed",
                "tenant=%s peer=%s code=%s msg=%s", tenant, p->name,
                cfr_code_name(rc), cfr_log_quote(err->msg, q, sizeof(q)));
        if (notify && s->on_event != NULL) {
            s->on_event(s->event_ctx, VAULT_SYNC_EV_PEER_FAILED, tenant,
                        p->name, err->msg);
        }
    } else if (r.pulled + r.tombstones + r.holds + r.skipped > 0) {
        cfr_log(CFR_LOG_INFO, "vault.sync.round",
                "tenant=%s peer=%s pulled=%" PRIu64 " objects=%" PRIu64
                " bytes=%" PRIu64 " tombstones=%" PRIu64 " holds=%" PRIu64
                " skipped=%" PRIu64 " behind=%" PRIu64,
                tenant, p->name, r.pulled, r.gc.objects, r.gc.bytes,
                r.tombstones, r.holds, r.skipped, r.behind);
    }
    round_fini(&r);
    cfr_free(r.cv);
    cfr_free(r.ls);
    cfr_free(r.tv);
    idvec_fini(&r.lt);
    return rc;
}

/* ---- repairs ------------------------------------------------------------ */

struct repair_ctx {
    struct vault_tenant *t;
    bool repaired;
    bool fine; /* nothing to repair: reads fine, or not stored here */
};

static int
repair_put(void *ctx, const struct vault_object *objs, size_t n,
           struct cfr_err *err)
{
    struct repair_ctx *rc = ctx;
    for (size_t i = 0; i < n; i++) {
        bool repaired = false;
        int r = vault_store_repair(rc->t, objs[i].id, objs[i].kind,
                                   objs[i].data, objs[i].len, &repaired, err);
        if (r == CFR_ENOTFOUND) {
            rc->fine = true; /* dropped meanwhile (GC): nothing to repair */
            continue;
        }
        if (r != 0) {
            return r;
        }
        rc->repaired = rc->repaired || repaired;
        rc->fine = rc->fine || !repaired;
    }
    return 0;
}

static void
repair_one(struct vault_sync *s, const struct repair_item *it)
{
    char hex[2 * VAULT_ID_LEN + 1];
    struct cfr_err err;
    struct vault_sysdb_tenant *rec = NULL;
    struct tenant_ref tr;
    const char *by = "";
    size_t tried = 0;
    hex_id(it->id, hex);
    cfr_err_clear(&err);
    memset(&tr, 0, sizeof(tr));
    if ((rec = cfr_calloc(1, sizeof(*rec))) == NULL) {
        return;
    }
    if (vault_sysdb_tenant_get(s->sysdb, it->tenant, rec, &err) != 0) {
        cfr_log(CFR_LOG_DEBUG, "vault.sync.repair_skip",
                "tenant=%s object=%s reason=not-registered", it->tenant, hex);
        goto out;
    }
    struct tenant_list one = {.v = &tr, .n = 0, .cap = 1, .only = NULL};
    (void)collect_tenant(&one, rec);
    struct vault_tenant *t =
        vault_store_tenant(s->store, it->tenant, false, &err);
    if (t == NULL) {
        goto out;
    }
    struct repair_ctx rc = {.t = t, .repaired = false, .fine = false};
    for (size_t i = 0; i < s->n_peers && !rc.repaired && !rc.fine; i++) {
        struct peer *p = &s->peers[i];
        if (!region_allowed(&tr, p->region) || stopping(s)) {
            continue;
        }
        tried++;
        cfr_err_clear(&err);
        int r =
            sync_get(s, p, it->tenant, (const uint8_t(*)[VAULT_ID_LEN])it->id,
                     1, 0, false, repair_put, &rc, NULL, &err);
        if (r != 0) {
            /* Unreachable, or its copy does not match what was stored
             * here (vault_store_repair refused it): the next peer. */
            char q[VAULT_SYNC_ERROR_MAX + 16];
            cfr_log(CFR_LOG_INFO, "vault.sync.repair_try",
                    "tenant=%s object=%s peer=%s msg=%s", it->tenant, hex,
                    p->name, cfr_log_quote(err.msg, q, sizeof(q)));
            continue;
        }
        if (rc.repaired) {
            by = p->name;
        }
    }
    if (stopping(s) && !rc.repaired) {
        goto out; /* not a failure: the next start's scrub finds it */
    }
    pthread_mutex_lock(&s->mu);
    struct tstat *ts = tstat_get(s, it->tenant);
    if (ts != NULL && rc.repaired) {
        ts->repairs++;
        ts->last_repair_ms = cfr_clock_now_ms(s->clock);
    } else if (ts != NULL && !rc.fine) {
        ts->repair_failures++;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc.repaired) {
        cfr_log(CFR_LOG_DEBUG, "vault.sync.repaired",
                "tenant=%s object=%s peer=%s", it->tenant, hex, by);
        if (s->on_event != NULL) {
            s->on_event(s->event_ctx, VAULT_SYNC_EV_REPAIRED, it->tenant, by,
                        hex);
        }
    } else if (!rc.fine) {
        cfr_log(CFR_LOG_DEBUG, "vault.sync.unrepaired",
                "tenant=%s object=%s peers_tried=%zu", it->tenant, hex, tried);
        if (s->on_event != NULL) {
            s->on_event(s->event_ctx, VAULT_SYNC_EV_UNREPAIRED, it->tenant, "",
                        hex);
        }
    }
out:
    cfr_free(rec);
}

/* Runs every queued repair (round_mu held). */
static void
repairs_run(struct vault_sync *s)
{
    for (;;) {
        struct repair_item it;
        pthread_mutex_lock(&s->mu);
        if (s->stopping || s->rq_n == 0) {
            pthread_mutex_unlock(&s->mu);
            return;
        }
        it = s->rq[s->rq_head];
        s->rq_head = (s->rq_head + 1) % REPAIR_QUEUE_MAX;
        s->rq_n--;
        pthread_mutex_unlock(&s->mu);
        repair_one(s, &it);
    }
}

/* ---- rounds ------------------------------------------------------------- */

/* round_mu held. */
static int
sync_round_locked(struct vault_sync *s, const char *tenant, struct cfr_err *err)
{
    int rc, first_rc = 0;
    struct tenant_list tl;
    struct cfr_err e;
    if ((rc = tenants_list(s, tenant, &tl, err)) != 0) {
        cfr_log_err(CFR_LOG_WARN, "vault.sync.tenants", err);
        goto out;
    }
    if (tenant != NULL && tl.n == 0) {
        char q[CFR_RPC_TENANT_MAX + 8];
        rc = CFR_ERR(err, CFR_ENOTFOUND,
                     "sync: tenant %s is not registered here or not allowed "
                     "in region %s",
                     cfr_log_quote(tenant, q, sizeof(q)), s->region);
        cfr_log_err(CFR_LOG_INFO, "vault.sync.unknown_tenant", err);
        goto out;
    }
    for (size_t i = 0; i < tl.n && !stopping(s); i++) {
        for (size_t j = 0; j < s->n_peers && !stopping(s); j++) {
            if (!region_allowed(&tl.v[i], s->peers[j].region)) {
                continue;
            }
            cfr_err_clear(&e);
            if ((rc = peer_round(s, tl.v[i].name, j, &e)) != 0 &&
                first_rc == 0) {
                first_rc = rc;
                *err = e;
            }
        }
    }
    repairs_run(s);
    rc = first_rc;
out:
    cfr_free(tl.v);
    return rc;
}

int
vault_sync_round(struct vault_sync *s, const char *tenant, struct cfr_err *err)
{
    pthread_mutex_lock(&s->round_mu);
    int rc = sync_round_locked(s, tenant, err);
    pthread_mutex_unlock(&s->round_mu);
    return rc;
}

static void *
sync_main(void *arg)
{
    struct vault_sync *s = arg;
    /* The first round at once; none until triggered with interval 0. */
    int64_t next_due = s->interval_ms > 0 ? mono_ms() : -1;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = mono_ms();
        bool due = next_due >= 0 && now >= next_due;
        if (!due && !s->trig_all && s->n_trig == 0 && s->rq_n == 0) {
            if (next_due >= 0) {
                cv_wait_until(s, next_due);
            } else {
                (void)pthread_cond_wait(&s->cv, &s->mu);
            }
            continue;
        }
        bool all = due || s->trig_all;
        size_t n_trig = all ? 0 : s->n_trig;
        char(*trig)[CFR_RPC_TENANT_MAX] = NULL;
        if (n_trig > 0 &&
            (trig = cfr_calloc(n_trig, CFR_RPC_TENANT_MAX)) != NULL) {
            memcpy(trig, s->trig, n_trig * CFR_RPC_TENANT_MAX);
        } else if (n_trig > 0) {
            all = true; /* no memory to remember which: do them all */
        }
        s->trig_all = false;
        s->n_trig = 0;
        pthread_mutex_unlock(&s->mu);

        struct cfr_err err;
        cfr_err_clear(&err);
        pthread_mutex_lock(&s->round_mu);
        if (all) {
            (void)sync_round_locked(s, NULL, &err);
            next_due = s->interval_ms > 0 ? mono_ms() + s->interval_ms : -1;
        } else if (trig != NULL) {
            for (size_t i = 0; i < n_trig; i++) {
                cfr_err_clear(&err);
                (void)sync_round_locked(s, trig[i], &err);
            }
        } else {
            repairs_run(s);
        }
        pthread_mutex_unlock(&s->round_mu);
        cfr_free(trig);
        if (s->interval_ms <= 0 && all) {
            next_due = -1;
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

int
vault_sync_new(const struct vault_sync_opts *o, struct vault_sync **sync_r,
               struct cfr_err *err)
{
    int rc = 0;
    struct vault_sync *s = NULL;
    *sync_r = NULL;
    if (o == NULL || o->store == NULL || o->sysdb == NULL || o->clock == NULL ||
        o->name == NULL || o->name[0] == '\0' ||
        strlen(o->name) >= VAULT_SYNC_NAME_MAX || o->region == NULL ||
        strlen(o->region) >= VAULT_SYNC_REGION_MAX ||
        o->n_peers > VAULT_SYNC_PEERS_MAX ||
        (o->n_peers > 0 && o->peers == NULL) || o->interval_ms < 0 ||
        o->timeout_ms < 0 || o->tombstone_keep_ms < 0) {
        return CFR_ERR(err, CFR_EINVAL, "sync: invalid options");
    }
    if (o->n_peers > 0 &&
        (o->tls_cert == NULL || o->tls_key == NULL || o->tls_ca == NULL)) {
        return CFR_ERR(err, CFR_EINVAL,
                       "sync: peers need a client certificate, key and CA");
    }
    for (size_t i = 0; i < o->n_peers; i++) {
        const struct vault_sync_peer *p = &o->peers[i];
        if (p->name == NULL || p->name[0] == '\0' ||
            strlen(p->name) >= VAULT_SYNC_NAME_MAX || p->address == NULL ||
            p->address[0] == '\0' || p->region == NULL ||
            strlen(p->region) >= VAULT_SYNC_REGION_MAX) {
            return CFR_ERR(err, CFR_EINVAL, "sync: peer %zu is incomplete", i);
        }
        if (strcmp(p->name, o->name) == 0) {
            return CFR_ERR(err, CFR_EINVAL, "sync: peer %zu is this vault", i);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(o->peers[j].name, p->name) == 0) {
                return CFR_ERR(err, CFR_EINVAL,
                               "sync: peer name %s is listed twice", p->name);
            }
        }
    }
    if ((s = cfr_calloc(1, sizeof(*s))) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "sync");
    }
    s->store = o->store;
    s->sysdb = o->sysdb;
    s->clock = o->clock;
    copy_str(s->name, sizeof(s->name), o->name);
    copy_str(s->region, sizeof(s->region), o->region);
    s->interval_ms = o->interval_ms;
    s->bandwidth_bps = o->bandwidth_bps;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60 * CFR_MS_PER_SEC;
    s->tombstone_keep_ms =
        o->tombstone_keep_ms > 0 ? o->tombstone_keep_ms : 90 * CFR_MS_PER_DAY;
    s->max_msg = o->max_msg > 0 ? o->max_msg : CFR_RPC_MSG_MAX_DEFAULT;
    s->on_event = o->on_event;
    s->event_ctx = o->event_ctx;
    s->tokens = (double)o->bandwidth_bps;
    s->tokens_mono_ms = mono_ms();
    pthread_mutex_init(&s->round_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->n_peers = o->n_peers;
    for (size_t i = 0; i < o->n_peers; i++) {
        const struct vault_sync_peer *p = &o->peers[i];
        copy_str(s->peers[i].name, sizeof(s->peers[i].name), p->name);
        copy_str(s->peers[i].region, sizeof(s->peers[i].region), p->region);
        if ((s->peers[i].address = cfr_strdup(p->address)) == NULL ||
            (p->tls_name != NULL &&
             (s->peers[i].tls_name = cfr_strdup(p->tls_name)) == NULL)) {
            rc = CFR_ERR(err, CFR_ENOMEM, "sync");
            goto out;
        }
    }
    if ((o->tls_cert != NULL &&
         (s->tls_cert = cfr_strdup(o->tls_cert)) == NULL) ||
        (o->tls_key != NULL && (s->tls_key = cfr_strdup(o->tls_key)) == NULL) ||
        (o->tls_ca != NULL && (s->tls_ca = cfr_strdup(o->tls_ca)) == NULL) ||
        (s->rq = cfr_calloc(REPAIR_QUEUE_MAX, sizeof(*s->rq))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sync");
        goto out;
    }
    *sync_r = s;
    s = NULL;
out:
    vault_sync_free(s);
    return rc;
}

int
vault_sync_start(struct vault_sync *s, struct cfr_err *err)
{
    int rc;
    pthread_mutex_lock(&s->mu);
    if (s->started || s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return CFR_ERR(err, CFR_EINVAL, "sync: already started or stopped");
    }
    if ((rc = pthread_create(&s->thread, NULL, sync_main, s)) != 0) {
        pthread_mutex_unlock(&s->mu);
        errno = rc;
        return CFR_ERR_ERRNO(err, CFR_EIO, "sync: starting the thread");
    }
    s->started = true;
    pthread_mutex_unlock(&s->mu);
    cfr_log(CFR_LOG_DEBUG, "vault.sync.start",
            "name=%s region=%s peers=%zu interval_ms=%" PRId64
            " bandwidth=%" PRIu64,
            s->name, s->region, s->n_peers, s->interval_ms, s->bandwidth_bps);
    return 0;
}

void
vault_sync_stop(struct vault_sync *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    if (s->cur_call != NULL) {
        cfr_rpc_call_cancel(s->cur_call);
    }
    pthread_cond_broadcast(&s->cv);
    bool join = s->started;
    s->started = false;
    pthread_mutex_unlock(&s->mu);
    if (join) {
        pthread_join(s->thread, NULL);
    }
}

void
vault_sync_free(struct vault_sync *s)
{
    if (s == NULL) {
        return;
    }
    vault_sync_stop(s);
    for (size_t i = 0; i < VAULT_SYNC_PEERS_MAX; i++) {
        cfr_rpc_client_free(s->peers[i].cli);
        cfr_free(s->peers[i].address);
        cfr_free(s->peers[i].tls_name);
    }
    if (s->tls_key != NULL) {
        cfr_wipe(s->tls_key, strlen(s->tls_key));
    }
    cfr_free(s->tls_key);
    cfr_free(s->tls_cert);
    cfr_free(s->tls_ca);
    cfr_free(s->rq);
    cfr_free(s->ts);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->round_mu);
    cfr_free(s);
}

void
vault_sync_trigger(struct vault_sync *s, const char *tenant)
{
    pthread_mutex_lock(&s->mu);
    if (tenant == NULL || tenant[0] == '\0' || s->n_trig == TRIGGERS_MAX ||
        strlen(tenant) >= CFR_RPC_TENANT_MAX) {
        s->trig_all = true;
    } else {
        bool have = false;
        for (size_t i = 0; i < s->n_trig && !have; i++) {
            have = strcmp(s->trig[i], tenant) == 0;
        }
        if (!have) {
            copy_str(s->trig[s->n_trig++], CFR_RPC_TENANT_MAX, tenant);
        }
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void
vault_sync_report_bad(struct vault_sync *s, const char *tenant,
                      const uint8_t id[VAULT_ID_LEN])
{
    if (s == NULL || tenant == NULL || strlen(tenant) >= CFR_RPC_TENANT_MAX) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    bool have = false;
    for (size_t i = 0; i < s->rq_n && !have; i++) {
        const struct repair_item *it =
            &s->rq[(s->rq_head + i) % REPAIR_QUEUE_MAX];
        have = memcmp(it->id, id, VAULT_ID_LEN) == 0 &&
               strcmp(it->tenant, tenant) == 0;
    }
    if (!have && s->rq_n == REPAIR_QUEUE_MAX) {
        s->rq_dropped++;
        uint64_t dropped = s->rq_dropped;
        pthread_mutex_unlock(&s->mu);
        cfr_log(CFR_LOG_WARN, "vault.sync.repair_queue_full",
                "tenant=%s dropped=%" PRIu64, tenant, dropped);
        return;
    }
    if (!have) {
        struct repair_item *it =
            &s->rq[(s->rq_head + s->rq_n) % REPAIR_QUEUE_MAX];
        copy_str(it->tenant, sizeof(it->tenant), tenant);
        memcpy(it->id, id, VAULT_ID_LEN);
        s->rq_n++;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- status ------------------------------------------------------------- */

struct newest {
    uint64_t n;
    int64_t newest_ms;
};

static int
newest_fn(void *ctx, const struct vault_snapshot *sn, const uint8_t *header,
          size_t header_len)
{
    struct newest *nw = ctx;
    (void)header;
    (void)header_len;
    nw->n++;
    if (sn->received_ms > nw->newest_ms) {
        nw->newest_ms = sn->received_ms;
    }
    return 0;
}

int
vault_sync_status(struct vault_sync *s, const char *tenant,
                  vault_sync_status_fn *fn, void *ctx, struct cfr_err *err)
{
    int rc;
    struct tenant_list tl;
    struct vault_sync_status st;
    if ((rc = tenants_list(s, tenant, &tl, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < tl.n; i++) {
        const struct tenant_ref *tr = &tl.v[i];
        struct newest nw = {0, 0};
        struct cfr_err e2;
        cfr_err_clear(&e2);
        struct vault_tenant *t =
            vault_store_tenant(s->store, tr->name, false, &e2);
        if (t == NULL && e2.code != CFR_ENOTFOUND) {
            *err = e2;
            rc = e2.code;
            goto out;
        }
        if (t != NULL && (rc = vault_store_snapshots(t, NULL, false, newest_fn,
                                                     &nw, err)) != 0) {
            goto out;
        }
        struct tstat copy;
        memset(&copy, 0, sizeof(copy));
        pthread_mutex_lock(&s->mu);
        for (size_t k = 0; k < s->n_ts; k++) {
            if (strcmp(s->ts[k].name, tr->name) == 0) {
                copy = s->ts[k];
                break;
            }
        }
        pthread_mutex_unlock(&s->mu);

        memset(&st, 0, sizeof(st));
        copy_str(st.tenant, sizeof(st.tenant), tr->name);
        copy_str(st.region, sizeof(st.region), s->region);
        st.snapshots = nw.n;
        st.newest_ms = nw.newest_ms;
        st.repairs = copy.repairs;
        st.last_repair_ms = copy.last_repair_ms;
        st.repair_failures = copy.repair_failures;
        for (size_t j = 0; j < s->n_peers; j++) {
            const struct peer_stat *ps = &copy.peers[j];
            if (!region_allowed(tr, s->peers[j].region)) {
                continue;
            }
            if (ps->last_attempt_ms > st.last_attempt_ms) {
                st.last_attempt_ms = ps->last_attempt_ms;
            }
            if (ps->last_ok_ms > st.last_ok_ms) {
                st.last_ok_ms = ps->last_ok_ms;
            }
            st.snapshots_pulled += ps->snapshots_pulled;
            st.objects_pulled += ps->objects_pulled;
            st.bytes_pulled += ps->bytes_pulled;
            st.tombstones_applied += ps->tombstones_applied;
        }
        if ((rc = fn(ctx, &st)) != 0) {
            goto out;
        }
        for (size_t j = 0; j < s->n_peers; j++) {
            const struct peer_stat *ps = &copy.peers[j];
            if (!region_allowed(tr, s->peers[j].region)) {
                continue;
            }
            memset(&st, 0, sizeof(st));
            copy_str(st.tenant, sizeof(st.tenant), tr->name);
            copy_str(st.peer, sizeof(st.peer), s->peers[j].name);
            copy_str(st.region, sizeof(st.region), s->peers[j].region);
            st.last_attempt_ms = ps->last_attempt_ms;
            st.last_ok_ms = ps->last_ok_ms;
            copy_str(st.last_error, sizeof(st.last_error), ps->last_error);
            st.snapshots_pulled = ps->snapshots_pulled;
            st.objects_pulled = ps->objects_pulled;
            st.bytes_pulled = ps->bytes_pulled;
            st.tombstones_applied = ps->tombstones_applied;
            st.behind = ps->behind;
            if ((rc = fn(ctx, &st)) != 0) {
                goto out;
            }
        }
    }
    rc = 0;
out:
    cfr_free(tl.v);
    return rc;
}
