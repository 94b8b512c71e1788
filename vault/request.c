/*
 * request.c - unpacks and bounds every vault request before a handler
 * sees it, so that the checks live in one place the fuzzer can reach
 * without a server, TLS or storage.
 *
 * Invariants:
 *  1. A decoder either returns 0 with a message whose every checked field
 *     is within its bound, or returns an error with *msg_r == NULL and
 *     nothing left allocated.
 *  2. The error messages are the ones the server has always answered
 *     with (clients and tests match on them); a change here is a change
 *     of the wire behaviour.
 *  3. Checks run in the order the handlers used to run them, so a request
 *     with several faults is refused for the same one as before.
 */
#include "request.h"

#include <stdbool.h> /* bool */
#include <string.h>  /* strlen, strcmp, strncmp */

#include "clock.h"  /* CFR_MS_PER_HOUR, CFR_MS_PER_DAY */
#include "rpc.h"    /* cfr_rpc_identity_parse: the server's identity rule */
#include "secret.h" /* cfr_wipe for TOTP secrets */
#include "sysdb.h"  /* VAULT_SYSDB_APPROVAL_ID_LEN, tenant names, bounds */

/*
 * Unpacks one message of descriptor d. protobuf-c returns NULL both for
 * malformed bytes and for an allocation failure and does not say which;
 * both are answered as malformed, as the server always did.
 */
static int
unpack(const ProtobufCMessageDescriptor *d, const char *name, const uint8_t *p,
       size_t n, ProtobufCMessage **m_r, struct cfr_err *err)
{
    static const uint8_t empty[1] = {0};
    *m_r = protobuf_c_message_unpack(d, NULL, n, p != NULL ? p : empty);
    if (*m_r == NULL) {
        return CFR_ERR(err, CFR_ECORRUPT, "%s: malformed protobuf", name);
    }
    return 0;
}

