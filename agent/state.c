/*
 * state.c - the agent's file cache over core/kv.h (see state.h for the
 * families and the contract).
 *
 * Record layout (files family; little-endian):
 *   u8 layout (1) | u8 kind | u8 flags (1 in_new, 2 racy) | u8 0
 *   le32 mode | le64 size | le64 mtime_ns | le64 ino | le64 dev
 *   le32 info_len | info | le32 message_id_len | message_id
 *   le32 n_chunks | n_chunks * 32 bytes
 *   8 bytes: BLAKE2b-256(full key || everything above), truncated
 * The checksum covers the key, so a value moved under another key is
 * caught as well as flipped bits RocksDB's block checksums missed.
 *
 * Invariants:
 *  1. A record and its "seen" mark are always written in the same batch,
 *     so a committed record has a mark.
 *  2. Nothing here ever makes a run fail because the cache is bad: read
 *     damage becomes "read the file again"; only write errors and memory
 *     are returned, and the caller may carry on without the cache.
 */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h" /* struct cfr_buf, little-endian helpers */
#include "id.h"  /* cfr_id_plain: record checksums */
#include "log.h" /* cfr_log: resets and damage */
#include "mem.h" /* cfr_calloc, cfr_free */

#define CF_META      0
#define CF_MAILBOXES 1
#define CF_FILES     2
#define CF_SEEN      3
#define CF_COUNT     4

static const char *const cf_names[CF_COUNT] = {"meta", "mailboxes", "files",
                                               "seen"};

#define FORMAT_MAGIC "coffer-agent-state"
#define KEY_FORMAT   "format"
#define KEY_NEXT_MBX "next_mailbox"
#define KEY_DAMAGED  "damaged"
/* meta: "head" || be32(mailbox number) -> the last commit (see below). */
#define KEY_HEAD     "head"
#define KEY_HEAD_LEN (sizeof(KEY_HEAD) - 1 + PREFIX_LEN)

#define REC_FIXED     40
#define REC_SUM_LEN   8
#define REC_LAYOUT    1
#define REC_F_IN_NEW  1u
#define REC_F_RACY    2u
#define MBX_VALUE_LEN 12
/*
 * Head record: u8 layout (1) | u8 state (HEAD_PENDING, HEAD_COMMITTED) |
 * 2 zero bytes | header ID | 8-byte checksum of key || the rest, as for
 * file records: a wrong parent is worse than none (the audit would report
 * a gap that is not there), so a damaged one is ignored.
 */
#define HEAD_LAYOUT    1
#define HEAD_PENDING   1
#define HEAD_COMMITTED 2
#define HEAD_BODY_LEN  (4 + CFR_SNAP_ID_LEN)
#define HEAD_LEN       (HEAD_BODY_LEN + REC_SUM_LEN)
#define PREFIX_LEN     4
#define RKEY_MAX       (PREFIX_LEN + CFR_SNAP_KEY_MAX)
/* The largest record: every variable field at its limit. */
#define REC_MAX                                                                \
    (REC_FIXED + 12 + CFR_SNAP_INFO_MAX + CFR_SNAP_MESSAGE_ID_MAX +            \
     CFR_SNAP_CHUNKS_MAX * CFR_SNAP_ID_LEN + REC_SUM_LEN)

struct agent_state {
    struct cfr_kv_env *env;
    char *dir;
    struct cfr_kv *kv;
    /* Runs on other threads update these: under lock. */
    pthread_mutex_t lock;
    struct agent_state_stats stats;
    size_t runs; /* runs not yet ended */
    bool lock_ok;
};

/* Adds to a counter of st (v points into st->stats or is &st->runs). */
static void
count_add(struct agent_state *st, uint64_t *v, uint64_t n)
{
    pthread_mutex_lock(&st->lock);
    *v += n;
    pthread_mutex_unlock(&st->lock);
}

struct agent_state_run {
    struct agent_state *st;
    uint8_t prefix[PREFIX_LEN]; /* be32 mailbox number */
    uint64_t gen;
    bool has_parent; /* parent: the last commit the vaults confirmed */
    uint8_t parent[CFR_SNAP_ID_LEN];
    int64_t start_ns;
    struct cfr_kv_batch *batch;
    uint8_t rkey[RKEY_MAX]; /* scratch: prefix || key */
    struct cfr_buf val;     /* the last record read */
    struct cfr_buf enc;     /* a record being encoded */
    struct cfr_buf sum;     /* key || record, for the checksum */
};

static void
be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- opening, damage and reset ----------------------------------------- */

static bool
rocksdb_file_name(const char *name)
{
    static const char *const exact[] = {"CURRENT", "IDENTITY", "LOCK", "LOG"};
    static const char *const prefixes[] = {"MANIFEST-", "OPTIONS-", "LOG.old"};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(name, exact[i]) == 0) {
            return true;
        }
    }
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Empties dir, but only when it is flat (regular files only) and looks
 * like a RocksDB directory: a wrong path to real data is refused.
 */
