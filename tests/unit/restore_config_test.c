/*
 * restore_config_test.c - the `verify` and `notify` groups of
 * coffer-restore's configuration: defaults when absent, every value read,
 * unknown names and bad values refused with the setting named, no inline
 * password, and the SMTP password file's mode rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "secret.h"

#define BASE                                                                   \
    "tenant = \"acme\";\nkey_file = \"/k\";\nvaults = [ \"a:1\", \"b:2\" ];\n" \
    "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n"

static void
test_defaults_without_groups(void **state)
{
    (void)state;
    struct restore_config c;
    struct cfr_err err;

    assert_int_equal(restore_config_load_string(BASE, &c, &err), 0);
    assert_string_equal(c.verify.scratch_dir, "/var/lib/coffer/verify-scratch");
    assert_string_equal(c.verify.state_path,
                        "/var/lib/coffer/verify/state.json");
    assert_null(c.verify.report_path);
    assert_null(c.verify.metrics_path);
    assert_null(c.verify.live_store);
    assert_int_equal(c.verify.sample_mailboxes, 0);
    assert_int_equal(c.verify.sample_messages, 0);
    assert_int_equal(c.verify.schedule_ms, 86400000);
    assert_int_equal(c.verify.jitter_ms, 0);
    assert_int_equal(c.verify.coverage_window_ms, INT64_C(30) * 86400000);
    assert_int_equal(c.notify.n_webhooks, 0);
    assert_int_equal(c.notify.n_mail_to, 0);
    assert_null(c.notify.smtp_url);
    assert_null(c.notify.smtp_password_file);
    assert_int_equal(c.notify.timeout_ms, 10000);
    assert_int_equal(c.notify.retries, 2);
    restore_config_fini(&c);
}

static void
test_full_groups_read(void **state)
{
    (void)state;
    struct restore_config c;
    struct cfr_err err;
    static const char text[] = BASE
        "verify = { scratch_dir = \"/s\"; report = \"/r.json\";\n"
        "  metrics = \"/m/coffer.prom\"; state = \"/st\";\n"
        "  sample_mailboxes = 7; sample_messages = 300;\n"
        "  schedule = \"6h\"; jitter = \"20m\"; coverage_window = \"14d\";\n"
        "  live_store = \"/var/vmail/%d/%u/Maildir\"; };\n"
        "notify = { webhooks = [ \"http://h1/x\", \"https://h2/y\" ];\n"
        "  mail_to = [ \"ops@example.com\", \"b@example.org\" ];\n"
        "  smtp_url = \"smtps://mail.example:465\";\n"
        "  smtp_from = \"coffer@example.com\"; smtp_user = \"coffer\";\n"
        "  smtp_password_file = \"/etc/coffer/smtp.pass\";\n"
        "  ca = \"/etc/ca.pem\"; source = \"verify-1\";\n"
        "  timeout = \"3s\"; retries = 0; };\n";

    assert_int_equal(restore_config_load_string(text, &c, &err), 0);
    assert_string_equal(c.verify.scratch_dir, "/s");
    assert_string_equal(c.verify.report_path, "/r.json");
    assert_string_equal(c.verify.metrics_path, "/m/coffer.prom");
    assert_string_equal(c.verify.state_path, "/st");
    assert_int_equal(c.verify.sample_mailboxes, 7);
    assert_int_equal(c.verify.sample_messages, 300);
    assert_int_equal(c.verify.schedule_ms, 6 * 3600000);
    assert_int_equal(c.verify.jitter_ms, 20 * 60000);
    assert_int_equal(c.verify.coverage_window_ms, INT64_C(14) * 86400000);
    assert_string_equal(c.verify.live_store, "/var/vmail/%d/%u/Maildir");
    assert_int_equal(c.notify.n_webhooks, 2);
    assert_string_equal(c.notify.webhooks[1], "https://h2/y");
    assert_int_equal(c.notify.n_mail_to, 2);
    assert_string_equal(c.notify.mail_to[0], "ops@example.com");
    assert_string_equal(c.notify.smtp_url, "smtps://mail.example:465");
    assert_string_equal(c.notify.smtp_from, "coffer@example.com");
    assert_string_equal(c.notify.smtp_user, "coffer");
    assert_string_equal(c.notify.smtp_password_file, "/etc/coffer/smtp.pass");
    assert_string_equal(c.notify.ca_file, "/etc/ca.pem");
    assert_string_equal(c.notify.source, "verify-1");
    assert_int_equal(c.notify.timeout_ms, 3000);
    assert_int_equal(c.notify.retries, 0);
    restore_config_fini(&c);
}

static void
test_bad_values_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *names; /* the setting the error must name */
    } bad[] = {
        {BASE "verify = { colour = 1; };\n", "verify.colour"},
        {BASE "notify = { webhook = \"http://x/\"; };\n", "notify.webhook"},
        /* A password never sits in the config file. */
        {BASE "notify = { smtp_password = \"hunter2\"; };\n",
         "notify.smtp_password"},
        {BASE "verify = { scratch_dir = \"relative\"; };\n",
         "verify.scratch_dir"},
        {BASE "verify = { metrics = \"m.prom\"; };\n", "verify.metrics"},
        {BASE "verify = { state = \"\"; };\n", "verify.state"},
        {BASE "verify = { sample_mailboxes = -1; };\n",
         "verify.sample_mailboxes"},
        {BASE "verify = { sample_messages = \"many\"; };\n",
         "verify.sample_messages"},
        {BASE "verify = { schedule = \"10ms\"; };\n", "verify.schedule"},
        {BASE "verify = { schedule = \"1h\"; jitter = \"2h\"; };\n",
         "verify.jitter"},
        {BASE "verify = { coverage_window = \"1s\"; };\n",
         "verify.coverage_window"},
        {BASE "verify = { live_store = \"/var/vmail/%d\"; };\n",
         "verify.live_store"},
        {BASE "notify = { webhooks = [ \"ftp://x/\" ]; };\n",
         "notify.webhooks"},
        {BASE "notify = { webhooks = \"http://x/\"; };\n", "notify.webhooks"},
        {BASE "notify = { mail_to = [ \"a@b\" ]; };\n", "notify.mail_to"},
        {BASE "notify = { mail_to = [ \"no-at-sign\" ]; smtp_url = "
              "\"smtp://h\"; smtp_from = \"a@b\"; };\n",
         "notify.mail_to"},
        {BASE "notify = { mail_to = [ \"x@y\" ]; smtp_url = "
              "\"smtp://h\"; smtp_from = \"a@b\\r\\nBcc: z@q\"; };\n",
         "notify.smtp_from"},
        {BASE "notify = { smtp_url = \"http://h\"; };\n", "notify.smtp_url"},
        {BASE "notify = { smtp_url = \"smtp://u:pw@h\"; };\n",
         "notify.smtp_url"},
        {BASE "notify = { smtp_password_file = \"/p\"; };\n",
         "notify.smtp_password_file"},
        {BASE "notify = { timeout = \"1h\"; };\n", "notify.timeout"},
        {BASE "notify = { retries = 11; };\n", "notify.retries"},
        {BASE "notify = 3;\n", "notify"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct restore_config c;
        struct cfr_err err;
        int rc = restore_config_load_string(bad[i].text, &c, &err);
        if (rc != CFR_ECONFIG) {
            fail_msg("bad config %zu: rc %d", i, rc);
        }
        if (strstr(err.msg, bad[i].names) == NULL) {
            fail_msg("bad config %zu: \"%s\" does not name %s", i, err.msg,
                     bad[i].names);
        }
        /* A password in the text never reaches the message. */
        assert_null(strstr(err.msg, "hunter2"));
        assert_null(c.cfg);
    }
}

