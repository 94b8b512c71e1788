/*
 * cfg_test.c - configuration loading: types, ranges, units, unknown keys,
 * and error messages that name the file, line and setting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

static const char sample[] = "vault = {\n"
                             "  listen = \"127.0.0.1:7443\";\n"
                             "  workers = 8;\n"
                             "  tls13_only = true;\n"
                             "  retention = \"30d\";\n"
                             "  lease = 90;\n"
                             "  cache = \"512M\";\n"
                             "  peers = [\"a:1\", \"b:2\"];\n"
                             "};\n";

static void
test_cfg_reads_typed_values(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_cfg *cfg = cfr_cfg_load_string(sample, &err);
    assert_non_null(cfg);

    const char *s;
    assert_int_equal(cfr_cfg_string(cfg, "vault.listen", NULL, &s, &err), 0);
    assert_string_equal(s, "127.0.0.1:7443");
    int64_t i;
    assert_int_equal(cfr_cfg_int(cfg, "vault.workers", NULL, 1, 64, &i, &err),
                     0);
    assert_int_equal(i, 8);
    bool b;
    assert_int_equal(cfr_cfg_bool(cfg, "vault.tls13_only", NULL, &b, &err), 0);
    assert_true(b);
    int64_t ms;
    assert_int_equal(cfr_cfg_duration_ms(cfg, "vault.retention", NULL, 0,
                                         INT64_MAX, &ms, &err),
                     0);
    assert_int_equal(ms, 30LL * 86400 * 1000);
    /* A bare integer duration is seconds. */
    assert_int_equal(
        cfr_cfg_duration_ms(cfg, "vault.lease", NULL, 0, INT64_MAX, &ms, &err),
        0);
    assert_int_equal(ms, 90000);
    uint64_t sz;
    assert_int_equal(
        cfr_cfg_size(cfg, "vault.cache", NULL, 0, UINT64_MAX, &sz, &err), 0);
    assert_int_equal(sz, 512ULL << 20);
    size_t n;
    assert_int_equal(cfr_cfg_count(cfg, "vault.peers", &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cfr_cfg_string_at(cfg, "vault.peers", 1, &s, &err), 0);
    assert_string_equal(s, "b:2");
    assert_int_not_equal(cfr_cfg_string_at(cfg, "vault.peers", 2, &s, &err), 0);

    /* Defaults apply only when the setting is absent. */
    int64_t def = 5;
    assert_int_equal(cfr_cfg_int(cfg, "vault.absent", &def, 0, 10, &i, &err),
                     0);
    assert_int_equal(i, 5);
    cfr_cfg_free(cfg);
}

static void
test_cfg_errors_name_line_and_setting(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_cfg *cfg = cfr_cfg_load_string(sample, &err);
    assert_non_null(cfg);
    int64_t i;
    assert_int_equal(cfr_cfg_int(cfg, "vault.workers", NULL, 1, 4, &i, &err),
                     CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "<string>:3: vault.workers"));
    assert_non_null(strstr(err.msg, "out of range"));

    const char *s;
    assert_int_equal(cfr_cfg_string(cfg, "vault.workers", NULL, &s, &err),
                     CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "must be a string"));

    assert_int_equal(cfr_cfg_string(cfg, "vault.missing", NULL, &s, &err),
                     CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "vault.missing is missing"));

    static const char *const allowed[] = {
        "listen", "workers", "tls13_only", "retention", "lease", "peers", NULL};
    assert_int_equal(cfr_cfg_check_keys(cfg, "vault", allowed, &err),
                     CFR_ECONFIG);
    assert_non_null(strstr(err.msg, ":7: vault.cache: unknown setting"));
    cfr_cfg_free(cfg);

    /* A caller's own check is located like the module's. */
    cfg = cfr_cfg_load_string(sample, &err);
    assert_non_null(cfg);
    assert_int_equal(cfr_cfg_fail(cfg, "vault.listen", &err, "port %d", 7),
                     CFR_ECONFIG);
    assert_string_equal(err.msg, "<string>:2: vault.listen: port 7");
    assert_int_equal(cfr_cfg_fail(cfg, "vault.absent", &err, "needed"),
                     CFR_ECONFIG);
    assert_string_equal(err.msg, "<string>: vault.absent: needed");
    cfr_cfg_free(cfg);

    cfg = cfr_cfg_load_string("a = \"x\"; b = ;", &err);
    assert_null(cfg);
    assert_int_equal(err.code, CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "<string>:1:"));

    cfg = cfr_cfg_load_string("d = \"30x\";", &err);
    assert_non_null(cfg);
    int64_t ms;
    assert_int_equal(
        cfr_cfg_duration_ms(cfg, "d", NULL, 0, INT64_MAX, &ms, &err),
        CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "\"30x\" is not valid"));
    cfr_cfg_free(cfg);
}

