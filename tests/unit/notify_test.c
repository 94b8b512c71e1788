/*
 * notify_test.c - webhook POSTs and SMTP mail reach tiny listeners run by
 * the test on 127.0.0.1; dead and silent targets end in bounded retries
 * and a reported error, never a hang; the queue is bounded; secret-like
 * fields and header injection are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "mem.h"
#include "notify.h"

#define T0 INT64_C(1800000000000)

enum mode {
    MODE_HTTP_OK,
    MODE_HTTP_500,
    MODE_SILENT, /* accepts, reads, never answers */
    MODE_SMTP,
};

struct listener {
    int fd;
    int port;
    enum mode mode;
    int max_conns;
    pthread_t thread;
    pthread_mutex_t lock;
    int conns;
    char data[65536]; /* last request or mail, NUL-terminated */
    size_t len;
    char rcpts[1024];
    char from[256];
};

/* Case-insensitive strstr (strcasestr is a GNU extension). */
static char *
ci_find(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; *p != '\0'; p++) {
        if (strncasecmp(p, needle, n) == 0) {
            return (char *)p;
        }
    }
    return NULL;
}

static int
listen_any(int *port_r)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port_r = ntohs(a.sin_port);
    return fd;
}

static void
send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one CRLF line (without it) into out; false at EOF. */
static bool
read_line(int fd, char *out, size_t out_size)
{
    size_t n = 0;
    char c;
    while (read(fd, &c, 1) == 1) {
        if (c == '\n') {
            if (n > 0 && out[n - 1] == '\r') {
                n--;
            }
            out[n] = '\0';
            return true;
        }
        if (n + 1 < out_size) {
            out[n++] = c;
        }
    }
    return false;
}

static void
serve_http(struct listener *l, int c)
{
    char buf[65536];
    size_t n = 0;
    size_t want = 0;
    char *body = NULL;
    for (;;) {
        ssize_t r = read(c, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0) {
            return;
        }
        n += (size_t)r;
        buf[n] = '\0';
        if (body == NULL && (body = strstr(buf, "\r\n\r\n")) != NULL) {
            body += 4;
            char *cl = ci_find(buf, "Content-Length:");
            want = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
        }
        if (body != NULL && (size_t)(buf + n - body) >= want) {
            break;
        }
    }
    pthread_mutex_lock(&l->lock);
    memcpy(l->data, buf, n + 1);
    l->len = n;
    pthread_mutex_unlock(&l->lock);
    if (l->mode == MODE_SILENT) {
        /* Hold the connection open until the client gives up. */
        while (read(c, buf, sizeof(buf)) > 0) {
        }
        return;
    }
    send_str(c, l->mode == MODE_HTTP_OK
                    ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n"
                    : "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n");
}

static void
append_capped(char *dst, size_t size, const char *src)
{
    size_t have = strlen(dst);
    size_t n = strlen(src);
    if (have + n + 1 > size) {
        n = size - have - 1;
    }
    memcpy(dst + have, src, n);
    dst[have + n] = '\0';
}

static void
serve_smtp(struct listener *l, int c)
{
    char line[2048];
    char mail[65536];
    size_t mlen = 0;
    send_str(c, "220 test ESMTP\r\n");
    while (read_line(c, line, sizeof(line))) {
        if (strncasecmp(line, "EHLO", 4) == 0 ||
            strncasecmp(line, "HELO", 4) == 0) {
            send_str(c, "250 test\r\n");
        } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
            pthread_mutex_lock(&l->lock);
            append_capped(l->from, sizeof(l->from), line + 10);
            pthread_mutex_unlock(&l->lock);
            send_str(c, "250 OK\r\n");
        } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
            pthread_mutex_lock(&l->lock);
            append_capped(l->rcpts, sizeof(l->rcpts), line + 8);
            append_capped(l->rcpts, sizeof(l->rcpts), ";");
            pthread_mutex_unlock(&l->lock);
            send_str(c, "250 OK\r\n");
        } else if (strcasecmp(line, "DATA") == 0) {
            send_str(c, "354 go ahead\r\n");
            while (read_line(c, line, sizeof(line)) && strcmp(line, ".") != 0) {
                size_t n = strlen(line);
                if (mlen + n + 2 < sizeof(mail)) {
                    memcpy(mail + mlen, line, n);
                    memcpy(mail + mlen + n, "\r\n", 2);
                    mlen += n + 2;
                }
            }
            mail[mlen] = '\0';
            pthread_mutex_lock(&l->lock);
            memcpy(l->data, mail, mlen + 1);
            l->len = mlen;
            pthread_mutex_unlock(&l->lock);
            send_str(c, "250 queued\r\n");
        } else if (strcasecmp(line, "QUIT") == 0) {
            send_str(c, "221 bye\r\n");
            return;
        } else {
            send_str(c, "502 unknown\r\n");
        }
    }
}

