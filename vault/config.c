/*
 * config.c - reads and checks coffer-vault's configuration file.
 *
 * Invariants:
 *  1. Every setting is checked for type and range, and any name not listed
 *     here is refused, so a typo never falls back to a default silently.
 *  2. Each error names the file, the line and the setting (core/cfg.c).
 *  3. test_clock_offset is refused unless test_mode: moving the clock that
 *     retention reads must never be possible in production.
 *  4. On failure nothing is left allocated in *cfg_r.
 */
#include "config.h"

#include <string.h> /* memset, strrchr */

#include "cfg.h"       /* libconfig access with checked values */
#include "clock.h"     /* CFR_MS_PER_DAY */
#include "ratelimit.h" /* CFR_RATELIMIT_FAILURES_MAX */

#define TOP_KEYS                                                               \
    "listen", "port_file", "data_dir", "region", "log_level", "cache_size",    \
        "workers", "lease_ttl", "approval_window", "shutdown_grace", "tls",    \
        "limits", "retention", "audit", "stats", "notify", "test_clock_offset"

static const char *const top_keys[] = {TOP_KEYS, NULL};
static const char *const tls_keys[] = {"cert", "key", "client_ca", NULL};
static const char *const limit_keys[] = {
    "max_msg",        "max_calls", "get_batch", "max_failures",
    "failure_window", "lockout",   NULL};
static const char *const retention_keys[] = {"window", "schedule", "tombstones",
                                             NULL};
static const char *const audit_keys[] = {"keep", NULL};
static const char *const stats_keys[] = {"file", "interval", NULL};
static const char *const notify_keys[] = {
    "webhook",   "mail_to",       "smtp_url", "smtp_from",
    "smtp_user", "smtp_password", "ca_file",  NULL};

static int opt_string(const struct cfr_cfg *cfg, const char *path,
                      const char **out, struct cfr_err *err);

static int
read_notify(struct vault_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    size_t n = 0;
    int rc;
    if ((rc = opt_string(cfg, "notify.webhook", &c->notify_webhook, err)) !=
            0 ||
        (rc = opt_string(cfg, "notify.smtp_url", &c->notify_smtp_url, err)) !=
            0 ||
        (rc = opt_string(cfg, "notify.smtp_from", &c->notify_smtp_from, err)) !=
            0 ||
        (rc = opt_string(cfg, "notify.smtp_user", &c->notify_smtp_user, err)) !=
            0 ||
        (rc = opt_string(cfg, "notify.smtp_password", &c->notify_smtp_password,
                         err)) != 0 ||
        (rc = opt_string(cfg, "notify.ca_file", &c->notify_ca_file, err)) !=
            0 ||
        (rc = cfr_cfg_count(cfg, "notify.mail_to", &n, err)) != 0) {
        return rc;
    }
    if (n > sizeof(c->notify_mail_to) / sizeof(c->notify_mail_to[0])) {
        return cfr_cfg_fail(cfg, "notify.mail_to", err, "at most 8 addresses");
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = cfr_cfg_string_at(cfg, "notify.mail_to", i,
                                    &c->notify_mail_to[i], err)) != 0) {
            return rc;
        }
    }
    c->notify_n_mail_to = n;
    if (n > 0 && (c->notify_smtp_url == NULL || c->notify_smtp_from == NULL)) {
        return cfr_cfg_fail(cfg, "notify.mail_to", err,
                            "needs notify.smtp_url and notify.smtp_from");
    }
    return 0;
}

/* Optional string: NULL when absent. */
static int
opt_string(const struct cfr_cfg *cfg, const char *path, const char **out,
           struct cfr_err *err)
{
    *out = NULL;
    if (!cfr_cfg_has(cfg, path)) {
        return 0;
    }
    return cfr_cfg_string(cfg, path, NULL, out, err);
}

static int
check_listen(const struct cfr_cfg *cfg, const char *listen, struct cfr_err *err)
{
    /* One address only: "host:port" or "[v6]:port", port 0..65535. */
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || colon[1] == '\0') {
        return cfr_cfg_fail(cfg, "listen", err,
                            "\"%s\" is not host:port (one port only)", listen);
    }
    size_t host_len = (size_t)(colon - listen);
    bool bracketed = listen[0] == '[' && listen[host_len - 1] == ']';
    for (size_t i = 0; i < host_len; i++) {
        char ch = listen[i];
        bool bad = ch == ',' || ch == ' ' || ch == '\t' ||
                   (ch == ':' && !bracketed) ||
                   ((ch == '[' || ch == ']') && !bracketed);
        if (bad) {
            return cfr_cfg_fail(cfg, "listen", err,
                                "\"%s\" is not one host:port (write IPv6 "
                                "addresses as [addr]:port)",
                                listen);
        }
    }
    unsigned long port = 0;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            return cfr_cfg_fail(cfg, "listen", err,
                                "\"%s\": port is not a number in 0..65535",
                                listen);
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535) {
        return cfr_cfg_fail(cfg, "listen", err,
                            "\"%s\": port is not a number in 0..65535", listen);
    }
    return 0;
}

