/*
 * dovecot.c - Dovecot files of restored Maildir++ folders, and a doveadm
 * reader (dovecot.h).
 *
 * Invariants:
 *  1. The uidlist is hostile input: every line is bounded, every number
 *     checked for range, UIDs must rise strictly, base names must be
 *     unique and free of '/', NUL and control bytes. Anything else makes
 *     the list "malformed": it is removed (Dovecot regenerates it; UIDs
 *     are lost, nothing else), never half-trusted.
 *  2. A UID is never reused under the same UIDVALIDITY: new messages get
 *     UIDs above every UID the old list named (kept or dropped) and above
 *     its NextUID, since an IMAP client may still cache a dropped UID.
 *  3. Writes in the folder go through its O_NOFOLLOW descriptor: the new
 *     list is a temporary file (O_EXCL|O_NOFOLLOW) renamed over the old
 *     one, which the restore itself created.
 *  4. doveadm runs without a shell, with a clean environment, a private
 *     configuration and a deadline; its output is parsed as hostile
 *     (bounded strings, strict JSON shape, UIDs rising).
 *
 * The keyword and index decisions, and the Dovecot tests behind them,
 * are in dovecot.h.
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC, unshare, CLONE_NEWUSER */

#include "dovecot.h"

#include <dirent.h>   /* fdopendir, readdir */
#include <errno.h>    /* ENOENT, ELOOP, EINTR */
#include <fcntl.h>    /* openat, O_NOFOLLOW */
#include <inttypes.h> /* PRIu32 */
#include <limits.h>   /* PATH_MAX */
#include <poll.h>     /* poll: bounded wait on doveadm */
#include <sched.h>    /* unshare */
#include <signal.h>   /* kill */
#include <stdbool.h>  /* bool */
#include <stdio.h>    /* snprintf */
#include <stdlib.h>   /* qsort, bsearch, realpath, mkdtemp, getenv */
#include <string.h>   /* memcmp, memchr, strlen */
#include <sys/stat.h> /* fstatat */
#include <sys/wait.h> /* waitpid */
#include <time.h>     /* clock_gettime */
#include <grp.h>      /* setgroups */
#include <unistd.h>   /* read, write, close, unlinkat, fork, execve */

#include "id.h"  /* cfr_id_plain: the text hash */
#include "log.h" /* cfr_log */
#include "mem.h" /* cfr_malloc */

#define UIDLIST     "dovecot-uidlist"
#define UIDLIST_TMP "dovecot-uidlist.coffer-tmp"

/* ---- uidlist parsing and rewriting ------------------------------------- */

/* One record line of the old list, as a view into the input. */
struct ul_rec {
    uint32_t uid;
    const uint8_t *line; /* the whole line, without its '\n' */
    size_t line_len;
    const uint8_t *base; /* the file name up to its first ':' */
    size_t base_len;
};

/* A present message, with where its base name ends. */
struct present {
    const char *name;
    size_t base_len;
    int64_t mtime_ns;
    uint32_t uid; /* 0: not in the list (yet) */
};

static int
parse_u32(const uint8_t *p, size_t n, uint32_t *v_r)
{
    uint64_t v = 0;

    if (n == 0 || n > 10) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > UINT32_MAX) {
        return -1;
    }
    *v_r = (uint32_t)v;
    return 0;
}

/*
 * Header "3 V<uidvalidity> N<nextuid> [<key><value> ...]": single spaces,
 * non-empty tokens, V and N present once each, V non-zero.
 */
static int
parse_header(const uint8_t *p, size_t n, uint32_t *v_r, uint32_t *next_r,
             struct cfr_err *err)
{
    bool have_v = false;
    bool have_n = false;
    size_t i = 2;

    if (n < 2 || p[0] != '3' || p[1] != ' ') {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "dovecot-uidlist: not a version 3 header");
    }
    while (i < n) {
        const uint8_t *sp = memchr(p + i, ' ', n - i);
        size_t len = sp != NULL ? (size_t)(sp - (p + i)) : n - i;

        if (len == 0) {
            return CFR_ERR(err, CFR_ECORRUPT, "dovecot-uidlist: empty field");
        }
        if (p[i] == 'V' || p[i] == 'N') {
            uint32_t v;
            bool *seen = p[i] == 'V' ? &have_v : &have_n;

            if (*seen || parse_u32(p + i + 1, len - 1, &v) != 0) {
                return CFR_ERR(err, CFR_ECORRUPT,
                               "dovecot-uidlist: bad %c field", p[i]);
            }
            *seen = true;
            if (p[i] == 'V') {
                *v_r = v;
            } else {
                *next_r = v;
            }
        }
        i += len + (sp != NULL ? 1 : 0);
        if (sp != NULL && i == n) {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "dovecot-uidlist: trailing space");
        }
    }
    if (!have_v || !have_n || *v_r == 0) {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "dovecot-uidlist: header lacks V or N");
    }
    return 0;
}

/* "<uid> [<ext> ...] :<filename>" */
static int
parse_record(const uint8_t *p, size_t n, size_t lineno, struct ul_rec *r,
             struct cfr_err *err)
{
    const uint8_t *sp = memchr(p, ' ', n);
    size_t i;

    if (sp == NULL || parse_u32(p, (size_t)(sp - p), &r->uid) != 0 ||
        r->uid == 0) {
        return CFR_ERR(err, CFR_ECORRUPT, "dovecot-uidlist line %zu: bad UID",
                       lineno);
    }
    i = (size_t)(sp - p) + 1;
    /* Extension fields, each non-empty, until the ':' of the name. */
    while (i < n && p[i] != ':') {
        const uint8_t *next = memchr(p + i, ' ', n - i);

        if (next == NULL || next == p + i) {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "dovecot-uidlist line %zu: bad field", lineno);
        }
        i = (size_t)(next - p) + 1;
    }
    if (i + 1 >= n) {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "dovecot-uidlist line %zu: no file name", lineno);
    }
    r->line = p;
    r->line_len = n;
    r->base = p + i + 1;
    r->base_len = n - i - 1;
    for (size_t j = 0; j < r->base_len; j++) {
        if (r->base[j] == '/') {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "dovecot-uidlist line %zu: '/' in a name", lineno);
        }
        if (r->base[j] == ':') {
            r->base_len = j;
            break;
        }
    }
    if (r->base_len == 0 || r->base_len > NAME_MAX) {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "dovecot-uidlist line %zu: bad file name", lineno);
    }
    return 0;
}

static int
cmp_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);

    if (c != 0) {
        return c;
    }
    return an < bn ? -1 : an > bn ? 1 : 0;
}

static int
cmp_present_base(const void *a, const void *b)
{
    const struct present *x = a;
    const struct present *y = b;
    int c = cmp_bytes((const uint8_t *)x->name, x->base_len,
                      (const uint8_t *)y->name, y->base_len);

    /* Among equal bases, the first by full name wins: stable. */
    return c != 0 ? c : strcmp(x->name, y->name);
}

