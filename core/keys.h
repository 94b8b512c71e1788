/*
 * keys.h - the tenant keyring: generation, rotation, key files, escrow and
 * the agent's write-only view.
 *
 * A keyring is one of two kinds:
 *  - full (restore, escrow): tenant ID, master key M and every X25519 key
 *    pair the tenant ever had. The chunk-ID, name and gear keys are derived
 *    from M with crypto_kdf (context "cofferv1", ids 1, 2, 3). The pair with
 *    the highest key_id is current; rotation appends a fresh random pair and
 *    keeps the old ones, so data sealed for an old pair still opens and
 *    nothing stored is ever re-encrypted.
 *  - agent (mail hosts): tenant ID, the three derived subkeys and the public
 *    keys only, the current one marked. It can compute IDs, chunk and seal,
 *    and can never open: it holds neither M nor any X25519 secret key.
 *
 * Key files (docs/FORMAT.md gives every byte) wrap either kind under
 * a passphrase with Argon2id and XChaCha20-Poly1305. Loading checks, in
 * order and before spending any time in Argon2: size cap, magic, version,
 * kind, KDF id and cost bounds, length fields, and a plain checksum of the
 * whole file; so damage is CFR_ECORRUPT, a wrong passphrase is CFR_EAUTH,
 * an unknown version is CFR_EVERSION and oversized input is CFR_ELIMIT.
 *
 * All secrets live in sodium_malloc memory (secret.h). The subkeys, which
 * every chunk needs, stay read-only; M and the X25519 secret keys stay
 * inaccessible (PROT_NONE) except inside the few calls that use them.
 *
 * Thread safety: a keyring may be shared by threads for every const
 * function (IDs, gear table, sessions, openers); the calls that touch the
 * locked secrets serialise on an internal mutex. cfr_keyring_rotate and
 * cfr_keyring_free need exclusive access.
 */
#ifndef CFR_KEYS_H
#define CFR_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h" /* struct cfr_buf, for in-memory key files */
#include "err.h" /* struct cfr_err */

struct cfr_keyring;

enum cfr_keyring_kind {
    CFR_KEYRING_FULL = 1,  /* master key and X25519 secrets: can open */
    CFR_KEYRING_AGENT = 2, /* subkeys and public keys: seal only */
};

#define CFR_TENANT_ID_LEN     16
#define CFR_PUBKEY_LEN        32
#define CFR_SUBKEY_LEN        32
#define CFR_KEYRING_PAIRS_MAX 1024
#define CFR_KEYFILE_MAX       (1u << 20) /* whole key file, bytes */

/*
 * Argon2id cost. OWASP's minimum (m = 19 MiB, t = 2, p = 1) is the floor:
 * encoding refuses less, and loading refuses a file that claims less (a
 * tampered file must not downgrade the KDF). The ceiling keeps a hostile
 * file from making a load take minutes or gigabytes.
 */
struct cfr_kdf_params {
    uint64_t opslimit; /* Argon2 passes (t) */
    uint64_t memlimit; /* bytes (m) */
};

#define CFR_KDF_OPS_MIN     UINT64_C(2)
#define CFR_KDF_MEM_MIN     (UINT64_C(19) << 20)
#define CFR_KDF_OPS_DEFAULT UINT64_C(2)          /* OPSLIMIT_INTERACTIVE */
#define CFR_KDF_MEM_DEFAULT (UINT64_C(64) << 20) /* MEMLIMIT_INTERACTIVE */
#define CFR_KDF_OPS_MAX     UINT64_C(32)
#define CFR_KDF_MEM_MAX     (UINT64_C(1) << 30)

/*
 * The defaults (t = 2, m = 64 MiB, about 0.2 s). Tests and fuzz corpora may
 * pass { CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN } explicitly to run faster; that
 * is the only way to get cheaper params, and it is still OWASP's minimum.
 */
void cfr_kdf_params_default(struct cfr_kdf_params *p);

/* Returns owned: a new full keyring with one key pair (key_id 1). */
struct cfr_keyring *cfr_keyring_generate(int64_t now_ms, struct cfr_err *err);
/* Wipes every secret and frees; accepts NULL. */
void cfr_keyring_free(struct cfr_keyring *kr);

/*
 * Full keyrings only: appends a fresh random X25519 pair with the next
 * key_id, which becomes current. CFR_ELIMIT past CFR_KEYRING_PAIRS_MAX,
 * CFR_EINVAL on an agent keyring (rotate the full one, then export a new
 * agent view).
 */
int cfr_keyring_rotate(struct cfr_keyring *kr, int64_t now_ms,
                       struct cfr_err *err);

