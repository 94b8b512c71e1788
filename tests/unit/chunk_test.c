/*
 * chunk_test.c - the content-defined chunker: edits move few boundaries,
 * sizes stay in bounds, keys change boundaries, feed sizes do not, hints cut
 * where MIME bodies start and end and so let forwarded attachments and list
 * copies share chunks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "err.h"
#include "mem.h"
#include "mime.h"
#include "prng.h"

static void
make_gear(uint64_t seed, uint64_t gear[CFR_CHUNK_GEAR_LEN])
{
    for (size_t i = 0; i < CFR_CHUNK_GEAR_LEN; i++) {
        gear[i] = cfr_splitmix64(&seed);
    }
}

static void
fill_random(uint64_t *seed, uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = cfr_splitmix64(seed);
        memcpy(p + i, &v, 8);
    }
    if (i < n) {
        uint64_t v = cfr_splitmix64(seed);
        memcpy(p + i, &v, n - i);
    }
}

static struct cfr_chunker *
new_chunker(uint64_t gear_seed, const struct cfr_chunk_params *p)
{
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    struct cfr_chunk_params def;
    struct cfr_err err;
    make_gear(gear_seed, gear);
    if (p == NULL) {
        cfr_chunk_params_default(&def);
        p = &def;
    }
    struct cfr_chunker *ch = cfr_chunker_new(gear, p, &err);
    assert_non_null(ch);
    return ch;
}

/* A list of chunk end offsets, as cfr_chunker_split gives them. */
struct ends {
    uint64_t *v;
    size_t n;
};

static struct ends
split(struct cfr_chunker *ch, const struct cfr_chunk_params *p,
      const uint8_t *data, size_t len, const uint64_t *hints, size_t nh)
{
    struct ends e = {0};
    struct cfr_err err;
    size_t cap = cfr_chunk_count_max(p, len, nh);
    e.v = calloc(cap, sizeof(*e.v));
    assert_non_null(e.v);
    assert_int_equal(
        cfr_chunker_split(ch, data, len, hints, nh, e.v, cap, &e.n, &err), 0);
    return e;
}

/* The same through the streaming API, feeding `step` bytes at a time. */
static struct ends
feed(struct cfr_chunker *ch, const uint8_t *data, size_t len,
     const uint64_t *hints, size_t nh, size_t step, uint64_t *step_seed)
{
    struct ends e = {0};
    struct cfr_err err;
    size_t cap = len / 64 + nh + 2;
    e.v = calloc(cap, sizeof(*e.v));
    assert_non_null(e.v);
    cfr_chunker_reset(ch);
    assert_int_equal(cfr_chunker_set_hints(ch, hints, nh, &err), 0);
    size_t off = 0;
    while (off < len) {
        size_t n = step;
        if (step_seed != NULL) {
            n = 1 + (size_t)(cfr_splitmix64(step_seed) % 100000);
        }
        if (n > len - off) {
            n = len - off;
        }
        size_t done = 0;
        while (done < n) {
            size_t k = cfr_chunker_next(ch, data + off + done, n - done);
            if (k == 0) {
                break;
            }
            done += k;
            assert_true(e.n < cap);
            e.v[e.n++] = off + done;
        }
        off += n;
    }
    size_t last = cfr_chunker_finish(ch);
    uint64_t prev = e.n > 0 ? e.v[e.n - 1] : 0;
    assert_int_equal(last, len - prev);
    if (last > 0) {
        e.v[e.n++] = len;
    }
    return e;
}

static bool
has_end(const struct ends *e, uint64_t off)
{
    for (size_t i = 0; i < e->n; i++) {
        if (e->v[i] == off) {
            return true;
        }
    }
    return false;
}

static void
assert_ends_equal(const struct ends *a, const struct ends *b)
{
    assert_int_equal(a->n, b->n);
    assert_memory_equal(a->v, b->v, a->n * sizeof(*a->v));
}

/*
 * Bytes of b's chunks whose exact content is also a chunk of a: what a
 * store holding a would not need to store again for b.
 */
