/*
 * restore_retention_test.c - the deleted-mail window end to end (issue 5,
 * docs/RETENTION.md): two coffer-vault processes in test mode, the real
 * coffer-agent backing up to both, coffer-restore retention, retention
 * --audit, hold and restore; time moves by restarting the vaults with a
 * test clock offset (+29 d, +31 d, +400 d).
 *
 *  day 0   alice m0..m5, bob b0..b2, carol c0..c2 backed up; alice loses
 *          m3..m5 and carol c2, backed up again; carol's first snapshot
 *          is held.
 *  +29 d   retention drops nothing; m3..m5 restore (byte-exact) from the
 *          first snapshot on each replica.
 *  +31 d   bob loses b2 and is backed up (his first backup since day 0:
 *          sparse); retention drops alice's first snapshot on both
 *          vaults: it restores from no replica, and every chunk only
 *          m3..m5 used is gone from both stores (Missing by chunk ID,
 *          restore certificate). bob's first snapshot stays (superseded
 *          today: the old own-receive-time rule dropped it and lost b2,
 *          deleted an hour ago); b2 restores. carol's held snapshot
 *          stays. retention --audit exits 0.
 *  +400 d  retention --audit before a retention run finds bob's first
 *          snapshot stale (exit 6: the audit can fail); after retention
 *          it exits 0; m0..m2, never deleted, restore byte-exact from
 *          each replica; carol's held snapshot is still there. The vault
 *          logs name the hold (vault.hold).
 *
 * Throughout, every snapshot's header names the mailbox's previous
 * snapshot as its parent (a first one names none). The second test backs
 * dave up three times, checks the chain on each replica, then removes his
 * middle snapshot from one stopped vault's RocksDB: the audit finds the
 * gap on that replica alone (exit 6), not on the other.
 *
 * About 20-25 s on two shared cores, 4 s of it the second test (eleven vault
 * starts, seven small backups).
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
#include "kv.h"                   /* a stopped vault's database */
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
#define ESCROW_PW "retention test escrow passphrase"
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

/*
 * Checks that each snapshot of user on conf's vaults (oldest first) names
 * the one before it as its parent, and the oldest first ("" for none);
 * returns how many, their IDs into ids. A snapshots --json entry is
 * {"id":"<hex>",...,"parent":"<hex>"|null}.
 */
