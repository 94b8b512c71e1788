/*
 * uplink.c - one run's objects to N vaults with a write quorum (uplink.h).
 *
 * Invariants:
 *  1. A vault leaves AGENT_UPLINK_OK at most once (vault_fail) and then
 *     gets no further call; its queue is emptied at that moment, so a dead
 *     or dropped vault never holds memory or blocks the producer.
 *  2. A commit is sent only to OK vaults, after a flush, and only when at
 *     least the quorum of them is OK: every OK vault has then acknowledged
 *     every object queued for it (flushed: queue empty, nothing pending),
 *     and the objects Missing said it had are protected by the lease.
 *  3. Memory: each object is copied once (struct up_obj, refcounted) and
 *     shared by the queues holding it; a queue holds at most queue_bytes
 *     (or one object, whatever its size) and UP_RING objects; a sender has
 *     one packed message in hand and gRPC one in flight.
 *  4. Every call has a deadline (call_timeout_ms, stream_timeout_ms); a
 *     stream can also be cancelled from the producer's thread (drop, free)
 *     through cfr_rpc_call_cancel, under up->mu so the call is never freed
 *     meanwhile (v->call is cleared under the lock before the free).
 *  5. One mutex (up->mu) guards every vault's queue, state and counters;
 *     no RPC is made while holding it.
 *  6. "The quorum is met" (quorum_met) is the count and, with span_regions,
 *     two distinct regions among the OK vaults: every check of the count
 *     goes through it, so a run that can no longer be off-site stops
 *     where one with too few vaults would (invariant 2 covers both), and
 *     a vault is never dropped for slowness if the others would then sit
 *     in one region. Regions are trusted only after the vault's Health
 *     named the configured one, which happens before its lease is opened.
 */
#include "uplink.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "buf.h"               /* struct cfr_buf for responses */
#include "coffer_vault.pb-c.h" /* wire messages */
#include "log.h"               /* cfr_log */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* the blocking client */

#define UP_RING          16384 /* objects queued per vault, at most */
#define UP_MSG_OBJS_MAX  4096  /* objects per PutObjects message (vault) */
#define UP_RESP_MAX      ((size_t)1 << 20)
#define UP_WAIT_SLICE_MS 1000
/* Protobuf bytes around an object (tags, lengths, ID, kind) and around a
 * message (the lease), rounded up. */
#define UP_OBJ_FRAMING 64
#define UP_MSG_FRAMING 64

#define M_HEALTH      "/coffer.v1.Vault/Health"
#define M_OPEN_LEASE  "/coffer.v1.Vault/OpenLease"
#define M_MISSING     "/coffer.v1.Vault/Missing"
#define M_PUT_OBJECTS "/coffer.v1.Vault/PutObjects"
#define M_COMMIT      "/coffer.v1.Vault/Commit"

/* One sealed object, shared by every queue that holds it. */
struct up_obj {
    atomic_uint refs;
    uint8_t id[AGENT_UPLINK_ID_LEN];
    int kind;
    size_t len;
    uint8_t data[];
};

struct up_vault {
    struct agent_uplink *up;
    unsigned idx;
    char target[AGENT_UPLINK_NAME_MAX * 2];
    struct cfr_rpc_client *cli;
    uint8_t lease[AGENT_UPLINK_LEASE_LEN];
    pthread_t thread;
    bool thread_started;
    pthread_cond_t work_cv; /* the sender waits here for work */
    /* Under up->mu: */
    struct up_obj *ring[UP_RING]; /* 128 KiB: the uplink is one calloc */
    size_t head, n, q_bytes;
    size_t pending_n;          /* taken by the sender, not yet acknowledged */
    bool want_room;            /* the producer waits: send what there is */
    int64_t progress_ms;       /* last sign of progress (stall detection) */
    uint64_t queued;           /* objects ever queued */
    struct cfr_rpc_call *call; /* open stream, for cancellation */
    struct agent_uplink_report rep;
};

struct agent_uplink {
    struct agent_uplink_opts opts;
    unsigned quorum;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t room_cv; /* the producer waits here (room, flush) */
    bool stop;              /* under mu */
    bool flush;             /* under mu: cut streams once drained */
    struct up_vault v[AGENT_UPLINK_VAULTS_MAX];
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv (a CLOCK_MONOTONIC condition) for at most ms. */
static void
cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 1) {
        ms = 1;
    }
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    (void)pthread_cond_timedwait(cv, mu, &ts);
}

static int
cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc;
    if (pthread_condattr_init(&a) != 0) {
        return -1;
    }
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(cv, &a);
    }
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

static void
obj_unref(struct up_obj *o)
{
    if (o != NULL && atomic_fetch_sub(&o->refs, 1) == 1) {
        cfr_free(o);
    }
}

const char *
agent_uplink_state_name(int state)
{
    switch (state) {
    case AGENT_UPLINK_OK:
        return "ok";
    case AGENT_UPLINK_LAGGING:
        return "lagging";
    case AGENT_UPLINK_UNREACHABLE:
        return "unreachable";
    case AGENT_UPLINK_REFUSED:
        return "refused";
    default:
        return "unknown";
    }
}

bool
agent_uplink_may_drop(size_t ok, unsigned quorum)
{
    return ok >= 1 && ok - 1 >= quorum;
}

enum agent_uplink_state
agent_uplink_state_for(int status)
{
    switch (status) {
    case CFR_RPC_OK:
        return AGENT_UPLINK_OK;
    case CFR_RPC_UNAVAILABLE:
    case CFR_RPC_DEADLINE_EXCEEDED:
    case CFR_RPC_CANCELLED:
        /* No answer from the vault: the link, not a decision. */
        return AGENT_UPLINK_UNREACHABLE;
    default:
        return AGENT_UPLINK_REFUSED;
    }
}

unsigned
agent_uplink_quorum(unsigned quorum, size_t n)
{
    if (n == 0 || n > AGENT_UPLINK_VAULTS_MAX || quorum > n) {
        return 0;
    }
    return quorum == 0 ? (unsigned)n : quorum;
}

size_t
agent_uplink_regions(const char *const *regions, size_t n, uint32_t mask)
{
    size_t k = 0;
    if (regions == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n && i < 32; i++) {
        bool seen = false;
        if (!(mask & (UINT32_C(1) << i)) || regions[i] == NULL ||
            regions[i][0] == '\0') {
            continue;
        }
        /* At most 8 vaults: quadratic is nothing. */
        for (size_t j = 0; j < i && !seen; j++) {
            seen = (mask & (UINT32_C(1) << j)) && regions[j] != NULL &&
                   strcmp(regions[j], regions[i]) == 0;
        }
        k += !seen;
    }
    return k;
}

