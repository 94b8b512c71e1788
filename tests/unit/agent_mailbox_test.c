/*
 * agent_mailbox_test.c - mailbox roots from %d/%n patterns (walking real
 * directory levels: matches, order, hidden entries, symlinks, users
 * without a Maildir, literal text around a placeholder) and from lists;
 * every pattern rule refused with CFR_ECONFIG. Runs in milliseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailbox.h"

static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < size);
}

static char root[PATH_MAX];

static void
mkdirs(const char *rel)
{
    char p[PATH_MAX];
    char cmd[PATH_MAX + 32];
    pathf(p, sizeof(p), "%s/%s", root, rel);
    pathf(cmd, sizeof(cmd), "mkdir -p '%s'", p);
    assert_int_equal(system(cmd), 0);
}

static int
setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    pathf(root, sizeof(root), "%s/agent_mailbox_XXXXXX",
          tmp != NULL ? tmp : "/tmp");
    assert_non_null(mkdtemp(root));
    mkdirs("vmail/example.com/bob/Maildir");
    mkdirs("vmail/example.com/alice/Maildir");
    mkdirs("vmail/example.org/carol/Maildir");
    mkdirs("vmail/example.org/dave");           /* no mail yet */
    mkdirs("vmail/example.org/.trash/Maildir"); /* hidden: not a user */
    mkdirs("vmail/.snapshot/x/Maildir");        /* hidden: not a domain */
    mkdirs("homes/u-eve.d");
    mkdirs("homes/u-frank.d");
    mkdirs("homes/other");
    char p[PATH_MAX];
    char t[PATH_MAX];
    /* A symlinked domain would report alice and bob twice. */
    pathf(p, sizeof(p), "%s/vmail/alias.com", root);
    pathf(t, sizeof(t), "%s/vmail/example.com", root);
    assert_int_equal(symlink(t, p), 0);
    pathf(p, sizeof(p), "%s/vmail/README", root);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 32];
    pathf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

struct found {
    char names[16][64];
    char roots[16][PATH_MAX];
    size_t n;
    int stop_at; /* return 42 at this call (1-based), 0: never */
};

static int
found_cb(void *ctx, const char *name, const char *mroot)
{
    struct found *f = ctx;
    assert_true(f->n < 16);
    pathf(f->names[f->n], sizeof(f->names[0]), "%s", name);
    pathf(f->roots[f->n], sizeof(f->roots[0]), "%s", mroot);
    f->n++;
    return (int)f->n == f->stop_at ? 42 : 0;
}

static void
test_mailbox_expand_domain_user(void **state)
{
    (void)state;
    char pat[PATH_MAX];
    char want[PATH_MAX];
    pathf(pat, sizeof(pat), "%s/vmail/%%d/%%n/Maildir", root);
    struct found f = {0};
    struct agent_mailbox_stats st;
    struct cfr_err err;
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, &st, &err), 0);
    assert_int_equal(f.n, 3);
    /* Sorted by domain, then user. */
    assert_string_equal(f.names[0], "alice@example.com");
    assert_string_equal(f.names[1], "bob@example.com");
    assert_string_equal(f.names[2], "carol@example.org");
    pathf(want, sizeof(want), "%s/vmail/example.org/carol/Maildir", root);
    assert_string_equal(f.roots[2], want);
    assert_int_equal(st.found, 3);
    assert_int_equal(st.missing, 1); /* dave has no Maildir */
    assert_int_equal(st.skipped, 2); /* the symlinked domain, README */
    assert_int_equal(st.errors, 0);
}

