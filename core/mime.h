/*
 * mime.h - where a mail message's bodies start and end, as chunk hints.
 *
 * The same attachment forwarded in another message, or a list message
 * delivered with other headers, shares bytes with a message already stored,
 * but at a different offset and after different bytes. Cutting exactly where
 * each MIME body starts and ends (chunk.h hints) makes those shared bytes
 * chunk identically, so they are stored once.
 *
 * cfr_mime_cuts scans an untrusted message: it never trusts a declared size,
 * reads nothing outside msg[0..len), allocates nothing, bounds its nesting,
 * and for malformed input returns fewer offsets (or none), never an error.
 *
 * Thread safety: pure; safe to call concurrently.
 */
#ifndef CFR_MIME_H
#define CFR_MIME_H

#include <stddef.h>
#include <stdint.h>

/* Containers (multipart, message/rfc822) nested deeper are not entered. */
#define CFR_MIME_DEPTH_MAX 16
/* Longer boundary parameters are not trusted (RFC 2046 allows 70). */
#define CFR_MIME_BOUNDARY_MAX 200

/*
 * Stores in cuts[0..n) (n returned, n <= cuts_max) the offsets, strictly
 * increasing and each in 1..len-1, where:
 *  - the top body starts (after the message's header block and its blank
 *    line), for any message whose header block is well formed;
 *  - each body part of a multipart entity, at any nesting, starts (after the
 *    part's header block) and ends (before the line break that precedes the
 *    next boundary delimiter, or at the end of the enclosing entity when the
 *    closing delimiter is missing);
 *  - the body of a message/rfc822 part starts (its embedded message is
 *    scanned like the top one).
 * Scanning stops when cuts_max offsets are stored; those are the first ones.
 * msg is borrowed.
 */
size_t cfr_mime_cuts(const uint8_t *msg, size_t len, uint64_t *cuts,
                     size_t cuts_max);

#endif /* CFR_MIME_H */
