/*
 * restore_purge_test.c - account termination end to end (issue 5,
 * docs/RETENTION.md): two coffer-vault processes, the real coffer-agent
 * backing up to both, coffer-restore purge, approve, hold and release.
 *
 *  - alice (a0, a1, and a list message L) and bob (b0 and the same L,
 *    byte for byte, so its chunks are shared) are backed up; alice loses
 *    a1 and is backed up again.
 *  - hold bob's snapshot works at once; release is destructive: exit 9,
 *    pending, with an approval ID per vault.
 *  - 13 hours later (the agent's upload leases have ended; restart with
 *    a test clock offset), purge --mailbox alice by acme-admin: exit 9, one
 * approval ID per vault; acme-admin2 approves each (coffer-restore approve with
 * its own admin certificate); the purge repeated with --approval HOST:PORT=ID
 *    exits 0 and reports no snapshot left.
 *  - afterwards, on both vaults: no snapshot of alice is listed; every
 *    chunk only alice used is gone (Missing by chunk ID, restore
 *    certificate); every chunk of bob, L's included, is there; bob
 *    restores byte-exact (b0 and L); the vault logs name the purge
 *    (vault.purge). Purging again finds nothing and exits 0.
 *
 * About 9 s on two cores (a vault restart moves the clock).
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs, trees */
#include "buf.h"                  /* cfr_hex_encode */
#include "fetch.h"                /* restore_fetcher */
#include "keys.h"                 /* cfr_keyring_import */
#include "manifest.h"             /* restore_manifest_* */
#include "mem.h"                  /* cfr_free */
#include "restore.h"              /* restore_list */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "vault_client_support.h" /* vc_missing, vc_now_ms */
#include "vault_support.h"        /* the harness */

#ifndef COFFER_RESTORE_BIN
#error "COFFER_RESTORE_BIN must name the coffer-restore binary"
#endif
#ifndef COFFER_AGENT_BIN
#error "COFFER_AGENT_BIN must name the coffer-agent binary"
#endif

#define N_VAULTS  2
#define ESCROW_PW "purge test escrow passphrase"
#define RUN_MS    60000
#define DOMAIN    "example.org"
#define MAX_SNAPS 16
#define FMT(buf, ...)                                                          \
    assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static int ports[N_VAULTS];
static char dir[VS_PATH_MAX + 64], mail[VS_PATH_MAX + 64];
static char key_file[VS_PATH_MAX + 96], pass_file[VS_PATH_MAX + 96],
    escrow[VS_PATH_MAX + 96], escrow_pass[VS_PATH_MAX + 96];
static char conf_all[VS_PATH_MAX + 96], conf_one[N_VAULTS][VS_PATH_MAX + 96];
static char agent_conf[VS_PATH_MAX + 96];

/* ---- mail --------------------------------------------------------------- */

static void
msg_path(const char *user, int n, char *out, size_t size)
{
    assert_true((size_t)snprintf(out, size,
                                 "%s/%s/%s/Maildir/cur/%d.M%dP7.test:2,S", mail,
                                 DOMAIN, user, 1700000000 + n, n) < size);
}

/* The message's bytes: headers with a Message-ID, a 6 KB body that no
 * other message shares. Owned (cfr_free). */
static char *
msg_bytes(const char *user, int n, size_t *len_r)
{
    size_t cap = 8192, len;
    char *p = cfr_malloc(cap);
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(n + 1) ^ (uint64_t)user[0];
    assert_non_null(p);
    len = (size_t)snprintf(p, cap,
                           "From: sender@example.net\r\nTo: %s@" DOMAIN
                           "\r\nSubject: message %d\r\nMessage-ID: "
                           "<%s-%d@retention.test>\r\nDate: Mon, 23 Nov 2026 "
                           "10:00:00 +0000\r\n\r\n",
                           user, n, user, n);
    while (len < 6000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[len++] = (char)('a' + (x % 26));
        if (len % 72 == 0) {
            p[len++] = '\n';
        }
    }
    p[len] = '\0';
    *len_r = len;
    return p;
}

