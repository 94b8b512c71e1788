/*
 * keys.c - the tenant keyring and its key files.
 *
 * The only code that holds a tenant's master key and X25519 secret keys.
 * docs/FORMAT.md specifies the key file byte by byte; the layout
 * constants below follow it.
 *
 * Invariants:
 *  1. Key material lives only in struct cfr_secret (sodium_malloc) memory:
 *     kr->sub (chunk-ID, name and gear keys, read-only after creation) and,
 *     for a full keyring, kr->cold (M, then one 32-byte X25519 secret per
 *     pair, in pair order). Temporaries on the stack are wiped at out:.
 *  2. kr->cold is inaccessible (PROT_NONE) whenever no function of this file
 *     is running with kr->lock held; it is only opened under that lock.
 *  3. An agent keyring has kr->cold == NULL: it holds no secret that opens
 *     anything, by construction, and no function here can give it one.
 *  4. Pairs are sorted by strictly increasing key_id >= 1, there is at least
 *     one, and the current key_id is the last one for a full keyring.
 *  5. The decoder trusts no length: every field is bounds-checked against
 *     the input before it is read, and everything that can be checked
 *     without the passphrase is checked before Argon2 runs.
 *  6. Subkeys are a pure function of M (crypto_kdf, context "cofferv1"),
 *     so a full keyring and every agent view of it agree on chunk IDs,
 *     mailbox IDs and chunk boundaries.
 */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "id.h"       /* cfr_id_chunk, cfr_id_name */
#include "keys_int.h" /* the internal half of this module */
#include "log.h"      /* warnings on key-file handling */
#include "mem.h"      /* handles and public key lists */
#include "secret.h"   /* sodium_malloc'd storage */

/* crypto_kdf context and subkey ids (FORMAT.md, "Subkeys"). */
static const char KDF_CONTEXT[crypto_kdf_CONTEXTBYTES] = {'c', 'o', 'f', 'f',
                                                          'e', 'r', 'v', '1'};
enum { SUBKEY_ID_CHUNK = 1, SUBKEY_ID_NAME = 2, SUBKEY_ID_GEAR = 3 };

/* Offsets of the subkeys inside kr->sub. */
enum { SUB_CHUNK = 0, SUB_NAME = 32, SUB_GEAR = 64, SUB_LEN = 96 };

#define MASTER_LEN 32
#define SK_LEN     32

/* Key file header (FORMAT.md, "Key file"). */
static const uint8_t KEYFILE_MAGIC[8] = {0x89, 'C', 'F', 'R',
                                         'K',  'E', 'Y', '\n'};
enum {
    KF_MAGIC = 0,
    KF_VERSION = 8,
    KF_KIND = 9,
    KF_KDF = 10,
    KF_RESERVED = 11,
    KF_OPS = 12,
    KF_MEM = 20,
    KF_SALT = 28,
    KF_TENANT = 44,
    KF_NONCE = 60,
    KF_CTLEN = 84,
    KF_HEADER_LEN = 88,
};
#define KF_VERSION_1    1
#define KF_KDF_ARGON2ID 1
#define KF_SALT_LEN     16
#define KF_NONCE_LEN    24
#define KF_TAG_LEN      16
#define KF_CHECK_LEN    16
#define KF_MIN_LEN      (KF_HEADER_LEN + KF_TAG_LEN + KF_CHECK_LEN)

/* Payload shapes: a fixed part then npairs records. */
#define FULL_FIXED  (MASTER_LEN + 4)
#define FULL_PER    (4 + 8 + CFR_PUBKEY_LEN + SK_LEN)
#define AGENT_FIXED (SUB_LEN + 4 + 4)
#define AGENT_PER   (4 + 8 + CFR_PUBKEY_LEN)

/* Nonce for expanding the gear key: fixed, the key is single-purpose. */
static const uint8_t GEAR_NONCE[crypto_stream_xchacha20_NONCEBYTES] =
    "coffer gear table v1";

/* Context string of the session-key derivation. */
static const uint8_t SESSION_CONTEXT[17] = "coffer session v1";

struct pair {
    uint32_t key_id;
    int64_t created_ms;
    uint8_t pk[CFR_PUBKEY_LEN];
};

struct cfr_keyring {
    enum cfr_keyring_kind kind;
    uint8_t tenant_id[CFR_TENANT_ID_LEN];
    struct cfr_secret *sub;  /* chunk | name | gear, read-only */
    struct cfr_secret *cold; /* full: M | sk[npairs]; NULL for agent */
    struct pair *pairs;      /* cfr_malloc'd, npairs entries */
    size_t npairs;
    uint32_t current; /* key_id new sessions seal for */
    pthread_mutex_t lock;
};

/* A parsed key file header (everything before the ciphertext). */
struct kf_header {
    int kind;
    struct cfr_kdf_params params;
    const uint8_t *salt;
    const uint8_t *tenant_id;
    const uint8_t *nonce;
    const uint8_t *ct;
    size_t ct_len;
};

static cfr_keys_random_fn *random_hook;
static void *random_hook_ctx;

void
cfr_keys_test_set_random(cfr_keys_random_fn *fn, void *ctx)
{
    random_hook = fn;
    random_hook_ctx = ctx;
}

void
cfr_keys_random(uint8_t *buf, size_t n)
{
    if (random_hook != NULL) {
        random_hook(random_hook_ctx, buf, n);
    } else {
        randombytes_buf(buf, n);
    }
}