bool
agent_uplink_quorum_holds(unsigned quorum, bool span_regions,
                          const char *const *regions, size_t n, uint32_t mask)
{
    size_t count = 0;
    for (size_t i = 0; i < n && i < 32; i++) {
        count += (mask >> i) & 1u;
    }
    return count >= quorum &&
           (!span_regions || agent_uplink_regions(regions, n, mask) >= 2);
}

/* OK vaults; under mu. */
static size_t
ok_count(const struct agent_uplink *up)
{
    size_t k = 0;
    for (size_t i = 0; i < up->n; i++) {
        k += up->v[i].rep.state == AGENT_UPLINK_OK;
    }
    return k;
}

/* Bit i set for each OK vault i; under mu. */
static uint32_t
ok_mask(const struct agent_uplink *up)
{
    uint32_t m = 0;
    for (size_t i = 0; i < up->n; i++) {
        if (up->v[i].rep.state == AGENT_UPLINK_OK) {
            m |= UINT32_C(1) << i;
        }
    }
    return m;
}

/* Whether the vaults in mask meet the quorum (invariant 6). */
static bool
quorum_of(const struct agent_uplink *up, uint32_t mask)
{
    const char *r[AGENT_UPLINK_VAULTS_MAX];
    for (size_t i = 0; i < up->n; i++) {
        r[i] = up->v[i].rep.region;
    }
    return agent_uplink_quorum_holds(up->quorum, up->opts.span_regions, r,
                                     up->n, mask);
}

/* Invariant 6 for the vaults OK now; under mu. */
static bool
quorum_met(const struct agent_uplink *up)
{
    return quorum_of(up, ok_mask(up));
}

/* Appends str to buf (size bytes, NUL-terminated), truncating. */
static void
put_str(char *buf, size_t size, size_t *used, const char *str)
{
    size_t n = strlen(str);
    if (*used + 1 >= size) {
        return;
    }
    if (n > size - 1 - *used) {
        n = size - 1 - *used;
    }
    memcpy(buf + *used, str, n);
    *used += n;
    buf[*used] = '\0';
}

/*
 * "r1 (vault-a, vault-b), r2 (vault-c)" for the vaults in mask, into buf:
 * which regions hold (or acknowledged) what, for a message.
 */
static const char *
describe_regions(const struct agent_uplink *up, uint32_t mask, char *buf,
                 size_t size)
{
    size_t used = 0;
    uint32_t done = 0;

    buf[0] = '\0';
    if (mask == 0) {
        put_str(buf, size, &used, "none");
        return buf;
    }
    for (size_t i = 0; i < up->n; i++) {
        const char *reg = up->v[i].rep.region;
        if (!(mask & (UINT32_C(1) << i)) || (done & (UINT32_C(1) << i))) {
            continue;
        }
        put_str(buf, size, &used, used > 0 ? ", " : "");
        put_str(buf, size, &used, reg[0] != '\0' ? reg : "no region");
        put_str(buf, size, &used, " (");
        for (size_t j = i; j < up->n; j++) {
            if ((mask & (UINT32_C(1) << j)) &&
                strcmp(up->v[j].rep.region, reg) == 0) {
                put_str(buf, size, &used, j > i ? ", " : "");
                put_str(buf, size, &used, up->v[j].rep.name);
                done |= UINT32_C(1) << j;
            }
        }
        put_str(buf, size, &used, ")");
    }
    return buf;
}

static int
quorum_lost(const struct agent_uplink *up, struct cfr_err *err)
{
    char where[AGENT_UPLINK_MSG_MAX];
    if (ok_count(up) < up->quorum) {
        return CFR_ERR(
            err, CFR_EUNAVAIL,
            "uplink: only %zu of %zu vaults left, write quorum is %u",
            ok_count(up), up->n, up->quorum);
    }
    return CFR_ERR(err, CFR_EUNAVAIL,
                   "uplink: the vaults left are all in one region: %s; a "
                   "backup must be acknowledged in at least 2 regions "
                   "(allow_single_region is false)",
                   describe_regions(up, ok_mask(up), where, sizeof(where)));
}

/*
 * Takes v out of the run (invariant 1); under mu. Only the first failure
 * counts: a cancelled stream after a drop must not turn LAGGING into
 * UNREACHABLE.
 */
static void
vault_fail(struct up_vault *v, enum agent_uplink_state state, int status,
           const char *msg)
{
    struct agent_uplink *up = v->up;
    char q1[AGENT_UPLINK_NAME_MAX + 8], q2[AGENT_UPLINK_MSG_MAX + 16];

    /* After stop, failures are our own cancellations, not the vault's. */
    if (v->rep.state != AGENT_UPLINK_OK || state == AGENT_UPLINK_OK ||
        up->stop) {
        return;
    }
    v->rep.state = state;
    v->rep.status = status;
    snprintf(v->rep.message, sizeof(v->rep.message), "%s", msg);
    for (size_t k = 0; k < v->n; k++) {
        obj_unref(v->ring[(v->head + k) % UP_RING]);
    }
    v->head = v->n = v->q_bytes = 0;
    if (v->call != NULL) {
        cfr_rpc_call_cancel(v->call);
    }
    cfr_log(CFR_LOG_WARN, "agent.uplink.vault",
            "vault=%s state=%s status=%s msg=%s",
            cfr_log_quote(v->rep.name, q1, sizeof(q1)),
            agent_uplink_state_name(state), cfr_rpc_status_name(status),
            cfr_log_quote(msg, q2, sizeof(q2)));
    pthread_cond_broadcast(&up->room_cv);
    pthread_cond_signal(&v->work_cv);
}

/* The outcome of a call that failed, from its status and error. */
static void
vault_fail_call(struct up_vault *v, int status, const struct cfr_err *err)
{
    vault_fail(v, agent_uplink_state_for(status), status,
               err->msg[0] != '\0' ? err->msg : cfr_rpc_status_name(status));
}

/* How long to wait for v before looking again; under mu. */
static int64_t
wait_for(const struct agent_uplink *up, const struct up_vault *v, int64_t now)
{
    int64_t left = up->opts.stall_ms - (now - v->progress_ms);
    return left > 0 && left < UP_WAIT_SLICE_MS ? left : UP_WAIT_SLICE_MS;
}

static bool
stalled(const struct agent_uplink *up, const struct up_vault *v, int64_t now)
{
    return now - v->progress_ms >= up->opts.stall_ms;
}

