/*
 * kv.c - the vault's storage layer over the RocksDB 7.8 C API.
 *
 * Invariants:
 *  1. Only this file includes <rocksdb/c.h>; every RocksDB string and value
 *     it receives is released with rocksdb_free (or the matching destroy)
 *     on every path, and every error string is classified by its prefix.
 *  2. Once a write, flush or compaction reports an I/O error (or a
 *     background error that stopped the database), kv->failed is set and
 *     never cleared: every later write returns CFR_EIO before it reaches
 *     RocksDB (fsyncgate: a retried fsync may "succeed" for data the kernel
 *     already dropped). Only a new open clears it.
 *  3. A chunk and its index record are written and deleted in one batch, so
 *     the chunk family holds a key exactly when the index does.
 *  4. A chunk ID is never overwritten: the check for an existing record and
 *     the write happen under the ID's stripe lock. The one exception is
 *     cfr_kv_chunk_repair, under the same lock, which replaces a value that
 *     fails its index record with one that passes it: the index record is
 *     never rewritten, so what a chunk ID names never changes.
 *  5. Every value handed out was read under RocksDB's checksums
 *     (verify_checksums stays on); chunk values also under our BLAKE2b-256.
 *  6. The env outlives every database opened on it (asserted at free).
 *  7. No background job reads a blob's bytes: blob GC is on only inside
 *     cfr_kv_compact, and automatic compactions of that family are off
 *     for exactly that window. A damaged blob is therefore met only by a
 *     read (an error for that chunk alone), a scrub, or a cfr_kv_compact
 *     whose range still holds it live (the handle fails, see the doc).
 *
 * State of a handle:
 *
 *     cfr_kv_open --> OPEN --(I/O error or DB stop on write/flush/
 *                      |      compact: enter_failed)--------------> FAILED
 *                      |                                             |
 *                      +------------------ cfr_kv_close -------------+
 *
 * FAILED still serves reads; writes return CFR_EIO without touching disk.
 */
#include "kv.h"

#include <errno.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h" /* cfr_log: kv.failed, kv.open */
#include "mem.h" /* cfr_calloc, cfr_free, cfr_strdup */

/* Index record: version, BLAKE2b-256 of the ciphertext, LE64 size. */
#define IDX_VERSION 1
#define IDX_LEN     (1 + CFR_ID_LEN + 8)

/* Chunk puts and deletes of one ID serialise on one of these locks. */
#define STRIPES 64

/* RocksDB enum values the C header leaves as plain ints. */
#define CHECKSUM_XXH3         4
#define BOTTOMMOST_FORCE      2
#define WAL_POINT_IN_TIME     2
#define INFO_LOG_HEADER       5
#define GC_AGE_CUTOFF_DEFAULT 0.25

/* Keys per RocksDB multi-get call, to bound the scratch arrays. */
#define MULTI_SLICE 1024

struct cfr_kv_env {
    rocksdb_cache_t *cache;
    pthread_mutex_t lock; /* guards the two counters */
    size_t open_count;
    size_t memtable_bound;
};

struct cfr_kv {
    struct cfr_kv_env *env;
    char *dir;
    rocksdb_t *db;
    size_t ncf;
    char *cf_names[CFR_KV_CF_MAX];
    rocksdb_column_family_handle_t *cf[CFR_KV_CF_MAX + 1]; /* [ncf]=default */
    bool cf_blob[CFR_KV_CF_MAX];
    int chunks_cf; /* index of CFR_KV_CF_CHUNKS, or -1 */
    int index_cf;  /* index of CFR_KV_CF_CHUNK_INDEX, or -1 */
    rocksdb_writeoptions_t *wo_sync;
    rocksdb_writeoptions_t *wo_nosync;
    rocksdb_readoptions_t *ro;
    size_t memtable_bound;

    atomic_bool failed;
    pthread_mutex_t fail_lock; /* guards fail_msg */
    char fail_msg[CFR_ERR_MSG_MAX];

    pthread_mutex_t compact_lock; /* one compaction recipe at a time */
    pthread_mutex_t stripe[STRIPES];
};

struct cfr_kv_batch {
    struct cfr_kv *kv;
    rocksdb_writebatch_t *wb;
    size_t bytes; /* keys and values queued, for CFR_KV_BATCH_MAX */
    size_t count;
};

struct cfr_kv_iter {
    struct cfr_kv *kv;
    rocksdb_readoptions_t *ro;
    rocksdb_iterator_t *it;
    uint8_t *lo; /* owned: RocksDB keeps only a pointer to the bounds */
    size_t lo_len;
    uint8_t *hi;
    size_t hi_len;
    bool started;
};

/* ---- errors ------------------------------------------------------------ */

static int
classify(const char *msg)
{
    if (strncmp(msg, "Corruption:", 11) == 0) {
        return CFR_ECORRUPT;
    }
    if (strncmp(msg, "Invalid argument:", 17) == 0) {
        return CFR_EINVAL;
    }
    if (strncmp(msg, "Not found:", 10) == 0) {
        return CFR_ENOTFOUND;
    }
    /* "IO error:" and everything else RocksDB can say about the disk
     * (Busy, TimedOut, Incomplete, ...) is the operating system's failure
     * as far as a caller can act on it. */
    return CFR_EIO;
}

/* Takes *rerrp (a RocksDB error string), records it in err, frees it. */
static int
rerr(struct cfr_kv *kv, char **rerrp, struct cfr_err *err, const char *what)
{
    int code = classify(*rerrp);
    CFR_ERR(err, code, "kv %s: %s: %s", kv != NULL ? kv->dir : "-", what,
            *rerrp);
    rocksdb_free(*rerrp);
    *rerrp = NULL;
    return code;
}

static void
enter_failed(struct cfr_kv *kv, const char *why)
{
    pthread_mutex_lock(&kv->fail_lock);
    if (!atomic_load(&kv->failed)) {
        snprintf(kv->fail_msg, sizeof(kv->fail_msg), "%s", why);
        atomic_store(&kv->failed, true);
        char qd[128];
        char qw[CFR_ERR_MSG_MAX + 8];
        cfr_log(CFR_LOG_ERROR, "kv.failed", "dir=%s error=%s",
                cfr_log_quote(kv->dir, qd, sizeof(qd)),
                cfr_log_quote(why, qw, sizeof(qw)));
    }
    pthread_mutex_unlock(&kv->fail_lock);
}

/*
 * As rerr, for the write path: an I/O error makes the handle fail for good
 * (invariant 2). Corruption reported on a write means a background job read
 * bad data and RocksDB stopped taking writes until a reopen; the handle
 * fails too, so later writes get one clear message instead of RocksDB's.
 */
static int
rerr_write(struct cfr_kv *kv, char **rerrp, struct cfr_err *err,
           const char *what)
{
    /* Only these two: "Busy", "Aborted" and the like describe a refused
     * operation, not lost data, and do not fail the handle. */
    bool fatal = strncmp(*rerrp, "IO error:", 9) == 0 ||
                 strncmp(*rerrp, "Corruption:", 11) == 0;
    int code = rerr(kv, rerrp, err, what);
    if (fatal) {
        enter_failed(kv, err != NULL ? err->msg : what);
    }
    return code;
}

static int
check_writable(struct cfr_kv *kv, struct cfr_err *err)
{
    if (!atomic_load(&kv->failed)) {
        return 0;
    }
    pthread_mutex_lock(&kv->fail_lock);
    CFR_ERR(err, CFR_EIO,
            "kv %s: failed by an earlier write error, "
            "writes refused until reopened (%s)",
            kv->dir, kv->fail_msg);
    pthread_mutex_unlock(&kv->fail_lock);
    return CFR_EIO;
}

static int
check_cf(struct cfr_kv *kv, unsigned cf, struct cfr_err *err)
{
    if (cf >= kv->ncf) {
        return CFR_ERR(err, CFR_EINVAL, "kv %s: no column family %u", kv->dir,
                       cf);
    }
    return 0;
}

static int
check_key(struct cfr_kv *kv, size_t key_len, struct cfr_err *err)
{
    if (key_len == 0 || key_len > CFR_KV_KEY_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "kv %s: key length %zu out of range",
                       kv->dir, key_len);
    }
    return 0;
}

static int
check_chunks(struct cfr_kv *kv, struct cfr_err *err)
{
    if (kv->chunks_cf < 0 || kv->index_cf < 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "kv %s: opened without the %s and %s families", kv->dir,
                       CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX);
    }
    return 0;
}

