/*
 * admin_client.c - connection settings, the System call and the argument
 * checks of coffer-admin's vault operations, and the aggregation of the
 * vaults' replication status into one view (admin_client.h).
 *
 * Invariants:
 *  1. The checks here mirror the vault's own (sysdb.c, request.c) so that
 *     a mistake is reported before any vault is contacted; the vault still
 *     checks everything itself, so a mirror that drifts can only make the
 *     tool refuse early, never let bad data in.
 *  2. The packed request is wiped on every path (it may carry a TOTP
 *     secret or code); answers are bounded by VAULT_ADMIN_RESP_MAX.
 *  3. Connection files go through core/cfg.c, the only libconfig user:
 *     typed, unknown settings refused, errors located by file and line.
 */
#include "admin_client.h"

#include <errno.h>  /* errno */
#include <stdlib.h> /* strtoll, qsort */
#include <string.h> /* strlen, memcpy, strncmp */
#include <time.h>   /* gmtime_r, strftime */

#include "buf.h"    /* response buffer, hex */
#include "cfg.h"    /* connection files */
#include "json.h"   /* cfr_json_fput */
#include "mem.h"    /* cfr_malloc */
#include "secret.h" /* cfr_wipe */

#define SYSTEM_METHOD "/coffer.v1.Vault/System"

struct vault_admin_client {
    struct cfr_rpc_client *rpc;
    int64_t timeout_ms;
};

/* ---- connection settings -------------------------------------------- */

/* Copies src into dst (size bytes), refusing what does not fit. */
static int
copy_text(char *dst, size_t size, const char *src, const char *what,
          struct cfr_err *err)
{
    size_t n = strlen(src);
    if (n == 0 || n >= size) {
        return CFR_ERR(err, CFR_EINVAL, "%s must be 1 to %zu bytes long", what,
                       size - 1);
    }
    memcpy(dst, src, n + 1);
    return 0;
}

/* A path from a connection file: relative ones are the file's siblings. */
static int
file_path(char *dst, const char *cfg_path, const char *p, const char *what,
          struct cfr_err *err)
{
    const char *slash = strrchr(cfg_path, '/');
    if (p[0] == '/' || slash == NULL) {
        return copy_text(dst, VAULT_ADMIN_PATH_MAX, p, what, err);
    }
    int n = snprintf(dst, VAULT_ADMIN_PATH_MAX, "%.*s/%s",
                     (int)(slash - cfg_path), cfg_path, p);
    if (n < 0 || n >= VAULT_ADMIN_PATH_MAX) {
        dst[0] = '\0';
        return CFR_ERR(err, CFR_EINVAL, "%s: path too long", what);
    }
    return 0;
}

int
vault_admin_conn_load(const char *path, struct vault_admin_conn *c_r,
                      struct cfr_err *err)
{
    static const char *const top[] = {"vaults", "tls", "timeout", NULL};
    static const char *const tls[] = {"cert", "key", "ca", "name", NULL};
    static const char *const files[] = {"cert", "key", "ca"};
    struct cfr_cfg *cfg = NULL;
    const char *s = NULL;
    size_t n = 0;
    int rc = 0;

    memset(c_r, 0, sizeof(*c_r));
    if ((cfg = cfr_cfg_load_file(path, err)) == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    if ((rc = cfr_cfg_check_keys(cfg, "", top, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "tls", tls, err)) != 0 ||
        (rc = cfr_cfg_count(cfg, "vaults", &n, err)) != 0) {
        goto out;
    }
    if (n > VAULT_ADMIN_VAULTS_MAX) {
        rc = cfr_cfg_fail(cfg, "vaults", err, "at most %d vaults",
                          VAULT_ADMIN_VAULTS_MAX);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct cfr_err why;
        if ((rc = cfr_cfg_string_at(cfg, "vaults", i, &s, err)) != 0) {
            goto out;
        }
        if (vault_admin_target_check(s, &why) != 0) {
            rc = cfr_cfg_fail(cfg, "vaults", err, "%s", why.msg);
            goto out;
        }
        memcpy(c_r->vaults[i], s, strlen(s) + 1);
    }
    c_r->n_vaults = n;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char setting[16];
        char *dst = i == 0 ? c_r->cert : i == 1 ? c_r->key : c_r->ca;
        snprintf(setting, sizeof(setting), "tls.%s", files[i]);
        if (!cfr_cfg_has(cfg, setting)) {
            continue;
        }
        if ((rc = cfr_cfg_string(cfg, setting, NULL, &s, err)) != 0) {
            goto out;
        }
        if (file_path(dst, path, s, setting, err) != 0) {
            rc = cfr_cfg_fail(cfg, setting, err, "path too long");
            goto out;
        }
    }
    if (cfr_cfg_has(cfg, "tls.name")) {
        if ((rc = cfr_cfg_string(cfg, "tls.name", NULL, &s, err)) != 0) {
            goto out;
        }
        if (copy_text(c_r->tls_name, sizeof(c_r->tls_name), s, "tls.name",
                      NULL) != 0) {
            rc = cfr_cfg_fail(cfg, "tls.name", err, "too long");
            goto out;
        }
    }
    if (cfr_cfg_has(cfg, "timeout") &&
        (rc = cfr_cfg_duration_ms(cfg, "timeout", NULL, 1,
                                  VAULT_ADMIN_TIMEOUT_MAX, &c_r->timeout_ms,
                                  err)) != 0) {
        goto out;
    }
out:
    cfr_cfg_free(cfg);
    return rc;
}

