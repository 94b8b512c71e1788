/*
 * restore_pit_test.c - point-in-time restores of every granularity with
 * the real coffer-agent, coffer-restore and coffer-vault over mutual TLS.
 *
 * Two mailboxes of one host (alice: INBOX, .Sent, .Archive.2024, keyword
 * flags, a CRLF message, a body with "From " lines; bob: a few messages)
 * are backed up three times; before each backup the test keeps a copy of
 * both stores (every file with its bytes, mode and nanosecond mtime), and
 * between backups it changes them: new mail, deleted mail, a flag change,
 * a message moved between folders, a new folder, new/ to cur/.
 *
 * For a time strictly between backups 1 and 2, and between 2 and 3 (from
 * the vault's receive times that `snapshots --json` shows), it restores
 * and compares with the copy kept at that time:
 *  1. the whole mailbox: the same tree exactly (ars_tree_compare: paths
 *     with flags, bytes, modes, mtimes, nothing more);
 *  2. one folder (IMAP-style "Archive/2024", Maildir++ ".Sent", INBOX):
 *     exactly that folder's message files and Dovecot keyword names;
 *  3. two messages by Message-ID (with and without <>): exactly those
 *     files, at the path they had then (one moved between the points);
 *  4. the whole host: DIR/alice@example.org and DIR/bob@example.org, each
 *     exactly its copy, and nothing else in DIR;
 *  5. --format mbox: exactly one file per folder, each byte-equal to the
 *     mbox of the kept copy's folder (mbox.h), with as many "From " lines
 *     as the folder held messages and the body's "From " quoted.
 * Then: a Message-ID that is not there exits 5, names it in "missing",
 * and the one that is there is restored; --into-live into a copy of the
 * live store creates only .Restored-<today> and its subfolders (every
 * file that was there is unchanged: bytes, mode, mtime; no new top-level
 * name but those), holding the messages and keyword file of the point in
 * time plus a maildirfolder each; a second one, into a store where only a
 * subfolder of that name exists, makes .Restored-<today>-2. On a
 * terminal (a pty as stderr) the progress bar is drawn and cleared, and
 * stdout has only the result; off a terminal there is no bar.
 *
 * About 5-10 s in a RelWithDebInfo build (3 backups, ~20 restores).
 */
#define _GNU_SOURCE /* nanosecond stat fields, nftw, posix_openpt */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs, trees */
#include "mbox.h"                 /* the expected mbox files */
#include "mem.h"                  /* cfr_malloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "session.h"              /* restore_iso_time */
#include "scenario_support.h"     /* vault, configs, runs */
#include "vault_client_support.h" /* vc_now_ms */

#define ESCROW_PW "point in time escrow passphrase"
#define RUN_MS    60000
#define BASE_SECS INT64_C(1767225600) /* 2026-01-01 */
#define HOST      "system-test"       /* ars_agent_conf_write's host */
#define FMT       SCN_FMT

static struct scn sc = {
    .escrow_pw = ESCROW_PW, SCN_PROGRAMS, .n_vaults = 1, .run_ms = RUN_MS};
static char alice[VS_PATH_MAX + 96], bob[VS_PATH_MAX + 96];

/* ---- programs ------------------------------------------------------------ */

static void
run(const char *bin, const char *const *args, struct ars_out *o)
{
    assert_int_equal(ars_capture(bin, args, sc.dir, RUN_MS, o), 0);
}

/* coffer-restore --config <restore.conf> restore ARGS... --json; exit
 * code checked */
static void
restore(const char *const *args, int want, struct ars_out *o, const char *what)
{
    const char *a[24];
    size_t n = 0;
    a[n++] = "restore";
    for (size_t i = 0; args[i] != NULL && n < 22; i++) {
        a[n++] = args[i];
    }
    a[n++] = "--json";
    a[n] = NULL;
    scn_restore(&sc, sc.conf_all, a, o);
    scn_expect_code(o, want, what);
    /* Off a terminal (and with --json) no progress bar. */
    assert_null(strstr(o->err, "restoring: "));
}

/* ---- files --------------------------------------------------------------- */