static void
hex_id(const uint8_t id[CFR_ID_LEN], char out[2 * CFR_ID_LEN + 1])
{
    cfr_hex_encode(id, CFR_ID_LEN, out);
}

/* ---- env --------------------------------------------------------------- */

struct cfr_kv_env *
cfr_kv_env_new(size_t cache_bytes, struct cfr_err *err)
{
    struct cfr_kv_env *env = cfr_calloc(1, sizeof(*env));
    if (env == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "kv: out of memory");
        return NULL;
    }
    /* One LRU for blocks and blobs: a tenant's hot index blocks and a
     * restore's blobs compete fairly, and the total is one number. */
    env->cache = rocksdb_cache_create_lru(cache_bytes);
    pthread_mutex_init(&env->lock, NULL);
    return env;
}

void
cfr_kv_env_free(struct cfr_kv_env *env)
{
    if (env == NULL) {
        return;
    }
    CFR_ASSERT(env->open_count == 0);
    rocksdb_cache_destroy(env->cache);
    pthread_mutex_destroy(&env->lock);
    cfr_free(env);
}

size_t
cfr_kv_env_cache_usage(struct cfr_kv_env *env)
{
    return rocksdb_cache_get_usage(env->cache);
}

size_t
cfr_kv_env_open_count(struct cfr_kv_env *env)
{
    pthread_mutex_lock(&env->lock);
    size_t n = env->open_count;
    pthread_mutex_unlock(&env->lock);
    return n;
}

size_t
cfr_kv_env_memtable_bound(struct cfr_kv_env *env)
{
    pthread_mutex_lock(&env->lock);
    size_t n = env->memtable_bound;
    pthread_mutex_unlock(&env->lock);
    return n;
}

/* ---- open and close ---------------------------------------------------- */

struct tuning {
    size_t wb;
    int nwb;
    size_t min_blob;
    uint32_t blob_cfs;
    int max_open;
};

static int
tuning_from(const struct cfr_kv_opts *o, struct tuning *t, struct cfr_err *err)
{
    t->wb = CFR_KV_DEFAULT_WRITE_BUFFER;
    t->nwb = CFR_KV_DEFAULT_WRITE_BUFFERS;
    t->min_blob = CFR_KV_DEFAULT_MIN_BLOB;
    t->blob_cfs = 0;
    t->max_open = CFR_KV_DEFAULT_MAX_OPEN;
    if (o == NULL) {
        return 0;
    }
    if (o->write_buffer_bytes != 0) {
        t->wb = o->write_buffer_bytes;
    }
    if (o->max_write_buffers != 0) {
        t->nwb = o->max_write_buffers;
    }
    if (o->min_blob_bytes != 0) {
        t->min_blob = o->min_blob_bytes;
    }
    if (o->max_open_files != 0) {
        t->max_open = o->max_open_files;
    }
    t->blob_cfs = o->blob_cfs;
    if (t->wb < (64u << 10) || t->wb > (1u << 30) || t->nwb < 2 ||
        t->nwb > 64 || t->min_blob > CFR_KV_VALUE_MAX || t->max_open < -1) {
        return CFR_ERR(err, CFR_EINVAL,
                       "kv: write buffer %zu x %d or max open files %d "
                       "out of range",
                       t->wb, t->nwb, t->max_open);
    }
    return 0;
}

static int
check_names(const char *const names[], size_t n, struct cfr_err *err)
{
    if (n == 0 || n > CFR_KV_CF_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "kv: %zu column families, need 1 to %d",
                       n, CFR_KV_CF_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0' ||
            strcmp(names[i], "default") == 0) {
            return CFR_ERR(err, CFR_EINVAL,
                           "kv: column family %zu: empty or reserved name", i);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                return CFR_ERR(err, CFR_EINVAL,
                               "kv: column family %s named twice", names[i]);
            }
        }
    }
    return 0;
}

/*
 * Options every family shares. Values are ciphertext, digests and IDs:
 * compression would spend CPU to save nothing, so it is off everywhere.
 */
static rocksdb_options_t *
base_options(struct cfr_kv_env *env, const struct tuning *t)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_create_missing_column_families(o, 1);
    /* Defaults, pinned: paranoid checks stop the DB on any inconsistency
     * found at open or in the background rather than serving around it. */
    rocksdb_options_set_paranoid_checks(o, 1);
    /* A recycled WAL file holds old records past the new tail; recovery
     * can mistake them for live ones, and they keep deleted data on disk. */
    rocksdb_options_set_recycle_log_file_num(o, 0);
    /* A crash tears at most the unsynced tail; every synced record before
     * it is replayed, and an acknowledgement is only sent after a sync. */
    rocksdb_options_set_wal_recovery_mode(o, WAL_POINT_IN_TIME);
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    rocksdb_options_set_write_buffer_size(o, t->wb);
    rocksdb_options_set_max_write_buffer_number(o, t->nwb);
    /* The budget of the whole database, so a busy family flushes before
     * the sum of all of them reaches the per-family bound times n. */
    size_t db_wb = 0;
    if (!cfr_mul_ok(t->wb, (size_t)t->nwb, &db_wb)) {
        db_wb = SIZE_MAX;
    }
    rocksdb_options_set_db_write_buffer_size(o, db_wb);
    /* Old WALs pin memtables of quiet families; flushing them bounds how
     * long deleted bytes live in a log. */
    rocksdb_options_set_max_total_wal_size(o, 4 * (uint64_t)db_wb);
    rocksdb_options_set_max_open_files(o, t->max_open);
    rocksdb_options_set_max_background_jobs(o, 2);
    /* Only the header (options, at open) goes to RocksDB's own LOG file.
     * That file sits on the data disk, and once one of its writes fails
     * (a full disk) the next line logged trips an assertion in RocksDB
     * 7.8's file writer (Debian builds it with assertions on): the vault
     * died by SIGABRT, from a flush thread or from close, instead of
     * stopping cleanly. Errors that matter reach our own log through the
     * failed calls (kv.failed); "rocksdb.stats" still gives the figures. */
    rocksdb_options_set_info_log_level(o, INFO_LOG_HEADER);
    /* Thousands of tenants: keep each one's info log small. */
    rocksdb_options_set_keep_log_file_num(o, 3);
    rocksdb_options_set_max_log_file_size(o, 4u << 20);

    rocksdb_block_based_table_options_t *bt =
        rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(bt, env->cache);
    /* Index and filter blocks in the shared cache: otherwise every open
     * table's index lives outside any budget. */
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(bt, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(bt,
                                                                            1);
    rocksdb_block_based_options_set_filter_policy(
        bt, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_checksum(bt, CHECKSUM_XXH3);
    rocksdb_options_set_block_based_table_factory(o, bt);
    rocksdb_block_based_options_destroy(bt);
    return o;
}

static void
set_blob_options(rocksdb_options_t *o, struct cfr_kv_env *env,
                 const struct tuning *t)
{
    rocksdb_options_set_enable_blob_files(o, 1);
    rocksdb_options_set_min_blob_size(o, t->min_blob);
    rocksdb_options_set_blob_file_size(o, 64u << 20);
    /* Off outside cfr_kv_compact: blob GC is the only background job that
     * reads a blob's bytes, and a compaction that meets one bad blob stops
     * the whole database (paranoid checks). With GC on, a single flipped
     * byte would stop every write of the tenant at a moment no one chose,
     * and again after each restart, since the same compaction is picked
     * anew. Chunks are never overwritten, so blob garbage comes only from
     * deletes, and every delete path ends in cfr_kv_compact, which turns
     * GC on for its own compaction. */
    rocksdb_options_set_enable_blob_gc(o, 0);
    rocksdb_options_set_blob_gc_age_cutoff(o, GC_AGE_CUTOFF_DEFAULT);
    /* Ciphertext does not compress. */
    rocksdb_options_set_blob_compression_type(o, rocksdb_no_compression);
    rocksdb_options_set_blob_cache(o, env->cache);
}

static bool
file_exists(const char *dir, const char *name)
{
    char path[4096];
    int w = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= sizeof(path)) {
        return false;
    }
    struct stat st;
    return stat(path, &st) == 0;
}

/*
 * Refuses a database holding families the caller does not know: RocksDB
 * would refuse too, but with a message that names no cause.
 */
