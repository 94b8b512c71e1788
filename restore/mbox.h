/*
 * mbox.h - turns restored Maildir++ folders into mbox files (mboxrd), one
 * file per folder, for `coffer-restore restore --format mbox`.
 *
 * The format written, per message, in INTERNALDATE (mtime, then name)
 * order:
 *
 *   From <sender> <asctime date of the mtime, UTC>\n
 *   <the message's header block, quoted>
 *   Status: RO\n           (R: \Seen; O: the message was in cur/)
 *   X-Status: AFTD\n       (A: \Answered, F: \Flagged, T: \Draft,
 *                           D: \Deleted; the line only when one is set)
 *   X-Keywords: $Junk k2\n (keywords from the folder's dovecot-keywords,
 *                           and $Forwarded for the Maildir flag P; the
 *                           line only when there is one)
 *   <the blank line that ended the header block and the body, quoted>
 *   \n                     (one newline first if the message lacks a
 *                           final one; then the blank separator line)
 *
 * <sender> is the address of the message's Return-Path header without its
 * angle brackets, else MAILER-DAEMON (also for "<>" or a value with
 * blanks or control bytes). The flag lines use the line ending of the
 * blank line they precede ("\r\n" in a CRLF message); a message without a
 * blank line gets them at its end. mboxrd quoting: every line that starts
 * with zero or more '>' followed by "From " gets one more '>', so a
 * reader that removes one '>' from such lines gets the bytes back. Apart
 * from the quoting, the inserted flag lines and a final newline a message
 * may lack, every byte of the message is written as it was (existing
 * Status: lines included).
 *
 * Memory: a folder's message names; each message is mapped (mmap), not
 * read into memory. Thread safety: calls are independent.
 */
#ifndef RESTORE_MBOX_H
#define RESTORE_MBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

/* Longest keyword name kept from dovecot-keywords (longer: dropped). */
#define RESTORE_MBOX_KEYWORD_MAX 128
/* Longest Return-Path address used in a From line. */
#define RESTORE_MBOX_SENDER_MAX 256

/* Keyword names of a folder: letter 'a' + i is name[i] ("" unknown). */
struct restore_mbox_keywords {
    char name[26][RESTORE_MBOX_KEYWORD_MAX + 1];
};

/*
 * Parses dovecot-keywords ("<index> <name>" lines, index 0..25) into kw
 * (zeroed first). Lines that do not parse, and names with blanks or
 * control bytes, are skipped: keywords are a courtesy, never a reason to
 * fail a restore.
 */
void restore_mbox_keywords_parse(const uint8_t *p, size_t n,
                                 struct restore_mbox_keywords *kw);

/* What the mbox lines say about one message. */
struct restore_mbox_meta {
    const char *info; /* the name's ":2,<flags>" suffix, or "" */
    bool in_new;
    int64_t mtime_ns;
    const struct restore_mbox_keywords *kw; /* may be NULL */
};

typedef int restore_mbox_out_fn(void *ctx, const void *p, size_t n,
                                struct cfr_err *err);

/*
 * Writes one message (len bytes at msg; msg may be NULL when len is 0)
 * in the format above through out. Returns out's first error.
 */
int restore_mbox_message(const uint8_t *msg, size_t len,
                         const struct restore_mbox_meta *m,
                         restore_mbox_out_fn *out, void *ctx,
                         struct cfr_err *err);

/*
 * The mbox file name of a Maildir++ folder: "" is "INBOX.mbox", ".Sent"
 * is "Sent.mbox", ".Archive.2024" is "Archive.2024.mbox". CFR_EINVAL for
 * a folder that is not "" or ".<name>", or a name over NAME_MAX bytes.
 */
int restore_mbox_name(const char *folder, char *out, size_t out_size,
                      struct cfr_err *err);

/*
 * Writes the messages of folder (cur/ and new/ below src_root_fd; "" is
 * the root) into the new file mbox_name in dst_fd, through the safe
 * writer (restore.h: O_EXCL|O_NOFOLLOW, renamed without replacing; an
 * existing name is CFR_EEXIST). The folder's dovecot-keywords, when
 * there, names keywords. *messages_r and *bytes_r (may be NULL) get the
 * messages and bytes written. Errors: CFR_EIO, CFR_EEXIST, CFR_ENOMEM.
 */
int restore_mbox_folder(int src_root_fd, const char *folder, int dst_fd,
                        const char *mbox_name, uint64_t *messages_r,
                        uint64_t *bytes_r, struct cfr_err *err);

#endif /* RESTORE_MBOX_H */
