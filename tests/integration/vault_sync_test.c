/*
 * vault_sync_test.c - replication between three real coffer-vault
 * processes over mutual TLS on 127.0.0.1 (vault/sync.c, the Sync*
 * handlers of vault/server.c, docs/REPLICATION.md).
 *
 * Set-up: vaults A (region r1), B (r2) and C (r3) on fixed loopback ports,
 * each serving with and pulling through its own peer certificate
 * (vault-a/b/c: coffer://vault/<name>), each listing the other two as
 * peers, sync.interval "0" so rounds run only when the test asks
 * (System SYNC as the operator) and finish when SYNC_STATUS says so. C
 * pulls at most 256 KiB/s. Tenant acme may live anywhere; globex only in
 * r1 and r2. Data always enters through A with the tenants' agent
 * certificates; everything else arrives by replication.
 *
 * The cases run in order on the same vaults:
 *  1. convergence: B and C end with A's snapshots, every object byte for
 *     byte (read with acme-restore), and equal SyncDigest answers;
 *  2. placement: globex reaches B, never C; C (region r3) asking A for
 *     globex is refused FAILED_PRECONDITION, vault-x (listed by no one)
 *     PERMISSION_DENIED, a tenant's restore certificate too;
 *  2b. batching: B catches up on 20 small globex snapshots with 2 SyncGet
 *     calls (A's audit lines), not 2 per snapshot, byte for byte and in
 *     A's order per mailbox;
 *  2c. fallback: a chunk of one of two new globex snapshots damaged on A;
 *     B still takes the other (pulled one by one after the batch failed);
 *  3. holds: a hold made on A reaches B, and the later release wins;
 *  4. repair: one stored object corrupted on B is served as missing, then
 *     repaired from a peer; GetObjects returns the exact bytes and
 *     SYNC_STATUS counts repairs = 1;
 *  4b. scheduled scrub: a globex chunk damaged on B's disk and never read
 *     is found by B's one-second scrub, repaired from A (C, outside
 *     globex's regions, is skipped), counted once and notified exactly
 *     once as vault.repair to the tenant's webhook (a sink); B then runs
 *     on without the scrub or the target;
 *  5. purge: a mailbox purged on A while C is stopped is gone everywhere
 *     after C returns, and stays gone after further rounds;
 *  6. bandwidth: C pulling about 1 MiB at 256 KiB/s takes >= ~3 s;
 *  7. stop and kill: SIGTERM in the middle of a (bandwidth-limited) pull
 *     stops C within 3 s; kill -9 in the middle of the next one; after a
 *     restart C converges;
 *  8. the tombstone-keep guard: with A's clock two days on and C keeping
 *     tombstones one day (and no bandwidth limit any more), C does not pull A's
 * older new snapshot; wiped (re-seeded), C takes everything; with C's
 *     clock then 12 h behind A's, a hold made on A is adopted by C dated
 *     on C's clock (the change's age on A), not A's.
 *
 * Every wait polls a condition with a deadline. About 16 s in a
 * RelWithDebInfo build (4b about 2.5 s of it).
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <signal.h>     /* SIGTERM */
#include <stdio.h>      /* snprintf */
#include <stdlib.h>     /* qsort */
#include <string.h>     /* memcmp */
#include <time.h>       /* clock_gettime */
#include <netinet/in.h> /* sockaddr_in */
#include <sys/socket.h> /* socket: free ports */
#include <unistd.h>     /* close */

#include "buf.h"                  /* cfr_hex_encode: IDs in the log */
#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* sealing sessions */
#include "keys.h"                 /* tenant keyrings */
#include "kv.h"                   /* corrupting a stored object */
#include "mem.h"                  /* cfr_malloc */
#include "scenario_support.h"     /* scn_vault_db */
#include "sink_support.h"         /* the tenant's webhook */
#include "vault_client_support.h" /* objects and RPC wrappers */
#include "vault_support.h"        /* the harness */

#define N_VAULTS     3
#define WAIT_MS      20000
#define BIG_CHUNKS   16
#define BIG_CHUNK    (68 * 1024) /* its first 4 KiB compress */
#define BANDWIDTH    (256 * 1024)
#define CHUNKS_SMALL 6

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static const char *const names[N_VAULTS] = {"vault-a", "vault-b", "vault-c"};
static const char *const regions[N_VAULTS] = {"r1", "r2", "r3"};
static struct cfr_keyring *acme_kr, *globex_kr;
static struct cfr_session *acme_ses, *globex_ses;

/* What A holds for acme, pushed by the test. */
static struct vc_objset inbox_chunks, sent_chunks;
static struct vc_snapshot sn_inbox1, sn_inbox2, sn_sent;

