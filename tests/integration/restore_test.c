/*
 * restore_test.c - coffer-restore end to end: a real vault over mutual
 * TLS, a Maildir++ tree backed up by the agent's own pipeline
 * (agent_backup_mailbox through agent/uplink), and the real coffer-restore
 * binary bringing it back with the escrow copy of the keyring and the
 * acme-restore certificate.
 *
 * What must hold:
 *  1. The restored tree equals the source byte for byte: the same files
 *     (names with their ":2," flags, new/ vs cur/), the same contents, the
 *     same mtimes to the nanosecond, and cur/ new/ tmp/ in every folder.
 *  2. A manifest naming a hostile path (built here with snap.h and sealed
 *     like the agent's) is refused with exit code 7 and nothing appears
 *     outside the target.
 *  3. A chunk swapped on the vault (another chunk's envelope under its
 *     ID) and a wrong escrow key both fail loudly (exit 6) and leave no
 *     file with wrong content behind.
 *  4. A non-empty target is refused (exit 8); `snapshots --json` lists
 *     the mailboxes with file counts.
 */
#define _XOPEN_SOURCE 700 /* popen */

#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_run_support.h"    /* ars_run, ars_slurp, ars_rm_tree */
#include "backup.h"               /* the agent's pipeline */
#include "env.h"                  /* sessions */
#include "id.h"                   /* cfr_id_plain */
#include "keys.h"                 /* the tenant keyring */
#include "kv.h"                   /* the agent state's RocksDB env */
#include "log.h"                  /* quiet logs */
#include "mem.h"                  /* cfr_malloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "scenario_support.h"     /* scn_mkdirs */
#include "snap.h"                 /* hand-built manifests */
#include "state.h"                /* the agent's file cache */
#include "uplink.h"               /* the agent's vault link */
#include "vault_client_support.h" /* put, commit */
#include "vault_support.h"        /* the harness */

#ifndef COFFER_RESTORE_BIN
#error "COFFER_RESTORE_BIN must name the coffer-restore binary"
#endif

#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))
#define BASE_SECS 1767225600 /* 2026-01-01: far from "racily clean" */
#define PASS      "correct horse battery staple"
#define RUN_MS    60000

static struct vs_env env;
static struct vs_vault vault;
static struct cfr_keyring *full, *agent;
static struct cfr_kv_env *kv_env;
static struct agent_state *state;
static char *ca_pem, *agent_pem, *agent_key;
static struct cfr_rpc_client *agent_cli;
static char tmp[256];
static char conf_ok[512], conf_wrong_key[512], conf_dead_first[512];

/* The source tree: every file's relative path, in creation order. */
#define FILES_MAX 64
static char src_files[FILES_MAX][128];
static size_t n_src_files;

/* ---- helpers ------------------------------------------------------------ */

/* A file of the test PKI, owned; never empty. */
static char *
slurp_env(const char *name)
{
    char path[2 * VS_PATH_MAX];
    size_t n = 0;
    char *p = ars_slurp(vs_env_path(&env, name, path, sizeof(path)), &n);
    assert_non_null(p);
    assert_true(n > 0);
    return p;
}

/* A file of the source tree with a nanosecond mtime of its own. */
static void
put_file(const char *root, const char *rel, const uint8_t *data, size_t len)
{
    char p[512];
    FILE *f;
    struct timespec ts[2];
    size_t i = n_src_files;
    assert_true(i < FILES_MAX);
    FMT(p, "%s/%s", root, rel);
    f = fopen(p, "wb");
    assert_non_null(f);
    if (len > 0) {
        assert_int_equal(fwrite(data, 1, len, f), len);
    }
    assert_int_equal(fclose(f), 0);
    ts[0].tv_sec = BASE_SECS + (time_t)i * 3600;
    ts[0].tv_nsec = 123456789 + (long)i * 1001;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    FMT(src_files[i], "%s", rel);
    n_src_files++;
}

static void
put_text(const char *root, const char *rel, const char *text)
{
    put_file(root, rel, (const uint8_t *)text, strlen(text));
}

