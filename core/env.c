/*
 * env.c - sealing sessions, openers and the envelope.
 *
 * The only place plaintext meets ciphertext. It never logs payloads, IDs
 * of payloads or keys.
 *
 * Invariants:
 *  1. A session never holds a secret that opens data sealed by another
 *     session: its ephemeral X25519 secret is wiped inside cfr_session_new,
 *     and its session key (sodium_malloc, read-only) dies with the session.
 *  2. Opening needs a full keyring; the X25519 step runs inside keys.c
 *     (cfr_keyring_open_session_key), so secret keys never reach this file.
 *  3. Every header byte is in the associated data, together with the
 *     tenant ID and the object ID; cfr_env_open checks the header's shape
 *     before any key work, the tag before any decryption (libsodium's
 *     decrypt verifies first), and sizes before any allocation.
 *  4. Plaintext reaches the caller only after authentication and, for
 *     chunks, after the re-hash; on any failure the output is wiped and
 *     left empty.
 *  5. No allocation is sized from an untrusted field without a cap: the
 *     ciphertext length comes from the input length, and a zstd frame's
 *     declared size must be within the caller's max_plain.
 *  6. A seal returns success only after the envelope was opened again with
 *     the session key and matched its input (unless verification was
 *     switched off for a benchmark).
 */
#include "env.h"

#include <sodium.h>
#include <string.h>
#include <zstd.h>

#include "env_int.h"  /* the test-only sealer defined here */
#include "id.h"       /* chunk re-hash */
#include "keys_int.h" /* session-key construction, random hook */
#include "log.h"      /* the verify-off warning */
#include "mem.h"      /* handles */
#include "secret.h"   /* session keys in sodium_malloc memory */

/* Header offsets (FORMAT.md, "Envelope"). */
enum {
    EH_VERSION = 0,
    EH_TYPE = 1,
    EH_COMP = 2,
    EH_RESERVED = 3,
    EH_KEY_ID = 4,
    EH_SESSION = 8,
    EH_NONCE = 40,
    EH_CT = 64,
};

/* Associated data: tenant_id(16) || object ID(32) || header(64). */
#define AD_LEN (CFR_TENANT_ID_LEN + 32 + CFR_ENV_HEADER_LEN)

/* Session keys an opener remembers; a restore touches few sessions. */
#define OPENER_CACHE 64

struct cfr_session {
    uint8_t tenant_id[CFR_TENANT_ID_LEN];
    uint32_t key_id;
    uint8_t eph_pk[CFR_ENV_SESSION_LEN];
    struct cfr_secret *keys; /* session key | chunk-ID key, read-only */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    struct cfr_buf vct;    /* verify: the decrypted frame */
    struct cfr_buf vplain; /* verify: the decompressed frame */
    bool verify;
};

struct cache_entry {
    uint32_t key_id;
    uint8_t eph_pk[CFR_ENV_SESSION_LEN];
    uint64_t used; /* tick of last use, for eviction */
};

struct cfr_opener {
    const struct cfr_keyring *kr; /* borrowed */
    struct cfr_secret *keys;      /* OPENER_CACHE session keys */
    struct cache_entry entries[OPENER_CACHE];
    size_t n;
    uint64_t tick;
    ZSTD_DCtx *dctx;
    struct cfr_buf frame; /* the decrypted zstd frame */
};

int
cfr_env_peek(const uint8_t *env, size_t len, struct cfr_env_header *hdr_r,
             struct cfr_err *err)
{
    int rc = 0;

