/*
 * fetch.c - the restore side's reads from vaults (fetch.h).
 *
 * Invariants:
 *  1. Every object handed to a callback was asked for in that batch and is
 *     handed over once: a vault that sends an unrequested ID, a wrong-sized
 *     ID or the same ID twice is corrupt, not trusted.
 *  2. Memory does not grow with the batch: one stream message and its
 *     decoded copy at a time (the vault sends a few MiB per message).
 *  3. What one vault lacks or fails to send is asked of the next vault in
 *     the list, for exactly the IDs still outstanding; an error from the
 *     caller's callback (a chunk that does not open) or a vault breaking
 *     invariant 1 stops the batch at once, with that error.
 *  4. Nothing here logs object bytes; IDs are opaque and may be logged.
 */
#include "fetch.h"

#include <stdio.h>  /* snprintf */
#include <stdlib.h> /* qsort */
#include <string.h> /* memcmp, memcpy */

#include "log.h" /* cfr_log */
#include "mem.h" /* cfr_malloc */
#include "rpc.h" /* the client */

#define TIMEOUT_DEFAULT_MS 120000
#define HEALTH_TIMEOUT_MS  10000
#define M_HEALTH           "/coffer.v1.Vault/Health"
#define M_LIST             "/coffer.v1.Vault/ListSnapshots"
#define M_GET              "/coffer.v1.Vault/GetObjects"
/* A ListSnapshots answer: ~200 bytes a record plus a header. */
#define LIST_RESP_MAX ((size_t)64 << 20)

struct vault {
    char target[256];
    struct cfr_rpc_client *cli;
};

struct restore_fetcher {
    struct vault v[RESTORE_FETCH_VAULTS_MAX];
    size_t n;
    size_t cur;
    int64_t timeout_ms;
    size_t max_msg;
};

static int
health(struct vault *v, struct cfr_err *err)
{
    struct cfr_buf resp;
    int st, rc;
    cfr_buf_init(&resp, 1u << 16);
    rc = cfr_rpc_unary(v->cli, M_HEALTH, "", 0, HEALTH_TIMEOUT_MS, &resp, &st,
                       err);
    cfr_buf_fini(&resp);
    return rc;
}

int
restore_fetcher_new(const struct restore_fetch_opts *opts,
                    struct restore_fetcher **f_r, struct cfr_err *err)
{
    struct restore_fetcher *f = NULL;
    char why[CFR_ERR_MSG_MAX] = "";
    size_t used = 0;
    int rc = 0, first_rc = 0;
    bool found = false;

    *f_r = NULL;
    if (opts->n_targets == 0 || opts->n_targets > RESTORE_FETCH_VAULTS_MAX ||
        opts->ca_pem == NULL || opts->cert_pem == NULL ||
        opts->key_pem == NULL) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "fetch: 1..%d vaults and TLS material are needed",
                     RESTORE_FETCH_VAULTS_MAX);
        goto out;
    }
    if ((f = cfr_calloc(1, sizeof(*f))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    f->timeout_ms =
        opts->timeout_ms > 0 ? opts->timeout_ms : TIMEOUT_DEFAULT_MS;
    f->max_msg = opts->max_msg > 0 ? opts->max_msg : RESTORE_FETCH_MSG_MAX;
    for (size_t i = 0; i < opts->n_targets; i++) {
        struct cfr_rpc_client_opts co;
        struct vault *v = &f->v[i];
        memset(&co, 0, sizeof(co));
        if (snprintf(v->target, sizeof(v->target), "%s", opts->targets[i]) >=
            (int)sizeof(v->target)) {
            rc = CFR_ERR(err, CFR_EINVAL, "fetch: vault address too long");
            goto out;
        }
        co.target = v->target;
        co.target_name = opts->target_name;
        co.ca_pem = opts->ca_pem;
        co.cert_pem = opts->cert_pem;
        co.key_pem = opts->key_pem;
        co.max_msg = f->max_msg;
        if ((rc = cfr_rpc_client_new(&co, &v->cli, err)) != 0) {
            goto out;
        }
        f->n++;
    }
    /* The first vault that answers serves; the others stay as fallbacks. */
    for (size_t i = 0; i < f->n && !found; i++) {
        struct cfr_err e;
        cfr_err_clear(&e);
        if ((rc = health(&f->v[i], &e)) == 0) {
            f->cur = i;
            found = true;
            break;
        }
        if (first_rc == 0) {
            first_rc = rc;
        }
        cfr_log(CFR_LOG_WARN, "restore.vault_down", "vault=%s code=%s",
                f->v[i].target, cfr_code_name(rc));
        if (used < sizeof(why)) {
            int k = snprintf(why + used, sizeof(why) - used, "%s%s",
                             used > 0 ? "; " : "", e.msg);
            used += k > 0 ? (size_t)k : 0;
        }
    }
    if (!found) {
        rc = CFR_ERR(err,
                     first_rc == CFR_EDENIED || first_rc == CFR_EAUTH
                         ? first_rc
                         : CFR_EUNAVAIL,
                     "no vault answered: %s", why);
        goto out;
    }
    rc = 0;
    *f_r = f;
    f = NULL;
out:
    restore_fetcher_free(f);
    return rc;
}

void
restore_fetcher_free(struct restore_fetcher *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->n; i++) {
        cfr_rpc_client_free(f->v[i].cli);
    }
    cfr_free(f);
}

