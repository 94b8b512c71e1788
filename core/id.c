/*
 * id.c - keyed and plain BLAKE2b-256.
 *
 * Invariants:
 *  1. Every ID is exactly CFR_ID_LEN bytes of BLAKE2b output; no function
 *     here truncates, pads or hex-encodes.
 *  2. Keyed IDs always use the full 32-byte key: a short or absent key is a
 *     programming error, not an option (callers pass a fixed-size array).
 *  3. Nothing here allocates or keeps state, so vaults and agents may hash
 *     from any thread.
 */
#include "id.h"

#include <sodium.h>

#include "err.h" /* CFR_ASSERT */

/*
 * The crypto_generichash state is about 384 bytes; one-shot calls keep it on
 * the stack, and libsodium wipes nothing we would need to.
 */
static void
keyed(const uint8_t key[CFR_ID_KEY_LEN], const void *data, size_t len,
      uint8_t out[CFR_ID_LEN])
{
    /* crypto_generichash only fails on bad lengths, which are constants. */
    int rc =
        crypto_generichash(out, CFR_ID_LEN, data, len, key, CFR_ID_KEY_LEN);
    CFR_ASSERT(rc == 0);
}

void
cfr_id_plain(const void *data, size_t len, uint8_t out[CFR_ID_LEN])
{
    int rc = crypto_generichash(out, CFR_ID_LEN, data, len, NULL, 0);
    CFR_ASSERT(rc == 0);
}

void
cfr_id_chunk(const uint8_t key[CFR_ID_KEY_LEN], const void *data, size_t len,
             uint8_t out[CFR_ID_LEN])
{
    keyed(key, data, len, out);
}

void
cfr_id_name(const uint8_t key[CFR_ID_KEY_LEN], const void *name, size_t len,
            uint8_t out[CFR_ID_LEN])
{
    keyed(key, name, len, out);
}

bool
cfr_id_equal(const uint8_t a[CFR_ID_LEN], const uint8_t b[CFR_ID_LEN])
{
    return sodium_memcmp(a, b, CFR_ID_LEN) == 0;
}
