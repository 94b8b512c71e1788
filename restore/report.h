/*
 * report.h - what a verify run (the scheduled recovery test) found, and
 * how that becomes operator signals: a JSON report, a Prometheus
 * text-format metrics file for node_exporter's textfile collector, a small
 * state file remembering earlier runs and which snapshots were verified
 * when (coverage), notifications on failure and on recovery, and the
 * `--schedule` daemon loop.
 *
 * The verify engine (verify.c) fills a struct restore_verify_result through
 * the restore_verify_add_* functions (they copy every string and keep the
 * failure counts consistent) and may then set the plain counters of the
 * replicas and mailboxes it added directly. A run is:
 *
 *   restore_report_state_load(state_path, &prev)   -- missing file: empty
 *   ... verify fills result (restore_report_state_pick helps choose
 *       which snapshots to check: never-verified and oldest-verified first)
 *   restore_report_state_record(&prev, &result, retained, n, window, ...)
 *                                         -- fills coverage_ratio etc.
 *   restore_report_notify(&config, prev_failed, &result, ...)
 *   restore_report_json(stdout or report file, &result)
 *   restore_report_metrics(metrics_path, &result, ...)
 *   restore_report_state_save(state_path, &prev)
 *
 * Invariants:
 *  1. result.ok is false as soon as one failure was added; a run with no
 *     replica at all is not ok either (restore_verify_result_finish).
 *  2. Every failure is counted (replica failures_by_kind, n_failures_total)
 *     even when the stored list is full (RESTORE_VERIFY_FAILURES_KEPT);
 *     then failures_dropped says how many were not kept.
 *  3. Files (metrics, state, report) are replaced atomically: a temp file
 *     in the same directory, fsync, rename, fsync of the directory; a
 *     reader never sees half a file and a crash leaves the old one.
 *  4. Nothing here writes a secret: failure details come from the engine
 *     and must not hold key material; the SMTP password is read from its
 *     file only to hand it to the notifier.
 *
 * Thread safety: a result and a state belong to one thread at a time. The
 * schedule loop installs SIGTERM/SIGINT handlers for the process.
 */
#ifndef RESTORE_REPORT_H
#define RESTORE_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h" /* struct restore_config, restore_notify_settings */
#include "err.h"    /* struct cfr_err */
#include "id.h"     /* CFR_ID_LEN */

/* Hex of a snapshot header ID plus the terminator. */
#define RESTORE_REPORT_HEX_LEN (2 * CFR_ID_LEN + 1)
/* Failures kept with their detail; more are only counted. */
#define RESTORE_VERIFY_FAILURES_KEPT 1000
/* Failures named in one notification. */
#define RESTORE_REPORT_NOTIFY_FAILURES 5
/* Index meaning "no replica" for a failure that concerns the run. */
#define RESTORE_VERIFY_NO_REPLICA ((size_t)-1)

/* Stable: kind names appear in JSON, metrics labels and notifications. */
enum restore_verify_kind {
    RESTORE_VERIFY_UNREACHABLE = 0, /* "unreachable": replica did not answer */
    RESTORE_VERIFY_CHUNK_MISSING,   /* "chunk_missing" */
    RESTORE_VERIFY_CHUNK_CORRUPT,   /* "chunk_corrupt": tag or hash wrong */
    RESTORE_VERIFY_CONTENT,         /* "content": restored bytes differ */
    RESTORE_VERIFY_MESSAGE_MISSING, /* "message_missing": not restored */
    RESTORE_VERIFY_MESSAGE_EXTRA,   /* "message_extra": not in snapshot */
    RESTORE_VERIFY_METADATA,        /* "metadata": flags, size, Message-ID */
    RESTORE_VERIFY_DOVECOT,         /* "dovecot": doveadm disagrees/failed */
    RESTORE_VERIFY_LIVE,            /* "live": differs from the live store */
    RESTORE_VERIFY_SNAPSHOT,        /* "snapshot": header/manifest unusable */
    RESTORE_VERIFY_IO,              /* "io": scratch space write failed */
    RESTORE_VERIFY_OTHER,           /* "other" */
    RESTORE_VERIFY_KIND_COUNT
};

