/*
 * restore_select_test.c - the --at time expressions: every accepted form
 * to the exact millisecond, and garbage, out-of-range fields, negative
 * and far-away times and overflowing numbers refused with CFR_EINVAL and
 * a message that says what is accepted. restore_pick_snapshot needs a
 * vault and is tested in tests/integration/restore_browse_test.c.
 *
 * Also the pure helpers of browse.h that ls and find print with (here,
 * since a unit target restore_browse_test would clash with the
 * integration test of that name): terminal-safe text, IMAP folder names
 * (modified UTF-7), Maildir flags, Message-ID cores, header fields and
 * the page cache's bound and recency.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "browse.h"
#include "select.h"

/* 2026-11-20T10:30:00.000Z */
#define T0   INT64_C(1795170600000)
#define MIN  INT64_C(60000)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
/* "now" for the relative forms: 2026-11-23T00:00:00Z */
#define NOW (T0 + 3 * DAY - 10 * HOUR - 30 * MIN)

struct okcase {
    const char *s;
    int64_t want;
};

static void
test_restore_parse_at_accepted(void **state)
{
    (void)state;
    static const struct okcase cases[] = {
        {"2026-11-20T10:30:00Z", T0 + 999},
        {"2026-11-20T10:30:00", T0 + 999},
        {"2026-11-20T10:30Z", T0 + MIN - 1},
        {"2026-11-20 10:30", T0 + MIN - 1},
        {"2026-11-20 10:30:07", T0 + 7000 + 999},
        {"2026-11-20T10:30:00.123Z", T0 + 123},
        {"2026-11-20T10:30:00.123456789Z", T0 + 123},
        {"2026-11-20T10:30:00.5Z", T0 + 599},
        {"2026-11-20T10:30:00.12", T0 + 129},
        {"2026-11-20", T0 + 13 * HOUR + 30 * MIN - 1},
        {"2024-02-29", INT64_C(1709164800000) + DAY - 1},
        {"2000-02-29", INT64_C(951782400000) + DAY - 1},
        {"1970-01-01T00:00:00.000Z", 0},
        {"9999-12-31", INT64_C(253402300799999)},
        {"@1795170600", T0 + 999},
        {"@0", 999},
        {"now", NOW},
        {"3d", NOW - 3 * DAY},
        {"3d ago", NOW - 3 * DAY},
        {"12h", NOW - 12 * HOUR},
        {"90m", NOW - 90 * MIN},
        {"2w", NOW - 14 * DAY},
        {"0m", NOW},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cfr_err err;
        int64_t ms = -42;
        int rc;
        cfr_err_clear(&err);
        rc = restore_parse_at(cases[i].s, NOW, &ms, &err);
        if (rc != 0 || ms != cases[i].want) {
            fail_msg("\"%s\": rc %d (%s), ms %lld, want %lld", cases[i].s, rc,
                     err.msg, (long long)ms, (long long)cases[i].want);
        }
    }
}

