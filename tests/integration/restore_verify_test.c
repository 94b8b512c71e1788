/*
 * restore_verify_test.c - `coffer-restore verify`, the scheduled recovery
 * test, end to end: two real vaults over mutual TLS, two mailboxes backed
 * up to both by the agent's own pipeline (agent/backup through
 * agent/uplink), and the real coffer-restore binary verifying them with
 * the escrow keyring and the acme-restore certificate.
 *
 * What must hold:
 *  1. Healthy: exit 0, no failure, every message of both mailboxes
 *     checked on each replica, each compared with the live store (the
 *     source, unchanged), Dovecot's view agreeing (when doveadm exists),
 *     and no scratch directory left behind. A seeded sample checks
 *     exactly N messages per mailbox and states the seed.
 *  2. One stored chunk of one vault corrupted (its ciphertext altered
 *     and re-indexed, so the vault serves it without noticing): exit 6,
 *     a chunk_corrupt failure naming that replica, the mailbox, folder and
 *     message; the other replica passes. With the notify group pointing
 *     at a local HTTP listener and SMTP sink (sink_support.h): exactly one
 *     webhook and one mail naming replica and message; the metrics file
 *     (coffer_verify_ok per replica, failures by kind) and the report
 *     file agree; the next healthy run notifies "recovered" once, the one
 *     after it nothing.
 *  3. One stored chunk deleted from a vault: exit 6, chunk_missing naming
 *     that replica and the message.
 *  4. A live message changed in place with its size and mtime kept:
 *     exit 6, a live failure naming the message on every replica.
 *  5. Coverage: after a second backup, each run also verifies one older
 *     snapshot (never-verified first) until every retained snapshot is
 *     covered (the state file's ratio reaches 1).
 *  6. A replica nothing listens on: exit 4 (not 6), named unreachable,
 *     the other replica still verified.
 *  7. Dovecot disagreeing with the snapshot (a message whose ",S=" size
 *     in its name lies): exit 6, a metadata failure naming it on each
 *     replica (skipped, saying so, without doveadm).
 *  8. Dovecot reading other bytes of the same size (a doveadm wrapper
 *     first on PATH edits one message's text): exit 6, a dovecot failure
 *     naming it on each replica; only the content hash can see this.
 *  9. Two runs at once: the second waits for the state lock, says so, and
 *     builds on the state the first saved (its run is not lost).
 *
 * Vault data is changed with core/kv.h while the vault is stopped, the
 * way a disk or an operator could; the vault is then restarted (on a new
 * port, so the restore configuration is rewritten).
 *
 * Runs in about 20 s (two vault starts, four restarts, about twenty
 * verify runs).
 */
#define _GNU_SOURCE /* memmem */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h> /* poll: the bounded wait for the lock message */
#include <signal.h>
#include <sys/file.h> /* flock: holding the state lock */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h" /* ars_run, ars_slurp, ars_json_u64 */
#include "backup.h"            /* the agent's pipeline */
#include "env.h"               /* sessions */
#include "keys.h"              /* the tenant keyring */
#include "kv.h"                /* the vaults' and the agent's RocksDB */
#include "log.h"               /* quiet logs */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* cfr_rpc_global_init */
#include "scenario_support.h"  /* scn_vault_db */
#include "sink_support.h"      /* webhook and SMTP sinks */
#include "state.h"             /* the agent's file cache */
#include "uplink.h"            /* the agent's vault link */
#include "vault_support.h"     /* the harness */

#ifndef COFFER_RESTORE_BIN
#error "COFFER_RESTORE_BIN must name the coffer-restore binary"
#endif

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))
#define BASE_SECS 1767225600 /* 2026-01-01: far from "racily clean" */
#define PASS      "correct horse battery staple"
#define RUN_MS    60000
#define N_VAULTS  2

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static struct cfr_keyring *full, *agent;
static struct cfr_kv_env *kv_env;
static struct agent_state *state;
static char *ca_pem, *agent_pem, *agent_key;
static char tmp[256], conf[512], key_file[512], pass_file[512];
static char live[512], scratch[512], statef[512];
static bool have_doveadm;
static uint8_t tampered[32]; /* the chunk tamper() changed */
/* While set, the configuration sends notifications to these sinks. */
static struct sink *hook, *smtp;
static struct cfr_kv *vault_kv; /* a stopped vault's database, while open */

/* The messages, for naming them in failures. */
struct msg {
    const char *mailbox, *rel, *base;
    uint64_t seed;
    size_t len;
};
static const struct msg msgs[] = {
    {"alice@example.org", "cur/1767225601.M1P10.host:2,S",
     "1767225601.M1P10.host", 1, 3000},
    {"alice@example.org", "cur/1767225602.M2P10.host:2,RS",
     "1767225602.M2P10.host", 2, 5000},
    {"alice@example.org", "cur/1767225603.M3P10.host:2,",
     "1767225603.M3P10.host", 3, 700},
    {"alice@example.org", "new/1767225604.M4P10.host", "1767225604.M4P10.host",
     4, 1200},
    {"alice@example.org", ".Sent/cur/1767225610.M10P10.host:2,FS",
     "1767225610.M10P10.host", 10, 2500},
    {"bob@example.org", "cur/1767225620.M20P10.host:2,S",
     "1767225620.M20P10.host", 20, 1800},
    {"bob@example.org", "cur/1767225621.M21P10.host:2,",
     "1767225621.M21P10.host", 21, 2200},
};
#define N_MSGS (sizeof(msgs) / sizeof(msgs[0]))

/* ---- helpers ------------------------------------------------------------ */

static char *
slurp_env(const char *name)
{
    char path[2 * VS_PATH_MAX];
    char *p;
    vs_env_path(&env, name, path, sizeof(path));
    p = ars_slurp(path, NULL);
    assert_non_null(p);
    return p;
}

