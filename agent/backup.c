/*
 * backup.c - one mailbox's backup run (see backup.h for the stages).
 *
 * Threads and queues:
 *
 *   scanner --jobs (<= JOBS_MAX files)--> workers x N
 *   workers --queries (segments of IDs)--> driver --answers--> workers
 *   workers --out queue (sealed objects, finished files;
 *             <= QUEUE_BYTES)--> driver --put--> sink
 *
 * The driver is the caller's thread: it alone calls the sink (the uplink
 * is driven by one thread) and owns the run's dedup set and the list of
 * files waiting for an acknowledgement.
 *
 * Invariants:
 *  1. An ID the driver assigns to a worker is sealed and queued by that
 *     worker before it reads another byte, so an assignment never dangles;
 *     a sealing failure fails the run.
 *  2. Objects and finished files share one FIFO, so when the driver meets
 *     a finished file, every object the file's worker was assigned is
 *     already with the sink. A file is recorded in the cache only after a
 *     flush, and only when none of its chunks is still assigned to a
 *     worker that has not queued it (a chunk another file met first).
 *  3. Nothing is committed unless every worker finished, the out queue is
 *     empty, every page was put and the sink acknowledged all of it (the
 *     sink's commit flushes first and needs the quorum).
 *  4. The cache generation ends only after a successful commit; a failed
 *     or stopped run frees it, so the next run scans again.
 */
#include "backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h> /* NAME_MAX */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h> /* strncasecmp */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#if defined(__GLIBC__)
#include <malloc.h> /* mallopt */
#endif
#include <time.h>
#include <unistd.h>

#include "buf.h"   /* struct cfr_buf */
#include "chunk.h" /* the chunker */
#include "id.h"    /* cfr_id_plain: reference-list page IDs */
#include "log.h"   /* cfr_log */
#include "mem.h"   /* cfr_malloc */
#include "mime.h"  /* MIME cut hints */
#include "scan.h"  /* the mailbox walk */
#include "snap.h"  /* manifest, reference list, header */

#define ID_LEN          CFR_ID_LEN
#define SEG_MAX         AGENT_UPLINK_IDS_MAX
#define PAGE_BATCH_MAX  512
#define PAGE_BATCH_SIZE ((size_t)2 << 20)
#define MERGE_BUF_IDS   1024
#define RUNS_MAX        4096
#define ENV_SLACK       ((size_t)1 << 20)

/* Dedup set states. */
#define ID_PENDING 1 /* assigned to a worker, not yet with the sink */
#define ID_DONE    2 /* with the sink, or present on every vault */

#define STAT_ADD(b, field, v)                                                  \
    __atomic_fetch_add(&(b)->stats.field, (uint64_t)(v), __ATOMIC_RELAXED)

/* ---- the run's dedup set ------------------------------------------------ */

struct idset {
    uint8_t (*ids)[ID_LEN];
    uint8_t *st; /* 0 empty, ID_PENDING, ID_DONE */
    size_t n, nslots;
};

static size_t
idset_slot(const struct idset *s, const uint8_t *id)
{
    /* Chunk and page IDs are hashes: their bytes are already uniform. */
    size_t h = (size_t)cfr_get_le64(id) & (s->nslots - 1);
    while (s->st[h] != 0 && memcmp(s->ids[h], id, ID_LEN) != 0) {
        h = (h + 1) & (s->nslots - 1);
    }
    return h;
}

static uint8_t
idset_get(const struct idset *s, const uint8_t *id)
{
    return s->nslots == 0 ? 0 : s->st[idset_slot(s, id)];
}

/* Rehashes into nslots slots, keeping only pending IDs when prune. */
static int
idset_rehash(struct idset *s, size_t nslots, bool prune, struct cfr_err *err)
{
    struct idset t = {0};
    t.nslots = nslots;
    t.ids = cfr_calloc(nslots, ID_LEN);
    t.st = cfr_calloc(nslots, 1);
    if (t.ids == NULL || t.st == NULL) {
        cfr_free(t.ids);
        cfr_free(t.st);
        return CFR_ERR(err, CFR_ENOMEM, "backup: dedup set");
    }
    for (size_t i = 0; i < s->nslots; i++) {
        if (s->st[i] == 0 || (prune && s->st[i] != ID_PENDING)) {
            continue;
        }
        size_t h = idset_slot(&t, s->ids[i]);
        memcpy(t.ids[h], s->ids[i], ID_LEN);
        t.st[h] = s->st[i];
        t.n++;
    }
    cfr_free(s->ids);
    cfr_free(s->st);
    *s = t;
    return 0;
}

static int
idset_put(struct idset *s, const uint8_t *id, uint8_t state,
          struct cfr_err *err)
{
    int rc;
    if (s->nslots == 0 &&
        (rc = idset_rehash(s, (size_t)1 << 12, false, err)) != 0) {
        return rc;
    }
    size_t h = idset_slot(s, id);
    if (s->st[h] != 0) {
        s->st[h] = state;
        return 0;
    }
    if (2 * (s->n + 1) > s->nslots) {
        /* Past the bound, forget what the sink already has (backup.h). */
        bool prune = s->n + 1 > AGENT_BACKUP_DEDUP_MAX;
        size_t nslots = prune ? s->nslots : s->nslots * 2;
        if ((rc = idset_rehash(s, nslots, prune, err)) != 0) {
            return rc;
        }
        h = idset_slot(s, id);
    }
    memcpy(s->ids[h], id, ID_LEN);
    s->st[h] = state;
    s->n++;
    return 0;
}

static void
idset_fini(struct idset *s)
{
    cfr_free(s->ids);
    cfr_free(s->st);
    memset(s, 0, sizeof(*s));
}

/* ---- external sort of the referenced IDs -------------------------------- */

struct idsort {
    uint8_t *mem;
    size_t n, cap;
    int fd;
    size_t nruns;
    uint64_t run_n[RUNS_MAX]; /* IDs per run, runs back to back in fd */
    char dir[512];
};

typedef int idsort_fn(void *ctx, const uint8_t *id, struct cfr_err *err);

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

/* Sorts mem and removes duplicates. */
static void
idsort_sort_mem(struct idsort *s)
{
    if (s->n < 2) {
        return;
    }
    qsort(s->mem, s->n, ID_LEN, id_cmp);
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (memcmp(s->mem + i * ID_LEN, s->mem + (k - 1) * ID_LEN, ID_LEN) !=
            0) {
            memmove(s->mem + k * ID_LEN, s->mem + i * ID_LEN, ID_LEN);
            k++;
        }
    }
    s->n = k;
}

static int
write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
idsort_spill(struct idsort *s, struct cfr_err *err)
{
    idsort_sort_mem(s);
    if (s->nruns == RUNS_MAX) {
        return CFR_ERR(err, CFR_ELIMIT, "backup: reference list too large");
    }
    if (s->fd < 0) {
        char path[600];
        int k = snprintf(path, sizeof(path), "%s/coffer-refs.XXXXXX", s->dir);
        if (k < 0 || (size_t)k >= sizeof(path)) {
            return CFR_ERR(err, CFR_EINVAL, "backup: temporary path too long");
        }
        if ((s->fd = mkstemp(path)) < 0) {
            return CFR_ERR_ERRNO(err, CFR_EIO, "backup: temporary file in %s",
                                 s->dir);
        }
        /* Anonymous from now on: nothing to clean up after a crash. */
        (void)unlink(path);
    }
    if (write_all(s->fd, s->mem, s->n * ID_LEN) != 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "backup: writing sorted IDs");
    }
    s->run_n[s->nruns++] = s->n;
    s->n = 0;
    return 0;
}

static int
idsort_add(struct idsort *s, const uint8_t *id, struct cfr_err *err)
{
    int rc;
    if (s->n == s->cap && (rc = idsort_spill(s, err)) != 0) {
        return rc;
    }
    memcpy(s->mem + s->n * ID_LEN, id, ID_LEN);
    s->n++;
    return 0;
}

struct merge_run {
    uint64_t off, left; /* file offset and IDs not yet read */
    uint8_t *buf;
    size_t pos, cnt;
};

static int
merge_fill(int fd, struct merge_run *r, struct cfr_err *err)
{
    size_t want = r->left < MERGE_BUF_IDS ? (size_t)r->left : MERGE_BUF_IDS;
    size_t got = 0;
    while (got < want * ID_LEN) {
        ssize_t k =
            pread(fd, r->buf + got, want * ID_LEN - got, (off_t)(r->off + got));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return CFR_ERR_ERRNO(err, CFR_EIO, "backup: reading sorted IDs");
        }
        got += (size_t)k;
    }
    r->off += got;
    r->left -= want;
    r->pos = 0;
    r->cnt = want;
    return 0;
}

