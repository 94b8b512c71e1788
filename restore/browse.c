/*
 * browse.c - `ls` and `find` (browse.h): reading manifests and message
 * headers without restoring anything.
 *
 * Invariants:
 *  1. Nothing unchecked is shown: manifest pages come through the checked
 *     walk (manifest.h; cached pages were checked when first fetched),
 *     header blocks from chunks opened and re-hashed against their IDs.
 *  2. Every byte that came from a snapshot reaches a terminal only
 *     through restore_safe_text and JSON only through json_bytes: a
 *     hostile name can neither inject escape sequences nor break the
 *     document.
 *  3. With --json exactly one document is printed, also when a walk
 *     fails half-way (the array is closed and "ok":false follows).
 *  4. Memory is bounded by the page cache (find), one manifest page per
 *     level, one opened chunk (--headers) and what is printed: folders of
 *     one snapshot (ls --mailbox) or the hits of one Message-ID (find).
 */
#include "browse.h"

#include <inttypes.h> /* PRIu64 */
#include <stdio.h>    /* printf */
#include <stdlib.h>   /* qsort */
#include <string.h>   /* memcmp, strcmp */
#include <strings.h>  /* strncasecmp */

#include "buf.h"      /* cfr_hex_encode */
#include "clock.h"    /* cfr_clock_now_ms */
#include "commands.h" /* restore_cmd_ls, restore_cmd_find */
#include "env.h"      /* cfr_opener, cfr_env_open */
#include "mem.h"      /* cfr_malloc */
#include "select.h"   /* restore_parse_at, restore_pick_snapshot */
#include "session.h"  /* restore_session, exit codes */

#define ID_LEN 32
/* Object kinds of coffer_vault.proto, as manifest.c names them. */
#define KIND_SEALED 1
/* Display widths: names longer than these are cut with "...". */
#define NAME_SHOW 256
#define HDR_SHOW  200

/* ---- safe text ------------------------------------------------------------
 */

/* Length of the valid UTF-8 sequence at p (its code point in *cp_r), or
 * 0: invalid, overlong, a surrogate or past U+10FFFF. */
static size_t
utf8_decode(const uint8_t *p, size_t n, uint32_t *cp_r)
{
    size_t k;
    uint32_t cp;
    if (p[0] < 0x80) {
        *cp_r = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        k = 2;
        cp = p[0] & 0x1fu;
    } else if ((p[0] & 0xf0) == 0xe0) {
        k = 3;
        cp = p[0] & 0x0fu;
    } else if ((p[0] & 0xf8) == 0xf0) {
        k = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    if (k > n) {
        return 0;
    }
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) ||
        (k == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    *cp_r = cp;
    return k;
}

/* Characters a terminal acts on instead of showing: C0 and C1 controls,
 * DEL, and the bidi controls and separators that reorder or break what
 * follows on screen. */
static bool
cp_unsafe(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0x2028 || cp == 0x2029;
}

/* Length of the sequence at p when a terminal shows it as text, else 0. */
static size_t
utf8_printable(const uint8_t *p, size_t n)
{
    uint32_t cp = 0;
    size_t k = utf8_decode(p, n, &cp);
    return k > 0 && !cp_unsafe(cp) ? k : 0;
}

const char *
restore_safe_text(const uint8_t *p, size_t n, char *out, size_t out_size)
{
    size_t o = 0, cut = 0, i = 0;
    bool truncated = false;

    if (out_size == 0) {
        return out;
    }
    while (i < n) {
        char esc[8];
        const char *src = esc;
        size_t k = utf8_printable(p + i, n - i), w;
        if (k == 1 && p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = '\\';
            w = 2;
        } else if (k > 0) {
            src = (const char *)p + i;
            w = k;
        } else {
            snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
            w = 4;
            k = 1;
        }
        if (o + w > out_size - 1) {
            truncated = true;
            break;
        }
        memcpy(out + o, src, w);
        o += w;
        i += k;
        if (o + 3 <= out_size - 1) {
            cut = o;
        }
    }
    if (truncated) {
        o = cut;
        if (o + 3 <= out_size - 1) {
            memcpy(out + o, "...", 3);
            o += 3;
        }
    }
    out[o] = '\0';
    return out;
}

static const char *
safe_str(const char *s, char *out, size_t out_size)
{
    return restore_safe_text((const uint8_t *)s, strlen(s), out, out_size);
}

/* s (safe text) padded with blanks to width columns: printf's %-32s
 * counts bytes, which misaligns a table at the first UTF-8 name. */
#define PAD_MAX (NAME_SHOW + 64)
static const char *
padded(const char *s, size_t width, char out[PAD_MAX])
{
    size_t n = 0, cols = 0;
    while (s[n] != '\0' && n < PAD_MAX - 1) {
        out[n] = s[n];
        cols += ((unsigned char)s[n] & 0xc0) != 0x80;
        n++;
    }
    while (cols < width && n < PAD_MAX - 1) {
        out[n++] = ' ';
        cols++;
    }
    out[n] = '\0';
    return out;
}

/* A JSON string of n bytes, faithful and terminal-safe: controls (C0,
 * C1, bidi) as \\u escapes, bytes that are not UTF-8 as U+FFFD. */
static void
json_bytes(FILE *o, const uint8_t *p, size_t n)
{
    fputc('"', o);
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (k == 0) {
            fputs("\\ufffd", o);
            i++;
            continue;
        }
        if (cp == '"' || cp == '\\') {
            fprintf(o, "\\%c", (char)cp);
        } else if (cp == '\n') {
            fputs("\\n", o);
        } else if (cp == '\r') {
            fputs("\\r", o);
        } else if (cp == '\t') {
            fputs("\\t", o);
        } else if (cp_unsafe(cp)) {
            fprintf(o, "\\u%04x", (unsigned)cp);
        } else {
            fwrite(p + i, 1, k, o);
        }
        i += k;
    }
    fputc('"', o);
}

static void
json_str(FILE *o, const char *s)
{
    json_bytes(o, (const uint8_t *)s, strlen(s));
}

/* ---- folder names, flags, Message-IDs, headers -------------------------- */

static int
put_bytes(char *out, size_t out_size, size_t *at, const void *p, size_t n)
{
    if (*at + n + 1 > out_size) {
        return CFR_ELIMIT;
    }
    memcpy(out + *at, p, n);
    *at += n;
    out[*at] = '\0';
    return 0;
}

static int
put_utf8(char *out, size_t out_size, size_t *at, uint32_t cp)
{
    uint8_t b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xe0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xf0 | (cp >> 18));
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return put_bytes(out, out_size, at, b, n);
}

static int
b64_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : c == ',' ? 63 : -1;
}

/* Modified UTF-7 (RFC 3501 5.1.3) with '.' as the hierarchy separator;
 * CFR_EINVAL for a malformed name, CFR_ELIMIT when out is full. */
