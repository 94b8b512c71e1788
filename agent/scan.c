/*
 * scan.c - the mail store walker (see scan.h for the layout it knows and
 * its contract).
 *
 * Invariants:
 *  1. One fstatat(AT_SYMLINK_NOFOLLOW) per entry; a directory is then
 *     opened with openat(O_NOFOLLOW | O_DIRECTORY) on its parent's
 *     descriptor, so a directory swapped for a symlink between the two
 *     calls fails with ELOOP instead of leading out of the root.
 *  2. Open descriptors are bounded by the depth limit (one per level, plus
 *     one while a folder's new/ and cur/ are re-read).
 *  3. In a folder, new/ is walked before cur/ (Dovecot only ever moves
 *     messages new/ -> cur/), after the folder's other entries, so a
 *     message moved during the walk of new/ is met again in cur/; names
 *     that vanished in either are then looked up by re-reading both (at
 *     most AGENT_SCAN_REREAD_ROUNDS times), in one pass for all of them,
 *     so a rename storm costs one re-read per folder, not one per name.
 *  4. Memory: the path and key buffers, one DIR per level, and the
 *     vanished-name set (AGENT_SCAN_VANISHED_MAX names of at most
 *     NAME_MAX bytes, about 1 MiB, allocated on first use).
 */
#include "scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "mem.h" /* cfr_malloc, cfr_calloc */

#define VSET_SLOTS (2 * AGENT_SCAN_VANISHED_MAX) /* power of two */
#define GROUPS_MAX 256

/* One vanished message name of the folder being walked. */
struct vname {
    uint16_t len;
    bool resolved;
    uint8_t base[NAME_MAX + 1];
};

/* The vanished-name set: an array plus an open-addressing index. */
struct vset {
    struct vname *names; /* AGENT_SCAN_VANISHED_MAX, allocated lazily */
    int32_t *slots;      /* VSET_SLOTS indexes into names, -1 empty */
    size_t n;
    size_t unresolved;
};

struct scan {
    const struct agent_scan_opts *opts;
    agent_scan_fn *fn;
    void *ctx;
    struct agent_scan_summary *sum;
    struct cfr_err *err;
    unsigned max_depth;
    /* Path of the current entry, relative to the root. */
    char path[AGENT_SCAN_PATH_MAX + 1];
    size_t path_len;
    size_t folder_len; /* the folder is path[0..folder_len) */
    int folder_fd;     /* its descriptor, for re-reads forced mid-walk */
    uint8_t key[CFR_SNAP_KEY_MAX];
    /* Whose mode bits decide readability; root reads anything. */
    bool check_mode;
    uid_t euid;
    gid_t egid;
    gid_t groups[GROUPS_MAX];
    int n_groups;
    struct vset vs;
};

const char *
agent_scan_reason_name(enum agent_scan_reason reason)
{
    switch (reason) {
    case AGENT_SCAN_R_NONE:
        return "none";
    case AGENT_SCAN_R_SYMLINK:
        return "symlink";
    case AGENT_SCAN_R_SPECIAL:
        return "special";
    case AGENT_SCAN_R_PERMISSION:
        return "permission";
    case AGENT_SCAN_R_IO:
        return "io";
    case AGENT_SCAN_R_TOO_LONG:
        return "too-long";
    case AGENT_SCAN_R_TOO_DEEP:
        return "too-deep";
    case AGENT_SCAN_R_OTHER:
    case AGENT_SCAN_R_COUNT:
        break;
    }
    return "other";
}

static bool
name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

static bool
has_prefix(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && memcmp(name, lit, n) == 0;
}

enum cfr_snap_kind
agent_scan_kind_of(const uint8_t *name, size_t len)
{
    /* Dovecot's own files: uidlist, keywords, uidvalidity, indexes. */
    if (has_prefix(name, len, "dovecot") ||
        name_is(name, len, "subscriptions") ||
        name_is(name, len, "maildirfolder")) {
        return CFR_SNAP_DOVECOT_META;
    }
    if (name_is(name, len, "mbox") || name_is(name, len, "inbox") ||
        name_is(name, len, "INBOX") ||
        (len > 5 && memcmp(name + len - 5, ".mbox", 5) == 0)) {
        return CFR_SNAP_MBOX;
    }
    return CFR_SNAP_OPAQUE;
}

