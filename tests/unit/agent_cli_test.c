/*
 * agent_cli_test.c - coffer-agent's command-line parts (agent/cli.c): exit
 * codes and their precedence, the instance lock, passphrase files, the
 * mass-deletion rule, the progress line and the summary's JSON.
 *
 * Exit codes are what cron and monitoring see, so each outcome is driven
 * alone and then in every combination, and the JSON is checked by a small
 * strict parser here (not by looking for braces), including mailbox names
 * full of quotes and control bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h> /* kill */
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"    /* the module under test */
#include "secret.h" /* cfr_secret_ro */

/* ---- a strict JSON checker ------------------------------------------------
 */

struct js {
    const char *p, *end;
    int depth;
};

static bool js_value(struct js *j);

static void
js_ws(struct js *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')) {
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
            return false; /* raw control bytes are not JSON */
        }
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end) {
                return false;
            }
            if (*j->p == 'u') {
                for (int k = 0; k < 4; k++) {
                    j->p++;
                    if (j->p >= j->end ||
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
js_number(struct js *j)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-') {
        j->p++;
    }
    while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' ||
                             *j->p == 'e' || *j->p == 'E' || *j->p == '+')) {
        j->p++;
    }
    return j->p > s && (j->p[-1] >= '0' && j->p[-1] <= '9');
}

static bool
js_lit(struct js *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0) {
        return false;
    }
    j->p += n;
    return true;
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
    } else if (c == 't') {
        ok = js_lit(j, "true");
    } else if (c == 'f') {
        ok = js_lit(j, "false");
    } else if (c == 'n') {
        ok = js_lit(j, "null");
    } else {
        ok = js_number(j);
    }
    j->depth--;
    return ok;
}

/* One JSON document and nothing else (whitespace aside). */
static bool
json_valid(const char *s, size_t n)
{
    struct js j = {s, s + n, 0};
    if (!js_value(&j)) {
        return false;
    }
    js_ws(&j);
    return j.p == j.end;
}

/* ---- exit codes ------------------------------------------------------------
 */

static void
test_agent_cli_exit_codes_fixed(void **state)
{
    (void)state;
    /* Documented forever: a renumbering must break this test. */
    assert_int_equal(AGENT_EXIT_OK, 0);
    assert_int_equal(AGENT_EXIT_FAILED, 1);
    assert_int_equal(AGENT_EXIT_USAGE, 2);
    assert_int_equal(AGENT_EXIT_CONFIG, 3);
    assert_int_equal(AGENT_EXIT_LOCKED, 4);
    assert_int_equal(AGENT_EXIT_PARTIAL, 5);
    assert_int_equal(AGENT_EXIT_FILE_ERRORS, 6);
    assert_int_equal(AGENT_EXIT_MASS_DELETION, 7);
    assert_string_equal(agent_cli_exit_name(4), "locked");
    assert_string_equal(agent_cli_exit_name(7), "mass-deletion");
    assert_string_equal(agent_cli_exit_name(99), "unknown");
}

/*
 * Builds totals with any mix of the four run outcomes through the real
 * accumulation functions.
 */
static int
code_for(bool failed, bool mass, bool file_err, bool degraded)
{
    struct agent_cli_totals t;
    struct agent_backup_stats ok_s, mass_s, err_s;
    struct agent_uplink_report rep[2];
    struct agent_cli_mailbox m;

    memset(&t, 0, sizeof(t));
    memset(&ok_s, 0, sizeof(ok_s));
    memset(&mass_s, 0, sizeof(mass_s));
    memset(&err_s, 0, sizeof(err_s));
    memset(rep, 0, sizeof(rep));
    memset(&m, 0, sizeof(m));
    ok_s.committed = mass_s.committed = err_s.committed = true;
    mass_s.mass_deletion = true;
    err_s.file_errors = 1;
    err_s.err_permission = 1;

    m.name = "ok@x";
    m.stats = &ok_s;
    agent_cli_totals_add(&t, &m);
    if (failed) {
        m.name = "bad@x";
        m.rc = CFR_EUNAVAIL;
        m.error = "quorum lost";
        agent_cli_totals_add(&t, &m);
        m.rc = 0;
    }
    if (mass) {
        m.stats = &mass_s;
        agent_cli_totals_add(&t, &m);
    }
    if (file_err) {
        m.stats = &err_s;
        agent_cli_totals_add(&t, &m);
    }
    rep[1].state = degraded ? AGENT_UPLINK_LAGGING : AGENT_UPLINK_OK;
    agent_cli_totals_vaults(&t, rep, 2);
    return agent_cli_exit_code(&t);
}

