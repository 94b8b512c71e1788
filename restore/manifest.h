/*
 * manifest.h - walks one snapshot's manifest, every page fetched from the
 * tenant's vaults, opened with the tenant's keyring and checked against
 * its keyed ID before a byte of it is parsed.
 *
 * Everything that reads a snapshot's contents (restore, ls, find, verify,
 * the retention audit) goes through this one walker, so a page that is
 * missing, damaged or forged is refused the same way everywhere.
 *
 * Memory: one page per tree level plus one envelope buffer.
 * Thread safety: a walk belongs to one thread; the fetcher and keyring
 * may be shared with others.
 */
#ifndef RESTORE_MANIFEST_H
#define RESTORE_MANIFEST_H

#include <stdbool.h>

#include "err.h"   /* struct cfr_err */
#include "fetch.h" /* struct restore_fetcher */
#include "keys.h"  /* struct cfr_keyring */
#include "snap.h"  /* struct cfr_snap_entry, struct cfr_snap_header */

struct restore_manifest;

/*
 * Starts a walk over h's manifest in key order (folder, then name). f and
 * kr are borrowed until free. CFR_ENOMEM or a reader error.
 */
int restore_manifest_open(struct restore_fetcher *f,
                          const struct cfr_keyring *kr,
                          const struct cfr_snap_header *h,
                          struct restore_manifest **m_r, struct cfr_err *err);

/*
 * 1 with *e_r filled (pointers valid until the next call), 0 after the
 * last entry, or a negative code. After an error, restore_manifest_damaged
 * tells whether the data was missing, damaged or forged (as opposed to an
 * unreachable vault or a lack of memory).
 */
int restore_manifest_next(struct restore_manifest *m,
                          struct cfr_snap_entry *e_r, struct cfr_err *err);
bool restore_manifest_damaged(const struct restore_manifest *m, int rc);

/* Accepts NULL. */
void restore_manifest_free(struct restore_manifest *m);

#endif /* RESTORE_MANIFEST_H */
