/*
 * ratelimit.c - a fixed-size, set-associative table of failure windows.
 *
 * Layout: slots entries in buckets of RL_WAYS; a key's bucket comes from
 * SipHash-2-4 under a random per-process key, so clients cannot aim keys
 * at one bucket. Each entry owns max_failures timestamps in one shared
 * array (entry i owns times[i * max_failures ...]), used as a ring.
 *
 * Invariants:
 *  1. Nothing is allocated after cfr_ratelimit_new.
 *  2. An entry is locked iff locked_until > now; a lockout is never
 *     shortened by later failures, nor extended by failures during it.
 *  3. Eviction picks, in order: a free way, the unlocked way used least
 *     recently, the locked way whose lockout ends soonest (counted in
 *     evicted_locked; only reachable when a whole bucket is locked).
 *  4. The eval cap is a sliding-window estimate over two fixed periods
 *     (the previous period weighted by how much of it still overlaps the
 *     window, plus the current one): O(1) state, never more than about
 *     eval_cap evaluations per window.
 */
#include "ratelimit.h"

#include <pthread.h>
#include <string.h>

#include "buf.h"    /* cfr_hex_encode */
#include "mem.h"    /* cfr_calloc, cfr_mul_ok */
#include "secret.h" /* cfr_crypto_random: the hash key */

#define RL_WAYS 8

enum rl_kind {
    RL_IDENTITY = 1,
    RL_ADDRESS = 2,
};

struct rl_entry {
    uint64_t hash;
    uint8_t used;
    uint8_t kind;
    uint16_t key_len;
    unsigned n_fails; /* timestamps in the ring */
    unsigned head;    /* next ring position to write */
    unsigned eval_cur;
    unsigned eval_prev;
    int64_t eval_period; /* index of the current eval period */
    int64_t last_ms;
    int64_t locked_until;
    char key[CFR_RATELIMIT_KEY_MAX];
};

struct cfr_ratelimit {
    pthread_mutex_t lock;
    struct cfr_clock *clock;
    struct cfr_ratelimit_opts o;
    size_t n_buckets;
    struct rl_entry *entries;
    int64_t *times;
    uint64_t sip_k0, sip_k1;
    struct cfr_ratelimit_stats st;
};

/* ---- SipHash-2-4, written from the paper (Aumasson, Bernstein 2012) --- */

static inline uint64_t
rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = rotl(v1, 13);                                                     \
        v1 ^= v0;                                                              \
        v0 = rotl(v0, 32);                                                     \
        v2 += v3;                                                              \
        v3 = rotl(v3, 16);                                                     \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = rotl(v3, 21);                                                     \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = rotl(v1, 17);                                                     \
        v1 ^= v2;                                                              \
        v2 = rotl(v2, 32);                                                     \
    } while (0)