/* "chunk_corrupt", ...; "other" for an unknown value. */
const char *restore_verify_kind_name(enum restore_verify_kind kind);

struct restore_verify_failure {
    enum restore_verify_kind kind;
    size_t replica;   /* index into result.replicas or NO_REPLICA */
    char *mailbox;    /* NULL when not about one mailbox */
    char *folder;     /* NULL when not about one folder */
    char *message;    /* Maildir file name (no flags), or NULL */
    char *message_id; /* Message-ID header value, or NULL */
    char *detail;     /* human text, never a secret */
};

struct restore_verify_mailbox {
    char *name;
    char snapshot_hex[RESTORE_REPORT_HEX_LEN]; /* header ID */
    int64_t received_ms;       /* when the vault received the snapshot */
    uint64_t messages_total;   /* in the snapshot */
    uint64_t messages_checked; /* compared (the sample) */
    uint64_t messages_live;    /* also compared with the live store */
    uint64_t bytes;            /* restored and checked */
    double seconds;            /* restore + check wall time */
    uint64_t n_failures;       /* failures added for this mailbox */
};

struct restore_verify_replica {
    char *address;
    bool reachable;
    struct restore_verify_mailbox *mailboxes;
    size_t n_mailboxes, cap_mailboxes;
    /* Totals; restore_verify_result_finish fills them from the mailboxes
       unless seconds was set (seconds then includes connecting). */
    uint64_t messages_checked;
    uint64_t bytes;
    double seconds;
    uint64_t n_failures;
    uint64_t failures_by_kind[RESTORE_VERIFY_KIND_COUNT];
};

struct restore_verify_result {
    char *tenant;       /* optional */
    int64_t started_ms; /* wall clock */
    int64_t finished_ms;
    uint64_t seed;                /* of the sample; stated so it can be rerun */
    uint64_t sample_mailboxes;    /* asked for; 0: all */
    uint64_t sample_messages;     /* per mailbox; 0: all */
    uint64_t mailboxes_available; /* snapshots (newest per mailbox) seen */
    bool ok;

    struct restore_verify_replica *replicas;
    size_t n_replicas, cap_replicas;

    struct restore_verify_failure *failures; /* the first KEPT ones */
    size_t n_failures, cap_failures;
    uint64_t n_failures_total;
    uint64_t failures_dropped;

    /* Filled by restore_report_state_record. */
    double coverage_ratio; /* retained snapshots verified in window */
    uint64_t snapshots_retained;
    uint64_t snapshots_covered;
    int64_t last_success_ms; /* 0: never */

    /* Filled by restore_report_notify; the verify verdict is unchanged. */
    bool notified;            /* an event was due and posted */
    const char *notify_event; /* static "verify.failed"/"verify.recovered" */
    char *notify_error;       /* delivery failure, or NULL */
};

void restore_verify_result_init(struct restore_verify_result *r);
void restore_verify_result_fini(struct restore_verify_result *r);

/* Appends a replica (reachable = true until told otherwise). */
int restore_verify_add_replica(struct restore_verify_result *r,
                               const char *address, size_t *idx_r,
                               struct cfr_err *err);

/* Appends a mailbox result to replica ri; snapshot_id may be NULL. */
int restore_verify_add_mailbox(struct restore_verify_result *r, size_t ri,
                               const char *name,
                               const uint8_t snapshot_id[CFR_ID_LEN],
                               int64_t received_ms, size_t *idx_r,
                               struct cfr_err *err);

/*
 * Records a failure: counted at once (run, replica ri unless NO_REPLICA,
 * and the mailbox named `mailbox` of that replica when there is one), kept
 * with copies of the strings while fewer than RESTORE_VERIFY_FAILURES_KEPT
 * are kept. Sets r->ok = false; an UNREACHABLE failure also clears the
 * replica's reachable. Any string may be NULL. Returns 0 or CFR_ENOMEM
 * (the failure is still counted).
 */
