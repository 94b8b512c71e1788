/*
 * rpc_server.c - the gRPC server: mutual TLS, authorization, audit, bounded
 * concurrency, handlers on a worker pool, clean shutdown.
 *
 * Threads. A few completion-queue (CQ) threads loop on one GRPC_CQ_NEXT
 * queue and never block: they re-arm requests, identify the peer, answer
 * what can be answered at once (unknown method, overload) and hand accepted
 * calls to a worker queue. Worker threads run authorization and the handler;
 * a handler's recv/send/finish start one batch and sleep on the call's
 * condition variable until a CQ thread reports its completion. Streaming
 * calls are thereby driven one step at a time by the handler itself.
 *
 * A call object (struct cfr_rpc_ctx) goes through:
 *
 *   armed --NEW ok--> on_new --+--> rejected (status batch started)
 *     |                        +--> queued --worker--> serving --> finishing
 *   NEW !ok (shutdown)                                                  |
 *     v                                                                 v
 *   freed <------------ finalize (outstanding reaches 0) <--------------+
 *
 * Invariants:
 *  1. outstanding counts the batches in flight plus holds (on_new while it
 *     runs, the worker while it serves); whoever drops it to 0 finalizes,
 *     and nothing touches the call after that. RECV_CLOSE_ON_SERVER is
 *     started first and completes last, so 0 means the call is over.
 *  2. Only one thread at a time starts batches on a call: the CQ thread in
 *     on_new, then (after the hand-off) the worker alone.
 *  3. A call holds a concurrency slot from acceptance until its final status
 *     batch is started; never more than max_calls slots are held, extra
 *     calls get RESOURCE_EXHAUSTED at once instead of queueing.
 *  4. The final batch always carries SEND_INITIAL_METADATA when it was not
 *     sent before (a status-only batch never reaches the client).
 *  5. live counts every call object, armed requests included; the CQ is
 *     shut down only after the server's shutdown tag arrived and live is 0.
 *  6. Every call that reached the server is audited exactly once.
 *  7. A received message larger than max_msg never reaches a handler (gRPC
 *     checks it, and the copy into a capped buffer checks again).
 *  8. Only a peer whose certificate verified here (cert_verify) and that
 *     carries one coffer identity reaches the authorization hook; the
 *     others are refused UNAUTHENTICATED on the CQ thread, audited as
 *     CFR_RPC_DENIED, without taking a slot.
 *
 * Client certificates. TLS is configured with
 * GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY: the handshake asks
 * for a certificate, accepts none, and lets any certificate through its
 * chain check (gRPC installs an always-yes OpenSSL verify callback), so a
 * missing, foreign, expired or misused certificate still yields a call we
 * can refuse with a reason, audit and count. What TLS still guarantees:
 * a client that sends a certificate must sign the handshake transcript
 * with that certificate's key (CertificateVerify, RFC 8446 4.4.3 and RFC
 * 5246 7.4.8, checked by OpenSSL whatever the verify callback says; gRPC's
 * grpc_security_constants.h: "The client's key certificate pair must be
 * valid for the SSL connection to be established"). So a certificate seen
 * here is possessed by the peer, and verifying it against the client CA
 * (X509_verify_cert, purpose SSL client, current time) for every call is
 * the check TLS used to do, plus expiry taking effect on long-lived
 * connections. One verification costs about 0.5 ms with OpenSSL 3.0
 * (mostly parsing), so the verdict is cached per server, keyed by the
 * exact certificate bytes the peer sent (leaf and chain: the verdict is a
 * function of those, the fixed CA store and the time), for at most
 * CERT_CACHE_TTL_MS and never past the earliest notAfter of the verified
 * chain. A hit costs a hash of those bytes and a compare.
 *
 * Failed handshakes. They never become calls, and gRPC 1.51's C API has no
 * hook for them: the only trace is the log line "Handshaking failed: <error>"
 * at DEBUG from chttp2_server.cc, once per failed connection (the
 * OpenSSL cause, if any, sits in an ERROR line just before it from
 * ssl_transport_security.cc, also on client-side failures). rpc_client.c's
 * process-wide gRPC log function passes every line to
 * cfr_rpc_server_observe_grpc_log, which turns that one into a
 * CFR_RPC_TLS_FAILED record. The error text names the peer
 * (target_address) only when the socket itself failed (closed, reset);
 * for a TLS protocol failure (old version, no shared cipher, not TLS at
 * all) 1.51 logs no address, so the record has none. A line caused by a
 * listener shutting down is not a failure and is dropped.
 */
#include "rpc.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>        /* messages */
#include <grpc/byte_buffer_reader.h> /* reading received messages */
#include <grpc/grpc.h>               /* server, calls, batches */
#include <grpc/grpc_security.h>      /* mTLS credentials, auth context */
#include <grpc/support/alloc.h>      /* gpr_free */
#include <grpc/support/time.h>       /* deadlines */

#include <openssl/bio.h>      /* PEM from memory */
#include <openssl/err.h>      /* ERR_clear_error */
#include <openssl/evp.h>      /* SHA-256 fingerprints */
#include <openssl/pem.h>      /* PEM_read_bio_X509 */
#include <openssl/x509.h>     /* certificates */
#include <openssl/x509_vfy.h> /* X509_STORE, X509_verify_cert */
#include <openssl/x509v3.h>   /* X509_PURPOSE_SSL_CLIENT */

#include "buf.h" /* cfr_hex_encode */
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "rpc_int.h" /* cfr_rpc_server_observe_grpc_log */

#define SERVER_MAX_CALLS_DEFAULT  64
#define SERVER_WORKERS_DEFAULT    4
#define SERVER_CQ_THREADS_DEFAULT 2
#define SERVER_KEEPALIVE_MS       (2 * 3600 * 1000)
#define SERVER_KEEPALIVE_TO_MS    20000
#define SERVER_MIN_PING_MS        10000
#define SERVER_ARMED_PER_METHOD   2
#define SERVER_ARMED_UNKNOWN      2
#define SERVER_THREADS_MAX        256
#define SERVER_DETAIL_MAX         160
#define CERT_CHAIN_MAX            8 /* extra certs taken from a peer */
#define CERT_PEM_MAX              (128 * 1024) /* a peer's chain, as PEM */
#define CERT_CACHE_SLOTS          256
#define CERT_CACHE_KEY_MAX        (16 * 1024) /* larger chains: not cached */
#define CERT_CACHE_TTL_MS         60000

enum tag_kind {
    TK_NEW,
    TK_CLOSE,
    TK_OP,
    TK_SHUTDOWN,
};

struct tag {
    enum tag_kind kind;
    struct cfr_rpc_ctx *ctx;    /* NULL for TK_SHUTDOWN */
    struct cfr_rpc_server *srv; /* set for TK_SHUTDOWN */
};

struct method {
    struct method *next;
    char path[CFR_RPC_METHOD_MAX];
    enum cfr_rpc_kind kind;
    cfr_rpc_handler_fn *handler;
    void *arg;
    void *handle; /* from grpc_server_register_method */
};

struct cfr_rpc_ctx {
    struct cfr_rpc_server *srv;
    struct method *m; /* NULL: armed for unknown methods */
    struct cfr_rpc_ctx *qnext;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *send_bb;
    grpc_call_details details;
    struct tag t_new, t_close, t_op;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int outstanding; /* under mu; invariant 1 */
    bool op_done;    /* under mu: the t_op batch completed */
    bool op_ok;
    bool close_done; /* under mu */
    int cancelled;   /* written by gRPC, read after close_done */