static void
test_cfg_file_errors(void **state)
{
    (void)state;
    struct cfr_err err;
    assert_null(cfr_cfg_load_file("/nonexistent/coffer.conf", &err));
    assert_int_equal(err.code, CFR_ENOTFOUND);

    char path[] = "/tmp/cfg_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "x = 1;\ny = [1, \n";
    assert_int_equal(write(fd, text, sizeof(text) - 1),
                     (ssize_t)sizeof(text) - 1);
    close(fd);
    assert_null(cfr_cfg_load_file(path, &err));
    assert_int_equal(err.code, CFR_ECONFIG);
    assert_non_null(strstr(err.msg, path));
    unlink(path);
}

static void
test_cfg_parsers(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(cfr_parse_duration_ms("1h30m", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(cfr_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(cfr_parse_duration_ms("2w", &ms), 0);
    assert_int_equal(ms, 14LL * 86400000);
    assert_int_equal(cfr_parse_duration_ms("", &ms), CFR_EINVAL);
    assert_int_equal(cfr_parse_duration_ms("h", &ms), CFR_EINVAL);
    assert_int_equal(cfr_parse_duration_ms("5y", &ms), CFR_EINVAL);
    assert_int_equal(cfr_parse_duration_ms("-5s", &ms), CFR_EINVAL);
    assert_int_equal(cfr_parse_duration_ms("99999999999999999999d", &ms),
                     CFR_EINVAL);
    uint64_t sz;
    assert_int_equal(cfr_parse_size("4KiB", &sz), 0);
    assert_int_equal(sz, 4096);
    assert_int_equal(cfr_parse_size("2G", &sz), 0);
    assert_int_equal(sz, 2ULL << 30);
    assert_int_equal(cfr_parse_size("12", &sz), 0);
    assert_int_equal(sz, 12);
    assert_int_equal(cfr_parse_size("1M1K", &sz), CFR_EINVAL);
    assert_int_equal(cfr_parse_size("20000000000T", &sz), CFR_EINVAL);
}

static void
test_cfg_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/cfg_test_pem_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    struct cfr_err err;

    /* Empty, then a normal file, then one byte over the limit. */
    assert_null(cfr_cfg_read_file(path, "tls.key", &err));
    assert_int_equal(err.code, CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "tls.key"));
    assert_non_null(strstr(err.msg, "empty"));

    static const char pem[] = "-----BEGIN X-----\nabc\n-----END X-----\n";
    assert_int_equal(write(fd, pem, sizeof(pem) - 1), (ssize_t)sizeof(pem) - 1);
    char *text = cfr_cfg_read_file(path, "tls.key", &err);
    assert_non_null(text);
    assert_string_equal(text, pem);
    cfr_cfg_free_file(text);
    cfr_cfg_free_file(NULL);

    char *big = calloc(1, CFR_CFG_FILE_MAX);
    assert_non_null(big);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(write(fd, big, CFR_CFG_FILE_MAX),
                     (ssize_t)CFR_CFG_FILE_MAX);
    text = cfr_cfg_read_file(path, "tls.cert", &err);
    assert_non_null(text); /* exactly the limit is fine */
    cfr_cfg_free_file(text);
    assert_int_equal(write(fd, "x", 1), 1);
    assert_null(cfr_cfg_read_file(path, "tls.cert", &err));
    assert_non_null(strstr(err.msg, "larger than"));
    free(big);
    close(fd);
    unlink(path);

    assert_null(cfr_cfg_read_file(path, "tls.ca", &err));
    assert_int_equal(err.code, CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "tls.ca: cannot open"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cfg_reads_typed_values),
        cmocka_unit_test(test_cfg_errors_name_line_and_setting),
        cmocka_unit_test(test_cfg_file_errors),
        cmocka_unit_test(test_cfg_parsers),
        cmocka_unit_test(test_cfg_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
