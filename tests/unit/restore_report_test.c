/*
 * restore_report_test.c - what a verify run turns into (restore/report.h):
 * failures counted even past the kept list; the JSON report and the
 * Prometheus textfile with hostile names escaped, written atomically with
 * no temp file left; the state file round trip, damage detected, coverage
 * order and ratio; the notify decision when nothing is due; the schedule
 * loop stopping on a request and on SIGTERM without overlapping runs; and
 * `systemd-analyze verify` on the contrib units when it is installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/file.h> /* flock: a second holder of the state lock */
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "session.h" /* RESTORE_EXIT_* */

static char dir[64];

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/restore_report.XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[400];
    if (d == NULL) {
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
    return rmdir(dir);
}

static size_t
entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    static char buf[1 << 16];
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
id_of(uint8_t b, uint8_t id[CFR_ID_LEN])
{
    memset(id, b, CFR_ID_LEN);
}

/* Two replicas, one mailbox each; replica 1 has a corrupt chunk. */
static void
make_result(struct restore_verify_result *r)
{
    struct cfr_err err;
    size_t ri, mi;
    uint8_t id[CFR_ID_LEN];

    restore_verify_result_init(r);
    r->tenant = strdup("acme");
    assert_non_null(r->tenant);
    r->started_ms = INT64_C(1795000000000);
    r->seed = UINT64_C(18446744073709551557); /* > 2^53 */
    r->sample_mailboxes = 2;
    r->sample_messages = 50;
    id_of(0xab, id);
    assert_int_equal(restore_verify_add_replica(r, "a:1", &ri, &err), 0);
    assert_int_equal(ri, 0);
    assert_int_equal(restore_verify_add_mailbox(
                         r, ri, "alice", id, INT64_C(1794990000000), &mi, &err),
                     0);
    r->replicas[ri].mailboxes[mi].messages_checked = 40;
    r->replicas[ri].mailboxes[mi].bytes = 4000;
    r->replicas[ri].mailboxes[mi].seconds = 2.0;
    assert_int_equal(restore_verify_add_replica(r, "b\"x\\y\nz:2", &ri, &err),
                     0);
    assert_int_equal(restore_verify_add_mailbox(
                         r, ri, "alice", id, INT64_C(1794990000000), &mi, &err),
                     0);
    r->replicas[ri].mailboxes[mi].messages_checked = 40;
    r->replicas[ri].mailboxes[mi].bytes = 1000;
    r->replicas[ri].mailboxes[mi].seconds = 0.5;
    assert_int_equal(restore_verify_add_failure(
                         r, RESTORE_VERIFY_CHUNK_CORRUPT, ri, "alice", "INBOX",
                         "1700000000.M1P1.host", "<m1@example.com>", &err,
                         "chunk %s: bad tag", "deadbeef"),
                     0);
    restore_verify_result_finish(r, INT64_C(1795000004000));
}

