/*
 * store.h - the vault's storage semantics over core/kv.h: objects,
 * snapshots, reference counting, upload leases, garbage collection,
 * retention, holds, purge and tombstones, per tenant.
 *
 * No RPC, no authorization here (server.c does both): this layer assumes
 * its caller already decided who may do what, and enforces only the data
 * invariants, which hold whoever calls:
 *
 *  1. A snapshot record exists only if every object its reference list
 *     names (transitively, through reference pages) is present. Commit
 *     checks it and writes the record in one synced batch.
 *  2. An object is deleted only when no snapshot references it AND no live
 *     lease protects it. Objects are protected by a lease when put under
 *     it or reported present by vault_store_missing under it.
 *  3. Retention and purge remove snapshot records first (leaving a
 *     tombstone), then GC removes what became unreferenced, then
 *     compaction removes the bytes from disk.
 *  4. Times that retention depends on are this vault's clock at commit
 *     (received_ms), never a time a client sent. A replica pulling a
 *     snapshot passes the peer's age of it mapped onto this clock
 *     (vault_commit.received_ms, never later than now), so each mailbox
 *     keeps the order in which its snapshots were taken.
 *  5. Writes are acknowledged only after a synced WAL write. Any write I/O
 *     error leaves the tenant failed (kv.h); the vault then stops.
 *
 * Reference counting follows the page trees (snap.h): a reference page's
 * count is the number of snapshots and parent pages that name it; only
 * when a page is new (count 0 -> 1) are its children counted, and only
 * when it drops to 0 are they uncounted. A commit therefore costs in
 * proportion to the pages that changed, not to the mailbox size.
 *
 * Thread safety: all functions may be called from many threads. Per
 * tenant, commits, lease protection and GC sweeps serialise on a tenant
 * lock held briefly; gets do not take it, and puts take it only to record
 * their lease protection (one small synced write), never while storing
 * the objects' bytes. Retention, purge and GC of one tenant run one at a
 * time (a second caller waits).
 *
 * On-disk layouts, the refcount walk, lease rules and GC order:
 * docs/FORMAT.md.
 */
#ifndef VAULT_STORE_H
#define VAULT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"   /* struct cfr_buf */
#include "clock.h" /* struct cfr_clock */
#include "err.h"   /* struct cfr_err */

#define VAULT_ID_LEN     32
#define VAULT_LEASE_LEN  16
#define VAULT_IDS_MAX    4096
#define VAULT_TENANT_MAX 64
#define VAULT_HEADER_MAX 8192

/* Object kinds, as in proto ObjectKind. */
enum vault_object_kind {
    VAULT_OBJ_SEALED = 1,   /* an envelope; opaque to the vault */
    VAULT_OBJ_REF_PAGE = 2, /* clear reference page; id = BLAKE2b-256 */
};

struct vault_store;
struct vault_tenant;

/*
 * Called (on the reading thread, without any store lock held) when an
 * object fails its checksum on read, so replication can repair it from a
 * peer (vault/sync.h). Must not block.
 */
typedef void vault_corrupt_fn(void *ctx, const char *tenant,
                              const uint8_t id[VAULT_ID_LEN]);

struct vault_store_opts {
    const char *dir;              /* holds one directory per tenant */
    size_t cache_bytes;           /* shared block/blob cache */
    struct cfr_clock *clock;      /* borrowed; retention and leases read it */
    int64_t lease_max_ms;         /* cap on a lease's lifetime */
    int64_t tombstone_keep_ms;    /* how long tombstones are kept */
    vault_corrupt_fn *on_corrupt; /* optional */
    void *on_corrupt_ctx;
};

/* Returns owned, or NULL with err set. */
struct vault_store *vault_store_open(const struct vault_store_opts *opts,
                                     struct cfr_err *err);
/* Closes every tenant database; accepts NULL. */
void vault_store_close(struct vault_store *st);

/*
 * Returns the open tenant named name (lower-case [a-z0-9._-], 1..64),
 * opening or, when create is true, creating its database. The handle is
 * borrowed from the store and valid until vault_store_close.
 * CFR_ENOTFOUND when it does not exist and create is false.
 */
struct vault_tenant *vault_store_tenant(struct vault_store *st,
                                        const char *name, bool create,
                                        struct cfr_err *err);
/*
 * Removes a tenant's database entirely (account termination). Closes its
 * handle first: the caller must make sure no other thread still uses it
 * (its handle is invalid afterwards).
 */
