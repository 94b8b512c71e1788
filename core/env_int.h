/*
 * env_int.h - test-only entry points of env.c.
 *
 * Not part of the public API. The hostile-input tests and the env_open
 * fuzzer need envelopes that authenticate but carry payloads no honest
 * sealer writes (a zstd frame without a size, two frames, a frame that
 * lies about its size), to show that the opener's bounds hold even behind
 * a valid tag. Only a session's own key can make such envelopes, so this
 * gives no capability the session holder lacks.
 */
#ifndef CFR_ENV_INT_H
#define CFR_ENV_INT_H

#include <stddef.h>
#include <stdint.h>

#include "env.h"

/*
 * Seals payload as given (no compression, no verification) under the
 * session, writing comp into the header unchecked. Replaces out.
 */
int cfr_env_test_seal_payload(struct cfr_session *s, uint8_t type,
                              const uint8_t id[32], uint8_t comp,
                              const void *payload, size_t len,
                              struct cfr_buf *out, struct cfr_err *err);

#endif /* CFR_ENV_INT_H */
