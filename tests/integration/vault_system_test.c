/*
 * vault_system_test.c - the operators' System RPC against a real vault
 * over mutual TLS: the tenant registry (registration, usage, placement by
 * region), the deny list (by certificate fingerprint and by identity,
 * effective on the next call, undone by UNREVOKE), the second factor for
 * revoking a vault and for shortening retention (a second operator, or the
 * operator's TOTP code), TOTP enrolment of a tenant admin, the vault-wide
 * audit log, and the security notifications (revocation, new agent
 * identity) reaching a webhook.
 *
 * One vault, started without the harness's automatic registration, so the
 * first calls see an empty registry. Its lockout threshold is the highest
 * the vault accepts: this test is refused on purpose many times, always
 * from 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>  /* htonl */
#include <netinet/in.h> /* sockaddr_in */
#include <pthread.h>    /* the webhook listener */
#include <signal.h>     /* SIGTERM */
#include <stdio.h>      /* snprintf, popen */
#include <stdlib.h>     /* getenv */
#include <string.h>     /* strstr */
#include <sys/socket.h> /* socket, accept */
#include <sys/stat.h>   /* stat: no tenant directory */
#include <sys/time.h>   /* struct timeval */
#include <time.h>       /* time */
#include <unistd.h>     /* read, close */

#include "coffer_vault.pb-c.h"
#include "env.h"              /* a sealing session */
#include "id.h"               /* cfr_id_plain: the checksum a peer recomputes */
#include "keys.h"             /* a tenant keyring for real sealed chunks */
#include "kv.h"               /* damaging a stored object, as a bad disk does */
#include "mem.h"              /* cfr_free */
#include "rpc.h"              /* statuses */
#include "totp.h"             /* codes for the enrolled secrets */
#include "scenario_support.h" /* scn_vault_db */
#include "vault_client_support.h"
#include "vault_support.h"

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *keyring;
static struct cfr_session *session;
/* acme's root reference page, as a peer listed it (replication test). */
static uint8_t acme_root[32];
static bool have_acme_root;

/* ---- a webhook listener ------------------------------------------------ */

struct hook {
    int fd;
    int port;
    pthread_mutex_t mu;
    char body[65536];
    size_t len;
    pthread_t th;
};

static struct hook hook;

static void *
hook_main(void *arg)
{
    struct hook *h = arg;
    /* Serves until the test closes the socket (accept then fails). */
    for (;;) {
        char buf[8192];
        size_t got = 0;
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) {
            break;
        }
        struct timeval tv = {2, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        for (;;) {
            ssize_t n = read(c, buf + got, sizeof(buf) - 1 - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
            buf[got] = '\0';
            char *hdr_end = strstr(buf, "\r\n\r\n");
            if ((hdr_end != NULL && strrchr(hdr_end, '}') != NULL) ||
                got == sizeof(buf) - 1) {
                break;
            }
        }
        static const char ok[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!write(c, ok, sizeof(ok) - 1);
        close(c);
        pthread_mutex_lock(&h->mu);
        if (h->len + got < sizeof(h->body)) {
            memcpy(h->body + h->len, buf, got);
            h->len += got;
            h->body[h->len] = '\0';
        }
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

static int
hook_start(struct hook *h)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    pthread_mutex_init(&h->mu, NULL);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (h->fd < 0 || bind(h->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(h->fd, 16) != 0 ||
        getsockname(h->fd, (struct sockaddr *)&a, &al) != 0) {
        return -1;
    }
    h->port = ntohs(a.sin_port);
    return pthread_create(&h->th, NULL, hook_main, h) == 0 ? 0 : -1;
}

static void
hook_stop(struct hook *h)
{
    shutdown(h->fd, SHUT_RDWR);
    close(h->fd);
    pthread_join(h->th, NULL);
    pthread_mutex_destroy(&h->mu);
}

/* Waits (bounded) until every needle is in the bodies received. */
static bool
hook_wait(struct hook *h, const char *a, const char *b, int64_t timeout_ms)
{
    int64_t end = vc_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        bool ok = strstr(h->body, a) != NULL &&
                  (b == NULL || strstr(h->body, b) != NULL);
        pthread_mutex_unlock(&h->mu);
        if (ok) {
            return true;
        }
        if (vc_now_ms() > end) {
            return false;
        }
        vc_sleep_ms(20);
    }
}

/* ---- System calls ------------------------------------------------------ */

/*
 * One System call as ident; *resp_r (may be NULL) gets the response, msg
 * the status message. Returns the gRPC status.
 */
static int
sys_call(const char *ident, const Coffer__V1__SystemRequest *req,
         Coffer__V1__SystemResponse **resp_r, char *msg, size_t msg_size)
{
    struct cfr_rpc_client *cli = vs_client(&vault, ident);
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    int st;
    assert_non_null(cli);
    cfr_err_clear(&err);
    st = vs_unary(cli, "System", &req->base,
                  &coffer__v1__system_response__descriptor, &resp, &err);
    if (msg != NULL) {
        snprintf(msg, msg_size, "%s", err.msg);
    }
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
    }
    if (resp_r != NULL) {
        *resp_r = (Coffer__V1__SystemResponse *)resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cfr_rpc_client_free(cli);
    return st;
}

static int
deny_op(const char *ident, Coffer__V1__SystemOp op, const char *kind,
        const char *value, const uint8_t *approval, const char *totp,
        Coffer__V1__SystemResponse **resp_r)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__DenyEntry d = COFFER__V1__DENY_ENTRY__INIT;
    d.kind = (char *)kind;
    d.value = (char *)value;
    d.reason = (char *)"test";
    req.op = op;
    req.deny = &d;
    if (approval != NULL) {
        req.approval_id.data = (uint8_t *)approval;
        req.approval_id.len = 16;
    }
    if (totp != NULL) {
        req.totp = (char *)totp;
    }
    return sys_call(ident, &req, resp_r, NULL, 0);
}

static int
approve(const char *ident, const uint8_t id[16])
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE;
    req.approval_id.data = (uint8_t *)id;
    req.approval_id.len = 16;
    return sys_call(ident, &req, NULL, NULL, 0);
}

static int
tenant_set(const char *name, const char *const *regions, int64_t retention_ms,
           const uint8_t *approval, Coffer__V1__SystemResponse **resp_r)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
    size_t n = 0;
    while (regions != NULL && regions[n] != NULL) {
        n++;
    }
    ti.name = (char *)name;
    ti.regions = (char **)regions;
    ti.n_regions = n;
    ti.retention_ms = retention_ms;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET;
    req.tenant = &ti;
    if (approval != NULL) {
        req.approval_id.data = (uint8_t *)approval;
        req.approval_id.len = 16;
    }
    return sys_call("operator", &req, resp_r, NULL, 0);
}

