/*
 * agent_rss_test.c - the coffer-agent program's peak resident set while it
 * backs up a generated mail store to a real vault over mutual TLS.
 *
 * Issue 4: "peak RSS stays under 64 MiB while backing up a 1 GB store".
 * Most of the agent's buffers do not grow with the store (agent/backup.h,
 * "Memory"), so a 100 MB store (about 6 s) already meets them at their
 * full size; it runs by default. The dedup set and the file cache still
 * grow with the store: the full 1 GB store (about a minute, most of it
 * generating and backing up; 1.1 GB on disk under /tmp) runs with
 * COFFER_SLOW_TESTS=1.
 *
 * What it proves, driving the real binary (COFFER_AGENT_BIN) on a store
 * made by bench/gen_corpus (COFFER_GEN_CORPUS_BIN; Maildirs, big
 * attachments and mbox archives):
 *  1. The backup exits 0 and its --json report counts every generated
 *     file as read and the bytes the store holds, so the figure below is
 *     that of a run that really read and sent the whole store.
 *  2. The agent's peak RSS (ru_maxrss of the child, from wait4) stays
 *     under RSS_LIMIT_KIB with 4 workers: twice the cores of a small
 *     host, so the per-worker buffers count.
 *
 * Environment (for measuring by hand): COFFER_RSS_STORE names an existing
 * store to back up instead of generating one (the counts in 1. are then
 * taken from it too), COFFER_RSS_WORKERS overrides the worker count,
 * COFFER_RSS_WRAP puts a profiler in front of the backup (the figure is
 * then the profiler's).
 */
/* The agent under test is built like this test: with or without ASan. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define _GNU_SOURCE /* wait4 */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h" /* ars_slurp */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* cfr_rpc_global_init */
#include "vault_support.h"     /* the harness */

/* The bound. Measured: 48 MiB for 100 MB and 55-57 MiB for 1 GB
 * with 4 workers (1 GB before the memory work: 109 MiB), so a regression
 * of a per-worker buffer or a queue shows while host noise does not. */
#define RSS_LIMIT_KIB (64 * 1024)
#define WORKERS       4
#define ESCROW_PW     "correct horse battery staple"

static struct vs_env env;
static struct vs_vault vault;
static char dir[VS_PATH_MAX + 64];   /* the agent's files */
static char store[VS_PATH_MAX + 64]; /* the mail store */
static char conf[VS_PATH_MAX + 128];

#define FMT(buf, ...)                                                          \
    assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

static void
put_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* What one child did. */
struct run {
    int code;
    long maxrss_kib;
    double secs;
};

/*
 * Runs argv (argv[0] the program) to its exit within limit_s seconds,
 * stdout and stderr to dir/tag.out and .err.
 */
static void
run_child(char *const *argv, const char *tag, int limit_s, struct run *r)
{
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    struct timespec t0, t;
    struct rusage ru;
    int st = 0;

    FMT(op, "%s/%s.out", dir, tag);
    FMT(ep, "%s/%s.err", dir, tag);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int in = open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || in < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 ||
            dup2(in, 0) < 0) {
            _exit(126);
        }
        setsid();
        execv(argv[0], argv);
        _exit(127);
    }
    /* wait4 gives the child's own peak, not the test's or a sibling's. */
    for (;;) {
        memset(&ru, 0, sizeof(ru));
        pid_t w = wait4(pid, &st, WNOHANG, &ru);
        assert_true(w >= 0);
        if (w == pid) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > limit_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("%s did not finish in %d s", tag, limit_s);
        }
        usleep(20000);
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->maxrss_kib = ru.ru_maxrss;
    r->secs =
        (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
    if (r->code != 0) {
        char *e = ars_slurp(ep, NULL);
        fprintf(stderr, "%s exited %d:\n%s\n", tag, r->code,
                e != NULL ? e : "");
        cfr_free(e);
    }
}

/* Regular files and their bytes under path (what the agent must read). */
static void
count_tree(const char *path, uint64_t *files, uint64_t *bytes)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char sub[4096];
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        FMT(sub, "%s/%s", path, de->d_name);
        assert_int_equal(lstat(sub, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            count_tree(sub, files, bytes);
        } else if (S_ISREG(st.st_mode)) {
            (*files)++;
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
}

/* Value of "key": N in the JSON text s (first occurrence). */
static uint64_t
json_u64(const char *s, const char *key)
{
    char pat[96];
    FMT(pat, "\"%s\":", key);
    const char *p = strstr(s, pat);
    if (p == NULL) {
        fail_msg("no %s in the report:\n%s", key, s);
    }
    p += strlen(pat);
    while (*p == ' ') {
        p++;
    }
    return strtoull(p, NULL, 10);
}

static void
write_config(unsigned workers)
{
    char text[8192];
    /* The whole store as one mailbox root: every Maildir, metadata file
     * and mbox archive is read (scan.h walks other directories as plain
     * trees), so the counts below can be checked against the store. */
    FMT(text,
        "tenant = \"acme\";\n"
        "key_file = \"%s/agent.key\";\n"
        "passphrase_file = \"%s/agent.pass\";\n"
        "state_dir = \"%s/state\";\n"
        "lock_file = \"%s/agent.lock\";\n"
        "log_level = \"warn\";\n"
        "tmp_dir = \"%s\";\n"
        "mailboxes = ( { name = \"store\"; root = \"%s\"; } );\n"
        "vaults = ( { address = \"127.0.0.1:%d\"; name = \"vault-a\"; "
        "tls_name = \"localhost\"; } );\n"
        /* One loopback vault: one region, on purpose. */
        "allow_single_region = true;\n"
        "tls = { ca = \"%s/ca.pem\"; cert = \"%s/agent.pem\"; "
        "key = \"%s/agent.key\"; };\n"
        "quorum = 0;\n"
        "workers = %u;\n"
        "cpu_nice = 0;\n"
        "timeouts = { call = \"30s\"; stream = \"5m\"; stall = \"60s\"; };\n",
        dir, dir, dir, dir, dir, store, vault.port, env.dir, env.dir, env.dir,
        workers);
    put_file(conf, text, 0644);
}

static int
setup(void **state)
{
    struct cfr_err err;
    (void)state;
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0) {
        return -1;
    }
    if (vs_vault_init(&vault, &env, "v0") != 0 ||
        vs_vault_start(&vault, 20000) != 0) {
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s/agent", env.dir);
    snprintf(conf, sizeof(conf), "%s/agent.conf", dir);
    return mkdir(dir, 0700) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGTERM, 10000);
    }
    vs_env_fini(&env);
    return 0;
}

