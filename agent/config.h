/*
 * config.h - coffer-agent's configuration: one libconfig file, read through
 * core/cfg.h, every value type- and range-checked and every unknown
 * setting refused with file:line (docs/AGENT.md is the reference).
 *
 * What it decides and why it lives here rather than in main.c: the checks
 * are the operator's first line of defence against a typo that would
 * silently back up nothing (a mailbox list with a relative root, a pattern
 * without a placeholder, a quorum above the vault count) or keep a tenant's
 * only copies in one region (vaults without a region, all in one), so they
 * are unit tested on text (agent_config_parse) without a vault or a terminal.
 *
 * Thread safety: read-only after load; strings point into the parsed file,
 * which struct agent_config keeps alive until agent_config_fini.
 */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"    /* struct cfr_err */
#include "uplink.h" /* AGENT_UPLINK_VAULTS_MAX */

/* Configured {name, root} entries at most (a pattern has no such cap). */
#define AGENT_CONFIG_MAILBOXES_MAX 10000
/* Longest path the agent builds from a setting (the default lock file). */
#define AGENT_CONFIG_PATH_MAX 4096
/* Longest vaults[].region (bytes), as coffer-admin allows for a tenant. */
#define AGENT_CONFIG_REGION_MAX (AGENT_UPLINK_REGION_MAX - 1)
/* The file read when --config is not given. */
#define AGENT_CONFIG_DEFAULT_PATH "/etc/coffer/agent.conf"

struct agent_config_mailbox {
    const char *name; /* "user@domain", the snapshot's mailbox name */
    const char *root; /* absolute path of its Maildir or mbox directory */
};

struct agent_config_vault {
    const char *address;  /* "host:port" */
    const char *name;     /* for reports; defaults to address */
    const char *tls_name; /* TLS name override; NULL = host part */
    const char *region;   /* where the vault must say it is; NULL = unset */
};

struct agent_config {
    const char *tenant;          /* for reports; the certificate decides */
    const char *key_file;        /* the agent's write-only key view */
    const char *passphrase_file; /* what unlocks key_file, mode 0600 */
    const char *state_dir;       /* the file cache (agent/state.h) */
    const char *lock_file;       /* one instance at a time */
    const char *log_level;       /* "warn" unless set */
    const char *host;            /* snapshot headers' host; NULL: hostname */
    const char *tmp_dir;         /* reference-list sort runs; NULL: $TMPDIR */

    struct agent_config_mailbox *mailboxes; /* owned array, may be empty */
    size_t n_mailboxes;
    const char *mailbox_pattern; /* NULL when absent */

    struct agent_config_vault vaults[AGENT_UPLINK_VAULTS_MAX];
    size_t n_vaults;
    const char *tls_ca; /* PEM file paths */
    const char *tls_cert;
    const char *tls_key;

    unsigned quorum; /* vaults that must acknowledge; 0 = all */
    /*
     * false (the default): every vault has a region, at least two distinct
     * ones are listed, and a run counts only when its commits span two
     * regions (agent/uplink.h). true: one region (or none) is accepted.
     */
    bool allow_single_region;
    unsigned workers;
    int cpu_nice;
    int io_class; /* enum agent_backup_io_class */
    int io_level;
    unsigned mass_deletion_percent; /* 1..100 */
    uint64_t mass_deletion_min;     /* vanished files below this never warn */

    int64_t call_timeout_ms;
    int64_t stream_timeout_ms;
    int64_t stall_ms;
    int64_t lease_ttl_ms;
    uint64_t state_cache_bytes;

    char lock_buf[AGENT_CONFIG_PATH_MAX]; /* the default lock_file */
    struct cfr_cfg *cfg; /* owned: the strings above borrow from it */
};

/*
 * Loads and checks path (borrowed). On error err names the file, line and
 * setting (CFR_ECONFIG), or the file (CFR_EIO, CFR_ENOTFOUND), and nothing
 * is left allocated in *cfg_r.
 */
int agent_config_load(const char *path, struct agent_config *cfg_r,
                      struct cfr_err *err);
/* As agent_config_load, from text (tests). */
int agent_config_parse(const char *text, struct agent_config *cfg_r,
                       struct cfr_err *err);
/* Frees what a load allocated; accepts a zeroed or finished config. */
void agent_config_fini(struct agent_config *cfg);

/*
 * Whether name (borrowed) is in the configured list. A pattern's mailboxes
 * are known only by expanding it (agent/mailbox.h), so this says nothing
 * about them.
 */
bool agent_config_lists(const struct agent_config *cfg, const char *name);

#endif /* AGENT_CONFIG_H */