static enum agent_scan_reason
reason_of(int e)
{
    switch (e) {
    case EACCES:
    case EPERM:
        return AGENT_SCAN_R_PERMISSION;
    case EIO:
        return AGENT_SCAN_R_IO;
    case ENAMETOOLONG:
        return AGENT_SCAN_R_TOO_LONG;
    case ELOOP:
        return AGENT_SCAN_R_SYMLINK;
    default:
        return AGENT_SCAN_R_OTHER;
    }
}

/* ---- path and key ------------------------------------------------------ */

/* Appends "/name" (or "name" at the root); false when it would not fit. */
static bool
path_push(struct scan *s, const char *name, size_t len)
{
    size_t sep = s->path_len > 0 ? 1 : 0;
    if (s->path_len + sep + len > AGENT_SCAN_PATH_MAX) {
        return false;
    }
    if (sep) {
        s->path[s->path_len++] = '/';
    }
    memcpy(s->path + s->path_len, name, len);
    s->path_len += len;
    s->path[s->path_len] = '\0';
    return true;
}

static void
path_pop(struct scan *s, size_t old_len)
{
    s->path_len = old_len;
    s->path[old_len] = '\0';
}

/*
 * Builds the key in s->key: folder 0x00 then base (a message) or "/" and
 * the path relative to the folder. Returns its length, 0 when too long.
 */
static size_t
key_build(struct scan *s, const uint8_t *base, size_t base_len)
{
    size_t n = s->folder_len;
    memcpy(s->key, s->path, n);
    s->key[n++] = 0;
    const uint8_t *name = base;
    size_t name_len = base_len;
    bool slash = false;
    if (base == NULL) {
        /* path = folder "/" rest, or just rest in INBOX. */
        name = (const uint8_t *)s->path + s->folder_len;
        name_len = s->path_len - s->folder_len;
        slash = s->folder_len == 0;
    }
    if (n + (slash ? 1 : 0) + name_len > sizeof(s->key)) {
        return 0;
    }
    if (slash) {
        s->key[n++] = '/';
    }
    memcpy(s->key + n, name, name_len);
    return n + name_len;
}

/* ---- reporting --------------------------------------------------------- */

static void
entry_init(struct scan *s, struct agent_scan_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->folder = (const uint8_t *)s->path;
    e->folder_len = s->folder_len;
    e->path = s->path;
    e->path_len = s->path_len;
    e->key = (const uint8_t *)"";
    e->base = e->key;
    e->info = e->key;
    e->flags = e->key;
}

static void
entry_stat(struct agent_scan_entry *e, const struct stat *st)
{
    e->size = (uint64_t)st->st_size;
    e->mtime_ns =
        (int64_t)st->st_mtim.tv_sec * 1000000000 + (int64_t)st->st_mtim.tv_nsec;
    e->ino = (uint64_t)st->st_ino;
    e->dev = (uint64_t)st->st_dev;
    e->mode = (uint32_t)st->st_mode;
}

static int
emit(struct scan *s, const struct agent_scan_entry *e)
{
    switch (e->status) {
    case AGENT_SCAN_FILE:
        s->sum->files++;
        s->sum->bytes += e->size;
        if ((unsigned)e->kind < 5) {
            s->sum->by_kind[e->kind]++;
        }
        break;
    case AGENT_SCAN_SKIPPED:
        s->sum->skipped++;
        s->sum->by_reason[e->reason]++;
        break;
    case AGENT_SCAN_ERROR:
        s->sum->errors++;
        s->sum->by_reason[e->reason]++;
        break;
    }
    return s->fn(s->ctx, e);
}

/*
 * Reports a problem with the current path. For a directory, the key is the
 * folder's prefix so that a consumer keeps what it knew of the folder.
 */
