/*
 * rpc.h - gRPC transport plumbing over mutual TLS: a server that runs plain C
 * handlers on a bounded worker pool, and a blocking client.
 *
 * Messages are raw bytes; callers encode them with protobuf-c. Methods are
 * named by path ("/coffer.v1.Vault/Put"). Every call has a deadline, an
 * authenticated peer (client certificate -> tenant and role, see
 * docs/FORMAT.md), an authorization decision, bounded message sizes and
 * an audit record. Nothing in this header exposes gRPC types: only rpc*.c
 * see <grpc/...>.
 *
 * Lifecycle: cfr_rpc_global_init once before any server or client (after
 * blocking SIGINT/SIGTERM, since gRPC threads inherit the signal mask), and
 * cfr_rpc_global_fini once after the last one is freed. The fini can block
 * about ten seconds inside grpc_shutdown (a backup poller thread is joined).
 *
 * Server states: new -> (cfr_rpc_server_add_method)* -> cfr_rpc_server_start
 * -> running -> cfr_rpc_server_stop -> stopped -> cfr_rpc_server_free.
 *
 * Thread safety: a server is configured and stopped from one thread; its
 * handlers run concurrently on worker threads, each cfr_rpc_ctx belongs to
 * the one handler it was given to. A client (channel) may be shared by
 * threads; each struct cfr_rpc_call belongs to one thread at a time.
 */
#ifndef CFR_RPC_H
#define CFR_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h" /* struct cfr_buf, for responses */
#include "err.h" /* struct cfr_err */

/*
 * Status codes: the gRPC wire values, pinned here so callers need no gRPC
 * header. Never renumbered (they are the protocol's).
 */
enum cfr_rpc_status {
    CFR_RPC_OK = 0,
    CFR_RPC_CANCELLED = 1,
    CFR_RPC_UNKNOWN = 2,
    CFR_RPC_INVALID_ARGUMENT = 3,
    CFR_RPC_DEADLINE_EXCEEDED = 4,
    CFR_RPC_NOT_FOUND = 5,
    CFR_RPC_ALREADY_EXISTS = 6,
    CFR_RPC_PERMISSION_DENIED = 7,
    CFR_RPC_RESOURCE_EXHAUSTED = 8,
    CFR_RPC_FAILED_PRECONDITION = 9,
    CFR_RPC_ABORTED = 10,
    CFR_RPC_OUT_OF_RANGE = 11,
    CFR_RPC_UNIMPLEMENTED = 12,
    CFR_RPC_INTERNAL = 13,
    CFR_RPC_UNAVAILABLE = 14,
    CFR_RPC_DATA_LOSS = 15,
    CFR_RPC_UNAUTHENTICATED = 16,
};

/* "OK", "PERMISSION_DENIED", ...; "STATUS_<n>" style is never returned. */
const char *cfr_rpc_status_name(int status);

/* The libcoffer error code a gRPC status maps to (0 for CFR_RPC_OK). */
int cfr_rpc_status_code(int status);

#define CFR_RPC_METHOD_MAX      128
#define CFR_RPC_TENANT_MAX      64 /* bytes of a tenant name, NUL included */
#define CFR_RPC_ROLE_MAX        32
#define CFR_RPC_NAME_MAX        256 /* SAN URI or CN, NUL included */
#define CFR_RPC_ADDR_MAX        128
#define CFR_RPC_FINGERPRINT_LEN 64 /* hex digits of a SHA-256 */

/* The vault's own operators: coffer://operator/<name>, no tenant. */
#define CFR_RPC_ROLE_OPERATOR "operator"
#define CFR_RPC_OPERATOR_URI  "coffer://operator/"
/* Peer vaults (replication): coffer://vault/<name>, no tenant. */
#define CFR_RPC_ROLE_VAULT "vault"
#define CFR_RPC_VAULT_URI  "coffer://vault/"

/* Largest message either side accepts unless configured otherwise. */
#define CFR_RPC_MSG_MAX_DEFAULT (8u * 1024u * 1024u)

