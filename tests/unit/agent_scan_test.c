/*
 * agent_scan_test.c - the mail store scanner on real directory trees: a
 * Maildir++ store with folders, new/ and cur/, flags, Dovecot files, an
 * mbox, opaque files, symlinks, a fifo, odd name bytes; per-file errors
 * (mode bits when not root, and an injected errno that works as root);
 * names that vanish, get renamed or appear between readdir and stat; and
 * flat memory over 100,000 files.
 *
 * The 100,000-file test takes about 2 s on tmpfs (/dev/shm, used when
 * writable), 10 s or more on a disk file system; AGENT_SCAN_BIG=0 skips it.
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
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scan.h"

#define PAST_SECS 1700000000 /* 2023: mtimes well before any scan */

/* ---- helpers ----------------------------------------------------------- */

static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < size);
}

static void
make_root_in(char *out, size_t size, const char *tmp)
{
    pathf(out, size, "%s/agent_scan_XXXXXX", tmp);
    assert_non_null(mkdtemp(out));
}

static void
make_root(char *out, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    make_root_in(out, size, tmp != NULL ? tmp : "/tmp");
}

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    if (flag == FTW_DP || flag == FTW_D) {
        chmod(p, 0700);
        return rmdir(p) == 0 ? 0 : -1;
    }
    return unlink(p) == 0 ? 0 : -1;
}

static void
rm_rf(const char *root)
{
    assert_int_equal(nftw(root, rm_cb, 32, FTW_DEPTH | FTW_PHYS), 0);
}

static void
mkdirf(const char *root, const char *rel)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", root, rel);
    assert_int_equal(mkdir(p, 0700), 0);
}

static void
maildir(const char *root, const char *folder)
{
    char p[PATH_MAX];
    if (folder[0] != '\0') {
        mkdirf(root, folder);
    }
    const char *subs[] = {"cur", "new", "tmp"};
    for (int i = 0; i < 3; i++) {
        pathf(p, sizeof(p), "%s%s%s", folder, folder[0] ? "/" : "", subs[i]);
        mkdirf(root, p);
    }
}

/* Writes content to root/rel with an mtime in the past. */
static void
put(const char *root, const char *rel, const char *content)
{
    char p[PATH_MAX];
    pathf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
    struct timespec ts[2] = {{PAST_SECS, 0}, {PAST_SECS, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

/* ---- collecting entries ------------------------------------------------ */

struct got {
    enum agent_scan_status status;
    enum agent_scan_reason reason;
    int sys_errno;
    enum cfr_snap_kind kind;
    bool in_new;
    bool recovered;
    bool is_dir;
    uint64_t size;
    char path[PATH_MAX];
    size_t path_len;
    uint8_t key[PATH_MAX];
    size_t key_len;
    char info[64];
    char flags[64];
};

struct collect {
    struct got *v;
    size_t n;
    size_t cap;
};

static int
collect_cb(void *ctx, const struct agent_scan_entry *e)
{
    struct collect *c = ctx;
    assert_true(c->n < c->cap);
    struct got *g = &c->v[c->n++];
    memset(g, 0, sizeof(*g));
    g->status = e->status;
    g->reason = e->reason;
    g->sys_errno = e->sys_errno;
    g->kind = e->kind;
    g->in_new = e->in_new;
    g->recovered = e->recovered;
    g->is_dir = e->is_dir;
    g->size = e->size;
    assert_true(e->path_len < sizeof(g->path));
    assert_int_equal(strlen(e->path), e->path_len);
    memcpy(g->path, e->path, e->path_len + 1);
    g->path_len = e->path_len;
    assert_true(e->key_len <= sizeof(g->key));
    memcpy(g->key, e->key, e->key_len);
    g->key_len = e->key_len;
    assert_true(e->info_len < sizeof(g->info));
    memcpy(g->info, e->info, e->info_len);
    assert_true(e->flags_len < sizeof(g->flags));
    memcpy(g->flags, e->flags, e->flags_len);
    if (e->status == AGENT_SCAN_FILE) {
        /* The message's name is base + info; the path ends with it. */
        if (e->kind == CFR_SNAP_MAILDIR_MESSAGE) {
            assert_true(e->base_len + e->info_len <= e->path_len);
            assert_memory_equal(e->path + e->path_len - e->info_len -
                                    e->base_len,
                                e->base, e->base_len);
        }
    }
    return 0;
}

static void
collect_init(struct collect *c, size_t cap)
{
    c->v = calloc(cap, sizeof(*c->v));
    assert_non_null(c->v);
    c->n = 0;
    c->cap = cap;
}

/* The last entry whose key is folder 0x00 name. */
static const struct got *
find_key(const struct collect *c, const char *folder, const char *name,
         size_t name_len)
{
    uint8_t key[PATH_MAX];
    size_t fl = strlen(folder);
    memcpy(key, folder, fl);
    key[fl] = 0;
    memcpy(key + fl + 1, name, name_len);
    size_t kl = fl + 1 + name_len;
    const struct got *found = NULL;
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].key_len == kl && memcmp(c->v[i].key, key, kl) == 0) {
            found = &c->v[i];
        }
    }
    return found;
}

