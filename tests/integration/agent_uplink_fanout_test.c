/*
 * agent_uplink_fanout_test.c - agent/uplink against three real vaults over
 * mutual TLS: one sealed stream fanned out with a write quorum.
 *
 * (Named *_fanout_test so its target does not clash with the unit test
 * tests/unit/agent_uplink_test.c.)
 *
 * What it proves:
 *  1. A few hundred objects and a commit reach all three vaults; each one
 *     returns every object byte for byte to the restore identity and lists
 *     the snapshot; the report counts exactly what was sent.
 *  2. One vault down: quorum 2 commits on the other two and the report
 *     names the down vault; quorum 3 sends no commit at all, so no vault
 *     has the snapshot, also when the vault dies in the middle of the run.
 *  3. A vault that refuses the agent is reported with the gRPC status.
 *  4. A run "killed" after its uploads (no commit) leaves no snapshot, and
 *     the next run finds everything present: zero bytes sent, commit on all.
 *  5. A vault SIGSTOPped mid-run is dropped as lagging once it blocks the
 *     producer, and the others commit.
 *  6. A vault SIGKILLed mid-stream is reported, and the quorum of the
 *     others commits.
 *  7. A vault whose Health names another region than configured is
 *     refused before anything is sent to it (no objects, no commit), the
 *     others commit; with the two-region rule, a run whose vaults left OK
 *     are all in one region fails at open even though the count quorum
 *     is met, naming the region and its vaults, and commits nowhere.
 *     (Every harness vault is in region test-1, so a vault configured in
 *     another region is a mismatch.)
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <signal.h> /* SIGKILL, SIGSTOP */
#include <stdio.h>  /* snprintf, fopen */
#include <string.h> /* memcmp */

#include "env.h"                  /* sealing sessions */
#include "keys.h"                 /* a tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "uplink.h"               /* the module under test */
#include "vault_client_support.h" /* objects, snapshots, RPC checks */
#include "vault_support.h"        /* the harness */

#define N_VAULTS 3

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static struct cfr_keyring *keyring;
static struct cfr_session *session;
static char *ca_pem, *agent_pem, *agent_key;

/* ---- helpers ------------------------------------------------------------ */

static char *
slurp(const char *name)
{
    char path[2 * VS_PATH_MAX];
    FILE *f;
    long n;
    char *p;

    vs_env_path(&env, name, path, sizeof(path));
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    p = cfr_malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    return p;
}

/* Uplink options for all three vaults (ports as last started). */
struct up_cfg {
    struct agent_uplink_vault_opts vo[N_VAULTS];
    char target[N_VAULTS][64];
    struct agent_uplink_opts o;
};

static void
cfg_init(struct up_cfg *c, unsigned quorum)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_VAULTS; i++) {
        snprintf(c->target[i], sizeof(c->target[i]), "127.0.0.1:%d",
                 vaults[i].port);
        c->vo[i].name = vaults[i].name;
        c->vo[i].target = c->target[i];
        c->vo[i].target_name = "localhost";
        c->vo[i].ca_pem = ca_pem;
        c->vo[i].cert_pem = agent_pem;
        c->vo[i].key_pem = agent_key;
    }
    c->o.vaults = c->vo;
    c->o.n_vaults = N_VAULTS;
    c->o.quorum = quorum;
    memcpy(c->o.session_public, cfr_session_public(session),
           AGENT_UPLINK_SESSION_LEN);
    /* Small messages, streams and queues: several of each per test. */
    c->o.msg_bytes = 128u << 10;
    c->o.stream_bytes = 1u << 20;
    c->o.queue_bytes = 256u << 10;
    c->o.call_timeout_ms = 10000;
    c->o.stream_timeout_ms = 20000;
    c->o.stall_ms = 10000;
}

/* Chunks of mailbox plus its snapshot; everything to upload in *all. */
struct data {
    struct vc_objset chunks, all;
    struct vc_snapshot sn;
    uint64_t bytes;
};

static void
data_make(struct data *d, const char *mailbox, uint64_t seed, size_t n,
          size_t len_min, size_t len_span, unsigned period)
{
    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < n; i++) {
        vc_make_chunk_ex(keyring, session, &d->chunks, seed + i,
                         len_min + (size_t)((seed + i * 7919) % len_span), 4096,
                         period);
    }
    vc_make_snapshot(keyring, session, &d->sn, &d->chunks, mailbox, seed);
    vc_objset_add_all(&d->all, &d->chunks);
    vc_objset_add_all(&d->all, &d->sn.pages);
    for (size_t i = 0; i < d->all.n; i++) {
        d->bytes += d->all.v[i].len;
    }
}