static void
test_failures_counted_past_the_kept_list(void **state)
{
    (void)state;
    struct restore_verify_result r;
    struct cfr_err err;
    size_t ri;

    restore_verify_result_init(&r);
    assert_true(r.ok);
    restore_verify_result_finish(&r, 1);
    assert_false(r.ok); /* no replica: nothing was proven */
    restore_verify_result_fini(&r);

    restore_verify_result_init(&r);
    assert_int_equal(restore_verify_add_replica(&r, "a:1", &ri, &err), 0);
    assert_int_equal(
        restore_verify_add_mailbox(&r, ri, "m", NULL, 0, NULL, &err), 0);
    restore_verify_result_finish(&r, 5);
    assert_true(r.ok);
    assert_int_equal(restore_report_exit_code(&r), RESTORE_EXIT_OK);
    for (size_t i = 0; i < RESTORE_VERIFY_FAILURES_KEPT + 5; i++) {
        assert_int_equal(restore_verify_add_failure(
                             &r, RESTORE_VERIFY_CONTENT, ri, "m", NULL, NULL,
                             NULL, &err, "message %zu differs", i),
                         0);
    }
    assert_int_equal(restore_verify_add_failure(&r, RESTORE_VERIFY_UNREACHABLE,
                                                ri, NULL, NULL, NULL, NULL,
                                                &err, "gone"),
                     0);
    assert_false(r.ok);
    assert_int_equal(restore_report_exit_code(&r), RESTORE_EXIT_VERIFY);
    assert_int_equal(r.n_failures, RESTORE_VERIFY_FAILURES_KEPT);
    assert_int_equal(r.failures_dropped, 6);
    assert_int_equal(r.n_failures_total, RESTORE_VERIFY_FAILURES_KEPT + 6);
    assert_int_equal(r.replicas[0].failures_by_kind[RESTORE_VERIFY_CONTENT],
                     RESTORE_VERIFY_FAILURES_KEPT + 5);
    assert_int_equal(r.replicas[0].mailboxes[0].n_failures,
                     RESTORE_VERIFY_FAILURES_KEPT + 5);
    assert_false(r.replicas[0].reachable);
    assert_string_equal(r.failures[3].detail, "message 3 differs");
    assert_string_equal(restore_verify_kind_name(RESTORE_VERIFY_LIVE), "live");
    assert_string_equal(restore_verify_kind_name(RESTORE_VERIFY_KIND_COUNT),
                        "other");
    restore_verify_result_fini(&r);
}

static void
test_json_report_escapes_and_names(void **state)
{
    (void)state;
    struct restore_verify_result r;
    struct cfr_err err;
    char p[128];

    make_result(&r);
    FMT(p, "%s/report.json", dir);
    assert_int_equal(restore_report_json_file(p, &r, &err), 0);
    const char *j = slurp(p);
    assert_non_null(strstr(j, "\"ok\":false"));
    assert_non_null(strstr(j, "\"seed\":\"18446744073709551557\""));
    assert_non_null(strstr(j, "\"sample\":{\"mailboxes\":2,\"messages\":50}"));
    assert_non_null(strstr(j, "\"address\":\"b\\\"x\\\\y\\nz:2\""));
    assert_non_null(strstr(j, "\"kind\":\"chunk_corrupt\""));
    assert_non_null(strstr(j, "\"message_id\":\"<m1@example.com>\""));
    assert_non_null(strstr(j, "\"folder\":\"INBOX\""));
    assert_non_null(strstr(j, "\"detail\":\"chunk deadbeef: bad tag\""));
    assert_non_null(strstr(j, "\"snapshot\":\"abababab"));
    assert_non_null(strstr(j, "\"throughput_bytes_per_second\":2000.000"));
    assert_non_null(strstr(j, "\"failures_by_kind\":{\"chunk_corrupt\":1}"));
    assert_non_null(strstr(j, "\"duration_seconds\":4.000"));
    /* One line, no raw newline inside (the hostile address is escaped). */
    assert_ptr_equal(strchr(j, '\n'), j + strlen(j) - 1);
    assert_int_equal(entries(), 1); /* no temp file left */
    restore_verify_result_fini(&r);
}

