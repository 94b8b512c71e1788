/*
 * restore_verifyparts_test.c - the pure parts of `coffer-restore verify`
 * (verify.h): option parsing, sample ranks, --live patterns, Maildir and
 * IMAP flags, and the content hash.
 * (Not restore_verify_test.c: the integration test has that name, and
 * test names are CMake target names.)
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "id.h"  /* cfr_id_plain */
#include "mem.h" /* cfr_malloc */
#include "verify.h"

static int
parse(struct restore_verify_opts *o, const char *const *args)
{
    char *argv[32];
    int n = 0;
    while (args[n] != NULL) {
        argv[n] = (char *)args[n];
        n++;
    }
    return restore_verify_parse(n, argv, o);
}

static void
test_parse(void **state)
{
    (void)state;
    struct restore_verify_opts o;
    const char *ok[] = {"--mailbox",
                        "a@x",
                        "--mailbox",
                        "b@x",
                        "--seed",
                        "99",
                        "--replica",
                        "h:1",
                        "--json",
                        "--keep",
                        "--sample-messages",
                        "5",
                        "--live",
                        "/m/%u/%d",
                        NULL};
    assert_int_equal(parse(&o, ok), 0);
    assert_int_equal(o.n_mailboxes, 2);
    assert_string_equal(o.mailboxes[1], "b@x");
    assert_true(o.seed_set);
    assert_int_equal(o.seed, 99);
    assert_int_equal(o.n_replicas, 1);
    assert_true(o.json && o.keep);
    assert_int_equal(o.sample_messages, 5);
    assert_int_equal(o.older, VERIFY_OLDER_DEFAULT);

    /* Each refused, with nothing half-applied that matters. */
    {
        const char *bad1[] = {"--seed", "x1", NULL};
        const char *bad2[] = {"--replica", "nohostport", NULL};
        const char *bad3[] = {"--mailbox", NULL};
        const char *bad4[] = {"--live", "/m/%q", NULL};
        const char *bad5[] = {"--frobnicate", "1", NULL};
        const char *bad6[] = {"--sample-messages", "-3", NULL};
        assert_int_equal(parse(&o, bad1), -1);
        assert_int_equal(parse(&o, bad2), -1);
        assert_int_equal(parse(&o, bad3), -1);
        assert_int_equal(parse(&o, bad4), -1);
        assert_int_equal(parse(&o, bad5), -1);
        assert_int_equal(parse(&o, bad6), -1);
    }
}

static void
test_rank(void **state)
{
    (void)state;
    uint64_t a = restore_verify_rank(1, "x", 1);
    /* Stable for a seed, different across seeds and names. */
    assert_true(a == restore_verify_rank(1, "x", 1));
    assert_true(a != restore_verify_rank(2, "x", 1));
    assert_true(a != restore_verify_rank(1, "y", 1));
    /* Roughly uniform: of 1000 names, about half rank below the middle. */
    {
        unsigned low = 0;
        for (unsigned i = 0; i < 1000; i++) {
            char n[16];
            snprintf(n, sizeof(n), "m%u", i);
            low += restore_verify_rank(5, n, strlen(n)) < (UINT64_MAX / 2);
        }
        assert_true(low > 400 && low < 600);
    }
}

static void
test_live_path(void **state)
{
    (void)state;
    char out[64];
    struct cfr_err e;
    assert_int_equal(restore_verify_live_path("/v/%d/%u/Maildir", "al@ex.org",
                                              out, sizeof(out), &e),
                     0);
    assert_string_equal(out, "/v/ex.org/al/Maildir");
    assert_int_equal(
        restore_verify_live_path("/v/%m%%", "bob", out, sizeof(out), &e), 0);
    assert_string_equal(out, "/v/bob%");
    /* Names that would leave the pattern's directory. */
    assert_int_equal(
        restore_verify_live_path("/v/%m", "../etc", out, sizeof(out), &e),
        CFR_EINVAL);
    assert_int_equal(
        restore_verify_live_path("/v/%m", "a/b", out, sizeof(out), &e),
        CFR_EINVAL);
    assert_int_equal(
        restore_verify_live_path("/v/%x", "a", out, sizeof(out), &e),
        CFR_EINVAL);
    assert_int_equal(
        restore_verify_live_path("/very/long/%m", "abcdefghij", out, 12, &e),
        CFR_ELIMIT);
}

static void
test_flags(void **state)
{
    (void)state;
    const uint8_t info[] = ":2,DFRST";
    assert_int_equal(restore_verify_info_flags(info, sizeof(info) - 1),
                     VERIFY_FLAG_DRAFT | VERIFY_FLAG_FLAGGED |
                         VERIFY_FLAG_ANSWERED | VERIFY_FLAG_SEEN |
                         VERIFY_FLAG_DELETED);
    assert_int_equal(restore_verify_info_flags((const uint8_t *)":2,Sab", 6),
                     VERIFY_FLAG_SEEN);
    assert_int_equal(restore_verify_info_flags((const uint8_t *)"", 0), 0);
    assert_int_equal(restore_verify_info_flags((const uint8_t *)":1,S", 4), 0);
    assert_int_equal(
        restore_verify_imap_flags("\\Seen \\Recent $Junk \\Flagged"),
        VERIFY_FLAG_SEEN | VERIFY_FLAG_FLAGGED);
    assert_int_equal(restore_verify_imap_flags(""), 0);
    assert_int_equal(restore_verify_imap_flags("\\Answered \\Deleted \\Draft"),
                     VERIFY_FLAG_ANSWERED | VERIFY_FLAG_DELETED |
                         VERIFY_FLAG_DRAFT);
}

/* The hash of a file of n bytes of a pattern, through a temporary file. */
static void
hash_of(size_t n, uint8_t out[32], uint64_t *size_r)
{
    char path[] = "/tmp/verify_hash.XXXXXX";
    int fd = mkstemp(path);
    uint8_t *p = cfr_malloc(n + 1);
    struct cfr_err e;
    assert_true(fd >= 0);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(i * 7 + (i >> 11));
    }
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(restore_verify_hash_fd(fd, out, size_r, &e), 0);
    close(fd);
    unlink(path);
    cfr_free(p);
}

static void
test_hash(void **state)
{
    (void)state;
    uint8_t a[32], b[32], want[32], blk[32];
    uint64_t n = 0;
    /* Empty and small files: the hash of one block's hash. */
    hash_of(0, a, &n);
    assert_int_equal(n, 0);
    cfr_id_plain("", 0, blk);
    cfr_id_plain(blk, 32, want);
    assert_memory_equal(a, want, 32);
    /* Across a block boundary: two block hashes, and a different value
     * from a file one byte shorter. */
    hash_of(VERIFY_HASH_BLOCK + 1, a, &n);
    assert_int_equal(n, VERIFY_HASH_BLOCK + 1);
    hash_of(VERIFY_HASH_BLOCK, b, &n);
    assert_int_equal(n, VERIFY_HASH_BLOCK);
    assert_memory_not_equal(a, b, 32);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),     cmocka_unit_test(test_rank),
        cmocka_unit_test(test_live_path), cmocka_unit_test(test_flags),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
