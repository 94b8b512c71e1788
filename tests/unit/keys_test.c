/*
 * keys_test.c - the keyring and its key files: frozen vectors, round trips,
 * hostile and damaged files, permissions, rotation, passphrase change,
 * escrow, and allocation failures.
 *
 * Known-answer vectors live in tests/vectors/keyfile-*.bin with their
 * passphrases and expected fields in tests/vectors/keyfile-vectors.txt.
 * test_keys_vectors_reencode rebuilds them from a fixed random stream and
 * must reproduce them byte for byte; to regenerate after a deliberate
 * format change (and only then), run
 *   COFFER_WRITE_VECTORS=1 ./keys_test
 * from the build directory, which also refreshes the keyfile fuzz corpus.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "id.h"
#include "keys.h"
#include "keys_int.h"
#include "mem.h"
#include "secret.h"
#include "test_files.h"
#include "test_random.h"

static const struct cfr_kdf_params MIN_PARAMS = {CFR_KDF_OPS_MIN,
                                                 CFR_KDF_MEM_MIN};
static const int64_t T0 = INT64_C(1767225600000); /* 2026-01-01T00:00Z */
static const int64_t DAY = INT64_C(86400000);

static void
det_start(struct det_random *d, const char *label)
{
    memset(d, 0, sizeof(*d));
    cfr_id_plain(label, strlen(label), d->seed);
    d->used = sizeof(d->block);
    cfr_keys_test_set_random(det_fill, d);
}

/* Everything a keyring exposes that two equal keyrings must share. */
static void
assert_same_keys(const struct cfr_keyring *a, const struct cfr_keyring *b)
{
    assert_memory_equal(cfr_keyring_tenant_id(a), cfr_keyring_tenant_id(b),
                        CFR_TENANT_ID_LEN);
    assert_int_equal(cfr_keyring_key_count(a), cfr_keyring_key_count(b));
    assert_int_equal(cfr_keyring_current_key_id(a),
                     cfr_keyring_current_key_id(b));
    assert_memory_equal(cfr_keyring_chunk_key(a), cfr_keyring_chunk_key(b),
                        CFR_SUBKEY_LEN);
    assert_memory_equal(cfr_keyring_name_key(a), cfr_keyring_name_key(b),
                        CFR_SUBKEY_LEN);
    uint64_t ga[256];
    uint64_t gb[256];
    cfr_keyring_gear_table(a, ga);
    cfr_keyring_gear_table(b, gb);
    assert_memory_equal(ga, gb, sizeof(ga));
    for (uint32_t id = 1; id <= cfr_keyring_current_key_id(a); id++) {
        uint8_t pa[CFR_PUBKEY_LEN];
        uint8_t pb[CFR_PUBKEY_LEN];
        int64_t ca = 0;
        int64_t cb = 0;
        int ra = cfr_keyring_public_key(a, id, pa, &ca, NULL);
        assert_int_equal(ra, cfr_keyring_public_key(b, id, pb, &cb, NULL));
        if (ra == 0) {
            assert_memory_equal(pa, pb, CFR_PUBKEY_LEN);
            assert_int_equal(ca, cb);
        }
    }
}

static char tmpdir[256];