static void
test_metrics_textfile(void **state)
{
    (void)state;
    struct restore_verify_result r;
    struct cfr_err err;
    struct stat sb;
    char p[128];
    static const char *const names[] = {
        "coffer_verify_last_run_timestamp_seconds",
        "coffer_verify_last_success_timestamp_seconds",
        "coffer_verify_ok",
        "coffer_verify_reachable",
        "coffer_verify_messages_total",
        "coffer_verify_failures_total",
        "coffer_verify_failures",
        "coffer_verify_bytes",
        "coffer_verify_duration_seconds",
        "coffer_verify_throughput_bytes_per_second",
        "coffer_verify_coverage_ratio",
        "coffer_verify_notify_failed",
    };

    make_result(&r);
    r.last_success_ms = INT64_C(1794900000500);
    r.coverage_ratio = 0.25;
    FMT(p, "%s/coffer_verify.prom", dir);
    assert_int_equal(restore_report_metrics(p, &r, &err), 0);
    const char *m = slurp(p);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char h[200], t[200];
        FMT(h, "# HELP %s ", names[i]);
        FMT(t, "# TYPE %s gauge\n", names[i]);
        if (strstr(m, h) == NULL || strstr(m, t) == NULL) {
            fail_msg("no HELP/TYPE for %s in:\n%s", names[i], m);
        }
    }
    assert_non_null(
        strstr(m, "\ncoffer_verify_last_run_timestamp_seconds{tenant=\"acme\"} "
                  "1795000004\n"));
    assert_non_null(strstr(
        m, "\ncoffer_verify_last_success_timestamp_seconds{tenant=\"acme\"} "
           "1794900000.5\n"));
    assert_non_null(strstr(m, "\ncoffer_verify_ok{tenant=\"acme\"} 0\n"));
    assert_non_null(strstr(m, "\ncoffer_verify_failures{tenant=\"acme\"} 1\n"));
    assert_non_null(
        strstr(m, "\ncoffer_verify_ok{tenant=\"acme\",replica=\"a:1\"} 1\n"));
    /* The hostile address: \ " and newline escaped per the format. */
    assert_non_null(strstr(m, "\ncoffer_verify_ok{tenant=\"acme\",replica="
                              "\"b\\\"x\\\\y\\nz:2\"} 0\n"));
    assert_non_null(
        strstr(m, "\ncoffer_verify_failures_total{tenant=\"acme\",replica="
                  "\"b\\\"x\\\\y\\nz:2\",kind=\"chunk_corrupt\"} 1\n"));
    assert_non_null(
        strstr(m, "\ncoffer_verify_failures_total{tenant=\"acme\",replica="
                  "\"a:1\",kind=\"chunk_corrupt\"} 0\n"));
    assert_non_null(strstr(
        m, "\ncoffer_verify_messages_total{tenant=\"acme\",replica=\"a:1\"} "
           "40\n"));
    assert_non_null(
        strstr(m, "\ncoffer_verify_throughput_bytes_per_second{tenant=\"acme\","
                  "replica=\"a:1\"} 2000\n"));
    assert_non_null(
        strstr(m, "\ncoffer_verify_coverage_ratio{tenant=\"acme\"} 0.25\n"));
    /* Every line is a comment or "name{...} value": no stray line. */
    for (const char *l = m; *l != '\0';) {
        const char *e = strchr(l, '\n');
        assert_non_null(e);
        assert_true(l[0] == '#' || strncmp(l, "coffer_verify_", 14) == 0);
        l = e + 1;
    }
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
    assert_int_equal(entries(), 1);

    /* A directory that does not exist: an error, nothing written. */
    FMT(p, "%s/missing/coffer_verify.prom", dir);
    assert_int_equal(restore_report_metrics(p, &r, &err), CFR_EIO);
    assert_int_equal(entries(), 1);
    restore_verify_result_fini(&r);
}

static void
hex_of(uint8_t b, char out[RESTORE_REPORT_HEX_LEN])
{
    for (size_t i = 0; i < CFR_ID_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", b);
    }
}

