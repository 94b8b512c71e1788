/*
 * rpc_test.c - the gRPC transport over real mutual TLS on 127.0.0.1.
 *
 * A throwaway PKI (tests/pki/make-test-pki.sh) is generated into a mkdtemp
 * directory at start. One shared server serves most tests; the concurrency
 * limit and shutdown tests start their own. Handlers, the authorization
 * hook and the audit sink record what they saw so that each test checks the
 * server side as well as the client's answer. Certificate fingerprints are
 * checked against `openssl x509 -fingerprint -sha256`, and failed TLS
 * handshakes are provoked with `openssl s_client` and raw sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "rpc_int.h" /* cfr_rpc_server_observe_grpc_log */

#define M_ECHO   "/coffer.v1.Test/Echo"
#define M_SUM    "/coffer.v1.Test/Sum"
#define M_RANGE  "/coffer.v1.Test/Range"
#define M_SLOW   "/coffer.v1.Test/Slow"
#define M_SECRET "/coffer.v1.Test/Secret"
#define M_NOPE   "/coffer.v1.Test/Nope"
#define M_TAGGED "/coffer.v1.Test/Tagged"

#define SERVER_MAX_MSG (2u * 1024u * 1024u)
#define MIB            (1024u * 1024u)
#define RESP_CAP       (4u * MIB)

/* ---- shared state ------------------------------------------------------ */

static char pki_dir[64];
static char *pem_ca, *pem_server, *pem_server_key;
static char *pem_agent, *pem_agent_key, *pem_restore, *pem_restore_key;
static char *pem_noid, *pem_noid_key, *pem_expired, *pem_expired_key;
static char *pem_rogue, *pem_rogue_key, *pem_twoid, *pem_twoid_key;
static char *pem_notyet, *pem_notyet_key, *pem_serveronly, *pem_serveronly_key;

static struct cfr_rpc_server *main_srv;
static char main_target[64];

static atomic_int handler_runs;
static atomic_int authz_runs;
static atomic_int slow_started;
static atomic_int slow_done;
static atomic_int slow_saw_cancel;
static atomic_int slow_finish_rc;
static _Atomic int64_t slow_remaining_ms;

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cfr_rpc_peer seen_peer;

#define AUDIT_MAX 256
struct audit_rec {
    char method[CFR_RPC_METHOD_MAX];
    char tenant[CFR_RPC_TENANT_MAX];
    char uri[CFR_RPC_NAME_MAX];
    char addr[CFR_RPC_ADDR_MAX];
    char fingerprint[CFR_RPC_FINGERPRINT_LEN + 1];
    char detail[160];
    enum cfr_rpc_cert_status cert_status;
    bool authenticated;
    enum cfr_rpc_decision decision;
    int status;
    bool has_call_tenant; /* rec->tenant was not NULL */
    char call_tenant[CFR_RPC_TENANT_MAX];
};
static pthread_mutex_t audit_mu = PTHREAD_MUTEX_INITIALIZER;
static struct audit_rec audits[AUDIT_MAX];
static int naudits;

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* FNV-1a 64, enough to prove 100 MiB arrived intact and in order. */
static uint64_t
fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}
#define FNV_INIT UINT64_C(0xcbf29ce484222325)

/* Deterministic filler: xorshift64 bytes. */
static void
fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * UINT64_C(0x9e3779b97f4a7c15) + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int
audit_count(const char *method, enum cfr_rpc_decision d, int status)
{
    int n = 0;
    pthread_mutex_lock(&audit_mu);
    for (int i = 0; i < naudits; i++) {
        if (strcmp(audits[i].method, method) == 0 && audits[i].decision == d &&
            audits[i].status == status) {
            n++;
        }
    }
    pthread_mutex_unlock(&audit_mu);
    return n;
}

/* The number of audit records so far: a mark for audit_find. */
static int
audit_mark(void)
{
    pthread_mutex_lock(&audit_mu);
    int n = naudits;
    pthread_mutex_unlock(&audit_mu);
    return n;
}

/*
 * Polls (up to 3 s, or not at all when n is 0) for the n-th record with
 * decision d at or after mark and copies it to out; returns how many such
 * records exist by then.
 */
static int
audit_find(int mark, enum cfr_rpc_decision d, int n, struct audit_rec *out)
{
    int found = 0;
    for (int w = 0; w < (n > 0 ? 300 : 1); w++) {
        found = 0;
        pthread_mutex_lock(&audit_mu);
        for (int i = mark; i < naudits; i++) {
            if (audits[i].decision == d && ++found == n && n > 0 &&
                out != NULL) {
                *out = audits[i];
            }
        }
        pthread_mutex_unlock(&audit_mu);
        if (found >= n) {
            break;
        }
        sleep_ms(10);
    }
    return found;
}

/* Allowed calls are audited once their status is out: poll briefly. */
static int
audit_wait(const char *method, enum cfr_rpc_decision d, int status, int want)
{
    int n = 0;
    for (int i = 0; i < 300; i++) {
        n = audit_count(method, d, status);
        if (n >= want) {
            break;
        }
        sleep_ms(10);
    }
    return n;
}

/* ---- server side: hooks and handlers ---------------------------------- */

static int
authz(void *ctx, const struct cfr_rpc_peer *peer, const char *method)
{
    (void)ctx;
    atomic_fetch_add(&authz_runs, 1);
    /* Only a verified certificate with one identity may get here. */
    if (peer->cert_status != CFR_RPC_CERT_OK || !peer->authenticated ||
        !peer->has_identity || strlen(peer->fingerprint) != 64) {
        return CFR_RPC_PERMISSION_DENIED;
    }
    return strcmp(method, M_SECRET) == 0 ? CFR_RPC_PERMISSION_DENIED
                                         : CFR_RPC_OK;
}

static void
audit(void *ctx, const struct cfr_rpc_audit *rec)
{
    (void)ctx;
    pthread_mutex_lock(&audit_mu);
    if (naudits < AUDIT_MAX) {
        struct audit_rec *a = &audits[naudits++];
        snprintf(a->method, sizeof(a->method), "%s", rec->method);
        snprintf(a->tenant, sizeof(a->tenant), "%s", rec->peer->tenant);
        snprintf(a->uri, sizeof(a->uri), "%s", rec->peer->uri);
        snprintf(a->addr, sizeof(a->addr), "%s", rec->peer->addr);
        snprintf(a->fingerprint, sizeof(a->fingerprint), "%s",
                 rec->peer->fingerprint);
        snprintf(a->detail, sizeof(a->detail), "%s", rec->detail);
        a->cert_status = rec->peer->cert_status;
        a->authenticated = rec->peer->authenticated;
        a->decision = rec->decision;
        a->status = rec->status;
        a->has_call_tenant = rec->tenant != NULL;
        snprintf(a->call_tenant, sizeof(a->call_tenant), "%s",
                 rec->tenant != NULL ? rec->tenant : "");
    }
    pthread_mutex_unlock(&audit_mu);
}

static void
h_echo(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&handler_runs, 1);
    pthread_mutex_lock(&seen_mu);
    seen_peer = *cfr_rpc_ctx_peer(ctx);
    pthread_mutex_unlock(&seen_mu);
    size_t n;
    const uint8_t *req = cfr_rpc_ctx_request(ctx, &n);
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, req, n, NULL);
}

