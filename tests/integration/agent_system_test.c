/*
 * agent_system_test.c - the real coffer-agent, coffer-restore and
 * coffer-vault programs together, under the failures issue 4 lists:
 *
 *  1. kill -9 at random points during a backup of a generated store
 *     (bench/gen_corpus, three mailboxes, two vaults): after each kill,
 *     every snapshot a vault lists restores exactly (nothing half-made is
 *     visible), then a full run exits 0 and coffer-restore brings back
 *     every mailbox byte for byte (names with flags, contents, modes,
 *     mtimes). The first kill waits until the vault's statistics show most
 *     of the store uploaded, and the rerun must then send well under the
 *     store's size. Between kills the store evolves (gen_corpus --evolve),
 *     so later runs have new mail in flight when they are killed.
 *  2. Three vaults: quorum 2 with one stopped exits 5, names the stopped
 *     vault unreachable, and the snapshot is on the two others; quorum 3
 *     with one stopped exits 1 and no vault gets a snapshot; every vault
 *     down exits 1 quickly, saying why.
 *  3. A mutator thread delivers (tmp/ then new/), renames flags, moves
 *     new/ to cur/ and deletes for the whole run; the restored snapshot
 *     holds each message at most once, under a name it had during the
 *     run, with the bytes it was delivered with; every message that was
 *     there before the run and never deleted is in it.
 *
 * Seeds are printed (COFFER_TEST_SEED replays one). Bounds: 10 kill points
 * (COFFER_SYSTEM_KILLS), 3 mutator rounds and a still one; a sanitizer
 * build gets a smaller store. 20-60 s in a RelWithDebInfo build on two
 * cores (most of it the kill -9 part: 10 x kill, rerun, 3 restores).
 */
#define _GNU_SOURCE /* nanosecond stat fields, pthread */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs, trees */
#include "mem.h"                  /* cfr_malloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "vault_client_support.h" /* vc_now_ms, vc_sleep_ms */
#include "vault_support.h"        /* the harness */

#if defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLOW_BUILD 1
#endif
#endif
#ifndef SLOW_BUILD
#define SLOW_BUILD 0
#endif

#define N_VAULTS  3
#define ESCROW_PW "system test escrow passphrase"
#define RUN_MS    120000
#define FMT(buf, ...)                                                          \
    assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static int ports[N_VAULTS];
static char dir[VS_PATH_MAX + 64]; /* the agent's and the tests' files */
static char key_file[VS_PATH_MAX + 96], pass_file[VS_PATH_MAX + 96],
    escrow[VS_PATH_MAX + 96], escrow_pass[VS_PATH_MAX + 96];
static char restore_conf[N_VAULTS][VS_PATH_MAX + 96];
static uint64_t seed;
static unsigned run_no; /* unique output file names */

/* ---- small helpers ------------------------------------------------------ */

