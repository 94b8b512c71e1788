/*
 * vault_sysdb_test.c - the system database: tenant registry, deny list,
 * audit log (escaping, range queries, 30-day purge on a manual clock),
 * approvals (second admin, window, single use) and TOTP through sysdb.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include "clock.h"
#include "kv.h"
#include "mem.h"
#include "err.h"
#include "sysdb.h"
#include "totp.h"

#define T0  INT64_C(1800000000000)
#define DAY INT64_C(86400000)

static const char admin_a[] = "coffer://tenant/acme/role/admin";
static const char agent[] = "coffer://tenant/acme/role/agent";
static const char other_admin[] = "coffer://tenant/other/role/admin";

struct fixture {
    char dir[64];
    struct cfr_clock *clock;
    struct vault_sysdb *db;
};

static struct vault_sysdb *
open_db(struct fixture *f)
{
    struct cfr_err err;
    struct vault_sysdb_opts o = {.data_dir = f->dir, .clock = f->clock};
    struct vault_sysdb *db = vault_sysdb_open(&o, &err);
    if (db == NULL) {
        fprintf(stderr, "open: %s\n", err.msg);
    }
    assert_non_null(db);
    return db;
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/sysdb_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    f->clock = cfr_clock_manual_new(T0);
    f->db = open_db(f);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    vault_sysdb_close(f->db);
    cfr_clock_free(f->clock);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) {
        return -1;
    }
    free(f);
    return 0;
}

static void
reopen(struct fixture *f)
{
    vault_sysdb_close(f->db);
    f->db = open_db(f);
}

/* ---- tenants ---------------------------------------------------------- */

struct names {
    char list[8][VAULT_SYSDB_NAME_MAX + 1];
    size_t n;
};

static int
collect_tenant(void *ctx, const struct vault_sysdb_tenant *t)
{
    struct names *n = ctx;
    if (n->n < 8) {
        snprintf(n->list[n->n++], sizeof(n->list[0]), "%s", t->name);
    }
    return 0;
}

static void
test_vault_sysdb_tenant_round_trip(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_tenant t, got, old;

    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "acme");
    t.n_regions = 2;
    snprintf(t.regions[0], sizeof(t.regions[0]), "eu-west");
    snprintf(t.regions[1], sizeof(t.regions[1]), "eu-central");
    t.n_notify = 2;
    snprintf(t.notify[0], sizeof(t.notify[0]), "https://hooks.example/x?a=1");
    snprintf(t.notify[1], sizeof(t.notify[1]), "mailto:sec@acme.example");
    t.created_ms = 42; /* ignored: the vault sets it */
    assert_int_equal(vault_sysdb_tenant_create(f->db, &t, &err), 0);
    assert_int_equal(vault_sysdb_tenant_create(f->db, &t, &err), CFR_EEXIST);

    cfr_clock_advance(f->clock, 5000);
    reopen(f);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "acme", &got, &err), 0);
    assert_string_equal(got.name, "acme");
    assert_int_equal(got.created_ms, T0);
    /* 0 stays 0: "the vault's configured default", decided by the vault. */
    assert_int_equal(got.retention_ms, 0);
    assert_int_equal(got.n_regions, 2);
    assert_string_equal(got.regions[1], "eu-central");
    assert_int_equal(got.n_notify, 2);
    assert_string_equal(got.notify[0], "https://hooks.example/x?a=1");
    assert_string_equal(got.notify[1], "mailto:sec@acme.example");

    /* Update keeps created_ms and hands back the previous record. */
    t.retention_ms = 7 * DAY;
    t.n_regions = 1;
    assert_int_equal(vault_sysdb_tenant_update(f->db, &t, &old, &err), 0);
    assert_int_equal(old.retention_ms, 0);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "acme", &got, &err), 0);
    assert_int_equal(got.retention_ms, 7 * DAY);
    assert_int_equal(got.n_regions, 1);
    assert_int_equal(got.created_ms, T0);

    struct vault_sysdb_tenant b;
    memset(&b, 0, sizeof(b));
    snprintf(b.name, sizeof(b.name), "beta-2");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &b, &err), 0);
    snprintf(b.name, sizeof(b.name), "zz");
    assert_int_equal(vault_sysdb_tenant_update(f->db, &b, NULL, &err),
                     CFR_ENOTFOUND);
    struct names names = {0};
    assert_int_equal(
        vault_sysdb_tenant_list(f->db, collect_tenant, &names, &err), 0);
    assert_int_equal(names.n, 2);
    assert_string_equal(names.list[0], "acme");
    assert_string_equal(names.list[1], "beta-2");

    assert_int_equal(vault_sysdb_tenant_delete(f->db, "beta-2", &err), 0);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "beta-2", &got, &err),
                     CFR_ENOTFOUND);

    /* Names, regions and targets are validated. */
    static const char *const bad_names[] = {
        "",
        "..",
        "Acme",
        "a/b",
        ".x",
        "a b",
        "-x",
        "_system",
        "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        memset(&b, 0, sizeof(b));
        snprintf(b.name, sizeof(b.name), "%s", bad_names[i]);
        assert_int_equal(vault_sysdb_tenant_create(f->db, &b, &err),
                         CFR_EINVAL);
    }
    memset(&b, 0, sizeof(b));
    snprintf(b.name, sizeof(b.name), "gamma");
    b.n_notify = 1;
    snprintf(b.notify[0], sizeof(b.notify[0]), "file:///etc/passwd");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &b, &err), CFR_EINVAL);
    snprintf(b.notify[0], sizeof(b.notify[0]), "mailto:a@b\r\nBcc: x@y");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &b, &err), CFR_EINVAL);
    b.n_notify = 0;
    b.n_regions = 1;
    snprintf(b.regions[0], sizeof(b.regions[0]), "EU WEST");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &b, &err), CFR_EINVAL);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "gamma", &got, &err),
                     CFR_ENOTFOUND);
}

