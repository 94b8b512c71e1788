/*
 * ratelimit_test.c - lockouts, sliding windows, the per-hour evaluation
 * cap, bounded memory with eviction, and concurrent use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "ratelimit.h"

#define T0 INT64_C(1800000000000)

static struct cfr_ratelimit *
make(struct cfr_clock *clock, size_t slots, unsigned max_failures,
     int64_t window_ms, int64_t lockout_ms)
{
    struct cfr_ratelimit_opts o = {
        .slots = slots,
        .max_failures = max_failures,
        .window_ms = window_ms,
        .lockout_ms = lockout_ms,
    };
    struct cfr_err err;
    struct cfr_ratelimit *rl = cfr_ratelimit_new(&o, clock, &err);
    assert_non_null(rl);
    return rl;
}

static void
test_ratelimit_locks_after_n_failures_then_expires(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    struct cfr_ratelimit *rl = make(clock, 64, 5, 60000, 300000);
    const char *id = "coffer://tenant/acme/role/agent";
    int64_t wait = -1;

    for (int i = 0; i < 4; i++) {
        assert_int_equal(cfr_ratelimit_fail(rl, id, "ipv4:10.0.0.1:1"), 0);
        assert_int_equal(cfr_ratelimit_check(rl, id, NULL, &wait), 0);
        assert_int_equal(wait, 0);
        cfr_clock_advance(clock, 1000);
    }
    /* The fifth failure within the minute locks identity and address. */
    unsigned r = cfr_ratelimit_fail(rl, id, "ipv4:10.0.0.1:1");
    assert_int_equal(r, CFR_RATELIMIT_LOCKED_IDENTITY |
                            CFR_RATELIMIT_LOCKED_ADDRESS);
    assert_int_equal(cfr_ratelimit_check(rl, id, NULL, &wait), CFR_ELIMIT);
    assert_int_equal(wait, 300000);
    /* Another identity from the locked address is refused as well. */
    assert_int_equal(cfr_ratelimit_check(rl, "coffer://tenant/b/role/agent",
                                         "ipv4:10.0.0.1:1", NULL),
                     CFR_ELIMIT);
    /* The locked identity from a fresh address is still refused. */
    assert_int_equal(cfr_ratelimit_check(rl, id, "ipv4:10.0.0.2:1", NULL),
                     CFR_ELIMIT);
    /* Others are not affected. */
    assert_int_equal(cfr_ratelimit_check(rl, "coffer://tenant/b/role/agent",
                                         "ipv4:10.0.0.2:1", NULL),
                     0);
    /* Failures during the lockout do not extend it. */
    cfr_clock_advance(clock, 299000);
    assert_int_equal(cfr_ratelimit_fail(rl, id, NULL), 0);
    assert_int_equal(cfr_ratelimit_check(rl, id, NULL, &wait), CFR_ELIMIT);
    assert_int_equal(wait, 1000);
    cfr_clock_advance(clock, 1000);
    assert_int_equal(cfr_ratelimit_check(rl, id, "ipv4:10.0.0.1:1", &wait), 0);

    struct cfr_ratelimit_stats st;
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.lockouts, 2);
    assert_int_equal(st.refused, 4);
    assert_int_equal(st.entries, 2);
    cfr_ratelimit_free(rl);
    cfr_clock_free(clock);
}

static void
test_ratelimit_window_slides(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    struct cfr_ratelimit *rl = make(clock, 64, 3, 10000, 60000);

    /* Failures spaced wider than window / (n - 1) never lock. */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(cfr_ratelimit_fail(rl, "id", NULL), 0);
        cfr_clock_advance(clock, 5001);
    }
    assert_int_equal(cfr_ratelimit_check(rl, "id", NULL, NULL), 0);
    /* Three inside ten seconds do (the last two gaps: 5001 + 4998). */
    assert_int_equal(cfr_ratelimit_fail(rl, "id", NULL), 0);
    cfr_clock_advance(clock, 4998);
    assert_int_equal(cfr_ratelimit_fail(rl, "id", NULL),
                     CFR_RATELIMIT_LOCKED_IDENTITY);
    assert_int_equal(cfr_ratelimit_check(rl, "id", NULL, NULL), CFR_ELIMIT);
    /* An admin reset lifts it at once. */
    cfr_ratelimit_reset(rl, "id", NULL);
    assert_int_equal(cfr_ratelimit_check(rl, "id", NULL, NULL), 0);
    cfr_ratelimit_free(rl);
    cfr_clock_free(clock);
}

