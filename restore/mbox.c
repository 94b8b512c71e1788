/*
 * mbox.c - Maildir++ folders into mboxrd files (mbox.h).
 *
 * Invariants:
 *  1. Quoting is applied to whole lines only: the message is cut at line
 *     starts (the insertion point is the start of the blank line), so a
 *     "From " can never hide across two pieces.
 *  2. The output file is written through the restore's safe writer: it
 *     appears under its name complete or not at all, and never replaces
 *     or follows anything in the target.
 *  3. Input files are read through descriptors opened O_NOFOLLOW below
 *     the private directory the restore itself wrote.
 */
#define _GNU_SOURCE /* O_CLOEXEC, strncasecmp */

#include "mbox.h"

#include <dirent.h>   /* fdopendir */
#include <errno.h>    /* ENOENT */
#include <fcntl.h>    /* openat */
#include <limits.h>   /* NAME_MAX */
#include <stdio.h>    /* snprintf */
#include <stdlib.h>   /* qsort */
#include <string.h>   /* memchr, strncasecmp */
#include <strings.h>  /* strncasecmp */
#include <sys/mman.h> /* mmap */
#include <sys/stat.h> /* fstat */
#include <time.h>     /* gmtime_r, clock_gettime */
#include <unistd.h>   /* close, read */

#include "mem.h"     /* cfr_malloc */
#include "restore.h" /* the safe writer */

#define KEYWORDS_FILE     "dovecot-keywords"
#define KEYWORDS_FILE_MAX ((size_t)1 << 20)

/* ---- keywords ----------------------------------------------------------- */