static int
setup_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/coffer-keys-test.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_tmpdir(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A few rotating buffers, so a test can hold several paths at once. */
static const char *
tmp_path(const char *name)
{
    static char paths[4][512];
    static unsigned next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", tmpdir, name);
    return path;
}

static void
test_keys_generate_and_agent_view(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_non_null(kr);
    assert_int_equal(cfr_keyring_kind(kr), CFR_KEYRING_FULL);
    assert_true(cfr_keyring_can_open(kr));
    assert_int_equal(cfr_keyring_current_key_id(kr), 1);
    assert_int_equal(cfr_keyring_key_count(kr), 1);
    uint8_t zero[32] = {0};
    assert_memory_not_equal(cfr_keyring_tenant_id(kr), zero, CFR_TENANT_ID_LEN);
    assert_memory_not_equal(cfr_keyring_chunk_key(kr), zero, 32);
    /* Three subkeys, three different keys. */
    assert_memory_not_equal(cfr_keyring_chunk_key(kr), cfr_keyring_name_key(kr),
                            32);
    uint8_t pk[CFR_PUBKEY_LEN];
    int64_t created = 0;
    assert_int_equal(cfr_keyring_public_key(kr, 1, pk, &created, &err), 0);
    assert_int_equal(created, T0);
    assert_int_equal(cfr_keyring_public_key(kr, 2, pk, NULL, &err),
                     CFR_ENOTFOUND);

    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    assert_non_null(agent);
    assert_int_equal(cfr_keyring_kind(agent), CFR_KEYRING_AGENT);
    assert_false(cfr_keyring_can_open(agent));
    assert_same_keys(kr, agent);

    /* IDs agree between the sides; another tenant's differ. */
    uint8_t a[32];
    uint8_t b[32];
    cfr_keyring_chunk_id(kr, "hello", 5, a);
    cfr_keyring_chunk_id(agent, "hello", 5, b);
    assert_memory_equal(a, b, 32);
    cfr_keyring_name_id(kr, "INBOX", 5, b);
    assert_memory_not_equal(a, b, 32);
    struct cfr_keyring *other = cfr_keyring_generate(T0, &err);
    assert_non_null(other);
    cfr_keyring_chunk_id(other, "hello", 5, b);
    assert_memory_not_equal(a, b, 32);
    assert_memory_not_equal(cfr_keyring_tenant_id(kr),
                            cfr_keyring_tenant_id(other), CFR_TENANT_ID_LEN);

    /* The gear table is keyed and looks random: all 256 entries differ. */
    uint64_t g1[256];
    uint64_t g2[256];
    cfr_keyring_gear_table(kr, g1);
    cfr_keyring_gear_table(other, g2);
    assert_memory_not_equal(g1, g2, sizeof(g1));
    for (size_t i = 0; i < 256; i++) {
        for (size_t j = i + 1; j < 256; j++) {
            assert_true(g1[i] != g1[j]);
        }
    }
    cfr_keyring_free(other);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
    cfr_keyring_free(NULL);
}

/* Builds the vector keyrings from the fixed stream: an agent view of the
 * first key pair, then the full keyring after one rotation. */
static void
make_vectors(struct cfr_buf *agent_file, struct cfr_buf *full_file,
             const char *agent_pass, const char *full_pass)
{
    struct det_random d;
    struct cfr_err err;
    det_start(&d, "coffer keyfile vectors v1");
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_non_null(kr);
    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    assert_non_null(agent);
    assert_int_equal(cfr_keyring_encode(agent, agent_pass, strlen(agent_pass),
                                        &MIN_PARAMS, agent_file, &err),
                     0);
    assert_int_equal(cfr_keyring_rotate(kr, T0 + DAY, &err), 0);
    assert_int_equal(cfr_keyring_encode(kr, full_pass, strlen(full_pass),
                                        &MIN_PARAMS, full_file, &err),
                     0);
    cfr_keys_test_set_random(NULL, NULL);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
write_vectors(void)
{
    const char *agent_pass = "agent vector passphrase";
    const char *full_pass = "correct horse battery staple";
    struct cfr_buf af;
    struct cfr_buf ff;
    struct cfr_err err;
    cfr_buf_init(&af, CFR_KEYFILE_MAX);
    cfr_buf_init(&ff, CFR_KEYFILE_MAX);
    make_vectors(&af, &ff, agent_pass, full_pass);
    write_file(vec_path("keyfile-agent.bin"), af.data, af.len);
    write_file(vec_path("keyfile-full.bin"), ff.data, ff.len);

    struct cfr_keyring *kr =
        cfr_keyring_decode(ff.data, ff.len, full_pass, strlen(full_pass), &err);
    assert_non_null(kr);
    FILE *f = fopen(vec_path("keyfile-vectors.txt"), "w");
    assert_non_null(f);
    char hex[129];
    fprintf(f, "# Known answers for keyfile-agent.bin and keyfile-full.bin.\n"
               "# Written by COFFER_WRITE_VECTORS=1 keys_test; see "
               "FORMAT.md.\n"
               "# Lines: name value (value = rest of the line).\n");
    fprintf(f, "agent.passphrase %s\n", agent_pass);
    fprintf(f, "full.passphrase %s\n", full_pass);
    fprintf(f, "tenant_id %s\n",
            cfr_hex_encode(cfr_keyring_tenant_id(kr), 16, hex));
    for (uint32_t id = 1; id <= 2; id++) {
        uint8_t pk[32];
        int64_t created;
        assert_int_equal(cfr_keyring_public_key(kr, id, pk, &created, &err), 0);
        fprintf(f, "key%u.pk %s\n", (unsigned)id, cfr_hex_encode(pk, 32, hex));
        fprintf(f, "key%u.created_ms %lld\n", (unsigned)id, (long long)created);
    }
    uint8_t id[32];
    cfr_keyring_chunk_id(kr, "abc", 3, id);
    fprintf(f, "chunk_id.abc %s\n", cfr_hex_encode(id, 32, hex));
    cfr_keyring_name_id(kr, "INBOX", 5, id);
    fprintf(f, "name_id.INBOX %s\n", cfr_hex_encode(id, 32, hex));
    uint64_t gear[256];
    cfr_keyring_gear_table(kr, gear);
    fprintf(f, "gear.0 %016llx\ngear.255 %016llx\n",
            (unsigned long long)gear[0], (unsigned long long)gear[255]);
    assert_int_equal(fclose(f), 0);

    /* The keyfile fuzz corpus: mode byte, then input (keyfile_fuzz.c). */
    static const uint8_t wrap[32] = {
        0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
        0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
        0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42};
    struct cfr_buf c;
    struct cfr_buf in;
    cfr_buf_init(&c, CFR_KEYFILE_MAX);
    cfr_buf_init(&in, CFR_KEYFILE_MAX + 1);
    char path[4200];
    struct {
        const char *name;
        uint8_t mode;
        const struct cfr_keyring *kr;
    } seeds[2];
    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    seeds[0].name = "valid-full";
    seeds[0].kr = kr;
    seeds[1].name = "valid-agent";
    seeds[1].kr = agent;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cfr_keyring_encode_with_key(seeds[i].kr, &MIN_PARAMS,
                                                     wrap, &c, &err),
                         0);
        cfr_buf_reset(&in);
        assert_int_equal(cfr_buf_append_u8(&in, 0, NULL), 0);
        assert_int_equal(cfr_buf_append(&in, c.data, c.len, NULL), 0);
        snprintf(path, sizeof(path), "%s/../fuzz/corpus/keyfile/%s",
                 COFFER_VECTORS_DIR, seeds[i].name);
        write_file(path, in.data, in.len);
        /* The same file cut short, to seed the length checks. */
        snprintf(path, sizeof(path), "%s/../fuzz/corpus/keyfile/%s-truncated",
                 COFFER_VECTORS_DIR, seeds[i].name);
        write_file(path, in.data, in.len / 2);
    }
    /* The passphrase path (mode 2), with the stored vector. */
    cfr_buf_reset(&in);
    assert_int_equal(cfr_buf_append_u8(&in, 2, NULL), 0);
    assert_int_equal(cfr_buf_append(&in, af.data, af.len, NULL), 0);
    snprintf(path, sizeof(path), "%s/../fuzz/corpus/keyfile/passphrase-agent",
             COFFER_VECTORS_DIR);
    write_file(path, in.data, in.len);
    /* A bare payload for the payload parser (mode 1, kind 2): an agent
     * payload with one key. */
    cfr_buf_reset(&in);
    assert_int_equal(cfr_buf_append_u8(&in, 1, NULL), 0);
    assert_int_equal(cfr_buf_append_u8(&in, 2, NULL), 0);
    uint8_t payload[96 + 8 + 44] = {0};
    cfr_put_le32(payload + 96, 1);
    cfr_put_le32(payload + 100, 1);
    cfr_put_le32(payload + 104, 1);
    assert_int_equal(cfr_buf_append(&in, payload, sizeof(payload), NULL), 0);
    snprintf(path, sizeof(path), "%s/../fuzz/corpus/keyfile/payload-agent",
             COFFER_VECTORS_DIR);
    write_file(path, in.data, in.len);
    snprintf(path, sizeof(path), "%s/../fuzz/corpus/keyfile/garbage",
             COFFER_VECTORS_DIR);
    write_file(path, (const uint8_t *)"\0not a key file", 15);
    cfr_buf_fini(&c);
    cfr_buf_fini(&in);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
    cfr_buf_fini(&af);
    cfr_buf_fini(&ff);
}

