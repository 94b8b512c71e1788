/*
 * vault_request_test.c - the vault's request decoders: each accepts a
 * well-formed request with its fields intact and refuses each kind of
 * fault with the code and message the server answers with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "request.h"
#include "sysdb.h" /* the registry bounds */

/* Encodings are built here with protobuf-c's own packer. */
struct enc {
    uint8_t *p;
    size_t n;
};

static struct enc
pack(const ProtobufCMessage *m)
{
    struct enc e;
    e.n = protobuf_c_message_get_packed_size(m);
    e.p = malloc(e.n + 1);
    assert_non_null(e.p);
    assert_int_equal(protobuf_c_message_pack(m, e.p), e.n);
    return e;
}

static uint8_t g_id[2][VAULT_ID_LEN], g_lease[VAULT_LEASE_LEN],
    g_hdr[VAULT_HEADER_MAX + 1];

static int
setup(void **state)
{
    (void)state;
    memset(g_id[0], 0x11, VAULT_ID_LEN);
    memset(g_id[1], 0x22, VAULT_ID_LEN);
    for (size_t i = 0; i < sizeof(g_lease); i++) {
        g_lease[i] = (uint8_t)(0x30 + i);
    }
    memset(g_hdr, 0x44, sizeof(g_hdr));
    return 0;
}

static void
expect_refused(int rc, const void *msg, const struct cfr_err *err, int code,
               const char *text)
{
    assert_int_equal(rc, code);
    assert_int_equal(err->code, code);
    assert_null(msg);
    assert_string_equal(err->msg, text);
}

/* Bytes that are no protobuf at all: a length-delimited field 1 of 100
 * bytes with 2 present. */
static const uint8_t garbage[] = {0x0a, 0x64, 0x01, 0x02};

static void
test_vault_request_missing(void **state)
{
    (void)state;
    Coffer__V1__MissingRequest m = COFFER__V1__MISSING_REQUEST__INIT;
    Coffer__V1__MissingRequest *out = NULL;
    ProtobufCBinaryData ids[2] = {{VAULT_ID_LEN, g_id[0]},
                                  {VAULT_ID_LEN, g_id[1]}};
    ProtobufCBinaryData *many;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.n_ids = 2;
    m.ids = ids;
    m.lease_id.len = VAULT_LEASE_LEN;
    m.lease_id.data = g_lease;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_missing(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_ids, 2);
    assert_memory_equal(out->ids[1].data, g_id[1], VAULT_ID_LEN);
    assert_memory_equal(out->lease_id.data, g_lease, VAULT_LEASE_LEN);
    vault_request_free_missing(out);

    /* Truncated by one byte: the last ID's bytes are cut. */
    rc = vault_request_decode_missing(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "MissingRequest: malformed protobuf");
    free(e.p);

    rc = vault_request_decode_missing(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "MissingRequest: malformed protobuf");

    ids[1].len = VAULT_ID_LEN - 1;
    e = pack(&m.base);
    rc = vault_request_decode_missing(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "id: 31 bytes, want 32");
    free(e.p);
    ids[1].len = VAULT_ID_LEN;

    m.lease_id.len = 8;
    e = pack(&m.base);
    rc = vault_request_decode_missing(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "lease_id: 8 bytes, want 16");
    free(e.p);

    /* One ID too many: refused before the (bad) lease is looked at. */
    many = calloc(VAULT_IDS_MAX + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= VAULT_IDS_MAX; i++) {
        many[i].len = VAULT_ID_LEN;
        many[i].data = g_id[0];
    }
    m.ids = many;
    m.n_ids = VAULT_IDS_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_missing(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "MissingRequest: more than 4096 ids");
    free(e.p);

    /* Exactly the limit, without a lease, is fine. */
    m.n_ids = VAULT_IDS_MAX;
    m.lease_id.len = 0;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_missing(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_ids, VAULT_IDS_MAX);
    assert_int_equal(out->lease_id.len, 0);
    vault_request_free_missing(out);
    free(e.p);
    free(many);

    /* An empty request is a valid, empty question. */
    assert_int_equal(vault_request_decode_missing(NULL, 0, &out, &err), 0);
    assert_int_equal(out->n_ids, 0);
    vault_request_free_missing(out);
}