/* Drops v for slowness when the quorum allows it; under mu. */
static bool
maybe_drop(struct agent_uplink *up, struct up_vault *v, int64_t now)
{
    char msg[AGENT_UPLINK_MSG_MAX];
    uint32_t rest = ok_mask(up) & ~(UINT32_C(1) << v->idx);
    if (!stalled(up, v, now) ||
        !agent_uplink_may_drop(ok_count(up), up->quorum) ||
        !quorum_of(up, rest)) {
        return false;
    }
    snprintf(msg, sizeof(msg),
             "dropped: no progress for %lld ms while %zu other vaults meet "
             "the quorum of %u",
             (long long)(now - v->progress_ms), ok_count(up) - 1, up->quorum);
    vault_fail(v, AGENT_UPLINK_LAGGING, CFR_RPC_OK, msg);
    return true;
}

/* ---- fan-out of unary calls -------------------------------------------- */

struct fan_job {
    struct up_vault *v;
    const char *method;
    int64_t timeout_ms;
    uint8_t *req; /* owned */
    size_t req_len;
    pthread_t th;
    struct cfr_buf resp;
    struct cfr_err err;
    int status;
    bool started;
};

static void *
fan_main(void *arg)
{
    struct fan_job *j = arg;
    (void)cfr_rpc_unary(j->v->cli, j->method, j->req, j->req_len, j->timeout_ms,
                        &j->resp, &j->status, &j->err);
    return NULL;
}

/*
 * Runs every job's unary call at once, one thread each (the calls block),
 * and returns when all are done; the caller holds no lock. A job whose
 * thread cannot start runs inline: slower, never wrong.
 */
static void
fan_run(struct fan_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jobs[i].started =
            n > 1 && pthread_create(&jobs[i].th, NULL, fan_main, &jobs[i]) == 0;
        if (!jobs[i].started) {
            (void)fan_main(&jobs[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].started) {
            pthread_join(jobs[i].th, NULL);
        }
    }
}

static void
fan_job_init(struct fan_job *j, struct up_vault *v, const char *method,
             int64_t timeout_ms)
{
    memset(j, 0, sizeof(*j));
    j->v = v;
    j->method = method;
    j->timeout_ms = timeout_ms;
    j->status = CFR_RPC_UNKNOWN;
    cfr_buf_init(&j->resp, UP_RESP_MAX);
    cfr_err_clear(&j->err);
}

static void
fan_job_fini(struct fan_job *j)
{
    cfr_free(j->req);
    cfr_buf_fini(&j->resp);
}

/* Packs msg into the job's owned request. */
static int
fan_job_pack(struct fan_job *j, const ProtobufCMessage *msg,
             struct cfr_err *err)
{
    j->req_len = protobuf_c_message_get_packed_size(msg);
    j->req = cfr_malloc(j->req_len + 1);
    if (j->req == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "uplink: out of memory");
    }
    protobuf_c_message_pack(msg, j->req);
    return 0;
}

/* ---- the sender thread -------------------------------------------------- */

/* One message's worth of scratch, allocated once per sender. */
struct sender_msg {
    Coffer__V1__Object objs[UP_MSG_OBJS_MAX];
    Coffer__V1__Object *ptrs[UP_MSG_OBJS_MAX];
    struct up_obj *batch[UP_MSG_OBJS_MAX];
};

struct sender {
    struct up_vault *v;
    struct cfr_rpc_call *call;
    size_t stream_objs, stream_bytes;
    struct sender_msg *m;
};

/* Ends the open stream and accounts for its acknowledgement; takes mu. */
static void
stream_finish(struct sender *s)
{
    struct up_vault *v = s->v;
    struct agent_uplink *up = v->up;
    struct cfr_buf resp;
    struct cfr_err err;
    Coffer__V1__PutObjectsResponse *r = NULL;
    int status = CFR_RPC_UNKNOWN;
    char msg[AGENT_UPLINK_MSG_MAX];

    cfr_err_clear(&err);
    cfr_buf_init(&resp, UP_RESP_MAX);
    (void)cfr_rpc_cstream_finish(s->call, &resp, &status, &err);
    if (status == CFR_RPC_OK) {
        r = coffer__v1__put_objects_response__unpack(NULL, resp.len, resp.data);
    }
    /* Invariant 4: cleared under the lock, freed outside it. */
    pthread_mutex_lock(&up->mu);
    v->call = NULL;
    pthread_mutex_unlock(&up->mu);
    cfr_rpc_call_free(s->call);
    s->call = NULL;
    pthread_mutex_lock(&up->mu);
    if (status != CFR_RPC_OK) {
        vault_fail_call(v, status, &err);
    } else if (r == NULL ||
               r->stored + r->already_present != (uint64_t)s->stream_objs) {
        /* An acknowledgement that does not cover what was sent is not
         * one: the vault may lack some of it. */
        snprintf(
            msg, sizeof(msg), "PutObjects acknowledged %llu of %zu objects",
            r != NULL ? (unsigned long long)(r->stored + r->already_present)
                      : 0ULL,
            s->stream_objs);
        vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL, msg);
    } else if (v->rep.state == AGENT_UPLINK_OK) {
        v->rep.objects_acked += s->stream_objs;
        v->rep.bytes_acked += s->stream_bytes;
        v->rep.objects_stored += r->stored;
        v->pending_n -= s->stream_objs;
        v->progress_ms = mono_ms();
    }
    s->stream_objs = s->stream_bytes = 0;
    pthread_cond_broadcast(&up->room_cv);
    pthread_mutex_unlock(&up->mu);
    if (r != NULL) {
        coffer__v1__put_objects_response__free_unpacked(r, NULL);
    }
    cfr_buf_fini(&resp);
}

/*
 * Packs batch[0..k) as one PutObjects message, releases the objects (the
 * message holds the bytes now) and sends it, opening a stream first when
 * none is open. Runs without mu; returns false when the vault failed.
 */
