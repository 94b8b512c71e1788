/*
 * restore_mbox_test.c - the mbox writer of `restore --format mbox`
 * (mbox.h) and the selection helpers of restore.h:
 *  - mboxrd quoting round-trips: a reader that drops one '>' from every
 *    ">*From " line and the inserted flag lines gets the message back
 *    byte for byte, also for "From " lines at the very start, in the
 *    header, and with many '>';
 *  - the flag lines land at the end of the header block, in the line
 *    ending of the blank line (CRLF too), with the right letters;
 *  - an empty body, a message without a final newline, one without a
 *    blank line and an empty message give well-formed mbox;
 *  - the From line: Return-Path or MAILER-DAEMON, asctime date in UTC;
 *  - a folder becomes one file in mtime order through the safe writer,
 *    which refuses to replace an existing file;
 *  - --folder names and host-restore folder names.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "mbox.h"
#include "mem.h"
#include "restore.h"

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))
#define JAN1_2026 INT64_C(1767225600) /* a Thursday, 00:00:00 UTC */

static int
out_buf(void *ctx, const void *p, size_t n, struct cfr_err *err)
{
    return cfr_buf_append(ctx, p, n, err);
}

/* The message as mbox text (NUL-terminated in b). */
static void
write_one(const char *msg, size_t len, const char *info, bool in_new,
          const struct restore_mbox_keywords *kw, struct cfr_buf *b)
{
    struct restore_mbox_meta m = {info, in_new, JAN1_2026 * 1000000000, kw};
    struct cfr_err err;
    cfr_buf_init(b, 1 << 20);
    assert_int_equal(
        restore_mbox_message((const uint8_t *)msg, len, &m, out_buf, b, &err),
        0);
    assert_int_equal(cfr_buf_append(b, "", 1, &err), 0);
    b->len--;
}

/*
 * An mboxrd reader for one message: skips the From line, drops lines
 * starting with one of the flag headers we insert, removes one '>' from
 * ">+From " lines and the final separator newline. Returns an owned
 * string.
 */
static char *
read_back(const char *mbox, size_t len, size_t *len_r)
{
    const char *nl = memchr(mbox, '\n', len);
    char *out = cfr_malloc(len + 1);
    size_t at = 0, i;
    assert_non_null(nl);
    assert_non_null(out);
    assert_memory_equal(mbox, "From ", 5);
    i = (size_t)(nl - mbox) + 1;
    while (i < len) {
        const char *e = memchr(mbox + i, '\n', len - i);
        size_t end = e != NULL ? (size_t)(e - mbox) + 1 : len;
        const char *l = mbox + i;
        size_t k = 0;
        if (strncmp(l, "Status: ", 8) == 0 ||
            strncmp(l, "X-Status: ", 10) == 0 ||
            strncmp(l, "X-Keywords: ", 12) == 0) {
            i = end;
            continue;
        }
        while (i + k < end && l[k] == '>') {
            k++;
        }
        if (k > 0 && end - i - k >= 5 && strncmp(l + k, "From ", 5) == 0) {
            l++; /* one '>' less */
        }
        memcpy(out + at, l, end - (size_t)(l - mbox));
        at += end - (size_t)(l - mbox);
        i = end;
    }
    /* The separator: one blank line after the message. */
    assert_true(at >= 1 && out[at - 1] == '\n');
    at--;
    out[at] = '\0';
    *len_r = at;
    return out;
}

static void
test_quoting_round_trip(void **state)
{
    static const char msg[] = "From: alice@example.org\n"
                              "Subject: From here\n"
                              "\n"
                              "From the start of a body line.\n"
                              ">From once quoted\n"
                              ">>>From three times\n"
                              "Fromage is not a From line\n"
                              " From with a blank first\n"
                              "From \n"
                              "last From line\n";
    struct cfr_buf b;
    size_t n;
    char *back;
    (void)state;
    write_one(msg, strlen(msg), ":2,S", false, NULL, &b);
    /* The quoted lines, exactly. */
    assert_non_null(strstr((char *)b.data, "\n>From the start of a body"));
    assert_non_null(strstr((char *)b.data, "\n>>From once quoted\n"));
    assert_non_null(strstr((char *)b.data, "\n>>>>From three times\n"));
    assert_non_null(strstr((char *)b.data, "\nFromage is not"));
    assert_non_null(strstr((char *)b.data, "\n From with a blank"));
    assert_non_null(strstr((char *)b.data, "\n>From \n"));
    assert_non_null(strstr((char *)b.data, "\nSubject: From here\n"));
    back = read_back((char *)b.data, b.len, &n);
    assert_int_equal(n, strlen(msg));
    assert_memory_equal(back, msg, n);
    cfr_free(back);
    cfr_buf_fini(&b);

    /* A message whose first line is a "From " line (an mbox import). */
    static const char first[] = "From someone Mon Jan  1 00:00:00 2001\n"
                                "Subject: x\n\nbody\n";
    write_one(first, strlen(first), "", true, NULL, &b);
    assert_non_null(strstr((char *)b.data, "\n>From someone Mon"));
    back = read_back((char *)b.data, b.len, &n);
    assert_int_equal(n, strlen(first));
    assert_memory_equal(back, first, n);
    cfr_free(back);
    cfr_buf_fini(&b);
}

