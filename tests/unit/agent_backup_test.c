/*
 * agent_backup_test.c - one mailbox's backup run against an in-memory vault
 * (a sink that stores objects by ID, answers existence queries and, on
 * commit, checks that every ID of the reference list is stored), restored
 * as the restore side would: the header and manifest opened with the full
 * keyring, every file reassembled from its chunks and compared byte for
 * byte with the source.
 *
 * Covered: a Maildir++ store with folders, flags, a MIME attachment, list
 * copies with other headers (shared body chunks), identical files (sealed
 * once), Dovecot files, an mbox of a few messages and one of 20 MiB (read
 * in blocks); a quiet second run (no byte read, no chunk sealed, no page
 * put); a flag storm and new/ -> cur/ moves (no byte read); per-file
 * errors (the old version carried over, a new unreadable file left out,
 * a file too large for the chunk list); a message renamed between the scan
 * and its read (kept under its new name and flags, new or cached; one
 * moved out of new/ and cur/ counts as vanished); a run stopped before its
 * commit (nothing committed, the next one seals nothing); a cached chunk the
 * vault lost (the run fails, the next one reads that file again); the
 * reference list sorted through many on-disk runs; deletions and the
 * mass-deletion mark (header, commit flag, hold of the previous); bad
 * options; CPU and I/O priority of the worker threads; Message-ID
 * extraction.
 *
 * Runs in about 2 s (most of it sealing the 20 MiB mbox).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backup.h"
#include "buf.h"
#include "chunk.h"
#include "env.h"
#include "err.h"
#include "keys.h"
#include "kv.h"
#include "log.h"
#include "mem.h"
#include "prng.h"
#include "secret.h"
#include "snap.h"
#include "state.h"

#define OLD_SECS 1767225600 /* 2026-01-01: far from "racily clean" */

/* ---- the in-memory vault ------------------------------------------------ */

struct obj {
    uint8_t id[32];
    int kind;
    uint8_t *data;
    size_t len;
};

struct fake {
    struct obj *v;
    size_t n, cap;
    uint64_t puts, put_chunks, flushes, commits, missing_calls;
    uint8_t header_id[32];
    uint8_t *header;
    size_t header_len;
    uint8_t mailbox_id[32];
    uint32_t flags; /* of the last commit */
    bool hold_previous;
};

static struct obj *
fake_find(struct fake *f, const uint8_t *id)
{
    for (size_t i = 0; i < f->n; i++) {
        if (memcmp(f->v[i].id, id, 32) == 0) {
            return &f->v[i];
        }
    }
    return NULL;
}

static int
fake_missing(void *ctx, const uint8_t *ids, size_t n, uint8_t *lack,
             struct cfr_err *err)
{
    struct fake *f = ctx;
    (void)err;
    assert_true(n >= 1 && n <= AGENT_UPLINK_IDS_MAX);
    f->missing_calls++;
    for (size_t i = 0; i < n; i++) {
        lack[i] = fake_find(f, ids + 32 * i) == NULL ? 1 : 0;
    }
    return 0;
}

static int
fake_put(void *ctx, const uint8_t *id, int kind, const uint8_t *data,
         size_t len, uint8_t mask, struct cfr_err *err)
{
    struct fake *f = ctx;
    (void)err;
    assert_int_equal(mask, 1);
    /* The run never sends what the vault said it has. */
    assert_null(fake_find(f, id));
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 1024;
        f->v = realloc(f->v, f->cap * sizeof(*f->v));
        assert_non_null(f->v);
    }
    struct obj *o = &f->v[f->n++];
    memcpy(o->id, id, 32);
    o->kind = kind;
    o->data = malloc(len > 0 ? len : 1);
    assert_non_null(o->data);
    memcpy(o->data, data, len);
    o->len = len;
    f->puts++;
    if (kind == AGENT_UPLINK_SEALED && len > 0) {
        struct cfr_env_header h;
        assert_int_equal(cfr_env_peek(data, len, &h, NULL), 0);
        f->put_chunks += h.type == CFR_ENV_CHUNK;
    }
    return 0;
}

static int
fake_flush(void *ctx, struct cfr_err *err)
{
    struct fake *f = ctx;
    (void)err;
    f->flushes++;
    return 0;
}

static int
ref_get(void *ctx, const uint8_t id[32], struct cfr_buf *page,
        struct cfr_err *err)
{
    struct obj *o = fake_find(ctx, id);
    if (o == NULL) {
        return CFR_ERR(err, CFR_ENOTFOUND, "no page");
    }
    assert_int_equal(o->kind, AGENT_UPLINK_REF_PAGE);
    return cfr_buf_append(page, o->data, o->len, err);
}

