/*
 * sync.h - replication between vaults: anti-entropy by pull, tombstone
 * propagation and repair of damaged objects from peers
 * (docs/REPLICATION.md).
 *
 * Each vault pulls; none ever writes to a peer. For every registered
 * tenant whose allowed regions include this vault's region and a peer's,
 * a round asks the peer for its 256 bucket digests (SyncDigest), lists
 * only the buckets that differ (SyncList), then:
 *
 *  1. applies the peer's tombstones (a snapshot dropped anywhere is
 *     dropped here, and the tombstone is kept so nothing comes back);
 *  2. adopts newer hold changes;
 *  3. pulls each snapshot it lacks and holds no tombstone for: walks the
 *     reference tree (pages already counted here are complete and not
 *     descended), asks the local store what is missing, fetches that with
 *     SyncGet, checks each object's checksum as the peer reported it
 *     (and a reference page's hash against its ID), stores it under a
 *     sync lease and commits the snapshot with its sealed header. A
 *     snapshot older than the tombstone keep time is not pulled from a
 *     peer unless this tenant holds nothing yet (seeding a new replica):
 *     its tombstone may have been forgotten here.
 *
 * Repair: objects reported bad (a read that failed its checksum, a scrub)
 * are queued; the sync thread fetches each from the peers in turn,
 * vault_store_repair checks it against the checksum recorded here and
 * replaces it. Each repair (and each object no peer could repair) is
 * logged, counted and passed to on_event for notification.
 *
 * Placement: a tenant whose regions (the registry, sysdb.h) exclude this
 * vault is never synced here; a peer outside them is never asked for it.
 *
 * Thread safety: one sync thread per vault runs rounds and repairs;
 * vault_sync_trigger, vault_sync_report_bad and vault_sync_status may be
 * called from any thread.
 */
#ifndef VAULT_SYNC_H
#define VAULT_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h" /* struct cfr_clock */
#include "err.h"   /* struct cfr_err */
#include "rpc.h"   /* CFR_RPC_TENANT_MAX */
#include "store.h" /* struct vault_store, VAULT_ID_LEN */

struct vault_sysdb;
struct vault_sync;

#define VAULT_SYNC_PEERS_MAX  16
#define VAULT_SYNC_NAME_MAX   64  /* a vault name, NUL included */
#define VAULT_SYNC_REGION_MAX 64  /* NUL included */
#define VAULT_SYNC_ERROR_MAX  160 /* last error text, NUL included */

struct vault_sync_peer {
    const char *name;     /* its identity is coffer://vault/<name> */
    const char *address;  /* "host:port" */
    const char *region;   /* where it stands; placement is checked on it */
    const char *tls_name; /* name its server certificate carries; NULL:
                             the host part of address */
};

/* What happened, for notification (server.c turns it into notify.h). */
enum vault_sync_event {
    VAULT_SYNC_EV_REPAIRED = 1,   /* an object was replaced from a peer */
    VAULT_SYNC_EV_UNREPAIRED = 2, /* no peer had a good copy */
    VAULT_SYNC_EV_PEER_FAILED = 3 /* a round with a peer failed after one
                                     that succeeded (not repeated) */
};
typedef void vault_sync_event_fn(void *ctx, enum vault_sync_event ev,
                                 const char *tenant, const char *peer,
                                 const char *detail);

struct vault_sync_opts {
    struct vault_store *store; /* borrowed */
    struct vault_sysdb *sysdb; /* borrowed: tenants and their regions */
    struct cfr_clock *clock;   /* borrowed */
    const char *name;          /* this vault's name */
    const char *region;        /* this vault's region */
    const struct vault_sync_peer *peers;
    size_t n_peers; /* <= VAULT_SYNC_PEERS_MAX */
    /* PEM text (not paths): the client certificate naming
     * coffer://vault/<name>, its key, and the CA peers' server
     * certificates are checked against. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    int64_t interval_ms;    /* between rounds; 0: only when triggered */
    uint64_t bandwidth_bps; /* bytes per second pulled, all peers
                               together; 0: unlimited */
    int64_t timeout_ms;     /* per call */
    int64_t tombstone_keep_ms;
    size_t max_msg;                /* largest message accepted from a peer */
    vault_sync_event_fn *on_event; /* optional */
    void *event_ctx;
};

/* Checks opts and copies what it needs. Returns owned, started = false. */
int vault_sync_new(const struct vault_sync_opts *opts,
                   struct vault_sync **sync_r, struct cfr_err *err);
/* Starts the sync thread (the first round runs at once, unless
 * interval_ms is 0: then rounds run only when triggered). */
int vault_sync_start(struct vault_sync *s, struct cfr_err *err);
/* Stops the thread: calls in flight are cancelled; returns after join. */
void vault_sync_stop(struct vault_sync *s);
/* Stops if needed; accepts NULL. */
void vault_sync_free(struct vault_sync *s);

/* Asks for a round now: of tenant, or every tenant when NULL. */
void vault_sync_trigger(struct vault_sync *s, const char *tenant);
/*
 * Queues object id of tenant for repair (bounded queue; a full queue
 * drops the report, counted, and the next scrub finds the object again).
 */
void vault_sync_report_bad(struct vault_sync *s, const char *tenant,
                           const uint8_t id[VAULT_ID_LEN]);

/*
 * Runs one round of tenant (NULL: every tenant) with every peer, and the
 * queued repairs, on the calling thread; for tests and benchmarks that
 * want to wait for it. Returns the first error (every peer is tried).
 */
int vault_sync_round(struct vault_sync *s, const char *tenant,
                     struct cfr_err *err);

struct vault_sync_status {
    char tenant[CFR_RPC_TENANT_MAX];
    char peer[VAULT_SYNC_NAME_MAX]; /* "" for this vault's own line */
    char region[VAULT_SYNC_REGION_MAX];
    uint64_t snapshots; /* own line */
    int64_t newest_ms;  /* own line */
    int64_t last_attempt_ms;
    int64_t last_ok_ms;
    char last_error[VAULT_SYNC_ERROR_MAX];
    uint64_t snapshots_pulled;
    uint64_t objects_pulled;
    uint64_t bytes_pulled;
    uint64_t tombstones_applied;
    uint64_t repairs;         /* own line */
    int64_t last_repair_ms;   /* own line */
    uint64_t repair_failures; /* own line */
    uint64_t behind;          /* peer line: the peer's snapshots the last
                                 round tried to pull and did not get (not
                                 those tombstoned here or too old to pull);
                                 0 after a round that completed, and when
                                 the compare itself failed (last_error) */
};

/*
 * Calls fn for tenant (NULL: every tenant this vault syncs) with its own
 * line first, then one line per peer allowed for it. Counters are since
 * the vault started; the own line sums the peers' counters and carries
 * their latest attempt and success times.
 */
typedef int vault_sync_status_fn(void *ctx, const struct vault_sync_status *st);
int vault_sync_status(struct vault_sync *s, const char *tenant,
                      vault_sync_status_fn *fn, void *ctx, struct cfr_err *err);

#endif /* VAULT_SYNC_H */
