/*
 * agent_config_test.c - coffer-agent's configuration (agent/config.c).
 *
 * An hourly agent that silently backs up nothing is the failure this file
 * guards against. It pins: a complete file is read exactly as written; an
 * absent optional setting takes the default docs/AGENT.md promises; every
 * kind of mistake is refused with CFR_ECONFIG and a message that names the
 * line and the setting; a tenant kept in fewer than two regions is refused
 * unless allow_single_region says so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <stdlib.h> /* mkdtemp */
#include <unistd.h> /* unlink, rmdir */

#include "backup.h" /* AGENT_BACKUP_IO_* */
#include "clock.h"  /* CFR_MS_PER_* */
#include "config.h" /* the module under test */
#include "err.h"

/* The required settings, one per line (lines 1..8). */
#define L_TENANT "tenant = \"acme\";\n"
#define L_KEY    "key_file = \"/var/lib/coffer-agent/agent.key\";\n"
#define L_PASS   "passphrase_file = \"/etc/coffer/agent.pass\";\n"
#define L_STATE  "state_dir = \"/var/lib/coffer-agent/state\";\n"
#define L_TLS                                                                  \
    "tls = { ca = \"/etc/coffer/ca.pem\"; cert = \"/etc/coffer/agent.pem\";\n" \
    "        key = \"/etc/coffer/agent.key.pem\"; };\n"
#define L_MBOX "mailbox_pattern = \"/var/vmail/%d/%n/Maildir\";\n"
/* Two vaults in two regions, the least a default configuration accepts. */
#define L_VAULTS                                                               \
    "vaults = ( { address = \"vault-a.example.net:7443\"; region = "           \
    "\"eu-west\"; }, { address = \"vault-b.example.net:7443\"; region = "      \
    "\"eu-north\"; } );\n"
#define MINIMAL L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX L_VAULTS

static const char full_config[] =
    "tenant = \"acme\";\n"
    "key_file = \"/k/agent.key\";\n"
    "passphrase_file = \"/k/agent.pass\";\n"
    "state_dir = \"/s/state/\";\n"
    "lock_file = \"/run/coffer-agent.lock\";\n"
    "log_level = \"info\";\n"
    "host = \"mx1.example.org\";\n"
    "tmp_dir = \"/var/tmp\";\n"
    "mailboxes = (\n"
    "  { name = \"alice@example.org\"; root = \"/m/alice\"; },\n"
    "  { name = \"bob@example.org\"; root = \"/m/bob\"; }\n"
    ");\n"
    "mailbox_pattern = \"/var/vmail/%d/%n/Maildir\";\n"
    "vaults = (\n"
    "  { address = \"10.0.0.1:7443\"; name = \"eu-a\"; "
    "tls_name = \"vault-a.example.net\"; region = \"eu-west\"; },\n"
    "  { address = \"[2001:db8::2]:7443\"; name = \"eu-b\"; "
    "region = \"eu-west\"; },\n"
    "  { address = \"vault-c.example.net:443\"; region = \"eu_north.2\"; }\n"
    ");\n"
    "tls = { ca = \"/t/ca.pem\"; cert = \"/t/a.pem\"; key = \"/t/a.key\"; };\n"
    "quorum = 2;\n"
    "workers = 6;\n"
    "cpu_nice = 15;\n"
    "io_class = \"best-effort\";\n"
    "io_level = 4;\n"
    "mass_deletion = { percent = 40; min_files = 10; };\n"
    "timeouts = { call = \"10s\"; stream = \"2m\"; stall = \"45s\"; "
    "lease = \"2h\"; };\n"
    "state_cache = \"16M\";\n";