/* A message of about len bytes, seeded. */
static uint8_t *
message(uint64_t seed, size_t len, size_t *len_r)
{
    uint8_t *p = cfr_malloc(len + 256);
    uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 7;
    int h;
    assert_non_null(p);
    h = snprintf(
        (char *)p, 256,
        "From: a%llu@example.org\r\nTo: alice@example.org\r\n"
        "Message-ID: <m%llu@example.org>\r\nSubject: test %llu\r\n\r\n",
        (unsigned long long)seed, (unsigned long long)seed,
        (unsigned long long)seed);
    for (size_t i = (size_t)h; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(' ' + x % 90);
        if (i % 76 == 75) {
            p[i] = '\n';
        }
    }
    *len_r = len > (size_t)h ? len : (size_t)h;
    return p;
}

static void
put_message(const char *root, const char *rel, uint64_t seed, size_t len)
{
    size_t n;
    uint8_t *p = message(seed, len, &n);
    put_file(root, rel, p, n);
    cfr_free(p);
}

/* The Maildir++ store the agent backs up. */
static void
make_source(const char *root)
{
    static const char *const dirs[] = {"cur",
                                       "new",
                                       "tmp",
                                       ".Sent/cur",
                                       ".Sent/new",
                                       ".Sent/tmp",
                                       ".Lists.dev/cur",
                                       ".Lists.dev/new",
                                       ".Lists.dev/tmp",
                                       "archive"};
    uint8_t *big;
    size_t n;

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        scn_mkdirs(root, dirs[i]);
    }
    put_message(root, "cur/1767225601.M1P10.host:2,S", 1, 3000);
    put_message(root, "cur/1767225602.M2P10.host:2,RS", 2, 5000);
    put_message(root, "cur/1767225603.M3P10.host:2,", 3, 700);
    put_message(root, "new/1767225604.M4P10.host", 4, 1200);
    /* A large message whose body repeats: one chunk ID several times. */
    big = message(5, 64 << 10, &n);
    {
        size_t total = 5 * n;
        uint8_t *rep = cfr_malloc(total);
        assert_non_null(rep);
        for (size_t k = 0; k < 5; k++) {
            memcpy(rep + k * n, big, n);
        }
        put_file(root, "cur/1767225605.M5P10.host:2,FS", rep, total);
        cfr_free(rep);
    }
    cfr_free(big);
    put_message(root, "cur/1767225606.M6P10.host:2,T", 6, 400 << 10);
    /* Consistent with the messages, so restore_dovecot_finish (which
     * rewrites a list that is not) leaves the restored bytes alone. */
    put_text(root, "dovecot-uidlist",
             "3 V1767225600 N7 G0123\n1 :1767225601.M1P10.host\n"
             "2 :1767225602.M2P10.host\n3 :1767225603.M3P10.host\n"
             "4 :1767225604.M4P10.host\n5 :1767225605.M5P10.host\n"
             "6 :1767225606.M6P10.host\n");
    put_text(root, "dovecot-keywords", "0 $Junk\n");
    put_text(root, "subscriptions", "Sent\nLists.dev\n");
    put_message(root, ".Sent/cur/1767225610.M10P10.host:2,S", 10, 2500);
    put_text(root, ".Sent/maildirfolder", "");
    put_text(root, ".Sent/dovecot-uidlist",
             "3 V1767225611 N2\n1 :1767225610.M10P10.host\n");
    for (uint64_t k = 0; k < 4; k++) {
        char rel[128];
        FMT(rel, ".Lists.dev/cur/17672256%02llu.M%lluP11.host:2,%s",
            (unsigned long long)(20 + k), (unsigned long long)(20 + k),
            k % 2 ? "S" : "");
        put_message(root, rel, 20 + k, 1500 + 300 * k);
    }
    put_message(root, "archive/old.mbox", 30, 20000);
    put_file(root, "archive/empty", NULL, 0);
}

/* Runs coffer-restore with args; stdout into out (capped). Exit code. */
static int
run_restore(const char *const *args, char *out, size_t out_size)
{
    char outp[512];
    size_t n = 0;
    FMT(outp, "%s/restore.out", tmp);
    /* Bounded: a hung restore fails the test instead of the suite. */
    int code = ars_run(COFFER_RESTORE_BIN, args, outp, NULL, RUN_MS);
    if (code < 0) {
        fail_msg("coffer-restore did not finish in %d ms", RUN_MS);
    }
    assert_true(code < 128); /* exited, not killed by a signal */
    if (out != NULL) {
        char *o = ars_slurp(outp, &n);
        assert_non_null(o);
        n = n < out_size - 1 ? n : out_size - 1;
        memcpy(out, o, n);
        out[n] = '\0';
        cfr_free(o);
    }
    return code;
}