/* Calls fn with every ID added, in order, each once. */
static int
idsort_emit(struct idsort *s, idsort_fn *fn, void *ctx, struct cfr_err *err)
{
    int rc = 0;
    struct merge_run *runs = NULL;
    if (s->nruns == 0) {
        idsort_sort_mem(s);
        for (size_t i = 0; i < s->n && rc == 0; i++) {
            rc = fn(ctx, s->mem + i * ID_LEN, err);
        }
        return rc;
    }
    if (s->n > 0 && (rc = idsort_spill(s, err)) != 0) {
        return rc;
    }
    runs = cfr_calloc(s->nruns, sizeof(*runs));
    if (runs == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "backup: merge");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < s->nruns; i++) {
        runs[i].off = off;
        runs[i].left = s->run_n[i];
        off += s->run_n[i] * ID_LEN;
        if ((runs[i].buf = cfr_malloc(MERGE_BUF_IDS * ID_LEN)) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "backup: merge");
            goto out;
        }
        if ((rc = merge_fill(s->fd, &runs[i], err)) != 0) {
            goto out;
        }
    }
    uint8_t last[ID_LEN];
    bool have_last = false;
    for (;;) {
        struct merge_run *min = NULL;
        for (size_t i = 0; i < s->nruns; i++) {
            struct merge_run *r = &runs[i];
            if (r->pos < r->cnt &&
                (min == NULL ||
                 memcmp(r->buf + r->pos * ID_LEN, min->buf + min->pos * ID_LEN,
                        ID_LEN) < 0)) {
                min = r;
            }
        }
        if (min == NULL) {
            break;
        }
        const uint8_t *id = min->buf + min->pos * ID_LEN;
        if (!have_last || memcmp(id, last, ID_LEN) != 0) {
            memcpy(last, id, ID_LEN);
            have_last = true;
            if ((rc = fn(ctx, id, err)) != 0) {
                goto out;
            }
        }
        if (++min->pos == min->cnt && min->left > 0 &&
            (rc = merge_fill(s->fd, min, err)) != 0) {
            goto out;
        }
    }
out:
    if (runs != NULL) {
        for (size_t i = 0; i < s->nruns; i++) {
            cfr_free(runs[i].buf);
        }
    }
    cfr_free(runs);
    return rc;
}

static void
idsort_fini(struct idsort *s)
{
    cfr_free(s->mem);
    if (s->fd >= 0) {
        close(s->fd);
    }
    s->mem = NULL;
    s->fd = -1;
}

/* ---- queues ------------------------------------------------------------- */

/* A new or changed file for a worker (one allocation). */
struct job {
    struct job *next;
    enum cfr_snap_kind kind;
    bool in_new;
    uint32_t mode;
    uint64_t size, ino, dev;
    int64_t mtime_ns;
    uint8_t *key, *info;
    size_t key_len, info_len;
    char *path;
    uint8_t data[];
};

/* A file read to the end, waiting for its chunks' acknowledgement. */
struct fileitem {
    struct fileitem *next;
    uint8_t *key;
    size_t key_len;
    struct agent_state_rec rec; /* pointers into data */
    uint8_t data[];
};

/* The out queue: a sealed object, or (file != NULL) a finished file. */
struct item {
    struct item *next;
    struct fileitem *file;
    uint8_t id[ID_LEN];
    int kind;
    uint8_t mask;
    size_t len;
    uint8_t data[];
};

/* A worker's segment of IDs waiting for the driver's answer. */
struct query {
    struct query *next;
    const uint8_t *ids;
    size_t n;
    uint8_t *assign; /* per ID: the vaults to put it to, 0 = nothing to do */
    bool done;
};

struct backup;

struct worker {
    struct backup *b;
    pthread_t th;
    bool started;
    struct cfr_session *sess;
    struct cfr_chunker *ch;
    uint8_t *buf; /* a chunk's tail, then a block */
    size_t buf_cap;
    bool big; /* holds the run's one large read buffer (b->big_held) */
    uint64_t *hints;
    size_t *seg_off, *seg_len;
    uint8_t *seg_ids, *seg_assign;
    size_t seg_n;
    uint8_t *fids; /* the current file's chunk IDs */
    size_t fn;
    size_t cstart; /* where the current chunk starts in buf */
    uint8_t msgid[CFR_SNAP_MESSAGE_ID_MAX];
    size_t msgid_len;
    struct cfr_buf env;
    struct query q;
};

struct pagebatch {
    size_t n, bytes;
    int kind;
    uint8_t ids[PAGE_BATCH_MAX][ID_LEN];
    uint8_t *data[PAGE_BATCH_MAX];
    size_t len[PAGE_BATCH_MAX];
    uint8_t lack[PAGE_BATCH_MAX];
};

struct backup {
    const char *name;
    const char *root;
    int rootfd;
    const struct cfr_keyring *kr;
    struct cfr_session *sess;
    const struct agent_backup_sink *sink;
    struct agent_backup_opts o;
    struct cfr_chunk_params cp;
    uint64_t gear[CFR_CHUNK_GEAR_LEN];

    pthread_mutex_t state_mu; /* every call on run */
    struct agent_state_run *run;

    pthread_mutex_t mu;
    pthread_cond_t cv_coord; /* the driver: something to do */
    pthread_cond_t cv_jobs;  /* workers: a job, or the end */
    pthread_cond_t cv_jfull; /* the scanner: room for a job */
    pthread_cond_t cv_work;  /* workers: an answer */
    pthread_cond_t cv_space; /* workers: room in the out queue */
    struct job *jhead, *jtail;
    size_t njobs;
    bool scan_done;
    struct query *qhead, *qtail;
    size_t q_ids;
    unsigned busy;  /* workers reading, chunking or sealing */
    unsigned alive; /* workers not yet finished */
    bool big_held;  /* a worker's buffer is past AGENT_BACKUP_READ_SMALL */
    struct item *ohead, *otail;
    size_t obytes;
    bool failed;
    int fail_rc;
    struct cfr_err fail_err;

    /* Driver only. */
    struct idset seen;
    struct fileitem *pend;
    size_t npend;
    struct idsort refs;
    uint8_t uids[SEG_MAX][ID_LEN];
    uint8_t *ufirst[SEG_MAX];
    uint8_t ulack[SEG_MAX];
    uint16_t utab[2 * SEG_MAX];
    struct pagebatch *pb;
    struct cfr_buf penv;
    struct cfr_snap_manifest_writer *mw;
    struct cfr_snap_refs_writer *rw;
    uint8_t vids[SEG_MAX][ID_LEN]; /* reused IDs to verify */
    size_t nv;
    uint8_t (*lost)[ID_LEN]; /* reused IDs the vaults lack (sorted) */
    size_t nlost;

    struct agent_backup_stats stats;
};

static void
fail(struct backup *b, int rc, const struct cfr_err *err)
{
    pthread_mutex_lock(&b->mu);
    if (!b->failed) {
        b->failed = true;
        b->fail_rc = rc != 0 ? rc : CFR_EINTERNAL;
        if (err != NULL && err->code != 0) {
            b->fail_err = *err;
        } else {
            CFR_ERR(&b->fail_err, b->fail_rc, "backup: run failed");
        }
    }
    pthread_cond_broadcast(&b->cv_coord);
    pthread_cond_broadcast(&b->cv_jobs);
    pthread_cond_broadcast(&b->cv_jfull);
    pthread_cond_broadcast(&b->cv_work);
    pthread_cond_broadcast(&b->cv_space);
    pthread_mutex_unlock(&b->mu);
}

static bool
failed(struct backup *b)
{
    pthread_mutex_lock(&b->mu);
    bool f = b->failed;
    pthread_mutex_unlock(&b->mu);
    return f;
}

/* Lowers the calling thread's CPU and I/O priority (backup.h). */
static void
apply_nice(const struct backup *b)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (b->o.cpu_nice > 0 &&
        setpriority(PRIO_PROCESS, (id_t)tid, b->o.cpu_nice) != 0) {
        cfr_log(CFR_LOG_WARN, "agent.backup.nice", "what=cpu errno=%d", errno);
    }
    if (b->o.io_class != AGENT_BACKUP_IO_KEEP) {
        /* IOPRIO_WHO_PROCESS = 1; the value is class << 13 | level. */
        int level =
            b->o.io_class == AGENT_BACKUP_IO_BEST_EFFORT ? b->o.io_level : 0;
        long prio = ((long)b->o.io_class << 13) | level;
        if (syscall(SYS_ioprio_set, 1, (int)tid, prio) != 0) {
            cfr_log(CFR_LOG_WARN, "agent.backup.nice", "what=io errno=%d",
                    errno);
        }
    }
}

/* ---- the scanner -------------------------------------------------------- */

static int
enqueue_job(struct backup *b, const struct agent_scan_entry *e)
{
    struct job *j =
        cfr_malloc(sizeof(*j) + e->key_len + e->info_len + e->path_len + 1);
    if (j == NULL) {
        struct cfr_err err;
        CFR_ERR(&err, CFR_ENOMEM, "backup: job");
        fail(b, CFR_ENOMEM, &err);
        return CFR_ENOMEM;
    }
    memset(j, 0, sizeof(*j));
    j->kind = e->kind;
    j->in_new = e->in_new;
    j->mode = e->mode;
    j->size = e->size;
    j->ino = e->ino;
    j->dev = e->dev;
    j->mtime_ns = e->mtime_ns;
    j->key = j->data;
    j->key_len = e->key_len;
    memcpy(j->key, e->key, e->key_len);
    j->info = j->key + e->key_len;
    j->info_len = e->info_len;
    if (e->info_len > 0) {
        memcpy(j->info, e->info, e->info_len);
    }
    j->path = (char *)(j->info + e->info_len);
    memcpy(j->path, e->path, e->path_len);
    j->path[e->path_len] = '\0';

    pthread_mutex_lock(&b->mu);
    while (b->njobs >= AGENT_BACKUP_JOBS_MAX && !b->failed) {
        pthread_cond_wait(&b->cv_jfull, &b->mu);
    }
    int rc = b->failed ? b->fail_rc : 0;
    if (rc == 0) {
        if (b->jtail != NULL) {
            b->jtail->next = j;
        } else {
            b->jhead = j;
        }
        b->jtail = j;
        b->njobs++;
        pthread_cond_signal(&b->cv_jobs);
        j = NULL;
    }
    pthread_mutex_unlock(&b->mu);
    cfr_free(j);
    return rc;
}

