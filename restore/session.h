/*
 * session.h - what every coffer-restore command starts from: the
 * configuration, the tenant's keyring (from the escrow copy), the TLS
 * files and a fetcher over the configured vaults; plus the exit codes and
 * the small output helpers the commands share.
 *
 * Each command (commands.h) parses its own options first and opens the
 * session only when they are valid, so a usage error never asks for a
 * passphrase or touches a vault.
 *
 * Thread safety: a session belongs to the command that opened it; the
 * keyring and fetcher inside may be shared with its worker threads.
 */
#ifndef RESTORE_SESSION_H
#define RESTORE_SESSION_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"  /* struct restore_config */
#include "err.h"     /* struct cfr_err */
#include "fetch.h"   /* struct restore_fetcher */
#include "keys.h"    /* struct cfr_keyring */
#include "restore.h" /* enum restore_failure */

/* Exit codes: part of the interface (docs/RESTORE.md), never renumbered. */
enum {
    RESTORE_EXIT_OK = 0,
    RESTORE_EXIT_OTHER = 1,    /* anything not below (memory, a bug) */
    RESTORE_EXIT_USAGE = 2,    /* bad command line */
    RESTORE_EXIT_CONFIG = 3,   /* config, passphrase, key file or TLS files */
    RESTORE_EXIT_VAULT = 4,    /* no vault answered, or it refused us */
    RESTORE_EXIT_NOTFOUND = 5, /* no snapshot of that mailbox */
    RESTORE_EXIT_VERIFY = 6,   /* data missing, damaged, forged, wrong key */
    RESTORE_EXIT_UNSAFE = 7,   /* the snapshot names a path that is refused */
    RESTORE_EXIT_TARGET = 8,   /* the target is not empty, or a file exists */
    RESTORE_EXIT_IO = 9,       /* writing the target failed */
};

struct restore_session {
    const char *config_path;
    struct restore_config cfg;
    struct cfr_keyring *kr;
    char *ca, *cert, *key;
    struct restore_fetcher *f;
};

/*
 * Config, passphrase, keyring, TLS files, then a fetcher over every
 * configured vault. Returns an exit code; err says what failed. s must be
 * zeroed (config_path set) and is finished by restore_session_fini
 * whatever this returned.
 */
int restore_session_open(struct restore_session *s, struct cfr_err *err);
void restore_session_fini(struct restore_session *s);

int restore_exit_for_failure(enum restore_failure f);

/* "2026-11-23T15:04:05.123Z" (UTC) into out; "?" when not representable. */
const char *restore_iso_time(int64_t ms, char out[32]);

/* {"kind":..,"code":..,"message":..} for a failure. */
void restore_json_error(FILE *f, enum restore_failure kind,
                        const struct cfr_err *err);

/*
 * The common tail of every command: with json, a failure before the
 * command could print its own document ({"ok":false,"error":...}); the
 * error on stderr for every failing exit code. Returns code.
 */
int restore_session_report(int code, int json, const struct cfr_err *err);

#endif /* RESTORE_SESSION_H */
