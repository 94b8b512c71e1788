/*
 * mime_test.c - the MIME cut finder: exact offsets for well-formed mail in
 * its common shapes, and for broken or hostile input, offsets that keep
 * their invariants (sorted, inside the message, capped) or none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime.h"
#include "prng.h"

#define CUTS 64

/* Offset just after the first occurrence of `what` at or after `from`. */
static uint64_t
after(const char *msg, const char *what, size_t from)
{
    const char *p = strstr(msg + from, what);
    assert_non_null(p);
    return (uint64_t)(p - msg) + strlen(what);
}

/* Offset of the first occurrence of `what` at or after `from`. */
static uint64_t
at(const char *msg, const char *what, size_t from)
{
    const char *p = strstr(msg + from, what);
    assert_non_null(p);
    return (uint64_t)(p - msg);
}

static size_t
cuts_of(const char *msg, uint64_t *cuts)
{
    return cfr_mime_cuts((const uint8_t *)msg, strlen(msg), cuts, CUTS);
}

static void
assert_cuts(const char *msg, const uint64_t *want, size_t nwant)
{
    uint64_t got[CUTS];
    size_t n = cuts_of(msg, got);
    if (n != nwant) {
        for (size_t i = 0; i < n; i++) {
            printf("got[%zu] = %llu\n", i, (unsigned long long)got[i]);
        }
    }
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(got[i], want[i]);
    }
}

static void
test_mime_plain_message_cuts_at_body(void **state)
{
    (void)state;
    const char *lf = "From: a@example.org\nTo: b@example.org\n"
                     "Subject: hi\n\nHello.\n";
    uint64_t want[] = {after(lf, "hi\n\n", 0)};
    assert_cuts(lf, want, 1);

    const char *crlf = "From: a@example.org\r\nSubject: a\r\n folded\r\n"
                       "\r\nHello.\r\n";
    uint64_t want2[] = {after(crlf, "folded\r\n\r\n", 0)};
    assert_cuts(crlf, want2, 1);

    /* An mbox "From " line before the header fields is accepted. */
    const char *mbox = "From alice@example.org Mon Mar  2 10:00:00 2026\n"
                       "Subject: x\n\nbody\n";
    uint64_t want3[] = {after(mbox, "x\n\n", 0)};
    assert_cuts(mbox, want3, 1);
}

static const char *multipart_lf =
    "From: a@example.org\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=simple\n"
    "\n"
    "preamble\n"
    "--simple\n"
    "Content-Type: text/plain\n"
    "\n"
    "first part\n"
    "--simple\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAAABBBBCCCC\n"
    "--simple--\n"
    "epilogue\n";

static void
test_mime_multipart_lf(void **state)
{
    (void)state;
    const char *m = multipart_lf;
    uint64_t want[] = {
        after(m, "simple\n\n", 0),
        after(m, "text/plain\n\n", 0),
        at(m, "\n--simple\nContent-Type: app", 0),
        after(m, "base64\n\n", 0),
        at(m, "\n--simple--", 0),
    };
    assert_cuts(m, want, 5);
}

static void
test_mime_multipart_crlf_quoted_boundary(void **state)
{
    (void)state;
    const char *m = "From: a@example.org\r\n"
                    "Content-Type: Multipart/Alternative;\r\n"
                    " BOUNDARY=\"=_b; 1 (x)\" ; charset=utf-8\r\n"
                    "\r\n"
                    "--=_b; 1 (x)\r\n"
                    "Content-Type: text/plain\r\n"
                    "\r\n"
                    "plain\r\n"
                    "--=_b; 1 (x)  \r\n" /* transport padding */
                    "Content-Type: text/html\r\n"
                    "\r\n"
                    "<p>html</p>\r\n"
                    "--=_b; 1 (x)--\r\n";
    uint64_t want[] = {
        after(m, "utf-8\r\n\r\n", 0),   after(m, "text/plain\r\n\r\n", 0),
        at(m, "\r\n--=_b; 1 (x)  ", 0), after(m, "text/html\r\n\r\n", 0),
        at(m, "\r\n--=_b; 1 (x)--", 0),
    };
    assert_cuts(m, want, 5);
}

static void
test_mime_unquoted_boundary_and_comments(void **state)
{
    (void)state;
    /* Outlook-style unquoted boundary with '=' and a comment before it. */
    const char *m = "Content-Type: multipart/mixed (comment; boundary=no);"
                    " boundary=----=_NextPart_000\n"
                    "\n"
                    "------=_NextPart_000\n"
                    "\n" /* a part with no header fields at all */
                    "text\n"
                    "------=_NextPart_000--\n";
    uint64_t want[] = {
        after(m, "000\n\n", 0),
        after(m, "------=_NextPart_000\n\n", 0),
        at(m, "\n------=_NextPart_000--", 0),
    };
    assert_cuts(m, want, 3);
}

