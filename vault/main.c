/*
 * main.c - coffer-vault: runs the vault service in the foreground.
 *
 *   coffer-vault --config FILE [--test-mode [--test-clock-offset DUR]]
 *
 * Invariants:
 *  1. Start order: config, TLS material, clock, storage, bind, serve. A
 *     problem at any step exits before serving, with a message naming it
 *     and the exit code of that step (see usage() and docs/VAULT.md).
 *  2. SIGTERM and SIGINT are blocked before any thread exists (gRPC's
 *     threads inherit the mask), and only this thread waits for them.
 *  3. On SIGTERM: stop accepting, let calls finish for shutdown_grace,
 *     cancel the rest, close the stores, exit 0. Every acknowledged write
 *     is already synced, so nothing is half-written at any point.
 *  4. After a storage write error the vault stops at once and exits 1; the
 *     failed write is never retried (kv.h).
 *  5. The test clock offset needs --test-mode and is logged at WARN, so it
 *     cannot be switched on silently.
 */
#include <errno.h>   /* errno, for CFR_ERR_ERRNO */
#include <pthread.h> /* pthread_sigmask */
#include <signal.h>  /* sigwait family */
#include <stdio.h>   /* fprintf, FILE */
#include <stdlib.h>  /* exit codes */
#include <string.h>  /* strcmp */
#include <time.h>    /* struct timespec */

#include "cfg.h"    /* cfr_parse_duration_ms, cfr_cfg_read_file */
#include "clock.h"  /* the vault's clock */
#include "config.h" /* vault_config_load */
#include "log.h"    /* structured logging */
#include "mem.h"    /* cfr_malloc */
#include "notify.h" /* security notifications */
#include "rpc.h"    /* cfr_rpc_global_init */
#include "server.h" /* the service */
#include "store.h"  /* storage */
#include "sysdb.h"  /* system database */

/* Exit codes: part of the interface, never renumbered. */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1, /* a storage write failed while serving */
    EXIT_USAGE = 2,
    EXIT_CONFIG = 3, /* bad config file or unreadable TLS files */
    EXIT_LISTEN = 4, /* the listen address cannot be bound */
    EXIT_STORE = 5,  /* the data directory cannot be opened */
    EXIT_START = 6,  /* anything else before serving */
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: coffer-vault --config FILE [--test-mode "
            "[--test-clock-offset DURATION]]\n"
            "       coffer-vault --help | --version\n"
            "\n"
            "Runs the vault in the foreground, logging to stderr. SIGTERM or\n"
            "SIGINT stops it gracefully.\n"
            "\n"
            "exit codes:\n"
            "  0  stopped by SIGTERM/SIGINT\n"
            "  1  a storage write failed while serving (never retried)\n"
            "  2  bad command line\n"
            "  3  bad configuration (the message names the setting)\n"
            "  4  cannot listen on the configured address\n"
            "  5  cannot open the data directory\n"
            "  6  other start-up failure\n");
}

/* Writes the bound port for supervisors and tests (temp file + rename). */
static int
write_port_file(const char *path, int port, struct cfr_err *err)
{
    char tmp[4096];
    FILE *f;
    int rc = 0;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        return CFR_ERR(err, CFR_ECONFIG, "port_file: path too long");
    }
    if ((f = fopen(tmp, "w")) == NULL) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "port_file: cannot write \"%s\"",
                             tmp);
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        rc =
            CFR_ERR_ERRNO(err, CFR_EIO, "port_file: cannot write \"%s\"", path);
    }
    return rc;
}

static void
report(const char *event, const struct cfr_err *err)
{
    cfr_log_err(CFR_LOG_ERROR, event, err);
    fprintf(stderr, "coffer-vault: %s\n", err->msg);
}