#define A (&vaults[0])
#define B (&vaults[1])
#define C (&vaults[2])

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A port free right now on 127.0.0.1 (the kernel's pick, released). */
static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- driving and watching rounds ------------------------------------- */

static int
system_op(struct vs_vault *v, Coffer__V1__SystemOp op, const char *tenant,
          Coffer__V1__SystemResponse **resp_r)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    struct cfr_rpc_client *cli = vs_client(v, "operator");
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    assert_non_null(cli);
    req.op = op;
    req.tenant_name = (char *)(tenant != NULL ? tenant : "");
    int st = vs_unary(cli, "System", &req.base,
                      &coffer__v1__system_response__descriptor, &resp, &err);
    if (st != CFR_RPC_OK) {
        print_message("System op %d on %s: %s: %s\n", (int)op, v->name,
                      cfr_rpc_status_name(st), err.msg);
    }
    cfr_rpc_client_free(cli);
    if (resp_r != NULL) {
        *resp_r = (Coffer__V1__SystemResponse *)resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

/* The SYNC_STATUS line of tenant for peer ("" = the vault's own), copied
 * into *out; false when there is none. */
static bool
status_line(struct vs_vault *v, const char *tenant, const char *peer,
            Coffer__V1__SyncStatus *out, char *err_out, size_t err_size)
{
    Coffer__V1__SystemResponse *r = NULL;
    bool found = false;
    if (system_op(v, COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS, tenant,
                  &r) != CFR_RPC_OK ||
        r == NULL) {
        return false;
    }
    for (size_t i = 0; i < r->n_sync; i++) {
        const Coffer__V1__SyncStatus *s = r->sync[i];
        if (strcmp(s->tenant, tenant) == 0 && strcmp(s->peer, peer) == 0) {
            *out = *s;
            if (err_out != NULL) {
                snprintf(err_out, err_size, "%s", s->last_error);
            }
            out->tenant = out->peer = out->region = out->last_error = NULL;
            found = true;
        }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return found;
}

/*
 * Starts a round of tenant on v and waits until every peer line of it
 * records an attempt at or after the start (the engine records attempt
 * and outcome together). Peers listed in ok_peers must have succeeded.
 */
static void
sync_and_wait(struct vs_vault *v, const char *tenant,
              const char *const *ok_peers)
{
    int64_t t0 = wall_ms();
    int64_t end = vc_now_ms() + WAIT_MS;
    assert_int_equal(
        system_op(v, COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC, tenant, NULL),
        CFR_RPC_OK);
    for (;;) {
        bool done = true;
        char why[256] = "";
        for (size_t i = 0; i < N_VAULTS && done; i++) {
            Coffer__V1__SyncStatus st = COFFER__V1__SYNC_STATUS__INIT;
            char e[256] = "";
            if (strcmp(names[i], v->name) == 0) {
                continue;
            }
            if (!status_line(v, tenant, names[i], &st, e, sizeof(e))) {
                continue; /* a peer the tenant may not use */
            }
            if (st.last_attempt_ms < t0) {
                done = false;
                snprintf(why, sizeof(why), "%s: no attempt with %s yet",
                         v->name, names[i]);
                break;
            }
            for (size_t k = 0; ok_peers != NULL && ok_peers[k] != NULL; k++) {
                if (strcmp(ok_peers[k], names[i]) == 0 &&
                    st.last_ok_ms < st.last_attempt_ms) {
                    fail_msg("%s: round of %s with %s failed: %s", v->name,
                             tenant, names[i], e);
                }
            }
        }
        if (done) {
            return;
        }
        if (vc_now_ms() > end) {
            fail_msg("round did not finish: %s", why);
        }
        vc_sleep_ms(50);
    }
}

/* ---- snapshot sets ---------------------------------------------------- */

struct snapset {
    size_t n;
    uint8_t ids[64][VC_ID_LEN];
    bool held[64];
};

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, VC_ID_LEN);
}

/* The snapshots v lists for the tenant of rest_ident, sorted by ID;
 * false when the call fails. */
static bool
list_set(struct vs_vault *v, const char *rest_ident, struct snapset *s)
{
    struct cfr_rpc_client *cli = vs_client(v, rest_ident);
    int st;
    assert_non_null(cli);
    Coffer__V1__ListSnapshotsResponse *r = vc_list_snapshots(cli, false, &st);
    cfr_rpc_client_free(cli);
    memset(s, 0, sizeof(*s));
    if (r == NULL) {
        return false;
    }
    assert_true(r->n_snapshots <= 64);
    /* Sort ID with its hold flag: the flag rides in the byte after. */
    uint8_t tmp[64][VC_ID_LEN + 1];
    for (size_t i = 0; i < r->n_snapshots; i++) {
        assert_int_equal(r->snapshots[i]->header_id.len, VC_ID_LEN);
        memcpy(tmp[i], r->snapshots[i]->header_id.data, VC_ID_LEN);
        tmp[i][VC_ID_LEN] = r->snapshots[i]->held ? 1 : 0;
    }
    qsort(tmp, r->n_snapshots, sizeof(tmp[0]), id_cmp);
    for (size_t i = 0; i < r->n_snapshots; i++) {
        memcpy(s->ids[i], tmp[i], VC_ID_LEN);
        s->held[i] = tmp[i][VC_ID_LEN] != 0;
    }
    s->n = r->n_snapshots;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return true;
}

static bool
set_has(const struct snapset *s, const uint8_t *id, bool *held_r)
{
    for (size_t i = 0; i < s->n; i++) {
        if (memcmp(s->ids[i], id, VC_ID_LEN) == 0) {
            if (held_r != NULL) {
                *held_r = s->held[i];
            }
            return true;
        }
    }
    return false;
}

static bool
set_equal(const struct snapset *a, const struct snapset *b)
{
    return a->n == b->n && memcmp(a->ids, b->ids, a->n * VC_ID_LEN) == 0 &&
           memcmp(a->held, b->held, a->n * sizeof(bool)) == 0;
}

/* Polls until v lists exactly want (IDs and holds) for acme. */
static void
wait_set(struct vs_vault *v, const struct snapset *want)
{
    int64_t end = vc_now_ms() + WAIT_MS;
    struct snapset got;
    for (;;) {
        if (list_set(v, "acme-restore", &got) && set_equal(&got, want)) {
            return;
        }
        if (vc_now_ms() > end) {
            fail_msg("%s lists %zu snapshots, %zu wanted (or holds differ)",
                     v->name, got.n, want->n);
        }
        vc_sleep_ms(50);
    }
}

/* ---- pushing data to A ------------------------------------------------ */

static void
push(struct vs_vault *v, const char *agent_ident, struct cfr_session *ses,
     const struct vc_objset *chunks, const struct vc_snapshot *sn)
{
    struct cfr_rpc_client *cli = vs_client(v, agent_ident);
    uint8_t lease[16];
    struct cfr_err err;
    assert_non_null(cli);
    assert_int_equal(vc_open_lease(ses, cli, lease, &err), CFR_RPC_OK);
    assert_int_equal(
        vc_put_objects(cli, lease, chunks, 0, chunks->n, 64, NULL, &err),
        CFR_RPC_OK);
    assert_int_equal(
        vc_put_objects(cli, lease, &sn->pages, 0, sn->pages.n, 64, NULL, &err),
        CFR_RPC_OK);
    assert_int_equal(vc_commit(cli, lease, sn, NULL, &err), CFR_RPC_OK);
    cfr_rpc_client_free(cli);
}

/* Every chunk and page of the acme snapshots reads back from v exactly. */
static void
check_acme_objects(struct vs_vault *v, const struct vc_objset *chunks,
                   const struct vc_snapshot *sn)
{
    struct cfr_rpc_client *ag = vs_client(v, "agent");
    struct cfr_rpc_client *rs = vs_client(v, "acme-restore");
    assert_non_null(ag);
    assert_non_null(rs);
    assert_int_equal(vc_check_objects(ag, rs, chunks, true), chunks->n);
    assert_int_equal(vc_check_objects(ag, rs, &sn->pages, true), sn->pages.n);
    cfr_rpc_client_free(ag);
    cfr_rpc_client_free(rs);
}

/* SyncDigest of tenant asked of v with the certificate ident; *resp_r
 * (may be NULL) gets the answer. Returns the status. */
static int
digest(struct vs_vault *v, const char *ident, const char *tenant,
       Coffer__V1__SyncDigestResponse **resp_r)
{
    Coffer__V1__SyncDigestRequest req = COFFER__V1__SYNC_DIGEST_REQUEST__INIT;
    struct cfr_rpc_client *cli = vs_client(v, ident);
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    assert_non_null(cli);
    req.tenant = (char *)tenant;
    int st =
        vs_unary(cli, "SyncDigest", &req.base,
                 &coffer__v1__sync_digest_response__descriptor, &resp, &err);
    cfr_rpc_client_free(cli);
    if (resp_r != NULL) {
        *resp_r = (Coffer__V1__SyncDigestResponse *)resp;
    } else if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

/* ---- set-up ----------------------------------------------------------- */

static int ports[N_VAULTS];

/*
 * Vault i's replication settings: its name, the other two as peers, in a
 * ring (B lists C before A, so that in case 5 B's round with the stopped
 * C comes first and must not stop the one with A), rounds on demand only,
 * bandwidth ("0": unlimited) and more settings.
 */
static void
replication_cfg(size_t i, const char *bandwidth, const char *more)
{
    struct vs_vault *v = &vaults[i];
    char peers[1024];
    size_t off = 0;
    for (size_t k = 1; k < N_VAULTS; k++) {
        size_t j = (i + k) % N_VAULTS;
        off += (size_t)snprintf(
            peers + off, sizeof(peers) - off,
            "%s{ name = \"%s\"; address = \"127.0.0.1:%d\"; "
            "region = \"%s\"; }",
            off == 0 ? "" : ",\n  ", names[j], ports[j], regions[j]);
    }
    snprintf(v->extra_cfg, sizeof(v->extra_cfg),
             "name = \"%s\";\npeers = (\n  %s\n);\n"
             "sync = { interval = \"0\"; timeout = \"10s\"; "
             "bandwidth = \"%s\"; };\n%s",
             names[i], peers, bandwidth, more);
}

static int
setup(void **state)
{
    struct cfr_err err;
    (void)state;
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0) {
        return -1;
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        ports[i] = free_port();
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        struct vs_vault *v = &vaults[i];
        if (vs_vault_init(v, &env, names[i]) != 0) {
            return -1;
        }
        snprintf(v->region, sizeof(v->region), "%s", regions[i]);
        snprintf(v->cert_stem, sizeof(v->cert_stem), "%s", names[i]);
        v->listen_port = ports[i];
        v->no_register = true;
        replication_cfg(i, i == 2 ? "256K" : "0", "");
        if (vs_vault_start(v, 30000) != 0) {
            return -1;
        }
    }
    static const char *const r12[] = {"r1", "r2", NULL};
    for (size_t i = 0; i < N_VAULTS; i++) {
        char msg[256];
        int st = vs_tenant_add(&vaults[i], "acme", NULL, msg, sizeof(msg));
        if (st != CFR_RPC_OK) {
            print_message("acme on %s: %s %s\n", names[i],
                          cfr_rpc_status_name(st), msg);
            return -1;
        }
        /* C stands outside globex's regions: it may refuse even the
         * registration, which is as good as holding nothing. */
        st = vs_tenant_add(&vaults[i], "globex", r12, msg, sizeof(msg));
        if (st != CFR_RPC_OK && i != 2) {
            print_message("globex on %s: %s %s\n", names[i],
                          cfr_rpc_status_name(st), msg);
            return -1;
        }
    }
    if ((acme_kr = cfr_keyring_generate(1700000000000, &err)) == NULL ||
        (acme_ses = cfr_session_new(acme_kr, 0, &err)) == NULL ||
        (globex_kr = cfr_keyring_generate(1700000000000, &err)) == NULL ||
        (globex_ses = cfr_session_new(globex_kr, 0, &err)) == NULL) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (vaults[i].pid > 0) {
            vs_vault_stop(&vaults[i], SIGTERM, 20000);
        }
    }
    vc_objset_fini(&inbox_chunks);
    vc_objset_fini(&sent_chunks);
    vc_snapshot_fini(&sn_inbox1);
    vc_snapshot_fini(&sn_inbox2);
    vc_snapshot_fini(&sn_sent);
    cfr_session_free(acme_ses);
    cfr_session_free(globex_ses);
    cfr_keyring_free(acme_kr);
    cfr_keyring_free(globex_kr);
    vs_env_fini(&env);
    cfr_rpc_global_fini();
    return 0;
}

