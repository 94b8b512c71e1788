/*
 * restore.c - snapshot selection, manifest walk and safe file writing
 * (restore.h).
 *
 * Invariants:
 *  1. Nothing is written outside the target: every path comes from
 *     restore_path_of (checked components only, relative), directories are
 *     entered one component at a time with O_NOFOLLOW from their parent's
 *     descriptor, files are created O_EXCL|O_NOFOLLOW under a temporary
 *     name and renamed with RENAME_NOREPLACE. A symlink planted anywhere
 *     in the target is never followed, an existing file never replaced.
 *  2. No plaintext reaches a file before it was authenticated: chunks and
 *     pages are opened (env.c checks the tag, and for chunks re-hashes the
 *     plaintext against the chunk ID) before their bytes are written or
 *     parsed. A file becomes visible under its name only once it holds
 *     exactly the manifest's size; anything else leaves no file behind.
 *  3. The first error stops the whole restore (workers see it between
 *     batches, the walker between entries) and is the one reported, with
 *     its kind (enum restore_failure) for the exit code.
 *  4. Memory is bounded as restore.h states: the walker blocks when the
 *     file queue holds 2 * workers * RESTORE_GROUP_FILES files.
 *  5. A chunk copy that does not open is never written: the other vaults
 *     are asked for that ID (replace_chunk) and only a copy that opens is
 *     used; the damaged copy is recorded against the vault that served it.
 */
#define _GNU_SOURCE /* renameat2, RENAME_NOREPLACE, syncfs */

#include "restore.h"

#include <dirent.h>   /* fdopendir: is the target empty */
#include <errno.h>    /* EEXIST, EINTR */
#include <fcntl.h>    /* openat, O_NOFOLLOW */
#include <limits.h>   /* NAME_MAX */
#include <pthread.h>  /* workers */
#include <stdatomic.h>/* temporary name counter */
#include <stdio.h>    /* snprintf, renameat2 */
#include <stdlib.h>   /* qsort */
#include <string.h>   /* memchr, memcmp */
#include <strings.h>  /* strcasecmp: INBOX */
#include <sys/stat.h> /* mkdirat, futimens, fchmod */
#include <time.h>     /* gmtime_r: the live folder's date */
#include <unistd.h>   /* write, close, unlinkat, syncfs */

#include "buf.h"      /* cfr_hex_encode */
#include "dovecot.h"  /* restore_dovecot_finish */
#include "env.h"      /* cfr_opener, cfr_env_open */
#include "id.h"       /* cfr_id_equal */
#include "log.h"      /* cfr_log */
#include "manifest.h" /* restore_manifest */
#include "mbox.h"     /* --format mbox */
#include "mem.h"      /* cfr_malloc */
#include "select.h"   /* restore_pick_snapshot */

#define ID_LEN 32
/* Object kinds of coffer_vault.proto, without including the messages. */
#define KIND_SEALED 1

const char *
restore_failure_name(enum restore_failure f)
{
    switch (f) {
    case RESTORE_F_NONE:
        return "none";
    case RESTORE_F_VAULT:
        return "vault";
    case RESTORE_F_NOTFOUND:
        return "not-found";
    case RESTORE_F_VERIFY:
        return "verify";
    case RESTORE_F_UNSAFE:
        return "unsafe-path";
    case RESTORE_F_TARGET:
        return "target";
    case RESTORE_F_IO:
        return "io";
    case RESTORE_F_OTHER:
        break;
    }
    return "other";
}

/* ---- paths ------------------------------------------------------------ */

static int
component_check(const char *c, size_t n, const char *path, size_t len,
                struct cfr_err *err)
{
    char q[128];
    char shown[96];
    size_t k = len < sizeof(shown) - 1 ? len : sizeof(shown) - 1;
    memcpy(shown, path, k);
    shown[k] = '\0';
    for (size_t i = 0; i < k; i++) {
        if (shown[i] == '\0') {
            shown[i] = '?';
        }
    }
    cfr_log_quote(shown, q, sizeof(q));
    if (n == 0) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path %s: empty component", q);
    }
    if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path %s: \".\" or \"..\"", q);
    }
    if (n > NAME_MAX) {
        return CFR_ERR(err, CFR_EINVAL,
                       "unsafe path %s: a name longer than %d bytes", q,
                       NAME_MAX);
    }
    if (memchr(c, '\0', n) != NULL) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path %s: a NUL byte", q);
    }
    return 0;
}

int
restore_path_check(const char *path, size_t len, struct cfr_err *err)
{
    size_t start = 0;
    int rc;
    if (len == 0) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path: empty");
    }
    if (len >= RESTORE_PATH_MAX) {
        return CFR_ERR(err, CFR_EINVAL,
                       "unsafe path: %zu bytes, the limit is %d", len,
                       RESTORE_PATH_MAX - 1);
    }
    if (path[0] == '/') {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path: absolute");
    }
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if ((rc = component_check(path + start, i - start, path, len,
                                      err)) != 0) {
                return rc;
            }
            start = i + 1;
        }
    }
    return 0;
}

/* Appends n bytes to out at *at, keeping room for the NUL. */
static int
path_add(char *out, size_t out_size, size_t *at, const void *p, size_t n,
         struct cfr_err *err)
{
    if (n >= out_size - *at || *at + n >= RESTORE_PATH_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe path: longer than %d bytes",
                       RESTORE_PATH_MAX - 1);
    }
    memcpy(out + *at, p, n);
    *at += n;
    out[*at] = '\0';
    return 0;
}

int
restore_path_of(const struct cfr_snap_entry *e, char *out, size_t out_size,
                size_t *folder_len_r, struct cfr_err *err)
{
    const uint8_t *sep;
    const char *folder, *name;
    size_t folder_len, name_len, at = 0;
    int rc;

    if (out_size == 0) {
        return CFR_ERR(err, CFR_EINVAL, "restore_path_of: no room");
    }
    out[0] = '\0';
    sep = e->key_len > 0 ? memchr(e->key, '\0', e->key_len) : NULL;
    if (sep == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "unsafe entry: key without a folder");
    }
    folder = (const char *)e->key;
    folder_len = (size_t)(sep - e->key);
    name = (const char *)sep + 1;
    name_len = e->key_len - folder_len - 1;
    if (folder_len > 0) {
        /* Maildir++ folders are one level: ".Sent", ".Lists.dev". */
        if (folder[0] != '.' || memchr(folder, '/', folder_len) != NULL) {
            return CFR_ERR(err, CFR_EINVAL,
                           "unsafe entry: folder is not a Maildir++ name");
        }
        if ((rc = component_check(folder, folder_len, folder, folder_len,
                                  err)) != 0 ||
            (rc = path_add(out, out_size, &at, folder, folder_len, err)) != 0 ||
            (rc = path_add(out, out_size, &at, "/", 1, err)) != 0) {
            return rc;
        }
    }
    if (e->kind == CFR_SNAP_MAILDIR_MESSAGE) {
        const char *sub = e->in_new ? "new/" : "cur/";
        if (name_len == 0 || memchr(name, '/', name_len) != NULL ||
            (e->info_len > 0 && memchr(e->info, '/', e->info_len) != NULL)) {
            return CFR_ERR(err, CFR_EINVAL,
                           "unsafe entry: a message name holds '/'");
        }
        if ((rc = path_add(out, out_size, &at, sub, 4, err)) != 0 ||
            (rc = path_add(out, out_size, &at, name, name_len, err)) != 0 ||
            (rc = path_add(out, out_size, &at, e->info, e->info_len, err)) !=
                0) {
            return rc;
        }
    } else {
        /* Any other file: "/" and its path relative to the folder. */
        if (name_len < 2 || name[0] != '/') {
            return CFR_ERR(err, CFR_EINVAL,
                           "unsafe entry: a file name without its '/'");
        }
        if ((rc = path_add(out, out_size, &at, name + 1, name_len - 1, err)) !=
            0) {
            return rc;
        }
    }
    if (folder_len_r != NULL) {
        *folder_len_r = folder_len;
    }
    /* The whole path by the same rules as any path (NULs, "..", lengths). */
    return restore_path_check(out, at, err);
}

/* ---- directories and files ------------------------------------------- */

int
restore_open_dir(int root_fd, const char *rel, size_t len, int *fd_r,
                 struct cfr_err *err)
{
    int fd = -1, next;
    size_t start = 0;
    char comp[NAME_MAX + 1];
    int rc = 0;

    *fd_r = -1;
    if ((fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "target: dup");
    }
    for (size_t i = 0; i <= len && len > 0; i++) {
        size_t n;
        if (i < len && rel[i] != '/') {
            continue;
        }
        n = i - start;
        if (n == 0 || n > NAME_MAX) {
            rc = CFR_ERR(err, CFR_EINVAL, "unsafe path: bad component");
            goto out;
        }
        memcpy(comp, rel + start, n);
        comp[n] = '\0';
        start = i + 1;
        if (mkdirat(fd, comp, 0700) != 0 && errno != EEXIST) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: cannot create a folder");
            goto out;
        }
        next =
            openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            /* A symlink (ELOOP) or a file (ENOTDIR) where a folder goes. */
            rc = errno == ELOOP || errno == ENOTDIR
                     ? CFR_ERR_ERRNO(err, CFR_EDENIED,
                                     "target: not a plain directory: %.64s",
                                     comp)
                     : CFR_ERR_ERRNO(err, CFR_EIO,
                                     "target: cannot open a folder");
            goto out;
        }
        close(fd);
        fd = next;
    }
    *fd_r = fd;
    fd = -1;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

