/*
 * sysdb.h - the vault's system database: tenant registry, deny list,
 * audit log, approvals for destructive admin and operator operations,
 * admins' and operators' TOTP secrets, and the agent certificates seen,
 * in <data dir>/_system over core/kv.h (docs/FORMAT.md).
 *
 * Invariants:
 *  1. Every write is a synced WAL write before the call returns.
 *  2. The deny list is read from the database on every check: an entry is
 *     effective for the next request after vault_sysdb_deny_add returns,
 *     without restart, and no cache can go stale.
 *  3. Audit records hold only log-safe text: every string field is passed
 *     through cfr_log_quote rules before it is stored, so no reader can be
 *     fooled by newlines, quotes or control bytes a client sent. Records
 *     older than audit_keep_ms by the vault clock are removed by
 *     vault_sysdb_audit_purge.
 *  4. An approval is executable at most once, only after a different
 *     admin of the same tenant approved it, and only before its
 *     deadline (requested + approval_window_ms); operation and arguments
 *     must match the request exactly. Request, approve and consume are
 *     serialised under the sysdb lock, so two racing consumers cannot both
 *     succeed.
 *  5. A TOTP code is accepted at most once per secret: the accepted step is
 *     stored (synced) before success is returned.
 *
 * Who is an admin: every admin certificate of a tenant carries the same
 * identity URI (coffer://tenant/<t>/role/admin, docs/FORMAT.md), so the
 * URI alone cannot tell two admins apart. The calls below therefore take
 * the URI (which must be an admin of the tenant) and a principal: the
 * name the vault's CA put in that admin's certificate (its subject CN, as
 * in struct cfr_rpc_peer.cn). Two admins are "different" when their
 * principals differ; an empty principal is refused, and two certificates
 * issued with the same CN count as one admin (the safe direction).
 *
 * Approval states:
 *
 *   (none) --request--> PENDING --approve--> APPROVED --consume--> CONSUMED
 *                          |                     |
 *                          +----deadline---------+--> expired (refused;
 *                                                     removed by purge)
 *
 * TOTP secrets are stored in clear in this database. The vault holds no
 * tenant key and must not: a TOTP secret is not one. It is the verifier of
 * an admin's second factor and opens no tenant data (all stored data is
 * sealed by agents). Someone who reads the vault's disk could mint codes,
 * but still needs an admin's certificate and private key to use them, and
 * such a reader can already delete data directly. The secret is never
 * logged, never returned by any call, and wiped from memory after use.
 *
 * Thread safety: every function may be called from many threads.
 */
#ifndef VAULT_SYSDB_H
#define VAULT_SYSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"  /* struct cfr_clock */
#include "err.h"    /* struct cfr_err */
#include "kv.h"     /* struct cfr_kv_env: shared with the tenant databases */
#include "notify.h" /* struct cfr_notify: security events */
#include "totp.h"   /* struct cfr_totp_params */

#define VAULT_SYSDB_DIR "_system"
/*
 * The scope of the operators' approvals and TOTP secrets, where the other
 * calls take a tenant name: not a valid tenant name (leading '_'), so an
 * operator's record never collides with a tenant's.
 */
#define VAULT_SYSDB_SYSTEM_SCOPE "_system"

#define VAULT_SYSDB_NAME_MAX        64 /* tenant name bytes, NUL excluded */
#define VAULT_SYSDB_REGIONS_MAX     16
#define VAULT_SYSDB_REGION_MAX      32 /* region name bytes, NUL included */
#define VAULT_SYSDB_NOTIFY_MAX      8
#define VAULT_SYSDB_TARGET_MAX      256 /* notify target bytes, NUL included */
#define VAULT_SYSDB_IDENT_MAX       256 /* identity URI or fingerprint, w/ NUL */
#define VAULT_SYSDB_TEXT_MAX        512 /* reason, detail, args, with NUL */
#define VAULT_SYSDB_APPROVAL_ID_LEN 16  /* bytes; 32 hex digits as text */

#define VAULT_SYSDB_DEFAULT_AUDIT_KEEP_MS (30 * INT64_C(86400000))
#define VAULT_SYSDB_DEFAULT_RETENTION_MS  (30 * INT64_C(86400000))
#define VAULT_SYSDB_DEFAULT_APPROVAL_MS   (60 * INT64_C(60000))

struct vault_sysdb;

struct vault_sysdb_opts {
    const char *data_dir;       /* the database is data_dir/_system */
    struct cfr_kv_env *env;     /* borrowed; NULL: a private one */
    struct cfr_clock *clock;    /* borrowed; NULL: the system clock */
    int64_t audit_keep_ms;      /* 0: 30 days */
    int64_t approval_window_ms; /* 0: one hour */
    size_t audit_queue_max;     /* records vault_sysdb_audit_submit queues;
                                   0: 65536 */
};