static void
test_keys_vectors_decode(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_buf b;
    char pass[256];
    char v[256];
    char hex[129];

    read_file(vec_path("keyfile-full.bin"), &b);
    vec_field("keyfile-vectors.txt", "full.passphrase", pass, sizeof(pass));
    struct cfr_keyring *kr =
        cfr_keyring_decode(b.data, b.len, pass, strlen(pass), &err);
    assert_non_null(kr);
    cfr_buf_fini(&b);
    assert_int_equal(cfr_keyring_kind(kr), CFR_KEYRING_FULL);
    assert_int_equal(cfr_keyring_key_count(kr), 2);
    assert_int_equal(cfr_keyring_current_key_id(kr), 2);
    vec_field("keyfile-vectors.txt", "tenant_id", v, sizeof(v));
    assert_hex(cfr_keyring_tenant_id(kr), 16, v);
    for (uint32_t id = 1; id <= 2; id++) {
        uint8_t pk[32];
        int64_t created;
        char name[32];
        assert_int_equal(cfr_keyring_public_key(kr, id, pk, &created, &err), 0);
        snprintf(name, sizeof(name), "key%u.pk", (unsigned)id);
        vec_field("keyfile-vectors.txt", name, v, sizeof(v));
        assert_hex(pk, 32, v);
        snprintf(name, sizeof(name), "key%u.created_ms", (unsigned)id);
        vec_field("keyfile-vectors.txt", name, v, sizeof(v));
        assert_int_equal(created, strtoll(v, NULL, 10));
    }
    uint8_t id[32];
    cfr_keyring_chunk_id(kr, "abc", 3, id);
    vec_field("keyfile-vectors.txt", "chunk_id.abc", v, sizeof(v));
    assert_hex(id, 32, v);
    cfr_keyring_name_id(kr, "INBOX", 5, id);
    vec_field("keyfile-vectors.txt", "name_id.INBOX", v, sizeof(v));
    assert_hex(id, 32, v);
    uint64_t gear[256];
    cfr_keyring_gear_table(kr, gear);
    vec_field("keyfile-vectors.txt", "gear.0", v, sizeof(v));
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)gear[0]);
    assert_string_equal(hex, v);
    vec_field("keyfile-vectors.txt", "gear.255", v, sizeof(v));
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)gear[255]);
    assert_string_equal(hex, v);

    /* The agent file: made before the rotation, so it knows key 1 only,
     * and agrees with the full keyring on every subkey. */
    read_file(vec_path("keyfile-agent.bin"), &b);
    vec_field("keyfile-vectors.txt", "agent.passphrase", pass, sizeof(pass));
    struct cfr_keyring *agent =
        cfr_keyring_decode(b.data, b.len, pass, strlen(pass), &err);
    assert_non_null(agent);
    cfr_buf_fini(&b);
    assert_int_equal(cfr_keyring_kind(agent), CFR_KEYRING_AGENT);
    assert_false(cfr_keyring_can_open(agent));
    assert_int_equal(cfr_keyring_key_count(agent), 1);
    assert_int_equal(cfr_keyring_current_key_id(agent), 1);
    assert_memory_equal(cfr_keyring_chunk_key(agent), cfr_keyring_chunk_key(kr),
                        32);
    assert_memory_equal(cfr_keyring_tenant_id(agent), cfr_keyring_tenant_id(kr),
                        16);
    uint8_t pa[32];
    uint8_t pf[32];
    assert_int_equal(cfr_keyring_public_key(agent, 1, pa, NULL, &err), 0);
    assert_int_equal(cfr_keyring_public_key(kr, 1, pf, NULL, &err), 0);
    assert_memory_equal(pa, pf, 32);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
