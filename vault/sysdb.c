/*
 * sysdb.c - the vault's system database over core/kv.h.
 *
 * Column families (docs/FORMAT.md gives the bytes):
 *   meta       format version and the audit sequence epoch
 *   tenants    name -> tenant record
 *   deny       kind byte + value -> deny record
 *   audit      be64(time, sign-flipped) + be64(seq) -> audit record
 *   approvals  tenant + NUL + 16-byte id -> approval record
 *   totp       tenant + NUL + identity -> TOTP record (secret, last step)
 *   seen       tenant + NUL + fingerprint -> first-seen record
 *
 * Approvals and TOTP records are keyed by a scope: a tenant name, or
 * VAULT_SYSDB_SYSTEM_SCOPE ("_system") for the vault's operators.
 *
 * Every record starts with a version byte (1) and is a fixed sequence of
 * little-endian integers and length-prefixed strings; the decoder refuses
 * short, long or oversized records with CFR_ECORRUPT.
 *
 * Invariants:
 *  1. Writes go through synced kv calls; an acknowledged change survives a
 *     crash.
 *  2. Read-modify-write of approvals and TOTP records happens under
 *     db->lock, so a state moves forward exactly once.
 *  3. Audit keys sort by time, then by a sequence that grows within a
 *     process and jumps between processes (epoch << 40), so two records
 *     never share a key, even with a manual clock standing still.
 *  4. Audit strings are quoted before they are stored (cfr_log_quote).
 *  5. TOTP secrets leave this file only into cfr_totp_verify; every
 *     buffer that held one is wiped at out:.
 */
#include "sysdb.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"    /* struct cfr_buf, le helpers, hex */
#include "log.h"    /* cfr_log, cfr_log_quote */
#include "mem.h"    /* cfr_malloc and friends */
#include "rpc.h"    /* cfr_rpc_identity_parse: one rule for identities */
#include "secret.h" /* cfr_wipe, cfr_crypto_random, cfr_ct_equal */

#define REC_VERSION      1
#define AUDIT_VERSION    2 /* 1 plus the caller's tenant; 1 still reads */
#define REC_MAX          (64u * 1024u)
#define PURGE_BATCH      1024
#define AUDIT_BATCH      512
#define SEQ_BITS         40
#define TOTP_WINDOW      1
#define APPROVAL_KEEP_MS (24 * INT64_C(3600000))

enum cf {
    CF_META = 0,
    CF_TENANTS,
    CF_DENY,
    CF_AUDIT,
    CF_APPROVALS,
    CF_TOTP,
    CF_SEEN,
    CF_COUNT,
};

/* RocksDB creates a family missing on disk, so "seen" joins old databases
 * without a migration. */
static const char *const cf_names[CF_COUNT] = {
    "meta", "tenants", "deny", "audit", "approvals", "totp", "seen",
};

static const char meta_version_key[] = "format_version";
static const char meta_epoch_key[] = "audit_epoch";

struct audit_item {
    struct audit_item *next;
    struct vault_sysdb_audit rec;
};

struct vault_sysdb {
    struct cfr_kv_env *env;
    bool own_env;
    struct cfr_kv *kv;
    struct cfr_clock *clock;
    int64_t audit_keep_ms;
    int64_t approval_window_ms;
    pthread_mutex_t lock; /* approvals and TOTP read-modify-write */
    _Atomic uint64_t seq;

    /* Audit writer: a bounded queue drained in synced batches. */
    pthread_mutex_t aq_lock;
    pthread_cond_t aq_cond;
    pthread_t aq_thread;
    bool aq_started;
    bool aq_stop;
    struct audit_item *aq_head, *aq_tail;
    size_t aq_len, aq_max;
    uint64_t aq_submitted, aq_written; /* counts, for audit_sync */
    uint64_t aq_lost;
    bool aq_failed;
};

/* ---- record encoding -------------------------------------------------- */

static int
put_str(struct cfr_buf *b, const char *s, struct cfr_err *err)
{
    size_t n = strlen(s);
    int rc = cfr_buf_append_le32(b, (uint32_t)n, err);
    return rc != 0 ? rc : cfr_buf_append(b, s, n, err);
}

static int
put_bytes(struct cfr_buf *b, const uint8_t *p, size_t n, struct cfr_err *err)
{
    int rc = cfr_buf_append_le32(b, (uint32_t)n, err);
    return rc != 0 ? rc : cfr_buf_append(b, p, n, err);
}

static int
put_i64(struct cfr_buf *b, int64_t v, struct cfr_err *err)
{
    return cfr_buf_append_le64(b, (uint64_t)v, err);
}

struct rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};

static void
rd_init(struct rd *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
    r->bad = false;
}

static uint64_t
rd_u64(struct rd *r)
{
    if (r->bad || r->len - r->off < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = cfr_get_le64(r->p + r->off);
    r->off += 8;
    return v;
}

static uint32_t
rd_u32(struct rd *r)
{
    if (r->bad || r->len - r->off < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = cfr_get_le32(r->p + r->off);
    r->off += 4;
    return v;
}

static uint8_t
rd_u8(struct rd *r)
{
    if (r->bad || r->len - r->off < 1) {
        r->bad = true;
        return 0;
    }
    return r->p[r->off++];
}

/* Copies a string of at most out_size - 1 bytes; longer is corruption. */
static void
rd_str(struct rd *r, char *out, size_t out_size)
{
    uint32_t n = rd_u32(r);
    out[0] = '\0';
    if (r->bad || n >= out_size || r->len - r->off < n ||
        memchr(r->p + r->off, '\0', n) != NULL) {
        r->bad = true;
        return;
    }
    memcpy(out, r->p + r->off, n);
    out[n] = '\0';
    r->off += n;
}

static void
rd_bytes(struct rd *r, uint8_t *out, size_t out_max, size_t *len_r)
{
    uint32_t n = rd_u32(r);
    *len_r = 0;
    if (r->bad || n > out_max || r->len - r->off < n) {
        r->bad = true;
        return;
    }
    memcpy(out, r->p + r->off, n);
    *len_r = n;
    r->off += n;
}

static int
rd_end(struct rd *r, const char *what, struct cfr_err *err)
{
    if (r->bad || r->off != r->len) {
        return CFR_ERR(err, CFR_ECORRUPT, "sysdb: bad %s record", what);
    }
    return 0;
}

/* ---- validation ------------------------------------------------------- */

int
vault_sysdb_tenant_name_ok(const char *name, struct cfr_err *err)
{
    size_t n = name != NULL ? strlen(name) : 0;
    /* The identity rule (docs/FORMAT.md): a tenant must be nameable in a
     * certificate URI, or nobody could ever act for it. */
    /* A leading '_' is reserved for the vault's own directories
     * (VAULT_SYSDB_DIR lives beside the tenant directories). */
    if (n == 0 || n > 63 || name[0] == '.' || name[0] == '-' ||
        name[0] == '_') {
        return CFR_ERR(err, CFR_EINVAL, "sysdb: bad tenant name");
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-')) {
            return CFR_ERR(err, CFR_EINVAL, "sysdb: bad tenant name");
        }
    }
    return 0;
}

/* Text stored raw (identities, ops) must be printable ASCII, no spaces. */
static bool
token_ok(const char *s, size_t max)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* Printable ASCII, spaces allowed: no control bytes, no escapes needed. */
static bool
text_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p >= 0x7f) {
            return false;
        }
    }
    return true;
}

static bool
region_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= VAULT_SYSDB_REGION_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

static bool
target_ok(const char *s)
{
    if (!token_ok(s, VAULT_SYSDB_TARGET_MAX)) {
        return false;
    }
    if (strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0) {
        return strlen(s) > 8;
    }
    if (strncmp(s, "mailto:", 7) == 0) {
        const char *at = strchr(s + 7, '@');
        return at != NULL && at != s + 7 && at[1] != '\0' &&
               strpbrk(s + 7, "<>,;\"()\\") == NULL;
    }
    return false;
}

/*
 * A scope of approvals and TOTP secrets: a tenant name, or
 * VAULT_SYSDB_SYSTEM_SCOPE for the operators (not a valid tenant name, so
 * the two can never share a key).
 */