static uint64_t
siphash(uint64_t k0, uint64_t k1, uint8_t tag, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    /* The kind is hashed as a leading byte, so kinds never share keys. */
    size_t total = len + 1;
    uint8_t block[8];
    size_t bi = 0;

    block[bi++] = tag;
    for (size_t i = 0; i < total - 1; i++) {
        block[bi++] = p[i];
        if (bi == 8) {
            uint64_t m = cfr_get_le64(block);
            v3 ^= m;
            SIPROUND;
            SIPROUND;
            v0 ^= m;
            bi = 0;
        }
    }
    memset(block + bi, 0, 8 - bi);
    block[7] = (uint8_t)total;
    uint64_t m = cfr_get_le64(block);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- keys ------------------------------------------------------------- */

struct rl_key {
    uint64_t hash;
    uint8_t kind;
    uint16_t len;
    char text[CFR_RATELIMIT_KEY_MAX];
};

/*
 * Builds the stored form of a key: verbatim when it fits, otherwise a
 * prefix plus the hex of the full key's hash, so long keys stay distinct.
 */
static void
key_make(const struct cfr_ratelimit *rl, uint8_t kind, const char *s,
         struct rl_key *k)
{
    size_t n = strlen(s);
    k->kind = kind;
    k->hash = siphash(rl->sip_k0, rl->sip_k1, kind, s, n);
    if (n < CFR_RATELIMIT_KEY_MAX) {
        memcpy(k->text, s, n + 1);
        k->len = (uint16_t)n;
        return;
    }
    size_t keep = CFR_RATELIMIT_KEY_MAX - 18;
    uint8_t hb[8];
    memcpy(k->text, s, keep);
    k->text[keep] = '#';
    cfr_put_le64(hb, k->hash);
    cfr_hex_encode(hb, sizeof(hb), k->text + keep + 1);
    k->len = (uint16_t)(keep + 17);
}

static struct rl_entry *
bucket_of(struct cfr_ratelimit *rl, uint64_t hash, size_t *index_r)
{
    size_t b = (size_t)(hash % rl->n_buckets);
    *index_r = b * RL_WAYS;
    return &rl->entries[b * RL_WAYS];
}

static struct rl_entry *
find(struct cfr_ratelimit *rl, const struct rl_key *k)
{
    size_t base;
    struct rl_entry *b = bucket_of(rl, k->hash, &base);
    for (size_t i = 0; i < RL_WAYS; i++) {
        struct rl_entry *e = &b[i];
        if (e->used && e->hash == k->hash && e->kind == k->kind &&
            e->key_len == k->len && memcmp(e->key, k->text, k->len) == 0) {
            return e;
        }
    }
    return NULL;
}

static int64_t *
ring_of(struct cfr_ratelimit *rl, const struct rl_entry *e)
{
    size_t idx = (size_t)(e - rl->entries);
    return &rl->times[idx * rl->o.max_failures];
}

static struct rl_entry *
find_or_insert(struct cfr_ratelimit *rl, const struct rl_key *k, int64_t now)
{
    struct rl_entry *e = find(rl, k);
    if (e != NULL) {
        return e;
    }
    size_t base;
    struct rl_entry *b = bucket_of(rl, k->hash, &base);
    struct rl_entry *victim = NULL;
    int victim_rank = 3; /* 0 free, 1 unlocked, 2 locked */
    int64_t victim_age = 0;
    for (size_t i = 0; i < RL_WAYS; i++) {
        struct rl_entry *c = &b[i];
        int rank = !c->used ? 0 : (c->locked_until > now ? 2 : 1);
        /* Within a rank, smaller is evicted first: last use, or for
         * locked entries the end of the lockout. */
        int64_t age = rank == 2 ? c->locked_until : c->last_ms;
        if (rank < victim_rank || (rank == victim_rank && age < victim_age)) {
            victim = c;
            victim_rank = rank;
            victim_age = age;
        }
    }
    if (victim_rank > 0) {
        rl->st.evictions++;
        if (victim_rank == 2) {
            rl->st.evicted_locked++;
        }
    } else {
        rl->st.entries++;
    }
    memset(victim, 0, sizeof(*victim));
    victim->used = 1;
    victim->hash = k->hash;
    victim->kind = k->kind;
    victim->key_len = k->len;
    memcpy(victim->key, k->text, k->len);
    victim->last_ms = now;
    victim->eval_period = now / rl->o.eval_window_ms;
    return victim;
}

/* ---- public ----------------------------------------------------------- */

struct cfr_ratelimit *
cfr_ratelimit_new(const struct cfr_ratelimit_opts *opts,
                  struct cfr_clock *clock, struct cfr_err *err)
{
    struct cfr_ratelimit *rl = NULL;
    struct cfr_ratelimit_opts o = {0};
    size_t n_times = 0;
    uint8_t seed[16];

    if (opts != NULL) {
        o = *opts;
    }
    if (o.slots == 0) {
        o.slots = CFR_RATELIMIT_DEFAULT_SLOTS;
    }
    if (o.max_failures == 0) {
        o.max_failures = CFR_RATELIMIT_DEFAULT_MAX_FAILURES;
    }
    if (o.window_ms == 0) {
        o.window_ms = CFR_RATELIMIT_DEFAULT_WINDOW_MS;
    }
    if (o.lockout_ms == 0) {
        o.lockout_ms = CFR_RATELIMIT_DEFAULT_LOCKOUT_MS;
    }
    if (o.eval_cap == 0) {
        o.eval_cap = CFR_RATELIMIT_DEFAULT_EVAL_CAP;
    }
    if (o.eval_window_ms == 0) {
        o.eval_window_ms = CFR_RATELIMIT_DEFAULT_EVAL_WINDOW;
    }
    if (clock == NULL || o.max_failures > CFR_RATELIMIT_FAILURES_MAX ||
        o.window_ms < 0 || o.lockout_ms < 0 || o.eval_window_ms < 0 ||
        o.slots > (SIZE_MAX / 2)) {
        CFR_ERR(err, CFR_EINVAL, "ratelimit: bad options");
        goto out;
    }
    /* Whole buckets only. */
    o.slots = (o.slots + RL_WAYS - 1) / RL_WAYS * RL_WAYS;
    if (!cfr_mul_ok(o.slots, o.max_failures, &n_times)) {
        CFR_ERR(err, CFR_EINVAL, "ratelimit: table too large");
        goto out;
    }
    rl = cfr_calloc(1, sizeof(*rl));
    if (rl == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "ratelimit: out of memory");
        goto out;
    }
    rl->entries = cfr_calloc(o.slots, sizeof(*rl->entries));
    rl->times = cfr_calloc(n_times, sizeof(*rl->times));
    if (rl->entries == NULL || rl->times == NULL) {
        cfr_free(rl->entries);
        cfr_free(rl->times);
        cfr_free_null(&rl);
        CFR_ERR(err, CFR_ENOMEM, "ratelimit: out of memory");
        goto out;
    }
    pthread_mutex_init(&rl->lock, NULL);
    rl->clock = clock;
    rl->o = o;
    rl->n_buckets = o.slots / RL_WAYS;
    cfr_crypto_init(NULL);
    cfr_crypto_random(seed, sizeof(seed));
    rl->sip_k0 = cfr_get_le64(seed);
    rl->sip_k1 = cfr_get_le64(seed + 8);
    rl->st.slots = o.slots;
out:
    return rl;
}

