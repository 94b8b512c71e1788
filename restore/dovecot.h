/*
 * dovecot.h - makes a restored Maildir++ folder's Dovecot files agree with
 * the messages restored into it, and reads a Maildir back through Dovecot
 * (doveadm) for tests and the verify command.
 *
 * Why: a restore writes every file byte-exact, including Dovecot's own
 * dovecot-uidlist, but that list was written at another moment than the
 * scan that made the snapshot (it may name messages the snapshot lacks,
 * or lack messages it has), and a partial restore brings back only some
 * messages. A uidlist that keeps UIDVALIDITY and each present message's
 * UID lets IMAP clients keep their caches; a missing one makes Dovecot
 * assign a new UIDVALIDITY and every client downloads everything again.
 *
 * restore_dovecot_finish, per folder:
 *  - dovecot-uidlist (version 3: header "3 V<uidvalidity> N<nextuid>
 *    [G<guid> ...]", lines "<uid> [<ext fields>] :<base name>"): entries
 *    whose message is in cur/ or new/ (matched by base name, the part
 *    before ':2,') keep their UID and extension fields; entries of absent
 *    messages are dropped; present messages the list lacks get new UIDs
 *    above every UID used and above the old NextUID, in order of mtime
 *    then name (stable); NextUID is written above all UIDs; the other
 *    header fields are kept. The file is rewritten through a temporary
 *    file (O_EXCL|O_NOFOLLOW) renamed over the restored one.
 *  - No restored uidlist: none is written. Inventing a UIDVALIDITY would
 *    not save clients a download (theirs cannot match it) and Dovecot
 *    makes a fresh list itself, so writing one would only add a way to
 *    get it wrong.
 *  - A malformed uidlist (hostile input: it came from a backup; lines are
 *    bounded, numbers checked, duplicates refused) is removed with a
 *    warning: Dovecot regenerates it, UIDs are lost, nothing crashes.
 *  - dovecot-keywords is kept as restored. Tested with Dovecot 2.3: a
 *    message carrying a keyword letter the file does not define shows
 *    keyword "unknown-<n>" (Dovecot adds that name to the file) and
 *    keeps the letter. Its real name is not knowable, and renaming the
 *    restored message to drop the letter would lose it for good, so both
 *    are left alone. (With file and messages from one backup run this
 *    only happens for a keyword first used between the two reads.)
 *  - dovecot.index* and dovecot.list.index* (index, log, cache) restored
 *    into the folder are removed, with stale dovecot-uidlist.lock and
 *    dovecot-keywords.lock. Tested with Dovecot 2.3: with a stale
 *    dovecot.index.log that knew more UIDs than the restored uidlist,
 *    Dovecot logged "Expunged message reappeared, giving a new UID" and
 *    renumbered restored messages (clients would download them again);
 *    with the indexes removed it kept every UID of the uidlist. Dovecot
 *    rebuilds indexes from the Maildir and the uidlist on first access.
 *  - Idempotent: a second call finds the list consistent and rewrites
 *    nothing, so calling it again (coffer-restore, then a test) is safe.
 *
 * restore_doveadm_list runs doveadm (PATH, then /usr/bin; CFR_EUNAVAIL
 * when absent) with a private configuration in a temporary directory
 * ($TMPDIR or /tmp; removed afterwards): no system configuration is read,
 * no service is contacted, indexes go to that directory, not into the
 * Maildir. Dovecot still writes what opening a Maildir needs: tmp/,
 * dovecot-uidvalidity*, and dovecot-uidlist when it had to number a
 * message the list lacked. One "doveadm mailbox status" lists mailboxes
 * (name, GUID, UIDVALIDITY), then one "doveadm fetch" per mailbox (by
 * GUID) streams its messages; output is read with -f json (escapes every
 * byte, unlike the tab formatter) by a bounded streaming parser, and
 * a command silent for 120 s is killed. Mailboxes without messages give
 * no callback. The configuration is Dovecot 2.3's; untested with 2.4,
 * which replaced mail_location.
 * Dovecot refuses root as a mail user whatever the settings, so: run by
 * a non-root user, doveadm runs as that user; run by root on a Maildir
 * another user owns, it runs as that user (who must be able to reach
 * maildir_root); run by root on root's Maildir (a restore's output), it
 * runs in a new user namespace where root appears as uid 1000 (files
 * stay root's). Without user namespaces (some container sandboxes) that
 * last case is CFR_EUNAVAIL.
 * The Maildir root path must be plain (letters, digits, "/._+,@-"):
 * Dovecot's configuration and mail_location would interpret others.
 *
 * Thread safety: calls are independent; restore_doveadm_list forks a
 * child per doveadm command and calls only async-signal-safe functions
 * in it before exec, so it may run in a threaded program.
 */
#ifndef RESTORE_DOVECOT_H
#define RESTORE_DOVECOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h" /* struct cfr_buf */
#include "err.h" /* struct cfr_err */

/* Longest dovecot-uidlist line accepted (Dovecot writes far shorter). */
#define RESTORE_DOVECOT_LINE_MAX 8192
/* Largest dovecot-uidlist accepted: about 1.5 M messages. */
#define RESTORE_DOVECOT_UIDLIST_MAX ((size_t)256 << 20)

