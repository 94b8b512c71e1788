/*
 * restore_notify_test.c - the notification sinks (sink_support.h) and the
 * verify notifications end to end: core/notify delivers a webhook POST
 * and an SMTP mail that the sinks record byte for byte; then report.c's
 * decision over a sequence of runs with a state file in between:
 *   failure            -> one "verify.failed" webhook and one mail naming
 *                         the replica, mailbox, message and Message-ID;
 *   success after it   -> one "verify.recovered" webhook and one mail;
 *   success after that -> nothing at all;
 * and a webhook that answers 500 is reported in the result without
 * changing the verdict. No vault is needed: the runs are made up.
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

#include "notify.h"
#include "report.h"
#include "sink_support.h"

#define WAIT_MS 15000

static void
test_sinks_receive_through_notify(void **state)
{
    (void)state;
    struct sink *hook = sink_http_start(200), *smtp = sink_smtp_start();
    char url[128], smtp_url[128], v[256];
    const char *to[] = {"ops@example.com", "second@example.org"};
    struct cfr_notify_field fields[] = {{"mailbox", "alice"},
                                        {"detail", "line one\nline two"}};
    struct cfr_notify_opts o = {0};
    struct cfr_err err;

    assert_non_null(hook);
    assert_non_null(smtp);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook/x?y=1",
             sink_port(hook));
    snprintf(smtp_url, sizeof(smtp_url), "smtp://127.0.0.1:%d",
             sink_port(smtp));
    o.webhook_url = url;
    o.mail_to = to;
    o.n_mail_to = 2;
    o.smtp_url = smtp_url;
    o.smtp_from = "coffer@example.com";
    o.timeout_ms = 5000;
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    struct cfr_notify_event ev = {.event = "test.sink",
                                  .tenant = "acme",
                                  .fields = fields,
                                  .n_fields = 2};
    assert_int_equal(cfr_notify_post(n, &ev, &err), 0);
    assert_int_equal(cfr_notify_flush(n, WAIT_MS, &err), 0);
    cfr_notify_free(n, 0);

    assert_true(sink_wait(hook, 1, WAIT_MS));
    assert_true(sink_wait(smtp, 1, WAIT_MS));
    assert_int_equal(sink_count(hook), 1);
    assert_int_equal(sink_count(smtp), 1);

    const struct sink_msg *h = sink_get(hook, 0);
    assert_int_equal(h->kind, SINK_HTTP);
    assert_string_equal(h->method, "POST");
    assert_string_equal(h->path, "/hook/x?y=1");
    assert_true(sink_header(h, "content-type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    assert_true(sink_header(h, "Content-Length", v, sizeof(v)));
    assert_int_equal(strtoul(v, NULL, 10), h->body_len);
    assert_int_equal(strlen(h->body), h->body_len);
    assert_non_null(strstr(h->body, "\"event\":\"test.sink\""));
    assert_non_null(strstr(h->body, "\"tenant\":\"acme\""));
    assert_non_null(strstr(h->body, "\"detail\":\"line one\\nline two\""));
    assert_null(sink_get(hook, 1));

    const struct sink_msg *m = sink_get(smtp, 0);
    assert_int_equal(m->kind, SINK_SMTP);
    assert_string_equal(m->mail_from, "coffer@example.com");
    assert_int_equal(m->n_rcpt, 2);
    assert_string_equal(m->rcpt[0], "ops@example.com");
    assert_string_equal(m->rcpt[1], "second@example.org");
    assert_true(m->helo[0] != '\0');
    assert_non_null(strstr(m->body, "Subject: "));
    assert_non_null(strstr(m->body, "test.sink"));
    assert_non_null(strstr(m->body, "alice"));
    /* The final "." line is not part of the data. */
    assert_true(m->body_len >= 2);
    assert_memory_equal(m->body + m->body_len - 2, "\r\n", 2);
    assert_null(strstr(m->body, "\r\n.\r\n"));

    sink_stop(hook);
    sink_stop(smtp);
}

