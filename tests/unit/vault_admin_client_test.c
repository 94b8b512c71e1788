/*
 * vault_admin_client_test.c - the checks and helpers of coffer-admin's
 * vault operations (vault/admin_client.h): what is refused before any
 * vault is contacted, connection files, tenant comparison, JSON strings,
 * the replication status view (lag, last sync, behind, errors, a
 * successful round's guard note, vaults missing a tenant or not
 * answering), and the System call against a local stand-in server
 * (pending answers, refusals, undecodable answers, the wiped request).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin_client.h"
#include "json.h" /* cfr_json_fput */
#include "log.h"
#include "mem.h"

#define DAY_MS (86400 * INT64_C(1000))

static void
test_admin_client_target_check(void **state)
{
    (void)state;
    static const char *const good[] = {"127.0.0.1:7443", "vault1.example.net:1",
                                       "[::1]:65535", "[2001:db8::10]:443",
                                       "localhost:80"};
    static const char *const bad[] = {
        "",     "vault",    ":443",      "host:", "host:0", "h:65536",  "h:12a",
        "h:-1", "[::1:443", "[zz::1]:1", "a b:1", "h/x:1",  "h:123456", "[]:1"};
    struct cfr_err err;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (vault_admin_target_check(good[i], &err) != 0) {
            fail_msg("%s refused: %s", good[i], err.msg);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (vault_admin_target_check(bad[i], &err) != CFR_EINVAL) {
            fail_msg("%s accepted", bad[i]);
        }
    }
}