static int
check_disk_families(rocksdb_options_t *o, const char *dir,
                    const char *const names[], size_t n, struct cfr_err *err)
{
    if (!file_exists(dir, "CURRENT")) {
        return 0; /* a new database */
    }
    size_t len = 0;
    char *e = NULL;
    int rc = 0;
    char **list = rocksdb_list_column_families(o, dir, &len, &e);
    if (e != NULL) {
        rc = rerr(NULL, &e, err, "listing column families");
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        if (strcmp(list[i], "default") == 0) {
            continue;
        }
        bool known = false;
        for (size_t j = 0; j < n && !known; j++) {
            known = strcmp(list[i], names[j]) == 0;
        }
        if (!known) {
            rc = CFR_ERR(err, CFR_EVERSION,
                         "kv %s: column family '%s' on disk is unknown to "
                         "this build; refusing to open without it",
                         dir, list[i]);
            goto out;
        }
    }
out:
    /* Allocated even on error (seen under LSan). */
    if (list != NULL) {
        rocksdb_list_column_families_destroy(list, len);
    }
    return rc;
}

static void
kv_release(struct cfr_kv *kv)
{
    for (size_t i = 0; i <= kv->ncf; i++) {
        if (kv->cf[i] != NULL) {
            rocksdb_column_family_handle_destroy(kv->cf[i]);
        }
    }
    if (kv->db != NULL) {
        rocksdb_close(kv->db);
    }
    if (kv->wo_sync != NULL) {
        rocksdb_writeoptions_destroy(kv->wo_sync);
    }
    if (kv->wo_nosync != NULL) {
        rocksdb_writeoptions_destroy(kv->wo_nosync);
    }
    if (kv->ro != NULL) {
        rocksdb_readoptions_destroy(kv->ro);
    }
    for (size_t i = 0; i < CFR_KV_CF_MAX; i++) {
        cfr_free(kv->cf_names[i]);
    }
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_destroy(&kv->stripe[i]);
    }
    pthread_mutex_destroy(&kv->fail_lock);
    pthread_mutex_destroy(&kv->compact_lock);
    cfr_free(kv->dir);
    cfr_free(kv);
}

struct cfr_kv *
cfr_kv_open(struct cfr_kv_env *env, const char *dir,
            const char *const cf_names[], size_t n,
            const struct cfr_kv_opts *opts, struct cfr_err *err)
{
    struct cfr_kv *kv = NULL;
    rocksdb_options_t *base = NULL;
    rocksdb_options_t *cfo[CFR_KV_CF_MAX + 1] = {0};
    const char *names[CFR_KV_CF_MAX + 1];
    struct tuning t;
    char *e = NULL;
    int rc;

    if ((rc = check_names(cf_names, n, err)) != 0 ||
        (rc = tuning_from(opts, &t, err)) != 0) {
        goto out;
    }
    kv = cfr_calloc(1, sizeof(*kv));
    if (kv == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", dir);
        goto out;
    }
    kv->env = env;
    kv->ncf = n;
    kv->chunks_cf = -1;
    kv->index_cf = -1;
    atomic_init(&kv->failed, false);
    pthread_mutex_init(&kv->fail_lock, NULL);
    pthread_mutex_init(&kv->compact_lock, NULL);
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&kv->stripe[i], NULL);
    }
    if ((kv->dir = cfr_strdup(dir)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", dir);
        goto out;
    }

    base = base_options(env, &t);
    if ((rc = check_disk_families(base, dir, cf_names, n, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        kv->cf_names[i] = cfr_strdup(cf_names[i]);
        if (kv->cf_names[i] == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", dir);
            goto out;
        }
        names[i] = kv->cf_names[i];
        cfo[i] = rocksdb_options_create_copy(base);
        if (strcmp(cf_names[i], CFR_KV_CF_CHUNKS) == 0) {
            kv->chunks_cf = (int)i;
        }
        if (strcmp(cf_names[i], CFR_KV_CF_CHUNK_INDEX) == 0) {
            kv->index_cf = (int)i;
        }
        kv->cf_blob[i] = (int)i == kv->chunks_cf ||
                         (i < 32 && (t.blob_cfs & (UINT32_C(1) << i)) != 0);
        if (kv->cf_blob[i]) {
            set_blob_options(cfo[i], env, &t);
        }
    }
    /* "default" always exists in RocksDB; it is opened, never used. */
    names[n] = "default";
    cfo[n] = rocksdb_options_create_copy(base);

    kv->db = rocksdb_open_column_families(base, dir, (int)(n + 1), names,
                                          (const rocksdb_options_t *const *)cfo,
                                          kv->cf, &e);
    if (e != NULL) {
        rc = rerr(kv, &e, err, "open");
        for (size_t i = 0; i <= n; i++) {
            kv->cf[i] = NULL; /* not set on failure */
        }
        kv->db = NULL;
        goto out;
    }
    kv->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(kv->wo_sync, 1);
    kv->wo_nosync = rocksdb_writeoptions_create();
    kv->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(kv->ro, 1);

    size_t per_cf = 0;
    if (!cfr_mul_ok(t.wb, (size_t)t.nwb, &per_cf) ||
        !cfr_mul_ok(per_cf, n + 1, &kv->memtable_bound)) {
        kv->memtable_bound = SIZE_MAX;
    }
    pthread_mutex_lock(&env->lock);
    env->open_count++;
    env->memtable_bound = env->memtable_bound > SIZE_MAX - kv->memtable_bound
                              ? SIZE_MAX
                              : env->memtable_bound + kv->memtable_bound;
    pthread_mutex_unlock(&env->lock);
    rc = 0;
out:
    for (size_t i = 0; i <= CFR_KV_CF_MAX; i++) {
        if (cfo[i] != NULL) {
            rocksdb_options_destroy(cfo[i]);
        }
    }
    if (base != NULL) {
        rocksdb_options_destroy(base);
    }
    if (rc != 0 && kv != NULL) {
        kv_release(kv);
        kv = NULL;
    }
    return kv;
}

void
cfr_kv_close(struct cfr_kv *kv)
{
    if (kv == NULL) {
        return;
    }
    struct cfr_kv_env *env = kv->env;
    size_t bound = kv->memtable_bound;
    kv_release(kv);
    pthread_mutex_lock(&env->lock);
    CFR_ASSERT(env->open_count > 0);
    env->open_count--;
    env->memtable_bound -=
        bound < env->memtable_bound ? bound : env->memtable_bound;
    pthread_mutex_unlock(&env->lock);
}

bool
cfr_kv_failed(struct cfr_kv *kv)
{
    return atomic_load(&kv->failed);
}

const char *
cfr_kv_dir(const struct cfr_kv *kv)
{
    return kv->dir;
}

/* ---- reads ------------------------------------------------------------- */

/* Copies a pinned value into out and destroys the pin. */
static int
take_pin(struct cfr_kv *kv, rocksdb_pinnableslice_t *pin, struct cfr_buf *out,
         struct cfr_err *err)
{
    size_t len = 0;
    const char *v = rocksdb_pinnableslice_value(pin, &len);
    cfr_buf_reset(out);
    int rc = cfr_buf_append(out, v, len, err);
    rocksdb_pinnableslice_destroy(pin);
    if (rc != 0 && err != NULL) {
        CFR_ERR(err, rc, "kv %s: value of %zu bytes does not fit (%s)", kv->dir,
                len, cfr_code_name(rc));
    }
    return rc;
}

static int
get_pinned(struct cfr_kv *kv, const rocksdb_readoptions_t *ro, int cf,
           const void *key, size_t key_len, rocksdb_pinnableslice_t **pin_r,
           struct cfr_err *err)
{
    char *e = NULL;
    *pin_r = rocksdb_get_pinned_cf(kv->db, ro, kv->cf[cf], key, key_len, &e);
    if (e != NULL) {
        if (*pin_r != NULL) {
            rocksdb_pinnableslice_destroy(*pin_r);
            *pin_r = NULL;
        }
        return rerr(kv, &e, err, "get");
    }
    return 0;
}

int
cfr_kv_get(struct cfr_kv *kv, unsigned cf, const void *key, size_t key_len,
           struct cfr_buf *val, struct cfr_err *err)
{
    rocksdb_pinnableslice_t *pin = NULL;
    int rc;
    if ((rc = check_cf(kv, cf, err)) != 0 ||
        (rc = check_key(kv, key_len, err)) != 0 ||
        (rc = get_pinned(kv, kv->ro, (int)cf, key, key_len, &pin, err)) != 0) {
        goto out;
    }
    if (pin == NULL) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "kv %s: key not found", kv->dir);
        goto out;
    }
    rc = take_pin(kv, pin, val, err);
out:
    return rc;
}

