/*
 * notify.c - security notifications over libcurl: a bounded FIFO queue of
 * pre-rendered messages and one worker thread that delivers them.
 *
 * Each event is rendered at post time (JSON body for the webhook, header
 * block and text for mail), so the worker needs no caller memory and the
 * time in the message is the time of the event, not of the delivery.
 *
 * Invariants:
 *  1. The queue never holds more than queue_max items (post refuses).
 *  2. Items are finished in posting order; done_seq counts finished items,
 *     so "everything posted before seq s is finished" is done_seq >= s.
 *  3. Every transfer has a connect and total timeout, and stops once the
 *     notifier is shutting down (curl's progress callback, which curl
 *     calls at least about once a second), so neither a dead nor a slow
 *     target can hold the worker or cfr_notify_free for long.
 *  4. Logs and errors name a target only as scheme://host:port: never
 *     user-info, query strings or SMTP credentials.
 */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h> /* the only transport: HTTP(S) and SMTP(S) */

#include "buf.h"    /* struct cfr_buf: rendered messages, capped */
#include "json.h"   /* cfr_json_quote: webhook bodies */
#include "log.h"    /* cfr_log, cfr_log_quote */
#include "mem.h"    /* cfr_malloc and friends */
#include "secret.h" /* cfr_wipe, cfr_crypto_random (Message-ID) */

#define MSG_CAP (256u * 1024u) /* the largest rendered message */
#define LOG_EV  "notify"

struct item {
    struct item *next;
    uint64_t seq;
    char *event;       /* for logs */
    char *webhook_url; /* NULL: no webhook delivery */
    char **mail_to;    /* NULL: no mail delivery */
    size_t n_mail_to;
    uint8_t *json; /* webhook body */
    size_t json_len;
    uint8_t *mail; /* full RFC 5322 message, CRLF lines */
    size_t mail_len;
};

struct cfr_notify {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* queue changed, item finished, or stopping */
    pthread_t worker;
    bool worker_started;
    bool stop; /* abandon everything now */
    struct cfr_clock *clock;

    char *webhook_url;
    char **mail_to;
    size_t n_mail_to;
    char *smtp_url;
    char *smtp_from;
    char *smtp_user;
    char *smtp_password;
    char *ca_file;
    char *subject_prefix;
    char *source;
    long timeout_ms;
    unsigned retries;
    int64_t retry_delay_ms;
    size_t queue_max;

    struct item *head, *tail;
    size_t queued;
    uint64_t next_seq; /* seq of the next posted item */
    uint64_t done_seq; /* items finished (delivered or given up) */
    bool busy;         /* the worker holds an item */
    struct cfr_notify_stats st;
    struct cfr_err first_failure; /* since the last flush */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void
curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- helpers ---------------------------------------------------------- */

static void
strv_free(char **v, size_t n)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cfr_free(v[i]);
    }
    cfr_free(v);
}

static char **
strv_dup(const char *const *v, size_t n)
{
    char **out = cfr_calloc(n == 0 ? 1 : n, sizeof(*out));
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = cfr_strdup(v[i]);
        if (out[i] == NULL) {
            strv_free(out, n);
            return NULL;
        }
    }
    return out;
}

static void
item_free(struct item *it)
{
    if (it == NULL) {
        return;
    }
    cfr_free(it->event);
    cfr_free(it->webhook_url);
    strv_free(it->mail_to, it->n_mail_to);
    cfr_free(it->json);
    cfr_free(it->mail);
    cfr_free(it);
}

static bool
name_ok(const char *s, size_t max)
{
    size_t n = 0;
    if (s == NULL || s[0] == '\0') {
        return false;
    }
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-')) {
            return false;
        }
    }
    return n <= max;
}

/* Field names that would carry a secret in clear: refused outright. */
static bool
secret_like(const char *key)
{
    static const char *const bad[] = {"password", "passwd",     "secret",
                                      "token",    "passphrase", "totp",
                                      "key",      "credential"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = strstr(key, bad[i]);
        if (p == NULL) {
            continue;
        }
        /* "key" only as a whole word: "key_id" is fine, "keyring" too. */
        if (strcmp(bad[i], "key") == 0) {
            size_t n = strlen(key);
            bool whole = strcmp(key, "key") == 0 ||
                         (n > 4 && strcmp(key + n - 4, "_key") == 0) ||
                         strstr(key, "key_material") != NULL;
            if (!whole) {
                continue;
            }
        }
        return true;
    }
    return false;
}

