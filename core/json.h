/*
 * json.h - JSON string literals for every JSON this project writes
 * (webhook bodies, --json reports of the programs).
 *
 * Text from outside (mailbox and file names, certificate names, error
 * messages) may hold any bytes. The output is always valid JSON in valid
 * UTF-8: quotes, backslashes and control characters are escaped, valid
 * UTF-8 sequences are kept, and each byte that is not part of one (an
 * overlong form, a surrogate, a stray continuation byte, Latin-1) becomes
 * U+FFFD. A consumer therefore never chokes on a hostile name, at the
 * price of not seeing the exact bytes of a name that is not UTF-8.
 */
#ifndef CFR_JSON_H
#define CFR_JSON_H

#include <stdio.h>

#include "buf.h" /* struct cfr_buf */
#include "err.h" /* struct cfr_err */

/* Appends s as a JSON string literal, quotes included. */
int cfr_json_quote(struct cfr_buf *b, const char *s, struct cfr_err *err);

/* Writes s as a JSON string literal to f; NULL writes null. */
void cfr_json_fput(FILE *f, const char *s);

#endif /* CFR_JSON_H */