/* ---- 1. convergence --------------------------------------------------- */

static void
test_sync_convergence(void **state)
{
    static const char *const all_ok[] = {"vault-a", "vault-b", "vault-c", NULL};
    struct snapset on_a;
    (void)state;
    for (uint64_t i = 0; i < CHUNKS_SMALL; i++) {
        vc_make_chunk(acme_kr, acme_ses, &inbox_chunks, 100 + i,
                      1500 + 700 * i);
        vc_make_chunk(acme_kr, acme_ses, &sent_chunks, 200 + i, 900 + 300 * i);
    }
    /* Two INBOX snapshots (the second a superset) and one of Sent. */
    struct vc_objset first = {0};
    for (size_t i = 0; i < CHUNKS_SMALL / 2; i++) {
        vc_objset_add(&first, inbox_chunks.v[i].id, inbox_chunks.v[i].kind,
                      inbox_chunks.v[i].data, inbox_chunks.v[i].len);
    }
    vc_make_snapshot(acme_kr, acme_ses, &sn_inbox1, &first, "INBOX", 1);
    vc_make_snapshot(acme_kr, acme_ses, &sn_inbox2, &inbox_chunks, "INBOX", 2);
    vc_make_snapshot(acme_kr, acme_ses, &sn_sent, &sent_chunks, "Sent", 3);
    push(A, "agent", acme_ses, &first, &sn_inbox1);
    push(A, "agent", acme_ses, &inbox_chunks, &sn_inbox2);
    push(A, "agent", acme_ses, &sent_chunks, &sn_sent);
    vc_objset_fini(&first);
    assert_true(list_set(A, "acme-restore", &on_a));
    assert_int_equal(on_a.n, 3);

    /* Nothing on B or C before a round. */
    struct snapset on_b;
    assert_true(!list_set(B, "acme-restore", &on_b) || on_b.n == 0);

    sync_and_wait(B, "acme", all_ok);
    sync_and_wait(C, "acme", all_ok);
    wait_set(B, &on_a);
    wait_set(C, &on_a);
    for (size_t i = 1; i < N_VAULTS; i++) {
        check_acme_objects(&vaults[i], &inbox_chunks, &sn_inbox2);
        check_acme_objects(&vaults[i], &sent_chunks, &sn_sent);
        check_acme_objects(&vaults[i], &inbox_chunks, &sn_inbox1);
    }

    /* The three digests agree (asked by a listed peer of each). */
    Coffer__V1__SyncDigestResponse *da = NULL, *db = NULL, *dc = NULL;
    assert_int_equal(digest(A, "vault-b", "acme", &da), CFR_RPC_OK);
    assert_int_equal(digest(B, "vault-c", "acme", &db), CFR_RPC_OK);
    assert_int_equal(digest(C, "vault-a", "acme", &dc), CFR_RPC_OK);
    assert_non_null(da);
    assert_non_null(db);
    assert_non_null(dc);
    assert_int_equal(da->n_buckets, 256);
    assert_int_equal(db->n_buckets, 256);
    assert_int_equal(dc->n_buckets, 256);
    assert_int_equal(da->snapshots, 3);
    assert_int_equal(db->snapshots, 3);
    assert_int_equal(dc->snapshots, 3);
    assert_string_equal(da->region, "r1");
    assert_string_equal(dc->region, "r3");
    size_t nonzero = 0;
    static const uint8_t zero[VC_ID_LEN];
    for (size_t b = 0; b < 256; b++) {
        assert_int_equal(da->buckets[b].len, VC_ID_LEN);
        assert_memory_equal(da->buckets[b].data, db->buckets[b].data,
                            VC_ID_LEN);
        assert_memory_equal(da->buckets[b].data, dc->buckets[b].data,
                            VC_ID_LEN);
        nonzero += memcmp(da->buckets[b].data, zero, VC_ID_LEN) != 0;
    }
    assert_true(nonzero >= 1 && nonzero <= 3);
    protobuf_c_message_free_unpacked(&da->base, NULL);
    protobuf_c_message_free_unpacked(&db->base, NULL);
    protobuf_c_message_free_unpacked(&dc->base, NULL);

    /* Status: B pulled 3 snapshots from someone, and is not behind. */
    Coffer__V1__SyncStatus own = COFFER__V1__SYNC_STATUS__INIT;
    Coffer__V1__SyncStatus pa = COFFER__V1__SYNC_STATUS__INIT;
    assert_true(status_line(B, "acme", "", &own, NULL, 0));
    assert_int_equal(own.snapshots, 3);
    assert_true(own.newest_ms > 0);
    assert_true(status_line(B, "acme", "vault-a", &pa, NULL, 0));
    assert_int_equal(pa.behind, 0);
    assert_true(pa.last_ok_ms > 0);
    assert_true(own.snapshots_pulled + pa.snapshots_pulled >= 3);
}

/* ---- 2. placement ----------------------------------------------------- */