/* Mail addresses go into headers and SMTP commands: keep them plain. */
static bool
address_ok(const char *a)
{
    const char *at;
    if (a == NULL || a[0] == '\0' || strlen(a) > 254) {
        return false;
    }
    for (const char *p = a; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == ',' ||
            c == '"' || c == '(' || c == ')' || c == ';' || c == '\\') {
            return false;
        }
    }
    at = strchr(a, '@');
    return at != NULL && at != a && at[1] != '\0' &&
           strchr(at + 1, '@') == NULL;
}

/* Checks url's scheme against allowed ("http,https"); CURLU parses it. */
static bool
url_scheme_ok(const char *url, const char *const *allowed, size_t n_allowed)
{
    bool ok = false;
    char *scheme = NULL;
    CURLU *u = curl_url();
    if (u == NULL || url == NULL || strlen(url) >= CFR_NOTIFY_URL_MAX) {
        goto out;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        goto out;
    }
    for (size_t i = 0; i < n_allowed; i++) {
        if (strcmp(scheme, allowed[i]) == 0) {
            ok = true;
        }
    }
out:
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

/* scheme://host:port of url, for logs: nothing that could be a secret. */
static void
url_safe(const char *url, char *out, size_t out_size)
{
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLU *u = curl_url();
    snprintf(out, out_size, "(unparsable url)");
    if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
        snprintf(out, out_size, "%s://%s:%s", scheme, host,
                 port != NULL ? port : "?");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

static const char *const http_schemes[] = {"http", "https"};
static const char *const smtp_schemes[] = {"smtp", "smtps"};

/* ---- rendering -------------------------------------------------------- */

static int
buf_str(struct cfr_buf *b, const char *s, struct cfr_err *err)
{
    return cfr_buf_append(b, s, strlen(s), err);
}

static int
render_json(const struct cfr_notify *n, const struct cfr_notify_event *ev,
            const char *when, struct cfr_buf *b, struct cfr_err *err)
{
    int rc;
    if ((rc = buf_str(b, "{\"event\":", err)) != 0 ||
        (rc = cfr_json_quote(b, ev->event, err)) != 0 ||
        (rc = buf_str(b, ",\"tenant\":", err)) != 0 ||
        (rc = cfr_json_quote(b, ev->tenant != NULL ? ev->tenant : "", err)) !=
            0 ||
        (rc = buf_str(b, ",\"time\":", err)) != 0 ||
        (rc = cfr_json_quote(b, when, err)) != 0) {
        return rc;
    }
    if (n->source != NULL) {
        if ((rc = buf_str(b, ",\"source\":", err)) != 0 ||
            (rc = cfr_json_quote(b, n->source, err)) != 0) {
            return rc;
        }
    }
    if ((rc = buf_str(b, ",\"fields\":{", err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < ev->n_fields; i++) {
        if ((i > 0 && (rc = cfr_buf_append_u8(b, ',', err)) != 0) ||
            (rc = cfr_json_quote(b, ev->fields[i].key, err)) != 0 ||
            (rc = cfr_buf_append_u8(b, ':', err)) != 0 ||
            (rc = cfr_json_quote(b, ev->fields[i].value, err)) != 0) {
            return rc;
        }
    }
    return buf_str(b, "}}", err);
}

/* A header-safe line: "name: value\r\n" where value has no CR or LF. */
static int
mail_line(struct cfr_buf *b, const char *name, const char *value,
          struct cfr_err *err)
{
    int rc;
    if ((rc = buf_str(b, name, err)) != 0 || (rc = buf_str(b, ": ", err)) ||
        (rc = buf_str(b, value, err)) != 0) {
        return rc;
    }
    return buf_str(b, "\r\n", err);
}

static int
render_mail(const struct cfr_notify *n, const struct cfr_notify_event *ev,
            const char *when, char *const *to, size_t n_to, struct cfr_buf *b,
            struct cfr_err *err)
{
    int rc = 0;
    char date[64], line[CFR_NOTIFY_VALUE_MAX + 64];
    char quoted[CFR_NOTIFY_VALUE_MAX * 4 + 8];
    char subject[512], msgid[80];
    uint8_t rnd[16];
    char rnd_hex[33];
    struct tm tm;
    time_t secs = (time_t)(cfr_clock_now_ms(n->clock) / 1000);

    gmtime_r(&secs, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    cfr_crypto_random(rnd, sizeof(rnd));
    cfr_hex_encode(rnd, sizeof(rnd), rnd_hex);
    snprintf(msgid, sizeof(msgid), "<%s@coffer.invalid>", rnd_hex);
    /* event and tenant were checked against [a-z0-9._-]: header-safe. */
    snprintf(subject, sizeof(subject), "%s%s%s%s", n->subject_prefix, ev->event,
             ev->tenant != NULL && ev->tenant[0] != '\0' ? " " : "",
             ev->tenant != NULL ? ev->tenant : "");
    if ((rc = mail_line(b, "Date", date, err)) != 0 ||
        (rc = mail_line(b, "From", n->smtp_from, err)) != 0 ||
        (rc = buf_str(b, "To: ", err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n_to; i++) {
        if ((i > 0 && (rc = buf_str(b, ", ", err)) != 0) ||
            (rc = buf_str(b, to[i], err)) != 0) {
            goto out;
        }
    }
    if ((rc = buf_str(b, "\r\n", err)) != 0 ||
        (rc = mail_line(b, "Subject", subject, err)) != 0 ||
        (rc = mail_line(b, "Message-ID", msgid, err)) != 0 ||
        (rc = mail_line(b, "MIME-Version", "1.0", err)) != 0 ||
        (rc = mail_line(b, "Content-Type", "text/plain; charset=utf-8", err)) !=
            0 ||
        (rc = mail_line(b, "Auto-Submitted", "auto-generated", err)) != 0 ||
        (rc = buf_str(b, "\r\n", err)) != 0) {
        goto out;
    }
    /*
     * Body lines are "key: value" with values quoted by cfr_log_quote
     * rules: one line each, ASCII, never starting with a dot.
     */
    if ((rc = mail_line(b, "event", ev->event, err)) != 0 ||
        (rc = mail_line(b, "tenant",
                        cfr_log_quote(ev->tenant != NULL ? ev->tenant : "",
                                      quoted, sizeof(quoted)),
                        err)) != 0 ||
        (rc = mail_line(b, "time", when, err)) != 0) {
        goto out;
    }
    if (n->source != NULL &&
        (rc = mail_line(b, "source",
                        cfr_log_quote(n->source, quoted, sizeof(quoted)),
                        err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < ev->n_fields; i++) {
        snprintf(line, sizeof(line), "%s", ev->fields[i].key);
        if ((rc = mail_line(
                 b, line,
                 cfr_log_quote(ev->fields[i].value, quoted, sizeof(quoted)),
                 err)) != 0) {
            goto out;
        }
    }
out:
    return rc;
}

/* ---- delivery --------------------------------------------------------- */

struct upload {
    const uint8_t *p;
    size_t len;
    size_t off;
};

static size_t
upload_read(char *dst, size_t size, size_t nmemb, void *ctx)
{
    struct upload *u = ctx;
    size_t room = size * nmemb;
    size_t n = u->len - u->off;
    if (n > room) {
        n = room;
    }
    memcpy(dst, u->p + u->off, n);
    u->off += n;
    return n;
}

static size_t
discard_body(char *p, size_t size, size_t nmemb, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * nmemb;
}

static int
progress_stop(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut,
              curl_off_t un)
{
    struct cfr_notify *n = ctx;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    pthread_mutex_lock(&n->lock);
    bool stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop ? 1 : 0;
}

/* One transfer attempt. Returns 0 or CFR_EUNAVAIL with err set. */
static int
attempt(struct cfr_notify *n, const struct item *it, bool mail,
        struct cfr_err *err)
{
    int rc = 0;
    CURLcode cc;
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL, *rcpt = NULL;
    struct upload up = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    char safe[256];
    const char *url = mail ? n->smtp_url : it->webhook_url;

    url_safe(url, safe, sizeof(safe));
    if (h == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "notify: curl handle");
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, n->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, n->timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_stop);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, n);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
    if (n->ca_file != NULL) {
        curl_easy_setopt(h, CURLOPT_CAINFO, n->ca_file);
    }
    if (!mail) {
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        if (hdrs == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "notify: headers");
            goto out;
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "coffer-notify/1");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)it->json);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)it->json_len);
    } else {
        char addr[300];
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        snprintf(addr, sizeof(addr), "<%s>", n->smtp_from);
        curl_easy_setopt(h, CURLOPT_MAIL_FROM, addr);
        for (size_t i = 0; i < it->n_mail_to; i++) {
            snprintf(addr, sizeof(addr), "<%s>", it->mail_to[i]);
            struct curl_slist *t = curl_slist_append(rcpt, addr);
            if (t == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "notify: recipients");
                goto out;
            }
            rcpt = t;
        }
        curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
        if (n->smtp_user != NULL) {
            curl_easy_setopt(h, CURLOPT_USERNAME, n->smtp_user);
            curl_easy_setopt(h, CURLOPT_PASSWORD,
                             n->smtp_password != NULL ? n->smtp_password : "");
            /* Never send a password over a plain connection. */
            curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
        }
        up.p = it->mail;
        up.len = it->mail_len;
        curl_easy_setopt(h, CURLOPT_READFUNCTION, upload_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &up);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up.len);
    }
    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        /*
         * curl's error buffer can hold server text but not our
         * credentials; it is still quoted, and the URL is the safe form.
         */
        char q[160];
        rc = CFR_ERR(
            err, CFR_EUNAVAIL, "notify: %s: %s", safe,
            cfr_log_quote(errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc),
                          q, sizeof(q)));
        goto out;
    }