/* Initialises gRPC (refcounted; pair each call with cfr_rpc_global_fini). */
int cfr_rpc_global_init(struct cfr_err *err);
void cfr_rpc_global_fini(void);

/* ---- peers and authorization ---------------------------------------- */

/*
 * What the server made of the client certificate. The TLS handshake only
 * proves that the client holds the key of the certificate it sent (if
 * any); whether that certificate is acceptable is decided per call by
 * rpc_server.c against the configured client CA, so that every refusal is
 * a call the server can answer, audit and count. (The verdict on the same
 * certificate bytes is reused for at most 60 s, never past the chain's
 * earliest notAfter.) Never renumbered.
 */
enum cfr_rpc_cert_status {
    CFR_RPC_CERT_NONE = 0,          /* the client sent no certificate */
    CFR_RPC_CERT_OK = 1,            /* chains to the client CA, in date,
                                     * usable for client authentication */
    CFR_RPC_CERT_UNTRUSTED = 2,     /* not issued by the client CA */
    CFR_RPC_CERT_EXPIRED = 3,       /* notAfter passed (leaf or chain) */
    CFR_RPC_CERT_NOT_YET_VALID = 4, /* notBefore still ahead */
    CFR_RPC_CERT_BAD_USAGE = 5,     /* extendedKeyUsage lacks clientAuth */
    CFR_RPC_CERT_INVALID = 6,       /* unparsable, or any other failure */
};

/* "none", "ok", "untrusted", "expired", "not-yet-valid", "bad-usage",
 * "invalid"; "invalid" for an unknown value too. */
const char *cfr_rpc_cert_status_name(int status);

#define CFR_RPC_CERT_REASON_MAX 96

/*
 * The peer of a server call. cert_status says what the client certificate
 * was worth; fingerprint is filled whenever a certificate was sent, also a
 * refused one (the audit names it). Only a CFR_RPC_CERT_OK certificate
 * sets authenticated and yields uri and cn (copied from it, empty when
 * absent); tenant and role are set, and has_identity is true, only when
 * uri has the exact form coffer://tenant/<tenant>/role/<role>
 * (docs/FORMAT.md), or coffer://operator/<name> (role
 * CFR_RPC_ROLE_OPERATOR) or coffer://vault/<name> (role CFR_RPC_ROLE_VAULT),
 * both with an empty tenant.
 */
struct cfr_rpc_peer {
    bool authenticated; /* cert_status is CFR_RPC_CERT_OK */
    bool has_identity;  /* tenant and role were parsed from uri */
    char uri[CFR_RPC_NAME_MAX];
    char cn[CFR_RPC_NAME_MAX];
    char tenant[CFR_RPC_TENANT_MAX];
    char role[CFR_RPC_ROLE_MAX];
    char addr[CFR_RPC_ADDR_MAX]; /* "ipv4:127.0.0.1:40112" */
    /* SHA-256 of the client certificate (DER), lower-case hex; "" when
     * the peer sent none. What a deny list names to revoke one
     * certificate rather than every holder of an identity. */
    char fingerprint[CFR_RPC_FINGERPRINT_LEN + 1];
    enum cfr_rpc_cert_status cert_status;
    /* Why, in a few words ("certificate has expired"); "ok" when OK. */
    char cert_reason[CFR_RPC_CERT_REASON_MAX];
};

/*
 * Parses a coffer identity URI into tenant and role. Returns 0, or
 * CFR_EAUTH when uri is not exactly of a documented form (above; an
 * operator yields an empty tenant). Exposed so the
 * credential tooling and the tests use the same rule as the server.
 */
int cfr_rpc_identity_parse(const char *uri, char tenant[CFR_RPC_TENANT_MAX],
                           char role[CFR_RPC_ROLE_MAX]);

/*
 * Decides whether peer may call method. Returns CFR_RPC_OK to allow,
 * CFR_RPC_PERMISSION_DENIED or CFR_RPC_UNAUTHENTICATED to refuse; any other
 * value is treated as PERMISSION_DENIED (fail closed). Only peers with
 * an OK certificate and has_identity reach it: the others are refused
 * UNAUTHENTICATED first (decision CFR_RPC_DENIED, audited).
 * Runs on a worker thread, before the handler, and may block briefly.
 */