static const struct got *
find(const struct collect *c, const char *folder, const char *name)
{
    return find_key(c, folder, name, strlen(name));
}

static size_t
count_path(const struct collect *c, const char *path)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) {
        n += strcmp(c->v[i].path, path) == 0;
    }
    return n;
}

/* Odd bytes in a message name: 0xff, a control byte, a quote. */
static const char odd_base[] = "1700000007.M7P1.h\xff\x01\"q";

/* The store most tests scan. */
static void
build_store(const char *root)
{
    char p[PATH_MAX];
    maildir(root, "");
    maildir(root, ".Sent");
    maildir(root, ".Archive.2025");
    put(root, ".Sent/maildirfolder", "");
    put(root, ".Archive.2025/maildirfolder", "");
    put(root, "new/1700000001.M1P1.host,S=5,W=6", "hello");
    put(root, "cur/1700000002.M2P1.host,S=5:2,S", "hello");
    put(root, "cur/1700000003.M3P1.host:2,RS", "hi");
    put(root, ".Sent/cur/1700000004.M4P1.host:2,S", "sent");
    put(root, ".Archive.2025/cur/1700000005.M5P1.host:2,", "old");
    pathf(p, sizeof(p), "cur/%s:2,S", odd_base);
    put(root, p, "odd");
    put(root, "tmp/1700000009.M9P1.host", "being delivered");
    put(root, ".Sent/tmp/1700000010.M10P1.host", "being delivered");
    put(root, "dovecot-uidlist", "3 V1 N4\n");
    put(root, "dovecot-keywords", "0 $Forwarded\n");
    put(root, "subscriptions", "Sent\nArchive.2025\n");
    put(root, ".Sent/dovecot-uidlist", "3 V2 N2\n");
    mkdirf(root, "mail");
    put(root, "mail/old-archive.mbox", "From a@b Mon Jan  1 00:00:00 2024\n");
    put(root, "notes.txt", "opaque");
    pathf(p, sizeof(p), "%s/link", root);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    pathf(p, sizeof(p), "%s/cur/1700000011.M11P1.host:2,S", root);
    assert_int_equal(symlink("/etc/hostname", p), 0);
    pathf(p, sizeof(p), "%s/fifo", root);
    assert_int_equal(mkfifo(p, 0600), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void
test_scan_store_layout(void **state)
{
    (void)state;
    char root[PATH_MAX];
    make_root(root, sizeof(root));
    build_store(root);
    struct collect c;
    collect_init(&c, 256);
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, NULL, collect_cb, &c, &sum, &err), 0);

    /* Messages: keys are folder 0x00 base; flags parsed; new/ noted. */
    const struct got *g = find(&c, "", "1700000001.M1P1.host,S=5,W=6");
    assert_non_null(g);
    assert_int_equal(g->kind, CFR_SNAP_MAILDIR_MESSAGE);
    assert_true(g->in_new);
    assert_string_equal(g->info, "");
    assert_int_equal(g->size, 5);
    g = find(&c, "", "1700000003.M3P1.host");
    assert_non_null(g);
    assert_false(g->in_new);
    assert_string_equal(g->info, ":2,RS");
    assert_string_equal(g->flags, "RS");
    assert_string_equal(g->path, "cur/1700000003.M3P1.host:2,RS");
    g = find(&c, ".Sent", "1700000004.M4P1.host");
    assert_non_null(g);
    assert_int_equal(g->kind, CFR_SNAP_MAILDIR_MESSAGE);
    assert_string_equal(g->path, ".Sent/cur/1700000004.M4P1.host:2,S");
    g = find(&c, ".Archive.2025", "1700000005.M5P1.host");
    assert_non_null(g);
    assert_string_equal(g->info, ":2,");
    assert_string_equal(g->flags, "");
    /* Odd bytes survive exactly, in the key and the path. */
    g = find(&c, "", odd_base);
    assert_non_null(g);
    char want[PATH_MAX];
    pathf(want, sizeof(want), "cur/%s:2,S", odd_base);
    assert_string_equal(g->path, want);

    /* Other files: folder 0x00 "/" path-within-folder, kind by name. */
    g = find(&c, "", "/dovecot-uidlist");
    assert_non_null(g);
    assert_int_equal(g->kind, CFR_SNAP_DOVECOT_META);
    assert_non_null(find(&c, "", "/dovecot-keywords"));
    assert_int_equal(find(&c, "", "/subscriptions")->kind,
                     CFR_SNAP_DOVECOT_META);
    g = find(&c, ".Sent", "/dovecot-uidlist");
    assert_non_null(g);
    assert_string_equal(g->path, ".Sent/dovecot-uidlist");
    assert_int_equal(find(&c, ".Sent", "/maildirfolder")->kind,
                     CFR_SNAP_DOVECOT_META);
    g = find(&c, "", "/mail/old-archive.mbox");
    assert_non_null(g);
    assert_int_equal(g->kind, CFR_SNAP_MBOX);
    g = find(&c, "", "/notes.txt");
    assert_non_null(g);
    assert_int_equal(g->kind, CFR_SNAP_OPAQUE);

    /* tmp/ is never reported; symlinks and the fifo are skipped. */
    assert_int_equal(count_path(&c, "tmp/1700000009.M9P1.host"), 0);
    assert_int_equal(count_path(&c, ".Sent/tmp/1700000010.M10P1.host"), 0);
    g = find(&c, "", "/link");
    assert_non_null(g);
    assert_int_equal(g->status, AGENT_SCAN_SKIPPED);
    assert_int_equal(g->reason, AGENT_SCAN_R_SYMLINK);
    g = find(&c, "", "1700000011.M11P1.host");
    assert_non_null(g);
    assert_int_equal(g->status, AGENT_SCAN_SKIPPED);
    g = find(&c, "", "/fifo");
    assert_non_null(g);
    assert_int_equal(g->reason, AGENT_SCAN_R_SPECIAL);

    /* The summary adds up: 6 messages, 6 Dovecot files, 1 + 1 others. */
    assert_int_equal(sum.by_kind[CFR_SNAP_MAILDIR_MESSAGE], 6);
    assert_int_equal(sum.by_kind[CFR_SNAP_DOVECOT_META], 6);
    assert_int_equal(sum.by_kind[CFR_SNAP_MBOX], 1);
    assert_int_equal(sum.by_kind[CFR_SNAP_OPAQUE], 1);
    assert_int_equal(sum.files, 14);
    assert_int_equal(sum.skipped, 3);
    assert_int_equal(sum.by_reason[AGENT_SCAN_R_SYMLINK], 2);
    assert_int_equal(sum.by_reason[AGENT_SCAN_R_SPECIAL], 1);
    assert_int_equal(sum.errors, 0);
    assert_int_equal(sum.vanished, 0);
    assert_int_equal(c.n, 17);
    /* Keys are unique in a quiet store. */
    for (size_t i = 0; i < c.n; i++) {
        for (size_t j = i + 1; j < c.n; j++) {
            assert_false(c.v[i].key_len == c.v[j].key_len &&
                         memcmp(c.v[i].key, c.v[j].key, c.v[i].key_len) == 0);
        }
    }
    free(c.v);
    rm_rf(root);
}