static void
test_restore_parse_at_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "yesterday",
        "2026",
        "2026-11",
        "2026-11-2",
        "2026/11/20",
        "2026-13-01",
        "2026-00-10",
        "2026-04-31",
        "2026-02-29", /* not a leap year */
        "1900-02-29",
        "2026-11-00",
        "2026-11-20T24:00",
        "2026-11-20T10:60",
        "2026-11-20T10:30:60",
        "2026-11-20T10",
        "2026-11-20T10:30:00.",
        "2026-11-20T10:30:00.1234567890Z",
        "2026-11-20T10:30:00+02:00",
        "2026-11-20T10:30:00ZZ",
        "2026-11-20Z",
        "2026-11-20 ",
        " 2026-11-20",
        "1969-12-31", /* before the epoch */
        "0000-01-01",
        "10000-01-01", /* far future */
        "99999-12-31",
        "@",
        "@-1", /* negative */
        "@1.5",
        "@1795170600x",
        "@253402300800",               /* after 9999 */
        "@99999999999999999999999999", /* overflow */
        "-3d",
        "3",
        "3x",
        "3 d",
        "3dago",
        "3d  ago",
        "3d ago!",
        "d",
        "m3",
        "99999999999999999999999d", /* overflow */
        "999999999999999w",         /* reaches before 1970 */
        "21000d",                   /* 1969: before 1970 */
        "NOW",
        "\x1b[31m3d",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cfr_err err;
        int64_t ms = -42;
        int rc;
        cfr_err_clear(&err);
        rc = restore_parse_at(bad[i], NOW, &ms, &err);
        if (rc != CFR_EINVAL) {
            fail_msg("\"%s\": rc %d, ms %lld: should be refused", bad[i], rc,
                     (long long)ms);
        }
        assert_int_equal(ms, -42); /* nothing written on failure */
        assert_non_null(strstr(err.msg, "--at"));
        assert_non_null(strstr(err.msg, "accepted"));
        /* The input is quoted: no raw escape byte reaches a terminal. */
        assert_null(strchr(err.msg, '\x1b'));
    }
    assert_int_equal(restore_parse_at(NULL, NOW, &(int64_t){0}, NULL),
                     CFR_EINVAL);
}

static void
test_restore_parse_at_bad_clock(void **state)
{
    (void)state;
    int64_t ms = -42;
    /* A relative time needs a sane clock; a broken one is refused. */
    assert_int_equal(restore_parse_at("1d", -1, &ms, NULL), CFR_EINVAL);
    assert_int_equal(restore_parse_at("now", INT64_MAX, &ms, NULL), CFR_EINVAL);
    assert_int_equal(ms, -42);
    /* Absolute forms do not depend on it. */
    assert_int_equal(restore_parse_at("@10", -1, &ms, NULL), 0);
    assert_int_equal(ms, 10999);
}

/* ---- browse.h helpers ------------------------------------------------- */

static const char *
safe(const char *in, size_t n, char *out, size_t out_size)
{
    return restore_safe_text((const uint8_t *)in, n, out, out_size);
}

static void
test_browse_safe_text(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(safe("INBOX", 5, out, sizeof(out)), "INBOX");
    assert_string_equal(safe("a\x1b[2Jb", 6, out, sizeof(out)), "a\\x1b[2Jb");
    assert_string_equal(safe("\xc3\xa9t\xc3\xa9", 5, out, sizeof(out)),
                        "\xc3\xa9t\xc3\xa9"); /* UTF-8 shown as text */
    /* C1 CSI as UTF-8, a lone 0x9b, invalid bytes, DEL, NUL, newline. */
    assert_string_equal(safe("\xc2\x9b"
                             "1m",
                             4, out, sizeof(out)),
                        "\\xc2\\x9b1m");
    assert_string_equal(safe("\x9b"
                             "1m",
                             3, out, sizeof(out)),
                        "\\x9b1m");
    assert_string_equal(safe("\xff\x7f\0\n", 4, out, sizeof(out)),
                        "\\xff\\x7f\\x00\\x0a");
    /* A right-to-left override (U+202E) would reorder the screen. */
    assert_string_equal(safe("a\xe2\x80\xae"
                             "b",
                             5, out, sizeof(out)),
                        "a\\xe2\\x80\\xaeb");
    assert_string_equal(safe("a\\b", 3, out, sizeof(out)), "a\\\\b");
    /* Cut with "..." and always terminated, never a half escape. */
    assert_string_equal(safe("abcdefghijklmnop", 16, out, 10), "abcdef...");
    assert_string_equal(safe("\x1b\x1b\x1b\x1b", 4, out, 10), "\\x1b...");
    assert_string_equal(safe("abc", 3, out, 4), "abc");
    assert_string_equal(safe("abcd", 4, out, 4), "...");
}

