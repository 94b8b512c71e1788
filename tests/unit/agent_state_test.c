/*
 * agent_state_test.c - the agent's file cache driven by real scans of a
 * generated Maildir++ tree: first run reads everything, a quiet run reads
 * nothing, a flag-change storm (10% of messages) and new/ -> cur/ moves
 * are metadata updates with zero reads, deletions are listed exactly,
 * renames and errors during a scan never look like deletions, racy mtimes
 * are re-read, and the cache survives close/reopen and recovers from
 * damage (corrupt database, foreign format, damaged record) by starting
 * empty, without ever emptying a directory that is not its own. The
 * parent link (the last confirmed commit) follows commits, is absent
 * rather than stale after an unconfirmed one, and a damaged or missing
 * record means no parent.
 *
 * A realistic store from bench/gen_corpus (found in the build tree beside
 * this binary; the test is skipped with a message when it is not built)
 * is then evolved by a day of mail: exactly the arrivals are read, exactly
 * the expunges are listed, and no message is ever "changed".
 *
 * "Reads" are counted where the pipeline would read: NEW and CHANGED
 * verdicts. Runs in about 1.5 s on tmpfs (used when TMPDIR is unset).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sys/wait.h>

#include "id.h"
#include "kv.h"
#include "mailbox.h"
#include "scan.h"
#include "state.h"

#define PAST_SECS  INT64_C(1700000000)
#define START_NS   ((PAST_SECS + 86400) * INT64_C(1000000000))
#define N_MSGS     1000
#define N_SENT     100 /* of N_MSGS, in .Sent */
#define N_NEW      50  /* of the INBOX ones, in new/ */
#define MAILBOX    "alice@example.com"
#define MAX_UNSEEN 64

/* ---- helpers ----------------------------------------------------------- */

static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < size);
}

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static void
rm_rf(const char *root)
{
    assert_int_equal(nftw(root, rm_cb, 32, FTW_DEPTH | FTW_PHYS), 0);
}

struct fixture {
    char tmp[PATH_MAX];
    char store[PATH_MAX];
    char db[PATH_MAX];
    struct cfr_kv_env *env;
};

static void
mk(const struct fixture *fx, const char *rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", fx->store, rel);
    assert_int_equal(mkdir(p, 0700), 0);
}

/* Writes root/rel with an mtime in the past (not racy for START_NS). */
static void
put(const struct fixture *fx, const char *rel, const char *content)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", fx->store, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
    struct timespec ts[2] = {{PAST_SECS, 0}, {PAST_SECS, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void
ren(const struct fixture *fx, const char *from, const char *to)
{
    char a[PATH_MAX];
    char b[PATH_MAX];
    pathf(a, sizeof(a), "%s/%s", fx->store, from);
    pathf(b, sizeof(b), "%s/%s", fx->store, to);
    assert_int_equal(rename(a, b), 0);
}

/* Message i: its folder, sub-directory and base name. */
static void
msg_path(int i, char *out, size_t size, const char *info)
{
    const char *folder = i < N_SENT ? ".Sent/" : "";
    const char *sub = (i >= N_SENT && i < N_SENT + N_NEW) ? "new" : "cur";
    pathf(out, size, "%s%s/%d.M%dP7.host,S=%d%s", folder, sub, 1700000000 + i,
          i, 10 + i % 7, info);
}

/* The generated tree: N_MSGS messages, Dovecot files, an mbox. */
static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    /* TMPDIR if set, else tmpfs when writable: on a loaded disk the
     * synced writes and 1,000-file set-ups take ten times longer. */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL) {
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    pathf(fx->tmp, sizeof(fx->tmp), "%s/agent_state_XXXXXX", tmp);
    assert_non_null(mkdtemp(fx->tmp));
    pathf(fx->store, sizeof(fx->store), "%s/Maildir", fx->tmp);
    pathf(fx->db, sizeof(fx->db), "%s/state", fx->tmp);
    assert_int_equal(mkdir(fx->store, 0700), 0);
    const char *dirs[] = {"cur",       "new",       "tmp",       ".Sent",
                          ".Sent/cur", ".Sent/new", ".Sent/tmp", "mail"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        mk(fx, dirs[i]);
    }
    char p[PATH_MAX];
    char body[64];
    for (int i = 0; i < N_MSGS; i++) {
        bool in_new = i >= N_SENT && i < N_SENT + N_NEW;
        msg_path(i, p, sizeof(p), in_new ? "" : ":2,S");
        pathf(body, sizeof(body), "message %d body", i);
        put(fx, p, body);
    }
    put(fx, "dovecot-uidlist", "3 V1 N1001\n");
    put(fx, "dovecot-keywords", "0 $Forwarded\n");
    put(fx, "subscriptions", "Sent\n");
    put(fx, ".Sent/maildirfolder", "");
    put(fx, ".Sent/dovecot-uidlist", "3 V2 N101\n");
    put(fx, "mail/old.mbox", "From x Mon Jan  1 00:00:00 2024\nhi\n");
    struct cfr_err err;
    fx->env = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(fx->env);
    *state = fx;
    return 0;
}

#define N_FILES (N_MSGS + 6)

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    cfr_kv_env_free(fx->env);
    rm_rf(fx->tmp);
    free(fx);
    return 0;
}

