/*
 * scan.h - walks one mailbox root (a Maildir++ store, possibly with mbox
 * files and anything else beside it) and reports every file through a
 * callback, one entry at a time, without reading any content.
 *
 * Layout understood (Dovecot's Maildir++):
 *   ROOT/{new,cur}/NAME          INBOX messages (folder "")
 *   ROOT/.F/{new,cur}/NAME       messages of folder ".F" (".Sent",
 *                                ".Archive.2025": Maildir++ is flat)
 *   ROOT/tmp, ROOT/.F/tmp        ignored: deliveries still being written
 *   any other file               kept as a file: Dovecot metadata
 *                                (dovecot-uidlist, dovecot-keywords,
 *                                subscriptions, maildirfolder, dovecot*),
 *                                an mbox (named "mbox", "inbox" or "*.mbox")
 *                                or an opaque file; directories other than
 *                                the above are walked as plain trees.
 * Kinds are decided by name only (the scan reads no content); the
 * pipeline, which reads opaque files anyway, may reclassify one whose
 * first line is an mbox "From " line.
 *
 * Identity: every entry carries its manifest key (docs/FORMAT.md,
 * "Manifest entries"): folder 0x00 name, where name is a message's unique
 * base name (the file name before the first ':') or "/" plus the path
 * relative to the folder for any other file. A flag change or a move from
 * new/ to cur/ keeps the key.
 *
 * Invariants:
 *  1. One fstatat per file and no content read. Symlinks are never
 *     followed (reported as skipped); directories are opened with
 *     O_NOFOLLOW relative to their parent's descriptor, so the walk never
 *     leaves the root even if the tree changes under it.
 *  2. Memory does not grow with directory size: readdir is streamed and
 *     nothing is sorted. Entries come in readdir order (the state store,
 *     keyed like the manifest, provides sorted order later). The only
 *     per-scan sets are bounded (AGENT_SCAN_VANISHED_MAX names).
 *  3. A live store never fails the run: a name that vanishes between
 *     readdir and stat is looked up again by a re-read of the folder's
 *     new/ and cur/ (as Dovecot does): found under another name (flag
 *     change, new/ -> cur/), that name is reported; not found, the file
 *     was deleted and is only counted. Per-file errors are reported as
 *     entries with a reason and counted; they never stop the walk.
 *  4. An identity may be reported more than once when a rename races
 *     readdir (the old and the new name both seen): the later report is
 *     the more recent name; consumers key by identity.
 *  5. Names are bytes: no decoding, no normalisation; paths and keys carry
 *     their lengths.
 *
 * Thread safety: one scan per call; calls on different roots may run in
 * parallel.
 */
#ifndef AGENT_SCAN_H
#define AGENT_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"  /* struct cfr_err */
#include "snap.h" /* enum cfr_snap_kind: the manifest's entry kinds */

/* Deepest directory nesting below the root walked by default. */
#define AGENT_SCAN_DEPTH_DEFAULT 32
/* Longest relative path reported; longer ones are per-file errors. */
#define AGENT_SCAN_PATH_MAX 4096
/*
 * Vanished message names remembered per folder before a re-read is forced;
 * bounds both memory and the cost of a rename storm (one re-read of new/
 * and cur/ per this many vanished names).
 */
#define AGENT_SCAN_VANISHED_MAX 4096
/* Re-reads tried for one vanished name before it counts as deleted. */
#define AGENT_SCAN_REREAD_ROUNDS 3

enum agent_scan_status {
    AGENT_SCAN_FILE = 0,    /* a regular file, stat'ed */
    AGENT_SCAN_SKIPPED = 1, /* deliberately not backed up (reason says) */
    AGENT_SCAN_ERROR = 2,   /* could not be examined (reason, errno) */
};

enum agent_scan_reason {
    AGENT_SCAN_R_NONE = 0,       /* a file */
    AGENT_SCAN_R_SYMLINK = 1,    /* skipped: symlinks are never followed */
    AGENT_SCAN_R_SPECIAL = 2,    /* skipped: fifo, socket or device */
    AGENT_SCAN_R_PERMISSION = 3, /* error: EACCES/EPERM, or unreadable by
                                    its mode bits */
    AGENT_SCAN_R_IO = 4,         /* error: EIO */
    AGENT_SCAN_R_TOO_LONG = 5,   /* error: path or key over the limits */
    AGENT_SCAN_R_TOO_DEEP = 6,   /* error: nesting over max_depth */
    AGENT_SCAN_R_OTHER = 7,      /* error: any other errno */
    AGENT_SCAN_R_COUNT = 8,
};