/*
 * One RocksDB batched multi-get over keys[0..n-1] of family cf; for each key
 * calls fn with its pin (owned by fn, NULL when absent) or its error.
 */
typedef int multi_fn(void *ctx, size_t i, rocksdb_pinnableslice_t *pin,
                     char **rerrp);

static int
multi_get(struct cfr_kv *kv, int cf, size_t n, const char *const keys[],
          const size_t lens[], multi_fn *fn, void *ctx, struct cfr_err *err)
{
    rocksdb_pinnableslice_t **pins = NULL;
    char **errs = NULL;
    int rc = 0;
    size_t slice = n < MULTI_SLICE ? n : MULTI_SLICE;
    if (n == 0) {
        goto out;
    }
    /* Arrays of pointers to opaque pins: sizeof(*pins) is meant. */
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    pins = cfr_calloc(slice, sizeof(*pins));
    errs = cfr_calloc(slice, sizeof(*errs));
    if (pins == NULL || errs == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
        goto out;
    }
    for (size_t at = 0; at < n; at += slice) {
        size_t m = n - at < slice ? n - at : slice;
        // NOLINTNEXTLINE(bugprone-sizeof-expression)
        memset(pins, 0, m * sizeof(*pins));
        memset(errs, 0, m * sizeof(*errs));
        rocksdb_batched_multi_get_cf(kv->db, kv->ro, kv->cf[cf], m, keys + at,
                                     lens + at, pins, errs, false);
        for (size_t i = 0; i < m; i++) {
            /* fn takes the pin and may take the error string; whatever is
             * left here is released so no path leaks. */
            int r = fn(ctx, at + i, pins[i], &errs[i]);
            if (errs[i] != NULL) {
                rocksdb_free(errs[i]);
                errs[i] = NULL;
            }
            if (r != 0 && rc == 0) {
                rc = r;
            }
        }
    }
out:
    cfr_free(pins);
    cfr_free(errs);
    return rc;
}

struct kv_multi_ctx {
    struct cfr_kv *kv;
    struct cfr_buf *vals;
    int *rcs;
    struct cfr_err *err;
    bool have_err;
};

static int
kv_multi_one(void *ctx, size_t i, rocksdb_pinnableslice_t *pin, char **rerrp)
{
    struct kv_multi_ctx *c = ctx;
    struct cfr_err one;
    cfr_err_clear(&one);
    if (*rerrp != NULL) {
        if (pin != NULL) {
            rocksdb_pinnableslice_destroy(pin);
        }
        c->rcs[i] = rerr(c->kv, rerrp, &one, "multi-get");
    } else if (pin == NULL) {
        c->rcs[i] = CFR_ENOTFOUND;
        cfr_buf_reset(&c->vals[i]);
        return 0;
    } else {
        c->rcs[i] = take_pin(c->kv, pin, &c->vals[i], &one);
    }
    if (c->rcs[i] != 0 && !c->have_err && c->err != NULL) {
        *c->err = one;
        c->have_err = true;
    }
    return 0;
}

int
cfr_kv_multi_get(struct cfr_kv *kv, unsigned cf, size_t n,
                 const void *const keys[], const size_t key_lens[],
                 struct cfr_buf vals[], int rcs[], struct cfr_err *err)
{
    int rc;
    if ((rc = check_cf(kv, cf, err)) != 0) {
        return rc;
    }
    if (n > CFR_KV_MULTI_MAX) {
        return CFR_ERR(err, CFR_ELIMIT, "kv %s: %zu keys in one multi-get",
                       kv->dir, n);
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_key(kv, key_lens[i], err)) != 0) {
            return rc;
        }
    }
    struct kv_multi_ctx c = {kv, vals, rcs, err, false};
    return multi_get(kv, (int)cf, n, (const char *const *)keys, key_lens,
                     kv_multi_one, &c, err);
}

/* ---- writes ------------------------------------------------------------ */

static int
write_batch(struct cfr_kv *kv, rocksdb_writebatch_t *wb, bool sync,
            struct cfr_err *err)
{
    char *e = NULL;
    int rc;
    if ((rc = check_writable(kv, err)) != 0) {
        return rc;
    }
    rocksdb_write(kv->db, sync ? kv->wo_sync : kv->wo_nosync, wb, &e);
    if (e != NULL) {
        return rerr_write(kv, &e, err, "write");
    }
    return 0;
}

struct cfr_kv_batch *
cfr_kv_batch_new(struct cfr_kv *kv, struct cfr_err *err)
{
    struct cfr_kv_batch *b = cfr_calloc(1, sizeof(*b));
    if (b == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
        return NULL;
    }
    b->kv = kv;
    b->wb = rocksdb_writebatch_create();
    return b;
}

void
cfr_kv_batch_free(struct cfr_kv_batch *b)
{
    if (b == NULL) {
        return;
    }
    rocksdb_writebatch_destroy(b->wb);
    cfr_free(b);
}

static int
batch_room(struct cfr_kv_batch *b, size_t key_len, size_t val_len,
           struct cfr_err *err)
{
    struct cfr_kv *kv = b->kv;
    int rc;
    if ((rc = check_key(kv, key_len, err)) != 0) {
        return rc;
    }
    if (val_len > CFR_KV_VALUE_MAX ||
        key_len + val_len > CFR_KV_BATCH_MAX - b->bytes) {
        return CFR_ERR(err, CFR_ELIMIT,
                       "kv %s: batch would exceed %u bytes (value %zu)",
                       kv->dir, CFR_KV_BATCH_MAX, val_len);
    }
    return 0;
}

int
cfr_kv_batch_put(struct cfr_kv_batch *b, unsigned cf, const void *key,
                 size_t key_len, const void *val, size_t val_len,
                 struct cfr_err *err)
{
    int rc;
    if ((rc = check_cf(b->kv, cf, err)) != 0 ||
        (rc = batch_room(b, key_len, val_len, err)) != 0) {
        return rc;
    }
    rocksdb_writebatch_put_cf(b->wb, b->kv->cf[cf], key, key_len, val, val_len);
    b->bytes += key_len + val_len;
    b->count++;
    return 0;
}

int
cfr_kv_batch_delete(struct cfr_kv_batch *b, unsigned cf, const void *key,
                    size_t key_len, struct cfr_err *err)
{
    int rc;
    if ((rc = check_cf(b->kv, cf, err)) != 0 ||
        (rc = batch_room(b, key_len, 0, err)) != 0) {
        return rc;
    }
    rocksdb_writebatch_delete_cf(b->wb, b->kv->cf[cf], key, key_len);
    b->bytes += key_len;
    b->count++;
    return 0;
}

size_t
cfr_kv_batch_count(const struct cfr_kv_batch *b)
{
    return b->count;
}

int
cfr_kv_batch_commit(struct cfr_kv_batch *b, bool sync, struct cfr_err *err)
{
    int rc = write_batch(b->kv, b->wb, sync, err);
    if (rc == 0) {
        rocksdb_writebatch_clear(b->wb);
        b->bytes = 0;
        b->count = 0;
    }
    return rc;
}

int
cfr_kv_put(struct cfr_kv *kv, unsigned cf, const void *key, size_t key_len,
           const void *val, size_t val_len, struct cfr_err *err)
{
    struct cfr_kv_batch *b = cfr_kv_batch_new(kv, err);
    int rc;
    if (b == NULL) {
        return CFR_ENOMEM;
    }
    if ((rc = cfr_kv_batch_put(b, cf, key, key_len, val, val_len, err)) == 0) {
        rc = cfr_kv_batch_commit(b, true, err);
    }
    cfr_kv_batch_free(b);
    return rc;
}

int
cfr_kv_delete(struct cfr_kv *kv, unsigned cf, const void *key, size_t key_len,
              struct cfr_err *err)
{
    struct cfr_kv_batch *b = cfr_kv_batch_new(kv, err);
    int rc;
    if (b == NULL) {
        return CFR_ENOMEM;
    }
    if ((rc = cfr_kv_batch_delete(b, cf, key, key_len, err)) == 0) {
        rc = cfr_kv_batch_commit(b, true, err);
    }
    cfr_kv_batch_free(b);
    return rc;
}