static void
release(ProtobufCMessage *m)
{
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

static int
check_len(const ProtobufCBinaryData *b, size_t want, const char *what,
          struct cfr_err *err)
{
    if (b->len != want) {
        return CFR_ERR(err, CFR_EINVAL, "%s: %zu bytes, want %zu", what, b->len,
                       want);
    }
    return 0;
}

/* Every ID of a list: at most VAULT_IDS_MAX, each VAULT_ID_LEN bytes. */
static int
check_ids(const char *name, const ProtobufCBinaryData *ids, size_t n,
          struct cfr_err *err)
{
    if (n > VAULT_IDS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "%s: more than %d ids", name,
                       VAULT_IDS_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (check_len(&ids[i], VAULT_ID_LEN, "id", err) != 0) {
            return CFR_EINVAL;
        }
    }
    return 0;
}

/* ---- Missing ------------------------------------------------------------ */

int
vault_request_decode_missing(const uint8_t *p, size_t n,
                             Coffer__V1__MissingRequest **msg_r,
                             struct cfr_err *err)
{
    static const char name[] = "MissingRequest";
    ProtobufCMessage *m = NULL;
    Coffer__V1__MissingRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__missing_request__descriptor, name, p, n, &m,
                     err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__MissingRequest *)m;
    /* The count is refused before the lease so as to answer as before. */
    if (req->n_ids > VAULT_IDS_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s: more than %d ids", name,
                     VAULT_IDS_MAX);
        goto out;
    }
    if (req->lease_id.len != 0 &&
        (rc = check_len(&req->lease_id, VAULT_LEASE_LEN, "lease_id", err)) !=
            0) {
        goto out;
    }
    if ((rc = check_ids(name, req->ids, req->n_ids, err)) != 0) {
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_missing(Coffer__V1__MissingRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- OpenLease ---------------------------------------------------------- */

int
vault_request_decode_open_lease(const uint8_t *p, size_t n,
                                Coffer__V1__OpenLeaseRequest **msg_r,
                                struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    Coffer__V1__OpenLeaseRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__open_lease_request__descriptor,
                     "OpenLeaseRequest", p, n, &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__OpenLeaseRequest *)m;
    if (req->session_public.len > VAULT_SESSION_PUBLIC_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "session_public: longer than %d bytes",
                     VAULT_SESSION_PUBLIC_MAX);
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_open_lease(Coffer__V1__OpenLeaseRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- PutObjects --------------------------------------------------------- */

int
vault_request_decode_put_objects(const uint8_t *p, size_t n,
                                 Coffer__V1__PutObjectsRequest **msg_r,
                                 struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    Coffer__V1__PutObjectsRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__put_objects_request__descriptor,
                     "PutObjectsRequest", p, n, &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__PutObjectsRequest *)m;
    if (req->lease_id.len != VAULT_LEASE_LEN) {
        rc = CFR_ERR(err, CFR_EINVAL, "lease_id: %zu bytes, want %d",
                     req->lease_id.len, VAULT_LEASE_LEN);
        goto out;
    }
    if (req->n_objects > VAULT_IDS_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "more than %d objects in a message",
                     VAULT_IDS_MAX);
        goto out;
    }
    for (size_t i = 0; i < req->n_objects; i++) {
        const Coffer__V1__Object *o = req->objects[i];
        if (o->id.len != VAULT_ID_LEN) {
            rc = CFR_ERR(err, CFR_EINVAL, "object %zu: id of %zu bytes", i,
                         o->id.len);
            goto out;
        }
        if (o->kind != COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED &&
            o->kind != COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE) {
            rc = CFR_ERR(err, CFR_EINVAL, "object %zu: unknown kind %d", i,
                         (int)o->kind);
            goto out;
        }
        if (o->data.len > VAULT_OBJECT_MAX) {
            rc = CFR_ERR(err, CFR_ELIMIT, "object %zu: %zu bytes", i,
                         o->data.len);
            goto out;
        }
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_put_objects(Coffer__V1__PutObjectsRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- GetObjects --------------------------------------------------------- */

int
vault_request_decode_get_objects(const uint8_t *p, size_t n,
                                 Coffer__V1__GetObjectsRequest **msg_r,
                                 struct cfr_err *err)
{
    static const char name[] = "GetObjectsRequest";
    ProtobufCMessage *m = NULL;
    Coffer__V1__GetObjectsRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__get_objects_request__descriptor, name, p, n,
                     &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__GetObjectsRequest *)m;
    if ((rc = check_ids(name, req->ids, req->n_ids, err)) != 0) {
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_get_objects(Coffer__V1__GetObjectsRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- Commit ------------------------------------------------------------- */

int
vault_request_decode_commit(const uint8_t *p, size_t n,
                            Coffer__V1__CommitRequest **msg_r,
                            struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    Coffer__V1__CommitRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__commit_request__descriptor, "CommitRequest",
                     p, n, &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__CommitRequest *)m;
    if ((rc = check_len(&req->lease_id, VAULT_LEASE_LEN, "lease_id", err)) !=
            0 ||
        (rc = check_len(&req->mailbox_id, VAULT_ID_LEN, "mailbox_id", err)) !=
            0 ||
        (rc = check_len(&req->header_id, VAULT_ID_LEN, "header_id", err)) !=
            0) {
        goto out;
    }
    if (req->refs == NULL || req->refs->id.len != VAULT_ID_LEN) {
        rc = CFR_ERR(err, CFR_EINVAL, "refs: a %d-byte root ID is required",
                     VAULT_ID_LEN);
        goto out;
    }
    if (req->header.len == 0 || req->header.len > VAULT_HEADER_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "header: empty or longer than %d bytes",
                     VAULT_HEADER_MAX);
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_commit(Coffer__V1__CommitRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- ListSnapshots ------------------------------------------------------ */

int
vault_request_decode_list_snapshots(const uint8_t *p, size_t n,
                                    Coffer__V1__ListSnapshotsRequest **msg_r,
                                    struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    Coffer__V1__ListSnapshotsRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__list_snapshots_request__descriptor,
                     "ListSnapshotsRequest", p, n, &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__ListSnapshotsRequest *)m;
    if (req->mailbox_id.len != 0 &&
        (rc = check_len(&req->mailbox_id, VAULT_ID_LEN, "mailbox_id", err)) !=
            0) {
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_list_snapshots(Coffer__V1__ListSnapshotsRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- Admin -------------------------------------------------------------- */

int
vault_request_decode_admin(const uint8_t *p, size_t n,
                           Coffer__V1__AdminRequest **msg_r,
                           struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    Coffer__V1__AdminRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__admin_request__descriptor, "AdminRequest", p,
                     n, &m, err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__AdminRequest *)m;
    switch (req->op) {
    case COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE:
        if (req->approval_id.len != VAULT_SYSDB_APPROVAL_ID_LEN) {
            rc = CFR_ERR(err, CFR_EINVAL, "approval_id: %d bytes expected",
                         VAULT_SYSDB_APPROVAL_ID_LEN);
        }
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION:
        if (req->retention_ms < CFR_MS_PER_HOUR ||
            req->retention_ms > 3650 * CFR_MS_PER_DAY) {
            rc = CFR_ERR(err, CFR_EINVAL,
                         "retention_ms: between 1 hour and 10 years");
        }
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE:
    case COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD:
        rc = check_len(&req->header_id, VAULT_ID_LEN, "header_id", err);
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX:
        rc = check_len(&req->mailbox_id, VAULT_ID_LEN, "mailbox_id", err);
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION:
    case COFFER__V1__ADMIN_OP__ADMIN_OP_GC:
    case COFFER__V1__ADMIN_OP__ADMIN_OP_SCRUB:
        break;
    default:
        rc = CFR_ERR(err, CFR_EINVAL, "unknown admin op");
        break;
    }
    if (rc != 0) {
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_admin(Coffer__V1__AdminRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- Audit and Health --------------------------------------------------- */

int
vault_request_decode_audit(const uint8_t *p, size_t n,
                           Coffer__V1__AuditRequest **msg_r,
                           struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__audit_request__descriptor, "AuditRequest", p,
                     n, &m, err)) == 0) {
        *msg_r = (Coffer__V1__AuditRequest *)m;
    }
    return rc;
}

void
vault_request_free_audit(Coffer__V1__AuditRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

int
vault_request_decode_health(const uint8_t *p, size_t n,
                            Coffer__V1__HealthRequest **msg_r,
                            struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__health_request__descriptor, "HealthRequest",
                     p, n, &m, err)) == 0) {
        *msg_r = (Coffer__V1__HealthRequest *)m;
    }
    return rc;
}

void
vault_request_free_health(Coffer__V1__HealthRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- System ------------------------------------------------------------- */

#define SYSTEM_TEXT_MAX 256 /* reason, principal, deny value: bytes */
#define SYSTEM_TOTP_MAX 16  /* a code is 6..8 digits; room to say "bad" */
#define TOTP_SECRET_MIN 20  /* 160 bits, what authenticator apps use */
#define TOTP_SECRET_MAX 64

/* Printable ASCII, 1..max-1 bytes (spaces allowed when spaces). */
static bool
printable(const char *s, size_t max, bool spaces)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || (c == ' ' && !spaces)) {
            return false;
        }
    }
    return true;
}

bool
vault_request_vault_identity_ok(const char *uri)
{
    static const char pre[] = "coffer://vault/";
    const char *name;
    if (uri == NULL || strncmp(uri, pre, sizeof(pre) - 1) != 0) {
        return false;
    }
    name = uri + sizeof(pre) - 1;
    /* A vault is named like a tenant: one safe path segment. */
    return vault_sysdb_tenant_name_ok(name, NULL) == 0;
}

bool
vault_request_fingerprint_ok(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n != 2 * 32) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

static int
check_tenant_info(const Coffer__V1__TenantInfo *t, struct cfr_err *err)
{
    if (t == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "tenant: required");
    }
    if (vault_sysdb_tenant_name_ok(t->name, NULL) != 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "tenant.name: 1..63 of [a-z0-9._-], not starting "
                       "with . - or _");
    }
    if (t->n_regions > VAULT_SYSDB_REGIONS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "tenant.regions: more than %d",
                       VAULT_SYSDB_REGIONS_MAX);
    }
    for (size_t i = 0; i < t->n_regions; i++) {
        if (!printable(t->regions[i], VAULT_SYSDB_REGION_MAX, false)) {
            return CFR_ERR(err, CFR_EINVAL, "tenant.regions[%zu]: bad name", i);
        }
    }
    if (t->n_notify > VAULT_SYSDB_NOTIFY_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "tenant.notify: more than %d",
                       VAULT_SYSDB_NOTIFY_MAX);
    }
    for (size_t i = 0; i < t->n_notify; i++) {
        if (!printable(t->notify[i], VAULT_SYSDB_TARGET_MAX, false)) {
            return CFR_ERR(err, CFR_EINVAL, "tenant.notify[%zu]: bad target",
                           i);
        }
    }
    if (t->retention_ms != 0 && (t->retention_ms < CFR_MS_PER_HOUR ||
                                 t->retention_ms > 3650 * CFR_MS_PER_DAY)) {
        return CFR_ERR(err, CFR_EINVAL,
                       "tenant.retention_ms: 0 or between 1 hour and 10 "
                       "years");
    }
    return 0;
}

