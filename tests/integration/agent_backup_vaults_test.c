/*
 * agent_backup_vaults_test.c - agent/backup against two real vaults over
 * mutual TLS, through agent/uplink, restored as the restore side would.
 * (Named *_vaults_test so its target does not clash with the unit test
 * tests/unit/agent_backup_test.c.)
 *
 * What it proves:
 *  1. A generated Maildir++ mailbox (bench/gen_corpus: folders, flags,
 *     attachments, list copies; plus an mbox) reaches both vaults; with
 *     the acme-restore identity and the FULL keyring the test fetches the
 *     header, walks the manifest, fetches every chunk and reassembles
 *     every file byte for byte, from each vault.
 *  2. A second run with no change reads 0 bytes and sends no object (the
 *     commit carries the header); a flag storm (10% of cur/ messages
 *     renamed with a new flag) reads 0 bytes and sends no chunk.
 *  3. One list message delivered to 200 mailboxes (same bytes, 200 files,
 *     backed up in one agent run: one lease, 200 commits) grows each vault
 *     by about one copy (Health's stored bytes, as the auditor sees them).
 *  4. A run stopped after its uploads, before the commit, leaves no
 *     snapshot on either vault, and the next run sends no object at all.
 *
 * Runs in about 10 s (two vault starts dominate).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>       /* cmocka */
#include <stdarg.h>       /* cmocka */
#include <stddef.h>       /* cmocka */
#include <stdint.h>       /* cmocka */

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backup.h"               /* the module under test */
#include "env.h"                  /* sessions, openers */
#include "keys.h"                 /* the tenant keyring */
#include "kv.h"                   /* the state's RocksDB env */
#include "log.h"                  /* quiet logs */
#include "mem.h"                  /* cfr_malloc */
#include "rpc.h"                  /* cfr_rpc_global_init */
#include "snap.h"                 /* header, manifest reader */
#include "state.h"                /* the file cache */
#include "uplink.h"               /* the vaults */
#include "vault_client_support.h" /* GetObjects, ListSnapshots, Health */
#include "vault_support.h"        /* the harness */

#define N_VAULTS  2
#define OLD_SECS  1767225600 /* 2026-01-01: far from "racily clean" */
#define LIST_MSGS 200
/* snprintf into an array, failing the test on truncation. */
#define FMT(buf, ...)                                                          \
    assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

static struct vs_env env;
static struct vs_vault vaults[N_VAULTS];
static struct cfr_keyring *full, *agent;
static char *ca_pem, *agent_pem, *agent_key;
static struct cfr_rpc_client *rest[N_VAULTS], *aud[N_VAULTS];
static struct cfr_kv_env *kv_env;
static struct agent_state *state;
static char tmp[256];
static char corpus[512];

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

static int
run_prog(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
        return -1;
    }
    return WEXITSTATUS(st);
}