static void *
listener_main(void *p)
{
    struct listener *l = p;
    for (int i = 0; i < l->max_conns; i++) {
        int c = accept(l->fd, NULL, NULL);
        if (c < 0) {
            break;
        }
        pthread_mutex_lock(&l->lock);
        l->conns++;
        pthread_mutex_unlock(&l->lock);
        if (l->mode == MODE_SMTP) {
            serve_smtp(l, c);
        } else {
            serve_http(l, c);
        }
        close(c);
    }
    return NULL;
}

static struct listener *
listener_start(enum mode mode, int max_conns)
{
    struct listener *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->mode = mode;
    l->max_conns = max_conns;
    pthread_mutex_init(&l->lock, NULL);
    l->fd = listen_any(&l->port);
    assert_int_equal(pthread_create(&l->thread, NULL, listener_main, l), 0);
    return l;
}

static void
listener_stop(struct listener *l)
{
    /* Unblocks accept() in the thread. */
    shutdown(l->fd, SHUT_RDWR);
    pthread_join(l->thread, NULL);
    close(l->fd);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
test_notify_webhook_posts_json(void **state)
{
    (void)state;
    struct cfr_err err;
    struct listener *l = listener_start(MODE_HTTP_OK, 1);
    struct cfr_clock *clock = cfr_clock_manual_new(T0);
    char url[128], when[40], want[1024];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", l->port);
    struct cfr_notify_opts o = {.webhook_url = url, .timeout_ms = 5000};
    struct cfr_notify *n = cfr_notify_new(&o, clock, &err);
    assert_non_null(n);
    struct cfr_notify_field f[] = {
        {"identity", "coffer://tenant/acme/role/agent"},
        {"note", "quote\" back\\ nl\n \xc3\xa9 bad\xff"},
    };
    struct cfr_notify_event ev = {
        .event = "vault.lockout", .tenant = "acme", .fields = f, .n_fields = 2};
    assert_int_equal(cfr_notify_post(n, &ev, &err), 0);
    assert_int_equal(cfr_notify_flush(n, 10000, &err), 0);

    cfr_clock_format(T0, when, (int)sizeof(when));
    snprintf(want, sizeof(want),
             "{\"event\":\"vault.lockout\",\"tenant\":\"acme\",\"time\":\"%s\","
             "\"fields\":{\"identity\":\"coffer://tenant/acme/role/agent\","
             "\"note\":\"quote\\\" back\\\\ nl\\n \xc3\xa9 bad\\ufffd\"}}",
             when);
    pthread_mutex_lock(&l->lock);
    assert_true(strncmp(l->data, "POST /hook HTTP/1.1\r\n", 21) == 0);
    assert_non_null(ci_find(l->data, "Content-Type: application/json"));
    char *body = strstr(l->data, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, want);
    pthread_mutex_unlock(&l->lock);

    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.posted, 1);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.attempts, 1);
    cfr_notify_free(n, 1000);
    listener_stop(l);
    cfr_clock_free(clock);
}

static void
test_notify_smtp_delivers_mail(void **state)
{
    (void)state;
    struct cfr_err err;
    struct listener *l = listener_start(MODE_SMTP, 1);
    char url[128];
    const char *to[] = {"sec@acme.example", "ops@acme.example"};

    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", l->port);
    struct cfr_notify_opts o = {.smtp_url = url,
                                .smtp_from = "vault@coffer.example",
                                .timeout_ms = 5000};
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    struct cfr_notify_field f[] = {{"mailbox", "INBOX\r\n.\r\nQUIT"}};
    struct cfr_notify_event ev = {.event = "vault.purge",
                                  .tenant = "acme",
                                  .fields = f,
                                  .n_fields = 1,
                                  .mail_to = to,
                                  .n_mail_to = 2};
    assert_int_equal(cfr_notify_post(n, &ev, &err), 0);
    assert_int_equal(cfr_notify_flush(n, 10000, &err), 0);

    pthread_mutex_lock(&l->lock);
    assert_string_equal(l->from, "<vault@coffer.example>");
    assert_string_equal(l->rcpts, "<sec@acme.example>;<ops@acme.example>;");
    assert_non_null(strstr(l->data, "Subject: [coffer] vault.purge acme\r\n"));
    assert_non_null(strstr(l->data, "From: vault@coffer.example\r\n"));
    assert_non_null(
        strstr(l->data, "To: sec@acme.example, ops@acme.example\r\n"));
    assert_non_null(strstr(l->data, "\r\n\r\nevent: vault.purge\r\n"));
    /* The hostile value stays on one line: no early end of DATA. */
    assert_non_null(
        strstr(l->data, "mailbox: \"INBOX\\x0d\\n.\\x0d\\nQUIT\"\r\n"));
    pthread_mutex_unlock(&l->lock);
    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.delivered, 1);
    cfr_notify_free(n, 1000);
    listener_stop(l);
}