static void
data_fini(struct data *d)
{
    vc_objset_fini(&d->chunks);
    vc_objset_fini(&d->all);
    vc_snapshot_fini(&d->sn);
}

/* Something done to a vault just before the put of object index at. */
struct action {
    size_t at;
    struct vs_vault *v;
    int sig;
};

/*
 * Missing then put for every object of d (batches of 4096 IDs), running
 * act (may be NULL) on the way. Returns the first failing return code.
 */
static int
upload(struct agent_uplink *up, const struct data *d, const struct action *act)
{
    uint8_t *ids = cfr_calloc(AGENT_UPLINK_IDS_MAX, AGENT_UPLINK_ID_LEN);
    uint8_t *lack = cfr_calloc(AGENT_UPLINK_IDS_MAX, 1);
    struct cfr_err err;
    int rc = 0;

    assert_non_null(ids);
    assert_non_null(lack);
    for (size_t from = 0; from < d->all.n && rc == 0;
         from += AGENT_UPLINK_IDS_MAX) {
        size_t n = d->all.n - from < AGENT_UPLINK_IDS_MAX
                       ? d->all.n - from
                       : AGENT_UPLINK_IDS_MAX;
        for (size_t i = 0; i < n; i++) {
            memcpy(ids + i * AGENT_UPLINK_ID_LEN, d->all.v[from + i].id,
                   AGENT_UPLINK_ID_LEN);
        }
        if ((rc = agent_uplink_missing(up, ids, n, lack, &err)) != 0) {
            break;
        }
        for (size_t i = 0; i < n && rc == 0; i++) {
            const struct vc_obj *o = &d->all.v[from + i];
            if (act != NULL && act->at == from + i) {
                assert_int_equal(kill(act->v->pid, act->sig), 0);
            }
            if (lack[i] != 0) {
                rc = agent_uplink_put(up, o->id, o->kind, o->data, o->len,
                                      lack[i], &err);
            }
        }
    }
    if (rc != 0) {
        fprintf(stderr, "upload: %s\n", err.msg);
    }
    cfr_free(ids);
    cfr_free(lack);
    return rc;
}

static int
commit(struct agent_uplink *up, const struct data *d)
{
    struct agent_uplink_commit c;
    struct cfr_err err;
    int rc;

    memset(&c, 0, sizeof(c));
    memcpy(c.mailbox_id, d->sn.mailbox_id, AGENT_UPLINK_ID_LEN);
    memcpy(c.header_id, d->sn.header_id, AGENT_UPLINK_ID_LEN);
    c.header = d->sn.header;
    c.header_len = d->sn.header_len;
    memcpy(c.refs_id, d->sn.root.id, AGENT_UPLINK_ID_LEN);
    c.refs_height = d->sn.root.height;
    c.refs_entries = d->sn.root.entries;
    rc = agent_uplink_commit(up, &c, &err);
    if (rc != 0) {
        fprintf(stderr, "commit: %s\n", err.msg);
    }
    return rc;
}

