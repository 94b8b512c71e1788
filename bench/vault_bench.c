/*
 * vault_bench.c - load on a running coffer-vault over mutual TLS, with the
 * project's own client (core/rpc.h): upload throughput of one client and
 * of N concurrent ones, Missing latency for 4,096 IDs (with and without
 * concurrent uploads), and the vault's RSS during each phase.
 *
 * It starts nothing: bench/run-vault.sh makes the PKI, starts the vault on
 * a data directory and runs this once per repetition, then takes medians.
 *
 *   vault_bench --target 127.0.0.1:PORT --pki DIR [--pid VAULT_PID]
 *               [--mib 1024] [--clients 8] [--batch-kib 4096]
 *               [--stream-mib 64] [--queries 200] [--load-secs 60]
 *               [--avg-kib 32]
 *               [--seed 1] [--phases u1,u8,m0,mN]
 *
 * Phases: u1 one uploading client, u8 (uN) --clients concurrent uploading
 * clients (each a thread with its own channel, hence its own TCP/TLS
 * connection: rpc_client.c uses a local subchannel pool, and its own
 * lease), m0 Missing queries on an idle vault, mN the same while
 * --clients clients upload without pause.
 *
 * Objects: what the vault accepts as SEALED (vault/store.c object_check:
 * at least the 80-byte envelope overhead, first byte the envelope version
 * 1); the vault cannot check more, since IDs are keyed hashes and the rest
 * is ciphertext. Sizes are the chunk sizes the real chunker (core/chunk.c,
 * --avg-kib with min avg/4, max avg*8, the 8/32/256 KiB defaults for 32)
 * cuts from random bytes, plus the 80-byte envelope overhead: incompressible
 * chunks, the worst case for bytes per object. IDs are random, so every
 * object is new (already_present is reported and should stay 0).
 *
 * Output: one line per phase of key=value fields (bench/run-vault.sh
 * parses them). MB are 10^6 bytes of object data (the envelopes, not the
 * protobuf framing). Latency is the client's wall time of one Missing call
 * (4,096 IDs, half present, half absent, with the client's lease, as an
 * agent asks), packing excluded; the answer is checked index by index.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"
#include "chunk.h"
#include "coffer_vault.pb-c.h"
#include "err.h"
#include "mem.h"
#include "prng.h"
#include "rpc.h"

#define ID_LEN       32
#define LEASE_LEN    16
#define ENV_VERSION  1  /* vault/store.c: first byte of an envelope */
#define ENV_OVERHEAD 80 /* 64-byte header + 16-byte tag */
#define MISSING_IDS  4096
#define POOL_LEN     ((size_t)64 << 20)
#define POOL_ALIGN   64 /* every object starts on one: pool[k * 64] = 1 */
#define MAX_CLIENTS  64
#define CALL_MS      ((int64_t)600000)
#define UNARY_MS     ((int64_t)60000)
#define SAMPLE_MS    50
#define SAMPLES_MAX  ((size_t)1 << 16)
#define PREFIX       "/coffer.v1.Vault/"

struct opts {
    const char *target;
    const char *pki;
    const char *tenant;
    const char *ident;
    long pid;
    uint64_t mib;
    unsigned clients;
    size_t batch;  /* bytes of object data per PutObjects message */
    size_t stream; /* bytes of object data per PutObjects call */
    unsigned queries;
    unsigned load_secs; /* query time limit under load */
    size_t avg_kib;
    uint64_t seed;
    const char *phases;
};

static struct opts o = {
    .target = NULL,
    .pki = NULL,
    .tenant = "acme",
    .ident = "agent",
    .pid = 0,
    .mib = 1024,
    .clients = 8,
    .batch = (size_t)4 << 20,
    .stream = (size_t)64 << 20,
    .queries = 200,
    .load_secs = 60,
    .avg_kib = 32,
    .seed = 1,
    .phases = "u1,uN,m0,mN",
};

/* PEM material, read once. */
static char *ca_pem, *cert_pem, *key_pem, *op_cert_pem, *op_key_pem;
/* Random bytes that object data is cut from (read-only once built). */
static uint8_t *pool;
/* Sealed sizes to draw from (read-only once built). */
static uint32_t *sizes;
static size_t n_sizes;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void
die(const char *what, const char *why)
{
    fprintf(stderr, "vault_bench: %s: %s\n", what, why);
    exit(1);
}

