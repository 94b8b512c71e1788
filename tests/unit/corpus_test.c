/*
 * corpus_test.c - bench/gen_corpus writes a valid Maildir++ store with the
 * properties the benchmarks rely on: Dovecot layout and metadata, names
 * whose S=/W=/time agree with the file, realistic headers and MIME, list
 * copies sharing their bodies, forwarded attachments byte-identical, an
 * mbox with quoted "From " lines, the size cap, determinism, and an evolve
 * step that arrives, reads, flags and deletes consistently.
 *
 * The test runs the built generator, found beside this binary in the build
 * tree (<build>/tests/corpus_test -> <build>/bench/gen_corpus), so it checks
 * the program the benchmarks use. A missing generator fails the test.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOW_SECS  INT64_C(1793491200) /* gen_corpus's default --now */
#define DAYS      540                 /* and --days */
#define MAX_MSGS  20000
#define LINE_MAX_ 998 /* RFC 5322 line limit, without CRLF */

static char gen_bin[PATH_MAX];
static char tmp_root[PATH_MAX];
static char corpus[PATH_MAX]; /* the shared corpus most tests read */

/* snprintf that fails the test instead of truncating a path. */
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

/* ---- running the generator ------------------------------------------------
 */

static int
run_gen(const char *const *args)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = gen_bin;
    for (; *args != NULL && n + 2 < 32; args++) {
        argv[n++] = (char *)*args;
    }
    argv[n++] = (char *)"--quiet";
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv(gen_bin, argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
        return -1;
    }
    return WEXITSTATUS(st);
}

static void
rm_tree(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
}

/* ---- reading files ----------------------------------------------------------
 */

static char *
slurp(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    char *p = malloc((size_t)st.st_size + 1);
    if (p == NULL) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(p, 1, (size_t)st.st_size, f);
    fclose(f);
    p[n] = '\0';
    *len_r = n;
    return p;
}

static uint64_t
fnv(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++) {
        h = (h ^ s[i]) * UINT64_C(1099511628211);
    }
    return h;
}

/* ---- the message walk
 * -------------------------------------------------------- */

struct msg {
    char path[PATH_MAX];
    char dir[PATH_MAX]; /* the folder: path without /cur/<name> */
    char folder[64];    /* "" for INBOX, else the folder name without '.' */
    char base[256];
    char flags[32];
    bool in_new;
    int64_t secs;
    long usecs;
};

static struct msg *msgs;
static size_t nmsgs;
static unsigned mbox_count;
static char mbox_paths[64][PATH_MAX];

/* Parses a Maildir name; false when it does not have the promised form. */
static bool
parse_name(const char *name, bool in_new, struct msg *m)
{
    char *end;
    errno = 0;
    long long secs = strtoll(name, &end, 10);
    if (errno != 0 || end == name || strncmp(end, ".M", 2) != 0) {
        return false;
    }
    const char *us = end + 2;
    long usecs = strtol(us, &end, 10);
    if (end - us != 6 || *end != 'P' || usecs < 0 || usecs > 999999) {
        return false;
    }
    const char *pid = end + 1;
    strtol(pid, &end, 10);
    if (end == pid || *end != '.') {
        return false;
    }
    const char *host = end + 1;
    const char *comma = strchr(host, ',');
    if (comma == NULL || comma == host) {
        return false;
    }
    for (const char *c = host; c < comma; c++) {
        if (*c == '/' || *c == ':' || *c == ',') {
            return false;
        }
    }
    if (strncmp(comma, ",S=", 3) != 0) {
        return false;
    }
    strtoull(comma + 3, &end, 10);
    if (strncmp(end, ",W=", 3) != 0) {
        return false;
    }
    strtoull(end + 3, &end, 10);
    size_t blen = (size_t)(end - name);
    if (in_new) {
        if (*end != '\0') {
            return false;
        }
        m->flags[0] = '\0';
    } else {
        if (strncmp(end, ":2,", 3) != 0 || strlen(end + 3) >= 32) {
            return false;
        }
        pathf(m->flags, sizeof(m->flags), "%s", end + 3);
    }
    if (blen >= sizeof(m->base)) {
        return false;
    }
    memcpy(m->base, name, blen);
    m->base[blen] = '\0';
    m->secs = secs;
    m->usecs = usecs;
    m->in_new = in_new;
    return true;
}