static size_t
shared_bytes(const uint8_t *a, const struct ends *ea, const uint8_t *b,
             const struct ends *eb)
{
    size_t shared = 0;
    for (size_t j = 0; j < eb->n; j++) {
        size_t bs = j == 0 ? 0 : eb->v[j - 1];
        size_t bl = eb->v[j] - bs;
        for (size_t i = 0; i < ea->n; i++) {
            size_t as = i == 0 ? 0 : ea->v[i - 1];
            if (ea->v[i] - as == bl && memcmp(a + as, b + bs, bl) == 0) {
                shared += bl;
                break;
            }
        }
    }
    return shared;
}

static void
test_chunk_params_checked(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    struct cfr_err err;
    cfr_chunk_params_default(&p);
    assert_int_equal(cfr_chunk_params_check(&p, &err), 0);

    struct {
        size_t min, avg, max;
        unsigned norm;
        const char *msg;
    } bad[] = {
        {32, 4096, 65536, 2, "below 64"},
        {4096, 4096, 65536, 2, "must grow"},
        {1024, 4096, 4096, 2, "must grow"},
        {1024, 6000, 65536, 2, "power of two"},
        {1024, 4096, (16u << 20) + 1, 2, "above"},
        {1024, 4096, 65536, 4, "normalization"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = (struct cfr_chunk_params){bad[i].min, bad[i].avg, bad[i].max,
                                      bad[i].norm};
        cfr_err_clear(&err);
        assert_int_equal(cfr_chunk_params_check(&p, &err), CFR_EINVAL);
        assert_non_null(strstr(err.msg, bad[i].msg));
        uint64_t gear[CFR_CHUNK_GEAR_LEN] = {0};
        assert_null(cfr_chunker_new(gear, &p, &err));
        assert_int_equal(err.code, CFR_EINVAL);
    }
    /* The extremes that are allowed. */
    p = (struct cfr_chunk_params){64, 128, 16u << 20, 3};
    assert_int_equal(cfr_chunk_params_check(&p, &err), 0);
}

/* One edit: at `at`, remove `del` bytes and insert `ins` random bytes. */
static void
check_edit(struct cfr_chunker *ch, const struct cfr_chunk_params *p,
           const uint8_t *orig, size_t len, size_t at, size_t del, size_t ins)
{
    uint64_t seed = 99 + at + del * 7 + ins * 13;
    size_t nlen = len - del + ins;
    uint8_t *ed = malloc(nlen);
    assert_non_null(ed);
    memcpy(ed, orig, at);
    fill_random(&seed, ed + at, ins);
    memcpy(ed + at + ins, orig + at + del, len - at - del);

    struct ends a = split(ch, p, orig, len, NULL, 0);
    struct ends b = split(ch, p, ed, nlen, NULL, 0);

    /* Every chunk ending at or before the edit is unchanged. */
    size_t i = 0;
    while (i < a.n && a.v[i] <= at) {
        assert_true(i < b.n);
        assert_int_equal(a.v[i], b.v[i]);
        i++;
    }
    size_t prefix_chunks = i;
    /* After the edit, boundaries resynchronise: from the first common cut
     * on, both lists are the same, shifted by the size change. */
    size_t ia = i;
    size_t ib = i;
    while (ia < a.n && ib < b.n) {
        uint64_t ea = a.v[ia] - del + ins;
        if (a.v[ia] >= at + del && ea == b.v[ib]) {
            break;
        }
        if (a.v[ia] < at + del || ea < b.v[ib]) {
            ia++;
        } else {
            ib++;
        }
    }
    assert_true(ia < a.n);
    assert_true(ia - prefix_chunks <= 3); /* resync within a few chunks */
    assert_true(ib - prefix_chunks <= 3);
    assert_int_equal(a.n - ia, b.n - ib);
    for (size_t k = 0; ia + k < a.n; k++) {
        assert_int_equal(a.v[ia + k] - del + ins, b.v[ib + k]);
    }
    size_t shared = shared_bytes(orig, &a, ed, &b);
    assert_true((double)shared > 0.95 * (double)nlen);
    printf("edit at=%zu del=%zu ins=%zu: chunks %zu/%zu, differing %zu/%zu, "
           "shared %.2f%%\n",
           at, del, ins, a.n, b.n, ia - prefix_chunks + 1,
           ib - prefix_chunks + 1, 100.0 * (double)shared / (double)nlen);
    free(a.v);
    free(b.v);
    free(ed);
}

static void
test_chunk_edits_move_few_boundaries(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    cfr_chunk_params_default(&p);
    struct cfr_chunker *ch = new_chunker(1, &p);
    size_t len = 8u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 42;
    fill_random(&seed, data, len);

    check_edit(ch, &p, data, len, len / 2, 0, 5);    /* insert */
    check_edit(ch, &p, data, len, len / 2, 7, 0);    /* delete */
    check_edit(ch, &p, data, len, len / 2, 3, 3);    /* replace */
    check_edit(ch, &p, data, len, len / 3, 1, 200);  /* bigger insert */
    check_edit(ch, &p, data, len, len / 5, 5000, 0); /* bigger delete */
    free(data);
    cfr_chunker_free(ch);
}

static double
now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Streams total bytes of random data as one file; checks every chunk. */
static void
check_sizes(const struct cfr_chunk_params *p, size_t total)
{
    struct cfr_chunker *ch = new_chunker(7, p);
    size_t block = 1u << 20;
    uint8_t *buf = malloc(block);
    assert_non_null(buf);
    uint64_t seed = 1234;
    size_t cur = 0; /* bytes of the current chunk */
    size_t chunks = 0;
    size_t at_max = 0;
    size_t smallest = SIZE_MAX;
    size_t largest = 0;
    double spent = 0;
    for (size_t done = 0; done < total; done += block) {
        fill_random(&seed, buf, block);
        double t0 = now_sec();
        size_t off = 0;
        while (off < block) {
            size_t k = cfr_chunker_next(ch, buf + off, block - off);
            if (k == 0) {
                cur += block - off;
                break;
            }
            cur += k;
            off += k;
            assert_true(cur >= p->min);
            assert_true(cur <= p->max);
            smallest = cur < smallest ? cur : smallest;
            largest = cur > largest ? cur : largest;
            at_max += cur == p->max;
            chunks++;
            cur = 0;
        }
        spent += now_sec() - t0;
    }
    size_t last = cfr_chunker_finish(ch);
    assert_int_equal(last, cur);
    assert_true(last <= p->max);
    double mean = (double)(total - last) / (double)chunks;
    printf("sizes min=%zu avg=%zu max=%zu: %zu chunks over %zu MB, mean "
           "%.0f (%.2fx avg), smallest %zu, largest %zu, %zu at max, "
           "%.0f MB/s\n",
           p->min, p->avg, p->max, chunks, total >> 20, mean,
           mean / (double)p->avg, smallest, largest, at_max,
           (double)total / 1e6 / spent);
    assert_true(mean >= 0.5 * (double)p->avg);
    assert_true(mean <= 1.5 * (double)p->avg);
    /* Normalization keeps forced max cuts rare. */
    assert_true(at_max * 100 < chunks);
    free(buf);
    cfr_chunker_free(ch);
}

static void
test_chunk_sizes_stay_in_bounds(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    cfr_chunk_params_default(&p);
    check_sizes(&p, 100u << 20);
    p = (struct cfr_chunk_params){1024, 4096, 32768, 2};
    check_sizes(&p, 32u << 20);
    p = (struct cfr_chunk_params){16384, 65536, 524288, 1};
    check_sizes(&p, 32u << 20);
    p = (struct cfr_chunk_params){2048, 8192, 65536, 0};
    check_sizes(&p, 16u << 20);
}

static void
test_chunk_keys_change_boundaries(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    cfr_chunk_params_default(&p);
    size_t len = 4u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 5;
    fill_random(&seed, data, len);

    struct cfr_chunker *k1 = new_chunker(1, &p);
    struct cfr_chunker *k1b = new_chunker(1, &p);
    struct cfr_chunker *k2 = new_chunker(2, &p);
    struct ends a = split(k1, &p, data, len, NULL, 0);
    struct ends a2 = split(k1b, &p, data, len, NULL, 0);
    struct ends a3 = split(k1, &p, data, len, NULL, 0);
    struct ends b = split(k2, &p, data, len, NULL, 0);
    assert_ends_equal(&a, &a2);
    assert_ends_equal(&a, &a3);
    assert_true(a.n > 100);
    size_t common = 0;
    for (size_t i = 0; i + 1 < b.n; i++) {
        common += has_end(&a, b.v[i]);
    }
    /* Independent tables agree on a cut only by chance. */
    assert_true(common * 20 < b.n);
    printf("keys: %zu and %zu chunks, %zu cuts in common\n", a.n, b.n, common);
    free(a.v);
    free(a2.v);
    free(a3.v);
    free(b.v);
    free(data);
    cfr_chunker_free(k1);
    cfr_chunker_free(k1b);
    cfr_chunker_free(k2);
}

static void
test_chunk_feed_size_does_not_matter(void **state)
{
    (void)state;
    struct cfr_chunk_params p = {256, 1024, 8192, 2};
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 77;
    fill_random(&seed, data, len);
    /* Text-like stretch: low-entropy bytes must cut the same way too. */
    for (size_t i = 300000; i < 400000; i++) {
        data[i] = (uint8_t)("lorem ipsum dolor sit amet\r\n"[i % 28]);
    }
    const uint64_t hints[] = {100,    5000,   5001,   300000, 300000,
                              300010, 700000, 700064, len};
    size_t nh = sizeof(hints) / sizeof(hints[0]);
    struct cfr_chunker *ch = new_chunker(3, &p);
    for (int with_hints = 0; with_hints < 2; with_hints++) {
        size_t h = with_hints ? nh : 0;
        struct ends one = split(ch, &p, data, len, hints, h);
        assert_true(one.n > 200);
        const size_t steps[] = {1, 7, 65536, len};
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            struct ends f = feed(ch, data, len, hints, h, steps[s], NULL);
            assert_ends_equal(&one, &f);
            free(f.v);
        }
        uint64_t step_seed = 11;
        struct ends r = feed(ch, data, len, hints, h, 0, &step_seed);
        assert_ends_equal(&one, &r);
        free(r.v);
        for (size_t i = 0; with_hints && i + 1 < nh; i++) {
            assert_true(has_end(&one, hints[i]));
        }
        free(one.v);
    }
    cfr_chunker_free(ch);
    free(data);
}