/* How many snapshots with d's header ID vault v lists (restore view). */
static size_t
snapshots_of(const struct vs_vault *v, const struct data *d)
{
    struct cfr_rpc_client *cli = vs_client(v, "acme-restore");
    Coffer__V1__ListSnapshotsResponse *r;
    size_t k = 0;
    int st;

    assert_non_null(cli);
    r = vc_list_snapshots(cli, false, &st);
    assert_int_equal(st, CFR_RPC_OK);
    for (size_t i = 0; i < r->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *s = r->snapshots[i];
        if (s->header_id.len == VC_ID_LEN &&
            memcmp(s->header_id.data, d->sn.header_id, VC_ID_LEN) == 0) {
            assert_int_equal(s->mailbox_id.len, VC_ID_LEN);
            assert_memory_equal(s->mailbox_id.data, d->sn.mailbox_id,
                                VC_ID_LEN);
            assert_int_equal(s->refs->entries, d->sn.root.entries);
            k++;
        }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cfr_rpc_client_free(cli);
    return k;
}

/* Every object of d is on v and reads back byte for byte. */
static void
expect_objects(const struct vs_vault *v, const struct data *d)
{
    struct cfr_rpc_client *agent = vs_client(v, "agent");
    struct cfr_rpc_client *rest = vs_client(v, "acme-restore");
    assert_non_null(agent);
    assert_non_null(rest);
    assert_int_equal(vc_check_objects(agent, rest, &d->all, true), d->all.n);
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
}

static void
report(struct agent_uplink *up, size_t i, struct agent_uplink_report *r)
{
    agent_uplink_report(up, i, r);
    fprintf(
        stderr,
        "  %s: %s status=%s sent=%llu/%llu B acked=%llu present=%llu "
        "unacked=%llu committed=%d msg=%s\n",
        r->name, agent_uplink_state_name((int)r->state),
        cfr_rpc_status_name(r->status), (unsigned long long)r->objects_sent,
        (unsigned long long)r->bytes_sent, (unsigned long long)r->objects_acked,
        (unsigned long long)r->objects_present,
        (unsigned long long)r->objects_unacked, (int)r->committed, r->message);
}

static void
restart(struct vs_vault *v)
{
    if (v->pid > 0) {
        (void)vs_vault_stop(v, SIGKILL, 10000);
    }
    assert_int_equal(vs_vault_start(v, 30000), 0);
}

/* ---- tests -------------------------------------------------------------- */

static void
test_uplink_all_three_vaults_get_everything(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct cfr_err err;
    int64_t t0 = vc_now_ms();

    /* 300 chunks of 2..14 KiB, half compressible, plus reference pages. */
    data_make(&d, "INBOX-all", 1000, 300, 2048, 12288, 2);
    cfg_init(&c, 0); /* default quorum: all three */
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(agent_uplink_count(up), N_VAULTS);
    assert_int_equal(agent_uplink_live(up), N_VAULTS);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(commit(up, &d), 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        struct agent_uplink_report r;
        report(up, i, &r);
        assert_string_equal(r.name, vaults[i].name);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.status, CFR_RPC_OK);
        assert_string_equal(r.message, "");
        assert_int_equal(r.objects_present, 0);
        assert_int_equal(r.objects_sent, d.all.n);
        assert_int_equal(r.bytes_sent, d.bytes);
        assert_int_equal(r.objects_acked, d.all.n);
        assert_int_equal(r.bytes_acked, d.bytes);
        assert_int_equal(r.objects_stored, d.all.n);
        assert_int_equal(r.objects_unacked, 0);
        assert_int_equal(r.commits, 1);
        assert_true(r.committed);
    }
    agent_uplink_free(up);
    for (size_t i = 0; i < N_VAULTS; i++) {
        expect_objects(&vaults[i], &d);
        assert_int_equal(snapshots_of(&vaults[i], &d), 1);
    }
    fprintf(stderr, "  all three: %zu objects, %llu bytes, %lld ms\n", d.all.n,
            (unsigned long long)d.bytes, (long long)(vc_now_ms() - t0));
    data_fini(&d);
}

static void
test_uplink_one_vault_down_quorum(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;

    data_make(&d, "INBOX-down", 2000, 120, 1024, 8192, 2);
    assert_int_equal(vs_vault_stop(&vaults[2], SIGTERM, 10000), 0);

    /* Quorum 3 cannot be met: nothing is committed anywhere (the open
     * already says so, before a byte is sent). */
    cfg_init(&c, 3);
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), CFR_EUNAVAIL);
    assert_non_null(up);
    assert_non_null(strstr(err.msg, "quorum is 3"));
    assert_int_equal(agent_uplink_live(up), 2);
    report(up, 2, &r);
    assert_int_equal(r.state, AGENT_UPLINK_UNREACHABLE);
    assert_int_equal(r.status, CFR_RPC_UNAVAILABLE);
    assert_true(r.message[0] != '\0');
    for (size_t i = 0; i < 2; i++) {
        report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.objects_sent, 0);
        assert_false(r.committed);
    }
    agent_uplink_free(up);
    up = NULL;
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(snapshots_of(&vaults[i], &d), 0);
    }

    /* Quorum 2: the two live vaults get everything and the commit. */
    cfg_init(&c, 2);
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(agent_uplink_live(up), 2);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(commit(up, &d), 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        report(up, i, &r);
        if (i == 2) {
            assert_int_equal(r.state, AGENT_UPLINK_UNREACHABLE);
            assert_string_equal(r.name, vaults[2].name);
            assert_int_equal(r.objects_sent, 0);
            assert_false(r.committed);
            assert_int_equal(r.commits, 0);
        } else {
            assert_int_equal(r.state, AGENT_UPLINK_OK);
            assert_int_equal(r.objects_acked, d.all.n);
            assert_true(r.committed);
        }
    }
    agent_uplink_free(up);
    for (size_t i = 0; i < 2; i++) {
        expect_objects(&vaults[i], &d);
        assert_int_equal(snapshots_of(&vaults[i], &d), 1);
    }
    restart(&vaults[2]);
    assert_int_equal(snapshots_of(&vaults[2], &d), 0);
    data_fini(&d);
}

