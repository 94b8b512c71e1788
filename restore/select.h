/*
 * select.h - which snapshot a command reads: a mailbox's newest, the
 * newest at or before a time (--at), or one named by ID (--snapshot), and
 * the time expressions --at accepts.
 *
 * Times are the vault's receive times (received_ms), the same clock that
 * retention uses, never the agent's own clock.
 *
 * Thread safety: none needed; each call is independent.
 */
#ifndef RESTORE_SELECT_H
#define RESTORE_SELECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"     /* struct cfr_err */
#include "fetch.h"   /* struct restore_fetcher */
#include "keys.h"    /* struct cfr_keyring */
#include "restore.h" /* struct restore_snapshot */

/* No --at: the newest snapshot. */
#define RESTORE_AT_NEWEST INT64_MAX

/*
 * Parses an --at value into milliseconds since the epoch (UTC):
 *   "2026-11-20T10:30:00Z", "2026-11-20T10:30Z", "2026-11-20 10:30",
 *   "2026-11-20T10:30:00.123Z" (as `snapshots` prints it; 'Z' optional,
 *   every time is UTC), "2026-11-20" (end of that day, 23:59:59.999 UTC),
 *   "@1763630000" (seconds since the epoch), "now",
 *   "3d", "12h", "90m", "2w" ago relative to now_ms (also "3d ago").
 * A calendar form names a span and means its last millisecond, as the
 * day form does: "10:30" is 10:30:59.999, "@1763630000" is ...000.999,
 * ".123" is exact. Years 1970..9999 only.
 * CFR_EINVAL with a message saying what is accepted (garbage, a field
 * out of range, a date before 1970 or after 9999, a relative time
 * reaching before 1970, overflow).
 */
int restore_parse_at(const char *s, int64_t now_ms, int64_t *ms_r,
                     struct cfr_err *err);

/* What to pick; mailbox is required, at_ms and snapshot_hex optional. */
struct restore_pick {
    const char *mailbox;      /* exact name bytes */
    int64_t at_ms;            /* RESTORE_AT_NEWEST: the newest */
    const char *snapshot_hex; /* NULL, or a unique hex prefix (>= 8) */
};

/*
 * Lists the mailbox's snapshots (restore_list) and picks one: by ID
 * prefix, else the newest received at or before at_ms. The chosen one
 * must open (a newer one that does not open is an error, never skipped
 * silently: CFR_EAUTH or its open code). CFR_ENOTFOUND when none
 * qualifies (err says the oldest snapshot's time when --at is before it),
 * CFR_EINVAL for an ambiguous prefix. *failure_r (may be NULL) gets the
 * restore_failure kind of an error.
 */
int restore_pick_snapshot(struct restore_fetcher *f,
                          const struct cfr_keyring *kr,
                          const struct restore_pick *p,
                          struct restore_snapshot *out,
                          enum restore_failure *failure_r, struct cfr_err *err);

#endif /* RESTORE_SELECT_H */
