/*
 * vault_diskfull_test.c - coffer-vault on a disk that fills up: a real
 * vault process whose data directory is a small tmpfs, filled by a filler
 * file, driven by a test acting as a real agent (sealed envelopes).
 *
 * What it proves:
 *  1. When the disk fills, the failing call gets a clear status
 *     (UNAVAILABLE "storage failure; ...") and the log names the cause; no
 *     call is acknowledged after the failure.
 *  2. The vault stops by itself with exit code 1 (docs/VAULT.md: a storage
 *     write failed, never retried).
 *  3. Once space returns (the filler is deleted) the vault restarts on the
 *     same data directory; every acknowledged object reads back byte for
 *     byte, every acknowledged snapshot is listed, no snapshot appears that
 *     was not at least in flight, anything reported present is intact, and
 *     new uploads succeed.
 *
 * Needs root (mount(2)); otherwise the test is skipped with a message.
 * Invariant: the tmpfs is unmounted and the directory removed on every
 * path, failed assertions included (cmocka teardown).
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>       /* errno */
#include <fcntl.h>       /* open */
#include <signal.h>      /* SIGKILL, SIGTERM */
#include <stdio.h>       /* snprintf */
#include <stdlib.h>      /* qsort */
#include <string.h>      /* memcmp, strstr */
#include <sys/mount.h>   /* mount, umount2 */
#include <sys/stat.h>    /* mkdir */
#include <sys/statvfs.h> /* statvfs: free space for the filler */
#include <sys/wait.h>    /* waitpid: the vault's own exit */
#include <time.h>        /* clock_gettime, nanosleep */
#include <unistd.h>      /* geteuid, unlink, write */

#include "coffer_vault.pb-c.h"    /* wire messages */
#include "env.h"                  /* a sealing session */
#include "keys.h"                 /* a tenant keyring */
#include "mem.h"                  /* cfr_malloc */
#include "vault_client_support.h" /* objects and RPC wrappers */
#include "vault_support.h"        /* the harness */

/* Small enough to fill in seconds, large enough for RocksDB to open. */
#define FS_SIZE "64m"
/* Space left beside the filler: several batches fit before it runs out. */
#define HEADROOM    ((uint64_t)12 << 20)
#define CHUNK_LEN   ((size_t)160 << 10)
#define BATCH       6
#define MAX_ROUNDS  200
#define FILL_BUDGET 40000 /* ms to reach the failure */
#define EXIT_WAIT   15000 /* ms for the vault to stop by itself */
/* Chunks are 3/4 random (one 4 KiB run in four): compression must not make
 * the disk last forever. */
#define RUN_BLOCK  4096
#define RUN_PERIOD 4

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *keyring;
static struct cfr_session *session;
static char mnt[2 * VS_PATH_MAX];
static char filler[2 * VS_PATH_MAX + 16];
static bool mounted;
static char skip_reason[3 * VS_PATH_MAX];

/* Fills the file system but for headroom bytes, with a file of its own. */
static void
write_filler(uint64_t headroom)
{
    struct statvfs sv;
    uint64_t avail, want, done = 0;
    uint8_t *block = cfr_calloc(1, 1u << 20);
    int fd;

    assert_non_null(block);
    assert_int_equal(statvfs(mnt, &sv), 0);
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    assert_true(avail > headroom);
    want = avail - headroom;
    fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    while (done < want) {
        size_t n = want - done < (1u << 20) ? (size_t)(want - done) : 1u << 20;
        ssize_t w = write(fd, block, n);
        assert_true(w > 0);
        done += (uint64_t)w;
    }
    assert_int_equal(close(fd), 0);
    cfr_free(block);
}

/*
 * Waits for the vault to exit on its own; returns its exit code, 128 +
 * signal, or -1 when it was still running after timeout_ms (then it is
 * killed). vs_vault_alive would reap the status without telling it.
 */