/* As a vault does: every referenced object must be stored. */
static int
fake_commit(void *ctx, const struct agent_uplink_commit *c, struct cfr_err *err)
{
    struct fake *f = ctx;
    struct cfr_snap_refs_reader *r = NULL;
    struct cfr_tree_root root;
    uint8_t id[32];
    uint64_t n = 0;
    int rc;

    memset(&root, 0, sizeof(root));
    memcpy(root.id, c->refs_id, 32);
    root.height = c->refs_height;
    root.entries = c->refs_entries;
    assert_int_equal(cfr_snap_refs_reader_new(ref_get, f, &root, &r, err), 0);
    while ((rc = cfr_snap_refs_reader_next(r, id, err)) == 1) {
        assert_non_null(fake_find(f, id));
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, c->refs_entries);
    cfr_snap_refs_reader_free(r);
    free(f->header);
    f->header = malloc(c->header_len);
    assert_non_null(f->header);
    memcpy(f->header, c->header, c->header_len);
    f->header_len = c->header_len;
    memcpy(f->header_id, c->header_id, 32);
    memcpy(f->mailbox_id, c->mailbox_id, 32);
    f->flags = c->flags;
    f->hold_previous = c->hold_previous;
    f->commits++;
    return 0;
}

static void
fake_fini(struct fake *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].data);
    }
    free(f->v);
    free(f->header);
    memset(f, 0, sizeof(*f));
}

/* ---- fixture ------------------------------------------------------------ */

struct fixture {
    char tmp[256];
    char root[PATH_MAX];
    char db[PATH_MAX];
    struct cfr_kv_env *env;
    struct agent_state *st;
    struct cfr_keyring *full, *agent;
    struct cfr_session *sess;
    struct cfr_opener *op;
    struct fake vault;
    struct agent_backup_sink sink;
};

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return (flag == FTW_DP || flag == FTW_D) ? rmdir(p) : unlink(p);
}

static void
path_of(const struct fixture *fx, const char *rel, char *out)
{
    assert_true(snprintf(out, PATH_MAX, "%s/%s", fx->root, rel) < PATH_MAX);
}

static void
mkdirs(const struct fixture *fx, const char *rel)
{
    char p[PATH_MAX];
    path_of(fx, rel, p);
    for (char *s = p + strlen(fx->root) + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            (void)mkdir(p, 0700);
            *s = '/';
        }
    }
    (void)mkdir(p, 0700);
}

