/*
 * fetch.c - the restore side's reads from vaults (fetch.h).
 *
 * Invariants:
 *  1. Every object handed to a callback was asked for in that batch and is
 *     handed over once: a vault that sends an unrequested ID, a wrong-sized
 *     ID or the same ID twice is corrupt, not trusted.
 *  2. Memory does not grow with the batch: one stream message and its
 *     decoded copy at a time (the vault sends a few MiB per message).
 *  3. What one vault lacks or fails to send is asked of the next vault by
 *     rank, for exactly the IDs still outstanding; an error from the
 *     caller's callback (a chunk that does not open) or a vault breaking
 *     invariant 1 stops the batch at once, with that error.
 *  4. Nothing here logs object bytes; IDs are opaque and may be logged.
 *  5. f->mu guards cur, the per-vault failure state and counters, and is
 *     never held across an RPC: a hung vault must not stall the threads
 *     reading from the others.
 *  6. The current vault changes only when the vault that failed is still
 *     current, so N workers whose streams die in one outage make one
 *     switch (the others find the new current vault and go on).
 */
#include "fetch.h"

#include <pthread.h> /* the Health probes, f->mu */
#include <stdio.h>   /* snprintf */
#include <stdlib.h>  /* qsort */
#include <string.h>  /* memcmp, memcpy */
#include <time.h>    /* clock_gettime */

#include "log.h" /* cfr_log */
#include "mem.h" /* cfr_malloc */
#include "rpc.h" /* the client */

#define TIMEOUT_DEFAULT_MS 120000
#define HEALTH_TIMEOUT_MS  10000
#define BACKOFF_DEFAULT_MS 30000
#define BACKOFF_MAX_MS     600000
/* Lacking IDs logged one by one per stream; the rest only counted. */
#define LACK_LOG_MAX 8
/* Health round trips timed per vault (after the one that connects). */
#define RTT_PROBES 3
/* Round trips closer than this plus a fifth count as equal. */
#define RTT_SLACK_US 1000
#define M_HEALTH     "/coffer.v1.Vault/Health"
#define M_LIST       "/coffer.v1.Vault/ListSnapshots"
#define M_GET        "/coffer.v1.Vault/GetObjects"
/* A ListSnapshots answer: ~200 bytes a record plus a header. */
#define LIST_RESP_MAX ((size_t)64 << 20)

struct vault {
    char target[256];
    struct cfr_rpc_client *cli;
    /* set once by restore_fetcher_new */
    bool healthy;
    int health_rc;
    int64_t rtt_us;
    char health_msg[CFR_ERR_MSG_MAX];
    /* under f->mu */
    int64_t retry_at_ms; /* not made current before (monotonic) */
    unsigned streak;     /* failures since its last good call */
    unsigned failures;
    uint64_t objects, bytes, lacked;
    uint64_t damaged; /* objects it served that did not open */
};

struct restore_fetcher {
    struct vault v[RESTORE_FETCH_VAULTS_MAX];
    size_t n;
    size_t rank[RESTORE_FETCH_VAULTS_MAX]; /* config indexes, nearest first */
    int64_t timeout_ms;
    size_t max_msg;
    int64_t backoff_ms;
    pthread_mutex_t mu;
    bool mu_ok;
    size_t cur; /* under mu, as everything below */
    unsigned switches;
    size_t used[RESTORE_FETCH_USED_MAX];
    size_t n_used;
    uint64_t lacked;
    uint64_t damaged;
};

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The lock also guards reads made through const pointers (accessors). */
static void
lock(const struct restore_fetcher *f)
{
    pthread_mutex_lock((pthread_mutex_t *)&f->mu);
}

static void
unlock(const struct restore_fetcher *f)
{
    pthread_mutex_unlock((pthread_mutex_t *)&f->mu);
}

static int
health(struct vault *v, int64_t timeout_ms, struct cfr_err *err)
{
    struct cfr_buf resp;
    int st, rc;
    cfr_buf_init(&resp, 1u << 16);
    rc = cfr_rpc_unary(v->cli, M_HEALTH, "", 0, timeout_ms, &resp, &st, err);
    cfr_buf_fini(&resp);
    return rc;
}

struct probe {
    struct vault *v;
    int64_t timeout_ms;
    pthread_t tid;
    bool started;
};