int vault_store_tenant_drop(struct vault_store *st, const char *name,
                            struct cfr_err *err);
/* Calls fn for each tenant directory present. */
typedef int vault_tenant_fn(void *ctx, const char *name);
int vault_store_tenants(struct vault_store *st, vault_tenant_fn *fn, void *ctx,
                        struct cfr_err *err);

/* -- leases ------------------------------------------------------------ */

int vault_lease_open(struct vault_tenant *t, const uint8_t *session_pub,
                     size_t session_len, int64_t ttl_ms,
                     uint8_t lease_id_r[VAULT_LEASE_LEN], int64_t *expires_ms_r,
                     struct cfr_err *err);
/*
 * Ends a lease early (after a commit); unknown leases are ignored. Its
 * protections go with it: objects put under it and still unreferenced
 * become collectable. ttl_ms <= 0 or above lease_max_ms in
 * vault_lease_open means lease_max_ms; session_len is at most 255.
 */
int vault_lease_close(struct vault_tenant *t,
                      const uint8_t lease_id[VAULT_LEASE_LEN],
                      struct cfr_err *err);

/* -- objects ----------------------------------------------------------- */

struct vault_object {
    const uint8_t *id; /* VAULT_ID_LEN bytes */
    enum vault_object_kind kind;
    const uint8_t *data;
    size_t len;
};

/*
 * Which of ids[0..n) are absent: writes their indexes, ascending, to
 * missing_r and the count to *n_missing_r. When lease_id is not NULL, the
 * present ones are protected by that lease (CFR_ENOTFOUND if the lease is
 * unknown or expired). n <= VAULT_IDS_MAX.
 */
int vault_store_missing(struct vault_tenant *t, const uint8_t *lease_id,
                        const uint8_t (*ids)[VAULT_ID_LEN], size_t n,
                        uint32_t *missing_r, size_t *n_missing_r,
                        struct cfr_err *err);

struct vault_put_stats {
    uint64_t stored;
    uint64_t already_present;
    uint64_t bytes;
};

/*
 * Stores objs[0..n) under a live lease in one synced batch. Checks each:
 * a sealed object must parse as an envelope header (cfr_env_peek is not
 * available to the vault: it checks length and version byte only); a
 * reference page must hash to its id and pass cfr_snap_refs_page_check.
 * Putting an existing ID again is a no-op (append-only: different bytes
 * for an existing ID are refused, CFR_EEXIST). CFR_ECORRUPT names the bad
 * object; nothing of the batch is stored then. On CFR_EEXIST the other
 * objects of the batch may have been stored (content-addressed, harmless:
 * they are protected by the lease like any other put). CFR_ENOTFOUND when
 * the lease is unknown or expired.
 */
int vault_store_put(struct vault_tenant *t,
                    const uint8_t lease_id[VAULT_LEASE_LEN],
                    const struct vault_object *objs, size_t n,
                    struct vault_put_stats *stats_r, struct cfr_err *err);

/*
 * Reads one object, verifying its stored checksum, into out (replacing
 * its contents). CFR_ENOTFOUND, CFR_ECORRUPT (checksum mismatch: also
 * counted for repair), *kind_r set on success.
 */
int vault_store_get(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                    struct cfr_buf *out, enum vault_object_kind *kind_r,
                    struct cfr_err *err);

/* -- snapshots --------------------------------------------------------- */

struct vault_tree_root {
    uint8_t id[VAULT_ID_LEN];
    uint32_t height;
    uint64_t entries;
};

struct vault_snapshot {
    uint8_t header_id[VAULT_ID_LEN];
    uint8_t mailbox_id[VAULT_ID_LEN];
    int64_t received_ms;
    struct vault_tree_root refs;
    uint32_t flags;
    bool held;
    int64_t hold_changed_ms; /* this vault's clock when held last changed,
                                or the peer's change it adopted; 0 never */
};

struct vault_commit {
    const uint8_t *lease_id; /* VAULT_LEASE_LEN */
    const uint8_t *mailbox_id;
    const uint8_t *header_id;
    const uint8_t *header; /* sealed header envelope */
    size_t header_len;     /* <= VAULT_HEADER_MAX */
    struct vault_tree_root refs;
    uint32_t flags;
    bool hold_previous;  /* hold the mailbox's newest snapshot first */
    int64_t received_ms; /* 0: now; else the record's time (replication),
                            clamped to now */
};