static void
put_file(const struct fixture *fx, const char *rel, const void *data,
         size_t len)
{
    char p[PATH_MAX];
    path_of(fx, rel, p);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    struct timespec ts[2] = {{OLD_SECS, 0}, {OLD_SECS, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void
put_str(const struct fixture *fx, const char *rel, const char *s)
{
    put_file(fx, rel, s, strlen(s));
}

/* Base64-looking text of n bytes from seed, 76-column lines. */
static char *
b64_text(uint64_t seed, size_t n)
{
    static const char al[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        s[i] = (i % 77 == 76) ? '\n' : al[cfr_splitmix64(&seed) & 63];
    }
    s[n] = '\0';
    return s;
}

static char *
message(const char *headers, const char *body)
{
    size_t n = strlen(headers) + strlen(body) + 2;
    char *m = malloc(n);
    assert_non_null(m);
    snprintf(m, n, "%s\n%s", headers, body);
    return m;
}

static size_t total_bytes; /* of the store written by make_store */

static void
add_total(const struct fixture *fx, const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    path_of(fx, rel, p);
    assert_int_equal(stat(p, &st), 0);
    total_bytes += (size_t)st.st_size;
}

static void
store_file(const struct fixture *fx, const char *rel, const char *s)
{
    put_str(fx, rel, s);
    add_total(fx, rel);
}

/* A small Maildir++ store (see the top of the file). */
static void
make_store(struct fixture *fx)
{
    total_bytes = 0;
    mkdirs(fx, "cur");
    mkdirs(fx, "new");
    mkdirs(fx, "tmp");
    mkdirs(fx, ".Sent/cur");
    mkdirs(fx, ".Sent/new");
    mkdirs(fx, ".Lists.dev/cur");
    mkdirs(fx, ".Lists.dev/new");
    char *att = b64_text(1, 60000);
    char *list_body = b64_text(2, 40000);
    char *m1 = message("From: a@example.org\nTo: b@example.org\n"
                       "Message-ID: <m1@example.org>\nSubject: hi\n",
                       "Hello there.\n");
    size_t n = strlen(att) + 1024;
    char *mp_body = malloc(n);
    assert_non_null(mp_body);
    snprintf(mp_body, n,
             "--XYZ\nContent-Type: text/plain\n\nSee attached.\n"
             "--XYZ\nContent-Type: application/pdf\n"
             "Content-Transfer-Encoding: base64\n\n%s\n--XYZ--\n",
             att);
    char *m2 = message("From: c@example.org\nMessage-ID:\n <m2@example.org>\n"
                       "MIME-Version: 1.0\n"
                       "Content-Type: multipart/mixed; boundary=XYZ\n",
                       mp_body);
    char *l1 = message("Delivered-To: b@example.org\nReceived: by mx1\n"
                       "From: list@example.org\nMessage-ID: <l@example.org>\n",
                       list_body);
    char *l2 = message("Delivered-To: c@example.org\nReceived: by mx2\n"
                       "Received: by relay\n"
                       "From: list@example.org\nMessage-ID: <l@example.org>\n",
                       list_body);
    store_file(fx, "cur/1000.M1.host:2,S", m1);
    store_file(fx, "cur/1001.M2.host:2,", m2);
    store_file(fx, "new/1002.M3.host", l1);
    store_file(fx, ".Lists.dev/cur/1003.M4.host:2,S", l2);
    store_file(fx, ".Sent/cur/1004.M5.host:2,S", m1); /* same bytes */
    store_file(fx, "dovecot-uidlist", "3 V1 N1005\n1 1000.M1.host\n");
    store_file(fx, ".Sent/maildirfolder", "");
    size_t mn = strlen(m1) + strlen(l1) + strlen(m2) + 256;
    char *mbox = malloc(mn);
    assert_non_null(mbox);
    snprintf(mbox, mn,
             "From a@example.org Mon Jan  5 10:00:00 2026\n%s\n"
             "From list@example.org Mon Jan  5 11:00:00 2026\n%s\n"
             "From c@example.org Mon Jan  5 12:00:00 2026\n%s",
             m1, l1, m2);
    store_file(fx, "archive.mbox", mbox);
    free(att);
    free(list_body);
    free(m1);
    free(mp_body);
    free(m2);
    free(l1);
    free(l2);
    free(mbox);
}

/* An mbox over AGENT_BACKUP_BLOCK: read and chunked in blocks. */
static void
make_big_mbox(struct fixture *fx, const char *rel)
{
    size_t cap = AGENT_BACKUP_BLOCK + (4u << 20);
    mkdirs(fx, "mail");
    char *m = malloc(cap);
    assert_non_null(m);
    size_t n = 0;
    uint64_t seed = 77;
    for (int i = 0; n + 40000 < cap; i++) {
        size_t blen = 2000 + (cfr_splitmix64(&seed) % 30000);
        char *body = b64_text(1000 + (uint64_t)i, blen);
        n += (size_t)snprintf(m + n, cap - n,
                              "From x@example.org Mon Jan  5 10:00:%02d 2026\n"
                              "From: x@example.org\nMessage-ID: <%d@x>\n\n"
                              "%s\n\n",
                              i % 60, i, body);
        free(body);
    }
    put_file(fx, rel, m, n);
    add_total(fx, rel);
    free(m);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct cfr_err err;
    assert_non_null(fx);
    assert_int_equal(cfr_crypto_init(&err), 0);
    cfr_log_set_level(CFR_LOG_ERROR);
    const char *t = getenv("TMPDIR");
    snprintf(fx->tmp, sizeof(fx->tmp), "%s/agent_backup_test.XXXXXX",
             t != NULL && *t != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->tmp));
    snprintf(fx->root, sizeof(fx->root), "%s/Maildir", fx->tmp);
    snprintf(fx->db, sizeof(fx->db), "%s/state", fx->tmp);
    assert_int_equal(mkdir(fx->root, 0700), 0);
    fx->env = cfr_kv_env_new(8u << 20, &err);
    assert_non_null(fx->env);
    assert_int_equal(agent_state_open(fx->env, fx->db, &fx->st, &err), 0);
    fx->full = cfr_keyring_generate(1700000000000, &err);
    assert_non_null(fx->full);
    fx->agent = cfr_keyring_agent_view(fx->full, &err);
    assert_non_null(fx->agent);
    fx->sess = cfr_session_new(fx->agent, 0, &err);
    assert_non_null(fx->sess);
    fx->op = cfr_opener_new(fx->full, &err);
    assert_non_null(fx->op);
    fx->sink.missing = fake_missing;
    fx->sink.put = fake_put;
    fx->sink.flush = fake_flush;
    fx->sink.commit = fake_commit;
    fx->sink.ctx = &fx->vault;
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    agent_state_close(fx->st);
    cfr_kv_env_free(fx->env);
    cfr_opener_free(fx->op);
    cfr_session_free(fx->sess);
    cfr_keyring_free(fx->agent);
    cfr_keyring_free(fx->full);
    fake_fini(&fx->vault);
    assert_int_equal(nftw(fx->tmp, rm_cb, 32, FTW_DEPTH | FTW_PHYS), 0);
    free(fx);
    return 0;
}

static int
run(struct fixture *fx, const struct agent_backup_opts *o,
    struct agent_backup_stats *s)
{
    struct cfr_err err;
    memset(&err, 0, sizeof(err));
    int rc = agent_backup_mailbox("alice@example.org", fx->root, fx->agent,
                                  fx->sess, fx->st, &fx->sink, o, s, &err);
    if (rc != 0 && rc != CFR_EINTERNAL) {
        fprintf(stderr, "backup: %s\n", err.msg);
    }
    return rc;
}

/* ---- restore ------------------------------------------------------------ */

struct restore {
    struct fixture *fx;
    struct cfr_buf page;
};

static int
manifest_get(void *ctx, const uint8_t id[32], struct cfr_buf *page,
             struct cfr_err *err)
{
    struct fixture *fx = ctx;
    struct obj *o = fake_find(&fx->vault, id);
    if (o == NULL) {
        return CFR_ERR(err, CFR_ENOTFOUND, "no page");
    }
    return cfr_env_open(fx->op, CFR_ENV_MANIFEST_PAGE, id, o->data, o->len,
                        CFR_TREE_PAGE_MAX, page, err);
}

static struct cfr_snap_header last_header; /* of the last restore_walk */

typedef void entry_fn(struct fixture *fx, const struct cfr_snap_entry *e,
                      const struct cfr_buf *content, void *ctx);

/* Opens the last committed snapshot and reassembles every file. */
static size_t
restore_walk(struct fixture *fx, entry_fn *fn, void *ctx)
{
    struct cfr_err err;
    struct cfr_buf plain, file, chunk;
    struct cfr_snap_header h;
    struct cfr_snap_manifest_reader *r = NULL;
    struct cfr_snap_entry e;
    size_t n = 0;
    int rc;

    assert_non_null(fx->vault.header);
    cfr_buf_init(&plain, CFR_SNAP_HEADER_MAX);
    assert_int_equal(cfr_env_open(fx->op, CFR_ENV_SNAPSHOT_HEADER,
                                  fx->vault.header_id, fx->vault.header,
                                  fx->vault.header_len, CFR_SNAP_HEADER_MAX,
                                  &plain, &err),
                     0);
    assert_int_equal(cfr_snap_header_decode(plain.data, plain.len, &h, &err),
                     0);
    assert_string_equal(h.mailbox, "alice@example.org");
    last_header = h;
    uint8_t mid[32];
    cfr_keyring_name_id(fx->full, h.mailbox, strlen(h.mailbox), mid);
    assert_memory_equal(mid, fx->vault.mailbox_id, 32);
    assert_int_equal(
        cfr_snap_manifest_reader_new(manifest_get, fx, &h.manifest, &r, &err),
        0);
    cfr_buf_init(&file, (size_t)1 << 30);
    cfr_buf_init(&chunk, CFR_ENV_PLAIN_MAX);
    while ((rc = cfr_snap_manifest_reader_next(r, &e, &err)) == 1) {
        cfr_buf_reset(&file);
        for (size_t i = 0; i < e.n_chunks; i++) {
            const uint8_t *id = e.chunk_ids + 32 * i;
            struct obj *o = fake_find(&fx->vault, id);
            assert_non_null(o);
            assert_int_equal(cfr_env_open(fx->op, CFR_ENV_CHUNK, id, o->data,
                                          o->len, CFR_ENV_PLAIN_MAX, &chunk,
                                          &err),
                             0);
            assert_int_equal(cfr_buf_append(&file, chunk.data, chunk.len, NULL),
                             0);
        }
        assert_int_equal(file.len, e.size);
        fn(fx, &e, &file, ctx);
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, h.manifest.entries);
    cfr_snap_manifest_reader_free(r);
    cfr_buf_fini(&plain);
    cfr_buf_fini(&file);
    cfr_buf_fini(&chunk);
    return n;
}

/* The source path of an entry, as a restore would write it. */
static void
entry_path(const struct fixture *fx, const struct cfr_snap_entry *e, char *out)
{
    const uint8_t *z = memchr(e->key, 0, e->key_len);
    assert_non_null(z);
    size_t fl = (size_t)(z - e->key);
    const char *name = (const char *)z + 1;
    int nl = (int)(e->key_len - fl - 1);
    char folder[256] = "";
    int k;
    if (fl > 0) {
        snprintf(folder, sizeof(folder), "/%.*s", (int)fl,
                 (const char *)e->key);
    }
    if (e->kind == CFR_SNAP_MAILDIR_MESSAGE) {
        k = snprintf(out, PATH_MAX, "%s%s/%s/%.*s%.*s", fx->root, folder,
                     e->in_new ? "new" : "cur", nl, name, (int)e->info_len,
                     (const char *)e->info);
    } else {
        k = snprintf(out, PATH_MAX, "%s%s%.*s", fx->root, folder, nl, name);
    }
    assert_true(k > 0 && k < PATH_MAX);
}

static void
compare_cb(struct fixture *fx, const struct cfr_snap_entry *e,
           const struct cfr_buf *content, void *ctx)
{
    size_t *mismatches = ctx;
    char p[PATH_MAX];
    entry_path(fx, e, p);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    uint8_t *d = malloc(content->len + 1);
    assert_non_null(d);
    size_t got = fread(d, 1, content->len + 1, f);
    fclose(f);
    if (got != content->len ||
        (got > 0 && memcmp(d, content->data, got) != 0)) {
        (*mismatches)++;
    }
    free(d);
}

/* Restores and compares every file; returns the number of entries. */
static size_t
restore_compare(struct fixture *fx, size_t *mismatches_r)
{
    size_t mm = 0;
    size_t n = restore_walk(fx, compare_cb, &mm);
    if (mismatches_r != NULL) {
        *mismatches_r = mm;
    } else {
        assert_int_equal(mm, 0);
    }
    return n;
}

static size_t
count_chunk_objects(struct fixture *fx)
{
    return (size_t)fx->vault.put_chunks;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_backup_roundtrip_and_quiet_run(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 3, .refs_run_ids = 16};

    make_store(fx);
    make_big_mbox(fx, "mail/big.mbox");
    /* An mbox the scan cannot tell by name: chunked as one, kept opaque. */
    store_file(fx, "mail/old-mail",
               "From a@b Mon Jan  5 10:00:00 2026\nFrom: a@b\n\nhello\n\n"
               "From c@d Mon Jan  5 11:00:00 2026\nFrom: c@d\n\nbye\n");
    assert_int_equal(run(fx, &o, &s), 0);
    assert_true(s.committed);
    assert_int_equal(fx->vault.commits, 1);
    assert_int_equal(s.scanned, 10);
    assert_int_equal(s.verdicts[AGENT_STATE_NEW], 10);
    assert_int_equal(s.files_read, 10);
    assert_int_equal(s.bytes_read, total_bytes);
    assert_int_equal(s.file_errors, 0);
    assert_int_equal(s.entries, 10);
    assert_int_equal(s.total_bytes, total_bytes);
    /* Each chunk is either sealed, present or met before in this run. */
    assert_int_equal(s.chunks,
                     s.chunks_sealed + s.chunks_present + s.chunks_dup);
    assert_int_equal(s.chunks_sealed, count_chunk_objects(fx));
    /* The Sent copy, the list body and the mbox copies are duplicates. */
    assert_true(s.chunks_dup >= 4);
    assert_true(s.chunks > 500); /* the 20 MiB mbox, cut in blocks */
    assert_true(s.refs.entries == s.chunks_sealed + s.pages_manifest);
    assert_int_equal(restore_compare(fx, NULL), 10);

    /* A quiet run: nothing read, sealed or put but the header. */
    uint64_t puts = fx->vault.puts;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.verdicts[AGENT_STATE_UNCHANGED], 10);
    assert_int_equal(s.bytes_read, 0);
    assert_int_equal(s.chunks_sealed, 0);
    assert_int_equal(s.pages_put, 0);
    assert_int_equal(fx->vault.puts, puts);
    assert_int_equal(fx->vault.commits, 2);
    assert_int_equal(restore_compare(fx, NULL), 10);
}

static int
rename_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    if (flag != FTW_F || strstr(p, "/cur/") == NULL || strchr(p, ':') == NULL) {
        return 0;
    }
    char np[PATH_MAX];
    snprintf(np, sizeof(np), "%sRT", p); /* ":2,S" -> ":2,SRT" */
    return rename(p, np);
}

