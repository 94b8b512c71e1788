/*
 * store.c - the vault's storage semantics: one RocksDB database per tenant
 * (core/kv.h), objects as kv chunks, snapshot records, reference counts over
 * the clear reference-page trees, upload leases, retention, purge, GC.
 *
 * Layouts and the algorithms are specified in docs/FORMAT.md; the
 * invariants below are the ones this file maintains (store.h's 1..5 are
 * the contract, these are how):
 *
 *  1. Refcount records (family "refcounts") change only under the tenant
 *     lock, and only together with the snapshot record change that causes
 *     them, in one synced batch. A page's count is its 'P' record, a leaf
 *     object's its 'O' record; an absent record means 0, a zero count is
 *     never stored.
 *  2. A page whose 'P' count is above 0 is present, and so is everything it
 *     names: the commit that took it from 0 to 1 verified that under the
 *     lock, and GC deletes only objects whose 'P' and 'O' counts are both 0.
 *  3. Every object presence decision that a client is told about while a
 *     lease protects it (put, missing) records the protection under the
 *     tenant lock, and GC checks protection and deletes under the same
 *     lock, so a GC batch is either wholly before the protection (and the
 *     object is then written again by the put) or wholly after (and sees
 *     it).
 *  4. A write that a caller is told succeeded went through a synced batch.
 *  5. Maintenance (retention, purge, GC) runs one at a time per tenant
 *     (maint lock), and takes the tenant lock per snapshot or per GC batch,
 *     so commits and puts wait for at most one of those.
 *
 * An object's life (transition functions in brackets):
 *
 *   absent --[put, under a live lease]--> protected
 *   protected --[commit naming it: count 0 -> 1]--> referenced
 *   present --[missing, under a live lease]--> protected (again)
 *   referenced --[snap_drop: last count 1 -> 0]--> garbage, unless
 *                                                 still protected
 *   protected --[lease expiry or vault_lease_close]--> garbage, unless
 *                                                     referenced
 *   garbage --[vault_store_gc: gc_batch, then gc_compact]--> absent
 *
 * Lock order: store lock, then maint lock, then tenant lock; kv's own
 * per-ID locks are innermost.
 */
/* nftw (tenant removal) is an XSI interface; it must be asked for before
 * any header is read. */
#define _XOPEN_SOURCE 700
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h> /* getrandom: lease IDs */
#include <sys/stat.h>
#include <unistd.h>

#include "coffer_format.pb-c.h" /* Coffer__V1__RefPage */
#include "id.h"                 /* cfr_id_plain: reference page IDs */
#include "kv.h"                 /* the tenant databases */
#include "log.h"                /* cfr_log */
#include "mem.h"                /* cfr_malloc, cfr_calloc, cfr_free */
#include "snap.h"               /* cfr_snap_refs_page_check */
#include "tree.h"               /* cfr_tree_alloc, CFR_TREE_PAGE_MAX */

/*
 * Column families of a tenant database, in this order (kv names them by
 * index). Changing the list makes older databases refuse to open.
 */
enum {
    CF_CHUNKS = 0, /* object ID -> object bytes (kv's chunk family) */
    CF_INDEX,      /* object ID -> checksum record (kv's) */
    CF_REFS,       /* 'P'|'O' || ID -> count, u64 LE */
    CF_SNAPS,      /* header ID -> snapshot record */
    CF_MAILBOX,    /* mailbox ID || received BE || header ID -> "" */
    CF_LEASES,     /* lease ID -> lease record */
    CF_PROTECT,    /* lease ID || object ID -> "" */
    CF_TOMBS,      /* header ID -> tombstone record */
    CF_COUNT
};

static const char *const cf_names[CF_COUNT] = {
    CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX, "refcounts",
    "snapshots",      "mailbox_index",       "leases",
    "lease_objects",  "tombstones"};

#define TAG_PAGE    ((uint8_t)'P')
#define TAG_OBJ     ((uint8_t)'O')
#define REF_KEY_LEN (1 + VAULT_ID_LEN)

/* The envelope header (docs/FORMAT.md) as far as a vault may check it. */
#define ENV_VERSION  1
#define ENV_OVERHEAD 80 /* 64-byte header + 16-byte tag */
/*
 * Kinds are not stored: a sealed object starts with its envelope version
 * (1 today, small forever), a reference page with a protobuf field tag
 * (0x08, 0x12 or 0x1A) or is empty, so the first byte tells them apart.
 */
#define KIND_SEALED_BELOW 0x08

/* Version 2 adds hold_changed_ms; version 1 records are still read. */
#define SNAP_REC_VERSION  2
#define SNAP_REC_FIXED    102
#define SNAP_REC_V1       1
#define SNAP_REC_V1_FIXED 94
#define LEASE_REC_VERSION 1
#define LEASE_REC_FIXED   10
#define LEASE_SESSION_MAX 255
#define TOMB_REC_VERSION  1
#define TOMB_REC_LEN      9
#define MBOX_KEY_LEN      (VAULT_ID_LEN + 8 + VAULT_ID_LEN)
#define PROTECT_KEY_LEN   (VAULT_LEASE_LEN + VAULT_ID_LEN)
#define INDEX_REC_LEN     41 /* kv's chunk index record, docs/FORMAT.md */

/* GC looks at this many objects per tenant-lock hold. */
#define GC_BATCH 256

struct vault_tenant {
    struct vault_store *st;
    char name[VAULT_TENANT_MAX + 1];
    struct cfr_kv *kv;
    pthread_mutex_t lock;  /* invariants 1 and 3 */
    pthread_mutex_t maint; /* invariant 5 */
    atomic_bool dirty;     /* deleted or repaired since the last
                              compaction */
    atomic_uint_fast64_t corrupt_reads;
};

struct vault_store {
    char *dir;
    struct cfr_kv_env *env;
    struct cfr_clock *clock;
    int64_t lease_max_ms;
    int64_t tombstone_keep_ms;
    vault_corrupt_fn *on_corrupt;
    void *on_corrupt_ctx;
    pthread_mutex_t lock; /* the tenant table */
    struct vault_tenant **tenants;
    size_t n_tenants;
    size_t alloc_tenants;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t
now_ms(const struct vault_tenant *t)
{
    return cfr_clock_now_ms(t->st->clock);
}

static const char *
hex_id(const uint8_t *id, char out[2 * VAULT_ID_LEN + 1])
{
    return cfr_hex_encode(id, VAULT_ID_LEN, out);
}

/*
 * A read found object id failing its checksum: counted, logged and handed
 * to replication for repair. Called with no store lock held (the callback
 * may take its own locks, and must not wait on ours).
 */
static void
corrupt_seen(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN])
{
    char hex[2 * VAULT_ID_LEN + 1];
    atomic_fetch_add(&t->corrupt_reads, 1);
    cfr_log(CFR_LOG_ERROR, "vault.object_corrupt", "tenant=%s id=%s", t->name,
            hex_id(id, hex));
    if (t->st->on_corrupt != NULL) {
        t->st->on_corrupt(t->st->on_corrupt_ctx, t->name, id);
    }
}

/* The first damaged object a walk met, reported after the locks. */
struct corrupt_note {
    bool seen;
    uint8_t id[VAULT_ID_LEN];
};

static enum vault_object_kind
kind_of(const uint8_t *p, size_t n)
{
    return n > 0 && p[0] < KIND_SEALED_BELOW ? VAULT_OBJ_SEALED
                                             : VAULT_OBJ_REF_PAGE;
}

/* Big-endian with the sign bit flipped: byte order is numeric order. */
static void
put_be64_ordered(uint8_t *p, int64_t v)
{
    uint64_t u = (uint64_t)v ^ (UINT64_C(1) << 63);
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)u;
        u >>= 8;
    }
}

static bool
tenant_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > VAULT_TENANT_MAX || name[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* ---- records ------------------------------------------------------------ */

struct snap_rec {
    struct vault_snapshot s;
    const uint8_t *header; /* borrows the buffer decoded from */
    size_t header_len;
};

static int
snap_encode(const struct vault_snapshot *s, const uint8_t *header,
            size_t header_len, struct cfr_buf *out, struct cfr_err *err)
{
    int rc;
    cfr_buf_reset(out);
    if ((rc = cfr_buf_append_u8(out, SNAP_REC_VERSION, err)) != 0 ||
        (rc = cfr_buf_append(out, s->mailbox_id, VAULT_ID_LEN, err)) != 0 ||
        (rc = cfr_buf_append_le64(out, (uint64_t)s->received_ms, err)) != 0 ||
        (rc = cfr_buf_append(out, s->refs.id, VAULT_ID_LEN, err)) != 0 ||
        (rc = cfr_buf_append_le32(out, s->refs.height, err)) != 0 ||
        (rc = cfr_buf_append_le64(out, s->refs.entries, err)) != 0 ||
        (rc = cfr_buf_append_le32(out, s->flags, err)) != 0 ||
        (rc = cfr_buf_append_u8(out, s->held ? 1 : 0, err)) != 0 ||
        (rc = cfr_buf_append_le64(out, (uint64_t)s->hold_changed_ms, err)) !=
            0 ||
        (rc = cfr_buf_append_le32(out, (uint32_t)header_len, err)) != 0 ||
        (rc = cfr_buf_append(out, header, header_len, err)) != 0) {
        goto out;
    }
out:
    return rc;
}

static int
snap_decode(const uint8_t header_id[VAULT_ID_LEN], const uint8_t *p, size_t n,
            struct snap_rec *r, struct cfr_err *err)
{
    int rc = 0;
    memset(r, 0, sizeof(*r));
    /* Version 1 lacks hold_changed_ms (read as 0, "never changed"); the
     * header length then sits where version 2 keeps that time. */
    size_t fixed =
        n > 0 && p[0] == SNAP_REC_V1 ? SNAP_REC_V1_FIXED : SNAP_REC_FIXED;
    if (n < fixed || (p[0] != SNAP_REC_VERSION && p[0] != SNAP_REC_V1) ||
        cfr_get_le32(p + fixed - 4) != n - fixed || p[89] > 1) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "snapshot record: bad layout (%zu)", n);
        goto out;
    }
    memcpy(r->s.header_id, header_id, VAULT_ID_LEN);
    memcpy(r->s.mailbox_id, p + 1, VAULT_ID_LEN);
    r->s.received_ms = (int64_t)cfr_get_le64(p + 33);
    memcpy(r->s.refs.id, p + 41, VAULT_ID_LEN);
    r->s.refs.height = cfr_get_le32(p + 73);
    r->s.refs.entries = cfr_get_le64(p + 77);
    r->s.flags = cfr_get_le32(p + 85);
    r->s.held = p[89] == 1;
    r->s.hold_changed_ms =
        fixed == SNAP_REC_FIXED ? (int64_t)cfr_get_le64(p + 90) : 0;
    r->header = p + fixed;
    r->header_len = n - fixed;
