/*
 * vault_config_test.c - coffer-vault's configuration (vault/config.c).
 *
 * The vault refuses to start on any doubtful setting, so these tests pin
 * three things: a complete file is read exactly as written, an absent
 * optional setting takes the default docs/VAULT.md promises, and every kind
 * of mistake is refused with CFR_ECONFIG and a message naming the setting
 * (an operator must be able to find the line without reading source).
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

#include "clock.h"
#include "config.h"
#include "err.h"

#define MIB  (UINT64_C(1) << 20)
#define SEC  CFR_MS_PER_SEC
#define MIN  (60 * CFR_MS_PER_SEC)
#define HOUR CFR_MS_PER_HOUR
#define DAY  CFR_MS_PER_DAY

/* The three required settings besides tls, one per line. */
#define L_LISTEN "listen = \"127.0.0.1:7443\";\n"
#define L_DATA   "data_dir = \"/var/lib/coffer-vault\";\n"
#define L_TLS                                                                  \
    "tls = { cert = \"v.pem\"; key = \"v.key\"; client_ca = \"ca.pem\"; };\n"
#define MINIMAL L_LISTEN L_DATA L_TLS

/* Replication pieces: own name, two peers, sixteen peers. */
#define NAME_A "name = \"vault-a\";\n"
#define PEER_B                                                                 \
    "peers = ({ name = \"vault-b\"; address = \"b:7443\"; region = \"r2\"; }"
#define PEER_C "{ name = \"vault-c\"; address = \"c:7443\"; region = \"r3\"; }"
#define P(n)   "{ name = \"p" #n "\"; address = \"h:" #n "\"; region = \"r\"; }"
#define PEERS_16                                                               \
    P(1)                                                                       \
    "," P(2) "," P(3) "," P(4) "," P(5) "," P(6) "," P(7) "," P(8) "," P(      \
        9) "," P(10) "," P(11) "," P(12) "," P(13) "," P(14) "," P(15) "," P(16)

/* Every setting the module knows, none at its default. */
static const char full_config[] =
    "listen    = \"[::1]:7443\";\n"
    "port_file = \"/run/coffer/vault.port\";\n"
    "data_dir  = \"/srv/coffer\";\n"
    "region    = \"eu-west\";\n"
    "log_level = \"debug\";\n"
    "cache_size = \"512M\";\n"
    "workers   = 8;\n"
    "lease_ttl = \"6h\";\n"
    "approval_window = \"30m\";\n"
    "shutdown_grace = \"5s\";\n"
    "tls = {\n"
    "  cert      = \"/etc/coffer/vault.pem\";\n"
    "  key       = \"/etc/coffer/vault.key\";\n"
    "  client_ca = \"/etc/coffer/clients-ca.pem\";\n"
    "};\n"
    "limits = {\n"
    "  max_msg        = \"16M\";\n"
    "  max_calls      = 128;\n"
    "  get_batch      = \"2MiB\";\n"
    "  max_failures   = 5;\n"
    "  failure_window = \"10m\";\n"
    "  lockout        = \"1h30m\";\n"
    "};\n"
    "retention = {\n"
    "  window     = \"45d\";\n"
    "  schedule   = \"2h\";\n"
    "  tombstones = \"120d\";\n"
    "};\n"
    "audit = { keep = \"60d\"; };\n"
    "notify = {\n"
    "  webhook   = \"https://ops.example.org/coffer\";\n"
    "  mail_to   = [\"security@example.org\", \"oncall@example.org\"];\n"
    "  smtp_url  = \"smtps://mail.example.org:465\";\n"
    "  smtp_from = \"coffer-vault@example.org\";\n"
    "  smtp_user = \"vault\";\n"
    "  smtp_password = \"s3cret\";\n"
    "  ca_file   = \"/etc/coffer/smtp-ca.pem\";\n"
    "};\n"
    "stats = {\n"
    "  file     = \"/var/lib/node_exporter/textfile/coffer_vault.prom\";\n"
    "  interval = \"250ms\";\n"
    "};\n"
    "test_clock_offset = \"31d\";\n"
    "name = \"vault-a\";\n"
    "peers = (\n"
    "  { name = \"vault-b\"; address = \"10.77.0.2:7443\"; region = \"r2\";\n"
    "    tls_name = \"vault-b.example.org\"; },\n"
    "  { name = \"vault-c\"; address = \"[fd00::3]:7444\"; region = \"r3\"; }\n"
    ");\n"
    "sync = {\n"
    "  interval  = \"90s\";\n"
    "  bandwidth = \"10M\";\n"
    "  timeout   = \"20s\";\n"
    "  cert      = \"/etc/coffer/sync.pem\";\n"
    "  key       = \"/etc/coffer/sync.key\";\n"
    "  ca        = \"/etc/coffer/peers-ca.pem\";\n"
    "};\n"
    "scrub = { interval = \"3d\"; };\n";

