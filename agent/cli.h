/*
 * cli.h - the parts of coffer-agent's command line that can be tested
 * without a terminal or a vault: exit codes and their precedence, the
 * one-instance lock, passphrase files, the mass-deletion rule, the
 * progress line and the run summary (text and JSON).
 *
 * Exit codes are an interface (cron, systemd, monitoring match on them):
 * fixed forever, listed in docs/AGENT.md and in `coffer-agent --help`.
 * When a run has several outcomes at once, the most urgent one wins:
 *
 *   1 failed > 7 mass deletion > 6 file errors > 5 partial > 0 ok
 *
 * A mailbox with no snapshot is unprotected, so it comes first; a mass
 * deletion may be an attack in progress and needs a person now; an
 * unreadable file is mail missing from the snapshot; a lagging replica is
 * redundancy lost for a while (the vaults catch up by themselves). 2, 3
 * and 4 are decided before any mailbox is touched, so they never combine
 * with the others. The summary always lists every outcome, whichever code
 * the process exits with.
 *
 * Thread safety: none needed; main.c calls these from one thread.
 */
#ifndef AGENT_CLI_H
#define AGENT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* FILE */

#include "backup.h" /* struct agent_backup_stats */
#include "err.h"    /* struct cfr_err */
#include "uplink.h" /* struct agent_uplink_report */

/* Never renumbered; see the top of this file for the precedence. */
enum agent_exit {
    AGENT_EXIT_OK = 0,
    AGENT_EXIT_FAILED = 1,        /* some mailbox got no snapshot */
    AGENT_EXIT_USAGE = 2,         /* bad command line */
    AGENT_EXIT_CONFIG = 3,        /* configuration, key or TLS files */
    AGENT_EXIT_LOCKED = 4,        /* another instance holds the lock */
    AGENT_EXIT_PARTIAL = 5,       /* quorum met, some vault lagging/down */
    AGENT_EXIT_FILE_ERRORS = 6,   /* committed; some files unreadable */
    AGENT_EXIT_MASS_DELETION = 7, /* committed, marked, previous held */
};

/* "ok", "failed", "usage", "config", "locked", "partial", "file-errors",
 * "mass-deletion"; "unknown" otherwise. */
const char *agent_cli_exit_name(int code);

/* Longest passphrase read from a file (bytes, after the newline). */
#define AGENT_CLI_PASS_MAX 1024
/* Random bytes behind a generated passphrase (hex-encoded in the file). */
#define AGENT_CLI_PASS_GEN 32

/* ---- lock --------------------------------------------------------------- */

/*
 * Takes the instance lock: flock(LOCK_EX | LOCK_NB) on path (borrowed),
 * created 0600 if missing, never through a symlink. On success *fd_r holds
 * it (keep it open for the run; the kernel drops it when the process dies,
 * so a crash never leaves a stale lock) and the file holds our pid.
 * CFR_EEXIST when another process holds it, with *holder_r its pid as the
 * file says (0 if unknown); CFR_EIO when the file cannot be opened.
 */
int agent_cli_lock(const char *path, int *fd_r, long *holder_r,
                   struct cfr_err *err);
/* Releases the lock (closes fd); accepts -1. */
void agent_cli_unlock(int fd);

/* ---- passphrase files --------------------------------------------------- */

struct cfr_secret;

/*
 * Reads the passphrase in path (borrowed) into an owned secret (*pass_r,
 * length *len_r; one trailing newline dropped, so `echo > file` works).
 * what names the setting in messages. Refuses (CFR_EDENIED) a file that
 * group or others may access and (CFR_EINVAL) one that is not a regular
 * file, is empty or longer than AGENT_CLI_PASS_MAX. CFR_ENOTFOUND when it
 * does not exist. The contents never reach a message or a log.
 */
int agent_cli_pass_read(const char *path, const char *what,
                        struct cfr_secret **pass_r, size_t *len_r,
                        struct cfr_err *err);
/*
 * Creates path (borrowed; O_EXCL, 0600, fsynced) holding a new random
 * passphrase (AGENT_CLI_PASS_GEN bytes, hex), returned as with
 * agent_cli_pass_read. CFR_EEXIST when path exists.
 */
int agent_cli_pass_generate(const char *path, struct cfr_secret **pass_r,
                            size_t *len_r, struct cfr_err *err);