static void
test_vault_request_open_lease(void **state)
{
    (void)state;
    Coffer__V1__OpenLeaseRequest m = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
    Coffer__V1__OpenLeaseRequest *out = NULL;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.session_public.len = VAULT_SESSION_PUBLIC_MAX;
    m.session_public.data = g_hdr;
    m.ttl_ms = 123456;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_open_lease(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->ttl_ms, 123456);
    assert_int_equal(out->session_public.len, VAULT_SESSION_PUBLIC_MAX);
    assert_memory_equal(out->session_public.data, g_hdr,
                        VAULT_SESSION_PUBLIC_MAX);
    vault_request_free_open_lease(out);
    rc = vault_request_decode_open_lease(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "OpenLeaseRequest: malformed protobuf");
    free(e.p);

    m.session_public.len = VAULT_SESSION_PUBLIC_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_open_lease(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "session_public: longer than 64 bytes");
    free(e.p);

    rc = vault_request_decode_open_lease(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "OpenLeaseRequest: malformed protobuf");
}

static void
test_vault_request_put_objects(void **state)
{
    (void)state;
    Coffer__V1__PutObjectsRequest m = COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
    Coffer__V1__PutObjectsRequest *out = NULL;
    Coffer__V1__Object o[2] = {COFFER__V1__OBJECT__INIT,
                               COFFER__V1__OBJECT__INIT};
    Coffer__V1__Object *op[2] = {&o[0], &o[1]}, **many;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    for (size_t i = 0; i < 2; i++) {
        o[i].id.len = VAULT_ID_LEN;
        o[i].id.data = g_id[i];
        o[i].data.len = 100 + i;
        o[i].data.data = g_hdr;
    }
    o[0].kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED;
    o[1].kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE;
    m.lease_id.len = VAULT_LEASE_LEN;
    m.lease_id.data = g_lease;
    m.n_objects = 2;
    m.objects = op;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_put_objects(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_objects, 2);
    assert_memory_equal(out->objects[1]->id.data, g_id[1], VAULT_ID_LEN);
    assert_int_equal(out->objects[1]->kind,
                     COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE);
    assert_int_equal(out->objects[1]->data.len, 101);
    assert_memory_equal(out->lease_id.data, g_lease, VAULT_LEASE_LEN);
    vault_request_free_put_objects(out);
    rc = vault_request_decode_put_objects(e.p, e.n - 3, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "PutObjectsRequest: malformed protobuf");
    free(e.p);

    o[1].kind = 3;
    e = pack(&m.base);
    rc = vault_request_decode_put_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "object 1: unknown kind 3");
    free(e.p);
    o[1].kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE;

    o[0].id.len = 33;
    o[0].id.data = g_hdr;
    e = pack(&m.base);
    rc = vault_request_decode_put_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "object 0: id of 33 bytes");
    free(e.p);
    o[0].id.len = VAULT_ID_LEN;

    m.lease_id.len = 0;
    e = pack(&m.base);
    rc = vault_request_decode_put_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "lease_id: 0 bytes, want 16");
    free(e.p);
    m.lease_id.len = VAULT_LEASE_LEN;

    many = calloc(VAULT_IDS_MAX + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= VAULT_IDS_MAX; i++) {
        many[i] = &o[0];
    }
    m.objects = many;
    m.n_objects = VAULT_IDS_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_put_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "more than 4096 objects in a message");
    free(e.p);
    free(many);

    rc = vault_request_decode_put_objects(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "PutObjectsRequest: malformed protobuf");
}

/* An object over VAULT_OBJECT_MAX is a limit, not a malformed request. */
static void
test_vault_request_put_objects_oversized(void **state)
{
    (void)state;
    Coffer__V1__PutObjectsRequest m = COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
    Coffer__V1__PutObjectsRequest *out = NULL;
    Coffer__V1__Object o = COFFER__V1__OBJECT__INIT, *op = &o;
    struct cfr_err err = {0};
    struct enc e;
    uint8_t *big = calloc(1, VAULT_OBJECT_MAX + 1);
    char want[64];
    int rc;

    assert_non_null(big);
    o.id.len = VAULT_ID_LEN;
    o.id.data = g_id[0];
    o.kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED;
    o.data.len = VAULT_OBJECT_MAX + 1;
    o.data.data = big;
    m.lease_id.len = VAULT_LEASE_LEN;
    m.lease_id.data = g_lease;
    m.n_objects = 1;
    m.objects = &op;
    e = pack(&m.base);
    rc = vault_request_decode_put_objects(e.p, e.n, &out, &err);
    snprintf(want, sizeof(want), "object 0: %zu bytes", VAULT_OBJECT_MAX + 1);
    expect_refused(rc, out, &err, CFR_ELIMIT, want);
    free(e.p);
    free(big);
}