struct restore_file {
    int dir_fd;
    int fd;
    uint32_t mode;
    uint64_t written;
    char tmp[64];
    char leaf[NAME_MAX + 1];
};

static atomic_uint_fast64_t tmp_counter;

int
restore_file_begin(int root_fd, const char *rel, uint32_t mode,
                   struct restore_file **wf_r, struct cfr_err *err)
{
    struct restore_file *wf;
    const char *slash;
    size_t len = strlen(rel), dir_len, leaf_len;
    int rc;

    *wf_r = NULL;
    if ((rc = restore_path_check(rel, len, err)) != 0) {
        return rc;
    }
    if ((wf = cfr_calloc(1, sizeof(*wf))) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    wf->dir_fd = -1;
    wf->fd = -1;
    wf->mode = mode;
    slash = strrchr(rel, '/');
    dir_len = slash != NULL ? (size_t)(slash - rel) : 0;
    leaf_len = slash != NULL ? len - dir_len - 1 : len;
    memcpy(wf->leaf, rel + len - leaf_len, leaf_len);
    wf->leaf[leaf_len] = '\0';
    if ((rc = restore_open_dir(root_fd, rel, dir_len, &wf->dir_fd, err)) != 0) {
        goto out;
    }
    /* A fresh name, never an existing file or a link someone planted. */
    for (int tries = 0; tries < 16; tries++) {
        snprintf(wf->tmp, sizeof(wf->tmp), ".coffer-restore.%ld.%llu.tmp",
                 (long)getpid(),
                 (unsigned long long)atomic_fetch_add(&tmp_counter, 1));
        wf->fd =
            openat(wf->dir_fd, wf->tmp,
                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (wf->fd >= 0 || errno != EEXIST) {
            break;
        }
    }
    if (wf->fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: cannot create a file");
        wf->tmp[0] = '\0';
        goto out;
    }
out:
    if (rc != 0) {
        restore_file_abort(wf);
        wf = NULL;
    }
    *wf_r = wf;
    return rc;
}

int
restore_file_write(struct restore_file *wf, const void *p, size_t n,
                   struct cfr_err *err)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = write(wf->fd, q, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return CFR_ERR_ERRNO(err, CFR_EIO, "target: write failed");
        }
        q += k;
        n -= (size_t)k;
        wf->written += (uint64_t)k;
    }
    return 0;
}

void
restore_file_abort(struct restore_file *wf)
{
    if (wf == NULL) {
        return;
    }
    if (wf->fd >= 0) {
        close(wf->fd);
    }
    if (wf->dir_fd >= 0) {
        if (wf->tmp[0] != '\0') {
            (void)unlinkat(wf->dir_fd, wf->tmp, 0);
        }
        close(wf->dir_fd);
    }
    cfr_free(wf);
}

int
restore_file_commit(struct restore_file *wf, uint64_t size, int64_t mtime_ns,
                    struct cfr_err *err)
{
    struct timespec ts[2];
    mode_t perm;
    int rc = 0, fd;

    if (wf == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "restore_file_commit: no file");
    }
    perm = (mode_t)(wf->mode & 0777);
    fd = wf->fd;

    if (wf->written != size) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "%.64s: %llu bytes restored, the manifest says %llu",
                     wf->leaf, (unsigned long long)wf->written,
                     (unsigned long long)size);
        goto out;
    }
    /* Mail files are the user's only: a manifest without bits gets 0600. */
    if (perm == 0) {
        perm = 0600;
    }
    ts[0].tv_sec = (time_t)(mtime_ns / 1000000000);
    ts[0].tv_nsec = (long)(mtime_ns % 1000000000);
    if (ts[0].tv_nsec < 0) {
        ts[0].tv_sec -= 1;
        ts[0].tv_nsec += 1000000000;
    }
    ts[1] = ts[0];
    if (fchmod(fd, perm) != 0 || futimens(fd, ts) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: cannot set mode or mtime");
        goto out;
    }
    wf->fd = -1;
    if (close(fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: write failed (close)");
        goto out;
    }
    if (renameat2(wf->dir_fd, wf->tmp, wf->dir_fd, wf->leaf,
                  RENAME_NOREPLACE) != 0) {
        char q[80];
        rc = errno == EEXIST
                 ? CFR_ERR(err, CFR_EEXIST,
                           "target: %s exists already; nothing is replaced",
                           cfr_log_quote(wf->leaf, q, sizeof(q)))
                 : CFR_ERR_ERRNO(err, CFR_EIO, "target: rename failed");
        goto out;
    }
    wf->tmp[0] = '\0';
out:
    restore_file_abort(wf);
    return rc;
}

/* ---- snapshots -------------------------------------------------------- */

/* Opens and decodes a sealed header; 0 or why not. */
static int
header_open(struct cfr_opener *op, const uint8_t id[ID_LEN], const uint8_t *env,
            size_t len, struct cfr_snap_header *h, struct cfr_err *err)
{
    struct cfr_buf plain;
    int rc;
    cfr_buf_init(&plain, CFR_SNAP_HEADER_MAX);
    if ((rc = cfr_env_open(op, CFR_ENV_SNAPSHOT_HEADER, id, env, len,
                           CFR_SNAP_HEADER_MAX, &plain, err)) == 0) {
        rc = cfr_snap_header_decode(plain.data, plain.len, h, err);
    }
    cfr_buf_fini(&plain);
    return rc;
}

static int
snap_cmp(const void *a, const void *b)
{
    const struct restore_snapshot *x = a, *y = b;
    if (x->received_ms != y->received_ms) {
        return x->received_ms > y->received_ms ? -1 : 1; /* newest first */
    }
    return memcmp(x->header_id, y->header_id, ID_LEN);
}

