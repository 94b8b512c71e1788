/*
 * verify.h - `coffer-restore verify`, the scheduled recovery test: restores
 * snapshots from each replica separately into scratch space and proves
 * that what came back is what was backed up.
 *
 * A run, per selected snapshot and per replica (a fetcher with that one
 * vault, so nothing is quietly read from another replica):
 *  1. Manifest walk (manifest.h: every page opened and checked against its
 *     keyed ID); the selected files are written into a fresh private
 *     scratch directory by restore's own safe writer (restore_file_*),
 *     each chunk opened and authenticated by its envelope, re-hashed
 *     against its keyed chunk ID, and each file's size checked against the
 *     manifest. A failing file is recorded (chunk_missing, chunk_corrupt,
 *     content) and the run goes on with the next one.
 *  2. Content hash of every restored file, read back from the scratch
 *     disk: the same snapshot must give identical bytes on every replica.
 *  3. Dovecot's view (restore_doveadm_list_ex) of the restored Maildir,
 *     message by message against the manifest: each restored message
 *     present exactly once, with its Message-ID, size and system flags,
 *     and the hash of its text as Dovecot reads it equal to the hash of
 *     the restored file (step 2) and its length to the manifest's size.
 *  4. With a live store (--live): a live message with the same base name
 *     whose size and mtime equal the manifest's is unchanged since the
 *     backup, so its bytes must equal the restored ones.
 *  5. Timing per replica and snapshot; the scratch directory is removed
 *     (unless --keep).
 * Selection: every mailbox, those named, or a seeded sample; every
 * message or a seeded sample per mailbox. Samples are "bottom-k" by a
 * hash of the seed and the name, so they do not depend on the order in
 * which a replica lists things: every replica gets the same sample, and
 * the same seed gives the same sample again. Each run also verifies the
 * older retained snapshots least recently verified (report.h's state
 * file), a bounded number per run, so that every retained snapshot is
 * verified within the retention window.
 *
 * Results go into a struct restore_verify_result (report.h), which becomes
 * the JSON report, the metrics file, the state file and notifications.
 * Exit codes: 0 all good, 6 any verification failure, 4 when the only
 * failures are replicas that could not be reached.
 *
 * With a state file, a run holds its lock (restore_report_state_lock)
 * from loading the state to saving it; a second run waits for it.
 *
 * Files are written by `parallelism` worker threads (the restore
 * configuration's, as a restore would), so the time and throughput
 * measured are a restore's, plus the checks.
 *
 * Memory: one manifest page per level; per worker one file's chunk list
 * and the chunks of one fetch window (at most VERIFY_STASH_MAX of early
 * ones); 2 * workers queued files; and per snapshot a record (key, hash)
 * per restored file, which the cross-replica comparison needs, and one
 * per restored message for the Dovecot comparison; with a message
 * sample, the sample.
 *
 * Thread safety: one run per process (it may install the schedule loop's
 * signal handlers).
 */
#ifndef RESTORE_VERIFY_H
#define RESTORE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dovecot.h" /* RESTORE_DOVEADM_HASH_BLOCK */
#include "err.h"     /* struct cfr_err */
#include "fetch.h"   /* RESTORE_FETCH_VAULTS_MAX */
#include "report.h"  /* struct restore_verify_result */

/* --mailbox given at most this often. */
#define VERIFY_MAILBOXES_MAX 256
/* Older snapshots verified per run by default (coverage). */
#define VERIFY_OLDER_DEFAULT 2
/* Chunk IDs per fetch request. */
#define VERIFY_BATCH 64
/* Opened chunks held that a vault sent before their turn. */
#define VERIFY_STASH_MAX ((size_t)64 << 20)
/* Block size of the content hash (see restore_verify_hash_fd): the one
 * Dovecot's text is hashed with, so the two hashes can be compared. */
#define VERIFY_HASH_BLOCK RESTORE_DOVEADM_HASH_BLOCK

struct restore_session;

struct restore_verify_opts {
    const char *mailboxes[VERIFY_MAILBOXES_MAX]; /* none: all (or sample) */
    size_t n_mailboxes;
    const char *replicas[RESTORE_FETCH_VAULTS_MAX]; /* none: configured */
    size_t n_replicas;
    uint64_t sample_mailboxes; /* 0: every mailbox */
    uint64_t sample_messages;  /* 0: every file of each snapshot */
    uint64_t seed;
    bool seed_set;       /* else from the clock, and printed */
    const char *live;    /* live Maildir root pattern (%m %u %d %%), or NULL */
    const char *scratch; /* NULL: $TMPDIR, else /tmp */
    const char *report;  /* JSON report file, or NULL */
    const char *metrics; /* Prometheus textfile, or NULL */
    const char *state;   /* coverage state file, or NULL (no coverage) */
    unsigned older;      /* older snapshots per run */
    int64_t window_ms;   /* retention window for coverage; 0: 30 days */
    bool json;           /* the report on stdout */
    bool keep;           /* keep scratch directories (they are printed) */
    bool schedule;       /* run every verify.schedule (config) until
                          * SIGTERM/SIGINT */
};

/*
 * Parses verify's options (argv after the command name) into o (zeroed
 * first). Returns 0, or -1 after printing what is wrong on stderr.
 */
int restore_verify_parse(int argc, char **argv, struct restore_verify_opts *o);

/*
 * Runs the whole verification over an opened session (whose fetcher may
 * be NULL: the replicas are reached one by one here) into res (initialised
 * by the caller). Returns the process exit code; err is set only for
 * errors that stopped the run itself (memory, the scratch directory).
 */
int restore_verify_run(struct restore_session *s,
                       const struct restore_verify_opts *o,
                       struct restore_verify_result *res, struct cfr_err *err);

/* The command: restore_cmd_verify, declared in commands.h. */

/* ---- exposed for tests ------------------------------------------------ */

/* The sort key of a name in a seeded sample (smaller: picked first). */
uint64_t restore_verify_rank(uint64_t seed, const void *name, size_t len);

/*
 * Expands a --live pattern for mailbox into out: %m the mailbox name, %u
 * the part before the last '@' (the whole name without one), %d the part
 * after it ("" without one), %% a '%'. CFR_EINVAL for another '%' escape,
 * a mailbox holding '/' or "..", or an empty result; CFR_ELIMIT when it
 * does not fit.
 */
int restore_verify_live_path(const char *pattern, const char *mailbox,
                             char *out, size_t out_size, struct cfr_err *err);

/*
 * The IMAP system flags of a Maildir info suffix (":2,FRS"): a bit set of
 * VERIFY_FLAG_*; letters after ",", keywords (a-z) ignored.
 */
#define VERIFY_FLAG_ANSWERED 1u  /* R */
#define VERIFY_FLAG_DELETED  2u  /* T */
#define VERIFY_FLAG_DRAFT    4u  /* D */
#define VERIFY_FLAG_FLAGGED  8u  /* F */
#define VERIFY_FLAG_SEEN     16u /* S */
unsigned restore_verify_info_flags(const uint8_t *info, size_t len);
/* The same bits from doveadm's flags ("\Seen \Flagged kw"). */
unsigned restore_verify_imap_flags(const char *flags);

/*
 * The content hash of an open file from its current offset to its end:
 * BLAKE2b-256 over the BLAKE2b-256 of each VERIFY_HASH_BLOCK block, so a
 * file of any size is hashed in bounded memory. *size_r gets the bytes
 * read. CFR_EIO on a read error.
 */
int restore_verify_hash_fd(int fd, uint8_t out[32], uint64_t *size_r,
                           struct cfr_err *err);

#endif /* RESTORE_VERIFY_H */