static bool
send_batch(struct sender *s, size_t k, size_t bytes)
{
    struct up_vault *v = s->v;
    struct agent_uplink *up = v->up;
    Coffer__V1__PutObjectsRequest req = COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
    struct cfr_err err;
    uint8_t *buf = NULL;
    size_t len;
    bool ok = false;

    cfr_err_clear(&err);
    for (size_t i = 0; i < k; i++) {
        Coffer__V1__Object init = COFFER__V1__OBJECT__INIT;
        s->m->objs[i] = init;
        s->m->objs[i].id.data = s->m->batch[i]->id;
        s->m->objs[i].id.len = AGENT_UPLINK_ID_LEN;
        s->m->objs[i].kind = (Coffer__V1__ObjectKind)s->m->batch[i]->kind;
        s->m->objs[i].data.data = s->m->batch[i]->data;
        s->m->objs[i].data.len = s->m->batch[i]->len;
        s->m->ptrs[i] = &s->m->objs[i];
    }
    req.lease_id.data = v->lease;
    req.lease_id.len = AGENT_UPLINK_LEASE_LEN;
    req.n_objects = k;
    req.objects = s->m->ptrs;
    len = coffer__v1__put_objects_request__get_packed_size(&req);
    buf = cfr_malloc(len + 1);
    if (buf != NULL) {
        coffer__v1__put_objects_request__pack(&req, buf);
    }
    for (size_t i = 0; i < k; i++) {
        obj_unref(s->m->batch[i]);
        s->m->batch[i] = NULL;
    }
    if (buf == NULL) {
        pthread_mutex_lock(&up->mu);
        vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_RESOURCE_EXHAUSTED,
                   "agent out of memory packing PutObjects");
        pthread_mutex_unlock(&up->mu);
        return false;
    }
    if (s->call == NULL) {
        struct cfr_rpc_call *c = NULL;
        if (cfr_rpc_cstream_open(v->cli, M_PUT_OBJECTS,
                                 up->opts.stream_timeout_ms, &c, &err) != 0) {
            pthread_mutex_lock(&up->mu);
            vault_fail_call(v, CFR_RPC_INTERNAL, &err);
            pthread_mutex_unlock(&up->mu);
            goto out;
        }
        pthread_mutex_lock(&up->mu);
        if (v->rep.state != AGENT_UPLINK_OK || up->stop) {
            pthread_mutex_unlock(&up->mu);
            cfr_rpc_call_free(c);
            goto out;
        }
        v->call = s->call = c;
        pthread_mutex_unlock(&up->mu);
    }
    if (cfr_rpc_cstream_send(s->call, buf, len, &err) != 0) {
        /* The vault answered already (or the link died): finish reads
         * why and fails the vault. */
        stream_finish(s);
        pthread_mutex_lock(&up->mu);
        if (v->rep.state == AGENT_UPLINK_OK) {
            vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL,
                       "PutObjects stream ended early");
        }
        pthread_mutex_unlock(&up->mu);
        goto out;
    }
    pthread_mutex_lock(&up->mu);
    v->rep.objects_sent += k;
    v->rep.bytes_sent += bytes;
    s->stream_objs += k;
    s->stream_bytes += bytes;
    ok = v->rep.state == AGENT_UPLINK_OK;
    pthread_mutex_unlock(&up->mu);
out:
    cfr_free(buf);
    return ok;
}

/* Whether the sender has a message to send now; under mu. */
static bool
have_msg(const struct agent_uplink *up, const struct up_vault *v)
{
    return v->n > 0 && (v->q_bytes >= up->opts.msg_bytes ||
                        v->n >= UP_MSG_OBJS_MAX || up->flush || v->want_room);
}

/* Whether the open stream should end now (acknowledged); under mu. */
static bool
must_cut(const struct agent_uplink *up, const struct up_vault *v,
         const struct sender *s)
{
    return s->call != NULL && (s->stream_bytes >= up->opts.stream_bytes ||
                               (up->flush && v->n == 0));
}

static void *
sender_main(void *arg)
{
    struct up_vault *v = arg;
    struct agent_uplink *up = v->up;
    struct sender s;

    memset(&s, 0, sizeof(s));
    s.v = v;
    s.m = cfr_calloc(1, sizeof(*s.m));
    pthread_mutex_lock(&up->mu);
    if (s.m == NULL) {
        vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_RESOURCE_EXHAUSTED,
                   "agent out of memory starting the sender");
        pthread_mutex_unlock(&up->mu);
        return NULL;
    }
    for (;;) {
        size_t k = 0, bytes = 0, wire = UP_MSG_FRAMING;
        while (!up->stop && v->rep.state == AGENT_UPLINK_OK &&
               !have_msg(up, v) && !must_cut(up, v, &s)) {
            pthread_cond_wait(&v->work_cv, &up->mu);
        }
        if (up->stop || v->rep.state != AGENT_UPLINK_OK) {
            break;
        }
        if (must_cut(up, v, &s)) {
            pthread_mutex_unlock(&up->mu);
            stream_finish(&s);
            pthread_mutex_lock(&up->mu);
            continue;
        }
        while (v->n > 0 && k < UP_MSG_OBJS_MAX) {
            struct up_obj *o = v->ring[v->head];
            /* Framing counted too, so a message stays within msg_bytes
             * (one larger object goes alone). */
            if (k > 0 && wire + o->len + UP_OBJ_FRAMING > up->opts.msg_bytes) {
                break;
            }
            s.m->batch[k++] = o;
            bytes += o->len;
            wire += o->len + UP_OBJ_FRAMING;
            v->ring[v->head] = NULL;
            v->head = (v->head + 1) % UP_RING;
            v->n--;
        }
        v->q_bytes -= bytes;
        v->pending_n += k;
        v->progress_ms = mono_ms();
        pthread_cond_broadcast(&up->room_cv);
        pthread_mutex_unlock(&up->mu);
        (void)send_batch(&s, k, bytes);
        pthread_mutex_lock(&up->mu);
    }
    /* Stopped or out of the run: whatever is open dies unacknowledged
     * (cfr_rpc_call_free cancels an unfinished call). */
    v->call = NULL;
    pthread_mutex_unlock(&up->mu);
    cfr_rpc_call_free(s.call);
    cfr_free(s.m);
    return NULL;
}

/* ---- open and free --------------------------------------------------------
 */

/* The same rule as agent/config.c: 1..31 of a-z 0-9 . _ -. */
static bool
region_ok(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n >= AGENT_UPLINK_REGION_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = r[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            return false;
        }
    }
    return true;
}

static int
regions_check(const struct agent_uplink_opts *o, struct cfr_err *err)
{
    const char *r[AGENT_UPLINK_VAULTS_MAX];
    for (size_t i = 0; i < o->n_vaults; i++) {
        r[i] = o->vaults[i].region;
        if (r[i] != NULL && !region_ok(r[i])) {
            return CFR_ERR(err, CFR_EINVAL,
                           "uplink: vault %zu: region \"%.40s\" is not 1 to "
                           "%d of a-z 0-9 . _ -",
                           i + 1, r[i], AGENT_UPLINK_REGION_MAX - 1);
        }
        if (r[i] == NULL && o->span_regions) {
            return CFR_ERR(err, CFR_EINVAL,
                           "uplink: vault %zu has no region: the two-region "
                           "rule needs one for every vault",
                           i + 1);
        }
    }
    if (o->span_regions &&
        agent_uplink_regions(r, o->n_vaults, (UINT32_C(1) << o->n_vaults) - 1) <
            2) {
        return CFR_ERR(err, CFR_EINVAL,
                       "uplink: the two-region rule needs vaults in at least "
                       "2 regions");
    }
    return 0;
}