    memset(hdr_r, 0, sizeof(*hdr_r));
    if (len >= 1 && env[EH_VERSION] != CFR_ENV_VERSION) {
        rc = CFR_ERR(err, CFR_EVERSION,
                     "envelope version %d is not supported (this build "
                     "reads version %d)",
                     env[EH_VERSION], CFR_ENV_VERSION);
        goto out;
    }
    if (len < CFR_ENV_OVERHEAD) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "envelope truncated: %zu bytes, at least %d needed", len,
                     CFR_ENV_OVERHEAD);
        goto out;
    }
    if (env[EH_TYPE] == 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "envelope object type 0 is invalid");
        goto out;
    }
    if (env[EH_COMP] != CFR_ENV_COMP_NONE &&
        env[EH_COMP] != CFR_ENV_COMP_ZSTD) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "envelope compression %d is unknown",
                     env[EH_COMP]);
        goto out;
    }
    if (env[EH_RESERVED] != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "envelope reserved byte is not zero");
        goto out;
    }
    hdr_r->version = env[EH_VERSION];
    hdr_r->type = env[EH_TYPE];
    hdr_r->compression = env[EH_COMP];
    hdr_r->key_id = cfr_get_le32(env + EH_KEY_ID);
    memcpy(hdr_r->session, env + EH_SESSION, CFR_ENV_SESSION_LEN);
    memcpy(hdr_r->nonce, env + EH_NONCE, CFR_ENV_NONCE_LEN);
    hdr_r->ct_len = len - CFR_ENV_HEADER_LEN;
out:
    return rc;
}

static void
build_ad(uint8_t ad[AD_LEN], const uint8_t *tenant_id, const uint8_t *id,
         const uint8_t *header)
{
    memcpy(ad, tenant_id, CFR_TENANT_ID_LEN);
    memcpy(ad + CFR_TENANT_ID_LEN, id, 32);
    memcpy(ad + CFR_TENANT_ID_LEN + 32, header, CFR_ENV_HEADER_LEN);
}

struct cfr_session *
cfr_session_new(const struct cfr_keyring *kr, int level, struct cfr_err *err)
{
    struct cfr_session *s = NULL;
    bool ok = false;
    uint8_t eph_sk[32];
    uint8_t shared[32];
    uint8_t tenant_pk[CFR_PUBKEY_LEN];

    if (cfr_crypto_init(err) != 0) {
        goto out;
    }
    if (level == 0) {
        level = CFR_ENV_LEVEL_DEFAULT;
    }
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        CFR_ERR(err, CFR_EINVAL, "zstd level %d is outside %d..%d", level,
                ZSTD_minCLevel(), ZSTD_maxCLevel());
        goto out;
    }
    s = cfr_calloc(1, sizeof(*s));
    if (s == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for a session");
        goto out;
    }
    s->verify = true;
    cfr_buf_init(&s->vct, CFR_ENV_PLAIN_MAX);
    cfr_buf_init(&s->vplain, CFR_ENV_PLAIN_MAX);
    s->cctx = ZSTD_createCCtx();
    s->dctx = ZSTD_createDCtx();
    if (s->cctx == NULL || s->dctx == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for zstd contexts");
        goto out;
    }
    /* The AEAD tag covers integrity, so zstd's own checksum is dead
     * weight; the content size lets the opener bound its allocation. */
    if (ZSTD_isError(
            ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 0)) ||
        ZSTD_isError(
            ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_contentSizeFlag, 1))) {
        CFR_ERR(err, CFR_EINTERNAL, "zstd refused its parameters");
        goto out;
    }
    s->keys = cfr_secret_new(64, err);
    if (s->keys == NULL) {
        goto out;
    }
    s->key_id = cfr_keyring_current_key_id(kr);
    if (cfr_keyring_public_key(kr, s->key_id, tenant_pk, NULL, err) != 0) {
        goto out;
    }
    memcpy(s->tenant_id, cfr_keyring_tenant_id(kr), CFR_TENANT_ID_LEN);
    cfr_keys_random(eph_sk, sizeof(eph_sk));
    CFR_ASSERT(crypto_scalarmult_base(s->eph_pk, eph_sk) == 0);
    if (crypto_scalarmult(shared, eph_sk, tenant_pk) != 0) {
        CFR_ERR(err, CFR_ECORRUPT, "tenant public key %u is a low-order point",
                (unsigned)s->key_id);
        goto out;
    }
    uint8_t *keys = cfr_secret_rw(s->keys);
    if (cfr_keys_session_key(shared, s->eph_pk, tenant_pk, keys, err) != 0) {
        goto out;
    }
    memcpy(keys + 32, cfr_keyring_chunk_key(kr), 32);
    cfr_secret_ro(s->keys);
    ok = true;