out:
    curl_slist_free_all(hdrs);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(h);
    return rc;
}

/* Waits ms unless stopping; returns true when the notifier is stopping. */
static bool
sleep_or_stop(struct cfr_notify *n, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&n->lock);
    while (!n->stop) {
        if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    bool stop = n->stop;
    pthread_mutex_unlock(&n->lock);
    return stop;
}

/* Delivers to one target with bounded retries; counts the outcome. */
static void
deliver(struct cfr_notify *n, const struct item *it, bool mail)
{
    struct cfr_err err;
    int64_t delay = n->retry_delay_ms;
    int rc = CFR_EUNAVAIL;

    cfr_err_clear(&err);
    for (unsigned a = 0; a <= n->retries; a++) {
        if (a > 0) {
            if (sleep_or_stop(n, delay)) {
                break;
            }
            delay = delay > INT64_MAX / 2 ? delay : delay * 2;
        }
        pthread_mutex_lock(&n->lock);
        n->st.attempts++;
        pthread_mutex_unlock(&n->lock);
        rc = attempt(n, it, mail, &err);
        if (rc == 0) {
            break;
        }
    }
    if (rc == 0) {
        pthread_mutex_lock(&n->lock);
        n->st.delivered++;
        pthread_mutex_unlock(&n->lock);
        return;
    }
    if (err.code == 0) {
        CFR_ERR(&err, CFR_EUNAVAIL, "notify: stopped before delivery");
    }
    cfr_log(CFR_LOG_ERROR, LOG_EV ".failed", "event=%s via=%s", it->event,
            mail ? "mail" : "webhook");
    cfr_log_err(CFR_LOG_ERROR, LOG_EV ".failed", &err);
    pthread_mutex_lock(&n->lock);
    n->st.failed++;
    if (n->first_failure.code == 0) {
        n->first_failure = err;
    }
    pthread_mutex_unlock(&n->lock);
}