/* A message of len bytes, seeded (under the 8 KiB minimum chunk: one
 * chunk, whose ID is the keyed hash of the whole file). */
static uint8_t *
message(uint64_t seed, size_t len)
{
    uint8_t *p = cfr_malloc(len + 1);
    uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 7;
    int h;
    assert_non_null(p);
    h = snprintf(
        (char *)p, len,
        "From: a%llu@example.org\r\nTo: alice@example.org\r\n"
        "Message-ID: <m%llu@example.org>\r\nSubject: test %llu\r\n\r\n",
        (unsigned long long)seed, (unsigned long long)seed,
        (unsigned long long)seed);
    assert_true(h > 0 && (size_t)h < len);
    for (size_t i = (size_t)h; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(' ' + x % 90);
        if (i % 76 == 75) {
            p[i] = '\n';
        }
    }
    return p;
}

static void
mkdirs(const char *path)
{
    char p[600];
    FMT(p, "%s", path);
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            assert_true(mkdir(p, 0700) == 0 || errno == EEXIST);
            *s = '/';
        }
    }
    assert_true(mkdir(p, 0700) == 0 || errno == EEXIST);
}

static void
live_path(const struct msg *m, char *out, size_t n)
{
    assert_true(snprintf(out, n, "%s/%s/%s", live, m->mailbox, m->rel) <
                (int)n);
}

/* The live stores: <live>/<mailbox>/ as Maildir++. */
static void
make_live(void)
{
    static const char *const dirs[] = {"cur",       "new",       "tmp",
                                       ".Sent/cur", ".Sent/new", ".Sent/tmp"};
    static const char *const boxes[] = {"alice@example.org", "bob@example.org"};
    for (size_t b = 0; b < 2; b++) {
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            char p[600];
            FMT(p, "%s/%s/%s", live, boxes[b], dirs[i]);
            mkdirs(p);
        }
    }
    for (size_t i = 0; i < N_MSGS; i++) {
        char p[600];
        uint8_t *d = message(msgs[i].seed, msgs[i].len);
        struct timespec ts[2];
        live_path(&msgs[i], p, sizeof(p));
        assert_int_equal(ars_write(p, d, msgs[i].len, 0600), 0);
        ts[0].tv_sec = BASE_SECS + (time_t)i * 3600;
        ts[0].tv_nsec = 123456789 + (long)i * 1001;
        ts[1] = ts[0];
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
        cfr_free(d);
    }
}

static void
backup_all(void)
{
    struct agent_uplink_vault_opts vo[N_VAULTS];
    struct agent_uplink_opts uo;
    struct agent_uplink *up = NULL;
    struct agent_backup_sink sink;
    struct agent_backup_stats bs;
    struct cfr_session *sess;
    struct cfr_err err;
    char target[N_VAULTS][64];
    static const char *const boxes[] = {"alice@example.org", "bob@example.org"};

    sess = cfr_session_new(agent, 0, &err);
    assert_non_null(sess);
    memset(vo, 0, sizeof(vo));
    memset(&uo, 0, sizeof(uo));
    for (size_t i = 0; i < N_VAULTS; i++) {
        FMT(target[i], "127.0.0.1:%d", vaults[i].port);
        vo[i].name = i == 0 ? "a" : "b";
        vo[i].target = target[i];
        vo[i].target_name = "localhost";
        vo[i].ca_pem = ca_pem;
        vo[i].cert_pem = agent_pem;
        vo[i].key_pem = agent_key;
    }
    uo.vaults = vo;
    uo.n_vaults = N_VAULTS;
    memcpy(uo.session_public, cfr_session_public(sess),
           AGENT_UPLINK_SESSION_LEN);
    uo.call_timeout_ms = 20000;
    uo.stream_timeout_ms = 60000;
    assert_int_equal(agent_uplink_open(&uo, &up, &err), 0);
    agent_backup_sink_uplink(up, &sink);
    for (size_t b = 0; b < 2; b++) {
        struct agent_backup_opts bo;
        char src[600];
        FMT(src, "%s/%s", live, boxes[b]);
        memset(&bo, 0, sizeof(bo));
        bo.workers = 2;
        bo.host = "mail1";
        bo.tmp_dir = tmp;
        assert_int_equal(agent_backup_mailbox(boxes[b], src, agent, sess, state,
                                              &sink, &bo, &bs, &err),
                         0);
        assert_true(bs.committed);
    }
    agent_uplink_free(up);
    cfr_session_free(sess);
}

/* The restore configuration for both vaults at their current ports. */
static void
write_config(void)
{
    char ca[512], cert[512], key[512];
    FILE *f;
    vs_env_path(&env, "ca.pem", ca, sizeof(ca));
    vs_env_path(&env, "acme-restore.pem", cert, sizeof(cert));
    vs_env_path(&env, "acme-restore.key", key, sizeof(key));
    f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
            "\"%s\";\nvaults = [ \"127.0.0.1:%d\", \"127.0.0.1:%d\" ];\n"
            "tls = { ca = \"%s\"; cert = \"%s\"; key = \"%s\"; server_name = "
            "\"localhost\"; };\ntimeout = \"20s\";\nlog_level = \"error\";\n",
            key_file, pass_file, vaults[0].port, vaults[1].port, ca, cert, key);
    if (hook != NULL && smtp != NULL) {
        fprintf(f,
                "notify = { webhooks = [ \"http://127.0.0.1:%d/hook\" ];\n"
                "  mail_to = [ \"ops@example.org\" ];\n"
                "  smtp_url = \"smtp://127.0.0.1:%d\";\n"
                "  smtp_from = \"coffer@example.org\";\n"
                "  timeout = \"5s\"; retries = 0; };\n",
                sink_port(hook), sink_port(smtp));
    }
    assert_int_equal(fclose(f), 0);
}

/* Runs verify with extra (NULL-terminated) args; the JSON report into
 * doc (owned). Returns the exit code. */