static void
test_scan_missing_root(void **state)
{
    (void)state;
    struct collect c;
    collect_init(&c, 4);
    struct cfr_err err;
    assert_int_equal(agent_scan_run("/nonexistent/agent/root", NULL, collect_cb,
                                    &c, NULL, &err),
                     CFR_ENOTFOUND);
    assert_int_equal(c.n, 0);
    free(c.v);
}

/* Hook: fails the stat of one path with an errno. */
struct fail_hook {
    const char *path;
    int e;
    int calls;
};

static int
fail_hook(void *ctx, const char *path)
{
    struct fail_hook *h = ctx;
    h->calls++;
    return strcmp(path, h->path) == 0 ? h->e : 0;
}

static void
test_scan_injected_error(void **state)
{
    (void)state;
    char root[PATH_MAX];
    make_root(root, sizeof(root));
    build_store(root);
    struct collect c;
    collect_init(&c, 256);
    struct fail_hook h = {"cur/1700000003.M3P1.host:2,RS", EIO, 0};
    struct agent_scan_opts o = {.before_stat = fail_hook, .hook_ctx = &h};
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, &o, collect_cb, &c, &sum, &err), 0);
    /* One stat per entry: 17 entries, the 3 directories walked as entries
     * (.Sent, .Archive.2025, mail) and new/ and cur/ of the 3 folders. */
    assert_int_equal(h.calls, 17 + 3 + 6);
    /* The error carries the message's identity, so that a consumer keeps
     * what it knew of it instead of taking it for deleted. */
    const struct got *g = find(&c, "", "1700000003.M3P1.host");
    assert_non_null(g);
    assert_string_equal(g->path, h.path);
    assert_int_equal(g->status, AGENT_SCAN_ERROR);
    assert_int_equal(g->reason, AGENT_SCAN_R_IO);
    assert_int_equal(g->sys_errno, EIO);
    assert_int_equal(sum.errors, 1);
    assert_int_equal(sum.by_reason[AGENT_SCAN_R_IO], 1);
    /* The rest of the store is still there. */
    assert_int_equal(sum.files, 13);
    assert_non_null(find(&c, ".Sent", "1700000004.M4P1.host"));
    free(c.v);
    rm_rf(root);
}