static int
walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F) {
        return 0;
    }
    const char *slash = strrchr(path, '/');
    const char *name = slash + 1;
    if (strstr(path, "/mail/") != NULL && strstr(name, ".mbox") != NULL) {
        if (mbox_count < 64) {
            pathf(mbox_paths[mbox_count], PATH_MAX, "%s", path);
        }
        mbox_count++;
        return 0;
    }
    size_t dl = (size_t)(slash - path);
    bool in_cur = dl >= 4 && strncmp(slash - 4, "/cur", 4) == 0;
    bool in_new = dl >= 4 && strncmp(slash - 4, "/new", 4) == 0;
    if (!in_cur && !in_new) {
        return 0;
    }
    if (nmsgs >= MAX_MSGS) {
        return 1;
    }
    struct msg *m = &msgs[nmsgs];
    memset(m, 0, sizeof(*m));
    pathf(m->path, sizeof(m->path), "%s", path);
    pathf(m->dir, sizeof(m->dir), "%.*s", (int)(dl - 4), path);
    if (!parse_name(name, in_new, m)) {
        fail_msg("bad Maildir name: %s", path);
    }
    /* The folder is the path component before cur/new. */
    const char *md = strstr(path, "/Maildir/");
    assert_non_null(md);
    const char *rest = md + strlen("/Maildir/");
    if (rest[0] == '.') {
        const char *e = strchr(rest, '/');
        size_t fl = (size_t)(e - rest - 1);
        assert_true(fl < sizeof(m->folder));
        memcpy(m->folder, rest + 1, fl);
        m->folder[fl] = '\0';
    }
    (void)st;
    nmsgs++;
    return 0;
}

static void
walk(const char *root)
{
    nmsgs = 0;
    mbox_count = 0;
    assert_int_equal(nftw(root, walk_cb, 32, FTW_PHYS), 0);
}

/* ---- fixtures
 * -------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    (void)state;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        return -1;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    if (snprintf(gen_bin, sizeof(gen_bin), "%s/../bench/gen_corpus", self) >=
        (int)sizeof(gen_bin)) {
        return -1;
    }
    if (access(gen_bin, X_OK) != 0) {
        fprintf(stderr, "corpus_test: generator not built: %s\n", gen_bin);
        return -1;
    }
    memcpy(tmp_root, "/tmp/corpus_test.XXXXXX", 24);
    if (mkdtemp(tmp_root) == NULL) {
        return -1;
    }
    if (snprintf(corpus, sizeof(corpus), "%s/a", tmp_root) >=
        (int)sizeof(corpus)) {
        return -1;
    }
    const char *args[] = {"--seed",  "7", "--domains",           "2",
                          "--users", "5", "--messages-per-user", "80",
                          "--lists", "3", "--list-members",      "6",
                          corpus,    NULL};
    if (run_gen(args) != 0) {
        fprintf(stderr, "corpus_test: gen_corpus failed\n");
        return -1;
    }
    msgs = calloc(MAX_MSGS, sizeof(*msgs));
    return msgs == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    if (tmp_root[0] != '\0') {
        rm_tree(tmp_root);
    }
    free(msgs);
    return 0;
}

/* ---- layout
 * -------------------------------------------------------------------------- */

static bool
is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool
is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void
check_maildir(const char *dir, bool subfolder)
{
    char p[PATH_MAX + 32];
    static const char *const sub[] = {"cur", "new", "tmp"};
    for (int i = 0; i < 3; i++) {
        pathf(p, sizeof(p), "%s/%s", dir, sub[i]);
        if (!is_dir(p)) {
            fail_msg("missing %s", p);
        }
    }
    pathf(p, sizeof(p), "%s/maildirfolder", dir);
    assert_int_equal(is_file(p), subfolder);
    pathf(p, sizeof(p), "%s/dovecot-uidlist", dir);
    assert_true(is_file(p));
    pathf(p, sizeof(p), "%s/dovecot-keywords", dir);
    size_t len;
    char *kw = slurp(p, &len);
    assert_non_null(kw);
    assert_non_null(strstr(kw, "0 $Forwarded\n"));
    free(kw);
}

