/*
 * vault_request_fuzz.c - the vault's request decoders under hostile bytes.
 *
 * The first byte picks one of the thirteen request messages (mod 13; the
 * seeds of the first ones kept their bytes when System and then the three
 * Sync requests joined, since their selectors are below 10), the rest
 * is handed to its decoder as the bytes of a call. Invariants checked:
 *  1. A decoder returns 0 with a message, or one of CFR_EINVAL,
 *     CFR_ECORRUPT, CFR_ELIMIT with no message and a non-empty reason.
 *  2. An accepted message honours the bounds request.h promises (checked
 *     again here, independently, by reading every field a handler uses).
 *  3. Nothing leaks (LeakSanitizer) on either path.
 * A broken invariant aborts, which libFuzzer and the replay both report.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "rpc.h"   /* cfr_rpc_identity_parse */
#include "sysdb.h" /* the registry's bounds */

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void
want_ids(const ProtobufCBinaryData *ids, size_t n)
{
    CHECK(n <= VAULT_IDS_MAX);
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i].len == VAULT_ID_LEN);
    }
}

static void
check_outcome(int rc, const void *msg, const struct cfr_err *err)
{
    if (rc == 0) {
        CHECK(msg != NULL);
        return;
    }
    CHECK(msg == NULL);
    CHECK(rc == CFR_EINVAL || rc == CFR_ECORRUPT || rc == CFR_ELIMIT);
    CHECK(err->code == rc && err->msg[0] != '\0');
}

static void
one_missing(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__MissingRequest *m;
    int rc = vault_request_decode_missing(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        want_ids(m->ids, m->n_ids);
        CHECK(m->lease_id.len == 0 || m->lease_id.len == VAULT_LEASE_LEN);
    }
    vault_request_free_missing(m);
}

static void
one_open_lease(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__OpenLeaseRequest *m;
    int rc = vault_request_decode_open_lease(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        CHECK(m->session_public.len <= VAULT_SESSION_PUBLIC_MAX);
    }
    vault_request_free_open_lease(m);
}

static void
one_put_objects(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__PutObjectsRequest *m;
    int rc = vault_request_decode_put_objects(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        CHECK(m->lease_id.len == VAULT_LEASE_LEN);
        CHECK(m->n_objects <= VAULT_IDS_MAX);
        for (size_t i = 0; i < m->n_objects; i++) {
            CHECK(m->objects[i]->id.len == VAULT_ID_LEN);
            CHECK(m->objects[i]->kind ==
                      COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED ||
                  m->objects[i]->kind ==
                      COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE);
            CHECK(m->objects[i]->data.len <= VAULT_OBJECT_MAX);
        }
    }
    vault_request_free_put_objects(m);
}

static void
one_get_objects(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__GetObjectsRequest *m;
    int rc = vault_request_decode_get_objects(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        want_ids(m->ids, m->n_ids);
    }
    vault_request_free_get_objects(m);
}

static void
one_commit(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__CommitRequest *m;
    int rc = vault_request_decode_commit(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        CHECK(m->lease_id.len == VAULT_LEASE_LEN);
        CHECK(m->mailbox_id.len == VAULT_ID_LEN);
        CHECK(m->header_id.len == VAULT_ID_LEN);
        CHECK(m->refs != NULL && m->refs->id.len == VAULT_ID_LEN);
        CHECK(m->header.len > 0 && m->header.len <= VAULT_HEADER_MAX);
    }
    vault_request_free_commit(m);
}

static void
one_list_snapshots(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__ListSnapshotsRequest *m;
    int rc = vault_request_decode_list_snapshots(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        CHECK(m->mailbox_id.len == 0 || m->mailbox_id.len == VAULT_ID_LEN);
    }
    vault_request_free_list_snapshots(m);
}

static void
one_admin(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__AdminRequest *m;
    int rc = vault_request_decode_admin(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        switch (m->op) {
        case COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE:
            CHECK(m->approval_id.len == 16);
            break;
        case COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION:
            CHECK(m->retention_ms >= INT64_C(3600000) &&
                  m->retention_ms <= INT64_C(3650) * 86400000);
            break;
        case COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD:
        case COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE:
            CHECK(m->header_id.len == VAULT_ID_LEN);
            break;
        case COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX:
            CHECK(m->mailbox_id.len == VAULT_ID_LEN);
            break;
        case COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION:
        case COFFER__V1__ADMIN_OP__ADMIN_OP_GC:
        case COFFER__V1__ADMIN_OP__ADMIN_OP_SCRUB:
            break;
        default:
            CHECK(0);
        }
    }
    vault_request_free_admin(m);
}

