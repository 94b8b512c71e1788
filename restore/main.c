/*
 * main.c - coffer-restore: picks a command by name (commands.h) and runs
 * it; the snapshots and restore commands live here.
 *
 *   coffer-restore [--config FILE] COMMAND [OPTIONS]
 *
 * Invariants:
 *  1. A command parses all of its options before it opens the session
 *     (session.h), so a usage error exits 2 without asking for a
 *     passphrase or calling a vault.
 *  2. --json prints exactly one JSON document on stdout, on success and
 *     on failure alike; human text goes to stdout (results) and stderr
 *     (errors), never mixed into the JSON.
 */
#include <inttypes.h> /* PRId64 */
#include <stdbool.h>  /* bool */
#include <stdio.h>    /* printf */
#include <string.h>   /* strcmp */
#include <time.h>     /* clock_gettime */

#include "buf.h"      /* cfr_hex_encode */
#include "commands.h" /* struct restore_command */
#include "json.h"     /* cfr_json_fput */
#include "log.h"      /* cfr_log_quote */
#include "mem.h"      /* cfr_free */
#include "restore.h"  /* restore_list, restore_mailbox */
#include "session.h"  /* restore_session, exit codes */

#define VERSION "coffer-restore 0.1"

/* ---- snapshots and restore ---------------------------------------------- */

static void
print_snapshot_json(FILE *o, const struct restore_snapshot *s)
{
    char hex[65], when[32];
    fprintf(o, "{\"id\":\"%s\"", cfr_hex_encode(s->header_id, 32, hex));
    fprintf(o, ",\"mailbox_id\":\"%s\"",
            cfr_hex_encode(s->mailbox_id, 32, hex));
    fprintf(o, ",\"received_ms\":%" PRId64 ",\"received\":\"%s\"",
            s->received_ms, restore_iso_time(s->received_ms, when));
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
snapshots_run(struct restore_session *s, const char *mailbox, bool json,
              struct cfr_err *err)
{
    struct restore_snapshot *v = NULL;
    size_t n = 0, bad = 0;
    int rc, code;

    rc = restore_list(s->f, s->kr, mailbox, &v, &n, err);
    if (rc != 0) {
        code = rc == CFR_ECORRUPT ? RESTORE_EXIT_VERIFY
               : rc == CFR_ENOMEM ? RESTORE_EXIT_OTHER
                                  : RESTORE_EXIT_VAULT;
        if (json) {
            printf("{\"ok\":false,\"error\":");
            restore_json_error(stdout,
                               code == RESTORE_EXIT_VERIFY ? RESTORE_F_VERIFY
                                                           : RESTORE_F_VAULT,
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
                restore_iso_time(p->received_ms, when),
                cfr_log_quote(p->h.host, qh, sizeof(qh)), p->h.manifest.entries,
                p->h.total_bytes, p->flags & 1u ? "mass-deletion" : "-",
                p->held ? "yes" : "no", hex);
        } else {
            printf("%-32s %-24s %-20s %8s %12s %-13s %-4s %s\n",
                   "(does not open)", restore_iso_time(p->received_ms, when),
                   "-", "-", "-", p->flags & 1u ? "mass-deletion" : "-",
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
        return RESTORE_EXIT_VERIFY;
    }
    return RESTORE_EXIT_OK;
}

static int
restore_run(struct restore_session *s, const char *mailbox, const char *dir,
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
                   restore_iso_time(st.snap.received_ms, when));
        }
        printf(",\"files\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"chunks\":%" PRIu64 ",\"folders\":%" PRIu64
               ",\"seconds\":%.3f,\"error\":",
               st.files, st.bytes, st.chunks, st.folders, secs);
        if (rc == 0) {
            printf("null");
        } else {
            restore_json_error(stdout, st.failure, err);
        }
        printf("}\n");
    } else if (rc == 0) {
        char hex[65], when[32];
        printf("restored %" PRIu64 " files (%" PRIu64 " bytes, %" PRIu64
               " folders) of snapshot %.16s (received %s) in %.2f s\n",
               st.files, st.bytes, st.folders,
               cfr_hex_encode(st.snap.header_id, 32, hex),
               restore_iso_time(st.snap.received_ms, when), secs);
    }
    return rc == 0 ? RESTORE_EXIT_OK : restore_exit_for_failure(st.failure);
}

/* Options shared by the commands here: --mailbox NAME, --to DIR, flags. */
struct basic_opts {
    const char *mailbox, *dir;
    bool json, into_nonempty;
};