static void
test_corpus_layout_is_maildir_plus_plus(void **state)
{
    (void)state;
    DIR *d = opendir(corpus);
    assert_non_null(d);
    struct dirent *de;
    unsigned domains = 0, users = 0, list_folders = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        domains++;
        char dp[PATH_MAX];
        pathf(dp, sizeof(dp), "%s/%s", corpus, de->d_name);
        assert_non_null(strchr(de->d_name, '.')); /* a domain name */
        DIR *ud = opendir(dp);
        assert_non_null(ud);
        struct dirent *ue;
        while ((ue = readdir(ud)) != NULL) {
            if (ue->d_name[0] == '.') {
                continue;
            }
            users++;
            char md[PATH_MAX + 300], p[PATH_MAX + 400];
            pathf(md, sizeof(md), "%s/%s/Maildir", dp, ue->d_name);
            check_maildir(md, false);
            static const char *const std[] = {"Sent", "Drafts", "Trash",
                                              "Archive.2025"};
            for (int i = 0; i < 4; i++) {
                pathf(p, sizeof(p), "%s/.%s", md, std[i]);
                check_maildir(p, true);
            }
            /* subscriptions names exactly the folders on disk. */
            pathf(p, sizeof(p), "%s/subscriptions", md);
            size_t len;
            char *subs = slurp(p, &len);
            assert_non_null(subs);
            unsigned listed = 0;
            for (char *line = subs, *nl; (nl = strchr(line, '\n')) != NULL;
                 line = nl + 1) {
                *nl = '\0';
                char fp[PATH_MAX + 700];
                pathf(fp, sizeof(fp), "%s/.%s", md, line);
                check_maildir(fp, true);
                listed++;
                if (strncmp(line, "Lists.", 6) == 0) {
                    list_folders++;
                }
            }
            free(subs);
            unsigned on_disk = 0;
            DIR *fd = opendir(md);
            assert_non_null(fd);
            struct dirent *fe;
            while ((fe = readdir(fd)) != NULL) {
                if (fe->d_name[0] == '.' && fe->d_name[1] != '\0' &&
                    fe->d_name[1] != '.') {
                    on_disk++;
                }
            }
            closedir(fd);
            assert_int_equal(listed, on_disk);
        }
        closedir(ud);
    }
    closedir(d);
    assert_int_equal(domains, 2);
    assert_int_equal(users, 10);
    /* 3 lists with 6 members each. */
    assert_int_equal(list_folders, 18);
}

/* ---- names, sizes, times, flags
 * ----------------------------------------------------- */

static size_t
count_lf(const char *p, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c += p[i] == '\n';
    }
    return c;
}

static void
test_corpus_names_sizes_times_and_flags(void **state)
{
    (void)state;
    walk(corpus);
    assert_true(nmsgs > 500);
    size_t seen = 0, in_new = 0, replied = 0, flagged = 0, drafts_ok = 0;
    size_t drafts = 0, keywords = 0;
    for (size_t i = 0; i < nmsgs; i++) {
        const struct msg *m = &msgs[i];
        struct stat st;
        assert_int_equal(stat(m->path, &st), 0);
        size_t len;
        char *body = slurp(m->path, &len);
        assert_non_null(body);
        char want[64];
        pathf(want, sizeof(want), ",S=%zu,W=%zu", len,
              len + count_lf(body, len));
        if (strstr(m->base, want) == NULL) {
            fail_msg("%s: size fields disagree with %s", m->path, want);
        }
        free(body);
        /* mtime is the delivery time in the name, to the microsecond. */
        assert_int_equal(st.st_mtim.tv_sec, m->secs);
        assert_int_equal(st.st_mtim.tv_nsec, m->usecs * 1000);
        assert_true(m->secs <= NOW_SECS);
        assert_true(m->secs >= NOW_SECS - (int64_t)DAYS * 86400);
        assert_int_equal(st.st_mode & 0777, 0600);
        /* Flags: strictly ascending ASCII, from the Maildir set. */
        for (const char *f = m->flags; *f; f++) {
            assert_true(strchr("DFPRST", *f) != NULL ||
                        (*f >= 'a' && *f <= 'z'));
            if (f[1] != '\0') {
                assert_true(f[0] < f[1]);
            }
        }
        in_new += m->in_new;
        seen += strchr(m->flags, 'S') != NULL;
        replied += strchr(m->flags, 'R') != NULL;
        flagged += strchr(m->flags, 'F') != NULL;
        keywords += strpbrk(m->flags, "abc") != NULL;
        if (strcmp(m->folder, "Drafts") == 0) {
            drafts++;
            drafts_ok += strcmp(m->flags, "DS") == 0;
        }
    }
    double seen_share = (double)seen / (double)nmsgs;
    print_message("messages=%zu seen=%.2f new=%zu replied=%zu flagged=%zu\n",
                  nmsgs, seen_share, in_new, replied, flagged);
    assert_true(seen_share > 0.55 && seen_share < 0.85);
    assert_true(in_new > 0);
    assert_true(replied > 0);
    assert_true(flagged > 0);
    assert_true(keywords > 0);
    assert_int_equal(drafts, drafts_ok);
}