static int
scope_ok(const char *scope, struct cfr_err *err)
{
    if (scope != NULL && strcmp(scope, VAULT_SYSDB_SYSTEM_SCOPE) == 0) {
        return 0;
    }
    return vault_sysdb_tenant_name_ok(scope, err);
}

/*
 * True when identity is an admin identity of tenant, or, for the system
 * scope, an operator identity.
 */
static bool
admin_of(const char *identity, const char *tenant)
{
    char t[CFR_RPC_TENANT_MAX], role[CFR_RPC_ROLE_MAX];
    if (identity == NULL || strlen(identity) >= VAULT_SYSDB_IDENT_MAX ||
        cfr_rpc_identity_parse(identity, t, role) != 0) {
        return false;
    }
    if (strcmp(tenant, VAULT_SYSDB_SYSTEM_SCOPE) == 0) {
        return t[0] == '\0' && strcmp(role, CFR_RPC_ROLE_OPERATOR) == 0;
    }
    return strcmp(t, tenant) == 0 && strcmp(role, "admin") == 0;
}

/*
 * A principal is the admin's certificate name: printable ASCII (spaces
 * allowed), 1..255 bytes. It tells admins apart; it grants nothing.
 */
static bool
principal_ok(const char *p)
{
    size_t n = p != NULL ? strlen(p) : 0;
    if (n == 0 || n >= VAULT_SYSDB_IDENT_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* ---- open / close ----------------------------------------------------- */

static void *audit_writer(void *arg);

struct vault_sysdb *
vault_sysdb_open(const struct vault_sysdb_opts *opts, struct cfr_err *err)
{
    struct vault_sysdb *db = NULL;
    char *dir = NULL;
    struct cfr_buf val;
    int rc = 0;
    uint64_t epoch = 0;
    uint8_t eb[8];

    cfr_buf_init(&val, 64);
    if (opts == NULL || opts->data_dir == NULL || opts->audit_keep_ms < 0 ||
        opts->approval_window_ms < 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "sysdb: bad options");
        goto out;
    }
    db = cfr_calloc(1, sizeof(*db));
    if (db == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    /* Before any goto that reaches vault_sysdb_close, which destroys them. */
    pthread_mutex_init(&db->lock, NULL);
    pthread_mutex_init(&db->aq_lock, NULL);
    pthread_cond_init(&db->aq_cond, NULL);
    size_t dl = strlen(opts->data_dir) + sizeof(VAULT_SYSDB_DIR) + 2;
    dir = cfr_malloc(dl);
    if (dir == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    snprintf(dir, dl, "%s/%s", opts->data_dir, VAULT_SYSDB_DIR);
    db->clock = opts->clock != NULL ? opts->clock : cfr_clock_system();
    db->audit_keep_ms = opts->audit_keep_ms != 0
                            ? opts->audit_keep_ms
                            : VAULT_SYSDB_DEFAULT_AUDIT_KEEP_MS;
    db->approval_window_ms = opts->approval_window_ms != 0
                                 ? opts->approval_window_ms
                                 : VAULT_SYSDB_DEFAULT_APPROVAL_MS;
    db->aq_max = opts->audit_queue_max != 0 ? opts->audit_queue_max : 65536;
    db->env = opts->env;
    if (db->env == NULL) {
        db->env = cfr_kv_env_new(8u << 20, err);
        if (db->env == NULL) {
            rc = err != NULL ? err->code : CFR_EIO;
            goto out;
        }
        db->own_env = true;
    }
    db->kv = cfr_kv_open(db->env, dir, cf_names, CF_COUNT, NULL, err);
    if (db->kv == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    /* Format version: refuse a database written by a newer layout. */
    rc = cfr_kv_get(db->kv, CF_META, meta_version_key,
                    sizeof(meta_version_key) - 1, &val, err);
    if (rc == CFR_ENOTFOUND) {
        uint8_t v = REC_VERSION;
        rc = cfr_kv_put(db->kv, CF_META, meta_version_key,
                        sizeof(meta_version_key) - 1, &v, 1, err);
    } else if (rc == 0 && (val.len != 1 || val.data[0] != REC_VERSION)) {
        rc = CFR_ERR(err, CFR_EVERSION, "sysdb: unknown format version");
    }
    if (rc != 0) {
        goto out;
    }
    rc = cfr_kv_get(db->kv, CF_META, meta_epoch_key, sizeof(meta_epoch_key) - 1,
                    &val, err);
    if (rc == 0 && val.len == 8) {
        epoch = cfr_get_le64(val.data);
    } else if (rc == 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "sysdb: bad audit epoch");
        goto out;
    } else if (rc != CFR_ENOTFOUND) {
        goto out;
    }
    epoch++;
    cfr_put_le64(eb, epoch);
    if ((rc = cfr_kv_put(db->kv, CF_META, meta_epoch_key,
                         sizeof(meta_epoch_key) - 1, eb, 8, err)) != 0) {
        goto out;
    }
    atomic_store(&db->seq, epoch << SEQ_BITS);
    if (pthread_create(&db->aq_thread, NULL, audit_writer, db) != 0) {
        rc = CFR_ERR(err, CFR_EIO, "sysdb: cannot start audit writer");
        goto out;
    }
    db->aq_started = true;
out:
    cfr_buf_fini(&val);
    cfr_free(dir);
    if (rc != 0 && db != NULL) {
        vault_sysdb_close(db);
        db = NULL;
    }
    return db;
}

void
vault_sysdb_close(struct vault_sysdb *db)
{
    if (db == NULL) {
        return;
    }
    if (db->aq_started) {
        pthread_mutex_lock(&db->aq_lock);
        db->aq_stop = true;
        pthread_cond_broadcast(&db->aq_cond);
        pthread_mutex_unlock(&db->aq_lock);
        pthread_join(db->aq_thread, NULL);
    }
    while (db->aq_head != NULL) {
        struct audit_item *it = db->aq_head;
        db->aq_head = it->next;
        cfr_free(it);
    }
    cfr_kv_close(db->kv);
    if (db->own_env) {
        cfr_kv_env_free(db->env);
    }
    pthread_mutex_destroy(&db->lock);
    pthread_mutex_destroy(&db->aq_lock);
    pthread_cond_destroy(&db->aq_cond);
    cfr_free(db);
}

bool
vault_sysdb_failed(struct vault_sysdb *db)
{
    pthread_mutex_lock(&db->aq_lock);
    bool audit_failed = db->aq_failed;
    pthread_mutex_unlock(&db->aq_lock);
    return audit_failed || cfr_kv_failed(db->kv);
}

/* ---- tenants ---------------------------------------------------------- */

static int
tenant_check(const struct vault_sysdb_tenant *t, struct cfr_err *err)
{
    int rc;
    if ((rc = vault_sysdb_tenant_name_ok(t->name, err)) != 0) {
        return rc;
    }
    if (t->n_regions > VAULT_SYSDB_REGIONS_MAX ||
        t->n_notify > VAULT_SYSDB_NOTIFY_MAX || t->retention_ms < 0) {
        return CFR_ERR(err, CFR_EINVAL, "sysdb: tenant %s: bad counts",
                       t->name);
    }
    for (size_t i = 0; i < t->n_regions; i++) {
        if (memchr(t->regions[i], '\0', VAULT_SYSDB_REGION_MAX) == NULL ||
            !region_ok(t->regions[i])) {
            return CFR_ERR(err, CFR_EINVAL, "sysdb: tenant %s: bad region",
                           t->name);
        }
    }
    for (size_t i = 0; i < t->n_notify; i++) {
        if (memchr(t->notify[i], '\0', VAULT_SYSDB_TARGET_MAX) == NULL ||
            !target_ok(t->notify[i])) {
            return CFR_ERR(err, CFR_EINVAL,
                           "sysdb: tenant %s: bad notify target %zu", t->name,
                           i);
        }
    }
    return 0;
}

static int
tenant_encode(const struct vault_sysdb_tenant *t, struct cfr_buf *b,
              struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_buf_append_u8(b, REC_VERSION, err)) != 0 ||
        (rc = put_str(b, t->name, err)) != 0 ||
        (rc = put_i64(b, t->created_ms, err)) != 0 ||
        (rc = put_i64(b, t->retention_ms, err)) != 0 ||
        (rc = cfr_buf_append_le32(b, (uint32_t)t->n_regions, err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < t->n_regions; i++) {
        if ((rc = put_str(b, t->regions[i], err)) != 0) {
            return rc;
        }
    }
    if ((rc = cfr_buf_append_le32(b, (uint32_t)t->n_notify, err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < t->n_notify; i++) {
        if ((rc = put_str(b, t->notify[i], err)) != 0) {
            return rc;
        }
    }
    return 0;
}

static int
tenant_decode(const uint8_t *p, size_t len, struct vault_sysdb_tenant *t,
              struct cfr_err *err)
{
    struct rd r;
    memset(t, 0, sizeof(*t));
    rd_init(&r, p, len);
    if (rd_u8(&r) != REC_VERSION) {
        r.bad = true;
    }
    rd_str(&r, t->name, sizeof(t->name));
    t->created_ms = (int64_t)rd_u64(&r);
    t->retention_ms = (int64_t)rd_u64(&r);
    uint32_t n = rd_u32(&r);
    if (n > VAULT_SYSDB_REGIONS_MAX) {
        r.bad = true;
        n = 0;
    }
    t->n_regions = n;
    for (uint32_t i = 0; i < n; i++) {
        rd_str(&r, t->regions[i], sizeof(t->regions[i]));
    }
    n = rd_u32(&r);
    if (n > VAULT_SYSDB_NOTIFY_MAX) {
        r.bad = true;
        n = 0;
    }
    t->n_notify = n;
    for (uint32_t i = 0; i < n; i++) {
        rd_str(&r, t->notify[i], sizeof(t->notify[i]));
    }
    return rd_end(&r, "tenant", err);
}

static int
tenant_write(struct vault_sysdb *db, const struct vault_sysdb_tenant *t,
             struct cfr_err *err)
{
    struct cfr_buf b;
    int rc;
    cfr_buf_init(&b, REC_MAX);
    if ((rc = tenant_encode(t, &b, err)) == 0) {
        rc = cfr_kv_put(db->kv, CF_TENANTS, t->name, strlen(t->name), b.data,
                        b.len, err);
    }
    cfr_buf_fini(&b);
    return rc;
}

int
vault_sysdb_tenant_get(struct vault_sysdb *db, const char *name,
                       struct vault_sysdb_tenant *t_r, struct cfr_err *err)
{
    struct cfr_buf v;
    int rc;
    memset(t_r, 0, sizeof(*t_r));
    cfr_buf_init(&v, REC_MAX);
    if ((rc = vault_sysdb_tenant_name_ok(name, err)) != 0) {
        goto out;
    }
    rc = cfr_kv_get(db->kv, CF_TENANTS, name, strlen(name), &v, err);
    if (rc == CFR_ENOTFOUND) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "sysdb: no tenant %s", name);
        goto out;
    }
    if (rc != 0) {
        goto out;
    }
    rc = tenant_decode(v.data, v.len, t_r, err);
out:
    cfr_buf_fini(&v);
    return rc;
}

int
vault_sysdb_tenant_create(struct vault_sysdb *db,
                          const struct vault_sysdb_tenant *t,
                          struct cfr_err *err)
{
    struct vault_sysdb_tenant *cur = NULL, *nt = NULL;
    int rc;

    if ((rc = tenant_check(t, err)) != 0) {
        return rc;
    }
    cur = cfr_malloc(sizeof(*cur));
    nt = cfr_malloc(sizeof(*nt));
    if (cur == NULL || nt == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    pthread_mutex_lock(&db->lock);
    rc = vault_sysdb_tenant_get(db, t->name, cur, NULL);
    if (rc == 0) {
        rc = CFR_ERR(err, CFR_EEXIST, "sysdb: tenant %s exists", t->name);
    } else if (rc == CFR_ENOTFOUND) {
        *nt = *t;
        nt->created_ms = cfr_clock_now_ms(db->clock);
        rc = tenant_write(db, nt, err);
    } else {
        rc = CFR_ERR(err, rc, "sysdb: tenant %s unreadable", t->name);
    }
    pthread_mutex_unlock(&db->lock);
out:
    cfr_free(cur);
    cfr_free(nt);
    return rc;
}

int
vault_sysdb_tenant_update(struct vault_sysdb *db,
                          const struct vault_sysdb_tenant *t,
                          struct vault_sysdb_tenant *old_r, struct cfr_err *err)
{
    struct vault_sysdb_tenant *cur = NULL, *nt = NULL;
    int rc;

    if ((rc = tenant_check(t, err)) != 0) {
        return rc;
    }
    cur = cfr_malloc(sizeof(*cur));
    nt = cfr_malloc(sizeof(*nt));
    if (cur == NULL || nt == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    pthread_mutex_lock(&db->lock);
    rc = vault_sysdb_tenant_get(db, t->name, cur, err);
    if (rc == 0) {
        *nt = *t;
        nt->created_ms = cur->created_ms;
        rc = tenant_write(db, nt, err);
    }
    pthread_mutex_unlock(&db->lock);
    if (rc == 0 && old_r != NULL) {
        *old_r = *cur;
    }
out:
    cfr_free(cur);
    cfr_free(nt);
    return rc;
}

int
vault_sysdb_tenant_delete(struct vault_sysdb *db, const char *name,
                          struct cfr_err *err)
{
    int rc;
    if ((rc = vault_sysdb_tenant_name_ok(name, err)) != 0) {
        return rc;
    }
    return cfr_kv_delete(db->kv, CF_TENANTS, name, strlen(name), err);
}

int
vault_sysdb_tenant_list(struct vault_sysdb *db, vault_sysdb_tenant_fn *fn,
                        void *ctx, struct cfr_err *err)
{
    struct vault_sysdb_tenant *t = cfr_malloc(sizeof(*t));
    struct cfr_kv_iter *it = NULL;
    struct cfr_kv_entry e;
    bool got = false;
    int rc = 0;

    if (t == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    it = cfr_kv_iter_new(db->kv, CF_TENANTS, NULL, 0, NULL, 0, err);
    if (it == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if ((rc = tenant_decode(e.val, e.val_len, t, err)) != 0) {
            goto out;
        }
        if (fn(ctx, t) != 0) {
            break;
        }
    }
out:
    cfr_kv_iter_free(it);
    cfr_free(t);
    return rc;
}

int
vault_sysdb_notify(struct vault_sysdb *db, struct cfr_notify *n,
                   const char *event, const char *tenant,
                   const struct cfr_notify_field *fields, size_t n_fields,
                   struct cfr_err *err)
{
    struct vault_sysdb_tenant *t = NULL;
    const char *rcpt[VAULT_SYSDB_NOTIFY_MAX];
    size_t n_rcpt = 0;
    int first = 0;
    int rc;
    struct cfr_err e;
    struct cfr_notify_event ev = {
        .event = event,
        .tenant = tenant,
        .fields = fields,
        .n_fields = n_fields,
    };

#define NOTE_FAILURE(code)                                                     \
    do {                                                                       \
        if (first == 0) {                                                      \
            first = (code);                                                    \
            if (err != NULL) {                                                 \
                *err = e;                                                      \
            }                                                                  \
        }                                                                      \
    } while (0)

    if (cfr_notify_has_defaults(n) && (rc = cfr_notify_post(n, &ev, &e)) != 0) {
        NOTE_FAILURE(rc);
    }
    if (tenant == NULL || tenant[0] == '\0') {
        goto out;
    }
    t = cfr_malloc(sizeof(*t));
    if (t == NULL) {
        cfr_err_clear(&e);
        CFR_ERR(&e, CFR_ENOMEM, "sysdb: out of memory");
        NOTE_FAILURE(CFR_ENOMEM);
        goto out;
    }
    if ((rc = vault_sysdb_tenant_get(db, tenant, t, &e)) != 0) {
        /* An unknown tenant has no targets of its own. */
        if (rc != CFR_ENOTFOUND) {
            NOTE_FAILURE(rc);
        }
        goto out;
    }
    for (size_t i = 0; i < t->n_notify; i++) {
        if (strncmp(t->notify[i], "mailto:", 7) == 0) {
            rcpt[n_rcpt++] = t->notify[i] + 7;
            continue;
        }
        struct cfr_notify_event one = ev;
        one.webhook_url = t->notify[i];
        one.only_own_targets = true; /* the defaults had their own post */
        if ((rc = cfr_notify_post(n, &one, &e)) != 0) {
            NOTE_FAILURE(rc);
        }
    }
    if (n_rcpt > 0) {
        struct cfr_notify_event mail = ev;
        mail.mail_to = rcpt;
        mail.n_mail_to = n_rcpt;
        mail.only_own_targets = true;
        if ((rc = cfr_notify_post(n, &mail, &e)) != 0) {
            NOTE_FAILURE(rc);
        }
    }
#undef NOTE_FAILURE
out:
    cfr_free(t);
    return first;
}

/* ---- deny list -------------------------------------------------------- */

/* Builds the deny key; fingerprints are normalised to 64 lower-case hex. */
static int
deny_key(enum vault_sysdb_deny_kind kind, const char *value, uint8_t *key,
         size_t *key_len, struct cfr_err *err)
{
    size_t n = 0;
    key[0] = (uint8_t)kind;
    if (kind == VAULT_DENY_IDENTITY) {
        if (!token_ok(value, VAULT_SYSDB_IDENT_MAX)) {
            return CFR_ERR(err, CFR_EINVAL, "sysdb: bad identity");
        }
        n = strlen(value);
        memcpy(key + 1, value, n);
    } else if (kind == VAULT_DENY_FINGERPRINT) {
        for (const char *p = value != NULL ? value : ""; *p != '\0'; p++) {
            char c = *p;
            if (c == ':') {
                continue;
            }
            if (c >= 'A' && c <= 'F') {
                c = (char)(c - 'A' + 'a');
            }
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) ||
                n == 64) {
                return CFR_ERR(err, CFR_EINVAL, "sysdb: bad fingerprint");
            }
            key[1 + n++] = (uint8_t)c;
        }
        if (n != 64) {
            return CFR_ERR(err, CFR_EINVAL, "sysdb: bad fingerprint");
        }
    } else {
        return CFR_ERR(err, CFR_EINVAL, "sysdb: bad deny kind");
    }
    *key_len = n + 1;
    return 0;
}

int
vault_sysdb_deny_add(struct vault_sysdb *db, enum vault_sysdb_deny_kind kind,
                     const char *value, const char *reason, const char *by,
                     struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_IDENT_MAX + 1];
    size_t key_len = 0;
    char qr[VAULT_SYSDB_TEXT_MAX], qb[VAULT_SYSDB_IDENT_MAX];
    struct cfr_buf b;
    int rc;

    cfr_buf_init(&b, REC_MAX);
    if ((rc = deny_key(kind, value, key, &key_len, err)) != 0) {
        goto out;
    }
    cfr_log_quote(reason != NULL ? reason : "", qr, sizeof(qr));
    cfr_log_quote(by != NULL ? by : "", qb, sizeof(qb));
    if ((rc = cfr_buf_append_u8(&b, REC_VERSION, err)) != 0 ||
        (rc = put_str(&b, qr, err)) != 0 || (rc = put_str(&b, qb, err)) != 0 ||
        (rc = put_i64(&b, cfr_clock_now_ms(db->clock), err)) != 0) {
        goto out;
    }
    rc = cfr_kv_put(db->kv, CF_DENY, key, key_len, b.data, b.len, err);
out:
    cfr_buf_fini(&b);
    return rc;
}

int
vault_sysdb_deny_remove(struct vault_sysdb *db, enum vault_sysdb_deny_kind kind,
                        const char *value, struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_IDENT_MAX + 1];
    size_t key_len = 0;
    struct cfr_buf v;
    int rc;

    cfr_buf_init(&v, REC_MAX);
    if ((rc = deny_key(kind, value, key, &key_len, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_kv_get(db->kv, CF_DENY, key, key_len, &v, err)) != 0) {
        goto out;
    }
    rc = cfr_kv_delete(db->kv, CF_DENY, key, key_len, err);
out:
    cfr_buf_fini(&v);
    return rc;
}

int
vault_sysdb_deny_check(struct vault_sysdb *db, const char *identity,
                       const char *fingerprint, bool *denied_r,
                       struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_IDENT_MAX + 1];
    size_t key_len = 0;
    struct cfr_buf v;
    int rc = 0;

    /* Fail closed: until the lookups succeed, the answer is "denied". */
    *denied_r = true;
    cfr_buf_init(&v, REC_MAX);
    bool denied = false;
    if (identity != NULL && identity[0] != '\0') {
        if (deny_key(VAULT_DENY_IDENTITY, identity, key, &key_len, NULL) == 0) {
            rc = cfr_kv_get(db->kv, CF_DENY, key, key_len, &v, err);
            if (rc == 0) {
                denied = true;
            } else if (rc != CFR_ENOTFOUND) {
                goto out;
            }
        } else {
            /* An identity we could not even store is not trusted. */
            denied = true;
        }
    }
    if (!denied && fingerprint != NULL && fingerprint[0] != '\0' &&
        deny_key(VAULT_DENY_FINGERPRINT, fingerprint, key, &key_len, NULL) ==
            0) {
        rc = cfr_kv_get(db->kv, CF_DENY, key, key_len, &v, err);
        if (rc == 0) {
            denied = true;
        } else if (rc != CFR_ENOTFOUND) {
            goto out;
        }
    }
    rc = 0;
    *denied_r = denied;
out:
    cfr_buf_fini(&v);
    return rc;
}

int
vault_sysdb_deny_list(struct vault_sysdb *db, vault_sysdb_deny_fn *fn,
                      void *ctx, struct cfr_err *err)
{
    struct vault_sysdb_deny *d = cfr_malloc(sizeof(*d));
    struct cfr_kv_iter *it = NULL;
    struct cfr_kv_entry e;
    bool got = false;
    int rc = 0;

    if (d == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    it = cfr_kv_iter_new(db->kv, CF_DENY, NULL, 0, NULL, 0, err);
    if (it == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        struct rd r;
        memset(d, 0, sizeof(*d));
        if (e.key_len < 2 || e.key_len > VAULT_SYSDB_IDENT_MAX ||
            (e.key[0] != VAULT_DENY_IDENTITY &&
             e.key[0] != VAULT_DENY_FINGERPRINT)) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "sysdb: bad deny key");
            goto out;
        }
        d->kind = (enum vault_sysdb_deny_kind)e.key[0];
        memcpy(d->value, e.key + 1, e.key_len - 1);
        d->value[e.key_len - 1] = '\0';
        rd_init(&r, e.val, e.val_len);
        if (rd_u8(&r) != REC_VERSION) {
            r.bad = true;
        }
        rd_str(&r, d->reason, sizeof(d->reason));
        rd_str(&r, d->by, sizeof(d->by));
        d->added_ms = (int64_t)rd_u64(&r);
        if ((rc = rd_end(&r, "deny", err)) != 0) {
            goto out;
        }
        if (fn(ctx, d) != 0) {
            break;
        }
    }
out:
    cfr_kv_iter_free(it);
    cfr_free(d);
    return rc;
}

/* ---- audit ------------------------------------------------------------ */

/* Big-endian with the sign bit flipped: byte order equals time order. */
static void
audit_key(int64_t time_ms, uint64_t seq, uint8_t key[16])
{
    uint64_t t = (uint64_t)time_ms ^ (UINT64_C(1) << 63);
    for (int i = 0; i < 8; i++) {
        key[i] = (uint8_t)(t >> (56 - 8 * i));
        key[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
}

/* Stamps time and seq and quotes the strings into q. */
static void
audit_prepare(struct vault_sysdb *db, const struct vault_sysdb_audit *in,
              struct vault_sysdb_audit *q)
{
    memset(q, 0, sizeof(*q));
    q->time_ms = in->time_ms != 0 ? in->time_ms : cfr_clock_now_ms(db->clock);
    q->seq = atomic_fetch_add(&db->seq, 1);
    q->decision = in->decision;
    q->status = in->status;
    cfr_log_quote(in->identity, q->identity, sizeof(q->identity));
    cfr_log_quote(in->peer, q->peer, sizeof(q->peer));
    cfr_log_quote(in->method, q->method, sizeof(q->method));
    cfr_log_quote(in->detail, q->detail, sizeof(q->detail));
    /* "" stays "": it means "no tenant", not an empty quoted string. */
    if (in->tenant[0] != '\0') {
        cfr_log_quote(in->tenant, q->tenant, sizeof(q->tenant));
    }
}

static int
audit_encode(const struct vault_sysdb_audit *q, struct cfr_buf *b,
             struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_buf_append_u8(b, AUDIT_VERSION, err)) != 0 ||
        (rc = put_i64(b, q->time_ms, err)) != 0 ||
        (rc = cfr_buf_append_le64(b, q->seq, err)) != 0 ||
        (rc = put_str(b, q->identity, err)) != 0 ||
        (rc = put_str(b, q->peer, err)) != 0 ||
        (rc = put_str(b, q->method, err)) != 0 ||
        (rc = cfr_buf_append_u8(b, (uint8_t)q->decision, err)) != 0 ||
        (rc = cfr_buf_append_le32(b, (uint32_t)q->status, err)) != 0 ||
        (rc = put_str(b, q->detail, err)) != 0 ||
        (rc = put_str(b, q->tenant, err)) != 0) {
        return rc;
    }
    return 0;
}

static int
audit_decode(const uint8_t *p, size_t len, struct vault_sysdb_audit *q,
             struct cfr_err *err)
{
    struct rd r;
    uint8_t version;
    memset(q, 0, sizeof(*q));
    rd_init(&r, p, len);
    version = rd_u8(&r);
    if (version != REC_VERSION && version != AUDIT_VERSION) {
        r.bad = true;
    }
    q->time_ms = (int64_t)rd_u64(&r);
    q->seq = rd_u64(&r);
    rd_str(&r, q->identity, sizeof(q->identity));
    rd_str(&r, q->peer, sizeof(q->peer));
    rd_str(&r, q->method, sizeof(q->method));
    q->decision = (enum vault_sysdb_decision)rd_u8(&r);
    q->status = (int)rd_u32(&r);
    rd_str(&r, q->detail, sizeof(q->detail));
    if (version == AUDIT_VERSION) {
        rd_str(&r, q->tenant, sizeof(q->tenant));
    }
    return rd_end(&r, "audit", err);
}

static int
audit_batch_put(struct cfr_kv_batch *kb, const struct vault_sysdb_audit *q,
                struct cfr_buf *b, struct cfr_err *err)
{
    uint8_t key[16];
    int rc;
    cfr_buf_reset(b);
    audit_key(q->time_ms, q->seq, key);
    if ((rc = audit_encode(q, b, err)) != 0) {
        return rc;
    }
    return cfr_kv_batch_put(kb, CF_AUDIT, key, sizeof(key), b->data, b->len,
                            err);
}

int
vault_sysdb_audit_append(struct vault_sysdb *db,
                         const struct vault_sysdb_audit *rec,
                         struct cfr_err *err)
{
    struct vault_sysdb_audit *q = cfr_malloc(sizeof(*q));
    struct cfr_buf b;
    uint8_t key[16];
    int rc;

    cfr_buf_init(&b, REC_MAX);
    if (q == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    audit_prepare(db, rec, q);
    audit_key(q->time_ms, q->seq, key);
    if ((rc = audit_encode(q, &b, err)) != 0) {
        goto out;
    }
    rc = cfr_kv_put(db->kv, CF_AUDIT, key, sizeof(key), b.data, b.len, err);
out:
    cfr_buf_fini(&b);
    cfr_free(q);
    return rc;
}

/*
 * The writer takes up to AUDIT_BATCH records at a time and commits them
 * in one synced batch: under load, many records share one fsync.
 */
static void *
audit_writer(void *arg)
{
    struct vault_sysdb *db = arg;
    struct cfr_buf b;
    struct cfr_err err;
    cfr_buf_init(&b, REC_MAX);
    pthread_mutex_lock(&db->aq_lock);
    for (;;) {
        while (!db->aq_stop && db->aq_head == NULL) {
            pthread_cond_wait(&db->aq_cond, &db->aq_lock);
        }
        if (db->aq_head == NULL) {
            break; /* stopping and drained */
        }
        struct audit_item *list = db->aq_head;
        struct audit_item *last = list;
        size_t n = 1;
        while (last->next != NULL && n < AUDIT_BATCH) {
            last = last->next;
            n++;
        }
        db->aq_head = last->next;
        if (db->aq_head == NULL) {
            db->aq_tail = NULL;
        }
        last->next = NULL;
        db->aq_len -= n;
        bool failed = db->aq_failed;
        pthread_mutex_unlock(&db->aq_lock);

        int rc = failed ? CFR_EIO : 0;
        struct cfr_kv_batch *kb = NULL;
        cfr_err_clear(&err);
        if (rc == 0) {
            kb = cfr_kv_batch_new(db->kv, &err);
            rc = kb == NULL ? CFR_ENOMEM : 0;
        }
        for (struct audit_item *it = list; rc == 0 && it != NULL;
             it = it->next) {
            rc = audit_batch_put(kb, &it->rec, &b, &err);
        }
        if (rc == 0) {
            rc = cfr_kv_batch_commit(kb, true, &err);
        }
        cfr_kv_batch_free(kb);
        if (rc != 0 && !failed) {
            cfr_log(CFR_LOG_ERROR, "vault.audit.write_failed", "records=%zu",
                    n);
            cfr_log_err(CFR_LOG_ERROR, "vault.audit.write_failed", &err);
        }
        while (list != NULL) {
            struct audit_item *next = list->next;
            cfr_free(list);
            list = next;
        }
        pthread_mutex_lock(&db->aq_lock);
        if (rc != 0) {
            db->aq_failed = true;
            db->aq_lost += n;
        }
        db->aq_written += n;
        pthread_cond_broadcast(&db->aq_cond);
    }
    pthread_mutex_unlock(&db->aq_lock);
    cfr_buf_fini(&b);
    return NULL;
}

int
vault_sysdb_audit_submit(struct vault_sysdb *db,
                         const struct vault_sysdb_audit *rec,
                         struct cfr_err *err)
{
    int rc = 0;
    struct audit_item *it = cfr_malloc(sizeof(*it));
    if (it == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    it->next = NULL;
    audit_prepare(db, rec, &it->rec);
    pthread_mutex_lock(&db->aq_lock);
    if (db->aq_failed) {
        rc = CFR_ERR(err, CFR_EIO, "sysdb: audit log failed");
    } else if (db->aq_stop || db->aq_len >= db->aq_max) {
        db->aq_lost++;
        rc = CFR_ERR(err, CFR_ELIMIT, "sysdb: audit queue full");
    } else {
        if (db->aq_tail != NULL) {
            db->aq_tail->next = it;
        } else {
            db->aq_head = it;
        }
        db->aq_tail = it;
        db->aq_len++;
        db->aq_submitted++;
        pthread_cond_broadcast(&db->aq_cond);
        it = NULL;
    }
    pthread_mutex_unlock(&db->aq_lock);
    if (rc == CFR_ELIMIT) {
        cfr_log(CFR_LOG_ERROR, "vault.audit.dropped", "queue_max=%zu",
                db->aq_max);
    }
out:
    cfr_free(it);
    return rc;
}

int
vault_sysdb_audit_sync(struct vault_sysdb *db, struct cfr_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&db->aq_lock);
    uint64_t target = db->aq_submitted;
    while (db->aq_written < target && !db->aq_failed) {
        pthread_cond_wait(&db->aq_cond, &db->aq_lock);
    }
    if (db->aq_failed) {
        rc = CFR_ERR(err, CFR_EIO, "sysdb: audit log failed");
    }
    pthread_mutex_unlock(&db->aq_lock);
    return rc;
}

int
vault_sysdb_audit_query(struct vault_sysdb *db, int64_t from_ms, int64_t to_ms,
                        size_t max, vault_sysdb_audit_fn *fn, void *ctx,
                        struct cfr_err *err)
{
    struct vault_sysdb_audit *q = cfr_malloc(sizeof(*q));
    struct cfr_kv_iter *it = NULL;
    struct cfr_kv_entry e;
    uint8_t lo[16], hi[16];
    bool got = false;
    size_t seen = 0;
    int rc = 0;

    if (q == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    if (to_ms <= from_ms) {
        goto out;
    }
    audit_key(from_ms, 0, lo);
    audit_key(to_ms, 0, hi);
    it = cfr_kv_iter_new(db->kv, CF_AUDIT, lo, sizeof(lo), hi, sizeof(hi), err);
    if (it == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    while ((max == 0 || seen < max) &&
           (rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if ((rc = audit_decode(e.val, e.val_len, q, err)) != 0) {
            goto out;
        }
        seen++;
        if (fn(ctx, q) != 0) {
            break;
        }
    }
out:
    cfr_kv_iter_free(it);
    cfr_free(q);
    return rc;
}

int
vault_sysdb_audit_purge(struct vault_sysdb *db, uint64_t *purged_r,
                        struct cfr_err *err)
{
    struct cfr_kv_iter *it = NULL;
    struct cfr_kv_batch *kb = NULL;
    struct cfr_kv_entry e;
    uint8_t hi[16];
    bool got = false;
    uint64_t purged = 0;
    int rc = 0;

    audit_key(cfr_clock_now_ms(db->clock) - db->audit_keep_ms, 0, hi);
    it = cfr_kv_iter_new(db->kv, CF_AUDIT, NULL, 0, hi, sizeof(hi), err);
    kb = it != NULL ? cfr_kv_batch_new(db->kv, err) : NULL;
    if (kb == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        if ((rc = cfr_kv_batch_delete(kb, CF_AUDIT, e.key, e.key_len, err)) !=
            0) {
            goto out;
        }
        if (cfr_kv_batch_count(kb) >= PURGE_BATCH) {
            if ((rc = cfr_kv_batch_commit(kb, true, err)) != 0) {
                goto out;
            }
            purged += PURGE_BATCH;
        }
    }
    if (rc != 0) {
        goto out;
    }
    size_t left = cfr_kv_batch_count(kb);
    if (left > 0) {
        if ((rc = cfr_kv_batch_commit(kb, true, err)) != 0) {
            goto out;
        }
        purged += left;
    }
    /* Deleted records must leave the disk, not just the key space. */
    if (purged > 0) {
        rc = cfr_kv_compact(db->kv, CF_AUDIT, NULL, 0, hi, sizeof(hi), err);
    }
    if (rc == 0) {
        cfr_log(CFR_LOG_INFO, "vault.audit.purged", "records=%llu",
                (unsigned long long)purged);
    }
out:
    cfr_kv_batch_free(kb);
    cfr_kv_iter_free(it);
    if (purged_r != NULL) {
        *purged_r = purged;
    }
    return rc;
}

const char *
vault_sysdb_audit_format(const struct vault_sysdb_audit *rec, char *out,
                         size_t out_size)
{
    char when[40];
    cfr_clock_format(rec->time_ms, when, (int)sizeof(when));
    /* The strings are already quoted: they were stored that way. */
    snprintf(out, out_size,
             "time=%s identity=%s peer=%s method=%s decision=%s status=%d "
             "detail=%s",
             when, rec->identity, rec->peer, rec->method,
             rec->decision == VAULT_AUDIT_ALLOW ? "allow" : "deny", rec->status,
             rec->detail);
    return out;
}

/* ---- approvals -------------------------------------------------------- */

static int
approval_key(const char *tenant, const char *id_hex, uint8_t *key,
             size_t *key_len, struct cfr_err *err)
{
    size_t tl;
    int rc;
    if ((rc = scope_ok(tenant, err)) != 0) {
        return rc;
    }
    tl = strlen(tenant);
    memcpy(key, tenant, tl);
    key[tl] = '\0';
    if (id_hex == NULL || strlen(id_hex) != VAULT_SYSDB_APPROVAL_ID_LEN * 2 ||
        cfr_hex_decode(id_hex, key + tl + 1, VAULT_SYSDB_APPROVAL_ID_LEN) !=
            0) {
        return CFR_ERR(err, CFR_ENOTFOUND, "sysdb: no such approval");
    }
    *key_len = tl + 1 + VAULT_SYSDB_APPROVAL_ID_LEN;
    return 0;
}

static int
approval_encode(const struct vault_sysdb_approval *a, struct cfr_buf *b,
                struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_buf_append_u8(b, REC_VERSION, err)) != 0 ||
        (rc = put_str(b, a->tenant, err)) != 0 ||
        (rc = put_str(b, a->id, err)) != 0 ||
        (rc = put_str(b, a->op, err)) != 0 ||
        (rc = put_str(b, a->args, err)) != 0 ||
        (rc = put_str(b, a->requester, err)) != 0 ||
        (rc = put_str(b, a->requester_principal, err)) != 0 ||
        (rc = put_str(b, a->approver, err)) != 0 ||
        (rc = put_str(b, a->approver_principal, err)) != 0 ||
        (rc = cfr_buf_append_u8(b, (uint8_t)a->state, err)) != 0 ||
        (rc = put_i64(b, a->requested_ms, err)) != 0 ||
        (rc = put_i64(b, a->deadline_ms, err)) != 0) {
        return rc;
    }
    return 0;
}

static int
approval_decode(const uint8_t *p, size_t len, struct vault_sysdb_approval *a,
                struct cfr_err *err)
{
    struct rd r;
    memset(a, 0, sizeof(*a));
    rd_init(&r, p, len);
    if (rd_u8(&r) != REC_VERSION) {
        r.bad = true;
    }
    rd_str(&r, a->tenant, sizeof(a->tenant));
    rd_str(&r, a->id, sizeof(a->id));
    rd_str(&r, a->op, sizeof(a->op));
    rd_str(&r, a->args, sizeof(a->args));
    rd_str(&r, a->requester, sizeof(a->requester));
    rd_str(&r, a->requester_principal, sizeof(a->requester_principal));
    rd_str(&r, a->approver, sizeof(a->approver));
    rd_str(&r, a->approver_principal, sizeof(a->approver_principal));
    a->state = (enum vault_sysdb_approval_state)rd_u8(&r);
    a->requested_ms = (int64_t)rd_u64(&r);
    a->deadline_ms = (int64_t)rd_u64(&r);
    if (a->state < VAULT_APPROVAL_PENDING ||
        a->state > VAULT_APPROVAL_CONSUMED) {
        r.bad = true;
    }
    return rd_end(&r, "approval", err);
}

static int
approval_load(struct vault_sysdb *db, const char *tenant, const char *id,
              struct vault_sysdb_approval *a, uint8_t *key, size_t *key_len,
              struct cfr_err *err)
{
    struct cfr_buf v;
    int rc;
    cfr_buf_init(&v, REC_MAX);
    if ((rc = approval_key(tenant, id, key, key_len, err)) != 0) {
        goto out;
    }
    rc = cfr_kv_get(db->kv, CF_APPROVALS, key, *key_len, &v, err);
    if (rc == CFR_ENOTFOUND) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "sysdb: no such approval");
        goto out;
    }
    if (rc == 0) {
        rc = approval_decode(v.data, v.len, a, err);
    }
out:
    cfr_buf_fini(&v);
    return rc;
}

static int
approval_store(struct vault_sysdb *db, const struct vault_sysdb_approval *a,
               const uint8_t *key, size_t key_len, struct cfr_err *err)
{
    struct cfr_buf b;
    int rc;
    cfr_buf_init(&b, REC_MAX);
    if ((rc = approval_encode(a, &b, err)) == 0) {
        rc = cfr_kv_put(db->kv, CF_APPROVALS, key, key_len, b.data, b.len, err);
    }
    cfr_buf_fini(&b);
    return rc;
}

int
vault_sysdb_approval_request(struct vault_sysdb *db, const char *tenant,
                             const char *identity, const char *principal,
                             const char *op, const char *args,
                             char id_r[VAULT_SYSDB_APPROVAL_HEX],
                             struct cfr_err *err)
{
    struct vault_sysdb_approval *a = cfr_calloc(1, sizeof(*a));
    uint8_t raw[VAULT_SYSDB_APPROVAL_ID_LEN];
    uint8_t key[VAULT_SYSDB_NAME_MAX + 1 + VAULT_SYSDB_APPROVAL_ID_LEN];
    size_t key_len = 0;
    int rc;

    id_r[0] = '\0';
    if (a == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    if ((rc = scope_ok(tenant, err)) != 0) {
        goto out;
    }
    if (!admin_of(identity, tenant) || !principal_ok(principal)) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "sysdb: requester is not a named admin of the tenant");
        goto out;
    }
    /* args is shown to the approving admin: printable text only. */
    if (!token_ok(op, sizeof(a->op)) || args == NULL ||
        strlen(args) >= sizeof(a->args) || !text_ok(args)) {
        rc = CFR_ERR(err, CFR_EINVAL, "sysdb: bad operation or arguments");
        goto out;
    }
    cfr_crypto_random(raw, sizeof(raw));
    cfr_hex_encode(raw, sizeof(raw), a->id);
    snprintf(a->tenant, sizeof(a->tenant), "%s", tenant);
    snprintf(a->op, sizeof(a->op), "%s", op);
    snprintf(a->args, sizeof(a->args), "%s", args);
    snprintf(a->requester, sizeof(a->requester), "%s", identity);
    snprintf(a->requester_principal, sizeof(a->requester_principal), "%s",
             principal);
    a->state = VAULT_APPROVAL_PENDING;
    a->requested_ms = cfr_clock_now_ms(db->clock);
    a->deadline_ms = a->requested_ms + db->approval_window_ms;
    if ((rc = approval_key(tenant, a->id, key, &key_len, err)) != 0 ||
        (rc = approval_store(db, a, key, key_len, err)) != 0) {
        goto out;
    }
    memcpy(id_r, a->id, VAULT_SYSDB_APPROVAL_HEX);
out:
    cfr_free(a);
    return rc;
}