static void
mkdirs(const char *path)
{
    assert_int_equal(ars_mkdirs(path), 0);
}

/* A file with its own nanosecond mtime. */
static void
put(const char *root, const char *rel, const char *text, int64_t secs)
{
    struct timespec ts = {(time_t)secs, (long)(secs % 1000) * 1000 + 123};
    scn_put(root, rel, text, strlen(text), &ts);
}

/* A message with Message-ID <m<n>@pit.example>. */
static void
put_msg(const char *root, const char *rel, int n, const char *extra)
{
    char text[2048];
    FMT(text,
        "Return-Path: <s%d@example.net>\nFrom: s%d@example.net\n"
        "To: alice@example.org\nMessage-ID: <m%d@pit.example>\n"
        "Subject: message %d\n\nHello %d.\n%s",
        n, n, n, n, n, extra != NULL ? extra : "");
    put(root, rel, text, BASE_SECS + n * 3600);
}

/* Copies one file with its bytes, mode and mtime (cp -a of a file). */
static void
copy_file(const char *from, const char *to)
{
    struct stat sb;
    struct timespec ts[2];
    size_t len = 0;
    char *data = ars_slurp(from, &len);
    assert_non_null(data);
    assert_int_equal(lstat(from, &sb), 0);
    assert_int_equal(ars_write(to, data, len, sb.st_mode & 07777), 0);
    assert_int_equal(chmod(to, sb.st_mode & 07777), 0);
    ts[0] = sb.st_mtim;
    ts[1] = sb.st_mtim;
    assert_int_equal(utimensat(AT_FDCWD, to, ts, 0), 0);
    cfr_free(data);
}

/*
 * Copies the regular files below src whose relative path pred accepts
 * (NULL: all) to dst, the path mapped by map (NULL: kept); directories
 * as needed. nftw has no context argument: these are its.
 */
typedef bool copy_pred(const char *rel);
typedef void copy_map(const char *rel, char *out, size_t n);
static const char *copy_src, *copy_dst;
static copy_pred *copy_keep;
static copy_map *copy_to;

static int
copy_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    char to[VS_PATH_MAX + 512], mapped[512];
    const char *rel = p + strlen(copy_src);
    (void)f;
    if (*rel == '/') {
        rel++;
    }
    if (flag == FTW_D) {
        FMT(to, "%s/%s", copy_dst, rel);
        if (copy_keep == NULL && copy_to == NULL) {
            mkdirs(to); /* cp -a keeps empty folders (tmp/) too */
        }
        return 0;
    }
    if (flag != FTW_F || !S_ISREG(sb->st_mode) ||
        (copy_keep != NULL && !copy_keep(rel))) {
        return 0;
    }
    if (copy_to != NULL) {
        copy_to(rel, mapped, sizeof(mapped));
    } else {
        FMT(mapped, "%s", rel);
    }
    FMT(to, "%s/%s", copy_dst, mapped);
    {
        char parent[VS_PATH_MAX + 512];
        FMT(parent, "%s", to);
        *strrchr(parent, '/') = '\0';
        mkdirs(parent);
    }
    copy_file(p, to);
    return 0;
}

static void
copy_tree(const char *src, const char *dst, copy_pred *keep, copy_map *map)
{
    copy_src = src;
    copy_dst = dst;
    copy_keep = keep;
    copy_to = map;
    mkdirs(dst);
    assert_int_equal(nftw(src, copy_cb, 16, FTW_PHYS), 0);
}

static long
compare(const char *want, const char *got, const char *what)
{
    char why[1024];
    long n = ars_tree_compare(want, got, why, sizeof(why));
    if (n < 0) {
        fail_msg("%s: %s (want %s, got %s)", what, why, want, got);
    }
    return n;
}

/* The message files of one folder ("" = INBOX) and its dovecot-keywords
 * (the stores have no dovecot-uidlist, which the restore would rewrite). */
static const char *pred_folder;
static bool
in_folder(const char *rel)
{
    size_t n = strlen(pred_folder);
    if (n > 0 && (strncmp(rel, pred_folder, n) != 0 || rel[n] != '/')) {
        return false;
    }
    rel += n > 0 ? n + 1 : 0;
    if (strcmp(rel, "dovecot-keywords") == 0) {
        return true;
    }
    return (strncmp(rel, "cur/", 4) == 0 || strncmp(rel, "new/", 4) == 0) &&
           strchr(rel + 4, '/') == NULL;
}

