/*
 * rpc_client.c - the blocking gRPC client (agent, restore, replication),
 * plus what client and server share: gRPC's global init, status names and
 * the coffer identity rule.
 *
 * Each call owns a private GRPC_CQ_PLUCK completion queue and waits for the
 * exact batch it needs, so a call is a plain sequential object and calls on
 * one channel never see each other's events.
 *
 * Invariants:
 *  1. Every call has a deadline; a call never outlives it by more than
 *     gRPC's own cancellation latency.
 *  2. At most one batch of each kind is in flight per call, and at most one
 *     SEND_MESSAGE (flow control: a slow server slows the sender, memory
 *     stays at one message).
 *  3. A sent byte buffer lives until its batch completed; every tag started
 *     is plucked before the call is unreffed and its queue destroyed.
 *  4. A received message larger than the caller's buffer cap is refused
 *     (CFR_ELIMIT), on top of gRPC's max receive size.
 *  5. Every failure returns the gRPC status in *status_r and a message
 *     naming the method and target.
 */
#include "rpc.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <grpc/byte_buffer.h>        /* grpc_raw_byte_buffer_create */
#include <grpc/byte_buffer_reader.h> /* reading received messages */
#include <grpc/grpc.h>               /* channels, calls, batches */
#include <grpc/grpc_security.h>      /* ssl channel credentials */
#include <grpc/support/alloc.h>      /* gpr_free */
#include <grpc/support/log.h>        /* gpr_set_log_function */
#include <grpc/support/time.h>       /* deadlines */

#include "log.h"
#include "mem.h"
#include "rpc_int.h" /* the server's handshake-failure observer */

#define CLIENT_KEEPALIVE_MS_DEFAULT 60000
#define CLIENT_KEEPALIVE_TO_DEFAULT 20000
#define TARGET_MAX                  256

/* ---- shared: global init, status names, identities -------------------- */

static pthread_mutex_t global_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned global_refs;

/* gRPC's own diagnostics (handshake failures name their cause) go to our
 * log under one stable event instead of raw stderr. */
static void
grpc_log_to_cfr(gpr_log_func_args *args)
{
    cfr_rpc_server_observe_grpc_log(args->file, args->message);
    enum cfr_log_level level = CFR_LOG_DEBUG;
    if (args->severity == GPR_LOG_SEVERITY_ERROR) {
        level = CFR_LOG_WARN;
    } else if (args->severity == GPR_LOG_SEVERITY_INFO) {
        level = CFR_LOG_INFO;
    }
    if (!cfr_log_enabled(level)) {
        return;
    }
    char q[512];
    cfr_log(level, "rpc.grpc", "msg=%s at=%s:%d",
            cfr_log_quote(args->message, q, sizeof(q)), args->file, args->line);
}

int
cfr_rpc_global_init(struct cfr_err *err)
{
    (void)err;
    pthread_mutex_lock(&global_mu);
    if (global_refs++ == 0) {
        gpr_set_log_function(grpc_log_to_cfr);
        /* The server learns of failed TLS handshakes only from a DEBUG
         * line (rpc_server.c); grpc_init keeps a verbosity set before it. */
        gpr_set_log_verbosity(GPR_LOG_SEVERITY_DEBUG);
        grpc_init();
    }
    pthread_mutex_unlock(&global_mu);
    return 0;
}

void
cfr_rpc_global_fini(void)
{
    pthread_mutex_lock(&global_mu);
    CFR_ASSERT(global_refs > 0);
    if (--global_refs == 0) {
        grpc_shutdown();
    }
    pthread_mutex_unlock(&global_mu);
}

const char *
cfr_rpc_status_name(int status)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0])) {
        return "UNKNOWN";
    }
    return names[status];
}