static int
cmp_present_order(const void *a, const void *b)
{
    const struct present *x = a;
    const struct present *y = b;

    if (x->mtime_ns != y->mtime_ns) {
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

static int
cmp_rec_base(const void *a, const void *b)
{
    const struct ul_rec *x = a;
    const struct ul_rec *y = b;

    return cmp_bytes(x->base, x->base_len, y->base, y->base_len);
}

/* The present message with base name (b, n), or NULL. */
static struct present *
find_present(struct present *v, size_t count, const uint8_t *b, size_t n)
{
    size_t lo = 0;
    size_t hi = count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_bytes((const uint8_t *)v[mid].name, v[mid].base_len, b, n);

        if (c == 0) {
            /* Several files may share a base: take the first. */
            while (mid > 0 && cmp_bytes((const uint8_t *)v[mid - 1].name,
                                        v[mid - 1].base_len, b, n) == 0) {
                mid--;
            }
            return &v[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* A base name a uidlist line can hold and parse back. */
static bool
name_listable(const char *name, size_t len)
{
    if (len == 0 || len > NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c < 0x20 || c == 0x7f || c == '/') {
            return false;
        }
    }
    return true;
}

static int
append_str(struct cfr_buf *out, const char *s, struct cfr_err *err)
{
    return cfr_buf_append(out, s, strlen(s), err);
}

int
restore_dovecot_rewrite(const uint8_t *in, size_t n,
                        const struct restore_dovecot_file *files,
                        size_t n_files, struct cfr_buf *out,
                        struct cfr_err *err)
{
    struct ul_rec *recs = NULL;
    struct ul_rec *by_base = NULL;
    struct present *pres = NULL;
    struct present *fresh = NULL;
    size_t n_recs = 0;
    size_t n_fresh = 0;
    size_t cap_recs = 0;
    const uint8_t *hdr = NULL;
    size_t hdr_len = 0;
    uint32_t validity = 0;
    uint32_t next_old = 0;
    uint64_t max_uid = 0;
    uint64_t next;
    size_t pos = 0;
    size_t lineno = 0;
    char num[32];
    int rc = 0;

    if (n > RESTORE_DOVECOT_UIDLIST_MAX) {
        return CFR_ERR(err, CFR_ECORRUPT, "dovecot-uidlist: %zu bytes", n);
    }
    /* Lines: the header, then records with strictly rising UIDs. */
    while (pos < n) {
        const uint8_t *nl = memchr(in + pos, '\n', n - pos);
        size_t len = nl != NULL ? (size_t)(nl - (in + pos)) : n - pos;
        const uint8_t *line = in + pos;

        lineno++;
        pos += len + (nl != NULL ? 1 : 0);
        if (len > RESTORE_DOVECOT_LINE_MAX) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "dovecot-uidlist line %zu: too long", lineno);
            goto out;
        }
        for (size_t i = 0; i < len; i++) {
            if (line[i] < 0x20 || line[i] == 0x7f) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "dovecot-uidlist line %zu: control byte", lineno);
                goto out;
            }
        }
        if (lineno == 1) {
            hdr = line;
            hdr_len = len;
            if ((rc = parse_header(line, len, &validity, &next_old, err)) !=
                0) {
                goto out;
            }
            continue;
        }
        if (n_recs == cap_recs) {
            size_t cap = cap_recs == 0 ? 64 : cap_recs * 2;
            struct ul_rec *v = cfr_realloc(recs, cap * sizeof(*v));

            if (v == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "dovecot-uidlist: records");
                goto out;
            }
            recs = v;
            cap_recs = cap;
        }
        if ((rc = parse_record(line, len, lineno, &recs[n_recs], err)) != 0) {
            goto out;
        }
        if (recs[n_recs].uid <= max_uid) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "dovecot-uidlist line %zu: UID %" PRIu32
                         " not above the one before",
                         lineno, recs[n_recs].uid);
            goto out;
        }
        max_uid = recs[n_recs].uid;
        n_recs++;
    }
    if (hdr == NULL) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "dovecot-uidlist: empty");
        goto out;
    }
    /* A base named twice would give one message two UIDs. */
    if (n_recs > 1) {
        by_base = cfr_calloc(n_recs, sizeof(struct ul_rec));
        if (by_base == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "dovecot-uidlist: index");
            goto out;
        }
        memcpy(by_base, recs, n_recs * sizeof(struct ul_rec));
        qsort(by_base, n_recs, sizeof(struct ul_rec), cmp_rec_base);
        for (size_t i = 1; i < n_recs; i++) {
            if (cmp_rec_base(&by_base[i - 1], &by_base[i]) == 0) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "dovecot-uidlist: a name is listed twice");
                goto out;
            }
        }
    }
    if (n_files > 0) {
        pres = cfr_calloc(n_files, sizeof(*pres));
        fresh = cfr_calloc(n_files, sizeof(struct present));
        if (pres == NULL || fresh == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "dovecot-uidlist: messages");
            goto out;
        }
    }
    for (size_t i = 0; i < n_files; i++) {
        const char *colon = strchr(files[i].name, ':');

        pres[i].name = files[i].name;
        pres[i].base_len = colon != NULL ? (size_t)(colon - files[i].name)
                                         : strlen(files[i].name);
        pres[i].mtime_ns = files[i].mtime_ns;
        if (!name_listable(pres[i].name, pres[i].base_len)) {
            /* No line can carry it: Dovecot numbers it itself. */
            pres[i].base_len = 0;
        }
    }
    if (n_files > 1) {
        qsort(pres, n_files, sizeof(*pres), cmp_present_base);
    }
    for (size_t i = 0; i < n_recs; i++) {
        struct present *p =
            find_present(pres, n_files, recs[i].base, recs[i].base_len);

        if (p != NULL) {
            p->uid = recs[i].uid;
        }
    }
    for (size_t i = 0; i < n_files; i++) {
        bool dup =
            i > 0 && pres[i].base_len == pres[i - 1].base_len &&
            memcmp(pres[i].name, pres[i - 1].name, pres[i].base_len) == 0;

        if (pres[i].uid == 0 && !dup && pres[i].base_len > 0) {
            fresh[n_fresh++] = pres[i];
        }
    }
    if (n_fresh > 1) {
        qsort(fresh, n_fresh, sizeof(*fresh), cmp_present_order);
    }
    next = max_uid + 1;
    if (next_old > next) {
        next = next_old;
    }
    if (next + n_fresh > (uint64_t)UINT32_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "dovecot-uidlist: UIDs run out");
        goto out;
    }

    /* Header: every field as it was, but N. */
    if ((rc = cfr_buf_append(out, "3", 1, err)) != 0) {
        goto out;
    }
    for (size_t i = 2; i < hdr_len;) {
        const uint8_t *sp = memchr(hdr + i, ' ', hdr_len - i);
        size_t len = sp != NULL ? (size_t)(sp - (hdr + i)) : hdr_len - i;

        if ((rc = cfr_buf_append(out, " ", 1, err)) != 0) {
            goto out;
        }
        if (hdr[i] == 'N') {
            (void)snprintf(num, sizeof(num), "N%" PRIu64, next + n_fresh);
            rc = append_str(out, num, err);
        } else {
            rc = cfr_buf_append(out, hdr + i, len, err);
        }
        if (rc != 0) {
            goto out;
        }
        i += len + 1;
    }
    if ((rc = cfr_buf_append(out, "\n", 1, err)) != 0) {
        goto out;
    }
    /* Kept records verbatim (extension fields and all), in UID order. */
    for (size_t i = 0; i < n_recs; i++) {
        if (find_present(pres, n_files, recs[i].base, recs[i].base_len) ==
            NULL) {
            continue;
        }
        if ((rc = cfr_buf_append(out, recs[i].line, recs[i].line_len, err)) !=
                0 ||
            (rc = cfr_buf_append(out, "\n", 1, err)) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < n_fresh; i++) {
        (void)snprintf(num, sizeof(num), "%" PRIu64 " :", next + i);
        if ((rc = append_str(out, num, err)) != 0 ||
            (rc = cfr_buf_append(out, fresh[i].name, fresh[i].base_len, err)) !=
                0 ||
            (rc = cfr_buf_append(out, "\n", 1, err)) != 0) {
            goto out;
        }
    }
out:
    cfr_free(recs);
    cfr_free(by_base);
    cfr_free(pres);
    cfr_free(fresh);
    return rc;
}