int
restore_list(struct restore_fetcher *f, const struct cfr_keyring *kr,
             const char *mailbox, struct restore_snapshot **v_r, size_t *n_r,
             struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsResponse *resp = NULL;
    struct restore_snapshot *v = NULL;
    struct cfr_opener *op = NULL;
    uint8_t mid[ID_LEN];
    size_t n = 0;
    int rc;

    *v_r = NULL;
    *n_r = 0;
    if (mailbox != NULL) {
        cfr_keyring_name_id(kr, mailbox, strlen(mailbox), mid);
    }
    if ((op = cfr_opener_new(kr, err)) == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EINVAL;
        goto out;
    }
    if ((rc = restore_fetcher_list(f, mailbox != NULL ? mid : NULL, true, &resp,
                                   err)) != 0) {
        goto out;
    }
    if ((v = cfr_calloc(resp->n_snapshots + 1, sizeof(*v))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
        goto out;
    }
    for (size_t i = 0; i < resp->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *r = resp->snapshots[i];
        struct restore_snapshot *s = &v[n];
        struct cfr_err e;
        if (mailbox != NULL && memcmp(r->mailbox_id.data, mid, ID_LEN) != 0) {
            continue; /* not asked for: a vault's mistake, not ours */
        }
        memcpy(s->header_id, r->header_id.data, ID_LEN);
        memcpy(s->mailbox_id, r->mailbox_id.data, ID_LEN);
        s->received_ms = r->received_ms;
        s->flags = r->flags;
        s->held = r->held;
        cfr_err_clear(&e);
        s->open_rc = header_open(op, s->header_id, r->header.data,
                                 r->header.len, &s->h, &e);
        if (s->open_rc == 0) {
            /* The header is authentic; the record around it is the
             * vault's. Both must name the same mailbox. */
            uint8_t named[ID_LEN];
            cfr_keyring_name_id(kr, s->h.mailbox, strlen(s->h.mailbox), named);
            if (!cfr_id_equal(named, s->mailbox_id) ||
                (mailbox != NULL && strcmp(s->h.mailbox, mailbox) != 0)) {
                s->open_rc = CFR_ECORRUPT;
            }
        }
        if (s->open_rc != 0) {
            char hex[2 * ID_LEN + 1];
            memset(&s->h, 0, sizeof(s->h));
            cfr_log(CFR_LOG_WARN, "restore.header_bad", "header=%s code=%s",
                    cfr_hex_encode(s->header_id, ID_LEN, hex),
                    cfr_code_name(s->open_rc));
        }
        n++;
    }
    qsort(v, n, sizeof(*v), snap_cmp);
    *v_r = v;
    *n_r = n;
    v = NULL;
out:
    cfr_free(v);
    cfr_opener_free(op);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return rc;
}

/* ---- the restore run -------------------------------------------------- */

/* One file for a worker: everything copied out of the manifest page. */
struct job {
    char path[RESTORE_PATH_MAX];
    uint32_t mode;
    uint64_t size;
    int64_t mtime_ns;
    uint8_t *chunk_ids; /* owned */
    size_t n_chunks;
    bool message; /* a Maildir message (counted as one) */
    struct job *next;
};

struct run {
    struct restore_fetcher *f;
    const struct cfr_keyring *kr;
    struct restore_opts o;
    int root_fd;

    pthread_mutex_t mu;
    pthread_cond_t cv_job;   /* a job was queued, or the end */
    pthread_cond_t cv_space; /* a job was taken */
    struct job *head, *tail;
    size_t queued, queue_max;
    size_t queued_ids; /* chunk IDs of the queued files */
    bool done;         /* no more jobs will come */
    bool failed;       /* stop everything */
    int fail_rc;
    enum restore_failure fail_kind;
    struct cfr_err fail_err;
    struct restore_stats *st;

    /* What is selected (restore_select), checked and normalised. */
    const struct restore_selection *sel;
    bool have_folder;
    char folder[NAME_MAX + 1]; /* the only folder restored */
    const char *id_p[RESTORE_MSGIDS_MAX];
    size_t id_len[RESTORE_MSGIDS_MAX];
    size_t n_ids;
    const char *live; /* into_live: the new folder (".Restored-..."), or NULL */
    /* Output folders laid out, in order (for Dovecot and mbox). */
    char **folders;
    size_t n_folders, cap_folders;

    /* Progress, serialised by pmu. */
    pthread_mutex_t pmu;
    struct restore_progress prog;
};

static void
run_fail(struct run *r, int rc, enum restore_failure kind,
         const struct cfr_err *e)
{
    pthread_mutex_lock(&r->mu);
    if (!r->failed) {
        r->failed = true;
        r->fail_rc = rc;
        r->fail_kind = kind;
        if (e != NULL) {
            r->fail_err = *e;
        }
        pthread_cond_broadcast(&r->cv_job);
        pthread_cond_broadcast(&r->cv_space);
    }
    pthread_mutex_unlock(&r->mu);
}

static bool
run_failed(struct run *r)
{
    bool b;
    pthread_mutex_lock(&r->mu);
    b = r->failed;
    pthread_mutex_unlock(&r->mu);
    return b;
}

static void
job_free(struct job *j)
{
    if (j != NULL) {
        cfr_free(j->chunk_ids);
        cfr_free(j);
    }
}

/* What went wrong while fetching, for the exit code. */
static enum restore_failure
fetch_kind(int rc)
{
    switch (rc) {
    case CFR_ENOTFOUND:
    case CFR_ECORRUPT:
    case CFR_EVERSION:
        return RESTORE_F_VERIFY;
    case CFR_ENOMEM:
        return RESTORE_F_OTHER;
    default:
        return RESTORE_F_VAULT;
    }
}

/* A chunk that arrived before its turn. */
struct stashed {
    uint8_t id[ID_LEN];
    uint8_t *data;
    size_t len;
};

/*
 * A worker fetches a group of consecutive queued files with one ID list:
 * most messages are one to three chunks, and a GetObjects call per file
 * made the call overhead (thread hand-offs on both sides) the largest
 * cost of a restore (bench/RESULTS.md, "Restore"). The list is fetched in
 * windows (window_end) and written in order: a file is begun at its
 * first chunk and committed after its last, so a file is still only
 * visible once complete and checked.
 */
struct worker {
    struct run *r;
    pthread_t tid;
    bool started;
    struct cfr_opener *op;
    struct cfr_buf plain;
    struct restore_file *wf;
    /* the group */
    struct job *g[RESTORE_GROUP_FILES];
    size_t end[RESTORE_GROUP_FILES]; /* one past file i's chunks in ids */
    size_t n_g, fi;                  /* files; the one being written */
    uint8_t *flat;                   /* the IDs of a group of several files */
    const uint8_t *ids;              /* the group's IDs (flat or one job's) */
    size_t n_ids, done;              /* IDs; the next one to write */
    /* the current window: ids[base, base + n) */
    size_t base, n;
    struct stashed *stash;
    size_t n_stash, stash_bytes;
    bool open_failed;
    bool have_kind; /* a file operation failed inside the callback */
    enum restore_failure kind;
    uint64_t chunks, files, bytes, messages, replaced;
};

static int
file_fail(struct worker *w, int rc, enum restore_failure kind)
{
    if (!w->have_kind) {
        w->have_kind = true;
        w->kind = kind;
    }
    return rc;
}

static int
file_begin(struct worker *w, struct cfr_err *err)
{
    const struct job *j = w->g[w->fi];
    int rc = restore_file_begin(w->r->root_fd, j->path, j->mode, &w->wf, err);
    if (rc != 0) {
        return file_fail(w, rc,
                         rc == CFR_EDENIED || rc == CFR_EINVAL
                             ? RESTORE_F_UNSAFE
                             : RESTORE_F_IO);
    }
    return 0;
}

static int
file_commit(struct worker *w, struct cfr_err *err)
{
    const struct job *j = w->g[w->fi];
    int rc = restore_file_commit(w->wf, j->size, j->mtime_ns, err);
    w->wf = NULL;
    if (rc != 0) {
        return file_fail(w, rc,
                         rc == CFR_ECORRUPT ? RESTORE_F_VERIFY
                         : rc == CFR_EEXIST ? RESTORE_F_TARGET
                                            : RESTORE_F_IO);
    }
    w->files++;
    w->bytes += j->size;
    w->messages += j->message ? 1 : 0;
    if (w->r->o.progress != NULL) {
        pthread_mutex_lock(&w->r->pmu);
        w->r->prog.files++;
        w->r->prog.bytes += j->size;
        w->r->o.progress(w->r->o.progress_ctx, &w->r->prog);
        pthread_mutex_unlock(&w->r->pmu);
    }
    return 0;
}

/* Commits every file whose chunks are all written (empty ones too). */
static int
settle(struct worker *w, struct cfr_err *err)
{
    int rc = 0;
    while (rc == 0 && w->fi < w->n_g && w->done == w->end[w->fi]) {
        if (w->wf == NULL && (rc = file_begin(w, err)) != 0) {
            break;
        }
        rc = file_commit(w, err);
        w->fi++;
    }
    return rc;
}

static int
write_next(struct worker *w, const uint8_t *p, size_t len, struct cfr_err *err)
{
    int rc;
    CFR_ASSERT(w->fi < w->n_g);
    if (w->wf == NULL && (rc = file_begin(w, err)) != 0) {
        return rc;
    }
    if ((rc = restore_file_write(w->wf, p, len, err)) != 0) {
        return file_fail(w, rc, RESTORE_F_IO);
    }
    w->done++;
    return settle(w, err);
}

/* Writes stashed chunks whose turn has come. */
static int
drain(struct worker *w, struct cfr_err *err)
{
    bool moved = true;
    int rc = 0;
    while (moved && w->done < w->base + w->n && rc == 0) {
        moved = false;
        for (size_t i = 0; i < w->n_stash; i++) {
            struct stashed *s = &w->stash[i];
            if (memcmp(s->id, w->ids + w->done * ID_LEN, ID_LEN) == 0) {
                rc = write_next(w, s->data, s->len, err);
                w->stash_bytes -= s->len;
                cfr_free(s->data);
                *s = w->stash[--w->n_stash];
                moved = true;
                break;
            }
        }
    }
    return rc;
}

/* Opens one chunk copy into w->plain: the envelope authenticates it and
 * re-hashes the plaintext against its ID. */
static int
chunk_open(struct worker *w, const uint8_t *id, int kind, const uint8_t *data,
           size_t len, struct cfr_err *err)
{
    if (kind != KIND_SEALED) {
        return CFR_ERR(err, CFR_ECORRUPT, "a chunk came as a clear page");
    }
    return cfr_env_open(w->op, CFR_ENV_CHUNK, id, data, len, CFR_ENV_PLAIN_MAX,
                        &w->plain, err);
}

/* One replacement copy asked of the other vaults. */
struct repl {
    struct worker *w;
    size_t vault; /* the one that served it */
    int rc;       /* chunk_open's */
    struct cfr_err e;
};

static int
repl_cb(void *ctx, size_t vault, const uint8_t *id, int kind,
        const uint8_t *data, size_t len, struct cfr_err *err)
{
    struct repl *p = ctx;
    p->vault = vault;
    cfr_err_clear(&p->e);
    p->rc = chunk_open(p->w, id, kind, data, len, &p->e);
    (void)err;
    return 0; /* judged by the caller: the stream is one object long */
}

/*
 * The copy of id that vault `bad` served did not open: records it and
 * asks every other vault in turn (each one that serves a bad copy is
 * recorded and excluded too) until one copy opens into w->plain. 0 then;
 * otherwise the error of the first bad copy (first_rc, err), as before.
 */
static int
replace_chunk(struct worker *w, size_t bad, const uint8_t *id, int first_rc,
              struct cfr_err *err)
{
    struct restore_fetcher *f = w->r->f;
    unsigned exclude = 1u << bad;
    (void)err; /* the first bad copy's error stays there */
    restore_fetcher_damaged(f, bad, id, first_rc);
    for (size_t t = 0; t < RESTORE_FETCH_VAULTS_MAX; t++) {
        struct repl p;
        struct cfr_err e;
        int rc;
        memset(&p, 0, sizeof(p));
        p.w = w;
        p.vault = RESTORE_FETCH_VAULTS_MAX;
        p.rc = CFR_ENOTFOUND;
        cfr_err_clear(&e);
        rc = restore_fetcher_get_from(f, id, 1, exclude, repl_cb, &p, &e);
        if (rc != 0 || p.vault >= RESTORE_FETCH_VAULTS_MAX) {
            break; /* no other vault has it, or none answers */
        }
        if (p.rc == 0) {
            struct restore_vault_info vi;
            char hex[2 * ID_LEN + 1];
            (void)restore_fetcher_vault_info(f, p.vault, &vi);
            cfr_log(CFR_LOG_WARN, "restore.chunk_replaced", "id=%.16s from=%s",
                    cfr_hex_encode(id, ID_LEN, hex),
                    vi.target != NULL ? vi.target : "?");
            w->replaced++;
            return 0;
        }
        restore_fetcher_damaged(f, p.vault, id, p.rc);
        exclude |= 1u << p.vault;
    }
    return first_rc;
}

static int
chunk_cb(void *ctx, size_t vault, const uint8_t *id, int kind,
         const uint8_t *data, size_t len, struct cfr_err *err)
{
    struct worker *w = ctx;
    int rc;
    if ((rc = chunk_open(w, id, kind, data, len, err)) != 0) {
        char hex[2 * ID_LEN + 1];
        struct cfr_err e = *err;
        /* Damaged on this replica; another may hold a good copy. */
        if (replace_chunk(w, vault, id, rc, err) != 0) {
            w->open_failed = true;
            return CFR_ERR(err, rc,
                           "chunk %s does not open: %s (no vault holds a "
                           "good copy)",
                           cfr_hex_encode(id, ID_LEN, hex), e.msg);
        }
    }
    w->chunks++;
    if (w->done < w->base + w->n &&
        memcmp(id, w->ids + w->done * ID_LEN, ID_LEN) == 0) {
        if ((rc = write_next(w, w->plain.data, w->plain.len, err)) != 0) {
            return rc;
        }
        return drain(w, err);
    }
    /* Early: keep it for its turn, within a bound. */
    if (w->stash_bytes + w->plain.len > RESTORE_STASH_MAX) {
        return CFR_ERR(err, CFR_ELIMIT,
                       "vault sends chunks far out of order (over %zu bytes)",
                       RESTORE_STASH_MAX);
    }
    {
        struct stashed *s = &w->stash[w->n_stash];
        s->data = cfr_malloc(w->plain.len + 1);
        if (s->data == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
        }
        memcpy(s->id, id, ID_LEN);
        if (w->plain.len > 0) {
            memcpy(s->data, w->plain.data, w->plain.len);
        }
        s->len = w->plain.len;
        w->stash_bytes += s->len;
        w->n_stash++;
    }
    return 0;
}

static void
stash_clear(struct worker *w)
{
    for (size_t i = 0; i < w->n_stash; i++) {
        cfr_free(w->stash[i].data);
    }
    w->n_stash = 0;
    w->stash_bytes = 0;
}

/* Window end: at most batch IDs, none twice (fetch.h asks for that). */
static size_t
window_end(const uint8_t *ids, size_t from, size_t n, size_t batch)
{
    size_t end = from;
    while (end < n && end - from < batch) {
        for (size_t k = from; k < end; k++) {
            if (memcmp(ids + k * ID_LEN, ids + end * ID_LEN, ID_LEN) == 0) {
                return end;
            }
        }
        end++;
    }
    return end;
}

/* Lays out w->g[0..n_g) as one ID list (w->ids, w->end). */
static void
group_ids(struct worker *w)
{
    size_t at = 0;
    if (w->n_g == 1) {
        w->ids = w->g[0]->chunk_ids; /* may be longer than a batch */
    } else {
        for (size_t i = 0; i < w->n_g; i++) {
            const struct job *j = w->g[i];
            if (j->n_chunks > 0) {
                memcpy(w->flat + at * ID_LEN, j->chunk_ids,
                       j->n_chunks * ID_LEN);
            }
            at += j->n_chunks;
            w->end[i] = at;
        }
        w->ids = w->flat;
        w->n_ids = at;
        return;
    }
    w->n_ids = w->end[0] = w->g[0]->n_chunks;
}

static int
write_group(struct worker *w, enum restore_failure *kind_r, struct cfr_err *err)
{
    int rc;
    w->fi = 0;
    w->done = 0;
    w->have_kind = false;
    group_ids(w);
    if ((rc = settle(w, err)) != 0) {
        goto out;
    }
    for (size_t from = 0; from < w->n_ids;) {
        size_t end = window_end(w->ids, from, w->n_ids, w->r->o.batch_ids);
        if (run_failed(w->r)) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "stopped");
            goto out;
        }
        w->base = from;
        w->n = end - from;
        w->open_failed = false;
        rc = restore_fetcher_get_from(w->r->f, w->ids + from * ID_LEN, w->n, 0,
                                      chunk_cb, w, err);
        stash_clear(w);
        if (rc != 0) {
            goto out;
        }
        if (w->done != end) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "restore: %zu of %zu chunks",
                         w->done - from, w->n);
            *kind_r = RESTORE_F_OTHER;
            goto out_kind;
        }
        from = end;
    }
    if (w->fi != w->n_g) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "restore: %zu of %zu files", w->fi,
                     w->n_g);
        *kind_r = RESTORE_F_OTHER;
        goto out_kind;
    }