static void
test_chunk_small_file_is_one_chunk(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    cfr_chunk_params_default(&p);
    struct cfr_chunker *ch = new_chunker(9, &p);
    uint8_t buf[8192];
    uint64_t seed = 3;
    fill_random(&seed, buf, sizeof(buf));

    struct ends e = split(ch, &p, buf, 100, NULL, 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.v[0], 100);
    free(e.v);
    e = split(ch, &p, buf, p.min, NULL, 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.v[0], p.min);
    free(e.v);
    e = split(ch, &p, buf, 0, NULL, 0);
    assert_int_equal(e.n, 0);
    free(e.v);
    assert_int_equal(cfr_chunker_finish(ch), 0);

    /* A typical 4 KB message with the defaults. */
    char msg[4096];
    size_t n = 0;
    n += (size_t)snprintf(msg, sizeof(msg),
                          "Return-Path: <alice@example.org>\r\n"
                          "From: Alice <alice@example.org>\r\n"
                          "To: Bob <bob@example.net>\r\n"
                          "Subject: lunch\r\n"
                          "Message-ID: <1@example.org>\r\n"
                          "Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n");
    while (n + 40 < sizeof(msg)) {
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s",
                              "Shall we meet at noon near the park?\r\n");
    }
    e = split(ch, &p, (const uint8_t *)msg, n, NULL, 0);
    assert_true(n > 4000);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.v[0], n);
    free(e.v);
    cfr_chunker_free(ch);
}