out:
    return rc;
}

static void
mbox_key(uint8_t key[MBOX_KEY_LEN], const uint8_t *mailbox_id,
         int64_t received_ms, const uint8_t *header_id)
{
    memcpy(key, mailbox_id, VAULT_ID_LEN);
    put_be64_ordered(key + VAULT_ID_LEN, received_ms);
    memcpy(key + VAULT_ID_LEN + 8, header_id, VAULT_ID_LEN);
}

/* Reads a lease: CFR_ENOTFOUND when unknown or expired at now. */
static int
lease_live(struct vault_tenant *t, const uint8_t lease_id[VAULT_LEASE_LEN],
           int64_t *expires_r, struct cfr_err *err)
{
    int rc;
    struct cfr_buf v;
    cfr_buf_init(&v, LEASE_REC_FIXED + LEASE_SESSION_MAX);
    if ((rc = cfr_kv_get(t->kv, CF_LEASES, lease_id, VAULT_LEASE_LEN, &v,
                         err)) != 0) {
        if (rc == CFR_ENOTFOUND) {
            rc = CFR_ERR(err, CFR_ENOTFOUND, "tenant %s: unknown lease",
                         t->name);
        }
        goto out;
    }
    if (v.len < LEASE_REC_FIXED || v.data[0] != LEASE_REC_VERSION ||
        v.data[9] != v.len - LEASE_REC_FIXED) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad lease record", t->name);
        goto out;
    }
    int64_t expires = (int64_t)cfr_get_le64(v.data + 1);
    if (expires <= now_ms(t)) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "tenant %s: lease expired", t->name);
        goto out;
    }
    if (expires_r != NULL) {
        *expires_r = expires;
    }
out:
    cfr_buf_fini(&v);
    return rc;
}

/* ---- store and tenants -------------------------------------------------- */

struct vault_store *
vault_store_open(const struct vault_store_opts *opts, struct cfr_err *err)
{
    struct vault_store *st = NULL;
    struct vault_store *ret = NULL;
    if (opts == NULL || opts->dir == NULL || opts->clock == NULL ||
        opts->lease_max_ms <= 0 || opts->tombstone_keep_ms < 0) {
        CFR_ERR(err, CFR_EINVAL,
                "vault store: dir, clock and lease_max_ms "
                "are required");
        goto out;
    }
    if (mkdir(opts->dir, 0700) != 0 && errno != EEXIST) {
        CFR_ERR_ERRNO(err, CFR_EIO, "vault store: mkdir %s", opts->dir);
        goto out;
    }
    if ((st = cfr_calloc(1, sizeof(*st))) == NULL ||
        (st->dir = cfr_strdup(opts->dir)) == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "vault store");
        goto out;
    }
    pthread_mutex_init(&st->lock, NULL);
    st->clock = opts->clock;
    st->lease_max_ms = opts->lease_max_ms;
    st->tombstone_keep_ms = opts->tombstone_keep_ms;
    st->on_corrupt = opts->on_corrupt;
    st->on_corrupt_ctx = opts->on_corrupt_ctx;
    if ((st->env = cfr_kv_env_new(opts->cache_bytes, err)) == NULL) {
        goto out;
    }
    ret = st;
    st = NULL;
out:
    vault_store_close(st);
    return ret;
}

static void
tenant_free(struct vault_tenant *t)
{
    if (t == NULL) {
        return;
    }
    cfr_kv_close(t->kv);
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->maint);
    cfr_free(t);
}

void
vault_store_close(struct vault_store *st)
{
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->n_tenants; i++) {
        tenant_free(st->tenants[i]);
    }
    cfr_free(st->tenants);
    cfr_kv_env_free(st->env);
    if (st->dir != NULL) {
        pthread_mutex_destroy(&st->lock);
    }
    cfr_free(st->dir);
    cfr_free(st);
}

static int
tenant_path(const struct vault_store *st, const char *name, char *out,
            size_t out_len, struct cfr_err *err)
{
    int n = snprintf(out, out_len, "%s/%s", st->dir, name);
    if (n < 0 || (size_t)n >= out_len) {
        return CFR_ERR(err, CFR_ELIMIT, "vault store: path too long");
    }
    return 0;
}

struct vault_tenant *
vault_store_tenant(struct vault_store *st, const char *name, bool create,
                   struct cfr_err *err)
{
    struct vault_tenant *t = NULL;
    struct vault_tenant *ret = NULL;
    char path[PATH_MAX];
    struct stat sb;
    pthread_mutex_lock(&st->lock);
    if (!tenant_name_ok(name)) {
        CFR_ERR(err, CFR_EINVAL, "vault store: bad tenant name");
        goto out;
    }
    for (size_t i = 0; i < st->n_tenants; i++) {
        if (strcmp(st->tenants[i]->name, name) == 0) {
            ret = st->tenants[i];
            goto out;
        }
    }
    if (tenant_path(st, name, path, sizeof(path), err) != 0) {
        goto out;
    }
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            CFR_ERR_ERRNO(err, CFR_EIO, "vault store: stat %s", path);
            goto out;
        }
        if (!create) {
            CFR_ERR(err, CFR_ENOTFOUND, "tenant %s does not exist", name);
            goto out;
        }
        if (mkdir(path, 0700) != 0) {
            CFR_ERR_ERRNO(err, CFR_EIO, "vault store: mkdir %s", path);
            goto out;
        }
    }
    if (st->n_tenants == st->alloc_tenants) {
        size_t want = st->alloc_tenants == 0 ? 8 : 2 * st->alloc_tenants;
        size_t bytes;
        struct vault_tenant **v;
        if (!cfr_mul_ok(want, sizeof(struct vault_tenant *), &bytes) ||
            (v = cfr_realloc(st->tenants, bytes)) == NULL) {
            CFR_ERR(err, CFR_ENOMEM, "vault store: tenant table");
            goto out;
        }
        st->tenants = v;
        st->alloc_tenants = want;
    }
    if ((t = cfr_calloc(1, sizeof(*t))) == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "vault store: tenant");
        goto out;
    }
    t->st = st;
    memcpy(t->name, name, strlen(name) + 1);
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->maint, NULL);
    atomic_init(&t->dirty, false);
    atomic_init(&t->corrupt_reads, 0);
    if ((t->kv = cfr_kv_open(st->env, path, cf_names, CF_COUNT, NULL, err)) ==
        NULL) {
        goto out;
    }
    st->tenants[st->n_tenants++] = t;
    ret = t;
    t = NULL;
out:
    pthread_mutex_unlock(&st->lock);
    tenant_free(t);
    return ret;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int
vault_store_tenant_drop(struct vault_store *st, const char *name,
                        struct cfr_err *err)
{
    int rc;
    char path[PATH_MAX];
    struct stat sb;
    pthread_mutex_lock(&st->lock);
    if (!tenant_name_ok(name)) {
        rc = CFR_ERR(err, CFR_EINVAL, "vault store: bad tenant name");
        goto out;
    }
    if ((rc = tenant_path(st, name, path, sizeof(path), err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < st->n_tenants; i++) {
        if (strcmp(st->tenants[i]->name, name) == 0) {
            tenant_free(st->tenants[i]);
            st->tenants[i] = st->tenants[--st->n_tenants];
            break;
        }
    }
    if (stat(path, &sb) != 0) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "tenant %s does not exist", name);
        goto out;
    }
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "vault store: removing %s", path);
        goto out;
    }
    cfr_log(CFR_LOG_WARN, "vault.tenant_dropped", "tenant=%s", name);
out:
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int
vault_store_tenants(struct vault_store *st, vault_tenant_fn *fn, void *ctx,
                    struct cfr_err *err)
{
    int rc = 0;
    DIR *d = opendir(st->dir);
    if (d == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "vault store: opendir %s", st->dir);
        goto out;
    }
    for (;;) {
        errno = 0;
        const struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                rc = CFR_ERR_ERRNO(err, CFR_EIO, "vault store: readdir");
            }
            break;
        }
        char path[PATH_MAX];
        struct stat sb;
        if (!tenant_name_ok(de->d_name) ||
            tenant_path(st, de->d_name, path, sizeof(path), NULL) != 0 ||
            stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            continue;
        }
        if ((rc = fn(ctx, de->d_name)) != 0) {
            break;
        }
    }
out:
    if (d != NULL) {
        closedir(d);
    }
    return rc;
}

/* ---- leases ------------------------------------------------------------- */

int
vault_lease_open(struct vault_tenant *t, const uint8_t *session_pub,
                 size_t session_len, int64_t ttl_ms,
                 uint8_t lease_id_r[VAULT_LEASE_LEN], int64_t *expires_ms_r,
                 struct cfr_err *err)
{
    int rc;
    uint8_t rec[LEASE_REC_FIXED + LEASE_SESSION_MAX];
    if (session_len > LEASE_SESSION_MAX ||
        (session_len > 0 && session_pub == NULL)) {
        rc = CFR_ERR(err, CFR_EINVAL, "lease: session key of %zu bytes",
                     session_len);
        goto out;
    }
    if (ttl_ms <= 0 || ttl_ms > t->st->lease_max_ms) {
        ttl_ms = t->st->lease_max_ms;
    }
    if (getrandom(lease_id_r, VAULT_LEASE_LEN, 0) != VAULT_LEASE_LEN) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "lease: getrandom");
        goto out;
    }
    int64_t expires = now_ms(t) + ttl_ms;
    rec[0] = LEASE_REC_VERSION;
    cfr_put_le64(rec + 1, (uint64_t)expires);
    rec[9] = (uint8_t)session_len;
    if (session_len > 0) {
        memcpy(rec + LEASE_REC_FIXED, session_pub, session_len);
    }
    if ((rc = cfr_kv_put(t->kv, CF_LEASES, lease_id_r, VAULT_LEASE_LEN, rec,
                         LEASE_REC_FIXED + session_len, err)) != 0) {
        goto out;
    }
    *expires_ms_r = expires;
out:
    return rc;
}