static int
scan_cb(void *ctx, const struct agent_scan_entry *e)
{
    struct backup *b = ctx;
    struct cfr_err err;
    int rc = 0;
    enum agent_state_verdict v = AGENT_STATE_UNCHANGED;
    struct agent_state_rec rec;

    memset(&err, 0, sizeof(err));
    if (failed(b)) {
        return CFR_EINTERNAL;
    }
    if (e->status == AGENT_SCAN_SKIPPED) {
        return 0;
    }
    if (e->status == AGENT_SCAN_ERROR) {
        /* What the error hides is kept, never taken for deleted. */
        STAT_ADD(b, scan_errors, 1);
        pthread_mutex_lock(&b->state_mu);
        rc = agent_state_keep_prefix(b->run, e->key, e->key_len, &err);
        pthread_mutex_unlock(&b->state_mu);
        goto out;
    }
    STAT_ADD(b, scanned, 1);
    pthread_mutex_lock(&b->state_mu);
    rc = agent_state_lookup(b->run, e, &v, &rec, &err);
    if (rc == 0) {
        STAT_ADD(b, verdicts[v], 1);
        if (v == AGENT_STATE_UNCHANGED) {
            rc = agent_state_seen(b->run, e->key, e->key_len, &err);
        } else if (v == AGENT_STATE_RENAMED) {
            /* Same content: the old chunk list under the new name. */
            struct agent_state_rec r = rec;
            agent_state_rec_from_entry(e, &r);
            rc = agent_state_record(b->run, e->key, e->key_len, &r, &err);
        }
    }
    pthread_mutex_unlock(&b->state_mu);
    if (rc == 0 && (v == AGENT_STATE_NEW || v == AGENT_STATE_CHANGED)) {
        return enqueue_job(b, e);
    }
out:
    if (rc != 0) {
        fail(b, rc, &err);
    }
    return rc;
}

static void *
scanner_main(void *arg)
{
    struct backup *b = arg;
    struct cfr_err err;
    memset(&err, 0, sizeof(err));
    apply_nice(b);
    int rc = agent_scan_run(b->root, NULL, scan_cb, b, NULL, &err);
    if (rc != 0) {
        fail(b, rc, &err);
    }
    pthread_mutex_lock(&b->mu);
    b->scan_done = true;
    pthread_cond_broadcast(&b->cv_jobs);
    pthread_cond_broadcast(&b->cv_coord);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- workers ------------------------------------------------------------ */

static int
push_item(struct backup *b, struct item *it)
{
    pthread_mutex_lock(&b->mu);
    while (b->obytes > 0 && b->obytes + it->len > AGENT_BACKUP_QUEUE_BYTES &&
           !b->failed) {
        pthread_cond_wait(&b->cv_space, &b->mu);
    }
    int rc = b->failed ? b->fail_rc : 0;
    if (rc == 0) {
        if (b->otail != NULL) {
            b->otail->next = it;
        } else {
            b->ohead = it;
        }
        b->otail = it;
        b->obytes += it->len;
        pthread_cond_signal(&b->cv_coord);
        it = NULL;
    }
    pthread_mutex_unlock(&b->mu);
    if (it != NULL) {
        cfr_free(it->file);
        cfr_free(it);
    }
    return rc;
}

/*
 * Sends the segment's IDs to the driver, waits for the answer, seals and
 * queues what this worker was assigned (invariant 1), and appends the IDs
 * to the file's chunk list.
 */
static int
resolve(struct worker *w, struct cfr_err *err)
{
    struct backup *b = w->b;
    int rc = 0;
    if (w->seg_n == 0) {
        return 0;
    }
    w->q.next = NULL;
    w->q.ids = w->seg_ids;
    w->q.n = w->seg_n;
    w->q.assign = w->seg_assign;
    w->q.done = false;
    pthread_mutex_lock(&b->mu);
    if (b->qtail != NULL) {
        b->qtail->next = &w->q;
    } else {
        b->qhead = &w->q;
    }
    b->qtail = &w->q;
    b->q_ids += w->seg_n;
    b->busy--;
    pthread_cond_signal(&b->cv_coord);
    while (!w->q.done && !b->failed) {
        pthread_cond_wait(&b->cv_work, &b->mu);
    }
    b->busy++;
    rc = b->failed ? b->fail_rc : 0;
    pthread_mutex_unlock(&b->mu);
    if (rc != 0) {
        /* The driver may still hold the query: wait until it lets go. */
        pthread_mutex_lock(&b->mu);
        while (!w->q.done) {
            pthread_cond_wait(&b->cv_work, &b->mu);
        }
        pthread_mutex_unlock(&b->mu);
        return CFR_ERR(err, rc, "backup: run failed");
    }
    for (size_t i = 0; i < w->seg_n; i++) {
        const uint8_t *id = w->seg_ids + i * ID_LEN;
        if (w->seg_assign[i] == 0) {
            continue;
        }
        if ((rc = cfr_env_seal(w->sess, CFR_ENV_CHUNK, id,
                               w->buf + w->seg_off[i], w->seg_len[i], &w->env,
                               err)) != 0) {
            return rc;
        }
        struct item *it = cfr_malloc(sizeof(*it) + w->env.len);
        if (it == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "backup: sealed chunk");
        }
        memset(it, 0, sizeof(*it));
        memcpy(it->id, id, ID_LEN);
        it->kind = AGENT_UPLINK_SEALED;
        it->mask = w->seg_assign[i];
        it->len = w->env.len;
        memcpy(it->data, w->env.data, w->env.len);
        STAT_ADD(b, chunks_sealed, 1);
        STAT_ADD(b, bytes_sealed, w->env.len);
        if ((rc = push_item(b, it)) != 0) {
            return CFR_ERR(err, rc, "backup: run failed");
        }
    }
    memcpy(w->fids + w->fn * ID_LEN, w->seg_ids, w->seg_n * ID_LEN);
    w->fn += w->seg_n;
    w->seg_n = 0;
    return 0;
}

/* The current chunk ends at end (an index into buf). */
static int
emit(struct worker *w, size_t end, struct cfr_err *err)
{
    if (w->fn + w->seg_n + 1 > CFR_SNAP_CHUNKS_MAX) {
        return CFR_ERR(err, CFR_ELIMIT, "more than %d chunks",
                       CFR_SNAP_CHUNKS_MAX);
    }
    size_t i = w->seg_n;
    w->seg_off[i] = w->cstart;
    w->seg_len[i] = end - w->cstart;
    cfr_keyring_chunk_id(w->b->kr, w->buf + w->cstart, end - w->cstart,
                         w->seg_ids + i * ID_LEN);
    w->seg_n++;
    w->cstart = end;
    STAT_ADD(w->b, chunks, 1);
    return w->seg_n == SEG_MAX ? resolve(w, err) : 0;
}

/* Feeds buf[at, at + len) to the chunker. */
static int
feed(struct worker *w, size_t at, size_t len, struct cfr_err *err)
{
    int rc;
    while (len > 0) {
        size_t k = cfr_chunker_next(w->ch, w->buf + at, len);
        if (k == 0) {
            break;
        }
        at += k;
        len -= k;
        if ((rc = emit(w, at, err)) != 0) {
            return rc;
        }
    }
    return 0;
}

/*
 * Where the next mbox message starts in r[from, n): a "From " line at
 * the start of the file or after an empty line. prev holds the two bytes
 * before r[0].
 */
static size_t
mbox_next(const uint8_t *r, size_t n, size_t from, const uint8_t prev[2])
{
    for (size_t j = from; j + 5 <= n; j++) {
        if (r[j] != 'F' || memcmp(r + j, "From ", 5) != 0) {
            continue;
        }
        uint8_t a = j >= 2 ? r[j - 2] : (j == 1 ? prev[1] : prev[0]);
        uint8_t c = j >= 1 ? r[j - 1] : prev[1];
        if (a == '\n' && c == '\n') {
            return j;
        }
    }
    return n;
}

/*
 * One block of an mbox at buf[base, base + n), file offset pos: a cut
 * where each message starts, then that message's hints (its body start
 * and, when the whole message is in the block, its MIME cuts), so each
 * message chunks as it would as a Maildir file (docs/FORMAT.md).
 */
static int
feed_mbox(struct worker *w, uint64_t pos, size_t base, size_t n, bool last,
          const uint8_t prev[2], struct cfr_err *err)
{
    int rc;
    const uint8_t *r = w->buf + base;
    size_t cur = 0;
    while (cur < n) {
        size_t s = mbox_next(r, n, cur, prev);
        if (s > cur && (rc = feed(w, base + cur, s - cur, err)) != 0) {
            return rc;
        }
        if (s >= n) {
            break;
        }
        size_t c = cfr_chunker_cut(w->ch);
        if (c > 0 && (rc = emit(w, base + s, err)) != 0) {
            return rc;
        }
        size_t e = mbox_next(r, n, s + 1, prev);
        const uint8_t *nl = memchr(r + s, '\n', e - s);
        size_t nh = 0;
        if (nl != NULL && (size_t)(nl - r) + 1 < e) {
            size_t body = (size_t)(nl - r) + 1;
            w->hints[nh++] = pos + body;
            if (e < n || last) {
                size_t k = cfr_mime_cuts(r + body, e - body, w->hints + nh,
                                         CFR_CHUNK_HINTS_MAX - nh);
                for (size_t i = 0; i < k; i++) {
                    w->hints[nh + i] += pos + body;
                }
                nh += k;
            }
        }
        if ((rc = cfr_chunker_set_hints(w->ch, w->hints, nh, err)) != 0 ||
            (rc = feed(w, base + s, e - s, err)) != 0) {
            return rc;
        }
        cur = e;
    }
    return 0;
}