static void
test_scan_unreadable(void **state)
{
    (void)state;
    if (geteuid() == 0) {
        /* Root reads anything: test_scan_injected_error covers this. */
        print_message("running as root: mode bits do not apply, skipped\n");
        return;
    }
    char root[PATH_MAX];
    char p[PATH_MAX];
    make_root(root, sizeof(root));
    build_store(root);
    pathf(p, sizeof(p), "%s/cur/1700000003.M3P1.host:2,RS", root);
    assert_int_equal(chmod(p, 0), 0);
    pathf(p, sizeof(p), "%s/.Archive.2025/cur", root);
    assert_int_equal(chmod(p, 0), 0);
    struct collect c;
    collect_init(&c, 256);
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, NULL, collect_cb, &c, &sum, &err), 0);
    assert_int_equal(sum.errors, 2);
    assert_int_equal(sum.by_reason[AGENT_SCAN_R_PERMISSION], 2);
    const struct got *g = find(&c, "", "1700000003.M3P1.host");
    assert_non_null(g);
    assert_int_equal(g->status, AGENT_SCAN_ERROR);
    bool file_err = false;
    bool dir_err = false;
    for (size_t i = 0; i < c.n; i++) {
        const struct got *x = &c.v[i];
        if (x->status != AGENT_SCAN_ERROR) {
            continue;
        }
        assert_int_equal(x->sys_errno, EACCES);
        if (x->is_dir) {
            /* A directory error names its folder's prefix. */
            dir_err = true;
            assert_string_equal(x->path, ".Archive.2025/cur");
            assert_int_equal(x->key_len, strlen(".Archive.2025") + 1);
            assert_memory_equal(x->key, ".Archive.2025", x->key_len);
        } else {
            file_err = true;
            assert_string_equal(x->path, "cur/1700000003.M3P1.host:2,RS");
        }
    }
    assert_true(file_err && dir_err);
    assert_int_equal(sum.files, 12);
    free(c.v);
    assert_int_equal(chmod(p, 0700), 0); /* so that it can be removed */
    rm_rf(root);
}

/*
 * Hook: mutates the store as the scanner reaches chosen names: a flag
 * change, a move new/ -> cur/, an expunge and an arrival.
 */
struct mutate_hook {
    const char *root;
    int arrivals;
};