/* ---- one backup pass, as the pipeline will drive the state ------------- */

struct pass {
    struct agent_state_run *run;
    uint64_t verdicts[4];
    uint64_t reads;  /* NEW + CHANGED: where the pipeline reads */
    uint64_t errors; /* error entries kept by prefix */
    size_t n_unseen;
    uint8_t unseen[MAX_UNSEEN][256];
    size_t unseen_len[MAX_UNSEEN];
};

/* The chunk IDs a "read" of a file yields: derived from its key and size. */
static void
fake_chunks(const uint8_t *key, size_t key_len, uint64_t size,
            uint8_t out[2][CFR_ID_LEN])
{
    uint8_t buf[4200];
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, &size, sizeof(size));
    cfr_id_plain(buf, key_len + sizeof(size), out[0]);
    cfr_id_plain(out[0], CFR_ID_LEN, out[1]);
}

static int
pass_cb(void *ctx, const struct agent_scan_entry *e)
{
    struct pass *ps = ctx;
    struct cfr_err err;
    if (e->status == AGENT_SCAN_ERROR) {
        ps->errors++;
        assert_int_equal(
            agent_state_keep_prefix(ps->run, e->key, e->key_len, &err), 0);
        return 0;
    }
    if (e->status != AGENT_SCAN_FILE) {
        return 0;
    }
    enum agent_state_verdict v;
    struct agent_state_rec rec;
    assert_int_equal(agent_state_lookup(ps->run, e, &v, &rec, &err), 0);
    ps->verdicts[v]++;
    if (v == AGENT_STATE_UNCHANGED) {
        assert_int_equal(agent_state_seen(ps->run, e->key, e->key_len, &err),
                         0);
        return 0;
    }
    if (v == AGENT_STATE_RENAMED) {
        /* The old record's content, the entry's new name fields. */
        agent_state_rec_from_entry(e, &rec);
        assert_int_equal(
            agent_state_record(ps->run, e->key, e->key_len, &rec, &err), 0);
        return 0;
    }
    ps->reads++;
    uint8_t chunks[2][CFR_ID_LEN];
    fake_chunks(e->key, e->key_len, e->size, chunks);
    memset(&rec, 0, sizeof(rec));
    agent_state_rec_from_entry(e, &rec);
    rec.chunk_ids = &chunks[0][0];
    rec.n_chunks = 2;
    rec.message_id = (const uint8_t *)"<id@example.com>";
    rec.message_id_len = 16;
    assert_int_equal(
        agent_state_record(ps->run, e->key, e->key_len, &rec, &err), 0);
    return 0;
}

static int
unseen_cb(void *ctx, const uint8_t *key, size_t key_len)
{
    struct pass *ps = ctx;
    assert_true(ps->n_unseen < MAX_UNSEEN && key_len <= 256);
    memcpy(ps->unseen[ps->n_unseen], key, key_len);
    ps->unseen_len[ps->n_unseen++] = key_len;
    struct cfr_err err;
    /* The snapshot records the deletion; the cache forgets the file. */
    assert_int_equal(agent_state_forget(ps->run, key, key_len, &err), 0);
    return 0;
}

static int
count_unseen_cb(void *ctx, const uint8_t *key, size_t key_len)
{
    (void)key;
    (void)key_len;
    (*(uint64_t *)ctx)++;
    return 0;
}

/* Scans the store once through the state; fills *ps. */
static void
run_pass(struct fixture *fx, struct agent_state *st,
         const struct agent_scan_opts *opts, int64_t start_ns, struct pass *ps)
{
    struct cfr_err err;
    memset(ps, 0, sizeof(*ps));
    assert_int_equal(agent_state_begin(st, MAILBOX, start_ns, &ps->run, &err),
                     0);
    struct agent_scan_summary sum;
    assert_int_equal(agent_scan_run(fx->store, opts, pass_cb, ps, &sum, &err),
                     0);
    uint64_t n = 0;
    assert_int_equal(agent_state_unseen(ps->run, unseen_cb, ps, &n, &err), 0);
    assert_int_equal(n, ps->n_unseen);
    assert_int_equal(agent_state_end(ps->run, &err), 0);
    ps->run = NULL;
}

static bool
unseen_has(const struct pass *ps, const char *folder, const char *name)
{
    uint8_t key[256];
    size_t fl = strlen(folder);
    size_t nl = strlen(name);
    memcpy(key, folder, fl);
    key[fl] = 0;
    memcpy(key + fl + 1, name, nl);
    for (size_t i = 0; i < ps->n_unseen; i++) {
        if (ps->unseen_len[i] == fl + 1 + nl &&
            memcmp(ps->unseen[i], key, fl + 1 + nl) == 0) {
            return true;
        }
    }
    return false;
}