int
vault_sysdb_approval_approve(struct vault_sysdb *db, const char *tenant,
                             const char *id, const char *identity,
                             const char *principal, struct cfr_err *err)
{
    struct vault_sysdb_approval *a = cfr_malloc(sizeof(*a));
    uint8_t key[VAULT_SYSDB_NAME_MAX + 1 + VAULT_SYSDB_APPROVAL_ID_LEN];
    size_t key_len = 0;
    int rc;

    if (a == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
    }
    pthread_mutex_lock(&db->lock);
    if ((rc = approval_load(db, tenant, id, a, key, &key_len, err)) != 0) {
        goto out;
    }
    if (!admin_of(identity, tenant) || !principal_ok(principal)) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "sysdb: approver is not a named admin of the tenant");
    } else if (strcmp(principal, a->requester_principal) == 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "sysdb: a request needs a second admin to approve it");
    } else if (a->state != VAULT_APPROVAL_PENDING) {
        rc = CFR_ERR(err, CFR_EDENIED, "sysdb: approval is not pending");
    } else if (cfr_clock_now_ms(db->clock) >= a->deadline_ms) {
        rc = CFR_ERR(err, CFR_EDENIED, "sysdb: approval request expired");
    } else {
        a->state = VAULT_APPROVAL_APPROVED;
        snprintf(a->approver, sizeof(a->approver), "%s", identity);
        snprintf(a->approver_principal, sizeof(a->approver_principal), "%s",
                 principal);
        rc = approval_store(db, a, key, key_len, err);
    }