/* A message file of any folder: [.F/]{cur,new}/name. */
static bool
in_folder_any(const char *rel)
{
    const char *slash = strchr(rel, '/');
    if (rel[0] == '.' && slash != NULL) {
        rel = slash + 1;
    }
    return (strncmp(rel, "cur/", 4) == 0 || strncmp(rel, "new/", 4) == 0) &&
           strchr(rel + 4, '/') == NULL;
}

/* Files holding one of the wanted Message-ID lines. */
static const char *pred_ids[2];
static bool
has_id(const char *rel)
{
    char p[VS_PATH_MAX + 512];
    bool hit = false;
    char *text;
    FMT(p, "%s/%s", copy_src, rel);
    text = ars_slurp(p, NULL);
    assert_non_null(text);
    for (size_t i = 0; i < 2; i++) {
        char line[128];
        FMT(line, "\nMessage-ID: <%s>", pred_ids[i]);
        hit = hit || strstr(text, line) != NULL;
    }
    cfr_free(text);
    return hit && in_folder_any(rel);
}

/* ---- the stores ---------------------------------------------------------- */

static void
stage1(void)
{
    static const char *const dirs[] = {"cur",
                                       "new",
                                       "tmp",
                                       ".Sent/cur",
                                       ".Sent/new",
                                       ".Sent/tmp",
                                       ".Archive.2024/cur",
                                       ".Archive.2024/new",
                                       ".Archive.2024/tmp"};
    char p[VS_PATH_MAX + 256];
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        FMT(p, "%s/%s", alice, dirs[i]);
        mkdirs(p);
        FMT(p, "%s/%s", bob, i < 3 ? dirs[i] : "cur");
        mkdirs(p);
    }
    put_msg(alice, "cur/1767225601.M1P1.pit:2,S", 1, NULL);
    put(alice, "cur/1767225602.M2P1.pit:2,RS",
        "Return-Path: <>\r\nFrom: crlf@example.net\r\n"
        "Message-ID: <m2@pit.example>\r\nSubject: crlf\r\n\r\nbody\r\n",
        BASE_SECS + 2 * 3600);
    put_msg(alice, "cur/1767225603.M3P1.pit:2,a", 3, NULL);
    put_msg(alice, "new/1767225604.M4P1.pit", 4, NULL);
    put_msg(alice, "cur/1767225605.M5P1.pit:2,Sb", 5,
            "From the start of a line.\n>From quoted once.\nno end");
    put(alice, "dovecot-keywords", "0 $Junk\n1 work\n", BASE_SECS);
    put_msg(alice, ".Sent/cur/1767225610.M10P1.pit:2,S", 10, NULL);
    put_msg(alice, ".Sent/cur/1767225611.M11P1.pit:2,S", 11, NULL);
    put(alice, ".Sent/maildirfolder", "", BASE_SECS);
    put_msg(alice, ".Archive.2024/cur/1767225620.M20P1.pit:2,S", 20, NULL);
    put(alice, ".Archive.2024/maildirfolder", "", BASE_SECS);
    put_msg(bob, "cur/1767225640.M40P1.pit:2,S", 40, NULL);
    put_msg(bob, "new/1767225641.M41P1.pit", 41, NULL);
}

static void
stage2(void)
{
    put_msg(alice, "new/1767225606.M6P1.pit", 6, NULL); /* new mail */
    scn_rm(alice, "cur/1767225603.M3P1.pit:2,a");       /* deleted */
    scn_mv(alice, "cur/1767225601.M1P1.pit:2,S",        /* flagged */
           "cur/1767225601.M1P1.pit:2,FS");
    scn_mv(alice, "cur/1767225602.M2P1.pit:2,RS", /* moved to a folder */
           ".Archive.2024/cur/1767225602.M2P1.pit:2,RS");
    put_msg(bob, "cur/1767225642.M42P1.pit:2,S", 42, NULL);
}