static struct agent_state *
open_state(struct fixture *fx, bool expect_reset)
{
    struct agent_state *st = NULL;
    struct cfr_err err;
    assert_int_equal(agent_state_open(fx->env, fx->db, &st, &err), 0);
    struct agent_state_stats stats;
    agent_state_stats(st, &stats);
    assert_int_equal(stats.reset, expect_reset);
    return st;
}

/* ---- walking the records: what the manifest writer will see ------------ */

struct walk {
    size_t n;
    size_t renamed_ok; /* records of renamed messages checked */
    uint8_t last_key[4200];
    size_t last_len;
};

static int
walk_cb(void *ctx, const uint8_t *key, size_t key_len,
        const struct agent_state_rec *rec)
{
    struct walk *w = ctx;
    /* Strictly increasing keys: the manifest's order. */
    if (w->n > 0) {
        size_t m = key_len < w->last_len ? key_len : w->last_len;
        int c = memcmp(w->last_key, key, m);
        assert_true(c < 0 || (c == 0 && w->last_len < key_len));
    }
    memcpy(w->last_key, key, key_len);
    w->last_len = key_len;
    w->n++;
    /* The chunk list is the one the first read produced, whatever the
     * renames since: the size never changed. */
    uint8_t chunks[2][CFR_ID_LEN];
    fake_chunks(key, key_len, rec->size, chunks);
    assert_int_equal(rec->n_chunks, 2);
    assert_memory_equal(rec->chunk_ids, chunks, sizeof(chunks));
    assert_int_equal(rec->message_id_len, 16);
    if (rec->info_len == 5 && memcmp(rec->info, ":2,RS", 5) == 0) {
        w->renamed_ok++;
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static void
test_state_runs_and_flag_storm(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;

    /* First run: everything is new and read once. */
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_NEW], N_FILES);
    assert_int_equal(ps.reads, N_FILES);
    assert_int_equal(ps.n_unseen, 0);

    /* A quiet run: no read at all. */
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_UNCHANGED], N_FILES);
    assert_int_equal(ps.reads, 0);
    assert_int_equal(ps.n_unseen, 0);

    /* The storm: 10% of the messages change flags, and 10 move from new/
     * to cur/ (read by the MUA): metadata only, zero reads. */
    char a[PATH_MAX];
    char b[PATH_MAX];
    int renamed = 0;
    for (int i = 0; i < N_MSGS; i += 10) {
        bool in_new = i >= N_SENT && i < N_SENT + N_NEW;
        if (in_new) {
            continue;
        }
        msg_path(i, a, sizeof(a), ":2,S");
        msg_path(i, b, sizeof(b), ":2,RS");
        ren(fx, a, b);
        renamed++;
    }
    for (int i = N_SENT + 1; i < N_SENT + 20; i += 2) {
        msg_path(i, a, sizeof(a), "");
        pathf(b, sizeof(b), "cur/%d.M%dP7.host,S=%d:2,S", 1700000000 + i, i,
              10 + i % 7);
        ren(fx, a, b);
        renamed++;
    }
    assert_int_equal(renamed, N_MSGS / 10 - N_NEW / 10 + 10);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_RENAMED], renamed);
    assert_int_equal(ps.verdicts[AGENT_STATE_UNCHANGED], N_FILES - renamed);
    assert_int_equal(ps.reads, 0);
    assert_int_equal(ps.n_unseen, 0);

    /* The records: sorted, chunk lists kept across the renames. */
    struct agent_state_run *run = NULL;
    struct cfr_err err;
    struct walk w;
    memset(&w, 0, sizeof(w));
    assert_int_equal(agent_state_begin(st, MAILBOX, START_NS, &run, &err), 0);
    struct pass ps2;
    memset(&ps2, 0, sizeof(ps2));
    ps2.run = run;
    assert_int_equal(agent_scan_run(fx->store, NULL, pass_cb, &ps2, NULL, &err),
                     0);
    assert_int_equal(ps2.reads, 0);
    assert_int_equal(agent_state_walk(run, walk_cb, &w, &err), 0);
    assert_int_equal(w.n, N_FILES);
    assert_int_equal(w.renamed_ok, N_MSGS / 10 - N_NEW / 10);
    assert_int_equal(agent_state_end(run, &err), 0);

    struct agent_state_stats stats;
    agent_state_stats(st, &stats);
    assert_int_equal(stats.damaged_records, 0);
    assert_true(stats.commits > 0);
    agent_state_close(st);
}