static void
test_sync_placement(void **state)
{
    static const char *const ab[] = {"vault-a", NULL};
    struct vc_objset chunks = {0};
    struct vc_snapshot sn;
    (void)state;
    memset(&sn, 0, sizeof(sn));
    for (uint64_t i = 0; i < 3; i++) {
        vc_make_chunk(globex_kr, globex_ses, &chunks, 900 + i, 1200);
    }
    vc_make_snapshot(globex_kr, globex_ses, &sn, &chunks, "INBOX", 9);
    push(A, "globex-agent", globex_ses, &chunks, &sn);

    sync_and_wait(B, "globex", ab);
    /* C is asked for every tenant; globex is not its to take. */
    (void)system_op(C, COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC, "", NULL);
    sync_and_wait(C, "acme", NULL);

    struct cfr_rpc_client *ag = vs_client(B, "globex-agent");
    struct cfr_rpc_client *rs = vs_client(B, "restore");
    int64_t end = vc_now_ms() + WAIT_MS;
    while (vc_check_objects(ag, rs, &chunks, false) != chunks.n) {
        if (vc_now_ms() > end) {
            fail_msg("globex's chunks never reached B");
        }
        vc_sleep_ms(50);
    }
    cfr_rpc_client_free(ag);
    cfr_rpc_client_free(rs);

    /* C holds nothing of globex: it lists nothing (or refuses). */
    struct snapset on_c;
    assert_true(!list_set(C, "restore", &on_c) || on_c.n == 0);
    ag = vs_client(C, "globex-agent");
    assert_non_null(ag);
    bool miss[8];
    size_t n_miss = 0;
    int st = vc_missing(ag, NULL, &chunks, miss, &n_miss);
    assert_true(st != CFR_RPC_OK || n_miss == chunks.n);
    cfr_rpc_client_free(ag);
    Coffer__V1__SyncStatus own = COFFER__V1__SYNC_STATUS__INIT;
    assert_false(status_line(C, "globex", "", &own, NULL, 0) &&
                 own.snapshots > 0);

    /* The serving side: C's region excludes globex; vault-x is nobody's
     * peer; a tenant certificate may not call Sync*. */
    assert_int_equal(digest(A, "vault-c", "globex", NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(digest(A, "vault-b", "globex", NULL), CFR_RPC_OK);
    assert_int_equal(digest(A, "vault-x", "acme", NULL),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(digest(A, "acme-restore", "acme", NULL),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(digest(A, "vault-b", "nosuchtenant", NULL),
                     CFR_RPC_NOT_FOUND);
    vc_objset_fini(&chunks);
    vc_snapshot_fini(&sn);
}

/* ---- 2b. a catch-up of many small snapshots, batched --------------------- */

#define LOG_CAP (32u << 20)

/* Lines of v's log holding both a and b (the whole log: it must fit). */
static size_t
log_count(const struct vs_vault *v, const char *a, const char *b)
{
    char *buf = cfr_malloc(LOG_CAP);
    size_t n = 0;
    assert_non_null(buf);
    vs_vault_log(v, buf, LOG_CAP);
    assert_true(strlen(buf) < LOG_CAP - 1); /* not cut: counts are exact */
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        n += strstr(line, a) != NULL && strstr(line, b) != NULL;
        line = nl != NULL ? nl + 1 : NULL;
    }
    cfr_free(buf);
    return n;
}

#define BATCH_BOXES 10 /* two new snapshots each */

/*
 * B catches up on 20 small snapshots of globex (10 mailboxes, each with a
 * new chunk per snapshot) that reached A only. The pull walks the trees
 * of all of them together: one SyncGet per tree level and one for all
 * their chunks, not a few per snapshot (a per-snapshot pull makes 40).
 * The serving vault's audit lines count the calls.
 */
static void
test_sync_batched_catch_up(void **state)
{
    static const char *const ab[] = {"vault-a", NULL};
    static const char *const get_line = "method=/coffer.v1.Vault/SyncGet ";
    static const char *const by_b = "identity=coffer://vault/vault-b ";
    struct vc_objset chunks[BATCH_BOXES];
    struct vc_snapshot sn[BATCH_BOXES][2];
    struct vc_objset all = {0};
    (void)state;
    memset(chunks, 0, sizeof(chunks));
    memset(sn, 0, sizeof(sn));
    for (size_t i = 0; i < BATCH_BOXES; i++) {
        char box[16];
        snprintf(box, sizeof(box), "Box%02zu", i);
        for (size_t k = 0; k < 2; k++) {
            struct vc_objset fresh = {0};
            vc_make_chunk(globex_kr, globex_ses, &fresh, 3000 + 10 * i + k,
                          800 + 100 * i);
            vc_objset_add_all(&chunks[i], &fresh);
            vc_objset_add_all(&all, &fresh);
            vc_make_snapshot(globex_kr, globex_ses, &sn[i][k], &chunks[i], box,
                             100 + 10 * i + k);
            push(A, "globex-agent", globex_ses, &fresh, &sn[i][k]);
            vc_objset_add_all(&all, &sn[i][k].pages);
            vc_objset_fini(&fresh);
        }
    }
    struct snapset on_a, on_b;
    assert_true(list_set(A, "restore", &on_a));
    assert_int_equal(on_a.n, 2 * BATCH_BOXES + 1);
    assert_true(list_set(B, "restore", &on_b));
    assert_int_equal(on_b.n, 1);

    size_t before = log_count(A, get_line, by_b);
    int64_t t0 = vc_now_ms();
    sync_and_wait(B, "globex", ab);
    int64_t took = vc_now_ms() - t0;
    /* A writes a call's audit line as it answers: poll briefly for the
     * two a round needs at least, then count them all. */
    int64_t end = vc_now_ms() + 2000;
    size_t calls = log_count(A, get_line, by_b) - before;
    while (calls < 2 && vc_now_ms() < end) {
        vc_sleep_ms(20);
        calls = log_count(A, get_line, by_b) - before;
    }
    print_message("B caught up on %d snapshots with %zu SyncGet calls in "
                  "%lld ms\n",
                  2 * BATCH_BOXES, calls, (long long)took);
    assert_true(list_set(B, "restore", &on_b));
    assert_true(set_equal(&on_b, &on_a));
    /* One call for the 20 root pages, one for the 20 chunks; a little
     * slack for a batch split by size, none for a per-snapshot pull. */
    assert_true(calls >= 2);
    assert_true(calls <= 4);

    struct cfr_rpc_client *ag = vs_client(B, "globex-agent");
    struct cfr_rpc_client *rs = vs_client(B, "restore");
    assert_non_null(ag);
    assert_non_null(rs);
    assert_int_equal(vc_check_objects(ag, rs, &all, true), all.n);

    /* Each mailbox keeps A's order: the first snapshot stays the older. */
    int st;
    Coffer__V1__ListSnapshotsResponse *r = vc_list_snapshots(rs, false, &st);
    assert_non_null(r);
    for (size_t i = 0; i < BATCH_BOXES; i++) {
        int64_t ms[2] = {-1, -1};
        for (size_t j = 0; j < r->n_snapshots; j++) {
            for (size_t k = 0; k < 2; k++) {
                if (memcmp(r->snapshots[j]->header_id.data, sn[i][k].header_id,
                           VC_ID_LEN) == 0) {
                    ms[k] = r->snapshots[j]->received_ms;
                }
            }
        }
        assert_true(ms[0] > 0 && ms[1] > 0);
        assert_true(ms[0] <= ms[1]);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cfr_rpc_client_free(ag);
    cfr_rpc_client_free(rs);

    /* Nothing left: a second round pulls nothing. */
    before = log_count(A, get_line, by_b);
    sync_and_wait(B, "globex", ab);
    assert_int_equal(log_count(A, get_line, by_b), before);
    for (size_t i = 0; i < BATCH_BOXES; i++) {
        vc_objset_fini(&chunks[i]);
        vc_snapshot_fini(&sn[i][0]);
        vc_snapshot_fini(&sn[i][1]);
    }
    vc_objset_fini(&all);
}

/* ---- 2c. one snapshot the peer cannot supply holds back no other ------- */

/*
 * A's copy of a chunk of globex's snapshot X is damaged (A serves it as
 * missing); Y, listed after X, is fine. B's batched pull of both fails on
 * the chunk, falls back to one snapshot at a time and takes Y, byte for
 * byte; X stays behind, with the reason in B's status.
 */
static void
test_sync_batch_fallback(void **state)
{
    static const char *const cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                      "refcounts",      "snapshots",
                                      "mailbox_index",  "leases",
                                      "lease_objects",  "tombstones"};
    struct vc_objset xc = {0}, yc = {0};
    struct vc_snapshot x, y;
    struct snapset on_b;
    struct cfr_err err;
    struct cfr_buf buf;
    char path[2 * VS_PATH_MAX];
    (void)state;
    memset(&x, 0, sizeof(x));
    memset(&y, 0, sizeof(y));
    vc_make_chunk(globex_kr, globex_ses, &xc, 4000, 1500);
    vc_make_chunk(globex_kr, globex_ses, &xc, 4001, 1600);
    vc_make_chunk(globex_kr, globex_ses, &yc, 4100, 1700);
    vc_make_snapshot(globex_kr, globex_ses, &x, &xc, "BadBox", 400);
    vc_make_snapshot(globex_kr, globex_ses, &y, &yc, "GoodBox", 401);
    push(A, "globex-agent", globex_ses, &xc, &x);
    push(A, "globex-agent", globex_ses, &yc, &y);

    /* A bad disk under one of X's chunks on A. */
    assert_int_equal(vs_vault_stop(A, SIGTERM, 20000), 0);
    struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(ke);
    snprintf(path, sizeof(path), "%s/data/globex", A->dir);
    struct cfr_kv *kv =
        cfr_kv_open(ke, path, cfs, sizeof(cfs) / sizeof(cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", path, err.msg);
    }
    cfr_buf_init(&buf, 1u << 20);
    assert_int_equal(cfr_kv_get(kv, 0, xc.v[0].id, VC_ID_LEN, &buf, &err), 0);
    assert_int_equal(buf.len, xc.v[0].len);
    buf.data[buf.len / 2] ^= 0x08;
    assert_int_equal(
        cfr_kv_put(kv, 0, xc.v[0].id, VC_ID_LEN, buf.data, buf.len, &err), 0);
    cfr_buf_fini(&buf);
    cfr_kv_close(kv);
    cfr_kv_env_free(ke);
    assert_int_equal(vs_vault_start(A, 30000), 0);

    sync_and_wait(B, "globex", NULL);
    assert_true(list_set(B, "restore", &on_b));
    assert_true(set_has(&on_b, y.header_id, NULL));
    assert_false(set_has(&on_b, x.header_id, NULL));
    assert_true(vc_log_has(B, "vault.sync.pull_one_by_one"));
    struct cfr_rpc_client *ag = vs_client(B, "globex-agent");
    struct cfr_rpc_client *rs = vs_client(B, "restore");
    assert_non_null(ag);
    assert_non_null(rs);
    assert_int_equal(vc_check_objects(ag, rs, &yc, true), yc.n);
    assert_int_equal(vc_check_objects(ag, rs, &y.pages, true), y.pages.n);
    cfr_rpc_client_free(ag);
    cfr_rpc_client_free(rs);
    Coffer__V1__SyncStatus pa = COFFER__V1__SYNC_STATUS__INIT;
    char why[256] = "";
    assert_true(status_line(B, "globex", "vault-a", &pa, why, sizeof(why)));
    assert_int_equal(pa.behind, 1);
    assert_true(pa.last_ok_ms < pa.last_attempt_ms);
    assert_non_null(strstr(why, "object"));
    vc_objset_fini(&xc);
    vc_objset_fini(&yc);
    vc_snapshot_fini(&x);
    vc_snapshot_fini(&y);
}

/* ---- 3. holds ------------------------------------------------------------ */

static void
test_sync_hold_release(void **state)
{
    static const char *const from_a[] = {"vault-a", NULL};
    struct cfr_rpc_client *adm = vs_client(A, "acme-admin");
    struct cfr_rpc_client *adm2 = vs_client(A, "acme-admin2");
    struct snapset on_a, on_b;
    char msg[256];
    bool held = false;
    uint8_t approval[16];
    (void)state;
    assert_non_null(adm);
    assert_non_null(adm2);
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD,
                              sn_sent.header_id, 0, NULL, msg, sizeof(msg)),
                     CFR_RPC_OK);
    assert_true(list_set(A, "acme-restore", &on_a));
    assert_true(set_has(&on_a, sn_sent.header_id, &held) && held);
    sync_and_wait(B, "acme", from_a);
    wait_set(B, &on_a);
    assert_true(list_set(B, "acme-restore", &on_b));
    assert_true(set_has(&on_b, sn_sent.header_id, &held) && held);

    /* The release (a second admin approves) is newer: it wins on B. */
    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE,
                      sn_sent.header_id, 0, approval);
    assert_int_equal(vc_admin_ex(adm2, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE,
                                 NULL, 0, approval, NULL, NULL, msg,
                                 sizeof(msg)),
                     CFR_RPC_OK);
    assert_int_equal(vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE,
                                 sn_sent.header_id, 0, approval, NULL, NULL,
                                 msg, sizeof(msg)),
                     CFR_RPC_OK);
    assert_true(list_set(A, "acme-restore", &on_a));
    assert_true(set_has(&on_a, sn_sent.header_id, &held) && !held);
    sync_and_wait(B, "acme", from_a);
    wait_set(B, &on_a);
    /* C, which saw the hold never, converges on the release too. */
    sync_and_wait(C, "acme", from_a);
    wait_set(C, &on_a);
    cfr_rpc_client_free(adm);
    cfr_rpc_client_free(adm2);
}

