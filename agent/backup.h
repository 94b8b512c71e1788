/*
 * backup.h - one mailbox backed up: scan -> classify -> read -> chunk ->
 * ID -> batched existence query -> seal -> upload, then the snapshot
 * (manifest, reference list, header) committed last.
 *
 * Run order (docs/FORMAT.md, "Write order"):
 *  1. A scanner thread walks the mailbox (scan.h) and asks the file cache
 *     (state.h) about every file: unchanged files are only marked seen, a
 *     flag change or a new/ -> cur/ move is recorded from the old record
 *     (no read), new and changed files go to the workers. Scan errors keep
 *     what the cache knew under the hidden prefix.
 *  2. Workers (opts.workers, default: the number of cores) read a file in
 *     blocks of AGENT_BACKUP_BLOCK, chunk it (MIME hints for messages,
 *     a cut at every message start of an mbox), compute chunk IDs and hand
 *     them to the driving thread in segments of up to 4096 IDs. The driving
 *     thread batches segments of several workers into one existence query
 *     (AGENT_UPLINK_IDS_MAX IDs), answers each ID with the set of vaults
 *     that lack it, and assigns each ID the run has not met yet to exactly
 *     one worker: a chunk met twice in a run is sealed once. Workers seal
 *     what they were assigned with their own session and queue it; the
 *     driving thread puts it.
 *  3. A file is recorded in the cache only after a flush acknowledged every
 *     chunk it needs (state.h invariant 2). A file that cannot be read
 *     (vanished, EACCES, EIO, too many chunks) is counted and carried over
 *     from the previous snapshot when the cache has it; it is never taken
 *     for deleted.
 *  4. The cache is walked in key order to write the manifest (pages sealed,
 *     IDs keyed), every data chunk ID and manifest page ID go through an
 *     external sort into the reference list (pages in clear); IDs the run
 *     did not meet itself (cached chunk lists) are asked for once more, so
 *     that a chunk collected after an uncommitted run's lease expired is
 *     found here (the run fails, the files using it are forgotten by the
 *     cache and read again next time) rather than by a commit the vaults
 *     would refuse on every run. The header is sealed, and the commit
 *     goes out through the sink, which commits
 *     only when the quorum acknowledged everything. Only after a successful
 *     commit are deletions forgotten and the cache generation ended, so a
 *     killed run re-scans and finds on the vaults what it already sent.
 *
 * Memory, whatever the mailbox size: per worker a read buffer of at most
 * AGENT_BACKUP_READ_SMALL (1 MiB), one sealed chunk (with slack, 1.25
 * MiB), a file's chunk list (512 KiB), a segment of 4096 IDs and a zstd
 * context; one worker of the run at a time grows its buffer to the
 * largest file it meets but never past AGENT_BACKUP_BLOCK plus one chunk
 * (16.25 MiB); AGENT_BACKUP_JOBS_MAX queued file names;
 * AGENT_BACKUP_QUEUE_BYTES (4 MiB) of sealed objects between the workers
 * and the uplink, plus the uplink's own queue (4 MiB per vault) and one
 * PutObjects message (1 MiB) three times over (packed, gRPC's copy, the
 * transport's); the run's dedup set, at most AGENT_BACKUP_DEDUP_MAX IDs in
 * a table of twice as many 33-byte slots (past that it forgets IDs
 * already put: a repeat is then sealed and sent again, and stored once by
 * the vault); the reference-list sort, opts.refs_run_ids IDs in memory
 * (1 MiB) and 32 KiB per sorted run on disk (in opts.tmp_dir; one run per
 * 1 MiB of IDs); one page per level for each tree writer and a batch of
 * at most 2 MiB of pages; the file cache's memtables (state.c, 1 MiB
 * each) and block cache (state_cache). So at most about 3.5 MiB per
 * worker plus 4 MiB per vault plus 42 MiB, plus the dedup set (34 MiB
 * once full: a mailbox of 2^19 distinct chunks, tens of GB; 4 MiB for
 * 1 GB of mail), and 32 KiB more per 32 Ki chunks of the mailbox at the
 * end; these are ceilings, rarely all reached at once. Measured
 * (tests/integration/agent_rss_test.c): a 1 GB store peaks at 48 MiB
 * resident with 1 worker and 57 MiB with 4, about 24 MiB of it the
 * shared libraries' pages. agent_backup_malloc_setup keeps glibc's
 * per-thread arenas from multiplying this by the thread count.
 *
 * Niceness: opts.cpu_nice (setpriority) and opts.io_class (ioprio_set)
 * are applied to the scanner and worker threads only, the threads that
 * read mail and burn CPU; on Linux both are per-thread. The calling
 * thread, which drives the vaults, keeps its priority so that leases and
 * streams do not time out behind a busy host.
 *
 * Thread safety: one backup per state run; the caller's thread drives the
 * sink. Different mailboxes may be backed up at once from different
 * threads with different sinks.
 */
