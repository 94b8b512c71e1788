/*
 * cfg.c - checked configuration on top of libconfig.
 *
 * Invariants:
 *  1. Only this file includes libconfig.h.
 *  2. Every error names where the problem is: file:line and setting path.
 *  3. Values are never silently converted: an integer where a string is
 *     expected is an error, except the documented duration/size forms.
 */
#include "cfg.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"    /* reading a named file */
#include "mem.h"    /* cfr_calloc, cfr_free */
#include "secret.h" /* cfr_wipe: a named file may be a private key */

struct cfr_cfg {
    config_t conf;
    char *name; /* file path, or "<string>" */
};

static struct cfr_cfg *
cfg_new(const char *name, struct cfr_err *err)
{
    struct cfr_cfg *cfg = cfr_calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory loading configuration");
        return NULL;
    }
    cfg->name = cfr_strdup(name);
    if (cfg->name == NULL) {
        cfr_free(cfg);
        CFR_ERR(err, CFR_ENOMEM, "out of memory loading configuration");
        return NULL;
    }
    config_init(&cfg->conf);
    /* Includes would let a config pull in files an operator didn't review
     * next to it; keep the include dir unset so relative includes fail. */
    return cfg;
}

static struct cfr_cfg *
cfg_fail_parse(struct cfr_cfg *cfg, struct cfr_err *err)
{
    if (config_error_type(&cfg->conf) == CONFIG_ERR_FILE_IO) {
        CFR_ERR(err, CFR_EIO, "%s: cannot read configuration", cfg->name);
    } else {
        CFR_ERR(err, CFR_ECONFIG, "%s:%d: %s", cfg->name,
                config_error_line(&cfg->conf),
                config_error_text(&cfg->conf) != NULL
                    ? config_error_text(&cfg->conf)
                    : "syntax error");
    }
    cfr_cfg_free(cfg);
    return NULL;
}

struct cfr_cfg *
cfr_cfg_load_file(const char *path, struct cfr_err *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                      "%s: cannot open configuration", path);
        return NULL;
    }
    struct cfr_cfg *cfg = cfg_new(path, err);
    if (cfg == NULL) {
        fclose(f);
        return NULL;
    }
    int ok = config_read(&cfg->conf, f);
    fclose(f);
    if (ok != CONFIG_TRUE) {
        return cfg_fail_parse(cfg, err);
    }
    return cfg;
}

struct cfr_cfg *
cfr_cfg_load_string(const char *text, struct cfr_err *err)
{
    struct cfr_cfg *cfg = cfg_new("<string>", err);
    if (cfg == NULL) {
        return NULL;
    }
    if (config_read_string(&cfg->conf, text) != CONFIG_TRUE) {
        return cfg_fail_parse(cfg, err);
    }
    return cfg;
}

void
cfr_cfg_free(struct cfr_cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    config_destroy(&cfg->conf);
    cfr_free(cfg->name);
    cfr_free(cfg);
}

static config_setting_t *
lookup(const struct cfr_cfg *cfg, const char *path)
{
    if (path[0] == '\0') {
        return config_root_setting(&cfg->conf);
    }
    return config_lookup(&cfg->conf, path);
}

bool
cfr_cfg_has(const struct cfr_cfg *cfg, const char *path)
{
    return lookup(cfg, path) != NULL;
}

static int
setting_err(const struct cfr_cfg *cfg, const config_setting_t *s,
            const char *path, struct cfr_err *err, const char *what)
{
    int line = s != NULL ? (int)config_setting_source_line(s) : 0;
    if (line > 0) {
        return CFR_ERR(err, CFR_ECONFIG, "%s:%d: %s: %s", cfg->name, line, path,
                       what);
    }
    return CFR_ERR(err, CFR_ECONFIG, "%s: %s: %s", cfg->name, path, what);
}

int
cfr_cfg_fail(const struct cfr_cfg *cfg, const char *path, struct cfr_err *err,
             const char *fmt, ...)
{
    char what[CFR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return setting_err(cfg, lookup(cfg, path), path, err, what);
}

static int
missing(const struct cfr_cfg *cfg, const char *path, struct cfr_err *err)
{
    return CFR_ERR(err, CFR_ECONFIG, "%s: required setting %s is missing",
                   cfg->name, path);
}

int
cfr_cfg_string(const struct cfr_cfg *cfg, const char *path, const char *def,
               const char **out, struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    if (s == NULL) {
        if (def == NULL) {
            return missing(cfg, path, err);
        }
        *out = def;
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        return setting_err(cfg, s, path, err, "must be a string");
    }
    const char *v = config_setting_get_string(s);
    if (v == NULL || v[0] == '\0') {
        return setting_err(cfg, s, path, err, "must not be empty");
    }
    *out = v;
    return 0;
}

int
cfr_cfg_int(const struct cfr_cfg *cfg, const char *path, const int64_t *def,
            int64_t min, int64_t max, int64_t *out, struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    int64_t v;
    if (s == NULL) {
        if (def == NULL) {
            return missing(cfg, path, err);
        }
        v = *def;
    } else {
        int type = config_setting_type(s);
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
            return setting_err(cfg, s, path, err, "must be an integer");
        }
        v = (int64_t)config_setting_get_int64(s);
    }
    if (v < min || v > max) {
        char what[128];
        snprintf(what, sizeof(what),
                 "%" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]", v,
                 min, max);
        return setting_err(cfg, s, path, err, what);
    }
    *out = v;
    return 0;
}