int
main(int argc, char **argv)
{
    const char *config_path = NULL, *offset_arg = NULL;
    bool test_mode = false, rpc_inited = false;
    struct vault_config cfg;
    struct cfr_err err;
    struct cfr_clock *clock = NULL;
    struct vault_store *store = NULL;
    struct vault_sysdb *sysdb = NULL;
    struct cfr_notify *notify = NULL;
    struct vault_server *srv = NULL;
    /* Reads failing their checksum go from the store to the server's
     * replication engine for repair (server.h). */
    struct vault_server_relay relay = {NULL};
    char *cert = NULL, *key = NULL, *ca = NULL;
    enum cfr_log_level level;
    sigset_t sigs;
    int code = EXIT_START;

    memset(&cfg, 0, sizeof(cfg));
    cfr_err_clear(&err);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("coffer-vault %s\n", VAULT_VERSION);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--test-mode") == 0) {
            test_mode = true;
        } else if (strcmp(argv[i], "--test-clock-offset") == 0 &&
                   i + 1 < argc) {
            offset_arg = argv[++i];
        } else {
            fprintf(stderr, "coffer-vault: unknown or incomplete option: %s\n",
                    argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (config_path == NULL) {
        fprintf(stderr, "coffer-vault: --config FILE is required\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (offset_arg != NULL && !test_mode) {
        fprintf(stderr,
                "coffer-vault: --test-clock-offset needs --test-mode\n");
        return EXIT_USAGE;
    }

    /* Invariant 2: before any thread. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (vault_config_load(config_path, test_mode, &cfg, &err) != 0) {
        code = EXIT_CONFIG;
        report("vault.config", &err);
        goto out;
    }
    if (offset_arg != NULL &&
        cfr_parse_duration_ms(offset_arg, &cfg.test_clock_offset_ms) != 0) {
        code = EXIT_USAGE;
        fprintf(stderr,
                "coffer-vault: --test-clock-offset: \"%s\" is not a "
                "duration\n",
                offset_arg);
        goto out;
    }
    if (cfr_log_level_parse(cfg.log_level, &level) != 0) {
        code = EXIT_CONFIG;
        fprintf(stderr, "coffer-vault: log_level: \"%s\" is not a level\n",
                cfg.log_level);
        goto out;
    }
    cfr_log_set_level(level);
    if ((cert = cfr_cfg_read_file(cfg.tls_cert, "tls.cert", &err)) == NULL ||
        (key = cfr_cfg_read_file(cfg.tls_key, "tls.key", &err)) == NULL ||
        (ca = cfr_cfg_read_file(cfg.tls_client_ca, "tls.client_ca", &err)) ==
            NULL) {
        code = EXIT_CONFIG;
        report("vault.config", &err);
        goto out;
    }

    if (test_mode) {
        cfr_log(CFR_LOG_WARN, "vault.test_mode",
                "TEST MODE: not for production; clock_offset_ms=%lld",
                (long long)cfg.test_clock_offset_ms);
    }
    if (cfg.test_clock_offset_ms != 0) {
        clock = cfr_clock_offset_new(cfg.test_clock_offset_ms);
        if (clock == NULL) {
            goto out;
        }
        cfr_log(CFR_LOG_WARN, "vault.test_clock",
                "THE VAULT CLOCK IS MOVED BY %lld ms: retention and leases "
                "use a false time",
                (long long)cfg.test_clock_offset_ms);
    } else {
        clock = cfr_clock_system();
    }

    {
        struct vault_store_opts so = {
            .dir = cfg.data_dir,
            .cache_bytes = (size_t)cfg.cache_bytes,
            .clock = clock,
            .lease_max_ms = cfg.lease_ttl_ms,
            .tombstone_keep_ms = cfg.tombstone_keep_ms,
            .on_corrupt = vault_server_on_corrupt,
            .on_corrupt_ctx = &relay,
        };
        if ((store = vault_store_open(&so, &err)) == NULL) {
            code = EXIT_STORE;
            report("vault.store", &err);
            goto out;
        }
    }
    {
        struct vault_sysdb_opts yo = {
            .data_dir = cfg.data_dir,
            .clock = clock,
            .audit_keep_ms = cfg.audit_keep_ms,
            .approval_window_ms = cfg.approval_window_ms,
        };
        if ((sysdb = vault_sysdb_open(&yo, &err)) == NULL) {
            code = EXIT_STORE;
            report("vault.store", &err);
            goto out;
        }
    }
    {
        struct cfr_notify_opts no = {
            .webhook_url = cfg.notify_webhook,
            .mail_to = cfg.notify_mail_to,
            .n_mail_to = cfg.notify_n_mail_to,
            .smtp_url = cfg.notify_smtp_url,
            .smtp_from = cfg.notify_smtp_from,
            .smtp_user = cfg.notify_smtp_user,
            .smtp_password = cfg.notify_smtp_password,
            .ca_file = cfg.notify_ca_file,
            .source = cfg.region,
            .retries = 3,
        };
        if ((notify = cfr_notify_new(&no, clock, &err)) == NULL) {
            code = EXIT_CONFIG;
            report("vault.config", &err);
            goto out;
        }
    }
    if (cfr_rpc_global_init(&err) != 0) {
        report("vault.start", &err);
        goto out;
    }
    rpc_inited = true;
    {
        struct vault_server_opts vo = {
            .cfg = &cfg,
            .store = store,
            .sysdb = sysdb,
            .notify = notify,
            .clock = clock,
            .cert_pem = cert,
            .key_pem = key,
            .client_ca_pem = ca,
        };
        if (vault_server_new(&vo, &srv, &err) != 0) {
            code = err.code == CFR_EIO ? EXIT_LISTEN : EXIT_CONFIG;
            if (code == EXIT_LISTEN) {
                char m[CFR_ERR_MSG_MAX];
                snprintf(m, sizeof(m), "listen: cannot listen on \"%s\"",
                         cfg.listen);
                fprintf(stderr, "coffer-vault: %s\n", m);
                cfr_log(CFR_LOG_ERROR, "vault.listen", "listen=%s", cfg.listen);
            } else {
                report("vault.start", &err);
            }
            goto out;
        }
    }
    vault_server_relay_set(&relay, srv);
    if (vault_server_start(srv, &err) != 0) {
        report("vault.start", &err);
        goto out;
    }
    if (cfg.port_file != NULL &&
        write_port_file(cfg.port_file, vault_server_port(srv), &err) != 0) {
        report("vault.start", &err);
        goto out;
    }
    cfr_log(CFR_LOG_INFO, "vault.start",
            "version=%s listen=%s port=%d region=%s data_dir=%s name=%s "
            "peers=%zu",
            VAULT_VERSION, cfg.listen, vault_server_port(srv), cfg.region,
            cfg.data_dir, cfg.name != NULL ? cfg.name : "-", cfg.n_peers);

    /* Serve until a signal or a storage failure (invariants 3 and 4). */
    code = EXIT_OK;
    for (;;) {
        struct timespec tick = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            cfr_log(CFR_LOG_INFO, "vault.stopping", "signal=%d grace_ms=%lld",
                    sig, (long long)cfg.shutdown_grace_ms);
            vault_server_stop(srv, cfg.shutdown_grace_ms);
            break;
        }
        if (vault_server_failed(srv)) {
            cfr_log(CFR_LOG_ERROR, "vault.stopping",
                    "reason=storage_write_failed");
            vault_server_stop(srv, 0);
            code = EXIT_RUNTIME;
            break;
        }
    }
out:
    /* Stopped first: no handler or sync thread reads the relay any more. */
    vault_server_stop(srv, 0);
    vault_server_relay_set(&relay, NULL);
    vault_server_free(srv);
    /* After the server: its last audit records are written at close. */
    vault_sysdb_close(sysdb);
    /* Queued notifications get a short while to go out. */
    cfr_notify_free(notify, 5000);
    vault_store_close(store);
    if (rpc_inited) {
        cfr_rpc_global_fini();
    }
    if (clock != NULL) {
        cfr_clock_free(clock);
    }
    /* Only a vault that served says it stopped; start-up refusals have
     * already named their problem. */
    if (code == EXIT_OK) {
        cfr_log(CFR_LOG_INFO, "vault.stopped", "exit=0");
    } else if (code == EXIT_RUNTIME) {
        cfr_log(CFR_LOG_ERROR, "vault.stopped",
                "exit=%d reason=storage_write_failed", code);
    }
    cfr_cfg_free_file(cert);
    /* The server key is gRPC's copy now; ours need not linger. */
    cfr_cfg_free_file(key);
    cfr_cfg_free_file(ca);
    vault_config_fini(&cfg);
    return code;
}