void
cfr_kdf_params_default(struct cfr_kdf_params *p)
{
    p->opslimit = CFR_KDF_OPS_DEFAULT;
    p->memlimit = CFR_KDF_MEM_DEFAULT;
}

/*
 * The mutex guards kr->cold's protection state; it is logically mutable
 * even in a const keyring, hence the cast.
 */
static const uint8_t *
cold_open(const struct cfr_keyring *kr)
{
    CFR_ASSERT(pthread_mutex_lock((pthread_mutex_t *)&kr->lock) == 0);
    return cfr_secret_ro(kr->cold);
}

static void
cold_close(const struct cfr_keyring *kr)
{
    cfr_secret_lock(kr->cold);
    CFR_ASSERT(pthread_mutex_unlock((pthread_mutex_t *)&kr->lock) == 0);
}

/* Returns owned: an empty keyring with room for npairs and its secrets. */
static struct cfr_keyring *
keyring_alloc(enum cfr_keyring_kind kind, size_t npairs, struct cfr_err *err)
{
    struct cfr_keyring *kr = NULL;
    bool ok = false;

    if (cfr_crypto_init(err) != 0) {
        goto out;
    }
    kr = cfr_calloc(1, sizeof(*kr));
    if (kr == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for a keyring");
        goto out;
    }
    kr->kind = kind;
    if (pthread_mutex_init(&kr->lock, NULL) != 0) {
        cfr_free_null(&kr);
        CFR_ERR(err, CFR_ENOMEM, "cannot create keyring mutex");
        goto out;
    }
    kr->pairs = cfr_calloc(npairs, sizeof(*kr->pairs));
    if (kr->pairs == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for %zu key pairs", npairs);
        goto out;
    }
    kr->npairs = npairs;
    kr->sub = cfr_secret_new(SUB_LEN, err);
    if (kr->sub == NULL) {
        goto out;
    }
    if (kind == CFR_KEYRING_FULL) {
        kr->cold = cfr_secret_new(MASTER_LEN + SK_LEN * npairs, err);
        if (kr->cold == NULL) {
            goto out;
        }
    }
    ok = true;
out:
    if (!ok && kr != NULL) {
        cfr_keyring_free(kr);
        kr = NULL;
    }
    return kr;
}

void
cfr_keyring_free(struct cfr_keyring *kr)
{
    if (kr == NULL) {
        return;
    }
    cfr_secret_free(kr->sub);
    cfr_secret_free(kr->cold);
    cfr_free(kr->pairs);
    pthread_mutex_destroy(&kr->lock);
    cfr_free(kr);
}

/* Fills kr->sub from M and leaves it read-only. */
static void
derive_subkeys(struct cfr_keyring *kr, const uint8_t *master)
{
    uint8_t *sub = cfr_secret_rw(kr->sub);
    int rc = crypto_kdf_derive_from_key(sub + SUB_CHUNK, CFR_SUBKEY_LEN,
                                        SUBKEY_ID_CHUNK, KDF_CONTEXT, master);
    rc |= crypto_kdf_derive_from_key(sub + SUB_NAME, CFR_SUBKEY_LEN,
                                     SUBKEY_ID_NAME, KDF_CONTEXT, master);
    rc |= crypto_kdf_derive_from_key(sub + SUB_GEAR, CFR_SUBKEY_LEN,
                                     SUBKEY_ID_GEAR, KDF_CONTEXT, master);
    CFR_ASSERT(rc == 0); /* fails only on bad constant lengths */
    cfr_secret_ro(kr->sub);
}

struct cfr_keyring *
cfr_keyring_generate(int64_t now_ms, struct cfr_err *err)
{
    struct cfr_keyring *kr = keyring_alloc(CFR_KEYRING_FULL, 1, err);
    if (kr == NULL) {
        goto out;
    }
    uint8_t *cold = cfr_secret_rw(kr->cold);
    cfr_keys_random(kr->tenant_id, sizeof(kr->tenant_id));
    cfr_keys_random(cold, MASTER_LEN);
    cfr_keys_random(cold + MASTER_LEN, SK_LEN);
    CFR_ASSERT(crypto_scalarmult_base(kr->pairs[0].pk, cold + MASTER_LEN) == 0);
    kr->pairs[0].key_id = 1;
    kr->pairs[0].created_ms = now_ms;
    kr->current = 1;
    derive_subkeys(kr, cold);
    cfr_secret_lock(kr->cold);
out:
    return kr;
}

int
cfr_keyring_rotate(struct cfr_keyring *kr, int64_t now_ms, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_secret *next = NULL;
    uint8_t *dst;

    if (kr->kind != CFR_KEYRING_FULL) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "an agent keyring cannot rotate; rotate the full "
                     "keyring and export a new agent view");
        goto out;
    }
    uint32_t last = kr->pairs[kr->npairs - 1].key_id;
    if (kr->npairs >= CFR_KEYRING_PAIRS_MAX || last == UINT32_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "keyring already holds %zu key pairs",
                     kr->npairs);
        goto out;
    }
    struct pair *pairs =
        cfr_realloc(kr->pairs, (kr->npairs + 1) * sizeof(*pairs));
    if (pairs == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory rotating keys");
        goto out;
    }
    kr->pairs = pairs;
    next = cfr_secret_new(MASTER_LEN + SK_LEN * (kr->npairs + 1), err);
    if (next == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    dst = cfr_secret_rw(next);
    const uint8_t *src = cold_open(kr);
    memcpy(dst, src, MASTER_LEN + SK_LEN * kr->npairs);
    cold_close(kr);
    uint8_t *sk = dst + MASTER_LEN + SK_LEN * kr->npairs;
    cfr_keys_random(sk, SK_LEN);
    struct pair *p = &kr->pairs[kr->npairs];
    CFR_ASSERT(crypto_scalarmult_base(p->pk, sk) == 0);
    p->key_id = last + 1;
    p->created_ms = now_ms;
    cfr_secret_lock(next);
    cfr_secret_free(kr->cold);
    kr->cold = next;
    next = NULL;
    kr->npairs++;
    kr->current = p->key_id;
out:
    cfr_secret_free(next);
    return rc;
}

