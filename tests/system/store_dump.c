/*
 * store_dump.c - the system tests' view of one stopped vault's tenant
 * store, printed so that two replicas can be compared with diff:
 *
 *   store_dump DATA_DIR TENANT
 *
 *   S <header id> held=<0|1> hdr=<BLAKE2b-256 of the sealed header>
 *   T <header id>                      (a tombstone)
 *   O <object id> <BLAKE2b-256 of the stored bytes> <length>
 *
 *   store_dump DATA_DIR TENANT OBJECT_ID   writes that object's stored
 *                                         bytes to stdout (to find them
 *                                         in a blob file and damage them)
 *
 * Each section is sorted by ID. Nothing vault-local goes in (receive and
 * drop times, refcount records): replicas that converged print the same
 * bytes, and one missing, extra or altered object shows as a diff line.
 * The vault must be stopped (its database is locked while it runs).
 * Exit 0, or 1 with the reason on stderr.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"   /* cfr_hex_encode */
#include "clock.h" /* cfr_clock_system */
#include "err.h"
#include "id.h"    /* cfr_id_plain */
#include "kv.h"    /* the tombstone and object families, read directly */
#include "store.h" /* vault_store_snapshots */

/* vault/store.c's column families, in its order (a RocksDB database
 * opens only with every family named). */
static const char *const cf_names[] = {CFR_KV_CF_CHUNKS, CFR_KV_CF_CHUNK_INDEX,
                                       "refcounts",      "snapshots",
                                       "mailbox_index",  "leases",
                                       "lease_objects",  "tombstones"};
enum { CF_CHUNKS = 0, CF_TOMBS = 7 };

static int
print_snap(void *ctx, const struct vault_snapshot *s, const uint8_t *header,
           size_t header_len)
{
    uint8_t h[CFR_ID_LEN];
    char a[65], b[65];
    (void)ctx;
    cfr_id_plain(header, header_len, h);
    printf("S %s held=%d hdr=%s\n", cfr_hex_encode(s->header_id, 32, a),
           s->held ? 1 : 0, cfr_hex_encode(h, 32, b));
    return 0;
}

static int
dump_snapshots(const char *dir, const char *tenant)
{
    struct cfr_err err;
    struct vault_store_opts o = {.dir = dir,
                                 .cache_bytes = 8u << 20,
                                 .clock = cfr_clock_system(),
                                 .lease_max_ms = 3600000,
                                 .tombstone_keep_ms = 90LL * 86400000};
    struct vault_store *st = vault_store_open(&o, &err);
    struct vault_tenant *t;
    int rc = 1;
    if (st == NULL) {
        fprintf(stderr, "store_dump: open %s: %s\n", dir, err.msg);
        return 1;
    }
    if ((t = vault_store_tenant(st, tenant, false, &err)) == NULL) {
        fprintf(stderr, "store_dump: tenant %s: %s\n", tenant, err.msg);
    } else if (vault_store_snapshots(t, NULL, true, print_snap, NULL, &err) !=
               0) {
        fprintf(stderr, "store_dump: snapshots: %s\n", err.msg);
    } else {
        rc = 0;
    }
    vault_store_close(st);
    return rc;
}

/* Prints a line for each key of family cf: "T id" or "O id hash len";
 * with want (tag 'G'), only that object's raw bytes. */
static int
dump_family(struct cfr_kv *kv, unsigned cf, char tag, const char *want)
{
    struct cfr_err err;
    struct cfr_kv_iter *it = cfr_kv_iter_new_prefix(kv, cf, "", 0, &err);
    struct cfr_kv_entry e;
    bool got = false;
    if (it == NULL) {
        fprintf(stderr, "store_dump: iterate: %s\n", err.msg);
        return 1;
    }
    while (cfr_kv_iter_next(it, &got, &e, &err) == 0 && got) {
        char a[2 * CFR_KV_KEY_MAX + 1], b[65];
        uint8_t h[CFR_ID_LEN];
        if (e.key_len > CFR_KV_KEY_MAX) {
            continue;
        }
        cfr_hex_encode(e.key, e.key_len, a);
        if (tag == 'G') {
            if (strcmp(a, want) == 0 &&
                fwrite(e.val, 1, e.val_len, stdout) != e.val_len) {
                cfr_kv_iter_free(it);
                return 1;
            }
        } else if (tag == 'O') {
            cfr_id_plain(e.val, e.val_len, h);
            printf("O %s %s %zu\n", a, cfr_hex_encode(h, 32, b), e.val_len);
        } else {
            printf("T %s\n", a);
        }
    }
    cfr_kv_iter_free(it);
    if (got) {
        fprintf(stderr, "store_dump: iterate: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct cfr_err err;
    char path[4096];
    struct cfr_kv_env *env;
    struct cfr_kv *kv;
    int rc;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: store_dump DATA_DIR TENANT [OBJECT_ID]\n");
        return 2;
    }
    if (argc == 3 && dump_snapshots(argv[1], argv[2]) != 0) {
        return 1;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", argv[1], argv[2]) >=
        sizeof(path)) {
        fprintf(stderr, "store_dump: path too long\n");
        return 1;
    }
    if ((env = cfr_kv_env_new(8u << 20, &err)) == NULL) {
        fprintf(stderr, "store_dump: %s\n", err.msg);
        return 1;
    }
    kv = cfr_kv_open(env, path, cf_names, sizeof(cf_names) / sizeof(*cf_names),
                     NULL, &err);
    if (kv == NULL) {
        fprintf(stderr, "store_dump: open %s: %s\n", path, err.msg);
        cfr_kv_env_free(env);
        return 1;
    }
    fflush(stdout);
    if (argc == 4) {
        rc = dump_family(kv, CF_CHUNKS, 'G', argv[3]);
    } else {
        rc = dump_family(kv, CF_TOMBS, 'T', NULL);
        if (rc == 0) {
            rc = dump_family(kv, CF_CHUNKS, 'O', NULL);
        }
    }
    cfr_kv_close(kv);
    cfr_kv_env_free(env);
    return rc;
}
