/*
 * chunk_sweep.c - how much a mail store deduplicates per chunk size, with
 * and without MIME cut hints: the measurement behind the chunker defaults.
 *
 *   chunk_sweep [--size MB] [--overhead BYTES] [DIR]
 *
 * With DIR, every regular file under it is one file to back up (a Maildir
 * message, or an mbox: a file starting with "From " is split at its
 * "From " lines the way the agent does, a forced cut at each message start
 * and the message's own MIME hints). Without DIR, a synthetic corpus of
 * about --size MB (default 64) is generated in memory: personal mail with
 * Sent copies, multipart/alternative, attachments drawn from a pool so the
 * same file is forwarded in different messages (a third of them revised:
 * a few bytes changed in place), and mailing-list posts
 * delivered to many mailboxes with different headers.
 *
 * For each average size 4..64 KiB (min = avg / 4, max = avg * 8,
 * normalization 2), with and without hints, it prints total and unique
 * bytes, unique / total, chunk counts and mean size, the unique chunks
 * compressed one by one with zstd -3 (as the agent stores them: small
 * chunks compress worse), and "stored": compressed bytes plus a
 * per-unique-chunk overhead (default 150 bytes: envelope header and tag,
 * the ID in the manifest and in the vault's index) over total bytes, since
 * smaller chunks dedupe better but cost more objects. Whole-file deduplication
 * (what restic and Borg achieve on mail) is the first line, for comparison.
 *
 * Chunks are compared by a 128-bit non-cryptographic hash: fine for
 * measuring, never for storing.
 *
 * Built by bench/chunk.cmake; by hand against a build's library:
 *   cc -O2 -std=c17 -D_DEFAULT_SOURCE -Icore bench/chunk_sweep.c \
 *      BUILD/core/libcoffer_core.a -lzstd -o chunk_sweep
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "chunk.h"
#include "mime.h"
#include "prng.h"

#define SWEEP_FILE_MAX (1024u << 20) /* larger files are skipped */
#define SWEEP_HINTS    CFR_CHUNK_HINTS_MAX

/* ---- small helpers ---- */

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "chunk_sweep: out of memory\n");
        exit(1);
    }
    return p;
}

static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "chunk_sweep: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- a 128-bit hash and a set of chunks ---- */

struct digest {
    uint64_t a, b;
};

static uint64_t
mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static struct digest
hash128(const uint8_t *p, size_t n)
{
    uint64_t a = UINT64_C(0x243f6a8885a308d3) ^ n;
    uint64_t b = UINT64_C(0x13198a2e03707344) + n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = (a ^ w) * UINT64_C(0x9e3779b97f4a7c15);
        a ^= a >> 29;
        b = (b + w) * UINT64_C(0xd6e8feb86659fd93);
        b ^= b >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    a = mix(a ^ w);
    b = mix(b + w + 1);
    return (struct digest){a, b};
}

struct set {
    struct digest *slot; /* a == 0 && b == 0: empty */
    size_t cap, used;
};

static void
set_init(struct set *s)
{
    s->cap = 1u << 16;
    s->used = 0;
    s->slot = calloc(s->cap, sizeof(*s->slot));
    if (s->slot == NULL) {
        fprintf(stderr, "chunk_sweep: out of memory\n");
        exit(1);
    }
}

static bool
set_add_at(struct digest *slot, size_t cap, struct digest d)
{
    size_t i = (size_t)d.a & (cap - 1);
    for (;;) {
        if (slot[i].a == 0 && slot[i].b == 0) {
            slot[i] = d;
            return true;
        }
        if (slot[i].a == d.a && slot[i].b == d.b) {
            return false;
        }
        i = (i + 1) & (cap - 1);
    }
}

/* Returns true when d was not in the set yet. */
static bool
set_add(struct set *s, struct digest d)
{
    if (d.a == 0 && d.b == 0) {
        d.b = 1; /* keep the empty marker free */
    }
    if ((s->used + 1) * 2 > s->cap) {
        size_t ncap = s->cap * 2;
        struct digest *ns = calloc(ncap, sizeof(*ns));
        if (ns == NULL) {
            fprintf(stderr, "chunk_sweep: out of memory\n");
            exit(1);
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (s->slot[i].a != 0 || s->slot[i].b != 0) {
                set_add_at(ns, ncap, s->slot[i]);
            }
        }
        free(s->slot);
        s->slot = ns;
        s->cap = ncap;
    }
    bool added = set_add_at(s->slot, s->cap, d);
    s->used += added;
    return added;
}