static void
test_agent_config_full(void **state)
{
    struct agent_config c;
    struct cfr_err err;
    (void)state;

    cfr_err_clear(&err);
    assert_int_equal(agent_config_parse(full_config, &c, &err), 0);
    assert_string_equal(c.tenant, "acme");
    assert_string_equal(c.key_file, "/k/agent.key");
    assert_string_equal(c.passphrase_file, "/k/agent.pass");
    assert_string_equal(c.state_dir, "/s/state/");
    assert_string_equal(c.lock_file, "/run/coffer-agent.lock");
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.host, "mx1.example.org");
    assert_string_equal(c.tmp_dir, "/var/tmp");
    assert_int_equal(c.n_mailboxes, 2);
    assert_string_equal(c.mailboxes[0].name, "alice@example.org");
    assert_string_equal(c.mailboxes[0].root, "/m/alice");
    assert_string_equal(c.mailboxes[1].name, "bob@example.org");
    assert_string_equal(c.mailboxes[1].root, "/m/bob");
    assert_true(agent_config_lists(&c, "bob@example.org"));
    assert_false(agent_config_lists(&c, "carol@example.org"));
    assert_string_equal(c.mailbox_pattern, "/var/vmail/%d/%n/Maildir");
    assert_int_equal(c.n_vaults, 3);
    assert_string_equal(c.vaults[0].address, "10.0.0.1:7443");
    assert_string_equal(c.vaults[0].name, "eu-a");
    assert_string_equal(c.vaults[0].tls_name, "vault-a.example.net");
    assert_string_equal(c.vaults[1].address, "[2001:db8::2]:7443");
    assert_null(c.vaults[1].tls_name);
    /* A vault without a name is reported by its address. */
    assert_string_equal(c.vaults[2].name, "vault-c.example.net:443");
    assert_string_equal(c.vaults[0].region, "eu-west");
    assert_string_equal(c.vaults[1].region, "eu-west");
    assert_string_equal(c.vaults[2].region, "eu_north.2");
    assert_false(c.allow_single_region);
    assert_string_equal(c.tls_ca, "/t/ca.pem");
    assert_string_equal(c.tls_cert, "/t/a.pem");
    assert_string_equal(c.tls_key, "/t/a.key");
    assert_int_equal(c.quorum, 2);
    assert_int_equal(c.workers, 6);
    assert_int_equal(c.cpu_nice, 15);
    assert_int_equal(c.io_class, AGENT_BACKUP_IO_BEST_EFFORT);
    assert_int_equal(c.io_level, 4);
    assert_int_equal(c.mass_deletion_percent, 40);
    assert_int_equal(c.mass_deletion_min, 10);
    assert_int_equal(c.call_timeout_ms, 10 * CFR_MS_PER_SEC);
    assert_int_equal(c.stream_timeout_ms, 120 * CFR_MS_PER_SEC);
    assert_int_equal(c.stall_ms, 45 * CFR_MS_PER_SEC);
    assert_int_equal(c.lease_ttl_ms, 2 * CFR_MS_PER_HOUR);
    assert_int_equal(c.state_cache_bytes, 16u << 20);
    agent_config_fini(&c);
    assert_null(c.cfg);
}

static void
test_agent_config_defaults(void **state)
{
    struct agent_config c;
    struct cfr_err err;
    (void)state;

    cfr_err_clear(&err);
    assert_int_equal(agent_config_parse(MINIMAL, &c, &err), 0);
    assert_int_equal(c.n_mailboxes, 0);
    assert_null(c.host);
    assert_null(c.tmp_dir);
    assert_string_equal(c.log_level, "warn");
    /* Beside the state directory, never inside it. */
    assert_string_equal(c.lock_file, "/var/lib/coffer-agent/state.lock");
    assert_int_equal(c.quorum, 0);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.cpu_nice, 10);
    assert_int_equal(c.io_class, AGENT_BACKUP_IO_BEST_EFFORT);
    assert_int_equal(c.io_level, 7);
    assert_int_equal(c.mass_deletion_percent, 25);
    assert_int_equal(c.mass_deletion_min, 50);
    assert_int_equal(c.call_timeout_ms, 30 * CFR_MS_PER_SEC);
    assert_int_equal(c.stream_timeout_ms, 300 * CFR_MS_PER_SEC);
    assert_int_equal(c.stall_ms, 30 * CFR_MS_PER_SEC);
    assert_int_equal(c.lease_ttl_ms, 12 * CFR_MS_PER_HOUR);
    assert_int_equal(c.state_cache_bytes, 8u << 20);
    assert_string_equal(c.vaults[0].name, "vault-a.example.net:7443");
    assert_int_equal(c.n_vaults, 2);
    assert_string_equal(c.vaults[0].region, "eu-west");
    assert_string_equal(c.vaults[1].region, "eu-north");
    /* Two regions are required unless said otherwise. */
    assert_false(c.allow_single_region);
    agent_config_fini(&c);

    /* A list alone is enough; io_class idle without a level. */
    cfr_err_clear(&err);
    assert_int_equal(
        agent_config_parse(L_TENANT L_KEY L_PASS L_STATE L_TLS L_VAULTS
                           "mailboxes = ( { name = \"a@b\"; root = \"/m\"; } "
                           ");\nio_class = \"idle\";\n",
                           &c, &err),
        0);
    assert_null(c.mailbox_pattern);
    assert_int_equal(c.n_mailboxes, 1);
    assert_int_equal(c.io_class, AGENT_BACKUP_IO_IDLE);
    agent_config_fini(&c);
}

