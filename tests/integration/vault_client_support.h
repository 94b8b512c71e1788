/*
 * vault_client_support.h - the client side of the vault integration tests:
 * real sealed chunks and snapshots made with a tenant keyring, and thin
 * wrappers around each Vault RPC, shared by every vault_*_test.c.
 *
 * Conventions:
 *  - Every wrapper returns the gRPC status (CFR_RPC_OK, ...) and asserts
 *    (cmocka) only what a well-behaved vault must always do, e.g. that an
 *    OK response decodes; the caller asserts what its test is about.
 *  - err parameters may be NULL; otherwise they receive the status message.
 *  - Requests never name more than VC_IDS_MAX IDs: Missing and GetObjects
 *    over larger sets are split into several calls.
 *  - Objects are copied in (owned by the set); nothing here keeps state.
 *
 * Thread safety: no shared state; a session (cfr_env_seal) and an objset
 * must not be used by two threads at once, a keyring and a client may.
 */
#ifndef VAULT_CLIENT_SUPPORT_H
#define VAULT_CLIENT_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer_vault.pb-c.h" /* Coffer__V1__* messages */
#include "err.h"               /* struct cfr_err */
#include "keys.h"              /* struct cfr_keyring */
#include "rpc.h"               /* struct cfr_rpc_client */
#include "snap.h"              /* struct cfr_tree_root */
#include "vault_support.h"     /* struct vs_vault */

#define VC_ID_LEN  32
#define VC_IDS_MAX 4096 /* IDs per request the vault accepts */

struct cfr_session;

/* An object the test holds: ID, Coffer__V1__ObjectKind and owned bytes. */
struct vc_obj {
    uint8_t id[VC_ID_LEN];
    int kind;
    uint8_t *data;
    size_t len;
};

/* A growable list of objects; zero-initialise ({0}) before use. */
struct vc_objset {
    struct vc_obj *v;
    size_t n, alloc;
};

/* Appends a copy of data (duplicates are kept). */
void vc_objset_add(struct vc_objset *s, const uint8_t id[VC_ID_LEN], int kind,
                   const uint8_t *data, size_t len);
/* Appends copies of every object of src. */
void vc_objset_add_all(struct vc_objset *dst, const struct vc_objset *src);
/* Frees every object and the list; s is empty afterwards. */
void vc_objset_fini(struct vc_objset *s);
/* The first object with id, or NULL (linear: for test-sized sets). */
const struct vc_obj *vc_objset_find(const struct vc_objset *s,
                                    const uint8_t id[VC_ID_LEN]);

/*
 * Seals a chunk of len bytes derived from seed (same seed, same bytes,
 * same ID) into s. vc_make_chunk alternates 512-byte blocks of random
 * bytes and of one repeated byte (compressible); vc_make_chunk_ex makes
 * every period-th block of block bytes a run and the rest random
 * (period 4, block 4096: mostly incompressible).
 */
void vc_make_chunk(const struct cfr_keyring *kr, struct cfr_session *ses,
                   struct vc_objset *s, uint64_t seed, size_t len);
void vc_make_chunk_ex(const struct cfr_keyring *kr, struct cfr_session *ses,
                      struct vc_objset *s, uint64_t seed, size_t len,
                      size_t block, unsigned period);

/* A snapshot ready to commit: its reference pages and sealed header. */
struct vc_snapshot {
    struct vc_objset pages; /* OBJECT_KIND_REF_PAGE objects */
    struct cfr_tree_root root;
    uint8_t mailbox_id[VC_ID_LEN];
    uint8_t header_id[VC_ID_LEN];
    uint8_t *header; /* sealed header envelope (owned) */
    size_t header_len;
};

/*
 * Builds the reference list of chunks' IDs (sorted, duplicates once) and
 * a sealed header for mailbox; tag goes into the header's agent time, so
 * different tags give different header IDs.
 */
void vc_make_snapshot(const struct cfr_keyring *kr, struct cfr_session *ses,
                      struct vc_snapshot *sn, const struct vc_objset *chunks,
                      const char *mailbox, uint64_t tag);
