/*
 * kv_test.c - the storage layer against a real RocksDB in a temporary
 * directory: round trips, durability across close and SIGKILL, append-only
 * chunks, corruption on disk, deletion down to the bytes, group commit,
 * unknown column families, and the failed state after a write error.
 *
 * The SIGKILL test re-executes this binary as a writer child (argv[1] =
 * --kv-crash-child) rather than forking: a forked copy of a process that
 * already ran RocksDB would lack its background threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "id.h"
#include "kv.h"
#include "mem.h"

#define CACHE_BYTES (32u << 20)
#define VAL_CAP     (1u << 20)

/* Column families of the chunk databases used below. */
static const char *const chunk_cfs[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                        "refs"};
#define CF_CHUNKS 0
#define CF_INDEX  1
#define CF_REFS   2

/* ---- helpers ----------------------------------------------------------- */

static uint64_t
prng(uint64_t *s)
{
    /* xorshift64*: deterministic per seed, so a failure can be replayed. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
test_seed(void)
{
    const char *env = getenv("KV_TEST_SEED");
    uint64_t seed = env != NULL ? strtoull(env, NULL, 10)
                                : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    if (seed == 0) {
        seed = 1;
    }
    print_message("kv_test seed %llu (set KV_TEST_SEED to replay)\n",
                  (unsigned long long)seed);
    return seed;
}

static void
make_dir(char *tmpl, size_t n)
{
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    int w = snprintf(tmpl, n, "%s/kv_test.XXXXXX", base);
    assert_true(w > 0 && (size_t)w < n);
    assert_non_null(mkdtemp(tmpl));
}

/* RocksDB keeps a flat directory: no recursion needed. */
static void
remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

/* memmem is a GNU extension; the build asks only for POSIX. */
static const uint8_t *
find_bytes(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (hay[i] == *(const uint8_t *)needle &&
            memcmp(hay + i, needle, m) == 0) {
            return hay + i;
        }
    }
    return NULL;
}

/* The marker that opens every 64-byte line of chunk (tag, i): unique. */
static size_t
marker(unsigned tag, unsigned i, char out[24])
{
    int w = snprintf(out, 24, "<MK%06u.%06u>", tag, i);
    assert_true(w == 17);
    return (size_t)w;
}

/* Fills p with chunk (tag, i): markers and pseudo-random filler. */
static void
fill_chunk(uint8_t *p, size_t len, unsigned tag, unsigned i)
{
    char mk[24];
    size_t ml = marker(tag, i, mk);
    uint64_t s = ((uint64_t)tag << 32 | i) * 0x9e3779b97f4a7c15u + 1;
    for (size_t o = 0; o < len; o++) {
        p[o] = o % 64 < ml ? (uint8_t)mk[o % 64] : (uint8_t)prng(&s);
    }
}

struct chunk {
    uint8_t id[CFR_ID_LEN];
    uint8_t *data;
    size_t len;
};

static void
chunk_make(struct chunk *c, size_t len, unsigned tag, unsigned i)
{
    c->data = malloc(len);
    assert_non_null(c->data);
    c->len = len;
    fill_chunk(c->data, len, tag, i);
    cfr_id_plain(c->data, len, c->id);
}

static void
chunk_fini(struct chunk *c)
{
    free(c->data);
    c->data = NULL;
}

static void
put_ok(struct cfr_kv *kv, const struct chunk *c)
{
    struct cfr_err err;
    bool existed = true;
    int rc = cfr_kv_chunk_put(kv, c->id, c->data, c->len, &existed, &err);
    if (rc != 0) {
        fail_msg("chunk put: %s", err.msg);
    }
    assert_false(existed);
}

static void
get_equal(struct cfr_kv *kv, const struct chunk *c)
{
    struct cfr_err err;
    struct cfr_buf b;
    cfr_buf_init(&b, 16u << 20);
    int rc = cfr_kv_chunk_get(kv, c->id, &b, &err);
    if (rc != 0) {
        fail_msg("chunk get: %s", err.msg);
    }
    assert_int_equal(b.len, c->len);
    assert_memory_equal(b.data, c->data, c->len);
    cfr_buf_fini(&b);
}

static struct cfr_kv *
open_ok(struct cfr_kv_env *env, const char *dir, const char *const *cfs,
        size_t n, const struct cfr_kv_opts *o)
{
    struct cfr_err err;
    struct cfr_kv *kv = cfr_kv_open(env, dir, cfs, n, o, &err);
    if (kv == NULL) {
        fail_msg("open %s: %s", dir, err.msg);
    }
    return kv;
}

static struct cfr_kv_env *
env_ok(void)
{
    struct cfr_err err;
    struct cfr_kv_env *env = cfr_kv_env_new(CACHE_BYTES, &err);
    assert_non_null(env);
    return env;
}

/*
 * Counts the files in dir (with suffix, or all when NULL) holding needle;
 * *path_r and *off_r give the first hit.
 */
static int
files_with(const char *dir, const char *suffix, const void *needle, size_t nlen,
           char *path_r, size_t path_n, long *off_r)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int hits = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (suffix != NULL &&
            (l < strlen(suffix) ||
             strcmp(de->d_name + l - strlen(suffix), suffix) != 0)) {
            continue;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
            continue;
        }
        FILE *f = fopen(path, "rb");
        if (f == NULL && errno == ENOENT) {
            /* Deleted since the listing, by a background job that the
             * last call set off (an obsolete table or blob file): it
             * holds nothing any more. */
            continue;
        }
        assert_non_null(f);
        uint8_t *buf = malloc((size_t)st.st_size);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)st.st_size, f),
                         (size_t)st.st_size);
        fclose(f);
        const uint8_t *at = find_bytes(buf, (size_t)st.st_size, needle, nlen);
        if (at != NULL) {
            if (hits == 0 && path_r != NULL) {
                snprintf(path_r, path_n, "%s", path);
                *off_r = (long)(at - buf);
            }
            hits++;
        }
        free(buf);
    }
    closedir(d);
    return hits;
}

static void
flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    int c = fgetc(f);
    assert_true(c != EOF);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    assert_int_equal(fputc(c ^ 0x01, f), c ^ 0x01);
    assert_int_equal(fclose(f), 0);
}

struct scrub_log {
    uint8_t ids[8][CFR_ID_LEN];
    int codes[8];
    char why[8][CFR_ERR_MSG_MAX];
    size_t n;
};

static void
scrub_cb(void *ctx, const uint8_t id[CFR_ID_LEN], int code, const char *why)
{
    struct scrub_log *l = ctx;
    if (l->n < 8) {
        memcpy(l->ids[l->n], id, CFR_ID_LEN);
        l->codes[l->n] = code;
        snprintf(l->why[l->n], CFR_ERR_MSG_MAX, "%s", why);
    }
    l->n++;
}

static bool
scrub_reported(const struct scrub_log *l, const uint8_t id[CFR_ID_LEN])
{
    for (size_t i = 0; i < l->n && i < 8; i++) {
        if (memcmp(l->ids[i], id, CFR_ID_LEN) == 0) {
            return l->codes[i] == CFR_ECORRUPT;
        }
    }
    return false;
}

/* ---- generic records --------------------------------------------------- */

