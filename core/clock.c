/*
 * clock.c - injectable time.
 *
 * Invariant: the monotonic reading of a manual or offset clock moves with its
 * wall reading, so timeouts computed from one and checked with the other stay
 * consistent in tests.
 */
#include "clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum clock_kind { CLOCK_KIND_SYSTEM, CLOCK_KIND_OFFSET, CLOCK_KIND_MANUAL };

struct cfr_clock {
    enum clock_kind kind;
    _Atomic int64_t value_ms; /* offset, or the manual clock's wall time */
};

static struct cfr_clock system_clock = {CLOCK_KIND_SYSTEM, 0};

static int64_t
read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct cfr_clock *
cfr_clock_system(void)
{
    return &system_clock;
}

static struct cfr_clock *
clock_new(enum clock_kind kind, int64_t value_ms)
{
    struct cfr_clock *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->kind = kind;
    atomic_store(&c->value_ms, value_ms);
    return c;
}

struct cfr_clock *
cfr_clock_offset_new(int64_t offset_ms)
{
    return clock_new(CLOCK_KIND_OFFSET, offset_ms);
}

struct cfr_clock *
cfr_clock_manual_new(int64_t start_ms)
{
    return clock_new(CLOCK_KIND_MANUAL, start_ms);
}

void
cfr_clock_free(struct cfr_clock *clock)
{
    if (clock == NULL || clock == &system_clock) {
        return;
    }
    free(clock);
}

int64_t
cfr_clock_now_ms(const struct cfr_clock *clock)
{
    struct cfr_clock *c = (struct cfr_clock *)clock;
    switch (c->kind) {
    case CLOCK_KIND_OFFSET:
        return read_clock(CLOCK_REALTIME) + atomic_load(&c->value_ms);
    case CLOCK_KIND_MANUAL:
        return atomic_load(&c->value_ms);
    case CLOCK_KIND_SYSTEM:
    default:
        return read_clock(CLOCK_REALTIME);
    }
}

int64_t
cfr_clock_mono_ms(const struct cfr_clock *clock)
{
    struct cfr_clock *c = (struct cfr_clock *)clock;
    switch (c->kind) {
    case CLOCK_KIND_OFFSET:
        return read_clock(CLOCK_MONOTONIC) + atomic_load(&c->value_ms);
    case CLOCK_KIND_MANUAL:
        return atomic_load(&c->value_ms);
    case CLOCK_KIND_SYSTEM:
    default:
        return read_clock(CLOCK_MONOTONIC);
    }
}

void
cfr_clock_advance(struct cfr_clock *clock, int64_t delta_ms)
{
    if (clock->kind == CLOCK_KIND_SYSTEM) {
        return;
    }
    atomic_fetch_add(&clock->value_ms, delta_ms);
}

const char *
cfr_clock_format(int64_t ms, char *out, int out_size)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, (size_t)out_size, "invalid");
        return out;
    }
    snprintf(out, (size_t)out_size, "%04d-%02d-%02dT%02d:%02d:%02dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
    return out;
}