struct cfr_keyring *
cfr_keyring_agent_view(const struct cfr_keyring *kr, struct cfr_err *err)
{
    struct cfr_keyring *view =
        keyring_alloc(CFR_KEYRING_AGENT, kr->npairs, err);
    if (view == NULL) {
        goto out;
    }
    memcpy(view->tenant_id, kr->tenant_id, sizeof(view->tenant_id));
    memcpy(view->pairs, kr->pairs, kr->npairs * sizeof(*kr->pairs));
    view->current = kr->current;
    memcpy(cfr_secret_rw(view->sub), cfr_secret_ro(kr->sub), SUB_LEN);
    cfr_secret_ro(view->sub);
out:
    return view;
}

enum cfr_keyring_kind
cfr_keyring_kind(const struct cfr_keyring *kr)
{
    return kr->kind;
}

bool
cfr_keyring_can_open(const struct cfr_keyring *kr)
{
    return kr->kind == CFR_KEYRING_FULL && kr->cold != NULL;
}

const uint8_t *
cfr_keyring_tenant_id(const struct cfr_keyring *kr)
{
    return kr->tenant_id;
}

uint32_t
cfr_keyring_current_key_id(const struct cfr_keyring *kr)
{
    return kr->current;
}

size_t
cfr_keyring_key_count(const struct cfr_keyring *kr)
{
    return kr->npairs;
}

/* Index of key_id in kr->pairs, or -1. Pairs are sorted (invariant 4). */
static long
find_pair(const struct cfr_keyring *kr, uint32_t key_id)
{
    long found = -1;
    size_t lo = 0;
    size_t hi = kr->npairs;
    while (lo < hi && found < 0) {
        size_t mid = lo + (hi - lo) / 2;
        if (kr->pairs[mid].key_id == key_id) {
            found = (long)mid;
        } else if (kr->pairs[mid].key_id < key_id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return found;
}

int
cfr_keyring_public_key(const struct cfr_keyring *kr, uint32_t key_id,
                       uint8_t pk_r[CFR_PUBKEY_LEN], int64_t *created_ms_r,
                       struct cfr_err *err)
{
    int rc = 0;
    long i = find_pair(kr, key_id);
    if (i < 0) {
        rc = CFR_ERR(err, CFR_ENOTFOUND, "keyring has no key_id %u",
                     (unsigned)key_id);
        goto out;
    }
    memcpy(pk_r, kr->pairs[i].pk, CFR_PUBKEY_LEN);
    if (created_ms_r != NULL) {
        *created_ms_r = kr->pairs[i].created_ms;
    }
out:
    return rc;
}

/*
 * kr->sub is read-only from creation to free (invariant 1), so handing out
 * a pointer needs no protection change and is safe across threads.
 */
const uint8_t *
cfr_keyring_chunk_key(const struct cfr_keyring *kr)
{
    return cfr_secret_ro(kr->sub) + SUB_CHUNK;
}

const uint8_t *
cfr_keyring_name_key(const struct cfr_keyring *kr)
{
    return cfr_secret_ro(kr->sub) + SUB_NAME;
}

void
cfr_keyring_chunk_id(const struct cfr_keyring *kr, const void *data, size_t len,
                     uint8_t id_r[32])
{
    cfr_id_chunk(cfr_keyring_chunk_key(kr), data, len, id_r);
}

void
cfr_keyring_name_id(const struct cfr_keyring *kr, const void *name, size_t len,
                    uint8_t id_r[32])
{
    cfr_id_name(cfr_keyring_name_key(kr), name, len, id_r);
}

void
cfr_keyring_gear_table(const struct cfr_keyring *kr, uint64_t gear[256])
{
    uint8_t stream[256 * 8];
    const uint8_t *key = cfr_secret_ro(kr->sub) + SUB_GEAR;
    CFR_ASSERT(
        crypto_stream_xchacha20(stream, sizeof(stream), GEAR_NONCE, key) == 0);
    for (size_t i = 0; i < 256; i++) {
        gear[i] = cfr_get_le64(stream + 8 * i);
    }
    sodium_memzero(stream, sizeof(stream));
}

int
cfr_keys_session_key(const uint8_t shared[32], const uint8_t eph_pk[32],
                     const uint8_t tenant_pk[32],
                     uint8_t key_r[CFR_SESSION_KEY_LEN], struct cfr_err *err)
{
    int rc = 0;
    crypto_generichash_state st;

    if (sodium_is_zero(shared, 32)) {
        rc = CFR_ERR(err, CFR_EAUTH, "session public key is a low-order point");
        goto out;
    }
    CFR_ASSERT(crypto_generichash_init(&st, shared, 32, CFR_SESSION_KEY_LEN) ==
               0);
    crypto_generichash_update(&st, SESSION_CONTEXT, sizeof(SESSION_CONTEXT));
    crypto_generichash_update(&st, eph_pk, 32);
    crypto_generichash_update(&st, tenant_pk, 32);
    crypto_generichash_final(&st, key_r, CFR_SESSION_KEY_LEN);
out:
    sodium_memzero(&st, sizeof(st));
    return rc;
}

int
cfr_keyring_open_session_key(const struct cfr_keyring *kr, uint32_t key_id,
                             const uint8_t eph_pk[32],
                             uint8_t key_r[CFR_SESSION_KEY_LEN],
                             struct cfr_err *err)
{
    int rc = 0;
    uint8_t shared[crypto_scalarmult_BYTES];
    bool opened = false;

    if (!cfr_keyring_can_open(kr)) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "an agent keyring holds no secret key and cannot open");
        goto out;
    }
    long i = find_pair(kr, key_id);
    if (i < 0) {
        rc = CFR_ERR(err, CFR_EAUTH,
                     "no key pair with key_id %u in this keyring (another "
                     "tenant's data, or a keyring older than the data)",
                     (unsigned)key_id);
        goto out;
    }
    const uint8_t *cold = cold_open(kr);
    opened = true;
    const uint8_t *sk = cold + MASTER_LEN + SK_LEN * (size_t)i;
    if (crypto_scalarmult(shared, sk, eph_pk) != 0) {
        rc = CFR_ERR(err, CFR_EAUTH, "session public key is a low-order point");
        goto out;
    }
    rc = cfr_keys_session_key(shared, eph_pk, kr->pairs[i].pk, key_r, err);
out:
    if (opened) {
        cold_close(kr);
    }
    sodium_memzero(shared, sizeof(shared));
    return rc;
}