out:
    pthread_mutex_unlock(&db->lock);
    cfr_free(a);
    return rc;
}

int
vault_sysdb_approval_consume(struct vault_sysdb *db, const char *tenant,
                             const char *id, const char *op, const char *args,
                             struct cfr_err *err)
{
    struct vault_sysdb_approval *a = cfr_malloc(sizeof(*a));
    uint8_t key[VAULT_SYSDB_NAME_MAX + 1 + VAULT_SYSDB_APPROVAL_ID_LEN];
    size_t key_len = 0;
    int rc;

    if (a == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
    }
    pthread_mutex_lock(&db->lock);
    if ((rc = approval_load(db, tenant, id, a, key, &key_len, err)) != 0) {
        goto out;
    }
    if (a->state == VAULT_APPROVAL_CONSUMED) {
        rc = CFR_ERR(err, CFR_EDENIED, "sysdb: approval already used");
    } else if (a->state != VAULT_APPROVAL_APPROVED) {
        rc = CFR_ERR(err, CFR_EDENIED, "sysdb: approval not yet approved");
    } else if (cfr_clock_now_ms(db->clock) >= a->deadline_ms) {
        rc = CFR_ERR(err, CFR_EDENIED, "sysdb: approval expired");
    } else if (op == NULL || args == NULL || strcmp(op, a->op) != 0 ||
               strcmp(args, a->args) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "sysdb: approval was for another operation");
    } else {
        /* Written (synced) before the caller may act: at most once. */
        a->state = VAULT_APPROVAL_CONSUMED;
        rc = approval_store(db, a, key, key_len, err);
    }
