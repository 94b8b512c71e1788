/*
 * restore_dovecot_run_test.c - Dovecot sees a restored mailbox as it saw
 * the original (issue 5): same messages, Message-IDs, flags and keywords,
 * UIDs and UIDVALIDITY, so IMAP clients keep their caches.
 *
 * (Named *_run_test so its target does not clash with the unit test
 * tests/unit/restore_dovecot_test.c.)
 *
 * The original Maildir is made by Dovecot itself (doveadm save, flags,
 * expunge; indexes inside the Maildir, as a default Dovecot keeps them):
 * INBOX, Sent and Archive.2024, \Seen \Answered \Flagged, two keywords,
 * and an expunged message so UIDs have a gap a renumbering would close.
 * The real coffer-agent backs it up to a real vault over mutual TLS, the
 * real coffer-restore brings it back (running restore_dovecot_finish on
 * each folder), and restore_doveadm_list reads both trees via doveadm:
 *  1. every message matches field for field, in the same order;
 *  2. no stale dovecot.index* file is left in a restored folder (the
 *     original had them), and a second restore_dovecot_finish changes
 *     nothing;
 *  3. the comparison can fail: without the restored uidlist, Dovecot
 *     gives the INBOX a new UIDVALIDITY and closes the UID gap;
 *  4. a partial restore (a message missing, one the uidlist lacks) keeps
 *     every other UID and gives the newcomer the old NextUID.
 * Skipped when doveadm is absent. About 1-2 s, most of it the agent's
 * init (key derivation) and the vault start.
 */
#define _GNU_SOURCE

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_run_support.h"    /* programs, configs */
#include "dovecot.h"              /* restore_dovecot_finish, doveadm list */
#include "dovecot_support.h"      /* the original, made by Dovecot */
#include "mem.h"                  /* cfr_calloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "scenario_support.h"     /* vault, configs, runs */
#include "vault_client_support.h" /* vc_now_ms */

#define ESCROW_PW "dovecot test escrow passphrase"
#define MAILBOX   "alice@example.org"
#define RUN_MS    120000
#define MSGS_MAX  32
#define FMT       SCN_FMT

static struct scn sc = {
    .escrow_pw = ESCROW_PW, SCN_PROGRAMS, .n_vaults = 1, .run_ms = RUN_MS};
static char maildir[VS_PATH_MAX + 64];
static char restored[VS_PATH_MAX + 64];

struct listing {
    size_t n;
    struct restore_doveadm_msg m[MSGS_MAX];
};

static int
collect(void *ctx, const struct restore_doveadm_msg *m)
{
    struct listing *l = ctx;
    if (l->n == MSGS_MAX) {
        return CFR_ELIMIT;
    }
    l->m[l->n++] = *m;
    return 0;
}

static void
list(const char *root, struct listing *l)
{
    struct cfr_err err;
    l->n = 0;
    if (restore_doveadm_list(root, collect, l, &err) != 0) {
        fail_msg("doveadm list of %s: %s", root, err.msg);
    }
}

/* The first difference between two listings, or NULL. */
static const char *
differ(const struct listing *a, const struct listing *b, char *why, size_t n)
{
    if (a->n != b->n) {
        snprintf(why, n, "%zu messages, then %zu", a->n, b->n);
        return why;
    }
    for (size_t i = 0; i < a->n; i++) {
        const struct restore_doveadm_msg *x = &a->m[i], *y = &b->m[i];
        if (strcmp(x->mailbox, y->mailbox) != 0 ||
            x->uidvalidity != y->uidvalidity || x->uid != y->uid ||
            strcmp(x->flags, y->flags) != 0 || x->size != y->size ||
            strcmp(x->message_id, y->message_id) != 0 ||
            strcmp(x->guid, y->guid) != 0) {
            snprintf(why, n,
                     "message %zu: %s V%" PRIu32 " uid %" PRIu32
                     " [%s] %s %s, then %s V%" PRIu32 " uid %" PRIu32
                     " [%s] %s %s",
                     i, x->mailbox, x->uidvalidity, x->uid, x->flags,
                     x->message_id, x->guid, y->mailbox, y->uidvalidity, y->uid,
                     y->flags, y->message_id, y->guid);
            return why;
        }
    }
    return NULL;
}

static const struct restore_doveadm_msg *
find(const struct listing *l, const char *mailbox, uint32_t uid)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->m[i].mailbox, mailbox) == 0 && l->m[i].uid == uid) {
            return &l->m[i];
        }
    }
    return NULL;
}

/* Files named dovecot.index* in folder (below root). */
static int
count_indexes(const char *root, const char *folder)
{
    char p[VS_PATH_MAX + 128];
    DIR *d;
    struct dirent *de;
    int n = 0;
    FMT(p, "%s/%s", root, folder);
    d = opendir(p);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        n += strncmp(de->d_name, "dovecot.index", 13) == 0;
    }
    closedir(d);
    return n;
}