typedef int cfr_rpc_authz_fn(void *ctx, const struct cfr_rpc_peer *peer,
                             const char *method);

enum cfr_rpc_decision {
    CFR_RPC_ALLOWED = 0,    /* the handler ran */
    CFR_RPC_DENIED = 1,     /* certificate refused, identity missing or the
                             * hook refused */
    CFR_RPC_NO_METHOD = 2,  /* unknown path: UNIMPLEMENTED */
    CFR_RPC_OVERLOADED = 3, /* max concurrent calls: RESOURCE_EXHAUSTED */
    CFR_RPC_TLS_FAILED = 4, /* a TLS handshake failed: no call existed */
};

/*
 * One record per call that reached the server, once its outcome is known:
 * at the refusal for denied, unknown and overloaded calls, after the final
 * status for allowed ones. status is the code sent (or CANCELLED when the
 * call died first). Everything is borrowed for the duration of the
 * callback. It may run on any server thread, concurrently, including the
 * completion-queue threads and gRPC's own threads (from inside gRPC's
 * log function, for CFR_RPC_TLS_FAILED): it must not block (queue the
 * record instead), and must not call gRPC or a server function.
 *
 * A failed TLS handshake (TLS 1.1 or older, no shared cipher, bytes that
 * are not TLS, a connection closed or timed out mid-handshake) never
 * becomes a call; it is reported as decision CFR_RPC_TLS_FAILED with
 * method "", status CFR_RPC_UNAVAILABLE (what the client sees), detail
 * "TLS handshake failed: <cause>" and a peer with cert_status NONE. gRPC
 * 1.51 reports these failures only through its log (see rpc_server.c),
 * which names the peer address for socket failures (a hang-up) but never
 * for TLS protocol failures: addr is "" then. The report is process-wide,
 * so with several servers in one process each running server gets it.
 */
struct cfr_rpc_audit {
    const struct cfr_rpc_peer *peer;
    const char *method;
    enum cfr_rpc_decision decision;
    int status;
    const char *detail; /* the status message, "" when none */
    /* The tenant whose data the call acted for, as the handler named it
     * (cfr_rpc_ctx_set_audit_tenant); NULL when it named none: the call
     * belongs to peer->tenant then. Set for a peer vault's Sync* calls,
     * whose certificate carries no tenant. */
    const char *tenant;
};

typedef void cfr_rpc_audit_fn(void *ctx, const struct cfr_rpc_audit *rec);

/* ---- server ----------------------------------------------------------- */

struct cfr_rpc_server;
struct cfr_rpc_ctx;

enum cfr_rpc_kind {
    CFR_RPC_KIND_UNARY = 0,
    CFR_RPC_KIND_CLIENT_STREAM = 1,
    CFR_RPC_KIND_SERVER_STREAM = 2,
};

/*
 * A handler serves one call on a worker thread and may block (synced
 * writes). It ends the call with cfr_rpc_ctx_finish; returning without it
 * answers INTERNAL. It must not keep ctx after returning.
 */
typedef void cfr_rpc_handler_fn(struct cfr_rpc_ctx *ctx, void *arg);

struct cfr_rpc_server_opts {
    const char *listen_addr;   /* "127.0.0.1:0" picks a free port */
    const char *cert_pem;      /* server certificate chain */
    const char *key_pem;       /* its private key */
    const char *client_ca_pem; /* CA(s) client certificates chain to */
    size_t max_msg;            /* per received message; 0 = default */
    unsigned max_calls;        /* concurrent calls; 0 = 64 */
    unsigned workers;          /* handler threads; 0 = 4 */
    unsigned cq_threads;       /* completion-queue threads; 0 = 2 */
    int keepalive_time_ms;     /* server pings idle clients; 0 = 2 h */
    int keepalive_timeout_ms;  /* ping ack wait; 0 = 20 s */
    int min_ping_interval_ms;  /* fastest client ping accepted; 0 = 10 s */
    cfr_rpc_authz_fn *authz;   /* required */
    void *authz_ctx;
    cfr_rpc_audit_fn *audit; /* optional */
    void *audit_ctx;
};

