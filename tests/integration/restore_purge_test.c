/*
 * restore_purge_test.c - account termination end to end (issue 5,
 * docs/RETENTION.md): two coffer-vault processes, the real coffer-agent
 * backing up to both, coffer-restore purge, approve, hold and release.
 *
 *  - alice (a0, a1, and a list message L) and bob (b0 and the same L,
 *    byte for byte, so its chunks are shared) are backed up; alice loses
 *    a1 and is backed up again.
 *  - hold bob's snapshot works at once; release is destructive: exit 9,
 *    pending, with an approval ID per vault.
 *  - 13 hours later (the agent's upload leases have ended; restart with
 *    a test clock offset), purge --mailbox alice by acme-admin: exit 9, one
 * approval ID per vault; acme-admin2 approves each (coffer-restore approve with
 * its own admin certificate); the purge repeated with --approval HOST:PORT=ID
 *    exits 0 and reports no snapshot left.
 *  - afterwards, on both vaults: no snapshot of alice is listed; every
 *    chunk only alice used is gone (Missing by chunk ID, restore
 *    certificate); every chunk of bob, L's included, is there; bob
 *    restores byte-exact (b0 and L); the vault logs name the purge
 *    (vault.purge). Purging again finds nothing and exits 0.
 *
 * About 9 s on two cores (a vault restart moves the clock).
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs, trees */
#include "mem.h"                  /* cfr_free */
#include "rpc.h"                  /* cfr_rpc_client_free */
#include "scenario_support.h"     /* vaults, configs, mail, runs */
#include "vault_client_support.h" /* vc_now_ms */

#define ESCROW_PW "purge test escrow passphrase"
#define N_VAULTS  2
#define FMT       SCN_FMT

/* The vaults' clocks move past the agent's upload leases. */
static struct scn sc = {.escrow_pw = ESCROW_PW,
                        SCN_PROGRAMS,
                        .n_vaults = N_VAULTS,
                        .test_mode = true,
                        .admin_confs = true};

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    return scn_setup(&sc) == 0 && scn_init(&sc) == 0 ? 0 : -1;
}

/* ---- the test ----------------------------------------------------------- */

/* "HOST:PORT=ID" for each vault from a pending purge or release's JSON. */
static void
approvals_of(const char *out, char appr[N_VAULTS][128])
{
    for (int i = 0; i < N_VAULTS; i++) {
        char at[64], id[40];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", sc.ports[i]);
        const char *p = strstr(out, at);
        assert_non_null(p);
        assert_non_null(strstr(p, "\"result\":\"pending\""));
        assert_true(ars_json_str(out, at, "approval_id", id, sizeof(id)));
        assert_int_equal(strlen(id), 32);
        FMT(appr[i], "127.0.0.1:%d=%s", sc.ports[i], id);
    }
}