static void
test_vault_request_get_objects(void **state)
{
    (void)state;
    Coffer__V1__GetObjectsRequest m = COFFER__V1__GET_OBJECTS_REQUEST__INIT;
    Coffer__V1__GetObjectsRequest *out = NULL;
    ProtobufCBinaryData ids[2] = {{VAULT_ID_LEN, g_id[0]},
                                  {VAULT_ID_LEN, g_id[1]}};
    ProtobufCBinaryData *many;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.n_ids = 2;
    m.ids = ids;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_get_objects(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_ids, 2);
    assert_memory_equal(out->ids[0].data, g_id[0], VAULT_ID_LEN);
    assert_memory_equal(out->ids[1].data, g_id[1], VAULT_ID_LEN);
    vault_request_free_get_objects(out);
    rc = vault_request_decode_get_objects(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "GetObjectsRequest: malformed protobuf");
    free(e.p);

    ids[0].len = 0;
    e = pack(&m.base);
    rc = vault_request_decode_get_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "id: 0 bytes, want 32");
    free(e.p);

    many = calloc(VAULT_IDS_MAX + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= VAULT_IDS_MAX; i++) {
        many[i].len = VAULT_ID_LEN;
        many[i].data = g_id[1];
    }
    m.ids = many;
    m.n_ids = VAULT_IDS_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_get_objects(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "GetObjectsRequest: more than 4096 ids");
    free(e.p);
    free(many);

    rc = vault_request_decode_get_objects(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "GetObjectsRequest: malformed protobuf");
}

static void
test_vault_request_commit(void **state)
{
    (void)state;
    Coffer__V1__CommitRequest m = COFFER__V1__COMMIT_REQUEST__INIT;
    Coffer__V1__CommitRequest *out = NULL;
    Coffer__V1__TreeRoot r = COFFER__V1__TREE_ROOT__INIT;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    r.id.len = VAULT_ID_LEN;
    r.id.data = g_id[1];
    r.height = 2;
    r.entries = 77;
    m.lease_id.len = VAULT_LEASE_LEN;
    m.lease_id.data = g_lease;
    m.mailbox_id.len = VAULT_ID_LEN;
    m.mailbox_id.data = g_id[0];
    m.header_id.len = VAULT_ID_LEN;
    m.header_id.data = g_id[1];
    m.header.len = VAULT_HEADER_MAX;
    m.header.data = g_hdr;
    m.refs = &r;
    m.flags = 1;
    m.hold_previous = 1;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_commit(e.p, e.n, &out, &err), 0);
    assert_memory_equal(out->mailbox_id.data, g_id[0], VAULT_ID_LEN);
    assert_memory_equal(out->header_id.data, g_id[1], VAULT_ID_LEN);
    assert_int_equal(out->header.len, VAULT_HEADER_MAX);
    assert_int_equal(out->refs->height, 2);
    assert_int_equal(out->refs->entries, 77);
    assert_int_equal(out->flags, 1);
    assert_true(out->hold_previous);
    vault_request_free_commit(out);
    rc = vault_request_decode_commit(e.p, e.n / 2, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "CommitRequest: malformed protobuf");
    free(e.p);

    m.header.len = VAULT_HEADER_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_commit(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "header: empty or longer than 8192 bytes");
    free(e.p);
    m.header.len = 0;
    e = pack(&m.base);
    rc = vault_request_decode_commit(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "header: empty or longer than 8192 bytes");
    free(e.p);
    m.header.len = 10;

    m.refs = NULL;
    e = pack(&m.base);
    rc = vault_request_decode_commit(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "refs: a 32-byte root ID is required");
    free(e.p);
    m.refs = &r;

    /* Several faults: the lease is named first, as the server always did. */
    m.header_id.len = 31;
    m.lease_id.len = 17;
    m.lease_id.data = g_hdr;
    e = pack(&m.base);
    rc = vault_request_decode_commit(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "lease_id: 17 bytes, want 16");
    free(e.p);
    m.lease_id.len = VAULT_LEASE_LEN;
    e = pack(&m.base);
    rc = vault_request_decode_commit(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "header_id: 31 bytes, want 32");
    free(e.p);

    rc = vault_request_decode_commit(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "CommitRequest: malformed protobuf");
}