/* ---- iteration --------------------------------------------------------- */

static uint8_t *
dup_bytes(const void *p, size_t n)
{
    uint8_t *d = cfr_malloc(n == 0 ? 1 : n);
    if (d != NULL && n != 0) {
        memcpy(d, p, n);
    }
    return d;
}

void
cfr_kv_iter_free(struct cfr_kv_iter *it)
{
    if (it == NULL) {
        return;
    }
    /* The iterator before its read options, the bounds last: RocksDB
     * reads them until the iterator is gone. */
    if (it->it != NULL) {
        rocksdb_iter_destroy(it->it);
    }
    if (it->ro != NULL) {
        rocksdb_readoptions_destroy(it->ro);
    }
    cfr_free(it->lo);
    cfr_free(it->hi);
    cfr_free(it);
}

struct cfr_kv_iter *
cfr_kv_iter_new(struct cfr_kv *kv, unsigned cf, const void *lo, size_t lo_len,
                const void *hi, size_t hi_len, struct cfr_err *err)
{
    struct cfr_kv_iter *it = NULL;
    int rc;
    if ((rc = check_cf(kv, cf, err)) != 0) {
        goto out;
    }
    it = cfr_calloc(1, sizeof(*it));
    if (it == NULL ||
        (lo != NULL && (it->lo = dup_bytes(lo, lo_len)) == NULL) ||
        (hi != NULL && (it->hi = dup_bytes(hi, hi_len)) == NULL)) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
        goto out;
    }
    it->kv = kv;
    it->lo_len = lo_len;
    it->hi_len = hi_len;
    it->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(it->ro, 1);
    /* A long walk should not push hot blocks out of the shared cache. */
    rocksdb_readoptions_set_fill_cache(it->ro, 0);
    if (it->hi != NULL) {
        rocksdb_readoptions_set_iterate_upper_bound(
            it->ro, (const char *)it->hi, it->hi_len);
    }
    if (it->lo != NULL) {
        rocksdb_readoptions_set_iterate_lower_bound(
            it->ro, (const char *)it->lo, it->lo_len);
    }
    it->it = rocksdb_create_iterator_cf(kv->db, it->ro, kv->cf[cf]);
    if (it->lo != NULL) {
        rocksdb_iter_seek(it->it, (const char *)it->lo, it->lo_len);
    } else {
        rocksdb_iter_seek_to_first(it->it);
    }
    rc = 0;
out:
    if (rc != 0) {
        cfr_kv_iter_free(it);
        it = NULL;
    }
    return it;
}

struct cfr_kv_iter *
cfr_kv_iter_new_prefix(struct cfr_kv *kv, unsigned cf, const void *prefix,
                       size_t prefix_len, struct cfr_err *err)
{
    /* The least key greater than every key with the prefix: drop trailing
     * 0xff bytes and increment the last byte left. All 0xff: no bound. */
    uint8_t *hi = NULL;
    size_t hi_len = prefix_len;
    struct cfr_kv_iter *it = NULL;
    if (prefix_len > CFR_KV_KEY_MAX) {
        CFR_ERR(err, CFR_EINVAL, "kv %s: prefix too long", kv->dir);
        return NULL;
    }
    if (prefix_len > 0) {
        hi = dup_bytes(prefix, prefix_len);
        if (hi == NULL) {
            CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
            return NULL;
        }
        while (hi_len > 0 && hi[hi_len - 1] == 0xff) {
            hi_len--;
        }
        if (hi_len > 0) {
            hi[hi_len - 1]++;
        }
    }
    it = cfr_kv_iter_new(kv, cf, prefix_len > 0 ? prefix : NULL, prefix_len,
                         hi_len > 0 ? hi : NULL, hi_len, err);
    cfr_free(hi);
    return it;
}

int
cfr_kv_iter_next(struct cfr_kv_iter *it, bool *got_r, struct cfr_kv_entry *e_r,
                 struct cfr_err *err)
{
    char *e = NULL;
    *got_r = false;
    if (it->started && rocksdb_iter_valid(it->it)) {
        rocksdb_iter_next(it->it);
    }
    it->started = true;
    if (!rocksdb_iter_valid(it->it)) {
        /* Invalid is either the end or an error: only get_error tells. */
        rocksdb_iter_get_error(it->it, &e);
        if (e != NULL) {
            return rerr(it->kv, &e, err, "iterate");
        }
        return 0;
    }
    size_t kl = 0;
    size_t vl = 0;
    e_r->key = (const uint8_t *)rocksdb_iter_key(it->it, &kl);
    e_r->val = (const uint8_t *)rocksdb_iter_value(it->it, &vl);
    e_r->key_len = kl;
    e_r->val_len = vl;
    *got_r = true;
    return 0;
}

/* ---- maintenance ------------------------------------------------------- */

int
cfr_kv_property_u64(struct cfr_kv *kv, unsigned cf, const char *name,
                    uint64_t *val_r, struct cfr_err *err)
{
    int rc;
    if ((rc = check_cf(kv, cf, err)) != 0) {
        return rc;
    }
    if (rocksdb_property_int_cf(kv->db, kv->cf[cf], name, val_r) != 0) {
        return CFR_ERR(err, CFR_EINVAL, "kv %s: no integer property %s",
                       kv->dir, name);
    }
    return 0;
}

int
cfr_kv_property_str(struct cfr_kv *kv, unsigned cf, const char *name,
                    struct cfr_buf *out, struct cfr_err *err)
{
    int rc;
    if ((rc = check_cf(kv, cf, err)) != 0) {
        return rc;
    }
    char *v = rocksdb_property_value_cf(kv->db, kv->cf[cf], name);
    if (v == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "kv %s: no property %s", kv->dir, name);
    }
    cfr_buf_reset(out);
    rc = cfr_buf_append(out, v, strlen(v), err);
    rocksdb_free(v);
    return rc;
}

int
cfr_kv_flush(struct cfr_kv *kv, struct cfr_err *err)
{
    int rc;
    char *e = NULL;
    if ((rc = check_writable(kv, err)) != 0) {
        return rc;
    }
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    /* Every family, "default" included: a WAL is deleted only when no
     * family has unflushed data in it. */
    for (size_t i = 0; i <= kv->ncf && rc == 0; i++) {
        rocksdb_flush_cf(kv->db, fo, kv->cf[i], &e);
        if (e != NULL) {
            rc = rerr_write(kv, &e, err, "flush");
        }
    }
    rocksdb_flushoptions_destroy(fo);
    return rc;
}

/*
 * Switches a blob family between its normal state (automatic compactions
 * on, blob GC off) and the state of a cfr_kv_compact (the reverse, GC of
 * every blob file touched). One SetOptions call, so RocksDB, which reads a
 * family's options under its mutex when it picks a compaction, never picks
 * an automatic one with GC on: such a compaction could take an older file
 * without the newer one holding a tombstone, and relocate (read) the very
 * blob the caller deleted because it was damaged.
 */
static int
set_gc_window(struct cfr_kv *kv, unsigned cf, bool open_window,
              struct cfr_err *err)
{
    const char *keys[3] = {"disable_auto_compactions",
                           "enable_blob_garbage_collection",
                           "blob_garbage_collection_age_cutoff"};
    char cutoff[16];
    snprintf(cutoff, sizeof(cutoff), "%.2f",
             open_window ? 1.0 : GC_AGE_CUTOFF_DEFAULT);
    const char *vals[3] = {open_window ? "true" : "false",
                           open_window ? "true" : "false", cutoff};
    char *e = NULL;
    rocksdb_set_options_cf(kv->db, kv->cf[cf], 3, keys, vals, &e);
    if (e != NULL) {
        return rerr_write(kv, &e, err,
                          open_window ? "open blob GC window"
                                      : "close blob GC window");
    }
    return 0;
}