/* ---- deny list -------------------------------------------------------- */

static int
count_deny(void *ctx, const struct vault_sysdb_deny *d)
{
    size_t *n = ctx;
    if (d->kind == VAULT_DENY_IDENTITY) {
        assert_string_equal(d->value, agent);
        /* The reason was quoted on the way in. */
        assert_string_equal(d->reason, "\"key leaked\\n\"");
        assert_string_equal(d->by, admin_a);
        assert_int_equal(d->added_ms, T0);
    }
    (*n)++;
    return 0;
}

static void
test_vault_sysdb_deny_list_effective_immediately(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    bool denied = true;
    const char *fp_colons = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                            "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    const char *fp_plain =
        "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    assert_int_equal(
        vault_sysdb_deny_check(f->db, agent, fp_plain, &denied, &err), 0);
    assert_false(denied);
    assert_int_equal(vault_sysdb_deny_add(f->db, VAULT_DENY_IDENTITY, agent,
                                          "key leaked\n", admin_a, &err),
                     0);
    assert_int_equal(vault_sysdb_deny_check(f->db, agent, NULL, &denied, &err),
                     0);
    assert_true(denied);
    assert_int_equal(
        vault_sysdb_deny_check(f->db, admin_a, NULL, &denied, &err), 0);
    assert_false(denied);
    /* Fingerprints match whatever their case and separators. */
    assert_int_equal(vault_sysdb_deny_add(f->db, VAULT_DENY_FINGERPRINT,
                                          fp_colons, "revoked", admin_a, &err),
                     0);
    assert_int_equal(
        vault_sysdb_deny_check(f->db, admin_a, fp_plain, &denied, &err), 0);
    assert_true(denied);
    assert_int_equal(vault_sysdb_deny_add(f->db, VAULT_DENY_FINGERPRINT, "abcd",
                                          "short", admin_a, &err),
                     CFR_EINVAL);
    size_t n = 0;
    assert_int_equal(vault_sysdb_deny_list(f->db, count_deny, &n, &err), 0);
    assert_int_equal(n, 2);

    assert_int_equal(
        vault_sysdb_deny_remove(f->db, VAULT_DENY_FINGERPRINT, fp_plain, &err),
        0);
    assert_int_equal(
        vault_sysdb_deny_check(f->db, admin_a, fp_colons, &denied, &err), 0);
    assert_false(denied);
    assert_int_equal(
        vault_sysdb_deny_remove(f->db, VAULT_DENY_FINGERPRINT, fp_plain, &err),
        CFR_ENOTFOUND);
    /* Survives a restart. */
    reopen(f);
    assert_int_equal(vault_sysdb_deny_check(f->db, agent, NULL, &denied, &err),
                     0);
    assert_true(denied);
}

/* ---- audit ------------------------------------------------------------ */

struct audit_seen {
    struct vault_sysdb_audit recs[16];
    size_t n;
};

static int
collect_audit(void *ctx, const struct vault_sysdb_audit *rec)
{
    struct audit_seen *s = ctx;
    if (s->n < 16) {
        s->recs[s->n++] = *rec;
    }
    return 0;
}

static void
audit_at(struct fixture *f, int64_t t, const char *method, int status)
{
    struct cfr_err err;
    struct vault_sysdb_audit r;
    memset(&r, 0, sizeof(r));
    r.time_ms = t;
    snprintf(r.identity, sizeof(r.identity), "%s", agent);
    snprintf(r.peer, sizeof(r.peer), "ipv4:127.0.0.1:5555");
    snprintf(r.method, sizeof(r.method), "%s", method);
    r.decision = status == 0 ? VAULT_AUDIT_ALLOW : VAULT_AUDIT_DENY;
    r.status = status;
    assert_int_equal(vault_sysdb_audit_append(f->db, &r, &err), 0);
}