void
vault_admin_conn_merge(struct vault_admin_conn *dst,
                       const struct vault_admin_conn *src)
{
    if (src->n_vaults > 0) {
        dst->n_vaults = src->n_vaults;
        memcpy(dst->vaults, src->vaults, sizeof(dst->vaults));
    }
    if (src->cert[0] != '\0') {
        memcpy(dst->cert, src->cert, sizeof(dst->cert));
    }
    if (src->key[0] != '\0') {
        memcpy(dst->key, src->key, sizeof(dst->key));
    }
    if (src->ca[0] != '\0') {
        memcpy(dst->ca, src->ca, sizeof(dst->ca));
    }
    if (src->tls_name[0] != '\0') {
        memcpy(dst->tls_name, src->tls_name, sizeof(dst->tls_name));
    }
    if (src->timeout_ms != 0) {
        dst->timeout_ms = src->timeout_ms;
    }
}

int
vault_admin_target_check(const char *target, struct cfr_err *err)
{
    size_t n = target != NULL ? strlen(target) : 0;
    const char *colon = n > 0 ? strrchr(target, ':') : NULL;
    if (n == 0 || n >= VAULT_ADMIN_TARGET_MAX || colon == NULL ||
        colon == target) {
        return CFR_ERR(err, CFR_EINVAL,
                       "vault '%.80s': expected HOST:PORT ([ADDR]:PORT for "
                       "IPv6)",
                       target != NULL ? target : "");
    }
    const char *port = colon + 1;
    size_t plen = strlen(port);
    long v = 0;
    for (size_t i = 0; i < plen && i < 6; i++) {
        if (port[i] < '0' || port[i] > '9') {
            v = 0;
            break;
        }
        v = v * 10 + (port[i] - '0');
    }
    if (plen == 0 || plen > 5 || v < 1 || v > 65535) {
        return CFR_ERR(err, CFR_EINVAL,
                       "vault '%.80s': the port must be 1 to 65535", target);
    }
    if (target[0] == '[') {
        /* An IPv6 literal: hex digits, ':' and '.' (mapped IPv4). */
        if (colon[-1] != ']' || colon - target < 3) {
            return CFR_ERR(err, CFR_EINVAL,
                           "vault '%.80s': an IPv6 address goes in [ ]",
                           target);
        }
        for (const char *p = target + 1; p < colon - 1; p++) {
            bool ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                      (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.';
            if (!ok) {
                return CFR_ERR(err, CFR_EINVAL,
                               "vault '%.80s': bad IPv6 address", target);
            }
        }
        return 0;
    }
    for (const char *p = target; p < colon; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.';
        if (!ok) {
            return CFR_ERR(err, CFR_EINVAL,
                           "vault '%.80s': the host may hold only letters, "
                           "digits, '-' and '.'",
                           target);
        }
    }
    return 0;
}

int
vault_admin_conn_check(const struct vault_admin_conn *c, struct cfr_err *err)
{
    int rc;
    if (c->n_vaults == 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "no vault given: use --vault HOST:PORT or --connect "
                       "FILE");
    }
    for (size_t i = 0; i < c->n_vaults; i++) {
        if ((rc = vault_admin_target_check(c->vaults[i], err)) != 0) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->vaults[i], c->vaults[j]) == 0) {
                return CFR_ERR(err, CFR_EINVAL, "vault %s given twice",
                               c->vaults[i]);
            }
        }
    }
    if (c->cert[0] == '\0' || c->key[0] == '\0' || c->ca[0] == '\0') {
        return CFR_ERR(err, CFR_EINVAL,
                       "vault operations need an operator certificate and "
                       "key and the vaults' CA: --cert, --key and --ca-cert, "
                       "or tls = { cert; key; ca; } in --connect FILE");
    }
    return 0;
}