/*
 * Creates a server bound to opts->listen_addr, TLS 1.2 or 1.3 only (gRPC
 * 1.51's fixed range; 1.3 when the client offers it). TLS asks for a
 * client certificate and proves its key is held; each call then verifies
 * it against client_ca_pem (struct cfr_rpc_peer). PEM strings are copied.
 * Returns 0 and an owned server in *srv_r. CFR_EINVAL for bad options,
 * CFR_ECONFIG when client_ca_pem holds no certificate, CFR_EIO when the
 * address cannot be bound (address reuse is off: a second server on a
 * port fails here).
 */
int cfr_rpc_server_new(const struct cfr_rpc_server_opts *opts,
                       struct cfr_rpc_server **srv_r, struct cfr_err *err);

/* The bound port (useful after asking for port 0). */
int cfr_rpc_server_port(const struct cfr_rpc_server *srv);

/* TLS handshakes that failed while srv was running (CFR_RPC_TLS_FAILED
 * records delivered to it); for the statistics. Thread-safe. */
uint64_t cfr_rpc_server_tls_failures(const struct cfr_rpc_server *srv);

/* Registers a method before start; path is copied, arg is borrowed. */
int cfr_rpc_server_add_method(struct cfr_rpc_server *srv, const char *path,
                              enum cfr_rpc_kind kind,
                              cfr_rpc_handler_fn *handler, void *arg,
                              struct cfr_err *err);

int cfr_rpc_server_start(struct cfr_rpc_server *srv, struct cfr_err *err);

/*
 * Stops accepting, lets calls in flight finish for grace_ms, then cancels
 * the rest, waits for every call to be released (handlers included) and
 * joins all server threads. Idempotent.
 */
void cfr_rpc_server_stop(struct cfr_rpc_server *srv, int64_t grace_ms);

/* Stops (grace 0) if needed and frees. Accepts NULL. */
void cfr_rpc_server_free(struct cfr_rpc_server *srv);

/* ---- handler context ------------------------------------------------- */

const struct cfr_rpc_peer *cfr_rpc_ctx_peer(const struct cfr_rpc_ctx *ctx);
const char *cfr_rpc_ctx_method(const struct cfr_rpc_ctx *ctx);

/*
 * Names the tenant whose data this call acts for, when the peer's identity
 * does not (a peer vault reading tenant T's data for replication): the
 * call's audit record then carries it in rec->tenant, so T's audit view
 * shows the read. name is copied; NULL or "" clears it, a name longer than
 * CFR_RPC_TENANT_MAX - 1 bytes is refused (CFR_EINVAL, nothing set). Call
 * it from the handler before cfr_rpc_ctx_finish; later calls are ignored.
 */
int cfr_rpc_ctx_set_audit_tenant(struct cfr_rpc_ctx *ctx, const char *name);

/* Milliseconds left before the call's deadline (negative once past). */
int64_t cfr_rpc_ctx_remaining_ms(const struct cfr_rpc_ctx *ctx);

/* True once the client cancelled, the deadline passed or the link died. */
bool cfr_rpc_ctx_cancelled(struct cfr_rpc_ctx *ctx);

/*
 * The request of a unary or server-streaming call; borrowed, valid until
 * the handler returns.
 */
const uint8_t *cfr_rpc_ctx_request(const struct cfr_rpc_ctx *ctx,
                                   size_t *len_r);

/*
 * Client streaming: waits for the next message. Returns 1 with a borrowed
 * message (valid until the next call), 0 at the end of the stream, or a
 * negative code when the call died (CFR_EUNAVAIL).
 */
int cfr_rpc_ctx_recv(struct cfr_rpc_ctx *ctx, const uint8_t **msg_r,
                     size_t *len_r, struct cfr_err *err);

/*
 * Server streaming: sends one message and waits until gRPC took it (one
 * send in flight, so a slow client slows the handler instead of filling
 * memory). CFR_EUNAVAIL when the call died.
 */
