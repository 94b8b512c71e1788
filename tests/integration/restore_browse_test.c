/*
 * restore_browse_test.c - coffer-restore ls and find (issue 5, Browse)
 * with the real programs: one coffer-vault over mutual TLS, coffer-agent
 * backing up two mailboxes twice with changes between, and coffer-restore
 * reading the snapshots back with the escrow keyring.
 *
 * What must hold:
 *  1. ls lists each mailbox once with its snapshot count, newest and
 *     oldest receive times and the newest snapshot's file count.
 *  2. ls --mailbox gives each folder of the chosen snapshot with its
 *     IMAP name (modified UTF-7 decoded), message count and bytes (summed
 *     here from the store), and other files.
 *  3. ls --folder gives each message: name, ":2," flags decoded, keyword
 *     letters, new/cur, size, mtime to the nanosecond, Message-ID, and
 *     with --headers From/Subject/Date from the message itself.
 *  4. --at (the first snapshot's exact receive time) and --snapshot (a
 *     16-digit prefix) pick the first snapshot; an --at before every
 *     snapshot exits 5 naming the oldest; a bad --at exits 2.
 *  5. find locates a message deleted before the second backup only in the
 *     first snapshot (and says when it was gone), one kept in both in
 *     both, with or without <>; an unknown ID exits 5. The unchanged
 *     mailbox's second snapshot shares its manifest page, which comes
 *     from the page cache, not the vault.
 *  6. A hostile mailbox name and a hostile message name (ESC sequences)
 *     never reach the terminal raw: the output holds no ESC byte at all,
 *     only their \x1b escapes.
 * About 5-10 s, most of it the KDF of the escrow key per coffer-restore
 * run and the two backups.
 */
#define _GNU_SOURCE /* utimensat */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs */
#include "mem.h"                  /* cfr_free */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "scenario_support.h"     /* vault, configs, runs */
#include "vault_client_support.h" /* vc_now_ms */

#define ESCROW_PW "browse test escrow passphrase"
#define BASE_SECS 1767225600 /* 2026-01-01 */
#define FMT       SCN_FMT

/* The hostile names: a mailbox with a C1 CSI (U+009B, as UTF-8: many
 * terminals take it for ESC [) and a right-to-left override (the agent
 * refuses C0 controls in names), and a message file whose name holds a
 * raw ESC sequence that clears the screen. */
#define EVIL_MAILBOX                                                           \
    "evil\xc2\x9b"                                                             \
    "2J\xe2\x80\xae"                                                           \
    "box"
#define EVIL_MSG "1767225699.M99\x1b[2JP1.host"

static struct scn sc = {.escrow_pw = ESCROW_PW, SCN_PROGRAMS, .n_vaults = 1};
static char alice[SCN_PATH + 16], evil[SCN_PATH + 16];
static char snap1[65], snap2[65]; /* alice's snapshots, hex */
static int64_t snap1_ms, snap2_ms;

/* ---- the stores ---------------------------------------------------------- */

/* A message with Message-ID <m<seed>@example.org>, padded to len bytes,
 * its mtime BASE_SECS + seed hours and seed nanoseconds. Returns its size. */
static size_t
put_msg(const char *root, const char *rel, unsigned seed, size_t len)
{
    char *b = cfr_malloc(len + 1);
    struct timespec ts = {BASE_SECS + (time_t)seed * 3600, (long)seed};
    assert_non_null(b);
    int h = snprintf(b, len + 1,
                     "From: Sender %u <s%u@example.org>\r\n"
                     "To: alice@example.org\r\n"
                     "Subject: browse test %u\r\n"
                     "Date: Thu, 1 Jan 2026 00:%02u:00 +0000\r\n"
                     "Message-ID: <m%u@example.org>\r\n\r\n",
                     seed, seed, seed, seed % 60, seed);
    assert_true(h > 0 && (size_t)h < len);
    for (size_t i = (size_t)h; i < len; i++) {
        b[i] = i % 64 == 63 ? '\n' : (char)('a' + (int)((i * seed) % 26));
    }
    scn_put(root, rel, b, len, &ts);
    cfr_free(b);
    return len;
}

/* ---- running the programs ---------------------------------------------- */

/* coffer-restore --config <the restore configuration> ARGS... */
static struct ars_out
restore(const char *const *args)
{
    struct ars_out r;
    scn_restore(&sc, sc.conf_all, args, &r);
    return r;
}

