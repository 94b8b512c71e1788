/*
 * main.c - coffer-agent: backs up a mail host's mailboxes to the vaults.
 *
 *   coffer-agent init      [--config FILE] [--escrow PATH]
 *                          [--escrow-passphrase-file FILE]
 *   coffer-agent backup    [--config FILE] [--json] [--quiet] [MAILBOX...]
 *   coffer-agent snapshots [--config FILE] [--json] [MAILBOX...]
 *
 * This file parses, runs and maps outcomes to exit codes; the testable
 * parts are in config.c and cli.c, the work in backup.c and uplink.c.
 *
 * Invariants:
 *  1. Exit codes are fixed (cli.h, docs/AGENT.md, the usage text). Usage,
 *     configuration and lock problems are found before any key is loaded
 *     or any vault contacted.
 *  2. The host holds only the agent view of the keyring: init writes the
 *     full keyring nowhere but the escrow file, and backup refuses a key
 *     file that can open data (someone copied the escrow file here).
 *  3. Nothing secret is printed or logged: passphrases live in guarded
 *     memory (cli.c), the summary names files, never their contents.
 *  4. One instance at a time: backup takes the lock before it opens the
 *     state (RocksDB would refuse a second opener anyway, but with an
 *     error that looks like damage rather than "already running").
 *  5. Memory does not grow with the number of mailboxes: a pattern is
 *     expanded as it is backed up, and the summary is streamed (cli.h).
 */
#include <errno.h>
#include <fcntl.h>    /* open /dev/tty */
#include <inttypes.h> /* PRIu64 */
#include <signal.h>   /* SIGPIPE */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h> /* qsort */
#include <string.h>
#include <sys/ioctl.h> /* TIOCGWINSZ: progress line width */
#include <sys/stat.h>
#include <termios.h> /* no echo for passphrase prompts */
#include <time.h>
#include <unistd.h>

#include "backup.h"            /* agent_backup_mailbox */
#include "buf.h"               /* cfr_buf, hex */
#include "cfg.h"               /* cfr_cfg_read_file: PEM files */
#include "cli.h"               /* exit codes, lock, summary */
#include "coffer_vault.pb-c.h" /* ListSnapshots */
#include "config.h"            /* agent_config_load */
#include "env.h"               /* sealing sessions */
#include "json.h"              /* cfr_json_fput */
#include "keys.h"              /* keyrings and key files */
#include "kv.h"                /* the state's RocksDB environment */
#include "log.h"               /* cfr_log */
#include "mailbox.h"           /* pattern expansion */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* the client */
#include "secret.h"            /* passphrases */
#include "state.h"             /* the file cache */
#include "uplink.h"            /* vaults and quorum */

#ifndef AGENT_VERSION
#define AGENT_VERSION "0.1.0"
#endif

#define ESCROW_PASS_MIN   12
#define SNAPSHOTS_MAX     100000 /* per mailbox, merged over the vaults */
#define PROGRESS_EVERY_MS 250
#define LIST_RESPONSE_MAX ((size_t)64 << 20)

static const char usage_text[] =
    "NAME\n"
    "    coffer-agent - back up a mail host's mailboxes to Coffer vaults\n"
    "\n"
    "SYNOPSIS\n"
    "    coffer-agent init [--config FILE] [--escrow PATH]\n"
    "                 [--escrow-passphrase-file FILE]\n"
    "    coffer-agent backup [--config FILE] [--json] [--quiet] "
    "[MAILBOX...]\n"
    "    coffer-agent snapshots [--config FILE] [--json] [MAILBOX...]\n"
    "    coffer-agent --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    The agent reads Maildir and mbox stores, cuts them into chunks,\n"
    "    seals the chunks the vaults lack and sends the same bytes to every\n"
    "    configured vault, then commits one snapshot per mailbox. It holds\n"
    "    a write-only view of the tenant's keys: it can add backups, never\n"
    "    read them back. FILE defaults to " AGENT_CONFIG_DEFAULT_PATH ".\n"
    "\n"
    "COMMANDS\n"
    "    init\n"
    "        Generates the tenant keyring. Writes the full keyring, under\n"
    "        an escrow passphrase (asked twice on the terminal, or read\n"
    "        from --escrow-passphrase-file), to --escrow PATH (default\n"
    "        key_file.escrow), and only the agent's write-only view to\n"
    "        key_file, under the passphrase in passphrase_file (generated\n"
    "        there, mode 0600, when the file does not exist). Refuses to\n"
    "        overwrite either key file. Move the escrow file off the host:\n"
    "        the restore side needs it, and this host must not keep it.\n"
    "\n"
    "    backup [MAILBOX...]\n"
    "        Backs up every configured mailbox, or the ones named. One\n"
    "        instance at a time (lock_file). A progress line on stderr when\n"
    "        stderr is a terminal; a summary on stdout (--json: one JSON\n"
    "        document instead; --quiet: nothing unless something is\n"
    "        wrong, then on stderr).\n"
    "\n"
    "    snapshots [MAILBOX...]\n"
    "        Lists each mailbox's snapshots on every vault: time (the\n"
    "        vault's), snapshot ID, flags, held, and which vaults have it.\n"
    "        Snapshot headers are sealed for the restore side: this host\n"
    "        can list them but cannot open them.\n"
    "\n"
    "EXIT STATUS\n"
    "    0  ok\n"
    "    1  failed: some mailbox got no snapshot (or nothing could run)\n"
    "    2  bad command line\n"
    "    3  configuration, key, passphrase or TLS file problem\n"
    "    4  another coffer-agent holds the lock\n"
    "    5  partial: the quorum committed, some vault lagged or was down\n"
    "    6  committed, but some files could not be read\n"
    "    7  mass deletion: committed and marked, previous snapshot held\n"
    "    Several at once: 1 > 7 > 6 > 5 > 0. See docs/AGENT.md.\n";

static void
usage(FILE *f)
{
    fputs(usage_text, f);
}