/* ---- argument checks -------------------------------------------------- */

int
vault_admin_tenant_check(const char *name, struct cfr_err *err)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > 63) {
        return CFR_ERR(err, CFR_EINVAL, "tenant name must be 1 to 63 bytes");
    }
    /* '_' first is the vault's own ("_system"); '.' and '-' are refused by
     * the identity rule of docs/FORMAT.md. */
    if (name[0] == '.' || name[0] == '-' || name[0] == '_') {
        return CFR_ERR(err, CFR_EINVAL,
                       "tenant name '%s' must not start with '%c'", name,
                       name[0]);
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-')) {
            return CFR_ERR(err, CFR_EINVAL,
                           "tenant name may hold only a-z 0-9 . _ - (byte %zu "
                           "is 0x%02x)",
                           i + 1, (unsigned)(unsigned char)c);
        }
    }
    return 0;
}

int
vault_admin_region_check(const char *region, struct cfr_err *err)
{
    size_t n = region != NULL ? strlen(region) : 0;
    if (n == 0 || n > VAULT_ADMIN_REGION_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "region must be 1 to %d bytes",
                       VAULT_ADMIN_REGION_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        char c = region[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return CFR_ERR(err, CFR_EINVAL,
                           "region '%.40s' may hold only a-z 0-9 -", region);
        }
    }
    return 0;
}

int
vault_admin_notify_check(const char *t, struct cfr_err *err)
{
    size_t n = t != NULL ? strlen(t) : 0;
    bool ok = n > 0 && n <= VAULT_ADMIN_TARGET_TEXT;
    for (size_t i = 0; ok && i < n; i++) {
        ok = t[i] > 0x20 && t[i] < 0x7f;
    }
    if (ok &&
        (strncmp(t, "https://", 8) == 0 || strncmp(t, "http://", 7) == 0)) {
        ok = n > 8;
    } else if (ok && strncmp(t, "mailto:", 7) == 0) {
        const char *at = strchr(t + 7, '@');
        ok = at != NULL && at != t + 7 && at[1] != '\0' &&
             strpbrk(t + 7, "<>,;\"()\\") == NULL;
    } else {
        ok = false;
    }
    if (!ok) {
        return CFR_ERR(err, CFR_EINVAL,
                       "notify target '%.60s': expected https://..., "
                       "http://... or mailto:user@host (no spaces, at most "
                       "%d bytes)",
                       t != NULL ? t : "", VAULT_ADMIN_TARGET_TEXT);
    }
    return 0;
}

int
vault_admin_identity_check(const char *uri, bool *is_vault_r,
                           struct cfr_err *err)
{
    static const char vault_pre[] = "coffer://vault/";
    char t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
    size_t n = uri != NULL ? strlen(uri) : 0;

    if (is_vault_r != NULL) {
        *is_vault_r = false;
    }
    if (n > 0 && n < CFR_RPC_NAME_MAX &&
        cfr_rpc_identity_parse(uri, t, r) == 0) {
        /* The parser knows vault identities too (replication peers). */
        if (is_vault_r != NULL) {
            *is_vault_r = strcmp(r, CFR_RPC_ROLE_VAULT) == 0;
        }
        return 0;
    }
    if (n > sizeof(vault_pre) - 1 &&
        strncmp(uri, vault_pre, sizeof(vault_pre) - 1) == 0) {
        const char *name = uri + sizeof(vault_pre) - 1;
        size_t len = strlen(name);
        bool ok = len <= 63 && name[0] != '.' && name[0] != '-';
        for (size_t i = 0; ok && i < len; i++) {
            char c = name[i];
            ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        }
        if (ok) {
            if (is_vault_r != NULL) {
                *is_vault_r = true;
            }
            return 0;
        }
    }
    return CFR_ERR(err, CFR_EINVAL,
                   "identity '%.80s' is not coffer://tenant/T/role/R, "
                   "coffer://operator/NAME or coffer://vault/NAME",
                   uri != NULL ? uri : "");
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
vault_admin_fingerprint_parse(const char *text,
                              char out[CFR_RPC_FINGERPRINT_LEN + 1],
                              struct cfr_err *err)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = text != NULL ? strlen(text) : 0, k = 0;
    bool colons = n == CFR_RPC_FINGERPRINT_LEN * 3 / 2 - 1;