/* ---- restore_dovecot_finish -------------------------------------------- */

struct file_list {
    struct restore_dovecot_file *v;
    size_t n;
    size_t cap;
};

static void
file_list_fini(struct file_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        cfr_free((void *)l->v[i].name);
    }
    cfr_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Adds every regular file of sub ("cur" or "new") below dir_fd. */
static int
scan_sub(int dir_fd, const char *sub, struct file_list *l, struct cfr_err *err)
{
    int fd =
        openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d;
    struct dirent *de;
    int rc = 0;

    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        return CFR_ERR_ERRNO(
            err, errno == ELOOP || errno == ENOTDIR ? CFR_EDENIED : CFR_EIO,
            "open %s", sub);
    }
    d = fdopendir(fd);
    if (d == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "opendir %s", sub);
        close(fd);
        return rc;
    }
    for (;;) {
        struct stat st;

        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                rc = CFR_ERR_ERRNO(err, CFR_EIO, "readdir %s", sub);
            }
            break;
        }
        if (de->d_name[0] == '.') {
            continue;
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) {
                continue;
            }
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "stat %s/%s", sub, de->d_name);
            break;
        }
        if (!S_ISREG(st.st_mode)) {
            continue;
        }
        if (l->n == l->cap) {
            size_t cap = l->cap == 0 ? 256 : l->cap * 2;
            struct restore_dovecot_file *v =
                cfr_realloc(l->v, cap * sizeof(*v));

            if (v == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "message list");
                break;
            }
            l->v = v;
            l->cap = cap;
        }
        l->v[l->n].name = cfr_strdup(de->d_name);
        if (l->v[l->n].name == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "message name");
            break;
        }
        l->v[l->n].mtime_ns =
            (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        l->n++;
    }
    closedir(d);
    return rc;
}

/* Stale indexes and locks: see the top of this file for why. */
static int
remove_indexes(int dir_fd, struct cfr_err *err)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;
    struct dirent *de;
    int rc = 0;

    if (fd < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "open folder");
    }
    d = fdopendir(fd);
    if (d == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "opendir folder");
        close(fd);
        return rc;
    }
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                rc = CFR_ERR_ERRNO(err, CFR_EIO, "readdir folder");
            }
            break;
        }
        if (strncmp(de->d_name, "dovecot.index", 13) != 0 &&
            strncmp(de->d_name, "dovecot.list.index", 18) != 0 &&
            strcmp(de->d_name, "dovecot-uidlist.lock") != 0 &&
            strcmp(de->d_name, "dovecot-keywords.lock") != 0) {
            continue;
        }
        /* A directory of that name is not ours to judge: leave it. */
        if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT &&
            errno != EISDIR && errno != EPERM) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "unlink %s", de->d_name);
            break;
        }
    }
    closedir(d);
    return rc;
}

static int
read_all(int fd, struct cfr_buf *b, size_t max, struct cfr_err *err)
{
    for (;;) {
        ssize_t r;
        int rc;

        if ((rc = cfr_buf_reserve(b, 65536, err)) != 0) {
            return rc;
        }
        r = read(fd, b->data + b->len, 65536);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return CFR_ERR_ERRNO(err, CFR_EIO, "read");
        }
        if (r == 0) {
            return 0;
        }
        b->len += (size_t)r;
        if (b->len > max) {
            return CFR_ERR(err, CFR_ELIMIT, "more than %zu bytes", max);
        }
    }
}

static int
write_all(int fd, const uint8_t *p, size_t n, struct cfr_err *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return CFR_ERR_ERRNO(err, CFR_EIO, "write");
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Replaces the folder's uidlist with p (n bytes), through a temp file. */
static int
replace_uidlist(int dir_fd, const uint8_t *p, size_t n, mode_t mode,
                struct cfr_err *err)
{
    int fd = -1;
    int rc = 0;

    for (int attempt = 0; attempt < 2; attempt++) {
        fd = openat(dir_fd, UIDLIST_TMP,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd >= 0 || errno != EEXIST) {
            break;
        }
        /* Left by an interrupted run of ours: the name is ours. */
        (void)unlinkat(dir_fd, UIDLIST_TMP, 0);
    }
    if (fd < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "create " UIDLIST_TMP);
    }
    if ((rc = write_all(fd, p, n, err)) != 0) {
        goto out;
    }
    if (fsync(fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fsync " UIDLIST_TMP);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "close " UIDLIST_TMP);
        goto out;
    }
    fd = -1;
    if (renameat(dir_fd, UIDLIST_TMP, dir_fd, UIDLIST) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "rename " UIDLIST_TMP);
        goto out;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rc != 0) {
        (void)unlinkat(dir_fd, UIDLIST_TMP, 0);
    }
    return rc;
}

int
restore_dovecot_finish(int root_fd, const char *folder, struct cfr_err *err)
{
    struct file_list files = {0};
    struct cfr_buf in;
    struct cfr_buf out;
    struct cfr_err perr;
    struct stat st;
    char q[128];
    int dir_fd = -1;
    int fd = -1;
    int rc = 0;

    cfr_buf_init(&in, RESTORE_DOVECOT_UIDLIST_MAX + 65536);
    /* The new list is at most a line per message longer than the old. */
    cfr_buf_init(&out, 2 * RESTORE_DOVECOT_UIDLIST_MAX);
    cfr_err_clear(&perr);
    if (folder == NULL || strchr(folder, '/') != NULL ||
        strcmp(folder, ".") == 0 || strcmp(folder, "..") == 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "not a Maildir++ folder name");
        goto out;
    }
    dir_fd = openat(root_fd, folder[0] == '\0' ? "." : folder,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) {
        rc = CFR_ERR_ERRNO(
            err, errno == ELOOP || errno == ENOTDIR ? CFR_EDENIED : CFR_EIO,
            "open folder %s", cfr_log_quote(folder, q, sizeof(q)));
        goto out;
    }
    if ((rc = remove_indexes(dir_fd, err)) != 0) {
        goto out;
    }
    fd =
        openat(dir_fd, UIDLIST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) {
            goto out; /* none restored: Dovecot makes one (dovecot.h) */
        }
        rc = CFR_ERR_ERRNO(err, errno == ELOOP ? CFR_EDENIED : CFR_EIO,
                           "open " UIDLIST);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "stat " UIDLIST);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = CFR_ERR(err, CFR_EDENIED, UIDLIST " is not a regular file");
        goto out;
    }
    rc = read_all(fd, &in, RESTORE_DOVECOT_UIDLIST_MAX, &perr);
    if (rc != 0 && rc != CFR_ELIMIT) {
        *err = perr;
        goto out;
    }
    if (rc == 0) {
        if ((rc = scan_sub(dir_fd, "cur", &files, err)) != 0 ||
            (rc = scan_sub(dir_fd, "new", &files, err)) != 0) {
            goto out;
        }
        rc = restore_dovecot_rewrite(in.data, in.len, files.v, files.n, &out,
                                     &perr);
    }
    if (rc == CFR_ECORRUPT || rc == CFR_ELIMIT) {
        /* Dovecot makes a fresh list: UIDs are lost, nothing else. */
        cfr_log(
            CFR_LOG_WARN, "restore.dovecot_uidlist",
            "folder=%s action=removed reason=%s",
            cfr_log_quote(folder[0] == '\0' ? "INBOX" : folder, q, sizeof(q)),
            perr.msg);
        if (unlinkat(dir_fd, UIDLIST, 0) != 0 && errno != ENOENT) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "unlink " UIDLIST);
        } else {
            rc = 0;
        }
        goto out;
    }
    if (rc != 0) {
        *err = perr;
        goto out;
    }
    if (out.len == in.len && memcmp(out.data, in.data, in.len) == 0) {
        goto out; /* already consistent: leave the restored bytes */
    }
    rc = replace_uidlist(dir_fd, out.data, out.len, st.st_mode & 0666, err);
