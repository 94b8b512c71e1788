/*
 * mime.c - finds MIME body starts and ends in an untrusted mail message.
 *
 * The scanner walks a message once per nesting level: a header block (RFC
 * 5322 fields, folded lines allowed, up to the first blank line), then, for
 * multipart/... with a boundary, each part between delimiter lines (RFC 2046
 * section 5.1.1), recursing into nested multiparts and message/rfc822 parts.
 * It only needs Content-Type; every other field is checked for shape and
 * skipped. It is lenient where real mail is (LF or CRLF, a missing closing
 * delimiter, unquoted boundaries with odd characters) and gives up on an
 * entity, not the message, where the shape is wrong.
 *
 * Invariants:
 *  1. Every read is inside msg[start..end) of the entity being scanned, and
 *     every entity range lies inside its parent's: nothing outside
 *     msg[0..len) is ever read. Sizes in the message are never used.
 *  2. Offsets are stored strictly increasing, each in 1..len-1, at most
 *     cuts_max of them (add_cut enforces all three). Scanning goes forward
 *     only, so what is stored is the first offsets in message order.
 *  3. Recursion is bounded by CFR_MIME_DEPTH_MAX; work is at most about
 *     (depth + 1) passes over the message. No allocation: buffers are
 *     fixed-size and on the stack.
 */
#include "mime.h"

#include <stdbool.h>
#include <string.h>

/*
 * The most of an unfolded Content-Type value we keep; a longer one is cut
 * here, and a boundary beyond the cut is not found (the entity is treated
 * as a leaf). Real values are well under 200 bytes.
 */
#define CTYPE_VALUE_MAX 1024

struct scan {
    const uint8_t *msg;
    size_t len;
    uint64_t *cuts;
    size_t n;
    size_t max;
};

enum ctype_kind {
    CTYPE_LEAF,      /* anything we do not enter */
    CTYPE_MULTIPART, /* multipart/... with a usable boundary */
    CTYPE_MESSAGE,   /* message/rfc822 or message/global */
};

struct ctype {
    enum ctype_kind kind;
    size_t blen;
    uint8_t boundary[CFR_MIME_BOUNDARY_MAX];
};

static void scan_entity(struct scan *s, size_t start, size_t end,
                        unsigned depth, bool top);

static void
add_cut(struct scan *s, size_t off)
{
    if (off == 0 || off >= s->len || s->n >= s->max) {
        return;
    }
    if (s->n > 0 && off <= s->cuts[s->n - 1]) {
        return;
    }
    s->cuts[s->n++] = off;
}

static uint8_t
lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
}

/* Case-insensitive match of p[0..n) against a lower-case literal. */
static bool
ci_equal(const uint8_t *p, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n != k) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (lower(p[i]) != (uint8_t)lit[i]) {
            return false;
        }
    }
    return true;
}

/* RFC 2045 token characters: printable ASCII but space and tspecials. */
static bool
is_token(uint8_t c)
{
    return c > 32 && c < 127 && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* Skips whitespace and (possibly nested) comments in v[*i..n). */
static void
skip_cfws(const uint8_t *v, size_t n, size_t *i)
{
    size_t p = *i;
    unsigned nest = 0;
    while (p < n) {
        uint8_t c = v[p];
        if (nest > 0) {
            if (c == '\\') {
                p++;
            } else if (c == '(') {
                nest++;
            } else if (c == ')') {
                nest--;
            }
        } else if (c == '(') {
            nest = 1;
        } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            break;
        }
        p++;
    }
    *i = p < n ? p : n;
}

static size_t
take_token(const uint8_t *v, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && is_token(v[*i])) {
        (*i)++;
    }
    return *i - start;
}

/*
 * Reads a parameter value at v[*i..n): a quoted string (escapes removed) or
 * a run of characters up to whitespace, ';', '"' or '(' (looser than a
 * token: unquoted boundaries with '=' or '?' occur in real mail). Stores up
 * to out_max bytes; returns the value's full length, so the caller can tell
 * it was too long.
 */