static void
test_browse_folder_imap(void **state)
{
    (void)state;
    static const struct {
        const char *maildir, *imap;
    } cases[] = {
        {"", "INBOX"},
        {".Sent", "Sent"},
        {".Lists.dev", "Lists/dev"},
        {".&AOk-t&AOk-", "\xc3\xa9t\xc3\xa9"},
        {".&AOkAdADp-", "\xc3\xa9t\xc3\xa9"},
        {".&2D3eAA-", "\xf0\x9f\x98\x80"},
        {".&ZeVnLA-.x", "\xe6\x97\xa5\xe6\x9c\xac/x"},
        {".a&-b", "a&b"},
        /* not modified UTF-7: shown as it is, without the dot */
        {".&bad", "&bad"},
        {".&2D3-", "&2D3-"}, /* a lone high surrogate */
        {".&AOl-", "&AOl-"}, /* bits left over */
        {".a\x1b"
         "b",
         "a\x1b"
         "b"}, /* raw; printing makes it safe */
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(restore_folder_imap((const uint8_t *)cases[i].maildir,
                                             strlen(cases[i].maildir), out,
                                             sizeof(out)),
                         0);
        if (strcmp(out, cases[i].imap) != 0) {
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, out,
                     cases[i].imap);
        }
    }
    assert_int_equal(restore_folder_imap((const uint8_t *)".Sent", 5, out, 4),
                     CFR_ELIMIT);
}

static void
test_browse_flags(void **state)
{
    (void)state;
    struct restore_flags fl;
    char out[128];
    restore_flags_decode((const uint8_t *)":2,DFPRSTba", 11, &fl);
    assert_true(fl.maildir2);
    assert_int_equal(fl.bits, RESTORE_FLAG_DRAFT | RESTORE_FLAG_FLAGGED |
                                  RESTORE_FLAG_PASSED | RESTORE_FLAG_ANSWERED |
                                  RESTORE_FLAG_SEEN | RESTORE_FLAG_DELETED);
    assert_string_equal(fl.keywords, "ab");
    assert_string_equal(restore_flags_text(&fl, out, sizeof(out)),
                        "Seen,Answered,Flagged,Deleted,Draft,Passed,kw:ab");
    restore_flags_decode((const uint8_t *)":2,S", 4, &fl);
    assert_string_equal(restore_flags_text(&fl, out, sizeof(out)), "Seen");
    restore_flags_decode((const uint8_t *)":2,", 3, &fl);
    assert_true(fl.maildir2);
    assert_string_equal(restore_flags_text(&fl, out, sizeof(out)), "-");
    restore_flags_decode((const uint8_t *)"", 0, &fl);
    assert_false(fl.maildir2);
    assert_string_equal(restore_flags_text(&fl, out, sizeof(out)), "-");
    /* Experimental ":1," info carries no flags; odd letters are counted. */
    restore_flags_decode((const uint8_t *)":1,S", 4, &fl);
    assert_int_equal(fl.bits, 0);
    restore_flags_decode((const uint8_t *)":2,SX9", 6, &fl);
    assert_int_equal(fl.bits, RESTORE_FLAG_SEEN);
    assert_int_equal(fl.unknown, 2);
    /* A small buffer is cut, still terminated. */
    restore_flags_decode((const uint8_t *)":2,RS", 5, &fl);
    assert_string_equal(restore_flags_text(&fl, out, 8), "Seen");
}