static void
test_kv_roundtrip_across_cfs_and_reopen(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    static const char *const cfs[] = {"refs", "snaps"};
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, cfs, 2, NULL);
    struct cfr_err err;
    struct cfr_buf v;
    cfr_buf_init(&v, VAL_CAP);

    /* The same key in two families holds two values. */
    assert_int_equal(cfr_kv_put(kv, 0, "k", 1, "in-refs", 7, &err), 0);
    assert_int_equal(cfr_kv_put(kv, 1, "k", 1, "in-snaps!", 9, &err), 0);

    struct cfr_kv_batch *b = cfr_kv_batch_new(kv, &err);
    assert_non_null(b);
    char key[16];
    char val[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key%03d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        assert_int_equal(
            cfr_kv_batch_put(b, 0, key, strlen(key), val, strlen(val), &err),
            0);
    }
    assert_int_equal(cfr_kv_batch_delete(b, 0, "key050", 6, &err), 0);
    assert_int_equal(cfr_kv_batch_count(b), 101);
    assert_int_equal(cfr_kv_batch_put(b, 7, "x", 1, "y", 1, &err), CFR_EINVAL);
    assert_int_equal(cfr_kv_batch_put(b, 0, "", 0, "y", 1, &err), CFR_EINVAL);
    assert_int_equal(cfr_kv_batch_commit(b, true, &err), 0);
    assert_int_equal(cfr_kv_batch_count(b), 0);
    /* A committed batch is empty: committing again writes nothing. */
    assert_int_equal(cfr_kv_batch_commit(b, false, &err), 0);
    cfr_kv_batch_free(b);

    /* Multi-get: present, deleted, never written, and a too-small buffer. */
    const void *keys[4] = {"key007", "key050", "nope", "key099"};
    size_t lens[4] = {6, 6, 4, 6};
    struct cfr_buf vals[4];
    int rcs[4];
    for (int i = 0; i < 4; i++) {
        cfr_buf_init(&vals[i], i == 3 ? 4 : VAL_CAP);
    }
    assert_int_equal(cfr_kv_multi_get(kv, 0, 4, keys, lens, vals, rcs, &err),
                     0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(vals[0].len, 8);
    assert_memory_equal(vals[0].data, "value-49", 8);
    assert_int_equal(rcs[1], CFR_ENOTFOUND);
    assert_int_equal(rcs[2], CFR_ENOTFOUND);
    assert_int_equal(rcs[3], CFR_ELIMIT);
    for (int i = 0; i < 4; i++) {
        cfr_buf_fini(&vals[i]);
    }

    cfr_kv_close(kv);
    kv = open_ok(env, dir, cfs, 2, NULL);
    assert_int_equal(cfr_kv_get(kv, 0, "k", 1, &v, &err), 0);
    assert_int_equal(v.len, 7);
    assert_memory_equal(v.data, "in-refs", 7);
    assert_int_equal(cfr_kv_get(kv, 1, "k", 1, &v, &err), 0);
    assert_int_equal(v.len, 9);
    assert_memory_equal(v.data, "in-snaps!", 9);
    assert_int_equal(cfr_kv_get(kv, 0, "key098", 6, &v, &err), 0);
    assert_memory_equal(v.data, "value-686", 9);
    assert_int_equal(cfr_kv_get(kv, 0, "key050", 6, &v, &err), CFR_ENOTFOUND);
    assert_int_equal(err.code, CFR_ENOTFOUND);
    assert_int_equal(cfr_kv_get(kv, 1, "key001", 6, &v, &err), CFR_ENOTFOUND);
    assert_int_equal(cfr_kv_delete(kv, 0, "k", 1, &err), 0);
    assert_int_equal(cfr_kv_get(kv, 0, "k", 1, &v, &err), CFR_ENOTFOUND);
    assert_int_equal(cfr_kv_get(kv, 1, "k", 1, &v, &err), 0);

    /* Properties. */
    uint64_t n = 0;
    assert_int_equal(
        cfr_kv_property_u64(kv, 0, "rocksdb.estimate-num-keys", &n, &err), 0);
    assert_true(n >= 90 && n <= 110);
    assert_int_equal(
        cfr_kv_property_u64(kv, 0, "rocksdb.no-such-thing", &n, &err),
        CFR_EINVAL);
    struct cfr_buf s;
    cfr_buf_init(&s, 1u << 20);
    assert_int_equal(cfr_kv_property_str(kv, 0, "rocksdb.stats", &s, &err), 0);
    assert_true(s.len > 0);
    cfr_buf_fini(&s);

    cfr_buf_fini(&v);
    cfr_kv_close(kv);
    assert_int_equal(cfr_kv_env_open_count(env), 0);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

static void
collect(struct cfr_kv_iter *it, char *out, size_t n)
{
    struct cfr_err err;
    struct cfr_kv_entry e;
    bool got = true;
    out[0] = '\0';
    size_t used = 0;
    for (;;) {
        assert_int_equal(cfr_kv_iter_next(it, &got, &e, &err), 0);
        if (!got) {
            break;
        }
        /* keys are printable here except the 0xff ones, shown as '~' */
        for (size_t i = 0; i < e.key_len && used + 2 < n; i++) {
            out[used++] = e.key[i] == 0xff ? '~' : (char)e.key[i];
        }
        out[used++] = '=';
        assert_true(e.val_len == 1);
        out[used++] = (char)e.val[0];
        out[used++] = ' ';
        out[used] = '\0';
    }
    /* The end is sticky. */
    assert_int_equal(cfr_kv_iter_next(it, &got, &e, &err), 0);
    assert_false(got);
}

static void
test_kv_iterate_range_and_prefix(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    static const char *const cfs[] = {"refs"};
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, cfs, 1, NULL);
    struct cfr_err err;
    static const char *const keys[] = {"a1", "a2", "b1",          "b2",
                                       "b3", "c1", "\xff\xff\x31"};
    for (size_t i = 0; i < 7; i++) {
        char v = (char)('0' + i);
        assert_int_equal(
            cfr_kv_put(kv, 0, keys[i], strlen(keys[i]), &v, 1, &err), 0);
    }
    char out[256];

    /* The prefix buffer is scribbled over after creation: the iterator
     * must own its bounds. */
    char prefix[2] = {'b', 0};
    struct cfr_kv_iter *it = cfr_kv_iter_new_prefix(kv, 0, prefix, 1, &err);
    assert_non_null(it);
    prefix[0] = 'z';
    collect(it, out, sizeof(out));
    assert_string_equal(out, "b1=2 b2=3 b3=4 ");
    cfr_kv_iter_free(it);

    it = cfr_kv_iter_new(kv, 0, "a2", 2, "c1", 2, &err);
    assert_non_null(it);
    collect(it, out, sizeof(out));
    assert_string_equal(out, "a2=1 b1=2 b2=3 b3=4 ");
    cfr_kv_iter_free(it);

    it = cfr_kv_iter_new_prefix(kv, 0, "\xff\xff", 2, &err);
    assert_non_null(it);
    collect(it, out, sizeof(out));
    assert_string_equal(out, "~~1=6 ");
    cfr_kv_iter_free(it);

    it = cfr_kv_iter_new_prefix(kv, 0, NULL, 0, &err);
    assert_non_null(it);
    collect(it, out, sizeof(out));
    assert_string_equal(out, "a1=0 a2=1 b1=2 b2=3 b3=4 c1=5 ~~1=6 ");
    cfr_kv_iter_free(it);

    /* A view taken at creation: later writes do not appear. */
    it = cfr_kv_iter_new(kv, 0, "c", 1, NULL, 0, &err);
    assert_non_null(it);
    assert_int_equal(cfr_kv_put(kv, 0, "c2", 2, "7", 1, &err), 0);
    collect(it, out, sizeof(out));
    assert_string_equal(out, "c1=5 ~~1=6 ");
    cfr_kv_iter_free(it);

    assert_null(cfr_kv_iter_new(kv, 3, NULL, 0, NULL, 0, &err));
    assert_int_equal(err.code, CFR_EINVAL);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

/* ---- chunks ------------------------------------------------------------ */

static void
test_kv_chunk_put_durable_across_reopen(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    enum { N = 40 };
    struct chunk c[N];
    for (unsigned i = 0; i < N; i++) {
        /* Both sides of the 4 KiB blob threshold. */
        chunk_make(&c[i], i % 2 ? 100 + i * 50 : 4096 + i * 1000, 1, i);
        put_ok(kv, &c[i]);
    }
    cfr_kv_close(kv);
    kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    for (unsigned i = 0; i < N; i++) {
        get_equal(kv, &c[i]);
    }
    /* Data went to blob files, and the index family holds no blob. */
    uint64_t blobs = 0;
    struct cfr_err err;
    cfr_kv_flush(kv, &err);
    assert_int_equal(cfr_kv_property_u64(
                         kv, CF_CHUNKS, "rocksdb.num-blob-files", &blobs, &err),
                     0);
    assert_true(blobs >= 1);
    assert_int_equal(cfr_kv_property_u64(kv, CF_INDEX, "rocksdb.num-blob-files",
                                         &blobs, &err),
                     0);
    assert_int_equal(blobs, 0);

    /* A missing chunk, and one too large for the caller's buffer. */
    struct cfr_buf small;
    cfr_buf_init(&small, 1000);
    uint8_t absent[CFR_ID_LEN] = {1, 2, 3};
    assert_int_equal(cfr_kv_chunk_get(kv, absent, &small, &err), CFR_ENOTFOUND);
    assert_int_equal(cfr_kv_chunk_get(kv, c[0].id, &small, &err), CFR_ELIMIT);
    cfr_buf_fini(&small);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    for (unsigned i = 0; i < N; i++) {
        chunk_fini(&c[i]);
    }
    remove_dir(dir);
}

#define CRASH_N 150

static size_t
crash_len(unsigned round, unsigned i)
{
    /* Sizes on both sides of the blob threshold, varying per round. */
    return ((round * 7919u + i * 104729u) % 3) == 0
               ? 200 + (i * 37u) % 3000
               : 4096 + (round * 131u + i * 977u) % 28000;
}

/* The writer child: puts CRASH_N chunks, acknowledging each on stdout. */
static int
crash_child(const char *dir, const char *round_s)
{
    unsigned round = (unsigned)strtoul(round_s, NULL, 10);
    struct cfr_err err;
    struct cfr_kv_env *env = cfr_kv_env_new(CACHE_BYTES, &err);
    /* Small memtables: flushes and new blob files happen mid-run, so the
     * kill can land during one. */
    struct cfr_kv_opts o = {.write_buffer_bytes = 256u << 10};
    struct cfr_kv *kv =
        env != NULL ? cfr_kv_open(env, dir, chunk_cfs, 3, &o, &err) : NULL;
    if (kv == NULL) {
        fprintf(stderr, "crash child: %s\n", err.msg);
        return 2;
    }
    uint8_t *buf = malloc(64u << 10);
    for (unsigned i = 0; i < CRASH_N; i++) {
        size_t len = crash_len(round, i);
        uint8_t id[CFR_ID_LEN];
        fill_chunk(buf, len, 100 + round, i);
        cfr_id_plain(buf, len, id);
        if (cfr_kv_chunk_put(kv, id, buf, len, NULL, &err) != 0) {
            fprintf(stderr, "crash child: %s\n", err.msg);
            return 3;
        }
        /* Acknowledge only after the put returned: this is what the vault
         * will send to an agent. */
        uint8_t ack[4];
        cfr_put_le32(ack, i);
        if (write(1, ack, 4) != 4) {
            return 4;
        }
    }
    free(buf);
    /* Wait for the kill: a child that finished and exited on its own
     * would race the parent's kill point. */
    for (;;) {
        pause();
    }
}

static void
test_kv_chunk_survives_sigkill(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    uint64_t seed = test_seed();
    enum { ROUNDS = 3 };
    bool acked[ROUNDS][CRASH_N];
    memset(acked, 0, sizeof(acked));
    struct cfr_kv_env *env = env_ok();
    uint8_t *buf = malloc(64u << 10);
    assert_non_null(buf);

    for (unsigned round = 0; round < ROUNDS; round++) {
        unsigned kill_at = 1 + (unsigned)(prng(&seed) % (CRASH_N - 1));
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char rs[16];
            snprintf(rs, sizeof(rs), "%u", round);
            dup2(p[1], 1);
            close(p[0]);
            close(p[1]);
            execl("/proc/self/exe", "kv_test", "--kv-crash-child", dir, rs,
                  (char *)NULL);
            _exit(127);
        }
        close(p[1]);
        unsigned n_acks = 0;
        bool killed = false;
        uint8_t ack[4];
        /* Every ack in the pipe counts, including ones written between
         * our last read and the kill. */
        while (read(p[0], ack, 4) == 4) {
            unsigned i = cfr_get_le32(ack);
            assert_true(i < CRASH_N);
            acked[round][i] = true;
            n_acks++;
            if (n_acks == kill_at && !killed) {
                kill(pid, SIGKILL);
                killed = true;
            }
        }
        close(p[0]);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        print_message("round %u: killed after %u acks (%u read)\n", round,
                      kill_at, n_acks);

        /* Every acknowledged chunk of every round so far is intact; an
         * unacknowledged one may exist, but then intact too. */
        struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
        struct cfr_buf b;
        cfr_buf_init(&b, 64u << 10);
        struct cfr_err err;
        for (unsigned r = 0; r <= round; r++) {
            for (unsigned i = 0; i < CRASH_N; i++) {
                size_t len = crash_len(r, i);
                uint8_t id[CFR_ID_LEN];
                fill_chunk(buf, len, 100 + r, i);
                cfr_id_plain(buf, len, id);
                int rc = cfr_kv_chunk_get(kv, id, &b, &err);
                if (acked[r][i] && rc != 0) {
                    fail_msg("round %u chunk %u acked but: %s", r, i, err.msg);
                }
                if (rc == 0) {
                    assert_int_equal(b.len, len);
                    assert_memory_equal(b.data, buf, len);
                } else {
                    assert_int_equal(rc, CFR_ENOTFOUND);
                }
            }
        }
        cfr_buf_fini(&b);
        cfr_kv_close(kv);
    }
    free(buf);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

static void
test_kv_chunk_put_idempotent_never_overwrites(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    struct chunk big;
    struct chunk small;
    chunk_make(&big, 20000, 2, 0);
    chunk_make(&small, 300, 2, 1);
    put_ok(kv, &big);
    put_ok(kv, &small);

    bool existed = false;
    assert_int_equal(
        cfr_kv_chunk_put(kv, big.id, big.data, big.len, &existed, &err), 0);
    assert_true(existed);
    existed = false;
    assert_int_equal(
        cfr_kv_chunk_put(kv, small.id, small.data, small.len, &existed, &err),
        0);
    assert_true(existed);

    /* Other bytes under a stored ID: one flipped byte, then a shorter
     * value. Both refused, and the stored bytes are untouched. */
    big.data[100] ^= 0x40;
    assert_int_equal(
        cfr_kv_chunk_put(kv, big.id, big.data, big.len, &existed, &err),
        CFR_EEXIST);
    assert_int_equal(err.code, CFR_EEXIST);
    assert_int_equal(
        cfr_kv_chunk_put(kv, big.id, big.data, big.len - 1, &existed, &err),
        CFR_EEXIST);
    big.data[100] ^= 0x40;
    get_equal(kv, &big);

    /* Delete, then the ID is free again. */
    assert_int_equal(cfr_kv_chunk_delete(kv, small.id, &err), 0);
    assert_int_equal(cfr_kv_chunk_delete(kv, small.id, &err), 0);
    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    assert_int_equal(cfr_kv_chunk_get(kv, small.id, &b, &err), CFR_ENOTFOUND);
    cfr_buf_fini(&b);
    put_ok(kv, &small);
    get_equal(kv, &small);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    chunk_fini(&big);
    chunk_fini(&small);
    remove_dir(dir);
}

static void
test_kv_chunk_put_many_one_batch(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    enum { N = 256 };
    static struct chunk c[N];
    static uint8_t ids[N][CFR_ID_LEN];
    const void *datas[N];
    size_t lens[N];
    int rcs[N];
    bool existed[N];
    for (unsigned i = 0; i < N; i++) {
        chunk_make(&c[i], i % 4 ? 16384 : 600, 12, i);
    }
    /* Already stored: 0..9 with the same bytes, 10 with other bytes. */
    for (unsigned i = 0; i < 10; i++) {
        put_ok(kv, &c[i]);
    }
    c[10].data[7] ^= 1;
    put_ok(kv, &c[10]);
    c[10].data[7] ^= 1;
    for (unsigned i = 0; i < N; i++) {
        memcpy(ids[i], c[i].id, CFR_ID_LEN);
        datas[i] = c[i].data;
        lens[i] = c[i].len;
    }
    /* Within the call: 21 repeats 20's ID and bytes, 23 repeats 22's ID
     * with other bytes. */
    memcpy(ids[21], ids[20], CFR_ID_LEN);
    datas[21] = c[20].data;
    lens[21] = c[20].len;
    memcpy(ids[23], ids[22], CFR_ID_LEN);

    double t0 = now_s();
    assert_int_equal(
        cfr_kv_chunk_put_many(kv, N, ids, datas, lens, rcs, existed, &err), 0);
    double t1 = now_s();
    for (unsigned i = 0; i < N; i++) {
        int want = i == 10 || i == 23 ? CFR_EEXIST : 0;
        bool want_existed = i < 10 || i == 21;
        if (rcs[i] != want || existed[i] != want_existed) {
            fail_msg("chunk %u: rc %d existed %d", i, rcs[i], existed[i]);
        }
    }
    print_message("put_many: %d chunks (~3 MiB) in one synced batch, %.1f ms\n",
                  N, (t1 - t0) * 1e3);
    for (unsigned i = 0; i < N; i++) {
        if (i != 10 && i != 21 && i != 23) {
            get_equal(kv, &c[i]);
        }
    }
    /* 23 was refused, so 22's bytes stand; 10 keeps the first bytes. */
    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    assert_int_equal(cfr_kv_chunk_get(kv, c[10].id, &b, &err), 0);
    assert_int_equal(b.data[7], c[10].data[7] ^ 1);
    cfr_buf_fini(&b);

    /* All of it again: nothing new, nothing written. */
    uint64_t seq_keys = 0;
    assert_int_equal(cfr_kv_property_u64(kv, CF_INDEX,
                                         "rocksdb.num-entries-active-mem-table",
                                         &seq_keys, &err),
                     0);
    assert_int_equal(
        cfr_kv_chunk_put_many(kv, N, ids, datas, lens, rcs, existed, &err), 0);
    uint64_t again = 0;
    assert_int_equal(cfr_kv_property_u64(kv, CF_INDEX,
                                         "rocksdb.num-entries-active-mem-table",
                                         &again, &err),
                     0);
    assert_int_equal(again, seq_keys);
    assert_true(existed[100] && existed[21] && rcs[23] == CFR_EEXIST);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    for (unsigned i = 0; i < N; i++) {
        chunk_fini(&c[i]);
    }
    remove_dir(dir);
}

struct putter {
    struct cfr_kv *kv;
    size_t len;
    const bool *skip; /* indexed from 0, may be NULL */
    unsigned tag;
    unsigned from;
    unsigned count;
    int rc;
    char msg[CFR_ERR_MSG_MAX];
};

static void *
putter_run(void *arg)
{
    struct putter *p = arg;
    uint8_t *buf = malloc(p->len);
    struct cfr_err err;
    p->rc = buf == NULL ? CFR_ENOMEM : 0;
    for (unsigned i = p->from; i < p->from + p->count && p->rc == 0; i++) {
        if (p->skip != NULL && p->skip[i]) {
            continue;
        }
        uint8_t id[CFR_ID_LEN];
        fill_chunk(buf, p->len, p->tag, i);
        cfr_id_plain(buf, p->len, id);
        p->rc = cfr_kv_chunk_put(p->kv, id, buf, p->len, NULL, &err);
        if (p->rc != 0) {
            snprintf(p->msg, sizeof(p->msg), "%s", err.msg);
        }
    }
    free(buf);
    return NULL;
}

/* Puts chunks from..from+count-1 of tag from nthreads threads. */
static double
put_parallel(struct cfr_kv *kv, unsigned tag, unsigned count, size_t len,
             unsigned nthreads, const bool *skip)
{
    struct putter p[8];
    pthread_t th[8];
    assert_true(nthreads <= 8);
    double t0 = now_s();
    for (unsigned t = 0; t < nthreads; t++) {
        p[t] = (struct putter){.kv = kv,
                               .len = len,
                               .skip = skip,
                               .tag = tag,
                               .from = t * (count / nthreads),
                               .count = count / nthreads};
        assert_int_equal(pthread_create(&th[t], NULL, putter_run, &p[t]), 0);
    }
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        if (p[t].rc != 0) {
            fail_msg("writer %u: %s", t, p[t].msg);
        }
    }
    return now_s() - t0;
}