/*
 * The first Health call pays for the TCP and TLS handshakes (the channel
 * connects lazily); the round trip a fetch will see is the best of the
 * next RTT_PROBES, which is what "nearest" means here (the best, not the
 * mean: scheduling noise only ever adds).
 */
static void *
probe_run(void *arg)
{
    struct probe *p = arg;
    struct vault *v = p->v;
    struct cfr_err e;
    cfr_err_clear(&e);
    /* All of it within one timeout: a vault that answers once and then
     * hangs costs no more than a dead one. */
    int64_t end_us = mono_us() + p->timeout_ms * 1000;
    v->rtt_us = -1;
    v->health_rc = health(v, p->timeout_ms, &e);
    for (int i = 0; i < RTT_PROBES && v->health_rc == 0; i++) {
        int64_t t0 = mono_us(), dt, left_ms = (end_us - t0) / 1000;
        if (left_ms <= 0) {
            break;
        }
        if ((v->health_rc = health(v, left_ms, &e)) == 0) {
            dt = mono_us() - t0;
            v->rtt_us = v->rtt_us < 0 || dt < v->rtt_us ? dt : v->rtt_us;
        }
    }
    if (v->health_rc == 0 && v->rtt_us < 0) {
        v->rtt_us = p->timeout_ms * 1000; /* answered, too slowly to time */
    }
    v->healthy = v->health_rc == 0;
    if (!v->healthy) {
        v->rtt_us = -1;
        snprintf(v->health_msg, sizeof(v->health_msg), "%s", e.msg);
    }
    return NULL;
}

/* x is nearer than y by more than the noise of a measurement. */
static bool
clearly_nearer(const struct vault *x, const struct vault *y)
{
    return y->rtt_us - x->rtt_us > RTT_SLACK_US + y->rtt_us / 5;
}

/* Healthy first, then the clearly nearer, then config order. */
static bool
rank_before(const struct vault *a, size_t ia, const struct vault *b, size_t ib)
{
    if (a->healthy != b->healthy) {
        return a->healthy;
    }
    if (a->healthy && clearly_nearer(a, b)) {
        return true;
    }
    if (a->healthy && clearly_nearer(b, a)) {
        return false;
    }
    return ia < ib;
}

static void
rank_vaults(struct restore_fetcher *f)
{
    /* Insertion sort: at most RESTORE_FETCH_VAULTS_MAX entries. */
    for (size_t i = 0; i < f->n; i++) {
        size_t k = i;
        f->rank[i] = i;
        while (k > 0 && rank_before(&f->v[f->rank[k]], f->rank[k],
                                    &f->v[f->rank[k - 1]], f->rank[k - 1])) {
            size_t t = f->rank[k];
            f->rank[k] = f->rank[k - 1];
            f->rank[k - 1] = t;
            k--;
        }
    }
}

static int64_t
backoff_for(const struct restore_fetcher *f, unsigned streak)
{
    int64_t b = f->backoff_ms;
    for (unsigned i = 1; i < streak && b < BACKOFF_MAX_MS; i++) {
        b *= 2;
    }
    return b < BACKOFF_MAX_MS ? b : BACKOFF_MAX_MS;
}

/* Under mu: the best-ranked vault other than `not` that is not backing
 * off at now, or `not` itself when there is none. */
static size_t
next_current(const struct restore_fetcher *f, size_t not, int64_t now_ms)
{
    for (size_t r = 0; r < f->n; r++) {
        size_t i = f->rank[r];
        if (i != not &&f->v[i].retry_at_ms <= now_ms) {
            return i;
        }
    }
    return not ;
}

/*
 * Vault i failed a call with rc. One outage seen by several threads is
 * one failure (invariant 6): while the vault backs off, further failures
 * only tell the caller to try elsewhere.
 */
static void
vault_failed(struct restore_fetcher *f, size_t i, int rc)
{
    struct vault *v = &f->v[i];
    int64_t now = mono_us() / 1000;
    lock(f);
    if (v->retry_at_ms <= now) {
        int64_t b;
        v->failures++;
        v->streak++;
        b = backoff_for(f, v->streak);
        v->retry_at_ms = now + b;
        cfr_log(CFR_LOG_WARN, "restore.vault_failed",
                "vault=%s code=%s backoff_ms=%lld", v->target,
                cfr_code_name(rc), (long long)b);
    }
    if (f->cur == i) {
        size_t to = next_current(f, i, now);
        if (to != i) {
            f->cur = to;
            f->switches++;
            if (f->n_used < RESTORE_FETCH_USED_MAX) {
                f->used[f->n_used] = to;
            }
            f->n_used++;
            cfr_log(CFR_LOG_WARN, "restore.switch",
                    "from=%s to=%s code=%s switches=%u", v->target,
                    f->v[to].target, cfr_code_name(rc), f->switches);
        }
    }
    unlock(f);
}

