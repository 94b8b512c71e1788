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
 * An optional cache of checked pages for walks over many snapshots of a
 * mailbox, which share most pages (content-defined trees): get copies the
 * page id stored earlier into page (empty on entry) and returns 1, or
 * returns 0 (a miss, also when the copy fails); put offers a page just
 * fetched, opened and checked against id, which the cache may copy. Only
 * checked pages are put, so a hit is trusted as they were. The cache
 * belongs to the walk's thread.
 */
struct restore_page_cache {
    int (*get)(struct restore_page_cache *c, const uint8_t id[32],
               struct cfr_buf *page);
    void (*put)(struct restore_page_cache *c, const uint8_t id[32],
                const uint8_t *p, size_t len);
};

/* As restore_manifest_open, pages read through cache (NULL: none; else
 * borrowed until free). */
int restore_manifest_open_cached(struct restore_fetcher *f,
                                 const struct cfr_keyring *kr,
                                 const struct cfr_snap_header *h,
                                 struct restore_page_cache *cache,
                                 struct restore_manifest **m_r,
                                 struct cfr_err *err);

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