/* ---- the corpus: files in memory or paths on disk ---- */

struct corpus {
    char **paths;   /* disk mode */
    uint8_t **data; /* memory mode */
    size_t *len;
    size_t n, cap;
    uint64_t total;
};

static void
corpus_push(struct corpus *c, char *path, uint8_t *data, size_t len)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->paths = xrealloc(c->paths, c->cap * sizeof(*c->paths));
        c->data = xrealloc(c->data, c->cap * sizeof(*c->data));
        c->len = xrealloc(c->len, c->cap * sizeof(*c->len));
    }
    c->paths[c->n] = path;
    c->data[c->n] = data;
    c->len[c->n] = len;
    c->n++;
    c->total += len;
}

static void
walk(struct corpus *c, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        perror(dir);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = xmalloc(n);
        snprintf(path, n, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) {
            free(path);
        } else if (S_ISDIR(st.st_mode)) {
            walk(c, path);
            free(path);
        } else if (S_ISREG(st.st_mode) && st.st_size > 0 &&
                   (uint64_t)st.st_size <= SWEEP_FILE_MAX) {
            corpus_push(c, path, NULL, (size_t)st.st_size);
        } else {
            free(path);
        }
    }
    closedir(d);
}

static uint8_t *
load(const struct corpus *c, size_t i, size_t *len_r)
{
    if (c->data[i] != NULL) {
        *len_r = c->len[i];
        return c->data[i];
    }
    FILE *f = fopen(c->paths[i], "rb");
    if (f == NULL) {
        *len_r = 0;
        return NULL;
    }
    uint8_t *buf = xmalloc(c->len[i]);
    *len_r = fread(buf, 1, c->len[i], f);
    fclose(f);
    return buf;
}

/* ---- the synthetic corpus ---- */

struct out {
    uint8_t *p;
    size_t len, cap;
};