/* Reads up to want bytes; fewer only at the end of the file. */
static ssize_t
read_full(int fd, uint8_t *p, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, p + got, want - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int
agent_backup_message_id(const uint8_t *msg, size_t len, size_t *off_r,
                        size_t *len_r)
{
    static const char name[] = "message-id:";
    size_t i = 0;
    while (i < len) {
        const uint8_t *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl != NULL ? (size_t)(nl - msg) : len;
        size_t ll = end - i;
        if (ll == 0 || (ll == 1 && msg[i] == '\r')) {
            return 0; /* the blank line: end of the header block */
        }
        if (ll >= sizeof(name) - 1 &&
            strncasecmp((const char *)msg + i, name, sizeof(name) - 1) == 0) {
            size_t a = i + sizeof(name) - 1;
            size_t z = end;
            /* A folded value continues on lines starting with a blank. */
            while (z + 1 < len && (msg[z + 1] == ' ' || msg[z + 1] == '\t')) {
                const uint8_t *nx = memchr(msg + z + 1, '\n', len - z - 1);
                z = nx != NULL ? (size_t)(nx - msg) : len;
            }
            while (a < z && (msg[a] == ' ' || msg[a] == '\t' ||
                             msg[a] == '\r' || msg[a] == '\n')) {
                a++;
            }
            while (z > a && (msg[z - 1] == ' ' || msg[z - 1] == '\t' ||
                             msg[z - 1] == '\r' || msg[z - 1] == '\n')) {
                z--;
            }
            if (z == a || z - a > CFR_SNAP_MESSAGE_ID_MAX) {
                return 0;
            }
            *off_r = a;
            *len_r = z - a;
            return 1;
        }
        if (nl == NULL) {
            return 0;
        }
        i = end + 1;
    }
    return 0;
}

/* A per-file error: counted, logged, and the old record carried over. */
static int
file_error(struct worker *w, const struct job *j, int sys_errno, int code,
           struct cfr_err *err)
{
    struct backup *b = w->b;
    const char *why = "other";
    if (code == CFR_ELIMIT) {
        STAT_ADD(b, err_too_large, 1);
        why = "too-many-chunks";
    } else if (sys_errno == ENOENT) {
        STAT_ADD(b, err_vanished, 1);
        why = "vanished";
    } else if (sys_errno == EACCES || sys_errno == EPERM) {
        STAT_ADD(b, err_permission, 1);
        why = "permission";
    } else if (sys_errno == EIO) {
        STAT_ADD(b, err_io, 1);
        why = "io";
    } else {
        STAT_ADD(b, err_other, 1);
    }
    STAT_ADD(b, file_errors, 1);
    char q[256];
    cfr_log(CFR_LOG_WARN, "agent.backup.file", "path=%s reason=%s errno=%d",
            cfr_log_quote(j->path, q, sizeof(q)), why, sys_errno);
    pthread_mutex_lock(&b->state_mu);
    int rc = agent_state_seen(b->run, j->key, j->key_len, err);
    pthread_mutex_unlock(&b->state_mu);
    return rc;
}

/*
 * Where a Maildir message went when its name vanished between the scan and
 * the read: Dovecot renames a message for a flag change or a move from new/
 * to cur/, and only an expunge unlinks it. Like the scan (scan.h, invariant
 * 3), the folder's new/ and cur/ are read again for the same unique base
 * name, AGENT_SCAN_REREAD_ROUNDS times at most (it may move again while we
 * look). Only this rare path pays for the directory reads.
 *
 * On success returns the open file and fills path_r (cap bytes), *in_new_r
 * and info_r, *info_len_r (the name from the first ':', at most NAME_MAX
 * bytes as the name is). Returns -1 with errno ENOENT when no name holds it
 * any more (it was deleted), or another errno when the file found cannot be
 * opened. The folder is found from the path, so the key need not be parsed.
 */
static int
reopen_renamed(struct backup *b, const struct job *j, char *path_r, size_t cap,
               bool *in_new_r, uint8_t *info_r, size_t *info_len_r)
{
    const char *slash = strrchr(j->path, '/');
    if (slash == NULL || slash - j->path < 3) {
        errno = ENOENT;
        return -1;
    }
    const char *name = slash + 1;
    const char *colon = strchr(name, ':');
    size_t blen = colon != NULL ? (size_t)(colon - name) : strlen(name);
    /* The folder's directory: the path before "new/" or "cur/". */
    size_t flen = (size_t)(slash - j->path) - 3;
    char folder[AGENT_SCAN_PATH_MAX + 1];
    if (blen == 0 || flen + 2 > sizeof(folder)) {
        errno = ENOENT;
        return -1;
    }
    if (flen == 0) {
        folder[0] = '.';
        folder[1] = '\0';
    } else {
        memcpy(folder, j->path, flen);
        folder[flen] = '\0';
    }
    int ffd = openat(b->rootfd, folder,
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (ffd < 0) {
        errno = ENOENT; /* the folder went: its messages went with it */
        return -1;
    }
    int fd = -1;
    int e = ENOENT;
    for (unsigned r = 0; r < AGENT_SCAN_REREAD_ROUNDS && fd < 0 && e == ENOENT;
         r++) {
        static const char *const subs[2] = {"new", "cur"};
        for (int i = 0; i < 2 && fd < 0 && e == ENOENT; i++) {
            int dfd = openat(ffd, subs[i],
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
            if (d == NULL) {
                if (dfd >= 0) {
                    close(dfd);
                }
                continue;
            }
            for (;;) {
                const struct dirent *de = readdir(d);
                if (de == NULL) {
                    break;
                }
                const char *n = de->d_name;
                size_t nl = strlen(n);
                if (nl < blen || memcmp(n, name, blen) != 0 ||
                    (n[blen] != '\0' && n[blen] != ':')) {
                    continue;
                }
                if (nl > NAME_MAX || flen + 4 + nl + 1 > cap) {
                    continue; /* cannot be named in the record: not ours */
                }
                fd = openat(dirfd(d), n,
                            O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
                                O_NONBLOCK);
                if (fd < 0) {
                    e = errno; /* ENOENT: renamed again, look again */
                    if (e == ENOENT) {
                        continue;
                    }
                    break;
                }
                memcpy(path_r, j->path, flen);
                memcpy(path_r + flen, subs[i], 3);
                path_r[flen + 3] = '/';
                memcpy(path_r + flen + 4, n, nl + 1);
                *in_new_r = i == 0;
                *info_len_r = nl - blen;
                memcpy(info_r, n + blen, nl - blen);
                break;
            }
            closedir(d);
        }
    }
    close(ffd);
    if (fd < 0) {
        errno = e;
    }
    return fd;
}

/* Reads, chunks and seals one file; returns only run-fatal errors. */
/*
 * Takes the run's one allowance for a read buffer past
 * AGENT_BACKUP_READ_SMALL: workers share it, so that large files, rare in
 * mail, cost one block, not one per worker. Waiting counts as not busy,
 * like a query: the holder may be waiting on an answer the driver sends
 * only when every busy worker asked.
 */
static int
big_take(struct worker *w, struct cfr_err *err)
{
    struct backup *b = w->b;
    int rc;
    pthread_mutex_lock(&b->mu);
    b->busy--;
    pthread_cond_signal(&b->cv_coord);
    while (b->big_held && !b->failed) {
        pthread_cond_wait(&b->cv_work, &b->mu);
    }
    b->busy++;
    rc = b->failed ? b->fail_rc : 0;
    if (rc == 0) {
        b->big_held = true;
        w->big = true;
    }
    pthread_mutex_unlock(&b->mu);
    return rc != 0 ? CFR_ERR(err, rc, "backup: run failed") : 0;
}

/* Gives the allowance back with the memory: the buffer shrinks to its
 * small size (freed outright, so that the allocator returns the pages). */
static void
big_give(struct worker *w)
{
    struct backup *b = w->b;
    if (!w->big) {
        return;
    }
    uint8_t *nb = cfr_malloc(AGENT_BACKUP_READ_SMALL);
    if (nb != NULL) {
        cfr_free(w->buf);
        w->buf = nb;
        w->buf_cap = AGENT_BACKUP_READ_SMALL;
    }
    w->big = false;
    pthread_mutex_lock(&b->mu);
    b->big_held = false;
    pthread_cond_broadcast(&b->cv_work);
    pthread_mutex_unlock(&b->mu);
}

static int
process_file(struct worker *w, const struct job *j, struct cfr_err *err)
{
    struct backup *b = w->b;
    struct cfr_err ferr;
    int rc = 0;
    int fd = -1;
    struct stat st;
    uint64_t pos = 0;
    size_t tail = 0;
    uint8_t prev[2] = {'\n', '\n'};
    enum cfr_snap_kind kind = j->kind;
    /* The message's name as read: the scan's, unless renamed since. */
    bool in_new = j->in_new;
    const uint8_t *info = j->info;
    size_t info_len = j->info_len;
    char rpath[AGENT_SCAN_PATH_MAX + 1];
    uint8_t rinfo[NAME_MAX];

    memset(&ferr, 0, sizeof(ferr));
    w->fn = 0;
    w->seg_n = 0;
    w->cstart = 0;
    w->msgid_len = 0;
    cfr_chunker_reset(w->ch);
    if (b->o.before_read != NULL) {
        int e = b->o.before_read(b->o.hook_ctx, j->path);
        if (e != 0) {
            rc = file_error(w, j, e, CFR_EIO, err);
            goto out;
        }
    }
    fd = openat(b->rootfd, j->path,
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && j->kind == CFR_SNAP_MAILDIR_MESSAGE) {
        /* Renamed since the scan, not deleted: same identity, new name. */
        fd = reopen_renamed(b, j, rpath, sizeof(rpath), &in_new, rinfo,
                            &info_len);
        if (fd >= 0) {
            info = rinfo;
            char q[256];
            cfr_log(CFR_LOG_DEBUG, "agent.backup.renamed", "path=%s",
                    cfr_log_quote(rpath, q, sizeof(q)));
        }
    }
    if (fd < 0) {
        rc = file_error(w, j, errno, CFR_EIO, err);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = file_error(w, j, errno, CFR_EIO, err);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = file_error(w, j, EINVAL, CFR_EINVAL, err);
        goto out;
    }
    if ((uint64_t)st.st_size / b->cp.max >= CFR_SNAP_CHUNKS_MAX) {
        rc = file_error(w, j, 0, CFR_ELIMIT, err);
        goto out;
    }
    for (;;) {
        /*
         * Read what the file should still hold, plus a byte to notice
         * growth, at most a block: the buffer grows to the largest file a
         * worker met, never beyond a block and a chunk.
         */
        size_t want = AGENT_BACKUP_BLOCK;
        if ((uint64_t)st.st_size >= pos &&
            (uint64_t)st.st_size - pos < AGENT_BACKUP_BLOCK) {
            want = (size_t)((uint64_t)st.st_size - pos) + 1;
        }
        if (tail + want > AGENT_BACKUP_READ_SMALL && !w->big &&
            (rc = big_take(w, &ferr)) != 0) {
            *err = ferr;
            goto out;
        }
        if (tail + want > w->buf_cap) {
            uint8_t *nb = cfr_realloc(w->buf, tail + want);
            if (nb == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "backup: read buffer");
                goto out;
            }
            w->buf = nb;
            w->buf_cap = tail + want;
        }
        ssize_t n = read_full(fd, w->buf + tail, want);
        if (n < 0) {
            /* Chunks already put are harmless: no snapshot names them. */
            rc = file_error(w, j, errno, CFR_EIO, err);
            goto out;
        }
        if (n == 0) {
            break;
        }
        STAT_ADD(b, bytes_read, n);
        size_t len = (size_t)n;
        bool last = len < want;
        const uint8_t *r = w->buf + tail;
        if (pos == 0) {
            /*
             * The scan decides kinds by name; an opaque file that is an
             * mbox is chunked as one here. Its entry keeps the scan's
             * kind: the cache compares kinds, and a restore writes the
             * same bytes either way.
             */
            if (kind == CFR_SNAP_OPAQUE && len >= 5 &&
                memcmp(r, "From ", 5) == 0) {
                kind = CFR_SNAP_MBOX;
            }
            size_t mo, ml;
            if (kind == CFR_SNAP_MAILDIR_MESSAGE &&
                agent_backup_message_id(r, len, &mo, &ml) == 1) {
                memcpy(w->msgid, r + mo, ml);
                w->msgid_len = ml;
            }
        }
        if (kind == CFR_SNAP_MBOX) {
            rc = feed_mbox(w, pos, tail, len, last, prev, &ferr);
        } else {
            if (kind == CFR_SNAP_MAILDIR_MESSAGE && pos == 0) {
                size_t nh =
                    cfr_mime_cuts(r, len, w->hints, CFR_CHUNK_HINTS_MAX);
                rc = cfr_chunker_set_hints(w->ch, w->hints, nh, &ferr);
            }
            if (rc == 0) {
                rc = feed(w, tail, len, &ferr);
            }
        }
        if (rc == 0) {
            rc = resolve(w, &ferr);
        }
        if (rc == CFR_ELIMIT) {
            rc = file_error(w, j, 0, CFR_ELIMIT, err);
            goto out;
        }
        if (rc != 0) {
            *err = ferr;
            goto out;
        }
        /* Keep the unfinished chunk's bytes for the next block. */
        size_t end = tail + len;
        if (len >= 2) {
            prev[0] = w->buf[end - 2];
            prev[1] = w->buf[end - 1];
        } else {
            prev[0] = prev[1];
            prev[1] = w->buf[end - 1];
        }
        tail = end - w->cstart;
        memmove(w->buf, w->buf + w->cstart, tail);
        w->cstart = 0;
        pos += len;
        if (last) {
            break;
        }
    }
    size_t k = cfr_chunker_finish(w->ch);
    if (k > 0) {
        rc = emit(w, w->cstart + k, &ferr);
    }
    if (rc == 0) {
        rc = resolve(w, &ferr);
    }
    if (rc == CFR_ELIMIT) {
        rc = file_error(w, j, 0, CFR_ELIMIT, err);
        goto out;
    }
    if (rc != 0) {
        *err = ferr;
        goto out;
    }

    /* Read to the end: the record waits for the acknowledgement. */
    struct item *it = cfr_malloc(sizeof(*it));
    struct fileitem *f = cfr_malloc(sizeof(*f) + j->key_len + info_len +
                                    w->msgid_len + w->fn * ID_LEN);
    if (it == NULL || f == NULL) {
        cfr_free(it);
        cfr_free(f);
        rc = CFR_ERR(err, CFR_ENOMEM, "backup: file record");
        goto out;
    }
    memset(it, 0, sizeof(*it));
    memset(f, 0, sizeof(*f));
    uint8_t *p = f->data;
    f->key = p;
    f->key_len = j->key_len;
    memcpy(p, j->key, j->key_len);
    p += j->key_len;
    f->rec.kind = j->kind;
    f->rec.in_new = in_new;
    f->rec.info = p;
    f->rec.info_len = info_len;
    if (info_len > 0) {
        memcpy(p, info, info_len);
    }
    p += info_len;
    f->rec.message_id = p;
    f->rec.message_id_len = w->msgid_len;
    if (w->msgid_len > 0) {
        memcpy(p, w->msgid, w->msgid_len);
    }
    p += w->msgid_len;
    f->rec.chunk_ids = p;
    f->rec.n_chunks = w->fn;
    if (w->fn > 0) {
        memcpy(p, w->fids, w->fn * ID_LEN);
    }
    /* What was read: the stat of the open file, and its length. */
    f->rec.mode = (uint32_t)st.st_mode;
    f->rec.size = pos;
    f->rec.mtime_ns =
        (int64_t)st.st_mtim.tv_sec * 1000000000 + (int64_t)st.st_mtim.tv_nsec;
    f->rec.ino = (uint64_t)st.st_ino;
    f->rec.dev = (uint64_t)st.st_dev;
    it->file = f;
    STAT_ADD(b, files_read, 1);
    if ((rc = push_item(b, it)) != 0) {
        rc = CFR_ERR(err, rc, "backup: run failed");
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    big_give(w);
    return rc;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct backup *b = w->b;
    struct cfr_err err;
    memset(&err, 0, sizeof(err));
    apply_nice(b);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->jhead == NULL && !b->scan_done && !b->failed) {
            pthread_cond_wait(&b->cv_jobs, &b->mu);
        }
        if (b->failed || b->jhead == NULL) {
            break;
        }
        struct job *j = b->jhead;
        b->jhead = j->next;
        if (b->jhead == NULL) {
            b->jtail = NULL;
        }
        b->njobs--;
        b->busy++;
        pthread_cond_signal(&b->cv_jfull);
        pthread_mutex_unlock(&b->mu);
        int rc = process_file(w, j, &err);
        cfr_free(j);
        if (rc != 0) {
            fail(b, rc, &err);
        }
        pthread_mutex_lock(&b->mu);
        b->busy--;
        pthread_cond_signal(&b->cv_coord);
        if (rc != 0) {
            break;
        }
    }
    b->alive--;
    pthread_cond_signal(&b->cv_coord);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void
worker_fini(struct worker *w)
{
    cfr_session_free(w->sess);
    cfr_chunker_free(w->ch);
    cfr_free(w->buf);
    cfr_free(w->hints);
    cfr_free(w->seg_off);
    cfr_free(w->seg_len);
    cfr_free(w->seg_ids);
    cfr_free(w->seg_assign);
    cfr_free(w->fids);
    cfr_buf_fini(&w->env);
}

static int
worker_init(struct worker *w, struct backup *b, struct cfr_err *err)
{
    memset(w, 0, sizeof(*w));
    w->b = b;
    if ((w->sess = cfr_session_new(b->kr, 0, err)) == NULL ||
        (w->ch = cfr_chunker_new(b->gear, &b->cp, err)) == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
    }
    w->buf_cap = (size_t)1 << 16;
    w->buf = cfr_malloc(w->buf_cap);
    w->hints = cfr_calloc(CFR_CHUNK_HINTS_MAX, sizeof(*w->hints));
    w->seg_off = cfr_calloc(SEG_MAX, sizeof(*w->seg_off));
    w->seg_len = cfr_calloc(SEG_MAX, sizeof(*w->seg_len));
    w->seg_ids = cfr_calloc(SEG_MAX, ID_LEN);
    w->seg_assign = cfr_calloc(SEG_MAX, 1);
    w->fids = cfr_calloc(CFR_SNAP_CHUNKS_MAX, ID_LEN);
    if (w->buf == NULL || w->hints == NULL || w->seg_off == NULL ||
        w->seg_len == NULL || w->seg_ids == NULL || w->seg_assign == NULL ||
        w->fids == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "backup: worker buffers");
    }
    cfr_buf_init(&w->env, b->cp.max + CFR_ENV_OVERHEAD + ENV_SLACK);
    return 0;
}

/* ---- the driver --------------------------------------------------------- */

/* Answers a batch of queries with one existence query (backup.h, 2). */
static int
answer(struct backup *b, struct query *list, struct cfr_err *err)
{
    int rc = 0;
    size_t k = 0;
    memset(b->utab, 0, sizeof(b->utab));
    for (struct query *q = list; q != NULL; q = q->next) {
        for (size_t i = 0; i < q->n; i++) {
            const uint8_t *id = q->ids + i * ID_LEN;
            q->assign[i] = 0;
            if (idset_get(&b->seen, id) != 0) {
                STAT_ADD(b, chunks_dup, 1);
                continue;
            }
            size_t h = (size_t)cfr_get_le64(id) & (2 * SEG_MAX - 1);
            bool dup = false;
            while (b->utab[h] != 0) {
                if (memcmp(b->uids[b->utab[h] - 1], id, ID_LEN) == 0) {
                    dup = true;
                    break;
                }
                h = (h + 1) & (2 * SEG_MAX - 1);
            }
            if (dup) {
                STAT_ADD(b, chunks_dup, 1);
                continue;
            }
            memcpy(b->uids[k], id, ID_LEN);
            b->ufirst[k] = &q->assign[i];
            b->utab[h] = (uint16_t)(k + 1);
            k++;
        }
    }
    if (k == 0) {
        return 0;
    }
    STAT_ADD(b, missing_calls, 1);
    if ((rc = b->sink->missing(b->sink->ctx, &b->uids[0][0], k, b->ulack,
                               err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < k && rc == 0; i++) {
        *b->ufirst[i] = b->ulack[i];
        if (b->ulack[i] == 0) {
            STAT_ADD(b, chunks_present, 1);
        }
        rc = idset_put(&b->seen, b->uids[i],
                       b->ulack[i] != 0 ? ID_PENDING : ID_DONE, err);
    }
    return rc;
}

/* Flushes the sink, then records the files it acknowledged (inv. 2). */
static int
flush_and_record(struct backup *b, struct cfr_err *err)
{
    int rc;
    if (b->npend == 0) {
        return 0;
    }
    if ((rc = b->sink->flush(b->sink->ctx, err)) != 0) {
        return rc;
    }
    struct fileitem **pp = &b->pend;
    while (*pp != NULL && rc == 0) {
        struct fileitem *f = *pp;
        bool ready = true;
        for (size_t i = 0; i < f->rec.n_chunks && ready; i++) {
            ready = idset_get(&b->seen, f->rec.chunk_ids + i * ID_LEN) !=
                    ID_PENDING;
        }
        if (!ready) {
            pp = &f->next;
            continue;
        }
        pthread_mutex_lock(&b->state_mu);
        rc = agent_state_record(b->run, f->key, f->key_len, &f->rec, err);
        pthread_mutex_unlock(&b->state_mu);
        *pp = f->next;
        b->npend--;
        cfr_free(f);
    }
    return rc;
}

static int
handle_item(struct backup *b, struct item *it, struct cfr_err *err)
{
    int rc = 0;
    if (it->file != NULL) {
        it->file->next = b->pend;
        b->pend = it->file;
        b->npend++;
        it->file = NULL;
        if (b->npend >= AGENT_BACKUP_PENDING_MAX) {
            rc = flush_and_record(b, err);
        }
    } else {
        rc = b->sink->put(b->sink->ctx, it->id, it->kind, it->data, it->len,
                          it->mask, err);
        if (rc == 0) {
            rc = idset_put(&b->seen, it->id, ID_DONE, err);
        }
    }
    cfr_free(it);
    return rc;
}

/* Runs the sink for the workers until all of them are done. */
static void
drive(struct backup *b)
{
    struct cfr_err err;
    int rc = 0;
    memset(&err, 0, sizeof(err));
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->failed) {
            break;
        }
        if (b->ohead != NULL) {
            struct item *it = b->ohead;
            b->ohead = it->next;
            if (b->ohead == NULL) {
                b->otail = NULL;
            }
            b->obytes -= it->len;
            pthread_cond_broadcast(&b->cv_space);
            pthread_mutex_unlock(&b->mu);
            rc = handle_item(b, it, &err);
            pthread_mutex_lock(&b->mu);
        } else if (b->qhead != NULL && (b->q_ids >= SEG_MAX || b->busy == 0)) {
            /* Everyone who could add IDs is waiting: ask now. */
            struct query *list = b->qhead;
            struct query *q = list;
            size_t n = q->n;
            while (q->next != NULL && n + q->next->n <= SEG_MAX) {
                q = q->next;
                n += q->n;
            }
            b->qhead = q->next;
            if (b->qhead == NULL) {
                b->qtail = NULL;
            }
            q->next = NULL;
            b->q_ids -= n;
            pthread_mutex_unlock(&b->mu);
            rc = answer(b, list, &err);
            pthread_mutex_lock(&b->mu);
            for (q = list; q != NULL;) {
                struct query *next = q->next;
                q->done = true;
                q = next;
            }
            pthread_cond_broadcast(&b->cv_work);
        } else if (b->scan_done && b->jhead == NULL && b->alive == 0) {
            break;
        } else {
            pthread_cond_wait(&b->cv_coord, &b->mu);
        }
        if (rc != 0) {
            pthread_mutex_unlock(&b->mu);
            fail(b, rc, &err);
            pthread_mutex_lock(&b->mu);
            break;
        }
    }
    /* Release workers waiting on queries the driver will not answer. */
    for (struct query *q = b->qhead; q != NULL;) {
        struct query *next = q->next;
        q->done = true;
        q = next;
    }
    b->qhead = b->qtail = NULL;
    pthread_cond_broadcast(&b->cv_work);
    pthread_mutex_unlock(&b->mu);
}

/* ---- pages and the snapshot -------------------------------------------- */

static int
batch_send(struct backup *b, struct cfr_err *err)
{
    struct pagebatch *pb = b->pb;
    int rc = 0;
    if (pb->n == 0) {
        return 0;
    }
    STAT_ADD(b, missing_calls, 1);
    rc = b->sink->missing(b->sink->ctx, &pb->ids[0][0], pb->n, pb->lack, err);
    for (size_t i = 0; i < pb->n && rc == 0; i++) {
        /* A page met twice in one run (the same leaf in both trees never
         * happens; the same empty leaf may) is put once. */
        if (pb->lack[i] == 0) {
            /* Checked: the reference-list verification skips it. */
            rc = idset_put(&b->seen, pb->ids[i], ID_DONE, err);
            continue;
        }
        if (idset_get(&b->seen, pb->ids[i]) == ID_DONE) {
            continue;
        }
        if ((rc = b->sink->put(b->sink->ctx, pb->ids[i], pb->kind, pb->data[i],
                               pb->len[i], pb->lack[i], err)) == 0) {
            STAT_ADD(b, pages_put, 1);
            rc = idset_put(&b->seen, pb->ids[i], ID_DONE, err);
        }
    }
    for (size_t i = 0; i < pb->n; i++) {
        cfr_free(pb->data[i]);
        pb->data[i] = NULL;
    }
    pb->n = 0;
    pb->bytes = 0;
    return rc;
}

static int
batch_add(struct backup *b, const uint8_t *id, const uint8_t *data, size_t len,
          struct cfr_err *err)
{
    struct pagebatch *pb = b->pb;
    uint8_t *copy = cfr_malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "backup: page");
    }
    if (len > 0) {
        memcpy(copy, data, len);
    }
    memcpy(pb->ids[pb->n], id, ID_LEN);
    pb->data[pb->n] = copy;
    pb->len[pb->n] = len;
    pb->n++;
    pb->bytes += len;
    if (pb->n == PAGE_BATCH_MAX || pb->bytes >= PAGE_BATCH_SIZE) {
        return batch_send(b, err);
    }
    return 0;
}