out:
    pthread_mutex_unlock(&db->lock);
    cfr_free(a);
    return rc;
}

int
vault_sysdb_approval_get(struct vault_sysdb *db, const char *tenant,
                         const char *id, struct vault_sysdb_approval *a_r,
                         struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 1 + VAULT_SYSDB_APPROVAL_ID_LEN];
    size_t key_len = 0;
    memset(a_r, 0, sizeof(*a_r));
    return approval_load(db, tenant, id, a_r, key, &key_len, err);
}

int
vault_sysdb_approval_purge(struct vault_sysdb *db, uint64_t *purged_r,
                           struct cfr_err *err)
{
    struct vault_sysdb_approval *a = cfr_malloc(sizeof(*a));
    struct cfr_kv_iter *it = NULL;
    struct cfr_kv_batch *kb = NULL;
    struct cfr_kv_entry e;
    bool got = false;
    uint64_t purged = 0;
    int64_t cutoff = cfr_clock_now_ms(db->clock) - APPROVAL_KEEP_MS;
    int rc = 0;

    if (a == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    it = cfr_kv_iter_new(db->kv, CF_APPROVALS, NULL, 0, NULL, 0, err);
    kb = it != NULL ? cfr_kv_batch_new(db->kv, err) : NULL;
    if (kb == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_EIO;
        goto out;
    }
    while ((rc = cfr_kv_iter_next(it, &got, &e, err)) == 0 && got) {
        /* A record we cannot read is removed too: it can never be used. */
        if (approval_decode(e.val, e.val_len, a, NULL) != 0 ||
            a->deadline_ms < cutoff) {
            if ((rc = cfr_kv_batch_delete(kb, CF_APPROVALS, e.key, e.key_len,
                                          err)) != 0) {
                goto out;
            }
            purged++;
        }
    }
    if (rc == 0 && cfr_kv_batch_count(kb) > 0) {
        rc = cfr_kv_batch_commit(kb, true, err);
    }
out:
    cfr_kv_batch_free(kb);
    cfr_kv_iter_free(it);
    cfr_free(a);
    if (purged_r != NULL) {
        *purged_r = rc == 0 ? purged : 0;
    }
    return rc;
}

/* ---- TOTP ------------------------------------------------------------- */

struct totp_rec {
    struct cfr_totp_params params;
    uint64_t last_step;
    uint8_t secret[CFR_TOTP_SECRET_MAX];
    size_t secret_len;
};

/* tenant NUL identity NUL principal: one secret per named admin. */
static int
totp_key(const char *tenant, const char *identity, const char *principal,
         uint8_t *key, size_t *key_len, struct cfr_err *err)
{
    int rc;
    if ((rc = scope_ok(tenant, err)) != 0) {
        return rc;
    }
    if (!admin_of(identity, tenant) || !principal_ok(principal)) {
        return CFR_ERR(err, CFR_EDENIED,
                       "sysdb: TOTP only for named admins of the tenant");
    }
    size_t tl = strlen(tenant), il = strlen(identity), pl = strlen(principal);
    memcpy(key, tenant, tl);
    key[tl] = '\0';
    memcpy(key + tl + 1, identity, il);
    key[tl + 1 + il] = '\0';
    memcpy(key + tl + 2 + il, principal, pl);
    *key_len = tl + 2 + il + pl;
    return 0;
}

static int
totp_encode(const struct totp_rec *t, struct cfr_buf *b, struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_buf_append_u8(b, REC_VERSION, err)) != 0 ||
        (rc = cfr_buf_append_u8(b, (uint8_t)t->params.alg, err)) != 0 ||
        (rc = cfr_buf_append_u8(b, (uint8_t)t->params.digits, err)) != 0 ||
        (rc = cfr_buf_append_le32(b, t->params.step_s, err)) != 0 ||
        (rc = put_i64(b, t->params.t0_s, err)) != 0 ||
        (rc = cfr_buf_append_le64(b, t->last_step, err)) != 0 ||
        (rc = put_bytes(b, t->secret, t->secret_len, err)) != 0) {
        return rc;
    }
    return 0;
}

