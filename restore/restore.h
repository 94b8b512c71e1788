/*
 * restore.h - brings a mailbox back from its newest snapshot into a
 * Maildir++ tree, byte for byte, without ever writing outside the target.
 *
 * A restore (restore_select), in order:
 *  1. Selection (select.h): the vault's snapshot records of the mailbox's
 *     opaque ID (keyed hash of its name), the newest received at or
 *     before the time asked (or one by ID); its sealed header is opened
 *     with the tenant's full keyring and must name the same mailbox (a
 *     vault cannot pass one mailbox off as another). A chosen snapshot
 *     that does not open fails the restore: another one is never
 *     substituted silently. A host restore does this per mailbox.
 *  2. Manifest walk (snap.h reader, one page per level, each page opened
 *     and checked against its keyed ID), in key order. Every entry's path
 *     is built and validated (restore_path_of) before anything is created
 *     for it; one unsafe path fails the whole restore.
 *  3. Files are written by opts.workers threads in parallel. A worker
 *     takes a group of consecutive queued files (at most
 *     RESTORE_GROUP_FILES, and their chunk IDs together at most
 *     opts.batch_ids; a bigger file goes alone; while the manifest walk
 *     goes on it waits until that much is queued) and fetches their chunks
 *     as one list in windows of opts.batch_ids IDs (fetch.h): one
 *     GetObjects call for many small messages. It opens each chunk (the
 *     envelope authenticates it and re-hashes the plaintext against its
 *     chunk ID), writes them in order, each file to a temporary name in
 *     its directory, checks the size against the manifest, sets mode and
 *     mtime, and renames it into place without replacing anything
 *     (RENAME_NOREPLACE).
 *     A chunk copy that does not open (damaged on the vault that served
 *     it) is asked of the other vaults, excluding that one; the first
 *     copy that opens is used, the bad one logged at warn naming its
 *     vault and counted (restore_fetcher_damaged, chunks_replaced). Only
 *     when no vault has a good copy does the restore fail (verify).
 *     Only the selected entries are queued (struct restore_selection);
 *     an into_live restore maps every folder below the new one.
 *  4. Each restored Maildir folder's Dovecot files are made consistent
 *     (dovecot.h); for mbox output the Maildir tree was a private working
 *     folder, now converted (mbox.h) and removed.
 *  5. The target is synced (syncfs) once at the end.
 *
 * Safety (the target is created 0700 and must be empty unless
 * opts.into_nonempty): every directory below the target is created and
 * then opened with O_NOFOLLOW relative to its parent's descriptor, files
 * are created O_EXCL|O_NOFOLLOW and renamed with RENAME_NOREPLACE, so a
 * symlink or file planted in the target is never followed or replaced.
 *
 * Memory, whatever the mailbox size: per worker one group's chunk lists
 * (one file's at most 512 KiB, or batch_ids * 32 bytes for a group), one
 * fetch stream message and its decoded copy (the vault sends about 4 MiB
 * per message; at most RESTORE_FETCH_MSG_MAX), one opened chunk (two
 * while a damaged one is replaced: the replacement's stream message),
 * and at most RESTORE_STASH_MAX of chunks a vault sent out of order;
 * 2 * workers * RESTORE_GROUP_FILES queued files (about 4.2 KiB each
 * plus their chunk IDs: about 2.2 MiB with 4 workers); one manifest page
 * per level. With 4 workers and chunks of the default sizes, about
 * 55 MiB.
 *
 * Thread safety: one restore per call; the keyring and fetcher are shared
 * by the workers (both allow it).
 */
#ifndef RESTORE_RESTORE_H
#define RESTORE_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"   /* struct cfr_err */
#include "fetch.h" /* struct restore_fetcher */
#include "keys.h"  /* struct cfr_keyring */
#include "snap.h"  /* struct cfr_snap_entry, struct cfr_snap_header */

#define RESTORE_WORKERS_MAX     64
#define RESTORE_WORKERS_DEFAULT 4
/* Chunk IDs per GetObjects request of one worker. */
#define RESTORE_BATCH_DEFAULT 256
/* Consecutive files a worker fetches with one ID list (restore.c). */
#define RESTORE_GROUP_FILES 64
/* Opened chunks a worker holds that arrived before their turn. */
#define RESTORE_STASH_MAX ((size_t)64 << 20)
/* Longest relative path written (PATH_MAX with its NUL). */
#define RESTORE_PATH_MAX 4096

/* Why a restore failed, for exit codes; never renumbered. */
enum restore_failure {
    RESTORE_F_NONE = 0,
    RESTORE_F_OTHER = 1,    /* memory, a bug */
    RESTORE_F_VAULT = 2,    /* no vault answered, or it refused */
    RESTORE_F_NOTFOUND = 3, /* no snapshot of that mailbox */
    RESTORE_F_VERIFY = 4,   /* data missing, corrupt, or not ours */
    RESTORE_F_UNSAFE = 5,   /* a path in the manifest was refused */
    RESTORE_F_TARGET = 6,   /* the target is not empty or not usable */
    RESTORE_F_IO = 7,       /* writing the target failed */
};