static int
check_deny(const Coffer__V1__DenyEntry *d, struct cfr_err *err)
{
    char tenant[CFR_RPC_TENANT_MAX], role[CFR_RPC_ROLE_MAX];
    if (d == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "deny: required");
    }
    if (strcmp(d->kind, "identity") == 0) {
        if (strlen(d->value) >= CFR_RPC_NAME_MAX ||
            (cfr_rpc_identity_parse(d->value, tenant, role) != 0 &&
             !vault_request_vault_identity_ok(d->value))) {
            return CFR_ERR(err, CFR_EINVAL,
                           "deny.value: not a coffer identity URI");
        }
    } else if (strcmp(d->kind, "fingerprint") == 0) {
        if (!vault_request_fingerprint_ok(d->value)) {
            return CFR_ERR(err, CFR_EINVAL,
                           "deny.value: a SHA-256 fingerprint is 64 hex "
                           "digits");
        }
    } else {
        return CFR_ERR(err, CFR_EINVAL,
                       "deny.kind: \"identity\" or \"fingerprint\"");
    }
    if (d->reason[0] != '\0' && !printable(d->reason, SYSTEM_TEXT_MAX, true)) {
        return CFR_ERR(err, CFR_EINVAL, "deny.reason: printable, < %d bytes",
                       SYSTEM_TEXT_MAX);
    }
    return 0;
}