/* What vault i delivered; when the call went through (good), its next
 * failure starts a new streak. */
static void
vault_count(struct restore_fetcher *f, size_t i, bool good, uint64_t objects,
            uint64_t bytes, uint64_t lacked)
{
    lock(f);
    if (good) {
        f->v[i].streak = 0;
    }
    f->v[i].objects += objects;
    f->v[i].bytes += bytes;
    f->v[i].lacked += lacked;
    f->lacked += lacked;
    unlock(f);
}

/*
 * Under mu: which vault to ask next in one batch, given those already
 * tried (a bit mask): the current vault, then by rank those not backing
 * off, then (last resort) those that are.
 */
static size_t
pick(const struct restore_fetcher *f, unsigned tried, int64_t now_ms)
{
    if ((tried & (1u << f->cur)) == 0) {
        return f->cur;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r = 0; r < f->n; r++) {
            size_t i = f->rank[r];
            if ((tried & (1u << i)) == 0 &&
                (pass == 1 || f->v[i].retry_at_ms <= now_ms)) {
                return i;
            }
        }
    }
    return f->n;
}

int
restore_fetcher_new(const struct restore_fetch_opts *opts,
                    struct restore_fetcher **f_r, struct cfr_err *err)
{
    struct restore_fetcher *f = NULL;
    char why[CFR_ERR_MSG_MAX] = "";
    size_t used = 0;
    int rc = 0, first_rc = 0;
    bool found = false;

    *f_r = NULL;
    if (opts->n_targets == 0 || opts->n_targets > RESTORE_FETCH_VAULTS_MAX ||
        opts->ca_pem == NULL || opts->cert_pem == NULL ||
        opts->key_pem == NULL) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "fetch: 1..%d vaults and TLS material are needed",
                     RESTORE_FETCH_VAULTS_MAX);
        goto out;
    }
    if ((f = cfr_calloc(1, sizeof(*f))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    f->timeout_ms =
        opts->timeout_ms > 0 ? opts->timeout_ms : TIMEOUT_DEFAULT_MS;
    f->max_msg = opts->max_msg > 0 ? opts->max_msg : RESTORE_FETCH_MSG_MAX;
    f->backoff_ms =
        opts->backoff_ms > 0 ? opts->backoff_ms : BACKOFF_DEFAULT_MS;
    for (size_t i = 0; i < opts->n_targets; i++) {
        struct cfr_rpc_client_opts co;
        struct vault *v = &f->v[i];
        memset(&co, 0, sizeof(co));
        if (snprintf(v->target, sizeof(v->target), "%s", opts->targets[i]) >=
            (int)sizeof(v->target)) {
            rc = CFR_ERR(err, CFR_EINVAL, "fetch: vault address too long");
            goto out;
        }
        co.target = v->target;
        co.target_name = opts->target_name;
        co.ca_pem = opts->ca_pem;
        co.cert_pem = opts->cert_pem;
        co.key_pem = opts->key_pem;
        co.max_msg = f->max_msg;
        if ((rc = cfr_rpc_client_new(&co, &v->cli, err)) != 0) {
            goto out;
        }
        f->n++;
    }
    {
        /* Every vault at once: a dead one costs one timeout, not one
         * each, and the RTTs are measured under the same conditions. */
        struct probe pr[RESTORE_FETCH_VAULTS_MAX];
        int64_t ht = f->timeout_ms < HEALTH_TIMEOUT_MS ? f->timeout_ms
                                                       : HEALTH_TIMEOUT_MS;
        for (size_t i = 0; i < f->n; i++) {
            pr[i].v = &f->v[i];
            pr[i].timeout_ms = ht;
            pr[i].started =
                pthread_create(&pr[i].tid, NULL, probe_run, &pr[i]) == 0;
        }
        for (size_t i = 0; i < f->n; i++) {
            if (pr[i].started) {
                pthread_join(pr[i].tid, NULL);
            } else {
                (void)probe_run(&pr[i]); /* no thread: probe it here */
            }
        }
    }
    rank_vaults(f);
    for (size_t i = 0; i < f->n; i++) {
        const struct vault *v = &f->v[f->rank[i]];
        if (v->healthy) {
            found = found || i == 0;
            cfr_log(CFR_LOG_INFO, "restore.vault_up", "vault=%s rtt_us=%lld%s",
                    v->target, (long long)v->rtt_us,
                    i == 0 ? " current=1" : "");
            continue;
        }
        if (first_rc == 0) {
            first_rc = v->health_rc;
        }
        cfr_log(CFR_LOG_WARN, "restore.vault_down", "vault=%s code=%s",
                v->target, cfr_code_name(v->health_rc));
        if (used < sizeof(why)) {
            int k = snprintf(why + used, sizeof(why) - used, "%s%s",
                             used > 0 ? "; " : "", v->health_msg);
            used += k > 0 ? (size_t)k : 0;
        }
    }
    if (!found) {
        rc = CFR_ERR(err,
                     first_rc == CFR_EDENIED || first_rc == CFR_EAUTH
                         ? first_rc
                         : CFR_EUNAVAIL,
                     "no vault answered: %s", why);
        goto out;
    }
    {
        /* The ones down at the start wait out a back-off like any other
         * failure before they can become current. */
        int64_t now = mono_us() / 1000;
        for (size_t i = 0; i < f->n; i++) {
            if (!f->v[i].healthy) {
                f->v[i].failures = f->v[i].streak = 1;
                f->v[i].retry_at_ms = now + f->backoff_ms;
            }
        }
    }
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: no mutex");
        goto out;
    }
    f->mu_ok = true;
    f->cur = f->rank[0];
    f->used[0] = f->cur;
    f->n_used = 1;
    rc = 0;
    *f_r = f;
    f = NULL;
out:
    restore_fetcher_free(f);
    return rc;
}

