/*
 * vault_diskfull_test.c - coffer-vault on a disk that fills up: a real
 * vault process whose data directory is a small tmpfs, filled by a filler
 * file, driven by a test acting as a real agent (sealed envelopes).
 *
 * What it proves:
 *  1. When the disk fills, the failing call gets a clear status
 *     (UNAVAILABLE "storage failure; ...") and the log names the cause; no
 *     call is acknowledged after the failure.
 *  2. The vault stops by itself with exit code 1 (docs/VAULT.md: a storage
 *     write failed, never retried).
 *  3. Once space returns (the filler is deleted) the vault restarts on the
 *     same data directory; every acknowledged object reads back byte for
 *     byte, every acknowledged snapshot is listed, no snapshot appears that
 *     was not at least in flight, anything reported present is intact, and
 *     new uploads succeed.
 *
 * Needs root (mount(2)); otherwise the test is skipped with a message.
 * Invariant: the tmpfs is unmounted and the directory removed on every
 * path, failed assertions included (cmocka teardown).
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>       /* errno */
#include <fcntl.h>       /* open */
#include <signal.h>      /* SIGKILL, SIGTERM */
#include <stdio.h>       /* snprintf */
#include <stdlib.h>      /* qsort */
#include <string.h>      /* memcmp, strstr */
#include <sys/mount.h>   /* mount, umount2 */
#include <sys/stat.h>    /* mkdir */
#include <sys/statvfs.h> /* statvfs: free space for the filler */
#include <sys/wait.h>    /* waitpid: the vault's own exit */
#include <time.h>        /* clock_gettime, nanosleep */
#include <unistd.h>      /* geteuid, unlink, write */

#include "coffer_vault.pb-c.h" /* wire messages */
#include "env.h"               /* sealing real envelopes */
#include "id.h"                /* cfr_id_plain for reference pages */
#include "keys.h"              /* a tenant keyring */
#include "mem.h"               /* cfr_malloc */
#include "snap.h"              /* reference lists and headers */
#include "vault_support.h"     /* the harness */

#define ID_LEN 32
/* Small enough to fill in seconds, large enough for RocksDB to open. */
#define FS_SIZE "64m"
/* Space left beside the filler: several batches fit before it runs out. */
#define HEADROOM    ((uint64_t)12 << 20)
#define CHUNK_LEN   ((size_t)160 << 10)
#define BATCH       6
#define MAX_ROUNDS  200
#define FILL_BUDGET 40000 /* ms to reach the failure */
#define EXIT_WAIT   15000 /* ms for the vault to stop by itself */

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *keyring;
static struct cfr_session *session;
static char mnt[2 * VS_PATH_MAX];
static char filler[2 * VS_PATH_MAX + 16];
static bool mounted;
static char skip_reason[3 * VS_PATH_MAX];

/* ---- small helpers (as in vault_test.c) -------------------------------- */

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct obj {
    uint8_t id[ID_LEN];
    int kind;
    uint8_t *data;
    size_t len;
};

struct objset {
    struct obj *v;
    size_t n, alloc;
};

static void
objset_add(struct objset *s, const uint8_t id[ID_LEN], int kind,
           const uint8_t *data, size_t len)
{
    if (s->n == s->alloc) {
        s->alloc = s->alloc ? 2 * s->alloc : 64;
        s->v = cfr_realloc(s->v, s->alloc * sizeof(*s->v));
        assert_non_null(s->v);
    }
    memcpy(s->v[s->n].id, id, ID_LEN);
    s->v[s->n].kind = kind;
    s->v[s->n].data = cfr_malloc(len + 1);
    assert_non_null(s->v[s->n].data);
    memcpy(s->v[s->n].data, data, len);
    s->v[s->n].len = len;
    s->n++;
}

static void
objset_add_all(struct objset *dst, const struct objset *src)
{
    for (size_t i = 0; i < src->n; i++) {
        objset_add(dst, src->v[i].id, src->v[i].kind, src->v[i].data,
                   src->v[i].len);
    }
}

static void
objset_fini(struct objset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        cfr_free(s->v[i].data);
    }
    cfr_free(s->v);
    memset(s, 0, sizeof(*s));
}