static void
test_vault_config_full_file_read_as_written(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;
    cfr_err_clear(&err);
    assert_int_equal(vault_config_parse(full_config, true, &c, &err), 0);
    assert_int_equal(err.code, 0);

    assert_string_equal(c.listen, "[::1]:7443");
    assert_string_equal(c.port_file, "/run/coffer/vault.port");
    assert_string_equal(c.data_dir, "/srv/coffer");
    assert_string_equal(c.region, "eu-west");
    assert_string_equal(c.log_level, "debug");
    assert_int_equal(c.cache_bytes, 512 * MIB);
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.lease_ttl_ms, 6 * HOUR);
    assert_int_equal(c.approval_window_ms, 30 * MIN);
    assert_int_equal(c.shutdown_grace_ms, 5 * SEC);

    assert_string_equal(c.tls_cert, "/etc/coffer/vault.pem");
    assert_string_equal(c.tls_key, "/etc/coffer/vault.key");
    assert_string_equal(c.tls_client_ca, "/etc/coffer/clients-ca.pem");

    assert_int_equal(c.max_msg, 16 * MIB);
    assert_int_equal(c.max_calls, 128);
    assert_int_equal(c.get_batch_bytes, 2 * MIB);
    assert_int_equal(c.max_failures, 5);
    assert_int_equal(c.failure_window_ms, 10 * MIN);
    assert_int_equal(c.lockout_ms, 90 * MIN);

    assert_int_equal(c.retention_ms, 45 * DAY);
    assert_int_equal(c.schedule_ms, 2 * HOUR);
    assert_int_equal(c.tombstone_keep_ms, 120 * DAY);
    assert_int_equal(c.audit_keep_ms, 60 * DAY);

    assert_string_equal(c.notify_webhook, "https://ops.example.org/coffer");
    assert_int_equal(c.notify_n_mail_to, 2);
    assert_string_equal(c.notify_mail_to[0], "security@example.org");
    assert_string_equal(c.notify_mail_to[1], "oncall@example.org");
    assert_null(c.notify_mail_to[2]);
    assert_string_equal(c.notify_smtp_url, "smtps://mail.example.org:465");
    assert_string_equal(c.notify_smtp_from, "coffer-vault@example.org");
    assert_string_equal(c.notify_smtp_user, "vault");
    assert_string_equal(c.notify_smtp_password, "s3cret");
    assert_string_equal(c.notify_ca_file, "/etc/coffer/smtp-ca.pem");

    assert_string_equal(c.stats_file,
                        "/var/lib/node_exporter/textfile/coffer_vault.prom");
    assert_int_equal(c.stats_interval_ms, 250);

    assert_true(c.test_mode);
    assert_int_equal(c.test_clock_offset_ms, 31 * DAY);
    assert_non_null(c.cfg);

    /* Replication, in the order written. */
    assert_string_equal(c.name, "vault-a");
    assert_int_equal(c.n_peers, 2);
    assert_string_equal(c.peers[0].name, "vault-b");
    assert_string_equal(c.peers[0].address, "10.77.0.2:7443");
    assert_string_equal(c.peers[0].region, "r2");
    assert_string_equal(c.peers[0].tls_name, "vault-b.example.org");
    assert_string_equal(c.peers[1].name, "vault-c");
    assert_string_equal(c.peers[1].address, "[fd00::3]:7444");
    assert_string_equal(c.peers[1].region, "r3");
    assert_null(c.peers[1].tls_name);
    assert_null(c.peers[2].name);
    assert_int_equal(c.sync_interval_ms, 90 * SEC);
    assert_int_equal(c.sync_bandwidth, 10 * MIB);
    assert_int_equal(c.sync_timeout_ms, 20 * SEC);
    assert_string_equal(c.sync_tls_cert, "/etc/coffer/sync.pem");
    assert_string_equal(c.sync_tls_key, "/etc/coffer/sync.key");
    assert_string_equal(c.sync_tls_ca, "/etc/coffer/peers-ca.pem");
    assert_int_equal(c.scrub_interval_ms, 3 * DAY);

    vault_config_fini(&c);
    /* fini leaves nothing dangling: a second fini is harmless. */
    assert_null(c.cfg);
    assert_null(c.listen);
    vault_config_fini(&c);
    vault_config_fini(NULL);
}