static void
test_vault_sysdb_audit_escapes_and_queries(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_audit r;
    struct audit_seen seen = {0};
    char line[2048];

    /* A hostile identity and detail: newline, quote, control byte. */
    memset(&r, 0, sizeof(r));
    snprintf(r.identity, sizeof(r.identity),
             "coffer://x\nFAKE time=0 decision=allow");
    snprintf(r.peer, sizeof(r.peer), "ipv4:10.1.1.1:1");
    snprintf(r.method, sizeof(r.method), "/coffer.Vault/Commit");
    snprintf(r.detail, sizeof(r.detail), "say \"hi\"\x01");
    r.decision = VAULT_AUDIT_DENY;
    r.status = 7;
    assert_int_equal(vault_sysdb_audit_append(f->db, &r, &err), 0);
    audit_at(f, T0 + 10, "/coffer.Vault/Missing", 0);
    audit_at(f, T0 + 20, "/coffer.Vault/PutObjects", 0);

    assert_int_equal(vault_sysdb_audit_query(f->db, T0, T0 + 100, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 3);
    assert_int_equal(seen.recs[0].time_ms, T0);
    assert_null(strchr(seen.recs[0].identity, '\n'));
    assert_string_equal(seen.recs[0].identity,
                        "\"coffer://x\\nFAKE time=0 decision=allow\"");
    assert_string_equal(seen.recs[0].detail, "\"say \\\"hi\\\"\\x01\"");
    assert_string_equal(seen.recs[0].method, "/coffer.Vault/Commit");
    assert_int_equal(seen.recs[0].decision, VAULT_AUDIT_DENY);
    assert_int_equal(seen.recs[0].status, 7);
    assert_string_equal(seen.recs[1].method, "/coffer.Vault/Missing");
    assert_string_equal(seen.recs[2].method, "/coffer.Vault/PutObjects");
    vault_sysdb_audit_format(&seen.recs[0], line, sizeof(line));
    assert_null(strchr(line, '\n'));
    assert_non_null(strstr(line, "decision=deny status=7"));

    /* Half-open ranges and the record limit. */
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(vault_sysdb_audit_query(f->db, T0 + 10, T0 + 20, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.recs[0].method, "/coffer.Vault/Missing");
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(vault_sysdb_audit_query(f->db, 0, INT64_MAX, 2,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 2);

    /* Records in the same millisecond never overwrite each other,
     * across a restart too (the sequence epoch moves). */
    audit_at(f, T0 + 50, "/a", 0);
    reopen(f);
    audit_at(f, T0 + 50, "/b", 0);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(vault_sysdb_audit_query(f->db, T0 + 50, T0 + 51, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.recs[0].method, "/a");
    assert_string_equal(seen.recs[1].method, "/b");
}

static void
test_vault_sysdb_audit_submit_and_purge_after_30_days(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct audit_seen seen = {0};
    uint64_t purged = 99;

    for (int i = 0; i < 5; i++) {
        audit_at(f, T0 + i, "/old", 0);
    }
    /* Queued records reach the disk by audit_sync. */
    for (int i = 0; i < 3; i++) {
        struct vault_sysdb_audit r;
        memset(&r, 0, sizeof(r));
        snprintf(r.identity, sizeof(r.identity), "%s", admin_a);
        snprintf(r.method, sizeof(r.method), "/queued");
        r.decision = VAULT_AUDIT_ALLOW;
        assert_int_equal(vault_sysdb_audit_submit(f->db, &r, &err), 0);
    }
    assert_int_equal(vault_sysdb_audit_sync(f->db, &err), 0);
    assert_int_equal(vault_sysdb_audit_query(f->db, T0, T0 + 10, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 8);

    /* Nothing is older than 30 days yet. */
    assert_int_equal(vault_sysdb_audit_purge(f->db, &purged, &err), 0);
    assert_int_equal(purged, 0);
    cfr_clock_advance(f->clock, 20 * DAY);
    audit_at(f, 0, "/recent", 0); /* stamped now: T0 + 20 days */
    cfr_clock_advance(f->clock, 10 * DAY + 10);
    assert_int_equal(vault_sysdb_audit_purge(f->db, &purged, &err), 0);
    assert_int_equal(purged, 8);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(vault_sysdb_audit_query(f->db, 0, INT64_MAX, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.recs[0].method, "/recent");
    assert_int_equal(seen.recs[0].time_ms, T0 + 20 * DAY);
}

/* ---- approvals -------------------------------------------------------- */

static void
test_vault_sysdb_approval_needs_second_admin_once(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    char id[VAULT_SYSDB_APPROVAL_HEX];
    struct vault_sysdb_approval a;

    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", agent, "alice",
                                                  "purge", "mailbox=INBOX", id,
                                                  &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", admin_a,
                                                  "alice", "purge",
                                                  "mailbox=INBOX", id, &err),
                     0);
    assert_int_equal(strlen(id), 32);
    /* An admin without a name cannot take part: admins would be
     * indistinguishable. */
    char id0[VAULT_SYSDB_APPROVAL_HEX];
    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", admin_a, "",
                                                  "purge", "x", id0, &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", admin_a,
                                                  "alice", "purge", "a\nb", id0,
                                                  &err),
                     CFR_EINVAL);
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, admin_a, "", &err),
        CFR_EDENIED);
    /* Not executable before approval. */
    assert_int_equal(vault_sysdb_approval_consume(f->db, "acme", id, "purge",
                                                  "mailbox=INBOX", &err),
                     CFR_EDENIED);
    /* The requester cannot approve their own request. */
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, admin_a, "alice", &err),
        CFR_EDENIED);
    /* Neither can a non-admin or an admin of another tenant. */
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, agent, "carol", &err),
        CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_approve(f->db, "acme", id,
                                                  other_admin, "dave", &err),
                     CFR_EDENIED);
    /* Another tenant cannot even see it. */
    assert_int_equal(vault_sysdb_approval_approve(f->db, "other", id,
                                                  other_admin, "dave", &err),
                     CFR_ENOTFOUND);
    assert_int_equal(vault_sysdb_approval_get(f->db, "acme", id, &a, &err), 0);
    assert_int_equal(a.state, VAULT_APPROVAL_PENDING);

    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, admin_a, "bob", &err),
        0);
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, admin_a, "bob", &err),
        CFR_EDENIED);
    /* The approval covers exactly the requested operation. */
    assert_int_equal(vault_sysdb_approval_consume(f->db, "acme", id, "purge",
                                                  "mailbox=Sent", &err),
                     CFR_EDENIED);
    reopen(f);
    assert_int_equal(vault_sysdb_approval_consume(f->db, "acme", id, "purge",
                                                  "mailbox=INBOX", &err),
                     0);
    assert_int_equal(vault_sysdb_approval_consume(f->db, "acme", id, "purge",
                                                  "mailbox=INBOX", &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_get(f->db, "acme", id, &a, &err), 0);
    assert_int_equal(a.state, VAULT_APPROVAL_CONSUMED);
    assert_string_equal(a.requester, admin_a);
    assert_string_equal(a.requester_principal, "alice");
    assert_string_equal(a.approver, admin_a);
    assert_string_equal(a.approver_principal, "bob");
    assert_int_equal(vault_sysdb_approval_consume(
                         f->db, "acme", "00000000000000000000000000000000",
                         "purge", "mailbox=INBOX", &err),
                     CFR_ENOTFOUND);
}