static bool
token_ok(const uint8_t *p, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] <= 0x20 || p[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

void
restore_mbox_keywords_parse(const uint8_t *p, size_t n,
                            struct restore_mbox_keywords *kw)
{
    size_t pos = 0;
    memset(kw, 0, sizeof(*kw));
    while (pos < n) {
        const uint8_t *nl = memchr(p + pos, '\n', n - pos);
        size_t len = nl != NULL ? (size_t)(nl - (p + pos)) : n - pos;
        const uint8_t *line = p + pos;
        size_t i = 0;
        unsigned idx = 0;
        pos += len + (nl != NULL ? 1 : 0);
        while (i < len && i < 3 && line[i] >= '0' && line[i] <= '9') {
            idx = idx * 10 + (unsigned)(line[i] - '0');
            i++;
        }
        if (i == 0 || i >= len || line[i] != ' ' || idx >= 26) {
            continue;
        }
        i++;
        if (len - i > RESTORE_MBOX_KEYWORD_MAX ||
            !token_ok(line + i, len - i)) {
            continue;
        }
        memcpy(kw->name[idx], line + i, len - i);
        kw->name[idx][len - i] = '\0';
    }
}

/* ---- one message -------------------------------------------------------- */

/* Start of the blank line ending the header block, or len when none. */
static size_t
header_end(const uint8_t *msg, size_t len, bool *crlf_r)
{
    size_t i = 0;
    *crlf_r = false;
    while (i < len) {
        const uint8_t *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl != NULL ? (size_t)(nl - msg) : len;
        if (nl == NULL) {
            return len;
        }
        if (end == i) {
            return i;
        }
        if (end == i + 1 && msg[i] == '\r') {
            *crlf_r = true;
            return i;
        }
        i = end + 1;
    }
    return len;
}

/* Return-Path's address into out (no brackets); false when unusable. */
static bool
return_path(const uint8_t *msg, size_t hdr_len, char *out, size_t out_size)
{
    static const char name[] = "return-path:";
    size_t i = 0;
    while (i < hdr_len) {
        const uint8_t *nl = memchr(msg + i, '\n', hdr_len - i);
        size_t end = nl != NULL ? (size_t)(nl - msg) : hdr_len;
        if (end - i >= sizeof(name) - 1 &&
            strncasecmp((const char *)msg + i, name, sizeof(name) - 1) == 0) {
            size_t a = i + sizeof(name) - 1, z = end;
            while (a < z && (msg[a] == ' ' || msg[a] == '\t')) {
                a++;
            }
            while (z > a && (msg[z - 1] == ' ' || msg[z - 1] == '\t' ||
                             msg[z - 1] == '\r')) {
                z--;
            }
            if (z - a >= 2 && msg[a] == '<' && msg[z - 1] == '>') {
                a++;
                z--;
            }
            if (z == a || z - a >= out_size || !token_ok(msg + a, z - a) ||
                memchr(msg + a, '<', z - a) != NULL ||
                memchr(msg + a, '>', z - a) != NULL) {
                return false;
            }
            for (size_t k = a; k < z; k++) {
                if (msg[k] >= 0x80) {
                    return false;
                }
            }
            memcpy(out, msg + a, z - a);
            out[z - a] = '\0';
            return true;
        }
        if (nl == NULL) {
            break;
        }
        i = end + 1;
    }
    return false;
}

/* Writes p[0..n) with mboxrd quoting; p starts at a line start. */
static int
quoted(const uint8_t *p, size_t n, restore_mbox_out_fn *out, void *ctx,
       struct cfr_err *err)
{
    size_t from = 0, i = 0;
    int rc;
    while (i < n) {
        const uint8_t *nl = memchr(p + i, '\n', n - i);
        size_t end = nl != NULL ? (size_t)(nl - p) + 1 : n;
        size_t k = i;
        while (k < end && p[k] == '>') {
            k++;
        }
        if (end - k >= 5 && memcmp(p + k, "From ", 5) == 0) {
            /* Flush up to this line, then the extra '>'. */
            if ((i > from && (rc = out(ctx, p + from, i - from, err)) != 0) ||
                (rc = out(ctx, ">", 1, err)) != 0) {
                return rc;
            }
            from = i;
        }
        i = end;
    }
    return n > from ? out(ctx, p + from, n - from, err) : 0;
}

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* The flag lines, in eol style, into out; their length. */
static size_t
flag_lines(const struct restore_mbox_meta *m, const char *eol, char *out,
           size_t out_size)
{
    char status[4] = "", xs[8] = "";
    size_t ns = 0, nx = 0, at = 0;
    const char *flags = "";
    bool seen = false, kw_any = false;
    if (m->info != NULL && strncmp(m->info, ":2,", 3) == 0) {
        flags = m->info + 3;
    }
    seen = strchr(flags, 'S') != NULL;
    if (seen) {
        status[ns++] = 'R';
    }
    if (!m->in_new) {
        status[ns++] = 'O';
    }
    status[ns] = '\0';
    if (strchr(flags, 'R') != NULL) {
        xs[nx++] = 'A';
    }
    if (strchr(flags, 'F') != NULL) {
        xs[nx++] = 'F';
    }
    if (strchr(flags, 'D') != NULL) {
        xs[nx++] = 'T';
    }
    if (strchr(flags, 'T') != NULL) {
        xs[nx++] = 'D';
    }
    xs[nx] = '\0';
    out[0] = '\0';
    if (ns > 0) {
        at += (size_t)snprintf(out + at, out_size - at, "Status: %s%s", status,
                               eol);
    }
    if (nx > 0) {
        at += (size_t)snprintf(out + at, out_size - at, "X-Status: %s%s", xs,
                               eol);
    }
    /* Keywords: $Forwarded for P, then the folder's names by letter. */
    if (strchr(flags, 'P') != NULL) {
        at += (size_t)snprintf(out + at, out_size - at, "X-Keywords: %s",
                               "$Forwarded");
        kw_any = true;
    }
    for (const char *f = flags; *f != '\0' && m->kw != NULL; f++) {
        const char *name;
        size_t need;
        if (*f < 'a' || *f > 'z' || strchr(flags, *f) != f) {
            continue;
        }
        name = m->kw->name[*f - 'a'];
        need = strlen(name) + 16;
        if (name[0] == '\0' || at + need >= out_size) {
            continue;
        }
        at += (size_t)snprintf(out + at, out_size - at, "%s%s",
                               kw_any ? " " : "X-Keywords: ", name);
        kw_any = true;
    }
    if (kw_any) {
        at += (size_t)snprintf(out + at, out_size - at, "%s", eol);
    }
    return at;
}

int
restore_mbox_message(const uint8_t *msg, size_t len,
                     const struct restore_mbox_meta *m,
                     restore_mbox_out_fn *out, void *ctx, struct cfr_err *err)
{
    char from[RESTORE_MBOX_SENDER_MAX + 64];
    char sender[RESTORE_MBOX_SENDER_MAX + 1];
    /* 26 keywords of at most RESTORE_MBOX_KEYWORD_MAX and the rest. */
    char lines[26 * (RESTORE_MBOX_KEYWORD_MAX + 1) + 128];
    struct tm tm;
    time_t t;
    bool crlf;
    size_t ins, nl_len;
    int k, rc;

    if (msg == NULL || len == 0) {
        msg = (const uint8_t *)"";
        len = 0;
    }
    ins = header_end(msg, len, &crlf);
    if (!return_path(msg, ins, sender, sizeof(sender))) {
        snprintf(sender, sizeof(sender), "MAILER-DAEMON");
    }
    t = (time_t)(m->mtime_ns / 1000000000);
    if (m->mtime_ns < 0 && m->mtime_ns % 1000000000 != 0) {
        t -= 1;
    }
    if (gmtime_r(&t, &tm) == NULL) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_mday = 1;
        tm.tm_year = 70;
        tm.tm_wday = 4;
    }
    k = snprintf(from, sizeof(from), "From %s %s %s %2d %02d:%02d:%02d %d\n",
                 sender, wdays[tm.tm_wday % 7], months[tm.tm_mon % 12],
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 tm.tm_year + 1900);
    if (k < 0 || (size_t)k >= sizeof(from)) {
        return CFR_ERR(err, CFR_EINTERNAL, "mbox: From line too long");
    }
    if ((rc = out(ctx, from, (size_t)k, err)) != 0 ||
        (rc = quoted(msg, ins, out, ctx, err)) != 0) {
        return rc;
    }
    /* No blank line: the flag lines follow the last header line. */
    if (ins == len && len > 0 && msg[len - 1] != '\n' &&
        (rc = out(ctx, "\n", 1, err)) != 0) {
        return rc;
    }
    nl_len = flag_lines(m, crlf ? "\r\n" : "\n", lines, sizeof(lines));
    if ((nl_len > 0 && (rc = out(ctx, lines, nl_len, err)) != 0) ||
        (rc = quoted(msg + ins, len - ins, out, ctx, err)) != 0) {
        return rc;
    }
    if (ins < len && msg[len - 1] != '\n' &&
        (rc = out(ctx, "\n", 1, err)) != 0) {
        return rc;
    }
    return out(ctx, "\n", 1, err);
}

