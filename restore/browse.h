/*
 * browse.h - looking into snapshots without restoring them: `ls` (the
 * tenant's mailboxes, the folders of one snapshot, the messages of one
 * folder) and `find` (a Message-ID across every snapshot).
 *
 * Everything read comes through the checked manifest walk (manifest.h)
 * and, for --headers, the first chunk of each message opened and
 * re-hashed as a restore does. Every name, flag and header printed for a
 * person goes through restore_safe_text, so a hostile folder, file name
 * or header cannot send escape sequences to the terminal; --json escapes
 * the same bytes as JSON.
 *
 * Manifests of one mailbox share most pages between snapshots
 * (content-defined trees), so `find` reads them through a bounded LRU of
 * checked pages (restore_page_lru): a tenant with hundreds of snapshots
 * fetches each distinct page once while it fits.
 *
 * Thread safety: none needed; one command runs on one thread.
 */
#ifndef RESTORE_BROWSE_H
#define RESTORE_BROWSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h" /* struct restore_page_cache */

/* The page cache `find` uses by default. */
#define RESTORE_PAGE_CACHE_DEFAULT ((size_t)64 << 20)
/* Bytes of a message's header block read for --headers. */
#define RESTORE_HEADER_BLOCK_MAX ((size_t)64 << 10)

/*
 * n bytes into out (out_size > 0, always NUL-terminated) fit for a
 * terminal: valid UTF-8 except C0/C1 controls and DEL is copied, every
 * other byte becomes \xNN, a backslash \\. Truncated with "..." when out
 * is too small. Returns out.
 */
const char *restore_safe_text(const uint8_t *p, size_t n, char *out,
                              size_t out_size);

/*
 * The IMAP-style name of a Maildir++ folder: "" is INBOX, ".Lists.dev"
 * is "Lists/dev", modified UTF-7 ("&AOk-") decoded to UTF-8. A name that
 * is not valid modified UTF-7 is shown as it is (without the dot). The
 * result is raw bytes: pass it through restore_safe_text to print.
 * CFR_ELIMIT when out is too small.
 */
int restore_folder_imap(const uint8_t *folder, size_t n, char *out,
                        size_t out_size);

/* System flags of a Maildir name's ":2," info (Maildir spec letters). */
enum {
    RESTORE_FLAG_PASSED = 1u << 0,   /* P */
    RESTORE_FLAG_ANSWERED = 1u << 1, /* R */
    RESTORE_FLAG_SEEN = 1u << 2,     /* S */
    RESTORE_FLAG_DELETED = 1u << 3,  /* T (trashed) */
    RESTORE_FLAG_DRAFT = 1u << 4,    /* D */
    RESTORE_FLAG_FLAGGED = 1u << 5,  /* F */
};

struct restore_flags {
    unsigned bits;     /* RESTORE_FLAG_* */
    char keywords[27]; /* Dovecot keyword letters a..z, in order */
    bool maildir2;     /* the info is ":2,..." (else no flags) */
    unsigned unknown;  /* other letters (upper case, digits) seen */
};

/* Decodes info (the part of the name after the base). */
void restore_flags_decode(const uint8_t *info, size_t n,
                          struct restore_flags *fl);
/* "Seen,Answered,Flagged,kw:ab" or "-" into out; returns out. */
const char *restore_flags_text(const struct restore_flags *fl, char *out,
                               size_t out_size);

/*
 * A Message-ID for comparison: surrounding blanks and one pair of <>
 * dropped. *off_r and *len_r give the core within p.
 */
void restore_msgid_core(const uint8_t *p, size_t n, size_t *off_r,
                        size_t *len_r);

/*
 * The value of header field name ("from", case-insensitive) in the header
 * block at msg (n bytes; stops at the first blank line), unfolded (line
 * breaks dropped), blanks trimmed, at most out_size - 1 bytes (longer is
 * cut). Returns its length, or -1 when the field is absent.
 */
long restore_header_field(const uint8_t *msg, size_t n, const char *name,
                          uint8_t *out, size_t out_size);

/*
 * An LRU of checked manifest pages holding at most max_bytes of page
 * bytes (a page larger than that is not kept). Plug &c->ops into
 * restore_manifest_open_cached.
 */
struct restore_page_lru;
struct restore_page_lru *restore_page_lru_new(size_t max_bytes);
void restore_page_lru_free(struct restore_page_lru *c); /* accepts NULL */
struct restore_page_cache *restore_page_lru_ops(struct restore_page_lru *c);
/* Hits, misses (pages that had to be fetched), and bytes held. */
void restore_page_lru_stats(const struct restore_page_lru *c, uint64_t *hits,
                            uint64_t *misses, size_t *bytes);

#endif /* RESTORE_BROWSE_H */