static void
test_state_deletions_and_changes(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.reads, N_FILES);

    /* Expunge 5, deliver 3, rewrite the uidlist (new size). */
    char p[PATH_MAX];
    for (int i = N_SENT + N_NEW; i < N_SENT + N_NEW + 5; i++) {
        msg_path(i, p, sizeof(p), ":2,S");
        char full[PATH_MAX];
        pathf(full, sizeof(full), "%s/%s", fx->store, p);
        assert_int_equal(unlink(full), 0);
    }
    put(fx, "new/1800000001.M1P9.host", "new one");
    put(fx, "new/1800000002.M2P9.host", "new two");
    put(fx, ".Sent/cur/1800000003.M3P9.host:2,S", "sent three");
    put(fx, "dovecot-uidlist", "3 V1 N1004 and more\n");
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_NEW], 3);
    assert_int_equal(ps.verdicts[AGENT_STATE_CHANGED], 1);
    assert_int_equal(ps.reads, 4);
    assert_int_equal(ps.n_unseen, 5);
    for (int i = N_SENT + N_NEW; i < N_SENT + N_NEW + 5; i++) {
        char base[64];
        pathf(base, sizeof(base), "%d.M%dP7.host,S=%d", 1700000000 + i, i,
              10 + i % 7);
        assert_true(unseen_has(&ps, "", base));
    }
    /* Forgotten: the next run neither lists nor reads them. */
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.n_unseen, 0);
    assert_int_equal(ps.reads, 0);
    assert_int_equal(ps.verdicts[AGENT_STATE_UNCHANGED], N_FILES - 5 + 3);
    agent_state_close(st);
}

/* Hook: renames every 10th message as the scanner reaches it, expunges
 * one, so renames race readdir. */
struct race {
    const struct fixture *fx;
    int seen;
    int expunged;
};

static int
race_hook(void *ctx, const char *path)
{
    struct race *r = ctx;
    size_t n = strlen(path);
    if (n < 4 || strcmp(path + n - 4, ":2,S") != 0) {
        return 0;
    }
    char a[PATH_MAX];
    char b[PATH_MAX];
    pathf(a, sizeof(a), "%s/%s", r->fx->store, path);
    if (r->seen++ % 10 == 0) {
        pathf(b, sizeof(b), "%s/%.*s:2,RS", r->fx->store, (int)(n - 4), path);
        assert_int_equal(rename(a, b), 0);
    } else if (r->expunged == 0 && r->seen > 500) {
        r->expunged = 1;
        assert_int_equal(unlink(a), 0);
    }
    return 0;
}

static void
test_state_rename_during_scan(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    run_pass(fx, st, NULL, START_NS, &ps);
    struct race r = {fx, 0, 0};
    struct agent_scan_opts o = {.before_stat = race_hook, .hook_ctx = &r};
    run_pass(fx, st, &o, START_NS, &ps);
    /* Only the expunged message is gone; every renamed one was found. */
    assert_int_equal(r.expunged, 1);
    assert_int_equal(ps.n_unseen, 1);
    assert_int_equal(ps.reads, 0);
    assert_true(ps.verdicts[AGENT_STATE_RENAMED] >= (uint64_t)(r.seen / 10));
    agent_state_close(st);
}

/* Hook: the path in ctx cannot be examined (works as root too). */
static int
deny_hook(void *ctx, const char *path)
{
    return strcmp(path, ctx) == 0 ? EACCES : 0;
}

static void
test_state_errors_keep_files(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    run_pass(fx, st, NULL, START_NS, &ps);
    /* The folder's messages were hidden by the error, not deleted:
     * whether its cur/ or the folder itself could not be examined. */
    struct agent_scan_opts o = {.before_stat = deny_hook,
                                .hook_ctx = ".Sent/cur"};
    run_pass(fx, st, &o, START_NS, &ps);
    assert_int_equal(ps.errors, 1);
    assert_int_equal(ps.n_unseen, 0);
    assert_int_equal(ps.verdicts[AGENT_STATE_UNCHANGED], N_FILES - N_SENT);
    o.hook_ctx = ".Sent";
    run_pass(fx, st, &o, START_NS, &ps);
    assert_int_equal(ps.errors, 1);
    assert_int_equal(ps.n_unseen, 0);
    /* Also its maildirfolder and dovecot-uidlist. */
    assert_int_equal(ps.verdicts[AGENT_STATE_UNCHANGED], N_FILES - N_SENT - 2);
    /* Without the error, a missing folder is a deletion of each file. */
    o.hook_ctx = "none";
    char p[PATH_MAX];
    char q[PATH_MAX];
    pathf(p, sizeof(p), "%s/.Sent", fx->store);
    pathf(q, sizeof(q), "%s/Sent-moved-away", fx->tmp);
    assert_int_equal(rename(p, q), 0);
    memset(&ps, 0, sizeof(ps));
    struct cfr_err err;
    assert_int_equal(agent_state_begin(st, MAILBOX, START_NS, &ps.run, &err),
                     0);
    assert_int_equal(agent_scan_run(fx->store, &o, pass_cb, &ps, NULL, &err),
                     0);
    uint64_t n = 0;
    assert_int_equal(
        agent_state_unseen(ps.run, count_unseen_cb, &n, NULL, &err), 0);
    assert_int_equal(n, N_SENT + 2);
    agent_state_run_free(ps.run);
    assert_int_equal(rename(q, p), 0);
    agent_state_close(st);
}