static void
test_vault_sysdb_approval_window_expires(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    char id1[VAULT_SYSDB_APPROVAL_HEX], id2[VAULT_SYSDB_APPROVAL_HEX];
    uint64_t purged = 0;

    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", admin_a,
                                                  "alice", "hold-release",
                                                  "hold=h1", id1, &err),
                     0);
    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", admin_a,
                                                  "alice", "retention",
                                                  "days=7", id2, &err),
                     0);
    assert_string_not_equal(id1, id2);
    /* id2 is approved in time but not executed in time. */
    cfr_clock_advance(f->clock, 59 * 60 * 1000);
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id2, admin_a, "bob", &err),
        0);
    cfr_clock_advance(f->clock, 60 * 1000);
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id1, admin_a, "bob", &err),
        CFR_EDENIED);
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(vault_sysdb_approval_consume(f->db, "acme", id2,
                                                  "retention", "days=7", &err),
                     CFR_EDENIED);
    /* Expired requests are purged a day after their deadline. */
    assert_int_equal(vault_sysdb_approval_purge(f->db, &purged, &err), 0);
    assert_int_equal(purged, 0);
    cfr_clock_advance(f->clock, DAY + 1);
    assert_int_equal(vault_sysdb_approval_purge(f->db, &purged, &err), 0);
    assert_int_equal(purged, 2);
    struct vault_sysdb_approval a;
    assert_int_equal(vault_sysdb_approval_get(f->db, "acme", id1, &a, &err),
                     CFR_ENOTFOUND);
}

/* ---- TOTP ------------------------------------------------------------- */

static void
code_at(const uint8_t *secret, size_t len, int64_t ms, char out[7])
{
    struct cfr_err err;
    uint32_t c = 0;
    assert_int_equal(cfr_totp_at(secret, len, NULL, ms / 1000, &c, &err), 0);
    snprintf(out, 7, "%06u", (unsigned)c);
}