    /* Owned by whichever thread may start batches (invariant 2). */
    bool sent_md;
    bool finished;
    bool final_ok;
    bool slot_held;
    bool eos;
    bool audited;
    enum cfr_rpc_decision decision;
    int final_status;
    char final_detail[SERVER_DETAIL_MAX];
    char path[CFR_RPC_METHOD_MAX];
    char audit_tenant[CFR_RPC_TENANT_MAX]; /* "" = the peer's */
    struct cfr_rpc_peer peer;
    struct cfr_buf msg; /* the request, then each received message */
};

/* One cached verdict on a certificate (leaf and chain PEM as sent). */
struct cert_slot {
    uint64_t hash;
    int64_t until_ms; /* real time; the slot is empty or stale after it */
    size_t leaf_len, chain_len;
    uint8_t *key; /* leaf then chain bytes, CERT_CACHE_KEY_MAX; owned */
    enum cfr_rpc_cert_status status;
    char reason[CFR_RPC_CERT_REASON_MAX];
    char fingerprint[CFR_RPC_FINGERPRINT_LEN + 1];
};

struct cfr_rpc_server {
    grpc_server *server;
    X509_STORE *ca_store; /* the client CA(s); shared read-only by threads */
    pthread_mutex_t cert_mu;
    struct cert_slot *cert_cache; /* CERT_CACHE_SLOTS, under cert_mu */
    atomic_uint_fast64_t tls_failures;
    struct cfr_rpc_server *tls_next; /* in tls_servers, under tls_mu */
    bool tls_listed;                 /* under tls_mu */
    grpc_completion_queue *cq;
    int port;
    struct method *methods;
    cfr_rpc_authz_fn *authz;
    void *authz_ctx;
    cfr_rpc_audit_fn *audit;
    void *audit_ctx;
    size_t max_msg;
    unsigned max_calls, nworkers, ncq;
    pthread_t *cq_thr;
    pthread_t *wk_thr;
    unsigned cq_started, wk_started;
    struct tag t_shutdown;
    atomic_bool stopping;
    bool started, stopped;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    /* Under mu. Two queues: a stream can hold a worker for minutes, so
     * streams may occupy at most stream_workers workers and short unary
     * calls (an agent's existence query) always find one free. */
    struct cfr_rpc_ctx *q_head, *q_tail;   /* streaming calls */
    struct cfr_rpc_ctx *uq_head, *uq_tail; /* unary calls, served first */
    unsigned stream_workers;               /* limit, >= 1 */
    unsigned busy_streams;
    bool workers_quit;
    bool shutdown_seen;
    unsigned active; /* slots held, invariant 3 */
    size_t live;     /* call objects, invariant 5 */
};

/* ---- call objects ------------------------------------------------------ */

static struct cfr_rpc_ctx *
ctx_new(struct cfr_rpc_server *srv, struct method *m)
{
    struct cfr_rpc_ctx *c = cfr_calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->srv = srv;
    c->m = m;
    c->t_new = (struct tag){TK_NEW, c, NULL};
    c->t_close = (struct tag){TK_CLOSE, c, NULL};
    c->t_op = (struct tag){TK_OP, c, NULL};
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    cfr_buf_init(&c->msg, srv->max_msg);
    pthread_mutex_lock(&srv->mu);
    srv->live++;
    pthread_mutex_unlock(&srv->mu);
    return c;
}

static void
ctx_free(struct cfr_rpc_ctx *c)
{
    struct cfr_rpc_server *srv = c->srv;
    CFR_ASSERT(!c->slot_held);
    if (c->call != NULL) {
        grpc_call_unref(c->call);
    }
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
    }
    if (c->recv_bb != NULL) {
        grpc_byte_buffer_destroy(c->recv_bb);
    }
    if (c->send_bb != NULL) {
        grpc_byte_buffer_destroy(c->send_bb);
    }
    cfr_buf_fini(&c->msg);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    cfr_free(c);
    pthread_mutex_lock(&srv->mu);
    srv->live--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void
ctx_audit(struct cfr_rpc_ctx *c, int status, const char *detail)
{
    if (c->audited) {
        return;
    }
    c->audited = true;
    struct cfr_rpc_server *srv = c->srv;
    char qm[CFR_RPC_METHOD_MAX + 8], qp[CFR_RPC_NAME_MAX + 8];
    if (srv->audit != NULL) {
        /* The owner's callback records the call (the vault writes
         * vault.audit with the same fields); one line per call is enough. */
        struct cfr_rpc_audit rec = {
            .peer = &c->peer,
            .method = c->path,
            .decision = c->decision,
            .status = status,
            .detail = detail != NULL ? detail : "",
            .tenant = c->audit_tenant[0] != '\0' ? c->audit_tenant : NULL,
        };
        srv->audit(srv->audit_ctx, &rec);
        return;
    }
    cfr_log(CFR_LOG_INFO, "rpc.audit",
            "method=%s peer=%s tenant=%s role=%s addr=%s decision=%d "
            "status=%s cert=%s fingerprint=%s",
            cfr_log_quote(c->path, qm, sizeof(qm)),
            cfr_log_quote(c->peer.uri[0] ? c->peer.uri : c->peer.cn, qp,
                          sizeof(qp)),
            c->audit_tenant[0] != '\0' ? c->audit_tenant
            : c->peer.has_identity     ? c->peer.tenant
                                       : "-",
            c->peer.has_identity ? c->peer.role : "-",
            c->peer.addr[0] ? c->peer.addr : "-", (int)c->decision,
            cfr_rpc_status_name(status),
            cfr_rpc_cert_status_name((int)c->peer.cert_status),
            c->peer.fingerprint[0] ? c->peer.fingerprint : "-");
}

/* Runs when the last batch and hold are gone (invariant 1). */
static void
ctx_finalize(struct cfr_rpc_ctx *c)
{
    if (c->call != NULL && !c->audited) {
        bool died = !c->final_ok || c->cancelled;
        ctx_audit(c, died ? CFR_RPC_CANCELLED : c->final_status,
                  died ? "call ended before its status was delivered"
                       : c->final_detail);
    }
    ctx_free(c);
}

static void
ctx_drop(struct cfr_rpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->outstanding;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) {
        ctx_finalize(c);
    }
}

/*
 * Starts a batch counted in outstanding. A refused batch is a bug here and
 * poisons the call (see the notes), so the call is cancelled: its other
 * batches then complete and the object is released normally.
 */
static bool
ctx_start(struct cfr_rpc_ctx *c, const grpc_op *ops, size_t n, struct tag *t)
{
    pthread_mutex_lock(&c->mu);
    c->outstanding++;
    if (t == &c->t_op) {
        c->op_done = false;
    }
    pthread_mutex_unlock(&c->mu);
    grpc_call_error ce = grpc_call_start_batch(c->call, ops, n, t, NULL);
    if (ce == GRPC_CALL_OK) {
        return true;
    }
    cfr_log(CFR_LOG_ERROR, "rpc.server.batch", "method=%s error=%d", c->path,
            (int)ce);
    grpc_call_cancel(c->call, NULL);
    pthread_mutex_lock(&c->mu);
    c->outstanding--; /* a hold exists, so this never reaches 0 */
    pthread_mutex_unlock(&c->mu);
    return false;
}

