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
#include <unistd.h>   /* isatty */

#include "buf.h"      /* cfr_hex_encode */
#include "commands.h" /* struct restore_command */
#include "json.h"     /* cfr_json_fput */
#include "log.h"      /* cfr_log_quote */
#include "mem.h"      /* cfr_free */
#include "restore.h"  /* restore_list, restore_select */
#include "select.h"   /* restore_parse_at */
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
        if (s->h.has_parent) {
            fprintf(o, ",\"parent\":\"%s\"",
                    cfr_hex_encode(s->h.parent, 32, hex));
        } else {
            fputs(",\"parent\":null", o);
        }
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

/* ---- restore ------------------------------------------------------------ */

/* What `restore` was asked, parsed before the session opens. */
struct restore_cli {
    struct restore_selection sel;
    const char *dir;
    const char *at_text; /* --at as given */
    const char *ids[RESTORE_MSGIDS_MAX];
    bool json, into_nonempty;
};

/* The progress bar: stderr, at most 4 redraws a second, cleared at the
 * end. The library serialises the calls. */
struct bar {
    struct timespec t0, last;
    bool drawn;
};

static double
secs_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) +
           (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void
bar_draw(void *ctx, const struct restore_progress *p)
{
    struct bar *b = ctx;
    struct timespec now;
    double el, rate;
    char eta[32] = "";
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (p->done) {
        if (b->drawn) {
            fputs("\r\033[K", stderr);
            fflush(stderr);
        }
        b->drawn = false;
        return;
    }
    if (b->drawn && secs_between(&b->last, &now) < 0.25) {
        return;
    }
    b->last = now;
    el = secs_between(&b->t0, &now);
    rate = el > 0.0 ? (double)p->bytes / el : 0.0;
    if (p->bytes_total > 0 && rate > 0.0 && p->bytes <= p->bytes_total) {
        double left = (double)(p->bytes_total - p->bytes) / rate;
        snprintf(eta, sizeof(eta), " ETA %.0f s", left < 1e7 ? left : 1e7);
    }
    if (p->bytes_total > 0) {
        fprintf(stderr,
                "\r\033[Krestoring: %" PRIu64 " files, %.1f of %.1f MiB "
                "(%.0f%%), %.1f MiB/s%s",
                p->files, (double)p->bytes / 1048576.0,
                (double)p->bytes_total / 1048576.0,
                100.0 * (double)p->bytes / (double)p->bytes_total,
                rate / 1048576.0, eta);
    } else {
        fprintf(stderr,
                "\r\033[Krestoring: %" PRIu64 " files, %.1f MiB, %.1f MiB/s",
                p->files, (double)p->bytes / 1048576.0, rate / 1048576.0);
    }
    fflush(stderr);
    b->drawn = true;
}

static void
print_selection_json(const struct restore_cli *c)
{
    const struct restore_selection *sel = &c->sel;
    printf(",\"selection\":{\"mailbox\":");
    cfr_json_fput(stdout, sel->mailbox != NULL ? sel->mailbox : NULL);
    printf(",\"host\":");
    cfr_json_fput(stdout, sel->host);
    printf(",\"folder\":");
    cfr_json_fput(stdout, sel->folder);
    printf(",\"message_ids\":[");
    for (size_t i = 0; i < sel->n_message_ids; i++) {
        printf("%s", i > 0 ? "," : "");
        cfr_json_fput(stdout, sel->message_ids[i]);
    }
    printf("],\"at\":");
    if (c->at_text != NULL) {
        char when[32];
        printf("\"%s\"", restore_iso_time(sel->at_ms, when));
    } else {
        printf("null");
    }
    printf(",\"snapshot\":");
    cfr_json_fput(stdout, sel->snapshot_hex);
    printf(",\"format\":\"%s\",\"into_live\":%s}",
           sel->format == RESTORE_FORMAT_MBOX ? "mbox" : "maildir",
           sel->into_live ? "true" : "false");
}

static int
restore_run(struct restore_session *s, const struct restore_cli *c,
            struct cfr_err *err)
{
    struct restore_opts o;
    struct restore_stats st;
    struct timespec t0, t1;
    struct bar bar;
    bool json = c->json;
    const char *mailbox = c->sel.mailbox;
    const char *dir = c->dir;
    double secs;
    int rc, code;

    memset(&o, 0, sizeof(o));
    memset(&bar, 0, sizeof(bar));
    o.workers = s->cfg.parallelism;
    o.batch_ids = s->cfg.batch;
    o.into_nonempty = c->into_nonempty;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bar.t0 = t0;
    if (!json && isatty(STDERR_FILENO)) {
        o.progress = bar_draw;
        o.progress_ctx = &bar;
    }
    rc = restore_select(s->f, s->kr, &c->sel, dir, &o, &st, err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = secs_between(&t0, &t1);
    if (rc != 0 && st.failure == RESTORE_F_NONE) {
        st.failure = RESTORE_F_OTHER;
    }
    if (json) {
        char hex[65], when[32];
        printf("{\"ok\":%s,\"mailbox\":", rc == 0 ? "true" : "false");
        cfr_json_fput(stdout, mailbox);
        print_selection_json(c);
        printf(",\"target\":");
        cfr_json_fput(stdout, dir);
        printf(",\"vault\":");
        cfr_json_fput(stdout, restore_fetcher_current(s->f));
        {
            /* Replica failover (issue 5): which vaults served, in order. */
            size_t used[RESTORE_FETCH_USED_MAX];
            size_t nu =
                restore_fetcher_vaults_used(s->f, used, RESTORE_FETCH_USED_MAX);
            printf(",\"switches\":%u,\"objects_lacked\":%" PRIu64
                   ",\"damaged_copies\":%" PRIu64
                   ",\"chunks_replaced\":%" PRIu64 ",\"vaults_used\":[",
                   restore_fetcher_switches(s->f), restore_fetcher_lacked(s->f),
                   restore_fetcher_damaged_count(s->f), st.chunks_replaced);
            for (size_t i = 0; i < nu && i < RESTORE_FETCH_USED_MAX; i++) {
                struct restore_vault_info vi;
                (void)restore_fetcher_vault_info(s->f, used[i], &vi);
                printf("%s", i > 0 ? "," : "");
                cfr_json_fput(stdout, vi.target);
            }
            printf("]");
        }
        if (st.have_snap) {
            printf(",\"snapshot\":\"%s\",\"received\":\"%s\"",
                   cfr_hex_encode(st.snap.header_id, 32, hex),
                   restore_iso_time(st.snap.received_ms, when));
        }
        if (st.live_folder[0] != '\0') {
            printf(",\"live_folder\":");
            cfr_json_fput(stdout, st.live_folder);
        }
        if (c->sel.host != NULL) {
            printf(",\"mailboxes\":[");
            for (size_t i = 0; i < st.n_done; i++) {
                const struct restore_done *d = &st.done[i];
                printf("%s{\"mailbox\":", i > 0 ? "," : "");
                cfr_json_fput(stdout, d->mailbox);
                printf(",\"dir\":");
                cfr_json_fput(stdout, d->dir_name);
                printf(",\"snapshot\":\"%s\",\"received\":\"%s\",\"files\":"
                       "%" PRIu64 ",\"bytes\":%" PRIu64 "}",
                       cfr_hex_encode(d->header_id, 32, hex),
                       restore_iso_time(d->received_ms, when), d->files,
                       d->bytes);
            }
            printf("]");
        }
        if (c->sel.n_message_ids > 0) {
            printf(",\"missing\":[");
            for (size_t i = 0, k = 0; i < c->sel.n_message_ids; i++) {
                if (!st.id_found[i]) {
                    printf("%s", k++ > 0 ? "," : "");
                    cfr_json_fput(stdout, c->sel.message_ids[i]);
                }
            }
            printf("]");
        }
        printf(",\"files\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"messages\":%" PRIu64 ",\"chunks\":%" PRIu64
               ",\"folders\":%" PRIu64 ",\"mbox_files\":%" PRIu64
               ",\"mbox_bytes\":%" PRIu64 ",\"seconds\":%.3f,\"error\":",
               st.files, st.bytes, st.messages, st.chunks, st.folders,
               st.mbox_files, st.mbox_bytes, secs);
        if (rc == 0) {
            printf("null");
        } else {
            restore_json_error(stdout, st.failure, err);
        }
        printf("}\n");
    } else if (rc == 0) {
        char hex[65], when[32];
        if (c->sel.host != NULL) {
            printf("restored %zu mailboxes of host %s: %" PRIu64
                   " files (%" PRIu64 " bytes) in %.2f s\n",
                   st.n_done, c->sel.host, st.files, st.bytes, secs);
            for (size_t i = 0; i < st.n_done; i++) {
                printf("  %s: %" PRIu64 " files, snapshot %.16s (received "
                       "%s)\n",
                       st.done[i].dir_name, st.done[i].files,
                       cfr_hex_encode(st.done[i].header_id, 32, hex),
                       restore_iso_time(st.done[i].received_ms, when));
            }
        } else {
            printf("restored %" PRIu64 " files (%" PRIu64 " bytes, %" PRIu64
                   " folders) of snapshot %.16s (received %s) in %.2f s\n",
                   st.files, st.bytes, st.folders,
                   cfr_hex_encode(st.snap.header_id, 32, hex),
                   restore_iso_time(st.snap.received_ms, when), secs);
        }
        if (st.live_folder[0] != '\0') {
            printf("into the new folder %s of %s\n", st.live_folder, dir);
        }
        if (st.mbox_files > 0) {
            printf("as %" PRIu64 " mbox files (%" PRIu64 " bytes)\n",
                   st.mbox_files, st.mbox_bytes);
        }
    }
    code = rc == 0 ? RESTORE_EXIT_OK : restore_exit_for_failure(st.failure);
    restore_stats_fini(&st);
    return code;
}

/* 0, or -1 after printing what is wrong. */
static int
restore_parse(int argc, char **argv, struct restore_cli *c)
{
    const char *fmt = NULL;
    struct cfr_err err;
    memset(c, 0, sizeof(*c));
    c->sel.at_ms = RESTORE_AT_NEWEST;
    c->sel.message_ids = c->ids;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            c->json = true;
        } else if (strcmp(a, "--into-nonempty") == 0) {
            c->into_nonempty = true;
        } else if (strcmp(a, "--into-live") == 0) {
            c->sel.into_live = true;
        } else if (strcmp(a, "--mailbox") == 0 && has) {
            c->sel.mailbox = argv[++i];
        } else if (strcmp(a, "--host") == 0 && has) {
            c->sel.host = argv[++i];
        } else if (strcmp(a, "--to") == 0 && has) {
            c->dir = argv[++i];
        } else if (strcmp(a, "--at") == 0 && has) {
            c->at_text = argv[++i];
        } else if (strcmp(a, "--snapshot") == 0 && has) {
            c->sel.snapshot_hex = argv[++i];
        } else if (strcmp(a, "--folder") == 0 && has) {
            c->sel.folder = argv[++i];
        } else if (strcmp(a, "--format") == 0 && has) {
            fmt = argv[++i];
        } else if (strcmp(a, "--message-id") == 0 && has) {
            if (c->sel.n_message_ids == RESTORE_MSGIDS_MAX) {
                fprintf(stderr,
                        "coffer-restore restore: at most %d --message-id\n",
                        RESTORE_MSGIDS_MAX);
                return -1;
            }
            c->ids[c->sel.n_message_ids++] = argv[++i];
        } else {
            fprintf(stderr,
                    "coffer-restore restore: unknown or incomplete option "
                    "\"%s\"\n",
                    a);
            return -1;
        }
    }
    if ((c->sel.mailbox == NULL) == (c->sel.host == NULL) || c->dir == NULL) {
        fprintf(stderr, "coffer-restore restore: --to and one of --mailbox "
                        "and --host are needed\n");
        return -1;
    }
    if ((c->sel.mailbox != NULL &&
         (c->sel.mailbox[0] == '\0' ||
          strlen(c->sel.mailbox) > CFR_SNAP_MAILBOX_MAX)) ||
        (c->sel.host != NULL &&
         (c->sel.host[0] == '\0' || strlen(c->sel.host) > CFR_SNAP_HOST_MAX))) {
        fprintf(stderr,
                "coffer-restore restore: --mailbox: 1..%d bytes, "
                "--host: 1..%d bytes\n",
                CFR_SNAP_MAILBOX_MAX, CFR_SNAP_HOST_MAX);
        return -1;
    }
    if (c->dir[0] == '\0') {
        fprintf(stderr, "coffer-restore restore: --to: empty path\n");
        return -1;
    }
    if (fmt != NULL && strcmp(fmt, "mbox") == 0) {
        c->sel.format = RESTORE_FORMAT_MBOX;
    } else if (fmt != NULL && strcmp(fmt, "maildir") != 0) {
        fprintf(stderr, "coffer-restore restore: --format maildir or mbox\n");
        return -1;
    }
    cfr_err_clear(&err);
    if (c->at_text != NULL) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (restore_parse_at(c->at_text,
                             (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                             &c->sel.at_ms, &err) != 0) {
            fprintf(stderr, "coffer-restore restore: %s\n", err.msg);
            return -1;
        }
    }
    if (c->at_text != NULL && c->sel.snapshot_hex != NULL) {
        fprintf(stderr, "coffer-restore restore: --at and --snapshot exclude "
                        "each other\n");
        return -1;
    }
    if (c->sel.host != NULL &&
        (c->sel.snapshot_hex != NULL || c->sel.into_live)) {
        fprintf(stderr, "coffer-restore restore: --host takes neither "
                        "--snapshot nor --into-live\n");
        return -1;
    }
    if (c->sel.into_live &&
        (c->sel.format != RESTORE_FORMAT_MAILDIR || c->into_nonempty)) {
        fprintf(stderr, "coffer-restore restore: --into-live writes Maildir "
                        "(no --format mbox, no --into-nonempty)\n");
        return -1;
    }
    if (c->sel.folder != NULL) {
        char norm[256];
        if (restore_folder_normalize(c->sel.folder, norm, sizeof(norm), &err) !=
            0) {
            fprintf(stderr, "coffer-restore restore: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
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
    struct restore_cli c;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    if (restore_parse(argc, argv, &c) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    code = restore_session_open(&s, &err);
    if (code == RESTORE_EXIT_OK) {
        code = restore_run(&s, &c, &err);
        if (code != RESTORE_EXIT_OK) {
            fprintf(stderr, "coffer-restore: %s\n",
                    err.msg[0] != '\0' ? err.msg : "failed");
        }
    } else {
        restore_session_report(code, c.json, &err);
    }
    fflush(stdout);
    restore_session_fini(&s);
    return code;
}

/* ---- dispatch ------------------------------------------------------------ */

static const struct restore_command commands[] = {
    {"snapshots", cmd_snapshots, "  snapshots [--mailbox NAME] [--json]\n"},
    {"restore", cmd_restore,
     "  restore (--mailbox NAME | --host NAME) --to DIR [--at TIME |\n"
     "          --snapshot ID] [--folder F] [--message-id ID ...]\n"
     "          [--format maildir|mbox] [--into-live | --into-nonempty]\n"
     "          [--json]\n"},
    {"verify", restore_cmd_verify, RESTORE_VERIFY_USAGE},
    {"ls", restore_cmd_ls,
     "  ls [--mailbox NAME [--at TIME | --snapshot ID] [--folder F\n"
     "     [--headers]]] [--json]\n"},
    {"find", restore_cmd_find,
     "  find --message-id ID [--mailbox NAME] [--json]\n"},
    {"retention", restore_cmd_retention, RESTORE_MAINT_USAGE},
    {"purge", restore_cmd_purge, ""},
    {"hold", restore_cmd_hold, ""},
    {"release", restore_cmd_release, ""},
    {"approve", restore_cmd_approve, ""},
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
    fprintf(
        f, "\n"
           "The configuration defaults to " RESTORE_CONFIG_DEFAULT ".\n"
           "restore writes a snapshot (the newest, or the newest at or before\n"
           "--at) of the mailbox, or of every mailbox of --host, as a\n"
           "Maildir++ tree (or mbox files) into DIR, which must be empty or\n"
           "absent (--into-nonempty allows other files there; none is ever\n"
           "replaced); --into-live adds it to a live Maildir++ store as a new\n"
           "folder .Restored-YYYY-MM-DD. See docs/RESTORE.md.\n"
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
