/*
 * vault_test.c - coffer-vault end to end: real vault processes over mutual
 * TLS on 127.0.0.1, driven by a test that acts as agent, restore host,
 * auditor and admin with certificates from a throwaway PKI.
 *
 * What it proves:
 *  1. Sealed objects and snapshots round-trip byte for byte (and open with
 *     the tenant's keyring); a commit naming an absent object is refused.
 *  2. TLS refusals (no certificate, another CA, expired, no identity) do
 *     not disturb the vault.
 *  3. One tenant cannot list, read or commit another's data, nor tell
 *     which of its IDs exist.
 *  4. Roles: an agent cannot read back or administer; destructive admin
 *     operations need a second factor.
 *  5. After kill -9 at random points during uploads, every acknowledged
 *     object and snapshot is intact, and no snapshot exists that was not
 *     at least in flight.
 *  6. Hostile input (malformed, oversized, unknown method) gets clear
 *     errors while other clients are served.
 *  7. Bad configs are refused naming the setting, with distinct exit
 *     codes; SIGTERM exits 0; the test clock moves retention 31 days.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <pthread.h>    /* the killer thread */
#include <signal.h>     /* SIGKILL, SIGTERM */
#include <stdio.h>      /* snprintf */
#include <stdlib.h>     /* getenv, strtoull */
#include <string.h>     /* memcmp, strstr */
#include <time.h>       /* nanosleep, seeds */
#include <arpa/inet.h>  /* htonl: the webhook receiver */
#include <netinet/in.h> /* sockaddr_in */
#include <sys/socket.h> /* socket */
#include <sys/time.h>   /* struct timeval */
#include <unistd.h>     /* read, write, close */

#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* sealing real envelopes */
#include "id.h"                   /* cfr_id_plain for reference pages */
#include "keys.h"                 /* a tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "snap.h"                 /* reference lists and headers */
#include "vault_client_support.h" /* objects and RPC wrappers */
#include "vault_support.h"        /* the harness */

#define ID_LEN    32
#define MAX_OBJS  4096
#define GET_BATCH (1u << 20)

static struct vs_env env;
static struct vs_vault main_vault;
static struct cfr_keyring *keyring; /* acme's */
static struct cfr_session *session;
static uint64_t rng_state;

/* ---- small helpers -------------------------------------------------- */

