/*
 * env.h - the envelope: seal and open every stored object.
 *
 * An envelope (v1, docs/FORMAT.md) is a 64-byte header (version,
 * object type, compression, key_id, the sealing session's ephemeral X25519
 * public key, a random 24-byte nonce) followed by the XChaCha20-Poly1305
 * ciphertext of the object, raw or as one zstd frame, and its 16-byte tag.
 * The associated data is tenant_id || object ID || the whole header, so a
 * vault cannot move an envelope to another ID, type or tenant, or alter any
 * header byte, without the open failing.
 *
 * Two sides, and no API crosses from one to the other:
 *  - a struct cfr_session seals. It is made from a full or agent keyring and
 *    needs only the tenant's current public key: it draws an ephemeral key
 *    pair, derives the session key with the tenant public key, wipes the
 *    ephemeral secret at once, and keeps the session key until it is freed.
 *    Before returning, every seal is opened again with the session key,
 *    decompressed and re-hashed (chunks) or compared (other types), so
 *    compressor or cipher corruption is caught before anything is
 *    acknowledged. There is no function that opens with a session.
 *  - a struct cfr_opener opens. It needs a full keyring (the X25519 secret
 *    keys); an agent keyring is refused. It caches the session keys it
 *    derives, by key_id and session public key, so a restore of millions of
 *    chunks from a few runs does one X25519 per run, not per chunk.
 *
 * Thread safety: a session or an opener owns zstd contexts and scratch
 * buffers and is single-threaded; make one per worker thread (each worker's
 * session then has its own ephemeral key, which costs nothing). Many
 * sessions and openers may share one keyring.
 */
#ifndef CFR_ENV_H
#define CFR_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"  /* struct cfr_buf outputs */
#include "err.h"  /* struct cfr_err */
#include "keys.h" /* struct cfr_keyring */

#define CFR_ENV_VERSION     1
#define CFR_ENV_HEADER_LEN  64
#define CFR_ENV_TAG_LEN     16
#define CFR_ENV_OVERHEAD    (CFR_ENV_HEADER_LEN + CFR_ENV_TAG_LEN)
#define CFR_ENV_NONCE_LEN   24
#define CFR_ENV_SESSION_LEN 32
/* The largest object any envelope may hold, sealed or opened. */
#define CFR_ENV_PLAIN_MAX     ((size_t)64 << 20)
#define CFR_ENV_LEVEL_DEFAULT 3

/* Object types; values are frozen, new types take new values. */
enum cfr_env_type {
    CFR_ENV_CHUNK = 1,
    CFR_ENV_MANIFEST_PAGE = 2,
    CFR_ENV_SNAPSHOT_HEADER = 3,
};

enum cfr_env_compression {
    CFR_ENV_COMP_NONE = 0,
    CFR_ENV_COMP_ZSTD = 1,
};

/* An envelope header as cfr_env_peek reads it, without any key. */
struct cfr_env_header {
    uint8_t version;
    uint8_t type;
    uint8_t compression;
    uint32_t key_id;
    uint8_t session[CFR_ENV_SESSION_LEN];
    uint8_t nonce[CFR_ENV_NONCE_LEN];
    size_t ct_len; /* ciphertext bytes after the header, tag included */
};

struct cfr_session;
struct cfr_opener;

/*
 * Parses and bounds-checks a header without keys (vaults, tools). Checks
 * the length (CFR_ECORRUPT when shorter than CFR_ENV_OVERHEAD), the version
 * (CFR_EVERSION), a non-zero type, a known compression and the reserved
 * byte (CFR_ECORRUPT). Authenticates nothing. Borrows env.
 */
int cfr_env_peek(const uint8_t *env, size_t len, struct cfr_env_header *hdr_r,
                 struct cfr_err *err);

/*
 * Returns owned: a sealing session for kr's current key pair, compressing
 * at zstd level (0 means CFR_ENV_LEVEL_DEFAULT; negative levels are zstd's
 * fast levels). kr may be full or agent and may be freed before the
 * session: the session copies what it needs.
 */
struct cfr_session *cfr_session_new(const struct cfr_keyring *kr, int level,
                                    struct cfr_err *err);
/* Wipes the session key and frees; accepts NULL. */
void cfr_session_free(struct cfr_session *sess);

/*
 * FOR BENCHMARKS ONLY. Turns verify-after-seal off (on by default), which
 * lets corrupt output from a compressor or cipher bug be stored and
 * acknowledged. Logged at WARN when turned off. Never expose it as an
 * agent option.
 */
void cfr_session_set_verify(struct cfr_session *sess, bool on);

/* The session's ephemeral public key and the key_id it seals for. */
const uint8_t *cfr_session_public(const struct cfr_session *sess);
uint32_t cfr_session_key_id(const struct cfr_session *sess);

/*
 * Seals plain (len bytes, at most CFR_ENV_PLAIN_MAX) as an object of type
 * with the given ID, replacing out's contents with the envelope. For
 * chunks, id must be the chunk ID of plain (cfr_keyring_chunk_id): the
 * verification re-hashes and refuses a mismatch. Stores a zstd frame when
 * it is smaller than plain, else plain itself. out's cap must allow
 * len + CFR_ENV_OVERHEAD + a little for zstd's worst case (use
 * CFR_ENV_PLAIN_MAX + 1 MiB for any input). Borrows plain.
 * Errors: CFR_ELIMIT, CFR_ENOMEM, CFR_ECORRUPT (verification failed: the
 * envelope must not be stored), CFR_EINVAL.
 */
int cfr_env_seal(struct cfr_session *sess, enum cfr_env_type type,
                 const uint8_t id[32], const void *plain, size_t len,
                 struct cfr_buf *out, struct cfr_err *err);

/*
 * Returns owned: an opener for envelopes sealed for any key pair of kr.
 * CFR_EINVAL for an agent keyring, which cannot open. kr is borrowed and
 * must outlive the opener.
 */
struct cfr_opener *cfr_opener_new(const struct cfr_keyring *kr,
                                  struct cfr_err *err);
/* Wipes cached session keys and scratch space and frees; accepts NULL. */
void cfr_opener_free(struct cfr_opener *op);

/*
 * Opens env (len bytes) expected to be an object of type with the given
 * ID, replacing plain_out's contents with the plaintext. max_plain bounds
 * the plaintext (CFR_ELIMIT beyond it; never allocates more); chunks are
 * re-hashed and must match id. On any error plain_out is left empty and
 * nothing unauthenticated was ever written to it.
 * Errors: CFR_EAUTH (wrong tenant, unknown key_id, tampered envelope, moved
 * to another ID or type), CFR_ECORRUPT (malformed, type mismatch, bad zstd
 * frame, chunk hash mismatch), CFR_EVERSION, CFR_ELIMIT, CFR_ENOMEM.
 */
int cfr_env_open(struct cfr_opener *op, enum cfr_env_type type,
                 const uint8_t id[32], const uint8_t *env, size_t len,
                 size_t max_plain, struct cfr_buf *plain_out,
                 struct cfr_err *err);

#endif /* CFR_ENV_H */
