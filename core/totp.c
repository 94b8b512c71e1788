/*
 * totp.c - RFC 6238 TOTP over RFC 4226 HOTP, with HMAC from libcrypto,
 * and RFC 4648 base32.
 *
 * Invariants:
 *  1. A step is accepted only when it lies within +-window of now and is
 *     greater than *last_step_io; the new step is handed back for the
 *     caller to persist (replay protection lives with the caller's record).
 *  2. All 2 * window + 1 candidates are computed and compared in constant
 *     time; the outcome is decided after the loop, so the time taken does
 *     not tell which step matched.
 *  3. HMAC output is wiped at out: on every path.
 */
#include "totp.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>  /* EVP_sha1 and friends */
#include <openssl/hmac.h> /* HMAC(): libsodium lacks HMAC-SHA1 */

#include "secret.h" /* cfr_wipe, cfr_crypto_random */

static const uint32_t pow10_table[] = {
    1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u,
};

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int
cfr_totp_alg_parse(const char *name, enum cfr_totp_alg *alg_r)
{
    if (name == NULL) {
        return CFR_EINVAL;
    }
    if (strcmp(name, "sha1") == 0) {
        *alg_r = CFR_TOTP_SHA1;
    } else if (strcmp(name, "sha256") == 0) {
        *alg_r = CFR_TOTP_SHA256;
    } else if (strcmp(name, "sha512") == 0) {
        *alg_r = CFR_TOTP_SHA512;
    } else {
        return CFR_EINVAL;
    }
    return 0;
}

const char *
cfr_totp_alg_name(enum cfr_totp_alg alg)
{
    switch (alg) {
    case CFR_TOTP_SHA1:
        return "sha1";
    case CFR_TOTP_SHA256:
        return "sha256";
    case CFR_TOTP_SHA512:
        return "sha512";
    }
    return "unknown";
}

static const EVP_MD *
alg_md(enum cfr_totp_alg alg)
{
    switch (alg) {
    case CFR_TOTP_SHA1:
        return EVP_sha1();
    case CFR_TOTP_SHA256:
        return EVP_sha256();
    case CFR_TOTP_SHA512:
        return EVP_sha512();
    }
    return NULL;
}

int
cfr_hotp(const uint8_t *secret, size_t secret_len, enum cfr_totp_alg alg,
         unsigned digits, uint64_t counter, uint32_t *code_r,
         struct cfr_err *err)
{
    int rc = 0;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    uint8_t msg[8];
    const EVP_MD *md = alg_md(alg);

    *code_r = 0;
    if (md == NULL || digits < 6 || digits > 8) {
        rc = CFR_ERR(err, CFR_EINVAL, "hotp: bad algorithm or digits");
        goto out;
    }
    /*
     * The RFC 4226 minimum is 128 bits of secret but 80 is what the RFC
     * 6238 test vectors and many deployed apps use; the RFC 6238 SHA256
     * and SHA512 vectors need up to 64 bytes.
     */
    if (secret == NULL || secret_len < CFR_TOTP_SECRET_MIN ||
        secret_len > CFR_TOTP_SECRET_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "hotp: secret length %zu out of range",
                     secret_len);
        goto out;
    }
    for (int i = 7; i >= 0; i--) {
        msg[i] = (uint8_t)counter;
        counter >>= 8;
    }
    if (HMAC(md, secret, (int)secret_len, msg, sizeof(msg), mac, &mac_len) ==
            NULL ||
        mac_len < 20) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "hotp: libcrypto HMAC failed");
        goto out;
    }
    /* Dynamic truncation (RFC 4226 section 5.3). */
    unsigned off = mac[mac_len - 1] & 0x0fu;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7fu) << 24) |
                   ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | (uint32_t)mac[off + 3];
    *code_r = bin % pow10_table[digits];
out:
    cfr_wipe(mac, sizeof(mac));
    return rc;
}

static int
params_resolve(const struct cfr_totp_params *in, struct cfr_totp_params *out,
               struct cfr_err *err)
{
    struct cfr_totp_params p = {CFR_TOTP_SHA1, 6, 30, 0};
    if (in != NULL) {
        p = *in;
        if (p.alg == 0) {
            p.alg = CFR_TOTP_SHA1;
        }
        if (p.digits == 0) {
            p.digits = 6;
        }
        if (p.step_s == 0) {
            p.step_s = 30;
        }
    }
    if (alg_md(p.alg) == NULL || p.digits < 6 || p.digits > 8 ||
        p.step_s == 0 || p.step_s > 3600) {
        return CFR_ERR(err, CFR_EINVAL, "totp: bad parameters");
    }
    *out = p;
    return 0;
}

