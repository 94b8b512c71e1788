/*
 * dovecot_support.h - lets integration tests make a Maildir with Dovecot
 * itself (doveadm save, flags, expunge) under a private configuration in
 * a directory of the test's own: no system configuration is read, and the
 * Maildir gets what a real Dovecot writes (uidlist, keywords, indexes in
 * the Maildir).
 *
 * Dovecot refuses root as a mail user whatever its settings; run as root,
 * doveadm runs in a user namespace where the caller's uid appears as 1000
 * (files it creates still belong to the caller). Every wait is bounded;
 * nothing here calls cmocka.
 */
#ifndef DOVECOT_SUPPORT_H
#define DOVECOT_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

#define DVS_PATH_MAX 1024

struct dvs {
    char bin[DVS_PATH_MAX];     /* doveadm */
    char dir[DVS_PATH_MAX];     /* configuration, base_dir, state_dir */
    char conf[DVS_PATH_MAX];    /* dir/dovecot.conf */
    char maildir[DVS_PATH_MAX]; /* the Maildir++ root */
};

/* False when no doveadm is installed (PATH, /usr/bin). */
bool dvs_available(void);

/*
 * Writes a configuration in dir (created) for the Maildir at maildir
 * (absolute; created by Dovecot as needed), indexes inside the Maildir
 * as a default Dovecot has them. 0 or -1.
 */
int dvs_init(struct dvs *d, const char *dir, const char *maildir);

/*
 * Runs doveadm -c <conf> args... (NULL-terminated, after the program
 * name), stdin from stdin_path (NULL: /dev/null), stdout and stderr into
 * dir/doveadm.out and dir/doveadm.err. Returns the exit code, or -1 when
 * it could not run or took over 60 s (it is killed).
 */
int dvs_run(const struct dvs *d, const char *const *args,
            const char *stdin_path);

/* Saves text as a message into mailbox. 0 or -1. */
int dvs_save(const struct dvs *d, const char *mailbox, const char *text);

#endif /* DOVECOT_SUPPORT_H */