/*
 * Serialises the payload (the secret part of a key file) into a new
 * secret. Returns owned.
 */
static struct cfr_secret *
payload_encode(const struct cfr_keyring *kr, struct cfr_err *err)
{
    struct cfr_secret *s = NULL;
    size_t len;

    if (kr->kind == CFR_KEYRING_FULL) {
        len = FULL_FIXED + FULL_PER * kr->npairs;
    } else {
        len = AGENT_FIXED + AGENT_PER * kr->npairs;
    }
    s = cfr_secret_new(len, err);
    if (s == NULL) {
        goto out;
    }
    uint8_t *p = cfr_secret_rw(s);
    if (kr->kind == CFR_KEYRING_FULL) {
        const uint8_t *cold = cold_open(kr);
        memcpy(p, cold, MASTER_LEN);
        cfr_put_le32(p + MASTER_LEN, (uint32_t)kr->npairs);
        p += FULL_FIXED;
        for (size_t i = 0; i < kr->npairs; i++, p += FULL_PER) {
            cfr_put_le32(p, kr->pairs[i].key_id);
            cfr_put_le64(p + 4, (uint64_t)kr->pairs[i].created_ms);
            memcpy(p + 12, kr->pairs[i].pk, CFR_PUBKEY_LEN);
            memcpy(p + 44, cold + MASTER_LEN + SK_LEN * i, SK_LEN);
        }
        cold_close(kr);
    } else {
        memcpy(p, cfr_secret_ro(kr->sub), SUB_LEN);
        cfr_put_le32(p + SUB_LEN, kr->current);
        cfr_put_le32(p + SUB_LEN + 4, (uint32_t)kr->npairs);
        p += AGENT_FIXED;
        for (size_t i = 0; i < kr->npairs; i++, p += AGENT_PER) {
            cfr_put_le32(p, kr->pairs[i].key_id);
            cfr_put_le64(p + 4, (uint64_t)kr->pairs[i].created_ms);
            memcpy(p + 12, kr->pairs[i].pk, CFR_PUBKEY_LEN);
        }
    }
    cfr_secret_ro(s);
out:
    return s;
}

/*
 * npairs implied by a payload length, or 0 when the length fits no
 * well-formed payload of that kind.
 */
static size_t
payload_pairs(int kind, size_t len)
{
    size_t fixed = kind == CFR_KEYRING_FULL ? FULL_FIXED : AGENT_FIXED;
    size_t per = kind == CFR_KEYRING_FULL ? FULL_PER : AGENT_PER;
    if (len < fixed + per || (len - fixed) % per != 0) {
        return 0;
    }
    size_t n = (len - fixed) / per;
    return n <= CFR_KEYRING_PAIRS_MAX ? n : 0;
}