/* Worker side: starts a t_op batch and sleeps until it completed. */
static bool
ctx_run(struct cfr_rpc_ctx *c, const grpc_op *ops, size_t n)
{
    if (!ctx_start(c, ops, n, &c->t_op)) {
        return false;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->op_done) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    bool ok = c->op_ok;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void
slot_release(struct cfr_rpc_ctx *c)
{
    if (!c->slot_held) {
        return;
    }
    struct cfr_rpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    srv->active--;
    pthread_mutex_unlock(&srv->mu);
    c->slot_held = false;
}

/* Fills the final batch (invariant 4); d must outlive the start call. */
static size_t
final_ops(struct cfr_rpc_ctx *c, grpc_op *ops, int status, grpc_slice *d,
          grpc_byte_buffer *bb)
{
    size_t n = 0;
    memset(ops, 0, 3 * sizeof(*ops));
    if (!c->sent_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_md = true;
    }
    if (bb != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)status;
    ops[n].data.send_status_from_server.status_details = d;
    n++;
    return n;
}

static void
record_final(struct cfr_rpc_ctx *c, int status, const char *msg)
{
    c->finished = true;
    c->final_status = status;
    size_t l = msg != NULL ? strlen(msg) : 0;
    if (l >= sizeof(c->final_detail)) {
        l = sizeof(c->final_detail) - 1;
    }
    if (l > 0) {
        memcpy(c->final_detail, msg, l);
    }
    c->final_detail[l] = '\0';
}

/*
 * CQ side: answers a call at once, without waiting (unknown method,
 * overload). The refusal is audited before the status leaves, so an
 * auditor never sees a refused client before its record.
 */
static void
ctx_reject(struct cfr_rpc_ctx *c, enum cfr_rpc_decision decision, int status,
           const char *msg)
{
    c->decision = decision;
    record_final(c, status, msg);
    ctx_audit(c, status, msg);
    grpc_op ops[3];
    grpc_slice d = grpc_slice_from_copied_string(msg);
    size_t n = final_ops(c, ops, status, &d, NULL);
    c->final_ok = ctx_start(c, ops, n, &c->t_op);
    grpc_slice_unref(d);
}

/* ---- client certificates ------------------------------------------------ */

const char *
cfr_rpc_cert_status_name(int status)
{
    static const char *const names[] = {
        "none",          "ok",        "untrusted", "expired",
        "not-yet-valid", "bad-usage", "invalid",
    };
    if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0])) {
        return "invalid";
    }
    return names[status];
}

/* Certificates never carry a passphrase; never prompt on a terminal. */
static int
pem_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Every certificate of a PEM text into a new store (owned, in *st_r). */
static int
ca_store_new(const char *pem, X509_STORE **st_r, struct cfr_err *err)
{
    int rc = 0;
    X509_STORE *st = NULL;
    BIO *bio = NULL;
    size_t n = 0;
    size_t len = strlen(pem);

    *st_r = NULL;
    if (len > INT_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
        (st = X509_STORE_new()) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc server: out of memory");
        goto out;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, pem_no_passphrase, NULL)) !=
           NULL) {
        int ok = X509_STORE_add_cert(st, x);
        X509_free(x);
        if (ok != 1) {
            rc = CFR_ERR(err, CFR_ECONFIG,
                         "rpc server: client CA certificate refused");
            goto out;
        }
        n++;
    }
    if (n == 0) {
        rc = CFR_ERR(err, CFR_ECONFIG,
                     "rpc server: the client CA PEM holds no certificate");
        goto out;
    }
    *st_r = st;
    st = NULL;
out:
    BIO_free(bio);
    X509_STORE_free(st);
    ERR_clear_error(); /* the PEM reader ends on a "no start line" error */
    return rc;
}

static void
cert_set(struct cfr_rpc_peer *p, enum cfr_rpc_cert_status status,
         const char *reason, int depth)
{
    p->cert_status = status;
    if (depth > 0) {
        snprintf(p->cert_reason, sizeof(p->cert_reason),
                 "%s (issuer, depth %d)", reason, depth);
    } else {
        snprintf(p->cert_reason, sizeof(p->cert_reason), "%s", reason);
    }
}

/* OpenSSL's verdict in our terms. */
static enum cfr_rpc_cert_status
cert_status_of(int x509_error)
{
    switch (x509_error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return CFR_RPC_CERT_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return CFR_RPC_CERT_NOT_YET_VALID;
    case X509_V_ERR_INVALID_PURPOSE:
        return CFR_RPC_CERT_BAD_USAGE;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
        return CFR_RPC_CERT_UNTRUSTED;
    default:
        return CFR_RPC_CERT_INVALID;
    }
}

/* The earliest notAfter of a verified chain, in real-time ms. */
static int64_t
chain_not_after_ms(X509_STORE_CTX *vc)
{
    int64_t min = INT64_MAX;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(vc);
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        struct tm tm;
        const ASN1_TIME *na = X509_get0_notAfter(sk_X509_value(chain, i));
        if (na == NULL || ASN1_TIME_to_tm(na, &tm) != 1) {
            return 0; /* unreadable: do not cache */
        }
        int64_t ms = (int64_t)timegm(&tm) * 1000;
        if (ms < min) {
            min = ms;
        }
    }
    return min;
}

/*
 * Verifies the peer's leaf (PEM, not NUL-terminated) against the client
 * CA, with the rest of the chain it sent as untrusted intermediates, and
 * sets cert_status, cert_reason and fingerprint; *until_ms_r is how long
 * (real time) the verdict may be reused. Any thread: the store is only
 * read, and OpenSSL locks it internally.
 */
static void
cert_verify(X509_STORE *store, const char *leaf_pem, size_t leaf_len,
            const char *chain_pem, size_t chain_len, struct cfr_rpc_peer *p,
            int64_t now_ms, int64_t *until_ms_r)
{
    BIO *bio = NULL;
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    X509_STORE_CTX *vc = NULL;

    *until_ms_r = now_ms + CERT_CACHE_TTL_MS;
    cert_set(p, CFR_RPC_CERT_INVALID, "unreadable certificate", 0);
    if (leaf_len == 0 || leaf_len > CERT_PEM_MAX) {
        goto out;
    }
    if ((bio = BIO_new_mem_buf(leaf_pem, (int)leaf_len)) == NULL) {
        goto out;
    }
    leaf = PEM_read_bio_X509(bio, NULL, pem_no_passphrase, NULL);
    BIO_free(bio);
    bio = NULL;
    if (leaf == NULL) {
        goto out;
    }
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (X509_digest(leaf, EVP_sha256(), md, &md_len) != 1 ||
        md_len * 2 != CFR_RPC_FINGERPRINT_LEN) {
        goto out;
    }
    cfr_hex_encode(md, md_len, p->fingerprint);

    if ((chain = sk_X509_new_null()) == NULL) {
        goto out;
    }
    if (chain_pem != NULL && chain_len > 0 && chain_len <= CERT_PEM_MAX &&
        (bio = BIO_new_mem_buf(chain_pem, (int)chain_len)) != NULL) {
        X509 *x;
        while ((x = PEM_read_bio_X509(bio, NULL, pem_no_passphrase, NULL)) !=
               NULL) {
            if (X509_cmp(x, leaf) == 0 ||
                sk_X509_num(chain) >= CERT_CHAIN_MAX ||
                !sk_X509_push(chain, x)) {
                X509_free(x);
            }
        }
    }
    if ((vc = X509_STORE_CTX_new()) == NULL ||
        X509_STORE_CTX_init(vc, store, leaf, chain) != 1 ||
        X509_STORE_CTX_set_purpose(vc, X509_PURPOSE_SSL_CLIENT) != 1) {
        cert_set(p, CFR_RPC_CERT_INVALID, "cannot set up verification", 0);
        goto out;
    }
    X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(vc), CERT_CHAIN_MAX);
    if (X509_verify_cert(vc) == 1) {
        cert_set(p, CFR_RPC_CERT_OK, "ok", 0);
        int64_t na = chain_not_after_ms(vc);
        if (na < *until_ms_r) {
            *until_ms_r = na;
        }
    } else {
        int e = X509_STORE_CTX_get_error(vc);
        cert_set(p, cert_status_of(e), X509_verify_cert_error_string(e),
                 X509_STORE_CTX_get_error_depth(vc));
    }