/* Client stream: answers count, total bytes and FNV hash (3 x le64). */
static void
h_sum(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&handler_runs, 1);
    uint64_t count = 0, total = 0, h = FNV_INIT;
    const uint8_t *m;
    size_t n;
    int rc;
    while ((rc = cfr_rpc_ctx_recv(ctx, &m, &n, NULL)) == 1) {
        count++;
        total += n;
        h = fnv(h, m, n);
    }
    if (rc < 0) {
        (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_CANCELLED, "recv failed", NULL, 0,
                                 NULL);
        return;
    }
    uint8_t out[24];
    cfr_put_le64(out, count);
    cfr_put_le64(out + 8, total);
    cfr_put_le64(out + 16, h);
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, out, sizeof(out), NULL);
}

/* Server stream: request = le32 count, le32 size; message i starts with
 * le32 i and is filled from seed i. */
static void
h_range(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&handler_runs, 1);
    size_t n;
    const uint8_t *req = cfr_rpc_ctx_request(ctx, &n);
    if (n != 8) {
        (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_INVALID_ARGUMENT, "bad request",
                                 NULL, 0, NULL);
        return;
    }
    uint32_t count = cfr_get_le32(req), size = cfr_get_le32(req + 4);
    uint8_t *buf = cfr_malloc(size < 4 ? 4 : size);
    for (uint32_t i = 0; i < count && buf != NULL; i++) {
        fill(buf, size, i);
        cfr_put_le32(buf, i);
        if (cfr_rpc_ctx_send(ctx, buf, size, NULL) != 0) {
            break;
        }
    }
    cfr_free(buf);
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, "done", NULL, 0, NULL);
}

/* Request = le32 ms, u8 cooperative. A cooperative sleep stops when the
 * call is cancelled; a plain one sleeps regardless, like a slow disk. */
static void
h_slow(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&handler_runs, 1);
    atomic_fetch_add(&slow_started, 1);
    size_t n;
    const uint8_t *req = cfr_rpc_ctx_request(ctx, &n);
    uint32_t ms = n >= 5 ? cfr_get_le32(req) : 0;
    bool coop = n >= 5 && req[4] != 0;
    atomic_store(&slow_remaining_ms, cfr_rpc_ctx_remaining_ms(ctx));
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (coop && cfr_rpc_ctx_cancelled(ctx)) {
            break;
        }
        sleep_ms(coop ? 5 : (int)ms);
    }
    atomic_store(&slow_saw_cancel, cfr_rpc_ctx_cancelled(ctx) ? 1 : 0);
    int rc = cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, "slept", 5, NULL);
    atomic_store(&slow_finish_rc, rc);
    atomic_fetch_add(&slow_done, 1);
}

static void
h_secret(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    atomic_fetch_add(&handler_runs, 1);
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, "secret", 6, NULL);
}

/*
 * Names the tenant of the request bytes ("" = none) as the call's audit
 * tenant, like a vault's Sync* handler. Before that, a name one byte too
 * long must be refused and leave nothing behind; after finish, a change
 * must be ignored (the record may be in flight). Answers "ok" or what
 * went wrong.
 */
static void
h_tagged(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    size_t n;
    const uint8_t *req = cfr_rpc_ctx_request(ctx, &n);
    char name[CFR_RPC_TENANT_MAX + 1];
    const char *why = "ok";
    memset(name, 'x', CFR_RPC_TENANT_MAX);
    name[CFR_RPC_TENANT_MAX] = '\0';
    if (cfr_rpc_ctx_set_audit_tenant(ctx, name) != CFR_EINVAL) {
        why = "long name accepted";
    }
    if (n >= CFR_RPC_TENANT_MAX) {
        n = CFR_RPC_TENANT_MAX - 1;
    }
    memcpy(name, req, n);
    name[n] = '\0';
    if (cfr_rpc_ctx_set_audit_tenant(ctx, n > 0 ? name : NULL) != 0) {
        why = "name refused";
    }
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, why, strlen(why), NULL);
    (void)cfr_rpc_ctx_set_audit_tenant(ctx, "late");
}

static struct cfr_rpc_server *
server_start(unsigned max_calls, unsigned workers)
{
    struct cfr_err err;
    struct cfr_rpc_server_opts o = {
        .listen_addr = "127.0.0.1:0",
        .cert_pem = pem_server,
        .key_pem = pem_server_key,
        .client_ca_pem = pem_ca,
        .max_msg = SERVER_MAX_MSG,
        .max_calls = max_calls,
        .workers = workers,
        .authz = authz,
        .audit = audit,
    };
    struct cfr_rpc_server *srv = NULL;
    if (cfr_rpc_server_new(&o, &srv, &err) != 0) {
        fprintf(stderr, "server_new: %s\n", err.msg);
        return NULL;
    }
    int rc = 0;
    rc |= cfr_rpc_server_add_method(srv, M_ECHO, CFR_RPC_KIND_UNARY, h_echo,
                                    NULL, &err);
    rc |= cfr_rpc_server_add_method(srv, M_SUM, CFR_RPC_KIND_CLIENT_STREAM,
                                    h_sum, NULL, &err);
    rc |= cfr_rpc_server_add_method(srv, M_RANGE, CFR_RPC_KIND_SERVER_STREAM,
                                    h_range, NULL, &err);
    rc |= cfr_rpc_server_add_method(srv, M_SLOW, CFR_RPC_KIND_UNARY, h_slow,
                                    NULL, &err);
    rc |= cfr_rpc_server_add_method(srv, M_SECRET, CFR_RPC_KIND_UNARY, h_secret,
                                    NULL, &err);
    rc |= cfr_rpc_server_add_method(srv, M_TAGGED, CFR_RPC_KIND_UNARY, h_tagged,
                                    NULL, &err);
    if (rc != 0 || cfr_rpc_server_start(srv, &err) != 0) {
        fprintf(stderr, "server setup: %s\n", err.msg);
        cfr_rpc_server_free(srv);
        return NULL;
    }
    return srv;
}

/* ---- client side -------------------------------------------------------- */

static struct cfr_rpc_client *
client_for(int port, const char *cert, const char *key, size_t max_msg)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct cfr_rpc_client_opts o = {
        .target = target,
        .ca_pem = pem_ca,
        .cert_pem = cert,
        .key_pem = key,
        .max_msg = max_msg,
    };
    struct cfr_rpc_client *cli = NULL;
    struct cfr_err err;
    if (cfr_rpc_client_new(&o, &cli, &err) != 0) {
        fprintf(stderr, "client_new: %s\n", err.msg);
        return NULL;
    }
    return cli;
}

static struct cfr_rpc_client *
agent_client(void)
{
    return client_for(cfr_rpc_server_port(main_srv), pem_agent, pem_agent_key,
                      0);
}

static int
slow_call(struct cfr_rpc_client *cli, uint32_t ms, bool coop,
          int64_t timeout_ms, int *status_r, struct cfr_err *err)
{
    uint8_t req[5];
    cfr_put_le32(req, ms);
    req[4] = coop ? 1 : 0;
    struct cfr_buf resp;
    cfr_buf_init(&resp, 64);
    int rc = cfr_rpc_unary(cli, M_SLOW, req, sizeof(req), timeout_ms, &resp,
                           status_r, err);
    cfr_buf_fini(&resp);
    return rc;
}

/* ---- setup -------------------------------------------------------------- */

static char *
slurp(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", pki_dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *s = cfr_calloc(1, 16384);
    if (s != NULL) {
        size_t n = fread(s, 1, 16383, f);
        s[n] = '\0';
    }
    fclose(f);
    return s;
}

/*
 * The SHA-256 fingerprint of <pki_dir>/<name> as openssl prints it
 * ("sha256 Fingerprint=AB:CD:..."), reduced to 64 lower-case hex digits.
 */