static int
totp_decode(const uint8_t *p, size_t len, struct totp_rec *t,
            struct cfr_err *err)
{
    struct rd r;
    rd_init(&r, p, len);
    if (rd_u8(&r) != REC_VERSION) {
        r.bad = true;
    }
    t->params.alg = (enum cfr_totp_alg)rd_u8(&r);
    t->params.digits = rd_u8(&r);
    t->params.step_s = rd_u32(&r);
    t->params.t0_s = (int64_t)rd_u64(&r);
    t->last_step = rd_u64(&r);
    rd_bytes(&r, t->secret, sizeof(t->secret), &t->secret_len);
    return rd_end(&r, "totp", err);
}

int
vault_sysdb_totp_register(struct vault_sysdb *db, const char *tenant,
                          const char *identity, const char *principal,
                          const uint8_t *secret, size_t secret_len,
                          const struct cfr_totp_params *params,
                          struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 2 + 2 * VAULT_SYSDB_IDENT_MAX];
    size_t key_len = 0;
    struct totp_rec *t = cfr_calloc(1, sizeof(*t));
    struct cfr_buf b;
    uint32_t probe;
    int rc;

    cfr_buf_init(&b, REC_MAX);
    if (t == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    if ((rc = totp_key(tenant, identity, principal, key, &key_len, err)) != 0) {
        goto out;
    }
    if (params != NULL) {
        t->params = *params;
    }
    t->params.alg = t->params.alg != 0 ? t->params.alg : CFR_TOTP_SHA1;
    t->params.digits = t->params.digits != 0 ? t->params.digits : 6;
    t->params.step_s = t->params.step_s != 0 ? t->params.step_s : 30;
    /* Computing one code checks secret length and parameters together. */
    if ((rc = cfr_totp_at(secret, secret_len, &t->params, t->params.t0_s,
                          &probe, err)) != 0) {
        goto out;
    }
    memcpy(t->secret, secret, secret_len);
    t->secret_len = secret_len;
    pthread_mutex_lock(&db->lock);
    if ((rc = totp_encode(t, &b, err)) == 0) {
        rc = cfr_kv_put(db->kv, CF_TOTP, key, key_len, b.data, b.len, err);
    }
    pthread_mutex_unlock(&db->lock);
out:
    if (b.data != NULL) {
        cfr_wipe(b.data, b.alloc);
    }
    cfr_buf_fini(&b);
    if (t != NULL) {
        cfr_wipe(t, sizeof(*t));
    }
    cfr_free(t);
    return rc;
}