out:
    X509_STORE_CTX_free(vc);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    BIO_free(bio);
    ERR_clear_error(); /* per-thread queue: leave nothing for the next user */
}

/* FNV-1a 64 over certificate bytes: a slot index, never a security check
 * (a hit compares every byte). */
static uint64_t
cert_hash(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* cert_verify through the server's cache (see the top of this file). */
static void
cert_check(struct cfr_rpc_server *srv, const char *leaf, size_t leaf_len,
           const char *chain, size_t chain_len, struct cfr_rpc_peer *p)
{
    int64_t now = cfr_clock_now_ms(cfr_clock_system());
    bool cacheable = srv->cert_cache != NULL &&
                     leaf_len <= CERT_CACHE_KEY_MAX &&
                     chain_len <= CERT_CACHE_KEY_MAX - leaf_len;
    uint64_t h =
        cert_hash(cert_hash(UINT64_C(0xcbf29ce484222325), leaf, leaf_len),
                  chain, chain_len);
    struct cert_slot *s =
        cacheable ? &srv->cert_cache[h % CERT_CACHE_SLOTS] : NULL;
    if (s != NULL) {
        bool hit = false;
        pthread_mutex_lock(&srv->cert_mu);
        if (s->until_ms > now && s->hash == h && s->leaf_len == leaf_len &&
            s->chain_len == chain_len && s->key != NULL &&
            memcmp(s->key, leaf, leaf_len) == 0 &&
            (chain_len == 0 ||
             memcmp(s->key + leaf_len, chain, chain_len) == 0)) {
            p->cert_status = s->status;
            memcpy(p->cert_reason, s->reason, sizeof(p->cert_reason));
            memcpy(p->fingerprint, s->fingerprint, sizeof(p->fingerprint));
            hit = true;
        }
        pthread_mutex_unlock(&srv->cert_mu);
        if (hit) {
            return;
        }
    }
    int64_t until = 0;
    cert_verify(srv->ca_store, leaf, leaf_len, chain, chain_len, p, now,
                &until);
    if (s == NULL || until <= now) {
        return;
    }
    pthread_mutex_lock(&srv->cert_mu);
    if (s->key == NULL) {
        s->key = cfr_malloc(CERT_CACHE_KEY_MAX);
    }
    if (s->key != NULL) {
        memcpy(s->key, leaf, leaf_len);
        if (chain_len > 0) {
            memcpy(s->key + leaf_len, chain, chain_len);
        }
        s->hash = h;
        s->leaf_len = leaf_len;
        s->chain_len = chain_len;
        s->until_ms = until;
        s->status = p->cert_status;
        memcpy(s->reason, p->cert_reason, sizeof(s->reason));
        memcpy(s->fingerprint, p->fingerprint, sizeof(s->fingerprint));
    }
    pthread_mutex_unlock(&srv->cert_mu);
}

/* What a refused peer is told (and the audit records); NULL to go on. */
static const char *
peer_refusal(const struct cfr_rpc_peer *p)
{
    switch (p->cert_status) {
    case CFR_RPC_CERT_OK:
        return p->has_identity
                   ? NULL
                   : "client certificate carries no coffer identity";
    case CFR_RPC_CERT_NONE:
        return "no client certificate";
    case CFR_RPC_CERT_UNTRUSTED:
        return "client certificate not issued by a trusted CA";
    case CFR_RPC_CERT_EXPIRED:
        return "client certificate expired";
    case CFR_RPC_CERT_NOT_YET_VALID:
        return "client certificate not yet valid";
    case CFR_RPC_CERT_BAD_USAGE:
        return "client certificate not valid for client authentication";
    default:
        return "client certificate invalid";
    }
}

/* ---- peers -------------------------------------------------------------- */

/* Copies a property value if it fits and holds no NUL; else "". */
static bool
prop_copy(const grpc_auth_property *p, char *out, size_t out_size)
{
    out[0] = '\0';
    if (p->value == NULL || p->value_length >= out_size ||
        memchr(p->value, '\0', p->value_length) != NULL) {
        return false;
    }
    memcpy(out, p->value, p->value_length);
    out[p->value_length] = '\0';
    return true;
}

static const grpc_auth_property *
prop_first(const grpc_auth_context *ac, const char *name)
{
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ac, name);
    return grpc_auth_property_iterator_next(&it);
}

/*
 * Identifies the peer: verifies its certificate (cert_verify), then, only
 * for a good one, takes CN and URIs from gRPC's properties, which describe
 * that same leaf. A certificate with more than one coffer URI is ambiguous
 * and gets no identity.
 */