static void
test_vault_sysdb_totp_register_verify_replay(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    uint8_t secret[CFR_TOTP_SECRET_DEFAULT];
    char code[7], wrong[7];
    bool has = true;

    assert_int_equal(cfr_totp_secret_generate(secret, sizeof(secret), &err), 0);
    assert_int_equal(
        vault_sysdb_totp_has(f->db, "acme", admin_a, "alice", &has, &err), 0);
    assert_false(has);
    code_at(secret, sizeof(secret), T0, code);
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        CFR_EAUTH);
    /* Only admins of the tenant get a second factor. */
    assert_int_equal(vault_sysdb_totp_register(f->db, "acme", agent, "carol",
                                               secret, sizeof(secret), NULL,
                                               &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_totp_register(f->db, "acme", other_admin,
                                               "dave", secret, sizeof(secret),
                                               NULL, &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_totp_register(f->db, "acme", admin_a, "alice",
                                               secret, 4, NULL, &err),
                     CFR_EINVAL);
    assert_int_equal(vault_sysdb_totp_register(f->db, "acme", admin_a, "alice",
                                               secret, sizeof(secret), NULL,
                                               &err),
                     0);
    assert_int_equal(
        vault_sysdb_totp_has(f->db, "acme", admin_a, "alice", &has, &err), 0);
    assert_true(has);

    snprintf(wrong, sizeof(wrong), "%06u",
             (unsigned)((strtoul(code, NULL, 10) + 1) % 1000000));
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", wrong, &err),
        CFR_EAUTH);
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        0);
    /* Replay, also after a restart: the used step was stored. */
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        CFR_EAUTH);
    reopen(f);
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        CFR_EAUTH);
    /* Another admin's identity does not share the secret. */
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "bob", code, &err),
        CFR_EAUTH);
    /* The next step's code works; a stale one (two steps back) does not. */
    cfr_clock_advance(f->clock, 30000);
    code_at(secret, sizeof(secret), T0 + 30000, code);
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        0);
    cfr_clock_advance(f->clock, 90000);
    code_at(secret, sizeof(secret), T0 + 60000 - 30000, code);
    assert_int_equal(
        vault_sysdb_totp_verify(f->db, "acme", admin_a, "alice", code, &err),
        CFR_EAUTH);
    assert_int_equal(
        vault_sysdb_totp_remove(f->db, "acme", admin_a, "alice", &err), 0);
    assert_int_equal(
        vault_sysdb_totp_has(f->db, "acme", admin_a, "alice", &has, &err), 0);
    assert_false(has);
}

/* ---- hostile bytes and concurrency ------------------------------------ */

static void
test_vault_sysdb_corrupt_record_is_reported(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_tenant t, got;
    char dir[128];
    static const char *const cfs[] = {"meta",      "tenants", "deny", "audit",
                                      "approvals", "totp",    "seen"};

    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "acme");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &t, &err), 0);
    vault_sysdb_close(f->db);
    f->db = NULL;

    /* Overwrite the record behind sysdb's back with truncated bytes, and
     * plant an over-long region count in another. */
    snprintf(dir, sizeof(dir), "%s/%s", f->dir, VAULT_SYSDB_DIR);
    struct cfr_kv_env *env = cfr_kv_env_new(1u << 20, &err);
    assert_non_null(env);
    struct cfr_kv *kv = cfr_kv_open(env, dir, cfs, 7, NULL, &err);
    assert_non_null(kv);
    static const uint8_t trunc[] = {1, 4, 0, 0, 0, 'a', 'c'};
    assert_int_equal(cfr_kv_put(kv, 1, "acme", 4, trunc, sizeof(trunc), &err),
                     0);
    uint8_t big[64] = {1, 1, 0, 0, 0, 'b'};
    /* name "b", two i64 of zero, then n_regions = 0xffffffff */
    memset(big + 6, 0, 16);
    memset(big + 22, 0xff, 4);
    assert_int_equal(cfr_kv_put(kv, 1, "b", 1, big, 26, &err), 0);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);

    f->db = open_db(f);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "acme", &got, &err),
                     CFR_ECORRUPT);
    assert_int_equal(vault_sysdb_tenant_get(f->db, "b", &got, &err),
                     CFR_ECORRUPT);
    struct names names = {0};
    assert_int_equal(
        vault_sysdb_tenant_list(f->db, collect_tenant, &names, &err),
        CFR_ECORRUPT);
    assert_int_equal(names.n, 0);
}

struct submitter {
    struct vault_sysdb *db;
    int id;
};

