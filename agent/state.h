/*
 * state.h - the agent's local file cache: what it knew of every file of
 * every mailbox at its last run, so that an unchanged message costs no
 * read and a flag change costs no read either.
 *
 * One RocksDB database (core/kv.h) in its own directory, with four
 * column families:
 *   meta       "format" -> magic and AGENT_STATE_FORMAT; "next_mailbox";
 *              "damaged" (set when a run met corruption: the next open
 *              starts empty); "head" || be32(number) -> the mailbox's
 *              last commit (agent_state_parent)
 *   mailboxes  mailbox name -> its number (4 bytes) and last generation
 *   files      be32(number) || identity -> record (see state.c: sizes,
 *              times, inode, name suffix, Message-ID, chunk IDs, checksum)
 *   seen       be32(number) || identity -> generation that last saw it
 * where identity is the manifest key of the scan entry (folder 0x00 base
 * name, or folder 0x00 "/" path): records sort exactly as the manifest
 * does, so the manifest is written by walking them (agent_state_walk).
 *
 * A run over one mailbox is a generation: agent_state_begin takes the next
 * number (stored at once, so a crashed run never lends its number to the
 * next one); the pipeline looks each scanned file up, reads only what is
 * new or changed, records results in batches, then lists the identities
 * this generation did not see (deletions) by walking the small "seen"
 * family, never holding them all in memory.
 *
 * It is a cache. Losing it costs a re-read of the store, never a
 * re-upload (the vault deduplicates by chunk ID). Hence:
 *  1. Damage is never fatal: a database RocksDB will not open (corrupt,
 *     unknown families), a missing or foreign format key, or the
 *     "damaged" mark is logged and the database recreated empty. A damaged
 *     record (checksum) only makes its file "changed". The wipe removes
 *     only a flat directory that looks like RocksDB's (CURRENT, IDENTITY,
 *     MANIFEST-*, OPTIONS-*, ...), so a misconfigured path to real data is
 *     refused (CFR_EINVAL), never emptied.
 *  2. Writes are not synced: a crash loses the tail, which is re-read.
 *     The pipeline records a file only after the vault acknowledged its
 *     chunks, and must fall back to reading when a snapshot commit finds
 *     a reused chunk missing.
 *  3. One agent process at a time: the CLI takes a lock file before
 *     opening the state, and RocksDB's own LOCK refuses a second opener
 *     (CFR_EIO, not treated as damage). Within the process, one run per
 *     mailbox at a time; different runs may be used from different
 *     threads at once, each run by one thread at a time. Open and close
 *     belong to one thread, with no run alive.
 */
#ifndef AGENT_STATE_H
#define AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"  /* struct cfr_err */
#include "kv.h"   /* struct cfr_kv_env: the process's shared cache */
#include "scan.h" /* struct agent_scan_entry */
#include "snap.h" /* enum cfr_snap_kind, CFR_SNAP_* limits */

/* The record layout this build writes; any other means "start empty". */
#define AGENT_STATE_FORMAT 1
/* Operations queued before a run commits its batch by itself. */
#define AGENT_STATE_BATCH_OPS 1024
/*
 * A file whose mtime is this close to (or after) the start of the run
 * that read it may change again within the same timestamp: its record is
 * marked racy and the next run reads it once more (git's "racily clean").
 */
#define AGENT_STATE_RACY_NS INT64_C(2000000000)

struct agent_state;
struct agent_state_run;

/* What the pipeline must do with a scanned file. */
enum agent_state_verdict {
    AGENT_STATE_NEW = 0,       /* no record: read it */
    AGENT_STATE_CHANGED = 1,   /* content may differ (or the record is
                                  damaged or racy): read it */
    AGENT_STATE_UNCHANGED = 2, /* same identity, size, mtime, inode and
                                  name: reuse the chunk list, no read */
    AGENT_STATE_RENAMED = 3,   /* same content signature, different name
                                  suffix, new/cur placement or mode: a
                                  metadata update, no read */
};

/*
 * One file's record, as a view: pointers borrow (the caller's memory when
 * recording, the run's buffer after a lookup, valid until the next call
 * on that run).
 */
struct agent_state_rec {
    enum cfr_snap_kind kind;
    bool in_new;
    uint32_t mode;
    uint64_t size;
    int64_t mtime_ns;
    uint64_t ino;
    uint64_t dev;
    const uint8_t *info; /* ":2,RS", 0..CFR_SNAP_INFO_MAX bytes */
    size_t info_len;
    const uint8_t *message_id; /* 0..CFR_SNAP_MESSAGE_ID_MAX bytes */
    size_t message_id_len;
    const uint8_t *chunk_ids; /* n_chunks * CFR_SNAP_ID_LEN bytes */
    size_t n_chunks;          /* 0..CFR_SNAP_CHUNKS_MAX */
    uint64_t seen_gen;        /* walks: the generation that saw it */
};

/* Counters since open, for the run summary and tests. */
struct agent_state_stats {
    bool reset;               /* the database was recreated at open */
    uint64_t damaged_records; /* records that failed their checksum */
    uint64_t lookups;
    uint64_t verdicts[4]; /* by enum agent_state_verdict */
    uint64_t commits;     /* batches written */
};

/* Called with an identity (borrowed) the run did not see. */
typedef int agent_state_key_fn(void *ctx, const uint8_t *key, size_t key_len);
/* Called with each record of the walk, in key order (both borrowed). */
typedef int agent_state_rec_fn(void *ctx, const uint8_t *key, size_t key_len,
                               const struct agent_state_rec *rec);