static void
expect_in(const char *doc, const char *needle, const char *what)
{
    if (strstr(doc, needle) == NULL) {
        fail_msg("%s: no \"%s\" in:\n%s", what, needle, doc);
    }
}

/* No raw ESC or BEL anywhere: every hostile byte was escaped. */
static void
expect_no_escape(const struct ars_out *r, const char *what)
{
    if (strchr(r->out, '\x1b') != NULL || strchr(r->err, '\x1b') != NULL ||
        strstr(r->out, "\xc2\x9b") != NULL ||
        strstr(r->out, "\xe2\x80\xae") != NULL) {
        fail_msg("%s: a raw escape byte reached the output", what);
    }
}

/* ---- setup: two mailboxes, two backups --------------------------------------
 */

/* Sizes of what the stores hold at each backup, for the checks. */
static size_t sz_m1, sz_m2, sz_m3, sz_m10, sz_m11, sz_m20, sz_evil;

static int
setup(void **state)
{
    (void)state;
    if (scn_setup(&sc) != 0) {
        return -1;
    }
    snprintf(alice, sizeof(alice), "%s/alice", sc.dir);
    snprintf(evil, sizeof(evil), "%s/evil", sc.dir);
    return 0;
}

/* Reads alice's two snapshot IDs and receive times (newest first). */
static void
read_snapshots(void)
{
    const char *args[] = {"snapshots", "--mailbox", "alice@example.org",
                          "--json", NULL};
    struct ars_out r = restore(args);
    const char *second;
    uint64_t ms;
    scn_expect_code(&r, 0, "snapshots");
    assert_true(ars_json_str(r.out, NULL, "id", snap2, sizeof(snap2)));
    assert_true(ars_json_u64(r.out, NULL, "received_ms", &ms));
    snap2_ms = (int64_t)ms;
    second = strstr(r.out, "},{");
    assert_non_null(second);
    assert_true(ars_json_str(r.out, second, "id", snap1, sizeof(snap1)));
    assert_true(ars_json_u64(r.out, second, "received_ms", &ms));
    snap1_ms = (int64_t)ms;
    assert_true(snap1_ms < snap2_ms);
    assert_null(strstr(second + 3, "},{")); /* exactly two */
    ars_out_fini(&r);
}

static void
make_stores_and_back_up(void)
{
    static const char *const dirs[] = {
        "cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp",
        /* "été" in modified UTF-7, as Dovecot names it */
        ".&AOk-t&AOk-/cur", ".&AOk-t&AOk-/new", ".&AOk-t&AOk-/tmp"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        scn_mkdirs(alice, dirs[i]);
    }
    scn_mkdirs(evil, "cur");
    scn_mkdirs(evil, "new");
    sz_m1 = put_msg(alice, "cur/1767225601.M1P1.host:2,S", 1, 3000);
    sz_m2 = put_msg(alice, "cur/1767225602.M2P1.host:2,RSab", 2, 5000);
    sz_m3 = put_msg(alice, "new/1767225603.M3P1.host", 3, 700);
    sz_evil = put_msg(alice, "cur/" EVIL_MSG ":2,S", 9, 900);
    sz_m10 = put_msg(alice, ".Sent/cur/1767225610.M10P1.host:2,FS", 10, 2500);
    sz_m20 =
        put_msg(alice, ".&AOk-t&AOk-/cur/1767225620.M20P1.host:2,", 20, 1500);
    static const char uidlist[] = "3 V1767225600 N5 G0123\n";
    scn_put(alice, "dovecot-uidlist", uidlist, strlen(uidlist), NULL);
    put_msg(evil, "cur/1767225630.M30P1.host:2,S", 30, 800);

    FMT(sc.mailboxes,
        "mailboxes = ( { name = \"alice@example.org\"; root = \"%s\"; },\n"
        "              { name = \"" EVIL_MAILBOX "\"; root = \"%s\"; } );",
        alice, evil);
    assert_int_equal(scn_init(&sc), 0);
    scn_backup(&sc, NULL);

    /* Between the backups: m3 deleted, m1 trashed (flag T), m11 sent. */
    scn_rm(alice, "new/1767225603.M3P1.host");
    scn_mv(alice, "cur/1767225601.M1P1.host:2,S",
           "cur/1767225601.M1P1.host:2,ST");
    sz_m11 = put_msg(alice, ".Sent/cur/1767225611.M11P1.host:2,S", 11, 1800);
    scn_backup(&sc, NULL);
    read_snapshots();
}