static int
mutate_hook(void *ctx, const char *path)
{
    struct mutate_hook *h = ctx;
    char a[PATH_MAX];
    char b[PATH_MAX];
    if (strcmp(path, "cur/1700000002.M2P1.host,S=5:2,S") == 0) {
        pathf(a, sizeof(a), "%s/%s", h->root, path);
        pathf(b, sizeof(b), "%s/cur/1700000002.M2P1.host,S=5:2,RS", h->root);
        assert_int_equal(rename(a, b), 0);
    } else if (strcmp(path, "new/1700000001.M1P1.host,S=5,W=6") == 0) {
        pathf(a, sizeof(a), "%s/%s", h->root, path);
        pathf(b, sizeof(b), "%s/cur/1700000001.M1P1.host,S=5,W=6:2,S", h->root);
        assert_int_equal(rename(a, b), 0);
    } else if (strcmp(path, ".Sent/cur/1700000004.M4P1.host:2,S") == 0) {
        pathf(a, sizeof(a), "%s/%s", h->root, path);
        assert_int_equal(unlink(a), 0);
    } else if (h->arrivals == 0) {
        h->arrivals++;
        put(h->root, "new/1800000000.M99P1.host", "arrived");
    }
    return 0;
}

static void
test_scan_live_mutation(void **state)
{
    (void)state;
    char root[PATH_MAX];
    make_root(root, sizeof(root));
    build_store(root);
    struct collect c;
    collect_init(&c, 256);
    struct mutate_hook h = {root, 0};
    struct agent_scan_opts o = {.before_stat = mutate_hook, .hook_ctx = &h};
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, &o, collect_cb, &c, &sum, &err), 0);
    assert_int_equal(sum.errors, 0);
    /* The flag change is reported under its new name, not lost. */
    const struct got *g = find(&c, "", "1700000002.M2P1.host,S=5");
    assert_non_null(g);
    assert_int_equal(g->status, AGENT_SCAN_FILE);
    assert_string_equal(g->info, ":2,RS");
    assert_string_equal(g->path, "cur/1700000002.M2P1.host,S=5:2,RS");
    /* The move new/ -> cur/ likewise, now in cur/ with flags. */
    g = find(&c, "", "1700000001.M1P1.host,S=5,W=6");
    assert_non_null(g);
    assert_false(g->in_new);
    assert_string_equal(g->info, ":2,S");
    /* The expunged message is not reported and is counted once. */
    assert_null(find(&c, ".Sent", "1700000004.M4P1.host"));
    assert_int_equal(sum.vanished, 1);
    assert_int_equal(sum.recovered, 2);
    /* Everything else is still there. */
    assert_non_null(find(&c, "", "1700000003.M3P1.host"));
    assert_non_null(find(&c, ".Archive.2025", "1700000005.M5P1.host"));
    assert_int_equal(h.arrivals, 1);
    free(c.v);
    rm_rf(root);
}

/* Hook: every message stat'ed under ":2,S" is renamed to ":2,RS" first. */
static int
storm_hook(void *ctx, const char *path)
{
    const char *root = ctx;
    size_t n = strlen(path);
    if (n > 4 && strcmp(path + n - 4, ":2,S") == 0) {
        char a[PATH_MAX];
        char b[PATH_MAX];
        pathf(a, sizeof(a), "%s/%s", root, path);
        pathf(b, sizeof(b), "%s/%.*s:2,RS", root, (int)(n - 4), path);
        assert_int_equal(rename(a, b), 0);
    }
    return 0;
}

static void
test_scan_rename_storm(void **state)
{
    (void)state;
    enum { N = 600 };
    char root[PATH_MAX];
    char p[64];
    make_root(root, sizeof(root));
    maildir(root, "");
    for (int i = 0; i < N; i++) {
        pathf(p, sizeof(p), "cur/%d.M%dP1.host:2,S", 1700000000 + i, i);
        put(root, p, "x");
    }
    struct collect c;
    collect_init(&c, 4 * N);
    struct agent_scan_opts o = {.before_stat = storm_hook, .hook_ctx = root};
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, &o, collect_cb, &c, &sum, &err), 0);
    /* Every message is reported under its new name; none is lost. */
    for (int i = 0; i < N; i++) {
        pathf(p, sizeof(p), "%d.M%dP1.host", 1700000000 + i, i);
        const struct got *g = find(&c, "", p);
        assert_non_null(g);
        assert_string_equal(g->info, ":2,RS");
    }
    assert_int_equal(sum.vanished, 0);
    assert_int_equal(sum.recovered, N);
    /* One pass resolves them all, whatever their number (none when
     * readdir happened to return every new name itself). */
    assert_true(sum.rereads <= 1);
    assert_true(c.n >= N && c.n <= 2 * N);
    free(c.v);
    rm_rf(root);
}

