/*
 * config.h - coffer-restore's configuration file (libconfig, through
 * core/cfg.h: every value checked, unknown settings refused, errors naming
 * file, line and setting).
 *
 *   tenant = "acme";                       # the certificate's tenant
 *   key_file = "/etc/coffer/acme.escrow";  # escrow copy (full keyring)
 *   passphrase_file = "/etc/coffer/acme.pass";  # optional, mode 0600;
 *                                          # without it: asked on the tty
 *   vaults = [ "vault-a.example:7443", "vault-b.example:7443" ];
 *   tls = { ca = "ca.pem"; cert = "restore.pem"; key = "restore.key";
 *           server_name = "vault" };       # server_name optional
 *   parallelism = 4;                       # files written at once, 1..64
 *   batch = 256;                           # chunk IDs per request, 1..4096
 *   timeout = "2m";                        # per vault call
 *   log_level = "warn";
 *
 * The passphrase itself is read by restore_config_passphrase into
 * sodium_malloc'd memory and never kept in the struct.
 *
 * Thread safety: a loaded config is read-only.
 */
#ifndef RESTORE_CONFIG_H
#define RESTORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"    /* struct cfr_err */
#include "fetch.h"  /* RESTORE_FETCH_VAULTS_MAX */
#include "secret.h" /* struct cfr_secret */

#define RESTORE_CONFIG_DEFAULT "/etc/coffer/restore.conf"
/* A passphrase is at most this long (and never empty). */
#define RESTORE_PASSPHRASE_MAX 1024

struct cfr_cfg;

struct restore_config {
    const char *tenant;
    const char *key_file;
    const char *passphrase_file; /* NULL: prompt on the terminal */
    const char *vaults[RESTORE_FETCH_VAULTS_MAX];
    size_t n_vaults;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *tls_server_name; /* NULL: the host part of each address */
    unsigned parallelism;
    size_t batch;
    int64_t timeout_ms;
    const char *log_level;
    struct cfr_cfg *cfg; /* owned: the strings above borrow from it */
};

/*
 * Loads path (or text, for tests) into *c_r. On failure err names the
 * file, line and setting (CFR_ECONFIG, CFR_EIO) and nothing is left
 * allocated.
 */
int restore_config_load(const char *path, struct restore_config *c_r,
                        struct cfr_err *err);
int restore_config_load_string(const char *text, struct restore_config *c_r,
                               struct cfr_err *err);
void restore_config_fini(struct restore_config *c);

/*
 * The escrow passphrase: from passphrase_file (a regular file that group
 * and others cannot access at all, CFR_EDENIED otherwise, with one
 * trailing newline removed) or, without one, asked on /dev/tty with echo
 * off (CFR_ECONFIG when there is no terminal). Returns an owned secret
 * in *s_r whose first *len_r bytes are the passphrase (no terminator).
 */
int restore_config_passphrase(const struct restore_config *c,
                              struct cfr_secret **s_r, size_t *len_r,
                              struct cfr_err *err);

/* Reads a passphrase file by the rules above (exposed for tests). */
int restore_passphrase_file(const char *path, struct cfr_secret **s_r,
                            size_t *len_r, struct cfr_err *err);

#endif /* RESTORE_CONFIG_H */