static void
test_notify_unreachable_target_bounded_retries(void **state)
{
    (void)state;
    struct cfr_err err;
    int port;
    int fd = listen_any(&port);
    close(fd); /* nothing listens there now: connection refused */
    char url[128];
    snprintf(url, sizeof(url), "http://user:hunter2@127.0.0.1:%d/x", port);
    struct cfr_notify_opts o = {.webhook_url = url,
                                .timeout_ms = 1000,
                                .retries = 2,
                                .retry_delay_ms = 20};
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    struct cfr_notify_event ev = {.event = "vault.revoke", .tenant = "acme"};
    int64_t t = mono_ms();
    assert_int_equal(cfr_notify_post(n, &ev, &err), 0);
    assert_int_equal(cfr_notify_flush(n, 10000, &err), CFR_EUNAVAIL);
    assert_true(mono_ms() - t < 5000);
    /* The error names the target without its credentials. */
    assert_null(strstr(err.msg, "hunter2"));
    assert_non_null(strstr(err.msg, "127.0.0.1"));
    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.attempts, 3);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.delivered, 0);
    /* The failure is reported once; the next flush is clean. */
    assert_int_equal(cfr_notify_flush(n, 1000, &err), 0);
    cfr_notify_free(n, 0);
}

static void
test_notify_http_error_is_retried_then_fails(void **state)
{
    (void)state;
    struct cfr_err err;
    struct listener *l = listener_start(MODE_HTTP_500, 10);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/h", l->port);
    struct cfr_notify_opts o = {.webhook_url = url,
                                .timeout_ms = 2000,
                                .retries = 1,
                                .retry_delay_ms = 10};
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    struct cfr_notify_event ev = {.event = "vault.hold", .tenant = "acme"};
    assert_int_equal(cfr_notify_post(n, &ev, &err), 0);
    assert_int_equal(cfr_notify_flush(n, 10000, &err), CFR_EUNAVAIL);
    pthread_mutex_lock(&l->lock);
    assert_int_equal(l->conns, 2);
    pthread_mutex_unlock(&l->lock);
    cfr_notify_free(n, 0);
    listener_stop(l);
}

static void
test_notify_slow_target_never_blocks_post(void **state)
{
    (void)state;
    struct cfr_err err;
    struct listener *l = listener_start(MODE_SILENT, 10);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", l->port);
    struct cfr_notify_opts o = {
        .webhook_url = url, .timeout_ms = 30000, .retries = 0, .queue_max = 2};
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    struct cfr_notify_event ev = {.event = "vault.lockout"};
    int64_t t = mono_ms();
    int accepted = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        int rc = cfr_notify_post(n, &ev, &err);
        if (rc == 0) {
            accepted++;
        } else {
            assert_int_equal(rc, CFR_ELIMIT);
            refused++;
        }
        /* Let the worker pick up the first event. */
        if (i == 0) {
            usleep(100000);
        }
    }
    /* One in flight, two queued, the rest refused, all without waiting. */
    assert_int_equal(accepted, 3);
    assert_int_equal(refused, 3);
    assert_true(mono_ms() - t < 1000);
    /* A flush with a short timeout reports the timeout. */
    assert_int_equal(cfr_notify_flush(n, 200, &err), CFR_ELIMIT);
    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(st.queued, 2);
    /* Shutting down aborts the hung transfer at once. */
    t = mono_ms();
    cfr_notify_free(n, 100);
    assert_true(mono_ms() - t < 3000);
    listener_stop(l);
}

