/*
 * id.h - 32-byte object IDs: keyed and plain BLAKE2b-256.
 *
 * Three uses, one primitive (crypto_generichash, BLAKE2b with 32-byte
 * output):
 *  - chunk IDs: BLAKE2b-256 keyed with the tenant's chunk-ID key over the
 *    plaintext, so a vault cannot test whether it holds a known message
 *    (it does not know the key) and tenants never share IDs;
 *  - opaque mailbox IDs: the same, keyed with the tenant's name key, over a
 *    mailbox name;
 *  - plain BLAKE2b-256 (no key) for what vaults must compute themselves:
 *    ciphertext checksums and the IDs of clear reference-list pages.
 *
 * This module takes raw keys and knows nothing of keyrings, because vaults
 * link it but never link keys.c. The keyring hands out a const pointer to
 * its sodium_malloc'd chunk-ID and name keys (cfr_keyring_chunk_key,
 * cfr_keyring_name_key in keys.h).
 *
 * Thread safety: all functions are pure and safe to call concurrently.
 */
#ifndef CFR_ID_H
#define CFR_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFR_ID_LEN     32 /* every object ID */
#define CFR_ID_KEY_LEN 32 /* chunk-ID and name keys */

/* Unkeyed BLAKE2b-256 of data. */
void cfr_id_plain(const void *data, size_t len, uint8_t out[CFR_ID_LEN]);

/* Chunk ID: BLAKE2b-256 of the plaintext chunk keyed with the chunk key. */
void cfr_id_chunk(const uint8_t key[CFR_ID_KEY_LEN], const void *data,
                  size_t len, uint8_t out[CFR_ID_LEN]);

/*
 * Opaque mailbox ID: BLAKE2b-256 of the mailbox name (its bytes as stored,
 * no terminator) keyed with the name key.
 */
void cfr_id_name(const uint8_t key[CFR_ID_KEY_LEN], const void *name,
                 size_t len, uint8_t out[CFR_ID_LEN]);

/* Constant-time comparison of two IDs. */
bool cfr_id_equal(const uint8_t a[CFR_ID_LEN], const uint8_t b[CFR_ID_LEN])
    __attribute__((warn_unused_result));

#endif /* CFR_ID_H */
