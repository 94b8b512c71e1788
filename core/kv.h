/*
 * kv.h - the vault's storage layer: RocksDB databases with named column
 * families, durable write batches, verified chunk storage and scrubbing.
 *
 * A vault keeps one database per tenant plus a system database (tenants,
 * credentials, audit log), all opened through this module, which is the only
 * code that sees RocksDB. Every database of a process shares one
 * struct cfr_kv_env: one LRU cache for table blocks and blob values, and one
 * account of the memory the memtables may take (see cfr_kv_env_memtable_bound
 * and docs/FORMAT.md for the budget arithmetic).
 *
 * Durability: a commit with sync (and every chunk put or delete) returns only
 * once its write-ahead-log record is fsynced; concurrent committers share the
 * fsync (RocksDB's group commit). Once RocksDB reports an I/O error on any
 * write, flush or compaction (or stops the database after a background job
 * met corruption), the handle is *failed*: every later write
 * returns CFR_EIO without reaching RocksDB, reads still work, and the only
 * way out is to close and reopen (the vault stops instead). Retrying after a
 * failed fsync is unsafe: Linux may have dropped the dirty pages and marked
 * them clean, so a second fsync "succeeds" for data that never reached the
 * disk (PostgreSQL's "fsyncgate", 2018).
 *
 * Chunks: a database opened with the column families CFR_KV_CF_CHUNKS and
 * CFR_KV_CF_CHUNK_INDEX stores chunk ciphertext (in blob files) and, beside
 * it, a small index record holding the ciphertext's BLAKE2b-256 checksum and
 * size. Reads verify the checksum; a scrub walks the index and re-verifies
 * every chunk without any key. Chunk puts never overwrite; only a repair
 * replaces bytes that fail their check with bytes that pass it.
 *
 * Column families are named at open, in an array; every other call names a
 * column family by its index in that array.
 *
 * Thread safety: a struct cfr_kv_env and a struct cfr_kv may be used from many
 * threads at once (RocksDB is thread-safe, and the chunk calls serialise
 * per-ID). A struct cfr_kv_batch or struct cfr_kv_iter belongs to one thread
 * at a time. Close a database only when no other thread uses it, and free
 * the env only after every database on it is closed.
 */
#ifndef CFR_KV_H
#define CFR_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h" /* struct cfr_buf: values are copied into capped buffers */
#include "err.h" /* struct cfr_err */
#include "id.h"  /* CFR_ID_LEN: chunk IDs */

/* At most this many column families per database ("default" not counted). */
#define CFR_KV_CF_MAX 16
/* Reserved names that switch on the chunk calls. */
#define CFR_KV_CF_CHUNKS      "chunks"
#define CFR_KV_CF_CHUNK_INDEX "chunk_index"

#define CFR_KV_KEY_MAX      4096u        /* longest key accepted */
#define CFR_KV_VALUE_MAX    (64u << 20)  /* longest value accepted */
#define CFR_KV_BATCH_MAX    (128u << 20) /* a batch's keys and values together */
#define CFR_KV_MULTI_MAX    (1u << 20)   /* keys in one multi-get */
#define CFR_KV_PUT_MANY_MAX 4096u /* chunks in one cfr_kv_chunk_put_many */

/* Defaults used when a field of struct cfr_kv_opts is 0. */
#define CFR_KV_DEFAULT_WRITE_BUFFER  (8u << 20)
#define CFR_KV_DEFAULT_WRITE_BUFFERS 2
#define CFR_KV_DEFAULT_MIN_BLOB      4096u
#define CFR_KV_DEFAULT_MAX_OPEN      256

struct cfr_kv_env;
struct cfr_kv;
struct cfr_kv_batch;
struct cfr_kv_iter;

/* Per-database tuning; a zeroed struct (or NULL) means the defaults. */
struct cfr_kv_opts {
    size_t write_buffer_bytes; /* one memtable of one column family */
    int max_write_buffers;     /* memtables per column family, >= 2 */
    size_t min_blob_bytes;     /* values at least this long go to blobs */
    uint32_t blob_cfs;         /* bit i: cf_names[i] uses blob files; the
                                  CFR_KV_CF_CHUNKS family always does */
    int max_open_files;        /* table files kept open; -1 = all */
};

