/*
 * config.h - coffer-vault's configuration: one libconfig file, read through
 * core/cfg.h, every value checked and every unknown setting refused.
 *
 * The file is read once at start; the loaded struct vault_config is then
 * read-only and shared by every thread. Strings point into the parsed file
 * (vault_config keeps it alive) or are defaults with static storage.
 *
 * The test-only clock offset is accepted only when the caller says the
 * vault runs in test mode (the --test-mode flag): a production config that
 * sets it is refused, so nobody can move a vault's retention clock by
 * editing a file.
 *
 * Thread safety: read-only after vault_config_load.
 */
#ifndef VAULT_CONFIG_H
#define VAULT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"  /* struct cfr_err */
#include "sync.h" /* struct vault_sync_peer, VAULT_SYNC_PEERS_MAX */

struct vault_config {
    const char *listen;    /* "host:port"; port 0 picks a free one */
    const char *port_file; /* where the bound port is written, or NULL */
    const char *tls_cert;  /* paths to PEM files */
    const char *tls_key;
    const char *tls_client_ca;
    const char *data_dir;
    const char *region;
    const char *log_level;
    const char *stats_file; /* Prometheus textfile, or NULL */
    uint64_t cache_bytes;
    unsigned workers;
    unsigned max_calls;
    size_t max_msg;         /* per received message */
    size_t get_batch_bytes; /* target size of one GetObjects message */
    unsigned max_failures;  /* denials per window that lock a caller out */
    int64_t failure_window_ms;
    int64_t lockout_ms;
    int64_t retention_ms; /* default window per tenant */
    int64_t schedule_ms;  /* retention + GC interval; 0 = off */
    int64_t audit_keep_ms;
    int64_t lease_ttl_ms;       /* cap on a lease's lifetime */
    int64_t approval_window_ms; /* second admin's time to approve */
    int64_t tombstone_keep_ms;
    int64_t stats_interval_ms;
    int64_t shutdown_grace_ms;
    int64_t test_clock_offset_ms; /* only with test_mode */
    /* Security notifications (core/notify.h); all optional. */
    const char *notify_webhook;
    const char *notify_mail_to[8];
    size_t notify_n_mail_to;
    const char *notify_smtp_url;
    const char *notify_smtp_from;
    const char *notify_smtp_user;
    const char *notify_smtp_password;
    const char *notify_ca_file;
    /*
     * Replication (vault/sync.h, docs/REPLICATION.md). name is this
     * vault's name (its certificate's coffer://vault/<name>); required
     * when peers are listed. Peers' strings borrow from cfg.
     */
    const char *name;
    struct vault_sync_peer peers[VAULT_SYNC_PEERS_MAX];
    size_t n_peers;
    int64_t sync_interval_ms;  /* sync.interval, default 5m; 0 = on demand */
    uint64_t sync_bandwidth;   /* sync.bandwidth, bytes/s; 0 = unlimited */
    int64_t sync_timeout_ms;   /* sync.timeout, per call */
    const char *sync_tls_cert; /* sync.cert/sync.key; default tls.cert/key
                                  (vault certificates allow client auth) */
    const char *sync_tls_key;
    const char *sync_tls_ca;   /* sync.ca; default tls.client_ca */
    int64_t scrub_interval_ms; /* scrub.interval, default 7d; 0 = off */
    bool test_mode;
    struct cfr_cfg *cfg; /* owned: the strings above borrow from it */
};

/*
 * Loads and checks path. test_mode allows test_clock_offset. On error err
 * names the file, line and setting (CFR_ECONFIG or CFR_EIO) and *cfg_r is
 * left empty.
 */
int vault_config_load(const char *path, bool test_mode,
                      struct vault_config *cfg_r, struct cfr_err *err);
/* As vault_config_load, from text (tests). */
int vault_config_parse(const char *text, bool test_mode,
                       struct vault_config *cfg_r, struct cfr_err *err);
void vault_config_fini(struct vault_config *cfg);

#endif /* VAULT_CONFIG_H */