/* The vault-wide audit log (tenant "" = all), synced by the vault. */
static Coffer__V1__SystemResponse *
audit(const char *tenant)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__SystemResponse *resp = NULL;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT;
    req.tenant_name = (char *)tenant;
    req.limit = 10000;
    assert_int_equal(sys_call("operator", &req, &resp, NULL, 0), CFR_RPC_OK);
    return resp;
}

static void
code_now(const uint8_t *secret, size_t len, char out[7])
{
    struct cfr_err err;
    uint32_t c = 0;
    assert_int_equal(
        cfr_totp_at(secret, len, NULL, (int64_t)time(NULL), &c, &err), 0);
    snprintf(out, 7, "%06u", (unsigned)c);
}

/* The SHA-256 of a test certificate (DER), lower-case hex, via openssl. */
static void
fingerprint_of(const char *stem, char out[65])
{
    char cmd[1024], path[2 * VS_PATH_MAX], line[256];
    FILE *p;
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s -outform DER | sha256sum | cut -c1-64",
             vs_env_path(&env, stem, path, sizeof(path)));
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(line, sizeof(line), p));
    pclose(p);
    assert_true(strlen(line) >= 64);
    memcpy(out, line, 64);
    out[64] = '\0';
}

/* Health as ident: the cheapest call that passes the deny list. */
static int
health_as(const char *ident)
{
    struct cfr_rpc_client *cli = vs_client(&vault, ident);
    int st;
    assert_non_null(cli);
    st = vc_health(cli, NULL);
    cfr_rpc_client_free(cli);
    return st;
}

static int
open_lease_as(const char *ident, char *msg, size_t msg_size)
{
    struct cfr_rpc_client *cli = vs_client(&vault, ident);
    uint8_t lease[16];
    struct cfr_err err;
    int st;
    assert_non_null(cli);
    cfr_err_clear(&err);
    st = vc_open_lease(session, cli, lease, &err);
    if (msg != NULL) {
        snprintf(msg, msg_size, "%s", err.msg);
    }
    cfr_rpc_client_free(cli);
    return st;
}

/* ---- the tests --------------------------------------------------------- */

/*
 * Unregistered tenants are refused (and audited) without a database being
 * created; registering makes the same agent work, and TENANT_LIST shows
 * its usage once it uploaded.
 */