/* ---- mass-deletion rule ------------------------------------------------- */

/*
 * Whether a run that saw deleted identities vanish while kept files stay in
 * the snapshot is a mass deletion: deleted >= min_files and deleted is more
 * than percent of what the previous run knew (deleted + kept; arrivals
 * since then count in kept, which errs on the quiet side by a few files).
 */
bool agent_cli_mass_deletion(uint64_t deleted, uint64_t kept, unsigned percent,
                             uint64_t min_files);

/* ---- run summary -------------------------------------------------------- */

/* One mailbox's outcome, as main.c hands it to the summary (borrowed). */
struct agent_cli_mailbox {
    const char *name;
    int rc;            /* 0: the quorum committed its snapshot */
    const char *error; /* why not, when rc != 0 */
    bool skipped;      /* not tried: the run had already lost its quorum */
    int64_t elapsed_ms;
    const struct agent_backup_stats *stats; /* NULL when skipped */
};

/* What the whole run adds up to; zero it, then add. */
struct agent_cli_totals {
    uint64_t mailboxes, committed, failed, skipped;
    uint64_t mass_deletion; /* mailboxes marked */
    uint64_t with_errors;   /* committed mailboxes with per-file errors */
    uint64_t scanned, files_read, bytes_read, file_errors, scan_errors;
    uint64_t chunks_new, bytes_sent, deleted;
    uint64_t vaults, vaults_ok; /* from agent_cli_totals_vaults */
    bool uplink_failed;         /* no quorum of leases: nothing ran */
};

void agent_cli_totals_add(struct agent_cli_totals *t,
                          const struct agent_cli_mailbox *m);
void agent_cli_totals_vaults(struct agent_cli_totals *t,
                             const struct agent_uplink_report *r, size_t n);
/* The exit code by the precedence at the top of this file. */
int agent_cli_exit_code(const struct agent_cli_totals *t);

/* What the summary's header and footer say about the run (borrowed). */
struct agent_cli_run {
    const char *tenant;
    const char *host;
    int64_t started_ms; /* Unix time */
    unsigned quorum;    /* effective: 1..n */
    unsigned mass_deletion_percent;
};

/*
 * Text summary: agent_cli_text_mailbox prints one mailbox as it finishes
 * (a line, plus lines for errors and a mass deletion), agent_cli_text_end
 * the vaults, the totals and the outcome. Memory does not grow with the
 * number of mailboxes: nothing is kept but the totals.
 */
void agent_cli_text_mailbox(FILE *f, const struct agent_cli_mailbox *m,
                            const struct agent_cli_run *run);
void agent_cli_text_end(FILE *f, const struct agent_cli_run *run,
                        const struct agent_uplink_report *vaults,
                        size_t n_vaults, const struct agent_cli_totals *t,
                        int64_t elapsed_ms);

/*
 * JSON summary, streamed the same way: begin, one object per mailbox
 * (first says whether a comma is needed), end. One JSON document on f in
 * all (docs/AGENT.md gives its fields).
 */
void agent_cli_json_begin(FILE *f, const struct agent_cli_run *run);
void agent_cli_json_mailbox(FILE *f, const struct agent_cli_mailbox *m,
                            bool first);
void agent_cli_json_end(FILE *f, const struct agent_cli_run *run,
                        const struct agent_uplink_report *vaults,
                        size_t n_vaults, const struct agent_cli_totals *t,
                        int64_t elapsed_ms);

/* ---- progress ----------------------------------------------------------- */

struct agent_cli_progress {
    size_t index; /* 1-based mailbox number */
    size_t total; /* mailboxes in the run; 0 when unknown (a pattern) */
    const char *mailbox;
    uint64_t ids_checked;  /* chunk IDs asked about so far */
    uint64_t objects_sent; /* objects some vault lacked */
    uint64_t bytes_sent;
    int64_t elapsed_ms; /* in this mailbox */
};

/*
 * Formats the progress line (no newline; at most width - 1 columns, the
 * mailbox name shortened with "..." to fit) into out. Returns out.
 */
const char *agent_cli_progress_line(const struct agent_cli_progress *p,
                                    size_t width, char *out, size_t n);

/* "0 B", "1023 B", "1.5 KiB", "12.3 MiB", ... into out; returns out. */
const char *agent_cli_bytes(uint64_t v, char *out, size_t n);

#endif /* AGENT_CLI_H */