static int
wipe_dir(const char *dir, struct cfr_err *err)
{
    int rc = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT
                   ? 0
                   : CFR_ERR_ERRNO(err, CFR_EIO, "state: open %s", dir);
    }
    int fd = dirfd(d);
    bool ours = false;
    size_t n = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        rewinddir(d);
        const struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            if (pass == 0) {
                struct stat st;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                    rc = CFR_ERR_ERRNO(err, CFR_EIO, "state: stat in %s", dir);
                    break;
                }
                if (!S_ISREG(st.st_mode)) {
                    rc = CFR_ERR(err, CFR_EINVAL,
                                 "state: %s holds more than a database "
                                 "(not a state directory); not emptied",
                                 dir);
                    break;
                }
                ours = ours || rocksdb_file_name(de->d_name);
                n++;
            } else if (unlinkat(fd, de->d_name, 0) != 0 && errno != ENOENT) {
                rc = CFR_ERR_ERRNO(err, CFR_EIO, "state: remove in %s", dir);
                break;
            }
        }
        if (rc == 0 && pass == 0 && n > 0 && !ours) {
            rc =
                CFR_ERR(err, CFR_EINVAL,
                        "state: %s is not a state directory; not emptied", dir);
        }
    }
    closedir(d);
    return rc;
}

static int
db_open(struct agent_state *st, struct cfr_err *err)
{
    /*
     * A cache on a mail host: small memtables keep memory flat. Each
     * column family has its own, and a first run fills them all; at 1 MiB
     * they cost a few MiB of the agent's bound (agent/backup.h), and a
     * flush of 1 MiB is still a few thousand records.
     */
    struct cfr_kv_opts o = {.write_buffer_bytes = 1u << 20,
                            .max_write_buffers = 2};
    st->kv = cfr_kv_open(st->env, st->dir, cf_names, CF_COUNT, &o, err);
    return st->kv != NULL ? 0 : err != NULL ? err->code : CFR_EIO;
}

static int
put_format(struct agent_state *st, struct cfr_err *err)
{
    uint8_t v[sizeof(FORMAT_MAGIC) - 1 + 4];
    memcpy(v, FORMAT_MAGIC, sizeof(FORMAT_MAGIC) - 1);
    cfr_put_le32(v + sizeof(FORMAT_MAGIC) - 1, AGENT_STATE_FORMAT);
    return cfr_kv_put(st->kv, CF_META, KEY_FORMAT, strlen(KEY_FORMAT), v,
                      sizeof(v), err);
}

/*
 * Checks the open database. Returns 0 when sound, 1 with *why set when it
 * must be recreated, or an error.
 */
static int
db_check(struct agent_state *st, const char **why, struct cfr_err *err)
{
    struct cfr_buf v;
    cfr_buf_init(&v, 256);
    int rc =
        cfr_kv_get(st->kv, CF_META, KEY_FORMAT, strlen(KEY_FORMAT), &v, err);
    if (rc == CFR_ENOTFOUND) {
        /* New, or lost its format key: a database with data but no key
         * was not written by this code. */
        struct cfr_kv_iter *it =
            cfr_kv_iter_new_prefix(st->kv, CF_MAILBOXES, "", 0, err);
        bool got = false;
        struct cfr_kv_entry e;
        rc = it == NULL ? CFR_ECORRUPT : cfr_kv_iter_next(it, &got, &e, err);
        cfr_kv_iter_free(it);
        if (rc != 0 || got) {
            *why = rc != 0 ? "unreadable" : "format key missing";
            rc = 1;
        } else {
            rc = put_format(st, err);
        }
    } else if (rc != 0) {
        *why = "format key unreadable";
        rc = 1;
    } else if (v.len != sizeof(FORMAT_MAGIC) - 1 + 4 ||
               memcmp(v.data, FORMAT_MAGIC, sizeof(FORMAT_MAGIC) - 1) != 0) {
        *why = "foreign format key";
        rc = 1;
    } else if (cfr_get_le32(v.data + sizeof(FORMAT_MAGIC) - 1) !=
               AGENT_STATE_FORMAT) {
        *why = "other format version";
        rc = 1;
    } else {
        rc = cfr_kv_get(st->kv, CF_META, KEY_DAMAGED, strlen(KEY_DAMAGED), &v,
                        err);
        if (rc == CFR_ENOTFOUND) {
            rc = 0;
        } else {
            *why = rc == 0 ? "marked damaged by an earlier run" : "unreadable";
            rc = 1;
        }
    }
    cfr_buf_fini(&v);
    return rc;
}

