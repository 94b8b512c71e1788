/*
 * restore_fetch_test.c - the fetcher and the restore run against fake
 * vaults: real gRPC over mutual TLS on 127.0.0.1 (a throwaway PKI), with
 * handlers that serve objects from memory and misbehave on demand.
 *
 *  - the fetcher hands each asked-for object over exactly once, refuses a
 *    vault that sends an object twice or one nobody asked for, asks the
 *    next vault for what the first lacks (counted), and says which ID
 *    nobody has;
 *  - it starts on the nearest healthy vault (a slow Health loses to a
 *    fast one, a dead one is ranked last);
 *  - a vault whose stream breaks mid-batch is left for the next one, which
 *    is asked only for what was not delivered and stays current (sticky);
 *    four threads hitting one broken vault make one switch; once its
 *    back-off is over a vault can become current again;
 *  - restore_fetcher_get_from names the vault that served each object,
 *    never asks an excluded vault (all excluded: CFR_ENOTFOUND without a
 *    call), and restore_fetcher_damaged counts a bad copy per vault;
 *  - restore_mailbox, fed by a vault that sends every batch in reverse
 *    order, still writes each file's chunks in file order (the stash),
 *    byte for byte, with several workers and small batches.
 *
 * Runs in about a second (PKI generation included).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coffer_vault.pb-c.h"
#include "env.h"
#include "fetch.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "restore.h"
#include "rpc.h"
#include "snap.h"

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

enum mode {
    M_NORMAL = 0,
    M_REVERSE = 1, /* each batch's objects in reverse order */
    M_DUP = 2,     /* the first object twice */
    M_UNASKED = 3, /* one object nobody asked for */
    M_BREAK = 4,   /* break_after objects, then UNAVAILABLE */
};

struct fobj {
    uint8_t id[32];
    int kind;
    uint8_t *data;
    size_t len;
    bool absent; /* this vault "lacks" it */
};

struct fake {
    struct cfr_rpc_server *srv;
    char target[64];
    enum mode mode;
    struct fobj *objs;
    size_t n, alloc;
    uint8_t *list; /* a packed ListSnapshotsResponse */
    size_t list_len;
    unsigned gets;      /* GetObjects calls served */
    size_t last_n_ids;  /* IDs the last GetObjects asked for */
    size_t break_after; /* M_BREAK */
    unsigned health_ms; /* Health answers after this long */
    pthread_mutex_t mu;
};

static char pki[256];
static char *ca_pem, *srv_pem, *srv_key, *cli_pem, *cli_key;
static struct fake va, vb;
static struct cfr_keyring *kr;