static int
wait_own_exit(int64_t timeout_ms)
{
    int64_t end = vc_now_ms() + timeout_ms;
    int st;
    while (vault.pid > 0) {
        pid_t r = waitpid(vault.pid, &st, WNOHANG);
        if (r == vault.pid) {
            vault.pid = -1;
            return WIFEXITED(st)     ? WEXITSTATUS(st)
                   : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                                     : -1;
        }
        if (r < 0 || vc_now_ms() > end) {
            vs_vault_stop(&vault, SIGKILL, 5000);
            return -1;
        }
        vc_sleep_ms(20);
    }
    return -1;
}

/* ---- the test ---------------------------------------------------------- */

static void
test_vault_disk_full_fails_cleanly_and_recovers(void **state)
{
    (void)state;
    struct cfr_rpc_client *agent = NULL, *rest = NULL;
    struct vc_objset acked = {0}, attempted = {0}, acked_snaps = {0};
    struct vc_objset in_flight_snaps = {0}, in_flight_objs = {0};
    const char *failed_op = NULL;
    char failed_msg[sizeof(((struct cfr_err *)0)->msg)];
    int failed_st = CFR_RPC_OK, code;
    uint64_t seq = 1;
    int64_t start;
    size_t rounds = 0, present_unacked;

    if (skip_reason[0] != '\0') {
        print_message("vault_diskfull_test: skipped: %s\n", skip_reason);
        skip();
    }
    assert_int_equal(vs_vault_start(&vault, 30000), 0);
    agent = vs_client(&vault, "agent");
    rest = vs_client(&vault, "acme-restore");
    assert_non_null(agent);
    assert_non_null(rest);

    /* Fill only once the tenant exists: the failure must hit an upload,
     * not the creation of the tenant's database. */
    write_filler(HEADROOM);

    start = vc_now_ms();
    while (failed_op == NULL && rounds < MAX_ROUNDS &&
           vc_now_ms() - start < FILL_BUDGET) {
        struct vc_objset chunks = {0};
        struct vc_snapshot sn;
        struct cfr_err err;
        uint8_t lease[16];
        int st;

        cfr_err_clear(&err);
        for (int i = 0; i < BATCH; i++) {
            vc_make_chunk_ex(keyring, session, &chunks, seq++,
                             CHUNK_LEN + (size_t)i * 1000, RUN_BLOCK,
                             RUN_PERIOD);
        }
        vc_make_snapshot(keyring, session, &sn, &chunks, "INBOX", seq++);
        vc_objset_add_all(&attempted, &chunks);
        vc_objset_add_all(&attempted, &sn.pages);
        if ((st = vc_open_lease(session, agent, lease, &err)) != CFR_RPC_OK) {
            failed_op = "OpenLease";
        } else if ((st = vc_put_objects(agent, lease, &chunks, 0, chunks.n, 2,
                                        NULL, &err)) != CFR_RPC_OK) {
            failed_op = "PutObjects (chunks)";
        } else {
            vc_objset_add_all(&acked, &chunks);
            if ((st = vc_put_objects(agent, lease, &sn.pages, 0, sn.pages.n, 8,
                                     NULL, &err)) != CFR_RPC_OK) {
                failed_op = "PutObjects (pages)";
            } else {
                vc_objset_add_all(&acked, &sn.pages);
                vc_objset_add(&in_flight_snaps, sn.header_id, 0, sn.header,
                              sn.header_len);
                vc_objset_add_all(&in_flight_objs, &chunks);
                vc_objset_add_all(&in_flight_objs, &sn.pages);
                if ((st = vc_commit(agent, lease, &sn, NULL, &err)) !=
                    CFR_RPC_OK) {
                    failed_op = "Commit";
                } else {
                    vc_objset_add(&acked_snaps, sn.header_id, 0, sn.header,
                                  sn.header_len);
                }
            }
        }
        if (failed_op != NULL) {
            failed_st = st;
            snprintf(failed_msg, sizeof(failed_msg), "%s", err.msg);
        }
        vc_snapshot_fini(&sn);
        vc_objset_fini(&chunks);
        rounds++;
    }
    print_message("disk full after %zu rounds (%.1f s): %zu objects and %zu "
                  "snapshots acknowledged; %s got %s: %s\n",
                  rounds, (double)(vc_now_ms() - start) / 1000.0, acked.n,
                  acked_snaps.n, failed_op != NULL ? failed_op : "nothing",
                  cfr_rpc_status_name(failed_st),
                  failed_op != NULL ? failed_msg : "-");
    /* The disk did fill: 12 MiB cannot take 200 rounds of ~1 MiB. */
    assert_non_null(failed_op);
    assert_true(acked_snaps.n > 0);

    /* 1. A clear status, with the documented message, not a dropped
     * connection; the cause (no space) is in the vault's log. */
    assert_int_equal(failed_st, CFR_RPC_UNAVAILABLE);
    assert_non_null(strstr(failed_msg, "storage failure"));
    /* Nothing is acknowledged after the failure (the vault may still be
     * answering for a moment before it stops). */
    {
        struct vc_objset late = {0};
        struct cfr_err err;
        uint8_t lease[16];
        int st;
        vc_make_chunk_ex(keyring, session, &late, 999999, 1000, RUN_BLOCK,
                         RUN_PERIOD);
        st = vc_open_lease(session, agent, lease, &err);
        if (st == CFR_RPC_OK) {
            st = vc_put_objects(agent, lease, &late, 0, late.n, 1, NULL, &err);
        }
        assert_int_not_equal(st, CFR_RPC_OK);
        vc_objset_add_all(&attempted, &late);
        vc_objset_fini(&late);
    }

    /* 2. The vault stops by itself with the storage-failure code. */
    code = wait_own_exit(EXIT_WAIT);
    assert_int_equal(code, 1);
    assert_true(vc_log_has(&vault, "vault.fatal"));
    assert_true(vc_log_has(&vault, "No space left on device") ||
                vc_log_has(&vault, "no space") ||
                vc_log_has(&vault, "NoSpace"));
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    agent = rest = NULL;

    /* 3. Space returns: the same data directory serves again. */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(vs_vault_start(&vault, 30000), 0);
    agent = vs_client(&vault, "agent");
    rest = vs_client(&vault, "acme-restore");
    assert_non_null(agent);
    assert_non_null(rest);
    assert_int_equal(vc_check_objects(agent, rest, &acked, true), acked.n);
    /* Unacknowledged objects may or may not be there, but never torn. */
    present_unacked =
        vc_check_objects(agent, rest, &attempted, false) - acked.n;
    {
        int st;
        Coffer__V1__ListSnapshotsRequest req =
            COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
        Coffer__V1__ListSnapshotsResponse *ls = NULL;
        struct cfr_err err;
        req.with_headers = true;
        st = vs_unary(rest, "ListSnapshots", &req.base,
                      &coffer__v1__list_snapshots_response__descriptor,
                      (ProtobufCMessage **)&ls, &err);
        assert_int_equal(st, CFR_RPC_OK);
        assert_non_null(ls);
        for (size_t i = 0; i < acked_snaps.n; i++) {
            bool found = false;
            for (size_t k = 0; k < ls->n_snapshots; k++) {
                if (memcmp(ls->snapshots[k]->header_id.data,
                           acked_snaps.v[i].id, VC_ID_LEN) == 0) {
                    found = true;
                    assert_int_equal(ls->snapshots[k]->header.len,
                                     acked_snaps.v[i].len);
                    assert_memory_equal(ls->snapshots[k]->header.data,
                                        acked_snaps.v[i].data,
                                        acked_snaps.v[i].len);
                }
            }
            assert_true(found);
        }
        /* A snapshot beyond the acknowledged ones was at least in flight
         * (its commit failed, perhaps after reaching the disk) and then
         * every object it names was acknowledged and is intact. */
        for (size_t k = 0; k < ls->n_snapshots; k++) {
            const uint8_t *hid = ls->snapshots[k]->header_id.data;
            assert_int_equal(ls->snapshots[k]->header_id.len, VC_ID_LEN);
            if (vc_objset_find(&acked_snaps, hid) == NULL) {
                assert_non_null(vc_objset_find(&in_flight_snaps, hid));
            }
        }
        print_message("after restart: %zu snapshots listed (%zu "
                      "acknowledged), %zu unacknowledged objects present "
                      "and intact\n",
                      ls->n_snapshots, acked_snaps.n, present_unacked);
        protobuf_c_message_free_unpacked(&ls->base, NULL);
    }
    assert_int_equal(vc_check_objects(agent, rest, &in_flight_objs, true),
                     in_flight_objs.n);

    /* New uploads succeed and read back. */
    {
        struct vc_objset chunks = {0};
        struct vc_snapshot sn;
        struct cfr_err err;
        uint8_t lease[16];
        for (int i = 0; i < BATCH; i++) {
            vc_make_chunk_ex(keyring, session, &chunks, seq++, CHUNK_LEN,
                             RUN_BLOCK, RUN_PERIOD);
        }
        vc_make_snapshot(keyring, session, &sn, &chunks, "Sent", seq++);
        assert_int_equal(vc_open_lease(session, agent, lease, &err),
                         CFR_RPC_OK);
        assert_int_equal(
            vc_put_objects(agent, lease, &chunks, 0, chunks.n, 2, NULL, &err),
            CFR_RPC_OK);
        assert_int_equal(vc_put_objects(agent, lease, &sn.pages, 0, sn.pages.n,
                                        8, NULL, &err),
                         CFR_RPC_OK);
        assert_int_equal(vc_commit(agent, lease, &sn, NULL, &err), CFR_RPC_OK);
        assert_int_equal(vc_check_objects(agent, rest, &chunks, true),
                         chunks.n);
        vc_snapshot_fini(&sn);
        vc_objset_fini(&chunks);
    }
    cfr_rpc_client_free(agent);
    cfr_rpc_client_free(rest);
    assert_int_equal(vs_vault_stop(&vault, SIGTERM, 30000), 0);

    vc_objset_fini(&acked);
    vc_objset_fini(&attempted);
    vc_objset_fini(&acked_snaps);
    vc_objset_fini(&in_flight_snaps);
    vc_objset_fini(&in_flight_objs);
}