static void
test_state_racy_mtime(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    /* A run starting a second after the files' mtime: all racy. */
    int64_t racy_start = PAST_SECS * INT64_C(1000000000) + 1000000000;
    run_pass(fx, st, NULL, racy_start, &ps);
    assert_int_equal(ps.reads, N_FILES);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_CHANGED], N_FILES);
    /* Read again at a safe distance: settled. */
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.reads, 0);
    agent_state_close(st);
}

static void
test_state_reopen(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.reads, N_FILES);
    agent_state_close(st);
    st = open_state(fx, false);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.reads, 0);
    /* Another mailbox shares nothing with this one. */
    struct agent_state_run *run = NULL;
    struct cfr_err err;
    assert_int_equal(
        agent_state_begin(st, "bob@example.com", START_NS, &run, &err), 0);
    assert_int_equal(agent_state_generation(run), 1);
    uint64_t n = 99;
    assert_int_equal(agent_state_unseen(run, unseen_cb, &ps, &n, &err), 0);
    assert_int_equal(n, 0);
    agent_state_run_free(run);
    agent_state_close(st);
}

static void
overwrite(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
}

static void
test_state_damage_starts_empty(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct pass ps;
    run_pass(fx, st, NULL, START_NS, &ps);
    agent_state_close(st);

    /* A mangled CURRENT: RocksDB refuses it; the cache starts empty. */
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/CURRENT", fx->db);
    overwrite(p, "garbage-that-names-no-manifest\n");
    st = open_state(fx, true);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_NEW], N_FILES);
    agent_state_close(st);

    /* A format key from another build: starts empty too. */
    static const char *const cfs[] = {"meta", "mailboxes", "files", "seen"};
    struct cfr_err err;
    struct cfr_kv *kv = cfr_kv_open(fx->env, fx->db, cfs, 4, NULL, &err);
    assert_non_null(kv);
    assert_int_equal(
        cfr_kv_put(kv, 0, "format", 6, "coffer-agent-stateXXXX", 22, &err), 0);
    /* And a damaged record, which the reset makes moot; checked below. */
    cfr_kv_close(kv);
    st = open_state(fx, true);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.reads, N_FILES);
    agent_state_close(st);

    /* One damaged record: that file alone is read again. */
    kv = cfr_kv_open(fx->env, fx->db, cfs, 4, NULL, &err);
    assert_non_null(kv);
    uint8_t key[64];
    memset(key, 0, 4); /* mailbox number 0: the first one */
    memcpy(key + 4, "\0/dovecot-uidlist", 17);
    struct cfr_buf v;
    cfr_buf_init(&v, 1u << 20);
    assert_int_equal(cfr_kv_get(kv, 2, key, 21, &v, &err), 0);
    v.data[10] ^= 1; /* the size field: plausible, but the checksum fails */
    assert_int_equal(cfr_kv_put(kv, 2, key, 21, v.data, v.len, &err), 0);
    cfr_buf_fini(&v);
    cfr_kv_close(kv);
    st = open_state(fx, false);
    run_pass(fx, st, NULL, START_NS, &ps);
    assert_int_equal(ps.verdicts[AGENT_STATE_CHANGED], 1);
    assert_int_equal(ps.reads, 1);
    struct agent_state_stats stats;
    agent_state_stats(st, &stats);
    assert_int_equal(stats.damaged_records, 1);
    agent_state_close(st);
}

static void
test_state_refuses_foreign_dir(void **state)
{
    struct fixture *fx = *state;
    /* Damaged, and holding a sub-directory: not a flat RocksDB directory,
     * so the reset refuses to empty it and the user's file survives. */
    char p[PATH_MAX];
    assert_int_equal(mkdir(fx->db, 0700), 0);
    pathf(p, sizeof(p), "%s/CURRENT", fx->db);
    overwrite(p, "garbage\n");
    pathf(p, sizeof(p), "%s/keep", fx->db);
    assert_int_equal(mkdir(p, 0700), 0);
    pathf(p, sizeof(p), "%s/keep/precious.txt", fx->db);
    overwrite(p, "mine");
    struct agent_state *st = NULL;
    struct cfr_err err;
    assert_int_equal(agent_state_open(fx->env, fx->db, &st, &err), CFR_EINVAL);
    assert_null(st);
    assert_int_equal(access(p, R_OK), 0);
    pathf(p, sizeof(p), "%s/CURRENT", fx->db);
    assert_int_equal(access(p, R_OK), 0);
}