int cfr_rpc_ctx_send(struct cfr_rpc_ctx *ctx, const void *msg, size_t len,
                     struct cfr_err *err);

/*
 * Ends the call with status and message; resp (may be NULL) is sent first
 * for unary and client-streaming calls, and must be NULL for a non-OK
 * status. Waits until gRPC took the batch. Only the first call counts.
 */
int cfr_rpc_ctx_finish(struct cfr_rpc_ctx *ctx, int status, const char *msg,
                       const void *resp, size_t resp_len, struct cfr_err *err);

/* ---- client ----------------------------------------------------------- */

struct cfr_rpc_client;
struct cfr_rpc_call;

struct cfr_rpc_client_opts {
    const char *target;       /* "host:port" */
    const char *target_name;  /* TLS name override; NULL = host part */
    const char *ca_pem;       /* CA the server certificate chains to */
    const char *cert_pem;     /* client certificate chain; NULL = none */
    const char *key_pem;      /* its private key */
    size_t max_msg;           /* per received message; 0 = default */
    int keepalive_time_ms;    /* 0 = 60 s */
    int keepalive_timeout_ms; /* 0 = 20 s */
};

/* Creates a channel; it connects lazily on the first call. */
int cfr_rpc_client_new(const struct cfr_rpc_client_opts *opts,
                       struct cfr_rpc_client **cli_r, struct cfr_err *err);
void cfr_rpc_client_free(struct cfr_rpc_client *cli);

/*
 * Every client call reports its gRPC status in *status_r (always set) and
 * returns 0 when it is CFR_RPC_OK, otherwise cfr_rpc_status_code(status)
 * with err naming the method, the target, the status name and the server's
 * message. Local failures (bad arguments, memory) use status CFR_RPC_UNKNOWN
 * or CFR_RPC_INTERNAL.
 */

/*
 * One request, one response appended to resp (whose cap bounds it, next to
 * max_msg). timeout_ms > 0 is required: every call has a deadline.
 */
int cfr_rpc_unary(struct cfr_rpc_client *cli, const char *method,
                  const void *req, size_t req_len, int64_t timeout_ms,
                  struct cfr_buf *resp, int *status_r, struct cfr_err *err);

/* Client streaming: open, send each message, then finish. */
int cfr_rpc_cstream_open(struct cfr_rpc_client *cli, const char *method,
                         int64_t timeout_ms, struct cfr_rpc_call **call_r,
                         struct cfr_err *err);

/*
 * Sends one message; it waits for the previous one to be taken first. A
 * failure means the server already answered: cfr_rpc_cstream_finish then
 * reports its status.
 */
int cfr_rpc_cstream_send(struct cfr_rpc_call *call, const void *msg, size_t len,
                         struct cfr_err *err);

/* Half-closes, waits for the response (appended to resp) and status. */
int cfr_rpc_cstream_finish(struct cfr_rpc_call *call, struct cfr_buf *resp,
                           int *status_r, struct cfr_err *err);

/* Server streaming: sends req, then cfr_rpc_sstream_next until it says 0. */
int cfr_rpc_sstream_open(struct cfr_rpc_client *cli, const char *method,
                         const void *req, size_t req_len, int64_t timeout_ms,
                         struct cfr_rpc_call **call_r, struct cfr_err *err);

/*
 * Replaces msg's contents with the next message and returns 1; returns 0
 * at a clean end (status OK), or a negative code with the final status in
 * *status_r.
 */
int cfr_rpc_sstream_next(struct cfr_rpc_call *call, struct cfr_buf *msg,
                         int *status_r, struct cfr_err *err);

/* Frees a call, cancelling it when unfinished. Accepts NULL. */
void cfr_rpc_call_free(struct cfr_rpc_call *call);

/*
 * Cancels call from any thread, while its owner may be blocked in a send,
 * finish or next on it: that wait then ends and reports CANCELLED. The
 * caller must make sure the call is not freed meanwhile (a lock shared
 * with the owner). Accepts NULL.
 */
void cfr_rpc_call_cancel(struct cfr_rpc_call *call);

#endif /* CFR_RPC_H */
