/*
 * restore_dovecot_test.c - restored Dovecot files made consistent: a
 * present message keeps its UID and extension fields, an absent one's
 * line goes, a message the list lacks gets a UID above every old UID and
 * the old NextUID (ordered by mtime, then name), the header keeps its
 * other fields; malformed lists are removed, never trusted; stale index
 * files go; nothing follows a symlink. Then the doveadm reader, against
 * a Maildir laid out by hand (skipped when doveadm is absent), which also
 * checks that Dovecot honours the UIDs the rewrite chose, and against a
 * fake doveadm printing hostile output (truncated, out-of-order, overlong
 * JSON, a failing exit).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "dovecot.h"
#include "id.h" /* cfr_id_plain: the expected text hash */
#include "log.h"
#include "mem.h"
#include "verify.h" /* restore_verify_hash_fd: the hash to agree with */

static char base[256]; /* per test: the scratch directory (a Maildir) */

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static int
setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(base, sizeof(base), "%s/restore_dovecot.XXXXXX",
             t != NULL && *t != '\0' ? t : "/tmp");
    return mkdtemp(base) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    (void)state;
    return nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs the pure rewrite; returns its code, output NUL-terminated in out. */
static int
rewrite(const char *in, const struct restore_dovecot_file *f, size_t n,
        char *out, size_t out_size)
{
    struct cfr_buf b;
    struct cfr_err err;
    int rc;

    cfr_buf_init(&b, 1 << 20);
    rc = restore_dovecot_rewrite((const uint8_t *)in, strlen(in), f, n, &b,
                                 &err);
    out[0] = '\0';
    if (rc == 0) {
        assert_true(b.len < out_size);
        memcpy(out, b.data, b.len);
        out[b.len] = '\0';
    }
    cfr_buf_fini(&b);
    return rc;
}

static void
test_restore_dovecot_rewrite_keeps_drops_adds(void **state)
{
    (void)state;
    /* m2 is absent (uidlist written after the scan), m5 and m6 are new
       (written before the scan): N9 is stale-high, uid 7 the top. */
    const char *in = "3 V1234 N9 Gabcdef X9\n"
                     "1 G111 :m1\n"
                     "4 :m2\n"
                     "7 W120 G333 :m3:2,S\n";
    const struct restore_dovecot_file f[] = {{"m6:2,S", 200},
                                             {"m3:2,RS", 50},
                                             {"m5", 200},
                                             {"m1:2,", 10},
                                             {"m4:2,F", 100}};
    char out[1024];

    assert_int_equal(rewrite(in, f, 5, out, sizeof(out)), 0);
    /* New UIDs from 9 (the old N), by mtime then name: m4, m5, m6. */
    assert_string_equal(out, "3 V1234 N12 Gabcdef X9\n"
                             "1 G111 :m1\n"
                             "7 W120 G333 :m3:2,S\n"
                             "9 :m4\n"
                             "10 :m5\n"
                             "11 :m6\n");
}

static void
test_restore_dovecot_rewrite_next_above_max(void **state)
{
    (void)state;
    /* The header's N is stale-low (Dovecot appends lines without
       rewriting it): new UIDs still go above the highest old one, even
       one whose message is gone. */
    const char *in = "3 V77 N3\n1 :a\n2 :b\n5 :gone\n";
    const struct restore_dovecot_file f[] = {{"b:2,S", 1}, {"c", 1}, {"a", 1}};
    char out[256];

    assert_int_equal(rewrite(in, f, 3, out, sizeof(out)), 0);
    assert_string_equal(out, "3 V77 N7\n1 :a\n2 :b\n6 :c\n");
}

static void
test_restore_dovecot_rewrite_duplicate_files(void **state)
{
    (void)state;
    /* The same base in cur/ and new/ is one message: one UID. */
    const char *in = "3 V1 N1\n";
    const struct restore_dovecot_file f[] = {{"x:2,S", 5}, {"x", 5}};
    char out[256];

    assert_int_equal(rewrite(in, f, 2, out, sizeof(out)), 0);
    assert_string_equal(out, "3 V1 N2\n1 :x\n");
}