static void
write_old(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    struct timespec ts[2] = {{OLD_SECS, 0}, {OLD_SECS, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* A run's uplink to both vaults, for sess. */
static struct agent_uplink *
open_up(struct cfr_session *sess)
{
    struct agent_uplink_vault_opts vo[N_VAULTS];
    char target[N_VAULTS][64];
    struct agent_uplink_opts uo;
    struct agent_uplink *up = NULL;
    struct cfr_err err;

    memset(vo, 0, sizeof(vo));
    memset(&uo, 0, sizeof(uo));
    for (size_t i = 0; i < N_VAULTS; i++) {
        FMT(target[i], "127.0.0.1:%d", vaults[i].port);
        vo[i].name = vaults[i].name;
        vo[i].target = target[i];
        vo[i].target_name = "localhost";
        vo[i].ca_pem = ca_pem;
        vo[i].cert_pem = agent_pem;
        vo[i].key_pem = agent_key;
    }
    uo.vaults = vo;
    uo.n_vaults = N_VAULTS;
    memcpy(uo.session_public, cfr_session_public(sess),
           AGENT_UPLINK_SESSION_LEN);
    uo.call_timeout_ms = 20000;
    uo.stream_timeout_ms = 60000;
    assert_int_equal(agent_uplink_open(&uo, &up, &err), 0);
    return up;
}

static int
backup_on(struct agent_uplink *up, struct cfr_session *sess,
          const char *mailbox, const char *root,
          const struct agent_backup_opts *o, struct agent_backup_stats *s)
{
    struct agent_backup_sink sink;
    struct cfr_err err;
    agent_backup_sink_uplink(up, &sink);
    memset(&err, 0, sizeof(err));
    int rc = agent_backup_mailbox(mailbox, root, agent, sess, state, &sink, o,
                                  s, &err);
    if (rc != 0 && rc != CFR_EINTERNAL) {
        fprintf(stderr, "backup %s: %s\n", mailbox, err.msg);
    }
    return rc;
}

/* One run of mailbox at root through a fresh uplink to both vaults. */
static int
backup(const char *mailbox, const char *root, const struct agent_backup_opts *o,
       struct agent_backup_stats *s, uint64_t sent_r[N_VAULTS])
{
    struct cfr_err err;
    struct cfr_session *sess = cfr_session_new(agent, 0, &err);
    assert_non_null(sess);
    struct agent_uplink *up = open_up(sess);
    int rc = backup_on(up, sess, mailbox, root, o, s);
    for (size_t i = 0; i < N_VAULTS; i++) {
        struct agent_uplink_report r;
        agent_uplink_report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        sent_r[i] = r.objects_sent;
        assert_int_equal(r.objects_unacked, 0);
        assert_int_equal(r.committed, rc == 0);
    }
    agent_uplink_free(up);
    cfr_session_free(sess);
    return rc;
}

/* ---- restore ------------------------------------------------------------ */

struct rctx {
    struct cfr_rpc_client *cli;
    struct cfr_opener *op;
    const char *root;
    size_t files;
};

/* GetObjects of ids[0..n) into got (each must be present). */
static void
fetch(struct cfr_rpc_client *cli, const uint8_t *ids, size_t n,
      struct vc_objset *got)
{
    struct vc_objset want = {0};
    size_t missing = 0, msgs = 0;
    for (size_t i = 0; i < n; i++) {
        vc_objset_add(&want, ids + 32 * i, 0, NULL, 0);
    }
    assert_int_equal(vc_get_objects(cli, &want, NULL, got, &missing, &msgs),
                     CFR_RPC_OK);
    assert_int_equal(missing, 0);
    vc_objset_fini(&want);
}

static int
page_get(void *ctx, const uint8_t id[32], struct cfr_buf *page,
         struct cfr_err *err)
{
    struct rctx *r = ctx;
    struct vc_objset got = {0};
    fetch(r->cli, id, 1, &got);
    assert_int_equal(got.n, 1);
    int rc = cfr_env_open(r->op, CFR_ENV_MANIFEST_PAGE, id, got.v[0].data,
                          got.v[0].len, CFR_TREE_PAGE_MAX, page, err);
    vc_objset_fini(&got);
    return rc;
}

static void
entry_path(const char *root, const struct cfr_snap_entry *e, char *out)
{
    const uint8_t *z = memchr(e->key, 0, e->key_len);
    assert_non_null(z);
    size_t fl = (size_t)(z - e->key);
    int nl = (int)(e->key_len - fl - 1);
    char folder[256] = "";
    int k;
    if (fl > 0) {
        FMT(folder, "/%.*s", (int)fl, (const char *)e->key);
    }
    if (e->kind == CFR_SNAP_MAILDIR_MESSAGE) {
        k = snprintf(out, PATH_MAX, "%s%s/%s/%.*s%.*s", root, folder,
                     e->in_new ? "new" : "cur", nl, (const char *)z + 1,
                     (int)e->info_len, (const char *)e->info);
    } else {
        k = snprintf(out, PATH_MAX, "%s%s%.*s", root, folder, nl,
                     (const char *)z + 1);
    }
    assert_true(k > 0 && k < PATH_MAX);
}

/*
 * As a restore would: the header of snapshot header_id from the vault's
 * list, opened with the full keyring; the manifest walked; every file
 * reassembled and compared with the source. Returns the file count.
 */
static size_t
restore_compare(size_t v, const char *mailbox, const char *root,
                const uint8_t header_id[32])
{
    struct cfr_err err;
    int st;
    struct rctx r = {.cli = rest[v], .root = root};
    struct cfr_buf plain, file, chunk;
    struct cfr_snap_header h;
    struct cfr_snap_manifest_reader *mr = NULL;
    struct cfr_snap_entry e;
    const Coffer__V1__SnapshotRecord *rec = NULL;
    int rc;

    r.op = cfr_opener_new(full, &err);
    assert_non_null(r.op);
    Coffer__V1__ListSnapshotsResponse *ls =
        vc_list_snapshots(rest[v], true, &st);
    assert_non_null(ls);
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        if (ls->snapshots[i]->header_id.len == 32 &&
            memcmp(ls->snapshots[i]->header_id.data, header_id, 32) == 0) {
            rec = ls->snapshots[i];
        }
    }
    assert_non_null(rec);
    cfr_buf_init(&plain, CFR_SNAP_HEADER_MAX);
    assert_int_equal(cfr_env_open(r.op, CFR_ENV_SNAPSHOT_HEADER, header_id,
                                  rec->header.data, rec->header.len,
                                  CFR_SNAP_HEADER_MAX, &plain, &err),
                     0);
    assert_int_equal(cfr_snap_header_decode(plain.data, plain.len, &h, &err),
                     0);
    assert_string_equal(h.mailbox, mailbox);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    assert_int_equal(
        cfr_snap_manifest_reader_new(page_get, &r, &h.manifest, &mr, &err), 0);
    cfr_buf_init(&file, (size_t)1 << 30);
    cfr_buf_init(&chunk, CFR_ENV_PLAIN_MAX);
    while ((rc = cfr_snap_manifest_reader_next(mr, &e, &err)) == 1) {
        struct vc_objset got = {0};
        cfr_buf_reset(&file);
        if (e.n_chunks > 0) {
            fetch(rest[v], e.chunk_ids, e.n_chunks, &got);
        }
        for (size_t i = 0; i < e.n_chunks; i++) {
            const struct vc_obj *o = vc_objset_find(&got, e.chunk_ids + 32 * i);
            assert_non_null(o);
            assert_int_equal(cfr_env_open(r.op, CFR_ENV_CHUNK,
                                          e.chunk_ids + 32 * i, o->data, o->len,
                                          CFR_ENV_PLAIN_MAX, &chunk, &err),
                             0);
            assert_int_equal(cfr_buf_append(&file, chunk.data, chunk.len, NULL),
                             0);
        }
        vc_objset_fini(&got);
        char p[PATH_MAX];
        entry_path(root, &e, p);
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        uint8_t *d = malloc(file.len + 1);
        assert_non_null(d);
        size_t n = fread(d, 1, file.len + 1, f);
        fclose(f);
        assert_int_equal(n, file.len);
        assert_int_equal(e.size, file.len);
        if (n > 0) {
            assert_memory_equal(d, file.data, n);
        }
        free(d);
        r.files++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(r.files, h.manifest.entries);
    cfr_snap_manifest_reader_free(mr);
    cfr_buf_fini(&plain);
    cfr_buf_fini(&file);
    cfr_buf_fini(&chunk);
    cfr_opener_free(r.op);
    return r.files;
}

/* Snapshots of mailbox on vault v. */
static size_t
snapshots_of(size_t v, const char *mailbox)
{
    uint8_t mid[32];
    int st;
    size_t n = 0;
    cfr_keyring_name_id(full, mailbox, strlen(mailbox), mid);
    Coffer__V1__ListSnapshotsResponse *ls =
        vc_list_snapshots(rest[v], false, &st);
    assert_non_null(ls);
    for (size_t i = 0; i < ls->n_snapshots; i++) {
        n += ls->snapshots[i]->mailbox_id.len == 32 &&
             memcmp(ls->snapshots[i]->mailbox_id.data, mid, 32) == 0;
    }
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    return n;
}

static uint64_t
stored_bytes(size_t v)
{
    Coffer__V1__HealthResponse *h = NULL;
    assert_int_equal(vc_health(aud[v], &h), CFR_RPC_OK);
    assert_non_null(h);
    uint64_t b = h->bytes;
    protobuf_c_message_free_unpacked(&h->base, NULL);
    return b;
}

/* ---- the flag storm ----------------------------------------------------- */

static unsigned storm_renamed;
static char (*storm_paths)[PATH_MAX];
static size_t storm_n;

/* Collects cur/ messages first: renaming during the walk could revisit. */
static int
storm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    if (flag == FTW_F && strstr(p, "/cur/") != NULL && storm_n < 4096) {
        FMT(storm_paths[storm_n], "%s", p);
        storm_n++;
    }
    return 0;
}

/* Adds flag F to every 10th message of cur/ that lacks it. */
static void
flag_storm(const char *root)
{
    storm_paths = calloc(4096, PATH_MAX);
    assert_non_null(storm_paths);
    storm_n = 0;
    storm_renamed = 0;
    assert_int_equal(nftw(root, storm_cb, 16, FTW_PHYS), 0);
    for (size_t i = 0; i < storm_n; i += 10) {
        char np[PATH_MAX + 8];
        const char *c = strstr(storm_paths[i], ":2,");
        if (c != NULL && strchr(c, 'F') != NULL) {
            continue;
        }
        FMT(np, "%s%s", storm_paths[i], c != NULL ? "F" : ":2,F");
        assert_int_equal(rename(storm_paths[i], np), 0);
        storm_renamed++;
    }
    free(storm_paths);
}

/* ---- tests -------------------------------------------------------------- */

static void
test_backup_corpus_restores_and_reruns_cheaply(void **state_)
{
    (void)state_;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 4};
    uint64_t sent[N_VAULTS];
    const char *mb = "alice@example.org";
    char root[PATH_MAX];
    FMT(root, "%s", corpus);

    assert_int_equal(backup(mb, root, &o, &s, sent), 0);
    assert_true(s.committed);
    assert_true(s.scanned >= 100);
    assert_int_equal(s.files_read, s.scanned);
    assert_int_equal(s.file_errors, 0);
    assert_true(s.verdicts[AGENT_STATE_NEW] == s.scanned);
    assert_true(s.chunks_sealed > 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        /* Every chunk and page went to each vault, the same bytes. */
        assert_int_equal(sent[i], s.chunks_sealed + s.pages_put);
        assert_int_equal(restore_compare(i, mb, root, s.header_id), s.entries);
        assert_int_equal(snapshots_of(i, mb), 1);
    }
    uint64_t entries = s.entries;

    /* No change: nothing read, no object sent (the commit carries the
     * header); unchanged pages keep their IDs. */
    assert_int_equal(backup(mb, root, &o, &s, sent), 0);
    assert_int_equal(s.bytes_read, 0);
    assert_int_equal(s.verdicts[AGENT_STATE_UNCHANGED], s.scanned);
    assert_int_equal(s.chunks_sealed, 0);
    assert_int_equal(s.pages_put, 0);
    assert_int_equal(s.entries, entries);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(sent[i], 0);
        assert_int_equal(snapshots_of(i, mb), 2);
    }

    /* A flag storm over 10% of cur/: metadata only. */
    flag_storm(root);
    assert_true(storm_renamed * 20 >= s.scanned); /* about 10% */
    assert_int_equal(backup(mb, root, &o, &s, sent), 0);
    assert_int_equal(s.verdicts[AGENT_STATE_RENAMED], storm_renamed);
    assert_int_equal(s.bytes_read, 0);
    assert_int_equal(s.chunks_sealed, 0);
    assert_true(s.pages_put > 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(sent[i], s.pages_put); /* pages only */
        assert_int_equal(restore_compare(i, mb, root, s.header_id), entries);
    }
}

