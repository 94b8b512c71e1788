/*
 * request.h - decoding and validation of every request the vault accepts.
 *
 * Each decoder unpacks one coffer_vault.proto request and checks every
 * bound the handlers rely on (ID and lease lengths, counts, sizes, enum
 * ranges), so a handler only ever sees a request it can use as is.
 *
 * Contract of every vault_request_decode_<name>:
 *  - returns 0 and sets *msg_r to a message the caller frees with the
 *    matching vault_request_free_<name> (NULL is accepted there);
 *  - or returns CFR_ECORRUPT (not a protobuf of that message, or out of
 *    memory while unpacking, which protobuf-c does not tell apart),
 *    CFR_EINVAL (a field breaks a bound) or CFR_ELIMIT (an object larger
 *    than VAULT_OBJECT_MAX), fills err with the message the server sends
 *    back, frees everything and sets *msg_r to NULL.
 * p may be NULL when n is 0.
 */
#ifndef VAULT_REQUEST_H
#define VAULT_REQUEST_H

#include <stdbool.h> /* bool */
#include <stddef.h>  /* size_t */
#include <stdint.h>  /* uint8_t */

#include "coffer_vault.pb-c.h" /* wire messages */
#include "err.h"               /* struct cfr_err */
#include "store.h"             /* VAULT_ID_LEN and the other bounds */

/* The largest object a vault accepts: 64 MiB of plain plus overhead. */
#define VAULT_OBJECT_MAX (((size_t)64 << 20) + ((size_t)1 << 20))
/* The largest session public key an OpenLease may carry. */
#define VAULT_SESSION_PUBLIC_MAX 64

/*
 * Missing: at most VAULT_IDS_MAX ids of VAULT_ID_LEN bytes; lease_id
 * empty or VAULT_LEASE_LEN bytes.
 */
int vault_request_decode_missing(const uint8_t *p, size_t n,
                                 Coffer__V1__MissingRequest **msg_r,
                                 struct cfr_err *err);
void vault_request_free_missing(Coffer__V1__MissingRequest *msg);

/* OpenLease: session_public at most VAULT_SESSION_PUBLIC_MAX bytes. */
int vault_request_decode_open_lease(const uint8_t *p, size_t n,
                                    Coffer__V1__OpenLeaseRequest **msg_r,
                                    struct cfr_err *err);
void vault_request_free_open_lease(Coffer__V1__OpenLeaseRequest *msg);

/*
 * One PutObjects stream message: lease_id of VAULT_LEASE_LEN bytes, at
 * most VAULT_IDS_MAX objects, each with a VAULT_ID_LEN id, a known kind
 * and at most VAULT_OBJECT_MAX bytes (CFR_ELIMIT beyond).
 */
int vault_request_decode_put_objects(const uint8_t *p, size_t n,
                                     Coffer__V1__PutObjectsRequest **msg_r,
                                     struct cfr_err *err);
void vault_request_free_put_objects(Coffer__V1__PutObjectsRequest *msg);

/* GetObjects: at most VAULT_IDS_MAX ids of VAULT_ID_LEN bytes. */
int vault_request_decode_get_objects(const uint8_t *p, size_t n,
                                     Coffer__V1__GetObjectsRequest **msg_r,
                                     struct cfr_err *err);
void vault_request_free_get_objects(Coffer__V1__GetObjectsRequest *msg);

/*
 * Commit: lease_id VAULT_LEASE_LEN bytes, mailbox_id and header_id
 * VAULT_ID_LEN bytes, refs present with a VAULT_ID_LEN root ID, header
 * 1 to VAULT_HEADER_MAX bytes.
 */
int vault_request_decode_commit(const uint8_t *p, size_t n,
                                Coffer__V1__CommitRequest **msg_r,
                                struct cfr_err *err);
void vault_request_free_commit(Coffer__V1__CommitRequest *msg);

/* ListSnapshots: mailbox_id empty or VAULT_ID_LEN bytes. */
int
vault_request_decode_list_snapshots(const uint8_t *p, size_t n,
                                    Coffer__V1__ListSnapshotsRequest **msg_r,
                                    struct cfr_err *err);