int
cfr_cfg_bool(const struct cfr_cfg *cfg, const char *path, const bool *def,
             bool *out, struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    if (s == NULL) {
        if (def == NULL) {
            return missing(cfg, path, err);
        }
        *out = *def;
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        return setting_err(cfg, s, path, err, "must be true or false");
    }
    *out = config_setting_get_bool(s) != 0;
    return 0;
}

/*
 * Reads "<number><unit>..." where units come from the table; a bare number
 * uses bare_mult. Rejects overflow, empty input and unknown units.
 */
struct unit {
    const char *name;
    uint64_t mult;
};

static int
parse_units(const char *s, const struct unit *units, uint64_t bare_mult,
            bool allow_sequence, uint64_t *out)
{
    if (s == NULL || *s == '\0') {
        return CFR_EINVAL;
    }
    uint64_t total = 0;
    const char *p = s;
    int terms = 0;
    while (*p != '\0') {
        if (*p < '0' || *p > '9') {
            return CFR_EINVAL;
        }
        uint64_t n = 0;
        while (*p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (n > (UINT64_MAX - d) / 10) {
                return CFR_EINVAL;
            }
            n = n * 10 + d;
            p++;
        }
        uint64_t mult = 0;
        if (*p == '\0') {
            mult = terms == 0 ? bare_mult : 0;
        } else {
            for (const struct unit *u = units; u->name != NULL; u++) {
                size_t len = strlen(u->name);
                if (strncmp(p, u->name, len) == 0 &&
                    (p[len] == '\0' || (p[len] >= '0' && p[len] <= '9'))) {
                    mult = u->mult;
                    p += len;
                    break;
                }
            }
        }
        if (mult == 0 || (n != 0 && mult > UINT64_MAX / n) ||
            total > UINT64_MAX - n * mult) {
            return CFR_EINVAL;
        }
        total += n * mult;
        terms++;
        if (!allow_sequence && *p != '\0') {
            return CFR_EINVAL;
        }
    }
    *out = total;
    return 0;
}

int
cfr_parse_duration_ms(const char *s, int64_t *out)
{
    /* Longest unit names first so "ms" is not read as "m" + "s". */
    static const struct unit units[] = {
        {"ms", 1},       {"s", 1000},      {"m", 60000}, {"h", 3600000},
        {"d", 86400000}, {"w", 604800000}, {NULL, 0},
    };
    uint64_t v;
    if (parse_units(s, units, 1000, true, &v) != 0 || v > INT64_MAX) {
        return CFR_EINVAL;
    }
    *out = (int64_t)v;
    return 0;
}

int
cfr_parse_size(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30},
        {"TiB", 1ULL << 40}, {"K", 1ULL << 10},   {"M", 1ULL << 20},
        {"G", 1ULL << 30},   {"T", 1ULL << 40},   {"B", 1},
        {NULL, 0},
    };
    return parse_units(s, units, 1, false, out);
}

static int
scaled_setting(const struct cfr_cfg *cfg, const char *path, const char *def,
               int (*parse)(const char *, uint64_t *), uint64_t int_mult,
               uint64_t *out, struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    if (s == NULL) {
        if (def == NULL) {
            return missing(cfg, path, err);
        }
        if (parse(def, out) != 0) {
            return CFR_ERR(err, CFR_EINTERNAL, "bad built-in default %s", def);
        }
        return 0;
    }
    int type = config_setting_type(s);
    if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
        long long v = config_setting_get_int64(s);
        if (v < 0 || (uint64_t)v > UINT64_MAX / int_mult) {
            return setting_err(cfg, s, path, err, "is out of range");
        }
        *out = (uint64_t)v * int_mult;
        return 0;
    }
    if (type != CONFIG_TYPE_STRING) {
        return setting_err(cfg, s, path, err,
                           "must be a string like \"30d\" or \"64M\"");
    }
    const char *v = config_setting_get_string(s);
    if (parse(v, out) != 0) {
        char what[160];
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "%.60s", v);
        snprintf(what, sizeof(what), "\"%s\" is not valid here", quoted);
        return setting_err(cfg, s, path, err, what);
    }
    return 0;
}

static int
parse_duration_u64(const char *s, uint64_t *out)
{
    int64_t v;
    int rc = cfr_parse_duration_ms(s, &v);
    if (rc == 0) {
        *out = (uint64_t)v;
    }
    return rc;
}

