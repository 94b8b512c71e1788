/*
 * restore_file_test.c - the restore's safe writer and its configuration:
 * files land with their bytes, mode and nanosecond mtime and no temporary
 * file is left; a symlink planted in the target (as the file's name or as
 * a folder on its path) is never followed and an existing file is never
 * replaced; a short file never appears under its name. Then the config:
 * unknown settings refused, values checked, the passphrase file's mode.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "restore.h"
#include "secret.h"

static char base[256];   /* per test: the scratch directory */
static char target[300]; /* base/target: the restore's root */
static char outside[300];

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static int
setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(base, sizeof(base), "%s/restore_file.XXXXXX",
             t != NULL && *t != '\0' ? t : "/tmp");
    if (mkdtemp(base) == NULL) {
        return -1;
    }
    snprintf(target, sizeof(target), "%s/target", base);
    snprintf(outside, sizeof(outside), "%s/outside", base);
    if (mkdir(target, 0700) != 0 || mkdir(outside, 0700) != 0) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    return nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int
open_target(void)
{
    int fd = open(target, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    return fd;
}

/* Entries of dir other than . and .. */
static size_t
entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    if (d == NULL) {
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

static void
read_back(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "rb");
    size_t n;
    assert_non_null(f);
    n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

static void
test_restore_file_writes_bytes_mode_mtime(void **state)
{
    (void)state;
    struct restore_file *wf = NULL;
    struct cfr_err err;
    struct stat sb;
    char p[400], got[64];
    const int64_t mtime = INT64_C(1767225600123456789);
    int fd = open_target();

    assert_int_equal(
        restore_file_begin(fd, ".Sent/cur/1.M1:2,S", 0100640, &wf, &err), 0);
    assert_int_equal(restore_file_write(wf, "hello ", 6, &err), 0);
    assert_int_equal(restore_file_write(wf, "world", 5, &err), 0);
    /* Before the commit the name does not exist; a temporary one does. */
    FMT(p, "%s/.Sent/cur/1.M1:2,S", target);
    assert_int_equal(access(p, F_OK), -1);
    FMT(p, "%s/.Sent/cur", target);
    assert_int_equal(entries(p), 1);
    assert_int_equal(restore_file_commit(wf, 11, mtime, &err), 0);

    FMT(p, "%s/.Sent/cur/1.M1:2,S", target);
    read_back(p, got, sizeof(got));
    assert_string_equal(got, "hello world");
    assert_int_equal(lstat(p, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0640);
    assert_int_equal(sb.st_mtim.tv_sec, 1767225600);
    assert_int_equal(sb.st_mtim.tv_nsec, 123456789);
    FMT(p, "%s/.Sent/cur", target);
    assert_int_equal(entries(p), 1); /* no temporary file left */
    FMT(p, "%s/.Sent", target);
    assert_int_equal(lstat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    close(fd);
}

static void
test_restore_file_planted_symlink_name_not_followed(void **state)
{
    (void)state;
    struct restore_file *wf = NULL;
    struct cfr_err err;
    char p[400], victim[400], got[64];
    struct stat sb;
    FILE *f;
    int fd = open_target();

    FMT(victim, "%s/victim", outside);
    f = fopen(victim, "w");
    assert_non_null(f);
    fputs("untouched", f);
    fclose(f);
    FMT(p, "%s/dovecot-uidlist", target);
    assert_int_equal(symlink(victim, p), 0);

    assert_int_equal(restore_file_begin(fd, "dovecot-uidlist", 0600, &wf, &err),
                     0);
    assert_int_equal(restore_file_write(wf, "evil", 4, &err), 0);
    assert_int_equal(restore_file_commit(wf, 4, 0, &err), CFR_EEXIST);

    read_back(victim, got, sizeof(got));
    assert_string_equal(got, "untouched");
    assert_int_equal(lstat(p, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(entries(target), 1); /* the link only: no temp file */
    close(fd);
}

static void
test_restore_file_planted_symlink_dir_not_followed(void **state)
{
    (void)state;
    struct restore_file *wf = NULL;
    struct cfr_err err;
    char p[400];
    int fd = open_target();

    /* "cur" leads outside: nothing may be created through it. */
    FMT(p, "%s/cur", target);
    assert_int_equal(symlink(outside, p), 0);
    assert_int_equal(restore_file_begin(fd, "cur/1.M1:2,S", 0600, &wf, &err),
                     CFR_EDENIED);
    assert_null(wf);
    /* Nor deeper through it. */
    assert_int_equal(restore_file_begin(fd, "cur/x/y", 0600, &wf, &err),
                     CFR_EDENIED);
    assert_int_equal(entries(outside), 0);

    /* A file where a folder goes is refused the same way. */
    FMT(p, "%s/.Trash", target);
    fclose(fopen(p, "w"));
    assert_int_equal(restore_file_begin(fd, ".Trash/cur/1.M1", 0600, &wf, &err),
                     CFR_EDENIED);
    /* And restore_open_dir, which lays out cur/ new/ tmp/. */
    {
        int dfd = -1;
        assert_int_equal(restore_open_dir(fd, "cur", 3, &dfd, &err),
                         CFR_EDENIED);
        assert_int_equal(dfd, -1);
    }
    assert_int_equal(entries(outside), 0);
    close(fd);
}

static void
test_restore_file_existing_file_never_replaced(void **state)
{
    (void)state;
    struct restore_file *wf = NULL;
    struct cfr_err err;
    char p[400], got[64];
    FILE *f;
    int fd = open_target();

    FMT(p, "%s/live", target);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs("live mail", f);
    fclose(f);
    assert_int_equal(restore_file_begin(fd, "live", 0600, &wf, &err), 0);
    assert_int_equal(restore_file_write(wf, "restored", 8, &err), 0);
    assert_int_equal(restore_file_commit(wf, 8, 0, &err), CFR_EEXIST);
    read_back(p, got, sizeof(got));
    assert_string_equal(got, "live mail");
    assert_int_equal(entries(target), 1);
    close(fd);
}

static void
test_restore_file_short_file_never_appears(void **state)
{
    (void)state;
    struct restore_file *wf = NULL;
    struct cfr_err err;
    char p[400];
    int fd = open_target();

    assert_int_equal(restore_file_begin(fd, "m", 0600, &wf, &err), 0);
    assert_int_equal(restore_file_write(wf, "abc", 3, &err), 0);
    assert_int_equal(restore_file_commit(wf, 4, 0, &err), CFR_ECORRUPT);
    FMT(p, "%s/m", target);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(entries(target), 0);

    /* Abort removes the temporary file too; NULL is accepted. */
    assert_int_equal(restore_file_begin(fd, "n", 0600, &wf, &err), 0);
    assert_int_equal(entries(target), 1);
    restore_file_abort(wf);
    restore_file_abort(NULL);
    assert_int_equal(entries(target), 0);

    /* A hostile relative path never gets as far as a file. */
    assert_int_equal(restore_file_begin(fd, "../escaped", 0600, &wf, &err),
                     CFR_EINVAL);
    assert_int_equal(restore_file_begin(fd, "/tmp/escaped", 0600, &wf, &err),
                     CFR_EINVAL);
    assert_int_equal(entries(base), 2); /* target and outside only */
    close(fd);
}

/* ---- configuration -------------------------------------------------- */

#define GOOD_CONF                                                              \
    "tenant = \"acme\";\nkey_file = \"/k\";\nvaults = [ \"a:1\", \"b:2\" ];\n" \
    "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n"

static void
test_restore_config_checked(void **state)
{
    (void)state;
    struct restore_config c;
    struct cfr_err err;
    static const char *const bad[] = {
        GOOD_CONF "colour = \"blue\";\n", /* unknown */
        GOOD_CONF "parallelism = 0;\n",   /* range */
        GOOD_CONF "batch = 5000;\n",      /* range */
        GOOD_CONF "tls2 = 1;\n",          /* unknown */
        "tenant = \"Acme!\";\nkey_file = \"/k\";\nvaults = [ \"a:1\" ];\n"
        "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n",
        "tenant = \"acme\";\nkey_file = \"/k\";\nvaults = [ ];\n"
        "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n",
        "tenant = \"acme\";\nkey_file = \"/k\";\nvaults = [ \"noport\" ];\n"
        "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n",
        "tenant = \"acme\";\nvaults = [ \"a:1\" ];\n" /* no key_file */
        "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; };\n",
        "tenant = \"acme\";\nkey_file = \"/k\";\nvaults = [ \"a:1\" ];\n"
        "tls = { ca = \"ca\"; cert = \"c\"; key = \"k\"; pin = 1; };\n",
    };

    assert_int_equal(restore_config_load_string(GOOD_CONF, &c, &err), 0);
    assert_string_equal(c.tenant, "acme");
    assert_int_equal(c.n_vaults, 2);
    assert_string_equal(c.vaults[1], "b:2");
    assert_null(c.passphrase_file);
    assert_int_equal(c.parallelism, 4);
    assert_int_equal(c.batch, 256);
    assert_int_equal(c.timeout_ms, 120000);
    restore_config_fini(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = restore_config_load_string(bad[i], &c, &err);
        if (rc != CFR_ECONFIG) {
            fail_msg("bad config %zu: rc %d", i, rc);
        }
        assert_null(c.cfg);
    }
    assert_int_equal(
        restore_config_load_string(GOOD_CONF "colour = 1;\n", &c, &err),
        CFR_ECONFIG);
    assert_non_null(strstr(err.msg, "colour"));
}

static void
test_restore_passphrase_file_mode(void **state)
{
    (void)state;
    struct cfr_secret *s = NULL;
    struct cfr_err err;
    char p[400];
    size_t len = 0;
    FILE *f;

    FMT(p, "%s/pass", base);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs("s3cret phrase\n", f);
    fclose(f);
    assert_int_equal(chmod(p, 0644), 0);
    assert_int_equal(restore_passphrase_file(p, &s, &len, &err), CFR_EDENIED);
    assert_null(s);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(restore_passphrase_file(p, &s, &len, &err), 0);
    assert_int_equal(len, 13); /* the newline is not part of it */
    assert_memory_equal(cfr_secret_ro(s), "s3cret phrase", 13);
    cfr_secret_free(s);

    /* Empty, missing and not-a-file are refused too. */
    f = fopen(p, "w");
    fclose(f);
    assert_int_equal(restore_passphrase_file(p, &s, &len, &err), CFR_ECONFIG);
    FMT(p, "%s/none", base);
    assert_int_equal(restore_passphrase_file(p, &s, &len, &err), CFR_ECONFIG);
    assert_int_equal(chmod(outside, 0700), 0);
    assert_int_equal(restore_passphrase_file(outside, &s, &len, &err),
                     CFR_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_restore_file_writes_bytes_mode_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_file_planted_symlink_name_not_followed, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_file_planted_symlink_dir_not_followed, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_file_existing_file_never_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_file_short_file_never_appears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_config_checked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_passphrase_file_mode,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