#ifndef AGENT_BACKUP_H
#define AGENT_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"    /* struct cfr_session */
#include "err.h"    /* struct cfr_err */
#include "keys.h"   /* struct cfr_keyring: the agent view */
#include "state.h"  /* struct agent_state */
#include "tree.h"   /* struct cfr_tree_root */
#include "uplink.h" /* struct agent_uplink, struct agent_uplink_commit */

/*
 * Read unit: a file up to this size is chunked whole (MIME hints cover
 * it); a larger one is read in blocks, and a message spanning a block
 * boundary gets its start cut and body hint but no MIME cuts.
 */
#define AGENT_BACKUP_BLOCK ((size_t)16 << 20)
/*
 * A worker's read buffer stays within this size; one worker of the run
 * at a time may grow it past (up to a block and a chunk) for a larger
 * file, the others wait for their turn. Mail is mostly small messages:
 * large ones then cost one block per run, not one per worker. Chunking
 * does not depend on it.
 */
#define AGENT_BACKUP_READ_SMALL ((size_t)1 << 20)
/* Worker threads at most, and when the core count is unknown. */
#define AGENT_BACKUP_WORKERS_MAX     32
#define AGENT_BACKUP_WORKERS_DEFAULT 4
/* Files queued between the scanner and the workers. */
#define AGENT_BACKUP_JOBS_MAX 256
/* Sealed bytes queued between the workers and the uplink. */
#define AGENT_BACKUP_QUEUE_BYTES ((size_t)4 << 20)
/* IDs the run remembers for deduplication before forgetting put ones. */
#define AGENT_BACKUP_DEDUP_MAX ((size_t)1 << 19)
/* IDs sorted in memory per run of the reference-list sort (1 MiB). */
#define AGENT_BACKUP_REFS_RUN 32768
/* Files waiting for an acknowledgement before a flush is forced. */
#define AGENT_BACKUP_PENDING_MAX 1024
/* CommitRequest.flags bit for a marked snapshot (SNAPSHOT_FLAG_*). */
#define AGENT_BACKUP_FLAG_MASS_DELETION 1u
/* The agent_version field of every header written. */
#define AGENT_BACKUP_VERSION "coffer-agent/1"

/* I/O priority classes (the kernel's IOPRIO_CLASS_* values). */
enum agent_backup_io_class {
    AGENT_BACKUP_IO_KEEP = 0,        /* leave the inherited class */
    AGENT_BACKUP_IO_BEST_EFFORT = 2, /* with opts.io_level 0..7 */
    AGENT_BACKUP_IO_IDLE = 3,        /* only when the disk is idle */
};

/*
 * Where the run's objects go: the uplink (agent_backup_sink_uplink) or a
 * test double. Each call has the contract of its agent_uplink_*
 * namesake; missing fills one mask per ID, 0 = every vault has it.
 */
struct agent_backup_sink {
    int (*missing)(void *ctx, const uint8_t *ids, size_t n, uint8_t *lack_r,
                   struct cfr_err *err);
    int (*put)(void *ctx, const uint8_t *id, int kind, const uint8_t *data,
               size_t len, uint8_t mask, struct cfr_err *err);
    int (*flush)(void *ctx, struct cfr_err *err);
    int (*commit)(void *ctx, const struct agent_uplink_commit *c,
                  struct cfr_err *err);
    void *ctx;
};

struct agent_backup_opts {
    unsigned workers;        /* 0: the number of online cores (at most 32) */
    int cpu_nice;            /* 0: unchanged; 1..19: setpriority on workers */
    int io_class;            /* enum agent_backup_io_class */
    int io_level;            /* best-effort level 0..7 */
    const char *host;        /* header's host; NULL: gethostname */
    int64_t now_ms;          /* header's agent time; 0: the system clock */
    const char *tmp_dir;     /* reference-list sort runs; NULL: $TMPDIR, /tmp */
    size_t refs_run_ids;     /* 0: AGENT_BACKUP_REFS_RUN (tests go lower) */
    bool stop_before_commit; /* tests: everything put and flushed, then
                                stop as a killed run would (CFR_EINTERNAL) */
    /*
     * Tests: called by a worker before it opens a file (path relative to
     * the root); it may change the tree, and an errno value returned makes
     * the read fail with it (so error paths run as root too).
     */
    int (*before_read)(void *ctx, const char *path);
    void *hook_ctx;
    /*
     * Mass-deletion guard (the CLI owns the rule): called once before the
     * commit with the files the snapshot holds and the identities gone
     * since the last run; true marks the snapshot (header and commit flag
     * MASS_DELETION, stats.mass_deletion) and asks the vaults to hold the
     * previous one.
     * NULL: never.
     */
    bool (*mass_deletion)(void *ctx, uint64_t entries, uint64_t deleted);
    void *mass_ctx;
};