static void *
worker_main(void *arg)
{
    struct cfr_notify *n = arg;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (!n->stop && n->head == NULL) {
            pthread_cond_wait(&n->cond, &n->lock);
        }
        if (n->stop) {
            break;
        }
        struct item *it = n->head;
        n->head = it->next;
        if (n->head == NULL) {
            n->tail = NULL;
        }
        n->queued--;
        n->busy = true;
        pthread_mutex_unlock(&n->lock);

        if (it->webhook_url != NULL) {
            deliver(n, it, false);
        }
        if (it->mail_to != NULL) {
            deliver(n, it, true);
        }

        pthread_mutex_lock(&n->lock);
        n->busy = false;
        n->done_seq = it->seq;
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->lock);
        item_free(it);
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* ---- public ----------------------------------------------------------- */

static int
dup_opt(const char *s, char **out, struct cfr_err *err)
{
    *out = NULL;
    if (s == NULL) {
        return 0;
    }
    *out = cfr_strdup(s);
    return *out == NULL ? CFR_ERR(err, CFR_ENOMEM, "notify: out of memory") : 0;
}

struct cfr_notify *
cfr_notify_new(const struct cfr_notify_opts *opts, struct cfr_clock *clock,
               struct cfr_err *err)
{
    struct cfr_notify *n = NULL;
    struct cfr_notify_opts o = {0};
    pthread_condattr_t ca;
    int rc = 0;