static int
opts_check(const struct agent_uplink_opts *o, struct cfr_err *err)
{
    if (o == NULL || o->vaults == NULL || o->n_vaults == 0 ||
        o->n_vaults > AGENT_UPLINK_VAULTS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: 1 to %d vaults, not %zu",
                       AGENT_UPLINK_VAULTS_MAX, o != NULL ? o->n_vaults : 0);
    }
    if (agent_uplink_quorum(o->quorum, o->n_vaults) == 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "uplink: write quorum %u is above the %zu vaults",
                       o->quorum, o->n_vaults);
    }
    for (size_t i = 0; i < o->n_vaults; i++) {
        const struct agent_uplink_vault_opts *vo = &o->vaults[i];
        if (vo->target == NULL || vo->ca_pem == NULL || vo->cert_pem == NULL ||
            vo->key_pem == NULL) {
            return CFR_ERR(err, CFR_EINVAL,
                           "uplink: vault %zu needs a target, a CA, a "
                           "certificate and a key",
                           i + 1);
        }
    }
    if (o->stall_ms < 0 || o->call_timeout_ms < 0 || o->stream_timeout_ms < 0) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: negative time limit");
    }
    return regions_check(o, err);
}

/*
 * A printable copy of what a vault said its region is (at most 63 bytes,
 * anything outside ASCII 0x20..0x7e as '?'): it goes into messages and
 * logs, and the vault is not trusted yet.
 */
static void
region_copy(char *out, size_t size, const char *in)
{
    size_t k = 0;
    for (; in != NULL && in[k] != '\0' && k + 1 < size && k < 63; k++) {
        unsigned char ch = (unsigned char)in[k];
        out[k] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[k] = '\0';
}

/*
 * One Health call to each OK vault with a configured region, in parallel,
 * before anything else is sent; a vault naming another region leaves the
 * run REFUSED (invariant 6).
 */
static int
check_regions(struct agent_uplink *up, struct cfr_err *err)
{
    struct fan_job jobs[AGENT_UPLINK_VAULTS_MAX];
    size_t nj = 0;
    int rc = 0;

    for (size_t i = 0; i < up->n; i++) {
        Coffer__V1__HealthRequest req = COFFER__V1__HEALTH_REQUEST__INIT;
        if (up->v[i].rep.state != AGENT_UPLINK_OK ||
            up->v[i].rep.region[0] == '\0') {
            continue;
        }
        fan_job_init(&jobs[nj], &up->v[i], M_HEALTH, up->opts.call_timeout_ms);
        if ((rc = fan_job_pack(&jobs[nj++], &req.base, err)) != 0) {
            goto out;
        }
    }
    fan_run(jobs, nj);
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < nj; i++) {
        struct fan_job *j = &jobs[i];
        Coffer__V1__HealthResponse *r = NULL;
        char said[64], msg[AGENT_UPLINK_MSG_MAX];
        if (j->status != CFR_RPC_OK) {
            vault_fail_call(j->v, j->status, &j->err);
            continue;
        }
        r = coffer__v1__health_response__unpack(NULL, j->resp.len,
                                                j->resp.data);
        if (r == NULL) {
            vault_fail(j->v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL,
                       "Health answered with a malformed message");
            continue;
        }
        if (r->region == NULL || strcmp(r->region, j->v->rep.region) != 0) {
            region_copy(said, sizeof(said), r->region);
            snprintf(msg, sizeof(msg),
                     "vault is in region \"%s\", configured \"%s\": "
                     "refused for this run (a misconfigured vault, or not "
                     "the vault meant)",
                     said, j->v->rep.region);
            vault_fail(j->v, AGENT_UPLINK_REFUSED, CFR_RPC_FAILED_PRECONDITION,
                       msg);
        }
        coffer__v1__health_response__free_unpacked(r, NULL);
    }
    pthread_mutex_unlock(&up->mu);
out:
    for (size_t i = 0; i < nj; i++) {
        fan_job_fini(&jobs[i]);
    }
    return rc;
}

/* Opens the lease on every vault with a client; fails the others. */
static int
open_leases(struct agent_uplink *up, struct cfr_err *err)
{
    struct fan_job jobs[AGENT_UPLINK_VAULTS_MAX];
    size_t nj = 0;
    int rc = 0;

    for (size_t i = 0; i < up->n; i++) {
        Coffer__V1__OpenLeaseRequest req = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
        if (up->v[i].rep.state != AGENT_UPLINK_OK) {
            continue;
        }
        fan_job_init(&jobs[nj], &up->v[i], M_OPEN_LEASE,
                     up->opts.call_timeout_ms);
        req.session_public.data = up->opts.session_public;
        req.session_public.len = AGENT_UPLINK_SESSION_LEN;
        req.ttl_ms = up->opts.lease_ttl_ms;
        if ((rc = fan_job_pack(&jobs[nj++], &req.base, err)) != 0) {
            goto out;
        }
    }
    fan_run(jobs, nj);
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < nj; i++) {
        struct fan_job *j = &jobs[i];
        Coffer__V1__OpenLeaseResponse *r = NULL;
        if (j->status != CFR_RPC_OK) {
            vault_fail_call(j->v, j->status, &j->err);
            continue;
        }
        r = coffer__v1__open_lease_response__unpack(NULL, j->resp.len,
                                                    j->resp.data);
        if (r == NULL || r->lease_id.len != AGENT_UPLINK_LEASE_LEN) {
            vault_fail(j->v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL,
                       "OpenLease answered without a 16-byte lease");
        } else {
            memcpy(j->v->lease, r->lease_id.data, AGENT_UPLINK_LEASE_LEN);
        }
        if (r != NULL) {
            coffer__v1__open_lease_response__free_unpacked(r, NULL);
        }
    }
    pthread_mutex_unlock(&up->mu);
out:
    for (size_t i = 0; i < nj; i++) {
        fan_job_fini(&jobs[i]);
    }
    return rc;
}

int
agent_uplink_open(const struct agent_uplink_opts *opts,
                  struct agent_uplink **up_r, struct cfr_err *err)
{
    struct agent_uplink *up = NULL;
    int rc = 0;
    size_t live;
    bool met;