static void
openssl_fingerprint(const char *name, char out[CFR_RPC_FINGERPRINT_LEN + 1])
{
    char cmd[256], line[256];
    out[0] = '\0';
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -noout -fingerprint -sha256 -in %s/%s", pki_dir,
             name);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return;
    }
    if (fgets(line, sizeof(line), p) != NULL) {
        const char *eq = strchr(line, '=');
        size_t n = 0;
        for (const char *c = eq != NULL ? eq + 1 : ""; *c != '\0'; c++) {
            if (isxdigit((unsigned char)*c) && n < CFR_RPC_FINGERPRINT_LEN) {
                out[n++] = (char)tolower((unsigned char)*c);
            }
        }
        out[n] = '\0';
    }
    pclose(p);
}

/* Passes log lines to stderr and counts gRPC's TLS version refusals. */
static atomic_int tls_version_refusals;

static void
log_sink(void *ctx, enum cfr_log_level level, const char *line, size_t len)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "unsupported protocol") != NULL) {
        atomic_fetch_add(&tls_version_refusals, 1);
    }
    fprintf(stderr, "%.*s\n", (int)len, line);
}

static int
group_setup(void **state)
{
    (void)state;
    cfr_log_set_level(CFR_LOG_WARN);
    cfr_log_set_sink(log_sink, NULL);
    snprintf(pki_dir, sizeof(pki_dir), "/tmp/coffer-rpc-test-XXXXXX");
    if (mkdtemp(pki_dir) == NULL) {
        return -1;
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/../pki/make-test-pki.sh %s",
             COFFER_VECTORS_DIR, pki_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "make-test-pki.sh failed\n");
        return -1;
    }
    char **dst[] = {
        &pem_ca,         &pem_server,     &pem_server_key,    &pem_agent,
        &pem_agent_key,  &pem_restore,    &pem_restore_key,   &pem_noid,
        &pem_noid_key,   &pem_expired,    &pem_expired_key,   &pem_rogue,
        &pem_rogue_key,  &pem_twoid,      &pem_twoid_key,     &pem_notyet,
        &pem_notyet_key, &pem_serveronly, &pem_serveronly_key};
    const char *names[] = {
        "ca.pem",     "server.pem",     "server.key",    "agent.pem",
        "agent.key",  "restore.pem",    "restore.key",   "noid.pem",
        "noid.key",   "expired.pem",    "expired.key",   "rogue.pem",
        "rogue.key",  "twoid.pem",      "twoid.key",     "notyet.pem",
        "notyet.key", "serveronly.pem", "serveronly.key"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *dst[i] = slurp(names[i]);
        if (*dst[i] == NULL) {
            return -1;
        }
    }
    struct cfr_err err;
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    main_srv = server_start(16, 4);
    if (main_srv == NULL) {
        return -1;
    }
    snprintf(main_target, sizeof(main_target), "127.0.0.1:%d",
             cfr_rpc_server_port(main_srv));
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    cfr_rpc_server_free(main_srv);
    main_srv = NULL;
    int64_t t0 = now_ms();
    cfr_rpc_global_fini();
    cfr_log_set_sink(NULL, NULL);
    fprintf(stderr, "rpc_test: grpc_shutdown took %lld ms\n",
            (long long)(now_ms() - t0));
    char **all[] = {
        &pem_ca,         &pem_server,     &pem_server_key,    &pem_agent,
        &pem_agent_key,  &pem_restore,    &pem_restore_key,   &pem_noid,
        &pem_noid_key,   &pem_expired,    &pem_expired_key,   &pem_rogue,
        &pem_rogue_key,  &pem_twoid,      &pem_twoid_key,     &pem_notyet,
        &pem_notyet_key, &pem_serveronly, &pem_serveronly_key};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        cfr_free_null(all[i]);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_rpc_identity_parse_strict(void **state)
{
    (void)state;
    char t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
    assert_int_equal(
        cfr_rpc_identity_parse("coffer://tenant/acme-1.eu/role/agent", t, r),
        0);
    assert_string_equal(t, "acme-1.eu");
    assert_string_equal(r, "agent");
    assert_int_equal(cfr_rpc_identity_parse("coffer://operator/alice", t, r),
                     0);
    assert_string_equal(t, "");
    assert_string_equal(r, CFR_RPC_ROLE_OPERATOR);
    /* A peer vault (replication) has a name and no tenant, like an
     * operator. */
    assert_int_equal(cfr_rpc_identity_parse("coffer://vault/eu-1", t, r), 0);
    assert_string_equal(t, "");
    assert_string_equal(r, CFR_RPC_ROLE_VAULT);
    const char *bad[] = {
        "coffer://operator/",
        "coffer://operator/Alice",
        "coffer://operator/alice/role/admin",
        "coffer://operator/.alice",
        "coffer://vault/",
        "coffer://vault/EU-1",
        "coffer://vault/eu-1/role/vault",
        "coffer://tenant/acme/role/",
        "coffer://tenant//role/agent",
        "coffer://tenant/Acme/role/agent",
        "coffer://tenant/a/b/role/agent",
        "coffer://tenant/acme/role/ag/ent",
        "spiffe://tenant/acme/role/agent",
        "coffer://tenant/.x/role/agent",
        "coffer://tenant/acme/role/agent?x",
        "coffer://tenant/acme",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cfr_rpc_identity_parse(bad[i], t, r), CFR_EAUTH);
        assert_string_equal(t, "");
        assert_string_equal(r, "");
    }
    char longt[100];
    memset(longt, 'a', sizeof(longt));
    memcpy(longt, "coffer://tenant/", 16);
    snprintf(longt + 80, 20, "/role/agent");
    assert_int_equal(cfr_rpc_identity_parse(longt, t, r), CFR_EAUTH);
}

static void
test_rpc_unary_echo_sees_identity(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    struct cfr_buf resp;
    cfr_buf_init(&resp, RESP_CAP);
    struct cfr_err err;
    int status = -1;
    int runs0 = atomic_load(&handler_runs);
    int rc = cfr_rpc_unary(cli, M_ECHO, "hello vault", 11, 5000, &resp, &status,
                           &err);
    assert_int_equal(rc, 0);
    assert_int_equal(status, CFR_RPC_OK);
    assert_int_equal(resp.len, 11);
    assert_memory_equal(resp.data, "hello vault", 11);
    assert_int_equal(atomic_load(&handler_runs), runs0 + 1);
    pthread_mutex_lock(&seen_mu);
    struct cfr_rpc_peer p = seen_peer;
    pthread_mutex_unlock(&seen_mu);
    assert_true(p.authenticated);
    assert_true(p.has_identity);
    assert_string_equal(p.tenant, "acme");
    assert_string_equal(p.role, "agent");
    assert_string_equal(p.uri, "coffer://tenant/acme/role/agent");
    assert_string_equal(p.cn, "acme agent");
    assert_non_null(strstr(p.addr, "127.0.0.1:"));
    assert_int_equal(p.cert_status, CFR_RPC_CERT_OK);
    assert_string_equal(p.cert_reason, "ok");
    char fp[CFR_RPC_FINGERPRINT_LEN + 1];
    openssl_fingerprint("agent.pem", fp);
    assert_int_equal(strlen(fp), CFR_RPC_FINGERPRINT_LEN);
    assert_string_equal(p.fingerprint, fp);
    assert_int_equal(audit_wait(M_ECHO, CFR_RPC_ALLOWED, CFR_RPC_OK, 1) >= 1,
                     1);

    /* An empty request is a message too, and comes back empty. */
    cfr_buf_reset(&resp);
    assert_int_equal(
        cfr_rpc_unary(cli, M_ECHO, "", 0, 5000, &resp, &status, &err), 0);
    assert_int_equal(resp.len, 0);
    cfr_rpc_client_free(cli);

    /* A second certificate maps to its own tenant and role. */
    cli = client_for(cfr_rpc_server_port(main_srv), pem_restore,
                     pem_restore_key, 0);
    assert_non_null(cli);
    cfr_buf_reset(&resp);
    assert_int_equal(
        cfr_rpc_unary(cli, M_ECHO, "x", 1, 5000, &resp, &status, &err), 0);
    pthread_mutex_lock(&seen_mu);
    p = seen_peer;
    pthread_mutex_unlock(&seen_mu);
    assert_string_equal(p.tenant, "globex");
    assert_string_equal(p.role, "restore");
    openssl_fingerprint("restore.pem", fp);
    assert_string_equal(p.fingerprint, fp);
    cfr_rpc_client_free(cli);
    cfr_buf_fini(&resp);
}