/* ---- the tests ------------------------------------------------------------
 */

static void
test_browse_mailboxes(void **state)
{
    (void)state;
    int64_t t0 = vc_now_ms();
    make_stores_and_back_up();
    fprintf(stderr, "restore_browse: stores and two backups in %lld ms\n",
            (long long)(vc_now_ms() - t0));

    const char *json[] = {"ls", "--json", NULL};
    struct ars_out r = restore(json);
    uint64_t v;
    char s[80];
    scn_expect_code(&r, 0, "ls --json");
    expect_no_escape(&r, "ls --json");
    const char *a = "\"mailbox\":\"alice@example.org\"";
    expect_in(r.out, a, "ls --json");
    assert_true(ars_json_u64(r.out, a, "snapshots", &v));
    assert_int_equal(v, 2);
    /* The newest: m1 m2 evil + uidlist, m10 m11, m20. */
    assert_true(ars_json_u64(r.out, a, "files", &v));
    assert_int_equal(v, 7);
    assert_true(ars_json_u64(r.out, a, "newest_ms", &v));
    assert_int_equal((int64_t)v, snap2_ms);
    assert_true(ars_json_u64(r.out, a, "oldest_ms", &v));
    assert_int_equal((int64_t)v, snap1_ms);
    assert_true(ars_json_str(r.out, a, "newest_snapshot", s, sizeof(s)));
    assert_string_equal(s, snap2);
    const char *e = "\"mailbox\":\"evil\\u009b2J\\u202ebox\"";
    expect_in(r.out, e, "ls --json");
    assert_true(ars_json_u64(r.out, e, "snapshots", &v));
    assert_int_equal(v, 2);
    assert_true(ars_json_u64(r.out, e, "files", &v));
    assert_int_equal(v, 1);
    expect_in(r.out, "\"unreadable\":0,\"ok\":true}", "ls --json");
    ars_out_fini(&r);

    /* Human: a table, the hostile name escaped. */
    const char *human[] = {"ls", NULL};
    r = restore(human);
    scn_expect_code(&r, 0, "ls");
    expect_no_escape(&r, "ls");
    expect_in(r.out, "MAILBOX", "ls");
    expect_in(r.out, "alice@example.org", "ls");
    expect_in(r.out, "evil\\xc2\\x9b2J\\xe2\\x80\\xaebox", "ls");
    ars_out_fini(&r);
}