/* Manifest pages: keyed ID, sealed, referenced by the snapshot. */
static int
manifest_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
             uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct backup *b = ctx;
    int rc;
    (void)level;
    cfr_keyring_chunk_id(b->kr, page, len, id_r);
    STAT_ADD(b, pages_manifest, 1);
    if ((rc = idsort_add(&b->refs, id_r, err)) != 0 ||
        (rc = cfr_env_seal(b->sess, CFR_ENV_MANIFEST_PAGE, id_r, page, len,
                           &b->penv, err)) != 0) {
        return rc;
    }
    return batch_add(b, id_r, b->penv.data, b->penv.len, err);
}

/* Reference-list pages: plain ID (vaults check it), in clear. */
static int
refs_put(void *ctx, uint32_t level, const uint8_t *page, size_t len,
         uint8_t id_r[CFR_TREE_ID_LEN], struct cfr_err *err)
{
    struct backup *b = ctx;
    (void)level;
    cfr_id_plain(page, len, id_r);
    STAT_ADD(b, pages_refs, 1);
    return batch_add(b, id_r, page, len, err);
}

static int
walk_cb(void *ctx, const uint8_t *key, size_t key_len,
        const struct agent_state_rec *rec)
{
    struct backup *b = ctx;
    struct cfr_snap_entry e;
    int rc;
    memset(&e, 0, sizeof(e));
    e.key = key;
    e.key_len = key_len;
    e.kind = rec->kind;
    e.info = rec->info;
    e.info_len = rec->info_len;
    e.in_new = rec->in_new;
    e.size = rec->size;
    e.mtime_ns = rec->mtime_ns;
    e.mode = rec->mode;
    e.message_id = rec->message_id;
    e.message_id_len = rec->message_id_len;
    e.chunk_ids = rec->chunk_ids;
    e.n_chunks = rec->n_chunks;
    if ((rc = cfr_snap_manifest_writer_add(b->mw, &e, &b->fail_err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < rec->n_chunks; i++) {
        if ((rc = idsort_add(&b->refs, rec->chunk_ids + i * ID_LEN,
                             &b->fail_err)) != 0) {
            return rc;
        }
    }
    b->stats.entries++;
    b->stats.total_bytes += rec->size;
    return 0;
}

/*
 * IDs the run did not meet itself come from cached chunk lists. They were
 * acknowledged once, but a run that never committed protected them only
 * with its lease: after the lease expired, GC may have taken them. Asking
 * for them here (state.h invariant 2) turns a commit the vaults would
 * refuse on every run into one failed run and a re-read of the files.
 */
static int
verify_send(struct backup *b, struct cfr_err *err)
{
    int rc;
    if (b->nv == 0) {
        return 0;
    }
    STAT_ADD(b, missing_calls, 1);
    if ((rc = b->sink->missing(b->sink->ctx, &b->vids[0][0], b->nv, b->ulack,
                               err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < b->nv; i++) {
        if (b->ulack[i] == 0) {
            continue;
        }
        b->stats.chunks_lost++;
        if (b->lost == NULL &&
            (b->lost = cfr_calloc(SEG_MAX, ID_LEN)) == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "backup: lost chunks");
        }
        if (b->nlost < SEG_MAX) {
            memcpy(b->lost[b->nlost++], b->vids[i], ID_LEN);
        }
    }
    b->nv = 0;
    return 0;
}

static int
refs_add_cb(void *ctx, const uint8_t *id, struct cfr_err *err)
{
    struct backup *b = ctx;
    int rc = cfr_snap_refs_writer_add(b->rw, id, err);
    if (rc == 0 && idset_get(&b->seen, id) == 0) {
        memcpy(b->vids[b->nv++], id, ID_LEN);
        if (b->nv == SEG_MAX) {
            rc = verify_send(b, err);
        }
    }
    return rc;
}

/* Forgets the records that need a lost chunk: the next run reads them. */
static int
lost_cb(void *ctx, const uint8_t *key, size_t key_len,
        const struct agent_state_rec *rec)
{
    struct backup *b = ctx;
    for (size_t i = 0; i < rec->n_chunks; i++) {
        if (bsearch(rec->chunk_ids + i * ID_LEN, b->lost, b->nlost, ID_LEN,
                    id_cmp) != NULL) {
            b->stats.files_forgotten++;
            return agent_state_forget(b->run, key, key_len, &b->fail_err);
        }
    }
    return 0;
}

static int
count_cb(void *ctx, const uint8_t *key, size_t key_len)
{
    (void)ctx;
    (void)key;
    (void)key_len;
    return 0;
}

static int
forget_cb(void *ctx, const uint8_t *key, size_t key_len)
{
    struct backup *b = ctx;
    return agent_state_forget(b->run, key, key_len, &b->fail_err);
}

/* Manifest, reference list, header, commit (backup.h, 4). */
static int
write_snapshot(struct backup *b, struct cfr_err *err)
{
    int rc;
    struct cfr_tree_params mp, rp;
    struct cfr_snap_header h;
    struct cfr_buf hb;
    struct agent_uplink_commit c;

    cfr_buf_init(&hb, CFR_SNAP_HEADER_MAX);
    memset(&c, 0, sizeof(c));
    if ((rc = agent_state_unseen(b->run, count_cb, NULL, &b->stats.deleted,
                                 err)) != 0) {
        goto out;
    }
    cfr_snap_manifest_params(&mp);
    cfr_snap_refs_params(&rp);
    b->pb->kind = AGENT_UPLINK_SEALED;
    if ((rc = cfr_snap_manifest_writer_new(&mp, manifest_put, b, &b->mw,
                                           err)) != 0) {
        goto out;
    }
    memset(&b->fail_err, 0, sizeof(b->fail_err));
    rc = agent_state_walk(b->run, walk_cb, b, err);
    if (rc != 0) {
        if (b->fail_err.code != 0) {
            *err = b->fail_err;
        }
        goto out;
    }
    if ((rc = cfr_snap_manifest_writer_finish(b->mw, &b->stats.manifest,
                                              err)) != 0 ||
        (rc = batch_send(b, err)) != 0) {
        goto out;
    }
    b->pb->kind = AGENT_UPLINK_REF_PAGE;
    if ((rc = cfr_snap_refs_writer_new(&rp, refs_put, b, &b->rw, err)) != 0 ||
        (rc = idsort_emit(&b->refs, refs_add_cb, b, err)) != 0 ||
        (rc = cfr_snap_refs_writer_finish(b->rw, &b->stats.refs, err)) != 0 ||
        (rc = batch_send(b, err)) != 0 || (rc = verify_send(b, err)) != 0) {
        goto out;
    }
    if (b->stats.chunks_lost > 0) {
        memset(&b->fail_err, 0, sizeof(b->fail_err));
        if ((rc = agent_state_walk(b->run, lost_cb, b, err)) != 0 ||
            (rc = agent_state_flush(b->run, err)) != 0) {
            if (b->fail_err.code != 0) {
                *err = b->fail_err;
            }
            goto out;
        }
        cfr_log(CFR_LOG_WARN, "agent.backup.lost", "chunks=%llu files=%llu",
                (unsigned long long)b->stats.chunks_lost,
                (unsigned long long)b->stats.files_forgotten);
        rc = CFR_ERR(err, CFR_ENOTFOUND,
                     "backup: %llu cached chunks are gone from the vaults; "
                     "%llu files will be read again by the next run",
                     (unsigned long long)b->stats.chunks_lost,
                     (unsigned long long)b->stats.files_forgotten);
        goto out;
    }

    /* Decided before the header, which records the mark as well. */
    if (b->o.mass_deletion != NULL &&
        b->o.mass_deletion(b->o.mass_ctx, b->stats.entries, b->stats.deleted)) {
        char q[256];
        b->stats.mass_deletion = true;
        cfr_log(CFR_LOG_WARN, "agent.backup.mass_deletion",
                "mailbox=%s deleted=%llu kept=%llu",
                cfr_log_quote(b->name, q, sizeof(q)),
                (unsigned long long)b->stats.deleted,
                (unsigned long long)b->stats.entries);
    }
    memset(&h, 0, sizeof(h));
    snprintf(h.mailbox, sizeof(h.mailbox), "%s", b->name);
    if (b->o.host != NULL) {
        snprintf(h.host, sizeof(h.host), "%s", b->o.host);
    } else if (gethostname(h.host, sizeof(h.host) - 1) != 0) {
        h.host[0] = '\0';
    }
    snprintf(h.agent_version, sizeof(h.agent_version), "%s",
             AGENT_BACKUP_VERSION);
    if (b->o.now_ms != 0) {
        h.agent_time_ms = b->o.now_ms;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        h.agent_time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    h.manifest = b->stats.manifest;
    h.refs = b->stats.refs;
    h.total_bytes = b->stats.total_bytes;
    h.mass_deletion = b->stats.mass_deletion;
    /*
     * The parent is the last snapshot the quorum confirmed, as the cache
     * recorded it (state.c says why not ListSnapshots). A marked snapshot
     * is committed like any other, so it is a parent too; a run that
     * failed or stopped before the commit never becomes one.
     */
    h.has_parent = agent_state_parent(b->run, h.parent);
    h.vanished =
        b->stats.deleted > UINT32_MAX ? UINT32_MAX : (uint32_t)b->stats.deleted;
    if ((rc = cfr_snap_header_encode(&h, &hb, err)) != 0) {
        goto out;
    }
    /* Keyed like every sealed object: a vault cannot test a guess. */
    cfr_keyring_chunk_id(b->kr, hb.data, hb.len, b->stats.header_id);
    if ((rc = cfr_env_seal(b->sess, CFR_ENV_SNAPSHOT_HEADER, b->stats.header_id,
                           hb.data, hb.len, &b->penv, err)) != 0) {
        goto out;
    }
    if (b->o.stop_before_commit) {
        if ((rc = b->sink->flush(b->sink->ctx, err)) == 0) {
            rc = CFR_ERR(err, CFR_EINTERNAL,
                         "backup: stopped before the commit (test)");
        }
        goto out;
    }
    memcpy(c.mailbox_id, b->stats.mailbox_id, ID_LEN);
    memcpy(c.header_id, b->stats.header_id, ID_LEN);
    c.header = b->penv.data;
    c.header_len = b->penv.len;
    memcpy(c.refs_id, b->stats.refs.id, ID_LEN);
    c.refs_height = b->stats.refs.height;
    c.refs_entries = b->stats.refs.entries;
    if (b->stats.mass_deletion) {
        c.flags |= AGENT_BACKUP_FLAG_MASS_DELETION;
        c.hold_previous = true;
    }
    if ((rc = agent_state_committing(b->run, c.header_id, err)) != 0 ||
        (rc = b->sink->commit(b->sink->ctx, &c, err)) != 0) {
        goto out;
    }
    b->stats.committed = true;
    if ((rc = agent_state_committed(b->run, c.header_id, err)) != 0) {
        goto out;
    }
    /* Deletions are forgotten only once a snapshot recorded them. */
    memset(&b->fail_err, 0, sizeof(b->fail_err));
    if ((rc = agent_state_unseen(b->run, forget_cb, b, NULL, err)) != 0) {
        if (b->fail_err.code != 0) {
            *err = b->fail_err;
        }
        goto out;
    }
    rc = agent_state_end(b->run, err);
    b->run = NULL;
out:
    cfr_buf_fini(&hb);
    return rc;
}

/* ---- entry points ------------------------------------------------------- */

static int
opts_check(struct agent_backup_opts *o, struct cfr_err *err)
{
    if (o->cpu_nice < 0 || o->cpu_nice > 19) {
        return CFR_ERR(err, CFR_EINVAL, "backup: cpu_nice %d not in 0..19",
                       o->cpu_nice);
    }
    if (o->io_class != AGENT_BACKUP_IO_KEEP &&
        o->io_class != AGENT_BACKUP_IO_BEST_EFFORT &&
        o->io_class != AGENT_BACKUP_IO_IDLE) {
        return CFR_ERR(err, CFR_EINVAL, "backup: io_class %d unknown",
                       o->io_class);
    }
    if (o->io_level < 0 || o->io_level > 7) {
        return CFR_ERR(err, CFR_EINVAL, "backup: io_level %d not in 0..7",
                       o->io_level);
    }
    if (o->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = n > 0 ? (unsigned)n : AGENT_BACKUP_WORKERS_DEFAULT;
    }
    if (o->workers > AGENT_BACKUP_WORKERS_MAX) {
        o->workers = AGENT_BACKUP_WORKERS_MAX;
    }
    if (o->refs_run_ids == 0) {
        o->refs_run_ids = AGENT_BACKUP_REFS_RUN;
    }
    return 0;
}

int
agent_backup_mailbox(const char *name, const char *root,
                     const struct cfr_keyring *kr, struct cfr_session *sess,
                     struct agent_state *st,
                     const struct agent_backup_sink *sink,
                     const struct agent_backup_opts *opts,
                     struct agent_backup_stats *stats_r, struct cfr_err *err)
{
    int rc = 0;
    struct backup *b = NULL;
    struct worker *ws = NULL;
    pthread_t scanner;
    bool scanner_started = false;
    unsigned started = 0;

    if (stats_r != NULL) {
        memset(stats_r, 0, sizeof(*stats_r));
    }
    if (name == NULL || root == NULL || kr == NULL || sess == NULL ||
        st == NULL || sink == NULL || strlen(name) == 0 ||
        strlen(name) > CFR_SNAP_MAILBOX_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "backup: bad arguments");
    }
    if ((b = cfr_calloc(1, sizeof(*b))) == NULL ||
        (b->pb = cfr_calloc(1, sizeof(*b->pb))) == NULL) {
        if (b != NULL) {
            cfr_free(b);
        }
        return CFR_ERR(err, CFR_ENOMEM, "backup: run");
    }
    b->name = name;
    b->root = root;
    b->rootfd = -1;
    b->refs.fd = -1;
    b->kr = kr;
    b->sess = sess;
    b->sink = sink;
    if (opts != NULL) {
        b->o = *opts;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->state_mu, NULL);
    pthread_cond_init(&b->cv_coord, NULL);
    pthread_cond_init(&b->cv_jobs, NULL);
    pthread_cond_init(&b->cv_jfull, NULL);
    pthread_cond_init(&b->cv_work, NULL);
    pthread_cond_init(&b->cv_space, NULL);
    cfr_buf_init(&b->penv, CFR_TREE_PAGE_MAX + CFR_ENV_OVERHEAD + ENV_SLACK);
    if ((rc = opts_check(&b->o, err)) != 0) {
        goto out;
    }
    const char *tmp = b->o.tmp_dir;
    if (tmp == NULL) {
        tmp = getenv("TMPDIR");
    }
    if (tmp == NULL || *tmp == '\0') {
        tmp = "/tmp";
    }
    snprintf(b->refs.dir, sizeof(b->refs.dir), "%s", tmp);
    b->refs.cap = b->o.refs_run_ids;
    if ((b->refs.mem = cfr_calloc(b->refs.cap, ID_LEN)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "backup: reference list");
        goto out;
    }
    cfr_chunk_params_default(&b->cp);
    cfr_keyring_gear_table(kr, b->gear);
    cfr_keyring_name_id(kr, name, strlen(name), b->stats.mailbox_id);
    b->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->rootfd < 0) {
        rc = CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                           "backup: mailbox root");
        goto out;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if ((rc = agent_state_begin(st, name,
                                (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
                                &b->run, err)) != 0) {
        goto out;
    }
    if ((ws = cfr_calloc(b->o.workers, sizeof(*ws))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "backup: workers");
        goto out;
    }
    for (unsigned i = 0; i < b->o.workers; i++) {
        if ((rc = worker_init(&ws[i], b, err)) != 0) {
            /* Freed below with the others. */
            started = i + 1;
            goto out;
        }
        started = i + 1;
    }
    b->alive = b->o.workers;
    for (unsigned i = 0; i < b->o.workers; i++) {
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
            struct cfr_err e;
            CFR_ERR(&e, CFR_ENOMEM, "backup: worker thread");
            pthread_mutex_lock(&b->mu);
            b->alive -= b->o.workers - i;
            pthread_mutex_unlock(&b->mu);
            fail(b, CFR_ENOMEM, &e);
            break;
        }
        ws[i].started = true;
    }
    if (pthread_create(&scanner, NULL, scanner_main, b) != 0) {
        struct cfr_err e;
        CFR_ERR(&e, CFR_ENOMEM, "backup: scanner thread");
        fail(b, CFR_ENOMEM, &e);
        pthread_mutex_lock(&b->mu);
        b->scan_done = true;
        pthread_cond_broadcast(&b->cv_jobs);
        pthread_mutex_unlock(&b->mu);
    } else {
        scanner_started = true;
    }
    drive(b);
    if (scanner_started) {
        pthread_join(scanner, NULL);
    }
    for (unsigned i = 0; i < b->o.workers; i++) {
        if (ws[i].started) {
            pthread_join(ws[i].th, NULL);
        }
    }
    /* Anything a failed run left queued is dropped. */
    while (b->ohead != NULL) {
        struct item *it = b->ohead;
        b->ohead = it->next;
        cfr_free(it->file);
        cfr_free(it);
    }
    while (b->jhead != NULL) {
        struct job *j = b->jhead;
        b->jhead = j->next;
        cfr_free(j);
    }
    if (b->failed) {
        rc = b->fail_rc;
        if (err != NULL) {
            *err = b->fail_err;
        }
        goto out;
    }
    if ((rc = flush_and_record(b, err)) != 0) {
        goto out;
    }
    if (b->npend != 0) {
        rc = CFR_ERR(err, CFR_EINTERNAL, "backup: %zu files unrecorded",
                     b->npend);
        goto out;
    }
    rc = write_snapshot(b, err);
out:
    if (ws != NULL) {
        for (unsigned i = 0; i < started; i++) {
            worker_fini(&ws[i]);
        }
        cfr_free(ws);
    }
    if (stats_r != NULL) {
        *stats_r = b->stats;
    }
    if (rc != 0) {
        char q[256];
        cfr_log(CFR_LOG_WARN, "agent.backup.failed", "mailbox=%s code=%s",
                cfr_log_quote(name, q, sizeof(q)), cfr_code_name(rc));
    }
    agent_state_run_free(b->run);
    while (b->pend != NULL) {
        struct fileitem *f = b->pend;
        b->pend = f->next;
        cfr_free(f);
    }
    for (size_t i = 0; i < b->pb->n; i++) {
        cfr_free(b->pb->data[i]);
    }
    cfr_snap_manifest_writer_free(b->mw);
    cfr_snap_refs_writer_free(b->rw);
    cfr_free(b->lost);
    idsort_fini(&b->refs);
    idset_fini(&b->seen);
    cfr_buf_fini(&b->penv);
    if (b->rootfd >= 0) {
        close(b->rootfd);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->state_mu);
    pthread_cond_destroy(&b->cv_coord);
    pthread_cond_destroy(&b->cv_jobs);
    pthread_cond_destroy(&b->cv_jfull);
    pthread_cond_destroy(&b->cv_work);
    pthread_cond_destroy(&b->cv_space);
    cfr_free(b->pb);
    cfr_free(b);
    return rc;
}

/* ---- the uplink as a sink ----------------------------------------------- */

static int
up_missing(void *ctx, const uint8_t *ids, size_t n, uint8_t *lack_r,
           struct cfr_err *err)
{
    return agent_uplink_missing(ctx, ids, n, lack_r, err);
}

static int
up_put(void *ctx, const uint8_t *id, int kind, const uint8_t *data, size_t len,
       uint8_t mask, struct cfr_err *err)
{
    return agent_uplink_put(ctx, id, kind, data, len, mask, err);
}

static int
up_flush(void *ctx, struct cfr_err *err)
{
    return agent_uplink_flush(ctx, err);
}

static int
up_commit(void *ctx, const struct agent_uplink_commit *c, struct cfr_err *err)
{
    return agent_uplink_commit(ctx, c, err);
}

void
agent_backup_sink_uplink(struct agent_uplink *up,
                         struct agent_backup_sink *sink_r)
{
    sink_r->missing = up_missing;
    sink_r->put = up_put;
    sink_r->flush = up_flush;
    sink_r->commit = up_commit;
    sink_r->ctx = up;
}

void
agent_backup_malloc_setup(void)
{
#if defined(__GLIBC__)
    /* Two arenas: the driving thread and the workers contend little (a
     * sealed chunk is one allocation), and the resident set then no
     * longer grows with the thread count. */
    (void)mallopt(M_ARENA_MAX, 2);
    /* A fixed threshold: read buffers past it (large files, one at a
     * time) are mapped and given back whole when freed; sealed chunks
     * stay below it. Fixing it also fixes the trim threshold (twice). */
    (void)mallopt(M_MMAP_THRESHOLD, (int)AGENT_BACKUP_READ_SMALL);
#endif
}