static int
read_all(struct vault_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    int rc;
    int64_t v;
    uint64_t u;
    const int64_t workers_def = 4, calls_def = 64, failures_def = 10;

    if ((rc = cfr_cfg_check_keys(cfg, "", top_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "tls", tls_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "limits", limit_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "retention", retention_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "audit", audit_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "stats", stats_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "notify", notify_keys, err)) != 0 ||
        (rc = read_notify(c, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_cfg_string(cfg, "listen", NULL, &c->listen, err)) != 0 ||
        (rc = check_listen(cfg, c->listen, err)) != 0 ||
        (rc = opt_string(cfg, "port_file", &c->port_file, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "data_dir", NULL, &c->data_dir, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "region", "default", &c->region, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "log_level", "info", &c->log_level, err)) !=
            0 ||
        (rc = cfr_cfg_string(cfg, "tls.cert", NULL, &c->tls_cert, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.key", NULL, &c->tls_key, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.client_ca", NULL, &c->tls_client_ca,
                             err)) != 0 ||
        (rc = opt_string(cfg, "stats.file", &c->stats_file, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_cfg_size(cfg, "cache_size", "256M", 1u << 20,
                           (uint64_t)1 << 40, &c->cache_bytes, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_cfg_int(cfg, "workers", &workers_def, 1, 256, &v, err)) !=
        0) {
        goto out;
    }
    c->workers = (unsigned)v;
    if ((rc = cfr_cfg_int(cfg, "limits.max_calls", &calls_def, 1, 4096, &v,
                          err)) != 0) {
        goto out;
    }
    c->max_calls = (unsigned)v;
    /*
     * A PutObjects message may carry a whole 64 MiB object plus its
     * envelope, so the ceiling sits a little above it.
     */
    if ((rc = cfr_cfg_size(cfg, "limits.max_msg", "72M", 64u << 10, 128u << 20,
                           &u, err)) != 0) {
        goto out;
    }
    c->max_msg = (size_t)u;
    if ((rc = cfr_cfg_size(cfg, "limits.get_batch", "4M", 64u << 10, 64u << 20,
                           &u, err)) != 0) {
        goto out;
    }
    c->get_batch_bytes = (size_t)u;
    if ((rc = cfr_cfg_int(cfg, "limits.max_failures", &failures_def, 1,
                          CFR_RATELIMIT_FAILURES_MAX, &v, err)) != 0) {
        goto out;
    }
    c->max_failures = (unsigned)v;
    if ((rc = cfr_cfg_duration_ms(cfg, "limits.failure_window", "15m", 1000,
                                  CFR_MS_PER_DAY, &c->failure_window_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "limits.lockout", "15m", 1000,
                                  CFR_MS_PER_DAY, &c->lockout_ms, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_cfg_duration_ms(cfg, "retention.window", "30d",
                                  CFR_MS_PER_HOUR, 3650 * CFR_MS_PER_DAY,
                                  &c->retention_ms, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "retention.schedule", "1h", 0,
                                  30 * CFR_MS_PER_DAY, &c->schedule_ms, err)) !=
            0 ||
        (rc = cfr_cfg_duration_ms(cfg, "retention.tombstones", "90d",
                                  CFR_MS_PER_DAY, 3650 * CFR_MS_PER_DAY,
                                  &c->tombstone_keep_ms, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "audit.keep", "30d", CFR_MS_PER_DAY,
                                  3650 * CFR_MS_PER_DAY, &c->audit_keep_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "approval_window", "1h", 60000,
                                  7 * CFR_MS_PER_DAY, &c->approval_window_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "lease_ttl", "12h", 1000,
                                  7 * CFR_MS_PER_DAY, &c->lease_ttl_ms, err)) !=
            0 ||
        (rc = cfr_cfg_duration_ms(cfg, "stats.interval", "30s", 100,
                                  CFR_MS_PER_DAY, &c->stats_interval_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "shutdown_grace", "10s", 0,
                                  10 * 60 * CFR_MS_PER_SEC,
                                  &c->shutdown_grace_ms, err)) != 0) {
        goto out;
    }
    if (cfr_cfg_has(cfg, "test_clock_offset")) {
        if (!c->test_mode) {
            rc = cfr_cfg_fail(cfg, "test_clock_offset", err,
                              "allowed only with --test-mode");
            goto out;
        }
        if ((rc = cfr_cfg_duration_ms(cfg, "test_clock_offset", NULL, 0,
                                      3650 * CFR_MS_PER_DAY,
                                      &c->test_clock_offset_ms, err)) != 0) {
            goto out;
        }
    }
out:
    return rc;
}

static int
finish_load(struct vault_config *c, bool test_mode, struct cfr_err *err)
{
    int rc;
    c->test_mode = test_mode;
    if ((rc = read_all(c, err)) != 0) {
        vault_config_fini(c);
    }
    return rc;
}

int
vault_config_load(const char *path, bool test_mode, struct vault_config *cfg_r,
                  struct cfr_err *err)
{
    memset(cfg_r, 0, sizeof(*cfg_r));
    cfg_r->cfg = cfr_cfg_load_file(path, err);
    if (cfg_r->cfg == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(cfg_r, test_mode, err);
}

int
vault_config_parse(const char *text, bool test_mode, struct vault_config *cfg_r,
                   struct cfr_err *err)
{
    memset(cfg_r, 0, sizeof(*cfg_r));
    cfg_r->cfg = cfr_cfg_load_string(text, err);
    if (cfg_r->cfg == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(cfg_r, test_mode, err);
}

void
vault_config_fini(struct vault_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    cfr_cfg_free(cfg->cfg);
    memset(cfg, 0, sizeof(*cfg));
}