static void
test_agent_cli_exit_precedence(void **state)
{
    (void)state;
    assert_int_equal(code_for(false, false, false, false), AGENT_EXIT_OK);
    assert_int_equal(code_for(true, false, false, false), AGENT_EXIT_FAILED);
    assert_int_equal(code_for(false, true, false, false),
                     AGENT_EXIT_MASS_DELETION);
    assert_int_equal(code_for(false, false, true, false),
                     AGENT_EXIT_FILE_ERRORS);
    assert_int_equal(code_for(false, false, false, true), AGENT_EXIT_PARTIAL);
    /* Every combination: 1 > 7 > 6 > 5 > 0. */
    for (unsigned mask = 0; mask < 16; mask++) {
        bool f = mask & 1, md = mask & 2, fe = mask & 4, dg = mask & 8;
        int want = f    ? AGENT_EXIT_FAILED
                   : md ? AGENT_EXIT_MASS_DELETION
                   : fe ? AGENT_EXIT_FILE_ERRORS
                   : dg ? AGENT_EXIT_PARTIAL
                        : AGENT_EXIT_OK;
        assert_int_equal(code_for(f, md, fe, dg), want);
    }
}

static void
test_agent_cli_exit_edge_cases(void **state)
{
    struct agent_cli_totals t;
    struct agent_cli_mailbox m;
    struct agent_backup_stats s;
    (void)state;

    /* No lease quorum: nothing ran, which is a failure, not "ok". */
    memset(&t, 0, sizeof(t));
    t.uplink_failed = true;
    assert_int_equal(agent_cli_exit_code(&t), AGENT_EXIT_FAILED);

    /* A skipped mailbox counts as failed. */
    memset(&t, 0, sizeof(t));
    memset(&m, 0, sizeof(m));
    m.name = "x";
    m.skipped = true;
    m.rc = CFR_EUNAVAIL;
    agent_cli_totals_add(&t, &m);
    assert_int_equal(t.failed, 1);
    assert_int_equal(t.skipped, 1);
    assert_int_equal(agent_cli_exit_code(&t), AGENT_EXIT_FAILED);

    /* Scan errors (an unreadable folder) count as file errors. */
    memset(&t, 0, sizeof(t));
    memset(&s, 0, sizeof(s));
    s.scan_errors = 2;
    m.skipped = false;
    m.rc = 0;
    m.stats = &s;
    agent_cli_totals_add(&t, &m);
    assert_int_equal(agent_cli_exit_code(&t), AGENT_EXIT_FILE_ERRORS);

    /* A failed mailbox's mass-deletion mark does not count: nothing was
     * committed, so nothing was held. */
    memset(&t, 0, sizeof(t));
    memset(&s, 0, sizeof(s));
    s.mass_deletion = true;
    m.rc = CFR_EUNAVAIL;
    agent_cli_totals_add(&t, &m);
    assert_int_equal(t.mass_deletion, 0);
    assert_int_equal(agent_cli_exit_code(&t), AGENT_EXIT_FAILED);
}

/* ---- mass-deletion rule ----------------------------------------------------
 */

static void
test_agent_cli_mass_deletion_rule(void **state)
{
    (void)state;
    /* 25% of 1000: 250 vanished is not more than 25%; 251 is. */
    assert_false(agent_cli_mass_deletion(250, 750, 25, 50));
    assert_true(agent_cli_mass_deletion(251, 749, 25, 50));
    /* Below the floor nothing warns, however large the share. */
    assert_false(agent_cli_mass_deletion(49, 0, 25, 50));
    assert_true(agent_cli_mass_deletion(50, 0, 25, 50));
    assert_false(agent_cli_mass_deletion(0, 0, 25, 1));
    /* 100% means only "everything vanished" would do, which it cannot
     * exceed: never. */
    assert_false(agent_cli_mass_deletion(1000, 0, 100, 1));
    /* No overflow at the extremes. */
    assert_true(agent_cli_mass_deletion(UINT64_MAX, UINT64_MAX, 25, 1));
    assert_false(agent_cli_mass_deletion(1, UINT64_MAX, 25, 1));
}

/* ---- lock -------------------------------------------------------------------
 */

static char tmpdir[64];