    if (opts != NULL) {
        o = *opts;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "notify: curl_global_init failed");
        goto out;
    }
    if (o.webhook_url != NULL &&
        !url_scheme_ok(o.webhook_url, http_schemes, 2)) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: webhook must be http(s)");
        goto out;
    }
    if (o.smtp_url != NULL && !url_scheme_ok(o.smtp_url, smtp_schemes, 2)) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: mail needs smtp(s)://");
        goto out;
    }
    if (o.smtp_from != NULL && !address_ok(o.smtp_from)) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: bad from address");
        goto out;
    }
    if (o.n_mail_to > CFR_NOTIFY_RCPT_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: too many recipients");
        goto out;
    }
    for (size_t i = 0; i < o.n_mail_to; i++) {
        if (!address_ok(o.mail_to[i])) {
            rc = CFR_ERR(err, CFR_EINVAL, "notify: bad recipient address");
            goto out;
        }
    }
    if (o.n_mail_to > 0 && (o.smtp_url == NULL || o.smtp_from == NULL)) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: mail needs smtp_url and from");
        goto out;
    }
    if (o.subject_prefix != NULL && strpbrk(o.subject_prefix, "\r\n") != NULL) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: bad subject prefix");
        goto out;
    }
    if (o.timeout_ms < 0 || o.retry_delay_ms < 0 || o.retries > 100) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: bad timeouts or retries");
        goto out;
    }
    n = cfr_calloc(1, sizeof(*n));
    if (n == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
        goto out;
    }
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    n->clock = clock != NULL ? clock : cfr_clock_system();
    n->timeout_ms =
        o.timeout_ms != 0 ? o.timeout_ms : CFR_NOTIFY_DEFAULT_TIMEOUT_MS;
    n->retries = opts != NULL ? o.retries : CFR_NOTIFY_DEFAULT_RETRIES;
    n->retry_delay_ms = o.retry_delay_ms != 0
                            ? o.retry_delay_ms
                            : CFR_NOTIFY_DEFAULT_RETRY_DELAY_MS;
    n->queue_max =
        o.queue_max != 0 ? o.queue_max : CFR_NOTIFY_DEFAULT_QUEUE_MAX;
    n->next_seq = 1;
    if ((rc = dup_opt(o.webhook_url, &n->webhook_url, err)) != 0 ||
        (rc = dup_opt(o.smtp_url, &n->smtp_url, err)) != 0 ||
        (rc = dup_opt(o.smtp_from, &n->smtp_from, err)) != 0 ||
        (rc = dup_opt(o.smtp_user, &n->smtp_user, err)) != 0 ||
        (rc = dup_opt(o.smtp_password, &n->smtp_password, err)) != 0 ||
        (rc = dup_opt(o.ca_file, &n->ca_file, err)) != 0 ||
        (rc = dup_opt(o.subject_prefix != NULL ? o.subject_prefix : "[coffer] ",
                      &n->subject_prefix, err)) != 0 ||
        (rc = dup_opt(o.source, &n->source, err)) != 0) {
        goto out;
    }
    if (o.n_mail_to > 0) {
        n->mail_to = strv_dup(o.mail_to, o.n_mail_to);
        if (n->mail_to == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
            goto out;
        }
        n->n_mail_to = o.n_mail_to;
    }
    if (pthread_create(&n->worker, NULL, worker_main, n) != 0) {
        rc = CFR_ERR(err, CFR_EIO, "notify: cannot start worker thread");
        goto out;
    }
    n->worker_started = true;