static void
test_vault_config_defaults_when_absent(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;
    cfr_err_clear(&err);
    assert_int_equal(vault_config_parse(MINIMAL, false, &c, &err), 0);

    assert_string_equal(c.listen, "127.0.0.1:7443");
    assert_string_equal(c.data_dir, "/var/lib/coffer-vault");
    assert_string_equal(c.tls_cert, "v.pem");
    assert_string_equal(c.tls_key, "v.key");
    assert_string_equal(c.tls_client_ca, "ca.pem");
    /* The documented defaults (docs/VAULT.md, configuration reference). */
    assert_null(c.port_file);
    assert_string_equal(c.region, "default");
    assert_string_equal(c.log_level, "info");
    assert_null(c.stats_file);
    assert_int_equal(c.cache_bytes, 256 * MIB);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.max_calls, 64);
    assert_int_equal(c.max_msg, 72 * MIB);
    assert_int_equal(c.get_batch_bytes, 4 * MIB);
    assert_int_equal(c.max_failures, 10);
    assert_int_equal(c.failure_window_ms, 15 * MIN);
    assert_int_equal(c.lockout_ms, 15 * MIN);
    assert_int_equal(c.retention_ms, 30 * DAY);
    assert_int_equal(c.schedule_ms, HOUR);
    assert_int_equal(c.tombstone_keep_ms, 90 * DAY);
    assert_int_equal(c.audit_keep_ms, 30 * DAY);
    assert_int_equal(c.lease_ttl_ms, 12 * HOUR);
    assert_int_equal(c.approval_window_ms, HOUR);
    assert_int_equal(c.stats_interval_ms, 30 * SEC);
    assert_int_equal(c.shutdown_grace_ms, 10 * SEC);
    assert_int_equal(c.test_clock_offset_ms, 0);
    assert_false(c.test_mode);
    assert_null(c.notify_webhook);
    assert_int_equal(c.notify_n_mail_to, 0);
    assert_null(c.notify_mail_to[0]);
    assert_null(c.notify_smtp_url);
    assert_null(c.notify_smtp_from);
    assert_null(c.notify_smtp_user);
    assert_null(c.notify_smtp_password);
    assert_null(c.notify_ca_file);
    /* No replication unless asked; its TLS files default to tls.*. */
    assert_null(c.name);
    assert_int_equal(c.n_peers, 0);
    assert_int_equal(c.sync_interval_ms, 5 * MIN);
    assert_int_equal(c.sync_bandwidth, 0);
    assert_int_equal(c.sync_timeout_ms, 60 * SEC);
    assert_string_equal(c.sync_tls_cert, "v.pem");
    assert_string_equal(c.sync_tls_key, "v.key");
    assert_string_equal(c.sync_tls_ca, "ca.pem");
    assert_int_equal(c.scrub_interval_ms, 7 * DAY);
    vault_config_fini(&c);

    /* Test mode alone moves nothing: the offset stays 0 until set. */
    assert_int_equal(vault_config_parse(MINIMAL, true, &c, &err), 0);
    assert_true(c.test_mode);
    assert_int_equal(c.test_clock_offset_ms, 0);
    vault_config_fini(&c);

    /* Empty groups are groups with every member at its default. */
    assert_int_equal(vault_config_parse(MINIMAL "limits = {}; retention = {};"
                                                "notify = {}; stats = {};",
                                        false, &c, &err),
                     0);
    assert_int_equal(c.max_calls, 64);
    assert_int_equal(c.retention_ms, 30 * DAY);
    assert_int_equal(c.notify_n_mail_to, 0);
    assert_int_equal(c.stats_interval_ms, 30 * SEC);
    vault_config_fini(&c);
}

/* The other documented forms: integers as seconds or bytes, sequences. */
static void
test_vault_config_alternate_forms(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;
    static const char text[] = MINIMAL "lease_ttl = 90;\n"
                                       "shutdown_grace = 0;\n"
                                       "cache_size = 3145728;\n"
                                       "workers = 16L;\n"
                                       "retention = { window = \"1w2d\";\n"
                                       "  schedule = \"0\"; };\n"
                                       "limits = { max_msg = \"64KiB\";\n"
                                       "  get_batch = \"1M512K\"; };\n";
    /* get_batch holds a size sequence, which sizes do not allow. */
    assert_int_equal(vault_config_parse(text, false, &c, &err), CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "limits.get_batch"));
    assert_non_null(strstr(err.msg, "\"1M512K\" is not valid"));

    static const char ok[] = MINIMAL "lease_ttl = 90;\n"
                                     "shutdown_grace = 0;\n"
                                     "cache_size = 3145728;\n"
                                     "workers = 16L;\n"
                                     "retention = { window = \"1w2d\";\n"
                                     "  schedule = \"0\"; };\n"
                                     "limits = { max_msg = \"64KiB\";\n"
                                     "  get_batch = 1048576; };\n";
    assert_int_equal(vault_config_parse(ok, false, &c, &err), 0);
    assert_int_equal(c.lease_ttl_ms, 90 * SEC);
    assert_int_equal(c.shutdown_grace_ms, 0);
    assert_int_equal(c.cache_bytes, 3 * MIB);
    assert_int_equal(c.workers, 16);
    assert_int_equal(c.retention_ms, 9 * DAY);
    assert_int_equal(c.schedule_ms, 0); /* "0" turns the schedule off */
    assert_int_equal(c.max_msg, 64 << 10);
    assert_int_equal(c.get_batch_bytes, MIB);
    vault_config_fini(&c);
}

struct bound_case {
    const char *text;
    size_t offset; /* of the field in struct vault_config */
    int width;     /* 4 = unsigned, 8 = int64_t/uint64_t/size_t */
    uint64_t want;
};

#define FIELD(f)                                                               \
    offsetof(struct vault_config, f), (int)sizeof(((struct vault_config *)0)->f)