out:
    if (rc != 0) {
        if (w->have_kind) {
            *kind_r = w->kind;
        } else if (rc == CFR_EIO) {
            *kind_r = RESTORE_F_IO;
        } else {
            *kind_r = w->open_failed ? RESTORE_F_VERIFY : fetch_kind(rc);
        }
    }
out_kind:
    restore_file_abort(w->wf);
    w->wf = NULL;
    return rc;
}

/* Takes the next group of queued files (under r->mu): the head, then
 * followers while they fit one batch of IDs and RESTORE_GROUP_FILES. */
static void
take_group(struct worker *w)
{
    struct run *r = w->r;
    size_t ids = 0;
    w->n_g = 0;
    while (r->head != NULL && w->n_g < RESTORE_GROUP_FILES) {
        struct job *j = r->head;
        if (w->n_g > 0 && ids + j->n_chunks > r->o.batch_ids) {
            break;
        }
        r->head = j->next;
        if (r->head == NULL) {
            r->tail = NULL;
        }
        r->queued--;
        r->queued_ids -= j->n_chunks;
        w->g[w->n_g++] = j;
        ids += j->n_chunks;
        if (ids > r->o.batch_ids) {
            break; /* a big file alone: its own list, in windows */
        }
    }
    pthread_cond_broadcast(&r->cv_space);
}

/*
 * Under r->mu: whether a worker should take a group now. While the walk
 * goes on it waits for a full one (RESTORE_GROUP_FILES files or a batch
 * of IDs): taking whatever one push left made groups of a few files and
 * a call each (bench/RESULTS.md). The walk's end, a full queue or a
 * failure always let it go, so a wait never outlasts the walk.
 */
static bool
group_ready(const struct run *r)
{
    return r->failed || r->done || r->queued >= RESTORE_GROUP_FILES ||
           r->queued_ids >= r->o.batch_ids || r->queued >= r->queue_max;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    for (;;) {
        struct cfr_err e;
        enum restore_failure kind = RESTORE_F_OTHER;
        int rc;
        pthread_mutex_lock(&r->mu);
        while (!group_ready(r)) {
            pthread_cond_wait(&r->cv_job, &r->mu);
        }
        if (r->failed || r->head == NULL) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        take_group(w);
        pthread_mutex_unlock(&r->mu);
        cfr_err_clear(&e);
        rc = write_group(w, &kind, &e);
        if (rc != 0 && rc != CFR_EINTERNAL) {
            run_fail(r, rc, kind, &e);
        } else if (rc == CFR_EINTERNAL && !run_failed(r)) {
            run_fail(r, rc, RESTORE_F_OTHER, &e);
        }
        for (size_t i = 0; i < w->n_g; i++) {
            job_free(w->g[i]);
        }
        w->n_g = 0;
        if (rc != 0) {
            break;
        }
    }
    return NULL;
}