static void
test_chunk_hints_force_cuts(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    struct cfr_err err;
    cfr_chunk_params_default(&p);
    struct cfr_chunker *ch = new_chunker(4, &p);
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 8;
    fill_random(&seed, data, len);

    const uint64_t hints[] = {0,      1,       2,    3,       10,
                              100,    4096,    4097, 200000,  200000,
                              500000, len - 1, len,  len + 10};
    size_t nh = sizeof(hints) / sizeof(hints[0]);
    struct ends e = split(ch, &p, data, len, hints, nh);
    for (size_t i = 0; i < nh; i++) {
        if (hints[i] > 0 && hints[i] <= len) {
            assert_true(has_end(&e, hints[i]));
        }
    }
    /* No empty chunks; short chunks only at hints. */
    for (size_t i = 0; i < e.n; i++) {
        uint64_t start = i == 0 ? 0 : e.v[i - 1];
        uint64_t size = e.v[i] - start;
        assert_true(size > 0);
        assert_true(size <= p.max);
        bool at_hint = false;
        for (size_t k = 0; k < nh; k++) {
            at_hint = at_hint || hints[k] == e.v[i];
        }
        if (!at_hint) {
            assert_true(size >= p.min);
        }
    }
    assert_int_equal(e.v[0], 1);
    assert_int_equal(e.v[1], 2);
    assert_int_equal(e.v[e.n - 1], len);

    /* After a hint, cutting restarts: the rest chunks as a file alone. */
    const uint64_t rest_hints[] = {500000 - 200000, len - 1 - 200000};
    struct ends r = split(ch, &p, data + 200000, len - 200000, rest_hints, 2);
    size_t at = 0;
    while (e.v[at] != 200000) {
        at++;
    }
    assert_int_equal(e.n - at - 1, r.n);
    for (size_t i = 0; i < r.n; i++) {
        assert_int_equal(e.v[at + 1 + i], r.v[i] + 200000);
    }
    free(r.v);
    free(e.v);

    /* Unsorted hints are a caller bug, reported, and change nothing. */
    const uint64_t unsorted[] = {10, 5};
    cfr_err_clear(&err);
    assert_int_equal(cfr_chunker_set_hints(ch, unsorted, 2, &err), CFR_EINVAL);
    assert_non_null(strstr(err.msg, "sorted"));

    /* Past the cap, hints are ignored. */
    size_t many = CFR_CHUNK_HINTS_MAX + 1000;
    uint64_t *mh = calloc(many, sizeof(*mh));
    assert_non_null(mh);
    for (size_t i = 0; i < many; i++) {
        mh[i] = 10 * (i + 1);
    }
    e = split(ch, &p, data, 100000, mh, many);
    uint64_t last_hint = 10 * CFR_CHUNK_HINTS_MAX;
    for (size_t i = 0; i < CFR_CHUNK_HINTS_MAX; i++) {
        assert_int_equal(e.v[i], mh[i]);
    }
    assert_false(has_end(&e, last_hint + 10));
    assert_true(e.n <= CFR_CHUNK_HINTS_MAX + (100000 - last_hint) / p.min + 1);
    free(e.v);
    free(mh);
    free(data);
    cfr_chunker_free(ch);
}