void vault_request_free_list_snapshots(Coffer__V1__ListSnapshotsRequest *msg);

/*
 * Admin: a known op, and the arguments that op needs: APPROVE an
 * approval_id of VAULT_SYSDB_APPROVAL_ID_LEN bytes, SET_RETENTION a
 * retention_ms from 1 hour to 3650 days, HOLD and RELEASE a VAULT_ID_LEN
 * header_id, PURGE_MAILBOX a VAULT_ID_LEN mailbox_id. The approval_id that may
 * go with a destructive op is checked by the server, and only when it uses it
 * (a TOTP code takes precedence).
 */
int vault_request_decode_admin(const uint8_t *p, size_t n,
                               Coffer__V1__AdminRequest **msg_r,
                               struct cfr_err *err);
void vault_request_free_admin(Coffer__V1__AdminRequest *msg);

/* Audit: any since_ms and limit (the server clamps the limit). */
int vault_request_decode_audit(const uint8_t *p, size_t n,
                               Coffer__V1__AuditRequest **msg_r,
                               struct cfr_err *err);
void vault_request_free_audit(Coffer__V1__AuditRequest *msg);

/* Health: no fields; only well-formedness is checked. */
int vault_request_decode_health(const uint8_t *p, size_t n,
                                Coffer__V1__HealthRequest **msg_r,
                                struct cfr_err *err);
void vault_request_free_health(Coffer__V1__HealthRequest *msg);

/*
 * System (operators): a known op and what it needs. TENANT_ADD and
 * TENANT_SET a tenant with a valid name, at most VAULT_SYSDB_REGIONS_MAX
 * regions and VAULT_SYSDB_NOTIFY_MAX targets (their syntax is checked by
 * sysdb), retention_ms 0 or 1 hour..10 years; REVOKE and UNREVOKE a deny
 * entry of kind "identity" (a URI cfr_rpc_identity_parse accepts, or
 * coffer://vault/NAME) or "fingerprint" (64 hex digits); TOTP_SET a
 * totp_secret of 20..64 bytes and, when tenant_name is set, a principal;
 * APPROVE an approval_id of VAULT_SYSDB_APPROVAL_ID_LEN bytes; SYNC and
 * SYNC_STATUS nothing (tenant_name "" = every tenant). On every
 * op: tenant_name empty or a valid tenant name, approval_id empty or 16
 * bytes, reason printable. The totp_secret is wiped when freed.
 */
int vault_request_decode_system(const uint8_t *p, size_t n,
                                Coffer__V1__SystemRequest **msg_r,
                                struct cfr_err *err);
void vault_request_free_system(Coffer__V1__SystemRequest *msg);

/*
 * Replication requests (a peer vault's): tenant a valid tenant name
 * (CFR_EINVAL otherwise; whether it is registered and placed here is the
 * server's question). SyncList: at most VAULT_SYNC_BUCKETS buckets, each
 * below VAULT_SYNC_BUCKETS. SyncGet: at most VAULT_IDS_MAX ids of
 * VAULT_ID_LEN bytes.
 */
int vault_request_decode_sync_digest(const uint8_t *p, size_t n,
                                     Coffer__V1__SyncDigestRequest **msg_r,
                                     struct cfr_err *err);
void vault_request_free_sync_digest(Coffer__V1__SyncDigestRequest *msg);
int vault_request_decode_sync_list(const uint8_t *p, size_t n,
                                   Coffer__V1__SyncListRequest **msg_r,
                                   struct cfr_err *err);
void vault_request_free_sync_list(Coffer__V1__SyncListRequest *msg);
int vault_request_decode_sync_get(const uint8_t *p, size_t n,
                                  Coffer__V1__SyncGetRequest **msg_r,
                                  struct cfr_err *err);
void vault_request_free_sync_get(Coffer__V1__SyncGetRequest *msg);

/* coffer://vault/NAME, NAME a valid tenant-style name (a peer vault). */
bool vault_request_vault_identity_ok(const char *uri);
/* 64 hex digits, either case: a certificate's SHA-256. */
bool vault_request_fingerprint_ok(const char *s);

#endif /* VAULT_REQUEST_H */