/* Each range's ends are inside it: refusing one would be an off-by-one. */
static const struct bound_case bounds[] = {
    {MINIMAL "workers = 1;", FIELD(workers), 1},
    {MINIMAL "workers = 256;", FIELD(workers), 256},
    {MINIMAL "cache_size = \"1M\";", FIELD(cache_bytes), MIB},
    {MINIMAL "cache_size = \"1T\";", FIELD(cache_bytes), UINT64_C(1) << 40},
    {MINIMAL "limits = { max_calls = 1; };", FIELD(max_calls), 1},
    {MINIMAL "limits = { max_calls = 4096; };", FIELD(max_calls), 4096},
    {MINIMAL "limits = { max_msg = \"64K\"; };", FIELD(max_msg), 64 << 10},
    {MINIMAL "limits = { max_msg = \"128M\"; };", FIELD(max_msg), 128 * MIB},
    {MINIMAL "limits = { get_batch = \"64K\"; };", FIELD(get_batch_bytes),
     64 << 10},
    {MINIMAL "limits = { get_batch = \"64M\"; };", FIELD(get_batch_bytes),
     64 * MIB},
    {MINIMAL "limits = { max_failures = 1; };", FIELD(max_failures), 1},
    {MINIMAL "limits = { max_failures = 64; };", FIELD(max_failures), 64},
    {MINIMAL "limits = { failure_window = \"1s\"; };", FIELD(failure_window_ms),
     SEC},
    {MINIMAL "limits = { lockout = \"1d\"; };", FIELD(lockout_ms), DAY},
    {MINIMAL "retention = { window = \"1h\"; };", FIELD(retention_ms), HOUR},
    {MINIMAL "retention = { window = \"3650d\"; };", FIELD(retention_ms),
     3650 * DAY},
    {MINIMAL "retention = { schedule = \"30d\"; };", FIELD(schedule_ms),
     30 * DAY},
    {MINIMAL "retention = { tombstones = \"1d\"; };", FIELD(tombstone_keep_ms),
     DAY},
    {MINIMAL "audit = { keep = \"1d\"; };", FIELD(audit_keep_ms), DAY},
    {MINIMAL "approval_window = \"1m\";", FIELD(approval_window_ms), MIN},
    {MINIMAL "approval_window = \"7d\";", FIELD(approval_window_ms), 7 * DAY},
    {MINIMAL "lease_ttl = \"1s\";", FIELD(lease_ttl_ms), SEC},
    {MINIMAL "lease_ttl = \"7d\";", FIELD(lease_ttl_ms), 7 * DAY},
    {MINIMAL "stats = { interval = \"100ms\"; };", FIELD(stats_interval_ms),
     100},
    {MINIMAL "shutdown_grace = \"10m\";", FIELD(shutdown_grace_ms), 10 * MIN},
    {MINIMAL "sync = { interval = \"0\"; };", FIELD(sync_interval_ms), 0},
    {MINIMAL "sync = { interval = \"30d\"; };", FIELD(sync_interval_ms),
     30 * DAY},
    {MINIMAL "sync = { bandwidth = \"1K\"; };", FIELD(sync_bandwidth), 1024},
    {MINIMAL "sync = { bandwidth = \"1T\"; };", FIELD(sync_bandwidth),
     UINT64_C(1) << 40},
    {MINIMAL "sync = { timeout = \"1s\"; };", FIELD(sync_timeout_ms), SEC},
    {MINIMAL "sync = { timeout = \"1h\"; };", FIELD(sync_timeout_ms), HOUR},
    {MINIMAL "scrub = { interval = \"0\"; };", FIELD(scrub_interval_ms), 0},
    {MINIMAL "scrub = { interval = \"365d\"; };", FIELD(scrub_interval_ms),
     365 * DAY},
};

static void
test_vault_config_range_ends_accepted(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        const struct bound_case *b = &bounds[i];
        struct vault_config c;
        struct cfr_err err;
        cfr_err_clear(&err);
        int rc = vault_config_parse(b->text, false, &c, &err);
        if (rc != 0) {
            fail_msg("case %zu (%s): %s", i, b->text, err.msg);
        }
        const unsigned char *p = (const unsigned char *)&c + b->offset;
        uint64_t got;
        if (b->width == 4) {
            unsigned u;
            memcpy(&u, p, sizeof(u));
            got = u;
        } else {
            memcpy(&got, p, sizeof(got));
        }
        if (got != b->want) {
            fail_msg("case %zu (%s): got %llu, want %llu", i, b->text,
                     (unsigned long long)got, (unsigned long long)b->want);
        }
        vault_config_fini(&c);
    }
}

/* Accepted listen forms: IPv6 in brackets, a name, port 0 (pick one). */
static void
test_vault_config_listen_forms_accepted(void **state)
{
    (void)state;
    static const char *const texts[] = {
        L_DATA L_TLS "listen = \"[::1]:7443\";",
        L_DATA L_TLS "listen = \"vault.example.org:0\";",
        L_DATA L_TLS "listen = \"0.0.0.0:65535\";",
    };
    static const char *const want[] = {"[::1]:7443", "vault.example.org:0",
                                       "0.0.0.0:65535"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct vault_config c;
        struct cfr_err err;
        cfr_err_clear(&err);
        if (vault_config_parse(texts[i], false, &c, &err) != 0) {
            fail_msg("case %zu: %s", i, err.msg);
        }
        assert_string_equal(c.listen, want[i]);
        vault_config_fini(&c);
    }
}

struct bad_case {
    const char *text;
    bool test_mode;
    const char *setting; /* must appear in the message */
    const char *reason;  /* and so must this */
};

/*
 * One mistake per case, on top of an otherwise valid file. The message must
 * name the setting and say what is wrong with it.
 */
