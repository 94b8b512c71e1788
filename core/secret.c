/*
 * secret.c - libsodium start-up and sodium_malloc'd secrets.
 *
 * Invariants:
 *  1. A secret's bytes are only ever in sodium_malloc memory; the struct
 *     that points to them holds no key material and comes from cfr_malloc.
 *  2. prot always records the protection last applied to the bytes, so
 *     cfr_secret_is_locked tells the truth and free never touches memory it
 *     cannot access (sodium_free unprotects before wiping).
 *  3. cfr_secret_free wipes: sodium_free zeroes the whole region.
 */
#include "secret.h"

#include <sodium.h>
#include <string.h>

#include "mem.h" /* cfr_malloc for the handle, never for the bytes */

enum secret_prot {
    SECRET_RW = 0,
    SECRET_RO = 1,
    SECRET_NOACCESS = 2,
};

struct cfr_secret {
    uint8_t *bytes; /* sodium_malloc'd */
    size_t len;
    enum secret_prot prot;
};

int
cfr_crypto_init(struct cfr_err *err)
{
    /* sodium_init is thread-safe and returns 1 when already initialised. */
    if (sodium_init() < 0) {
        return CFR_ERR(err, CFR_EINTERNAL, "libsodium failed to initialise");
    }
    return 0;
}

struct cfr_secret *
cfr_secret_new(size_t len, struct cfr_err *err)
{
    struct cfr_secret *s = NULL;

    if (len == 0) {
        CFR_ERR(err, CFR_EINVAL, "empty secret");
        goto out;
    }
    /* sodium_malloc needs the page size that sodium_init records. */
    if (cfr_crypto_init(err) != 0) {
        goto out;
    }
    s = cfr_malloc(sizeof(*s));
    if (s == NULL) {
        CFR_ERR(err, CFR_ENOMEM, "out of memory for a secret handle");
        goto out;
    }
    s->bytes = sodium_malloc(len);
    if (s->bytes == NULL) {
        cfr_free_null(&s);
        CFR_ERR(err, CFR_ENOMEM, "sodium_malloc(%zu) failed", len);
        goto out;
    }
    /* sodium_malloc fills with 0xdb to expose uninitialised use; we want a
     * defined start. */
    sodium_memzero(s->bytes, len);
    s->len = len;
    s->prot = SECRET_RW;
out:
    return s;
}

void
cfr_secret_free(struct cfr_secret *s)
{
    if (s == NULL) {
        return;
    }
    sodium_free(s->bytes);
    cfr_free(s);
}

size_t
cfr_secret_len(const struct cfr_secret *s)
{
    return s->len;
}

uint8_t *
cfr_secret_rw(struct cfr_secret *s)
{
    if (s->prot != SECRET_RW) {
        CFR_ASSERT(sodium_mprotect_readwrite(s->bytes) == 0);
        s->prot = SECRET_RW;
    }
    return s->bytes;
}

const uint8_t *
cfr_secret_ro(struct cfr_secret *s)
{
    if (s->prot != SECRET_RO) {
        CFR_ASSERT(sodium_mprotect_readonly(s->bytes) == 0);
        s->prot = SECRET_RO;
    }
    return s->bytes;
}

void
cfr_secret_lock(struct cfr_secret *s)
{
    if (s->prot != SECRET_NOACCESS) {
        CFR_ASSERT(sodium_mprotect_noaccess(s->bytes) == 0);
        s->prot = SECRET_NOACCESS;
    }
}

bool
cfr_secret_is_locked(const struct cfr_secret *s)
{
    return s->prot == SECRET_NOACCESS;
}

void
cfr_wipe(void *p, size_t n)
{
    sodium_memzero(p, n);
}

bool
cfr_ct_equal(const void *a, const void *b, size_t n)
{
    return sodium_memcmp(a, b, n) == 0;
}

void
cfr_crypto_random(void *p, size_t n)
{
    randombytes_buf(p, n);
}