static void
test_state_bad_input(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct agent_state_run *run = NULL;
    struct cfr_err err;
    assert_int_equal(agent_state_begin(st, "", START_NS, &run, &err),
                     CFR_EINVAL);
    assert_null(run);
    assert_int_equal(agent_state_begin(st, MAILBOX, START_NS, &run, &err), 0);
    struct agent_state_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.kind = CFR_SNAP_OPAQUE;
    rec.n_chunks = CFR_SNAP_CHUNKS_MAX + 1;
    assert_int_equal(
        agent_state_record(run, (const uint8_t *)"\0/x", 3, &rec, &err),
        CFR_EINVAL);
    rec.n_chunks = 0;
    rec.kind = 0;
    assert_int_equal(
        agent_state_record(run, (const uint8_t *)"\0/x", 3, &rec, &err),
        CFR_EINVAL);
    struct agent_scan_entry e;
    memset(&e, 0, sizeof(e));
    e.status = AGENT_SCAN_ERROR;
    enum agent_state_verdict v;
    assert_int_equal(agent_state_lookup(run, &e, &v, &rec, &err), CFR_EINVAL);
    assert_int_equal(agent_state_end(run, &err), 0);
    agent_state_close(st);
}

/* Begins a run of mailbox; its parent into id (zeroed when none). */
static bool
parent_of(struct agent_state *st, const char *mailbox,
          struct agent_state_run **run_r, uint8_t id[CFR_SNAP_ID_LEN])
{
    struct cfr_err err;
    memset(id, 0, CFR_SNAP_ID_LEN);
    assert_int_equal(agent_state_begin(st, mailbox, START_NS, run_r, &err), 0);
    return agent_state_parent(*run_r, id);
}

static void
test_state_parent(void **state)
{
    struct fixture *fx = *state;
    struct agent_state *st = open_state(fx, false);
    struct agent_state_run *run = NULL;
    struct cfr_err err;
    uint8_t h[5][CFR_SNAP_ID_LEN], got[CFR_SNAP_ID_LEN],
        zero[CFR_SNAP_ID_LEN] = {0};
    for (int i = 0; i < 5; i++) {
        memset(h[i], 0xa0 + i, CFR_SNAP_ID_LEN);
    }

    /* A first backup has no parent; the next names the first. */
    assert_false(parent_of(st, MAILBOX, &run, got));
    assert_memory_equal(got, zero, CFR_SNAP_ID_LEN);
    assert_int_equal(agent_state_committing(run, h[0], &err), 0);
    assert_int_equal(agent_state_committed(run, h[0], &err), 0);
    assert_int_equal(agent_state_end(run, &err), 0);
    assert_true(parent_of(st, MAILBOX, &run, got));
    assert_memory_equal(got, h[0], CFR_SNAP_ID_LEN);
    /* A commit that failed (or whose outcome is unknown): no parent next
     * time rather than a stale one. */
    assert_int_equal(agent_state_committing(run, h[1], &err), 0);
    agent_state_run_free(run);
    assert_false(parent_of(st, MAILBOX, &run, got));
    /* Confirmed but the run failed after it: its batch is lost, same. */
    assert_int_equal(agent_state_committing(run, h[2], &err), 0);
    assert_int_equal(agent_state_committed(run, h[2], &err), 0);
    agent_state_run_free(run);
    assert_false(parent_of(st, MAILBOX, &run, got));
    assert_int_equal(agent_state_committing(run, h[3], &err), 0);
    assert_int_equal(agent_state_committed(run, h[3], &err), 0);
    assert_int_equal(agent_state_end(run, &err), 0);
    /* Survives a reopen; another mailbox has its own (none). */
    agent_state_close(st);
    st = open_state(fx, false);
    assert_true(parent_of(st, MAILBOX, &run, got));
    assert_memory_equal(got, h[3], CFR_SNAP_ID_LEN);
    agent_state_run_free(run);
    assert_false(parent_of(st, "bob@example.com", &run, got));
    assert_int_equal(agent_state_committing(run, h[4], &err), 0);
    assert_int_equal(agent_state_committed(run, h[4], &err), 0);
    assert_int_equal(agent_state_end(run, &err), 0);
    agent_state_close(st);

    /* The record as stored (state.h): meta "head" || be32(0). */
    static const char *const cfs[] = {"meta", "mailboxes", "files", "seen"};
    static const uint8_t key[8] = {'h', 'e', 'a', 'd', 0, 0, 0, 0};
    struct cfr_kv *kv = cfr_kv_open(fx->env, fx->db, cfs, 4, NULL, &err);
    struct cfr_buf v;
    assert_non_null(kv);
    cfr_buf_init(&v, 256);
    assert_int_equal(cfr_kv_get(kv, 0, key, sizeof(key), &v, &err), 0);
    assert_int_equal(v.len, 44);
    assert_int_equal(v.data[1], 2); /* committed */
    assert_memory_equal(v.data + 4, h[3], CFR_SNAP_ID_LEN);
    /* A flipped bit in the ID: the checksum refuses it, no parent. */
    v.data[9] ^= 1;
    assert_int_equal(cfr_kv_put(kv, 0, key, sizeof(key), v.data, v.len, &err),
                     0);
    cfr_kv_close(kv);
    st = open_state(fx, false);
    assert_false(parent_of(st, MAILBOX, &run, got));
    assert_memory_equal(got, zero, CFR_SNAP_ID_LEN);
    struct agent_state_stats stats;
    agent_state_stats(st, &stats);
    assert_int_equal(stats.damaged_records, 1);
    agent_state_run_free(run);
    /* bob's record is untouched by alice's damage. */
    assert_true(parent_of(st, "bob@example.com", &run, got));
    assert_memory_equal(got, h[4], CFR_SNAP_ID_LEN);
    agent_state_run_free(run);
    agent_state_close(st);

    /* A state written before head records: no parent, nothing else. */
    kv = cfr_kv_open(fx->env, fx->db, cfs, 4, NULL, &err);
    assert_non_null(kv);
    assert_int_equal(cfr_kv_delete(kv, 0, key, sizeof(key), &err), 0);
    cfr_kv_close(kv);
    st = open_state(fx, false);
    assert_false(parent_of(st, MAILBOX, &run, got));
    assert_int_equal(agent_state_generation(run), 7);
    agent_state_run_free(run);
    agent_state_close(st);
    cfr_buf_fini(&v);
}

