/*
 * admin_system_test.c - coffer-admin's vault operations end to end: the
 * real coffer-admin binary drives a real coffer-vault over mutual TLS on
 * 127.0.0.1 with the test PKI's operator certificates (alice, bob), and
 * what it did is checked through the vault itself: an agent's calls, the
 * deny list, the audit log, a TOTP code computed from the printed secret.
 *
 * What it proves:
 *  1. Bad options are refused before any vault is contacted (the vault
 *     given is a closed port, so a connection attempt would exit 7), and
 *     an unreachable vault gives exit 7 quickly.
 *  2. tenant add is idempotent (same settings: "exists", exit 0; other
 *     settings: exit 3 naming tenant set); tenant list --json is valid
 *     JSON with the settings and the usage of an upload.
 *  3. revoke --cert stops exactly that certificate at once (agent2), not
 *     its identity's other certificate (agent); deny list shows it; audit
 *     shows the revocation; unrevoke restores it.
 *  4. Revoking a vault identity waits for a second operator: alice gets
 *     an approval ID and the commands to finish, cannot approve herself,
 *     bob approves, alice's repeat with --approval revokes, and the
 *     approval cannot be used twice.
 *  5. totp enroll prints a secret that is the one the vault registered:
 *     an admin's code computed from it passes as a second factor; the
 *     secret never reaches the vault's log.
 *  6. Several vaults: the operation runs on each in order, each reported,
 *     and the exit code is the first failure's.
 *  7. replication status shows a vault's own replication line for a
 *     tenant (snapshot count as the agent lists it, newest commit time)
 *     in text and JSON, an unreachable vault as its own row (exit 7);
 *     replication sync starts a round (an empty one without peers); a
 *     vault whose peer is down shows that peer's error and "never", and
 *     exits 10.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <arpa/inet.h>  /* a closed port to aim at */
#include <netinet/in.h> /* sockaddr_in */
#include <signal.h>     /* SIGKILL */
#include <stdio.h>      /* popen */
#include <stdlib.h>     /* strtoll */
#include <string.h>     /* strstr */
#include <sys/socket.h> /* socket */
#include <sys/stat.h>   /* chmod */
#include <sys/wait.h>   /* WEXITSTATUS */
#include <time.h>       /* clock_gettime, time */
#include <unistd.h>     /* close */

#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* a sealing session */
#include "keys.h"                 /* the tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "totp.h"                 /* codes from the printed secret */
#include "vault_client_support.h" /* snapshots to commit */
#include "vault_support.h"        /* the harness */

#define OUT_MAX  (4 * 1024 * 1024)
#define CMD_MAX  8192
#define PATH_LEN 1024
#define DAY_MS   (86400 * INT64_C(1000))

static struct vs_env env;
static struct vs_vault vault;
static char out[OUT_MAX];  /* stdout of the last coffer-admin run */
static char errs[OUT_MAX]; /* its stderr */
static char conn[2048];    /* alice's connection options */
static char conn_bob[2048];
static int closed_port; /* nothing listens there */

/* ---- running coffer-admin ---------------------------------------------- */

static void
slurp_into(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "rb");
    size_t n = 0;
    if (f != NULL) {
        n = fread(buf, 1, size - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs coffer-admin with args; stdout into out, stderr into errs. */
static int admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
admin(const char *fmt, ...)
{
    char args[CMD_MAX - 1024], cmd[CMD_MAX], errpath[PATH_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(args));
    vs_env_path(&env, "admin.stderr", errpath, sizeof(errpath));
    n = snprintf(cmd, sizeof(cmd), "%s %s 2>%s", COFFER_ADMIN_BIN, args,
                 errpath);
    assert_true(n > 0 && (size_t)n < sizeof(cmd));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, sizeof(out) - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    slurp_into(errpath, errs, sizeof(errs));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Fails with both outputs when the exit code is not want. */
#define EXPECT_EXIT(want, call)                                                \
    do {                                                                       \
        int got_ = (call);                                                     \
        if (got_ != (want)) {                                                  \
            fail_msg("exit %d, want %d\nstdout: %s\nstderr: %s", got_, (want), \
                     out, errs);                                               \
        }                                                                      \
    } while (0)

/* ---- a small JSON reader: validates and flattens to path=value ---------- */

#define JSON_MAX 20000

struct json_kv {
    char path[160];
    char value[640]; /* strings unescaped (ASCII only), others as text */
};

struct json {
    struct json_kv kv[JSON_MAX];
    size_t n;
    const char *p;
    bool bad;
};

static void
json_ws(struct json *j)
{
    while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r') {
        j->p++;
    }
}

static void json_value(struct json *j, const char *path, int depth);

static void
json_put(struct json *j, const char *path, const char *v, size_t n)
{
    if (j->n >= JSON_MAX || n >= sizeof(j->kv[0].value)) {
        j->bad = true;
        return;
    }
    snprintf(j->kv[j->n].path, sizeof(j->kv[0].path), "%s", path);
    memcpy(j->kv[j->n].value, v, n);
    j->kv[j->n].value[n] = '\0';
    j->n++;
}

/* A string token into buf (escapes decoded; \u only below 0x80). */
static void
json_str(struct json *j, char *buf, size_t size)
{
    size_t k = 0;
    if (*j->p != '"') {
        j->bad = true;
        return;
    }
    j->p++;
    while (*j->p != '"' && !j->bad) {
        char c = *j->p++;
        if (c == '\0' || (unsigned char)c < 0x20) {
            j->bad = true;
            return;
        }
        if (c == '\\') {
            c = *j->p++;
            if (c == 'n') {
                c = '\n';
            } else if (c == 'u') {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *j->p++;
                    v = v * 16 + (unsigned)(h >= 'a'   ? h - 'a' + 10
                                            : h >= 'A' ? h - 'A' + 10
                                                       : h - '0');
                }
                c = v < 0x80 ? (char)v : '?';
            } else if (c != '"' && c != '\\' && c != '/') {
                j->bad = true;
                return;
            }
        }
        if (k + 1 < size) {
            buf[k++] = c;
        }
    }
    buf[k] = '\0';
    j->p++;
}

static void
json_value(struct json *j, const char *path, int depth)
{
    char sub[160], key[64], s[640];
    json_ws(j);
    if (depth > 16) {
        j->bad = true;
        return;
    }
    if (*j->p == '{' || *j->p == '[') {
        bool obj = *j->p == '{';
        size_t i = 0;
        j->p++;
        json_ws(j);
        if (*j->p == (obj ? '}' : ']')) {
            j->p++;
            json_put(j, path, obj ? "{}" : "[]", 2);
            return;
        }
        for (;;) {
            json_ws(j);
            if (obj) {
                json_str(j, key, sizeof(key));
                json_ws(j);
                if (*j->p++ != ':') {
                    j->bad = true;
                }
                snprintf(sub, sizeof(sub), "%.80s%s%s", path,
                         path[0] ? "." : "", key);
            } else {
                snprintf(sub, sizeof(sub), "%.80s%s%zu", path,
                         path[0] ? "." : "", i);
            }
            i++;
            json_value(j, sub, depth + 1);
            json_ws(j);
            if (j->bad) {
                return;
            }
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p++ != (obj ? '}' : ']')) {
                j->bad = true;
            }
            return;
        }
    }
    if (*j->p == '"') {
        json_str(j, s, sizeof(s));
        json_put(j, path, s, strlen(s));
        return;
    }
    const char *start = j->p;
    while (*j->p == '-' || (*j->p >= '0' && *j->p <= '9') ||
           (*j->p >= 'a' && *j->p <= 'z')) {
        j->p++;
    }
    size_t n = (size_t)(j->p - start);
    bool num =
        n > 0 && (start[0] == '-' || (start[0] >= '0' && start[0] <= '9'));
    if (!num && !(n == 4 && memcmp(start, "true", 4) == 0) &&
        !(n == 5 && memcmp(start, "false", 5) == 0) &&
        !(n == 4 && memcmp(start, "null", 4) == 0)) {
        j->bad = true;
        return;
    }
    json_put(j, path, start, n);
}