static void
test_backup_flag_storm_reads_nothing(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 2};
    char a[PATH_MAX], b[PATH_MAX];

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), 0);
    uint64_t chunks = fx->vault.put_chunks;
    assert_int_equal(nftw(fx->root, rename_cb, 16, FTW_PHYS), 0);
    path_of(fx, "new/1002.M3.host", a);
    path_of(fx, "cur/1002.M3.host:2,S", b);
    assert_int_equal(rename(a, b), 0);
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.verdicts[AGENT_STATE_RENAMED], 5);
    assert_int_equal(s.bytes_read, 0);
    assert_int_equal(s.chunks_sealed, 0);
    assert_int_equal(fx->vault.put_chunks, chunks);
    assert_true(s.pages_put >= 1); /* the entries changed, not the data */
    assert_int_equal(restore_compare(fx, NULL), 8);
}

struct hook {
    const char *path;
    int err;
    unsigned calls;
};

static int
before_read(void *ctx, const char *path)
{
    struct hook *h = ctx;
    h->calls++;
    return strcmp(path, h->path) == 0 ? h->err : 0;
}

static struct cfr_buf carried; /* what the carried-over entry holds */

static void
find_cb(struct fixture *fx, const struct cfr_snap_entry *e,
        const struct cfr_buf *content, void *ctx)
{
    (void)fx;
    if (e->key_len == 1 + strlen("/dovecot-uidlist") &&
        memcmp(e->key + 1, "/dovecot-uidlist", e->key_len - 1) == 0) {
        cfr_buf_reset(&carried);
        assert_int_equal(
            cfr_buf_append(&carried, content->data, content->len, NULL), 0);
        (*(size_t *)ctx)++;
    }
}