static int
mutf7_decode(const uint8_t *p, size_t n, char *out, size_t out_size)
{
    size_t at = 0, i = 0;
    int rc;
    out[0] = '\0';
    while (i < n) {
        uint32_t bits = 0, hi = 0;
        int nbits = 0;
        size_t j;
        if (p[i] != '&') {
            if (p[i] < 0x20 || p[i] >= 0x7f) {
                return CFR_EINVAL; /* mUTF-7 is printable ASCII only */
            }
            rc = put_bytes(
                out, out_size, &at,
                p[i] == '.' ? (const void *)"/" : (const void *)&p[i], 1);
            if (rc != 0) {
                return rc;
            }
            i++;
            continue;
        }
        if (i + 1 < n && p[i + 1] == '-') {
            if ((rc = put_bytes(out, out_size, &at, "&", 1)) != 0) {
                return rc;
            }
            i += 2;
            continue;
        }
        for (j = i + 1; j < n && p[j] != '-'; j++) {
            int v = b64_value(p[j]);
            if (v < 0) {
                return CFR_EINVAL;
            }
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            if (nbits >= 16) {
                uint32_t u = (bits >> (nbits - 16)) & 0xffffu;
                nbits -= 16;
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (hi != 0) {
                        return CFR_EINVAL;
                    }
                    hi = u;
                    continue;
                }
                if (u >= 0xdc00 && u <= 0xdfff) {
                    if (hi == 0) {
                        return CFR_EINVAL;
                    }
                    u = 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00);
                    hi = 0;
                } else if (hi != 0) {
                    return CFR_EINVAL;
                }
                if ((rc = put_utf8(out, out_size, &at, u)) != 0) {
                    return rc;
                }
            }
        }
        /* Unterminated, a dangling surrogate, or non-zero padding. */
        if (j >= n || j == i + 1 || hi != 0 || nbits >= 6 ||
            (bits & ((1u << nbits) - 1)) != 0) {
            return CFR_EINVAL;
        }
        i = j + 1;
    }
    return 0;
}

int
restore_folder_imap(const uint8_t *folder, size_t n, char *out, size_t out_size)
{
    size_t at = 0;
    int rc;
    if (out_size == 0) {
        return CFR_ELIMIT;
    }
    out[0] = '\0';
    if (n == 0) {
        return put_bytes(out, out_size, &at, "INBOX", 5);
    }
    if (folder[0] == '.') {
        folder++;
        n--;
    }
    rc = mutf7_decode(folder, n, out, out_size);
    if (rc == CFR_EINVAL) {
        at = 0;
        out[0] = '\0';
        rc = put_bytes(out, out_size, &at, folder, n);
    }
    return rc;
}

/* The Maildir flag letters (the info after ":2,"), in the order the
 * listings name them. */
static const struct {
    unsigned bit;
    uint8_t letter;
    const char *name;
} maildir_flags[] = {
    {RESTORE_FLAG_SEEN, 'S', "Seen"},
    {RESTORE_FLAG_ANSWERED, 'R', "Answered"},
    {RESTORE_FLAG_FLAGGED, 'F', "Flagged"},
    {RESTORE_FLAG_DELETED, 'T', "Deleted"},
    {RESTORE_FLAG_DRAFT, 'D', "Draft"},
    {RESTORE_FLAG_PASSED, 'P', "Passed"},
};
#define N_MAILDIR_FLAGS (sizeof(maildir_flags) / sizeof(maildir_flags[0]))

void
restore_flags_decode(const uint8_t *info, size_t n, struct restore_flags *fl)
{
    bool kw[26] = {false};
    size_t k = 0;
    memset(fl, 0, sizeof(*fl));
    if (n < 3 || memcmp(info, ":2,", 3) != 0) {
        return;
    }
    fl->maildir2 = true;
    for (size_t i = 3; i < n; i++) {
        size_t f = 0;
        while (f < N_MAILDIR_FLAGS && maildir_flags[f].letter != info[i]) {
            f++;
        }
        if (f < N_MAILDIR_FLAGS) {
            fl->bits |= maildir_flags[f].bit;
        } else if (info[i] >= 'a' && info[i] <= 'z') {
            kw[info[i] - 'a'] = true;
        } else {
            fl->unknown++;
        }
    }
    for (int c = 0; c < 26; c++) {
        if (kw[c]) {
            fl->keywords[k++] = (char)('a' + c);
        }
    }
    fl->keywords[k] = '\0';
}

const char *
restore_flags_text(const struct restore_flags *fl, char *out, size_t out_size)
{
    size_t at = 0;
    if (out_size == 0) {
        return out;
    }
    out[0] = '\0';
    for (size_t i = 0; i < N_MAILDIR_FLAGS; i++) {
        if (fl->bits & maildir_flags[i].bit) {
            int w = snprintf(out + at, out_size - at, "%s%s", at > 0 ? "," : "",
                             maildir_flags[i].name);
            if (w < 0 || (size_t)w >= out_size - at) {
                out[at] = '\0'; /* cut after the last whole word */
                if (at == 0) {
                    snprintf(out, out_size, "-");
                }
                return out;
            }
            at += (size_t)w;
        }
    }
    if (fl->keywords[0] != '\0') {
        int w = snprintf(out + at, out_size - at, "%skw:%s", at > 0 ? "," : "",
                         fl->keywords);
        if (w > 0 && (size_t)w < out_size - at) {
            at += (size_t)w;
        } else {
            out[at] = '\0';
        }
    }
    if (at == 0) {
        snprintf(out, out_size, "-");
    }
    return out;
}

static bool
is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void
restore_msgid_core(const uint8_t *p, size_t n, size_t *off_r, size_t *len_r)
{
    size_t a = 0, z = n;
    while (a < z && is_blank(p[a])) {
        a++;
    }
    while (z > a && is_blank(p[z - 1])) {
        z--;
    }
    if (z - a >= 2 && p[a] == '<' && p[z - 1] == '>') {
        a++;
        z--;
        while (a < z && is_blank(p[a])) {
            a++;
        }
        while (z > a && is_blank(p[z - 1])) {
            z--;
        }
    }
    *off_r = a;
    *len_r = z - a;
}

long
restore_header_field(const uint8_t *msg, size_t n, const char *name,
                     uint8_t *out, size_t out_size)
{
    size_t nl = strlen(name), i = 0;
    while (i < n) {
        const uint8_t *eol = memchr(msg + i, '\n', n - i);
        size_t end = eol != NULL ? (size_t)(eol - msg) : n;
        size_t ll = end - i, a, o = 0;
        if (ll == 0 || (ll == 1 && msg[i] == '\r')) {
            return -1; /* the blank line: end of the header block */
        }
        a = i + nl;
        if (ll > nl && strncasecmp((const char *)msg + i, name, nl) == 0) {
            while (a < end && (msg[a] == ' ' || msg[a] == '\t')) {
                a++;
            }
        }
        if (ll > nl && strncasecmp((const char *)msg + i, name, nl) == 0 &&
            a < end && msg[a] == ':') {
            size_t z = end;
            a++;
            /* A folded value goes on over lines starting with a blank. */
            while (z + 1 < n && (msg[z + 1] == ' ' || msg[z + 1] == '\t')) {
                const uint8_t *nx = memchr(msg + z + 1, '\n', n - z - 1);
                z = nx != NULL ? (size_t)(nx - msg) : n;
            }
            while (a < z && is_blank(msg[a])) {
                a++;
            }
            while (z > a && is_blank(msg[z - 1])) {
                z--;
            }
            for (size_t k = a; k < z && o + 1 < out_size; k++) {
                if (msg[k] != '\r' && msg[k] != '\n') {
                    out[o++] = msg[k];
                }
            }
            if (out_size > 0) {
                out[o] = '\0';
            }
            return (long)o;
        }
        if (eol == NULL) {
            break;
        }
        i = end + 1;
    }
    return -1;
}

/* ---- the page cache --------------------------------------------------- */

#define LRU_BUCKETS 4096u

struct lru_ent {
    uint8_t id[ID_LEN];
    uint8_t *data;
    size_t len;
    struct lru_ent *hnext;       /* bucket chain */
    struct lru_ent *prev, *next; /* recency: head is the newest */
};

struct restore_page_lru {
    struct restore_page_cache ops; /* first: ops converts back */
    struct lru_ent *buckets[LRU_BUCKETS];
    struct lru_ent *head, *tail;
    size_t max, bytes;
    uint64_t hits, misses;
};

static unsigned
lru_bucket(const uint8_t id[ID_LEN])
{
    /* IDs are keyed hashes: any of their bytes are uniform. */
    return ((unsigned)id[0] | (unsigned)id[1] << 8) % LRU_BUCKETS;
}