static void
test_backup_list_copies_store_one_copy(void **state_)
{
    (void)state_;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 1};
    uint64_t before[N_VAULTS];
    char root[PATH_MAX], p[PATH_MAX + 64], mb[64];
    struct cfr_err err;

    /* One list post, ~300 KiB with an attachment of random base64. */
    size_t cap = 320u << 10, n = 0;
    char *m = malloc(cap);
    assert_non_null(m);
    n += (size_t)snprintf(m, cap,
                          "From: list@example.org\nMessage-ID: <post@l>\n"
                          "Content-Type: multipart/mixed; boundary=B\n\n"
                          "--B\n\nHello list.\n--B\n"
                          "Content-Transfer-Encoding: base64\n\n");
    uint64_t seed = 5;
    static const char al[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while (n + 100 < cap) {
        for (int i = 0; i < 76; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            m[n++] = al[(seed >> 33) & 63];
        }
        m[n++] = '\n';
    }
    n += (size_t)snprintf(m + n, cap - n, "--B--\n");
    /* Delivered to 200 mailboxes: the same bytes under 200 names. */
    FMT(root, "%s/lists", tmp);
    assert_int_equal(mkdir(root, 0700), 0);
    for (int i = 0; i < LIST_MSGS; i++) {
        FMT(p, "%s/u%03d", root, i);
        assert_int_equal(mkdir(p, 0700), 0);
        FMT(p, "%s/u%03d/cur", root, i);
        assert_int_equal(mkdir(p, 0700), 0);
        FMT(p, "%s/u%03d/cur/1700000%03d.M%d.mx:2,", root, i, i, i);
        write_old(p, m, n);
    }
    free(m);
    for (size_t i = 0; i < N_VAULTS; i++) {
        before[i] = stored_bytes(i);
    }
    /* One agent run over every mailbox: one lease, a commit each. */
    struct cfr_session *sess = cfr_session_new(agent, 0, &err);
    assert_non_null(sess);
    struct agent_uplink *up = open_up(sess);
    uint64_t first_sealed = 0;
    for (int i = 0; i < LIST_MSGS; i++) {
        FMT(mb, "u%03d@example.org", i);
        FMT(p, "%s/u%03d", root, i);
        assert_int_equal(backup_on(up, sess, mb, p, &o, &s), 0);
        assert_int_equal(s.bytes_read, n);
        if (i == 0) {
            first_sealed = s.chunks_sealed;
            assert_true(first_sealed >= 2 && first_sealed <= 20);
        } else {
            /* Every other copy is found on the vaults: nothing sealed. */
            assert_int_equal(s.chunks_sealed, 0);
            assert_int_equal(s.chunks_present, first_sealed);
        }
    }
    for (size_t i = 0; i < N_VAULTS; i++) {
        struct agent_uplink_report r;
        agent_uplink_report(up, i, &r);
        assert_int_equal(r.state, AGENT_UPLINK_OK);
        assert_int_equal(r.commits, LIST_MSGS);
    }
    agent_uplink_free(up);
    cfr_session_free(sess);
    for (size_t i = 0; i < N_VAULTS; i++) {
        uint64_t grown = stored_bytes(i) - before[i];
        /* About one copy (base64 compresses to ~3/4) plus a manifest
         * page and a reference page per mailbox: far below two copies,
         * let alone 200. */
        assert_true(grown >= n / 2);
        assert_true(grown < 2 * (uint64_t)n);
        assert_int_equal(snapshots_of(i, "u199@example.org"), 1);
    }
}

