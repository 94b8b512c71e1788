/*
 * session.c - start-up shared by the coffer-restore commands (session.h).
 *
 * Invariants:
 *  1. Start order: configuration, passphrase, key file, TLS files, vaults;
 *     each step's failure returns its own exit code and a message naming
 *     what failed, before any later step runs.
 *  2. The passphrase and the keyring live only in sodium_malloc'd memory
 *     and are wiped by fini; nothing secret is printed or logged.
 */
#include "session.h"

#include <string.h> /* memset, strlen */
#include <time.h>   /* gmtime_r, strftime */

#include "cfg.h"    /* cfr_cfg_read_file: PEM files */
#include "json.h"   /* cfr_json_fput */
#include "log.h"    /* log level */
#include "rpc.h"    /* cfr_rpc_global_init */
#include "secret.h" /* the passphrase */

void
restore_session_fini(struct restore_session *s)
{
    restore_fetcher_free(s->f);
    cfr_keyring_free(s->kr);
    cfr_cfg_free_file(s->ca);
    cfr_cfg_free_file(s->cert);
    cfr_cfg_free_file(s->key);
    restore_config_fini(&s->cfg);
    s->f = NULL;
    s->kr = NULL;
    s->ca = s->cert = s->key = NULL;
}

int
restore_session_open(struct restore_session *s, struct cfr_err *err)
{
    struct cfr_secret *pass = NULL;
    struct restore_fetch_opts fo;
    enum cfr_log_level lvl;
    size_t plen = 0;
    int rc;

    if (restore_config_load(s->config_path != NULL ? s->config_path
                                                   : RESTORE_CONFIG_DEFAULT,
                            &s->cfg, err) != 0) {
        return RESTORE_EXIT_CONFIG;
    }
    if (cfr_log_level_parse(s->cfg.log_level, &lvl) != 0) {
        CFR_ERR(err, CFR_ECONFIG, "log_level: \"%s\" is not a level",
                s->cfg.log_level);
        return RESTORE_EXIT_CONFIG;
    }
    cfr_log_set_level(lvl);
    if (restore_config_passphrase(&s->cfg, &pass, &plen, err) != 0) {
        return RESTORE_EXIT_CONFIG;
    }
    s->kr = cfr_keyring_import(s->cfg.key_file,
                               (const char *)cfr_secret_ro(pass), plen, err);
    cfr_secret_free(pass);
    if (s->kr == NULL) {
        if (err->code == CFR_EAUTH) {
            CFR_ERR(err, CFR_EAUTH, "key_file \"%s\": wrong escrow passphrase",
                    s->cfg.key_file);
        }
        return RESTORE_EXIT_CONFIG;
    }
    if ((s->ca = cfr_cfg_read_file(s->cfg.tls_ca, "tls.ca", err)) == NULL ||
        (s->cert = cfr_cfg_read_file(s->cfg.tls_cert, "tls.cert", err)) ==
            NULL ||
        (s->key = cfr_cfg_read_file(s->cfg.tls_key, "tls.key", err)) == NULL) {
        return RESTORE_EXIT_CONFIG;
    }
    if (cfr_rpc_global_init(err) != 0) {
        return RESTORE_EXIT_OTHER;
    }
    memset(&fo, 0, sizeof(fo));
    fo.targets = s->cfg.vaults;
    fo.n_targets = s->cfg.n_vaults;
    fo.target_name = s->cfg.tls_server_name;
    fo.ca_pem = s->ca;
    fo.cert_pem = s->cert;
    fo.key_pem = s->key;
    fo.timeout_ms = s->cfg.timeout_ms;
    if ((rc = restore_fetcher_new(&fo, &s->f, err)) != 0) {
        return rc == CFR_ENOMEM ? RESTORE_EXIT_OTHER : RESTORE_EXIT_VAULT;
    }
    return RESTORE_EXIT_OK;
}

int
restore_exit_for_failure(enum restore_failure f)
{
    switch (f) {
    case RESTORE_F_NONE:
        return RESTORE_EXIT_OK;
    case RESTORE_F_VAULT:
        return RESTORE_EXIT_VAULT;
    case RESTORE_F_NOTFOUND:
        return RESTORE_EXIT_NOTFOUND;
    case RESTORE_F_VERIFY:
        return RESTORE_EXIT_VERIFY;
    case RESTORE_F_UNSAFE:
        return RESTORE_EXIT_UNSAFE;
    case RESTORE_F_TARGET:
        return RESTORE_EXIT_TARGET;
    case RESTORE_F_IO:
        return RESTORE_EXIT_IO;
    case RESTORE_F_OTHER:
        break;
    }
    return RESTORE_EXIT_OTHER;
}

const char *
restore_iso_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, 32, "?");
        return out;
    }
    snprintf(out + strlen(out), 32 - strlen(out), ".%03dZ",
             (int)(ms % 1000 < 0 ? 0 : ms % 1000));
    return out;
}

void
restore_json_error(FILE *f, enum restore_failure kind,
                   const struct cfr_err *err)
{
    fprintf(f, "{\"kind\":");
    cfr_json_fput(f, restore_failure_name(kind));
    fprintf(f, ",\"code\":");
    cfr_json_fput(f, cfr_code_name(err->code));
    fprintf(f, ",\"message\":");
    cfr_json_fput(f, err->msg);
    fprintf(f, "}");
}

int
restore_session_report(int code, int json, const struct cfr_err *err)
{
    if (code != RESTORE_EXIT_OK && json) {
        printf("{\"ok\":false,\"error\":");
        restore_json_error(stdout,
                           code == RESTORE_EXIT_VAULT ? RESTORE_F_VAULT
                                                      : RESTORE_F_OTHER,
                           err);
        printf("}\n");
    }
    if (code != RESTORE_EXIT_OK) {
        fprintf(stderr, "coffer-restore: %s\n",
                err->msg[0] != '\0' ? err->msg : "failed");
    }
    return code;
}
