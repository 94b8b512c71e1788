/*
 * maint.h - coffer-restore's maintenance commands (docs/RETENTION.md):
 *
 *   retention [--json]                    APPLY_RETENTION, then GC (which
 *                                         compacts) on every vault
 *   retention --audit [--window D] [--json]
 *                                         proves the window from every
 *                                         replica separately
 *   purge --mailbox NAME [...]            PURGE_MAILBOX, GC, then checks
 *                                         no vault lists the mailbox
 *   hold | release (--snapshot ID | --mailbox NAME [--at T]) [...]
 *   approve --vault HOST:PORT --approval ID
 *                                         a second admin approves
 *
 * Admin calls use the admin certificate (config admin_tls); reads (the
 * audit, resolving --mailbox/--at) use the restore certificate (tls).
 * Destructive ones (purge, release) may come back pending: the approval
 * IDs are printed per vault and the exit code is RESTORE_MAINT_PENDING
 * until the command is repeated with --approval HOST:PORT=ID (or --totp).
 *
 * The audit's per-mailbox analysis is exposed (restore_audit_mailbox) so
 * a unit test can drive it with made-up snapshots.
 *
 * Thread safety: commands run on the calling thread only.
 */
#ifndef RESTORE_MAINT_H
#define RESTORE_MAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

/* A destructive operation waits for a second factor on some vault. */
#define RESTORE_MAINT_PENDING 9

/* --window when none is given: the vaults' default deleted-mail window. */
#define RESTORE_AUDIT_WINDOW_DEFAULT_MS (INT64_C(30) * 24 * 3600 * 1000)

/* What the audit found in one mailbox on one replica. */
struct restore_audit_counts {
    uint64_t snapshots;      /* retained snapshots */
    uint64_t held;           /* of them held */
    uint64_t live;           /* messages in the newest snapshot */
    uint64_t deleted_within; /* deleted less than the window ago: restorable */
    uint64_t deleted_held;   /* deleted longer ago, kept by a hold */
    /* violations: */
    uint64_t deleted_beyond; /* deleted longer ago, still restorable */
    uint64_t stale;          /* snapshots superseded longer ago, not held */
    uint64_t gaps;           /* a parent gone that the window needs */
    uint64_t unreadable;     /* headers or manifests that do not open */
    uint64_t unlinked;       /* snapshots without a parent link (info) */
};

/* True when c holds a violation. */
bool restore_audit_violation(const struct restore_audit_counts *c);

/*
 * One retained snapshot as the analysis sees it: receive time, hold, its
 * header's parent link, and the identities (32-byte hashes, any order,
 * duplicates allowed) of the messages it holds.
 */
struct restore_audit_snap {
    uint8_t header_id[32];
    int64_t received_ms;
    bool held;
    bool readable; /* false: counted unreadable, no identities */
    bool has_parent;
    uint8_t parent[32];
    const uint8_t (*ids)[32];
    size_t n_ids;
};

/*
 * Analyses one mailbox's retained snapshots, oldest first (v sorted by
 * received_ms), against cutoff_ms (the vault's now minus the window):
 * a message's deletion time is the receive time of the first snapshot
 * after its last appearance. Adds into *c. CFR_ENOMEM.
 */
int restore_audit_mailbox(const struct restore_audit_snap *v, size_t n,
                          int64_t cutoff_ms, struct restore_audit_counts *c,
                          struct cfr_err *err);

/* The commands themselves are declared in commands.h. */

#endif /* RESTORE_MAINT_H */
