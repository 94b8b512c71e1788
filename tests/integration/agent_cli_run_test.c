/*
 * agent_cli_run_test.c - the coffer-agent program against two real vaults
 * over mutual TLS: init, backup, snapshots, the lock and the exit codes.
 *
 * (Named *_run_test so its target does not clash with the unit test
 * tests/unit/agent_cli_test.c.)
 *
 * What it proves, driving the real binary (COFFER_AGENT_BIN):
 *  1. init writes the agent key file, a generated passphrase file and the
 *     escrow copy, all 0600; the key file opens to a keyring that cannot
 *     open data, the escrow copy (under the escrow passphrase) to one that
 *     can, of the same tenant; a second init refuses and changes nothing.
 *  2. backup of a small Maildir to both vaults exits 0, and its --json
 *     output is one valid JSON document whose counts match the Maildir.
 *  3. A second backup while the first holds the lock exits 4 at once (the
 *     first is stopped with SIGSTOP while it holds the lock, so the
 *     overlap is certain, not timing luck) and the first still exits 0.
 *  4. snapshots lists the committed snapshot (the header ID backup
 *     reported) on both vaults.
 *  5. Deleting most of a mailbox exits 7; snapshots shows the new snapshot
 *     marked and the previous one held.
 *  6. With one vault down and quorum 1 of 2, backup exits 5 and names the
 *     down vault unreachable; with quorum 2 of 2 it exits 1.
 *  7. Usage and configuration mistakes exit 2 and 3 before touching
 *     anything; a full keyring on the host, or a passphrase file the
 *     group may read, exits 3.
 *  8. On a terminal, init asks the escrow passphrase twice without echo
 *     (two different answers write nothing) and backup draws a progress
 *     line; off a terminal there is none, and --quiet prints nothing
 *     unless something is wrong.
 *  9. A list and a pattern together back up each mailbox once; a
 *     pattern that finds nothing exits 1.
 * 10. Placement: vaults without regions exit 3 unless allow_single_region;
 *     a vault whose Health names another region than configured is
 *     refused for the run (exit 5 with quorum 1 when one region is
 *     allowed); with the two-region rule the same run exits 1, naming the
 *     one region that could acknowledge, and commits nothing. (Both test
 *     vaults are in region test-1.)
 */
/* posix_openpt and friends: the terminal tests. */
#define _XOPEN_SOURCE 700

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h" /* ars_slurp */
#include "keys.h"              /* opening what init wrote */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* cfr_rpc_global_init */
#include "vault_support.h"     /* the harness */

#define N_VAULTS  2
#define N_MSGS    40
#define ESCROW_PW "correct horse battery staple"

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static char dir[VS_PATH_MAX + 64];      /* the agent's files */
static char maildir[VS_PATH_MAX + 64];  /* alice's Maildir */
static char conf[VS_PATH_MAX + 128];    /* quorum: all */
static char conf_q1[VS_PATH_MAX + 128]; /* quorum: 1 */

#define FMT(buf, ...)                                                          \
    assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

/* ---- a strict JSON checker (as in tests/unit/agent_cli_test.c) ---------- */

struct js {
    const char *p, *end;
    int depth;
};

static bool js_value(struct js *j);

static void
js_ws(struct js *j)
{
    while (j->p < j->end && strchr(" \n\t\r", *j->p) != NULL) {
        j->p++;
    }
}

static bool
js_string(struct js *j)
{
    if (j->p >= j->end || *j->p != '"') {
        return false;
    }
    for (j->p++; j->p < j->end; j->p++) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        if (c < 0x20) {
            return false;
        }
        if (c == '\\') {
            if (++j->p >= j->end) {
                return false;
            }
            if (*j->p == 'u') {
                for (int k = 0; k < 4; k++) {
                    if (++j->p >= j->end ||
                        strchr("0123456789abcdefABCDEF", *j->p) == NULL) {
                        return false;
                    }
                }
            } else if (strchr("\"\\/bfnrt", *j->p) == NULL) {
                return false;
            }
        }
    }
    return false;
}