out:
    if (fd >= 0) {
        close(fd);
    }
    if (dir_fd >= 0) {
        close(dir_fd);
    }
    file_list_fini(&files);
    cfr_buf_fini(&in);
    cfr_buf_fini(&out);
    return rc;
}

/* ---- doveadm reader ---------------------------------------------------- */

/*
 * How long doveadm may stay silent (no output, or not exiting after its
 * output ended) before it is killed: long enough for a cold disk, short
 * enough that a stale lock does not hang a verify run for ever.
 */
#define DOVEADM_TIMEOUT_MS 120000
/* Longest JSON string value read (the fields we keep are shorter). */
#define JSON_STR_MAX 8192
/* Bytes of doveadm's stderr quoted in an error. */
#define STDERR_QUOTE 160

enum run_mode {
    RUN_AS_IS,    /* not root: Dovecot runs as us */
    RUN_AS_OWNER, /* root, Maildir owned by someone else: become them */
    RUN_USERNS,   /* root's Maildir: root outside, uid 1000 inside */
};

struct dv {
    char bin[PATH_MAX];
    char root[PATH_MAX];
    char tmp[PATH_MAX];
    char conf[PATH_MAX + 32];
    char home_env[PATH_MAX + 8];
    int tmp_fd;
    enum run_mode mode;
    uid_t uid;
    gid_t gid;
};

/* Characters Dovecot's config and mail_location take literally. */
static bool
path_is_plain(const char *p)
{
    if (p[0] != '/') {
        return false;
    }
    for (const char *c = p; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || strchr("/._+,@-", *c) != NULL)) {
            return false;
        }
    }
    return true;
}

static int
find_doveadm(char *out, size_t size)
{
    const char *path = getenv("PATH");
    const char *p = path != NULL ? path : "";

    while (*p != '\0') {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int w;

        if (len > 0 && p[0] == '/') {
            w = snprintf(out, size, "%.*s/doveadm", (int)len, p);
            if (w > 0 && (size_t)w < size && access(out, X_OK) == 0) {
                return 0;
            }
        }
        p += len + (end != NULL ? 1 : 0);
    }
    if (access("/usr/bin/doveadm", X_OK) == 0) {
        (void)snprintf(out, size, "/usr/bin/doveadm");
        return 0;
    }
    return -1;
}

/* Removes the temporary tree (depth-bounded: it is ours and shallow). */
static void
rm_tree_at(int dir_fd, const char *name, int depth)
{
    int fd;
    DIR *d;
    struct dirent *de;

    if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT || depth > 8) {
        return;
    }
    fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            rm_tree_at(dirfd(d), de->d_name, depth + 1);
        }
    }
    closedir(d);
    (void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

static void
dv_fini(struct dv *dv)
{
    if (dv->tmp[0] != '\0') {
        rm_tree_at(AT_FDCWD, dv->tmp, 0);
        dv->tmp[0] = '\0';
    }
    if (dv->tmp_fd >= 0) {
        close(dv->tmp_fd);
        dv->tmp_fd = -1;
    }
}

static int
dv_init(struct dv *dv, const char *maildir_root, struct cfr_err *err)
{
    const char *tmpdir = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    char conf[3 * PATH_MAX];
    struct stat st;
    int fd = -1;
    int w;
    int rc = 0;

    memset(dv, 0, sizeof(*dv));
    dv->tmp_fd = -1;
    if (realpath(maildir_root, dv->root) == NULL) {
        return CFR_ERR_ERRNO(err, CFR_EINVAL, "Maildir root");
    }
    if (!path_is_plain(dv->root)) {
        return CFR_ERR(err, CFR_EINVAL,
                       "Maildir root path has characters Dovecot's "
                       "mail_location would interpret");
    }
    if (stat(dv->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return CFR_ERR_ERRNO(err, CFR_EINVAL, "Maildir root is no directory");
    }
    if (find_doveadm(dv->bin, sizeof(dv->bin)) != 0) {
        return CFR_ERR(err, CFR_EUNAVAIL, "doveadm not found (PATH, /usr/bin)");
    }
    if (geteuid() != 0) {
        dv->mode = RUN_AS_IS;
    } else if (st.st_uid != 0) {
        dv->mode = RUN_AS_OWNER;
        dv->uid = st.st_uid;
        dv->gid = st.st_gid;
    } else {
        dv->mode = RUN_USERNS;
    }
    if (tmpdir == NULL || tmpdir[0] == '\0') {
        tmpdir = "/tmp";
    }
    w = snprintf(tmpl, sizeof(tmpl), "%s/coffer-doveadm-XXXXXX", tmpdir);
    if (w < 0 || (size_t)w >= sizeof(tmpl) || mkdtemp(tmpl) == NULL) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "temporary directory");
    }
    if (realpath(tmpl, dv->tmp) == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "temporary directory");
        rm_tree_at(AT_FDCWD, tmpl, 0);
        return rc;
    }
    if (!path_is_plain(dv->tmp)) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "TMPDIR has characters Dovecot's config would "
                     "interpret");
        goto out;
    }
    dv->tmp_fd = open(dv->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dv->tmp_fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "open temporary directory");
        goto out;
    }
    if (dv->mode == RUN_AS_OWNER && fchown(dv->tmp_fd, dv->uid, dv->gid) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "chown temporary directory");
        goto out;
    }
    /*
     * No system configuration, no services: doveadm only opens the
     * Maildir. Indexes go to the temporary directory so the Maildir gets
     * no index files; the uidlist (CONTROL) must stay in the Maildir,
     * it is what is being read. Root is refused as a mail user by
     * Dovecot whatever the settings, hence the run modes.
     */
    w = snprintf(conf, sizeof(conf),
                 "base_dir = %s/run\n"
                 "state_dir = %s/state\n"
                 "log_path = /dev/stderr\n"
                 "info_log_path = /dev/null\n"
                 "debug_log_path = /dev/null\n"
                 "ssl = no\n"
                 "first_valid_uid = 1\n"
                 "first_valid_gid = 0\n"
                 "mail_plugins =\n"
                 "mailbox_list_index = no\n"
                 "mail_location = maildir:%s:INDEX=%s/index\n",
                 dv->tmp, dv->tmp, dv->root, dv->tmp);
    if (w < 0 || (size_t)w >= sizeof(conf)) {
        rc = CFR_ERR(err, CFR_ELIMIT, "Dovecot configuration too long");
        goto out;
    }
    fd = openat(dv->tmp_fd, "dovecot.conf",
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "create dovecot.conf");
        goto out;
    }
    if ((rc = write_all(fd, (const uint8_t *)conf, (size_t)w, err)) != 0) {
        goto out;
    }
    (void)snprintf(dv->conf, sizeof(dv->conf), "%s/dovecot.conf", dv->tmp);
    (void)snprintf(dv->home_env, sizeof(dv->home_env), "HOME=%s", dv->tmp);
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rc != 0) {
        dv_fini(dv);
    }
    return rc;
}

