/*
 * restore_retention_test.c - the deleted-mail window end to end (issue 5,
 * docs/RETENTION.md): two coffer-vault processes in test mode, the real
 * coffer-agent backing up to both, coffer-restore retention, retention
 * --audit, hold and restore; time moves by restarting the vaults with a
 * test clock offset (+29 d, +31 d, +400 d).
 *
 *  day 0   alice m0..m5, bob b0..b2, carol c0..c2 backed up; alice loses
 *          m3..m5 and carol c2, backed up again; carol's first snapshot
 *          is held.
 *  +29 d   retention drops nothing; m3..m5 restore (byte-exact) from the
 *          first snapshot on each replica.
 *  +31 d   bob loses b2 and is backed up (his first backup since day 0:
 *          sparse); retention drops alice's first snapshot on both
 *          vaults: it restores from no replica, and every chunk only
 *          m3..m5 used is gone from both stores (Missing by chunk ID,
 *          restore certificate). bob's first snapshot stays (superseded
 *          today: the old own-receive-time rule dropped it and lost b2,
 *          deleted an hour ago); b2 restores. carol's held snapshot
 *          stays. retention --audit exits 0.
 *  +400 d  retention --audit before a retention run finds bob's first
 *          snapshot stale (exit 6: the audit can fail); after retention
 *          it exits 0; m0..m2, never deleted, restore byte-exact from
 *          each replica; carol's held snapshot is still there. The vault
 *          logs name the hold (vault.hold).
 *
 * Throughout, every snapshot's header names the mailbox's previous
 * snapshot as its parent (a first one names none). The second test backs
 * dave up three times, checks the chain on each replica, then removes his
 * middle snapshot from one stopped vault's RocksDB: the audit finds the
 * gap on that replica alone (exit 6), not on the other.
 *
 * About 20-25 s on two shared cores, 4 s of it the second test (eleven vault
 * starts, seven small backups).
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
#include "buf.h"                  /* cfr_hex_decode */
#include "kv.h"                   /* a stopped vault's database */
#include "mem.h"                  /* cfr_free */
#include "scenario_support.h"     /* vaults, configs, mail, runs */
#include "vault_client_support.h" /* vc_now_ms */

#define ESCROW_PW "retention test escrow passphrase"
#define N_VAULTS  2
#define FMT       SCN_FMT

/* Test mode: the clocks move; the test runs retention itself. */
static struct scn sc = {.escrow_pw = ESCROW_PW,
                        SCN_PROGRAMS,
                        .n_vaults = N_VAULTS,
                        .test_mode = true,
                        .vault_extra = "retention = { schedule = \"0\"; };\n",
                        .admin_confs = true};

/*
 * Checks that each snapshot of user on conf's vaults (oldest first) names
 * the one before it as its parent, and the oldest first ("" for none);
 * returns how many, their IDs into ids.
 */
static size_t
check_parents(const char *conf, const char *user, const char *first,
              char ids[SCN_MAX_SNAPS][65])
{
    char parent[SCN_MAX_SNAPS][65];
    size_t n = scn_snapshots_ex(&sc, conf, user, true, ids, parent);
    for (size_t i = 0; i < n; i++) {
        const char *want = i == 0 ? first : ids[i - 1];
        if (strcmp(parent[i], want) != 0) {
            fail_msg("%s snapshot %zu of %zu: parent \"%s\", want \"%s\"", user,
                     i + 1, n, parent[i], want);
        }
    }
    return n;
}

static int
retention(const char *conf, bool audit, char **out_r)
{
    const char *args[] = {
        "--config", conf, "retention", "--json", audit ? "--audit" : NULL,
        NULL};
    return scn_run(&sc, COFFER_RESTORE_BIN, args, out_r);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    return scn_setup(&sc) == 0 && scn_init(&sc) == 0 ? 0 : -1;
}

/* ---- the test ----------------------------------------------------------- */