static void
test_backup_file_errors_carry_over(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct hook h = {.path = "dovecot-uidlist", .err = EIO};
    struct agent_backup_opts o = {.workers = 2};
    const char *old = "3 V1 N1005\n1 1000.M1.host\n";

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), 0);
    /* Changed, then unreadable: the previous version stays. */
    put_str(fx, "dovecot-uidlist", "3 V1 N1006\n1 1000.M1.host\n2 x\n");
    put_str(fx, "cur/2000.M9.host:2,S", "From: new\n\nunreadable\n");
    o.before_read = before_read;
    o.hook_ctx = &h;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.file_errors, 1);
    assert_int_equal(s.err_io, 1);
    assert_int_equal(s.files_read, 1);
    assert_int_equal(s.entries, 9);
    size_t found = 0, mm = 0;
    cfr_buf_init(&carried, 1u << 20);
    restore_walk(fx, find_cb, &found);
    assert_int_equal(found, 1);
    assert_int_equal(carried.len, strlen(old));
    assert_memory_equal(carried.data, old, carried.len);
    cfr_buf_fini(&carried);
    assert_int_equal(restore_compare(fx, &mm), 9);
    assert_int_equal(mm, 1); /* the carried-over file differs on disk */

    /* A new file that vanished before the read is simply absent. */
    h.path = "cur/2001.M10.host:2,S";
    h.err = ENOENT;
    put_str(fx, h.path, "From: gone\n\nvanished\n");
    o.before_read = before_read;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.err_vanished, 1);
    assert_int_equal(s.err_io, 0); /* the uidlist is read this time */
    assert_int_equal(s.bytes_read, strlen("3 V1 N1006\n1 1000.M1.host\n2 x\n"));
    assert_int_equal(s.entries, 9);

    /* Too many chunks for one entry: a per-file error, not a failed run. */
    char p[PATH_MAX];
    path_of(fx, "huge.mbox", p);
    int fd = open(p, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(
        ftruncate(fd, (off_t)CFR_SNAP_CHUNKS_MAX * CFR_CHUNK_DEFAULT_MAX), 0);
    close(fd);
    o.before_read = NULL;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.err_too_large, 1);
    assert_int_equal(s.file_errors, 1);
    assert_int_equal(s.bytes_read, strlen("From: gone\n\nvanished\n"));
    assert_int_equal(s.entries, 10);
    assert_int_equal(restore_compare(fx, NULL), 10);
}