/* ---- dovecot-uidlist
 * ---------------------------------------------------------------- */

static int
cmp_msg_folder(const void *a, const void *b)
{
    const struct msg *x = a, *y = b;
    int c = strcmp(x->dir, y->dir);
    return c != 0 ? c : strcmp(x->base, y->base);
}

/*
 * Every folder's uidlist: "3 V<n> N<n> G<32 hex>", then "<uid> :<base>"
 * in increasing uid (and delivery) order, all below N, naming exactly the
 * files in cur/ and new/. Folders without messages are not visited.
 */
static void
check_uidlists(const char *root)
{
    walk(root);
    qsort(msgs, nmsgs, sizeof(*msgs), cmp_msg_folder);
    size_t i = 0;
    unsigned folders = 0;
    while (i < nmsgs) {
        size_t j = i;
        while (j < nmsgs && strcmp(msgs[i].dir, msgs[j].dir) == 0) {
            j++;
        }
        char ul[PATH_MAX + 16];
        pathf(ul, sizeof(ul), "%s/dovecot-uidlist", msgs[i].dir);
        size_t len;
        char *text = slurp(ul, &len);
        assert_non_null(text);
        unsigned v, next;
        char guid[64];
        assert_int_equal(sscanf(text, "3 V%u N%u G%63s", &v, &next, guid), 3);
        assert_int_equal(strlen(guid), 32);
        assert_int_equal(strspn(guid, "0123456789abcdef"), 32);
        char *line = strchr(text, '\n') + 1;
        size_t n = 0;
        unsigned prev = 0;
        while (*line != '\0') {
            char *nl = strchr(line, '\n');
            assert_non_null(nl);
            *nl = '\0';
            char *colon = strstr(line, " :");
            assert_non_null(colon);
            unsigned uid = (unsigned)strtoul(line, NULL, 10);
            assert_true(uid > prev && uid < next);
            prev = uid;
            /* Entries are in name (delivery) order, one per file. */
            assert_true(i + n < j);
            if (strcmp(colon + 2, msgs[i + n].base) != 0) {
                fail_msg("%s: entry %s, file %s", ul, colon + 2,
                         msgs[i + n].base);
            }
            n++;
            line = nl + 1;
        }
        assert_int_equal(n, j - i);
        free(text);
        folders++;
        i = j;
    }
    assert_true(folders >= 5);
}

static void
test_corpus_uidlists_match_files(void **state)
{
    (void)state;
    check_uidlists(corpus);
}

/* ---- headers and MIME
 * ------------------------------------------------------------------ */

struct part_use {
    uint64_t part;  /* hash of a base64 attachment body */
    uint64_t msgid; /* hash of the Message-ID of the message carrying it */
};

static int
cmp_u64pair(const void *a, const void *b)
{
    const struct part_use *x = a, *y = b;
    if (x->part != y->part) {
        return x->part < y->part ? -1 : 1;
    }
    return x->msgid < y->msgid ? -1 : x->msgid > y->msgid;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The value of header name in the header block hdr (first occurrence). */
static bool
header_value(const char *hdr, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = hdr; p != NULL && *p != '\0';) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vl = strcspn(v, "\n");
            pathf(out, size, "%.*s", (int)vl, v);
            return true;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return false;
}