int
cfr_kv_compact(struct cfr_kv *kv, unsigned cf, const void *lo, size_t lo_len,
               const void *hi, size_t hi_len, struct cfr_err *err)
{
    int rc;
    uint64_t bg_before = 0;
    uint64_t bg_after = 0;
    bool window_open = false;
    if ((rc = check_cf(kv, cf, err)) != 0 ||
        (rc = check_writable(kv, err)) != 0) {
        return rc;
    }
    pthread_mutex_lock(&kv->compact_lock);
    rocksdb_property_int(kv->db, "rocksdb.background-errors", &bg_before);
    /* With GC on and the cutoff at 1.0 the compaction relocates the live
     * blobs of every file it touches, so a file that held a deleted value
     * among live ones is dropped too. Only the manual compaction below runs
     * in this window: it takes every file of the range, so each deleted
     * value meets its tombstone and is dropped before GC would read it. */
    if (kv->cf_blob[cf]) {
        if ((rc = set_gc_window(kv, cf, true, err)) != 0) {
            goto out;
        }
        window_open = true;
    }
    if ((rc = cfr_kv_flush(kv, err)) != 0) {
        goto out;
    }
    rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
    /* Force: rewrite the bottommost level even if it holds only one file,
     * which is where a tombstone and the value it hides meet last. */
    rocksdb_compactoptions_set_bottommost_level_compaction(co,
                                                           BOTTOMMOST_FORCE);
    rocksdb_compactoptions_set_exclusive_manual_compaction(co, 0);
    rocksdb_compact_range_cf_opt(kv->db, kv->cf[cf], co, lo,
                                 lo != NULL ? lo_len : 0, hi,
                                 hi != NULL ? hi_len : 0);
    rocksdb_compactoptions_destroy(co);
    /* compact_range returns nothing: a failure shows only as a new
     * background error. */
    rocksdb_property_int(kv->db, "rocksdb.background-errors", &bg_after);
    if (bg_after > bg_before) {
        /* The count says something failed, not what: an empty write
         * returns the error that stopped the database (a table or blob
         * that fails its checksum, or the disk), which is the one to
         * report. Either way RocksDB takes no writes until a reopen. */
        char *e = NULL;
        rocksdb_writebatch_t *probe = rocksdb_writebatch_create();
        rocksdb_write(kv->db, kv->wo_nosync, probe, &e);
        rocksdb_writebatch_destroy(probe);
        if (e != NULL) {
            rc = rerr(kv, &e, err, "compaction stopped the database");
        } else {
            rc = CFR_ERR(err, CFR_EIO,
                         "kv %s: compaction raised %llu background error(s)",
                         kv->dir, (unsigned long long)(bg_after - bg_before));
        }
        enter_failed(kv, err != NULL ? err->msg : "compaction failed");
        goto out;
    }
out:
    if (window_open) {
        struct cfr_err e2;
        int r2 = set_gc_window(kv, cf, false, &e2);
        if (r2 != 0) {
            /* A family left without automatic compactions would pile up
             * level-0 files for good: fail the handle, so the vault
             * restarts with the options of cfr_kv_open. */
            enter_failed(kv, e2.msg);
            if (rc == 0) {
                rc = r2;
                if (err != NULL) {
                    *err = e2;
                }
            }
        }
    }
    pthread_mutex_unlock(&kv->compact_lock);
    return rc;
}

/* ---- chunks ------------------------------------------------------------ */

static void
idx_encode(uint8_t rec[IDX_LEN], const void *data, size_t len)
{
    rec[0] = IDX_VERSION;
    cfr_id_plain(data, len, rec + 1);
    cfr_put_le64(rec + 1 + CFR_ID_LEN, (uint64_t)len);
}

/* Checks an index record's shape; fills *sum_r and *len_r. */
static int
idx_decode(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN], const char *rec,
           size_t rec_len, const uint8_t **sum_r, uint64_t *len_r,
           struct cfr_err *err)
{
    char hex[2 * CFR_ID_LEN + 1];
    if (rec_len != IDX_LEN || (uint8_t)rec[0] != IDX_VERSION) {
        hex_id(id, hex);
        return CFR_ERR(err, CFR_ECORRUPT,
                       "kv %s: chunk %s: malformed index record (%zu bytes)",
                       kv->dir, hex, rec_len);
    }
    *sum_r = (const uint8_t *)rec + 1;
    *len_r = cfr_get_le64((const uint8_t *)rec + 1 + CFR_ID_LEN);
    return 0;
}

/* Compares stored bytes with their index record. */
static int
verify(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN], const uint8_t *sum,
       uint64_t want_len, const void *data, size_t len, struct cfr_err *err)
{
    uint8_t got[CFR_ID_LEN];
    char hex[2 * CFR_ID_LEN + 1];
    if ((uint64_t)len != want_len) {
        hex_id(id, hex);
        return CFR_ERR(err, CFR_ECORRUPT,
                       "kv %s: chunk %s: %zu bytes stored, index says %llu",
                       kv->dir, hex, len, (unsigned long long)want_len);
    }
    cfr_id_plain(data, len, got);
    if (!cfr_id_equal(got, sum)) {
        hex_id(id, hex);
        return CFR_ERR(err, CFR_ECORRUPT, "kv %s: chunk %s: checksum mismatch",
                       kv->dir, hex);
    }
    return 0;
}

/* Adds the chunk ID to a RocksDB error, which names only files. */
static int
chunk_rerr(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN], int rc,
           struct cfr_err *err)
{
    char hex[2 * CFR_ID_LEN + 1];
    char why[CFR_ERR_MSG_MAX];
    if (err == NULL) {
        return rc;
    }
    hex_id(id, hex);
    snprintf(why, sizeof(why), "%s", err->msg);
    return CFR_ERR(err, rc, "chunk %s: %s", hex, why);
}

static pthread_mutex_t *
stripe_of(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN])
{
    return &kv->stripe[id[0] % STRIPES];
}

/* Takes ID's stripe lock and reads its index record (*pin_r NULL when
 * absent): a put's existence check, a delete and a repair of one ID never
 * interleave. chunk_unlock ends it. */
static int
chunk_lock_index(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                 pthread_mutex_t **lock_r, rocksdb_pinnableslice_t **pin_r,
                 struct cfr_err *err)
{
    *lock_r = stripe_of(kv, id);
    pthread_mutex_lock(*lock_r);
    int rc = get_pinned(kv, kv->ro, kv->index_cf, id, CFR_ID_LEN, pin_r, err);
    return rc != 0 ? chunk_rerr(kv, id, rc, err) : 0;
}

/* Releases what chunk_lock_index took (any may be NULL) and the batch. */
static void
chunk_unlock(pthread_mutex_t *lock, rocksdb_pinnableslice_t *pin,
             rocksdb_writebatch_t *wb)
{
    if (pin != NULL) {
        rocksdb_pinnableslice_destroy(pin);
    }
    if (lock != NULL) {
        pthread_mutex_unlock(lock);
    }
    if (wb != NULL) {
        rocksdb_writebatch_destroy(wb);
    }
}

int
cfr_kv_chunk_put(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                 const void *data, size_t len, bool *existed_r,
                 struct cfr_err *err)
{
    uint8_t rec[IDX_LEN];
    rocksdb_pinnableslice_t *pin = NULL;
    rocksdb_writebatch_t *wb = NULL;
    pthread_mutex_t *lock = NULL;
    int rc;
    if (existed_r != NULL) {
        *existed_r = false;
    }
    if ((rc = check_chunks(kv, err)) != 0 ||
        (rc = check_writable(kv, err)) != 0) {
        goto out;
    }
    if (len > CFR_KV_VALUE_MAX) {
        rc =
            CFR_ERR(err, CFR_ELIMIT, "kv %s: chunk of %zu bytes", kv->dir, len);
        goto out;
    }
    /* Hash outside the lock: it is the slow part. */
    idx_encode(rec, data, len);
    if ((rc = chunk_lock_index(kv, id, &lock, &pin, err)) != 0) {
        goto out;
    }
    if (pin != NULL) {
        size_t plen = 0;
        const char *p = rocksdb_pinnableslice_value(pin, &plen);
        const uint8_t *sum = NULL;
        uint64_t have_len = 0;
        if ((rc = idx_decode(kv, id, p, plen, &sum, &have_len, err)) != 0) {
            goto out;
        }
        if (have_len == (uint64_t)len && cfr_id_equal(sum, rec + 1)) {
            if (existed_r != NULL) {
                *existed_r = true;
            }
            rc = 0;
        } else {
            char hex[2 * CFR_ID_LEN + 1];
            hex_id(id, hex);
            rc = CFR_ERR(err, CFR_EEXIST,
                         "kv %s: chunk %s already stored with other bytes; "
                         "chunks are never overwritten",
                         kv->dir, hex);
        }
        goto out;
    }
    wb = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(wb, kv->cf[kv->chunks_cf], (const char *)id,
                              CFR_ID_LEN, data, len);
    rocksdb_writebatch_put_cf(wb, kv->cf[kv->index_cf], (const char *)id,
                              CFR_ID_LEN, (const char *)rec, IDX_LEN);
    rc = write_batch(kv, wb, true, err);
out:
    chunk_unlock(lock, pin, wb);
    return rc;
}

