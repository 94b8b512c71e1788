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
 *   verify = {                             # all optional
 *     scratch_dir = "/var/lib/coffer/verify-scratch";  # default shown
 *     report = "/var/lib/coffer/verify/report.json";   # JSON report
 *     metrics = "/var/lib/node_exporter/coffer_verify.prom";
 *     state = "/var/lib/coffer/verify/state.json";     # default shown
 *     sample_mailboxes = 10;               # 0: every mailbox
 *     sample_messages = 200;               # per mailbox; 0: every one
 *     schedule = "24h";                    # --schedule default interval
 *     jitter = "30m";                      # random delay added per run
 *     coverage_window = "30d";             # every snapshot verified within
 *     live_store = "/var/vmail/%d/%u/Maildir";  # optional: %m mailbox,
 *                                          # %u its local part, %d domain
 *   };
 *   notify = {                             # all optional
 *     webhooks = [ "https://hooks.example/coffer" ];
 *     mail_to = [ "ops@example.com" ];
 *     smtp_url = "smtps://mail.example:465";  # needed with mail_to
 *     smtp_from = "coffer@example.com";       # needed with mail_to
 *     smtp_user = "coffer";                   # optional AUTH
 *     smtp_password_file = "/etc/coffer/smtp.pass";  # mode 0600; never
 *                                          # inline in this file
 *     ca = "/etc/ssl/certs/ca-certificates.crt";  # optional trust store
 *     timeout = "10s";                     # per delivery attempt
 *     retries = 2;
 *   };
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

/* Limits of the verify and notify groups. */
#define RESTORE_NOTIFY_WEBHOOKS_MAX 8
#define RESTORE_NOTIFY_MAIL_TO_MAX  8 /* <= CFR_NOTIFY_RCPT_MAX */
#define RESTORE_VERIFY_SAMPLE_MAX   1000000

struct cfr_cfg;

/* The `verify` group; paths are NULL when unset and have no default. */
struct restore_verify_settings {
    const char *scratch_dir;    /* default /var/lib/coffer/verify-scratch */
    const char *report_path;    /* NULL: JSON only on --json/stdout */
    const char *metrics_path;   /* NULL: no metrics file */
    const char *state_path;     /* default /var/lib/coffer/verify/state.json */
    uint64_t sample_mailboxes;  /* 0: all (default 0) */
    uint64_t sample_messages;   /* 0: all (default 0) */
    int64_t schedule_ms;        /* default 24h, 1s..30d */
    int64_t jitter_ms;          /* default 0, 0..schedule */
    int64_t coverage_window_ms; /* default 30d */
    const char *live_store;     /* pattern with %m or %u, or NULL */
};

/* The `notify` group (core/notify.h). No targets: nothing is sent. */
struct restore_notify_settings {
    const char *webhooks[RESTORE_NOTIFY_WEBHOOKS_MAX];
    size_t n_webhooks;
    const char *mail_to[RESTORE_NOTIFY_MAIL_TO_MAX];
    size_t n_mail_to;
    const char *smtp_url, *smtp_from, *smtp_user;
    const char *smtp_password_file; /* read only when sending */
    const char *ca_file;
    const char *source; /* the "host" field; NULL: none */
    int64_t timeout_ms; /* default 10s */
    unsigned retries;   /* default 2 */
};

struct restore_config {
    const char *tenant;
    const char *key_file;
    const char *passphrase_file; /* NULL: prompt on the terminal */
    const char *vaults[RESTORE_FETCH_VAULTS_MAX];
    size_t n_vaults;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *tls_server_name; /* NULL: the host part of each address */
    /* admin_tls = { cert; key }: the admin certificate for Admin calls
     * (retention, purge, hold); NULL when absent. Reads use tls. */
    const char *admin_tls_cert, *admin_tls_key;
    unsigned parallelism;
    size_t batch;
    int64_t timeout_ms;
    const char *log_level;
    struct restore_verify_settings verify;
    struct restore_notify_settings notify;
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

/*
 * Reads the SMTP password file (same mode rules as a passphrase file)
 * into an owned secret, NUL-terminated, *len_r bytes before the NUL.
 */
int restore_config_smtp_password(const struct restore_notify_settings *ns,
                                 struct cfr_secret **s_r, size_t *len_r,
                                 struct cfr_err *err);

#endif /* RESTORE_CONFIG_H */
