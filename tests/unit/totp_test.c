/*
 * totp_test.c - TOTP and HOTP against the RFC vectors, the +-1 window,
 * replay refusal and base32.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "err.h"
#include "totp.h"

static const uint8_t seed20[] = "12345678901234567890";
static const uint8_t seed32[] = "12345678901234567890123456789012";
static const uint8_t seed64[] =
    "1234567890123456789012345678901234567890123456789012345678901234";

/* RFC 6238 Appendix B: time, then SHA1, SHA256, SHA512 codes (8 digits). */
static const struct {
    int64_t t;
    uint32_t sha1, sha256, sha512;
} rfc6238[] = {
    {59, 94287082u, 46119246u, 90693936u},
    {1111111109, 7081804u, 68084774u, 25091201u},
    {1111111111, 14050471u, 67062674u, 99943326u},
    {1234567890, 89005924u, 91819424u, 93441116u},
    {2000000000, 69279037u, 90698825u, 38618901u},
    {INT64_C(20000000000), 65353130u, 77737706u, 47863826u},
};

static void
test_totp_rfc6238_vectors(void **state)
{
    (void)state;
    struct cfr_err err;
    for (size_t i = 0; i < sizeof(rfc6238) / sizeof(rfc6238[0]); i++) {
        struct cfr_totp_params p = {CFR_TOTP_SHA1, 8, 30, 0};
        uint32_t code = 0;
        assert_int_equal(cfr_totp_at(seed20, 20, &p, rfc6238[i].t, &code, &err),
                         0);
        assert_int_equal(code, rfc6238[i].sha1);
        p.alg = CFR_TOTP_SHA256;
        assert_int_equal(cfr_totp_at(seed32, 32, &p, rfc6238[i].t, &code, &err),
                         0);
        assert_int_equal(code, rfc6238[i].sha256);
        p.alg = CFR_TOTP_SHA512;
        assert_int_equal(cfr_totp_at(seed64, 64, &p, rfc6238[i].t, &code, &err),
                         0);
        assert_int_equal(code, rfc6238[i].sha512);
    }
}

static void
test_totp_rfc4226_hotp_vectors(void **state)
{
    (void)state;
    static const uint32_t want[] = {755224, 287082, 359152, 969429, 338314,
                                    254676, 287922, 162583, 399871, 520489};
    struct cfr_err err;
    for (uint64_t c = 0; c < 10; c++) {
        uint32_t code = 0;
        assert_int_equal(cfr_hotp(seed20, 20, CFR_TOTP_SHA1, 6, c, &code, &err),
                         0);
        assert_int_equal(code, want[c]);
    }
}

/* Formats code as a zero-padded string of digits. */
static void
fmt_code(uint32_t code, unsigned digits, char *out)
{
    out[digits] = '\0';
    for (unsigned i = digits; i > 0; i--) {
        out[i - 1] = (char)('0' + code % 10);
        code /= 10;
    }
}

static void
test_totp_window_accepts_neighbours_only(void **state)
{
    (void)state;
    struct cfr_err err;
    const int64_t now_s = 1111111111; /* step 37037037, 10 s into it */
    char code[9];
    uint32_t c;
    for (int d = -3; d <= 3; d++) {
        uint64_t last = 0;
        assert_int_equal(
            cfr_totp_at(seed20, 20, NULL, now_s + d * 30, &c, &err), 0);
        fmt_code(c, 6, code);
        int rc = cfr_totp_verify(seed20, 20, NULL, now_s * 1000, 1, code, &last,
                                 &err);
        if (d >= -1 && d <= 1) {
            assert_int_equal(rc, 0);
            assert_int_equal(last, (uint64_t)(now_s / 30 + d));
        } else {
            assert_int_equal(rc, CFR_EAUTH);
            assert_int_equal(last, 0);
        }
    }
    /* With window 0 only the current step passes. */
    uint64_t last = 0;
    assert_int_equal(cfr_totp_at(seed20, 20, NULL, now_s - 30, &c, &err), 0);
    fmt_code(c, 6, code);
    assert_int_equal(
        cfr_totp_verify(seed20, 20, NULL, now_s * 1000, 0, code, &last, &err),
        CFR_EAUTH);
}