void vc_snapshot_fini(struct vc_snapshot *sn);

/* ---- RPC wrappers ---------------------------------------------------- */

/* OpenLease for ses's public key; the lease ID into lease. */
int vc_open_lease(struct cfr_session *ses, struct cfr_rpc_client *cli,
                  uint8_t lease[16], struct cfr_err *err);

/*
 * PutObjects of s->v[from..to) in one stream, at most per_msg objects per
 * message. On OK asserts that the acknowledgement covers every object sent
 * (stored + already present); *stored_r (may be NULL) is the stored count.
 */
int vc_put_objects(struct cfr_rpc_client *cli, const uint8_t lease[16],
                   const struct vc_objset *s, size_t from, size_t to,
                   size_t per_msg, uint64_t *stored_r, struct cfr_err *err);

/* Commit of sn under lease; *already_r (may be NULL): already committed. */
int vc_commit(struct cfr_rpc_client *cli, const uint8_t lease[16],
              const struct vc_snapshot *sn, bool *already_r,
              struct cfr_err *err);

/*
 * Missing over every ID of s, with lease (may be NULL: no lease): sets
 * is_missing[i] (s->n entries) and *n_missing_r. Asserts that the indices
 * the vault returns are in range and ascending.
 */
int vc_missing(struct cfr_rpc_client *cli, const uint8_t *lease,
               const struct vc_objset *s, bool *is_missing,
               size_t *n_missing_r);

/*
 * GetObjects of s's IDs plus extra (one more ID; may be NULL): received
 * objects are appended to got, *n_missing_r counts the IDs reported
 * missing, *n_msgs_r the stream messages. Returns the first non-OK status.
 */
int vc_get_objects(struct cfr_rpc_client *cli, const struct vc_objset *s,
                   const uint8_t *extra, struct vc_objset *got,
                   size_t *n_missing_r, size_t *n_msgs_r);

/*
 * Every object of s that Missing (through agent) reports present must come
 * back from GetObjects (through rest) byte for byte, with its kind; with
 * must_all every one must be present. Returns how many were present.
 */
size_t vc_check_objects(struct cfr_rpc_client *agent,
                        struct cfr_rpc_client *rest, const struct vc_objset *s,
                        bool must_all);

/* ListSnapshots (every mailbox); NULL unless *st_r is CFR_RPC_OK. */
Coffer__V1__ListSnapshotsResponse *
vc_list_snapshots(struct cfr_rpc_client *cli, bool with_headers, int *st_r);

/*
 * Admin op; id is the header_id, or the mailbox_id for a purge. approval
 * (16 bytes) and totp may be NULL. *resp_r (may be NULL) gets the response
 * (free with protobuf_c_message_free_unpacked); msg (may be NULL) the
 * status message.
 */
int vc_admin_ex(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op,
                const uint8_t *id, int64_t retention_ms,
                const uint8_t *approval, const char *totp,
                Coffer__V1__AdminResponse **resp_r, char *msg, size_t msg_size);
/* vc_admin_ex without a second factor. */
int vc_admin(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op,
             const uint8_t *id, int64_t retention_ms,
             Coffer__V1__AdminResponse **resp_r, char *msg, size_t msg_size);
/*
 * A destructive op without a second factor: asserts it is pending with a
 * 16-byte approval ID (copied to approval, may be NULL) and removed nothing.
 */
void vc_expect_pending(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op,
                       const uint8_t *id, int64_t retention_ms,
                       uint8_t approval[16]);

/* Health; *resp_r (may be NULL) gets the response. */
int vc_health(struct cfr_rpc_client *cli, Coffer__V1__HealthResponse **resp_r);

/* Whether v's log so far contains needle. */
bool vc_log_has(const struct vs_vault *v, const char *needle);

/* CLOCK_MONOTONIC in milliseconds, and a sleep (for pacing, not sync). */
int64_t vc_now_ms(void);
void vc_sleep_ms(long ms);

#endif /* VAULT_CLIENT_SUPPORT_H */