static void
one_audit(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__AuditRequest *m;
    int rc = vault_request_decode_audit(p, n, &m, &err);
    check_outcome(rc, m, &err);
    vault_request_free_audit(m);
}

static void
one_health(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__HealthRequest *m;
    int rc = vault_request_decode_health(p, n, &m, &err);
    check_outcome(rc, m, &err);
    vault_request_free_health(m);
}

static bool
hex64(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
              (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return n == 64;
}

static void
one_system(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__SystemRequest *m;
    int rc = vault_request_decode_system(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        CHECK(m->approval_id.len == 0 ||
              m->approval_id.len == VAULT_SYSDB_APPROVAL_ID_LEN);
        CHECK(m->tenant_name[0] == '\0' ||
              vault_sysdb_tenant_name_ok(m->tenant_name, NULL) == 0);
        switch (m->op) {
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET:
            CHECK(m->tenant != NULL);
            CHECK(vault_sysdb_tenant_name_ok(m->tenant->name, NULL) == 0);
            CHECK(m->tenant->n_regions <= VAULT_SYSDB_REGIONS_MAX);
            CHECK(m->tenant->n_notify <= VAULT_SYSDB_NOTIFY_MAX);
            for (size_t i = 0; i < m->tenant->n_regions; i++) {
                CHECK(strlen(m->tenant->regions[i]) < VAULT_SYSDB_REGION_MAX);
            }
            for (size_t i = 0; i < m->tenant->n_notify; i++) {
                CHECK(strlen(m->tenant->notify[i]) < VAULT_SYSDB_TARGET_MAX);
            }
            break;
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE:
            CHECK(m->deny != NULL);
            if (strcmp(m->deny->kind, "fingerprint") == 0) {
                CHECK(hex64(m->deny->value));
            } else {
                char t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
                CHECK(strcmp(m->deny->kind, "identity") == 0);
                CHECK(cfr_rpc_identity_parse(m->deny->value, t, r) == 0 ||
                      vault_request_vault_identity_ok(m->deny->value));
            }
            break;
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET:
            CHECK(m->totp_secret.len >= 20 && m->totp_secret.len <= 64);
            break;
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE:
            CHECK(m->approval_id.len == VAULT_SYSDB_APPROVAL_ID_LEN);
            break;
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC:
        case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS:
            break;
        default:
            CHECK(0); /* an unknown op was accepted */
        }
    }
    vault_request_free_system(m);
}

/* A peer's tenant selects a database: it must be a tenant name. */
static void
want_tenant(const char *tenant)
{
    CHECK(tenant != NULL && vault_sysdb_tenant_name_ok(tenant, NULL) == 0);
}

static void
one_sync_digest(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__SyncDigestRequest *m;
    int rc = vault_request_decode_sync_digest(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        want_tenant(m->tenant);
    }
    vault_request_free_sync_digest(m);
}

static void
one_sync_list(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__SyncListRequest *m;
    int rc = vault_request_decode_sync_list(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        want_tenant(m->tenant);
        CHECK(m->n_buckets <= VAULT_SYNC_BUCKETS);
        for (size_t i = 0; i < m->n_buckets; i++) {
            CHECK(m->buckets[i] < VAULT_SYNC_BUCKETS);
        }
    }
    vault_request_free_sync_list(m);
}

static void
one_sync_get(const uint8_t *p, size_t n)
{
    struct cfr_err err = {0};
    Coffer__V1__SyncGetRequest *m;
    int rc = vault_request_decode_sync_get(p, n, &m, &err);
    check_outcome(rc, m, &err);
    if (m != NULL) {
        want_tenant(m->tenant);
        want_ids(m->ids, m->n_ids);
    }
    vault_request_free_sync_get(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static void (*const one[])(const uint8_t *, size_t) = {
        one_missing, one_open_lease,     one_put_objects, one_get_objects,
        one_commit,  one_list_snapshots, one_admin,       one_audit,
        one_health,  one_system,         one_sync_digest, one_sync_list,
        one_sync_get};
    if (size == 0) {
        return 0;
    }
    one[data[0] % (sizeof(one) / sizeof(one[0]))](data + 1, size - 1);
    return 0;
}