static void
test_vault_request_list_snapshots(void **state)
{
    (void)state;
    Coffer__V1__ListSnapshotsRequest m =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    Coffer__V1__ListSnapshotsRequest *out = NULL;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.mailbox_id.len = VAULT_ID_LEN;
    m.mailbox_id.data = g_id[0];
    m.with_headers = 1;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_list_snapshots(e.p, e.n, &out, &err),
                     0);
    assert_memory_equal(out->mailbox_id.data, g_id[0], VAULT_ID_LEN);
    assert_true(out->with_headers);
    vault_request_free_list_snapshots(out);
    rc = vault_request_decode_list_snapshots(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "ListSnapshotsRequest: malformed protobuf");
    free(e.p);

    m.mailbox_id.len = 12;
    e = pack(&m.base);
    rc = vault_request_decode_list_snapshots(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "mailbox_id: 12 bytes, want 32");
    free(e.p);

    /* No mailbox means every mailbox. */
    assert_int_equal(vault_request_decode_list_snapshots(NULL, 0, &out, &err),
                     0);
    assert_int_equal(out->mailbox_id.len, 0);
    assert_false(out->with_headers);
    vault_request_free_list_snapshots(out);

    rc = vault_request_decode_list_snapshots(garbage, sizeof(garbage), &out,
                                             &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "ListSnapshotsRequest: malformed protobuf");
}

static int
admin_decode(Coffer__V1__AdminRequest *m, Coffer__V1__AdminRequest **out,
             struct cfr_err *err)
{
    struct enc e = pack(&m->base);
    int rc = vault_request_decode_admin(e.p, e.n, out, err);
    free(e.p);
    return rc;
}

static void
test_vault_request_admin(void **state)
{
    (void)state;
    Coffer__V1__AdminRequest m = COFFER__V1__ADMIN_REQUEST__INIT;
    Coffer__V1__AdminRequest *out = NULL;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX;
    m.mailbox_id.len = VAULT_ID_LEN;
    m.mailbox_id.data = g_id[0];
    m.totp = (char *)"123456";
    m.reason = (char *)"mailbox gone";
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_admin(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->op, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX);
    assert_memory_equal(out->mailbox_id.data, g_id[0], VAULT_ID_LEN);
    assert_string_equal(out->totp, "123456");
    assert_string_equal(out->reason, "mailbox gone");
    vault_request_free_admin(out);
    rc = vault_request_decode_admin(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "AdminRequest: malformed protobuf");
    free(e.p);

    m.mailbox_id.len = 0;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "mailbox_id: 0 bytes, want 32");

    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD;
    m.header_id.len = 20;
    m.header_id.data = g_id[1];
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "header_id: 20 bytes, want 32");
    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "header_id: 20 bytes, want 32");
    m.header_id.len = VAULT_ID_LEN;
    assert_int_equal(admin_decode(&m, &out, &err), 0);
    assert_memory_equal(out->header_id.data, g_id[1], VAULT_ID_LEN);
    vault_request_free_admin(out);

    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE;
    m.approval_id.len = 15;
    m.approval_id.data = g_lease;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "approval_id: 16 bytes expected");
    m.approval_id.len = 16;
    assert_int_equal(admin_decode(&m, &out, &err), 0);
    assert_memory_equal(out->approval_id.data, g_lease, 16);
    vault_request_free_admin(out);

    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION;
    m.retention_ms = CFR_MS_PER_HOUR - 1;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "retention_ms: between 1 hour and 10 years");
    m.retention_ms = 3650 * CFR_MS_PER_DAY + 1;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "retention_ms: between 1 hour and 10 years");
    m.retention_ms = 3650 * CFR_MS_PER_DAY;
    assert_int_equal(admin_decode(&m, &out, &err), 0);
    assert_int_equal(out->retention_ms, 3650 * CFR_MS_PER_DAY);
    vault_request_free_admin(out);

    /* Argument-free ops need nothing else; a made-up op is refused. */
    m.op = COFFER__V1__ADMIN_OP__ADMIN_OP_GC;
    m.retention_ms = 0;
    assert_int_equal(admin_decode(&m, &out, &err), 0);
    assert_int_equal(out->op, COFFER__V1__ADMIN_OP__ADMIN_OP_GC);
    vault_request_free_admin(out);
    m.op = 42;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "unknown admin op");
    m.op = 0;
    rc = admin_decode(&m, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "unknown admin op");

    rc = vault_request_decode_admin(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "AdminRequest: malformed protobuf");
}