/* Child side, between fork and exec: async-signal-safe calls only. */
static void
child_write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);

    if (fd >= 0) {
        (void)!write(fd, s, strlen(s));
        close(fd);
    }
}

static void __attribute__((noreturn))
child_exec(const struct dv *dv, int out_fd, int err_fd, char *const argv[],
           const char *uid_map, const char *gid_map)
{
    static const char msg_ns[] =
        "coffer: doveadm refuses root and no user namespace could be made\n";
    char *envp[] = {(char *)dv->home_env, (char *)"USER=coffer",
                    (char *)"PATH=/usr/bin:/bin:/usr/sbin:/sbin", NULL};
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 ||
        dup2(err_fd, 2) < 0) {
        _exit(125);
    }
    switch (dv->mode) {
    case RUN_AS_IS:
        break;
    case RUN_AS_OWNER:
        if (setgroups(0, NULL) != 0 || setgid(dv->gid) != 0 ||
            setuid(dv->uid) != 0) {
            _exit(125);
        }
        break;
    case RUN_USERNS:
        if (unshare(CLONE_NEWUSER) != 0) {
            (void)!write(2, msg_ns, sizeof(msg_ns) - 1);
            _exit(126);
        }
        child_write_file("/proc/self/setgroups", "deny");
        child_write_file("/proc/self/uid_map", uid_map);
        child_write_file("/proc/self/gid_map", gid_map);
        if (getuid() != 1000) {
            (void)!write(2, msg_ns, sizeof(msg_ns) - 1);
            _exit(126);
        }
        break;
    }
    if (chdir(dv->tmp) != 0) {
        _exit(125);
    }
    execve(dv->bin, argv, envp);
    _exit(127);
}

/* A running doveadm and the reader of its standard output. */
struct proc {
    pid_t pid;
    int fd;
    int err_fd;
    int64_t deadline_ms;
    uint8_t buf[65536];
    size_t pos;
    size_t len;
    bool eof;
};

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* err_name: the stderr file in dv's directory (a second doveadm may run
 * while the first is being read, each needs its own). */
static int
proc_start(const struct dv *dv, char *const argv[], const char *err_name,
           struct proc *p, struct cfr_err *err)
{
    char uid_map[64];
    char gid_map[64];
    int pipe_fd[2];

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->fd = -1;
    (void)snprintf(uid_map, sizeof(uid_map), "1000 %u 1\n",
                   (unsigned)geteuid());
    (void)snprintf(gid_map, sizeof(gid_map), "1000 %u 1\n",
                   (unsigned)getegid());
    p->err_fd =
        openat(dv->tmp_fd, err_name,
               O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (p->err_fd < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "doveadm stderr file");
    }
    if (pipe2(pipe_fd, O_CLOEXEC) != 0) {
        close(p->err_fd);
        return CFR_ERR_ERRNO(err, CFR_EIO, "pipe");
    }
    p->pid = fork();
    if (p->pid < 0) {
        close(pipe_fd[0]);
        close(pipe_fd[1]);
        close(p->err_fd);
        return CFR_ERR_ERRNO(err, CFR_EIO, "fork");
    }
    if (p->pid == 0) {
        child_exec(dv, pipe_fd[1], p->err_fd, argv, uid_map, gid_map);
    }
    close(pipe_fd[1]);
    p->fd = pipe_fd[0];
    p->deadline_ms = now_ms() + DOVEADM_TIMEOUT_MS;
    return 0;
}

/* Next byte of doveadm's output: 1 with *c_r, 0 at its end, or an error. */
static int
proc_byte(struct proc *p, int *c_r, struct cfr_err *err)
{
    while (p->pos == p->len) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        int64_t left = p->deadline_ms - now_ms();
        ssize_t r;

        if (p->eof) {
            return 0;
        }
        int ready;

        if (left <= 0) {
            return CFR_ERR(err, CFR_EIO, "doveadm silent for %d s",
                           DOVEADM_TIMEOUT_MS / 1000);
        }
        ready = poll(&pfd, 1, (int)left);
        if (ready < 0 && errno != EINTR) {
            return CFR_ERR_ERRNO(err, CFR_EIO, "poll");
        }
        if (ready <= 0) {
            continue; /* interrupted or timed out: the deadline decides */
        }
        r = read(p->fd, p->buf, sizeof(p->buf));
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return CFR_ERR_ERRNO(err, CFR_EIO, "read doveadm output");
        }
        if (r == 0) {
            p->eof = true;
            return 0;
        }
        p->pos = 0;
        p->len = (size_t)r;
        p->deadline_ms = now_ms() + DOVEADM_TIMEOUT_MS;
    }
    *c_r = p->buf[p->pos++];
    return 1;
}

/*
 * Waits for doveadm (killing it when it overran or failed to be read)
 * and turns a failed exit into an error carrying its first stderr line.
 */
static int
proc_finish(struct proc *p, int rc, struct cfr_err *err)
{
    int status = 0;
    char line[STDERR_QUOTE + 1];
    ssize_t r;

    if (p->pid > 0) {
        int64_t deadline = now_ms() + DOVEADM_TIMEOUT_MS;
        bool killed = rc != 0;

        if (killed) {
            (void)kill(p->pid, SIGKILL);
        }
        for (;;) {
            pid_t w = waitpid(p->pid, &status, killed ? 0 : WNOHANG);

            if (w == p->pid) {
                break;
            }
            if (w < 0 && errno != EINTR) {
                if (rc == 0) {
                    rc = CFR_ERR_ERRNO(err, CFR_EIO, "waitpid doveadm");
                }
                break;
            }
            if (w == 0 && now_ms() > deadline) {
                (void)kill(p->pid, SIGKILL);
                killed = true;
                if (rc == 0) {
                    rc = CFR_ERR(err, CFR_EIO, "doveadm did not exit");
                }
                continue;
            }
            if (w == 0) {
                (void)poll(NULL, 0, 2);
            }
        }
        p->pid = -1;
    }
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        r = pread(p->err_fd, line, STDERR_QUOTE, 0);
        line[r > 0 ? r : 0] = '\0';
        for (char *c = line; *c != '\0'; c++) {
            if (*c == '\n') {
                *c = '\0';
                break;
            }
            if ((unsigned char)*c < 0x20) {
                *c = ' ';
            }
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 126) {
            rc = CFR_ERR(err, CFR_EUNAVAIL, "%s", line);
        } else {
            rc = CFR_ERR(err, CFR_EIO, "doveadm exit %d: %s",
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1, line);
        }
    }
    if (p->err_fd >= 0) {
        close(p->err_fd);
        p->err_fd = -1;
    }
    return rc;
}

/* ---- the text hash: restore_verify_hash_fd's tree form, streamed ------- */

struct text_hash {
    uint8_t *block; /* RESTORE_DOVEADM_HASH_BLOCK bytes */
    size_t have;
    struct cfr_buf list; /* the block hashes */
    uint64_t total;
    uint32_t tail; /* the last three bytes, to spot U+FFFD */
    bool lossy;    /* the text held U+FFFD (EF BF BD) */
};