static struct lru_ent *
lru_find(struct restore_page_lru *c, const uint8_t id[ID_LEN])
{
    for (struct lru_ent *e = c->buckets[lru_bucket(id)]; e != NULL;
         e = e->hnext) {
        if (memcmp(e->id, id, ID_LEN) == 0) {
            return e;
        }
    }
    return NULL;
}

static void
lru_unlink(struct restore_page_lru *c, struct lru_ent *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        c->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        c->tail = e->prev;
    }
    e->prev = e->next = NULL;
}

static void
lru_push_head(struct restore_page_lru *c, struct lru_ent *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL) {
        c->head->prev = e;
    }
    c->head = e;
    if (c->tail == NULL) {
        c->tail = e;
    }
}

static void
lru_evict(struct restore_page_lru *c, struct lru_ent *e)
{
    struct lru_ent **pp = &c->buckets[lru_bucket(e->id)];
    while (*pp != e) {
        pp = &(*pp)->hnext;
    }
    *pp = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->len;
    cfr_free(e->data);
    cfr_free(e);
}

static int
lru_get(struct restore_page_cache *ops, const uint8_t id[ID_LEN],
        struct cfr_buf *page)
{
    struct restore_page_lru *c = (struct restore_page_lru *)ops;
    struct lru_ent *e = lru_find(c, id);
    if (e == NULL || cfr_buf_append(page, e->data, e->len, NULL) != 0) {
        cfr_buf_reset(page);
        c->misses++;
        return 0;
    }
    lru_unlink(c, e);
    lru_push_head(c, e);
    c->hits++;
    return 1;
}

static void
lru_put(struct restore_page_cache *ops, const uint8_t id[ID_LEN],
        const uint8_t *p, size_t len)
{
    struct restore_page_lru *c = (struct restore_page_lru *)ops;
    struct lru_ent *e;
    unsigned b;
    if (len > c->max || lru_find(c, id) != NULL) {
        return;
    }
    while (c->tail != NULL && c->bytes + len > c->max) {
        lru_evict(c, c->tail);
    }
    if ((e = cfr_calloc(1, sizeof(*e))) == NULL ||
        (e->data = cfr_malloc(len + 1)) == NULL) {
        cfr_free(e);
        return; /* a cache that cannot grow only costs fetches */
    }
    memcpy(e->id, id, ID_LEN);
    if (len > 0) {
        memcpy(e->data, p, len);
    }
    e->len = len;
    b = lru_bucket(id);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push_head(c, e);
    c->bytes += len;
}

struct restore_page_lru *
restore_page_lru_new(size_t max_bytes)
{
    struct restore_page_lru *c = cfr_calloc(1, sizeof(*c));
    if (c != NULL) {
        c->ops.get = lru_get;
        c->ops.put = lru_put;
        c->max = max_bytes;
    }
    return c;
}

void
restore_page_lru_free(struct restore_page_lru *c)
{
    if (c == NULL) {
        return;
    }
    while (c->tail != NULL) {
        lru_evict(c, c->tail);
    }
    cfr_free(c);
}

struct restore_page_cache *
restore_page_lru_ops(struct restore_page_lru *c)
{
    return &c->ops;
}

void
restore_page_lru_stats(const struct restore_page_lru *c, uint64_t *hits,
                       uint64_t *misses, size_t *bytes)
{
    *hits = c->hits;
    *misses = c->misses;
    *bytes = c->bytes;
}

/* ---- shared by the commands -------------------------------------------- */

/* An entry's folder and name (key = folder "\0" name); false when the key
 * has no separator (the walk would have refused it: belt and braces). */
static bool
split_key(const struct cfr_snap_entry *e, const uint8_t **folder,
          size_t *folder_len, const uint8_t **name, size_t *name_len)
{
    const uint8_t *sep = memchr(e->key, '\0', e->key_len);
    if (sep == NULL) {
        return false;
    }
    *folder = e->key;
    *folder_len = (size_t)(sep - e->key);
    *name = sep + 1;
    *name_len = e->key_len - *folder_len - 1;
    return true;
}

/* Why a walk failed, as a failure kind. */
static enum restore_failure
walk_failure(const struct restore_manifest *m, int rc)
{
    if (rc == CFR_ENOMEM) {
        return RESTORE_F_OTHER;
    }
    if (m == NULL) {
        return rc == CFR_ECORRUPT || rc == CFR_EAUTH || rc == CFR_EVERSION
                   ? RESTORE_F_VERIFY
                   : RESTORE_F_VAULT;
    }
    return restore_manifest_damaged(m, rc) ? RESTORE_F_VERIFY : RESTORE_F_VAULT;
}

static enum restore_failure
list_failure(int rc)
{
    return rc == CFR_ENOMEM                           ? RESTORE_F_OTHER
           : rc == CFR_ECORRUPT || rc == CFR_EVERSION ? RESTORE_F_VERIFY
                                                      : RESTORE_F_VAULT;
}

/* The JSON tail of a failed command: "ok":false and the error. */
static void
json_fail_tail(enum restore_failure kind, const struct cfr_err *err)
{
    printf(",\"ok\":false,\"error\":");
    restore_json_error(stdout, kind, err);
    printf("}\n");
}

static void
json_fail_doc(enum restore_failure kind, const struct cfr_err *err)
{
    printf("{\"ok\":false,\"error\":");
    restore_json_error(stdout, kind, err);
    printf("}\n");
}

static void
print_snapshot_line(const struct restore_snapshot *p)
{
    char hex[2 * ID_LEN + 1], when[32], qm[NAME_SHOW], qh[NAME_SHOW];
    printf("mailbox %s  snapshot %.16s  received %s  host %s\n",
           safe_str(p->h.mailbox, qm, sizeof(qm)),
           cfr_hex_encode(p->header_id, ID_LEN, hex),
           restore_iso_time(p->received_ms, when),
           safe_str(p->h.host, qh, sizeof(qh)));
}

static void
json_snapshot_fields(const struct restore_snapshot *p)
{
    char hex[2 * ID_LEN + 1], when[32];
    printf("\"mailbox\":");
    json_str(stdout, p->h.mailbox);
    printf(",\"snapshot\":\"%s\",\"received_ms\":%" PRId64
           ",\"received\":\"%s\",\"host\":",
           cfr_hex_encode(p->header_id, ID_LEN, hex), p->received_ms,
           restore_iso_time(p->received_ms, when));
    json_str(stdout, p->h.host);
}

/* ---- ls: the tenant's mailboxes ------------------------------------------ */

static int
snap_by_name(const void *a, const void *b)
{
    const struct restore_snapshot *x =
        *(const struct restore_snapshot *const *)a;
    const struct restore_snapshot *y =
        *(const struct restore_snapshot *const *)b;
    int c = strcmp(x->h.mailbox, y->h.mailbox);
    if (c != 0) {
        return c;
    }
    return x->received_ms > y->received_ms   ? -1
           : x->received_ms < y->received_ms ? 1
                                             : 0;
}