static void
test_totp_replay_refused(void **state)
{
    (void)state;
    struct cfr_err err;
    const int64_t now_s = 2000000000;
    uint64_t last = 0;
    uint32_t c;
    char code[9], prev[9];

    assert_int_equal(cfr_totp_at(seed20, 20, NULL, now_s, &c, &err), 0);
    fmt_code(c, 6, code);
    assert_int_equal(
        cfr_totp_verify(seed20, 20, NULL, now_s * 1000, 1, code, &last, &err),
        0);
    uint64_t used = last;
    /* The same code again, even a second later: refused as a replay. */
    int rc = cfr_totp_verify(seed20, 20, NULL, now_s * 1000 + 1000, 1, code,
                             &last, &err);
    assert_int_equal(rc, CFR_EAUTH);
    assert_non_null(strstr(err.msg, "already used"));
    assert_int_equal(last, used);
    /* An older code of the window is refused too. */
    assert_int_equal(cfr_totp_at(seed20, 20, NULL, now_s - 30, &c, &err), 0);
    fmt_code(c, 6, prev);
    assert_int_equal(
        cfr_totp_verify(seed20, 20, NULL, now_s * 1000, 1, prev, &last, &err),
        CFR_EAUTH);
    /* The next step's code is fine. */
    assert_int_equal(cfr_totp_at(seed20, 20, NULL, now_s + 30, &c, &err), 0);
    fmt_code(c, 6, code);
    assert_int_equal(cfr_totp_verify(seed20, 20, NULL, (now_s + 30) * 1000, 1,
                                     code, &last, &err),
                     0);
    assert_int_equal(last, used + 1);
}

static void
test_totp_rejects_malformed_codes(void **state)
{
    (void)state;
    struct cfr_err err;
    uint64_t last = 0;
    const char *bad[] = {"", "12345", "1234567", "12a456", " 12345", "-12345"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(
            cfr_totp_verify(seed20, 20, NULL, 59000, 1, bad[i], &last, &err),
            CFR_EINVAL);
    }
    assert_int_equal(
        cfr_totp_verify(seed20, 20, NULL, 59000, 1, NULL, &last, &err),
        CFR_EINVAL);
    /* Secrets too short for RFC 4226 are refused, not used. */
    uint32_t c;
    assert_int_equal(cfr_hotp(seed20, 9, CFR_TOTP_SHA1, 6, 0, &c, &err),
                     CFR_EINVAL);
    assert_int_equal(cfr_hotp(seed20, 20, CFR_TOTP_SHA1, 9, 0, &c, &err),
                     CFR_EINVAL);
    assert_int_equal(last, 0);
}

