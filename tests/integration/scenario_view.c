/*
 * scenario_view.c - the part of scenario_support.h that reads snapshots
 * through coffer-restore's own library. Not a *_support.c file: the
 * restore_* tests alone link it (tests/CMakeLists.txt), with that
 * library, which the others do not have.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "buf.h"              /* cfr_hex_encode */
#include "fetch.h"            /* restore_fetcher */
#include "keys.h"             /* cfr_keyring_import */
#include "manifest.h"         /* restore_manifest_* */
#include "mem.h"              /* cfr_free */
#include "restore.h"          /* restore_list */
#include "scenario_support.h" /* struct scn */

/* Message keys are folder "\0" name; scn_msg_write puts every message in
 * INBOX, the empty folder. */
void
scn_chunks_of(const struct scn *sc, const char *user, const char *snap,
              const int *want, size_t n_want, const struct vc_objset *exclude,
              struct vc_objset *set)
{
    struct cfr_err err;
    struct cfr_keyring *kr = cfr_keyring_import(sc->escrow, sc->escrow_pw,
                                                strlen(sc->escrow_pw), &err);
    char ca[VS_PATH_MAX + 64], cert[VS_PATH_MAX + 64], key[VS_PATH_MAX + 64],
        target[32], mb[64];
    assert_non_null(kr);
    char *cap =
        ars_slurp(vs_env_path(&sc->env, "ca.pem", ca, sizeof(ca)), NULL);
    char *cep = ars_slurp(
        vs_env_path(&sc->env, "acme-restore.pem", cert, sizeof(cert)), NULL);
    char *kep = ars_slurp(
        vs_env_path(&sc->env, "acme-restore.key", key, sizeof(key)), NULL);
    SCN_FMT(target, "127.0.0.1:%d", sc->ports[0]);
    SCN_FMT(mb, "%s@" SCN_DOMAIN, user);
    const char *targets[] = {target};
    struct restore_fetch_opts fo = {.targets = targets,
                                    .n_targets = 1,
                                    .target_name = "localhost",
                                    .ca_pem = cap,
                                    .cert_pem = cep,
                                    .key_pem = kep,
                                    .timeout_ms = 20000};
    struct restore_fetcher *f = NULL;
    struct restore_snapshot *v = NULL;
    size_t n = 0;
    assert_int_equal(restore_fetcher_new(&fo, &f, &err), 0);
    assert_int_equal(restore_list(f, kr, mb, &v, &n, &err), 0);
    const struct restore_snapshot *s = NULL;
    for (size_t i = 0; i < n; i++) {
        char hex[65];
        if (strcmp(cfr_hex_encode(v[i].header_id, 32, hex), snap) == 0) {
            s = &v[i];
        }
    }
    assert_non_null(s);
    assert_int_equal(s->open_rc, 0);
    struct restore_manifest *m = NULL;
    struct cfr_snap_entry e;
    size_t msgs = 0;
    int rc;
    assert_int_equal(restore_manifest_open(f, kr, &s->h, &m, &err), 0);
    while ((rc = restore_manifest_next(m, &e, &err)) == 1) {
        for (size_t k = 0; k < n_want; k++) {
            char name[64];
            SCN_FMT(name, "%d.M%dP7.test", 1700000000 + want[k], want[k]);
            if (e.key_len == strlen(name) + 1 && e.key[0] == '\0' &&
                memcmp(e.key + 1, name, strlen(name)) == 0) {
                msgs++;
                for (size_t c = 0; c < e.n_chunks; c++) {
                    const uint8_t *id = e.chunk_ids + 32 * c;
                    if ((exclude == NULL ||
                         vc_objset_find(exclude, id) == NULL) &&
                        vc_objset_find(set, id) == NULL) {
                        vc_objset_add(set, id, 1, (const uint8_t *)"", 0);
                    }
                }
            }
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(msgs, n_want);
    restore_manifest_free(m);
    restore_fetcher_free(f);
    cfr_free(v);
    cfr_free(cap);
    cfr_free(cep);
    cfr_free(kep);
    cfr_keyring_free(kr);
}