static void
stage3(void)
{
    char p[VS_PATH_MAX + 256];
    put_msg(alice, "cur/1767225607.M7P1.pit:2,S", 7, NULL);
    scn_rm(alice, ".Sent/cur/1767225610.M10P1.pit:2,S");
    scn_mv(alice, ".Sent/cur/1767225611.M11P1.pit:2,S",
           ".Sent/cur/1767225611.M11P1.pit:2,RS");
    scn_mv(alice, "new/1767225604.M4P1.pit", "cur/1767225604.M4P1.pit:2,S");
    FMT(p, "%s/.Lists/cur", alice);
    mkdirs(p);
    put_msg(alice, ".Lists/cur/1767225630.M30P1.pit:2,S", 30, NULL);
    put(alice, ".Lists/maildirfolder", "", BASE_SECS);
    scn_rm(bob, "new/1767225641.M41P1.pit");
}

/* ---- backups and times --------------------------------------------------- */

/* Backs both mailboxes up; returns alice's newest receive time. */
static int64_t
backup(void)
{
    struct ars_out o;
    uint64_t ms = 0;
    const char *b[] = {"backup", "--config", sc.agent_conf, "--json", NULL};
    const char *s[] = {"--config",  sc.conf_all,         "snapshots",
                       "--mailbox", "alice@example.org", "--json",
                       NULL};
    run(COFFER_AGENT_BIN, b, &o);
    scn_expect_code(&o, 0, "backup");
    ars_out_fini(&o);
    run(COFFER_RESTORE_BIN, s, &o);
    scn_expect_code(&o, 0, "snapshots");
    /* Newest first: the first receive time is this backup's. */
    assert_true(ars_json_u64(o.out, NULL, "received_ms", &ms));
    ars_out_fini(&o);
    return (int64_t)ms;
}

/* Keeps a copy of both stores as they are now (stage k). */
static void
keep(int k)
{
    char a[VS_PATH_MAX + 96], b[VS_PATH_MAX + 96];
    FMT(a, "%s/keep%d/alice", sc.dir, k);
    FMT(b, "%s/keep%d/bob", sc.dir, k);
    copy_tree(alice, a, NULL, NULL);
    copy_tree(bob, b, NULL, NULL);
}

/* ---- checks of one point in time ---------------------------------------- */

static void
expect_field(const char *doc, const char *key, const char *want)
{
    char got[512];
    if (!ars_json_str(doc, NULL, key, got, sizeof(got)) ||
        strcmp(got, want) != 0) {
        fail_msg("\"%s\": want %s in %s", key, want, doc);
    }
}

/* Lines of an mbox file that start with "From " (message separators). */
static size_t
from_lines(const char *text)
{
    size_t n = strncmp(text, "From ", 5) == 0 ? 1 : 0;
    for (const char *p = strstr(text, "\nFrom "); p != NULL;
         p = strstr(p + 1, "\nFrom ")) {
        n++;
    }
    return n;
}

/* Message files below root/folder. */
static size_t
count_msgs(const char *root, const char *folder)
{
    size_t n = 0;
    static const char *const subs[] = {"cur", "new"};
    for (size_t i = 0; i < 2; i++) {
        char p[VS_PATH_MAX + 512];
        DIR *d;
        struct dirent *de;
        FMT(p, "%s/%s%s%s", root, folder, folder[0] != '\0' ? "/" : "",
            subs[i]);
        if ((d = opendir(p)) == NULL) {
            continue;
        }
        while ((de = readdir(d)) != NULL) {
            n += de->d_name[0] != '.';
        }
        closedir(d);
    }
    return n;
}