static void
test_retention_window(void **state)
{
    char a_ids[SCN_MAX_SNAPS][65], b_ids[SCN_MAX_SNAPS][65],
        c_ids[SCN_MAX_SNAPS][65];
    char ids[SCN_MAX_SNAPS][65], to[VS_PATH_MAX + 96], *out = NULL;
    char a1[65], a2[65], b1[65], c1[65];
    static const int gone[] = {3, 4, 5}, kept[] = {0, 1, 2}, b12[] = {12},
                     c22[] = {22};
    struct vc_objset live = {0}, only_gone = {0};
    int64_t t0 = vc_now_ms();
    (void)state;

    /* Day 0. */
    scn_mailbox_make(&sc, "alice");
    scn_mailbox_make(&sc, "bob");
    scn_mailbox_make(&sc, "carol");
    for (int n = 0; n < 6; n++) {
        scn_msg_write(&sc, "alice", n);
    }
    for (int n = 0; n < 3; n++) {
        scn_msg_write(&sc, "bob", 10 + n);
        scn_msg_write(&sc, "carol", 20 + n);
    }
    scn_backup(&sc, NULL);
    scn_msg_delete(&sc, "alice", 3);
    scn_msg_delete(&sc, "alice", 4);
    scn_msg_delete(&sc, "alice", 5);
    scn_msg_delete(&sc, "carol", 22);
    scn_backup(&sc, "alice");
    scn_backup(&sc, "carol");
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "alice", a_ids), 2);
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "bob", b_ids), 1);
    assert_int_equal(scn_snapshots(&sc, sc.conf_all, "carol", c_ids), 2);
    memcpy(a1, a_ids[0], 65);
    memcpy(a2, a_ids[1], 65);
    memcpy(b1, b_ids[0], 65);
    memcpy(c1, c_ids[0], 65);
    /* Each replica holds the chain: a second snapshot names the first. */
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(check_parents(sc.conf_one[i], "alice", "", ids), 2);
        assert_string_equal(ids[1], a2);
        assert_int_equal(check_parents(sc.conf_one[i], "bob", "", ids), 1);
        assert_int_equal(check_parents(sc.conf_one[i], "carol", "", ids), 2);
    }
    /* Chunks only the deleted messages used. */
    scn_chunks_of(&sc, "alice", a2, kept, 3, NULL, &live);
    scn_chunks_of(&sc, "alice", a1, gone, 3, &live, &only_gone);
    assert_true(only_gone.n >= 3);
    assert_int_equal(scn_missing_on(&sc, 0, &only_gone), 0);
    assert_int_equal(scn_missing_on(&sc, 1, &only_gone), 0);
    /* A legal hold on carol's first snapshot, on both vaults. */
    {
        const char *args[] = {"--config", sc.conf_all, "hold",    "--snapshot",
                              c1,         "--reason",  "case 42", NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, args, NULL), 0);
    }
    for (int i = 0; i < N_VAULTS; i++) {
        assert_true(vc_log_has(&sc.vaults[i], "vault.hold"));
    }

    /* +29 days: nothing is old enough; the deleted mail restores. */
    scn_move_clock(&sc, "29d");
    assert_int_equal(retention(sc.conf_all, false, &out), 0);
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_null(strstr(out, "\"snapshots_removed\":1"));
    cfr_free(out);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "alice", ids), 2);
        scn_expect_restores(&sc, sc.conf_one[i], "alice", a1, gone, 3);
    }

    /* +31 days: bob's first backup since day 0 (sparse), then retention. */
    scn_move_clock(&sc, "31d");
    scn_msg_delete(&sc, "bob", 12);
    scn_backup(&sc, "bob");
    assert_int_equal(retention(sc.conf_all, false, &out), 0);
    /* alice's first snapshot, on each vault; nothing else. */
    assert_non_null(strstr(out, "\"ok\":true"));
    for (int i = 0; i < N_VAULTS; i++) {
        char at[64];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", sc.ports[i]);
        uint64_t removed = 0;
        assert_true(ars_json_u64(out, at, "snapshots_removed", &removed));
        assert_int_equal(removed, 1);
    }
    cfr_free(out);
    for (int i = 0; i < N_VAULTS; i++) {
        /* The deleted messages restore from no replica... */
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "alice", ids), 1);
        assert_string_equal(ids[0], a2);
        /* (a2 still names a1, received before the window: no gap.) */
        assert_int_equal(check_parents(sc.conf_one[i], "alice", a1, ids), 1);
        /* bob's day-31 snapshot names his day-0 one. */
        assert_int_equal(check_parents(sc.conf_one[i], "bob", "", ids), 2);
        assert_string_equal(ids[0], b1);
        assert_true(scn_restore_snap(&sc, sc.conf_one[i], "alice", a1, to,
                                     sizeof(to)) != 0);
        ars_rm_tree(to);
        /* ...and their chunks are gone from the store. */
        assert_int_equal(scn_missing_on(&sc, i, &only_gone), only_gone.n);
        assert_int_equal(scn_missing_on(&sc, i, &live), 0);
        /* Sparse backups: b12 was deleted today, so bob's day-0 snapshot
         * (superseded today) stays and b12 restores. */
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "bob", ids), 2);
        assert_string_equal(ids[0], b1);
        scn_expect_restores(&sc, sc.conf_one[i], "bob", b1, b12, 1);
        /* The held snapshot survives, and with it c22. */
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "carol", ids), 2);
        assert_string_equal(ids[0], c1);
        scn_expect_restores(&sc, sc.conf_one[i], "carol", c1, c22, 1);
    }
    assert_int_equal(retention(sc.conf_all, true, &out), 0);
    assert_non_null(strstr(out, "\"ok\":true"));
    {
        uint64_t v = 0;
        const char *al = "\"mailbox\":\"alice@" SCN_DOMAIN "\"";
        assert_true(ars_json_u64(out, al, "live", &v));
        assert_int_equal(v, 3);
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" SCN_DOMAIN "\"",
                                 "deleted_within_window", &v));
        assert_int_equal(v, 1);
        assert_true(ars_json_u64(out, "\"mailbox\":\"carol@" SCN_DOMAIN "\"",
                                 "deleted_beyond_window_held", &v));
        assert_int_equal(v, 1);
    }
    cfr_free(out);

    /* The same audit as text, for people. */
    {
        const char *args[] = {"--config", sc.conf_all, "retention", "--audit",
                              "--window", "30d",       NULL};
        assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, args, &out), 0);
        assert_non_null(strstr(out, "compliant: 0 mailbox violation(s)"));
        assert_non_null(strstr(out, "alice@" SCN_DOMAIN));
        fputs(out, stderr);
        cfr_free(out);
    }

    /* +400 days: before a retention run the audit sees bob's day-0
     * snapshot (superseded on day 31) still there: a violation. */
    scn_move_clock(&sc, "400d");
    assert_int_equal(retention(sc.conf_all, true, &out), 6);
    {
        uint64_t v = 0;
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" SCN_DOMAIN "\"",
                                 "deleted_beyond_window_restorable", &v));
        assert_int_equal(v, 1);
        assert_true(ars_json_u64(out, "\"mailbox\":\"bob@" SCN_DOMAIN "\"",
                                 "stale_snapshots", &v));
        assert_int_equal(v, 1);
    }
    cfr_free(out);
    assert_int_equal(retention(sc.conf_all, false, NULL), 0);
    assert_int_equal(retention(sc.conf_all, true, NULL), 0);
    for (int i = 0; i < N_VAULTS; i++) {
        /* Never deleted: restores however old. */
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "alice", ids), 1);
        scn_expect_restores(&sc, sc.conf_one[i], "alice", a2, kept, 3);
        assert_int_equal(scn_missing_on(&sc, i, &live), 0);
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "bob", ids), 1);
        assert_int_equal(scn_snapshots(&sc, sc.conf_one[i], "carol", ids), 2);
    }
    vc_objset_fini(&live);
    vc_objset_fini(&only_gone);
    fprintf(stderr, "restore_retention_test: %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

/*
 * Removes snapshot hex (of the acme tenant) from stopped vault i's
 * database as if it had been lost: its record and its mailbox-index key
 * (vault/store.c: mailbox ID || received BE || header ID).
 */
static void
drop_snapshot(int i, const char *hex)
{
    static const char *const cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                      "refcounts",      "snapshots",
                                      "mailbox_index",  "leases",
                                      "lease_objects",  "tombstones"};
    enum { CF_SNAPS = 3, CF_MAILBOX = 4, INDEX_KEY_LEN = 72 };
    struct cfr_err err;
    uint8_t id[32], key[INDEX_KEY_LEN];
    char p[VS_PATH_MAX + 80];
    size_t found = 0;
    bool got = false;
    struct cfr_kv_entry e;
    struct cfr_buf v;
    assert_int_equal(cfr_hex_decode(hex, id, sizeof(id)), 0);
    struct cfr_kv_env *ke = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(ke);
    FMT(p, "%s/data/acme", sc.vaults[i].dir);
    struct cfr_kv *kv =
        cfr_kv_open(ke, p, cfs, sizeof(cfs) / sizeof(cfs[0]), NULL, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", p, err.msg);
    }
    cfr_buf_init(&v, 1u << 16);
    assert_int_equal(cfr_kv_get(kv, CF_SNAPS, id, sizeof(id), &v, &err), 0);
    cfr_buf_fini(&v);
    struct cfr_kv_iter *it =
        cfr_kv_iter_new_prefix(kv, CF_MAILBOX, "", 0, &err);
    assert_non_null(it);
    while (cfr_kv_iter_next(it, &got, &e, &err) == 0 && got) {
        if (e.key_len == INDEX_KEY_LEN &&
            memcmp(e.key + INDEX_KEY_LEN - 32, id, 32) == 0) {
            memcpy(key, e.key, INDEX_KEY_LEN);
            found++;
        }
    }
    cfr_kv_iter_free(it);
    assert_int_equal(found, 1);
    assert_int_equal(cfr_kv_delete(kv, CF_MAILBOX, key, sizeof(key), &err), 0);
    assert_int_equal(cfr_kv_delete(kv, CF_SNAPS, id, sizeof(id), &err), 0);
    cfr_kv_close(kv);
    cfr_kv_env_free(ke);
}