/* ---- memory ------------------------------------------------------------ */

static long
status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n + 1, NULL, 10);
        }
    }
    fclose(f);
    return v;
}

static int
count_cb(void *ctx, const struct agent_scan_entry *e)
{
    uint64_t *n = ctx;
    *n += e->status == AGENT_SCAN_FILE;
    return 0;
}

static void
test_scan_memory_flat(void **state)
{
    (void)state;
    const char *gate = getenv("AGENT_SCAN_BIG");
    if (gate != NULL && strcmp(gate, "0") == 0) {
        print_message("AGENT_SCAN_BIG=0: skipped\n");
        return;
    }
    enum { N = 100000 };
    char root[PATH_MAX];
    char p[PATH_MAX];
    /* tmpfs when there is one: creating and removing 100,000 files on a
     * disk file system takes most of the test's time, not the scan. */
    if (access("/dev/shm", W_OK) == 0) {
        make_root_in(root, sizeof(root), "/dev/shm");
    } else {
        make_root(root, sizeof(root));
    }
    maildir(root, "");
    for (int i = 0; i < N; i++) {
        /* Tiny (empty) files, no mtime call: set-up is most of the time. */
        pathf(p, sizeof(p), "%s/cur/%d.M%dP1.host:2,S", root, 1700000000 + i,
              i);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        close(fd);
    }
    /* Reset the peak so that it measures the scan alone. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool peak_reset = f != NULL && fputs("5", f) >= 0;
    if (f != NULL) {
        peak_reset = fclose(f) == 0 && peak_reset;
    }
    long before = status_kb(peak_reset ? "VmHWM:" : "VmRSS:");
    struct timespec t0;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t files = 0;
    struct agent_scan_summary sum;
    struct cfr_err err;
    assert_int_equal(agent_scan_run(root, NULL, count_cb, &files, &sum, &err),
                     0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long after = status_kb(peak_reset ? "VmHWM:" : "VmRSS:");
    assert_int_equal(files, N);
    assert_int_equal(sum.files, N);
    print_message("scan of %d files: %.2f s, %s grew %ld KiB\n", N,
                  (double)(t1.tv_sec - t0.tv_sec) +
                      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                  peak_reset ? "peak RSS" : "RSS", after - before);
    /* Streaming: a few KiB of buffers and one DIR per level. Generous, to
     * absorb libc's and the allocator's own growth. */
    assert_true(after - before < 4096);
    if (peak_reset) {
        /* The probe itself can see growth: 16 MiB touched shows up. */
        char *big = malloc(16u << 20);
        assert_non_null(big);
        memset(big, 1, 16u << 20);
        assert_true(status_kb("VmHWM:") - after >= 8192 || big[12345] != 1);
        free(big);
    }
    rm_rf(root);
}

static void
test_scan_kind_of(void **state)
{
    (void)state;
    struct {
        const char *name;
        enum cfr_snap_kind kind;
    } cases[] = {
        {"dovecot-uidlist", CFR_SNAP_DOVECOT_META},
        {"dovecot.index.log", CFR_SNAP_DOVECOT_META},
        {"subscriptions", CFR_SNAP_DOVECOT_META},
        {"maildirfolder", CFR_SNAP_DOVECOT_META},
        {"mbox", CFR_SNAP_MBOX},
        {"2024.mbox", CFR_SNAP_MBOX},
        {".mbox", CFR_SNAP_OPAQUE},
        {"notes.mbox.bak", CFR_SNAP_OPAQUE},
        {"sieve", CFR_SNAP_OPAQUE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(agent_scan_kind_of((const uint8_t *)cases[i].name,
                                            strlen(cases[i].name)),
                         cases[i].kind);
    }
    assert_string_equal(agent_scan_reason_name(AGENT_SCAN_R_SYMLINK),
                        "symlink");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_store_layout),
        cmocka_unit_test(test_scan_missing_root),
        cmocka_unit_test(test_scan_injected_error),
        cmocka_unit_test(test_scan_unreadable),
        cmocka_unit_test(test_scan_live_mutation),
        cmocka_unit_test(test_scan_rename_storm),
        cmocka_unit_test(test_scan_memory_flat),
        cmocka_unit_test(test_scan_kind_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
