/*
 * test_random.h - a fixed, reproducible byte stream for tests and fuzz
 * targets: BLAKE2b-256(seed || counter) blocks. It stands in for the
 * system CSPRNG where a test must see the same "random" nonces and keys
 * on every run (core/keys.h and core/env.h take a fill callback).
 */
#ifndef COFFER_TEST_RANDOM_H
#define COFFER_TEST_RANDOM_H

#include <stddef.h>
#include <stdint.h>

struct det_random {
    uint8_t seed[32];
    uint64_t counter;
    uint8_t block[32];
    size_t used; /* bytes of block handed out; start at sizeof(block) */
};

/* Starts the stream for seed (32 bytes). */
void det_random_init(struct det_random *d, const uint8_t seed[32]);

/* A fill callback: ctx is a struct det_random. */
void det_fill(void *ctx, uint8_t *buf, size_t n);

#endif