int
vault_sysdb_totp_has(struct vault_sysdb *db, const char *tenant,
                     const char *identity, const char *principal, bool *has_r,
                     struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 2 + 2 * VAULT_SYSDB_IDENT_MAX];
    size_t key_len = 0;
    struct cfr_buf v;
    int rc;

    *has_r = false;
    cfr_buf_init(&v, REC_MAX);
    if ((rc = totp_key(tenant, identity, principal, key, &key_len, err)) != 0) {
        goto out;
    }
    rc = cfr_kv_get(db->kv, CF_TOTP, key, key_len, &v, err);
    if (rc == 0) {
        *has_r = true;
    } else if (rc == CFR_ENOTFOUND) {
        rc = 0;
    }
out:
    if (v.data != NULL) {
        cfr_wipe(v.data, v.alloc);
    }
    cfr_buf_fini(&v);
    return rc;
}

int
vault_sysdb_totp_remove(struct vault_sysdb *db, const char *tenant,
                        const char *identity, const char *principal,
                        struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 2 + 2 * VAULT_SYSDB_IDENT_MAX];
    size_t key_len = 0;
    int rc;
    if ((rc = totp_key(tenant, identity, principal, key, &key_len, err)) != 0) {
        return rc;
    }
    return cfr_kv_delete(db->kv, CF_TOTP, key, key_len, err);
}

