/*
 * secret.h - libsodium start-up and guarded memory for secrets.
 *
 * Every key Coffer holds (tenant master key, X25519 secret keys, subkeys,
 * session keys, decrypted key-file payloads) lives in a struct cfr_secret:
 * sodium_malloc memory, which sits between guard pages, ends at a page
 * boundary with a canary, is locked against swapping where the system allows
 * it, and is wiped by sodium_free. A secret can be made read-only after it
 * is filled and inaccessible (PROT_NONE) while idle, so a stray pointer or an
 * over-read elsewhere faults instead of leaking key bytes.
 *
 * Each secret costs three to four pages: hold keys here, never bulk data.
 *
 * This header also gives the modules that may not include libsodium (see
 * scripts/checksrc.sh) the three sodium utilities they need: a wipe that the
 * compiler cannot elide, a constant-time comparison and OS randomness.
 *
 * Thread safety: cfr_crypto_init may be called from any thread, any number
 * of times. A struct cfr_secret has one owner; changing its protection is
 * not synchronised, so owners that share one across threads (keys.c) guard
 * it with their own lock.
 */
#ifndef CFR_SECRET_H
#define CFR_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

struct cfr_secret;

/*
 * Initialises libsodium (idempotent). Call it once before starting threads;
 * constructors in secret.c, keys.c and env.c call it too, so forgetting it
 * is harmless. Returns 0 or CFR_EINTERNAL.
 */
int cfr_crypto_init(struct cfr_err *err);

/*
 * Returns owned: a zero-filled, read-write secret of len bytes (len >= 1),
 * or NULL with CFR_ENOMEM (or CFR_EINVAL for len 0).
 */
struct cfr_secret *cfr_secret_new(size_t len, struct cfr_err *err);
/* Wipes and frees; accepts NULL. */
void cfr_secret_free(struct cfr_secret *s);

size_t cfr_secret_len(const struct cfr_secret *s);

/* Makes the secret writable and returns its bytes. */
uint8_t *cfr_secret_rw(struct cfr_secret *s);
/* Makes the secret read-only and returns its bytes. */
const uint8_t *cfr_secret_ro(struct cfr_secret *s);
/*
 * Makes the secret inaccessible until the next cfr_secret_rw/ro: any read
 * or write through an old pointer faults.
 */
void cfr_secret_lock(struct cfr_secret *s);
/* True when the secret is currently inaccessible (for tests). */
bool cfr_secret_is_locked(const struct cfr_secret *s);

/* Wipes n bytes in a way the compiler cannot optimise out. */
void cfr_wipe(void *p, size_t n);

/*
 * Compares n bytes in time independent of their content: true when equal.
 * Use it for tags, IDs and keys.
 */
bool cfr_ct_equal(const void *a, const void *b, size_t n)
    __attribute__((warn_unused_result));

/* Fills p with n bytes from the operating system's CSPRNG. */
void cfr_crypto_random(void *p, size_t n);

#endif /* CFR_SECRET_H */