static int
report_problem_base(struct scan *s, enum agent_scan_status status,
                    enum agent_scan_reason reason, int sys_errno, bool is_dir,
                    enum cfr_snap_kind kind, const struct stat *st,
                    const uint8_t *base, size_t base_len)
{
    struct agent_scan_entry e;
    entry_init(s, &e);
    e.status = status;
    e.reason = reason;
    e.sys_errno = sys_errno;
    e.is_dir = is_dir;
    e.kind = kind;
    size_t klen = is_dir ? 0 : key_build(s, base, base_len);
    if (is_dir && s->path_len == 0) {
        /* The root itself: every folder of the mailbox is out of sight. */
        klen = 0;
    } else if (klen == 0) {
        memcpy(s->key, s->path, s->folder_len);
        s->key[s->folder_len] = 0;
        klen = s->folder_len + 1;
    }
    e.key = s->key;
    e.key_len = klen;
    if (st != NULL) {
        entry_stat(&e, st);
    }
    if (base != NULL) {
        e.base = base;
        e.base_len = base_len;
    }
    return emit(s, &e);
}

static int
report_problem(struct scan *s, enum agent_scan_status status,
               enum agent_scan_reason reason, int sys_errno, bool is_dir,
               enum cfr_snap_kind kind, const struct stat *st)
{
    return report_problem_base(s, status, reason, sys_errno, is_dir, kind, st,
                               NULL, 0);
}

/* An error on a message: its key is the message's identity. */
static int
report_msg_error(struct scan *s, int sys_errno, const uint8_t *base,
                 size_t base_len)
{
    return report_problem_base(s, AGENT_SCAN_ERROR, reason_of(sys_errno),
                               sys_errno, false, CFR_SNAP_MAILDIR_MESSAGE, NULL,
                               base, base_len);
}

static int
report_error(struct scan *s, int sys_errno, bool is_dir, enum cfr_snap_kind k)
{
    return report_problem(s, AGENT_SCAN_ERROR, reason_of(sys_errno), sys_errno,
                          is_dir, k, NULL);
}

/* Whether the process may read a file, judged by its mode bits alone. */
static bool
mode_readable(const struct scan *s, const struct stat *st)
{
    if (!s->check_mode) {
        return true;
    }
    if (st->st_uid == s->euid) {
        return (st->st_mode & S_IRUSR) != 0;
    }
    bool in_group = st->st_gid == s->egid;
    for (int i = 0; !in_group && i < s->n_groups; i++) {
        in_group = s->groups[i] == st->st_gid;
    }
    return (st->st_mode & (in_group ? S_IRGRP : S_IROTH)) != 0;
}

/*
 * Reports a regular file at the current path. base != NULL makes it a
 * message (info is the rest of its name from the first ':').
 */
static int
report_file(struct scan *s, const struct stat *st, enum cfr_snap_kind kind,
            const uint8_t *base, size_t base_len, bool in_new, bool recovered)
{
    if (!mode_readable(s, st)) {
        return report_problem_base(s, AGENT_SCAN_ERROR, AGENT_SCAN_R_PERMISSION,
                                   EACCES, false, kind, st, base, base_len);
    }
    size_t klen = key_build(s, base, base_len);
    if (klen == 0) {
        return report_problem(s, AGENT_SCAN_ERROR, AGENT_SCAN_R_TOO_LONG,
                              ENAMETOOLONG, false, kind, st);
    }
    struct agent_scan_entry e;
    entry_init(s, &e);
    e.status = AGENT_SCAN_FILE;
    e.kind = kind;
    e.key = s->key;
    e.key_len = klen;
    e.in_new = in_new;
    e.recovered = recovered;
    entry_stat(&e, st);
    if (base != NULL) {
        const uint8_t *name_end = (const uint8_t *)s->path + s->path_len;
        e.base = base;
        e.base_len = base_len;
        e.info = base + base_len;
        e.info_len = (size_t)(name_end - e.info);
        if (e.info_len >= 3 && memcmp(e.info, ":2,", 3) == 0) {
            const uint8_t *f = e.info + 3;
            const uint8_t *comma = memchr(f, ',', (size_t)(name_end - f));
            e.flags = f;
            e.flags_len = (size_t)((comma != NULL ? comma : name_end) - f);
        }
    }
    return emit(s, &e);
}