    out[0] = '\0';
    if (n != CFR_RPC_FINGERPRINT_LEN && !colons) {
        goto bad;
    }
    for (size_t i = 0; i < n; i++) {
        if (colons && i % 3 == 2) {
            if (text[i] != ':') {
                goto bad;
            }
            continue;
        }
        int v = hex_value(text[i]);
        if (v < 0) {
            goto bad;
        }
        out[k++] = digits[v];
    }
    if (k != CFR_RPC_FINGERPRINT_LEN) {
        goto bad;
    }
    out[k] = '\0';
    return 0;
bad:
    out[0] = '\0';
    return CFR_ERR(err, CFR_EINVAL,
                   "fingerprint: expected the SHA-256 of a certificate as 64 "
                   "hex digits or AA:BB:... pairs");
}

int
vault_admin_approval_parse(const char *text,
                           uint8_t out[VAULT_ADMIN_APPROVAL_ID],
                           struct cfr_err *err)
{
    size_t n = text != NULL ? strlen(text) : 0;
    if (n != 2 * VAULT_ADMIN_APPROVAL_ID) {
        goto bad;
    }
    for (size_t i = 0; i < VAULT_ADMIN_APPROVAL_ID; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            goto bad;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
bad:
    memset(out, 0, VAULT_ADMIN_APPROVAL_ID);
    return CFR_ERR(err, CFR_EINVAL,
                   "approval ID: expected the 32 hex digits the vault printed");
}

int
vault_admin_totp_code_check(const char *code, struct cfr_err *err)
{
    size_t n = code != NULL ? strlen(code) : 0;
    bool ok = n >= 6 && n <= 8;
    for (size_t i = 0; ok && i < n; i++) {
        ok = code[i] >= '0' && code[i] <= '9';
    }
    /* The code itself is never echoed: it may still be valid. */
    return ok ? 0
              : CFR_ERR(err, CFR_EINVAL, "TOTP code: expected 6 to 8 digits");
}

int
vault_admin_text_check(const char *what, const char *text, struct cfr_err *err)
{
    size_t n = text != NULL ? strlen(text) : 0;
    if (n > VAULT_ADMIN_REASON_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "%s: at most %d bytes", what,
                       VAULT_ADMIN_REASON_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] < 0x20 || text[i] > 0x7e) {
            return CFR_ERR(err, CFR_EINVAL,
                           "%s: printable ASCII only (byte %zu is 0x%02x)",
                           what, i + 1, (unsigned)(unsigned char)text[i]);
        }
    }
    return 0;
}

int
vault_admin_int_parse(const char *what, const char *text, int64_t min,
                      int64_t max, int64_t *v_r, struct cfr_err *err)
{
    char *end = NULL;
    long long v = 0;
    if (text != NULL &&
        ((text[0] >= '0' && text[0] <= '9') ||
         (text[0] == '-' && text[1] >= '0' && text[1] <= '9'))) {
        errno = 0;
        v = strtoll(text, &end, 10);
        if (errno != 0) {
            end = NULL;
        }
    }
    if (end == NULL || *end != '\0' || v < min || v > max) {
        return CFR_ERR(err, CFR_EINVAL, "%s must be a number from %lld to %lld",
                       what, (long long)min, (long long)max);
    }
    *v_r = (int64_t)v;
    return 0;
}

/* ---- calls ------------------------------------------------------------ */

int
vault_admin_client_new(const struct vault_admin_client_opts *opts,
                       struct vault_admin_client **cli_r, struct cfr_err *err)
{
    struct vault_admin_client *cli = NULL;
    struct cfr_rpc_client_opts o;
    int rc;