static int
ls_mailboxes(struct restore_session *s, bool json, struct cfr_err *err)
{
    struct restore_snapshot *v = NULL;
    const struct restore_snapshot **ok = NULL;
    size_t n = 0, n_ok = 0, bad = 0, groups = 0;
    int rc;

    if ((rc = restore_list(s->f, s->kr, NULL, &v, &n, err)) != 0) {
        enum restore_failure k = list_failure(rc);
        if (json) {
            json_fail_doc(k, err);
        }
        return restore_exit_for_failure(k);
    }
    if ((ok = cfr_calloc(n + 1, sizeof(const struct restore_snapshot *))) ==
        NULL) {
        cfr_free(v);
        CFR_ERR(err, CFR_ENOMEM, "ls: out of memory");
        if (json) {
            json_fail_doc(RESTORE_F_OTHER, err);
        }
        return RESTORE_EXIT_OTHER;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].open_rc == 0) {
            ok[n_ok++] = &v[i];
        } else {
            bad++;
        }
    }
    qsort(ok, n_ok, sizeof(const struct restore_snapshot *), snap_by_name);
    if (json) {
        printf("{\"tenant\":");
        json_str(stdout, s->cfg.tenant);
        printf(",\"vault\":");
        json_str(stdout, restore_fetcher_current(s->f));
        printf(",\"mailboxes\":[");
    } else {
        printf("%-32s %9s %-24s %-24s %-20s %8s %12s %s\n", "MAILBOX",
               "SNAPSHOTS", "NEWEST (UTC)", "OLDEST (UTC)", "HOST", "FILES",
               "BYTES", "MARKS");
    }
    for (size_t i = 0; i < n_ok;) {
        const struct restore_snapshot *newest = ok[i], *oldest;
        size_t j = i, held = 0, mass = 0;
        char t1[32], t2[32], hex[2 * ID_LEN + 1];
        while (j < n_ok && strcmp(ok[j]->h.mailbox, newest->h.mailbox) == 0) {
            held += ok[j]->held;
            mass += (ok[j]->flags & 1u) != 0;
            j++;
        }
        oldest = ok[j - 1];
        restore_iso_time(newest->received_ms, t1);
        restore_iso_time(oldest->received_ms, t2);
        if (json) {
            printf("%s{\"mailbox\":", groups > 0 ? "," : "");
            json_str(stdout, newest->h.mailbox);
            printf(",\"snapshots\":%zu,\"newest\":\"%s\",\"newest_ms\":%" PRId64
                   ",\"oldest\":\"%s\",\"oldest_ms\":%" PRId64
                   ",\"newest_snapshot\":\"%s\",\"host\":",
                   j - i, t1, newest->received_ms, t2, oldest->received_ms,
                   cfr_hex_encode(newest->header_id, ID_LEN, hex));
            json_str(stdout, newest->h.host);
            printf(",\"files\":%" PRIu64 ",\"bytes\":%" PRIu64
                   ",\"held\":%zu,\"mass_deletion\":%zu}",
                   newest->h.manifest.entries, newest->h.total_bytes, held,
                   mass);
        } else {
            char qm[NAME_SHOW], qh[NAME_SHOW], marks[64];
            int w = 0;
            marks[0] = '\0';
            if (held > 0) {
                w = snprintf(marks, sizeof(marks), "held:%zu", held);
            }
            if (mass > 0 && w >= 0 && (size_t)w < sizeof(marks)) {
                snprintf(marks + w, sizeof(marks) - (size_t)w,
                         "%smass-deletion:%zu", w > 0 ? " " : "", mass);
            }
            char p1[PAD_MAX], p2[PAD_MAX];
            printf("%s %9zu %-24s %-24s %s %8" PRIu64 " %12" PRIu64 " %s\n",
                   padded(safe_str(newest->h.mailbox, qm, sizeof(qm)), 32, p1),
                   j - i, t1, t2,
                   padded(safe_str(newest->h.host, qh, sizeof(qh)), 20, p2),
                   newest->h.manifest.entries, newest->h.total_bytes,
                   marks[0] != '\0' ? marks : "-");
        }
        groups++;
        i = j;
    }
    if (json) {
        printf("],\"unreadable\":%zu,\"ok\":%s}\n", bad,
               bad == 0 ? "true" : "false");
    } else if (bad > 0) {
        printf("(%zu snapshot(s) do not open with this key)\n", bad);
    }
    cfr_free(ok);
    cfr_free(v);
    if (bad > 0) {
        CFR_ERR(err, CFR_EAUTH,
                "%zu snapshot header(s) do not open with this key (wrong "
                "key, or damaged or forged)",
                bad);
        return RESTORE_EXIT_VERIFY;
    }
    return RESTORE_EXIT_OK;
}

/* ---- ls --mailbox: the folders of one snapshot -----------------------------
 */

struct folder_sum {
    uint8_t *name; /* Maildir++ name, owned */
    size_t len;
    uint64_t messages, message_bytes, in_new, unseen;
    uint64_t others, other_bytes;
};

struct ls_opts {
    const char *mailbox, *snapshot, *folder, *at;
    int64_t at_ms;
    bool headers, json;
};

/* Does the requested --folder name this Maildir++ folder? Either name
 * works: ".Lists.dev", "Lists.dev", "Lists/dev" (the IMAP form), and
 * "INBOX" or "" for the top. */
static bool
folder_matches(const char *want, const uint8_t *f, size_t n)
{
    char imap[2 * CFR_SNAP_KEY_MAX + 8];
    size_t wl = strlen(want);
    if (n == 0) {
        return wl == 0 || strcmp(want, "INBOX") == 0;
    }
    if ((wl == n && memcmp(want, f, n) == 0) ||
        (wl + 1 == n && memcmp(want, f + 1, wl) == 0)) {
        return true;
    }
    return restore_folder_imap(f, n, imap, sizeof(imap)) == 0 &&
           strcmp(imap, want) == 0;
}

static int
walk_open(struct restore_session *s, const struct restore_snapshot *snap,
          struct restore_page_cache *cache, struct restore_manifest **m_r,
          enum restore_failure *kind, struct cfr_err *err)
{
    int rc =
        restore_manifest_open_cached(s->f, s->kr, &snap->h, cache, m_r, err);
    if (rc != 0) {
        *kind = walk_failure(NULL, rc);
    }
    return rc;
}