/* Deletes a lease and its protections; called with the tenant lock. */
static int
lease_remove(struct vault_tenant *t, const uint8_t lease_id[VAULT_LEASE_LEN],
             struct cfr_err *err)
{
    int rc;
    struct cfr_kv_batch *b = NULL;
    struct cfr_kv_iter *it = NULL;
    bool got;
    struct cfr_kv_entry e;
    if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    if ((it = cfr_kv_iter_new_prefix(t->kv, CF_PROTECT, lease_id,
                                     VAULT_LEASE_LEN, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if ((rc = cfr_kv_batch_delete(b, CF_PROTECT, e.key, e.key_len, err)) !=
            0) {
            goto out;
        }
    }
    if (rc != 0 ||
        (rc = cfr_kv_batch_delete(b, CF_LEASES, lease_id, VAULT_LEASE_LEN,
                                  err)) != 0 ||
        (rc = cfr_kv_batch_commit(b, true, err)) != 0) {
        goto out;
    }
out:
    cfr_kv_iter_free(it);
    cfr_kv_batch_free(b);
    return rc;
}

int
vault_lease_close(struct vault_tenant *t,
                  const uint8_t lease_id[VAULT_LEASE_LEN], struct cfr_err *err)
{
    pthread_mutex_lock(&t->lock);
    int rc = lease_remove(t, lease_id, err);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

/* Queues protection records for ids under lease_id (tenant lock held). */
static int
protect_ids(struct cfr_kv_batch *b, const uint8_t *lease_id,
            const uint8_t (*ids)[VAULT_ID_LEN], const bool *skip, size_t n,
            struct cfr_err *err)
{
    int rc = 0;
    uint8_t key[PROTECT_KEY_LEN];
    memcpy(key, lease_id, VAULT_LEASE_LEN);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (skip != NULL && skip[i]) {
            continue;
        }
        memcpy(key + VAULT_LEASE_LEN, ids[i], VAULT_ID_LEN);
        rc = cfr_kv_batch_put(b, CF_PROTECT, key, sizeof(key), "", 0, err);
    }
    return rc;
}

/* ---- objects ------------------------------------------------------------ */

int
vault_store_missing(struct vault_tenant *t, const uint8_t *lease_id,
                    const uint8_t (*ids)[VAULT_ID_LEN], size_t n,
                    uint32_t *missing_r, size_t *n_missing_r,
                    struct cfr_err *err)
{
    int rc;
    bool *miss = NULL;
    struct cfr_kv_batch *b = NULL;
    bool locked = false;
    size_t n_miss = 0;
    *n_missing_r = 0;
    if (n > VAULT_IDS_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "missing: %zu IDs", n);
        goto out;
    }
    if (n == 0) {
        rc = lease_id != NULL ? lease_live(t, lease_id, NULL, err) : 0;
        goto out;
    }
    if ((miss = cfr_calloc(n, sizeof(*miss))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "missing");
        goto out;
    }
    if (lease_id != NULL) {
        if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
            rc = err != NULL ? err->code : CFR_ENOMEM;
            goto out;
        }
        /* Presence and protection under one lock hold (invariant 3). */
        pthread_mutex_lock(&t->lock);
        locked = true;
        if ((rc = lease_live(t, lease_id, NULL, err)) != 0) {
            goto out;
        }
    }
    if ((rc = cfr_kv_chunk_has_many(t->kv, n, ids, miss, &n_miss, err)) != 0) {
        goto out;
    }
    if (lease_id != NULL && n_miss < n) {
        if ((rc = protect_ids(b, lease_id, ids, miss, n, err)) != 0 ||
            (rc = cfr_kv_batch_commit(b, true, err)) != 0) {
            goto out;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (miss[i]) {
            missing_r[k++] = (uint32_t)i;
        }
    }
    *n_missing_r = k;
out:
    if (locked) {
        pthread_mutex_unlock(&t->lock);
    }
    cfr_kv_batch_free(b);
    cfr_free(miss);
    return rc;
}

static int
object_check(const struct vault_object *o, struct cfr_err *err)
{
    int rc = 0;
    char hex[2 * VAULT_ID_LEN + 1];
    if (o->kind == VAULT_OBJ_SEALED) {
        if (o->len < ENV_OVERHEAD || o->data[0] != ENV_VERSION) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "object %s: not an envelope",
                         hex_id(o->id, hex));
        }
    } else if (o->kind == VAULT_OBJ_REF_PAGE) {
        uint8_t id[CFR_ID_LEN];
        uint32_t level;
        size_t count;
        if (o->len > CFR_TREE_PAGE_MAX) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "page %s: %zu bytes",
                         hex_id(o->id, hex), o->len);
            goto out;
        }
        cfr_id_plain(o->data, o->len, id);
        if (memcmp(id, o->id, CFR_ID_LEN) != 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "page %s: ID is not its hash",
                         hex_id(o->id, hex));
            goto out;
        }
        struct cfr_err why;
        cfr_err_clear(&why);
        if (cfr_snap_refs_page_check(o->data, o->len, &level, &count, &why) !=
            0) {
            /* A copy: the message must not be formatted into itself. */
            rc = CFR_ERR(err, CFR_ECORRUPT, "page %s: %s", hex_id(o->id, hex),
                         why.msg);
            goto out;
        }
    } else {
        rc = CFR_ERR(err, CFR_EINVAL, "object %s: unknown kind %d",
                     hex_id(o->id, hex), (int)o->kind);
    }
out:
    return rc;
}

int
vault_store_put(struct vault_tenant *t, const uint8_t lease_id[VAULT_LEASE_LEN],
                const struct vault_object *objs, size_t n,
                struct vault_put_stats *stats_r, struct cfr_err *err)
{
    int rc;
    uint8_t(*ids)[VAULT_ID_LEN] = NULL;
    const void **datas = NULL;
    size_t *lens = NULL;
    int *rcs = NULL;
    bool *existed = NULL;
    struct cfr_kv_batch *b = NULL;
    struct vault_put_stats stats = {0};
    if (n > VAULT_IDS_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "put: %zu objects", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = object_check(&objs[i], err)) != 0) {
            goto out;
        }
    }
    if (n == 0) {
        rc = lease_live(t, lease_id, NULL, err);
        goto out;
    }
    ids = cfr_calloc(n, sizeof(*ids));
    datas = cfr_calloc(n, sizeof(*datas));
    lens = cfr_calloc(n, sizeof(*lens));
    rcs = cfr_calloc(n, sizeof(*rcs));
    existed = cfr_calloc(n, sizeof(*existed));
    if (ids == NULL || datas == NULL || lens == NULL || rcs == NULL ||
        existed == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "put");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(ids[i], objs[i].id, VAULT_ID_LEN);
        datas[i] = objs[i].data;
        lens[i] = objs[i].len;
    }
    if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    /*
     * Protect first, under the lock (invariant 3); the data itself is
     * written outside it, so GC and commits do not wait for it.
     */
    pthread_mutex_lock(&t->lock);
    if ((rc = lease_live(t, lease_id, NULL, err)) == 0 &&
        (rc = protect_ids(b, lease_id, (const uint8_t(*)[VAULT_ID_LEN])ids,
                          NULL, n, err)) == 0) {
        rc = cfr_kv_batch_commit(b, true, err);
    }
    pthread_mutex_unlock(&t->lock);
    if (rc != 0) {
        goto out;
    }
    if ((rc = cfr_kv_chunk_put_many(t->kv, n, (const uint8_t(*)[CFR_ID_LEN])ids,
                                    datas, lens, rcs, existed, err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != 0) {
            char hex[2 * VAULT_ID_LEN + 1];
            rc = CFR_ERR(err, CFR_EEXIST,
                         "object %s: other bytes already stored under it",
                         hex_id(ids[i], hex));
            goto out;
        }
        if (existed[i]) {
            stats.already_present++;
        } else {
            stats.stored++;
            stats.bytes += lens[i];
        }
    }
out:
    if (stats_r != NULL) {
        *stats_r = stats;
    }
    cfr_kv_batch_free(b);
    cfr_free(ids);
    cfr_free(datas);
    cfr_free(lens);
    cfr_free(rcs);
    cfr_free(existed);
    return rc;
}

int
vault_store_get(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                struct cfr_buf *out, enum vault_object_kind *kind_r,
                struct cfr_err *err)
{
    int rc = cfr_kv_chunk_get(t->kv, id, out, err);
    if (rc == CFR_ECORRUPT) {
        corrupt_seen(t, id);
    }
    if (rc == 0 && kind_r != NULL) {
        *kind_r = kind_of(out->data, out->len);
    }
    return rc;
}

/* ---- reference counting ------------------------------------------------- */

/*
 * The counts a commit or a drop changes, keyed by tag || ID, so that an ID
 * met twice in one walk sees its own earlier change (open addressing; IDs
 * are hashes, so their first bytes are a fine hash).
 */
struct ref_ent {
    uint8_t key[REF_KEY_LEN];
    bool used;
    uint64_t count;
};

struct ref_walk {
    struct vault_tenant *t;
    struct ref_ent *v;
    size_t cap;
    size_t n;
    char hex[2 * VAULT_ID_LEN + 1];
    /* A page that failed its checksum, reported once the lock is let go. */
    bool corrupt;
    uint8_t corrupt_id[VAULT_ID_LEN];
};

static void
walk_fini(struct ref_walk *w)
{
    cfr_free_null(&w->v);
    w->cap = 0;
    w->n = 0;
}

static size_t
slot_of(const struct ref_walk *w, const uint8_t key[REF_KEY_LEN])
{
    uint64_t h = cfr_get_le64(key + 1) ^ key[0];
    size_t i = (size_t)h & (w->cap - 1);
    while (w->v[i].used && memcmp(w->v[i].key, key, REF_KEY_LEN) != 0) {
        i = (i + 1) & (w->cap - 1);
    }
    return i;
}

static int
walk_grow(struct ref_walk *w, struct cfr_err *err)
{
    size_t cap = w->cap == 0 ? 256 : 2 * w->cap;
    struct ref_ent *old = w->v;
    size_t old_cap = w->cap;
    struct ref_ent *v = cfr_calloc(cap, sizeof(*v));
    if (v == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "reference counts");
    }
    w->v = v;
    w->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].used) {
            w->v[slot_of(w, old[i].key)] = old[i];
        }
    }
    cfr_free(old);
    return 0;
}

/* Finds or loads the count of tag || id; *e_r valid until the next call. */
static int
walk_entry(struct ref_walk *w, uint8_t tag, const uint8_t *id,
           struct ref_ent **e_r, struct cfr_err *err)
{
    int rc = 0;
    uint8_t key[REF_KEY_LEN];
    uint8_t val[8];
    struct cfr_buf v;
    cfr_buf_init(&v, sizeof(val));
    key[0] = tag;
    memcpy(key + 1, id, VAULT_ID_LEN);
    if (2 * (w->n + 1) > w->cap && (rc = walk_grow(w, err)) != 0) {
        goto out;
    }
    size_t i = slot_of(w, key);
    if (!w->v[i].used) {
        uint64_t count = 0;
        rc = cfr_kv_get(w->t->kv, CF_REFS, key, sizeof(key), &v, err);
        if (rc == 0 && v.len != 8) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "refcount of %s: %zu bytes",
                         hex_id(id, w->hex), v.len);
        }
        if (rc == 0) {
            count = cfr_get_le64(v.data);
        } else if (rc == CFR_ENOTFOUND) {
            rc = 0;
        }
        if (rc != 0) {
            goto out;
        }
        memcpy(w->v[i].key, key, sizeof(key));
        w->v[i].used = true;
        w->v[i].count = count;
        w->n++;
    }
    *e_r = &w->v[i];