int
cfr_rpc_status_code(int status)
{
    switch (status) {
    case CFR_RPC_OK:
        return 0;
    case CFR_RPC_INVALID_ARGUMENT:
    case CFR_RPC_FAILED_PRECONDITION:
    case CFR_RPC_OUT_OF_RANGE:
        return CFR_EINVAL;
    case CFR_RPC_CANCELLED:
    case CFR_RPC_DEADLINE_EXCEEDED:
    case CFR_RPC_ABORTED:
    case CFR_RPC_UNAVAILABLE:
        return CFR_EUNAVAIL;
    case CFR_RPC_NOT_FOUND:
        return CFR_ENOTFOUND;
    case CFR_RPC_ALREADY_EXISTS:
        return CFR_EEXIST;
    case CFR_RPC_PERMISSION_DENIED:
        return CFR_EDENIED;
    case CFR_RPC_UNAUTHENTICATED:
        return CFR_EAUTH;
    case CFR_RPC_RESOURCE_EXHAUSTED:
        return CFR_ELIMIT;
    case CFR_RPC_DATA_LOSS:
        return CFR_ECORRUPT;
    case CFR_RPC_UNIMPLEMENTED:
        /* The peer does not speak this method: version skew. */
        return CFR_EVERSION;
    default:
        return CFR_EIO;
    }
}

/* Copies one path segment made of [a-z0-9._-] (not starting with . or -)
 * into out; returns its length, or 0 when it is empty, too long or holds
 * anything else. Lower case only, so no two spellings name one tenant. */