out:
    if (rc != 0 && n != NULL) {
        cfr_notify_free(n, 0);
        n = NULL;
    }
    return n;
}

void
cfr_notify_free(struct cfr_notify *n, int64_t drain_ms)
{
    if (n == NULL) {
        return;
    }
    if (n->worker_started) {
        struct cfr_err err;
        if (drain_ms > 0 && cfr_notify_flush(n, drain_ms, &err) == CFR_ELIMIT) {
            cfr_log_err(CFR_LOG_WARN, LOG_EV ".drain_timeout", &err);
        }
        pthread_mutex_lock(&n->lock);
        n->stop = true;
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->lock);
        pthread_join(n->worker, NULL);
    }
    if (n->queued > 0) {
        cfr_log(CFR_LOG_ERROR, LOG_EV ".dropped_at_exit", "events=%zu",
                n->queued);
    }
    while (n->head != NULL) {
        struct item *it = n->head;
        n->head = it->next;
        item_free(it);
    }
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    cfr_free(n->webhook_url);
    strv_free(n->mail_to, n->n_mail_to);
    cfr_free(n->smtp_url);
    cfr_free(n->smtp_from);
    cfr_free(n->smtp_user);
    if (n->smtp_password != NULL) {
        cfr_wipe(n->smtp_password, strlen(n->smtp_password));
    }
    cfr_free(n->smtp_password);
    cfr_free(n->ca_file);
    cfr_free(n->subject_prefix);
    cfr_free(n->source);
    cfr_free(n);
}

static int
check_event(const struct cfr_notify_event *ev, struct cfr_err *err)
{
    if (ev == NULL || !name_ok(ev->event, 64)) {
        return CFR_ERR(err, CFR_EINVAL, "notify: bad event name");
    }
    if (ev->tenant != NULL && ev->tenant[0] != '\0' &&
        !name_ok(ev->tenant, 64)) {
        return CFR_ERR(err, CFR_EINVAL, "notify: bad tenant name");
    }
    if (ev->n_fields > CFR_NOTIFY_FIELDS_MAX ||
        (ev->n_fields > 0 && ev->fields == NULL)) {
        return CFR_ERR(err, CFR_EINVAL, "notify: too many fields");
    }
    for (size_t i = 0; i < ev->n_fields; i++) {
        const struct cfr_notify_field *f = &ev->fields[i];
        if (!name_ok(f->key, 64) || f->value == NULL ||
            strlen(f->value) > CFR_NOTIFY_VALUE_MAX) {
            return CFR_ERR(err, CFR_EINVAL, "notify: bad field %zu", i);
        }
        if (secret_like(f->key)) {
            return CFR_ERR(err, CFR_EINVAL,
                           "notify: field %s looks like a secret", f->key);
        }
    }
    if (ev->n_mail_to > CFR_NOTIFY_RCPT_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "notify: too many recipients");
    }
    for (size_t i = 0; i < ev->n_mail_to; i++) {
        if (!address_ok(ev->mail_to[i])) {
            return CFR_ERR(err, CFR_EINVAL, "notify: bad recipient address");
        }
    }
    if (ev->webhook_url != NULL &&
        !url_scheme_ok(ev->webhook_url, http_schemes, 2)) {
        return CFR_ERR(err, CFR_EINVAL, "notify: webhook must be http(s)");
    }
    return 0;
}

