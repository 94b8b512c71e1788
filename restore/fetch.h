/*
 * fetch.h - reads objects back from the tenant's vaults for a restore:
 * snapshot records, single objects (manifest pages) and the chunks of
 * one file, in order, in batches, with bounded memory.
 *
 * A fetcher holds one gRPC channel per configured vault (restore role
 * certificate) and a current vault. restore_fetcher_new asks every vault
 * Health at once (each call bounded by the call timeout) and makes
 * current the healthy one with the lowest round trip (the best of three
 * after the call that connects; round trips within 1 ms plus a fifth of
 * each other count as equal and the config order decides, as it does on
 * one LAN). Every
 * call names what it needs by ID and gets bytes back exactly as stored;
 * nothing here holds a key or opens an envelope (restore.c does).
 *
 * Failover (issue 5), all inside fetch.c so the caller never sees which
 * replica served what:
 *  - a vault that lacks an object: the others are asked for exactly the
 *    IDs still outstanding (logged at warn, counted per vault); the
 *    current vault stays current.
 *  - a call to a vault that fails (unavailable, deadline, the stream
 *    broken, a refusal): that vault is marked failed with the time and
 *    is not made current again before a back-off (opts.backoff_ms,
 *    doubling on each new failure); the next healthy vault by rank
 *    becomes current (sticky: the restore does not go back) and the
 *    batch goes on from where the stream stopped, so objects already
 *    handed to the callback are never asked again. Worker threads that
 *    see the same outage switch once: only a failure of the vault that is
 *    still current moves the current one.
 *  - a vault in back-off is still asked, last, for objects no other
 *    vault has: a slow restore beats a failed one.
 *  - an object that arrives but does not open (damaged on that replica)
 *    is the caller's to judge: restore_fetcher_get_from tells its
 *    callback which vault served each object, restore_fetcher_damaged
 *    records (and logs) the bad copy, and the same call with that vault
 *    excluded asks the others for a good one.
 *
 * Memory per call: one stream message (at most opts.max_msg, the vault
 * sends about its get_batch, 4 MiB by default) and its decoded copy,
 * plus what the caller's callback keeps. A batch names at most
 * RESTORE_FETCH_IDS_MAX IDs (the vault's request limit).
 *
 * Thread safety: a fetcher may be shared by threads once created (gRPC
 * channels are; the current vault, failures and counters sit behind one
 * mutex, never held across a call). restore_fetcher_free needs exclusive
 * access.
 */
#ifndef RESTORE_FETCH_H
#define RESTORE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"               /* struct cfr_buf outputs */
#include "coffer_vault.pb-c.h" /* Coffer__V1__ListSnapshotsResponse */
#include "err.h"               /* struct cfr_err */

#define RESTORE_FETCH_ID_LEN 32
/* IDs per GetObjects request: the vault refuses more. */
#define RESTORE_FETCH_IDS_MAX 4096
/* Vaults a fetcher knows at most. */
#define RESTORE_FETCH_VAULTS_MAX 8
/* The largest stream message accepted: one 64 MiB object and its
 * envelope, framing and neighbours (the vault's own max_msg is 72 MiB). */
#define RESTORE_FETCH_MSG_MAX ((size_t)80 << 20)

struct restore_fetcher;

struct restore_fetch_opts {
    const char *const *targets; /* "host:port", n_targets of them */
    size_t n_targets;           /* 1..RESTORE_FETCH_VAULTS_MAX */
    const char *target_name;    /* TLS name override; NULL = host part */
    const char *ca_pem;         /* CA of the vaults' certificates */
    const char *cert_pem;       /* the restore certificate */
    const char *key_pem;        /* its key */
    int64_t timeout_ms;         /* per call; 0 = 120 s */
    size_t max_msg;             /* 0 = RESTORE_FETCH_MSG_MAX */
    int64_t backoff_ms;         /* a failed vault's first back-off; 0 = 30 s
                                 * (doubles per new failure, at most 10 min) */
};

/*
 * As restore_fetch_fn, with the vault (config index) whose stream carried
 * the object.
 */
typedef int restore_fetch_from_fn(void *ctx, size_t vault, const uint8_t *id,
                                  int kind, const uint8_t *data, size_t len,
                                  struct cfr_err *err);

/* Vaults made current in one run that restore_fetcher_vaults_used keeps. */
#define RESTORE_FETCH_USED_MAX 32

/* What the fetcher knows of one vault (restore_fetcher_vault_info). */
struct restore_vault_info {
    const char *target;      /* "host:port"; borrowed from the fetcher */
    bool healthy;            /* answered Health at restore_fetcher_new */
    int health_code;         /* why not (a CFR_E* code); 0 when healthy */
    int64_t rtt_us;          /* that Health round trip; -1 without one */
    size_t rank;             /* 0 = the nearest healthy vault */
    bool current;            /* read from now */
    bool backing_off;        /* failed lately: not made current for now */
    unsigned failures;       /* failed calls, one per outage */
    uint64_t objects, bytes; /* delivered by this vault */
    uint64_t lacked;         /* objects asked of it that it did not have */
    uint64_t damaged;        /* objects it served that did not open */
};

