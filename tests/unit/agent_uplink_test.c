/*
 * agent_uplink_test.c - the uplink's pure parts: quorum accounting, the
 * two-region rule's region count, the state a failed call leaves a vault
 * in, and option checks that refuse before any connection is made. The
 * wire (and the Health region check) is covered by
 * tests/integration/agent_uplink_fanout_test.c.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <string.h> /* memset, strstr */

#include "rpc.h"    /* CFR_RPC_* statuses */
#include "uplink.h" /* the module under test */

static void
test_agent_uplink_quorum_defaults_to_all(void **state)
{
    (void)state;
    assert_int_equal(agent_uplink_quorum(0, 1), 1);
    assert_int_equal(agent_uplink_quorum(0, 3), 3);
    assert_int_equal(agent_uplink_quorum(0, 8), 8);
    assert_int_equal(agent_uplink_quorum(2, 3), 2);
    assert_int_equal(agent_uplink_quorum(3, 3), 3);
    /* Invalid: above n, no vault, too many vaults. */
    assert_int_equal(agent_uplink_quorum(4, 3), 0);
    assert_int_equal(agent_uplink_quorum(0, 0), 0);
    assert_int_equal(agent_uplink_quorum(1, 9), 0);
}

static void
test_agent_uplink_drop_only_beyond_quorum(void **state)
{
    (void)state;
    /* 3 OK, quorum 2: one may go; then 2 OK, quorum 2: none may. */
    assert_true(agent_uplink_may_drop(3, 2));
    assert_false(agent_uplink_may_drop(2, 2));
    /* Quorum of all: never. */
    assert_false(agent_uplink_may_drop(3, 3));
    assert_false(agent_uplink_may_drop(1, 1));
    assert_false(agent_uplink_may_drop(0, 0));
    assert_true(agent_uplink_may_drop(8, 1));
    assert_true(agent_uplink_may_drop(2, 1));
}

/* The span rule counts distinct regions of the vaults in a mask only. */
static void
test_agent_uplink_regions_counts_distinct(void **state)
{
    (void)state;
    const char *r[] = {"eu-west", "eu-west", "eu-north", NULL, "", "us-east"};

    assert_int_equal(agent_uplink_regions(r, 6, 0x3f), 3);
    /* Two vaults in one region: one region, the rule fails. */
    assert_int_equal(agent_uplink_regions(r, 6, 0x03), 1);
    assert_int_equal(agent_uplink_regions(r, 6, 0x05), 2);
    assert_int_equal(agent_uplink_regions(r, 6, 0x06), 2);
    /* No region (NULL or "") never counts as one. */
    assert_int_equal(agent_uplink_regions(r, 6, 0x18), 0);
    assert_int_equal(agent_uplink_regions(r, 6, 0x19), 1);
    assert_int_equal(agent_uplink_regions(r, 6, 0x00), 0);
    /* A duplicate that is outside the mask does not hide the other. */
    assert_int_equal(agent_uplink_regions(r, 6, 0x02), 1);
    assert_int_equal(agent_uplink_regions(r, 6, 0x22), 2);
    /* Bits beyond n are ignored; no list, no region. */
    assert_int_equal(agent_uplink_regions(r, 2, 0x3f), 1);
    assert_int_equal(agent_uplink_regions(NULL, 6, 0x3f), 0);
    /* Compared byte for byte. */
    const char *c[] = {"eu", "EU", "eu "};
    assert_int_equal(agent_uplink_regions(c, 3, 0x7), 3);
}

/*
 * The quorum as a count and a place: every decision the uplink takes (go
 * on, drop a slow vault, count a commit) is this on the vaults concerned.
 */
static void
test_agent_uplink_quorum_spans_regions(void **state)
{
    (void)state;
    /* Two vaults in eu-west, one in eu-north. */
    const char *r[] = {"eu-west", "eu-west", "eu-north"};

    /* Without the rule only the count matters. */
    assert_true(agent_uplink_quorum_holds(2, false, r, 3, 0x3));
    assert_false(agent_uplink_quorum_holds(2, false, r, 3, 0x1));
    /* With it, two vaults of one region are not a quorum of 2, nor of 1. */
    assert_false(agent_uplink_quorum_holds(2, true, r, 3, 0x3));
    assert_false(agent_uplink_quorum_holds(1, true, r, 3, 0x3));
    assert_true(agent_uplink_quorum_holds(2, true, r, 3, 0x5));
    assert_true(agent_uplink_quorum_holds(2, true, r, 3, 0x6));
    assert_true(agent_uplink_quorum_holds(3, true, r, 3, 0x7));
    /* The count still applies under the rule. */
    assert_false(agent_uplink_quorum_holds(3, true, r, 3, 0x5));
    /* Dropping a slow vault: with all three OK and quorum 2, eu-north may
     * not go (eu-west alone would be left), one eu-west vault may. */
    assert_false(agent_uplink_quorum_holds(2, true, r, 3, 0x7 & ~0x4u));
    assert_true(agent_uplink_quorum_holds(2, true, r, 3, 0x7 & ~0x1u));
    /* Mask bits beyond n are not vaults. */
    assert_false(agent_uplink_quorum_holds(2, false, r, 1, 0x3));
}