/* Queues j (taken), blocking while the queue is full. */
static int
push_job(struct run *r, struct job *j)
{
    CFR_ASSERT(j != NULL);
    pthread_mutex_lock(&r->mu);
    while (r->queued >= r->queue_max && !r->failed) {
        pthread_cond_wait(&r->cv_space, &r->mu);
    }
    if (r->failed) {
        pthread_mutex_unlock(&r->mu);
        job_free(j);
        return -1;
    }
    j->next = NULL;
    if (r->tail != NULL) {
        r->tail->next = j;
    } else {
        r->head = j;
    }
    r->tail = j;
    r->queued++;
    r->queued_ids += j->n_chunks;
    pthread_cond_signal(&r->cv_job);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* Opens dir (creating it), checks it is empty unless allowed. */
static int
target_open(const char *dir, bool into_nonempty, int *fd_r, struct cfr_err *err)
{
    DIR *d = NULL;
    int fd = -1, dfd = -1, rc = 0;
    char q[128];

    *fd_r = -1;
    cfr_log_quote(dir, q, sizeof(q));
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "target %s: cannot create", q);
    }
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "target %s: not a directory", q);
    }
    if (!into_nonempty) {
        struct dirent *de;
        if ((dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 ||
            (d = fdopendir(dfd)) == NULL) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "target %s: cannot read", q);
            goto out;
        }
        dfd = -1;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                rc = CFR_ERR(err, CFR_EEXIST,
                             "target %s is not empty (restore into an empty "
                             "or new directory)",
                             q);
                goto out;
            }
        }
    }
    *fd_r = fd;
    fd = -1;
out:
    if (d != NULL) {
        closedir(d);
    }
    if (dfd >= 0) {
        close(dfd);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* cur/ new/ tmp/ of a folder ("" = the root: INBOX). */
static int
maildir_layout(int root_fd, const char *folder, size_t len, struct cfr_err *err)
{
    static const char *const subs[] = {"cur", "new", "tmp"};
    char p[NAME_MAX + 8];
    int rc = 0;
    for (size_t i = 0; i < 3 && rc == 0; i++) {
        int fd = -1;
        int k = len > 0 ? snprintf(p, sizeof(p), "%.*s/%s", (int)len, folder,
                                   subs[i])
                        : snprintf(p, sizeof(p), "%s", subs[i]);
        if (k < 0 || (size_t)k >= sizeof(p)) {
            return CFR_ERR(err, CFR_EINVAL, "unsafe path: folder too long");
        }
        rc = restore_open_dir(root_fd, p, (size_t)k, &fd, err);
        if (fd >= 0) {
            close(fd);
        }
    }
    return rc;
}

/* ---- selection ---------------------------------------------------------- */

int
restore_folder_normalize(const char *in, char *out, size_t out_size,
                         struct cfr_err *err)
{
    size_t n = strlen(in), at = 0;
    char q[96];

    cfr_log_quote(in, q, sizeof(q));
    if (n == 0) {
        return CFR_ERR(err, CFR_EINVAL, "--folder: empty");
    }
    if (strcasecmp(in, "INBOX") == 0) {
        out[0] = '\0';
        return 0;
    }
    if (n + 2 > out_size || n + 1 > NAME_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "--folder %s: too long", q);
    }
    if (in[0] != '.') {
        out[at++] = '.';
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '/') {
            if (in[0] == '.') {
                return CFR_ERR(err, CFR_EINVAL,
                               "--folder %s: a Maildir++ name holds no '/'", q);
            }
            c = '.';
        }
        out[at++] = c;
    }
    out[at] = '\0';
    /* ".", "..", "a//b", "a/", "/a": empty or dot-only components. */
    if (strcmp(out, ".") == 0 || strcmp(out, "..") == 0 ||
        strstr(out + 1, "..") != NULL || out[at - 1] == '.' ||
        (at > 1 && out[1] == '.')) {
        return CFR_ERR(err, CFR_EINVAL,
                       "--folder %s: an empty folder name or component", q);
    }
    return 0;
}

int
restore_mailbox_dir_name(const char *mailbox, char *out, size_t out_size,
                         struct cfr_err *err)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t at = 0;
    if (mailbox[0] == '\0') {
        return CFR_ERR(err, CFR_EINVAL, "an empty mailbox name");
    }
    for (const unsigned char *p = (const unsigned char *)mailbox; *p != '\0';
         p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '@' || *p == '_' ||
                     *p == '+' || *p == '-' || (*p == '.' && at > 0);
        size_t need = plain ? 1 : 3;
        if (at + need >= out_size || at + need > NAME_MAX) {
            char q[96];
            return CFR_ERR(err, CFR_EINVAL,
                           "mailbox %s: too long for a folder name",
                           cfr_log_quote(mailbox, q, sizeof(q)));
        }
        if (plain) {
            out[at++] = (char)*p;
        } else {
            out[at++] = '%';
            out[at++] = hexd[*p >> 4];
            out[at++] = hexd[*p & 15];
        }
    }
    out[at] = '\0';
    return 0;
}

/* A Message-ID without blanks and angle brackets around it. */
static void
msgid_core(const char *p, size_t n, const char **c_r, size_t *n_r)
{
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
        n--;
    }
    if (n >= 2 && p[0] == '<' && p[n - 1] == '>') {
        p++;
        n -= 2;
    }
    *c_r = p;
    *n_r = n;
}

/* Whether e is restored; marks the Message-IDs it matches. */
static bool
selected(struct run *r, const struct cfr_snap_entry *e, size_t flen)
{
    bool message = e->kind == CFR_SNAP_MAILDIR_MESSAGE;
    if (r->have_folder &&
        (flen != strlen(r->folder) || memcmp(e->key, r->folder, flen) != 0)) {
        return false;
    }
    if (r->n_ids > 0) {
        const char *c;
        size_t n;
        bool hit = false;
        if (!message) {
            return false;
        }
        msgid_core((const char *)e->message_id, e->message_id_len, &c, &n);
        for (size_t i = 0; i < r->n_ids; i++) {
            if (n == r->id_len[i] && n > 0 && memcmp(c, r->id_p[i], n) == 0) {
                r->st->id_found[i] = true;
                hit = true;
            }
        }
        return hit;
    }
    if (r->have_folder || r->live != NULL) {
        /* A folder, or a new folder in a live store: its messages and the
         * Dovecot files that describe them (restore_dovecot_finish then
         * keeps the restored messages' UIDs, UIDVALIDITY and keyword
         * names); the rest belongs to the mailbox or the store. */
        static const char *const keep[] = {"/dovecot-uidlist",
                                           "/dovecot-keywords"};
        size_t nl = e->key_len - flen - 1;
        const uint8_t *name = e->key + flen + 1;
        if (message) {
            return true;
        }
        for (size_t i = 0; i < 2; i++) {
            if (nl == strlen(keep[i]) && memcmp(name, keep[i], nl) == 0) {
                return true;
            }
        }
        return false;
    }
    if (r->sel->format == RESTORE_FORMAT_MBOX) {
        /* Messages, and keyword names for X-Keywords. */
        size_t nl = e->key_len - flen - 1;
        return message || (nl == 17 && memcmp(e->key + flen + 1,
                                              "/dovecot-keywords", 17) == 0);
    }
    return true;
}