out:
    sodium_memzero(eph_sk, sizeof(eph_sk));
    sodium_memzero(shared, sizeof(shared));
    if (!ok) {
        cfr_session_free(s);
        s = NULL;
    }
    return s;
}

void
cfr_session_free(struct cfr_session *s)
{
    if (s == NULL) {
        return;
    }
    cfr_secret_free(s->keys);
    ZSTD_freeCCtx(s->cctx);
    ZSTD_freeDCtx(s->dctx);
    /* The scratch buffers held plaintext during verification. */
    if (s->vct.data != NULL) {
        sodium_memzero(s->vct.data, s->vct.alloc);
    }
    if (s->vplain.data != NULL) {
        sodium_memzero(s->vplain.data, s->vplain.alloc);
    }
    cfr_buf_fini(&s->vct);
    cfr_buf_fini(&s->vplain);
    cfr_free(s);
}

void
cfr_session_set_verify(struct cfr_session *s, bool on)
{
    if (!on && s->verify) {
        cfr_log(CFR_LOG_WARN, "env.verify_off",
                "key_id=%u seal verification disabled (benchmarks only)",
                (unsigned)s->key_id);
    }
    s->verify = on;
}

const uint8_t *
cfr_session_public(const struct cfr_session *s)
{
    return s->eph_pk;
}

uint32_t
cfr_session_key_id(const struct cfr_session *s)
{
    return s->key_id;
}

/*
 * Opens what cfr_env_seal just wrote with the session key and checks it
 * against the input (invariant 6). Works without the tenant secret, which
 * the agent never has.
 */
static int
verify_sealed(struct cfr_session *s, enum cfr_env_type type,
              const uint8_t id[32], const void *plain, size_t len,
              const uint8_t *env, size_t env_len, struct cfr_err *err)
{
    int rc = 0;
    uint8_t ad[AD_LEN];
    uint8_t again[32];
    const uint8_t *keys = cfr_secret_ro(s->keys);
    size_t ct_len = env_len - CFR_ENV_HEADER_LEN;
    const uint8_t *got;

    cfr_buf_reset(&s->vct);
    if ((rc = cfr_buf_reserve(&s->vct, ct_len - CFR_ENV_TAG_LEN, err)) != 0) {
        goto out;
    }
    build_ad(ad, s->tenant_id, id, env);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            s->vct.data, NULL, NULL, env + EH_CT, ct_len, ad, sizeof(ad),
            env + EH_NONCE, keys) != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "seal verification: fresh envelope does not open");
        goto out;
    }
    got = s->vct.data;
    if (env[EH_COMP] == CFR_ENV_COMP_ZSTD) {
        cfr_buf_reset(&s->vplain);
        if ((rc = cfr_buf_reserve(&s->vplain, len, err)) != 0) {
            goto out;
        }
        size_t n = ZSTD_decompressDCtx(s->dctx, s->vplain.data, len,
                                       s->vct.data, ct_len - CFR_ENV_TAG_LEN);
        if (ZSTD_isError(n) || n != len) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "seal verification: zstd frame does not decompress "
                         "to the input");
            goto out;
        }
        got = s->vplain.data;
    } else if (ct_len - CFR_ENV_TAG_LEN != len) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "seal verification: raw payload has the wrong length");
        goto out;
    }
    if (type == CFR_ENV_CHUNK) {
        /* Re-hash, as the restore will: a chunk whose bytes do not match
         * its ID is lost data, whatever caused it. */
        cfr_id_chunk(keys + 32, got, len, again);
        if (!cfr_id_equal(again, id)) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "seal verification: chunk does not hash to its ID");
            goto out;
        }
    } else if (len > 0 && memcmp(got, plain, len) != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "seal verification: opened object differs from input");
        goto out;
    }