static char *
slurp(const char *name)
{
    char p[512];
    FILE *f;
    long n;
    char *b;
    snprintf(p, sizeof(p), "%s/%s", pki, name);
    if ((f = fopen(p, "rb")) == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    b = cfr_malloc((size_t)n + 1);
    if (b != NULL && fread(b, 1, (size_t)n, f) == (size_t)n) {
        b[n] = '\0';
    }
    fclose(f);
    return b;
}

static void
fake_add(struct fake *v, const uint8_t id[32], int kind, const uint8_t *data,
         size_t len)
{
    struct fobj *o;
    if (v->n == v->alloc) {
        v->alloc = v->alloc ? 2 * v->alloc : 64;
        v->objs = cfr_realloc(v->objs, v->alloc * sizeof(*v->objs));
        assert_non_null(v->objs);
    }
    o = &v->objs[v->n++];
    memset(o, 0, sizeof(*o));
    memcpy(o->id, id, 32);
    o->kind = kind;
    o->data = cfr_malloc(len + 1);
    assert_non_null(o->data);
    if (len > 0) {
        memcpy(o->data, data, len);
    }
    o->len = len;
}

static struct fobj *
fake_find(struct fake *v, const uint8_t *id)
{
    for (size_t i = 0; i < v->n; i++) {
        if (memcmp(v->objs[i].id, id, 32) == 0) {
            return &v->objs[i];
        }
    }
    return NULL;
}

static void
fake_clear(struct fake *v)
{
    for (size_t i = 0; i < v->n; i++) {
        cfr_free(v->objs[i].data);
    }
    cfr_free(v->objs);
    cfr_free(v->list);
    v->objs = NULL;
    v->list = NULL;
    v->n = v->alloc = v->list_len = 0;
    v->mode = M_NORMAL;
    v->gets = 0;
    v->last_n_ids = v->break_after = 0;
    v->health_ms = 0;
}

static int
authz_all(void *ctx, const struct cfr_rpc_peer *peer, const char *method)
{
    (void)ctx;
    (void)peer;
    (void)method;
    return CFR_RPC_OK;
}

static void
h_health(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct fake *v = arg;
    if (v->health_ms > 0) {
        /* A far vault: the delay is what the fetcher ranks on. */
        struct timespec ts = {0, (long)v->health_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, "", 0, NULL);
}

static void
h_list(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct fake *v = arg;
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, v->list, v->list_len, NULL);
}

/* Sends one object per stream message, in the order the mode says. */
static void
h_get(struct cfr_rpc_ctx *ctx, void *arg)
{
    struct fake *v = arg;
    size_t len;
    const uint8_t *p = cfr_rpc_ctx_request(ctx, &len);
    Coffer__V1__GetObjectsRequest *req =
        coffer__v1__get_objects_request__unpack(NULL, len, p);
    struct fobj **send = NULL;
    size_t n = 0;

    if (req == NULL) {
        (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_INVALID_ARGUMENT, "bad", NULL, 0,
                                 NULL);
        return;
    }
    pthread_mutex_lock(&v->mu);
    v->gets++;
    v->last_n_ids = req->n_ids;
    pthread_mutex_unlock(&v->mu);
    send = calloc(req->n_ids + 2, sizeof(*send));
    for (size_t i = 0; i < req->n_ids; i++) {
        struct fobj *o = fake_find(v, req->ids[i].data);
        if (o != NULL && !o->absent) {
            send[n++] = o;
        }
    }
    if (v->mode == M_REVERSE) {
        for (size_t i = 0; i < n / 2; i++) {
            struct fobj *t = send[i];
            send[i] = send[n - 1 - i];
            send[n - 1 - i] = t;
        }
    } else if (v->mode == M_DUP && n > 0) {
        send[n++] = send[0];
    } else if (v->mode == M_UNASKED) {
        for (size_t i = 0; i < v->n; i++) {
            bool asked = false;
            for (size_t k = 0; k < req->n_ids; k++) {
                asked |= memcmp(req->ids[k].data, v->objs[i].id, 32) == 0;
            }
            if (!asked) {
                send[n++] = &v->objs[i];
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (v->mode == M_BREAK && i == v->break_after) {
            (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_UNAVAILABLE, "broken", NULL,
                                     0, NULL);
            break;
        }
        Coffer__V1__GetObjectsResponse r =
            COFFER__V1__GET_OBJECTS_RESPONSE__INIT;
        Coffer__V1__Object o = COFFER__V1__OBJECT__INIT;
        Coffer__V1__Object *op = &o;
        uint8_t *buf;
        size_t bl;
        o.id.data = send[i]->id;
        o.id.len = 32;
        o.kind = send[i]->kind;
        o.data.data = send[i]->data;
        o.data.len = send[i]->len;
        r.objects = &op;
        r.n_objects = 1;
        bl = coffer__v1__get_objects_response__get_packed_size(&r);
        buf = malloc(bl + 1);
        coffer__v1__get_objects_response__pack(&r, buf);
        (void)cfr_rpc_ctx_send(ctx, buf, bl, NULL);
        free(buf);
    }
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, NULL, 0, NULL);
    free(send);
    coffer__v1__get_objects_request__free_unpacked(req, NULL);
}

static int
fake_start(struct fake *v)
{
    struct cfr_rpc_server_opts o;
    struct cfr_err err;
    memset(&o, 0, sizeof(o));
    o.listen_addr = "127.0.0.1:0";
    o.cert_pem = srv_pem;
    o.key_pem = srv_key;
    o.client_ca_pem = ca_pem;
    o.authz = authz_all;
    pthread_mutex_init(&v->mu, NULL);
    if (cfr_rpc_server_new(&o, &v->srv, &err) != 0 ||
        cfr_rpc_server_add_method(v->srv, "/coffer.v1.Vault/Health",
                                  CFR_RPC_KIND_UNARY, h_health, v, &err) != 0 ||
        cfr_rpc_server_add_method(v->srv, "/coffer.v1.Vault/ListSnapshots",
                                  CFR_RPC_KIND_UNARY, h_list, v, &err) != 0 ||
        cfr_rpc_server_add_method(v->srv, "/coffer.v1.Vault/GetObjects",
                                  CFR_RPC_KIND_SERVER_STREAM, h_get, v,
                                  &err) != 0 ||
        cfr_rpc_server_start(v->srv, &err) != 0) {
        fprintf(stderr, "fake vault: %s\n", err.msg);
        return -1;
    }
    snprintf(v->target, sizeof(v->target), "127.0.0.1:%d",
             cfr_rpc_server_port(v->srv));
    return 0;
}

static struct restore_fetcher *
fetcher_b(const struct fake *const *vs, size_t n, int64_t backoff_ms)
{
    const char *targets[4];
    struct restore_fetch_opts o;
    struct restore_fetcher *f = NULL;
    struct cfr_err err;
    memset(&o, 0, sizeof(o));
    for (size_t i = 0; i < n; i++) {
        targets[i] = vs[i]->target;
    }
    o.targets = targets;
    o.n_targets = n;
    o.target_name = "localhost";
    o.ca_pem = ca_pem;
    o.cert_pem = cli_pem;
    o.key_pem = cli_key;
    o.timeout_ms = 20000;
    o.backoff_ms = backoff_ms;
    if (restore_fetcher_new(&o, &f, &err) != 0) {
        fail_msg("fetcher: %s", err.msg);
    }
    return f;
}

static struct restore_fetcher *
fetcher(const struct fake *const *vs, size_t n)
{
    return fetcher_b(vs, n, 0);
}

/* ---- the fetcher ------------------------------------------------------- */

struct seen {
    uint8_t ids[64][32];
    size_t n;
};

static int
seen_cb(void *ctx, const uint8_t *id, int kind, const uint8_t *data, size_t len,
        struct cfr_err *err)
{
    struct seen *s = ctx;
    (void)err;
    assert_int_equal(kind, 1);
    /* The fake's objects are 40 bytes: their ID and an index. */
    assert_int_equal(len, 40);
    assert_memory_equal(data, id, 32);
    assert_true(s->n < 64);
    memcpy(s->ids[s->n++], id, 32);
    return 0;
}

static void
fill_simple(struct fake *v, uint8_t ids[][32], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t data[40];
        memset(ids[i], 0, 32);
        ids[i][0] = (uint8_t)(0xa0 + i);
        ids[i][31] = (uint8_t)i;
        memcpy(data, ids[i], 32);
        memset(data + 32, (int)i, 8);
        fake_add(v, ids[i], 1, data, sizeof(data));
    }
}

static void
test_restore_fetch_once_each_and_failover(void **state)
{
    (void)state;
    uint8_t ids[10][32];
    struct seen s;
    struct cfr_err err;
    const struct fake *both[2] = {&va, &vb};
    struct restore_fetcher *f;

    fill_simple(&va, ids, 10);
    fill_simple(&vb, ids, 10);
    /* va lacks three; vb has them all. vb answers Health 20 ms late so
     * that va is the nearest however loaded the machine is. */
    va.objs[2].absent = va.objs[5].absent = va.objs[9].absent = true;
    vb.health_ms = 20;
    f = fetcher(both, 2);
    assert_string_equal(restore_fetcher_current(f), va.target);
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 10, seen_cb, &s, &err),
                     0);
    assert_int_equal(s.n, 10);
    for (size_t i = 0; i < 10; i++) {
        size_t hits = 0;
        for (size_t k = 0; k < s.n; k++) {
            hits += memcmp(s.ids[k], ids[i], 32) == 0;
        }
        assert_int_equal(hits, 1);
    }
    /* The first seven came from va in order, the rest from vb. */
    assert_memory_equal(s.ids[0], ids[0], 32);
    assert_memory_equal(s.ids[2], ids[3], 32);
    assert_memory_equal(s.ids[7], ids[2], 32);
    assert_int_equal(va.gets, 1);
    assert_int_equal(vb.gets, 1);
    assert_int_equal(vb.last_n_ids, 3);
    /* Lacking is not failing: va stays current, and it is counted. */
    assert_int_equal(restore_fetcher_lacked(f), 3);
    assert_int_equal(restore_fetcher_switches(f), 0);
    assert_string_equal(restore_fetcher_current(f), va.target);
    {
        struct restore_vault_info vi;
        assert_int_equal(restore_fetcher_vault_info(f, 0, &vi), 0);
        assert_int_equal(vi.lacked, 3);
        assert_int_equal(vi.objects, 7);
        assert_int_equal(vi.bytes, 7 * 40);
        assert_int_equal(vi.failures, 0);
        assert_true(vi.current);
        assert_int_equal(restore_fetcher_vault_info(f, 1, &vi), 0);
        assert_int_equal(vi.objects, 3);
        assert_false(vi.current);
        assert_int_equal(restore_fetcher_vault_info(f, 2, &vi), CFR_EINVAL);
    }

    /* Missing everywhere: CFR_ENOTFOUND naming it. */
    vb.objs[5].absent = true;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 10, seen_cb, &s, &err),
                     CFR_ENOTFOUND);
    {
        char hex[65];
        cfr_hex_encode(ids[5], 32, hex);
        assert_non_null(strstr(err.msg, hex));
    }
    /* An ID twice in one batch is the caller's bug. */
    memcpy(ids[1], ids[0], 32);
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 2, seen_cb, &s, &err),
                     CFR_EINVAL);
    restore_fetcher_free(f);
}