/*
 * Renames a message between the scan and its read, as Dovecot does for a
 * flag change or a move from new/ to cur/: the read finds the new name.
 */
struct mover {
    const char *from, *to; /* relative to the root */
    const struct fixture *fx;
    unsigned moved;
};

static int
move_hook(void *ctx, const char *path)
{
    struct mover *m = ctx;
    if (strcmp(path, m->from) == 0) {
        char a[PATH_MAX], b[PATH_MAX];
        path_of(m->fx, m->from, a);
        path_of(m->fx, m->to, b);
        assert_int_equal(rename(a, b), 0);
        m->moved++;
    }
    return 0;
}

struct named {
    const char *key;   /* the base name */
    const char *info;  /* the expected info */
    bool in_new;       /* the expected place */
    const char *bytes; /* the expected content */
    size_t found, right;
};

static void
named_cb(struct fixture *fx, const struct cfr_snap_entry *e,
         const struct cfr_buf *content, void *ctx)
{
    struct named *n = ctx;
    (void)fx;
    size_t kl = strlen(n->key);
    if (e->key_len != kl + 1 || e->key[0] != 0 ||
        memcmp(e->key + 1, n->key, kl) != 0) {
        return;
    }
    n->found++;
    if (e->info_len == strlen(n->info) &&
        memcmp(e->info, n->info, e->info_len) == 0 && e->in_new == n->in_new &&
        content->len == strlen(n->bytes) &&
        memcmp(content->data, n->bytes, content->len) == 0) {
        n->right++;
    }
}