/* Waits for the allowed M_TAGGED record at or after mark. */
static bool
tagged_record(int mark, struct audit_rec *out)
{
    for (int w = 0; w < 300; w++) {
        bool found = false;
        pthread_mutex_lock(&audit_mu);
        for (int i = mark; i < naudits && !found; i++) {
            if (strcmp(audits[i].method, M_TAGGED) == 0 &&
                audits[i].decision == CFR_RPC_ALLOWED) {
                *out = audits[i];
                found = true;
            }
        }
        pthread_mutex_unlock(&audit_mu);
        if (found) {
            return true;
        }
        sleep_ms(10);
    }
    return false;
}

static void
test_rpc_handler_names_audit_tenant(void **state)
{
    (void)state;
    /* A tenant-less identity (a peer vault) acting for tenant "initech":
     * the record carries the handler's tenant, the peer's stays empty. */
    char *cert = slurp("vault-a.pem"), *key = slurp("vault-a.key");
    assert_non_null(cert);
    assert_non_null(key);
    struct cfr_rpc_client *cli =
        client_for(cfr_rpc_server_port(main_srv), cert, key, 0);
    assert_non_null(cli);
    struct cfr_buf resp;
    cfr_buf_init(&resp, RESP_CAP);
    struct cfr_err err;
    int status = -1;
    struct audit_rec a;

    int mark = audit_mark();
    assert_int_equal(
        cfr_rpc_unary(cli, M_TAGGED, "initech", 7, 5000, &resp, &status, &err),
        0);
    assert_int_equal(resp.len, 2);
    assert_memory_equal(resp.data, "ok", 2);
    assert_true(tagged_record(mark, &a));
    assert_true(a.has_call_tenant);
    assert_string_equal(a.call_tenant, "initech");
    assert_string_equal(a.tenant, "");
    assert_string_equal(a.uri, "coffer://vault/vault-a");
    cfr_rpc_client_free(cli);
    cfr_free(cert);
    cfr_free(key);

    /* Unset: the record says NULL, so the peer's own tenant counts. */
    cli = agent_client();
    assert_non_null(cli);
    cfr_buf_reset(&resp);
    mark = audit_mark();
    assert_int_equal(
        cfr_rpc_unary(cli, M_TAGGED, "", 0, 5000, &resp, &status, &err), 0);
    assert_int_equal(resp.len, 2);
    assert_memory_equal(resp.data, "ok", 2);
    assert_true(tagged_record(mark, &a));
    assert_false(a.has_call_tenant);
    assert_string_equal(a.tenant, "acme");

    /* Other calls never carry one. */
    mark = audit_mark();
    cfr_buf_reset(&resp);
    assert_int_equal(
        cfr_rpc_unary(cli, M_ECHO, "e", 1, 5000, &resp, &status, &err), 0);
    assert_int_equal(audit_find(mark, CFR_RPC_ALLOWED, 1, &a), 1);
    assert_string_equal(a.method, M_ECHO);
    assert_false(a.has_call_tenant);
    cfr_rpc_client_free(cli);
    cfr_buf_fini(&resp);
}