static void
test_restore_fetch_refuses_dup_and_unasked(void **state)
{
    (void)state;
    uint8_t ids[4][32];
    struct seen s;
    struct cfr_err err;
    const struct fake *one[1] = {&va};
    struct restore_fetcher *f;

    fill_simple(&va, ids, 4);
    f = fetcher(one, 1);
    va.mode = M_DUP;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 3, seen_cb, &s, &err),
                     CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "unasked or twice"));
    assert_int_equal(s.n, 3); /* the three, never the repeat */
    va.mode = M_UNASKED;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 3, seen_cb, &s, &err),
                     CFR_ECORRUPT);
    assert_int_equal(s.n, 3);
    /* Reversed order is fine for the fetcher: once each. */
    va.mode = M_REVERSE;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 4, seen_cb, &s, &err),
                     0);
    assert_int_equal(s.n, 4);
    assert_memory_equal(s.ids[0], ids[3], 32);
    restore_fetcher_free(f);
}

/* Which vault served each object (restore_fetcher_get_from). */
struct from_seen {
    size_t vault[64];
    size_t n;
};

static int
from_cb(void *ctx, size_t vault, const uint8_t *id, int kind,
        const uint8_t *data, size_t len, struct cfr_err *err)
{
    struct from_seen *s = ctx;
    (void)id;
    (void)kind;
    (void)data;
    (void)len;
    (void)err;
    assert_true(s->n < 64);
    s->vault[s->n++] = vault;
    return 0;
}