static bool
js_value(struct js *j)
{
    js_ws(j);
    if (j->p >= j->end || ++j->depth > 32) {
        return false;
    }
    bool ok = false;
    char c = *j->p;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            ok = true;
        } else {
            for (;;) {
                if (c == '{') {
                    js_ws(j);
                    if (!js_string(j)) {
                        break;
                    }
                    js_ws(j);
                    if (j->p >= j->end || *j->p++ != ':') {
                        break;
                    }
                }
                if (!js_value(j)) {
                    break;
                }
                js_ws(j);
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == close) {
                    j->p++;
                    ok = true;
                }
                break;
            }
        }
    } else if (c == '"') {
        ok = js_string(j);
    } else if (strncmp(j->p, "true", 4) == 0 || strncmp(j->p, "null", 4) == 0) {
        j->p += 4;
        ok = true;
    } else if (strncmp(j->p, "false", 5) == 0) {
        j->p += 5;
        ok = true;
    } else {
        const char *s = j->p;
        while (j->p < j->end && strchr("-0123456789.eE+", *j->p) != NULL) {
            j->p++;
        }
        ok = j->p > s;
    }
    j->depth--;
    return ok;
}

static bool
json_valid(const char *s)
{
    struct js j = {s, s + strlen(s), 0};
    if (!js_value(&j)) {
        return false;
    }
    js_ws(&j);
    return j.p == j.end;
}

/* ---- helpers ---------------------------------------------------------------
 */

static void
put_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* What one run of the agent printed. */
struct out {
    int code;
    char *out, *err;
};

static void
out_fini(struct out *o)
{
    cfr_free(o->out);
    cfr_free(o->err);
    memset(o, 0, sizeof(*o));
}

/* Starts coffer-agent with args (NULL-terminated), output to files. */
static pid_t
agent_start(const char *const *args, const char *tag)
{
    char *argv[32];
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    size_t n = 0;

    FMT(op, "%s/%s.out", dir, tag);
    FMT(ep, "%s/%s.err", dir, tag);
    argv[n++] = (char *)COFFER_AGENT_BIN;
    for (; args[n - 1] != NULL && n < 31; n++) {
        argv[n] = (char *)args[n - 1];
    }
    argv[n] = NULL;
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
        /* No controlling terminal: init must not find one to prompt on. */
        setsid();
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Waits (bounded) for pid and collects its output. */
static void
agent_wait(pid_t pid, const char *tag, struct out *o)
{
    char op[VS_PATH_MAX + 96], ep[VS_PATH_MAX + 96];
    int st = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        assert_true(r >= 0);
        if (r == pid) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 120) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("coffer-agent %s did not finish in 120 s", tag);
        }
        usleep(10000);
    }
    FMT(op, "%s/%s.out", dir, tag);
    FMT(ep, "%s/%s.err", dir, tag);
    o->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    o->out = ars_slurp(op, NULL);
    o->err = ars_slurp(ep, NULL);
    assert_non_null(o->out);
    assert_non_null(o->err);
}

static void
agent_run(const char *const *args, const char *tag, struct out *o)
{
    agent_wait(agent_start(args, tag), tag, o);
}

/*
 * Runs coffer-agent with a pseudo-terminal as its controlling terminal and
 * stderr (and stdin/stdout too when all_on_tty; else stdout goes to a
 * file, tag.out). Each time the terminal output shows prompts[k], answers
 * answers[k] + "\n". Everything the terminal showed ends up in *tty_r.
 */
static void
pty_run(const char *const *args, const char *tag, bool all_on_tty,
        const char *const *prompts, const char *const *answers, struct out *o,
        char **tty_r)
{
    char op[VS_PATH_MAX + 96], *argv[32];
    size_t n = 0, k = 0, len = 0, from = 0, cap = 1 << 16;
    char *buf = cfr_malloc(cap);
    int st = 0;

    assert_non_null(buf);
    FMT(op, "%s/%s.out", dir, tag);
    argv[n++] = (char *)COFFER_AGENT_BIN;
    for (; args[n - 1] != NULL && n < 31; n++) {
        argv[n] = (char *)args[n - 1];
    }
    argv[n] = NULL;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    const char *slave_name = ptsname(master);
    assert_non_null(slave_name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        int sl = open(slave_name, O_RDWR); /* becomes the controlling tty */
        int of = all_on_tty ? sl : open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (sl < 0 || of < 0 || dup2(sl, 0) < 0 || dup2(of, 1) < 0 ||
            dup2(sl, 2) < 0) {
            _exit(126);
        }
        close(master);
        execv(argv[0], argv);
        _exit(127);
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pfd = {master, POLLIN, 0};
        int pr = poll(&pfd, 1, 50);
        if (pr > 0 && (pfd.revents & POLLIN) != 0 && len + 1 < cap) {
            ssize_t r = read(master, buf + len, cap - 1 - len);
            if (r > 0) {
                len += (size_t)r;
                buf[len] = '\0';
            }
        }
        buf[len] = '\0';
        if (prompts != NULL && prompts[k] != NULL &&
            strstr(buf + from, prompts[k]) != NULL) {
            /* Answer once per prompt; look for the next one after it. */
            from = (size_t)(strstr(buf + from, prompts[k]) - buf) +
                   strlen(prompts[k]);
            assert_true(write(master, answers[k], strlen(answers[k])) ==
                        (ssize_t)strlen(answers[k]));
            assert_int_equal(write(master, "\n", 1), 1);
            k++;
        }
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            /* Drain what is left. */
            while (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN) != 0 &&
                   len + 1 < cap) {
                ssize_t r = read(master, buf + len, cap - 1 - len);
                if (r <= 0) {
                    break;
                }
                len += (size_t)r;
            }
            buf[len] = '\0';
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 120) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("coffer-agent %s on a terminal did not finish", tag);
        }
    }
    close(master);
    o->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    o->out = all_on_tty ? NULL : ars_slurp(op, NULL);
    o->err = NULL;
    *tty_r = buf;
}