static int
ls_folders(struct restore_session *s, const struct restore_snapshot *snap,
           bool json, enum restore_failure *kind, struct cfr_err *err)
{
    struct restore_manifest *m = NULL;
    struct folder_sum *fs = NULL;
    size_t n = 0, cap = 0;
    uint64_t files = 0;
    struct cfr_snap_entry e;
    int rc;

    if ((rc = walk_open(s, snap, NULL, &m, kind, err)) != 0) {
        goto out;
    }
    while ((rc = restore_manifest_next(m, &e, err)) == 1) {
        const uint8_t *folder, *name;
        size_t fl, nl;
        struct folder_sum *f;
        if (!split_key(&e, &folder, &fl, &name, &nl)) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "manifest key without a folder");
            *kind = RESTORE_F_VERIFY;
            goto out;
        }
        /* Keys are sorted: a folder's entries are contiguous. */
        if (n == 0 || fs[n - 1].len != fl ||
            memcmp(fs[n - 1].name, folder, fl) != 0) {
            if (n == cap) {
                size_t nc = cap == 0 ? 16 : 2 * cap;
                struct folder_sum *g = cfr_calloc(nc, sizeof(*g));
                if (g == NULL) {
                    rc = CFR_ERR(err, CFR_ENOMEM, "ls: out of memory");
                    *kind = RESTORE_F_OTHER;
                    goto out;
                }
                if (n > 0) {
                    memcpy(g, fs, n * sizeof(*g));
                }
                cfr_free(fs);
                fs = g;
                cap = nc;
            }
            if ((fs[n].name = cfr_malloc(fl + 1)) == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "ls: out of memory");
                *kind = RESTORE_F_OTHER;
                goto out;
            }
            if (fl > 0) {
                memcpy(fs[n].name, folder, fl);
            }
            fs[n].len = fl;
            n++;
        }
        f = &fs[n - 1];
        files++;
        if (e.kind == CFR_SNAP_MAILDIR_MESSAGE) {
            struct restore_flags flg;
            restore_flags_decode(e.info, e.info_len, &flg);
            f->messages++;
            f->message_bytes += e.size;
            f->in_new += e.in_new;
            f->unseen += (flg.bits & RESTORE_FLAG_SEEN) == 0;
        } else {
            f->others++;
            f->other_bytes += e.size;
        }
    }
    if (rc < 0) {
        *kind = walk_failure(m, rc);
        goto out;
    }
    rc = 0;
    if (json) {
        printf("{");
        json_snapshot_fields(snap);
        printf(",\"files\":%" PRIu64 ",\"folders\":[", files);
    } else {
        print_snapshot_line(snap);
        printf("%-32s %-32s %9s %12s %6s %7s %11s\n", "FOLDER", "MAILDIR",
               "MESSAGES", "BYTES", "NEW", "UNSEEN", "OTHER FILES");
    }
    for (size_t i = 0; i < n; i++) {
        const struct folder_sum *f = &fs[i];
        char imap[2 * CFR_SNAP_KEY_MAX + 8];
        if (restore_folder_imap(f->name, f->len, imap, sizeof(imap)) != 0) {
            imap[0] = '\0';
        }
        if (json) {
            printf("%s{\"folder\":", i > 0 ? "," : "");
            json_bytes(stdout, f->name, f->len);
            printf(",\"imap\":");
            json_str(stdout, imap);
            printf(",\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64
                   ",\"new\":%" PRIu64 ",\"unseen\":%" PRIu64
                   ",\"other_files\":%" PRIu64 ",\"other_bytes\":%" PRIu64 "}",
                   f->messages, f->message_bytes, f->in_new, f->unseen,
                   f->others, f->other_bytes);
        } else {
            char q1[NAME_SHOW], q2[NAME_SHOW], p1[PAD_MAX], p2[PAD_MAX];
            printf("%s %s %9" PRIu64 " %12" PRIu64 " %6" PRIu64 " %7" PRIu64
                   " %11" PRIu64 "\n",
                   padded(safe_str(imap, q1, sizeof(q1)), 32, p1),
                   padded(f->len > 0 ? restore_safe_text(f->name, f->len, q2,
                                                         sizeof(q2))
                                     : "(top)",
                          32, p2),
                   f->messages, f->message_bytes, f->in_new, f->unseen,
                   f->others);
        }
    }
    if (json) {
        printf("],\"ok\":true}\n");
    }
out:
    if (rc != 0 && json) {
        json_fail_doc(*kind, err);
    }
    for (size_t i = 0; i < n; i++) {
        cfr_free(fs[i].name);
    }
    cfr_free(fs);
    restore_manifest_free(m);
    return rc;
}

/* ---- ls --folder: the messages of one folder -------------------------------
 */

struct hdr_reader {
    struct cfr_opener *op;
    struct cfr_buf env, plain;
};

/* From, Subject, Date of message e: its first chunk fetched, opened and
 * re-hashed as a restore does; only the header block is looked at. */
static int
read_headers(struct restore_session *s, struct hdr_reader *hr,
             const struct cfr_snap_entry *e, uint8_t from[HDR_SHOW],
             uint8_t subj[HDR_SHOW], uint8_t date[HDR_SHOW], long lens[3],
             struct cfr_err *err)
{
    char hex[2 * ID_LEN + 1];
    size_t n;
    int kind = 0, rc;

    lens[0] = lens[1] = lens[2] = -1;
    if (e->n_chunks == 0) {
        return 0;
    }
    if ((rc = restore_fetcher_get_one(s->f, e->chunk_ids, &hr->env, &kind,
                                      err)) != 0) {
        return rc;
    }
    if (kind != KIND_SEALED) {
        return CFR_ERR(err, CFR_ECORRUPT, "chunk %s came in clear",
                       cfr_hex_encode(e->chunk_ids, ID_LEN, hex));
    }
    if ((rc = cfr_env_open(hr->op, CFR_ENV_CHUNK, e->chunk_ids, hr->env.data,
                           hr->env.len, CFR_ENV_PLAIN_MAX, &hr->plain, err)) !=
        0) {
        struct cfr_err was = *err;
        return CFR_ERR(err, rc, "chunk %s does not open: %s",
                       cfr_hex_encode(e->chunk_ids, ID_LEN, hex), was.msg);
    }
    n = hr->plain.len < RESTORE_HEADER_BLOCK_MAX ? hr->plain.len
                                                 : RESTORE_HEADER_BLOCK_MAX;
    lens[0] = restore_header_field(hr->plain.data, n, "from", from, HDR_SHOW);
    lens[1] =
        restore_header_field(hr->plain.data, n, "subject", subj, HDR_SHOW);
    lens[2] = restore_header_field(hr->plain.data, n, "date", date, HDR_SHOW);
    return 0;
}

/* ,"flags":["Seen",...] in the order of restore_flags_text. */
static void
json_flags(const struct restore_flags *fl)
{
    bool first = true;
    printf(",\"flags\":[");
    for (size_t i = 0; i < N_MAILDIR_FLAGS; i++) {
        if (fl->bits & maildir_flags[i].bit) {
            printf("%s\"%s\"", first ? "" : ",", maildir_flags[i].name);
            first = false;
        }
    }
    printf("]");
}

static void
json_header(const char *name, const uint8_t *v, long len)
{
    printf(",\"%s\":", name);
    if (len < 0) {
        printf("null");
    } else {
        json_bytes(stdout, v, (size_t)len);
    }
}

static int
ls_messages(struct restore_session *s, const struct restore_snapshot *snap,
            const struct ls_opts *o, enum restore_failure *kind,
            struct cfr_err *err)
{
    struct restore_manifest *m = NULL;
    struct hdr_reader hr;
    struct cfr_snap_entry e;
    bool found = false, started = false;
    uint64_t msgs = 0, bytes = 0, others = 0;
    int rc;