static void
test_restore_fetch_from_excluding(void **state)
{
    (void)state;
    uint8_t ids[4][32];
    struct from_seen s;
    struct cfr_err err;
    struct restore_vault_info vi;
    const struct fake *both[2] = {&va, &vb};
    struct restore_fetcher *f;

    fill_simple(&va, ids, 4);
    fill_simple(&vb, ids, 4);
    vb.health_ms = 20; /* va is the nearest */
    f = fetcher(both, 2);
    assert_string_equal(restore_fetcher_current(f), va.target);
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        restore_fetcher_get_from(f, &ids[0][0], 4, 0, from_cb, &s, &err), 0);
    assert_int_equal(s.n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s.vault[i], 0);
    }
    /* The current vault excluded: vb serves, va is not even asked, and
     * nothing moves (an exclusion is not a failure). */
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        restore_fetcher_get_from(f, &ids[1][0], 1, 1u << 0, from_cb, &s, &err),
        0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.vault[0], 1);
    assert_int_equal(va.gets, 1);
    assert_int_equal(vb.gets, 1);
    assert_int_equal(restore_fetcher_switches(f), 0);
    assert_string_equal(restore_fetcher_current(f), va.target);
    /* Both excluded: nobody is asked. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        restore_fetcher_get_from(f, &ids[1][0], 1, 3u, from_cb, &s, &err),
        CFR_ENOTFOUND);
    assert_int_equal(s.n, 0);
    assert_int_equal(va.gets + vb.gets, 2);
    /* A damaged copy is counted against the vault that served it. */
    assert_int_equal(restore_fetcher_damaged_count(f), 0);
    restore_fetcher_damaged(f, 1, ids[2], CFR_ECORRUPT);
    restore_fetcher_damaged(f, 5, ids[2], CFR_ECORRUPT); /* no such vault */
    assert_int_equal(restore_fetcher_damaged_count(f), 1);
    assert_int_equal(restore_fetcher_vault_info(f, 1, &vi), 0);
    assert_int_equal(vi.damaged, 1);
    assert_int_equal(restore_fetcher_vault_info(f, 0, &vi), 0);
    assert_int_equal(vi.damaged, 0);
    restore_fetcher_free(f);
}