static int64_t
now_ms(int clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
complain(const struct cfr_err *err)
{
    fprintf(stderr, "coffer-agent: %s\n", err->msg);
}

/* The PEM files every vault connection uses. */
struct tls_files {
    char *ca, *cert, *key;
};

static int
tls_load(const struct agent_config *cfg, struct tls_files *t,
         struct cfr_err *err)
{
    memset(t, 0, sizeof(*t));
    if ((t->ca = cfr_cfg_read_file(cfg->tls_ca, "tls.ca", err)) == NULL ||
        (t->cert = cfr_cfg_read_file(cfg->tls_cert, "tls.cert", err)) == NULL ||
        (t->key = cfr_cfg_read_file(cfg->tls_key, "tls.key", err)) == NULL) {
        return CFR_ECONFIG;
    }
    return 0;
}

static void
tls_free(struct tls_files *t)
{
    cfr_cfg_free_file(t->ca);
    cfr_cfg_free_file(t->cert);
    cfr_cfg_free_file(t->key);
    memset(t, 0, sizeof(*t));
}

/* Loads the agent's key view; refuses a keyring that can open data. */
static struct cfr_keyring *
key_load(const struct agent_config *cfg, struct cfr_err *err)
{
    struct cfr_secret *pass = NULL;
    size_t plen = 0;
    struct cfr_keyring *kr = NULL;

    if (agent_cli_pass_read(cfg->passphrase_file, "passphrase_file", &pass,
                            &plen, err) != 0) {
        return NULL;
    }
    kr = cfr_keyring_load(cfg->key_file, (const char *)cfr_secret_ro(pass),
                          plen, err);
    cfr_secret_free(pass);
    if (kr == NULL) {
        char why[CFR_ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err->msg);
        CFR_ERR(err, CFR_ECONFIG, "key_file %s: %s", cfg->key_file, why);
        return NULL;
    }
    if (cfr_keyring_can_open(kr)) {
        cfr_keyring_free(kr);
        CFR_ERR(err, CFR_ECONFIG,
                "key_file %s holds the FULL keyring (the escrow copy?): a "
                "mail host must hold only the agent view; move it off this "
                "host and run init on a clean key_file",
                cfg->key_file);
        return NULL;
    }
    return kr;
}

static int
set_log_level(const struct agent_config *cfg)
{
    enum cfr_log_level level;
    if (cfr_log_level_parse(cfg->log_level, &level) != 0) {
        return -1;
    }
    cfr_log_set_level(level);
    return 0;
}

/* Common options: --config FILE, --json, --quiet, --escrow..., names. */
struct args {
    const char *config;
    const char *escrow;
    const char *escrow_pass_file;
    bool json, quiet;
    const char **names;
    size_t n_names;
};

static int
parse_args(int argc, char **argv, const char *cmd, bool allow_names,
           bool allow_json, bool allow_escrow, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->config = AGENT_CONFIG_DEFAULT_PATH;
    a->names = cfr_calloc((size_t)argc + 1, sizeof(*a->names));
    if (a->names == NULL) {
        fprintf(stderr, "coffer-agent: out of memory\n");
        return AGENT_EXIT_FAILED;
    }
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--config") == 0 && i + 1 < argc) {
            a->config = argv[++i];
        } else if (allow_json && strcmp(o, "--json") == 0) {
            a->json = true;
        } else if (allow_json && allow_names &&
                   (strcmp(o, "--quiet") == 0 || strcmp(o, "-q") == 0) &&
                   strcmp(cmd, "backup") == 0) {
            a->quiet = true;
        } else if (allow_escrow && strcmp(o, "--escrow") == 0 && i + 1 < argc) {
            a->escrow = argv[++i];
        } else if (allow_escrow && strcmp(o, "--escrow-passphrase-file") == 0 &&
                   i + 1 < argc) {
            a->escrow_pass_file = argv[++i];
        } else if (strcmp(o, "--") == 0 && allow_names) {
            for (i++; i < argc; i++) {
                a->names[a->n_names++] = argv[i];
            }
        } else if (o[0] == '-' || !allow_names) {
            fprintf(stderr,
                    "coffer-agent %s: unknown or incomplete option: %s\n"
                    "(coffer-agent --help lists the options)\n",
                    cmd, o);
            return AGENT_EXIT_USAGE;
        } else {
            a->names[a->n_names++] = o;
        }
    }
    for (size_t i = 0; i < a->n_names; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(a->names[i], a->names[j]) == 0) {
                fprintf(stderr, "coffer-agent %s: mailbox %s named twice\n",
                        cmd, a->names[i]);
                return AGENT_EXIT_USAGE;
            }
        }
    }
    return 0;
}

static void
args_fini(struct args *a)
{
    cfr_free(a->names);
    a->names = NULL;
}

/* ---- init ----------------------------------------------------------------
 */

/* Reads one line from the terminal without echo into s (a secret). */
static int
prompt_line(int tty, const char *prompt, uint8_t *s, size_t cap, size_t *len_r)
{
    struct termios old, noecho;
    size_t n = 0, seen = 0;
    bool too_long = false;
    int rc = 0;

    if (tcgetattr(tty, &old) != 0) {
        return -1;
    }
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    noecho.c_lflag |= ICANON;
    /* Echo off before the prompt: what is typed after it is never shown
     * (and input typed ahead of it is flushed, not taken). */
    if (tcsetattr(tty, TCSAFLUSH, &noecho) != 0) {
        return -1;
    }
    if (write(tty, prompt, strlen(prompt)) < 0) {
        tcsetattr(tty, TCSAFLUSH, &old);
        return -1;
    }
    /* Bounded: a terminal that never sends a newline ends the prompt. */
    while (seen++ < 64 * cap) {
        char c;
        ssize_t r = read(tty, &c, 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0 || c == '\n') {
            rc = r < 0 ? -1 : 0;
            break;
        }
        if (n + 1 >= cap) {
            too_long = true; /* refuse rather than cut a passphrase */
            continue;
        }
        s[n++] = (uint8_t)c;
    }
    tcsetattr(tty, TCSAFLUSH, &old);
    if (write(tty, "\n", 1) < 0 || too_long || seen > 64 * cap) {
        rc = -1;
    }
    *len_r = n;
    return rc;
}

/* The escrow passphrase from a file or, twice, from the terminal. */
static int
escrow_pass(const struct args *a, struct cfr_secret **pass_r, size_t *len_r,
            struct cfr_err *err)
{
    struct cfr_secret *one = NULL, *two = NULL;
    size_t l1 = 0, l2 = 0;
    int tty = -1, code = 0;