static size_t
take_value(const uint8_t *v, size_t n, size_t *i, uint8_t *out, size_t out_max)
{
    size_t p = *i;
    size_t len = 0;
    if (p < n && v[p] == '"') {
        p++;
        while (p < n && v[p] != '"') {
            if (v[p] == '\\' && p + 1 < n) {
                p++;
            }
            if (len < out_max) {
                out[len] = v[p];
            }
            len++;
            p++;
        }
        if (p < n) {
            p++; /* the closing quote */
        }
    } else {
        while (p < n && v[p] > 32 && v[p] < 127 && v[p] != ';' && v[p] != '"' &&
               v[p] != '(') {
            if (len < out_max) {
                out[len] = v[p];
            }
            len++;
            p++;
        }
    }
    *i = p;
    return len;
}

/* Parses an unfolded Content-Type value into ct. */
static void
parse_ctype(const uint8_t *v, size_t n, struct ctype *ct)
{
    size_t i = 0;
    ct->kind = CTYPE_LEAF;
    ct->blen = 0;

    skip_cfws(v, n, &i);
    size_t type_at = i;
    size_t type_len = take_token(v, n, &i);
    skip_cfws(v, n, &i);
    if (type_len == 0 || i >= n || v[i] != '/') {
        return;
    }
    i++;
    skip_cfws(v, n, &i);
    size_t sub_at = i;
    size_t sub_len = take_token(v, n, &i);
    if (ci_equal(v + type_at, type_len, "message") &&
        (ci_equal(v + sub_at, sub_len, "rfc822") ||
         ci_equal(v + sub_at, sub_len, "global"))) {
        ct->kind = CTYPE_MESSAGE;
        return;
    }
    if (!ci_equal(v + type_at, type_len, "multipart") || sub_len == 0) {
        return;
    }
    bool have = false;
    for (;;) {
        skip_cfws(v, n, &i);
        if (i >= n || v[i] != ';') {
            break;
        }
        i++;
        skip_cfws(v, n, &i);
        size_t name_at = i;
        size_t name_len = take_token(v, n, &i);
        skip_cfws(v, n, &i);
        if (i >= n || v[i] != '=') {
            /* A malformed parameter: resynchronise at the next ';'. */
            while (i < n && v[i] != ';') {
                i++;
            }
            continue;
        }
        i++;
        skip_cfws(v, n, &i);
        uint8_t val[CFR_MIME_BOUNDARY_MAX];
        size_t vlen = take_value(v, n, &i, val, sizeof(val));
        if (!have && ci_equal(v + name_at, name_len, "boundary")) {
            /* The first boundary counts; an unusable one disables it. */
            have = true;
            if (vlen > 0 && vlen <= sizeof(ct->boundary)) {
                memcpy(ct->boundary, val, vlen);
                ct->blen = vlen;
            }
        }
    }
    if (ct->blen > 0) {
        ct->kind = CTYPE_MULTIPART;
    }
}

/*
 * Reads the header block at msg[start..end). Returns true with *body_r at
 * the first byte after the blank line that ends it, or false when the block
 * is malformed or has no blank line before end. top allows an mbox "From "
 * line first.
 */
static bool
parse_headers(const struct scan *s, size_t start, size_t end, bool top,
              size_t *body_r, struct ctype *ct)
{
    const uint8_t *m = s->msg;
    uint8_t val[CTYPE_VALUE_MAX];
    size_t vlen = 0;
    bool in_ct = false;
    bool seen_ct = false;
    bool first = true;
    bool ok = false;
    size_t p = start;

    ct->kind = CTYPE_LEAF;
    ct->blen = 0;
    while (p < end) {
        const uint8_t *nl = memchr(m + p, '\n', end - p);
        if (nl == NULL) {
            break; /* truncated: no blank line */
        }
        size_t next = (size_t)(nl - m) + 1;
        size_t e = next - 1;
        if (e > p && m[e - 1] == '\r') {
            e--;
        }
        if (e == p) {
            *body_r = next;
            ok = true;
            break;
        }
        if (m[p] == ' ' || m[p] == '\t') {
            if (first) {
                break;
            }
            if (in_ct) {
                size_t k = e - p;
                if (k > sizeof(val) - vlen) {
                    k = sizeof(val) - vlen;
                }
                memcpy(val + vlen, m + p, k);
                vlen += k;
            }
        } else {
            size_t q = p;
            while (q < e && m[q] > 32 && m[q] < 127 && m[q] != ':') {
                q++;
            }
            size_t name_end = q;
            while (q < e && (m[q] == ' ' || m[q] == '\t')) {
                q++;
            }
            if (q < e && m[q] == ':' && name_end > p) {
                in_ct = false;
                if (!seen_ct && ci_equal(m + p, name_end - p, "content-type")) {
                    in_ct = true;
                    seen_ct = true;
                    size_t k = e - (q + 1);
                    if (k > sizeof(val)) {
                        k = sizeof(val);
                    }
                    memcpy(val, m + q + 1, k);
                    vlen = k;
                }
            } else if (top && first && e - p >= 5 &&
                       memcmp(m + p, "From ", 5) == 0) {
                in_ct = false;
            } else {
                break; /* not a header field: not a header block */
            }
        }
        first = false;
        p = next;
    }
    if (ok && seen_ct) {
        parse_ctype(val, vlen, ct);
    }
    return ok;
}

