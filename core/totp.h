/*
 * totp.h - time-based one-time passwords (RFC 6238, over RFC 4226 HOTP)
 * and the base32 text form (RFC 4648) that authenticator apps read.
 *
 * The vault uses TOTP as the second factor for destructive admin
 * operations. HMAC comes from OpenSSL's libcrypto: libsodium has no
 * HMAC-SHA1, and SHA1 is what authenticator apps default to (HMAC-SHA1
 * stays sound as a PRF; the collision attacks on SHA1 do not apply).
 *
 * Invariants:
 *  1. A code is accepted only for a time step within +-window of now, and
 *     only for a step later than the last accepted one (*last_step_io):
 *     the same code, or an older one, is never accepted twice.
 *  2. Candidate codes are compared in constant time, and every candidate
 *     of the window is computed whether or not an earlier one matched.
 *  3. Intermediate HMAC output is wiped before return.
 *
 * Thread safety: all functions are reentrant; the caller serialises the
 * read-verify-store of last_step (sysdb does, under its lock).
 */
#ifndef CFR_TOTP_H
#define CFR_TOTP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

#define CFR_TOTP_SECRET_MIN     10 /* 80 bits, the RFC 4226 floor */
#define CFR_TOTP_SECRET_MAX     64
#define CFR_TOTP_SECRET_DEFAULT 20 /* what authenticator apps expect */
/* Base32 text of the longest secret, with NUL. */
#define CFR_TOTP_BASE32_MAX ((CFR_TOTP_SECRET_MAX * 8 + 4) / 5 + 1)
#define CFR_TOTP_WINDOW_MAX 10

enum cfr_totp_alg {
    CFR_TOTP_SHA1 = 1,
    CFR_TOTP_SHA256 = 2,
    CFR_TOTP_SHA512 = 3,
};

struct cfr_totp_params {
    enum cfr_totp_alg alg; /* 0 means SHA1 */
    unsigned digits;       /* 6..8; 0 means 6 */
    unsigned step_s;       /* 0 means 30 */
    int64_t t0_s;          /* the Unix time of step 0, normally 0 */
};

/* "sha1", "sha256", "sha512" -> alg. Returns 0 or CFR_EINVAL. */
int cfr_totp_alg_parse(const char *name, enum cfr_totp_alg *alg_r);
const char *cfr_totp_alg_name(enum cfr_totp_alg alg);

/*
 * HOTP (RFC 4226): the code for counter, as a number below 10^digits.
 * Returns 0, CFR_EINVAL for a bad secret length or parameters, or
 * CFR_EINTERNAL when libcrypto fails.
 */
int cfr_hotp(const uint8_t *secret, size_t secret_len, enum cfr_totp_alg alg,
             unsigned digits, uint64_t counter, uint32_t *code_r,
             struct cfr_err *err);

/* The time step of unix_s under params; CFR_EINVAL before t0. */
int cfr_totp_step(const struct cfr_totp_params *params, int64_t unix_s,
                  uint64_t *step_r, struct cfr_err *err);

/* The TOTP code at unix_s. params may be NULL (SHA1, 6 digits, 30 s). */
int cfr_totp_at(const uint8_t *secret, size_t secret_len,
                const struct cfr_totp_params *params, int64_t unix_s,
                uint32_t *code_r, struct cfr_err *err);

/*
 * Checks code (exactly `digits` ASCII digits) against the steps
 * now-window .. now+window (window <= CFR_TOTP_WINDOW_MAX) at now_ms (wall
 * milliseconds). A step not greater than *last_step_io is never accepted.
 * Returns 0 and stores the matched step in *last_step_io (the caller must
 * persist it before acting), or CFR_EAUTH (wrong, expired or replayed
 * code; err says which, without the code), CFR_EINVAL for a malformed code.
 */
int cfr_totp_verify(const uint8_t *secret, size_t secret_len,
                    const struct cfr_totp_params *params, int64_t now_ms,
                    unsigned window, const char *code, uint64_t *last_step_io,
                    struct cfr_err *err) __attribute__((warn_unused_result));

/* Fills secret with len (CFR_TOTP_SECRET_MIN..MAX) random bytes. */
int cfr_totp_secret_generate(uint8_t *secret, size_t len, struct cfr_err *err);

/*
 * Writes the provisioning URI authenticator apps read from a QR code:
 *   otpauth://totp/<issuer>:<account>?secret=<base32>&issuer=<issuer>
 *   &algorithm=SHA1&digits=6&period=30
 * issuer and account are percent-encoded. The URI contains the secret:
 * show it to the admin once, never log or store it. CFR_ELIMIT when out
 * is too small (out is wiped then).
 */
int cfr_totp_uri(const uint8_t *secret, size_t secret_len,
                 const struct cfr_totp_params *params, const char *issuer,
                 const char *account, char *out, size_t out_size,
                 struct cfr_err *err);

/*
 * Base32 (RFC 4648 alphabet, upper case, no padding on output). Encode
 * needs out_size >= (len * 8 + 4) / 5 + 1: CFR_ELIMIT otherwise.
 */
int cfr_base32_encode(const uint8_t *p, size_t len, char *out, size_t out_size,
                      struct cfr_err *err);
/*
 * Decodes text, ignoring case, spaces, dashes and trailing '=' padding
 * (as apps display secrets in groups). CFR_EINVAL for other characters or
 * non-zero trailing bits, CFR_ELIMIT when more than out_max bytes result.
 */
int cfr_base32_decode(const char *text, uint8_t *out, size_t out_max,
                      size_t *len_r, struct cfr_err *err);

#endif /* CFR_TOTP_H */