static int
folders_add(struct run *r, const char *name, size_t n, struct cfr_err *err)
{
    char *c;
    if (r->n_folders == r->cap_folders) {
        size_t cap = r->cap_folders == 0 ? 16 : 2 * r->cap_folders;
        char **v = cfr_realloc(r->folders, cap * sizeof(*v));
        if (v == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
        }
        r->folders = v;
        r->cap_folders = cap;
    }
    if ((c = cfr_malloc(n + 1)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    memcpy(c, name, n);
    c[n] = '\0';
    r->folders[r->n_folders++] = c;
    r->st->folders++;
    return 0;
}

static void
folders_free(struct run *r)
{
    for (size_t i = 0; i < r->n_folders; i++) {
        cfr_free(r->folders[i]);
    }
    cfr_free(r->folders);
    r->folders = NULL;
    r->n_folders = r->cap_folders = 0;
}

/* Lays out an output folder: cur/ new/ tmp/, and in a live store the
 * maildirfolder file that marks a Maildir++ folder. */
static int
folder_layout(struct run *r, const char *name, size_t n, struct cfr_err *err)
{
    int rc;
    if ((rc = maildir_layout(r->root_fd, name, n, err)) != 0) {
        return rc;
    }
    if (r->live != NULL) {
        struct restore_file *wf = NULL;
        char rel[NAME_MAX + 16];
        struct timespec now;
        int k = snprintf(rel, sizeof(rel), "%.*s/maildirfolder", (int)n, name);
        if (k < 0 || (size_t)k >= sizeof(rel)) {
            return CFR_ERR(err, CFR_EINVAL, "unsafe path: folder too long");
        }
        clock_gettime(CLOCK_REALTIME, &now);
        if ((rc = restore_file_begin(r->root_fd, rel, 0600, &wf, err)) != 0 ||
            (rc = restore_file_commit(
                 wf, 0, (int64_t)now.tv_sec * 1000000000 + now.tv_nsec, err)) !=
                0) {
            return rc;
        }
    }
    return folders_add(r, name, n, err);
}

/*
 * The job for e, its path mapped into the output tree (a live store's
 * new folder), and the output folder's name into out_folder.
 */
static int
job_of(struct run *r, const struct cfr_snap_entry *e, struct job **j_r,
       char *out_folder, size_t *out_len_r, struct cfr_err *err)
{
    struct job *j = cfr_calloc(1, sizeof(*j));
    size_t flen = 0;
    int rc;
    *j_r = NULL;
    if (j == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    if ((rc = restore_path_of(e, j->path, sizeof(j->path), &flen, err)) != 0) {
        cfr_free(j);
        return rc;
    }
    memcpy(out_folder, e->key, flen);
    out_folder[flen] = '\0';
    *out_len_r = flen;
    if (r->live != NULL) {
        /* "" -> ".Restored-X", ".Sent" -> ".Restored-X.Sent". */
        char mapped[RESTORE_PATH_MAX];
        const char *rest = j->path + (flen > 0 ? flen + 1 : 0);
        int k = snprintf(mapped, sizeof(mapped), "%s%s/%s", r->live, out_folder,
                         rest);
        size_t ol = strlen(r->live) + flen;
        if (k < 0 || (size_t)k >= sizeof(mapped) || ol > NAME_MAX ||
            (rc = restore_path_check(mapped, (size_t)k, err)) != 0) {
            cfr_free(j);
            return rc != 0 ? rc
                           : CFR_ERR(err, CFR_EINVAL,
                                     "unsafe path: too long in the new "
                                     "folder");
        }
        memcpy(j->path, mapped, (size_t)k + 1);
        memmove(out_folder + strlen(r->live), out_folder, flen + 1);
        memcpy(out_folder, r->live, strlen(r->live));
        *out_len_r = ol;
    }
    j->mode = e->mode;
    j->size = e->size;
    j->mtime_ns = e->mtime_ns;
    j->n_chunks = e->n_chunks;
    j->message = e->kind == CFR_SNAP_MAILDIR_MESSAGE;
    j->chunk_ids = cfr_malloc(e->n_chunks * ID_LEN + 1);
    if (j->chunk_ids == NULL) {
        cfr_free(j);
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    if (e->n_chunks > 0) {
        memcpy(j->chunk_ids, e->chunk_ids, e->n_chunks * ID_LEN);
    }
    *j_r = j;
    return 0;
}

/* Walks the manifest, lays out folders, queues the selected files. */
static void
walk(struct run *r, const struct cfr_snap_header *h)
{
    struct restore_manifest *mr = NULL;
    struct cfr_snap_entry e;
    struct cfr_err err;
    char folder[NAME_MAX + 1];
    size_t folder_len = 0;
    int rc;

    cfr_err_clear(&err);
    /* The top folder always: DIR is a Maildir++ root (or the live
     * store's new folder is a complete one) whatever is selected. */
    folder_len = r->live != NULL ? strlen(r->live) : 0;
    memcpy(folder, r->live != NULL ? r->live : "", folder_len + 1);
    if ((rc = folder_layout(r, folder, folder_len, &err)) != 0) {
        run_fail(r, rc, rc == CFR_EDENIED ? RESTORE_F_UNSAFE : RESTORE_F_IO,
                 &err);
        goto out;
    }
    if ((rc = restore_manifest_open(r->f, r->kr, h, &mr, &err)) != 0) {
        run_fail(r, rc, RESTORE_F_OTHER, &err);
        goto out;
    }
    while (!run_failed(r)) {
        struct job *j = NULL;
        char of[NAME_MAX + 1];
        const uint8_t *sep;
        size_t ol = 0;
        rc = restore_manifest_next(mr, &e, &err);
        if (rc == 0) {
            break;
        }
        if (rc < 0) {
            run_fail(r, rc,
                     restore_manifest_damaged(mr, rc) ? RESTORE_F_VERIFY
                                                      : fetch_kind(rc),
                     &err);
            break;
        }
        sep = e.key_len > 0 ? memchr(e.key, '\0', e.key_len) : NULL;
        if (sep != NULL && !selected(r, &e, (size_t)(sep - e.key))) {
            continue;
        }
        /* A key without a folder is refused by job_of, never skipped. */
        if ((rc = job_of(r, &e, &j, of, &ol, &err)) != 0) {
            run_fail(r, rc,
                     rc == CFR_EINVAL ? RESTORE_F_UNSAFE : RESTORE_F_OTHER,
                     &err);
            break;
        }
        /* Keys sort by folder first: each folder's layout once. */
        if (ol != folder_len || memcmp(folder, of, ol) != 0) {
            memcpy(folder, of, ol + 1);
            folder_len = ol;
            if ((rc = folder_layout(r, folder, folder_len, &err)) != 0) {
                job_free(j);
                run_fail(r, rc,
                         rc == CFR_EDENIED  ? RESTORE_F_UNSAFE
                         : rc == CFR_EEXIST ? RESTORE_F_TARGET
                                            : RESTORE_F_IO,
                         &err);
                break;
            }
        }
        if (push_job(r, j) != 0) {
            break;
        }
    }
out:
    restore_manifest_free(mr);
}

/*
 * Restores snapshot h into r->root_fd with r's selection: workers, the
 * walk feeding them, then each folder's Dovecot files (Maildir output).
 * Adds to r->st. 0 or the first error, r->st->failure saying its kind.
 */
static int
run_snapshot(struct run *r, const struct cfr_snap_header *h, bool whole,
             struct cfr_err *err)
{
    struct restore_stats *st = r->st;
    struct worker *ws = NULL;
    unsigned nw;
    int rc = 0;

    nw = r->o.workers == 0 ? RESTORE_WORKERS_DEFAULT : r->o.workers;
    if (nw > RESTORE_WORKERS_MAX) {
        nw = RESTORE_WORKERS_MAX;
    }
    r->head = r->tail = NULL;
    r->queued = r->queued_ids = 0;
    r->done = r->failed = false;
    r->fail_rc = 0;
    r->fail_kind = RESTORE_F_NONE;
    /* Enough queued files for every worker to take a full group. */
    r->queue_max = 2 * (size_t)nw * RESTORE_GROUP_FILES;
    r->prog.mailbox = h->mailbox;
    r->prog.files = r->prog.bytes = 0;
    r->prog.bytes_total = whole ? h->total_bytes : 0;
    r->prog.done = false;
    if ((ws = cfr_calloc(nw, sizeof(*ws))) == NULL) {
        st->failure = RESTORE_F_OTHER;
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    for (unsigned i = 0; i < nw; i++) {
        struct cfr_err e;
        ws[i].r = r;
        cfr_buf_init(&ws[i].plain, CFR_ENV_PLAIN_MAX);
        ws[i].stash = cfr_calloc(r->o.batch_ids + 1, sizeof(*ws[i].stash));
        ws[i].flat = cfr_malloc(r->o.batch_ids * ID_LEN + 1);
        cfr_err_clear(&e);
        if (ws[i].stash == NULL || ws[i].flat == NULL ||
            (ws[i].op = cfr_opener_new(r->kr, &e)) == NULL) {
            run_fail(r, CFR_ENOMEM, RESTORE_F_OTHER, &e);
            break;
        }
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            CFR_ERR(&e, CFR_ENOMEM, "restore: cannot start a worker");
            run_fail(r, CFR_ENOMEM, RESTORE_F_OTHER, &e);
            break;
        }
        ws[i].started = true;
    }
    if (!run_failed(r)) {
        walk(r, h);
    }
    pthread_mutex_lock(&r->mu);
    r->done = true;
    pthread_cond_broadcast(&r->cv_job);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < nw; i++) {
        if (ws[i].started) {
            pthread_join(ws[i].tid, NULL);
        }
        st->files += ws[i].files;
        st->bytes += ws[i].bytes;
        st->chunks += ws[i].chunks;
        st->chunks_replaced += ws[i].replaced;
        st->messages += ws[i].messages;
        stash_clear(&ws[i]);
        cfr_free(ws[i].stash);
        cfr_free(ws[i].flat);
        cfr_opener_free(ws[i].op);
        cfr_buf_fini(&ws[i].plain);
    }
    cfr_free(ws);
    while (r->head != NULL) {
        struct job *j = r->head;
        r->head = j->next;
        job_free(j);
    }
    if (r->failed) {
        rc = r->fail_rc != 0 ? r->fail_rc : CFR_EINTERNAL;
        st->failure =
            r->fail_kind != RESTORE_F_NONE ? r->fail_kind : RESTORE_F_OTHER;
        if (err != NULL) {
            *err = r->fail_err;
        }
        return rc;
    }
    /* Dovecot's files must agree with what came back (dovecot.h). */
    for (size_t i = 0;
         i < r->n_folders && r->sel->format == RESTORE_FORMAT_MAILDIR; i++) {
        if ((rc = restore_dovecot_finish(r->root_fd, r->folders[i], err)) !=
            0) {
            st->failure = rc == CFR_EDENIED  ? RESTORE_F_UNSAFE
                          : rc == CFR_ENOMEM ? RESTORE_F_OTHER
                                             : RESTORE_F_IO;
            return rc;
        }
    }
    return 0;
}

/* ---- targets ------------------------------------------------------------ */

/* rm -r of name below dir_fd, which the restore itself made (bounded). */
static void
rm_tree_at(int dir_fd, const char *name, int depth)
{
    int fd;
    DIR *d;
    struct dirent *de;
    if (depth > 8) {
        return;
    }
    fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        (void)unlinkat(dir_fd, name, 0);
        return;
    }
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISDIR(sb.st_mode)) {
            rm_tree_at(dirfd(d), de->d_name, depth + 1);
        } else {
            (void)unlinkat(dirfd(d), de->d_name, 0);
        }
    }
    closedir(d);
    (void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

/* Whether a name in the live root is name or a subfolder of it. */
static int
live_taken(int root_fd, const char *name, bool *taken_r, struct cfr_err *err)
{
    size_t n = strlen(name);
    int dfd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    DIR *d;
    struct dirent *de;
    *taken_r = false;
    if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
        if (dfd >= 0) {
            close(dfd);
        }
        return CFR_ERR_ERRNO(err, CFR_EIO, "live store: cannot read");
    }
    rewinddir(d);
    while ((de = readdir(d)) != NULL && !*taken_r) {
        *taken_r = strncmp(de->d_name, name, n) == 0 &&
                   (de->d_name[n] == '\0' || de->d_name[n] == '.');
    }
    closedir(d);
    return 0;
}

/* Opens the live Maildir++ root dir and makes the new folder. */
static int
live_open(const char *dir, int64_t now_ms, int *fd_r, char *live,
          size_t live_size, struct cfr_err *err)
{
    struct stat sb;
    struct tm tm;
    time_t t = (time_t)(now_ms / 1000);
    char q[128], base[64];
    int fd, rc = 0;

    *fd_r = -1;
    cfr_log_quote(dir, q, sizeof(q));
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO,
                             "--into-live %s: not an existing directory", q);
    }
    if (fstatat(fd, "cur", &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(sb.st_mode)) {
        close(fd);
        return CFR_ERR(err, CFR_EINVAL,
                       "--into-live %s: not a Maildir++ root (no cur/)", q);
    }
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(base, sizeof(base), ".Restored-%Y-%m-%d", &tm) == 0) {
        close(fd);
        return CFR_ERR(err, CFR_EINVAL, "--into-live: no date for the folder");
    }
    for (int i = 1; i <= 100; i++) {
        bool taken = false;
        int k = i == 1 ? snprintf(live, live_size, "%s", base)
                       : snprintf(live, live_size, "%s-%d", base, i);
        if (k < 0 || (size_t)k >= live_size) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "live folder name");
            break;
        }
        if ((rc = live_taken(fd, live, &taken, err)) != 0) {
            break;
        }
        if (taken) {
            continue;
        }
        /* Exclusive: a name made meanwhile by someone else is skipped. */
        if (mkdirat(fd, live, 0700) == 0) {
            *fd_r = fd;
            return 0;
        }
        if (errno != EEXIST) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO,
                               "--into-live %s: cannot create "
                               "the new folder",
                               q);
            break;
        }
    }
    if (rc == 0) {
        rc = CFR_ERR(err, CFR_EEXIST,
                     "--into-live %s: %s and its next 99 names are taken", q,
                     base);
    }
    live[0] = '\0';
    close(fd);
    return rc;
}

