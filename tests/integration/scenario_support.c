/*
 * scenario_support.c - see scenario_support.h.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include "scenario_support.h"

#include <fcntl.h> /* AT_FDCWD */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv.h"  /* scn_vault_db */
#include "mem.h" /* cfr_free */
#include "rpc.h" /* cfr_rpc_global_init */

static int64_t
run_ms(const struct scn *s)
{
    return s->run_ms > 0 ? s->run_ms : 60000;
}

/* For scn_group_teardown: a cmocka group starts with no state of its
 * own to carry the scenario in. */
static struct scn *last_set_up;

int
scn_setup(struct scn *s)
{
    struct cfr_err err;
    last_set_up = s;
    if (s->n_vaults < 1 || s->n_vaults > SCN_VAULTS_MAX ||
        cfr_rpc_global_init(&err) != 0 || vs_env_init(&s->env) != 0) {
        return -1;
    }
    for (size_t i = 0; i < s->n_vaults; i++) {
        char name[16];
        struct vs_vault *v = &s->vaults[i];
        SCN_FMT(name, "v%zu", i);
        if (vs_vault_init(v, &s->env, name) != 0) {
            return -1;
        }
        v->test_mode = s->test_mode;
        if (s->vault_extra != NULL) {
            SCN_FMT(v->extra_cfg, "%s", s->vault_extra);
        }
        if (vs_vault_start(v, 20000) != 0) {
            return -1;
        }
        s->ports[i] = v->port;
    }
    const char *e = s->env.dir;
    SCN_FMT(s->dir, "%s/work", e);
    SCN_FMT(s->mail, "%s/mail", e);
    SCN_FMT(s->key_file, "%s/agent.key", s->dir);
    SCN_FMT(s->pass_file, "%s/agent.pass", s->dir);
    SCN_FMT(s->escrow, "%s/escrow.key", s->dir);
    SCN_FMT(s->escrow_pass, "%s/escrow.pass", s->dir);
    SCN_FMT(s->agent_conf, "%s/agent.conf", s->dir);
    SCN_FMT(s->conf_all, "%s/restore.conf", s->dir);
    for (size_t i = 0; i < s->n_vaults; i++) {
        SCN_FMT(s->conf_one[i], "%s/restore-%zu.conf", s->dir, i);
    }
    if (s->mailboxes[0] == '\0' &&
        (size_t)snprintf(s->mailboxes, sizeof(s->mailboxes),
                         "mailbox_pattern = \"%s/%%d/%%n/Maildir\";",
                         s->mail) >= sizeof(s->mailboxes)) {
        return -1;
    }
    char pw[256];
    int pl = snprintf(pw, sizeof(pw), "%s\n", s->escrow_pw);
    if (pl < 0 || (size_t)pl >= sizeof(pw) || mkdir(s->dir, 0700) != 0 ||
        mkdir(s->mail, 0700) != 0) {
        return -1;
    }
    return ars_write(s->escrow_pass, pw, (size_t)pl, 0600);
}

void
scn_teardown(struct scn *s)
{
    for (size_t i = 0; i < s->n_vaults; i++) {
        if (s->vaults[i].pid > 0) {
            vs_vault_stop(&s->vaults[i], SIGTERM, 10000);
        }
    }
    vs_env_fini(&s->env);
}

int
scn_group_teardown(void **state)
{
    (void)state;
    if (last_set_up != NULL) {
        scn_teardown(last_set_up);
        last_set_up = NULL;
    }
    return 0;
}

/* The admin-capable restore configuration for every vault (k < 0) or
 * vault k alone. */
