/*
 * restore_maint_test.c - the retention audit's analysis of one mailbox
 * (maint.h restore_audit_mailbox), on made-up snapshots: deletion time is
 * the receive time of the first snapshot after a message's last
 * appearance; stale snapshots, holds, parent-link gaps, unreadable
 * snapshots and messages that come back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "maint.h"

#define DAY (INT64_C(86400000))

/* Message identity k: 32 bytes of k. */
static uint8_t ids[8][32];

static void
snap_init(struct restore_audit_snap *s, uint8_t tag, int64_t day,
          const int *msgs, size_t n, uint8_t (*store)[32])
{
    memset(s, 0, sizeof(*s));
    memset(s->header_id, tag, 32);
    s->received_ms = day * DAY;
    s->readable = true;
    for (size_t i = 0; i < n; i++) {
        memcpy(store[i], ids[msgs[i]], 32);
    }
    s->ids = (const uint8_t(*)[32])store;
    s->n_ids = n;
}

static void
link_to(struct restore_audit_snap *s, const struct restore_audit_snap *p)
{
    s->has_parent = true;
    memcpy(s->parent, p->header_id, 32);
}

static struct restore_audit_counts
audit(const struct restore_audit_snap *v, size_t n, int64_t cutoff_day)
{
    struct restore_audit_counts c;
    struct cfr_err err;
    memset(&c, 0, sizeof(c));
    assert_int_equal(restore_audit_mailbox(v, n, cutoff_day * DAY, &c, &err),
                     0);
    return c;
}

static void
test_audit_deletion_time(void **state)
{
    (void)state;
    uint8_t s1[4][32], s2[4][32];
    static const int m1[] = {0, 1, 2, 2}, m2[] = {0, 1}; /* a duplicate */
    struct restore_audit_snap v[2];
    snap_init(&v[0], 0xa1, 0, m1, 4, s1);
    snap_init(&v[1], 0xa2, 10, m2, 2, s2);
    link_to(&v[1], &v[0]);

    /* Message 2 deleted on day 10: within a window starting day 5. */
    struct restore_audit_counts c = audit(v, 2, 5);
    assert_int_equal(c.snapshots, 2);
    assert_int_equal(c.live, 2);
    assert_int_equal(c.deleted_within, 1);
    assert_int_equal(c.deleted_beyond, 0);
    assert_int_equal(c.stale, 0);
    assert_int_equal(c.unlinked, 1); /* the first has no parent */
    assert_false(restore_audit_violation(&c));

    /* Window from day 20: v[0] should be gone, message 2 with it. */
    c = audit(v, 2, 20);
    assert_int_equal(c.deleted_beyond, 1);
    assert_int_equal(c.stale, 1);
    assert_true(restore_audit_violation(&c));

    /* Held: kept on purpose, no violation. */
    v[0].held = true;
    c = audit(v, 2, 20);
    assert_int_equal(c.held, 1);
    assert_int_equal(c.deleted_held, 1);
    assert_int_equal(c.deleted_beyond, 0);
    assert_int_equal(c.stale, 0);
    assert_false(restore_audit_violation(&c));
}

static void
test_audit_comes_back(void **state)
{
    (void)state;
    uint8_t s1[2][32], s2[2][32], s3[2][32];
    static const int m1[] = {3}, m3[] = {3, 4};
    struct restore_audit_snap v[3];
    snap_init(&v[0], 0xb1, 0, m1, 1, s1);
    snap_init(&v[1], 0xb2, 40, NULL, 0, s2);
    snap_init(&v[2], 0xb3, 41, m3, 2, s3);
    /* Gone on day 40, back on day 41: live, not deleted. */
    struct restore_audit_counts c = audit(v, 3, 20);
    assert_int_equal(c.live, 2);
    assert_int_equal(c.deleted_within + c.deleted_beyond, 0);
    assert_false(restore_audit_violation(&c));
}

static void
test_audit_gaps_and_unreadable(void **state)
{
    (void)state;
    uint8_t s1[1][32], s2[1][32];
    static const int m[] = {5};
    struct restore_audit_snap v[2], gone;
    memset(&gone, 0, sizeof(gone));
    memset(gone.header_id, 0xee, 32);
    snap_init(&v[0], 0xc1, 10, m, 1, s1);
    snap_init(&v[1], 0xc2, 12, m, 1, s2);
    link_to(&v[0], &gone);
    link_to(&v[1], &v[0]);

    /* The oldest names a parent that is gone, received inside the
     * window: what that parent alone held may be lost. */
    struct restore_audit_counts c = audit(v, 2, 5);
    assert_int_equal(c.gaps, 1);
    assert_true(restore_audit_violation(&c));
    /* Received before the cutoff: its parent was dropped legitimately. */
    c = audit(v, 2, 11);
    assert_int_equal(c.gaps, 0);
    assert_false(restore_audit_violation(&c));
    /* A chain break inside the window. */
    link_to(&v[1], &gone);
    c = audit(v, 2, 11);
    assert_int_equal(c.gaps, 1);

    /* A snapshot that does not open is a violation. */
    link_to(&v[1], &v[0]);
    v[1].readable = false;
    c = audit(v, 2, 11);
    assert_int_equal(c.unreadable, 1);
    assert_true(restore_audit_violation(&c));
}

int
main(void)
{
    for (int k = 0; k < 8; k++) {
        memset(ids[k], k + 1, 32);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_deletion_time),
        cmocka_unit_test(test_audit_comes_back),
        cmocka_unit_test(test_audit_gaps_and_unreadable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