/* What a run did; filled even when it fails. */
struct agent_backup_stats {
    uint64_t scanned;         /* files the scan reported */
    uint64_t verdicts[4];     /* by enum agent_state_verdict */
    uint64_t scan_errors;     /* error entries of the scan (kept) */
    uint64_t files_read;      /* new or changed files read to the end */
    uint64_t bytes_read;      /* content bytes read: 0 for a flag storm */
    uint64_t file_errors;     /* files that could not be read */
    uint64_t err_vanished;    /* ... gone between scan and read */
    uint64_t err_permission;  /* ... EACCES, EPERM */
    uint64_t err_io;          /* ... EIO */
    uint64_t err_too_large;   /* ... more than CFR_SNAP_CHUNKS_MAX chunks */
    uint64_t err_other;       /* ... anything else */
    uint64_t chunks;          /* chunks cut from what was read */
    uint64_t chunks_sealed;   /* sealed and put: some vault lacked them */
    uint64_t chunks_present;  /* every vault had them already */
    uint64_t chunks_dup;      /* met again in this run: neither asked nor
                                 sealed again */
    uint64_t bytes_sealed;    /* envelope bytes of the sealed chunks */
    uint64_t missing_calls;   /* existence queries */
    uint64_t pages_manifest;  /* manifest pages written */
    uint64_t pages_refs;      /* reference-list pages written */
    uint64_t pages_put;       /* pages some vault lacked, put */
    uint64_t entries;         /* manifest entries (files in the snapshot) */
    uint64_t total_bytes;     /* their sizes */
    uint64_t deleted;         /* identities gone since the last run */
    uint64_t chunks_lost;     /* cached chunk IDs the vaults no longer hold */
    uint64_t files_forgotten; /* their files, to be read by the next run */
    bool committed;
    bool mass_deletion; /* marked by opts.mass_deletion, previous held */
    uint8_t mailbox_id[CFR_ID_LEN];
    uint8_t header_id[CFR_ID_LEN];
    struct cfr_tree_root manifest;
    struct cfr_tree_root refs;
};

/* Fills sink_r so that it drives up (borrowed: must outlive the run). */
void agent_backup_sink_uplink(struct agent_uplink *up,
                              struct agent_backup_sink *sink_r);

/*
 * Backs up mailbox name (borrowed; at most CFR_SNAP_MAILBOX_MAX bytes) at
 * root (borrowed, a directory). kr (an agent view or a full keyring) gives
 * the IDs and the gear table; sess seals the manifest pages and the header
 * (workers make their own sessions from kr); st is the open file cache;
 * sink carries objects and the commit. opts may be NULL. *stats_r (may be
 * NULL) is zeroed and filled.
 * Returns 0 once the quorum committed the snapshot. Per-file errors are
 * counted, not returned. Errors: CFR_ENOTFOUND, CFR_EIO (the root cannot
 * be scanned), CFR_ENOTFOUND also when chunks the cache reuses are gone
 * from a vault (nothing committed; those files are forgotten by the cache,
 * so the next run reads and sends them again), CFR_EUNAVAIL (the quorum was
 * lost: nothing committed), CFR_ECORRUPT (the cache is damaged: the next run
 * starts it empty), CFR_ENOMEM, CFR_EINVAL, CFR_EINTERNAL
 * (opts.stop_before_commit).
 */
int agent_backup_mailbox(const char *name, const char *root,
                         const struct cfr_keyring *kr, struct cfr_session *sess,
                         struct agent_state *st,
                         const struct agent_backup_sink *sink,
                         const struct agent_backup_opts *opts,
                         struct agent_backup_stats *stats_r,
                         struct cfr_err *err);

/*
 * Sets the C library's allocator up for the agent's memory bound; call it
 * once at program start, before any thread exists. glibc otherwise gives
 * each busy thread an arena of its own that keeps freed memory, and after
 * freeing one large buffer raises its mmap threshold so that the next
 * ones come from (and stay in) those arenas: both multiply the resident
 * set by the worker count. A no-op elsewhere.
 */
void agent_backup_malloc_setup(void);

/*
 * Where a message's Message-ID value is in msg (borrowed, the start of a
 * message): 1 with *off_r and *len_r set (at most CFR_SNAP_MESSAGE_ID_MAX
 * bytes, surrounding blanks removed), 0 when the header block has none.
 * Exposed for the unit test.
 */
int agent_backup_message_id(const uint8_t *msg, size_t len, size_t *off_r,
                            size_t *len_r);

#endif /* AGENT_BACKUP_H */