static int
check_system(const Coffer__V1__SystemRequest *req, struct cfr_err *err)
{
    /* Fields every op may carry. */
    if (req->approval_id.len != 0 &&
        req->approval_id.len != VAULT_SYSDB_APPROVAL_ID_LEN) {
        return CFR_ERR(err, CFR_EINVAL, "approval_id: %d bytes expected",
                       VAULT_SYSDB_APPROVAL_ID_LEN);
    }
    if (strlen(req->totp) >= SYSTEM_TOTP_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "totp: too long");
    }
    if (req->reason[0] != '\0' &&
        !printable(req->reason, SYSTEM_TEXT_MAX, true)) {
        return CFR_ERR(err, CFR_EINVAL, "reason: printable, < %d bytes",
                       SYSTEM_TEXT_MAX);
    }
    if (req->tenant_name[0] != '\0' &&
        vault_sysdb_tenant_name_ok(req->tenant_name, NULL) != 0) {
        return CFR_ERR(err, CFR_EINVAL, "tenant_name: bad tenant name");
    }
    switch (req->op) {
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET:
        return check_tenant_info(req->tenant, err);
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE:
        return check_deny(req->deny, err);
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET:
        if (req->totp_secret.len < TOTP_SECRET_MIN ||
            req->totp_secret.len > TOTP_SECRET_MAX) {
            return CFR_ERR(err, CFR_EINVAL, "totp_secret: %d..%d bytes",
                           TOTP_SECRET_MIN, TOTP_SECRET_MAX);
        }
        if (req->principal[0] != '\0' &&
            !printable(req->principal, SYSTEM_TEXT_MAX, true)) {
            return CFR_ERR(err, CFR_EINVAL, "principal: printable, < %d bytes",
                           SYSTEM_TEXT_MAX);
        }
        /* A tenant admin must be named; an operator's own is implied. */
        if (req->tenant_name[0] != '\0' && req->principal[0] == '\0') {
            return CFR_ERR(err, CFR_EINVAL,
                           "principal: the admin's certificate name");
        }
        return 0;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE:
        if (req->approval_id.len != VAULT_SYSDB_APPROVAL_ID_LEN) {
            return CFR_ERR(err, CFR_EINVAL, "approval_id: %d bytes expected",
                           VAULT_SYSDB_APPROVAL_ID_LEN);
        }
        return 0;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC:
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS:
        return 0;
    default:
        return CFR_ERR(err, CFR_EINVAL, "unknown system op");
    }
}