static void
test_agent_uplink_state_for_status(void **state)
{
    (void)state;
    assert_int_equal(agent_uplink_state_for(CFR_RPC_OK), AGENT_UPLINK_OK);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_UNAVAILABLE),
                     AGENT_UPLINK_UNREACHABLE);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_DEADLINE_EXCEEDED),
                     AGENT_UPLINK_UNREACHABLE);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_CANCELLED),
                     AGENT_UPLINK_UNREACHABLE);
    /* The vault answered: a decision, reported with its status. */
    assert_int_equal(agent_uplink_state_for(CFR_RPC_PERMISSION_DENIED),
                     AGENT_UPLINK_REFUSED);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_FAILED_PRECONDITION),
                     AGENT_UPLINK_REFUSED);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_RESOURCE_EXHAUSTED),
                     AGENT_UPLINK_REFUSED);
    assert_int_equal(agent_uplink_state_for(CFR_RPC_UNAUTHENTICATED),
                     AGENT_UPLINK_REFUSED);
    assert_string_equal(agent_uplink_state_name(AGENT_UPLINK_OK), "ok");
    assert_string_equal(agent_uplink_state_name(AGENT_UPLINK_LAGGING),
                        "lagging");
    assert_string_equal(agent_uplink_state_name(AGENT_UPLINK_UNREACHABLE),
                        "unreachable");
    assert_string_equal(agent_uplink_state_name(AGENT_UPLINK_REFUSED),
                        "refused");
    assert_string_equal(agent_uplink_state_name(99), "unknown");
}

/* Opens with options that must be refused: the result is NULL even when
 * *up_r held something before. */
static int
open_bad(const struct agent_uplink_opts *o, struct cfr_err *err)
{
    static char sentinel;
    struct agent_uplink *up = (struct agent_uplink *)(void *)&sentinel;
    int rc = agent_uplink_open(o, &up, err);
    assert_null(up);
    return rc;
}

/* Bad options are refused before any connection, with no uplink left. */
static void
test_agent_uplink_open_refuses_bad_options(void **state)
{
    (void)state;
    struct agent_uplink_vault_opts vo[9];
    struct agent_uplink_opts o;
    struct cfr_err err;

    memset(vo, 0, sizeof(vo));
    for (size_t i = 0; i < 9; i++) {
        vo[i].target = "127.0.0.1:1";
        vo[i].ca_pem = "ca";
        vo[i].cert_pem = "cert";
        vo[i].key_pem = "key";
    }
    memset(&o, 0, sizeof(o));
    o.vaults = vo;

    o.n_vaults = 0;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "1 to 8 vaults"));

    o.n_vaults = 9;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);

    o.n_vaults = 3;
    o.quorum = 4;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "quorum 4"));

    o.quorum = 2;
    vo[1].key_pem = NULL;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "vault 2"));
    vo[1].key_pem = "key";

    o.stall_ms = -1;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    o.stall_ms = 0;

    /* Regions: a bad name; the span rule without a region for every
     * vault, or with one region only. */
    vo[0].region = "EU";
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "vault 1: region \"EU\""));
    vo[0].region = "";
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    vo[0].region = "abcdefghij0123456789abcdefghij01"; /* 32 bytes */
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    vo[0].region = "eu-west";
    vo[1].region = "eu-west";
    o.span_regions = true;
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "vault 3 has no region"));
    vo[2].region = "eu-west";
    assert_int_equal(open_bad(&o, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "at least 2 regions"));
    o.span_regions = false;
    vo[0].region = vo[1].region = vo[2].region = NULL;

    assert_int_equal(open_bad(NULL, &err), CFR_EINVAL);
}

/* Calls on no uplink, and free of NULL, are harmless. */
static void
test_agent_uplink_null_is_harmless(void **state)
{
    (void)state;
    struct agent_uplink_report r;
    struct cfr_err err;
    uint8_t id[AGENT_UPLINK_ID_LEN] = {0}, lack[1];

    agent_uplink_free(NULL);
    assert_int_equal(agent_uplink_count(NULL), 0);
    assert_int_equal(agent_uplink_live(NULL), 0);
    agent_uplink_report(NULL, 0, &r);
    assert_int_equal(r.state, AGENT_UPLINK_OK);
    assert_int_equal(r.objects_sent, 0);
    assert_int_equal(agent_uplink_missing(NULL, id, 1, lack, &err), CFR_EINVAL);
    assert_int_equal(agent_uplink_put(NULL, id, AGENT_UPLINK_SEALED, id,
                                      sizeof(id), 1, &err),
                     CFR_EINVAL);
    assert_int_equal(agent_uplink_flush(NULL, &err), CFR_EINVAL);
    assert_int_equal(agent_uplink_commit(NULL, NULL, &err), CFR_EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_uplink_quorum_defaults_to_all),
        cmocka_unit_test(test_agent_uplink_drop_only_beyond_quorum),
        cmocka_unit_test(test_agent_uplink_regions_counts_distinct),
        cmocka_unit_test(test_agent_uplink_quorum_spans_regions),
        cmocka_unit_test(test_agent_uplink_state_for_status),
        cmocka_unit_test(test_agent_uplink_open_refuses_bad_options),
        cmocka_unit_test(test_agent_uplink_null_is_harmless),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