int
cfr_totp_step(const struct cfr_totp_params *params, int64_t unix_s,
              uint64_t *step_r, struct cfr_err *err)
{
    struct cfr_totp_params p = {0};
    int rc = params_resolve(params, &p, err);
    if (rc != 0) {
        return rc;
    }
    /* params_resolve refuses step 0; the analyser cannot see through it. */
    if (p.step_s == 0 || unix_s < p.t0_s) {
        return CFR_ERR(err, CFR_EINVAL, "totp: time before t0");
    }
    *step_r = (uint64_t)(unix_s - p.t0_s) / p.step_s;
    return 0;
}

int
cfr_totp_at(const uint8_t *secret, size_t secret_len,
            const struct cfr_totp_params *params, int64_t unix_s,
            uint32_t *code_r, struct cfr_err *err)
{
    struct cfr_totp_params p = {0};
    uint64_t step = 0;
    int rc;

    *code_r = 0;
    if ((rc = params_resolve(params, &p, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_totp_step(&p, unix_s, &step, err)) != 0) {
        goto out;
    }
    rc = cfr_hotp(secret, secret_len, p.alg, p.digits, step, code_r, err);
out:
    return rc;
}

int
cfr_totp_verify(const uint8_t *secret, size_t secret_len,
                const struct cfr_totp_params *params, int64_t now_ms,
                unsigned window, const char *code, uint64_t *last_step_io,
                struct cfr_err *err)
{
    struct cfr_totp_params p = {0};
    uint64_t now_step = 0;
    uint32_t want = 0;
    uint64_t matched = 0;
    uint32_t any = 0;
    uint32_t replay = 0;
    int rc;

    if ((rc = params_resolve(params, &p, err)) != 0) {
        goto out;
    }
    if (window > CFR_TOTP_WINDOW_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "totp: window %u too wide", window);
        goto out;
    }
    if (code == NULL || strlen(code) != p.digits) {
        rc = CFR_ERR(err, CFR_EINVAL, "totp: code must be %u digits", p.digits);
        goto out;
    }
    for (unsigned i = 0; i < p.digits; i++) {
        if (code[i] < '0' || code[i] > '9') {
            rc = CFR_ERR(err, CFR_EINVAL, "totp: code must be digits");
            goto out;
        }
        want = want * 10u + (uint32_t)(code[i] - '0');
    }
    if ((rc = cfr_totp_step(&p, now_ms / 1000, &now_step, err)) != 0) {
        goto out;
    }
    for (int64_t d = -(int64_t)window; d <= (int64_t)window; d++) {
        if (d < 0 && now_step < (uint64_t)-d) {
            continue;
        }
        uint64_t step = now_step + (uint64_t)d;
        uint32_t got = 0;
        if ((rc = cfr_hotp(secret, secret_len, p.alg, p.digits, step, &got,
                           err)) != 0) {
            goto out;
        }
        /* Branch-free equality: eq is 1 when got == want. */
        uint32_t diff = got ^ want;
        uint32_t eq = 1u & ((diff - 1u) >> 31) & ~(diff >> 31);
        uint32_t fresh = (uint32_t)(step > *last_step_io);
        /* Keep the latest fresh matching step; record stale matches. */
        uint64_t take = (uint64_t)0 - (uint64_t)(eq & fresh);
        matched = (matched & ~take) | (step & take);
        any |= eq & fresh;
        replay |= eq & (fresh ^ 1u);
    }
    if (any) {
        *last_step_io = matched;
        rc = 0;
    } else if (replay) {
        rc = CFR_ERR(err, CFR_EAUTH, "totp: code already used");
    } else {
        rc = CFR_ERR(err, CFR_EAUTH, "totp: wrong or expired code");
    }
out:
    return rc;
}

int
cfr_totp_secret_generate(uint8_t *secret, size_t len, struct cfr_err *err)
{
    if (len < CFR_TOTP_SECRET_MIN || len > CFR_TOTP_SECRET_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "totp: secret length %zu", len);
    }
    cfr_crypto_random(secret, len);
    return 0;
}

int
cfr_base32_encode(const uint8_t *p, size_t len, char *out, size_t out_size,
                  struct cfr_err *err)
{
    size_t need;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    if (len > (SIZE_MAX - 4) / 8) {
        return CFR_ERR(err, CFR_ELIMIT, "base32: input too long");
    }
    need = (len * 8 + 4) / 5 + 1;
    if (out == NULL || out_size < need) {
        return CFR_ERR(err, CFR_ELIMIT, "base32: output needs %zu bytes", need);
    }
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32_alphabet[(acc >> (bits - 5)) & 31u];
            bits -= 5;
        }
    }
    if (bits > 0) {
        out[o++] = b32_alphabet[(acc << (5 - bits)) & 31u];
    }
    out[o] = '\0';
    return 0;
}

