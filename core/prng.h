/*
 * prng.h - a tiny deterministic generator for tests, benchmarks and
 * generated corpora: the same seed gives the same stream on every machine.
 *
 * It is splitmix64 (Steele, Lea, Flood 2014): fast, well mixed, and not
 * cryptographic. Never use it for keys, nonces, IDs or anything an
 * attacker may predict to advantage; those come from libsodium through
 * secret.h (cfr_crypto_random).
 */
#ifndef CFR_PRNG_H
#define CFR_PRNG_H

#include <stdint.h>

/* Advances *state and returns the next 64-bit output. */
static inline uint64_t
cfr_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

#endif /* CFR_PRNG_H */