static void
th_reset(struct text_hash *th)
{
    th->have = 0;
    th->total = 0;
    th->tail = 0;
    th->lossy = false;
    cfr_buf_reset(&th->list);
}

static int
th_put(struct text_hash *th, const uint8_t *p, size_t n, struct cfr_err *err)
{
    for (size_t i = 0; i < n; i++) {
        th->tail = (th->tail << 8 | p[i]) & 0xffffffu;
        th->lossy = th->lossy || th->tail == 0xefbfbdu;
    }
    while (n > 0) {
        size_t k = RESTORE_DOVEADM_HASH_BLOCK - th->have;
        uint8_t h[CFR_ID_LEN];

        if (k > n) {
            k = n;
        }
        memcpy(th->block + th->have, p, k);
        th->have += k;
        th->total += k;
        p += k;
        n -= k;
        if (th->have == RESTORE_DOVEADM_HASH_BLOCK) {
            int rc;

            cfr_id_plain(th->block, th->have, h);
            th->have = 0;
            if ((rc = cfr_buf_append(&th->list, h, sizeof(h), err)) != 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* A last short block (or the one empty block of an empty text). */
static int
th_end(struct text_hash *th, uint8_t out[CFR_ID_LEN], struct cfr_err *err)
{
    if (th->have > 0 || th->total == 0) {
        uint8_t h[CFR_ID_LEN];
        int rc;

        cfr_id_plain(th->block, th->have, h);
        th->have = 0;
        if ((rc = cfr_buf_append(&th->list, h, sizeof(h), err)) != 0) {
            return rc;
        }
    }
    cfr_id_plain(th->list.data, th->list.len, out);
    return 0;
}

/* ---- a JSON reader for doveadm's -f json: [ {"k":"v", ...}, ... ] ---- */

typedef int json_pair_fn(void *ctx, const char *key, const char *value,
                         struct cfr_err *err);
typedef int json_end_fn(void *ctx, struct cfr_err *err);

static int
json_ws(struct proc *p, int *c_r, struct cfr_err *err)
{
    int rc;

    do {
        if ((rc = proc_byte(p, c_r, err)) <= 0) {
            return rc == 0 ? CFR_ERR(err, CFR_ECORRUPT,
                                     "doveadm output: JSON ends early")
                           : rc;
        }
    } while (*c_r == ' ' || *c_r == '\n' || *c_r == '\r' || *c_r == '\t');
    return 0;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int
put_utf8(char *out, size_t size, size_t *len, uint32_t cp)
{
    uint8_t b[4];
    size_t n;

    if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) {
        cp = 0xfffd; /* no NUL inside C strings; lone surrogates */
    }
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else {
        b[0] = (uint8_t)(0xe0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    }
    if (*len + n >= size) {
        return -1;
    }
    memcpy(out + *len, b, n);
    *len += n;
    return 0;
}

/*
 * A string after its opening quote, into out (NUL-terminated); with th,
 * decoded bytes go to th instead, out serving as a window, so a string
 * of any length passes in bounded memory (out then holds its tail).
 */
static int
json_string(struct proc *p, char *out, size_t size, struct text_hash *th,
            struct cfr_err *err)
{
    size_t len = 0;
    int c = 0;
    int rc;

    for (;;) {
        if (th != NULL && len + 8 >= size) {
            if ((rc = th_put(th, (const uint8_t *)out, len, err)) != 0) {
                return rc;
            }
            len = 0;
        }
        if ((rc = proc_byte(p, &c, err)) <= 0) {
            return rc == 0 ? CFR_ERR(err, CFR_ECORRUPT,
                                     "doveadm output: unterminated string")
                           : rc;
        }
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return CFR_ERR(err, CFR_ECORRUPT,
                           "doveadm output: control byte in a string");
        }
        if (c == '\\') {
            if ((rc = proc_byte(p, &c, err)) <= 0) {
                return rc == 0 ? CFR_ERR(err, CFR_ECORRUPT,
                                         "doveadm output: bad escape")
                               : rc;
            }
            switch (c) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case '"':
            case '\\':
            case '/':
                break;
            case 'u': {
                uint32_t cp = 0;

                for (int i = 0; i < 4; i++) {
                    int h = 0;

                    if ((rc = proc_byte(p, &h, err)) <= 0 || hexval(h) < 0) {
                        return rc < 0 ? rc
                                      : CFR_ERR(err, CFR_ECORRUPT,
                                                "doveadm output: bad \\u");
                    }
                    cp = cp << 4 | (uint32_t)hexval(h);
                }
                if (put_utf8(out, size, &len, cp) != 0) {
                    return CFR_ERR(err, CFR_ELIMIT,
                                   "doveadm output: string too long");
                }
                continue;
            }
            default:
                return CFR_ERR(err, CFR_ECORRUPT, "doveadm output: bad escape");
            }
        }
        if (len + 1 >= size) {
            return CFR_ERR(err, CFR_ELIMIT, "doveadm output: string too long");
        }
        out[len++] = (char)c;
    }
    if (th != NULL && (rc = th_put(th, (const uint8_t *)out, len, err)) != 0) {
        return rc;
    }
    out[len] = '\0';
    return 0;
}

/* The hasher a key's value streams into, or NULL to read it whole. */
typedef struct text_hash *json_stream_fn(void *ctx, const char *key);

/* The whole output: an array of flat objects with string values. */
static int
json_read(struct proc *p, json_pair_fn *pair, json_end_fn *end,
          json_stream_fn *stream, void *ctx, struct cfr_err *err)
{
    char *key = cfr_malloc(JSON_STR_MAX);
    char *val = cfr_malloc(JSON_STR_MAX);
    int c = 0;
    int rc;

    if (key == NULL || val == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "JSON buffers");
        goto out;
    }
    /* doveadm prints nothing at all for some empty results. */
    if ((rc = proc_byte(p, &c, err)) <= 0) {
        goto out;
    }
    while (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        if ((rc = proc_byte(p, &c, err)) <= 0) {
            goto out;
        }
    }
    if (c != '[') {
        rc = CFR_ERR(err, CFR_ECORRUPT, "doveadm output: not a JSON array");
        goto out;
    }
    if ((rc = json_ws(p, &c, err)) != 0) {
        goto out;
    }
    while (c != ']') {
        if (c != '{') {
            rc = CFR_ERR(err, CFR_ECORRUPT, "doveadm output: not an object");
            goto out;
        }
        if ((rc = json_ws(p, &c, err)) != 0) {
            goto out;
        }
        while (c != '}') {
            if (c != '"' ||
                (rc = json_string(p, key, JSON_STR_MAX, NULL, err)) != 0 ||
                (rc = json_ws(p, &c, err)) != 0 || c != ':' ||
                (rc = json_ws(p, &c, err)) != 0 || c != '"' ||
                (rc = json_string(p, val, JSON_STR_MAX,
                                  stream != NULL ? stream(ctx, key) : NULL,
                                  err)) != 0) {
                if (rc == 0) {
                    rc = CFR_ERR(err, CFR_ECORRUPT,
                                 "doveadm output: bad key/value");
                }
                goto out;
            }
            if ((rc = pair(ctx, key, val, err)) != 0 ||
                (rc = json_ws(p, &c, err)) != 0) {
                goto out;
            }
            if (c == ',') {
                if ((rc = json_ws(p, &c, err)) != 0) {
                    goto out;
                }
            } else if (c != '}') {
                rc = CFR_ERR(err, CFR_ECORRUPT, "doveadm output: bad object");
                goto out;
            }
        }
        if ((rc = end(ctx, err)) != 0 || (rc = json_ws(p, &c, err)) != 0) {
            goto out;
        }
        if (c == ',') {
            if ((rc = json_ws(p, &c, err)) != 0) {
                goto out;
            }
        } else if (c != ']') {
            rc = CFR_ERR(err, CFR_ECORRUPT, "doveadm output: bad array");
            goto out;
        }
    }
    /* Only white space may follow. */
    for (;;) {
        if ((rc = proc_byte(p, &c, err)) <= 0) {
            break;
        }
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            rc = CFR_ERR(err, CFR_ECORRUPT, "doveadm output: trailing bytes");
            break;
        }
    }
out:
    cfr_free(key);
    cfr_free(val);
    return rc;
}

/* ---- mailbox status, then fetch per mailbox ----------------------------- */

struct mbox {
    char *name;
    char guid[RESTORE_DOVEADM_GUID_MAX];
    uint32_t uidvalidity;
    bool have_validity;
};

struct status_ctx {
    struct mbox *v;
    size_t n;
    size_t cap;
    struct mbox cur;
};

static int
parse_u64_str(const char *s, uint64_t max, uint64_t *v_r)
{
    uint64_t v = 0;

    if (*s == '\0') {
        return -1;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *v_r = v;
    return 0;
}

static int
copy_field(char *dst, size_t size, const char *src, const char *what,
           struct cfr_err *err)
{
    size_t n = strlen(src);

    if (n >= size) {
        return CFR_ERR(err, CFR_ELIMIT, "doveadm %s: %zu bytes", what, n);
    }
    memcpy(dst, src, n + 1);
    return 0;
}

static int
status_pair(void *vctx, const char *key, const char *value, struct cfr_err *err)
{
    struct status_ctx *c = vctx;
    uint64_t v;

    if (strcmp(key, "mailbox") == 0) {
        if (strlen(value) >= RESTORE_DOVEADM_MAILBOX_MAX) {
            return CFR_ERR(err, CFR_ELIMIT, "doveadm: mailbox name too long");
        }
        cfr_free(c->cur.name);
        c->cur.name = cfr_strdup(value);
        if (c->cur.name == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "mailbox name");
        }
    } else if (strcmp(key, "guid") == 0) {
        return copy_field(c->cur.guid, sizeof(c->cur.guid), value,
                          "mailbox guid", err);
    } else if (strcmp(key, "uidvalidity") == 0) {
        if (parse_u64_str(value, UINT32_MAX, &v) != 0) {
            return CFR_ERR(err, CFR_ECORRUPT, "doveadm: bad uidvalidity");
        }
        c->cur.uidvalidity = (uint32_t)v;
        c->cur.have_validity = true;
    }
    return 0;
}

static int
status_end(void *vctx, struct cfr_err *err)
{
    struct status_ctx *c = vctx;

    if (c->cur.name == NULL || c->cur.guid[0] == '\0' ||
        !c->cur.have_validity) {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "doveadm: mailbox status lacks a field");
    }
    if (c->n == c->cap) {
        size_t cap = c->cap == 0 ? 16 : c->cap * 2;
        struct mbox *v = cfr_realloc(c->v, cap * sizeof(*v));

        if (v == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "mailbox list");
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = c->cur;
    memset(&c->cur, 0, sizeof(c->cur));
    return 0;
}

static int
cmp_mbox(const void *a, const void *b)
{
    return strcmp(((const struct mbox *)a)->name,
                  ((const struct mbox *)b)->name);
}

struct fetch_ctx {
    restore_doveadm_fn *fn;
    void *fn_ctx;
    struct restore_doveadm_msg m;
    unsigned have; /* bit per field seen */
    uint32_t last_uid;
    /* RESTORE_DOVEADM_TEXT */
    bool text;
    const struct dv *dv;
    const char *mailbox_guid;
    struct text_hash th;
};

static int
cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Flags without \Recent (it belongs to a session), sorted, one space. */
static int
norm_flags(char *dst, size_t size, const char *src, struct cfr_err *err)
{
    char tmp[RESTORE_DOVEADM_FLAGS_MAX];
    const char *tok[RESTORE_DOVEADM_FLAGS_MAX / 2];
    size_t n_tok = 0;
    size_t len = 0;
    char *save = NULL;

    if (copy_field(tmp, sizeof(tmp), src, "flags", err) != 0) {
        return CFR_ELIMIT;
    }
    for (char *t = strtok_r(tmp, " ", &save); t != NULL;
         t = strtok_r(NULL, " ", &save)) {
        if (strcmp(t, "\\Recent") != 0 && n_tok < sizeof(tok) / sizeof(*tok)) {
            tok[n_tok++] = t;
        }
    }
    qsort(tok, n_tok, sizeof(*tok), cmp_cstr);
    dst[0] = '\0';
    for (size_t i = 0; i < n_tok; i++) {
        size_t tl = strlen(tok[i]);

        if (len + tl + 2 > size) {
            return CFR_ERR(err, CFR_ELIMIT, "doveadm: flags too long");
        }
        if (i > 0) {
            dst[len++] = ' ';
        }
        memcpy(dst + len, tok[i], tl + 1);
        len += tl;
    }
    return 0;
}

/* The first Message-ID line, without folding white space. */
static int
norm_msgid(char *dst, size_t size, const char *src, struct cfr_err *err)
{
    const char *b = src;
    const char *e;

    while (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r') {
        b++;
    }
    e = b;
    while (*e != '\0' && *e != '\n' && *e != '\r') {
        e++;
    }
    while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
        e--;
    }
    if ((size_t)(e - b) >= size) {
        return CFR_ERR(err, CFR_ELIMIT, "doveadm: Message-ID too long");
    }
    memcpy(dst, b, (size_t)(e - b));
    dst[e - b] = '\0';
    return 0;
}