/* The mbox files a restore of kept must give, made from the copy. */
static void
check_mbox(const char *kept, const char *got, const char *what)
{
    char want[VS_PATH_MAX + 128];
    DIR *d;
    struct dirent *de;
    size_t n_want = 0, n_got = 0;
    int src, dst;
    struct cfr_err err;

    FMT(want, "%s.want", got);
    mkdirs(want);
    src = open(kept, O_RDONLY | O_DIRECTORY);
    dst = open(want, O_RDONLY | O_DIRECTORY);
    assert_true(src >= 0 && dst >= 0);
    d = opendir(kept);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char name[300], folder[256];
        if (strcmp(de->d_name, "cur") == 0) {
            FMT(folder, "%s", "");
        } else if (de->d_name[0] == '.' && strcmp(de->d_name, ".") != 0 &&
                   strcmp(de->d_name, "..") != 0) {
            FMT(folder, "%s", de->d_name);
        } else {
            continue;
        }
        assert_int_equal(restore_mbox_name(folder, name, sizeof(name), &err),
                         0);
        assert_int_equal(
            restore_mbox_folder(src, folder, dst, name, NULL, NULL, &err), 0);
        n_want++;
        /* Independently of mbox.c: one From line per message. */
        {
            char p[VS_PATH_MAX + 512];
            char *text;
            FMT(p, "%s/%s", got, name);
            text = ars_slurp(p, NULL);
            if (text == NULL) {
                fail_msg("%s: no %s", what, name);
            }
            assert_int_equal(from_lines(text), count_msgs(kept, folder));
            if (folder[0] == '\0') {
                assert_non_null(strstr(text, "\n>From the start of a line."));
                assert_non_null(strstr(text, "\n>>From quoted once."));
                assert_non_null(strstr(text, "\nX-Keywords: work\n"));
            }
            cfr_free(text);
        }
    }
    closedir(d);
    close(src);
    close(dst);
    /* Every file equal in bytes, and no other file (no working folder). */
    d = opendir(got);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char a[VS_PATH_MAX + 512], b[VS_PATH_MAX + 512];
        size_t la = 0, lb = 0;
        char *x, *y;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        n_got++;
        FMT(a, "%s/%s", want, de->d_name);
        FMT(b, "%s/%s", got, de->d_name);
        x = ars_slurp(a, &la);
        y = ars_slurp(b, &lb);
        if (x == NULL || y == NULL || la != lb || memcmp(x, y, la) != 0) {
            fail_msg("%s: %s differs from the kept copy's mbox", what,
                     de->d_name);
        }
        cfr_free(x);
        cfr_free(y);
    }
    closedir(d);
    assert_int_equal(n_got, n_want);
    ars_rm_tree(want);
}

