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

#endif /* RESTORE_COMMANDS_H */
