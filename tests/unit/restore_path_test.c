/*
 * restore_path_test.c - the restore's path rules: a table of hostile
 * relative paths (absolute, "..", ".", empty components, NUL bytes, names
 * over NAME_MAX, paths over PATH_MAX) refused, their benign neighbours
 * accepted, and manifest entries mapped to Maildir++ paths or refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "restore.h"

struct pcase {
    const char *path;
    size_t len; /* 0: strlen */
    bool ok;
};

static void
test_restore_path_check_table(void **state)
{
    (void)state;
    static const struct pcase cases[] = {
        {"", 0, false},           {"/etc/passwd", 0, false},
        {"/", 0, false},          {"..", 0, false},
        {".", 0, false},          {"../x", 0, false},
        {"a/../b", 0, false},     {"a/..", 0, false},
        {"a/./b", 0, false},      {"./a", 0, false},
        {"a//b", 0, false},       {"a/", 0, false},
        {"a\0b", 3, false},       {"a/b\0", 4, false},
        {"a", 0, true},           {"cur/1767225601.M1P2.host:2,RS", 0, true},
        {".Sent/cur/x", 0, true}, {"..a", 0, true},
        {"a..", 0, true},         {"...", 0, true},
        {"a/b/c/d", 0, true},     {"dovecot-uidlist", 0, true},
    };
    struct cfr_err err;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].path);
        int rc = restore_path_check(cases[i].path, len, &err);
        if ((rc == 0) != cases[i].ok) {
            fail_msg("case %zu (\"%s\"): rc %d, expected %s", i, cases[i].path,
                     rc, cases[i].ok ? "ok" : "refused");
        }
        if (!cases[i].ok) {
            assert_int_equal(rc, CFR_EINVAL);
        }
    }
}

static void
test_restore_path_check_lengths(void **state)
{
    (void)state;
    static char p[2 * RESTORE_PATH_MAX];
    struct cfr_err err;
    size_t n;

    /* One component of exactly NAME_MAX is fine, one byte more is not. */
    memset(p, 'a', NAME_MAX + 1);
    assert_int_equal(restore_path_check(p, NAME_MAX, &err), 0);
    assert_int_equal(restore_path_check(p, NAME_MAX + 1, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "longer than"));

    /* Paths of 100-byte components: PATH_MAX - 1 bytes pass, PATH_MAX not. */
    memset(p, 'b', sizeof(p));
    for (size_t i = 100; i < sizeof(p); i += 101) {
        p[i] = '/';
    }
    n = RESTORE_PATH_MAX - 1;
    while (p[n - 1] == '/') {
        n--; /* no empty trailing component */
    }
    assert_int_equal(restore_path_check(p, n, &err), 0);
    assert_int_equal(restore_path_check(p, RESTORE_PATH_MAX, &err), CFR_EINVAL);
    assert_int_equal(restore_path_check(p, RESTORE_PATH_MAX + 100, &err),
                     CFR_EINVAL);
}

struct ecase {
    const char *folder;
    const char *name;
    size_t name_len; /* 0: strlen */
    enum cfr_snap_kind kind;
    const char *info;
    bool in_new;
    const char *want; /* NULL: refused */
};