struct refusal {
    const char *text;
    const char *want; /* substring of the message */
};

static const struct refusal refusals[] = {
    /* Unknown names, at every level, with their line. */
    {MINIMAL "quorom = 1;\n", "<string>:9: quorom: unknown setting"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; adress = \"b:2\"; } );\n",
     "<string>:8: vaults.[0].adress: unknown setting"},
    {MINIMAL "mailboxes = ( { name = \"a@b\"; root = \"/m\"; rot = 1; } );\n",
     "<string>:9: mailboxes.[0].rot: unknown setting"},
    {MINIMAL "tls2 = 1;\n", "tls2: unknown setting"},
    {L_TENANT L_KEY L_PASS L_STATE "tls = { ca = \"/a\"; cert = \"/b\"; key = "
                                   "\"/c\"; crl = \"/d\"; };\n" L_MBOX L_VAULTS,
     "tls.crl: unknown setting"},
    {MINIMAL "mass_deletion = { share = 0.25; };\n",
     "mass_deletion.share: unknown setting"},
    {MINIMAL "timeouts = { connect = \"1s\"; };\n",
     "timeouts.connect: unknown setting"},
    /* Required settings. */
    {L_KEY L_PASS L_STATE L_TLS L_MBOX L_VAULTS, "tenant is missing"},
    {L_TENANT L_PASS L_STATE L_TLS L_MBOX L_VAULTS, "key_file is missing"},
    {L_TENANT L_KEY L_STATE L_TLS L_MBOX L_VAULTS,
     "passphrase_file is missing"},
    {L_TENANT L_KEY L_PASS L_TLS L_MBOX L_VAULTS, "state_dir is missing"},
    {L_TENANT L_KEY L_PASS L_STATE L_MBOX L_VAULTS, "tls.ca is missing"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX, "at least one vault"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_VAULTS, "nothing to back up"},
    /* Values. */
    {"tenant = \"Acme\";\n" L_KEY L_PASS L_STATE L_TLS L_MBOX L_VAULTS,
     "<string>:1: tenant: \"Acme\" is not a tenant name"},
    {L_TENANT
     "key_file = \"agent.key\";\n" L_PASS L_STATE L_TLS L_MBOX L_VAULTS,
     "<string>:2: key_file: \"agent.key\" is not an absolute path"},
    {L_TENANT L_KEY
     "passphrase_file = \"/var/lib/coffer-agent/agent.key\";\n" L_STATE L_TLS
         L_MBOX L_VAULTS,
     "passphrase_file: must not be the key file"},
    {MINIMAL "lock_file = \"run/lock\";\n", "lock_file: \"run/lock\""},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS
     "mailbox_pattern = \"/var/vmail/users\";\n" L_VAULTS,
     "<string>:7: mailbox_pattern:"},
    {MINIMAL "mailboxes = ( { name = \"a@b\"; root = \"m/a\"; } );\n",
     "mailboxes.[0].root: \"m/a\" is not an absolute path"},
    {MINIMAL "mailboxes = ( { name = \"a@b\"; root = \"/m/a\"; },\n"
             "  { name = \"a@b\"; root = \"/m/b\"; } );\n",
     "<string>:10: mailboxes.[1].name: \"a@b\" is listed twice"},
    {MINIMAL "mailboxes = ( { root = \"/m/a\"; } );\n",
     "mailboxes.[0].name is missing"},
    {MINIMAL "mailboxes = ( \"a@b\" );\n", "mailboxes.[0]: must be a group"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"vault-a\"; } );\n",
     "vaults.[0].address: \"vault-a\" is not host:port"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"v:70000\"; } );\n",
     "vaults.[0].address: \"v:70000\""},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"v:1\"; }, { address = \"v:1\"; } );\n",
     "vaults.[1].address: \"v:1\" is listed twice"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"v:1\"; name = \"x\"; },\n"
     "           { address = \"w:1\"; name = \"x\"; } );\n",
     "vaults.[1].name: \"x\" names two vaults"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( {address=\"a:1\";}, {address=\"b:1\";}, {address=\"c:1\";},\n"
     " {address=\"d:1\";}, {address=\"e:1\";}, {address=\"f:1\";},\n"
     " {address=\"g:1\";}, {address=\"h:1\";}, {address=\"i:1\";} );\n",
     "vaults: 9 vaults; at most 8"},
    {MINIMAL "quorum = 3;\n",
     "<string>:9: quorum: 3 is more than the 2 configured vaults"},
    {MINIMAL "quorum = -1;\n", "quorum: -1 is out of range"},
    {MINIMAL "workers = 33;\n", "workers: 33 is out of range"},
    {MINIMAL "cpu_nice = 20;\n", "cpu_nice: 20 is out of range"},
    {MINIMAL "cpu_nice = \"10\";\n", "cpu_nice: must be an integer"},
    {MINIMAL "io_class = \"realtime\";\n",
     "io_class: \"realtime\" is not best-effort, idle or keep"},
    {MINIMAL "io_class = \"idle\";\nio_level = 3;\n",
     "io_level: only means something with io_class"},
    {MINIMAL "io_level = 8;\n", "io_level: 8 is out of range"},
    {MINIMAL "mass_deletion = { percent = 0; };\n",
     "mass_deletion.percent: 0 is out of range"},
    {MINIMAL "mass_deletion = { percent = 101; };\n",
     "mass_deletion.percent: 101 is out of range"},
    {MINIMAL "mass_deletion = { min_files = 0; };\n",
     "mass_deletion.min_files: 0 is out of range"},
    {MINIMAL "timeouts = { call = \"1x\"; };\n", "timeouts.call:"},
    {MINIMAL "timeouts = { stall = \"10ms\"; };\n", "timeouts.stall:"},
    {MINIMAL "log_level = \"loud\";\n",
     "log_level: \"loud\" is not debug, info, warn, error or off"},
    {MINIMAL "host = \"\";\n", "host: must not be empty"},
    {MINIMAL "this is not libconfig\n", "<string>:9:"},
    /* Placement: a vault without a region, one region only. */
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"r1\"; },\n"
     "  { address = \"b:1\"; region = \"r2\"; }, { address = \"c:1\"; } );\n",
     "vaults.[2].region: needed to prove the tenant is kept in two regions; "
     "set it, or allow_single_region = true"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"vault-a:7443\"; } );\n",
     "vaults.[0].region: needed to prove"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"r1\"; },\n"
     "  { address = \"b:1\"; region = \"r1\"; } );\n",
     "<string>:8: vaults: every vault is in region \"r1\": the tenant must "
     "be kept in at least two regions; add a vault in another region, or "
     "set allow_single_region = true"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"r1\"; } );\n",
     "vaults: every vault is in region \"r1\""},
    /* Region names: what the vault and coffer-admin accept, exactly. */
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"EU-west\"; },\n"
     "  { address = \"b:1\"; region = \"r2\"; } );\n",
     "<string>:8: vaults.[0].region: \"EU-west\" may hold only a-z, 0-9"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"r1\"; },\n"
     "  { address = \"b:1\"; region = \"r 2\"; } );\n",
     "<string>:9: vaults.[1].region: \"r 2\" may hold only"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"r1\"; },\n"
     "  { address = \"b:1\"; region = "
     "\"abcdefghij0123456789abcdefghij01\"; } );\n",
     "vaults.[1].region: \"abcdefghij0123456789abcdefghij01\" is longer "
     "than 31 bytes"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = \"\"; } );\n",
     "vaults.[0].region: must not be empty"},
    {L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
     "vaults = ( { address = \"a:1\"; region = 1; } );\n",
     "vaults.[0].region:"},
    {MINIMAL "allow_single_region = \"yes\";\n",
     "<string>:9: allow_single_region:"},
    {MINIMAL "allow_single_regions = true;\n",
     "allow_single_regions: unknown setting"},
};