int
restore_mbox_name(const char *folder, char *out, size_t out_size,
                  struct cfr_err *err)
{
    const char *base;
    int k;
    if (folder[0] == '\0') {
        base = "INBOX";
    } else if (folder[0] == '.' && folder[1] != '\0' &&
               strchr(folder, '/') != NULL) {
        return CFR_ERR(err, CFR_EINVAL, "mbox: not a Maildir++ folder");
    } else if (folder[0] == '.' && folder[1] != '\0' &&
               strcmp(folder, "..") != 0) {
        base = folder + 1;
    } else {
        return CFR_ERR(err, CFR_EINVAL, "mbox: not a Maildir++ folder");
    }
    k = snprintf(out, out_size, "%s.mbox", base);
    if (k < 0 || (size_t)k >= out_size || (size_t)k > NAME_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "mbox: folder name too long");
    }
    return 0;
}

/* ---- one folder --------------------------------------------------------- */

struct msg_ref {
    char *name; /* "cur/<name>" or "new/<name>" */
    int64_t mtime_ns;
};

struct msg_list {
    struct msg_ref *v;
    size_t n, cap;
};

static void
msg_list_fini(struct msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        cfr_free(l->v[i].name);
    }
    cfr_free(l->v);
}

static int
msg_cmp(const void *a, const void *b)
{
    const struct msg_ref *x = a, *y = b;
    const char *xn = strchr(x->name, '/') + 1, *yn = strchr(y->name, '/') + 1;
    if (x->mtime_ns != y->mtime_ns) {
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    }
    return strcmp(xn, yn);
}

static int
scan(int dir_fd, const char *sub, struct msg_list *l, struct cfr_err *err)
{
    int fd =
        openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d;
    struct dirent *de;
    int rc = 0;
    if (fd < 0) {
        return errno == ENOENT
                   ? 0
                   : CFR_ERR_ERRNO(err, CFR_EIO, "mbox: cannot open %s", sub);
    }
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return CFR_ERR_ERRNO(err, CFR_EIO, "mbox: cannot read %s", sub);
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        char *name;
        size_t nl = strlen(de->d_name);
        if (de->d_name[0] == '.') {
            continue; /* ".", "..", and the writer's temporaries */
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode)) {
            continue;
        }
        if (l->n == l->cap) {
            size_t cap = l->cap == 0 ? 64 : 2 * l->cap;
            struct msg_ref *v = cfr_realloc(l->v, cap * sizeof(*v));
            if (v == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "mbox: out of memory");
                break;
            }
            l->v = v;
            l->cap = cap;
        }
        if ((name = cfr_malloc(nl + 5)) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "mbox: out of memory");
            break;
        }
        memcpy(name, sub, 3);
        name[3] = '/';
        memcpy(name + 4, de->d_name, nl + 1);
        l->v[l->n].name = name;
        l->v[l->n].mtime_ns =
            (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        l->n++;
    }
    closedir(d);
    return rc;
}