void
restore_fetcher_free(struct restore_fetcher *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->n; i++) {
        cfr_rpc_client_free(f->v[i].cli);
    }
    if (f->mu_ok) {
        pthread_mutex_destroy(&f->mu);
    }
    cfr_free(f);
}

const char *
restore_fetcher_current(const struct restore_fetcher *f)
{
    const char *t;
    lock(f);
    t = f->v[f->cur].target;
    unlock(f);
    return t;
}

size_t
restore_fetcher_n_vaults(const struct restore_fetcher *f)
{
    return f->n;
}

int
restore_fetcher_vault_info(const struct restore_fetcher *f, size_t i,
                           struct restore_vault_info *info)
{
    const struct vault *v;
    memset(info, 0, sizeof(*info));
    if (i >= f->n) {
        return CFR_EINVAL;
    }
    v = &f->v[i];
    info->target = v->target;
    info->healthy = v->healthy;
    info->health_code = v->health_rc;
    info->rtt_us = v->rtt_us;
    for (size_t r = 0; r < f->n; r++) {
        if (f->rank[r] == i) {
            info->rank = r;
        }
    }
    lock(f);
    info->current = f->cur == i;
    info->backing_off = v->retry_at_ms > mono_us() / 1000;
    info->failures = v->failures;
    info->objects = v->objects;
    info->bytes = v->bytes;
    info->lacked = v->lacked;
    info->damaged = v->damaged;
    unlock(f);
    return 0;
}

unsigned
restore_fetcher_switches(const struct restore_fetcher *f)
{
    unsigned n;
    lock(f);
    n = f->switches;
    unlock(f);
    return n;
}

size_t
restore_fetcher_vaults_used(const struct restore_fetcher *f, size_t *idx,
                            size_t max)
{
    size_t n;
    lock(f);
    n = f->n_used;
    for (size_t i = 0; i < n && i < max && i < RESTORE_FETCH_USED_MAX; i++) {
        idx[i] = f->used[i];
    }
    unlock(f);
    return n;
}

uint64_t
restore_fetcher_lacked(const struct restore_fetcher *f)
{
    uint64_t n;
    lock(f);
    n = f->lacked;
    unlock(f);
    return n;
}

