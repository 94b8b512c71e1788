/*
 * commands.h - coffer-restore's commands. main.c picks one by name and
 * hands it the arguments after the command name (global options such as
 * --config already taken out); each parses its own options, opens a
 * session (session.h) only when they are valid, prints its result and
 * returns the process exit code (RESTORE_EXIT_*).
 */
#ifndef RESTORE_COMMANDS_H
#define RESTORE_COMMANDS_H

typedef int restore_command_fn(const char *config_path, int argc, char **argv);

struct restore_command {
    const char *name;
    restore_command_fn *run;
    const char *usage; /* one or more lines, "  NAME OPTIONS" */
};

/* browse.c: ls (mailboxes, folders, messages) and find (a Message-ID). */
restore_command_fn restore_cmd_ls;
restore_command_fn restore_cmd_find;

/* verify.c: the scheduled recovery test (verify.h). */
restore_command_fn restore_cmd_verify;
#define RESTORE_VERIFY_USAGE                                                   \
    "  verify [--mailbox NAME]... [--sample-mailboxes N]\n"                    \
    "         [--sample-messages N] [--seed S] [--replica HOST:PORT]...\n"     \
    "         [--live ROOT_PATTERN] [--scratch DIR] [--report FILE]\n"         \
    "         [--metrics FILE] [--state FILE] [--older N] [--json] [--keep]\n" \
    "         [--schedule]\n"                                                  \
    "         exit 0 all verified, 6 a verification failure (the report\n"     \
    "         names replica, mailbox, folder, message), 4 only replicas\n"     \
    "         that could not be reached\n"

/* maint.c: retention, its audit, purge, holds (maint.h). */
restore_command_fn restore_cmd_retention;
restore_command_fn restore_cmd_purge;
restore_command_fn restore_cmd_hold;
restore_command_fn restore_cmd_release;
restore_command_fn restore_cmd_approve;
#define RESTORE_MAINT_USAGE                                                    \
    "  retention [--json]   APPLY_RETENTION + GC on every vault (admin_tls)\n" \
    "  retention --audit [--window DURATION] [--json]\n"                       \
    "         exit 0 compliant, 6 a violation, 4 a replica unreachable\n"      \
    "  purge --mailbox NAME [--approval HOST:PORT=ID]... [--totp CODE]\n"      \
    "        [--reason TEXT] [--vault HOST:PORT] [--json]\n"                   \
    "  hold (--snapshot ID | --mailbox NAME [--at TIME]) [--reason TEXT]\n"    \
    "       [--vault HOST:PORT] [--json]\n"                                    \
    "  release (--snapshot ID | --mailbox NAME [--at TIME])\n"                 \
    "       [--approval HOST:PORT=ID]... [--totp CODE] [--reason TEXT]\n"      \
    "       [--vault HOST:PORT] [--json]\n"                                    \
    "  approve --vault HOST:PORT --approval ID [--json]\n"                     \
    "         purge and release exit 9 while a vault waits for a second\n"     \
    "         admin's approval (or --totp)\n"

#endif /* RESTORE_COMMANDS_H */