static void
test_backup_renamed_before_read_is_kept(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 2};
    const char *fresh = "From: x@example.org\nSubject: new\n\nfresh\n";
    const char *edited = "From: a@example.org\n\nedited since the last run\n";

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), 0);

    /*
     * A message no run has seen, renamed (flags and place) before its
     * read. The moves here go to new/, which the scan reads before cur/,
     * so that the scan cannot report the new name itself and only the
     * re-read can find it, whatever the file system's readdir order
     * (Dovecot moves the other way; the lookup does not care).
     */
    struct mover m = {"cur/3000.M7.host:2,", "new/3000.M7.host:2,S", fx, 0};
    put_str(fx, m.from, fresh);
    o.before_read = move_hook;
    o.hook_ctx = &m;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(m.moved, 1);
    assert_int_equal(s.err_vanished, 0);
    assert_int_equal(s.file_errors, 0);
    assert_int_equal(s.files_read, 1);
    assert_int_equal(s.bytes_read, strlen(fresh));
    assert_int_equal(s.entries, 9);
    struct named n = {"3000.M7.host", ":2,S", true, fresh, 0, 0};
    restore_walk(fx, named_cb, &n);
    assert_int_equal(n.found, 1);
    assert_int_equal(n.right, 1);
    assert_int_equal(restore_compare(fx, NULL), 9);

    /* A cached message that must be read again, moved before the read: the
     * new content under the new name and place, not the old ones. */
    put_str(fx, "cur/1000.M1.host:2,S", edited);
    m = (struct mover){"cur/1000.M1.host:2,S", "new/1000.M1.host", fx, 0};
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(m.moved, 1);
    assert_int_equal(s.err_vanished, 0);
    assert_int_equal(s.files_read, 1);
    assert_int_equal(s.bytes_read, strlen(edited));
    assert_int_equal(s.entries, 9);
    n = (struct named){"1000.M1.host", "", true, edited, 0, 0};
    restore_walk(fx, named_cb, &n);
    assert_int_equal(n.found, 1);
    assert_int_equal(n.right, 1);
    assert_int_equal(restore_compare(fx, NULL), 9);

    /* Really deleted before the read: carried over as before, counted. */
    put_str(fx, "cur/1001.M2.host:2,", "From: c@example.org\n\nshort now\n");
    /* tmp/ is outside new/ and cur/: for Maildir the message is gone. */
    m = (struct mover){"cur/1001.M2.host:2,", "tmp/1001.M2.host:2,", fx, 0};
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(m.moved, 1);
    assert_int_equal(s.err_vanished, 1);
    assert_int_equal(s.files_read, 0);
    assert_int_equal(s.entries, 9); /* the cached version carried over */
}

struct nice_seen {
    int nice, ioprio; /* of the last worker thread that read */
    unsigned calls;
};

/* Runs on a worker thread: what priority does it have? */
static int
nice_hook(void *ctx, const char *path)
{
    struct nice_seen *n = ctx;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    (void)path;
    int nice = getpriority(PRIO_PROCESS, (id_t)tid);
    int ioprio = (int)syscall(SYS_ioprio_get, 1, (int)tid);
    /* Several workers call this at once. */
    __atomic_store_n(&n->nice, nice, __ATOMIC_SEQ_CST);
    __atomic_store_n(&n->ioprio, ioprio, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&n->calls, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void
test_backup_stopped_run_resends_nothing(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct nice_seen ns = {0};
    struct agent_backup_opts o = {.workers = 4,
                                  .stop_before_commit = true,
                                  .cpu_nice = 7,
                                  .io_class = AGENT_BACKUP_IO_IDLE,
                                  .before_read = nice_hook,
                                  .hook_ctx = &ns};
    int own = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), CFR_EINTERNAL);
    /* Workers run niced and at idle I/O class; the caller does not. */
    assert_true(ns.calls >= 1);
    assert_int_equal(ns.nice, 7);
    assert_int_equal(ns.ioprio >> 13, AGENT_BACKUP_IO_IDLE);
    assert_int_equal(getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)), own);
    assert_false(s.committed);
    assert_int_equal(fx->vault.commits, 0);
    assert_true(s.chunks_sealed > 0);
    uint64_t puts = fx->vault.puts;

    o.stop_before_commit = false;
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(fx->vault.commits, 1);
    assert_int_equal(s.chunks_sealed, 0);
    assert_int_equal(s.pages_put, 0);
    assert_int_equal(fx->vault.puts, puts);
    assert_int_equal(restore_compare(fx, NULL), 8);
}

static uint8_t uidlist_chunk[32];

static void
uidlist_cb(struct fixture *fx, const struct cfr_snap_entry *e,
           const struct cfr_buf *content, void *ctx)
{
    (void)fx;
    (void)content;
    if (e->key_len == 1 + strlen("/dovecot-uidlist") &&
        memcmp(e->key + 1, "/dovecot-uidlist", e->key_len - 1) == 0) {
        assert_int_equal(e->n_chunks, 1);
        memcpy(uidlist_chunk, e->chunk_ids, 32);
        (*(size_t *)ctx)++;
    }
}