static size_t
base64_wrap(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        v |= i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0;
        v |= i + 2 < n ? in[i + 2] : 0;
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
        col += 4;
        if (col == 76 && i + 3 < n) {
            out[o++] = '\r';
            out[o++] = '\n';
            col = 0;
        }
    }
    return o;
}

struct dedup {
    size_t shared_hints;
    size_t shared_plain;
};

/* Chunks a and b with and without MIME hints; shared bytes of b. */
static struct dedup
dedup_pair(struct cfr_chunker *ch, const struct cfr_chunk_params *p,
           const char *a, size_t alen, const char *b, size_t blen)
{
    struct dedup d;
    uint64_t ha[64];
    uint64_t hb[64];
    const uint8_t *ua = (const uint8_t *)a;
    const uint8_t *ub = (const uint8_t *)b;
    size_t na = cfr_mime_cuts(ua, alen, ha, 64);
    size_t nb = cfr_mime_cuts(ub, blen, hb, 64);
    assert_true(na > 0);
    assert_true(nb > 0);
    struct ends ea = split(ch, p, ua, alen, ha, na);
    struct ends eb = split(ch, p, ub, blen, hb, nb);
    d.shared_hints = shared_bytes(ua, &ea, ub, &eb);
    free(ea.v);
    free(eb.v);
    ea = split(ch, p, ua, alen, NULL, 0);
    eb = split(ch, p, ub, blen, NULL, 0);
    d.shared_plain = shared_bytes(ua, &ea, ub, &eb);
    free(ea.v);
    free(eb.v);
    return d;
}

