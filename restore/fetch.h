/*
 * fetch.h - reads objects back from the tenant's vaults for a restore:
 * snapshot records, single objects (manifest pages) and the chunks of
 * one file, in order, in batches, with bounded memory.
 *
 * A fetcher holds one gRPC channel per configured vault (restore role
 * certificate) and a current vault: the first that answers Health at
 * restore_fetcher_new. Every call names what it needs by ID and gets
 * bytes back exactly as stored; nothing here holds a key or opens an
 * envelope (restore.c does). Where a vault lacks an object, or the call
 * to it fails, the fetcher asks the next vault of the list for what is
 * still missing before giving up, so the caller never sees which replica
 * served what: issue 5 builds replica failover and "a replica serves
 * less than it did" detection on this one seam (fetch_batch in fetch.c).
 *
 * Memory per call: one stream message (at most opts.max_msg, the vault
 * sends about its get_batch, 4 MiB by default) and its decoded copy,
 * plus what the caller's callback keeps. A batch names at most
 * RESTORE_FETCH_IDS_MAX IDs (the vault's request limit).
 *
 * Thread safety: a fetcher may be shared by threads once created (gRPC
 * channels are); each call is independent. restore_fetcher_free needs
 * exclusive access.
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
 * Makes one channel per target and picks the first vault that answers
 * Health (in list order). Copies what it keeps. CFR_EUNAVAIL when none
 * answers (err names each vault's failure), CFR_EINVAL for bad options.
 */
int restore_fetcher_new(const struct restore_fetch_opts *opts,
                        struct restore_fetcher **f_r, struct cfr_err *err);
/* Accepts NULL. */
void restore_fetcher_free(struct restore_fetcher *f);

/* The vault currently read from ("host:port"); borrowed. */
const char *restore_fetcher_current(const struct restore_fetcher *f);

/*
 * ListSnapshots on the current vault: mailbox_id (32 bytes) or NULL for
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

/* One object into out (replaced; out's cap bounds it). */
int restore_fetcher_get_one(struct restore_fetcher *f, const uint8_t id[32],
                            struct cfr_buf *out, int *kind_r,
                            struct cfr_err *err);

#endif /* RESTORE_FETCH_H */