struct cfr_keyring *
cfr_keyring_parse_payload(int kind, const uint8_t *p, size_t len,
                          const uint8_t tenant_id[16], struct cfr_err *err)
{
    struct cfr_keyring *kr = NULL;
    bool ok = false;
    uint8_t pk[CFR_PUBKEY_LEN];

    if (kind != CFR_KEYRING_FULL && kind != CFR_KEYRING_AGENT) {
        CFR_ERR(err, CFR_EINVAL, "unknown keyring kind %d", kind);
        goto out;
    }
    size_t n = payload_pairs(kind, len);
    size_t count_at = kind == CFR_KEYRING_FULL ? MASTER_LEN : SUB_LEN + 4;
    if (n == 0 || len < count_at + 4 || cfr_get_le32(p + count_at) != n) {
        CFR_ERR(err, CFR_ECORRUPT,
                "key file payload of %zu bytes does not match its key count",
                len);
        goto out;
    }
    kr = keyring_alloc((enum cfr_keyring_kind)kind, n, err);
    if (kr == NULL) {
        goto out;
    }
    memcpy(kr->tenant_id, tenant_id, CFR_TENANT_ID_LEN);
    size_t per = kind == CFR_KEYRING_FULL ? FULL_PER : AGENT_PER;
    const uint8_t *rec =
        p + (kind == CFR_KEYRING_FULL ? FULL_FIXED : AGENT_FIXED);
    uint8_t *cold = kind == CFR_KEYRING_FULL ? cfr_secret_rw(kr->cold) : NULL;
    for (size_t i = 0; i < n; i++, rec += per) {
        struct pair *pr = &kr->pairs[i];
        pr->key_id = cfr_get_le32(rec);
        pr->created_ms = (int64_t)cfr_get_le64(rec + 4);
        memcpy(pr->pk, rec + 12, CFR_PUBKEY_LEN);
        if (pr->key_id == 0 ||
            (i > 0 && pr->key_id <= kr->pairs[i - 1].key_id)) {
            CFR_ERR(err, CFR_ECORRUPT,
                    "key file: key_ids not strictly increasing at pair %zu", i);
            goto out;
        }
        if (cold != NULL) {
            uint8_t *sk = cold + MASTER_LEN + SK_LEN * i;
            memcpy(sk, rec + 44, SK_LEN);
            /* A pair whose halves disagree would seal data nobody opens. */
            if (crypto_scalarmult_base(pk, sk) != 0 ||
                sodium_memcmp(pk, pr->pk, CFR_PUBKEY_LEN) != 0) {
                CFR_ERR(err, CFR_ECORRUPT,
                        "key file: key_id %u secret and public keys differ",
                        (unsigned)pr->key_id);
                goto out;
            }
        }
    }
    if (kind == CFR_KEYRING_FULL) {
        CFR_ASSERT(cold != NULL);
        memcpy(cold, p, MASTER_LEN);
        kr->current = kr->pairs[n - 1].key_id;
        derive_subkeys(kr, cold);
    } else {
        memcpy(cfr_secret_rw(kr->sub), p, SUB_LEN);
        cfr_secret_ro(kr->sub);
        kr->current = cfr_get_le32(p + SUB_LEN);
        if (find_pair(kr, kr->current) < 0) {
            CFR_ERR(err, CFR_ECORRUPT,
                    "key file: current key_id %u is not in the keyring",
                    (unsigned)kr->current);
            goto out;
        }
    }
    ok = true;
out:
    if (kr != NULL && kr->cold != NULL) {
        cfr_secret_lock(kr->cold);
    }
    if (!ok) {
        cfr_keyring_free(kr);
        kr = NULL;
    }
    sodium_memzero(pk, sizeof(pk));
    return kr;
}

/*
 * Bounds on the Argon2id cost. Too low is weak_code: CFR_EINVAL from a
 * caller, CFR_ECORRUPT in a file (nothing we write has it).
 */
static int
check_params(const struct cfr_kdf_params *p, int weak_code, struct cfr_err *err)
{
    int rc = 0;
    if (p->opslimit < CFR_KDF_OPS_MIN || p->memlimit < CFR_KDF_MEM_MIN) {
        rc = CFR_ERR(err, weak_code,
                     "Argon2id cost t=%llu m=%llu is below the minimum "
                     "t=%llu m=%llu",
                     (unsigned long long)p->opslimit,
                     (unsigned long long)p->memlimit,
                     (unsigned long long)CFR_KDF_OPS_MIN,
                     (unsigned long long)CFR_KDF_MEM_MIN);
        goto out;
    }
    if (p->opslimit > CFR_KDF_OPS_MAX || p->memlimit > CFR_KDF_MEM_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "Argon2id cost t=%llu m=%llu is above the maximum "
                     "t=%llu m=%llu",
                     (unsigned long long)p->opslimit,
                     (unsigned long long)p->memlimit,
                     (unsigned long long)CFR_KDF_OPS_MAX,
                     (unsigned long long)CFR_KDF_MEM_MAX);
        goto out;
    }
out:
    return rc;
}

/*
 * Everything that can be checked without the passphrase (invariant 5), in
 * an order that gives the most useful error: size, identity, version,
 * lengths, checksum, then the fields the checksum vouches for.
 */
/*
 * Sets rc before recording, so that every failure path visibly leaves a
 * non-zero rc (the static analyzer cannot see that cfr_err_set returns
 * its code) and jumps out.
 */
#define HDR_FAIL(code, ...)                                                    \
    do {                                                                       \
        rc = (code);                                                           \
        CFR_ERR(err, rc, __VA_ARGS__);                                         \
        goto out;                                                              \
    } while (0)

static int
parse_header(const uint8_t *d, size_t len, struct kf_header *h,
             struct cfr_err *err)
{
    int rc = 0;
    uint8_t check[KF_CHECK_LEN];