int
cfr_cfg_duration_ms(const struct cfr_cfg *cfg, const char *path,
                    const char *def, int64_t min_ms, int64_t max_ms,
                    int64_t *out, struct cfr_err *err)
{
    uint64_t v = 0;
    int rc = scaled_setting(cfg, path, def, parse_duration_u64, 1000, &v, err);
    if (rc != 0) {
        return rc;
    }
    if (v > (uint64_t)max_ms || (int64_t)v < min_ms) {
        char what[128];
        snprintf(what, sizeof(what),
                 "%" PRIu64 " ms is out of range [%" PRId64 ", %" PRId64 "] ms",
                 v, min_ms, max_ms);
        return setting_err(cfg, lookup(cfg, path), path, err, what);
    }
    *out = (int64_t)v;
    return 0;
}

int
cfr_cfg_size(const struct cfr_cfg *cfg, const char *path, const char *def,
             uint64_t min, uint64_t max, uint64_t *out, struct cfr_err *err)
{
    uint64_t v = 0;
    int rc = scaled_setting(cfg, path, def, cfr_parse_size, 1, &v, err);
    if (rc != 0) {
        return rc;
    }
    if (v < min || v > max) {
        char what[128];
        snprintf(what, sizeof(what),
                 "%" PRIu64 " bytes is out of range [%" PRIu64 ", %" PRIu64 "]",
                 v, min, max);
        return setting_err(cfg, lookup(cfg, path), path, err, what);
    }
    *out = v;
    return 0;
}

int
cfr_cfg_count(const struct cfr_cfg *cfg, const char *path, size_t *n_r,
              struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    *n_r = 0;
    if (s == NULL) {
        return 0;
    }
    if (!config_setting_is_aggregate(s) || config_setting_is_group(s)) {
        return setting_err(cfg, s, path, err, "must be a list or array");
    }
    *n_r = (size_t)config_setting_length(s);
    return 0;
}

int
cfr_cfg_string_at(const struct cfr_cfg *cfg, const char *path, size_t i,
                  const char **out, struct cfr_err *err)
{
    config_setting_t *s = lookup(cfg, path);
    if (s == NULL) {
        return missing(cfg, path, err);
    }
    if (i > INT_MAX) {
        return setting_err(cfg, s, path, err, "index out of range");
    }
    config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
    if (e == NULL) {
        return setting_err(cfg, s, path, err, "index out of range");
    }
    if (config_setting_type(e) != CONFIG_TYPE_STRING) {
        return setting_err(cfg, e, path, err, "elements must be strings");
    }
    const char *v = config_setting_get_string(e);
    if (v == NULL || v[0] == '\0') {
        return setting_err(cfg, e, path, err, "elements must not be empty");
    }
    *out = v;
    return 0;
}

int
cfr_cfg_check_keys(const struct cfr_cfg *cfg, const char *path,
                   const char *const *allowed, struct cfr_err *err)
{
    config_setting_t *g = lookup(cfg, path);
    if (g == NULL) {
        return 0;
    }
    if (!config_setting_is_group(g)) {
        return setting_err(cfg, g, path[0] ? path : "(top level)", err,
                           "must be a group { ... }");
    }
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        bool known = false;
        for (const char *const *a = allowed; *a != NULL; a++) {
            if (name != NULL && strcmp(name, *a) == 0) {
                known = true;
                break;
            }
        }
        if (!known) {
            char full[256];
            snprintf(full, sizeof(full), "%s%s%s", path, path[0] ? "." : "",
                     name != NULL ? name : "?");
            return setting_err(cfg, m, full, err, "unknown setting");
        }
    }
    return 0;
}

char *
cfr_cfg_read_file(const char *path, const char *setting, struct cfr_err *err)
{
    FILE *f = fopen(path, "rb");
    struct cfr_buf b;
    char *out = NULL;
    size_t n;

    cfr_buf_init(&b, CFR_CFG_FILE_MAX + 1);
    if (f == NULL) {
        CFR_ERR_ERRNO(err, CFR_ECONFIG, "%s: cannot open \"%s\"", setting,
                      path);
        goto out;
    }
    for (;;) {
        uint8_t chunk[4096];
        n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0 && (b.len + n > CFR_CFG_FILE_MAX ||
                      cfr_buf_append(&b, chunk, n, err) != 0)) {
            cfr_wipe(chunk, sizeof(chunk));
            CFR_ERR(err, CFR_ECONFIG, "%s: \"%s\" is larger than %zu bytes",
                    setting, path, CFR_CFG_FILE_MAX);
            goto out;
        }
        cfr_wipe(chunk, n);
        if (n < sizeof(chunk)) {
            break;
        }
    }
    if (ferror(f) || b.len == 0 || cfr_buf_append_u8(&b, 0, err) != 0) {
        CFR_ERR(err, CFR_ECONFIG, "%s: cannot read \"%s\" (or it is empty)",
                setting, path);
        goto out;
    }
    out = (char *)cfr_buf_steal(&b, &n);
out:
    if (f != NULL) {
        fclose(f);
    }
    if (out == NULL && b.data != NULL) {
        cfr_wipe(b.data, b.len);
    }
    cfr_buf_fini(&b);
    return out;
}

void
cfr_cfg_free_file(char *text)
{
    if (text != NULL) {
        cfr_wipe(text, strlen(text));
        cfr_free(text);
    }
}
