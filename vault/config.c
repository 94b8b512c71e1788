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

#include <stdio.h>  /* snprintf */
#include <string.h> /* memset, strcmp, strlen, strrchr */

#include "cfg.h"       /* libconfig access with checked values */
#include "clock.h"     /* CFR_MS_PER_DAY */
#include "ratelimit.h" /* CFR_RATELIMIT_FAILURES_MAX */

#define TOP_KEYS                                                               \
    "listen", "port_file", "data_dir", "region", "log_level", "cache_size",    \
        "workers", "lease_ttl", "approval_window", "shutdown_grace", "tls",    \
        "limits", "retention", "audit", "stats", "notify",                     \
        "test_clock_offset", "name", "peers", "sync", "scrub"

static const char *const top_keys[] = {TOP_KEYS, NULL};
static const char *const tls_keys[] = {"cert", "key", "client_ca", NULL};
static const char *const limit_keys[] = {
    "max_msg",        "max_calls", "get_batch", "max_failures",
    "failure_window", "lockout",   NULL};
static const char *const retention_keys[] = {"window", "schedule", "tombstones",
                                             NULL};
static const char *const audit_keys[] = {"keep", NULL};
static const char *const stats_keys[] = {"file", "interval", NULL};
static const char *const peer_keys[] = {"name", "address", "region", "tls_name",
                                        NULL};
static const char *const sync_keys[] = {
    "interval", "bandwidth", "timeout", "cert", "key", "ca", NULL};
static const char *const scrub_keys[] = {"interval", NULL};
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

/*
 * One "host:port" or "[v6]:port" at path, port min_port..65535: the listen
 * address (port 0 picks a free one) and each peer's address.
 */
static int
check_hostport(const struct cfr_cfg *cfg, const char *path, const char *value,
               unsigned long min_port, struct cfr_err *err)
{
    const char *colon = strrchr(value, ':');
    if (colon == NULL || colon == value || colon[1] == '\0') {
        return cfr_cfg_fail(cfg, path, err,
                            "\"%s\" is not host:port (one port only)", value);
    }
    size_t host_len = (size_t)(colon - value);
    bool bracketed = value[0] == '[' && value[host_len - 1] == ']';
    for (size_t i = 0; i < host_len; i++) {
        char ch = value[i];
        bool bad = ch == ',' || ch == ' ' || ch == '\t' ||
                   (ch == ':' && !bracketed) ||
                   ((ch == '[' || ch == ']') && !bracketed);
        if (bad) {
            return cfr_cfg_fail(cfg, path, err,
                                "\"%s\" is not one host:port (write IPv6 "
                                "addresses as [addr]:port)",
                                value);
        }
    }
    unsigned long port = 0;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            return cfr_cfg_fail(cfg, path, err,
                                "\"%s\": port is not a number in %lu..65535",
                                value, min_port);
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535 || port < min_port) {
        return cfr_cfg_fail(cfg, path, err,
                            "\"%s\": port is not a number in %lu..65535", value,
                            min_port);
    }
    return 0;
}

/*
 * A vault or region name: what coffer://vault/<name> and the registry
 * use. A vault name (ident) also may not start with '.', '-' or '_', as
 * the identity rule requires of the URI's last segment.
 */
static int
check_name(const struct cfr_cfg *cfg, const char *path, const char *value,
           size_t max, bool ident, struct cfr_err *err)
{
    size_t n = strlen(value);
    if (n >= max) {
        return cfr_cfg_fail(cfg, path, err, "\"%s\" is longer than %zu bytes",
                            value, max - 1);
    }
    if (ident && (value[0] == '.' || value[0] == '-' || value[0] == '_')) {
        return cfr_cfg_fail(cfg, path, err,
                            "\"%s\" may not start with '.', '-' or '_'", value);
    }
    for (size_t i = 0; i < n; i++) {
        char ch = value[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            return cfr_cfg_fail(cfg, path, err,
                                "\"%s\" may hold only a-z, 0-9, '.', '_' "
                                "and '-'",
                                value);
        }
    }
    return 0;
}

/*
 * peers = ( { name; address; region; tls_name; }, ... ): each needs the
 * three first, names and addresses are unique, none is this vault, and a
 * vault with peers has a name of its own (its certificate's
 * coffer://vault/<name>, which the peers list in turn).
 */