/* Returns owned, or NULL with err set. Starts the audit writer thread. */
struct vault_sysdb *vault_sysdb_open(const struct vault_sysdb_opts *opts,
                                     struct cfr_err *err);
/* Writes queued audit records, stops the writer, closes; accepts NULL. */
void vault_sysdb_close(struct vault_sysdb *db);
/* True once a write error failed the database (kv.h): stop the vault. */
bool vault_sysdb_failed(struct vault_sysdb *db);

/* ---- tenants ---------------------------------------------------------- */

/*
 * A notify target is "https://..." / "http://..." (webhook) or
 * "mailto:user@example.org".
 */
struct vault_sysdb_tenant {
    char name[VAULT_SYSDB_NAME_MAX + 1]; /* [a-z0-9._-], 1..63, not
                                            starting with . - or _ */
    size_t n_regions;
    char regions[VAULT_SYSDB_REGIONS_MAX][VAULT_SYSDB_REGION_MAX];
    int64_t retention_ms; /* 0: the vault's configured default */
    int64_t created_ms;   /* set by the vault clock at creation */
    size_t n_notify;
    char notify[VAULT_SYSDB_NOTIFY_MAX][VAULT_SYSDB_TARGET_MAX];
};

/* Checks a tenant name against the rule above. 0 or CFR_EINVAL. */
int vault_sysdb_tenant_name_ok(const char *name, struct cfr_err *err);

/*
 * Creates t (CFR_EEXIST when it exists), setting created_ms; t->created_ms
 * is ignored. Regions and targets are validated (CFR_EINVAL).
 */
int vault_sysdb_tenant_create(struct vault_sysdb *db,
                              const struct vault_sysdb_tenant *t,
                              struct cfr_err *err);
/*
 * Replaces an existing tenant's regions, retention and targets; keeps its
 * created_ms. CFR_ENOTFOUND when absent. *old_r (may be NULL) receives
 * the previous record, so the caller can tell a shortened retention
 * (which needs an approval) from a longer one.
 */
int vault_sysdb_tenant_update(struct vault_sysdb *db,
                              const struct vault_sysdb_tenant *t,
                              struct vault_sysdb_tenant *old_r,
                              struct cfr_err *err);
/* CFR_ENOTFOUND when absent. */
int vault_sysdb_tenant_get(struct vault_sysdb *db, const char *name,
                           struct vault_sysdb_tenant *t_r, struct cfr_err *err);
int vault_sysdb_tenant_delete(struct vault_sysdb *db, const char *name,
                              struct cfr_err *err);

/* Called per tenant in name order; a non-zero return stops the walk. */
typedef int vault_sysdb_tenant_fn(void *ctx,
                                  const struct vault_sysdb_tenant *t);
int vault_sysdb_tenant_list(struct vault_sysdb *db, vault_sysdb_tenant_fn *fn,
                            void *ctx, struct cfr_err *err);

/*
 * Sends a security event (lockout, revocation, retention or tenant change,
 * purge, hold, new agent identity) to the vault's default targets and to
 * each of tenant's own targets (one post per webhook, one for all its
 * mailto: recipients). Never blocks on delivery (notify.h). tenant may be
 * NULL or "" for vault-wide events. Returns 0 when every post was queued,
 * else the first error (the other posts are still attempted); no target at
 * all is not an error.
 */
int vault_sysdb_notify(struct vault_sysdb *db, struct cfr_notify *n,
                       const char *event, const char *tenant,
                       const struct cfr_notify_field *fields, size_t n_fields,
                       struct cfr_err *err);

/* ---- deny list --------------------------------------------------------- */

enum vault_sysdb_deny_kind {
    VAULT_DENY_IDENTITY = 1,    /* an identity URI */
    VAULT_DENY_FINGERPRINT = 2, /* a certificate's SHA-256, hex */
};

struct vault_sysdb_deny {
    enum vault_sysdb_deny_kind kind;
    char value[VAULT_SYSDB_IDENT_MAX];
    char reason[VAULT_SYSDB_TEXT_MAX]; /* log-safe (quoted) */
    char by[VAULT_SYSDB_IDENT_MAX];    /* the admin who added it, log-safe */
    int64_t added_ms;
};

/* Adds or replaces an entry. Fingerprints are stored lower-case. */
int vault_sysdb_deny_add(struct vault_sysdb *db,
                         enum vault_sysdb_deny_kind kind, const char *value,
                         const char *reason, const char *by,
                         struct cfr_err *err);
