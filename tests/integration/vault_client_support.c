/*
 * vault_client_support.c - sealed test objects and Vault RPC wrappers for
 * the vault integration tests (one copy for every vault_*_test.c).
 *
 * Invariants:
 *  1. Objects are built exactly as the agent builds them (chunk IDs from
 *     the keyring, envelopes sealed and verified by env.c, reference pages
 *     from snap.c), so the vault sees real traffic, not test-shaped bytes.
 *  2. No request names more than VC_IDS_MAX IDs: the vault refuses larger
 *     ones, and a test about GC or restore must not fail on that limit.
 *  3. No state here: several threads may drive their own clients and
 *     sessions through these functions at once.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>  /* EINTR */
#include <stdio.h>  /* snprintf */
#include <stdlib.h> /* qsort */
#include <string.h> /* memcmp, strstr */
#include <time.h>   /* clock_gettime, nanosleep */

#include "vault_client_support.h"

#include "buf.h" /* struct cfr_buf */
#include "env.h" /* cfr_env_seal */
#include "id.h"  /* cfr_id_plain for reference pages */
#include "mem.h" /* cfr_malloc */

#define RPC_TIMEOUT_MS 30000

int64_t
vc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
vc_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- objects ------------------------------------------------------------ */

void
vc_objset_add(struct vc_objset *s, const uint8_t id[VC_ID_LEN], int kind,
              const uint8_t *data, size_t len)
{
    if (s->n == s->alloc) {
        s->alloc = s->alloc ? 2 * s->alloc : 64;
        s->v = cfr_realloc(s->v, s->alloc * sizeof(*s->v));
        assert_non_null(s->v);
    }
    memcpy(s->v[s->n].id, id, VC_ID_LEN);
    s->v[s->n].kind = kind;
    s->v[s->n].data = cfr_malloc(len + 1);
    assert_non_null(s->v[s->n].data);
    if (len > 0) {
        memcpy(s->v[s->n].data, data, len);
    }
    s->v[s->n].len = len;
    s->n++;
}

void
vc_objset_add_all(struct vc_objset *dst, const struct vc_objset *src)
{
    for (size_t i = 0; i < src->n; i++) {
        vc_objset_add(dst, src->v[i].id, src->v[i].kind, src->v[i].data,
                      src->v[i].len);
    }
}

void
vc_objset_fini(struct vc_objset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        cfr_free(s->v[i].data);
    }
    cfr_free(s->v);
    memset(s, 0, sizeof(*s));
}

const struct vc_obj *
vc_objset_find(const struct vc_objset *s, const uint8_t id[VC_ID_LEN])
{
    for (size_t i = 0; i < s->n; i++) {
        if (memcmp(s->v[i].id, id, VC_ID_LEN) == 0) {
            return &s->v[i];
        }
    }
    return NULL;
}

void
vc_make_chunk_ex(const struct cfr_keyring *kr, struct cfr_session *ses,
                 struct vc_objset *s, uint64_t seed, size_t len, size_t block,
                 unsigned period)
{
    uint8_t *plain = cfr_malloc(len + 1);
    uint8_t id[VC_ID_LEN];
    struct cfr_buf env_buf;
    struct cfr_err err;
    uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;

    assert_non_null(plain);
    assert_true(block > 0 && period > 0);
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        plain[i] = (i / block) % period ? (uint8_t)x : (uint8_t)(seed & 0x7f);
    }
    cfr_keyring_chunk_id(kr, plain, len, id);
    cfr_buf_init(&env_buf, len + CFR_ENV_OVERHEAD + (1u << 20));
    assert_int_equal(
        cfr_env_seal(ses, CFR_ENV_CHUNK, id, plain, len, &env_buf, &err), 0);
    vc_objset_add(s, id, COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED,
                  env_buf.data, env_buf.len);
    cfr_buf_fini(&env_buf);
    cfr_free(plain);
}

