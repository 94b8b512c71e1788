/*
 * keys_int.h - what env.c, the tests and the fuzzers need from keys.c and
 * nobody else may use.
 *
 * Not installed and not part of the public API. Three groups:
 *  - the session-key construction and the opener's half of it, so that the
 *    X25519 secret keys never leave keys.c;
 *  - a randomness hook that lets known-answer tests fix every random draw
 *    (salts, nonces, keys), so a frozen vector can be re-encoded byte for
 *    byte; production code never sets it;
 *  - the key-file decoder split at the KDF, so a fuzzer can reach the
 *    ciphertext and payload parsers without paying for Argon2 per input.
 */
#ifndef CFR_KEYS_INT_H
#define CFR_KEYS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keys.h"

#define CFR_SESSION_KEY_LEN      32
#define CFR_KEYFILE_WRAP_KEY_LEN 32

/*
 * The session key both sides derive (docs/FORMAT.md):
 *   BLAKE2b-256(key = X25519 shared secret,
 *               msg = "coffer session v1" || eph_pk || tenant_pk)
 * Refuses (CFR_EAUTH) an all-zero shared secret, i.e. a low-order point.
 * key_r is written only on success; everything else is wiped.
 */
int cfr_keys_session_key(const uint8_t shared[32], const uint8_t eph_pk[32],
                         const uint8_t tenant_pk[32],
                         uint8_t key_r[CFR_SESSION_KEY_LEN],
                         struct cfr_err *err);

/*
 * The opening side: X25519(tenant secret of key_id, eph_pk), then the
 * construction above. Full keyrings only (CFR_EINVAL otherwise);
 * CFR_EAUTH when kr has no pair with key_id or eph_pk is a low-order
 * point. Thread-safe (serialises on the keyring's mutex).
 */
int cfr_keyring_open_session_key(const struct cfr_keyring *kr, uint32_t key_id,
                                 const uint8_t eph_pk[32],
                                 uint8_t key_r[CFR_SESSION_KEY_LEN],
                                 struct cfr_err *err);

/*
 * Test hook: when fn is set, every random byte keys.c and env.c draw comes
 * from fn instead of the OS, in call order. NULL restores the OS. Global
 * and not synchronised: set it only in single-threaded tests.
 */
typedef void cfr_keys_random_fn(void *ctx, uint8_t *buf, size_t n);
void cfr_keys_test_set_random(cfr_keys_random_fn *fn, void *ctx);
/* The draw keys.c and env.c use. */
void cfr_keys_random(uint8_t *buf, size_t n);

/*
 * The key-file decoder after the KDF: checks everything cfr_keyring_decode
 * checks before Argon2, then opens the ciphertext with wrap_key instead of
 * deriving it from a passphrase. cfr_keyring_encode_with_key is the
 * matching encoder (header params are written as given; they must still be
 * within bounds). For fuzzers and known-answer tests only.
 */
struct cfr_keyring *
cfr_keyring_decode_with_key(const uint8_t *data, size_t len,
                            const uint8_t wrap_key[CFR_KEYFILE_WRAP_KEY_LEN],
                            struct cfr_err *err);
int
cfr_keyring_encode_with_key(const struct cfr_keyring *kr,
                            const struct cfr_kdf_params *params,
                            const uint8_t wrap_key[CFR_KEYFILE_WRAP_KEY_LEN],
                            struct cfr_buf *out, struct cfr_err *err);

/*
 * The payload parser on its own (kind is 1 or 2): the bytes a key file's
 * ciphertext decrypts to. Returns owned.
 */
struct cfr_keyring *cfr_keyring_parse_payload(int kind, const uint8_t *p,
                                              size_t len,
                                              const uint8_t tenant_id[16],
                                              struct cfr_err *err);

/*
 * Rewrites the trailing checksum of an in-memory key file, so tests can
 * alter a field and reach the checks behind the checksum (params bounds,
 * the AEAD). len must be at least the checksum length.
 */
void cfr_keyfile_test_fix_checksum(uint8_t *data, size_t len);

#endif /* CFR_KEYS_INT_H */