void
cfr_ratelimit_free(struct cfr_ratelimit *rl)
{
    if (rl == NULL) {
        return;
    }
    pthread_mutex_destroy(&rl->lock);
    cfr_free(rl->entries);
    cfr_free(rl->times);
    cfr_free(rl);
}

static bool
present(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int
cfr_ratelimit_check(struct cfr_ratelimit *rl, const char *identity,
                    const char *addr, int64_t *retry_after_ms_r)
{
    struct rl_key keys[2];
    size_t n = 0;
    int64_t wait = 0;

    if (retry_after_ms_r != NULL) {
        *retry_after_ms_r = 0;
    }
    /* Hash outside the lock: the table is only touched below. */
    if (present(identity)) {
        key_make(rl, RL_IDENTITY, identity, &keys[n++]);
    }
    if (present(addr)) {
        key_make(rl, RL_ADDRESS, addr, &keys[n++]);
    }
    int64_t now = cfr_clock_mono_ms(rl->clock);
    pthread_mutex_lock(&rl->lock);
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = find(rl, &keys[i]);
        if (e != NULL && e->locked_until > now &&
            e->locked_until - now > wait) {
            wait = e->locked_until - now;
        }
    }
    if (wait > 0) {
        rl->st.refused++;
    }
    pthread_mutex_unlock(&rl->lock);
    if (wait > 0) {
        if (retry_after_ms_r != NULL) {
            *retry_after_ms_r = wait;
        }
        return CFR_ELIMIT;
    }
    return 0;
}