static void
test_kv_chunk_has_many_4096(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    uint64_t seed = test_seed();
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    enum { N = 4096 };
    static bool skip[N];
    size_t want_missing = 0;
    for (unsigned i = 0; i < N; i++) {
        skip[i] = prng(&seed) % 5 == 0;
        want_missing += skip[i];
    }
    put_parallel(kv, 3, N, 256, 4, skip);

    static uint8_t ids[N][CFR_ID_LEN];
    uint8_t buf[256];
    for (unsigned i = 0; i < N; i++) {
        fill_chunk(buf, sizeof(buf), 3, i);
        cfr_id_plain(buf, sizeof(buf), ids[i]);
    }
    static bool missing[N];
    memset(missing, 0xaa, sizeof(missing)); /* garbage the call must fix */
    size_t n_missing = 0;
    struct cfr_err err;
    double t0 = now_s();
    assert_int_equal(
        cfr_kv_chunk_has_many(kv, N, ids, missing, &n_missing, &err), 0);
    double t1 = now_s();
    assert_int_equal(n_missing, want_missing);
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(missing[i], skip[i]);
    }
    print_message("has_many: %u IDs, %zu missing, %.2f ms\n", N, n_missing,
                  (t1 - t0) * 1e3);

    /* The same after a flush, when the answers come from table files. */
    assert_int_equal(cfr_kv_flush(kv, &err), 0);
    assert_int_equal(
        cfr_kv_chunk_has_many(kv, N, ids, missing, &n_missing, &err), 0);
    assert_int_equal(n_missing, want_missing);
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(missing[i], skip[i]);
    }
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