static int
run_verify(const char *const *extra, char **doc)
{
    const char *args[32];
    char out[600], errp[600];
    size_t n = 0;
    int code;
    FMT(out, "%s/verify.out", tmp);
    FMT(errp, "%s/verify.err", tmp);
    args[n++] = "--config";
    args[n++] = conf;
    args[n++] = "verify";
    args[n++] = "--json";
    args[n++] = "--scratch";
    args[n++] = scratch;
    args[n++] = "--state";
    args[n++] = statef;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        assert_true(n < 31);
        args[n++] = extra[i];
    }
    args[n] = NULL;
    code = ars_run(COFFER_RESTORE_BIN, args, out, errp, RUN_MS);
    *doc = ars_slurp(out, NULL);
    assert_non_null(*doc);
    if (code != 0) {
        char *e = ars_slurp(errp, NULL);
        fprintf(stderr, "verify exit %d; stderr:\n%s\n", code,
                e != NULL ? e : "");
        cfr_free(e);
    }
    return code;
}

/* Entries of dir (0 when it does not exist). */
static size_t
count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    if (d == NULL) {
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

/* The JSON failure object of kind for replica i and message m, or NULL. */
static const char *
find_failure(const char *doc, const char *kind, int port, const struct msg *m,
             const char *folder)
{
    char want[600];
    FMT(want,
        "{\"kind\":\"%s\",\"replica\":\"127.0.0.1:%d\",\"mailbox\":\"%s\","
        "\"folder\":\"%s\",\"message\":\"%s\",\"message_id\":\"<m%llu@"
        "example.org>\"",
        kind, port, m->mailbox, folder, m->base, (unsigned long long)m->seed);
    return strstr(doc, want);
}

static void
replica_ok(const char *doc, int port, bool ok)
{
    char want[128];
    FMT(want, "{\"address\":\"127.0.0.1:%d\",\"reachable\":true,\"ok\":%s",
        port, ok ? "true" : "false");
    if (strstr(doc, want) == NULL) {
        fail_msg("report lacks %s:\n%s", want, doc);
    }
}

static struct cfr_kv *
open_vault_db(struct vs_vault *v)
{
    vault_kv = scn_vault_db(kv_env, v); /* closed by teardown if a check
                                           fails meanwhile */
    return vault_kv;
}

/*
 * The ID of a chunk of m's body as stored in kv: the agent may cut a
 * message at MIME boundaries, so each stored chunk is opened with the
 * full keyring and the longest one found inside m's bytes is taken (the
 * body text is seeded, so no other message holds it).
 */
static void
chunk_id_of(struct cfr_kv *kv, const struct msg *m, uint8_t id[32])
{
    uint8_t *d = message(m->seed, m->len);
    struct cfr_opener *op;
    struct cfr_kv_iter *it;
    struct cfr_kv_entry e;
    struct cfr_buf plain;
    struct cfr_err err;
    size_t best = 0;
    bool got = false;

    op = cfr_opener_new(full, &err);
    assert_non_null(op);
    it = cfr_kv_iter_new_prefix(kv, 0, "", 0, &err);
    assert_non_null(it);
    cfr_buf_init(&plain, CFR_ENV_PLAIN_MAX);
    while (cfr_kv_iter_next(it, &got, &e, &err) == 0 && got) {
        if (e.key_len != 32 ||
            cfr_env_open(op, CFR_ENV_CHUNK, e.key, e.val, e.val_len,
                         CFR_ENV_PLAIN_MAX, &plain, &err) != 0) {
            continue; /* a manifest page or a clear reference page */
        }
        if (plain.len > best && memmem(d, m->len, plain.data, plain.len)) {
            best = plain.len;
            memcpy(id, e.key, 32);
        }
    }
    assert_true(best > 0);
    cfr_buf_fini(&plain);
    cfr_kv_iter_free(it);
    cfr_opener_free(op);
    cfr_free(d);
}

/*
 * With vault v stopped: replaces the stored envelope of m's chunk (NULL
 * data: deletes it), keeping the old bytes in *saved (owned) for
 * put_back. Restarts the vault and rewrites the configuration.
 */
static void
tamper(struct vs_vault *v, const struct msg *m, bool corrupt,
       struct cfr_buf *saved)
{
    struct cfr_kv *kv;
    struct cfr_err err;
    assert_int_equal(vs_vault_stop(v, SIGTERM, 20000), 0);
    kv = open_vault_db(v);
    chunk_id_of(kv, m, tampered);
    cfr_buf_init(saved, 64u << 20);
    assert_int_equal(cfr_kv_chunk_get(kv, tampered, saved, &err), 0);
    assert_int_equal(cfr_kv_chunk_delete(kv, tampered, &err), 0);
    if (corrupt) {
        uint8_t *p = cfr_malloc(saved->len);
        assert_non_null(p);
        memcpy(p, saved->data, saved->len);
        p[saved->len / 2] ^= 0x5a; /* in the ciphertext, past the header */
        assert_int_equal(
            cfr_kv_chunk_put(kv, tampered, p, saved->len, NULL, &err), 0);
        cfr_free(p);
    }
    cfr_kv_close(kv);
    vault_kv = NULL;
    assert_int_equal(vs_vault_start(v, 30000), 0);
    write_config();
}

static void
put_back(struct vs_vault *v, const struct msg *m, struct cfr_buf *saved)
{
    struct cfr_kv *kv;
    struct cfr_err err;
    (void)m;
    assert_int_equal(vs_vault_stop(v, SIGTERM, 20000), 0);
    kv = open_vault_db(v);
    assert_int_equal(cfr_kv_chunk_delete(kv, tampered, &err), 0);
    assert_int_equal(
        cfr_kv_chunk_put(kv, tampered, saved->data, saved->len, NULL, &err), 0);
    cfr_kv_close(kv);
    vault_kv = NULL;
    cfr_buf_fini(saved);
    assert_int_equal(vs_vault_start(v, 30000), 0);
    write_config();
}

static size_t count_str(const char *doc, const char *needle);

/* ---- tests -------------------------------------------------------------- */

static void
test_verify_healthy(void **state_)
{
    (void)state_;
    char live_pat[600];
    char *doc = NULL;
    uint64_t v = 0;
    FMT(live_pat, "%s/%%m", live);
    {
        const char *extra[] = {"--live", live_pat, "--seed", "42", NULL};
        assert_int_equal(run_verify(extra, &doc), 0);
    }
    assert_non_null(strstr(doc, "\"ok\":true"));
    if (getenv("VERIFY_TEST_SHOW") != NULL) {
        fprintf(stderr, "%s\n", doc); /* the report, for reading */
    }
    assert_non_null(strstr(doc, "\"seed\":\"42\""));
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, 0);
    assert_true(ars_json_u64(doc, NULL, "mailboxes_available", &v));
    assert_int_equal(v, 2);
    for (size_t i = 0; i < N_VAULTS; i++) {
        char from[64];
        FMT(from, "\"address\":\"127.0.0.1:%d\"", vaults[i].port);
        replica_ok(doc, vaults[i].port, true);
        /* Every message of both mailboxes, each compared with the live
         * store, from this replica. */
        assert_true(ars_json_u64(doc, from, "messages_checked", &v));
        assert_int_equal(v, N_MSGS);
        assert_true(ars_json_u64(strstr(doc, from), "alice@example.org",
                                 "messages_live", &v));
        assert_int_equal(v, 5);
        assert_true(ars_json_u64(strstr(doc, from), "alice@example.org",
                                 "messages_total", &v));
        assert_int_equal(v, 5);
    }
    /* Scratch removed after each mailbox. */
    assert_int_equal(count_entries(scratch), 0);
    cfr_free(doc);

    /* A seeded sample of mailboxes: one, the same on both replicas and
     * again with the same seed. */
    {
        const char *extra[] = {"--sample-mailboxes", "1", "--seed", "11", NULL};
        char first[64] = "";
        for (int run = 0; run < 2; run++) {
            size_t a, b;
            assert_int_equal(run_verify(extra, &doc), 0);
            a = count_str(doc, "\"name\":\"alice@example.org\"");
            b = count_str(doc, "\"name\":\"bob@example.org\"");
            assert_int_equal(a + b, N_VAULTS);
            assert_true(a == 0 || b == 0);
            if (run == 0) {
                FMT(first, "%s", a > 0 ? "alice" : "bob");
            } else {
                assert_string_equal(first, a > 0 ? "alice" : "bob");
            }
            assert_true(ars_json_u64(doc, NULL, "mailboxes_available", &v));
            assert_int_equal(v, 2);
            cfr_free(doc);
        }
    }
    /* A seeded sample: exactly 2 messages per mailbox on each replica. */
    {
        const char *extra[] = {
            "--sample-messages", "2", "--seed", "7", "--mailbox",
            "alice@example.org", NULL};
        assert_int_equal(run_verify(extra, &doc), 0);
    }
    assert_non_null(strstr(doc, "\"seed\":\"7\""));
    assert_non_null(strstr(doc, "\"sample\":{\"mailboxes\":0,\"messages\":2}"));
    for (size_t i = 0; i < N_VAULTS; i++) {
        char from[64];
        FMT(from, "\"address\":\"127.0.0.1:%d\"", vaults[i].port);
        assert_true(ars_json_u64(doc, from, "messages_checked", &v));
        assert_int_equal(v, 2);
    }
    cfr_free(doc);
}