    memset(h, 0, sizeof(*h));
    if (len > CFR_KEYFILE_MAX) {
        HDR_FAIL(CFR_ELIMIT, "key file of %zu bytes exceeds the %u-byte limit",
                 len, CFR_KEYFILE_MAX);
    }
    if (len < sizeof(KEYFILE_MAGIC) ||
        memcmp(d, KEYFILE_MAGIC, sizeof(KEYFILE_MAGIC)) != 0) {
        HDR_FAIL(CFR_ECORRUPT, "not a coffer key file (bad magic)");
    }
    if (len <= KF_VERSION || d[KF_VERSION] != KF_VERSION_1) {
        HDR_FAIL(len <= KF_VERSION ? CFR_ECORRUPT : CFR_EVERSION,
                 "key file version %d is not supported (this build "
                 "reads version %d)",
                 len <= KF_VERSION ? -1 : d[KF_VERSION], KF_VERSION_1);
    }
    if (len < KF_MIN_LEN) {
        HDR_FAIL(CFR_ECORRUPT,
                 "key file truncated: %zu bytes, at least %d needed", len,
                 KF_MIN_LEN);
    }
    h->ct_len = cfr_get_le32(d + KF_CTLEN);
    if (h->ct_len != len - KF_HEADER_LEN - KF_CHECK_LEN) {
        HDR_FAIL(CFR_ECORRUPT,
                 "key file length %zu does not match its ciphertext "
                 "length %zu (truncated or extended)",
                 len, h->ct_len);
    }
    CFR_ASSERT(crypto_generichash(check, sizeof(check), d, len - KF_CHECK_LEN,
                                  NULL, 0) == 0);
    if (sodium_memcmp(check, d + len - KF_CHECK_LEN, KF_CHECK_LEN) != 0) {
        HDR_FAIL(CFR_ECORRUPT, "key file damaged: checksum mismatch");
    }
    h->kind = d[KF_KIND];
    if (h->kind != CFR_KEYRING_FULL && h->kind != CFR_KEYRING_AGENT) {
        HDR_FAIL(CFR_EVERSION, "key file kind %d is not supported", h->kind);
    }
    if (d[KF_KDF] != KF_KDF_ARGON2ID) {
        HDR_FAIL(CFR_EVERSION, "key file KDF %d is not supported", d[KF_KDF]);
    }
    if (d[KF_RESERVED] != 0) {
        HDR_FAIL(CFR_ECORRUPT, "key file reserved byte is not zero");
    }
    h->params.opslimit = cfr_get_le64(d + KF_OPS);
    h->params.memlimit = cfr_get_le64(d + KF_MEM);
    if ((rc = check_params(&h->params, CFR_ECORRUPT, err)) != 0) {
        goto out;
    }
    if (payload_pairs(h->kind, h->ct_len - KF_TAG_LEN) == 0) {
        HDR_FAIL(CFR_ECORRUPT,
                 "key file ciphertext of %zu bytes fits no keyring", h->ct_len);
    }
    h->salt = d + KF_SALT;
    h->tenant_id = d + KF_TENANT;
    h->nonce = d + KF_NONCE;
    h->ct = d + KF_HEADER_LEN;
out:
    return rc;
}

#undef HDR_FAIL

void
cfr_keyfile_test_fix_checksum(uint8_t *data, size_t len)
{
    CFR_ASSERT(len >= KF_CHECK_LEN);
    CFR_ASSERT(crypto_generichash(data + len - KF_CHECK_LEN, KF_CHECK_LEN, data,
                                  len - KF_CHECK_LEN, NULL, 0) == 0);
}

/* Argon2id(passphrase, salt) into a new secret. Returns owned. */
static struct cfr_secret *
wrap_key_derive(const char *pass, size_t plen, const uint8_t *salt,
                const struct cfr_kdf_params *params, struct cfr_err *err)
{
    struct cfr_secret *key = cfr_secret_new(CFR_KEYFILE_WRAP_KEY_LEN, err);
    if (key == NULL) {
        goto out;
    }
    if (crypto_pwhash(cfr_secret_rw(key), CFR_KEYFILE_WRAP_KEY_LEN, pass, plen,
                      salt, params->opslimit, (size_t)params->memlimit,
                      crypto_pwhash_ALG_ARGON2ID13) != 0) {
        cfr_secret_free(key);
        key = NULL;
        CFR_ERR(err, CFR_ENOMEM,
                "Argon2id failed (out of memory for m=%llu bytes?)",
                (unsigned long long)params->memlimit);
        goto out;
    }
    cfr_secret_ro(key);
out:
    return key;
}

struct cfr_keyring *
cfr_keyring_decode_with_key(const uint8_t *data, size_t len,
                            const uint8_t wrap_key[CFR_KEYFILE_WRAP_KEY_LEN],
                            struct cfr_err *err)
{
    struct cfr_keyring *kr = NULL;
    struct cfr_secret *payload = NULL;
    struct kf_header h;

    if (cfr_crypto_init(err) != 0 || parse_header(data, len, &h, err) != 0) {
        goto out;
    }
    payload = cfr_secret_new(h.ct_len - KF_TAG_LEN, err);
    if (payload == NULL) {
        goto out;
    }
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            cfr_secret_rw(payload), NULL, NULL, h.ct, h.ct_len, data,
            KF_HEADER_LEN, h.nonce, wrap_key) != 0) {
        CFR_ERR(err, CFR_EAUTH,
                "wrong passphrase for this key file (or a deliberately "
                "altered file)");
        goto out;
    }
    kr = cfr_keyring_parse_payload(h.kind, cfr_secret_ro(payload),
                                   h.ct_len - KF_TAG_LEN, h.tenant_id, err);
out:
    cfr_secret_free(payload);
    return kr;
}