static void
test_vault_request_audit_and_health(void **state)
{
    (void)state;
    Coffer__V1__AuditRequest a = COFFER__V1__AUDIT_REQUEST__INIT;
    Coffer__V1__AuditRequest *aout = NULL;
    Coffer__V1__HealthRequest *hout = NULL;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    a.since_ms = 1700000000000;
    a.limit = 20000;
    e = pack(&a.base);
    assert_int_equal(vault_request_decode_audit(e.p, e.n, &aout, &err), 0);
    assert_int_equal(aout->since_ms, 1700000000000);
    assert_int_equal(aout->limit, 20000);
    vault_request_free_audit(aout);
    rc = vault_request_decode_audit(e.p, e.n - 1, &aout, &err);
    expect_refused(rc, aout, &err, CFR_ECORRUPT,
                   "AuditRequest: malformed protobuf");
    free(e.p);
    rc = vault_request_decode_audit(garbage, sizeof(garbage), &aout, &err);
    expect_refused(rc, aout, &err, CFR_ECORRUPT,
                   "AuditRequest: malformed protobuf");

    assert_int_equal(vault_request_decode_health(NULL, 0, &hout, &err), 0);
    assert_non_null(hout);
    vault_request_free_health(hout);
    rc = vault_request_decode_health(garbage, sizeof(garbage), &hout, &err);
    expect_refused(rc, hout, &err, CFR_ECORRUPT,
                   "HealthRequest: malformed protobuf");
}

/* Decodes one SystemRequest; returns rc and frees an accepted message. */
static int
sys_decode(const Coffer__V1__SystemRequest *req, struct cfr_err *err)
{
    Coffer__V1__SystemRequest *out = NULL;
    struct enc e = pack(&req->base);
    int rc = vault_request_decode_system(e.p, e.n, &out, err);
    if (rc == 0) {
        assert_non_null(out);
        assert_int_equal(out->op, req->op);
    } else {
        assert_null(out);
    }
    vault_request_free_system(out);
    free(e.p);
    return rc;
}

static void
expect_sys_refused(const Coffer__V1__SystemRequest *req, const char *text)
{
    struct cfr_err err = {0};
    assert_int_equal(sys_decode(req, &err), CFR_EINVAL);
    assert_int_equal(err.code, CFR_EINVAL);
    if (strstr(err.msg, text) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, text);
    }
}