static void
test_restore_path_of_entries(void **state)
{
    (void)state;
    static char longname[NAME_MAX + 8];
    memset(longname, 'n', NAME_MAX - 3);
    longname[NAME_MAX - 3] = '\0';
    const struct ecase cases[] = {
        {"", "1.M1.host", 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,S", false,
         "cur/1.M1.host:2,S"},
        {"", "1.M1.host", 0, CFR_SNAP_MAILDIR_MESSAGE, "", true,
         "new/1.M1.host"},
        {".Sent", "2.M2.host", 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,RS", false,
         ".Sent/cur/2.M2.host:2,RS"},
        {".Lists.dev", "/dovecot-uidlist", 0, CFR_SNAP_DOVECOT_META, "", false,
         ".Lists.dev/dovecot-uidlist"},
        {"", "/archive/old.mbox", 0, CFR_SNAP_MBOX, "", false,
         "archive/old.mbox"},
        {"", "/x", 0, CFR_SNAP_OPAQUE, "", false, "x"},
        /* Exactly NAME_MAX with the flags: fine; one more: refused. */
        {"", longname, 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,", false, NULL},
        {"", longname, 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,S", false, NULL},
        /* Hostile. */
        {"..", "m", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {".", "m", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {"Sent", "m", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {".a/../..", "m", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {"", "../../m", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {"", "", 0, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {"", "m", 0, CFR_SNAP_MAILDIR_MESSAGE, "/../../x", false, NULL},
        {"", "m\0x", 3, CFR_SNAP_MAILDIR_MESSAGE, "", false, NULL},
        {"", "/../x", 0, CFR_SNAP_OPAQUE, "", false, NULL},
        {"", "//etc/passwd", 0, CFR_SNAP_OPAQUE, "", false, NULL},
        {"", "/", 0, CFR_SNAP_OPAQUE, "", false, NULL},
        {"", "x", 0, CFR_SNAP_OPAQUE, "", false, NULL},
        {"", "/a/./b", 0, CFR_SNAP_MBOX, "", false, NULL},
        {"", "/a\0b", 4, CFR_SNAP_DOVECOT_META, "", false, NULL},
    };
    char want_long[NAME_MAX + 16];
    snprintf(want_long, sizeof(want_long), "cur/%s:2,", longname);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct ecase *c = &cases[i];
        uint8_t key[1024];
        size_t fl = strlen(c->folder);
        size_t nl = c->name_len ? c->name_len : strlen(c->name);
        struct cfr_snap_entry e;
        struct cfr_err err;
        char out[RESTORE_PATH_MAX];
        const char *want = c->want;
        size_t flen = 99;
        int rc;

        if (i == 6) {
            want = want_long; /* the NAME_MAX case */
        }
        memcpy(key, c->folder, fl);
        key[fl] = 0;
        memcpy(key + fl + 1, c->name, nl);
        memset(&e, 0, sizeof(e));
        e.key = key;
        e.key_len = fl + 1 + nl;
        e.kind = c->kind;
        e.info = (const uint8_t *)c->info;
        e.info_len = strlen(c->info);
        e.in_new = c->in_new;
        rc = restore_path_of(&e, out, sizeof(out), &flen, &err);
        if (want == NULL) {
            if (rc != CFR_EINVAL) {
                fail_msg("case %zu accepted as \"%s\"", i, out);
            }
            continue;
        }
        if (rc != 0) {
            fail_msg("case %zu refused: %s", i, err.msg);
        }
        assert_string_equal(out, want);
        assert_int_equal(flen, fl);
    }
}

static void
test_restore_path_of_needs_a_folder_separator(void **state)
{
    (void)state;
    struct cfr_snap_entry e;
    struct cfr_err err;
    char out[64];
    memset(&e, 0, sizeof(e));
    e.key = (const uint8_t *)"nofolder";
    e.key_len = 8;
    e.kind = CFR_SNAP_MAILDIR_MESSAGE;
    e.info = (const uint8_t *)"";
    assert_int_equal(restore_path_of(&e, out, sizeof(out), NULL, &err),
                     CFR_EINVAL);
    /* A path that does not fit the caller's buffer is refused, not cut. */
    e.key = (const uint8_t *)"\0/abcdefghijklmnopqrstuvwxyz";
    e.key_len = 28;
    e.kind = CFR_SNAP_OPAQUE;
    assert_int_equal(restore_path_of(&e, out, 8, NULL, &err), CFR_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_path_check_table),
        cmocka_unit_test(test_restore_path_check_lengths),
        cmocka_unit_test(test_restore_path_of_entries),
        cmocka_unit_test(test_restore_path_of_needs_a_folder_separator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