static void
check_point(int k, int64_t at_ms)
{
    char at[32], to[VS_PATH_MAX + 96], want[VS_PATH_MAX + 96],
        kept[VS_PATH_MAX + 96], keptb[VS_PATH_MAX + 96],
        what[VS_PATH_MAX + 128];
    struct ars_out o;

    restore_iso_time(at_ms, at);
    FMT(kept, "%s/keep%d/alice", sc.dir, k);
    FMT(keptb, "%s/keep%d/bob", sc.dir, k);

    /* 1. The mailbox. */
    FMT(to, "%s/p%d-mailbox", sc.dir, k);
    {
        const char *a[] = {
            "--mailbox", "alice@example.org", "--at", at, "--to", to, NULL};
        restore(a, 0, &o, "mailbox");
        expect_field(o.out, "format", "maildir");
        ars_out_fini(&o);
    }
    FMT(what, "point %d: mailbox", k);
    assert_true(compare(kept, to, what) >= 8);

    /* 2. Folders, both spellings, and INBOX. */
    static const char *const folders[][2] = {
        {"Archive/2024", ".Archive.2024"}, {".Sent", ".Sent"}, {"INBOX", ""}};
    for (size_t i = 0; i < 3; i++) {
        FMT(to, "%s/p%d-folder%zu", sc.dir, k, i);
        FMT(want, "%s.want", to);
        const char *a[] = {"--mailbox", "alice@example.org", "--at", at,
                           "--folder",  folders[i][0],       "--to", to,
                           NULL};
        restore(a, 0, &o, "folder");
        expect_field(o.out, "folder", folders[i][0]);
        ars_out_fini(&o);
        pred_folder = folders[i][1];
        copy_tree(kept, want, in_folder, NULL);
        FMT(what, "point %d: folder %s", k, folders[i][0]);
        assert_true(compare(want, to, what) >= 1);
    }

    /* 3. Two messages by Message-ID; m2 moved to .Archive.2024 at 2. */
    FMT(to, "%s/p%d-ids", sc.dir, k);
    FMT(want, "%s.want", to);
    {
        const char *a[] = {"--mailbox",
                           "alice@example.org",
                           "--at",
                           at,
                           "--message-id",
                           "<m2@pit.example>",
                           "--message-id",
                           "m11@pit.example",
                           "--to",
                           to,
                           NULL};
        restore(a, 0, &o, "message IDs");
        assert_non_null(strstr(o.out, "\"missing\":[]"));
        ars_out_fini(&o);
    }
    pred_ids[0] = "m2@pit.example";
    pred_ids[1] = "m11@pit.example";
    copy_src = kept; /* has_id reads the kept files */
    copy_tree(kept, want, has_id, NULL);
    FMT(what, "point %d: message IDs", k);
    assert_int_equal(compare(want, to, what), 2);

    /* 4. The whole host: both mailboxes, nothing else. */
    FMT(to, "%s/p%d-host", sc.dir, k);
    {
        const char *a[] = {"--host", HOST, "--at", at, "--to", to, NULL};
        char sub[VS_PATH_MAX + 160];
        DIR *d;
        struct dirent *de;
        size_t n = 0;
        restore(a, 0, &o, "host");
        assert_non_null(strstr(o.out, "\"mailboxes\":[{\"mailbox\":"));
        ars_out_fini(&o);
        FMT(sub, "%s/alice@example.org", to);
        FMT(what, "point %d: host, alice", k);
        compare(kept, sub, what);
        FMT(sub, "%s/bob@example.org", to);
        FMT(what, "point %d: host, bob", k);
        compare(keptb, sub, what);
        d = opendir(to);
        assert_non_null(d);
        while ((de = readdir(d)) != NULL) {
            n += de->d_name[0] != '.';
        }
        closedir(d);
        assert_int_equal(n, 2);
    }

    /* 5. mbox. */
    FMT(to, "%s/p%d-mbox", sc.dir, k);
    {
        const char *a[] = {"--mailbox", "alice@example.org",
                           "--at",      at,
                           "--format",  "mbox",
                           "--to",      to,
                           NULL};
        restore(a, 0, &o, "mbox");
        expect_field(o.out, "format", "mbox");
        ars_out_fini(&o);
    }
    FMT(what, "point %d: mbox", k);
    check_mbox(kept, to, what);
}

/* ---- --into-live ----------------------------------------------------------
 */

static const char *live_name;

/* Kept messages and keywords, mapped into the new folder. */
static bool
live_keep(const char *rel)
{
    const char *slash = strchr(rel, '/');
    const char *leaf = slash != NULL && rel[0] == '.' ? slash + 1 : rel;
    return in_folder_any(rel) || strcmp(leaf, "dovecot-keywords") == 0;
}

static void
live_map(const char *rel, char *out, size_t n)
{
    int k = rel[0] == '.' ? snprintf(out, n, "%s%s", live_name, rel)
                          : snprintf(out, n, "%s/%s", live_name, rel);
    assert_true(k > 0 && (size_t)k < n);
}