int
agent_state_open(struct cfr_kv_env *env, const char *dir,
                 struct agent_state **st_r, struct cfr_err *err)
{
    int rc;
    struct agent_state *st = NULL;
    const char *why = NULL;
    char reason[CFR_ERR_MSG_MAX + 16];
    *st_r = NULL;
    if ((st = cfr_calloc(1, sizeof(*st))) == NULL ||
        (st->dir = cfr_strdup(dir)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "state: open");
        goto out;
    }
    st->env = env;
    pthread_mutex_init(&st->lock, NULL);
    st->lock_ok = true;
    rc = db_open(st, err);
    if (rc == CFR_ECORRUPT || rc == CFR_EVERSION || rc == CFR_EINVAL ||
        rc == CFR_ENOTFOUND) {
        /* RocksDB will not open it; a lock held elsewhere or a disk
         * error (CFR_EIO) is not damage and is returned as it is. */
        snprintf(reason, sizeof(reason), "open: %s",
                 err != NULL ? err->msg : cfr_code_name(rc));
        why = reason;
    } else if (rc == 0) {
        rc = db_check(st, &why, err);
    }
    if (rc < 0 && why == NULL) {
        goto out;
    }
    if (why != NULL) {
        char qdir[256];
        char qwhy[2 * CFR_ERR_MSG_MAX];
        cfr_log(CFR_LOG_WARN, "agent.state.reset",
                "dir=%s reason=%s action=\"start empty; files are re-read\"",
                cfr_log_quote(dir, qdir, sizeof(qdir)),
                cfr_log_quote(why, qwhy, sizeof(qwhy)));
        cfr_kv_close(st->kv);
        st->kv = NULL;
        cfr_err_clear(err);
        if ((rc = wipe_dir(dir, err)) != 0 || (rc = db_open(st, err)) != 0 ||
            (rc = put_format(st, err)) != 0) {
            goto out;
        }
        st->stats.reset = true;
    }
    rc = 0;
    *st_r = st;
    st = NULL;
out:
    agent_state_close(st);
    return rc;
}

void
agent_state_close(struct agent_state *st)
{
    if (st == NULL) {
        return;
    }
    CFR_ASSERT(st->runs == 0);
    cfr_kv_close(st->kv);
    if (st->lock_ok) {
        pthread_mutex_destroy(&st->lock);
    }
    cfr_free(st->dir);
    cfr_free(st);
}

void
agent_state_stats(struct agent_state *st, struct agent_state_stats *stats_r)
{
    pthread_mutex_lock(&st->lock);
    *stats_r = st->stats;
    pthread_mutex_unlock(&st->lock);
}

/* Marks the database so that the next open starts empty; best effort. */
static void
mark_damaged(struct agent_state *st, const struct cfr_err *cause)
{
    cfr_log_err(CFR_LOG_WARN, "agent.state.damaged", cause);
    (void)cfr_kv_put(st->kv, CF_META, KEY_DAMAGED, strlen(KEY_DAMAGED), "1", 1,
                     NULL);
}

static void rec_sum(struct agent_state_run *run, const uint8_t *rkey,
                    size_t rlen, const uint8_t *p, size_t n,
                    uint8_t out[REC_SUM_LEN]);
static int maybe_commit(struct agent_state_run *run, struct cfr_err *err);

/* ---- the last commit (the next snapshot's parent) ---------------------- */

/*
 * Why the cache and not ListSnapshots: the cache knows which commit the
 * agent saw reach the quorum, which no single vault can tell (a vault that
 * was down lacks it; a commit that failed the quorum may sit on one vault
 * and must not become a parent), and it costs no round trip per mailbox.
 *
 * Two writes bracket the commit so that the parent is never stale, only
 * missing: before the commit a synced "pending" record replaces the last
 * one, after it a "committed" record follows with the run's batch. A
 * crash, a failed or unknown commit, or a lost unsynced tail leaves
 * "pending", and the next run writes no parent (the audit counts it
 * unlinked). A stale parent instead (one commit back) would be reported
 * as a gap once retention dropped that older snapshot.
 */
static void
head_key(const struct agent_state_run *run, uint8_t key[KEY_HEAD_LEN])
{
    memcpy(key, KEY_HEAD, sizeof(KEY_HEAD) - 1);
    memcpy(key + sizeof(KEY_HEAD) - 1, run->prefix, PREFIX_LEN);
}