/* 7a. A vault in another region than configured is refused for the run. */
static void
test_uplink_region_mismatch_is_refused(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;

    data_make(&d, "INBOX-region", 7000, 40, 1024, 4096, 2);
    cfg_init(&c, 2);
    c.vo[0].region = "test-1"; /* right: checked and kept */
    /* vb: no region configured, not checked. */
    c.vo[2].region = "elsewhere";
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(agent_uplink_live(up), 2);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(commit(up, &d), 0);
    report(up, 2, &r);
    assert_int_equal(r.state, AGENT_UPLINK_REFUSED);
    assert_int_equal(r.status, CFR_RPC_FAILED_PRECONDITION);
    assert_string_equal(r.region, "elsewhere");
    assert_non_null(strstr(r.message, "vault is in region \"test-1\", "
                                      "configured \"elsewhere\""));
    /* Refused before its lease: Missing never asked, nothing sent. */
    assert_int_equal(r.objects_present, 0);
    assert_int_equal(r.objects_sent, 0);
    assert_int_equal(r.commits, 0);
    assert_false(r.committed);
    for (size_t i = 0; i < 2; i++) {
        report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_string_equal(r.region, i == 0 ? "test-1" : "");
        assert_int_equal(r.objects_acked, d.all.n);
        assert_true(r.committed);
    }
    agent_uplink_free(up);
    assert_int_equal(snapshots_of(&vaults[0], &d), 1);
    assert_int_equal(snapshots_of(&vaults[1], &d), 1);
    assert_int_equal(snapshots_of(&vaults[2], &d), 0);
    data_fini(&d);
}

/* 7b. The two-region rule: a quorum met inside one region is not met. */
static void
test_uplink_single_region_quorum_is_lost(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;
    uint8_t lack[1];

    data_make(&d, "INBOX-span", 7100, 10, 1024, 4096, 2);
    /* Configured in two regions; vc's Health says test-1, so it is
     * refused and va, vb (test-1) remain: 2 OK for a quorum of 1. */
    cfg_init(&c, 1);
    c.o.span_regions = true;
    c.vo[0].region = "test-1";
    c.vo[1].region = "test-1";
    c.vo[2].region = "test-2";
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), CFR_EUNAVAIL);
    assert_non_null(up);
    fprintf(stderr, "  open: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "the vaults left are all in one "
                                    "region: test-1 (va, vb)"));
    assert_non_null(strstr(err.msg, "at least 2 regions"));
    assert_int_equal(agent_uplink_live(up), 2);
    report(up, 2, &r);
    assert_int_equal(r.state, AGENT_UPLINK_REFUSED);
    assert_non_null(strstr(r.message, "configured \"test-2\""));
    /* The run is lost for every later call too, and sends nothing. */
    assert_int_equal(agent_uplink_missing(up, d.all.v[0].id, 1, lack, &err),
                     CFR_EUNAVAIL);
    assert_non_null(strstr(err.msg, "all in one region"));
    assert_int_equal(commit(up, &d), CFR_EUNAVAIL);
    for (size_t i = 0; i < N_VAULTS; i++) {
        report(up, i, &r);
        assert_int_equal(r.objects_sent, 0);
        assert_int_equal(r.commits, 0);
    }
    agent_uplink_free(up);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(snapshots_of(&vaults[i], &d), 0);
    }

    /* Without the rule the same vaults meet the quorum and commit. */
    c.o.span_regions = false;
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(commit(up, &d), 0);
    agent_uplink_free(up);
    assert_int_equal(snapshots_of(&vaults[0], &d), 1);
    assert_int_equal(snapshots_of(&vaults[2], &d), 0);
    data_fini(&d);
}

