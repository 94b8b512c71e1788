/*
 * chunk.h - content-defined chunking (FastCDC with normalized chunking).
 *
 * A file is cut where a rolling gear hash of its last 64 bytes matches a
 * mask, so an insertion or deletion moves only the boundaries next to it and
 * the rest of the file keeps its chunks (and their IDs). The gear table is
 * derived from the tenant's gear key (keys.c), so where a file is cut is
 * itself secret: a vault cannot guess a message from its chunk sizes.
 *
 * Callers may also force cuts (hints), used for MIME part starts and ends
 * (mime.h): a forwarded attachment or a list message with different headers
 * then cuts exactly where its shared bytes start, and content-defined cutting
 * restarts from there, so the shared bytes give identical chunks.
 *
 * Chunks never span files: a chunker is reset at each file, and the end of a
 * file is always a cut. docs/FORMAT.md ("Chunking") specifies the algorithm
 * exactly; two builds that disagree on a cut lose deduplication, so the
 * algorithm is frozen once data exists.
 *
 * Thread safety: a struct cfr_chunker belongs to one thread at a time; the
 * gear table it was made from is copied and may be freed afterwards.
 */
#ifndef CFR_CHUNK_H
#define CFR_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

/* Gear tables have one 64-bit entry per byte value. */
#define CFR_CHUNK_GEAR_LEN 256

/* Parameter bounds: min must cover the 64-byte hash window (see chunk.c). */
#define CFR_CHUNK_MIN_MIN  64
#define CFR_CHUNK_MAX_MAX  (16u << 20)
#define CFR_CHUNK_NORM_MAX 3

/*
 * Defaults, chosen with bench/chunk_sweep on two mail corpora (docs/FORMAT.md
 * "Chunking" has the figures): with MIME hints every average from 4 to 64
 * KiB dedupes the same, so the choice is set by what each chunk costs
 * (envelope, index entry, manifest reference) and by zstd doing better on
 * larger chunks, against revised attachments favouring smaller ones.
 * 32 KiB was within 1.5% of the best on both corpora. A typical message
 * (under 8 KiB) is one chunk without hints.
 */
#define CFR_CHUNK_DEFAULT_MIN  (8u << 10)
#define CFR_CHUNK_DEFAULT_AVG  (32u << 10)
#define CFR_CHUNK_DEFAULT_MAX  (256u << 10)
#define CFR_CHUNK_DEFAULT_NORM 2

/* At most this many forced cuts per file (or per cfr_chunker_set_hints). */
#define CFR_CHUNK_HINTS_MAX 4096

struct cfr_chunk_params {
    size_t min;    /* no content-defined cut makes a shorter chunk */
    size_t avg;    /* a power of two: the target mean chunk size */
    size_t max;    /* every chunk is cut here at the latest */
    unsigned norm; /* normalization level (FastCDC NC), 0..3 */
};

struct cfr_chunker;

/* Fills p with the defaults above. */
void cfr_chunk_params_default(struct cfr_chunk_params *p);

/*
 * Returns 0, or CFR_EINVAL when p is not 64 <= min < avg < max <= 16 MiB
 * with avg a power of two and norm <= 3 (the message says which).
 */
int cfr_chunk_params_check(const struct cfr_chunk_params *p,
                           struct cfr_err *err);

/*
 * Returns an owned chunker (free with cfr_chunker_free), reset for a new
 * file, or NULL with err set (CFR_EINVAL, CFR_ENOMEM). gear is borrowed and
 * copied.
 */
struct cfr_chunker *cfr_chunker_new(const uint64_t gear[CFR_CHUNK_GEAR_LEN],
                                    const struct cfr_chunk_params *p,
                                    struct cfr_err *err);
/* Accepts NULL. */
void cfr_chunker_free(struct cfr_chunker *ch);

/*
 * Starts a new file: forgets any bytes of an unfinished chunk (the caller
 * decides what they were) and all hints.
 */
void cfr_chunker_reset(struct cfr_chunker *ch);

/*
 * Sets forced cuts, as byte offsets from the start of the current file,
 * replacing any not yet reached. Offsets must be non-decreasing (CFR_EINVAL
 * otherwise, and the old hints stay); offsets at or before the current
 * position (the bytes already passed) are ignored, as are duplicates, and only
 * the first CFR_CHUNK_HINTS_MAX are kept. A hint cuts even below min, but never
 * makes an empty chunk. For a large file (an mbox) set each message's hints
 * before feeding its bytes. offsets is borrowed and copied.
 */
int cfr_chunker_set_hints(struct cfr_chunker *ch, const uint64_t *offsets,
                          size_t n, struct cfr_err *err);

/*
 * Scans the next bytes of the current file. Returns n in 1..len when the
 * current chunk ends after data[n - 1]: the chunk is the bytes passed since
 * the previous cut plus data[0..n); call again with data + n for the rest.
 * Returns 0 when data holds no cut: all len bytes belong to the current
 * chunk. The result depends only on the file's bytes and hints, never on
 * how they are split between calls.
 */
size_t cfr_chunker_next(struct cfr_chunker *ch, const uint8_t *data,
                        size_t len);

/*
 * Ends the file: returns the length of its final chunk (the bytes passed
 * since the last cut; 0 if there are none, which is never a chunk) and
 * resets the chunker for the next file.
 */
size_t cfr_chunker_finish(struct cfr_chunker *ch);

/*
 * Cuts at the current position, as a hint there would: returns the length
 * of the chunk it ends (0 if no bytes are pending: no chunk), and the file
 * goes on. An mbox reader calls it where a message starts, because a hint
 * set at the current position comes too late to be honoured.
 */
size_t cfr_chunker_cut(struct cfr_chunker *ch);

/* Bytes of the current chunk passed so far. */
size_t cfr_chunker_pending(const struct cfr_chunker *ch);

/*
 * The most chunks a file of len bytes can have with nhints hints:
 * len / min + min(nhints, CFR_CHUNK_HINTS_MAX) + 1 (saturating).
 */
size_t cfr_chunk_count_max(const struct cfr_chunk_params *p, uint64_t len,
                           size_t nhints);

/*
 * Chunks a whole file held in memory (most messages are small). Resets ch,
 * applies hints (as cfr_chunker_set_hints; may be NULL when nhints is 0),
 * and stores the end offset of each chunk, in order, in ends[0..*n_r); the
 * last one is len (no chunks for an empty file). ends must hold
 * cfr_chunk_count_max(p, len, nhints) entries, else CFR_ELIMIT may be
 * returned. ch is reset afterwards.
 */
int cfr_chunker_split(struct cfr_chunker *ch, const uint8_t *data, size_t len,
                      const uint64_t *hints, size_t nhints, uint64_t *ends,
                      size_t ends_max, size_t *n_r, struct cfr_err *err);

#endif /* CFR_CHUNK_H */