/* A made-up run: two replicas; when broken, replica b has a bad chunk. */
static void
make_run(struct restore_verify_result *r, bool broken, int64_t t)
{
    struct cfr_err err;
    uint8_t id[CFR_ID_LEN];
    size_t ri, mi;

    memset(id, 0x5a, sizeof(id));
    restore_verify_result_init(r);
    r->tenant = strdup("acme");
    assert_non_null(r->tenant);
    r->started_ms = t;
    r->seed = 777;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            restore_verify_add_replica(
                r, i == 0 ? "vault-a:7443" : "vault-b:7443", &ri, &err),
            0);
        assert_int_equal(
            restore_verify_add_mailbox(r, ri, "alice", id, t - 1, &mi, &err),
            0);
        r->replicas[ri].mailboxes[mi].messages_checked = 12;
        r->replicas[ri].mailboxes[mi].bytes = 3400;
    }
    if (broken) {
        assert_int_equal(restore_verify_add_failure(
                             r, RESTORE_VERIFY_CHUNK_CORRUPT, 1, "alice",
                             "INBOX", "1794980000.M12P3.mx1",
                             "<a1b2@example.com>", &err,
                             "chunk %s: authentication failed", "5f2c"),
                         0);
    }
    restore_verify_result_finish(r, t + 1000);
}

/* One run as the verify command does it: state, notify, record, save. */
static int
one_run(const char *state_path, const struct restore_notify_settings *ns,
        bool broken, int64_t t, struct restore_verify_result *r)
{
    struct restore_report_state st;
    struct cfr_err err;
    int rc;

    make_run(r, broken, t);
    assert_int_equal(restore_report_state_load(state_path, &st, &err), 0);
    bool prev_failed = restore_report_state_prev_failed(&st);
    assert_int_equal(
        restore_report_state_record(&st, r, NULL, 0, 86400000, &err), 0);
    rc = restore_report_notify(ns, prev_failed, r, &err);
    assert_int_equal(restore_report_state_save(state_path, &st, &err), 0);
    restore_report_state_fini(&st);
    return rc;
}