static void
test_vault_system_registry(void **state)
{
    (void)state;
    char msg[256], path[2 * VS_PATH_MAX + 64];
    struct stat sb;
    Coffer__V1__SystemResponse *resp = NULL;
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;

    /* Health works for anyone authenticated; data does not. */
    assert_int_equal(health_as("agent"), CFR_RPC_OK);
    assert_int_equal(open_lease_as("agent", msg, sizeof(msg)),
                     CFR_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(msg, "tenant not registered"));
    snprintf(path, sizeof(path), "%s/data/acme", vault.dir);
    assert_int_not_equal(stat(path, &sb), 0);
    assert_true(vc_log_has(&vault, "vault.unregistered tenant=acme"));

    /* Only an operator manages the vault. */
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    assert_int_equal(sys_call("acme-admin", &req, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(sys_call("agent", &req, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);

    assert_int_equal(vs_tenant_add(&vault, "acme", NULL, msg, sizeof(msg)),
                     CFR_RPC_OK);
    assert_int_equal(vs_tenant_add(&vault, "acme", NULL, msg, sizeof(msg)),
                     CFR_RPC_ALREADY_EXISTS);
    assert_int_equal(vs_tenant_add(&vault, "globex", NULL, msg, sizeof(msg)),
                     CFR_RPC_OK);
    /* A bad name is refused with a reason, nothing registered. */
    assert_int_equal(vs_tenant_add(&vault, "Bad_Name", NULL, msg, sizeof(msg)),
                     CFR_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "tenant.name"));

    /* An upload by acme's agent, then its usage in the list. */
    {
        struct cfr_rpc_client *agent = vs_client(&vault, "agent");
        struct vc_objset chunks = {0};
        struct vc_snapshot sn;
        uint8_t lease[16];
        for (int i = 0; i < 3; i++) {
            vc_make_chunk(keyring, session, &chunks, 100 + (uint64_t)i, 2000);
        }
        vc_make_snapshot(keyring, session, &sn, &chunks, "INBOX", 1);
        assert_int_equal(vc_open_lease(session, agent, lease, NULL),
                         CFR_RPC_OK);
        assert_int_equal(
            vc_put_objects(agent, lease, &chunks, 0, chunks.n, 8, NULL, NULL),
            CFR_RPC_OK);
        assert_int_equal(vc_put_objects(agent, lease, &sn.pages, 0, sn.pages.n,
                                        8, NULL, NULL),
                         CFR_RPC_OK);
        assert_int_equal(vc_commit(agent, lease, &sn, NULL, NULL), CFR_RPC_OK);
        vc_snapshot_fini(&sn);
        vc_objset_fini(&chunks);
        cfr_rpc_client_free(agent);
    }
    assert_int_equal(sys_call("operator", &req, &resp, NULL, 0), CFR_RPC_OK);
    assert_int_equal(resp->n_tenants, 2);
    assert_string_equal(resp->tenants[0]->name, "acme");
    assert_true(resp->tenants[0]->objects >= 3);
    assert_true(resp->tenants[0]->object_bytes > 3 * 1000);
    assert_int_equal(resp->tenants[0]->snapshots, 1);
    assert_true(resp->tenants[0]->created_ms > 0);
    assert_string_equal(resp->tenants[1]->name, "globex");
    assert_int_equal(resp->tenants[1]->objects, 0);
    assert_int_equal(resp->tenants[1]->snapshots, 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Data of a tenant placed elsewhere is refused here; metadata is not. */
static void
test_vault_system_region_placement(void **state)
{
    (void)state;
    static const char *const elsewhere[] = {"eu-west", "eu-central", NULL};
    static const char *const here[] = {"eu-west", "test-1", NULL};
    char msg[256];

    assert_int_equal(tenant_set("globex", elsewhere, 0, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(open_lease_as("globex-agent", msg, sizeof(msg)),
                     CFR_RPC_FAILED_PRECONDITION);
    assert_non_null(
        strstr(msg, ": tenant globex is not allowed in region test-1"));
    {
        struct cfr_rpc_client *cli = vs_client(&vault, "globex-agent");
        int st = -1;
        Coffer__V1__ListSnapshotsResponse *ls =
            vc_list_snapshots(cli, false, &st);
        assert_int_equal(st, CFR_RPC_OK);
        protobuf_c_message_free_unpacked(&ls->base, NULL);
        cfr_rpc_client_free(cli);
    }
    assert_int_equal(tenant_set("globex", here, 0, NULL, NULL), CFR_RPC_OK);
    assert_int_equal(open_lease_as("globex-agent", NULL, 0), CFR_RPC_OK);
    assert_int_equal(tenant_set("nosuch", here, 0, NULL, NULL),
                     CFR_RPC_NOT_FOUND);
}

/*
 * A fingerprint stops one certificate (agent2) at once, the identity URI
 * stops every holder, UNREVOKE restores; the revocation is notified.
 */
static void
test_vault_system_revoke(void **state)
{
    (void)state;
    char fp[65];
    Coffer__V1__SystemResponse *resp = NULL;
    Coffer__V1__SystemRequest list = COFFER__V1__SYSTEM_REQUEST__INIT;
    static const char acme_agent[] = "coffer://tenant/acme/role/agent";

    fingerprint_of("agent2.pem", fp);
    assert_int_equal(health_as("agent2"), CFR_RPC_OK);
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "fingerprint", fp, NULL, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(health_as("agent2"), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(health_as("agent"), CFR_RPC_OK);
    assert_int_equal(open_lease_as("agent", NULL, 0), CFR_RPC_OK);

    list.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST;
    assert_int_equal(sys_call("operator", &list, &resp, NULL, 0), CFR_RPC_OK);
    assert_int_equal(resp->n_denied, 1);
    assert_string_equal(resp->denied[0]->kind, "fingerprint");
    assert_string_equal(resp->denied[0]->value, fp);
    assert_string_equal(resp->denied[0]->by, "coffer://operator/alice");
    assert_true(resp->denied[0]->added_ms > 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", acme_agent, NULL, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(health_as("agent"), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(health_as("agent2"), CFR_RPC_PERMISSION_DENIED);
    /* Other identities of the tenant are untouched. */
    assert_int_equal(health_as("acme-restore"), CFR_RPC_OK);

    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE,
                             "identity", acme_agent, NULL, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(health_as("agent"), CFR_RPC_OK);
    assert_int_equal(health_as("agent2"), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE,
                             "fingerprint", fp, NULL, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(health_as("agent2"), CFR_RPC_OK);
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE,
                             "fingerprint", fp, NULL, NULL, NULL),
                     CFR_RPC_NOT_FOUND);
    /* A value that names nothing revocable is refused. */
    assert_int_equal(
        deny_op("operator", COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE, "identity",
                "coffer://tenant/acme", NULL, NULL, NULL),
        CFR_RPC_INVALID_ARGUMENT);

    if (!hook_wait(&hook, "vault.revocation", fp, 10000)) {
        fail_msg("no revocation notification; webhook got:\n%s", hook.body);
    }
    assert_true(vc_log_has(&vault, "vault.revocation kind=fingerprint"));
}

/*
 * Revoking a vault needs a second operator (never the requester itself),
 * or the operator's TOTP code; replacing that TOTP secret needs one too.
 */
static void
test_vault_system_second_factor(void **state)
{
    (void)state;
    Coffer__V1__SystemResponse *resp = NULL;
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    uint8_t id[16], secret[20];
    char code[7];
    bool found = false;

    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/x", NULL, NULL, &resp),
                     CFR_RPC_OK);
    assert_true(resp->pending);
    assert_int_equal(resp->approval_id.len, 16);
    memcpy(id, resp->approval_id.data, 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* Pending is not revoked; self-approval and replays fail. */
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/x", id, NULL, NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(approve("operator", id), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(approve("acme-admin", id), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(approve("operator2", id), CFR_RPC_OK);
    /* Approved for exactly this identity. */
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/z", id, NULL, NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/x", id, NULL, &resp),
                     CFR_RPC_OK);
    assert_false(resp->pending);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/x", id, NULL, NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST;
    assert_int_equal(sys_call("operator", &req, &resp, NULL, 0), CFR_RPC_OK);
    for (size_t i = 0; i < resp->n_denied; i++) {
        found |= strcmp(resp->denied[i]->value, "coffer://vault/x") == 0;
    }
    assert_true(found);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* The operator enrols its own TOTP secret: the first needs nothing. */
    for (size_t i = 0; i < sizeof(secret); i++) {
        secret[i] = (uint8_t)(0xa0 + i);
    }
    {
        Coffer__V1__SystemRequest t = COFFER__V1__SYSTEM_REQUEST__INIT;
        t.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET;
        t.totp_secret.data = secret;
        t.totp_secret.len = sizeof(secret);
        assert_int_equal(sys_call("operator", &t, &resp, NULL, 0), CFR_RPC_OK);
        assert_false(resp->pending);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        /* Not someone else's. */
        t.principal = (char *)"bob";
        assert_int_equal(sys_call("operator", &t, NULL, NULL, 0),
                         CFR_RPC_PERMISSION_DENIED);
        /* Replacing it needs a second factor. */
        t.principal = (char *)"";
        assert_int_equal(sys_call("operator", &t, &resp, NULL, 0), CFR_RPC_OK);
        assert_true(resp->pending);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    /* A wrong code is refused; the right one revokes at once. */
    code_now(secret, sizeof(secret), code);
    {
        char wrong[16];
        snprintf(wrong, sizeof(wrong), "%06u",
                 (unsigned)((strtoul(code, NULL, 10) + 500000) % 1000000));
        assert_int_equal(
            deny_op("operator", COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                    "identity", "coffer://vault/y", NULL, wrong, NULL),
            CFR_RPC_PERMISSION_DENIED);
    }
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/y", NULL, code, &resp),
                     CFR_RPC_OK);
    assert_false(resp->pending);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* The same code again is a replay. */
    assert_int_equal(deny_op("operator",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE,
                             "identity", "coffer://vault/w", NULL, code, NULL),
                     CFR_RPC_PERMISSION_DENIED);

    /* Shortening a tenant's retention waits for a second operator. */
    assert_int_equal(tenant_set("acme", NULL, 2 * 86400000LL, NULL, &resp),
                     CFR_RPC_OK);
    assert_true(resp->pending);
    memcpy(id, resp->approval_id.data, 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    assert_int_equal(approve("operator2", id), CFR_RPC_OK);
    assert_int_equal(tenant_set("acme", NULL, 2 * 86400000LL, id, &resp),
                     CFR_RPC_OK);
    assert_false(resp->pending);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* Lengthening it again needs nothing. */
    assert_int_equal(tenant_set("acme", NULL, 0, NULL, &resp), CFR_RPC_OK);
    assert_false(resp->pending);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/*
 * An operator enrols a tenant admin's TOTP secret; the admin then uses it
 * as the second factor of a destructive Admin op.
 */
static void
test_vault_system_enrols_admin_totp(void **state)
{
    (void)state;
    Coffer__V1__SystemRequest t = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__AdminResponse *ar = NULL;
    struct cfr_rpc_client *adm = vs_client(&vault, "acme-admin");
    uint8_t secret[32];
    char code[7], msg[256];

    for (size_t i = 0; i < sizeof(secret); i++) {
        secret[i] = (uint8_t)(0x11 * (i + 1));
    }
    t.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET;
    t.tenant_name = (char *)"acme";
    t.principal = (char *)"acme-admin";
    t.totp_secret.data = secret;
    t.totp_secret.len = sizeof(secret);
    assert_int_equal(sys_call("operator", &t, NULL, NULL, 0), CFR_RPC_OK);
    t.tenant_name = (char *)"nosuch";
    assert_int_equal(sys_call("operator", &t, NULL, NULL, 0),
                     CFR_RPC_NOT_FOUND);

    code_now(secret, sizeof(secret), code);
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION, NULL,
                    86400000LL, NULL, code, &ar, msg, sizeof(msg)),
        CFR_RPC_OK);
    assert_false(ar->pending);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    cfr_rpc_client_free(adm);
}

/*
 * The vault-wide audit: other tenants' records, a refused unauthenticated
 * call, System ops with their outcome; the tenant filter; and the
 * identity.new notification of acme's agent certificate.
 */
static void
test_vault_system_audit_and_identity_new(void **state)
{
    (void)state;
    Coffer__V1__SystemResponse *resp;
    bool acme = false, globex = false, noid = false, revoke = false;
    bool other = false;
    char fp[65];

    assert_int_equal(health_as("noid"), CFR_RPC_UNAUTHENTICATED);
    resp = audit("");
    for (size_t i = 0; i < resp->n_entries; i++) {
        const Coffer__V1__AuditEntry *e = resp->entries[i];
        acme |= strcmp(e->tenant, "acme") == 0;
        globex |= strcmp(e->tenant, "globex") == 0;
        noid |= strcmp(e->tenant, "") == 0 &&
                strcmp(e->status, "UNAUTHENTICATED") == 0 &&
                strstr(e->method, "Health") != NULL;
        revoke |= strcmp(e->method, "System.revoke") == 0 &&
                  strstr(e->detail, "outcome=ok") != NULL &&
                  strcmp(e->identity, "coffer://operator/alice") == 0;
        /* No TOTP code or secret ever lands in the log. */
        assert_null(strstr(e->detail, "totp_secret"));
    }
    assert_true(acme);
    assert_true(globex);
    assert_true(noid);
    assert_true(revoke);
    /* The refused unregistered call is there, as a denial. */
    {
        bool unreg = false;
        for (size_t i = 0; i < resp->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = resp->entries[i];
            unreg |= strcmp(e->tenant, "acme") == 0 &&
                     strcmp(e->decision, "denied") == 0 &&
                     strstr(e->detail, "tenant not registered") != NULL;
        }
        assert_true(unreg);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    resp = audit("globex");
    assert_true(resp->n_entries > 0);
    for (size_t i = 0; i < resp->n_entries; i++) {
        other |= strcmp(resp->entries[i]->tenant, "globex") != 0;
    }
    assert_false(other);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* acme's agent was seen first in test_vault_system_registry. */
    fingerprint_of("agent.pem", fp);
    if (!hook_wait(&hook, "vault.identity.new", fp, 10000)) {
        fail_msg("no identity.new notification; webhook got:\n%s", hook.body);
    }
    assert_true(vc_log_has(&vault, "vault.identity.new tenant=acme"));
}

/* Whether the vault's stats file (Prometheus text) holds needle now. */
static bool
stats_has(const char *needle)
{
    char path[2 * VS_PATH_MAX], buf[65536];
    size_t n;
    FILE *f;
    snprintf(path, sizeof(path), "%s/vault.prom", vault.dir);
    if ((f = fopen(path, "r")) == NULL) {
        return false;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static int
sync_op(const char *ident, Coffer__V1__SystemOp op, const char *tenant,
        Coffer__V1__SystemResponse **resp_r, char *msg, size_t msg_size)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    req.op = op;
    req.tenant_name = (char *)tenant;
    return sys_call(ident, &req, resp_r, msg, msg_size);
}

/*
 * One server-streaming Sync call as vault-b; calls fn with each message's
 * bytes. Returns the final status.
 */
static int
sync_stream(const char *method, const ProtobufCMessage *req,
            void (*fn)(void *ctx, const uint8_t *p, size_t n), void *ctx)
{
    struct cfr_rpc_client *cli = vs_client(&vault, "vault-b");
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf msg;
    struct cfr_err err;
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = cfr_malloc(n + 1);
    int rc, st = CFR_RPC_UNKNOWN;
    assert_non_null(cli);
    assert_non_null(buf);
    protobuf_c_message_pack(req, buf);
    cfr_buf_init(&msg, (size_t)80 << 20);
    cfr_err_clear(&err);
    if (cfr_rpc_sstream_open(cli, method, buf, n, 10000, &call, &err) == 0) {
        while ((rc = cfr_rpc_sstream_next(call, &msg, &st, &err)) == 1) {
            fn(ctx, msg.data, msg.len);
        }
        if (rc == 0) {
            st = CFR_RPC_OK;
        }
    }
    cfr_rpc_call_free(call);
    cfr_buf_fini(&msg);
    cfr_free(buf);
    cfr_rpc_client_free(cli);
    return st;
}

struct listed {
    size_t msgs, snaps, tombs;
    uint8_t root[32];
    uint32_t height;
};

static void
on_list(void *ctx, const uint8_t *p, size_t n)
{
    struct listed *l = ctx;
    Coffer__V1__SyncListResponse *r =
        coffer__v1__sync_list_response__unpack(NULL, n, p);
    assert_non_null(r);
    l->msgs++;
    l->snaps += r->n_snapshots;
    l->tombs += r->n_tombstones;
    for (size_t i = 0; i < r->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *s = r->snapshots[i];
        assert_int_equal(s->header_id.len, 32);
        assert_true(s->header.len > 0); /* the sealed header travels */
        assert_true(s->received_ms > 0);
        assert_non_null(s->refs);
        assert_int_equal(s->refs->id.len, 32);
        memcpy(l->root, s->refs->id.data, 32);
        l->height = s->refs->height;
    }
    coffer__v1__sync_list_response__free_unpacked(r, NULL);
}

struct got {
    size_t objs, missing;
    bool root_ok;
    const uint8_t *root;
};

static void
on_get(void *ctx, const uint8_t *p, size_t n)
{
    struct got *g = ctx;
    Coffer__V1__SyncGetResponse *r =
        coffer__v1__sync_get_response__unpack(NULL, n, p);
    assert_non_null(r);
    for (size_t i = 0; i < r->n_objects; i++) {
        const Coffer__V1__SyncObject *o = r->objects[i];
        uint8_t sum[32];
        assert_int_equal(o->checksum.len, 32);
        cfr_id_plain(o->data.data, o->data.len, sum);
        assert_memory_equal(sum, o->checksum.data, 32);
        if (memcmp(o->id.data, g->root, 32) == 0) {
            /* A reference page's ID is the hash of its bytes. */
            g->root_ok =
                o->kind == COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE &&
                memcmp(sum, g->root, 32) == 0;
        }
    }
    g->objs += r->n_objects;
    g->missing += r->n_missing;
    coffer__v1__sync_get_response__free_unpacked(r, NULL);
}

/*
 * Replication from the operators' side, on a vault that lists one peer
 * (vault-b, which nobody serves: its rounds fail): SYNC starts a round
 * and SYNC_STATUS shows it, for operators only; a listed peer reads a
 * tenant's digests, an unlisted vault identity gets nothing, and no peer
 * reaches the tenant methods. Placement applies to the peer's region.
 */
static void
test_vault_system_replication(void **state)
{
    (void)state;
    Coffer__V1__SystemResponse *resp = NULL;
    char msg[256];
    const Coffer__V1__SyncStatus *own = NULL, *peer = NULL;
    int64_t end;

    /* Operators only. */
    assert_int_equal(sync_op("acme-admin",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS, "",
                             NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(sync_op("acme-admin",
                             COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC, "acme",
                             NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(sync_op("operator", COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC,
                             "nosuch", NULL, msg, sizeof(msg)),
                     CFR_RPC_NOT_FOUND);
    assert_non_null(strstr(msg, "tenant nosuch is not registered"));
    assert_int_equal(sync_op("operator", COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC,
                             "", NULL, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(sync_op("operator", COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC,
                             "acme", NULL, NULL, 0),
                     CFR_RPC_OK);

    /* The triggered round reaches the peer line (and fails: no vault-b). */
    end = vc_now_ms() + 20000;
    for (;;) {
        own = peer = NULL;
        assert_int_equal(sync_op("operator",
                                 COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS,
                                 "acme", &resp, NULL, 0),
                         CFR_RPC_OK);
        for (size_t i = 0; i < resp->n_sync; i++) {
            const Coffer__V1__SyncStatus *st = resp->sync[i];
            assert_string_equal(st->tenant, "acme");
            if (st->peer[0] == '\0') {
                assert_null(own);
                assert_null(peer); /* the own line comes first */
                own = st;
            } else if (strcmp(st->peer, "vault-b") == 0) {
                peer = st;
            } else {
                fail_msg("unexpected peer line %s", st->peer);
            }
        }
        assert_non_null(own);
        assert_non_null(peer);
        if (peer->last_attempt_ms > 0 && peer->last_error[0] != '\0') {
            break;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        resp = NULL;
        if (vc_now_ms() > end) {
            fail_msg("no failed attempt with vault-b recorded");
        }
        vc_sleep_ms(50);
    }
    /* acme's one snapshot, from test_vault_system_registry. */
    assert_string_equal(own->region, "test-1");
    assert_int_equal(own->snapshots, 1);
    assert_true(own->newest_ms > 0);
    assert_string_equal(peer->region, "far-1");
    assert_int_equal(peer->last_ok_ms, 0);
    assert_int_equal(peer->snapshots_pulled, 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* The replication metrics, per tenant and peer. */
    end = vc_now_ms() + 10000;
    while (!stats_has("coffer_vault_sync_last_ok_timestamp_seconds{tenant="
                      "\"acme\",peer=\"vault-b\"} 0") ||
           !stats_has("coffer_vault_repairs_total{tenant=\"acme\"} 0")) {
        if (vc_now_ms() > end) {
            fail_msg("no replication metrics in the stats file");
        }
        vc_sleep_ms(50);
    }

    /* A listed peer reads digests; an unregistered tenant is not found. */
    {
        struct cfr_rpc_client *cli = vs_client(&vault, "vault-b");
        Coffer__V1__SyncDigestRequest dr =
            COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        struct cfr_err err;
        assert_non_null(cli);
        dr.tenant = (char *)"acme";
        cfr_err_clear(&err);
        assert_int_equal(vs_unary(cli, "SyncDigest", &dr.base,
                                  &coffer__v1__sync_digest_response__descriptor,
                                  &out, &err),
                         CFR_RPC_OK);
        {
            const Coffer__V1__SyncDigestResponse *d =
                (const Coffer__V1__SyncDigestResponse *)out;
            size_t nonzero = 0;
            assert_int_equal(d->n_buckets, 256);
            for (size_t i = 0; i < d->n_buckets; i++) {
                static const uint8_t zero[32];
                assert_int_equal(d->buckets[i].len, 32);
                nonzero += memcmp(d->buckets[i].data, zero, 32) != 0;
            }
            assert_int_equal(d->snapshots, 1);
            assert_int_equal(nonzero, 1); /* one snapshot, one bucket */
            assert_string_equal(d->region, "test-1");
            assert_true(d->time_ms > 0);
        }
        protobuf_c_message_free_unpacked(out, NULL);
        out = NULL;
        dr.tenant = (char *)"nosuch";
        assert_int_equal(vs_unary(cli, "SyncDigest", &dr.base,
                                  &coffer__v1__sync_digest_response__descriptor,
                                  &out, &err),
                         CFR_RPC_NOT_FOUND);
        assert_null(out);
        /* acme's one snapshot, then its root page with its checksum. */
        {
            Coffer__V1__SyncListRequest lr =
                COFFER__V1__SYNC_LIST_REQUEST__INIT;
            Coffer__V1__SyncGetRequest gr = COFFER__V1__SYNC_GET_REQUEST__INIT;
            uint32_t buckets[256];
            uint8_t absent[32];
            ProtobufCBinaryData ids[2];
            struct listed l;
            struct got g;
            for (uint32_t b = 0; b < 256; b++) {
                buckets[b] = b;
            }
            memset(&l, 0, sizeof(l));
            lr.tenant = (char *)"acme";
            lr.buckets = buckets;
            lr.n_buckets = 256;
            assert_int_equal(
                sync_stream("/coffer.v1.Vault/SyncList", &lr.base, on_list, &l),
                CFR_RPC_OK);
            assert_int_equal(l.snaps, 1);
            assert_int_equal(l.tombs, 0);
            assert_int_equal(l.msgs, 1);
            assert_true(l.height >= 1);
            /* No bucket asked: one empty message, not silence. */
            memset(&l, 0, sizeof(l));
            lr.n_buckets = 0;
            assert_int_equal(
                sync_stream("/coffer.v1.Vault/SyncList", &lr.base, on_list, &l),
                CFR_RPC_OK);
            assert_int_equal(l.msgs, 1);
            assert_int_equal(l.snaps, 0);
            lr.n_buckets = 256;
            assert_int_equal(
                sync_stream("/coffer.v1.Vault/SyncList", &lr.base, on_list, &l),
                CFR_RPC_OK);
            memset(absent, 0xee, sizeof(absent));
            memset(&g, 0, sizeof(g));
            g.root = l.root;
            ids[0].data = l.root;
            ids[0].len = 32;
            ids[1].data = absent;
            ids[1].len = 32;
            gr.tenant = (char *)"acme";
            gr.ids = ids;
            gr.n_ids = 2;
            assert_int_equal(
                sync_stream("/coffer.v1.Vault/SyncGet", &gr.base, on_get, &g),
                CFR_RPC_OK);
            assert_int_equal(g.objs, 1);
            assert_int_equal(g.missing, 1);
            assert_true(g.root_ok);
            memcpy(acme_root, l.root, sizeof(acme_root));
            have_acme_root = true;
        }
        /* globex is allowed in eu-west and test-1, not in vault-b's far-1. */
        dr.tenant = (char *)"globex";
        assert_int_equal(vs_unary(cli, "SyncDigest", &dr.base,
                                  &coffer__v1__sync_digest_response__descriptor,
                                  &out, &err),
                         CFR_RPC_FAILED_PRECONDITION);
        assert_non_null(strstr(err.msg, "tenant globex is not allowed in "
                                        "region far-1"));
        /* Placed only with the peer: this vault refuses to serve it. */
        {
            static const char *const far[] = {"far-1", NULL};
            static const char *const back[] = {"eu-west", "test-1", NULL};
            assert_int_equal(tenant_set("globex", far, 0, NULL, NULL),
                             CFR_RPC_OK);
            assert_int_equal(
                vs_unary(cli, "SyncDigest", &dr.base,
                         &coffer__v1__sync_digest_response__descriptor, &out,
                         &err),
                CFR_RPC_FAILED_PRECONDITION);
            assert_non_null(strstr(err.msg, "tenant globex is not allowed in "
                                            "region test-1"));
            assert_int_equal(tenant_set("globex", back, 0, NULL, NULL),
                             CFR_RPC_OK);
        }
        /* A peer never reaches the tenant methods (role matrix). */
        {
            int st = -1;
            Coffer__V1__ListSnapshotsResponse *ls =
                vc_list_snapshots(cli, false, &st);
            assert_int_equal(st, CFR_RPC_PERMISSION_DENIED);
            assert_null(ls);
        }
        cfr_rpc_client_free(cli);
    }
    /* A vault identity this vault does not list: Health only. */
    {
        struct cfr_rpc_client *cli = vs_client(&vault, "vault-x");
        Coffer__V1__SyncDigestRequest dr =
            COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        struct cfr_err err;
        int st = -1;
        Coffer__V1__ListSnapshotsResponse *ls;
        assert_non_null(cli);
        assert_int_equal(vc_health(cli, NULL), CFR_RPC_OK);
        ls = vc_list_snapshots(cli, false, &st);
        assert_int_equal(st, CFR_RPC_PERMISSION_DENIED);
        assert_null(ls);
        dr.tenant = (char *)"acme";
        cfr_err_clear(&err);
        assert_int_equal(vs_unary(cli, "SyncDigest", &dr.base,
                                  &coffer__v1__sync_digest_response__descriptor,
                                  &out, &err),
                         CFR_RPC_PERMISSION_DENIED);
        assert_null(out);
        cfr_rpc_client_free(cli);
    }
    /* A tenant certificate may not call Sync* for its own tenant either. */
    {
        struct cfr_rpc_client *cli = vs_client(&vault, "agent");
        Coffer__V1__SyncDigestRequest dr =
            COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        struct cfr_err err;
        dr.tenant = (char *)"acme";
        cfr_err_clear(&err);
        assert_int_equal(vs_unary(cli, "SyncDigest", &dr.base,
                                  &coffer__v1__sync_digest_response__descriptor,
                                  &out, &err),
                         CFR_RPC_PERMISSION_DENIED);
        assert_null(out);
        cfr_rpc_client_free(cli);
    }
    assert_true(vc_log_has(&vault, "vault.sync.denied identity="
                                   "coffer://vault/vault-x tenant=acme"));
    /* Audited: the SYNC op with its target, the peer's refusal. */
    {
        bool sync = false, denied = false;
        resp = audit("");
        for (size_t i = 0; i < resp->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = resp->entries[i];
            sync |= strcmp(e->method, "System.sync") == 0 &&
                    strstr(e->detail, "op=sync outcome=ok tenant=acme") != NULL;
            denied |= strcmp(e->identity, "coffer://vault/vault-x") == 0 &&
                      strcmp(e->decision, "denied") == 0 &&
                      strstr(e->method, "SyncDigest") != NULL;
        }
        assert_true(sync);
        assert_true(denied);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    /*
     * A peer's certificate names no tenant, so each Sync* call carries the
     * tenant it read for: acme's filter and acme's own auditor see vault-b
     * reading acme (and vault-x being refused it); globex's filter shows
     * only globex's refusals, never the acme reads.
     */
    {
        bool digest = false, list = false, get = false, refused = false;
        resp = audit("acme");
        for (size_t i = 0; i < resp->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = resp->entries[i];
            bool b = strcmp(e->identity, "coffer://vault/vault-b") == 0 &&
                     strcmp(e->decision, "allowed") == 0 &&
                     strcmp(e->status, "OK") == 0;
            assert_string_equal(e->tenant, "acme");
            digest |= b && strstr(e->method, "SyncDigest") != NULL;
            list |= b && strstr(e->method, "SyncList") != NULL;
            get |= b && strstr(e->method, "SyncGet") != NULL;
            refused |= strcmp(e->identity, "coffer://vault/vault-x") == 0 &&
                       strcmp(e->decision, "denied") == 0;
        }
        assert_true(digest);
        assert_true(list);
        assert_true(get);
        assert_true(refused);
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        digest = refused = false;
        resp = audit("globex");
        for (size_t i = 0; i < resp->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = resp->entries[i];
            bool b = strcmp(e->identity, "coffer://vault/vault-b") == 0 &&
                     strstr(e->method, "SyncDigest") != NULL;
            assert_string_equal(e->tenant, "globex");
            digest |= b && strcmp(e->status, "OK") == 0;
            refused |= b && strcmp(e->status, "FAILED_PRECONDITION") == 0;
        }
        assert_false(digest);
        assert_true(refused);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    {
        struct cfr_rpc_client *aud = vs_client(&vault, "acme-auditor");
        Coffer__V1__AuditRequest req = COFFER__V1__AUDIT_REQUEST__INIT;
        Coffer__V1__AuditResponse *au = NULL;
        struct cfr_err err;
        bool digest = false;
        assert_non_null(aud);
        req.limit = 10000;
        cfr_err_clear(&err);
        assert_int_equal(vs_unary(aud, "Audit", &req.base,
                                  &coffer__v1__audit_response__descriptor,
                                  (ProtobufCMessage **)&au, &err),
                         CFR_RPC_OK);
        assert_non_null(au);
        for (size_t i = 0; i < au->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = au->entries[i];
            assert_string_equal(e->tenant, "acme");
            digest |= strcmp(e->identity, "coffer://vault/vault-b") == 0 &&
                      strstr(e->method, "SyncDigest") != NULL &&
                      strcmp(e->status, "OK") == 0;
        }
        assert_true(digest);
        protobuf_c_message_free_unpacked(&au->base, NULL);
        cfr_rpc_client_free(aud);
    }
}

/*
 * A damaged object found by Admin SCRUB goes to repair; with its only
 * peer unreachable nobody can fix it: logged, counted and notified as
 * vault.repair_failed, and never served as data meanwhile.
 */
static void
test_vault_system_scrub_repair_failed(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_buf buf;
    int64_t end;

    assert_true(have_acme_root);
    assert_int_equal(vs_vault_stop(&vault, SIGTERM, 20000), 0);
    {
        struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
        struct cfr_kv *kv;
        assert_non_null(ke);
        kv = scn_vault_db(ke, &vault);
        cfr_buf_init(&buf, 1u << 20);
        assert_int_equal(cfr_kv_get(kv, 0, acme_root, 32, &buf, &err), 0);
        assert_true(buf.len > 0);
        buf.data[buf.len / 2] ^= 0x20;
        assert_int_equal(
            cfr_kv_put(kv, 0, acme_root, 32, buf.data, buf.len, &err), 0);
        cfr_buf_fini(&buf);
        cfr_kv_close(kv);
        cfr_kv_env_free(ke);
    }
    assert_int_equal(vs_vault_start(&vault, 30000), 0);
    {
        struct cfr_rpc_client *cli = vs_client(&vault, "acme-admin");
        Coffer__V1__AdminRequest req = COFFER__V1__ADMIN_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        assert_non_null(cli);
        req.op = COFFER__V1__ADMIN_OP__ADMIN_OP_SCRUB;
        cfr_err_clear(&err);
        assert_int_equal(vs_unary(cli, "Admin", &req.base,
                                  &coffer__v1__admin_response__descriptor, &out,
                                  &err),
                         CFR_RPC_OK);
        assert_int_equal(((Coffer__V1__AdminResponse *)out)->bad_objects, 1);
        protobuf_c_message_free_unpacked(out, NULL);
        cfr_rpc_client_free(cli);
    }
    assert_true(vc_log_has(&vault, "vault.scrub.bad tenant=acme"));
    if (!hook_wait(&hook, "vault.repair_failed", "acme", 20000)) {
        fail_msg("no repair_failed notification; webhook got:\n%s", hook.body);
    }
    assert_true(vc_log_has(&vault, "vault.repair_failed tenant=acme"));
    end = vc_now_ms() + 10000;
    while (
        !stats_has("coffer_vault_repair_failures_total{tenant=\"acme\"} 1") ||
        !stats_has("coffer_vault_scrub_bad_objects_total 1")) {
        if (vc_now_ms() > end) {
            fail_msg("the failed repair is not counted in the stats file");
        }
        vc_sleep_ms(50);
    }
    {
        Coffer__V1__SystemResponse *resp = NULL;
        assert_int_equal(sync_op("operator",
                                 COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS,
                                 "acme", &resp, NULL, 0),
                         CFR_RPC_OK);
        assert_true(resp->n_sync >= 1);
        assert_string_equal(resp->sync[0]->peer, "");
        assert_int_equal(resp->sync[0]->repair_failures, 1);
        assert_int_equal(resp->sync[0]->repairs, 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
}

/* ---- setup ------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;
    if (cfr_rpc_global_init(&err) != 0 || hook_start(&hook) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&vault, &env, "sys") != 0) {
        return -1;
    }
    vault.no_register = true;
    /* One peer, vault-b, at an address where nothing listens; rounds
     * only on demand, so the other tests see no sync traffic. */
    snprintf(vault.extra_cfg, sizeof(vault.extra_cfg),
             "limits = { max_failures = 64; };\n"
             "notify = { webhook = \"http://127.0.0.1:%d/hook\"; };\n"
             "name = \"vault-a\";\n"
             "peers = ({ name = \"vault-b\"; address = \"127.0.0.1:1\";\n"
             "           region = \"far-1\"; });\n"
             "sync = { interval = \"0\"; timeout = \"2s\";\n"
             "         cert = \"%s/vault-a.pem\"; key = \"%s/vault-a.key\";\n"
             "         ca = \"%s/ca.pem\"; };\n",
             hook.port, env.dir, env.dir, env.dir);
    return vs_vault_start(&vault, 30000);
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGTERM, 30000);
    }
    hook_stop(&hook);
    vs_env_fini(&env);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    /* In order: each builds on the registry the previous one left. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_system_registry),
        cmocka_unit_test(test_vault_system_region_placement),
        cmocka_unit_test(test_vault_system_revoke),
        cmocka_unit_test(test_vault_system_second_factor),
        cmocka_unit_test(test_vault_system_enrols_admin_totp),
        cmocka_unit_test(test_vault_system_audit_and_identity_new),
        cmocka_unit_test(test_vault_system_replication),
        cmocka_unit_test(test_vault_system_scrub_repair_failed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