/* Parses text; the whole of it must be one JSON value. */
static void
json_parse(struct json *j, const char *text)
{
    memset(j, 0, sizeof(*j));
    j->p = text;
    json_value(j, "", 0);
    json_ws(j);
    if (j->bad || *j->p != '\0') {
        fail_msg("not valid JSON (at offset %td): %s", j->p - text, text);
    }
}

/* The value at path, or NULL. */
static const char *json_get(const struct json *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *
json_get(const struct json *j, const char *fmt, ...)
{
    char path[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < j->n; i++) {
        if (strcmp(j->kv[i].path, path) == 0) {
            return j->kv[i].value;
        }
    }
    return NULL;
}

/* The index of the tenant named name in vaults.0.tenants, or -1. */
static int
json_tenant(const struct json *j, const char *name)
{
    for (int i = 0; i < 64; i++) {
        const char *v = json_get(j, "vaults.0.tenants.%d.name", i);
        if (v == NULL) {
            return -1;
        }
        if (strcmp(v, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- talking to the vault directly ------------------------------------- */

/* ListSnapshots as ident: the cheapest call a tenant identity may make. */
static int
list_as(const char *ident)
{
    struct cfr_rpc_client *cli = vs_client(&vault, ident);
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    assert_non_null(cli);
    int st =
        vs_unary(cli, "ListSnapshots", &req.base,
                 &coffer__v1__list_snapshots_response__descriptor, &resp, &err);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cfr_rpc_client_free(cli);
    return st;
}

/* One sealed-looking object of len bytes put by acme's agent. */
static void
upload_one(size_t len)
{
    struct cfr_rpc_client *cli = vs_client(&vault, "agent");
    Coffer__V1__OpenLeaseRequest lreq = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
    Coffer__V1__OpenLeaseResponse *lease = NULL;
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf resp;
    struct cfr_err err;
    uint8_t pub[32] = {1}, id[32], *data = cfr_calloc(1, len);
    int st = CFR_RPC_UNKNOWN;

    assert_non_null(cli);
    assert_non_null(data);
    lreq.session_public.data = pub;
    lreq.session_public.len = sizeof(pub);
    assert_int_equal(vs_unary(cli, "OpenLease", &lreq.base,
                              &coffer__v1__open_lease_response__descriptor,
                              (ProtobufCMessage **)&lease, &err),
                     CFR_RPC_OK);
    assert_non_null(lease);
    /* The vault checks only an envelope's version byte and size. */
    data[0] = 1;
    for (size_t i = 0; i < sizeof(id); i++) {
        id[i] = (uint8_t)(0xA0 + i);
    }
    Coffer__V1__Object o = COFFER__V1__OBJECT__INIT, *op = &o;
    o.id.data = id;
    o.id.len = sizeof(id);
    o.kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED;
    o.data.data = data;
    o.data.len = len;
    Coffer__V1__PutObjectsRequest preq = COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
    preq.lease_id = lease->lease_id;
    preq.n_objects = 1;
    preq.objects = &op;
    size_t n = coffer__v1__put_objects_request__get_packed_size(&preq);
    uint8_t *buf = cfr_malloc(n);
    assert_non_null(buf);
    coffer__v1__put_objects_request__pack(&preq, buf);
    cfr_buf_init(&resp, 1 << 16);
    assert_int_equal(cfr_rpc_cstream_open(cli, "/coffer.v1.Vault/PutObjects",
                                          20000, &call, &err),
                     0);
    (void)cfr_rpc_cstream_send(call, buf, n, &err);
    (void)cfr_rpc_cstream_finish(call, &resp, &st, &err);
    assert_int_equal(st, CFR_RPC_OK);
    cfr_rpc_call_free(call);
    cfr_buf_fini(&resp);
    cfr_free(buf);
    cfr_free(data);
    protobuf_c_message_free_unpacked(&lease->base, NULL);
    cfr_rpc_client_free(cli);
}

/* The approval ID a pending run printed ("approval_id=<32 hex>"). */
static void
approval_of(char id[33])
{
    const char *p = strstr(out, "approval_id=");
    assert_non_null(p);
    p += strlen("approval_id=");
    assert_true(strspn(p, "0123456789abcdef") >= 32);
    memcpy(id, p, 32);
    id[32] = '\0';
}

/* ---- tests ------------------------------------------------------------- */

/* Invariant 1 of the file comment: refused before connecting. */
static void
test_admin_system_bad_options_refused_before_connecting(void **state)
{
    (void)state;
    char c[2048], p[PATH_LEN], key[PATH_LEN], sh[3 * PATH_LEN + 64];
    const char *d = env.dir;
    snprintf(c, sizeof(c),
             "--vault 127.0.0.1:%d --tls-cert %s/operator.pem --tls-key "
             "%s/operator.key --ca-cert %s/ca.pem",
             closed_port, d, d, d);
    /* Sanity: the same options reach for the vault (and find it closed),
     * under either spelling. */
    EXPECT_EXIT(7, admin("tenant list %s", c));
    EXPECT_EXIT(7, admin("tenant list --vault 127.0.0.1:%d --cert "
                         "%s/operator.pem --key %s/operator.key --ca-cert "
                         "%s/ca.pem",
                         closed_port, d, d, d));
    static const struct {
        const char *args;
        const char *says;
    } cases[] = {
        {"tenant add Acme", "a-z 0-9"},
        {"tenant add _system", "must not start"},
        {"tenant add", "needs a tenant NAME"},
        {"tenant add ok --region EU", "region"},
        {"tenant add ok --region eu --region eu", "given twice"},
        {"tenant add ok --retention 30", "--retention"},
        {"tenant add ok --retention 30x", "--retention"},
        {"tenant add ok --notify ftp://x", "notify target"},
        {"tenant add ok --totp 123456", "unknown option"},
        {"tenant set ok", "needs a change"},
        {"tenant set ok --region eu --no-regions", "clear a list"},
        {"tenant set ok --retention 10d --totp 12ab56", "6 to 8 digits"},
        {"tenant set ok --retention 10d --approval xyz", "32 hex"},
        {"tenant set ok --retention 10d --totp 123456 --approval "
         "00112233445566778899aabbccddeeff",
         "not both"},
        {"tenant frob", "unknown subcommand"},
        {"tenant list --json=yes", "takes no value"},
        {"revoke", "exactly one"},
        {"revoke --identity coffer://tenant/acme/role/agent --fingerprint "
         "00",
         "exactly one"},
        {"revoke --identity coffer://tenant/ACME/role/agent", "identity"},
        {"revoke --identity https://example.org", "identity"},
        {"revoke --fingerprint abcd", "fingerprint"},
        {"revoke --identity coffer://vault/x --reason \"$(printf 'a\\tb')\"",
         "printable"},
        {"unrevoke --identity coffer://vault/x --approval "
         "00112233445566778899aabbccddeeff",
         "unknown option"},
        {"deny frob", "unknown subcommand"},
        {"audit --since 1h --since-ms 5", "not both"},
        {"audit --limit 0", "--limit"},
        {"audit --limit 10001", "--limit"},
        {"audit --tenant Bad", "--tenant"},
        {"approve nothex", "32 hex"},
        {"approve", "approval ID"},
        {"totp enroll --tenant acme", "--principal"},
        {"totp enroll --principal 'Alice Smith'", "principal"},
        {"totp frob", "unknown subcommand"},
        {"tenant list --timeout 0", "--timeout"},
        {"tenant list --vault 127.0.0.1", "HOST:PORT"},
        {"tenant list --vault 127.0.0.1:99999", "port"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = admin("%s %s", cases[i].args, c);
        if (rc != 2 || strstr(errs, cases[i].says) == NULL) {
            fail_msg("case %zu (%s): exit %d, stderr: %s", i, cases[i].args, rc,
                     errs);
        }
    }
    /* Connection problems, each before any connection. */
    EXPECT_EXIT(2, admin("tenant list"));
    assert_non_null(strstr(errs, "no vault given"));
    EXPECT_EXIT(2, admin("tenant list --vault 127.0.0.1:%d", closed_port));
    assert_non_null(strstr(errs, "--cert"));
    EXPECT_EXIT(2,
                admin("tenant list %s --vault 127.0.0.1:%d", c, closed_port));
    assert_non_null(strstr(errs, "given twice"));
    /* An approval ID is one vault's. */
    EXPECT_EXIT(2, admin("approve 00112233445566778899aabbccddeeff %s "
                         "--vault 127.0.0.1:%d",
                         c, closed_port + 1));
    assert_non_null(strstr(errs, "exactly one --vault"));
    /* Not an operator: the agent certificate. */
    EXPECT_EXIT(2, admin("tenant list --vault 127.0.0.1:%d --cert %s/agent.pem "
                         "--key %s/agent.key --ca-cert %s/ca.pem",
                         closed_port, d, d, d));
    assert_non_null(strstr(errs, "not an operator certificate"));
    /* Files: missing (4), key of another certificate (5), unsafe (6). */
    EXPECT_EXIT(4, admin("tenant list --vault 127.0.0.1:%d --cert %s/none.pem "
                         "--key %s/operator.key --ca-cert %s/ca.pem",
                         closed_port, d, d, d));
    EXPECT_EXIT(5, admin("tenant list --vault 127.0.0.1:%d --cert "
                         "%s/operator.pem --key %s/operator2.key --ca-cert "
                         "%s/ca.pem",
                         closed_port, d, d, d));
    assert_non_null(strstr(errs, "is not the key of"));
    assert_null(strstr(errs, "PRIVATE"));
    vs_env_path(&env, "loose.key", key, sizeof(key));
    snprintf(sh, sizeof(sh), "cp %s/operator.key %s && chmod 644 %s", d, key,
             key);
    assert_int_equal(system(sh), 0);
    EXPECT_EXIT(6, admin("tenant list --vault 127.0.0.1:%d --cert "
                         "%s/operator.pem --key %s --ca-cert %s/ca.pem",
                         closed_port, d, key, d));
    /* A connection file with a typo is refused naming file and line. */
    vs_env_path(&env, "typo.conf", p, sizeof(p));
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f,
            "vaults = [ \"127.0.0.1:%d\" ];\ntls = { cert = "
            "\"operator.pem\"; key = \"operator.key\"; ca = \"ca.pem\";\n"
            "  certs = \"x\"; };\n",
            closed_port);
    fclose(f);
    EXPECT_EXIT(5, admin("tenant list --connect %s", p));
    assert_non_null(strstr(errs, "typo.conf:"));
    assert_non_null(strstr(errs, "certs"));
    /* In revoke, --cert is the target: a second one is explained, and the
     * operator's own certificate or identity is never revoked. */
    EXPECT_EXIT(2, admin("revoke --cert %s/agent2.pem --cert %s/agent.pem %s",
                         d, d, c));
    assert_non_null(strstr(errs, "--tls-cert"));
    EXPECT_EXIT(2, admin("revoke --cert %s/operator.pem %s", d, c));
    assert_non_null(strstr(errs, "refusing to revoke"));
    EXPECT_EXIT(2, admin("revoke --identity coffer://operator/alice %s", c));
    assert_non_null(strstr(errs, "refusing to revoke"));
    /* The revoke target must be a readable certificate. */
    EXPECT_EXIT(4, admin("revoke --cert %s/none.pem %s", d, c));
    EXPECT_EXIT(5, admin("revoke --cert %s/agent.key --tls-cert "
                         "%s/operator.pem --key %s/operator.key --ca-cert "
                         "%s/ca.pem --vault 127.0.0.1:%d",
                         d, d, d, d, closed_port));
    assert_null(strstr(errs, "PRIVATE"));
    assert_null(strstr(out, "PRIVATE"));
}

static void
test_admin_system_unreachable_vault_is_exit_7_quickly(void **state)
{
    (void)state;
    int64_t t0 = mono_ms();
    EXPECT_EXIT(7, admin("tenant list --vault 127.0.0.1:%d --cert "
                         "%s/operator.pem --key %s/operator.key --ca-cert "
                         "%s/ca.pem --timeout 3s",
                         closed_port, env.dir, env.dir, env.dir));
    int64_t took = mono_ms() - t0;
    assert_true(took < 3000);
    assert_non_null(strstr(errs, "UNAVAILABLE"));
    /* JSON still says per vault what happened. */
    EXPECT_EXIT(7, admin("deny list --json --vault 127.0.0.1:%d --cert "
                         "%s/operator.pem --key %s/operator.key --ca-cert "
                         "%s/ca.pem",
                         closed_port, env.dir, env.dir, env.dir));
    struct json *j = cfr_calloc(1, sizeof(*j));
    assert_non_null(j);
    json_parse(j, out);
    assert_string_equal(json_get(j, "vaults.0.ok"), "false");
    assert_string_equal(json_get(j, "vaults.0.status"), "UNAVAILABLE");
    cfr_free(j);
}

static void
test_admin_system_tenant_add_list_set(void **state)
{
    (void)state;
    struct json *j = cfr_calloc(1, sizeof(*j));
    assert_non_null(j);

    EXPECT_EXIT(0, admin("tenant add initech --region test-1 --region eu-2 "
                         "--retention 40d --notify https://hooks.invalid/x "
                         "%s",
                         conn));
    assert_non_null(strstr(out, ": added tenant initech ("));
    /* Twice, even with the regions in another order: exists, success. */
    EXPECT_EXIT(0, admin("tenant add initech --region eu-2 --region test-1 "
                         "--retention 40d --notify https://hooks.invalid/x "
                         "%s",
                         conn));
    assert_non_null(strstr(out, ": exists tenant initech (same settings)"));
    /* Other settings: refused, pointing at tenant set. */
    EXPECT_EXIT(3, admin("tenant add initech --retention 50d %s", conn));
    assert_non_null(strstr(out, "conflict"));
    assert_non_null(strstr(errs, "tenant set initech"));

    /* acme's agent uploads one object: usage shows it. */
    upload_one(1000);
    EXPECT_EXIT(0, admin("tenant list --json %s", conn));
    json_parse(j, out);
    assert_string_equal(json_get(j, "vaults.0.ok"), "true");
    int i = json_tenant(j, "initech");
    assert_true(i >= 0);
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.retention_ms", i),
                        "3456000000");
    const char *r0 = json_get(j, "vaults.0.tenants.%d.regions.0", i);
    const char *r1 = json_get(j, "vaults.0.tenants.%d.regions.1", i);
    assert_non_null(r0);
    assert_non_null(r1);
    assert_true((strcmp(r0, "test-1") == 0 && strcmp(r1, "eu-2") == 0) ||
                (strcmp(r0, "eu-2") == 0 && strcmp(r1, "test-1") == 0));
    assert_null(json_get(j, "vaults.0.tenants.%d.regions.2", i));
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.notify.0", i),
                        "https://hooks.invalid/x");
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.objects", i), "0");
    assert_true(strtoll(json_get(j, "vaults.0.tenants.%d.created_ms", i), NULL,
                        10) > (int64_t)(time(NULL) - 600) * 1000);
    int a = json_tenant(j, "acme");
    assert_true(a >= 0);
    assert_true(
        strtoll(json_get(j, "vaults.0.tenants.%d.objects", a), NULL, 10) >= 1);
    assert_true(strtoll(json_get(j, "vaults.0.tenants.%d.object_bytes", a),
                        NULL, 10) >= 1000);
    /* The text form names the same. */
    EXPECT_EXIT(0, admin("tenant list %s", conn));
    assert_non_null(strstr(out, "initech"));
    assert_non_null(strstr(out, "40d"));
    assert_non_null(strstr(out, "notify=https://hooks.invalid/x"));

    /* Longer retention: no second factor; other settings kept. */
    EXPECT_EXIT(0, admin("tenant set initech --retention 60d %s", conn));
    assert_non_null(strstr(out, "updated tenant initech"));
    assert_non_null(strstr(out, "retention=60d"));
    assert_non_null(strstr(out, "notify=https://hooks.invalid/x"));
    EXPECT_EXIT(0, admin("tenant set initech --no-notify %s", conn));
    EXPECT_EXIT(0, admin("tenant list --json %s", conn));
    json_parse(j, out);
    i = json_tenant(j, "initech");
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.retention_ms", i),
                        "5184000000");
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.notify", i), "[]");
    assert_non_null(json_get(j, "vaults.0.tenants.%d.regions.1", i));

    /* Shorter: pending until bob approves, then alice repeats. */
    EXPECT_EXIT(9, admin("tenant set initech --retention 10d %s", conn));
    char id[33];
    approval_of(id);
    assert_non_null(strstr(out, "coffer-admin approve"));
    assert_non_null(strstr(out, "--approval"));
    EXPECT_EXIT(0, admin("approve %s %s", id, conn_bob));
    EXPECT_EXIT(0, admin("tenant set initech --retention 10d %s --approval %s",
                         conn, id));
    EXPECT_EXIT(0, admin("tenant list --json %s", conn));
    json_parse(j, out);
    i = json_tenant(j, "initech");
    assert_string_equal(json_get(j, "vaults.0.tenants.%d.retention_ms", i),
                        "864000000");
    /* Not registered: tenant set says to add it. */
    EXPECT_EXIT(8, admin("tenant set nosuch --retention 60d %s", conn));
    assert_non_null(strstr(errs, "tenant add"));
    cfr_free(j);
}

static void
test_admin_system_revoke_cert_deny_list_audit(void **state)
{
    (void)state;
    char fpr[128], cmd[PATH_LEN];
    struct json *j = cfr_calloc(1, sizeof(*j));
    assert_non_null(j);
    assert_int_equal(list_as("agent2"), CFR_RPC_OK);
    assert_int_equal(list_as("agent"), CFR_RPC_OK);

    /* The fingerprint as openssl computes it, lower case, no colons. */
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s/agent2.pem -noout -fingerprint -sha256 | "
             "sed 's/.*=//; s/://g' | tr A-F a-f",
             env.dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(fpr, sizeof(fpr), p));
    pclose(p);
    fpr[strcspn(fpr, "\n")] = '\0';
    assert_int_equal(strlen(fpr), 64);

    EXPECT_EXIT(0, admin("revoke --cert %s/agent2.pem --reason 'laptop lost' "
                         "%s",
                         env.dir, conn));
    assert_non_null(strstr(out, "revoked fingerprint"));
    assert_non_null(strstr(out, fpr));
    /* At once, without a restart: agent2 refused, agent (same URI) not. */
    int st = list_as("agent2");
    assert_true(st == CFR_RPC_PERMISSION_DENIED ||
                st == CFR_RPC_UNAUTHENTICATED);
    assert_int_equal(list_as("agent"), CFR_RPC_OK);

    EXPECT_EXIT(0, admin("deny list --json %s", conn));
    json_parse(j, out);
    int found = -1;
    for (int i = 0; i < 16 && json_get(j, "vaults.0.denied.%d.kind", i); i++) {
        if (strcmp(json_get(j, "vaults.0.denied.%d.value", i), fpr) == 0) {
            found = i;
        }
    }
    assert_true(found >= 0);
    assert_string_equal(json_get(j, "vaults.0.denied.%d.kind", found),
                        "fingerprint");
    assert_non_null(
        strstr(json_get(j, "vaults.0.denied.%d.reason", found), "laptop lost"));
    assert_non_null(
        strstr(json_get(j, "vaults.0.denied.%d.by", found), "alice"));
    assert_true(strtoll(json_get(j, "vaults.0.denied.%d.added_ms", found), NULL,
                        10) > 0);
    EXPECT_EXIT(0, admin("deny list %s", conn));
    assert_non_null(strstr(out, fpr));

    /* The audit log has the revocation, by alice, and agent2's refusal. */
    EXPECT_EXIT(0, admin("audit --since 10m --limit 10000 --json %s", conn));
    json_parse(j, out);
    bool saw_revoke = false, saw_refusal = false;
    for (int i = 0; i < JSON_MAX; i++) {
        const char *m = json_get(j, "vaults.0.entries.%d.method", i);
        if (m == NULL) {
            break;
        }
        const char *who = json_get(j, "vaults.0.entries.%d.identity", i);
        const char *det = json_get(j, "vaults.0.entries.%d.detail", i);
        const char *dec = json_get(j, "vaults.0.entries.%d.decision", i);
        if (strstr(m, "System") != NULL && strstr(who, "operator/alice") &&
            (strstr(det, "revoke") != NULL || strstr(det, "REVOKE") != NULL)) {
            saw_revoke = true;
        }
        if (strstr(m, "ListSnapshots") != NULL &&
            strstr(dec, "denied") != NULL) {
            saw_refusal = true;
        }
    }
    if (!saw_revoke || !saw_refusal) {
        fail_msg("revoke %d refusal %d in: %s", saw_revoke, saw_refusal, out);
    }
    /* The tenant filter keeps acme's records only. */
    EXPECT_EXIT(0, admin("audit --tenant acme --limit 50 %s", conn));
    assert_non_null(strstr(out, "tenant=acme"));
    assert_null(strstr(out, "tenant=globex"));

    EXPECT_EXIT(0, admin("unrevoke --cert %s/agent2.pem %s", env.dir, conn));
    assert_int_equal(list_as("agent2"), CFR_RPC_OK);
    EXPECT_EXIT(0, admin("deny list %s", conn));
    assert_null(strstr(out, fpr));
    /* Unrevoking what is not there is the vault's refusal. */
    EXPECT_EXIT(8, admin("unrevoke --fingerprint %s %s", fpr, conn));
    cfr_free(j);
}

static void
test_admin_system_vault_revocation_needs_bob(void **state)
{
    (void)state;
    char id[33];
    EXPECT_EXIT(9, admin("revoke --identity coffer://vault/peer-1 --reason "
                         "decommissioned %s",
                         conn));
    approval_of(id);
    assert_non_null(strstr(out, "pending"));
    assert_non_null(strstr(out, "coffer-admin approve "));
    /* The repeat line is this command, for this vault, with the ID. */
    assert_non_null(strstr(out, "coffer-admin revoke --identity "
                                "coffer://vault/peer-1"));
    EXPECT_EXIT(0, admin("deny list %s", conn));
    assert_null(strstr(out, "coffer://vault/peer-1"));
    /* Alice cannot approve her own request. */
    EXPECT_EXIT(8, admin("approve %s %s", id, conn));
    /* Not yet approved: the repeat is refused. */
    EXPECT_EXIT(8, admin("revoke --identity coffer://vault/peer-1 --reason "
                         "decommissioned %s --approval %s",
                         conn, id));
    EXPECT_EXIT(0, admin("approve %s %s", id, conn_bob));
    assert_non_null(strstr(out, "approved"));
    EXPECT_EXIT(0, admin("revoke --identity coffer://vault/peer-1 --reason "
                         "decommissioned %s --approval %s",
                         conn, id));
    assert_non_null(strstr(out, "revoked identity coffer://vault/peer-1"));
    EXPECT_EXIT(0, admin("deny list %s", conn));
    assert_non_null(strstr(out, "coffer://vault/peer-1"));
    /* An approval runs once. */
    EXPECT_EXIT(8, admin("revoke --identity coffer://vault/peer-1 --reason "
                         "decommissioned %s --approval %s",
                         conn, id));
    EXPECT_EXIT(0, admin("unrevoke --identity coffer://vault/peer-1 %s", conn));
}

/* Decodes the "secret: " line and returns the current TOTP code. */
static void
code_from_output(char code[16], char b32[CFR_TOTP_BASE32_MAX])
{
    uint8_t secret[CFR_TOTP_SECRET_MAX];
    size_t len = 0;
    uint32_t c = 0;
    struct cfr_err err;
    const char *p = strstr(out, "\nsecret: ");
    assert_non_null(p);
    p += strlen("\nsecret: ");
    size_t n = strcspn(p, "\n");
    assert_true(n < CFR_TOTP_BASE32_MAX);
    memcpy(b32, p, n);
    b32[n] = '\0';
    assert_int_equal(cfr_base32_decode(b32, secret, sizeof(secret), &len, &err),
                     0);
    assert_int_equal(len, 20);
    assert_int_equal(cfr_totp_at(secret, len, NULL, time(NULL), &c, &err), 0);
    snprintf(code, 16, "%06u", (unsigned)c);
}

static void
test_admin_system_totp_enroll(void **state)
{
    (void)state;
    char code[16], b32[CFR_TOTP_BASE32_MAX], log[65536];

    /* For alice herself (no tenant): her code replaces a second operator. */
    EXPECT_EXIT(0, admin("totp enroll --principal alice %s", conn));
    assert_non_null(strstr(out, "otpauth://totp/Coffer:alice%40operators?"));
    assert_non_null(strstr(out, "not shown again"));
    code_from_output(code, b32);
    assert_int_equal(strlen(b32), 32);
    assert_non_null(strstr(out, b32));
    EXPECT_EXIT(0, admin("revoke --identity coffer://vault/peer-2 --totp %s %s",
                         code, conn));
    assert_non_null(strstr(out, "revoked identity coffer://vault/peer-2"));
    /* A code runs once. */
    EXPECT_EXIT(0, admin("unrevoke --identity coffer://vault/peer-2 %s", conn));
    EXPECT_EXIT(8, admin("revoke --identity coffer://vault/peer-2 --totp %s %s",
                         code, conn));
    assert_null(strstr(vs_vault_log(&vault, log, sizeof(log)), b32));

    /* For acme's admin: the printed secret is the registered one. */
    EXPECT_EXIT(
        0, admin("totp enroll --tenant acme --principal acme-admin %s", conn));
    assert_non_null(strstr(out, "Coffer:acme-admin%40acme"));
    code_from_output(code, b32);
    struct cfr_rpc_client *cli = vs_client(&vault, "acme-admin");
    Coffer__V1__AdminRequest req = COFFER__V1__ADMIN_REQUEST__INIT;
    Coffer__V1__AdminResponse *resp = NULL;
    struct cfr_err err;
    assert_non_null(cli);
    req.op = COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION;
    req.retention_ms = 20 * DAY_MS; /* shorter than acme's 30 days */
    req.totp = code;
    req.reason = (char *)"admin_system_test";
    assert_int_equal(vs_unary(cli, "Admin", &req.base,
                              &coffer__v1__admin_response__descriptor,
                              (ProtobufCMessage **)&resp, &err),
                     CFR_RPC_OK);
    assert_non_null(resp);
    assert_false(resp->pending);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    cfr_rpc_client_free(cli);
    assert_null(strstr(vs_vault_log(&vault, log, sizeof(log)), b32));

    /* Replacing a registered secret needs a second factor: nothing shown. */
    EXPECT_EXIT(
        9, admin("totp enroll --tenant acme --principal acme-admin %s", conn));
    assert_null(strstr(out, "otpauth://"));
    assert_null(strstr(out, "secret:"));
}

/* Several vaults: each reported in order; the first failure's exit code. */
static void
test_admin_system_several_vaults(void **state)
{
    (void)state;
    char conf[PATH_LEN];
    EXPECT_EXIT(7, admin("tenant add hooli %s --vault 127.0.0.1:%d", conn,
                         closed_port));
    const char *ok = strstr(out, ": added tenant hooli");
    assert_non_null(ok);
    assert_non_null(strstr(errs, "UNAVAILABLE"));
    /* The same through a connection file with relative paths; the command
     * line's --vault replaces the file's list. */
    vs_env_path(&env, "ops.conf", conf, sizeof(conf));
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "vaults = [ \"127.0.0.1:%d\", \"127.0.0.1:%d\" ];\n"
            "tls = { cert = \"operator.pem\"; key = \"operator.key\";\n"
            "        ca = \"ca.pem\"; name = \"localhost\"; };\n"
            "timeout = \"5s\";\n",
            vault.port, closed_port);
    fclose(f);
    EXPECT_EXIT(7, admin("tenant add hooli --connect %s", conf));
    assert_non_null(strstr(out, ": exists tenant hooli"));
    EXPECT_EXIT(0, admin("tenant list --connect %s --vault 127.0.0.1:%d", conf,
                         vault.port));
    assert_non_null(strstr(out, "hooli"));
}