static void
test_vault_request_system(void **state)
{
    (void)state;
    Coffer__V1__SystemRequest r = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
    Coffer__V1__DenyEntry de = COFFER__V1__DENY_ENTRY__INIT;
    Coffer__V1__SystemRequest *out = NULL;
    struct cfr_err err = {0};
    char *regions[VAULT_SYSDB_REGIONS_MAX + 1];
    char long_region[VAULT_SYSDB_REGION_MAX + 1];
    char fp[65];
    uint8_t secret[65], approval[17];
    int rc;

    memset(secret, 0x5a, sizeof(secret));
    memset(approval, 0x61, sizeof(approval));
    for (size_t i = 0; i <= VAULT_SYSDB_REGIONS_MAX; i++) {
        regions[i] = (char *)"eu-west";
    }

    /* TENANT_ADD / SET: a tenant with a valid name and bounded lists. */
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD;
    expect_sys_refused(&r, "tenant: required");
    r.tenant = &ti;
    ti.name = (char *)"acme";
    ti.n_regions = 1;
    ti.regions = regions;
    ti.retention_ms = 7 * CFR_MS_PER_DAY;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET;
    assert_int_equal(sys_decode(&r, &err), 0);
    ti.name = (char *)"_system";
    expect_sys_refused(&r, "tenant.name");
    ti.name = (char *)"Acme";
    expect_sys_refused(&r, "tenant.name");
    ti.name = (char *)"acme";
    ti.n_regions = VAULT_SYSDB_REGIONS_MAX + 1;
    expect_sys_refused(&r, "tenant.regions: more than 16");
    memset(long_region, 'a', sizeof(long_region) - 1);
    long_region[sizeof(long_region) - 1] = '\0';
    regions[0] = long_region;
    ti.n_regions = 1;
    expect_sys_refused(&r, "tenant.regions[0]");
    regions[0] = (char *)"eu-west";
    ti.retention_ms = 60000; /* a minute: below the floor */
    expect_sys_refused(&r, "tenant.retention_ms");
    ti.retention_ms = 0; /* the vault's default */
    assert_int_equal(sys_decode(&r, &err), 0);

    /* REVOKE / UNREVOKE: an identity URI or a 64-hex fingerprint. */
    memset(&r, 0, sizeof(r));
    {
        Coffer__V1__SystemRequest init = COFFER__V1__SYSTEM_REQUEST__INIT;
        r = init;
    }
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE;
    expect_sys_refused(&r, "deny: required");
    r.deny = &de;
    de.kind = (char *)"identity";
    de.value = (char *)"coffer://tenant/acme/role/agent";
    assert_int_equal(sys_decode(&r, &err), 0);
    de.value = (char *)"coffer://operator/alice";
    assert_int_equal(sys_decode(&r, &err), 0);
    de.value = (char *)"coffer://vault/eu-1";
    assert_int_equal(sys_decode(&r, &err), 0);
    de.value = (char *)"coffer://vault/";
    expect_sys_refused(&r, "not a coffer identity URI");
    de.value = (char *)"coffer://tenant/acme";
    expect_sys_refused(&r, "not a coffer identity URI");
    de.value = (char *)"https://example.org/";
    expect_sys_refused(&r, "not a coffer identity URI");
    de.kind = (char *)"fingerprint";
    for (int i = 0; i < 64; i++) {
        fp[i] = "0123456789abcdefABCDEF"[i % 22];
    }
    fp[64] = '\0';
    de.value = fp;
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE;
    assert_int_equal(sys_decode(&r, &err), 0);
    fp[10] = 'g';
    expect_sys_refused(&r, "64 hex digits");
    fp[10] = 'a';
    fp[63] = '\0';
    expect_sys_refused(&r, "64 hex digits");
    fp[63] = 'a';
    de.kind = (char *)"serial";
    expect_sys_refused(&r, "deny.kind");
    de.kind = (char *)"fingerprint";
    de.reason = (char *)"bad\nline";
    expect_sys_refused(&r, "deny.reason");
    de.reason = (char *)"";

    /* TOTP_SET: 20..64 byte secret; a tenant's admin must be named. */
    r.deny = NULL;
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET;
    r.totp_secret.data = secret;
    r.totp_secret.len = 19;
    expect_sys_refused(&r, "totp_secret: 20..64 bytes");
    r.totp_secret.len = 65;
    expect_sys_refused(&r, "totp_secret: 20..64 bytes");
    r.totp_secret.len = 20;
    assert_int_equal(sys_decode(&r, &err), 0); /* the operator's own */
    r.tenant_name = (char *)"acme";
    expect_sys_refused(&r, "principal");
    r.principal = (char *)"acme-admin";
    assert_int_equal(sys_decode(&r, &err), 0);
    r.tenant_name = (char *)"ACME";
    expect_sys_refused(&r, "tenant_name");
    r.tenant_name = (char *)"";
    r.principal = (char *)"";

    /* APPROVE and the approval_id of any op: 16 bytes. */
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE;
    r.totp_secret.len = 0;
    expect_sys_refused(&r, "approval_id: 16 bytes");
    r.approval_id.data = approval;
    r.approval_id.len = 17;
    expect_sys_refused(&r, "approval_id: 16 bytes");
    r.approval_id.len = 16;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.totp = (char *)"12345678901234567890";
    expect_sys_refused(&r, "totp: too long");
    r.totp = (char *)"";

    /* The listing ops need nothing; unknown ops are refused. */
    r.approval_id.len = 0;
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT;
    r.tenant_name = (char *)"globex";
    assert_int_equal(sys_decode(&r, &err), 0);
    /* Replication: a tenant or "" (all), nothing else. */
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.tenant_name = (char *)"";
    assert_int_equal(sys_decode(&r, &err), 0);
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC;
    assert_int_equal(sys_decode(&r, &err), 0);
    r.tenant_name = (char *)"../acme";
    expect_sys_refused(&r, "tenant_name: bad tenant name");
    r.tenant_name = (char *)"globex";
    r.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNSPECIFIED;
    expect_sys_refused(&r, "unknown system op");
    r.op = (Coffer__V1__SystemOp)42;
    expect_sys_refused(&r, "unknown system op");

    rc = vault_request_decode_system(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "SystemRequest: malformed protobuf");
}