int
restore_fetcher_list(struct restore_fetcher *f, const uint8_t *mailbox_id,
                     bool with_headers,
                     Coffer__V1__ListSnapshotsResponse **resp_r,
                     struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    struct cfr_buf resp;
    uint8_t *packed = NULL;
    const char *target = "";
    unsigned tried = 0;
    size_t len;
    int st, rc = 0;

    *resp_r = NULL;
    cfr_buf_init(&resp, LIST_RESP_MAX);
    if (mailbox_id != NULL) {
        req.mailbox_id.data = (uint8_t *)mailbox_id;
        req.mailbox_id.len = RESTORE_FETCH_ID_LEN;
    }
    req.with_headers = with_headers;
    len = coffer__v1__list_snapshots_request__get_packed_size(&req);
    if ((packed = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    coffer__v1__list_snapshots_request__pack(&req, packed);
    /* As a fetch: the current vault, then by rank; the first failure's
     * error is the one reported when every vault failed. */
    for (size_t t = 0; t < f->n; t++) {
        struct cfr_err e;
        size_t i;
        lock(f);
        i = pick(f, tried, mono_us() / 1000);
        unlock(f);
        if (i == f->n) {
            break;
        }
        tried |= 1u << i;
        target = f->v[i].target;
        cfr_buf_reset(&resp);
        cfr_err_clear(&e);
        int r = cfr_rpc_unary(f->v[i].cli, M_LIST, packed, len, f->timeout_ms,
                              &resp, &st, &e);
        if (r == 0) {
            vault_count(f, i, true, 0, 0, 0);
            rc = 0;
            break;
        }
        vault_failed(f, i, r);
        if (rc == 0) {
            rc = r;
            if (err != NULL) {
                *err = e;
            }
        }
    }
    if (rc != 0) {
        goto out;
    }
    *resp_r =
        coffer__v1__list_snapshots_response__unpack(NULL, resp.len, resp.data);
    if (*resp_r == NULL) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "vault %s: ListSnapshots answer does not decode", target);
        goto out;
    }
    for (size_t i = 0; i < (*resp_r)->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *r = (*resp_r)->snapshots[i];
        if (r->header_id.len != RESTORE_FETCH_ID_LEN ||
            r->mailbox_id.len != RESTORE_FETCH_ID_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "vault %s: snapshot record with a malformed ID",
                         target);
            protobuf_c_message_free_unpacked(&(*resp_r)->base, NULL);
            *resp_r = NULL;
            goto out;
        }
    }
out:
    cfr_free(packed);
    cfr_buf_fini(&resp);
    return rc;
}

/* ---- GetObjects ------------------------------------------------------- */

/* An ID and its place in the batch, sorted by ID for lookups. */
struct pos {
    uint8_t id[RESTORE_FETCH_ID_LEN];
    size_t at;
};

/* The batch being served. */
struct batch {
    const uint8_t *ids;
    size_t n;
    struct pos *order;
    bool *got;
    size_t n_got;
};

static int
cmp_pos(const void *a, const void *b)
{
    return memcmp(((const struct pos *)a)->id, ((const struct pos *)b)->id,
                  RESTORE_FETCH_ID_LEN);
}

/* Index of id in the batch, or n. Binary search over order. */
static size_t
batch_find(const struct batch *b, const uint8_t *id)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(b->order[mid].id, id, RESTORE_FETCH_ID_LEN);
        if (c == 0) {
            return b->order[mid].at;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return b->n;
}

static char *
hex32(const uint8_t *id, char out[65])
{
    return cfr_hex_encode(id, RESTORE_FETCH_ID_LEN, out);
}

/*
 * One GetObjects stream to vault v for the IDs of b not yet received.
 * *final_r tells an error that ends the batch (the callback's, or a vault
 * breaking the protocol: it is not trusted for the rest either) from a
 * failed or short answer, for which the next vault may do better.
 */
static int
fetch_from(struct restore_fetcher *f, size_t vi, struct batch *b,
           restore_fetch_from_fn *fn, void *ctx, bool *final_r,
           struct cfr_err *err)
{
    struct vault *v = &f->v[vi];
    uint64_t objects = 0, bytes = 0;
    Coffer__V1__GetObjectsRequest req = COFFER__V1__GET_OBJECTS_REQUEST__INIT;
    ProtobufCBinaryData *want = NULL;
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf msg;
    uint8_t *packed = NULL;
    size_t len, k = 0;
    int rc = 0, st;