/* ---- replication -------------------------------------------------------- */

/* Commits one snapshot of acme (two chunks) as its agent. */
static void
commit_snapshot(struct cfr_keyring *kr, struct cfr_session *ses, uint64_t seed)
{
    struct cfr_rpc_client *agent = vs_client(&vault, "agent");
    struct vc_objset chunks = {0};
    struct vc_snapshot sn;
    uint8_t lease[16];
    bool already = true;

    assert_non_null(agent);
    memset(&sn, 0, sizeof(sn));
    vc_make_chunk(kr, ses, &chunks, seed * 10, 3000);
    vc_make_chunk(kr, ses, &chunks, seed * 10 + 1, 5000);
    vc_make_snapshot(kr, ses, &sn, &chunks, "INBOX", seed);
    assert_int_equal(vc_open_lease(ses, agent, lease, NULL), CFR_RPC_OK);
    assert_int_equal(
        vc_put_objects(agent, lease, &chunks, 0, chunks.n, 4, NULL, NULL),
        CFR_RPC_OK);
    assert_int_equal(
        vc_put_objects(agent, lease, &sn.pages, 0, sn.pages.n, 16, NULL, NULL),
        CFR_RPC_OK);
    assert_int_equal(vc_commit(agent, lease, &sn, &already, NULL), CFR_RPC_OK);
    assert_false(already);
    vc_snapshot_fini(&sn);
    vc_objset_fini(&chunks);
    cfr_rpc_client_free(agent);
}