struct sink {
    struct restore_file *wf;
    uint64_t bytes;
};

static int
sink_out(void *ctx, const void *p, size_t n, struct cfr_err *err)
{
    struct sink *s = ctx;
    int rc = restore_file_write(s->wf, p, n, err);
    if (rc == 0) {
        s->bytes += n;
    }
    return rc;
}

/* The folder's keywords, when it has a readable dovecot-keywords. */
static void
keywords_of(int dir_fd, struct restore_mbox_keywords *kw)
{
    int fd = openat(dir_fd, KEYWORDS_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    uint8_t *buf = NULL;
    size_t got = 0;
    memset(kw, 0, sizeof(*kw));
    if (fd < 0) {
        return;
    }
    if ((buf = cfr_malloc(KEYWORDS_FILE_MAX)) != NULL) {
        for (;;) {
            ssize_t r = read(fd, buf + got, KEYWORDS_FILE_MAX - got);
            if (r <= 0) {
                break;
            }
            got += (size_t)r;
            if (got == KEYWORDS_FILE_MAX) {
                break;
            }
        }
        restore_mbox_keywords_parse(buf, got, kw);
        cfr_free(buf);
    }
    close(fd);
}

static int
one_message(int dir_fd, const struct msg_ref *r,
            const struct restore_mbox_keywords *kw, struct sink *s,
            struct cfr_err *err)
{
    struct restore_mbox_meta m;
    struct stat st;
    const char *colon;
    void *map = NULL;
    int fd, rc;

    fd = openat(dir_fd, r->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "mbox: cannot read a message");
        if (fd >= 0) {
            close(fd);
        }
        return rc;
    }
    if (st.st_size > 0) {
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return CFR_ERR_ERRNO(err, CFR_EIO, "mbox: cannot map a message");
        }
    }
    close(fd);
    colon = strchr(r->name + 4, ':');
    m.info = colon != NULL ? colon : "";
    m.in_new = r->name[0] == 'n';
    m.mtime_ns = r->mtime_ns;
    m.kw = kw;
    rc = restore_mbox_message(map, (size_t)st.st_size, &m, sink_out, s, err);
    if (map != NULL) {
        munmap(map, (size_t)st.st_size);
    }
    return rc;
}

int
restore_mbox_folder(int src_root_fd, const char *folder, int dst_fd,
                    const char *mbox_name, uint64_t *messages_r,
                    uint64_t *bytes_r, struct cfr_err *err)
{
    struct restore_mbox_keywords *kw = NULL;
    struct msg_list l = {NULL, 0, 0};
    struct sink s = {NULL, 0};
    struct timespec now;
    int dir_fd = -1, rc;

    if (messages_r != NULL) {
        *messages_r = 0;
    }
    if (bytes_r != NULL) {
        *bytes_r = 0;
    }
    if ((rc = restore_open_dir(src_root_fd, folder, strlen(folder), &dir_fd,
                               err)) != 0) {
        return rc;
    }
    if ((kw = cfr_malloc(sizeof(*kw))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "mbox: out of memory");
        goto out;
    }
    keywords_of(dir_fd, kw);
    if ((rc = scan(dir_fd, "cur", &l, err)) != 0 ||
        (rc = scan(dir_fd, "new", &l, err)) != 0) {
        goto out;
    }
    if (l.n > 1) {
        qsort(l.v, l.n, sizeof(*l.v), msg_cmp);
    }
    if ((rc = restore_file_begin(dst_fd, mbox_name, 0600, &s.wf, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        if ((rc = one_message(dir_fd, &l.v[i], kw, &s, err)) != 0) {
            goto out;
        }
    }
    clock_gettime(CLOCK_REALTIME, &now);
    rc = restore_file_commit(
        s.wf, s.bytes, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec, err);
    s.wf = NULL;
    if (rc == 0) {
        if (messages_r != NULL) {
            *messages_r = l.n;
        }
        if (bytes_r != NULL) {
            *bytes_r = s.bytes;
        }
    }
out:
    restore_file_abort(s.wf);
    msg_list_fini(&l);
    cfr_free(kw);
    if (dir_fd >= 0) {
        close(dir_fd);
    }
    return rc;
}