static size_t
count_headers(const char *hdr, const char *name)
{
    size_t n = 0, nl = strlen(name);
    for (const char *p = hdr; p != NULL && *p != '\0';) {
        n += strncmp(p, name, nl) == 0 && p[nl] == ':';
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return n;
}

struct list_copy {
    uint64_t msgid;
    uint64_t shared; /* hash from the list server's Received down */
    uint64_t rcpt;   /* hash of Delivered-To */
};

static int
cmp_copy(const void *a, const void *b)
{
    const struct list_copy *x = a, *y = b;
    return x->msgid < y->msgid ? -1 : x->msgid > y->msgid;
}

static void
test_corpus_headers_mime_lists_and_attachments(void **state)
{
    (void)state;
    walk(corpus);
    struct part_use *uses = calloc(MAX_MSGS * 4, sizeof(*uses));
    struct list_copy *copies = calloc(MAX_MSGS, sizeof(*copies));
    uint64_t *ids = calloc(MAX_MSGS, sizeof(*ids));
    size_t *plain_sizes = calloc(MAX_MSGS, sizeof(size_t));
    assert_non_null(uses);
    assert_non_null(copies);
    assert_non_null(ids);
    assert_non_null(plain_sizes);
    size_t nuses = 0, ncopies = 0, nids = 0, nplain = 0, with_att = 0;
    size_t encoded_subjects = 0, multipart_alt = 0, qp = 0;
    for (size_t i = 0; i < nmsgs; i++) {
        const struct msg *m = &msgs[i];
        size_t len;
        char *text = slurp(m->path, &len);
        assert_non_null(text);
        char *end = strstr(text, "\n\n");
        assert_non_null(end);
        end[1] = '\0'; /* text is now the header block */
        for (char *p = text; *p; p = strchr(p, '\n') + 1) {
            assert_true(strcspn(p, "\n") <= LINE_MAX_);
        }
        char v[1024];
        bool delivered =
            strcmp(m->folder, "Sent") != 0 && strcmp(m->folder, "Drafts") != 0;
        if (delivered) {
            assert_int_equal(strncmp(text, "Return-Path: <", 14), 0);
            size_t rcv = count_headers(text, "Received");
            if (rcv < 2 || rcv > 4) {
                fail_msg("%s: %zu Received headers", m->path, rcv);
            }
            assert_true(header_value(text, "Delivered-To", v, sizeof(v)));
            assert_true(header_value(text, "X-Spam-Status", v, sizeof(v)));
        }
        static const char *const need[] = {
            "From",       "To",           "Subject",     "Date",
            "Message-ID", "MIME-Version", "Content-Type"};
        for (size_t k = 0; k < sizeof(need) / sizeof(need[0]); k++) {
            if (!header_value(text, need[k], v, sizeof(v))) {
                fail_msg("%s: no %s", m->path, need[k]);
            }
        }
        /* RFC 5322 date: "Tue, 14 Oct 2025 09:12:30 +0200". */
        assert_true(header_value(text, "Date", v, sizeof(v)));
        char wd[8], mon[8], zone[8];
        int day, year, hh, mm, ss;
        assert_int_equal(sscanf(v, "%3s, %d %3s %d %d:%d:%d %5s", wd, &day, mon,
                                &year, &hh, &mm, &ss, zone),
                         8);
        assert_true(zone[0] == '+' || zone[0] == '-');
        assert_true(header_value(text, "Subject", v, sizeof(v)));
        encoded_subjects += strstr(v, "=?UTF-8?") != NULL;
        assert_true(header_value(text, "Message-ID", v, sizeof(v)));
        assert_true(v[0] == '<' && strchr(v, '@') && v[strlen(v) - 1] == '>');
        uint64_t idh = fnv(v, strlen(v));
        char *body = end + 2;
        size_t blen = len - (size_t)(body - text);
        bool is_list = header_value(text, "List-Id", v, sizeof(v));
        if (is_list) {
            assert_true(header_value(text, "List-Unsubscribe", v, sizeof(v)));
            assert_non_null(strstr(m->folder, "Lists."));
            /* The shared part starts at the list server's Received. */
            char *shared = strstr(text, "\nReceived: from smtp.");
            assert_non_null(shared);
            end[1] = '\n';
            copies[ncopies].msgid = idh;
            copies[ncopies].shared = fnv(shared, len - (size_t)(shared - text));
            assert_true(header_value(text, "Delivered-To", v, sizeof(v)));
            copies[ncopies].rcpt = fnv(v, strlen(v));
            ncopies++;
            end[1] = '\0';
        } else {
            ids[nids++] = idh;
        }
        if (header_value(text, "Content-Type", v, sizeof(v)) &&
            strncmp(v, "multipart/mixed", 15) != 0) {
            plain_sizes[nplain++] = len;
        }
        multipart_alt += strstr(body, "multipart/alternative") != NULL ||
                         strstr(text, "multipart/alternative") != NULL;
        qp += strstr(body, "quoted-printable") != NULL;
        /* Base64 attachments: 76-column lines, at least 20 KB decoded. */
        bool att = false;
        for (char *p = strstr(body, "Content-Transfer-Encoding: base64\n\n");
             p != NULL;
             p = strstr(p, "Content-Transfer-Encoding: base64\n\n")) {
            p += strlen("Content-Transfer-Encoding: base64\n\n");
            char *q = p;
            size_t lines = 0, chars = 0;
            while (*q != '\0' && *q != '\n' && *q != '-') {
                size_t ll = strcspn(q, "\n");
                if (q[ll] == '\n' && q[ll + 1] != '\n' && q[ll + 1] != '-') {
                    assert_int_equal(ll, 76);
                }
                chars += ll;
                lines++;
                q += ll + 1;
            }
            assert_true(chars / 4 * 3 >= 20 * 1024);
            uses[nuses].part = fnv(p, (size_t)(q - p));
            uses[nuses].msgid = idh;
            nuses++;
            att = true;
            p = q;
        }
        with_att += att;
        (void)blen;
        free(text);
    }
    /* Message-IDs are unique, except that list copies share one. */
    qsort(ids, nids, sizeof(*ids), cmp_u64);
    for (size_t i = 1; i < nids; i++) {
        assert_true(ids[i] != ids[i - 1]);
    }
    qsort(copies, ncopies, sizeof(*copies), cmp_copy);
    size_t posts = 0, multi = 0;
    for (size_t i = 0; i < ncopies;) {
        size_t j = i + 1;
        while (j < ncopies && copies[j].msgid == copies[i].msgid) {
            /* Same shared bytes, different recipient. */
            assert_true(copies[j].shared == copies[i].shared);
            assert_true(copies[j].rcpt != copies[i].rcpt);
            j++;
        }
        posts++;
        multi += j - i >= 2;
        i = j;
    }
    assert_true(posts > 5);
    assert_true(multi * 2 > posts);
    /* The same attachment travels in several messages. */
    qsort(uses, nuses, sizeof(*uses), cmp_u64pair);
    size_t forwarded = 0;
    for (size_t i = 1; i < nuses; i++) {
        if (uses[i].part == uses[i - 1].part &&
            uses[i].msgid != uses[i - 1].msgid) {
            forwarded++;
        }
    }
    qsort(plain_sizes, nplain, sizeof(size_t), cmp_size);
    size_t median = plain_sizes[nplain / 2];
    double att_share = (double)with_att / (double)nmsgs;
    print_message("attachments=%.3f forwarded=%zu median=%zu list_posts=%zu "
                  "encoded_subjects=%zu\n",
                  att_share, forwarded, median, posts, encoded_subjects);
    assert_true(att_share > 0.04 && att_share < 0.2);
    assert_true(forwarded > 0);
    assert_true(median > 2500 && median < 10000);
    assert_true(encoded_subjects > 0);
    assert_true(multipart_alt > nmsgs / 10);
    assert_true(qp > 0);
    free(uses);
    free(copies);
    free(ids);
    free(plain_sizes);
}

/* ---- mbox
 * ---------------------------------------------------------------------------
 */

static void
test_corpus_mbox_quotes_from_lines(void **state)
{
    (void)state;
    walk(corpus);
    assert_true(mbox_count >= 1);
    size_t messages = 0, quoted = 0;
    for (unsigned b = 0; b < mbox_count && b < 64; b++) {
        size_t len;
        char *text = slurp(mbox_paths[b], &len);
        assert_non_null(text);
        assert_int_equal(strncmp(text, "From ", 5), 0);
        for (char *p = text; *p != '\0';) {
            char *nl = strchr(p, '\n');
            assert_non_null(nl);
            if (strncmp(p, "From ", 5) == 0) {
                /* A separator: after a blank line, before the headers. */
                assert_true(p == text || (p >= text + 2 && p[-2] == '\n'));
                assert_int_equal(strncmp(nl + 1, "Return-Path: ", 13), 0);
                messages++;
            }
            quoted += strncmp(p, ">From ", 6) == 0;
            p = nl + 1;
        }
        free(text);
    }
    print_message("mbox files=%u messages=%zu quoted=%zu\n", mbox_count,
                  messages, quoted);
    assert_true(messages >= 10);
    assert_true(quoted > 0);
}

/* ---- determinism, size cap, evolve
 * -------------------------------------------------- */

/* diff -r plus mtimes: returns 0 when both trees are identical. */
static int
tree_cmp_cb_helper(const char *a, const char *b)
{
    char cmd[3 * PATH_MAX];
    pathf(cmd, sizeof(cmd), "diff -r -q '%s' '%s' >/dev/null 2>&1", a, b);
    int rc = system(cmd);
    if (rc != 0) {
        return 1;
    }
    /* Same names and bytes; now the file times. */
    pathf(cmd, sizeof(cmd),
          "cd '%s' && find . -type f -printf '%%p %%T@\\n' | sort "
          "> '%s.times' && cd '%s' && find . -type f -printf '%%p "
          "%%T@\\n' | sort | cmp -s - '%s.times'",
          a, a, b, a);
    return system(cmd) != 0;
}

static void
test_corpus_is_deterministic(void **state)
{
    (void)state;
    char a[PATH_MAX + 8], b[PATH_MAX + 8], c[PATH_MAX + 8];
    pathf(a, sizeof(a), "%s/d1", tmp_root);
    pathf(b, sizeof(b), "%s/d2", tmp_root);
    pathf(c, sizeof(c), "%s/d3", tmp_root);
    const char *base[] = {"--seed",
                          "11",
                          "--domains",
                          "1",
                          "--users",
                          "3",
                          "--messages-per-user",
                          "40",
                          "--list-members",
                          "3",
                          a,
                          NULL};
    assert_int_equal(run_gen(base), 0);
    base[10] = b;
    assert_int_equal(run_gen(base), 0);
    assert_int_equal(tree_cmp_cb_helper(a, b), 0);
    base[1] = "12";
    base[10] = c;
    assert_int_equal(run_gen(base), 0);
    assert_int_not_equal(tree_cmp_cb_helper(a, c), 0);
    /* A non-empty directory is refused, not mixed into. */
    base[10] = a;
    assert_int_equal(run_gen(base), 1);
    rm_tree(a);
    rm_tree(b);
    rm_tree(c);
}

static uint64_t total_bytes;

static int
size_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    const char *name = strrchr(path, '/') + 1;
    if (type == FTW_F && strncmp(name, "dovecot", 7) != 0 &&
        strcmp(name, "subscriptions") != 0) {
        total_bytes += (uint64_t)st->st_size;
    }
    return 0;
}