int restore_verify_add_failure(struct restore_verify_result *r,
                               enum restore_verify_kind kind, size_t ri,
                               const char *mailbox, const char *folder,
                               const char *message, const char *message_id,
                               struct cfr_err *err, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

/*
 * Ends a run: sets finished_ms when 0, fills replica totals and makes ok
 * false when there is no replica or a failure was counted. Idempotent.
 */
void restore_verify_result_finish(struct restore_verify_result *r,
                                  int64_t now_ms);

/* The process exit code for a finished run: RESTORE_EXIT_OK or _VERIFY. */
int restore_report_exit_code(const struct restore_verify_result *r);

/*
 * Writes the whole result as one JSON object followed by a newline.
 * Returns 0 or CFR_EIO when the stream reports an error.
 */
int restore_report_json(FILE *f, const struct restore_verify_result *r);

/* Writes the JSON report to path atomically (invariant 3). */
int restore_report_json_file(const char *path,
                             const struct restore_verify_result *r,
                             struct cfr_err *err);

/*
 * Writes the Prometheus text-format metrics file atomically (invariant 3;
 * the temp name starts with '.' and does not end in .prom, so the textfile
 * collector never reads it). Metrics, all gauges:
 *   coffer_verify_last_run_timestamp_seconds
 *   coffer_verify_last_success_timestamp_seconds   (0: never)
 *   coffer_verify_ok{replica}                       (1/0; overall without)
 *   coffer_verify_reachable{replica}
 *   coffer_verify_messages_total{replica}           (checked)
 *   coffer_verify_failures_total{replica,kind}      (every kind, 0s too)
 *   coffer_verify_failures                          (all, run-wide too)
 *   coffer_verify_bytes{replica}
 *   coffer_verify_duration_seconds{replica}
 *   coffer_verify_throughput_bytes_per_second{replica}
 *   coffer_verify_coverage_ratio
 *   coffer_verify_notify_failed                     (1: delivery failed)
 * Label values are escaped per the text format (\\, \", \n).
 */
int restore_report_metrics(const char *path,
                           const struct restore_verify_result *r,
                           struct cfr_err *err);

/* ---- state file: earlier runs and coverage ---------------------------- */

struct restore_report_snap {
    char hex[RESTORE_REPORT_HEX_LEN];
    int64_t verified_ms; /* last run that verified it on every replica */
};

struct restore_report_state {
    bool have_last; /* false: no run recorded yet */
    bool last_ok;
    int64_t last_run_ms;
    int64_t last_success_ms; /* 0: never */
    uint64_t runs;
    struct restore_report_snap *snaps;
    size_t n_snaps, cap_snaps;
};

/*
 * Loads the state file (a JSON object written by _save). A missing file
 * gives an empty state (a first run); a damaged one is CFR_ECORRUPT with
 * err naming the file (verify then refuses to run rather than silently
 * forgetting coverage; the operator removes the file to start over).
 */
int restore_report_state_load(const char *path,
                              struct restore_report_state *st_r,
                              struct cfr_err *err);
int restore_report_state_save(const char *path,
                              const struct restore_report_state *st,
                              struct cfr_err *err);
void restore_report_state_fini(struct restore_report_state *st);

/*
 * Takes an exclusive flock(2) on "<path>.lock" (created 0600 next to the
 * state file) for a whole run, load to save: two runs at once (the timer
 * and a manual run) would otherwise both load the same state and the one
 * saving last would drop the other's coverage. When another run holds
 * it, prints one line on stderr saying so and waits for it (a verify run
 * is bounded by its timeouts); a stop request (SIGTERM in --schedule)
 * ends the wait with CFR_EUNAVAIL. The lock goes with the process, so a
 * crashed run never leaves it held. *fd_r gets the descriptor for
 * _unlock. CFR_EIO when the lock file cannot be opened or locked,
 * CFR_ELIMIT for a path too long.
 */
int restore_report_state_lock(const char *path, int *fd_r, struct cfr_err *err);
/* Releases a lock from _lock (and closes fd); -1 is ignored. */
void restore_report_state_unlock(int fd);

/* When the snapshot (hex header ID) was last verified; 0: never. */
int64_t restore_report_state_verified_ms(const struct restore_report_state *st,
                                         const char *hex);

/* True when the previous run is recorded and failed. */
bool restore_report_state_prev_failed(const struct restore_report_state *st);

/*
 * Coverage order: fills order_r[0..n) with a permutation of 0..n-1 putting
 * never-verified snapshots first, then the least recently verified; ties
 * keep their index order. Verify samples from the front of this order so
 * every retained snapshot is reached within the retention window.
 */
void restore_report_state_pick(const struct restore_report_state *st,
                               const char *const *hex, size_t n,
                               size_t *order_r);

/*
 * Records a finished run in st: last_ok/last_run/last_success; every
 * mailbox snapshot that every replica of the run checked without a failure
 * (and with every replica reachable) gets verified_ms = finished_ms; entries
 * for snapshots not in retained[0..n_retained) are dropped (when
 * retained is NULL nothing is dropped). Then fills r->coverage_ratio as
 * the share of retained snapshots verified within window_ms before
 * finished_ms (1.0 when nothing is retained), snapshots_retained/_covered
 * and last_success_ms.
 */
int restore_report_state_record(struct restore_report_state *st,
                                struct restore_verify_result *r,
                                const char *const *retained, size_t n_retained,
                                int64_t window_ms, struct cfr_err *err);

/* ---- notifications ----------------------------------------------------- */

/*
 * Posts "verify.failed" when r failed, "verify.recovered" when r passed and
 * prev_failed, and nothing otherwise, to every configured webhook and to
 * the mail recipients (core/notify.h). Fields: tenant, replicas, failures
 * (count), the first RESTORE_REPORT_NOTIFY_FAILURES failures as
 * "failure.N" ("kind replica mailbox/folder/message <Message-ID>: detail")
 * and the seed. Waits at most ns->timeout_ms * (retries + 1) for delivery.
 * Returns 0 when nothing was due or everything was delivered; otherwise
 * sets r->notify_error, returns the error (CFR_EUNAVAIL, CFR_ELIMIT,
 * CFR_ECONFIG for an unreadable password file) and leaves r->ok as it
 * was: a notification problem never turns a verify result around.
 */
int restore_report_notify(const struct restore_notify_settings *ns,
                          bool prev_failed, struct restore_verify_result *r,
                          struct cfr_err *err);

/* ---- --schedule -------------------------------------------------------- */

/*
 * One run. Returns an exit code (RESTORE_EXIT_*), which is logged. A long
 * run should poll restore_report_schedule_stopping() and give up early
 * when it turns true.
 */
typedef int restore_report_run_fn(void *ctx);

/*
 * Calls run(ctx) at once and then every interval_ms (measured from the
 * start of the previous run, plus a random delay in [0, jitter_ms) each
 * time); a run longer than the interval is followed immediately by the
 * next, never overlapped. Installs SIGTERM and SIGINT handlers that ask it
 * to stop: a run in progress is told through
 * restore_report_schedule_stopping() and waited for, then the loop returns
 * 0. Returns CFR_EINVAL for interval_ms < 1000 or jitter_ms < 0, CFR_EIO
 * when the handlers cannot be installed.
 */
int restore_report_schedule_loop(int64_t interval_ms, int64_t jitter_ms,
                                 restore_report_run_fn *run, void *ctx,
                                 struct cfr_err *err);

/* True once a stop was asked for (signal or _stop). */
bool restore_report_schedule_stopping(void);

/* Asks the loop to stop, as SIGTERM does (async-signal-safe; for tests). */
void restore_report_schedule_stop(void);

#endif /* RESTORE_REPORT_H */