/* A vault that answers with a refusal is reported with its status. */
static void
test_uplink_refusal_is_reported(void **state)
{
    (void)state;
    struct up_cfg c;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;
    char *aud_pem = slurp("acme-auditor.pem");
    char *aud_key = slurp("acme-auditor.key");

    /* An auditor may not open upload leases. */
    cfg_init(&c, 2);
    c.vo[1].cert_pem = aud_pem;
    c.vo[1].key_pem = aud_key;
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(agent_uplink_live(up), 2);
    report(up, 1, &r);
    assert_int_equal(r.state, AGENT_UPLINK_REFUSED);
    assert_int_equal(r.status, CFR_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(r.message, "OpenLease"));
    report(up, 0, &r);
    assert_int_equal(r.state, AGENT_UPLINK_OK);
    agent_uplink_free(up);
    cfr_free(aud_pem);
    cfr_free(aud_key);
}

static void
test_uplink_rerun_after_kill_resends_nothing(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;

    data_make(&d, "INBOX-rerun", 3000, 200, 1024, 8192, 2);
    cfg_init(&c, 0);

    /* Run 1 dies after its uploads were acknowledged, before the commit. */
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(agent_uplink_flush(up, &err), 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        report(up, i, &r);
        assert_int_equal(r.objects_acked, d.all.n);
        assert_int_equal(r.bytes_sent, d.bytes);
    }
    agent_uplink_free(up);
    up = NULL;
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(snapshots_of(&vaults[i], &d), 0);
    }

    /* Run 2: everything is present; nothing is sent; the commit lands. */
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(upload(up, &d, NULL), 0);
    assert_int_equal(commit(up, &d), 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.objects_present, d.all.n);
        assert_int_equal(r.objects_sent, 0);
        assert_int_equal(r.bytes_sent, 0);
        assert_true(r.committed);
    }
    agent_uplink_free(up);
    for (size_t i = 0; i < N_VAULTS; i++) {
        expect_objects(&vaults[i], &d);
        assert_int_equal(snapshots_of(&vaults[i], &d), 1);
    }
    data_fini(&d);
}

static void
test_uplink_stalled_vault_is_dropped_as_lagging(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;
    struct action act;
    int64_t t0;

    /* ~6 MiB, mostly incompressible: far more than the stopped vault's
     * queue, flow-control window and socket buffers take. */
    data_make(&d, "INBOX-stall", 4000, 96, 65536, 4096, 4);
    cfg_init(&c, 2);
    c.o.stall_ms = 1500; /* well above a loaded vault's fsync */
    act.at = 0;
    act.v = &vaults[1];
    act.sig = SIGSTOP;
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    t0 = vc_now_ms();
    assert_int_equal(upload(up, &d, &act), 0);
    assert_int_equal(commit(up, &d), 0);
    /* Bounded: one stall, not a stream deadline. */
    assert_true(vc_now_ms() - t0 < 10000);
    report(up, 1, &r);
    assert_int_equal(r.state, AGENT_UPLINK_LAGGING);
    assert_non_null(strstr(r.message, "no progress"));
    assert_false(r.committed);
    assert_true(r.objects_unacked > 0);
    assert_true(r.objects_acked < d.all.n);
    for (size_t i = 0; i < N_VAULTS; i += 2) {
        report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.objects_acked, d.all.n);
        assert_true(r.committed);
    }
    /* The stopped vault's stream was cancelled, not left to its 20 s
     * deadline: freeing does not wait for it. */
    t0 = vc_now_ms();
    agent_uplink_free(up);
    assert_true(vc_now_ms() - t0 < 5000);
    assert_int_equal(kill(vaults[1].pid, SIGCONT), 0);
    for (size_t i = 0; i < N_VAULTS; i += 2) {
        expect_objects(&vaults[i], &d);
        assert_int_equal(snapshots_of(&vaults[i], &d), 1);
    }
    /* Resumed, the lagging vault serves but never got the commit. */
    assert_int_equal(snapshots_of(&vaults[1], &d), 0);
    data_fini(&d);
}