static void
test_rpc_client_stream_100_mib(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    struct cfr_err err;
    struct cfr_rpc_call *call = NULL;
    uint8_t *msg = cfr_malloc(MIB);
    assert_non_null(msg);
    int64_t t0 = now_ms();
    assert_int_equal(cfr_rpc_cstream_open(cli, M_SUM, 120000, &call, &err), 0);
    uint64_t h = FNV_INIT;
    for (int i = 0; i < 100; i++) {
        fill(msg, MIB, (uint64_t)i + 1000);
        h = fnv(h, msg, MIB);
        assert_int_equal(cfr_rpc_cstream_send(call, msg, MIB, &err), 0);
    }
    struct cfr_buf resp;
    cfr_buf_init(&resp, 64);
    int status = -1;
    int rc = cfr_rpc_cstream_finish(call, &resp, &status, &err);
    int64_t took = now_ms() - t0;
    if (rc != 0) {
        fprintf(stderr, "cstream: %s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(status, CFR_RPC_OK);
    assert_int_equal(resp.len, 24);
    assert_int_equal(cfr_get_le64(resp.data), 100);
    assert_int_equal(cfr_get_le64(resp.data + 8), 100u * MIB);
    assert_int_equal(cfr_get_le64(resp.data + 16), h);
    fprintf(stderr, "rpc_test: client stream 100 MiB in %lld ms\n",
            (long long)took);
    cfr_rpc_call_free(call);
    cfr_buf_fini(&resp);
    cfr_free(msg);
    cfr_rpc_client_free(cli);
}

static void
test_rpc_server_stream_all_messages(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    struct cfr_err err;
    const uint32_t count = 300, size = 64 * 1024;
    uint8_t req[8];
    cfr_put_le32(req, count);
    cfr_put_le32(req + 4, size);
    struct cfr_rpc_call *call = NULL;
    assert_int_equal(
        cfr_rpc_sstream_open(cli, M_RANGE, req, 8, 60000, &call, &err), 0);
    struct cfr_buf m;
    cfr_buf_init(&m, MIB);
    uint8_t *want = cfr_malloc(size);
    assert_non_null(want);
    uint32_t got = 0;
    int status = -1;
    int rc;
    while ((rc = cfr_rpc_sstream_next(call, &m, &status, &err)) == 1) {
        assert_int_equal(m.len, size);
        fill(want, size, got);
        cfr_put_le32(want, got);
        assert_memory_equal(m.data, want, size);
        got++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(status, CFR_RPC_OK);
    assert_int_equal(got, count);
    /* The end is sticky. */
    assert_int_equal(cfr_rpc_sstream_next(call, &m, &status, &err), 0);
    cfr_rpc_call_free(call);

    /* A message bigger than the caller's buffer is refused, not truncated. */
    struct cfr_buf small;
    cfr_buf_init(&small, 1000);
    cfr_put_le32(req, 3);
    cfr_put_le32(req + 4, 5000);
    assert_int_equal(
        cfr_rpc_sstream_open(cli, M_RANGE, req, 8, 10000, &call, &err), 0);
    assert_int_equal(cfr_rpc_sstream_next(call, &small, &status, &err),
                     CFR_ELIMIT);
    cfr_rpc_call_free(call);
    cfr_buf_fini(&small);
    cfr_free(want);
    cfr_buf_fini(&m);
    cfr_rpc_client_free(cli);
}

static void
test_rpc_bad_client_certificates_refused(void **state)
{
    (void)state;
    /* Each one used to die inside the TLS handshake, unseen; now each is
     * a call refused UNAUTHENTICATED, with its reason, audited with its
     * status and fingerprint, and never shown to the authorization hook. */
    struct {
        const char *what, *cert, *key, *file, *detail;
        enum cfr_rpc_cert_status status;
    } cases[] = {
        {"no certificate", NULL, NULL, NULL, "no client certificate",
         CFR_RPC_CERT_NONE},
        {"other CA", pem_rogue, pem_rogue_key, "rogue.pem",
         "client certificate not issued by a trusted CA",
         CFR_RPC_CERT_UNTRUSTED},
        {"expired", pem_expired, pem_expired_key, "expired.pem",
         "client certificate expired", CFR_RPC_CERT_EXPIRED},
        {"not yet valid", pem_notyet, pem_notyet_key, "notyet.pem",
         "client certificate not yet valid", CFR_RPC_CERT_NOT_YET_VALID},
        {"serverAuth only", pem_serveronly, pem_serveronly_key,
         "serveronly.pem",
         "client certificate not valid for client authentication",
         CFR_RPC_CERT_BAD_USAGE},
    };
    int runs0 = atomic_load(&handler_runs);
    int authz0 = atomic_load(&authz_runs);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int mark = audit_mark();
        struct cfr_rpc_client *cli = client_for(cfr_rpc_server_port(main_srv),
                                                cases[i].cert, cases[i].key, 0);
        assert_non_null(cli);
        struct cfr_buf resp;
        cfr_buf_init(&resp, 64);
        struct cfr_err err;
        cfr_err_clear(&err);
        int status = -1;
        int rc =
            cfr_rpc_unary(cli, M_ECHO, "hi", 2, 5000, &resp, &status, &err);
        fprintf(stderr, "rpc_test: %s -> %s\n", cases[i].what, err.msg);
        assert_int_equal(rc, CFR_EAUTH);
        assert_int_equal(status, CFR_RPC_UNAUTHENTICATED);
        assert_non_null(strstr(err.msg, main_target));
        assert_non_null(strstr(err.msg, cases[i].detail));
        assert_int_equal(resp.len, 0);

        /* Audited before the answer left: no polling needed. */
        struct audit_rec a;
        assert_int_equal(audit_find(mark, CFR_RPC_DENIED, 1, &a), 1);
        assert_string_equal(a.method, M_ECHO);
        assert_int_equal(a.status, CFR_RPC_UNAUTHENTICATED);
        assert_int_equal(a.cert_status, cases[i].status);
        assert_false(a.authenticated);
        assert_string_equal(a.detail, cases[i].detail);
        assert_string_equal(a.uri, ""); /* unverified: no identity taken */
        assert_string_equal(a.tenant, "");
        assert_non_null(strstr(a.addr, "127.0.0.1:"));
        if (cases[i].file != NULL) {
            char fp[CFR_RPC_FINGERPRINT_LEN + 1];
            openssl_fingerprint(cases[i].file, fp);
            assert_int_equal(strlen(fp), CFR_RPC_FINGERPRINT_LEN);
            assert_string_equal(a.fingerprint, fp);
        } else {
            assert_string_equal(a.fingerprint, "");
        }

        /* A stranger learns nothing about paths: an unknown method is
         * refused for the certificate first. */
        cfr_buf_reset(&resp);
        rc = cfr_rpc_unary(cli, M_NOPE, "hi", 2, 5000, &resp, &status, &err);
        assert_int_equal(rc, CFR_EAUTH);
        assert_int_equal(status, CFR_RPC_UNAUTHENTICATED);
        assert_int_equal(audit_find(mark, CFR_RPC_DENIED, 2, &a), 2);
        assert_string_equal(a.method, M_NOPE);
        assert_int_equal(a.cert_status, cases[i].status);
        assert_int_equal(audit_find(mark, CFR_RPC_NO_METHOD, 0, NULL), 0);
        cfr_buf_fini(&resp);
        cfr_rpc_client_free(cli);
    }
    assert_int_equal(atomic_load(&handler_runs), runs0);
    assert_int_equal(atomic_load(&authz_runs), authz0);
}

static void
test_rpc_certificate_without_identity_unauthenticated(void **state)
{
    (void)state;
    /* Only a CN, then two coffer URIs (ambiguous): both verify, both have
     * no identity. */
    const char *certs[][3] = {{pem_noid, pem_noid_key, "noid.pem"},
                              {pem_twoid, pem_twoid_key, "twoid.pem"}};
    int runs0 = atomic_load(&handler_runs);
    int authz0 = atomic_load(&authz_runs);
    for (int i = 0; i < 2; i++) {
        int mark = audit_mark();
        struct cfr_rpc_client *cli = client_for(cfr_rpc_server_port(main_srv),
                                                certs[i][0], certs[i][1], 0);
        assert_non_null(cli);
        struct cfr_buf resp;
        cfr_buf_init(&resp, 64);
        struct cfr_err err;
        int status = -1;
        int rc =
            cfr_rpc_unary(cli, M_ECHO, "hi", 2, 5000, &resp, &status, &err);
        assert_int_equal(rc, CFR_EAUTH);
        assert_int_equal(status, CFR_RPC_UNAUTHENTICATED);
        assert_non_null(strstr(err.msg, "carries no coffer identity"));
        assert_int_equal(resp.len, 0);
        struct audit_rec a;
        assert_int_equal(audit_find(mark, CFR_RPC_DENIED, 1, &a), 1);
        assert_string_equal(a.method, M_ECHO);
        assert_int_equal(a.status, CFR_RPC_UNAUTHENTICATED);
        assert_int_equal(a.cert_status, CFR_RPC_CERT_OK);
        assert_true(a.authenticated);
        assert_string_equal(a.tenant, "");
        char fp[CFR_RPC_FINGERPRINT_LEN + 1];
        openssl_fingerprint(certs[i][2], fp);
        assert_string_equal(a.fingerprint, fp);
        cfr_buf_fini(&resp);
        cfr_rpc_client_free(cli);
    }
    assert_int_equal(atomic_load(&handler_runs), runs0);
    assert_int_equal(atomic_load(&authz_runs), authz0);
}

/* Runs openssl s_client against the main server; returns its output. */
static char *
s_client(const char *version_flag, bool legacy_ciphers)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl s_client -connect %s %s %s -alpn h2 -brief "
             "-CAfile %s/ca.pem -cert %s/agent.pem -key %s/agent.key "
             "-verify_return_error </dev/null 2>&1",
             main_target, version_flag,
             legacy_ciphers ? "-cipher DEFAULT:@SECLEVEL=0" : "", pki_dir,
             pki_dir, pki_dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return NULL;
    }
    char *out = cfr_calloc(1, 16384);
    size_t n = out != NULL ? fread(out, 1, 16383, p) : 0;
    if (out != NULL) {
        out[n] = '\0';
    }
    pclose(p);
    return out;
}

/* Connects to the main server; returns the socket and our local port. */
static int
raw_connect(int *local_port_r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfr_rpc_server_port(main_srv));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    *local_port_r = ntohs(sa.sin_port);
    return fd;
}