    *cli_r = NULL;
    if (opts->timeout_ms < 0 || opts->timeout_ms > VAULT_ADMIN_TIMEOUT_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "timeout out of range");
    }
    if ((cli = cfr_calloc(1, sizeof(*cli))) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    memset(&o, 0, sizeof(o));
    o.target = opts->target;
    o.target_name = opts->tls_name != NULL && opts->tls_name[0] != '\0'
                        ? opts->tls_name
                        : NULL;
    o.ca_pem = opts->ca_pem;
    o.cert_pem = opts->cert_pem;
    o.key_pem = opts->key_pem;
    o.max_msg = VAULT_ADMIN_RESP_MAX;
    cli->timeout_ms =
        opts->timeout_ms > 0 ? opts->timeout_ms : VAULT_ADMIN_TIMEOUT_MS;
    if ((rc = cfr_rpc_client_new(&o, &cli->rpc, err)) != 0) {
        cfr_free(cli);
        return rc;
    }
    *cli_r = cli;
    return 0;
}

void
vault_admin_client_free(struct vault_admin_client *cli)
{
    if (cli != NULL) {
        cfr_rpc_client_free(cli->rpc);
        cfr_free(cli);
    }
}

int
vault_admin_system(struct vault_admin_client *cli,
                   const Coffer__V1__SystemRequest *req,
                   Coffer__V1__SystemResponse **resp_r, int *status_r,
                   struct cfr_err *err)
{
    size_t n = coffer__v1__system_request__get_packed_size(req);
    uint8_t *p = cfr_malloc(n > 0 ? n : 1);
    struct cfr_buf resp;
    int rc;

    *resp_r = NULL;
    *status_r = CFR_RPC_INTERNAL;
    cfr_buf_init(&resp, VAULT_ADMIN_RESP_MAX);
    if (p == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    coffer__v1__system_request__pack(req, p);
    rc = cfr_rpc_unary(cli->rpc, SYSTEM_METHOD, p, n, cli->timeout_ms, &resp,
                       status_r, err);
    if (rc != 0) {
        goto out;
    }
    *resp_r = coffer__v1__system_response__unpack(NULL, resp.len, resp.data);
    if (*resp_r == NULL) {
        *status_r = CFR_RPC_INTERNAL;
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "the vault's answer does not decode as SystemResponse");
    }
out:
    /* Invariant 2: the request may carry a TOTP secret or code. */
    if (p != NULL) {
        cfr_wipe(p, n > 0 ? n : 1);
        cfr_free(p);
    }
    cfr_buf_fini(&resp);
    return rc;
}

enum vault_admin_outcome
vault_admin_outcome_of(int status)
{
    switch (status) {
    case CFR_RPC_OK:
        return VAULT_ADMIN_DONE;
    case CFR_RPC_UNAVAILABLE:
    case CFR_RPC_DEADLINE_EXCEEDED:
    case CFR_RPC_CANCELLED:
        return VAULT_ADMIN_UNREACHABLE;
    case CFR_RPC_UNKNOWN:
    case CFR_RPC_INTERNAL:
    case CFR_RPC_DATA_LOSS:
        return VAULT_ADMIN_FAILED;
    default:
        return VAULT_ADMIN_REFUSED;
    }
}

/* ---- answers ---------------------------------------------------------- */

/* True when a and b hold the same strings, ignoring order. */
static bool
same_set(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb) {
        return false;
    }
    for (size_t i = 0; i < na; i++) {
        size_t in_a = 0, in_b = 0;
        for (size_t j = 0; j < na; j++) {
            in_a += strcmp(a[i], a[j]) == 0;
            in_b += strcmp(a[i], b[j]) == 0;
        }
        if (in_a != in_b) {
            return false;
        }
    }
    return true;
}

bool
vault_admin_tenant_same(const Coffer__V1__TenantInfo *want,
                        const Coffer__V1__TenantInfo *have,
                        int64_t default_retention_ms)
{
    int64_t w = want->retention_ms, h = have->retention_ms;
    if (w == 0) {
        w = default_retention_ms;
    }
    if (h == 0) {
        h = default_retention_ms;
    }
    return strcmp(want->name, have->name) == 0 && w == h &&
           same_set(want->regions, want->n_regions, have->regions,
                    have->n_regions) &&
           same_set(want->notify, want->n_notify, have->notify, have->n_notify);
}

