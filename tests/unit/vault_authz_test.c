/*
 * vault_authz_test.c - the vault's role matrix (vault/authz.c).
 *
 * The expected matrix is written out here cell by cell from the table in
 * docs/VAULT.md ("Who may call what") and the role letters in
 * proto/coffer_vault.proto, with method paths and role names as string
 * literals, so a change to any cell, name or path in authz.c fails a test
 * rather than silently widening what a certificate may do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "authz.h"

#define N_ROLES 7 /* VAULT_ROLE_NONE .. VAULT_ROLE_OPERATOR */

static const struct {
    enum vault_role role;
    const char *name;
    bool sees_stats;
} roles[N_ROLES] = {
    {VAULT_ROLE_NONE, NULL, false},
    {VAULT_ROLE_AGENT, "agent", false},
    {VAULT_ROLE_RESTORE, "restore", false},
    {VAULT_ROLE_AUDITOR, "auditor", true},
    {VAULT_ROLE_ADMIN, "admin", true},
    {VAULT_ROLE_VAULT, "vault", true},
    {VAULT_ROLE_OPERATOR, "operator", false},
};

/*
 * x = allowed, . = denied; columns none agent restore auditor admin vault
 * operator.
 * The peer vault only pulls: Health and the three Sync methods (issue 6);
 * it lost every tenant method it had before replication existed.
 */
static const struct {
    enum vault_method m;
    const char *path;
    const char *name;
    const char allowed[N_ROLES + 1];
} methods[VAULT_M_COUNT] = {
    {VAULT_M_MISSING, "/coffer.v1.Vault/Missing", "Missing", ".xx...."},
    {VAULT_M_OPEN_LEASE, "/coffer.v1.Vault/OpenLease", "OpenLease", ".x....."},
    {VAULT_M_PUT_OBJECTS, "/coffer.v1.Vault/PutObjects", "PutObjects",
     ".x....."},
    {VAULT_M_GET_OBJECTS, "/coffer.v1.Vault/GetObjects", "GetObjects",
     "..x...."},
    {VAULT_M_COMMIT, "/coffer.v1.Vault/Commit", "Commit", ".x....."},
    {VAULT_M_LIST_SNAPSHOTS, "/coffer.v1.Vault/ListSnapshots", "ListSnapshots",
     ".xxxx.."},
    {VAULT_M_ADMIN, "/coffer.v1.Vault/Admin", "Admin", "....x.."},
    {VAULT_M_AUDIT, "/coffer.v1.Vault/Audit", "Audit", "...xx.."},
    {VAULT_M_HEALTH, "/coffer.v1.Vault/Health", "Health", ".xxxxxx"},
    {VAULT_M_SYSTEM, "/coffer.v1.Vault/System", "System", "......x"},
    {VAULT_M_SYNC_DIGEST, "/coffer.v1.Vault/SyncDigest", "SyncDigest",
     ".....x."},
    {VAULT_M_SYNC_LIST, "/coffer.v1.Vault/SyncList", "SyncList", ".....x."},
    {VAULT_M_SYNC_GET, "/coffer.v1.Vault/SyncGet", "SyncGet", ".....x."},
};

static void
test_vault_authz_method_paths_and_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < VAULT_M_COUNT; i++) {
        assert_int_equal(vault_authz_method(methods[i].path), methods[i].m);
        assert_string_equal(vault_authz_path(methods[i].m), methods[i].path);
        assert_string_equal(vault_authz_name(methods[i].m), methods[i].name);
        /* The path is the service prefix and the short name. */
        char joined[64];
        snprintf(joined, sizeof(joined), "%s%s", VAULT_SERVICE_PREFIX,
                 methods[i].name);
        assert_string_equal(joined, methods[i].path);
    }
    /* Out of range: a placeholder, never another method's path. */
    assert_string_equal(vault_authz_path(VAULT_M_COUNT), "?");
    assert_string_equal(vault_authz_name(VAULT_M_COUNT), "?");
    assert_string_equal(vault_authz_path((enum vault_method)1000), "?");
    assert_string_equal(vault_authz_name((enum vault_method)1000), "?");
}

static void
test_vault_authz_role_names(void **state)
{
    (void)state;
    for (size_t r = 1; r < N_ROLES; r++) {
        assert_int_equal(vault_authz_role(roles[r].name), roles[r].role);
    }
    /* Byte for byte, like the identity URI: no case folding, no trimming,
     * no prefixes. */
    static const char *const unknown[] = {
        "",        "Agent",  "AGENT", "agent ",  " agent",
        "agent\n", "agents", "agen",  "admin/x", "root",
        "tenant",  "none",   "Vault", "audit",   "restorer"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        if (vault_authz_role(unknown[i]) != VAULT_ROLE_NONE) {
            fail_msg("role \"%s\" was recognised", unknown[i]);
        }
    }
    assert_int_equal(vault_authz_role(NULL), VAULT_ROLE_NONE);
}