const char *
restore_fetcher_current(const struct restore_fetcher *f)
{
    return f->v[f->cur].target;
}

int
restore_fetcher_list(struct restore_fetcher *f, const uint8_t *mailbox_id,
                     bool with_headers,
                     Coffer__V1__ListSnapshotsResponse **resp_r,
                     struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    struct cfr_buf resp;
    uint8_t *packed = NULL;
    size_t len;
    int st, rc;

    *resp_r = NULL;
    cfr_buf_init(&resp, LIST_RESP_MAX);
    if (mailbox_id != NULL) {
        req.mailbox_id.data = (uint8_t *)mailbox_id;
        req.mailbox_id.len = RESTORE_FETCH_ID_LEN;
    }
    req.with_headers = with_headers;
    len = coffer__v1__list_snapshots_request__get_packed_size(&req);
    if ((packed = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    coffer__v1__list_snapshots_request__pack(&req, packed);
    if ((rc = cfr_rpc_unary(f->v[f->cur].cli, M_LIST, packed, len,
                            f->timeout_ms, &resp, &st, err)) != 0) {
        goto out;
    }
    *resp_r =
        coffer__v1__list_snapshots_response__unpack(NULL, resp.len, resp.data);
    if (*resp_r == NULL) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "vault %s: ListSnapshots answer does not decode",
                     f->v[f->cur].target);
        goto out;
    }
    for (size_t i = 0; i < (*resp_r)->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *r = (*resp_r)->snapshots[i];
        if (r->header_id.len != RESTORE_FETCH_ID_LEN ||
            r->mailbox_id.len != RESTORE_FETCH_ID_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "vault %s: snapshot record with a malformed ID",
                         f->v[f->cur].target);
            protobuf_c_message_free_unpacked(&(*resp_r)->base, NULL);
            *resp_r = NULL;
            goto out;
        }
    }
out:
    cfr_free(packed);
    cfr_buf_fini(&resp);
    return rc;
}

/* ---- GetObjects ------------------------------------------------------- */

/* An ID and its place in the batch, sorted by ID for lookups. */
struct pos {
    uint8_t id[RESTORE_FETCH_ID_LEN];
    size_t at;
};

/* The batch being served. */
struct batch {
    const uint8_t *ids;
    size_t n;
    struct pos *order;
    bool *got;
    size_t n_got;
};

static int
cmp_pos(const void *a, const void *b)
{
    return memcmp(((const struct pos *)a)->id, ((const struct pos *)b)->id,
                  RESTORE_FETCH_ID_LEN);
}

/* Index of id in the batch, or n. Binary search over order. */
static size_t
batch_find(const struct batch *b, const uint8_t *id)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(b->order[mid].id, id, RESTORE_FETCH_ID_LEN);
        if (c == 0) {
            return b->order[mid].at;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return b->n;
}

static char *
hex32(const uint8_t *id, char out[65])
{
    return cfr_hex_encode(id, RESTORE_FETCH_ID_LEN, out);
}

/*
 * One GetObjects stream to vault v for the IDs of b not yet received.
 * *final_r tells an error that ends the batch (the callback's, or a vault
 * breaking the protocol: it is not trusted for the rest either) from a
 * failed or short answer, for which the next vault may do better.
 */