static void
test_ratelimit_evaluates_at_most_cap_per_hour(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    /* A window too short to lock: every failure is just counted. */
    struct cfr_ratelimit *rl = make(clock, 64, 64, 10, 1000);
    struct cfr_ratelimit_stats st;
    unsigned dropped = 0;

    for (int i = 0; i < 300; i++) {
        if (cfr_ratelimit_fail(rl, "flood", NULL) & CFR_RATELIMIT_DROPPED) {
            dropped++;
        }
        cfr_clock_advance(clock, 1000); /* 300 s in all */
    }
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.evaluated, 100);
    assert_int_equal(st.dropped, 200);
    assert_int_equal(dropped, 200);
    assert_int_equal(st.lockouts, 0);
    /* Two hours later the estimate has decayed: evaluation resumes. */
    cfr_clock_advance(clock, 2 * 3600 * 1000);
    assert_int_equal(cfr_ratelimit_fail(rl, "flood", NULL), 0);
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.evaluated, 101);
    /* Over a long steady flood, no hour sees much more than the cap. */
    for (int i = 0; i < 36000; i++) {
        cfr_ratelimit_fail(rl, "steady", NULL);
        cfr_clock_advance(clock, 1000); /* ten hours, one per second */
    }
    cfr_ratelimit_stats(rl, &st);
    uint64_t steady = st.evaluated - 101;
    assert_true(steady >= 900 && steady <= 1100);
    cfr_ratelimit_free(rl);
    cfr_clock_free(clock);
}

static void
test_ratelimit_memory_is_bounded_and_keeps_locked_entries(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    struct cfr_ratelimit *rl = make(clock, 16, 2, 60000, 3600000);
    struct cfr_ratelimit_stats st;
    char addr[64];

    cfr_ratelimit_fail(rl, "victim-locked", NULL);
    assert_int_equal(cfr_ratelimit_fail(rl, "victim-locked", NULL),
                     CFR_RATELIMIT_LOCKED_IDENTITY);
    for (int i = 0; i < 5000; i++) {
        snprintf(addr, sizeof(addr), "ipv4:192.0.2.%d:%d", i % 250, i);
        cfr_ratelimit_fail(rl, NULL, addr);
        cfr_clock_advance(clock, 1);
    }
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.slots, 16);
    assert_true(st.entries <= 16);
    assert_true(st.evictions >= 5000 - 16);
    assert_int_equal(st.evicted_locked, 0);
    /* The locked identity survived the flood of unlocked addresses. */
    assert_int_equal(cfr_ratelimit_check(rl, "victim-locked", NULL, NULL),
                     CFR_ELIMIT);
    /* Keys longer than the stored form stay distinct. */
    char long_a[600], long_b[600];
    memset(long_a, 'a', sizeof(long_a) - 1);
    long_a[sizeof(long_a) - 1] = '\0';
    memcpy(long_b, long_a, sizeof(long_a));
    long_b[590] = 'b';
    cfr_ratelimit_fail(rl, long_a, NULL);
    cfr_ratelimit_fail(rl, long_a, NULL);
    assert_int_equal(cfr_ratelimit_check(rl, long_a, NULL, NULL), CFR_ELIMIT);
    assert_int_equal(cfr_ratelimit_check(rl, long_b, NULL, NULL), 0);
    cfr_ratelimit_free(rl);
    cfr_clock_free(clock);
}

struct worker_arg {
    struct cfr_ratelimit *rl;
    int id;
};

static void *
hammer(void *p)
{
    struct worker_arg *a = p;
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "k%d", (i * 7 + a->id) % 300);
        cfr_ratelimit_fail(a->rl, key, "ipv4:198.51.100.1:9");
        cfr_ratelimit_check(a->rl, key, NULL, NULL);
    }
    return NULL;
}

static void
test_ratelimit_threads_share_one_table(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    struct cfr_ratelimit *rl = make(clock, 128, 10, 60000, 60000);
    pthread_t t[4];
    struct worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].rl = rl;
        a[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    struct cfr_ratelimit_stats st;
    cfr_ratelimit_stats(rl, &st);
    /* Every call was either evaluated or dropped, once per key. */
    assert_int_equal(st.evaluated + st.dropped, 4 * 20000 * 2);
    assert_true(st.entries <= 128);
    assert_int_equal(cfr_ratelimit_check(rl, NULL, "ipv4:198.51.100.1:9", NULL),
                     CFR_ELIMIT);
    cfr_ratelimit_free(rl);
    cfr_clock_free(clock);
}

static void
test_ratelimit_rejects_bad_options(void **state)
{
    (void)state;
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    struct cfr_err err;
    struct cfr_ratelimit_opts o = {.max_failures =
                                       CFR_RATELIMIT_FAILURES_MAX + 1};
    assert_null(cfr_ratelimit_new(&o, clock, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    assert_null(cfr_ratelimit_new(NULL, NULL, &err));
    struct cfr_ratelimit *rl = cfr_ratelimit_new(NULL, clock, &err);
    assert_non_null(rl);
    struct cfr_ratelimit_stats st;
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.slots, CFR_RATELIMIT_DEFAULT_SLOTS);
    /* Empty keys are ignored, never stored. */
    assert_int_equal(cfr_ratelimit_fail(rl, "", NULL), 0);
    cfr_ratelimit_stats(rl, &st);
    assert_int_equal(st.entries, 0);
    cfr_ratelimit_free(rl);
    cfr_ratelimit_free(NULL);
    cfr_clock_free(clock);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_locks_after_n_failures_then_expires),
        cmocka_unit_test(test_ratelimit_window_slides),
        cmocka_unit_test(test_ratelimit_evaluates_at_most_cap_per_hour),
        cmocka_unit_test(
            test_ratelimit_memory_is_bounded_and_keeps_locked_entries),
        cmocka_unit_test(test_ratelimit_threads_share_one_table),
        cmocka_unit_test(test_ratelimit_rejects_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