/* Sets run's parent from its head record; never fails (invariant 2). */
static void
head_load(struct agent_state_run *run)
{
    uint8_t key[KEY_HEAD_LEN], sum[REC_SUM_LEN];
    struct cfr_err gerr;
    head_key(run, key);
    cfr_err_clear(&gerr);
    int rc =
        cfr_kv_get(run->st->kv, CF_META, key, sizeof(key), &run->val, &gerr);
    if (rc == CFR_ENOTFOUND) {
        return; /* a first backup, or a state older than head records */
    }
    if (rc == CFR_ECORRUPT) {
        mark_damaged(run->st, &gerr);
        return;
    }
    if (rc != 0 && rc != CFR_ELIMIT) {
        cfr_log_err(CFR_LOG_WARN, "agent.state.head", &gerr);
        return;
    }
    const uint8_t *p = run->val.data;
    if (rc == 0 && run->val.len == HEAD_LEN && p[0] == HEAD_LAYOUT &&
        p[2] == 0 && p[3] == 0) {
        rec_sum(run, key, sizeof(key), p, HEAD_BODY_LEN, sum);
        if (memcmp(sum, p + HEAD_BODY_LEN, REC_SUM_LEN) == 0 &&
            p[1] == HEAD_COMMITTED) {
            run->has_parent = true;
            memcpy(run->parent, p + 4, CFR_SNAP_ID_LEN);
            return;
        }
        if (memcmp(sum, p + HEAD_BODY_LEN, REC_SUM_LEN) == 0 &&
            p[1] == HEAD_PENDING) {
            cfr_log(CFR_LOG_INFO, "agent.state.head",
                    "reason=\"the last commit is unconfirmed\" "
                    "action=\"no parent link this run\"");
            return;
        }
    }
    count_add(run->st, &run->st->stats.damaged_records, 1);
    cfr_log(CFR_LOG_WARN, "agent.state.head",
            "reason=\"damaged record\" action=\"no parent link this run\"");
}

static int
head_put(struct agent_state_run *run, uint8_t state,
         const uint8_t id[CFR_SNAP_ID_LEN], struct cfr_err *err)
{
    uint8_t key[KEY_HEAD_LEN], v[HEAD_LEN] = {HEAD_LAYOUT, state, 0, 0};
    head_key(run, key);
    memcpy(v + 4, id, CFR_SNAP_ID_LEN);
    rec_sum(run, key, sizeof(key), v, HEAD_BODY_LEN, v + HEAD_BODY_LEN);
    if (state == HEAD_PENDING) {
        /* Synced: it must be on disk before the vaults may hold the
         * commit, or a crash could leave the older head standing. */
        return cfr_kv_put(run->st->kv, CF_META, key, sizeof(key), v, sizeof(v),
                          err);
    }
    return cfr_kv_batch_put(run->batch, CF_META, key, sizeof(key), v, sizeof(v),
                            err);
}

bool
agent_state_parent(const struct agent_state_run *run,
                   uint8_t id_r[CFR_SNAP_ID_LEN])
{
    if (run->has_parent) {
        memcpy(id_r, run->parent, CFR_SNAP_ID_LEN);
    }
    return run->has_parent;
}

int
agent_state_committing(struct agent_state_run *run,
                       const uint8_t header_id[CFR_SNAP_ID_LEN],
                       struct cfr_err *err)
{
    return head_put(run, HEAD_PENDING, header_id, err);
}

int
agent_state_committed(struct agent_state_run *run,
                      const uint8_t header_id[CFR_SNAP_ID_LEN],
                      struct cfr_err *err)
{
    int rc = head_put(run, HEAD_COMMITTED, header_id, err);
    return rc != 0 ? rc : maybe_commit(run, err);
}

/* ---- runs -------------------------------------------------------------- */