static void
peer_fill(struct cfr_rpc_ctx *c)
{
    struct cfr_rpc_peer *p = &c->peer;
    memset(p, 0, sizeof(*p));
    cert_set(p, CFR_RPC_CERT_NONE, "no client certificate", 0);
    char *addr = grpc_call_get_peer(c->call);
    if (addr != NULL) {
        size_t l = strlen(addr);
        if (l < sizeof(p->addr)) {
            memcpy(p->addr, addr, l + 1);
        }
        gpr_free(addr);
    }
    grpc_auth_context *ac = grpc_call_auth_context(c->call);
    if (ac == NULL) {
        return;
    }
    const grpc_auth_property *leaf =
        prop_first(ac, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    if (leaf == NULL || leaf->value == NULL || leaf->value_length == 0) {
        goto out;
    }
    const grpc_auth_property *chain =
        prop_first(ac, GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME);
    cert_check(c->srv, leaf->value, leaf->value_length,
               chain != NULL ? chain->value : NULL,
               chain != NULL ? chain->value_length : 0, p);
    p->authenticated = p->cert_status == CFR_RPC_CERT_OK;
    if (!p->authenticated) {
        goto out;
    }
    const grpc_auth_property *prop = prop_first(ac, GRPC_X509_CN_PROPERTY_NAME);
    if (prop != NULL) {
        (void)prop_copy(prop, p->cn, sizeof(p->cn));
    }
    int found = 0;
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(
        ac, GRPC_PEER_URI_PROPERTY_NAME);
    while ((prop = grpc_auth_property_iterator_next(&it)) != NULL) {
        char uri[CFR_RPC_NAME_MAX], t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
        if (!prop_copy(prop, uri, sizeof(uri))) {
            continue;
        }
        if (p->uri[0] == '\0') {
            memcpy(p->uri, uri, sizeof(uri));
        }
        if (cfr_rpc_identity_parse(uri, t, r) == 0) {
            if (found++ == 0) {
                memcpy(p->uri, uri, sizeof(uri));
                memcpy(p->tenant, t, sizeof(t));
                memcpy(p->role, r, sizeof(r));
            }
        }
    }
    p->has_identity = found == 1;
    if (!p->has_identity) {
        p->tenant[0] = '\0';
        p->role[0] = '\0';
    }
out:
    grpc_auth_context_release(ac);
}

/* ---- failed TLS handshakes ---------------------------------------------- */

static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cfr_rpc_server *tls_servers; /* running, under tls_mu */

static void
tls_list(struct cfr_rpc_server *srv, bool add)
{
    pthread_mutex_lock(&tls_mu);
    if (add && !srv->tls_listed) {
        srv->tls_next = tls_servers;
        tls_servers = srv;
        srv->tls_listed = true;
    } else if (!add && srv->tls_listed) {
        struct cfr_rpc_server **pp = &tls_servers;
        while (*pp != srv) {
            pp = &(*pp)->tls_next;
        }
        *pp = srv->tls_next;
        srv->tls_listed = false;
    }
    pthread_mutex_unlock(&tls_mu);
}

/* Copies s[0..n) into out as printable ASCII (at most out_size - 1). */
static void
copy_printable(char *out, size_t out_size, const char *s, size_t n)
{
    size_t i = 0;
    for (; i < n && i + 1 < out_size; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[i] = '\0';
}

/*
 * Reduces gRPC's error text to a short cause in out; false when the line
 * is no failure (a listener shutting down, or an OK status logged on the
 * way out). The peer address, when gRPC put one in, goes to addr.
 */
static bool
tls_cause(const char *e, char *out, size_t out_size, char *addr,
          size_t addr_size)
{
    static const char ssl_tag[] = "SSL routines::";
    static const char addr_tag[] = "target_address:\"";
    const char *hit;

    addr[0] = '\0';
    if (strcmp(e, "OK") == 0 || strstr(e, "Listener stopped serving") != NULL ||
        strstr(e, "Server is shutting down") != NULL) {
        return false;
    }
    if ((hit = strstr(e, addr_tag)) != NULL) {
        hit += sizeof(addr_tag) - 1;
        copy_printable(addr, addr_size, hit, strcspn(hit, "\""));
    }
    if ((hit = strstr(e, ssl_tag)) != NULL) {
        hit += sizeof(ssl_tag) - 1;
        copy_printable(out, out_size, hit, strcspn(hit, "{}\".,"));
        size_t l = strlen(out);
        while (l > 0 && out[l - 1] == ' ') {
            out[--l] = '\0';
        }
    } else if (strstr(e, "timed out") != NULL) {
        snprintf(out, out_size, "handshake timed out");
    } else if (strstr(e, "Socket closed") != NULL ||
               strstr(e, "Connection reset") != NULL ||
               strstr(e, "Broken pipe") != NULL) {
        snprintf(out, out_size, "connection closed during the handshake");
    } else {
        /* Unknown shape: its first words, without gRPC's "CODE:" prefix. */
        const char *colon = strchr(e, ':');
        if (colon != NULL && (size_t)(colon - e) < 20) {
            e = colon + 1;
        }
        copy_printable(out, out_size, e, strcspn(e, "{"));
        size_t l = strlen(out);
        while (l > 0 && out[l - 1] == ' ') {
            out[--l] = '\0';
        }
    }
    if (out[0] == '\0') {
        snprintf(out, out_size, "unknown cause");
    }
    return true;
}

void
cfr_rpc_server_observe_grpc_log(const char *file, const char *message)
{
    static const char prefix[] = "Handshaking failed: ";
    static const char src[] = "chttp2_server.cc";
    if (message == NULL || file == NULL ||
        strncmp(message, prefix, sizeof(prefix) - 1) != 0) {
        return;
    }
    size_t fl = strlen(file);
    if (fl < sizeof(src) - 1 ||
        strcmp(file + fl - (sizeof(src) - 1), src) != 0) {
        return;
    }
    char cause[96], detail[128];
    struct cfr_rpc_peer peer;
    memset(&peer, 0, sizeof(peer));
    peer.cert_status = CFR_RPC_CERT_NONE;
    if (!tls_cause(message + sizeof(prefix) - 1, cause, sizeof(cause),
                   peer.addr, sizeof(peer.addr))) {
        return;
    }
    snprintf(detail, sizeof(detail), "TLS handshake failed: %s", cause);
    struct cfr_rpc_audit rec = {
        .peer = &peer,
        .method = "",
        .decision = CFR_RPC_TLS_FAILED,
        .status = CFR_RPC_UNAVAILABLE,
        .detail = detail,
    };
    char qd[sizeof(detail) + 8];
    cfr_log(CFR_LOG_INFO, "rpc.audit",
            "method=- peer=- tenant=- role=- addr=%s decision=%d status=%s "
            "cert=none fingerprint=- detail=%s",
            peer.addr[0] ? peer.addr : "-", (int)CFR_RPC_TLS_FAILED,
            cfr_rpc_status_name(CFR_RPC_UNAVAILABLE),
            cfr_log_quote(detail, qd, sizeof(qd)));
    /* Under tls_mu so that no server is freed while it hears of this. */
    pthread_mutex_lock(&tls_mu);
    for (struct cfr_rpc_server *srv = tls_servers; srv != NULL;
         srv = srv->tls_next) {
        if (atomic_load(&srv->stopping)) {
            continue;
        }
        atomic_fetch_add(&srv->tls_failures, 1);
        if (srv->audit != NULL) {
            srv->audit(srv->audit_ctx, &rec);
        }
    }
    pthread_mutex_unlock(&tls_mu);
}

uint64_t
cfr_rpc_server_tls_failures(const struct cfr_rpc_server *srv)
{
    return atomic_load(&srv->tls_failures);
}

/* ---- CQ threads --------------------------------------------------------- */

static void
arm(struct cfr_rpc_server *srv, struct method *m)
{
    struct cfr_rpc_ctx *c = ctx_new(srv, m);
    if (c == NULL) {
        cfr_log(CFR_LOG_ERROR, "rpc.server.arm", "error=nomem");
        return;
    }
    grpc_call_error ce;
    if (m != NULL) {
        ce = grpc_server_request_registered_call(
            srv->server, m->handle, &c->call, &c->deadline, &c->md,
            m->kind == CFR_RPC_KIND_CLIENT_STREAM ? NULL : &c->payload, srv->cq,
            srv->cq, &c->t_new);
    } else {
        ce = grpc_server_request_call(srv->server, &c->call, &c->details,
                                      &c->md, srv->cq, srv->cq, &c->t_new);
    }
    if (ce != GRPC_CALL_OK) {
        cfr_log(CFR_LOG_ERROR, "rpc.server.arm", "error=%d", (int)ce);
        ctx_free(c);
    }
}

static void
on_new(struct cfr_rpc_ctx *c)
{
    struct cfr_rpc_server *srv = c->srv;
    c->outstanding = 1; /* on_new's own hold */
    if (c->m != NULL) {
        memcpy(c->path, c->m->path, sizeof(c->path));
    } else {
        size_t l = GRPC_SLICE_LENGTH(c->details.method);
        if (l >= sizeof(c->path)) {
            l = sizeof(c->path) - 1;
        }
        memcpy(c->path, GRPC_SLICE_START_PTR(c->details.method), l);
        c->path[l] = '\0';
    }
    peer_fill(c);

    grpc_op close_op;
    memset(&close_op, 0, sizeof(close_op));
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (!ctx_start(c, &close_op, 1, &c->t_close)) {
        goto out;
    }
    /* Before the method check, so a stranger learns nothing about paths. */
    const char *why = peer_refusal(&c->peer);
    if (why != NULL) {
        ctx_reject(c, CFR_RPC_DENIED, CFR_RPC_UNAUTHENTICATED, why);
        goto out;
    }
    if (c->m == NULL) {
        ctx_reject(c, CFR_RPC_NO_METHOD, CFR_RPC_UNIMPLEMENTED,
                   "unknown method");
        goto out;
    }
    bool queued = false;
    pthread_mutex_lock(&srv->mu);
    if (srv->active < srv->max_calls) {
        srv->active++;
        c->slot_held = true;
        c->outstanding++; /* the worker's hold; only we know c yet */
        struct cfr_rpc_ctx **head = &srv->q_head, **tail = &srv->q_tail;
        if (c->m->kind == CFR_RPC_KIND_UNARY) {
            head = &srv->uq_head;
            tail = &srv->uq_tail;
        }
        if (*tail != NULL) {
            (*tail)->qnext = c;
        } else {
            *head = c;
        }
        *tail = c;
        queued = true;
        pthread_cond_broadcast(&srv->cv);
    }
    pthread_mutex_unlock(&srv->mu);
    if (!queued) {
        ctx_reject(c, CFR_RPC_OVERLOADED, CFR_RPC_RESOURCE_EXHAUSTED,
                   "server busy: too many concurrent calls");
    }
out:
    ctx_drop(c);
}

static void
dispatch(struct tag *t, int ok)
{
    struct cfr_rpc_ctx *c = t->ctx;
    if (t->kind == TK_SHUTDOWN) {
        struct cfr_rpc_server *srv = t->srv;
        pthread_mutex_lock(&srv->mu);
        srv->shutdown_seen = true;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    if (t->kind == TK_NEW) {
        if (!ok) {
            /* The server is shutting down and flushed this request. */
            ctx_free(c);
            return;
        }
        if (!atomic_load(&c->srv->stopping)) {
            arm(c->srv, c->m);
        }
        on_new(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (t->kind == TK_CLOSE) {
        c->close_done = true;
    } else {
        c->op_done = true;
        c->op_ok = ok != 0;
    }
    int left = --c->outstanding;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (left == 0) {
        ctx_finalize(c);
    }
}

static void *
cq_main(void *arg)
{
    struct cfr_rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            dispatch(ev.tag, ev.success);
        }
    }
    return NULL;
}

/* ---- workers ------------------------------------------------------------ */

static int
bb_copy(struct cfr_rpc_ctx *c, grpc_byte_buffer *bb, struct cfr_err *err)
{
    int rc = 0;
    grpc_byte_buffer_reader r;
    cfr_buf_reset(&c->msg);
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        return CFR_ERR(err, CFR_ECORRUPT, "undecodable message");
    }
    if ((rc = cfr_buf_reserve(&c->msg, grpc_byte_buffer_length(bb), err)) !=
        0) {
        goto out;
    }
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        rc = cfr_buf_append(&c->msg, GRPC_SLICE_START_PTR(s),
                            GRPC_SLICE_LENGTH(s), err);
        grpc_slice_unref(s);
        if (rc != 0) {
            goto out;
        }
    }
out:
    grpc_byte_buffer_reader_destroy(&r);
    return rc;
}

static void
serve(struct cfr_rpc_ctx *c)
{
    struct cfr_rpc_server *srv = c->srv;
    int status = CFR_RPC_OK;
    const char *why = NULL;
    if (!c->peer.has_identity) {
        status = CFR_RPC_UNAUTHENTICATED;
        why = "client certificate carries no coffer identity";
    } else {
        int d = srv->authz(srv->authz_ctx, &c->peer, c->path);
        if (d != CFR_RPC_OK) {
            status = d == CFR_RPC_UNAUTHENTICATED ? CFR_RPC_UNAUTHENTICATED
                                                  : CFR_RPC_PERMISSION_DENIED;
            why = "not authorized for this method";
        }
    }
    if (status != CFR_RPC_OK) {
        c->decision = CFR_RPC_DENIED;
        slot_release(c);
        record_final(c, status, why);
        ctx_audit(c, status, why);
        grpc_op ops[3];
        grpc_slice d = grpc_slice_from_copied_string(why);
        size_t n = final_ops(c, ops, status, &d, NULL);
        c->final_ok = ctx_run(c, ops, n);
        grpc_slice_unref(d);
        return;
    }
    c->decision = CFR_RPC_ALLOWED;
    if (c->m->kind != CFR_RPC_KIND_CLIENT_STREAM) {
        struct cfr_err err;
        if (c->payload == NULL) {
            (void)cfr_rpc_ctx_finish(c, CFR_RPC_INVALID_ARGUMENT,
                                     "request message missing", NULL, 0, NULL);
            return;
        }
        if (bb_copy(c, c->payload, &err) != 0) {
            (void)cfr_rpc_ctx_finish(c, CFR_RPC_RESOURCE_EXHAUSTED,
                                     "request too large", NULL, 0, NULL);
            return;
        }
    }
    c->m->handler(c, c->m->arg);
    if (!c->finished) {
        (void)cfr_rpc_ctx_finish(c, CFR_RPC_INTERNAL,
                                 "handler ended without a status", NULL, 0,
                                 NULL);
    }
}

static void *
worker_main(void *arg)
{
    struct cfr_rpc_server *srv = arg;
    for (;;) {
        struct cfr_rpc_ctx *c = NULL;
        bool stream = false;
        pthread_mutex_lock(&srv->mu);
        for (;;) {
            /* Past shutdown the limit is moot: drain whatever is queued. */
            bool stream_ok =
                srv->q_head != NULL &&
                (srv->busy_streams < srv->stream_workers || srv->workers_quit);
            if (srv->uq_head != NULL) {
                c = srv->uq_head;
                srv->uq_head = c->qnext;
                if (srv->uq_head == NULL) {
                    srv->uq_tail = NULL;
                }
                break;
            }
            if (stream_ok) {
                c = srv->q_head;
                srv->q_head = c->qnext;
                if (srv->q_head == NULL) {
                    srv->q_tail = NULL;
                }
                stream = true;
                srv->busy_streams++;
                break;
            }
            if (srv->workers_quit) {
                break;
            }
            pthread_cond_wait(&srv->cv, &srv->mu);
        }
        pthread_mutex_unlock(&srv->mu);
        if (c == NULL) {
            break;
        }
        serve(c);
        if (stream) {
            pthread_mutex_lock(&srv->mu);
            srv->busy_streams--;
            /* A queued stream may have been waiting for this worker. */
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
        }
        slot_release(c);
        ctx_drop(c);
    }
    return NULL;
}

/* ---- handler context ---------------------------------------------------- */

const struct cfr_rpc_peer *
cfr_rpc_ctx_peer(const struct cfr_rpc_ctx *ctx)
{
    return &ctx->peer;
}

const char *
cfr_rpc_ctx_method(const struct cfr_rpc_ctx *ctx)
{
    return ctx->path;
}

int
cfr_rpc_ctx_set_audit_tenant(struct cfr_rpc_ctx *ctx, const char *name)
{
    /* After finish the record may already be written on another thread;
     * the handler thread owns the field only until then. */
    if (ctx->finished) {
        return 0;
    }
    size_t n = name != NULL ? strlen(name) : 0;
    if (n >= sizeof(ctx->audit_tenant)) {
        return CFR_EINVAL;
    }
    memcpy(ctx->audit_tenant, n > 0 ? name : "", n);
    ctx->audit_tenant[n] = '\0';
    return 0;
}

int64_t
cfr_rpc_ctx_remaining_ms(const struct cfr_rpc_ctx *ctx)
{
    if (gpr_time_cmp(ctx->deadline, gpr_inf_future(ctx->deadline.clock_type)) ==
        0) {
        return INT64_MAX;
    }
    gpr_timespec d = gpr_convert_clock_type(ctx->deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return gpr_time_to_millis(left);
}

bool
cfr_rpc_ctx_cancelled(struct cfr_rpc_ctx *ctx)
{
    pthread_mutex_lock(&ctx->mu);
    bool dead = ctx->close_done && ctx->cancelled;
    pthread_mutex_unlock(&ctx->mu);
    return dead || cfr_rpc_ctx_remaining_ms(ctx) < 0;
}

const uint8_t *
cfr_rpc_ctx_request(const struct cfr_rpc_ctx *ctx, size_t *len_r)
{
    *len_r = ctx->msg.len;
    return ctx->msg.data != NULL ? ctx->msg.data : (const uint8_t *)"";
}

int
cfr_rpc_ctx_recv(struct cfr_rpc_ctx *ctx, const uint8_t **msg_r, size_t *len_r,
                 struct cfr_err *err)
{
    int rc = 0;
    *msg_r = NULL;
    *len_r = 0;
    if (ctx->m->kind != CFR_RPC_KIND_CLIENT_STREAM || ctx->finished) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "rpc %s: recv on a finished or "
                     "non-client-streaming call",
                     ctx->path);
        goto out;
    }
    if (ctx->eos) {
        goto out;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &ctx->recv_bb;
    if (!ctx_run(ctx, &op, 1)) {
        rc = CFR_ERR(err, CFR_EUNAVAIL, "rpc %s: call ended while receiving",
                     ctx->path);
        goto out;
    }
    if (ctx->recv_bb == NULL) {
        ctx->eos = true; /* the client half-closed */
        goto out;
    }
    rc = bb_copy(ctx, ctx->recv_bb, err);
    grpc_byte_buffer_destroy(ctx->recv_bb);
    ctx->recv_bb = NULL;
    if (rc != 0) {
        goto out;
    }
    *msg_r = ctx->msg.data;
    *len_r = ctx->msg.len;
    rc = 1;
out:
    return rc;
}

int
cfr_rpc_ctx_send(struct cfr_rpc_ctx *ctx, const void *msg, size_t len,
                 struct cfr_err *err)
{
    int rc = 0;
    if (ctx->m->kind != CFR_RPC_KIND_SERVER_STREAM || ctx->finished) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "rpc %s: send on a finished or "
                     "non-server-streaming call",
                     ctx->path);
        goto out;
    }
    grpc_slice s = grpc_slice_from_copied_buffer(msg, len);
    ctx->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!ctx->sent_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        ctx->sent_md = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = ctx->send_bb;
    bool ok = ctx_run(ctx, ops, n);
    grpc_byte_buffer_destroy(ctx->send_bb);
    ctx->send_bb = NULL;
    if (!ok) {
        rc = CFR_ERR(err, CFR_EUNAVAIL, "rpc %s: call ended while sending",
                     ctx->path);
    }