enum {
    F_UID = 1,
    F_FLAGS = 2,
    F_SIZE = 4,
    F_MSGID = 8,
    F_GUID = 16,
    F_TEXT = 32
};

static struct text_hash *
fetch_stream(void *vctx, const char *key)
{
    struct fetch_ctx *c = vctx;

    if (!c->text || strcmp(key, "text") != 0) {
        return NULL;
    }
    th_reset(&c->th);
    return &c->th;
}

static int
fetch_pair(void *vctx, const char *key, const char *value, struct cfr_err *err)
{
    struct fetch_ctx *c = vctx;
    uint64_t v;

    if (strcmp(key, "uid") == 0) {
        if (parse_u64_str(value, UINT32_MAX, &v) != 0 || v == 0) {
            return CFR_ERR(err, CFR_ECORRUPT, "doveadm: bad uid");
        }
        c->m.uid = (uint32_t)v;
        c->have |= F_UID;
    } else if (strcmp(key, "flags") == 0) {
        c->have |= F_FLAGS;
        return norm_flags(c->m.flags, sizeof(c->m.flags), value, err);
    } else if (strcmp(key, "size.physical") == 0) {
        if (parse_u64_str(value, UINT64_MAX, &v) != 0) {
            return CFR_ERR(err, CFR_ECORRUPT, "doveadm: bad size");
        }
        c->m.size = v;
        c->have |= F_SIZE;
    } else if (strcmp(key, "hdr.message-id") == 0) {
        c->have |= F_MSGID;
        return norm_msgid(c->m.message_id, sizeof(c->m.message_id), value, err);
    } else if (strcmp(key, "guid") == 0) {
        c->have |= F_GUID;
        return copy_field(c->m.guid, sizeof(c->m.guid), value, "guid", err);
    } else if (c->text && strcmp(key, "text") == 0) {
        /* fetch_stream hashed the value as it was decoded. */
        c->have |= F_TEXT;
        c->m.text_size = c->th.total;
        c->m.have_text = true;
        return th_end(&c->th, c->m.text_hash, err);
    }
    return 0;
}