static size_t
identity_segment(const char *s, size_t n, char *out, size_t out_size)
{
    if (n == 0 || n >= out_size || s[0] == '.' || s[0] == '-') {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        if (!ok) {
            return 0;
        }
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

int
cfr_rpc_identity_parse(const char *uri, char tenant[CFR_RPC_TENANT_MAX],
                       char role[CFR_RPC_ROLE_MAX])
{
    static const char pre[] = "coffer://tenant/";
    static const char mid[] = "/role/";
    static const struct {
        const char *prefix;
        const char *role;
    } tenantless[] = {{CFR_RPC_OPERATOR_URI, CFR_RPC_ROLE_OPERATOR},
                      {CFR_RPC_VAULT_URI, CFR_RPC_ROLE_VAULT}};
    int rc = CFR_EAUTH;
    tenant[0] = '\0';
    role[0] = '\0';
    for (size_t i = 0;
         uri != NULL && i < sizeof(tenantless) / sizeof(tenantless[0]); i++) {
        size_t pre_len = strlen(tenantless[i].prefix);
        if (strncmp(uri, tenantless[i].prefix, pre_len) == 0) {
            /* Operators and peer vaults act on the vault, never inside one
             * tenant: the empty tenant keeps them out of every tenant-scoped
             * check (a peer vault names the tenant per request, and the
             * vault checks it against its peer list and the placement). */
            char name[CFR_RPC_TENANT_MAX];
            const char *nm = uri + pre_len;
            if (identity_segment(nm, strlen(nm), name, sizeof(name)) != 0) {
                snprintf(role, CFR_RPC_ROLE_MAX, "%s", tenantless[i].role);
                rc = 0;
            }
            goto out;
        }
    }
    if (uri == NULL || strncmp(uri, pre, sizeof(pre) - 1) != 0) {
        goto out;
    }
    const char *t = uri + sizeof(pre) - 1;
    const char *m = strstr(t, mid);
    if (m == NULL) {
        goto out;
    }
    const char *r = m + sizeof(mid) - 1;
    if (identity_segment(t, (size_t)(m - t), tenant, CFR_RPC_TENANT_MAX) == 0 ||
        identity_segment(r, strlen(r), role, CFR_RPC_ROLE_MAX) == 0) {
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        tenant[0] = '\0';
        role[0] = '\0';
    }
    return rc;
}

/* ---- client ------------------------------------------------------------- */

struct cfr_rpc_client {
    grpc_channel *channel;
    char target[TARGET_MAX];
    size_t max_msg;
};

struct cfr_rpc_call {
    struct cfr_rpc_client *cli;
    grpc_completion_queue *cq;
    grpc_call *call;
    char method[CFR_RPC_METHOD_MAX];
    /* Tags are the addresses of these bytes; only identity matters. */
    char t_send, t_recv, t_status;
    bool send_pending;   /* a batch on t_send is in flight */
    bool status_pending; /* the batch with RECV_STATUS_ON_CLIENT */
    bool send_failed;    /* the server answered while we were sending */
    bool md_sent;
    bool done; /* the final status has been collected */
    grpc_byte_buffer *send_bb;
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
};

static int
set_int_arg(grpc_arg *a, const char *key, int value)
{
    a->type = GRPC_ARG_INTEGER;
    a->key = (char *)key;
    a->value.integer = value;
    return 1;
}

int
cfr_rpc_client_new(const struct cfr_rpc_client_opts *opts,
                   struct cfr_rpc_client **cli_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_client *cli = NULL;
    grpc_channel_credentials *creds = NULL;
    *cli_r = NULL;

    if (opts == NULL || opts->target == NULL || opts->ca_pem == NULL ||
        (opts->cert_pem == NULL) != (opts->key_pem == NULL)) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "rpc client: target and CA required, "
                     "certificate and key go together");
        goto out;
    }
    if (strlen(opts->target) >= TARGET_MAX || opts->max_msg > INT_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc client: target or max_msg too big");
        goto out;
    }
    cli = cfr_calloc(1, sizeof(*cli));
    if (cli == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc client: out of memory");
        goto out;
    }
    memcpy(cli->target, opts->target, strlen(opts->target) + 1);
    cli->max_msg = opts->max_msg ? opts->max_msg : CFR_RPC_MSG_MAX_DEFAULT;

    grpc_ssl_pem_key_cert_pair pair = {opts->key_pem, opts->cert_pem};
    creds = grpc_ssl_credentials_create_ex(
        opts->ca_pem, opts->cert_pem != NULL ? &pair : NULL, NULL, NULL);
    if (creds == NULL) {
        rc = CFR_ERR(err, CFR_ECONFIG, "rpc client: bad TLS credentials");
        goto out;
    }
    grpc_arg a[8];
    size_t n = 0;
    n += set_int_arg(&a[n], GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                     (int)cli->max_msg);
    n += set_int_arg(&a[n], GRPC_ARG_KEEPALIVE_TIME_MS,
                     opts->keepalive_time_ms > 0 ? opts->keepalive_time_ms
                                                 : CLIENT_KEEPALIVE_MS_DEFAULT);
    n += set_int_arg(&a[n], GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                     opts->keepalive_timeout_ms > 0
                         ? opts->keepalive_timeout_ms
                         : CLIENT_KEEPALIVE_TO_DEFAULT);
    n += set_int_arg(&a[n], GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    n += set_int_arg(&a[n], GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    /* Each client gets its own connections: two clients with different
     * certificates must never share a TLS session to the same target. */
    n += set_int_arg(&a[n], GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (opts->target_name != NULL) {
        a[n].type = GRPC_ARG_STRING;
        a[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        a[n].value.string = (char *)opts->target_name;
        n++;
    }
    grpc_channel_args args = {n, a};
    cli->channel = grpc_channel_create(opts->target, creds, &args);
    if (cli->channel == NULL) {
        rc = CFR_ERR(err, CFR_EINVAL, "rpc client: cannot create channel to %s",
                     opts->target);
        goto out;
    }
    *cli_r = cli;
    cli = NULL;
out:
    if (creds != NULL) {
        grpc_channel_credentials_release(creds);
    }
    cfr_rpc_client_free(cli);
    return rc;
}

void
cfr_rpc_client_free(struct cfr_rpc_client *cli)
{
    if (cli == NULL) {
        return;
    }
    if (cli->channel != NULL) {
        grpc_channel_destroy(cli->channel);
    }
    cfr_free(cli);
}

/* Waits for tag's batch; returns its success bit. */
static int
call_pluck(struct cfr_rpc_call *c, void *tag)
{
    grpc_event ev = grpc_completion_queue_pluck(
        c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CFR_ASSERT(ev.type == GRPC_OP_COMPLETE && ev.tag == tag);
    return ev.success;
}

/* Starts a batch; a refusal is a bug in this file (and poisons the call,
 * see the notes), so the call is cancelled and the caller fails. */
static int
call_start(struct cfr_rpc_call *c, const grpc_op *ops, size_t n, void *tag,
           struct cfr_err *err)
{
    grpc_call_error ce = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (ce != GRPC_CALL_OK) {
        cfr_log(CFR_LOG_ERROR, "rpc.client.batch", "method=%s error=%d",
                c->method, (int)ce);
        grpc_call_cancel(c->call, NULL);
        return CFR_ERR(err, CFR_EINTERNAL, "rpc %s: batch refused (%d)",
                       c->method, (int)ce);
    }
    return 0;
}

static int
call_new(struct cfr_rpc_client *cli, const char *method, int64_t timeout_ms,
         struct cfr_rpc_call **call_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_call *c = NULL;
    *call_r = NULL;
    if (method == NULL || method[0] != '/' ||
        strlen(method) >= CFR_RPC_METHOD_MAX || timeout_ms <= 0) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "rpc: bad method or missing deadline (%lld ms)",
                     (long long)timeout_ms);
        goto out;
    }
    c = cfr_calloc(1, sizeof(*c));
    if (c == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "rpc %s: out of memory", method);
        goto out;
    }
    c->cli = cli;
    memcpy(c->method, method, strlen(method) + 1);
    c->status = GRPC_STATUS_UNKNOWN;
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md_initial);
    grpc_metadata_array_init(&c->md_trailing);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice path = grpc_slice_from_copied_string(method);
    c->call =
        grpc_channel_create_call(cli->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                 c->cq, path, NULL, deadline, NULL);
    grpc_slice_unref(path);
    if (c->call == NULL) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "rpc %s: cannot create call", method);
        goto out;
    }
    *call_r = c;
    c = NULL;