static void
check_live(int64_t at_ms)
{
    char at[32], live[VS_PATH_MAX + 96], before[VS_PATH_MAX + 96],
        moved[VS_PATH_MAX + 96], want[VS_PATH_MAX + 96], kept[VS_PATH_MAX + 96],
        name[256], today[64];
    struct ars_out o;
    struct tm tm;
    time_t t0 = time(NULL), t1;
    DIR *d;
    struct dirent *de;
    size_t n_new = 0;

    restore_iso_time(at_ms, at);
    FMT(kept, "%s/keep1/alice", sc.dir);
    FMT(live, "%s/live", sc.dir);
    FMT(before, "%s/live.before", sc.dir);
    FMT(moved, "%s/live.restored", sc.dir);
    FMT(want, "%s/live.want", sc.dir);
    copy_tree(alice, live, NULL, NULL);
    copy_tree(live, before, NULL, NULL);

    const char *a[] = {"--mailbox",   "alice@example.org",
                       "--at",        at,
                       "--into-live", "--to",
                       live,          NULL};
    restore(a, 0, &o, "into-live");
    t1 = time(NULL);
    assert_true(ars_json_str(o.out, NULL, "live_folder", name, sizeof(name)));
    ars_out_fini(&o);
    /* Named by the day of the restore (UTC). */
    gmtime_r(&t0, &tm);
    strftime(today, sizeof(today), ".Restored-%Y-%m-%d", &tm);
    if (strcmp(name, today) != 0) {
        gmtime_r(&t1, &tm);
        strftime(today, sizeof(today), ".Restored-%Y-%m-%d", &tm);
        assert_string_equal(name, today);
    }
    live_name = name;

    /* Only the new folder and its subfolders appear; move them aside. */
    mkdirs(moved);
    d = opendir(live);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char p[VS_PATH_MAX + 512], q[VS_PATH_MAX + 512], r[VS_PATH_MAX + 512];
        struct stat sb;
        FMT(p, "%s/%s", before, de->d_name);
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            lstat(p, &sb) == 0) {
            continue;
        }
        if (strncmp(de->d_name, name, strlen(name)) != 0 ||
            (de->d_name[strlen(name)] != '\0' &&
             de->d_name[strlen(name)] != '.')) {
            fail_msg("--into-live created %s in the live store", de->d_name);
        }
        /* Each new folder is marked a Maildir++ folder (empty file). */
        FMT(q, "%s/%s/maildirfolder", live, de->d_name);
        assert_int_equal(lstat(q, &sb), 0);
        assert_true(S_ISREG(sb.st_mode) && sb.st_size == 0);
        assert_int_equal(unlink(q), 0);
        FMT(r, "%s/%s", moved, de->d_name);
        FMT(q, "%s/%s", live, de->d_name);
        assert_int_equal(rename(q, r), 0);
        n_new++;
    }
    closedir(d);
    /* INBOX, .Sent, .Archive.2024 of point 1. */
    assert_int_equal(n_new, 3);
    /* Everything that was there is exactly as it was. */
    compare(before, live, "--into-live: the live store");
    /* The new folders hold the point in time's messages and keywords. */
    copy_tree(kept, want, live_keep, live_map);
    compare(want, moved, "--into-live: the new folders");

    /* Once more the same day, into a store where only a subfolder of
     * that name exists: the next free name, not a merge. */
    {
        char taken[VS_PATH_MAX + 512];
        FMT(taken, "%s/%s.Old", before, today);
        mkdirs(taken);
        const char *b[] = {"--mailbox",   "alice@example.org",
                           "--at",        at,
                           "--into-live", "--to",
                           before,        NULL};
        restore(b, 0, &o, "into-live again");
        assert_true(
            ars_json_str(o.out, NULL, "live_folder", name, sizeof(name)));
        ars_out_fini(&o);
        FMT(want, "%s-2", today);
        assert_string_equal(name, want);
    }
}

/* ---- the progress bar ---------------------------------------------------- */

/*
 * coffer-restore with a pseudo-terminal as stderr (stdout into a file):
 * the bar is drawn there and cleared at the end; the result line goes to
 * stdout only.
 */
