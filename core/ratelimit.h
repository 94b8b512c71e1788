/*
 * ratelimit.h - failure counting and lockout per identity and per source
 * address, in a fixed-size table.
 *
 * The vault calls cfr_ratelimit_check before it spends work on a request
 * and cfr_ratelimit_fail after every failed authentication or denied
 * request. Each key (an identity URI or a peer address, kept apart by
 * kind) has a sliding window of its recent failures: max_failures within
 * window_ms lock the key out for lockout_ms. A request is refused while
 * either its identity or its address is locked.
 *
 * Invariants:
 *  1. Memory is fixed at creation: slots entries, never more, whatever the
 *     number of distinct keys seen. A full bucket evicts its least useful
 *     entry (never a locked one while an unlocked one is there).
 *  2. At most eval_cap failures per key and eval_window_ms are evaluated;
 *     the rest are dropped after one hash lookup (CFR_RATELIMIT_DROPPED),
 *     so a flood costs the vault nothing but the lookup.
 *  3. Bucket positions come from a keyed hash with a random key, so a
 *     client cannot choose keys that collide and evict a locked entry.
 *  4. Time comes only from the injected clock (monotonic milliseconds).
 *
 * Protocol: call cfr_ratelimit_check first; call cfr_ratelimit_fail for
 * each request that then fails authentication or authorization, but not
 * for requests that check already refused (they cost nothing and must not
 * keep a lockout alive).
 *
 * Lockout state lives in memory only: a restart clears it (an attacker
 * cannot cause a restart, and the audit log keeps every failure).
 *
 * Thread safety: every function may be called from many threads at once;
 * one mutex guards the table and is held for a few dozen instructions.
 */
#ifndef CFR_RATELIMIT_H
#define CFR_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h" /* struct cfr_clock: injectable time */
#include "err.h"   /* struct cfr_err */

/* Longest key kept verbatim; longer keys are shortened with a hash suffix. */
#define CFR_RATELIMIT_KEY_MAX 256
/* Upper bound on max_failures (the window is a ring of this many times). */
#define CFR_RATELIMIT_FAILURES_MAX 64

/* Defaults used when a field of struct cfr_ratelimit_opts is 0. */
#define CFR_RATELIMIT_DEFAULT_SLOTS        4096
#define CFR_RATELIMIT_DEFAULT_MAX_FAILURES 10
#define CFR_RATELIMIT_DEFAULT_WINDOW_MS    (15 * 60 * 1000)
#define CFR_RATELIMIT_DEFAULT_LOCKOUT_MS   (15 * 60 * 1000)
#define CFR_RATELIMIT_DEFAULT_EVAL_CAP     100
#define CFR_RATELIMIT_DEFAULT_EVAL_WINDOW  (60 * 60 * 1000)

/* Bits of the result of cfr_ratelimit_fail. */
#define CFR_RATELIMIT_LOCKED_IDENTITY 0x1u /* this failure locked the id */
#define CFR_RATELIMIT_LOCKED_ADDRESS  0x2u /* this failure locked the addr */
#define CFR_RATELIMIT_DROPPED         0x4u /* over eval_cap: not evaluated */

struct cfr_ratelimit;

struct cfr_ratelimit_opts {
    size_t slots;           /* table entries for both kinds together */
    unsigned max_failures;  /* failures within window_ms that lock */
    int64_t window_ms;      /* sliding window of the failure count */
    int64_t lockout_ms;     /* how long a lockout lasts */
    unsigned eval_cap;      /* failures evaluated per key per eval window */
    int64_t eval_window_ms; /* the eval_cap window (one hour) */
};

struct cfr_ratelimit_stats {
    uint64_t evaluated;      /* failures counted against a window */
    uint64_t dropped;        /* failures past eval_cap, not evaluated */
    uint64_t lockouts;       /* lockouts started */
    uint64_t refused;        /* checks answered "locked" */
    uint64_t evictions;      /* entries pushed out of a full bucket */
    uint64_t evicted_locked; /* of which were still locked */
    size_t entries;          /* entries in use now */
    size_t slots;            /* table size */
};

/*
 * Returns owned, or NULL with err set (CFR_EINVAL for options out of range,
 * CFR_ENOMEM). opts may be NULL for the defaults; clock is borrowed and
 * must outlive the limiter.
 */
struct cfr_ratelimit *cfr_ratelimit_new(const struct cfr_ratelimit_opts *opts,
                                        struct cfr_clock *clock,
                                        struct cfr_err *err);
/* Accepts NULL. */
void cfr_ratelimit_free(struct cfr_ratelimit *rl);

/*
 * Answers whether a request from identity at addr may proceed (either may
 * be NULL or "" when unknown). Returns 0, or CFR_ELIMIT while the identity
 * or the address is locked, with *retry_after_ms_r (may be NULL) set to the
 * time left. Never allocates.
 */
int cfr_ratelimit_check(struct cfr_ratelimit *rl, const char *identity,
                        const char *addr, int64_t *retry_after_ms_r);

/*
 * Records one failure for identity and for addr (either may be NULL or ""),
 * and returns CFR_RATELIMIT_* bits: which lockouts this failure started
 * (the caller sends the notification once) and whether it was dropped.
 */
unsigned cfr_ratelimit_fail(struct cfr_ratelimit *rl, const char *identity,
                            const char *addr);

/* Forgets identity's (or, with addr, that address's) state: admin unlock. */
void cfr_ratelimit_reset(struct cfr_ratelimit *rl, const char *identity,
                         const char *addr);

void cfr_ratelimit_stats(struct cfr_ratelimit *rl,
                         struct cfr_ratelimit_stats *stats_r);

#endif /* CFR_RATELIMIT_H */