static void
test_flag_lines_at_end_of_header(void **state)
{
    static const char lf[] = "Subject: a\nX-Other: b\n\nbody\n";
    static const char crlf[] = "Subject: a\r\nX-Other: b\r\n\r\nbody\r\n";
    struct cfr_buf b;
    const char *p;
    (void)state;

    write_one(lf, strlen(lf), ":2,DFPRST", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: a\nX-Other: b\n"
                           "Status: RO\nX-Status: AFTD\n"
                           "X-Keywords: $Forwarded\n"
                           "\nbody\n\n");
    cfr_buf_fini(&b);

    /* In new/, unseen: Status without O or R, so no line; no X-Status. */
    write_one(lf, strlen(lf), "", true, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: a\nX-Other: b\n\nbody\n\n");
    cfr_buf_fini(&b);

    /* cur/ without flags: old, not seen. */
    write_one(lf, strlen(lf), ":2,", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: a\nX-Other: b\nStatus: O\n\nbody\n\n");
    cfr_buf_fini(&b);

    /* CRLF: the inserted lines end as the blank line does. */
    write_one(crlf, strlen(crlf), ":2,RS", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: a\r\nX-Other: b\r\nStatus: RO\r\n"
                           "X-Status: A\r\n\r\nbody\r\n\n");
    cfr_buf_fini(&b);

    /* Keywords by letter from dovecot-keywords; unknown letters dropped. */
    {
        static const char kwf[] = "0 $Junk\n1 work\nbad line\n30 toobig\n"
                                  "3 has space\n";
        struct restore_mbox_keywords kw;
        restore_mbox_keywords_parse((const uint8_t *)kwf, strlen(kwf), &kw);
        assert_string_equal(kw.name[0], "$Junk");
        assert_string_equal(kw.name[1], "work");
        assert_string_equal(kw.name[2], "");
        assert_string_equal(kw.name[3], ""); /* a blank: refused */
        write_one(lf, strlen(lf), ":2,Sbac", false, &kw, &b);
        assert_non_null(
            strstr((char *)b.data, "\nStatus: RO\nX-Keywords: work $Junk\n\n"));
        cfr_buf_fini(&b);
    }
}

static void
test_edge_shapes(void **state)
{
    struct cfr_buf b;
    const char *p;
    size_t n;
    char *back;
    (void)state;

    /* Empty body: the blank line stays, then the separator. */
    write_one("Subject: e\n\n", 12, ":2,S", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: e\nStatus: RO\n\n\n");
    back = read_back((char *)b.data, b.len, &n);
    assert_int_equal(n, 12);
    assert_memory_equal(back, "Subject: e\n\n", 12);
    cfr_free(back);
    cfr_buf_fini(&b);

    /* No final newline: one is added before the separator. */
    write_one("Subject: t\n\nno newline", 22, ":2,", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: t\nStatus: O\n\nno newline\n\n");
    cfr_buf_fini(&b);

    /* No blank line at all: the flag lines after the last header. */
    write_one("Subject: h", 10, ":2,S", false, NULL, &b);
    p = strchr((char *)b.data, '\n') + 1;
    assert_string_equal(p, "Subject: h\nStatus: RO\n\n");
    cfr_buf_fini(&b);

    /* An empty message still makes a From line and a separator. */
    write_one(NULL, 0, "", true, NULL, &b);
    assert_string_equal((char *)b.data,
                        "From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n\n");
    cfr_buf_fini(&b);
}

static void
test_from_line(void **state)
{
    struct cfr_buf b;
    (void)state;
    write_one("Return-Path: <bounce@example.net>\nSubject: r\n\nx\n", 48, "",
              true, NULL, &b);
    assert_true(strncmp((char *)b.data,
                        "From bounce@example.net Thu Jan  1 00:00:00 2026\n",
                        49) == 0);
    cfr_buf_fini(&b);
    write_one("return-path:  <>\nSubject: r\n\nx\n", 31, "", true, NULL, &b);
    assert_true(strncmp((char *)b.data,
                        "From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n",
                        44) == 0);
    cfr_buf_fini(&b);
    /* A blank inside would break the From line: not used. */
    write_one("Return-Path: <a b@c>\n\nx\n", 24, "", true, NULL, &b);
    assert_true(strncmp((char *)b.data, "From MAILER-DAEMON ", 19) == 0);
    cfr_buf_fini(&b);
    /* Only the header block counts. */
    write_one("Subject: s\n\nReturn-Path: <body@x>\n", 34, "", true, NULL, &b);
    assert_true(strncmp((char *)b.data, "From MAILER-DAEMON ", 19) == 0);
    cfr_buf_fini(&b);
}

/* ---- a folder ------------------------------------------------------------ */

static char base[256];

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static void
put(const char *rel, const char *text, int64_t secs)
{
    char p[512];
    struct timespec ts[2] = {{(time_t)secs, 5}, {(time_t)secs, 5}};
    FILE *f;
    FMT(p, "%s/%s", base, rel);
    f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void
test_folder_file(void **state)
{
    char p[512];
    struct cfr_err err;
    struct stat st;
    uint64_t msgs = 0, bytes = 0;
    int root, out;
    char *got;
    FILE *f;
    long n;
    (void)state;

    FMT(base, "/tmp/restore_mbox_test.%ld", (long)getpid());
    assert_int_equal(mkdir(base, 0700), 0);
    FMT(p, "%s/.Sent", base);
    assert_int_equal(mkdir(p, 0700), 0);
    FMT(p, "%s/.Sent/cur", base);
    assert_int_equal(mkdir(p, 0700), 0);
    FMT(p, "%s/.Sent/new", base);
    assert_int_equal(mkdir(p, 0700), 0);
    FMT(p, "%s/out", base);
    assert_int_equal(mkdir(p, 0700), 0);
    /* Names sort the other way round from the mtimes. */
    put(".Sent/cur/1.a:2,S", "Subject: second\n\nb\n", JAN1_2026 + 60);
    put(".Sent/new/2.b", "Subject: first\n\na\n", JAN1_2026);
    put(".Sent/cur/0.c:2,a", "Subject: third\n\nc\n", JAN1_2026 + 120);
    put(".Sent/dovecot-keywords", "0 urgent\n", JAN1_2026);

    root = open(base, O_RDONLY | O_DIRECTORY);
    assert_true(root >= 0);
    FMT(p, "%s/out", base);
    out = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(out >= 0);
    assert_int_equal(restore_mbox_folder(root, ".Sent", out, "Sent.mbox", &msgs,
                                         &bytes, &err),
                     0);
    assert_int_equal(msgs, 3);
    FMT(p, "%s/out/Sent.mbox", base);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal((uint64_t)st.st_size, bytes);
    f = fopen(p, "rb");
    assert_non_null(f);
    got = cfr_malloc(4096);
    assert_non_null(got);
    n = (long)fread(got, 1, 4095, f);
    got[n] = '\0';
    fclose(f);
    assert_string_equal(got, "From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"
                             "Subject: first\n\na\n\n"
                             "From MAILER-DAEMON Thu Jan  1 00:01:00 2026\n"
                             "Subject: second\nStatus: RO\n\nb\n\n"
                             "From MAILER-DAEMON Thu Jan  1 00:02:00 2026\n"
                             "Subject: third\nStatus: O\nX-Keywords: urgent\n\n"
                             "c\n\n");
    cfr_free(got);
    /* Never replaced: a second run fails and leaves the first. */
    assert_int_equal(
        restore_mbox_folder(root, ".Sent", out, "Sent.mbox", NULL, NULL, &err),
        CFR_EEXIST);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal((uint64_t)st.st_size, bytes);
    close(root);
    close(out);
    assert_int_equal(nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void
test_names(void **state)
{
    char out[300];
    struct cfr_err err;
    (void)state;
    assert_int_equal(restore_mbox_name("", out, sizeof(out), &err), 0);
    assert_string_equal(out, "INBOX.mbox");
    assert_int_equal(restore_mbox_name(".Archive.2024", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, "Archive.2024.mbox");
    assert_int_equal(restore_mbox_name(".", out, sizeof(out), &err),
                     CFR_EINVAL);
    assert_int_equal(restore_mbox_name("Sent", out, sizeof(out), &err),
                     CFR_EINVAL);

    assert_int_equal(restore_folder_normalize("INBOX", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, "");
    assert_int_equal(restore_folder_normalize("inbox", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, "");
    assert_int_equal(restore_folder_normalize(".Sent", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, ".Sent");
    assert_int_equal(restore_folder_normalize("Sent", out, sizeof(out), &err),
                     0);
    assert_string_equal(out, ".Sent");
    assert_int_equal(
        restore_folder_normalize("Archive/2024", out, sizeof(out), &err), 0);
    assert_string_equal(out, ".Archive.2024");
    static const char *const bad[] = {"",   ".",    "..",   "a//b", "a/",
                                      "/a", ".a/b", "a..b", "..x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(
            restore_folder_normalize(bad[i], out, sizeof(out), &err),
            CFR_EINVAL);
    }

    assert_int_equal(
        restore_mailbox_dir_name("alice@example.org", out, sizeof(out), &err),
        0);
    assert_string_equal(out, "alice@example.org");
    assert_int_equal(
        restore_mailbox_dir_name("../a/b%c", out, sizeof(out), &err), 0);
    assert_string_equal(out, "%2E.%2Fa%2Fb%25c");
    {
        char longname[200];
        memset(longname, '/', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(
            restore_mailbox_dir_name(longname, out, sizeof(out), &err),
            CFR_EINVAL);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoting_round_trip),
        cmocka_unit_test(test_flag_lines_at_end_of_header),
        cmocka_unit_test(test_edge_shapes),
        cmocka_unit_test(test_from_line),
        cmocka_unit_test(test_folder_file),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