static void
backup_store(const char *size)
{
    char epass[VS_PATH_MAX + 96], escrow[VS_PATH_MAX + 96];
    const char *given = getenv("COFFER_RSS_STORE");
    const char *w = getenv("COFFER_RSS_WORKERS");
    unsigned workers = w != NULL ? (unsigned)strtoul(w, NULL, 10) : WORKERS;
    struct run r;

    if (given != NULL && given[0] != '\0') {
        FMT(store, "%s", given);
    } else {
        /* Fixed seed: the same store, and so the same figure, every run. */
        FMT(store, "%s/store", env.dir);
        char *gen[] = {(char *)COFFER_GEN_CORPUS_BIN,
                       "--seed",
                       "4",
                       "--domains",
                       "4",
                       "--users",
                       "25",
                       "--messages-per-user",
                       "400",
                       "--lists",
                       "6",
                       "--list-members",
                       "40",
                       "--size",
                       (char *)size,
                       "--quiet",
                       store,
                       NULL};
        run_child(gen, "gen", 900, &r);
        assert_int_equal(r.code, 0);
    }
    uint64_t files = 0, bytes = 0;
    count_tree(store, &files, &bytes);
    assert_true(files > 100);

    write_config(workers);
    FMT(epass, "%s/escrow.pass", dir);
    FMT(escrow, "%s/escrow.key", dir);
    put_file(epass, ESCROW_PW "\n", 0600);
    char *init[] = {(char *)COFFER_AGENT_BIN,
                    "init",
                    "--config",
                    conf,
                    "--escrow",
                    escrow,
                    "--escrow-passphrase-file",
                    epass,
                    NULL};
    run_child(init, "init", 120, &r);
    assert_int_equal(r.code, 0);

    char *backup[16], wrap[256];
    size_t nb = 0;
    const char *wr = getenv("COFFER_RSS_WRAP");
    if (wr != NULL) {
        /* A profiler in front ("valgrind --tool=massif"): by hand only. */
        FMT(wrap, "%s", wr);
        for (char *save = NULL, *tok = strtok_r(wrap, " ", &save);
             tok != NULL && nb < 10; tok = strtok_r(NULL, " ", &save)) {
            backup[nb++] = tok;
        }
    }
    backup[nb++] = (char *)COFFER_AGENT_BIN;
    backup[nb++] = "backup";
    backup[nb++] = "--config";
    backup[nb++] = conf;
    backup[nb++] = "--json";
    backup[nb] = NULL;
    run_child(backup, "backup", 1800, &r);
    assert_int_equal(r.code, 0);

    char op[VS_PATH_MAX + 96];
    FMT(op, "%s/backup.out", dir);
    char *out = ars_slurp(op, NULL);
    assert_non_null(out);
    uint64_t read = json_u64(out, "files_read");
    uint64_t bread = json_u64(out, "bytes_read");
    cfr_free(out);
    double mb = (double)bytes / 1e6;
    fprintf(stderr,
            "agent_rss: %.0f MB in %llu files, %u workers: peak RSS %ld KiB "
            "(%.1f MiB), %.1f s, %.1f MB/s\n",
            mb, (unsigned long long)files, workers, r.maxrss_kib,
            (double)r.maxrss_kib / 1024.0, r.secs, mb / r.secs);
    /* The whole store was read: the figure is that of a full backup. */
    assert_int_equal(read, files);
    assert_int_equal(bread, bytes);
    if (SANITIZED) {
        /* ASan's shadow memory and quarantine multiply the resident set;
         * the bound is for the product build, checked by the plain run. */
        fprintf(stderr, "agent_rss: sanitizer build, RSS bound not checked\n");
        return;
    }
    if (r.maxrss_kib >= RSS_LIMIT_KIB) {
        fail_msg("peak RSS %ld KiB, limit %d KiB", r.maxrss_kib, RSS_LIMIT_KIB);
    }
}

static void
test_rss_small(void **state)
{
    (void)state;
    if (getenv("COFFER_SLOW_TESTS") != NULL &&
        strcmp(getenv("COFFER_SLOW_TESTS"), "1") == 0) {
        skip(); /* the 1 GB run below covers it */
    }
    backup_store("100M");
}

static void
test_rss_1g(void **state)
{
    (void)state;
    if (getenv("COFFER_SLOW_TESTS") == NULL ||
        strcmp(getenv("COFFER_SLOW_TESTS"), "1") != 0) {
        fprintf(stderr, "agent_rss 1 GB: skipped, set COFFER_SLOW_TESTS=1 "
                        "to run it (about a minute)\n");
        skip();
    }
    backup_store("1G");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rss_small),
        cmocka_unit_test(test_rss_1g),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