static void
msg_write(const char *user, int n)
{
    char path[VS_PATH_MAX + 256];
    size_t len;
    char *b = msg_bytes(user, n, &len);
    msg_path(user, n, path, sizeof(path));
    assert_int_equal(ars_write(path, b, len, 0600), 0);
    cfr_free(b);
}

static void
msg_delete(const char *user, int n)
{
    char path[VS_PATH_MAX + 256];
    msg_path(user, n, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
}

static void
mailbox_make(const char *user)
{
    static const char *const sub[] = {"", "/cur", "/new", "/tmp"};
    char p[VS_PATH_MAX + 256];
    FMT(p, "%s/%s", mail, DOMAIN);
    (void)mkdir(p, 0700);
    FMT(p, "%s/%s/%s", mail, DOMAIN, user);
    assert_int_equal(mkdir(p, 0700), 0);
    for (size_t i = 0; i < 4; i++) {
        FMT(p, "%s/%s/%s/Maildir%s", mail, DOMAIN, user, sub[i]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
}

/* ---- programs ----------------------------------------------------------- */

/* Runs a program; stdout into *out_r (owned) when not NULL. */
static int
run(const char *bin, const char *const *args, char **out_r)
{
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    FMT(op, "%s/run.out", dir);
    FMT(ep, "%s/run.err", dir);
    int code = ars_run(bin, args, op, ep, RUN_MS);
    if (out_r != NULL) {
        *out_r = ars_slurp(op, NULL);
        assert_non_null(*out_r);
    }
    if (code != 0) {
        char *o = ars_slurp(op, NULL), *e = ars_slurp(ep, NULL);
        fprintf(stderr, "(%s %s exit %d)\nstdout: %s\nstderr: %s\n", bin,
                args[2] != NULL ? args[2] : "", code, o != NULL ? o : "",
                e != NULL ? e : "");
        cfr_free(o);
        cfr_free(e);
    }
    return code;
}

/* Restore configurations: every vault (and the admin certificate), and
 * one per vault; rewritten after each restart (the ports change). */
static void
write_confs(void)
{
    for (int k = -1; k < N_VAULTS; k++) {
        FILE *f = fopen(k < 0 ? conf_all : conf_one[k], "w");
        assert_non_null(f);
        fprintf(f,
                "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
                "\"%s\";\nvaults = [ ",
                escrow, escrow_pass);
        for (int i = 0; i < N_VAULTS; i++) {
            if (k < 0 || k == i) {
                fprintf(f, "%s\"127.0.0.1:%d\"", k < 0 && i > 0 ? ", " : "",
                        ports[i]);
            }
        }
        fprintf(
            f,
            " ];\ntls = { ca = \"%s/ca.pem\"; cert = \"%s/acme-restore.pem\"; "
            "key = \"%s/acme-restore.key\"; server_name = \"localhost\"; };\n"
            "admin_tls = { cert = \"%s/acme-admin.pem\"; key = "
            "\"%s/acme-admin.key\"; };\ntimeout = \"20s\";\n"
            "log_level = \"error\";\n",
            env.dir, env.dir, env.dir, env.dir, env.dir);
        assert_int_equal(fclose(f), 0);
    }
    char st[VS_PATH_MAX + 96], mb[VS_PATH_MAX + 160];
    FMT(st, "%s/state", dir);
    FMT(mb, "mailbox_pattern = \"%s/%%d/%%n/Maildir\";", mail);
    struct ars_agent_conf c = {env.dir, key_file, pass_file, st, dir,
                               ports,   N_VAULTS, 0,         mb};
    assert_int_equal(ars_agent_conf_write(agent_conf, &c), 0);
}

/* Restarts every vault with the test clock offset ("29d"). */
static void
move_clock(const char *offset)
{
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(vs_vault_stop(&vaults[i], SIGTERM, 10000), 0);
        snprintf(vaults[i].clock_offset, sizeof(vaults[i].clock_offset), "%s",
                 offset);
        assert_int_equal(vs_vault_start(&vaults[i], 20000), 0);
        ports[i] = vaults[i].port;
    }
    write_confs();
}

static void
backup(const char *user)
{
    char mb[64] = "";
    if (user != NULL) {
        FMT(mb, "%s@" DOMAIN, user);
    }
    const char *args[] = {
        "backup", "--config", agent_conf, "--quiet", user != NULL ? mb : NULL,
        NULL};
    assert_int_equal(run(COFFER_AGENT_BIN, args, NULL), 0);
}

/* Snapshot IDs of user's mailbox on conf's vaults, oldest first. */
static size_t
snapshots(const char *conf, const char *user, char ids[MAX_SNAPS][65])
{
    char mb[64], *out = NULL;
    size_t n = 0;
    FMT(mb, "%s@" DOMAIN, user);
    const char *args[] = {"--config", conf,     "snapshots", "--mailbox",
                          mb,         "--json", NULL};
    int code = run(COFFER_RESTORE_BIN, args, &out);
    assert_true(code == 0 || code == 5);
    /* Newest first in the output: reverse. */
    char tmp[MAX_SNAPS][65];
    for (const char *p = strstr(out, "{\"id\":\""); p != NULL;
         p = strstr(p + 1, "{\"id\":\"")) {
        assert_true(n < MAX_SNAPS);
        memcpy(tmp[n], p + 7, 64);
        tmp[n++][64] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(ids[i], tmp[n - 1 - i], 65);
    }
    cfr_free(out);
    return n;
}

/* Restores snapshot id of user into a fresh dir; the exit code. */
static int
restore_snap(const char *conf, const char *user, const char *id, char *to,
             size_t to_size)
{
    char mb[64];
    static int seq;
    FMT(mb, "%s@" DOMAIN, user);
    assert_true((size_t)snprintf(to, to_size, "%s/restored-%d", dir, seq++) <
                to_size);
    const char *args[] = {"--config", conf, "restore",    "--mailbox", mb,
                          "--to",     to,   "--snapshot", id,          NULL};
    return run(COFFER_RESTORE_BIN, args, NULL);
}

/* Message n of user is in the restored tree, byte for byte. */
static bool
restored_has(const char *to, const char *user, int n)
{
    char p[VS_PATH_MAX + 256];
    size_t want_len, got_len = 0;
    char *want = msg_bytes(user, n, &want_len);
    FMT(p, "%s/cur/%d.M%dP7.test:2,S", to, 1700000000 + n, n);
    char *got = ars_slurp(p, &got_len);
    bool ok =
        got != NULL && got_len == want_len && memcmp(got, want, want_len) == 0;
    cfr_free(got);
    cfr_free(want);
    return ok;
}

/* ---- chunk IDs through the restore view --------------------------------- */

/*
 * The chunk IDs of user's messages numbered in want (n_want of them) in
 * the snapshot whose hex ID is snap, read from vault 0, into set; with
 * exclude, IDs already in exclude are left out.
 */
static void
chunks_of(const char *user, const char *snap, const int *want, size_t n_want,
          const struct vc_objset *exclude, struct vc_objset *set)
{
    struct cfr_err err;
    struct cfr_keyring *kr =
        cfr_keyring_import(escrow, ESCROW_PW, strlen(ESCROW_PW), &err);
    char ca[VS_PATH_MAX + 64], cert[VS_PATH_MAX + 64], key[VS_PATH_MAX + 64],
        target[32], mb[64];
    assert_non_null(kr);
    char *cap = ars_slurp(vs_env_path(&env, "ca.pem", ca, sizeof(ca)), NULL);
    char *cep = ars_slurp(
        vs_env_path(&env, "acme-restore.pem", cert, sizeof(cert)), NULL);
    char *kep = ars_slurp(
        vs_env_path(&env, "acme-restore.key", key, sizeof(key)), NULL);
    FMT(target, "127.0.0.1:%d", ports[0]);
    FMT(mb, "%s@" DOMAIN, user);
    const char *targets[] = {target};
    struct restore_fetch_opts fo = {.targets = targets,
                                    .n_targets = 1,
                                    .target_name = "localhost",
                                    .ca_pem = cap,
                                    .cert_pem = cep,
                                    .key_pem = kep,
                                    .timeout_ms = 20000};
    struct restore_fetcher *f = NULL;
    struct restore_snapshot *v = NULL;
    size_t n = 0;
    assert_int_equal(restore_fetcher_new(&fo, &f, &err), 0);
    assert_int_equal(restore_list(f, kr, mb, &v, &n, &err), 0);
    const struct restore_snapshot *s = NULL;
    for (size_t i = 0; i < n; i++) {
        char hex[65];
        if (strcmp(cfr_hex_encode(v[i].header_id, 32, hex), snap) == 0) {
            s = &v[i];
        }
    }
    assert_non_null(s);
    assert_int_equal(s->open_rc, 0);
    struct restore_manifest *m = NULL;
    struct cfr_snap_entry e;
    size_t msgs = 0;
    int rc;
    assert_int_equal(restore_manifest_open(f, kr, &s->h, &m, &err), 0);
    while ((rc = restore_manifest_next(m, &e, &err)) == 1) {
        for (size_t k = 0; k < n_want; k++) {
            char name[64];
            FMT(name, "%d.M%dP7.test", 1700000000 + want[k], want[k]);
            /* key = folder "\0" name; INBOX is the empty folder. */
            if (e.key_len == strlen(name) + 1 && e.key[0] == '\0' &&
                memcmp(e.key + 1, name, strlen(name)) == 0) {
                msgs++;
                for (size_t c = 0; c < e.n_chunks; c++) {
                    const uint8_t *id = e.chunk_ids + 32 * c;
                    if ((exclude == NULL ||
                         vc_objset_find(exclude, id) == NULL) &&
                        vc_objset_find(set, id) == NULL) {
                        vc_objset_add(set, id, 1, (const uint8_t *)"", 0);
                    }
                }
            }
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(msgs, n_want);
    restore_manifest_free(m);
    restore_fetcher_free(f);
    cfr_free(v);
    cfr_free(cap);
    cfr_free(cep);
    cfr_free(kep);
    cfr_keyring_free(kr);
}

/* How many of set's IDs vault i lacks (Missing, restore certificate). */
static size_t
missing_on(int i, const struct vc_objset *set)
{
    struct cfr_rpc_client *cli = vs_client(&vaults[i], "acme-restore");
    bool *is = cfr_calloc(set->n + 1, sizeof(bool));
    size_t n = 0;
    assert_non_null(cli);
    assert_non_null(is);
    assert_int_equal(vc_missing(cli, NULL, set, is, &n), CFR_RPC_OK);
    cfr_free(is);
    cfr_rpc_client_free(cli);
    return n;
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    struct cfr_err err;
    (void)state;
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0) {
        return -1;
    }
    for (int i = 0; i < N_VAULTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "v%d", i);
        if (vs_vault_init(&vaults[i], &env, name) != 0) {
            return -1;
        }
        vaults[i].test_mode = true; /* the clock moves past the leases */
        if (vs_vault_start(&vaults[i], 20000) != 0) {
            return -1;
        }
        ports[i] = vaults[i].port;
    }
    snprintf(dir, sizeof(dir), "%s/work", env.dir);
    snprintf(mail, sizeof(mail), "%s/mail", env.dir);
    snprintf(key_file, sizeof(key_file), "%s/agent.key", dir);
    snprintf(pass_file, sizeof(pass_file), "%s/agent.pass", dir);
    snprintf(escrow, sizeof(escrow), "%s/escrow.key", dir);
    snprintf(escrow_pass, sizeof(escrow_pass), "%s/escrow.pass", dir);
    snprintf(conf_all, sizeof(conf_all), "%s/restore.conf", dir);
    for (int i = 0; i < N_VAULTS; i++) {
        snprintf(conf_one[i], sizeof(conf_one[i]), "%s/restore-%d.conf", dir,
                 i);
    }
    snprintf(agent_conf, sizeof(agent_conf), "%s/agent.conf", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(mail, 0700) != 0 ||
        ars_write(escrow_pass, ESCROW_PW "\n", strlen(ESCROW_PW) + 1, 0600) !=
            0) {
        return -1;
    }
    write_confs();
    const char *init[] = {"init",      "--config", agent_conf,
                          "--escrow",  escrow,     "--escrow-passphrase-file",
                          escrow_pass, NULL};
    return run(COFFER_AGENT_BIN, init, NULL) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_VAULTS; i++) {
        if (vaults[i].pid > 0) {
            vs_vault_stop(&vaults[i], SIGTERM, 10000);
        }
    }
    vs_env_fini(&env);
    return 0;
}

/* ---- the test ----------------------------------------------------------- */

/* "HOST:PORT=ID" for each vault from a pending purge or release's JSON. */
static void
approvals_of(const char *out, char appr[N_VAULTS][128])
{
    for (int i = 0; i < N_VAULTS; i++) {
        char at[64], id[40];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", ports[i]);
        const char *p = strstr(out, at);
        assert_non_null(p);
        assert_non_null(strstr(p, "\"result\":\"pending\""));
        assert_true(ars_json_str(out, at, "approval_id", id, sizeof(id)));
        assert_int_equal(strlen(id), 32);
        FMT(appr[i], "127.0.0.1:%d=%s", ports[i], id);
    }
}

static void
test_purge_one_mailbox(void **state)
{
    char ids[MAX_SNAPS][65], to[VS_PATH_MAX + 96], *out = NULL;
    char a_ids[MAX_SNAPS][65], b_ids[MAX_SNAPS][65];
    char appr[N_VAULTS][128], admin2[VS_PATH_MAX + 96];
    static const int a_msgs[] = {0, 1}, b_msgs[] = {10}, list[] = {100};
    struct vc_objset alice_only = {0}, bob_all = {0}, shared = {0};
    int64_t t0 = vc_now_ms();
    (void)state;

    mailbox_make("alice");
    mailbox_make("bob");
    msg_write("alice", 0);
    msg_write("alice", 1);
    msg_write("bob", 10);
    /* The same list message, same bytes, in both mailboxes. */
    {
        char p[VS_PATH_MAX + 256], q[VS_PATH_MAX + 256];
        size_t len;
        char *b = msg_bytes("list", 100, &len);
        msg_path("alice", 100, p, sizeof(p));
        msg_path("bob", 100, q, sizeof(q));
        assert_int_equal(ars_write(p, b, len, 0600), 0);
        assert_int_equal(ars_write(q, b, len, 0600), 0);
        cfr_free(b);
    }
    backup(NULL);
    msg_delete("alice", 1);
    backup("alice");
    assert_int_equal(snapshots(conf_all, "alice", a_ids), 2);
    assert_int_equal(snapshots(conf_all, "bob", b_ids), 1);
    chunks_of("bob", b_ids[0], b_msgs, 1, NULL, &bob_all);
    chunks_of("bob", b_ids[0], list, 1, NULL, &shared);
    chunks_of("bob", b_ids[0], list, 1, NULL, &bob_all);
    chunks_of("alice", a_ids[0], a_msgs, 2, &shared, &alice_only);
    assert_true(alice_only.n >= 2);
    assert_true(shared.n >= 1);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(missing_on(i, &alice_only), 0);
        assert_int_equal(missing_on(i, &bob_all), 0);
    }

    /* Holds: hold at once; release waits for a second factor. */
    {
        const char *h[] = {"--config",  conf_all,      "hold",
                           "--mailbox", "bob@" DOMAIN, NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, h, NULL), 0);
        const char *r[] = {"--config",    conf_all, "release", "--mailbox",
                           "bob@" DOMAIN, "--json", NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, r, &out), 9);
        approvals_of(out, appr);
        cfr_free(out);
    }

    /* The agent's upload leases protect what its runs put or found
     * present until they end (12 h): a purge's GC cannot take those
     * chunks before. Half a day later they have ended. */
    move_clock("13h");

    /* Purge: pending on both, approved by the second admin, repeated. */
    {
        const char *p[] = {"--config",       conf_all,        "purge",
                           "--mailbox",      "alice@" DOMAIN, "--reason",
                           "account closed", "--json",        NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, p, &out), 9);
        approvals_of(out, appr);
        cfr_free(out);
    }
    /* Still all there while pending. */
    assert_int_equal(snapshots(conf_all, "alice", ids), 2);
    FMT(admin2, "%s/restore-admin2.conf", dir);
    {
        char *conf = ars_slurp(conf_all, NULL);
        char *at = strstr(conf, "acme-admin.pem");
        assert_non_null(at);
        FILE *f = fopen(admin2, "w");
        assert_non_null(f);
        /* The same config with the second admin's certificate. */
        fprintf(f, "%.*sacme-admin2.pem%s", (int)(at - conf), conf,
                at + strlen("acme-admin.pem"));
        assert_int_equal(fclose(f), 0);
        char *k = ars_slurp(admin2, NULL);
        char *kk = strstr(k, "acme-admin.key");
        assert_non_null(kk);
        f = fopen(admin2, "w");
        assert_non_null(f);
        fprintf(f, "%.*sacme-admin2.key%s", (int)(kk - k), k,
                kk + strlen("acme-admin.key"));
        assert_int_equal(fclose(f), 0);
        cfr_free(k);
        cfr_free(conf);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        char v[32];
        FMT(v, "127.0.0.1:%d", ports[i]);
        const char *a[] = {"--config",
                           admin2,
                           "approve",
                           "--vault",
                           v,
                           "--approval",
                           strchr(appr[i], '=') + 1,
                           NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, a, NULL), 0);
    }
    {
        const char *p[] = {"--config",      conf_all,     "purge", "--mailbox",
                           "alice@" DOMAIN, "--approval", appr[0], "--approval",
                           appr[1],         "--json",     NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, p, &out), 0);
        assert_non_null(strstr(out, "\"ok\":true"));
        for (int i = 0; i < N_VAULTS; i++) {
            char at[64];
            uint64_t v = 99;
            FMT(at, "\"vault\":\"127.0.0.1:%d\"", ports[i]);
            assert_true(ars_json_u64(out, at, "snapshots_removed", &v));
            assert_int_equal(v, 2);
            assert_true(ars_json_u64(out, at, "snapshots_left", &v));
            assert_int_equal(v, 0);
        }
        cfr_free(out);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(snapshots(conf_one[i], "alice", ids), 0);
        assert_int_equal(missing_on(i, &alice_only), alice_only.n);
        assert_int_equal(missing_on(i, &bob_all), 0);
        assert_int_equal(snapshots(conf_one[i], "bob", ids), 1);
        assert_int_equal(
            restore_snap(conf_one[i], "bob", ids[0], to, sizeof(to)), 0);
        assert_true(restored_has(to, "bob", 10));
        assert_true(restored_has(to, "list", 100));
        ars_rm_tree(to);
        assert_true(vc_log_has(&vaults[i], "vault.purge"));
        {
            struct cfr_rpc_client *aud = vs_client(&vaults[i], "acme-auditor");
            Coffer__V1__AuditRequest req = COFFER__V1__AUDIT_REQUEST__INIT;
            Coffer__V1__AuditResponse *ar = NULL;
            struct cfr_err e;
            req.limit = 1000;
            assert_int_equal(vs_unary(aud, "Audit", &req.base,
                                      &coffer__v1__audit_response__descriptor,
                                      (ProtobufCMessage **)&ar, &e),
                             CFR_RPC_OK);
            /* The tenant's audit log names each operation. */
            size_t purges = 0, holds = 0, releases = 0;
            for (size_t k = 0; k < ar->n_entries; k++) {
                const char *d = ar->entries[k]->detail;
                if (strstr(ar->entries[k]->method, "Admin") == NULL) {
                    continue;
                }
                purges += strstr(d, "op=purge_mailbox mailbox=") != NULL;
                holds += strstr(d, "op=hold header=") != NULL;
                releases += strstr(d, "op=release header=") != NULL;
            }
            assert_int_equal(purges, 2); /* pending, then run */
            assert_int_equal(holds, 1);
            assert_int_equal(releases, 1); /* pending */
            protobuf_c_message_free_unpacked(&ar->base, NULL);
            cfr_rpc_client_free(aud);
        }
        assert_true(vc_log_has(&vaults[i], "vault.hold"));
    }
    /* Nothing left to purge: no new approval is asked for. */
    {
        const char *p[] = {"--config",  conf_all,        "purge",
                           "--mailbox", "alice@" DOMAIN, NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, p, NULL), 0);
    }
    vc_objset_fini(&alice_only);
    vc_objset_fini(&bob_all);
    vc_objset_fini(&shared);
    fprintf(stderr, "restore_purge_test: %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_purge_one_mailbox),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
