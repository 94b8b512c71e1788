/*
 * chunk.c - FastCDC content-defined chunking with normalized chunking and
 * forced cuts (hints).
 *
 * The hash is the gear hash fp = (fp << 1) + gear[byte]. Each shift pushes
 * older bytes out of the top, so bit 63 of fp depends on exactly the last 64
 * bytes and lower bits on fewer. The cut test therefore looks at the TOP
 * bits: a mask of k top bits makes a cut depend on the 64-byte window, not
 * on the last k bytes only (which would repeat in text and base64).
 *
 * Let size be the length of the current chunk including the byte just
 * hashed, and avg = 2^b. Hashing starts at the chunk's byte min - 64 with
 * fp = 0, so that the first test already covers a full window; earlier bytes
 * are not looked at (cut-point skipping). After each hashed byte:
 *   size < min        : no test;
 *   min <= size < avg : cut if the top b + norm bits of fp are all zero;
 *   avg <= size < max : cut if the top b - norm bits of fp are all zero;
 *   size == max, or the chunk reaches the next hint: cut.
 * A cut ends the chunk after that byte; the next chunk starts with fp = 0.
 * The strict mask below avg and the loose one above pull sizes toward avg
 * (normalized chunking), so few chunks are far from it either way.
 *
 * Invariants:
 *  1. Every chunk is non-empty and at most max bytes; a chunk shorter than
 *     min ends at a hint or at the end of the file.
 *  2. Where cuts fall depends only on the file's bytes, the gear table, the
 *     parameters and the hints, never on how bytes are split between calls
 *     to cfr_chunker_next (all state lives in the struct between calls).
 *  3. Hints stored are strictly increasing and all lie beyond the current
 *     position, so the distance to the next one is never 0.
 *  4. No crypto here: the gear table comes from keys.c.
 */
#include "chunk.h"

#include <string.h>

#include "mem.h" /* cfr_calloc, cfr_free */

/* The hash window: fp's top bit depends on this many last bytes. */
#define GEAR_WINDOW 64

struct cfr_chunker {
    uint64_t gear[CFR_CHUNK_GEAR_LEN]; /* copied: hot, keep it close */
    struct cfr_chunk_params p;
    uint64_t mask_s; /* below avg: harder to match (more bits) */
    uint64_t mask_l; /* from avg on: easier (fewer bits) */
    size_t warm;     /* min - GEAR_WINDOW: hashing starts here */

    /* The current file. */
    uint64_t fp;          /* gear hash of the current chunk so far */
    size_t pos;           /* bytes of the current chunk passed */
    uint64_t chunk_start; /* file offset of the current chunk */
    uint64_t *hints;      /* CFR_CHUNK_HINTS_MAX slots, invariant 3 */
    size_t nhints;
    size_t hint_i; /* next hint not yet reached */
};

void
cfr_chunk_params_default(struct cfr_chunk_params *p)
{
    p->min = CFR_CHUNK_DEFAULT_MIN;
    p->avg = CFR_CHUNK_DEFAULT_AVG;
    p->max = CFR_CHUNK_DEFAULT_MAX;
    p->norm = CFR_CHUNK_DEFAULT_NORM;
}

int
cfr_chunk_params_check(const struct cfr_chunk_params *p, struct cfr_err *err)
{
    int rc = 0;
    if (p->min < CFR_CHUNK_MIN_MIN) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "chunk min %zu is below %d (the hash window)", p->min,
                     CFR_CHUNK_MIN_MIN);
    } else if (p->avg <= p->min || p->max <= p->avg) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "chunk sizes must grow: min %zu < avg %zu < max %zu",
                     p->min, p->avg, p->max);
    } else if (p->max > CFR_CHUNK_MAX_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "chunk max %zu is above %u", p->max,
                     CFR_CHUNK_MAX_MAX);
    } else if ((p->avg & (p->avg - 1)) != 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "chunk avg %zu is not a power of two",
                     p->avg);
    } else if (p->norm > CFR_CHUNK_NORM_MAX) {
        rc =
            CFR_ERR(err, CFR_EINVAL, "chunk normalization level %u is above %d",
                    p->norm, CFR_CHUNK_NORM_MAX);
    }
    return rc;
}

/* A mask of the top `bits` bits of a 64-bit word; bits is 1..63 here. */
static uint64_t
top_mask(unsigned bits)
{
    return ~UINT64_C(0) << (64 - bits);
}

static unsigned
log2_exact(size_t v)
{
    unsigned b = 0;
    while (((size_t)1 << b) < v) {
        b++;
    }
    return b;
}