    *up_r = NULL;
    if ((rc = opts_check(opts, err)) != 0) {
        goto out;
    }
    if ((up = cfr_calloc(1, sizeof(*up))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "uplink: out of memory");
        goto out;
    }
    up->opts = *opts;
    up->opts.vaults = NULL; /* borrowed only during open */
    up->n = opts->n_vaults;
    up->quorum = agent_uplink_quorum(opts->quorum, opts->n_vaults);
    if (up->opts.msg_bytes == 0) {
        up->opts.msg_bytes = (size_t)1 << 20;
    }
    if (up->opts.stream_bytes == 0) {
        up->opts.stream_bytes = (size_t)64 << 20;
    }
    if (up->opts.queue_bytes == 0) {
        up->opts.queue_bytes = (size_t)4 << 20;
    }
    if (up->opts.call_timeout_ms == 0) {
        up->opts.call_timeout_ms = 30000;
    }
    if (up->opts.stream_timeout_ms == 0) {
        up->opts.stream_timeout_ms = 300000;
    }
    if (up->opts.stall_ms == 0) {
        up->opts.stall_ms = 30000;
    }
    pthread_mutex_init(&up->mu, NULL);
    if (cond_init_mono(&up->room_cv) != 0) {
        cfr_free(up);
        up = NULL;
        rc = CFR_ERR(err, CFR_EIO, "uplink: cannot make a condition");
        goto out;
    }
    for (size_t i = 0; i < up->n; i++) {
        /* Before anything can fail: agent_uplink_free destroys them. */
        up->v[i].up = up;
        up->v[i].idx = (unsigned)i;
        if (cond_init_mono(&up->v[i].work_cv) != 0) {
            pthread_cond_init(&up->v[i].work_cv, NULL);
        }
    }
    for (size_t i = 0; i < up->n; i++) {
        struct up_vault *v = &up->v[i];
        const struct agent_uplink_vault_opts *vo = &opts->vaults[i];
        struct cfr_rpc_client_opts co;
        struct cfr_err cerr;

        snprintf(v->target, sizeof(v->target), "%s", vo->target);
        snprintf(v->rep.name, sizeof(v->rep.name), "%s",
                 vo->name != NULL ? vo->name : vo->target);
        snprintf(v->rep.region, sizeof(v->rep.region), "%s",
                 vo->region != NULL ? vo->region : "");
        memset(&co, 0, sizeof(co));
        co.target = vo->target;
        co.target_name = vo->target_name;
        co.ca_pem = vo->ca_pem;
        co.cert_pem = vo->cert_pem;
        co.key_pem = vo->key_pem;
        co.max_msg = UP_RESP_MAX;
        cfr_err_clear(&cerr);
        if (cfr_rpc_client_new(&co, &v->cli, &cerr) != 0) {
            /* Bad credentials are this vault's problem, reported as such. */
            pthread_mutex_lock(&up->mu);
            vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_UNAUTHENTICATED,
                       cerr.msg);
            pthread_mutex_unlock(&up->mu);
        }
    }
    if ((rc = check_regions(up, err)) != 0) {
        goto out;
    }
    pthread_mutex_lock(&up->mu);
    met = quorum_met(up);
    pthread_mutex_unlock(&up->mu);
    /* A run that is lost already opens no lease: nothing is sent. */
    if (met && (rc = open_leases(up, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < up->n; i++) {
        struct up_vault *v = &up->v[i];
        v->progress_ms = mono_ms();
        if (met && v->rep.state == AGENT_UPLINK_OK) {
            v->thread_started =
                pthread_create(&v->thread, NULL, sender_main, v) == 0;
            if (!v->thread_started) {
                pthread_mutex_lock(&up->mu);
                vault_fail(v, AGENT_UPLINK_REFUSED, CFR_RPC_RESOURCE_EXHAUSTED,
                           "agent cannot start a sender thread");
                pthread_mutex_unlock(&up->mu);
            }
        }
    }
    pthread_mutex_lock(&up->mu);
    live = ok_count(up);
    met = quorum_met(up);
    if (!met) {
        rc = quorum_lost(up, err);
    }
    pthread_mutex_unlock(&up->mu);
    cfr_log(met ? CFR_LOG_INFO : CFR_LOG_WARN, "agent.uplink.open",
            "vaults=%zu live=%zu quorum=%u span_regions=%d", up->n, live,
            up->quorum, (int)up->opts.span_regions);
out:
    if (up != NULL && rc != 0 && rc != CFR_EUNAVAIL) {
        agent_uplink_free(up);
        up = NULL;
    }
    *up_r = up;
    return rc;
}

void
agent_uplink_free(struct agent_uplink *up)
{
    if (up == NULL) {
        return;
    }
    pthread_mutex_lock(&up->mu);
    up->stop = true;
    for (size_t i = 0; i < up->n; i++) {
        if (up->v[i].call != NULL) {
            cfr_rpc_call_cancel(up->v[i].call);
        }
        pthread_cond_signal(&up->v[i].work_cv);
    }
    pthread_mutex_unlock(&up->mu);
    for (size_t i = 0; i < up->n; i++) {
        struct up_vault *v = &up->v[i];
        if (v->thread_started) {
            pthread_join(v->thread, NULL);
        }
        for (size_t k = 0; k < v->n; k++) {
            obj_unref(v->ring[(v->head + k) % UP_RING]);
        }
        cfr_rpc_client_free(v->cli);
        pthread_cond_destroy(&v->work_cv);
    }
    pthread_cond_destroy(&up->room_cv);
    pthread_mutex_destroy(&up->mu);
    cfr_free(up);
}

/* ---- Missing ------------------------------------------------------------ */

int
agent_uplink_missing(struct agent_uplink *up, const uint8_t *ids, size_t n,
                     uint8_t *lack_r, struct cfr_err *err)
{
    struct fan_job jobs[AGENT_UPLINK_VAULTS_MAX];
    ProtobufCBinaryData *pid = NULL;
    size_t nj = 0;
    int rc = 0;

    if (up == NULL || (n > 0 && (ids == NULL || lack_r == NULL)) ||
        n > AGENT_UPLINK_IDS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: Missing of %zu IDs (1..%d)", n,
                       AGENT_UPLINK_IDS_MAX);
    }
    if (n > 0) {
        memset(lack_r, 0, n);
    }
    /* A lost run asks nothing: after a failed open the OK vaults may hold
     * no lease. */
    pthread_mutex_lock(&up->mu);
    if (!quorum_met(up)) {
        rc = quorum_lost(up, err);
    }
    pthread_mutex_unlock(&up->mu);
    if (rc != 0) {
        return rc;
    }
    pid = cfr_calloc(n + 1, sizeof(*pid));
    if (pid == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "uplink: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        pid[i].data = (uint8_t *)ids + i * AGENT_UPLINK_ID_LEN;
        pid[i].len = AGENT_UPLINK_ID_LEN;
    }
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->n; i++) {
        Coffer__V1__MissingRequest req = COFFER__V1__MISSING_REQUEST__INIT;
        if (up->v[i].rep.state != AGENT_UPLINK_OK) {
            continue;
        }
        fan_job_init(&jobs[nj], &up->v[i], M_MISSING, up->opts.call_timeout_ms);
        req.n_ids = n;
        req.ids = pid;
        req.lease_id.data = up->v[i].lease;
        req.lease_id.len = AGENT_UPLINK_LEASE_LEN;
        if ((rc = fan_job_pack(&jobs[nj++], &req.base, err)) != 0) {
            pthread_mutex_unlock(&up->mu);
            goto out;
        }
    }
    pthread_mutex_unlock(&up->mu);
    if (n > 0) {
        fan_run(jobs, nj);
    }
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < nj && n > 0; i++) {
        struct fan_job *j = &jobs[i];
        Coffer__V1__MissingResponse *r = NULL;
        bool sane = true;
        if (j->status != CFR_RPC_OK) {
            vault_fail_call(j->v, j->status, &j->err);
            continue;
        }
        r = coffer__v1__missing_response__unpack(NULL, j->resp.len,
                                                 j->resp.data);
        /* Ascending, in range: anything else and this vault's answers
         * cannot be trusted to decide what it lacks. */
        for (size_t k = 0; r != NULL && k < r->n_missing && sane; k++) {
            sane = r->missing[k] < n &&
                   (k == 0 || r->missing[k] > r->missing[k - 1]);
        }
        if (r == NULL || !sane) {
            vault_fail(j->v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL,
                       "Missing answered with a malformed index list");
        } else if (j->v->rep.state == AGENT_UPLINK_OK) {
            for (size_t k = 0; k < r->n_missing; k++) {
                lack_r[r->missing[k]] |= (uint8_t)(1u << j->v->idx);
            }
            j->v->rep.objects_present += n - r->n_missing;
        }
        if (r != NULL) {
            coffer__v1__missing_response__free_unpacked(r, NULL);
        }
    }
    /* A vault that failed here lacks nothing as far as the caller knows:
     * nothing is sent to it any more. */
    for (size_t i = 0; i < nj && n > 0; i++) {
        if (jobs[i].v->rep.state != AGENT_UPLINK_OK) {
            for (size_t k = 0; k < n; k++) {
                lack_r[k] &= (uint8_t) ~(1u << jobs[i].v->idx);
            }
        }
    }
    if (!quorum_met(up)) {
        rc = quorum_lost(up, err);
    }
    pthread_mutex_unlock(&up->mu);