static char *
slurp(const char *dir, const char *name)
{
    char path[1024];
    FILE *f;
    char *p;
    size_t n;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((f = fopen(path, "rb")) == NULL) {
        die(path, strerror(errno));
    }
    p = cfr_malloc((size_t)1 << 20);
    if (p == NULL) {
        die(path, "out of memory");
    }
    n = fread(p, 1, ((size_t)1 << 20) - 1, f);
    p[n] = '\0';
    fclose(f);
    return p;
}

static struct cfr_rpc_client *
client_new(bool operator_id)
{
    struct cfr_rpc_client_opts co;
    struct cfr_rpc_client *cli = NULL;
    struct cfr_err err;
    memset(&co, 0, sizeof(co));
    co.target = o.target;
    co.target_name = "localhost"; /* the test PKI's server name */
    co.ca_pem = ca_pem;
    co.cert_pem = operator_id ? op_cert_pem : cert_pem;
    co.key_pem = operator_id ? op_key_pem : key_pem;
    co.max_msg = (size_t)80 << 20;
    cfr_err_clear(&err);
    if (cfr_rpc_client_new(&co, &cli, &err) != 0) {
        die("client", err.msg);
    }
    return cli;
}

/* Packs m and calls method; returns the status, *resp_r owned on OK. */
static int
unary(struct cfr_rpc_client *cli, const char *method, const ProtobufCMessage *m,
      const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp_r,
      double *secs_r, struct cfr_err *err)
{
    char path[CFR_RPC_METHOD_MAX];
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = cfr_malloc(n + 1);
    struct cfr_buf resp;
    int status = CFR_RPC_UNKNOWN;
    double t0;

    *resp_r = NULL;
    if (p == NULL) {
        die(method, "out of memory");
    }
    protobuf_c_message_pack(m, p);
    snprintf(path, sizeof(path), PREFIX "%s", method);
    cfr_buf_init(&resp, (size_t)80 << 20);
    cfr_err_clear(err);
    t0 = now_s();
    (void)cfr_rpc_unary(cli, path, p, n, UNARY_MS, &resp, &status, err);
    if (secs_r != NULL) {
        *secs_r = now_s() - t0;
    }
    if (status == CFR_RPC_OK) {
        *resp_r = protobuf_c_message_unpack(desc, NULL, resp.len, resp.data);
        if (*resp_r == NULL) {
            status = CFR_RPC_INTERNAL;
            CFR_ERR(err, CFR_ECORRUPT, "%s: undecodable response", method);
        }
    }
    cfr_buf_fini(&resp);
    cfr_free(p);
    return status;
}

/*
 * The vault refuses unregistered tenants, so the bench tenant is added as
 * the operator first. ALREADY_EXISTS is fine (a data directory reused).
 */
static void
register_tenant(void)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
    struct cfr_rpc_client *cli = client_new(true);
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    int st;

    ti.name = (char *)o.tenant;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD;
    req.tenant = &ti;
    req.reason = "vault_bench";
    st = unary(cli, "System", &req.base,
               &coffer__v1__system_response__descriptor, &resp, NULL, &err);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cfr_rpc_client_free(cli);
    if (st != CFR_RPC_OK && st != CFR_RPC_ALREADY_EXISTS) {
        die("registering the tenant", err.msg);
    }
}

/* ---- object sizes and data --------------------------------------------- */

static void
build_data(void)
{
    struct cfr_chunk_params p;
    struct cfr_chunker *ch;
    struct cfr_err err;
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    uint64_t s = o.seed ^ UINT64_C(0x5eed);
    size_t off = 0, cap;

    pool = cfr_malloc(POOL_LEN);
    if (pool == NULL) {
        die("pool", "out of memory");
    }
    for (size_t i = 0; i + 8 <= POOL_LEN; i += 8) {
        uint64_t v = cfr_splitmix64(&s);
        memcpy(pool + i, &v, 8);
    }
    for (size_t i = 0; i < CFR_CHUNK_GEAR_LEN; i++) {
        gear[i] = cfr_splitmix64(&s);
    }
    p.avg = o.avg_kib << 10;
    p.min = p.avg / 4;
    p.max = p.avg * 8;
    p.norm = CFR_CHUNK_DEFAULT_NORM;
    cfr_err_clear(&err);
    if ((ch = cfr_chunker_new(gear, &p, &err)) == NULL) {
        die("chunker", err.msg);
    }
    cap = POOL_LEN / p.min + 2;
    sizes = cfr_calloc(cap, sizeof(*sizes));
    if (sizes == NULL) {
        die("sizes", "out of memory");
    }
    while (off < POOL_LEN && n_sizes < cap) {
        size_t k = cfr_chunker_next(ch, pool + off, POOL_LEN - off);
        if (k == 0) {
            break;
        }
        /* Each call starts right after a cut, so k is the whole chunk. */
        off += k;
        sizes[n_sizes++] = (uint32_t)k;
    }
    cfr_chunker_free(ch);
    for (size_t i = 0; i < n_sizes; i++) {
        sizes[i] += ENV_OVERHEAD;
    }
    if (n_sizes == 0) {
        die("sizes", "the chunker cut nothing");
    }
    /* Every object starts on a POOL_ALIGN boundary with the version byte. */
    for (size_t i = 0; i < POOL_LEN; i += POOL_ALIGN) {
        pool[i] = ENV_VERSION;
    }
}

