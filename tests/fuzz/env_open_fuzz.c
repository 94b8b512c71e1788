/*
 * env_open_fuzz.c - cfr_env_open under hostile bytes.
 *
 * The harness builds one fixed full keyring from a fixed random stream (the
 * same one env_test uses to write the seeds in corpus/env_open/), an opener
 * and a session. Input layout: one mode byte, a 32-byte object ID, then
 *   mode < 0x80: an envelope, opened as object type `mode`;
 *   mode >= 0x80: a payload, sealed as is with the session key
 *     (cfr_env_test_seal_payload: type ((mode >> 1) & 3) + 1, compression
 *     mode & 1) and then opened, so the fuzzer reaches the zstd and size
 *     checks that sit behind a tag it could never forge.
 * Every open either fails with a clean error and an empty output, or
 * returns at most the bound it was given.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "env.h"
#include "env_int.h"
#include "err.h"
#include "id.h"
#include "keys.h"
#include "keys_int.h"
#include "test_random.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PLAIN ((size_t)1 << 20)

static struct cfr_keyring *kr;
static struct cfr_opener *op;
static struct cfr_session *sess;
static struct cfr_buf plain;
static struct cfr_buf forged;

static void
setup(void)
{
    struct det_random d;
    struct cfr_err err;
    static const char label[] = "coffer env_open fuzz keyring v1";
    memset(&d, 0, sizeof(d));
    cfr_id_plain(label, sizeof(label) - 1, d.seed);
    d.used = sizeof(d.block);
    cfr_keys_test_set_random(det_fill, &d);
    kr = cfr_keyring_generate(INT64_C(1767225600000), &err);
    cfr_keys_test_set_random(NULL, NULL);
    CFR_ASSERT(kr != NULL);
    op = cfr_opener_new(kr, &err);
    sess = cfr_session_new(kr, 3, &err);
    CFR_ASSERT(op != NULL && sess != NULL);
    cfr_buf_init(&plain, MAX_PLAIN);
    cfr_buf_init(&forged, CFR_ENV_PLAIN_MAX + CFR_ENV_OVERHEAD);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfr_err err;
    const uint8_t *env;
    size_t len;
    int type;

    if (kr == NULL) {
        setup();
    }
    if (size < 33) {
        return 0;
    }
    const uint8_t *id = data + 1;
    if (data[0] >= 0x80) {
        type = ((data[0] >> 1) & 3) + 1;
        if (cfr_env_test_seal_payload(sess, (uint8_t)type, id, data[0] & 1,
                                      data + 33, size - 33, &forged,
                                      &err) != 0) {
            return 0;
        }
        env = forged.data;
        len = forged.len;
    } else {
        type = data[0];
        env = data + 33;
        len = size - 33;
    }
    struct cfr_env_header h;
    (void)cfr_env_peek(env, len, &h, &err);
    int rc = cfr_env_open(op, (enum cfr_env_type)type, id, env, len, MAX_PLAIN,
                          &plain, &err);
    CFR_ASSERT(rc == 0 || plain.len == 0);
    CFR_ASSERT(plain.len <= MAX_PLAIN);
    CFR_ASSERT(rc == 0 || err.code == rc);
    return 0;
}