    cfr_buf_init(&msg, f->max_msg);
    if ((want = cfr_calloc(b->n + 1, sizeof(*want))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        *final_r = true; /* ours, not the vault's: no failover */
        goto out;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (!b->got[i]) {
            want[k].data = (uint8_t *)b->ids + i * RESTORE_FETCH_ID_LEN;
            want[k].len = RESTORE_FETCH_ID_LEN;
            k++;
        }
    }
    req.ids = want;
    req.n_ids = k;
    len = coffer__v1__get_objects_request__get_packed_size(&req);
    if ((packed = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        *final_r = true; /* ours, not the vault's: no failover */
        goto out;
    }
    coffer__v1__get_objects_request__pack(&req, packed);
    if ((rc = cfr_rpc_sstream_open(v->cli, M_GET, packed, len, f->timeout_ms,
                                   &call, err)) != 0) {
        goto out;
    }
    for (;;) {
        Coffer__V1__GetObjectsResponse *r;
        rc = cfr_rpc_sstream_next(call, &msg, &st, err);
        if (rc <= 0) {
            break; /* 0: clean end; < 0: the vault's error */
        }
        r = coffer__v1__get_objects_response__unpack(NULL, msg.len, msg.data);
        if (r == NULL) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "vault %s: GetObjects message does not decode",
                         v->target);
            *final_r = true;
            break;
        }
        for (size_t i = 0; i < r->n_objects && rc >= 0; i++) {
            const Coffer__V1__Object *o = r->objects[i];
            size_t at = o->id.len == RESTORE_FETCH_ID_LEN
                            ? batch_find(b, o->id.data)
                            : b->n;
            if (at == b->n || b->got[at]) {
                char hex[65];
                rc = CFR_ERR(
                    err, CFR_ECORRUPT,
                    "vault %s sent object %s unasked or twice", v->target,
                    o->id.len == RESTORE_FETCH_ID_LEN ? hex32(o->id.data, hex)
                                                      : "(malformed ID)");
                *final_r = true;
                break;
            }
            b->got[at] = true;
            b->n_got++;
            objects++;
            bytes += o->data.len;
            if ((rc = fn(ctx, vi, o->id.data, (int)o->kind, o->data.data,
                         o->data.len, err)) != 0) {
                *final_r = true;
            }
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (rc < 0) {
            break;
        }
    }
    if (rc == 0 && !*final_r) {
        /* A clean end: what is still outstanding, this vault lacks. */
        uint64_t lacked = k - objects;
        size_t logged = 0;
        for (size_t i = 0; i < k && logged < LACK_LOG_MAX && lacked > 0; i++) {
            size_t at = (size_t)(want[i].data - b->ids) / RESTORE_FETCH_ID_LEN;
            if (!b->got[at]) {
                char hex[65];
                hex32(want[i].data, hex);
                hex[16] = '\0';
                cfr_log(CFR_LOG_WARN, "restore.vault_lacks", "vault=%s id=%s",
                        v->target, hex);
                logged++;
            }
        }
        if (lacked > logged) {
            cfr_log(CFR_LOG_WARN, "restore.vault_lacks", "vault=%s more=%llu",
                    v->target, (unsigned long long)(lacked - logged));
        }
        vault_count(f, vi, true, objects, bytes, lacked);
    } else if (objects > 0) {
        vault_count(f, vi, false, objects, bytes, 0);
    }
out:
    cfr_rpc_call_free(call);
    cfr_free(packed);
    cfr_free(want);
    cfr_buf_fini(&msg);
    return rc < 0 ? rc : 0;
}

int
restore_fetcher_get_from(struct restore_fetcher *f, const uint8_t *ids,
                         size_t n, unsigned exclude, restore_fetch_from_fn *fn,
                         void *ctx, struct cfr_err *err)
{
    struct batch b;
    int rc = 0, vault_rc = 0;
    /* Excluded vaults count as tried: pick never returns them. */
    unsigned tried = exclude & ((1u << f->n) - 1);
    struct cfr_err vault_err;

    memset(&b, 0, sizeof(b));
    cfr_err_clear(&vault_err);
    if (n == 0 || n > RESTORE_FETCH_IDS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "fetch: %zu IDs in one batch", n);
    }
    b.ids = ids;
    b.n = n;
    b.order = cfr_calloc(n, sizeof(*b.order));
    b.got = cfr_calloc(n, sizeof(*b.got));
    if (b.order == NULL || b.got == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(b.order[i].id, ids + i * RESTORE_FETCH_ID_LEN,
               RESTORE_FETCH_ID_LEN);
        b.order[i].at = i;
    }
    qsort(b.order, n, sizeof(*b.order), cmp_pos);
    for (size_t i = 1; i < n; i++) {
        if (memcmp(b.order[i].id, b.order[i - 1].id, RESTORE_FETCH_ID_LEN) ==
            0) {
            rc = CFR_ERR(err, CFR_EINVAL, "fetch: an ID twice in one batch");
            goto out;
        }
    }
    /* The current vault first, then by rank (pick); a failure moves the
     * current vault for every later batch too (vault_failed). */
    for (size_t t = 0; t < f->n && b.n_got < n; t++) {
        bool final = false;
        struct cfr_err e;
        size_t vi;
        lock(f);
        vi = pick(f, tried, mono_us() / 1000);
        unlock(f);
        if (vi == f->n) {
            break;
        }
        tried |= 1u << vi;
        cfr_err_clear(&e);
        rc = fetch_from(f, vi, &b, fn, ctx, &final, &e);
        if (final) {
            if (err != NULL) {
                *err = e;
            }
            goto out;
        }
        if (rc != 0) {
            vault_failed(f, vi, rc);
            if (vault_rc == 0) {
                vault_rc = rc;
                vault_err = e;
            }
        }
    }
    rc = 0;
    if (b.n_got < n) {
        if (vault_rc != 0) {
            if (err != NULL) {
                *err = vault_err;
            }
            rc = vault_rc;
        } else {
            char hex[65];
            for (size_t i = 0; i < n; i++) {
                if (!b.got[i]) {
                    rc = CFR_ERR(err, CFR_ENOTFOUND,
                                 "object %s: no vault holds it (%zu of %zu "
                                 "missing)",
                                 hex32(ids + i * RESTORE_FETCH_ID_LEN, hex),
                                 n - b.n_got, n);
                    break;
                }
            }
        }
    }
out:
    cfr_free(b.order);
    cfr_free(b.got);
    return rc;
}

