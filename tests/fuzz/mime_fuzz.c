/*
 * mime_fuzz.c - the MIME cut finder over arbitrary bytes, and the chunker
 * over the cuts it returns.
 *
 * Mail is untrusted input: whatever the bytes, cfr_mime_cuts must stay
 * inside the message (ASan checks), return sorted offsets inside it within
 * the cap, and the chunker given those offsets as hints must cut at each of
 * them, never produce an empty chunk and cover the input exactly. Any
 * violation aborts so libFuzzer records the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "chunk.h"
#include "mime.h"
#include "prng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CUTS 512

static void
check(int ok)
{
    if (!ok) {
        abort();
    }
}

/* Chunks data with the hints and checks the chunk list against them. */
static void
check_chunks(struct cfr_chunker *ch, const uint8_t *data, size_t size,
             const uint64_t *cuts, size_t n)
{
    struct cfr_err err;
    check(cfr_chunker_set_hints(ch, cuts, n, &err) == 0);
    size_t off = 0;
    size_t next_hint = 0;
    while (off < size) {
        size_t k = cfr_chunker_next(ch, data + off, size - off);
        if (k == 0) {
            break;
        }
        off += k;
        /* No hint may be jumped over. */
        check(next_hint >= n || cuts[next_hint] >= off);
        if (next_hint < n && cuts[next_hint] == off) {
            next_hint++;
        }
    }
    size_t last = cfr_chunker_finish(ch);
    check(off + last == size);
    check(next_hint == n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cfr_chunker *ch;
    uint64_t cuts[FUZZ_CUTS];
    if (ch == NULL) {
        uint64_t gear[CFR_CHUNK_GEAR_LEN];
        uint64_t seed = 1;
        for (size_t i = 0; i < CFR_CHUNK_GEAR_LEN; i++) {
            gear[i] = cfr_splitmix64(&seed);
        }
        /* Small chunks, so that fuzz-sized inputs get content cuts too. */
        struct cfr_chunk_params p = {64, 128, 1024, 2};
        ch = cfr_chunker_new(gear, &p, NULL);
        check(ch != NULL);
    }
    size_t caps[] = {FUZZ_CUTS, 3};
    uint64_t first[FUZZ_CUTS];
    size_t nfirst = 0;
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        size_t n = cfr_mime_cuts(data, size, cuts, caps[c]);
        check(n <= caps[c]);
        for (size_t i = 0; i < n; i++) {
            check(cuts[i] > 0 && cuts[i] < size);
            check(i == 0 || cuts[i] > cuts[i - 1]);
        }
        if (c == 0) {
            for (size_t i = 0; i < n; i++) {
                first[i] = cuts[i];
            }
            nfirst = n;
            check_chunks(ch, data, size, cuts, n);
        } else {
            /* A lower cap gives a prefix of the same list. */
            check(n == (nfirst < caps[c] ? nfirst : caps[c]));
            for (size_t i = 0; i < n; i++) {
                check(cuts[i] == first[i]);
            }
        }
    }
    return 0;
}