static void
test_notify_refuses_secrets_and_injection(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_notify_opts o = {.webhook_url = "https://hooks.example/x"};
    struct cfr_notify *n = cfr_notify_new(&o, NULL, &err);
    assert_non_null(n);
    static const char *const secretish[] = {"password",   "totp_secret",
                                            "api_token",  "key",
                                            "master_key", "passphrase"};
    for (size_t i = 0; i < sizeof(secretish) / sizeof(secretish[0]); i++) {
        struct cfr_notify_field f = {secretish[i], "x"};
        struct cfr_notify_event ev = {
            .event = "vault.x", .fields = &f, .n_fields = 1};
        assert_int_equal(cfr_notify_post(n, &ev, &err), CFR_EINVAL);
    }
    struct cfr_notify_field ok = {"key_id", "k1"};
    struct cfr_notify_event ev = {
        .event = "vault.x", .fields = &ok, .n_fields = 1};
    /* Mail without an SMTP server, bad names and addresses: refused. */
    const char *to[] = {"a@b.example"};
    ev.mail_to = to;
    ev.n_mail_to = 1;
    assert_int_equal(cfr_notify_post(n, &ev, &err), CFR_EINVAL);
    ev.n_mail_to = 0;
    ev.event = "Vault Lockout\r\nBcc: x@y";
    assert_int_equal(cfr_notify_post(n, &ev, &err), CFR_EINVAL);
    ev.event = "vault.x";
    ev.tenant = "acme\r\n";
    assert_int_equal(cfr_notify_post(n, &ev, &err), CFR_EINVAL);
    ev.tenant = "acme";
    ev.webhook_url = "file:///etc/passwd";
    assert_int_equal(cfr_notify_post(n, &ev, &err), CFR_EINVAL);
    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.posted, 0);
    cfr_notify_free(n, 0);

    struct cfr_notify_opts bad = {.webhook_url = "gopher://x/"};
    assert_null(cfr_notify_new(&bad, NULL, &err));
    const char *bad_to[] = {"a@b\r\nRCPT TO:<evil@x>"};
    struct cfr_notify_opts bad2 = {.smtp_url = "smtp://127.0.0.1:1",
                                   .smtp_from = "v@x.example",
                                   .mail_to = bad_to,
                                   .n_mail_to = 1};
    assert_null(cfr_notify_new(&bad2, NULL, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    /* No target at all is an error, not a silent drop. */
    struct cfr_notify *none = cfr_notify_new(NULL, NULL, &err);
    assert_non_null(none);
    struct cfr_notify_event ev2 = {.event = "vault.x"};
    assert_int_equal(cfr_notify_post(none, &ev2, &err), CFR_EINVAL);
    cfr_notify_free(none, 0);
}

static void
test_notify_allocation_failures_clean_up(void **state)
{
    (void)state;
    struct cfr_err err;
    const char *to[] = {"a@b.example"};
    struct cfr_notify_opts o = {.webhook_url = "http://127.0.0.1:9/x",
                                .smtp_url = "smtp://127.0.0.1:9",
                                .smtp_from = "v@x.example",
                                .smtp_password = "pw",
                                .smtp_user = "u",
                                .mail_to = to,
                                .n_mail_to = 1,
                                .queue_max = 1000};
    struct cfr_notify *n = NULL;
    int made_at = 0;
    for (int nth = 1; nth < 100 && n == NULL; nth++) {
        cfr_mem_fail_after(nth);
        n = cfr_notify_new(&o, NULL, &err);
        cfr_mem_fail_after(0);
        if (n == NULL) {
            assert_int_equal(err.code, CFR_ENOMEM);
        } else {
            made_at = nth;
        }
    }
    assert_true(made_at > 1);
    struct cfr_notify_field f = {"mailbox", "INBOX"};
    struct cfr_notify_event ev = {
        .event = "vault.x", .tenant = "acme", .fields = &f, .n_fields = 1};
    int posted_at = 0;
    for (int nth = 1; nth < 100 && posted_at == 0; nth++) {
        cfr_mem_fail_after(nth);
        int rc = cfr_notify_post(n, &ev, &err);
        cfr_mem_fail_after(0);
        if (rc == 0) {
            posted_at = nth;
        } else {
            assert_int_equal(rc, CFR_ENOMEM);
        }
    }
    assert_true(posted_at > 1);
    struct cfr_notify_stats st;
    cfr_notify_stats(n, &st);
    assert_int_equal(st.posted, 1);
    cfr_notify_free(n, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_webhook_posts_json),
        cmocka_unit_test(test_notify_smtp_delivers_mail),
        cmocka_unit_test(test_notify_unreachable_target_bounded_retries),
        cmocka_unit_test(test_notify_http_error_is_retried_then_fails),
        cmocka_unit_test(test_notify_slow_target_never_blocks_post),
        cmocka_unit_test(test_notify_refuses_secrets_and_injection),
        cmocka_unit_test(test_notify_allocation_failures_clean_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