/* ---- 4. repair ---------------------------------------------------------- */

static void
test_sync_repair(void **state)
{
    const struct vc_obj *victim = &sent_chunks.v[CHUNKS_SMALL - 1];
    struct cfr_err err;
    struct cfr_buf buf;
    struct vc_objset one = {0}, got = {0};
    size_t n_missing = 0, n_msgs = 0;
    (void)state;
    vc_objset_add(&one, victim->id, victim->kind, victim->data, victim->len);

    /* Flip a byte of the stored bytes on B, leaving the index (the
     * checksum B recorded) as it was: what a bad disk does. */
    assert_int_equal(vs_vault_stop(B, SIGTERM, 20000), 0);
    struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(ke);
    struct cfr_kv *kv = scn_vault_db(ke, B);
    cfr_buf_init(&buf, 1u << 20);
    assert_int_equal(cfr_kv_get(kv, 0, victim->id, VC_ID_LEN, &buf, &err), 0);
    assert_int_equal(buf.len, victim->len);
    buf.data[buf.len / 2] ^= 0x20;
    assert_int_equal(
        cfr_kv_put(kv, 0, victim->id, VC_ID_LEN, buf.data, buf.len, &err), 0);
    cfr_buf_fini(&buf);
    cfr_kv_close(kv);
    cfr_kv_env_free(ke);
    assert_int_equal(vs_vault_start(B, 30000), 0);

    /* The damaged copy is never served as data. */
    struct cfr_rpc_client *rs = vs_client(B, "acme-restore");
    assert_non_null(rs);
    int st = vc_get_objects(rs, &one, NULL, &got, &n_missing, &n_msgs);
    assert_true(st != CFR_RPC_OK || n_missing == 1);
    for (size_t i = 0; i < got.n; i++) {
        assert_false(got.v[i].len == victim->len &&
                     memcmp(got.v[i].data, victim->data, victim->len) != 0);
    }
    vc_objset_fini(&got);

    /* The read queued it; a round runs the queue too, in case. */
    (void)system_op(B, COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC, "acme", NULL);
    int64_t end = vc_now_ms() + WAIT_MS;
    for (;;) {
        n_missing = 0;
        st = vc_get_objects(rs, &one, NULL, &got, &n_missing, &n_msgs);
        bool exact = st == CFR_RPC_OK && got.n == 1 &&
                     got.v[0].len == victim->len &&
                     memcmp(got.v[0].data, victim->data, victim->len) == 0;
        vc_objset_fini(&got);
        if (exact) {
            break;
        }
        if (vc_now_ms() > end) {
            fail_msg("object never repaired on B");
        }
        vc_sleep_ms(50);
    }
    cfr_rpc_client_free(rs);
    Coffer__V1__SyncStatus own = COFFER__V1__SYNC_STATUS__INIT;
    end = vc_now_ms() + WAIT_MS;
    for (;;) {
        if (status_line(B, "acme", "", &own, NULL, 0) && own.repairs == 1) {
            break;
        }
        if (vc_now_ms() > end) {
            fail_msg("B's status never counted the repair");
        }
        vc_sleep_ms(50);
    }
    assert_true(own.last_repair_ms > 0);
    assert_int_equal(own.repair_failures, 0);
    vc_objset_fini(&one);
}

/* ---- 4b. the scheduled scrub repairs, and says so ---------------------- */

/* Operator's TENANT_SET of globex on v: its regions (r1, r2) kept, its
 * notify targets replaced by url (NULL: none). */