out:
    return rc;
}

/*
 * Writes the header in front of the body already at out->data + 64, draws
 * the nonce and encrypts the body in place. out->alloc must hold the body
 * and the tag.
 */
static void
seal_body(struct cfr_session *s, uint8_t type, const uint8_t id[32],
          uint8_t comp, size_t body, struct cfr_buf *out)
{
    uint8_t ad[AD_LEN];
    uint8_t *h = out->data;

    h[EH_VERSION] = CFR_ENV_VERSION;
    h[EH_TYPE] = type;
    h[EH_COMP] = comp;
    h[EH_RESERVED] = 0;
    cfr_put_le32(h + EH_KEY_ID, s->key_id);
    memcpy(h + EH_SESSION, s->eph_pk, CFR_ENV_SESSION_LEN);
    cfr_keys_random(h + EH_NONCE, CFR_ENV_NONCE_LEN);
    build_ad(ad, s->tenant_id, id, h);
    /* In place: libsodium's AEAD allows the message and ciphertext to be
     * the same buffer. */
    CFR_ASSERT(crypto_aead_xchacha20poly1305_ietf_encrypt(
                   h + EH_CT, NULL, h + EH_CT, body, ad, sizeof(ad), NULL,
                   h + EH_NONCE, cfr_secret_ro(s->keys)) == 0);
    out->len = CFR_ENV_OVERHEAD + body;
}

int
cfr_env_seal(struct cfr_session *s, enum cfr_env_type type,
             const uint8_t id[32], const void *plain, size_t len,
             struct cfr_buf *out, struct cfr_err *err)
{
    int rc = 0;
    uint8_t *h;
    size_t body;
    uint8_t comp = CFR_ENV_COMP_NONE;

    cfr_buf_reset(out);
    if (type < 1 || type > 255) {
        rc = CFR_ERR(err, CFR_EINVAL, "object type %d is invalid", (int)type);
        goto out;
    }
    if (len > CFR_ENV_PLAIN_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "object of %zu bytes exceeds the envelope limit %zu", len,
                     CFR_ENV_PLAIN_MAX);
        goto out;
    }
    /* Room for zstd's worst case lets it write straight into out (its
     * fast path); the raw copy fits in the same space. */
    size_t bound = ZSTD_compressBound(len);
    size_t room = bound > len ? bound : len;
    if ((rc = cfr_buf_reserve(out, CFR_ENV_OVERHEAD + room, err)) != 0) {
        goto out;
    }
    h = out->data;
    body = len;
    if (len > 0) {
        size_t n = ZSTD_compress2(s->cctx, h + EH_CT, room, plain, len);
        if (ZSTD_isError(n)) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "zstd: %s", ZSTD_getErrorName(n));
            goto out;
        }
        if (n < len) {
            comp = CFR_ENV_COMP_ZSTD;
            body = n;
        }
    }
    if (comp == CFR_ENV_COMP_NONE && len > 0) {
        memcpy(h + EH_CT, plain, len);
    }
    seal_body(s, (uint8_t)type, id, comp, body, out);
    if (s->verify) {
        rc = verify_sealed(s, type, id, plain, len, out->data, out->len, err);
    }
out:
    if (rc != 0) {
        cfr_buf_reset(out);
    }
    return rc;
}

int
cfr_env_test_seal_payload(struct cfr_session *s, uint8_t type,
                          const uint8_t id[32], uint8_t comp,
                          const void *payload, size_t len, struct cfr_buf *out,
                          struct cfr_err *err)
{
    int rc = 0;