static void
test_uplink_quorum_lost_mid_run_commits_nowhere(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;
    struct action act;

    /* Quorum 3, all up at the open; one dies a third of the way in. */
    data_make(&d, "INBOX-lost", 6000, 96, 65536, 4096, 4);
    cfg_init(&c, 3);
    act.at = d.all.n / 3;
    act.v = &vaults[2];
    act.sig = SIGKILL;
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    /* The loss shows up in a put or at the latest in the commit's flush;
     * either way no Commit goes out. */
    (void)upload(up, &d, &act);
    assert_int_equal(commit(up, &d), CFR_EUNAVAIL);
    report(up, 2, &r);
    assert_int_not_equal(r.state, AGENT_UPLINK_OK);
    for (size_t i = 0; i < N_VAULTS; i++) {
        report(up, i, &r);
        assert_false(r.committed);
        assert_int_equal(r.commits, 0);
    }
    agent_uplink_free(up);
    restart(&vaults[2]);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(snapshots_of(&vaults[i], &d), 0);
    }
    data_fini(&d);
}

static void
test_uplink_vault_killed_mid_stream(void **state)
{
    (void)state;
    struct up_cfg c;
    struct data d;
    struct agent_uplink *up = NULL;
    struct agent_uplink_report r;
    struct cfr_err err;
    struct action act;

    /* ~6 MiB in 1 MiB streams; the kill lands a third of the way in. */
    data_make(&d, "INBOX-kill", 5000, 96, 65536, 4096, 4);
    cfg_init(&c, 2);
    act.at = d.all.n / 3;
    act.v = &vaults[0];
    act.sig = SIGKILL;
    assert_int_equal(agent_uplink_open(&c.o, &up, &err), 0);
    assert_int_equal(upload(up, &d, &act), 0);
    assert_int_equal(commit(up, &d), 0);
    report(up, 0, &r);
    assert_true(r.state == AGENT_UPLINK_UNREACHABLE ||
                r.state == AGENT_UPLINK_REFUSED);
    assert_int_not_equal(r.status, CFR_RPC_OK);
    assert_true(r.message[0] != '\0');
    assert_false(r.committed);
    assert_true(r.objects_unacked > 0);
    for (size_t i = 1; i < N_VAULTS; i++) {
        report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.objects_acked, d.all.n);
        assert_true(r.committed);
    }
    agent_uplink_free(up);
    for (size_t i = 1; i < N_VAULTS; i++) {
        expect_objects(&vaults[i], &d);
        assert_int_equal(snapshots_of(&vaults[i], &d), 1);
    }
    /* What the killed vault acknowledged survived; the snapshot is not
     * there. */
    restart(&vaults[0]);
    assert_int_equal(snapshots_of(&vaults[0], &d), 0);
    data_fini(&d);
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    static const char *const names[N_VAULTS] = {"va", "vb", "vc"};
    struct cfr_err err;

    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    if (vs_env_init(&env) != 0) {
        return -1;
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (vs_vault_init(&vaults[i], &env, names[i]) != 0 ||
            vs_vault_start(&vaults[i], 30000) != 0) {
            return -1;
        }
    }
    ca_pem = slurp("ca.pem");
    agent_pem = slurp("agent.pem");
    agent_key = slurp("agent.key");
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VAULTS; i++) {
        if (vaults[i].pid > 0) {
            (void)kill(vaults[i].pid, SIGCONT);
            (void)vs_vault_stop(&vaults[i], SIGKILL, 10000);
        }
    }
    vs_env_fini(&env);
    cfr_free(ca_pem);
    cfr_free(agent_pem);
    cfr_free(agent_key);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uplink_all_three_vaults_get_everything),
        cmocka_unit_test(test_uplink_region_mismatch_is_refused),
        cmocka_unit_test(test_uplink_single_region_quorum_is_lost),
        cmocka_unit_test(test_uplink_one_vault_down_quorum),
        cmocka_unit_test(test_uplink_refusal_is_reported),
        cmocka_unit_test(test_uplink_rerun_after_kill_resends_nothing),
        cmocka_unit_test(test_uplink_stalled_vault_is_dropped_as_lagging),
        cmocka_unit_test(test_uplink_quorum_lost_mid_run_commits_nowhere),
        cmocka_unit_test(test_uplink_vault_killed_mid_stream),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