/* A config for the test vault; with dead_first, an address where nothing
 * listens comes first in the list. */
static void
write_config(const char *path, const char *key_file, const char *pass_file,
             bool dead_first)
{
    char ca[512], cert[512], key[512];
    FILE *f;
    vs_env_path(&env, "ca.pem", ca, sizeof(ca));
    vs_env_path(&env, "acme-restore.pem", cert, sizeof(cert));
    vs_env_path(&env, "acme-restore.key", key, sizeof(key));
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
            "\"%s\";\nvaults = [ %s\"127.0.0.1:%d\" ];\ntls = { ca = \"%s\"; "
            "cert = \"%s\"; key = \"%s\"; server_name = \"localhost\"; };\n"
            "parallelism = 3;\nbatch = 2;\nlog_level = \"error\";\n",
            key_file, pass_file, dead_first ? "\"127.0.0.1:1\", " : "",
            vault.port, ca, cert, key);
    assert_int_equal(fclose(f), 0);
}

/* Regular files below dir (0 when it does not exist). */
static size_t
count_files(const char *dir)
{
    char cmd[600];
    FILE *p;
    size_t n = 0;
    FMT(cmd, "find '%s' -type f 2>/dev/null | wc -l", dir);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%zu", &n), 1);
    pclose(p);
    return n;
}

/* ---- hand-built snapshots ----------------------------------------------- */

struct built {
    struct vc_objset objs; /* chunks and manifest pages, sealed */
    struct vc_objset ids;  /* every referenced ID (data unused) */
    struct cfr_session *sess;
};

static int
manifest_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
             uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct built *b = ctx;
    struct cfr_buf eb;
    (void)level;
    cfr_keyring_chunk_id(full, page, len, id_r);
    cfr_buf_init(&eb, len + (2u << 20));
    assert_int_equal(
        cfr_env_seal(b->sess, CFR_ENV_MANIFEST_PAGE, id_r, page, len, &eb, err),
        0);
    if (vc_objset_find(&b->objs, id_r) == NULL) {
        vc_objset_add(&b->objs, id_r,
                      COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED, eb.data,
                      eb.len);
        vc_objset_add(&b->ids, id_r, 0, NULL, 0);
    }
    cfr_buf_fini(&eb);
    return 0;
}

struct hentry {
    const char *folder;
    const char *name; /* may start with "/" */
    size_t name_len;  /* 0: strlen */
    enum cfr_snap_kind kind;
    const char *info;
    const char *content;
};

/* Manifest keys must come sorted: folder 0x00 name, bytewise. */
static int
cmp_hentry(const void *a, const void *b)
{
    const struct hentry *x = a, *y = b;
    size_t fx = strlen(x->folder), fy = strlen(y->folder);
    size_t nx = x->name_len ? x->name_len : strlen(x->name);
    size_t ny = y->name_len ? y->name_len : strlen(y->name);
    uint8_t kx[600], ky[600];
    int c;
    assert_true(fx + 1 + nx <= sizeof(kx) && fy + 1 + ny <= sizeof(ky));
    memcpy(kx, x->folder, fx);
    kx[fx] = 0;
    memcpy(kx + fx + 1, x->name, nx);
    memcpy(ky, y->folder, fy);
    ky[fy] = 0;
    memcpy(ky + fy + 1, y->name, ny);
    c = memcmp(kx, ky, fx + 1 + nx < fy + 1 + ny ? fx + 1 + nx : fy + 1 + ny);
    return c != 0 ? c : (int)(fx + nx) - (int)(fy + ny);
}

static int
cmp_obj(const void *a, const void *b)
{
    return memcmp(((const struct vc_obj *)a)->id,
                  ((const struct vc_obj *)b)->id, VC_ID_LEN);
}

/*
 * Commits a snapshot of mailbox with entries (sorted here by key) sealed
 * with the full keyring. With swap, the first entry's chunk ID carries the
 * second's envelope (what a vault that swaps objects serves).
 */