/* Line `name{tenant="acme"<labels>} <value>` is in the metrics text. */
static void
metric_is(const char *prom, const char *name, const char *labels,
          const char *value)
{
    char want[300];
    FMT(want, "\n%s{tenant=\"acme\"%s} %s\n", name, labels, value);
    if (strstr(prom, want) == NULL) {
        fail_msg("metrics lack %s:\n%s", want + 1, prom);
    }
}

/* The replica label of vault i. */
static void
rep_label(size_t i, const char *kind, char *out, size_t n)
{
    int w = kind != NULL
                ? snprintf(out, n, ",replica=\"127.0.0.1:%d\",kind=\"%s\"",
                           vaults[i].port, kind)
                : snprintf(out, n, ",replica=\"127.0.0.1:%d\"", vaults[i].port);
    assert_true(w > 0 && (size_t)w < n);
}

/* The webhook i and mail i both tell event, and return their bodies. */
static void
notified(size_t i, const char *event, const char **hook_body,
         const char **mail_body)
{
    const struct sink_msg *h, *mm;
    char ev[128];
    assert_true(sink_wait(hook, i + 1, 10000));
    assert_true(sink_wait(smtp, i + 1, 10000));
    h = sink_get(hook, i);
    mm = sink_get(smtp, i);
    assert_non_null(h);
    assert_non_null(mm);
    assert_string_equal(h->method, "POST");
    assert_string_equal(h->path, "/hook");
    assert_string_equal(mm->mail_from, "coffer@example.org");
    assert_int_equal(mm->n_rcpt, 1);
    assert_string_equal(mm->rcpt[0], "ops@example.org");
    FMT(ev, "%s", event);
    if (strstr(h->body, ev) == NULL || strstr(mm->body, ev) == NULL) {
        fail_msg("event %s not in webhook:\n%s\nmail:\n%s", ev, h->body,
                 mm->body);
    }
    *hook_body = h->body;
    *mail_body = mm->body;
}

/*
 * Also the operator's signals: the failing run (with the notify group
 * pointing at a local HTTP listener and SMTP sink) posts exactly one
 * webhook and one mail naming the replica and the message; the metrics
 * and the JSON report file say the same. The next, healthy run posts
 * "recovered" once; the run after that posts nothing.
 */