int
agent_state_begin(struct agent_state *st, const char *mailbox, int64_t start_ns,
                  struct agent_state_run **run_r, struct cfr_err *err)
{
    int rc;
    struct agent_state_run *run = NULL;
    struct cfr_buf v;
    cfr_buf_init(&v, 64);
    size_t mlen = strlen(mailbox);
    *run_r = NULL;
    if (mlen == 0 || mlen > CFR_SNAP_MAILBOX_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "state: mailbox name of %zu bytes", mlen);
        goto out;
    }
    if ((run = cfr_calloc(1, sizeof(*run))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "state: run");
        goto out;
    }
    run->st = st;
    run->start_ns = start_ns;
    cfr_buf_init(&run->val, REC_MAX);
    cfr_buf_init(&run->enc, REC_MAX);
    cfr_buf_init(&run->sum, RKEY_MAX + REC_MAX);
    uint32_t num = 0;
    uint64_t last_gen = 0;
    rc = cfr_kv_get(st->kv, CF_MAILBOXES, mailbox, mlen, &v, err);
    if (rc == CFR_ECORRUPT) {
        mark_damaged(st, err);
        goto out;
    }
    if (rc == 0 && v.len == MBX_VALUE_LEN) {
        num = cfr_get_le32(v.data);
        last_gen = cfr_get_le64(v.data + 4);
    } else if (rc == CFR_ENOTFOUND || rc == 0 || rc == CFR_ELIMIT) {
        /* New (or a mangled entry: a new number orphans its files, which
         * costs a re-read, nothing more). */
        rc = cfr_kv_get(st->kv, CF_META, KEY_NEXT_MBX, strlen(KEY_NEXT_MBX), &v,
                        err);
        if (rc == 0 && v.len == 4) {
            num = cfr_get_le32(v.data);
        } else if (rc == CFR_ECORRUPT) {
            mark_damaged(st, err);
            goto out;
        } else if (rc != 0 && rc != CFR_ENOTFOUND && rc != CFR_ELIMIT) {
            goto out;
        }
        if (num == UINT32_MAX) {
            rc = CFR_ERR(err, CFR_ELIMIT, "state: mailbox numbers exhausted");
            goto out;
        }
        uint8_t next[4];
        cfr_put_le32(next, num + 1);
        if ((rc = cfr_kv_put(st->kv, CF_META, KEY_NEXT_MBX,
                             strlen(KEY_NEXT_MBX), next, 4, err)) != 0) {
            goto out;
        }
    } else {
        goto out;
    }
    /* Stored before any file is marked, so a crashed run's number is
     * never reused and its marks never pass for the next run's. */
    run->gen = last_gen + 1;
    uint8_t mv[MBX_VALUE_LEN];
    cfr_put_le32(mv, num);
    cfr_put_le64(mv + 4, run->gen);
    if ((rc = cfr_kv_put(st->kv, CF_MAILBOXES, mailbox, mlen, mv, sizeof(mv),
                         err)) != 0) {
        goto out;
    }
    be32_put(run->prefix, num);
    head_load(run);
    if ((run->batch = cfr_kv_batch_new(st->kv, err)) == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&st->lock);
    st->runs++;
    pthread_mutex_unlock(&st->lock);
    *run_r = run;
    run = NULL;
    rc = 0;
out:
    cfr_buf_fini(&v);
    if (run != NULL) {
        cfr_kv_batch_free(run->batch);
        cfr_buf_fini(&run->val);
        cfr_buf_fini(&run->enc);
        cfr_buf_fini(&run->sum);
        cfr_free(run);
    }
    return rc;
}

uint64_t
agent_state_generation(const struct agent_state_run *run)
{
    return run->gen;
}

/* Sets run->rkey to prefix || key; returns its length or 0 when too long. */
static size_t
rkey_make(struct agent_state_run *run, const uint8_t *key, size_t key_len)
{
    if (key_len > CFR_SNAP_KEY_MAX) {
        return 0;
    }
    memcpy(run->rkey, run->prefix, PREFIX_LEN);
    if (key_len > 0) {
        memcpy(run->rkey + PREFIX_LEN, key, key_len);
    }
    return PREFIX_LEN + key_len;
}

static int
maybe_commit(struct agent_state_run *run, struct cfr_err *err)
{
    if (cfr_kv_batch_count(run->batch) < AGENT_STATE_BATCH_OPS) {
        return 0;
    }
    return agent_state_flush(run, err);
}

int
agent_state_flush(struct agent_state_run *run, struct cfr_err *err)
{
    if (cfr_kv_batch_count(run->batch) == 0) {
        return 0;
    }
    /* Not synced: a cache (state.h, invariant 2). */
    int rc = cfr_kv_batch_commit(run->batch, false, err);
    if (rc == 0) {
        count_add(run->st, &run->st->stats.commits, 1);
    }
    return rc;
}

static int
queue_seen(struct agent_state_run *run, size_t rlen, struct cfr_err *err)
{
    uint8_t g[8];
    cfr_put_le64(g, run->gen);
    return cfr_kv_batch_put(run->batch, CF_SEEN, run->rkey, rlen, g, sizeof(g),
                            err);
}

/* ---- records ----------------------------------------------------------- */

static void
rec_sum(struct agent_state_run *run, const uint8_t *rkey, size_t rlen,
        const uint8_t *p, size_t n, uint8_t out[REC_SUM_LEN])
{
    uint8_t h[CFR_ID_LEN];
    cfr_buf_reset(&run->sum);
    /* Both fit: sum's cap is RKEY_MAX + REC_MAX. */
    int rc = cfr_buf_append(&run->sum, rkey, rlen, NULL);
    if (rc == 0) {
        rc = cfr_buf_append(&run->sum, p, n, NULL);
    }
    if (rc != 0) {
        memset(out, 0, REC_SUM_LEN); /* cannot match: a re-read */
        return;
    }
    cfr_id_plain(run->sum.data, run->sum.len, h);
    memcpy(out, h, REC_SUM_LEN);
}