/* CFR_ENOTFOUND when absent. */
int vault_sysdb_deny_remove(struct vault_sysdb *db,
                            enum vault_sysdb_deny_kind kind, const char *value,
                            struct cfr_err *err);
/*
 * Sets *denied_r when identity or fingerprint (either may be NULL or "")
 * is on the list. Returns an error only when the database cannot be read:
 * callers must then refuse the request (fail closed).
 */
int vault_sysdb_deny_check(struct vault_sysdb *db, const char *identity,
                           const char *fingerprint, bool *denied_r,
                           struct cfr_err *err);
typedef int vault_sysdb_deny_fn(void *ctx, const struct vault_sysdb_deny *d);
int vault_sysdb_deny_list(struct vault_sysdb *db, vault_sysdb_deny_fn *fn,
                          void *ctx, struct cfr_err *err);

/* ---- audit log --------------------------------------------------------- */

enum vault_sysdb_decision {
    VAULT_AUDIT_ALLOW = 1,
    VAULT_AUDIT_DENY = 2,
};

/*
 * On append, string fields are borrowed raw text (any bytes up to NUL) and
 * time_ms 0 means "now by the vault clock". On query they come back
 * quoted (cfr_log_quote), truncated with "..." to the array sizes.
 */
struct vault_sysdb_audit {
    int64_t time_ms;
    uint64_t seq; /* set by the database: orders records of one ms */
    char identity[VAULT_SYSDB_IDENT_MAX];
    char peer[128];
    char method[128];
    enum vault_sysdb_decision decision;
    int status; /* the gRPC status sent */
    char detail[VAULT_SYSDB_TEXT_MAX];
    char tenant[VAULT_SYSDB_NAME_MAX + 1]; /* the caller's; "" for none
                                              (operators, refused peers) */
};

/* Appends rec now, synced. */
int vault_sysdb_audit_append(struct vault_sysdb *db,
                             const struct vault_sysdb_audit *rec,
                             struct cfr_err *err);
/*
 * Queues rec (copied; time_ms 0 is stamped now) for the writer thread,
 * which commits queued records in synced batches. Never blocks on disk:
 * for the RPC audit callback, which must not block. Returns 0, or
 * CFR_ELIMIT when the queue is full (the record is lost: counted and
 * logged at ERROR), or CFR_EIO once the database failed.
 */
int vault_sysdb_audit_submit(struct vault_sysdb *db,
                             const struct vault_sysdb_audit *rec,
                             struct cfr_err *err);
/* Waits until every record submitted before the call is on disk. */
int vault_sysdb_audit_sync(struct vault_sysdb *db, struct cfr_err *err);

/*
 * Calls fn for each record with from_ms <= time < to_ms in time order, at
 * most max records (0: no limit); a non-zero return from fn stops the walk.
 */
typedef int vault_sysdb_audit_fn(void *ctx,
                                 const struct vault_sysdb_audit *rec);
int vault_sysdb_audit_query(struct vault_sysdb *db, int64_t from_ms,
                            int64_t to_ms, size_t max, vault_sysdb_audit_fn *fn,
                            void *ctx, struct cfr_err *err);
/*
 * Deletes every record older than now - audit_keep_ms, then compacts the
 * range so the bytes leave the disk. *purged_r (may be NULL) gets the count.
 */
int vault_sysdb_audit_purge(struct vault_sysdb *db, uint64_t *purged_r,
                            struct cfr_err *err);
/* One line, `time=... identity=... peer=... method=... decision=...`. */
const char *vault_sysdb_audit_format(const struct vault_sysdb_audit *rec,
                                     char *out, size_t out_size);

/* ---- approvals --------------------------------------------------------- */

#define VAULT_SYSDB_APPROVAL_HEX (VAULT_SYSDB_APPROVAL_ID_LEN * 2 + 1)

enum vault_sysdb_approval_state {
    VAULT_APPROVAL_PENDING = 1,
    VAULT_APPROVAL_APPROVED = 2,
    VAULT_APPROVAL_CONSUMED = 3,
};

struct vault_sysdb_approval {
    char id[VAULT_SYSDB_APPROVAL_HEX];
    char tenant[VAULT_SYSDB_NAME_MAX + 1];
    char op[64];                           /* "purge", "retention", ... */
    char args[VAULT_SYSDB_TEXT_MAX];       /* canonical arguments */
    char requester[VAULT_SYSDB_IDENT_MAX]; /* identity URI */
    char requester_principal[VAULT_SYSDB_IDENT_MAX];
    char approver[VAULT_SYSDB_IDENT_MAX];
    char approver_principal[VAULT_SYSDB_IDENT_MAX];
    enum vault_sysdb_approval_state state;
    int64_t requested_ms;
    int64_t deadline_ms;
};