static void
test_browse_folders(void **state)
{
    (void)state;
    const char *json[] = {"ls", "--mailbox", "alice@example.org", "--json",
                          NULL};
    struct ars_out r = restore(json);
    uint64_t v;
    char s[80];
    scn_expect_code(&r, 0, "ls --mailbox --json");
    assert_true(ars_json_str(r.out, NULL, "snapshot", s, sizeof(s)));
    assert_string_equal(s, snap2); /* the newest by default */
    assert_true(ars_json_u64(r.out, NULL, "files", &v));
    assert_int_equal(v, 7);
    /* Exactly three folders, in key order, with their sums. */
    char want[512];
    FMT(want,
        "\"folders\":["
        "{\"folder\":\"\",\"imap\":\"INBOX\",\"messages\":3,\"bytes\":%zu,"
        "\"new\":0,\"unseen\":0,\"other_files\":1,\"other_bytes\":23},"
        "{\"folder\":\".&AOk-t&AOk-\",\"imap\":\"\xc3\xa9t\xc3\xa9\","
        "\"messages\":1,\"bytes\":%zu,\"new\":0,\"unseen\":1,"
        "\"other_files\":0,\"other_bytes\":0},"
        "{\"folder\":\".Sent\",\"imap\":\"Sent\",\"messages\":2,"
        "\"bytes\":%zu,\"new\":0,\"unseen\":0,\"other_files\":0,"
        "\"other_bytes\":0}],\"ok\":true}",
        sz_m1 + sz_m2 + sz_evil, sz_m20, sz_m10 + sz_m11);
    expect_in(r.out, want, "ls --mailbox --json");
    ars_out_fini(&r);

    /* The first snapshot by its ID prefix: m3 still in new/. */
    char prefix[17];
    memcpy(prefix, snap1, 16);
    prefix[16] = '\0';
    const char *first[] = {"ls",         "--mailbox", "alice@example.org",
                           "--snapshot", prefix,      "--json",
                           NULL};
    r = restore(first);
    scn_expect_code(&r, 0, "ls --snapshot");
    assert_true(ars_json_str(r.out, NULL, "snapshot", s, sizeof(s)));
    assert_string_equal(s, snap1);
    FMT(want,
        "{\"folder\":\"\",\"imap\":\"INBOX\",\"messages\":4,\"bytes\":%zu,"
        "\"new\":1,\"unseen\":1,\"other_files\":1,",
        sz_m1 + sz_m2 + sz_m3 + sz_evil);
    expect_in(r.out, want, "ls --snapshot");
    FMT(want, "\"imap\":\"Sent\",\"messages\":1,\"bytes\":%zu,", sz_m10);
    expect_in(r.out, want, "ls --snapshot");
    ars_out_fini(&r);

    /* Human table: IMAP and Maildir++ names side by side. */
    const char *human[] = {"ls", "--mailbox", "alice@example.org", NULL};
    r = restore(human);
    scn_expect_code(&r, 0, "ls --mailbox");
    expect_in(r.out, "INBOX", "ls --mailbox");
    expect_in(r.out, "\xc3\xa9t\xc3\xa9", "ls --mailbox");
    expect_in(r.out, ".&AOk-t&AOk-", "ls --mailbox");
    FMT(want, "snapshot %.16s", snap2);
    expect_in(r.out, want, "ls --mailbox");
    ars_out_fini(&r);
}

static void
test_browse_messages(void **state)
{
    (void)state;
    char at[64], want[768];
    time_t t = (time_t)(snap1_ms / 1000);
    struct tm tm;
    assert_non_null(gmtime_r(&t, &tm));
    /* The first snapshot's exact receive time, as snapshots prints it. */
    assert_true(strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm) > 0);
    snprintf(at + strlen(at), sizeof(at) - strlen(at), ".%03dZ",
             (int)(snap1_ms % 1000));

    const char *json[] = {
        "ls",       "--mailbox", "alice@example.org", "--at",   at,
        "--folder", "INBOX",     "--headers",         "--json", NULL};
    struct ars_out r = restore(json);
    char s[80];
    scn_expect_code(&r, 0, "ls --folder --json");
    expect_no_escape(&r, "ls --folder --json");
    assert_true(ars_json_str(r.out, NULL, "snapshot", s, sizeof(s)));
    assert_string_equal(s, snap1);
    /* Each message whole: name, flags, keywords, new, size, mtime to the
     * nanosecond, Message-ID, headers read from the message. */
    FMT(want,
        "{\"name\":\"1767225601.M1P1.host\",\"info\":\":2,S\","
        "\"flags\":[\"Seen\"],\"keywords\":\"\",\"new\":false,"
        "\"size\":%zu,\"mtime_ns\":%lld,\"mtime\":\"2026-01-01T01:00:00.000Z\","
        "\"message_id\":\"<m1@example.org>\","
        "\"from\":\"Sender 1 <s1@example.org>\","
        "\"subject\":\"browse test 1\","
        "\"date\":\"Thu, 1 Jan 2026 00:01:00 +0000\"}",
        sz_m1, (long long)(BASE_SECS + 3600) * 1000000000LL + 1);
    expect_in(r.out, want, "ls --folder m1");
    FMT(want,
        "{\"name\":\"1767225602.M2P1.host\",\"info\":\":2,RSab\","
        "\"flags\":[\"Seen\",\"Answered\"],\"keywords\":\"ab\","
        "\"new\":false,\"size\":%zu,",
        sz_m2);
    expect_in(r.out, want, "ls --folder m2");
    FMT(want,
        "{\"name\":\"1767225603.M3P1.host\",\"info\":\"\",\"flags\":[],"
        "\"keywords\":\"\",\"new\":true,\"size\":%zu,",
        sz_m3);
    expect_in(r.out, want, "ls --folder m3");
    expect_in(r.out, "\"name\":\"1767225699.M99\\u001b[2JP1.host\"",
              "ls --folder hostile");
    FMT(want, "\"count\":4,\"bytes\":%zu,\"other_files\":1,\"ok\":true}",
        sz_m1 + sz_m2 + sz_m3 + sz_evil);
    expect_in(r.out, want, "ls --folder totals");
    ars_out_fini(&r);

    /* The newest, human, a folder by its IMAP name: m1 now trashed. */
    const char *human[] = {"ls",       "--mailbox", "alice@example.org",
                           "--folder", "INBOX",     "--headers",
                           NULL};
    r = restore(human);
    scn_expect_code(&r, 0, "ls --folder");
    expect_no_escape(&r, "ls --folder");
    expect_in(r.out, "1767225601.M1P1.host", "ls --folder");
    expect_in(r.out, "Seen,Deleted", "ls --folder");
    expect_in(r.out, "Seen,Answered,kw:ab", "ls --folder");
    expect_in(r.out, "1767225699.M99\\x1b[2JP1.host", "ls --folder");
    expect_in(r.out, "Subject: browse test 2", "ls --folder");
    assert_null(strstr(r.out, "1767225603.M3P1.host")); /* deleted */
    expect_in(r.out, "3 message(s)", "ls --folder");
    ars_out_fini(&r);

    const char *imap[] = {"ls",       "--mailbox",         "alice@example.org",
                          "--folder", "\xc3\xa9t\xc3\xa9", "--json",
                          NULL};
    r = restore(imap);
    scn_expect_code(&r, 0, "ls --folder été");
    FMT(want,
        "{\"name\":\"1767225620.M20P1.host\",\"info\":\":2,\",\"flags\":[],"
        "\"keywords\":\"\",\"new\":false,\"size\":%zu,",
        sz_m20);
    expect_in(r.out, want, "ls --folder été");
    ars_out_fini(&r);

    const char *none[] = {"ls",       "--mailbox", "alice@example.org",
                          "--folder", "Nope",      "--json",
                          NULL};
    r = restore(none);
    scn_expect_code(&r, 5, "ls --folder Nope");
    expect_in(r.out, "\"ok\":false", "ls --folder Nope");
    expect_in(r.out, "\"kind\":\"not-found\"", "ls --folder Nope");
    ars_out_fini(&r);
}