void
vault_admin_json_token(FILE *f, const char *token)
{
    size_t n = token != NULL ? strlen(token) : 0;
    char *raw = NULL;
    size_t k = 0;
    if (n < 2 || token[0] != '"' || token[n - 1] != '"' ||
        (raw = cfr_malloc(n)) == NULL) {
        cfr_json_fput(f, token);
        return;
    }
    for (size_t i = 1; i + 1 < n; i++) {
        char c = token[i];
        if (c == '\\' && i + 2 < n) {
            char e = token[++i];
            if (e == 'n') {
                c = '\n';
            } else if (e == 'x' && i + 3 < n && hex_value(token[i + 1]) >= 0 &&
                       hex_value(token[i + 2]) >= 0) {
                c = (char)(hex_value(token[i + 1]) << 4 |
                           hex_value(token[i + 2]));
                i += 2;
            } else {
                c = e;
            }
        }
        /* A NUL would end the string early: keep it visible instead. */
        raw[k++] = c != '\0' ? c : '?';
    }
    raw[k] = '\0';
    cfr_json_fput(f, raw);
    cfr_free(raw);
}

void
vault_admin_print_safe(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
         *p != '\0'; p++) {
        fputc(*p >= 0x20 && *p < 0x7f ? *p : '?', f);
    }
}

const char *
vault_admin_time_text(int64_t ms, char *out, size_t size)
{
    struct tm tm;
    time_t s = (time_t)(ms / 1000);
    char day[32];
    if (ms <= 0 || gmtime_r(&s, &tm) == NULL ||
        strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, size, "-");
        return out;
    }
    snprintf(out, size, "%s.%03dZ", day, (int)(ms % 1000));
    return out;
}

const char *
vault_admin_duration_text(int64_t ms, char *out, size_t size)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (ms == 0) {
        snprintf(out, size, "default");
        return out;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, size, "%lld%s", (long long)(ms / units[i].ms),
                     units[i].unit);
            return out;
        }
    }
    snprintf(out, size, "%lldms", (long long)ms);
    return out;
}

/* ---- replication status ----------------------------------------------- */

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Adds name to the sorted-later list unless it is there already. */
static void
name_add(const char **names, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(names[i], name) == 0) {
            return;
        }
    }
    names[(*n)++] = name;
}

/* Folds one vault's lines about tenant into row. */
static void
row_fill(struct vault_admin_sync_row *row,
         const struct vault_admin_sync_reply *rep, const char *tenant)
{
    bool own = false;
    int64_t err_at = 0;
    int err_rank = 0; /* of row->last_error: 2 a failure, 1 a note */

    row->vault = rep->vault;
    row->region = "";
    row->lag_ms = -1;
    row->last_sync_ms = -1;
    if (!rep->answered) {
        row->state = VAULT_ADMIN_SYNC_NO_ANSWER;
        row->failure = rep->failure != NULL ? rep->failure : "no answer";
        return;
    }
    row->state = VAULT_ADMIN_SYNC_ABSENT;
    for (size_t i = 0; i < rep->n_lines; i++) {
        const Coffer__V1__SyncStatus *l = rep->lines[i];
        if (l == NULL || l->tenant == NULL || strcmp(l->tenant, tenant) != 0) {
            continue;
        }
        row->state = VAULT_ADMIN_SYNC_OK;
        if (l->peer == NULL || l->peer[0] == '\0') {
            if (own) {
                continue; /* only the first own line counts */
            }
            own = true;
            row->region = l->region != NULL ? l->region : "";
            row->snapshots = l->snapshots;
            row->newest_ms = l->newest_ms > 0 ? l->newest_ms : 0;
            row->repairs = l->repairs;
            row->repair_failures = l->repair_failures;
            row->last_repair_ms = l->last_repair_ms;
            continue;
        }
        /* The least recently synced peer decides: one peer never synced
         * makes the row "never", however fresh the others are. */
        int64_t ok = l->last_ok_ms > 0 ? l->last_ok_ms : 0;
        if (row->n_peers++ == 0 || ok < row->last_sync_ms) {
            row->last_sync_ms = ok;
        }
        row->behind += l->behind;
        /*
         * A failed last round's error is shown. After a success the text
         * is that round's own note (the vault clears the error of a round
         * that succeeds), e.g. the tombstone-keep guard's "N snapshot(s)
         * ... not pulled (guard)": it explains a BEHIND > 0, so it is
         * shown then, below any failure; with nothing behind it is old
         * news.
         */
        bool failed = l->last_ok_ms <= 0 || l->last_ok_ms < l->last_attempt_ms;
        int rank = failed ? 2 : l->behind > 0 ? 1 : 0;
        if (l->last_error != NULL && l->last_error[0] != '\0' && rank > 0 &&
            (rank > err_rank ||
             (rank == err_rank && l->last_attempt_ms > err_at))) {
            row->last_error = l->last_error;
            row->error_peer = l->peer;
            err_at = l->last_attempt_ms;
            err_rank = rank;
            row->error_note = rank == 1;
        }
    }
}

