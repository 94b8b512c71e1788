/*
 * mem.c - allocation with a failure hook for tests.
 */
#include "mem.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 0 = off; otherwise the number of allocations left before failing. */
static _Atomic long fail_countdown;

static int
should_fail(void)
{
    long left = atomic_load(&fail_countdown);
    if (left == 0) {
        return 0;
    }
    if (left == 1) {
        return 1; /* Stay at 1: every later allocation fails too. */
    }
    atomic_fetch_sub(&fail_countdown, 1);
    return 0;
}

void
cfr_mem_fail_after(long nth)
{
    atomic_store(&fail_countdown, nth < 0 ? 0 : nth);
}

int
cfr_mul_ok(size_t a, size_t b, size_t *r)
{
    if (a != 0 && b > SIZE_MAX / a) {
        return 0;
    }
    *r = a * b;
    return 1;
}

void *
cfr_malloc(size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(size == 0 ? 1 : size);
}

void *
cfr_calloc(size_t n, size_t size)
{
    size_t total;
    if (!cfr_mul_ok(n, size, &total) || should_fail()) {
        return NULL;
    }
    return calloc(1, total == 0 ? 1 : total);
}

void *
cfr_realloc(void *p, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, size == 0 ? 1 : size);
}

char *
cfr_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cfr_malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

void
cfr_free(void *p)
{
    free(p);
}