/* Tenant names a peer may send: the same rule as a certificate's. */
static const char *const bad_tenants[] = {
    "",
    "Acme",
    "../acme",
    "acme/x",
    "_system",
    ".acme",
    "-acme",
    "acme corp",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};

static void
test_vault_request_sync_digest(void **state)
{
    (void)state;
    Coffer__V1__SyncDigestRequest m = COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
    Coffer__V1__SyncDigestRequest *out = NULL;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.tenant = (char *)"acme";
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_sync_digest(e.p, e.n, &out, &err), 0);
    assert_string_equal(out->tenant, "acme");
    vault_request_free_sync_digest(out);
    free(e.p);
    for (size_t i = 0; i < sizeof(bad_tenants) / sizeof(bad_tenants[0]); i++) {
        m.tenant = (char *)bad_tenants[i];
        e = pack(&m.base);
        rc = vault_request_decode_sync_digest(e.p, e.n, &out, &err);
        expect_refused(rc, out, &err, CFR_EINVAL,
                       "SyncDigestRequest: tenant: bad tenant name");
        free(e.p);
    }
    rc = vault_request_decode_sync_digest(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "SyncDigestRequest: malformed protobuf");
    /* Nothing at all is a request without a tenant. */
    rc = vault_request_decode_sync_digest(NULL, 0, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncDigestRequest: tenant: bad tenant name");
}