/* A short stable name ("verify", "unsafe-path", ...). */
const char *restore_failure_name(enum restore_failure f);

/* Progress of a restore, for a progress bar (restore_opts.progress). */
struct restore_progress {
    const char *mailbox;  /* the mailbox being restored (NULL when done) */
    uint64_t files;       /* files written so far (this mailbox) */
    uint64_t bytes;       /* their bytes */
    uint64_t bytes_total; /* the snapshot's total_bytes; 0 for a partial
                             selection (folder, messages), unknown total */
    bool done;            /* the last call of the run: clear the bar */
};

/*
 * Called from the worker threads after each file, and once with done at
 * the end; calls are serialised (never two at once). It must be quick:
 * a worker waits for it. Rate limiting is the caller's business.
 */
typedef void restore_progress_fn(void *ctx, const struct restore_progress *p);

struct restore_opts {
    unsigned workers;   /* 0: RESTORE_WORKERS_DEFAULT */
    size_t batch_ids;   /* 0: RESTORE_BATCH_DEFAULT; <= RESTORE_FETCH_IDS_MAX */
    bool into_nonempty; /* allow a non-empty target (nothing is replaced) */
    restore_progress_fn *progress; /* NULL: none */
    void *progress_ctx;
    int64_t now_ms; /* the date of an into_live folder; 0: the clock */
};

/* ---- what to restore ---------------------------------------------------- */

/* Most --message-id values in one restore. */
#define RESTORE_MSGIDS_MAX 64

enum restore_format {
    RESTORE_FORMAT_MAILDIR = 0, /* a Maildir++ tree */
    RESTORE_FORMAT_MBOX = 1,    /* one mboxrd file per folder (mbox.h) */
};

/*
 * A selection. Exactly one of mailbox and host. With host, every mailbox
 * of the tenant whose chosen snapshot (as of at_ms) was made on that host
 * is restored into DIR/<mailbox name as one path component>
 * (restore_mailbox_dir_name). folder and message_ids narrow what is
 * restored to message files (nothing else of the mailbox: no Dovecot or
 * other files); both together mean messages of that folder with those
 * IDs. into_live restores into a live Maildir++ root as a new folder
 * (restore.c: only with mailbox, Maildir format).
 */
struct restore_selection {
    const char *mailbox;      /* exact name bytes, or NULL */
    const char *host;         /* exact host name, or NULL */
    int64_t at_ms;            /* 0 or RESTORE_AT_NEWEST (select.h): newest */
    const char *snapshot_hex; /* NULL, or an ID prefix; mailbox only */
    const char *folder;       /* NULL: all; see restore_folder_normalize */
    const char *const *message_ids; /* "<id@x>" or "id@x" */
    size_t n_message_ids;           /* 0..RESTORE_MSGIDS_MAX */
    enum restore_format format;
    bool into_live;
};

/* One snapshot record with its header opened (when it opened). */
struct restore_snapshot {
    uint8_t header_id[32];
    uint8_t mailbox_id[32];
    int64_t received_ms; /* the vault's clock */
    uint32_t flags;      /* SNAPSHOT_FLAG_* */
    bool held;
    int open_rc;              /* 0: h is valid; else why it did not open */
    struct cfr_snap_header h; /* the decoded header */
};

/* One mailbox of a host restore. */
struct restore_done {
    char mailbox[CFR_SNAP_MAILBOX_MAX + 1];
    char dir_name[256]; /* below the target */
    uint8_t header_id[32];
    int64_t received_ms;
    uint64_t files, bytes;
};

/* What a restore did; filled even when it fails. */
struct restore_stats {
    enum restore_failure failure;
    struct restore_snapshot snap; /* the snapshot chosen (mailbox) */
    bool have_snap;
    uint64_t files;           /* files written and renamed into place */
    uint64_t bytes;           /* their content bytes */
    uint64_t chunks;          /* chunks fetched and opened */
    uint64_t chunks_replaced; /* chunks whose copy was damaged on the vault
                                 that served it, taken from another */
    uint64_t folders;         /* Maildir++ folders laid out (INBOX included) */
    uint64_t messages;        /* message files among files */
    uint64_t mbox_files;      /* --format mbox: files written */
    uint64_t mbox_bytes;      /* and their bytes */
    char live_folder[256];    /* into_live: ".Restored-2026-11-23", else "" */
    /* message_ids[i] was found (and restored) */
    bool id_found[RESTORE_MSGIDS_MAX];
    size_t n_missing;          /* asked message IDs not found */
    struct restore_done *done; /* host restores: one per mailbox, owned */
    size_t n_done;
};

/* Frees what a restore left in st (done); st may be reused. */
void restore_stats_fini(struct restore_stats *st);

/*
 * Every snapshot the tenant's certificate sees on the current vault (or
 * only mailbox's, when not NULL), newest first, each header opened with
 * kr (a failure is recorded in open_rc, not returned). *v_r is owned
 * (cfr_free). Errors: the vault's, CFR_ECORRUPT, CFR_ENOMEM.
 */