/*
 * Operators and peer vaults act for no tenant, tenant roles for one: a
 * tenant certificate claiming role vault (coffer://tenant/t/role/vault)
 * must reach nothing, in particular not the Sync* methods.
 */
static void
test_vault_authz_peer_role_needs_matching_tenant(void **state)
{
    (void)state;
    assert_int_equal(vault_authz_peer_role("", "vault"), VAULT_ROLE_VAULT);
    assert_int_equal(vault_authz_peer_role("", "operator"),
                     VAULT_ROLE_OPERATOR);
    assert_int_equal(vault_authz_peer_role("acme", "agent"), VAULT_ROLE_AGENT);
    assert_int_equal(vault_authz_peer_role("acme", "vault"), VAULT_ROLE_NONE);
    assert_int_equal(vault_authz_peer_role("acme", "operator"),
                     VAULT_ROLE_NONE);
    assert_int_equal(vault_authz_peer_role("", "agent"), VAULT_ROLE_NONE);
    assert_int_equal(vault_authz_peer_role(NULL, "admin"), VAULT_ROLE_NONE);
    assert_int_equal(vault_authz_peer_role(NULL, "vault"), VAULT_ROLE_VAULT);
    assert_false(vault_authz_allowed(vault_authz_peer_role("acme", "vault"),
                                     VAULT_M_SYNC_DIGEST));
}

/* Every cell of the matrix, both ways, by enum and by name and path. */
static void
test_vault_authz_full_matrix(void **state)
{
    (void)state;
    for (size_t i = 0; i < VAULT_M_COUNT; i++) {
        for (size_t r = 0; r < N_ROLES; r++) {
            bool want = methods[i].allowed[r] == 'x';
            bool got = vault_authz_allowed(roles[r].role, methods[i].m);
            if (got != want) {
                fail_msg("%s for role %s: %s, want %s", methods[i].name,
                         roles[r].name != NULL ? roles[r].name : "(none)",
                         got ? "allowed" : "denied",
                         want ? "allowed" : "denied");
            }
            /* The server's path: names from the certificate and the call. */
            bool via_names =
                vault_authz_allowed(vault_authz_role(roles[r].name),
                                    vault_authz_method(methods[i].path));
            assert_true(via_names == want);
        }
    }
}

/*
 * Invariant 2 of authz.c: a stolen agent certificate can neither read
 * backups back nor administer them.
 */
static void
test_vault_authz_agent_cannot_read_or_administer(void **state)
{
    (void)state;
    assert_false(vault_authz_allowed(VAULT_ROLE_AGENT, VAULT_M_GET_OBJECTS));
    assert_false(vault_authz_allowed(VAULT_ROLE_AGENT, VAULT_M_ADMIN));
    assert_false(vault_authz_allowed(VAULT_ROLE_AGENT, VAULT_M_AUDIT));
    assert_false(
        vault_authz_allowed(vault_authz_role("agent"),
                            vault_authz_method("/coffer.v1.Vault/GetObjects")));
    assert_false(
        vault_authz_allowed(vault_authz_role("agent"),
                            vault_authz_method("/coffer.v1.Vault/Admin")));
    /* What it does need stays allowed, or backups would stop. */
    assert_true(vault_authz_allowed(VAULT_ROLE_AGENT, VAULT_M_PUT_OBJECTS));
    assert_true(vault_authz_allowed(VAULT_ROLE_AGENT, VAULT_M_COMMIT));
    /* Only admin administers; restore reads but writes nothing. */
    for (size_t r = 0; r < N_ROLES; r++) {
        assert_true(vault_authz_allowed(roles[r].role, VAULT_M_ADMIN) ==
                    (roles[r].role == VAULT_ROLE_ADMIN));
    }
    assert_false(vault_authz_allowed(VAULT_ROLE_RESTORE, VAULT_M_PUT_OBJECTS));
    assert_false(vault_authz_allowed(VAULT_ROLE_RESTORE, VAULT_M_COMMIT));
    assert_false(vault_authz_allowed(VAULT_ROLE_RESTORE, VAULT_M_OPEN_LEASE));
}

/*
 * A matrix that allowed everything, or everything to one role, fails
 * here even if someone rewrote the table above to match it.
 */