static void
test_backup_lost_chunk_is_read_again(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 2};
    struct cfr_err err;
    size_t found = 0;

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), 0);
    restore_walk(fx, uidlist_cb, &found);
    assert_int_equal(found, 1);
    /* The vault collected it (an uncommitted run's lease expired). */
    struct obj *ob = fake_find(&fx->vault, uidlist_chunk);
    assert_non_null(ob);
    free(ob->data);
    *ob = fx->vault.v[--fx->vault.n];

    memset(&err, 0, sizeof(err));
    assert_int_equal(agent_backup_mailbox("alice@example.org", fx->root,
                                          fx->agent, fx->sess, fx->st,
                                          &fx->sink, &o, &s, &err),
                     CFR_ENOTFOUND);
    assert_non_null(strstr(err.msg, "read again"));
    assert_int_equal(s.chunks_lost, 1);
    assert_int_equal(s.files_forgotten, 1);
    assert_int_equal(s.bytes_read, 0);
    assert_int_equal(fx->vault.commits, 1);

    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.files_read, 1);
    assert_int_equal(s.bytes_read, strlen("3 V1 N1005\n1 1000.M1.host\n"));
    assert_int_equal(s.chunks_sealed, 1);
    assert_int_equal(s.chunks_lost, 0);
    assert_int_equal(fx->vault.commits, 2);
    assert_int_equal(restore_compare(fx, NULL), 8);
}

struct guard {
    unsigned calls;
    uint64_t entries, deleted;
};

/* The CLI's rule, in short: more than half of the mailbox vanished. */
static bool
guard(void *ctx, uint64_t entries, uint64_t deleted)
{
    struct guard *g = ctx;
    g->calls++;
    g->entries = entries;
    g->deleted = deleted;
    return deleted * 2 > entries + deleted;
}

static void
test_backup_deletion_and_bad_args(void **state)
{
    struct fixture *fx = *state;
    struct agent_backup_stats s;
    struct agent_backup_opts o = {.workers = 1};
    char p[PATH_MAX];
    struct cfr_err err;

    make_store(fx);
    assert_int_equal(run(fx, &o, &s), 0);
    path_of(fx, ".Sent/cur/1004.M5.host:2,S", p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.deleted, 1);
    assert_int_equal(s.entries, 7);
    assert_int_equal(restore_compare(fx, NULL), 7);
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(s.deleted, 0);
    assert_false(s.mass_deletion);
    assert_int_equal(fx->vault.flags, 0);
    assert_false(fx->vault.hold_previous);

    /* Most of the mailbox vanishes: backed up anyway, marked, held. */
    struct guard g = {0};
    o.mass_deletion = guard;
    o.mass_ctx = &g;
    const char *gone[] = {"cur/1000.M1.host:2,S", "cur/1001.M2.host:2,",
                          "new/1002.M3.host", ".Lists.dev/cur/1003.M4.host:2,S",
                          "archive.mbox"};
    for (size_t i = 0; i < 5; i++) {
        path_of(fx, gone[i], p);
        assert_int_equal(unlink(p), 0);
    }
    assert_int_equal(run(fx, &o, &s), 0);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.deleted, 5);
    assert_int_equal(g.entries, 2);
    assert_true(s.mass_deletion);
    assert_int_equal(fx->vault.flags, AGENT_BACKUP_FLAG_MASS_DELETION);
    assert_true(fx->vault.hold_previous);
    assert_int_equal(restore_compare(fx, NULL), 2);
    assert_true(last_header.mass_deletion);
    assert_int_equal(last_header.vanished, 5);
    o.mass_deletion = NULL;

    o.cpu_nice = 40;
    assert_int_equal(agent_backup_mailbox("m", fx->root, fx->agent, fx->sess,
                                          fx->st, &fx->sink, &o, &s, &err),
                     CFR_EINVAL);
    o.cpu_nice = 5;
    o.io_class = AGENT_BACKUP_IO_IDLE;
    assert_int_equal(agent_backup_mailbox("m", "/nonexistent/x", fx->agent,
                                          fx->sess, fx->st, &fx->sink, &o, &s,
                                          &err),
                     CFR_ENOTFOUND);
}

static void
test_backup_message_id(void **state)
{
    (void)state;
    size_t off, len;
    const char *m = "From: a\r\nmessage-ID:   <x@y> \r\nSubject: s\r\n\r\nb";
    assert_int_equal(
        agent_backup_message_id((const uint8_t *)m, strlen(m), &off, &len), 1);
    assert_int_equal(len, 5);
    assert_memory_equal(m + off, "<x@y>", 5);
    const char *f = "Message-Id:\n\t<folded@y>\nX: 1\n\nbody";
    assert_int_equal(
        agent_backup_message_id((const uint8_t *)f, strlen(f), &off, &len), 1);
    assert_memory_equal(f + off, "<folded@y>", len);
    const char *b = "From: a\n\nMessage-ID: <in-body@y>\n";
    assert_int_equal(
        agent_backup_message_id((const uint8_t *)b, strlen(b), &off, &len), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_backup_roundtrip_and_quiet_run,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_flag_storm_reads_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_file_errors_carry_over,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_renamed_before_read_is_kept,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_stopped_run_resends_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_lost_chunk_is_read_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_deletion_and_bad_args,
                                        setup, teardown),
        cmocka_unit_test(test_backup_message_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