static void
expect_code(const struct out *o, int code, const char *what)
{
    if (o->code != code) {
        fprintf(stderr, "%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s\n",
                what, o->code, code, o->out, o->err);
        fail();
    }
}

/* Value of "key":"..." (first after from) into out; false when absent. */
static bool
json_str(const char *doc, const char *from, const char *key, char *out,
         size_t n)
{
    char pat[96];
    const char *p = from != NULL ? strstr(doc, from) : doc;
    if (p == NULL) {
        return false;
    }
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    p = strstr(p, pat);
    if (p == NULL) {
        return false;
    }
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (e == NULL || (size_t)(e - p) >= n) {
        return false;
    }
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

static void
make_message(const char *sub, int i, const char *info)
{
    char path[VS_PATH_MAX + 160], body[600];
    FMT(path, "%s/%s/%d.M%dP1.mx%s", maildir, sub, 1700000000 + i, i, info);
    FMT(body,
        "From: sender%d@example.net\r\nTo: alice@example.org\r\n"
        "Message-ID: <msg-%d@example.net>\r\nSubject: number %d\r\n\r\n"
        "Hello %d, this is a small test message with some text in it so that "
        "it has a few hundred bytes. %d %d %d\r\n",
        i, i, i, i, i * 7, i * 13, i * 31);
    put_file(path, body, 0644);
    /* Old mtimes: a file changed within the run's second is read again
     * next time (state.h, racy), which would blur the read counts. */
    struct timespec ts[2] = {{1700000000 + i, 0}, {1700000000 + i, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/*
 * The agent's configuration: quorum, the key file's name in dir, the
 * mailbox source lines (NULL: alice's list entry), each vault's region
 * (NULL: none) and whether one region is allowed.
 */
static void
write_config_regions(const char *path, unsigned quorum, const char *key_name,
                     const char *mailboxes, const char *region_a,
                     const char *region_b, bool single)
{
    char text[8192], mb[VS_PATH_MAX + 128], ra[64], rb[64];
    FMT(ra, region_a != NULL ? "region = \"%s\"; " : "%s",
        region_a != NULL ? region_a : "");
    FMT(rb, region_b != NULL ? "region = \"%s\"; " : "%s",
        region_b != NULL ? region_b : "");
    if (mailboxes == NULL) {
        FMT(mb,
            "mailboxes = ( { name = \"alice@example.org\"; root = \"%s\"; } "
            ");\n",
            maildir);
        mailboxes = mb;
    }
    FMT(text,
        "tenant = \"acme\";\n"
        "key_file = \"%s/%s\";\n"
        "passphrase_file = \"%s/agent.pass\";\n"
        "state_dir = \"%s/state\";\n"
        "lock_file = \"%s/agent.lock\";\n"
        "log_level = \"warn\";\n"
        "tmp_dir = \"%s\";\n"
        "%s"
        "vaults = (\n"
        "  { address = \"127.0.0.1:%d\"; name = \"vault-a\"; "
        "tls_name = \"localhost\"; %s},\n"
        "  { address = \"127.0.0.1:%d\"; name = \"vault-b\"; "
        "tls_name = \"localhost\"; %s} );\n"
        "allow_single_region = %s;\n"
        "tls = { ca = \"%s/ca.pem\"; cert = \"%s/agent.pem\"; "
        "key = \"%s/agent.key\"; };\n"
        "quorum = %u;\n"
        "workers = 2;\n"
        "cpu_nice = 0;\n"
        "mass_deletion = { percent = 50; min_files = 10; };\n"
        "timeouts = { call = \"5s\"; stream = \"30s\"; stall = \"10s\"; };\n",
        dir, key_name, dir, dir, dir, dir, mailboxes, vaults[0].port, ra,
        vaults[1].port, rb, single ? "true" : "false", env.dir, env.dir,
        env.dir, quorum);
    put_file(path, text, 0644);
}

/* Both test vaults are loopback vaults in one region: allowed here. */
static void
write_config_ex(const char *path, unsigned quorum, const char *key_name,
                const char *mailboxes)
{
    write_config_regions(path, quorum, key_name, mailboxes, NULL, NULL, true);
}

static void
write_config(const char *path, unsigned quorum)
{
    write_config_ex(path, quorum, "agent.key", NULL);
}

static mode_t
mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

/* ---- setup -----------------------------------------------------------------
 */

static int
setup(void **state)
{
    struct cfr_err err;
    (void)state;
    /* The harness registers tenants over gRPC. */
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
    }
    snprintf(dir, sizeof(dir), "%s/agent", env.dir);
    snprintf(maildir, sizeof(maildir), "%s/alice", env.dir);
    snprintf(conf, sizeof(conf), "%s/agent.conf", dir);
    snprintf(conf_q1, sizeof(conf_q1), "%s/agent-q1.conf", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(maildir, 0700) != 0) {
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

/* ---- the test --------------------------------------------------------------
 */

static void
test_agent_cli_run(void **state)
{
    char key[VS_PATH_MAX + 96], pass[VS_PATH_MAX + 96],
        escrow[VS_PATH_MAX + 96], epass[VS_PATH_MAX + 96],
        path[VS_PATH_MAX + 128], snap1[80], snap2[80];
    struct out o;
    struct cfr_err err;
    (void)state;

    const char *subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < 3; i++) {
        FMT(path, "%s/%s", maildir, subs[i]);
        assert_int_equal(mkdir(path, 0700), 0);
    }
    for (int i = 0; i < N_MSGS; i++) {
        make_message(i % 4 == 0 ? "new" : "cur", i, i % 4 == 0 ? "" : ":2,S");
    }
    write_config(conf, 0);
    write_config(conf_q1, 1);
    FMT(key, "%s/agent.key", dir);
    FMT(pass, "%s/agent.pass", dir);
    FMT(escrow, "%s/escrow.key", dir);
    FMT(epass, "%s/escrow.pass", dir);

    /* 7. Usage and configuration mistakes, before anything exists. */
    {
        const char *a1[] = {"backup", "--config", conf, "--bogus", NULL};
        agent_run(a1, "usage", &o);
        expect_code(&o, 2, "unknown option");
        out_fini(&o);
        const char *a2[] = {"frobnicate", NULL};
        agent_run(a2, "usage2", &o);
        expect_code(&o, 2, "unknown command");
        out_fini(&o);
        FMT(path, "%s/bad.conf", dir);
        put_file(path, "tenant = \"acme\";\nquorom = 1;\n", 0644);
        const char *a3[] = {"backup", "--config", path, NULL};
        agent_run(a3, "badconf", &o);
        expect_code(&o, 3, "bad configuration");
        assert_non_null(strstr(o.err, "bad.conf:2: quorom: unknown setting"));
        out_fini(&o);
        /* No key file yet: a configuration problem, not a crash. */
        const char *a4[] = {"backup", "--config", conf, NULL};
        agent_run(a4, "nokey", &o);
        expect_code(&o, 3, "no key file");
        out_fini(&o);
        /* init without a terminal and without a passphrase file. */
        const char *a5[] = {"init", "--config", conf, "--escrow", escrow, NULL};
        agent_run(a5, "noterm", &o);
        expect_code(&o, 2, "init without a terminal");
        assert_non_null(strstr(o.err, "--escrow-passphrase-file"));
        assert_int_equal(access(key, F_OK), -1);
        assert_int_equal(access(escrow, F_OK), -1);
        out_fini(&o);
    }

    /* 1. init. */
    put_file(epass, ESCROW_PW "\n", 0600);
    const char *init[] = {"init",     "--config", conf,
                          "--escrow", escrow,     "--escrow-passphrase-file",
                          epass,      NULL};
    agent_run(init, "init", &o);
    expect_code(&o, 0, "init");
    assert_non_null(strstr(o.out, escrow));
    assert_non_null(strstr(o.out, "ESCROW FILE OFF THIS HOST"));
    out_fini(&o);
    assert_int_equal(mode_of(key), 0600);
    assert_int_equal(mode_of(pass), 0600);
    assert_int_equal(mode_of(escrow), 0600);
    char *agent_pass = ars_slurp(pass, NULL);
    assert_non_null(agent_pass);
    assert_int_equal(strlen(agent_pass), 65); /* 64 hex digits + newline */
    struct cfr_keyring *view = cfr_keyring_load(key, agent_pass, 64, &err);
    assert_non_null(view);
    assert_false(cfr_keyring_can_open(view));
    assert_int_equal(cfr_keyring_kind(view), CFR_KEYRING_AGENT);
    struct cfr_keyring *full =
        cfr_keyring_import(escrow, ESCROW_PW, strlen(ESCROW_PW), &err);
    assert_non_null(full);
    assert_true(cfr_keyring_can_open(full));
    assert_memory_equal(cfr_keyring_tenant_id(view),
                        cfr_keyring_tenant_id(full), CFR_TENANT_ID_LEN);
    /* The agent's passphrase does not open the escrow copy. */
    assert_null(cfr_keyring_import(escrow, agent_pass, 64, &err));
    cfr_keyring_free(full);
    char *key_before = ars_slurp(key, NULL);
    /* A second init refuses and leaves every file as it was. */
    agent_run(init, "init2", &o);
    expect_code(&o, 1, "second init");
    assert_non_null(strstr(o.err, "refusing to overwrite"));
    out_fini(&o);
    char *key_after = ars_slurp(key, NULL);
    assert_string_equal(key_before, key_after);
    cfr_free(key_before);
    cfr_free(key_after);

    /* 2. backup --json to both vaults. */
    const char *bj[] = {"backup", "--config", conf, "--json", NULL};
    agent_run(bj, "backup1", &o);
    expect_code(&o, 0, "first backup");
    if (!json_valid(o.out)) {
        fprintf(stderr, "not JSON:\n%s\n", o.out);
        fail();
    }
    FMT(path, "\"scanned\":%d,\"new\":%d", N_MSGS, N_MSGS);
    assert_non_null(strstr(o.out, path));
    FMT(path, "\"in_snapshot\":%d}", N_MSGS);
    assert_non_null(strstr(o.out, path));
    assert_non_null(strstr(o.out, "\"name\":\"alice@example.org\","
                                  "\"status\":\"ok\""));
    assert_non_null(strstr(o.out, "\"state\":\"ok\""));
    assert_null(strstr(o.out, "\"state\":\"unreachable\""));
    assert_non_null(strstr(o.out, "\"vaults_ok\":2"));
    assert_non_null(strstr(o.out, "\"exit_code\":0,\"result\":\"ok\""));
    assert_true(json_str(o.out, NULL, "snapshot", snap1, sizeof(snap1)));
    assert_int_equal(strlen(snap1), 64);
    /* stderr is a file here: no progress line. */
    assert_null(strchr(o.err, '\r'));
    assert_null(strstr(o.err, "chunks checked"));
    out_fini(&o);

    /* The host must never hold a key that opens data, nor a passphrase
     * file others can read. */
    {
        FMT(path, "%s/full.conf", dir);
        write_config_ex(path, 0, "full.key", NULL);
        char full_key[VS_PATH_MAX + 96];
        FMT(full_key, "%s/full.key", dir);
        struct cfr_keyring *f2 =
            cfr_keyring_import(escrow, ESCROW_PW, strlen(ESCROW_PW), &err);
        assert_non_null(f2);
        assert_int_equal(
            cfr_keyring_save(f2, full_key, agent_pass, 64, NULL, &err), 0);
        cfr_keyring_free(f2);
        const char *af[] = {"backup", "--config", path, NULL};
        agent_run(af, "fullkey", &o);
        expect_code(&o, 3, "a full keyring on the host");
        assert_non_null(strstr(o.err, "holds the FULL keyring"));
        out_fini(&o);
        assert_int_equal(unlink(full_key), 0);
        assert_int_equal(chmod(pass, 0640), 0);
        agent_run(bj, "passmode", &o);
        expect_code(&o, 3, "passphrase file readable by the group");
        assert_non_null(strstr(o.err, "chmod 600"));
        assert_null(strstr(o.err, agent_pass));
        out_fini(&o);
        assert_int_equal(chmod(pass, 0600), 0);
        /* A mailbox that is not configured. */
        const char *an[] = {"backup", "--config", conf, "nobody@example.org",
                            NULL};
        agent_run(an, "unnamed", &o);
        expect_code(&o, 2, "unknown mailbox");
        assert_non_null(strstr(o.err, "nobody@example.org is not configured"));
        out_fini(&o);
    }

    /*
     * On a terminal: init asks the escrow passphrase twice without echo,
     * and backup draws its progress line on stderr.
     */
    {
        char tconf[VS_PATH_MAX + 96], tescrow[VS_PATH_MAX + 96], *tty = NULL;
        const char *prompts[] = {"Escrow passphrase: ", "Again: ", NULL};
        const char *answers[] = {"tty escrow passphrase 1",
                                 "tty escrow passphrase 1", NULL};
        FMT(tconf, "%s/tty.conf", dir);
        FMT(tescrow, "%s/tty.escrow", dir);
        write_config_ex(tconf, 0, "tty.key", NULL);
        const char *ai[] = {"init",     "--config", tconf,
                            "--escrow", tescrow,    NULL};
        pty_run(ai, "ttyinit", true, prompts, answers, &o, &tty);
        if (o.code != 0) {
            fprintf(stderr, "init on a terminal: exit %d:\n%s\n", o.code, tty);
            fail();
        }
        /* Both prompts came, the passphrase was never echoed. */
        assert_non_null(strstr(tty, "Again: "));
        assert_null(strstr(tty, "tty escrow passphrase"));
        assert_non_null(strstr(tty, "kept  ")); /* agent.pass existed */
        cfr_free(tty);
        struct cfr_keyring *t2 =
            cfr_keyring_import(tescrow, answers[0], strlen(answers[0]), &err);
        assert_non_null(t2);
        assert_true(cfr_keyring_can_open(t2));
        cfr_keyring_free(t2);

        /* Two different answers: refused, nothing written. */
        char tconf2[VS_PATH_MAX + 96], tescrow2[VS_PATH_MAX + 96];
        FMT(tconf2, "%s/tty2.conf", dir);
        FMT(tescrow2, "%s/tty2.escrow", dir);
        write_config_ex(tconf2, 0, "tty2.key", NULL);
        const char *differ[] = {"first passphrase here",
                                "second passphrase here", NULL};
        const char *ai2[] = {"init",     "--config", tconf2,
                             "--escrow", tescrow2,   NULL};
        pty_run(ai2, "ttyinit2", true, prompts, differ, &o, &tty);
        assert_int_equal(o.code, 2);
        assert_non_null(strstr(tty, "differ"));
        cfr_free(tty);
        FMT(path, "%s/tty2.key", dir);
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(access(tescrow2, F_OK), -1);

        /* The progress line: on the terminal, redrawn with \r. */
        make_message("new", 500, "");
        pty_run(bj, "ttybackup", false, NULL, NULL, &o, &tty);
        expect_code(&o, 0, "backup with a terminal");
        assert_true(json_valid(o.out));
        assert_non_null(strstr(tty, "\r[1/1] alice@example.org"));
        assert_non_null(strstr(tty, "chunks checked"));
        assert_true(json_str(o.out, NULL, "snapshot", snap1, sizeof(snap1)));
        cfr_free(tty);
        out_fini(&o);
    }

    /* 3. The lock: a run stopped while it holds it blocks a second. */
    {
        /* One new message so the first run has something to do. */
        make_message("new", 1000, "");
        pid_t first = agent_start(bj, "locked1");
        char lock[VS_PATH_MAX + 96], want[32];
        FMT(lock, "%s/agent.lock", dir);
        FMT(want, "%ld\n", (long)first);
        bool held = false;
        for (int i = 0; i < 2000 && !held; i++) {
            char *l = ars_slurp(lock, NULL);
            held = l != NULL && strcmp(l, want) == 0;
            cfr_free(l);
            if (!held) {
                usleep(5000);
            }
        }
        assert_true(held);
        assert_int_equal(kill(first, SIGSTOP), 0);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        agent_run(bj, "locked2", &o);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        expect_code(&o, 4, "second instance");
        assert_non_null(strstr(o.err, "another coffer-agent is running"));
        FMT(want, "pid %ld", (long)first);
        assert_non_null(strstr(o.err, want));
        /* At once: no waiting for the lock. */
        assert_true(t1.tv_sec - t0.tv_sec < 10);
        out_fini(&o);
        assert_int_equal(kill(first, SIGCONT), 0);
        agent_wait(first, "locked1", &o);
        expect_code(&o, 0, "the run that held the lock");
        assert_true(json_valid(o.out));
        assert_non_null(strstr(o.out, "\"read\":1,"));
        assert_true(json_str(o.out, NULL, "snapshot", snap1, sizeof(snap1)));
        out_fini(&o);
    }

    /* --quiet: nothing to say when all is well (cron mails stdout). */
    {
        const char *aq[] = {"backup", "--config", conf, "--quiet", NULL};
        agent_run(aq, "quiet", &o);
        expect_code(&o, 0, "quiet backup");
        assert_string_equal(o.out, "");
        assert_null(strstr(o.err, "result:"));
        out_fini(&o);
    }

    /* 4. snapshots lists it on both vaults. */
    const char *sj[] = {"snapshots", "--config", conf, "--json", NULL};
    agent_run(sj, "snaps1", &o);
    expect_code(&o, 0, "snapshots");
    if (!json_valid(o.out)) {
        fprintf(stderr, "not JSON:\n%s\n", o.out);
        fail();
    }
    FMT(path, "\"header_id\":\"%s\"", snap1);
    const char *row = strstr(o.out, path);
    assert_non_null(row);
    assert_non_null(strstr(row, "\"vaults\":[\"vault-a\",\"vault-b\"]"));
    assert_non_null(strstr(o.out, "\"headers_sealed\":true"));
    /* Two runs so far: two snapshots of alice. */
    assert_non_null(strstr(o.out, "\"name\":\"alice@example.org\""));
    out_fini(&o);
    /* The text form too. */
    const char *st[] = {"snapshots", "--config", conf, NULL};
    agent_run(st, "snaps_text", &o);
    expect_code(&o, 0, "snapshots (text)");
    assert_non_null(strstr(o.out, "alice@example.org (mailbox ID"));
    FMT(path, "%.16s", snap1);
    assert_non_null(strstr(o.out, path));
    assert_non_null(strstr(o.out, "cannot be opened here"));
    out_fini(&o);

    /* 5. Mass deletion: 30 of 42 messages vanish. */
    for (int i = 0; i < 30; i++) {
        FMT(path, "%s/%s/%d.M%dP1.mx%s", maildir, i % 4 == 0 ? "new" : "cur",
            1700000000 + i, i, i % 4 == 0 ? "" : ":2,S");
        assert_int_equal(unlink(path), 0);
    }
    const char *bt[] = {"backup", "--config", conf, NULL};
    agent_run(bt, "mass", &o);
    expect_code(&o, 7, "mass deletion");
    assert_non_null(strstr(o.out, "MASS DELETION: 30 of 42 files vanished"));
    assert_non_null(strstr(o.out, "result: 7 mass-deletion"));
    out_fini(&o);
    agent_run(sj, "snaps2", &o);
    expect_code(&o, 0, "snapshots after mass deletion");
    assert_true(json_valid(o.out));
    /* The previous snapshot is held; the newest is marked. */
    FMT(path, "\"header_id\":\"%s\"", snap1);
    row = strstr(o.out, path);
    assert_non_null(row);
    assert_non_null(strstr(row, "\"held\":true"));
    const char *marked = strstr(o.out, "\"mass_deletion\":true");
    assert_non_null(marked);
    assert_true(marked > row);
    out_fini(&o);

    /* 10. Placement, both vaults up. */
    {
        const char *ar[] = {"backup", "--config", path, "--json", NULL};
        FMT(path, "%s/regions.conf", dir);
        write_config_regions(path, 1, "agent.key", NULL, NULL, NULL, false);
        agent_run(ar, "noregion", &o);
        expect_code(&o, 3, "vaults without a region");
        assert_non_null(strstr(o.err, "vaults.[0].region: needed to prove "
                                      "the tenant is kept in two regions"));
        assert_string_equal(o.out, "");
        out_fini(&o);
        /* vault-b is configured in test-2 but says test-1: refused. */
        write_config_regions(path, 1, "agent.key", NULL, "test-1", "test-2",
                             false);
        agent_run(ar, "onespan", &o);
        expect_code(&o, 1, "two-region rule, one region left");
        assert_true(json_valid(o.out));
        assert_non_null(strstr(o.err, "the vaults left are all in one "
                                      "region: test-1 (vault-a)"));
        assert_non_null(
            strstr(o.out, "\"name\":\"vault-b\",\"state\":\"refused\""));
        assert_non_null(strstr(o.out, "\"committed\":0,"));
        out_fini(&o);
        /* One region allowed: the same vaults make a partial run. */
        write_config_regions(path, 1, "agent.key", NULL, "test-1", "test-2",
                             true);
        agent_run(ar, "onepartial", &o);
        expect_code(&o, 5, "mismatched vault, one region allowed");
        assert_true(json_valid(o.out));
        assert_non_null(
            strstr(o.out, "\"name\":\"vault-b\",\"state\":\"refused\""));
        assert_non_null(strstr(o.out, "configured \\\"test-2\\\""));
        assert_non_null(strstr(o.out, "\"committed\":1,"));
        out_fini(&o);
    }

    /* 6. One vault down. */
    assert_int_equal(vs_vault_stop(&vaults[1], SIGTERM, 10000), 0);
    make_message("new", 2000, "");
    agent_run(
        (const char *const[]){"backup", "--config", conf_q1, "--json", NULL},
        "partial", &o);
    expect_code(&o, 5, "quorum 1 of 2, one down");
    assert_true(json_valid(o.out));
    assert_non_null(strstr(o.out, "\"status\":\"ok\""));
    assert_non_null(
        strstr(o.out, "\"name\":\"vault-b\",\"state\":\"unreachable\""));
    assert_non_null(strstr(o.out, "\"vaults_ok\":1"));
    assert_non_null(strstr(o.out, "\"exit_code\":5,\"result\":\"partial\""));
    assert_true(json_str(o.out, NULL, "snapshot", snap2, sizeof(snap2)));
    out_fini(&o);
    /* --quiet speaks up, on stderr, when something is wrong. */
    agent_run(
        (const char *const[]){"backup", "--config", conf_q1, "--quiet", NULL},
        "partial_quiet", &o);
    expect_code(&o, 5, "quiet, one vault down");
    assert_string_equal(o.out, "");
    assert_non_null(strstr(o.err, "vault-b: unreachable"));
    assert_non_null(strstr(o.err, "result: 5 partial"));
    out_fini(&o);
    /* Quorum all: nothing can be committed. */
    make_message("new", 2001, "");
    agent_run(bj, "failed", &o);
    expect_code(&o, 1, "quorum 2 of 2, one down");
    assert_true(json_valid(o.out));
    assert_non_null(strstr(o.out, "\"exit_code\":1,\"result\":\"failed\""));
    out_fini(&o);
    /* snapshots still answers from the live vault, as partial. */
    agent_run(sj, "snaps3", &o);
    expect_code(&o, 5, "snapshots with one vault down");
    FMT(path, "\"header_id\":\"%s\"", snap2);
    row = strstr(o.out, path);
    assert_non_null(row);
    assert_non_null(strstr(row, "\"vaults\":[\"vault-a\"]"));
    out_fini(&o);

    /*
     * A pattern and a list together: the list's alice is not backed up
     * twice when the pattern finds her too, and bob comes from the
     * pattern. A pattern that matches nothing is a failure, not "ok".
     */
    {
        char vmail[VS_PATH_MAX + 96], mb[4 * VS_PATH_MAX];
        FMT(vmail, "%s/vmail", env.dir);
        assert_int_equal(mkdir(vmail, 0700), 0);
        FMT(path, "%s/pattern.conf", dir);
        FMT(mb, "mailbox_pattern = \"%s/%%d/%%n\";\n", vmail);
        write_config_ex(path, 1, "agent.key", mb);
        const char *ap[] = {"backup", "--config", path, "--json", NULL};
        agent_run(ap, "nomatch", &o);
        expect_code(&o, 1, "a pattern that matches nothing");
        assert_non_null(strstr(o.err, "no mailbox found"));
        assert_true(json_valid(o.out));
        out_fini(&o);
        FMT(path, "%s/example.org", vmail);
        assert_int_equal(mkdir(path, 0700), 0);
        FMT(path, "%s/example.org/alice", vmail);
        assert_int_equal(mkdir(path, 0700), 0);
        FMT(path, "%s/example.org/bob", vmail);
        assert_int_equal(mkdir(path, 0700), 0);
        FMT(path, "%s/example.org/bob/mbox", vmail);
        put_file(path, "From a@b Thu Jan  1 00:00:00 2024\nSubject: x\n\nhi\n",
                 0600);
        FMT(path, "%s/pattern.conf", dir);
        FMT(mb,
            "mailboxes = ( { name = \"alice@example.org\"; root = \"%s\"; } "
            ");\nmailbox_pattern = \"%s/%%d/%%n\";\n",
            maildir, vmail);
        write_config_ex(path, 1, "agent.key", mb);
        agent_run(ap, "pattern", &o);
        expect_code(&o, 5, "list and pattern, one vault down");
        assert_true(json_valid(o.out));
        assert_non_null(strstr(o.out, "\"name\":\"bob@example.org\","
                                      "\"status\":\"ok\""));
        assert_non_null(strstr(o.out, "\"mailboxes\":2,\"committed\":2,"));
        /* alice from the list: her Maildir, 14 files (the failed run's
         * arrival included), not the empty directory the pattern found. */
        assert_non_null(strstr(o.out, "\"in_snapshot\":14}"));
        out_fini(&o);
    }

    cfr_keyring_free(view);
    cfr_free(agent_pass);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_cli_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