    if (a->escrow_pass_file != NULL) {
        if (agent_cli_pass_read(a->escrow_pass_file, "--escrow-passphrase-file",
                                pass_r, len_r, err) != 0) {
            return AGENT_EXIT_CONFIG;
        }
        goto check;
    }
    tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (tty < 0 || !isatty(tty)) {
        CFR_ERR(err, CFR_EINVAL,
                "no terminal to ask the escrow passphrase on: give "
                "--escrow-passphrase-file FILE (mode 0600)");
        code = AGENT_EXIT_USAGE;
        goto out;
    }
    if ((one = cfr_secret_new(AGENT_CLI_PASS_MAX + 1, err)) == NULL ||
        (two = cfr_secret_new(AGENT_CLI_PASS_MAX + 1, err)) == NULL) {
        code = AGENT_EXIT_FAILED;
        goto out;
    }
    if (prompt_line(tty, "Escrow passphrase: ", cfr_secret_rw(one),
                    AGENT_CLI_PASS_MAX + 1, &l1) != 0 ||
        prompt_line(tty, "Again: ", cfr_secret_rw(two), AGENT_CLI_PASS_MAX + 1,
                    &l2) != 0) {
        CFR_ERR(err, CFR_EINVAL,
                "could not read the passphrase (or longer "
                "than 1024 bytes)");
        code = AGENT_EXIT_USAGE;
        goto out;
    }
    if (l1 != l2 || !cfr_ct_equal(cfr_secret_ro(one), cfr_secret_ro(two), l1)) {
        CFR_ERR(err, CFR_EINVAL, "the two passphrases differ; nothing written");
        code = AGENT_EXIT_USAGE;
        goto out;
    }
    *pass_r = one;
    *len_r = l1;
    one = NULL;
check:
    if (*len_r < ESCROW_PASS_MIN) {
        CFR_ERR(err, CFR_EINVAL,
                "the escrow passphrase guards every backup of the tenant: "
                "use at least %d characters",
                ESCROW_PASS_MIN);
        cfr_secret_free(*pass_r);
        *pass_r = NULL;
        code =
            a->escrow_pass_file != NULL ? AGENT_EXIT_CONFIG : AGENT_EXIT_USAGE;
    }
out:
    if (tty >= 0) {
        close(tty);
    }
    cfr_secret_free(one);
    cfr_secret_free(two);
    return code;
}

static bool
exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 || errno != ENOENT;
}

static int
cmd_init(int argc, char **argv)
{
    struct args a;
    struct agent_config cfg;
    struct cfr_err err;
    struct cfr_secret *epass = NULL, *apass = NULL;
    size_t elen = 0, alen = 0;
    struct cfr_keyring *full = NULL, *view = NULL;
    char escrow_buf[AGENT_CONFIG_PATH_MAX + 16];
    const char *escrow;
    bool pass_generated = false, escrow_written = false;
    char tid[2 * CFR_TENANT_ID_LEN + 1];
    int code;

    memset(&cfg, 0, sizeof(cfg));
    cfr_err_clear(&err);
    if ((code = parse_args(argc, argv, "init", false, false, true, &a)) != 0) {
        goto out;
    }
    if (agent_config_load(a.config, &cfg, &err) != 0) {
        code = AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if (a.escrow != NULL) {
        escrow = a.escrow;
    } else {
        snprintf(escrow_buf, sizeof(escrow_buf), "%s.escrow", cfg.key_file);
        escrow = escrow_buf;
    }
    if (strcmp(escrow, cfg.key_file) == 0 ||
        strcmp(escrow, cfg.passphrase_file) == 0) {
        fprintf(stderr, "coffer-agent init: --escrow must be a file of its "
                        "own\n");
        code = AGENT_EXIT_USAGE;
        goto out;
    }
    if (exists(cfg.key_file) || exists(escrow)) {
        fprintf(stderr,
                "coffer-agent init: %s already exists; refusing to "
                "overwrite a key file (a tenant keeps its keys: new ones "
                "could not open the old backups)\n",
                exists(cfg.key_file) ? cfg.key_file : escrow);
        code = AGENT_EXIT_FAILED;
        goto out;
    }
    if ((code = escrow_pass(&a, &epass, &elen, &err)) != 0) {
        complain(&err);
        goto out;
    }
    /* The agent's own passphrase: the operator's, or a new random one. */
    if (agent_cli_pass_read(cfg.passphrase_file, "passphrase_file", &apass,
                            &alen, &err) != 0) {
        if (err.code != CFR_ENOTFOUND) {
            code = AGENT_EXIT_CONFIG;
            complain(&err);
            goto out;
        }
        cfr_err_clear(&err);
        if (agent_cli_pass_generate(cfg.passphrase_file, &apass, &alen, &err) !=
            0) {
            code = AGENT_EXIT_FAILED;
            complain(&err);
            goto out;
        }
        pass_generated = true;
    }
    if (alen == elen &&
        cfr_ct_equal(cfr_secret_ro(apass), cfr_secret_ro(epass), alen)) {
        fprintf(stderr, "coffer-agent init: the escrow passphrase must differ "
                        "from passphrase_file's: this host keeps that one\n");
        code = AGENT_EXIT_USAGE;
        goto out;
    }
    if ((full = cfr_keyring_generate(now_ms(CLOCK_REALTIME), &err)) == NULL ||
        (view = cfr_keyring_agent_view(full, &err)) == NULL) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    if (cfr_keyring_export(full, escrow, (const char *)cfr_secret_ro(epass),
                           elen, NULL, &err) != 0) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    escrow_written = true;
    /*
     * A generated passphrase has 256 bits: no KDF cost adds to that, and
     * every backup pays the cost in memory (64 MiB by default, the agent's
     * whole bound; see agent/backup.h). An operator's own passphrase keeps
     * the default cost.
     */
    struct cfr_kdf_params cheap = {CFR_KDF_OPS_MIN, CFR_KDF_MEM_MIN};
    if (cfr_keyring_save(view, cfg.key_file, (const char *)cfr_secret_ro(apass),
                         alen, pass_generated ? &cheap : NULL, &err) != 0) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    escrow_written = false; /* keep it: the init succeeded */
    cfr_hex_encode(cfr_keyring_tenant_id(full), CFR_TENANT_ID_LEN, tid);
    printf(
        "coffer-agent init: tenant %s (tenant ID %s)\n"
        "  wrote %s\n"
        "        the agent's write-only view (chunk-ID, name and gear keys,\n"
        "        public keys): it can back up, never read a backup back\n"
        "  %s %s\n"
        "        the passphrase of the key file, for unattended runs "
        "(0600)\n"
        "  wrote %s\n"
        "        the FULL keyring under your escrow passphrase: the only\n"
        "        copy that can open the backups\n"
        "\n"
        "MOVE THE ESCROW FILE OFF THIS HOST NOW:\n"
        "  %s\n"
        "Install it on the restore host, keep a copy in a safe place, then\n"
        "delete it here. A mail host that keeps it lets whoever takes the\n"
        "host read every backup.\n",
        cfg.tenant, tid, cfg.key_file, pass_generated ? "wrote" : "kept ",
        cfg.passphrase_file, escrow, escrow);
    code = AGENT_EXIT_OK;
out:
    if (escrow_written) {
        unlink(escrow); /* a half init leaves no orphan keyring behind */
    }
    cfr_keyring_free(view);
    cfr_keyring_free(full);
    cfr_secret_free(epass);
    cfr_secret_free(apass);
    agent_config_fini(&cfg);
    args_fini(&a);
    return code;
}

/* ---- backup --------------------------------------------------------------
 */

/* Counts what goes through the sink, for the progress line. */
struct progress_sink {
    struct agent_backup_sink inner;
    struct agent_cli_progress p;
    bool show;
    int64_t started, last_draw;
    size_t width;
};

static void
progress_draw(struct progress_sink *ps, bool force)
{
    char line[512];
    int64_t now = now_ms(CLOCK_MONOTONIC);
    if (!ps->show || (!force && now - ps->last_draw < PROGRESS_EVERY_MS)) {
        return;
    }
    ps->last_draw = now;
    ps->p.elapsed_ms = now - ps->started;
    agent_cli_progress_line(&ps->p, ps->width, line, sizeof(line));
    /* \r and clear-to-end: one line, redrawn in place. */
    fprintf(stderr, "\r%s\x1b[K", line);
    fflush(stderr);
}

static void
progress_clear(struct progress_sink *ps)
{
    if (ps->show) {
        fputs("\r\x1b[K", stderr);
        fflush(stderr);
    }
}

/*
 * While the progress line is shown, a log line first clears it, so the two
 * never share a line; the next redraw puts the progress back. One write
 * per line, as core/log.c does, since workers log too.
 */
static void
progress_log_sink(void *ctx, enum cfr_log_level level, const char *line,
                  size_t len)
{
    char buf[4096];
    size_t n = 0;
    (void)ctx;
    (void)level;
    memcpy(buf, "\r\x1b[K", 4);
    n = 4;
    if (len > sizeof(buf) - n - 1) {
        len = sizeof(buf) - n - 1;
    }
    memcpy(buf + n, line, len);
    n += len;
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        return; /* nowhere left to say it */
    }
}