/* ---- a realistic store: bench/gen_corpus and its --evolve ---------------- */

/* Runs gen_corpus (beside this binary's build tree) with args. */
static bool
run_gen(const char *const *args)
{
    char self[PATH_MAX];
    char gen[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    assert_non_null(slash);
    *slash = '\0';
    pathf(gen, sizeof(gen), "%s/../bench/gen_corpus", self);
    if (access(gen, X_OK) != 0) {
        return false;
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[16];
        size_t i = 0;
        argv[i++] = gen;
        for (; args[i - 1] != NULL && i < 15; i++) {
            argv[i] = args[i - 1];
        }
        argv[i] = NULL;
        execv(gen, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return true;
}

struct corpus_pass {
    struct agent_state *st;
    int64_t start_ns;
    uint64_t verdicts[4];
    uint64_t changed_messages; /* CHANGED on an immutable message: a bug */
    uint64_t new_messages;
    uint64_t unseen;
    uint64_t files;
    uint64_t errors;
    size_t mailboxes;
};

struct corpus_run {
    struct corpus_pass *cp;
    struct pass ps;
};

static int
corpus_entry_cb(void *ctx, const struct agent_scan_entry *e)
{
    struct corpus_run *cr = ctx;
    uint64_t changed = cr->ps.verdicts[AGENT_STATE_CHANGED];
    uint64_t added = cr->ps.verdicts[AGENT_STATE_NEW];
    int rc = pass_cb(&cr->ps, e);
    if (e->kind == CFR_SNAP_MAILDIR_MESSAGE) {
        cr->cp->changed_messages +=
            cr->ps.verdicts[AGENT_STATE_CHANGED] - changed;
        cr->cp->new_messages += cr->ps.verdicts[AGENT_STATE_NEW] - added;
    }
    return rc;
}

static int
corpus_mailbox_cb(void *ctx, const char *name, const char *mroot)
{
    struct corpus_pass *cp = ctx;
    struct corpus_run cr;
    struct cfr_err err;
    memset(&cr, 0, sizeof(cr));
    cr.cp = cp;
    assert_int_equal(
        agent_state_begin(cp->st, name, cp->start_ns, &cr.ps.run, &err), 0);
    struct agent_scan_summary sum;
    assert_int_equal(
        agent_scan_run(mroot, NULL, corpus_entry_cb, &cr, &sum, &err), 0);
    uint64_t n = 0;
    assert_int_equal(
        agent_state_unseen(cr.ps.run, count_unseen_cb, &n, NULL, &err), 0);
    assert_int_equal(agent_state_end(cr.ps.run, &err), 0);
    for (int i = 0; i < 4; i++) {
        cp->verdicts[i] += cr.ps.verdicts[i];
    }
    cp->unseen += n;
    cp->files += sum.files;
    cp->errors += sum.errors + sum.skipped;
    cp->mailboxes++;
    return 0;
}

static void
corpus_pass(struct fixture *fx, struct agent_state *st, const char *out,
            struct corpus_pass *cp)
{
    char pat[PATH_MAX];
    struct cfr_err err;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    memset(cp, 0, sizeof(*cp));
    cp->st = st;
    /* Past every generated mtime (they end near 2026-11-01 plus the
     * evolve window), so that nothing is racy. */
    cp->start_ns = (int64_t)now.tv_sec * 1000000000;
    if (cp->start_ns < INT64_C(1798761600) * 1000000000) {
        cp->start_ns = INT64_C(1798761600) * 1000000000; /* 2027-01-01 */
    }
    (void)fx;
    pathf(pat, sizeof(pat), "%s/%%d/%%n/Maildir", out);
    assert_int_equal(
        agent_mailbox_expand(pat, corpus_mailbox_cb, cp, NULL, &err), 0);
}

/* Message identities of a tree, found independently of the scanner:
 * "<mailbox path>/<folder>/<base>" for every file in a cur/ or new/. */
static char **ids_v;
static size_t ids_n;
static size_t ids_cap;

static int
ids_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    if (flag != FTW_F || f->base < 5) {
        return 0;
    }
    const char *dir = p + f->base - 5; /* "/cur/" or "/new/" */
    if (strncmp(dir, "/cur/", 5) != 0 && strncmp(dir, "/new/", 5) != 0) {
        return 0;
    }
    if (ids_n == ids_cap) {
        ids_cap = ids_cap == 0 ? 1024 : 2 * ids_cap;
        ids_v = realloc(ids_v, ids_cap * sizeof(*ids_v));
        assert_non_null(ids_v);
    }
    const char *name = p + f->base;
    size_t blen = strcspn(name, ":");
    char id[PATH_MAX];
    pathf(id, sizeof(id), "%.*s/%.*s", (int)(dir - p), p, (int)blen, name);
    ids_v[ids_n] = strdup(id);
    assert_non_null(ids_v[ids_n]);
    ids_n++;
    return 0;
}

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
ids_collect(const char *root, char ***v_r, size_t *n_r)
{
    ids_v = NULL;
    ids_n = 0;
    ids_cap = 0;
    assert_int_equal(nftw(root, ids_cb, 32, FTW_PHYS), 0);
    qsort(ids_v, ids_n, sizeof(*ids_v), str_cmp);
    *v_r = ids_v;
    *n_r = ids_n;
}

/* How many of a[] are not in b[] (both sorted). */
static size_t
ids_minus(char **a, size_t an, char **b, size_t bn)
{
    size_t n = 0;
    size_t j = 0;
    for (size_t i = 0; i < an; i++) {
        while (j < bn && strcmp(b[j], a[i]) < 0) {
            j++;
        }
        n += !(j < bn && strcmp(b[j], a[i]) == 0);
    }
    return n;
}

static void
ids_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

static void
test_state_gen_corpus_evolve(void **state)
{
    struct fixture *fx = *state;
    char out[PATH_MAX];
    pathf(out, sizeof(out), "%s/corpus", fx->tmp);
    const char *gen_args[] = {
        "--domains", "2",       "--users", "3", "--messages-per-user",
        "60",        "--quiet", out,       NULL};
    if (!run_gen(gen_args)) {
        print_message("bench/gen_corpus not built: skipped\n");
        return;
    }
    struct agent_state *st = open_state(fx, false);
    struct corpus_pass cp;
    corpus_pass(fx, st, out, &cp);
    assert_int_equal(cp.mailboxes, 6);
    assert_int_equal(cp.errors, 0);
    assert_true(cp.files > 6 * 60);
    assert_int_equal(cp.verdicts[AGENT_STATE_NEW], cp.files);

    /* A day of mail: arrivals, reads (new/ -> cur/ with flags), flag
     * changes, deletions, uidlists rewritten. */
    char **before = NULL;
    size_t n_before = 0;
    ids_collect(out, &before, &n_before);
    assert_int_equal(cp.new_messages, n_before);
    const char *evolve_args[] = {"--evolve", "24", "--quiet", out, NULL};
    assert_true(run_gen(evolve_args));
    char **after = NULL;
    size_t n_after = 0;
    ids_collect(out, &after, &n_after);
    size_t added = ids_minus(after, n_after, before, n_before);
    size_t removed = ids_minus(before, n_before, after, n_after);
    corpus_pass(fx, st, out, &cp);
    assert_int_equal(cp.errors, 0);
    /* Exactly the arrivals are read, exactly the expunges are listed. */
    assert_true(added > 0 && removed > 0);
    assert_int_equal(cp.new_messages, added);
    assert_int_equal(cp.unseen, removed);
    assert_true(cp.verdicts[AGENT_STATE_RENAMED] > 0); /* flags, reads */
    ids_free(before, n_before);
    ids_free(after, n_after);
    /* Messages never change in place: only metadata files are re-read
     * besides arrivals. */
    assert_int_equal(cp.changed_messages, 0);
    assert_true(cp.verdicts[AGENT_STATE_CHANGED] <= 6 * 16);
    print_message(
        "evolve 24h over %" PRIu64 " files: new %" PRIu64 " changed %" PRIu64
        " renamed %" PRIu64 " unchanged %" PRIu64 " deleted %" PRIu64 "\n",
        cp.files, cp.verdicts[AGENT_STATE_NEW],
        cp.verdicts[AGENT_STATE_CHANGED], cp.verdicts[AGENT_STATE_RENAMED],
        cp.verdicts[AGENT_STATE_UNCHANGED], cp.unseen);
    agent_state_close(st);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_runs_and_flag_storm, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_deletions_and_changes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_rename_during_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_errors_keep_files, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_racy_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_damage_starts_empty, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_refuses_foreign_dir, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_gen_corpus_evolve, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