/*
 * Returns owned: the write-only view of kr (full or agent): tenant ID,
 * subkeys, public keys, current key marked. Never holds a secret that opens.
 */
struct cfr_keyring *cfr_keyring_agent_view(const struct cfr_keyring *kr,
                                           struct cfr_err *err);

/*
 * In-memory key file. encode replaces out's contents (out's cap must allow
 * the file; CFR_KEYFILE_MAX always does) with kr wrapped under passphrase;
 * params NULL means the defaults, and params below the minimum are
 * CFR_EINVAL. The passphrase must not be empty. decode borrows data.
 */
int cfr_keyring_encode(const struct cfr_keyring *kr, const char *passphrase,
                       size_t plen, const struct cfr_kdf_params *params,
                       struct cfr_buf *out, struct cfr_err *err);
struct cfr_keyring *cfr_keyring_decode(const uint8_t *data, size_t len,
                                       const char *passphrase, size_t plen,
                                       struct cfr_err *err);

/*
 * Key files on disk. save writes atomically (a 0600 temporary file in the
 * same directory, fsync, rename, fsync of the directory) and replaces any
 * file at path. load refuses (CFR_EDENIED) a file that group or others may
 * access, and (CFR_EINVAL) anything that is not a regular file.
 */
int cfr_keyring_save(const struct cfr_keyring *kr, const char *path,
                     const char *passphrase, size_t plen,
                     const struct cfr_kdf_params *params, struct cfr_err *err);
struct cfr_keyring *cfr_keyring_load(const char *path, const char *passphrase,
                                     size_t plen, struct cfr_err *err);

/*
 * Re-wraps the key file at path under a new passphrase; keys and data are
 * untouched. params NULL keeps the file's current KDF cost.
 */
int cfr_keyring_change_passphrase(const char *path, const char *old_pass,
                                  size_t old_len, const char *new_pass,
                                  size_t new_len,
                                  const struct cfr_kdf_params *params,
                                  struct cfr_err *err);

/*
 * Escrow: a full key file under a separate escrow passphrase. export
 * refuses an agent keyring (CFR_EINVAL); import refuses a file that is not
 * a full keyring (CFR_EINVAL).
 */
int cfr_keyring_export(const struct cfr_keyring *kr, const char *path,
                       const char *escrow_pass, size_t plen,
                       const struct cfr_kdf_params *params,
                       struct cfr_err *err);
struct cfr_keyring *cfr_keyring_import(const char *path,
                                       const char *escrow_pass, size_t plen,
                                       struct cfr_err *err);

enum cfr_keyring_kind cfr_keyring_kind(const struct cfr_keyring *kr);
/* True only for a full keyring: it holds the secrets that open envelopes. */
bool cfr_keyring_can_open(const struct cfr_keyring *kr);
/* Borrowed, CFR_TENANT_ID_LEN bytes, valid while kr lives. */
const uint8_t *cfr_keyring_tenant_id(const struct cfr_keyring *kr);
/* The key_id new sessions seal for. */
uint32_t cfr_keyring_current_key_id(const struct cfr_keyring *kr);
size_t cfr_keyring_key_count(const struct cfr_keyring *kr);
/*
 * Copies the public key of key_id into pk_r and its creation time into
 * created_ms_r (may be NULL). CFR_ENOTFOUND when kr has no such key.
 */
int cfr_keyring_public_key(const struct cfr_keyring *kr, uint32_t key_id,
                           uint8_t pk_r[CFR_PUBKEY_LEN], int64_t *created_ms_r,
                           struct cfr_err *err);

/*
 * Borrowed pointers to the read-only, sodium_malloc'd subkeys, for id.h
 * (CFR_SUBKEY_LEN bytes, valid while kr lives). Never log or copy them.
 */
const uint8_t *cfr_keyring_chunk_key(const struct cfr_keyring *kr);
const uint8_t *cfr_keyring_name_key(const struct cfr_keyring *kr);

/* Chunk ID and opaque mailbox ID under this keyring's keys. */
void cfr_keyring_chunk_id(const struct cfr_keyring *kr, const void *data,
                          size_t len, uint8_t id_r[32]);
void cfr_keyring_name_id(const struct cfr_keyring *kr, const void *name,
                         size_t len, uint8_t id_r[32]);

/*
 * The chunker's keyed gear table: the gear key expanded with
 * XChaCha20 (docs/FORMAT.md), read as 256 little-endian uint64.
 * Identical for a full keyring and any agent view of it.
 */
void cfr_keyring_gear_table(const struct cfr_keyring *kr, uint64_t gear[256]);

#endif /* CFR_KEYS_H */