static void
test_vault_authz_is_not_allow_all(void **state)
{
    (void)state;
    size_t allowed = 0;
    size_t denied_per_role[N_ROLES] = {0};
    for (size_t i = 0; i < VAULT_M_COUNT; i++) {
        for (size_t r = 0; r < N_ROLES; r++) {
            if (vault_authz_allowed(roles[r].role, methods[i].m)) {
                allowed++;
            } else {
                denied_per_role[r]++;
            }
        }
    }
    /* 23 of 91 cells; the none column is all denied. */
    assert_int_equal(allowed, 23);
    assert_int_equal(denied_per_role[VAULT_ROLE_NONE], VAULT_M_COUNT);
    /* Every real role is refused something, and most things. */
    assert_int_equal(denied_per_role[VAULT_ROLE_AGENT], 7);
    assert_int_equal(denied_per_role[VAULT_ROLE_RESTORE], 9);
    assert_int_equal(denied_per_role[VAULT_ROLE_AUDITOR], 10);
    assert_int_equal(denied_per_role[VAULT_ROLE_ADMIN], 9);
    assert_int_equal(denied_per_role[VAULT_ROLE_VAULT], 9);
    assert_int_equal(denied_per_role[VAULT_ROLE_OPERATOR], 11);
}

/*
 * Invariant 5 of authz.c: a peer vault pulls through Sync* and Health
 * only, and nobody else reaches Sync*: a stolen tenant certificate must
 * not read another tenant's data by naming it in a Sync request.
 */
static void
test_vault_authz_sync_only_for_peer_vaults(void **state)
{
    (void)state;
    static const char *const sync_paths[] = {"/coffer.v1.Vault/SyncDigest",
                                             "/coffer.v1.Vault/SyncList",
                                             "/coffer.v1.Vault/SyncGet"};
    for (size_t i = 0; i < 3; i++) {
        enum vault_method m = vault_authz_method(sync_paths[i]);
        assert_int_not_equal(m, VAULT_M_COUNT);
        assert_true(vault_authz_tenant_in_request(m));
        assert_true(vault_authz_is_data(m));
        for (size_t r = 0; r < N_ROLES; r++) {
            assert_true(vault_authz_allowed(roles[r].role, m) ==
                        (roles[r].role == VAULT_ROLE_VAULT));
        }
    }
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        bool sync = m == VAULT_M_SYNC_DIGEST || m == VAULT_M_SYNC_LIST ||
                    m == VAULT_M_SYNC_GET;
        assert_true(vault_authz_tenant_in_request((enum vault_method)m) ==
                    sync);
        assert_true(vault_authz_allowed(vault_authz_role("vault"),
                                        (enum vault_method)m) ==
                    (sync || m == VAULT_M_HEALTH));
    }
    /* The writes and reads it once had are gone. */
    assert_false(vault_authz_allowed(VAULT_ROLE_VAULT, VAULT_M_PUT_OBJECTS));
    assert_false(vault_authz_allowed(VAULT_ROLE_VAULT, VAULT_M_COMMIT));
    assert_false(vault_authz_allowed(VAULT_ROLE_VAULT, VAULT_M_GET_OBJECTS));
    assert_false(vault_authz_allowed(VAULT_ROLE_VAULT, VAULT_M_LIST_SNAPSHOTS));
    assert_false(vault_authz_tenant_in_request(VAULT_M_COUNT));
}

/*
 * Invariant 3 of authz.c: operators manage the vault and never reach
 * tenant data; no tenant role manages the vault.
 */
static void
test_vault_authz_operator_only_system(void **state)
{
    (void)state;
    assert_int_equal(vault_authz_role("operator"), VAULT_ROLE_OPERATOR);
    assert_int_equal(vault_authz_role("Operator"), VAULT_ROLE_NONE);
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        bool want = m == VAULT_M_SYSTEM || m == VAULT_M_HEALTH;
        assert_true(vault_authz_allowed(VAULT_ROLE_OPERATOR,
                                        (enum vault_method)m) == want);
    }
    for (size_t r = 0; r < N_ROLES; r++) {
        assert_true(vault_authz_allowed(roles[r].role, VAULT_M_SYSTEM) ==
                    (roles[r].role == VAULT_ROLE_OPERATOR));
    }
    assert_false(vault_authz_sees_stats(VAULT_ROLE_OPERATOR));
}