static uint64_t
rnd(uint64_t *s)
{
    /* splitmix64: reproducible from the printed seed */
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* One program run's output. */
struct out {
    int code;
    char *out, *err;
    int64_t ms;
};

static void
out_fini(struct out *o)
{
    cfr_free(o->out);
    cfr_free(o->err);
    memset(o, 0, sizeof(*o));
}

static void
out_paths(unsigned n, char *op, char *ep, size_t len)
{
    assert_true((size_t)snprintf(op, len, "%s/run%u.out", dir, n) < len);
    assert_true((size_t)snprintf(ep, len, "%s/run%u.err", dir, n) < len);
}

static pid_t
start(const char *bin, const char *const *args, unsigned *n_r)
{
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    *n_r = ++run_no;
    out_paths(*n_r, op, ep, sizeof(op));
    pid_t pid = ars_spawn(bin, args, op, ep);
    assert_true(pid > 0);
    return pid;
}

static void
collect(unsigned n, int code, struct out *o)
{
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    out_paths(n, op, ep, sizeof(op));
    o->code = code;
    o->out = ars_slurp(op, NULL);
    o->err = ars_slurp(ep, NULL);
    assert_non_null(o->out);
    assert_non_null(o->err);
}

static void
run(const char *bin, const char *const *args, struct out *o)
{
    unsigned n;
    int64_t t0 = vc_now_ms();
    int code = ars_wait(start(bin, args, &n), RUN_MS);
    collect(n, code, o);
    o->ms = vc_now_ms() - t0;
}

static void
expect(const struct out *o, int code, const char *what)
{
    if (o->code != code) {
        fail_msg("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what,
                 o->code, code, o->out, o->err);
    }
}

static void
agent_conf(const char *path, const char *state, size_t n_vaults,
           unsigned quorum, const char *mailboxes)
{
    struct ars_agent_conf c = {env.dir, key_file, pass_file, state,    dir,
                               ports,   n_vaults, quorum,    mailboxes};
    assert_int_equal(ars_agent_conf_write(path, &c), 0);
}

/* Restores mailbox from vault v into a fresh directory and compares it
 * with src; returns the number of files. */
static long
restore_check(const char *mailbox, const char *src, size_t v, const char *tag)
{
    char to[VS_PATH_MAX + 160], why[1024];
    struct out o;
    FMT(to, "%s/restored-%s", dir, tag);
    ars_rm_tree(to);
    const char *args[] = {"--config",  restore_conf[v], "restore",
                          "--mailbox", mailbox,         "--to",
                          to,          "--json",        NULL};
    run(COFFER_RESTORE_BIN, args, &o);
    expect(&o, 0, "restore");
    assert_non_null(strstr(o.out, "\"ok\":true"));
    out_fini(&o);
    long n = ars_tree_compare(src, to, why, sizeof(why));
    if (n < 0) {
        fail_msg("%s from vault-%c (%s): %s", mailbox, (char)('a' + v), tag,
                 why);
    }
    ars_rm_tree(to);
    return n;
}

/*
 * The snapshot rows of `coffer-agent snapshots --json`: per mailbox name,
 * each header ID with the vaults holding it (a bit mask).
 */
#define ROWS_MAX 256
struct row {
    char mailbox[128];
    char id[65];
    unsigned on;
};
struct rows {
    struct row v[ROWS_MAX];
    size_t n;
};

static void
list_snapshots(const char *conf, int want_code, struct rows *r)
{
    struct out o;
    const char *args[] = {"snapshots", "--config", conf, "--json", NULL};
    run(COFFER_AGENT_BIN, args, &o);
    expect(&o, want_code, "snapshots");
    r->n = 0;
    const char *p = o.out;
    char name[128] = "";
    for (;;) {
        const char *mb = strstr(p, "\n{\"name\":\"");
        const char *hd = strstr(p, "{\"header_id\":\"");
        if (hd == NULL) {
            break;
        }
        if (mb != NULL && mb < hd) {
            assert_true(ars_json_str(mb, NULL, "name", name, sizeof(name)));
            p = mb + 1;
            continue;
        }
        assert_true(r->n < ROWS_MAX);
        struct row *w = &r->v[r->n++];
        FMT(w->mailbox, "%s", name);
        assert_true(ars_json_str(hd, NULL, "header_id", w->id, sizeof(w->id)));
        const char *vs = strstr(hd, "\"vaults\":[");
        const char *ve = vs != NULL ? strchr(vs, ']') : NULL;
        if (vs == NULL || ve == NULL) {
            fail_msg("snapshots --json: a snapshot without its vaults");
            break;
        }
        w->on = 0;
        for (size_t v = 0; v < N_VAULTS; v++) {
            char q[32];
            FMT(q, "\"vault-%c\"", (char)('a' + v));
            const char *f = strstr(vs, q);
            if (f != NULL && f < ve) {
                w->on |= 1u << v;
            }
        }
        p = ve;
    }
    out_fini(&o);
}

static const struct row *
rows_find(const struct rows *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].id, id) == 0) {
            return &r->v[i];
        }
    }
    return NULL;
}

static void
mk(const char *path)
{
    assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    struct cfr_err err;
    (void)state;
    const char *s = getenv("COFFER_TEST_SEED");
    seed = s != NULL ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr,
            "agent_system_test: seed %" PRIu64
            " (COFFER_TEST_SEED to replay)\n",
            seed);
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0) {
        return -1;
    }
    for (int i = 0; i < N_VAULTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "v%d", i);
        if (vs_vault_init(&vaults[i], &env, name) != 0 ||
            vs_vault_start(&vaults[i], 20000) != 0) {
            return -1;
        }
        ports[i] = vaults[i].port;
    }
    snprintf(dir, sizeof(dir), "%s/agent", env.dir);
    snprintf(key_file, sizeof(key_file), "%s/agent.key", dir);
    snprintf(pass_file, sizeof(pass_file), "%s/agent.pass", dir);
    snprintf(escrow, sizeof(escrow), "%s/escrow.key", dir);
    snprintf(escrow_pass, sizeof(escrow_pass), "%s/escrow.pass", dir);
    if (mkdir(dir, 0700) != 0 || ars_write(escrow_pass, ESCROW_PW "\n",
                                           strlen(ESCROW_PW) + 1, 0600) != 0) {
        return -1;
    }
    for (size_t v = 0; v < N_VAULTS; v++) {
        snprintf(restore_conf[v], sizeof(restore_conf[v]), "%s/restore-%c.conf",
                 dir, (char)('a' + v));
        if (ars_restore_conf_write(restore_conf[v], env.dir, escrow,
                                   escrow_pass, ports[v]) != 0) {
            return -1;
        }
    }
    /* One tenant key for every test: init once. */
    char conf[VS_PATH_MAX + 96], st[VS_PATH_MAX + 96], mb[VS_PATH_MAX + 128];
    snprintf(conf, sizeof(conf), "%s/init.conf", dir);
    snprintf(st, sizeof(st), "%s/init-state", dir);
    /* init reads a whole configuration, which must name a mailbox. */
    snprintf(mb, sizeof(mb),
             "mailboxes = ( { name = \"init@example.org\"; root = \"%s\"; } );",
             dir);
    struct ars_agent_conf c = {env.dir, key_file, pass_file, st, dir,
                               ports,   1,        0,         mb};
    const char *args[] = {"init",      "--config", conf,
                          "--escrow",  escrow,     "--escrow-passphrase-file",
                          escrow_pass, NULL};
    if (ars_agent_conf_write(conf, &c) != 0 ||
        ars_run(COFFER_AGENT_BIN, args, NULL, NULL, RUN_MS) != 0) {
        fprintf(stderr, "agent_system_test: init failed\n");
        return -1;
    }
    return 0;
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