static void
test_restore_dovecot_rewrite_refuses_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "\n",
        "1 1234 5\n1 a\n",           /* version 1 */
        "3 N5\n",                    /* no V */
        "3 V0 N5\n",                 /* V zero */
        "3 V1 V2 N5\n",              /* V twice */
        "3 V1 N99999999999\n",       /* N over 32 bits */
        "3 V1 N5 \n",                /* trailing space */
        "3 V1  N5\n",                /* empty field */
        "3 V1 N5\n2 :a\n2 :b\n",     /* UID not rising */
        "3 V1 N5\n3 :a\n1 :b\n",     /* UID falling */
        "3 V1 N5\n0 :a\n",           /* UID zero */
        "3 V1 N5\n1 :a\n2 :a:2,S\n", /* base twice */
        "3 V1 N5\n1 :\n",            /* empty name */
        "3 V1 N5\n1 a\n",            /* no ':' */
        "3 V1 N5\n1 :a/b\n",         /* slash */
        "3 V1 N5\n1 :a\tb\n",        /* control byte */
        "3 V1 N5\nx :a\n",           /* not a number */
        "3 V1 N5\n\n",               /* empty line */
        "3 V1 N5\n1  :a\n",          /* empty extension field */
        "3 V1 N5\n4294967296 :a\n",  /* UID over 32 bits */
    };
    const struct restore_dovecot_file f[] = {{"a", 1}};
    char out[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        int rc = rewrite(bad[i], f, 1, out, sizeof(out));

        if (rc != CFR_ECORRUPT) {
            fail_msg("case %zu (%s): rc %d", i, bad[i], rc);
        }
    }
    /* UIDs would pass 2^32-1. */
    assert_int_equal(rewrite("3 V1 N4294967295\n", f, 1, out, sizeof(out)),
                     CFR_ELIMIT);
    /* A line just too long. */
    {
        size_t n = RESTORE_DOVECOT_LINE_MAX + 20;
        char *in = cfr_malloc(n + 1);

        assert_non_null(in);
        memcpy(in, "3 V1 N5\n1 :", 11);
        memset(in + 11, 'a', n - 11);
        in[n] = '\0';
        assert_int_equal(rewrite(in, f, 1, out, sizeof(out)), CFR_ECORRUPT);
        cfr_free(in);
    }
}

/* ---- on disk ------------------------------------------------------------ */