out:
    cfr_buf_fini(&v);
    return rc;
}

/* Adds delta (+1 or -1) to a count; *before_r gets the old value. */
static int
walk_adjust(struct ref_walk *w, uint8_t tag, const uint8_t *id, int delta,
            uint64_t *before_r, struct cfr_err *err)
{
    struct ref_ent *e;
    int rc = walk_entry(w, tag, id, &e, err);
    if (rc != 0) {
        return rc;
    }
    *before_r = e->count;
    if (delta > 0) {
        e->count++;
    } else if (e->count == 0) {
        return CFR_ERR(err, CFR_EINTERNAL, "tenant %s: refcount of %s below 0",
                       w->t->name, hex_id(id, w->hex));
    } else {
        e->count--;
    }
    return 0;
}

/* Loads, checks and decodes page id, which must be at level. */
static int
page_load(struct ref_walk *w, const uint8_t *id, uint32_t level,
          Coffer__V1__RefPage **m_r, struct cfr_err *err)
{
    int rc;
    struct cfr_buf page;
    uint32_t got_level;
    size_t count;
    struct cfr_tree_alloc alloc;
    *m_r = NULL;
    cfr_buf_init(&page, CFR_TREE_PAGE_MAX);
    if ((rc = cfr_kv_chunk_get(w->t->kv, id, &page, err)) != 0) {
        if (rc == CFR_ECORRUPT && !w->corrupt) {
            w->corrupt = true;
            memcpy(w->corrupt_id, id, VAULT_ID_LEN);
        }
        if (rc == CFR_ENOTFOUND) {
            rc = CFR_ERR(err, CFR_ENOTFOUND, "reference page %s is missing",
                         hex_id(id, w->hex));
        }
        goto out;
    }
    if (kind_of(page.data, page.len) != VAULT_OBJ_REF_PAGE ||
        cfr_snap_refs_page_check(page.data, page.len, &got_level, &count,
                                 err) != 0 ||
        got_level != level) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "object %s is not a reference page at level %u",
                     hex_id(id, w->hex), level);
        goto out;
    }
    cfr_tree_alloc_init(&alloc);
    if ((*m_r = coffer__v1__ref_page__unpack(&alloc.pb, page.len, page.data)) ==
        NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "decoding page %s", hex_id(id, w->hex));
        goto out;
    }
out:
    cfr_buf_fini(&page);
    return rc;
}

/*
 * Counts (delta +1) or uncounts (-1) a reference to page id at level: the
 * page's children only when its count leaves or reaches 0. When counting a
 * new page, everything it names must be present (invariant 2).
 */
static int
page_adjust(struct ref_walk *w, const uint8_t *id, uint32_t level, int delta,
            struct cfr_err *err)
{
    int rc;
    uint64_t before;
    Coffer__V1__RefPage *m = NULL;
    bool *miss = NULL;
    if ((rc = walk_adjust(w, TAG_PAGE, id, delta, &before, err)) != 0) {
        goto out;
    }
    if ((delta > 0 && before != 0) || (delta < 0 && before != 1)) {
        goto out;
    }
    if ((rc = page_load(w, id, level, &m, err)) != 0) {
        goto out;
    }
    CFR_ASSERT(m != NULL);
    if (level > 0) {
        for (size_t i = 0; i < m->n_children; i++) {
            if ((rc = page_adjust(w, m->children[i]->id.data, level - 1, delta,
                                  err)) != 0) {
                goto out;
            }
        }
        goto out;
    }
    size_t n = m->ids.len / VAULT_ID_LEN;
    const uint8_t(*ids)[VAULT_ID_LEN] =
        (const uint8_t(*)[VAULT_ID_LEN])m->ids.data;
    if (delta > 0 && n > 0) {
        size_t n_miss;
        if ((miss = cfr_calloc(n, sizeof(*miss))) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "commit");
            goto out;
        }
        if ((rc = cfr_kv_chunk_has_many(w->t->kv, n, ids, miss, &n_miss,
                                        err)) != 0) {
            goto out;
        }
        for (size_t i = 0; i < n && n_miss > 0; i++) {
            if (miss[i]) {
                rc = CFR_ERR(err, CFR_ENOTFOUND, "object %s is missing",
                             hex_id(ids[i], w->hex));
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = walk_adjust(w, TAG_OBJ, ids[i], delta, &before, err)) != 0) {
            goto out;
        }
    }
out:
    cfr_free(miss);
    if (m != NULL) {
        coffer__v1__ref_page__free_unpacked(m, cfr_tree_allocator());
    }
    return rc;
}

/* Queues every changed count: a zero count is a deleted record. */
static int
walk_queue(struct ref_walk *w, struct cfr_kv_batch *b, struct cfr_err *err)
{
    int rc = 0;
    uint8_t val[8];
    for (size_t i = 0; i < w->cap && rc == 0; i++) {
        const struct ref_ent *e = &w->v[i];
        if (!e->used) {
            continue;
        }
        if (e->count == 0) {
            rc = cfr_kv_batch_delete(b, CF_REFS, e->key, REF_KEY_LEN, err);
        } else {
            cfr_put_le64(val, e->count);
            rc = cfr_kv_batch_put(b, CF_REFS, e->key, REF_KEY_LEN, val,
                                  sizeof(val), err);
        }
    }
    return rc;
}

/* ---- snapshots ---------------------------------------------------------- */

/* Whether a tombstone for header_id is kept. */
static int
tomb_has(struct vault_tenant *t, const uint8_t header_id[VAULT_ID_LEN],
         bool *has_r, struct cfr_err *err)
{
    struct cfr_buf v;
    cfr_buf_init(&v, TOMB_REC_LEN);
    int rc = cfr_kv_get(t->kv, CF_TOMBS, header_id, VAULT_ID_LEN, &v, err);
    *has_r = rc == 0;
    if (rc == CFR_ENOTFOUND) {
        rc = 0;
    }
    cfr_buf_fini(&v);
    return rc;
}

/* Reads a snapshot record into v and decodes it (r borrows v). */
static int
snap_read(struct vault_tenant *t, const uint8_t header_id[VAULT_ID_LEN],
          struct cfr_buf *v, struct snap_rec *r, struct cfr_err *err)
{
    int rc = cfr_kv_get(t->kv, CF_SNAPS, header_id, VAULT_ID_LEN, v, err);
    if (rc == 0) {
        rc = snap_decode(header_id, v->data, v->len, r, err);
    }
    return rc;
}

/* The newest snapshot of a mailbox: *found_r false when it has none. */
static int
newest_of(struct vault_tenant *t, const uint8_t *mailbox_id,
          uint8_t header_id_r[VAULT_ID_LEN], bool *found_r, struct cfr_err *err)
{
    int rc;
    bool got;
    struct cfr_kv_entry e;
    *found_r = false;
    struct cfr_kv_iter *it = cfr_kv_iter_new_prefix(
        t->kv, CF_MAILBOX, mailbox_id, VAULT_ID_LEN, err);
    if (it == NULL) {
        return err != NULL ? err->code : CFR_ENOMEM;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len == MBOX_KEY_LEN) {
            memcpy(header_id_r, e.key + VAULT_ID_LEN + 8, VAULT_ID_LEN);
            *found_r = true;
        }
    }
    cfr_kv_iter_free(it);
    return rc;
}

int
vault_store_commit(struct vault_tenant *t, const struct vault_commit *c,
                   struct vault_snapshot *snap_r, bool *already_r,
                   struct cfr_err *err)
{
    int rc;
    struct ref_walk w = {.t = t};
    struct cfr_kv_batch *b = NULL;
    struct cfr_buf v, rec;
    struct snap_rec old;
    struct vault_snapshot s;
    uint8_t key[MBOX_KEY_LEN];
    bool locked = false;
    cfr_buf_init(&v, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    cfr_buf_init(&rec, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    memset(&s, 0, sizeof(s));
    *already_r = false;
    if (c->mailbox_id == NULL || c->header_id == NULL ||
        (c->header == NULL && c->header_len > 0)) {
        rc = CFR_ERR(err, CFR_EINVAL, "commit: mailbox and header IDs needed");
        goto out;
    }
    if (c->header_len > VAULT_HEADER_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "commit: header of %zu bytes",
                     c->header_len);
        goto out;
    }
    if (c->refs.height < 1 || c->refs.height > CFR_TREE_HEIGHT_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "commit: tree height %u", c->refs.height);
        goto out;
    }
    if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&t->lock);
    locked = true;
    /* Not needed for correctness (presence is checked below, under the
     * lock), but a commit belongs to an upload session. */
    if (c->lease_id != NULL &&
        (rc = lease_live(t, c->lease_id, NULL, err)) != 0) {
        goto out;
    }
    rc = snap_read(t, c->header_id, &v, &old, err);
    if (rc == 0) {
        if (memcmp(old.s.mailbox_id, c->mailbox_id, VAULT_ID_LEN) != 0 ||
            memcmp(old.s.refs.id, c->refs.id, VAULT_ID_LEN) != 0 ||
            old.header_len != c->header_len ||
            (c->header_len > 0 &&
             memcmp(old.header, c->header, c->header_len) != 0)) {
            rc = CFR_ERR(err, CFR_EEXIST,
                         "commit: header ID already names another snapshot");
            goto out;
        }
        s = old.s;
        *already_r = true;
        goto out;
    }
    if (rc != CFR_ENOTFOUND) {
        goto out;
    }
    /*
     * A snapshot dropped here stays dropped: under the lock, so neither a
     * replica's copy pulled while it was being purged nor a retried commit
     * brings it back.
     */
    bool tomb = false;
    if ((rc = tomb_has(t, c->header_id, &tomb, err)) != 0) {
        goto out;
    }
    if (tomb) {
        rc = CFR_ERR(err, CFR_EEXIST,
                     "commit: the snapshot was deleted here (tombstone)");
        goto out;
    }
    if ((rc = page_adjust(&w, c->refs.id, c->refs.height - 1, 1, err)) != 0) {
        goto out;
    }
    if (c->hold_previous) {
        uint8_t prev[VAULT_ID_LEN];
        bool found;
        if ((rc = newest_of(t, c->mailbox_id, prev, &found, err)) != 0) {
            goto out;
        }
        if (found) {
            if ((rc = snap_read(t, prev, &v, &old, err)) != 0) {
                goto out;
            }
            /* Already held: its hold time stays that of the real change,
             * which is what replicas compare. */
            if (!old.s.held) {
                old.s.held = true;
                old.s.hold_changed_ms = now_ms(t);
                if ((rc = snap_encode(&old.s, old.header, old.header_len, &rec,
                                      err)) != 0 ||
                    (rc = cfr_kv_batch_put(b, CF_SNAPS, prev, VAULT_ID_LEN,
                                           rec.data, rec.len, err)) != 0) {
                    goto out;
                }
            }
        }
    }
    memcpy(s.header_id, c->header_id, VAULT_ID_LEN);
    memcpy(s.mailbox_id, c->mailbox_id, VAULT_ID_LEN);
    /*
     * Invariant 4 of store.h: the vault's clock, not the client's. A
     * replica's pull passes the peer's age of the snapshot mapped onto
     * this clock, so the mailbox order (which retention reads) stays the
     * order in which the snapshots were taken; never later than now.
     */
    int64_t now = now_ms(t);
    s.received_ms =
        c->received_ms > 0 && c->received_ms < now ? c->received_ms : now;
    memcpy(s.refs.id, c->refs.id, VAULT_ID_LEN);
    s.refs.height = c->refs.height;
    s.refs.entries = c->refs.entries;
    s.flags = c->flags;
    s.held = false;
    s.hold_changed_ms = 0;
    mbox_key(key, s.mailbox_id, s.received_ms, s.header_id);
    if ((rc = walk_queue(&w, b, err)) != 0 ||
        (rc = snap_encode(&s, c->header, c->header_len, &rec, err)) != 0 ||
        (rc = cfr_kv_batch_put(b, CF_SNAPS, s.header_id, VAULT_ID_LEN, rec.data,
                               rec.len, err)) != 0 ||
        (rc = cfr_kv_batch_put(b, CF_MAILBOX, key, sizeof(key), "", 0, err)) !=
            0 ||
        (rc = cfr_kv_batch_commit(b, true, err)) != 0) {
        goto out;
    }