static int
fetch_from(struct restore_fetcher *f, struct vault *v, struct batch *b,
           restore_fetch_fn *fn, void *ctx, bool *final_r, struct cfr_err *err)
{
    Coffer__V1__GetObjectsRequest req = COFFER__V1__GET_OBJECTS_REQUEST__INIT;
    ProtobufCBinaryData *want = NULL;
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf msg;
    uint8_t *packed = NULL;
    size_t len, k = 0;
    int rc = 0, st;

    cfr_buf_init(&msg, f->max_msg);
    if ((want = cfr_calloc(b->n + 1, sizeof(*want))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (!b->got[i]) {
            want[k].data = (uint8_t *)b->ids + i * RESTORE_FETCH_ID_LEN;
            want[k].len = RESTORE_FETCH_ID_LEN;
            k++;
        }
    }
    req.ids = want;
    req.n_ids = k;
    len = coffer__v1__get_objects_request__get_packed_size(&req);
    if ((packed = cfr_malloc(len + 1)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    coffer__v1__get_objects_request__pack(&req, packed);
    if ((rc = cfr_rpc_sstream_open(v->cli, M_GET, packed, len, f->timeout_ms,
                                   &call, err)) != 0) {
        goto out;
    }
    for (;;) {
        Coffer__V1__GetObjectsResponse *r;
        rc = cfr_rpc_sstream_next(call, &msg, &st, err);
        if (rc <= 0) {
            break; /* 0: clean end; < 0: the vault's error */
        }
        r = coffer__v1__get_objects_response__unpack(NULL, msg.len, msg.data);
        if (r == NULL) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "vault %s: GetObjects message does not decode",
                         v->target);
            *final_r = true;
            break;
        }
        for (size_t i = 0; i < r->n_objects && rc >= 0; i++) {
            const Coffer__V1__Object *o = r->objects[i];
            size_t at = o->id.len == RESTORE_FETCH_ID_LEN
                            ? batch_find(b, o->id.data)
                            : b->n;
            if (at == b->n || b->got[at]) {
                char hex[65];
                rc = CFR_ERR(
                    err, CFR_ECORRUPT,
                    "vault %s sent object %s unasked or twice", v->target,
                    o->id.len == RESTORE_FETCH_ID_LEN ? hex32(o->id.data, hex)
                                                      : "(malformed ID)");
                *final_r = true;
                break;
            }
            b->got[at] = true;
            b->n_got++;
            if ((rc = fn(ctx, o->id.data, (int)o->kind, o->data.data,
                         o->data.len, err)) != 0) {
                *final_r = true;
            }
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (rc < 0) {
            break;
        }
    }
out:
    cfr_rpc_call_free(call);
    cfr_free(packed);
    cfr_free(want);
    cfr_buf_fini(&msg);
    return rc < 0 ? rc : 0;
}

int
restore_fetcher_get(struct restore_fetcher *f, const uint8_t *ids, size_t n,
                    restore_fetch_fn *fn, void *ctx, struct cfr_err *err)
{
    struct batch b;
    int rc = 0, vault_rc = 0;
    struct cfr_err vault_err;

    memset(&b, 0, sizeof(b));
    cfr_err_clear(&vault_err);
    if (n == 0 || n > RESTORE_FETCH_IDS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "fetch: %zu IDs in one batch", n);
    }
    b.ids = ids;
    b.n = n;
    b.order = cfr_calloc(n, sizeof(*b.order));
    b.got = cfr_calloc(n, sizeof(*b.got));
    if (b.order == NULL || b.got == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "fetch: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(b.order[i].id, ids + i * RESTORE_FETCH_ID_LEN,
               RESTORE_FETCH_ID_LEN);
        b.order[i].at = i;
    }
    qsort(b.order, n, sizeof(*b.order), cmp_pos);
    for (size_t i = 1; i < n; i++) {
        if (memcmp(b.order[i].id, b.order[i - 1].id, RESTORE_FETCH_ID_LEN) ==
            0) {
            rc = CFR_ERR(err, CFR_EINVAL, "fetch: an ID twice in one batch");
            goto out;
        }
    }
    /* The current vault first, then the others in list order. */
    for (size_t t = 0; t < f->n && b.n_got < n; t++) {
        struct vault *v = &f->v[(f->cur + t) % f->n];
        bool final = false;
        struct cfr_err e;
        cfr_err_clear(&e);
        rc = fetch_from(f, v, &b, fn, ctx, &final, &e);
        if (final) {
            if (err != NULL) {
                *err = e;
            }
            goto out;
        }
        if (rc != 0) {
            cfr_log(CFR_LOG_WARN, "restore.fetch_failed", "vault=%s code=%s",
                    v->target, cfr_code_name(rc));
            if (vault_rc == 0) {
                vault_rc = rc;
                vault_err = e;
            }
        }
        if (b.n_got < n && t + 1 < f->n) {
            cfr_log(CFR_LOG_WARN, "restore.fallback",
                    "vault=%s missing=%zu next=%s", v->target, n - b.n_got,
                    f->v[(f->cur + t + 1) % f->n].target);
        }
    }
    rc = 0;
    if (b.n_got < n) {
        if (vault_rc != 0) {
            if (err != NULL) {
                *err = vault_err;
            }
            rc = vault_rc;
        } else {
            char hex[65];
            for (size_t i = 0; i < n; i++) {
                if (!b.got[i]) {
                    rc = CFR_ERR(err, CFR_ENOTFOUND,
                                 "object %s: no vault holds it (%zu of %zu "
                                 "missing)",
                                 hex32(ids + i * RESTORE_FETCH_ID_LEN, hex),
                                 n - b.n_got, n);
                    break;
                }
            }
        }
    }
out:
    cfr_free(b.order);
    cfr_free(b.got);
    return rc;
}

struct one {
    struct cfr_buf *out;
    int kind;
};

static int
one_cb(void *ctx, const uint8_t *id, int kind, const uint8_t *data, size_t len,
       struct cfr_err *err)
{
    struct one *o = ctx;
    (void)id;
    o->kind = kind;
    cfr_buf_reset(o->out);
    return cfr_buf_append(o->out, data, len, err);
}

int
restore_fetcher_get_one(struct restore_fetcher *f, const uint8_t id[32],
                        struct cfr_buf *out, int *kind_r, struct cfr_err *err)
{
    struct one o = {out, 0};
    int rc;
    cfr_buf_reset(out);
    rc = restore_fetcher_get(f, id, 1, one_cb, &o, err);
    if (kind_r != NULL) {
        *kind_r = o.kind;
    }
    return rc;
}
