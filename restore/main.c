/*
 * main.c - coffer-restore: lists a tenant's snapshots and restores a
 * mailbox from the newest one.
 *
 *   coffer-restore [--config FILE] snapshots [--mailbox NAME] [--json]
 *   coffer-restore [--config FILE] restore --mailbox NAME --to DIR
 *                  [--into-nonempty] [--json]
 *
 * Invariants:
 *  1. Start order: command line, configuration, passphrase, key file, TLS
 *     files, vaults; each step's failure exits with its own code (usage()
 *     and docs/RESTORE.md) and a message naming what failed, before any
 *     later step runs.
 *  2. The passphrase and the keyring live only in sodium_malloc'd memory
 *     and are wiped before exit; nothing secret is printed or logged.
 *  3. --json prints exactly one JSON document on stdout, on success and
 *     on failure alike; human text goes to stdout (results) and stderr
 *     (errors), never mixed into the JSON.
 */
#include <errno.h>    /* errno, for CFR_ERR_ERRNO */
#include <inttypes.h> /* PRId64 */
#include <stdio.h>    /* printf */
#include <stdlib.h>   /* exit codes */
#include <string.h>   /* strcmp */
#include <time.h>     /* gmtime_r, clock_gettime */

#include "buf.h"     /* cfr_hex_encode */
#include "cfg.h"     /* cfr_cfg_read_file: PEM files */
#include "config.h"  /* restore_config */
#include "fetch.h"   /* restore_fetcher */
#include "json.h"    /* cfr_json_fput */
#include "keys.h"    /* cfr_keyring_import */
#include "log.h"     /* log level */
#include "mem.h"     /* cfr_free */
#include "restore.h" /* restore_list, restore_mailbox */
#include "rpc.h"     /* cfr_rpc_global_init */
#include "secret.h"  /* the passphrase */

/* Exit codes: part of the interface (docs/RESTORE.md), never renumbered. */
enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,    /* anything not below (memory, a bug) */
    EXIT_USAGE = 2,    /* bad command line */
    EXIT_CONFIG = 3,   /* config, passphrase, key file or TLS files */
    EXIT_VAULT = 4,    /* no vault answered, or it refused us */
    EXIT_NOTFOUND = 5, /* no snapshot of that mailbox */
    EXIT_VERIFY = 6,   /* data missing, damaged, forged, or the wrong key */
    EXIT_UNSAFE = 7,   /* the snapshot names a path that is refused */
    EXIT_TARGET = 8,   /* the target is not empty, or a file exists */
    EXIT_IO = 9,       /* writing the target failed */
};

#define VERSION  "coffer-restore 0.1"
#define NAME_LEN 1024

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: coffer-restore [--config FILE] snapshots [--mailbox NAME] "
            "[--json]\n"
            "       coffer-restore [--config FILE] restore --mailbox NAME "
            "--to DIR\n"
            "                      [--into-nonempty] [--json]\n"
            "       coffer-restore --help | --version\n"
            "\n"
            "The configuration defaults to " RESTORE_CONFIG_DEFAULT ".\n"
            "restore writes the newest snapshot of the mailbox as a Maildir++\n"
            "tree into DIR, which must be empty or absent (--into-nonempty\n"
            "allows other files there; none is ever replaced).\n"
            "\n"
            "exit codes:\n"
            "  0  done\n"
            "  1  other failure\n"
            "  2  bad command line\n"
            "  3  bad configuration, passphrase, key file or TLS files\n"
            "  4  no vault answered, or the vault refused the certificate\n"
            "  5  no snapshot of that mailbox\n"
            "  6  verification failed: data missing, damaged or forged, or "
            "the\n"
            "     key is not the tenant's (nothing is left half-written)\n"
            "  7  the snapshot names an unsafe path; it was refused\n"
            "  8  the target is not empty, or a file to write exists\n"
            "  9  writing the target failed\n");
}

static int
exit_for_failure(enum restore_failure f)
{
    switch (f) {
    case RESTORE_F_NONE:
        return EXIT_OK;
    case RESTORE_F_VAULT:
        return EXIT_VAULT;
    case RESTORE_F_NOTFOUND:
        return EXIT_NOTFOUND;
    case RESTORE_F_VERIFY:
        return EXIT_VERIFY;
    case RESTORE_F_UNSAFE:
        return EXIT_UNSAFE;
    case RESTORE_F_TARGET:
        return EXIT_TARGET;
    case RESTORE_F_IO:
        return EXIT_IO;
    case RESTORE_F_OTHER:
        break;
    }
    return EXIT_OTHER;
}