/* acme's snapshots as its agent lists them. */
static size_t
acme_snapshots(void)
{
    struct cfr_rpc_client *agent = vs_client(&vault, "agent");
    int st = CFR_RPC_UNKNOWN;
    assert_non_null(agent);
    Coffer__V1__ListSnapshotsResponse *ls =
        vc_list_snapshots(agent, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    size_t n = ls->n_snapshots;
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    cfr_rpc_client_free(agent);
    return n;
}

/*
 * replication status shows this vault's own line for acme with the
 * snapshot count the agent sees and the newest commit's time; a second,
 * unreachable vault is its own row and exit 7. The vault has no peers:
 * no peer lines, nothing behind, exit 0; replication sync succeeds
 * (an empty round).
 */
static void
test_admin_system_replication_status_and_sync(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(1700000000000, &err);
    struct cfr_session *ses = kr != NULL ? cfr_session_new(kr, 0, &err) : NULL;
    struct json *j = cfr_calloc(1, sizeof(*j));
    char row[64];

    assert_non_null(ses);
    assert_non_null(j);
    int64_t before = (int64_t)time(NULL) * 1000 - 1000;
    commit_snapshot(kr, ses, 71);
    commit_snapshot(kr, ses, 72);
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;
    size_t want = acme_snapshots();
    assert_true(want >= 2);

    EXPECT_EXIT(0, admin("replication status --tenant acme --json %s", conn));
    json_parse(j, out);
    assert_false(j->bad);
    assert_string_equal(json_get(j, "vaults.0.ok"), "true");
    assert_string_equal(json_get(j, "tenants.0.tenant"), "acme");
    assert_null(json_get(j, "tenants.1.tenant"));
    assert_string_equal(json_get(j, "tenants.0.replicas.0.state"), "ok");
    assert_int_equal(
        strtoll(json_get(j, "tenants.0.replicas.0.snapshots"), NULL, 10),
        (long long)want);
    int64_t newest =
        strtoll(json_get(j, "tenants.0.replicas.0.newest_ms"), NULL, 10);
    assert_true(newest >= before && newest <= after);
    assert_string_equal(json_get(j, "tenants.0.replicas.0.lag_ms"), "0");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.peers"), "0");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.last_sync_ms"),
                        "null");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.behind"), "0");
    assert_string_equal(json_get(j, "alert"), "false");
    /* The raw own line is there too, peer "". */
    assert_string_equal(json_get(j, "vaults.0.sync.0.tenant"), "acme");
    assert_string_equal(json_get(j, "vaults.0.sync.0.peer"), "");

    /* Text: a table for acme with one row for this vault. */
    EXPECT_EXIT(0, admin("replication status --tenant acme %s", conn));
    assert_non_null(strstr(out, "tenant acme (newest "));
    snprintf(row, sizeof(row), "  127.0.0.1:%d ", vault.port);
    const char *r = strstr(out, row);
    assert_non_null(r);
    char count[32];
    snprintf(count, sizeof(count), " %zu ", want);
    const char *eol = strchr(r, '\n');
    const char *c = strstr(r, count);
    assert_true(c != NULL && eol != NULL && c < eol);
    assert_null(strstr(out, "never"));
    /* One time in the row, the newest snapshot's: nothing was repaired,
     * so LAST REPAIR is "-", not a copy of another column. */
    int times = 0;
    for (const char *z = r; z != NULL && z < eol; z = strstr(z + 1, "Z ")) {
        times += z != r;
    }
    assert_int_equal(times, 1);

    /* Without --tenant: every tenant; acme and globex are registered. */
    EXPECT_EXIT(0, admin("replication status --json %s", conn));
    json_parse(j, out);
    bool acme = false;
    for (int i = 0; i < 64 && json_get(j, "tenants.%d.tenant", i) != NULL;
         i++) {
        acme = acme || strcmp(json_get(j, "tenants.%d.tenant", i), "acme") == 0;
    }
    assert_true(acme);

    /* A second vault down: its row says so, exit 7 (partial failure). */
    EXPECT_EXIT(7, admin("replication status --tenant acme %s --vault "
                         "127.0.0.1:%d",
                         conn, closed_port));
    snprintf(row, sizeof(row), "  127.0.0.1:%d ", closed_port);
    r = strstr(out, row);
    assert_non_null(r);
    eol = strchr(r, '\n');
    c = strstr(r, "unreachable: UNAVAILABLE");
    assert_true(c != NULL && eol != NULL && c < eol);
    snprintf(row, sizeof(row), "  127.0.0.1:%d ", vault.port);
    assert_non_null(strstr(out, row));

    /* Refused before any vault is contacted (the closed port would be 7). */
    EXPECT_EXIT(2, admin("replication status --tenant Bad --vault 127.0.0.1:%d "
                         "--tls-cert %s/operator.pem --tls-key %s/operator.key "
                         "--ca-cert %s/ca.pem",
                         closed_port, env.dir, env.dir, env.dir));
    EXPECT_EXIT(2, admin("replication resync %s", conn));
    EXPECT_EXIT(2, admin("replication sync --json %s", conn));

    /* No peers: an empty round, still a success (fan-out includes
     * peerless vaults). */
    EXPECT_EXIT(0, admin("replication sync %s", conn));
    snprintf(row, sizeof(row), "127.0.0.1:%d: sync started for all tenants",
             vault.port);
    assert_non_null(strstr(out, row));
    /* A tenant not registered there: refused, named. */
    EXPECT_EXIT(8, admin("replication status --tenant nosuch %s", conn));
    assert_non_null(strstr(out, "refused: NOT_FOUND"));

    cfr_free(j);
    cfr_session_free(ses);
    cfr_keyring_free(kr);
}