static uint64_t
rnd(void)
{
    /* xorshift64*: reproducible from the printed seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * Uploads chunks and commits one snapshot as the acme agent; the chunks
 * and snapshot are returned for the caller to check against.
 */
static void
upload_snapshot(struct cfr_rpc_client *agent, struct vc_objset *chunks,
                struct vc_snapshot *sn, const char *mailbox, uint64_t seed,
                size_t n_chunks, size_t big)
{
    uint8_t lease[16];
    uint64_t stored = 0;
    bool already = true;

    for (size_t i = 0; i < n_chunks; i++) {
        vc_make_chunk(keyring, session, chunks, seed * 1000 + i,
                      100 + (size_t)(rnd() % 20000));
    }
    if (big > 0) {
        vc_make_chunk(keyring, session, chunks, seed * 1000 + 999, big);
    }
    vc_make_snapshot(keyring, session, sn, chunks, mailbox, seed);
    assert_int_equal(vc_open_lease(session, agent, lease, NULL), CFR_RPC_OK);
    assert_int_equal(
        vc_put_objects(agent, lease, chunks, 0, chunks->n, 7, &stored, NULL),
        CFR_RPC_OK);
    assert_int_equal(stored, chunks->n);
    assert_int_equal(vc_put_objects(agent, lease, &sn->pages, 0, sn->pages.n,
                                    16, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(vc_commit(agent, lease, sn, &already, NULL), CFR_RPC_OK);
    assert_false(already);
}

/* ---- tests ------------------------------------------------------------- */

static void
test_vault_objects_and_snapshots_round_trip(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    struct cfr_rpc_client *rest = vs_client(&main_vault, "acme-restore");
    struct vc_objset chunks = {0}, got = {0}, stray = {0};
    struct vc_snapshot sn, bad;
    bool *miss;
    size_t n_missing, n_msgs;
    uint8_t lease[16], unknown[ID_LEN];
    struct cfr_opener *op;
    struct cfr_buf plain;
    struct cfr_err err;
    int st;
    bool already = false;

    assert_non_null(agent);
    assert_non_null(rest);
    /* Before: the vault lacks every one of a fresh batch. */
    for (size_t i = 0; i < 5; i++) {
        vc_make_chunk(keyring, session, &stray, 7000 + i, 300);
    }
    miss = cfr_calloc(stray.n, sizeof(bool));
    assert_int_equal(vc_missing(agent, NULL, &stray, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, stray.n);

    /* 30 chunks plus one of 3 MiB: GetObjects must come in batches. */
    upload_snapshot(agent, &chunks, &sn, "INBOX", 1, 30, 3u << 20);
    cfr_free(miss);
    miss = cfr_calloc(chunks.n, sizeof(bool));
    assert_int_equal(vc_open_lease(session, agent, lease, NULL), CFR_RPC_OK);
    assert_int_equal(vc_missing(agent, lease, &chunks, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, 0);
    /* Committing the same header again is idempotent. */
    assert_int_equal(vc_commit(agent, lease, &sn, &already, NULL), CFR_RPC_OK);
    assert_true(already);

    /* Snapshot records, with and without the sealed header. */
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(agent, true, &st);
    assert_int_equal(st, CFR_RPC_OK);
    assert_int_equal(ls->n_snapshots, 1);
    assert_memory_equal(ls->snapshots[0]->header_id.data, sn.header_id, ID_LEN);
    assert_memory_equal(ls->snapshots[0]->mailbox_id.data, sn.mailbox_id,
                        ID_LEN);
    assert_memory_equal(ls->snapshots[0]->refs->id.data, sn.root.id, ID_LEN);
    assert_int_equal(ls->snapshots[0]->refs->entries, sn.root.entries);
    assert_int_equal(ls->snapshots[0]->header.len, sn.header_len);
    assert_memory_equal(ls->snapshots[0]->header.data, sn.header,
                        sn.header_len);
    assert_true(ls->snapshots[0]->received_ms > 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* Every object comes back byte for byte, and opens. */
    memset(unknown, 0xab, sizeof(unknown));
    assert_int_equal(
        vc_get_objects(rest, &chunks, unknown, &got, &n_missing, &n_msgs),
        CFR_RPC_OK);
    assert_int_equal(got.n, chunks.n);
    assert_int_equal(n_missing, 1);
    assert_true(n_msgs >= 2); /* 1 MiB batches, about 2 MiB in all */
    op = cfr_opener_new(keyring, &err);
    assert_non_null(op);
    cfr_buf_init(&plain, (size_t)8 << 20);
    for (size_t i = 0; i < chunks.n; i++) {
        const struct vc_obj *o = vc_objset_find(&got, chunks.v[i].id);
        assert_non_null(o);
        assert_int_equal(o->len, chunks.v[i].len);
        assert_memory_equal(o->data, chunks.v[i].data, o->len);
        assert_int_equal(o->kind, COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED);
        assert_int_equal(cfr_env_open(op, CFR_ENV_CHUNK, o->id, o->data, o->len,
                                      (size_t)8 << 20, &plain, &err),
                         0);
    }
    cfr_buf_fini(&plain);
    cfr_opener_free(op);

    /* A commit naming an object the vault lacks is refused. */
    vc_make_snapshot(keyring, session, &bad, &stray, "Sent", 2);
    assert_int_equal(vc_put_objects(agent, lease, &bad.pages, 0, bad.pages.n,
                                    16, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(vc_commit(agent, lease, &bad, NULL, NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    ls = vc_list_snapshots(agent, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    assert_int_equal(ls->n_snapshots, 1);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    vc_snapshot_fini(&bad);
    vc_snapshot_fini(&sn);
    vc_objset_fini(&chunks);
    vc_objset_fini(&got);
    vc_objset_fini(&stray);
    cfr_free(miss);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
}

static void
test_vault_tls_refusals_keep_serving(void **state)
{
    (void)state;
    static const char *const refused[] = {NULL, "noid", "twoid", "expired",
                                          "rogue"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        struct cfr_rpc_client *cli = vs_client(&main_vault, refused[i]);
        assert_non_null(cli);
        int st = vc_health(cli, NULL);
        if (st == CFR_RPC_OK) {
            fail_msg("identity %s was accepted",
                     refused[i] ? refused[i] : "(none)");
        }
        if (refused[i] != NULL && (strcmp(refused[i], "noid") == 0 ||
                                   strcmp(refused[i], "twoid") == 0)) {
            /* Valid chain, no usable identity: refused by the vault. */
            assert_int_equal(st, CFR_RPC_UNAUTHENTICATED);
        }
        cfr_rpc_client_free(cli);
    }
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    Coffer__V1__HealthResponse *h = NULL;
    assert_int_equal(vc_health(agent, &h), CFR_RPC_OK);
    assert_string_equal(h->region, "test-1");
    assert_true(h->time_ms > 0);
    /* An agent sees no statistics. */
    assert_int_equal(h->objects, 0);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    cfr_rpc_client_free(agent);
    assert_true(vs_vault_alive(&main_vault));
    assert_true(vc_log_has(&main_vault, "decision=denied"));
}

static void
test_vault_tenants_are_isolated(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    struct cfr_rpc_client *gagent = vs_client(&main_vault, "globex-agent");
    struct cfr_rpc_client *grest = vs_client(&main_vault, "restore");
    struct vc_objset chunks = {0}, got = {0};
    struct vc_snapshot sn;
    size_t n_missing, n_msgs;
    uint8_t lease[16];
    bool *miss;
    int st;

    upload_snapshot(agent, &chunks, &sn, "Archive", 3, 12, 0);
    miss = cfr_calloc(chunks.n, sizeof(bool));

    /* globex cannot tell which of acme's IDs exist. */
    assert_int_equal(vc_missing(gagent, NULL, &chunks, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, chunks.n);
    assert_int_equal(vc_open_lease(session, gagent, lease, NULL), CFR_RPC_OK);
    assert_int_equal(vc_missing(gagent, lease, &chunks, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, chunks.n);
    /* ... nor commit a snapshot over them ... */
    assert_int_equal(vc_commit(gagent, lease, &sn, NULL, NULL),
                     CFR_RPC_FAILED_PRECONDITION);
    /* ... nor list or read them. */
    Coffer__V1__ListSnapshotsResponse *ls =
        vc_list_snapshots(gagent, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    assert_int_equal(ls->n_snapshots, 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    ls = vc_list_snapshots(grest, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    assert_int_equal(ls->n_snapshots, 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    assert_int_equal(
        vc_get_objects(grest, &chunks, NULL, &got, &n_missing, &n_msgs),
        CFR_RPC_OK);
    assert_int_equal(got.n, 0);
    assert_int_equal(n_missing, chunks.n);

    /* acme still has all of it. */
    assert_int_equal(vc_missing(agent, NULL, &chunks, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, 0);

    vc_snapshot_fini(&sn);
    vc_objset_fini(&chunks);
    vc_objset_fini(&got);
    cfr_free(miss);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(gagent);
    cfr_rpc_client_free(grest);
}

static void
test_vault_roles_are_enforced(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    struct cfr_rpc_client *adm = vs_client(&main_vault, "acme-admin");
    struct cfr_rpc_client *rest = vs_client(&main_vault, "acme-restore");
    struct cfr_rpc_client *aud = vs_client(&main_vault, "acme-auditor");
    struct vc_objset chunks = {0}, got = {0};
    struct vc_snapshot sn;
    size_t n_missing, n_msgs;
    uint8_t lease[16];
    char msg[CFR_ERR_MSG_MAX];
    int st;
    Coffer__V1__AdminResponse *ar = NULL;
    Coffer__V1__HealthResponse *h = NULL;

    upload_snapshot(agent, &chunks, &sn, "Drafts", 4, 4, 0);

    /* An agent never reads back and never administers. */
    assert_int_equal(
        vc_get_objects(agent, &chunks, NULL, &got, &n_missing, &n_msgs),
        CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(got.n, 0);
    assert_int_equal(vc_admin(agent,
                              COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                              NULL, 0, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(vc_admin(agent, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, 0,
                              NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(vc_admin(agent,
                              COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION,
                              NULL, 1000, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    /* A restore host cannot write, an auditor cannot read objects. */
    assert_int_equal(vc_open_lease(session, rest, lease, NULL),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(vc_commit(rest, lease, &sn, NULL, NULL),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(
        vc_get_objects(aud, &chunks, NULL, &got, &n_missing, &n_msgs),
        CFR_RPC_PERMISSION_DENIED);
    /* The auditor sees its tenant's statistics. */
    assert_int_equal(vc_health(aud, &h), CFR_RPC_OK);
    assert_true(h->objects >= chunks.n);
    assert_true(h->snapshots >= 1);
    protobuf_c_message_free_unpacked(&h->base, NULL);

    /* Destructive admin operations wait for a second factor. */
    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                      sn.mailbox_id, 0, NULL);
    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE, sn.header_id,
                      0, NULL);
    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION, NULL,
                      86400000, NULL);
    /* A wrong TOTP code is refused (and counted as a denial). */
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn.mailbox_id, 0, NULL, "123456", NULL, msg, sizeof(msg)),
        CFR_RPC_PERMISSION_DENIED);
    /* Lengthening retention needs none. */
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_SET_RETENTION,
                              NULL, 60 * 86400000LL, &ar, NULL, 0),
                     CFR_RPC_OK);
    assert_false(ar->pending);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    /* The others run. */
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD,
                              sn.header_id, 0, NULL, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(vc_admin(adm,
                              COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION,
                              NULL, 0, &ar, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(ar->snapshots_removed, 0);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, 0,
                              NULL, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_SCRUB, NULL,
                              0, &ar, NULL, 0),
                     CFR_RPC_OK);
    assert_int_equal(ar->bad_objects, 0);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(adm, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    bool held = false;
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        if (memcmp(ls->snapshots[i]->header_id.data, sn.header_id, ID_LEN) ==
            0) {
            held = ls->snapshots[i]->held;
        }
    }
    assert_true(held);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    /* GC kept everything a retained snapshot needs. */
    bool *miss = cfr_calloc(chunks.n, sizeof(bool));
    assert_int_equal(vc_missing(agent, NULL, &chunks, miss, &n_missing),
                     CFR_RPC_OK);
    assert_int_equal(n_missing, 0);
    cfr_free(miss);

    /* Every decision reached the audit log. */
    assert_true(vc_log_has(&main_vault, "decision=denied "
                                        "method=/coffer.v1.Vault/GetObjects "
                                        "status=PERMISSION_DENIED tenant=acme "
                                        "role=agent"));
    assert_true(vc_log_has(&main_vault, "decision=allowed "
                                        "method=/coffer.v1.Vault/Admin"));

    vc_snapshot_fini(&sn);
    vc_objset_fini(&chunks);
    vc_objset_fini(&got);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(adm);
    cfr_rpc_client_free(rest);
    cfr_rpc_client_free(aud);
}

static void
test_vault_purge_needs_a_second_admin(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    struct cfr_rpc_client *adm = vs_client(&main_vault, "acme-admin");
    struct cfr_rpc_client *adm2 = vs_client(&main_vault, "acme-admin2");
    struct cfr_rpc_client *aud = vs_client(&main_vault, "acme-auditor");
    struct cfr_rpc_client *grest = vs_client(&main_vault, "restore");
    struct vc_objset chunks = {0};
    struct vc_snapshot sn, other;
    Coffer__V1__AdminResponse *ar = NULL;
    Coffer__V1__AuditResponse *au = NULL;
    uint8_t approval[16];
    struct cfr_err err;
    int st;

    upload_snapshot(agent, &chunks, &sn, "Trash", 61, 3, 0);
    memset(&other, 0, sizeof(other));
    memset(other.mailbox_id, 0x5a, ID_LEN);
    vc_expect_pending(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                      sn.mailbox_id, 0, approval);
    /* Not yet approved; and the requester cannot approve itself. */
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn.mailbox_id, 0, approval, NULL, NULL, NULL, 0),
        CFR_RPC_FAILED_PRECONDITION);
    assert_int_equal(vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE,
                                 NULL, 0, approval, NULL, NULL, NULL, 0),
                     CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(vc_admin_ex(adm2, COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE,
                                 NULL, 0, approval, NULL, NULL, NULL, 0),
                     CFR_RPC_OK);
    /* The approval covers exactly this mailbox ... */
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    other.mailbox_id, 0, approval, NULL, NULL, NULL, 0),
        CFR_RPC_FAILED_PRECONDITION);
    /* ... runs once ... */
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn.mailbox_id, 0, approval, NULL, &ar, NULL, 0),
        CFR_RPC_OK);
    assert_false(ar->pending);
    assert_int_equal(ar->snapshots_removed, 1);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    /* ... and never again. */
    assert_int_equal(
        vc_admin_ex(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                    sn.mailbox_id, 0, approval, NULL, NULL, NULL, 0),
        CFR_RPC_FAILED_PRECONDITION);
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(adm, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        assert_memory_not_equal(ls->snapshots[i]->mailbox_id.data,
                                sn.mailbox_id, ID_LEN);
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* The audit log holds acme's decisions, and only acme's. */
    {
        Coffer__V1__AuditRequest req = COFFER__V1__AUDIT_REQUEST__INIT;
        bool saw_denied = false, saw_admin = false;
        req.limit = 10000;
        assert_int_equal(vs_unary(aud, "Audit", &req.base,
                                  &coffer__v1__audit_response__descriptor,
                                  (ProtobufCMessage **)&au, &err),
                         CFR_RPC_OK);
        assert_non_null(au);
        assert_true(au->n_entries > 10);
        for (size_t i = 0; i < au->n_entries; i++) {
            assert_non_null(
                strstr(au->entries[i]->identity, "coffer://tenant/acme/"));
            if (strcmp(au->entries[i]->decision, "denied") == 0 &&
                strstr(au->entries[i]->method, "GetObjects") != NULL) {
                saw_denied = true;
            }
            if (strstr(au->entries[i]->method, "Admin") != NULL) {
                saw_admin = true;
            }
        }
        assert_true(saw_denied);
        assert_true(saw_admin);
        protobuf_c_message_free_unpacked(&au->base, NULL);
        au = NULL;
        assert_int_equal(vs_unary(grest, "Audit", &req.base,
                                  &coffer__v1__audit_response__descriptor,
                                  (ProtobufCMessage **)&au, &err),
                         CFR_RPC_PERMISSION_DENIED);
    }
    vc_snapshot_fini(&sn);
    vc_objset_fini(&chunks);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(adm);
    cfr_rpc_client_free(adm2);
    cfr_rpc_client_free(aud);
    cfr_rpc_client_free(grest);
}

static void
test_vault_hostile_input_gets_clear_errors(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
    struct cfr_rpc_client *other = vs_client(&main_vault, "acme-restore");
    struct cfr_buf resp;
    struct cfr_err err;
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    uint8_t *big;
    size_t big_len = (size_t)5 << 20;

    cfr_buf_init(&resp, 1u << 20);
    assert_int_equal(
        vs_unary_raw(agent, "Missing", garbage, sizeof(garbage), &resp, &err),
        CFR_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "malformed"));
    assert_int_equal(
        vs_unary_raw(agent, "Commit", garbage, sizeof(garbage), &resp, &err),
        CFR_RPC_INVALID_ARGUMENT);
    /* A well-formed message with a wrong-sized ID. */
    {
        Coffer__V1__MissingRequest req = COFFER__V1__MISSING_REQUEST__INIT;
        uint8_t short_id[31] = {0};
        ProtobufCBinaryData id = {sizeof(short_id), short_id};
        ProtobufCMessage *r = NULL;
        req.n_ids = 1;
        req.ids = &id;
        assert_int_equal(vs_unary(agent, "Missing", &req.base,
                                  &coffer__v1__missing_response__descriptor, &r,
                                  &err),
                         CFR_RPC_INVALID_ARGUMENT);
        assert_null(r);
    }
    assert_int_equal(vs_unary_raw(agent, "NoSuchMethod", "", 0, &resp, &err),
                     CFR_RPC_UNIMPLEMENTED);
    /* Over the configured 4 MiB limit. */
    big = cfr_calloc(1, big_len);
    assert_non_null(big);
    assert_int_equal(vs_unary_raw(agent, "Missing", big, big_len, &resp, &err),
                     CFR_RPC_RESOURCE_EXHAUSTED);
    cfr_free(big);
    /* Others, and the same client, are still served. */
    assert_int_equal(vc_health(other, NULL), CFR_RPC_OK);
    assert_int_equal(vc_health(agent, NULL), CFR_RPC_OK);
    assert_true(vs_vault_alive(&main_vault));
    cfr_buf_fini(&resp);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(other);
}

/* ---- crash durability --------------------------------------------------- */

struct killer {
    struct vs_vault *v;
    long delay_ms;
};

static void *
killer_main(void *arg)
{
    struct killer *k = arg;
    sleep_ms(k->delay_ms);
    kill(k->v->pid, SIGKILL);
    return NULL;
}

static void
verify_durable(struct vs_vault *v, const struct vc_objset *acked,
               const struct vc_objset *acked_snaps,
               const struct vc_objset *in_flight)
{
    struct cfr_rpc_client *rest = vs_client(v, "acme-restore");
    struct vc_objset got = {0};
    size_t n_missing = 0, n_msgs = 0;
    int st;

    /* In slices: a request names at most 4096 IDs. */
    for (size_t from = 0; from < acked->n; from += 1000) {
        struct vc_objset slice = *acked;
        slice.v = acked->v + from;
        slice.n = acked->n - from < 1000 ? acked->n - from : 1000;
        assert_int_equal(
            vc_get_objects(rest, &slice, NULL, &got, &n_missing, &n_msgs),
            CFR_RPC_OK);
        assert_int_equal(n_missing, 0);
        for (size_t i = 0; i < slice.n; i++) {
            const struct vc_obj *o = vc_objset_find(&got, slice.v[i].id);
            assert_non_null(o);
            assert_int_equal(o->len, slice.v[i].len);
            assert_memory_equal(o->data, slice.v[i].data, o->len);
        }
        vc_objset_fini(&got);
    }
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(rest, true, &st);
    assert_int_equal(st, CFR_RPC_OK);
    for (size_t i = 0; i < acked_snaps->n; i++) {
        bool found = false;
        for (size_t k = 0; k < ls->n_snapshots; k++) {
            if (memcmp(ls->snapshots[k]->header_id.data, acked_snaps->v[i].id,
                       ID_LEN) == 0) {
                found = true;
                assert_int_equal(ls->snapshots[k]->header.len,
                                 acked_snaps->v[i].len);
                assert_memory_equal(ls->snapshots[k]->header.data,
                                    acked_snaps->v[i].data,
                                    acked_snaps->v[i].len);
            }
        }
        assert_true(found);
    }
    /* Anything beyond the acknowledged ones was in flight at a kill. */
    for (size_t k = 0; k < ls->n_snapshots; k++) {
        const uint8_t *hid = ls->snapshots[k]->header_id.data;
        if (vc_objset_find(acked_snaps, hid) == NULL) {
            assert_non_null(vc_objset_find(in_flight, hid));
        }
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    vc_objset_fini(&got);
    cfr_rpc_client_free(rest);
}

static void
test_vault_kill9_keeps_acknowledged_writes(void **state)
{
    (void)state;
    struct vs_vault v;
    struct vc_objset acked = {0}, acked_snaps = {0}, in_flight = {0};
    const int rounds = 20;
    uint64_t seq = 100000;
    size_t kills_mid_commit = 0;

    assert_int_equal(vs_vault_init(&v, &env, "crash"), 0);
    for (int r = 0; r < rounds; r++) {
        struct killer k = {&v, 30 + (long)(rnd() % 400)};
        pthread_t th;
        struct cfr_rpc_client *agent;

        assert_int_equal(vs_vault_start(&v, 30000), 0);
        verify_durable(&v, &acked, &acked_snaps, &in_flight);
        agent = vs_client(&v, "agent");
        assert_non_null(agent);
        assert_int_equal(pthread_create(&th, NULL, killer_main, &k), 0);
        for (;;) {
            struct vc_objset chunks = {0};
            struct vc_snapshot sn;
            uint8_t lease[16];
            size_t first = 0;
            int st;

            for (int i = 0; i < 4; i++) {
                vc_make_chunk(keyring, session, &chunks, seq++,
                              500 + (size_t)(rnd() % 8000));
            }
            vc_make_snapshot(keyring, session, &sn, &chunks, "INBOX", seq++);
            st = vc_open_lease(session, agent, lease, NULL);
            if (st == CFR_RPC_OK) {
                st = vc_put_objects(agent, lease, &chunks, 0, chunks.n, 2, NULL,
                                    NULL);
            }
            if (st == CFR_RPC_OK) {
                for (size_t i = first; i < chunks.n; i++) {
                    vc_objset_add(&acked, chunks.v[i].id, chunks.v[i].kind,
                                  chunks.v[i].data, chunks.v[i].len);
                }
                st = vc_put_objects(agent, lease, &sn.pages, 0, sn.pages.n, 8,
                                    NULL, NULL);
            }
            if (st == CFR_RPC_OK) {
                vc_objset_add(&in_flight, sn.header_id, 0, sn.header,
                              sn.header_len);
                st = vc_commit(agent, lease, &sn, NULL, NULL);
                if (st == CFR_RPC_OK) {
                    vc_objset_add(&acked_snaps, sn.header_id, 0, sn.header,
                                  sn.header_len);
                } else {
                    kills_mid_commit++;
                }
            }
            vc_snapshot_fini(&sn);
            vc_objset_fini(&chunks);
            if (st != CFR_RPC_OK) {
                break;
            }
        }
        pthread_join(th, NULL);
        assert_int_equal(vs_vault_stop(&v, SIGKILL, 10000), 128 + SIGKILL);
        cfr_rpc_client_free(agent);
    }
    assert_int_equal(vs_vault_start(&v, 30000), 0);
    verify_durable(&v, &acked, &acked_snaps, &in_flight);
    print_message("kill -9: %d rounds, %zu objects and %zu snapshots "
                  "acknowledged, %zu kills during a commit\n",
                  rounds, acked.n, acked_snaps.n, kills_mid_commit);
    assert_true(acked_snaps.n > 0);
    assert_int_equal(vs_vault_stop(&v, SIGTERM, 30000), 0);
    vc_objset_fini(&acked);
    vc_objset_fini(&acked_snaps);
    vc_objset_fini(&in_flight);
}

/* A one-shot webhook receiver: accepts POSTs, keeps their bytes. */
struct hook {
    int fd;
    int port;
    char body[16384];
    size_t len;
    pthread_t th;
};

static void *
hook_main(void *arg)
{
    struct hook *h = arg;
    /* Serve until the test closes the socket (accept then fails). */
    for (;;) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) {
            break;
        }
        struct timeval tv = {2, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        for (;;) {
            ssize_t n = read(c, h->body + h->len, sizeof(h->body) - 1 - h->len);
            if (n <= 0) {
                break;
            }
            h->len += (size_t)n;
            h->body[h->len] = '\0';
            /* Headers and a body with a closing brace: answer. */
            char *hdr_end = strstr(h->body, "\r\n\r\n");
            if (hdr_end != NULL && strrchr(hdr_end, '}') != NULL) {
                break;
            }
        }
        static const char ok[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!write(c, ok, sizeof(ok) - 1);
        close(c);
    }
    return NULL;
}

static void
hook_start(struct hook *h)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    memset(h, 0, sizeof(*h));
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(h->fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(h->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(h->fd, 8), 0);
    assert_int_equal(getsockname(h->fd, (struct sockaddr *)&a, &al), 0);
    h->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&h->th, NULL, hook_main, h), 0);
}

static void
hook_stop(struct hook *h)
{
    shutdown(h->fd, SHUT_RDWR);
    close(h->fd);
    pthread_join(h->th, NULL);
}

static void
test_vault_denials_lock_out(void **state)
{
    struct hook hook;
    (void)state;
    struct vs_vault v;
    struct cfr_rpc_client *agent, *rest;
    struct vc_objset none = {0}, got = {0};
    size_t n_missing, n_msgs;
    uint8_t id[ID_LEN];

    assert_int_equal(vs_vault_init(&v, &env, "lockout"), 0);
    hook_start(&hook);
    snprintf(v.extra_cfg, sizeof(v.extra_cfg),
             "limits = { max_failures = 3; failure_window = \"1m\";\n"
             "           lockout = \"2s\"; };\n"
             "notify = { webhook = \"http://127.0.0.1:%d/hook\"; };\n",
             hook.port);
    assert_int_equal(vs_vault_start(&v, 30000), 0);
    agent = vs_client(&v, "agent");
    rest = vs_client(&v, "acme-restore");
    memset(id, 7, sizeof(id));
    vc_objset_add(&none, id, 1, id, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            vc_get_objects(agent, &none, NULL, &got, &n_missing, &n_msgs),
            CFR_RPC_PERMISSION_DENIED);
    }
    /* Locked: the identity, and the address it came from. */
    assert_int_equal(vc_health(agent, NULL), CFR_RPC_PERMISSION_DENIED);
    assert_int_equal(vc_health(rest, NULL), CFR_RPC_PERMISSION_DENIED);
    assert_true(vc_log_has(&v, "vault.lockout"));
    sleep_ms(2500);
    assert_int_equal(vc_health(rest, NULL), CFR_RPC_OK);
    assert_int_equal(vc_health(agent, NULL), CFR_RPC_OK);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    assert_int_equal(vs_vault_stop(&v, SIGTERM, 30000), 0);
    /* The lockout went out as a webhook notification. */
    hook_stop(&hook);
    if (strstr(hook.body, "vault.lockout") == NULL) {
        fail_msg("no lockout notification; webhook got:\n%s", hook.body);
    }
    assert_non_null(strstr(hook.body, "POST /hook"));
    vc_objset_fini(&none);
    vc_objset_fini(&got);
}

/* ---- configuration, signals, test clock -----------------------------------
 */

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
expect_config_refused(const char *conf_text, const char *const *extra_args,
                      int want_code, const char *want_text)
{
    char conf[2 * VS_PATH_MAX], out[8192];
    const char *args[8];
    size_t n = 0;
    int rc;
    vs_env_path(&env, "bad.conf", conf, sizeof(conf));
    write_file(conf, conf_text);
    args[n++] = "--config";
    args[n++] = conf;
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        args[n++] = extra_args[i];
    }
    args[n] = NULL;
    rc = vs_run_vault(args, 30000, out, sizeof(out));
    if (rc != want_code || strstr(out, want_text) == NULL) {
        fail_msg("exit %d (want %d), output lacks \"%s\":\n%s", rc, want_code,
                 want_text, out);
    }
}

static void
test_vault_bad_config_is_refused(void **state)
{
    (void)state;
    char base[4096], text[8192];
    const char *none[] = {NULL};
    const char *test_mode[] = {"--test-mode", NULL};

    snprintf(base, sizeof(base),
             "data_dir = \"%s/badcfg-data\";\n"
             "tls = { cert = \"%s/server.pem\"; key = \"%s/server.key\";\n"
             "        client_ca = \"%s/clients-ca.pem\"; };\n",
             env.dir, env.dir, env.dir, env.dir);
    snprintf(text, sizeof(text),
             "listen = \"127.0.0.1:0\";\n%s"
             "retention = { windw = \"30d\"; };\n",
             base);
    expect_config_refused(text, none, 3, "retention.windw");
    snprintf(text, sizeof(text),
             "listen = \"127.0.0.1:0\";\n%s"
             "workers = \"many\";\n",
             base);
    expect_config_refused(text, none, 3, "workers");
    snprintf(text, sizeof(text), "%s", base);
    expect_config_refused(text, none, 3, "listen");
    snprintf(text, sizeof(text),
             "listen = \"127.0.0.1:0\";\n%s"
             "test_clock_offset = \"31d\";\n",
             base);
    expect_config_refused(text, none, 3, "test_clock_offset");
    snprintf(text, sizeof(text),
             "listen = \"127.0.0.1:0\";\n%s"
             "retention = { window = \"30x\"; };\n",
             base);
    expect_config_refused(text, test_mode, 3, "retention.window");
    /* A TLS file that is not there. */
    snprintf(text, sizeof(text),
             "listen = \"127.0.0.1:0\";\n"
             "data_dir = \"%s/badcfg-data\";\n"
             "tls = { cert = \"%s/nope.pem\"; key = \"%s/server.key\";\n"
             "        client_ca = \"%s/clients-ca.pem\"; };\n",
             env.dir, env.dir, env.dir, env.dir);
    expect_config_refused(text, none, 3, "tls.cert");
    /* The main vault's port is taken: a distinct exit code. */
    snprintf(text, sizeof(text), "listen = \"127.0.0.1:%d\";\n%s",
             main_vault.port, base);
    expect_config_refused(text, none, 4, "listen");
    /* The test clock without test mode. */
    snprintf(text, sizeof(text), "listen = \"127.0.0.1:0\";\n%s", base);
    {
        const char *offset[] = {"--test-clock-offset", "31d", NULL};
        expect_config_refused(text, offset, 2, "--test-mode");
    }
    /* No --config at all. */
    {
        char out[4096];
        const char *args[] = {NULL};
        assert_int_equal(vs_run_vault(args, 10000, out, sizeof(out)), 2);
        assert_non_null(strstr(out, "--config"));
    }
    assert_true(vs_vault_alive(&main_vault));
}

static void
test_vault_test_clock_moves_retention(void **state)
{
    (void)state;
    struct vs_vault v;
    struct vc_objset c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, got = {0};
    struct vc_snapshot s1, s2, s3, s4;
    struct cfr_rpc_client *agent, *adm, *rest;
    Coffer__V1__AdminResponse *ar = NULL;
    size_t n_missing, n_msgs;
    int st;

    assert_int_equal(vs_vault_init(&v, &env, "retention"), 0);
    v.test_mode = true;
    snprintf(v.extra_cfg, sizeof(v.extra_cfg), "lease_ttl = \"1h\";\n");
    assert_int_equal(vs_vault_start(&v, 30000), 0);
    agent = vs_client(&v, "agent");
    upload_snapshot(agent, &c1, &s1, "INBOX", 51, 3, 0);
    upload_snapshot(agent, &c2, &s2, "INBOX", 52, 3, 0);
    upload_snapshot(agent, &c3, &s3, "Sent", 53, 3, 0);
    cfr_rpc_client_free(agent);
    assert_int_equal(vs_vault_stop(&v, SIGTERM, 30000), 0);

    /* 31 days later, by the test clock. */
    snprintf(v.clock_offset, sizeof(v.clock_offset), "31d");
    assert_int_equal(vs_vault_start(&v, 30000), 0);
    assert_true(vc_log_has(&v, "THE VAULT CLOCK IS MOVED"));
    adm = vs_client(&v, "acme-admin");
    rest = vs_client(&v, "acme-restore");
    assert_int_equal(vc_admin(adm,
                              COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION,
                              NULL, 0, &ar, NULL, 0),
                     CFR_RPC_OK);
    /* Only the older INBOX snapshot goes: the newest per mailbox stays. */
    assert_int_equal(ar->snapshots_removed, 1);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    Coffer__V1__ListSnapshotsResponse *ls = vc_list_snapshots(adm, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    assert_int_equal(ls->n_snapshots, 2);
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        assert_memory_not_equal(ls->snapshots[i]->header_id.data, s1.header_id,
                                ID_LEN);
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    /* GC collects what only the dropped snapshot needed (leases expired). */
    assert_int_equal(
        vc_admin(adm, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, 0, &ar, NULL, 0),
        CFR_RPC_OK);
    assert_true(ar->objects_removed >= c1.n);
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    assert_int_equal(vc_get_objects(rest, &c1, NULL, &got, &n_missing, &n_msgs),
                     CFR_RPC_OK);
    assert_int_equal(got.n, 0);
    vc_objset_fini(&got);
    assert_int_equal(vc_get_objects(rest, &c2, NULL, &got, &n_missing, &n_msgs),
                     CFR_RPC_OK);
    assert_int_equal(got.n, c2.n);
    vc_objset_fini(&got);
    agent = vs_client(&v, "agent");
    upload_snapshot(agent, &c4, &s4, "INBOX", 54, 3, 0);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(adm);
    cfr_rpc_client_free(rest);
    assert_int_equal(vs_vault_stop(&v, SIGTERM, 30000), 0);

    /*
     * 62 days on, the vault's own schedule (every second here) drops s2
     * (s4 is now INBOX's newest) and collects its chunks, unasked.
     */
    snprintf(v.clock_offset, sizeof(v.clock_offset), "62d");
    snprintf(v.extra_cfg, sizeof(v.extra_cfg),
             "lease_ttl = \"1h\";\nretention = { schedule = \"1s\"; };\n");
    assert_int_equal(vs_vault_start(&v, 30000), 0);
    rest = vs_client(&v, "acme-restore");
    for (int tries = 0;; tries++) {
        ls = vc_list_snapshots(rest, false, &st);
        assert_int_equal(st, CFR_RPC_OK);
        size_t n = ls->n_snapshots;
        protobuf_c_message_free_unpacked(&ls->base, NULL);
        vc_objset_fini(&got);
        assert_int_equal(
            vc_get_objects(rest, &c2, NULL, &got, &n_missing, &n_msgs),
            CFR_RPC_OK);
        /* The pass logs once it is done, just after the deletes. */
        if (n == 2 && got.n == 0 && vc_log_has(&v, "vault.maintenance")) {
            break;
        }
        if (tries > 150) {
            fail_msg("schedule did not apply retention: %zu snapshots, %zu "
                     "of s2's chunks left",
                     n, got.n);
        }
        sleep_ms(100);
    }
    vc_objset_fini(&got);
    assert_int_equal(vc_get_objects(rest, &c4, NULL, &got, &n_missing, &n_msgs),
                     CFR_RPC_OK);
    assert_int_equal(got.n, c4.n);
    cfr_rpc_client_free(rest);
    assert_int_equal(vs_vault_stop(&v, SIGTERM, 30000), 0);
    vc_snapshot_fini(&s4);
    vc_objset_fini(&c4);
    vc_snapshot_fini(&s1);
    vc_snapshot_fini(&s2);
    vc_snapshot_fini(&s3);
    vc_objset_fini(&c1);
    vc_objset_fini(&c2);
    vc_objset_fini(&c3);
    vc_objset_fini(&got);
}

static void
test_vault_sigterm_exits_cleanly(void **state)
{
    (void)state;
    char path[2 * VS_PATH_MAX];
    FILE *f;
    char *buf = cfr_malloc(1u << 16);
    size_t n;

    assert_non_null(buf);
    /* The stats file is written while serving. */
    snprintf(path, sizeof(path), "%s/vault.prom", main_vault.dir);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, (1u << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "coffer_vault_up 1"));
    assert_non_null(strstr(buf, "coffer_vault_calls_total{method=\"Commit\","
                                "outcome=\"ok\"}"));
    assert_non_null(
        strstr(buf, "coffer_vault_tenant_objects{tenant=\"acme\"}"));
    /*
     * An upload stream left open: SIGTERM waits the grace period (2 s
     * here), cancels it, and still exits 0.
     */
    {
        struct cfr_rpc_client *agent = vs_client(&main_vault, "agent");
        struct vc_objset one = {0};
        struct cfr_rpc_call *call = NULL;
        struct cfr_buf resp;
        struct cfr_err err;
        uint8_t lease[16];
        int st = CFR_RPC_OK;
        Coffer__V1__PutObjectsRequest req =
            COFFER__V1__PUT_OBJECTS_REQUEST__INIT;
        Coffer__V1__Object o = COFFER__V1__OBJECT__INIT, *op = &o;
        uint8_t msg[4096];
        size_t len;
        struct timespec t0, t1;

        vc_make_chunk(keyring, session, &one, 424242, 1000);
        assert_int_equal(vc_open_lease(session, agent, lease, NULL),
                         CFR_RPC_OK);
        o.id.data = one.v[0].id;
        o.id.len = ID_LEN;
        o.kind = COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED;
        o.data.data = one.v[0].data;
        o.data.len = one.v[0].len;
        req.lease_id.data = lease;
        req.lease_id.len = 16;
        req.n_objects = 1;
        req.objects = &op;
        len = coffer__v1__put_objects_request__get_packed_size(&req);
        assert_true(len <= sizeof(msg));
        coffer__v1__put_objects_request__pack(&req, msg);
        assert_int_equal(cfr_rpc_cstream_open(agent,
                                              "/coffer.v1.Vault/PutObjects",
                                              30000, &call, &err),
                         0);
        assert_int_equal(cfr_rpc_cstream_send(call, msg, len, &err), 0);
        sleep_ms(200);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(vs_vault_stop(&main_vault, SIGTERM, 30000), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        cfr_buf_init(&resp, 1u << 16);
        (void)cfr_rpc_cstream_finish(call, &resp, &st, &err);
        assert_int_not_equal(st, CFR_RPC_OK);
        print_message("SIGTERM with an open stream: exit 0 after %ld ms\n",
                      (long)((t1.tv_sec - t0.tv_sec) * 1000 +
                             (t1.tv_nsec - t0.tv_nsec) / 1000000));
        cfr_buf_fini(&resp);
        cfr_rpc_call_free(call);
        cfr_rpc_client_free(agent);
        vc_objset_fini(&one);
    }
    assert_true(vc_log_has(&main_vault, "vault.stopping"));
    assert_true(vc_log_has(&main_vault, "vault.stopped exit=0"));
    /* The last write says the vault is down. */
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, (1u << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "coffer_vault_up 0"));
    cfr_free(buf);
}

/* ---- setup ------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;
    const char *seed_env = getenv("COFFER_TEST_SEED");
    rng_state =
        seed_env != NULL ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    if (rng_state == 0) {
        rng_state = 1;
    }
    fprintf(stderr, "vault_test: seed %llu\n", (unsigned long long)rng_state);
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&main_vault, &env, "main")) {
        return -1;
    }
    snprintf(main_vault.extra_cfg, sizeof(main_vault.extra_cfg),
             "limits = { max_msg = \"4M\"; get_batch = \"1M\";\n"
             "           max_failures = 64; };\n");
    return vs_vault_start(&main_vault, 30000);
}

static int
teardown(void **state)
{
    (void)state;
    if (main_vault.pid > 0) {
        vs_vault_stop(&main_vault, SIGKILL, 10000);
    }
    vs_env_fini(&env);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_objects_and_snapshots_round_trip),
        cmocka_unit_test(test_vault_tls_refusals_keep_serving),
        cmocka_unit_test(test_vault_tenants_are_isolated),
        cmocka_unit_test(test_vault_roles_are_enforced),
        cmocka_unit_test(test_vault_purge_needs_a_second_admin),
        cmocka_unit_test(test_vault_hostile_input_gets_clear_errors),
        cmocka_unit_test(test_vault_bad_config_is_refused),
        cmocka_unit_test(test_vault_denials_lock_out),
        cmocka_unit_test(test_vault_kill9_keeps_acknowledged_writes),
        cmocka_unit_test(test_vault_test_clock_moves_retention),
        cmocka_unit_test(test_vault_sigterm_exits_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