/* ---- JSON ---------------------------------------------------------------- */

static const char *
iso_time(int64_t ms, char out[32])
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

static void
json_error(FILE *f, enum restore_failure kind, const struct cfr_err *err)
{
    fprintf(f, "{\"kind\":");
    cfr_json_fput(f, restore_failure_name(kind));
    fprintf(f, ",\"code\":");
    cfr_json_fput(f, cfr_code_name(err->code));
    fprintf(f, ",\"message\":");
    cfr_json_fput(f, err->msg);
    fprintf(f, "}");
}

/* ---- start-up ------------------------------------------------------------ */

struct session {
    struct restore_config cfg;
    struct cfr_keyring *kr;
    char *ca, *cert, *key;
    struct restore_fetcher *f;
};

static void
session_fini(struct session *s)
{
    restore_fetcher_free(s->f);
    cfr_keyring_free(s->kr);
    cfr_cfg_free_file(s->ca);
    cfr_cfg_free_file(s->cert);
    cfr_cfg_free_file(s->key);
    restore_config_fini(&s->cfg);
}

/* Config, passphrase, keyring, TLS, vault: returns an exit code. */
static int
session_open(struct session *s, const char *config_path, struct cfr_err *err)
{
    struct cfr_secret *pass = NULL;
    struct restore_fetch_opts fo;
    enum cfr_log_level lvl;
    size_t plen = 0;
    int rc;

    if (restore_config_load(config_path, &s->cfg, err) != 0) {
        return EXIT_CONFIG;
    }
    if (cfr_log_level_parse(s->cfg.log_level, &lvl) != 0) {
        CFR_ERR(err, CFR_ECONFIG, "log_level: \"%s\" is not a level",
                s->cfg.log_level);
        return EXIT_CONFIG;
    }
    cfr_log_set_level(lvl);
    if (restore_config_passphrase(&s->cfg, &pass, &plen, err) != 0) {
        return EXIT_CONFIG;
    }
    s->kr = cfr_keyring_import(s->cfg.key_file,
                               (const char *)cfr_secret_ro(pass), plen, err);
    cfr_secret_free(pass);
    if (s->kr == NULL) {
        if (err->code == CFR_EAUTH) {
            CFR_ERR(err, CFR_EAUTH, "key_file \"%s\": wrong escrow passphrase",
                    s->cfg.key_file);
        }
        return EXIT_CONFIG;
    }
    if ((s->ca = cfr_cfg_read_file(s->cfg.tls_ca, "tls.ca", err)) == NULL ||
        (s->cert = cfr_cfg_read_file(s->cfg.tls_cert, "tls.cert", err)) ==
            NULL ||
        (s->key = cfr_cfg_read_file(s->cfg.tls_key, "tls.key", err)) == NULL) {
        return EXIT_CONFIG;
    }
    if (cfr_rpc_global_init(err) != 0) {
        return EXIT_OTHER;
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
        return rc == CFR_ENOMEM ? EXIT_OTHER : EXIT_VAULT;
    }
    return EXIT_OK;
}

/* ---- commands ------------------------------------------------------------ */

static void
print_snapshot_json(FILE *o, const struct restore_snapshot *s)
{
    char hex[65], when[32];
    fprintf(o, "{\"id\":\"%s\"", cfr_hex_encode(s->header_id, 32, hex));
    fprintf(o, ",\"mailbox_id\":\"%s\"",
            cfr_hex_encode(s->mailbox_id, 32, hex));
    fprintf(o, ",\"received_ms\":%" PRId64 ",\"received\":\"%s\"",
            s->received_ms, iso_time(s->received_ms, when));
    fprintf(o, ",\"flags\":[%s],\"held\":%s",
            s->flags & 1u ? "\"mass-deletion\"" : "",
            s->held ? "true" : "false");
    if (s->open_rc == 0) {
        fprintf(o, ",\"readable\":true,\"mailbox\":");
        cfr_json_fput(o, s->h.mailbox);
        fprintf(o, ",\"host\":");
        cfr_json_fput(o, s->h.host);
        fprintf(o, ",\"agent_version\":");
        cfr_json_fput(o, s->h.agent_version);
        fprintf(o,
                ",\"agent_time_ms\":%" PRId64 ",\"files\":%" PRIu64
                ",\"bytes\":%" PRIu64 ",\"vanished\":%u",
                s->h.agent_time_ms, s->h.manifest.entries, s->h.total_bytes,
                (unsigned)s->h.vanished);
    } else {
        fprintf(o, ",\"readable\":false,\"error\":");
        cfr_json_fput(o, cfr_code_name(s->open_rc));
    }
    fprintf(o, "}");
}