out:
    for (size_t i = 0; i < nj; i++) {
        fan_job_fini(&jobs[i]);
    }
    cfr_free(pid);
    return rc;
}

/* ---- put and flush --------------------------------------------------------
 */

/* Whether v's queue takes len more bytes; under mu. */
static bool
has_room(const struct agent_uplink *up, const struct up_vault *v, size_t len)
{
    return v->n < UP_RING &&
           (v->n == 0 || v->q_bytes + len <= up->opts.queue_bytes);
}

int
agent_uplink_put(struct agent_uplink *up, const uint8_t *id, int kind,
                 const uint8_t *data, size_t len, uint8_t mask,
                 struct cfr_err *err)
{
    struct up_obj *o;
    int rc = 0;

    if (up == NULL || id == NULL || (data == NULL && len > 0) ||
        (kind != AGENT_UPLINK_SEALED && kind != AGENT_UPLINK_REF_PAGE)) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: bad object to put");
    }
    if ((o = cfr_malloc(sizeof(*o) + len + 1)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "uplink: out of memory (%zu bytes)",
                       len);
    }
    atomic_init(&o->refs, 1); /* the producer's, dropped below */
    memcpy(o->id, id, AGENT_UPLINK_ID_LEN);
    o->kind = kind;
    o->len = len;
    if (len > 0) {
        memcpy(o->data, data, len);
    }
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->n; i++) {
        struct up_vault *v = &up->v[i];
        if (!(mask & (1u << i))) {
            continue;
        }
        if (v->rep.state == AGENT_UPLINK_OK && !has_room(up, v, len)) {
            /* The stall clock runs while the producer is blocked on v and
             * v makes no progress (the sender taking a batch resets it). */
            v->progress_ms = mono_ms();
        }
        while (v->rep.state == AGENT_UPLINK_OK && !up->stop && quorum_met(up) &&
               !has_room(up, v, len)) {
            int64_t now = mono_ms();
            if (maybe_drop(up, v, now)) {
                break;
            }
            /* Bounded: the stream deadline fails a vault that never
             * makes room, which ends this loop. */
            v->want_room = true;
            pthread_cond_signal(&v->work_cv);
            cond_wait_ms(&up->room_cv, &up->mu, wait_for(up, v, now));
        }
        v->want_room = false;
        if (v->rep.state != AGENT_UPLINK_OK || up->stop ||
            !has_room(up, v, len)) {
            continue; /* out of the run, or the run is lost */
        }
        if (v->n == 0 && v->pending_n == 0) {
            v->progress_ms = mono_ms(); /* idle until now is no stall */
        }
        atomic_fetch_add(&o->refs, 1);
        v->ring[(v->head + v->n) % UP_RING] = o;
        v->n++;
        v->q_bytes += len;
        v->queued++;
        pthread_cond_signal(&v->work_cv);
    }
    if (!quorum_met(up)) {
        rc = quorum_lost(up, err);
    }
    pthread_mutex_unlock(&up->mu);
    obj_unref(o);
    return rc;
}