int
cfr_notify_post(struct cfr_notify *n, const struct cfr_notify_event *ev,
                struct cfr_err *err)
{
    int rc;
    struct item *it = NULL;
    struct cfr_buf json, mail;
    char when[40];
    const char *url;
    const char *const *to;
    size_t n_to;

    cfr_buf_init(&json, MSG_CAP);
    cfr_buf_init(&mail, MSG_CAP);
    if ((rc = check_event(ev, err)) != 0) {
        goto out;
    }
    url = ev->webhook_url;
    to = ev->mail_to;
    n_to = ev->n_mail_to;
    if (!ev->only_own_targets) {
        if (url == NULL) {
            url = n->webhook_url;
        }
        if (n_to == 0) {
            to = (const char *const *)n->mail_to;
            n_to = n->n_mail_to;
        }
    }
    if (url == NULL && n_to == 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: event %s has no target",
                     ev->event);
        goto out;
    }
    if (n_to > 0 && (n->smtp_url == NULL || n->smtp_from == NULL)) {
        rc = CFR_ERR(err, CFR_EINVAL, "notify: no SMTP server configured");
        goto out;
    }
    it = cfr_calloc(1, sizeof(*it));
    if (it == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
        goto out;
    }
    cfr_clock_format(cfr_clock_now_ms(n->clock), when, (int)sizeof(when));
    it->event = cfr_strdup(ev->event);
    if (it->event == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
        goto out;
    }
    if (url != NULL) {
        if ((rc = render_json(n, ev, when, &json, err)) != 0 ||
            (rc = cfr_buf_append_u8(&json, '\0', err)) != 0) {
            goto out;
        }
        it->json = cfr_buf_steal(&json, &it->json_len);
        it->json_len--; /* the NUL is for curl's benefit only */
        it->webhook_url = cfr_strdup(url);
        if (it->webhook_url == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
            goto out;
        }
    }
    if (n_to > 0) {
        it->mail_to = strv_dup(to, n_to);
        if (it->mail_to == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
            goto out;
        }
        it->n_mail_to = n_to;
        if ((rc = render_mail(n, ev, when, it->mail_to, n_to, &mail, err)) !=
            0) {
            goto out;
        }
        it->mail = cfr_buf_steal(&mail, &it->mail_len);
    }
    pthread_mutex_lock(&n->lock);
    if (n->stop || n->queued >= n->queue_max) {
        n->st.dropped++;
        pthread_mutex_unlock(&n->lock);
        cfr_log(CFR_LOG_ERROR, LOG_EV ".dropped", "event=%s reason=%s",
                ev->event, n->stop ? "stopping" : "queue_full");
        rc = CFR_ERR(err, CFR_ELIMIT, "notify: queue full, event dropped");
        goto out;
    }
    it->seq = n->next_seq++;
    if (n->tail != NULL) {
        n->tail->next = it;
    } else {
        n->head = it;
    }
    n->tail = it;
    n->queued++;
    n->st.posted++;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    it = NULL;
out:
    item_free(it);
    cfr_buf_fini(&json);
    cfr_buf_fini(&mail);
    return rc;
}

int
cfr_notify_flush(struct cfr_notify *n, int64_t timeout_ms, struct cfr_err *err)
{
    int rc = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&n->lock);
    uint64_t target = n->next_seq - 1;
    while (n->done_seq < target && !n->stop) {
        if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    if (n->done_seq < target) {
        rc = CFR_ERR(err, CFR_ELIMIT, "notify: flush timed out, %zu queued",
                     n->queued);
    } else if (n->first_failure.code != 0) {
        if (err != NULL) {
            *err = n->first_failure;
        }
        rc = n->first_failure.code;
        cfr_err_clear(&n->first_failure);
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

void
cfr_notify_stats(struct cfr_notify *n, struct cfr_notify_stats *stats_r)
{
    pthread_mutex_lock(&n->lock);
    *stats_r = n->st;
    stats_r->queued = n->queued;
    pthread_mutex_unlock(&n->lock);
}

bool
cfr_notify_has_defaults(const struct cfr_notify *n)
{
    /* Set at creation and never changed: no lock needed. */
    return n->webhook_url != NULL || n->n_mail_to > 0;
}