/* ---- 1. kill -9 at random points ---------------------------------------- */

#define KILL_USERS 3

struct kmb {
    char name[128];
    char root[VS_PATH_MAX + 256];
};

/* The mailboxes gen_corpus made: corpus/<domain>/<user>/Maildir. */
static size_t
corpus_mailboxes(const char *corpus, struct kmb *m, size_t max)
{
    size_t n = 0;
    DIR *d = opendir(corpus);
    struct dirent *de;
    char dom[128] = "";
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            FMT(dom, "%s", de->d_name);
        }
    }
    closedir(d);
    char dpath[VS_PATH_MAX + 256];
    FMT(dpath, "%s/%s", corpus, dom);
    d = opendir(dpath);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL && n < max) {
        if (de->d_name[0] != '.') {
            FMT(m[n].name, "%s@%s", de->d_name, dom);
            FMT(m[n].root, "%s/%s/Maildir", dpath, de->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* When vault v last rewrote its statistics file. */
static int64_t
stats_mtime_ns(size_t v)
{
    char p[VS_PATH_MAX + 64];
    struct stat sb;
    FMT(p, "%s/vault.prom", vaults[v].dir);
    if (stat(p, &sb) != 0) {
        return 0;
    }
    return (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
}

static uint64_t
put_bytes(size_t v)
{
    char p[VS_PATH_MAX + 64];
    uint64_t x = 0;
    FMT(p, "%s/vault.prom", vaults[v].dir);
    (void)ars_prom_u64(p, "coffer_vault_put_bytes_total", &x);
    return x;
}

static void
test_kill9(void **state)
{
    (void)state;
    char corpus[VS_PATH_MAX + 64], conf[VS_PATH_MAX + 96], st[VS_PATH_MAX + 96],
        mb[VS_PATH_MAX + 128], sd[32], mpu[16];
    uint64_t rng = seed ^ 0x4b494c4cu;
    struct kmb m[KILL_USERS];
    struct rows *known = cfr_calloc(1, sizeof(*known));
    struct rows *now = cfr_calloc(1, sizeof(*now));
    unsigned kills = 10, interrupted = 0;
    int64_t t_start = vc_now_ms(), last_ms = 0;
    struct out o;

    assert_non_null(known);
    assert_non_null(now);
    const char *ke = getenv("COFFER_SYSTEM_KILLS");
    if (ke != NULL) {
        long kv = strtol(ke, NULL, 10);
        if (kv > 0 && kv < 1000) {
            kills = (unsigned)kv;
        }
    }
    FMT(corpus, "%s/corpus", env.dir);
    FMT(sd, "%" PRIu64, seed % 100000);
    FMT(mpu, "%d", SLOW_BUILD ? 80 : 200);
    /* Capped: the agent seals at a few MB/s on a small CI machine. */
    const char *cap = SLOW_BUILD ? "8M" : "16M";
    const char *gen[] = {"--seed",
                         sd,
                         "--domains",
                         "1",
                         "--users",
                         "3",
                         "--messages-per-user",
                         mpu,
                         "--lists",
                         "2",
                         "--list-members",
                         "2",
                         "--size",
                         cap,
                         "--quiet",
                         corpus,
                         NULL};
    assert_int_equal(ars_gen_corpus(gen), 0);
    assert_int_equal(corpus_mailboxes(corpus, m, KILL_USERS), KILL_USERS);
    FMT(conf, "%s/kill.conf", dir);
    FMT(st, "%s/kill-state", dir);
    FMT(mb, "mailbox_pattern = \"%s/%%d/%%n/Maildir\";", corpus);
    agent_conf(conf, st, 2, 0, mb);
    const char *bj[] = {"backup", "--config", conf, "--json", NULL};

    for (unsigned k = 0; k < kills; k++) {
        if (k > 0) {
            /* New mail in flight for this run. */
            char es[32];
            FMT(es, "%" PRIu64, (seed + k) % 100000);
            const char *ev[] = {
                "--evolve", "2",       "--seed", es,  "--arrivals-per-day",
                "100",      "--quiet", corpus,   NULL};
            assert_int_equal(ars_gen_corpus(ev), 0);
        }
        uint64_t store = ars_tree_bytes(corpus);
        uint64_t before = put_bytes(0);
        unsigned n;
        pid_t pid = start(COFFER_AGENT_BIN, bj, &n);
        int code = -1;
        const char *how;
        long delay = 0;
        if (k == 0) {
            /*
             * Late in the first, full upload: once vault-a stored a
             * quarter of the store's raw size. Sealed, this corpus is
             * about 43 % of its raw size, so that is past half of the
             * upload. The statistics file is rewritten only every 500 ms,
             * and a fast machine uploads the store in about a second, so
             * the agent runs in 20 ms steps, stopped (SIGSTOP) until the
             * next rewrite shows where the vault is.
             */
            how = "vault-a stored a quarter of the store";
            int64_t deadline = vc_now_ms() + RUN_MS;
            while ((code = ars_poll(pid)) < 0 &&
                   put_bytes(0) - before < store / 4 &&
                   vc_now_ms() < deadline) {
                assert_int_equal(kill(pid, SIGCONT), 0);
                vc_sleep_ms(20);
                assert_int_equal(kill(pid, SIGSTOP), 0);
                int64_t was = stats_mtime_ns(0), until = vc_now_ms() + 2000;
                while (stats_mtime_ns(0) == was && vc_now_ms() < until) {
                    vc_sleep_ms(10);
                }
            }
        } else {
            how = "random delay";
            /* Within the last full run's time: this one has new mail
             * to send too, so the kill nearly always cuts it short. */
            long span = (long)(last_ms * 8 / 10) + 20;
            delay = (long)(rnd(&rng) % (uint64_t)span);
            int64_t until = vc_now_ms() + delay;
            while ((code = ars_poll(pid)) < 0 && vc_now_ms() < until) {
                vc_sleep_ms(2);
            }
        }
        if (code < 0) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            code = ars_wait(pid, 10000);
        }
        uint64_t stored = put_bytes(0) - before;
        fprintf(stderr,
                "kill %u: %s (%ld ms): %s; vault-a stored %" PRIu64
                " bytes before it\n",
                k, how, delay,
                code == 128 + SIGKILL ? "killed" : "had finished", stored);
        if (code == 128 + SIGKILL) {
            interrupted++;
        } else {
            collect(n, code, &o);
            expect(&o, 0, "a run that finished before its kill");
            out_fini(&o);
        }

        /* Nothing half-made: every snapshot listed restores exactly. */
        list_snapshots(conf, 0, now);
        unsigned fresh[KILL_USERS] = {0};
        for (size_t i = 0; i < now->n; i++) {
            const struct row *r = &now->v[i];
            if (rows_find(known, r->id) != NULL) {
                continue;
            }
            size_t u = 0;
            while (u < KILL_USERS && strcmp(m[u].name, r->mailbox) != 0) {
                u++;
            }
            assert_true(u < KILL_USERS);
            /* One run commits at most one snapshot per mailbox. */
            assert_int_equal(++fresh[u], 1);
            if (r->on != 3u) {
                fprintf(stderr,
                        "kill %u: %s committed on vault mask %u only (killed "
                        "between the vaults' commits)\n",
                        k, r->mailbox, r->on);
            }
            size_t v = (r->on & 1u) != 0 ? 0 : 1;
            char tag[32];
            FMT(tag, "k%u-%zu", k, u);
            /* The newest on that vault is this one: nothing newer ran. */
            (void)restore_check(r->mailbox, m[u].root, v, tag);
        }

        /* The run again, to the end. */
        run(COFFER_AGENT_BIN, bj, &o);
        expect(&o, 0, "the run after a kill");
        uint64_t sent = 0, committed = 0;
        assert_true(ars_json_u64(o.out, "\"totals\"", "bytes_sent", &sent));
        assert_true(ars_json_u64(o.out, "\"totals\"", "committed", &committed));
        assert_int_equal(committed, KILL_USERS);
        last_ms = o.ms;
        fprintf(stderr,
                "kill %u: rerun sent %" PRIu64 " of %" PRIu64
                " store bytes in %lld ms\n",
                k, sent, store, (long long)o.ms);
        if (k == 0 && code == 128 + SIGKILL) {
            /* What reached the vaults before the kill is not sent again:
             * sending everything again would be about 0.43 of the store,
             * the rest after a kill past half the upload under 0.2. (A
             * run so fast that it finished within one 20 ms step is
             * counted as not interrupted below instead.) */
            assert_true(sent < store / 3);
        }
        out_fini(&o);
        for (size_t u = 0; u < KILL_USERS; u++) {
            char tag[32];
            FMT(tag, "full%u-%zu", k, u);
            assert_true(restore_check(m[u].name, m[u].root, k % 2, tag) > 0);
        }
        list_snapshots(conf, 0, known);
    }
    /* Kill points must really cut runs short (a third at least, so a
     * loaded machine does not make this flaky; typically 8 of 10). */
    fprintf(stderr, "kill -9: %u of %u runs interrupted, %lld ms\n",
            interrupted, kills, (long long)(vc_now_ms() - t_start));
    assert_true(interrupted * 3 >= kills);
    cfr_free(known);
    cfr_free(now);
}

/* ---- 3. a concurrent mutator -------------------------------------------- */

#define MUT_INITIAL 300
#define MUT_MAX     2000
#define MUT_NAMES   16
#define MUT_ROUNDS  3

/* One message identity and every name it had. */
struct msg {
    char base[64];
    uint32_t len;
    /* Every name it ever had, relative: "new/BASE", "cur/BASE:2,S". A
     * snapshot may hold an older round's name: a file that vanishes
     * before its read keeps its previous version (backup.h, 3). */
    char names[MUT_NAMES][96];
    unsigned n_names;
    bool deleted;
    bool touched;      /* renamed or deleted in this round */
    bool before_round; /* existed when the round started */
    bool in_prev;      /* in the previous snapshot (so in the agent's cache) */
};

struct mutator {
    char root[VS_PATH_MAX + 64];
    struct msg *m;
    size_t n;
    uint64_t rng;
    atomic_bool stop;
    unsigned ops, errors;
};

/* Deterministic contents from the identity's index. */
static char *
msg_bytes(size_t i, uint32_t len)
{
    char *p = cfr_malloc(len);
    uint64_t x = (uint64_t)i * 2654435761u + 99;
    int h;
    assert_non_null(p);
    h = snprintf(p, len,
                 "From: s%zu@example.net\r\nTo: mut@example.org\r\n"
                 "Message-ID: <mut-%zu@example.net>\r\nSubject: %zu\r\n\r\n",
                 i, i, i);
    for (uint32_t k = (uint32_t)h; k < len; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[k] = (k % 70 == 69) ? '\n' : (char)('a' + x % 26);
    }
    return p;
}

static const char *
cur_name(struct msg *g)
{
    return g->names[g->n_names - 1];
}

/* Delivers message i: written in tmp/, renamed into new/. 0 / -1. */
static int
deliver(struct mutator *mu, size_t i)
{
    struct msg *g = &mu->m[i];
    char t[VS_PATH_MAX + 200], d[VS_PATH_MAX + 200];
    snprintf(g->base, sizeof(g->base), "%u.M%zuP77.mut",
             1767225600u + (unsigned)i, i);
    g->len = 600 + (uint32_t)(rnd(&mu->rng) % 6000);
    if (i % 40 == 0) {
        g->len += 300000; /* a few large ones keep the workers busy */
    }
    snprintf(g->names[0], sizeof(g->names[0]), "new/%s", g->base);
    g->n_names = 1;
    snprintf(t, sizeof(t), "%s/tmp/%s", mu->root, g->base);
    snprintf(d, sizeof(d), "%s/%s", mu->root, g->names[0]);
    char *p = msg_bytes(i, g->len);
    int rc = ars_write(t, p, g->len, 0600);
    cfr_free(p);
    return rc == 0 && rename(t, d) == 0 ? 0 : -1;
}

static int
rename_to(struct mutator *mu, struct msg *g, const char *to)
{
    char a[VS_PATH_MAX + 200], b[VS_PATH_MAX + 200];
    snprintf(a, sizeof(a), "%s/%s", mu->root, cur_name(g));
    snprintf(b, sizeof(b), "%s/%s", mu->root, to);
    if (rename(a, b) != 0) {
        return -1;
    }
    snprintf(g->names[g->n_names++], sizeof(g->names[0]), "%s", to);
    g->touched = true;
    return 0;
}

static void *
mutate(void *arg)
{
    struct mutator *mu = arg;
    static const char *const flags[] = {"S", "RS", "FRS", "FS", "T"};
    while (!atomic_load(&mu->stop) && mu->n < MUT_MAX) {
        uint64_t r = rnd(&mu->rng) % 100;
        size_t i = (size_t)(rnd(&mu->rng) % mu->n);
        struct msg *g = &mu->m[i];
        int rc = 0;
        if (r < 30) {
            rc = deliver(mu, mu->n);
            mu->n++;
        } else if (g->deleted || g->n_names == MUT_NAMES) {
            continue;
        } else if (r < 80) {
            /* A flag change, or new/ -> cur/ (what an IMAP client does). */
            char to[96];
            snprintf(to, sizeof(to), "cur/%s:2,%s", g->base,
                     flags[rnd(&mu->rng) % 5]);
            if (strcmp(to, cur_name(g)) == 0) {
                continue;
            }
            rc = rename_to(mu, g, to);
        } else {
            char a[VS_PATH_MAX + 200];
            snprintf(a, sizeof(a), "%s/%s", mu->root, cur_name(g));
            rc = unlink(a);
            g->deleted = true;
            g->touched = true;
        }
        if (rc != 0) {
            mu->errors++;
        }
        mu->ops++;
        /* Pacing, not synchronisation: spread the changes over the run. */
        vc_sleep_ms(1);
    }
    return NULL;
}

/* The identity's index from a name "SECS.M<i>P77.mut[:2,FLAGS]". */
static bool
msg_index(const char *name, size_t *i_r)
{
    const char *m = strstr(name, ".M");
    char *end = NULL;
    if (m == NULL) {
        return false;
    }
    errno = 0;
    unsigned long long x = strtoull(m + 2, &end, 10);
    if (errno != 0 || end == m + 2 || strncmp(end, "P77.mut", 7) != 0 ||
        (end[7] != '\0' && end[7] != ':')) {
        return false;
    }
    *i_r = (size_t)x;
    return true;
}

/* Checks the restored tree at to against the mutator's log. */
static void
check_restore(struct mutator *mu, const char *to, unsigned round)
{
    bool *seen = cfr_calloc(mu->n + 1, 1);
    unsigned *as = cfr_calloc(mu->n + 1, sizeof(*as)); /* name index */
    unsigned found = 0;
    assert_non_null(seen);
    assert_non_null(as);
    static const char *const subs[] = {"new", "cur"};
    for (size_t s = 0; s < 2; s++) {
        char p[VS_PATH_MAX + 200];
        FMT(p, "%s/%s", to, subs[s]);
        DIR *d = opendir(p);
        struct dirent *de;
        assert_non_null(d);
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            size_t i = 0;
            if (!msg_index(de->d_name, &i) || i >= mu->n) {
                fail_msg("round %u: unknown file %s/%s", round, subs[s],
                         de->d_name);
            }
            struct msg *g = &mu->m[i];
            char rel[128];
            FMT(rel, "%s/%s", subs[s], de->d_name);
            bool had = false;
            unsigned k = 0;
            for (; k < g->n_names && !had; k++) {
                had = strcmp(g->names[k], rel) == 0;
            }
            as[i] = k - 1;
            if (!had) {
                fail_msg("round %u: %s is a name message %zu never had", round,
                         rel, i);
            }
            if (seen[i]) {
                fail_msg("round %u: message %zu restored twice (%s)", round, i,
                         rel);
            }
            seen[i] = true;
            found++;
            char full[VS_PATH_MAX + 300];
            size_t len = 0;
            FMT(full, "%s/%s", p, de->d_name);
            char *got = ars_slurp(full, &len);
            char *want = msg_bytes(i, g->len);
            assert_non_null(got);
            if (len != g->len || memcmp(got, want, len) != 0) {
                fail_msg("round %u: message %zu restored with other bytes",
                         round, i);
            }
            cfr_free(got);
            cfr_free(want);
        }
        closedir(d);
    }
    unsigned untouched = 0, renamed = 0;
    for (size_t i = 0; i < mu->n; i++) {
        struct msg *g = &mu->m[i];
        if (!g->before_round || g->deleted) {
            continue; /* delivered or deleted during the run: either way */
        }
        /*
         * No phantom deletion: there before, never deleted. A message
         * renamed between the scan and its read, even one the cache does
         * not know, is looked up again under its new name, never left out.
         */
        if (!seen[i]) {
            fail_msg("round %u: message %zu (%s, %u names%s%s) is missing",
                     round, i, cur_name(g), g->n_names,
                     g->touched ? ", renamed during the run" : "",
                     g->in_prev ? ", in the previous snapshot" : "");
        }
        if (g->touched) {
            renamed++;
        } else {
            /* Untouched for the whole run: under the name it had. */
            if (strcmp(g->names[as[i]], cur_name(g)) != 0) {
                fail_msg("round %u: message %zu restored as %s, not %s", round,
                         i, g->names[as[i]], cur_name(g));
            }
            untouched++;
        }
    }
    fprintf(stderr,
            "mutator round %u: %u ops, %u restored, %u untouched and %u "
            "renamed ones there\n",
            round, mu->ops, found, untouched, renamed);
    for (size_t i = 0; i < mu->n; i++) {
        mu->m[i].in_prev = seen[i];
    }
    cfr_free(seen);
    cfr_free(as);
}

static void
test_mutator(void **state)
{
    (void)state;
    struct mutator *mu = cfr_calloc(1, sizeof(*mu));
    char conf[VS_PATH_MAX + 96], st[VS_PATH_MAX + 96], mb[VS_PATH_MAX + 256],
        p[VS_PATH_MAX + 128];
    struct out o;
    int64_t t0 = vc_now_ms();

    assert_non_null(mu);
    mu->m = cfr_calloc(MUT_MAX + 1, sizeof(*mu->m));
    assert_non_null(mu->m);
    mu->rng = seed ^ 0x4d5554u;
    FMT(mu->root, "%s/mut", env.dir);
    mk(mu->root);
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        FMT(p, "%s/%s", mu->root, subs[i]);
        mk(p);
    }
    for (size_t i = 0; i < MUT_INITIAL; i++) {
        assert_int_equal(deliver(mu, i), 0);
        mu->m[i].in_prev = true; /* the first backup below holds them */
        mu->n++;
        if (i % 3 != 0) {
            char to[96];
            FMT(to, "cur/%s:2,S", mu->m[i].base);
            assert_int_equal(rename_to(mu, &mu->m[i], to), 0);
        }
    }
    FMT(conf, "%s/mut.conf", dir);
    FMT(st, "%s/mut-state", dir);
    FMT(mb, "mailboxes = ( { name = \"mut@example.org\"; root = \"%s\"; } );",
        mu->root);
    agent_conf(conf, st, 2, 0, mb);
    const char *bj[] = {"backup", "--config", conf, "--json", NULL};
    /* The first snapshot, quietly: the rounds change a known store. */
    run(COFFER_AGENT_BIN, bj, &o);
    expect(&o, 0, "the mutator's first backup");
    out_fini(&o);

    for (unsigned round = 0; round < MUT_ROUNDS; round++) {
        for (size_t i = 0; i < mu->n; i++) {
            struct msg *g = &mu->m[i];
            g->before_round = !g->deleted;
            g->touched = false;
        }
        mu->ops = 0;
        atomic_store(&mu->stop, false);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, mutate, mu), 0);
        unsigned n;
        /* The mutator is running before the agent starts, and stops only
         * once it exited: it covers the whole run. */
        vc_sleep_ms(20);
        pid_t pid = start(COFFER_AGENT_BIN, bj, &n);
        int code = ars_wait(pid, RUN_MS);
        atomic_store(&mu->stop, true);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(mu->errors, 0);
        collect(n, code, &o);
        uint64_t files = 0, vanished = 0;
        if (o.code == 6) {
            /*
             * Explained: a message delivered during the run was deleted
             * between the scan and its read (a renamed one is looked up
             * under its new name). Never in the cache, it has no previous
             * version to keep; every file error must be such a vanished
             * file.
             */
            assert_true(ars_json_u64(o.out, "\"errors\"", "files", &files));
            assert_true(
                ars_json_u64(o.out, "\"errors\"", "vanished", &vanished));
            fprintf(stderr,
                    "mutator round %u: exit 6, %" PRIu64
                    " files vanished before their read\n",
                    round, vanished);
            assert_int_equal(files, vanished);
            assert_true(vanished > 0 && vanished <= mu->ops);
        } else {
            expect(&o, 0, "backup under a mutator");
        }
        out_fini(&o);
        char to[VS_PATH_MAX + 96];
        FMT(to, "%s/mut-restored-%u", dir, round);
        const char *ra[] = {"--config",
                            restore_conf[round % 2],
                            "restore",
                            "--mailbox",
                            "mut@example.org",
                            "--to",
                            to,
                            NULL};
        run(COFFER_RESTORE_BIN, ra, &o);
        expect(&o, 0, "restore of the mutated mailbox");
        out_fini(&o);
        check_restore(mu, to, round);
        ars_rm_tree(to);
    }
    /* Once the store is still, a run catches up: every message there, under
     * its name, and no deleted one. */
    run(COFFER_AGENT_BIN, bj, &o);
    expect(&o, 0, "backup of the still store");
    out_fini(&o);
    for (size_t i = 0; i < mu->n; i++) {
        mu->m[i].before_round = !mu->m[i].deleted;
        mu->m[i].touched = false;
    }
    {
        char to[VS_PATH_MAX + 96];
        FMT(to, "%s/mut-restored-still", dir);
        const char *ra[] = {
            "--config",        restore_conf[0], "restore", "--mailbox",
            "mut@example.org", "--to",          to,        NULL};
        run(COFFER_RESTORE_BIN, ra, &o);
        expect(&o, 0, "restore of the still mailbox");
        out_fini(&o);
        check_restore(mu, to, MUT_ROUNDS);
        ars_rm_tree(to);
        for (size_t i = 0; i < mu->n; i++) {
            if (mu->m[i].deleted && mu->m[i].in_prev) {
                fail_msg("message %zu was deleted but is still restored", i);
            }
        }
    }
    fprintf(stderr, "mutator: %lld ms\n", (long long)(vc_now_ms() - t0));
    cfr_free(mu->m);
    cfr_free(mu);
}