static void
test_verify_notifications_end_to_end(void **state)
{
    (void)state;
    struct sink *hook = sink_http_start(200), *smtp = sink_smtp_start();
    struct restore_notify_settings ns;
    struct restore_verify_result r;
    char url[128], smtp_url[128], dir[] = "/tmp/restore_notify.XXXXXX";
    char state_path[64];
    const int64_t t0 = INT64_C(1795000000000);

    assert_non_null(hook);
    assert_non_null(smtp);
    assert_non_null(mkdtemp(dir));
    snprintf(state_path, sizeof(state_path), "%s/state", dir);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/coffer", sink_port(hook));
    snprintf(smtp_url, sizeof(smtp_url), "smtp://127.0.0.1:%d",
             sink_port(smtp));
    memset(&ns, 0, sizeof(ns));
    ns.webhooks[0] = url;
    ns.n_webhooks = 1;
    ns.mail_to[0] = "ops@example.com";
    ns.n_mail_to = 1;
    ns.smtp_url = smtp_url;
    ns.smtp_from = "coffer@example.com";
    ns.timeout_ms = 5000;
    ns.retries = 0;

    /* 1. A failure: exactly one webhook and one mail, naming it all. */
    assert_int_equal(one_run(state_path, &ns, true, t0, &r), 0);
    assert_false(r.ok);
    assert_true(r.notified);
    assert_string_equal(r.notify_event, "verify.failed");
    assert_null(r.notify_error);
    restore_verify_result_fini(&r);
    assert_true(sink_wait(hook, 1, WAIT_MS));
    assert_true(sink_wait(smtp, 1, WAIT_MS));
    const struct sink_msg *h = sink_get(hook, 0);
    assert_string_equal(h->method, "POST");
    assert_string_equal(h->path, "/coffer");
    assert_non_null(strstr(h->body, "\"event\":\"verify.failed\""));
    assert_non_null(strstr(h->body, "\"tenant\":\"acme\""));
    assert_non_null(strstr(h->body, "\"result\":\"failed\""));
    assert_non_null(strstr(h->body, "\"failures\":\"1\""));
    assert_non_null(strstr(h->body, "vault-b:7443 1 failures"));
    assert_non_null(strstr(h->body, "vault-a:7443 ok"));
    assert_non_null(strstr(h->body, "\"failure.1\":\"chunk_corrupt "
                                    "replica=vault-b:7443 mailbox=alice "
                                    "folder=INBOX message=1794980000.M12P3.mx1 "
                                    "message_id=<a1b2@example.com>: chunk "
                                    "5f2c: authentication failed\""));
    assert_non_null(strstr(h->body, "\"seed\":\"777\""));
    const struct sink_msg *m = sink_get(smtp, 0);
    assert_string_equal(m->rcpt[0], "ops@example.com");
    assert_non_null(strstr(m->body, "verify.failed"));
    assert_non_null(strstr(m->body, "<a1b2@example.com>"));
    assert_non_null(strstr(m->body, "vault-b:7443"));

    /* 2. Passing after the failure: one "recovered" of each. */
    assert_int_equal(one_run(state_path, &ns, false, t0 + 86400000, &r), 0);
    assert_true(r.ok);
    assert_true(r.notified);
    assert_string_equal(r.notify_event, "verify.recovered");
    restore_verify_result_fini(&r);
    assert_true(sink_wait(hook, 2, WAIT_MS));
    assert_true(sink_wait(smtp, 2, WAIT_MS));
    assert_non_null(
        strstr(sink_get(hook, 1)->body, "\"event\":\"verify.recovered\""));
    assert_non_null(strstr(sink_get(hook, 1)->body, "\"result\":\"passed\""));
    assert_non_null(strstr(sink_get(smtp, 1)->body, "verify.recovered"));

    /* 3. Passing again: silence. Proven by the next failure being the
       very next message each sink receives. */
    assert_int_equal(one_run(state_path, &ns, false, t0 + 2 * 86400000, &r), 0);
    assert_true(r.ok);
    assert_false(r.notified);
    restore_verify_result_fini(&r);
    assert_int_equal(one_run(state_path, &ns, true, t0 + 3 * 86400000, &r), 0);
    restore_verify_result_fini(&r);
    assert_true(sink_wait(hook, 3, WAIT_MS));
    assert_true(sink_wait(smtp, 3, WAIT_MS));
    assert_int_equal(sink_count(hook), 3);
    assert_int_equal(sink_count(smtp), 3);
    assert_non_null(
        strstr(sink_get(hook, 2)->body, "\"event\":\"verify.failed\""));
    assert_non_null(strstr(sink_get(smtp, 2)->body, "verify.failed"));

    sink_stop(hook);
    sink_stop(smtp);
    assert_int_equal(unlink(state_path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void
test_delivery_failure_reported(void **state)
{
    (void)state;
    struct sink *hook = sink_http_start(500);
    struct restore_notify_settings ns;
    struct restore_verify_result r;
    struct cfr_err err;
    char url[128];

    assert_non_null(hook);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/down", sink_port(hook));
    memset(&ns, 0, sizeof(ns));
    ns.webhooks[0] = url;
    ns.n_webhooks = 1;
    ns.timeout_ms = 5000;
    ns.retries = 1;
    make_run(&r, true, INT64_C(1795000000000));
    assert_int_equal(restore_report_notify(&ns, false, &r, &err), CFR_EUNAVAIL);
    /* It was tried (and retried once), the verdict is the verify's. */
    assert_int_equal(sink_count(hook), 2);
    assert_false(r.ok);
    assert_true(r.notified);
    assert_non_null(r.notify_error);
    assert_non_null(strstr(r.notify_error, "500"));
    restore_verify_result_fini(&r);
    sink_stop(hook);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sinks_receive_through_notify),
        cmocka_unit_test(test_verify_notifications_end_to_end),
        cmocka_unit_test(test_delivery_failure_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