static void
write_admin_conf(const struct scn *s, int k)
{
    const char *e = s->env.dir;
    FILE *f = fopen(k < 0 ? s->conf_all : s->conf_one[k], "w");
    assert_non_null(f);
    fprintf(f,
            "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
            "\"%s\";\nvaults = [ ",
            s->escrow, s->escrow_pass);
    for (int i = 0; i < (int)s->n_vaults; i++) {
        if (k < 0 || k == i) {
            fprintf(f, "%s\"127.0.0.1:%d\"", k < 0 && i > 0 ? ", " : "",
                    s->ports[i]);
        }
    }
    fprintf(f,
            " ];\ntls = { ca = \"%s/ca.pem\"; cert = \"%s/acme-restore.pem\"; "
            "key = \"%s/acme-restore.key\"; server_name = \"localhost\"; };\n"
            "admin_tls = { cert = \"%s/acme-admin.pem\"; key = "
            "\"%s/acme-admin.key\"; };\ntimeout = \"20s\";\n"
            "log_level = \"error\";\n",
            e, e, e, e, e);
    assert_int_equal(fclose(f), 0);
}

void
scn_write_confs(struct scn *s)
{
    char st[SCN_PATH];
    if (s->admin_confs) {
        for (int k = -1; k < (int)s->n_vaults; k++) {
            write_admin_conf(s, k);
        }
    } else {
        assert_int_equal(ars_restore_conf_write(s->conf_all, s->env.dir,
                                                s->escrow, s->escrow_pass,
                                                s->ports[0]),
                         0);
    }
    SCN_FMT(st, "%s/state", s->dir);
    struct ars_agent_conf c = {s->env.dir,  s->key_file, s->pass_file,
                               st,          s->dir,      s->ports,
                               s->n_vaults, 0,           s->mailboxes};
    assert_int_equal(ars_agent_conf_write(s->agent_conf, &c), 0);
}

int
scn_init(struct scn *s)
{
    scn_write_confs(s);
    const char *init[] = {"init",         "--config",
                          s->agent_conf,  "--escrow",
                          s->escrow,      "--escrow-passphrase-file",
                          s->escrow_pass, NULL};
    return scn_run(s, s->agent_bin, init, NULL);
}

void
scn_move_clock(struct scn *s, const char *offset)
{
    for (size_t i = 0; i < s->n_vaults; i++) {
        struct vs_vault *v = &s->vaults[i];
        assert_int_equal(vs_vault_stop(v, SIGTERM, 10000), 0);
        snprintf(v->clock_offset, sizeof(v->clock_offset), "%s", offset);
        assert_int_equal(vs_vault_start(v, 20000), 0);
        s->ports[i] = v->port;
    }
    scn_write_confs(s);
}

int
scn_run(const struct scn *s, const char *bin, const char *const *args,
        char **out_r)
{
    struct ars_out o;
    assert_int_equal(ars_capture(bin, args, s->dir, run_ms(s), &o), 0);
    if (o.code != 0) {
        fprintf(stderr, "(%s", bin);
        for (size_t i = 0; args[i] != NULL; i++) {
            fprintf(stderr, " %s", args[i]);
        }
        fprintf(stderr, ": exit %d)\nstdout: %s\nstderr: %s\n", o.code, o.out,
                o.err);
    }
    int code = o.code;
    if (out_r != NULL) {
        *out_r = o.out;
        o.out = NULL;
    }
    ars_out_fini(&o);
    return code;
}

void
scn_restore(const struct scn *s, const char *conf, const char *const *args,
            struct ars_out *o)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = "--config";
    argv[n++] = conf;
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(n < 31);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    assert_int_equal(ars_capture(s->restore_bin, argv, s->dir, run_ms(s), o),
                     0);
    if (getenv("COFFER_TEST_SHOW") != NULL) { /* to read the output by eye */
        fprintf(stderr, "--- exit %d:", o->code);
        for (size_t i = 2; argv[i] != NULL; i++) {
            fprintf(stderr, " %s", argv[i]);
        }
        fprintf(stderr, "\n%s%s", o->out, o->err);
    }
}

void
scn_expect_code(const struct ars_out *o, int code, const char *what)
{
    if (o->code != code) {
        fail_msg("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what,
                 o->code, code, o->out, o->err);
    }
}

void
scn_backup(const struct scn *s, const char *user)
{
    char mb[64] = "";
    if (user != NULL) {
        SCN_FMT(mb, "%s@" SCN_DOMAIN, user);
    }
    const char *args[] = {"backup",
                          "--config",
                          s->agent_conf,
                          "--quiet",
                          user != NULL ? mb : NULL,
                          NULL};
    assert_int_equal(scn_run(s, s->agent_bin, args, NULL), 0);
}

