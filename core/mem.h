/*
 * mem.h - the allocator every module uses for ordinary (non-secret) memory.
 *
 * Going through cfr_malloc lets tests make the Nth allocation fail and check
 * that each error path cleans up (curl's torture idea). Secrets never come
 * from here: they live in sodium_malloc memory owned by secret.c and keys.c.
 *
 * Thread safety: safe; the failure countdown is a global atomic meant for
 * single-threaded tests.
 */
#ifndef CFR_MEM_H
#define CFR_MEM_H

#include <stddef.h>

void *cfr_malloc(size_t size);
void *cfr_calloc(size_t n, size_t size); /* checks n * size for overflow */
void *cfr_realloc(void *p, size_t size);
char *cfr_strdup(const char *s);
void cfr_free(void *p);

/* Frees *pp and sets it to NULL. pp itself must not be NULL. */
#define cfr_free_null(pp)                                                      \
    do {                                                                       \
        cfr_free(*(pp));                                                       \
        *(pp) = NULL;                                                          \
    } while (0)

/*
 * Test hook: the nth allocation from now (1 = the next) and every one after
 * it fail, until reset with 0.
 */
void cfr_mem_fail_after(long nth);

/* Returns 1 and stores a*b in *r, or 0 when it would overflow size_t. */
int cfr_mul_ok(size_t a, size_t b, size_t *r);

#endif /* CFR_MEM_H */