/*
 * Makes the folder's Dovecot files consistent (see above). folder is
 * relative to root_fd ("" for INBOX, ".Sent", ...), already checked safe.
 * Errors: CFR_EIO (reading the folder, writing the list), CFR_ENOMEM,
 * CFR_EDENIED (a symlink in the way). A malformed uidlist is not an error
 * (it is removed, with a warning logged).
 */
int restore_dovecot_finish(int root_fd, const char *folder,
                           struct cfr_err *err);

/* ---- exposed for tests and the fuzz target ----------------------------- */

/* A message found in cur/ or new/: its file name and mtime. */
struct restore_dovecot_file {
    const char *name; /* borrowed, NUL-terminated, "base[:2,flags]" */
    int64_t mtime_ns;
};

/*
 * The pure part of restore_dovecot_finish: parses the uidlist in (n
 * bytes, untrusted) and appends to out the list that fits the files
 * (borrowed; any order; a second file with a base name already seen gets
 * no line of its own). CFR_ECORRUPT for a malformed list (err says
 * where), CFR_ELIMIT when the UIDs would pass 2^32-1, CFR_ENOMEM, or
 * out's cap error. out holds nothing useful after an error.
 */
int restore_dovecot_rewrite(const uint8_t *in, size_t n,
                            const struct restore_dovecot_file *files,
                            size_t n_files, struct cfr_buf *out,
                            struct cfr_err *err);

/* ---- doveadm reader ---------------------------------------------------- */

#define RESTORE_DOVEADM_MAILBOX_MAX 1024
#define RESTORE_DOVEADM_FLAGS_MAX   1024
#define RESTORE_DOVEADM_MSGID_MAX   1024
#define RESTORE_DOVEADM_GUID_MAX    256

/*
 * One message as Dovecot sees it. Strings are NUL-terminated; a value
 * longer than its field is refused (CFR_ELIMIT), never truncated.
 * Normalised for comparison: flags without \Recent (it belongs to a
 * session, not to the message) and sorted bytewise; message_id is the
 * first Message-ID header's value without surrounding white space.
 */
struct restore_doveadm_msg {
    char mailbox[RESTORE_DOVEADM_MAILBOX_MAX]; /* "INBOX", "Sent", "A.B" */
    uint32_t uidvalidity;                      /* of the mailbox */
    uint32_t uid;
    /* System flags and keywords, space-separated, sorted ("\Seen k1"). */
    char flags[RESTORE_DOVEADM_FLAGS_MAX];
    uint64_t size; /* physical size (RFC822.SIZE) */
    char message_id[RESTORE_DOVEADM_MSGID_MAX]; /* "<x@y>", "" when none */
    /* Dovecot's message GUID; for Maildir the file's base name. */
    char guid[RESTORE_DOVEADM_GUID_MAX];
    /*
     * With RESTORE_DOVEADM_TEXT only: the message as Dovecot reads it
     * (doveadm fetch text: header and body, the bytes an IMAP client
     * gets for BODY[]), hashed while it streams by in the same tree form
     * as restore_verify_hash_fd (BLAKE2b-256 over the BLAKE2b-256 of each
     * RESTORE_DOVEADM_HASH_BLOCK block), and its length.
     */
    bool have_text;
    uint64_t text_size;
    uint8_t text_hash[32];
};

/* Fetch the message text too and hash it (fills have_text...). */
#define RESTORE_DOVEADM_TEXT 1u
/* Block size of the text hash; equal to verify.h's VERIFY_HASH_BLOCK. */
#define RESTORE_DOVEADM_HASH_BLOCK ((size_t)1 << 20)

/*
 * Called once per message, mailboxes in name order, messages by UID.
 * A non-zero return stops the listing and is returned.
 */
typedef int restore_doveadm_fn(void *ctx, const struct restore_doveadm_msg *m);

/*
 * Lists every message of the Maildir++ tree at maildir_root (absolute or
 * relative path; an existing directory). fn and ctx are borrowed for the
 * call; m is valid during the callback only. Errors: CFR_EINVAL (no such
 * directory, or a path Dovecot would misread), CFR_EUNAVAIL (no doveadm,
 * or root without user namespaces), CFR_EIO (doveadm failed or timed
 * out; err carries the first line of its stderr), CFR_ECORRUPT (output
 * not understood), CFR_ELIMIT, CFR_ENOMEM, or fn's own non-zero return.
 */
int restore_doveadm_list(const char *maildir_root, restore_doveadm_fn *fn,
                         void *ctx, struct cfr_err *err);

/*
 * As restore_doveadm_list, with flags (RESTORE_DOVEADM_TEXT or 0). With
 * RESTORE_DOVEADM_TEXT each message's text is read from the same -f json
 * stream and hashed as it is decoded, never held whole: memory is one
 * hash block plus 32 bytes per block. doveadm's JSON replaces bytes that
 * are not UTF-8 (and NUL) by U+FFFD, so a message whose decoded text
 * holds U+FFFD is fetched once more on its own with the tab formatter,
 * which passes bytes through unchanged, and that is hashed instead.
 */
int restore_doveadm_list_ex(const char *maildir_root, unsigned flags,
                            restore_doveadm_fn *fn, void *ctx,
                            struct cfr_err *err);

#endif /* RESTORE_DOVECOT_H */