/* fstatat without following, after the test hook. Returns 0 or an errno. */
static int
stat_at(struct scan *s, int dfd, const char *name, struct stat *st)
{
    if (s->opts->before_stat != NULL) {
        int e = s->opts->before_stat(s->opts->hook_ctx, s->path);
        if (e != 0) {
            return e;
        }
    }
    return fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

/*
 * The base of a message name: before the first ':'. Names starting with
 * '.' (editor and NFS leftovers; Dovecot skips them) and names with an
 * empty base are not messages: 0.
 */
static size_t
message_base_len(const char *name, size_t len)
{
    if (len == 0 || name[0] == '.' || name[0] == ':') {
        return 0;
    }
    const char *colon = memchr(name, ':', len);
    return colon != NULL ? (size_t)(colon - name) : len;
}

/* ---- the vanished-name set --------------------------------------------- */

static uint32_t
vset_hash(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

/* The slot holding base, or the empty slot where it would go. */
static size_t
vset_slot(const struct vset *vs, const uint8_t *base, size_t len)
{
    size_t i = vset_hash(base, len) & (VSET_SLOTS - 1);
    for (;;) {
        int32_t k = vs->slots[i];
        if (k < 0 || (vs->names[k].len == len &&
                      memcmp(vs->names[k].base, base, len) == 0)) {
            return i;
        }
        i = (i + 1) & (VSET_SLOTS - 1);
    }
}

static struct vname *
vset_find(const struct vset *vs, const uint8_t *base, size_t len)
{
    if (vs->n == 0) {
        return NULL;
    }
    int32_t k = vs->slots[vset_slot(vs, base, len)];
    return k < 0 ? NULL : &vs->names[k];
}

static void
vset_clear(struct vset *vs)
{
    if (vs->n > 0) {
        memset(vs->slots, 0xff, VSET_SLOTS * sizeof(vs->slots[0]));
    }
    vs->n = 0;
    vs->unresolved = 0;
}

static int
vset_add(struct scan *s, const uint8_t *base, size_t len)
{
    struct vset *vs = &s->vs;
    if (vs->names == NULL) {
        vs->names = cfr_calloc(AGENT_SCAN_VANISHED_MAX, sizeof(*vs->names));
        vs->slots = cfr_malloc(VSET_SLOTS * sizeof(vs->slots[0]));
        if (vs->names == NULL || vs->slots == NULL) {
            return CFR_ERR(s->err, CFR_ENOMEM, "scan: vanished-name set");
        }
        memset(vs->slots, 0xff, VSET_SLOTS * sizeof(vs->slots[0]));
    }
    CFR_ASSERT(vs->n < AGENT_SCAN_VANISHED_MAX && len <= NAME_MAX);
    size_t i = vset_slot(vs, base, len);
    if (vs->slots[i] >= 0) {
        struct vname *v = &vs->names[vs->slots[i]];
        if (v->resolved) {
            v->resolved = false;
            vs->unresolved++;
        }
        return 0;
    }
    struct vname *v = &vs->names[vs->n];
    v->len = (uint16_t)len;
    v->resolved = false;
    memcpy(v->base, base, len);
    vs->slots[i] = (int32_t)vs->n++;
    vs->unresolved++;
    return 0;
}

/* ---- walking ----------------------------------------------------------- */

static int walk_plain(struct scan *s, int dfd, unsigned depth);
static int walk_folder(struct scan *s, int dfd, unsigned depth);
static int resolve_vanished(struct scan *s, int folder_fd, unsigned rounds);

/*
 * Opens the directory name (already stat'ed as one) below dfd and runs
 * walk on it; errors become entries. The path already names it.
 */
static int
descend(struct scan *s, int dfd, const char *name, unsigned depth,
        int (*walk)(struct scan *, int, unsigned))
{
    if (depth > s->max_depth) {
        return report_problem(s, AGENT_SCAN_ERROR, AGENT_SCAN_R_TOO_DEEP, ELOOP,
                              true, CFR_SNAP_OPAQUE, NULL);
    }
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            s->sum->vanished++;
            return 0;
        }
        if (e == ELOOP || e == ENOTDIR) {
            /* Swapped for a symlink or a file since the stat. */
            return report_problem(s, AGENT_SCAN_SKIPPED, AGENT_SCAN_R_SYMLINK,
                                  0, false, CFR_SNAP_OPAQUE, NULL);
        }
        return report_error(s, e, true, CFR_SNAP_OPAQUE);
    }
    s->sum->dirs++;
    int rc = walk(s, fd, depth);
    close(fd);
    return rc;
}