struct cfr_keyring *
cfr_keyring_decode(const uint8_t *data, size_t len, const char *passphrase,
                   size_t plen, struct cfr_err *err)
{
    struct cfr_keyring *kr = NULL;
    struct cfr_secret *key = NULL;
    struct kf_header h;

    if (cfr_crypto_init(err) != 0 || parse_header(data, len, &h, err) != 0) {
        goto out;
    }
    key = wrap_key_derive(passphrase, plen, h.salt, &h.params, err);
    if (key == NULL) {
        goto out;
    }
    kr = cfr_keyring_decode_with_key(data, len, cfr_secret_ro(key), err);
out:
    cfr_secret_free(key);
    return kr;
}

/*
 * Writes the header for kr with a fresh salt and nonce, then the sealed
 * payload and the checksum, into out. wrap_key NULL means derive it from
 * the passphrase and the new salt.
 */
static int
encode(const struct cfr_keyring *kr, const char *pass, size_t plen,
       const struct cfr_kdf_params *params, const uint8_t *wrap_key,
       struct cfr_buf *out, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_secret *payload = NULL;
    struct cfr_secret *key = NULL;
    struct cfr_kdf_params def;
    uint8_t *h;

    cfr_buf_reset(out);
    if (params == NULL) {
        cfr_kdf_params_default(&def);
        params = &def;
    }
    if ((rc = check_params(params, CFR_EINVAL, err)) != 0) {
        goto out;
    }
    if (wrap_key == NULL && plen == 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "refusing an empty passphrase");
        goto out;
    }
    payload = payload_encode(kr, err);
    if (payload == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    size_t plain_len = cfr_secret_len(payload);
    size_t total = KF_HEADER_LEN + plain_len + KF_TAG_LEN + KF_CHECK_LEN;
    if (total > CFR_KEYFILE_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "key file would exceed %u bytes",
                     CFR_KEYFILE_MAX);
        goto out;
    }
    if ((rc = cfr_buf_reserve(out, total, err)) != 0) {
        goto out;
    }
    h = out->data;
    memcpy(h + KF_MAGIC, KEYFILE_MAGIC, sizeof(KEYFILE_MAGIC));
    h[KF_VERSION] = KF_VERSION_1;
    h[KF_KIND] = (uint8_t)kr->kind;
    h[KF_KDF] = KF_KDF_ARGON2ID;
    h[KF_RESERVED] = 0;
    cfr_put_le64(h + KF_OPS, params->opslimit);
    cfr_put_le64(h + KF_MEM, params->memlimit);
    cfr_keys_random(h + KF_SALT, KF_SALT_LEN);
    memcpy(h + KF_TENANT, kr->tenant_id, CFR_TENANT_ID_LEN);
    cfr_keys_random(h + KF_NONCE, KF_NONCE_LEN);
    cfr_put_le32(h + KF_CTLEN, (uint32_t)(plain_len + KF_TAG_LEN));
    if (wrap_key == NULL) {
        key = wrap_key_derive(pass, plen, h + KF_SALT, params, err);
        if (key == NULL) {
            rc = err != NULL ? err->code : CFR_ENOMEM;
            goto out;
        }
        wrap_key = cfr_secret_ro(key);
    }
    CFR_ASSERT(crypto_aead_xchacha20poly1305_ietf_encrypt(
                   h + KF_HEADER_LEN, NULL, cfr_secret_ro(payload), plain_len,
                   h, KF_HEADER_LEN, NULL, h + KF_NONCE, wrap_key) == 0);
    CFR_ASSERT(crypto_generichash(h + total - KF_CHECK_LEN, KF_CHECK_LEN, h,
                                  total - KF_CHECK_LEN, NULL, 0) == 0);
    out->len = total;
out:
    if (rc != 0) {
        cfr_buf_reset(out);
    }
    cfr_secret_free(payload);
    cfr_secret_free(key);
    return rc;
}

int
cfr_keyring_encode(const struct cfr_keyring *kr, const char *passphrase,
                   size_t plen, const struct cfr_kdf_params *params,
                   struct cfr_buf *out, struct cfr_err *err)
{
    int rc = cfr_crypto_init(err);
    if (rc == 0) {
        rc = encode(kr, passphrase, plen, params, NULL, out, err);
    }
    return rc;
}

int
cfr_keyring_encode_with_key(const struct cfr_keyring *kr,
                            const struct cfr_kdf_params *params,
                            const uint8_t wrap_key[CFR_KEYFILE_WRAP_KEY_LEN],
                            struct cfr_buf *out, struct cfr_err *err)
{
    int rc = cfr_crypto_init(err);
    if (rc == 0) {
        rc = encode(kr, NULL, 0, params, wrap_key, out, err);
    }
    return rc;
}

/* write(2) all of p, retrying short writes and EINTR. */
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

/*
 * Atomic replace: a crash leaves either the old file or the new one, never
 * a torn key file (which would lose the tenant's data for good).
 */
static int
write_atomic(const char *path, const uint8_t *data, size_t len,
             struct cfr_err *err)
{
    int rc = 0;
    int fd = -1;
    int dfd = -1;
    char *tmp = NULL;
    char *dir = NULL;
    size_t plen = strlen(path);