static int
setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/agent_cli_test.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
test_agent_cli_lock(void **state)
{
    char path[128], buf[32];
    struct cfr_err err;
    int fd = -1, fd2 = -1, pipefd[2];
    long holder = -1;
    (void)state;

    snprintf(path, sizeof(path), "%s/agent.lock", tmpdir);
    assert_int_equal(agent_cli_lock(path, &fd, &holder, &err), 0);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* flock is per open file: a second opener conflicts even here. */
    cfr_err_clear(&err);
    assert_int_equal(agent_cli_lock(path, &fd2, &holder, &err), CFR_EEXIST);
    assert_int_equal(fd2, -1);
    assert_int_equal(holder, (long)getpid());
    assert_non_null(strstr(err.msg, "another coffer-agent is running"));
    agent_cli_unlock(fd);
    assert_int_equal(agent_cli_lock(path, &fd, &holder, &err), 0);
    agent_cli_unlock(fd);

    /* Held by another process, which then dies: the kernel frees it. */
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int cfd;
        long h;
        close(pipefd[0]);
        if (agent_cli_lock(path, &cfd, &h, NULL) != 0) {
            _exit(1);
        }
        if (write(pipefd[1], "x", 1) != 1) {
            _exit(1);
        }
        /* Hold it until killed (bounded, should the parent die). */
        for (int i = 0; i < 600; i++) {
            sleep(1);
        }
        _exit(0);
    }
    close(pipefd[1]);
    assert_int_equal(read(pipefd[0], buf, 1), 1);
    assert_int_equal(agent_cli_lock(path, &fd2, &holder, &err), CFR_EEXIST);
    assert_int_equal(holder, (long)pid);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    close(pipefd[0]);
    assert_int_equal(agent_cli_lock(path, &fd2, &holder, &err), 0);
    agent_cli_unlock(fd2);

    /* Never through a symlink (a planted link must not redirect it). */
    char link[160];
    snprintf(link, sizeof(link), "%s/link.lock", tmpdir);
    assert_int_equal(symlink(path, link), 0);
    cfr_err_clear(&err);
    assert_int_equal(agent_cli_lock(link, &fd, &holder, &err), CFR_EIO);
}

/* ---- passphrase files -------------------------------------------------------
 */