/* restore_fetcher_get's callback behind restore_fetcher_get_from's. */
struct plain_cb {
    restore_fetch_fn *fn;
    void *ctx;
};

static int
plain_cb(void *ctx, size_t vault, const uint8_t *id, int kind,
         const uint8_t *data, size_t len, struct cfr_err *err)
{
    const struct plain_cb *p = ctx;
    (void)vault;
    return p->fn(p->ctx, id, kind, data, len, err);
}

int
restore_fetcher_get(struct restore_fetcher *f, const uint8_t *ids, size_t n,
                    restore_fetch_fn *fn, void *ctx, struct cfr_err *err)
{
    struct plain_cb p = {fn, ctx};
    return restore_fetcher_get_from(f, ids, n, 0, plain_cb, &p, err);
}

void
restore_fetcher_damaged(struct restore_fetcher *f, size_t vault,
                        const uint8_t id[32], int code)
{
    char hex[65];
    if (vault >= f->n) {
        return;
    }
    lock(f);
    f->v[vault].damaged++;
    f->damaged++;
    unlock(f);
    /* The ID is opaque (invariant 4); which vault matters to the operator:
     * its copy needs repair (coffer-admin scrub). */
    hex32(id, hex);
    cfr_log(CFR_LOG_WARN, "restore.damaged_copy", "vault=%s id=%.16s code=%s",
            f->v[vault].target, hex, cfr_code_name(code));
}

uint64_t
restore_fetcher_damaged_count(const struct restore_fetcher *f)
{
    uint64_t n;
    lock(f);
    n = f->damaged;
    unlock(f);
    return n;
}

struct one {
    struct cfr_buf *out;
    int kind;
};

static int
one_cb(void *ctx, const uint8_t *id, int kind, const uint8_t *data, size_t len,
       struct cfr_err *err)
{
    struct one *o = ctx;
    (void)id;
    o->kind = kind;
    cfr_buf_reset(o->out);
    return cfr_buf_append(o->out, data, len, err);
}

int
restore_fetcher_get_one(struct restore_fetcher *f, const uint8_t id[32],
                        struct cfr_buf *out, int *kind_r, struct cfr_err *err)
{
    struct one o = {out, 0};
    int rc;
    cfr_buf_reset(out);
    rc = restore_fetcher_get(f, id, 1, one_cb, &o, err);
    if (kind_r != NULL) {
        *kind_r = o.kind;
    }
    return rc;
}