out:
    cfr_rpc_call_free(c);
    return rc;
}

void
cfr_rpc_call_free(struct cfr_rpc_call *c)
{
    if (c == NULL) {
        return;
    }
    if (c->call != NULL) {
        if (c->send_pending || c->status_pending) {
            grpc_call_cancel(c->call, NULL);
        }
        if (c->send_pending) {
            (void)call_pluck(c, &c->t_send);
        }
        if (c->status_pending) {
            (void)call_pluck(c, &c->t_status);
        }
        grpc_call_unref(c->call);
    }
    if (c->send_bb != NULL) {
        grpc_byte_buffer_destroy(c->send_bb);
    }
    if (c->recv_bb != NULL) {
        grpc_byte_buffer_destroy(c->recv_bb);
    }
    grpc_metadata_array_destroy(&c->md_initial);
    grpc_metadata_array_destroy(&c->md_trailing);
    grpc_slice_unref(c->details);
    gpr_free((void *)c->error_string);
    if (c->cq != NULL) {
        grpc_completion_queue_shutdown(c->cq);
        grpc_completion_queue_destroy(c->cq);
    }
    cfr_free(c);
}

void
cfr_rpc_call_cancel(struct cfr_rpc_call *c)
{
    /* grpc_call_cancel may be called from any thread, at any time. */
    if (c != NULL && c->call != NULL) {
        grpc_call_cancel(c->call, NULL);
    }
}

/* Returns an owned byte buffer holding a copy of msg. */
static grpc_byte_buffer *
bb_from(const void *msg, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(msg, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Appends a received message to out, bounded by out's cap. */
static int
bb_append(struct cfr_buf *out, grpc_byte_buffer *bb, const char *method,
          struct cfr_err *err)
{
    int rc = 0;
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        return CFR_ERR(err, CFR_ECORRUPT, "rpc %s: undecodable message",
                       method);
    }
    if ((rc = cfr_buf_reserve(out, grpc_byte_buffer_length(bb), err)) != 0) {
        goto out;
    }
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        rc = cfr_buf_append(out, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s),
                            err);
        grpc_slice_unref(s);
        if (rc != 0) {
            goto out;
        }
    }