/* ---- files below a root ------------------------------------------------
 */

void
scn_mkdirs(const char *root, const char *rel)
{
    char p[SCN_PATH + 512];
    SCN_FMT(p, "%s/%s", root, rel);
    assert_int_equal(ars_mkdirs(p), 0);
}

void
scn_put(const char *root, const char *rel, const void *data, size_t len,
        const struct timespec *mtime)
{
    char p[SCN_PATH + 512];
    SCN_FMT(p, "%s/%s", root, rel);
    assert_int_equal(ars_write(p, data, len, 0600), 0);
    if (mtime != NULL) {
        struct timespec ts[2] = {*mtime, *mtime};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    }
}

void
scn_mv(const char *root, const char *from, const char *to)
{
    char a[SCN_PATH + 512], b[SCN_PATH + 512];
    SCN_FMT(a, "%s/%s", root, from);
    SCN_FMT(b, "%s/%s", root, to);
    assert_int_equal(rename(a, b), 0);
}

void
scn_rm(const char *root, const char *rel)
{
    char p[SCN_PATH + 512];
    SCN_FMT(p, "%s/%s", root, rel);
    assert_int_equal(unlink(p), 0);
}

/* ---- generated mail ------------------------------------------------------
 */

void
scn_mailbox_make(const struct scn *s, const char *user)
{
    char p[SCN_PATH + 160];
    SCN_FMT(p, "%s/%s/%s", s->mail, SCN_DOMAIN, user);
    /* The user's own directory is new: two tests never share a user. */
    assert_int_not_equal(access(p, F_OK), 0);
    static const char *const sub[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        SCN_FMT(p, "%s/%s/%s/Maildir/%s", s->mail, SCN_DOMAIN, user, sub[i]);
        assert_int_equal(ars_mkdirs(p), 0);
    }
}