/*
 * Is msg[q..end) a delimiter line for ct's boundary? Sets *close_r for the
 * closing one and *after_r to the first byte after the line.
 */
static bool
is_delim(const struct scan *s, size_t q, size_t end, const struct ctype *ct,
         bool *close_r, size_t *after_r)
{
    const uint8_t *m = s->msg;
    size_t need = 2 + ct->blen;
    if (end - q < need || m[q] != '-' || m[q + 1] != '-' ||
        memcmp(m + q + 2, ct->boundary, ct->blen) != 0) {
        return false;
    }
    size_t r = q + need;
    bool close = false;
    if (end - r >= 2 && m[r] == '-' && m[r + 1] == '-') {
        close = true;
        r += 2;
    }
    /* Transport padding may follow; anything else means a longer word. */
    while (r < end && (m[r] == ' ' || m[r] == '\t')) {
        r++;
    }
    if (r < end && m[r] == '\r') {
        r++;
    }
    if (r < end && m[r] != '\n') {
        return false;
    }
    *close_r = close;
    *after_r = r < end ? r + 1 : end;
    return true;
}

/* The first delimiter line starting at a line start in [from, end). */
static size_t
find_delim(const struct scan *s, size_t from, size_t end,
           const struct ctype *ct, bool *close_r, size_t *after_r)
{
    size_t q = from;
    while (q < end) {
        if (is_delim(s, q, end, ct, close_r, after_r)) {
            return q;
        }
        const uint8_t *nl = memchr(s->msg + q, '\n', end - q);
        if (nl == NULL) {
            break;
        }
        q = (size_t)(nl - s->msg) + 1;
    }
    return SIZE_MAX;
}

/* Walks the parts of a multipart body at msg[body..end). */
static void
scan_multipart(struct scan *s, size_t body, size_t end, const struct ctype *ct,
               unsigned depth)
{
    bool close = false;
    size_t after = 0;
    size_t q = find_delim(s, body, end, ct, &close, &after);
    while (q != SIZE_MAX && !close && s->n < s->max) {
        size_t part = after;
        size_t next = find_delim(s, part, end, ct, &close, &after);
        size_t part_end = end;
        if (next != SIZE_MAX) {
            /* The line break before a delimiter belongs to the delimiter. */
            part_end = next;
            if (part_end > part && s->msg[part_end - 1] == '\n') {
                part_end--;
                if (part_end > part && s->msg[part_end - 1] == '\r') {
                    part_end--;
                }
            }
        }
        scan_entity(s, part, part_end, depth, false);
        add_cut(s, part_end);
        q = next;
    }
}

static void
scan_entity(struct scan *s, size_t start, size_t end, unsigned depth, bool top)
{
    struct ctype ct;
    size_t body = 0;
    if (s->n >= s->max || !parse_headers(s, start, end, top, &body, &ct)) {
        return;
    }
    add_cut(s, body);
    if (depth >= CFR_MIME_DEPTH_MAX) {
        return;
    }
    if (ct.kind == CTYPE_MULTIPART) {
        scan_multipart(s, body, end, &ct, depth + 1);
    } else if (ct.kind == CTYPE_MESSAGE) {
        scan_entity(s, body, end, depth + 1, false);
    }
}

size_t
cfr_mime_cuts(const uint8_t *msg, size_t len, uint64_t *cuts, size_t cuts_max)
{
    struct scan s = {
        .msg = msg, .len = len, .cuts = cuts, .n = 0, .max = cuts_max};
    if (msg != NULL && len > 0 && cuts_max > 0) {
        scan_entity(&s, 0, len, 0, true);
    }
    return s.n;
}