static void
test_verify_corrupt_chunk(void **state_)
{
    (void)state_;
    const struct msg *m = &msgs[1]; /* alice, INBOX */
    struct cfr_buf saved;
    char *doc = NULL, *prom, *rep_doc;
    char metrics[600], report[600], lab[160], want[300];
    const char *hb, *mb;
    const char *extra[] = {"--metrics", metrics, "--report", report, NULL};
    uint64_t v = 0;

    FMT(metrics, "%s/coffer_verify.prom", tmp);
    FMT(report, "%s/report.json", tmp);
    hook = sink_http_start(200);
    smtp = sink_smtp_start();
    assert_non_null(hook);
    assert_non_null(smtp);

    tamper(&vaults[1], m, true, &saved); /* writes the notify group too */
    assert_int_equal(run_verify(extra, &doc), 6);
    assert_non_null(strstr(doc, "\"ok\":false"));
    if (find_failure(doc, "chunk_corrupt", vaults[1].port, m, "INBOX") ==
        NULL) {
        fail_msg("no chunk_corrupt failure naming the message:\n%s", doc);
    }
    /* Only that one: the other replica and the other messages pass. */
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, 1);
    replica_ok(doc, vaults[0].port, true);
    replica_ok(doc, vaults[1].port, false);
    assert_int_equal(count_entries(scratch), 0);

    /* One webhook and one mail, naming replica, message and Message-ID
     * (verify waits for delivery before it exits: the counts are final). */
    notified(0, "verify.failed", &hb, &mb);
    FMT(want, "127.0.0.1:%d", vaults[1].port);
    assert_non_null(strstr(hb, want));
    assert_non_null(strstr(mb, want));
    /* describe_failure's form, in both bodies. */
    FMT(want,
        "chunk_corrupt replica=127.0.0.1:%d mailbox=alice@example.org "
        "folder=INBOX message=%s message_id=",
        vaults[1].port, m->base);
    if (strstr(hb, want) == NULL || strstr(mb, want) == NULL) {
        fprintf(stderr, "webhook:\n%s\nmail:\n%s\n", hb, mb);
        fail_msg("\"%s\" not in the notifications", want);
    }
    FMT(want, "m%llu@example.org", (unsigned long long)m->seed);
    assert_non_null(strstr(hb, want));
    assert_non_null(strstr(mb, want));
    assert_non_null(strstr(hb, "chunk_corrupt"));
    assert_non_null(strstr(mb, "chunk_corrupt"));
    assert_int_equal(sink_count(hook), 1);
    assert_int_equal(sink_count(smtp), 1);
    assert_non_null(strstr(doc, "\"event\":\"verify.failed\""));

    /* Metrics: overall and replica b not ok, a ok; the failure by kind. */
    prom = ars_slurp(metrics, NULL);
    assert_non_null(prom);
    metric_is(prom, "coffer_verify_ok", "", "0");
    rep_label(0, NULL, lab, sizeof(lab));
    metric_is(prom, "coffer_verify_ok", lab, "1");
    rep_label(1, NULL, lab, sizeof(lab));
    metric_is(prom, "coffer_verify_ok", lab, "0");
    rep_label(1, "chunk_corrupt", lab, sizeof(lab));
    metric_is(prom, "coffer_verify_failures_total", lab, "1");
    rep_label(0, "chunk_corrupt", lab, sizeof(lab));
    metric_is(prom, "coffer_verify_failures_total", lab, "0");
    rep_label(1, "chunk_missing", lab, sizeof(lab));
    metric_is(prom, "coffer_verify_failures_total", lab, "0");
    metric_is(prom, "coffer_verify_failures", "", "1");
    metric_is(prom, "coffer_verify_notify_failed", "", "0");
    cfr_free(prom);
    /* The report file is the report printed. */
    rep_doc = ars_slurp(report, NULL);
    assert_non_null(rep_doc);
    assert_string_equal(rep_doc, doc);
    cfr_free(rep_doc);
    cfr_free(doc);

    put_back(&vaults[1], m, &saved);
    /* Healthy again: "recovered", once, by webhook and by mail. */
    assert_int_equal(run_verify(extra, &doc), 0);
    notified(1, "verify.recovered", &hb, &mb);
    assert_int_equal(sink_count(hook), 2);
    assert_int_equal(sink_count(smtp), 2);
    assert_non_null(strstr(doc, "\"event\":\"verify.recovered\""));
    prom = ars_slurp(metrics, NULL);
    assert_non_null(prom);
    metric_is(prom, "coffer_verify_ok", "", "1");
    for (size_t i = 0; i < N_VAULTS; i++) {
        rep_label(i, NULL, lab, sizeof(lab));
        metric_is(prom, "coffer_verify_ok", lab, "1");
        rep_label(i, "chunk_corrupt", lab, sizeof(lab));
        metric_is(prom, "coffer_verify_failures_total", lab, "0");
    }
    metric_is(prom, "coffer_verify_failures", "", "0");
    cfr_free(prom);
    rep_doc = ars_slurp(report, NULL);
    assert_non_null(rep_doc);
    assert_string_equal(rep_doc, doc);
    assert_non_null(strstr(rep_doc, "\"ok\":true"));
    cfr_free(rep_doc);
    cfr_free(doc);

    /* Success after success: silence. */
    assert_int_equal(run_verify(extra, &doc), 0);
    assert_int_equal(sink_count(hook), 2);
    assert_int_equal(sink_count(smtp), 2);
    cfr_free(doc);

    sink_stop(hook);
    sink_stop(smtp);
    hook = smtp = NULL;
    write_config();
}