    cfr_buf_reset(out);
    if (len > CFR_ENV_PLAIN_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "payload too large");
        goto out;
    }
    if ((rc = cfr_buf_reserve(out, CFR_ENV_OVERHEAD + len, err)) != 0) {
        goto out;
    }
    if (len > 0) {
        memcpy(out->data + EH_CT, payload, len);
    }
    seal_body(s, type, id, comp, len, out);
out:
    return rc;
}

struct cfr_opener *
cfr_opener_new(const struct cfr_keyring *kr, struct cfr_err *err)
{
    struct cfr_opener *op = NULL;
    bool ok = false;

    if (!cfr_keyring_can_open(kr)) {
        CFR_ERR(err, CFR_EINVAL,
                "an agent keyring is write-only: it cannot open envelopes");
        goto out;
    }
    if (cfr_crypto_init(err) != 0) {
        goto out;
    }
    op = cfr_calloc(1, sizeof(*op));
    if (op == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for an opener");
        goto out;
    }
    op->kr = kr;
    cfr_buf_init(&op->frame, CFR_ENV_PLAIN_MAX);
    op->dctx = ZSTD_createDCtx();
    if (op->dctx == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for a zstd context");
        goto out;
    }
    op->keys = cfr_secret_new(OPENER_CACHE * CFR_SESSION_KEY_LEN, err);
    if (op->keys == NULL) {
        goto out;
    }
    cfr_secret_ro(op->keys);
    ok = true;
out:
    if (!ok) {
        cfr_opener_free(op);
        op = NULL;
    }
    return op;
}

void
cfr_opener_free(struct cfr_opener *op)
{
    if (op == NULL) {
        return;
    }
    cfr_secret_free(op->keys);
    ZSTD_freeDCtx(op->dctx);
    if (op->frame.data != NULL) {
        sodium_memzero(op->frame.data, op->frame.alloc);
    }
    cfr_buf_fini(&op->frame);
    cfr_free(op);
}

/*
 * Returns the cached session key for (key_id, eph_pk), deriving and caching
 * it (evicting the least recently used) when absent.
 */
static int
session_key(struct cfr_opener *op, uint32_t key_id, const uint8_t *eph_pk,
            const uint8_t **key_r, struct cfr_err *err)
{
    int rc = 0;
    size_t slot = 0;
    uint8_t fresh[CFR_SESSION_KEY_LEN];

    op->tick++;
    for (size_t i = 0; i < op->n; i++) {
        struct cache_entry *e = &op->entries[i];
        if (e->key_id == key_id &&
            memcmp(e->eph_pk, eph_pk, CFR_ENV_SESSION_LEN) == 0) {
            e->used = op->tick;
            *key_r = cfr_secret_ro(op->keys) + i * CFR_SESSION_KEY_LEN;
            goto out;
        }
    }
    if ((rc = cfr_keyring_open_session_key(op->kr, key_id, eph_pk, fresh,
                                           err)) != 0) {
        goto out;
    }
    if (op->n < OPENER_CACHE) {
        slot = op->n++;
    } else {
        for (size_t i = 1; i < OPENER_CACHE; i++) {
            if (op->entries[i].used < op->entries[slot].used) {
                slot = i;
            }
        }
    }
    op->entries[slot].key_id = key_id;
    memcpy(op->entries[slot].eph_pk, eph_pk, CFR_ENV_SESSION_LEN);
    op->entries[slot].used = op->tick;
    uint8_t *keys = cfr_secret_rw(op->keys);
    memcpy(keys + slot * CFR_SESSION_KEY_LEN, fresh, CFR_SESSION_KEY_LEN);
    *key_r = cfr_secret_ro(op->keys) + slot * CFR_SESSION_KEY_LEN;
out:
    sodium_memzero(fresh, sizeof(fresh));
    return rc;
}

