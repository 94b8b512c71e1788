/*
 * json.c - see json.h.
 */
#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
static size_t
utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80) {
        return 1;
    }
    size_t n;
    uint32_t cp;
    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = p[0] & 0x1fu;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = p[0] & 0x0fu;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are refused. */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}

/* Appends s as a JSON string; invalid UTF-8 becomes U+FFFD. */
int
cfr_json_quote(struct cfr_buf *b, const char *s, struct cfr_err *err)
{
    int rc;
    const unsigned char *p = (const unsigned char *)s;
    if ((rc = cfr_buf_append_u8(b, '"', err)) != 0) {
        return rc;
    }
    while (*p != '\0') {
        char esc[8];
        size_t n = utf8_len(p);
        if (n == 0) {
            rc = cfr_buf_append(b, "\\ufffd", 6, err);
            p++;
        } else if (n > 1) {
            rc = cfr_buf_append(b, p, n, err);
            p += n;
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            rc = cfr_buf_append(b, esc, 2, err);
            p++;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            esc[0] = '\\';
            esc[1] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            rc = cfr_buf_append(b, esc, 2, err);
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            rc = cfr_buf_append(b, esc, 6, err);
            p++;
        } else {
            rc = cfr_buf_append_u8(b, *p, err);
            p++;
        }
        if (rc != 0) {
            return rc;
        }
    }
    return cfr_buf_append_u8(b, '"', err);
}

void
cfr_json_fput(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    struct cfr_buf b;
    struct cfr_err err;
    /* Six bytes per input byte at most, plus the quotes. */
    size_t cap = strlen(s) * 6 + 3;
    cfr_buf_init(&b, cap);
    if (cfr_json_quote(&b, s, &err) == 0) {
        fwrite(b.data, 1, b.len, f);
    } else {
        fputs("\"\"", f); /* out of memory: still valid JSON */
    }
    cfr_buf_fini(&b);
}