/*
 * The text of one message again, through the tab formatter: its output is
 * the header line "text\n", the bytes as stored, and one "\n" ending the
 * row, which is held back one byte so it is not hashed. For a single field
 * of a single message that is unambiguous whatever the bytes are.
 */
static int
fetch_raw_text(struct fetch_ctx *c, struct cfr_err *err)
{
    static const char head[] = "text\n";
    char uid[16];
    struct proc *p = cfr_malloc(sizeof(*p));
    size_t got_head = 0;
    int held = -1;
    int ch = 0;
    int rc;

    if (p == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "doveadm reader");
    }
    (void)snprintf(uid, sizeof(uid), "%" PRIu32, c->m.uid);
    {
        char *argv[] = {(char *)c->dv->bin,
                        (char *)"-c",
                        (char *)c->dv->conf,
                        (char *)"-f",
                        (char *)"tab",
                        (char *)"fetch",
                        (char *)"text",
                        (char *)"mailbox-guid",
                        (char *)c->mailbox_guid,
                        (char *)"uid",
                        uid,
                        NULL};

        rc = proc_start(c->dv, argv, "stderr.text", p, err);
    }
    if (rc != 0) {
        cfr_free(p);
        return rc;
    }
    th_reset(&c->th);
    while ((rc = proc_byte(p, &ch, err)) == 1) {
        if (got_head < sizeof(head) - 1) {
            if (ch != head[got_head++]) {
                rc = CFR_ERR(err, CFR_ECORRUPT,
                             "doveadm fetch text: unexpected header");
                break;
            }
            continue;
        }
        if (held >= 0) {
            uint8_t b = (uint8_t)held;

            if ((rc = th_put(&c->th, &b, 1, err)) != 0) {
                break;
            }
        }
        held = ch;
    }
    if (rc == 0 && (got_head < sizeof(head) - 1 || held != '\n')) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "doveadm fetch text: message UID %" PRIu32 " not shown",
                     c->m.uid);
    }
    rc = proc_finish(p, rc, err);
    cfr_free(p);
    if (rc == 0) {
        c->m.text_size = c->th.total;
        rc = th_end(&c->th, c->m.text_hash, err);
    }
    return rc;
}

static int
fetch_end(void *vctx, struct cfr_err *err)
{
    struct fetch_ctx *c = vctx;
    int rc;

    if (c->have != (F_UID | F_FLAGS | F_SIZE | F_MSGID | F_GUID |
                    (c->text ? (unsigned)F_TEXT : 0u))) {
        return CFR_ERR(err, CFR_ECORRUPT, "doveadm: fetch lacks a field");
    }
    if (c->m.uid <= c->last_uid) {
        return CFR_ERR(err, CFR_ECORRUPT, "doveadm: UIDs out of order");
    }
    c->last_uid = c->m.uid;
    /* JSON replaced something (not UTF-8, or NUL): read the bytes raw. */
    if (c->text && c->th.lossy && (rc = fetch_raw_text(c, err)) != 0) {
        return rc;
    }
    rc = c->fn(c->fn_ctx, &c->m);
    c->have = 0;
    c->m.flags[0] = c->m.message_id[0] = c->m.guid[0] = '\0';
    c->m.have_text = false;
    c->m.text_size = 0;
    return rc;
}

static int
run_json(const struct dv *dv, char *const argv[], json_pair_fn *pair,
         json_end_fn *end, json_stream_fn *stream, void *ctx,
         struct cfr_err *err)
{
    struct proc *p = cfr_malloc(sizeof(*p));
    int rc;

    if (p == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "doveadm reader");
    }
    if ((rc = proc_start(dv, argv, "stderr", p, err)) == 0) {
        rc = json_read(p, pair, end, stream, ctx, err);
        rc = proc_finish(p, rc, err);
    }
    cfr_free(p);
    return rc;
}

int
restore_doveadm_list(const char *maildir_root, restore_doveadm_fn *fn,
                     void *ctx, struct cfr_err *err)
{
    return restore_doveadm_list_ex(maildir_root, 0, fn, ctx, err);
}

int
restore_doveadm_list_ex(const char *maildir_root, unsigned flags,
                        restore_doveadm_fn *fn, void *ctx, struct cfr_err *err)
{
    struct dv dv;
    struct status_ctx st = {0};
    struct fetch_ctx *fc = NULL;
    int rc;

    if ((rc = dv_init(&dv, maildir_root, err)) != 0) {
        return rc;
    }
    {
        char *argv[] = {dv.bin,           (char *)"-c",
                        dv.conf,          (char *)"-f",
                        (char *)"json",   (char *)"mailbox",
                        (char *)"status", (char *)"guid uidvalidity",
                        (char *)"*",      NULL};

        if ((rc = run_json(&dv, argv, status_pair, status_end, NULL, &st,
                           err)) != 0) {
            goto out;
        }
    }
    if (st.n > 1) {
        qsort(st.v, st.n, sizeof(*st.v), cmp_mbox);
    }
    fc = cfr_calloc(1, sizeof(*fc));
    if (fc == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "doveadm reader");
        goto out;
    }
    fc->fn = fn;
    fc->fn_ctx = ctx;
    fc->dv = &dv;
    fc->text = (flags & RESTORE_DOVEADM_TEXT) != 0;
    cfr_buf_init(&fc->th.list, SIZE_MAX);
    if (fc->text &&
        (fc->th.block = cfr_malloc(RESTORE_DOVEADM_HASH_BLOCK)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "doveadm text hash");
        goto out;
    }
    for (size_t i = 0; i < st.n; i++) {
        /* By GUID: a name could hold search or wildcard syntax. */
        char *argv[] = {dv.bin,
                        (char *)"-c",
                        dv.conf,
                        (char *)"-f",
                        (char *)"json",
                        (char *)"fetch",
                        fc->text ? (char *)"uid flags size.physical "
                                           "hdr.message-id guid text"
                                 : (char *)"uid flags size.physical "
                                           "hdr.message-id guid",
                        (char *)"mailbox-guid",
                        st.v[i].guid,
                        NULL};

        (void)snprintf(fc->m.mailbox, sizeof(fc->m.mailbox), "%s",
                       st.v[i].name);
        fc->m.uidvalidity = st.v[i].uidvalidity;
        fc->mailbox_guid = st.v[i].guid;
        fc->last_uid = 0;
        fc->have = 0;
        if ((rc = run_json(&dv, argv, fetch_pair, fetch_end, fetch_stream, fc,
                           err)) != 0) {
            goto out;
        }
    }
out:
    for (size_t i = 0; i < st.n; i++) {
        cfr_free(st.v[i].name);
    }
    cfr_free(st.v);
    cfr_free(st.cur.name);
    if (fc != NULL) {
        cfr_free(fc->th.block);
        cfr_buf_fini(&fc->th.list);
    }
    cfr_free(fc);
    dv_fini(&dv);
    return rc;
}