struct cfr_chunker *
cfr_chunker_new(const uint64_t gear[CFR_CHUNK_GEAR_LEN],
                const struct cfr_chunk_params *p, struct cfr_err *err)
{
    struct cfr_chunker *ch = NULL;
    if (cfr_chunk_params_check(p, err) != 0) {
        goto out;
    }
    ch = cfr_calloc(1, sizeof(*ch));
    if (ch == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for a chunker");
        goto out;
    }
    ch->hints = cfr_calloc(CFR_CHUNK_HINTS_MAX, sizeof(*ch->hints));
    if (ch->hints == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for chunk hints");
        cfr_free_null(&ch);
        goto out;
    }
    memcpy(ch->gear, gear, sizeof(ch->gear));
    ch->p = *p;
    /* avg > min >= 64 gives b >= 7, so b - norm >= 4 and b + norm <= 27. */
    unsigned b = log2_exact(p->avg);
    ch->mask_s = top_mask(b + p->norm);
    ch->mask_l = top_mask(b - p->norm);
    ch->warm = p->min - GEAR_WINDOW;
    cfr_chunker_reset(ch);
out:
    return ch;
}

void
cfr_chunker_free(struct cfr_chunker *ch)
{
    if (ch == NULL) {
        return;
    }
    cfr_free(ch->hints);
    cfr_free(ch);
}

void
cfr_chunker_reset(struct cfr_chunker *ch)
{
    ch->fp = 0;
    ch->pos = 0;
    ch->chunk_start = 0;
    ch->nhints = 0;
    ch->hint_i = 0;
}

int
cfr_chunker_set_hints(struct cfr_chunker *ch, const uint64_t *offsets, size_t n,
                      struct cfr_err *err)
{
    int rc = 0;
    for (size_t i = 1; i < n; i++) {
        if (offsets[i] < offsets[i - 1]) {
            rc = CFR_ERR(err, CFR_EINVAL,
                         "chunk hints not sorted: %llu after %llu",
                         (unsigned long long)offsets[i],
                         (unsigned long long)offsets[i - 1]);
            goto out;
        }
    }
    uint64_t here = ch->chunk_start + ch->pos;
    size_t kept = 0;
    for (size_t i = 0; i < n && kept < CFR_CHUNK_HINTS_MAX; i++) {
        if (offsets[i] <= here) {
            continue;
        }
        if (kept > 0 && offsets[i] == ch->hints[kept - 1]) {
            continue;
        }
        ch->hints[kept++] = offsets[i];
    }
    ch->nhints = kept;
    ch->hint_i = 0;
out:
    return rc;
}

/* Ends the current chunk at the current position and starts the next. */
static void
start_next_chunk(struct cfr_chunker *ch)
{
    ch->chunk_start += ch->pos;
    ch->pos = 0;
    ch->fp = 0;
    while (ch->hint_i < ch->nhints &&
           ch->hints[ch->hint_i] <= ch->chunk_start) {
        ch->hint_i++;
    }
}

/*
 * The hot loop: hashes p[0..n) and returns 1 + the index of the first byte
 * after which fp matches mask, or 0 if none does.
 *
 * Byte by byte, each step waits for the previous fp. Four bytes at a time,
 * fp after byte k is (fp << k) + t_k where t_k depends on the new bytes
 * only, so the four candidates are computed side by side and the chain on
 * fp is one shift and one add per four bytes. The results are exactly those
 * of the byte loop (the tail), which tests check by feeding single bytes.
 */
static size_t
scan_mask(const uint64_t *restrict gear, const uint8_t *restrict p, size_t n,
          uint64_t *fp_io, uint64_t mask)
{
    uint64_t fp = *fp_io;
    size_t j = 0;
    size_t found = 0;
    for (; j + 4 <= n; j += 4) {
        uint64_t t0 = gear[p[j]];
        uint64_t t1 = (t0 << 1) + gear[p[j + 1]];
        uint64_t t2 = (t1 << 1) + gear[p[j + 2]];
        uint64_t t3 = (t2 << 1) + gear[p[j + 3]];
        uint64_t f0 = (fp << 1) + t0;
        uint64_t f1 = (fp << 2) + t1;
        uint64_t f2 = (fp << 3) + t2;
        uint64_t f3 = (fp << 4) + t3;
        if (((f0 & mask) == 0) | ((f1 & mask) == 0) | ((f2 & mask) == 0) |
            ((f3 & mask) == 0)) {
            break; /* the byte loop below finds which one */
        }
        fp = f3;
    }
    for (; j < n; j++) {
        fp = (fp << 1) + gear[p[j]];
        if ((fp & mask) == 0) {
            found = j + 1;
            break;
        }
    }
    *fp_io = fp;
    return found;
}

static void
hash_only(const uint64_t *restrict gear, const uint8_t *restrict p, size_t n,
          uint64_t *fp_io)
{
    uint64_t fp = *fp_io;
    for (size_t j = 0; j < n; j++) {
        fp = (fp << 1) + gear[p[j]];
    }
    *fp_io = fp;
}