static void
test_chunk_hints_share_forwarded_attachment(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    cfr_chunk_params_default(&p);
    struct cfr_chunker *ch = new_chunker(12, &p);
    size_t raw = 150000;
    uint8_t *file = malloc(raw);
    char *b64 = malloc(raw * 2);
    size_t cap = raw * 2 + 4096;
    char *m1 = malloc(cap);
    char *m2 = malloc(cap);
    assert_true(file && b64 && m1 && m2);
    uint64_t seed = 21;
    fill_random(&seed, file, raw);
    size_t b64len = base64_wrap(file, raw, b64);

    int n1 = snprintf(m1, cap,
                      "From: Alice <alice@example.org>\r\n"
                      "To: Bob <bob@example.net>\r\n"
                      "Subject: the report\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: multipart/mixed; boundary=b1\r\n\r\n"
                      "--b1\r\nContent-Type: text/plain\r\n\r\n"
                      "Here it is.\r\n"
                      "--b1\r\nContent-Type: application/pdf; "
                      "name=\"report.pdf\"\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n"
                      "%.*s\r\n--b1--\r\n",
                      (int)b64len, b64);
    int n2 = snprintf(m2, cap,
                      "Received: from mx.example.net by mail.example.com\r\n"
                      "From: Bob <bob@example.net>\r\n"
                      "To: Carol <carol@example.com>\r\n"
                      "Subject: Fwd: the report\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: multipart/mixed;\r\n"
                      "\tboundary=\"=_fwd_2\"\r\n\r\n"
                      "This is a multi-part message in MIME format.\r\n"
                      "--=_fwd_2\r\nContent-Type: text/plain\r\n\r\n"
                      "Carol, see Alice's report below; thoughts?\r\n"
                      "--=_fwd_2\r\nContent-Type: application/pdf; "
                      "name=\"alice-report.pdf\"\r\n"
                      "Content-Transfer-Encoding: base64\r\n"
                      "Content-Disposition: attachment\r\n\r\n"
                      "%.*s\r\n--=_fwd_2--\r\n",
                      (int)b64len, b64);
    assert_true(n1 > 0 && (size_t)n1 < cap);
    assert_true(n2 > 0 && (size_t)n2 < cap);

    struct dedup d = dedup_pair(ch, &p, m1, (size_t)n1, m2, (size_t)n2);
    printf("forwarded attachment (%zu bytes of base64): shared %zu bytes "
           "with hints, %zu without\n",
           b64len, d.shared_hints, d.shared_plain);
    /* With hints the whole attachment is shared; without, its first and
     * last chunks carry surrounding bytes and are lost. */
    assert_true(d.shared_hints >= b64len);
    assert_true(d.shared_plain < b64len);
    assert_true(d.shared_plain < d.shared_hints);

    /* A list message: the same body under other headers. */
    size_t body_len = 20000;
    char *body = malloc(body_len + 1);
    assert_non_null(body);
    for (size_t i = 0; i < body_len; i++) {
        body[i] =
            (char)("abcdefghij klmnopqrst uvwxyz.\r\n"[cfr_splitmix64(&seed) %
                                                       31]);
    }
    n1 = snprintf(m1, cap,
                  "Delivered-To: dave@example.com\r\n"
                  "List-Id: <dev.lists.example.org>\r\n"
                  "Subject: [dev] release\r\n\r\n%.*s",
                  (int)body_len, body);
    n2 = snprintf(m2, cap,
                  "Delivered-To: erin@example.com\r\n"
                  "Received: from lists.example.org by mx2.example.com\r\n"
                  "List-Id: <dev.lists.example.org>\r\n"
                  "Subject: [dev] release\r\n\r\n%.*s",
                  (int)body_len, body);
    d = dedup_pair(ch, &p, m1, (size_t)n1, m2, (size_t)n2);
    printf("list copy (%zu bytes of body): shared %zu bytes with hints, %zu "
           "without\n",
           body_len, d.shared_hints, d.shared_plain);
    assert_int_equal(d.shared_hints, body_len);
    assert_true(d.shared_plain < body_len);
    free(body);
    free(file);
    free(b64);
    free(m1);
    free(m2);
    cfr_chunker_free(ch);
}