static const struct bad_case bad[] = {
    /* Unknown names, at the top and in every group. */
    {MINIMAL "workerz = 4;", false, "workerz", "unknown setting"},
    {MINIMAL "retention = { windw = \"30d\"; };", false, "retention.windw",
     "unknown setting"},
    {L_LISTEN L_DATA "tls = { cert = \"c\"; key = \"k\"; client_ca = \"a\";"
                     " ca = \"x\"; };",
     false, "tls.ca", "unknown setting"},
    {MINIMAL "limits = { max_message = \"1M\"; };", false, "limits.max_message",
     "unknown setting"},
    {MINIMAL "audit = { kept = \"30d\"; };", false, "audit.kept",
     "unknown setting"},
    {MINIMAL "stats = { path = \"/x\"; };", false, "stats.path",
     "unknown setting"},
    {MINIMAL "notify = { mail = [\"a@b\"]; };", false, "notify.mail",
     "unknown setting"},
    /* A group where a group belongs, and nowhere else. */
    {MINIMAL "limits = 5;", false, "limits", "must be a group"},
    {L_LISTEN L_DATA "tls = \"v.pem\";", false, "tls", "must be a group"},
    /* Wrong types. */
    {L_DATA L_TLS "listen = 7443;", false, "listen", "must be a string"},
    {MINIMAL "workers = \"4\";", false, "workers", "must be an integer"},
    {MINIMAL "limits = { max_calls = 1.5; };", false, "limits.max_calls",
     "must be an integer"},
    {MINIMAL "region = 1;", false, "region", "must be a string"},
    {MINIMAL "port_file = true;", false, "port_file", "must be a string"},
    {MINIMAL "log_level = [\"info\"];", false, "log_level", "must be a string"},
    {MINIMAL "lease_ttl = true;", false, "lease_ttl", "must be a string like"},
    {MINIMAL "cache_size = [\"1M\"];", false, "cache_size",
     "must be a string like"},
    {MINIMAL "retention = { window = 1.5; };", false, "retention.window",
     "must be a string like"},
    {MINIMAL "notify = { webhook = 5; };", false, "notify.webhook",
     "must be a string"},
    {MINIMAL "notify = { mail_to = \"a@b\"; smtp_url = \"smtp://m\";"
             " smtp_from = \"v@b\"; };",
     false, "notify.mail_to", "must be a list or array"},
    {MINIMAL "notify = { mail_to = [1]; smtp_url = \"smtp://m\";"
             " smtp_from = \"v@b\"; };",
     false, "notify.mail_to", "elements must be strings"},
    {MINIMAL "stats = { file = 1; };", false, "stats.file", "must be a string"},
    /* Empty strings are never a value. */
    {L_LISTEN L_TLS "data_dir = \"\";", false, "data_dir", "must not be empty"},
    {MINIMAL "stats = { file = \"\"; };", false, "stats.file",
     "must not be empty"},
    {MINIMAL "notify = { mail_to = [\"\"]; smtp_url = \"smtp://m\";"
             " smtp_from = \"v@b\"; };",
     false, "notify.mail_to", "elements must not be empty"},
    /* Integers out of range, both sides. */
    {MINIMAL "workers = 0;", false, "workers", "0 is out of range [1, 256]"},
    {MINIMAL "workers = 257;", false, "workers",
     "257 is out of range [1, 256]"},
    {MINIMAL "limits = { max_calls = 0; };", false, "limits.max_calls",
     "out of range [1, 4096]"},
    {MINIMAL "limits = { max_calls = 4097; };", false, "limits.max_calls",
     "4097 is out of range"},
    {MINIMAL "limits = { max_failures = 0; };", false, "limits.max_failures",
     "out of range [1, 64]"},
    {MINIMAL "limits = { max_failures = 65; };", false, "limits.max_failures",
     "65 is out of range"},
    /* Sizes out of range. */
    {MINIMAL "cache_size = \"1023K\";", false, "cache_size",
     "1047552 bytes is out of range [1048576, 1099511627776]"},
    {MINIMAL "cache_size = \"2T\";", false, "cache_size",
     "bytes is out of range"},
    {MINIMAL "cache_size = -1;", false, "cache_size", "is out of range"},
    {MINIMAL "limits = { max_msg = \"63K\"; };", false, "limits.max_msg",
     "64512 bytes is out of range"},
    {MINIMAL "limits = { max_msg = \"129M\"; };", false, "limits.max_msg",
     "bytes is out of range [65536, 134217728]"},
    {MINIMAL "limits = { get_batch = \"65M\"; };", false, "limits.get_batch",
     "bytes is out of range [65536, 67108864]"},
    /* Durations out of range. */
    {MINIMAL "lease_ttl = \"999ms\";", false, "lease_ttl",
     "999 ms is out of range [1000, 604800000] ms"},
    {MINIMAL "lease_ttl = \"8d\";", false, "lease_ttl",
     "691200000 ms is out of range"},
    {MINIMAL "lease_ttl = -5;", false, "lease_ttl", "is out of range"},
    {MINIMAL "approval_window = \"59s\";", false, "approval_window",
     "59000 ms is out of range [60000,"},
    {MINIMAL "shutdown_grace = \"10m1ms\";", false, "shutdown_grace",
     "600001 ms is out of range"},
    {MINIMAL "stats = { interval = \"99ms\"; };", false, "stats.interval",
     "99 ms is out of range [100,"},
    {MINIMAL "retention = { window = \"59m\"; };", false, "retention.window",
     "ms is out of range [3600000,"},
    {MINIMAL "retention = { window = \"3651d\"; };", false, "retention.window",
     "ms is out of range"},
    {MINIMAL "retention = { schedule = \"31d\"; };", false,
     "retention.schedule", "ms is out of range"},
    {MINIMAL "retention = { tombstones = \"23h\"; };", false,
     "retention.tombstones", "ms is out of range"},
    {MINIMAL "audit = { keep = \"23h\"; };", false, "audit.keep",
     "ms is out of range"},
    {MINIMAL "limits = { failure_window = \"999ms\"; };", false,
     "limits.failure_window", "ms is out of range"},
    {MINIMAL "limits = { lockout = \"1d1s\"; };", false, "limits.lockout",
     "ms is out of range"},
    /* Strings that are not durations. */
    {MINIMAL "lease_ttl = \"30x\";", false, "lease_ttl",
     "\"30x\" is not valid here"},
    {MINIMAL "lease_ttl = \"\";", false, "lease_ttl", "\"\" is not valid here"},
    {MINIMAL "lease_ttl = \"1.5h\";", false, "lease_ttl",
     "\"1.5h\" is not valid here"},
    {MINIMAL "lease_ttl = \"h\";", false, "lease_ttl",
     "\"h\" is not valid here"},
    {MINIMAL "lease_ttl = \"-1h\";", false, "lease_ttl",
     "\"-1h\" is not valid here"},
    {MINIMAL "lease_ttl = \"1h 30m\";", false, "lease_ttl",
     "\"1h 30m\" is not valid here"},
    {MINIMAL "retention = { window = \"5y\"; };", false, "retention.window",
     "\"5y\" is not valid here"},
    {MINIMAL "audit = { keep = \"30D\"; };", false, "audit.keep",
     "\"30D\" is not valid here"},
    /* Strings that are not sizes. */
    {MINIMAL "cache_size = \"64MB\";", false, "cache_size",
     "\"64MB\" is not valid here"},
    {MINIMAL "cache_size = \"1.5G\";", false, "cache_size",
     "\"1.5G\" is not valid here"},
    {MINIMAL "cache_size = \"G\";", false, "cache_size",
     "\"G\" is not valid here"},
    {MINIMAL "cache_size = \"-1M\";", false, "cache_size",
     "\"-1M\" is not valid here"},
    {MINIMAL "cache_size = \"64m\";", false, "cache_size",
     "\"64m\" is not valid here"},
    {MINIMAL "limits = { max_msg = \"64 M\"; };", false, "limits.max_msg",
     "\"64 M\" is not valid here"},
    {MINIMAL "limits = { get_batch = \"99999999999999999999\"; };", false,
     "limits.get_batch", "is not valid here"},
    /* Required settings. */
    {L_DATA L_TLS, false, "required setting listen is missing", "<string>"},
    {L_LISTEN L_TLS, false, "required setting data_dir is missing", "<string>"},
    {L_LISTEN L_DATA, false, "required setting tls.cert is missing",
     "<string>"},
    {L_LISTEN L_DATA "tls = { cert = \"c\"; client_ca = \"a\"; };", false,
     "required setting tls.key is missing", "<string>"},
    {L_LISTEN L_DATA "tls = { cert = \"c\"; key = \"k\"; };", false,
     "required setting tls.client_ca is missing", "<string>"},
    /* listen is one host:port. */
    {L_DATA L_TLS "listen = \"localhost\";", false, "listen",
     "\"localhost\" is not host:port"},
    {L_DATA L_TLS "listen = \":7443\";", false, "listen", "is not host:port"},
    {L_DATA L_TLS "listen = \"localhost:\";", false, "listen",
     "is not host:port"},
    {L_DATA L_TLS "listen = \"localhost:74a3\";", false, "listen",
     "port is not a number"},
    {L_DATA L_TLS "listen = \"localhost:-1\";", false, "listen",
     "port is not a number"},
    {L_DATA L_TLS "listen = \"localhost:123456\";", false, "listen",
     "port is not a number in 0..65535"},
    {L_DATA L_TLS "listen = \"0.0.0.0:70000\";", false, "listen",
     "port is not a number in 0..65535"},
    /* One address only, and the error is located like the parser's. */
    {L_DATA L_TLS "listen = \"0.0.0.0:70000\";", false,
     "<string>:", "listen: \"0.0.0.0:70000\""},
    {L_DATA L_TLS "listen = \"localhost:7443,localhost:7444\";", false,
     "listen", "is not one host:port"},
    {L_DATA L_TLS "listen = \"a:1:2\";", false, "listen",
     "is not one host:port"},
    {L_DATA L_TLS "listen = \"::1:7443\";", false, "listen",
     "write IPv6 addresses as [addr]:port"},
    /* The clock offset needs test mode, and then a valid duration. */
    {MINIMAL "test_clock_offset = \"31d\";", false, "test_clock_offset",
     "allowed only with --test-mode"},
    {MINIMAL "test_clock_offset = 0;", false, "test_clock_offset",
     "allowed only with --test-mode"},
    {MINIMAL "test_clock_offset = \"31x\";", true, "test_clock_offset",
     "\"31x\" is not valid here"},
    {MINIMAL "test_clock_offset = \"3651d\";", true, "test_clock_offset",
     "ms is out of range"},
    /* Mail needs somewhere to send from, and at most 8 recipients. */
    {MINIMAL "notify = { mail_to = [\"a@b\"]; smtp_from = \"v@b\"; };", false,
     "notify.mail_to", "needs notify.smtp_url and notify.smtp_from"},
    {MINIMAL "notify = { mail_to = [\"a@b\"]; smtp_url = \"smtp://m\"; };",
     false, "notify.mail_to", "needs notify.smtp_url and notify.smtp_from"},
    {MINIMAL "notify = { mail_to = [\"1@b\", \"2@b\", \"3@b\", \"4@b\","
             " \"5@b\", \"6@b\", \"7@b\", \"8@b\", \"9@b\"];"
             " smtp_url = \"smtp://m\"; smtp_from = \"v@b\"; };",
     false, "notify.mail_to", "at most 8 addresses"},
    /* Replication: peers, their names, addresses and regions. */
    {MINIMAL "sync = { intervl = \"5m\"; };", false, "sync.intervl",
     "unknown setting"},
    {MINIMAL "scrub = { every = \"1d\"; };", false, "scrub.every",
     "unknown setting"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:1\";"
                    " region = \"r2\"; zone = \"x\"; });",
     false, "peers.[0].zone", "unknown setting"},
    {MINIMAL NAME_A "peers = ({ address = \"b:1\"; region = \"r2\"; });", false,
     "required setting peers.[0].name is missing", "<string>"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; region = \"r2\"; });",
     false, "required setting peers.[0].address is missing", "<string>"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:1\"; });",
     false, "required setting peers.[0].region is missing", "<string>"},
    {MINIMAL "peers = ({ name = \"vault-b\"; address = \"b:1\";"
             " region = \"r2\"; });",
     false, "peers", "need this vault's own name"},
    {MINIMAL NAME_A PEER_B "," PEER_C ", { name = \"vault-b\";"
                           " address = \"d:4\"; region = \"r4\"; });",
     false, "peers.[2].name", "\"vault-b\" names two peers"},
    {MINIMAL NAME_A PEER_B ", { name = \"vault-d\"; address = \"b:7443\";"
                           " region = \"r4\"; });",
     false, "peers.[1].address", "\"b:7443\" is listed for two peers"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-a\"; address = \"b:1\";"
                    " region = \"r2\"; });",
     false, "peers.[0].name", "this vault's own name"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b\";"
                    " region = \"r2\"; });",
     false, "peers.[0].address", "\"b\" is not host:port"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:0\";"
                    " region = \"r2\"; });",
     false, "peers.[0].address", "port is not a number in 1..65535"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:1,c:2\";"
                    " region = \"r2\"; });",
     false, "peers.[0].address", "is not one host:port"},
    {MINIMAL NAME_A "peers = ({ name = \"Vault-B\"; address = \"b:1\";"
                    " region = \"r2\"; });",
     false, "peers.[0].name", "may hold only a-z"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:1\";"
                    " region = \"r 2\"; });",
     false, "peers.[0].region", "may hold only a-z"},
    {MINIMAL NAME_A "peers = ({ name = \"vault-b\"; address = \"b:1\";"
                    " region = \"r2\"; tls_name = \"\"; });",
     false, "peers.[0].tls_name", "must not be empty"},
    {MINIMAL "name = \"vault/a\";", false, "name", "may hold only a-z"},
    {MINIMAL "name = \"-vault\";", false, "name",
     "may not start with '.', '-' or '_'"},
    {MINIMAL "region = \"EU\";", false, "region", "may hold only a-z"},
    {MINIMAL "name = \"v123456789012345678901234567890123456789012345678901"
             "234567890123\";",
     false, "name", "is longer than 63 bytes"},
    {MINIMAL NAME_A "peers = {};", false, "peers", "must be a list"},
    {MINIMAL NAME_A "peers = (" PEERS_16 ", { name = \"p17\";"
                    " address = \"h:17\"; region = \"r\"; });",
     false, "peers", "17 peers; at most 16"},
    {MINIMAL "sync = { interval = \"31d\"; };", false, "sync.interval",
     "ms is out of range"},
    {MINIMAL "sync = { timeout = \"999ms\"; };", false, "sync.timeout",
     "ms is out of range"},
    {MINIMAL "sync = { bandwidth = \"1023\"; };", false, "sync.bandwidth",
     "1023 bytes/s is below 1K"},
    {MINIMAL "sync = { bandwidth = \"10Mbit\"; };", false, "sync.bandwidth",
     "is not valid here"},
    {MINIMAL "sync = { cert = \"\"; };", false, "sync.cert",
     "must not be empty"},
    {MINIMAL "scrub = { interval = \"366d\"; };", false, "scrub.interval",
     "ms is out of range"},
    /* Not libconfig at all: the parser's message, with the line. */
    {MINIMAL "workers = ;", false, "<string>:4:", "syntax error"},
};