static void
test_admin_client_argument_checks(void **state)
{
    (void)state;
    struct cfr_err err;
    bool is_vault = true;

    assert_int_equal(vault_admin_tenant_check("acme.mail_1-x", &err), 0);
    assert_int_equal(vault_admin_tenant_check("_system", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_tenant_check("Acme", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_tenant_check("", &err), CFR_EINVAL);
    assert_int_equal(
        vault_admin_tenant_check(
            "a123456789012345678901234567890123456789012345678901234567890123",
            &err),
        CFR_EINVAL);

    assert_int_equal(vault_admin_region_check("eu-west-1", &err), 0);
    assert_int_equal(vault_admin_region_check("EU", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_region_check("eu_west", &err), CFR_EINVAL);
    assert_int_equal(
        vault_admin_region_check("abcdefghijabcdefghijabcdefghijab", &err),
        CFR_EINVAL);

    assert_int_equal(vault_admin_notify_check("https://h.example/x", &err), 0);
    assert_int_equal(vault_admin_notify_check("mailto:sec@acme.example", &err),
                     0);
    assert_int_equal(vault_admin_notify_check("mailto:@x", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_notify_check("mailto:a@b,c@d", &err),
                     CFR_EINVAL);
    assert_int_equal(vault_admin_notify_check("https://", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_notify_check("https://a b", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_notify_check("ftp://x", &err), CFR_EINVAL);

    assert_int_equal(vault_admin_identity_check(
                         "coffer://tenant/acme/role/agent", &is_vault, &err),
                     0);
    assert_false(is_vault);
    assert_int_equal(
        vault_admin_identity_check("coffer://operator/alice", &is_vault, &err),
        0);
    assert_false(is_vault);
    assert_int_equal(
        vault_admin_identity_check("coffer://vault/peer-1", &is_vault, &err),
        0);
    assert_true(is_vault);
    static const char *const bad_ids[] = {"coffer://tenant/Acme/role/agent",
                                          "coffer://vault/",
                                          "coffer://vault/-x",
                                          "coffer://vault/a/b",
                                          "coffer://operator/",
                                          "https://x",
                                          ""};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        if (vault_admin_identity_check(bad_ids[i], NULL, &err) != CFR_EINVAL) {
            fail_msg("%s accepted", bad_ids[i]);
        }
    }

    assert_int_equal(vault_admin_totp_code_check("123456", &err), 0);
    assert_int_equal(vault_admin_totp_code_check("12345678", &err), 0);
    assert_int_equal(vault_admin_totp_code_check("12345", &err), CFR_EINVAL);
    assert_int_equal(vault_admin_totp_code_check("123456789", &err),
                     CFR_EINVAL);
    assert_int_equal(vault_admin_totp_code_check("12345a", &err), CFR_EINVAL);
    /* A refused code is never echoed: it may be valid still. */
    assert_null(strstr(err.msg, "12345a"));

    assert_int_equal(vault_admin_text_check("r", "laptop lost", &err), 0);
    assert_int_equal(vault_admin_text_check("r", "a\nb", &err), CFR_EINVAL);

    int64_t v = 0;
    assert_int_equal(vault_admin_int_parse("n", "42", 1, 100, &v, &err), 0);
    assert_int_equal(v, 42);
    assert_int_equal(vault_admin_int_parse("n", "0", 1, 100, &v, &err),
                     CFR_EINVAL);
    assert_int_equal(vault_admin_int_parse("n", "4x", 1, 100, &v, &err),
                     CFR_EINVAL);
    assert_int_equal(vault_admin_int_parse("n", "", 1, 100, &v, &err),
                     CFR_EINVAL);
    assert_int_equal(
        vault_admin_int_parse("n", "99999999999999999999", 1, 100, &v, &err),
        CFR_EINVAL);
}

static void
test_admin_client_fingerprint_and_approval(void **state)
{
    (void)state;
    struct cfr_err err;
    char fpr[CFR_RPC_FINGERPRINT_LEN + 1];
    const char *want =
        "f52f0e30d0d823ddb4e2a14fc37a51c2a0a79058c9a76d0012fe7a94e126e532";
    assert_int_equal(
        vault_admin_fingerprint_parse(
            "F5:2F:0E:30:D0:D8:23:DD:B4:E2:A1:4F:C3:7A:51:C2:A0:A7:90:58:C9:"
            "A7:6D:00:12:FE:7A:94:E1:26:E5:32",
            fpr, &err),
        0);
    assert_string_equal(fpr, want);
    assert_int_equal(
        vault_admin_fingerprint_parse(
            "F52F0E30D0D823DDB4E2A14FC37A51C2A0A79058C9A76D0012FE7A94E126E532",
            fpr, &err),
        0);
    assert_string_equal(fpr, want);
    static const char *const bad[] = {
        "",
        "f52f",
        /* 63 digits, 65 digits */
        "f52f0e30d0d823ddb4e2a14fc37a51c2a0a79058c9a76d0012fe7a94e126e53",
        "f52f0e30d0d823ddb4e2a14fc37a51c2a0a79058c9a76d0012fe7a94e126e5321",
        "g52f0e30d0d823ddb4e2a14fc37a51c2a0a79058c9a76d0012fe7a94e126e532",
        /* colons in the wrong places */
        ("F52:F0E:30:D0:D8:23:DD:B4:E2:A1:4F:C3:7A:51:C2:A0:A7:90:58:C9:"
         "A7:6D:00:12:FE:7A:94:E1:26:E5:32"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (vault_admin_fingerprint_parse(bad[i], fpr, &err) != CFR_EINVAL) {
            fail_msg("case %zu accepted", i);
        }
        assert_string_equal(fpr, "");
    }

    uint8_t id[VAULT_ADMIN_APPROVAL_ID];
    assert_int_equal(vault_admin_approval_parse(
                         "00112233445566778899AABBccddeeff", id, &err),
                     0);
    assert_int_equal(id[0], 0x00);
    assert_int_equal(id[5], 0x55);
    assert_int_equal(id[10], 0xaa);
    assert_int_equal(id[15], 0xff);
    assert_int_equal(
        vault_admin_approval_parse("00112233445566778899aabbccddeef", id, &err),
        CFR_EINVAL);
    assert_int_equal(vault_admin_approval_parse(
                         "00112233445566778899aabbccddeefg", id, &err),
                     CFR_EINVAL);
}

static void
test_admin_client_tenant_same(void **state)
{
    (void)state;
    char *ra[] = {"eu-1", "us-2"}, *rb[] = {"us-2", "eu-1"}, *rc[] = {"eu-1"};
    char *na[] = {"https://h.example/x"};
    Coffer__V1__TenantInfo want = COFFER__V1__TENANT_INFO__INIT;
    Coffer__V1__TenantInfo have = COFFER__V1__TENANT_INFO__INIT;
    want.name = have.name = "acme";
    want.regions = ra;
    want.n_regions = 2;
    have.regions = rb;
    have.n_regions = 2;
    want.notify = have.notify = na;
    want.n_notify = have.n_notify = 1;
    /* Order does not matter; the default retention matches its value. */
    have.retention_ms = 30 * DAY_MS;
    assert_true(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
    assert_false(vault_admin_tenant_same(&want, &have, 20 * DAY_MS));
    want.retention_ms = 40 * DAY_MS;
    assert_false(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
    want.retention_ms = 0;
    have.regions = rc;
    have.n_regions = 1;
    assert_false(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
    /* A duplicate does not stand in for a missing value. */
    char *dup[] = {"eu-1", "eu-1"};
    have.regions = dup;
    have.n_regions = 2;
    assert_false(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
    have.regions = rb;
    have.n_notify = 0;
    assert_false(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
    have.n_notify = 1;
    have.name = "globex";
    assert_false(vault_admin_tenant_same(&want, &have, 30 * DAY_MS));
}

static void
test_admin_client_text_helpers(void **state)
{
    (void)state;
    char buf[256];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    assert_non_null(f);
    cfr_json_fput(f, "a\"b\\c\nd\x01\xc3\xa9");
    fclose(f);
    assert_string_equal(buf, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"");

    assert_string_equal(vault_admin_time_text(1700000000123, buf, sizeof(buf)),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(vault_admin_time_text(0, buf, sizeof(buf)), "-");
    assert_string_equal(vault_admin_duration_text(30 * DAY_MS, buf, 64), "30d");
    assert_string_equal(vault_admin_duration_text(36 * 3600000, buf, 64),
                        "36h");
    assert_string_equal(vault_admin_duration_text(90000, buf, 64), "90s");
    assert_string_equal(vault_admin_duration_text(1500, buf, 64), "1500ms");
    assert_string_equal(vault_admin_duration_text(0, buf, 64), "default");

    assert_int_equal(vault_admin_outcome_of(CFR_RPC_OK), VAULT_ADMIN_DONE);
    assert_int_equal(vault_admin_outcome_of(CFR_RPC_UNAVAILABLE),
                     VAULT_ADMIN_UNREACHABLE);
    assert_int_equal(vault_admin_outcome_of(CFR_RPC_DEADLINE_EXCEEDED),
                     VAULT_ADMIN_UNREACHABLE);
    assert_int_equal(vault_admin_outcome_of(CFR_RPC_PERMISSION_DENIED),
                     VAULT_ADMIN_REFUSED);
    assert_int_equal(vault_admin_outcome_of(CFR_RPC_FAILED_PRECONDITION),
                     VAULT_ADMIN_REFUSED);
    assert_int_equal(vault_admin_outcome_of(CFR_RPC_INTERNAL),
                     VAULT_ADMIN_FAILED);
}

/* ---- replication status ------------------------------------------------ */

#define T0      INT64_C(1795000000000) /* a Unix time in ms */
#define HOUR_MS INT64_C(3600000)
#define MIN_MS  INT64_C(60000)

/* An own line (peer "") of tenant. */
static Coffer__V1__SyncStatus
own_line(const char *tenant, const char *region, uint64_t snapshots,
         int64_t newest_ms)
{
    Coffer__V1__SyncStatus l = COFFER__V1__SYNC_STATUS__INIT;
    l.tenant = (char *)tenant;
    l.region = (char *)region;
    l.snapshots = snapshots;
    l.newest_ms = newest_ms;
    return l;
}

/* A peer line of tenant. */
static Coffer__V1__SyncStatus
peer_line(const char *tenant, const char *peer, int64_t attempt_ms,
          int64_t ok_ms, const char *error, uint64_t behind)
{
    Coffer__V1__SyncStatus l = COFFER__V1__SYNC_STATUS__INIT;
    l.tenant = (char *)tenant;
    l.peer = (char *)peer;
    l.last_attempt_ms = attempt_ms;
    l.last_ok_ms = ok_ms;
    l.last_error = (char *)error;
    l.behind = behind;
    return l;
}

static void
test_admin_client_sync_view_lag(void **state)
{
    (void)state;
    struct cfr_err err;
    struct vault_admin_sync_view v;
    /* a has acme's newest; b is 3h12m behind it; c has acme registered
     * but no snapshot yet. globex only on a and b. */
    Coffer__V1__SyncStatus a[] = {
        own_line("globex", "r1", 4, T0 - HOUR_MS),
        own_line("acme", "r1", 10, T0),
    };
    Coffer__V1__SyncStatus b[] = {
        own_line("acme", "r2", 9, T0 - 3 * HOUR_MS - 12 * MIN_MS),
        own_line("globex", "r2", 4, T0 - HOUR_MS),
    };
    Coffer__V1__SyncStatus c[] = {own_line("acme", "r3", 0, 0)};
    Coffer__V1__SyncStatus *pa[] = {&a[0], &a[1]}, *pb[] = {&b[0], &b[1]},
                           *pc[] = {&c[0]};
    struct vault_admin_sync_reply r[] = {
        {.vault = "a:1", .answered = true, .lines = pa, .n_lines = 2},
        {.vault = "b:1", .answered = true, .lines = pb, .n_lines = 2},
        {.vault = "c:1", .answered = true, .lines = pc, .n_lines = 1},
    };
    char buf[32];

    assert_int_equal(vault_admin_sync_view_build(r, 3, NULL, &v, &err), 0);
    assert_int_equal(v.n_vaults, 3);
    assert_int_equal(v.n_tenants, 2);
    /* Sorted by name, whatever order the vaults answered in. */
    assert_string_equal(v.tenants[0].name, "acme");
    assert_string_equal(v.tenants[1].name, "globex");
    const struct vault_admin_sync_tenant *t = &v.tenants[0];
    assert_int_equal(t->newest_ms, T0);
    assert_string_equal(t->rows[0].vault, "a:1");
    assert_int_equal(t->rows[0].state, VAULT_ADMIN_SYNC_OK);
    assert_string_equal(t->rows[0].region, "r1");
    assert_int_equal(t->rows[0].snapshots, 10);
    assert_int_equal(t->rows[0].lag_ms, 0);
    assert_int_equal(t->rows[1].snapshots, 9);
    assert_string_equal(t->rows[1].region, "r2");
    assert_int_equal(t->rows[1].lag_ms, 3 * HOUR_MS + 12 * MIN_MS);
    assert_string_equal(vault_admin_span_text(t->rows[1].lag_ms, buf, 32),
                        "3h12m");
    assert_string_equal(vault_admin_span_text(t->rows[0].lag_ms, buf, 32),
                        "0s");
    /* No snapshot: no lag to speak of ("-"), not "3 days behind". */
    assert_int_equal(t->rows[2].state, VAULT_ADMIN_SYNC_OK);
    assert_int_equal(t->rows[2].lag_ms, -1);
    /* No peer lines anywhere: last sync is "-", nothing to alert on. */
    assert_int_equal(t->rows[0].last_sync_ms, -1);
    assert_int_equal(t->rows[0].n_peers, 0);
    assert_null(t->rows[0].last_error);
    assert_false(v.alert);
    /* globex: c does not list it. */
    t = &v.tenants[1];
    assert_int_equal(t->rows[0].lag_ms, 0);
    assert_int_equal(t->rows[1].lag_ms, 0);
    assert_int_equal(t->rows[2].state, VAULT_ADMIN_SYNC_ABSENT);
    assert_int_equal(t->rows[2].lag_ms, -1);
    vault_admin_sync_view_fini(&v);
    assert_int_equal(v.n_tenants, 0);
    assert_null(v.tenants);

    /* Only acme asked for: globex is left out. */
    assert_int_equal(vault_admin_sync_view_build(r, 3, "acme", &v, &err), 0);
    assert_int_equal(v.n_tenants, 1);
    assert_string_equal(v.tenants[0].name, "acme");
    assert_int_equal(v.tenants[0].rows[1].snapshots, 9);
    vault_admin_sync_view_fini(&v);

    /* Spans: two units at most, seconds dropped below a minute's unit. */
    assert_string_equal(vault_admin_span_text(999, buf, 32), "0s");
    assert_string_equal(vault_admin_span_text(-5000, buf, 32), "0s");
    assert_string_equal(vault_admin_span_text(45000, buf, 32), "45s");
    assert_string_equal(vault_admin_span_text(4 * MIN_MS + 10000, buf, 32),
                        "4m10s");
    assert_string_equal(vault_admin_span_text(4 * MIN_MS, buf, 32), "4m");
    assert_string_equal(vault_admin_span_text(HOUR_MS + 59000, buf, 32), "1h");
    assert_string_equal(
        vault_admin_span_text(2 * DAY_MS + 4 * HOUR_MS + 7 * MIN_MS, buf, 32),
        "2d4h");
    assert_string_equal(vault_admin_span_text(12 * DAY_MS, buf, 32), "12d");
}

static void
test_admin_client_sync_view_last_sync_and_errors(void **state)
{
    (void)state;
    struct cfr_err err;
    struct vault_admin_sync_view v;
    /* a pulls from b (ok 5 min ago, 2 snapshots behind) and c (ok 1 h
     * ago, then failed 1 min ago); b from a (never succeeded: failing)
     * and from c (failed long ago, ok since: the old error is stale). */
    Coffer__V1__SyncStatus a[] = {
        own_line("acme", "r1", 7, T0 - 10 * MIN_MS),
        peer_line("acme", "vault-b", T0 - 5 * MIN_MS, T0 - 5 * MIN_MS, "", 2),
        peer_line("acme", "vault-c", T0 - MIN_MS, T0 - HOUR_MS,
                  "SyncDigest: UNAVAILABLE: connection refused", 0),
    };
    Coffer__V1__SyncStatus b[] = {
        own_line("acme", "r2", 7, T0 - 10 * MIN_MS),
        peer_line("acme", "vault-a", T0 - 2 * MIN_MS, 0,
                  "tenant acme is not allowed in region r2\x1b[31m", 0),
        peer_line("acme", "vault-c", T0 - 3 * MIN_MS, T0 - 3 * MIN_MS,
                  "old failure", 0),
        /* A second own line is ignored, whatever it says. */
        own_line("acme", "bogus", 99, T0 + DAY_MS),
    };
    Coffer__V1__SyncStatus c[] = {
        own_line("acme", "r3", 7, T0 - 10 * MIN_MS),
        peer_line("acme", "vault-a", T0 - 3 * MIN_MS, T0 - 3 * MIN_MS, "", 0),
        peer_line("acme", "vault-b", T0 - 4 * MIN_MS, T0 - 4 * MIN_MS, "", 0),
        /* An empty tenant is nobody's: ignored. */
        own_line("", "r3", 1, T0),
    };
    Coffer__V1__SyncStatus *pa[] = {&a[0], &a[1], &a[2]},
                           *pb[] = {&b[0], &b[1], &b[2], &b[3]},
                           *pc[] = {&c[0], &c[1], &c[2], &c[3]};
    struct vault_admin_sync_reply r[] = {
        {.vault = "a:1", .answered = true, .lines = pa, .n_lines = 3},
        {.vault = "b:1", .answered = true, .lines = pb, .n_lines = 4},
        {.vault = "c:1", .answered = true, .lines = pc, .n_lines = 4},
    };

    assert_int_equal(vault_admin_sync_view_build(r, 3, NULL, &v, &err), 0);
    assert_int_equal(v.n_tenants, 1);
    const struct vault_admin_sync_row *ra = &v.tenants[0].rows[0],
                                      *rb = &v.tenants[0].rows[1],
                                      *rc = &v.tenants[0].rows[2];
    /* a: the oldest peer success decides; behind sums; the current
     * error is c's. */
    assert_int_equal(ra->n_peers, 2);
    assert_int_equal(ra->last_sync_ms, T0 - HOUR_MS);
    assert_int_equal(ra->behind, 2);
    assert_non_null(ra->last_error);
    assert_string_equal(ra->error_peer, "vault-c");
    assert_string_equal(ra->last_error,
                        "SyncDigest: UNAVAILABLE: connection refused");
    assert_true(vault_admin_sync_row_alert(ra));
    /* b: one peer never synced makes the row "never"; its error text
     * is passed on as is (the printer makes it terminal-safe); the
     * stale error of c is not shown; the second own line is ignored. */
    assert_int_equal(rb->last_sync_ms, 0);
    assert_string_equal(rb->error_peer, "vault-a");
    assert_string_equal(rb->last_error,
                        "tenant acme is not allowed in region r2\x1b[31m");
    assert_string_equal(rb->region, "r2");
    assert_int_equal(rb->snapshots, 7);
    assert_int_equal(rb->lag_ms, 0);
    assert_true(vault_admin_sync_row_alert(rb));
    /* c: everything fine. */
    assert_int_equal(rc->last_sync_ms, T0 - 4 * MIN_MS);
    assert_int_equal(rc->behind, 0);
    assert_null(rc->last_error);
    assert_false(vault_admin_sync_row_alert(rc));
    assert_true(v.alert);
    assert_int_equal(v.tenants[0].newest_ms, T0 - 10 * MIN_MS);
    vault_admin_sync_view_fini(&v);

    /* A stale error alone and nothing behind: no alert. */
    Coffer__V1__SyncStatus *pb2[] = {&b[0], &b[2]};
    r[1].lines = pb2;
    r[1].n_lines = 2;
    assert_int_equal(vault_admin_sync_view_build(&r[1], 1, NULL, &v, &err), 0);
    assert_null(v.tenants[0].rows[0].last_error);
    assert_false(v.alert);
    vault_admin_sync_view_fini(&v);
}

/*
 * A round that succeeds but leaves snapshots behind (the tombstone-keep
 * guard) keeps its note as the peer line's error: the table shows it while
 * that line is behind, ranks a failure of another peer above it, and
 * still hides the text of a successful line with nothing behind.
 */
static void
test_admin_client_sync_view_guard_note(void **state)
{
    (void)state;
    struct cfr_err err;
    struct vault_admin_sync_view v;
    static const char guard[] = "3 snapshot(s) older than the tombstone keep "
                                "time not pulled (guard)";
    /* a: b succeeded 2 min ago with 3 guarded; c fine. */
    Coffer__V1__SyncStatus a[] = {
        own_line("acme", "r1", 7, T0),
        peer_line("acme", "vault-b", T0 - 2 * MIN_MS, T0 - MIN_MS, guard, 3),
        peer_line("acme", "vault-c", T0 - 3 * MIN_MS, T0 - 3 * MIN_MS, "", 0),
    };
    /* b: a guard note 1 min ago, and c failing 5 min ago: the failure
     * is shown although the note is newer. */
    Coffer__V1__SyncStatus b[] = {
        own_line("acme", "r2", 7, T0),
        peer_line("acme", "vault-a", T0 - MIN_MS, T0 - MIN_MS / 2, guard, 3),
        peer_line("acme", "vault-c", T0 - 5 * MIN_MS, T0 - HOUR_MS,
                  "SyncDigest: DEADLINE_EXCEEDED", 0),
    };
    /* c: a note on a successful line with nothing behind is not shown. */
    Coffer__V1__SyncStatus c[] = {
        own_line("acme", "r3", 7, T0),
        peer_line("acme", "vault-a", T0 - MIN_MS, T0 - MIN_MS / 2, guard, 0),
    };
    Coffer__V1__SyncStatus *pa[] = {&a[0], &a[1], &a[2]},
                           *pb[] = {&b[0], &b[1], &b[2]},
                           *pc[] = {&c[0], &c[1]};
    struct vault_admin_sync_reply r[] = {
        {.vault = "a:1", .answered = true, .lines = pa, .n_lines = 3},
        {.vault = "b:1", .answered = true, .lines = pb, .n_lines = 3},
        {.vault = "c:1", .answered = true, .lines = pc, .n_lines = 2},
    };

    assert_int_equal(vault_admin_sync_view_build(r, 3, NULL, &v, &err), 0);
    assert_int_equal(v.n_tenants, 1);
    const struct vault_admin_sync_row *ra = &v.tenants[0].rows[0],
                                      *rb = &v.tenants[0].rows[1],
                                      *rc = &v.tenants[0].rows[2];
    assert_int_equal(ra->behind, 3);
    assert_non_null(ra->last_error);
    assert_string_equal(ra->error_peer, "vault-b");
    assert_string_equal(ra->last_error, guard);
    assert_true(ra->error_note);
    assert_true(vault_admin_sync_row_alert(ra));
    assert_int_equal(rb->behind, 3);
    assert_non_null(rb->last_error);
    assert_string_equal(rb->error_peer, "vault-c");
    assert_string_equal(rb->last_error, "SyncDigest: DEADLINE_EXCEEDED");
    assert_false(rb->error_note);
    assert_int_equal(rc->behind, 0);
    assert_null(rc->last_error);
    assert_false(vault_admin_sync_row_alert(rc));
    vault_admin_sync_view_fini(&v);

    /* b without its failing peer: the note is all there is. */
    r[1].n_lines = 2;
    assert_int_equal(vault_admin_sync_view_build(&r[1], 1, NULL, &v, &err), 0);
    assert_non_null(v.tenants[0].rows[0].last_error);
    assert_string_equal(v.tenants[0].rows[0].error_peer, "vault-a");
    assert_string_equal(v.tenants[0].rows[0].last_error, guard);
    vault_admin_sync_view_fini(&v);
}

static void
test_admin_client_sync_view_missing(void **state)
{
    (void)state;
    struct cfr_err err;
    struct vault_admin_sync_view v;
    Coffer__V1__SyncStatus a[] = {
        own_line("acme", "r1", 3, T0),
        peer_line("acme", "vault-b", T0, 0, "", 5),
    };
    Coffer__V1__SyncStatus *pa[] = {&a[0], &a[1]};
    struct vault_admin_sync_reply r[] = {
        {.vault = "a:1", .answered = true, .lines = pa, .n_lines = 2},
        {.vault = "b:1",
         .answered = false,
         .failure = "unreachable: UNAVAILABLE"},
        {.vault = "c:1", .answered = true, .lines = NULL, .n_lines = 0},
    };

    assert_int_equal(vault_admin_sync_view_build(r, 3, NULL, &v, &err), 0);
    assert_int_equal(v.n_tenants, 1);
    const struct vault_admin_sync_tenant *t = &v.tenants[0];
    assert_int_equal(t->rows[0].state, VAULT_ADMIN_SYNC_OK);
    assert_int_equal(t->rows[0].behind, 5);
    assert_int_equal(t->rows[0].last_sync_ms, 0);
    assert_int_equal(t->rows[1].state, VAULT_ADMIN_SYNC_NO_ANSWER);
    assert_string_equal(t->rows[1].failure, "unreachable: UNAVAILABLE");
    assert_string_equal(t->rows[1].vault, "b:1");
    assert_int_equal(t->rows[1].lag_ms, -1);
    assert_false(vault_admin_sync_row_alert(&t->rows[1]));
    assert_int_equal(t->rows[2].state, VAULT_ADMIN_SYNC_ABSENT);
    assert_int_equal(t->rows[2].snapshots, 0);
    /* Behind by 5 at a: an alert, even without an error text. */
    assert_true(v.alert);
    vault_admin_sync_view_fini(&v);

    /* A tenant nobody lists still gets its rows when asked for. */
    assert_int_equal(vault_admin_sync_view_build(r, 3, "initech", &v, &err), 0);
    assert_int_equal(v.n_tenants, 1);
    assert_string_equal(v.tenants[0].name, "initech");
    assert_int_equal(v.tenants[0].rows[0].state, VAULT_ADMIN_SYNC_ABSENT);
    assert_int_equal(v.tenants[0].rows[1].state, VAULT_ADMIN_SYNC_NO_ANSWER);
    assert_int_equal(v.tenants[0].rows[2].state, VAULT_ADMIN_SYNC_ABSENT);
    assert_int_equal(v.tenants[0].newest_ms, 0);
    assert_false(v.alert);
    vault_admin_sync_view_fini(&v);

    /* No vault answered anything: no tenant, no alert. */
    assert_int_equal(vault_admin_sync_view_build(&r[1], 2, NULL, &v, &err), 0);
    assert_int_equal(v.n_tenants, 0);
    assert_int_equal(v.n_vaults, 2);
    assert_false(v.alert);
    vault_admin_sync_view_fini(&v);
}

/* ---- connection files ---------------------------------------------------- */

static char tmpdir[64];

static const char *
write_conf(const char *text)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/ops.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void
test_admin_client_connection_file(void **state)
{
    (void)state;
    struct vault_admin_conn c, cli;
    struct cfr_err err;
    char want[160];
    const char *p = write_conf(
        "vaults = [ \"v1.example.net:7443\", \"[::1]:7443\" ];\n"
        "tls = { cert = \"alice.pem\"; key = \"/etc/coffer/alice.key\";\n"
        "        ca = \"ca.pem\"; name = \"vault.example.net\"; };\n"
        "timeout = \"5s\";\n");
    assert_int_equal(vault_admin_conn_load(p, &c, &err), 0);
    assert_int_equal(c.n_vaults, 2);
    assert_string_equal(c.vaults[0], "v1.example.net:7443");
    assert_string_equal(c.vaults[1], "[::1]:7443");
    /* Relative paths are the file's siblings; absolute ones stay. */
    snprintf(want, sizeof(want), "%s/alice.pem", tmpdir);
    assert_string_equal(c.cert, want);
    assert_string_equal(c.key, "/etc/coffer/alice.key");
    assert_string_equal(c.tls_name, "vault.example.net");
    assert_int_equal(c.timeout_ms, 5000);
    assert_int_equal(vault_admin_conn_check(&c, &err), 0);

    /* The command line wins field by field. */
    memset(&cli, 0, sizeof(cli));
    cli.n_vaults = 1;
    snprintf(cli.vaults[0], sizeof(cli.vaults[0]), "other:1");
    snprintf(cli.key, sizeof(cli.key), "mine.key");
    vault_admin_conn_merge(&c, &cli);
    assert_int_equal(c.n_vaults, 1);
    assert_string_equal(c.vaults[0], "other:1");
    assert_string_equal(c.key, "mine.key");
    assert_string_equal(c.cert, want);

    static const struct {
        const char *text, *says;
    } bad[] = {
        {"vaults = [ \"v1\" ];\n", "HOST:PORT"},
        {"vault = [ \"v1:1\" ];\n", "vault"},
        {"vaults = [ \"v1:1\" ];\ntls = { certs = \"x\"; };\n", "certs"},
        {"vaults = [ \"v1:1\" ];\ntimeout = \"forever\";\n", "timeout"},
        {"vaults = [ \"v1:1\" ];\ntimeout = \"20m\";\n", "timeout"},
        {"vaults = [ \"v1:1\" \n", "ops.conf"},
        {"vaults = \"v1:1\";\n", "vaults"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = write_conf(bad[i].text);
        cfr_err_clear(&err);
        int rc = vault_admin_conn_load(p, &c, &err);
        if (rc == 0 || strstr(err.msg, bad[i].says) == NULL) {
            fail_msg("case %zu: rc %d: %s", i, rc, err.msg);
        }
    }
    assert_int_equal(vault_admin_conn_load("/nonexistent/ops.conf", &c, &err),
                     CFR_ENOTFOUND);

    /* Incomplete or inconsistent connections. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(vault_admin_conn_check(&c, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "no vault"));
    c.n_vaults = 2;
    snprintf(c.vaults[0], sizeof(c.vaults[0]), "a:1");
    snprintf(c.vaults[1], sizeof(c.vaults[1]), "a:1");
    snprintf(c.cert, sizeof(c.cert), "c");
    snprintf(c.key, sizeof(c.key), "k");
    snprintf(c.ca, sizeof(c.ca), "ca");
    assert_int_equal(vault_admin_conn_check(&c, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    snprintf(c.vaults[1], sizeof(c.vaults[1]), "b:1");
    assert_int_equal(vault_admin_conn_check(&c, &err), 0);
    c.ca[0] = '\0';
    assert_int_equal(vault_admin_conn_check(&c, &err), CFR_EINVAL);
}

/* ---- the System call against a stand-in server -------------------------- */

static char *pki_file(const char *name);

static int
authz_all(void *ctx, const struct cfr_rpc_peer *peer, const char *method)
{
    (void)ctx;
    (void)peer;
    (void)method;
    return CFR_RPC_OK;
}

/* Answers by op: TENANT_LIST lists one tenant, REVOKE is pending, AUDIT
 * sends bytes that do not decode, anything else PERMISSION_DENIED. */
static void
h_system(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    size_t len = 0;
    const uint8_t *p = cfr_rpc_ctx_request(ctx, &len);
    Coffer__V1__SystemRequest *req =
        coffer__v1__system_request__unpack(NULL, len, p);
    Coffer__V1__SystemResponse resp = COFFER__V1__SYSTEM_RESPONSE__INIT;
    Coffer__V1__TenantInfo t = COFFER__V1__TENANT_INFO__INIT;
    Coffer__V1__TenantInfo *tp = &t;
    uint8_t id[16] = {0xab};
    uint8_t buf[256];
    if (req == NULL) {
        cfr_rpc_ctx_finish(ctx, CFR_RPC_INVALID_ARGUMENT, "bad", NULL, 0, NULL);
        return;
    }
    switch (req->op) {
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST:
        t.name = "acme";
        t.objects = 7;
        resp.n_tenants = 1;
        resp.tenants = &tp;
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE:
        resp.pending = true;
        resp.approval_id.data = id;
        resp.approval_id.len = sizeof(id);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT:
        memset(buf, 0xff, 8);
        cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, buf, 8, NULL);
        coffer__v1__system_request__free_unpacked(req, NULL);
        return;
    default:
        cfr_rpc_ctx_finish(ctx, CFR_RPC_PERMISSION_DENIED, "not an operator",
                           NULL, 0, NULL);
        coffer__v1__system_request__free_unpacked(req, NULL);
        return;
    }
    size_t n = coffer__v1__system_response__pack(&resp, buf);
    cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, buf, n, NULL);
    coffer__v1__system_request__free_unpacked(req, NULL);
}

static void
test_admin_client_system_call(void **state)
{
    (void)state;
    char *ca = pki_file("ca.pem"), *srv_pem = pki_file("server.pem");
    char *srv_key = pki_file("server.key"), *op = pki_file("operator.pem");
    char *op_key = pki_file("operator.key");
    struct cfr_rpc_server *srv = NULL;
    struct vault_admin_client *cli = NULL;
    Coffer__V1__SystemResponse *resp = NULL;
    struct cfr_err err;
    char target[64];
    int status = -1;

    assert_int_equal(cfr_rpc_global_init(&err), 0);
    struct cfr_rpc_server_opts so = {
        .listen_addr = "127.0.0.1:0",
        .cert_pem = srv_pem,
        .key_pem = srv_key,
        .client_ca_pem = ca,
        .authz = authz_all,
    };
    assert_int_equal(cfr_rpc_server_new(&so, &srv, &err), 0);
    assert_int_equal(cfr_rpc_server_add_method(srv, "/coffer.v1.Vault/System",
                                               CFR_RPC_KIND_UNARY, h_system,
                                               NULL, &err),
                     0);
    assert_int_equal(cfr_rpc_server_start(srv, &err), 0);
    snprintf(target, sizeof(target), "127.0.0.1:%d", cfr_rpc_server_port(srv));
    struct vault_admin_client_opts co = {
        .target = target,
        .tls_name = "localhost",
        .ca_pem = ca,
        .cert_pem = op,
        .key_pem = op_key,
        .timeout_ms = 5000,
    };
    assert_int_equal(vault_admin_client_new(&co, &cli, &err), 0);

    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    assert_int_equal(vault_admin_system(cli, &req, &resp, &status, &err), 0);
    assert_int_equal(status, CFR_RPC_OK);
    assert_non_null(resp);
    assert_int_equal(resp->n_tenants, 1);
    assert_string_equal(resp->tenants[0]->name, "acme");
    assert_int_equal(resp->tenants[0]->objects, 7);
    coffer__v1__system_response__free_unpacked(resp, NULL);

    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE;
    assert_int_equal(vault_admin_system(cli, &req, &resp, &status, &err), 0);
    assert_true(resp->pending);
    assert_int_equal(resp->approval_id.len, 16);
    assert_int_equal(resp->approval_id.data[0], 0xab);
    coffer__v1__system_response__free_unpacked(resp, NULL);

    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE;
    assert_int_not_equal(vault_admin_system(cli, &req, &resp, &status, &err),
                         0);
    assert_null(resp);
    assert_int_equal(status, CFR_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(err.msg, "not an operator"));
    assert_int_equal(vault_admin_outcome_of(status), VAULT_ADMIN_REFUSED);

    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT;
    assert_int_equal(vault_admin_system(cli, &req, &resp, &status, &err),
                     CFR_ECORRUPT);
    assert_null(resp);
    assert_int_equal(status, CFR_RPC_INTERNAL);

    vault_admin_client_free(cli);
    cfr_rpc_server_free(srv);
    /* Nothing listens any more: unreachable, not refused. */
    assert_int_equal(vault_admin_client_new(&co, &cli, &err), 0);
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    assert_int_not_equal(vault_admin_system(cli, &req, &resp, &status, &err),
                         0);
    assert_int_equal(vault_admin_outcome_of(status), VAULT_ADMIN_UNREACHABLE);
    vault_admin_client_free(cli);
    cfr_rpc_global_fini();
    cfr_free(ca);
    cfr_free(srv_pem);
    cfr_free(srv_key);
    cfr_free(op);
    cfr_free(op_key);
}

/* ---- setup --------------------------------------------------------------- */

static char *
pki_file(const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/pki/%s", tmpdir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *s = cfr_calloc(1, 65536);
    assert_non_null(s);
    size_t n = fread(s, 1, 65535, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static int
setup(void **state)
{
    (void)state;
    char cmd[512];
    cfr_log_set_level(CFR_LOG_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/coffer-admin-client-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        return -1;
    }
    /* The vectors live in tests/vectors, the PKI script beside them. */
    snprintf(cmd, sizeof(cmd),
             "mkdir %s/pki && bash %s/../pki/make-test-pki.sh %s/pki", tmpdir,
             COFFER_VECTORS_DIR, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_client_target_check),
        cmocka_unit_test(test_admin_client_argument_checks),
        cmocka_unit_test(test_admin_client_fingerprint_and_approval),
        cmocka_unit_test(test_admin_client_tenant_same),
        cmocka_unit_test(test_admin_client_text_helpers),
        cmocka_unit_test(test_admin_client_sync_view_lag),
        cmocka_unit_test(test_admin_client_sync_view_last_sync_and_errors),
        cmocka_unit_test(test_admin_client_sync_view_guard_note),
        cmocka_unit_test(test_admin_client_sync_view_missing),
        cmocka_unit_test(test_admin_client_connection_file),
        cmocka_unit_test(test_admin_client_system_call),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