static size_t
check_parents(const char *conf, const char *user, const char *first,
              char ids[MAX_SNAPS][65])
{
    char mb[64], *out = NULL, parent[MAX_SNAPS][65];
    size_t n = 0;
    FMT(mb, "%s@" DOMAIN, user);
    const char *args[] = {"--config", conf,     "snapshots", "--mailbox",
                          mb,         "--json", NULL};
    assert_int_equal(run(COFFER_RESTORE_BIN, args, &out), 0);
    char tmp[MAX_SNAPS][65];
    for (char *p = strstr(out, "{\"id\":\""); p != NULL;) {
        char *next = strstr(p + 1, "{\"id\":\"");
        const char *q = strstr(p, "\"parent\":");
        assert_true(n < MAX_SNAPS);
        assert_non_null(q);
        assert_true(next == NULL || q < next);
        memcpy(tmp[n], p + 7, 64);
        tmp[n][64] = '\0';
        q += strlen("\"parent\":");
        if (strncmp(q, "null", 4) == 0) {
            parent[n][0] = '\0';
        } else {
            assert_int_equal(q[0], '"');
            assert_int_equal(q[65], '"');
            memcpy(parent[n], q + 1, 64);
            parent[n][64] = '\0';
        }
        n++;
        p = next;
    }
    /* Newest first in the output. */
    for (size_t i = 0; i < n; i++) {
        memcpy(ids[i], tmp[n - 1 - i], 65);
        const char *want = i == 0 ? first : tmp[n - i];
        if (strcmp(parent[n - 1 - i], want) != 0) {
            fail_msg("%s snapshot %zu of %zu: parent \"%s\", want \"%s\"", user,
                     i + 1, n, parent[n - 1 - i], want);
        }
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

static int
retention(const char *conf, bool audit, char **out_r)
{
    const char *args[] = {
        "--config", conf, "retention", "--json", audit ? "--audit" : NULL,
        NULL};
    return run(COFFER_RESTORE_BIN, args, out_r);
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
        vaults[i].test_mode = true;
        /* The test runs retention itself. */
        snprintf(vaults[i].extra_cfg, sizeof(vaults[i].extra_cfg),
                 "retention = { schedule = \"0\"; };\n");
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

static void
test_retention_window(void **state)
{
    char a_ids[MAX_SNAPS][65], b_ids[MAX_SNAPS][65], c_ids[MAX_SNAPS][65];
    char ids[MAX_SNAPS][65], to[VS_PATH_MAX + 96], *out = NULL;
    char a1[65], a2[65], b1[65], c1[65];
    static const int gone[] = {3, 4, 5}, kept[] = {0, 1, 2};
    struct vc_objset live = {0}, only_gone = {0};
    int64_t t0 = vc_now_ms();
    (void)state;

    /* Day 0. */
    mailbox_make("alice");
    mailbox_make("bob");
    mailbox_make("carol");
    for (int n = 0; n < 6; n++) {
        msg_write("alice", n);
    }
    for (int n = 0; n < 3; n++) {
        msg_write("bob", 10 + n);
        msg_write("carol", 20 + n);
    }
    backup(NULL);
    msg_delete("alice", 3);
    msg_delete("alice", 4);
    msg_delete("alice", 5);
    msg_delete("carol", 22);
    backup("alice");
    backup("carol");
    assert_int_equal(snapshots(conf_all, "alice", a_ids), 2);
    assert_int_equal(snapshots(conf_all, "bob", b_ids), 1);
    assert_int_equal(snapshots(conf_all, "carol", c_ids), 2);
    memcpy(a1, a_ids[0], 65);
    memcpy(a2, a_ids[1], 65);
    memcpy(b1, b_ids[0], 65);
    memcpy(c1, c_ids[0], 65);
    /* Each replica holds the chain: a second snapshot names the first. */
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(check_parents(conf_one[i], "alice", "", ids), 2);
        assert_string_equal(ids[1], a2);
        assert_int_equal(check_parents(conf_one[i], "bob", "", ids), 1);
        assert_int_equal(check_parents(conf_one[i], "carol", "", ids), 2);
    }
    /* Chunks only the deleted messages used. */
    chunks_of("alice", a2, kept, 3, NULL, &live);
    chunks_of("alice", a1, gone, 3, &live, &only_gone);
    assert_true(only_gone.n >= 3);
    assert_int_equal(missing_on(0, &only_gone), 0);
    assert_int_equal(missing_on(1, &only_gone), 0);
    /* A legal hold on carol's first snapshot, on both vaults. */
    {
        const char *args[] = {"--config", conf_all,   "hold",    "--snapshot",
                              c1,         "--reason", "case 42", NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, args, NULL), 0);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        assert_true(vc_log_has(&vaults[i], "vault.hold"));
    }

    /* +29 days: nothing is old enough; the deleted mail restores. */
    move_clock("29d");
    assert_int_equal(retention(conf_all, false, &out), 0);
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_null(strstr(out, "\"snapshots_removed\":1"));
    cfr_free(out);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(snapshots(conf_one[i], "alice", ids), 2);
        assert_int_equal(restore_snap(conf_one[i], "alice", a1, to, sizeof(to)),
                         0);
        for (int k = 0; k < 3; k++) {
            assert_true(restored_has(to, "alice", gone[k]));
        }
        ars_rm_tree(to);
    }

    /* +31 days: bob's first backup since day 0 (sparse), then retention. */
    move_clock("31d");
    msg_delete("bob", 12);
    backup("bob");
    assert_int_equal(retention(conf_all, false, &out), 0);
    /* alice's first snapshot, on each vault; nothing else. */
    assert_non_null(strstr(out, "\"ok\":true"));
    for (int i = 0; i < N_VAULTS; i++) {
        char at[64];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", ports[i]);
        uint64_t removed = 0;
        assert_true(ars_json_u64(out, at, "snapshots_removed", &removed));
        assert_int_equal(removed, 1);
    }
    cfr_free(out);
    for (int i = 0; i < N_VAULTS; i++) {
        /* The deleted messages restore from no replica... */
        assert_int_equal(snapshots(conf_one[i], "alice", ids), 1);
        assert_string_equal(ids[0], a2);
        /* (a2 still names a1, received before the window: no gap.) */
        assert_int_equal(check_parents(conf_one[i], "alice", a1, ids), 1);
        /* bob's day-31 snapshot names his day-0 one. */
        assert_int_equal(check_parents(conf_one[i], "bob", "", ids), 2);
        assert_string_equal(ids[0], b1);
        assert_true(restore_snap(conf_one[i], "alice", a1, to, sizeof(to)) !=
                    0);
        ars_rm_tree(to);
        /* ...and their chunks are gone from the store. */
        assert_int_equal(missing_on(i, &only_gone), only_gone.n);
        assert_int_equal(missing_on(i, &live), 0);
        /* Sparse backups: b12 was deleted today, so bob's day-0 snapshot
         * (superseded today) stays and b12 restores. */
        assert_int_equal(snapshots(conf_one[i], "bob", ids), 2);
        assert_string_equal(ids[0], b1);
        assert_int_equal(restore_snap(conf_one[i], "bob", b1, to, sizeof(to)),
                         0);
        assert_true(restored_has(to, "bob", 12));
        ars_rm_tree(to);
        /* The held snapshot survives, and with it c22. */
        assert_int_equal(snapshots(conf_one[i], "carol", ids), 2);
        assert_string_equal(ids[0], c1);
        assert_int_equal(restore_snap(conf_one[i], "carol", c1, to, sizeof(to)),
                         0);
        assert_true(restored_has(to, "carol", 22));
        ars_rm_tree(to);
    }
    assert_int_equal(retention(conf_all, true, &out), 0);
    assert_non_null(strstr(out, "\"ok\":true"));
    {
        uint64_t v = 0;
        const char *al = "\"mailbox\":\"alice@" DOMAIN "\"";
        assert_true(ars_json_u64(out, al, "live", &v));
        assert_int_equal(v, 3);
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" DOMAIN "\"",
                                 "deleted_within_window", &v));
        assert_int_equal(v, 1);
        assert_true(ars_json_u64(out, "\"mailbox\":\"carol@" DOMAIN "\"",
                                 "deleted_beyond_window_held", &v));
        assert_int_equal(v, 1);
    }
    cfr_free(out);

    /* The same audit as text, for people. */
    {
        const char *args[] = {"--config", conf_all, "retention", "--audit",
                              "--window", "30d",    NULL};
        assert_int_equal(run(COFFER_RESTORE_BIN, args, &out), 0);
        assert_non_null(strstr(out, "compliant: 0 mailbox violation(s)"));
        assert_non_null(strstr(out, "alice@" DOMAIN));
        fputs(out, stderr);
        cfr_free(out);
    }

    /* +400 days: before a retention run the audit sees bob's day-0
     * snapshot (superseded on day 31) still there: a violation. */
    move_clock("400d");
    assert_int_equal(retention(conf_all, true, &out), 6);
    {
        uint64_t v = 0;
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" DOMAIN "\"",
                                 "deleted_beyond_window_restorable", &v));
        assert_int_equal(v, 1);
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" DOMAIN "\"",
                                 "stale_snapshots", &v));
        assert_int_equal(v, 1);
    }
    cfr_free(out);
    assert_int_equal(retention(conf_all, false, NULL), 0);
    assert_int_equal(retention(conf_all, true, NULL), 0);
    for (int i = 0; i < N_VAULTS; i++) {
        /* Never deleted: restores however old. */
        assert_int_equal(snapshots(conf_one[i], "alice", ids), 1);
        assert_int_equal(restore_snap(conf_one[i], "alice", a2, to, sizeof(to)),
                         0);
        for (int k = 0; k < 3; k++) {
            assert_true(restored_has(to, "alice", kept[k]));
        }
        ars_rm_tree(to);
        assert_int_equal(missing_on(i, &live), 0);
        assert_int_equal(snapshots(conf_one[i], "bob", ids), 1);
        assert_int_equal(snapshots(conf_one[i], "carol", ids), 2);
    }
    vc_objset_fini(&live);
    vc_objset_fini(&only_gone);
    fprintf(stderr, "restore_retention_test: %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

/*
 * Removes snapshot hex (of the acme tenant) from stopped vault i's
 * database as if it had been lost: its record and its mailbox-index key
 * (vault/store.c: mailbox ID || received BE || header ID).
 */
static void
drop_snapshot(int i, const char *hex)
{
    static const char *const cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                      "refcounts",      "snapshots",
                                      "mailbox_index",  "leases",
                                      "lease_objects",  "tombstones"};
    enum { CF_SNAPS = 3, CF_MAILBOX = 4, INDEX_KEY_LEN = 72 };
    struct cfr_err err;
    uint8_t id[32], key[INDEX_KEY_LEN];
    char p[VS_PATH_MAX + 80];
    size_t found = 0;
    bool got = false;
    struct cfr_kv_entry e;
    struct cfr_buf v;
    assert_int_equal(cfr_hex_decode(hex, id, sizeof(id)), 0);
    struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(ke);
    FMT(p, "%s/data/acme", vaults[i].dir);
    struct cfr_kv *kv =
        cfr_kv_open(ke, p, cfs, sizeof(cfs) / sizeof(cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", p, err.msg);
    }
    cfr_buf_init(&v, 1u << 16);
    assert_int_equal(cfr_kv_get(kv, CF_SNAPS, id, sizeof(id), &v, &err), 0);
    cfr_buf_fini(&v);
    struct cfr_kv_iter *it =
        cfr_kv_iter_new_prefix(kv, CF_MAILBOX, "", 0, &err);
    assert_non_null(it);
    while (cfr_kv_iter_next(it, &got, &e, &err) == 0 && got) {
        if (e.key_len == INDEX_KEY_LEN &&
            memcmp(e.key + INDEX_KEY_LEN - 32, id, 32) == 0) {
            memcpy(key, e.key, INDEX_KEY_LEN);
            found++;
        }
    }
    cfr_kv_iter_free(it);
    assert_int_equal(found, 1);
    assert_int_equal(cfr_kv_delete(kv, CF_MAILBOX, key, sizeof(key), &err), 0);
    assert_int_equal(cfr_kv_delete(kv, CF_SNAPS, id, sizeof(id), &err), 0);
    cfr_kv_close(kv);
    cfr_kv_env_free(ke);
}

/* The audit's count key for user's mailbox on vault i (--json output). */
static uint64_t
audit_count(const char *out, int i, const char *user, const char *key)
{
    char at[64], mb[80];
    uint64_t v = 0;
    FMT(at, "\"vault\":\"127.0.0.1:%d\"", ports[i]);
    FMT(mb, "\"mailbox\":\"%s@" DOMAIN "\"", user);
    const char *r = strstr(out, at);
    assert_non_null(r);
    assert_true(ars_json_u64(r, mb, key, &v));
    return v;
}

static void
test_parent_gap(void **state)
{
    char d[3][MAX_SNAPS][65], ids[MAX_SNAPS][65], *out = NULL;
    int64_t t0 = vc_now_ms();
    (void)state;

    /* Three snapshots of dave, each with a message deleted in between. */
    mailbox_make("dave");
    for (int n = 0; n < 3; n++) {
        msg_write("dave", 30 + n);
    }
    backup("dave");
    msg_delete("dave", 30);
    msg_write("dave", 33);
    backup("dave");
    msg_delete("dave", 31);
    backup("dave");
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(check_parents(conf_one[i], "dave", "", d[i]), 3);
    }
    assert_string_equal(d[0][1], d[1][1]);
    assert_string_equal(d[0][2], d[1][2]);
    assert_int_equal(retention(conf_all, true, &out), 0);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(audit_count(out, i, "dave", "window_gaps"), 0);
        /* Only the first snapshot has no parent. */
        assert_int_equal(audit_count(out, i, "dave", "unlinked"), 1);
        assert_int_equal(audit_count(out, i, "dave", "deleted_within_window"),
                         2);
    }
    cfr_free(out);

    /* Vault 1 loses dave's middle snapshot: d31 was only there. */
    assert_int_equal(vs_vault_stop(&vaults[1], SIGTERM, 10000), 0);
    drop_snapshot(1, d[1][1]);
    assert_int_equal(vs_vault_start(&vaults[1], 20000), 0);
    ports[1] = vaults[1].port;
    write_confs();
    assert_int_equal(snapshots(conf_one[1], "dave", ids), 2);
    assert_int_equal(snapshots(conf_one[0], "dave", ids), 3);
    assert_int_equal(retention(conf_all, true, &out), 6);
    assert_int_equal(audit_count(out, 1, "dave", "window_gaps"), 1);
    assert_int_equal(audit_count(out, 0, "dave", "window_gaps"), 0);
    assert_int_equal(audit_count(out, 0, "dave", "deleted_within_window"), 2);
    {
        /* Vault 0's part of the report (it comes first) is clean. */
        char at[64];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", ports[1]);
        char *r1 = strstr(out, at);
        assert_non_null(r1);
        *r1 = '\0';
        assert_null(strstr(out, "\"compliant\":false"));
        assert_non_null(strstr(r1 + 1, "\"compliant\":false"));
    }
    cfr_free(out);
    /* The same per replica: the gap is vault 1's alone. */
    assert_int_equal(retention(conf_one[0], true, NULL), 0);
    assert_int_equal(retention(conf_one[1], true, &out), 6);
    assert_int_equal(audit_count(out, 1, "dave", "window_gaps"), 1);
    cfr_free(out);
    fprintf(stderr, "restore_retention_test (parent gap): %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retention_window),
        cmocka_unit_test(test_parent_gap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
