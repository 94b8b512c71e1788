/*
 * config.c - reads and checks coffer-agent's configuration (config.h).
 *
 * Invariants:
 *  1. Every setting is checked for type and range, and any name not listed
 *     here is refused (at the top level and inside every group and list
 *     element), so a typo never falls back to a default silently.
 *  2. Each error names the file, the line and the setting (core/cfg.c).
 *  3. A configuration that would back up nothing or could never succeed
 *     is refused here, before any lock, key or vault is touched: no
 *     mailbox source, no vault, a quorum above the vault count, a relative
 *     path, the same mailbox name or vault address twice.
 *  4. On failure nothing is left allocated in *cfg_r.
 *  5. Unless allow_single_region is set, a tenant's copies are provably in
 *     two regions: every vault names its region and at least two distinct
 *     ones are listed. The names are only claims until each vault confirms
 *     its own at connect time (uplink.c checks Health), and a run counts
 *     only when its commits span two of them (also uplink.c): a quorum met
 *     inside one region is not yet off-site.
 */
#include "config.h"

#include <stdio.h>  /* snprintf */
#include <string.h> /* memset, strcmp, strrchr */

#include "backup.h"  /* AGENT_BACKUP_IO_*, AGENT_BACKUP_WORKERS_MAX */
#include "cfg.h"     /* libconfig access with checked values */
#include "clock.h"   /* CFR_MS_PER_* */
#include "mailbox.h" /* agent_mailbox_check_pattern */
#include "mem.h"     /* cfr_calloc, cfr_free */
#include "snap.h"    /* CFR_SNAP_MAILBOX_MAX, CFR_SNAP_HOST_MAX */

static const char *const top_keys[] = {"tenant",
                                       "key_file",
                                       "passphrase_file",
                                       "state_dir",
                                       "lock_file",
                                       "log_level",
                                       "host",
                                       "tmp_dir",
                                       "mailboxes",
                                       "mailbox_pattern",
                                       "vaults",
                                       "tls",
                                       "quorum",
                                       "workers",
                                       "cpu_nice",
                                       "io_class",
                                       "io_level",
                                       "mass_deletion",
                                       "timeouts",
                                       "state_cache",
                                       "allow_single_region",
                                       NULL};
static const char *const mailbox_keys[] = {"name", "root", NULL};
static const char *const vault_keys[] = {"address", "name", "tls_name",
                                         "region", NULL};
static const char *const tls_keys[] = {"ca", "cert", "key", NULL};
static const char *const mass_keys[] = {"percent", "min_files", NULL};
static const char *const timeout_keys[] = {"call", "stream", "stall", "lease",
                                           NULL};

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

/* A required absolute path. */
static int
abs_path(const struct cfr_cfg *cfg, const char *path, const char *def,
         const char **out, struct cfr_err *err)
{
    int rc = cfr_cfg_string(cfg, path, def, out, err);
    if (rc != 0) {
        return rc;
    }
    if ((*out)[0] != '/') {
        return cfr_cfg_fail(cfg, path, err, "\"%s\" is not an absolute path",
                            *out);
    }
    if (strlen(*out) >= AGENT_CONFIG_PATH_MAX - 16) {
        return cfr_cfg_fail(cfg, path, err, "path too long");
    }
    return 0;
}

/* Tenant names follow coffer-admin's rule: 1..63 of a-z 0-9 . _ -. */
static int
check_tenant(const struct cfr_cfg *cfg, const char *t, struct cfr_err *err)
{
    size_t n = strlen(t);
    bool ok = n >= 1 && n <= 63 && t[0] != '.' && t[0] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        char c = t[i];
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
             c == '_' || c == '-';
    }
    if (!ok) {
        return cfr_cfg_fail(cfg, "tenant", err,
                            "\"%s\" is not a tenant name (1 to 63 of a-z 0-9 "
                            ". _ -, not starting with . or -)",
                            t);
    }
    return 0;
}