/* ---- nearest replica, sticky switch ------------------------------------ */

static void
test_restore_fetch_nearest(void **state)
{
    (void)state;
    uint8_t ids[2][32];
    struct restore_vault_info ia, ib, id;
    struct cfr_rpc_server *dead = NULL;
    struct fake vd;
    const struct fake *three[3] = {&va, &vb, &vd};
    struct restore_fetcher *f;

    fill_simple(&va, ids, 2);
    fill_simple(&vb, ids, 2);
    /* va answers 40 ms late: vb is nearer although listed second. The
     * third address had a server that is gone (connection refused). */
    va.health_ms = 40;
    memset(&vd, 0, sizeof(vd));
    assert_int_equal(fake_start(&vd), 0);
    dead = vd.srv;
    cfr_rpc_server_free(dead);
    f = fetcher(three, 3);
    assert_string_equal(restore_fetcher_current(f), vb.target);
    assert_int_equal(restore_fetcher_n_vaults(f), 3);
    assert_int_equal(restore_fetcher_vault_info(f, 0, &ia), 0);
    assert_int_equal(restore_fetcher_vault_info(f, 1, &ib), 0);
    assert_int_equal(restore_fetcher_vault_info(f, 2, &id), 0);
    assert_true(ia.healthy && ib.healthy);
    assert_false(id.healthy);
    assert_int_equal(id.health_code, CFR_EUNAVAIL);
    assert_int_equal(id.rtt_us, -1);
    assert_true(ia.rtt_us >= 40000);
    assert_true(ib.rtt_us >= 0 && ib.rtt_us < ia.rtt_us);
    assert_int_equal(ib.rank, 0);
    assert_int_equal(ia.rank, 1);
    assert_int_equal(id.rank, 2);
    assert_true(ib.current);
    assert_true(id.backing_off);
    assert_string_equal(ia.target, va.target);
    {
        size_t used[4];
        assert_int_equal(restore_fetcher_vaults_used(f, used, 4), 1);
        assert_int_equal(used[0], 1);
    }
    restore_fetcher_free(f);
    pthread_mutex_destroy(&vd.mu);
}

static void
test_restore_fetch_switch_mid_stream(void **state)
{
    (void)state;
    uint8_t ids[10][32];
    struct seen s;
    struct cfr_err err;
    const struct fake *both[2] = {&va, &vb};
    struct restore_fetcher *f;
    struct restore_vault_info vi;
    size_t used[4];

    fill_simple(&va, ids, 10);
    fill_simple(&vb, ids, 10);
    va.mode = M_BREAK;
    va.break_after = 4;
    vb.health_ms = 20; /* va is the nearest */
    f = fetcher_b(both, 2, 300);
    assert_string_equal(restore_fetcher_current(f), va.target);
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 10, seen_cb, &s, &err),
                     0);
    /* Ten objects, once each, in order: four from va, six from vb, which
     * was asked only for those six. */
    assert_int_equal(s.n, 10);
    for (size_t i = 0; i < 10; i++) {
        assert_memory_equal(s.ids[i], ids[i], 32);
    }
    assert_int_equal(va.gets, 1);
    assert_int_equal(vb.gets, 1);
    assert_int_equal(vb.last_n_ids, 6);
    assert_int_equal(restore_fetcher_switches(f), 1);
    assert_string_equal(restore_fetcher_current(f), vb.target);
    assert_int_equal(restore_fetcher_vaults_used(f, used, 4), 2);
    assert_int_equal(used[0], 0);
    assert_int_equal(used[1], 1);
    assert_int_equal(restore_fetcher_vault_info(f, 0, &vi), 0);
    assert_int_equal(vi.failures, 1);
    assert_int_equal(vi.objects, 4);
    assert_true(vi.backing_off);
    assert_false(vi.current);
    assert_int_equal(restore_fetcher_lacked(f), 0);

    /* Sticky: the next batch goes to vb alone, va is not asked. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 5, seen_cb, &s, &err),
                     0);
    assert_int_equal(s.n, 5);
    assert_int_equal(va.gets, 1);
    assert_int_equal(vb.gets, 2);

    /* Once va's back-off is over (300 ms), vb breaking sends the fetcher
     * back to va. Polled, bounded: at most 5 s. */
    for (int i = 0; i < 500; i++) {
        assert_int_equal(restore_fetcher_vault_info(f, 0, &vi), 0);
        if (!vi.backing_off) {
            break;
        }
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    assert_false(vi.backing_off);
    va.mode = M_NORMAL;
    vb.mode = M_BREAK;
    vb.break_after = 0;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 10, seen_cb, &s, &err),
                     0);
    assert_int_equal(s.n, 10);
    assert_int_equal(restore_fetcher_switches(f), 2);
    assert_string_equal(restore_fetcher_current(f), va.target);
    assert_int_equal(restore_fetcher_vaults_used(f, used, 4), 3);
    assert_int_equal(used[2], 0);

    /* Both broken: the vault's error, after each was tried once more. */
    va.mode = M_BREAK;
    va.break_after = 0;
    memset(&s, 0, sizeof(s));
    assert_int_equal(restore_fetcher_get(f, &ids[0][0], 3, seen_cb, &s, &err),
                     CFR_EUNAVAIL);
    assert_int_equal(s.n, 0);
    restore_fetcher_free(f);
}