static void
globex_targets(struct vs_vault *v, const char *url)
{
    static const char *const r12[] = {"r1", "r2"};
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
    struct cfr_rpc_client *cli = vs_client(v, "operator");
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    char *targets[1] = {(char *)url};
    assert_non_null(cli);
    ti.name = (char *)"globex";
    ti.n_regions = 2;
    ti.regions = (char **)r12;
    ti.n_notify = url != NULL ? 1 : 0;
    ti.notify = targets;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET;
    req.tenant = &ti;
    int st = vs_unary(cli, "System", &req.base,
                      &coffer__v1__system_response__descriptor, &resp, &err);
    if (st != CFR_RPC_OK) {
        fail_msg("TENANT_SET globex on %s: %s: %s", v->name,
                 cfr_rpc_status_name(st), err.msg);
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cfr_rpc_client_free(cli);
}

/* Webhook posts of event for tenant the sink has kept; *last_r (may be
 * NULL) the last of them. The closing quote keeps "vault.repair" from
 * matching "vault.repair_failed". */
static size_t
hook_events(struct sink *s, const char *event, const char *tenant,
            const struct sink_msg **last_r)
{
    char ev[96], tn[96];
    size_t n = 0, total = sink_count(s);
    snprintf(ev, sizeof(ev), "{\"event\":\"%s\",", event);
    snprintf(tn, sizeof(tn), ",\"tenant\":\"%s\",", tenant);
    assert_true(total <= SINK_MSGS_MAX); /* every post kept: counts exact */
    for (size_t i = 0; i < total; i++) {
        const struct sink_msg *m = sink_get(s, i);
        assert_non_null(m);
        if (m->body != NULL && strncmp(m->body, ev, strlen(ev)) == 0 &&
            strstr(m->body, tn) != NULL) {
            n++;
            if (last_r != NULL) {
                *last_r = m;
            }
        }
    }
    return n;
}

/*
 * A globex chunk damaged on B's disk while B is down, B back with a
 * one-second scheduled scrub and nobody reading the object: only the
 * scrub can find it (a scrub does not take the read path's on_corrupt
 * report, so no repair happens unless the scrub queues one). It is
 * repaired from A, the one peer globex may use from r2 (C, in r3, is
 * skipped), counted once in B's status and notified exactly once, as
 * vault.repair, to the tenant's own webhook (B has no vault-wide
 * target); then B serves the exact bytes again.
 */
static void
test_sync_scheduled_scrub_repair(void **state)
{
    struct vc_objset chunks = {0}, one = {0}, got = {0};
    struct vc_snapshot sn;
    struct cfr_err err;
    struct cfr_buf buf;
    char path[2 * VS_PATH_MAX], url[128], hex[2 * VC_ID_LEN + 1];
    char needle[160];
    (void)state;
    memset(&sn, 0, sizeof(sn));
    vc_make_chunk(globex_kr, globex_ses, &chunks, 4500, 2100);
    vc_make_chunk(globex_kr, globex_ses, &chunks, 4501, 2300);
    vc_make_snapshot(globex_kr, globex_ses, &sn, &chunks, "ScrubBox", 450);
    push(A, "globex-agent", globex_ses, &chunks, &sn);
    /* The round with A reports case 2c's snapshot as still failing; this
     * one must arrive all the same. */
    sync_and_wait(B, "globex", NULL);
    {
        struct cfr_rpc_client *ag = vs_client(B, "globex-agent");
        struct cfr_rpc_client *rs = vs_client(B, "restore");
        assert_non_null(ag);
        assert_non_null(rs);
        assert_int_equal(vc_check_objects(ag, rs, &chunks, true), chunks.n);
        cfr_rpc_client_free(ag);
        cfr_rpc_client_free(rs);
    }
    const struct vc_obj *victim = &chunks.v[0];
    vc_objset_add(&one, victim->id, victim->kind, victim->data, victim->len);
    cfr_hex_encode(victim->id, VC_ID_LEN, hex);

    /* The tenant's own target; the change itself is notified there, which
     * shows the wiring works before anything depends on it. */
    struct sink *hook = sink_http_start(200);
    assert_non_null(hook);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", sink_port(hook));
    globex_targets(B, url);
    assert_true(sink_wait(hook, 1, WAIT_MS));
    assert_int_equal(hook_events(hook, "vault.tenant.changed", "globex", NULL),
                     1);

    /* A bad disk under the chunk on B, the recorded checksum untouched. */
    assert_int_equal(vs_vault_stop(B, SIGTERM, 20000), 0);
    static const char *const cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                      "refcounts",      "snapshots",
                                      "mailbox_index",  "leases",
                                      "lease_objects",  "tombstones"};
    struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(ke);
    snprintf(path, sizeof(path), "%s/data/globex", B->dir);
    struct cfr_kv *kv =
        cfr_kv_open(ke, path, cfs, sizeof(cfs) / sizeof(cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", path, err.msg);
    }
    cfr_buf_init(&buf, 1u << 20);
    assert_int_equal(cfr_kv_get(kv, 0, victim->id, VC_ID_LEN, &buf, &err), 0);
    assert_int_equal(buf.len, victim->len);
    buf.data[buf.len / 3] ^= 0x01;
    assert_int_equal(
        cfr_kv_put(kv, 0, victim->id, VC_ID_LEN, buf.data, buf.len, &err), 0);
    cfr_buf_fini(&buf);
    cfr_kv_close(kv);
    cfr_kv_env_free(ke);

    replication_cfg(1, "0", "scrub = { interval = \"1s\"; };\n");
    int64_t t_start = wall_ms();
    int64_t t0 = vc_now_ms();
    assert_int_equal(vs_vault_start(B, 30000), 0);

    /* Only status calls meanwhile: they read no object. */
    Coffer__V1__SyncStatus own = COFFER__V1__SYNC_STATUS__INIT;
    int64_t end = vc_now_ms() + WAIT_MS;
    for (;;) {
        if (status_line(B, "globex", "", &own, NULL, 0) &&
            (own.repairs > 0 || own.repair_failures > 0)) {
            break;
        }
        if (vc_now_ms() > end) {
            fail_msg("the scheduled scrub's find was never repaired on B");
        }
        vc_sleep_ms(50);
    }
    int64_t took = vc_now_ms() - t0;
    assert_int_equal(own.repair_failures, 0);
    assert_int_equal(own.repairs, 1);
    assert_true(own.last_repair_ms >= t_start);
    assert_true(own.last_repair_ms <= wall_ms() + 1000);

    /* The scrub found it, not a read. */
    snprintf(needle, sizeof(needle), "vault.scrub.bad tenant=globex id=%s",
             hex);
    assert_true(log_count(B, needle, "") >= 1);
    assert_int_equal(log_count(B, "vault.object_corrupt", hex), 0);
    assert_int_equal(
        log_count(B, "vault.repair tenant=globex peer=vault-a", hex), 1);

    /* Notified once as a success, naming tenant, vault, peer and object. */
    const struct sink_msg *m = NULL;
    end = vc_now_ms() + WAIT_MS;
    while (hook_events(hook, "vault.repair", "globex", &m) == 0) {
        if (vc_now_ms() > end) {
            fail_msg("no vault.repair notification for globex");
        }
        vc_sleep_ms(20);
    }
    assert_string_equal(m->method, "POST");
    assert_string_equal(m->path, "/hook");
    assert_non_null(strstr(m->body, "\"vault\":\"vault-b\""));
    assert_non_null(strstr(m->body, "\"peer\":\"vault-a\""));
    snprintf(needle, sizeof(needle), "\"detail\":\"%s\"", hex);
    assert_non_null(strstr(m->body, needle));

    /* A later pass finds B clean; the object reported again by a pass that
     * overlapped the repair (if any) is no second repair or event. */
    size_t clean = log_count(B, "vault.scrub tenant=globex bad_objects=0", "");
    end = vc_now_ms() + WAIT_MS;
    while (log_count(B, "vault.scrub tenant=globex bad_objects=0", "") ==
           clean) {
        if (vc_now_ms() > end) {
            fail_msg("no clean scrub pass after the repair");
        }
        vc_sleep_ms(50);
    }
    assert_true(status_line(B, "globex", "", &own, NULL, 0));
    assert_int_equal(own.repairs, 1);
    assert_int_equal(own.repair_failures, 0);
    assert_int_equal(hook_events(hook, "vault.repair", "globex", NULL), 1);
    assert_int_equal(hook_events(hook, "vault.repair_failed", "globex", NULL),
                     0);
    print_message("B's scheduled scrub found and repaired the chunk in "
                  "%lld ms\n",
                  (long long)took);

    /* And B serves the exact bytes again. */
    struct cfr_rpc_client *rs = vs_client(B, "restore");
    size_t n_missing = 0, n_msgs = 0;
    assert_non_null(rs);
    assert_int_equal(vc_get_objects(rs, &one, NULL, &got, &n_missing, &n_msgs),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, 0);
    assert_int_equal(got.n, 1);
    assert_int_equal(got.v[0].len, victim->len);
    assert_memory_equal(got.v[0].data, victim->data, victim->len);
    cfr_rpc_client_free(rs);

    /* The other cases run with B as before: no scrub, no tenant target. */
    globex_targets(B, NULL);
    assert_int_equal(vs_vault_stop(B, SIGTERM, 20000), 0);
    replication_cfg(1, "0", "");
    assert_int_equal(vs_vault_start(B, 30000), 0);
    sink_stop(hook);
    vc_objset_fini(&got);
    vc_objset_fini(&one);
    vc_objset_fini(&chunks);
    vc_snapshot_fini(&sn);
}

/* ---- 5. purge while a replica is away ------------------------------------ */

static void
test_sync_purge_stays_gone(void **state)
{
    static const char *const from_a[] = {"vault-a", NULL};
    static const char *const all_ok[] = {"vault-a", "vault-b", "vault-c", NULL};
    struct cfr_rpc_client *adm = vs_client(A, "acme-admin");
    struct cfr_rpc_client *adm2 = vs_client(A, "acme-admin2");
    Coffer__V1__AdminResponse *ar = NULL;
    struct snapset on_a, on_c;
    uint8_t approval[16];
    char msg[256];
    (void)state;
    assert_non_null(adm);
    assert_non_null(adm2);
    assert_int_equal(vs_vault_stop(C, SIGTERM, 20000), 0);

    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                      sn_inbox1.mailbox_id, 0, approval);
    assert_int_equal(vc_admin_ex(adm2, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE,
                                 NULL, 0, approval, NULL, NULL, msg,
                                 sizeof(msg)),
                     CFR_RPC_OK);
    assert_int_equal(vc_admin_ex(adm,
                                 COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                                 sn_inbox1.mailbox_id, 0, approval, NULL, &ar,
                                 msg, sizeof(msg)),
                     CFR_RPC_OK);
    assert_non_null(ar);
    assert_int_equal(ar->snapshots_removed, 2);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    assert_true(list_set(A, "acme-restore", &on_a));
    assert_int_equal(on_a.n, 1);
    assert_true(set_has(&on_a, sn_sent.header_id, NULL));

    /* B follows A while C is away: its round with C, which it tries
     * first, fails; the one with A goes on. */
    sync_and_wait(B, "acme", from_a);
    wait_set(B, &on_a);

    /* C returns with the purged snapshots still there. */
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_true(list_set(C, "acme-restore", &on_c));
    assert_int_equal(on_c.n, 3);
    /* A and B pull from C first: they hold tombstones, so nothing comes
     * back; then C applies them. */
    sync_and_wait(A, "acme", all_ok);
    sync_and_wait(B, "acme", all_ok);
    wait_set(A, &on_a);
    wait_set(B, &on_a);
    sync_and_wait(C, "acme", all_ok);
    wait_set(C, &on_a);
    /* And it stays so, round after round. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < N_VAULTS; i++) {
            sync_and_wait(&vaults[i], "acme", all_ok);
        }
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        struct snapset s;
        assert_true(list_set(&vaults[i], "acme-restore", &s));
        assert_true(set_equal(&s, &on_a));
        assert_false(set_has(&s, sn_inbox1.header_id, NULL));
        assert_false(set_has(&s, sn_inbox2.header_id, NULL));
    }
    Coffer__V1__SyncStatus pc = COFFER__V1__SYNC_STATUS__INIT;
    assert_true(status_line(C, "acme", "vault-a", &pc, NULL, 0));
    assert_true(pc.tombstones_applied >= 2);
    assert_int_equal(pc.behind, 0);
    cfr_rpc_client_free(adm);
    cfr_rpc_client_free(adm2);
}

/* ---- 6. bandwidth ------------------------------------------------------- */

static void
test_sync_bandwidth(void **state)
{
    static const char *const from_a[] = {"vault-a", NULL};
    struct vc_objset big = {0};
    struct vc_snapshot sn;
    struct snapset on_a;
    (void)state;
    memset(&sn, 0, sizeof(sn));
    for (uint64_t i = 0; i < BIG_CHUNKS; i++) {
        /* Random blocks: what is sealed stays about as large. */
        vc_make_chunk_ex(acme_kr, acme_ses, &big, 5000 + i, BIG_CHUNK, 4096,
                         1000000);
    }
    vc_make_snapshot(acme_kr, acme_ses, &sn, &big, "Archive", 10);
    push(A, "agent", acme_ses, &big, &sn);
    assert_true(list_set(A, "acme-restore", &on_a));

    uint64_t total = 0;
    for (size_t i = 0; i < big.n; i++) {
        total += big.v[i].len;
    }
    for (size_t i = 0; i < sn.pages.n; i++) {
        total += sn.pages.v[i].len;
    }
    assert_true(total >= 1024 * 1024);
    int64_t t0 = vc_now_ms();
    sync_and_wait(C, "acme", from_a);
    wait_set(C, &on_a);
    int64_t took = vc_now_ms() - t0;
    print_message("C pulled %llu KiB at 256 KiB/s in %lld ms\n",
                  (unsigned long long)(total / 1024), (long long)took);
    /* What it pulled less the one-second burst, at 256 KiB/s: >= 3 s
     * (5% slack for clock granularity). */
    int64_t min_ms = (int64_t)((total - BANDWIDTH) * 1000 / BANDWIDTH);
    assert_true(min_ms >= 3000);
    assert_true(took >= min_ms * 95 / 100);
    assert_true(took < WAIT_MS);
    check_acme_objects(C, &big, &sn);
    Coffer__V1__SyncStatus pa = COFFER__V1__SYNC_STATUS__INIT;
    assert_true(status_line(C, "acme", "vault-a", &pa, NULL, 0));
    assert_true(pa.bytes_pulled >= total);
    vc_objset_fini(&big);
    vc_snapshot_fini(&sn);
}

/* ---- 7. stop and kill in the middle of a pull ------------------------- */

/* How many objects of s v holds (asked with acme's agent certificate). */
static size_t
present_on(struct vs_vault *v, const struct vc_objset *s)
{
    struct cfr_rpc_client *ag = vs_client(v, "agent");
    bool miss[BIG_CHUNKS + 8];
    size_t n_miss = s->n;
    assert_non_null(ag);
    assert_true(s->n <= BIG_CHUNKS + 8);
    int st = vc_missing(ag, NULL, s, miss, &n_miss);
    cfr_rpc_client_free(ag);
    return st == CFR_RPC_OK ? s->n - n_miss : 0;
}

/* Triggers a round on C and waits until it holds more than after
 * objects of s, but not all: a pull is under way. */
static size_t
start_pull_on_c(const struct vc_objset *s, size_t after)
{
    int64_t end = vc_now_ms() + WAIT_MS;
    assert_int_equal(
        system_op(C, COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC, "acme", NULL),
        CFR_RPC_OK);
    for (;;) {
        size_t n = present_on(C, s);
        if (n > after && n < s->n) {
            return n;
        }
        if (n == s->n) {
            fail_msg("the pull finished before it could be interrupted");
        }
        if (vc_now_ms() > end) {
            fail_msg("no pull started on C");
        }
        vc_sleep_ms(20);
    }
}

static void
test_sync_stop_and_kill(void **state)
{
    struct vc_objset big = {0};
    struct vc_snapshot sn;
    struct snapset on_a, on_c;
    (void)state;
    memset(&sn, 0, sizeof(sn));
    for (uint64_t i = 0; i < BIG_CHUNKS; i++) {
        vc_make_chunk_ex(acme_kr, acme_ses, &big, 7000 + i, BIG_CHUNK, 4096,
                         1000000);
    }
    vc_make_snapshot(acme_kr, acme_ses, &sn, &big, "Archive2", 11);
    push(A, "agent", acme_ses, &big, &sn);
    assert_true(list_set(A, "acme-restore", &on_a));

    /* SIGTERM while C waits for its bandwidth budget: the wait and the
     * call in flight end at once, so the vault stops promptly. */
    (void)start_pull_on_c(&big, 0);
    int64_t t0 = vc_now_ms();
    assert_int_equal(vs_vault_stop(C, SIGTERM, 20000), 0);
    int64_t took = vc_now_ms() - t0;
    print_message("C stopped mid-pull in %lld ms\n", (long long)took);
    assert_true(took < 3000);
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_true(list_set(C, "acme-restore", &on_c));
    assert_false(set_has(&on_c, sn.header_id, NULL));
    size_t had = present_on(C, &big);

    /* kill -9 in the middle of the next pull; it resumes after restart,
     * fetching only what is still missing. */
    (void)start_pull_on_c(&big, had);
    assert_int_equal(vs_vault_stop(C, SIGKILL, 20000), 128 + SIGKILL);
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_true(list_set(C, "acme-restore", &on_c));
    assert_false(set_has(&on_c, sn.header_id, NULL));
    sync_and_wait(C, "acme", NULL);
    wait_set(C, &on_a);
    check_acme_objects(C, &big, &sn);
    vc_objset_fini(&big);
    vc_snapshot_fini(&sn);
}

/* ---- 8. the tombstone-keep guard, and re-seeding ----------------------- */

/*
 * The hold change time v records for acme's snapshot id, read with SyncList
 * as its peer (certificate) peer (ListSnapshots does not carry it); *held_r
 * its hold; -1 when v does not list it.
 */
static int64_t
hold_changed_on(struct vs_vault *v, const char *peer, const uint8_t *id,
                bool *held_r)
{
    struct cfr_rpc_client *cli = vs_client(v, peer);
    struct cfr_rpc_call *call = NULL;
    struct cfr_err err;
    struct cfr_buf msg;
    uint32_t bucket = id[0];
    uint8_t req[128];
    int64_t found = -1;
    int st = 0;
    assert_non_null(cli);
    Coffer__V1__SyncListRequest q = COFFER__V1__SYNC_LIST_REQUEST__INIT;
    q.tenant = (char *)"acme";
    q.n_buckets = 1;
    q.buckets = &bucket;
    size_t len = coffer__v1__sync_list_request__get_packed_size(&q);
    assert_true(len <= sizeof(req));
    (void)coffer__v1__sync_list_request__pack(&q, req);
    assert_int_equal(cfr_rpc_sstream_open(cli, "/coffer.v1.Vault/SyncList", req,
                                          len, 10000, &call, &err),
                     0);
    cfr_buf_init(&msg, 16u << 20);
    while (cfr_rpc_sstream_next(call, &msg, &st, &err) > 0) {
        Coffer__V1__SyncListResponse *m =
            coffer__v1__sync_list_response__unpack(NULL, msg.len, msg.data);
        assert_non_null(m);
        for (size_t i = 0; i < m->n_snapshots; i++) {
            const Coffer__V1__SnapshotRecord *r = m->snapshots[i];
            if (r->header_id.len == VC_ID_LEN &&
                memcmp(r->header_id.data, id, VC_ID_LEN) == 0) {
                found = r->hold_changed_ms;
                *held_r = r->held;
            }
        }
        coffer__v1__sync_list_response__free_unpacked(m, NULL);
    }
    assert_int_equal(st, CFR_RPC_OK);
    cfr_buf_fini(&msg);
    cfr_rpc_call_free(call);
    cfr_rpc_client_free(cli);
    return found;
}

static void
test_sync_tombstone_keep_guard(void **state)
{
    static const char *const from_a[] = {"vault-a", NULL};
    struct vc_objset chunks = {0};
    struct vc_snapshot sn;
    struct snapset on_a, on_c;
    char cmd[2 * VS_PATH_MAX];
    (void)state;
    memset(&sn, 0, sizeof(sn));
    for (uint64_t i = 0; i < 3; i++) {
        vc_make_chunk(acme_kr, acme_ses, &chunks, 8000 + i, 1000);
    }
    vc_make_snapshot(acme_kr, acme_ses, &sn, &chunks, "Old", 12);
    push(A, "agent", acme_ses, &chunks, &sn);

    /* Two days later on A and C (clocks a day apart are refused), C
     * keeping tombstones one day: A's snapshot is two days old there, older
     * than C's keep time, so C, which holds data already, must not pull it
     * (its tombstone could have been forgotten here). */
    assert_int_equal(vs_vault_stop(A, SIGTERM, 20000), 0);
    A->test_mode = true;
    snprintf(A->clock_offset, sizeof(A->clock_offset), "2d");
    assert_int_equal(vs_vault_start(A, 30000), 0);
    assert_true(list_set(A, "acme-restore", &on_a));
    assert_true(set_has(&on_a, sn.header_id, NULL));
    assert_int_equal(vs_vault_stop(C, SIGTERM, 20000), 0);
    C->test_mode = true;
    snprintf(C->clock_offset, sizeof(C->clock_offset), "2d");
    replication_cfg(2, "0", "retention = { tombstones = \"1d\"; };\n");
    assert_int_equal(vs_vault_start(C, 30000), 0);
    sync_and_wait(C, "acme", from_a);
    assert_true(list_set(C, "acme-restore", &on_c));
    assert_false(set_has(&on_c, sn.header_id, NULL));
    assert_int_equal(on_c.n + 1, on_a.n);
    assert_true(vc_log_has(C, "skipped=1"));
    /* Held back, not forgotten: it stays BEHIND, with the reason. */
    Coffer__V1__SyncStatus pa = COFFER__V1__SYNC_STATUS__INIT;
    char why[256] = "";
    assert_true(status_line(C, "acme", "vault-a", &pa, why, sizeof(why)));
    assert_int_equal(pa.behind, 1);
    assert_non_null(strstr(why, "tombstone keep time"));
    assert_true(pa.last_ok_ms >= pa.last_attempt_ms);
    /* B's clock is two days behind C's now: C refuses to sync with it
     * (peer times decide the guard) and says why. */
    Coffer__V1__SyncStatus pb = COFFER__V1__SYNC_STATUS__INIT;
    assert_true(status_line(C, "acme", "vault-b", &pb, why, sizeof(why)));
    assert_true(pb.last_ok_ms < pb.last_attempt_ms);
    assert_non_null(strstr(why, "clock differs by"));

    /* Re-seeded (its tenant directory removed, the registry kept), C
     * holds nothing, so it takes everything, old snapshot included; the
     * seed is killed (-9) halfway, after C committed some snapshots: it
     * stays a seed across the restart (a persisted marker), else C, no
     * longer empty, would hold back the rest as too old. Throttled so
     * that the pull of test 7's archive can be caught under way. */
    struct vc_objset big = {0};
    for (uint64_t i = 0; i < BIG_CHUNKS; i++) {
        vc_make_chunk_ex(acme_kr, acme_ses, &big, 7000 + i, BIG_CHUNK, 4096,
                         1000000);
    }
    assert_int_equal(vs_vault_stop(C, SIGTERM, 20000), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/data/acme'", C->dir);
    assert_int_equal(system(cmd), 0);
    replication_cfg(2, "256K", "retention = { tombstones = \"1d\"; };\n");
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_true(!list_set(C, "acme-restore", &on_c) || on_c.n == 0);
    (void)start_pull_on_c(&big, 0);
    assert_int_equal(vs_vault_stop(C, SIGKILL, 20000), 128 + SIGKILL);
    replication_cfg(2, "0", "retention = { tombstones = \"1d\"; };\n");
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_true(list_set(C, "acme-restore", &on_c));
    print_message("C holds %zu of %zu snapshots after the kill\n", on_c.n,
                  on_a.n);
    assert_true(on_c.n > 0 && on_c.n < on_a.n);
    assert_false(set_has(&on_c, sn.header_id, NULL));
    sync_and_wait(C, "acme", from_a);
    wait_set(C, &on_a);
    check_acme_objects(C, &chunks, &sn);
    check_acme_objects(C, &sent_chunks, &sn_sent);
    assert_true(status_line(C, "acme", "vault-a", &pa, why, sizeof(why)));
    assert_int_equal(pa.behind, 0);
    assert_string_equal(why, "");
    /* Seeded now: a later stale snapshot would be held back again. */
    assert_true(vc_log_has(C, "vault.sync.seeded"));

    /* A hold adopted from a peer whose clock runs 12 h ahead (A at +2d,
     * C now at +36h) is dated by its age there on C's clock, not by A's
     * clock: else it would lie 12 h in C's future and outrank any change
     * made on C meanwhile. */
    struct cfr_rpc_client *adm = vs_client(A, "acme-admin");
    char msg[256];
    bool held = false;
    assert_non_null(adm);
    assert_int_equal(vs_vault_stop(C, SIGTERM, 20000), 0);
    snprintf(C->clock_offset, sizeof(C->clock_offset), "36h");
    assert_int_equal(vs_vault_start(C, 30000), 0);
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD,
                              sn_sent.header_id, 0, NULL, msg, sizeof(msg)),
                     CFR_RPC_OK);
    cfr_rpc_client_free(adm);
    int64_t on_a_ms = hold_changed_on(A, "vault-b", sn_sent.header_id, &held);
    assert_true(held);
    int64_t c_now = wall_ms() + 36LL * 3600 * 1000;
    assert_true(on_a_ms > c_now + 11LL * 3600 * 1000);
    sync_and_wait(C, "acme", NULL);
    held = false;
    int64_t on_c_ms = hold_changed_on(C, "vault-a", sn_sent.header_id, &held);
    print_message("hold changed at %lld on A, adopted as %lld on C (its "
                  "clock %lld)\n",
                  (long long)on_a_ms, (long long)on_c_ms, (long long)c_now);
    assert_true(held);
    assert_true(on_c_ms <= wall_ms() + 36LL * 3600 * 1000);
    assert_true(on_c_ms >= c_now - 60000);
    vc_objset_fini(&big);
    vc_objset_fini(&chunks);
    vc_snapshot_fini(&sn);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_convergence),
        cmocka_unit_test(test_sync_placement),
        cmocka_unit_test(test_sync_batched_catch_up),
        cmocka_unit_test(test_sync_batch_fallback),
        cmocka_unit_test(test_sync_hold_release),
        cmocka_unit_test(test_sync_repair),
        cmocka_unit_test(test_sync_scheduled_scrub_repair),
        cmocka_unit_test(test_sync_purge_stays_gone),
        cmocka_unit_test(test_sync_bandwidth),
        cmocka_unit_test(test_sync_stop_and_kill),
        cmocka_unit_test(test_sync_tombstone_keep_guard),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
