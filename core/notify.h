/*
 * notify.h - security notifications: webhook POSTs and SMTP mail through
 * libcurl, delivered from a bounded queue by one worker thread.
 *
 * The vault reports lockouts, revocations, retention and tenant changes,
 * purges, holds and new agent identities here; the restore tool reuses it.
 * A webhook gets one POST of a JSON object per event:
 *
 *   {"event":"vault.lockout","tenant":"acme","time":"2026-11-23T08:30:00Z",
 *    "fields":{"identity":"coffer://tenant/acme/role/agent"}}
 *
 * and a mail recipient gets a plain-text mail with the same content.
 *
 * Invariants:
 *  1. cfr_notify_post never blocks on the network: it copies the event
 *     into a queue of at most queue_max events, or refuses it (CFR_ELIMIT,
 *     counted in stats.dropped) when the queue is full.
 *  2. Delivery of one event to one target takes at most
 *     (retries + 1) * (timeout_ms + retry_delay_ms) (plus the doubled
 *     delays); then it is reported failed, logged and counted, never
 *     retried again.
 *  3. Field names that suggest a secret are refused at post time
 *     (containing password, passwd, secret, token, passphrase, totp or
 *     credential; or "key", "*_key", "*key_material*", while "key_id" is
 *     fine): notifications leave the machine in clear and must never
 *     carry secrets. SMTP credentials and URL user-info are never logged,
 *     and a password is only ever sent over TLS (CURLUSESSL_ALL).
 *  4. Header values (subject, addresses) never contain CR or LF; JSON
 *     strings are escaped, so an event value cannot add fields or headers.
 *  5. Only http/https reach webhooks and only smtp/smtps reach mail; curl
 *     follows no redirects.
 *
 * Thread safety: cfr_notify_post, cfr_notify_flush and cfr_notify_stats may
 * be called from many threads; cfr_notify_free from one, after the others.
 */
#ifndef CFR_NOTIFY_H
#define CFR_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h" /* struct cfr_clock: the event time */
#include "err.h"   /* struct cfr_err */

#define CFR_NOTIFY_FIELDS_MAX 32
#define CFR_NOTIFY_VALUE_MAX  1024 /* bytes of one field value */
#define CFR_NOTIFY_RCPT_MAX   16   /* mail recipients of one event */
#define CFR_NOTIFY_URL_MAX    1024

/* Defaults used when a field of struct cfr_notify_opts is 0. */
#define CFR_NOTIFY_DEFAULT_TIMEOUT_MS     10000
#define CFR_NOTIFY_DEFAULT_RETRIES        3
#define CFR_NOTIFY_DEFAULT_RETRY_DELAY_MS 1000
#define CFR_NOTIFY_DEFAULT_QUEUE_MAX      1024

struct cfr_notify;

struct cfr_notify_opts {
    /* Default targets, used for events that name none; all may be NULL. */
    const char *webhook_url;    /* http:// or https:// */
    const char *const *mail_to; /* addresses */
    size_t n_mail_to;
    /* Mail transport; needed only when some event goes to mail. */
    const char *smtp_url;       /* smtp://host:port or smtps:// */
    const char *smtp_from;      /* envelope and From: address */
    const char *smtp_user;      /* optional AUTH */
    const char *smtp_password;  /* optional; copied, never logged */
    const char *ca_file;        /* optional trust store for TLS */
    const char *subject_prefix; /* "[coffer] " when NULL */
    const char *source;         /* "host" field of every event, opt. */
    long timeout_ms;            /* per attempt, connect included */
    unsigned retries;           /* extra attempts after the first, used as
                                   given (0: none); the default applies
                                   only when opts is NULL */
    int64_t retry_delay_ms;     /* first back-off, doubled each time */
    size_t queue_max;           /* events waiting, at most */
};

struct cfr_notify_field {
    const char *key;   /* [a-z0-9_.-], 1..64 bytes */
    const char *value; /* any UTF-8 text up to CFR_NOTIFY_VALUE_MAX */
};

struct cfr_notify_event {
    const char *event;  /* stable event name, e.g. "vault.lockout" */
    const char *tenant; /* may be NULL or "" for vault-wide events */
    const struct cfr_notify_field *fields;
    size_t n_fields;
    /* Per-event targets (a tenant's own); NULL/0 use the defaults. */
    const char *webhook_url;
    const char *const *mail_to;
    size_t n_mail_to;
    /* True: deliver only to the targets above, never to the defaults. */
    bool only_own_targets;
};

struct cfr_notify_stats {
    uint64_t posted;    /* events accepted into the queue */
    uint64_t dropped;   /* events refused: queue full */
    uint64_t delivered; /* target deliveries that succeeded */
    uint64_t failed;    /* target deliveries that gave up */
    uint64_t attempts;  /* transfer attempts, retries included */
    size_t queued;      /* events waiting now */
};

/*
 * Returns owned, with its worker thread running, or NULL with err set
 * (CFR_EINVAL for a bad URL scheme or option). Strings are copied; clock is
 * borrowed (NULL: the system clock).
 */
struct cfr_notify *cfr_notify_new(const struct cfr_notify_opts *opts,
                                  struct cfr_clock *clock, struct cfr_err *err);

/*
 * Stops the worker and frees; accepts NULL. Waits at most drain_ms for the
 * queue to empty (a delivery in progress finishes its current attempt);
 * events still queued after that are dropped and logged.
 */
void cfr_notify_free(struct cfr_notify *n, int64_t drain_ms);

/*
 * Queues ev (copied). Returns 0, CFR_EINVAL (bad event or field name, a
 * secret-like field, no target at all), or CFR_ELIMIT when the queue is
 * full. Never blocks on delivery.
 */
int cfr_notify_post(struct cfr_notify *n, const struct cfr_notify_event *ev,
                    struct cfr_err *err);

/*
 * Waits until every event posted before the call was delivered or given up
 * on, at most timeout_ms. Returns 0 when all of them were delivered,
 * CFR_EUNAVAIL (err names the first failed target, without credentials)
 * when some failed since the previous flush, or CFR_ELIMIT on timeout.
 * The synchronous path for tests and command-line tools.
 */
int cfr_notify_flush(struct cfr_notify *n, int64_t timeout_ms,
                     struct cfr_err *err);

void cfr_notify_stats(struct cfr_notify *n, struct cfr_notify_stats *stats_r);

/* True when the notifier has a default webhook or default recipients. */
bool cfr_notify_has_defaults(const struct cfr_notify *n);

#endif /* CFR_NOTIFY_H */