out:
    if (locked) {
        pthread_mutex_unlock(&t->lock);
    }
    if (w.corrupt) {
        corrupt_seen(t, w.corrupt_id);
    }
    if (rc == 0 && snap_r != NULL) {
        *snap_r = s;
    }
    walk_fini(&w);
    cfr_kv_batch_free(b);
    cfr_buf_fini(&v);
    cfr_buf_fini(&rec);
    return rc;
}

int
vault_store_snapshots(struct vault_tenant *t, const uint8_t *mailbox_id,
                      bool with_headers, vault_snapshot_fn *fn, void *ctx,
                      struct cfr_err *err)
{
    int rc;
    bool got;
    struct cfr_kv_entry e;
    struct cfr_buf v;
    struct snap_rec r;
    uint8_t header_id[VAULT_ID_LEN];
    cfr_buf_init(&v, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    struct cfr_kv_iter *it =
        cfr_kv_iter_new_prefix(t->kv, CF_MAILBOX, mailbox_id,
                               mailbox_id != NULL ? VAULT_ID_LEN : 0, err);
    if (it == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len != MBOX_KEY_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad mailbox index key",
                         t->name);
            goto out;
        }
        memcpy(header_id, e.key + VAULT_ID_LEN + 8, VAULT_ID_LEN);
        rc = snap_read(t, header_id, &v, &r, err);
        if (rc == CFR_ENOTFOUND) {
            continue; /* dropped since the iterator's view was taken */
        }
        if (rc != 0 || (rc = fn(ctx, &r.s, with_headers ? r.header : NULL,
                                with_headers ? r.header_len : 0)) != 0) {
            goto out;
        }
    }
out:
    cfr_kv_iter_free(it);
    cfr_buf_fini(&v);
    return rc;
}

/* ---- retention, holds, purge -------------------------------------------- */

/*
 * Sets a snapshot's hold. synced_ms NULL: an operator's change here,
 * stamped now. Otherwise a peer's change stamped *synced_ms, applied only
 * if later than ours: last change wins, by the time each vault stamped it;
 * a tie goes to held, so that two vaults disagreeing at the same
 * millisecond settle on keeping the data rather than letting retention
 * take it. *applied_r (may be NULL): whether the record changed.
 */
static int
hold_set(struct vault_tenant *t, const uint8_t header_id[VAULT_ID_LEN],
         bool held, const int64_t *synced_ms, bool *applied_r,
         struct cfr_err *err)
{
    int rc;
    struct cfr_buf v, rec;
    struct snap_rec r;
    if (applied_r != NULL) {
        *applied_r = false;
    }
    cfr_buf_init(&v, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    cfr_buf_init(&rec, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    pthread_mutex_lock(&t->lock);
    if ((rc = snap_read(t, header_id, &v, &r, err)) != 0) {
        goto out;
    }
    if (r.s.held == held) {
        goto out;
    }
    if (synced_ms != NULL && (*synced_ms < r.s.hold_changed_ms ||
                              (*synced_ms == r.s.hold_changed_ms && !held))) {
        goto out;
    }
    r.s.held = held;
    r.s.hold_changed_ms = synced_ms != NULL ? *synced_ms : now_ms(t);
    if ((rc = snap_encode(&r.s, r.header, r.header_len, &rec, err)) != 0 ||
        (rc = cfr_kv_put(t->kv, CF_SNAPS, header_id, VAULT_ID_LEN, rec.data,
                         rec.len, err)) != 0) {
        goto out;
    }
    if (applied_r != NULL) {
        *applied_r = true;
    }
out:
    pthread_mutex_unlock(&t->lock);
    cfr_buf_fini(&v);
    cfr_buf_fini(&rec);
    return rc;
}

int
vault_store_hold(struct vault_tenant *t, const uint8_t header_id[VAULT_ID_LEN],
                 bool held, struct cfr_err *err)
{
    return hold_set(t, header_id, held, NULL, NULL, err);
}

/*
 * Drops one snapshot under the tenant lock: record, index entry and counts
 * in one synced batch with its tombstone. With cutoff set (retention), a
 * snapshot held or received at or after *cutoff since it was chosen is
 * kept; *dropped_r tells. With tomb_absent (a peer's tombstone), an
 * absent snapshot still gets a tombstone unless it has one already (whose
 * time is kept: re-stamping would let a tombstone live forever). A page
 * found damaged on the way is noted in *bad for the caller to report once
 * it holds no store lock (the maint lock included).
 */
static int
snap_drop(struct vault_tenant *t, const uint8_t header_id[VAULT_ID_LEN],
          const int64_t *cutoff, bool tomb_absent, int64_t tomb_ms,
          bool *dropped_r, struct corrupt_note *bad, struct cfr_err *err)
{
    int rc;
    struct ref_walk w = {.t = t};
    struct cfr_kv_batch *b = NULL;
    struct cfr_buf v;
    struct snap_rec r;
    uint8_t key[MBOX_KEY_LEN];
    uint8_t tomb[TOMB_REC_LEN];
    *dropped_r = false;
    cfr_buf_init(&v, SNAP_REC_FIXED + VAULT_HEADER_MAX);
    if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out_unlocked;
    }
    pthread_mutex_lock(&t->lock);
    /* A peer's deletion keeps the peer's age (never in the future), so a
     * tombstone expires everywhere about when it expires where it was
     * made instead of being re-stamped on every hop. */
    int64_t now = now_ms(t);
    if (tomb_ms <= 0 || tomb_ms > now) {
        tomb_ms = now;
    }
    rc = snap_read(t, header_id, &v, &r, err);
    if (rc == CFR_ENOTFOUND) {
        bool has = false;
        rc = 0;
        if (tomb_absent && (rc = tomb_has(t, header_id, &has, err)) == 0 &&
            !has) {
            tomb[0] = TOMB_REC_VERSION;
            cfr_put_le64(tomb + 1, (uint64_t)tomb_ms);
            rc = cfr_kv_put(t->kv, CF_TOMBS, header_id, VAULT_ID_LEN, tomb,
                            sizeof(tomb), err);
        }
        goto out;
    }
    if (rc != 0 ||
        (cutoff != NULL && (r.s.held || r.s.received_ms >= *cutoff))) {
        goto out;
    }
    if ((rc = page_adjust(&w, r.s.refs.id, r.s.refs.height - 1, -1, err)) !=
        0) {
        goto out;
    }
    mbox_key(key, r.s.mailbox_id, r.s.received_ms, header_id);
    tomb[0] = TOMB_REC_VERSION;
    cfr_put_le64(tomb + 1, (uint64_t)tomb_ms);
    if ((rc = walk_queue(&w, b, err)) != 0 ||
        (rc = cfr_kv_batch_delete(b, CF_SNAPS, header_id, VAULT_ID_LEN, err)) !=
            0 ||
        (rc = cfr_kv_batch_delete(b, CF_MAILBOX, key, sizeof(key), err)) != 0 ||
        (rc = cfr_kv_batch_put(b, CF_TOMBS, header_id, VAULT_ID_LEN, tomb,
                               sizeof(tomb), err)) != 0 ||
        (rc = cfr_kv_batch_commit(b, true, err)) != 0) {
        goto out;
    }
    atomic_store(&t->dirty, true);
    *dropped_r = true;
out:
    pthread_mutex_unlock(&t->lock);
    if (w.corrupt && !bad->seen) {
        bad->seen = true;
        memcpy(bad->id, w.corrupt_id, VAULT_ID_LEN);
    }
out_unlocked:
    walk_fini(&w);
    cfr_kv_batch_free(b);
    cfr_buf_fini(&v);
    return rc;
}

/* A growable list of IDs. */
struct id_list {
    uint8_t (*v)[VAULT_ID_LEN];
    size_t n;
    size_t cap;
};

static int
id_list_add(struct id_list *l, const uint8_t *id, struct cfr_err *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap == 0 ? 64 : 2 * l->cap;
        size_t bytes;
        uint8_t(*v)[VAULT_ID_LEN];
        if (!cfr_mul_ok(cap, VAULT_ID_LEN, &bytes) ||
            (v = cfr_realloc(l->v, bytes)) == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "ID list");
        }
        l->v = v;
        l->cap = cap;
    }
    memcpy(l->v[l->n++], id, VAULT_ID_LEN);
    return 0;
}

/* Drops each listed snapshot, one lock hold each. */
static int
drop_list(struct vault_tenant *t, const struct id_list *l,
          const int64_t *cutoff, struct vault_maint_stats *stats,
          struct corrupt_note *bad, struct cfr_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        bool dropped;
        rc = snap_drop(t, l->v[i], cutoff, false, 0, &dropped, bad, err);
        if (rc == 0 && dropped) {
            stats->snapshots_removed++;
        }
    }
    return rc;
}

