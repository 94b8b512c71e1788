/*
 * keyfile_fuzz.c - the key file decoder under hostile bytes.
 *
 * The first input byte picks the entry point, the rest is the input:
 *   0: cfr_keyring_decode_with_key with a fixed wrapping key, i.e. the
 *      whole decoder minus Argon2 (header, bounds, checksum, AEAD, payload);
 *   1: cfr_keyring_parse_payload; the next byte is the kind (1 or 2), so the
 *      fuzzer reaches the payload parser behind the AEAD it cannot forge;
 *   2: cfr_keyring_decode with the passphrase "fuzz". Only inputs that pass
 *      every pre-KDF check (including the checksum) reach Argon2, which the
 *      decoder caps at the cost in the header; corpus files use the minimum
 *      cost, so no input spends more than a few tens of milliseconds.
 * Any successful decode is re-encoded and decoded again: what we accept we
 * must be able to write back identically.
 * Seeds in corpus/keyfile/ come from COFFER_WRITE_VECTORS=1 keys_test.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "keys.h"
#include "keys_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t WRAP[32] = {
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42};

static void
check_round_trip(const struct cfr_keyring *kr)
{
    struct cfr_err err;
    struct cfr_buf b;
    const struct cfr_kdf_params p = {CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN};
    cfr_buf_init(&b, CFR_KEYFILE_MAX);
    if (cfr_keyring_encode_with_key(kr, &p, WRAP, &b, &err) != 0) {
        cfr_assert_fail("re-encode of an accepted keyring", __FILE__, __LINE__);
    }
    struct cfr_keyring *again =
        cfr_keyring_decode_with_key(b.data, b.len, WRAP, &err);
    if (again == NULL ||
        cfr_keyring_key_count(again) != cfr_keyring_key_count(kr) ||
        cfr_keyring_current_key_id(again) != cfr_keyring_current_key_id(kr) ||
        memcmp(cfr_keyring_chunk_key(again), cfr_keyring_chunk_key(kr),
               CFR_SUBKEY_LEN) != 0) {
        cfr_assert_fail("accepted keyring does not round-trip", __FILE__,
                        __LINE__);
    }
    cfr_keyring_free(again);
    cfr_buf_fini(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfr_err err;
    struct cfr_keyring *kr = NULL;
    static const uint8_t tenant[16] = {0};

    if (size < 1) {
        return 0;
    }
    switch (data[0]) {
    case 0:
        kr = cfr_keyring_decode_with_key(data + 1, size - 1, WRAP, &err);
        break;
    case 1:
        if (size >= 2) {
            kr = cfr_keyring_parse_payload(data[1], data + 2, size - 2, tenant,
                                           &err);
        }
        break;
    case 2:
        kr = cfr_keyring_decode(data + 1, size - 1, "fuzz", 4, &err);
        break;
    default:
        break;
    }
    if (kr != NULL) {
        check_round_trip(kr);
        cfr_keyring_free(kr);
    }
    return 0;
}