int
vault_request_decode_system(const uint8_t *p, size_t n,
                            Coffer__V1__SystemRequest **msg_r,
                            struct cfr_err *err)
{
    ProtobufCMessage *m = NULL;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__system_request__descriptor, "SystemRequest",
                     p, n, &m, err)) != 0) {
        goto out;
    }
    if ((rc = check_system((Coffer__V1__SystemRequest *)m, err)) != 0) {
        goto out;
    }
    *msg_r = (Coffer__V1__SystemRequest *)m;
    m = NULL;
out:
    if (m != NULL) {
        /* The secret must not linger in freed memory. */
        Coffer__V1__SystemRequest *req = (Coffer__V1__SystemRequest *)m;
        if (req->totp_secret.len > 0) {
            cfr_wipe(req->totp_secret.data, req->totp_secret.len);
        }
    }
    release(m);
    return rc;
}

void
vault_request_free_system(Coffer__V1__SystemRequest *msg)
{
    if (msg != NULL && msg->totp_secret.len > 0) {
        cfr_wipe(msg->totp_secret.data, msg->totp_secret.len);
    }
    release(msg != NULL ? &msg->base : NULL);
}

/* ---- Sync* (peer vaults) ------------------------------------------------ */

/*
 * The tenant a Sync request names. Checked here like a certificate's
 * tenant would be, since for a peer it is the only thing that selects a
 * database: a name that is no tenant name never reaches the store.
 */
static int
check_sync_tenant(const char *name, const char *tenant, struct cfr_err *err)
{
    if (tenant == NULL || vault_sysdb_tenant_name_ok(tenant, NULL) != 0) {
        return CFR_ERR(err, CFR_EINVAL, "%s: tenant: bad tenant name", name);
    }
    return 0;
}

int
vault_request_decode_sync_digest(const uint8_t *p, size_t n,
                                 Coffer__V1__SyncDigestRequest **msg_r,
                                 struct cfr_err *err)
{
    static const char name[] = "SyncDigestRequest";
    ProtobufCMessage *m = NULL;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__sync_digest_request__descriptor, name, p, n,
                     &m, err)) != 0 ||
        (rc = check_sync_tenant(
             name, ((Coffer__V1__SyncDigestRequest *)m)->tenant, err)) != 0) {
        goto out;
    }
    *msg_r = (Coffer__V1__SyncDigestRequest *)m;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_sync_digest(Coffer__V1__SyncDigestRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

int
vault_request_decode_sync_list(const uint8_t *p, size_t n,
                               Coffer__V1__SyncListRequest **msg_r,
                               struct cfr_err *err)
{
    static const char name[] = "SyncListRequest";
    ProtobufCMessage *m = NULL;
    Coffer__V1__SyncListRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__sync_list_request__descriptor, name, p, n, &m,
                     err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__SyncListRequest *)m;
    if ((rc = check_sync_tenant(name, req->tenant, err)) != 0) {
        goto out;
    }
    /* Duplicates are harmless (a bucket is listed once); the count is not. */
    if (req->n_buckets > VAULT_SYNC_BUCKETS) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s: more than %d buckets", name,
                     VAULT_SYNC_BUCKETS);
        goto out;
    }
    for (size_t i = 0; i < req->n_buckets; i++) {
        if (req->buckets[i] >= VAULT_SYNC_BUCKETS) {
            rc = CFR_ERR(err, CFR_EINVAL, "%s: bucket %u is not 0..%d", name,
                         (unsigned)req->buckets[i], VAULT_SYNC_BUCKETS - 1);
            goto out;
        }
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_sync_list(Coffer__V1__SyncListRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}

int
vault_request_decode_sync_get(const uint8_t *p, size_t n,
                              Coffer__V1__SyncGetRequest **msg_r,
                              struct cfr_err *err)
{
    static const char name[] = "SyncGetRequest";
    ProtobufCMessage *m = NULL;
    Coffer__V1__SyncGetRequest *req;
    int rc;

    *msg_r = NULL;
    if ((rc = unpack(&coffer__v1__sync_get_request__descriptor, name, p, n, &m,
                     err)) != 0) {
        goto out;
    }
    req = (Coffer__V1__SyncGetRequest *)m;
    if ((rc = check_sync_tenant(name, req->tenant, err)) != 0 ||
        (rc = check_ids(name, req->ids, req->n_ids, err)) != 0) {
        goto out;
    }
    *msg_r = req;
    m = NULL;
out:
    release(m);
    return rc;
}

void
vault_request_free_sync_get(Coffer__V1__SyncGetRequest *msg)
{
    release(msg != NULL ? &msg->base : NULL);
}