int
vault_store_retention(struct vault_tenant *t, int64_t window_ms,
                      struct vault_maint_stats *stats_r, struct cfr_err *err)
{
    int rc;
    struct vault_maint_stats stats = {0};
    struct id_list l = {0};
    struct cfr_kv_iter *it = NULL;
    bool got, have_prev = false;
    struct cfr_kv_entry e;
    uint8_t prev[MBOX_KEY_LEN];
    uint8_t cut[8];
    struct corrupt_note bad = {0};
    if (window_ms < 0) {
        return CFR_ERR(err, CFR_EINVAL, "retention: negative window");
    }
    pthread_mutex_lock(&t->maint);
    int64_t cutoff = now_ms(t) - window_ms;
    put_be64_ordered(cut, cutoff);
    if ((it = cfr_kv_iter_new(t->kv, CF_MAILBOX, NULL, 0, NULL, 0, err)) ==
        NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    /*
     * Index keys run oldest first per mailbox, so an entry followed by one
     * of the same mailbox is not its newest, and that next entry is the
     * snapshot that superseded it. A snapshot is what the mailbox held
     * until it was superseded: a message missing from the next one was
     * deleted at the latest by then. So the window runs from the
     * SUPERSEDING snapshot's receive time, not the snapshot's own: with
     * sparse backups (day 0, then day 35) mail deleted on day 34 stays
     * restorable until day 65, not day 30. The newest of each mailbox
     * has no successor and is never dropped. Holds are read under the
     * lock when dropping; the newest of a mailbox stays the newest
     * because only this (serialised) code removes snapshots.
     */
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len != MBOX_KEY_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad mailbox index key",
                         t->name);
            goto out;
        }
        if (have_prev && memcmp(prev, e.key, VAULT_ID_LEN) == 0 &&
            memcmp(e.key + VAULT_ID_LEN, cut, sizeof(cut)) < 0 &&
            (rc = id_list_add(&l, prev + VAULT_ID_LEN + 8, err)) != 0) {
            goto out;
        }
        memcpy(prev, e.key, MBOX_KEY_LEN);
        have_prev = true;
    }
    if (rc != 0) {
        goto out;
    }
    cfr_kv_iter_free(it);
    it = NULL;
    rc = drop_list(t, &l, &cutoff, &stats, &bad, err);
    cfr_log(CFR_LOG_INFO, "vault.retention", "tenant=%s dropped=%llu", t->name,
            (unsigned long long)stats.snapshots_removed);
out:
    pthread_mutex_unlock(&t->maint);
    if (bad.seen) {
        corrupt_seen(t, bad.id);
    }
    cfr_kv_iter_free(it);
    cfr_free(l.v);
    if (stats_r != NULL) {
        *stats_r = stats;
    }
    return rc;
}

int
vault_store_purge_mailbox(struct vault_tenant *t,
                          const uint8_t mailbox_id[VAULT_ID_LEN],
                          struct vault_maint_stats *stats_r,
                          struct cfr_err *err)
{
    int rc;
    struct vault_maint_stats stats = {0};
    struct id_list l = {0};
    struct cfr_kv_iter *it = NULL;
    bool got;
    struct cfr_kv_entry e;
    struct corrupt_note bad = {0};
    pthread_mutex_lock(&t->maint);
    if ((it = cfr_kv_iter_new_prefix(t->kv, CF_MAILBOX, mailbox_id,
                                     VAULT_ID_LEN, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len == MBOX_KEY_LEN &&
            (rc = id_list_add(&l, e.key + VAULT_ID_LEN + 8, err)) != 0) {
            goto out;
        }
    }
    if (rc != 0) {
        goto out;
    }
    cfr_kv_iter_free(it);
    it = NULL;
    rc = drop_list(t, &l, NULL, &stats, &bad, err);
    cfr_log(CFR_LOG_WARN, "vault.purge_mailbox", "tenant=%s dropped=%llu",
            t->name, (unsigned long long)stats.snapshots_removed);
out:
    pthread_mutex_unlock(&t->maint);
    if (bad.seen) {
        corrupt_seen(t, bad.id);
    }
    cfr_kv_iter_free(it);
    cfr_free(l.v);
    if (stats_r != NULL) {
        *stats_r = stats;
    }
    return rc;
}

/* ---- garbage collection ------------------------------------------------- */

/* Live lease IDs at now (tenant lock held). */
static int
live_leases(struct vault_tenant *t, uint8_t (**ids_r)[VAULT_LEASE_LEN],
            size_t *n_r, struct id_list *expired, struct cfr_err *err)
{
    int rc;
    bool got;
    struct cfr_kv_entry e;
    uint8_t(*v)[VAULT_LEASE_LEN] = NULL;
    size_t n = 0, cap = 0;
    int64_t now = now_ms(t);
    struct cfr_kv_iter *it =
        cfr_kv_iter_new(t->kv, CF_LEASES, NULL, 0, NULL, 0, err);
    if (it == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len != VAULT_LEASE_LEN || e.val_len < LEASE_REC_FIXED) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad lease record",
                         t->name);
            goto out;
        }
        if ((int64_t)cfr_get_le64(e.val + 1) <= now) {
            if (expired != NULL) {
                /* Lease IDs padded to an ID-sized slot. */
                uint8_t slot[VAULT_ID_LEN] = {0};
                memcpy(slot, e.key, VAULT_LEASE_LEN);
                if ((rc = id_list_add(expired, slot, err)) != 0) {
                    goto out;
                }
            }
            continue;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : 2 * cap;
            size_t bytes;
            uint8_t(*nv)[VAULT_LEASE_LEN];
            if (!cfr_mul_ok(ncap, VAULT_LEASE_LEN, &bytes) ||
                (nv = cfr_realloc(v, bytes)) == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "lease list");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        memcpy(v[n++], e.key, VAULT_LEASE_LEN);
    }
out:
    cfr_kv_iter_free(it);
    if (rc != 0) {
        cfr_free(v);
        v = NULL;
        n = 0;
    }
    *ids_r = v;
    *n_r = n;
    return rc;
}

/*
 * Removes expired leases with their protections, and tombstones past
 * their keep time.
 */
static int
gc_expire(struct vault_tenant *t, struct cfr_err *err)
{
    int rc;
    struct id_list expired = {0};
    struct id_list old_tombs = {0};
    uint8_t(*live)[VAULT_LEASE_LEN] = NULL;
    size_t n_live;
    struct cfr_kv_iter *it = NULL;
    bool got;
    struct cfr_kv_entry e;
    pthread_mutex_lock(&t->lock);
    rc = live_leases(t, &live, &n_live, &expired, err);
    for (size_t i = 0; i < expired.n && rc == 0; i++) {
        rc = lease_remove(t, expired.v[i], err);
    }
    pthread_mutex_unlock(&t->lock);
    if (rc != 0) {
        goto out;
    }
    if (expired.n > 0) {
        atomic_store(&t->dirty, true);
    }
    int64_t cutoff = now_ms(t) - t->st->tombstone_keep_ms;
    if ((it = cfr_kv_iter_new(t->kv, CF_TOMBS, NULL, 0, NULL, 0, err)) ==
        NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len == VAULT_ID_LEN && e.val_len == TOMB_REC_LEN &&
            (int64_t)cfr_get_le64(e.val + 1) < cutoff &&
            (rc = id_list_add(&old_tombs, e.key, err)) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < old_tombs.n && rc == 0; i++) {
        rc = cfr_kv_delete(t->kv, CF_TOMBS, old_tombs.v[i], VAULT_ID_LEN, err);
    }
out:
    cfr_kv_iter_free(it);
    cfr_free(live);
    cfr_free(expired.v);
    cfr_free(old_tombs.v);
    return rc;
}

/*
 * One GC batch: under the tenant lock, re-reads both counts and every live
 * lease's protection of each candidate, and deletes those with none in one
 * synced batch (kv's chunk rule 1 holds: data and index go together).
 */
static int
gc_batch(struct vault_tenant *t, const struct id_list *cand,
         const uint64_t *sizes, struct vault_maint_stats *stats,
         struct cfr_err *err)
{
    int rc;
    size_t n = cand->n;
    size_t n_keys = 2 * n;
    uint8_t(*live)[VAULT_LEASE_LEN] = NULL;
    size_t n_live = 0;
    uint8_t *keys = NULL;
    const void **kp = NULL;
    size_t *kl = NULL;
    struct cfr_buf *vals = NULL;
    int *rcs = NULL;
    bool *keep = NULL;
    struct cfr_kv_batch *b = NULL;
    bool locked = false;
    keys = cfr_calloc(n_keys, PROTECT_KEY_LEN);
    kp = cfr_calloc(n_keys, sizeof(*kp));
    kl = cfr_calloc(n_keys, sizeof(*kl));
    vals = cfr_calloc(n_keys, sizeof(*vals));
    rcs = cfr_calloc(n_keys, sizeof(*rcs));
    keep = cfr_calloc(n, sizeof(*keep));
    if (keys == NULL || kp == NULL || kl == NULL || vals == NULL ||
        rcs == NULL || keep == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "gc");
        goto out;
    }
    for (size_t i = 0; i < n_keys; i++) {
        cfr_buf_init(&vals[i], 8);
    }
    if ((b = cfr_kv_batch_new(t->kv, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&t->lock);
    locked = true;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < 2; j++) {
            uint8_t *k = keys + (2 * i + j) * PROTECT_KEY_LEN;
            k[0] = j == 0 ? TAG_PAGE : TAG_OBJ;
            memcpy(k + 1, cand->v[i], VAULT_ID_LEN);
            kp[2 * i + j] = k;
            kl[2 * i + j] = REF_KEY_LEN;
        }
    }
    if ((rc = cfr_kv_multi_get(t->kv, CF_REFS, n_keys, kp, kl, vals, rcs,
                               err)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (rcs[i] == 0) {
            keep[i / 2] = true;
        } else if (rcs[i] != CFR_ENOTFOUND) {
            rc = CFR_ERR(err, rcs[i], "gc: reading a refcount");
            goto out;
        }
    }
    if ((rc = live_leases(t, &live, &n_live, NULL, err)) != 0) {
        goto out;
    }
    for (size_t l = 0; l < n_live; l++) {
        for (size_t i = 0; i < n; i++) {
            uint8_t *k = keys + i * PROTECT_KEY_LEN;
            memcpy(k, live[l], VAULT_LEASE_LEN);
            memcpy(k + VAULT_LEASE_LEN, cand->v[i], VAULT_ID_LEN);
            kp[i] = k;
            kl[i] = PROTECT_KEY_LEN;
        }
        if ((rc = cfr_kv_multi_get(t->kv, CF_PROTECT, n, kp, kl, vals, rcs,
                                   err)) != 0) {
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if (rcs[i] == 0) {
                keep[i] = true;
            } else if (rcs[i] != CFR_ENOTFOUND) {
                rc = CFR_ERR(err, rcs[i], "gc: reading a protection");
                goto out;
            }
        }
    }
    uint64_t removed = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (keep[i]) {
            continue;
        }
        if ((rc = cfr_kv_batch_delete(b, CF_CHUNKS, cand->v[i], VAULT_ID_LEN,
                                      err)) != 0 ||
            (rc = cfr_kv_batch_delete(b, CF_INDEX, cand->v[i], VAULT_ID_LEN,
                                      err)) != 0) {
            goto out;
        }
        removed++;
        bytes += sizes[i];
    }
    if (removed > 0 && (rc = cfr_kv_batch_commit(b, true, err)) != 0) {
        goto out;
    }
    stats->objects_removed += removed;
    stats->bytes_removed += bytes;