static int
read_peers(struct vault_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    char p[32], pn[48], pa[48], pr[48], pt[48];
    size_t n = 0;
    int rc;

    if ((rc = opt_string(cfg, "name", &c->name, err)) != 0 ||
        (c->name != NULL &&
         (rc = check_name(cfg, "name", c->name, VAULT_SYNC_NAME_MAX, true,
                          err)) != 0) ||
        (rc = cfr_cfg_count(cfg, "peers", &n, err)) != 0) {
        return rc;
    }
    if (n > VAULT_SYNC_PEERS_MAX) {
        return cfr_cfg_fail(cfg, "peers", err, "%zu peers; at most %d", n,
                            VAULT_SYNC_PEERS_MAX);
    }
    if (n > 0 && c->name == NULL) {
        return cfr_cfg_fail(cfg, "peers", err,
                            "need this vault's own name (setting name, as in "
                            "its certificate's coffer://vault/NAME)");
    }
    for (size_t i = 0; i < n; i++) {
        struct vault_sync_peer *v = &c->peers[i];
        snprintf(p, sizeof(p), "peers.[%zu]", i);
        snprintf(pn, sizeof(pn), "%s.name", p);
        snprintf(pa, sizeof(pa), "%s.address", p);
        snprintf(pr, sizeof(pr), "%s.region", p);
        snprintf(pt, sizeof(pt), "%s.tls_name", p);
        if ((rc = cfr_cfg_check_keys(cfg, p, peer_keys, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, pn, NULL, &v->name, err)) != 0 ||
            (rc = check_name(cfg, pn, v->name, VAULT_SYNC_NAME_MAX, true,
                             err)) != 0 ||
            (rc = cfr_cfg_string(cfg, pa, NULL, &v->address, err)) != 0 ||
            (rc = check_hostport(cfg, pa, v->address, 1, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, pr, NULL, &v->region, err)) != 0 ||
            (rc = check_name(cfg, pr, v->region, VAULT_SYNC_REGION_MAX, false,
                             err)) != 0 ||
            (rc = opt_string(cfg, pt, &v->tls_name, err)) != 0) {
            return rc;
        }
        if (strcmp(v->name, c->name) == 0) {
            return cfr_cfg_fail(cfg, pn, err,
                                "\"%s\" is this vault's own name: a vault "
                                "does not sync with itself",
                                v->name);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v->name, c->peers[j].name) == 0) {
                return cfr_cfg_fail(cfg, pn, err, "\"%s\" names two peers",
                                    v->name);
            }
            if (strcmp(v->address, c->peers[j].address) == 0) {
                return cfr_cfg_fail(
                    cfg, pa, err, "\"%s\" is listed for two peers", v->address);
            }
        }
    }
    c->n_peers = n;
    return 0;
}

/* sync = { ... } and scrub = { ... }; TLS files default to tls.*. */
static int
read_sync(struct vault_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    int rc;
    if ((rc = cfr_cfg_duration_ms(cfg, "sync.interval", "5m", 0,
                                  30 * CFR_MS_PER_DAY, &c->sync_interval_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_size(cfg, "sync.bandwidth", "0", 0, (uint64_t)1 << 40,
                           &c->sync_bandwidth, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "sync.timeout", "60s", CFR_MS_PER_SEC,
                                  CFR_MS_PER_HOUR, &c->sync_timeout_ms, err)) !=
            0 ||
        (rc = cfr_cfg_string(cfg, "sync.cert", c->tls_cert, &c->sync_tls_cert,
                             err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "sync.key", c->tls_key, &c->sync_tls_key,
                             err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "sync.ca", c->tls_client_ca, &c->sync_tls_ca,
                             err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "scrub.interval", "7d", 0,
                                  365 * CFR_MS_PER_DAY, &c->scrub_interval_ms,
                                  err)) != 0) {
        return rc;
    }
    /* A bandwidth below 1 KiB/s would stall a round on one object. */
    if (c->sync_bandwidth != 0 && c->sync_bandwidth < 1024) {
        return cfr_cfg_fail(cfg, "sync.bandwidth", err,
                            "%llu bytes/s is below 1K (\"0\" = unlimited)",
                            (unsigned long long)c->sync_bandwidth);
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
        (rc = cfr_cfg_check_keys(cfg, "sync", sync_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "scrub", scrub_keys, err)) != 0 ||
        (rc = read_notify(c, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_cfg_string(cfg, "listen", NULL, &c->listen, err)) != 0 ||
        (rc = check_hostport(cfg, "listen", c->listen, 0, err)) != 0 ||
        (rc = opt_string(cfg, "port_file", &c->port_file, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "data_dir", NULL, &c->data_dir, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "region", "default", &c->region, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "log_level", "info", &c->log_level, err)) !=
            0 ||
        (rc = cfr_cfg_string(cfg, "tls.cert", NULL, &c->tls_cert, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.key", NULL, &c->tls_key, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.client_ca", NULL, &c->tls_client_ca,
                             err)) != 0 ||
        (rc = opt_string(cfg, "stats.file", &c->stats_file, err)) != 0 ||
        (rc = check_name(cfg, "region", c->region, VAULT_SYNC_REGION_MAX, false,
                         err)) != 0 ||
        (rc = read_peers(c, err)) != 0 || (rc = read_sync(c, err)) != 0) {
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
