/*
 * server.c - RPC handlers of the vault service, its maintenance schedule
 * and its statistics file.
 *
 * Invariants:
 *  1. A handler opens only the tenant named by the caller's certificate
 *     (peer->tenant), so a request naming another tenant's IDs can only
 *     ever see "absent": Missing reports them missing, GetObjects lists
 *     them as missing, Commit refuses them as it refuses any absent object.
 *     The one exception are the Sync handlers, called by peer vaults
 *     (which have no tenant): they open the tenant the request names,
 *     never creating it, and only after sync_check (invariant 12).
 *  2. Authorization happens before any handler runs (authz_hook), and the
 *     audit callback records every call that reached the server, allowed
 *     or not, with all caller-supplied strings escaped.
 *  3. Everything decoded from a request is bounded before use: ID lengths
 *     are exact, counts are at most VAULT_IDS_MAX, each PutObjects message
 *     is stored as one synced batch (store.h) and acknowledged only after
 *     the whole stream's batches were synced.
 *  4. A storage write error (CFR_EIO) marks the server failed; main() then
 *     stops the vault. It is never retried (kv.h explains why).
 *  5. Destructive admin operations (purge, release, shortening retention)
 *     run only after second_factor() said yes: a TOTP code verified now,
 *     or an approval by a second admin consumed now, exactly once, for
 *     exactly these arguments (sysdb.h). Arguments are checked first.
 *  6. The maintenance thread holds no lock while it calls the store, so
 *     stopping waits at most for one store call.
 *  7. The audit callback never blocks: it queues to the system database
 *     and the notifier, and takes only the rate limiter's short lock.
 *  8. Every call passes the registry gate (h_gated) before its handler:
 *     a tenant identity acts only for a registered tenant, and reaches
 *     data only where the tenant's regions include this vault. So no
 *     tenant database is ever created for an unregistered tenant.
 *  9. The deny list is consulted on every call by identity URI and by
 *     certificate fingerprint (authz_hook), never cached.
 * 10. Operators (role operator) reach System and Health only (authz.c);
 *     System never opens a tenant database except to read usage.
 * 11. A System op's audit record names the op, its target and outcome;
 *     a TOTP secret or code never enters a log line or record.
 * 12. A peer vault (role vault) reaches Health and the read-only Sync
 *     methods only (authz.c); a Sync call is served only to a vault this
 *     one lists in peers, for a registered tenant whose regions allow both
 *     vaults. Replication never writes here on a peer's behalf: the sync
 *     engine (vault/sync.c) pulls, and its lifetime is the server's.
 *
 * Second-factor states of one destructive request (sysdb.h keeps them):
 *
 *   request (no factor) --second_factor--> PENDING (answer pending=true)
 *   PENDING --APPROVE by another admin--> APPROVED
 *   APPROVED --same request + approval_id--> CONSUMED, operation runs
 *   request + valid totp --second_factor--> operation runs
 */
#include "server.h"

#include <errno.h>     /* errno */
#include <stdarg.h>    /* va_list for sys_fail */
#include <inttypes.h>  /* PRIu64 */
#include <pthread.h>   /* maintenance thread */
#include <stdatomic.h> /* statistics counters */
#include <stdio.h>     /* snprintf, FILE for the stats file */
#include <string.h>    /* memcpy, memset, strlen */
#include <time.h>      /* clock_gettime for timed waits */

#include "authz.h"             /* role matrix */
#include "cfg.h"               /* PEM files of the sync identity */
#include "buf.h"               /* response buffers */
#include "coffer_vault.pb-c.h" /* wire messages */
#include "log.h"               /* structured log lines */
#include "mem.h"               /* cfr_malloc and friends */
#include "ratelimit.h"         /* lockout after repeated denials */
#include "request.h"           /* request decoding and bounds */
#include "rpc.h"               /* transport */
#include "sync.h"              /* replication engine */
#include "sysdb.h"             /* audit, deny list, approvals, tenants */

#define SNAP_LIST_MAX ((size_t)1 << 20)

enum outcome { OUT_OK = 0, OUT_ERROR, OUT_DENIED, OUT_COUNT };

struct vault_server {
    const struct vault_config *cfg;
    struct vault_store *store;
    struct vault_sysdb *sysdb;
    struct cfr_notify *notify;
    struct cfr_clock *clock;
    struct cfr_rpc_server *rpc;
    struct cfr_ratelimit *rl;
    int port;
    bool started;
    bool stopped;
    atomic_bool failed;

    pthread_t maint;
    bool maint_running;
    pthread_mutex_t mu; /* guards stop_req; pairs with cv */
    pthread_cond_t cv;
    bool stop_req;

    int64_t start_ms;
    atomic_uint_fast64_t calls[VAULT_M_COUNT][OUT_COUNT];
    atomic_uint_fast64_t unknown_method;
    atomic_uint_fast64_t overloaded;
    atomic_uint_fast64_t unauthenticated;
    atomic_uint_fast64_t put_objects, put_bytes, get_objects, get_bytes;
    atomic_uint_fast64_t commits, maint_runs, maint_errors;
    atomic_uint_fast64_t snaps_removed, objs_removed, bytes_removed;
    atomic_uint_fast64_t corrupt_reads;
    atomic_uint_fast64_t sync_served_objects, sync_served_bytes;
    atomic_uint_fast64_t scrub_runs, scrub_bad_objects;
    struct vault_sync *sync; /* replication engine; NULL without peers */
    bool sync_running;
    struct seen_cache *seen; /* agent certificates already recorded */
};

struct seen_cache;
struct status_list;

static void count_denial(struct vault_server *srv,
                         const struct cfr_rpc_peer *peer);

/*
 * Sends a security notification: to the configured defaults and, when
 * tenant_targets, to the tenant's own targets from the registry (which
 * costs a database read, so the audit callback never asks for it).
 * Queued, never waiting for delivery; a failure to queue is logged.
 */
static void
notify_event(struct vault_server *srv, const char *event, const char *tenant,
             bool tenant_targets, const struct cfr_notify_field *fields,
             size_t n_fields)
{
    struct cfr_notify_event ev;
    struct vault_sysdb_tenant *rec = NULL;
    const char *mail[VAULT_SYSDB_NOTIFY_MAX];
    struct cfr_err err;

    if (srv->notify == NULL) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.event = event;
    ev.tenant = tenant;
    ev.fields = fields;
    ev.n_fields = n_fields;
    if (tenant_targets && tenant != NULL &&
        (rec = cfr_calloc(1, sizeof(*rec))) != NULL &&
        vault_sysdb_tenant_get(srv->sysdb, tenant, rec, &err) == 0) {
        size_t nm = 0;
        for (size_t i = 0; i < rec->n_notify; i++) {
            if (strncmp(rec->notify[i], "mailto:", 7) == 0) {
                mail[nm++] = rec->notify[i] + 7;
            } else if (ev.webhook_url == NULL) {
                ev.webhook_url = rec->notify[i];
            }
        }
        ev.mail_to = nm > 0 ? mail : NULL;
        ev.n_mail_to = nm;
    }
    cfr_err_clear(&err);
    if (cfr_notify_post(srv->notify, &ev, &err) != 0 &&
        cfr_notify_has_defaults(srv->notify)) {
        cfr_log(CFR_LOG_WARN, "vault.notify", "event=%s code=%s", event,
                cfr_code_name(err.code));
    }
    cfr_free(rec);
}

/* One call being served: what every handler needs. */
struct call {
    struct vault_server *srv;
    struct cfr_rpc_ctx *ctx;
    const struct cfr_rpc_peer *peer;
    enum vault_role role;
    struct cfr_err err;
    const char *ok_detail; /* audit detail of an OK answer (Admin: the op) */
};

/* ---- helpers ------------------------------------------------------------ */

static void
call_init(struct call *c, struct cfr_rpc_ctx *ctx, void *arg)
{
    memset(c, 0, sizeof(*c));
    c->srv = arg;
    c->ctx = ctx;
    c->peer = cfr_rpc_ctx_peer(ctx);
    c->role = vault_authz_peer_role(c->peer->tenant, c->peer->role);
}

static int
status_for(int code)
{
    switch (code) {
    case 0:
        return CFR_RPC_OK;
    case CFR_EINVAL:
    case CFR_ECORRUPT:
    case CFR_EVERSION:
        return CFR_RPC_INVALID_ARGUMENT;
    case CFR_ENOTFOUND:
        return CFR_RPC_NOT_FOUND;
    case CFR_EEXIST:
        return CFR_RPC_ALREADY_EXISTS;
    case CFR_ELIMIT:
    case CFR_ENOMEM:
        return CFR_RPC_RESOURCE_EXHAUSTED;
    case CFR_EDENIED:
        return CFR_RPC_PERMISSION_DENIED;
    case CFR_EIO:
    case CFR_EUNAVAIL:
        return CFR_RPC_UNAVAILABLE;
    default:
        return CFR_RPC_INTERNAL;
    }
}

/*
 * Ends the call with the error in c->err. A storage I/O error fails the
 * whole vault (invariant 4), and the caller only learns a category: the
 * detail goes to the log.
 */
static void
finish_err(struct call *c, int status)
{
    const char *msg = c->err.msg;
    if (c->err.code == CFR_EIO) {
        atomic_store(&c->srv->failed, true);
        cfr_log_err(CFR_LOG_ERROR, "vault.fatal", &c->err);
        status = CFR_RPC_UNAVAILABLE;
        msg = "storage failure; the vault is stopping";
    } else if (c->err.code == CFR_EINTERNAL || c->err.code == CFR_ENOMEM) {
        cfr_log_err(CFR_LOG_ERROR, "vault.call", &c->err);
    }
    if (status == CFR_RPC_OK) {
        status = CFR_RPC_INTERNAL;
    }
    cfr_rpc_ctx_finish(c->ctx, status, msg, NULL, 0, NULL);
}

static void
finish_code(struct call *c)
{
    finish_err(c, status_for(c->err.code));
}

static void
finish_status(struct call *c, int status, const char *msg)
{
    cfr_rpc_ctx_finish(c->ctx, status, msg, NULL, 0, NULL);
}