/*
 * Handles one entry outside new/ and cur/ (the path names it already):
 * a file is reported, a directory walked as a plain tree or, at the root,
 * as a Maildir++ folder when its name starts with '.'.
 */
static int
generic_entry(struct scan *s, int dfd, const char *name, size_t len,
              unsigned depth, bool folder_dirs)
{
    struct stat st;
    enum cfr_snap_kind kind = agent_scan_kind_of((const uint8_t *)name, len);
    int e = stat_at(s, dfd, name, &st);
    if (e == ENOENT) {
        s->sum->vanished++;
        return 0;
    }
    if (e != 0 && folder_dirs && name[0] == '.') {
        /* Almost surely a Maildir++ folder: key the error by the folder,
         * so that none of its messages is taken for deleted. */
        size_t saved = s->folder_len;
        s->folder_len = s->path_len;
        int rc = report_error(s, e, true, kind);
        s->folder_len = saved;
        return rc;
    }
    if (e != 0) {
        return report_error(s, e, false, kind);
    }
    if (S_ISREG(st.st_mode)) {
        return report_file(s, &st, kind, NULL, 0, false, false);
    }
    if (S_ISLNK(st.st_mode)) {
        return report_problem(s, AGENT_SCAN_SKIPPED, AGENT_SCAN_R_SYMLINK, 0,
                              false, kind, &st);
    }
    if (!S_ISDIR(st.st_mode)) {
        return report_problem(s, AGENT_SCAN_SKIPPED, AGENT_SCAN_R_SPECIAL, 0,
                              false, kind, &st);
    }
    if (folder_dirs && name[0] == '.') {
        size_t saved = s->folder_len;
        s->folder_len = s->path_len;
        int rc = descend(s, dfd, name, depth + 1, walk_folder);
        s->folder_len = saved;
        return rc;
    }
    return descend(s, dfd, name, depth + 1, walk_plain);
}

/* Reads the directory at fd (borrowed), calling each for every entry. */
static int
read_dir(struct scan *s, int fd, bool is_folder,
         int (*each)(struct scan *, int, const char *, size_t, void *),
         void *arg)
{
    int rc = 0;
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (dup_fd >= 0) {
            close(dup_fd);
        }
        return report_error(s, e, true, CFR_SNAP_OPAQUE);
    }
    size_t base_len = s->path_len;
    for (;;) {
        errno = 0;
        const struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                rc = report_error(s, errno, true, CFR_SNAP_OPAQUE);
            }
            break;
        }
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (name_is((const uint8_t *)name, len, ".") ||
            name_is((const uint8_t *)name, len, "..")) {
            continue;
        }
        if (is_folder && (name_is((const uint8_t *)name, len, "cur") ||
                          name_is((const uint8_t *)name, len, "new") ||
                          name_is((const uint8_t *)name, len, "tmp"))) {
            continue; /* new/ and cur/ come after; tmp/ never */
        }
        if (!path_push(s, name, len)) {
            /* Report under the directory's own path, which fits. */
            rc = report_problem(s, AGENT_SCAN_ERROR, AGENT_SCAN_R_TOO_LONG,
                                ENAMETOOLONG, true, CFR_SNAP_OPAQUE, NULL);
        } else {
            rc = each(s, fd, name, len, arg);
        }
        path_pop(s, base_len);
        if (rc != 0) {
            break;
        }
    }
    closedir(d);
    return rc;
}

struct plain_arg {
    unsigned depth;
    bool folder_dirs;
};

static int
plain_each(struct scan *s, int fd, const char *name, size_t len, void *arg)
{
    const struct plain_arg *a = arg;
    return generic_entry(s, fd, name, len, a->depth, a->folder_dirs);
}

static int
walk_plain(struct scan *s, int dfd, unsigned depth)
{
    struct plain_arg a = {depth, false};
    return read_dir(s, dfd, false, plain_each, &a);
}

struct maildir_arg {
    unsigned depth;
    bool in_new;
};