static int
cmd_snapshots(struct session *s, const char *mailbox, bool json,
              struct cfr_err *err)
{
    struct restore_snapshot *v = NULL;
    size_t n = 0, bad = 0;
    int rc, code;

    rc = restore_list(s->f, s->kr, mailbox, &v, &n, err);
    if (rc != 0) {
        code = rc == CFR_ECORRUPT ? EXIT_VERIFY
               : rc == CFR_ENOMEM ? EXIT_OTHER
                                  : EXIT_VAULT;
        if (json) {
            printf("{\"ok\":false,\"error\":");
            json_error(stdout,
                       code == EXIT_VERIFY ? RESTORE_F_VERIFY : RESTORE_F_VAULT,
                       err);
            printf("}\n");
        }
        return code;
    }
    if (json) {
        printf("{\"tenant\":");
        cfr_json_fput(stdout, s->cfg.tenant);
        printf(",\"vault\":");
        cfr_json_fput(stdout, restore_fetcher_current(s->f));
        printf(",\"snapshots\":[");
    } else {
        printf("%-32s %-24s %-20s %8s %12s %-13s %-4s %s\n", "MAILBOX",
               "RECEIVED (UTC)", "HOST", "FILES", "BYTES", "FLAGS", "HELD",
               "SNAPSHOT");
    }
    for (size_t i = 0; i < n; i++) {
        const struct restore_snapshot *p = &v[i];
        char hex[65], when[32];
        if (p->open_rc != 0) {
            bad++;
        }
        if (json) {
            printf("%s", i > 0 ? "," : "");
            print_snapshot_json(stdout, p);
            continue;
        }
        cfr_hex_encode(p->header_id, 32, hex);
        hex[16] = '\0';
        if (p->open_rc == 0) {
            char qm[96], qh[64];
            printf(
                "%-32s %-24s %-20s %8" PRIu64 " %12" PRIu64 " %-13s %-4s %s\n",
                cfr_log_quote(p->h.mailbox, qm, sizeof(qm)),
                iso_time(p->received_ms, when),
                cfr_log_quote(p->h.host, qh, sizeof(qh)), p->h.manifest.entries,
                p->h.total_bytes, p->flags & 1u ? "mass-deletion" : "-",
                p->held ? "yes" : "no", hex);
        } else {
            printf("%-32s %-24s %-20s %8s %12s %-13s %-4s %s\n",
                   "(does not open)", iso_time(p->received_ms, when), "-", "-",
                   "-", p->flags & 1u ? "mass-deletion" : "-",
                   p->held ? "yes" : "no", hex);
        }
    }
    if (json) {
        printf("],\"unreadable\":%zu,\"ok\":%s}\n", bad,
               bad == 0 ? "true" : "false");
    }
    cfr_free(v);
    if (bad > 0) {
        CFR_ERR(err, CFR_EAUTH,
                "%zu snapshot header(s) do not open with this key (wrong "
                "key, or damaged or forged)",
                bad);
        return EXIT_VERIFY;
    }
    return EXIT_OK;
}