void
vc_make_chunk(const struct cfr_keyring *kr, struct cfr_session *ses,
              struct vc_objset *s, uint64_t seed, size_t len)
{
    /* Half random, half runs: exercises compression both ways. */
    vc_make_chunk_ex(kr, ses, s, seed, len, 512, 2);
}

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(((const struct vc_obj *)a)->id,
                  ((const struct vc_obj *)b)->id, VC_ID_LEN);
}

/* Reference pages go into the objset given as ctx, each page once. */
static int
refs_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
         uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    (void)level;
    (void)err;
    struct vc_objset *pages = ctx;
    cfr_id_plain(page, len, id_r);
    if (vc_objset_find(pages, id_r) == NULL) {
        vc_objset_add(pages, id_r,
                      COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE, page, len);
    }
    return 0;
}

void
vc_make_snapshot(const struct cfr_keyring *kr, struct cfr_session *ses,
                 struct vc_snapshot *sn, const struct vc_objset *chunks,
                 const char *mailbox, uint64_t tag)
{
    struct cfr_snap_refs_writer *w = NULL;
    struct cfr_snap_header h;
    struct cfr_buf hb, eb;
    struct cfr_err err;
    struct vc_obj *sorted = cfr_calloc(chunks->n + 1, sizeof(*sorted));

    memset(sn, 0, sizeof(*sn));
    assert_non_null(sorted);
    if (chunks->n > 0) {
        memcpy(sorted, chunks->v, chunks->n * sizeof(*sorted));
    }
    qsort(sorted, chunks->n, sizeof(*sorted), cmp_id);
    assert_int_equal(
        cfr_snap_refs_writer_new(NULL, refs_put, &sn->pages, &w, &err), 0);
    for (size_t i = 0; i < chunks->n; i++) {
        if (i > 0 && memcmp(sorted[i].id, sorted[i - 1].id, VC_ID_LEN) == 0) {
            continue; /* a reference list names each chunk once */
        }
        assert_int_equal(cfr_snap_refs_writer_add(w, sorted[i].id, &err), 0);
    }
    assert_int_equal(cfr_snap_refs_writer_finish(w, &sn->root, &err), 0);
    cfr_snap_refs_writer_free(w);
    cfr_free(sorted);

    memset(&h, 0, sizeof(h));
    snprintf(h.mailbox, sizeof(h.mailbox), "%s", mailbox);
    snprintf(h.host, sizeof(h.host), "test-host");
    snprintf(h.agent_version, sizeof(h.agent_version), "vault-client-test");
    h.agent_time_ms = (int64_t)tag;
    h.refs = sn->root;
    h.manifest = sn->root;
    cfr_keyring_name_id(kr, mailbox, strlen(mailbox), sn->mailbox_id);
    cfr_buf_init(&hb, CFR_SNAP_HEADER_MAX);
    assert_int_equal(cfr_snap_header_encode(&h, &hb, &err), 0);
    cfr_id_plain(hb.data, hb.len, sn->header_id);
    cfr_buf_init(&eb, 1u << 20);
    assert_int_equal(cfr_env_seal(ses, CFR_ENV_SNAPSHOT_HEADER, sn->header_id,
                                  hb.data, hb.len, &eb, &err),
                     0);
    sn->header = cfr_buf_steal(&eb, &sn->header_len);
    cfr_buf_fini(&hb);
    cfr_buf_fini(&eb);
}

void
vc_snapshot_fini(struct vc_snapshot *sn)
{
    vc_objset_fini(&sn->pages);
    cfr_free(sn->header);
    sn->header = NULL;
}

/* ---- RPC wrappers ------------------------------------------------------- */