static void
test_purge_one_mailbox(void **state)
{
    char ids[SCN_MAX_SNAPS][65], to[VS_PATH_MAX + 96], *out = NULL;
    char a_ids[SCN_MAX_SNAPS][65], b_ids[SCN_MAX_SNAPS][65];
    char appr[N_VAULTS][128], admin2[VS_PATH_MAX + 96];
    static const int a_msgs[] = {0, 1}, b_msgs[] = {10}, list[] = {100};
    struct vc_objset alice_only = {0}, bob_all = {0}, shared = {0};
    int64_t t0 = vc_now_ms();
    (void)state;

    scn_mailbox_make(&sc, "alice");
    scn_mailbox_make(&sc, "bob");
    scn_msg_write(&sc, "alice", 0);
    scn_msg_write(&sc, "alice", 1);
    scn_msg_write(&sc, "bob", 10);
    /* The same list message, same bytes, in both mailboxes. */
    scn_msg_put(&sc, "alice", "list", 100);
    scn_msg_put(&sc, "bob", "list", 100);
    scn_backup(&sc, NULL);
    scn_msg_delete(&sc, "alice", 1);
    scn_backup(&sc, "alice");
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "alice", a_ids), 2);
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "bob", b_ids), 1);
    scn_chunks_of(&sc, "bob", b_ids[0], b_msgs, 1, NULL, &bob_all);
    scn_chunks_of(&sc, "bob", b_ids[0], list, 1, NULL, &shared);
    scn_chunks_of(&sc, "bob", b_ids[0], list, 1, NULL, &bob_all);
    scn_chunks_of(&sc, "alice", a_ids[0], a_msgs, 2, &shared, &alice_only);
    assert_true(alice_only.n >= 2);
    assert_true(shared.n >= 1);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(scn_missing_on(&sc, i, &alice_only), 0);
        assert_int_equal(scn_missing_on(&sc, i, &bob_all), 0);
    }

    /* Holds: hold at once; release waits for a second factor. */
    {
        const char *h[] = {"--config",  sc.conf_all,       "hold",
                           "--mailbox", "bob@" SCN_DOMAIN, NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, h, NULL), 0);
        const char *r[] = {"--config",  sc.conf_all,       "release",
                           "--mailbox", "bob@" SCN_DOMAIN, "--json",
                           NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, r, &out), 9);
        approvals_of(out, appr);
        cfr_free(out);
    }

    /* The agent's upload leases protect what its runs put or found
     * present until they end (12 h): a purge's GC cannot take those
     * chunks before. Half a day later they have ended. */
    scn_move_clock(&sc, "13h");

    /* Purge: pending on both, approved by the second admin, repeated. */
    {
        const char *p[] = {"--config",
                           sc.conf_all,
                           "purge",
                           "--mailbox",
                           "alice@" SCN_DOMAIN,
                           "--reason",
                           "account closed",
                           "--json",
                           NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, p, &out), 9);
        approvals_of(out, appr);
        cfr_free(out);
    }
    /* Still all there while pending. */
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "alice", ids), 2);
    FMT(admin2, "%s/restore-admin2.conf", sc.dir);
    {
        char *conf = ars_slurp(sc.conf_all, NULL);
        char *at = strstr(conf, "acme-admin.pem");
        assert_non_null(at);
        FILE *f = fopen(admin2, "w");
        assert_non_null(f);
        /* The same config with the second admin's certificate. */
        fprintf(f, "%.*sacme-admin2.pem%s", (int)(at - conf), conf,
                at + strlen("acme-admin.pem"));
        assert_int_equal(fclose(f), 0);
        char *k = ars_slurp(admin2, NULL);
        char *kk = strstr(k, "acme-admin.key");
        assert_non_null(kk);
        f = fopen(admin2, "w");
        assert_non_null(f);
        fprintf(f, "%.*sacme-admin2.key%s", (int)(kk - k), k,
                kk + strlen("acme-admin.key"));
        assert_int_equal(fclose(f), 0);
        cfr_free(k);
        cfr_free(conf);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        char v[32];
        FMT(v, "127.0.0.1:%d", sc.ports[i]);
        const char *a[] = {"--config",
                           admin2,
                           "approve",
                           "--vault",
                           v,
                           "--approval",
                           strchr(appr[i], '=') + 1,
                           NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, a, NULL), 0);
    }
    {
        const char *p[] = {"--config",
                           sc.conf_all,
                           "purge",
                           "--mailbox",
                           "alice@" SCN_DOMAIN,
                           "--approval",
                           appr[0],
                           "--approval",
                           appr[1],
                           "--json",
                           NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, p, &out), 0);
        assert_non_null(strstr(out, "\"ok\":true"));
        for (int i = 0; i < N_VAULTS; i++) {
            char at[64];
            uint64_t v = 99;
            FMT(at, "\"vault\":\"127.0.0.1:%d\"", sc.ports[i]);
            assert_true(ars_json_u64(out, at, "snapshots_removed", &v));
            assert_int_equal(v, 2);
            assert_true(ars_json_u64(out, at, "snapshots_left", &v));
            assert_int_equal(v, 0);
        }
        cfr_free(out);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "alice", ids), 0);
        assert_int_equal(scn_missing_on(&sc, i, &alice_only), alice_only.n);
        assert_int_equal(scn_missing_on(&sc, i, &bob_all), 0);
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "bob", ids), 1);
        assert_int_equal(scn_restore_snap(&sc, sc.conf_one[i], "bob", ids[0],
                                          to, sizeof(to)),
                         0);
        assert_true(scn_restored_has(to, "bob", 10));
        assert_true(scn_restored_has(to, "list", 100));
        ars_rm_tree(to);
        assert_true(vc_log_has(&sc.vaults[i], "vault.purge"));
        {
            struct cfr_rpc_client *aud =
                vs_client(&sc.vaults[i], "acme-auditor");
            Coffer__V1__AuditRequest req = COFFER__V1__AUDIT_REQUEST__INIT;
            Coffer__V1__AuditResponse *ar = NULL;
            struct cfr_err e;
            req.limit = 1000;
            assert_int_equal(vs_unary(aud, "Audit", &req.base,
                                      &coffer__v1__audit_response__descriptor,
                                      (ProtobufCMessage **)&ar, &e),
                             CFR_RPC_OK);
            /* The tenant's audit log names each operation. */
            size_t purges = 0, holds = 0, releases = 0;
            for (size_t k = 0; k < ar->n_entries; k++) {
                const char *d = ar->entries[k]->detail;
                if (strstr(ar->entries[k]->method, "Admin") == NULL) {
                    continue;
                }
                purges += strstr(d, "op=purge_mailbox mailbox=") != NULL;
                holds += strstr(d, "op=hold header=") != NULL;
                releases += strstr(d, "op=release header=") != NULL;
            }
            assert_int_equal(purges, 2); /* pending, then run */
            assert_int_equal(holds, 1);
            assert_int_equal(releases, 1); /* pending */
            protobuf_c_message_free_unpacked(&ar->base, NULL);
            cfr_rpc_client_free(aud);
        }
        assert_true(vc_log_has(&sc.vaults[i], "vault.hold"));
    }
    /* Nothing left to purge: no new approval is asked for. */
    {
        const char *p[] = {"--config",  sc.conf_all,         "purge",
                           "--mailbox", "alice@" SCN_DOMAIN, NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, p, NULL), 0);
    }
    vc_objset_fini(&alice_only);
    vc_objset_fini(&bob_all);
    vc_objset_fini(&shared);
    fprintf(stderr, "restore_purge_test: %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_purge_one_mailbox),
    };
    return cmocka_run_group_tests(tests, setup, scn_group_teardown);
}