static void
test_corpus_size_cap_stops_generation(void **state)
{
    (void)state;
    char a[PATH_MAX + 8];
    pathf(a, sizeof(a), "%s/s1", tmp_root);
    const char *args[] = {"--seed",
                          "5",
                          "--domains",
                          "2",
                          "--users",
                          "4",
                          "--messages-per-user",
                          "100000",
                          "--size",
                          "4M",
                          a,
                          NULL};
    assert_int_equal(run_gen(args), 0);
    total_bytes = 0;
    assert_int_equal(nftw(a, size_cb, 32, FTW_PHYS), 0);
    print_message("size cap 4 MiB: wrote %" PRIu64 " bytes\n", total_bytes);
    /* Reached, and overshot by at most one delivery (a few MB at worst). */
    assert_true(total_bytes >= 4u << 20);
    assert_true(total_bytes < (4u << 20) + (40u << 20));
    /* 800,000 planned messages were cut short, everywhere at once. */
    walk(a);
    assert_true(nmsgs < 5000);
    check_uidlists(a);
    rm_tree(a);
}

struct snap {
    char base[256];
    char path[PATH_MAX];
};

static int
cmp_snap(const void *a, const void *b)
{
    return strcmp(((const struct snap *)a)->base,
                  ((const struct snap *)b)->base);
}