test_keys_vectors_reencode(void **state)
{
    (void)state;
    if (getenv("COFFER_WRITE_VECTORS") != NULL) {
        write_vectors();
    }
    char agent_pass[256];
    char full_pass[256];
    vec_field("keyfile-vectors.txt", "agent.passphrase", agent_pass,
              sizeof(agent_pass));
    vec_field("keyfile-vectors.txt", "full.passphrase", full_pass,
              sizeof(full_pass));
    struct cfr_buf af;
    struct cfr_buf ff;
    struct cfr_buf stored;
    cfr_buf_init(&af, CFR_KEYFILE_MAX);
    cfr_buf_init(&ff, CFR_KEYFILE_MAX);
    make_vectors(&af, &ff, agent_pass, full_pass);
    read_file(vec_path("keyfile-agent.bin"), &stored);
    assert_int_equal(af.len, stored.len);
    assert_memory_equal(af.data, stored.data, af.len);
    cfr_buf_fini(&stored);
    read_file(vec_path("keyfile-full.bin"), &stored);
    assert_int_equal(ff.len, stored.len);
    assert_memory_equal(ff.data, stored.data, ff.len);
    cfr_buf_fini(&stored);
    cfr_buf_fini(&af);
    cfr_buf_fini(&ff);
}

static void
test_keys_save_load_mode_0600(void **state)
{
    (void)state;
    struct cfr_err err;
    struct stat st;
    const char *path = tmp_path("full.key");
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_non_null(kr);
    mode_t old = umask(0); /* the file must be 0600 whatever the umask */
    int rc = cfr_keyring_save(kr, path, "pw", 2, &MIN_PARAMS, &err);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    struct cfr_keyring *back = cfr_keyring_load(path, "pw", 2, &err);
    assert_non_null(back);
    assert_same_keys(kr, back);
    assert_true(cfr_keyring_can_open(back));

    /* Wrong passphrase: EAUTH, with a message that says so. */
    cfr_err_clear(&err);
    assert_null(cfr_keyring_load(path, "pW", 2, &err));
    assert_int_equal(err.code, CFR_EAUTH);
    assert_non_null(strstr(err.msg, "passphrase"));
    /* No temporary files left behind. */
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "test $(ls '%s' | wc -l) -eq 1", tmpdir);
    assert_int_equal(system(cmd), 0);

    /* An empty passphrase and too-cheap params are refused on save. */
    assert_int_equal(cfr_keyring_save(kr, path, "", 0, &MIN_PARAMS, &err),
                     CFR_EINVAL);
    struct cfr_kdf_params weak = {CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN - 1};
    assert_int_equal(cfr_keyring_save(kr, path, "pw", 2, &weak, &err),
                     CFR_EINVAL);
    weak.opslimit = 1;
    weak.memlimit = CFR_KDF_MEM_DEFAULT;
    assert_int_equal(cfr_keyring_save(kr, path, "pw", 2, &weak, &err),
                     CFR_EINVAL);
    /* The failed saves left the good file alone. */
    struct cfr_keyring *again = cfr_keyring_load(path, "pw", 2, &err);
    assert_non_null(again);
    cfr_keyring_free(again);
    cfr_keyring_free(back);
    cfr_keyring_free(kr);
}