/* Decodes run->val (the record of rkey) into rec; false when damaged. */
static bool
rec_decode(struct agent_state_run *run, const uint8_t *rkey, size_t rlen,
           struct agent_state_rec *rec, bool *racy_r)
{
    const uint8_t *p = run->val.data;
    size_t n = run->val.len;
    memset(rec, 0, sizeof(*rec));
    if (n < REC_FIXED + 12 + REC_SUM_LEN || p[0] != REC_LAYOUT || p[3] != 0) {
        return false;
    }
    uint8_t sum[REC_SUM_LEN];
    rec_sum(run, rkey, rlen, p, n - REC_SUM_LEN, sum);
    if (memcmp(sum, p + n - REC_SUM_LEN, REC_SUM_LEN) != 0) {
        return false;
    }
    n -= REC_SUM_LEN;
    if (p[1] < CFR_SNAP_MAILDIR_MESSAGE || p[1] > CFR_SNAP_OPAQUE) {
        return false;
    }
    rec->kind = (enum cfr_snap_kind)p[1];
    rec->in_new = (p[2] & REC_F_IN_NEW) != 0;
    *racy_r = (p[2] & REC_F_RACY) != 0;
    rec->mode = cfr_get_le32(p + 4);
    rec->size = cfr_get_le64(p + 8);
    rec->mtime_ns = (int64_t)cfr_get_le64(p + 16);
    rec->ino = cfr_get_le64(p + 24);
    rec->dev = cfr_get_le64(p + 32);
    size_t off = REC_FIXED;
    const uint8_t *fields[3];
    size_t lens[3];
    const size_t unit[3] = {1, 1, CFR_SNAP_ID_LEN};
    const size_t max[3] = {CFR_SNAP_INFO_MAX, CFR_SNAP_MESSAGE_ID_MAX,
                           CFR_SNAP_CHUNKS_MAX};
    for (int i = 0; i < 3; i++) {
        if (n - off < 4) {
            return false;
        }
        size_t count = cfr_get_le32(p + off);
        off += 4;
        if (count > max[i] || count * unit[i] > n - off) {
            return false;
        }
        fields[i] = p + off;
        lens[i] = count;
        off += count * unit[i];
    }
    if (off != n) {
        return false;
    }
    rec->info = fields[0];
    rec->info_len = lens[0];
    rec->message_id = fields[1];
    rec->message_id_len = lens[1];
    rec->chunk_ids = fields[2];
    rec->n_chunks = lens[2];
    return true;
}

void
agent_state_rec_from_entry(const struct agent_scan_entry *e,
                           struct agent_state_rec *rec)
{
    rec->kind = e->kind;
    rec->in_new = e->in_new;
    rec->mode = e->mode;
    rec->size = e->size;
    rec->mtime_ns = e->mtime_ns;
    rec->ino = e->ino;
    rec->dev = e->dev;
    rec->info = e->info;
    rec->info_len = e->info_len;
}