struct hammer {
    struct restore_fetcher *f;
    uint8_t (*ids)[32];
    int rc;
    size_t got;
};

static int
count_cb(void *ctx, const uint8_t *id, int kind, const uint8_t *data,
         size_t len, struct cfr_err *err)
{
    struct hammer *h = ctx;
    (void)id;
    (void)kind;
    (void)data;
    (void)len;
    (void)err;
    h->got++;
    return 0;
}

static void *
hammer_run(void *arg)
{
    struct hammer *h = arg;
    struct cfr_err err;
    h->rc = restore_fetcher_get(h->f, &h->ids[0][0], 8, count_cb, h, &err);
    return NULL;
}

static void
test_restore_fetch_threads_switch_once(void **state)
{
    (void)state;
    uint8_t ids[8][32];
    const struct fake *both[2] = {&va, &vb};
    struct restore_fetcher *f;
    struct hammer h[4];
    pthread_t t[4];

    fill_simple(&va, ids, 8);
    fill_simple(&vb, ids, 8);
    va.mode = M_BREAK;
    va.break_after = 2;
    vb.health_ms = 20; /* va is the nearest */
    f = fetcher(both, 2);
    for (size_t i = 0; i < 4; i++) {
        h[i].f = f;
        h[i].ids = ids;
        h[i].rc = -1;
        h[i].got = 0;
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    for (size_t i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(h[i].rc, 0);
        assert_int_equal(h[i].got, 8);
    }
    /* However many threads saw va break, it is one outage, one switch. */
    assert_int_equal(restore_fetcher_switches(f), 1);
    assert_string_equal(restore_fetcher_current(f), vb.target);
    {
        struct restore_vault_info vi;
        assert_int_equal(restore_fetcher_vault_info(f, 0, &vi), 0);
        assert_int_equal(vi.failures, 1);
    }
    restore_fetcher_free(f);
}

/* ---- a whole restore from a vault that reverses every batch ---------- */

struct sealer {
    struct fake *v;
    struct cfr_session *sess;
};

static int
page_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
         uint8_t id_r[32], struct cfr_err *err)
{
    struct sealer *s = ctx;
    struct cfr_buf eb;
    (void)level;
    cfr_keyring_chunk_id(kr, page, len, id_r);
    cfr_buf_init(&eb, len + (1u << 20));
    assert_int_equal(
        cfr_env_seal(s->sess, CFR_ENV_MANIFEST_PAGE, id_r, page, len, &eb, err),
        0);
    if (fake_find(s->v, id_r) == NULL) {
        fake_add(s->v, id_r, 1, eb.data, eb.len);
    }
    cfr_buf_fini(&eb);
    return 0;
}

#define N_FILES  7
#define N_CHUNKS 6