static void
test_verify_missing_chunk(void **state_)
{
    (void)state_;
    const struct msg *m = &msgs[4]; /* alice, Sent */
    struct cfr_buf saved;
    char *doc = NULL;
    uint64_t v = 0;

    tamper(&vaults[0], m, false, &saved);
    assert_int_equal(run_verify(NULL, &doc), 6);
    if (find_failure(doc, "chunk_missing", vaults[0].port, m, "Sent") == NULL) {
        fail_msg("no chunk_missing failure naming the message:\n%s", doc);
    }
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, 1);
    replica_ok(doc, vaults[0].port, false);
    replica_ok(doc, vaults[1].port, true);
    cfr_free(doc);
    put_back(&vaults[0], m, &saved);

    /* Put back: healthy again. */
    assert_int_equal(run_verify(NULL, &doc), 0);
    cfr_free(doc);
}

static void
test_verify_live_differs(void **state_)
{
    (void)state_;
    const struct msg *m = &msgs[6]; /* bob, INBOX */
    char p[600], live_pat[600];
    struct stat st;
    struct timespec ts[2];
    uint8_t *d;
    char *doc = NULL;
    uint64_t v = 0;

    /* Changed in place; size and mtime kept, so it passes as unchanged. */
    live_path(m, p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    d = message(m->seed, m->len);
    d[m->len - 10] ^= 0x01;
    assert_int_equal(ars_write(p, d, m->len, 0600), 0);
    ts[0] = st.st_mtim;
    ts[1] = st.st_mtim;
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);

    FMT(live_pat, "%s/%%m", live);
    {
        const char *extra[] = {"--live", live_pat, NULL};
        assert_int_equal(run_verify(extra, &doc), 6);
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (find_failure(doc, "live", vaults[i].port, m, "INBOX") == NULL) {
            fail_msg("no live failure naming the message:\n%s", doc);
        }
    }
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, N_VAULTS);
    cfr_free(doc);

    /* Back as it was: passes. */
    d[m->len - 10] ^= 0x01;
    assert_int_equal(ars_write(p, d, m->len, 0600), 0);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    cfr_free(d);
    {
        const char *extra[] = {"--live", live_pat, NULL};
        assert_int_equal(run_verify(extra, &doc), 0);
    }
    cfr_free(doc);
}

static void
test_verify_unreachable(void **state_)
{
    (void)state_;
    char *doc = NULL;
    uint64_t v = 0;
    char good[64];
    /* Nothing listens on port 1: only that replica fails, exit 4. */
    {
        const char *extra[] = {"--replica", "127.0.0.1:1", NULL};
        assert_int_equal(run_verify(extra, &doc), 4);
    }
    assert_non_null(strstr(doc, "{\"address\":\"127.0.0.1:1\",\"reachable\":"
                                "false"));
    assert_non_null(strstr(doc, "{\"kind\":\"unreachable\",\"replica\":"
                                "\"127.0.0.1:1\""));
    cfr_free(doc);
    /* With a reachable one too: still 4, and the good one verified. */
    FMT(good, "127.0.0.1:%d", vaults[0].port);
    {
        const char *extra[] = {"--replica", "127.0.0.1:1", "--replica", good,
                               NULL};
        assert_int_equal(run_verify(extra, &doc), 4);
    }
    replica_ok(doc, vaults[0].port, true);
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, 1);
    cfr_free(doc);
}

static void
test_verify_dovecot_disagrees(void **state_)
{
    (void)state_;
    /* Dovecot takes a Maildir message's size from ",S=" in its name: a
     * name that lies makes IMAP clients get a wrong RFC822.SIZE. Restored
     * byte for byte it is still wrong, and only Dovecot's view shows it. */
    static const struct msg liar = {"bob@example.org",
                                    "cur/1767225640.M40P10.host,S=9999:2,S",
                                    "1767225640.M40P10.host,S=9999", 40, 1000};
    char p[600];
    uint8_t *d;
    char *doc = NULL;
    uint64_t v = 0;

    if (!have_doveadm) {
        fprintf(stderr, "doveadm not installed: Dovecot comparison test "
                        "skipped\n");
        skip();
    }
    live_path(&liar, p, sizeof(p));
    d = message(liar.seed, liar.len);
    assert_int_equal(ars_write(p, d, liar.len, 0600), 0);
    cfr_free(d);
    backup_all();
    {
        const char *extra[] = {"--mailbox", "bob@example.org", NULL};
        assert_int_equal(run_verify(extra, &doc), 6);
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (find_failure(doc, "metadata", vaults[i].port, &liar, "INBOX") ==
            NULL) {
            fail_msg("no metadata failure naming the message:\n%s", doc);
        }
    }
    assert_non_null(strstr(doc, "Dovecot shows size 9999"));
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    if (v != N_VAULTS) {
        fprintf(stderr, "%s\n", doc);
        fail_msg("%llu failures, want %d", (unsigned long long)v,
                 (int)N_VAULTS);
    }
    cfr_free(doc);
}

/*
 * Dovecot reading other bytes than verify wrote, same size: only the
 * content hash of Dovecot's text can see it. No clean way makes a real
 * Dovecot do that to a Maildir in a test (its plugins are off, and a
 * wrong ",S=" size is the metadata case above), so the doveadm verify
 * finds first on PATH is a wrapper around the real one that changes one
 * message's Subject in what it prints, the way a Dovecot reading a
 * different file, or a storage layer between them changing bytes, would.
 * Nothing in the product knows about it.
 */