static void *
submit_many(void *p)
{
    struct submitter *s = p;
    struct cfr_err err;
    struct vault_sysdb_audit r;
    for (int i = 0; i < 500; i++) {
        memset(&r, 0, sizeof(r));
        snprintf(r.identity, sizeof(r.identity), "t%d", s->id);
        snprintf(r.method, sizeof(r.method), "/m/%d", i);
        r.decision = VAULT_AUDIT_ALLOW;
        if (vault_sysdb_audit_submit(s->db, &r, &err) != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

static int
count_audit(void *ctx, const struct vault_sysdb_audit *rec)
{
    size_t *n = ctx;
    (void)rec;
    (*n)++;
    return 0;
}

static void
test_vault_sysdb_audit_submit_from_threads(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    pthread_t th[4];
    struct submitter s[4];
    for (int i = 0; i < 4; i++) {
        s[i].db = f->db;
        s[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, submit_many, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *res = NULL;
        pthread_join(th[i], &res);
        assert_null(res);
    }
    assert_int_equal(vault_sysdb_audit_sync(f->db, &err), 0);
    size_t n = 0;
    assert_int_equal(
        vault_sysdb_audit_query(f->db, 0, INT64_MAX, 0, count_audit, &n, &err),
        0);
    /* All on one manual-clock millisecond, none lost or overwritten. */
    assert_int_equal(n, 2000);
    /* Closing with records still queued writes them first. */
    struct vault_sysdb_audit r;
    memset(&r, 0, sizeof(r));
    snprintf(r.method, sizeof(r.method), "/last");
    r.decision = VAULT_AUDIT_DENY;
    assert_int_equal(vault_sysdb_audit_submit(f->db, &r, &err), 0);
    reopen(f);
    n = 0;
    assert_int_equal(
        vault_sysdb_audit_query(f->db, 0, INT64_MAX, 0, count_audit, &n, &err),
        0);
    assert_int_equal(n, 2001);
}

static void
test_vault_sysdb_notify_fans_out_to_tenant_targets(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_tenant t;
    struct cfr_notify_stats st;

    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "acme");
    t.n_notify = 4;
    snprintf(t.notify[0], sizeof(t.notify[0]), "http://127.0.0.1:9/a");
    snprintf(t.notify[1], sizeof(t.notify[1]), "mailto:sec@acme.example");
    snprintf(t.notify[2], sizeof(t.notify[2]), "http://127.0.0.1:9/b");
    snprintf(t.notify[3], sizeof(t.notify[3]), "mailto:ops@acme.example");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &t, &err), 0);

    /* Targets that refuse at once: only the fan-out is checked here
     * (notify_test covers delivery). */
    struct cfr_notify_opts o = {.webhook_url = "http://127.0.0.1:9/ops",
                                .smtp_url = "smtp://127.0.0.1:9",
                                .smtp_from = "vault@coffer.example",
                                .retries = 0,
                                .timeout_ms = 2000};
    struct cfr_notify *n = cfr_notify_new(&o, f->clock, &err);
    assert_non_null(n);
    struct cfr_notify_field fl[] = {{"identity", agent}};
    /* Defaults once, each tenant webhook once, one mail for both. */
    assert_int_equal(
        vault_sysdb_notify(f->db, n, "vault.lockout", "acme", fl, 1, &err), 0);
    cfr_notify_stats(n, &st);
    assert_int_equal(st.posted, 4);
    /* Tenant posts do not reach the defaults a second time: exactly four
     * transfers (ops webhook, /a, /b, one mail), all refused. */
    assert_int_equal(cfr_notify_flush(n, 20000, &err), CFR_EUNAVAIL);
    cfr_notify_stats(n, &st);
    assert_int_equal(st.attempts, 4);
    assert_int_equal(st.failed, 4);
    /* Vault-wide and unknown-tenant events go to the defaults only. */
    assert_int_equal(
        vault_sysdb_notify(f->db, n, "vault.revoke", NULL, NULL, 0, &err), 0);
    assert_int_equal(
        vault_sysdb_notify(f->db, n, "vault.revoke", "nobody", NULL, 0, &err),
        0);
    cfr_notify_stats(n, &st);
    assert_int_equal(st.posted, 6);
    /* A bad event name is reported. */
    assert_int_equal(
        vault_sysdb_notify(f->db, n, "Bad Name", "acme", NULL, 0, &err),
        CFR_EINVAL);
    cfr_notify_free(n, 0);

    /* No defaults and a tenant without targets: nothing to do, no error. */
    struct cfr_notify *bare = cfr_notify_new(NULL, f->clock, &err);
    assert_non_null(bare);
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "quiet");
    assert_int_equal(vault_sysdb_tenant_create(f->db, &t, &err), 0);
    assert_int_equal(
        vault_sysdb_notify(f->db, bare, "vault.hold", "quiet", NULL, 0, &err),
        0);
    cfr_notify_stats(bare, &st);
    assert_int_equal(st.posted, 0);
    cfr_notify_free(bare, 0);
}