static const struct obj *
objset_find(const struct objset *s, const uint8_t id[ID_LEN])
{
    for (size_t i = 0; i < s->n; i++) {
        if (memcmp(s->v[i].id, id, ID_LEN) == 0) {
            return &s->v[i];
        }
    }
    return NULL;
}

/* Seals a chunk of len bytes derived from seed into s. */
static void
make_chunk(struct objset *s, uint64_t seed, size_t len)
{
    uint8_t *plain = cfr_malloc(len + 1);
    uint8_t id[ID_LEN];
    struct cfr_buf env_buf;
    struct cfr_err err;
    uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;

    assert_non_null(plain);
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* Mostly random: compression must not make the disk last forever. */
        plain[i] = (i / 4096) % 4 ? (uint8_t)x : (uint8_t)(seed & 0x7f);
    }
    cfr_keyring_chunk_id(keyring, plain, len, id);
    cfr_buf_init(&env_buf, len + CFR_ENV_OVERHEAD + (1u << 20));
    assert_int_equal(
        cfr_env_seal(session, CFR_ENV_CHUNK, id, plain, len, &env_buf, &err),
        0);
    objset_add(s, id, COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED, env_buf.data,
               env_buf.len);
    cfr_buf_fini(&env_buf);
    cfr_free(plain);
}

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(((const struct obj *)a)->id, ((const struct obj *)b)->id,
                  ID_LEN);
}

static int
refs_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
         uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    (void)level;
    (void)err;
    struct objset *pages = ctx;
    cfr_id_plain(page, len, id_r);
    if (objset_find(pages, id_r) == NULL) {
        objset_add(pages, id_r, COFFER__V1__OBJECT_KIND__OBJECT_KIND_REF_PAGE,
                   page, len);
    }
    return 0;
}

struct snapshot {
    struct objset pages;
    struct cfr_tree_root root;
    uint8_t mailbox_id[ID_LEN];
    uint8_t header_id[ID_LEN];
    uint8_t *header;
    size_t header_len;
};

static void
make_snapshot(struct snapshot *sn, const struct objset *chunks,
              const char *mailbox, uint64_t tag)
{
    struct cfr_snap_refs_writer *w = NULL;
    struct cfr_snap_header h;
    struct cfr_buf hb, eb;
    struct cfr_err err;
    struct obj *sorted = cfr_calloc(chunks->n + 1, sizeof(*sorted));

    memset(sn, 0, sizeof(*sn));
    assert_non_null(sorted);
    memcpy(sorted, chunks->v, chunks->n * sizeof(*sorted));
    qsort(sorted, chunks->n, sizeof(*sorted), cmp_id);
    assert_int_equal(
        cfr_snap_refs_writer_new(NULL, refs_put, &sn->pages, &w, &err), 0);
    for (size_t i = 0; i < chunks->n; i++) {
        if (i > 0 && memcmp(sorted[i].id, sorted[i - 1].id, ID_LEN) == 0) {
            continue;
        }
        assert_int_equal(cfr_snap_refs_writer_add(w, sorted[i].id, &err), 0);
    }
    assert_int_equal(cfr_snap_refs_writer_finish(w, &sn->root, &err), 0);
    cfr_snap_refs_writer_free(w);
    cfr_free(sorted);

    memset(&h, 0, sizeof(h));
    snprintf(h.mailbox, sizeof(h.mailbox), "%s", mailbox);
    snprintf(h.host, sizeof(h.host), "test-host");
    snprintf(h.agent_version, sizeof(h.agent_version), "vault_diskfull_test");
    h.agent_time_ms = (int64_t)tag;
    h.refs = sn->root;
    h.manifest = sn->root;
    cfr_keyring_name_id(keyring, mailbox, strlen(mailbox), sn->mailbox_id);
    cfr_buf_init(&hb, CFR_SNAP_HEADER_MAX);
    assert_int_equal(cfr_snap_header_encode(&h, &hb, &err), 0);
    cfr_id_plain(hb.data, hb.len, sn->header_id);
    cfr_buf_init(&eb, 1u << 20);
    assert_int_equal(cfr_env_seal(session, CFR_ENV_SNAPSHOT_HEADER,
                                  sn->header_id, hb.data, hb.len, &eb, &err),
                     0);
    sn->header = cfr_buf_steal(&eb, &sn->header_len);
    cfr_buf_fini(&hb);
    cfr_buf_fini(&eb);
}