/* Registration is needed for all but Health; data methods are placed. */
static void
test_vault_authz_registration_and_data(void **state)
{
    (void)state;
    static const char want_data[VAULT_M_COUNT + 1] = "xxxxx.....xxx";
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        assert_true(vault_authz_needs_registration((enum vault_method)m) ==
                    (m != VAULT_M_HEALTH));
        if (vault_authz_is_data((enum vault_method)m) !=
            (want_data[m] == 'x')) {
            fail_msg("is_data(%s) wrong",
                     vault_authz_name((enum vault_method)m));
        }
    }
    assert_false(vault_authz_needs_registration(VAULT_M_COUNT));
    assert_false(vault_authz_is_data(VAULT_M_COUNT));
}

static void
test_vault_authz_unknown_roles_denied(void **state)
{
    (void)state;
    for (int m = 0; m < VAULT_M_COUNT; m++) {
        assert_false(
            vault_authz_allowed(VAULT_ROLE_NONE, (enum vault_method)m));
        assert_false(vault_authz_allowed(vault_authz_role("root"),
                                         (enum vault_method)m));
        /* Values past the last role have no bit in the matrix. */
        for (int r = VAULT_ROLE_OPERATOR + 1; r < 32; r++) {
            if (vault_authz_allowed((enum vault_role)r, (enum vault_method)m)) {
                fail_msg("role value %d allowed %s", r,
                         vault_authz_name((enum vault_method)m));
            }
        }
    }
}

static void
test_vault_authz_unknown_methods_denied(void **state)
{
    (void)state;
    static const char *const unknown[] = {
        "",
        "/",
        "Missing",
        "/coffer.v1.Vault/",
        "/coffer.v1.Vault/missing",
        "/coffer.v1.Vault/Missing/",
        "/coffer.v1.Vault/Missingx",
        "/coffer.v1.Vault/Health ",
        "coffer.v1.Vault/Health",
        "/coffer.v1.Vault//Health",
        "/coffer.v2.Vault/Health",
        "/coffer.v1.Other/Health",
        "/coffer.v1.vault/Admin",
        "/coffer.v1.Vault/Delete",
        "/coffer.v1.Vault/Admin\n",
        "/grpc.health.v1.Health/Check",
    };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        enum vault_method m = vault_authz_method(unknown[i]);
        if (m != VAULT_M_COUNT) {
            fail_msg("path \"%s\" mapped to %s", unknown[i],
                     vault_authz_name(m));
        }
    }
    assert_int_equal(vault_authz_method(NULL), VAULT_M_COUNT);
    for (size_t r = 0; r < N_ROLES; r++) {
        assert_false(vault_authz_allowed(roles[r].role, VAULT_M_COUNT));
        assert_false(
            vault_authz_allowed(roles[r].role, (enum vault_method)1000));
        assert_false(
            vault_authz_allowed(roles[r].role, (enum vault_method) - 1));
    }
}

static void
test_vault_authz_stats_visibility(void **state)
{
    (void)state;
    for (size_t r = 0; r < N_ROLES; r++) {
        assert_true(vault_authz_sees_stats(roles[r].role) ==
                    roles[r].sees_stats);
    }
    /* Exactly auditor, admin and peer vault; never an unknown value. */
    assert_false(vault_authz_sees_stats(VAULT_ROLE_AGENT));
    assert_false(vault_authz_sees_stats(VAULT_ROLE_RESTORE));
    assert_false(vault_authz_sees_stats(vault_authz_role("Admin")));
    assert_true(vault_authz_sees_stats(vault_authz_role("auditor")));
    for (int r = VAULT_ROLE_OPERATOR + 1; r < 64; r++) {
        assert_false(vault_authz_sees_stats((enum vault_role)r));
    }
    /* Whoever sees stats may call Health, where stats are served. */
    for (size_t r = 0; r < N_ROLES; r++) {
        if (roles[r].sees_stats) {
            assert_true(vault_authz_allowed(roles[r].role, VAULT_M_HEALTH));
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_authz_method_paths_and_names),
        cmocka_unit_test(test_vault_authz_role_names),
        cmocka_unit_test(test_vault_authz_peer_role_needs_matching_tenant),
        cmocka_unit_test(test_vault_authz_full_matrix),
        cmocka_unit_test(test_vault_authz_agent_cannot_read_or_administer),
        cmocka_unit_test(test_vault_authz_is_not_allow_all),
        cmocka_unit_test(test_vault_authz_sync_only_for_peer_vaults),
        cmocka_unit_test(test_vault_authz_operator_only_system),
        cmocka_unit_test(test_vault_authz_registration_and_data),
        cmocka_unit_test(test_vault_authz_unknown_roles_denied),
        cmocka_unit_test(test_vault_authz_unknown_methods_denied),
        cmocka_unit_test(test_vault_authz_stats_visibility),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