static void
test_vault_sysdb_allocation_failures_clean_up(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_opts o = {.data_dir = f->dir, .clock = f->clock};
    vault_sysdb_close(f->db);
    f->db = NULL;
    /* Every allocation of open fails in turn; each failure cleans up
     * (ASan's leak check runs over this test). */
    int opened_at = 0;
    for (int nth = 1; nth < 200 && opened_at == 0; nth++) {
        cfr_mem_fail_after(nth);
        struct vault_sysdb *db = vault_sysdb_open(&o, &err);
        cfr_mem_fail_after(0);
        if (db != NULL) {
            opened_at = nth;
            f->db = db;
        } else {
            assert_int_not_equal(err.code, 0);
        }
    }
    assert_true(opened_at > 1);
    /* The same for the calls that allocate. */
    for (int nth = 1; nth < 50; nth++) {
        struct vault_sysdb_tenant t;
        struct vault_sysdb_audit r;
        char id[VAULT_SYSDB_APPROVAL_HEX];
        memset(&t, 0, sizeof(t));
        snprintf(t.name, sizeof(t.name), "t%d", nth);
        memset(&r, 0, sizeof(r));
        r.decision = VAULT_AUDIT_ALLOW;
        cfr_mem_fail_after(nth);
        int a = vault_sysdb_tenant_create(f->db, &t, &err);
        int b = vault_sysdb_audit_append(f->db, &r, &err);
        int c = vault_sysdb_approval_request(f->db, "acme", admin_a, "alice",
                                             "purge", "x", id, &err);
        cfr_mem_fail_after(0);
        assert_true(a == 0 || a == CFR_ENOMEM);
        assert_true(b == 0 || b == CFR_ENOMEM);
        assert_true(c == 0 || c == CFR_ENOMEM);
    }
}

/* ---- operators' scope, audit tenant, identities seen ------------------ */

static const char op_alice[] = "coffer://operator/alice";
static const char op_bob[] = "coffer://operator/bob";

/*
 * Operators' approvals and TOTP secrets live in the "_system" scope: only
 * operator identities act there, a different operator approves, and a
 * tenant admin cannot reach it (nor an operator a tenant's).
 */