/*
 * A vault with a peer that is down: after a round, replication status
 * shows the peer's error and "never" for the last sync, warns on stderr
 * and exits 10, the code a cron job alerts on.
 */
static void
test_admin_system_replication_peer_down_is_exit_10(void **state)
{
    (void)state;
    struct vs_vault va;
    struct json *j = cfr_calloc(1, sizeof(*j));
    char c2[2048];
    int rc = -1;

    assert_non_null(j);
    assert_int_equal(vs_vault_init(&va, &env, "va"), 0);
    snprintf(va.extra_cfg, sizeof(va.extra_cfg),
             "name = \"vault-a\";\n"
             "peers = ( { name = \"vault-b\"; address = \"127.0.0.1:%d\";\n"
             "            region = \"test-2\"; tls_name = \"localhost\"; } );\n"
             "sync = { interval = \"0\"; timeout = \"2s\";\n"
             "         cert = \"%s/vault-a.pem\"; key = \"%s/vault-a.key\"; "
             "};\n",
             closed_port, env.dir, env.dir);
    assert_int_equal(vs_vault_start(&va, 30000), 0);
    snprintf(c2, sizeof(c2),
             "--vault 127.0.0.1:%d --tls-cert %s/operator.pem --tls-key "
             "%s/operator.key --ca-cert %s/ca.pem --tls-name localhost",
             va.port, env.dir, env.dir, env.dir);
    EXPECT_EXIT(0, admin("replication sync --tenant acme %s", c2));
    assert_non_null(strstr(out, "sync started for tenant acme"));
    /* The round runs in the vault: poll until the peer line records its
     * attempt (bounded). */
    int64_t end = mono_ms() + 20000;
    while (mono_ms() < end) {
        rc = admin("replication status --tenant acme --json %s", c2);
        json_parse(j, out);
        const char *e = json_get(j, "tenants.0.replicas.0.last_error");
        if (rc == 10 && e != NULL && strcmp(e, "null") != 0) {
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc != 10) {
        fail_msg("exit %d, want 10\nstdout: %s\nstderr: %s", rc, out, errs);
    }
    assert_string_equal(json_get(j, "alert"), "true");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.state"), "ok");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.peers"), "1");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.last_sync_ms"), "0");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.error_peer"),
                        "vault-b");
    assert_string_equal(json_get(j, "tenants.0.replicas.0.alert"), "true");
    assert_string_equal(json_get(j, "vaults.0.sync.1.peer"), "vault-b");
    assert_string_equal(json_get(j, "vaults.0.sync.1.region"), "test-2");
    assert_non_null(strstr(errs, "tenant acme"));
    assert_non_null(strstr(errs, "peer vault-b failed: "));
    /* The text table says the same. */
    EXPECT_EXIT(10, admin("replication status --tenant acme %s", c2));
    assert_non_null(strstr(out, " never "));
    assert_non_null(strstr(out, "vault-b: "));
    /* With the other vault too: still 10 (both answered). */
    EXPECT_EXIT(10, admin("replication status --tenant acme %s --vault "
                          "127.0.0.1:%d",
                          c2, vault.port));
    /* All tenants at once. */
    EXPECT_EXIT(0, admin("replication sync %s", c2));
    snprintf(c2, sizeof(c2), "127.0.0.1:%d: sync started for all tenants",
             va.port);
    assert_non_null(strstr(out, c2));
    assert_int_equal(vs_vault_stop(&va, SIGKILL, 10000), 128 + SIGKILL);
    cfr_free(j);
}