/*
 * One reported entry. Every pointer borrows scanner memory valid only
 * during the callback. For an error, key is a prefix of every identity
 * the error hides: the message's identity, the file's (or, when the stat
 * failed, the unknown entry's, which covers its contents if it was a
 * directory), for a directory that could not be opened or read the
 * folder's prefix (folder 0x00, is_dir set), and for the root itself the
 * empty prefix (key_len 0: the whole mailbox). The consumer keeps what it
 * knew under that prefix (agent_state_keep_prefix) rather than take it
 * for deleted.
 */
struct agent_scan_entry {
    enum agent_scan_status status;
    enum agent_scan_reason reason;
    int sys_errno;           /* for errors, 0 otherwise */
    enum cfr_snap_kind kind; /* decided by name and place */
    bool is_dir;             /* the entry is a directory (errors only) */
    const uint8_t *folder;   /* "" for INBOX, ".Sent", ... */
    size_t folder_len;
    const char *path; /* relative to the root, NUL-terminated bytes */
    size_t path_len;
    const uint8_t *key; /* folder 0x00 name: the identity */
    size_t key_len;
    const uint8_t *base; /* messages: unique base name (== name in key) */
    size_t base_len;
    const uint8_t *info; /* messages: ":2,RS" (from the first ':'), or "" */
    size_t info_len;
    const uint8_t *flags; /* messages: the letters after ":2," */
    size_t flags_len;
    bool in_new;    /* the message sits in new/ */
    bool recovered; /* found by a re-read after its first name vanished */
    uint64_t size;
    int64_t mtime_ns;
    uint64_t ino;
    uint64_t dev;
    uint32_t mode;
};

/* Counts for the run summary. */
struct agent_scan_summary {
    uint64_t files;      /* entries with status AGENT_SCAN_FILE */
    uint64_t bytes;      /* their sizes */
    uint64_t by_kind[5]; /* files by enum cfr_snap_kind (index 0 unused) */
    uint64_t dirs;       /* directories walked */
    uint64_t skipped;    /* entries with status AGENT_SCAN_SKIPPED */
    uint64_t errors;     /* entries with status AGENT_SCAN_ERROR */
    uint64_t by_reason[AGENT_SCAN_R_COUNT];
    uint64_t vanished;  /* gone between readdir and stat, not found again */
    uint64_t recovered; /* renamed mid-scan and reported under the new name */
    uint64_t rereads;   /* re-reads of new/ and cur/ to look for them */
};

/*
 * Called for each entry (borrowed, valid during the call). A non-zero
 * return stops the scan, which returns that value.
 */
typedef int agent_scan_fn(void *ctx, const struct agent_scan_entry *e);

/*
 * Test hook, called between readdir and the stat of each entry with its
 * path relative to the root; it may change the tree. Returning an errno
 * value makes the scanner act as if the stat had failed with it (so error
 * paths can be tested as root, whom mode bits do not stop).
 */
typedef int agent_scan_hook_fn(void *ctx, const char *path);

struct agent_scan_opts {
    unsigned max_depth;              /* 0: AGENT_SCAN_DEPTH_DEFAULT */
    agent_scan_hook_fn *before_stat; /* NULL outside tests */
    void *hook_ctx;
};

/*
 * Walks the tree at root (borrowed; an existing directory, which may itself
 * be reached through symlinks: it is configuration, not mail) and calls fn for
 * each entry. opts may be NULL. *sum_r (may be NULL) is zeroed, then filled
 * even when the scan stops early. Returns 0 when the walk finished, whatever
 * per-file errors it met; CFR_ENOTFOUND or CFR_EIO when the root cannot be
 * opened; CFR_ENOMEM; or fn's value.
 */
int agent_scan_run(const char *root, const struct agent_scan_opts *opts,
                   agent_scan_fn *fn, void *ctx,
                   struct agent_scan_summary *sum_r, struct cfr_err *err);

/* A short stable name for a reason ("symlink", "permission", ...). */
const char *agent_scan_reason_name(enum agent_scan_reason reason);

/*
 * Classifies a file name found outside new/ and cur/ (borrowed bytes):
 * CFR_SNAP_DOVECOT_META, CFR_SNAP_MBOX or CFR_SNAP_OPAQUE.
 */
enum cfr_snap_kind agent_scan_kind_of(const uint8_t *name, size_t len);

#endif /* AGENT_SCAN_H */
