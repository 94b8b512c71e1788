/*
 * json_test.c - JSON string literals (core/json.c): escapes, UTF-8 kept,
 * every invalid byte replaced, so any name gives valid JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "json.h"

static void
expect(const char *in, const char *want)
{
    char out[256];
    FILE *f = fmemopen(out, sizeof(out), "w");
    assert_non_null(f);
    cfr_json_fput(f, in);
    assert_int_equal(fclose(f), 0);
    assert_string_equal(out, want);

    struct cfr_buf b;
    struct cfr_err err;
    if (in != NULL) {
        cfr_buf_init(&b, 256);
        assert_int_equal(cfr_json_quote(&b, in, &err), 0);
        assert_int_equal(b.len, strlen(want));
        assert_memory_equal(b.data, want, b.len);
        cfr_buf_fini(&b);
    }
}

static void
test_json_escapes_and_utf8(void **state)
{
    (void)state;
    expect(NULL, "null");
    expect("", "\"\"");
    expect("plain", "\"plain\"");
    expect("a\"b\\c", "\"a\\\"b\\\\c\"");
    expect("\n\r\t\x01\x7f", "\"\\n\\r\\t\\u0001\\u007f\"");
    /* Valid UTF-8 passes: é, €, 😀. */
    expect("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
           "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* Latin-1, a stray continuation, an overlong '/', a surrogate, a
     * truncated sequence at the end: each bad byte becomes U+FFFD. */
    expect("caf\xe9", "\"caf\\ufffd\"");
    expect("\x80x", "\"\\ufffdx\"");
    expect("\xc0\xaf", "\"\\ufffd\\ufffd\"");
    expect("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
    expect("a\xe2\x82", "\"a\\ufffd\\ufffd\"");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escapes_and_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