struct put_many_ctx {
    struct cfr_kv *kv;
    const uint8_t (*ids)[CFR_ID_LEN];
    const uint8_t *recs; /* n index records we would write */
    int *rcs;
    bool *existed;
    struct cfr_err *err;
};

/* Marks rcs[i] for an ID the index already holds; leaves absent ones. */
static int
put_many_one(void *ctx, size_t i, rocksdb_pinnableslice_t *pin, char **rerrp)
{
    struct put_many_ctx *c = ctx;
    int rc = 0;
    if (*rerrp != NULL) {
        rc = rerr(c->kv, rerrp, c->err, "chunk index multi-get");
    } else if (pin != NULL) {
        size_t plen = 0;
        const char *p = rocksdb_pinnableslice_value(pin, &plen);
        const uint8_t *sum = NULL;
        uint64_t have = 0;
        const uint8_t *want = c->recs + i * IDX_LEN;
        rc = idx_decode(c->kv, c->ids[i], p, plen, &sum, &have, c->err);
        if (rc == 0) {
            bool same = have == cfr_get_le64(want + 1 + CFR_ID_LEN) &&
                        cfr_id_equal(sum, want + 1);
            c->rcs[i] = same ? 0 : CFR_EEXIST;
            c->existed[i] = same;
        }
    }
    if (pin != NULL) {
        rocksdb_pinnableslice_destroy(pin);
    }
    return rc;
}

int
cfr_kv_chunk_put_many(struct cfr_kv *kv, size_t n,
                      const uint8_t (*ids)[CFR_ID_LEN],
                      const void *const datas[], const size_t lens[],
                      int rcs_r[], bool existed_r[], struct cfr_err *err)
{
    uint8_t *recs = NULL;
    bool *existed = NULL;
    const char **keys = NULL;
    size_t *klens = NULL;
    rocksdb_writebatch_t *wb = NULL;
    bool locked[STRIPES] = {false};
    size_t total = 0;
    size_t rec_bytes = 0;
    int rc;
    if ((rc = check_chunks(kv, err)) != 0 ||
        (rc = check_writable(kv, err)) != 0) {
        goto out;
    }
    if (n > CFR_KV_PUT_MANY_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "kv %s: %zu chunks in one put", kv->dir,
                     n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > CFR_KV_VALUE_MAX || lens[i] > CFR_KV_BATCH_MAX - total) {
            rc = CFR_ERR(err, CFR_ELIMIT,
                         "kv %s: chunks over %u bytes in one put", kv->dir,
                         CFR_KV_BATCH_MAX);
            goto out;
        }
        total += lens[i];
    }
    if (n == 0) {
        goto out;
    }
    (void)cfr_mul_ok(n, IDX_LEN, &rec_bytes); /* n is capped above */
    recs = cfr_malloc(rec_bytes);
    existed = cfr_calloc(n, sizeof(*existed));
    keys = cfr_calloc(n, sizeof(*keys));
    klens = cfr_calloc(n, sizeof(*klens));
    if (recs == NULL || existed == NULL || keys == NULL || klens == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        idx_encode(recs + i * IDX_LEN, datas[i], lens[i]);
        keys[i] = (const char *)ids[i];
        klens[i] = CFR_ID_LEN;
        rcs_r[i] = 0;
        locked[ids[i][0] % STRIPES] = true;
    }
    /* Stripes in ascending order, so two calls never wait on each other
     * in a cycle. */
    for (size_t s = 0; s < STRIPES; s++) {
        if (locked[s]) {
            pthread_mutex_lock(&kv->stripe[s]);
        }
    }
    struct put_many_ctx c = {kv, ids, recs, rcs_r, existed, err};
    if ((rc = multi_get(kv, kv->index_cf, n, keys, klens, put_many_one, &c,
                        err)) != 0) {
        goto out;
    }
    wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        if (existed[i] || rcs_r[i] != 0) {
            continue;
        }
        /* The same ID earlier in this call: the first one wins, as if the
         * two had come one after the other. */
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            if (ids[j][0] == ids[i][0] && rcs_r[j] == 0 && !existed[j] &&
                memcmp(ids[j], ids[i], CFR_ID_LEN) == 0) {
                dup = true;
                existed[i] = memcmp(recs + j * IDX_LEN, recs + i * IDX_LEN,
                                    IDX_LEN) == 0;
                rcs_r[i] = existed[i] ? 0 : CFR_EEXIST;
            }
        }
        if (dup) {
            continue;
        }
        rocksdb_writebatch_put_cf(wb, kv->cf[kv->chunks_cf],
                                  (const char *)ids[i], CFR_ID_LEN, datas[i],
                                  lens[i]);
        rocksdb_writebatch_put_cf(wb, kv->cf[kv->index_cf],
                                  (const char *)ids[i], CFR_ID_LEN,
                                  (const char *)recs + i * IDX_LEN, IDX_LEN);
    }
    if (rocksdb_writebatch_count(wb) > 0) {
        rc = write_batch(kv, wb, true, err);
    }
out:
    for (size_t s = 0; s < STRIPES; s++) {
        if (locked[s]) {
            pthread_mutex_unlock(&kv->stripe[s]);
        }
    }
    if (wb != NULL) {
        rocksdb_writebatch_destroy(wb);
    }
    if (existed_r != NULL && existed != NULL && rc == 0) {
        memcpy(existed_r, existed, n * sizeof(*existed));
    }
    cfr_free(recs);
    cfr_free(existed);
    cfr_free(keys);
    cfr_free(klens);
    return rc;
}

/* Reads and verifies one chunk with read options ro; pin-free copy. */
static int
chunk_read(struct cfr_kv *kv, const rocksdb_readoptions_t *ro,
           const uint8_t id[CFR_ID_LEN], const uint8_t *sum, uint64_t want,
           struct cfr_buf *out, struct cfr_err *err)
{
    rocksdb_pinnableslice_t *pin = NULL;
    int rc;
    if ((rc = get_pinned(kv, ro, kv->chunks_cf, id, CFR_ID_LEN, &pin, err)) !=
        0) {
        return chunk_rerr(kv, id, rc, err);
    }
    if (pin == NULL) {
        char hex[2 * CFR_ID_LEN + 1];
        hex_id(id, hex);
        return CFR_ERR(err, CFR_ECORRUPT,
                       "kv %s: chunk %s: indexed but its data is missing",
                       kv->dir, hex);
    }
    size_t len = 0;
    const char *v = rocksdb_pinnableslice_value(pin, &len);
    rc = verify(kv, id, sum, want, v, len, err);
    if (rc == 0 && out != NULL) {
        cfr_buf_reset(out);
        rc = cfr_buf_append(out, v, len, err);
    }
    rocksdb_pinnableslice_destroy(pin);
    return rc;
}

int
cfr_kv_chunk_get(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                 struct cfr_buf *out, struct cfr_err *err)
{
    rocksdb_pinnableslice_t *idx = NULL;
    int rc;
    if ((rc = check_chunks(kv, err)) != 0) {
        goto out;
    }
    if ((rc = get_pinned(kv, kv->ro, kv->index_cf, id, CFR_ID_LEN, &idx,
                         err)) != 0) {
        rc = chunk_rerr(kv, id, rc, err);
        goto out;
    }
    if (idx == NULL) {
        char hex[2 * CFR_ID_LEN + 1];
        hex_id(id, hex);
        rc = CFR_ERR(err, CFR_ENOTFOUND, "kv %s: chunk %s not stored", kv->dir,
                     hex);
        goto out;
    }
    size_t ilen = 0;
    const char *irec = rocksdb_pinnableslice_value(idx, &ilen);
    const uint8_t *sum = NULL;
    uint64_t want = 0;
    if ((rc = idx_decode(kv, id, irec, ilen, &sum, &want, err)) != 0) {
        goto out;
    }
    if (want > out->cap) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "kv %s: chunk of %llu bytes exceeds the buffer cap",
                     kv->dir, (unsigned long long)want);
        goto out;
    }
    rc = chunk_read(kv, kv->ro, id, sum, want, out, err);