/* Decompresses one authenticated zstd frame into out, bounded by max. */
static int
inflate_frame(struct cfr_opener *op, const uint8_t *src, size_t n, size_t max,
              struct cfr_buf *out, struct cfr_err *err)
{
    int rc = 0;
    unsigned long long declared = ZSTD_getFrameContentSize(src, n);

    if (declared == ZSTD_CONTENTSIZE_ERROR ||
        declared == ZSTD_CONTENTSIZE_UNKNOWN) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "envelope holds no zstd frame with a known size");
        goto out;
    }
    if (declared > max) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "envelope declares %llu plaintext bytes, limit is %zu",
                     declared, max);
        goto out;
    }
    /* Exactly one frame: trailing frames or bytes would be unbounded. */
    size_t framed = ZSTD_findFrameCompressedSize(src, n);
    if (ZSTD_isError(framed) || framed != n) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "envelope payload is not exactly one zstd frame");
        goto out;
    }
    if ((rc = cfr_buf_reserve(out, (size_t)declared, err)) != 0) {
        goto out;
    }
    size_t got =
        ZSTD_decompressDCtx(op->dctx, out->data, (size_t)declared, src, n);
    if (ZSTD_isError(got) || got != declared) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "envelope zstd frame is corrupt");
        goto out;
    }
    out->len = got;
out:
    return rc;
}

int
cfr_env_open(struct cfr_opener *op, enum cfr_env_type type,
             const uint8_t id[32], const uint8_t *env, size_t len,
             size_t max_plain, struct cfr_buf *plain_out, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_env_header h;
    const uint8_t *key = NULL;
    uint8_t ad[AD_LEN];
    uint8_t again[32];
    size_t body;

    cfr_buf_reset(plain_out);
    if ((rc = cfr_env_peek(env, len, &h, err)) != 0) {
        goto out;
    }
    if (h.type != (unsigned)type) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "envelope holds object type %d, expected %d", h.type,
                     (int)type);
        goto out;
    }
    if (max_plain > CFR_ENV_PLAIN_MAX) {
        max_plain = CFR_ENV_PLAIN_MAX;
    }
    body = h.ct_len - CFR_ENV_TAG_LEN;
    /* A frame is only stored when smaller than its plaintext, so either
     * way the body never exceeds the plaintext limit. */
    if (body > max_plain) {
        rc = CFR_ERR(err, CFR_ELIMIT,
                     "envelope payload of %zu bytes exceeds the limit %zu",
                     body, max_plain);
        goto out;
    }
    if ((rc = session_key(op, h.key_id, h.session, &key, err)) != 0) {
        goto out;
    }
    build_ad(ad, cfr_keyring_tenant_id(op->kr), id, env);
    struct cfr_buf *dst =
        h.compression == CFR_ENV_COMP_ZSTD ? &op->frame : plain_out;
    cfr_buf_reset(dst);
    if ((rc = cfr_buf_reserve(dst, body, err)) != 0) {
        goto out;
    }
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            dst->data, NULL, NULL, env + EH_CT, h.ct_len, ad, sizeof(ad),
            h.nonce, key) != 0) {
        rc = CFR_ERR(err, CFR_EAUTH,
                     "envelope does not authenticate (altered, moved to "
                     "another ID or type, or another tenant's)");
        goto out;
    }
    dst->len = body;
    if (h.compression == CFR_ENV_COMP_ZSTD) {
        rc = inflate_frame(op, op->frame.data, body, max_plain, plain_out, err);
        if (rc != 0) {
            goto out;
        }
    }
    if (type == CFR_ENV_CHUNK) {
        cfr_id_chunk(cfr_keyring_chunk_key(op->kr), plain_out->data,
                     plain_out->len, again);
        if (!cfr_id_equal(again, id)) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "chunk plaintext does not hash to its ID");
            goto out;
        }
    }
out:
    if (rc != 0 && plain_out->data != NULL) {
        sodium_memzero(plain_out->data, plain_out->alloc);
        cfr_buf_reset(plain_out);
    }
    return rc;
}