out:
    return rc;
}

int
cfr_rpc_ctx_finish(struct cfr_rpc_ctx *ctx, int status, const char *msg,
                   const void *resp, size_t resp_len, struct cfr_err *err)
{
    int rc = 0;
    if (ctx->finished) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc %s: finished twice", ctx->path);
        goto out;
    }
    if (status < CFR_RPC_OK || status > CFR_RPC_UNAUTHENTICATED ||
        (status != CFR_RPC_OK && resp != NULL)) {
        status = CFR_RPC_INTERNAL;
        msg = "handler gave an invalid status";
        resp = NULL;
    }
    /* Unary and client-streaming answers always carry one message. */
    bool want_msg =
        status == CFR_RPC_OK &&
        (resp != NULL || ctx->m->kind != CFR_RPC_KIND_SERVER_STREAM);
    if (want_msg) {
        grpc_slice s = grpc_slice_from_copied_buffer(
            resp != NULL ? resp : (const void *)"",
            resp != NULL ? resp_len : 0);
        ctx->send_bb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
    }
    /* The slot goes before the status leaves, so a client that saw this
     * answer can start its next call without meeting its own ghost. */
    slot_release(ctx);
    record_final(ctx, status, msg);
    grpc_op ops[3];
    grpc_slice d = grpc_slice_from_copied_string(msg != NULL ? msg : "");
    size_t n = final_ops(ctx, ops, status, &d, ctx->send_bb);
    ctx->final_ok = ctx_run(ctx, ops, n);
    grpc_slice_unref(d);
    if (ctx->send_bb != NULL) {
        grpc_byte_buffer_destroy(ctx->send_bb);
        ctx->send_bb = NULL;
    }
    if (!ctx->final_ok) {
        rc =
            CFR_ERR(err, CFR_EUNAVAIL,
                    "rpc %s: call ended before its status was sent", ctx->path);
    }