    memset(&hr, 0, sizeof(hr));
    cfr_buf_init(&hr.env, RESTORE_FETCH_MSG_MAX);
    cfr_buf_init(&hr.plain, CFR_ENV_PLAIN_MAX);
    if (o->headers && (hr.op = cfr_opener_new(s->kr, err)) == NULL) {
        rc = err != NULL && err->code != 0 ? err->code : CFR_ENOMEM;
        *kind = RESTORE_F_OTHER;
        goto out;
    }
    if ((rc = walk_open(s, snap, NULL, &m, kind, err)) != 0) {
        goto out;
    }
    while ((rc = restore_manifest_next(m, &e, err)) == 1) {
        const uint8_t *folder, *name;
        size_t fl, nl;
        struct restore_flags flg;
        char flags[128], when[32];
        uint8_t from[HDR_SHOW], subj[HDR_SHOW], date[HDR_SHOW];
        long hl[3] = {-1, -1, -1};

        if (!split_key(&e, &folder, &fl, &name, &nl)) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "manifest key without a folder");
            *kind = RESTORE_F_VERIFY;
            goto out;
        }
        if (!folder_matches(o->folder, folder, fl)) {
            if (found) {
                break; /* sorted: the folder is behind us */
            }
            continue;
        }
        if (!found) {
            char imap[2 * CFR_SNAP_KEY_MAX + 8];
            found = true;
            if (restore_folder_imap(folder, fl, imap, sizeof(imap)) != 0) {
                imap[0] = '\0';
            }
            if (o->json) {
                printf("{");
                json_snapshot_fields(snap);
                printf(",\"folder\":");
                json_bytes(stdout, folder, fl);
                printf(",\"imap\":");
                json_str(stdout, imap);
                printf(",\"messages\":[");
            } else {
                char q[NAME_SHOW];
                print_snapshot_line(snap);
                printf("folder %s\n", safe_str(imap, q, sizeof(q)));
                printf("%-40s %-28s %10s %-24s %s\n", "NAME", "FLAGS", "SIZE",
                       "MTIME (UTC)", "MESSAGE-ID");
            }
            started = true;
        }
        if (e.kind != CFR_SNAP_MAILDIR_MESSAGE) {
            others++;
            continue;
        }
        if (o->headers &&
            (rc = read_headers(s, &hr, &e, from, subj, date, hl, err)) != 0) {
            *kind = rc == CFR_ENOMEM ? RESTORE_F_OTHER
                    : rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT ||
                            rc == CFR_EAUTH || rc == CFR_EVERSION ||
                            rc == CFR_ELIMIT
                        ? RESTORE_F_VERIFY
                        : RESTORE_F_VAULT;
            goto out;
        }
        restore_flags_decode(e.info, e.info_len, &flg);
        restore_flags_text(&flg, flags, sizeof(flags));
        restore_iso_time(e.mtime_ns / 1000000, when);
        if (o->json) {
            printf("%s{\"name\":", msgs > 0 ? "," : "");
            json_bytes(stdout, name, nl);
            printf(",\"info\":");
            json_bytes(stdout, e.info, e.info_len);
            json_flags(&flg);
            printf(",\"keywords\":\"%s\",\"new\":%s,\"size\":%" PRIu64
                   ",\"mtime_ns\":%" PRId64 ",\"mtime\":\"%s\",\"message_id\":",
                   flg.keywords, e.in_new ? "true" : "false", e.size,
                   e.mtime_ns, when);
            json_bytes(stdout, e.message_id, e.message_id_len);
            if (o->headers) {
                json_header("from", from, hl[0]);
                json_header("subject", subj, hl[1]);
                json_header("date", date, hl[2]);
            }
            printf("}");
        } else {
            char qn[NAME_SHOW], qi[NAME_SHOW], qf[sizeof(flags) + 8];
            snprintf(qf, sizeof(qf), "%s%s", e.in_new ? "(new) " : "", flags);
            char p1[PAD_MAX];
            printf("%s %-28s %10" PRIu64 " %-24s %s\n",
                   padded(restore_safe_text(name, nl, qn, sizeof(qn)), 40, p1),
                   qf, e.size, when,
                   e.message_id_len > 0
                       ? restore_safe_text(e.message_id, e.message_id_len, qi,
                                           sizeof(qi))
                       : "-");
            if (o->headers) {
                char q[HDR_SHOW + 64];
                printf("    From:    %s\n",
                       hl[0] >= 0 ? restore_safe_text(from, (size_t)hl[0], q,
                                                      sizeof(q))
                                  : "-");
                printf("    Subject: %s\n",
                       hl[1] >= 0 ? restore_safe_text(subj, (size_t)hl[1], q,
                                                      sizeof(q))
                                  : "-");
                printf("    Date:    %s\n",
                       hl[2] >= 0 ? restore_safe_text(date, (size_t)hl[2], q,
                                                      sizeof(q))
                                  : "-");
            }
        }
        msgs++;
        bytes += e.size;
    }
    if (rc < 0) {
        *kind = walk_failure(m, rc);
        goto out;
    }
    if (!found) {
        char q[NAME_SHOW];
        *kind = RESTORE_F_NOTFOUND;
        rc = CFR_ERR(err, CFR_ENOTFOUND,
                     "no folder %s in that snapshot (see ls --mailbox)",
                     safe_str(o->folder, q, sizeof(q)));
        goto out;
    }
    rc = 0;
    if (o->json) {
        printf("],\"count\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"other_files\":%" PRIu64 ",\"ok\":true}\n",
               msgs, bytes, others);
    } else {
        printf("%" PRIu64 " message(s), %" PRIu64 " bytes; %" PRIu64
               " other file(s)\n",
               msgs, bytes, others);
    }
out:
    if (rc != 0 && o->json) {
        if (started) {
            printf("],\"count\":%" PRIu64, msgs);
            json_fail_tail(*kind, err);
        } else {
            json_fail_doc(*kind, err);
        }
    }
    restore_manifest_free(m);
    cfr_opener_free(hr.op);
    cfr_buf_fini(&hr.env);
    cfr_buf_fini(&hr.plain);
    return rc;
}

/* ---- the ls command ---------------------------------------------------- */

static int
ls_usage(const char *why)
{
    fprintf(stderr, "coffer-restore ls: %s\n", why);
    return RESTORE_EXIT_USAGE;
}

int
restore_cmd_ls(const char *config, int argc, char **argv)
{
    struct restore_session s = {.config_path = config};
    struct ls_opts o;
    struct cfr_err err;
    int code;

    memset(&o, 0, sizeof(o));
    o.at_ms = RESTORE_AT_NEWEST;
    cfr_err_clear(&err);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            o.json = true;
        } else if (strcmp(a, "--headers") == 0) {
            o.headers = true;
        } else if (strcmp(a, "--mailbox") == 0 && more) {
            o.mailbox = argv[++i];
        } else if (strcmp(a, "--at") == 0 && more) {
            o.at = argv[++i];
        } else if (strcmp(a, "--snapshot") == 0 && more) {
            o.snapshot = argv[++i];
        } else if (strcmp(a, "--folder") == 0 && more) {
            o.folder = argv[++i];
        } else {
            char q[96];
            fprintf(stderr,
                    "coffer-restore ls: unknown or incomplete option %s\n",
                    safe_str(a, q, sizeof(q)));
            return RESTORE_EXIT_USAGE;
        }
    }
    if (o.mailbox != NULL &&
        (o.mailbox[0] == '\0' || strlen(o.mailbox) > CFR_SNAP_MAILBOX_MAX)) {
        return ls_usage("--mailbox: 1..1024 bytes");
    }
    if (o.mailbox == NULL &&
        (o.at != NULL || o.snapshot != NULL || o.folder != NULL)) {
        return ls_usage("--at, --snapshot and --folder need --mailbox");
    }
    if (o.at != NULL && o.snapshot != NULL) {
        return ls_usage("--at and --snapshot exclude each other");
    }
    if (o.snapshot != NULL) {
        size_t n = strlen(o.snapshot);
        bool hex = n >= 8 && n <= 64;
        for (size_t i = 0; hex && i < n; i++) {
            hex = strchr("0123456789abcdefABCDEF", o.snapshot[i]) != NULL;
        }
        if (!hex) {
            return ls_usage("--snapshot: 8 to 64 hex digits of a snapshot ID "
                            "(see snapshots)");
        }
    }
    if (o.headers && o.folder == NULL) {
        return ls_usage("--headers needs --folder");
    }
    if (o.at != NULL &&
        restore_parse_at(o.at, cfr_clock_now_ms(cfr_clock_system()), &o.at_ms,
                         &err) != 0) {
        return ls_usage(err.msg);
    }
    code = restore_session_open(&s, &err);
    if (code != RESTORE_EXIT_OK) {
        restore_session_report(code, o.json, &err);
    } else if (o.mailbox == NULL) {
        code = ls_mailboxes(&s, o.json, &err);
    } else {
        struct restore_pick p = {o.mailbox, o.at_ms, o.snapshot};
        struct restore_snapshot snap;
        enum restore_failure kind = RESTORE_F_NONE;
        int rc = restore_pick_snapshot(s.f, s.kr, &p, &snap, &kind, &err);
        if (rc != 0) {
            if (o.json) {
                json_fail_doc(kind, &err);
            }
        } else if (o.folder == NULL) {
            rc = ls_folders(&s, &snap, o.json, &kind, &err);
        } else {
            rc = ls_messages(&s, &snap, &o, &kind, &err);
        }
        code = rc == 0 ? RESTORE_EXIT_OK
                       : restore_exit_for_failure(
                             kind == RESTORE_F_NONE ? RESTORE_F_OTHER : kind);
    }
    if (code != RESTORE_EXIT_OK && s.f != NULL) {
        fprintf(stderr, "coffer-restore: %s\n",
                err.msg[0] != '\0' ? err.msg : "failed");
    }
    fflush(stdout);
    restore_session_fini(&s);
    return code;
}