static void
test_vault_request_sync_list(void **state)
{
    (void)state;
    Coffer__V1__SyncListRequest m = COFFER__V1__SYNC_LIST_REQUEST__INIT;
    Coffer__V1__SyncListRequest *out = NULL;
    uint32_t buckets[257];
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    for (uint32_t i = 0; i < 257; i++) {
        buckets[i] = 255 - (i % 256);
    }
    m.tenant = (char *)"acme";
    m.buckets = buckets;
    /* All 256 buckets, in any order, are the most one request lists. */
    m.n_buckets = 256;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_sync_list(e.p, e.n, &out, &err), 0);
    assert_string_equal(out->tenant, "acme");
    assert_int_equal(out->n_buckets, 256);
    assert_int_equal(out->buckets[0], 255);
    assert_int_equal(out->buckets[255], 0);
    vault_request_free_sync_list(out);
    free(e.p);
    /* None is a valid (empty) question. */
    m.n_buckets = 0;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_sync_list(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_buckets, 0);
    vault_request_free_sync_list(out);
    free(e.p);

    m.n_buckets = 257;
    e = pack(&m.base);
    rc = vault_request_decode_sync_list(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncListRequest: more than 256 buckets");
    free(e.p);
    m.n_buckets = 2;
    buckets[1] = 256;
    e = pack(&m.base);
    rc = vault_request_decode_sync_list(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncListRequest: bucket 256 is not 0..255");
    free(e.p);
    buckets[1] = UINT32_MAX;
    e = pack(&m.base);
    rc = vault_request_decode_sync_list(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncListRequest: bucket 4294967295 is not 0..255");
    free(e.p);
    buckets[1] = 7;
    for (size_t i = 0; i < sizeof(bad_tenants) / sizeof(bad_tenants[0]); i++) {
        m.tenant = (char *)bad_tenants[i];
        e = pack(&m.base);
        rc = vault_request_decode_sync_list(e.p, e.n, &out, &err);
        expect_refused(rc, out, &err, CFR_EINVAL,
                       "SyncListRequest: tenant: bad tenant name");
        free(e.p);
    }
    rc = vault_request_decode_sync_list(garbage, sizeof(garbage), &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "SyncListRequest: malformed protobuf");
}

static void
test_vault_request_sync_get(void **state)
{
    (void)state;
    Coffer__V1__SyncGetRequest m = COFFER__V1__SYNC_GET_REQUEST__INIT;
    Coffer__V1__SyncGetRequest *out = NULL;
    ProtobufCBinaryData ids[2] = {{VAULT_ID_LEN, g_id[0]},
                                  {VAULT_ID_LEN, g_id[1]}};
    ProtobufCBinaryData *many;
    struct cfr_err err = {0};
    struct enc e;
    int rc;

    m.tenant = (char *)"acme.eu";
    m.n_ids = 2;
    m.ids = ids;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_sync_get(e.p, e.n, &out, &err), 0);
    assert_string_equal(out->tenant, "acme.eu");
    assert_int_equal(out->n_ids, 2);
    assert_memory_equal(out->ids[0].data, g_id[0], VAULT_ID_LEN);
    assert_memory_equal(out->ids[1].data, g_id[1], VAULT_ID_LEN);
    vault_request_free_sync_get(out);
    rc = vault_request_decode_sync_get(e.p, e.n - 1, &out, &err);
    expect_refused(rc, out, &err, CFR_ECORRUPT,
                   "SyncGetRequest: malformed protobuf");
    free(e.p);

    ids[1].len = VAULT_ID_LEN - 1;
    e = pack(&m.base);
    rc = vault_request_decode_sync_get(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL, "id: 31 bytes, want 32");
    free(e.p);
    ids[1].len = VAULT_ID_LEN;

    /* 4096 ids are the most; one more is refused before any is read. */
    many = calloc(VAULT_IDS_MAX + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= VAULT_IDS_MAX; i++) {
        many[i].len = VAULT_ID_LEN;
        many[i].data = g_id[i % 2];
    }
    m.ids = many;
    m.n_ids = VAULT_IDS_MAX;
    e = pack(&m.base);
    assert_int_equal(vault_request_decode_sync_get(e.p, e.n, &out, &err), 0);
    assert_int_equal(out->n_ids, VAULT_IDS_MAX);
    assert_memory_equal(out->ids[VAULT_IDS_MAX - 1].data, g_id[1],
                        VAULT_ID_LEN);
    vault_request_free_sync_get(out);
    free(e.p);
    m.n_ids = VAULT_IDS_MAX + 1;
    e = pack(&m.base);
    rc = vault_request_decode_sync_get(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncGetRequest: more than 4096 ids");
    free(e.p);
    free(many);

    /* The tenant is checked first: a bad one is refused whatever else. */
    m.ids = ids;
    m.n_ids = 2;
    m.tenant = (char *)"ACME";
    e = pack(&m.base);
    rc = vault_request_decode_sync_get(e.p, e.n, &out, &err);
    expect_refused(rc, out, &err, CFR_EINVAL,
                   "SyncGetRequest: tenant: bad tenant name");
    free(e.p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_request_missing),
        cmocka_unit_test(test_vault_request_open_lease),
        cmocka_unit_test(test_vault_request_put_objects),
        cmocka_unit_test(test_vault_request_put_objects_oversized),
        cmocka_unit_test(test_vault_request_get_objects),
        cmocka_unit_test(test_vault_request_commit),
        cmocka_unit_test(test_vault_request_list_snapshots),
        cmocka_unit_test(test_vault_request_admin),
        cmocka_unit_test(test_vault_request_audit_and_health),
        cmocka_unit_test(test_vault_request_system),
        cmocka_unit_test(test_vault_request_sync_digest),
        cmocka_unit_test(test_vault_request_sync_list),
        cmocka_unit_test(test_vault_request_sync_get),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