/* ---- shared environment ------------------------------------------------ */

/*
 * Returns owned: a shared cache of cache_bytes (block cache and blob cache
 * in one LRU) for every database opened on it. NULL with err set on failure.
 */
struct cfr_kv_env *cfr_kv_env_new(size_t cache_bytes, struct cfr_err *err);
/* Accepts NULL. Every database on env must be closed first (asserted). */
void cfr_kv_env_free(struct cfr_kv_env *env);
/* Bytes the shared cache holds now. */
size_t cfr_kv_env_cache_usage(struct cfr_kv_env *env);
/* Databases open on env. */
size_t cfr_kv_env_open_count(struct cfr_kv_env *env);
/*
 * The most memory the memtables of every open database may take: the sum
 * over databases of (column families + 1) * write_buffer * max_write_buffers.
 * A vault compares it with its budget before opening one more tenant.
 */
size_t cfr_kv_env_memtable_bound(struct cfr_kv_env *env);

/* ---- databases --------------------------------------------------------- */

/*
 * Opens (creating if missing) the database in dir with exactly the column
 * families cf_names[0..n-1] (borrowed; copied). Families missing on disk are
 * created. A family on disk that the caller does not name is an error
 * (CFR_EVERSION, naming it): it was made by another build, and opening
 * without it would hide its data. "default" is reserved. Returns owned.
 */
struct cfr_kv *cfr_kv_open(struct cfr_kv_env *env, const char *dir,
                           const char *const cf_names[], size_t n,
                           const struct cfr_kv_opts *opts, struct cfr_err *err);
/* Accepts NULL. Writes already acknowledged are on disk; nothing is lost. */
void cfr_kv_close(struct cfr_kv *kv);
/* True once a write error has made the handle refuse writes. */
bool cfr_kv_failed(struct cfr_kv *kv);
/* The directory this database lives in (borrowed from kv). */
const char *cfr_kv_dir(const struct cfr_kv *kv);

/*
 * Copies the value of key in column family cf into val (reset first; its cap
 * bounds the value: CFR_ELIMIT). CFR_ENOTFOUND when absent, CFR_ECORRUPT when
 * RocksDB's own checksums fail.
 */
int cfr_kv_get(struct cfr_kv *kv, unsigned cf, const void *key, size_t key_len,
               struct cfr_buf *val, struct cfr_err *err);

/*
 * Looks up n keys of one column family in one batched call. For each i,
 * rcs[i] is 0 (vals[i] holds the value), CFR_ENOTFOUND, or the error of that
 * key (CFR_ELIMIT when vals[i] is too small, CFR_ECORRUPT, ...). Returns 0
 * when every key was looked up, even if some were absent or bad; err
 * describes the first bad key.
 */
int cfr_kv_multi_get(struct cfr_kv *kv, unsigned cf, size_t n,
                     const void *const keys[], const size_t key_lens[],
                     struct cfr_buf vals[], int rcs[], struct cfr_err *err);

/* One-operation synced writes, for records that stand alone. */
int cfr_kv_put(struct cfr_kv *kv, unsigned cf, const void *key, size_t key_len,
               const void *val, size_t val_len, struct cfr_err *err);
int cfr_kv_delete(struct cfr_kv *kv, unsigned cf, const void *key,
                  size_t key_len, struct cfr_err *err);

/* ---- write batches: atomic groups of puts and deletes ------------------ */

/* Returns owned; borrows kv, which must outlive the batch. */
struct cfr_kv_batch *cfr_kv_batch_new(struct cfr_kv *kv, struct cfr_err *err);
/* Accepts NULL. Discards whatever was not committed. */
void cfr_kv_batch_free(struct cfr_kv_batch *b);
/* Copies key and value into the batch. CFR_ELIMIT past CFR_KV_BATCH_MAX. */
int cfr_kv_batch_put(struct cfr_kv_batch *b, unsigned cf, const void *key,
                     size_t key_len, const void *val, size_t val_len,
                     struct cfr_err *err);
int cfr_kv_batch_delete(struct cfr_kv_batch *b, unsigned cf, const void *key,
                        size_t key_len, struct cfr_err *err);