static int
maildir_each(struct scan *s, int fd, const char *name, size_t len, void *arg)
{
    const struct maildir_arg *a = arg;
    size_t blen = message_base_len(name, len);
    if (blen == 0) {
        return generic_entry(s, fd, name, len, a->depth, false);
    }
    const uint8_t *base = (const uint8_t *)s->path + s->path_len - len;
    struct stat st;
    int e = stat_at(s, fd, name, &st);
    if (e == ENOENT) {
        /* Renamed (flags, new/ -> cur/) or expunged: settle it later. */
        if (s->vs.n == AGENT_SCAN_VANISHED_MAX) {
            int rc = resolve_vanished(s, -1, 1);
            if (rc != 0) {
                return rc;
            }
        }
        return vset_add(s, base, blen);
    }
    if (e != 0) {
        return report_msg_error(s, e, base, blen);
    }
    if (S_ISDIR(st.st_mode)) {
        return descend(s, fd, name, a->depth + 1, walk_plain);
    }
    if (!S_ISREG(st.st_mode)) {
        return report_problem_base(
            s, AGENT_SCAN_SKIPPED,
            S_ISLNK(st.st_mode) ? AGENT_SCAN_R_SYMLINK : AGENT_SCAN_R_SPECIAL,
            0, false, CFR_SNAP_MAILDIR_MESSAGE, &st, base, blen);
    }
    struct vname *v = vset_find(&s->vs, base, blen);
    if (v != NULL && !v->resolved) {
        /* Its old name vanished earlier; this is where it went. */
        v->resolved = true;
        s->vs.unresolved--;
        s->sum->recovered++;
    }
    return report_file(s, &st, CFR_SNAP_MAILDIR_MESSAGE, base, blen, a->in_new,
                       false);
}

static int
walk_maildir(struct scan *s, int dfd, unsigned depth, bool in_new)
{
    struct maildir_arg a = {depth, in_new};
    return read_dir(s, dfd, false, maildir_each, &a);
}

static int
walk_new(struct scan *s, int dfd, unsigned depth)
{
    return walk_maildir(s, dfd, depth, true);
}

static int
walk_cur(struct scan *s, int dfd, unsigned depth)
{
    return walk_maildir(s, dfd, depth, false);
}

static int
reread_each(struct scan *s, int fd, const char *name, size_t len, void *arg)
{
    const bool *in_new = arg;
    size_t blen = message_base_len(name, len);
    if (blen == 0) {
        return 0;
    }
    const uint8_t *base = (const uint8_t *)s->path + s->path_len - len;
    struct vname *v = vset_find(&s->vs, base, blen);
    if (v == NULL || v->resolved) {
        return 0;
    }
    struct stat st;
    int e = stat_at(s, fd, name, &st);
    if (e == ENOENT) {
        return 0; /* renamed again: the next round looks again */
    }
    v->resolved = true;
    s->vs.unresolved--;
    if (e != 0) {
        return report_msg_error(s, e, base, blen);
    }
    if (!S_ISREG(st.st_mode)) {
        return report_problem_base(
            s, AGENT_SCAN_SKIPPED,
            S_ISLNK(st.st_mode) ? AGENT_SCAN_R_SYMLINK : AGENT_SCAN_R_SPECIAL,
            0, false, CFR_SNAP_MAILDIR_MESSAGE, &st, base, blen);
    }
    s->sum->recovered++;
    return report_file(s, &st, CFR_SNAP_MAILDIR_MESSAGE, base, blen, *in_new,
                       true);
}

/*
 * Looks for every unresolved vanished name by re-reading the folder's new/
 * and cur/ (folder_fd, or the current folder's when -1), up to rounds
 * times. What is still missing was deleted: counted, not reported. The
 * path must be the folder's (or below it: it is restored).
 */