out:
    grpc_byte_buffer_reader_destroy(&r);
    return rc;
}

/* Turns the collected final status into the return value and error. */
static int
call_status(struct cfr_rpc_call *c, int *status_r, struct cfr_err *err)
{
    int status = (int)c->status;
    if (status_r != NULL) {
        *status_r = status;
    }
    if (status == CFR_RPC_OK) {
        return 0;
    }
    char *details = grpc_slice_to_c_string(c->details);
    int rc = CFR_ERR(err, cfr_rpc_status_code(status), "rpc %s to %s: %s: %s",
                     c->method, c->cli->target, cfr_rpc_status_name(status),
                     details != NULL ? details : "");
    gpr_free(details);
    return rc;
}

static void
op_recv_status(grpc_op *op, struct cfr_rpc_call *c)
{
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &c->md_trailing;
    op->data.recv_status_on_client.status = &c->status;
    op->data.recv_status_on_client.status_details = &c->details;
    op->data.recv_status_on_client.error_string = &c->error_string;
}

int
cfr_rpc_unary(struct cfr_rpc_client *cli, const char *method, const void *req,
              size_t req_len, int64_t timeout_ms, struct cfr_buf *resp,
              int *status_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_call *c = NULL;
    if (status_r != NULL) {
        *status_r = CFR_RPC_INTERNAL;
    }
    if ((rc = call_new(cli, method, timeout_ms, &c, err)) != 0) {
        goto out;
    }
    CFR_ASSERT(c != NULL);
    c->send_bb = bb_from(req, req_len);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv_bb;
    op_recv_status(&ops[5], c);
    if ((rc = call_start(c, ops, 6, &c->t_status, err)) != 0) {
        goto out;
    }
    c->status_pending = true;
    (void)call_pluck(c, &c->t_status);
    c->status_pending = false;
    c->done = true;
    if ((rc = call_status(c, status_r, err)) != 0) {
        goto out;
    }
    if (c->recv_bb == NULL) {
        if (status_r != NULL) {
            *status_r = CFR_RPC_INTERNAL;
        }
        rc = CFR_ERR(err, CFR_EIO, "rpc %s to %s: OK without a response",
                     method, cli->target);
        goto out;
    }
    if ((rc = bb_append(resp, c->recv_bb, method, err)) != 0) {
        goto out;
    }
out:
    cfr_rpc_call_free(c);
    return rc;
}

int
cfr_rpc_cstream_open(struct cfr_rpc_client *cli, const char *method,
                     int64_t timeout_ms, struct cfr_rpc_call **call_r,
                     struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_call *c = NULL;
    *call_r = NULL;
    if ((rc = call_new(cli, method, timeout_ms, &c, err)) != 0) {
        goto out;
    }
    CFR_ASSERT(c != NULL);
    /* The receive side is parked for the whole call: it completes with the
     * server's answer, which may come early (a refusal mid-stream). */
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &c->recv_bb;
    op_recv_status(&ops[2], c);
    if ((rc = call_start(c, ops, 3, &c->t_status, err)) != 0) {
        goto out;
    }
    c->status_pending = true;
    *call_r = c;
    c = NULL;
out:
    cfr_rpc_call_free(c);
    return rc;
}

/* Waits for the send in flight, if any; false when it failed. */
static bool
send_settle(struct cfr_rpc_call *c)
{
    if (!c->send_pending) {
        return !c->send_failed;
    }
    int ok = call_pluck(c, &c->t_send);
    c->send_pending = false;
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    if (!ok) {
        c->send_failed = true;
    }
    return ok != 0;
}