static int
cmd_restore(struct session *s, const char *mailbox, const char *dir,
            bool into_nonempty, bool json, struct cfr_err *err)
{
    struct restore_opts o;
    struct restore_stats st;
    struct timespec t0, t1;
    double secs;
    int rc;

    memset(&o, 0, sizeof(o));
    o.workers = s->cfg.parallelism;
    o.batch_ids = s->cfg.batch;
    o.into_nonempty = into_nonempty;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = restore_mailbox(s->f, s->kr, mailbox, dir, &o, &st, err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc != 0 && st.failure == RESTORE_F_NONE) {
        st.failure = RESTORE_F_OTHER;
    }
    if (json) {
        char hex[65], when[32];
        printf("{\"ok\":%s,\"mailbox\":", rc == 0 ? "true" : "false");
        cfr_json_fput(stdout, mailbox);
        printf(",\"target\":");
        cfr_json_fput(stdout, dir);
        printf(",\"vault\":");
        cfr_json_fput(stdout, restore_fetcher_current(s->f));
        if (st.have_snap) {
            printf(",\"snapshot\":\"%s\",\"received\":\"%s\"",
                   cfr_hex_encode(st.snap.header_id, 32, hex),
                   iso_time(st.snap.received_ms, when));
        }
        printf(",\"files\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"chunks\":%" PRIu64 ",\"folders\":%" PRIu64
               ",\"seconds\":%.3f,\"error\":",
               st.files, st.bytes, st.chunks, st.folders, secs);
        if (rc == 0) {
            printf("null");
        } else {
            json_error(stdout, st.failure, err);
        }
        printf("}\n");
    } else if (rc == 0) {
        char hex[65], when[32];
        printf("restored %" PRIu64 " files (%" PRIu64 " bytes, %" PRIu64
               " folders) of snapshot %.16s (received %s) in %.2f s\n",
               st.files, st.bytes, st.folders,
               cfr_hex_encode(st.snap.header_id, 32, hex),
               iso_time(st.snap.received_ms, when), secs);
    }
    return rc == 0 ? EXIT_OK : exit_for_failure(st.failure);
}

int
main(int argc, char **argv)
{
    const char *config = RESTORE_CONFIG_DEFAULT, *cmd = NULL;
    const char *mailbox = NULL, *dir = NULL;
    bool json = false, into_nonempty = false;
    struct session s;
    struct cfr_err err;
    int code;

    memset(&s, 0, sizeof(s));
    cfr_err_clear(&err);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        }
        if (strcmp(a, "--version") == 0) {
            printf("%s\n", VERSION);
            return EXIT_OK;
        }
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--into-nonempty") == 0) {
            into_nonempty = true;
        } else if ((strcmp(a, "--config") == 0 || strcmp(a, "--mailbox") == 0 ||
                    strcmp(a, "--to") == 0) &&
                   i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(a, "--config") == 0) {
                config = v;
            } else if (strcmp(a, "--mailbox") == 0) {
                mailbox = v;
            } else {
                dir = v;
            }
        } else if (a[0] != '-' && cmd == NULL) {
            cmd = a;
        } else {
            fprintf(stderr,
                    "coffer-restore: unknown or incomplete option "
                    "\"%s\"\n",
                    a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (cmd == NULL ||
        (strcmp(cmd, "snapshots") != 0 && strcmp(cmd, "restore") != 0) ||
        (strcmp(cmd, "restore") == 0 && (mailbox == NULL || dir == NULL)) ||
        (strcmp(cmd, "snapshots") == 0 && (dir != NULL || into_nonempty)) ||
        (mailbox != NULL &&
         (mailbox[0] == '\0' || strlen(mailbox) > CFR_SNAP_MAILBOX_MAX)) ||
        (dir != NULL && dir[0] == '\0')) {
        usage(stderr);
        return EXIT_USAGE;
    }
    code = session_open(&s, config, &err);
    if (code == EXIT_OK) {
        code = strcmp(cmd, "snapshots") == 0
                   ? cmd_snapshots(&s, mailbox, json, &err)
                   : cmd_restore(&s, mailbox, dir, into_nonempty, json, &err);
    } else if (json) {
        printf("{\"ok\":false,\"error\":");
        json_error(stdout,
                   code == EXIT_VAULT ? RESTORE_F_VAULT : RESTORE_F_OTHER,
                   &err);
        printf("}\n");
    }
    if (code != EXIT_OK) {
        fprintf(stderr, "coffer-restore: %s\n",
                err.msg[0] != '\0' ? err.msg : "failed");
    }
    fflush(stdout);
    session_fini(&s);
    /* No cfr_rpc_global_fini: grpc_shutdown can block ~10 s (rpc.h) and
     * the process is about to end anyway. */
    return code;
}