static void
test_backup_stopped_before_commit_resends_nothing(void **state_)
{
    (void)state_;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 2, .stop_before_commit = true};
    uint64_t sent[N_VAULTS];
    char root[PATH_MAX];
    const char *mb = "bob@example.org";

    FMT(root, "%s/bob", tmp);
    /* Another user's mailbox from the corpus. */
    char src[PATH_MAX];
    FMT(src, "%s.second", corpus);
    assert_int_equal(rename(src, root), 0);

    assert_int_equal(backup(mb, root, &o, &s, sent), CFR_EINTERNAL);
    assert_false(s.committed);
    assert_true(s.chunks_sealed > 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(sent[i], s.chunks_sealed + s.pages_put);
        assert_int_equal(snapshots_of(i, mb), 0);
    }

    o.stop_before_commit = false;
    assert_int_equal(backup(mb, root, &o, &s, sent), 0);
    assert_int_equal(s.chunks_sealed, 0);
    assert_int_equal(s.pages_put, 0);
    for (size_t i = 0; i < N_VAULTS; i++) {
        assert_int_equal(sent[i], 0);
        assert_int_equal(snapshots_of(i, mb), 1);
        assert_int_equal(restore_compare(i, mb, root, s.header_id), s.entries);
    }
}

/* ---- setup -------------------------------------------------------------- */