static void
write_file(const char *path, const char *data, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void
test_agent_cli_passphrase_files(void **state)
{
    char path[128], gen[128];
    struct cfr_secret *s = NULL;
    size_t len = 0;
    struct cfr_err err;
    (void)state;

    snprintf(path, sizeof(path), "%s/pass", tmpdir);
    assert_int_equal(
        agent_cli_pass_read(path, "passphrase_file", &s, &len, &err),
        CFR_ENOTFOUND);
    write_file(path, "correct horse\n", 0600);
    assert_int_equal(
        agent_cli_pass_read(path, "passphrase_file", &s, &len, &err), 0);
    assert_int_equal(len, 13);
    assert_memory_equal(cfr_secret_ro(s), "correct horse", 13);
    cfr_secret_free(s);
    /* CRLF from an editor elsewhere. */
    write_file(path, "pass\r\n", 0600);
    assert_int_equal(
        agent_cli_pass_read(path, "passphrase_file", &s, &len, &err), 0);
    assert_int_equal(len, 4);
    cfr_secret_free(s);
    /* Readable by the group: refused, and the message never quotes it. */
    write_file(path, "sekrit-value\n", 0640);
    cfr_err_clear(&err);
    assert_int_equal(
        agent_cli_pass_read(path, "passphrase_file", &s, &len, &err),
        CFR_EDENIED);
    assert_null(s);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_null(strstr(err.msg, "sekrit"));
    /* Empty, or only a newline. */
    write_file(path, "\n", 0600);
    assert_int_equal(
        agent_cli_pass_read(path, "passphrase_file", &s, &len, &err),
        CFR_EINVAL);
    /* A directory is not a passphrase. */
    assert_int_equal(agent_cli_pass_read(tmpdir, "x", &s, &len, &err),
                     CFR_EINVAL);

    /* Generated: 64 hex digits, 0600, never over an existing file. */
    snprintf(gen, sizeof(gen), "%s/gen.pass", tmpdir);
    assert_int_equal(agent_cli_pass_generate(gen, &s, &len, &err), 0);
    assert_int_equal(len, 2 * AGENT_CLI_PASS_GEN);
    for (size_t i = 0; i < len; i++) {
        assert_non_null(strchr("0123456789abcdef", cfr_secret_ro(s)[i]));
    }
    struct stat st;
    assert_int_equal(stat(gen, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct cfr_secret *again = NULL;
    size_t alen = 0;
    assert_int_equal(agent_cli_pass_read(gen, "p", &again, &alen, &err), 0);
    assert_int_equal(alen, len);
    assert_memory_equal(cfr_secret_ro(again), cfr_secret_ro(s), len);
    cfr_secret_free(again);
    cfr_secret_free(s);
    assert_int_equal(agent_cli_pass_generate(gen, &s, &len, &err), CFR_EEXIST);
    assert_null(s);
}

/* ---- progress line ----------------------------------------------------------
 */

static void
test_agent_cli_progress(void **state)
{
    struct agent_cli_progress p;
    char line[256], b[32];
    (void)state;

    memset(&p, 0, sizeof(p));
    p.index = 3;
    p.total = 10;
    p.mailbox = "alice@example.org";
    p.ids_checked = 4096;
    p.objects_sent = 12;
    p.bytes_sent = 3u << 20;
    p.elapsed_ms = 2000;
    agent_cli_progress_line(&p, 120, line, sizeof(line));
    assert_string_equal(line, "[3/10] alice@example.org 4096 chunks checked, "
                              "12 sent (3.0 MiB, 1.5 MiB/s) 2.0s");
    /* Narrow terminal: the name gives way, never the counters. */
    p.mailbox = "a-very-long-mailbox-name-that-does-not-fit@example.org";
    agent_cli_progress_line(&p, 80, line, sizeof(line));
    assert_true(strlen(line) <= 79);
    assert_non_null(strstr(line, "..."));
    assert_non_null(strstr(line, "4096 chunks checked"));
    /* Unknown total (a pattern). */
    p.total = 0;
    p.mailbox = "b";
    agent_cli_progress_line(&p, 80, line, sizeof(line));
    assert_true(strncmp(line, "[3] b ", 6) == 0);
    /* Tiny widths never overflow. */
    agent_cli_progress_line(&p, 5, line, sizeof(line));
    assert_true(strlen(line) < 20);

    assert_string_equal(agent_cli_bytes(0, b, sizeof(b)), "0 B");
    assert_string_equal(agent_cli_bytes(1023, b, sizeof(b)), "1023 B");
    assert_string_equal(agent_cli_bytes(1536, b, sizeof(b)), "1.5 KiB");
    assert_string_equal(agent_cli_bytes(UINT64_MAX, b, sizeof(b)), "16.0 EiB");
}

/* ---- JSON summary -----------------------------------------------------------
 */

static void
test_agent_cli_json_shape(void **state)
{
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    struct agent_cli_run run = {"acme", "mx\"1", 1795000000000, 2, 25};
    struct agent_backup_stats s;
    struct agent_cli_mailbox m;
    struct agent_cli_totals t;
    struct agent_uplink_report rep[2];
    (void)state;

    assert_non_null(f);
    memset(&s, 0, sizeof(s));
    memset(&t, 0, sizeof(t));
    memset(rep, 0, sizeof(rep));
    s.scanned = 12;
    s.files_read = 5;
    s.bytes_read = 7777;
    s.chunks_sealed = 9;
    s.bytes_sealed = 4242;
    s.deleted = 3;
    s.entries = 9;
    s.file_errors = 1;
    s.err_vanished = 1;
    s.committed = true;
    memset(s.header_id, 0xab, sizeof(s.header_id));

    agent_cli_json_begin(f, &run);
    memset(&m, 0, sizeof(m));
    /* Names come from outside: quotes, backslashes, control bytes. */
    m.name = "we\"ird\\\n\x01\x7f@example.org";
    m.stats = &s;
    agent_cli_totals_add(&t, &m);
    agent_cli_json_mailbox(f, &m, true);
    memset(&m, 0, sizeof(m));
    m.name = "bob@example.org";
    m.rc = CFR_EUNAVAIL;
    m.error = "quorum lost: \"vault-b\" UNAVAILABLE";
    m.stats = &s;
    agent_cli_totals_add(&t, &m);
    agent_cli_json_mailbox(f, &m, false);
    memset(&m, 0, sizeof(m));
    m.name = "carol@example.org";
    m.skipped = true;
    m.rc = CFR_EUNAVAIL;
    m.error = "not tried";
    agent_cli_totals_add(&t, &m);
    agent_cli_json_mailbox(f, &m, false);
    snprintf(rep[0].name, sizeof(rep[0].name), "vault-a");
    rep[0].objects_sent = 10;
    rep[0].commits = 1;
    snprintf(rep[1].name, sizeof(rep[1].name), "vault-b");
    rep[1].state = AGENT_UPLINK_UNREACHABLE;
    rep[1].status = 14;
    snprintf(rep[1].message, sizeof(rep[1].message), "connect: \"refused\"");
    agent_cli_totals_vaults(&t, rep, 2);
    agent_cli_json_end(f, &run, rep, 2, &t, 1234);
    assert_int_equal(fclose(f), 0);

    if (!json_valid(doc, len)) {
        fprintf(stderr, "invalid JSON:\n%s\n", doc);
        fail();
    }
    /* The fields docs/AGENT.md promises, with the values given. */
    const char *want[] = {
        "{\"command\":\"backup\",\"tenant\":\"acme\",\"host\":\"mx\\\"1\"",
        "\"started_ms\":1795000000000",
        "\"name\":\"we\\\"ird\\\\\\n\\u0001\\u007f@example.org\"",
        "\"status\":\"ok\",\"error\":null",
        "\"snapshot\":\"abababab",
        "\"files\":{\"scanned\":12,",
        "\"read\":5,\"deleted\":3,\"in_snapshot\":9}",
        "\"bytes\":{\"read\":7777,\"sent\":4242,",
        "\"errors\":{\"files\":1,\"vanished\":1,",
        "\"status\":\"failed\",\"error\":\"quorum lost: \\\"vault-b\\\" "
        "UNAVAILABLE\"",
        "\"status\":\"skipped\"",
        "\"quorum\":2",
        "\"name\":\"vault-b\",\"state\":\"unreachable\",\"status\":14",
        "\"message\":\"connect: \\\"refused\\\"\"",
        "\"totals\":{\"mailboxes\":3,\"committed\":1,\"failed\":2,"
        "\"skipped\":1,",
        "\"vaults\":2,\"vaults_ok\":1}",
        "\"elapsed_ms\":1234,\"exit_code\":1,\"result\":\"failed\"}",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(doc, want[i]) == NULL) {
            fprintf(stderr, "missing %s in:\n%s\n", want[i], doc);
            fail();
        }
    }
    /* The checker itself refuses what it must. */
    assert_false(json_valid("{\"a\":1,}", 8));
    assert_false(json_valid("{\"a\":\"x\ny\"}", 11));
    assert_false(json_valid("[1] [2]", 7));
    free(doc);
}

static void
test_agent_cli_text_summary(void **state)
{
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    struct agent_cli_run run = {"acme", "mx1", 0, 1, 25};
    struct agent_backup_stats s;
    struct agent_cli_mailbox m;
    struct agent_cli_totals t;
    struct agent_uplink_report rep;
    (void)state;

    memset(&s, 0, sizeof(s));
    memset(&t, 0, sizeof(t));
    memset(&rep, 0, sizeof(rep));
    memset(&m, 0, sizeof(m));
    s.scanned = 1000;
    s.deleted = 600;
    s.entries = 400;
    s.mass_deletion = true;
    s.committed = true;
    s.file_errors = 2;
    s.err_permission = 2;
    m.name = "alice@example.org";
    m.stats = &s;
    agent_cli_totals_add(&t, &m);
    agent_cli_text_mailbox(f, &m, &run);
    snprintf(rep.name, sizeof(rep.name), "vault-a");
    rep.commits = 1;
    agent_cli_totals_vaults(&t, &rep, 1);
    agent_cli_text_end(f, &run, &rep, 1, &t, 61000);
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(doc, "alice@example.org: 1000 files scanned"));
    assert_non_null(strstr(doc, "2 files not read: 0 vanished, 2 permission"));
    assert_non_null(
        strstr(doc, "MASS DELETION: 600 of 1000 files vanished since the last "
                    "run (more than 25%)"));
    assert_non_null(strstr(doc, "vault-a: ok"));
    assert_non_null(strstr(doc, "1m01s"));
    assert_non_null(strstr(doc, "result: 7 mass-deletion"));
    free(doc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_cli_exit_codes_fixed),
        cmocka_unit_test(test_agent_cli_exit_precedence),
        cmocka_unit_test(test_agent_cli_exit_edge_cases),
        cmocka_unit_test(test_agent_cli_mass_deletion_rule),
        cmocka_unit_test(test_agent_cli_lock),
        cmocka_unit_test(test_agent_cli_passphrase_files),
        cmocka_unit_test(test_agent_cli_progress),
        cmocka_unit_test(test_agent_cli_json_shape),
        cmocka_unit_test(test_agent_cli_text_summary),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