/*
 * Commits a snapshot: walks the reference tree from refs (pages and the
 * objects they name must all be present, else CFR_ENOTFOUND naming the
 * first missing ID and nothing changes), counts references, writes the
 * record with received_ms = c->received_ms when set and earlier than now,
 * else now, in one synced batch. Committing the same
 * header_id again returns the existing record with *already_r = true
 * (CFR_EEXIST if the mailbox, root or header bytes differ). When
 * c->lease_id is not NULL the lease must be live (CFR_ENOTFOUND
 * otherwise); it is not needed for correctness (presence is checked under
 * the tenant lock), so replication may pass NULL. The commit does not end
 * the lease (vault_lease_close does, or expiry). CFR_ECORRUPT when a
 * page of the tree is malformed or at the wrong level; height must be
 * 1..8 (CFR_EINVAL). CFR_EEXIST when header_id has a tombstone here: a
 * dropped snapshot never comes back.
 */
int vault_store_commit(struct vault_tenant *t, const struct vault_commit *c,
                       struct vault_snapshot *snap_r, bool *already_r,
                       struct cfr_err *err);

/* Calls fn for each snapshot (of mailbox_id, or all when NULL), oldest
 * first per mailbox. header is the sealed header when with_headers. */
typedef int vault_snapshot_fn(void *ctx, const struct vault_snapshot *s,
                              const uint8_t *header, size_t header_len);
int vault_store_snapshots(struct vault_tenant *t, const uint8_t *mailbox_id,
                          bool with_headers, vault_snapshot_fn *fn, void *ctx,
                          struct cfr_err *err);

/* -- retention, holds, purge, GC --------------------------------------- */

struct vault_maint_stats {
    uint64_t snapshots_removed;
    uint64_t objects_removed;
    uint64_t bytes_removed;
    uint64_t bad_objects;
};

int vault_store_hold(struct vault_tenant *t,
                     const uint8_t header_id[VAULT_ID_LEN], bool held,
                     struct cfr_err *err);
/*
 * Drops every snapshot whose successor (the next snapshot of its mailbox,
 * which superseded it) was received more than window_ms before now:
 * never the newest of a mailbox, never a held one; leaves tombstones.
 */
int vault_store_retention(struct vault_tenant *t, int64_t window_ms,
                          struct vault_maint_stats *stats_r,
                          struct cfr_err *err);
/* Drops every snapshot of a mailbox, held or not; leaves tombstones. */
int vault_store_purge_mailbox(struct vault_tenant *t,
                              const uint8_t mailbox_id[VAULT_ID_LEN],
                              struct vault_maint_stats *stats_r,
                              struct cfr_err *err);
/*
 * Deletes unreferenced objects that no live lease protects, in small
 * batches (so uploads and commits go on), then compacts them off disk.
 */
int vault_store_gc(struct vault_tenant *t, struct vault_maint_stats *stats_r,
                   struct cfr_err *err);
/* Checks every stored object's checksum; fn gets each bad ID. */
typedef void vault_bad_fn(void *ctx, const uint8_t id[VAULT_ID_LEN],
                          const struct cfr_err *why);
int vault_store_scrub(struct vault_tenant *t, vault_bad_fn *fn, void *ctx,
                      struct vault_maint_stats *stats_r, struct cfr_err *err);

/* -- replication (vault/sync.c, the Sync* handlers of server.c) -------- */

#define VAULT_SYNC_BUCKETS 256 /* bucket = first byte of a header ID */

/*
 * Digests of the tenant's snapshot set, one per bucket: BLAKE2b-256 over
 * the bucket's entries in header-ID order, a snapshot contributing
 * header_id || 'S' || held (0/1) and a tombstone header_id || 'T'; 32
 * zero bytes for an empty bucket. Times are left out (each vault stamps
 * received_ms and dropped_ms with its own clock), so two replicas holding
 * the same snapshots, holds and tombstones have equal digests.
 */
int vault_store_digest(struct vault_tenant *t,
                       uint8_t buckets_r[VAULT_SYNC_BUCKETS][VAULT_ID_LEN],
                       uint64_t *snapshots_r, uint64_t *tombstones_r,
                       struct cfr_err *err);

/*
 * Calls snap_fn (with the sealed header) for each snapshot and tomb_fn for
 * each tombstone whose header ID's first byte b has want[b] set, each in
 * header-ID order. Either callback may be NULL; a non-zero return stops
 * the walk and is returned.
 */