/* Operations queued and not yet committed. */
size_t cfr_kv_batch_count(const struct cfr_kv_batch *b);
/*
 * Applies every queued operation atomically; with sync, returns only when
 * the WAL record is fsynced (an acknowledgement may then be sent). On success
 * the batch is empty and reusable; on failure it keeps its operations.
 */
int cfr_kv_batch_commit(struct cfr_kv_batch *b, bool sync, struct cfr_err *err);

/* ---- iteration --------------------------------------------------------- */

/* One entry; key and val are borrowed until the next call on the iterator. */
struct cfr_kv_entry {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *val;
    size_t val_len;
};

/*
 * Iterates keys k of column family cf with lo <= k < hi in byte order. A
 * NULL lo starts at the first key, a NULL hi runs to the last. The bounds
 * are copied into the iterator, which owns them. The iterator reads a
 * consistent view taken at creation. Returns owned; borrows kv.
 */
struct cfr_kv_iter *cfr_kv_iter_new(struct cfr_kv *kv, unsigned cf,
                                    const void *lo, size_t lo_len,
                                    const void *hi, size_t hi_len,
                                    struct cfr_err *err);
/* Iterates the keys that begin with prefix (an empty prefix: all keys). */
struct cfr_kv_iter *cfr_kv_iter_new_prefix(struct cfr_kv *kv, unsigned cf,
                                           const void *prefix,
                                           size_t prefix_len,
                                           struct cfr_err *err);
/*
 * Moves to the next entry: *got_r is true and *e_r filled, or *got_r is false
 * at the end. An error (CFR_ECORRUPT, CFR_EIO) ends the iteration: RocksDB
 * cannot step past a corrupt block.
 */
int cfr_kv_iter_next(struct cfr_kv_iter *it, bool *got_r,
                     struct cfr_kv_entry *e_r, struct cfr_err *err);
/* Accepts NULL. */
void cfr_kv_iter_free(struct cfr_kv_iter *it);

/* ---- maintenance and statistics ---------------------------------------- */

/*
 * Reads an integer RocksDB property ("rocksdb.estimate-num-keys",
 * "rocksdb.background-errors", ...) of column family cf. CFR_EINVAL for an
 * unknown or non-integer property.
 */
int cfr_kv_property_u64(struct cfr_kv *kv, unsigned cf, const char *name,
                        uint64_t *val_r, struct cfr_err *err);
/* Reads a text property ("rocksdb.stats", ...) into out (reset first). */
int cfr_kv_property_str(struct cfr_kv *kv, unsigned cf, const char *name,
                        struct cfr_buf *out, struct cfr_err *err);

/*
 * Writes every memtable to table files and waits, so that the write-ahead
 * logs holding them can be deleted.
 */
int cfr_kv_flush(struct cfr_kv *kv, struct cfr_err *err);

/*
 * Compacts keys lo <= k < hi of column family cf (NULL: unbounded) so that
 * deleted values leave the disk: flushes every family (the WAL that held
 * the value becomes obsolete and is removed), rewrites the bottommost level
 * even when nothing else would, and, for blob families, garbage-collects
 * every blob file the range references (age cutoff 1.0), not just old ones.
 * Blob GC runs only here: automatic compactions never read blob bytes, and
 * are paused on cf for the duration, so deleting a chunk whose blob is
 * damaged and then compacting cannot race with a background job reading it.
 * A damaged blob still live in the range stops the database: CFR_ECORRUPT
 * and the handle fails. Serialised per database; slow by design, for GC,
 * purges and the recovery of a bad chunk.
 */
int cfr_kv_compact(struct cfr_kv *kv, unsigned cf, const void *lo,
                   size_t lo_len, const void *hi, size_t hi_len,
                   struct cfr_err *err);

/* ---- chunks (needs CFR_KV_CF_CHUNKS and CFR_KV_CF_CHUNK_INDEX) --------- */

/*
 * Stores chunk ciphertext data under id, with its index record, in one
 * synced batch. Idempotent: when id is already stored with the same bytes
 * (same checksum and size), nothing is written and *existed_r (may be NULL)
 * is set. Different bytes under a stored id are refused with CFR_EEXIST:
 * vaults are append-only, nothing is ever overwritten.
 */