int restore_list(struct restore_fetcher *f, const struct cfr_keyring *kr,
                 const char *mailbox, struct restore_snapshot **v_r,
                 size_t *n_r, struct cfr_err *err);

/*
 * Restores the newest snapshot of mailbox (its exact name bytes) into dir
 * (created when absent; its parent must exist): restore_select with only
 * the mailbox. opts may be NULL; stats_r (may be NULL) is zeroed and
 * filled, failure says which kind of error the return value is.
 */
int restore_mailbox(struct restore_fetcher *f, const struct cfr_keyring *kr,
                    const char *mailbox, const char *dir,
                    const struct restore_opts *opts,
                    struct restore_stats *stats_r, struct cfr_err *err);

/*
 * Restores sel into dir, by the rules of docs/RESTORE.md:
 *  - dir is created when absent (its parent must exist) and must be
 *    empty unless opts->into_nonempty; with sel->into_live it must be an
 *    existing Maildir++ root (it has cur/), and the selection goes into a
 *    new folder .Restored-YYYY-MM-DD (the UTC date of opts->now_ms; then
 *    -2, -3 ... while that name or any subfolder name of it is taken),
 *    its folders nested the Maildir++ way (.Restored-2026-11-23.Sent),
 *    each with a maildirfolder file; nothing else in dir is touched.
 *  - The snapshot: select.h (at_ms, snapshot_hex) per mailbox.
 *  - message_ids: the found ones are restored; then, if any was not
 *    found, the restore fails with CFR_ENOTFOUND (failure not-found)
 *    naming them, stats_r->id_found saying which were.
 * stats_r must be released with restore_stats_fini (also on failure).
 */
int restore_select(struct restore_fetcher *f, const struct cfr_keyring *kr,
                   const struct restore_selection *sel, const char *dir,
                   const struct restore_opts *opts,
                   struct restore_stats *stats_r, struct cfr_err *err);

/*
 * A --folder value as a Maildir++ folder name into out: "INBOX" (any
 * case) is "" (the root), ".Sent" stays, "Sent" is ".Sent",
 * "Archive/2024" is ".Archive.2024". CFR_EINVAL for an empty name or
 * component, ".", "..", a NUL-free name still holding '/' after a
 * leading '.', or one over NAME_MAX bytes.
 */
int restore_folder_normalize(const char *in, char *out, size_t out_size,
                             struct cfr_err *err);

/*
 * A mailbox name as one path component: bytes other than [A-Za-z0-9@_+-]
 * and '.' not in first place become %XX (so distinct names stay
 * distinct). CFR_EINVAL when the result would pass NAME_MAX.
 */
int restore_mailbox_dir_name(const char *mailbox, char *out, size_t out_size,
                             struct cfr_err *err);

/* ---- exposed for tests ------------------------------------------------ */

/*
 * The relative path (NUL-terminated into out, out_size bytes) of entry e
 * in a Maildir++ tree: [folder/]{new,cur}/base+info for a message,
 * [folder/]relpath for any other file. CFR_EINVAL (err says why) unless
 * the folder is "" or one Maildir++ name (".x", not "." or ".."), and
 * every component is non-empty, not "." or "..", without NUL or '/'
 * inside it, at most NAME_MAX bytes, and the whole path fits
 * RESTORE_PATH_MAX. *folder_len_r (may be NULL) gets the folder's length.
 */
int restore_path_of(const struct cfr_snap_entry *e, char *out, size_t out_size,
                    size_t *folder_len_r, struct cfr_err *err);

/*
 * Checks a relative path (len bytes, no terminator needed) by the rules
 * above: CFR_EINVAL for an absolute path, "..", ".", an empty component,
 * a NUL, a component over NAME_MAX or a path of RESTORE_PATH_MAX bytes or
 * more.
 */
int restore_path_check(const char *path, size_t len, struct cfr_err *err);

/*
 * Opens (creating as needed, mode 0700) the directory rel (a checked
 * relative path; "" is root_fd itself) below root_fd, one component at a
 * time with O_NOFOLLOW: a symlink or file in the way is CFR_EDENIED.
 * Returns an owned descriptor in *fd_r.
 */
int restore_open_dir(int root_fd, const char *rel, size_t len, int *fd_r,
                     struct cfr_err *err);

/*
 * The safe writer: a temporary file in the directory of rel (below
 * root_fd), written, then given mode and mtime and renamed to rel without
 * replacing anything (CFR_EEXIST when rel exists, symlink or not). begin
 * returns an owned writer; commit or abort frees it. commit refuses
 * (CFR_ECORRUPT) a file whose length is not size, and removes the
 * temporary file on any failure; abort removes it too.
 */
struct restore_file;
int restore_file_begin(int root_fd, const char *rel, uint32_t mode,
                       struct restore_file **wf_r, struct cfr_err *err);
int restore_file_write(struct restore_file *wf, const void *p, size_t n,
                       struct cfr_err *err);
int restore_file_commit(struct restore_file *wf, uint64_t size,
                        int64_t mtime_ns, struct cfr_err *err);
void restore_file_abort(struct restore_file *wf);

#endif /* RESTORE_RESTORE_H */