static void
test_rpc_tls_below_1_2_refused(void **state)
{
    (void)state;
    /* gRPC 1.51's C API cannot set a minimum version; its default is TLS
     * 1.2, and this proves it. SECLEVEL=0 lets our openssl offer TLS 1.0
     * and 1.1 at all (else it refuses locally: "no protocols available"),
     * so the refusal must be the server's, which logs and audits it. */
    const char *old[] = {"-tls1_1", "-tls1"};
    for (size_t i = 0; i < 2; i++) {
        int before = atomic_load(&tls_version_refusals);
        uint64_t failures0 = cfr_rpc_server_tls_failures(main_srv);
        int mark = audit_mark();
        char *out = s_client(old[i], true);
        assert_non_null(out);
        fprintf(stderr, "rpc_test: s_client %s: %s", old[i], out);
        assert_null(strstr(out, "CONNECTION ESTABLISHED"));
        assert_null(strstr(out, "no protocols available"));
        for (int w = 0; w < 100; w++) {
            if (atomic_load(&tls_version_refusals) > before) {
                break;
            }
            sleep_ms(10);
        }
        assert_int_equal(atomic_load(&tls_version_refusals), before + 1);
        struct audit_rec a;
        assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 1, &a), 1);
        assert_string_equal(a.detail,
                            "TLS handshake failed: unsupported protocol");
        assert_string_equal(a.method, "");
        assert_int_equal(a.status, CFR_RPC_UNAVAILABLE);
        assert_int_equal(a.cert_status, CFR_RPC_CERT_NONE);
        assert_string_equal(a.addr, ""); /* 1.51 does not say */
        assert_int_equal(cfr_rpc_server_tls_failures(main_srv), failures0 + 1);
        cfr_free(out);
    }
    int mark = audit_mark();
    uint64_t failures0 = cfr_rpc_server_tls_failures(main_srv);
    char *out = s_client("-tls1_2", false);
    assert_non_null(out);
    assert_non_null(strstr(out, "CONNECTION ESTABLISHED"));
    assert_non_null(strstr(out, "Protocol version: TLSv1.2"));
    cfr_free(out);
    out = s_client("-tls1_3", false);
    assert_non_null(out);
    assert_non_null(strstr(out, "CONNECTION ESTABLISHED"));
    assert_non_null(strstr(out, "Protocol version: TLSv1.3"));
    cfr_free(out);
    /* Unspecified, the client and server settle on 1.3. */
    out = s_client("", false);
    assert_non_null(out);
    assert_non_null(strstr(out, "Protocol version: TLSv1.3"));
    cfr_free(out);
    /* Completed handshakes are no failures, even when the client then
     * leaves without a call: a hang-up mid-handshake after them is the
     * first failure recorded. */
    int port;
    int fd = raw_connect(&port);
    assert_true(fd >= 0);
    close(fd);
    struct audit_rec a;
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 1, &a), 1);
    char want[64];
    snprintf(want, sizeof(want), "ipv4:127.0.0.1:%d", port);
    assert_string_equal(a.addr, want);
    assert_int_equal(cfr_rpc_server_tls_failures(main_srv), failures0 + 1);
}

static void
test_rpc_failed_handshakes_audited(void **state)
{
    (void)state;
    uint64_t failures0 = cfr_rpc_server_tls_failures(main_srv);
    int runs0 = atomic_load(&handler_runs);

    /* Bytes that are not TLS: refused by OpenSSL, no address known. */
    int mark = audit_mark();
    int port;
    int fd = raw_connect(&port);
    assert_true(fd >= 0);
    uint8_t junk[300];
    fill(junk, sizeof(junk), 7);
    junk[0] = 0x47; /* never a TLS record type */
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    char buf[64];
    ssize_t got = read(fd, buf, sizeof(buf)); /* the server closes: EOF */
    assert_true(got <= 0);
    close(fd);
    struct audit_rec a;
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 1, &a), 1);
    assert_string_equal(a.detail, "TLS handshake failed: wrong version number");
    assert_int_equal(a.status, CFR_RPC_UNAVAILABLE);

    /* A client that hangs up mid-handshake: the socket error names it. */
    mark = audit_mark();
    fd = raw_connect(&port);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x16\x03\x01", 3), 3); /* a partial record */
    close(fd);
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 1, &a), 1);
    assert_string_equal(a.detail,
                        "TLS handshake failed: connection closed during the "
                        "handshake");
    char want[64];
    snprintf(want, sizeof(want), "ipv4:127.0.0.1:%d", port);
    assert_string_equal(a.addr, want);
    assert_int_equal(cfr_rpc_server_tls_failures(main_srv), failures0 + 2);

    /* The lines gRPC writes are parsed, not trusted: a server shutting a
     * listener, an OK status and another file's line are no failures; a
     * timeout and an unknown cause are, with a short printable cause. */
    mark = audit_mark();
    const char *file =
        "./src/core/ext/transport/chttp2/server/chttp2_server.cc";
    cfr_rpc_server_observe_grpc_log(file, "Handshaking failed: OK");
    cfr_rpc_server_observe_grpc_log(
        file, "Handshaking failed: UNKNOWN:Handshake read failed {children:["
              "UNKNOWN:FD Shutdown {children:[UNKNOWN:Listener stopped "
              "serving. {}]}]}");
    cfr_rpc_server_observe_grpc_log("./src/other.cc",
                                    "Handshaking failed: UNKNOWN:x");
    cfr_rpc_server_observe_grpc_log(file, "Handshaking went fine");
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 0, NULL), 0);
    cfr_rpc_server_observe_grpc_log(
        file, "Handshaking failed: UNKNOWN:Handshake read failed {children:["
              "UNKNOWN:FD Shutdown {children:[UNKNOWN:Handshake timed out {}]}"
              "]}");
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 1, &a), 1);
    assert_string_equal(a.detail, "TLS handshake failed: handshake timed out");
    cfr_rpc_server_observe_grpc_log(
        file, "Handshaking failed: INTERNAL:Odd\x01thing {target_address:"
              "\"ipv6:[::1]:4\"}");
    assert_int_equal(audit_find(mark, CFR_RPC_TLS_FAILED, 2, &a), 2);
    assert_string_equal(a.detail, "TLS handshake failed: Odd?thing");
    assert_string_equal(a.addr, "ipv6:[::1]:4");
    assert_int_equal(cfr_rpc_server_tls_failures(main_srv), failures0 + 4);

    /* None of it reached a handler, and the server goes on serving. */
    assert_int_equal(atomic_load(&handler_runs), runs0);
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    struct cfr_buf resp;
    cfr_buf_init(&resp, 64);
    struct cfr_err err;
    int status = -1;
    assert_int_equal(
        cfr_rpc_unary(cli, M_ECHO, "ok", 2, 5000, &resp, &status, &err), 0);
    assert_int_equal(resp.len, 2);
    cfr_buf_fini(&resp);
    cfr_rpc_client_free(cli);
}

static void
test_rpc_authz_denial_and_unknown_method_audited(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    int runs0 = atomic_load(&handler_runs);
    struct cfr_buf resp;
    cfr_buf_init(&resp, 64);
    struct cfr_err err;
    int status = -1;
    int rc = cfr_rpc_unary(cli, M_SECRET, "x", 1, 5000, &resp, &status, &err);
    assert_int_equal(rc, CFR_EDENIED);
    assert_int_equal(status, CFR_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "PERMISSION_DENIED"));
    assert_int_equal(resp.len, 0);
    assert_int_equal(
        audit_count(M_SECRET, CFR_RPC_DENIED, CFR_RPC_PERMISSION_DENIED), 1);

    rc = cfr_rpc_unary(cli, M_NOPE, "x", 1, 5000, &resp, &status, &err);
    assert_int_equal(rc, CFR_EVERSION);
    assert_int_equal(status, CFR_RPC_UNIMPLEMENTED);
    assert_int_equal(
        audit_count(M_NOPE, CFR_RPC_NO_METHOD, CFR_RPC_UNIMPLEMENTED), 1);
    pthread_mutex_lock(&audit_mu);
    bool tenant_ok = false;
    for (int i = 0; i < naudits; i++) {
        if (strcmp(audits[i].method, M_NOPE) == 0) {
            tenant_ok = strcmp(audits[i].tenant, "acme") == 0;
        }
    }
    pthread_mutex_unlock(&audit_mu);
    assert_true(tenant_ok);
    assert_int_equal(atomic_load(&handler_runs), runs0);
    cfr_buf_fini(&resp);
    cfr_rpc_client_free(cli);
}