static void
test_vault_config_refuses_each_mistake(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct bad_case *b = &bad[i];
        struct vault_config c;
        struct cfr_err err;
        /* Garbage first: a failed parse must leave *cfg_r empty. */
        memset(&c, 0xa5, sizeof(c));
        cfr_err_clear(&err);
        int rc = vault_config_parse(b->text, b->test_mode, &c, &err);
        if (rc != CFR_ECONFIG || err.code != CFR_ECONFIG) {
            fail_msg("case %zu (%s): rc %d code %d msg \"%s\"", i, b->text, rc,
                     err.code, err.msg);
        }
        if (strstr(err.msg, b->setting) == NULL ||
            strstr(err.msg, b->reason) == NULL) {
            fail_msg("case %zu (%s): message \"%s\" lacks \"%s\" or \"%s\"", i,
                     b->text, err.msg, b->setting, b->reason);
        }
        assert_null(c.cfg);
        assert_null(c.listen);
        assert_null(c.notify_mail_to[0]);
        assert_int_equal(c.notify_n_mail_to, 0);
        assert_int_equal(c.workers, 0);
        assert_false(c.test_mode);
        vault_config_fini(&c);
    }
}

/* Sixteen peers are the most, and a peer set is read in order. */
static void
test_vault_config_sixteen_peers(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;
    cfr_err_clear(&err);
    if (vault_config_parse(MINIMAL NAME_A "peers = (" PEERS_16 ");", false, &c,
                           &err) != 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(c.n_peers, 16);
    for (size_t i = 0; i < 16; i++) {
        char want[16];
        snprintf(want, sizeof(want), "p%zu", i + 1);
        assert_string_equal(c.peers[i].name, want);
        snprintf(want, sizeof(want), "h:%zu", i + 1);
        assert_string_equal(c.peers[i].address, want);
        assert_string_equal(c.peers[i].region, "r");
    }
    vault_config_fini(&c);
    /* A name alone (no peers yet) is fine: the vault serves its peers. */
    assert_int_equal(vault_config_parse(MINIMAL NAME_A, false, &c, &err), 0);
    assert_string_equal(c.name, "vault-a");
    assert_int_equal(c.n_peers, 0);
    vault_config_fini(&c);
}

/* The same checks still pass with at most 8 recipients. */
static void
test_vault_config_eight_recipients(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;
    static const char text[] =
        MINIMAL "notify = { mail_to = [\"1@b\", \"2@b\", \"3@b\", \"4@b\","
                " \"5@b\", \"6@b\", \"7@b\", \"8@b\"];"
                " smtp_url = \"smtp://m\"; smtp_from = \"v@b\"; };";
    assert_int_equal(vault_config_parse(text, false, &c, &err), 0);
    assert_int_equal(c.notify_n_mail_to, 8);
    for (size_t i = 0; i < 8; i++) {
        char want[8];
        snprintf(want, sizeof(want), "%zu@b", i + 1);
        assert_string_equal(c.notify_mail_to[i], want);
    }
    assert_null(c.notify_webhook);
    vault_config_fini(&c);
}

static char *
write_temp(const char *text)
{
    char *path = strdup("/tmp/vault_config_test_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return path;
}

/*
 * From a file, errors name the file and the line of the setting, the way
 * an operator sees them at start-up.
 */
static void
test_vault_config_load_names_file_and_line(void **state)
{
    (void)state;
    struct vault_config c;
    struct cfr_err err;

    char *path = write_temp(full_config);
    cfr_err_clear(&err);
    assert_int_equal(vault_config_load(path, true, &c, &err), 0);
    assert_string_equal(c.region, "eu-west");
    assert_int_equal(c.lockout_ms, 90 * MIN);
    assert_int_equal(c.test_clock_offset_ms, 31 * DAY);
    vault_config_fini(&c);
    /* Without --test-mode the same file is refused. */
    assert_int_equal(vault_config_load(path, false, &c, &err), CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "test_clock_offset"));
    assert_non_null(strstr(err.msg, "--test-mode"));
    assert_null(c.cfg);
    unlink(path);
    free(path);

    path = write_temp(MINIMAL "retention = {\n"
                              "  window = \"30d\";\n"
                              "  windw = \"31d\";\n"
                              "};\n");
    assert_int_equal(vault_config_load(path, false, &c, &err), CFR_ECONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s:6: retention.windw: unknown setting",
             path);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("\"%s\" lacks \"%s\"", err.msg, want);
    }
    assert_null(c.cfg);
    unlink(path);
    free(path);

    path = write_temp(MINIMAL "\nworkers = 300;\n");
    assert_int_equal(vault_config_load(path, false, &c, &err), CFR_ECONFIG);
    snprintf(want, sizeof(want), "%s:5: workers: 300 is out of range [1, 256]",
             path);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("\"%s\" lacks \"%s\"", err.msg, want);
    }
    unlink(path);
    free(path);

    /* A file that is not there is refused with its name. */
    memset(&c, 0xa5, sizeof(c));
    int rc =
        vault_config_load("/nonexistent/coffer-vault.conf", false, &c, &err);
    assert_true(rc == CFR_ENOTFOUND || rc == CFR_EIO);
    assert_int_equal(err.code, rc);
    assert_non_null(strstr(err.msg, "/nonexistent/coffer-vault.conf"));
    assert_null(c.cfg);
    assert_null(c.listen);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_config_full_file_read_as_written),
        cmocka_unit_test(test_vault_config_defaults_when_absent),
        cmocka_unit_test(test_vault_config_alternate_forms),
        cmocka_unit_test(test_vault_config_range_ends_accepted),
        cmocka_unit_test(test_vault_config_listen_forms_accepted),
        cmocka_unit_test(test_vault_config_refuses_each_mistake),
        cmocka_unit_test(test_vault_config_eight_recipients),
        cmocka_unit_test(test_vault_config_sixteen_peers),
        cmocka_unit_test(test_vault_config_load_names_file_and_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