/* ---- find ------------------------------------------------------------- */

struct hit {
    size_t snap;  /* index into the snapshot list */
    uint8_t *key; /* folder "\0" name, owned */
    size_t key_len, folder_len;
    uint8_t info[CFR_SNAP_INFO_MAX];
    size_t info_len;
    bool in_new;
    uint64_t size;
    int64_t mtime_ns;
};

struct find_state {
    struct restore_snapshot *v;
    size_t n;
    bool *present; /* per snapshot */
    struct hit *hits;
    size_t n_hits, cap_hits;
    uint64_t searched, entries;
};

static int
hit_add(struct find_state *fs, size_t snap, const struct cfr_snap_entry *e,
        size_t folder_len, struct cfr_err *err)
{
    struct hit *h;
    if (fs->n_hits == fs->cap_hits) {
        size_t nc = fs->cap_hits == 0 ? 16 : 2 * fs->cap_hits;
        struct hit *g = cfr_calloc(nc, sizeof(*g));
        if (g == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "find: out of memory");
        }
        if (fs->n_hits > 0) {
            memcpy(g, fs->hits, fs->n_hits * sizeof(*g));
        }
        cfr_free(fs->hits);
        fs->hits = g;
        fs->cap_hits = nc;
    }
    h = &fs->hits[fs->n_hits];
    memset(h, 0, sizeof(*h));
    if ((h->key = cfr_malloc(e->key_len + 1)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "find: out of memory");
    }
    memcpy(h->key, e->key, e->key_len);
    h->key_len = e->key_len;
    h->folder_len = folder_len;
    h->snap = snap;
    h->info_len = e->info_len <= sizeof(h->info) ? e->info_len : 0;
    if (h->info_len > 0) {
        memcpy(h->info, e->info, h->info_len);
    }
    h->in_new = e->in_new;
    h->size = e->size;
    h->mtime_ns = e->mtime_ns;
    fs->n_hits++;
    return 0;
}

static void
find_state_fini(struct find_state *fs)
{
    for (size_t i = 0; i < fs->n_hits; i++) {
        cfr_free(fs->hits[i].key);
    }
    cfr_free(fs->hits);
    cfr_free(fs->present);
    cfr_free(fs->v);
}

/* Walks snapshot i, recording every entry whose Message-ID is want. */
static int
find_in(struct restore_session *s, struct find_state *fs, size_t i,
        struct restore_page_cache *cache, const uint8_t *want, size_t want_len,
        enum restore_failure *kind, struct cfr_err *err)
{
    struct restore_manifest *m = NULL;
    struct cfr_snap_entry e;
    int rc;

    if ((rc = walk_open(s, &fs->v[i], cache, &m, kind, err)) != 0) {
        return rc;
    }
    while ((rc = restore_manifest_next(m, &e, err)) == 1) {
        const uint8_t *folder, *name;
        size_t fl, nl, off, len;
        fs->entries++;
        if (e.message_id_len == 0) {
            continue;
        }
        restore_msgid_core(e.message_id, e.message_id_len, &off, &len);
        if (len != want_len || memcmp(e.message_id + off, want, len) != 0) {
            continue;
        }
        if (!split_key(&e, &folder, &fl, &name, &nl)) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "manifest key without a folder");
            *kind = RESTORE_F_VERIFY;
            break;
        }
        if ((rc = hit_add(fs, i, &e, fl, err)) != 0) {
            *kind = RESTORE_F_OTHER;
            break;
        }
        fs->present[i] = true;
    }
    if (rc < 0 && *kind == RESTORE_F_NONE) {
        char hex[2 * ID_LEN + 1];
        struct cfr_err was = *err;
        *kind = walk_failure(m, rc);
        CFR_ERR(err, rc, "snapshot %.16s: %s",
                cfr_hex_encode(fs->v[i].header_id, ID_LEN, hex), was.msg);
    }
    restore_manifest_free(m);
    return rc < 0 ? rc : 0;
}

static void
print_hit(const struct find_state *fs, const struct hit *h, bool json,
          bool first)
{
    const struct restore_snapshot *p = &fs->v[h->snap];
    const uint8_t *name = h->key + h->folder_len + 1;
    size_t nl = h->key_len - h->folder_len - 1;
    struct restore_flags flg;
    char imap[2 * CFR_SNAP_KEY_MAX + 8], when[32], mt[32], flags[128];
    char hex[2 * ID_LEN + 1];

    if (restore_folder_imap(h->key, h->folder_len, imap, sizeof(imap)) != 0) {
        imap[0] = '\0';
    }
    restore_flags_decode(h->info, h->info_len, &flg);
    restore_flags_text(&flg, flags, sizeof(flags));
    restore_iso_time(h->mtime_ns / 1000000, mt);
    if (json) {
        printf("%s{", first ? "" : ",");
        json_snapshot_fields(p);
        printf(",\"folder\":");
        json_bytes(stdout, h->key, h->folder_len);
        printf(",\"imap\":");
        json_str(stdout, imap);
        printf(",\"name\":");
        json_bytes(stdout, name, nl);
        printf(",\"info\":");
        json_bytes(stdout, h->info, h->info_len);
        json_flags(&flg);
        printf(",\"keywords\":\"%s\",\"new\":%s,\"size\":%" PRIu64
               ",\"mtime_ns\":%" PRId64 ",\"mtime\":\"%s\"}",
               flg.keywords, h->in_new ? "true" : "false", h->size, h->mtime_ns,
               mt);
        return;
    }
    {
        char qm[NAME_SHOW], qf[NAME_SHOW], qn[NAME_SHOW];
        char p1[PAD_MAX], p2[PAD_MAX], p3[PAD_MAX];
        printf("%-24s %-16.16s %s %s %s %-24s %10" PRIu64 "\n",
               restore_iso_time(p->received_ms, when),
               cfr_hex_encode(p->header_id, ID_LEN, hex),
               padded(safe_str(p->h.mailbox, qm, sizeof(qm)), 24, p1),
               padded(safe_str(imap, qf, sizeof(qf)), 20, p2),
               padded(restore_safe_text(name, nl, qn, sizeof(qn)), 40, p3),
               flags, h->size);
    }
}

/* First seen, last seen and deleted after, per mailbox: the snapshots of
 * one mailbox in time order, as far as this key can read them. */