char *
scn_msg_bytes(const char *user, int n, size_t *len_r)
{
    size_t cap = 8192, len;
    char *p = cfr_malloc(cap);
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(n + 1) ^ (uint64_t)user[0];
    assert_non_null(p);
    len = (size_t)snprintf(p, cap,
                           "From: sender@example.net\r\nTo: %s@" SCN_DOMAIN
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

void
scn_msg_path(const struct scn *s, const char *user, int n, char *out,
             size_t size)
{
    assert_true(
        (size_t)snprintf(out, size, "%s/%s/%s/Maildir/cur/%d.M%dP7.test:2,S",
                         s->mail, SCN_DOMAIN, user, 1700000000 + n, n) < size);
}

void
scn_msg_put(const struct scn *s, const char *user, const char *from, int n)
{
    char path[SCN_PATH + 256];
    size_t len;
    char *b = scn_msg_bytes(from, n, &len);
    scn_msg_path(s, user, n, path, sizeof(path));
    assert_int_equal(ars_write(path, b, len, 0600), 0);
    cfr_free(b);
}

void
scn_msg_write(const struct scn *s, const char *user, int n)
{
    scn_msg_put(s, user, user, n);
}

void
scn_msg_delete(const struct scn *s, const char *user, int n)
{
    char path[SCN_PATH + 256];
    scn_msg_path(s, user, n, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
}

bool
scn_restored_has(const char *to, const char *user, int n)
{
    char p[SCN_PATH + 256];
    size_t want_len, got_len = 0;
    char *want = scn_msg_bytes(user, n, &want_len);
    SCN_FMT(p, "%s/cur/%d.M%dP7.test:2,S", to, 1700000000 + n, n);
    char *got = ars_slurp(p, &got_len);
    bool ok =
        got != NULL && got_len == want_len && memcmp(got, want, want_len) == 0;
    cfr_free(got);
    cfr_free(want);
    return ok;
}

size_t
scn_snapshots_ex(const struct scn *s, const char *conf, const char *user,
                 bool must_list, char ids[SCN_MAX_SNAPS][65],
                 char parents[SCN_MAX_SNAPS][65])
{
    char mb[64], *out = NULL;
    char tid[SCN_MAX_SNAPS][65], tpa[SCN_MAX_SNAPS][65];
    size_t n = 0;
    SCN_FMT(mb, "%s@" SCN_DOMAIN, user);
    const char *args[] = {"--config", conf,     "snapshots", "--mailbox",
                          mb,         "--json", NULL};
    int code = scn_run(s, s->restore_bin, args, &out);
    assert_true(code == 0 || (code == 5 && !must_list));
    /* An entry is {"id":"<hex>",...,"parent":"<hex>"|null}. */
    for (const char *p = strstr(out, "{\"id\":\""); p != NULL;) {
        const char *next = strstr(p + 1, "{\"id\":\"");
        assert_true(n < SCN_MAX_SNAPS);
        memcpy(tid[n], p + 7, 64);
        tid[n][64] = '\0';
        if (parents != NULL) {
            const char *q = strstr(p, "\"parent\":");
            assert_non_null(q);
            assert_true(next == NULL || q < next);
            q += strlen("\"parent\":");
            if (strncmp(q, "null", 4) == 0) {
                tpa[n][0] = '\0';
            } else {
                assert_int_equal(q[0], '"');
                assert_int_equal(q[65], '"');
                memcpy(tpa[n], q + 1, 64);
                tpa[n][64] = '\0';
            }
        }
        n++;
        p = next;
    }
    /* Newest first in the output: reverse. */
    for (size_t i = 0; i < n; i++) {
        memcpy(ids[i], tid[n - 1 - i], 65);
        if (parents != NULL) {
            memcpy(parents[i], tpa[n - 1 - i], 65);
        }
    }
    cfr_free(out);
    return n;
}

size_t
scn_snapshots(const struct scn *s, const char *conf, const char *user,
              char ids[SCN_MAX_SNAPS][65])
{
    return scn_snapshots_ex(s, conf, user, false, ids, NULL);
}

int
scn_restore_snap(const struct scn *s, const char *conf, const char *user,
                 const char *id, char *to, size_t to_size)
{
    char mb[64];
    static int seq;
    SCN_FMT(mb, "%s@" SCN_DOMAIN, user);
    assert_true((size_t)snprintf(to, to_size, "%s/restored-%d", s->dir, seq++) <
                to_size);
    const char *args[] = {"--config", conf, "restore",    "--mailbox", mb,
                          "--to",     to,   "--snapshot", id,          NULL};
    return scn_run(s, s->restore_bin, args, NULL);
}

void
scn_expect_restores(const struct scn *s, const char *conf, const char *user,
                    const char *id, const int *msgs, size_t n)
{
    char to[SCN_PATH + 32];
    assert_int_equal(scn_restore_snap(s, conf, user, id, to, sizeof(to)), 0);
    for (size_t k = 0; k < n; k++) {
        if (!scn_restored_has(to, user, msgs[k])) {
            fail_msg("%s: message %d of %s not restored byte for byte", to,
                     msgs[k], user);
        }
    }
    ars_rm_tree(to);
}

size_t
scn_missing_on(const struct scn *s, size_t i, const struct vc_objset *set)
{
    struct cfr_rpc_client *cli = vs_client(&s->vaults[i], "acme-restore");
    bool *is = cfr_calloc(set->n + 1, sizeof(bool));
    size_t n = 0;
    assert_non_null(cli);
    assert_non_null(is);
    assert_int_equal(vc_missing(cli, NULL, set, is, &n), CFR_RPC_OK);
    cfr_free(is);
    cfr_rpc_client_free(cli);
    return n;
}

struct cfr_kv *
scn_vault_db(struct cfr_kv_env *ke, const struct vs_vault *v)
{
    /* vault/store.c's column families, in its order: a RocksDB database
     * opens only with all of them named. */
    static const char *const cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                      "refcounts",      "snapshots",
                                      "mailbox_index",  "leases",
                                      "lease_objects",  "tombstones"};
    char p[VS_PATH_MAX + 80];
    struct cfr_err err;
    SCN_FMT(p, "%s/data/acme", v->dir);
    struct cfr_kv *kv =
        cfr_kv_open(ke, p, cfs, sizeof(cfs) / sizeof(cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", p, err.msg);
    }
    return kv;
}