static double
mean_size(void)
{
    double sum = 0;
    for (size_t i = 0; i < n_sizes; i++) {
        sum += sizes[i];
    }
    return sum / (double)n_sizes;
}

/* ---- RSS sampling ------------------------------------------------------ */

struct rss {
    pthread_t thread;
    atomic_bool stop;
    atomic_int phase; /* samples are kept only while it is 1 */
    pthread_mutex_t lock;
    long samples[SAMPLES_MAX];
    size_t n;
    long hwm;
};

static struct rss rss;

/* VmRSS and VmHWM of the vault in KiB; false when unreadable. */
static bool
read_status(long *rss_r, long *hwm_r)
{
    char path[64], line[256];
    FILE *f;
    *rss_r = *hwm_r = -1;
    snprintf(path, sizeof(path), "/proc/%ld/status", o.pid);
    if ((f = fopen(path, "r")) == NULL) {
        return false;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            *rss_r = strtol(line + 6, NULL, 10);
        } else if (strncmp(line, "VmHWM:", 6) == 0) {
            *hwm_r = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return *rss_r >= 0;
}

static void *
rss_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&rss.stop)) {
        long r, h;
        if (atomic_load(&rss.phase) == 1 && read_status(&r, &h)) {
            pthread_mutex_lock(&rss.lock);
            if (rss.n < SAMPLES_MAX) {
                rss.samples[rss.n++] = r;
            }
            rss.hwm = h;
            pthread_mutex_unlock(&rss.lock);
        }
        sleep_ms(SAMPLE_MS);
    }
    return NULL;
}

static void
rss_begin(void)
{
    pthread_mutex_lock(&rss.lock);
    rss.n = 0;
    pthread_mutex_unlock(&rss.lock);
    atomic_store(&rss.phase, 1);
}

static int
cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/*
 * Ends a phase and prints its RSS: peak (largest sample), steady (median
 * of the second half of the samples, once the load has settled), VmHWM
 * (the process's peak since it started). KiB.
 */
static void
rss_end(char *out, size_t n)
{
    long peak = -1, steady = -1, hwm, r;
    atomic_store(&rss.phase, 0);
    if (o.pid <= 0) {
        snprintf(out, n, "rss_peak_kib=- rss_steady_kib=- hwm_kib=-");
        return;
    }
    pthread_mutex_lock(&rss.lock);
    if (read_status(&r, &hwm) && rss.n < SAMPLES_MAX) {
        rss.samples[rss.n++] = r; /* a phase shorter than one period */
    }
    for (size_t i = 0; i < rss.n; i++) {
        peak = rss.samples[i] > peak ? rss.samples[i] : peak;
    }
    if (rss.n > 0) {
        size_t half = rss.n / 2;
        qsort(rss.samples + half, rss.n - half, sizeof(long), cmp_long);
        steady = rss.samples[half + (rss.n - half) / 2];
    }
    pthread_mutex_unlock(&rss.lock);
    snprintf(out, n, "rss_peak_kib=%ld rss_steady_kib=%ld hwm_kib=%ld", peak,
             steady, hwm);
}

/* ---- uploads ------------------------------------------------------------ */

struct ids {
    uint8_t (*v)[ID_LEN];
    size_t n, cap;
};