static void
test_vault_sysdb_system_scope_is_operators_only(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    char id[VAULT_SYSDB_APPROVAL_HEX], id2[VAULT_SYSDB_APPROVAL_HEX];
    uint8_t secret[CFR_TOTP_SECRET_DEFAULT];
    char code[7];
    bool has = true;

    assert_int_equal(vault_sysdb_approval_request(
                         f->db, VAULT_SYSDB_SYSTEM_SCOPE, admin_a, "alice",
                         "revoke_vault", "identity=coffer://vault/x", id, &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_request(
                         f->db, VAULT_SYSDB_SYSTEM_SCOPE, op_alice, "alice",
                         "revoke_vault", "identity=coffer://vault/x", id, &err),
                     0);
    /* An operator is no admin of a tenant. */
    assert_int_equal(vault_sysdb_approval_request(f->db, "acme", op_alice,
                                                  "alice", "purge", "m=1", id2,
                                                  &err),
                     CFR_EDENIED);
    /* The scope is not a tenant: "_system" is still a bad tenant name. */
    assert_int_equal(vault_sysdb_tenant_name_ok(VAULT_SYSDB_SYSTEM_SCOPE, &err),
                     CFR_EINVAL);
    /* The same operator, or a tenant admin, cannot approve. */
    assert_int_equal(vault_sysdb_approval_approve(f->db,
                                                  VAULT_SYSDB_SYSTEM_SCOPE, id,
                                                  op_alice, "alice", &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_approval_approve(f->db,
                                                  VAULT_SYSDB_SYSTEM_SCOPE, id,
                                                  admin_a, "bob", &err),
                     CFR_EDENIED);
    /* Not visible from a tenant's scope. */
    assert_int_equal(
        vault_sysdb_approval_approve(f->db, "acme", id, admin_a, "bob", &err),
        CFR_ENOTFOUND);
    assert_int_equal(vault_sysdb_approval_approve(f->db,
                                                  VAULT_SYSDB_SYSTEM_SCOPE, id,
                                                  op_bob, "bob", &err),
                     0);
    assert_int_equal(vault_sysdb_approval_consume(
                         f->db, VAULT_SYSDB_SYSTEM_SCOPE, id, "revoke_vault",
                         "identity=coffer://vault/x", &err),
                     0);
    assert_int_equal(vault_sysdb_approval_consume(
                         f->db, VAULT_SYSDB_SYSTEM_SCOPE, id, "revoke_vault",
                         "identity=coffer://vault/x", &err),
                     CFR_EDENIED);

    /* An operator's own TOTP secret, in the same scope. */
    assert_int_equal(cfr_totp_secret_generate(secret, sizeof(secret), &err), 0);
    assert_int_equal(vault_sysdb_totp_register(f->db, VAULT_SYSDB_SYSTEM_SCOPE,
                                               admin_a, "alice", secret,
                                               sizeof(secret), NULL, &err),
                     CFR_EDENIED);
    assert_int_equal(vault_sysdb_totp_register(f->db, VAULT_SYSDB_SYSTEM_SCOPE,
                                               op_alice, "alice", secret,
                                               sizeof(secret), NULL, &err),
                     0);
    assert_int_equal(vault_sysdb_totp_has(f->db, VAULT_SYSDB_SYSTEM_SCOPE,
                                          op_bob, "bob", &has, &err),
                     0);
    assert_false(has);
    code_at(secret, sizeof(secret), T0, code);
    assert_int_equal(vault_sysdb_totp_verify(f->db, VAULT_SYSDB_SYSTEM_SCOPE,
                                             op_bob, "bob", code, &err),
                     CFR_EAUTH);
    assert_int_equal(vault_sysdb_totp_verify(f->db, VAULT_SYSDB_SYSTEM_SCOPE,
                                             op_alice, "alice", code, &err),
                     0);
    /* Any other leading '_' is still refused as a scope. */
    assert_int_equal(vault_sysdb_approval_request(f->db, "_other", op_alice,
                                                  "alice", "x", "y", id2, &err),
                     CFR_EINVAL);
}

/* Audit records carry the caller's tenant, "" for none, across reopen. */
static void
test_vault_sysdb_audit_keeps_tenant(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    struct vault_sysdb_audit r;
    struct audit_seen seen = {0};

    memset(&r, 0, sizeof(r));
    snprintf(r.identity, sizeof(r.identity), "%s", agent);
    snprintf(r.method, sizeof(r.method), "/coffer.v1.Vault/Commit");
    snprintf(r.tenant, sizeof(r.tenant), "acme");
    r.decision = VAULT_AUDIT_ALLOW;
    assert_int_equal(vault_sysdb_audit_append(f->db, &r, &err), 0);
    memset(&r, 0, sizeof(r));
    snprintf(r.identity, sizeof(r.identity), "-");
    snprintf(r.method, sizeof(r.method), "/coffer.v1.Vault/Health");
    r.decision = VAULT_AUDIT_DENY;
    r.time_ms = T0 + 1;
    assert_int_equal(vault_sysdb_audit_submit(f->db, &r, &err), 0);
    assert_int_equal(vault_sysdb_audit_sync(f->db, &err), 0);
    reopen(f);
    assert_int_equal(vault_sysdb_audit_query(f->db, T0, T0 + 100, 0,
                                             collect_audit, &seen, &err),
                     0);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.recs[0].tenant, "acme");
    assert_string_equal(seen.recs[0].identity, agent);
    assert_string_equal(seen.recs[1].tenant, "");
    assert_string_equal(seen.recs[1].identity, "-");
    assert_int_equal(seen.recs[1].decision, VAULT_AUDIT_DENY);
}

/* "New" exactly once per (tenant, fingerprint), case-blind, durable. */
static void
test_vault_sysdb_seen_once(void **state)
{
    struct fixture *f = *state;
    struct cfr_err err;
    char fp[65], fp_upper[65];
    bool is_new = false;

    for (int i = 0; i < 64; i++) {
        fp[i] = "0123456789abcdef"[(i * 7) % 16];
        fp_upper[i] = "0123456789ABCDEF"[(i * 7) % 16];
    }
    fp[64] = fp_upper[64] = '\0';
    assert_int_equal(vault_sysdb_seen_mark(f->db, "acme", fp, &is_new, &err),
                     0);
    assert_true(is_new);
    assert_int_equal(vault_sysdb_seen_mark(f->db, "acme", fp, &is_new, &err),
                     0);
    assert_false(is_new);
    assert_int_equal(
        vault_sysdb_seen_mark(f->db, "acme", fp_upper, &is_new, &err), 0);
    assert_false(is_new);
    /* Another tenant's first sight of the same certificate is new. */
    assert_int_equal(vault_sysdb_seen_mark(f->db, "globex", fp, &is_new, &err),
                     0);
    assert_true(is_new);
    reopen(f);
    assert_int_equal(vault_sysdb_seen_mark(f->db, "acme", fp, &is_new, &err),
                     0);
    assert_false(is_new);
    /* Bad input: refused, nothing recorded. */
    is_new = true;
    assert_int_equal(vault_sysdb_seen_mark(f->db, "acme", "abc", &is_new, &err),
                     CFR_EINVAL);
    assert_false(is_new);
    fp[3] = 'g';
    assert_int_equal(vault_sysdb_seen_mark(f->db, "acme", fp, &is_new, &err),
                     CFR_EINVAL);
    assert_int_equal(
        vault_sysdb_seen_mark(f->db, "_system", fp_upper, &is_new, &err),
        CFR_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_system_scope_is_operators_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vault_sysdb_audit_keeps_tenant,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_vault_sysdb_seen_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vault_sysdb_tenant_round_trip,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_deny_list_effective_immediately, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_audit_escapes_and_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_audit_submit_and_purge_after_30_days, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_approval_needs_second_admin_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_approval_window_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_totp_register_verify_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_corrupt_record_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_audit_submit_from_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_notify_fans_out_to_tenant_targets, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_vault_sysdb_allocation_failures_clean_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