    tmp = cfr_malloc(plen + sizeof(".tmp.XXXXXX"));
    dir = cfr_malloc(plen + 2);
    if (tmp == NULL || dir == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory for a path");
        goto out;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof(".tmp.XXXXXX"));
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        memcpy(dir, ".", 2);
    } else if (slash == path) {
        memcpy(dir, "/", 2);
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    /* mkstemp creates the file 0600 with O_EXCL, whatever the umask. */
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot create %s", tmp);
        goto out;
    }
    if (fchmod(fd, S_IRUSR | S_IWUSR) != 0 || write_all(fd, data, len) != 0 ||
        fsync(fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot write %s", tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot close %s", tmp);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot rename %s to %s", tmp, path);
        goto out;
    }
    tmp[0] = '\0'; /* renamed: nothing to clean up */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot sync directory %s", dir);
        goto out;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (dfd >= 0) {
        close(dfd);
    }
    if (tmp != NULL && tmp[0] != '\0' && rc != 0) {
        unlink(tmp);
    }
    cfr_free(tmp);
    cfr_free(dir);
    return rc;
}

/*
 * Reads a key file into out (cap CFR_KEYFILE_MAX + 1, so an oversized file
 * is noticed even if it grows while we read).
 */
static int
read_keyfile(const char *path, struct cfr_buf *out, struct cfr_err *err)
{
    int rc = 0;
    struct stat st;
    /* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                           "cannot open key file %s", path);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot stat key file %s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc =
            CFR_ERR(err, CFR_EINVAL, "key file %s is not a regular file", path);
        goto out;
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "key file %s is accessible by group or others (mode "
                     "%04o); run chmod 600 on it",
                     path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size > (off_t)CFR_KEYFILE_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "key file %s of %lld bytes exceeds the %u-byte limit",
                     path, (long long)st.st_size, CFR_KEYFILE_MAX);
        goto out;
    }
    cfr_buf_init(out, (size_t)CFR_KEYFILE_MAX + 1);
    for (;;) {
        if ((rc = cfr_buf_reserve(out, 4096, err)) != 0) {
            rc = CFR_ERR(err, CFR_ELIMIT, "key file %s exceeds %u bytes", path,
                         CFR_KEYFILE_MAX);
            goto out;
        }
        ssize_t r = read(fd, out->data + out->len, out->alloc - out->len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot read key file %s", path);
            goto out;
        }
        if (r == 0) {
            break;
        }
        out->len += (size_t)r;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rc != 0) {
        cfr_buf_fini(out);
    }
    return rc;
}

int
cfr_keyring_save(const struct cfr_keyring *kr, const char *path,
                 const char *passphrase, size_t plen,
                 const struct cfr_kdf_params *params, struct cfr_err *err)
{
    int rc;
    struct cfr_buf b;

    cfr_buf_init(&b, CFR_KEYFILE_MAX);
    if ((rc = cfr_keyring_encode(kr, passphrase, plen, params, &b, err)) != 0) {
        goto out;
    }
    rc = write_atomic(path, b.data, b.len, err);
out:
    cfr_buf_fini(&b);
    return rc;
}

struct cfr_keyring *
cfr_keyring_load(const char *path, const char *passphrase, size_t plen,
                 struct cfr_err *err)
{
    struct cfr_keyring *kr = NULL;
    struct cfr_buf b;

    cfr_buf_init(&b, 0);
    if (read_keyfile(path, &b, err) != 0) {
        goto out;
    }
    kr = cfr_keyring_decode(b.data, b.len, passphrase, plen, err);
out:
    cfr_buf_fini(&b);
    return kr;
}

int
cfr_keyring_change_passphrase(const char *path, const char *old_pass,
                              size_t old_len, const char *new_pass,
                              size_t new_len,
                              const struct cfr_kdf_params *params,
                              struct cfr_err *err)
{
    int rc = 0;
    struct cfr_keyring *kr = NULL;
    struct cfr_buf b;
    struct kf_header h;

    cfr_buf_init(&b, 0);
    if ((rc = read_keyfile(path, &b, err)) != 0) {
        goto out;
    }
    if ((rc = parse_header(b.data, b.len, &h, err)) != 0) {
        goto out;
    }
    struct cfr_kdf_params keep = h.params;
    kr = cfr_keyring_decode(b.data, b.len, old_pass, old_len, err);
    if (kr == NULL) {
        rc = err != NULL ? err->code : CFR_EAUTH;
        goto out;
    }
    rc = cfr_keyring_save(kr, path, new_pass, new_len,
                          params != NULL ? params : &keep, err);
    if (rc == 0) {
        cfr_log(CFR_LOG_INFO, "keys.passphrase_changed", "kind=%s keys=%zu",
                kr->kind == CFR_KEYRING_FULL ? "full" : "agent", kr->npairs);
    }
out:
    cfr_keyring_free(kr);
    cfr_buf_fini(&b);
    return rc;
}

int
cfr_keyring_export(const struct cfr_keyring *kr, const char *path,
                   const char *escrow_pass, size_t plen,
                   const struct cfr_kdf_params *params, struct cfr_err *err)
{
    int rc = 0;
    if (kr->kind != CFR_KEYRING_FULL) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "escrow needs the full keyring; an agent view cannot "
                     "restore anything");
        goto out;
    }
    rc = cfr_keyring_save(kr, path, escrow_pass, plen, params, err);
out:
    return rc;
}

struct cfr_keyring *
cfr_keyring_import(const char *path, const char *escrow_pass, size_t plen,
                   struct cfr_err *err)
{
    struct cfr_keyring *kr = cfr_keyring_load(path, escrow_pass, plen, err);
    if (kr != NULL && kr->kind != CFR_KEYRING_FULL) {
        cfr_keyring_free(kr);
        kr = NULL;
        CFR_ERR(err, CFR_EINVAL, "%s is an agent key file, not an escrow copy",
                path);
    }
    return kr;
}