/*
 * Writes NB blob-sized and NS inline chunks (tag), flushes, then one small
 * victim alone in its own table file, flushes, and closes.
 */
enum { NB = 10, NS = 5 };

struct flip_set {
    struct chunk big[NB];
    struct chunk small[NS];
    struct chunk victim; /* small: its value sits inline in an SST */
};

static void
flip_setup(struct cfr_kv_env *env, const char *dir, unsigned tag,
           struct flip_set *f)
{
    struct cfr_err err;
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    for (unsigned i = 0; i < NB; i++) {
        chunk_make(&f->big[i], 16384 + i, tag, i);
        put_ok(kv, &f->big[i]);
    }
    for (unsigned i = 0; i < NS; i++) {
        chunk_make(&f->small[i], 1000 + i, tag, 100 + i);
        put_ok(kv, &f->small[i]);
    }
    assert_int_equal(cfr_kv_flush(kv, &err), 0);
    /* Alone in its own table file, so the damaged block holds no other
     * chunk's value or blob reference. */
    chunk_make(&f->victim, 1500, tag, 200);
    put_ok(kv, &f->victim);
    assert_int_equal(cfr_kv_flush(kv, &err), 0);
    cfr_kv_close(kv);
}

static void
flip_fini(struct flip_set *f)
{
    for (unsigned i = 0; i < NB; i++) {
        chunk_fini(&f->big[i]);
    }
    for (unsigned i = 0; i < NS; i++) {
        chunk_fini(&f->small[i]);
    }
    chunk_fini(&f->victim);
}