static void
test_state_round_trip_and_coverage(void **state)
{
    (void)state;
    struct restore_report_state st;
    struct restore_verify_result r;
    struct cfr_err err;
    char p[128], h[4][RESTORE_REPORT_HEX_LEN];
    const char *retained[4];
    size_t order[4];
    const int64_t day = 86400000, t0 = INT64_C(1795000000000);

    for (int i = 0; i < 4; i++) {
        hex_of((uint8_t)(0x10 + i), h[i]);
        retained[i] = h[i];
    }
    FMT(p, "%s/state", dir);
    assert_int_equal(restore_report_state_load(p, &st, &err), 0);
    assert_false(st.have_last);
    assert_false(restore_report_state_prev_failed(&st));

    /* Run 1 (t0 - 40d): verifies h0; run 2 (t0 - 10d) verifies h1 and h2
       but h2 fails on one replica. */
    for (int run = 0; run < 2; run++) {
        size_t ri;
        uint8_t id[CFR_ID_LEN];
        restore_verify_result_init(&r);
        for (int rep = 0; rep < 2; rep++) {
            char a[16];
            snprintf(a, sizeof(a), "r%d:1", rep);
            assert_int_equal(restore_verify_add_replica(&r, a, &ri, &err), 0);
            for (int s = run; s < 2 * run + 1; s++) {
                id_of((uint8_t)(0x10 + s), id);
                assert_int_equal(restore_verify_add_mailbox(&r, ri,
                                                            s == 2 ? "m2" : "m",
                                                            id, 0, NULL, &err),
                                 0);
            }
        }
        if (run == 1) {
            assert_int_equal(
                restore_verify_add_failure(&r, RESTORE_VERIFY_CHUNK_MISSING, 1,
                                           "m2", NULL, NULL, NULL, &err, "x"),
                0);
        }
        restore_verify_result_finish(&r,
                                     run == 0 ? t0 - 40 * day : t0 - 10 * day);
        assert_int_equal(
            restore_report_state_record(&st, &r, NULL, 0, 30 * day, &err), 0);
        restore_verify_result_fini(&r);
    }
    assert_true(restore_report_state_prev_failed(&st));
    assert_int_equal(restore_report_state_verified_ms(&st, h[0]),
                     t0 - 40 * day);
    assert_int_equal(restore_report_state_verified_ms(&st, h[1]),
                     t0 - 10 * day);
    assert_int_equal(restore_report_state_verified_ms(&st, h[2]), 0);
    assert_int_equal(st.last_success_ms, t0 - 40 * day);
    assert_int_equal(restore_report_state_save(p, &st, &err), 0);
    restore_report_state_fini(&st);

    assert_int_equal(restore_report_state_load(p, &st, &err), 0);
    assert_int_equal(st.runs, 2);
    assert_true(st.have_last);
    assert_false(st.last_ok);
    assert_int_equal(st.n_snaps, 2);
    assert_int_equal(restore_report_state_verified_ms(&st, h[1]),
                     t0 - 10 * day);

    /* Never verified first (h2, h3 in index order), then oldest (h0). */
    restore_report_state_pick(&st, retained, 4, order);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 0);
    assert_int_equal(order[3], 1);

    /* A passing run at t0 with no mailbox: h0 is outside the window, h1
       inside, h2/h3 never: a quarter covered. */
    restore_verify_result_init(&r);
    assert_int_equal(restore_verify_add_replica(&r, "r0:1", NULL, &err), 0);
    restore_verify_result_finish(&r, t0);
    assert_int_equal(
        restore_report_state_record(&st, &r, retained, 4, 30 * day, &err), 0);
    assert_int_equal(r.snapshots_retained, 4);
    assert_int_equal(r.snapshots_covered, 1);
    assert_true(r.coverage_ratio > 0.249 && r.coverage_ratio < 0.251);
    assert_int_equal(r.last_success_ms, t0);
    assert_false(restore_report_state_prev_failed(&st));
    restore_verify_result_fini(&r);
    /* Retention dropped h1: its entry goes. */
    restore_verify_result_init(&r);
    assert_int_equal(restore_verify_add_replica(&r, "r0:1", NULL, &err), 0);
    restore_verify_result_finish(&r, t0 + 1);
    retained[1] = h[3];
    assert_int_equal(
        restore_report_state_record(&st, &r, retained, 3, 30 * day, &err), 0);
    assert_int_equal(restore_report_state_verified_ms(&st, h[1]), 0);
    assert_int_equal(st.n_snaps, 1);
    restore_verify_result_fini(&r);
    restore_report_state_fini(&st);
}

static void
test_state_damage_detected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "version = 1;\nsnaps = ( { id = \"xyz\"; verified_ms = 1L; } );\n",
        "version = 2;\n",
        "version = 1;\ncolour = 1;\n",
        "version = 1;\nruns = ",
        "",
    };
    struct restore_report_state st;
    struct cfr_err err;
    char p[128];

    FMT(p, "%s/state", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        int rc = restore_report_state_load(p, &st, &err);
        if (rc != CFR_ECORRUPT) {
            fail_msg("damaged state %zu: rc %d", i, rc);
        }
        assert_null(st.snaps);
    }
}