static void
test_agent_config_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        struct agent_config c;
        struct cfr_err err;
        cfr_err_clear(&err);
        int rc = agent_config_parse(refusals[i].text, &c, &err);
        if (rc != CFR_ECONFIG || strstr(err.msg, refusals[i].want) == NULL) {
            fprintf(stderr, "case %zu: rc %d, message \"%s\", want \"%s\"\n", i,
                    rc, err.msg, refusals[i].want);
            fail();
        }
        /* Nothing is left behind for the caller to free. */
        assert_null(c.cfg);
        assert_null(c.mailboxes);
    }
}

/* allow_single_region = true lifts the two-region rule, and only it. */
static void
test_agent_config_single_region(void **state)
{
    struct agent_config c;
    struct cfr_err err;
    (void)state;

    /* One vault, no region at all. */
    cfr_err_clear(&err);
    assert_int_equal(
        agent_config_parse(L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
                           "vaults = ( { address = \"127.0.0.1:7443\"; } );\n"
                           "allow_single_region = true;\n",
                           &c, &err),
        0);
    assert_true(c.allow_single_region);
    assert_int_equal(c.n_vaults, 1);
    assert_null(c.vaults[0].region);
    agent_config_fini(&c);

    /* Regions still checked when given, some given and some not, all in
     * one region. */
    cfr_err_clear(&err);
    assert_int_equal(
        agent_config_parse(L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
                           "vaults = ( { address = \"a:1\"; region = "
                           "\"lab\"; }, { address = \"b:1\"; },\n"
                           "  { address = \"c:1\"; region = \"lab\"; } );\n"
                           "allow_single_region = true;\nquorum = 2;\n",
                           &c, &err),
        0);
    assert_string_equal(c.vaults[0].region, "lab");
    assert_null(c.vaults[1].region);
    assert_string_equal(c.vaults[2].region, "lab");
    assert_int_equal(c.quorum, 2);
    agent_config_fini(&c);

    /* A bad region name is refused even then. */
    cfr_err_clear(&err);
    assert_int_equal(
        agent_config_parse(L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
                           "vaults = ( { address = \"a:1\"; region = "
                           "\"Lab\"; } );\nallow_single_region = true;\n",
                           &c, &err),
        CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "vaults.[0].region: \"Lab\""));
    assert_null(c.cfg);

    /* Stated false is the default: still refused. */
    cfr_err_clear(&err);
    assert_int_equal(
        agent_config_parse(L_TENANT L_KEY L_PASS L_STATE L_TLS L_MBOX
                           "vaults = ( { address = \"a:1\"; } );\n"
                           "allow_single_region = false;\n",
                           &c, &err),
        CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "vaults.[0].region: needed"));
}

static void
test_agent_config_file(void **state)
{
    char dir[] = "/tmp/agent_config_test.XXXXXX", path[64];
    struct agent_config c;
    struct cfr_err err;
    FILE *f;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.conf", dir);
    /* A missing file is named as such. */
    cfr_err_clear(&err);
    assert_int_equal(agent_config_load(path, &c, &err), CFR_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL "cpu_nice = 99;\n", f);
    assert_int_equal(fclose(f), 0);
    cfr_err_clear(&err);
    assert_int_equal(agent_config_load(path, &c, &err), CFR_ECONFIG);
    /* The message starts with the real file name and line. */
    char want[128];
    snprintf(want, sizeof(want), "%s:9: cpu_nice", path);
    assert_non_null(strstr(err.msg, want));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(agent_config_load(path, &c, &err), 0);
    assert_string_equal(c.tenant, "acme");
    agent_config_fini(&c);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_config_full),
        cmocka_unit_test(test_agent_config_defaults),
        cmocka_unit_test(test_agent_config_refusals),
        cmocka_unit_test(test_agent_config_single_region),
        cmocka_unit_test(test_agent_config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