static void
test_chunk_files_never_share_a_chunk(void **state)
{
    (void)state;
    struct cfr_chunk_params p = {256, 1024, 8192, 2};
    struct cfr_chunker *ch = new_chunker(5, &p);
    size_t len = 200000;
    uint8_t *a = malloc(len);
    uint8_t *b = malloc(len);
    assert_true(a && b);
    uint64_t seed = 31;
    fill_random(&seed, a, len);
    fill_random(&seed, b, len);
    struct ends eb = split(ch, &p, b, len, NULL, 0);

    /* Half of file a, then a reset: file b chunks as if alone. */
    size_t off = 0;
    while (off < len / 2) {
        size_t k = cfr_chunker_next(ch, a + off, len / 2 - off);
        if (k == 0) {
            break;
        }
        off += k;
    }
    assert_true(cfr_chunker_pending(ch) > 0);
    cfr_chunker_reset(ch);
    assert_int_equal(cfr_chunker_pending(ch), 0);
    struct ends f = feed(ch, b, len, NULL, 0, 1000, NULL);
    assert_ends_equal(&eb, &f);
    free(f.v);

    /* finish() ends a file: the last chunk is what was pending. */
    off = 0;
    size_t last_cut = 0;
    while (off < 5000) {
        size_t k = cfr_chunker_next(ch, a + off, 5000 - off);
        if (k == 0) {
            break;
        }
        off += k;
        last_cut = off;
    }
    assert_int_equal(cfr_chunker_finish(ch), 5000 - last_cut);
    f = feed(ch, b, len, NULL, 0, 333, NULL);
    assert_ends_equal(&eb, &f);
    free(f.v);
    free(eb.v);
    free(a);
    free(b);
    cfr_chunker_free(ch);
}

static void
test_chunk_cut_makes_mbox_messages_chunk_alone(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    struct cfr_err err;
    cfr_chunk_params_default(&p);
    struct cfr_chunker *ch = new_chunker(6, &p);
    size_t len = 300000;
    size_t msg_at = 70001;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 41;
    fill_random(&seed, data, len);
    const uint64_t msg_hints[] = {1000, 120000};

    struct ends alone =
        split(ch, &p, data + msg_at, len - msg_at, msg_hints, 2);

    /* An mbox: some earlier message, then ours starting at msg_at. */
    cfr_chunker_reset(ch);
    size_t off = 0;
    while (off < msg_at) {
        size_t k = cfr_chunker_next(ch, data + off, msg_at - off);
        if (k == 0) {
            break;
        }
        off += k;
    }
    size_t pending = cfr_chunker_pending(ch);
    assert_int_equal(cfr_chunker_cut(ch), pending);
    assert_int_equal(cfr_chunker_cut(ch), 0); /* never an empty chunk */
    const uint64_t file_hints[] = {msg_at + 1000, msg_at + 120000};
    assert_int_equal(cfr_chunker_set_hints(ch, file_hints, 2, &err), 0);
    size_t n = 0;
    off = msg_at;
    while (off < len) {
        size_t k = cfr_chunker_next(ch, data + off, len - off);
        if (k == 0) {
            break;
        }
        off += k;
        assert_true(n < alone.n);
        assert_int_equal(off - msg_at, alone.v[n]);
        n++;
    }
    size_t last = cfr_chunker_finish(ch);
    if (last > 0) {
        n++;
    }
    assert_int_equal(n, alone.n);
    free(alone.v);
    free(data);
    cfr_chunker_free(ch);
}

/*
 * The algorithm as docs/FORMAT.md states it, one byte at a time with no
 * streaming state: the optimized chunker must agree with it exactly.
 */
static size_t
reference_split(const uint64_t gear[CFR_CHUNK_GEAR_LEN],
                const struct cfr_chunk_params *p, const uint8_t *data,
                size_t len, uint64_t *ends)
{
    unsigned b = 0;
    while (((size_t)1 << b) < p->avg) {
        b++;
    }
    uint64_t mask_s = ~UINT64_C(0) << (64 - (b + p->norm));
    uint64_t mask_l = ~UINT64_C(0) << (64 - (b - p->norm));
    size_t n = 0;
    size_t start = 0;
    while (start < len) {
        size_t end = start + p->max < len ? start + p->max : len;
        size_t cut = end;
        uint64_t fp = 0;
        for (size_t i = start + p->min - 64; i < end; i++) {
            fp = (fp << 1) + gear[data[i]];
            size_t size = i + 1 - start;
            if (size >= p->min && size < p->avg && (fp & mask_s) == 0) {
                cut = i + 1;
                break;
            }
            if (size >= p->avg && (fp & mask_l) == 0) {
                cut = i + 1;
                break;
            }
        }
        ends[n++] = cut;
        start = cut;
    }
    return n;
}