static void
test_browse_at(void **state)
{
    (void)state;
    char at[32];
    struct ars_out r;
    /* Before every snapshot: not found, naming the oldest. */
    FMT(at, "@%lld", (long long)(snap1_ms / 1000 - 2));
    const char *before[] = {"ls",   "--mailbox", "alice@example.org",
                            "--at", at,          NULL};
    r = restore(before);
    scn_expect_code(&r, 5, "ls --at before");
    expect_in(r.err, "oldest", "ls --at before");
    ars_out_fini(&r);

    /* Far in the future: the newest. */
    const char *future[] = {"ls",   "--mailbox",  "alice@example.org",
                            "--at", "9999-12-31", "--json",
                            NULL};
    char s[80];
    r = restore(future);
    scn_expect_code(&r, 0, "ls --at future");
    assert_true(ars_json_str(r.out, NULL, "snapshot", s, sizeof(s)));
    assert_string_equal(s, snap2);
    ars_out_fini(&r);

    /* Usage mistakes exit 2 before any vault is asked. */
    const char *bad_at[] = {"ls",   "--mailbox", "alice@example.org",
                            "--at", "yesterday", NULL};
    r = restore(bad_at);
    scn_expect_code(&r, 2, "ls --at yesterday");
    expect_in(r.err, "accepted", "ls --at yesterday");
    ars_out_fini(&r);
    const char *no_mb[] = {"ls", "--folder", "INBOX", NULL};
    r = restore(no_mb);
    scn_expect_code(&r, 2, "ls --folder without --mailbox");
    ars_out_fini(&r);
    const char *short_id[] = {"ls",         "--mailbox", "alice@example.org",
                              "--snapshot", "abc",       NULL};
    r = restore(short_id);
    scn_expect_code(&r, 2, "ls --snapshot abc");
    expect_in(r.err, "8 to 64 hex digits", "ls --snapshot abc");
    ars_out_fini(&r);
}

