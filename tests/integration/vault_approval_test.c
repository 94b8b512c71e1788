/*
 * vault_approval_test.c - the second factor of a destructive admin
 * operation, end to end, with a PKI made only by the built coffer-admin as
 * docs/ADMIN.md tells an operator to make it: `ca init`, a vault
 * certificate by IP (`--role vault --ip 127.0.0.1 --name v1`), an agent, a
 * restore host, two admins with their own `--name` (alice, bob) and an
 * operator (`--role operator --name ops`).
 *
 * What it proves, against a real coffer-vault serving that PKI:
 *  1. The certificates work as documented: TLS by IP SAN, identities
 *     read from the URIs; the tenant acts only once the operator has
 *     registered it (System TENANT_ADD).
 *  2. A purge by alice is only pending: the snapshot stays listed and its
 *     chunks stay readable (GC included); alice cannot approve herself;
 *     once bob approves, alice's repeat with the approval ID purges, once,
 *     and GC then removes the chunks.
 *  3. With a TOTP secret registered by the operator (System TOTP_SET), a
 *     wrong code is refused and deletes nothing, the right code purges at
 *     once, and the same code is not accepted twice.
 *
 * The harness's vs_vault_start cannot be used: its clients verify the
 * server as "localhost", which an IP-only vault certificate rightly is not.
 * The test starts the vault itself (config from vs_vault_write_config) and
 * connects by IP, as a deployment would.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>    /* errno */
#include <fcntl.h>    /* open */
#include <signal.h>   /* SIGTERM, SIGKILL */
#include <stdio.h>    /* snprintf, FILE */
#include <stdlib.h>   /* mkdtemp */
#include <string.h>   /* memcmp, strstr */
#include <sys/wait.h> /* waitpid */
#include <time.h>     /* time: TOTP codes */
#include <unistd.h>   /* fork, execv */

#include "agent_run_support.h"    /* ars_slurp */
#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* a sealing session */
#include "keys.h"                 /* the tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "totp.h"                 /* codes for the registered secret */
#include "vault_client_support.h" /* objects and RPC wrappers */
#include "vault_support.h"        /* config, stop, log */

#define TENANT      "acme"
#define START_MS    30000
#define GC_WAIT_MS  20000 /* for the upload leases to expire and GC to run */
#define OUT_MAX     8192
#define FILE_MAX    (1u << 16)
#define SECRET_LEN  20
#define N_CHUNKS    6
#define CHUNK_BYTES 3000

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *keyring;
static struct cfr_session *session;
static char admin_out[OUT_MAX];

/* ---- coffer-admin ------------------------------------------------------- */

/*
 * Runs coffer-admin with args (NULL-terminated), its output into
 * admin_out. Returns the exit code, or -1 when it could not run.
 */