static void
check_progress(void)
{
    char to[VS_PATH_MAX + 96], op[VS_PATH_MAX + 96], buf[65536];
    const char *argv[] = {
        COFFER_RESTORE_BIN,  "--config", sc.conf_all, "restore", "--mailbox",
        "alice@example.org", "--to",     to,          NULL};
    size_t len = 0;
    int st = 0, master;
    pid_t pid;
    int64_t deadline = vc_now_ms() + RUN_MS;
    char *out;

    FMT(to, "%s/progress", sc.dir);
    FMT(op, "%s/progress.out", sc.dir);
    master = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    const char *slave = ptsname(master);
    assert_non_null(slave);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        int sl = open(slave, O_RDWR);
        int of = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (sl < 0 || of < 0 || dup2(sl, 2) < 0 || dup2(of, 1) < 0) {
            _exit(126);
        }
        close(master);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (;;) {
        struct pollfd pfd = {master, POLLIN, 0};
        if (poll(&pfd, 1, 20) > 0 && (pfd.revents & POLLIN) != 0 &&
            len + 1 < sizeof(buf)) {
            ssize_t r = read(master, buf + len, sizeof(buf) - 1 - len);
            if (r > 0) {
                len += (size_t)r;
            }
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            struct pollfd d = {master, POLLIN, 0};
            while (poll(&d, 1, 50) > 0 && (d.revents & POLLIN) != 0 &&
                   len + 1 < sizeof(buf)) {
                ssize_t r = read(master, buf + len, sizeof(buf) - 1 - len);
                if (r <= 0) {
                    break;
                }
                len += (size_t)r;
            }
            break;
        }
        if (vc_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("coffer-restore on a terminal did not finish");
        }
    }
    close(master);
    buf[len] = '\0';
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Drawn (files, MiB of the snapshot's total, rate), then cleared. */
    assert_non_null(strstr(buf, "restoring: "));
    assert_non_null(strstr(buf, " MiB ("));
    assert_true(len >= 4 && strcmp(buf + len - 4, "\r\033[K") == 0);
    out = ars_slurp(op, NULL);
    assert_non_null(out);
    assert_non_null(strstr(out, "restored "));
    assert_null(strstr(out, "restoring: "));
    cfr_free(out);
}

/* ---- the test ------------------------------------------------------------ */

static void
test_point_in_time(void **state)
{
    int64_t r[3];
    struct ars_out o;
    char to[VS_PATH_MAX + 96], at[32];
    struct timespec t0, t1;
    (void)state;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    stage1();
    keep(1);
    r[0] = backup();
    stage2();
    keep(2);
    r[1] = backup();
    stage3();
    keep(3);
    r[2] = backup();
    assert_true(r[0] < r[1] && r[1] < r[2]);

    /* Strictly between two backups: the earlier one's state. */
    check_point(1, r[0] + (r[1] - r[0]) / 2);
    check_point(2, r[1] + (r[2] - r[1]) / 2);

    /* A Message-ID that is not there: named, exit 5; the other restored. */
    FMT(to, "%s/missing", sc.dir);
    restore_iso_time(r[0] + (r[1] - r[0]) / 2, at);
    {
        const char *a[] = {"--mailbox",
                           "alice@example.org",
                           "--at",
                           at,
                           "--message-id",
                           "m6@pit.example",
                           "--message-id",
                           "m1@pit.example",
                           "--to",
                           to,
                           NULL};
        restore(a, 5, &o, "a missing Message-ID");
        assert_non_null(strstr(o.out, "\"missing\":[\"m6@pit.example\"]"));
        assert_non_null(strstr(o.out, "\"kind\":\"not-found\""));
        assert_non_null(strstr(o.err, "<m6@pit.example>"));
        ars_out_fini(&o);
        char p[VS_PATH_MAX + 160];
        FMT(p, "%s/cur/1767225601.M1P1.pit:2,S", to);
        assert_int_equal(access(p, F_OK), 0);
    }
    /* Before the first backup there is nothing to restore. */
    restore_iso_time(r[0] - 60000, at);
    {
        FMT(to, "%s/too-early", sc.dir);
        const char *a[] = {
            "--mailbox", "alice@example.org", "--at", at, "--to", to, NULL};
        restore(a, 5, &o, "before the first backup");
        ars_out_fini(&o);
    }

    check_live(r[0] + (r[1] - r[0]) / 2);
    check_progress();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "restore_pit_test: %.1f s\n",
            (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* ---- setup --------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    if (scn_setup(&sc) != 0) {
        return -1;
    }
    snprintf(alice, sizeof(alice), "%s/alice", sc.dir);
    snprintf(bob, sizeof(bob), "%s/bob", sc.dir);
    snprintf(sc.mailboxes, sizeof(sc.mailboxes),
             "mailboxes = ( { name = \"alice@example.org\"; root = \"%s\"; },"
             " { name = \"bob@example.org\"; root = \"%s\"; } );",
             alice, bob);
    return scn_init(&sc) == 0 ? 0 : -1;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_point_in_time),
    };
    return cmocka_run_group_tests(tests, setup, scn_group_teardown);
}