/*
 * tenant below is a tenant name, or VAULT_SYSDB_SYSTEM_SCOPE for requests
 * of the vault's operators: there "admin" reads "operator identity"
 * (coffer://operator/NAME) and the same rules hold.
 *
 * Records a pending request by the admin (identity URI, principal) for op
 * with args on tenant, and returns its id (32 hex digits, random) in id_r.
 * op is a token without spaces ("purge"); args, the canonical arguments
 * shown to the approver, is printable ASCII (CFR_EINVAL otherwise).
 * CFR_EDENIED when identity is not an admin of tenant or principal is
 * empty.
 */
int vault_sysdb_approval_request(struct vault_sysdb *db, const char *tenant,
                                 const char *identity, const char *principal,
                                 const char *op, const char *args,
                                 char id_r[VAULT_SYSDB_APPROVAL_HEX],
                                 struct cfr_err *err);
/*
 * The admin (identity, principal) approves request id. CFR_ENOTFOUND for
 * an unknown id or one of another tenant (indistinguishable); CFR_EDENIED
 * when the approver is not an admin of tenant, has the requester's
 * principal, or the request is expired or no longer pending.
 */
int vault_sysdb_approval_approve(struct vault_sysdb *db, const char *tenant,
                                 const char *id, const char *identity,
                                 const char *principal, struct cfr_err *err);
/*
 * Marks an approved request executed and returns 0, exactly once: the
 * caller performs op only on 0. op and args must equal the request's.
 * CFR_ENOTFOUND as above; CFR_EDENIED when not approved, expired, already
 * consumed or op/args differ.
 */
int vault_sysdb_approval_consume(struct vault_sysdb *db, const char *tenant,
                                 const char *id, const char *op,
                                 const char *args, struct cfr_err *err);
int vault_sysdb_approval_get(struct vault_sysdb *db, const char *tenant,
                             const char *id, struct vault_sysdb_approval *a_r,
                             struct cfr_err *err);
/* Removes approvals whose deadline passed more than a day ago. */
int vault_sysdb_approval_purge(struct vault_sysdb *db, uint64_t *purged_r,
                               struct cfr_err *err);

/* ---- TOTP second factor ----------------------------------------------- */

/*
 * tenant is a tenant name, or VAULT_SYSDB_SYSTEM_SCOPE for an operator's
 * own secret (identity coffer://operator/NAME).
 *
 * Registers (or replaces) the TOTP secret of the admin (identity URI,
 * principal) on tenant: one secret per admin, keyed by both. secret is
 * borrowed and copied; params may be NULL (SHA1, 6, 30 s). CFR_EDENIED
 * for a non-admin identity or an empty principal.
 */
int vault_sysdb_totp_register(struct vault_sysdb *db, const char *tenant,
                              const char *identity, const char *principal,
                              const uint8_t *secret, size_t secret_len,
                              const struct cfr_totp_params *params,
                              struct cfr_err *err);
/* True in *has_r when identity has a registered secret. */
int vault_sysdb_totp_has(struct vault_sysdb *db, const char *tenant,
                         const char *identity, const char *principal,
                         bool *has_r, struct cfr_err *err);
int vault_sysdb_totp_remove(struct vault_sysdb *db, const char *tenant,
                            const char *identity, const char *principal,
                            struct cfr_err *err);
/*
 * Verifies code for identity (+-1 step) and stores the accepted step
 * (synced) before returning 0; CFR_EAUTH for a wrong or replayed code or
 * when no secret is registered (the caller counts it as a failure in its
 * rate limiter).
 */
int vault_sysdb_totp_verify(struct vault_sysdb *db, const char *tenant,
                            const char *identity, const char *principal,
                            const char *code, struct cfr_err *err)
    __attribute__((warn_unused_result));

/* ---- identities seen ------------------------------------------------- */

/*
 * Records that a certificate (fingerprint: 64 hex digits, either case)
 * acted for tenant, synced, and sets *new_r when it was not recorded
 * before: exactly one caller ever gets true for a (tenant, fingerprint).
 * CFR_EINVAL for a bad tenant name or fingerprint.
 */
int vault_sysdb_seen_mark(struct vault_sysdb *db, const char *tenant,
                          const char *fingerprint, bool *new_r,
                          struct cfr_err *err);

#endif /* VAULT_SYSDB_H */