/* ---- setup ------------------------------------------------------------- */

/* A port nothing listens on: bound, never listened, closed. */
static int
find_closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0 ||
        vs_vault_init(&vault, &env, "v1") != 0 ||
        vs_vault_start(&vault, 30000) != 0 ||
        (closed_port = find_closed_port()) <= 0) {
        return -1;
    }
    snprintf(conn, sizeof(conn),
             "--vault 127.0.0.1:%d --tls-cert %s/operator.pem --tls-key "
             "%s/operator.key --ca-cert %s/ca.pem --tls-name localhost",
             vault.port, env.dir, env.dir, env.dir);
    snprintf(conn_bob, sizeof(conn_bob),
             "--vault 127.0.0.1:%d --tls-cert %s/operator2.pem --tls-key "
             "%s/operator2.key --ca-cert %s/ca.pem",
             vault.port, env.dir, env.dir, env.dir);
    /* acme may be registered by the harness already: same settings, so
     * this passes either way. */
    if (admin("tenant add acme %s", conn) != 0) {
        fprintf(stderr, "admin_system_test: tenant add acme: %s%s\n", out,
                errs);
        return -1;
    }
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
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_admin_system_bad_options_refused_before_connecting),
        cmocka_unit_test(test_admin_system_unreachable_vault_is_exit_7_quickly),
        cmocka_unit_test(test_admin_system_tenant_add_list_set),
        cmocka_unit_test(test_admin_system_revoke_cert_deny_list_audit),
        cmocka_unit_test(test_admin_system_vault_revocation_needs_bob),
        cmocka_unit_test(test_admin_system_totp_enroll),
        cmocka_unit_test(test_admin_system_several_vaults),
        cmocka_unit_test(test_admin_system_replication_status_and_sync),
        cmocka_unit_test(test_admin_system_replication_peer_down_is_exit_10),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