static void
test_browse_find(void **state)
{
    (void)state;
    char want[512];
    uint64_t v;
    struct ars_out r;

    /* Deleted before the second backup: only in the first snapshot. */
    const char *gone[] = {"find", "--message-id", "m3@example.org", "--json",
                          NULL};
    r = restore(gone);
    scn_expect_code(&r, 0, "find m3");
    assert_true(ars_json_u64(r.out, NULL, "snapshots_searched", &v));
    assert_int_equal(v, 4); /* two mailboxes, two backups */
    FMT(want,
        "\"hits\":[{\"mailbox\":\"alice@example.org\",\"snapshot\":\"%s\","
        "\"received_ms\":%lld,",
        snap1, (long long)snap1_ms);
    expect_in(r.out, want, "find m3");
    FMT(want,
        "\"folder\":\"\",\"imap\":\"INBOX\",\"name\":"
        "\"1767225603.M3P1.host\",\"info\":\"\",\"flags\":[],"
        "\"keywords\":\"\","
        "\"new\":true,\"size\":%zu,",
        sz_m3);
    expect_in(r.out, want, "find m3");
    /* Nowhere in the second, which is where it was first missed. */
    FMT(want, "\"snapshot\":\"%s\"", snap2);
    assert_null(strstr(r.out, want));
    FMT(want, "\"absent_from_snapshot\":\"%s\"", snap2);
    expect_in(r.out, want, "find m3");
    expect_in(r.out, "\"in_newest\":false", "find m3");
    FMT(want, "\"absent_from_ms\":%lld}", (long long)snap2_ms);
    expect_in(r.out, want, "find m3");
    FMT(want, "\"first_seen_ms\":%lld", (long long)snap1_ms);
    expect_in(r.out, want, "find m3");
    FMT(want, "\"last_seen_ms\":%lld", (long long)snap1_ms);
    expect_in(r.out, want, "find m3");
    /* The evil mailbox did not change: its second walk read its page
     * from the cache. */
    assert_true(ars_json_u64(r.out, NULL, "cached", &v));
    assert_true(v >= 1);
    ars_out_fini(&r);

    /* Kept in both (with <>, one mailbox): both snapshots, flags of each. */
    const char *kept[] = {"find",      "--message-id",      "<m1@example.org>",
                          "--mailbox", "alice@example.org", "--json",
                          NULL};
    r = restore(kept);
    scn_expect_code(&r, 0, "find m1");
    assert_true(ars_json_u64(r.out, NULL, "snapshots_searched", &v));
    assert_int_equal(v, 2);
    FMT(want, "\"snapshot\":\"%s\"", snap1);
    expect_in(r.out, want, "find m1");
    FMT(want, "\"snapshot\":\"%s\"", snap2);
    expect_in(r.out, want, "find m1");
    expect_in(r.out, "\"info\":\":2,S\",\"flags\":[\"Seen\"]", "find m1");
    expect_in(r.out, "\"info\":\":2,ST\",\"flags\":[\"Seen\",\"Deleted\"]",
              "find m1");
    expect_in(r.out, "\"in_newest\":true,\"absent_from\":null", "find m1");
    expect_in(r.out, "\"snapshots\":2,", "find m1");
    ars_out_fini(&r);

    /* Human summary. */
    const char *human[] = {"find", "--message-id", "m3@example.org", NULL};
    r = restore(human);
    scn_expect_code(&r, 0, "find m3 (human)");
    expect_in(r.out, "deleted after that: absent from snapshot", "find m3");
    expect_in(r.out, "1767225603.M3P1.host", "find m3");
    ars_out_fini(&r);

    const char *unknown[] = {"find", "--message-id", "nobody@example.org",
                             "--json", NULL};
    r = restore(unknown);
    scn_expect_code(&r, 5, "find unknown");
    expect_in(r.out, "\"hits\":[]", "find unknown");
    expect_in(r.out, "\"ok\":false", "find unknown");
    ars_out_fini(&r);

    const char *usage[] = {"find", "--message-id", "<>", NULL};
    r = restore(usage);
    scn_expect_code(&r, 2, "find <>");
    ars_out_fini(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_browse_mailboxes),
        cmocka_unit_test(test_browse_folders),
        cmocka_unit_test(test_browse_messages),
        cmocka_unit_test(test_browse_at),
        cmocka_unit_test(test_browse_find),
    };
    return cmocka_run_group_tests(tests, setup, scn_group_teardown);
}