static void
test_rpc_oversized_message_refused_server_goes_on(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    size_t big = SERVER_MAX_MSG + 1;
    uint8_t *msg = cfr_calloc(1, big);
    assert_non_null(msg);
    int runs0 = atomic_load(&handler_runs);
    struct cfr_buf resp;
    cfr_buf_init(&resp, RESP_CAP);
    struct cfr_err err;
    int status = -1;
    int rc = cfr_rpc_unary(cli, M_ECHO, msg, big, 10000, &resp, &status, &err);
    assert_int_equal(rc, CFR_ELIMIT);
    assert_int_equal(status, CFR_RPC_RESOURCE_EXHAUSTED);
    assert_int_equal(atomic_load(&handler_runs), runs0);

    /* In a client stream too: the handler sees the call die. */
    struct cfr_rpc_call *call = NULL;
    assert_int_equal(cfr_rpc_cstream_open(cli, M_SUM, 10000, &call, &err), 0);
    (void)cfr_rpc_cstream_send(call, msg, big, &err);
    rc = cfr_rpc_cstream_finish(call, &resp, &status, &err);
    assert_int_equal(rc, CFR_ELIMIT);
    assert_int_equal(status, CFR_RPC_RESOURCE_EXHAUSTED);
    cfr_rpc_call_free(call);

    /* Exactly the maximum still passes, and the server keeps serving. */
    rc = cfr_rpc_unary(cli, M_ECHO, msg, SERVER_MAX_MSG - 16, 10000, &resp,
                       &status, &err);
    assert_int_equal(rc, 0);
    assert_int_equal(resp.len, SERVER_MAX_MSG - 16);
    cfr_rpc_client_free(cli);

    /* A client's own receive limit holds as well. */
    cli = client_for(cfr_rpc_server_port(main_srv), pem_agent, pem_agent_key,
                     4096);
    assert_non_null(cli);
    cfr_buf_reset(&resp);
    rc = cfr_rpc_unary(cli, M_ECHO, msg, 8192, 10000, &resp, &status, &err);
    assert_int_equal(rc, CFR_ELIMIT);
    assert_int_equal(status, CFR_RPC_RESOURCE_EXHAUSTED);
    cfr_rpc_client_free(cli);
    cfr_buf_fini(&resp);
    cfr_free(msg);
}

static void
test_rpc_deadline_exceeded_promptly(void **state)
{
    (void)state;
    struct cfr_rpc_client *cli = agent_client();
    assert_non_null(cli);
    atomic_store(&slow_done, 0);
    atomic_store(&slow_saw_cancel, 0);
    struct cfr_err err;
    int status = -1;
    int64_t t0 = now_ms();
    int rc = slow_call(cli, 1500, false, 300, &status, &err);
    int64_t took = now_ms() - t0;
    fprintf(stderr, "rpc_test: deadline 300 ms answered after %lld ms\n",
            (long long)took);
    assert_int_equal(rc, CFR_EUNAVAIL);
    assert_int_equal(status, CFR_RPC_DEADLINE_EXCEEDED);
    assert_true(took >= 250);
    assert_true(took < 1000); /* the handler still sleeps until 1500 */
    /* The handler learns its call is gone, and its answer is refused. */
    for (int i = 0; i < 400 && atomic_load(&slow_done) == 0; i++) {
        sleep_ms(10);
    }
    assert_int_equal(atomic_load(&slow_done), 1);
    /* The handler saw the client's deadline, minus transit. */
    int64_t left = atomic_load(&slow_remaining_ms);
    assert_true(left > 0 && left <= 300);
    assert_int_equal(atomic_load(&slow_saw_cancel), 1);
    assert_int_equal(atomic_load(&slow_finish_rc), CFR_EUNAVAIL);
    assert_int_equal(audit_wait(M_SLOW, CFR_RPC_ALLOWED, CFR_RPC_CANCELLED, 1),
                     1);
    cfr_rpc_client_free(cli);
}

struct slow_arg {
    struct cfr_rpc_client *cli;
    uint32_t ms;
    bool coop;
    int status;
    int rc;
    int64_t took;
};

static void *
slow_thread(void *p)
{
    struct slow_arg *a = p;
    struct cfr_err err;
    int64_t t0 = now_ms();
    a->rc = slow_call(a->cli, a->ms, a->coop, 20000, &a->status, &err);
    a->took = now_ms() - t0;
    return NULL;
}

static void
test_rpc_max_concurrent_calls(void **state)
{
    (void)state;
    struct cfr_rpc_server *srv = server_start(2, 4);
    assert_non_null(srv);
    struct cfr_rpc_client *cli =
        client_for(cfr_rpc_server_port(srv), pem_agent, pem_agent_key, 0);
    assert_non_null(cli);
    /* Connect first, so the five calls arrive together. */
    struct cfr_err err;
    int status = -1;
    assert_int_equal(slow_call(cli, 0, false, 5000, &status, &err), 0);
    int over0 =
        audit_count(M_SLOW, CFR_RPC_OVERLOADED, CFR_RPC_RESOURCE_EXHAUSTED);

    struct slow_arg args[5];
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        args[i] = (struct slow_arg){.cli = cli, .ms = 1000};
        assert_int_equal(pthread_create(&th[i], NULL, slow_thread, &args[i]),
                         0);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < 5; i++) {
        pthread_join(th[i], NULL);
        if (args[i].status == CFR_RPC_OK) {
            ok++;
            assert_true(args[i].took >= 900);
        } else if (args[i].status == CFR_RPC_RESOURCE_EXHAUSTED) {
            busy++;
            assert_int_equal(args[i].rc, CFR_ELIMIT);
            assert_true(args[i].took < 900); /* refused, not queued */
        }
    }
    assert_int_equal(ok, 2);
    assert_int_equal(busy, 3);
    assert_int_equal(
        audit_count(M_SLOW, CFR_RPC_OVERLOADED, CFR_RPC_RESOURCE_EXHAUSTED) -
            over0,
        3);
    /* The slots came back. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(slow_call(cli, 0, false, 5000, &status, &err), 0);
    }
    cfr_rpc_client_free(cli);
    cfr_rpc_server_free(srv);
}

struct finish_arg {
    struct cfr_rpc_call *call;
    int rc, status;
    uint64_t count;
    char msg[CFR_ERR_MSG_MAX];
};

static void *
finish_thread(void *p)
{
    struct finish_arg *a = p;
    struct cfr_buf resp;
    struct cfr_err err;
    cfr_buf_init(&resp, 64);
    a->rc = cfr_rpc_cstream_finish(a->call, &resp, &a->status, &err);
    if (a->rc != 0) {
        snprintf(a->msg, sizeof(a->msg), "%s", err.msg);
    } else if (resp.len >= 8) {
        a->count = cfr_get_le64(resp.data);
    }
    cfr_buf_fini(&resp);
    return NULL;
}

/*
 * Long client streams (uploads) must not starve short unary calls (an
 * agent's existence query): with 4 workers, streams may hold 3 of them,
 * so a unary call is served at once while 4 streams are open.
 */