out:
    if (locked) {
        pthread_mutex_unlock(&t->lock);
    }
    if (vals != NULL) {
        for (size_t i = 0; i < n_keys; i++) {
            cfr_buf_fini(&vals[i]);
        }
    }
    cfr_kv_batch_free(b);
    cfr_free(live);
    cfr_free(keys);
    cfr_free(kp);
    cfr_free(kl);
    cfr_free(vals);
    cfr_free(rcs);
    cfr_free(keep);
    return rc;
}

/* Compacts every family that deletes touched, so the bytes leave the disk. */
static int
gc_compact(struct vault_tenant *t, struct cfr_err *err)
{
    static const unsigned cfs[] = {CF_CHUNKS, CF_INDEX,   CF_REFS,
                                   CF_SNAPS,  CF_MAILBOX, CF_PROTECT};
    int rc = 0;
    for (size_t i = 0; i < sizeof(cfs) / sizeof(cfs[0]) && rc == 0; i++) {
        rc = cfr_kv_compact(t->kv, cfs[i], NULL, 0, NULL, 0, err);
    }
    return rc;
}

int
vault_store_gc(struct vault_tenant *t, struct vault_maint_stats *stats_r,
               struct cfr_err *err)
{
    int rc;
    struct vault_maint_stats stats = {0};
    struct id_list cand = {0};
    uint64_t sizes[GC_BATCH];
    struct cfr_kv_iter *it = NULL;
    bool got;
    struct cfr_kv_entry e;
    pthread_mutex_lock(&t->maint);
    if ((rc = gc_expire(t, err)) != 0) {
        goto out;
    }
    /*
     * The walk reads the small index family under one view; objects stored
     * after it began are left for the next run, and every decision is made
     * again under the lock in gc_batch.
     */
    if ((it = cfr_kv_iter_new(t->kv, CF_INDEX, NULL, 0, NULL, 0, err)) ==
        NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    for (;;) {
        if ((rc = cfr_kv_iter_next(it, &got, &e, err)) != 0) {
            goto out;
        }
        if (got && e.key_len == VAULT_ID_LEN) {
            sizes[cand.n] =
                e.val_len == INDEX_REC_LEN ? cfr_get_le64(e.val + 33) : 0;
            if ((rc = id_list_add(&cand, e.key, err)) != 0) {
                goto out;
            }
        }
        if (cand.n == GC_BATCH || (!got && cand.n > 0)) {
            if ((rc = gc_batch(t, &cand, sizes, &stats, err)) != 0) {
                goto out;
            }
            cand.n = 0;
        }
        if (!got) {
            break;
        }
    }
    cfr_kv_iter_free(it);
    it = NULL;
    if (stats.objects_removed > 0 || atomic_load(&t->dirty)) {
        atomic_store(&t->dirty, false);
        if ((rc = gc_compact(t, err)) != 0) {
            atomic_store(&t->dirty, true);
            goto out;
        }
    }
    if (stats.objects_removed > 0) {
        cfr_log(CFR_LOG_INFO, "vault.gc", "tenant=%s objects=%llu bytes=%llu",
                t->name, (unsigned long long)stats.objects_removed,
                (unsigned long long)stats.bytes_removed);
    }
out:
    pthread_mutex_unlock(&t->maint);
    cfr_kv_iter_free(it);
    cfr_free(cand.v);
    if (stats_r != NULL) {
        *stats_r = stats;
    }
    return rc;
}

/* ---- scrub, tombstones, stats ------------------------------------------- */

struct scrub_ctx {
    vault_bad_fn *fn;
    void *ctx;
    const char *tenant;
};

static void
scrub_one(void *ctx, const uint8_t id[CFR_ID_LEN], int code, const char *why)
{
    struct scrub_ctx *c = ctx;
    struct cfr_err e;
    char hex[2 * VAULT_ID_LEN + 1];
    cfr_err_clear(&e);
    CFR_ERR(&e, code, "%s", why);
    cfr_log(CFR_LOG_ERROR, "vault.scrub_bad", "tenant=%s id=%s code=%s",
            c->tenant, hex_id(id, hex), cfr_code_name(code));
    if (c->fn != NULL) {
        c->fn(c->ctx, id, &e);
    }
}

int
vault_store_scrub(struct vault_tenant *t, vault_bad_fn *fn, void *ctx,
                  struct vault_maint_stats *stats_r, struct cfr_err *err)
{
    struct scrub_ctx c = {fn, ctx, t->name};
    struct cfr_kv_scrub_stats ks = {0};
    int rc = cfr_kv_scrub(t->kv, scrub_one, &c, &ks, err);
    if (stats_r != NULL) {
        memset(stats_r, 0, sizeof(*stats_r));
        stats_r->bad_objects = ks.bad;
    }
    return rc;
}

int
vault_store_tombstones(struct vault_tenant *t, vault_tombstone_fn *fn,
                       void *ctx, struct cfr_err *err)
{
    int rc;
    bool got;
    struct cfr_kv_entry e;
    struct cfr_kv_iter *it =
        cfr_kv_iter_new(t->kv, CF_TOMBS, NULL, 0, NULL, 0, err);
    if (it == NULL) {
        return err != NULL ? err->code : CFR_ENOMEM;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if (e.key_len != VAULT_ID_LEN || e.val_len != TOMB_REC_LEN ||
            e.val[0] != TOMB_REC_VERSION) {
            rc =
                CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad tombstone", t->name);
            break;
        }
        if ((rc = fn(ctx, e.key, (int64_t)cfr_get_le64(e.val + 1))) != 0) {
            break;
        }
    }
    cfr_kv_iter_free(it);
    return rc;
}

/* Counts the keys of a family, and sums a little-endian u64 at val_off. */
static int
count_cf(struct vault_tenant *t, unsigned cf, size_t val_off, uint64_t *n_r,
         uint64_t *sum_r, struct cfr_err *err)
{
    int rc;
    bool got;
    struct cfr_kv_entry e;
    uint64_t n = 0, sum = 0;
    struct cfr_kv_iter *it = cfr_kv_iter_new(t->kv, cf, NULL, 0, NULL, 0, err);
    if (it == NULL) {
        return err != NULL ? err->code : CFR_ENOMEM;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        n++;
        if (sum_r != NULL && e.val_len >= val_off + 8) {
            sum += cfr_get_le64(e.val + val_off);
        }
    }
    cfr_kv_iter_free(it);
    *n_r = n;
    if (sum_r != NULL) {
        *sum_r = sum;
    }
    return rc;
}

int
vault_store_stats(struct vault_tenant *t, struct vault_tenant_stats *st_r,
                  struct cfr_err *err)
{
    int rc;
    uint8_t(*live)[VAULT_LEASE_LEN] = NULL;
    size_t n_live = 0;
    memset(st_r, 0, sizeof(*st_r));
    if ((rc = count_cf(t, CF_INDEX, 33, &st_r->objects, &st_r->object_bytes,
                       err)) != 0 ||
        (rc = count_cf(t, CF_SNAPS, 0, &st_r->snapshots, NULL, err)) != 0 ||
        (rc = live_leases(t, &live, &n_live, NULL, err)) != 0) {
        goto out;
    }
    st_r->live_leases = n_live;
    st_r->corrupt_reads = atomic_load(&t->corrupt_reads);
out:
    cfr_free(live);
    return rc;
}

/* ---- replication -------------------------------------------------------- */

/* The bucket of a header ID (store.h): its first byte. */
static unsigned
bucket_of(const uint8_t *header_id)
{
    return header_id[0];
}

/* Hashes the entries gathered for one bucket into its digest. */
static void
digest_close(struct cfr_buf *acc, uint8_t out[VAULT_ID_LEN])
{
    cfr_id_plain(acc->data, acc->len, out);
    cfr_buf_reset(acc);
}

int
vault_store_digest(struct vault_tenant *t,
                   uint8_t buckets_r[VAULT_SYNC_BUCKETS][VAULT_ID_LEN],
                   uint64_t *snapshots_r, uint64_t *tombstones_r,
                   struct cfr_err *err)
{
    int rc = 0;
    struct cfr_kv_iter *si = NULL, *ti = NULL;
    struct cfr_kv_entry se, te;
    bool s_got = false, t_got = false;
    uint64_t n_snaps = 0, n_tombs = 0;
    int cur = -1; /* the bucket being gathered */
    struct cfr_buf acc;
    struct snap_rec r;
    /* One bucket's entries at a time: 34 bytes per snapshot of it. */
    cfr_buf_init(&acc, SIZE_MAX / 2);
    memset(buckets_r, 0, VAULT_SYNC_BUCKETS * VAULT_ID_LEN);
    /*
     * Both views under the tenant lock: a drop (record out, tombstone in)
     * happens under it in one batch, so it is in both views or neither,
     * and a snapshot is never counted twice or not at all.
     */
    pthread_mutex_lock(&t->lock);
    si = cfr_kv_iter_new(t->kv, CF_SNAPS, NULL, 0, NULL, 0, err);
    if (si != NULL) {
        ti = cfr_kv_iter_new(t->kv, CF_TOMBS, NULL, 0, NULL, 0, err);
    }
    pthread_mutex_unlock(&t->lock);
    if (si == NULL || ti == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    if ((rc = cfr_kv_iter_next(si, &s_got, &se, err)) != 0 ||
        (rc = cfr_kv_iter_next(ti, &t_got, &te, err)) != 0) {
        goto out;
    }
    /* A merge of the two families, both keyed by header ID: one pass. */
    while (s_got || t_got) {
        bool take_snap;
        if (s_got && se.key_len != VAULT_ID_LEN) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad snapshot key",
                         t->name);
            goto out;
        }
        if (t_got &&
            (te.key_len != VAULT_ID_LEN || te.val_len != TOMB_REC_LEN ||
             te.val[0] != TOMB_REC_VERSION)) {
            rc =
                CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad tombstone", t->name);
            goto out;
        }
        /* Equal IDs (not made by this store, but possible in a damaged
         * database): 'S' sorts before 'T'. */
        take_snap =
            s_got && (!t_got || memcmp(se.key, te.key, VAULT_ID_LEN) <= 0);
        const uint8_t *id = take_snap ? se.key : te.key;
        unsigned b = bucket_of(id);
        if ((int)b != cur) {
            if (cur >= 0) {
                digest_close(&acc, buckets_r[cur]);
            }
            cur = (int)b;
        }
        if ((rc = cfr_buf_append(&acc, id, VAULT_ID_LEN, err)) != 0) {
            goto out;
        }
        if (take_snap) {
            if ((rc = snap_decode(se.key, se.val, se.val_len, &r, err)) != 0 ||
                (rc = cfr_buf_append_u8(&acc, 'S', err)) != 0 ||
                (rc = cfr_buf_append_u8(&acc, r.s.held ? 1 : 0, err)) != 0) {
                goto out;
            }
            n_snaps++;
            rc = cfr_kv_iter_next(si, &s_got, &se, err);
        } else {
            if ((rc = cfr_buf_append_u8(&acc, 'T', err)) != 0) {
                goto out;
            }
            n_tombs++;
            rc = cfr_kv_iter_next(ti, &t_got, &te, err);
        }
        if (rc != 0) {
            goto out;
        }
    }
    if (cur >= 0) {
        digest_close(&acc, buckets_r[cur]);
    }
out:
    cfr_kv_iter_free(si);
    cfr_kv_iter_free(ti);
    cfr_buf_fini(&acc);
    if (rc != 0) {
        memset(buckets_r, 0, VAULT_SYNC_BUCKETS * VAULT_ID_LEN);
        n_snaps = 0;
        n_tombs = 0;
    }
    if (snapshots_r != NULL) {
        *snapshots_r = n_snaps;
    }
    if (tombstones_r != NULL) {
        *tombstones_r = n_tombs;
    }
    return rc;
}