/* mbox output: every folder of the private tree into DIR/<Folder>.mbox. */
static int
mbox_convert(struct run *r, int out_fd, struct cfr_err *err)
{
    for (size_t i = 0; i < r->n_folders; i++) {
        char name[NAME_MAX + 1];
        uint64_t msgs = 0, bytes = 0;
        int rc;
        if ((rc = restore_mbox_name(r->folders[i], name, sizeof(name), err)) !=
            0) {
            r->st->failure = RESTORE_F_UNSAFE;
            return rc;
        }
        if ((rc = restore_mbox_folder(r->root_fd, r->folders[i], out_fd, name,
                                      &msgs, &bytes, err)) != 0) {
            r->st->failure = rc == CFR_EEXIST   ? RESTORE_F_TARGET
                             : rc == CFR_ENOMEM ? RESTORE_F_OTHER
                                                : RESTORE_F_IO;
            return rc;
        }
        r->st->mbox_files++;
        r->st->mbox_bytes += bytes;
    }
    return 0;
}

/*
 * One mailbox's snapshot into out_fd (the target, or a host restore's
 * per-mailbox folder): as Maildir straight there, or through a private
 * Maildir tree for mbox.
 */
static int
restore_into(struct run *r, const struct cfr_snap_header *h, int out_fd,
             bool whole, struct cfr_err *err)
{
    char tmp[64];
    int rc;

    folders_free(r);
    if (r->sel->format != RESTORE_FORMAT_MBOX) {
        r->root_fd = out_fd;
        rc = run_snapshot(r, h, whole, err);
        r->root_fd = -1;
        return rc;
    }
    /* The Maildir tree first, in a directory of ours inside the target
     * (same file system, removed at the end whatever happens). */
    snprintf(tmp, sizeof(tmp), ".coffer-mbox.%ld.tmp", (long)getpid());
    if (mkdirat(out_fd, tmp, 0700) != 0) {
        r->st->failure = errno == EEXIST ? RESTORE_F_TARGET : RESTORE_F_IO;
        return CFR_ERR_ERRNO(err, errno == EEXIST ? CFR_EEXIST : CFR_EIO,
                             "target: cannot make the working folder %s", tmp);
    }
    r->root_fd =
        openat(out_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (r->root_fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: cannot open %s", tmp);
        r->st->failure = RESTORE_F_IO;
    } else if ((rc = run_snapshot(r, h, whole, err)) == 0) {
        rc = mbox_convert(r, out_fd, err);
    }
    if (r->root_fd >= 0) {
        close(r->root_fd);
        r->root_fd = -1;
    }
    rm_tree_at(out_fd, tmp, 0);
    return rc;
}

void
restore_stats_fini(struct restore_stats *st)
{
    if (st != NULL) {
        cfr_free(st->done);
        st->done = NULL;
        st->n_done = 0;
    }
}

/* Checks sel and fills r's normalised view of it. */
static int
selection_check(struct run *r, const struct restore_selection *sel,
                struct cfr_err *err)
{
    if ((sel->mailbox == NULL) == (sel->host == NULL)) {
        return CFR_ERR(err, CFR_EINVAL,
                       "restore: exactly one of a mailbox and a host");
    }
    if (sel->host != NULL && (sel->into_live || sel->snapshot_hex != NULL)) {
        return CFR_ERR(err, CFR_EINVAL,
                       "restore: a host restore takes neither --into-live "
                       "nor --snapshot");
    }
    if (sel->into_live && sel->format != RESTORE_FORMAT_MAILDIR) {
        return CFR_ERR(err, CFR_EINVAL,
                       "restore: --into-live writes Maildir only");
    }
    if (sel->n_message_ids > RESTORE_MSGIDS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "restore: at most %d message IDs",
                       RESTORE_MSGIDS_MAX);
    }
    if (sel->folder != NULL) {
        int rc = restore_folder_normalize(sel->folder, r->folder,
                                          sizeof(r->folder), err);
        if (rc != 0) {
            return rc;
        }
        r->have_folder = true;
    }
    for (size_t i = 0; i < sel->n_message_ids; i++) {
        msgid_core(sel->message_ids[i], strlen(sel->message_ids[i]),
                   &r->id_p[i], &r->id_len[i]);
        if (r->id_len[i] == 0 || r->id_len[i] > CFR_SNAP_MESSAGE_ID_MAX) {
            return CFR_ERR(err, CFR_EINVAL,
                           "--message-id: empty or longer than %d bytes",
                           CFR_SNAP_MESSAGE_ID_MAX);
        }
    }
    r->n_ids = sel->n_message_ids;
    return 0;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * A host restore: the tenant's mailboxes, each picked as of at_ms, those
 * whose chosen snapshot came from host into DIR/<name>.
 */
static int
restore_host(struct run *r, const char *dir, struct cfr_err *err)
{
    struct restore_stats *st = r->st;
    struct restore_snapshot *all = NULL, *picked = NULL;
    const char **names = NULL;
    char(*dnames)[256] = NULL;
    size_t n_all = 0, n_names = 0, n_picked = 0;
    int out_fd = -1, rc;
    char q[128];

    if ((rc = restore_list(r->f, r->kr, NULL, &all, &n_all, err)) != 0) {
        st->failure = rc == CFR_ENOMEM ? RESTORE_F_OTHER
                      : rc == CFR_ECORRUPT || rc == CFR_EVERSION
                          ? RESTORE_F_VERIFY
                          : RESTORE_F_VAULT;
        goto out;
    }
    names = cfr_calloc(n_all + 1, sizeof(*names));
    picked = cfr_calloc(n_all + 1, sizeof(*picked));
    dnames = cfr_calloc(n_all + 1, sizeof(*dnames));
    if (names == NULL || picked == NULL || dnames == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
        st->failure = RESTORE_F_OTHER;
        goto out;
    }
    for (size_t i = 0; i < n_all; i++) {
        char hex[2 * ID_LEN + 1];
        if (all[i].open_rc != 0) {
            /* Whose it is cannot be known: it might be this host's. */
            rc = CFR_ERR(err, all[i].open_rc,
                         "snapshot %s does not open (%s): a host restore "
                         "cannot tell whose it is",
                         cfr_hex_encode(all[i].header_id, ID_LEN, hex),
                         cfr_code_name(all[i].open_rc));
            st->failure = RESTORE_F_VERIFY;
            goto out;
        }
        names[n_names++] = all[i].h.mailbox;
    }
    qsort(names, n_names, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n_names; i++) {
        struct restore_pick p = {names[i], r->sel->at_ms, NULL};
        enum restore_failure kind = RESTORE_F_NONE;
        struct cfr_err e;
        if (i > 0 && strcmp(names[i], names[i - 1]) == 0) {
            continue;
        }
        cfr_err_clear(&e);
        rc = restore_pick_snapshot(r->f, r->kr, &p, &picked[n_picked], &kind,
                                   &e);
        if (rc == CFR_ENOTFOUND) {
            continue; /* that mailbox did not exist yet at that time */
        }
        if (rc != 0) {
            if (err != NULL) {
                *err = e;
            }
            st->failure = kind;
            goto out;
        }
        if (strcmp(picked[n_picked].h.host, r->sel->host) != 0) {
            continue;
        }
        if ((rc = restore_mailbox_dir_name(names[i], dnames[n_picked], 256,
                                           err)) != 0) {
            st->failure = RESTORE_F_UNSAFE;
            goto out;
        }
        n_picked++;
    }
    if (n_picked == 0) {
        rc = CFR_ERR(err, CFR_ENOTFOUND,
                     "no mailbox of host %s has a snapshot at that time",
                     cfr_log_quote(r->sel->host, q, sizeof(q)));
        st->failure = RESTORE_F_NOTFOUND;
        goto out;
    }
    if ((st->done = cfr_calloc(n_picked, sizeof(*st->done))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
        st->failure = RESTORE_F_OTHER;
        goto out;
    }
    if ((rc = target_open(dir, r->o.into_nonempty, &out_fd, err)) != 0) {
        st->failure = RESTORE_F_TARGET;
        goto out;
    }
    for (size_t i = 0; i < n_picked; i++) {
        struct restore_done *d = &st->done[st->n_done++];
        uint64_t files0 = st->files, bytes0 = st->bytes;
        int mfd;
        snprintf(d->mailbox, sizeof(d->mailbox), "%s", picked[i].h.mailbox);
        snprintf(d->dir_name, sizeof(d->dir_name), "%s", dnames[i]);
        memcpy(d->header_id, picked[i].header_id, ID_LEN);
        d->received_ms = picked[i].received_ms;
        /* Exclusive: never into something already there. */
        if (mkdirat(out_fd, dnames[i], 0700) != 0) {
            rc = CFR_ERR_ERRNO(err, errno == EEXIST ? CFR_EEXIST : CFR_EIO,
                               "target: cannot create %s",
                               cfr_log_quote(dnames[i], q, sizeof(q)));
            st->failure = errno == EEXIST ? RESTORE_F_TARGET : RESTORE_F_IO;
            goto out;
        }
        mfd = openat(out_fd, dnames[i],
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (mfd < 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: cannot open %s",
                               cfr_log_quote(dnames[i], q, sizeof(q)));
            st->failure = RESTORE_F_IO;
            goto out;
        }
        rc = restore_into(r, &picked[i].h, mfd,
                          !r->have_folder && r->n_ids == 0, err);
        close(mfd);
        d->files = st->files - files0;
        d->bytes = st->bytes - bytes0;
        if (rc != 0) {
            goto out;
        }
    }
    if (syncfs(out_fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: sync failed");
        st->failure = RESTORE_F_IO;
        goto out;
    }
    rc = 0;
out:
    if (out_fd >= 0) {
        close(out_fd);
    }
    cfr_free(all);
    cfr_free(names);
    cfr_free(picked);
    cfr_free(dnames);
    return rc;
}

/* One mailbox: its snapshot, then the target of the selection's kind. */
static int
restore_one(struct run *r, const char *dir, struct cfr_err *err)
{
    struct restore_stats *st = r->st;
    struct restore_pick p = {r->sel->mailbox, r->sel->at_ms,
                             r->sel->snapshot_hex};
    enum restore_failure kind = RESTORE_F_NONE;
    int out_fd = -1, rc;

    if ((rc = restore_pick_snapshot(r->f, r->kr, &p, &st->snap, &kind, err)) !=
        0) {
        st->failure = kind != RESTORE_F_NONE ? kind : RESTORE_F_OTHER;
        st->have_snap = st->snap.received_ms != 0;
        return rc;
    }
    st->have_snap = true;
    if (r->sel->into_live) {
        int64_t now = r->o.now_ms;
        if (now == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        }
        rc = live_open(dir, now, &out_fd, st->live_folder,
                       sizeof(st->live_folder), err);
        if (rc != 0) {
            st->failure = RESTORE_F_TARGET;
            return rc;
        }
        r->live = st->live_folder;
    } else if ((rc = target_open(dir, r->o.into_nonempty, &out_fd, err)) != 0) {
        st->failure = RESTORE_F_TARGET;
        return rc;
    }
    rc = restore_into(r, &st->snap.h, out_fd, !r->have_folder && r->n_ids == 0,
                      err);
    if (rc == 0 && syncfs(out_fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "target: sync failed");
        st->failure = RESTORE_F_IO;
    }
    close(out_fd);
    return rc;
}

int
restore_select(struct restore_fetcher *f, const struct cfr_keyring *kr,
               const struct restore_selection *sel, const char *dir,
               const struct restore_opts *opts, struct restore_stats *stats_r,
               struct cfr_err *err)
{
    struct restore_stats local;
    struct restore_stats *st = stats_r != NULL ? stats_r : &local;
    struct restore_selection s = *sel;
    struct run *r = NULL;
    int rc;

    memset(st, 0, sizeof(*st));
    if (s.at_ms <= 0) {
        s.at_ms = RESTORE_AT_NEWEST;
    }
    /* struct run holds the selection's normalised IDs: on the heap. */
    if ((r = cfr_calloc(1, sizeof(*r))) == NULL) {
        st->failure = RESTORE_F_OTHER;
        return CFR_ERR(err, CFR_ENOMEM, "restore: out of memory");
    }
    r->root_fd = -1;
    r->f = f;
    r->kr = kr;
    r->st = st;
    r->sel = &s;
    if (opts != NULL) {
        r->o = *opts;
    }
    if (r->o.batch_ids == 0 || r->o.batch_ids > RESTORE_FETCH_IDS_MAX) {
        r->o.batch_ids = RESTORE_BATCH_DEFAULT;
    }
    if ((rc = selection_check(r, &s, err)) != 0) {
        st->failure = RESTORE_F_OTHER;
        cfr_free(r);
        return rc;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->pmu, NULL);
    pthread_cond_init(&r->cv_job, NULL);
    pthread_cond_init(&r->cv_space, NULL);

    rc = s.host != NULL ? restore_host(r, dir, err) : restore_one(r, dir, err);
    if (rc == 0 && r->n_ids > 0) {
        /* The found ones are restored; the others are named. */
        char list[CFR_ERR_MSG_MAX];
        size_t at = 0;
        list[0] = '\0';
        for (size_t i = 0; i < r->n_ids; i++) {
            if (st->id_found[i]) {
                continue;
            }
            st->n_missing++;
            if (at + r->id_len[i] + 8 < sizeof(list) - 64) {
                at += (size_t)snprintf(list + at, sizeof(list) - at, "%s<%.*s>",
                                       at > 0 ? " " : "", (int)r->id_len[i],
                                       r->id_p[i]);
            }
        }
        if (st->n_missing > 0) {
            rc = CFR_ERR(err, CFR_ENOTFOUND,
                         "%zu of %zu message IDs not in the snapshot (the "
                         "others were restored): %s",
                         st->n_missing, r->n_ids, list);
            st->failure = RESTORE_F_NOTFOUND;
        }
    }
    if (r->o.progress != NULL) {
        pthread_mutex_lock(&r->pmu);
        r->prog.mailbox = NULL; /* a host restore freed its headers */
        r->prog.done = true;
        r->o.progress(r->o.progress_ctx, &r->prog);
        pthread_mutex_unlock(&r->pmu);
    }
    folders_free(r);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->pmu);
    pthread_cond_destroy(&r->cv_job);
    pthread_cond_destroy(&r->cv_space);
    cfr_free(r);
    if (rc != 0 && st->failure == RESTORE_F_NONE) {
        st->failure = RESTORE_F_OTHER;
    }
    if (st == &local) {
        restore_stats_fini(&local);
    }
    return rc;
}

int
restore_mailbox(struct restore_fetcher *f, const struct cfr_keyring *kr,
                const char *mailbox, const char *dir,
                const struct restore_opts *opts, struct restore_stats *stats_r,
                struct cfr_err *err)
{
    struct restore_selection sel;
    memset(&sel, 0, sizeof(sel));
    sel.mailbox = mailbox;
    return restore_select(f, kr, &sel, dir, opts, stats_r, err);
}