static struct snap *
snapshot(size_t *n_r, int64_t *newest_r)
{
    struct snap *s = calloc(nmsgs ? nmsgs : 1, sizeof(*s));
    assert_non_null(s);
    int64_t newest = 0;
    for (size_t i = 0; i < nmsgs; i++) {
        pathf(s[i].base, sizeof(s[i].base), "%s", msgs[i].base);
        pathf(s[i].path, sizeof(s[i].path), "%s", msgs[i].path);
        int64_t t = msgs[i].secs * 1000000 + msgs[i].usecs;
        newest = t > newest ? t : newest;
    }
    qsort(s, nmsgs, sizeof(*s), cmp_snap);
    *n_r = nmsgs;
    *newest_r = newest;
    return s;
}

static void
test_corpus_evolve_changes_consistently(void **state)
{
    (void)state;
    char a[PATH_MAX + 8], b[PATH_MAX + 8];
    pathf(a, sizeof(a), "%s/e1", tmp_root);
    pathf(b, sizeof(b), "%s/e2", tmp_root);
    const char *gen[] = {"--seed",
                         "21",
                         "--domains",
                         "1",
                         "--users",
                         "4",
                         "--messages-per-user",
                         "150",
                         "--list-members",
                         "4",
                         a,
                         NULL};
    assert_int_equal(run_gen(gen), 0);
    gen[10] = b;
    assert_int_equal(run_gen(gen), 0);
    walk(a);
    size_t nbefore;
    int64_t newest;
    struct snap *before = snapshot(&nbefore, &newest);

    const char *ev[] = {"--evolve", "24", "--seed", "3", a, NULL};
    assert_int_equal(run_gen(ev), 0);
    check_uidlists(a);
    walk(a);
    size_t nafter;
    int64_t newest2;
    struct snap *after = snapshot(&nafter, &newest2);
    size_t kept = 0, renamed = 0, deleted = 0, arrived = 0, moved_cur = 0;
    size_t i = 0, j = 0;
    while (i < nbefore || j < nafter) {
        int c = i == nbefore  ? 1
                : j == nafter ? -1
                              : strcmp(before[i].base, after[j].base);
        if (c < 0) {
            deleted++;
            i++;
        } else if (c > 0) {
            /* Arrivals are newer than anything before, and unread. */
            const char *name = strrchr(after[j].path, '/') + 1;
            int64_t t = strtoll(name, NULL, 10);
            assert_true(t * 1000000 >= newest / 1000000 * 1000000);
            if (strstr(after[j].path, "/.Sent/") == NULL &&
                strstr(after[j].path, "/.Trash/") == NULL) {
                assert_non_null(strstr(after[j].path, "/new/"));
            }
            arrived++;
            j++;
        } else {
            kept++;
            if (strcmp(before[i].path, after[j].path) != 0) {
                renamed++;
                moved_cur += strstr(before[i].path, "/new/") != NULL &&
                             strstr(after[j].path, "/cur/") != NULL;
            }
            i++;
            j++;
        }
    }
    print_message("evolve 24h: kept=%zu renamed=%zu (new->cur %zu) "
                  "deleted=%zu arrived=%zu\n",
                  kept, renamed, moved_cur, deleted, arrived);
    assert_true(arrived > 20);
    assert_true(renamed > 0);
    assert_true(moved_cur > 0);
    assert_true(deleted > 0);
    assert_true(newest2 > newest);

    /* The same step on an identical copy gives an identical tree. */
    ev[4] = b;
    assert_int_equal(run_gen(ev), 0);
    assert_int_equal(tree_cmp_cb_helper(a, b), 0);
    free(before);
    free(after);
    rm_tree(a);
    rm_tree(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_layout_is_maildir_plus_plus),
        cmocka_unit_test(test_corpus_names_sizes_times_and_flags),
        cmocka_unit_test(test_corpus_uidlists_match_files),
        cmocka_unit_test(test_corpus_headers_mime_lists_and_attachments),
        cmocka_unit_test(test_corpus_mbox_quotes_from_lines),
        cmocka_unit_test(test_corpus_is_deterministic),
        cmocka_unit_test(test_corpus_size_cap_stops_generation),
        cmocka_unit_test(test_corpus_evolve_changes_consistently),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