int cfr_kv_chunk_put(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                     const void *data, size_t len, bool *existed_r,
                     struct cfr_err *err);

/*
 * As cfr_kv_chunk_put for n chunks (at most CFR_KV_PUT_MANY_MAX, their bytes
 * within CFR_KV_BATCH_MAX) in one synced batch: one fsync for a whole
 * upload message. rcs_r[i] is 0 (stored now, or already stored with the
 * same bytes: existed_r[i], when existed_r is not NULL) or CFR_EEXIST
 * (other bytes already stored, or earlier in this call, under that ID).
 * Returns 0 when the batch was written; on an error nothing was.
 */
int cfr_kv_chunk_put_many(struct cfr_kv *kv, size_t n,
                          const uint8_t (*ids)[CFR_ID_LEN],
                          const void *const datas[], const size_t lens[],
                          int rcs_r[], bool existed_r[], struct cfr_err *err);

/*
 * Copies chunk id into out (reset first) after checking its checksum and
 * size against the index: CFR_ECORRUPT, naming the ID, when they differ or
 * RocksDB reports corruption; CFR_ENOTFOUND when id is not stored.
 */
int cfr_kv_chunk_get(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                     struct cfr_buf *out, struct cfr_err *err);

/*
 * For each of the n IDs (at most CFR_KV_MULTI_MAX), sets missing_r[i] when
 * it is not stored, and *n_missing_r to how many are missing. Reads only the
 * small index family: no chunk data is touched.
 */
int cfr_kv_chunk_has_many(struct cfr_kv *kv, size_t n,
                          const uint8_t (*ids)[CFR_ID_LEN], bool missing_r[],
                          size_t *n_missing_r, struct cfr_err *err);

/*
 * Repair: the one overwrite of a chunk. When the stored bytes of id fail
 * their check (RocksDB's or the index record's checksum and size), and
 * data matches the checksum and size the index record holds (recorded at
 * first store: the reference, whatever a replica claims), writes data as
 * the chunk's value (synced); the damaged value becomes garbage that the
 * next cfr_kv_compact of CFR_KV_CF_CHUNKS removes. *repaired_r tells
 * whether it wrote. The stored bytes verifying: 0, *repaired_r false,
 * nothing written. data not matching the index: CFR_ECORRUPT, nothing
 * written. No index record: CFR_ENOTFOUND. Serialised with the ID's puts
 * and deletes made through the cfr_kv_chunk_* calls only: a caller that
 * deletes chunks through a plain batch (vault/store.c's GC) must hold its
 * own lock around both, or a repair could write back a value whose index
 * record the batch just removed.
 */
int cfr_kv_chunk_repair(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                        const void *data, size_t len, bool *repaired_r,
                        struct cfr_err *err);

/* Deletes chunk id and its index record (synced). Absent ids are fine. */
int cfr_kv_chunk_delete(struct cfr_kv *kv, const uint8_t id[CFR_ID_LEN],
                        struct cfr_err *err);

/*
 * Called once per bad chunk: code is CFR_ECORRUPT for damaged or missing
 * bytes, CFR_EIO when the disk refused the read; why is borrowed.
 */
typedef void cfr_kv_scrub_fn(void *ctx, const uint8_t id[CFR_ID_LEN], int code,
                             const char *why);

struct cfr_kv_scrub_stats {
    uint64_t checked; /* index records visited */
    uint64_t bad;     /* chunks reported to the callback */
    uint64_t bytes;   /* ciphertext bytes re-hashed */
};

/*
 * Verifies every stored chunk without keys: walks the index (a view taken at
 * the start) and reads each chunk with a point lookup, so one corrupt blob
 * cannot stop the walk. Each chunk whose bytes fail RocksDB's checks or the
 * stored checksum, or whose data is missing, is reported to fn. Returns 0
 * when the walk finished (whatever it found); an error when it could not
 * (the index itself unreadable: the stats cover what was walked).
 */
int cfr_kv_scrub(struct cfr_kv *kv, cfr_kv_scrub_fn *fn, void *ctx,
                 struct cfr_kv_scrub_stats *stats_r, struct cfr_err *err);

#endif /* CFR_KV_H */