/* Flips a byte inside the one file (with suffix) holding chunk i's marker. */
static void
flip_marker(const char *dir, const char *suffix, unsigned tag, unsigned i)
{
    char mk[24];
    char path[4096];
    long off = 0;
    size_t ml = marker(tag, i, mk);
    assert_int_equal(files_with(dir, suffix, mk, ml, path, sizeof(path), &off),
                     1);
    flip_byte(path, off + 5);
}

/* Checks chunk bad fails with its ID named, and all others read. */
static void
expect_one_bad(struct cfr_kv *kv, struct flip_set *f, const struct chunk *bad)
{
    struct cfr_err err;
    struct cfr_buf b;
    char hex[2 * CFR_ID_LEN + 1];
    cfr_buf_init(&b, 1u << 20);
    assert_int_equal(cfr_kv_chunk_get(kv, bad->id, &b, &err), CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "Corruption"));
    assert_non_null(strstr(err.msg, cfr_hex_encode(bad->id, CFR_ID_LEN, hex)));
    cfr_buf_fini(&b);
    for (unsigned i = 0; i < NB; i++) {
        if (&f->big[i] != bad) {
            get_equal(kv, &f->big[i]);
        }
    }
    for (unsigned i = 0; i < NS; i++) {
        get_equal(kv, &f->small[i]);
    }
    if (&f->victim != bad) {
        get_equal(kv, &f->victim);
    }

    struct scrub_log log = {0};
    struct cfr_kv_scrub_stats st;
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, NB + NS + 1);
    assert_int_equal(st.bad, 1);
    assert_int_equal(log.n, 1);
    assert_true(scrub_reported(&log, bad->id));
    assert_non_null(strstr(log.why[0], hex));
    print_message("scrub reported: %s\n", log.why[0]);
}

static void
test_kv_chunk_flipped_blob_byte_detected(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct flip_set f;
    flip_setup(env, dir, 4, &f);
    flip_marker(dir, ".blob", 4, 3);

    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    expect_one_bad(kv, &f, &f.big[3]);

    /* Recovery: delete the bad chunk (a replica resends it), compact with
     * blob GC, and the database is whole: writes work, scrub is clean. */
    struct cfr_err err;
    struct scrub_log log = {0};
    struct cfr_kv_scrub_stats st;
    assert_int_equal(cfr_kv_chunk_delete(kv, f.big[3].id, &err), 0);
    assert_int_equal(cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err), 0);
    assert_false(cfr_kv_failed(kv));
    put_ok(kv, &f.big[3]);
    get_equal(kv, &f.big[3]);
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, NB + NS + 1);
    assert_int_equal(st.bad, 0);
    assert_int_equal(log.n, 0);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    flip_fini(&f);
    remove_dir(dir);
}

/*
 * Repair replaces a damaged blob's bytes with a copy that matches the index
 * record, and only then: a healthy chunk, a wrong copy (other bytes, a short
 * one) and an unknown ID write nothing. After it, a compaction takes the
 * damaged bytes off the disk without failing the handle.
 */
static void
test_kv_chunk_repair(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct flip_set f;
    flip_setup(env, dir, 6, &f);
    flip_marker(dir, ".blob", 6, 3);
    /* The damaged copy's marker: flip_marker changed its byte 5. */
    char bad_mk[24];
    size_t ml = marker(6, 3, bad_mk);
    bad_mk[5] ^= 0x01;
    assert_int_equal(files_with(dir, ".blob", bad_mk, ml, NULL, 0, NULL), 1);

    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    const struct chunk *bad = &f.big[3];
    bool repaired = true;

    /* A healthy chunk: nothing to do, even offered other bytes. */
    assert_int_equal(cfr_kv_chunk_repair(kv, f.big[0].id, f.big[1].data,
                                         f.big[1].len, &repaired, &err),
                     0);
    assert_false(repaired);
    get_equal(kv, &f.big[0]);

    /* Wrong copies: one byte off, then short. Nothing is written. */
    uint8_t *wrong = malloc(bad->len);
    assert_non_null(wrong);
    memcpy(wrong, bad->data, bad->len);
    wrong[100] ^= 0x40;
    repaired = true;
    assert_int_equal(
        cfr_kv_chunk_repair(kv, bad->id, wrong, bad->len, &repaired, &err),
        CFR_ECORRUPT);
    assert_false(repaired);
    assert_non_null(strstr(err.msg, "does not match"));
    assert_int_equal(cfr_kv_chunk_repair(kv, bad->id, bad->data, bad->len - 1,
                                         &repaired, &err),
                     CFR_ECORRUPT);
    assert_false(repaired);
    assert_int_equal(cfr_kv_chunk_get(kv, bad->id, &b, &err), CFR_ECORRUPT);

    /* Not stored here: nothing to repair. */
    uint8_t unknown[CFR_ID_LEN];
    memset(unknown, 0x5a, sizeof(unknown));
    assert_int_equal(
        cfr_kv_chunk_repair(kv, unknown, bad->data, bad->len, &repaired, &err),
        CFR_ENOTFOUND);
    assert_false(repaired);

    /* The right copy: written, and the chunk reads again. */
    assert_int_equal(
        cfr_kv_chunk_repair(kv, bad->id, bad->data, bad->len, &repaired, &err),
        0);
    assert_true(repaired);
    get_equal(kv, bad);
    /* Now healthy: a second repair writes nothing. */
    assert_int_equal(
        cfr_kv_chunk_repair(kv, bad->id, bad->data, bad->len, &repaired, &err),
        0);
    assert_false(repaired);

    /* The damaged bytes are garbage: compaction removes them, the handle
     * stays writable, and everything reads and scrubs clean. */
    assert_int_equal(cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err), 0);
    assert_false(cfr_kv_failed(kv));
    assert_int_equal(files_with(dir, NULL, bad_mk, ml, NULL, 0, NULL), 0);
    struct scrub_log log = {0};
    struct cfr_kv_scrub_stats st;
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, NB + NS + 1);
    assert_int_equal(st.bad, 0);
    for (unsigned i = 0; i < NB; i++) {
        get_equal(kv, &f.big[i]);
    }
    struct chunk extra;
    chunk_make(&extra, 20000, 6, 999);
    put_ok(kv, &extra);
    get_equal(kv, &extra);
    chunk_fini(&extra);

    /* And across a reopen. */
    cfr_kv_close(kv);
    kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    get_equal(kv, bad);

    free(wrong);
    cfr_buf_fini(&b);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    flip_fini(&f);
    remove_dir(dir);
}