static void
test_verify_dovecot_text_differs(void **state_)
{
    (void)state_;
    const struct msg *m = &msgs[1]; /* alice, INBOX: "Subject: test 2" */
    char dir[600], wrapper[700], path[4200], real[64];
    const char *old = getenv("PATH");
    char *saved = cfr_strdup(old != NULL ? old : "/usr/bin:/bin");
    char *doc = NULL;
    uint64_t v = 0;
    FILE *f;

    if (!have_doveadm) {
        fprintf(stderr, "doveadm not installed: Dovecot text test skipped\n");
        cfr_free(saved);
        skip();
    }
    FMT(real, "%s",
        access("/usr/bin/doveadm", X_OK) == 0    ? "/usr/bin/doveadm"
        : access("/usr/sbin/doveadm", X_OK) == 0 ? "/usr/sbin/doveadm"
                                                 : "/usr/local/bin/doveadm");
    FMT(dir, "%s/fakebin", tmp);
    mkdirs(dir);
    FMT(wrapper, "%s/doveadm", dir);
    f = fopen(wrapper, "w");
    assert_non_null(f);
    /* In -f json the CR is the two characters \r: "test 2\r" is only
     * message 2's Subject (not 20's or 21's). */
    fprintf(f,
            "#!/bin/bash\nset -o pipefail\n\"%s\" \"$@\" | "
            "sed 's/Subject: test 2\\\\r/Subject: test X\\\\r/'\n",
            real);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(wrapper, 0700), 0);
    FMT(path, "%s:%s", dir, saved);
    assert_int_equal(setenv("PATH", path, 1), 0);
    {
        const char *extra[] = {"--mailbox", "alice@example.org", NULL};
        int code = run_verify(extra, &doc);
        assert_int_equal(setenv("PATH", saved, 1), 0);
        assert_int_equal(code, 6);
    }
    cfr_free(saved);
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (find_failure(doc, "dovecot", vaults[i].port, m, "INBOX") == NULL) {
            fail_msg("no dovecot failure naming the message:\n%s", doc);
        }
    }
    assert_non_null(strstr(doc, "Dovecot reads other bytes than were "
                                "restored"));
    assert_true(ars_json_u64(doc, NULL, "failures_total", &v));
    assert_int_equal(v, N_VAULTS);
    cfr_free(doc);
    /* The real doveadm again: passes (the check is not just noise). */
    {
        const char *extra[] = {"--mailbox", "alice@example.org", NULL};
        assert_int_equal(run_verify(extra, &doc), 0);
    }
    cfr_free(doc);
}

/* The "runs" count of a state file. */
static uint64_t
state_runs(const char *path)
{
    char *t = ars_slurp(path, NULL);
    const char *p;
    uint64_t v;
    assert_non_null(t);
    p = strstr(t, "\nruns = ");
    assert_non_null(p);
    v = strtoull(p + strlen("\nruns = "), NULL, 10);
    cfr_free(t);
    return v;
}

/*
 * Two runs at once share the state file: the second waits for the first
 * (flock on <state>.lock, held from load to save), says so, and then
 * builds on what the first saved. Here the test is the "first run": it
 * holds the lock, sees the second wait, saves a state of its own meanwhile
 * (one more run), and lets go: both runs must be counted. A verify that
 * loaded before locking would save over it and count one.
 */
static void
test_verify_state_lock(void **state_)
{
    (void)state_;
    char lock[600], out[600], errp[600], *doc, *e = NULL, *t;
    const char *args[] = {"--config",        conf,        "verify",
                          "--json",          "--scratch", scratch,
                          "--state",         statef,      "--mailbox",
                          "bob@example.org", NULL};
    uint64_t before;
    struct timespec t0, t1;
    pid_t pid;
    int fd;

    before = state_runs(statef);
    FMT(lock, "%s.lock", statef);
    FMT(out, "%s/verify-lock.out", tmp);
    FMT(errp, "%s/verify-lock.err", tmp);
    fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);

    pid = ars_spawn(COFFER_RESTORE_BIN, args, out, errp);
    assert_true(pid > 0);
    /* Poll (bounded) until it says it waits. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        e = ars_slurp(errp, NULL);
        if (e != NULL && strstr(e, "waiting for it to finish") != NULL) {
            break;
        }
        cfr_free(e);
        e = NULL;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 20) {
            (void)kill(pid, SIGKILL);
            (void)ars_wait(pid, 5000);
            fail_msg("verify never said it waits for the lock");
        }
        (void)poll(NULL, 0, 20);
    }
    assert_non_null(strstr(e, lock)); /* names the lock file */
    cfr_free(e);
    /* Still waiting: nothing printed, the state untouched. */
    t = ars_slurp(out, NULL);
    assert_true(t == NULL || t[0] == '\0');
    cfr_free(t);
    assert_int_equal(state_runs(statef), before);

    /* "The first run" saves: one more run. */
    t = ars_slurp(statef, NULL);
    assert_non_null(t);
    {
        char num[32], *p = strstr(t, "\nruns = ");
        char *rest;
        FILE *f;
        assert_non_null(p);
        p += strlen("\nruns = ");
        (void)strtoull(p, &rest, 10);
        FMT(num, "%llu", (unsigned long long)(before + 1));
        f = fopen(statef, "w");
        assert_non_null(f);
        fprintf(f, "%.*s%s%s", (int)(p - t), t, num, rest);
        assert_int_equal(fclose(f), 0);
    }
    cfr_free(t);
    assert_int_equal(flock(fd, LOCK_UN), 0);
    close(fd);

    assert_int_equal(ars_wait(pid, RUN_MS), 0);
    doc = ars_slurp(out, NULL);
    assert_non_null(doc);
    assert_non_null(strstr(doc, "\"ok\":true"));
    cfr_free(doc);
    assert_int_equal(state_runs(statef), before + 2);
}