int
vault_admin_sync_view_build(const struct vault_admin_sync_reply *replies,
                            size_t n, const char *tenant,
                            struct vault_admin_sync_view *v_r,
                            struct cfr_err *err)
{
    size_t max = tenant != NULL ? 1 : 0, nt = 0;
    const char **names = NULL;

    memset(v_r, 0, sizeof(*v_r));
    v_r->n_vaults = n;
    if (tenant == NULL) {
        for (size_t i = 0; i < n; i++) {
            max += replies[i].answered ? replies[i].n_lines : 0;
        }
    }
    if (max == 0) {
        return 0;
    }
    if ((names = cfr_calloc(max, sizeof(*names))) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    if (tenant != NULL) {
        names[nt++] = tenant;
    }
    for (size_t i = 0; tenant == NULL && i < n; i++) {
        for (size_t k = 0; replies[i].answered && k < replies[i].n_lines; k++) {
            const Coffer__V1__SyncStatus *l = replies[i].lines[k];
            if (l != NULL && l->tenant != NULL && l->tenant[0] != '\0') {
                name_add(names, &nt, l->tenant);
            }
        }
    }
    if (nt > 1) {
        qsort(names, nt, sizeof(*names), cmp_name);
    }
    if (nt == 0 ||
        (v_r->tenants = cfr_calloc(nt, sizeof(*v_r->tenants))) == NULL) {
        cfr_free(names);
        return nt == 0 ? 0 : CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    v_r->n_tenants = nt;
    for (size_t t = 0; t < nt; t++) {
        struct vault_admin_sync_tenant *vt = &v_r->tenants[t];
        vt->name = names[t];
        if (n > 0 && (vt->rows = cfr_calloc(n, sizeof(*vt->rows))) == NULL) {
            cfr_free(names);
            vault_admin_sync_view_fini(v_r);
            return CFR_ERR(err, CFR_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            row_fill(&vt->rows[i], &replies[i], vt->name);
            if (vt->rows[i].newest_ms > vt->newest_ms) {
                vt->newest_ms = vt->rows[i].newest_ms;
            }
        }
        /* Lag needs the newest of all replicas, so a second pass. */
        for (size_t i = 0; i < n; i++) {
            struct vault_admin_sync_row *r = &vt->rows[i];
            if (r->newest_ms > 0) {
                r->lag_ms = vt->newest_ms - r->newest_ms;
            }
            v_r->alert = v_r->alert || vault_admin_sync_row_alert(r);
        }
    }
    cfr_free(names);
    return 0;
}

void
vault_admin_sync_view_fini(struct vault_admin_sync_view *v)
{
    if (v == NULL) {
        return;
    }
    for (size_t t = 0; t < v->n_tenants && v->tenants != NULL; t++) {
        cfr_free(v->tenants[t].rows);
    }
    cfr_free(v->tenants);
    memset(v, 0, sizeof(*v));
}

bool
vault_admin_sync_row_alert(const struct vault_admin_sync_row *r)
{
    return r->state == VAULT_ADMIN_SYNC_OK &&
           (r->behind > 0 || r->last_error != NULL);
}

const char *
vault_admin_span_text(int64_t ms, char *out, size_t size)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    size_t n = sizeof(units) / sizeof(units[0]);
    int64_t s = ms > 0 ? ms / 1000 * 1000 : 0;

    for (size_t i = 0; i < n; i++) {
        if (s < units[i].ms && i + 1 < n) {
            continue;
        }
        long long big = (long long)(s / units[i].ms);
        long long small =
            i + 1 < n ? (long long)(s % units[i].ms / units[i + 1].ms) : 0;
        if (small > 0) {
            snprintf(out, size, "%lld%s%lld%s", big, units[i].unit, small,
                     units[i + 1].unit);
        } else {
            snprintf(out, size, "%lld%s", big, units[i].unit);
        }
        return out;
    }
    return out; /* not reached: the last unit always matches */
}