/* ---- setup ------------------------------------------------------------- */

static int
setup(void **state)
{
    (void)state;
    struct cfr_err err;

    skip_reason[0] = '\0';
    mounted = false;
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    keyring = cfr_keyring_generate(1700000000000, &err);
    if (keyring == NULL ||
        (session = cfr_session_new(keyring, 0, &err)) == NULL) {
        return -1;
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&vault, &env, "full") != 0) {
        return -1;
    }
    /* The harness puts the data directory at <vault dir>/data. */
    snprintf(mnt, sizeof(mnt), "%s/data", vault.dir);
    snprintf(filler, sizeof(filler), "%s/filler", mnt);
    if (mkdir(mnt, 0700) != 0) {
        perror(mnt);
        return -1;
    }
    if (geteuid() != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "needs root to mount a tmpfs (CI runs as root)");
    } else if (mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV,
                     "size=" FS_SIZE ",mode=0700") != 0) {
        snprintf(skip_reason, sizeof(skip_reason),
                 "cannot mount a tmpfs on %s: %s", mnt, strerror(errno));
    } else {
        mounted = true;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (vault.pid > 0) {
        vs_vault_stop(&vault, SIGKILL, 10000);
    }
    if (mounted) {
        /* Lazily if something still holds it: never leave a mount. */
        if (umount2(mnt, 0) != 0 && umount2(mnt, MNT_DETACH) != 0) {
            fprintf(stderr, "vault_diskfull_test: cannot unmount %s: %s\n", mnt,
                    strerror(errno));
        }
        mounted = false;
    }
    vs_env_fini(&env);
    cfr_session_free(session);
    cfr_keyring_free(keyring);
    session = NULL;
    keyring = NULL;
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_vault_disk_full_fails_cleanly_and_recovers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