out:
    return rc;
}

/* ---- server lifecycle --------------------------------------------------- */

int
cfr_rpc_server_new(const struct cfr_rpc_server_opts *opts,
                   struct cfr_rpc_server **srv_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_server *srv = NULL;
    grpc_server_credentials *creds = NULL;
    *srv_r = NULL;

    if (opts == NULL || opts->listen_addr == NULL || opts->cert_pem == NULL ||
        opts->key_pem == NULL || opts->client_ca_pem == NULL ||
        opts->authz == NULL) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "rpc server: address, certificate, key, "
                     "client CA and authz hook are required");
        goto out;
    }
    if (opts->max_msg > INT_MAX || opts->workers > SERVER_THREADS_MAX ||
        opts->cq_threads > SERVER_THREADS_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc server: limits out of range");
        goto out;
    }
    srv = cfr_calloc(1, sizeof(*srv));
    if (srv == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc server: out of memory");
        goto out;
    }
    srv->t_shutdown = (struct tag){TK_SHUTDOWN, NULL, srv};
    srv->authz = opts->authz;
    srv->authz_ctx = opts->authz_ctx;
    srv->audit = opts->audit;
    srv->audit_ctx = opts->audit_ctx;
    srv->max_msg = opts->max_msg ? opts->max_msg : CFR_RPC_MSG_MAX_DEFAULT;
    srv->max_calls =
        opts->max_calls ? opts->max_calls : SERVER_MAX_CALLS_DEFAULT;
    srv->nworkers = opts->workers ? opts->workers : SERVER_WORKERS_DEFAULT;
    /* A quarter of the workers (at least one) is kept for unary calls. */
    srv->stream_workers =
        srv->nworkers > 1
            ? srv->nworkers - (srv->nworkers / 4 > 0 ? srv->nworkers / 4 : 1)
            : 1;
    srv->ncq = opts->cq_threads ? opts->cq_threads : SERVER_CQ_THREADS_DEFAULT;
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->tls_failures, 0);
    pthread_mutex_init(&srv->cert_mu, NULL);
    /* Without a cache every call verifies: slower, never wrong. */
    srv->cert_cache = cfr_calloc(CERT_CACHE_SLOTS, sizeof(struct cert_slot));
    pthread_mutex_init(&srv->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cv, &ca);
    pthread_condattr_destroy(&ca);
    srv->cq_thr = cfr_calloc(srv->ncq, sizeof(pthread_t));
    srv->wk_thr = cfr_calloc(srv->nworkers, sizeof(pthread_t));
    if (srv->cq_thr == NULL || srv->wk_thr == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc server: out of memory");
        goto out;
    }

    grpc_arg a[8];
    size_t n = 0;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_ALLOW_REUSEPORT; /* a second server fails */
    a[n++].value.integer = 0;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    a[n++].value.integer = (int)srv->max_msg;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
    a[n++].value.integer = opts->keepalive_time_ms > 0 ? opts->keepalive_time_ms
                                                       : SERVER_KEEPALIVE_MS;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
    a[n++].value.integer = opts->keepalive_timeout_ms > 0
                               ? opts->keepalive_timeout_ms
                               : SERVER_KEEPALIVE_TO_MS;
    /* Agents keep idle connections alive with pings; accept them as often
     * as the configured floor instead of answering too_many_pings. */
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
    a[n++].value.integer = 1;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
    a[n++].value.integer = opts->min_ping_interval_ms > 0
                               ? opts->min_ping_interval_ms
                               : SERVER_MIN_PING_MS;
    grpc_channel_args args = {n, a};
    srv->server = grpc_server_create(&args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    if ((rc = ca_store_new(opts->client_ca_pem, &srv->ca_store, err)) != 0) {
        goto out;
    }
    /* Verification moves to peer_fill (see the top of this file); the CA
     * still goes to gRPC, which names it in the certificate request. */
    grpc_ssl_pem_key_cert_pair pair = {opts->key_pem, opts->cert_pem};
    creds = grpc_ssl_server_credentials_create_ex(
        opts->client_ca_pem, &pair, 1,
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY, NULL);
    if (creds == NULL) {
        rc = CFR_ERR(err, CFR_ECONFIG, "rpc server: bad TLS credentials");
        goto out;
    }
    srv->port =
        grpc_server_add_http2_port(srv->server, opts->listen_addr, creds);
    if (srv->port == 0) {
        rc = CFR_ERR(err, CFR_EIO,
                     "rpc server: cannot listen on %s (in use, bad address "
                     "or bad TLS material)",
                     opts->listen_addr);
        goto out;
    }
    *srv_r = srv;
    srv = NULL;
out:
    if (creds != NULL) {
        grpc_server_credentials_release(creds);
    }
    cfr_rpc_server_free(srv);
    return rc;
}