static void
test_totp_base32_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const plain[] = {"",     "f",     "fo",    "foo",
                                        "foob", "fooba", "foobar"};
    static const char *const enc[] = {
        "", "MY", "MZXQ", "MZXW6", "MZXW6YQ", "MZXW6YTB", "MZXW6YTBOI"};
    struct cfr_err err;
    for (size_t i = 0; i < 7; i++) {
        char out[32];
        uint8_t dec[16];
        size_t n = 99;
        assert_int_equal(cfr_base32_encode((const uint8_t *)plain[i],
                                           strlen(plain[i]), out, sizeof(out),
                                           &err),
                         0);
        assert_string_equal(out, enc[i]);
        assert_int_equal(cfr_base32_decode(enc[i], dec, sizeof(dec), &n, &err),
                         0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(dec, plain[i], n);
    }
    /* Padding, lower case and app-style grouping are accepted. */
    uint8_t dec[16];
    size_t n = 0;
    assert_int_equal(
        cfr_base32_decode("mzxw 6ytb-oi======", dec, sizeof(dec), &n, &err), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(dec, "foobar", 6);
    /* Bad characters, stray bits and overflow are errors. */
    assert_int_equal(cfr_base32_decode("MZ1W", dec, sizeof(dec), &n, &err),
                     CFR_EINVAL);
    assert_int_equal(cfr_base32_decode("MZ", dec, sizeof(dec), &n, &err),
                     CFR_EINVAL);
    assert_int_equal(cfr_base32_decode("M=Y", dec, sizeof(dec), &n, &err),
                     CFR_EINVAL);
    assert_int_equal(cfr_base32_decode("MZXW6YTBOI", dec, 5, &n, &err),
                     CFR_ELIMIT);
    char small[4];
    assert_int_equal(cfr_base32_encode((const uint8_t *)"foo", 3, small,
                                       sizeof(small), &err),
                     CFR_ELIMIT);
}

static void
test_totp_generated_secret_round_trips(void **state)
{
    (void)state;
    struct cfr_err err;
    uint8_t a[CFR_TOTP_SECRET_DEFAULT], b[CFR_TOTP_SECRET_DEFAULT],
        back[CFR_TOTP_SECRET_MAX];
    char text[CFR_TOTP_BASE32_MAX];
    size_t n = 0;
    assert_int_equal(cfr_totp_secret_generate(a, sizeof(a), &err), 0);
    assert_int_equal(cfr_totp_secret_generate(b, sizeof(b), &err), 0);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(cfr_base32_encode(a, sizeof(a), text, sizeof(text), &err),
                     0);
    assert_int_equal(strlen(text), 32);
    assert_int_equal(cfr_base32_decode(text, back, sizeof(back), &n, &err), 0);
    assert_int_equal(n, sizeof(a));
    assert_memory_equal(a, back, n);
    assert_int_equal(cfr_totp_secret_generate(a, 4, &err), CFR_EINVAL);
    enum cfr_totp_alg alg;
    assert_int_equal(cfr_totp_alg_parse("sha256", &alg), 0);
    assert_int_equal(alg, CFR_TOTP_SHA256);
    assert_string_equal(cfr_totp_alg_name(alg), "sha256");
    assert_int_equal(cfr_totp_alg_parse("md5", &alg), CFR_EINVAL);
}

static void
test_totp_provisioning_uri(void **state)
{
    (void)state;
    struct cfr_err err;
    char uri[256];
    assert_int_equal(cfr_totp_uri((const uint8_t *)"foobarfoob", 10, NULL,
                                  "Coffer Vault", "acme/alice@x", uri,
                                  sizeof(uri), &err),
                     0);
    assert_string_equal(uri, "otpauth://totp/Coffer%20Vault:acme%2Falice%40x"
                             "?secret=MZXW6YTBOJTG633C&issuer=Coffer%20Vault"
                             "&algorithm=SHA1&digits=6&period=30");
    struct cfr_totp_params p = {CFR_TOTP_SHA256, 8, 60, 0};
    assert_int_equal(
        cfr_totp_uri(seed32, 32, &p, "c", "a", uri, sizeof(uri), &err), 0);
    assert_non_null(strstr(uri, "&algorithm=SHA256&digits=8&period=60"));
    /* Too small: refused, and nothing of the secret is left behind. */
    char small[40];
    memset(small, 'x', sizeof(small));
    assert_int_equal(cfr_totp_uri(seed20, 20, NULL, "Coffer", "alice", small,
                                  sizeof(small), &err),
                     CFR_ELIMIT);
    for (size_t i = 0; i < sizeof(small); i++) {
        assert_int_equal(small[i], 0);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totp_rfc6238_vectors),
        cmocka_unit_test(test_totp_rfc4226_hotp_vectors),
        cmocka_unit_test(test_totp_window_accepts_neighbours_only),
        cmocka_unit_test(test_totp_replay_refused),
        cmocka_unit_test(test_totp_rejects_malformed_codes),
        cmocka_unit_test(test_totp_base32_rfc4648_vectors),
        cmocka_unit_test(test_totp_generated_secret_round_trips),
        cmocka_unit_test(test_totp_provisioning_uri),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