typedef int tomb_cb(void *ctx, const uint8_t header_id[VAULT_ID_LEN],
                    int64_t dropped_ms);

/* Walks one family over the runs of wanted buckets, in header-ID order. */
static int
sync_walk(struct vault_tenant *t, unsigned cf,
          const bool want[VAULT_SYNC_BUCKETS], vault_snapshot_fn *snap_fn,
          tomb_cb *tomb_fn, void *ctx, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_kv_iter *it = NULL;
    struct snap_rec r;
    for (unsigned b = 0; b < VAULT_SYNC_BUCKETS && rc == 0;) {
        if (!want[b]) {
            b++;
            continue;
        }
        unsigned e = b;
        while (e < VAULT_SYNC_BUCKETS && want[e]) {
            e++;
        }
        /* Keys k with lo <= k < hi: one iterator per run of buckets. */
        uint8_t lo = (uint8_t)b, hi = (uint8_t)(e & 0xff);
        if ((it = cfr_kv_iter_new(
                 t->kv, cf, &lo, 1, e < VAULT_SYNC_BUCKETS ? &hi : NULL,
                 e < VAULT_SYNC_BUCKETS ? 1 : 0, err)) == NULL) {
            rc = err != NULL ? err->code : CFR_ENOMEM;
            goto out;
        }
        bool got;
        struct cfr_kv_entry en;
        while ((rc = cfr_kv_iter_next(it, &got, &en, err)) == 0 && got) {
            if (en.key_len != VAULT_ID_LEN) {
                rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad key of %zu",
                             t->name, en.key_len);
                goto out;
            }
            if (cf == CF_SNAPS) {
                if ((rc = snap_decode(en.key, en.val, en.val_len, &r, err)) !=
                        0 ||
                    (rc = snap_fn(ctx, &r.s, r.header, r.header_len)) != 0) {
                    goto out;
                }
            } else {
                if (en.val_len != TOMB_REC_LEN ||
                    en.val[0] != TOMB_REC_VERSION) {
                    rc = CFR_ERR(err, CFR_ECORRUPT, "tenant %s: bad tombstone",
                                 t->name);
                    goto out;
                }
                if ((rc = tomb_fn(ctx, en.key,
                                  (int64_t)cfr_get_le64(en.val + 1))) != 0) {
                    goto out;
                }
            }
        }
        cfr_kv_iter_free(it);
        it = NULL;
        b = e;
    }
out:
    cfr_kv_iter_free(it);
    return rc;
}

int
vault_store_sync_list(struct vault_tenant *t,
                      const bool want[VAULT_SYNC_BUCKETS],
                      vault_snapshot_fn *snap_fn,
                      int (*tomb_fn)(void *ctx,
                                     const uint8_t header_id[VAULT_ID_LEN],
                                     int64_t dropped_ms),
                      void *ctx, struct cfr_err *err)
{
    int rc = 0;
    if (snap_fn != NULL) {
        rc = sync_walk(t, CF_SNAPS, want, snap_fn, NULL, ctx, err);
    }
    if (rc == 0 && tomb_fn != NULL) {
        rc = sync_walk(t, CF_TOMBS, want, NULL, tomb_fn, ctx, err);
    }
    return rc;
}

int
vault_store_has_tombstone(struct vault_tenant *t,
                          const uint8_t header_id[VAULT_ID_LEN], bool *has_r,
                          struct cfr_err *err)
{
    return tomb_has(t, header_id, has_r, err);
}

/*
 * The seeding marker lives in the refcount family under a key no count
 * can have (counts are 33-byte 'P'|'O' || ID keys, only ever read by key).
 */
static const uint8_t seed_key[] = {'M', 's', 'e', 'e', 'd', 'i', 'n', 'g'};

/* Whether the refcount family holds key (its value is not wanted). */
static int
refs_has(struct vault_tenant *t, const uint8_t *key, size_t key_len,
         bool *has_r, struct cfr_err *err)
{
    struct cfr_buf v;
    cfr_buf_init(&v, 8);
    int rc = cfr_kv_get(t->kv, CF_REFS, key, key_len, &v, err);
    *has_r = rc == 0;
    if (rc == CFR_ENOTFOUND) {
        rc = 0;
    }
    cfr_buf_fini(&v);
    return rc;
}

int
vault_store_seed_get(struct vault_tenant *t, bool *seeding_r,
                     struct cfr_err *err)
{
    return refs_has(t, seed_key, sizeof(seed_key), seeding_r, err);
}

int
vault_store_seed_set(struct vault_tenant *t, bool seeding, struct cfr_err *err)
{
    struct cfr_kv_batch *b = cfr_kv_batch_new(t->kv, err);
    int rc;
    if (b == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
    }
    /* Synced: a seed interrupted by kill -9 must still be one after. */
    if (seeding) {
        rc = cfr_kv_batch_put(b, CF_REFS, seed_key, sizeof(seed_key), "\x01", 1,
                              err);
    } else {
        rc = cfr_kv_batch_delete(b, CF_REFS, seed_key, sizeof(seed_key), err);
    }
    if (rc == 0) {
        rc = cfr_kv_batch_commit(b, true, err);
    }
    cfr_kv_batch_free(b);
    return rc;
}

int
vault_store_drop_synced(struct vault_tenant *t,
                        const uint8_t header_id[VAULT_ID_LEN],
                        int64_t dropped_ms, bool *dropped_r,
                        struct cfr_err *err)
{
    /*
     * With the maint lock, as retention and purge: retention relies on
     * nothing else removing snapshots while it decides which are
     * superseded. Not waited for: GC holds it for its whole run,
     * compaction included, and a sync round should not block that long
     * (store.h).
     */
    struct corrupt_note bad = {0};
    *dropped_r = false;
    if (pthread_mutex_trylock(&t->maint) != 0) {
        return CFR_ERR(err, CFR_EUNAVAIL, "tenant %s: maintenance running",
                       t->name);
    }
    int rc =
        snap_drop(t, header_id, NULL, true, dropped_ms, dropped_r, &bad, err);
    pthread_mutex_unlock(&t->maint);
    if (bad.seen) {
        corrupt_seen(t, bad.id);
    }
    /* Logged by the caller (vault/sync.c), which knows the peer. */
    return rc;
}

int
vault_store_hold_synced(struct vault_tenant *t,
                        const uint8_t header_id[VAULT_ID_LEN], bool held,
                        int64_t changed_ms, bool *applied_r,
                        struct cfr_err *err)
{
    return hold_set(t, header_id, held, &changed_ms, applied_r, err);
}

int
vault_store_page_counted(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                         bool *counted_r, struct cfr_err *err)
{
    uint8_t key[REF_KEY_LEN];
    key[0] = TAG_PAGE;
    memcpy(key + 1, id, VAULT_ID_LEN);
    /* No lock: a count read a moment stale only costs a pull a descent it
     * did not need, or a commit that finds a page gone and fails (the
     * commit re-checks everything under the lock). */
    return refs_has(t, key, sizeof(key), counted_r, err);
}

int
vault_store_get_checked(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                        struct cfr_buf *out, enum vault_object_kind *kind_r,
                        uint8_t checksum_r[VAULT_ID_LEN], struct cfr_err *err)
{
    int rc = vault_store_get(t, id, out, kind_r, err);
    if (rc == 0) {
        /* The get compared the bytes with the recorded checksum (plain
         * BLAKE2b-256, kv's index record), so hashing them again gives
         * exactly that checksum. */
        cfr_id_plain(out->data, out->len, checksum_r);
    }
    return rc;
}

int
vault_store_repair(struct vault_tenant *t, const uint8_t id[VAULT_ID_LEN],
                   enum vault_object_kind kind, const uint8_t *data, size_t len,
                   bool *repaired_r, struct cfr_err *err)
{
    int rc;
    char hex[2 * VAULT_ID_LEN + 1];
    struct vault_object o = {id, kind, data, len};
    *repaired_r = false;
    if (data == NULL && len > 0) {
        return CFR_ERR(err, CFR_EINVAL, "repair: no data");
    }
    /* What a put would refuse is refused here too (a page must hash to
     * its ID); the checksum recorded at first store is checked by kv. */
    if ((rc = object_check(&o, err)) != 0) {
        return rc;
    }
    /*
     * Under the tenant lock, as GC's deletes: kv serialises a repair only
     * against other chunk calls (its stripe lock), and GC deletes value
     * and index through a plain batch, so a repair racing it could put
     * back bytes whose index record GC just removed. Lock order: tenant,
     * then kv's stripe (docs/FORMAT.md).
     */
    pthread_mutex_lock(&t->lock);
    rc = cfr_kv_chunk_repair(t->kv, id, data, len, repaired_r, err);
    pthread_mutex_unlock(&t->lock);
    if (rc != 0) {
        return rc;
    }
    if (*repaired_r) {
        /* The damaged bytes are garbage now; GC's compaction removes them. */
        atomic_store(&t->dirty, true);
        cfr_log(CFR_LOG_WARN, "vault.object_repaired", "tenant=%s id=%s",
                t->name, hex_id(id, hex));
    }
    return 0;
}