static void
commit_hand_built(const char *mailbox, struct hentry *es, size_t n, bool swap)
{
    struct built b;
    struct cfr_snap_manifest_writer *mw = NULL;
    struct vc_snapshot sn;
    struct cfr_snap_header h;
    struct cfr_tree_root mroot;
    struct cfr_buf hb, eb;
    struct cfr_err err;
    uint8_t lease[16];
    uint8_t ids[8][32];
    size_t n_chunks = 0;

    memset(&b, 0, sizeof(b));
    memset(&sn, 0, sizeof(sn));
    qsort(es, n, sizeof(*es), cmp_hentry);
    b.sess = cfr_session_new(full, 0, &err);
    assert_non_null(b.sess);
    assert_int_equal(
        cfr_snap_manifest_writer_new(NULL, manifest_put, &b, &mw, &err), 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t key[600];
        size_t fl = strlen(es[i].folder);
        size_t nl = es[i].name_len ? es[i].name_len : strlen(es[i].name);
        size_t cl = strlen(es[i].content);
        struct cfr_snap_entry e;
        assert_true(fl + 1 + nl <= sizeof(key) && n_chunks < 8);
        memcpy(key, es[i].folder, fl);
        key[fl] = 0;
        memcpy(key + fl + 1, es[i].name, nl);
        cfr_keyring_chunk_id(full, es[i].content, cl, ids[n_chunks]);
        cfr_buf_init(&eb, cl + (2u << 20));
        assert_int_equal(cfr_env_seal(b.sess, CFR_ENV_CHUNK, ids[n_chunks],
                                      es[i].content, cl, &eb, &err),
                         0);
        vc_objset_add(&b.objs, ids[n_chunks],
                      COFFER__V1__OBJECT_KIND__OBJECT_KIND_SEALED, eb.data,
                      eb.len);
        vc_objset_add(&b.ids, ids[n_chunks], 0, NULL, 0);
        cfr_buf_fini(&eb);
        memset(&e, 0, sizeof(e));
        e.key = key;
        e.key_len = fl + 1 + nl;
        e.kind = es[i].kind;
        e.info = (const uint8_t *)es[i].info;
        e.info_len = strlen(es[i].info);
        e.size = cl;
        e.mtime_ns = (int64_t)BASE_SECS * 1000000000;
        e.mode = 0600;
        e.chunk_ids = ids[n_chunks];
        e.n_chunks = 1;
        assert_int_equal(cfr_snap_manifest_writer_add(mw, &e, &err), 0);
        n_chunks++;
    }
    assert_int_equal(cfr_snap_manifest_writer_finish(mw, &mroot, &err), 0);
    cfr_snap_manifest_writer_free(mw);
    if (swap) {
        /* Object 0 now carries object 1's envelope: bytes a vault swapped. */
        struct vc_obj *o0 = &b.objs.v[0], *o1 = NULL;
        for (size_t i = 1; i < b.objs.n && o1 == NULL; i++) {
            if (memcmp(b.objs.v[i].id, ids[1], 32) == 0) {
                o1 = &b.objs.v[i];
            }
        }
        assert_non_null(o1);
        assert_memory_equal(o0->id, ids[0], 32);
        cfr_free(o0->data);
        o0->data = cfr_malloc(o1->len);
        assert_non_null(o0->data);
        memcpy(o0->data, o1->data, o1->len);
        o0->len = o1->len;
    }
    /* Reference list: every ID once, sorted. */
    qsort(b.ids.v, b.ids.n, sizeof(b.ids.v[0]), cmp_obj);
    {
        struct vc_objset uniq;
        memset(&uniq, 0, sizeof(uniq));
        for (size_t i = 0; i < b.ids.n; i++) {
            if (i == 0 || memcmp(b.ids.v[i].id, b.ids.v[i - 1].id, 32) != 0) {
                vc_objset_add(&uniq, b.ids.v[i].id, 0, NULL, 0);
            }
        }
        /* vc_make_snapshot builds the reference list and a header; the
         * header is rebuilt below to name the real manifest. */
        vc_make_snapshot(full, b.sess, &sn, &uniq, mailbox, 1);
        vc_objset_fini(&uniq);
    }
    memset(&h, 0, sizeof(h));
    FMT(h.mailbox, "%s", mailbox);
    FMT(h.host, "test-host");
    FMT(h.agent_version, "restore-test");
    h.agent_time_ms = (int64_t)BASE_SECS * 1000;
    h.manifest = mroot;
    h.refs = sn.root;
    cfr_buf_init(&hb, CFR_SNAP_HEADER_MAX);
    cfr_buf_init(&eb, 1u << 20);
    assert_int_equal(cfr_snap_header_encode(&h, &hb, &err), 0);
    cfr_keyring_chunk_id(full, hb.data, hb.len, sn.header_id);
    assert_int_equal(cfr_env_seal(b.sess, CFR_ENV_SNAPSHOT_HEADER, sn.header_id,
                                  hb.data, hb.len, &eb, &err),
                     0);
    cfr_free(sn.header);
    sn.header = cfr_buf_steal(&eb, &sn.header_len);
    cfr_buf_fini(&hb);
    cfr_buf_fini(&eb);

    assert_int_equal(vc_open_lease(b.sess, agent_cli, lease, NULL), CFR_RPC_OK);
    {
        /* Only what the vault lacks: it keeps the first bytes of an ID
         * and refuses other bytes under it (sealing is randomised). */
        struct vc_objset lack;
        bool *miss = cfr_calloc(b.objs.n + 1, sizeof(*miss));
        size_t n_miss = 0;
        memset(&lack, 0, sizeof(lack));
        assert_non_null(miss);
        assert_int_equal(vc_missing(agent_cli, lease, &b.objs, miss, &n_miss),
                         CFR_RPC_OK);
        for (size_t i = 0; i < b.objs.n; i++) {
            if (miss[i]) {
                vc_objset_add(&lack, b.objs.v[i].id, b.objs.v[i].kind,
                              b.objs.v[i].data, b.objs.v[i].len);
            }
        }
        assert_int_equal(
            vc_put_objects(agent_cli, lease, &lack, 0, lack.n, 64, NULL, NULL),
            CFR_RPC_OK);
        vc_objset_fini(&lack);
        cfr_free(miss);
    }
    assert_int_equal(vc_put_objects(agent_cli, lease, &sn.pages, 0, sn.pages.n,
                                    64, NULL, NULL),
                     CFR_RPC_OK);
    assert_int_equal(vc_commit(agent_cli, lease, &sn, NULL, NULL), CFR_RPC_OK);
    vc_snapshot_fini(&sn);
    vc_objset_fini(&b.objs);
    vc_objset_fini(&b.ids);
    cfr_session_free(b.sess);
}

