/*
 * secret_test.c - sodium_malloc'd secrets: zeroed, protectable, wiped, and
 * the wipe/compare/random helpers other modules use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "secret.h"

static void
test_secret_init_is_idempotent(void **state)
{
    (void)state;
    struct cfr_err err;
    cfr_err_clear(&err);
    assert_int_equal(cfr_crypto_init(&err), 0);
    assert_int_equal(cfr_crypto_init(&err), 0);
    assert_int_equal(err.code, 0);
}

static void
test_secret_new_is_zeroed_and_writable(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_secret *s = cfr_secret_new(100, &err);
    assert_non_null(s);
    assert_int_equal(cfr_secret_len(s), 100);
    const uint8_t *ro = cfr_secret_ro(s);
    for (size_t i = 0; i < 100; i++) {
        assert_int_equal(ro[i], 0);
    }
    uint8_t *rw = cfr_secret_rw(s);
    memset(rw, 0xa5, 100);
    assert_false(cfr_secret_is_locked(s));
    cfr_secret_lock(s);
    assert_true(cfr_secret_is_locked(s));
    ro = cfr_secret_ro(s);
    assert_false(cfr_secret_is_locked(s));
    assert_int_equal(ro[0], 0xa5);
    assert_int_equal(ro[99], 0xa5);
    cfr_secret_free(s);
    cfr_secret_free(NULL);
}

static void
test_secret_zero_length_is_refused(void **state)
{
    (void)state;
    struct cfr_err err;
    cfr_err_clear(&err);
    assert_null(cfr_secret_new(0, &err));
    assert_int_equal(err.code, CFR_EINVAL);
}

/* Runs fn in a child; returns true when the child died instead of exiting
 * normally with status 0. */
static bool
child_crashes(void (*fn)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ||
           (WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

static volatile uint8_t sink;

static void
read_locked_secret(void)
{
    struct cfr_secret *s = cfr_secret_new(32, NULL);
    const volatile uint8_t *p = cfr_secret_ro(s);
    cfr_secret_lock(s);
    sink = p[0]; /* must fault: the page is PROT_NONE */
}

static void
write_readonly_secret(void)
{
    struct cfr_secret *s = cfr_secret_new(32, NULL);
    volatile uint8_t *p = cfr_secret_rw(s);
    cfr_secret_ro(s);
    p[0] = 1; /* must fault: the page is read-only */
}

static void
read_unlocked_secret(void)
{
    struct cfr_secret *s = cfr_secret_new(32, NULL);
    const volatile uint8_t *p = cfr_secret_ro(s);
    sink = p[0];
    cfr_secret_free(s);
}

static void
test_secret_protection_faults_on_access(void **state)
{
    (void)state;
    /* The control shows the harness itself does not report a crash. */
    assert_false(child_crashes(read_unlocked_secret));
    assert_true(child_crashes(read_locked_secret));
    assert_true(child_crashes(write_readonly_secret));
}

static void
test_secret_wipe_compare_random(void **state)
{
    (void)state;
    uint8_t a[64];
    uint8_t b[64];
    memset(a, 0x77, sizeof(a));
    cfr_wipe(a, sizeof(a));
    for (size_t i = 0; i < sizeof(a); i++) {
        assert_int_equal(a[i], 0);
    }
    memset(b, 0, sizeof(b));
    assert_true(cfr_ct_equal(a, b, sizeof(a)));
    b[63] = 1;
    assert_false(cfr_ct_equal(a, b, sizeof(a)));

    cfr_crypto_random(a, sizeof(a));
    cfr_crypto_random(b, sizeof(b));
    assert_false(cfr_ct_equal(a, b, sizeof(a)));
    size_t zeros = 0;
    for (size_t i = 0; i < sizeof(a); i++) {
        zeros += a[i] == 0;
    }
    assert_true(zeros < 16); /* 64 random bytes: ~0.25 zeros expected */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_init_is_idempotent),
        cmocka_unit_test(test_secret_new_is_zeroed_and_writable),
        cmocka_unit_test(test_secret_zero_length_is_refused),
        cmocka_unit_test(test_secret_protection_faults_on_access),
        cmocka_unit_test(test_secret_wipe_compare_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