static void
test_mime_nested_and_rfc822(void **state)
{
    (void)state;
    const char *m = "Subject: nested\n"
                    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
                    "\n"
                    "--outer\n"
                    "Content-Type: multipart/alternative; boundary=inner\n"
                    "\n"
                    "--inner\n"
                    "Content-Type: text/plain\n"
                    "\n"
                    "plain\n"
                    "--inner\n"
                    "Content-Type: text/html\n"
                    "\n"
                    "<b>html</b>\n"
                    "--inner--\n"
                    "\n"
                    "--outer\n"
                    "Content-Type: message/rfc822\n"
                    "\n"
                    "From: c@example.org\n"
                    "Content-Type: multipart/mixed; boundary=deep\n"
                    "\n"
                    "--deep\n"
                    "Content-Type: text/plain\n"
                    "\n"
                    "forwarded\n"
                    "--deep--\n"
                    "--outer--\n";
    uint64_t want[] = {
        after(m, "\"outer\"\n\n", 0),
        after(m, "boundary=inner\n\n", 0),
        after(m, "text/plain\n\n", 0),
        at(m, "\n--inner\nContent-Type: text/html", 0),
        after(m, "text/html\n\n", 0),
        at(m, "\n--inner--", 0),
        at(m, "\n--outer\nContent-Type: message", 0),
        after(m, "message/rfc822\n\n", 0),
        after(m, "boundary=deep\n\n", 0),
        after(m, "text/plain\n\nforwarded", 0) - strlen("forwarded"),
        at(m, "\n--deep--", 0),
        at(m, "\n--outer--", 0),
    };
    assert_cuts(m, want, 12);
}

static void
test_mime_missing_close_and_prefix_boundaries(void **state)
{
    (void)state;
    /* No closing delimiter: the last part runs to the end of the message.
     * "--abcdef" is not a delimiter for boundary "abc". */
    const char *m = "Content-Type: multipart/mixed; boundary=abc\n"
                    "\n"
                    "--abc\n"
                    "Content-Type: text/plain\n"
                    "\n"
                    "one\n"
                    "--abcdef\n"
                    "still one\n"
                    "--abc\n"
                    "\n"
                    "two, never closed\n";
    uint64_t want[] = {
        after(m, "abc\n\n", 0),
        after(m, "text/plain\n\n", 0),
        at(m, "\n--abc\n\ntwo", 0),
        after(m, "--abc\n\n", 20),
    };
    assert_cuts(m, want, 4);
}

static void
test_mime_truncated_and_broken_headers(void **state)
{
    (void)state;
    uint64_t cuts[CUTS];
    /* Headers that never end: no body, no cut. */
    assert_int_equal(cuts_of("From: a@example.org\nSubject: cut off", cuts), 0);
    assert_int_equal(cuts_of("From: a@example.org\r\nSubject: x\r\n", cuts), 0);
    /* A line that is no header field: not a message. */
    assert_int_equal(cuts_of("this is not a header\n\nbody\n", cuts), 0);
    assert_int_equal(cuts_of(" folded first\n\nbody\n", cuts), 0);
    assert_int_equal(cuts_of(": empty name\n\nbody\n", cuts), 0);
    /* A part with truncated headers gives no start, but the part end (the
     * message end) is not a cut either; the top body start still is. */
    const char *m = "Content-Type: multipart/mixed; boundary=q\n\n"
                    "--q\nContent-Type: text/pl";
    uint64_t want[] = {after(m, "q\n\n", 0)};
    assert_cuts(m, want, 1);
    /* A Content-Type with no boundary, or an empty or oversized one, is a
     * leaf. */
    const char *nob = "Content-Type: multipart/mixed\n\n--x\n\nbody\n";
    uint64_t want2[] = {after(nob, "mixed\n\n", 0)};
    assert_cuts(nob, want2, 1);
    const char *empty = "Content-Type: multipart/mixed; boundary=\"\"\n\n"
                        "--\n\nbody\n";
    uint64_t want3[] = {after(empty, "\"\"\n\n", 0)};
    assert_cuts(empty, want3, 1);
    char big[600];
    int n =
        snprintf(big, sizeof(big),
                 "Content-Type: multipart/mixed; boundary=%0*d\n\n", 300, 7);
    assert_true(n > 300);
    uint64_t want4[] = {(uint64_t)n};
    /* A body, so the cut lies inside the message. */
    snprintf(big + n, sizeof(big) - (size_t)n, "x\n");
    assert_cuts(big, want4, 1);
    /* Empty input and a NULL message are fine. */
    assert_int_equal(cfr_mime_cuts(NULL, 0, cuts, CUTS), 0);
    assert_int_equal(cfr_mime_cuts((const uint8_t *)"x", 1, cuts, 0), 0);
}

