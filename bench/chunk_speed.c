/*
 * chunk_speed.c - single-core throughput of the content-defined chunker.
 *
 * Chunks a buffer of random bytes (the worst case: no early cut-point
 * luck, every byte hashed past min - 64) with several average sizes and
 * prints MB/s, best of a few runs, so a change to the hot loop in
 * core/chunk.c can be judged in seconds. Built with the project (see
 * bench/chunk.cmake); run it by hand:
 *   ./chunk_speed [MiB]      (default 256)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "prng.h"

static double
now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
    size_t mib = 256;
    if (argc > 1) {
        char *end = NULL;
        unsigned long v = strtoul(argv[1], &end, 10);
        if (end == argv[1] || *end != '\0' || v == 0 || v > 65536) {
            fprintf(stderr, "usage: %s [MiB]\n", argv[0]);
            return 2;
        }
        mib = v;
    }
    size_t len = mib << 20;
    uint8_t *data = malloc(len);
    if (data == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint64_t seed = 1;
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t v = cfr_splitmix64(&seed);
        memcpy(data + i, &v, 8);
    }
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    for (size_t i = 0; i < CFR_CHUNK_GEAR_LEN; i++) {
        gear[i] = cfr_splitmix64(&seed);
    }
    const size_t avgs[] = {4096, 8192, 16384, 32768, 65536};
    int rc = 0;
    for (size_t a = 0; a < sizeof(avgs) / sizeof(avgs[0]); a++) {
        struct cfr_chunk_params p = {avgs[a] / 4, avgs[a], avgs[a] * 8,
                                     CFR_CHUNK_DEFAULT_NORM};
        struct cfr_err err;
        struct cfr_chunker *ch = cfr_chunker_new(gear, &p, &err);
        if (ch == NULL) {
            fprintf(stderr, "chunker: %s\n", err.msg);
            rc = 1;
            break;
        }
        double best = 1e30;
        size_t chunks = 0;
        for (int run = 0; run < 3; run++) {
            double t0 = now_sec();
            size_t off = 0;
            chunks = 0;
            while (off < len) {
                size_t k = cfr_chunker_next(ch, data + off, len - off);
                if (k == 0) {
                    break;
                }
                off += k;
                chunks++;
            }
            chunks += cfr_chunker_finish(ch) > 0;
            double t = now_sec() - t0;
            best = t < best ? t : best;
        }
        printf("avg %6zu: %8zu chunks, %7.0f MB/s\n", avgs[a], chunks,
               (double)len / 1e6 / best);
        cfr_chunker_free(ch);
    }
    free(data);
    return rc;
}