/*
 * corpus = the first user's Maildir with an mbox moved in; the second
 * user's Maildir is parked beside it as "<corpus>.second".
 */
static int
make_corpus(void)
{
    char self[PATH_MAX], gen[PATH_MAX + 32], out[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        return -1;
    }
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    FMT(gen, "%s/../bench/gen_corpus", self);
    if (access(gen, X_OK) != 0) {
        fprintf(stderr, "agent_backup_test: generator not built: %s\n", gen);
        return -1;
    }
    FMT(out, "%s/corpus", tmp);
    char *argv[] = {gen,           (char *)"--seed",
                    (char *)"11",  (char *)"--domains",
                    (char *)"1",   (char *)"--users",
                    (char *)"2",   (char *)"--messages-per-user",
                    (char *)"150", (char *)"--lists",
                    (char *)"2",   (char *)"--list-members",
                    (char *)"2",   (char *)"--quiet",
                    out,           NULL};
    if (run_prog(argv) != 0) {
        return -1;
    }
    /* out/<domain>/<user>/{Maildir,mail/old-archive.mbox} */
    char dom[600], users[2][900];
    size_t nu = 0;
    DIR *d = opendir(out);
    struct dirent *de;
    dom[0] = '\0';
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            FMT(dom, "%s/%s", out, de->d_name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    d = opendir(dom);
    while (d != NULL && (de = readdir(d)) != NULL && nu < 2) {
        if (de->d_name[0] != '.') {
            snprintf(users[nu++], sizeof(users[0]), "%s/%s", dom, de->d_name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    if (nu < 2) {
        return -1;
    }
    char a[1024], b[1024];
    FMT(corpus, "%s/alice", tmp);
    FMT(a, "%s/Maildir", users[0]);
    if (rename(a, corpus) != 0) {
        return -1;
    }
    FMT(a, "%s/Maildir", users[1]);
    FMT(b, "%s.second", corpus);
    if (rename(a, b) != 0) {
        return -1;
    }
    /* An mbox inside the mailbox: the generator's archive if this user
     * has one, else one made of the first user's INBOX messages. */
    FMT(a, "%s/mail/old-archive.mbox", users[0]);
    FMT(b, "%s/old-archive.mbox", corpus);
    if (access(a, R_OK) == 0 && rename(a, b) != 0) {
        return -1;
    }
    FMT(b, "%s/archive.mbox", corpus);
    FILE *mf = fopen(b, "wb");
    if (mf == NULL) {
        return -1;
    }
    FMT(a, "%s/cur", corpus);
    d = opendir(a);
    int k = 0;
    while (d != NULL && (de = readdir(d)) != NULL && k < 30) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char mp[2048];
        FMT(mp, "%s/%s", a, de->d_name);
        FILE *f = fopen(mp, "rb");
        if (f == NULL) {
            continue;
        }
        fprintf(mf, "From someone@example.org Mon Jan  5 10:00:00 2026\n");
        char buf[8192];
        size_t r;
        while ((r = fread(buf, 1, sizeof(buf), f)) > 0) {
            fwrite(buf, 1, r, mf);
        }
        fputc('\n', mf);
        fclose(f);
        k++;
    }
    if (d != NULL) {
        closedir(d);
    }
    fclose(mf);
    struct timespec ts[2] = {{OLD_SECS, 0}, {OLD_SECS, 0}};
    return utimensat(AT_FDCWD, b, ts, 0);
}

static int
setup(void **state_)
{
    (void)state_;
    static const char *const names[N_VAULTS] = {"va", "vb"};
    struct cfr_err err;

    cfr_log_set_level(CFR_LOG_ERROR);
    if (cfr_rpc_global_init(&err) != 0) {
        return -1;
    }
    full = cfr_keyring_generate(1700000000000, &err);
    if (full == NULL || (agent = cfr_keyring_agent_view(full, &err)) == NULL) {
        return -1;
    }
    const char *t = getenv("TMPDIR");
    FMT(tmp, "%s/agent_backup_it.XXXXXX", t != NULL && *t != '\0' ? t : "/tmp");
    if (mkdtemp(tmp) == NULL || make_corpus() != 0) {
        fprintf(stderr, "agent_backup_test: corpus failed\n");
        return -1;
    }
    char db[512];
    FMT(db, "%s/state", tmp);
    if ((kv_env = cfr_kv_env_new(8u << 20, &err)) == NULL ||
        agent_state_open(kv_env, db, &state, &err) != 0) {
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
        if ((rest[i] = vs_client(&vaults[i], "acme-restore")) == NULL ||
            (aud[i] = vs_client(&vaults[i], "acme-auditor")) == NULL) {
            return -1;
        }
    }
    ca_pem = slurp("ca.pem");
    agent_pem = slurp("agent.pem");
    agent_key = slurp("agent.key");
    return 0;
}

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static int
teardown(void **state_)
{
    (void)state_;
    for (size_t i = 0; i < N_VAULTS; i++) {
        cfr_rpc_client_free(rest[i]);
        cfr_rpc_client_free(aud[i]);
        if (vaults[i].pid > 0) {
            (void)vs_vault_stop(&vaults[i], SIGKILL, 10000);
        }
    }
    vs_env_fini(&env);
    agent_state_close(state);
    cfr_kv_env_free(kv_env);
    if (tmp[0] != '\0') {
        (void)nftw(tmp, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
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
        cmocka_unit_test(test_backup_corpus_restores_and_reruns_cheaply),
        cmocka_unit_test(test_backup_list_copies_store_one_copy),
        cmocka_unit_test(test_backup_stopped_before_commit_resends_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