static void
test_restore_mailbox_from_reversing_vault(void **state)
{
    (void)state;
    const struct fake *one[1] = {&va};
    struct sealer sl = {&va, NULL};
    struct cfr_snap_manifest_writer *mw = NULL;
    struct cfr_snap_header h;
    struct cfr_buf hb, eb;
    struct cfr_err err;
    uint8_t files[N_FILES][N_CHUNKS * 300];
    size_t sizes[N_FILES];
    uint8_t header_id[32], mailbox_id[32];
    struct restore_fetcher *f;
    struct restore_opts ro;
    struct restore_stats st;
    char dir[512];

    sl.sess = cfr_session_new(kr, 0, &err);
    assert_non_null(sl.sess);
    assert_int_equal(
        cfr_snap_manifest_writer_new(NULL, page_put, &sl, &mw, &err), 0);
    for (size_t i = 0; i < N_FILES; i++) {
        uint8_t cids[N_CHUNKS * 32];
        uint8_t key[32];
        struct cfr_snap_entry e;
        size_t at = 0;
        int kl =
            snprintf((char *)key, sizeof(key), "%c17672256%02zu.M%zu", 0, i, i);
        /* Chunks of different sizes; chunk 4 repeats chunk 1. */
        for (size_t c = 0; c < N_CHUNKS; c++) {
            size_t cl = 50 + 40 * c + i;
            size_t src = c == 4 ? 1 : c;
            uint8_t *p = files[i] + at;
            if (c == 4) {
                cl = 50 + 40 * 1 + i;
                memcpy(p, files[i] + 50 + i, cl); /* chunk 1's bytes */
            } else {
                for (size_t k = 0; k < cl; k++) {
                    p[k] = (uint8_t)('a' + (i * 7 + src * 3 + k) % 26);
                }
            }
            cfr_keyring_chunk_id(kr, p, cl, cids + c * 32);
            if (fake_find(&va, cids + c * 32) == NULL) {
                cfr_buf_init(&eb, cl + (1u << 20));
                assert_int_equal(cfr_env_seal(sl.sess, CFR_ENV_CHUNK,
                                              cids + c * 32, p, cl, &eb, &err),
                                 0);
                fake_add(&va, cids + c * 32, 1, eb.data, eb.len);
                cfr_buf_fini(&eb);
            }
            at += cl;
        }
        sizes[i] = at;
        memset(&e, 0, sizeof(e));
        e.key = key;
        e.key_len = (size_t)kl;
        e.kind = CFR_SNAP_MAILDIR_MESSAGE;
        e.info = (const uint8_t *)":2,S";
        e.info_len = 4;
        e.size = at;
        e.mtime_ns = INT64_C(1767225600000000000) + (int64_t)i;
        e.mode = 0600;
        e.chunk_ids = cids;
        e.n_chunks = N_CHUNKS;
        assert_int_equal(cfr_snap_manifest_writer_add(mw, &e, &err), 0);
    }
    memset(&h, 0, sizeof(h));
    assert_int_equal(cfr_snap_manifest_writer_finish(mw, &h.manifest, &err), 0);
    cfr_snap_manifest_writer_free(mw);
    snprintf(h.mailbox, sizeof(h.mailbox), "bob@example.org");
    snprintf(h.host, sizeof(h.host), "h");
    snprintf(h.agent_version, sizeof(h.agent_version), "t");
    h.refs = h.manifest; /* unused by the restore */
    cfr_buf_init(&hb, CFR_SNAP_HEADER_MAX);
    cfr_buf_init(&eb, 1u << 20);
    assert_int_equal(cfr_snap_header_encode(&h, &hb, &err), 0);
    cfr_keyring_chunk_id(kr, hb.data, hb.len, header_id);
    assert_int_equal(cfr_env_seal(sl.sess, CFR_ENV_SNAPSHOT_HEADER, header_id,
                                  hb.data, hb.len, &eb, &err),
                     0);
    cfr_keyring_name_id(kr, "bob@example.org", 15, mailbox_id);
    {
        Coffer__V1__ListSnapshotsResponse r =
            COFFER__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
        Coffer__V1__SnapshotRecord rec = COFFER__V1__SNAPSHOT_RECORD__INIT;
        Coffer__V1__SnapshotRecord *rp = &rec;
        rec.header_id.data = header_id;
        rec.header_id.len = 32;
        rec.mailbox_id.data = mailbox_id;
        rec.mailbox_id.len = 32;
        rec.received_ms = 1767225600000;
        rec.header.data = eb.data;
        rec.header.len = eb.len;
        r.snapshots = &rp;
        r.n_snapshots = 1;
        va.list_len = coffer__v1__list_snapshots_response__get_packed_size(&r);
        va.list = cfr_malloc(va.list_len);
        coffer__v1__list_snapshots_response__pack(&r, va.list);
    }
    cfr_buf_fini(&hb);
    cfr_buf_fini(&eb);
    cfr_session_free(sl.sess);

    va.mode = M_REVERSE;
    f = fetcher(one, 1);
    FMT(dir, "%s/restored", pki);
    memset(&ro, 0, sizeof(ro));
    ro.workers = 3;
    ro.batch_ids = 3; /* windows of 3 arrive reversed: the stash is used */
    if (restore_mailbox(f, kr, "bob@example.org", dir, &ro, &st, &err) != 0) {
        fail_msg("restore: %s", err.msg);
    }
    assert_int_equal(st.files, N_FILES);
    assert_int_equal(st.folders, 1);
    for (size_t i = 0; i < N_FILES; i++) {
        char p[600];
        uint8_t got[N_CHUNKS * 300];
        struct stat sb;
        FILE *fp;
        FMT(p, "%s/cur/17672256%02zu.M%zu:2,S", dir, i, i);
        fp = fopen(p, "rb");
        assert_non_null(fp);
        assert_int_equal(fread(got, 1, sizeof(got), fp), sizes[i]);
        fclose(fp);
        assert_memory_equal(got, files[i], sizes[i]);
        assert_int_equal(stat(p, &sb), 0);
        assert_int_equal(sb.st_mtim.tv_nsec, (long)i);
    }
    /* Another mailbox name: nothing of it is there. */
    FMT(dir, "%s/other", pki);
    assert_int_equal(
        restore_mailbox(f, kr, "eve@example.org", dir, &ro, &st, &err),
        CFR_ENOTFOUND);
    assert_int_equal(st.failure, RESTORE_F_NOTFOUND);
    restore_fetcher_free(f);
}