static bool
bytes_eq(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int
agent_state_lookup(struct agent_state_run *run,
                   const struct agent_scan_entry *e,
                   enum agent_state_verdict *verdict_r,
                   struct agent_state_rec *rec_r, struct cfr_err *err)
{
    struct agent_state *st = run->st;
    struct cfr_err gerr;
    bool racy = false;
    memset(rec_r, 0, sizeof(*rec_r));
    *verdict_r = AGENT_STATE_NEW;
    if (e->status != AGENT_SCAN_FILE) {
        return CFR_ERR(err, CFR_EINVAL, "state: lookup of a non-file entry");
    }
    size_t rlen = rkey_make(run, e->key, e->key_len);
    if (rlen == 0) {
        return CFR_ERR(err, CFR_EINVAL, "state: key of %zu bytes", e->key_len);
    }
    cfr_err_clear(&gerr);
    int rc = cfr_kv_get(st->kv, CF_FILES, run->rkey, rlen, &run->val, &gerr);
    if (rc == CFR_ENOTFOUND) {
        *verdict_r = AGENT_STATE_NEW;
    } else if (rc == CFR_ENOMEM) {
        return CFR_ERR(err, CFR_ENOMEM, "state: lookup");
    } else if (rc != 0) {
        /* The cache failed us: read the file; the next open starts empty. */
        mark_damaged(st, &gerr);
        *verdict_r = AGENT_STATE_CHANGED;
    } else if (!rec_decode(run, run->rkey, rlen, rec_r, &racy)) {
        count_add(st, &st->stats.damaged_records, 1);
        memset(rec_r, 0, sizeof(*rec_r));
        *verdict_r = AGENT_STATE_CHANGED;
    } else if (rec_r->kind != e->kind || rec_r->size != e->size ||
               rec_r->mtime_ns != e->mtime_ns || rec_r->ino != e->ino || racy) {
        *verdict_r = AGENT_STATE_CHANGED;
    } else if (rec_r->in_new != e->in_new || rec_r->mode != e->mode ||
               !bytes_eq(rec_r->info, rec_r->info_len, e->info, e->info_len)) {
        *verdict_r = AGENT_STATE_RENAMED;
    } else {
        *verdict_r = AGENT_STATE_UNCHANGED;
    }
    pthread_mutex_lock(&st->lock);
    st->stats.lookups++;
    st->stats.verdicts[*verdict_r]++;
    pthread_mutex_unlock(&st->lock);
    return 0;
}

int
agent_state_seen(struct agent_state_run *run, const uint8_t *key,
                 size_t key_len, struct cfr_err *err)
{
    size_t rlen = rkey_make(run, key, key_len);
    if (rlen == 0) {
        return CFR_ERR(err, CFR_EINVAL, "state: key of %zu bytes", key_len);
    }
    int rc = queue_seen(run, rlen, err);
    return rc != 0 ? rc : maybe_commit(run, err);
}

int
agent_state_record(struct agent_state_run *run, const uint8_t *key,
                   size_t key_len, const struct agent_state_rec *rec,
                   struct cfr_err *err)
{
    int rc;
    struct cfr_buf *b = &run->enc;
    size_t rlen = rkey_make(run, key, key_len);
    if (rlen == 0 || key_len == 0) {
        return CFR_ERR(err, CFR_EINVAL, "state: key of %zu bytes", key_len);
    }
    if (rec->kind < CFR_SNAP_MAILDIR_MESSAGE || rec->kind > CFR_SNAP_OPAQUE ||
        rec->info_len > CFR_SNAP_INFO_MAX ||
        rec->message_id_len > CFR_SNAP_MESSAGE_ID_MAX ||
        rec->n_chunks > CFR_SNAP_CHUNKS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "state: record over the limits");
    }
    uint8_t fixed[REC_FIXED];
    bool racy = rec->mtime_ns >= run->start_ns - AGENT_STATE_RACY_NS;
    fixed[0] = REC_LAYOUT;
    fixed[1] = (uint8_t)rec->kind;
    fixed[2] =
        (uint8_t)((rec->in_new ? REC_F_IN_NEW : 0) | (racy ? REC_F_RACY : 0));
    fixed[3] = 0;
    cfr_put_le32(fixed + 4, rec->mode);
    cfr_put_le64(fixed + 8, rec->size);
    cfr_put_le64(fixed + 16, (uint64_t)rec->mtime_ns);
    cfr_put_le64(fixed + 24, rec->ino);
    cfr_put_le64(fixed + 32, rec->dev);
    cfr_buf_reset(b);
    if ((rc = cfr_buf_append(b, fixed, sizeof(fixed), err)) != 0 ||
        (rc = cfr_buf_append_le32(b, (uint32_t)rec->info_len, err)) != 0 ||
        (rc = cfr_buf_append(b, rec->info, rec->info_len, err)) != 0 ||
        (rc = cfr_buf_append_le32(b, (uint32_t)rec->message_id_len, err)) !=
            0 ||
        (rc = cfr_buf_append(b, rec->message_id, rec->message_id_len, err)) !=
            0 ||
        (rc = cfr_buf_append_le32(b, (uint32_t)rec->n_chunks, err)) != 0 ||
        (rc = cfr_buf_append(b, rec->chunk_ids, rec->n_chunks * CFR_SNAP_ID_LEN,
                             err)) != 0) {
        return rc;
    }
    uint8_t sum[REC_SUM_LEN];
    rec_sum(run, run->rkey, rlen, b->data, b->len, sum);
    if ((rc = cfr_buf_append(b, sum, sizeof(sum), err)) != 0 ||
        (rc = cfr_kv_batch_put(run->batch, CF_FILES, run->rkey, rlen, b->data,
                               b->len, err)) != 0 ||
        (rc = queue_seen(run, rlen, err)) != 0) {
        return rc;
    }
    return maybe_commit(run, err);
}

int
agent_state_forget(struct agent_state_run *run, const uint8_t *key,
                   size_t key_len, struct cfr_err *err)
{
    int rc;
    size_t rlen = rkey_make(run, key, key_len);
    if (rlen == 0) {
        return CFR_ERR(err, CFR_EINVAL, "state: key of %zu bytes", key_len);
    }
    if ((rc = cfr_kv_batch_delete(run->batch, CF_FILES, run->rkey, rlen,
                                  err)) != 0 ||
        (rc = cfr_kv_batch_delete(run->batch, CF_SEEN, run->rkey, rlen, err)) !=
            0) {
        return rc;
    }
    return maybe_commit(run, err);
}