static int
ps_missing(void *ctx, const uint8_t *ids, size_t n, uint8_t *lack_r,
           struct cfr_err *err)
{
    struct progress_sink *ps = ctx;
    int rc = ps->inner.missing(ps->inner.ctx, ids, n, lack_r, err);
    ps->p.ids_checked += n;
    progress_draw(ps, false);
    return rc;
}

static int
ps_put(void *ctx, const uint8_t *id, int kind, const uint8_t *data, size_t len,
       uint8_t mask, struct cfr_err *err)
{
    struct progress_sink *ps = ctx;
    int rc = ps->inner.put(ps->inner.ctx, id, kind, data, len, mask, err);
    ps->p.objects_sent++;
    ps->p.bytes_sent += len;
    progress_draw(ps, false);
    return rc;
}

static int
ps_flush(void *ctx, struct cfr_err *err)
{
    struct progress_sink *ps = ctx;
    return ps->inner.flush(ps->inner.ctx, err);
}

static int
ps_commit(void *ctx, const struct agent_uplink_commit *c, struct cfr_err *err)
{
    struct progress_sink *ps = ctx;
    return ps->inner.commit(ps->inner.ctx, c, err);
}

/* One backup run over every selected mailbox. */
struct run {
    const struct agent_config *cfg;
    const struct args *a;
    bool *named_seen; /* per a->names: met during the run */
    struct cfr_keyring *kr;
    struct cfr_session *sess;
    struct agent_state *st;
    struct agent_uplink *up;
    struct progress_sink ps;
    struct agent_backup_opts opts;
    struct agent_cli_run info;
    struct agent_cli_totals totals;
    size_t index, total;
    bool lost;         /* the quorum is gone: the rest is skipped */
    bool from_pattern; /* expanding mailbox_pattern now */
    bool first_json;
    char lost_why[CFR_ERR_MSG_MAX];
    struct agent_backup_stats stats; /* the current mailbox's */
};

static bool
mass_rule(void *ctx, uint64_t entries, uint64_t deleted)
{
    const struct agent_config *cfg = ctx;
    return agent_cli_mass_deletion(deleted, entries, cfg->mass_deletion_percent,
                                   cfg->mass_deletion_min);
}

/* Whether name is selected (all when no names were given). */
static bool
selected(struct run *r, const char *name)
{
    if (r->a->n_names == 0) {
        return true;
    }
    for (size_t i = 0; i < r->a->n_names; i++) {
        if (strcmp(r->a->names[i], name) == 0) {
            r->named_seen[i] = true;
            return true;
        }
    }
    return false;
}

static void
report_mailbox(struct run *r, const struct agent_cli_mailbox *m)
{
    const struct agent_backup_stats *s = m->stats;
    bool notable = m->rc != 0 || m->skipped ||
                   (s != NULL && (s->mass_deletion || s->file_errors > 0 ||
                                  s->scan_errors > 0));
    agent_cli_totals_add(&r->totals, m);
    if (r->a->json) {
        agent_cli_json_mailbox(stdout, m, r->first_json);
        r->first_json = false;
    } else if (!r->a->quiet) {
        agent_cli_text_mailbox(stdout, m, &r->info);
    } else if (notable) {
        agent_cli_text_mailbox(stderr, m, &r->info);
    }
    if (m->rc != 0 && !m->skipped) {
        char q[CFR_ERR_MSG_MAX + 8], nq[128];
        cfr_log(CFR_LOG_ERROR, "agent.backup_failed", "mailbox=%s why=%s",
                cfr_log_quote(m->name, nq, sizeof(nq)),
                cfr_log_quote(m->error, q, sizeof(q)));
    }
}