static void
out_put(struct out *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void out_printf(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
out_printf(struct out *o, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0) {
        out_put(o, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    }
}

static const char *const syll[] = {
    "ba",  "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe",
    "qui", "ro", "su", "ta", "ve", "wi", "xo", "yu", "za", "th", "st", "ing",
    "er",  "on", "an", "re", "ed", "es", "or", "te", "al", "ar", "en", "is"};

/* Text of about n bytes: pseudo-words in lines of at most 72 columns. */
static void
gen_text(struct out *o, uint64_t *rng, size_t n)
{
    size_t col = 0;
    size_t start = o->len;
    while (o->len - start < n) {
        char w[32];
        size_t wl = 0;
        int k = 1 + (int)(cfr_splitmix64(rng) % 4);
        for (int i = 0; i < k; i++) {
            const char *s =
                syll[cfr_splitmix64(rng) % (sizeof(syll) / sizeof(syll[0]))];
            size_t sl = strlen(s);
            memcpy(w + wl, s, sl);
            wl += sl;
        }
        if (col + wl + 1 > 72) {
            out_put(o, "\n", 1);
            col = 0;
        } else if (col > 0) {
            out_put(o, " ", 1);
            col++;
        }
        out_put(o, w, wl);
        col += wl;
    }
    out_put(o, "\n", 1);
}

static void
gen_base64(struct out *o, const uint8_t *in, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char line[80];
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        v |= i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0;
        v |= i + 2 < n ? in[i + 2] : 0;
        line[col++] = tab[(v >> 18) & 63];
        line[col++] = tab[(v >> 12) & 63];
        line[col++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        line[col++] = i + 2 < n ? tab[v & 63] : '=';
        if (col == 76 || i + 3 >= n) {
            line[col++] = '\n';
            out_put(o, line, col);
            col = 0;
        }
    }
}

struct attachment {
    uint8_t *bytes;
    size_t len;
    const char *type;
};

struct list_post {
    struct out body; /* everything after the header block */
    unsigned list;
    unsigned id;
    const char *ctype;
};

/* Log-normal-ish size: median m, spread from the sum of uniforms. */
static size_t
lognormal(uint64_t *rng, double median)
{
    double u = 0;
    for (int i = 0; i < 4; i++) {
        u += (double)(cfr_splitmix64(rng) >> 11) / 9007199254740992.0;
    }
    double z = (u - 2.0) * 1.7; /* about N(0, 1) */
    /* e^(0.8 z) without libm: a short series is enough for a size. */
    double x = 0.8 * z;
    double e = 1, term = 1;
    for (int i = 1; i < 20; i++) {
        term *= x / i;
        e += term;
    }
    double v = median * e;
    return v < 200 ? 200 : (size_t)v;
}

static void
gen_headers(struct out *o, uint64_t *rng, unsigned from, unsigned to,
            unsigned msgid, const char *subject, bool received)
{
    int hops = received ? 2 + (int)(cfr_splitmix64(rng) % 3) : 0;
    out_printf(o, "Return-Path: <user%u@example.org>\n", from);
    out_printf(o, "Delivered-To: user%u@example.com\n", to);
    for (int h = 0; h < hops; h++) {
        out_printf(o,
                   "Received: from mx%d.example.net (mx%d.example.net "
                   "[192.0.2.%u])\n\tby mail.example.com (Postfix) with "
                   "ESMTPS id %08llX\n\tfor <user%u@example.com>; "
                   "Mon, %u Mar 2026 %02u:%02u:%02u +0000\n",
                   h, h, (unsigned)(cfr_splitmix64(rng) % 250),
                   (unsigned long long)(cfr_splitmix64(rng) & 0xffffffffu), to,
                   1 + (unsigned)(cfr_splitmix64(rng) % 28),
                   (unsigned)(cfr_splitmix64(rng) % 24),
                   (unsigned)(cfr_splitmix64(rng) % 60),
                   (unsigned)(cfr_splitmix64(rng) % 60));
    }
    out_printf(o,
               "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\n"
               "\tbh=%016llx%016llx=;\n\tb=%016llx%016llx%016llx\n",
               (unsigned long long)cfr_splitmix64(rng),
               (unsigned long long)cfr_splitmix64(rng),
               (unsigned long long)cfr_splitmix64(rng),
               (unsigned long long)cfr_splitmix64(rng),
               (unsigned long long)cfr_splitmix64(rng));
    out_printf(o,
               "From: User %u <user%u@example.org>\nTo: User %u "
               "<user%u@example.com>\nSubject: %s\n"
               "Message-ID: <%u.%u@example.org>\nDate: Mon, 2 Mar 2026 "
               "10:00:00 +0000\nMIME-Version: 1.0\n",
               from, from, to, to, subject, msgid, from);
    if (received) {
        out_printf(o, "X-Spam-Status: No, score=-%u.%u\n",
                   (unsigned)(cfr_splitmix64(rng) % 5),
                   (unsigned)(cfr_splitmix64(rng) % 10));
    }
}

static void
gen_corpus(struct corpus *c, size_t target, uint64_t seed)
{
    uint64_t rng = seed;
    enum { NATT = 40, NPOSTS = 120, NLISTS = 6, NUSERS = 60 };
    struct attachment att[NATT];
    for (int i = 0; i < NATT; i++) {
        /* Log-uniform 20 KB .. 3 MB. */
        double f = (double)(cfr_splitmix64(&rng) >> 11) / 9007199254740992.0;
        size_t len = 20000;
        for (double k = 0; k < f * 5.0; k += 0.05) {
            len += len / 20 + 1;
        }
        att[i].len = len;
        att[i].bytes = xmalloc(len);
        bool text = cfr_splitmix64(&rng) % 3 == 0;
        att[i].type = text ? "application/vnd.openxmlformats" : "image/jpeg";
        for (size_t k = 0; k < len; k++) {
            uint64_t r = cfr_splitmix64(&rng);
            att[i].bytes[k] =
                text ? (uint8_t)("<w:t>lorem ipsum</w:t>\n"[r % 23])
                     : (uint8_t)r;
        }
    }
    struct list_post post[NPOSTS];
    for (int i = 0; i < NPOSTS; i++) {
        memset(&post[i].body, 0, sizeof(post[i].body));
        post[i].list = (unsigned)(cfr_splitmix64(&rng) % NLISTS);
        post[i].id = 100000u + (unsigned)i;
        if (cfr_splitmix64(&rng) % 3 == 0) {
            post[i].ctype = "multipart/alternative; boundary=\"=_list_alt\"";
            out_printf(&post[i].body,
                       "--=_list_alt\nContent-Type: text/plain\n\n");
            struct out txt = {0};
            gen_text(&txt, &rng, lognormal(&rng, 3000));
            out_put(&post[i].body, txt.p, txt.len);
            out_printf(&post[i].body,
                       "--=_list_alt\nContent-Type: text/html\n\n<html>");
            out_put(&post[i].body, txt.p, txt.len);
            out_printf(&post[i].body, "</html>\n--=_list_alt--\n");
            free(txt.p);
        } else {
            post[i].ctype = "text/plain; charset=utf-8";
            gen_text(&post[i].body, &rng, lognormal(&rng, 3500));
            out_printf(&post[i].body,
                       "_______________________________________________\n"
                       "list%u mailing list\nhttps://lists.example.org/"
                       "list%u\n",
                       post[i].list, post[i].list);
        }
    }
    unsigned msgid = 1;
    size_t total = 0;
    while (total < target) {
        uint64_t kind = cfr_splitmix64(&rng) % 100;
        unsigned from = (unsigned)(cfr_splitmix64(&rng) % NUSERS);
        unsigned to = (unsigned)(cfr_splitmix64(&rng) % NUSERS);
        if (kind < 30) {
            /* A list post, delivered to its members (about a third of the
             * users), each copy with its own headers. */
            struct list_post *lp = &post[cfr_splitmix64(&rng) % NPOSTS];
            for (unsigned u = lp->list; u < NUSERS; u += 3) {
                struct out o = {0};
                gen_headers(&o, &rng, 1000 + lp->list, u, lp->id,
                            "[list] discussion", true);
                out_printf(&o,
                           "List-Id: <list%u.lists.example.org>\n"
                           "List-Unsubscribe: <mailto:list%u-leave@lists."
                           "example.org>\nContent-Type: %s\n\n",
                           lp->list, lp->list, lp->ctype);
                out_put(&o, lp->body.p, lp->body.len);
                total += o.len;
                corpus_push(c, NULL, o.p, o.len);
            }
            continue;
        }
        /* Personal mail: the recipient's copy and the sender's Sent copy. */
        struct out body = {0};
        char ctype[128];
        if (kind < 42) {
            /* An attachment from the pool, popular ones more often. */
            uint64_t r = cfr_splitmix64(&rng) % (NATT * NATT);
            struct attachment *a = &att[(r / NATT) * (r % NATT) / NATT];
            unsigned b = (unsigned)(cfr_splitmix64(&rng) & 0xffffff);
            snprintf(ctype, sizeof(ctype),
                     "multipart/mixed; boundary=\"=_%06x\"", b);
            out_printf(&body, "--=_%06x\nContent-Type: text/plain\n\n", b);
            gen_text(&body, &rng, lognormal(&rng, 800));
            out_printf(&body,
                       "--=_%06x\nContent-Type: %s; name=\"file%u\"\n"
                       "Content-Disposition: attachment\n"
                       "Content-Transfer-Encoding: base64\n\n",
                       b, a->type, (unsigned)(cfr_splitmix64(&rng) % 9));
            if (cfr_splitmix64(&rng) % 3 == 0) {
                /* A revised version: a few bytes changed in place, as in a
                 * corrected figure in a document sent again. */
                uint8_t *rev = xmalloc(a->len);
                memcpy(rev, a->bytes, a->len);
                int edits = 1 + (int)(cfr_splitmix64(&rng) % 3);
                for (int e = 0; e < edits; e++) {
                    rev[cfr_splitmix64(&rng) % a->len] ^= 0x5a;
                }
                gen_base64(&body, rev, a->len);
                free(rev);
            } else {
                gen_base64(&body, a->bytes, a->len);
            }
            out_printf(&body, "--=_%06x--\n", b);
        } else if (kind < 60) {
            snprintf(ctype, sizeof(ctype),
                     "multipart/alternative; boundary=\"alt%u\"", msgid);
            struct out txt = {0};
            gen_text(&txt, &rng, lognormal(&rng, 3000));
            out_printf(&body, "--alt%u\nContent-Type: text/plain\n\n", msgid);
            out_put(&body, txt.p, txt.len);
            out_printf(&body, "--alt%u\nContent-Type: text/html\n\n<p>", msgid);
            out_put(&body, txt.p, txt.len);
            out_printf(&body, "</p>\n--alt%u--\n", msgid);
            free(txt.p);
        } else {
            snprintf(ctype, sizeof(ctype), "text/plain; charset=utf-8");
            gen_text(&body, &rng, lognormal(&rng, 3500));
        }
        for (int copy = 0; copy < 2; copy++) {
            struct out o = {0};
            gen_headers(&o, &rng, from, to, msgid, "hello", copy == 0);
            out_printf(&o, "Content-Type: %s\n\n", ctype);
            out_put(&o, body.p, body.len);
            total += o.len;
            corpus_push(c, NULL, o.p, o.len);
        }
        free(body.p);
        msgid++;
    }
    for (int i = 0; i < NATT; i++) {
        free(att[i].bytes);
    }
    for (int i = 0; i < NPOSTS; i++) {
        free(post[i].body.p);
    }
}

/* ---- chunking ---- */

struct tally {
    uint64_t total, unique, packed;
    uint64_t chunks, unique_chunks;
};

/* Compresses unique chunks as the agent will (zstd -3, raw if no gain). */
static ZSTD_CCtx *zctx;
static uint8_t *zbuf;
static size_t zcap;

static size_t
packed_size(const uint8_t *p, size_t n)
{
    size_t need = ZSTD_compressBound(n);
    if (need > zcap) {
        zcap = need;
        zbuf = xrealloc(zbuf, zcap);
    }
    size_t z = ZSTD_compressCCtx(zctx, zbuf, zcap, p, n, 3);
    return ZSTD_isError(z) || z >= n ? n : z;
}

static void
count_chunk(struct set *s, struct tally *t, const uint8_t *p, size_t n)
{
    t->total += n;
    t->chunks++;
    if (set_add(s, hash128(p, n))) {
        t->unique += n;
        t->unique_chunks++;
        t->packed += packed_size(p, n);
    }
}

/*
 * Chunks one file. An mbox (starts with "From ") is cut at each message
 * start and gets each message's hints; anything else is one message.
 */
static void
chunk_file(struct cfr_chunker *ch, struct set *s, struct tally *t,
           const uint8_t *data, size_t len, bool hints, uint64_t *cuts)
{
    bool mbox = len >= 5 && memcmp(data, "From ", 5) == 0;
    size_t start = 0; /* the current chunk's start */
    size_t off = 0;
    size_t msg = 0;
    cfr_chunker_reset(ch);
    while (msg < len) {
        /* The message runs to the next "\nFrom " line (mbox) or the end. */
        size_t msg_end = len;
        if (mbox) {
            for (size_t i = msg + 1; i + 6 <= len; i++) {
                if (data[i - 1] == '\n' && memcmp(data + i, "From ", 5) == 0) {
                    msg_end = i;
                    break;
                }
            }
        }
        if (hints) {
            if (mbox && msg > 0) {
                size_t n = cfr_chunker_cut(ch);
                if (n > 0) {
                    count_chunk(s, t, data + start, n);
                    start += n;
                }
            }
            size_t n =
                cfr_mime_cuts(data + msg, msg_end - msg, cuts, SWEEP_HINTS);
            for (size_t i = 0; i < n; i++) {
                cuts[i] += msg;
            }
            cfr_chunker_set_hints(ch, cuts, n, NULL);
        }
        while (off < msg_end) {
            size_t k = cfr_chunker_next(ch, data + off, msg_end - off);
            if (k == 0) {
                off = msg_end;
                break;
            }
            off += k;
            count_chunk(s, t, data + start, off - start);
            start = off;
        }
        msg = msg_end;
    }
    size_t last = cfr_chunker_finish(ch);
    if (last > 0) {
        count_chunk(s, t, data + start, last);
    }
}

static void
print_row(const char *what, const struct tally *t, size_t overhead)
{
    double stored = (double)t->packed + (double)t->unique_chunks * overhead;
    printf("%-16s %8.1f %8.1f %7.4f %8llu %8llu %7.0f %7.1f %7.4f\n", what,
           (double)t->total / 1e6, (double)t->unique / 1e6,
           (double)t->unique / (double)t->total, (unsigned long long)t->chunks,
           (unsigned long long)t->unique_chunks,
           (double)t->total / (double)(t->chunks ? t->chunks : 1),
           (double)t->packed / 1e6, stored / (double)t->total);
}

int
main(int argc, char **argv)
{
    size_t size_mb = 64;
    size_t overhead = 150;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--size") == 0 ||
             strcmp(argv[i], "--overhead") == 0) &&
            i + 1 < argc) {
            char *end = NULL;
            unsigned long v = strtoul(argv[i + 1], &end, 10);
            if (end == argv[i + 1] || *end != '\0' || v > 100000) {
                fprintf(stderr, "chunk_sweep: bad number %s\n", argv[i + 1]);
                return 2;
            }
            if (argv[i][2] == 's') {
                size_mb = v;
            } else {
                overhead = v;
            }
            i++;
        } else if (argv[i][0] != '-' && dir == NULL) {
            dir = argv[i];
        } else {
            fprintf(stderr, "usage: chunk_sweep [--size MB] [--overhead BYTES] "
                            "[DIR]\n");
            return 2;
        }
    }
    struct corpus c = {0};
    if (dir != NULL) {
        walk(&c, dir);
    } else {
        gen_corpus(&c, size_mb << 20, 2026);
    }
    if (c.n == 0) {
        fprintf(stderr, "chunk_sweep: no files\n");
        return 1;
    }
    printf("corpus: %s, %zu files, %.1f MB; overhead %zu bytes per unique "
           "chunk\n",
           dir ? dir : "synthetic (built in)", c.n, (double)c.total / 1e6,
           overhead);
    printf("%-16s %8s %8s %7s %8s %8s %7s %7s %7s\n", "config", "total MB",
           "uniq MB", "ratio", "chunks", "uniq chk", "mean", "zstd MB",
           "stored");

    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    uint64_t seed = 7;
    for (size_t i = 0; i < CFR_CHUNK_GEAR_LEN; i++) {
        gear[i] = cfr_splitmix64(&seed);
    }
    uint64_t *cuts = xmalloc(SWEEP_HINTS * sizeof(*cuts));
    zctx = ZSTD_createCCtx();
    if (zctx == NULL) {
        fprintf(stderr, "chunk_sweep: out of memory\n");
        return 1;
    }

    /* Whole files, as a file-level deduplicator sees them. */
    struct set s;
    struct tally t = {0};
    set_init(&s);
    for (size_t f = 0; f < c.n; f++) {
        size_t len;
        uint8_t *d = load(&c, f, &len);
        if (d != NULL && len > 0) {
            count_chunk(&s, &t, d, len);
        }
        if (d != c.data[f]) {
            free(d);
        }
    }
    free(s.slot);
    print_row("whole files", &t, overhead);

    for (size_t avg = 4096; avg <= 65536; avg *= 2) {
        for (int hints = 0; hints < 2; hints++) {
            struct cfr_chunk_params p = {avg / 4, avg, avg * 8,
                                         CFR_CHUNK_DEFAULT_NORM};
            struct cfr_err err;
            struct cfr_chunker *ch = cfr_chunker_new(gear, &p, &err);
            if (ch == NULL) {
                fprintf(stderr, "chunk_sweep: %s\n", err.msg);
                return 1;
            }
            memset(&t, 0, sizeof(t));
            set_init(&s);
            for (size_t f = 0; f < c.n; f++) {
                size_t len;
                uint8_t *d = load(&c, f, &len);
                if (d != NULL && len > 0) {
                    chunk_file(ch, &s, &t, d, len, hints, cuts);
                }
                if (d != c.data[f]) {
                    free(d);
                }
            }
            char what[64];
            snprintf(what, sizeof(what), "avg %2zuK %s", avg >> 10,
                     hints ? "+hints" : "");
            print_row(what, &t, overhead);
            free(s.slot);
            cfr_chunker_free(ch);
        }
    }
    free(cuts);
    free(zbuf);
    ZSTD_freeCCtx(zctx);
    for (size_t f = 0; f < c.n; f++) {
        free(c.paths[f]);
        free(c.data[f]);
    }
    free(c.paths);
    free(c.data);
    free(c.len);
    return 0;
}