int
cfr_rpc_server_port(const struct cfr_rpc_server *srv)
{
    return srv->port;
}

int
cfr_rpc_server_add_method(struct cfr_rpc_server *srv, const char *path,
                          enum cfr_rpc_kind kind, cfr_rpc_handler_fn *handler,
                          void *arg, struct cfr_err *err)
{
    int rc = 0;
    struct method *m = NULL;
    if (srv->started || path == NULL || path[0] != '/' || handler == NULL ||
        strlen(path) >= CFR_RPC_METHOD_MAX || kind < CFR_RPC_KIND_UNARY ||
        kind > CFR_RPC_KIND_SERVER_STREAM) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc server: bad method registration");
        goto out;
    }
    for (struct method *o = srv->methods; o != NULL; o = o->next) {
        if (strcmp(o->path, path) == 0) {
            rc = CFR_ERR(err, CFR_EEXIST, "rpc server: %s registered twice",
                         path);
            goto out;
        }
    }
    m = cfr_calloc(1, sizeof(*m));
    if (m == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc server: out of memory");
        goto out;
    }
    memcpy(m->path, path, strlen(path) + 1);
    m->kind = kind;
    m->handler = handler;
    m->arg = arg;
    m->handle = grpc_server_register_method(
        srv->server, m->path, NULL,
        kind == CFR_RPC_KIND_CLIENT_STREAM
            ? GRPC_SRM_PAYLOAD_NONE
            : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
        0);
    if (m->handle == NULL) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc server: gRPC refused method %s",
                     path);
        goto out;
    }
    m->next = srv->methods;
    srv->methods = m;
    m = NULL;
out:
    cfr_free(m);
    return rc;
}

int
cfr_rpc_server_start(struct cfr_rpc_server *srv, struct cfr_err *err)
{
    int rc = 0;
    if (srv->started) {
        return CFR_ERR(err, CFR_EINVAL, "rpc server: already started");
    }
    grpc_server_start(srv->server);
    srv->started = true;
    tls_list(srv, true);
    for (struct method *m = srv->methods; m != NULL; m = m->next) {
        for (int i = 0; i < SERVER_ARMED_PER_METHOD; i++) {
            arm(srv, m);
        }
    }
    for (int i = 0; i < SERVER_ARMED_UNKNOWN; i++) {
        arm(srv, NULL);
    }
    for (; srv->cq_started < srv->ncq; srv->cq_started++) {
        if (pthread_create(&srv->cq_thr[srv->cq_started], NULL, cq_main, srv) !=
            0) {
            rc = CFR_ERR(err, CFR_EIO, "rpc server: cannot start threads");
            goto out;
        }
    }
    for (; srv->wk_started < srv->nworkers; srv->wk_started++) {
        if (pthread_create(&srv->wk_thr[srv->wk_started], NULL, worker_main,
                           srv) != 0) {
            rc = CFR_ERR(err, CFR_EIO, "rpc server: cannot start threads");
            goto out;
        }
    }
    cfr_log(CFR_LOG_INFO, "rpc.server.start",
            "port=%d workers=%u max_calls=%u max_msg=%zu", srv->port,
            srv->nworkers, srv->max_calls, srv->max_msg);
out:
    if (rc != 0) {
        cfr_rpc_server_stop(srv, 0);
    }
    return rc;
}

/* Waits on srv->cv until pred holds or deadline (monotonic ms) passes. */
static bool
wait_shutdown_seen(struct cfr_rpc_server *srv, int64_t grace_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_seen) {
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &until) != 0) {
            break;
        }
    }
    bool seen = srv->shutdown_seen;
    pthread_mutex_unlock(&srv->mu);
    return seen;
}

/* Pumps the queue on this thread when no CQ thread runs (never started). */
static void
pump_until_shutdown(struct cfr_rpc_server *srv)
{
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        bool done = srv->shutdown_seen && srv->live == 0;
        pthread_mutex_unlock(&srv->mu);
        if (done) {
            break;
        }
        grpc_event ev = grpc_completion_queue_next(
            srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            dispatch(ev.tag, ev.success);
        }
    }
}

void
cfr_rpc_server_stop(struct cfr_rpc_server *srv, int64_t grace_ms)
{
    if (srv == NULL || srv->stopped || srv->server == NULL) {
        return;
    }
    srv->stopped = true;
    atomic_store(&srv->stopping, true);
    tls_list(srv, false);
    int64_t t0 = cfr_clock_mono_ms(cfr_clock_system());
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    if (srv->cq_started == 0) {
        grpc_server_cancel_all_calls(srv->server);
        pump_until_shutdown(srv);
    } else {
        if (!wait_shutdown_seen(srv, grace_ms > 0 ? grace_ms : 0)) {
            cfr_log(CFR_LOG_WARN, "rpc.server.cancel",
                    "grace_ms=%lld: cancelling calls still running",
                    (long long)grace_ms);
            grpc_server_cancel_all_calls(srv->server);
        }
        pthread_mutex_lock(&srv->mu);
        while (!srv->shutdown_seen || srv->live > 0) {
            pthread_cond_wait(&srv->cv, &srv->mu);
        }
        pthread_mutex_unlock(&srv->mu);
    }
    grpc_completion_queue_shutdown(srv->cq);
    for (unsigned i = 0; i < srv->cq_started; i++) {
        pthread_join(srv->cq_thr[i], NULL);
    }
    if (srv->cq_started == 0) {
        grpc_event ev;
        do {
            ev = grpc_completion_queue_next(
                srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        } while (ev.type != GRPC_QUEUE_SHUTDOWN);
    }
    pthread_mutex_lock(&srv->mu);
    srv->workers_quit = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    for (unsigned i = 0; i < srv->wk_started; i++) {
        pthread_join(srv->wk_thr[i], NULL);
    }
    cfr_log(CFR_LOG_INFO, "rpc.server.stop", "port=%d took_ms=%lld", srv->port,
            (long long)(cfr_clock_mono_ms(cfr_clock_system()) - t0));
}

void
cfr_rpc_server_free(struct cfr_rpc_server *srv)
{
    if (srv == NULL) {
        return;
    }
    cfr_rpc_server_stop(srv, 0);
    if (srv->server != NULL) {
        grpc_server_destroy(srv->server);
    }
    if (srv->cq != NULL) {
        grpc_completion_queue_destroy(srv->cq);
    }
    while (srv->methods != NULL) {
        struct method *m = srv->methods;
        srv->methods = m->next;
        cfr_free(m);
    }
    tls_list(srv, false); /* a server stopped early was never listed */
    X509_STORE_free(srv->ca_store);
    for (size_t i = 0; srv->cert_cache != NULL && i < CERT_CACHE_SLOTS; i++) {
        cfr_free(srv->cert_cache[i].key);
    }
    cfr_free(srv->cert_cache);
    pthread_mutex_destroy(&srv->cert_mu);
    cfr_free(srv->cq_thr);
    cfr_free(srv->wk_thr);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    cfr_free(srv);
}