/* Occurrences of needle in doc. */
static size_t
count_str(const char *doc, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(doc, needle); p != NULL;
         p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

static void
test_verify_coverage(void **state_)
{
    (void)state_;
    char p[600], state2[600];
    uint8_t *d;
    char *doc = NULL;
    uint64_t retained = 0, covered = 0, v = 0;
    size_t runs = 0;

    /* A second backup: alice's first snapshot is now an older one. */
    FMT(p, "%s/alice@example.org/cur/1767225630.M30P10.host:2,S", live);
    d = message(30, 1500);
    assert_int_equal(ars_write(p, d, 1500, 0600), 0);
    cfr_free(d);
    backup_all();

    /* A fresh state: nothing verified yet. One older snapshot per run is
     * verified besides the newest ones, never-verified ones first, until
     * every retained snapshot is covered; then no older one is due. */
    FMT(state2, "%s/state2.json", tmp);
    for (;;) {
        const char *extra[] = {"--older", "1", "--state", state2, NULL};
        size_t entries;
        assert_true(runs++ < 4);
        assert_int_equal(run_verify(extra, &doc), 0);
        assert_true(ars_json_u64(doc, "\"coverage\"", "retained", &retained));
        assert_true(ars_json_u64(doc, "\"coverage\"", "covered", &covered));
        /* Mailbox entries: 2 newest (+ 1 older) on each replica. */
        entries = count_str(doc, "\"messages_total\":");
        if (covered == retained && entries == 2 * N_VAULTS) {
            break; /* nothing left to cover */
        }
        assert_int_equal(entries, 3 * N_VAULTS);
        /* The older snapshot verified is one of the first ones (alice's
         * held 5 messages, bob's 2), never a newest one again. */
        assert_true(count_str(doc, "\"messages_total\":5,") +
                        count_str(doc, "\"messages_total\":2,") ==
                    2 * N_VAULTS);
        assert_true(covered == 2 + runs || covered == retained);
        cfr_free(doc);
        doc = NULL;
    }
    /* Both mailboxes' first snapshots and the newest ones. */
    assert_true(retained >= 3);
    assert_int_equal(runs, retained - 2 + 1);
    assert_non_null(strstr(doc, "\"ratio\":1.000"));
    /* The newest alice snapshot holds the new message. */
    assert_true(
        ars_json_u64(doc, "\"alice@example.org\"", "messages_total", &v));
    assert_int_equal(v, 6);
    if (getenv("VERIFY_TEST_SHOW") != NULL) {
        fprintf(stderr, "coverage: %zu runs, %llu retained\n", runs,
                (unsigned long long)retained);
    }
    cfr_free(doc);
}

/* ---- setup --------------------------------------------------------------- */

static bool
find_doveadm(void)
{
    return access("/usr/bin/doveadm", X_OK) == 0 ||
           access("/usr/sbin/doveadm", X_OK) == 0 ||
           access("/usr/local/bin/doveadm", X_OK) == 0;
}

static int
setup(void **state_)
{
    (void)state_;
    const struct cfr_kdf_params kdf = {CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN};
    struct cfr_err err;
    char p[512];
    const char *t = getenv("TMPDIR");

    cfr_log_set_level(CFR_LOG_ERROR);
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    if (snprintf(tmp, sizeof(tmp), "%s/verify_it.XXXXXX",
                 t != NULL && *t != '\0' ? t : "/tmp") >= (int)sizeof(tmp) ||
        mkdtemp(tmp) == NULL) {
        return -1;
    }
    have_doveadm = find_doveadm();
    if (!have_doveadm) {
        fprintf(stderr, "doveadm not installed: verify runs without the "
                        "Dovecot comparison (install dovecot-core to cover "
                        "it)\n");
    }
    full = cfr_keyring_generate(1700000000000, &err);
    if (full == NULL || (agent = cfr_keyring_agent_view(full, &err)) == NULL) {
        return -1;
    }
    snprintf(key_file, sizeof(key_file), "%s/acme.escrow", tmp);
    snprintf(pass_file, sizeof(pass_file), "%s/escrow.pass", tmp);
    snprintf(conf, sizeof(conf), "%s/restore.conf", tmp);
    snprintf(live, sizeof(live), "%s/live", tmp);
    snprintf(scratch, sizeof(scratch), "%s/scratch", tmp);
    snprintf(statef, sizeof(statef), "%s/state.json", tmp);
    if (cfr_keyring_export(full, key_file, PASS, strlen(PASS), &kdf, &err) !=
            0 ||
        ars_write(pass_file, PASS "\n", strlen(PASS) + 1, 0600) != 0 ||
        mkdir(scratch, 0700) != 0) {
        return -1;
    }
    snprintf(p, sizeof(p), "%s/state", tmp);
    if ((kv_env = cfr_kv_env_new(8u << 20, &err)) == NULL ||
        agent_state_open(kv_env, p, &state, &err) != 0) {
        return -1;
    }
    if (vs_env_init(&env) != 0) {
        return -1;
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (vs_vault_init(&vaults[i], &env, i == 0 ? "va" : "vb") != 0 ||
            vs_vault_start(&vaults[i], 30000) != 0) {
            return -1;
        }
    }
    ca_pem = slurp_env("ca.pem");
    agent_pem = slurp_env("agent.pem");
    agent_key = slurp_env("agent.key");
    make_live();
    backup_all();
    write_config();
    return 0;
}

static int
teardown(void **state_)
{
    (void)state_;
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (vaults[i].pid > 0) {
            (void)vs_vault_stop(&vaults[i], SIGKILL, 10000);
        }
    }
    cfr_kv_close(vault_kv);
    sink_stop(hook);
    sink_stop(smtp);
    vs_env_fini(&env);
    agent_state_close(state);
    cfr_kv_env_free(kv_env);
    if (tmp[0] != '\0') {
        ars_rm_tree(tmp);
    }
    cfr_free(ca_pem);
    cfr_free(agent_pem);
    cfr_free(agent_key);
    cfr_keyring_free(agent);
    cfr_keyring_free(full);
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_healthy),
        cmocka_unit_test(test_verify_corrupt_chunk),
        cmocka_unit_test(test_verify_missing_chunk),
        cmocka_unit_test(test_verify_live_differs),
        cmocka_unit_test(test_verify_coverage),
        cmocka_unit_test(test_verify_unreachable),
        cmocka_unit_test(test_verify_dovecot_text_differs),
        cmocka_unit_test(test_verify_state_lock),
        /* last: it leaves a message Dovecot disagrees with in bob's */
        cmocka_unit_test(test_verify_dovecot_disagrees),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