int
vc_open_lease(struct cfr_session *ses, struct cfr_rpc_client *cli,
              uint8_t lease[16], struct cfr_err *err)
{
    Coffer__V1__OpenLeaseRequest req = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
    Coffer__V1__OpenLeaseResponse *resp = NULL;
    struct cfr_err local;
    int st;
    req.session_public.data = (uint8_t *)cfr_session_public(ses);
    req.session_public.len = 32;
    st = vs_unary(cli, "OpenLease", &req.base,
                  &coffer__v1__open_lease_response__descriptor,
                  (ProtobufCMessage **)&resp, err != NULL ? err : &local);
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
        assert_int_equal(resp->lease_id.len, 16);
        memcpy(lease, resp->lease_id.data, 16);
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

/* One PutObjects message of s->v[i..i+n) packed into an owned buffer. */
static uint8_t *
pack_put(const uint8_t lease[16], const struct vc_objset *s, size_t i, size_t n,
         size_t *len_r)
{
    Coffer__V1__PutObjectsRequest req = COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
    Coffer__V1__Object *o = cfr_calloc(n + 1, sizeof(*o));
    Coffer__V1__Object **p = cfr_calloc(n + 1, sizeof(Coffer__V1__Object *));
    uint8_t *buf;

    assert_non_null(o);
    assert_non_null(p);
    for (size_t k = 0; k < n; k++) {
        Coffer__V1__Object init = COFFER__V1__OBJECT__INIT;
        o[k] = init;
        o[k].id.data = s->v[i + k].id;
        o[k].id.len = VC_ID_LEN;
        o[k].kind = s->v[i + k].kind;
        o[k].data.data = s->v[i + k].data;
        o[k].data.len = s->v[i + k].len;
        p[k] = &o[k];
    }
    req.lease_id.data = (uint8_t *)lease;
    req.lease_id.len = 16;
    req.n_objects = n;
    req.objects = p;
    *len_r = coffer__v1__put_objects_request__get_packed_size(&req);
    buf = cfr_malloc(*len_r + 1);
    assert_non_null(buf);
    coffer__v1__put_objects_request__pack(&req, buf);
    cfr_free(o);
    cfr_free(p);
    return buf;
}

int
vc_put_objects(struct cfr_rpc_client *cli, const uint8_t lease[16],
               const struct vc_objset *s, size_t from, size_t to,
               size_t per_msg, uint64_t *stored_r, struct cfr_err *err)
{
    struct cfr_rpc_call *call = NULL;
    struct cfr_err local;
    struct cfr_buf resp;
    int st = CFR_RPC_UNKNOWN;

    if (err == NULL) {
        err = &local;
    }
    cfr_err_clear(err);
    assert_true(per_msg > 0 && from <= to && to <= s->n);
    cfr_buf_init(&resp, 1u << 20);
    if (cfr_rpc_cstream_open(cli, "/coffer.v1.Vault/PutObjects", RPC_TIMEOUT_MS,
                             &call, err) != 0) {
        goto out;
    }
    for (size_t i = from; i < to; i += per_msg) {
        size_t n = to - i < per_msg ? to - i : per_msg, len;
        uint8_t *buf = pack_put(lease, s, i, n, &len);
        int rc = cfr_rpc_cstream_send(call, buf, len, err);
        cfr_free(buf);
        if (rc != 0) {
            break; /* the server answered already: finish reads why */
        }
    }
    (void)cfr_rpc_cstream_finish(call, &resp, &st, err);
    if (st == CFR_RPC_OK) {
        Coffer__V1__PutObjectsResponse *r =
            coffer__v1__put_objects_response__unpack(NULL, resp.len, resp.data);
        assert_non_null(r);
        /* An acknowledgement covers every object sent. */
        assert_int_equal(r->stored + r->already_present, to - from);
        if (stored_r != NULL) {
            *stored_r = r->stored;
        }
        coffer__v1__put_objects_response__free_unpacked(r, NULL);
    }
out:
    cfr_rpc_call_free(call);
    cfr_buf_fini(&resp);
    return st;
}

int
vc_commit(struct cfr_rpc_client *cli, const uint8_t lease[16],
          const struct vc_snapshot *sn, bool *already_r, struct cfr_err *err)
{
    Coffer__V1__CommitRequest req = COFFER__V1__COMMIT_REQUEST__INIT;
    Coffer__V1__TreeRoot root = COFFER__V1__TREE_ROOT__INIT;
    Coffer__V1__CommitResponse *resp = NULL;
    struct cfr_err local;
    int st;

    root.id.data = (uint8_t *)sn->root.id;
    root.id.len = VC_ID_LEN;
    root.height = sn->root.height;
    root.entries = sn->root.entries;
    req.lease_id.data = (uint8_t *)lease;
    req.lease_id.len = 16;
    req.mailbox_id.data = (uint8_t *)sn->mailbox_id;
    req.mailbox_id.len = VC_ID_LEN;
    req.header_id.data = (uint8_t *)sn->header_id;
    req.header_id.len = VC_ID_LEN;
    req.header.data = sn->header;
    req.header.len = sn->header_len;
    req.refs = &root;
    st = vs_unary(cli, "Commit", &req.base,
                  &coffer__v1__commit_response__descriptor,
                  (ProtobufCMessage **)&resp, err != NULL ? err : &local);
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
        assert_non_null(resp->snapshot);
        assert_int_equal(resp->snapshot->header_id.len, VC_ID_LEN);
        assert_memory_equal(resp->snapshot->header_id.data, sn->header_id,
                            VC_ID_LEN);
        if (already_r != NULL) {
            *already_r = resp->already_committed;
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

int
vc_missing(struct cfr_rpc_client *cli, const uint8_t *lease,
           const struct vc_objset *s, bool *is_missing, size_t *n_missing_r)
{
    ProtobufCBinaryData *ids = cfr_calloc(VC_IDS_MAX + 1, sizeof(*ids));
    int st = CFR_RPC_OK;
    size_t from = 0;

    assert_non_null(ids);
    *n_missing_r = 0;
    for (size_t i = 0; i < s->n; i++) {
        is_missing[i] = false;
    }
    /* do-while: an empty set still makes one (empty) call. */
    do {
        Coffer__V1__MissingRequest req = COFFER__V1__MISSING_REQUEST__INIT;
        Coffer__V1__MissingResponse *resp = NULL;
        size_t n = s->n - from < VC_IDS_MAX ? s->n - from : VC_IDS_MAX;
        struct cfr_err err;

        for (size_t i = 0; i < n; i++) {
            ids[i].data = s->v[from + i].id;
            ids[i].len = VC_ID_LEN;
        }
        req.n_ids = n;
        req.ids = ids;
        if (lease != NULL) {
            req.lease_id.data = (uint8_t *)lease;
            req.lease_id.len = 16;
        }
        st = vs_unary(cli, "Missing", &req.base,
                      &coffer__v1__missing_response__descriptor,
                      (ProtobufCMessage **)&resp, &err);
        if (st != CFR_RPC_OK) {
            if (resp != NULL) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
            }
            break;
        }
        assert_non_null(resp);
        for (size_t i = 0; i < resp->n_missing; i++) {
            assert_true(resp->missing[i] < n);
            if (i > 0) {
                assert_true(resp->missing[i] > resp->missing[i - 1]);
            }
            is_missing[from + resp->missing[i]] = true;
        }
        *n_missing_r += resp->n_missing;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        from += n;
    } while (from < s->n);
    cfr_free(ids);
    return st;
}

/* One GetObjects stream over ids[0..n). */
static int
get_slice(struct cfr_rpc_client *cli, ProtobufCBinaryData *ids, size_t n,
          struct vc_objset *got, size_t *n_missing_r, size_t *n_msgs_r)
{
    Coffer__V1__GetObjectsRequest req = COFFER__V1__GET_OBJECTS_REQUEST__INIT;
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf msg;
    struct cfr_err err;
    uint8_t *buf;
    size_t len;
    int st = CFR_RPC_UNKNOWN, rc;

    req.n_ids = n;
    req.ids = ids;
    len = coffer__v1__get_objects_request__get_packed_size(&req);
    buf = cfr_malloc(len + 1);
    assert_non_null(buf);
    coffer__v1__get_objects_request__pack(&req, buf);
    cfr_buf_init(&msg, (size_t)80 << 20);
    if (cfr_rpc_sstream_open(cli, "/coffer.v1.Vault/GetObjects", buf, len,
                             RPC_TIMEOUT_MS, &call, &err) != 0) {
        goto out;
    }
    while ((rc = cfr_rpc_sstream_next(call, &msg, &st, &err)) == 1) {
        Coffer__V1__GetObjectsResponse *r =
            coffer__v1__get_objects_response__unpack(NULL, msg.len, msg.data);
        assert_non_null(r);
        (*n_msgs_r)++;
        for (size_t i = 0; i < r->n_objects; i++) {
            assert_int_equal(r->objects[i]->id.len, VC_ID_LEN);
            vc_objset_add(got, r->objects[i]->id.data, r->objects[i]->kind,
                          r->objects[i]->data.data, r->objects[i]->data.len);
        }
        *n_missing_r += r->n_missing;
        coffer__v1__get_objects_response__free_unpacked(r, NULL);
    }
    if (rc == 0) {
        st = CFR_RPC_OK;
    }
out:
    cfr_rpc_call_free(call);
    cfr_buf_fini(&msg);
    cfr_free(buf);
    return st;
}

int
vc_get_objects(struct cfr_rpc_client *cli, const struct vc_objset *s,
               const uint8_t *extra, struct vc_objset *got, size_t *n_missing_r,
               size_t *n_msgs_r)
{
    size_t total = s->n + (extra != NULL ? 1 : 0), from = 0;
    ProtobufCBinaryData *ids = cfr_calloc(total + 1, sizeof(*ids));
    int st = CFR_RPC_OK;

    assert_non_null(ids);
    for (size_t i = 0; i < s->n; i++) {
        ids[i].data = s->v[i].id;
        ids[i].len = VC_ID_LEN;
    }
    if (extra != NULL) {
        ids[s->n].data = (uint8_t *)extra;
        ids[s->n].len = VC_ID_LEN;
    }
    *n_missing_r = 0;
    *n_msgs_r = 0;
    do {
        size_t n = total - from < VC_IDS_MAX ? total - from : VC_IDS_MAX;
        st = get_slice(cli, ids + from, n, got, n_missing_r, n_msgs_r);
        from += n;
    } while (st == CFR_RPC_OK && from < total);
    cfr_free(ids);
    return st;
}

size_t
vc_check_objects(struct cfr_rpc_client *agent, struct cfr_rpc_client *rest,
                 const struct vc_objset *s, bool must_all)
{
    bool *miss = cfr_calloc(s->n + 1, sizeof(bool));
    struct vc_objset want = {0}, got = {0};
    size_t n_missing = 0, n_msgs = 0, present;

    assert_non_null(miss);
    assert_int_equal(vc_missing(agent, NULL, s, miss, &n_missing), CFR_RPC_OK);
    for (size_t i = 0; i < s->n; i++) {
        if (must_all) {
            assert_false(miss[i]);
        }
        if (!miss[i]) {
            const struct vc_obj *o = &s->v[i];
            vc_objset_add(&want, o->id, o->kind, o->data, o->len);
        }
    }
    if (want.n > 0) {
        assert_int_equal(
            vc_get_objects(rest, &want, NULL, &got, &n_missing, &n_msgs),
            CFR_RPC_OK);
        /* "Present" must mean readable, not a torn leftover. */
        assert_int_equal(n_missing, 0);
        assert_int_equal(got.n, want.n);
        for (size_t i = 0; i < want.n; i++) {
            const struct vc_obj *g = vc_objset_find(&got, want.v[i].id);
            assert_non_null(g);
            assert_int_equal(g->kind, want.v[i].kind);
            assert_int_equal(g->len, want.v[i].len);
            assert_memory_equal(g->data, want.v[i].data, g->len);
        }
    }
    present = want.n;
    vc_objset_fini(&want);
    vc_objset_fini(&got);
    cfr_free(miss);
    return present;
}

Coffer__V1__ListSnapshotsResponse *
vc_list_snapshots(struct cfr_rpc_client *cli, bool with_headers, int *st_r)
{
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    Coffer__V1__ListSnapshotsResponse *resp = NULL;
    struct cfr_err err;
    req.with_headers = with_headers;
    *st_r = vs_unary(cli, "ListSnapshots", &req.base,
                     &coffer__v1__list_snapshots_response__descriptor,
                     (ProtobufCMessage **)&resp, &err);
    if (*st_r == CFR_RPC_OK) {
        assert_non_null(resp);
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        resp = NULL;
    }
    return resp;
}

int
vc_admin_ex(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op,
            const uint8_t *id, int64_t retention_ms, const uint8_t *approval,
            const char *totp, Coffer__V1__AdminResponse **resp_r, char *msg,
            size_t msg_size)
{
    Coffer__V1__AdminRequest req = COFFER__V1__ADMIN_REQUEST__INIT;
    Coffer__V1__AdminResponse *resp = NULL;
    struct cfr_err err;
    int st;
    req.op = op;
    req.reason = (char *)"integration test";
    if (id != NULL && op == COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX) {
        req.mailbox_id.data = (uint8_t *)id;
        req.mailbox_id.len = VC_ID_LEN;
    } else if (id != NULL) {
        req.header_id.data = (uint8_t *)id;
        req.header_id.len = VC_ID_LEN;
    }
    if (approval != NULL) {
        req.approval_id.data = (uint8_t *)approval;
        req.approval_id.len = 16;
    }
    if (totp != NULL) {
        req.totp = (char *)totp;
    }
    req.retention_ms = retention_ms;
    st = vs_unary(cli, "Admin", &req.base,
                  &coffer__v1__admin_response__descriptor,
                  (ProtobufCMessage **)&resp, &err);
    if (msg != NULL) {
        snprintf(msg, msg_size, "%s", err.msg);
    }
    if (resp_r != NULL) {
        *resp_r = resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

int
vc_admin(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op, const uint8_t *id,
         int64_t retention_ms, Coffer__V1__AdminResponse **resp_r, char *msg,
         size_t msg_size)
{
    return vc_admin_ex(cli, op, id, retention_ms, NULL, NULL, resp_r, msg,
                       msg_size);
}

void
vc_expect_pending(struct cfr_rpc_client *cli, Coffer__V1__AdminOp op,
                  const uint8_t *id, int64_t retention_ms, uint8_t approval[16])
{
    Coffer__V1__AdminResponse *ar = NULL;
    assert_int_equal(vc_admin(cli, op, id, retention_ms, &ar, NULL, 0),
                     CFR_RPC_OK);
    assert_non_null(ar);
    assert_true(ar->pending);
    assert_int_equal(ar->approval_id.len, 16);
    assert_int_equal(ar->snapshots_removed, 0);
    if (approval != NULL) {
        memcpy(approval, ar->approval_id.data, 16);
    }
    protobuf_c_message_free_unpacked(&ar->base, NULL);
}

int
vc_health(struct cfr_rpc_client *cli, Coffer__V1__HealthResponse **resp_r)
{
    Coffer__V1__HealthRequest req = COFFER__V1__HEALTH_REQUEST__INIT;
    Coffer__V1__HealthResponse *resp = NULL;
    struct cfr_err err;
    int st = vs_unary(cli, "Health", &req.base,
                      &coffer__v1__health_response__descriptor,
                      (ProtobufCMessage **)&resp, &err);
    if (resp_r != NULL) {
        *resp_r = resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

bool
vc_log_has(const struct vs_vault *v, const char *needle)
{
    char *buf = cfr_malloc(1u << 20);
    bool found;
    assert_non_null(buf);
    vs_vault_log(v, buf, 1u << 20);
    found = strstr(buf, needle) != NULL;
    cfr_free(buf);
    return found;
}