static void
test_browse_msgid_and_headers(void **state)
{
    (void)state;
    static const char msg[] = "Received: from x\r\n"
                              "FROM: Alice <a@example.org>\r\n"
                              "Subject : a folded\r\n"
                              "\tsubject line \r\n"
                              "Date: Mon, 23 Nov 2026 15:00:00 +0000\r\n"
                              "Message-ID: < m1@example.org >\r\n"
                              "\r\n"
                              "Subject: not a header, the body\r\n";
    uint8_t out[64];
    size_t off, len;
    long n;

    restore_msgid_core((const uint8_t *)" <m1@x> ", 8, &off, &len);
    assert_int_equal(off, 2);
    assert_int_equal(len, 4);
    restore_msgid_core((const uint8_t *)"m1@x", 4, &off, &len);
    assert_int_equal(off, 0);
    assert_int_equal(len, 4);
    restore_msgid_core((const uint8_t *)"<>", 2, &off, &len);
    assert_int_equal(len, 0);
    restore_msgid_core((const uint8_t *)"<", 1, &off, &len);
    assert_int_equal(len, 1);

    n = restore_header_field((const uint8_t *)msg, sizeof(msg) - 1, "from", out,
                             sizeof(out));
    assert_int_equal(n, 21);
    assert_string_equal((char *)out, "Alice <a@example.org>");
    n = restore_header_field((const uint8_t *)msg, sizeof(msg) - 1, "subject",
                             out, sizeof(out));
    assert_true(n > 0);
    assert_string_equal((char *)out, "a folded\tsubject line");
    n = restore_header_field((const uint8_t *)msg, sizeof(msg) - 1, "date", out,
                             10);
    assert_int_equal(n, 9); /* cut to the room given */
    assert_string_equal((char *)out, "Mon, 23 N");
    /* "Received" is not "Re", and the body is not the header block. */
    assert_int_equal(restore_header_field((const uint8_t *)msg, sizeof(msg) - 1,
                                          "re", out, sizeof(out)),
                     -1);
    assert_int_equal(restore_header_field((const uint8_t *)"\r\nFrom: x\r\n",
                                          11, "from", out, sizeof(out)),
                     -1);
    /* A header block cut short (no blank line) still answers. */
    assert_int_equal(restore_header_field((const uint8_t *)"From: x", 7, "from",
                                          out, sizeof(out)),
                     1);
}

static void
test_browse_page_lru(void **state)
{
    (void)state;
    struct restore_page_lru *c = restore_page_lru_new(100);
    struct restore_page_cache *ops;
    uint8_t id[4][32], page[40];
    struct cfr_buf b;
    uint64_t hits, misses;
    size_t bytes;

    assert_non_null(c);
    ops = restore_page_lru_ops(c);
    cfr_buf_init(&b, 1 << 20);
    for (int i = 0; i < 4; i++) {
        memset(id[i], 0, 32);
        id[i][0] = (uint8_t)i; /* the same bucket for 0 and 4096 apart */
        id[i][5] = (uint8_t)(0x10 * i);
    }
    for (int i = 0; i < 2; i++) {
        memset(page, 'a' + i, sizeof(page));
        ops->put(ops, id[i], page, sizeof(page));
    }
    assert_int_equal(ops->get(ops, id[0], &b), 1); /* 0 is now the newest */
    assert_int_equal(b.len, 40);
    assert_int_equal(b.data[0], 'a');
    cfr_buf_reset(&b);
    memset(page, 'c', sizeof(page));
    ops->put(ops, id[2], page, sizeof(page)); /* 120 > 100: 1 goes */
    assert_int_equal(ops->get(ops, id[1], &b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(ops->get(ops, id[0], &b), 1);
    cfr_buf_reset(&b);
    assert_int_equal(ops->get(ops, id[2], &b), 1);
    assert_int_equal(b.data[39], 'c');
    cfr_buf_reset(&b);
    /* Larger than the whole cache: not kept, nothing evicted. */
    {
        uint8_t big[101];
        memset(big, 'z', sizeof(big));
        ops->put(ops, id[3], big, sizeof(big));
        assert_int_equal(ops->get(ops, id[3], &b), 0);
    }
    restore_page_lru_stats(c, &hits, &misses, &bytes);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 2);
    assert_int_equal(bytes, 80);
    cfr_buf_fini(&b);
    restore_page_lru_free(c);
    restore_page_lru_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_parse_at_accepted),
        cmocka_unit_test(test_restore_parse_at_refused),
        cmocka_unit_test(test_restore_parse_at_bad_clock),
        cmocka_unit_test(test_browse_safe_text),
        cmocka_unit_test(test_browse_folder_imap),
        cmocka_unit_test(test_browse_flags),
        cmocka_unit_test(test_browse_msgid_and_headers),
        cmocka_unit_test(test_browse_page_lru),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
