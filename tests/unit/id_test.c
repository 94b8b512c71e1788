/*
 * id_test.c - chunk, name and plain IDs: known answers (RFC 7693 BLAKE2b
 * with 32-byte output, checked against Python's hashlib.blake2b) and the
 * properties the rest of Coffer relies on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "buf.h"
#include "id.h"
#include "secret.h"

static void
assert_id_hex(const uint8_t id[CFR_ID_LEN], const char *hex)
{
    char got[2 * CFR_ID_LEN + 1];
    cfr_hex_encode(id, CFR_ID_LEN, got);
    assert_string_equal(got, hex);
}

static void
test_id_plain_known_answers(void **state)
{
    (void)state;
    uint8_t id[CFR_ID_LEN];
    cfr_id_plain("abc", 3, id);
    assert_id_hex(id, "bddd813c634239723171ef3fee98579b"
                      "94964e3bb1cb3e427262c8c068d52319");
    cfr_id_plain(NULL, 0, id);
    assert_id_hex(id, "0e5751c026e543b2e8ab2eb06099daa1"
                      "d1e5df47778f7787faab45cdf12fe3a8");
}

static void
test_id_keyed_known_answers(void **state)
{
    (void)state;
    uint8_t key[CFR_ID_KEY_LEN];
    uint8_t id[CFR_ID_LEN];
    static const char msg[] = "From: a@example.org\r\n\r\nhello\r\n";
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)i;
    }
    cfr_id_chunk(key, msg, strlen(msg), id);
    assert_id_hex(id, "33a556cbb4eab82ca2c34146c835f7ba"
                      "7cc281d98e0742b6e3909db9888bbe3f");
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)(32 + i);
    }
    cfr_id_name(key, "INBOX/Archive", 13, id);
    assert_id_hex(id, "cd9eaab650c4053cefe68714f3ba71f5"
                      "64e8ee0905a6bf4c92c52e3819b2b344");
}

static void
test_id_key_and_content_change_the_id(void **state)
{
    (void)state;
    uint8_t k1[CFR_ID_KEY_LEN];
    uint8_t k2[CFR_ID_KEY_LEN];
    uint8_t data[4096];
    uint8_t a[CFR_ID_LEN];
    uint8_t b[CFR_ID_LEN];
    uint8_t plain[CFR_ID_LEN];
    cfr_crypto_random(k1, sizeof(k1));
    memcpy(k2, k1, sizeof(k2));
    k2[31] ^= 1;
    cfr_crypto_random(data, sizeof(data));

    cfr_id_chunk(k1, data, sizeof(data), a);
    cfr_id_chunk(k1, data, sizeof(data), b);
    assert_true(cfr_id_equal(a, b)); /* deterministic */
    cfr_id_chunk(k2, data, sizeof(data), b);
    assert_false(cfr_id_equal(a, b)); /* another tenant, another ID */
    cfr_id_plain(data, sizeof(data), plain);
    assert_false(cfr_id_equal(a, plain)); /* the key matters */

    /* Every single-bit flip in a short input changes the ID. */
    for (size_t bit = 0; bit < 64 * 8; bit++) {
        data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cfr_id_chunk(k1, data, sizeof(data), b);
        assert_false(cfr_id_equal(a, b));
        data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* A prefix is not the same object. */
    cfr_id_chunk(k1, data, sizeof(data) - 1, b);
    assert_false(cfr_id_equal(a, b));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_plain_known_answers),
        cmocka_unit_test(test_id_keyed_known_answers),
        cmocka_unit_test(test_id_key_and_content_change_the_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