static void
test_smtp_password_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/restore_config.XXXXXX", p[64];
    struct restore_notify_settings ns;
    struct cfr_secret *s = NULL;
    struct cfr_err err;
    size_t len = 0;
    FILE *f;

    assert_int_equal(cfr_crypto_init(&err), 0);
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof(p), "%s/pw", dir);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs("s3cret pw\n", f);
    fclose(f);
    memset(&ns, 0, sizeof(ns));
    ns.smtp_password_file = p;

    /* Readable by others: refused, and the setting is named. */
    assert_int_equal(chmod(p, 0644), 0);
    assert_int_equal(restore_config_smtp_password(&ns, &s, &len, &err),
                     CFR_EDENIED);
    assert_null(s);
    assert_non_null(strstr(err.msg, "notify.smtp_password_file"));
    assert_null(strstr(err.msg, "s3cret"));

    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(restore_config_smtp_password(&ns, &s, &len, &err), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(cfr_secret_ro(s), "s3cret pw", 10); /* with NUL */
    cfr_secret_free(s);

    ns.smtp_password_file = NULL;
    assert_int_equal(restore_config_smtp_password(&ns, &s, &len, &err),
                     CFR_ECONFIG);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(rmdir(dir), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_without_groups),
        cmocka_unit_test(test_full_groups_read),
        cmocka_unit_test(test_bad_values_refused),
        cmocka_unit_test(test_smtp_password_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
