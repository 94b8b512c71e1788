/*
 * test_random.c - see test_random.h.
 */
#include "test_random.h"

#include <string.h>

#include "buf.h" /* cfr_put_le64 */
#include "id.h"  /* cfr_id_plain: BLAKE2b-256 */

void
det_random_init(struct det_random *d, const uint8_t seed[32])
{
    memset(d, 0, sizeof(*d));
    memcpy(d->seed, seed, sizeof(d->seed));
    d->used = sizeof(d->block);
}

void
det_fill(void *ctx, uint8_t *buf, size_t n)
{
    struct det_random *d = ctx;
    while (n > 0) {
        if (d->used == sizeof(d->block)) {
            uint8_t in[40];
            memcpy(in, d->seed, 32);
            cfr_put_le64(in + 32, d->counter++);
            cfr_id_plain(in, sizeof(in), d->block);
            d->used = 0;
        }
        size_t take = sizeof(d->block) - d->used;
        take = take < n ? take : n;
        memcpy(buf, d->block + d->used, take);
        d->used += take;
        buf += take;
        n -= take;
    }
}