static void
test_mailbox_expand_user_only_and_affixes(void **state)
{
    (void)state;
    char pat[PATH_MAX];
    struct found f = {0};
    struct cfr_err err;
    pathf(pat, sizeof(pat), "%s/vmail/example.com/%%n/Maildir", root);
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, NULL, &err), 0);
    assert_int_equal(f.n, 2);
    assert_string_equal(f.names[0], "alice");
    assert_string_equal(f.names[1], "bob");

    /* Literal text around the placeholder: only matching entries. */
    memset(&f, 0, sizeof(f));
    pathf(pat, sizeof(pat), "%s/homes/u-%%n.d", root);
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, NULL, &err), 0);
    assert_int_equal(f.n, 2);
    assert_string_equal(f.names[0], "eve");
    assert_string_equal(f.names[1], "frank");

    /* A domain-only pattern names the domain. */
    memset(&f, 0, sizeof(f));
    pathf(pat, sizeof(pat), "%s/vmail/%%d/carol", root);
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, NULL, &err), 0);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.names[0], "example.org");
}

static void
test_mailbox_expand_stop_and_missing(void **state)
{
    (void)state;
    char pat[PATH_MAX];
    struct found f = {0};
    f.stop_at = 2;
    struct cfr_err err;
    pathf(pat, sizeof(pat), "%s/vmail/%%d/%%n/Maildir", root);
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, NULL, &err), 42);
    assert_int_equal(f.n, 2);
    memset(&f, 0, sizeof(f));
    pathf(pat, sizeof(pat), "%s/nowhere/%%d/%%n", root);
    assert_int_equal(agent_mailbox_expand(pat, found_cb, &f, NULL, &err),
                     CFR_ENOTFOUND);
    assert_int_equal(f.n, 0);
}

static void
test_mailbox_bad_patterns(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "vmail/%d/%n",           /* relative */
        "/var/vmail/Maildir",    /* no placeholder */
        "/var/vmail/%u/Maildir", /* unknown placeholder */
        "/var/%d/%d",            /* twice */
        "/var/%d@%n",            /* two in one component */
        "/var/../%d/%n",         /* dot-dot */
        "/var/%",                /* dangling */
    };
    struct cfr_err err;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(agent_mailbox_check_pattern(bad[i], &err),
                         CFR_ECONFIG);
        assert_int_equal(
            agent_mailbox_expand(bad[i], found_cb, NULL, NULL, &err),
            CFR_ECONFIG);
    }
    assert_int_equal(
        agent_mailbox_check_pattern("/var/vmail/%d/%n/Maildir", &err), 0);
    assert_int_equal(agent_mailbox_check_pattern("/srv/100%%/%n", &err), 0);
}

static void
test_mailbox_list(void **state)
{
    (void)state;
    const char *names[] = {"shared@example.com", "archive"};
    const char *roots[] = {"/srv/shared/Maildir", "/srv/archive"};
    struct found f = {0};
    struct cfr_err err;
    assert_int_equal(agent_mailbox_list(names, roots, 2, found_cb, &f, &err),
                     0);
    assert_int_equal(f.n, 2);
    assert_string_equal(f.names[1], "archive");
    assert_string_equal(f.roots[1], "/srv/archive");

    const char *dup_names[] = {"a", "b", "a"};
    const char *dup_roots[] = {"/a", "/b", "/c"};
    memset(&f, 0, sizeof(f));
    assert_int_equal(
        agent_mailbox_list(dup_names, dup_roots, 3, found_cb, &f, &err),
        CFR_ECONFIG);
    assert_int_equal(f.n, 0); /* a bad list reports nothing */
    const char *rel_roots[] = {"/a", "relative"};
    assert_int_equal(
        agent_mailbox_list(names, rel_roots, 2, found_cb, &f, &err),
        CFR_ECONFIG);
    const char *empty[] = {""};
    assert_int_equal(agent_mailbox_list(empty, roots, 1, found_cb, &f, &err),
                     CFR_ECONFIG);
    assert_int_equal(f.n, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox_expand_domain_user),
        cmocka_unit_test(test_mailbox_expand_user_only_and_affixes),
        cmocka_unit_test(test_mailbox_expand_stop_and_missing),
        cmocka_unit_test(test_mailbox_bad_patterns),
        cmocka_unit_test(test_mailbox_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