/* ---- tests -------------------------------------------------------------- */

static void
test_restore_maildir_byte_exact(void **state_)
{
    (void)state_;
    char src[400], dst[400], out[8192];
    struct agent_uplink_vault_opts vo;
    struct agent_uplink_opts uo;
    struct agent_uplink *up = NULL;
    struct agent_backup_sink sink;
    struct agent_backup_stats bs;
    struct cfr_session *sess;
    struct cfr_err err;
    char target[64];
    int64_t t0;

    FMT(src, "%s/src", tmp);
    FMT(dst, "%s/out/restored", tmp);
    assert_int_equal(mkdir(src, 0700), 0);
    make_source(src);

    /* The agent's own pipeline makes the snapshot. */
    sess = cfr_session_new(agent, 0, &err);
    assert_non_null(sess);
    memset(&vo, 0, sizeof(vo));
    memset(&uo, 0, sizeof(uo));
    FMT(target, "127.0.0.1:%d", vault.port);
    vo.name = "v";
    vo.target = target;
    vo.target_name = "localhost";
    vo.ca_pem = ca_pem;
    vo.cert_pem = agent_pem;
    vo.key_pem = agent_key;
    uo.vaults = &vo;
    uo.n_vaults = 1;
    memcpy(uo.session_public, cfr_session_public(sess),
           AGENT_UPLINK_SESSION_LEN);
    uo.call_timeout_ms = 20000;
    uo.stream_timeout_ms = 60000;
    assert_int_equal(agent_uplink_open(&uo, &up, &err), 0);
    agent_backup_sink_uplink(up, &sink);
    {
        struct agent_backup_opts bo;
        memset(&bo, 0, sizeof(bo));
        bo.workers = 2;
        bo.host = "mail1";
        bo.tmp_dir = tmp;
        assert_int_equal(agent_backup_mailbox("alice@example.org", src, agent,
                                              sess, state, &sink, &bo, &bs,
                                              &err),
                         0);
    }
    agent_uplink_free(up);
    cfr_session_free(sess);
    assert_true(bs.committed);
    assert_int_equal(bs.entries, n_src_files);
    /* The repeated body gives one chunk ID in several files (chunking is
     * deterministic); the agent's counters cannot show it reliably, since
     * two workers that query the same ID at once both seal it. */

    /* The real binary restores it into a directory that does not exist. */
    {
        char parent[400];
        FMT(parent, "%s/out", tmp);
        assert_int_equal(mkdir(parent, 0700), 0);
    }
    t0 = vc_now_ms();
    {
        const char *args[] = {
            "--config", conf_ok, "restore", "--mailbox", "alice@example.org",
            "--to",     dst,     "--json",  NULL};
        int code = run_restore(args, out, sizeof(out));
        if (code != 0) {
            fprintf(stderr, "restore output: %s\n", out);
        }
        assert_int_equal(code, 0);
    }
    fprintf(stderr, "restore of %zu files: %lld ms\n", n_src_files,
            (long long)(vc_now_ms() - t0));
    assert_non_null(strstr(out, "\"ok\":true"));
    {
        char want[64];
        FMT(want, "\"files\":%zu", n_src_files);
        assert_non_null(strstr(out, want));
    }

    /* Byte for byte, name for name, mtime for mtime. */
    for (size_t i = 0; i < n_src_files; i++) {
        char a[600], b[600];
        size_t la = 0, lb = 0;
        char *pa, *pb;
        struct stat sa, sb;
        FMT(a, "%s/%s", src, src_files[i]);
        FMT(b, "%s/%s", dst, src_files[i]);
        pa = ars_slurp(a, &la);
        pb = ars_slurp(b, &lb);
        if (pb == NULL) {
            fail_msg("not restored: %s", src_files[i]);
        }
        assert_int_equal(la, lb);
        if (la > 0) {
            assert_memory_equal(pa, pb, la);
        }
        assert_int_equal(lstat(a, &sa), 0);
        assert_int_equal(lstat(b, &sb), 0);
        assert_true(S_ISREG(sb.st_mode));
        assert_int_equal(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
        assert_int_equal(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
        assert_int_equal(sa.st_mode & 0777, sb.st_mode & 0777);
        cfr_free(pa);
        cfr_free(pb);
    }
    /* Nothing more (no temporary file left), and the Maildir++ layout. */
    assert_int_equal(count_files(dst), n_src_files);
    {
        static const char *const dirs[] = {"cur",
                                           "new",
                                           "tmp",
                                           ".Sent/cur",
                                           ".Sent/new",
                                           ".Sent/tmp",
                                           ".Lists.dev/cur",
                                           ".Lists.dev/new",
                                           ".Lists.dev/tmp"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            char p[600];
            struct stat sb;
            FMT(p, "%s/%s", dst, dirs[i]);
            assert_int_equal(lstat(p, &sb), 0);
            assert_true(S_ISDIR(sb.st_mode));
        }
    }

    /* The same target again: not empty, refused, nothing touched. */
    {
        const char *args[] = {
            "--config",          conf_ok, "restore", "--mailbox",
            "alice@example.org", "--to",  dst,       NULL};
        assert_int_equal(run_restore(args, NULL, 0), 8);
        assert_int_equal(count_files(dst), n_src_files);
    }
    /* A first vault that does not answer: the next one serves. */
    {
        char d2[400];
        const char *args[] = {"--config",
                              conf_dead_first,
                              "restore",
                              "--mailbox",
                              "alice@example.org",
                              "--to",
                              d2,
                              "--json",
                              NULL};
        FMT(d2, "%s/out/second", tmp);
        assert_int_equal(run_restore(args, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "\"ok\":true"));
        assert_int_equal(count_files(d2), n_src_files);
    }
    /* An unknown mailbox: exit 5. */
    {
        char d2[400];
        const char *args[] = {
            "--config",           conf_ok, "restore", "--mailbox",
            "nobody@example.org", "--to",  d2,        NULL};
        FMT(d2, "%s/out/nobody", tmp);
        assert_int_equal(run_restore(args, NULL, 0), 5);
    }
    /* The table for people: a header line and the mailbox's row. */
    {
        const char *args[] = {"--config", conf_ok, "snapshots", NULL};
        char want[64];
        assert_int_equal(run_restore(args, out, sizeof(out)), 0);
        assert_true(strncmp(out, "MAILBOX ", 8) == 0);
        assert_non_null(strstr(out, "\nalice@example.org "));
        assert_non_null(strstr(out, " mail1 "));
        FMT(want, " %zu ", n_src_files);
        assert_non_null(strstr(out, want));
    }
    /* The listing names the mailbox, its host and its file count. */
    {
        const char *args[] = {"--config", conf_ok, "snapshots", "--json", NULL};
        char want[64];
        assert_int_equal(run_restore(args, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "\"mailbox\":\"alice@example.org\""));
        assert_non_null(strstr(out, "\"host\":\"mail1\""));
        FMT(want, "\"files\":%zu", n_src_files);
        assert_non_null(strstr(out, want));
        assert_non_null(strstr(out, "\"ok\":true"));
    }
}

static void
test_restore_refuses_hostile_names(void **state_)
{
    (void)state_;
    /* Each mailbox has one benign file and one hostile entry. */
    static const struct {
        const char *mailbox;
        struct hentry e;
    } cases[] = {
        {"dotdot@x", {"", "/../../escaped", 0, CFR_SNAP_OPAQUE, "", "pwn"}},
        {"abs@x", {"", "//tmp/escaped", 0, CFR_SNAP_OPAQUE, "", "pwn"}},
        {"folder@x", {"..", "m1", 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,S", "pwn"}},
        {"msgslash@x",
         {"", "../../escaped", 0, CFR_SNAP_MAILDIR_MESSAGE, "", "pwn"}},
        {"info@x",
         {"", "m1", 0, CFR_SNAP_MAILDIR_MESSAGE, "/../../../escaped", "pwn"}},
        {"nul@x", {"", "/a\0b", 4, CFR_SNAP_OPAQUE, "", "pwn"}},
    };
    char outside[400];

    FMT(outside, "%s/escaped", tmp);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hentry es[2] = {
            cases[i].e,
            {"", "/zz-benign", 0, CFR_SNAP_OPAQUE, "", "fine"},
        };
        char dst[400], rel[64];
        const char *args[] = {"--config",       conf_ok, "restore", "--mailbox",
                              cases[i].mailbox, "--to",  dst,       NULL};
        commit_hand_built(cases[i].mailbox, es, 2, false);
        FMT(rel, "hostile/%zu/a/b", i);
        scn_mkdirs(tmp, rel);
        FMT(dst, "%s/hostile/%zu/a/b/c", tmp, i);
        assert_int_equal(run_restore(args, NULL, 0), 7);
        assert_int_equal(access(outside, F_OK), -1);
        {
            char p[600];
            FMT(p, "%s/hostile/%zu/escaped", tmp, i);
            assert_int_equal(access(p, F_OK), -1);
            FMT(p, "%s/hostile/%zu/a/escaped", tmp, i);
            assert_int_equal(access(p, F_OK), -1);
            FMT(p, "%s/hostile/%zu/a/b/escaped", tmp, i);
            assert_int_equal(access(p, F_OK), -1);
        }
    }
}

static void
test_restore_fails_loudly_on_bad_data_or_key(void **state_)
{
    (void)state_;
    char dst[400], out[4096];
    struct hentry es[2] = {
        {"", "1767225601.M1.host", 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,S",
         "first message\n"},
        {"", "1767225602.M2.host", 0, CFR_SNAP_MAILDIR_MESSAGE, ":2,",
         "second message, a little longer\n"},
    };
    commit_hand_built("swapped@x", es, 2, true);

    /* A chunk the vault swapped: exit 6, the file never appears. */
    FMT(dst, "%s/swapped", tmp);
    {
        const char *args[] = {"--config",  conf_ok,     "restore",
                              "--mailbox", "swapped@x", "--to",
                              dst,         "--json",    NULL};
        char p[600];
        assert_int_equal(run_restore(args, out, sizeof(out)), 6);
        assert_non_null(strstr(out, "\"ok\":false"));
        assert_non_null(strstr(out, "\"kind\":\"verify\""));
        FMT(p, "%s/cur/1767225601.M1.host:2,S", dst);
        assert_int_equal(access(p, F_OK), -1);
        /* No temporary file with unverified bytes is left either. */
        assert_true(count_files(dst) <= 1);
    }

    /* The escrow copy of another tenant's keyring: exit 6, nothing. */
    FMT(dst, "%s/wrongkey", tmp);
    {
        const char *args[] = {
            "--config",  conf_wrong_key, "restore", "--mailbox",
            "swapped@x", "--to",         dst,       NULL};
        assert_int_equal(run_restore(args, NULL, 0), 6);
        assert_int_equal(access(dst, F_OK), -1);
    }
    /* And its listing says the headers do not open. */
    {
        const char *args[] = {"--config", conf_wrong_key, "snapshots", "--json",
                              NULL};
        assert_int_equal(run_restore(args, out, sizeof(out)), 6);
        assert_non_null(strstr(out, "\"readable\":false"));
        assert_null(strstr(out, "\"readable\":true"));
    }
}

/* ---- setup -------------------------------------------------------------- */

static int
setup(void **state_)
{
    (void)state_;
    const struct cfr_kdf_params kdf = {CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN};
    struct cfr_keyring *other;
    struct cfr_err err;
    char p[512], key_ok[512], key_other[512], pass[512];
    const char *t = getenv("TMPDIR");
    FILE *f;

    cfr_log_set_level(CFR_LOG_ERROR);
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    if (snprintf(tmp, sizeof(tmp), "%s/restore_it.XXXXXX",
                 t != NULL && *t != '\0' ? t : "/tmp") >= (int)sizeof(tmp) ||
        mkdtemp(tmp) == NULL) {
        return -1;
    }
    full = cfr_keyring_generate(1700000000000, &err);
    other = cfr_keyring_generate(1700000000000, &err);
    if (full == NULL || other == NULL ||
        (agent = cfr_keyring_agent_view(full, &err)) == NULL) {
        return -1;
    }
    snprintf(key_ok, sizeof(key_ok), "%s/acme.escrow", tmp);
    snprintf(key_other, sizeof(key_other), "%s/other.escrow", tmp);
    snprintf(pass, sizeof(pass), "%s/escrow.pass", tmp);
    if (cfr_keyring_export(full, key_ok, PASS, strlen(PASS), &kdf, &err) != 0 ||
        cfr_keyring_export(other, key_other, PASS, strlen(PASS), &kdf, &err) !=
            0) {
        return -1;
    }
    cfr_keyring_free(other);
    if ((f = fopen(pass, "w")) == NULL) {
        return -1;
    }
    fprintf(f, "%s\n", PASS);
    fclose(f);
    if (chmod(pass, 0600) != 0) {
        return -1;
    }
    snprintf(p, sizeof(p), "%s/state", tmp);
    if ((kv_env = cfr_kv_env_new(8u << 20, &err)) == NULL ||
        agent_state_open(kv_env, p, &state, &err) != 0) {
        return -1;
    }
    if (vs_env_init(&env) != 0 || vs_vault_init(&vault, &env, "v") != 0 ||
        vs_vault_start(&vault, 30000) != 0) {
        return -1;
    }
    if ((agent_cli = vs_client(&vault, "agent")) == NULL) {
        return -1;
    }
    ca_pem = slurp_env("ca.pem");
    agent_pem = slurp_env("agent.pem");
    agent_key = slurp_env("agent.key");
    snprintf(conf_ok, sizeof(conf_ok), "%s/ok.conf", tmp);
    snprintf(conf_wrong_key, sizeof(conf_wrong_key), "%s/wrong.conf", tmp);
    snprintf(conf_dead_first, sizeof(conf_dead_first), "%s/dead.conf", tmp);
    write_config(conf_ok, key_ok, pass, false);
    write_config(conf_wrong_key, key_other, pass, false);
    write_config(conf_dead_first, key_ok, pass, true);
    return 0;
}

static int
teardown(void **state_)
{
    (void)state_;
    cfr_rpc_client_free(agent_cli);
    if (vault.pid > 0) {
        (void)vs_vault_stop(&vault, SIGKILL, 10000);
    }
    vs_env_fini(&env);
    agent_state_close(state);
    cfr_kv_env_free(kv_env);
    if (tmp[0] != '\0') {
        ars_rm_tree(tmp);
    }
    cfr_free(ca_pem);
    cfr_free(agent_pem);
    cfr_free(agent_key);
    cfr_keyring_free(agent);
    cfr_keyring_free(full);
    cfr_rpc_global_fini();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_maildir_byte_exact),
        cmocka_unit_test(test_restore_refuses_hostile_names),
        cmocka_unit_test(test_restore_fails_loudly_on_bad_data_or_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