/*
 * Called for each object received, in the order the vault sent it: id
 * (32 bytes) is one the caller asked for, kind a Coffer__V1__ObjectKind,
 * data borrowed until the callback returns. A non-zero return stops the
 * batch and is returned.
 */
typedef int restore_fetch_fn(void *ctx, const uint8_t *id, int kind,
                             const uint8_t *data, size_t len,
                             struct cfr_err *err);

/*
 * Makes one channel per target, asks each Health in parallel and makes
 * the nearest healthy one current (above). Copies what it keeps.
 * CFR_EUNAVAIL when none answers (err names each vault's failure;
 * CFR_EDENIED or CFR_EAUTH when the first failure was that),
 * CFR_EINVAL for bad options.
 */
int restore_fetcher_new(const struct restore_fetch_opts *opts,
                        struct restore_fetcher **f_r, struct cfr_err *err);
/* Accepts NULL. */
void restore_fetcher_free(struct restore_fetcher *f);

/* The vault currently read from ("host:port"); borrowed. */
const char *restore_fetcher_current(const struct restore_fetcher *f);

/* How many vaults the fetcher knows (the config's, in its order). */
size_t restore_fetcher_n_vaults(const struct restore_fetcher *f);

/*
 * A snapshot of vault i (config order) into *info: how it answered at
 * the start, its rank, what it served. CFR_EINVAL when i is out of range.
 */
int restore_fetcher_vault_info(const struct restore_fetcher *f, size_t i,
                               struct restore_vault_info *info);

/* Times the current vault moved to another after a failure. */
unsigned restore_fetcher_switches(const struct restore_fetcher *f);

/*
 * The vaults that were current, in order (the first is the nearest at
 * the start, each next one follows a switch), as config indexes into
 * idx (up to max of them). Returns how many there were, which is
 * restore_fetcher_switches + 1 and may exceed max (or
 * RESTORE_FETCH_USED_MAX, beyond which the list is not kept).
 */
size_t restore_fetcher_vaults_used(const struct restore_fetcher *f, size_t *idx,
                                   size_t max);

/* Objects some vault was asked for and did not have, over all vaults. */
uint64_t restore_fetcher_lacked(const struct restore_fetcher *f);

/*
 * ListSnapshots on the current vault (on failure, as a fetch: the next
 * vault by rank, which becomes current): mailbox_id (32 bytes) or NULL for
 * every mailbox, with the sealed headers when with_headers. *resp_r is
 * owned (free with protobuf_c_message_free_unpacked(..., NULL)).
 */
int restore_fetcher_list(struct restore_fetcher *f, const uint8_t *mailbox_id,
                         bool with_headers,
                         Coffer__V1__ListSnapshotsResponse **resp_r,
                         struct cfr_err *err);

/*
 * Fetches the n objects ids (n * 32 bytes, 1..RESTORE_FETCH_IDS_MAX, no
 * ID twice) and calls fn once per ID. An object the vault sends that was
 * not asked for, or twice, is CFR_ECORRUPT at once (that vault is not
 * trusted further), as is fn's error. IDs that no vault has are
 * CFR_ENOTFOUND (err names the first); an unreachable or refusing vault
 * is its RPC error (CFR_EUNAVAIL, CFR_EDENIED, ...) once every vault
 * was tried.
 */
int restore_fetcher_get(struct restore_fetcher *f, const uint8_t *ids, size_t n,
                        restore_fetch_fn *fn, void *ctx, struct cfr_err *err);

/*
 * restore_fetcher_get, never asking the vaults whose bit (1u << config
 * index) is set in exclude, and telling fn which vault served each
 * object. With every vault excluded, nothing is asked: CFR_ENOTFOUND.
 * It may be called from inside another call's callback (a replacement
 * for a damaged object): the fetcher holds no lock across calls.
 */
int restore_fetcher_get_from(struct restore_fetcher *f, const uint8_t *ids,
                             size_t n, unsigned exclude,
                             restore_fetch_from_fn *fn, void *ctx,
                             struct cfr_err *err);

/*
 * Records that vault (config index) served object id damaged (it did not
 * open: code says how), counted in its info and in
 * restore_fetcher_damaged_count, and logs it at warn naming the vault.
 */
void restore_fetcher_damaged(struct restore_fetcher *f, size_t vault,
                             const uint8_t id[32], int code);

/* Damaged copies recorded, over all vaults. */
uint64_t restore_fetcher_damaged_count(const struct restore_fetcher *f);

/* One object into out (replaced; out's cap bounds it). */
int restore_fetcher_get_one(struct restore_fetcher *f, const uint8_t id[32],
                            struct cfr_buf *out, int *kind_r,
                            struct cfr_err *err);

#endif /* RESTORE_FETCH_H */