/* agent_mailbox_fn: backs up one mailbox. */
static int
backup_one(void *ctx, const char *name, const char *root)
{
    struct run *r = ctx;
    struct agent_cli_mailbox m;
    struct cfr_err err;
    struct agent_backup_sink sink;
    int64_t t0;

    if (!selected(r, name)) {
        return 0;
    }
    /* A pattern may yield a name the list already backed up. */
    if (r->from_pattern && agent_config_lists(r->cfg, name)) {
        return 0;
    }
    r->index++;
    memset(&m, 0, sizeof(m));
    m.name = name;
    if (r->lost) {
        m.skipped = true;
        m.rc = CFR_EUNAVAIL;
        m.error = r->lost_why;
        report_mailbox(r, &m);
        return 0;
    }
    cfr_err_clear(&err);
    r->ps.p.index = r->index;
    r->ps.p.total = r->total;
    r->ps.p.mailbox = name;
    r->ps.p.ids_checked = r->ps.p.objects_sent = r->ps.p.bytes_sent = 0;
    r->ps.started = t0 = now_ms(CLOCK_MONOTONIC);
    r->ps.last_draw = 0;
    progress_draw(&r->ps, true);
    sink.missing = ps_missing;
    sink.put = ps_put;
    sink.flush = ps_flush;
    sink.commit = ps_commit;
    sink.ctx = &r->ps;
    m.rc = agent_backup_mailbox(name, root, r->kr, r->sess, r->st, &sink,
                                &r->opts, &r->stats, &err);
    progress_clear(&r->ps);
    m.elapsed_ms = now_ms(CLOCK_MONOTONIC) - t0;
    m.stats = &r->stats;
    m.error = err.msg;
    if (m.rc == CFR_EUNAVAIL) {
        /* The uplink has lost its quorum for good; say so once per
         * mailbox left rather than failing each after a timeout. */
        r->lost = true;
        snprintf(r->lost_why, sizeof(r->lost_why),
                 "not tried: the write quorum was lost during %s", name);
    }
    report_mailbox(r, &m);
    return 0;
}

/* agent_mailbox_fn for the pre-pass that checks named mailboxes exist. */
static int
mark_named(void *ctx, const char *name, const char *root)
{
    struct run *r = ctx;
    (void)selected(r, name);
    return 0;
}

static int
each_mailbox(struct run *r, agent_mailbox_fn *fn, struct cfr_err *err)
{
    const struct agent_config *cfg = r->cfg;
    int rc;
    for (size_t i = 0; i < cfg->n_mailboxes; i++) {
        if ((rc = fn(r, cfg->mailboxes[i].name, cfg->mailboxes[i].root)) != 0) {
            return rc;
        }
    }
    if (cfg->mailbox_pattern != NULL) {
        struct agent_mailbox_stats ms;
        size_t saved = r->total;
        r->total = 0; /* unknown from here on */
        r->from_pattern = true;
        rc = agent_mailbox_expand(cfg->mailbox_pattern, fn, r, &ms, err);
        r->from_pattern = false;
        r->total = saved;
        if (rc != 0) {
            return rc;
        }
        if (ms.errors > 0) {
            cfr_log(CFR_LOG_WARN, "agent.mailbox_pattern",
                    "unreadable_dirs=%" PRIu64 " (see earlier lines)",
                    ms.errors);
        }
    }
    return 0;
}

static int
open_uplink(struct run *r, const struct tls_files *tls, struct cfr_err *err)
{
    const struct agent_config *cfg = r->cfg;
    struct agent_uplink_vault_opts vo[AGENT_UPLINK_VAULTS_MAX];
    struct agent_uplink_opts uo;

    memset(vo, 0, sizeof(vo));
    memset(&uo, 0, sizeof(uo));
    for (size_t i = 0; i < cfg->n_vaults; i++) {
        vo[i].name = cfg->vaults[i].name;
        vo[i].target = cfg->vaults[i].address;
        vo[i].target_name = cfg->vaults[i].tls_name;
        vo[i].ca_pem = tls->ca;
        vo[i].cert_pem = tls->cert;
        vo[i].key_pem = tls->key;
        vo[i].region = cfg->vaults[i].region;
    }
    uo.vaults = vo;
    uo.n_vaults = cfg->n_vaults;
    uo.quorum = cfg->quorum;
    uo.span_regions = !cfg->allow_single_region;
    memcpy(uo.session_public, cfr_session_public(r->sess),
           AGENT_UPLINK_SESSION_LEN);
    uo.lease_ttl_ms = (uint64_t)cfg->lease_ttl_ms;
    uo.call_timeout_ms = cfg->call_timeout_ms;
    uo.stream_timeout_ms = cfg->stream_timeout_ms;
    uo.stall_ms = cfg->stall_ms;
    return agent_uplink_open(&uo, &r->up, err);
}