/* Packs m and ends the call with OK. */
static void
finish_msg(struct call *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = cfr_malloc(n > 0 ? n : 1);
    if (p == NULL) {
        finish_status(c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    protobuf_c_message_pack(m, p);
    cfr_rpc_ctx_finish(c->ctx, CFR_RPC_OK, c->ok_detail, p, n, NULL);
    cfr_free(p);
}

static int
send_msg(struct call *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    int rc;
    uint8_t *p = cfr_malloc(n > 0 ? n : 1);
    if (p == NULL) {
        return CFR_ERR(&c->err, CFR_ENOMEM, "out of memory");
    }
    protobuf_c_message_pack(m, p);
    rc = cfr_rpc_ctx_send(c->ctx, p, n, &c->err);
    cfr_free(p);
    return rc;
}

/*
 * The caller's tenant. When it does not exist and create is false,
 * returns CFR_ENOTFOUND; handlers then answer as for an empty tenant.
 */
static int
tenant_of(struct call *c, bool create, struct vault_tenant **t_r)
{
    *t_r = vault_store_tenant(c->srv->store, c->peer->tenant, create, &c->err);
    return *t_r != NULL ? 0 : (c->err.code != 0 ? c->err.code : CFR_EINTERNAL);
}

static const char *
hex_id(const uint8_t *id, char out[2 * VAULT_ID_LEN + 1])
{
    return cfr_hex_encode(id, VAULT_ID_LEN, out);
}

/* ---- Missing ------------------------------------------------------------ */

static void
h_missing(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len, n_missing = 0;
    const uint8_t *req_p;
    Coffer__V1__MissingRequest *req = NULL;
    Coffer__V1__MissingResponse resp = COFFER__V1__MISSING_RESPONSE__INIT;
    uint8_t(*ids)[VAULT_ID_LEN] = NULL;
    uint32_t *missing = NULL;
    struct vault_tenant *t = NULL;
    const uint8_t *lease = NULL;
    int rc;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_missing(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    if (req->lease_id.len != 0) {
        lease = req->lease_id.data;
    }
    ids = cfr_calloc(req->n_ids + 1, VAULT_ID_LEN);
    missing = cfr_calloc(req->n_ids + 1, sizeof(*missing));
    if (ids == NULL || missing == NULL) {
        finish_status(&c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < req->n_ids; i++) {
        memcpy(ids[i], req->ids[i].data, VAULT_ID_LEN);
    }
    rc = tenant_of(&c, false, &t);
    if (rc == 0) {
        rc = vault_store_missing(t, lease, (const void *)ids, req->n_ids,
                                 missing, &n_missing, &c.err);
    } else if (rc == CFR_ENOTFOUND && lease == NULL) {
        /* A tenant with no data lacks everything. */
        for (size_t i = 0; i < req->n_ids; i++) {
            missing[i] = (uint32_t)i;
        }
        n_missing = req->n_ids;
        rc = 0;
    }
    if (rc != 0) {
        /* An unknown or expired lease is the client's state, not a 404. */
        finish_err(&c, rc == CFR_ENOTFOUND ? CFR_RPC_FAILED_PRECONDITION
                                           : status_for(rc));
        goto out;
    }
    resp.n_missing = n_missing;
    resp.missing = missing;
    finish_msg(&c, &resp.base);
out:
    cfr_free(ids);
    cfr_free(missing);
    vault_request_free_missing(req);
}

/* ---- OpenLease ---------------------------------------------------------- */

static void
h_open_lease(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__OpenLeaseRequest *req = NULL;
    Coffer__V1__OpenLeaseResponse resp = COFFER__V1__OPEN_LEASE_RESPONSE__INIT;
    struct vault_tenant *t = NULL;
    uint8_t lease[VAULT_LEASE_LEN];
    int64_t ttl, expires = 0;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_open_lease(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    ttl = c.srv->cfg->lease_ttl_ms;
    if (req->ttl_ms != 0 && req->ttl_ms < (uint64_t)ttl) {
        ttl = (int64_t)req->ttl_ms;
    }
    /* The agent's first lease creates its tenant's database. */
    if (tenant_of(&c, true, &t) != 0 ||
        vault_lease_open(t, req->session_public.data, req->session_public.len,
                         ttl, lease, &expires, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    resp.lease_id.data = lease;
    resp.lease_id.len = sizeof(lease);
    resp.expires_ms = expires;
    finish_msg(&c, &resp.base);
out:
    vault_request_free_open_lease(req);
}

/* ---- PutObjects --------------------------------------------------------- */

/* Stores one stream message as one synced batch (invariant 3). */
static int
put_one(struct call *c, struct vault_tenant *t,
        const Coffer__V1__PutObjectsRequest *req, struct vault_put_stats *sum)
{
    struct vault_object *objs = NULL;
    struct vault_put_stats st = {0};
    int rc = 0;

    if (req->n_objects == 0) {
        goto out;
    }
    objs = cfr_calloc(req->n_objects, sizeof(*objs));
    if (objs == NULL) {
        rc = CFR_ERR(&c->err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < req->n_objects; i++) {
        const Coffer__V1__Object *o = req->objects[i];
        objs[i].id = o->id.data;
        objs[i].kind = o->kind == COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED
                           ? VAULT_OBJ_SEALED
                           : VAULT_OBJ_REF_PAGE;
        objs[i].data = o->data.data;
        objs[i].len = o->data.len;
    }
    if ((rc = vault_store_put(t, req->lease_id.data, objs, req->n_objects, &st,
                              &c->err)) != 0) {
        goto out;
    }
    sum->stored += st.stored;
    sum->already_present += st.already_present;
    sum->bytes += st.bytes;
    atomic_fetch_add(&c->srv->put_objects, st.stored);
    atomic_fetch_add(&c->srv->put_bytes, st.bytes);
out:
    cfr_free(objs);
    return rc;
}

static void
h_put_objects(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    struct vault_tenant *t = NULL;
    struct vault_put_stats sum = {0};
    Coffer__V1__PutObjectsResponse resp =
        COFFER__V1__PUT_OBJECTS_RESPONSE__INIT;
    int rc;

    call_init(&c, ctx, arg);
    if ((rc = tenant_of(&c, false, &t)) != 0) {
        /* No tenant yet means no lease could have been opened. */
        finish_err(&c, rc == CFR_ENOTFOUND ? CFR_RPC_FAILED_PRECONDITION
                                           : status_for(rc));
        goto out;
    }
    for (;;) {
        const uint8_t *msg;
        size_t len;
        Coffer__V1__PutObjectsRequest *req;
        rc = cfr_rpc_ctx_recv(ctx, &msg, &len, &c.err);
        if (rc == 0) {
            break;
        }
        if (rc < 0) {
            finish_status(&c, CFR_RPC_CANCELLED, "stream ended early");
            goto out;
        }
        if (vault_request_decode_put_objects(msg, len, &req, &c.err) != 0) {
            finish_code(&c);
            goto out;
        }
        rc = put_one(&c, t, req, &sum);
        vault_request_free_put_objects(req);
        if (rc != 0) {
            finish_err(&c, rc == CFR_ENOTFOUND ? CFR_RPC_FAILED_PRECONDITION
                                               : status_for(rc));
            goto out;
        }
    }
    resp.stored = sum.stored;
    resp.already_present = sum.already_present;
    resp.bytes = sum.bytes;
    finish_msg(&c, &resp.base);
out:
    return;
}

/* ---- GetObjects and SyncGet --------------------------------------------- */

/*
 * One batching loop serves both reads of stored objects: GetObjects (an
 * agent or restore reading its own tenant) and SyncGet (a peer vault
 * pulling a tenant). They differ only in the message types, the checksum a
 * SyncObject carries, the counters, and where a batch is cut.
 */
struct get_batch {
    bool sync;                     /* SyncGet: SyncObjects with checksums */
    Coffer__V1__Object *objs;      /* GetObjects */
    Coffer__V1__SyncObject *sobjs; /* SyncGet */
    void **ptrs;
    uint8_t **data;
    uint8_t (*sums)[VAULT_ID_LEN]; /* SyncGet */
    ProtobufCBinaryData *missing;
    size_t n_objs, n_missing, bytes;
};

static void
batch_clear(struct get_batch *b)
{
    for (size_t i = 0; i < b->n_objs; i++) {
        cfr_free_null(&b->data[i]);
    }
    b->n_objs = 0;
    b->n_missing = 0;
    b->bytes = 0;
}

static int
batch_send(struct call *c, struct get_batch *b)
{
    int rc;
    if (b->sync) {
        Coffer__V1__SyncGetResponse resp = COFFER__V1__SYNC_GET_RESPONSE__INIT;
        resp.n_objects = b->n_objs;
        resp.objects = (Coffer__V1__SyncObject **)b->ptrs;
        resp.n_missing = b->n_missing;
        resp.missing = b->missing;
        rc = send_msg(c, &resp.base);
        atomic_fetch_add(&c->srv->sync_served_objects, b->n_objs);
        atomic_fetch_add(&c->srv->sync_served_bytes, b->bytes);
    } else {
        Coffer__V1__GetObjectsResponse resp =
            COFFER__V1__GET_OBJECTS_RESPONSE__INIT;
        resp.n_objects = b->n_objs;
        resp.objects = (Coffer__V1__Object **)b->ptrs;
        resp.n_missing = b->n_missing;
        resp.missing = b->missing;
        rc = send_msg(c, &resp.base);
        atomic_fetch_add(&c->srv->get_objects, b->n_objs);
        atomic_fetch_add(&c->srv->get_bytes, b->bytes);
    }
    batch_clear(b);
    return rc;
}

/* Takes the object in obj (and its checksum) into the batch. */
static void
batch_add(struct get_batch *b, ProtobufCBinaryData id, struct cfr_buf *obj,
          enum vault_object_kind kind, const uint8_t sum[VAULT_ID_LEN])
{
    Coffer__V1__ObjectKind pkind =
        kind == VAULT_OBJ_SEALED
            ? COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED
            : COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE;
    size_t k = b->n_objs++;
    size_t len;
    b->data[k] = cfr_buf_steal(obj, &len);
    cfr_buf_init(obj, VAULT_OBJECT_MAX);
    if (b->sync) {
        Coffer__V1__SyncObject init = COFFER__V1__SYNC_OBJECT__INIT;
        memcpy(b->sums[k], sum, VAULT_ID_LEN);
        b->sobjs[k] = init;
        b->sobjs[k].id = id;
        b->sobjs[k].kind = pkind;
        b->sobjs[k].data.data = b->data[k];
        b->sobjs[k].data.len = len;
        b->sobjs[k].checksum.data = b->sums[k];
        b->sobjs[k].checksum.len = VAULT_ID_LEN;
        b->ptrs[k] = &b->sobjs[k];
    } else {
        Coffer__V1__Object init = COFFER__V1__OBJECT__INIT;
        b->objs[k] = init;
        b->objs[k].id = id;
        b->objs[k].kind = pkind;
        b->objs[k].data.data = b->data[k];
        b->objs[k].data.len = len;
        b->ptrs[k] = &b->objs[k];
    }
    b->bytes += len;
}

/*
 * Streams the objects ids[0..n) of tenant t (NULL: none held) as batches;
 * those not held or failing their check go in the missing lists. Returns 0
 * when all were sent and the caller is to finish the call; otherwise the
 * call is already finished.
 */
static int
serve_objects(struct call *c, struct vault_tenant *t, const char *tenant,
              ProtobufCBinaryData *ids, size_t n, bool sync)
{
    struct get_batch b;
    struct cfr_buf obj;
    bool sent = false;
    int rc, ret = -1;

    memset(&b, 0, sizeof(b));
    b.sync = sync;
    cfr_buf_init(&obj, VAULT_OBJECT_MAX);
    if (sync) {
        b.sobjs = cfr_calloc(n + 1, sizeof(*b.sobjs));
        b.sums = cfr_calloc(n + 1, VAULT_ID_LEN);
    } else {
        b.objs = cfr_calloc(n + 1, sizeof(*b.objs));
    }
    b.ptrs = cfr_calloc(n + 1, sizeof(void *));
    b.data = cfr_calloc(n + 1, sizeof(*b.data));
    b.missing = cfr_calloc(n + 1, sizeof(*b.missing));
    if ((sync ? b.sobjs == NULL || b.sums == NULL : b.objs == NULL) ||
        b.ptrs == NULL || b.data == NULL || b.missing == NULL) {
        finish_status(c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        enum vault_object_kind kind = VAULT_OBJ_SEALED;
        const uint8_t *id = ids[i].data;
        uint8_t sum[VAULT_ID_LEN];
        if (cfr_rpc_ctx_cancelled(c->ctx)) {
            finish_status(c, CFR_RPC_CANCELLED, "call cancelled");
            goto out;
        }
        if (t == NULL) {
            rc = CFR_ENOTFOUND;
        } else if (sync) {
            rc = vault_store_get_checked(t, id, &obj, &kind, sum, &c->err);
        } else {
            rc = vault_store_get(t, id, &obj, &kind, &c->err);
        }
        if (rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT) {
            /*
             * A damaged copy is never passed on: it is listed as missing so
             * the reader fetches it elsewhere, and the store has queued this
             * one for repair.
             */
            if (rc == CFR_ECORRUPT) {
                char hex[2 * VAULT_ID_LEN + 1];
                atomic_fetch_add(&c->srv->corrupt_reads, 1);
                cfr_log(CFR_LOG_ERROR, "vault.corrupt", "tenant=%s id=%s",
                        tenant, hex_id(id, hex));
            }
            cfr_err_clear(&c->err);
            b.missing[b.n_missing++] = ids[i];
            continue;
        }
        if (rc != 0) {
            finish_code(c);
            goto out;
        }
        /*
         * Batches of a few MiB keep memory flat and the reader fed. A peer's
         * batch is cut before an object would push it past the size (a
         * message holds one object beyond it at most); an agent's after.
         */
        if (sync && b.n_objs > 0 &&
            b.bytes + obj.len > c->srv->cfg->get_batch_bytes) {
            if (batch_send(c, &b) != 0) {
                finish_status(c, CFR_RPC_CANCELLED, "stream ended early");
                goto out;
            }
            sent = true;
        }
        batch_add(&b, ids[i], &obj, kind, sum);
        if (!sync && b.bytes >= c->srv->cfg->get_batch_bytes) {
            if (batch_send(c, &b) != 0) {
                finish_status(c, CFR_RPC_CANCELLED, "stream ended early");
                goto out;
            }
            sent = true;
        }
    }
    if (b.n_objs > 0 || b.n_missing > 0 || !sent) {
        if (batch_send(c, &b) != 0) {
            finish_status(c, CFR_RPC_CANCELLED, "stream ended early");
            goto out;
        }
    }
    ret = 0;
out:
    if (b.data != NULL) {
        batch_clear(&b);
    }
    cfr_free(b.objs);
    cfr_free(b.sobjs);
    cfr_free(b.ptrs);
    cfr_free(b.data);
    cfr_free(b.sums);
    cfr_free(b.missing);
    cfr_buf_fini(&obj);
    return ret;
}

static void
h_get_objects(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__GetObjectsRequest *req = NULL;
    struct vault_tenant *t = NULL;
    int rc;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_get_objects(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    rc = tenant_of(&c, false, &t);
    if (rc != 0 && rc != CFR_ENOTFOUND) {
        finish_code(&c);
        goto out;
    }
    if (serve_objects(&c, t, c.peer->tenant, req->ids, req->n_ids, false) ==
        0) {
        finish_status(&c, CFR_RPC_OK, NULL);
    }
out:
    vault_request_free_get_objects(req);
}

/* ---- Commit and ListSnapshots ------------------------------------------- */

static void
record_fill(Coffer__V1__SnapshotRecord *r, Coffer__V1__TreeRoot *root,
            const struct vault_snapshot *s)
{
    Coffer__V1__SnapshotRecord rinit = COFFER__V1__SNAPSHOT_RECORD__INIT;
    Coffer__V1__TreeRoot tinit = COFFER__V1__TREE_ROOT__INIT;
    *r = rinit;
    *root = tinit;
    root->id.data = (uint8_t *)s->refs.id;
    root->id.len = VAULT_ID_LEN;
    root->height = s->refs.height;
    root->entries = s->refs.entries;
    r->header_id.data = (uint8_t *)s->header_id;
    r->header_id.len = VAULT_ID_LEN;
    r->mailbox_id.data = (uint8_t *)s->mailbox_id;
    r->mailbox_id.len = VAULT_ID_LEN;
    r->received_ms = s->received_ms;
    r->refs = root;
    r->flags = s->flags;
    r->held = s->held;
}

static void
h_commit(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__CommitRequest *req = NULL;
    Coffer__V1__CommitResponse resp = COFFER__V1__COMMIT_RESPONSE__INIT;
    Coffer__V1__SnapshotRecord rec;
    Coffer__V1__TreeRoot root;
    struct vault_tenant *t = NULL;
    struct vault_commit cm;
    struct vault_snapshot snap;
    bool already = false;
    int rc;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_commit(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    memset(&cm, 0, sizeof(cm));
    cm.lease_id = req->lease_id.data;
    cm.mailbox_id = req->mailbox_id.data;
    cm.header_id = req->header_id.data;
    cm.header = req->header.data;
    cm.header_len = req->header.len;
    memcpy(cm.refs.id, req->refs->id.data, VAULT_ID_LEN);
    cm.refs.height = req->refs->height;
    cm.refs.entries = req->refs->entries;
    cm.flags = req->flags;
    cm.hold_previous = req->hold_previous;
    if ((rc = tenant_of(&c, false, &t)) != 0 ||
        (rc = vault_store_commit(t, &cm, &snap, &already, &c.err)) != 0) {
        /*
         * Missing objects (another tenant's included) and unknown leases
         * are both the client's state to fix.
         */
        finish_err(&c, rc == CFR_ENOTFOUND ? CFR_RPC_FAILED_PRECONDITION
                                           : status_for(rc));
        goto out;
    }
    atomic_fetch_add(&c.srv->commits, already ? 0 : 1);
    record_fill(&rec, &root, &snap);
    resp.snapshot = &rec;
    resp.already_committed = already;
    finish_msg(&c, &resp.base);
out:
    vault_request_free_commit(req);
}

struct snap_list {
    struct vault_snapshot *snaps;
    uint8_t **headers;
    size_t *header_lens;
    size_t n, alloc, bytes;
    struct cfr_err *err;
};

static int
snap_collect(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
             size_t header_len)
{
    struct snap_list *l = ctx;
    if (l->n == l->alloc) {
        size_t na = l->alloc ? 2 * l->alloc : 64, sz;
        void *p;
        if (na > SNAP_LIST_MAX || !cfr_mul_ok(na, sizeof(*l->snaps), &sz)) {
            return CFR_ERR(l->err, CFR_ELIMIT, "too many snapshots to list");
        }
        if ((p = cfr_realloc(l->snaps, sz)) == NULL) {
            return CFR_ERR(l->err, CFR_ENOMEM, "out of memory");
        }
        l->snaps = p;
        if ((p = cfr_realloc(l->headers, na * sizeof(*l->headers))) == NULL) {
            return CFR_ERR(l->err, CFR_ENOMEM, "out of memory");
        }
        l->headers = p;
        if ((p = cfr_realloc(l->header_lens, na * sizeof(size_t))) == NULL) {
            return CFR_ERR(l->err, CFR_ENOMEM, "out of memory");
        }
        l->header_lens = p;
        l->alloc = na;
    }
    l->snaps[l->n] = *s;
    l->headers[l->n] = NULL;
    l->header_lens[l->n] = 0;
    if (header != NULL && header_len > 0) {
        l->headers[l->n] = cfr_malloc(header_len);
        if (l->headers[l->n] == NULL) {
            return CFR_ERR(l->err, CFR_ENOMEM, "out of memory");
        }
        memcpy(l->headers[l->n], header, header_len);
        l->header_lens[l->n] = header_len;
    }
    l->n++;
    return 0;
}

static void
h_list_snapshots(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__ListSnapshotsRequest *req = NULL;
    Coffer__V1__ListSnapshotsResponse resp =
        COFFER__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
    Coffer__V1__SnapshotRecord *recs = NULL, **ptrs = NULL;
    Coffer__V1__TreeRoot *roots = NULL;
    struct vault_tenant *t = NULL;
    struct snap_list l;
    int rc;

    memset(&l, 0, sizeof(l));
    call_init(&c, ctx, arg);
    l.err = &c.err;
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_list_snapshots(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    rc = tenant_of(&c, false, &t);
    if (rc != 0 && rc != CFR_ENOTFOUND) {
        finish_code(&c);
        goto out;
    }
    if (t != NULL &&
        vault_store_snapshots(
            t, req->mailbox_id.len != 0 ? req->mailbox_id.data : NULL,
            req->with_headers, snap_collect, &l, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    recs = cfr_calloc(l.n + 1, sizeof(*recs));
    ptrs = cfr_calloc(l.n + 1, sizeof(void *));
    roots = cfr_calloc(l.n + 1, sizeof(*roots));
    if (recs == NULL || ptrs == NULL || roots == NULL) {
        finish_status(&c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        record_fill(&recs[i], &roots[i], &l.snaps[i]);
        if (l.headers[i] != NULL) {
            recs[i].header.data = l.headers[i];
            recs[i].header.len = l.header_lens[i];
        }
        ptrs[i] = &recs[i];
    }
    resp.n_snapshots = l.n;
    resp.snapshots = ptrs;
    finish_msg(&c, &resp.base);
out:
    for (size_t i = 0; i < l.n; i++) {
        cfr_free(l.headers[i]);
    }
    cfr_free(l.snaps);
    cfr_free(l.headers);
    cfr_free(l.header_lens);
    cfr_free(recs);
    cfr_free(ptrs);
    cfr_free(roots);
    vault_request_free_list_snapshots(req);
}

/* ---- Admin -------------------------------------------------------------- */

static void
count_maint(struct vault_server *srv, const struct vault_maint_stats *ms)
{
    atomic_fetch_add(&srv->snaps_removed, ms->snapshots_removed);
    atomic_fetch_add(&srv->objs_removed, ms->objects_removed);
    atomic_fetch_add(&srv->bytes_removed, ms->bytes_removed);
}

struct scrub_ctx {
    struct vault_server *srv;
    const char *tenant;
};

/*
 * A bad object found by a scrub (Admin SCRUB or the scheduled one): logged
 * and queued for repair from a peer (vault/sync.h), when there are peers.
 */
static void
scrub_bad(void *ctx, const uint8_t id[VAULT_ID_LEN], const struct cfr_err *why)
{
    const struct scrub_ctx *sx = ctx;
    char hex[2 * VAULT_ID_LEN + 1];
    char q[CFR_ERR_MSG_MAX + 8];
    cfr_log(CFR_LOG_ERROR, "vault.scrub.bad", "tenant=%s id=%s why=%s",
            sx->tenant, hex_id(id, hex), cfr_log_quote(why->msg, q, sizeof(q)));
    atomic_fetch_add(&sx->srv->scrub_bad_objects, 1);
    if (sx->srv->sync != NULL) {
        vault_sync_report_bad(sx->srv->sync, sx->tenant, id);
    }
}

/* The tenant's retention window: its registry entry, else the default. */
static int64_t
tenant_retention(struct vault_server *srv, const char *name)
{
    struct vault_sysdb_tenant *rec = cfr_calloc(1, sizeof(*rec));
    struct cfr_err err;
    int64_t ms = srv->cfg->retention_ms;
    if (rec != NULL &&
        vault_sysdb_tenant_get(srv->sysdb, name, rec, &err) == 0 &&
        rec->retention_ms > 0) {
        ms = rec->retention_ms;
    }
    cfr_free(rec);
    return ms;
}

/*
 * Stores a new retention window for the caller's tenant in the registry
 * (registered: the call passed the registry gate).
 */
static int
set_retention(struct call *c, int64_t ms)
{
    struct vault_sysdb_tenant *rec = cfr_calloc(1, sizeof(*rec));
    int rc;
    if (rec == NULL) {
        return CFR_ERR(&c->err, CFR_ENOMEM, "out of memory");
    }
    rc = vault_sysdb_tenant_get(c->srv->sysdb, c->peer->tenant, rec, &c->err);
    if (rc == 0) {
        rec->retention_ms = ms;
        rc = vault_sysdb_tenant_update(c->srv->sysdb, rec, NULL, &c->err);
    }
    cfr_free(rec);
    return rc;
}

/*
 * The second factor of a destructive operation (invariant 5), for a
 * tenant admin (scope = the tenant) or an operator (scope
 * VAULT_SYSDB_SYSTEM_SCOPE). Answers nothing itself:
 *   totp set:        verified now (a wrong code counts as a denial);
 *   approval_id set: consumed now, once, if a second admin (operator)
 *                    approved it for exactly this op and args;
 *   neither:         a pending request is recorded, its ID in fo->id.
 * On FACTOR_REFUSED fo->status is the answer; its message is c->err's
 * when fo->use_err (finish_err then also sees a storage failure), else
 * fo->msg.
 */
enum factor { FACTOR_RUN, FACTOR_PENDING, FACTOR_REFUSED };

struct factor_out {
    int status;
    bool use_err;
    const char *msg;
    uint8_t id[VAULT_SYSDB_APPROVAL_ID_LEN];
};

static enum factor
factor_check(struct call *c, const char *scope, const char *totp,
             const ProtobufCBinaryData *approval, const char *op,
             const char *args, struct factor_out *fo)
{
    struct vault_server *srv = c->srv;
    char hex[VAULT_SYSDB_APPROVAL_HEX], q[CFR_RPC_NAME_MAX + 8];
    bool system = strcmp(scope, VAULT_SYSDB_SYSTEM_SCOPE) == 0;
    int rc;

    memset(fo, 0, sizeof(*fo));
    fo->use_err = true;
    if (totp != NULL && totp[0] != '\0') {
        rc = vault_sysdb_totp_verify(srv->sysdb, scope, c->peer->uri,
                                     c->peer->cn, totp, &c->err);
        if (rc == 0) {
            cfr_log(CFR_LOG_WARN, "vault.second_factor",
                    "tenant=%s principal=%s op=%s method=totp", scope,
                    cfr_log_quote(c->peer->cn, q, sizeof(q)), op);
            return FACTOR_RUN;
        }
        count_denial(srv, c->peer);
        fo->status = CFR_RPC_PERMISSION_DENIED;
        fo->use_err = false;
        fo->msg = "second factor rejected";
        return FACTOR_REFUSED;
    }
    if (approval->len != 0) {
        if (approval->len != VAULT_SYSDB_APPROVAL_ID_LEN) {
            fo->status = CFR_RPC_INVALID_ARGUMENT;
            fo->use_err = false;
            fo->msg = "approval_id: 16 bytes expected";
            return FACTOR_REFUSED;
        }
        cfr_hex_encode(approval->data, VAULT_SYSDB_APPROVAL_ID_LEN, hex);
        rc = vault_sysdb_approval_consume(srv->sysdb, scope, hex, op, args,
                                          &c->err);
        if (rc == 0) {
            cfr_log(CFR_LOG_WARN, "vault.second_factor",
                    "tenant=%s principal=%s op=%s method=approval id=%s", scope,
                    cfr_log_quote(c->peer->cn, q, sizeof(q)), op, hex);
            return FACTOR_RUN;
        }
        fo->status = rc == CFR_ENOTFOUND || rc == CFR_EDENIED
                         ? CFR_RPC_FAILED_PRECONDITION
                         : status_for(rc);
        return FACTOR_REFUSED;
    }
    rc = vault_sysdb_approval_request(srv->sysdb, scope, c->peer->uri,
                                      c->peer->cn, op, args, hex, &c->err);
    if (rc != 0 || cfr_hex_decode(hex, fo->id, sizeof(fo->id)) != 0) {
        if (rc == 0) {
            CFR_ERR(&c->err, CFR_EINTERNAL, "approval id %s is not hex", hex);
        }
        fo->status = status_for(c->err.code);
        return FACTOR_REFUSED;
    }
    cfr_log(CFR_LOG_WARN, "vault.approval.requested",
            "tenant=%s principal=%s op=%s args=%s id=%s", scope,
            cfr_log_quote(c->peer->cn, q, sizeof(q)), op, args, hex);
    {
        struct cfr_notify_field f[] = {{"principal", c->peer->cn},
                                       {"op", op},
                                       {"args", args},
                                       {"approval_id", hex}};
        notify_event(srv, "vault.approval.requested", system ? NULL : scope,
                     !system, f, sizeof(f) / sizeof(f[0]));
    }
    return FACTOR_PENDING;
}

/*
 * The Admin form of factor_check: returns true when op with args may run
 * now; otherwise the call has been answered, with a pending approval (a
 * new request) or a refusal.
 */
static bool
second_factor(struct call *c, const Coffer__V1__AdminRequest *req,
              const char *op, const char *args)
{
    struct factor_out fo;
    switch (factor_check(c, c->peer->tenant, req->totp, &req->approval_id, op,
                         args, &fo)) {
    case FACTOR_RUN:
        return true;
    case FACTOR_PENDING: {
        Coffer__V1__AdminResponse resp = COFFER__V1__ADMIN_RESPONSE__INIT;
        resp.pending = true;
        resp.approval_id.data = fo.id;
        resp.approval_id.len = sizeof(fo.id);
        finish_msg(c, &resp.base);
        return false;
    }
    default:
        if (fo.use_err) {
            finish_err(c, fo.status);
        } else {
            finish_status(c, fo.status, fo.msg);
        }
        return false;
    }
}

static void
h_admin(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__AdminRequest *req = NULL;
    Coffer__V1__AdminResponse resp = COFFER__V1__ADMIN_RESPONSE__INIT;
    struct vault_tenant *t = NULL;
    struct vault_maint_stats ms = {0};
    char reason[160], who[CFR_RPC_NAME_MAX + 8], cn[CFR_RPC_NAME_MAX + 8];
    char args[128], hex[2 * VAULT_ID_LEN + 1], audit_op[128];
    int rc = 0;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_admin(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    cfr_log(CFR_LOG_WARN, "vault.admin",
            "tenant=%s identity=%s principal=%s op=%d reason=%s",
            c.peer->tenant, cfr_log_quote(c.peer->uri, who, sizeof(who)),
            cfr_log_quote(c.peer->cn, cn, sizeof(cn)), (int)req->op,
            cfr_log_quote(req->reason, reason, sizeof(reason)));
    /* The tenant's audit log names the operation and its target. */
    {
        static const char *const names[] = {
            "unspecified", "apply_retention", "set_retention",
            "hold",        "release",         "purge_mailbox",
            "gc",          "scrub",           "approve"};
        const ProtobufCBinaryData *id = req->header_id.len == VAULT_ID_LEN
                                            ? &req->header_id
                                            : &req->mailbox_id;
        snprintf(audit_op, sizeof(audit_op), "op=%s%s%s",
                 (size_t)req->op < sizeof(names) / sizeof(names[0])
                     ? names[req->op]
                     : "?",
                 id->len != VAULT_ID_LEN ? ""
                 : id == &req->header_id ? " header="
                                         : " mailbox=",
                 id->len == VAULT_ID_LEN ? hex_id(id->data, hex) : "");
        c.ok_detail = audit_op;
    }
    /*
     * Arguments were checked by the decoder, before any second factor is
     * spent on them.
     */
    switch (req->op) {
    case COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE: {
        char id[VAULT_SYSDB_APPROVAL_HEX];
        cfr_hex_encode(req->approval_id.data, VAULT_SYSDB_APPROVAL_ID_LEN, id);
        rc = vault_sysdb_approval_approve(c.srv->sysdb, c.peer->tenant, id,
                                          c.peer->uri, c.peer->cn, &c.err);
        if (rc != 0) {
            finish_err(&c, rc == CFR_EDENIED ? CFR_RPC_PERMISSION_DENIED
                                             : status_for(rc));
            goto out;
        }
        cfr_log(CFR_LOG_WARN, "vault.approval.approved",
                "tenant=%s principal=%s id=%s", c.peer->tenant,
                cfr_log_quote(c.peer->cn, who, sizeof(who)), id);
    }
        finish_msg(&c, &resp.base);
        goto out;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION:
        snprintf(args, sizeof(args), "retention_ms=%lld",
                 (long long)req->retention_ms);
        /* Only shortening can lose data, so only it needs a second factor. */
        if (req->retention_ms < tenant_retention(c.srv, c.peer->tenant) &&
            !second_factor(&c, req, "retention", args)) {
            goto out;
        }
        if (set_retention(&c, req->retention_ms) != 0) {
            finish_code(&c);
            goto out;
        }
        cfr_log(CFR_LOG_WARN, "vault.retention.changed", "tenant=%s %s",
                c.peer->tenant, args);
        {
            struct cfr_notify_field f[] = {{"principal", c.peer->cn},
                                           {"change", args}};
            notify_event(c.srv, "vault.retention.changed", c.peer->tenant, true,
                         f, 2);
        }
        finish_msg(&c, &resp.base);
        goto out;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE:
    case COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD:
        snprintf(args, sizeof(args), "header=%s",
                 hex_id(req->header_id.data, hex));
        if (req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE &&
            !second_factor(&c, req, "release", args)) {
            goto out;
        }
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX:
        snprintf(args, sizeof(args), "mailbox=%s",
                 hex_id(req->mailbox_id.data, hex));
        if (!second_factor(&c, req, "purge", args)) {
            goto out;
        }
        break;
    default: /* APPLY_RETENTION, GC, SCRUB (the decoder refused the rest) */
        break;
    }
    if (tenant_of(&c, false, &t) != 0) {
        /* Registered (the gate let us in) but nothing stored yet: the
         * maintenance operations have nothing to do, which is success. */
        if (c.err.code == CFR_ENOTFOUND &&
            (req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION ||
             req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_GC ||
             req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_SCRUB)) {
            finish_msg(&c, &resp.base);
        } else {
            finish_code(&c);
        }
        goto out;
    }
    switch (req->op) {
    case COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION:
        rc = vault_store_retention(t, tenant_retention(c.srv, c.peer->tenant),
                                   &ms, &c.err);
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD:
    case COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE:
        rc = vault_store_hold(t, req->header_id.data,
                              req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD,
                              &c.err);
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX:
        rc = vault_store_purge_mailbox(t, req->mailbox_id.data, &ms, &c.err);
        break;
    case COFFER__V1__ADMIN_OP__ADMIN_OP_GC:
        rc = vault_store_gc(t, &ms, &c.err);
        break;
    default: /* SCRUB, the only one left after the first switch */
    {
        struct scrub_ctx sx = {c.srv, c.peer->tenant};
        rc = vault_store_scrub(t, scrub_bad, &sx, &ms, &c.err);
    } break;
    }
    if (rc != 0) {
        finish_code(&c);
        goto out;
    }
    count_maint(c.srv, &ms);
    if (req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX ||
        req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD ||
        req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE) {
        const char *ev = req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX
                             ? "vault.purge"
                         : req->op == COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD
                             ? "vault.hold"
                             : "vault.release";
        char removed[32];
        snprintf(removed, sizeof(removed), "%" PRIu64, ms.snapshots_removed);
        struct cfr_notify_field f[] = {{"principal", c.peer->cn},
                                       {"target", args},
                                       {"snapshots_removed", removed}};
        cfr_log(CFR_LOG_WARN, ev, "tenant=%s %s snapshots_removed=%s",
                c.peer->tenant, args, removed);
        notify_event(c.srv, ev, c.peer->tenant, true, f, 3);
    }
    resp.snapshots_removed = ms.snapshots_removed;
    resp.objects_removed = ms.objects_removed;
    resp.bytes_removed = ms.bytes_removed;
    resp.bad_objects = ms.bad_objects;
    finish_msg(&c, &resp.base);
out:
    vault_request_free_admin(req);
}

/* ---- Audit and Health --------------------------------------------------- */

#define AUDIT_LIMIT_DEFAULT 1000
#define AUDIT_LIMIT_MAX     10000

struct audit_list {
    char prefix[CFR_RPC_TENANT_MAX + 32]; /* the tenant's identity URIs */
    char tenant[CFR_RPC_TENANT_MAX];
    bool vault_wide; /* System AUDIT: every record, or tenant's if set */
    size_t n, limit;
    Coffer__V1__AuditEntry *entries;
    Coffer__V1__AuditEntry **ptrs;
    char (*strs)[6][VAULT_SYSDB_TEXT_MAX];
};

static int
audit_collect(void *ctx, const struct vault_sysdb_audit *rec)
{
    struct audit_list *l = ctx;
    Coffer__V1__AuditEntry init = COFFER__V1__AUDIT_ENTRY__INIT;
    Coffer__V1__AuditEntry *e;
    char(*s)[VAULT_SYSDB_TEXT_MAX];

    /*
     * Only records of the caller's own tenant. Records written before
     * records carried a tenant have "": their identity URI tells (URIs are
     * stored verbatim, they hold no byte that quoting changes).
     */
    if (l->vault_wide) {
        if (l->tenant[0] != '\0' && strcmp(rec->tenant, l->tenant) != 0) {
            return 0;
        }
    } else if (rec->tenant[0] != '\0' ? strcmp(rec->tenant, l->tenant) != 0
                                      : strncmp(rec->identity, l->prefix,
                                                strlen(l->prefix)) != 0) {
        return 0;
    }
    if (l->n >= l->limit) {
        return 1;
    }
    e = &l->entries[l->n];
    s = l->strs[l->n];
    *e = init;
    e->time_ms = rec->time_ms;
    snprintf(s[0], VAULT_SYSDB_TEXT_MAX, "%s", rec->identity);
    snprintf(s[1], VAULT_SYSDB_TEXT_MAX, "%s", rec->peer);
    snprintf(s[2], VAULT_SYSDB_TEXT_MAX, "%s", rec->method);
    snprintf(s[3], VAULT_SYSDB_TEXT_MAX, "%s",
             cfr_rpc_status_name(rec->status));
    snprintf(s[4], VAULT_SYSDB_TEXT_MAX, "%s", rec->detail);
    snprintf(s[5], VAULT_SYSDB_TEXT_MAX, "%s", rec->tenant);
    e->tenant = s[5];
    e->identity = s[0];
    e->peer = s[1];
    e->method = s[2];
    e->decision =
        (char *)(rec->decision == VAULT_AUDIT_ALLOW ? "allowed" : "denied");
    e->status = s[3];
    e->detail = s[4];
    l->ptrs[l->n] = e;
    l->n++;
    return 0;
}

static void
h_audit(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__AuditRequest *req = NULL;
    Coffer__V1__AuditResponse resp = COFFER__V1__AUDIT_RESPONSE__INIT;
    struct audit_list l;

    memset(&l, 0, sizeof(l));
    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_audit(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    l.limit = req->limit == 0                ? AUDIT_LIMIT_DEFAULT
              : req->limit > AUDIT_LIMIT_MAX ? AUDIT_LIMIT_MAX
                                             : req->limit;
    snprintf(l.prefix, sizeof(l.prefix), "coffer://tenant/%s/", c.peer->tenant);
    snprintf(l.tenant, sizeof(l.tenant), "%s", c.peer->tenant);
    l.entries = cfr_calloc(l.limit, sizeof(*l.entries));
    l.ptrs = cfr_calloc(l.limit, sizeof(void *));
    l.strs = cfr_calloc(l.limit, sizeof(*l.strs));
    if (l.entries == NULL || l.ptrs == NULL || l.strs == NULL) {
        finish_status(&c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* Records queued by the calls just before this one are included. */
    if (vault_sysdb_audit_sync(c.srv->sysdb, &c.err) != 0 ||
        vault_sysdb_audit_query(c.srv->sysdb, req->since_ms, INT64_MAX, 0,
                                audit_collect, &l, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    resp.n_entries = l.n;
    resp.entries = l.ptrs;
    finish_msg(&c, &resp.base);
out:
    cfr_free(l.entries);
    cfr_free(l.ptrs);
    cfr_free(l.strs);
    vault_request_free_audit(req);
}

static void
h_health(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__HealthRequest *req = NULL;
    Coffer__V1__HealthResponse resp = COFFER__V1__HEALTH_RESPONSE__INIT;
    struct vault_tenant *t = NULL;
    struct vault_tenant_stats ts;

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_health(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    resp.version = (char *)VAULT_VERSION;
    resp.region = (char *)c.srv->cfg->region;
    resp.time_ms = cfr_clock_now_ms(c.srv->clock);
    /* Stats are a tenant's: a peer vault (no tenant) sees none here. */
    if (vault_authz_sees_stats(c.role) && c.peer->tenant[0] != '\0' &&
        tenant_of(&c, false, &t) == 0 &&
        vault_store_stats(t, &ts, &c.err) == 0) {
        resp.objects = ts.objects;
        resp.snapshots = ts.snapshots;
        resp.bytes = ts.object_bytes;
    }
    finish_msg(&c, &resp.base);
out:
    vault_request_free_health(req);
}

/* ---- Sync* (peer vaults) ------------------------------------------------ */

/*
 * The serving checks of a replication call (docs/REPLICATION.md): the
 * caller is a peer listed here by its coffer://vault/<name> (else
 * PERMISSION_DENIED, counted towards the lockout like any denial); the
 * tenant it names is registered here (else NOT_FOUND); the tenant's
 * allowed regions, when it has any, include both this vault's region and
 * the caller's configured one (else FAILED_PRECONDITION). Then *t_r is the
 * tenant's database, or NULL when it has none yet: a peer never causes
 * one to be created, and an empty tenant answers empty.
 * Returns true to go on; otherwise the call has been answered.
 */
static bool
sync_check(struct call *c, const char *tenant, struct vault_tenant **t_r)
{
    struct vault_server *srv = c->srv;
    const struct vault_config *cfg = srv->cfg;
    const struct vault_sync_peer *peer = NULL;
    struct vault_sysdb_tenant *rec = NULL;
    const char *name = "";
    char q[CFR_RPC_NAME_MAX + 8], msg[CFR_ERR_MSG_MAX];
    bool ok = false;
    int rc;

    *t_r = NULL;
    /*
     * The request decoder checked the name. From here on, refusals
     * included, the call is audited as the tenant's: a peer reading (or
     * trying to read) T's data belongs in T's audit view.
     */
    (void)cfr_rpc_ctx_set_audit_tenant(c->ctx, tenant);
    if (strncmp(c->peer->uri, CFR_RPC_VAULT_URI,
                sizeof(CFR_RPC_VAULT_URI) - 1) == 0) {
        name = c->peer->uri + sizeof(CFR_RPC_VAULT_URI) - 1;
    }
    for (size_t i = 0; i < cfg->n_peers && peer == NULL; i++) {
        if (name[0] != '\0' && strcmp(cfg->peers[i].name, name) == 0) {
            peer = &cfg->peers[i];
        }
    }
    if (peer == NULL) {
        cfr_log(CFR_LOG_WARN, "vault.sync.denied",
                "identity=%s tenant=%s why=not_a_peer",
                cfr_log_quote(c->peer->uri, q, sizeof(q)), tenant);
        count_denial(srv, c->peer);
        finish_status(c, CFR_RPC_PERMISSION_DENIED,
                      "this vault does not list the caller as a peer");
        goto out;
    }
    if ((rec = cfr_malloc(sizeof(*rec))) == NULL) {
        finish_status(c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = vault_sysdb_tenant_get(srv->sysdb, tenant, rec, &c->err);
    if (rc == CFR_ENOTFOUND || rc == CFR_EINVAL) {
        snprintf(msg, sizeof(msg), "tenant %s is not registered here", tenant);
        finish_status(c, CFR_RPC_NOT_FOUND, msg);
        goto out;
    }
    if (rc != 0) {
        finish_code(c); /* fail closed: an unreadable registry serves none */
        goto out;
    }
    if (rec->n_regions > 0) {
        bool here = false, there = false;
        for (size_t i = 0; i < rec->n_regions; i++) {
            here = here || strcmp(rec->regions[i], cfg->region) == 0;
            there = there || strcmp(rec->regions[i], peer->region) == 0;
        }
        if (!here || !there) {
            snprintf(msg, sizeof(msg), "tenant %s is not allowed in region %s",
                     tenant, !here ? cfg->region : peer->region);
            cfr_log(CFR_LOG_WARN, "vault.sync.refused",
                    "peer=%s tenant=%s region=%s why=placement", peer->name,
                    tenant, !here ? cfg->region : peer->region);
            finish_status(c, CFR_RPC_FAILED_PRECONDITION, msg);
            goto out;
        }
    }
    *t_r = vault_store_tenant(srv->store, tenant, false, &c->err);
    if (*t_r == NULL && c->err.code != CFR_ENOTFOUND) {
        finish_code(c);
        goto out;
    }
    cfr_err_clear(&c->err);
    ok = true;
out:
    cfr_free(rec);
    return ok;
}

static void
h_sync_digest(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__SyncDigestRequest *req = NULL;
    Coffer__V1__SyncDigestResponse resp =
        COFFER__V1__SYNC_DIGEST_RESPONSE__INIT;
    struct vault_tenant *t = NULL;
    uint8_t(*buckets)[VAULT_ID_LEN] = NULL;
    ProtobufCBinaryData *bins = NULL;
    uint64_t snaps = 0, tombs = 0;
    char detail[CFR_RPC_TENANT_MAX + 16];

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_sync_digest(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    if (!sync_check(&c, req->tenant, &t)) {
        goto out;
    }
    buckets = cfr_calloc(VAULT_SYNC_BUCKETS, VAULT_ID_LEN);
    bins = cfr_calloc(VAULT_SYNC_BUCKETS, sizeof(*bins));
    if (buckets == NULL || bins == NULL) {
        finish_status(&c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* No database yet: every bucket empty, which is 32 zero bytes. */
    if (t != NULL &&
        vault_store_digest(t, buckets, &snaps, &tombs, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    for (size_t i = 0; i < VAULT_SYNC_BUCKETS; i++) {
        bins[i].data = buckets[i];
        bins[i].len = VAULT_ID_LEN;
    }
    resp.n_buckets = VAULT_SYNC_BUCKETS;
    resp.buckets = bins;
    resp.snapshots = snaps;
    resp.tombstones = tombs;
    resp.time_ms = cfr_clock_now_ms(c.srv->clock);
    resp.region = (char *)c.srv->cfg->region;
    snprintf(detail, sizeof(detail), "tenant=%s", req->tenant);
    c.ok_detail = detail;
    finish_msg(&c, &resp.base);
out:
    cfr_free(buckets);
    cfr_free(bins);
    vault_request_free_sync_digest(req);
}

/* One SyncList message being filled: records with headers, tombstones. */
struct sync_batch {
    struct call *c;
    Coffer__V1__SnapshotRecord *recs, **rec_ptrs;
    Coffer__V1__TreeRoot *roots;
    struct vault_snapshot *snaps;
    uint8_t **headers;
    Coffer__V1__Tombstone *tombs, **tomb_ptrs;
    uint8_t (*tomb_ids)[VAULT_ID_LEN];
    size_t n_recs, n_tombs, cap, bytes;
    bool sent;
};

/*
 * A message carries at most SYNC_LIST_BATCH entries or about
 * get_batch_bytes (a sealed header is at most VAULT_HEADER_MAX), so the
 * peer's max_msg is never reached.
 */
#define SYNC_LIST_BATCH      1024
#define SYNC_RECORD_OVERHEAD 160 /* IDs, times, root: bytes on the wire */

static void
sync_batch_clear(struct sync_batch *b)
{
    for (size_t i = 0; i < b->n_recs; i++) {
        cfr_free_null(&b->headers[i]);
    }
    b->n_recs = 0;
    b->n_tombs = 0;
    b->bytes = 0;
}

static int
sync_batch_send(struct sync_batch *b)
{
    Coffer__V1__SyncListResponse resp = COFFER__V1__SYNC_LIST_RESPONSE__INIT;
    int rc;
    if (cfr_rpc_ctx_cancelled(b->c->ctx)) {
        return CFR_ERR(&b->c->err, CFR_EUNAVAIL, "call cancelled");
    }
    resp.n_snapshots = b->n_recs;
    resp.snapshots = b->rec_ptrs;
    resp.n_tombstones = b->n_tombs;
    resp.tombstones = b->tomb_ptrs;
    rc = send_msg(b->c, &resp.base);
    sync_batch_clear(b);
    b->sent = true;
    return rc;
}

static int
sync_batch_full(struct sync_batch *b)
{
    if (b->n_recs + b->n_tombs >= b->cap ||
        b->bytes >= b->c->srv->cfg->get_batch_bytes) {
        return sync_batch_send(b);
    }
    return 0;
}

static int
sync_list_snap(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
               size_t header_len)
{
    struct sync_batch *b = ctx;
    size_t k;
    int rc;
    if ((rc = sync_batch_full(b)) != 0) {
        return rc;
    }
    k = b->n_recs;
    b->snaps[k] = *s;
    record_fill(&b->recs[k], &b->roots[k], &b->snaps[k]);
    b->recs[k].hold_changed_ms = s->hold_changed_ms;
    if (header != NULL && header_len > 0) {
        if ((b->headers[k] = cfr_malloc(header_len)) == NULL) {
            return CFR_ERR(&b->c->err, CFR_ENOMEM, "out of memory");
        }
        memcpy(b->headers[k], header, header_len);
        b->recs[k].header.data = b->headers[k];
        b->recs[k].header.len = header_len;
    }
    b->rec_ptrs[k] = &b->recs[k];
    b->n_recs++;
    b->bytes += header_len + SYNC_RECORD_OVERHEAD;
    return 0;
}

static int
sync_list_tomb(void *ctx, const uint8_t header_id[VAULT_ID_LEN],
               int64_t dropped_ms)
{
    struct sync_batch *b = ctx;
    Coffer__V1__Tombstone init = COFFER__V1__TOMBSTONE__INIT;
    size_t k;
    int rc;
    if ((rc = sync_batch_full(b)) != 0) {
        return rc;
    }
    k = b->n_tombs;
    memcpy(b->tomb_ids[k], header_id, VAULT_ID_LEN);
    b->tombs[k] = init;
    b->tombs[k].header_id.data = b->tomb_ids[k];
    b->tombs[k].header_id.len = VAULT_ID_LEN;
    b->tombs[k].dropped_ms = dropped_ms;
    b->tomb_ptrs[k] = &b->tombs[k];
    b->n_tombs++;
    b->bytes += VAULT_ID_LEN + 16;
    return 0;
}

static void
h_sync_list(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__SyncListRequest *req = NULL;
    struct vault_tenant *t = NULL;
    struct sync_batch b;
    bool want[VAULT_SYNC_BUCKETS];
    char detail[CFR_RPC_TENANT_MAX + 32];
    size_t cap = SYNC_LIST_BATCH;

    memset(&b, 0, sizeof(b));
    memset(want, 0, sizeof(want));
    call_init(&c, ctx, arg);
    b.c = &c;
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_sync_list(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    if (!sync_check(&c, req->tenant, &t)) {
        goto out;
    }
    for (size_t i = 0; i < req->n_buckets; i++) {
        want[req->buckets[i]] = true;
    }
    b.cap = cap;
    b.recs = cfr_calloc(cap, sizeof(*b.recs));
    b.rec_ptrs = cfr_calloc(cap, sizeof(void *));
    b.roots = cfr_calloc(cap, sizeof(*b.roots));
    b.snaps = cfr_calloc(cap, sizeof(*b.snaps));
    b.headers = cfr_calloc(cap, sizeof(*b.headers));
    b.tombs = cfr_calloc(cap, sizeof(*b.tombs));
    b.tomb_ptrs = cfr_calloc(cap, sizeof(void *));
    b.tomb_ids = cfr_calloc(cap, VAULT_ID_LEN);
    if (b.recs == NULL || b.rec_ptrs == NULL || b.roots == NULL ||
        b.snaps == NULL || b.headers == NULL || b.tombs == NULL ||
        b.tomb_ptrs == NULL || b.tomb_ids == NULL) {
        finish_status(&c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /*
     * The store walks a consistent view of each family, so messages may
     * be sent from inside the walk; snapshots first, then tombstones.
     */
    if (t != NULL && req->n_buckets > 0 &&
        vault_store_sync_list(t, want, sync_list_snap, sync_list_tomb, &b,
                              &c.err) != 0) {
        if (c.err.code == CFR_EUNAVAIL) {
            finish_status(&c, CFR_RPC_CANCELLED, "stream ended early");
        } else {
            finish_code(&c);
        }
        goto out;
    }
    /* At least one message, so the peer tells "empty" from "cut off". */
    if ((b.n_recs > 0 || b.n_tombs > 0 || !b.sent) &&
        sync_batch_send(&b) != 0) {
        finish_status(&c, CFR_RPC_CANCELLED, "stream ended early");
        goto out;
    }
    snprintf(detail, sizeof(detail), "tenant=%s buckets=%zu", req->tenant,
             req->n_buckets);
    finish_status(&c, CFR_RPC_OK, detail);
out:
    if (b.headers != NULL) {
        sync_batch_clear(&b);
    }
    cfr_free(b.recs);
    cfr_free(b.rec_ptrs);
    cfr_free(b.roots);
    cfr_free(b.snaps);
    cfr_free(b.headers);
    cfr_free(b.tombs);
    cfr_free(b.tomb_ptrs);
    cfr_free(b.tomb_ids);
    vault_request_free_sync_list(req);
}

static void
h_sync_get(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    size_t len;
    const uint8_t *req_p;
    Coffer__V1__SyncGetRequest *req = NULL;
    struct vault_tenant *t = NULL;
    char detail[CFR_RPC_TENANT_MAX + 32];

    call_init(&c, ctx, arg);
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_sync_get(req_p, len, &req, &c.err) != 0) {
        finish_code(&c);
        goto out;
    }
    if (!sync_check(&c, req->tenant, &t)) {
        goto out;
    }
    if (serve_objects(&c, t, req->tenant, req->ids, req->n_ids, true) == 0) {
        snprintf(detail, sizeof(detail), "tenant=%s ids=%zu", req->tenant,
                 req->n_ids);
        finish_status(&c, CFR_RPC_OK, detail);
    }
out:
    vault_request_free_sync_get(req);
}

/* ---- System (operators) ------------------------------------------------- */

#define SYSTEM_LIST_MAX 65536 /* tenants or deny entries in one answer */

static const char *
system_op_name(int op)
{
    static const char *const names[] = {
        "unspecified", "tenant_add", "tenant_set", "tenant_list",
        "revoke",      "unrevoke",   "deny_list",  "audit",
        "totp_set",    "approve",    "sync",       "sync_status",
    };
    return op >= 0 && (size_t)op < sizeof(names) / sizeof(names[0]) ? names[op]
                                                                    : "unknown";
}

/*
 * The outcome of one System call: the answer (status and message, or
 * the response) and what its audit record says about the target. Each
 * op fills it; h_system answers and audits once, at its single exit.
 */
struct sys_call {
    struct call c;
    const Coffer__V1__SystemRequest *req;
    Coffer__V1__SystemResponse resp;
    int status;
    bool use_err;    /* message from c.err (finish_err: storage failures) */
    const char *msg; /* otherwise this one */
    char msg_buf[CFR_ERR_MSG_MAX];
    char target[VAULT_SYSDB_TEXT_MAX]; /* for the audit record, log-safe */
    uint8_t approval[VAULT_SYSDB_APPROVAL_ID_LEN];
    /* Owned by the response. */
    Coffer__V1__TenantInfo *infos, **info_ptrs;
    struct vault_sysdb_tenant *recs;
    Coffer__V1__DenyEntry *denies, **deny_ptrs;
    struct vault_sysdb_deny *deny_recs;
    char **str_ptrs; /* the TenantInfos' region and notify arrays */
    struct audit_list audit;
    struct status_list *status_lines; /* SYNC_STATUS */
    Coffer__V1__SyncStatus *sync_msgs, **sync_ptrs;
};

static int
sys_fail_err(struct sys_call *sc, int status)
{
    sc->status = status;
    sc->use_err = true;
    return status;
}

static int sys_fail(struct sys_call *sc, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sys_fail(struct sys_call *sc, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->msg_buf, sizeof(sc->msg_buf), fmt, ap);
    va_end(ap);
    sc->status = status;
    sc->use_err = false;
    sc->msg = sc->msg_buf;
    return status;
}

/*
 * The System form of factor_check, scope "_system". Returns FACTOR_RUN,
 * or the call's outcome is set (pending with its approval ID, or refused).
 */
static enum factor
sys_factor(struct sys_call *sc, const char *op, const char *args)
{
    struct factor_out fo;
    enum factor f =
        factor_check(&sc->c, VAULT_SYSDB_SYSTEM_SCOPE, sc->req->totp,
                     &sc->req->approval_id, op, args, &fo);
    if (f == FACTOR_PENDING) {
        memcpy(sc->approval, fo.id, sizeof(sc->approval));
        sc->resp.pending = true;
        sc->resp.approval_id.data = sc->approval;
        sc->resp.approval_id.len = sizeof(sc->approval);
        sc->status = CFR_RPC_OK;
    } else if (f == FACTOR_REFUSED) {
        sc->status = fo.status;
        sc->use_err = fo.use_err;
        sc->msg = fo.msg;
    }
    return f;
}

static void
tenant_from_info(const Coffer__V1__TenantInfo *in, struct vault_sysdb_tenant *t)
{
    /* The decoder bounded every count and length (request.h). */
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", in->name);
    t->retention_ms = in->retention_ms;
    t->n_regions = in->n_regions;
    for (size_t i = 0; i < in->n_regions; i++) {
        snprintf(t->regions[i], sizeof(t->regions[i]), "%s", in->regions[i]);
    }
    t->n_notify = in->n_notify;
    for (size_t i = 0; i < in->n_notify; i++) {
        snprintf(t->notify[i], sizeof(t->notify[i]), "%s", in->notify[i]);
    }
}

/* "a,b,c" of the tenant's regions, "*" for anywhere. */
static const char *
regions_text(const struct vault_sysdb_tenant *t, char *out, size_t n)
{
    size_t used = 0;
    snprintf(out, n, "%s", t->n_regions == 0 ? "*" : "");
    for (size_t i = 0; i < t->n_regions && used < n; i++) {
        int w = snprintf(out + used, n - used, "%s%s", i > 0 ? "," : "",
                         t->regions[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    return out;
}

static int64_t
effective_retention(const struct vault_server *srv, int64_t ms)
{
    return ms > 0 ? ms : srv->cfg->retention_ms;
}

static void
tenant_event(struct sys_call *sc, const char *event,
             const struct vault_sysdb_tenant *t)
{
    char regions[VAULT_SYSDB_REGIONS_MAX * VAULT_SYSDB_REGION_MAX];
    char ret[32], who[CFR_RPC_NAME_MAX + 8];
    snprintf(ret, sizeof(ret), "%lld", (long long)t->retention_ms);
    regions_text(t, regions, sizeof(regions));
    cfr_log(CFR_LOG_WARN, event, "tenant=%s regions=%s retention_ms=%s by=%s",
            t->name, regions, ret,
            cfr_log_quote(sc->c.peer->uri, who, sizeof(who)));
    struct cfr_notify_field f[] = {
        {"by", sc->c.peer->uri}, {"regions", regions}, {"retention_ms", ret}};
    notify_event(sc->c.srv, event, t->name, true, f, 3);
}

static int
sys_tenant_add(struct sys_call *sc)
{
    struct vault_sysdb_tenant *t = cfr_calloc(1, sizeof(*t));
    int rc;
    if (t == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    tenant_from_info(sc->req->tenant, t);
    snprintf(sc->target, sizeof(sc->target), "tenant=%s", t->name);
    rc = vault_sysdb_tenant_create(sc->c.srv->sysdb, t, &sc->c.err);
    if (rc == CFR_EEXIST) {
        sys_fail(sc, CFR_RPC_ALREADY_EXISTS, "tenant %s is registered",
                 t->name);
    } else if (rc != 0) {
        sys_fail_err(sc, status_for(rc));
    } else {
        tenant_event(sc, "vault.tenant.added", t);
    }
    cfr_free(t);
    return sc->status;
}

static int
sys_tenant_set(struct sys_call *sc)
{
    struct vault_sysdb_tenant *t = cfr_calloc(1, sizeof(*t));
    struct vault_sysdb_tenant *old = cfr_calloc(1, sizeof(*old));
    struct vault_server *srv = sc->c.srv;
    char args[VAULT_SYSDB_TEXT_MAX], regions[VAULT_SYSDB_TEXT_MAX];
    int rc;

    if (t == NULL || old == NULL) {
        sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    tenant_from_info(sc->req->tenant, t);
    snprintf(sc->target, sizeof(sc->target), "tenant=%s", t->name);
    rc = vault_sysdb_tenant_get(srv->sysdb, t->name, old, &sc->c.err);
    if (rc == CFR_ENOTFOUND) {
        sys_fail(sc, CFR_RPC_NOT_FOUND, "tenant %s is not registered", t->name);
        goto out;
    }
    if (rc != 0) {
        sys_fail_err(sc, status_for(rc));
        goto out;
    }
    /* Only a shorter window can lose data, so only it needs a factor. */
    if (effective_retention(srv, t->retention_ms) <
        effective_retention(srv, old->retention_ms)) {
        snprintf(args, sizeof(args), "tenant=%s retention_ms=%lld regions=%s",
                 t->name, (long long)t->retention_ms,
                 regions_text(t, regions, sizeof(regions)));
        if (sys_factor(sc, "tenant_retention", args) != FACTOR_RUN) {
            goto out;
        }
    }
    if ((rc = vault_sysdb_tenant_update(srv->sysdb, t, NULL, &sc->c.err)) !=
        0) {
        sys_fail_err(sc,
                     rc == CFR_ENOTFOUND ? CFR_RPC_NOT_FOUND : status_for(rc));
        goto out;
    }
    tenant_event(sc, "vault.tenant.changed", t);
out:
    cfr_free(t);
    cfr_free(old);
    return sc->status;
}

struct tenant_collect {
    struct sys_call *sc;
    size_t n, alloc;
};

static int
collect_tenant(void *ctx, const struct vault_sysdb_tenant *t)
{
    struct tenant_collect *tc = ctx;
    struct sys_call *sc = tc->sc;
    if (tc->n == tc->alloc) {
        size_t na = tc->alloc ? 2 * tc->alloc : 16;
        void *p;
        if (na > SYSTEM_LIST_MAX) {
            return CFR_ERR(&sc->c.err, CFR_ELIMIT, "too many tenants to list");
        }
        if ((p = cfr_realloc(sc->recs, na * sizeof(*sc->recs))) == NULL) {
            return CFR_ERR(&sc->c.err, CFR_ENOMEM, "out of memory");
        }
        sc->recs = p;
        tc->alloc = na;
    }
    sc->recs[tc->n++] = *t;
    return 0;
}

static int
sys_tenant_list(struct sys_call *sc)
{
    struct tenant_collect tc = {sc, 0, 0};
    struct vault_server *srv = sc->c.srv;
    int rc =
        vault_sysdb_tenant_list(srv->sysdb, collect_tenant, &tc, &sc->c.err);
    if (rc == 0 && sc->c.err.code != 0) {
        rc = sc->c.err.code; /* the walk was stopped by collect_tenant */
    }
    if (rc != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    sc->infos = cfr_calloc(tc.n + 1, sizeof(*sc->infos));
    sc->info_ptrs = cfr_calloc(tc.n + 1, sizeof(void *));
    if (sc->infos == NULL || sc->info_ptrs == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < tc.n; i++) {
        Coffer__V1__TenantInfo init = COFFER__V1__TENANT_INFO__INIT;
        struct vault_sysdb_tenant *r = &sc->recs[i];
        Coffer__V1__TenantInfo *e = &sc->infos[i];
        struct vault_tenant *t;
        struct vault_tenant_stats ts;
        struct cfr_err err;
        *e = init;
        e->name = r->name;
        e->retention_ms = r->retention_ms;
        e->created_ms = r->created_ms;
        /* The record's arrays live as long as sc->recs; point into them. */
        e->n_regions = r->n_regions;
        e->regions = NULL;
        e->n_notify = r->n_notify;
        e->notify = NULL;
        /* Usage only where the tenant's database exists: never create. */
        cfr_err_clear(&err);
        t = vault_store_tenant(srv->store, r->name, false, &err);
        if (t != NULL && vault_store_stats(t, &ts, &err) == 0) {
            e->objects = ts.objects;
            e->object_bytes = ts.object_bytes;
            e->snapshots = ts.snapshots;
        }
        sc->info_ptrs[i] = e;
    }
    /* String arrays: one pointer table per tenant, in one allocation. */
    {
        size_t per = VAULT_SYSDB_REGIONS_MAX + VAULT_SYSDB_NOTIFY_MAX;
        char **ptrs = cfr_calloc(tc.n * per + 1, sizeof(char *));
        if (ptrs == NULL) {
            return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        }
        sc->str_ptrs = ptrs;
        for (size_t i = 0; i < tc.n; i++) {
            char **rp = ptrs + i * per, **np = rp + VAULT_SYSDB_REGIONS_MAX;
            for (size_t k = 0; k < sc->recs[i].n_regions; k++) {
                rp[k] = sc->recs[i].regions[k];
            }
            for (size_t k = 0; k < sc->recs[i].n_notify; k++) {
                np[k] = sc->recs[i].notify[k];
            }
            sc->infos[i].regions = rp;
            sc->infos[i].notify = np;
        }
    }
    sc->resp.n_tenants = tc.n;
    sc->resp.tenants = sc->info_ptrs;
    snprintf(sc->target, sizeof(sc->target), "tenants=%zu", tc.n);
    return CFR_RPC_OK;
}

static int
deny_kind_of(const char *kind, enum vault_sysdb_deny_kind *k_r)
{
    if (strcmp(kind, "identity") == 0) {
        *k_r = VAULT_DENY_IDENTITY;
        return 0;
    }
    if (strcmp(kind, "fingerprint") == 0) {
        *k_r = VAULT_DENY_FINGERPRINT;
        return 0;
    }
    return CFR_EINVAL;
}

static int
sys_revoke(struct sys_call *sc, bool add)
{
    const Coffer__V1__DenyEntry *d = sc->req->deny;
    struct vault_server *srv = sc->c.srv;
    enum vault_sysdb_deny_kind kind = VAULT_DENY_IDENTITY;
    char tenant[CFR_RPC_TENANT_MAX], role[CFR_RPC_ROLE_MAX];
    char args[VAULT_SYSDB_TEXT_MAX], qv[CFR_RPC_NAME_MAX + 8];
    char qr[VAULT_SYSDB_TEXT_MAX], qb[CFR_RPC_NAME_MAX + 8];
    const char *reason = d->reason[0] != '\0' ? d->reason : sc->req->reason;
    const char *event = add ? "vault.revocation" : "vault.revocation.removed";
    int rc;

    (void)deny_kind_of(d->kind, &kind); /* the decoder checked it */
    cfr_log_quote(d->value, qv, sizeof(qv));
    snprintf(sc->target, sizeof(sc->target), "%s=%s", d->kind, qv);
    tenant[0] = '\0';
    if (kind == VAULT_DENY_IDENTITY &&
        cfr_rpc_identity_parse(d->value, tenant, role) != 0) {
        tenant[0] = '\0';
    }
    /*
     * Revoking a vault cuts a replication link: a second operator (or the
     * operator's TOTP code) must agree.
     */
    if (add && kind == VAULT_DENY_IDENTITY &&
        vault_request_vault_identity_ok(d->value)) {
        snprintf(args, sizeof(args), "identity=%s", d->value);
        if (sys_factor(sc, "revoke_vault", args) != FACTOR_RUN) {
            return sc->status;
        }
    }
    rc = add ? vault_sysdb_deny_add(srv->sysdb, kind, d->value, reason,
                                    sc->c.peer->uri, &sc->c.err)
             : vault_sysdb_deny_remove(srv->sysdb, kind, d->value, &sc->c.err);
    if (rc == CFR_ENOTFOUND) {
        return sys_fail(sc, CFR_RPC_NOT_FOUND, "%s %s is not on the deny list",
                        d->kind, qv);
    }
    if (rc != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    cfr_log(CFR_LOG_WARN, event, "kind=%s value=%s by=%s reason=%s", d->kind,
            qv, cfr_log_quote(sc->c.peer->uri, qb, sizeof(qb)),
            cfr_log_quote(reason, qr, sizeof(qr)));
    {
        struct cfr_notify_field f[] = {{"kind", d->kind},
                                       {"value", d->value},
                                       {"by", sc->c.peer->uri},
                                       {"reason", reason}};
        notify_event(srv, event, tenant[0] != '\0' ? tenant : NULL,
                     tenant[0] != '\0', f, sizeof(f) / sizeof(f[0]));
    }
    return CFR_RPC_OK;
}

struct deny_collect {
    struct sys_call *sc;
    size_t n, alloc;
};

static int
collect_deny(void *ctx, const struct vault_sysdb_deny *d)
{
    struct deny_collect *dc = ctx;
    struct sys_call *sc = dc->sc;
    if (dc->n == dc->alloc) {
        size_t na = dc->alloc ? 2 * dc->alloc : 16;
        void *p;
        if (na > SYSTEM_LIST_MAX) {
            return CFR_ERR(&sc->c.err, CFR_ELIMIT, "deny list too long");
        }
        if ((p = cfr_realloc(sc->deny_recs, na * sizeof(*sc->deny_recs))) ==
            NULL) {
            return CFR_ERR(&sc->c.err, CFR_ENOMEM, "out of memory");
        }
        sc->deny_recs = p;
        dc->alloc = na;
    }
    sc->deny_recs[dc->n++] = *d;
    return 0;
}

static int
sys_deny_list(struct sys_call *sc)
{
    struct deny_collect dc = {sc, 0, 0};
    int rc =
        vault_sysdb_deny_list(sc->c.srv->sysdb, collect_deny, &dc, &sc->c.err);
    if (rc == 0 && sc->c.err.code != 0) {
        rc = sc->c.err.code;
    }
    if (rc != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    sc->denies = cfr_calloc(dc.n + 1, sizeof(*sc->denies));
    sc->deny_ptrs = cfr_calloc(dc.n + 1, sizeof(void *));
    if (sc->denies == NULL || sc->deny_ptrs == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < dc.n; i++) {
        Coffer__V1__DenyEntry init = COFFER__V1__DENY_ENTRY__INIT;
        struct vault_sysdb_deny *r = &sc->deny_recs[i];
        sc->denies[i] = init;
        sc->denies[i].kind =
            (char *)(r->kind == VAULT_DENY_FINGERPRINT ? "fingerprint"
                                                       : "identity");
        sc->denies[i].value = r->value;
        sc->denies[i].reason = r->reason;
        sc->denies[i].by = r->by;
        sc->denies[i].added_ms = r->added_ms;
        sc->deny_ptrs[i] = &sc->denies[i];
    }
    sc->resp.n_denied = dc.n;
    sc->resp.denied = sc->deny_ptrs;
    snprintf(sc->target, sizeof(sc->target), "entries=%zu", dc.n);
    return CFR_RPC_OK;
}

static int
sys_audit(struct sys_call *sc)
{
    struct audit_list *l = &sc->audit;
    const Coffer__V1__SystemRequest *req = sc->req;
    l->vault_wide = true;
    snprintf(l->tenant, sizeof(l->tenant), "%s", req->tenant_name);
    l->limit = req->limit == 0                ? AUDIT_LIMIT_DEFAULT
               : req->limit > AUDIT_LIMIT_MAX ? AUDIT_LIMIT_MAX
                                              : req->limit;
    l->entries = cfr_calloc(l->limit, sizeof(*l->entries));
    l->ptrs = cfr_calloc(l->limit, sizeof(void *));
    l->strs = cfr_calloc(l->limit, sizeof(*l->strs));
    if (l->entries == NULL || l->ptrs == NULL || l->strs == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    snprintf(sc->target, sizeof(sc->target), "tenant=%s since_ms=%lld",
             req->tenant_name[0] != '\0' ? req->tenant_name : "*",
             (long long)req->since_ms);
    /* Records queued by the calls just before this one are included. */
    if (vault_sysdb_audit_sync(sc->c.srv->sysdb, &sc->c.err) != 0 ||
        vault_sysdb_audit_query(sc->c.srv->sysdb, req->since_ms, INT64_MAX, 0,
                                audit_collect, l, &sc->c.err) != 0) {
        return sys_fail_err(sc, status_for(sc->c.err.code));
    }
    sc->resp.n_entries = l->n;
    sc->resp.entries = l->ptrs;
    return CFR_RPC_OK;
}

/*
 * TOTP enrolment: a tenant admin's (tenant_name, principal), or with
 * tenant_name "" the calling operator's own. A first secret may be
 * registered outright; replacing one needs the second factor, since it
 * would hand someone else the ability to approve destructive operations.
 */
static int
sys_totp_set(struct sys_call *sc)
{
    const Coffer__V1__SystemRequest *req = sc->req;
    struct vault_server *srv = sc->c.srv;
    char identity[CFR_RPC_NAME_MAX], args[VAULT_SYSDB_TEXT_MAX];
    char qp[CFR_RPC_NAME_MAX + 8];
    const char *scope, *principal;
    bool has = false;
    int rc;

    if (req->tenant_name[0] == '\0') {
        scope = VAULT_SYSDB_SYSTEM_SCOPE;
        principal = sc->c.peer->cn;
        snprintf(identity, sizeof(identity), "%s", sc->c.peer->uri);
        if (req->principal[0] != '\0' &&
            strcmp(req->principal, sc->c.peer->cn) != 0) {
            snprintf(sc->target, sizeof(sc->target), "tenant=- principal=%s",
                     cfr_log_quote(req->principal, qp, sizeof(qp)));
            return sys_fail(sc, CFR_RPC_PERMISSION_DENIED,
                            "an operator enrols only its own TOTP secret");
        }
    } else {
        struct vault_sysdb_tenant *t = cfr_calloc(1, sizeof(*t));
        scope = req->tenant_name;
        principal = req->principal;
        snprintf(identity, sizeof(identity), "coffer://tenant/%s/role/admin",
                 req->tenant_name);
        rc = t == NULL
                 ? CFR_ENOMEM
                 : vault_sysdb_tenant_get(srv->sysdb, scope, t, &sc->c.err);
        cfr_free(t);
        if (rc == CFR_ENOTFOUND) {
            return sys_fail(sc, CFR_RPC_NOT_FOUND,
                            "tenant %s is not registered", scope);
        }
        if (rc != 0) {
            return sys_fail(sc, status_for(rc), "tenant %s unreadable", scope);
        }
    }
    cfr_log_quote(principal, qp, sizeof(qp));
    snprintf(sc->target, sizeof(sc->target), "tenant=%s principal=%s",
             req->tenant_name[0] != '\0' ? req->tenant_name : "-", qp);
    if ((rc = vault_sysdb_totp_has(srv->sysdb, scope, identity, principal, &has,
                                   &sc->c.err)) != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    if (has) {
        snprintf(args, sizeof(args), "scope=%s principal=%s", scope, qp);
        if (sys_factor(sc, "totp_replace", args) != FACTOR_RUN) {
            return sc->status;
        }
    }
    if ((rc = vault_sysdb_totp_register(
             srv->sysdb, scope, identity, principal, req->totp_secret.data,
             req->totp_secret.len, NULL, &sc->c.err)) != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    cfr_log(CFR_LOG_WARN, "vault.totp.set", "%s replaced=%d by=%s", sc->target,
            has ? 1 : 0, sc->c.peer->cn);
    {
        struct cfr_notify_field f[] = {{"principal", principal},
                                       {"replaced", has ? "yes" : "no"},
                                       {"by", sc->c.peer->uri}};
        bool system = req->tenant_name[0] == '\0';
        notify_event(srv, "vault.totp.set", system ? NULL : scope, !system, f,
                     3);
    }
    return CFR_RPC_OK;
}

static int
sys_approve(struct sys_call *sc)
{
    char id[VAULT_SYSDB_APPROVAL_HEX], q[CFR_RPC_NAME_MAX + 8];
    int rc;
    cfr_hex_encode(sc->req->approval_id.data, VAULT_SYSDB_APPROVAL_ID_LEN, id);
    snprintf(sc->target, sizeof(sc->target), "approval=%s", id);
    rc = vault_sysdb_approval_approve(
        sc->c.srv->sysdb, VAULT_SYSDB_SYSTEM_SCOPE, id, sc->c.peer->uri,
        sc->c.peer->cn, &sc->c.err);
    if (rc != 0) {
        return sys_fail_err(sc, rc == CFR_EDENIED ? CFR_RPC_PERMISSION_DENIED
                                                  : status_for(rc));
    }
    cfr_log(CFR_LOG_WARN, "vault.approval.approved",
            "tenant=%s principal=%s id=%s", VAULT_SYSDB_SYSTEM_SCOPE,
            cfr_log_quote(sc->c.peer->cn, q, sizeof(q)), id);
    return CFR_RPC_OK;
}

/* ---- replication ops ---------------------------------------------------- */

#define STATUS_LINES_MAX 65536 /* tenants x (peers + 1) in one answer */

/* Replication state lines, collected from vault_sync_status. */
struct status_list {
    struct vault_sync_status *v;
    size_t n, alloc;
    struct cfr_err *err;
};

static int
status_collect(void *ctx, const struct vault_sync_status *st)
{
    struct status_list *l = ctx;
    if (l->n == l->alloc) {
        size_t na = l->alloc ? 2 * l->alloc : 32;
        void *p;
        if (na > STATUS_LINES_MAX) {
            return CFR_ERR(l->err, CFR_ELIMIT, "too many status lines");
        }
        if ((p = cfr_realloc(l->v, na * sizeof(*l->v))) == NULL) {
            return CFR_ERR(l->err, CFR_ENOMEM, "out of memory");
        }
        l->v = p;
        l->alloc = na;
    }
    l->v[l->n++] = *st;
    return 0;
}

static void
status_free(struct status_list *l)
{
    if (l != NULL) {
        cfr_free(l->v);
        cfr_free(l);
    }
}

static int
newest_of(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
          size_t header_len)
{
    int64_t *newest = ctx;
    (void)header;
    (void)header_len;
    if (s->received_ms > *newest) {
        *newest = s->received_ms;
    }
    return 0;
}

/*
 * A tenant's own line without a replication engine (no peers): what it
 * holds here. A tenant with no database yet holds nothing.
 */
static int
own_line(struct vault_server *srv, const char *name, void *ctx)
{
    struct status_list *l = ctx;
    struct vault_sync_status st;
    struct vault_tenant_stats ts;
    struct vault_tenant *t;
    struct cfr_err err;

    memset(&st, 0, sizeof(st));
    snprintf(st.tenant, sizeof(st.tenant), "%s", name);
    snprintf(st.region, sizeof(st.region), "%s", srv->cfg->region);
    cfr_err_clear(&err);
    t = vault_store_tenant(srv->store, name, false, &err);
    if (t == NULL && err.code != CFR_ENOTFOUND) {
        return CFR_ERR(l->err, err.code, "%s", err.msg);
    }
    if (t != NULL) {
        if (vault_store_stats(t, &ts, l->err) != 0 ||
            vault_store_snapshots(t, NULL, false, newest_of, &st.newest_ms,
                                  l->err) != 0) {
            return l->err->code;
        }
        st.snapshots = ts.snapshots;
    }
    return status_collect(l, &st);
}

struct own_walk {
    struct vault_server *srv;
    struct status_list *l;
};

static int
own_line_rec(void *ctx, const struct vault_sysdb_tenant *t)
{
    struct own_walk *w = ctx;
    return own_line(w->srv, t->name, w->l);
}

/*
 * Replication state of tenant (NULL: all): the engine's lines, or without
 * peers one own line per registered tenant. Returns owned or NULL, err set.
 */
static struct status_list *
status_gather(struct vault_server *srv, const char *tenant, struct cfr_err *err)
{
    struct status_list *l = cfr_calloc(1, sizeof(*l));
    int rc;
    if (l == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory");
        return NULL;
    }
    l->err = err;
    if (srv->sync != NULL) {
        rc = vault_sync_status(srv->sync, tenant, status_collect, l, err);
    } else if (tenant != NULL) {
        rc = own_line(srv, tenant, l);
    } else {
        struct own_walk w = {srv, l};
        rc = vault_sysdb_tenant_list(srv->sysdb, own_line_rec, &w, err);
    }
    if (rc == 0 && err->code != 0) {
        rc = err->code; /* a callback stopped the walk */
    }
    if (rc != 0) {
        status_free(l);
        return NULL;
    }
    return l;
}

/* tenant_name, when set, must be registered here. */
static int
sys_sync_tenant(struct sys_call *sc, const char **tenant_r)
{
    const char *name = sc->req->tenant_name;
    struct vault_sysdb_tenant *t;
    int rc;
    *tenant_r = NULL;
    snprintf(sc->target, sizeof(sc->target), "tenant=%s",
             name[0] != '\0' ? name : "*");
    if (name[0] == '\0') {
        return CFR_RPC_OK;
    }
    if ((t = cfr_calloc(1, sizeof(*t))) == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    rc = vault_sysdb_tenant_get(sc->c.srv->sysdb, name, t, &sc->c.err);
    cfr_free(t);
    if (rc == CFR_ENOTFOUND) {
        return sys_fail(sc, CFR_RPC_NOT_FOUND, "tenant %s is not registered",
                        name);
    }
    if (rc != 0) {
        return sys_fail_err(sc, status_for(rc));
    }
    *tenant_r = name;
    return CFR_RPC_OK;
}

/* SYNC: a round now, of one tenant or all; answers before it runs. */
static int
sys_sync(struct sys_call *sc)
{
    struct vault_server *srv = sc->c.srv;
    const char *tenant = NULL;
    char q[CFR_RPC_NAME_MAX + 8];
    if (sys_sync_tenant(sc, &tenant) != CFR_RPC_OK) {
        return sc->status;
    }
    /*
     * Without peers there is nothing to pull: the round is empty and
     * done, which is not an error (coffer-admin fans out to every vault,
     * peerless ones included); the audit target says so.
     */
    if (srv->sync != NULL) {
        vault_sync_trigger(srv->sync, tenant);
    } else {
        size_t used = strlen(sc->target);
        snprintf(sc->target + used, sizeof(sc->target) - used, " peers=0");
    }
    cfr_log(CFR_LOG_INFO, "vault.sync.triggered", "%s by=%s", sc->target,
            cfr_log_quote(sc->c.peer->uri, q, sizeof(q)));
    return CFR_RPC_OK;
}

static void
status_to_msg(const struct vault_sync_status *st, Coffer__V1__SyncStatus *m)
{
    Coffer__V1__SyncStatus init = COFFER__V1__SYNC_STATUS__INIT;
    *m = init;
    m->tenant = (char *)st->tenant;
    m->peer = (char *)st->peer;
    m->region = (char *)st->region;
    m->snapshots = st->snapshots;
    m->newest_ms = st->newest_ms;
    m->last_attempt_ms = st->last_attempt_ms;
    m->last_ok_ms = st->last_ok_ms;
    m->last_error = (char *)st->last_error;
    m->snapshots_pulled = st->snapshots_pulled;
    m->objects_pulled = st->objects_pulled;
    m->bytes_pulled = st->bytes_pulled;
    m->tombstones_applied = st->tombstones_applied;
    m->repairs = st->repairs;
    m->last_repair_ms = st->last_repair_ms;
    m->repair_failures = st->repair_failures;
    m->behind = st->behind;
}

/* SYNC_STATUS: the replication state lines, own line first per tenant. */
static int
sys_sync_status(struct sys_call *sc)
{
    const char *tenant = NULL;
    struct status_list *l;
    if (sys_sync_tenant(sc, &tenant) != CFR_RPC_OK) {
        return sc->status;
    }
    if ((l = status_gather(sc->c.srv, tenant, &sc->c.err)) == NULL) {
        return sys_fail_err(sc, status_for(sc->c.err.code));
    }
    sc->status_lines = l;
    sc->sync_msgs = cfr_calloc(l->n + 1, sizeof(*sc->sync_msgs));
    sc->sync_ptrs = cfr_calloc(l->n + 1, sizeof(void *));
    if (sc->sync_msgs == NULL || sc->sync_ptrs == NULL) {
        return sys_fail(sc, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < l->n; i++) {
        status_to_msg(&l->v[i], &sc->sync_msgs[i]);
        sc->sync_ptrs[i] = &sc->sync_msgs[i];
    }
    sc->resp.n_sync = l->n;
    sc->resp.sync = sc->sync_ptrs;
    {
        size_t used = strlen(sc->target);
        snprintf(sc->target + used, sizeof(sc->target) - used, " lines=%zu",
                 l->n);
    }
    return CFR_RPC_OK;
}

/*
 * Writes the audit record of one System op: which op, on what, and how
 * it ended. Never the TOTP secret or code.
 */
static void
sys_audit_record(struct sys_call *sc, int op)
{
    struct vault_sysdb_audit ar;
    struct cfr_err err;
    const char *outcome = sc->status != CFR_RPC_OK ? "refused"
                          : sc->resp.pending       ? "pending"
                                                   : "ok";
    const char *msg = sc->status == CFR_RPC_OK ? ""
                      : sc->use_err            ? sc->c.err.msg
                      : sc->msg != NULL        ? sc->msg
                                               : "";
    memset(&ar, 0, sizeof(ar));
    snprintf(ar.identity, sizeof(ar.identity), "%s", sc->c.peer->uri);
    snprintf(ar.peer, sizeof(ar.peer), "%s", sc->c.peer->addr);
    snprintf(ar.method, sizeof(ar.method), "System.%s", system_op_name(op));
    ar.decision = sc->status == CFR_RPC_PERMISSION_DENIED ? VAULT_AUDIT_DENY
                                                          : VAULT_AUDIT_ALLOW;
    ar.status = sc->status;
    /* The target first: it is what an auditor searches for. */
    snprintf(ar.detail, sizeof(ar.detail), "op=%s outcome=%s %.320s%s%.120s",
             system_op_name(op), outcome, sc->target, msg[0] ? " why=" : "",
             msg);
    if (vault_sysdb_audit_submit(sc->c.srv->sysdb, &ar, &err) == CFR_EIO) {
        atomic_store(&sc->c.srv->failed, true);
    }
}

static void
h_system(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct sys_call *sc = cfr_calloc(1, sizeof(*sc));
    Coffer__V1__SystemResponse init = COFFER__V1__SYSTEM_RESPONSE__INIT;
    Coffer__V1__SystemRequest *req = NULL;
    const uint8_t *req_p;
    size_t len;
    int op = -1;

    if (sc == NULL) {
        cfr_rpc_ctx_finish(ctx, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory",
                           NULL, 0, NULL);
        return;
    }
    call_init(&sc->c, ctx, arg);
    sc->resp = init;
    req_p = cfr_rpc_ctx_request(ctx, &len);
    if (vault_request_decode_system(req_p, len, &req, &sc->c.err) != 0) {
        sys_fail_err(sc, status_for(sc->c.err.code));
        goto answer;
    }
    sc->req = req;
    op = (int)req->op;
    switch (req->op) {
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD:
        sys_tenant_add(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET:
        sys_tenant_set(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST:
        sys_tenant_list(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE:
        sys_revoke(sc, true);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE:
        sys_revoke(sc, false);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST:
        sys_deny_list(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT:
        sys_audit(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET:
        sys_totp_set(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC:
        sys_sync(sc);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS:
        sys_sync_status(sc);
        break;
    default: /* APPROVE: the decoder refused every other value */
        sys_approve(sc);
        break;
    }
answer:
    sys_audit_record(sc, op);
    if (sc->status == CFR_RPC_OK) {
        finish_msg(&sc->c, &sc->resp.base);
    } else if (sc->use_err) {
        finish_err(&sc->c, sc->status);
    } else {
        finish_status(&sc->c, sc->status, sc->msg);
    }
    cfr_free(sc->infos);
    cfr_free(sc->info_ptrs);
    cfr_free(sc->recs);
    cfr_free(sc->str_ptrs);
    cfr_free(sc->denies);
    cfr_free(sc->deny_ptrs);
    cfr_free(sc->deny_recs);
    cfr_free(sc->audit.entries);
    cfr_free(sc->audit.ptrs);
    cfr_free(sc->audit.strs);
    status_free(sc->status_lines);
    cfr_free(sc->sync_msgs);
    cfr_free(sc->sync_ptrs);
    vault_request_free_system(req);
    cfr_free(sc);
}

/* ---- authorization and audit hooks -------------------------------------- */

/*
 * The rate-limit key of a peer address: "ipv4:10.0.0.1:40112" without its
 * port, since every connection has a new one.
 */
static const char *
addr_key(const char *addr, char out[CFR_RPC_ADDR_MAX])
{
    char *colon;
    snprintf(out, CFR_RPC_ADDR_MAX, "%s", addr);
    colon = strrchr(out, ':');
    if (colon != NULL && colon != out && strchr(out, ':') != colon) {
        *colon = '\0';
    }
    return out;
}

static int
authz_hook(void *ctx, const struct cfr_rpc_peer *peer, const char *method)
{
    struct vault_server *srv = ctx;
    enum vault_method m = vault_authz_method(method);
    char addr[CFR_RPC_ADDR_MAX];
    int64_t retry = 0;

    bool denied = false;
    struct cfr_err err;

    /* A locked-out identity or address gets no work done at all. */
    if (cfr_ratelimit_check(srv->rl, peer->uri, addr_key(peer->addr, addr),
                            &retry) != 0) {
        return CFR_RPC_PERMISSION_DENIED;
    }
    /*
     * A revoked identity or certificate is refused, from the next call on
     * (the list is read every time); an unreadable list refuses all.
     */
    if (vault_sysdb_deny_check(srv->sysdb, peer->uri, peer->fingerprint,
                               &denied, &err) != 0 ||
        denied) {
        return CFR_RPC_PERMISSION_DENIED;
    }
    return vault_authz_allowed(vault_authz_peer_role(peer->tenant, peer->role),
                               m)
               ? CFR_RPC_OK
               : CFR_RPC_PERMISSION_DENIED;
}

/* Counts a denial against the caller; logs a lockout once, when it starts. */
static void
count_denial(struct vault_server *srv, const struct cfr_rpc_peer *peer)
{
    char addr[CFR_RPC_ADDR_MAX], q[CFR_RPC_NAME_MAX + 8];
    unsigned bits = cfr_ratelimit_fail(srv->rl, peer->uri[0] ? peer->uri : NULL,
                                       addr_key(peer->addr, addr));
    if (bits & (CFR_RATELIMIT_LOCKED_IDENTITY | CFR_RATELIMIT_LOCKED_ADDRESS)) {
        cfr_log(CFR_LOG_WARN, "vault.lockout",
                "identity=%s addr=%s locked_identity=%d locked_address=%d "
                "lockout_ms=%lld",
                cfr_log_quote(peer->uri[0] ? peer->uri : "-", q, sizeof(q)),
                addr, (bits & CFR_RATELIMIT_LOCKED_IDENTITY) ? 1 : 0,
                (bits & CFR_RATELIMIT_LOCKED_ADDRESS) ? 1 : 0,
                (long long)srv->cfg->lockout_ms);
        struct cfr_notify_field f[] = {
            {"identity", peer->uri[0] ? peer->uri : "-"},
            {"addr", addr},
            {"locked",
             (bits & CFR_RATELIMIT_LOCKED_IDENTITY) ? "identity" : "address"},
        };
        /* Operators and peer vaults have no tenant to name. */
        notify_event(
            srv, "vault.lockout",
            peer->has_identity && peer->tenant[0] != '\0' ? peer->tenant : NULL,
            false, f, sizeof(f) / sizeof(f[0]));
    }
}

static void
audit_hook(void *ctx, const struct cfr_rpc_audit *rec)
{
    struct vault_server *srv = ctx;
    static const char *const decisions[] = {"allowed", "denied", "no-method",
                                            "overloaded", "tls-failed"};
    enum vault_method m = vault_authz_method(rec->method);
    char uri[CFR_RPC_NAME_MAX + 8], meth[CFR_RPC_METHOD_MAX + 8];
    char detail[CFR_ERR_MSG_MAX + 8], addr[CFR_RPC_ADDR_MAX + 8];
    /* A peer vault's Sync* call names the tenant it read for; every
     * other call acts for its certificate's tenant. */
    const char *tenant = rec->tenant != NULL && rec->tenant[0] != '\0'
                             ? rec->tenant
                         : rec->peer->has_identity ? rec->peer->tenant
                                                   : "";
    unsigned d =
        (unsigned)rec->decision < sizeof(decisions) / sizeof(decisions[0])
            ? (unsigned)rec->decision
            : CFR_RPC_DENIED;

    /*
     * A handler's own refusal (registry gate, second factor) is a denial
     * too; the handler counted it for lockout already.
     */
    if (rec->decision == CFR_RPC_ALLOWED &&
        rec->status == CFR_RPC_PERMISSION_DENIED) {
        d = CFR_RPC_DENIED;
    }

    if (rec->decision == CFR_RPC_NO_METHOD) {
        atomic_fetch_add(&srv->unknown_method, 1);
    } else if (rec->decision == CFR_RPC_OVERLOADED) {
        atomic_fetch_add(&srv->overloaded, 1);
    } else if (m < VAULT_M_COUNT) {
        enum outcome o = rec->decision == CFR_RPC_DENIED ? OUT_DENIED
                         : rec->status == CFR_RPC_OK     ? OUT_OK
                                                         : OUT_ERROR;
        atomic_fetch_add(&srv->calls[m][o], 1);
    }
    if (rec->decision == CFR_RPC_DENIED) {
        if (!rec->peer->has_identity) {
            atomic_fetch_add(&srv->unauthenticated, 1);
        }
        count_denial(srv, rec->peer);
    }
    {
        struct vault_sysdb_audit ar;
        struct cfr_err err;
        memset(&ar, 0, sizeof(ar));
        snprintf(ar.identity, sizeof(ar.identity), "%s",
                 rec->peer->uri[0] ? rec->peer->uri : "-");
        snprintf(ar.peer, sizeof(ar.peer), "%s", rec->peer->addr);
        snprintf(ar.method, sizeof(ar.method), "%s", rec->method);
        ar.decision =
            d == CFR_RPC_ALLOWED ? VAULT_AUDIT_ALLOW : VAULT_AUDIT_DENY;
        snprintf(ar.tenant, sizeof(ar.tenant), "%s", tenant);
        ar.status = rec->status;
        snprintf(ar.detail, sizeof(ar.detail), "%s%s", decisions[d],
                 rec->detail != NULL && rec->detail[0] ? ": " : "");
        if (rec->detail != NULL) {
            size_t used = strlen(ar.detail);
            snprintf(ar.detail + used, sizeof(ar.detail) - used, "%s",
                     rec->detail);
        }
        if (rec->peer->fingerprint[0] != '\0') {
            /* Names the very certificate, so an operator can revoke it. */
            size_t used = strlen(ar.detail);
            snprintf(ar.detail + used, sizeof(ar.detail) - used,
                     " (cert %s, sha256 %s)",
                     cfr_rpc_cert_status_name((int)rec->peer->cert_status),
                     rec->peer->fingerprint);
        }
        /* Queued, never blocking (rpc.h); a full queue is logged there. */
        if (vault_sysdb_audit_submit(srv->sysdb, &ar, &err) == CFR_EIO) {
            atomic_store(&srv->failed, true);
        }
    }
    cfr_log(d == CFR_RPC_ALLOWED ? CFR_LOG_INFO : CFR_LOG_WARN, "vault.audit",
            "decision=%s method=%s status=%s tenant=%s role=%s identity=%s "
            "peer=%s cert=%s fingerprint=%s detail=%s",
            decisions[d], cfr_log_quote(rec->method, meth, sizeof(meth)),
            cfr_rpc_status_name(rec->status), tenant[0] != '\0' ? tenant : "-",
            rec->peer->has_identity ? rec->peer->role : "-",
            cfr_log_quote(rec->peer->uri[0] ? rec->peer->uri : "-", uri,
                          sizeof(uri)),
            cfr_log_quote(rec->peer->addr, addr, sizeof(addr)),
            cfr_rpc_cert_status_name((int)rec->peer->cert_status),
            rec->peer->fingerprint[0] ? rec->peer->fingerprint : "-",
            cfr_log_quote(rec->detail != NULL ? rec->detail : "", detail,
                          sizeof(detail)));
}

/* ---- maintenance and statistics ----------------------------------------- */

struct maint_ctx {
    struct vault_server *srv;
};

static int
maint_tenant(void *ctx, const char *name)
{
    struct vault_server *srv = ((struct maint_ctx *)ctx)->srv;
    struct cfr_err err;
    struct vault_maint_stats rs = {0}, gs = {0};
    struct vault_tenant *t;

    cfr_err_clear(&err);
    t = vault_store_tenant(srv->store, name, false, &err);
    if (t == NULL ||
        vault_store_retention(t, tenant_retention(srv, name), &rs, &err) != 0 ||
        vault_store_gc(t, &gs, &err) != 0) {
        atomic_fetch_add(&srv->maint_errors, 1);
        cfr_log_err(CFR_LOG_ERROR, "vault.maintenance", &err);
        if (err.code == CFR_EIO) {
            atomic_store(&srv->failed, true);
        }
        /* One tenant's trouble must not starve the others. */
        return 0;
    }
    count_maint(srv, &rs);
    count_maint(srv, &gs);
    cfr_log(CFR_LOG_INFO, "vault.maintenance",
            "tenant=%s snapshots_removed=%" PRIu64 " objects_removed=%" PRIu64
            " bytes_removed=%" PRIu64,
            name, rs.snapshots_removed, gs.objects_removed, gs.bytes_removed);
    return 0;
}

static void
run_maintenance(struct vault_server *srv)
{
    struct maint_ctx mc = {srv};
    struct cfr_err err;
    cfr_err_clear(&err);
    uint64_t purged = 0, approvals = 0;
    if (vault_store_tenants(srv->store, maint_tenant, &mc, &err) != 0) {
        atomic_fetch_add(&srv->maint_errors, 1);
        cfr_log_err(CFR_LOG_ERROR, "vault.maintenance", &err);
    }
    /* Audit records are kept audit.keep, then removed from disk. */
    if (vault_sysdb_audit_purge(srv->sysdb, &purged, &err) != 0 ||
        vault_sysdb_approval_purge(srv->sysdb, &approvals, &err) != 0) {
        atomic_fetch_add(&srv->maint_errors, 1);
        cfr_log_err(CFR_LOG_ERROR, "vault.maintenance", &err);
    } else if (purged > 0 || approvals > 0) {
        cfr_log(CFR_LOG_INFO, "vault.audit.purged",
                "records=%" PRIu64 " approvals=%" PRIu64, purged, approvals);
    }
    atomic_fetch_add(&srv->maint_runs, 1);
}

static bool
stop_requested(struct vault_server *srv)
{
    bool stop;
    pthread_mutex_lock(&srv->mu);
    stop = srv->stop_req;
    pthread_mutex_unlock(&srv->mu);
    return stop;
}

static int
scrub_tenant(void *ctx, const char *name)
{
    struct vault_server *srv = ctx;
    struct cfr_err err;
    struct vault_maint_stats ms = {0};
    struct scrub_ctx sx = {srv, name};
    struct vault_tenant *t;

    /* A scrub reads everything: a stop must not wait for the rest. */
    if (stop_requested(srv)) {
        return 1;
    }
    cfr_err_clear(&err);
    t = vault_store_tenant(srv->store, name, false, &err);
    if (t == NULL || vault_store_scrub(t, scrub_bad, &sx, &ms, &err) != 0) {
        atomic_fetch_add(&srv->maint_errors, 1);
        cfr_log_err(CFR_LOG_ERROR, "vault.scrub", &err);
        return 0;
    }
    cfr_log(ms.bad_objects > 0 ? CFR_LOG_WARN : CFR_LOG_INFO, "vault.scrub",
            "tenant=%s bad_objects=%" PRIu64, name, ms.bad_objects);
    return 0;
}

/* The scheduled scrub (scrub.interval): bad objects go to repair. */
static void
run_scrub(struct vault_server *srv)
{
    struct cfr_err err;
    cfr_err_clear(&err);
    if (vault_store_tenants(srv->store, scrub_tenant, srv, &err) < 0) {
        cfr_log_err(CFR_LOG_ERROR, "vault.scrub", &err);
    }
    atomic_fetch_add(&srv->scrub_runs, 1);
}

struct stats_ctx {
    struct vault_server *srv;
    FILE *f;
};

static int
stats_tenant(void *ctx, const char *name)
{
    struct vault_server *srv = ((struct stats_ctx *)ctx)->srv;
    FILE *f = ((struct stats_ctx *)ctx)->f;
    struct cfr_err err;
    struct vault_tenant_stats ts;
    struct vault_tenant *t = vault_store_tenant(srv->store, name, false, &err);
    if (t == NULL || vault_store_stats(t, &ts, &err) != 0) {
        return 0;
    }
    /* Tenant names are [a-z0-9._-]: safe inside a label value. */
    fprintf(f,
            "coffer_vault_tenant_objects{tenant=\"%s\"} %" PRIu64 "\n"
            "coffer_vault_tenant_object_bytes{tenant=\"%s\"} %" PRIu64 "\n"
            "coffer_vault_tenant_snapshots{tenant=\"%s\"} %" PRIu64 "\n"
            "coffer_vault_tenant_live_leases{tenant=\"%s\"} %" PRIu64 "\n",
            name, ts.objects, name, ts.object_bytes, name, ts.snapshots, name,
            ts.live_leases);
    return 0;
}

static void
counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help,
            name, name, v);
}

/*
 * The replication metrics (docs/REPLICATION.md): per tenant and peer the
 * last good round, how far behind and what was pulled; per tenant the
 * repairs. Each family's samples together, as the text format wants.
 * Tenant and peer names are [a-z0-9._-]: safe inside label values.
 */
static void
write_sync_stats(struct vault_server *srv, FILE *f)
{
    struct cfr_err err;
    struct status_list *l;
    static const struct {
        const char *name, *type, *help;
        bool own; /* from the tenant's own line, else from peer lines */
    } fam[] = {
        {"coffer_vault_sync_last_ok_timestamp_seconds", "gauge",
         "End of the last sync round with the peer that succeeded.", false},
        {"coffer_vault_sync_behind_snapshots", "gauge",
         "Snapshots the peer had that this vault lacked at the last "
         "compare.",
         false},
        {"coffer_vault_sync_pulled_bytes_total", "counter",
         "Bytes pulled from the peer.", false},
        {"coffer_vault_repairs_total", "counter",
         "Damaged objects replaced with a peer's copy.", true},
        {"coffer_vault_repair_failures_total", "counter",
         "Damaged objects no peer could repair.", true},
    };

    if (srv->sync == NULL) {
        return;
    }
    cfr_err_clear(&err);
    if ((l = status_gather(srv, NULL, &err)) == NULL) {
        cfr_log_err(CFR_LOG_WARN, "vault.stats", &err);
        return;
    }
    for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help,
                fam[k].name, fam[k].type);
        for (size_t i = 0; i < l->n; i++) {
            const struct vault_sync_status *st = &l->v[i];
            bool own = st->peer[0] == '\0';
            if (own != fam[k].own) {
                continue;
            }
            if (own) {
                fprintf(f, "%s{tenant=\"%s\"} %" PRIu64 "\n", fam[k].name,
                        st->tenant, k == 3 ? st->repairs : st->repair_failures);
                continue;
            }
            fprintf(f, "%s{tenant=\"%s\",peer=\"%s\"} ", fam[k].name,
                    st->tenant, st->peer);
            if (k == 0) {
                fprintf(f, "%" PRId64 "\n", st->last_ok_ms / 1000);
            } else {
                fprintf(f, "%" PRIu64 "\n",
                        k == 1 ? st->behind : st->bytes_pulled);
            }
        }
    }
    status_free(l);
}

/*
 * Writes the Prometheus textfile atomically (temporary file, rename), so a
 * collector never reads half a file.
 */
static void
write_stats(struct vault_server *srv, bool up)
{
    static const char *const outcomes[] = {"ok", "error", "denied"};
    char tmp[4096];
    FILE *f;
    struct stats_ctx sc;
    struct cfr_ratelimit_stats rls;
    struct cfr_err err;

    if (srv->cfg->stats_file == NULL) {
        return;
    }
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", srv->cfg->stats_file) >=
        (int)sizeof(tmp)) {
        return;
    }
    if ((f = fopen(tmp, "w")) == NULL) {
        cfr_log(CFR_LOG_WARN, "vault.stats", "path=%s error=open_failed", tmp);
        return;
    }
    fprintf(f, "# HELP coffer_vault_up 1 while the vault serves.\n"
               "# TYPE coffer_vault_up gauge\n");
    fprintf(f, "coffer_vault_up %d\n", up ? 1 : 0);
    fprintf(f,
            "# TYPE coffer_vault_start_time_seconds gauge\n"
            "coffer_vault_start_time_seconds %" PRId64 "\n",
            srv->start_ms / 1000);
    fprintf(f, "# TYPE coffer_vault_failed gauge\ncoffer_vault_failed %d\n",
            atomic_load(&srv->failed) ? 1 : 0);
    fprintf(f, "# HELP coffer_vault_calls_total Calls by method and "
               "outcome.\n# TYPE coffer_vault_calls_total counter\n");
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        for (int o = 0; o < OUT_COUNT; o++) {
            fprintf(f,
                    "coffer_vault_calls_total{method=\"%s\",outcome=\"%s\"} "
                    "%" PRIu64 "\n",
                    vault_authz_name((enum vault_method)m), outcomes[o],
                    (uint64_t)atomic_load(&srv->calls[m][o]));
        }
    }
    counter(f, "coffer_vault_unknown_method_total", "Calls to unknown paths.",
            atomic_load(&srv->unknown_method));
    counter(f, "coffer_vault_overloaded_total",
            "Calls refused at the concurrency limit.",
            atomic_load(&srv->overloaded));
    counter(f, "coffer_vault_unauthenticated_total",
            "Calls refused for their client certificate or its identity.",
            atomic_load(&srv->unauthenticated));
    counter(f, "coffer_vault_tls_handshake_failures_total",
            "TLS handshakes that failed (old TLS version, no shared "
            "cipher, not TLS).",
            srv->rpc != NULL ? cfr_rpc_server_tls_failures(srv->rpc) : 0);
    counter(f, "coffer_vault_put_objects_total", "Objects stored.",
            atomic_load(&srv->put_objects));
    counter(f, "coffer_vault_put_bytes_total", "Bytes stored.",
            atomic_load(&srv->put_bytes));
    counter(f, "coffer_vault_get_objects_total", "Objects served.",
            atomic_load(&srv->get_objects));
    counter(f, "coffer_vault_get_bytes_total", "Bytes served.",
            atomic_load(&srv->get_bytes));
    counter(f, "coffer_vault_commits_total", "Snapshots committed.",
            atomic_load(&srv->commits));
    counter(f, "coffer_vault_corrupt_reads_total",
            "Objects that failed their checksum on read.",
            atomic_load(&srv->corrupt_reads));
    counter(f, "coffer_vault_maintenance_runs_total",
            "Scheduled retention and GC passes.",
            atomic_load(&srv->maint_runs));
    counter(f, "coffer_vault_maintenance_errors_total",
            "Tenants whose scheduled pass failed.",
            atomic_load(&srv->maint_errors));
    counter(f, "coffer_vault_snapshots_removed_total",
            "Snapshots dropped by retention.",
            atomic_load(&srv->snaps_removed));
    counter(f, "coffer_vault_objects_removed_total", "Objects deleted by GC.",
            atomic_load(&srv->objs_removed));
    counter(f, "coffer_vault_bytes_removed_total", "Bytes deleted by GC.",
            atomic_load(&srv->bytes_removed));
    if (srv->notify != NULL) {
        struct cfr_notify_stats ns;
        cfr_notify_stats(srv->notify, &ns);
        counter(f, "coffer_vault_notifications_posted_total",
                "Security notifications queued.", ns.posted);
        counter(f, "coffer_vault_notifications_dropped_total",
                "Notifications refused: queue full.", ns.dropped);
        counter(f, "coffer_vault_notifications_failed_total",
                "Deliveries given up after retries.", ns.failed);
    }
    cfr_ratelimit_stats(srv->rl, &rls);
    counter(f, "coffer_vault_lockouts_total",
            "Lockouts started (identity or address).", rls.lockouts);
    counter(f, "coffer_vault_locked_refusals_total",
            "Calls refused while locked out.", rls.refused);
    counter(f, "coffer_vault_failures_dropped_total",
            "Denials past the evaluation cap, not evaluated.", rls.dropped);
    counter(f, "coffer_vault_scrub_runs_total", "Scheduled scrub passes.",
            atomic_load(&srv->scrub_runs));
    counter(f, "coffer_vault_scrub_bad_objects_total",
            "Objects a scrub found failing their checksum.",
            atomic_load(&srv->scrub_bad_objects));
    counter(f, "coffer_vault_sync_served_objects_total",
            "Objects served to peer vaults (SyncGet).",
            atomic_load(&srv->sync_served_objects));
    counter(f, "coffer_vault_sync_served_bytes_total",
            "Bytes served to peer vaults (SyncGet).",
            atomic_load(&srv->sync_served_bytes));
    write_sync_stats(srv, f);
    sc.srv = srv;
    sc.f = f;
    cfr_err_clear(&err);
    (void)vault_store_tenants(srv->store, stats_tenant, &sc, &err);
    if (fclose(f) != 0 || rename(tmp, srv->cfg->stats_file) != 0) {
        cfr_log(CFR_LOG_WARN, "vault.stats", "path=%s error=write_failed",
                srv->cfg->stats_file);
        (void)remove(tmp);
    }
}

static struct timespec
deadline_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *
maint_main(void *arg)
{
    struct vault_server *srv = arg;
    const struct vault_config *cfg = srv->cfg;
    int64_t now = cfr_clock_mono_ms(srv->clock);
    int64_t next_maint = cfg->schedule_ms > 0 ? now + cfg->schedule_ms : -1;
    int64_t next_stats = now;
    int64_t next_scrub =
        cfg->scrub_interval_ms > 0 ? now + cfg->scrub_interval_ms : -1;

    for (;;) {
        int64_t wait;
        bool stop;
        now = cfr_clock_mono_ms(srv->clock);
        if (cfg->stats_file != NULL && now >= next_stats) {
            write_stats(srv, true);
            next_stats = now + cfg->stats_interval_ms;
        }
        if (next_maint >= 0 && now >= next_maint) {
            run_maintenance(srv);
            next_maint = cfr_clock_mono_ms(srv->clock) + cfg->schedule_ms;
        }
        if (next_scrub >= 0 && cfr_clock_mono_ms(srv->clock) >= next_scrub) {
            run_scrub(srv);
            next_scrub = cfr_clock_mono_ms(srv->clock) + cfg->scrub_interval_ms;
        }
        now = cfr_clock_mono_ms(srv->clock);
        wait = cfg->stats_file != NULL ? next_stats - now : INT64_C(3600000);
        if (next_maint >= 0 && next_maint - now < wait) {
            wait = next_maint - now;
        }
        if (next_scrub >= 0 && next_scrub - now < wait) {
            wait = next_scrub - now;
        }
        if (wait < 1) {
            wait = 1;
        }
        struct timespec dl = deadline_after(wait);
        pthread_mutex_lock(&srv->mu);
        while (!srv->stop_req) {
            if (pthread_cond_timedwait(&srv->cv, &srv->mu, &dl) == ETIMEDOUT) {
                break;
            }
        }
        stop = srv->stop_req;
        pthread_mutex_unlock(&srv->mu);
        if (stop) {
            break;
        }
    }
    return NULL;
}

/* ---- registry gate and new identities ----------------------------------- */

/*
 * The set of (tenant, fingerprint) pairs already recorded as seen, so
 * that only a certificate's first call pays for the synced sysdb write.
 * Open addressing, never deleted from; once it is SEEN_CACHE_SLOTS * 3/4
 * full it stops growing and the rest simply ask sysdb each time (still
 * correct, only slower).
 */
#define SEEN_CACHE_SLOTS 4096
#define SEEN_KEY_MAX     (CFR_RPC_TENANT_MAX + CFR_RPC_FINGERPRINT_LEN + 2)

struct seen_cache {
    pthread_mutex_t mu;
    size_t used;
    char (*slots)[SEEN_KEY_MAX]; /* "" = free */
};

static uint64_t
seen_hash(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603); /* FNV-1a */
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    }
    return h;
}

/* True when key is cached; with insert, adds it when there is room. */
static bool
seen_cached(struct seen_cache *sc, const char *key, bool insert)
{
    bool found = false;
    if (sc->slots == NULL) {
        return false;
    }
    pthread_mutex_lock(&sc->mu);
    size_t i = (size_t)(seen_hash(key) % SEEN_CACHE_SLOTS);
    for (size_t probes = 0; probes < SEEN_CACHE_SLOTS; probes++) {
        char *slot = sc->slots[i];
        if (slot[0] == '\0') {
            if (insert && sc->used < SEEN_CACHE_SLOTS / 4 * 3) {
                snprintf(slot, SEEN_KEY_MAX, "%s", key);
                sc->used++;
            }
            break;
        }
        if (strcmp(slot, key) == 0) {
            found = true;
            break;
        }
        i = (i + 1) % SEEN_CACHE_SLOTS;
    }
    pthread_mutex_unlock(&sc->mu);
    return found;
}

/*
 * The first call of an agent certificate for its tenant: recorded in
 * sysdb (synced), logged and notified, once per (tenant, fingerprint).
 * A stolen or newly issued agent key shows up here. Failing to record it
 * does not fail the call (the next call tries again), but is logged.
 */
static void
note_identity(struct call *c)
{
    struct vault_server *srv = c->srv;
    const struct cfr_rpc_peer *p = c->peer;
    char key[SEEN_KEY_MAX], qu[CFR_RPC_NAME_MAX + 8], qc[CFR_RPC_NAME_MAX + 8];
    char qa[CFR_RPC_ADDR_MAX + 8];
    struct cfr_err err;
    bool is_new = false;

    if (c->role != VAULT_ROLE_AGENT || p->fingerprint[0] == '\0') {
        return; /* until the transport fills fingerprints, nothing to say */
    }
    snprintf(key, sizeof(key), "%s/%s", p->tenant, p->fingerprint);
    if (seen_cached(srv->seen, key, false)) {
        return;
    }
    cfr_err_clear(&err);
    if (vault_sysdb_seen_mark(srv->sysdb, p->tenant, p->fingerprint, &is_new,
                              &err) != 0) {
        cfr_log_err(CFR_LOG_WARN, "vault.identity.seen", &err);
        if (err.code == CFR_EIO) {
            atomic_store(&srv->failed, true);
        }
        return;
    }
    (void)seen_cached(srv->seen, key, true);
    if (!is_new) {
        return;
    }
    cfr_log(CFR_LOG_WARN, "vault.identity.new",
            "tenant=%s identity=%s cn=%s fingerprint=%s addr=%s", p->tenant,
            cfr_log_quote(p->uri, qu, sizeof(qu)),
            cfr_log_quote(p->cn, qc, sizeof(qc)), p->fingerprint,
            cfr_log_quote(p->addr, qa, sizeof(qa)));
    struct cfr_notify_field f[] = {{"identity", p->uri},
                                   {"cn", p->cn},
                                   {"fingerprint", p->fingerprint},
                                   {"addr", p->addr}};
    notify_event(srv, "vault.identity.new", p->tenant, true, f,
                 sizeof(f) / sizeof(f[0]));
}

/*
 * The registry gate, before every handler: a tenant identity acts only
 * for a registered tenant (else PERMISSION_DENIED, counted towards the
 * lockout), and touches data only where the tenant's regions allow this
 * vault. Returns true to run the handler; otherwise the call is answered.
 * Operators pass: the role matrix gives them System and Health only.
 */
static bool
gate(struct call *c, enum vault_method m)
{
    struct vault_server *srv = c->srv;
    struct vault_sysdb_tenant *t = NULL;
    char q[CFR_RPC_NAME_MAX + 8];
    bool pass = false;
    int rc;

    if (c->role == VAULT_ROLE_OPERATOR || !vault_authz_needs_registration(m)) {
        return true;
    }
    /*
     * A peer vault has no tenant of its own: its Sync request names one,
     * and the handler checks peer, registration and both regions
     * (sync_check). The role matrix let only role vault get here.
     */
    if (c->role == VAULT_ROLE_VAULT && vault_authz_tenant_in_request(m)) {
        return true;
    }
    if ((t = cfr_malloc(sizeof(*t))) == NULL) {
        finish_status(c, CFR_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = vault_sysdb_tenant_get(srv->sysdb, c->peer->tenant, t, &c->err);
    if (rc == CFR_ENOTFOUND || rc == CFR_EINVAL) {
        cfr_log(CFR_LOG_WARN, "vault.unregistered",
                "tenant=%s identity=%s method=%s", c->peer->tenant,
                cfr_log_quote(c->peer->uri, q, sizeof(q)), vault_authz_name(m));
        count_denial(srv, c->peer);
        finish_status(c, CFR_RPC_PERMISSION_DENIED, "tenant not registered");
        goto out;
    }
    if (rc != 0) {
        /* Fail closed: an unreadable registry admits nobody. */
        finish_code(c);
        goto out;
    }
    if (vault_authz_is_data(m) && t->n_regions > 0) {
        bool here = false;
        for (size_t i = 0; i < t->n_regions && !here; i++) {
            here = strcmp(t->regions[i], srv->cfg->region) == 0;
        }
        if (!here) {
            char msg[VAULT_SYSDB_NAME_MAX + VAULT_SYSDB_REGION_MAX + 64];
            snprintf(msg, sizeof(msg), "tenant %s is not allowed in region %s",
                     t->name, srv->cfg->region);
            finish_status(c, CFR_RPC_FAILED_PRECONDITION, msg);
            goto out;
        }
    }
    note_identity(c);
    pass = true;
out:
    cfr_free(t);
    return pass;
}

static void h_system(struct cfr_rpc_ctx *ctx, void *arg);

static cfr_rpc_handler_fn *const handlers[VAULT_M_COUNT] = {
    [VAULT_M_MISSING] = h_missing,
    [VAULT_M_OPEN_LEASE] = h_open_lease,
    [VAULT_M_PUT_OBJECTS] = h_put_objects,
    [VAULT_M_GET_OBJECTS] = h_get_objects,
    [VAULT_M_COMMIT] = h_commit,
    [VAULT_M_LIST_SNAPSHOTS] = h_list_snapshots,
    [VAULT_M_ADMIN] = h_admin,
    [VAULT_M_AUDIT] = h_audit,
    [VAULT_M_HEALTH] = h_health,
    [VAULT_M_SYSTEM] = h_system,
    [VAULT_M_SYNC_DIGEST] = h_sync_digest,
    [VAULT_M_SYNC_LIST] = h_sync_list,
    [VAULT_M_SYNC_GET] = h_sync_get,
};

/* Every method enters here: the registry gate, then its handler. */
static void
h_gated(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct call c;
    enum vault_method m = vault_authz_method(cfr_rpc_ctx_method(ctx));
    call_init(&c, ctx, arg);
    if (m >= VAULT_M_COUNT) {
        finish_status(&c, CFR_RPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    if (gate(&c, m)) {
        handlers[m](ctx, arg);
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

/*
 * What the replication engine reports (vault/sync.h), on its thread:
 * logged, and notified like other security events, to the tenant's own
 * targets too. A damaged object and a failing peer both mean a copy is
 * missing somewhere.
 */
static void
sync_event(void *ctx, enum vault_sync_event ev, const char *tenant,
           const char *peer, const char *detail)
{
    struct vault_server *srv = ctx;
    const char *name;
    char q[CFR_ERR_MSG_MAX + 8];
    enum cfr_log_level level = CFR_LOG_WARN;
    switch (ev) {
    case VAULT_SYNC_EV_REPAIRED:
        name = "vault.repair";
        break;
    case VAULT_SYNC_EV_UNREPAIRED:
        name = "vault.repair_failed";
        level = CFR_LOG_ERROR;
        break;
    case VAULT_SYNC_EV_PEER_FAILED:
        name = "vault.sync.peer_failed";
        break;
    default:
        return;
    }
    cfr_log(level, name, "tenant=%s peer=%s detail=%s",
            tenant != NULL ? tenant : "-", peer != NULL ? peer : "-",
            cfr_log_quote(detail != NULL ? detail : "", q, sizeof(q)));
    {
        struct cfr_notify_field f[] = {
            {"vault", srv->cfg->name != NULL ? srv->cfg->name : "-"},
            {"peer", peer != NULL ? peer : "-"},
            {"detail", detail != NULL ? detail : ""}};
        notify_event(srv, name, tenant, tenant != NULL, f,
                     sizeof(f) / sizeof(f[0]));
    }
}

/*
 * The replication engine, when peers are configured: its TLS material is
 * read here as PEM text and wiped once the engine has its copy.
 */
static int
sync_new(struct vault_server *srv, struct cfr_err *err)
{
    const struct vault_config *cfg = srv->cfg;
    char *cert = NULL, *key = NULL, *ca = NULL;
    struct vault_sync_opts so;
    int rc;

    if (cfg->n_peers == 0) {
        return 0;
    }
    if ((cert = cfr_cfg_read_file(cfg->sync_tls_cert, "sync.cert", err)) ==
            NULL ||
        (key = cfr_cfg_read_file(cfg->sync_tls_key, "sync.key", err)) == NULL ||
        (ca = cfr_cfg_read_file(cfg->sync_tls_ca, "sync.ca", err)) == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
        goto out;
    }
    memset(&so, 0, sizeof(so));
    so.store = srv->store;
    so.sysdb = srv->sysdb;
    so.clock = srv->clock;
    so.name = cfg->name;
    so.region = cfg->region;
    so.peers = cfg->peers;
    so.n_peers = cfg->n_peers;
    so.tls_cert = cert;
    so.tls_key = key;
    so.tls_ca = ca;
    so.interval_ms = cfg->sync_interval_ms;
    so.bandwidth_bps = cfg->sync_bandwidth;
    so.timeout_ms = cfg->sync_timeout_ms;
    so.tombstone_keep_ms = cfg->tombstone_keep_ms;
    so.max_msg = cfg->max_msg;
    so.on_event = sync_event;
    so.event_ctx = srv;
    rc = vault_sync_new(&so, &srv->sync, err);
out:
    cfr_cfg_free_file(cert);
    cfr_cfg_free_file(key);
    cfr_cfg_free_file(ca);
    return rc;
}

void
vault_server_relay_set(struct vault_server_relay *r, struct vault_server *srv)
{
    atomic_store(&r->srv, srv);
}

void
vault_server_on_corrupt(void *ctx, const char *tenant,
                        const uint8_t id[VAULT_ID_LEN])
{
    struct vault_server_relay *r = ctx;
    struct vault_server *srv = r != NULL ? atomic_load(&r->srv) : NULL;
    if (srv != NULL && srv->sync != NULL) {
        vault_sync_report_bad(srv->sync, tenant, id);
    }
}

static enum cfr_rpc_kind
kind_of(enum vault_method m)
{
    if (m == VAULT_M_PUT_OBJECTS) {
        return CFR_RPC_KIND_CLIENT_STREAM;
    }
    if (m == VAULT_M_GET_OBJECTS || m == VAULT_M_SYNC_LIST ||
        m == VAULT_M_SYNC_GET) {
        return CFR_RPC_KIND_SERVER_STREAM;
    }
    return CFR_RPC_KIND_UNARY;
}

int
vault_server_new(const struct vault_server_opts *opts,
                 struct vault_server **srv_r, struct cfr_err *err)
{
    struct vault_server *srv = NULL;
    struct cfr_rpc_server_opts ro;
    pthread_condattr_t ca;
    int rc = 0;

    *srv_r = NULL;
    srv = cfr_calloc(1, sizeof(*srv));
    if (srv == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    srv->cfg = opts->cfg;
    srv->store = opts->store;
    srv->sysdb = opts->sysdb;
    srv->notify = opts->notify;
    srv->clock = opts->clock;
    srv->start_ms = cfr_clock_now_ms(opts->clock);
    atomic_init(&srv->failed, false);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cv, &ca);
    pthread_condattr_destroy(&ca);
    srv->seen = cfr_calloc(1, sizeof(*srv->seen));
    if (srv->seen == NULL ||
        (srv->seen->slots =
             cfr_calloc(SEEN_CACHE_SLOTS, sizeof(*srv->seen->slots))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&srv->seen->mu, NULL);

    memset(&ro, 0, sizeof(ro));
    ro.listen_addr = opts->cfg->listen;
    ro.cert_pem = opts->cert_pem;
    ro.key_pem = opts->key_pem;
    ro.client_ca_pem = opts->client_ca_pem;
    ro.max_msg = opts->cfg->max_msg;
    ro.max_calls = opts->cfg->max_calls;
    ro.workers = opts->cfg->workers;
    ro.authz = authz_hook;
    ro.authz_ctx = srv;
    ro.audit = audit_hook;
    ro.audit_ctx = srv;
    {
        struct cfr_ratelimit_opts rlo = {
            .max_failures = opts->cfg->max_failures,
            .window_ms = opts->cfg->failure_window_ms,
            .lockout_ms = opts->cfg->lockout_ms,
        };
        if ((srv->rl = cfr_ratelimit_new(&rlo, opts->clock, err)) == NULL) {
            rc = err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
            goto out;
        }
    }
    if ((rc = sync_new(srv, err)) != 0 ||
        (rc = cfr_rpc_server_new(&ro, &srv->rpc, err)) != 0) {
        goto out;
    }
    srv->port = cfr_rpc_server_port(srv->rpc);
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        if ((rc = cfr_rpc_server_add_method(
                 srv->rpc, vault_authz_path((enum vault_method)m),
                 kind_of((enum vault_method)m), h_gated, srv, err)) != 0) {
            goto out;
        }
    }
    *srv_r = srv;
    srv = NULL;
out:
    vault_server_free(srv);
    return rc;
}

int
vault_server_port(const struct vault_server *srv)
{
    return srv->port;
}

int
vault_server_start(struct vault_server *srv, struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_rpc_server_start(srv->rpc, err)) != 0) {
        goto out;
    }
    srv->started = true;
    if (pthread_create(&srv->maint, NULL, maint_main, srv) != 0) {
        rc = CFR_ERR(err, CFR_EIO, "cannot start the maintenance thread");
        goto out;
    }
    srv->maint_running = true;
    /* Rounds start once this vault serves: peers pull from it too. */
    if (srv->sync != NULL) {
        if ((rc = vault_sync_start(srv->sync, err)) != 0) {
            goto out;
        }
        srv->sync_running = true;
        cfr_log(CFR_LOG_INFO, "vault.sync.start",
                "name=%s peers=%zu interval_ms=%lld bandwidth=%llu",
                srv->cfg->name, srv->cfg->n_peers,
                (long long)srv->cfg->sync_interval_ms,
                (unsigned long long)srv->cfg->sync_bandwidth);
    }
out:
    return rc;
}

bool
vault_server_failed(const struct vault_server *srv)
{
    return atomic_load(&((struct vault_server *)srv)->failed) ||
           vault_sysdb_failed(((struct vault_server *)srv)->sysdb);
}

void
vault_server_stop(struct vault_server *srv, int64_t grace_ms)
{
    if (srv == NULL || srv->stopped) {
        return;
    }
    srv->stopped = true;
    if (srv->rpc != NULL) {
        cfr_rpc_server_stop(srv->rpc, grace_ms);
    }
    /* Before the store closes (the owner closes it after the server). */
    if (srv->sync_running) {
        vault_sync_stop(srv->sync);
        srv->sync_running = false;
    }
    if (srv->maint_running) {
        pthread_mutex_lock(&srv->mu);
        srv->stop_req = true;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        pthread_join(srv->maint, NULL);
        srv->maint_running = false;
    }
    if (srv->started) {
        write_stats(srv, false);
    }
}

void
vault_server_free(struct vault_server *srv)
{
    if (srv == NULL) {
        return;
    }
    vault_server_stop(srv, 0);
    vault_sync_free(srv->sync);
    cfr_rpc_server_free(srv->rpc);
    cfr_ratelimit_free(srv->rl);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    if (srv->seen != NULL) {
        if (srv->seen->slots != NULL) {
            pthread_mutex_destroy(&srv->seen->mu);
        }
        cfr_free(srv->seen->slots);
        cfr_free(srv->seen);
    }
    cfr_free(srv);
}