/*
 * Opens (creating it if missing) the state in dir (borrowed), on env
 * (borrowed; must outlive the state). Damage is logged and the database
 * recreated empty (invariant 1). Fails only when the directory cannot be
 * used at all: CFR_EIO (permissions, RocksDB's lock held by another
 * process), CFR_EINVAL (not a state directory), CFR_ENOMEM.
 */
int agent_state_open(struct cfr_kv_env *env, const char *dir,
                     struct agent_state **st_r, struct cfr_err *err);
/* Accepts NULL. Every run must have ended or been freed. */
void agent_state_close(struct agent_state *st);
void agent_state_stats(struct agent_state *st,
                       struct agent_state_stats *stats_r);

/*
 * Starts a generation of mailbox (borrowed, NUL-terminated, at most
 * CFR_SNAP_MAILBOX_MAX bytes). start_ns is the wall-clock time the scan
 * starts (for racy mtimes). The new generation number is stored before
 * this returns. Returns owned. CFR_ECORRUPT when RocksDB finds the
 * database damaged: it is marked, so the next open starts empty, and the
 * caller backs this mailbox up without the cache (reading everything).
 */
int agent_state_begin(struct agent_state *st, const char *mailbox,
                      int64_t start_ns, struct agent_state_run **run_r,
                      struct cfr_err *err);
uint64_t agent_state_generation(const struct agent_state_run *run);

/*
 * Decides what to do with a scanned file (e->status must be
 * AGENT_SCAN_FILE). *rec_r is filled from a sound record (UNCHANGED,
 * RENAMED, and CHANGED unless the record was damaged), zeroed otherwise.
 * A damaged record counts as CHANGED; a RocksDB read error is
 * logged, marks the state damaged (the next open starts empty) and also
 * answers CHANGED: a lookup never fails a run for the cache's sake.
 * Errors: CFR_EINVAL (not a file entry), CFR_ENOMEM.
 */
int agent_state_lookup(struct agent_state_run *run,
                       const struct agent_scan_entry *e,
                       enum agent_state_verdict *verdict_r,
                       struct agent_state_rec *rec_r, struct cfr_err *err);

/* Fills rec's stat fields, kind and name suffix from a scan entry. */
void agent_state_rec_from_entry(const struct agent_scan_entry *e,
                                struct agent_state_rec *rec);

/* UNCHANGED: marks key seen in this generation (queued). */
int agent_state_seen(struct agent_state_run *run, const uint8_t *key,
                     size_t key_len, struct cfr_err *err);
/*
 * NEW, CHANGED (after the read and upload) and RENAMED (the old record
 * with the entry's new name fields): stores rec under key and marks it
 * seen (queued; committed every AGENT_STATE_BATCH_OPS operations).
 * CFR_EINVAL when rec is over the CFR_SNAP_* limits.
 */
int agent_state_record(struct agent_state_run *run, const uint8_t *key,
                       size_t key_len, const struct agent_state_rec *rec,
                       struct cfr_err *err);
/*
 * Marks every identity under prefix seen, so that what a scan error hid
 * (an error entry: its key, see scan.h) is not taken for deleted. A prefix
 * may cover a few more identities than the error hid; they are kept one
 * run longer, which is the safe side.
 */
int agent_state_keep_prefix(struct agent_state_run *run, const uint8_t *prefix,
                            size_t prefix_len, struct cfr_err *err);
/* Removes key's record (a deletion the snapshot has recorded). Queued. */
int agent_state_forget(struct agent_state_run *run, const uint8_t *key,
                       size_t key_len, struct cfr_err *err);
/* Commits what is queued. */
int agent_state_flush(struct agent_state_run *run, struct cfr_err *err);

/*
 * After the scan: commits what is queued, then calls fn for each identity
 * of the mailbox not seen in this generation, in key order, streaming.
 * *n_r (may be NULL) counts them. fn's non-zero return stops the walk and
 * is returned.
 */
int agent_state_unseen(struct agent_state_run *run, agent_state_key_fn *fn,
                       void *ctx, uint64_t *n_r, struct cfr_err *err);
/*
 * Commits what is queued, then calls fn for each record seen in this
 * generation, in key order (the manifest's order). Damaged records are
 * skipped and counted.
 */
int agent_state_walk(struct agent_state_run *run, agent_state_rec_fn *fn,
                     void *ctx, struct cfr_err *err);

/*
 * The parent link of the snapshot this run writes (snap.h): the header ID
 * of the mailbox's last snapshot the vaults confirmed, recorded in meta
 * under "head" || be32(number) (an older state lacks it: no parent once).
 * Returns false, leaving id_r alone, after a first backup, a reset, a
 * damaged record or an unconfirmed last commit: no parent is better than
 * a wrong one (see state.c).
 */
bool agent_state_parent(const struct agent_state_run *run,
                        uint8_t id_r[CFR_SNAP_ID_LEN]);
/*
 * Around the commit of header_id: committing before it (a synced write:
 * until committed follows, the next run writes no parent), committed
 * once the quorum confirmed it (queued with the run's batch). An error of
 * committing means the cache cannot keep the link: do not commit.
 */
int agent_state_committing(struct agent_state_run *run,
                           const uint8_t header_id[CFR_SNAP_ID_LEN],
                           struct cfr_err *err);
int agent_state_committed(struct agent_state_run *run,
                          const uint8_t header_id[CFR_SNAP_ID_LEN],
                          struct cfr_err *err);

/* Commits what is queued and frees run. */
int agent_state_end(struct agent_state_run *run, struct cfr_err *err);
/* Accepts NULL. Discards what is queued (the next run re-reads it). */
void agent_state_run_free(struct agent_state_run *run);

#endif /* AGENT_STATE_H */