static int
run_admin(const char *const *args)
{
    char log_path[2 * VS_PATH_MAX];
    const char *argv[24];
    size_t n = 0;
    pid_t pid;
    int st, fd;
    FILE *f;

    snprintf(log_path, sizeof(log_path), "%s/admin.out", env.dir);
    argv[n++] = COFFER_ADMIN_BIN;
    for (size_t i = 0; args[i] != NULL && n < 23; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if ((pid = fork()) < 0) {
        return -1;
    }
    if (pid == 0) {
        fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* coffer-admin only writes a few files: it ends at once. */
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    admin_out[0] = '\0';
    if ((f = fopen(log_path, "r")) != NULL) {
        size_t len = fread(admin_out, 1, sizeof(admin_out) - 1, f);
        admin_out[len] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* cert issue, which must succeed; what says what for the failure message. */
static void
issue(const char *what, const char *const *args)
{
    int rc = run_admin(args);
    if (rc != 0) {
        fail_msg("coffer-admin cert issue (%s) exited %d:\n%s", what, rc,
                 admin_out);
    }
    /* The documented output names the identity it issued. */
    assert_non_null(strstr(admin_out, "identity: "));
}

static void
copy_file(const char *from, const char *to)
{
    char *buf = cfr_malloc(FILE_MAX);
    FILE *in = fopen(from, "rb"), *out;
    size_t n;
    assert_non_null(buf);
    assert_non_null(in);
    n = fread(buf, 1, FILE_MAX, in);
    fclose(in);
    out = fopen(to, "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(fclose(out), 0);
    cfr_free(buf);
}

/* The PKI of the header, under env.dir with the names the config uses. */
static void
make_pki(void)
{
    char ca_dir[2 * VS_PATH_MAX], p[8][2 * VS_PATH_MAX + 16];
    int rc;

    snprintf(ca_dir, sizeof(ca_dir), "%s/ca", env.dir);
    {
        const char *a[] = {"ca", "init", "--dir", ca_dir, NULL};
        rc = run_admin(a);
        if (rc != 0) {
            fail_msg("coffer-admin ca init exited %d:\n%s", rc, admin_out);
        }
    }
    vs_env_path(&env, "server", p[0], sizeof(p[0]));
    vs_env_path(&env, "agent", p[1], sizeof(p[1]));
    vs_env_path(&env, "restore", p[2], sizeof(p[2]));
    vs_env_path(&env, "alice", p[3], sizeof(p[3]));
    vs_env_path(&env, "bob", p[4], sizeof(p[4]));
    vs_env_path(&env, "operator", p[5], sizeof(p[5]));
    {
        const char *a[] = {"cert",  "issue", "--ca",      ca_dir,   "--role",
                           "vault", "--ip",  "127.0.0.1", "--name", "v1",
                           "--out", p[0],    NULL};
        issue("vault", a);
    }
    {
        const char *a[] = {"cert",   "issue", "--ca",     ca_dir,
                           "--role", "agent", "--tenant", TENANT,
                           "--out",  p[1],    NULL};
        issue("agent", a);
    }
    {
        const char *a[] = {"cert",   "issue",   "--ca",     ca_dir,
                           "--role", "restore", "--tenant", TENANT,
                           "--out",  p[2],      NULL};
        issue("restore", a);
    }
    {
        const char *a[] = {"cert",  "issue",    "--ca", ca_dir,   "--role",
                           "admin", "--tenant", TENANT, "--name", "alice",
                           "--out", p[3],       NULL};
        issue("admin alice", a);
    }
    {
        const char *a[] = {"cert",  "issue",    "--ca", ca_dir,   "--role",
                           "admin", "--tenant", TENANT, "--name", "bob",
                           "--out", p[4],       NULL};
        issue("admin bob", a);
    }
    {
        const char *a[] = {"cert",   "issue",    "--ca",   ca_dir,
                           "--role", "operator", "--name", "ops",
                           "--out",  p[5],       NULL};
        /* Fails clearly (exit 2, "unknown role") while coffer-admin lacks
         * operator certificates. */
        issue("operator", a);
    }
    /* Both sides trust the one CA; the vault reads clients-ca.pem. */
    snprintf(p[6], sizeof(p[6]), "%s/ca.pem", ca_dir);
    vs_env_path(&env, "ca.pem", p[7], sizeof(p[7]));
    copy_file(p[6], p[7]);
    vs_env_path(&env, "clients-ca.pem", p[7], sizeof(p[7]));
    copy_file(p[6], p[7]);
}

/* ---- the vault and its clients ------------------------------------------ */

/* A client for ident's files, verifying the vault by its IP SAN. */
static struct cfr_rpc_client *
client(const char *ident)
{
    char path[2 * VS_PATH_MAX + 16], target[64];
    char *ca, *cert, *key;
    struct cfr_rpc_client *cli = NULL;
    struct cfr_rpc_client_opts o;
    struct cfr_err err;

    snprintf(path, sizeof(path), "%s/ca.pem", env.dir);
    ca = ars_slurp(path, NULL);
    snprintf(path, sizeof(path), "%s/%s.pem", env.dir, ident);
    cert = ars_slurp(path, NULL);
    snprintf(path, sizeof(path), "%s/%s.key", env.dir, ident);
    key = ars_slurp(path, NULL);
    if (ca != NULL && cert != NULL && key != NULL) {
        snprintf(target, sizeof(target), "127.0.0.1:%d", vault.port);
        memset(&o, 0, sizeof(o));
        o.target = target;
        o.target_name = NULL; /* the host part: 127.0.0.1 */
        o.ca_pem = ca;
        o.cert_pem = cert;
        o.key_pem = key;
        o.max_msg = (size_t)80 << 20;
        if (cfr_rpc_client_new(&o, &cli, &err) != 0) {
            cli = NULL;
        }
    }
    cfr_free(ca);
    cfr_free(cert);
    cfr_free(key);
    assert_non_null(cli);
    return cli;
}

/* Starts coffer-vault on vault.dir's config; ready once Health answers. */
static void
start_vault(void)
{
    char conf[2 * VS_PATH_MAX], log_path[2 * VS_PATH_MAX];
    char port_path[2 * VS_PATH_MAX];
    int64_t end = vc_now_ms() + START_MS;

    assert_int_equal(vs_vault_write_config(&vault), 0);
    snprintf(conf, sizeof(conf), "%s/vault.conf", vault.dir);
    snprintf(log_path, sizeof(log_path), "%s/vault.log", vault.dir);
    snprintf(port_path, sizeof(port_path), "%s/port", vault.dir);
    vault.pid = fork();
    assert_true(vault.pid >= 0);
    if (vault.pid == 0) {
        const char *argv[] = {COFFER_VAULT_BIN, "--config", conf, NULL};
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    vault.port = 0;
    for (;;) {
        char *p = ars_slurp(port_path, NULL);
        if (p != NULL) {
            vault.port = (int)strtol(p, NULL, 10);
            cfr_free(p);
        }
        if (vault.port != 0) {
            break;
        }
        if (!vs_vault_alive(&vault) || vc_now_ms() > end) {
            char *log = cfr_malloc(OUT_MAX);
            assert_non_null(log);
            fail_msg("vault did not start:\n%s",
                     vs_vault_log(&vault, log, OUT_MAX));
        }
        vc_sleep_ms(20);
    }
    for (;;) {
        struct cfr_rpc_client *cli = client("agent");
        int st = vc_health(cli, NULL);
        cfr_rpc_client_free(cli);
        if (st == CFR_RPC_OK) {
            return;
        }
        if (!vs_vault_alive(&vault) || vc_now_ms() > end) {
            char *log = cfr_malloc(OUT_MAX);
            assert_non_null(log);
            fail_msg("vault never answered Health over the coffer-admin "
                     "PKI (%s):\n%s",
                     cfr_rpc_status_name(st),
                     vs_vault_log(&vault, log, OUT_MAX));
        }
        vc_sleep_ms(50);
    }
}

/* System op as the operator; returns the status, message into msg. */
static int
system_call(struct cfr_rpc_client *op, Coffer__V1__SystemRequest *req,
            char *msg, size_t msg_size)
{
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    int st = vs_unary(op, "System", &req->base,
                      &coffer__v1__system_response__descriptor, &resp, &err);
    snprintf(msg, msg_size, "%s", err.msg);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

/* Uploads n chunks and commits one snapshot of mailbox as the agent. */
static void
upload(struct cfr_rpc_client *agent, struct vc_objset *chunks,
       struct vc_snapshot *sn, const char *mailbox, uint64_t seed)
{
    uint8_t lease[16];
    uint64_t stored = 0;
    bool already = true;
    char msg[256];

    for (int i = 0; i < N_CHUNKS; i++) {
        vc_make_chunk(keyring, session, chunks, seed * 100 + (uint64_t)i,
                      CHUNK_BYTES + (size_t)i * 111);
    }
    vc_make_snapshot(keyring, session, sn, chunks, mailbox, seed);
    {
        struct cfr_err err;
        int st = vc_open_lease(session, agent, lease, &err);
        snprintf(msg, sizeof(msg), "%s", err.msg);
        if (st != CFR_RPC_OK) {
            fail_msg("OpenLease: %s: %s", cfr_rpc_status_name(st), msg);
        }
    }
    assert_int_equal(
        vc_put_objects(agent, lease, chunks, 0, chunks->n, 4, &stored, NULL),
        CFR_RPC_OK);
    assert_int_equal(stored, chunks->n);
    assert_int_equal(vc_put_objects(agent, lease, &sn->pages, 0, sn->pages.n,
                                    16, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(vc_commit(agent, lease, sn, &already, NULL), CFR_RPC_OK);
    assert_false(already);
}

/* How many snapshots of mailbox_id are listed. */
static size_t
count_listed(struct cfr_rpc_client *cli, const uint8_t *mailbox_id)
{
    int st;
    size_t n = 0;
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(cli, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        if (memcmp(ls->snapshots[i]->mailbox_id.data, mailbox_id, VC_ID_LEN) ==
            0) {
            n++;
        }
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    return n;
}

/*
 * Runs GC (as adm) until none of gone's chunks is left, keep's all read
 * back intact, polling until the upload leases have expired; bounded.
 */
static void
gc_until_gone(struct cfr_rpc_client *adm, struct cfr_rpc_client *agent,
              struct cfr_rpc_client *rest, const struct vc_objset *gone,
              const struct vc_objset *keep)
{
    int64_t end = vc_now_ms() + GC_WAIT_MS;
    size_t left;
    for (;;) {
        bool *miss = cfr_calloc(gone->n + 1, sizeof(bool));
        size_t n_missing = 0;
        assert_non_null(miss);
        assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL,
                                  0, NULL, NULL, 0),
                         CFR_RPC_OK);
        assert_int_equal(vc_missing(agent, NULL, gone, miss, &n_missing),
                         CFR_RPC_OK);
        cfr_free(miss);
        left = gone->n - n_missing;
        if (left == 0) {
            break;
        }
        if (vc_now_ms() > end) {
            fail_msg("%zu of %zu purged chunks still there after %d ms of GC",
                     left, gone->n, GC_WAIT_MS);
        }
        vc_sleep_ms(200); /* the lease expires by the vault's clock */
    }
    if (keep != NULL && keep->n > 0) {
        assert_int_equal(vc_check_objects(agent, rest, keep, true), keep->n);
    }
}

/* ---- the test ----------------------------------------------------------- */

static void
test_vault_purge_second_factor_with_coffer_admin_pki(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent, *rest, *alice, *bob, *op;
    struct vc_objset inbox = {0}, sent = {0};
    struct vc_snapshot sn_inbox, sn_sent;
    Coffer__V1__AdminResponse *ar = NULL;
    uint8_t approval[16], lease[16];
    char msg[512];
    int st;

    make_pki();
    /* Short leases: the purged chunks become collectable in seconds. */
    snprintf(vault.extra_cfg, sizeof(vault.extra_cfg),
             "lease_ttl = \"2s\";\nretention = { schedule = \"0\"; };\n");
    start_vault();
    agent = client("agent");
    rest = client("restore");
    alice = client("alice");
    bob = client("bob");
    op = client("operator");

    /* 1. Unregistered, the tenant gets nothing done; the operator
     * registers it. */
    {
        struct cfr_err err;
        assert_int_equal(vc_open_lease(session, agent, lease, &err),
                         CFR_RPC_PERMISSION_DENIED);
        assert_non_null(strstr(err.msg, "not registered"));
    }
    {
        Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
        Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
        ti.name = (char *)TENANT;
        req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD;
        req.tenant = &ti;
        req.reason = (char *)"vault_approval_test";
        st = system_call(op, &req, msg, sizeof(msg));
        if (st != CFR_RPC_OK) {
            fail_msg("System TENANT_ADD as operator ops: %s: %s",
                     cfr_rpc_status_name(st), msg);
        }
    }
    /* Registered but nothing stored yet: maintenance has nothing to do,
     * which is success, not "no such tenant". */
    {
        Coffer__V1__AdminResponse *gc = NULL;
        assert_int_equal(vc_admin(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_GC,
                                  NULL, 0, &gc, msg, sizeof(msg)),
                         CFR_RPC_OK);
        assert_non_null(gc);
        assert_int_equal(gc->objects_removed, 0);
        coffer__v1__admin_response__free_unpacked(gc, NULL);
        assert_int_equal(
            vc_admin(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION,
                     NULL, 0, NULL, msg, sizeof(msg)),
            CFR_RPC_OK);
    }
    upload(agent, &inbox, &sn_inbox, "INBOX", 1);
    upload(agent, &sent, &sn_sent, "Sent", 2);

    /* 2. alice asks: pending, and nothing is deleted, GC or not. */
    vc_expect_pending(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                      sn_inbox.mailbox_id, 0, approval);
    assert_true(vc_log_has(&vault, "vault.approval.requested"));
    assert_int_equal(count_listed(rest, sn_inbox.mailbox_id), 1);
    assert_int_equal(vc_admin(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, 0,
                              NULL, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(vc_check_objects(agent, rest, &inbox, true), inbox.n);
    /* Not approved yet, and alice cannot approve her own request. */
    assert_int_equal(
        vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn_inbox.mailbox_id, 0, approval, NULL, NULL, NULL, 0),
        CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE,
                                 NULL, 0, approval, NULL, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(count_listed(rest, sn_inbox.mailbox_id), 1);
    assert_int_equal(vc_check_objects(agent, rest, &inbox, true), inbox.n);

    /* bob, another CN of the same tenant, approves; alice's repeat runs,
     * once. */
    st = vc_admin_ex(bob, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE, NULL, 0,
                     approval, NULL, NULL, msg, sizeof(msg));
    if (st != CFR_RPC_OK) {
        fail_msg("bob's APPROVE: %s: %s", cfr_rpc_status_name(st), msg);
    }
    assert_true(vc_log_has(&vault, "vault.approval.approved"));
    assert_int_equal(count_listed(rest, sn_inbox.mailbox_id), 1);
    assert_int_equal(
        vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn_inbox.mailbox_id, 0, approval, NULL, &ar, NULL, 0),
        CFR_RPC_OK);
    assert_non_null(ar);
    assert_false(ar->pending);
    assert_int_equal(ar->snapshots_removed, 1);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    ar = NULL;
    assert_int_equal(
        vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn_inbox.mailbox_id, 0, approval, NULL, NULL, NULL, 0),
        CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(count_listed(rest, sn_inbox.mailbox_id), 0);
    assert_int_equal(count_listed(rest, sn_sent.mailbox_id), 1);
    assert_true(vc_log_has(&vault, "method=approval"));
    gc_until_gone(alice, agent, rest, &inbox, &sent);

    /* 3. TOTP: the operator registers alice's secret. */
    {
        Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
        uint8_t secret[SECRET_LEN];
        char code[16], wrong[16];
        uint32_t c = 0;
        struct cfr_err err;

        assert_int_equal(cfr_totp_secret_generate(secret, sizeof(secret), &err),
                         0);
        req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET;
        req.tenant_name = (char *)TENANT;
        req.principal = (char *)"alice";
        req.totp_secret.data = secret;
        req.totp_secret.len = sizeof(secret);
        req.reason = (char *)"vault_approval_test";
        st = system_call(op, &req, msg, sizeof(msg));
        if (st != CFR_RPC_OK) {
            fail_msg("System TOTP_SET for alice: %s: %s",
                     cfr_rpc_status_name(st), msg);
        }
        assert_int_equal(cfr_totp_at(secret, sizeof(secret), NULL,
                                     (int64_t)time(NULL), &c, &err),
                         0);
        snprintf(code, sizeof(code), "%06u", (unsigned)c);
        /* A wrong code: one the vault accepts at no step of its window
         * (now +-1 step, two steps of margin); at most 7 candidates. */
        wrong[0] = '\0';
        for (uint32_t k = 0; k < 8 && wrong[0] == '\0'; k++) {
            uint32_t w = (c + 500000 + k) % 1000000;
            bool clash = false;
            for (int d = -2; d <= 2; d++) {
                uint32_t x = 0;
                assert_int_equal(cfr_totp_at(secret, sizeof(secret), NULL,
                                             (int64_t)time(NULL) + d * 30, &x,
                                             &err),
                                 0);
                clash = clash || x == w;
            }
            if (!clash) {
                snprintf(wrong, sizeof(wrong), "%06u", (unsigned)w);
            }
        }
        assert_true(wrong[0] != '\0');
        /* A wrong code deletes nothing. */
        assert_int_equal(
            vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                        sn_sent.mailbox_id, 0, NULL, wrong, NULL, msg,
                        sizeof(msg)),
            CFR_RPC_PERMISSION_DENIED);
        assert_non_null(strstr(msg, "second factor rejected"));
        /* bob has no secret: alice's code is no factor for him. */
        assert_int_equal(
            vc_admin_ex(bob, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                        sn_sent.mailbox_id, 0, NULL, code, NULL, NULL, 0),
            CFR_RPC_PERMISSION_DENIED);
        assert_int_equal(count_listed(rest, sn_sent.mailbox_id), 1);
        assert_int_equal(vc_check_objects(agent, rest, &sent, true), sent.n);
        /* The right code runs the purge at once. */
        st = vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                         sn_sent.mailbox_id, 0, NULL, code, &ar, msg,
                         sizeof(msg));
        if (st != CFR_RPC_OK) {
            fail_msg("purge with alice's TOTP code: %s: %s",
                     cfr_rpc_status_name(st), msg);
        }
        assert_non_null(ar);
        assert_false(ar->pending);
        assert_int_equal(ar->snapshots_removed, 1);
        protobuf_c_message_free_unpacked(&ar->base, NULL);
        ar = NULL;
        assert_true(vc_log_has(&vault, "method=totp"));
        /* Each code once. */
        assert_int_equal(
            vc_admin_ex(alice, COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION,
                        NULL, 3600000, NULL, code, NULL, NULL, 0),
            CFR_RPC_PERMISSION_DENIED);
        assert_int_equal(count_listed(rest, sn_sent.mailbox_id), 0);
    }
    gc_until_gone(alice, agent, rest, &sent, NULL);

    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    cfr_rpc_client_free(alice);
    cfr_rpc_client_free(bob);
    cfr_rpc_client_free(op);
    assert_int_equal(vs_vault_stop(&vault, SIGTERM, 30000), 0);
    vc_snapshot_fini(&sn_inbox);
    vc_snapshot_fini(&sn_sent);
    vc_objset_fini(&inbox);
    vc_objset_fini(&sent);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;

    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    /* Not vs_env_init: its PKI is the test script's, not coffer-admin's. */
    memset(&env, 0, sizeof(env));
    snprintf(env.dir, sizeof(env.dir), "/tmp/coffer-approval-test-XXXXXX");
    if (mkdtemp(env.dir) == NULL) {
        perror("mkdtemp");
        env.dir[0] = '\0';
        return -1;
    }
    return vs_vault_init(&vault, &env, "v1");
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGKILL, 10000);
    }
    vs_env_fini(&env);
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
            test_vault_purge_second_factor_with_coffer_admin_pki, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