out:
    if (idx != NULL) {
        rocksdb_pinnableslice_destroy(idx);
    }
    return rc;
}

struct has_ctx {
    struct cfr_kv *kv;
    bool *missing;
    size_t n_missing;
    struct cfr_err *err;
};

static int
has_one(void *ctx, size_t i, rocksdb_pinnableslice_t *pin, char **rerrp)
{
    struct has_ctx *c = ctx;
    if (pin != NULL) {
        rocksdb_pinnableslice_destroy(pin);
    }
    if (*rerrp != NULL) {
        /* The answer for this ID is unknown: fail the whole query rather
         * than make the agent re-upload or skip a chunk on a guess. */
        return rerr(c->kv, rerrp, c->err, "chunk index multi-get");
    }
    c->missing[i] = pin == NULL;
    c->n_missing += pin == NULL;
    return 0;
}

int
cfr_kv_chunk_has_many(struct cfr_kv *kv, size_t n,
                      const uint8_t (*ids)[CFR_ID_LEN], bool missing_r[],
                      size_t *n_missing_r, struct cfr_err *err)
{
    const char **keys = NULL;
    size_t *lens = NULL;
    int rc;
    *n_missing_r = 0;
    if ((rc = check_chunks(kv, err)) != 0) {
        goto out;
    }
    if (n > CFR_KV_MULTI_MAX) {
        rc =
            CFR_ERR(err, CFR_ELIMIT, "kv %s: %zu IDs in one query", kv->dir, n);
        goto out;
    }
    if (n == 0) {
        goto out;
    }
    keys = cfr_calloc(n, sizeof(*keys));
    lens = cfr_calloc(n, sizeof(*lens));
    if (keys == NULL || lens == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "kv %s: out of memory", kv->dir);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        keys[i] = (const char *)ids[i];
        lens[i] = CFR_ID_LEN;
        missing_r[i] = false;
    }
    struct has_ctx c = {kv, missing_r, 0, err};
    rc = multi_get(kv, kv->index_cf, n, keys, lens, has_one, &c, err);
    if (rc == 0) {
        *n_missing_r = c.n_missing;
    }
out:
    cfr_free(keys);
    cfr_free(lens);
    return rc;
}

int
cfr_kv_chunk_repair(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                    const void *data, size_t len, bool *repaired_r,
                    struct cfr_err *err)
{
    rocksdb_pinnableslice_t *idx = NULL;
    rocksdb_writebatch_t *wb = NULL;
    pthread_mutex_t *lock = NULL;
    char hex[2 * CFR_ID_LEN + 1];
    int rc;
    *repaired_r = false;
    if ((rc = check_chunks(kv, err)) != 0 ||
        (rc = check_writable(kv, err)) != 0) {
        goto out;
    }
    if (len > CFR_KV_VALUE_MAX || (len > 0 && data == NULL)) {
        rc = CFR_ERR(err, CFR_EINVAL, "kv %s: repair with %zu bytes", kv->dir,
                     len);
        goto out;
    }
    /* Under the stripe lock so a put's existence check, a delete (GC) and
     * a second repair of the same ID cannot interleave with this one. */
    if ((rc = chunk_lock_index(kv, id, &lock, &idx, err)) != 0) {
        goto out;
    }
    if (idx == NULL) {
        hex_id(id, hex);
        rc = CFR_ERR(err, CFR_ENOTFOUND, "kv %s: chunk %s not stored", kv->dir,
                     hex);
        goto out;
    }
    size_t ilen = 0;
    const char *irec = rocksdb_pinnableslice_value(idx, &ilen);
    const uint8_t *sum = NULL;
    uint64_t want = 0;
    if ((rc = idx_decode(kv, id, irec, ilen, &sum, &want, err)) != 0) {
        goto out;
    }
    struct cfr_err why;
    cfr_err_clear(&why);
    int r = chunk_read(kv, kv->ro, id, sum, want, NULL, &why);
    if (r == 0) {
        goto out; /* healthy after all: nothing to replace */
    }
    if (r != CFR_ECORRUPT) {
        /* An I/O error says nothing about the bytes: do not overwrite on
         * a guess. */
        rc = CFR_ERR(err, r, "kv %s: repair: %s", kv->dir, why.msg);
        goto out;
    }
    if (verify(kv, id, sum, want, data, len, NULL) != 0) {
        hex_id(id, hex);
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "kv %s: chunk %s: the copy offered for repair does not "
                     "match the checksum and size recorded at first store",
                     kv->dir, hex);
        goto out;
    }
    /* The value alone: the index record already describes these bytes, so
     * rule 3 (value and index together) still holds. */
    wb = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(wb, kv->cf[kv->chunks_cf], (const char *)id,
                              CFR_ID_LEN, data, len);
    if ((rc = write_batch(kv, wb, true, err)) != 0) {
        goto out;
    }
    *repaired_r = true;
out:
    chunk_unlock(lock, idx, wb);
    return rc;
}

int
cfr_kv_chunk_delete(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                    struct cfr_err *err)
{
    int rc;
    if ((rc = check_chunks(kv, err)) != 0) {
        return rc;
    }
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_cf(wb, kv->cf[kv->chunks_cf], (const char *)id,
                                 CFR_ID_LEN);
    rocksdb_writebatch_delete_cf(wb, kv->cf[kv->index_cf], (const char *)id,
                                 CFR_ID_LEN);
    pthread_mutex_t *lock = stripe_of(kv, id);
    pthread_mutex_lock(lock);
    rc = write_batch(kv, wb, true, err);
    pthread_mutex_unlock(lock);
    rocksdb_writebatch_destroy(wb);
    return rc;
}

int
cfr_kv_scrub(struct cfr_kv *kv, cfr_kv_scrub_fn *fn, void *ctx,
             struct cfr_kv_scrub_stats *stats_r, struct cfr_err *err)
{
    rocksdb_readoptions_t *ro = NULL;
    rocksdb_iterator_t *it = NULL;
    const rocksdb_snapshot_t *snap = NULL;
    struct cfr_kv_scrub_stats st = {0, 0, 0};
    char *e = NULL;
    int rc;
    if ((rc = check_chunks(kv, err)) != 0) {
        goto out;
    }
    /* One view for the walk and the point reads, so a chunk deleted while
     * the scrub runs is not reported missing. */
    snap = rocksdb_create_snapshot(kv->db);
    ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_readoptions_set_verify_checksums(ro, 1);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    /* The index family holds no blobs, so walking it reads no chunk data;
     * each chunk is then read once, by a point lookup that can fail alone
     * (an iterator over a blob family stops at the first bad blob). */
    it = rocksdb_create_iterator_cf(kv->db, ro, kv->cf[kv->index_cf]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0;
        size_t vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        uint8_t id[CFR_ID_LEN] = {0};
        memcpy(id, k, klen < CFR_ID_LEN ? klen : CFR_ID_LEN);
        st.checked++;
        struct cfr_err one;
        cfr_err_clear(&one);
        const uint8_t *sum = NULL;
        uint64_t want = 0;
        int r;
        if (klen != CFR_ID_LEN) {
            r = CFR_ERR(&one, CFR_ECORRUPT, "kv %s: index key of %zu bytes",
                        kv->dir, klen);
        } else if ((r = idx_decode(kv, id, v, vlen, &sum, &want, &one)) == 0) {
            r = chunk_read(kv, ro, id, sum, want, NULL, &one);
            if (r == 0) {
                st.bytes += want;
            }
        }
        if (r != 0) {
            st.bad++;
            if (fn != NULL) {
                fn(ctx, id, r, one.msg);
            }
        }
    }
    rocksdb_iter_get_error(it, &e);
    if (e != NULL) {
        rc = rerr(kv, &e, err, "scrub: walking the chunk index");
    }
out:
    if (it != NULL) {
        rocksdb_iter_destroy(it);
    }
    if (ro != NULL) {
        rocksdb_readoptions_destroy(ro);
    }
    if (snap != NULL) {
        rocksdb_release_snapshot(kv->db, snap);
    }
    if (stats_r != NULL) {
        *stats_r = st;
    }
    return rc;
}