static size_t
min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

size_t
cfr_chunker_next(struct cfr_chunker *ch, const uint8_t *data, size_t len)
{
    size_t i = 0;     /* bytes of data consumed */
    size_t found = 0; /* the result: 0 or the cut's end in data */
    uint64_t fp = ch->fp;
    size_t pos = ch->pos;

    /* Where this chunk must end: max, or the next hint (invariant 3). */
    size_t limit = ch->p.max;
    if (ch->hint_i < ch->nhints) {
        uint64_t to_hint = ch->hints[ch->hint_i] - ch->chunk_start;
        if (to_hint < limit) {
            limit = (size_t)to_hint;
        }
    }
    CFR_ASSERT(pos < limit);

    /* Skip: bytes that cannot end the chunk nor reach its hash window. */
    if (pos < ch->warm) {
        size_t k = min_size(min_size(ch->warm, limit) - pos, len - i);
        pos += k;
        i += k;
    }
    /* Warm: fill the window up to the first byte allowed to end a chunk
     * (the one that makes it min bytes long, at pos == min - 1). */
    if (pos < ch->p.min - 1 && pos < limit && i < len) {
        size_t k = min_size(min_size(ch->p.min - 1, limit) - pos, len - i);
        hash_only(ch->gear, data + i, k, &fp);
        pos += k;
        i += k;
    }
    /* Below avg: the strict mask makes short chunks rare. */
    if (pos >= ch->p.min - 1 && pos < ch->p.avg - 1 && pos < limit && i < len) {
        size_t k = min_size(min_size(ch->p.avg - 1, limit) - pos, len - i);
        size_t hit = scan_mask(ch->gear, data + i, k, &fp, ch->mask_s);
        if (hit != 0) {
            pos += hit;
            i += hit;
            found = i;
            goto out;
        }
        pos += k;
        i += k;
    }
    /* From avg on: the loose mask pulls long chunks back toward avg. */
    if (pos >= ch->p.avg - 1 && pos < limit && i < len) {
        size_t k = min_size(limit - pos, len - i);
        size_t hit = scan_mask(ch->gear, data + i, k, &fp, ch->mask_l);
        if (hit != 0) {
            pos += hit;
            i += hit;
            found = i;
            goto out;
        }
        pos += k;
        i += k;
    }
    if (pos == limit) {
        CFR_ASSERT(i > 0);
        found = i;
    }
out:
    ch->pos = pos;
    if (found != 0) {
        start_next_chunk(ch);
    } else {
        ch->fp = fp;
    }
    return found;
}

size_t
cfr_chunker_cut(struct cfr_chunker *ch)
{
    size_t n = ch->pos;
    if (n > 0) {
        start_next_chunk(ch);
    }
    return n;
}

size_t
cfr_chunker_finish(struct cfr_chunker *ch)
{
    size_t n = ch->pos;
    cfr_chunker_reset(ch);
    return n;
}

size_t
cfr_chunker_pending(const struct cfr_chunker *ch)
{
    return ch->pos;
}

size_t
cfr_chunk_count_max(const struct cfr_chunk_params *p, uint64_t len,
                    size_t nhints)
{
    uint64_t n = len / p->min;
    uint64_t extra = (uint64_t)min_size(nhints, CFR_CHUNK_HINTS_MAX) + 1;
    if (n > (uint64_t)SIZE_MAX - extra) {
        return SIZE_MAX;
    }
    return (size_t)(n + extra);
}

int
cfr_chunker_split(struct cfr_chunker *ch, const uint8_t *data, size_t len,
                  const uint64_t *hints, size_t nhints, uint64_t *ends,
                  size_t ends_max, size_t *n_r, struct cfr_err *err)
{
    int rc = 0;
    size_t n = 0;
    size_t off = 0;
    cfr_chunker_reset(ch);
    if ((rc = cfr_chunker_set_hints(ch, hints, nhints, err)) != 0) {
        goto out;
    }
    while (off < len) {
        size_t k = cfr_chunker_next(ch, data + off, len - off);
        if (k == 0) {
            break;
        }
        off += k;
        if (n == ends_max) {
            rc = CFR_ERR(err, CFR_ELIMIT, "more than %zu chunks", ends_max);
            goto out;
        }
        ends[n++] = off;
    }
    if (cfr_chunker_finish(ch) > 0) {
        if (n == ends_max) {
            rc = CFR_ERR(err, CFR_ELIMIT, "more than %zu chunks", ends_max);
            goto out;
        }
        ends[n++] = len;
    }
out:
    cfr_chunker_reset(ch);
    *n_r = rc == 0 ? n : 0;
    return rc;
}
