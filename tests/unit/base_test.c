/*
 * base_test.c - err, log, clock, mem and buf: the pieces every module uses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "err.h"
#include "log.h"
#include "mem.h"

static void
test_err_records_code_message_and_errno(void **state)
{
    (void)state;
    struct cfr_err err;
    cfr_err_clear(&err);
    errno = ENOENT;
    int rc = CFR_ERR_ERRNO(&err, CFR_EIO, "open %s", "/nope");
    assert_int_equal(rc, CFR_EIO);
    assert_int_equal(err.code, CFR_EIO);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_non_null(strstr(err.msg, "open /nope: "));
    assert_non_null(strstr(err.msg, "No such file"));
    assert_string_equal(cfr_code_name(CFR_ECORRUPT), "corrupt");
    /* A NULL record still returns the code. */
    assert_int_equal(CFR_ERR(NULL, CFR_EAUTH, "x"), CFR_EAUTH);
}

static void
test_err_truncates_long_messages(void **state)
{
    (void)state;
    struct cfr_err err;
    char big[1000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CFR_ERR(&err, CFR_EINVAL, "%s", big);
    assert_int_equal(strlen(err.msg), CFR_ERR_MSG_MAX - 1);
}

struct captured {
    char line[4096];
    int count;
};

static void
capture_sink(void *ctx, enum cfr_log_level level, const char *line, size_t len)
{
    struct captured *c = ctx;
    (void)level;
    memcpy(c->line, line, len);
    c->line[len] = '\0';
    c->count++;
}

static void
test_log_format_level_and_injection(void **state)
{
    (void)state;
    struct captured cap = {0};
    cfr_log_set_sink(capture_sink, &cap);
    cfr_log_set_level(CFR_LOG_INFO);

    cfr_log(CFR_LOG_DEBUG, "test.hidden", "x=%d", 1);
    assert_int_equal(cap.count, 0);

    cfr_log(CFR_LOG_WARN, "test.event", "a=%d b=%s", 7, "z");
    assert_int_equal(cap.count, 1);
    assert_non_null(strstr(cap.line, " WARN test.event a=7 b=z"));

    /* A value with a newline cannot start a forged line. */
    cfr_log(CFR_LOG_INFO, "test.inject", "user=%s", "x\n2026 ERROR fake");
    assert_null(strchr(cap.line, '\n'));

    char q[64];
    assert_string_equal(cfr_log_quote("plain-value_1", q, sizeof(q)),
                        "plain-value_1");
    assert_string_equal(cfr_log_quote("a b\"c\n", q, sizeof(q)),
                        "\"a b\\\"c\\n\"");
    assert_string_equal(cfr_log_quote("", q, sizeof(q)), "\"\"");
    char small[10];
    cfr_log_quote("a long value with spaces", small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
    assert_non_null(strstr(small, "...\""));

    enum cfr_log_level lv;
    assert_int_equal(cfr_log_level_parse("debug", &lv), 0);
    assert_int_equal(lv, CFR_LOG_DEBUG);
    assert_int_equal(cfr_log_level_parse("loud", &lv), CFR_EINVAL);
    cfr_log_set_sink(NULL, NULL);
}

static void
test_clock_manual_and_offset(void **state)
{
    (void)state;
    struct cfr_clock *m = cfr_clock_manual_new(1000);
    assert_non_null(m);
    assert_int_equal(cfr_clock_now_ms(m), 1000);
    cfr_clock_advance(m, 30 * CFR_MS_PER_DAY);
    assert_int_equal(cfr_clock_now_ms(m), 1000 + 30 * CFR_MS_PER_DAY);
    cfr_clock_free(m);

    int64_t real = cfr_clock_now_ms(cfr_clock_system());
    struct cfr_clock *o = cfr_clock_offset_new(CFR_MS_PER_DAY);
    int64_t moved = cfr_clock_now_ms(o);
    assert_true(moved - real >= CFR_MS_PER_DAY - 1000);
    assert_true(moved - real <= CFR_MS_PER_DAY + 1000);
    cfr_clock_free(o);
    cfr_clock_free(cfr_clock_system()); /* ignored, must not crash */

    char s[32];
    assert_string_equal(cfr_clock_format(0, s, sizeof(s)),
                        "1970-01-01T00:00:00Z");
}

static void
test_buf_cap_and_growth(void **state)
{
    (void)state;
    struct cfr_buf b;
    struct cfr_err err;
    cfr_buf_init(&b, 1000);
    for (int i = 0; i < 250; i++) {
        assert_int_equal(cfr_buf_append_le32(&b, (uint32_t)i, &err), 0);
    }
    assert_int_equal(b.len, 1000);
    assert_int_equal(cfr_get_le32(b.data + 4 * 249), 249);
    assert_int_equal(cfr_buf_append_u8(&b, 1, &err), CFR_ELIMIT);
    assert_int_equal(err.code, CFR_ELIMIT);
    assert_int_equal(b.len, 1000);
    cfr_buf_fini(&b);

    /* An allocation failure is an error, and the buffer stays usable. */
    cfr_buf_init(&b, 1 << 20);
    cfr_mem_fail_after(1);
    assert_int_equal(cfr_buf_append(&b, "abc", 3, &err), CFR_ENOMEM);
    cfr_mem_fail_after(0);
    assert_int_equal(cfr_buf_append(&b, "abc", 3, &err), 0);
    assert_memory_equal(b.data, "abc", 3);
    cfr_buf_fini(&b);
}

static void
test_hex_roundtrip_and_rejects(void **state)
{
    (void)state;
    uint8_t in[4] = {0x00, 0xab, 0x7f, 0xff};
    char hex[9];
    assert_string_equal(cfr_hex_encode(in, 4, hex), "00ab7fff");
    uint8_t out[4];
    assert_int_equal(cfr_hex_decode("00AB7fff", out, 4), 0);
    assert_memory_equal(in, out, 4);
    assert_int_equal(cfr_hex_decode("00ab7ff", out, 4), CFR_EINVAL);
    assert_int_equal(cfr_hex_decode("00ab7fgf", out, 4), CFR_EINVAL);
}

static void
test_mem_overflow_checked(void **state)
{
    (void)state;
    size_t r;
    assert_int_equal(cfr_mul_ok(SIZE_MAX / 2 + 1, 2, &r), 0);
    assert_int_equal(cfr_mul_ok(3, 4, &r), 1);
    assert_int_equal(r, 12);
    assert_null(cfr_calloc(SIZE_MAX / 2 + 1, 2));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_records_code_message_and_errno),
        cmocka_unit_test(test_err_truncates_long_messages),
        cmocka_unit_test(test_log_format_level_and_injection),
        cmocka_unit_test(test_clock_manual_and_offset),
        cmocka_unit_test(test_buf_cap_and_growth),
        cmocka_unit_test(test_hex_roundtrip_and_rejects),
        cmocka_unit_test(test_mem_overflow_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