/* The audit's count key for user's mailbox on vault i (--json output). */
static uint64_t
audit_count(const char *out, int i, const char *user, const char *key)
{
    char at[64], mb[80];
    uint64_t v = 0;
    FMT(at, "\"vault\":\"127.0.0.1:%d\"", sc.ports[i]);
    FMT(mb, "\"mailbox\":\"%s@" SCN_DOMAIN "\"", user);
    const char *r = strstr(out, at);
    assert_non_null(r);
    assert_true(ars_json_u64(r, mb, key, &v));
    return v;
}

static void
test_parent_gap(void **state)
{
    char d[3][SCN_MAX_SNAPS][65], ids[SCN_MAX_SNAPS][65], *out = NULL;
    int64_t t0 = vc_now_ms();
    (void)state;

    /* Three snapshots of dave, each with a message deleted in between. */
    scn_mailbox_make(&sc, "dave");
    for (int n = 0; n < 3; n++) {
        scn_msg_write(&sc, "dave", 30 + n);
    }
    scn_backup(&sc, "dave");
    scn_msg_delete(&sc, "dave", 30);
    scn_msg_write(&sc, "dave", 33);
    scn_backup(&sc, "dave");
    scn_msg_delete(&sc, "dave", 31);
    scn_backup(&sc, "dave");
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(check_parents(sc.conf_one[i], "dave", "", d[i]), 3);
    }
    assert_string_equal(d[0][1], d[1][1]);
    assert_string_equal(d[0][2], d[1][2]);
    assert_int_equal(retention(sc.conf_all, true, &out), 0);
    for (int i = 0; i < N_VAULTS; i++) {
        assert_int_equal(audit_count(out, i, "dave", "window_gaps"), 0);
        /* Only the first snapshot has no parent. */
        assert_int_equal(audit_count(out, i, "dave", "unlinked"), 1);
        assert_int_equal(audit_count(out, i, "dave", "deleted_within_window"),
                         2);
    }
    cfr_free(out);

    /* Vault 1 loses dave's middle snapshot: d31 was only there. */
    assert_int_equal(vs_vault_stop(&sc.vaults[1], SIGTERM, 10000), 0);
    drop_snapshot(1, d[1][1]);
    assert_int_equal(vs_vault_start(&sc.vaults[1], 20000), 0);
    sc.ports[1] = sc.vaults[1].port;
    scn_write_confs(&sc);
    assert_int_equal(scn_snapshots(&sc, sc.conf_one[1], "dave", ids), 2);
    assert_int_equal(scn_snapshots(&sc, sc.conf_one[0], "dave", ids), 3);
    assert_int_equal(retention(sc.conf_all, true, &out), 6);
    assert_int_equal(audit_count(out, 1, "dave", "window_gaps"), 1);
    assert_int_equal(audit_count(out, 0, "dave", "window_gaps"), 0);
    assert_int_equal(audit_count(out, 0, "dave", "deleted_within_window"), 2);
    {
        /* Vault 0's part of the report (it comes first) is clean. */
        char at[64];
        FMT(at, "\"vault\":\"127.0.0.1:%d\"", sc.ports[1]);
        char *r1 = strstr(out, at);
        assert_non_null(r1);
        *r1 = '\0';
        assert_null(strstr(out, "\"compliant\":false"));
        assert_non_null(strstr(r1 + 1, "\"compliant\":false"));
    }
    cfr_free(out);
    /* The same per replica: the gap is vault 1's alone. */
    assert_int_equal(retention(sc.conf_one[0], true, NULL), 0);
    assert_int_equal(retention(sc.conf_one[1], true, &out), 6);
    assert_int_equal(audit_count(out, 1, "dave", "window_gaps"), 1);
    cfr_free(out);
    fprintf(stderr, "restore_retention_test (parent gap): %lld ms\n",
            (long long)(vc_now_ms() - t0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retention_window),
        cmocka_unit_test(test_parent_gap),
    };
    return cmocka_run_group_tests(tests, setup, scn_group_teardown);
}
