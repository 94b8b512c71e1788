/*
 * mailbox.h - which mailboxes an agent backs up: each one user's mail root
 * and its name, from a configured list or from a path pattern such as
 * "/var/vmail/%d/%n/Maildir".
 *
 * Pattern rules: an absolute path; "%d" stands for a domain and "%n" for a
 * user, each at most once and at most one per path component, which may
 * add literal text around it ("/home/%n/mail", "/srv/%d/users/u-%n");
 * "%%" is a literal '%'. At least one of %d and %n must appear. The name
 * reported is "user@domain" (only "user" or "domain" when the pattern
 * names only one of them).
 *
 * Expansion walks the directory levels the pattern names: at a level with
 * a placeholder it reads the directory and keeps the entries that match,
 * are real directories (symlinks are skipped, as in the scan) and do not
 * start with '.'; literal components are followed as written (they are
 * configuration). A root that does not exist (a user who never got mail)
 * is counted as missing, not reported.
 *
 * Memory: the names of one directory per placeholder level are held and
 * sorted (for a stable order across runs): about (name length + 16) bytes
 * per entry, at most AGENT_MAILBOX_LEVEL_MAX entries per level.
 *
 * Thread safety: no shared state.
 */
#ifndef AGENT_MAILBOX_H
#define AGENT_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

/* Entries kept from one directory level; more is CFR_ELIMIT. */
#define AGENT_MAILBOX_LEVEL_MAX 1000000
/* Longest expanded root path. */
#define AGENT_MAILBOX_PATH_MAX 4096

/*
 * Called once per mailbox with its name and root (both borrowed, valid
 * during the call). A non-zero return stops the expansion and is returned.
 */
typedef int agent_mailbox_fn(void *ctx, const char *name, const char *root);

struct agent_mailbox_stats {
    uint64_t found;   /* mailboxes reported */
    uint64_t missing; /* pattern levels or roots that do not exist */
    uint64_t skipped; /* entries that matched but are not directories */
    uint64_t errors;  /* directories that could not be read (logged) */
};

/*
 * CFR_ECONFIG, naming the problem, unless pattern (borrowed) follows the
 * rules above.
 */
int agent_mailbox_check_pattern(const char *pattern, struct cfr_err *err);

/*
 * Expands pattern and calls fn for each mailbox, in byte order of the
 * placeholder values level by level. *stats_r (may be NULL) is zeroed
 * and filled. Returns 0 (unreadable levels are counted and logged, not
 * fatal), CFR_ECONFIG for a bad pattern, CFR_ENOTFOUND when the literal
 * directory before the first placeholder does not exist, CFR_ELIMIT,
 * CFR_ENOMEM, or fn's value.
 */
int agent_mailbox_expand(const char *pattern, agent_mailbox_fn *fn, void *ctx,
                         struct agent_mailbox_stats *stats_r,
                         struct cfr_err *err);

/*
 * Checks a configured list (names[i] at roots[i], all borrowed) and calls
 * fn for each in order: CFR_ECONFIG for an empty or too long name
 * (CFR_SNAP_MAILBOX_MAX bytes), a name given twice, or a root that is not
 * an absolute path. Roots are not checked for existence here: the scan
 * reports a missing one.
 */
int agent_mailbox_list(const char *const names[], const char *const roots[],
                       size_t n, agent_mailbox_fn *fn, void *ctx,
                       struct cfr_err *err);

#endif /* AGENT_MAILBOX_H */