static int
resolve_vanished(struct scan *s, int folder_fd, unsigned rounds)
{
    int rc = 0;
    if (folder_fd < 0) {
        folder_fd = s->folder_fd;
    }
    size_t saved = s->path_len;
    char saved_path[AGENT_SCAN_PATH_MAX + 1];
    memcpy(saved_path, s->path, saved + 1);
    path_pop(s, s->folder_len);
    for (unsigned r = 0; r < rounds && s->vs.unresolved > 0 && rc == 0; r++) {
        s->sum->rereads++;
        static const char *const subs[2] = {"new", "cur"};
        for (int i = 0; i < 2 && rc == 0; i++) {
            bool in_new = i == 0;
            int fd = openat(folder_fd, subs[i],
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                continue; /* gone or unreadable: reported by the walk */
            }
            size_t base_len = s->path_len;
            if (path_push(s, subs[i], 3)) {
                rc = read_dir(s, fd, false, reread_each, &in_new);
            }
            path_pop(s, base_len);
            close(fd);
        }
    }
    if (rc == 0) {
        s->sum->vanished += s->vs.unresolved;
        vset_clear(&s->vs);
    }
    memcpy(s->path, saved_path, saved + 1);
    s->path_len = saved;
    return rc;
}

/*
 * Walks a Maildir++ folder (the root itself when depth is 0): its other
 * entries first, then new/, then cur/, then the names that vanished.
 */
static int
walk_folder(struct scan *s, int dfd, unsigned depth)
{
    int outer = s->folder_fd;
    s->folder_fd = dfd;
    struct plain_arg a = {depth, depth == 0};
    int rc = read_dir(s, dfd, true, plain_each, &a);
    static const char *const subs[2] = {"new", "cur"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        size_t base_len = s->path_len;
        if (!path_push(s, subs[i], 3)) {
            rc = report_problem(s, AGENT_SCAN_ERROR, AGENT_SCAN_R_TOO_LONG,
                                ENAMETOOLONG, true, CFR_SNAP_MAILDIR_MESSAGE,
                                NULL);
            break;
        }
        struct stat st;
        int e = stat_at(s, dfd, subs[i], &st);
        if (e == 0 && S_ISDIR(st.st_mode)) {
            rc = descend(s, dfd, subs[i], depth + 1,
                         i == 0 ? walk_new : walk_cur);
        } else if (e == 0) {
            /* A file or a symlink named cur or new: as any other entry. */
            rc = generic_entry(s, dfd, subs[i], 3, depth, false);
        } else if (e != ENOENT) {
            /* The folder's messages are out of sight: a directory error,
             * keyed by the folder, so that none is taken for deleted. */
            rc = report_error(s, e, true, CFR_SNAP_MAILDIR_MESSAGE);
        }
        path_pop(s, base_len);
    }
    if (rc == 0 && s->vs.n > 0) {
        rc = resolve_vanished(s, dfd, AGENT_SCAN_REREAD_ROUNDS);
    }
    vset_clear(&s->vs);
    s->folder_fd = outer;
    return rc;
}

int
agent_scan_run(const char *root, const struct agent_scan_opts *opts,
               agent_scan_fn *fn, void *ctx, struct agent_scan_summary *sum_r,
               struct cfr_err *err)
{
    static const struct agent_scan_opts no_opts;
    struct agent_scan_summary dummy;
    struct scan *s = NULL;
    int fd = -1;
    int rc;
    if (sum_r == NULL) {
        sum_r = &dummy;
    }
    memset(sum_r, 0, sizeof(*sum_r));
    if ((s = cfr_calloc(1, sizeof(*s))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "scan: state");
        goto out;
    }
    s->opts = opts != NULL ? opts : &no_opts;
    s->fn = fn;
    s->ctx = ctx;
    s->sum = sum_r;
    s->err = err;
    s->max_depth =
        s->opts->max_depth != 0 ? s->opts->max_depth : AGENT_SCAN_DEPTH_DEFAULT;
    s->euid = geteuid();
    s->egid = getegid();
    s->check_mode = s->euid != 0;
    s->n_groups = getgroups(GROUPS_MAX, s->groups);
    if (s->n_groups < 0) {
        s->n_groups = 0; /* more than GROUPS_MAX: judged by owner/other */
    }
    fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                           "scan: open mailbox root");
        goto out;
    }
    s->sum->dirs++;
    s->folder_fd = fd;
    rc = walk_folder(s, fd, 0);
out:
    if (fd >= 0) {
        close(fd);
    }
    if (s != NULL) {
        cfr_free(s->vs.names);
        cfr_free(s->vs.slots);
        cfr_free(s);
    }
    return rc;
}