static void
put_file(const char *rel, const char *content, time_t mtime)
{
    char p[512];
    FILE *fp;

    FMT(p, "%s/%s", base, rel);
    fp = fopen(p, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(content, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    if (mtime != 0) {
        struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    }
}

static void
mk_dir(const char *rel)
{
    char p[512];

    FMT(p, "%s/%s", base, rel);
    assert_int_equal(mkdir(p, 0700), 0);
}

static char *
slurp(const char *rel)
{
    char p[512];
    static char buf[8192];
    FILE *fp;
    size_t n;

    FMT(p, "%s/%s", base, rel);
    fp = fopen(p, "r");
    if (fp == NULL) {
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

static bool
exists(const char *rel)
{
    char p[512];
    struct stat st;

    FMT(p, "%s/%s", base, rel);
    return lstat(p, &st) == 0;
}

static int
open_base(void)
{
    int fd = open(base, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    return fd;
}

#define MSG "From: a@example.org\nSubject: s\nMessage-ID: <%s@x>\n\nbody\n"

static void
put_msg(const char *rel, const char *id, time_t mtime)
{
    char c[256];

    FMT(c, MSG, id);
    put_file(rel, c, mtime);
}

static void
test_restore_dovecot_finish_on_disk(void **state)
{
    (void)state;
    struct cfr_err err;
    int fd;
    char *s;

    mk_dir(".Sent");
    mk_dir(".Sent/cur");
    mk_dir(".Sent/new");
    mk_dir(".Sent/tmp");
    put_msg(".Sent/cur/1000.A.h:2,S", "a", 1000);
    put_msg(".Sent/cur/1001.B.h:2,RS", "b", 1001);
    put_msg(".Sent/new/1003.D.h", "d", 1003);
    /* B is missing from the list, C is listed but absent, D new. */
    put_file(".Sent/dovecot-uidlist",
             "3 V500 N4 G0123456789abcdef0123456789abcdef\n"
             "2 :1000.A.h\n3 :1002.C.h\n",
             0);
    put_file(".Sent/dovecot-keywords", "0 kw1\n", 0);
    put_file(".Sent/dovecot.index", "stale", 0);
    put_file(".Sent/dovecot.index.log", "stale", 0);
    put_file(".Sent/dovecot.index.cache", "stale", 0);
    put_file(".Sent/dovecot-uidlist.lock", "", 0);
    fd = open_base();
    assert_int_equal(restore_dovecot_finish(fd, ".Sent", &err), 0);
    s = slurp(".Sent/dovecot-uidlist");
    assert_non_null(s);
    assert_string_equal(s, "3 V500 N6 G0123456789abcdef0123456789abcdef\n"
                           "2 :1000.A.h\n4 :1001.B.h\n5 :1003.D.h\n");
    assert_false(exists(".Sent/dovecot.index"));
    assert_false(exists(".Sent/dovecot.index.log"));
    assert_false(exists(".Sent/dovecot.index.cache"));
    assert_false(exists(".Sent/dovecot-uidlist.lock"));
    assert_false(exists(".Sent/dovecot-uidlist.coffer-tmp"));
    assert_string_equal(slurp(".Sent/dovecot-keywords"), "0 kw1\n");
    /* Run again: already consistent, unchanged. */
    assert_int_equal(restore_dovecot_finish(fd, ".Sent", &err), 0);
    assert_string_equal(slurp(".Sent/dovecot-uidlist"),
                        "3 V500 N6 G0123456789abcdef0123456789abcdef\n"
                        "2 :1000.A.h\n4 :1001.B.h\n5 :1003.D.h\n");
    close(fd);
}

static void
test_restore_dovecot_finish_malformed_and_missing(void **state)
{
    (void)state;
    struct cfr_err err;
    int fd;

    mk_dir("cur");
    mk_dir("new");
    put_msg("cur/1.x:2,S", "a", 1);
    /* No list at all (INBOX ""): none is written. */
    fd = open_base();
    assert_int_equal(restore_dovecot_finish(fd, "", &err), 0);
    assert_false(exists("dovecot-uidlist"));
    /* A malformed list is removed, with success. */
    cfr_log_set_level(CFR_LOG_OFF);
    put_file("dovecot-uidlist", "3 V1 N2\n2 :a\n1 :b\n", 0);
    assert_int_equal(restore_dovecot_finish(fd, "", &err), 0);
    assert_false(exists("dovecot-uidlist"));
    cfr_log_set_level(CFR_LOG_WARN);
    /* Bad folder names are the caller's bug. */
    assert_int_equal(restore_dovecot_finish(fd, "a/b", &err), CFR_EINVAL);
    assert_int_equal(restore_dovecot_finish(fd, "..", &err), CFR_EINVAL);
    close(fd);
}

static void
test_restore_dovecot_finish_no_symlinks(void **state)
{
    (void)state;
    struct cfr_err err;
    char p[512];
    char victim[512];
    int fd;

    /* The list a symlink to a file outside: refused, target untouched. */
    mk_dir(".F");
    mk_dir(".F/cur");
    put_msg(".F/cur/1.x", "a", 1);
    put_file("outside", "3 V1 N1\n", 0);
    FMT(victim, "%s/outside", base);
    FMT(p, "%s/.F/dovecot-uidlist", base);
    assert_int_equal(symlink(victim, p), 0);
    fd = open_base();
    assert_int_equal(restore_dovecot_finish(fd, ".F", &err), CFR_EDENIED);
    assert_string_equal(slurp("outside"), "3 V1 N1\n");
    /* The folder itself a symlink: refused. */
    FMT(p, "%s/.L", base);
    FMT(victim, "%s/.F", base);
    assert_int_equal(symlink(victim, p), 0);
    assert_int_equal(restore_dovecot_finish(fd, ".L", &err), CFR_EDENIED);
    /* cur/ a symlink: refused, not followed. */
    mk_dir(".G");
    put_file(".G/dovecot-uidlist", "3 V1 N1\n", 0);
    FMT(p, "%s/.G/cur", base);
    FMT(victim, "%s/.F/cur", base);
    assert_int_equal(symlink(victim, p), 0);
    assert_int_equal(restore_dovecot_finish(fd, ".G", &err), CFR_EDENIED);
    close(fd);
}

/* ---- the doveadm reader ------------------------------------------------- */

static uid_t owner_uid;

static int
chown_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return lchown(p, owner_uid, (gid_t)owner_uid);
}

#define MAX_SEEN 16
struct seen {
    size_t n;
    struct restore_doveadm_msg m[MAX_SEEN];
};

static int
collect(void *ctx, const struct restore_doveadm_msg *m)
{
    struct seen *s = ctx;

    if (s->n == MAX_SEEN) {
        return CFR_ELIMIT;
    }
    s->m[s->n++] = *m;
    return 0;
}

static void
test_restore_doveadm_list_reads_finished_maildir(void **state)
{
    (void)state;
    struct cfr_err err;
    struct seen *s = cfr_calloc(1, sizeof(*s));
    int fd;
    int rc;

    assert_non_null(s);
    /* INBOX with two messages (one with keywords a and b), .Sent with
       one the list lacks and one listed under a stale UID. */
    mk_dir("cur");
    mk_dir("new");
    mk_dir("tmp");
    put_msg("cur/1000.M1.h:2,RSab", "one", 1000);
    put_msg("new/1001.M2.h", "two", 1001);
    put_file("dovecot-uidlist",
             "3 V1700000000 N20 G0123456789abcdef0123456789abcdef\n"
             "7 :1000.M1.h\n12 :1001.M2.h\n",
             0);
    put_file("dovecot-keywords", "0 kw1\n1 $Label2\n", 0);
    put_file("dovecot.index.log", "stale garbage", 0);
    mk_dir(".Sent");
    mk_dir(".Sent/cur");
    mk_dir(".Sent/new");
    mk_dir(".Sent/tmp");
    put_file(".Sent/maildirfolder", "", 0);
    put_msg(".Sent/cur/2000.S1.h:2,F", "s1", 2000);
    put_msg(".Sent/cur/2001.S2.h:2,", "s2", 2001);
    put_file(".Sent/dovecot-uidlist", "3 V1700000001 N3\n2 :2001.S2.h\n", 0);
    fd = open_base();
    assert_int_equal(restore_dovecot_finish(fd, "", &err), 0);
    assert_int_equal(restore_dovecot_finish(fd, ".Sent", &err), 0);
    close(fd);
    assert_false(exists("dovecot.index.log"));

    rc = restore_doveadm_list(base, collect, s, &err);
    if (rc == CFR_EUNAVAIL) {
        cfr_free(s);
        print_message("doveadm unavailable (%s): skipped\n", err.msg);
        skip();
    }
    if (rc != 0) {
        fail_msg("restore_doveadm_list: %s", err.msg);
    }
    assert_int_equal(s->n, 4);
    /* Mailboxes by name: INBOX, then Sent. */
    assert_string_equal(s->m[0].mailbox, "INBOX");
    assert_int_equal(s->m[0].uidvalidity, 1700000000);
    assert_int_equal(s->m[0].uid, 7);
    assert_string_equal(s->m[0].flags, "$Label2 \\Answered \\Seen kw1");
    assert_string_equal(s->m[0].message_id, "<one@x>");
    assert_string_equal(s->m[0].guid, "1000.M1.h");
    assert_int_equal(s->m[0].size, 57);
    assert_string_equal(s->m[1].mailbox, "INBOX");
    assert_int_equal(s->m[1].uid, 12);
    assert_string_equal(s->m[1].flags, "");
    assert_string_equal(s->m[1].message_id, "<two@x>");
    assert_string_equal(s->m[2].mailbox, "Sent");
    assert_int_equal(s->m[2].uidvalidity, 1700000001);
    assert_int_equal(s->m[2].uid, 2);
    assert_string_equal(s->m[2].message_id, "<s2@x>");
    /* The one the list lacked: above N3 and above 2. */
    assert_int_equal(s->m[3].uid, 3);
    assert_string_equal(s->m[3].flags, "\\Flagged");
    assert_string_equal(s->m[3].message_id, "<s1@x>");
    /* Dovecot kept its index out of the Maildir. */
    assert_false(exists("dovecot.index.log"));
    assert_false(exists(".Sent/dovecot.index.log"));

    /* Run as root on a Maildir someone else owns: Dovecot runs as the
     * owner and sees the same. */
    if (geteuid() == 0) {
        struct seen *s2 = cfr_calloc(1, sizeof(*s2));

        assert_non_null(s2);
        owner_uid = 4321;
        assert_int_equal(nftw(base, chown_cb, 16, FTW_PHYS), 0);
        if (restore_doveadm_list(base, collect, s2, &err) != 0) {
            fail_msg("as owner: %s", err.msg);
        }
        assert_int_equal(s2->n, s->n);
        for (size_t i = 0; i < s->n; i++) {
            assert_int_equal(s2->m[i].uid, s->m[i].uid);
            assert_int_equal(s2->m[i].uidvalidity, s->m[i].uidvalidity);
            assert_string_equal(s2->m[i].flags, s->m[i].flags);
            assert_string_equal(s2->m[i].message_id, s->m[i].message_id);
        }
        cfr_free(s2);
    }
    cfr_free(s);
}

/* Writes n bytes (NULs allowed) to base/rel. */
static void
put_bytes(const char *rel, const void *p, size_t n)
{
    char path[512];
    int fd;
    FMT(path, "%s/%s", base, rel);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

/*
 * RESTORE_DOVEADM_TEXT: Dovecot's text of each message hashes as
 * restore_verify_hash_fd hashes the file, for plain ASCII with CRLF, for
 * bytes doveadm's JSON cannot carry (Latin-1, NUL: read again raw), for
 * real U+FFFD (also read again, still equal) and for a message over one
 * hash block (streamed through the JSON reader's window).
 */
static void
test_restore_doveadm_list_text_hash(void **state)
{
    (void)state;
    static const char m1[] = "From: a@b\r\nMessage-ID: <t1@x>\r\n\r\nplain\r\n";
    static const char m2[] = "Message-ID: <t2@x>\n\ncaf\xe9 \0 end\n";
    static const char m4[] =
        "Message-ID: <t4@x>\n\nw\xc3\xa9rld \xef\xbf\xbd\n";
    const size_t n3 = RESTORE_DOVEADM_HASH_BLOCK + 500000;
    const char *names[] = {"cur/1.M1.h:2,S", "cur/2.M2.h:2,S", "cur/3.M3.h:2,S",
                           "cur/4.M4.h:2,S"};
    char *m3 = cfr_malloc(n3);
    struct seen *s = cfr_calloc(1, sizeof(*s));
    struct cfr_err err;
    int rc;

    assert_non_null(m3);
    assert_non_null(s);
    mk_dir("cur");
    mk_dir("new");
    mk_dir("tmp");
    memset(m3, 'x', n3);
    memcpy(m3, "Message-ID: <t3@x>\n\n", 20);
    for (size_t i = 100; i < n3; i += 77) {
        m3[i] = '\n';
    }
    put_bytes(names[0], m1, sizeof(m1) - 1);
    put_bytes(names[1], m2, sizeof(m2) - 1);
    put_bytes(names[2], m3, n3);
    put_bytes(names[3], m4, sizeof(m4) - 1);
    cfr_free(m3);

    rc = restore_doveadm_list_ex(base, RESTORE_DOVEADM_TEXT, collect, s, &err);
    if (rc == CFR_EUNAVAIL) {
        cfr_free(s);
        print_message("doveadm unavailable (%s): skipped\n", err.msg);
        skip();
    }
    if (rc != 0) {
        fail_msg("restore_doveadm_list_ex: %s", err.msg);
    }
    assert_int_equal(s->n, 4);
    for (size_t i = 0; i < 4; i++) {
        char path[512];
        uint8_t h[32];
        uint64_t size = 0;
        int fd;
        FMT(path, "%s/%s", base, names[i]);
        fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(restore_verify_hash_fd(fd, h, &size, &err), 0);
        close(fd);
        assert_true(s->m[i].have_text);
        assert_int_equal(s->m[i].text_size, size);
        assert_int_equal(s->m[i].size, size);
        if (memcmp(s->m[i].text_hash, h, 32) != 0) {
            fail_msg("message %zu: Dovecot's text hashes differently", i + 1);
        }
    }
    /* Without the flag no text is read. */
    s->n = 0;
    assert_int_equal(restore_doveadm_list(base, collect, s, &err), 0);
    assert_int_equal(s->n, 4);
    assert_false(s->m[0].have_text);
    cfr_free(s);
}

static void
test_restore_doveadm_list_refuses_odd_paths(void **state)
{
    (void)state;
    struct cfr_err err;
    struct seen s;
    char p[512];

    FMT(p, "%s/a:b", base);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(restore_doveadm_list(p, collect, &s, &err), CFR_EINVAL);
    FMT(p, "%s/none", base);
    assert_int_equal(restore_doveadm_list(p, collect, &s, &err), CFR_EINVAL);
}

/* ---- hostile doveadm output (a fake doveadm first in PATH) --------------- */

static int
stop_at_first(void *ctx, const struct restore_doveadm_msg *m)
{
    (void)ctx;
    (void)m;
    return 42;
}

/* Sets what the fake prints for fetch, its stderr and exit code, then
 * lists; returns the code, messages into s. */
static int
fake_list(const char *fetch, const char *stderr_text, int code, struct seen *s,
          struct cfr_err *err)
{
    char rc[16];

    snprintf(rc, sizeof(rc), "%d\n", code);
    put_file("fake/fetch.json", fetch, 0);
    put_file("fake/err.txt", stderr_text, 0);
    put_file("fake/fetch.rc", rc, 0);
    s->n = 0;
    {
        char md[300];

        FMT(md, "%s/md", base);
        return restore_doveadm_list(md, collect, s, err);
    }
}

static void
test_restore_doveadm_list_hostile_output(void **state)
{
    (void)state;
    struct cfr_err err;
    struct seen *s = cfr_calloc(1, sizeof(*s));
    char script[2048], bin[300], path[4096], md[300];
    const char *old = getenv("PATH");
    char *saved = cfr_strdup(old != NULL ? old : "/usr/bin:/bin");
    char longid[1200];
    int rc;

    assert_non_null(s);
    assert_non_null(saved);
    mk_dir("fake");
    mk_dir("md");
    FMT(script,
        "#!/bin/sh\nd='%s/fake'\nfor a in \"$@\"; do\n  case \"$a\" in\n"
        "  status) cat \"$d/status.json\"; exit 0 ;;\n"
        "  fetch) cat \"$d/fetch.json\"; cat \"$d/err.txt\" >&2; "
        "exit \"$(cat \"$d/fetch.rc\")\" ;;\n  esac\ndone\nexit 64\n",
        base);
    put_file("fake/doveadm", script, 0);
    FMT(bin, "%s/fake/doveadm", base);
    assert_int_equal(chmod(bin, 0755), 0);
    FMT(path, "%s/fake:%s", base, saved);
    assert_int_equal(setenv("PATH", path, 1), 0);
    /* Two mailboxes, one with an escaped name; listed by name. */
    put_file("fake/status.json",
             "[{\"mailbox\":\"INBOX\",\"guid\":\"g1\",\"uidvalidity\":\"42\"},"
             "{\"mailbox\":\"A \\u00e9\",\"guid\":\"g2\","
             "\"uidvalidity\":\"43\"}]\n",
             0);

    /* Well-formed, with escapes, \Recent and folded white space. */
    rc = fake_list("[{\"uid\":\"5\",\"flags\":\"\\\\Recent \\\\Seen kw\","
                   "\"size.physical\":\"10\",\"hdr.message-id\":"
                   "\"\\n <a\\tb@x> \",\"guid\":\"x1\"}]",
                   "", 0, s, &err);
    if (rc == CFR_EUNAVAIL) {
        print_message("no user namespace for the fake doveadm: skipped\n");
        assert_int_equal(setenv("PATH", saved, 1), 0);
        cfr_free(saved);
        cfr_free(s);
        skip();
    }
    if (rc != 0) {
        fail_msg("well-formed: %s", err.msg);
    }
    assert_int_equal(s->n, 2);
    assert_string_equal(s->m[0].mailbox, "A \xc3\xa9");
    assert_int_equal(s->m[0].uidvalidity, 43);
    assert_string_equal(s->m[1].mailbox, "INBOX");
    assert_int_equal(s->m[1].uidvalidity, 42);
    assert_int_equal(s->m[1].uid, 5);
    assert_string_equal(s->m[1].flags, "\\Seen kw");
    assert_string_equal(s->m[1].message_id, "<a\tb@x>");
    assert_int_equal(s->m[1].size, 10);
    assert_string_equal(s->m[1].guid, "x1");

    /* Truncated, out of order, a number, trailing bytes, a missing
     * field, a bad escape: all refused as corrupt. */
    static const char *const corrupt[] = {
        "[{\"uid\":\"5\"",
        ("[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":\"1\","
         "\"hdr.message-id\":\"\",\"guid\":\"a\"},{\"uid\":\"3\",\"flags\":"
         "\"\",\"size.physical\":\"1\",\"hdr.message-id\":\"\",\"guid\":\"b\"}"
         "]"),
        "[{\"uid\":5}]",
        "[] x",
        ("[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":\"1\","
         "\"hdr.message-id\":\"\"}]"),
        "[{\"uid\":\"5\\q\"}]",
        "[{\"uid\":\"99999999999\"}]",
        "{}",
    };
    for (size_t i = 0; i < sizeof(corrupt) / sizeof(*corrupt); i++) {
        rc = fake_list(corrupt[i], "", 0, s, &err);
        if (rc != CFR_ECORRUPT) {
            fail_msg("case %zu: rc %d (%s)", i, rc, err.msg);
        }
    }
    /* A Message-ID longer than the field: refused, not truncated. */
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    {
        char doc[1500];

        FMT(doc,
            "[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":\"1\","
            "\"hdr.message-id\":\"%s\",\"guid\":\"a\"}]",
            longid);
        assert_int_equal(fake_list(doc, "", 0, s, &err), CFR_ELIMIT);
    }
    /* doveadm failing: its stderr line in the error. */
    assert_int_equal(
        fake_list("[]", "doveadm(coffer): Error: boom\nmore\n", 75, s, &err),
        CFR_EIO);
    assert_non_null(strstr(err.msg, "exit 75"));
    assert_non_null(strstr(err.msg, "Error: boom"));
    assert_null(strstr(err.msg, "more"));
    /* Empty output is an empty mailbox. */
    assert_int_equal(fake_list("", "", 0, s, &err), 0);
    assert_int_equal(s->n, 0);
    /* The callback's code stops the listing and comes back. */
    put_file("fake/fetch.json",
             "[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":\"1\","
             "\"hdr.message-id\":\"\",\"guid\":\"a\"}]",
             0);
    put_file("fake/fetch.rc", "0\n", 0);
    FMT(md, "%s/md", base);
    assert_int_equal(restore_doveadm_list(md, stop_at_first, NULL, &err), 42);

    /* Text: a value far over the reader's string buffer streams into the
     * hash (without the flag it is an over-long string); asked for and
     * missing, it is corrupt output. */
    {
        const size_t tn = 20000;
        char *doc = cfr_malloc(tn + 200);
        char *txt = cfr_malloc(tn);
        uint8_t h[32], want[32];
        int w;

        assert_non_null(doc);
        assert_non_null(txt);
        memset(txt, 'q', tn);
        cfr_id_plain(txt, tn, h);
        cfr_id_plain(h, sizeof(h), want);
        w = snprintf(doc, tn + 200,
                     "[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":"
                     "\"20000\",\"hdr.message-id\":\"\",\"guid\":\"a\","
                     "\"text\":\"%.*s\"}]",
                     (int)tn, txt);
        assert_true(w > 0 && (size_t)w < tn + 200);
        put_file("fake/fetch.json", doc, 0);
        s->n = 0;
        assert_int_equal(
            restore_doveadm_list_ex(md, RESTORE_DOVEADM_TEXT, collect, s, &err),
            0);
        assert_int_equal(s->n, 2); /* one per fake mailbox */
        assert_true(s->m[0].have_text);
        assert_int_equal(s->m[0].text_size, tn);
        assert_memory_equal(s->m[0].text_hash, want, 32);
        assert_int_equal(restore_doveadm_list(md, collect, s, &err),
                         CFR_ELIMIT);
        put_file("fake/fetch.json",
                 "[{\"uid\":\"5\",\"flags\":\"\",\"size.physical\":\"1\","
                 "\"hdr.message-id\":\"\",\"guid\":\"a\"}]",
                 0);
        assert_int_equal(
            restore_doveadm_list_ex(md, RESTORE_DOVEADM_TEXT, collect, s, &err),
            CFR_ECORRUPT);
        cfr_free(doc);
        cfr_free(txt);
    }

    assert_int_equal(setenv("PATH", saved, 1), 0);
    cfr_free(saved);
    cfr_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_dovecot_rewrite_keeps_drops_adds),
        cmocka_unit_test(test_restore_dovecot_rewrite_next_above_max),
        cmocka_unit_test(test_restore_dovecot_rewrite_duplicate_files),
        cmocka_unit_test(test_restore_dovecot_rewrite_refuses_malformed),
        cmocka_unit_test_setup_teardown(test_restore_dovecot_finish_on_disk,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_dovecot_finish_malformed_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_dovecot_finish_no_symlinks,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_doveadm_list_reads_finished_maildir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_doveadm_list_text_hash,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_doveadm_list_refuses_odd_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_doveadm_list_hostile_output, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