/* Removes the message whose base name is base from folder's cur/ or
 * new/. 0 or -1. */
static int
remove_message(const char *root, const char *folder, const char *base)
{
    static const char *const subs[] = {"cur", "new"};
    char p[VS_PATH_MAX + 512];
    size_t bl = strlen(base);
    for (size_t i = 0; i < 2; i++) {
        DIR *d;
        struct dirent *de;
        FMT(p, "%s/%s/%s", root, folder, subs[i]);
        if ((d = opendir(p)) == NULL) {
            continue;
        }
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, base, bl) == 0 &&
                (de->d_name[bl] == '\0' || de->d_name[bl] == ':')) {
                FMT(p, "%s/%s/%s/%s", root, folder, subs[i], de->d_name);
                closedir(d);
                return unlink(p);
            }
        }
        closedir(d);
    }
    return -1;
}

static void
dv(const struct dvs *d, const char *const *args)
{
    int rc = dvs_run(d, args, NULL);
    if (rc != 0) {
        char p[DVS_PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/doveadm.err", d->dir);
        char *e = ars_slurp(p, NULL);
        fail_msg("doveadm %s: exit %d: %s", args[0], rc, e != NULL ? e : "");
    }
}

static void
save(const struct dvs *d, const char *mailbox, const char *id, int day)
{
    char text[512];
    FMT(text,
        "From: bob@example.org\nTo: alice@example.org\n"
        "Date: %02d Oct 2026 10:00:00 +0000\nSubject: %s\n"
        "Message-ID: <%s@example.org>\n\nHello %s.\n",
        day, id, id, id);
    assert_int_equal(dvs_save(d, mailbox, text), 0);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    if (scn_setup(&sc) != 0) {
        return -1;
    }
    snprintf(maildir, sizeof(maildir), "%s/alice", sc.env.dir);
    snprintf(restored, sizeof(restored), "%s/restored", sc.env.dir);
    return 0;
}

/* ---- the test ----------------------------------------------------------- */

static void
test_restore_dovecot_roundtrip(void **state)
{
    struct dvs d;
    struct listing *orig = cfr_calloc(1, sizeof(*orig));
    struct listing *back = cfr_calloc(1, sizeof(*back));
    char p[VS_PATH_MAX + 160], why[4096];
    const struct restore_doveadm_msg *m;
    struct cfr_err err;
    int64_t t0 = vc_now_ms();
    (void)state;

    assert_non_null(orig);
    assert_non_null(back);
    if (!dvs_available()) {
        print_message("doveadm not installed: skipped\n");
        cfr_free(orig);
        cfr_free(back);
        skip();
    }

    /* The original, made by Dovecot. */
    FMT(p, "%s/dovecot", sc.env.dir);
    assert_int_equal(dvs_init(&d, p, maildir), 0);
    const char *create[] = {"mailbox", "create", "Sent", "Archive.2024", NULL};
    int made = dvs_run(&d, create, NULL);
    if (made == 126) {
        /* Root without user namespaces: Dovecot cannot run as root. */
        print_message("doveadm cannot run here (root, no user namespace): "
                      "skipped\n");
        cfr_free(orig);
        cfr_free(back);
        skip();
    }
    assert_int_equal(made, 0);
    save(&d, "INBOX", "in1", 1);
    save(&d, "INBOX", "in2", 2);
    save(&d, "INBOX", "in3", 3);
    save(&d, "INBOX", "in4", 4);
    save(&d, "Sent", "se1", 5);
    save(&d, "Sent", "se2", 6);
    save(&d, "Archive.2024", "ar1", 7);
    save(&d, "Archive.2024", "ar2", 8);
    const char *f1[] = {"flags",   "add",   "\\Seen \\Answered",
                        "mailbox", "INBOX", "uid",
                        "1",       NULL};
    const char *f2[] = {"flags",   "add",   "\\Flagged kw1 $Label2",
                        "mailbox", "INBOX", "uid",
                        "2",       NULL};
    const char *f3[] = {"flags", "add", "\\Seen kw1", "mailbox",
                        "Sent",  "uid", "2",          NULL};
    const char *f4[] = {
        "flags", "add", "\\Seen \\Flagged", "mailbox", "Archive.2024", "uid",
        "1",     NULL};
    const char *ex[] = {"expunge", "mailbox", "INBOX", "uid", "3", NULL};
    dv(&d, f1);
    dv(&d, f2);
    dv(&d, f3);
    dv(&d, f4);
    dv(&d, ex);
    /* A real Dovecot keeps its indexes in the Maildir: they are backed
     * up and come back stale. */
    assert_true(count_indexes(maildir, ".") > 0);
    list(maildir, orig);
    assert_int_equal(orig->n, 7);
    assert_non_null(m = find(orig, "INBOX", 1));
    assert_string_equal(m->flags, "\\Answered \\Seen");
    assert_string_equal(m->message_id, "<in1@example.org>");
    assert_non_null(m = find(orig, "INBOX", 2));
    assert_string_equal(m->flags, "$Label2 \\Flagged kw1");
    assert_null(find(orig, "INBOX", 3));
    assert_non_null(m = find(orig, "INBOX", 4));
    assert_string_equal(m->message_id, "<in4@example.org>");
    assert_non_null(m = find(orig, "Sent", 2));
    assert_string_equal(m->flags, "\\Seen kw1");
    assert_non_null(m = find(orig, "Archive.2024", 1));
    assert_string_equal(m->flags, "\\Flagged \\Seen");

    /* Backed up by coffer-agent, restored by coffer-restore. */
    FMT(sc.mailboxes, "mailboxes = ( { name = \"%s\"; root = \"%s\"; } );",
        MAILBOX, maildir);
    assert_int_equal(scn_init(&sc), 0);
    scn_backup(&sc, NULL);
    const char *restore[] = {"--config", sc.conf_all, "restore", "--mailbox",
                             MAILBOX,    "--to",      restored,  NULL};
    assert_int_equal(scn_run(&sc, COFFER_RESTORE_BIN, restore, NULL), 0);

    /* 2. coffer-restore ran restore_dovecot_finish on every folder: no
     * stale index is left, and running it again changes nothing. */
    int root_fd = open(restored, O_RDONLY | O_DIRECTORY);
    assert_true(root_fd >= 0);
    static const char *const folders[] = {".", ".Sent", ".Archive.2024"};
    for (size_t i = 0; i < 3; i++) {
        char *before, *after;
        assert_true(count_indexes(maildir, folders[i]) > 0);
        assert_int_equal(count_indexes(restored, folders[i]), 0);
        FMT(p, "%s/%s/dovecot-uidlist", restored, folders[i]);
        before = ars_slurp(p, NULL);
        assert_non_null(before);
        if (restore_dovecot_finish(root_fd, i == 0 ? "" : folders[i], &err) !=
            0) {
            fail_msg("finish %s: %s", folders[i], err.msg);
        }
        after = ars_slurp(p, NULL);
        assert_non_null(after);
        assert_string_equal(before, after);
        cfr_free(before);
        cfr_free(after);
    }
    close(root_fd);

    /* 1. Dovecot sees the same mailbox. */
    list(restored, back);
    if (differ(orig, back, why, sizeof(why)) != NULL) {
        fail_msg("restored mailbox differs: %s", why);
    }

    /* 4. A partial restore: a Sent message missing, an Archive message
     * the uidlist lacks. The others keep their UIDs; the newcomer gets
     * the old NextUID, not a reused UID. */
    {
        char name[VS_PATH_MAX + 256];
        const struct restore_doveadm_msg *s1 = find(orig, "Sent", 1);
        const struct restore_doveadm_msg *a2 = find(orig, "Archive.2024", 2);
        assert_non_null(s1);
        assert_non_null(a2);
        assert_int_equal(remove_message(restored, ".Sent", s1->guid), 0);
        FMT(name, "%s/.Archive.2024/cur/1790000000.Mnew.host:2,S", restored);
        assert_int_equal(
            ars_write(name, "Message-ID: <late@example.org>\n\nx\n", 34, 0600),
            0);
        root_fd = open(restored, O_RDONLY | O_DIRECTORY);
        assert_true(root_fd >= 0);
        assert_int_equal(restore_dovecot_finish(root_fd, ".Sent", &err), 0);
        assert_int_equal(restore_dovecot_finish(root_fd, ".Archive.2024", &err),
                         0);
        close(root_fd);
        list(restored, back);
        assert_int_equal(back->n, orig->n);
        assert_null(find(back, "Sent", 1));
        assert_non_null(m = find(back, "Sent", 2));
        assert_string_equal(m->message_id, "<se2@example.org>");
        assert_int_equal(m->uidvalidity, find(orig, "Sent", 2)->uidvalidity);
        assert_non_null(m = find(back, "Archive.2024", 2));
        assert_string_equal(m->guid, a2->guid);
        assert_non_null(m = find(back, "Archive.2024", 3));
        assert_string_equal(m->message_id, "<late@example.org>");
        assert_string_equal(m->flags, "\\Seen");
    }

    /* 3. Without the uidlist the same comparison fails. */
    FMT(p, "%s/dovecot-uidlist", restored);
    assert_int_equal(unlink(p), 0);
    list(restored, back);
    assert_non_null(differ(orig, back, why, sizeof(why)));
    assert_non_null(m = find(back, "INBOX", 1));
    assert_int_not_equal(m->uidvalidity, find(orig, "INBOX", 1)->uidvalidity);
    assert_null(find(back, "INBOX", 4));
    fprintf(stderr, "restore_dovecot_run_test: %zu messages, %lld ms\n",
            orig->n, (long long)(vc_now_ms() - t0));
    cfr_free(orig);
    cfr_free(back);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_dovecot_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, scn_group_teardown);
}