static void
test_rpc_unary_not_starved_by_streams(void **state)
{
    (void)state;
    enum { NSTREAMS = 4 };
    struct cfr_rpc_server *srv = server_start(16, 4);
    assert_non_null(srv);
    struct cfr_rpc_client *cli =
        client_for(cfr_rpc_server_port(srv), pem_agent, pem_agent_key, 0);
    assert_non_null(cli);
    struct cfr_err err;
    struct cfr_rpc_call *calls[NSTREAMS];
    int runs0 = atomic_load(&handler_runs);
    for (int i = 0; i < NSTREAMS; i++) {
        assert_int_equal(
            cfr_rpc_cstream_open(cli, M_SUM, 20000, &calls[i], &err), 0);
        assert_int_equal(cfr_rpc_cstream_send(calls[i], "x", 1, &err), 0);
    }
    /* Three handlers take their streams; the fourth stream waits. */
    int64_t end = now_ms() + 5000;
    while (atomic_load(&handler_runs) < runs0 + 3 && now_ms() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&handler_runs), runs0 + 3);

    struct cfr_buf resp;
    cfr_buf_init(&resp, RESP_CAP);
    int status = -1;
    int64_t t0 = now_ms();
    assert_int_equal(
        cfr_rpc_unary(cli, M_ECHO, "ping", 4, 3000, &resp, &status, &err), 0);
    assert_int_equal(status, CFR_RPC_OK);
    assert_true(now_ms() - t0 < 2000);
    cfr_buf_fini(&resp);
    /* The streams still complete, the queued one included. Which one
     * the server queued is unknown, so all finish at once. */
    struct finish_arg fa[NSTREAMS];
    pthread_t th[NSTREAMS];
    for (int i = 0; i < NSTREAMS; i++) {
        fa[i] = (struct finish_arg){.call = calls[i], .status = -1};
        assert_int_equal(pthread_create(&th[i], NULL, finish_thread, &fa[i]),
                         0);
    }
    for (int i = 0; i < NSTREAMS; i++) {
        pthread_join(th[i], NULL);
        if (fa[i].rc != 0) {
            fail_msg("stream %d: %s (status %d)", i, fa[i].msg, fa[i].status);
        }
        assert_int_equal(fa[i].status, CFR_RPC_OK);
        assert_int_equal(fa[i].count, 1);
        cfr_rpc_call_free(calls[i]);
    }
    cfr_rpc_client_free(cli);
    cfr_rpc_server_free(srv);
}

static void
test_rpc_shutdown_with_call_in_flight(void **state)
{
    (void)state;
    /* 1: a call that ends within the grace period completes normally. */
    struct cfr_rpc_server *srv = server_start(4, 2);
    assert_non_null(srv);
    struct cfr_rpc_client *cli =
        client_for(cfr_rpc_server_port(srv), pem_agent, pem_agent_key, 0);
    assert_non_null(cli);
    atomic_store(&slow_started, 0);
    struct slow_arg a = {.cli = cli, .ms = 600, .coop = true};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &a), 0);
    for (int i = 0; i < 500 && atomic_load(&slow_started) == 0; i++) {
        sleep_ms(10);
    }
    assert_int_equal(atomic_load(&slow_started), 1);
    int64_t t0 = now_ms();
    cfr_rpc_server_stop(srv, 3000);
    int64_t took = now_ms() - t0;
    pthread_join(th, NULL);
    fprintf(stderr, "rpc_test: graceful stop took %lld ms\n", (long long)took);
    assert_int_equal(a.status, CFR_RPC_OK);
    assert_true(took < 3000);
    /* New calls are refused once stopped. */
    struct cfr_err err;
    int status = -1;
    assert_int_not_equal(slow_call(cli, 0, false, 2000, &status, &err), 0);
    assert_int_equal(status, CFR_RPC_UNAVAILABLE);
    cfr_rpc_server_free(srv);
    cfr_rpc_client_free(cli);

    /* 2: a call that outlives the grace period is cancelled. */
    srv = server_start(4, 2);
    assert_non_null(srv);
    cli = client_for(cfr_rpc_server_port(srv), pem_agent, pem_agent_key, 0);
    assert_non_null(cli);
    atomic_store(&slow_started, 0);
    a = (struct slow_arg){.cli = cli, .ms = 10000, .coop = true};
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &a), 0);
    for (int i = 0; i < 500 && atomic_load(&slow_started) == 0; i++) {
        sleep_ms(10);
    }
    assert_int_equal(atomic_load(&slow_started), 1);
    t0 = now_ms();
    cfr_rpc_server_stop(srv, 300);
    took = now_ms() - t0;
    pthread_join(th, NULL);
    fprintf(stderr, "rpc_test: stop after 300 ms grace took %lld ms\n",
            (long long)took);
    assert_true(took >= 250);
    assert_true(took < 2000);
    assert_true(a.took < 3000);
    assert_int_not_equal(a.status, CFR_RPC_OK);
    cfr_rpc_server_free(srv);
    cfr_rpc_client_free(cli);
}

static void
test_rpc_port_in_use_and_unstarted_free(void **state)
{
    (void)state;
    struct cfr_err err;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", cfr_rpc_server_port(main_srv));
    struct cfr_rpc_server_opts o = {
        .listen_addr = addr,
        .cert_pem = pem_server,
        .key_pem = pem_server_key,
        .client_ca_pem = pem_ca,
        .authz = authz,
    };
    struct cfr_rpc_server *srv = NULL;
    assert_int_equal(cfr_rpc_server_new(&o, &srv, &err), CFR_EIO);
    assert_null(srv);
    assert_non_null(strstr(err.msg, addr));
    /* A server that never started frees cleanly. */
    o.listen_addr = "127.0.0.1:0";
    assert_int_equal(cfr_rpc_server_new(&o, &srv, &err), 0);
    assert_true(cfr_rpc_server_port(srv) > 0);
    assert_int_equal(cfr_rpc_server_add_method(srv, M_ECHO, CFR_RPC_KIND_UNARY,
                                               h_echo, NULL, &err),
                     0);
    assert_int_equal(cfr_rpc_server_add_method(srv, M_ECHO, CFR_RPC_KIND_UNARY,
                                               h_echo, NULL, &err),
                     CFR_EEXIST);
    cfr_rpc_server_free(srv);
    /* A client CA text without a certificate is a configuration error,
     * not a server that trusts nobody (or anybody). */
    o.client_ca_pem = "not a certificate";
    assert_int_equal(cfr_rpc_server_new(&o, &srv, &err), CFR_ECONFIG);
    assert_null(srv);
    assert_non_null(strstr(err.msg, "client CA"));
    o.client_ca_pem = pem_ca;
    /* No authorization hook: refused, fail closed. */
    o.authz = NULL;
    assert_int_equal(cfr_rpc_server_new(&o, &srv, &err), CFR_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpc_identity_parse_strict),
        cmocka_unit_test(test_rpc_unary_echo_sees_identity),
        cmocka_unit_test(test_rpc_handler_names_audit_tenant),
        cmocka_unit_test(test_rpc_client_stream_100_mib),
        cmocka_unit_test(test_rpc_server_stream_all_messages),
        cmocka_unit_test(test_rpc_bad_client_certificates_refused),
        cmocka_unit_test(test_rpc_certificate_without_identity_unauthenticated),
        cmocka_unit_test(test_rpc_tls_below_1_2_refused),
        cmocka_unit_test(test_rpc_failed_handshakes_audited),
        cmocka_unit_test(test_rpc_authz_denial_and_unknown_method_audited),
        cmocka_unit_test(test_rpc_oversized_message_refused_server_goes_on),
        cmocka_unit_test(test_rpc_deadline_exceeded_promptly),
        cmocka_unit_test(test_rpc_max_concurrent_calls),
        cmocka_unit_test(test_rpc_unary_not_starved_by_streams),
        cmocka_unit_test(test_rpc_shutdown_with_call_in_flight),
        cmocka_unit_test(test_rpc_port_in_use_and_unstarted_free),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