/* Reads an integer property through the text call (the per-level file
 * counts are text properties in RocksDB 7.8). */
static uint64_t
prop_num(struct cfr_kv *kv, unsigned cf, const char *name)
{
    struct cfr_err err;
    struct cfr_buf b;
    cfr_buf_init(&b, 4096);
    if (cfr_kv_property_str(kv, cf, name, &b, &err) != 0) {
        fail_msg("property %s: %s", name, err.msg);
    }
    char txt[64];
    size_t n = b.len < sizeof(txt) - 1 ? b.len : sizeof(txt) - 1;
    memcpy(txt, b.data, n);
    txt[n] = '\0';
    cfr_buf_fini(&b);
    return strtoull(txt, NULL, 10);
}

/*
 * A damaged blob must not stop the database from the background. Four
 * level-0 files make RocksDB pick an automatic compaction over every one
 * of them, the damaged blob's reference included, while four blob files
 * put the damaged one in the oldest quarter that blob GC (when it was on
 * for automatic compactions) relocates, that is reads. The compaction must
 * finish without a background error: writes go on, only the bad chunk
 * fails, and the recovery (delete, compact) leaves no trace of it.
 */
static void
test_kv_chunk_bad_blob_survives_background_compaction(void **state)
{
    (void)state;
    enum { ROUNDS = 4, PER = 2, N = ROUNDS * PER };
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_err err;
    struct chunk c[N + 1];
    for (unsigned i = 0; i <= N; i++) {
        chunk_make(&c[i], 16384 + i, 12, i);
    }
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    for (unsigned r = 0; r < ROUNDS - 1; r++) {
        for (unsigned i = 0; i < PER; i++) {
            put_ok(kv, &c[r * PER + i]);
        }
        assert_int_equal(cfr_kv_flush(kv, &err), 0);
    }
    cfr_kv_close(kv);
    flip_marker(dir, ".blob", 12, 0); /* c[0], in the oldest blob file */

    kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    /* The fourth level-0 file reaches the compaction trigger. */
    for (unsigned i = 0; i < PER; i++) {
        put_ok(kv, &c[(ROUNDS - 1) * PER + i]);
    }
    assert_int_equal(cfr_kv_flush(kv, &err), 0);
    double deadline = now_s() + 20.0;
    bool settled = false;
    /* A background error ends the wait at once: the database has stopped
     * and the pending compaction will never run. */
    while (!settled && now_s() < deadline &&
           prop_num(kv, CF_CHUNKS, "rocksdb.background-errors") == 0) {
        settled =
            prop_num(kv, CF_CHUNKS, "rocksdb.num-files-at-level0") < 4 &&
            prop_num(kv, CF_CHUNKS, "rocksdb.compaction-pending") == 0 &&
            prop_num(kv, CF_CHUNKS, "rocksdb.num-running-compactions") == 0;
        if (!settled) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    assert_int_equal(prop_num(kv, CF_CHUNKS, "rocksdb.background-errors"), 0);
    assert_true(settled);
    /* The compaction did run: it moved the references out of level 0. */
    assert_true(prop_num(kv, CF_CHUNKS, "rocksdb.num-files-at-level1") >= 1);
    assert_false(cfr_kv_failed(kv));
    put_ok(kv, &c[N]);

    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    assert_int_equal(cfr_kv_chunk_get(kv, c[0].id, &b, &err), CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "Blob CRC mismatch"));
    cfr_buf_fini(&b);
    for (unsigned i = 1; i <= N; i++) {
        get_equal(kv, &c[i]);
    }

    struct scrub_log log = {0};
    struct cfr_kv_scrub_stats st;
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, N + 1);
    assert_int_equal(st.bad, 1);
    assert_true(scrub_reported(&log, c[0].id));

    /* Recovery: the bad chunk goes, down to its bytes on disk, and comes
     * back from a replica. */
    assert_int_equal(cfr_kv_chunk_delete(kv, c[0].id, &err), 0);
    assert_int_equal(cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err), 0);
    assert_false(cfr_kv_failed(kv));
    char mk[24];
    size_t ml = marker(12, 0, mk);
    assert_int_equal(files_with(dir, NULL, mk, ml, NULL, 0, NULL), 0);
    put_ok(kv, &c[0]);
    memset(&log, 0, sizeof(log));
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, N + 1);
    assert_int_equal(st.bad, 0);
    for (unsigned i = 0; i <= N; i++) {
        get_equal(kv, &c[i]);
    }
    assert_int_equal(prop_num(kv, CF_CHUNKS, "rocksdb.background-errors"), 0);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    for (unsigned i = 0; i <= N; i++) {
        chunk_fini(&c[i]);
    }
    remove_dir(dir);
}

static void
test_kv_chunk_flipped_sst_byte_detected(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct flip_set f;
    flip_setup(env, dir, 5, &f);
    flip_marker(dir, ".sst", 5, 200);

    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    expect_one_bad(kv, &f, &f.victim);

    /* A compaction must read the damaged block to drop it, fails, and
     * stops the database: that is an error, never a silent success, and
     * the handle refuses writes from then on. */
    struct cfr_err err;
    assert_int_equal(cfr_kv_chunk_delete(kv, f.victim.id, &err), 0);
    int rc = cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err);
    print_message("compaction over the bad block: %s\n", err.msg);
    assert_int_equal(rc, CFR_ECORRUPT);
    assert_true(cfr_kv_failed(kv));
    assert_int_equal(cfr_kv_chunk_put(kv, f.victim.id, f.victim.data,
                                      f.victim.len, NULL, &err),
                     CFR_EIO);
    get_equal(kv, &f.big[0]);

    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    flip_fini(&f);
    remove_dir(dir);
}