static void
print_summary(const struct find_state *fs, bool json)
{
    bool first_mb = true;
    /* fs->v is newest first; walk mailboxes in order of their newest hit. */
    for (size_t i = 0; i < fs->n; i++) {
        const char *mb = fs->v[i].h.mailbox;
        size_t first = SIZE_MAX, last = SIZE_MAX, newest = SIZE_MAX,
               after = SIZE_MAX, count = 0;
        bool seen_before = false;
        char t[32], hex[2 * ID_LEN + 1];
        if (!fs->present[i] || fs->v[i].open_rc != 0) {
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (fs->present[j] && fs->v[j].open_rc == 0 &&
                strcmp(fs->v[j].h.mailbox, mb) == 0) {
                seen_before = true; /* this mailbox was summarised */
                break;
            }
        }
        if (seen_before) {
            continue;
        }
        for (size_t j = 0; j < fs->n; j++) {
            if (fs->v[j].open_rc != 0 || strcmp(fs->v[j].h.mailbox, mb) != 0) {
                continue;
            }
            if (newest == SIZE_MAX) {
                newest = j;
            }
            if (fs->present[j]) {
                if (last == SIZE_MAX) {
                    last = j;
                }
                first = j;
                count++;
            } else if (last == SIZE_MAX) {
                after = j; /* the oldest snapshot newer than the last hit */
            }
        }
        if (json) {
            printf("%s{\"mailbox\":", first_mb ? "" : ",");
            json_str(stdout, mb);
            printf(",\"snapshots\":%zu", count);
            printf(",\"first_seen\":\"%s\",\"first_seen_ms\":%" PRId64,
                   restore_iso_time(fs->v[first].received_ms, t),
                   fs->v[first].received_ms);
            printf(",\"last_seen\":\"%s\",\"last_seen_ms\":%" PRId64,
                   restore_iso_time(fs->v[last].received_ms, t),
                   fs->v[last].received_ms);
            printf(",\"in_newest\":%s,\"absent_from\":",
                   last == newest ? "true" : "false");
            if (after == SIZE_MAX) {
                printf("null,\"absent_from_ms\":null}");
            } else {
                printf("\"%s\",\"absent_from_snapshot\":\"%s\","
                       "\"absent_from_ms\":%" PRId64 "}",
                       restore_iso_time(fs->v[after].received_ms, t),
                       cfr_hex_encode(fs->v[after].header_id, ID_LEN, hex),
                       fs->v[after].received_ms);
            }
        } else {
            char qm[NAME_SHOW];
            printf("%s: in %zu snapshot(s); first seen %s",
                   safe_str(mb, qm, sizeof(qm)), count,
                   restore_iso_time(fs->v[first].received_ms, t));
            printf(", last seen %s",
                   restore_iso_time(fs->v[last].received_ms, t));
            if (after == SIZE_MAX) {
                printf("; still in the newest snapshot\n");
            } else {
                printf("; deleted after that: absent from snapshot %.16s "
                       "received %s\n",
                       cfr_hex_encode(fs->v[after].header_id, ID_LEN, hex),
                       restore_iso_time(fs->v[after].received_ms, t));
            }
        }
        first_mb = false;
    }
}

static int
find_run(struct restore_session *s, const char *mailbox, const uint8_t *want,
         size_t want_len, bool json, struct cfr_err *err)
{
    struct find_state fs;
    struct restore_page_lru *lru = NULL;
    enum restore_failure kind = RESTORE_F_NONE;
    uint64_t hits = 0, misses = 0;
    size_t bad = 0, held = 0;
    int rc;

    memset(&fs, 0, sizeof(fs));
    if ((rc = restore_list(s->f, s->kr, mailbox, &fs.v, &fs.n, err)) != 0) {
        kind = list_failure(rc);
        goto fail;
    }
    if ((fs.present = cfr_calloc(fs.n + 1, sizeof(bool))) == NULL ||
        (lru = restore_page_lru_new(RESTORE_PAGE_CACHE_DEFAULT)) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "find: out of memory");
        kind = RESTORE_F_OTHER;
        goto fail;
    }
    if (fs.n == 0 && mailbox != NULL) {
        char q[NAME_SHOW];
        rc = CFR_ERR(err, CFR_ENOTFOUND, "no snapshot of mailbox %s",
                     safe_str(mailbox, q, sizeof(q)));
        kind = RESTORE_F_NOTFOUND;
        goto fail;
    }
    /* Oldest first: a page met again is one the cache holds. */
    for (size_t k = fs.n; k-- > 0;) {
        if (fs.v[k].open_rc != 0) {
            bad++;
            continue;
        }
        if ((rc = find_in(s, &fs, k, restore_page_lru_ops(lru), want, want_len,
                          &kind, err)) != 0) {
            goto fail;
        }
        fs.searched++;
    }
    restore_page_lru_stats(lru, &hits, &misses, &held);
    if (json) {
        printf("{\"message_id\":");
        json_bytes(stdout, want, want_len);
        printf(",\"snapshots_searched\":%" PRIu64 ",\"entries\":%" PRIu64
               ",\"unreadable\":%zu,\"pages\":{\"fetched\":%" PRIu64
               ",\"cached\":%" PRIu64 "},\"hits\":[",
               fs.searched, fs.entries, bad, misses, hits);
        for (size_t i = 0; i < fs.n_hits; i++) {
            print_hit(&fs, &fs.hits[i], true, i == 0);
        }
        printf("],\"mailboxes\":[");
        print_summary(&fs, true);
        printf("]");
    } else if (fs.n_hits > 0) {
        char q[NAME_SHOW];
        printf("Message-ID <%s>\n",
               restore_safe_text(want, want_len, q, sizeof(q)));
        printf("%-24s %-16s %-24s %-20s %-40s %-24s %10s\n", "RECEIVED (UTC)",
               "SNAPSHOT", "MAILBOX", "FOLDER", "NAME", "FLAGS", "SIZE");
        for (size_t i = 0; i < fs.n_hits; i++) {
            print_hit(&fs, &fs.hits[i], false, i == 0);
        }
        print_summary(&fs, false);
    }
    if (fs.n_hits == 0) {
        char q[NAME_SHOW];
        rc = CFR_ERR(err, CFR_ENOTFOUND,
                     "Message-ID <%s> is in none of the %" PRIu64
                     " snapshot(s) searched",
                     restore_safe_text(want, want_len, q, sizeof(q)),
                     fs.searched);
        kind = RESTORE_F_NOTFOUND;
    } else if (bad > 0) {
        rc = CFR_ERR(err, CFR_EAUTH,
                     "%zu snapshot header(s) do not open with this key: "
                     "not searched",
                     bad);
        kind = RESTORE_F_VERIFY;
    }
    if (json) {
        if (rc != 0) {
            json_fail_tail(kind, err);
        } else {
            printf(",\"ok\":true}\n");
        }
    }
    goto out;
fail:
    if (json) {
        json_fail_doc(kind, err);
    }
out:
    restore_page_lru_free(lru);
    find_state_fini(&fs);
    return rc == 0 ? RESTORE_EXIT_OK : restore_exit_for_failure(kind);
}

int
restore_cmd_find(const char *config, int argc, char **argv)
{
    struct restore_session s = {.config_path = config};
    const char *mailbox = NULL, *id = NULL;
    size_t off = 0, len = 0;
    bool json = false;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--mailbox") == 0 && i + 1 < argc) {
            mailbox = argv[++i];
        } else if (strcmp(a, "--message-id") == 0 && i + 1 < argc) {
            id = argv[++i];
        } else {
            char q[96];
            fprintf(stderr,
                    "coffer-restore find: unknown or incomplete option %s\n",
                    safe_str(a, q, sizeof(q)));
            return RESTORE_EXIT_USAGE;
        }
    }
    if (id != NULL) {
        restore_msgid_core((const uint8_t *)id, strlen(id), &off, &len);
    }
    if (id == NULL || len == 0 || len > CFR_SNAP_MESSAGE_ID_MAX) {
        fprintf(stderr, "coffer-restore find: --message-id ID is needed "
                        "(1..1024 bytes, with or without <>)\n");
        return RESTORE_EXIT_USAGE;
    }
    if (mailbox != NULL &&
        (mailbox[0] == '\0' || strlen(mailbox) > CFR_SNAP_MAILBOX_MAX)) {
        fprintf(stderr, "coffer-restore find: --mailbox: 1..1024 bytes\n");
        return RESTORE_EXIT_USAGE;
    }
    code = restore_session_open(&s, &err);
    if (code != RESTORE_EXIT_OK) {
        restore_session_report(code, json, &err);
    } else {
        code =
            find_run(&s, mailbox, (const uint8_t *)id + off, len, json, &err);
        if (code != RESTORE_EXIT_OK) {
            fprintf(stderr, "coffer-restore: %s\n",
                    err.msg[0] != '\0' ? err.msg : "failed");
        }
    }
    fflush(stdout);
    restore_session_fini(&s);
    return code;
}