int
agent_uplink_flush(struct agent_uplink *up, struct cfr_err *err)
{
    int rc = 0;

    if (up == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: no uplink");
    }
    pthread_mutex_lock(&up->mu);
    up->flush = true;
    for (size_t i = 0; i < up->n; i++) {
        /* A vault idle until now is not stalled: the clock starts here. */
        up->v[i].progress_ms = mono_ms();
        pthread_cond_signal(&up->v[i].work_cv);
    }
    /* Bounded: every pending stream ends by its deadline at the latest. */
    while (quorum_met(up)) {
        int64_t now = mono_ms(), wait = UP_WAIT_SLICE_MS;
        size_t busy = 0;
        for (size_t i = 0; i < up->n; i++) {
            struct up_vault *v = &up->v[i];
            if (v->rep.state != AGENT_UPLINK_OK ||
                (v->n == 0 && v->pending_n == 0)) {
                continue;
            }
            if (maybe_drop(up, v, now)) {
                continue;
            }
            busy++;
            if (wait_for(up, v, now) < wait) {
                wait = wait_for(up, v, now);
            }
        }
        if (busy == 0) {
            break;
        }
        cond_wait_ms(&up->room_cv, &up->mu, wait);
    }
    up->flush = false;
    if (!quorum_met(up)) {
        rc = quorum_lost(up, err);
    }
    pthread_mutex_unlock(&up->mu);
    return rc;
}

/* ---- commit ------------------------------------------------------------- */

int
agent_uplink_commit(struct agent_uplink *up,
                    const struct agent_uplink_commit *c, struct cfr_err *err)
{
    struct fan_job jobs[AGENT_UPLINK_VAULTS_MAX];
    Coffer__V1__TreeRoot root = COFFER__V1__TREE_ROOT__INIT;
    size_t nj = 0, committed = 0;
    uint32_t committed_mask = 0;
    int rc = 0;

    if (up == NULL || c == NULL || c->header == NULL || c->header_len == 0) {
        return CFR_ERR(err, CFR_EINVAL, "uplink: commit without a header");
    }
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->n; i++) {
        up->v[i].rep.committed = false;
    }
    pthread_mutex_unlock(&up->mu);
    /* Invariant 2: nothing is committed anywhere unless the quorum holds
     * every object. */
    if ((rc = agent_uplink_flush(up, err)) != 0) {
        return rc;
    }
    root.id.data = (uint8_t *)c->refs_id;
    root.id.len = AGENT_UPLINK_ID_LEN;
    root.height = c->refs_height;
    root.entries = c->refs_entries;
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < up->n; i++) {
        Coffer__V1__CommitRequest req = COFFER__V1__COMMIT_REQUEST__INIT;
        if (up->v[i].rep.state != AGENT_UPLINK_OK) {
            continue;
        }
        fan_job_init(&jobs[nj], &up->v[i], M_COMMIT, up->opts.call_timeout_ms);
        req.lease_id.data = up->v[i].lease;
        req.lease_id.len = AGENT_UPLINK_LEASE_LEN;
        req.mailbox_id.data = (uint8_t *)c->mailbox_id;
        req.mailbox_id.len = AGENT_UPLINK_ID_LEN;
        req.header_id.data = (uint8_t *)c->header_id;
        req.header_id.len = AGENT_UPLINK_ID_LEN;
        req.header.data = (uint8_t *)c->header;
        req.header.len = c->header_len;
        req.refs = &root;
        req.flags = c->flags;
        req.hold_previous = c->hold_previous;
        if ((rc = fan_job_pack(&jobs[nj++], &req.base, err)) != 0) {
            pthread_mutex_unlock(&up->mu);
            goto out;
        }
    }
    if (!quorum_met(up)) {
        rc = quorum_lost(up, err);
        pthread_mutex_unlock(&up->mu);
        goto out;
    }
    pthread_mutex_unlock(&up->mu);
    fan_run(jobs, nj);
    pthread_mutex_lock(&up->mu);
    for (size_t i = 0; i < nj; i++) {
        struct fan_job *j = &jobs[i];
        Coffer__V1__CommitResponse *r = NULL;
        if (j->status != CFR_RPC_OK) {
            vault_fail_call(j->v, j->status, &j->err);
            continue;
        }
        r = coffer__v1__commit_response__unpack(NULL, j->resp.len,
                                                j->resp.data);
        if (r == NULL || r->snapshot == NULL ||
            r->snapshot->header_id.len != AGENT_UPLINK_ID_LEN ||
            memcmp(r->snapshot->header_id.data, c->header_id,
                   AGENT_UPLINK_ID_LEN) != 0) {
            vault_fail(j->v, AGENT_UPLINK_REFUSED, CFR_RPC_INTERNAL,
                       "Commit answered with another snapshot");
        } else {
            j->v->rep.commits++;
            j->v->rep.committed = true;
            committed++;
            committed_mask |= UINT32_C(1) << j->v->idx;
        }
        if (r != NULL) {
            coffer__v1__commit_response__free_unpacked(r, NULL);
        }
    }
    if (committed < up->quorum) {
        rc = CFR_ERR(err, CFR_EUNAVAIL,
                     "uplink: snapshot committed on %zu of %zu vaults, write "
                     "quorum is %u",
                     committed, up->n, up->quorum);
    } else if (!quorum_of(up, committed_mask)) {
        /* The count alone would pass; the copies are still in one place,
         * which is not what a quorum promises (invariant 6). The vaults
         * that failed here left the run, so the rest of it fails too. */
        char where[AGENT_UPLINK_MSG_MAX];
        rc =
            CFR_ERR(err, CFR_EUNAVAIL,
                    "uplink: snapshot committed on %zu of %zu vaults but "
                    "only in one region: %s; a backup must be acknowledged "
                    "in at least 2 regions (allow_single_region is false)",
                    committed, up->n,
                    describe_regions(up, committed_mask, where, sizeof(where)));
    }
    pthread_mutex_unlock(&up->mu);
    cfr_log(rc == 0 ? CFR_LOG_INFO : CFR_LOG_WARN, "agent.uplink.commit",
            "vaults=%zu committed=%zu quorum=%u", up->n, committed, up->quorum);
out:
    for (size_t i = 0; i < nj; i++) {
        fan_job_fini(&jobs[i]);
    }
    return rc;
}

/* ---- reports ----------------------------------------------------------------
 */

size_t
agent_uplink_count(const struct agent_uplink *up)
{
    return up != NULL ? up->n : 0;
}

size_t
agent_uplink_live(struct agent_uplink *up)
{
    size_t k;
    if (up == NULL) {
        return 0;
    }
    pthread_mutex_lock(&up->mu);
    k = ok_count(up);
    pthread_mutex_unlock(&up->mu);
    return k;
}

void
agent_uplink_report(struct agent_uplink *up, size_t i,
                    struct agent_uplink_report *r)
{
    memset(r, 0, sizeof(*r));
    if (up == NULL || i >= up->n) {
        return;
    }
    pthread_mutex_lock(&up->mu);
    *r = up->v[i].rep;
    r->objects_unacked = up->v[i].queued - up->v[i].rep.objects_acked;
    pthread_mutex_unlock(&up->mu);
}