int
agent_state_keep_prefix(struct agent_state_run *run, const uint8_t *prefix,
                        size_t prefix_len, struct cfr_err *err)
{
    int rc;
    bool got = false;
    struct cfr_kv_entry e;
    size_t plen = rkey_make(run, prefix, prefix_len);
    if (plen == 0) {
        return CFR_ERR(err, CFR_EINVAL, "state: prefix of %zu bytes",
                       prefix_len);
    }
    struct cfr_kv_iter *it =
        cfr_kv_iter_new_prefix(run->st->kv, CF_SEEN, run->rkey, plen, err);
    if (it == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len > RKEY_MAX) {
            continue;
        }
        memcpy(run->rkey, e.key, e.key_len);
        if ((rc = queue_seen(run, e.key_len, err)) != 0 ||
            (rc = maybe_commit(run, err)) != 0) {
            break;
        }
    }
    cfr_kv_iter_free(it);
    return rc;
}

int
agent_state_unseen(struct agent_state_run *run, agent_state_key_fn *fn,
                   void *ctx, uint64_t *n_r, struct cfr_err *err)
{
    int rc;
    bool got = false;
    struct cfr_kv_entry e;
    uint64_t n = 0;
    if ((rc = agent_state_flush(run, err)) != 0) {
        goto out;
    }
    struct cfr_kv_iter *it = cfr_kv_iter_new_prefix(
        run->st->kv, CF_SEEN, run->prefix, PREFIX_LEN, err);
    if (it == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        /* A mangled mark is not "seen": the scan rewrites every mark it
         * makes, so only a file the scan did not meet keeps a bad one. */
        if (e.val_len == 8 && cfr_get_le64(e.val) == run->gen) {
            continue;
        }
        n++;
        if ((rc = fn(ctx, e.key + PREFIX_LEN, e.key_len - PREFIX_LEN)) != 0) {
            break;
        }
    }
    cfr_kv_iter_free(it);
out:
    if (n_r != NULL) {
        *n_r = n;
    }
    return rc;
}

/* Byte order of two keys, as RocksDB's default comparator. */
static int
key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c != 0 ? c : an < bn ? -1 : an > bn ? 1 : 0;
}

int
agent_state_walk(struct agent_state_run *run, agent_state_rec_fn *fn, void *ctx,
                 struct cfr_err *err)
{
    int rc;
    struct cfr_kv_iter *files = NULL;
    struct cfr_kv_iter *seen = NULL;
    struct cfr_kv_entry fe;
    struct cfr_kv_entry se;
    bool fgot = false;
    bool sgot = false;
    if ((rc = agent_state_flush(run, err)) != 0) {
        goto out;
    }
    files = cfr_kv_iter_new_prefix(run->st->kv, CF_FILES, run->prefix,
                                   PREFIX_LEN, err);
    seen = cfr_kv_iter_new_prefix(run->st->kv, CF_SEEN, run->prefix, PREFIX_LEN,
                                  err);
    if (files == NULL || seen == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
        goto out;
    }
    if ((rc = cfr_kv_iter_next(seen, &sgot, &se, err)) != 0) {
        goto out;
    }
    /* Both families hold the same keys (invariant 1): a merge join. */
    while ((rc = cfr_kv_iter_next(files, &fgot, &fe, err)) == 0 && fgot) {
        while (sgot && key_cmp(se.key, se.key_len, fe.key, fe.key_len) < 0) {
            if ((rc = cfr_kv_iter_next(seen, &sgot, &se, err)) != 0) {
                goto out;
            }
        }
        if (!sgot || key_cmp(se.key, se.key_len, fe.key, fe.key_len) != 0 ||
            se.val_len != 8 || cfr_get_le64(se.val) != run->gen) {
            continue;
        }
        struct agent_state_rec rec;
        bool racy = false;
        cfr_buf_reset(&run->val);
        if (fe.key_len > RKEY_MAX ||
            cfr_buf_append(&run->val, fe.val, fe.val_len, NULL) != 0 ||
            !rec_decode(run, fe.key, fe.key_len, &rec, &racy)) {
            count_add(run->st, &run->st->stats.damaged_records, 1);
            continue;
        }
        rec.seen_gen = run->gen;
        if ((rc = fn(ctx, fe.key + PREFIX_LEN, fe.key_len - PREFIX_LEN,
                     &rec)) != 0) {
            goto out;
        }
    }
out:
    cfr_kv_iter_free(files);
    cfr_kv_iter_free(seen);
    return rc;
}

void
agent_state_run_free(struct agent_state_run *run)
{
    if (run == NULL) {
        return;
    }
    pthread_mutex_lock(&run->st->lock);
    run->st->runs--;
    pthread_mutex_unlock(&run->st->lock);
    cfr_kv_batch_free(run->batch);
    cfr_buf_fini(&run->val);
    cfr_buf_fini(&run->enc);
    cfr_buf_fini(&run->sum);
    cfr_free(run);
}

int
agent_state_end(struct agent_state_run *run, struct cfr_err *err)
{
    int rc = agent_state_flush(run, err);
    agent_state_run_free(run);
    return rc;
}