static void
test_keys_default_params_are_owasp_or_better(void **state)
{
    (void)state;
    struct cfr_kdf_params p;
    cfr_kdf_params_default(&p);
    assert_true(p.opslimit >= 2);
    assert_true(p.memlimit >= (UINT64_C(19) << 20));
    assert_int_equal(p.opslimit, CFR_KDF_OPS_DEFAULT);
    assert_int_equal(p.memlimit, UINT64_C(64) << 20);
    /* NULL params on encode mean the defaults, visible in the header. */
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    struct cfr_buf b;
    cfr_buf_init(&b, CFR_KEYFILE_MAX);
    assert_int_equal(cfr_keyring_encode(agent, "pw", 2, NULL, &b, &err), 0);
    assert_int_equal(cfr_get_le64(b.data + 12), p.opslimit);
    assert_int_equal(cfr_get_le64(b.data + 20), p.memlimit);
    cfr_buf_fini(&b);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
test_keys_load_refuses_unsafe_files(void **state)
{
    (void)state;
    struct cfr_err err;
    const char *path = tmp_path("perm.key");
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_int_equal(cfr_keyring_save(kr, path, "pw", 2, &MIN_PARAMS, &err), 0);
    assert_int_equal(chmod(path, 0640), 0);
    cfr_err_clear(&err);
    assert_null(cfr_keyring_load(path, "pw", 2, &err));
    assert_int_equal(err.code, CFR_EDENIED);
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(path, 0604), 0);
    assert_null(cfr_keyring_load(path, "pw", 2, &err));
    assert_int_equal(err.code, CFR_EDENIED);
    assert_int_equal(chmod(path, 0400), 0); /* read-only for the owner: ok */
    struct cfr_keyring *ok = cfr_keyring_load(path, "pw", 2, &err);
    assert_non_null(ok);
    cfr_keyring_free(ok);

    assert_null(cfr_keyring_load(tmpdir, "pw", 2, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    const char *fifo = tmp_path("fifo.key");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_null(cfr_keyring_load(fifo, "pw", 2, &err)); /* must not hang */
    assert_int_equal(err.code, CFR_EINVAL);
    assert_null(cfr_keyring_load(tmp_path("absent.key"), "pw", 2, &err));
    assert_int_equal(err.code, CFR_ENOTFOUND);

    /* Oversized on disk: refused before reading it. */
    const char *big = tmp_path("big.key");
    FILE *f = fopen(big, "wb");
    assert_non_null(f);
    assert_int_equal(fseek(f, CFR_KEYFILE_MAX, SEEK_SET), 0);
    assert_int_equal(fputc('x', f), 'x');
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(big, 0600), 0);
    assert_null(cfr_keyring_load(big, "pw", 2, &err));
    assert_int_equal(err.code, CFR_ELIMIT);
    cfr_keyring_free(kr);
}

static const uint8_t WRAP[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void
test_keys_every_flipped_byte_is_rejected(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    struct cfr_buf good;
    struct cfr_buf bad;
    cfr_buf_init(&good, CFR_KEYFILE_MAX);
    cfr_buf_init(&bad, CFR_KEYFILE_MAX);
    assert_int_equal(
        cfr_keyring_encode(agent, "pw", 2, &MIN_PARAMS, &good, &err), 0);
    /* Sanity: the unaltered file opens. */
    struct cfr_keyring *ok =
        cfr_keyring_decode(good.data, good.len, "pw", 2, &err);
    assert_non_null(ok);
    cfr_keyring_free(ok);

    /* Accidental damage: every byte, three flip patterns. The checksum
     * catches it before Argon2, so this loop is fast and every error is
     * "damaged" or "version", never "wrong passphrase". */
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < good.len; i++) {
        for (size_t m = 0; m < sizeof(masks); m++) {
            cfr_buf_reset(&bad);
            assert_int_equal(cfr_buf_append(&bad, good.data, good.len, NULL),
                             0);
            bad.data[i] ^= masks[m];
            cfr_err_clear(&err);
            assert_null(cfr_keyring_decode(bad.data, bad.len, "pw", 2, &err));
            if (i == 8) {
                assert_int_equal(err.code, CFR_EVERSION);
            } else {
                assert_int_equal(err.code, CFR_ECORRUPT);
            }
        }
    }

    /* Deliberate alteration (checksum recomputed): every byte still fails,
     * through the field checks or the AEAD. With a fixed wrapping key. */
    cfr_buf_reset(&good);
    assert_int_equal(
        cfr_keyring_encode_with_key(kr, &MIN_PARAMS, WRAP, &good, &err), 0);
    ok = cfr_keyring_decode_with_key(good.data, good.len, WRAP, &err);
    assert_non_null(ok);
    assert_same_keys(kr, ok);
    cfr_keyring_free(ok);
    size_t auth = 0;
    for (size_t i = 0; i + 16 < good.len; i++) {
        cfr_buf_reset(&bad);
        assert_int_equal(cfr_buf_append(&bad, good.data, good.len, NULL), 0);
        bad.data[i] ^= 0x01;
        cfr_keyfile_test_fix_checksum(bad.data, bad.len);
        cfr_err_clear(&err);
        assert_null(cfr_keyring_decode_with_key(bad.data, bad.len, WRAP, &err));
        assert_true(err.code == CFR_EAUTH || err.code == CFR_ECORRUPT ||
                    err.code == CFR_EVERSION || err.code == CFR_ELIMIT);
        auth += err.code == CFR_EAUTH;
    }
    /* Salt, tenant, nonce and ciphertext are caught by the AEAD. */
    assert_true(auth >= good.len - 88 - 16 + 16 + 16 + 24);
    cfr_buf_fini(&good);
    cfr_buf_fini(&bad);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
test_keys_truncated_and_oversized_input(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    struct cfr_buf good;
    cfr_buf_init(&good, CFR_KEYFILE_MAX + 2);
    assert_int_equal(cfr_keyring_encode(kr, "pw", 2, &MIN_PARAMS, &good, &err),
                     0);
    for (size_t n = 0; n < good.len; n++) {
        /* An exact-size copy, so ASan sees any over-read. */
        uint8_t *copy = cfr_malloc(n == 0 ? 1 : n);
        memcpy(copy, good.data, n);
        cfr_err_clear(&err);
        assert_null(cfr_keyring_decode(copy, n, "pw", 2, &err));
        assert_int_equal(err.code, CFR_ECORRUPT);
        cfr_free(copy);
    }
    assert_int_equal(cfr_buf_append_u8(&good, 0, NULL), 0);
    assert_null(cfr_keyring_decode(good.data, good.len, "pw", 2, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);
    /* Past the cap: refused on size alone. */
    uint8_t *huge = cfr_calloc(1, CFR_KEYFILE_MAX + 1);
    memcpy(huge, good.data, good.len);
    assert_null(cfr_keyring_decode(huge, CFR_KEYFILE_MAX + 1, "pw", 2, &err));
    assert_int_equal(err.code, CFR_ELIMIT);
    cfr_free(huge);
    cfr_buf_fini(&good);
    cfr_keyring_free(kr);
}

static void
test_keys_hostile_header_fields(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    struct cfr_buf good;
    cfr_buf_init(&good, CFR_KEYFILE_MAX);
    assert_int_equal(
        cfr_keyring_encode_with_key(kr, &MIN_PARAMS, WRAP, &good, &err), 0);
    struct {
        size_t off;
        int width; /* 1 or 8 bytes */
        uint64_t value;
        int code;
    } cases[] = {
        {8, 1, 2, CFR_EVERSION},                /* future version */
        {9, 1, 3, CFR_EVERSION},                /* unknown kind */
        {10, 1, 2, CFR_EVERSION},               /* unknown KDF */
        {11, 1, 1, CFR_ECORRUPT},               /* reserved byte */
        {12, 8, 1, CFR_ECORRUPT},               /* t below the minimum */
        {20, 8, (19u << 20) - 1, CFR_ECORRUPT}, /* m below the minimum */
        {12, 8, 33, CFR_ELIMIT},                /* t above the maximum */
        {20, 8, UINT64_C(1) << 40, CFR_ELIMIT}, /* m above the maximum */
        {9, 1, 2, CFR_ECORRUPT}, /* full payload under the agent kind */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *bad = cfr_malloc(good.len);
        memcpy(bad, good.data, good.len);
        if (cases[i].width == 1) {
            bad[cases[i].off] = (uint8_t)cases[i].value;
        } else {
            cfr_put_le64(bad + cases[i].off, cases[i].value);
        }
        cfr_keyfile_test_fix_checksum(bad, good.len);
        cfr_err_clear(&err);
        /* The passphrase path: these fail before Argon2 would run with
         * the hostile cost. */
        assert_null(cfr_keyring_decode(bad, good.len, "pw", 2, &err));
        assert_int_equal(err.code, cases[i].code);
        cfr_free(bad);
    }
    cfr_buf_fini(&good);
    cfr_keyring_free(kr);
}

static void
test_keys_payload_parser_checks_consistency(void **state)
{
    (void)state;
    struct cfr_err err;
    uint8_t tenant[16] = {7};
    /* Full payload: M, count 1, one pair whose public key is not the
     * secret key's. */
    uint8_t full[36 + 76] = {0};
    cfr_put_le32(full + 32, 1);
    cfr_put_le32(full + 36, 1);
    memset(full + 36 + 12, 0x11, 32); /* pk */
    memset(full + 36 + 44, 0x22, 32); /* sk */
    assert_null(cfr_keyring_parse_payload(1, full, sizeof(full), tenant, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);
    /* Count field disagreeing with the length. */
    cfr_put_le32(full + 32, 2);
    assert_null(cfr_keyring_parse_payload(1, full, sizeof(full), tenant, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);

    /* Agent payload: subkeys, current, count 2, pairs. */
    uint8_t agent[104 + 2 * 44] = {0};
    cfr_put_le32(agent + 96, 2);  /* current */
    cfr_put_le32(agent + 100, 2); /* count */
    cfr_put_le32(agent + 104, 1);
    cfr_put_le32(agent + 148, 2);
    struct cfr_keyring *kr =
        cfr_keyring_parse_payload(2, agent, sizeof(agent), tenant, &err);
    assert_non_null(kr);
    assert_int_equal(cfr_keyring_current_key_id(kr), 2);
    assert_memory_equal(cfr_keyring_tenant_id(kr), tenant, 16);
    cfr_keyring_free(kr);
    cfr_put_le32(agent + 96, 3); /* current not in the list */
    assert_null(
        cfr_keyring_parse_payload(2, agent, sizeof(agent), tenant, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);
    cfr_put_le32(agent + 96, 1);
    cfr_put_le32(agent + 148, 1); /* key_ids not increasing */
    assert_null(
        cfr_keyring_parse_payload(2, agent, sizeof(agent), tenant, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);
    cfr_put_le32(agent + 104, 0); /* key_id 0 */
    cfr_put_le32(agent + 148, 2);
    assert_null(
        cfr_keyring_parse_payload(2, agent, sizeof(agent), tenant, &err));
    assert_int_equal(err.code, CFR_ECORRUPT);
    /* Short and misaligned lengths. */
    for (size_t n = 0; n < sizeof(agent); n++) {
        assert_null(cfr_keyring_parse_payload(2, agent, n, tenant, &err));
        assert_int_equal(err.code, CFR_ECORRUPT);
    }
}

static void
test_keys_rotation_keeps_old_pairs(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    uint8_t pk1[32];
    uint8_t chunk_key[32];
    assert_int_equal(cfr_keyring_public_key(kr, 1, pk1, NULL, &err), 0);
    memcpy(chunk_key, cfr_keyring_chunk_key(kr), 32);
    assert_int_equal(cfr_keyring_rotate(kr, T0 + DAY, &err), 0);
    assert_int_equal(cfr_keyring_rotate(kr, T0 + 2 * DAY, &err), 0);
    assert_int_equal(cfr_keyring_key_count(kr), 3);
    assert_int_equal(cfr_keyring_current_key_id(kr), 3);
    uint8_t pk[3][32];
    for (uint32_t id = 1; id <= 3; id++) {
        int64_t created;
        assert_int_equal(
            cfr_keyring_public_key(kr, id, pk[id - 1], &created, &err), 0);
        assert_int_equal(created, T0 + (int64_t)(id - 1) * DAY);
    }
    assert_memory_equal(pk[0], pk1, 32); /* the old pair is untouched */
    assert_memory_not_equal(pk[0], pk[1], 32);
    assert_memory_not_equal(pk[1], pk[2], 32);
    /* Rotation changes the X25519 pairs only: IDs and boundaries stay. */
    assert_memory_equal(cfr_keyring_chunk_key(kr), chunk_key, 32);

    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    assert_int_equal(cfr_keyring_current_key_id(agent), 3);
    assert_int_equal(cfr_keyring_rotate(agent, T0, &err), CFR_EINVAL);
    assert_int_equal(cfr_keyring_key_count(agent), 3);

    /* All pairs survive a save and load. */
    const char *path = tmp_path("rot.key");
    assert_int_equal(cfr_keyring_save(kr, path, "pw", 2, &MIN_PARAMS, &err), 0);
    struct cfr_keyring *back = cfr_keyring_load(path, "pw", 2, &err);
    assert_non_null(back);
    assert_same_keys(kr, back);
    cfr_keyring_free(back);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
test_keys_rotation_limit(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    for (size_t i = 1; i < CFR_KEYRING_PAIRS_MAX; i++) {
        assert_int_equal(cfr_keyring_rotate(kr, T0 + (int64_t)i, &err), 0);
    }
    assert_int_equal(cfr_keyring_key_count(kr), CFR_KEYRING_PAIRS_MAX);
    assert_int_equal(cfr_keyring_rotate(kr, T0, &err), CFR_ELIMIT);
    assert_int_equal(cfr_keyring_key_count(kr), CFR_KEYRING_PAIRS_MAX);
    /* The largest keyring still fits a key file and round-trips. */
    struct cfr_buf b;
    cfr_buf_init(&b, CFR_KEYFILE_MAX);
    assert_int_equal(
        cfr_keyring_encode_with_key(kr, &MIN_PARAMS, WRAP, &b, &err), 0);
    assert_true(b.len <= CFR_KEYFILE_MAX);
    struct cfr_keyring *back =
        cfr_keyring_decode_with_key(b.data, b.len, WRAP, &err);
    assert_non_null(back);
    assert_same_keys(kr, back);
    cfr_keyring_free(back);
    cfr_buf_fini(&b);
    cfr_keyring_free(kr);
}

static void
test_keys_change_passphrase_keeps_keys(void **state)
{
    (void)state;
    struct cfr_err err;
    const char *path = tmp_path("pp.key");
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_int_equal(cfr_keyring_rotate(kr, T0 + DAY, &err), 0);
    assert_int_equal(
        cfr_keyring_save(kr, path, "old pass", 8, &MIN_PARAMS, &err), 0);
    assert_int_equal(cfr_keyring_change_passphrase(path, "wrong", 5, "new pass",
                                                   8, NULL, &err),
                     CFR_EAUTH);
    assert_int_equal(cfr_keyring_change_passphrase(path, "old pass", 8,
                                                   "new pass", 8, NULL, &err),
                     0);
    cfr_err_clear(&err);
    assert_null(cfr_keyring_load(path, "old pass", 8, &err));
    assert_int_equal(err.code, CFR_EAUTH);
    struct cfr_keyring *back = cfr_keyring_load(path, "new pass", 8, &err);
    assert_non_null(back);
    assert_same_keys(kr, back);
    /* NULL params kept the file's cost; the mode stayed 0600. */
    struct cfr_buf b;
    read_file(path, &b);
    assert_int_equal(cfr_get_le64(b.data + 12), MIN_PARAMS.opslimit);
    assert_int_equal(cfr_get_le64(b.data + 20), MIN_PARAMS.memlimit);
    cfr_buf_fini(&b);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    cfr_keyring_free(back);
    cfr_keyring_free(kr);
}

static void
test_keys_escrow_export_import(void **state)
{
    (void)state;
    struct cfr_err err;
    const char *esc = tmp_path("escrow.key");
    const char *ag = tmp_path("agent.key");
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    assert_int_equal(cfr_keyring_rotate(kr, T0 + DAY, &err), 0);
    struct cfr_keyring *agent = cfr_keyring_agent_view(kr, &err);
    assert_int_equal(
        cfr_keyring_export(kr, esc, "escrow", 6, &MIN_PARAMS, &err), 0);
    assert_int_equal(
        cfr_keyring_export(agent, ag, "escrow", 6, &MIN_PARAMS, &err),
        CFR_EINVAL);
    assert_int_equal(access(ag, F_OK), -1);
    struct cfr_keyring *back = cfr_keyring_import(esc, "escrow", 6, &err);
    assert_non_null(back);
    assert_true(cfr_keyring_can_open(back));
    assert_same_keys(kr, back);
    /* An agent key file is not an escrow copy. */
    assert_int_equal(
        cfr_keyring_save(agent, ag, "escrow", 6, &MIN_PARAMS, &err), 0);
    assert_null(cfr_keyring_import(ag, "escrow", 6, &err));
    assert_int_equal(err.code, CFR_EINVAL);
    /* ...but it loads as what it is, and never can open. */
    struct cfr_keyring *a2 = cfr_keyring_load(ag, "escrow", 6, &err);
    assert_non_null(a2);
    assert_false(cfr_keyring_can_open(a2));
    assert_same_keys(agent, a2);
    cfr_keyring_free(a2);
    cfr_keyring_free(back);
    cfr_keyring_free(agent);
    cfr_keyring_free(kr);
}

static void
test_keys_allocation_failures_are_clean(void **state)
{
    (void)state;
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_generate(T0, &err);
    struct cfr_buf b;
    cfr_buf_init(&b, CFR_KEYFILE_MAX);
    assert_int_equal(
        cfr_keyring_encode_with_key(kr, &MIN_PARAMS, WRAP, &b, &err), 0);
    /* Fail the nth allocation of each operation until it succeeds; ASan
     * reports any leak on the failure paths. */
    int failures = 0;
    for (long nth = 1; nth < 50; nth++) {
        cfr_mem_fail_after(nth);
        struct cfr_keyring *g = cfr_keyring_generate(T0, &err);
        struct cfr_keyring *v = cfr_keyring_agent_view(kr, &err);
        struct cfr_keyring *d =
            cfr_keyring_decode_with_key(b.data, b.len, WRAP, &err);
        int rc = cfr_keyring_rotate(kr, T0, &err);
        cfr_mem_fail_after(0);
        failures += (g == NULL) + (v == NULL) + (d == NULL) + (rc != 0);
        if (g == NULL || v == NULL || d == NULL || rc != 0) {
            assert_int_equal(err.code, CFR_ENOMEM);
        }
        cfr_keyring_free(g);
        cfr_keyring_free(v);
        cfr_keyring_free(d);
    }
    assert_true(failures > 0);
    cfr_buf_fini(&b);
    cfr_keyring_free(kr);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_generate_and_agent_view),
        cmocka_unit_test(test_keys_vectors_reencode),
        cmocka_unit_test(test_keys_vectors_decode),
        cmocka_unit_test(test_keys_save_load_mode_0600),
        cmocka_unit_test(test_keys_default_params_are_owasp_or_better),
        cmocka_unit_test(test_keys_load_refuses_unsafe_files),
        cmocka_unit_test(test_keys_every_flipped_byte_is_rejected),
        cmocka_unit_test(test_keys_truncated_and_oversized_input),
        cmocka_unit_test(test_keys_hostile_header_fields),
        cmocka_unit_test(test_keys_payload_parser_checks_consistency),
        cmocka_unit_test(test_keys_rotation_keeps_old_pairs),
        cmocka_unit_test(test_keys_rotation_limit),
        cmocka_unit_test(test_keys_change_passphrase_keeps_keys),
        cmocka_unit_test(test_keys_escrow_export_import),
        cmocka_unit_test(test_keys_allocation_failures_are_clean),
    };
    return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