/* ---- 2. quorum with three vaults ---------------------------------------- */

static void
small_message(const char *root, int i)
{
    char path[VS_PATH_MAX + 160];
    char *p = msg_bytes(100000 + (size_t)i, 1500);
    FMT(path, "%s/cur/%d.M%dP5.q:2,S", root, 1767225600 + i, i);
    assert_int_equal(ars_write(path, p, 1500, 0600), 0);
    cfr_free(p);
}

static void
test_quorum(void **state)
{
    (void)state;
    char root[VS_PATH_MAX + 64], p[VS_PATH_MAX + 128], q2[VS_PATH_MAX + 96],
        q3[VS_PATH_MAX + 96], st[VS_PATH_MAX + 96], mb[VS_PATH_MAX + 256],
        snap[80];
    struct out o;
    struct rows *r = cfr_calloc(1, sizeof(*r));
    int64_t t0 = vc_now_ms();

    assert_non_null(r);
    FMT(root, "%s/quorum", env.dir);
    mk(root);
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        FMT(p, "%s/%s", root, subs[i]);
        mk(p);
    }
    for (int i = 0; i < 20; i++) {
        small_message(root, i);
    }
    FMT(q2, "%s/q2.conf", dir);
    FMT(q3, "%s/q3.conf", dir);
    FMT(st, "%s/q-state", dir);
    FMT(mb, "mailboxes = ( { name = \"q@example.org\"; root = \"%s\"; } );",
        root);
    agent_conf(q2, st, 3, 2, mb);
    agent_conf(q3, st, 3, 3, mb);
    const char *b2[] = {"backup", "--config", q2, "--json", NULL};
    const char *b3[] = {"backup", "--config", q3, "--json", NULL};
    run(COFFER_AGENT_BIN, b2, &o);
    expect(&o, 0, "quorum 2 of 3, all up");
    assert_non_null(strstr(o.out, "\"vaults_ok\":3"));
    out_fini(&o);

    /* vault-c down, quorum 2: partial, named, on the two others. */
    assert_int_equal(vs_vault_stop(&vaults[2], SIGTERM, 10000), 0);
    small_message(root, 100);
    run(COFFER_AGENT_BIN, b2, &o);
    expect(&o, 5, "quorum 2 of 3, vault-c down");
    assert_non_null(strstr(o.out, "\"status\":\"ok\""));
    assert_non_null(
        strstr(o.out, "\"name\":\"vault-c\",\"state\":\"unreachable\""));
    assert_non_null(strstr(o.out, "\"name\":\"vault-a\",\"state\":\"ok\""));
    assert_non_null(strstr(o.out, "\"name\":\"vault-b\",\"state\":\"ok\""));
    assert_non_null(strstr(o.out, "\"vaults_ok\":2"));
    assert_non_null(strstr(o.out, "\"exit_code\":5,\"result\":\"partial\""));
    assert_true(ars_json_str(o.out, NULL, "snapshot", snap, sizeof(snap)));
    assert_int_equal(strlen(snap), 64);
    out_fini(&o);
    list_snapshots(q2, 5, r);
    const struct row *w = rows_find(r, snap);
    assert_non_null(w);
    assert_int_equal(w->on, 3u); /* vault-a and vault-b */
    size_t before = r->n;
    /* What the restore side sees on vault-b is that snapshot, whole. */
    assert_int_equal(restore_check("q@example.org", root, 1, "q2"), 21);

    /* Quorum 3 with one down: failed, nothing committed anywhere. */
    small_message(root, 101);
    run(COFFER_AGENT_BIN, b3, &o);
    expect(&o, 1, "quorum 3 of 3, vault-c down");
    /* Failed, or skipped when the quorum was gone before it started. */
    assert_null(strstr(o.out, "\"status\":\"ok\""));
    assert_true(strstr(o.out, "\"status\":\"failed\"") != NULL ||
                strstr(o.out, "\"status\":\"skipped\"") != NULL);
    assert_non_null(strstr(o.out, "\"snapshot\":null"));
    assert_non_null(strstr(o.out, "\"exit_code\":1,\"result\":\"failed\""));
    out_fini(&o);
    list_snapshots(q2, 5, r);
    assert_int_equal(r->n, before);
    /* The newest on vault-a is still the quorum-2 one (21 files, not 22). */
    {
        char to[VS_PATH_MAX + 96], why[512];
        FMT(to, "%s/q3-restored", dir);
        const char *ra[] = {"--config",  restore_conf[0], "restore",
                            "--mailbox", "q@example.org", "--to",
                            to,          "--json",        NULL};
        run(COFFER_RESTORE_BIN, ra, &o);
        expect(&o, 0, "restore after the failed run");
        assert_non_null(strstr(o.out, snap));
        assert_non_null(strstr(o.out, "\"files\":21"));
        out_fini(&o);
        FMT(p, "%s/cur/%d.M%dP5.q:2,S", root, 1767225600 + 101, 101);
        assert_int_equal(unlink(p), 0);
        assert_true(ars_tree_compare(root, to, why, sizeof(why)) == 21);
        ars_rm_tree(to);
    }

    /* Every vault down: failed quickly, saying so. */
    assert_int_equal(vs_vault_stop(&vaults[0], SIGTERM, 10000), 0);
    assert_int_equal(vs_vault_stop(&vaults[1], SIGTERM, 10000), 0);
    run(COFFER_AGENT_BIN, b2, &o);
    expect(&o, 1, "every vault down");
    fprintf(stderr, "every vault down: exit 1 after %lld ms: %s\n",
            (long long)o.ms, o.err);
    assert_true(o.ms < 15000);
    assert_non_null(
        strstr(o.err, "only 0 of 3 vaults left, write quorum is 2"));
    for (size_t v = 0; v < N_VAULTS; v++) {
        FMT(p, "\"name\":\"vault-%c\",\"state\":\"unreachable\"",
            (char)('a' + v));
        assert_non_null(strstr(o.out, p));
    }
    assert_non_null(strstr(o.out, "\"vaults_ok\":0"));
    assert_non_null(strstr(o.out, "\"exit_code\":1,\"result\":\"failed\""));
    out_fini(&o);
    fprintf(stderr, "quorum: %lld ms\n", (long long)(vc_now_ms() - t0));
    cfr_free(r);
}

int
main(void)
{
    /* The quorum test stops the vaults: it runs last. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_mutator),
        cmocka_unit_test(test_quorum),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