static void
check_invariants(const uint8_t *msg, size_t len, size_t cuts_max)
{
    uint64_t cuts[CUTS];
    assert_true(cuts_max <= CUTS);
    size_t n = cfr_mime_cuts(msg, len, cuts, cuts_max);
    assert_true(n <= cuts_max);
    for (size_t i = 0; i < n; i++) {
        assert_true(cuts[i] > 0);
        assert_true(cuts[i] < len);
        if (i > 0) {
            assert_true(cuts[i] > cuts[i - 1]);
        }
    }
}

static void
test_mime_garbage_keeps_invariants(void **state)
{
    (void)state;
    uint64_t seed = 1;
    uint64_t cuts[CUTS];
    /* Uniform random bytes: never a header block. */
    for (int round = 0; round < 200; round++) {
        size_t len = 1 + (size_t)(cfr_splitmix64(&seed) % 4096);
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)cfr_splitmix64(&seed);
        }
        assert_int_equal(cfr_mime_cuts(buf, len, cuts, CUTS), 0);
        free(buf);
    }
    /* Mutations of a real multipart message: every prefix, and random byte
     * flips toward the characters the parser cares about. */
    const uint8_t *m = (const uint8_t *)multipart_lf;
    size_t mlen = strlen(multipart_lf);
    for (size_t len = 0; len <= mlen; len++) {
        /* An exact-size copy, so a sanitizer sees any over-read. */
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        memcpy(buf, m, len);
        check_invariants(buf, len, CUTS);
        check_invariants(buf, len, 2);
        free(buf);
    }
    const char alphabet[] = "-\n\r :;\"=()\\/ab";
    uint8_t *buf = malloc(mlen);
    assert_non_null(buf);
    for (int round = 0; round < 5000; round++) {
        memcpy(buf, m, mlen);
        int flips = 1 + (int)(cfr_splitmix64(&seed) % 8);
        for (int f = 0; f < flips; f++) {
            size_t pos = (size_t)(cfr_splitmix64(&seed) % mlen);
            buf[pos] = (uint8_t)
                alphabet[cfr_splitmix64(&seed) % (sizeof(alphabet) - 1)];
        }
        check_invariants(buf, mlen, CUTS);
    }
    free(buf);
}

static void
test_mime_depth_and_cut_caps(void **state)
{
    (void)state;
    /* Nesting far past the depth cap: the scanner stops descending. */
    size_t cap = 64 * 1024;
    char *m = malloc(cap);
    assert_non_null(m);
    size_t n = 0;
    for (int d = 0; d < 100; d++) {
        n += (size_t)snprintf(
            m + n, cap - n,
            "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", d, d);
    }
    n += (size_t)snprintf(m + n, cap - n, "\nleaf\n");
    uint64_t cuts[CUTS];
    size_t got = cfr_mime_cuts((const uint8_t *)m, n, cuts, CUTS);
    /* One body start per level entered: the top and CFR_MIME_DEPTH_MAX
     * nested containers. */
    assert_int_equal(got, CFR_MIME_DEPTH_MAX + 1);
    check_invariants((const uint8_t *)m, n, CUTS);

    /* Many parts: only the first cuts_max offsets, still sorted. */
    n = (size_t)snprintf(m, cap,
                         "Content-Type: multipart/mixed; "
                         "boundary=p\n\n");
    for (int i = 0; i < 500; i++) {
        n += (size_t)snprintf(m + n, cap - n, "--p\n\npart %d\n", i);
    }
    n += (size_t)snprintf(m + n, cap - n, "--p--\n");
    uint64_t all[1200];
    size_t total = cfr_mime_cuts((const uint8_t *)m, n, all, 1200);
    assert_int_equal(total, 1 + 2 * 500);
    got = cfr_mime_cuts((const uint8_t *)m, n, cuts, 10);
    assert_int_equal(got, 10);
    assert_memory_equal(cuts, all, 10 * sizeof(cuts[0]));
    free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mime_plain_message_cuts_at_body),
        cmocka_unit_test(test_mime_multipart_lf),
        cmocka_unit_test(test_mime_multipart_crlf_quoted_boundary),
        cmocka_unit_test(test_mime_unquoted_boundary_and_comments),
        cmocka_unit_test(test_mime_nested_and_rfc822),
        cmocka_unit_test(test_mime_missing_close_and_prefix_boundaries),
        cmocka_unit_test(test_mime_truncated_and_broken_headers),
        cmocka_unit_test(test_mime_garbage_keeps_invariants),
        cmocka_unit_test(test_mime_depth_and_cut_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