/*
 * Counts one failure against e; returns CFR_RATELIMIT_DROPPED when over
 * the eval cap, 1 when it started a lockout, 0 otherwise. Lock held.
 */
static unsigned
fail_one(struct cfr_ratelimit *rl, struct rl_entry *e, int64_t now)
{
    int64_t w = rl->o.eval_window_ms;
    int64_t period = now / w;
    if (period != e->eval_period) {
        e->eval_prev = period == e->eval_period + 1 ? e->eval_cur : 0;
        e->eval_cur = 0;
        e->eval_period = period;
    }
    /* Weight of the previous period: the part still inside the window. */
    int64_t into = now - period * w;
    uint64_t est = (uint64_t)e->eval_prev * (uint64_t)(w - into) / (uint64_t)w +
                   e->eval_cur;
    e->last_ms = now;
    if (est >= rl->o.eval_cap) {
        rl->st.dropped++;
        return CFR_RATELIMIT_DROPPED;
    }
    e->eval_cur++;
    rl->st.evaluated++;
    if (e->locked_until > now) {
        return 0;
    }
    int64_t *ring = ring_of(rl, e);
    unsigned cap = rl->o.max_failures;
    ring[e->head] = now;
    e->head = (e->head + 1) % cap;
    if (e->n_fails < cap) {
        e->n_fails++;
    }
    /* Full ring: the oldest of the last cap failures sits at head. */
    if (e->n_fails == cap && ring[e->head % cap] > now - rl->o.window_ms) {
        e->locked_until = now + rl->o.lockout_ms;
        e->n_fails = 0;
        e->head = 0;
        rl->st.lockouts++;
        return 1;
    }
    return 0;
}

unsigned
cfr_ratelimit_fail(struct cfr_ratelimit *rl, const char *identity,
                   const char *addr)
{
    struct rl_key keys[2];
    unsigned kinds[2];
    size_t n = 0;
    unsigned out = 0;

    if (present(identity)) {
        key_make(rl, RL_IDENTITY, identity, &keys[n]);
        kinds[n++] = CFR_RATELIMIT_LOCKED_IDENTITY;
    }
    if (present(addr)) {
        key_make(rl, RL_ADDRESS, addr, &keys[n]);
        kinds[n++] = CFR_RATELIMIT_LOCKED_ADDRESS;
    }
    int64_t now = cfr_clock_mono_ms(rl->clock);
    pthread_mutex_lock(&rl->lock);
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = find_or_insert(rl, &keys[i], now);
        unsigned r = fail_one(rl, e, now);
        if (r == CFR_RATELIMIT_DROPPED) {
            out |= CFR_RATELIMIT_DROPPED;
        } else if (r == 1) {
            out |= kinds[i];
        }
    }
    pthread_mutex_unlock(&rl->lock);
    return out;
}

void
cfr_ratelimit_reset(struct cfr_ratelimit *rl, const char *identity,
                    const char *addr)
{
    struct rl_key keys[2];
    size_t n = 0;

    if (present(identity)) {
        key_make(rl, RL_IDENTITY, identity, &keys[n++]);
    }
    if (present(addr)) {
        key_make(rl, RL_ADDRESS, addr, &keys[n++]);
    }
    pthread_mutex_lock(&rl->lock);
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *e = find(rl, &keys[i]);
        if (e != NULL) {
            memset(e, 0, sizeof(*e));
            rl->st.entries--;
        }
    }
    pthread_mutex_unlock(&rl->lock);
}

void
cfr_ratelimit_stats(struct cfr_ratelimit *rl,
                    struct cfr_ratelimit_stats *stats_r)
{
    pthread_mutex_lock(&rl->lock);
    *stats_r = rl->st;
    pthread_mutex_unlock(&rl->lock);
}