int
cfr_rpc_cstream_send(struct cfr_rpc_call *c, const void *msg, size_t len,
                     struct cfr_err *err)
{
    if (c->done || !send_settle(c)) {
        return CFR_ERR(err, CFR_EUNAVAIL,
                       "rpc %s to %s: stream closed by the server", c->method,
                       c->cli->target);
    }
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = true;
    }
    c->send_bb = bb_from(msg, len);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    int rc = call_start(c, ops, n, &c->t_send, err);
    if (rc == 0) {
        c->send_pending = true;
    }
    return rc;
}

int
cfr_rpc_cstream_finish(struct cfr_rpc_call *c, struct cfr_buf *resp,
                       int *status_r, struct cfr_err *err)
{
    int rc = 0;
    if (status_r != NULL) {
        *status_r = CFR_RPC_INTERNAL;
    }
    if (c->done) {
        return CFR_ERR(err, CFR_EINVAL, "rpc %s: already finished", c->method);
    }
    if (send_settle(c)) {
        grpc_op ops[2];
        size_t n = 0;
        memset(ops, 0, sizeof(ops));
        if (!c->md_sent) {
            ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
            c->md_sent = true;
        }
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (call_start(c, ops, n, &c->t_send, NULL) == 0) {
            c->send_pending = true;
            (void)send_settle(c);
        }
    }
    (void)call_pluck(c, &c->t_status);
    c->status_pending = false;
    c->done = true;
    if ((rc = call_status(c, status_r, err)) != 0) {
        goto out;
    }
    if (c->recv_bb == NULL) {
        if (status_r != NULL) {
            *status_r = CFR_RPC_INTERNAL;
        }
        rc = CFR_ERR(err, CFR_EIO, "rpc %s to %s: OK without a response",
                     c->method, c->cli->target);
        goto out;
    }
    rc = bb_append(resp, c->recv_bb, c->method, err);
out:
    return rc;
}

int
cfr_rpc_sstream_open(struct cfr_rpc_client *cli, const char *method,
                     const void *req, size_t req_len, int64_t timeout_ms,
                     struct cfr_rpc_call **call_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_rpc_call *c = NULL;
    *call_r = NULL;
    if ((rc = call_new(cli, method, timeout_ms, &c, err)) != 0) {
        goto out;
    }
    CFR_ASSERT(c != NULL);
    c->send_bb = bb_from(req, req_len);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    if ((rc = call_start(c, ops, 4, &c->t_send, err)) != 0) {
        goto out;
    }
    c->send_pending = true;
    c->md_sent = true;
    /* Status is asked for early so that it arrives however the stream
     * ends. */
    grpc_op st;
    memset(&st, 0, sizeof(st));
    op_recv_status(&st, c);
    if ((rc = call_start(c, &st, 1, &c->t_status, err)) != 0) {
        goto out;
    }
    c->status_pending = true;
    *call_r = c;
    c = NULL;
out:
    cfr_rpc_call_free(c);
    return rc;
}

int
cfr_rpc_sstream_next(struct cfr_rpc_call *c, struct cfr_buf *msg, int *status_r,
                     struct cfr_err *err)
{
    int rc = 0;
    if (status_r != NULL) {
        *status_r = CFR_RPC_INTERNAL;
    }
    if (!c->done) {
        (void)send_settle(c);
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->recv_bb;
        if ((rc = call_start(c, &op, 1, &c->t_recv, err)) != 0) {
            goto out;
        }
        int ok = call_pluck(c, &c->t_recv);
        if (ok && c->recv_bb != NULL) {
            cfr_buf_reset(msg);
            rc = bb_append(msg, c->recv_bb, c->method, err);
            grpc_byte_buffer_destroy(c->recv_bb);
            c->recv_bb = NULL;
            if (rc != 0) {
                /* Too big for the caller: the stream cannot go on. */
                grpc_call_cancel(c->call, NULL);
                goto out;
            }
            if (status_r != NULL) {
                *status_r = CFR_RPC_OK;
            }
            rc = 1;
            goto out;
        }
        (void)call_pluck(c, &c->t_status);
        c->status_pending = false;
        c->done = true;
    }
    rc = call_status(c, status_r, err);
out:
    return rc;
}