struct uploader {
    pthread_t thread;
    unsigned index;
    uint64_t seed;
    uint64_t quota; /* bytes of object data; 0 = until stop */
    const atomic_bool *stop;
    pthread_barrier_t *start;
    struct ids *keep; /* IDs to remember, or NULL */
    /* results */
    uint64_t objects, bytes, stored, present;
    atomic_uint_least64_t sent; /* bytes taken by the transport so far */
    double t_end;
    int status;
    char err[CFR_ERR_MSG_MAX];
};

static void
random_id(uint64_t *s, uint8_t id[ID_LEN])
{
    for (size_t i = 0; i < ID_LEN; i += 8) {
        uint64_t v = cfr_splitmix64(s);
        memcpy(id + i, &v, 8);
    }
}

static void
ids_push(struct ids *ids, const uint8_t id[ID_LEN])
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 4096;
        void *p = cfr_realloc(ids->v, cap * ID_LEN);
        if (p == NULL) {
            die("ids", "out of memory");
        }
        ids->v = p;
        ids->cap = cap;
    }
    memcpy(ids->v[ids->n++], id, ID_LEN);
}

static int
open_lease(struct cfr_rpc_client *cli, uint64_t *s, uint8_t lease[LEASE_LEN],
           struct cfr_err *err)
{
    Coffer__V1__OpenLeaseRequest req = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
    Coffer__V1__OpenLeaseResponse *resp = NULL;
    uint8_t pub[32];
    int st;
    random_id(s, pub); /* stands for the sealing session's public key */
    req.session_public.data = pub;
    req.session_public.len = sizeof(pub);
    req.ttl_ms = 3600000;
    st = unary(cli, "OpenLease", &req.base,
               &coffer__v1__open_lease_response__descriptor,
               (ProtobufCMessage **)&resp, NULL, err);
    if (st == CFR_RPC_OK) {
        if (resp->lease_id.len != LEASE_LEN) {
            st = CFR_RPC_INTERNAL;
            CFR_ERR(err, CFR_ECORRUPT, "lease of %zu bytes",
                    resp->lease_id.len);
        } else {
            memcpy(lease, resp->lease_id.data, LEASE_LEN);
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

/* Sends the objects of one PutObjects call; 0 or the failing status. */
static int
put_stream(struct uploader *u, struct cfr_rpc_client *cli,
           const uint8_t lease[LEASE_LEN], uint64_t *s, uint64_t want,
           Coffer__V1__Object *objs, Coffer__V1__Object **ptrs,
           uint8_t (*idbuf)[ID_LEN], struct cfr_buf *msg, struct cfr_err *err)
{
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf resp;
    uint64_t done = 0;
    int st = CFR_RPC_OK;

    cfr_err_clear(err);
    if (cfr_rpc_cstream_open(cli, PREFIX "PutObjects", CALL_MS, &call, err) !=
        0) {
        return CFR_RPC_UNAVAILABLE;
    }
    /* Only an open-ended uploader (quota 0) heeds stop. */
    while (done < want && !(u->quota == 0 && atomic_load(u->stop))) {
        Coffer__V1__PutObjectsRequest req =
            COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
        size_t n = 0, bytes = 0;
        while (bytes < o.batch && n < MISSING_IDS && done + bytes < want) {
            uint64_t r = cfr_splitmix64(s);
            size_t len = sizes[r % n_sizes];
            size_t slots = (POOL_LEN - len) / POOL_ALIGN;
            size_t at = (size_t)((r >> 32) % slots) * POOL_ALIGN;
            Coffer__V1__Object init = COFFER__V1__OBJECT__INIT;
            objs[n] = init;
            random_id(s, idbuf[n]);
            objs[n].id.data = idbuf[n];
            objs[n].id.len = ID_LEN;
            objs[n].kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED;
            objs[n].data.data = pool + at;
            objs[n].data.len = len;
            ptrs[n] = &objs[n];
            bytes += len;
            n++;
        }
        req.lease_id.data = (uint8_t *)lease;
        req.lease_id.len = LEASE_LEN;
        req.n_objects = n;
        req.objects = ptrs;
        size_t plen = coffer__v1__put_objects_request__get_packed_size(&req);
        cfr_buf_reset(msg);
        if (cfr_buf_reserve(msg, plen, err) != 0) {
            die("message", err->msg);
        }
        coffer__v1__put_objects_request__pack(&req, msg->data);
        if (cfr_rpc_cstream_send(call, msg->data, plen, err) != 0) {
            break; /* the server answered early: finish says why */
        }
        for (size_t i = 0; i < n && u->keep != NULL; i++) {
            ids_push(u->keep, idbuf[i]);
        }
        done += bytes;
        u->objects += n;
        u->bytes += bytes;
        atomic_fetch_add(&u->sent, bytes);
    }
    cfr_buf_init(&resp, (size_t)1 << 16);
    if (cfr_rpc_cstream_finish(call, &resp, &st, err) == 0) {
        Coffer__V1__PutObjectsResponse *pr =
            coffer__v1__put_objects_response__unpack(NULL, resp.len, resp.data);
        if (pr == NULL) {
            st = CFR_RPC_INTERNAL;
            CFR_ERR(err, CFR_ECORRUPT, "undecodable PutObjectsResponse");
        } else {
            u->stored += pr->stored;
            u->present += pr->already_present;
            coffer__v1__put_objects_response__free_unpacked(pr, NULL);
        }
    }
    cfr_buf_fini(&resp);
    cfr_rpc_call_free(call);
    return st;
}

static void *
uploader_main(void *arg)
{
    struct uploader *u = arg;
    struct cfr_rpc_client *cli = client_new(false);
    Coffer__V1__Object *objs = cfr_calloc(MISSING_IDS, sizeof(*objs));
    Coffer__V1__Object **ptrs =
        cfr_calloc(MISSING_IDS, sizeof(Coffer__V1__Object *));
    uint8_t(*idbuf)[ID_LEN] = cfr_calloc(MISSING_IDS, ID_LEN);
    uint8_t lease[LEASE_LEN];
    struct cfr_buf msg;
    struct cfr_err err;
    uint64_t s = u->seed;

    if (objs == NULL || ptrs == NULL || idbuf == NULL) {
        die("uploader", "out of memory");
    }
    cfr_buf_init(&msg, o.batch + ((size_t)2 << 20));
    u->status = open_lease(cli, &s, lease, &err);
    /* Everyone has a connection and a lease before the clock starts. */
    pthread_barrier_wait(u->start);
    while (u->status == CFR_RPC_OK &&
           (u->quota == 0 ? !atomic_load(u->stop) : u->bytes < u->quota)) {
        uint64_t left = u->quota == 0 ? UINT64_MAX : u->quota - u->bytes;
        uint64_t want = left < o.stream ? left : o.stream;
        u->status =
            put_stream(u, cli, lease, &s, want, objs, ptrs, idbuf, &msg, &err);
    }
    u->t_end = now_s();
    if (u->status != CFR_RPC_OK) {
        snprintf(u->err, sizeof(u->err), "%s", err.msg);
    }
    cfr_buf_fini(&msg);
    cfr_free(objs);
    cfr_free(ptrs);
    cfr_free(idbuf);
    cfr_rpc_client_free(cli);
    return NULL;
}

struct upload_set {
    struct uploader u[MAX_CLIENTS];
    unsigned n;
    pthread_barrier_t start;
    atomic_bool stop;
    double t0;
};

/* Starts n uploaders (quota bytes each, 0 = until stop); returns once the
 * clock has started. */
static void
uploads_start(struct upload_set *set, unsigned n, uint64_t quota, uint64_t seed,
              struct ids *keep)
{
    memset(set, 0, sizeof(*set));
    set->n = n;
    atomic_store(&set->stop, false);
    pthread_barrier_init(&set->start, NULL, n + 1);
    for (unsigned i = 0; i < n; i++) {
        struct uploader *u = &set->u[i];
        u->index = i;
        u->seed = seed * UINT64_C(1000003) + i;
        u->quota = quota;
        u->stop = &set->stop;
        u->start = &set->start;
        u->keep = i == 0 ? keep : NULL;
        atomic_store(&u->sent, 0);
        if (pthread_create(&u->thread, NULL, uploader_main, u) != 0) {
            die("pthread_create", strerror(errno));
        }
    }
    pthread_barrier_wait(&set->start);
    set->t0 = now_s();
}

/* Joins them; prints the phase line unless name is NULL. */
static int
uploads_finish(struct upload_set *set, const char *name)
{
    uint64_t objects = 0, bytes = 0, stored = 0, present = 0;
    double t_end = set->t0;
    int rc = 0;
    atomic_store(&set->stop, true);
    for (unsigned i = 0; i < set->n; i++) {
        struct uploader *u = &set->u[i];
        pthread_join(u->thread, NULL);
        if (u->status != CFR_RPC_OK) {
            fprintf(stderr, "vault_bench: uploader %u: %s: %s\n", i,
                    cfr_rpc_status_name(u->status), u->err);
            rc = 1;
        }
        objects += u->objects;
        bytes += u->bytes;
        stored += u->stored;
        present += u->present;
        t_end = u->t_end > t_end ? u->t_end : t_end;
    }
    pthread_barrier_destroy(&set->start);
    if (stored + present != objects) {
        fprintf(stderr,
                "vault_bench: sent %" PRIu64 " objects, vault counted %" PRIu64
                "\n",
                objects, stored + present);
        rc = 1;
    }
    if (name != NULL) {
        char r[160];
        double wall = t_end - set->t0;
        rss_end(r, sizeof(r));
        printf("phase=%s clients=%u objects=%" PRIu64 " bytes=%" PRIu64
               " stored=%" PRIu64 " already_present=%" PRIu64
               " wall_s=%.3f mb_s=%.1f obj_s=%.0f %s\n",
               name, set->n, objects, bytes, stored, present, wall,
               (double)bytes / 1e6 / wall, (double)objects / wall, r);
        fflush(stdout);
    }
    return rc;
}

static int
phase_upload(const char *name, unsigned n, uint64_t seed, struct ids *keep)
{
    static struct upload_set set;
    uint64_t total = o.mib << 20;
    rss_begin();
    uploads_start(&set, n, (total + n - 1) / n, seed, keep);
    return uploads_finish(&set, name);
}

/* ---- Missing latency ---------------------------------------------------- */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (1..100) of sorted v. */
static double
pct(const double *v, size_t n, unsigned p)
{
    size_t k = (p * n + 99) / 100;
    k = k == 0 ? 1 : (k > n ? n : k);
    return v[k - 1];
}

static int
phase_missing(const char *name, unsigned load, const struct ids *present,
              uint64_t seed)
{
    static struct upload_set set;
    struct cfr_rpc_client *cli = client_new(false);
    uint8_t(*idv)[ID_LEN] = cfr_calloc(MISSING_IDS, ID_LEN);
    ProtobufCBinaryData *bins = cfr_calloc(MISSING_IDS, sizeof(*bins));
    bool *absent = cfr_calloc(MISSING_IDS, sizeof(*absent));
    double *lat = cfr_calloc(o.queries, sizeof(*lat));
    uint8_t lease[LEASE_LEN];
    uint64_t s = seed;
    struct cfr_err err;
    int rc = 0;
    unsigned done = 0;
    uint64_t up0 = 0, up1 = 0;
    double t0, t1;
    char r[160];

    if (idv == NULL || bins == NULL || absent == NULL || lat == NULL) {
        die("missing", "out of memory");
    }
    if (present->n < MISSING_IDS / 2) {
        die(name, "fewer than 2,048 uploaded IDs to ask for");
    }
    if (open_lease(cli, &s, lease, &err) != CFR_RPC_OK) {
        die("OpenLease", err.msg);
    }
    rss_begin();
    if (load > 0) {
        uploads_start(&set, load, 0, seed + 77, NULL);
        /* Queries start once every uploader has had a message taken. */
        for (int i = 0; i < 6000; i++) {
            unsigned ready = 0;
            for (unsigned k = 0; k < load; k++) {
                ready += atomic_load(&set.u[k].sent) > 0;
            }
            if (ready == load) {
                break;
            }
            sleep_ms(5);
        }
        for (unsigned k = 0; k < load; k++) {
            up0 += atomic_load(&set.u[k].sent);
        }
    }
    t0 = now_s();
    /*
     * Under load a query can wait seconds (for a free handler thread),
     * so that phase also ends after load_secs: at least one query.
     */
    for (; done < o.queries && rc == 0; done++) {
        Coffer__V1__MissingRequest req = COFFER__V1__MISSING_REQUEST__INIT;
        Coffer__V1__MissingResponse *resp = NULL;
        size_t start = (size_t)(cfr_splitmix64(&s) % present->n);
        size_t n_abs = 0, k = 0;
        double secs = 0;
        int st;
        /* Exactly half absent, at random places. */
        for (size_t i = 0; i < MISSING_IDS; i++) {
            absent[i] = i < MISSING_IDS / 2;
        }
        for (size_t i = MISSING_IDS - 1; i > 0; i--) {
            size_t j = (size_t)(cfr_splitmix64(&s) % (i + 1));
            bool t = absent[i];
            absent[i] = absent[j];
            absent[j] = t;
        }
        for (size_t i = 0; i < MISSING_IDS; i++) {
            if (absent[i]) {
                random_id(&s, idv[i]);
                n_abs++;
            } else {
                memcpy(idv[i], present->v[(start + k++) % present->n], ID_LEN);
            }
            bins[i].data = idv[i];
            bins[i].len = ID_LEN;
        }
        req.n_ids = MISSING_IDS;
        req.ids = bins;
        req.lease_id.data = lease;
        req.lease_id.len = LEASE_LEN;
        st = unary(cli, "Missing", &req.base,
                   &coffer__v1__missing_response__descriptor,
                   (ProtobufCMessage **)&resp, &secs, &err);
        if (st != CFR_RPC_OK) {
            fprintf(stderr, "vault_bench: Missing: %s: %s\n",
                    cfr_rpc_status_name(st), err.msg);
            rc = 1;
            break;
        }
        /* The answer must be exactly the absent positions, ascending. */
        if (resp->n_missing != n_abs) {
            fprintf(stderr, "vault_bench: Missing said %zu of %zu absent\n",
                    resp->n_missing, n_abs);
            rc = 1;
        }
        for (size_t i = 0, m = 0; i < MISSING_IDS && rc == 0; i++) {
            if (absent[i] != (m < resp->n_missing && resp->missing[m] == i)) {
                fprintf(stderr, "vault_bench: Missing is wrong at %zu\n", i);
                rc = 1;
            }
            m += absent[i] ? 1 : 0;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        lat[done] = secs;
        if (load > 0 && now_s() - t0 > o.load_secs) {
            done++;
            break;
        }
    }
    t1 = now_s();
    if (load > 0) {
        for (unsigned k = 0; k < load; k++) {
            up1 += atomic_load(&set.u[k].sent);
        }
        rc |= uploads_finish(&set, NULL);
    }
    rss_end(r, sizeof(r));
    if (rc == 0) {
        qsort(lat, done, sizeof(*lat), cmp_double);
        printf("phase=%s load=%u queries=%u ids=%d p50_ms=%.2f p90_ms=%.2f "
               "p99_ms=%.2f max_ms=%.2f upload_mb_s=%.1f %s\n",
               name, load, done, MISSING_IDS, pct(lat, done, 50) * 1e3,
               pct(lat, done, 90) * 1e3, pct(lat, done, 99) * 1e3,
               lat[done - 1] * 1e3, (double)(up1 - up0) / 1e6 / (t1 - t0), r);
        fflush(stdout);
    }
    cfr_free(idv);
    cfr_free(bins);
    cfr_free(absent);
    cfr_free(lat);
    cfr_rpc_client_free(cli);
    return rc;
}

/* ---- main --------------------------------------------------------------- */

static uint64_t
num(const char *flag, const char *v, uint64_t lo, uint64_t hi)
{
    char *end = NULL;
    unsigned long long x;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "vault_bench: %s: want %" PRIu64 "..%" PRIu64 "\n",
                flag, lo, hi);
        exit(2);
    }
    return x;
}

static void
parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "vault_bench: %s needs a value\n", a);
            exit(2);
        }
        i++;
        if (strcmp(a, "--target") == 0) {
            o.target = v;
        } else if (strcmp(a, "--pki") == 0) {
            o.pki = v;
        } else if (strcmp(a, "--tenant") == 0) {
            o.tenant = v;
        } else if (strcmp(a, "--ident") == 0) {
            o.ident = v;
        } else if (strcmp(a, "--pid") == 0) {
            o.pid = (long)num(a, v, 1, 1u << 30);
        } else if (strcmp(a, "--mib") == 0) {
            o.mib = num(a, v, 1, 1u << 20);
        } else if (strcmp(a, "--clients") == 0) {
            o.clients = (unsigned)num(a, v, 1, MAX_CLIENTS);
        } else if (strcmp(a, "--batch-kib") == 0) {
            o.batch = (size_t)num(a, v, 64, 60u << 10) << 10;
        } else if (strcmp(a, "--stream-mib") == 0) {
            o.stream = (size_t)num(a, v, 1, 1u << 20) << 20;
        } else if (strcmp(a, "--queries") == 0) {
            o.queries = (unsigned)num(a, v, 1, 100000);
        } else if (strcmp(a, "--load-secs") == 0) {
            o.load_secs = (unsigned)num(a, v, 1, 86400);
        } else if (strcmp(a, "--avg-kib") == 0) {
            o.avg_kib = (size_t)num(a, v, 1, 1024);
            if ((o.avg_kib & (o.avg_kib - 1)) != 0) {
                fprintf(stderr, "vault_bench: --avg-kib: a power of two\n");
                exit(2);
            }
        } else if (strcmp(a, "--seed") == 0) {
            o.seed = num(a, v, 0, UINT64_MAX);
        } else if (strcmp(a, "--phases") == 0) {
            o.phases = v;
        } else {
            fprintf(stderr, "vault_bench: unknown option %s\n", a);
            exit(2);
        }
    }
    if (o.target == NULL || o.pki == NULL) {
        fprintf(stderr,
                "usage: vault_bench --target HOST:PORT --pki DIR [--pid N] "
                "[--mib 1024] [--clients 8] [--batch-kib 4096] "
                "[--stream-mib 64] [--queries 200] [--load-secs 60] "
                "[--avg-kib 32] "
                "[--seed 1] [--phases u1,uN,m0,mN]\n");
        exit(2);
    }
}