static void
test_notify_nothing_due(void **state)
{
    (void)state;
    struct restore_notify_settings ns;
    struct restore_verify_result r;
    struct cfr_err err;

    /* A target that cannot be reached: any attempt would fail. */
    memset(&ns, 0, sizeof(ns));
    ns.webhooks[0] = "http://127.0.0.1:1/hook";
    ns.n_webhooks = 1;
    ns.timeout_ms = 500;
    restore_verify_result_init(&r);
    assert_int_equal(restore_verify_add_replica(&r, "a:1", NULL, &err), 0);
    restore_verify_result_finish(&r, 10);
    assert_true(r.ok);
    assert_int_equal(restore_report_notify(&ns, false, &r, &err), 0);
    assert_false(r.notified);
    assert_null(r.notify_event);
    assert_null(r.notify_error);

    /* Due, but no target configured: nothing sent, no error. */
    memset(&ns, 0, sizeof(ns));
    assert_int_equal(restore_report_notify(&ns, true, &r, &err), 0);
    assert_false(r.notified);
    assert_string_equal(r.notify_event, "verify.recovered");

    /* Due and the target is down: reported, verdict unchanged. */
    ns.webhooks[0] = "http://127.0.0.1:1/hook";
    ns.n_webhooks = 1;
    ns.timeout_ms = 500;
    ns.retries = 0;
    assert_int_not_equal(restore_report_notify(&ns, true, &r, &err), 0);
    assert_true(r.ok);
    assert_non_null(r.notify_error);
    restore_verify_result_fini(&r);
}

/* ---- schedule --------------------------------------------------------- */

struct sched {
    int runs;
    int stop_at;
    int64_t started[4];
    bool sigterm; /* stop by SIGTERM from another thread */
};

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *
send_term(void *arg)
{
    (void)arg;
    /* The loop is waiting for its next run by now or soon; a signal that
       arrives earlier is kept in the flag, so the order does not matter. */
    kill(getpid(), SIGTERM);
    return NULL;
}

static int
sched_run(void *ctx)
{
    struct sched *s = ctx;
    if (s->runs < 4) {
        s->started[s->runs] = now_ms();
    }
    s->runs++;
    assert_false(restore_report_schedule_stopping());
    if (s->runs == s->stop_at) {
        if (s->sigterm) {
            pthread_t th;
            assert_int_equal(pthread_create(&th, NULL, send_term, NULL), 0);
            pthread_join(th, NULL);
            /* The handler ran (in some thread) before kill returned or
               will shortly; poll with a deadline. */
            int64_t until = now_ms() + 5000;
            while (!restore_report_schedule_stopping() && now_ms() < until) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
            assert_true(restore_report_schedule_stopping());
        } else {
            restore_report_schedule_stop();
        }
    }
    return RESTORE_EXIT_OK;
}

/* The state lock: <state>.lock, 0600, exclusive until unlocked (flock
 * is per open file, so a second open in this process contends like a
 * second run would). */