static void
test_chunk_matches_reference_and_known_answer(void **state)
{
    (void)state;
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    uint64_t *want = calloc(len / 64 + 2, sizeof(*want));
    assert_true(data && want);
    uint64_t seed = 2;
    fill_random(&seed, data, len);
    /* Low-entropy stretches too: runs and short repeats. */
    memset(data + 100000, 'A', 50000);
    for (size_t i = 600000; i < 700000; i++) {
        data[i] = (uint8_t)("0123456789"[i % 10]);
    }
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    make_gear(1, gear);
    const struct cfr_chunk_params ps[] = {
        {64, 128, 1024, 0},       {256, 1024, 8192, 2},
        {1000, 2048, 3000, 3},    {4096, 16384, 131072, 1},
        {8192, 32768, 262144, 2},
    };
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        struct cfr_chunker *ch = new_chunker(1, &ps[k]);
        size_t nw = reference_split(gear, &ps[k], data, len, want);
        struct ends e = split(ch, &ps[k], data, len, NULL, 0);
        for (size_t i = 0; i < nw && i < e.n; i++) {
            if (e.v[i] != want[i]) {
                printf("k=%zu i=%zu got %llu want %llu prev %llu\n", k, i,
                       (unsigned long long)e.v[i], (unsigned long long)want[i],
                       (unsigned long long)(i ? want[i - 1] : 0));
                break;
            }
        }
        assert_int_equal(e.n, nw);
        assert_memory_equal(e.v, want, nw * sizeof(*want));
        free(e.v);
        cfr_chunker_free(ch);
    }
    /*
     * Frozen: gear = splitmix64 from seed 1, data as above, the defaults.
     * These ends are part of the format (docs/FORMAT.md); if they change,
     * every stored chunk stops deduplicating against new backups.
     */
    const uint64_t frozen[] = {35223,  90179,  152536, 193658,
                               203812, 244870, 278509, 327890};
    struct cfr_chunk_params def;
    cfr_chunk_params_default(&def);
    struct cfr_chunker *ch = new_chunker(1, &def);
    struct ends e = split(ch, &def, data, len, NULL, 0);
    assert_true(e.n >= sizeof(frozen) / sizeof(frozen[0]));
    assert_memory_equal(e.v, frozen, sizeof(frozen));
    free(e.v);
    cfr_chunker_free(ch);
    free(data);
    free(want);
}

static void
test_chunk_limits_and_allocation_failures(void **state)
{
    (void)state;
    struct cfr_chunk_params p;
    struct cfr_err err;
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    cfr_chunk_params_default(&p);
    make_gear(1, gear);
    for (long nth = 1; nth <= 2; nth++) {
        cfr_mem_fail_after(nth);
        cfr_err_clear(&err);
        assert_null(cfr_chunker_new(gear, &p, &err));
        assert_int_equal(err.code, CFR_ENOMEM);
    }
    cfr_mem_fail_after(0);

    struct cfr_chunker *ch = cfr_chunker_new(gear, &p, &err);
    assert_non_null(ch);
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t seed = 2;
    fill_random(&seed, data, len);
    uint64_t ends[8];
    size_t n = 99;
    cfr_err_clear(&err);
    assert_int_equal(
        cfr_chunker_split(ch, data, len, NULL, 0, ends, 8, &n, &err),
        CFR_ELIMIT);
    assert_int_equal(n, 0);
    assert_int_equal(cfr_chunker_pending(ch), 0);
    assert_int_equal(cfr_chunk_count_max(&p, len, 5), len / p.min + 6);
    assert_int_equal(cfr_chunk_count_max(&p, UINT64_MAX, SIZE_MAX),
                     UINT64_MAX / p.min + CFR_CHUNK_HINTS_MAX + 1);
    free(data);
    cfr_chunker_free(ch);
    cfr_chunker_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_params_checked),
        cmocka_unit_test(test_chunk_edits_move_few_boundaries),
        cmocka_unit_test(test_chunk_sizes_stay_in_bounds),
        cmocka_unit_test(test_chunk_keys_change_boundaries),
        cmocka_unit_test(test_chunk_feed_size_does_not_matter),
        cmocka_unit_test(test_chunk_small_file_is_one_chunk),
        cmocka_unit_test(test_chunk_hints_force_cuts),
        cmocka_unit_test(test_chunk_hints_share_forwarded_attachment),
        cmocka_unit_test(test_chunk_files_never_share_a_chunk),
        cmocka_unit_test(test_chunk_cut_makes_mbox_messages_chunk_alone),
        cmocka_unit_test(test_chunk_matches_reference_and_known_answer),
        cmocka_unit_test(test_chunk_limits_and_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