static void
test_kv_chunk_checksum_mismatch_detected(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    struct chunk a;
    struct chunk c;
    chunk_make(&a, 9000, 11, 0);
    chunk_make(&c, 9000, 11, 1);
    put_ok(kv, &a);
    put_ok(kv, &c);
    /* Bytes RocksDB stores faithfully but that are not the ones indexed:
     * only our own checksum can tell. Same length, one byte off. */
    a.data[4000] ^= 0x80;
    assert_int_equal(
        cfr_kv_put(kv, CF_CHUNKS, a.id, CFR_ID_LEN, a.data, a.len, &err), 0);
    a.data[4000] ^= 0x80;
    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    char hex[2 * CFR_ID_LEN + 1];
    assert_int_equal(cfr_kv_chunk_get(kv, a.id, &b, &err), CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "checksum mismatch"));
    assert_non_null(strstr(err.msg, cfr_hex_encode(a.id, CFR_ID_LEN, hex)));
    /* A truncated value is caught by the size. */
    assert_int_equal(
        cfr_kv_put(kv, CF_CHUNKS, c.id, CFR_ID_LEN, c.data, 10, &err), 0);
    assert_int_equal(cfr_kv_chunk_get(kv, c.id, &b, &err), CFR_ECORRUPT);

    struct scrub_log log = {0};
    struct cfr_kv_scrub_stats st;
    assert_int_equal(cfr_kv_scrub(kv, scrub_cb, &log, &st, &err), 0);
    assert_int_equal(st.checked, 2);
    assert_int_equal(st.bad, 2);
    assert_true(scrub_reported(&log, a.id));
    assert_true(scrub_reported(&log, c.id));

    /* Data gone from under its index is reported, not skipped. */
    assert_int_equal(cfr_kv_delete(kv, CF_CHUNKS, a.id, CFR_ID_LEN, &err), 0);
    assert_int_equal(cfr_kv_chunk_get(kv, a.id, &b, &err), CFR_ECORRUPT);
    assert_non_null(strstr(err.msg, "missing"));

    cfr_buf_fini(&b);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    chunk_fini(&a);
    chunk_fini(&c);
    remove_dir(dir);
}

static void
test_kv_delete_compact_removes_bytes(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    /* Victims share their blob file and table with survivors, so both the
     * all-garbage and the partly-garbage paths are needed. */
    enum { N = 8 };
    struct chunk c[N];
    for (unsigned i = 0; i < N; i++) {
        chunk_make(&c[i], i < 5 ? 20000 + i : 700 + i, 6, i);
        put_ok(kv, &c[i]);
    }
    assert_int_equal(cfr_kv_flush(kv, &err), 0);
    const unsigned victims[2] = {1, 6}; /* one blob, one inline */
    char mk[24];
    for (unsigned v = 0; v < 2; v++) {
        size_t ml = marker(6, victims[v], mk);
        assert_true(files_with(dir, NULL, mk, ml, NULL, 0, NULL) >= 1);
        assert_int_equal(cfr_kv_chunk_delete(kv, c[victims[v]].id, &err), 0);
    }
    assert_int_equal(cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err), 0);
    assert_int_equal(cfr_kv_compact(kv, CF_INDEX, NULL, 0, NULL, 0, &err), 0);

    for (unsigned v = 0; v < 2; v++) {
        size_t ml = marker(6, victims[v], mk);
        assert_int_equal(files_with(dir, NULL, mk, ml, NULL, 0, NULL), 0);
    }
    for (unsigned i = 0; i < N; i++) {
        if (i == victims[0] || i == victims[1]) {
            continue;
        }
        size_t ml = marker(6, i, mk);
        assert_true(files_with(dir, NULL, mk, ml, NULL, 0, NULL) >= 1);
        get_equal(kv, &c[i]);
    }
    uint64_t bg = 1;
    assert_int_equal(cfr_kv_property_u64(
                         kv, CF_CHUNKS, "rocksdb.background-errors", &bg, &err),
                     0);
    assert_int_equal(bg, 0);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    for (unsigned i = 0; i < N; i++) {
        chunk_fini(&c[i]);
    }
    remove_dir(dir);
}