/* 0, or -1 after printing what is wrong. allow_* say which are accepted. */
static int
basic_parse(const char *cmd, int argc, char **argv, bool allow_restore,
            struct basic_opts *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (allow_restore && strcmp(a, "--into-nonempty") == 0) {
            o->into_nonempty = true;
        } else if (strcmp(a, "--mailbox") == 0 && i + 1 < argc) {
            o->mailbox = argv[++i];
        } else if (allow_restore && strcmp(a, "--to") == 0 && i + 1 < argc) {
            o->dir = argv[++i];
        } else {
            fprintf(stderr,
                    "coffer-restore %s: unknown or incomplete option \"%s\"\n",
                    cmd, a);
            return -1;
        }
    }
    if (o->mailbox != NULL &&
        (o->mailbox[0] == '\0' || strlen(o->mailbox) > CFR_SNAP_MAILBOX_MAX)) {
        fprintf(stderr, "coffer-restore %s: --mailbox: 1..%d bytes\n", cmd,
                CFR_SNAP_MAILBOX_MAX);
        return -1;
    }
    if (o->dir != NULL && o->dir[0] == '\0') {
        fprintf(stderr, "coffer-restore %s: --to: empty path\n", cmd);
        return -1;
    }
    return 0;
}

static int
cmd_snapshots(const char *config, int argc, char **argv)
{
    struct restore_session s = {.config_path = config};
    struct basic_opts o;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    if (basic_parse("snapshots", argc, argv, false, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    code = restore_session_open(&s, &err);
    if (code == RESTORE_EXIT_OK) {
        code = snapshots_run(&s, o.mailbox, o.json, &err);
        if (code != RESTORE_EXIT_OK) {
            fprintf(stderr, "coffer-restore: %s\n",
                    err.msg[0] != '\0' ? err.msg : "failed");
        }
    } else {
        restore_session_report(code, o.json, &err);
    }
    fflush(stdout);
    restore_session_fini(&s);
    return code;
}

static int
cmd_restore(const char *config, int argc, char **argv)
{
    struct restore_session s = {.config_path = config};
    struct basic_opts o;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    if (basic_parse("restore", argc, argv, true, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    if (o.mailbox == NULL || o.dir == NULL) {
        fprintf(stderr, "coffer-restore restore: --mailbox and --to are "
                        "needed\n");
        return RESTORE_EXIT_USAGE;
    }
    code = restore_session_open(&s, &err);
    if (code == RESTORE_EXIT_OK) {
        code = restore_run(&s, o.mailbox, o.dir, o.into_nonempty, o.json, &err);
        if (code != RESTORE_EXIT_OK) {
            fprintf(stderr, "coffer-restore: %s\n",
                    err.msg[0] != '\0' ? err.msg : "failed");
        }
    } else {
        restore_session_report(code, o.json, &err);
    }
    fflush(stdout);
    restore_session_fini(&s);
    return code;
}

/* ---- dispatch ------------------------------------------------------------ */

static const struct restore_command commands[] = {
    {"snapshots", cmd_snapshots, "  snapshots [--mailbox NAME] [--json]\n"},
    {"restore", cmd_restore,
     "  restore --mailbox NAME --to DIR [--into-nonempty] [--json]\n"},
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: coffer-restore [--config FILE] COMMAND [OPTIONS]\n"
               "       coffer-restore --help | --version\n"
               "\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fputs(commands[i].usage, f);
    }
    fprintf(f,
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

int
main(int argc, char **argv)
{
    const char *config = NULL;
    char *rest[256];
    int n_rest = 0, cmd_at = -1;

    /* --config may come before or after the command name; everything
     * else after the name belongs to the command. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cmd_at < 0 && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            usage(stdout);
            return RESTORE_EXIT_OK;
        }
        if (cmd_at < 0 && strcmp(a, "--version") == 0) {
            printf("%s\n", VERSION);
            return RESTORE_EXIT_OK;
        }
        if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (cmd_at < 0 && a[0] != '-') {
            cmd_at = i;
        } else if (cmd_at >= 0 &&
                   n_rest < (int)(sizeof(rest) / sizeof(rest[0]))) {
            rest[n_rest++] = argv[i];
        } else {
            fprintf(stderr,
                    "coffer-restore: unknown or misplaced option \"%s\"\n", a);
            usage(stderr);
            return RESTORE_EXIT_USAGE;
        }
    }
    if (cmd_at >= 0) {
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
            if (strcmp(argv[cmd_at], commands[i].name) == 0) {
                /* No cfr_rpc_global_fini: grpc_shutdown can block ~10 s
                 * (rpc.h) and the process is about to end anyway. */
                return commands[i].run(config, n_rest, rest);
            }
        }
        fprintf(stderr, "coffer-restore: unknown command \"%s\"\n",
                argv[cmd_at]);
    }
    usage(stderr);
    return RESTORE_EXIT_USAGE;
}