static int
cmd_backup(int argc, char **argv)
{
    struct args a;
    struct agent_config cfg;
    struct cfr_err err;
    struct tls_files tls;
    struct cfr_kv_env *kv = NULL;
    struct agent_uplink_report reports[AGENT_UPLINK_VAULTS_MAX];
    size_t n_reports = 0;
    struct run *r = NULL;
    char host[256];
    int lock_fd = -1, code, rc;
    long holder = 0;
    int64_t t0 = now_ms(CLOCK_MONOTONIC);

    memset(&cfg, 0, sizeof(cfg));
    memset(&tls, 0, sizeof(tls));
    memset(reports, 0, sizeof(reports));
    cfr_err_clear(&err);
    if ((code = parse_args(argc, argv, "backup", true, true, false, &a)) != 0) {
        goto out;
    }
    if (agent_config_load(a.config, &cfg, &err) != 0) {
        code = AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if (set_log_level(&cfg) != 0) {
        code = AGENT_EXIT_CONFIG;
        goto out;
    }
    if (isatty(STDERR_FILENO) == 1) {
        /* Before any thread exists (log.h). */
        cfr_log_set_sink(progress_log_sink, NULL);
    }
    if ((rc = agent_cli_lock(cfg.lock_file, &lock_fd, &holder, &err)) != 0) {
        code = rc == CFR_EEXIST ? AGENT_EXIT_LOCKED : AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if ((r = cfr_calloc(1, sizeof(*r))) == NULL ||
        (r->named_seen = cfr_calloc(a.n_names + 1, sizeof(bool))) == NULL) {
        code = AGENT_EXIT_FAILED;
        fprintf(stderr, "coffer-agent: out of memory\n");
        goto out;
    }
    r->cfg = &cfg;
    r->a = &a;
    r->first_json = true;
    r->total = cfg.n_mailboxes;
    /* Named mailboxes must exist before anything is backed up. */
    if (a.n_names > 0) {
        if (each_mailbox(r, mark_named, &err) != 0) {
            code = AGENT_EXIT_FAILED;
            complain(&err);
            goto out;
        }
        for (size_t i = 0; i < a.n_names; i++) {
            if (!r->named_seen[i]) {
                fprintf(stderr,
                        "coffer-agent backup: mailbox %s is not configured "
                        "(neither listed nor found by mailbox_pattern)\n",
                        a.names[i]);
                code = AGENT_EXIT_USAGE;
                goto out;
            }
        }
        r->total = 0;
        for (size_t i = 0; i < cfg.n_mailboxes; i++) {
            r->total += selected(r, cfg.mailboxes[i].name) ? 1 : 0;
        }
    }
    if ((r->kr = key_load(&cfg, &err)) == NULL ||
        tls_load(&cfg, &tls, &err) != 0) {
        code = AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if (cfr_rpc_global_init(&err) != 0 ||
        (kv = cfr_kv_env_new((size_t)cfg.state_cache_bytes, &err)) == NULL) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    if ((rc = agent_state_open(kv, cfg.state_dir, &r->st, &err)) != 0) {
        code = rc == CFR_EINVAL ? AGENT_EXIT_CONFIG : AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    if ((r->sess = cfr_session_new(r->kr, 0, &err)) == NULL) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    if (cfg.host != NULL) {
        snprintf(host, sizeof(host), "%s", cfg.host);
    } else if (gethostname(host, sizeof(host) - 1) != 0) {
        snprintf(host, sizeof(host), "unknown");
    }
    host[sizeof(host) - 1] = '\0';
    r->info.tenant = cfg.tenant;
    r->info.host = host;
    r->info.started_ms = now_ms(CLOCK_REALTIME);
    r->info.quorum = agent_uplink_quorum(cfg.quorum, cfg.n_vaults);
    r->info.mass_deletion_percent = cfg.mass_deletion_percent;
    r->opts.workers = cfg.workers;
    r->opts.cpu_nice = cfg.cpu_nice;
    r->opts.io_class = cfg.io_class;
    r->opts.io_level = cfg.io_level;
    r->opts.host = host;
    r->opts.tmp_dir = cfg.tmp_dir;
    r->opts.mass_deletion = mass_rule;
    r->opts.mass_ctx = &cfg;
    r->ps.show = isatty(STDERR_FILENO) == 1;
    r->ps.width = 80;
    if (r->ps.show) {
        struct winsize ws;
        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) {
            r->ps.width = ws.ws_col;
        }
    }
    if (a.json) {
        agent_cli_json_begin(stdout, &r->info);
    } else if (!a.quiet) {
        printf("coffer-agent backup: tenant %s, host %s\n", cfg.tenant, host);
    }
    rc = open_uplink(r, &tls, &err);
    if (rc != 0) {
        r->totals.uplink_failed = true;
        r->lost = true;
        snprintf(r->lost_why, sizeof(r->lost_why),
                 "not tried: fewer than the quorum of vaults answered (%.180s)",
                 err.msg);
        complain(&err);
    } else {
        struct agent_backup_sink inner;
        agent_backup_sink_uplink(r->up, &inner);
        r->ps.inner = inner;
    }
    if (each_mailbox(r, backup_one, &err) != 0) {
        /* The pattern's top directory is gone: every mailbox under it. */
        r->totals.failed++;
        complain(&err);
    } else if (r->index == 0) {
        /*
         * An hourly job that silently backs up nothing is the worst
         * outcome: a pattern that matches no mailbox is a failure.
         */
        r->totals.failed++;
        fprintf(stderr,
                "coffer-agent: no mailbox found: mailbox_pattern %s "
                "matched nothing and no mailbox is listed\n",
                cfg.mailbox_pattern != NULL ? cfg.mailbox_pattern : "-");
    }
    if (r->up != NULL) {
        n_reports = agent_uplink_count(r->up);
        for (size_t i = 0; i < n_reports; i++) {
            agent_uplink_report(r->up, i, &reports[i]);
        }
    }
    agent_cli_totals_vaults(&r->totals, reports, n_reports);
    code = agent_cli_exit_code(&r->totals);
    if (a.json) {
        agent_cli_json_end(stdout, &r->info, reports, n_reports, &r->totals,
                           now_ms(CLOCK_MONOTONIC) - t0);
    } else if (!a.quiet) {
        agent_cli_text_end(stdout, &r->info, reports, n_reports, &r->totals,
                           now_ms(CLOCK_MONOTONIC) - t0);
    } else if (code != AGENT_EXIT_OK) {
        agent_cli_text_end(stderr, &r->info, reports, n_reports, &r->totals,
                           now_ms(CLOCK_MONOTONIC) - t0);
    }
    cfr_log(code == AGENT_EXIT_OK ? CFR_LOG_INFO : CFR_LOG_WARN, "agent.run",
            "result=%s mailboxes=%" PRIu64 " committed=%" PRIu64
            " failed=%" PRIu64 " vaults_ok=%" PRIu64 "/%" PRIu64,
            agent_cli_exit_name(code), r->totals.mailboxes, r->totals.committed,
            r->totals.failed, r->totals.vaults_ok, r->totals.vaults);
out:
    fflush(stdout);
    if (r != NULL) {
        agent_uplink_free(r->up);
        cfr_session_free(r->sess);
        agent_state_close(r->st);
        cfr_keyring_free(r->kr);
        cfr_free(r->named_seen);
        cfr_free(r);
    }
    cfr_kv_env_free(kv);
    tls_free(&tls);
    agent_cli_unlock(lock_fd);
    agent_config_fini(&cfg);
    args_fini(&a);
    return code;
}

/* ---- snapshots -----------------------------------------------------------
 */

struct snap_row {
    uint8_t header_id[32];
    int64_t received_ms;
    uint32_t flags;
    bool held;
    uint8_t on; /* bit v: vault v lists it */
};

struct list_ctx {
    const struct agent_config *cfg;
    const struct args *a;
    struct cfr_keyring *kr;
    struct cfr_rpc_client *cli[AGENT_UPLINK_VAULTS_MAX];
    bool failed[AGENT_UPLINK_VAULTS_MAX];
    char why[AGENT_UPLINK_VAULTS_MAX][CFR_ERR_MSG_MAX];
    struct snap_row *rows;
    size_t n_rows;
    bool first_json;
    bool *named_seen;
};

static int
row_cmp(const void *x, const void *y)
{
    const struct snap_row *a = x, *b = y;
    if (a->received_ms != b->received_ms) {
        return a->received_ms < b->received_ms ? -1 : 1;
    }
    return memcmp(a->header_id, b->header_id, 32);
}

/* Adds vault v's records of one mailbox to the rows. */
static void
merge_rows(struct list_ctx *l, size_t v,
           const Coffer__V1__ListSnapshotsResponse *resp)
{
    for (size_t i = 0; i < resp->n_snapshots; i++) {
        const Coffer__V1__SnapshotRecord *s = resp->snapshots[i];
        struct snap_row *row = NULL;
        if (s->header_id.len != 32) {
            continue;
        }
        for (size_t j = 0; j < l->n_rows; j++) {
            if (memcmp(l->rows[j].header_id, s->header_id.data, 32) == 0) {
                row = &l->rows[j];
                break;
            }
        }
        if (row == NULL) {
            if (l->n_rows >= SNAPSHOTS_MAX) {
                continue;
            }
            row = &l->rows[l->n_rows++];
            memset(row, 0, sizeof(*row));
            memcpy(row->header_id, s->header_id.data, 32);
            row->received_ms = s->received_ms;
        }
        /* Receive times differ per vault; show the earliest. */
        if (s->received_ms < row->received_ms) {
            row->received_ms = s->received_ms;
        }
        row->flags |= s->flags;
        row->held = row->held || s->held;
        row->on |= (uint8_t)(1u << v);
    }
}

static void
list_vault(struct list_ctx *l, size_t v, const uint8_t mailbox_id[32])
{
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    Coffer__V1__ListSnapshotsResponse *resp = NULL;
    struct cfr_buf out;
    struct cfr_err err;
    uint8_t buf[64];
    size_t len;
    int status = 0;

    if (l->failed[v]) {
        return;
    }
    cfr_err_clear(&err);
    cfr_buf_init(&out, LIST_RESPONSE_MAX);
    req.mailbox_id.data = (uint8_t *)mailbox_id;
    req.mailbox_id.len = 32;
    len = coffer__v1__list_snapshots_request__pack(&req, buf);
    if (cfr_rpc_unary(l->cli[v], "/coffer.v1.Vault/ListSnapshots", buf, len,
                      l->cfg->call_timeout_ms, &out, &status, &err) != 0) {
        l->failed[v] = true;
        snprintf(l->why[v], sizeof(l->why[v]), "%s", err.msg);
        goto out;
    }
    resp = coffer__v1__list_snapshots_response__unpack(NULL, out.len, out.data);
    if (resp == NULL) {
        l->failed[v] = true;
        snprintf(l->why[v], sizeof(l->why[v]),
                 "ListSnapshots: the answer does not decode");
        goto out;
    }
    merge_rows(l, v, resp);
out:
    if (resp != NULL) {
        coffer__v1__list_snapshots_response__free_unpacked(resp, NULL);
    }
    cfr_buf_fini(&out);
}

static void
print_rows(struct list_ctx *l, const char *name, const uint8_t id[32])
{
    char hex[65], when[32];
    bool json = l->a->json;

    cfr_hex_encode(id, 32, hex);
    if (json) {
        fputs(l->first_json ? "\n{\"name\":" : ",\n{\"name\":", stdout);
        l->first_json = false;
        cfr_json_fput(stdout, name);
        printf(",\"mailbox_id\":\"%s\",\"snapshots\":[", hex);
    } else {
        printf("%s (mailbox ID %.16s...): %zu snapshots\n", name, hex,
               l->n_rows);
    }
    for (size_t i = 0; i < l->n_rows; i++) {
        const struct snap_row *row = &l->rows[i];
        time_t t = (time_t)(row->received_ms / 1000);
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL ||
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
            snprintf(when, sizeof(when), "?");
        }
        cfr_hex_encode(row->header_id, 32, hex);
        bool mass = (row->flags & 1u) != 0;
        if (json) {
            printf("%s{\"header_id\":\"%s\",\"received\":\"%s\","
                   "\"received_ms\":%lld,\"flags\":%u,\"mass_deletion\":%s,"
                   "\"held\":%s,\"vaults\":[",
                   i == 0 ? "" : ",", hex, when, (long long)row->received_ms,
                   (unsigned)row->flags, mass ? "true" : "false",
                   row->held ? "true" : "false");
            bool first = true;
            for (size_t v = 0; v < l->cfg->n_vaults; v++) {
                if (row->on & (1u << v)) {
                    fputs(first ? "" : ",", stdout);
                    cfr_json_fput(stdout, l->cfg->vaults[v].name);
                    first = false;
                }
            }
            fputs("]}", stdout);
        } else {
            printf("  %s  %.16s  %s%son", when, hex,
                   mass ? "MASS-DELETION " : "", row->held ? "HELD " : "");
            for (size_t v = 0, k = 0; v < l->cfg->n_vaults; v++) {
                if (row->on & (1u << v)) {
                    printf("%s%s", k++ == 0 ? " " : ",",
                           l->cfg->vaults[v].name);
                }
            }
            putchar('\n');
        }
    }
    if (json) {
        fputs("]}", stdout);
    }
}

/* agent_mailbox_fn: one mailbox's snapshots from every vault. */
static int
list_one(void *ctx, const char *name, const char *root)
{
    struct list_ctx *l = ctx;
    uint8_t id[32];

    if (l->a->n_names > 0) {
        bool want = false;
        for (size_t i = 0; i < l->a->n_names; i++) {
            if (strcmp(l->a->names[i], name) == 0 && !l->named_seen[i]) {
                want = true;
                l->named_seen[i] = true;
            }
        }
        if (!want) {
            return 0;
        }
    }
    /* The vaults know a mailbox only by this keyed hash of its name. */
    cfr_keyring_name_id(l->kr, name, strlen(name), id);
    l->n_rows = 0;
    for (size_t v = 0; v < l->cfg->n_vaults; v++) {
        list_vault(l, v, id);
    }
    qsort(l->rows, l->n_rows, sizeof(*l->rows), row_cmp);
    print_rows(l, name, id);
    return 0;
}

static int
cmd_snapshots(int argc, char **argv)
{
    struct args a;
    struct agent_config cfg;
    struct cfr_err err;
    struct tls_files tls;
    struct list_ctx *l = NULL;
    size_t ok = 0;
    int code;

    memset(&cfg, 0, sizeof(cfg));
    memset(&tls, 0, sizeof(tls));
    cfr_err_clear(&err);
    if ((code = parse_args(argc, argv, "snapshots", true, true, false, &a)) !=
        0) {
        goto out;
    }
    if (agent_config_load(a.config, &cfg, &err) != 0) {
        code = AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if (set_log_level(&cfg) != 0) {
        code = AGENT_EXIT_CONFIG;
        goto out;
    }
    if ((l = cfr_calloc(1, sizeof(*l))) == NULL ||
        (l->rows = cfr_calloc(SNAPSHOTS_MAX, sizeof(*l->rows))) == NULL ||
        (l->named_seen = cfr_calloc(a.n_names + 1, sizeof(bool))) == NULL) {
        code = AGENT_EXIT_FAILED;
        fprintf(stderr, "coffer-agent: out of memory\n");
        goto out;
    }
    l->cfg = &cfg;
    l->a = &a;
    l->first_json = true;
    if ((l->kr = key_load(&cfg, &err)) == NULL ||
        tls_load(&cfg, &tls, &err) != 0) {
        code = AGENT_EXIT_CONFIG;
        complain(&err);
        goto out;
    }
    if (cfr_rpc_global_init(&err) != 0) {
        code = AGENT_EXIT_FAILED;
        complain(&err);
        goto out;
    }
    for (size_t v = 0; v < cfg.n_vaults; v++) {
        struct cfr_rpc_client_opts co;
        memset(&co, 0, sizeof(co));
        co.target = cfg.vaults[v].address;
        co.target_name = cfg.vaults[v].tls_name;
        co.ca_pem = tls.ca;
        co.cert_pem = tls.cert;
        co.key_pem = tls.key;
        co.max_msg = LIST_RESPONSE_MAX;
        if (cfr_rpc_client_new(&co, &l->cli[v], &err) != 0) {
            l->failed[v] = true;
            snprintf(l->why[v], sizeof(l->why[v]), "%s", err.msg);
        }
    }
    if (a.json) {
        fputs("{\"command\":\"snapshots\",\"tenant\":", stdout);
        cfr_json_fput(stdout, cfg.tenant);
        fputs(",\"headers_sealed\":true,\"mailboxes\":[", stdout);
    } else {
        printf("coffer-agent snapshots: tenant %s (times are the vaults'; "
               "headers are sealed for the restore side and cannot be "
               "opened here)\n",
               cfg.tenant);
    }
    for (size_t i = 0; i < cfg.n_mailboxes; i++) {
        list_one(l, cfg.mailboxes[i].name, cfg.mailboxes[i].root);
    }
    if (cfg.mailbox_pattern != NULL) {
        struct agent_mailbox_stats ms;
        if (agent_mailbox_expand(cfg.mailbox_pattern, list_one, l, &ms, &err) !=
            0) {
            complain(&err);
        }
    }
    /* Named mailboxes the configuration no longer has: list them too
     * (the ID needs only the name), e.g. one removed from the host. */
    for (size_t i = 0; i < a.n_names; i++) {
        if (!l->named_seen[i]) {
            list_one(l, a.names[i], "");
        }
    }
    for (size_t v = 0; v < cfg.n_vaults; v++) {
        ok += l->failed[v] ? 0 : 1;
    }
    if (a.json) {
        fputs("\n],\"vaults\":[", stdout);
        for (size_t v = 0; v < cfg.n_vaults; v++) {
            fputs(v == 0 ? "\n{\"name\":" : ",\n{\"name\":", stdout);
            cfr_json_fput(stdout, cfg.vaults[v].name);
            printf(",\"state\":\"%s\",\"message\":",
                   l->failed[v] ? "unreachable" : "ok");
            cfr_json_fput(stdout, l->failed[v] ? l->why[v] : "");
            fputc('}', stdout);
        }
    } else {
        for (size_t v = 0; v < cfg.n_vaults; v++) {
            if (l->failed[v]) {
                printf("vault %s: %s\n", cfg.vaults[v].name, l->why[v]);
            }
        }
    }
    code = ok == cfg.n_vaults ? AGENT_EXIT_OK
           : ok > 0           ? AGENT_EXIT_PARTIAL
                              : AGENT_EXIT_FAILED;
    if (a.json) {
        printf("\n],\"exit_code\":%d,\"result\":\"%s\"}\n", code,
               agent_cli_exit_name(code));
    }
out:
    fflush(stdout);
    if (l != NULL) {
        for (size_t v = 0; v < AGENT_UPLINK_VAULTS_MAX; v++) {
            cfr_rpc_client_free(l->cli[v]);
        }
        cfr_keyring_free(l->kr);
        cfr_free(l->rows);
        cfr_free(l->named_seen);
        cfr_free(l);
    }
    tls_free(&tls);
    agent_config_fini(&cfg);
    args_fini(&a);
    return code;
}

int
main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    /* A closed pipe (| head) must be an error return, not a death. */
    signal(SIGPIPE, SIG_IGN);
    agent_backup_malloc_setup(); /* before any thread: the memory bound */
    if (cmd == NULL) {
        usage(stderr);
        return AGENT_EXIT_USAGE;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        usage(stdout);
        return AGENT_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("coffer-agent %s\n", AGENT_VERSION);
        return AGENT_EXIT_OK;
    }
    /*
     * gRPC is never shut down: cfr_rpc_global_fini can block ~10 s joining
     * a poller thread, and the process is about to exit anyway.
     */
    if (strcmp(cmd, "init") == 0) {
        return cmd_init(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "backup") == 0) {
        return cmd_backup(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "snapshots") == 0) {
        return cmd_snapshots(argc - 2, argv + 2);
    }
    fprintf(stderr, "coffer-agent: unknown command %s\n", cmd);
    usage(stderr);
    return AGENT_EXIT_USAGE;
}