/* ---- setup ------------------------------------------------------------- */

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static int
each_teardown(void **state)
{
    (void)state;
    fake_clear(&va);
    fake_clear(&vb);
    return 0;
}

static int
group_setup(void **state)
{
    (void)state;
    struct cfr_err err;
    char cmd[700];
    const char *t = getenv("TMPDIR");
    cfr_log_set_level(CFR_LOG_OFF);
    snprintf(pki, sizeof(pki), "%s/restore_fetch.XXXXXX",
             t != NULL && *t != '\0' ? t : "/tmp");
    if (mkdtemp(pki) == NULL) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "%s/../pki/make-test-pki.sh %s >/dev/null",
             COFFER_VECTORS_DIR, pki);
    if (system(cmd) != 0 || (ca_pem = slurp("ca.pem")) == NULL ||
        (srv_pem = slurp("server.pem")) == NULL ||
        (srv_key = slurp("server.key")) == NULL ||
        (cli_pem = slurp("restore.pem")) == NULL ||
        (cli_key = slurp("restore.key")) == NULL) {
        return -1;
    }
    if (cfr_rpc_global_init(&err) != 0 || fake_start(&va) != 0 ||
        fake_start(&vb) != 0) {
        return -1;
    }
    kr = cfr_keyring_generate(1700000000000, &err);
    return kr != NULL ? 0 : -1;
}

static int
group_teardown(void **state)
{
    (void)state;
    cfr_rpc_server_free(va.srv);
    cfr_rpc_server_free(vb.srv);
    fake_clear(&va);
    fake_clear(&vb);
    cfr_keyring_free(kr);
    cfr_free(ca_pem);
    cfr_free(srv_pem);
    cfr_free(srv_key);
    cfr_free(cli_pem);
    cfr_free(cli_key);
    /* No cfr_rpc_global_fini: it can take ~10 s (rpc.h). */
    return nftw(pki, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restore_fetch_once_each_and_failover,
                                  each_teardown),
        cmocka_unit_test_teardown(test_restore_fetch_refuses_dup_and_unasked,
                                  each_teardown),
        cmocka_unit_test_teardown(test_restore_fetch_from_excluding,
                                  each_teardown),
        cmocka_unit_test_teardown(test_restore_fetch_nearest, each_teardown),
        cmocka_unit_test_teardown(test_restore_fetch_switch_mid_stream,
                                  each_teardown),
        cmocka_unit_test_teardown(test_restore_fetch_threads_switch_once,
                                  each_teardown),
        cmocka_unit_test_teardown(test_restore_mailbox_from_reversing_vault,
                                  each_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