static void
test_state_lock(void **state)
{
    (void)state;
    char st[128], lk[160], longp[5000];
    struct cfr_err err;
    struct stat sb;
    int fd = -1, other;

    FMT(st, "%s/state.json", dir);
    FMT(lk, "%s.lock", st);
    assert_int_equal(restore_report_state_lock(st, &fd, &err), 0);
    assert_true(fd >= 0);
    assert_int_equal(stat(lk, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    other = open(lk, O_RDWR | O_CLOEXEC);
    assert_true(other >= 0);
    assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
    assert_int_equal(errno, EWOULDBLOCK);
    restore_report_state_unlock(fd);
    assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
    close(other);
    restore_report_state_unlock(-1); /* ignored */
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(restore_report_state_lock(longp, &fd, &err), CFR_ELIMIT);
    assert_int_equal(fd, -1);
}

static void
test_schedule_loop(void **state)
{
    (void)state;
    struct sched s;
    struct cfr_err err;
    struct sigaction old;
    int64_t t;

    assert_int_equal(restore_report_schedule_loop(999, 0, sched_run, &s, &err),
                     CFR_EINVAL);
    assert_int_equal(
        restore_report_schedule_loop(1000, -1, sched_run, &s, &err),
        CFR_EINVAL);

    /* Two runs one interval apart, then a stop asked from inside a run. */
    memset(&s, 0, sizeof(s));
    s.stop_at = 2;
    t = now_ms();
    assert_int_equal(restore_report_schedule_loop(1000, 0, sched_run, &s, &err),
                     0);
    assert_int_equal(s.runs, 2);
    assert_true(s.started[1] - s.started[0] >= 1000);
    assert_true(now_ms() - t < 5000);

    /* SIGTERM during a run: that run finishes, no further run, exit 0,
       and the earlier handler is back afterwards. */
    memset(&s, 0, sizeof(s));
    s.stop_at = 1;
    s.sigterm = true;
    t = now_ms();
    assert_int_equal(
        restore_report_schedule_loop(3600000, 60000, sched_run, &s, &err), 0);
    assert_int_equal(s.runs, 1);
    assert_true(now_ms() - t < 5000);
    assert_int_equal(sigaction(SIGTERM, NULL, &old), 0);
    assert_true(old.sa_handler == SIG_DFL);
}

/* ---- systemd units ---------------------------------------------------- */

static void
test_systemd_units_verify(void **state)
{
    (void)state;
    static const char *const units[] = {
        "coffer-verify.service", "coffer-verify.timer",
        "coffer-retention.service", "coffer-retention.timer"};
    char src[512], dst[512], cmd[4096];
    size_t off;

    if (access("/usr/bin/systemd-analyze", X_OK) != 0 &&
        access("/bin/systemd-analyze", X_OK) != 0) {
        skip();
    }
    /* systemd-analyze checks that ExecStart exists: point it at a binary
       every system has, in a copy, leaving everything else as shipped. */
    off = (size_t)snprintf(cmd, sizeof(cmd),
                           "SYSTEMD_LOG_LEVEL=warning systemd-analyze verify");
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        FMT(src, "%s/../../contrib/systemd/%s", COFFER_VECTORS_DIR, units[i]);
        FMT(dst, "%s/%s", dir, units[i]);
        const char *text = slurp(src);
        assert_true(strlen(text) > 100);
        FILE *f = fopen(dst, "w");
        assert_non_null(f);
        for (const char *p = text; *p != '\0';) {
            const char *hit = strstr(p, "/usr/bin/coffer-restore");
            if (hit == NULL) {
                fputs(p, f);
                break;
            }
            fwrite(p, 1, (size_t)(hit - p), f);
            fputs("/bin/true", f);
            p = hit + strlen("/usr/bin/coffer-restore");
        }
        fclose(f);
        off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " %s", dst);
        assert_true(off < sizeof(cmd));
    }
    FMT(dst, "%s/analyze.out", dir);
    off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " >%s 2>&1", dst);
    assert_true(off < sizeof(cmd));
    int rc = system(cmd);
    const char *out = slurp(dst);
    /* Any remark about our units fails (an unknown key only warns, with
       exit 0); noise about the machine itself (no systemd running in a
       container) does not name them. */
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0 ||
        strstr(out, "coffer-") != NULL) {
        fail_msg("systemd-analyze verify failed (%d):\n%s", rc, out);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failures_counted_past_the_kept_list),
        cmocka_unit_test_setup_teardown(test_json_report_escapes_and_names,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_textfile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_round_trip_and_coverage,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_damage_detected, setup,
                                        teardown),
        cmocka_unit_test(test_notify_nothing_due),
        cmocka_unit_test_setup_teardown(test_state_lock, setup, teardown),
        cmocka_unit_test(test_schedule_loop),
        cmocka_unit_test_setup_teardown(test_systemd_units_verify, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