static void
test_kv_concurrent_writers_group_commit(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    enum { THREADS = 4, PER = 200, LEN = 2048 };
    double t1 = put_parallel(kv, 7, PER, LEN, 1, NULL);
    double t4 = put_parallel(kv, 8, THREADS * PER, LEN, THREADS, NULL);
    print_message("synced chunk puts: 1 thread %.0f/s, %d threads %.0f/s\n",
                  PER / t1, THREADS, THREADS * PER / t4);

    /* Everything landed: both families count every put, and each chunk
     * reads back. */
    struct cfr_err err;
    uint64_t n = 0;
    assert_int_equal(cfr_kv_property_u64(kv, CF_INDEX,
                                         "rocksdb.num-entries-active-mem-table",
                                         &n, &err),
                     0);
    assert_int_equal(n, PER + THREADS * PER);
    assert_int_equal(cfr_kv_property_u64(kv, CF_CHUNKS,
                                         "rocksdb.num-entries-active-mem-table",
                                         &n, &err),
                     0);
    assert_int_equal(n, PER + THREADS * PER);
    static uint8_t ids[THREADS * PER][CFR_ID_LEN];
    static bool missing[THREADS * PER];
    uint8_t buf[LEN];
    for (unsigned i = 0; i < THREADS * PER; i++) {
        fill_chunk(buf, LEN, 8, i);
        cfr_id_plain(buf, LEN, ids[i]);
    }
    size_t n_missing = 1;
    assert_int_equal(cfr_kv_chunk_has_many(kv, THREADS * PER, ids, missing,
                                           &n_missing, &err),
                     0);
    assert_int_equal(n_missing, 0);
    struct chunk probe;
    chunk_make(&probe, LEN, 8, 777);
    get_equal(kv, &probe);
    chunk_fini(&probe);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

static void
test_kv_unknown_cf_refused_and_env_shared(void **state)
{
    (void)state;
    char d1[256];
    char d2[256];
    make_dir(d1, sizeof(d1));
    make_dir(d2, sizeof(d2));
    struct cfr_kv_env *env = env_ok();
    struct cfr_err err;
    static const char *const ab[] = {"alpha", "beta"};
    static const char *const a[] = {"alpha"};
    static const char *const bac[] = {"beta", "alpha", "gamma"};

    struct cfr_kv *kv = open_ok(env, d1, ab, 2, NULL);
    assert_int_equal(cfr_kv_put(kv, 1, "k", 1, "B", 1, &err), 0);
    cfr_kv_close(kv);
    assert_null(cfr_kv_open(env, d1, a, 1, NULL, &err));
    assert_int_equal(err.code, CFR_EVERSION);
    assert_non_null(strstr(err.msg, "'beta'"));
    assert_int_equal(cfr_kv_env_open_count(env), 0);

    /* Another order, plus a new family: names, not positions, matter. */
    struct cfr_kv *kv1 = open_ok(env, d1, bac, 3, NULL);
    struct cfr_buf v;
    cfr_buf_init(&v, 16);
    assert_int_equal(cfr_kv_get(kv1, 0, "k", 1, &v, &err), 0);
    assert_memory_equal(v.data, "B", 1);
    assert_int_equal(cfr_kv_get(kv1, 1, "k", 1, &v, &err), CFR_ENOTFOUND);

    /* Two tenants on one env: both counted, both bounded, one cache. */
    struct cfr_kv_opts small = {.write_buffer_bytes = 1u << 20,
                                .max_write_buffers = 3};
    struct cfr_kv *kv2 = open_ok(env, d2, chunk_cfs, 3, &small);
    assert_int_equal(cfr_kv_env_open_count(env), 2);
    assert_int_equal(cfr_kv_env_memtable_bound(env),
                     (size_t)4 * 2 * CFR_KV_DEFAULT_WRITE_BUFFER +
                         (size_t)4 * 3 * (1u << 20));
    size_t before = cfr_kv_env_cache_usage(env);
    struct chunk c;
    chunk_make(&c, 30000, 9, 0);
    put_ok(kv2, &c);
    assert_int_equal(cfr_kv_put(kv1, 2, "g", 1, "G", 1, &err), 0);
    assert_int_equal(cfr_kv_flush(kv1, &err), 0);
    assert_int_equal(cfr_kv_flush(kv2, &err), 0);
    assert_int_equal(cfr_kv_get(kv1, 2, "g", 1, &v, &err), 0);
    get_equal(kv2, &c);
    /* The blob just read and both tables' blocks now sit in the one cache. */
    assert_true(cfr_kv_env_cache_usage(env) >= before + c.len);
    cfr_kv_close(kv1);
    assert_int_equal(cfr_kv_env_open_count(env), 1);
    assert_int_equal(cfr_kv_env_memtable_bound(env),
                     (size_t)4 * 3 * (1u << 20));
    cfr_kv_close(kv2);
    assert_int_equal(cfr_kv_env_memtable_bound(env), 0);
    cfr_buf_fini(&v);
    chunk_fini(&c);
    cfr_kv_env_free(env);
    remove_dir(d1);
    remove_dir(d2);
}

static void
test_kv_open_rejects_bad_arguments(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_err err;
    static const char *const dup[] = {"x", "x"};
    static const char *const dflt[] = {"default"};
    static const char *const plain[] = {"x"};
    assert_null(cfr_kv_open(env, dir, dup, 2, NULL, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    assert_null(cfr_kv_open(env, dir, dflt, 1, NULL, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    assert_null(cfr_kv_open(env, dir, plain, 0, NULL, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    struct cfr_kv_opts bad = {.max_write_buffers = 1};
    assert_null(cfr_kv_open(env, dir, plain, 1, &bad, &err));
    assert_int_equal(err.code, CFR_EINVAL);

    /* A regular file where the directory should be: the OS refuses. */
    char file[300];
    snprintf(file, sizeof(file), "%s/plainfile", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_null(cfr_kv_open(env, file, plain, 1, NULL, &err));
    assert_int_equal(err.code, CFR_EIO);

    /* Chunk calls need the chunk families. */
    struct cfr_kv *kv = open_ok(env, dir, plain, 1, NULL);
    uint8_t id[CFR_ID_LEN] = {0};
    assert_int_equal(cfr_kv_chunk_put(kv, id, "x", 1, NULL, &err), CFR_EINVAL);
    assert_int_equal(cfr_kv_put(kv, 0, "k", 1, "v", 1, &err), 0);
    cfr_kv_close(kv);

    /* Two handles on one directory: RocksDB's lock refuses the second. */
    kv = open_ok(env, dir, plain, 1, NULL);
    assert_null(cfr_kv_open(env, dir, plain, 1, NULL, &err));
    assert_int_equal(err.code, CFR_EIO);
    assert_non_null(strstr(err.msg, "lock"));
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    remove_dir(dir);
}

static void
test_kv_write_error_fails_handle(void **state)
{
    (void)state;
    char dir[256];
    make_dir(dir, sizeof(dir));
    struct cfr_kv_env *env = env_ok();
    struct cfr_kv *kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    struct cfr_err err;
    struct chunk before;
    struct chunk huge;
    struct chunk after;
    chunk_make(&before, 5000, 10, 0);
    chunk_make(&huge, 3u << 20, 10, 1);
    chunk_make(&after, 100, 10, 2);
    put_ok(kv, &before);

    /* A file-size limit makes the WAL append fail with EFBIG: a real
     * write error from the kernel, no root needed. Ignore SIGXFSZ so the
     * process sees the error instead of dying. */
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = old;
    lim.rlim_cur = 1u << 20;
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = cfr_kv_chunk_put(kv, huge.id, huge.data, huge.len, NULL, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_sig);
    print_message("write error: %s\n", err.msg);
    assert_int_equal(rc, CFR_EIO);
    assert_non_null(strstr(err.msg, "IO error"));
    assert_true(cfr_kv_failed(kv));

    /* The disk is fine again, but the handle stays failed: no retry. */
    rc = cfr_kv_chunk_put(kv, after.id, after.data, after.len, NULL, &err);
    assert_int_equal(rc, CFR_EIO);
    assert_non_null(strstr(err.msg, "refused until reopened"));
    assert_int_equal(cfr_kv_put(kv, CF_REFS, "r", 1, "v", 1, &err), CFR_EIO);
    assert_int_equal(cfr_kv_chunk_delete(kv, before.id, &err), CFR_EIO);
    assert_int_equal(cfr_kv_flush(kv, &err), CFR_EIO);
    assert_int_equal(cfr_kv_compact(kv, CF_CHUNKS, NULL, 0, NULL, 0, &err),
                     CFR_EIO);
    /* Reads still serve what was acknowledged. */
    get_equal(kv, &before);
    cfr_kv_close(kv);

    /* A new open is a new start; nothing acknowledged was lost. */
    kv = open_ok(env, dir, chunk_cfs, 3, NULL);
    assert_false(cfr_kv_failed(kv));
    get_equal(kv, &before);
    struct cfr_buf b;
    cfr_buf_init(&b, 4u << 20);
    rc = cfr_kv_chunk_get(kv, huge.id, &b, &err);
    assert_true(rc == CFR_ENOTFOUND || rc == 0);
    if (rc == 0) {
        assert_memory_equal(b.data, huge.data, huge.len);
    }
    cfr_buf_fini(&b);
    put_ok(kv, &after);
    get_equal(kv, &after);
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    chunk_fini(&before);
    chunk_fini(&huge);
    chunk_fini(&after);
    remove_dir(dir);
}

int
main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--kv-crash-child") == 0) {
        return crash_child(argv[2], argv[3]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_roundtrip_across_cfs_and_reopen),
        cmocka_unit_test(test_kv_iterate_range_and_prefix),
        cmocka_unit_test(test_kv_chunk_put_durable_across_reopen),
        cmocka_unit_test(test_kv_chunk_survives_sigkill),
        cmocka_unit_test(test_kv_chunk_put_idempotent_never_overwrites),
        cmocka_unit_test(test_kv_chunk_put_many_one_batch),
        cmocka_unit_test(test_kv_chunk_has_many_4096),
        cmocka_unit_test(test_kv_chunk_flipped_blob_byte_detected),
        cmocka_unit_test(test_kv_chunk_bad_blob_survives_background_compaction),
        cmocka_unit_test(test_kv_chunk_flipped_sst_byte_detected),
        cmocka_unit_test(test_kv_chunk_repair),
        cmocka_unit_test(test_kv_chunk_checksum_mismatch_detected),
        cmocka_unit_test(test_kv_delete_compact_removes_bytes),
        cmocka_unit_test(test_kv_concurrent_writers_group_commit),
        cmocka_unit_test(test_kv_unknown_cf_refused_and_env_shared),
        cmocka_unit_test(test_kv_open_rejects_bad_arguments),
        cmocka_unit_test(test_kv_write_error_fails_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