int vault_store_sync_list(struct vault_tenant *t,
                          const bool want[VAULT_SYNC_BUCKETS],
                          vault_snapshot_fn *snap_fn,
                          int (*tomb_fn)(void *ctx,
                                         const uint8_t header_id[VAULT_ID_LEN],
                                         int64_t dropped_ms),
                          void *ctx, struct cfr_err *err);

/* Sets *has_r when a tombstone for header_id is kept here. */
int vault_store_has_tombstone(struct vault_tenant *t,
                              const uint8_t header_id[VAULT_ID_LEN],
                              bool *has_r, struct cfr_err *err);

/*
 * Applies a peer's tombstone: drops the snapshot, held or not (a deletion
 * made anywhere is final), leaving a tombstone here; an absent snapshot
 * still gets the tombstone, so a third replica cannot bring it back
 * through this one. *dropped_r when a snapshot was removed. The tombstone
 * is stamped dropped_ms (the peer's deletion time mapped onto this clock;
 * 0 or later than now: now), so it expires with the original. Does not
 * wait for the tenant's retention, purge or GC (a GC run may take
 * minutes): CFR_EUNAVAIL while one runs, nothing changed; try again.
 */
int vault_store_drop_synced(struct vault_tenant *t,
                            const uint8_t header_id[VAULT_ID_LEN],
                            int64_t dropped_ms, bool *dropped_r,
                            struct cfr_err *err);

/*
 * The tenant's seeding marker: set by replication when it finds the tenant
 * holding nothing (no snapshots, no tombstones), cleared after a round that
 * pulled everything a peer offered. While set, the tombstone-keep guard
 * does not apply (a new replica takes every snapshot). Persisted, so a
 * seed spanning several passes or a restart stays one.
 */
int vault_store_seed_get(struct vault_tenant *t, bool *seeding_r,
                         struct cfr_err *err);
int vault_store_seed_set(struct vault_tenant *t, bool seeding,
                         struct cfr_err *err);

/*
 * Adopts a peer's hold state when its change is newer than this vault's
 * (equal times: held wins). *applied_r when the record changed.
 * vault_store_hold stamps hold_changed_ms with this vault's clock.
 */
int vault_store_hold_synced(struct vault_tenant *t,
                            const uint8_t header_id[VAULT_ID_LEN], bool held,
                            int64_t changed_ms, bool *applied_r,
                            struct cfr_err *err);

/*
 * Whether reference page id is counted here (some committed snapshot
 * references it): then, by invariant 1, everything below it is present
 * and a pull need not descend into it.
 */
int vault_store_page_counted(struct vault_tenant *t,
                             const uint8_t id[VAULT_ID_LEN], bool *counted_r,
                             struct cfr_err *err);

/*
 * As vault_store_get, also giving the checksum this vault recorded when
 * it stored the object (BLAKE2b-256 of the stored bytes, docs/FORMAT.md);
 * a peer recomputes it over what it received.
 */
int vault_store_get_checked(struct vault_tenant *t,
                            const uint8_t id[VAULT_ID_LEN], struct cfr_buf *out,
                            enum vault_object_kind *kind_r,
                            uint8_t checksum_r[VAULT_ID_LEN],
                            struct cfr_err *err);

/*
 * Repair: replaces the bytes of object id, which fails its checksum here,
 * with a copy fetched from a peer. The copy must match the checksum and
 * size this vault recorded when it first stored id (CFR_ECORRUPT
 * otherwise: nothing is written); a reference page must also hash to its
 * ID. CFR_ENOTFOUND when id is not stored here (nothing to repair); 0 with
 * *repaired_r false when the stored copy reads fine after all.
 */
int vault_store_repair(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                       enum vault_object_kind kind, const uint8_t *data,
                       size_t len, bool *repaired_r, struct cfr_err *err);

/* Tombstones: header IDs of dropped snapshots, for replication. */
typedef int vault_tombstone_fn(void *ctx, const uint8_t header_id[VAULT_ID_LEN],
                               int64_t dropped_ms);
int vault_store_tombstones(struct vault_tenant *t, vault_tombstone_fn *fn,
                           void *ctx, struct cfr_err *err);

struct vault_tenant_stats {
    uint64_t objects;
    uint64_t object_bytes;
    uint64_t snapshots;
    uint64_t live_leases;
    uint64_t corrupt_reads; /* CFR_ECORRUPT object reads (gets, reference
                               walks) since the tenant was opened */
};
int vault_store_stats(struct vault_tenant *t, struct vault_tenant_stats *st_r,
                      struct cfr_err *err);

#endif /* VAULT_STORE_H */