/* "host:port" or "[v6]:port" with a port in 1..65535. */
static bool
address_ok(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (colon == NULL || colon == a || colon[1] == '\0') {
        return false;
    }
    size_t host_len = (size_t)(colon - a);
    bool bracketed = a[0] == '[' && a[host_len - 1] == ']';
    for (size_t i = 0; i < host_len; i++) {
        char c = a[i];
        if (c == ' ' || c == ',' || c == '\t' || c == '/' ||
            (c == ':' && !bracketed)) {
            return false;
        }
    }
    unsigned long port = 0;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            return false;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    return port >= 1 && port <= 65535;
}

/*
 * Region names follow coffer-admin's tenant regions and the vault's own
 * region setting: 1..31 of a-z 0-9 . _ -, compared byte for byte with what
 * the vault reports, so a case or spelling variant is a mismatch there and
 * better refused here.
 */
static int
check_region(const struct cfr_cfg *cfg, const char *path, const char *r,
             struct cfr_err *err)
{
    size_t n = strlen(r);
    if (n > AGENT_CONFIG_REGION_MAX) {
        return cfr_cfg_fail(cfg, path, err, "\"%s\" is longer than %d bytes", r,
                            AGENT_CONFIG_REGION_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        char ch = r[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            return cfr_cfg_fail(cfg, path, err,
                                "\"%s\" may hold only a-z, 0-9, '.', '_' "
                                "and '-'",
                                r);
        }
    }
    return 0;
}

/*
 * Invariant 5 at load: what can be decided from the file alone. Runs after
 * every vault entry was read, so a typo inside an entry is reported as such
 * rather than as a placement problem.
 */
static int
check_placement(struct agent_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    const bool no = false;
    const char *first = NULL, *other = NULL;
    char pr[80];
    int rc;

    if ((rc = cfr_cfg_bool(cfg, "allow_single_region", &no,
                           &c->allow_single_region, err)) != 0) {
        return rc;
    }
    if (c->allow_single_region) {
        return 0;
    }
    for (size_t i = 0; i < c->n_vaults; i++) {
        const char *r = c->vaults[i].region;
        if (r == NULL) {
            snprintf(pr, sizeof(pr), "vaults.[%zu].region", i);
            return cfr_cfg_fail(cfg, pr, err,
                                "needed to prove the tenant is kept in two "
                                "regions; set it, or allow_single_region = "
                                "true");
        }
        if (first == NULL) {
            first = r;
        } else if (other == NULL && strcmp(r, first) != 0) {
            other = r;
        }
    }
    if (other == NULL) {
        return cfr_cfg_fail(cfg, "vaults", err,
                            "every vault is in region \"%s\": the tenant "
                            "must be kept in at least two regions; add a "
                            "vault in another region, or set "
                            "allow_single_region = true",
                            first);
    }
    return 0;
}

static int
read_mailboxes(struct agent_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    char p[64], pn[80], pr[80];
    size_t n = 0;
    int rc;

    if ((rc = cfr_cfg_count(cfg, "mailboxes", &n, err)) != 0 ||
        (rc = opt_string(cfg, "mailbox_pattern", &c->mailbox_pattern, err)) !=
            0) {
        return rc;
    }
    if (c->mailbox_pattern != NULL) {
        struct cfr_err perr;
        cfr_err_clear(&perr);
        if (agent_mailbox_check_pattern(c->mailbox_pattern, &perr) != 0) {
            return cfr_cfg_fail(cfg, "mailbox_pattern", err, "%s", perr.msg);
        }
    }
    if (n == 0 && c->mailbox_pattern == NULL) {
        return CFR_ERR(err, CFR_ECONFIG,
                       "%s: nothing to back up: set mailboxes and/or "
                       "mailbox_pattern",
                       "configuration");
    }
    if (n > AGENT_CONFIG_MAILBOXES_MAX) {
        return cfr_cfg_fail(cfg, "mailboxes", err,
                            "%zu entries; at most %d (use mailbox_pattern)", n,
                            AGENT_CONFIG_MAILBOXES_MAX);
    }
    if (n == 0) {
        return 0;
    }
    c->mailboxes = cfr_calloc(n, sizeof(*c->mailboxes));
    if (c->mailboxes == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory reading mailboxes");
    }
    for (size_t i = 0; i < n; i++) {
        struct agent_config_mailbox *m = &c->mailboxes[i];
        snprintf(p, sizeof(p), "mailboxes.[%zu]", i);
        snprintf(pn, sizeof(pn), "%s.name", p);
        snprintf(pr, sizeof(pr), "%s.root", p);
        if ((rc = cfr_cfg_check_keys(cfg, p, mailbox_keys, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, pn, NULL, &m->name, err)) != 0 ||
            (rc = abs_path(cfg, pr, NULL, &m->root, err)) != 0) {
            return rc;
        }
        if (strlen(m->name) > CFR_SNAP_MAILBOX_MAX) {
            return cfr_cfg_fail(cfg, pn, err, "longer than %d bytes",
                                CFR_SNAP_MAILBOX_MAX);
        }
        for (const char *s = m->name; *s != '\0'; s++) {
            if ((unsigned char)*s < 0x20 || *s == 0x7f) {
                return cfr_cfg_fail(cfg, pn, err, "has a control character");
            }
        }
        /* Configuration-sized: quadratic is fine. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m->name, c->mailboxes[j].name) == 0) {
                return cfr_cfg_fail(cfg, pn, err,
                                    "\"%s\" is listed twice (also entry %zu)",
                                    m->name, j + 1);
            }
        }
        c->n_mailboxes = i + 1;
    }
    return 0;
}

static int
read_vaults(struct agent_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    char p[64], pa[80], pn[80], pt[80], pr[80];
    size_t n = 0;
    int rc;

    if ((rc = cfr_cfg_count(cfg, "vaults", &n, err)) != 0) {
        return rc;
    }
    if (n == 0) {
        return CFR_ERR(err, CFR_ECONFIG,
                       "configuration: vaults: at least one vault is needed");
    }
    if (n > AGENT_UPLINK_VAULTS_MAX) {
        return cfr_cfg_fail(cfg, "vaults", err, "%zu vaults; at most %d", n,
                            AGENT_UPLINK_VAULTS_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        struct agent_config_vault *v = &c->vaults[i];
        snprintf(p, sizeof(p), "vaults.[%zu]", i);
        snprintf(pa, sizeof(pa), "%s.address", p);
        snprintf(pn, sizeof(pn), "%s.name", p);
        snprintf(pt, sizeof(pt), "%s.tls_name", p);
        snprintf(pr, sizeof(pr), "%s.region", p);
        if ((rc = cfr_cfg_check_keys(cfg, p, vault_keys, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, pa, NULL, &v->address, err)) != 0 ||
            (rc = opt_string(cfg, pn, &v->name, err)) != 0 ||
            (rc = opt_string(cfg, pt, &v->tls_name, err)) != 0 ||
            (rc = opt_string(cfg, pr, &v->region, err)) != 0) {
            return rc;
        }
        if (v->region != NULL &&
            (rc = check_region(cfg, pr, v->region, err)) != 0) {
            return rc;
        }
        if (!address_ok(v->address)) {
            return cfr_cfg_fail(cfg, pa, err,
                                "\"%s\" is not host:port (port 1..65535; "
                                "IPv6 as [addr]:port)",
                                v->address);
        }
        if (v->name == NULL) {
            v->name = v->address;
        }
        if (strlen(v->name) >= AGENT_UPLINK_NAME_MAX) {
            return cfr_cfg_fail(cfg, pn, err, "longer than %d bytes",
                                AGENT_UPLINK_NAME_MAX - 1);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v->address, c->vaults[j].address) == 0) {
                return cfr_cfg_fail(cfg, pa, err,
                                    "\"%s\" is listed twice: a quorum must "
                                    "count distinct vaults",
                                    v->address);
            }
            if (strcmp(v->name, c->vaults[j].name) == 0) {
                return cfr_cfg_fail(cfg, pn, err, "\"%s\" names two vaults",
                                    v->name);
            }
        }
        c->n_vaults = i + 1;
    }
    return check_placement(c, err);
}

static int
read_tuning(struct agent_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    const int64_t zero = 0, nice_def = 10, level_def = 7, pct_def = 25,
                  min_def = 50;
    const char *io_class = NULL;
    int64_t v;
    int rc;

    if ((rc = cfr_cfg_int(cfg, "quorum", &zero, 0, AGENT_UPLINK_VAULTS_MAX, &v,
                          err)) != 0) {
        return rc;
    }
    if ((size_t)v > c->n_vaults) {
        return cfr_cfg_fail(cfg, "quorum", err,
                            "%lld is more than the %zu configured vaults",
                            (long long)v, c->n_vaults);
    }
    c->quorum = (unsigned)v;
    if ((rc = cfr_cfg_int(cfg, "workers", &zero, 0, AGENT_BACKUP_WORKERS_MAX,
                          &v, err)) != 0) {
        return rc;
    }
    c->workers = (unsigned)v;
    if ((rc = cfr_cfg_int(cfg, "cpu_nice", &nice_def, 0, 19, &v, err)) != 0) {
        return rc;
    }
    c->cpu_nice = (int)v;
    if ((rc = cfr_cfg_string(cfg, "io_class", "best-effort", &io_class, err)) !=
        0) {
        return rc;
    }
    if (strcmp(io_class, "best-effort") == 0) {
        c->io_class = AGENT_BACKUP_IO_BEST_EFFORT;
    } else if (strcmp(io_class, "idle") == 0) {
        c->io_class = AGENT_BACKUP_IO_IDLE;
    } else if (strcmp(io_class, "keep") == 0) {
        c->io_class = AGENT_BACKUP_IO_KEEP;
    } else {
        return cfr_cfg_fail(cfg, "io_class", err,
                            "\"%s\" is not best-effort, idle or keep",
                            io_class);
    }
    if ((rc = cfr_cfg_int(cfg, "io_level", &level_def, 0, 7, &v, err)) != 0) {
        return rc;
    }
    if (cfr_cfg_has(cfg, "io_level") &&
        c->io_class != AGENT_BACKUP_IO_BEST_EFFORT) {
        return cfr_cfg_fail(cfg, "io_level", err,
                            "only means something with io_class "
                            "\"best-effort\"");
    }
    c->io_level = (int)v;
    if ((rc = cfr_cfg_check_keys(cfg, "mass_deletion", mass_keys, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "mass_deletion.percent", &pct_def, 1, 100, &v,
                          err)) != 0) {
        return rc;
    }
    c->mass_deletion_percent = (unsigned)v;
    if ((rc = cfr_cfg_int(cfg, "mass_deletion.min_files", &min_def, 1,
                          INT64_C(1) << 40, &v, err)) != 0) {
        return rc;
    }
    c->mass_deletion_min = (uint64_t)v;
    if ((rc = cfr_cfg_check_keys(cfg, "timeouts", timeout_keys, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "timeouts.call", "30s", 1000,
                                  600 * CFR_MS_PER_SEC, &c->call_timeout_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "timeouts.stream", "5m", 1000,
                                  CFR_MS_PER_HOUR, &c->stream_timeout_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "timeouts.stall", "30s", 1000,
                                  CFR_MS_PER_HOUR, &c->stall_ms, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "timeouts.lease", "12h", 60000,
                                  7 * CFR_MS_PER_DAY, &c->lease_ttl_ms, err)) !=
            0) {
        return rc;
    }
    return cfr_cfg_size(cfg, "state_cache", "8M", 1u << 20, (uint64_t)1 << 32,
                        &c->state_cache_bytes, err);
}

static int
read_all(struct agent_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    int rc;

    if ((rc = cfr_cfg_check_keys(cfg, "", top_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "tls", tls_keys, err)) != 0) {
        return rc;
    }
    if ((rc = cfr_cfg_string(cfg, "tenant", NULL, &c->tenant, err)) != 0 ||
        (rc = check_tenant(cfg, c->tenant, err)) != 0 ||
        (rc = abs_path(cfg, "key_file", NULL, &c->key_file, err)) != 0 ||
        (rc = abs_path(cfg, "passphrase_file", NULL, &c->passphrase_file,
                       err)) != 0 ||
        (rc = abs_path(cfg, "state_dir", NULL, &c->state_dir, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "log_level", "warn", &c->log_level, err)) !=
            0 ||
        (rc = opt_string(cfg, "host", &c->host, err)) != 0 ||
        (rc = opt_string(cfg, "tmp_dir", &c->tmp_dir, err)) != 0 ||
        (rc = abs_path(cfg, "tls.ca", NULL, &c->tls_ca, err)) != 0 ||
        (rc = abs_path(cfg, "tls.cert", NULL, &c->tls_cert, err)) != 0 ||
        (rc = abs_path(cfg, "tls.key", NULL, &c->tls_key, err)) != 0) {
        return rc;
    }
    if (strcmp(c->log_level, "debug") != 0 &&
        strcmp(c->log_level, "info") != 0 &&
        strcmp(c->log_level, "warn") != 0 &&
        strcmp(c->log_level, "error") != 0 &&
        strcmp(c->log_level, "off") != 0) {
        return cfr_cfg_fail(cfg, "log_level", err,
                            "\"%s\" is not debug, info, warn, error or off",
                            c->log_level);
    }
    if (c->host != NULL && strlen(c->host) > CFR_SNAP_HOST_MAX) {
        return cfr_cfg_fail(cfg, "host", err, "longer than %d bytes",
                            CFR_SNAP_HOST_MAX);
    }
    if (c->tmp_dir != NULL &&
        (rc = abs_path(cfg, "tmp_dir", NULL, &c->tmp_dir, err)) != 0) {
        return rc;
    }
    if (cfr_cfg_has(cfg, "lock_file")) {
        if ((rc = abs_path(cfg, "lock_file", NULL, &c->lock_file, err)) != 0) {
            return rc;
        }
    } else {
        /*
         * Beside the state directory, never inside it: state.c wipes a
         * damaged directory that looks like RocksDB's, and a foreign file
         * there would make it refuse instead.
         */
        size_t len = strlen(c->state_dir);
        while (len > 1 && c->state_dir[len - 1] == '/') {
            len--;
        }
        snprintf(c->lock_buf, sizeof(c->lock_buf), "%.*s.lock", (int)len,
                 c->state_dir);
        c->lock_file = c->lock_buf;
    }
    if (strcmp(c->key_file, c->passphrase_file) == 0) {
        return cfr_cfg_fail(cfg, "passphrase_file", err,
                            "must not be the key file itself");
    }
    if ((rc = read_mailboxes(c, err)) != 0 || (rc = read_vaults(c, err)) != 0) {
        return rc;
    }
    return read_tuning(c, err);
}

static int
finish_load(struct agent_config *c, struct cfr_err *err)
{
    int rc = read_all(c, err);
    if (rc != 0) {
        agent_config_fini(c);
    }
    return rc;
}

int
agent_config_load(const char *path, struct agent_config *cfg_r,
                  struct cfr_err *err)
{
    memset(cfg_r, 0, sizeof(*cfg_r));
    cfg_r->cfg = cfr_cfg_load_file(path, err);
    if (cfg_r->cfg == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(cfg_r, err);
}

int
agent_config_parse(const char *text, struct agent_config *cfg_r,
                   struct cfr_err *err)
{
    memset(cfg_r, 0, sizeof(*cfg_r));
    cfg_r->cfg = cfr_cfg_load_string(text, err);
    if (cfg_r->cfg == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(cfg_r, err);
}

void
agent_config_fini(struct agent_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    cfr_free(cfg->mailboxes);
    cfr_cfg_free(cfg->cfg);
    memset(cfg, 0, sizeof(*cfg));
}

bool
agent_config_lists(const struct agent_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_mailboxes; i++) {
        if (strcmp(cfg->mailboxes[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}