static void
snapshot_fini(struct snapshot *sn)
{
    objset_fini(&sn->pages);
    cfr_free(sn->header);
}

/* ---- RPC wrappers: each returns the status and the message ------------- */

static int
open_lease(struct cfr_rpc_client *cli, uint8_t lease[16], struct cfr_err *err)
{
    Coffer__V1__OpenLeaseRequest req = COFFER__V1__OPEN_LEASE_REQUEST__INIT;
    Coffer__V1__OpenLeaseResponse *resp = NULL;
    int st;
    req.session_public.data = (uint8_t *)cfr_session_public(session);
    req.session_public.len = 32;
    st = vs_unary(cli, "OpenLease", &req.base,
                  &coffer__v1__open_lease_response__descriptor,
                  (ProtobufCMessage **)&resp, err);
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
        assert_int_equal(resp->lease_id.len, 16);
        memcpy(lease, resp->lease_id.data, 16);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

/* PutObjects of s in messages of at most per_msg objects. */
static int
put_objects(struct cfr_rpc_client *cli, const uint8_t lease[16],
            const struct objset *s, size_t per_msg, struct cfr_err *err)
{
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf resp;
    int st = CFR_RPC_UNKNOWN;

    cfr_buf_init(&resp, 1u << 20);
    if (cfr_rpc_cstream_open(cli, "/coffer.v1.Vault/PutObjects", 20000, &call,
                             err) != 0) {
        goto out;
    }
    for (size_t i = 0; i < s->n; i += per_msg) {
        size_t n = s->n - i < per_msg ? s->n - i : per_msg;
        Coffer__V1__PutObjectsRequest req =
            COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
        Coffer__V1__Object *o = cfr_calloc(n, sizeof(*o));
        Coffer__V1__Object **p = cfr_calloc(n, sizeof(*p));
        size_t len;
        uint8_t *buf;
        assert_non_null(o);
        assert_non_null(p);
        for (size_t k = 0; k < n; k++) {
            Coffer__V1__Object init = COFFER__V1__OBJECT__INIT;
            o[k] = init;
            o[k].id.data = s->v[i + k].id;
            o[k].id.len = ID_LEN;
            o[k].kind = s->v[i + k].kind;
            o[k].data.data = s->v[i + k].data;
            o[k].data.len = s->v[i + k].len;
            p[k] = &o[k];
        }
        req.lease_id.data = (uint8_t *)lease;
        req.lease_id.len = 16;
        req.n_objects = n;
        req.objects = p;
        len = coffer__v1__put_objects_request__get_packed_size(&req);
        buf = cfr_malloc(len + 1);
        assert_non_null(buf);
        coffer__v1__put_objects_request__pack(&req, buf);
        int rc = cfr_rpc_cstream_send(call, buf, len, err);
        cfr_free(buf);
        cfr_free(o);
        cfr_free(p);
        if (rc != 0) {
            break;
        }
    }
    (void)cfr_rpc_cstream_finish(call, &resp, &st, err);
    if (st == CFR_RPC_OK) {
        Coffer__V1__PutObjectsResponse *r =
            coffer__v1__put_objects_response__unpack(NULL, resp.len, resp.data);
        assert_non_null(r);
        /* An acknowledgement covers every object sent. */
        assert_int_equal(r->stored + r->already_present, s->n);
        coffer__v1__put_objects_response__free_unpacked(r, NULL);
    }
out:
    cfr_rpc_call_free(call);
    cfr_buf_fini(&resp);
    return st;
}

static int
commit(struct cfr_rpc_client *cli, const uint8_t lease[16],
       const struct snapshot *sn, struct cfr_err *err)
{
    Coffer__V1__CommitRequest req = COFFER__V1__COMMIT_REQUEST__INIT;
    Coffer__V1__TreeRoot root = COFFER__V1__TREE_ROOT__INIT;
    Coffer__V1__CommitResponse *resp = NULL;
    int st;

    root.id.data = (uint8_t *)sn->root.id;
    root.id.len = ID_LEN;
    root.height = sn->root.height;
    root.entries = sn->root.entries;
    req.lease_id.data = (uint8_t *)lease;
    req.lease_id.len = 16;
    req.mailbox_id.data = (uint8_t *)sn->mailbox_id;
    req.mailbox_id.len = ID_LEN;
    req.header_id.data = (uint8_t *)sn->header_id;
    req.header_id.len = ID_LEN;
    req.header.data = sn->header;
    req.header.len = sn->header_len;
    req.refs = &root;
    st = vs_unary(cli, "Commit", &req.base,
                  &coffer__v1__commit_response__descriptor,
                  (ProtobufCMessage **)&resp, err);
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
        assert_non_null(resp->snapshot);
        assert_memory_equal(resp->snapshot->header_id.data, sn->header_id,
                            ID_LEN);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return st;
}

/* Marks which of s[from..from+n) the vault lacks; returns the status. */
static int
missing(struct cfr_rpc_client *cli, const struct objset *s, size_t from,
        size_t n, bool *is_missing)
{
    Coffer__V1__MissingRequest req = COFFER__V1__MISSING_REQUEST__INIT;
    Coffer__V1__MissingResponse *resp = NULL;
    ProtobufCBinaryData *ids = cfr_calloc(n + 1, sizeof(*ids));
    struct cfr_err err;
    int st;

    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        ids[i].data = s->v[from + i].id;
        ids[i].len = ID_LEN;
        is_missing[i] = false;
    }
    req.n_ids = n;
    req.ids = ids;
    st = vs_unary(cli, "Missing", &req.base,
                  &coffer__v1__missing_response__descriptor,
                  (ProtobufCMessage **)&resp, &err);
    if (st == CFR_RPC_OK) {
        assert_non_null(resp);
        for (size_t i = 0; i < resp->n_missing; i++) {
            assert_true(resp->missing[i] < n);
            is_missing[resp->missing[i]] = true;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    cfr_free(ids);
    return st;
}

/* GetObjects of s[from..from+n) into got; counts the missing. */
static int
get_objects(struct cfr_rpc_client *cli, const struct objset *s, size_t from,
            size_t n, struct objset *got, size_t *n_missing_r)
{
    Coffer__V1__GetObjectsRequest req = COFFER__V1__GET_OBJECTS_REQUEST__INIT;
    ProtobufCBinaryData *ids = cfr_calloc(n + 1, sizeof(*ids));
    struct cfr_rpc_call *call = NULL;
    struct cfr_buf msg;
    struct cfr_err err;
    uint8_t *buf;
    size_t len;
    int st = CFR_RPC_UNKNOWN, rc;

    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) {
        ids[i].data = s->v[from + i].id;
        ids[i].len = ID_LEN;
    }
    req.n_ids = n;
    req.ids = ids;
    len = coffer__v1__get_objects_request__get_packed_size(&req);
    buf = cfr_malloc(len + 1);
    assert_non_null(buf);
    coffer__v1__get_objects_request__pack(&req, buf);
    *n_missing_r = 0;
    cfr_buf_init(&msg, (size_t)80 << 20);
    if (cfr_rpc_sstream_open(cli, "/coffer.v1.Vault/GetObjects", buf, len,
                             20000, &call, &err) != 0) {
        goto out;
    }
    while ((rc = cfr_rpc_sstream_next(call, &msg, &st, &err)) == 1) {
        Coffer__V1__GetObjectsResponse *r =
            coffer__v1__get_objects_response__unpack(NULL, msg.len, msg.data);
        assert_non_null(r);
        for (size_t i = 0; i < r->n_objects; i++) {
            assert_int_equal(r->objects[i]->id.len, ID_LEN);
            objset_add(got, r->objects[i]->id.data, r->objects[i]->kind,
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
    cfr_free(ids);
    return st;
}

/*
 * Every object of s that the vault reports present must read back byte for
 * byte; with must_all, every one must be present. Returns how many were
 * present.
 */
static size_t
check_objects(struct cfr_rpc_client *agent, struct cfr_rpc_client *rest,
              const struct objset *s, bool must_all)
{
    size_t present = 0;
    for (size_t from = 0; from < s->n; from += 500) {
        size_t n = s->n - from < 500 ? s->n - from : 500;
        bool *miss = cfr_calloc(n + 1, sizeof(bool));
        struct objset want = {0}, got = {0};
        size_t n_missing = 0;

        assert_non_null(miss);
        assert_int_equal(missing(agent, s, from, n, miss), CFR_RPC_OK);
        for (size_t i = 0; i < n; i++) {
            if (must_all) {
                assert_false(miss[i]);
            }
            if (!miss[i]) {
                const struct obj *o = &s->v[from + i];
                objset_add(&want, o->id, o->kind, o->data, o->len);
            }
        }
        if (want.n > 0) {
            assert_int_equal(
                get_objects(rest, &want, 0, want.n, &got, &n_missing),
                CFR_RPC_OK);
            /* "Present" must mean readable, not a torn leftover. */
            assert_int_equal(n_missing, 0);
            assert_int_equal(got.n, want.n);
            for (size_t i = 0; i < want.n; i++) {
                const struct obj *g = objset_find(&got, want.v[i].id);
                assert_non_null(g);
                assert_int_equal(g->kind, want.v[i].kind);
                assert_int_equal(g->len, want.v[i].len);
                assert_memory_equal(g->data, want.v[i].data, g->len);
            }
        }
        present += want.n;
        objset_fini(&want);
        objset_fini(&got);
        cfr_free(miss);
    }
    return present;
}

static bool
log_has(const char *needle)
{
    char *buf = cfr_malloc(1u << 20);
    bool found;
    assert_non_null(buf);
    vs_vault_log(&vault, buf, 1u << 20);
    found = strstr(buf, needle) != NULL;
    cfr_free(buf);
    return found;
}

/* Fills the file system but for headroom bytes, with a file of its own. */
static void
write_filler(uint64_t headroom)
{
    struct statvfs sv;
    uint64_t avail, want, done = 0;
    uint8_t *block = cfr_calloc(1, 1u << 20);
    int fd;

    assert_non_null(block);
    assert_int_equal(statvfs(mnt, &sv), 0);
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    assert_true(avail > headroom);
    want = avail - headroom;
    fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    while (done < want) {
        size_t n = want - done < (1u << 20) ? (size_t)(want - done) : 1u << 20;
        ssize_t w = write(fd, block, n);
        assert_true(w > 0);
        done += (uint64_t)w;
    }
    assert_int_equal(close(fd), 0);
    cfr_free(block);
}

/*
 * Waits for the vault to exit on its own; returns its exit code, 128 +
 * signal, or -1 when it was still running after timeout_ms (then it is
 * killed). vs_vault_alive would reap the status without telling it.
 */
static int
wait_own_exit(int64_t timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    int st;
    while (vault.pid > 0) {
        pid_t r = waitpid(vault.pid, &st, WNOHANG);
        if (r == vault.pid) {
            vault.pid = -1;
            return WIFEXITED(st)     ? WEXITSTATUS(st)
                   : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                                     : -1;
        }
        if (r < 0 || now_ms() > end) {
            vs_vault_stop(&vault, SIGKILL, 5000);
            return -1;
        }
        sleep_ms(20);
    }
    return -1;
}

/* ---- the test ---------------------------------------------------------- */

static void
test_vault_disk_full_fails_cleanly_and_recovers(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = NULL, *rest = NULL;
    struct objset acked = {0}, attempted = {0}, acked_snaps = {0};
    struct objset in_flight_snaps = {0}, in_flight_objs = {0};
    const char *failed_op = NULL;
    char failed_msg[sizeof(((struct cfr_err *)0)->msg)];
    int failed_st = CFR_RPC_OK, code;
    uint64_t seq = 1;
    int64_t start;
    size_t rounds = 0, present_unacked;

    if (skip_reason[0] != '\0') {
        print_message("vault_diskfull_test: skipped: %s\n", skip_reason);
        skip();
    }
    assert_int_equal(vs_vault_start(&vault, 30000), 0);
    agent = vs_client(&vault, "agent");
    rest = vs_client(&vault, "acme-restore");
    assert_non_null(agent);
    assert_non_null(rest);

    /* Fill only once the tenant exists: the failure must hit an upload,
     * not the creation of the tenant's database. */
    write_filler(HEADROOM);

    start = now_ms();
    while (failed_op == NULL && rounds < MAX_ROUNDS &&
           now_ms() - start < FILL_BUDGET) {
        struct objset chunks = {0};
        struct snapshot sn;
        struct cfr_err err;
        uint8_t lease[16];
        int st;

        cfr_err_clear(&err);
        for (int i = 0; i < BATCH; i++) {
            make_chunk(&chunks, seq++, CHUNK_LEN + (size_t)i * 1000);
        }
        make_snapshot(&sn, &chunks, "INBOX", seq++);
        objset_add_all(&attempted, &chunks);
        objset_add_all(&attempted, &sn.pages);
        if ((st = open_lease(agent, lease, &err)) != CFR_RPC_OK) {
            failed_op = "OpenLease";
        } else if ((st = put_objects(agent, lease, &chunks, 2, &err)) !=
                   CFR_RPC_OK) {
            failed_op = "PutObjects (chunks)";
        } else {
            objset_add_all(&acked, &chunks);
            if ((st = put_objects(agent, lease, &sn.pages, 8, &err)) !=
                CFR_RPC_OK) {
                failed_op = "PutObjects (pages)";
            } else {
                objset_add_all(&acked, &sn.pages);
                objset_add(&in_flight_snaps, sn.header_id, 0, sn.header,
                           sn.header_len);
                objset_add_all(&in_flight_objs, &chunks);
                objset_add_all(&in_flight_objs, &sn.pages);
                if ((st = commit(agent, lease, &sn, &err)) != CFR_RPC_OK) {
                    failed_op = "Commit";
                } else {
                    objset_add(&acked_snaps, sn.header_id, 0, sn.header,
                               sn.header_len);
                }
            }
        }
        if (failed_op != NULL) {
            failed_st = st;
            snprintf(failed_msg, sizeof(failed_msg), "%s", err.msg);
        }
        snapshot_fini(&sn);
        objset_fini(&chunks);
        rounds++;
    }
    print_message("disk full after %zu rounds (%.1f s): %zu objects and %zu "
                  "snapshots acknowledged; %s got %s: %s\n",
                  rounds, (double)(now_ms() - start) / 1000.0, acked.n,
                  acked_snaps.n, failed_op != NULL ? failed_op : "nothing",
                  cfr_rpc_status_name(failed_st),
                  failed_op != NULL ? failed_msg : "-");
    /* The disk did fill: 12 MiB cannot take 200 rounds of ~1 MiB. */
    assert_non_null(failed_op);
    assert_true(acked_snaps.n > 0);

    /* 1. A clear status, with the documented message, not a dropped
     * connection; the cause (no space) is in the vault's log. */
    assert_int_equal(failed_st, CFR_RPC_UNAVAILABLE);
    assert_non_null(strstr(failed_msg, "storage failure"));
    /* Nothing is acknowledged after the failure (the vault may still be
     * answering for a moment before it stops). */
    {
        struct objset late = {0};
        struct cfr_err err;
        uint8_t lease[16];
        int st;
        make_chunk(&late, 999999, 1000);
        st = open_lease(agent, lease, &err);
        if (st == CFR_RPC_OK) {
            st = put_objects(agent, lease, &late, 1, &err);
        }
        assert_int_not_equal(st, CFR_RPC_OK);
        objset_add_all(&attempted, &late);
        objset_fini(&late);
    }

    /* 2. The vault stops by itself with the storage-failure code. */
    code = wait_own_exit(EXIT_WAIT);
    assert_int_equal(code, 1);
    assert_true(log_has("vault.fatal"));
    assert_true(log_has("No space left on device") || log_has("no space") ||
                log_has("NoSpace"));
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    agent = rest = NULL;

    /* 3. Space returns: the same data directory serves again. */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(vs_vault_start(&vault, 30000), 0);
    agent = vs_client(&vault, "agent");
    rest = vs_client(&vault, "acme-restore");
    assert_non_null(agent);
    assert_non_null(rest);
    assert_int_equal(check_objects(agent, rest, &acked, true), acked.n);
    /* Unacknowledged objects may or may not be there, but never torn. */
    present_unacked = check_objects(agent, rest, &attempted, false) - acked.n;
    {
        int st;
        Coffer__V1__ListSnapshotsRequest req =
            COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
        Coffer__V1__ListSnapshotsResponse *ls = NULL;
        struct cfr_err err;
        req.with_headers = true;
        st = vs_unary(rest, "ListSnapshots", &req.base,
                      &coffer__v1__list_snapshots_response__descriptor,
                      (ProtobufCMessage **)&ls, &err);
        assert_int_equal(st, CFR_RPC_OK);
        assert_non_null(ls);
        for (size_t i = 0; i < acked_snaps.n; i++) {
            bool found = false;
            for (size_t k = 0; k < ls->n_snapshots; k++) {
                if (memcmp(ls->snapshots[k]->header_id.data,
                           acked_snaps.v[i].id, ID_LEN) == 0) {
                    found = true;
                    assert_int_equal(ls->snapshots[k]->header.len,
                                     acked_snaps.v[i].len);
                    assert_memory_equal(ls->snapshots[k]->header.data,
                                        acked_snaps.v[i].data,
                                        acked_snaps.v[i].len);
                }
            }
            assert_true(found);
        }
        /* A snapshot beyond the acknowledged ones was at least in flight
         * (its commit failed, perhaps after reaching the disk) and then
         * every object it names was acknowledged and is intact. */
        for (size_t k = 0; k < ls->n_snapshots; k++) {
            const uint8_t *hid = ls->snapshots[k]->header_id.data;
            assert_int_equal(ls->snapshots[k]->header_id.len, ID_LEN);
            if (objset_find(&acked_snaps, hid) == NULL) {
                assert_non_null(objset_find(&in_flight_snaps, hid));
            }
        }
        print_message("after restart: %zu snapshots listed (%zu "
                      "acknowledged), %zu unacknowledged objects present "
                      "and intact\n",
                      ls->n_snapshots, acked_snaps.n, present_unacked);
        protobuf_c_message_free_unpacked(&ls->base, NULL);
    }
    assert_int_equal(check_objects(agent, rest, &in_flight_objs, true),
                     in_flight_objs.n);

    /* New uploads succeed and read back. */
    {
        struct objset chunks = {0};
        struct snapshot sn;
        struct cfr_err err;
        uint8_t lease[16];
        for (int i = 0; i < BATCH; i++) {
            make_chunk(&chunks, seq++, CHUNK_LEN);
        }
        make_snapshot(&sn, &chunks, "Sent", seq++);
        assert_int_equal(open_lease(agent, lease, &err), CFR_RPC_OK);
        assert_int_equal(put_objects(agent, lease, &chunks, 2, &err),
                         CFR_RPC_OK);
        assert_int_equal(put_objects(agent, lease, &sn.pages, 8, &err),
                         CFR_RPC_OK);
        assert_int_equal(commit(agent, lease, &sn, &err), CFR_RPC_OK);
        assert_int_equal(check_objects(agent, rest, &chunks, true), chunks.n);
        snapshot_fini(&sn);
        objset_fini(&chunks);
    }
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    assert_int_equal(vs_vault_stop(&vault, SIGTERM, 30000), 0);

    objset_fini(&acked);
    objset_fini(&attempted);
    objset_fini(&acked_snaps);
    objset_fini(&in_flight_snaps);
    objset_fini(&in_flight_objs);
}

/* ---- setup ------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;

    skip_reason[0] = '\0';
    mounted = false;
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&vault, &env, "full") != 0) {
        return -1;
    }
    /* The harness puts the data directory at <vault dir>/data. */
    snprintf(mnt, sizeof(mnt), "%s/data", vault.dir);
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    if (mkdir(mnt, 0700) != 0) {
        perror(mnt);
        return -1;
    }
    if (geteuid() != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "needs root to mount a tmpfs (CI runs as root)");
    } else if (mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV,
                     "size=" FS_SIZE ",mode=0700") != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "cannot mount a tmpfs on %s: %s", mnt, strerror(errno));
    } else {
        mounted = true;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGKILL, 10000);
    }
    if (mounted) {
        /* Lazily if something still holds it: never leave a mount. */
        if (umount2(mnt, 0) != 0 && umount2(mnt, MNT_DETACH) != 0) {
            fprintf(stderr, "vault_diskfull_test: cannot unmount %s: %s\n", mnt,
                    strerror(errno));
        }
        mounted = false;
    }
    vs_env_fini(&env);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    session = NULL;
    keyring = NULL;
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_vault_disk_full_fails_cleanly_and_recovers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