int
vault_sysdb_totp_verify(struct vault_sysdb *db, const char *tenant,
                        const char *identity, const char *principal,
                        const char *code, struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 2 + 2 * VAULT_SYSDB_IDENT_MAX];
    size_t key_len = 0;
    struct totp_rec *t = cfr_calloc(1, sizeof(*t));
    struct cfr_buf v;
    bool locked = false;
    int rc;

    cfr_buf_init(&v, REC_MAX);
    if (t == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "sysdb: out of memory");
        goto out;
    }
    if (totp_key(tenant, identity, principal, key, &key_len, NULL) != 0) {
        rc = CFR_ERR(err, CFR_EAUTH, "sysdb: no TOTP for this identity");
        goto out;
    }
    pthread_mutex_lock(&db->lock);
    locked = true;
    rc = cfr_kv_get(db->kv, CF_TOTP, key, key_len, &v, err);
    if (rc == CFR_ENOTFOUND) {
        rc = CFR_ERR(err, CFR_EAUTH, "sysdb: no TOTP for this identity");
        goto out;
    }
    if (rc != 0 || (rc = totp_decode(v.data, v.len, t, err)) != 0) {
        goto out;
    }
    rc = cfr_totp_verify(t->secret, t->secret_len, &t->params,
                         cfr_clock_now_ms(db->clock), TOTP_WINDOW, code,
                         &t->last_step, err);
    if (rc == CFR_EINVAL) {
        rc = CFR_ERR(err, CFR_EAUTH, "sysdb: malformed TOTP code");
    }
    if (rc != 0) {
        goto out;
    }
    /* The used step is on disk before the caller may act on success. */
    cfr_wipe(v.data, v.alloc);
    cfr_buf_reset(&v);
    if ((rc = totp_encode(t, &v, err)) == 0) {
        rc = cfr_kv_put(db->kv, CF_TOTP, key, key_len, v.data, v.len, err);
    }
out:
    if (locked) {
        pthread_mutex_unlock(&db->lock);
    }
    if (v.data != NULL) {
        cfr_wipe(v.data, v.alloc);
    }
    cfr_buf_fini(&v);
    if (t != NULL) {
        cfr_wipe(t, sizeof(*t));
    }
    cfr_free(t);
    return rc;
}

/* ---- identities seen -------------------------------------------------- */

int
vault_sysdb_seen_mark(struct vault_sysdb *db, const char *tenant,
                      const char *fingerprint, bool *new_r, struct cfr_err *err)
{
    uint8_t key[VAULT_SYSDB_NAME_MAX + 1 + CFR_RPC_FINGERPRINT_LEN];
    uint8_t val[9];
    size_t tn, fn, key_len;
    struct cfr_buf v;
    int rc;

    *new_r = false;
    cfr_buf_init(&v, REC_MAX);
    if ((rc = vault_sysdb_tenant_name_ok(tenant, err)) != 0) {
        goto out;
    }
    tn = strlen(tenant);
    fn = fingerprint != NULL ? strlen(fingerprint) : 0;
    if (fn != CFR_RPC_FINGERPRINT_LEN) {
        rc = CFR_ERR(err, CFR_EINVAL, "sysdb: bad fingerprint");
        goto out;
    }
    memcpy(key, tenant, tn);
    key[tn] = 0;
    for (size_t i = 0; i < fn; i++) {
        char c = fingerprint[i];
        if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        }
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            rc = CFR_ERR(err, CFR_EINVAL, "sysdb: bad fingerprint");
            goto out;
        }
        key[tn + 1 + i] = (uint8_t)c;
    }
    key_len = tn + 1 + fn;
    /* Under the lock, so two first calls racing report "new" once. */
    pthread_mutex_lock(&db->lock);
    rc = cfr_kv_get(db->kv, CF_SEEN, key, key_len, &v, err);
    if (rc == CFR_ENOTFOUND) {
        val[0] = REC_VERSION;
        cfr_put_le64(val + 1, (uint64_t)cfr_clock_now_ms(db->clock));
        rc = cfr_kv_put(db->kv, CF_SEEN, key, key_len, val, sizeof(val), err);
        *new_r = rc == 0;
    }
    pthread_mutex_unlock(&db->lock);
out:
    cfr_buf_fini(&v);
    return rc;
}