static bool
has_phase(const char *p)
{
    size_t n = strlen(p);
    for (const char *s = o.phases; (s = strstr(s, p)) != NULL; s += n) {
        if ((s == o.phases || s[-1] == ',') && (s[n] == ',' || s[n] == '\0')) {
            return true;
        }
    }
    return false;
}

int
main(int argc, char **argv)
{
    struct ids present = {0};
    struct cfr_err err;
    char name[64];
    int rc = 0;

    parse(argc, argv);
    {
        char f[96];
        ca_pem = slurp(o.pki, "ca.pem");
        snprintf(f, sizeof(f), "%s.pem", o.ident);
        cert_pem = slurp(o.pki, f);
        snprintf(f, sizeof(f), "%s.key", o.ident);
        key_pem = slurp(o.pki, f);
        op_cert_pem = slurp(o.pki, "operator.pem");
        op_key_pem = slurp(o.pki, "operator.key");
    }
    build_data();
    cfr_err_clear(&err);
    if (cfr_rpc_global_init(&err) != 0) {
        die("gRPC", err.msg);
    }
    pthread_mutex_init(&rss.lock, NULL);
    if (o.pid > 0 && pthread_create(&rss.thread, NULL, rss_main, NULL) != 0) {
        die("pthread_create", strerror(errno));
    }
    register_tenant();
    printf("setup target=%s objects_mean_b=%.0f sizes=%zu batch_b=%zu "
           "stream_b=%zu mib=%" PRIu64 "\n",
           o.target, mean_size(), n_sizes, o.batch, o.stream, o.mib);
    fflush(stdout);

    if (has_phase("u1")) {
        rc |= phase_upload("u1", 1, o.seed * 16 + 1, &present);
    }
    if (rc == 0 && has_phase("uN")) {
        snprintf(name, sizeof(name), "u%u", o.clients);
        rc |= phase_upload(name, o.clients, o.seed * 16 + 2,
                           present.n == 0 ? &present : NULL);
    }
    if (rc == 0 && (has_phase("m0") || has_phase("mN")) &&
        present.n < MISSING_IDS) {
        /* Something to find: a small upload first (no phase line). */
        static struct upload_set set;
        uploads_start(&set, 1, (uint64_t)MISSING_IDS * (o.avg_kib << 11),
                      o.seed * 16 + 3, &present);
        rc |= uploads_finish(&set, NULL);
    }
    if (rc == 0 && has_phase("m0")) {
        rc |= phase_missing("m0", 0, &present, o.seed * 16 + 4);
    }
    if (rc == 0 && has_phase("mN")) {
        snprintf(name, sizeof(name), "m%u", o.clients);
        rc |= phase_missing(name, o.clients, &present, o.seed * 16 + 5);
    }

    atomic_store(&rss.stop, true);
    if (o.pid > 0) {
        pthread_join(rss.thread, NULL);
    }
    cfr_free(present.v);
    cfr_free(sizes);
    cfr_free(pool);
    cfr_free(ca_pem);
    cfr_free(cert_pem);
    cfr_free(key_pem);
    cfr_free(op_cert_pem);
    cfr_free(op_key_pem);
    /* No cfr_rpc_global_fini: it can block ~10 s in grpc_shutdown and
     * would only add to every repetition; the process ends here. */
    return rc;
}