static int
b32_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a';
    }
    if (c >= '2' && c <= '7') {
        return c - '2' + 26;
    }
    return -1;
}

int
cfr_base32_decode(const char *text, uint8_t *out, size_t out_max, size_t *len_r,
                  struct cfr_err *err)
{
    int rc = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;
    bool padding = false;

    *len_r = 0;
    for (const char *s = text; *s != '\0'; s++) {
        char c = *s;
        if (c == ' ' || c == '-') {
            continue;
        }
        if (c == '=') {
            padding = true;
            continue;
        }
        int v = b32_value(c);
        if (v < 0 || padding) {
            rc = CFR_ERR(err, CFR_EINVAL, "base32: invalid character");
            goto out;
        }
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            if (n == out_max) {
                rc = CFR_ERR(err, CFR_ELIMIT, "base32: more than %zu bytes",
                             out_max);
                goto out;
            }
            out[n++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
        acc &= (1u << bits) - 1u;
    }
    /*
     * Leftover bits must be fewer than 5 and zero; otherwise the text was
     * truncated or altered, and decoding it would silently change the key.
     */
    if (bits >= 5 || acc != 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "base32: trailing bits");
        goto out;
    }
    *len_r = n;
out:
    if (rc != 0) {
        cfr_wipe(out, out_max);
    }
    return rc;
}

/* Appends s percent-encoded (RFC 3986 unreserved bytes kept) at *pos. */
static bool
pct_append(char *out, size_t out_size, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        bool keep = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
                    *p == '_' || *p == '~';
        size_t need = keep ? 1 : 3;
        if (out_size - *pos <= need) {
            return false;
        }
        if (keep) {
            out[(*pos)++] = (char)*p;
        } else {
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[*p >> 4];
            out[(*pos)++] = hex[*p & 15u];
        }
    }
    out[*pos] = '\0';
    return true;
}

static bool
raw_append(char *out, size_t out_size, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (out_size - *pos <= n) {
        return false;
    }
    memcpy(out + *pos, s, n + 1);
    *pos += n;
    return true;
}

int
cfr_totp_uri(const uint8_t *secret, size_t secret_len,
             const struct cfr_totp_params *params, const char *issuer,
             const char *account, char *out, size_t out_size,
             struct cfr_err *err)
{
    struct cfr_totp_params p = {0};
    char b32[CFR_TOTP_BASE32_MAX];
    char tail[96];
    size_t pos = 0;
    int rc;

    if (out == NULL || out_size == 0) {
        return CFR_ERR(err, CFR_ELIMIT, "totp: no room for the URI");
    }
    out[0] = '\0';
    if ((rc = params_resolve(params, &p, err)) != 0) {
        goto out;
    }
    if (secret == NULL || secret_len < CFR_TOTP_SECRET_MIN ||
        secret_len > CFR_TOTP_SECRET_MAX || issuer == NULL || account == NULL ||
        issuer[0] == '\0' || account[0] == '\0') {
        rc = CFR_ERR(err, CFR_EINVAL, "totp: bad secret, issuer or account");
        goto out;
    }
    if ((rc = cfr_base32_encode(secret, secret_len, b32, sizeof(b32), err)) !=
        0) {
        goto out;
    }
    /* Apps name the algorithm in upper case. */
    snprintf(tail, sizeof(tail), "&algorithm=%s&digits=%u&period=%u",
             p.alg == CFR_TOTP_SHA1     ? "SHA1"
             : p.alg == CFR_TOTP_SHA256 ? "SHA256"
                                        : "SHA512",
             p.digits, p.step_s);
    if (!raw_append(out, out_size, &pos, "otpauth://totp/") ||
        !pct_append(out, out_size, &pos, issuer) ||
        !raw_append(out, out_size, &pos, ":") ||
        !pct_append(out, out_size, &pos, account) ||
        !raw_append(out, out_size, &pos, "?secret=") ||
        !raw_append(out, out_size, &pos, b32) ||
        !raw_append(out, out_size, &pos, "&issuer=") ||
        !pct_append(out, out_size, &pos, issuer) ||
        !raw_append(out, out_size, &pos, tail)) {
        rc = CFR_ERR(err, CFR_ELIMIT, "totp: URI longer than %zu bytes",
                     out_size);
        goto out;
    }
out:
    if (rc != 0) {
        cfr_wipe(out, out_size);
    }
    cfr_wipe(b32, sizeof(b32));
    return rc;
}
