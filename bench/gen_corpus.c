/*
 * gen_corpus.c - a deterministic, realistic mail store for benchmarks and
 * tests: Maildir++ mailboxes (Dovecot layout) plus a few mbox archives.
 *
 *   gen_corpus [--seed N] [--domains N] [--users N] [--messages-per-user N]
 *              [--size BYTES[K|M|G]] [--lists N] [--list-members N]
 *              [--now EPOCH] [--days N] [--quiet] OUTDIR
 *   gen_corpus --evolve HOURS [--seed N] [--arrivals-per-day N]
 *              [--posts-per-day N] [--quiet] OUTDIR
 *
 * What it writes (OUTDIR must be missing or empty):
 *   OUTDIR/<domain>/<user>/Maildir/{cur,new,tmp}          INBOX
 *   OUTDIR/<domain>/<user>/Maildir/.<Folder>/{cur,new,tmp} + maildirfolder
 *     for Sent, Drafts, Trash, Archive.<last year>, Lists.<list>
 *   dovecot-uidlist, dovecot-keywords in every folder, subscriptions in
 *   Maildir/, and for some users OUTDIR/<domain>/<user>/mail/old-archive.mbox.
 * --users is per domain. Messages arrive as one Poisson stream over the
 * last --days days before --now (default 2026-11-01T00:00:00Z, fixed so the
 * output does not depend on when it is run); each user has an activity
 * weight; a quarter of all deliveries are mailing-list copies. --size stops
 * the stream once that many message bytes (Maildir and mbox) are written,
 * so every mailbox holds a consistent prefix of its history.
 *
 * --evolve HOURS applies that much change to an existing tree: arrivals in
 * new/ (and list posts, sent mail), some new/ messages moved to cur/ with
 * flags, some flag renames, some deletions (to Trash, or expunged), Trash
 * cleanup, and the uidlists updated to match. The window starts at the
 * newest delivery time found in the tree, so repeated runs walk forward.
 *
 * Invariants:
 *  1. Output depends only on the options (and on the C library's exp/log/
 *     cos, used for the size distributions): one PRNG (xoshiro256**,
 *     seeded by splitmix64) per purpose, never the C library's PRNG or the
 *     wall clock, and directories are read in sorted order in evolve mode.
 *  2. Delivery times are strictly increasing across the whole run, so in
 *     every folder the names' "<secs>.M<usecs>" order is the delivery order,
 *     uids increase with it, and each file's mtime equals its name's time.
 *  3. A message's bytes are built completely in memory before its name is
 *     made, because the name carries S= (bytes) and W= (bytes plus one per
 *     LF, the CRLF size IMAP reports).
 *  4. Every copy of a list post shares its header block from the list
 *     server's Received line down, and its body, byte for byte; only the
 *     recipient's trace headers differ. Every use of a pool attachment is
 *     byte-identical base64 (same bytes, same 76-column wrap).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h> /* log, exp, cos, sqrt: the size distributions */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "buf.h" /* struct cfr_buf: message and scratch buffers */
#include "err.h" /* struct cfr_err, CFR_ERR */
#include "mem.h" /* cfr_malloc and friends */
#include "prng.h"

#define GEN_MSG_MAX      (96u << 20) /* one message, attachments included */
#define GEN_SCRATCH_MAX  (32u << 20) /* one attachment's raw bytes */
#define GEN_PATH_MAX     4096
#define GEN_LIST_DOMAIN  "lists.example.org"
#define GEN_MAX_LISTS    16
#define GEN_NCONTACTS    400
#define GEN_US           INT64_C(1000000)
#define GEN_DAY_US       (INT64_C(86400) * GEN_US)
#define GEN_HOUR_US      (INT64_C(3600) * GEN_US)
#define GEN_DEFAULT_NOW  INT64_C(1793491200) /* 2026-11-01T00:00:00Z */
#define GEN_ATT_MIN      (20u << 10)
#define GEN_ATT_MAX      (6u << 20)
#define GEN_LIST_ATT_MAX (1u << 20)

/*
 * snprintf for text whose truncation is harmless or impossible (the paths
 * are bounded by main's check on OUTDIR); returns false when it truncated.
 */
static bool strf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool
strf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < size;
}

/* ---- PRNG: xoshiro256**, seeded through splitmix64 ---------------------- */

struct rng {
    uint64_t s[4];
};

/* Independent streams per purpose: (seed, stream, index) picks one. */
static void
rng_seed(struct rng *r, uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t x = seed ^ (stream * UINT64_C(0xd1342543de82ef95));
    x ^= cfr_splitmix64(&x) + index * UINT64_C(0x2545f4914f6cdd1d);
    for (int i = 0; i < 4; i++) {
        r->s[i] = cfr_splitmix64(&x);
    }
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n); n > 0. The multiply-shift bias is < 2^-32 for us. */
static uint64_t
rng_below(struct rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static double
rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static bool
rng_chance(struct rng *r, double p)
{
    return rng_unit(r) < p;
}

static double
rng_normal(struct rng *r)
{
    double u1 = rng_unit(r);
    double u2 = rng_unit(r);
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double
rng_lognormal(struct rng *r, double median, double sigma)
{
    return median * exp(sigma * rng_normal(r));
}

static double
rng_exp(struct rng *r, double mean)
{
    return -mean * log(1.0 - rng_unit(r));
}

static uint64_t
rng_poisson(struct rng *r, double mean)
{
    if (mean <= 0) {
        return 0;
    }
    if (mean > 50) {
        double v = mean + sqrt(mean) * rng_normal(r);
        return v < 0 ? 0 : (uint64_t)(v + 0.5);
    }
    double l = exp(-mean);
    double p = 1.0;
    uint64_t k = 0;
    do {
        k++;
        p *= rng_unit(r);
    } while (p > l);
    return k - 1;
}

/* Stream tags for rng_seed. */
enum {
    S_SETUP = 1,
    S_EVENTS,
    S_MSG,
    S_POOL,
    S_LIST,
    S_MBOX,
    S_EVOLVE,
    S_CONTACTS,
};

/* ---- vocabulary ---------------------------------------------------------- */

/* Frequent words first: pick_word skews toward the head (Zipf-like). */
static const char *const words[] = {
    "the",         "to",        "and",         "of",         "a",
    "in",          "is",        "for",         "that",       "we",
    "you",         "it",        "on",          "with",       "this",
    "be",          "are",       "as",          "have",       "will",
    "at",          "not",       "can",         "from",       "please",
    "our",         "by",        "or",          "if",         "your",
    "all",         "but",       "an",          "so",         "there",
    "would",       "was",       "us",          "let",        "me",
    "know",        "about",     "new",         "some",       "they",
    "meeting",     "next",      "week",        "just",       "also",
    "could",       "should",    "time",        "team",       "thanks",
    "update",      "more",      "need",        "one",        "here",
    "like",        "think",     "when",        "what",       "which",
    "today",       "report",    "project",     "attached",   "find",
    "review",      "changes",   "before",      "after",      "still",
    "into",        "may",       "get",         "send",       "last",
    "version",     "customer",  "server",      "issue",      "question",
    "document",    "draft",     "budget",      "schedule",   "quarter",
    "friday",      "monday",    "tomorrow",    "release",    "plan",
    "proposal",    "contract",  "invoice",     "order",      "delivery",
    "account",     "support",   "ticket",      "backup",     "mailbox",
    "migration",   "storage",   "network",     "office",     "travel",
    "hotel",       "flight",    "conference",  "agenda",     "minutes",
    "notes",       "call",      "discuss",     "confirm",    "approve",
    "decision",    "deadline",  "status",      "progress",   "feedback",
    "comments",    "details",   "information", "regards",    "best",
    "kind",        "hello",     "hi",          "dear",       "colleagues",
    "everyone",    "again",     "already",     "because",    "however",
    "although",    "probably",  "maybe",       "certainly",  "quickly",
    "early",       "late",      "morning",     "afternoon",  "evening",
    "room",        "building",  "floor",       "lunch",      "coffee",
    "price",       "offer",     "discount",    "payment",    "bank",
    "transfer",    "tax",       "receipt",     "signed",     "copy",
    "original",    "scan",      "photo",       "slides",     "presentation",
    "spreadsheet", "numbers",   "figures",     "results",    "test",
    "tests",       "bug",       "fix",         "patch",      "build",
    "deploy",      "rollback",  "outage",      "incident",   "alert",
    "monitoring",  "latency",   "throughput",  "database",   "index",
    "query",       "cluster",   "node",        "replica",    "region",
    "certificate", "password",  "access",      "permission", "policy",
    "security",    "privacy",   "compliance",  "audit",      "retention",
    "archive",     "restore",   "disk",        "memory",     "kernel",
    "package",     "upgrade",   "laptop",      "printer",    "vpn",
    "holiday",     "vacation",  "sick",        "leave",      "training",
    "workshop",    "interview", "candidate",   "salary",     "contractor",
    "vendor",      "supplier",  "warehouse",   "shipment",   "tracking",
    "address",     "phone",     "number",      "Grüße",      "Besprechung",
    "Rückmeldung", "für",       "réunion",     "déjà",       "café",
    "Zürich",      "naïve",     "São",         "Kraków",     "smörgåsbord",
    "façade",      "über",
};

static const char *const first_names[] = {
    "Anna",   "Jürgen",   "Maria",  "Thomas", "Sophie", "Lukas",  "Emma",
    "Jonas",  "Léa",      "Hugo",   "Chloé",  "Louis",  "Olivia", "James",
    "Amelia", "Oliver",   "Isabel", "Diego",  "Lucía",  "Mateo",  "Zoë",
    "Noah",   "Mila",     "Finn",   "Sara",   "Erik",   "Ingrid", "Søren",
    "Astrid", "Łukasz",   "Zofia",  "Piotr",  "Elena",  "Marco",  "Giulia",
    "Luca",   "François", "Margot", "Henrik", "Nadia",
};

static const char *const last_names[] = {
    "Müller",  "Schmidt",  "Schneider",  "Fischer", "Weber",     "Meyer",
    "Wagner",  "Becker",   "Martin",     "Bernard", "Dubois",    "Durand",
    "Lefèvre", "Smith",    "Jones",      "Taylor",  "Brown",     "Wilson",
    "García",  "López",    "Martínez",   "Rossi",   "Russo",     "Bianchi",
    "Nowak",   "Kowalski", "Wiśniewska", "Hansen",  "Johansson", "Larsen",
    "Nielsen", "Virtanen", "Novák",      "Horvat",  "Kovač",     "Silva",
    "Santos",  "O'Brien",  "Murphy",     "Kelly",
};

static const char *const domain_stems[] = {
    "acme",      "globex",  "initech", "umbrella",  "hooli",    "vandelay",
    "wayne",     "wonka",   "tyrell",  "cyberdyne", "soylent",  "massive",
    "gringotts", "monarch", "oceanic", "stark",     "nakatomi", "duff",
};
static const char *const tlds[] = {".com", ".org", ".de",    ".net",
                                   ".fr",  ".eu",  ".co.uk", ".nl"};

static const char *const ext_domains[] = {
    "mailbox.example",
    "post.example.net",
    "freemail.example.com",
    "partner-logistics.example",
    "univ-research.example.edu",
    "consulting.example.org",
    "bank.example",
    "shop.example.com",
    "travel-agency.example",
    "city-council.example.gov",
    "supplier-parts.example",
    "law-office.example",
    "clinic.example.net",
    "startup.example.io",
    "newsletter.example.com",
};

static const char *const list_names[] = {
    "announce", "dev",     "users", "ops",    "security", "jobs",
    "general",  "sales",   "infra", "hr",     "design",   "support",
    "release",  "finance", "legal", "social",
};

static const char *const mailers[] = {
    "Mozilla Thunderbird 115.3.1", "Microsoft Outlook 16.0",
    "Apple Mail (2.3731.700.6)",   "Roundcube Webmail/1.6.5",
    "Mutt/2.2.12 (2023-09-09)",    "K-9 Mail for Android",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *
pick_word(struct rng *r)
{
    double u = rng_unit(r);
    return words[(size_t)(u * u * u * (double)NELEM(words))];
}

/* ---- generator state ----------------------------------------------------- */

struct entry {
    uint32_t uid;
    char *base; /* owned: the name up to ",W=..." (no ":2,") */
};

struct file {
    char *name; /* owned: the full name in cur/ or new/ */
    bool in_new;
};

enum fkind { F_INBOX, F_SENT, F_DRAFTS, F_TRASH, F_ARCHIVE, F_LIST };

struct folder {
    char *path; /* owned: the folder's Maildir directory */
    char *name; /* owned: "" for INBOX, else "Sent", "Lists.dev", ... */
    enum fkind kind;
    int list; /* index into gen.lists for F_LIST, else -1 */
    uint32_t uidvalidity;
    uint32_t next_uid;
    char guid[33];
    int64_t last_us; /* newest delivery (directory mtimes) */
    bool dirty;      /* the uidlist changed (evolve rewrites only these) */
    bool unopened;   /* no client ever selects it: all mail stays in new/ */
    struct entry *ents;
    size_t nents, ents_cap;
    struct file *files; /* evolve: the messages on disk */
    size_t nfiles, files_cap;
};

struct user {
    char *local;   /* owned: address local part (ASCII) */
    char *display; /* owned: UTF-8 display name */
    char *addr;    /* owned */
    char *home;    /* owned: OUTDIR/<domain>/<user> */
    size_t domain;
    double weight;
    bool has_mbox;
    struct folder *folders;
    size_t nfolders;
};

struct list {
    char *name; /* owned */
    size_t *members;
    size_t nmembers;
};

struct contact {
    char display[96];
    char addr[128];
    const char *domain; /* borrowed from ext_domains or a user's domain */
};

enum att_type { A_JPEG, A_PDF, A_DOCX, A_XLSX, A_CSV, A_FODT, A_DOC, A_TXT };

struct pool_item {
    uint64_t seed;
    size_t size;
    enum att_type type;
    char fname[80];
};

struct opts {
    uint64_t seed;
    size_t domains, users, lists, list_members;
    double messages_per_user;
    uint64_t size;
    int64_t now;
    unsigned days;
    double evolve_hours;
    double arrivals_per_day, posts_per_day;
    bool quiet;
    const char *out;
};

struct gen {
    struct opts o;
    char **domains;
    size_t ndomains, domains_cap;
    struct user *users;
    size_t nusers;
    struct list lists[GEN_MAX_LISTS];
    size_t nlists;
    struct contact contacts[GEN_NCONTACTS];
    struct pool_item *pool;
    size_t npool, pool_cap;
    double *cum_weight; /* cumulative user weights, for picking recipients */
    struct cfr_buf msg, shared, att, text;
    int64_t now_us;  /* end of the timeline */
    int64_t last_us; /* the newest delivery so far (invariant 2) */
    bool evolving;   /* arrivals go to new/ */
    int archive_year;
    uint64_t bytes, messages, with_att, list_copies, mbox_messages;
    uint64_t moved, renamed, deleted;
    uint64_t event_cap; /* Maildir deliveries stop here (0: no cap) */
    int rc;             /* sticky append error: checked after each message */
    struct cfr_err err;
};

/* ---- appending with a sticky error ----------------------------------------
 */

static void
put(struct gen *g, struct cfr_buf *b, const void *p, size_t n)
{
    if (g->rc == 0) {
        g->rc = cfr_buf_append(b, p, n, &g->err);
    }
}

static void
puts_b(struct gen *g, struct cfr_buf *b, const char *s)
{
    put(g, b, s, strlen(s));
}

static void putf(struct gen *g, struct cfr_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
putf(struct gen *g, struct cfr_buf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        /* Every caller formats short header fragments; longer is a bug. */
        if (g->rc == 0) {
            g->rc = CFR_ERR(&g->err, CFR_EINTERNAL, "putf overflow: %s", fmt);
        }
        return;
    }
    put(g, b, line, (size_t)n);
}

static char *
xstrdup(struct gen *g, const char *s)
{
    char *d = cfr_strdup(s);
    if (d == NULL && g->rc == 0) {
        g->rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
    }
    return d;
}

/* Grows *arr (of *cap elements of size sz) to hold n + 1. */
static int
grow(struct gen *g, void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap) {
        return 0;
    }
    size_t ncap = *cap ? *cap * 2 : 16;
    size_t bytes;
    if (!cfr_mul_ok(ncap, sz, &bytes)) {
        return CFR_ERR(&g->err, CFR_ELIMIT, "array too large");
    }
    void *p = cfr_realloc(*arr, bytes);
    if (p == NULL) {
        return CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
    }
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- encodings ------------------------------------------------------------
 */

static const char b64tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 with a line break every 76 columns (RFC 2045), LF line ends. */
static void
put_base64(struct gen *g, struct cfr_buf *b, const uint8_t *p, size_t n)
{
    char line[8192];
    size_t ll = 0;
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t rem = n - i;
        uint32_t v = (uint32_t)p[i] << 16;
        if (rem > 1) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (rem > 2) {
            v |= p[i + 2];
        }
        line[ll++] = b64tab[(v >> 18) & 63];
        line[ll++] = b64tab[(v >> 12) & 63];
        line[ll++] = rem > 1 ? b64tab[(v >> 6) & 63] : '=';
        line[ll++] = rem > 2 ? b64tab[v & 63] : '=';
        col += 4;
        if (col == 76) {
            line[ll++] = '\n';
            col = 0;
        }
        if (ll > sizeof(line) - 8) {
            put(g, b, line, ll);
            ll = 0;
        }
    }
    if (col != 0) {
        line[ll++] = '\n';
    }
    put(g, b, line, ll);
}

/* Base64 of random bytes, as a header field value (DKIM b= and bh=). */
static void
put_random_b64(struct gen *g, struct cfr_buf *b, struct rng *r, size_t chars)
{
    char s[512];
    if (chars >= sizeof(s)) {
        chars = sizeof(s) - 1;
    }
    for (size_t i = 0; i < chars; i++) {
        s[i] = b64tab[rng_below(r, 64)];
    }
    put(g, b, s, chars);
}

static const char hexdig[] = "0123456789ABCDEF";

/* Quoted-printable (RFC 2045): soft breaks keep lines within 76 columns. */
static void
put_qp(struct gen *g, struct cfr_buf *b, const uint8_t *p, size_t n)
{
    char line[8192];
    size_t ll = 0;
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        char tok[3];
        size_t tl;
        if (c == '\n') {
            line[ll++] = '\n';
            col = 0;
            if (ll > sizeof(line) - 16) {
                put(g, b, line, ll);
                ll = 0;
            }
            continue;
        }
        bool before_nl = i + 1 == n || p[i + 1] == '\n';
        if (c == '=' || c > 126 || (c < 32 && c != '\t') ||
            ((c == ' ' || c == '\t') && before_nl)) {
            tok[0] = '=';
            tok[1] = hexdig[c >> 4];
            tok[2] = hexdig[c & 15];
            tl = 3;
        } else {
            tok[0] = (char)c;
            tl = 1;
        }
        if (col + tl > 75) {
            line[ll++] = '=';
            line[ll++] = '\n';
            col = 0;
        }
        memcpy(line + ll, tok, tl);
        ll += tl;
        col += tl;
        if (ll > sizeof(line) - 16) {
            put(g, b, line, ll);
            ll = 0;
        }
    }
    put(g, b, line, ll);
}

static bool
is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] > 126) {
            return false;
        }
    }
    return true;
}

/*
 * A header value: raw when ASCII, else RFC 2047 encoded words (B or Q),
 * split at character boundaries so each word stays under 76 columns.
 */
static void
put_hdr_text(struct gen *g, struct cfr_buf *b, struct rng *r, const char *s)
{
    size_t n = strlen(s);
    if (is_ascii(s, n)) {
        put(g, b, s, n);
        return;
    }
    bool use_b = rng_chance(r, 0.5);
    size_t i = 0;
    bool first = true;
    while (i < n) {
        size_t most = use_b ? 30 : 18; /* encoded words stay < 76 chars */
        size_t take = n - i > most ? most : n - i;
        /* Never split a UTF-8 sequence between encoded words. */
        while (i + take < n && ((unsigned char)s[i + take] & 0xC0) == 0x80) {
            take--;
        }
        if (!first) {
            puts_b(g, b, "\n ");
        }
        first = false;
        const uint8_t *p = (const uint8_t *)s + i;
        if (use_b) {
            char enc[64];
            size_t el = 0;
            for (size_t k = 0; k < take; k += 3) {
                size_t rem = take - k;
                uint32_t v = (uint32_t)p[k] << 16;
                if (rem > 1) {
                    v |= (uint32_t)p[k + 1] << 8;
                }
                if (rem > 2) {
                    v |= p[k + 2];
                }
                enc[el++] = b64tab[(v >> 18) & 63];
                enc[el++] = b64tab[(v >> 12) & 63];
                enc[el++] = rem > 1 ? b64tab[(v >> 6) & 63] : '=';
                enc[el++] = rem > 2 ? b64tab[v & 63] : '=';
            }
            puts_b(g, b, "=?UTF-8?B?");
            put(g, b, enc, el);
        } else {
            char enc[128];
            size_t el = 0;
            for (size_t k = 0; k < take; k++) {
                uint8_t c = p[k];
                if (c == ' ') {
                    enc[el++] = '_';
                } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || c == '.' || c == '-') {
                    enc[el++] = (char)c;
                } else {
                    enc[el++] = '=';
                    enc[el++] = hexdig[c >> 4];
                    enc[el++] = hexdig[c & 15];
                }
            }
            puts_b(g, b, "=?UTF-8?Q?");
            put(g, b, enc, el);
        }
        puts_b(g, b, "?=");
        i += take;
    }
}

/* A display name with its address: `Name <addr>` or `"Name, X" <addr>`. */
static void
put_mailbox(struct gen *g, struct cfr_buf *b, struct rng *r, const char *disp,
            const char *addr)
{
    put_hdr_text(g, b, r, disp);
    putf(g, b, " <%s>", addr);
}

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 5322 date-time in a zone tz_min minutes east of UTC. */
static void
fmt_date(char *out, size_t size, int64_t secs, int tz_min)
{
    time_t t = (time_t)(secs + (int64_t)tz_min * 60);
    struct tm tm;
    gmtime_r(&t, &tm);
    int a = tz_min < 0 ? -tz_min : tz_min;
    strf(out, size, "%s, %d %s %d %02d:%02d:%02d %c%02d%02d", wdays[tm.tm_wday],
         tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
         tm.tm_min, tm.tm_sec, tz_min < 0 ? '-' : '+', a / 60, a % 60);
}

/* The asctime form mbox "From " lines use, in UTC. */
static void
fmt_ctime(char *out, size_t size, int64_t secs)
{
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strf(out, size, "%s %s %2d %02d:%02d:%02d %d", wdays[tm.tm_wday],
         months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
         tm.tm_year + 1900);
}

static int
year_of(int64_t secs)
{
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    return tm.tm_year + 1900;
}

/* Postfix-style queue IDs and other opaque tokens. */
static void
rand_token(struct rng *r, char *out, size_t len)
{
    static const char alnum[] =
        "0123456789ABCDEFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";
    for (size_t i = 0; i < len; i++) {
        out[i] = alnum[rng_below(r, sizeof(alnum) - 1)];
    }
    out[len] = '\0';
}

static void
rand_hex(struct rng *r, char *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        out[i] = "0123456789abcdef"[rng_below(r, 16)];
    }
    out[len] = '\0';
}

static uint64_t
hash_str(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    }
    return h;
}

/* Each domain's MX zone offset, stable whatever the mode. */
static int
domain_tz(const char *domain)
{
    static const int tz[] = {0, 60, 60, 120, -300, 60, 0, 120};
    return tz[hash_str(domain) % NELEM(tz)];
}

/* ---- text ------------------------------------------------------------------
 */

/*
 * Appends paragraphs of made-up prose, wrapped at 72 columns with prefix on
 * every line, until at least target bytes were added. Some paragraphs begin
 * with "From ", which an mbox must quote.
 */
static void
gen_text(struct gen *g, struct cfr_buf *b, struct rng *r, size_t target,
         const char *prefix)
{
    size_t start = b->len;
    size_t plen = strlen(prefix);
    char line[256];
    while (g->rc == 0 && b->len - start < target) {
        size_t sentences = 2 + rng_below(r, 5);
        memcpy(line, prefix, plen);
        size_t ll = plen;
        bool para_start = true;
        for (size_t s = 0; s < sentences; s++) {
            size_t nw = 5 + rng_below(r, 12);
            for (size_t w = 0; w < nw; w++) {
                const char *word = pick_word(r);
                if (para_start && rng_chance(r, 0.05)) {
                    word = "From";
                }
                char tmp[64];
                size_t wl = strlen(word);
                memcpy(tmp, word, wl);
                if (w == 0 && tmp[0] >= 'a' && tmp[0] <= 'z') {
                    tmp[0] = (char)(tmp[0] - 'a' + 'A');
                }
                if (w + 1 == nw) {
                    tmp[wl++] = rng_chance(r, 0.1) ? '?' : '.';
                } else if (rng_chance(r, 0.06)) {
                    tmp[wl++] = ',';
                }
                if (ll > plen && ll + 1 + wl > 72) {
                    line[ll++] = '\n';
                    put(g, b, line, ll);
                    memcpy(line, prefix, plen);
                    ll = plen;
                }
                if (ll > plen) {
                    line[ll++] = ' ';
                }
                memcpy(line + ll, tmp, wl);
                ll += wl;
                para_start = false;
            }
        }
        line[ll++] = '\n';
        put(g, b, line, ll);
        put(g, b, prefix, plen);
        puts_b(g, b, "\n");
    }
}

static void
gen_subject(struct rng *r, char *out, size_t size)
{
    size_t n = 0;
    size_t nw = 2 + rng_below(r, 6);
    out[0] = '\0';
    for (size_t i = 0; i < nw && n + 32 < size; i++) {
        const char *w = pick_word(r);
        /* Subjects carry more content words than prose does. */
        if (rng_chance(r, 0.5)) {
            w = words[40 + rng_below(r, NELEM(words) - 40)];
        }
        int k = snprintf(out + n, size - n, "%s%s", i ? " " : "", w);
        if (k > 0) {
            n += (size_t)k;
        }
    }
    if (out[0] >= 'a' && out[0] <= 'z') {
        out[0] = (char)(out[0] - 'a' + 'A');
    }
}

/* ---- attachments ------------------------------------------------------------
 */

static const struct {
    const char *mime;
    const char *ext;
    unsigned weight;
} att_types[] = {
    [A_JPEG] = {"image/jpeg", "jpg", 30},
    [A_PDF] = {"application/pdf", "pdf", 25},
    [A_DOCX] = {"application/"
                "vnd.openxmlformats-officedocument.wordprocessingml.document",
                "docx", 8},
    [A_XLSX] = {"application/"
                "vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "xlsx", 5},
    [A_CSV] = {"text/csv", "csv", 8},
    [A_FODT] = {"application/vnd.oasis.opendocument.text-flat-xml", "fodt", 10},
    [A_DOC] = {"application/msword", "doc", 6},
    [A_TXT] = {"text/plain", "log", 8},
};

static void
put_random_bytes(struct gen *g, struct cfr_buf *b, struct rng *r, size_t n)
{
    uint64_t w[1024];
    while (n > 0 && g->rc == 0) {
        size_t take = n < sizeof(w) ? n : sizeof(w);
        for (size_t i = 0; i < (take + 7) / 8; i++) {
            w[i] = rng_next(r);
        }
        put(g, b, w, take);
        n -= take;
    }
}

static void
gen_csv(struct gen *g, struct cfr_buf *b, struct rng *r, size_t size)
{
    puts_b(g, b, "date,order,item,quantity,price,currency,owner,comment\n");
    while (g->rc == 0 && b->len < size) {
        putf(g, b, "2025-%02u-%02u,ORD-%05u,%s %s,%u,%u.%02u,EUR,%s,%s\n",
             (unsigned)(1 + rng_below(r, 12)), (unsigned)(1 + rng_below(r, 28)),
             (unsigned)rng_below(r, 100000), pick_word(r), pick_word(r),
             (unsigned)(1 + rng_below(r, 500)), (unsigned)rng_below(r, 2000),
             (unsigned)rng_below(r, 100),
             last_names[rng_below(r, NELEM(last_names))], pick_word(r));
    }
}

static void
gen_xml_doc(struct gen *g, struct cfr_buf *b, struct rng *r, size_t size)
{
    puts_b(g, b,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<office:document "
           "xmlns:office=\"urn:oasis:names:tc:opendocument:xmlns:office:1.0\" "
           "xmlns:text=\"urn:oasis:names:tc:opendocument:xmlns:text:1.0\" "
           "office:version=\"1.3\" "
           "office:mimetype=\"application/vnd.oasis.opendocument.text\">\n"
           " <office:body>\n  <office:text>\n");
    while (g->rc == 0 && b->len + 64 < size) {
        putf(g, b, "   <text:p text:style-name=\"P%u\">",
             (unsigned)(1 + rng_below(r, 9)));
        gen_text(g, b, r, 100 + rng_below(r, 400), "");
        puts_b(g, b, "</text:p>\n");
    }
    puts_b(g, b, "  </office:text>\n </office:body>\n</office:document>\n");
}

static void
gen_log(struct gen *g, struct cfr_buf *b, struct rng *r, size_t size)
{
    static const char *const lv[] = {"INFO",  "INFO", "INFO",
                                     "DEBUG", "WARN", "ERROR"};
    unsigned h = 0, m = 0, s = 0, ms = 0;
    while (g->rc == 0 && b->len < size) {
        ms += (unsigned)rng_below(r, 900);
        s += ms / 1000;
        ms %= 1000;
        m += s / 60;
        s %= 60;
        h += m / 60;
        m %= 60;
        putf(g, b,
             "2025-10-14 %02u:%02u:%02u,%03u %-5s [worker-%u] "
             "org.example.%s.Service - %s %s %s id=%u\n",
             h % 24, m, s, ms, lv[rng_below(r, NELEM(lv))],
             (unsigned)rng_below(r, 16), pick_word(r), pick_word(r),
             pick_word(r), pick_word(r), (unsigned)rng_below(r, 1000000));
    }
}

/*
 * The bytes of a pool attachment, made again from its seed on every use:
 * the same bytes each time, so every forward base64-encodes identically.
 * Binary formats are mostly incompressible (their payloads are already
 * compressed); text formats compress well. Replaces b's contents and
 * returns the attachment's length (a prefix of b).
 */
static size_t
gen_att_bytes(struct gen *g, const struct pool_item *it, struct cfr_buf *b)
{
    struct rng r;
    rng_seed(&r, it->seed, S_POOL, 0);
    cfr_buf_reset(b);
    switch (it->type) {
    case A_JPEG:
        put(g, b,
            "\xFF\xD8\xFF\xE1\x00\x60"
            "Exif\0\0MM\0*\0\0\0\x08"
            "Canon\0Canon EOS 80D\0"
            "2025:06:14 10:22:31\0",
            52);
        put_random_bytes(g, b, &r, 40);
        put(g, b, "\xFF\xDB\x00\x43\x00", 5);
        put_random_bytes(g, b, &r, 64);
        put(g, b, "\xFF\xC0\x00\x11\x08\x0B\xB8\x0F\xA0\x03", 10);
        put(g, b, "\xFF\xDA\x00\x0C\x03\x01\x00\x02\x11\x03\x11\x00\x3F\x00",
            14);
        if (b->len + 2 < it->size) {
            put_random_bytes(g, b, &r, it->size - b->len - 2);
        }
        put(g, b, "\xFF\xD9", 2);
        break;
    case A_PDF: {
        puts_b(g, b, "%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        unsigned obj = 1;
        while (g->rc == 0 && b->len + 200 < it->size) {
            if (rng_chance(&r, 0.2)) {
                putf(g, b, "%u 0 obj\n<< /Length %u >>\nstream\nBT\n", obj++,
                     (unsigned)(it->size - b->len));
                size_t end = b->len + 500 + rng_below(&r, 3000);
                while (g->rc == 0 && b->len < end) {
                    puts_b(g, b, "/F1 11 Tf 72 700 Td (");
                    gen_text(g, b, &r, 60, "");
                    puts_b(g, b, ") Tj\n");
                }
                puts_b(g, b, "ET\nendstream\nendobj\n");
            } else {
                size_t len = 4096 + rng_below(&r, 60000);
                putf(g, b,
                     "%u 0 obj\n<< /Length %zu /Filter /FlateDecode >>\n"
                     "stream\n",
                     obj++, len);
                put_random_bytes(g, b, &r, len);
                puts_b(g, b, "\nendstream\nendobj\n");
            }
        }
        putf(g, b, "xref\n0 %u\ntrailer\n<< /Size %u /Root 1 0 R >>\n", obj,
             obj);
        puts_b(g, b, "startxref\n0\n%%EOF\n");
        break;
    }
    case A_DOCX:
    case A_XLSX: {
        static const char *const parts[] = {
            "[Content_Types].xml",  "_rels/.rels",       "docProps/core.xml",
            "docProps/app.xml",     "word/document.xml", "word/styles.xml",
            "word/media/image1.png"};
        size_t i = 0;
        while (g->rc == 0 && b->len + 100 < it->size) {
            const char *name = parts[i % NELEM(parts)];
            size_t len =
                i + 1 < NELEM(parts) ? 300 + rng_below(&r, 3000) : it->size / 3;
            put(g, b, "PK\x03\x04\x14\x00\x06\x00\x08\x00", 10);
            put_random_bytes(g, b, &r, 16);
            uint8_t nl[4] = {(uint8_t)strlen(name), 0, 0, 0};
            put(g, b, nl, 4);
            puts_b(g, b, name);
            put_random_bytes(g, b, &r, len);
            i++;
        }
        puts_b(g, b, "PK\x01\x02");
        put_random_bytes(g, b, &r, 40);
        break;
    }
    case A_CSV:
        gen_csv(g, b, &r, it->size);
        break;
    case A_FODT:
        gen_xml_doc(g, b, &r, it->size);
        break;
    case A_DOC: {
        put(g, b, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", 8);
        put_random_bytes(g, b, &r, 504);
        while (g->rc == 0 && b->len < it->size) {
            double u = rng_unit(&r);
            if (u < 0.6) {
                /* Word 97 keeps text as UTF-16LE: compressible. */
                struct cfr_buf t;
                cfr_buf_init(&t, 1u << 20);
                gen_text(g, &t, &r, 1500, "");
                for (size_t k = 0; k < t.len && g->rc == 0; k++) {
                    uint8_t w2[2] = {t.data[k], 0};
                    put(g, b, w2, 2);
                }
                cfr_buf_fini(&t);
            } else if (u < 0.8) {
                uint8_t z[512] = {0};
                put(g, b, z, sizeof(z));
            } else {
                put_random_bytes(g, b, &r, 512);
            }
        }
        break;
    }
    case A_TXT:
        gen_log(g, b, &r, it->size);
        break;
    }
    /* The formats above overshoot a little: the file is the first size. */
    return b->len < it->size ? b->len : it->size;
}

static size_t
new_pool_item(struct gen *g, struct rng *r, size_t max_size)
{
    if ((g->rc = grow(g, (void **)&g->pool, &g->pool_cap, g->npool,
                      sizeof(*g->pool))) != 0) {
        return 0;
    }
    struct pool_item *it = &g->pool[g->npool];
    it->seed = g->o.seed ^ (UINT64_C(0x51ed27) + g->npool * UINT64_C(7919)) ^
               (g->evolving ? rng_next(r) : 0);
    double sz = rng_lognormal(r, 180e3, 1.1);
    if (sz < GEN_ATT_MIN) {
        sz = GEN_ATT_MIN + rng_below(r, 40000);
    }
    if (sz > (double)max_size) {
        sz = (double)max_size - (double)rng_below(r, max_size / 4);
    }
    it->size = (size_t)sz;
    unsigned total = 0;
    for (size_t i = 0; i < NELEM(att_types); i++) {
        total += att_types[i].weight;
    }
    unsigned pick = (unsigned)rng_below(r, total);
    size_t t = 0;
    while (pick >= att_types[t].weight) {
        pick -= att_types[t].weight;
        t++;
    }
    it->type = (enum att_type)t;
    switch (it->type) {
    case A_JPEG:
        strf(it->fname, sizeof(it->fname), "IMG_%04u.jpg",
             (unsigned)rng_below(r, 10000));
        break;
    default:
        strf(it->fname, sizeof(it->fname), "%s_%s_%u.%s", pick_word(r),
             words[60 + rng_below(r, 150)], (unsigned)rng_below(r, 1000),
             att_types[t].ext);
        /* Keep file names to the token characters MUA's leave unquoted. */
        for (char *c = it->fname; *c; c++) {
            if ((unsigned char)*c > 126) {
                *c = 'x';
            }
        }
        break;
    }
    return g->npool++;
}

/* Forwards reuse recent attachments; the rest are new files. */
static size_t
pick_attachment(struct gen *g, struct rng *r, size_t max_size)
{
    if (g->npool > 0 && rng_chance(r, 0.35)) {
        size_t window = g->npool < 40 ? g->npool : 40;
        size_t i = g->npool - 1 - rng_below(r, window);
        if (g->pool[i].size <= max_size) {
            return i;
        }
    }
    return new_pool_item(g, r, max_size);
}

/* ---- message bodies
 * ----------------------------------------------------------- */

static void
new_boundary(struct rng *r, char *out, size_t size)
{
    char tok[32];
    if (rng_chance(r, 0.5)) {
        rand_hex(r, tok, 28);
        strf(out, size, "0000000000%s", tok);
    } else {
        rand_token(r, tok, 16);
        strf(out, size, "----=_Part_%u_%s", (unsigned)rng_below(r, 99999), tok);
    }
}

/* A text/plain part (headers and body); text is raw UTF-8 in g->text. */
static void
put_text_part(struct gen *g, struct cfr_buf *b, struct rng *r)
{
    const struct cfr_buf *t = &g->text;
    if (is_ascii((const char *)t->data, t->len)) {
        puts_b(g, b,
               "Content-Type: text/plain; charset=us-ascii\n"
               "Content-Transfer-Encoding: 7bit\n\n");
        put(g, b, t->data, t->len);
    } else if (rng_chance(r, 0.5)) {
        puts_b(g, b,
               "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
               "Content-Transfer-Encoding: 8bit\n\n");
        put(g, b, t->data, t->len);
    } else {
        puts_b(g, b,
               "Content-Type: text/plain; charset=UTF-8\n"
               "Content-Transfer-Encoding: quoted-printable\n\n");
        put_qp(g, b, t->data, t->len);
    }
}

/* The HTML alternative of g->text, quoted-printable. */
static void
put_html_part(struct gen *g, struct cfr_buf *b)
{
    puts_b(g, b,
           "Content-Type: text/html; charset=UTF-8\n"
           "Content-Transfer-Encoding: quoted-printable\n\n");
    struct cfr_buf h;
    cfr_buf_init(&h, GEN_MSG_MAX);
    puts_b(g, &h,
           "<html><head><meta http-equiv=\"Content-Type\" "
           "content=\"text/html; charset=UTF-8\"></head>\n<body "
           "style=\"font-family: Arial, sans-serif; font-size: 11pt\">\n<p>");
    const uint8_t *p = g->text.data;
    size_t n = g->text.len;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && i + 1 < n && p[i + 1] == '\n') {
            puts_b(g, &h, "</p>\n<p>");
            i++;
        } else if (p[i] == '<') {
            puts_b(g, &h, "&lt;");
        } else if (p[i] == '>') {
            puts_b(g, &h, "&gt;");
        } else if (p[i] == '&') {
            puts_b(g, &h, "&amp;");
        } else {
            put(g, &h, p + i, 1);
        }
    }
    puts_b(g, &h, "</p>\n</body></html>\n");
    put_qp(g, b, h.data, h.len);
    cfr_buf_fini(&h);
}

/*
 * Writes the Content-Type header(s), the blank line and the body. natt
 * pool attachments (indexes in atts) make it multipart/mixed.
 */
static void
put_body(struct gen *g, struct cfr_buf *b, struct rng *r, bool html,
         const size_t *atts, size_t natt)
{
    char outer[64], inner[64];
    new_boundary(r, outer, sizeof(outer));
    new_boundary(r, inner, sizeof(inner));
    if (natt > 0) {
        putf(g, b, "Content-Type: multipart/mixed;\n boundary=\"%s\"\n\n",
             outer);
        puts_b(g, b, "This is a multi-part message in MIME format.\n");
        putf(g, b, "--%s\n", outer);
    }
    if (html) {
        putf(g, b, "Content-Type: multipart/alternative;\n boundary=\"%s\"\n\n",
             inner);
        putf(g, b, "--%s\n", inner);
        put_text_part(g, b, r);
        putf(g, b, "\n--%s\n", inner);
        put_html_part(g, b);
        putf(g, b, "\n--%s--\n", inner);
    } else {
        put_text_part(g, b, r);
    }
    for (size_t i = 0; i < natt && g->rc == 0; i++) {
        const struct pool_item *it = &g->pool[atts[i]];
        putf(g, b, "\n--%s\n", outer);
        putf(g, b, "Content-Type: %s;\n name=\"%s\"\n",
             att_types[it->type].mime, it->fname);
        putf(g, b, "Content-Disposition: attachment;\n filename=\"%s\"\n",
             it->fname);
        puts_b(g, b, "Content-Transfer-Encoding: base64\n\n");
        size_t alen = gen_att_bytes(g, it, &g->att);
        put_base64(g, b, g->att.data, alen);
    }
    if (natt > 0) {
        putf(g, b, "\n--%s--\n", outer);
    }
}

/* Fills g->text with a body: fresh prose, maybe a quoted earlier message. */
static void
make_text(struct gen *g, struct rng *r, bool reply, const char *quoted_from,
          int64_t secs)
{
    cfr_buf_reset(&g->text);
    double target = rng_lognormal(r, 2200, 0.9);
    if (target > 200e3) {
        target = 200e3;
    }
    if (reply) {
        gen_text(g, &g->text, r, (size_t)(target * 0.4), "");
        char date[64];
        fmt_date(date, sizeof(date), secs - 3600 * (int64_t)rng_below(r, 72),
                 0);
        putf(g, &g->text, "On %s, %s wrote:\n", date, quoted_from);
        gen_text(g, &g->text, r, (size_t)(target * 0.6), "> ");
    } else {
        gen_text(g, &g->text, r, (size_t)target, "");
    }
    if (rng_chance(r, 0.7)) {
        puts_b(g, &g->text, "-- \n");
        putf(g, &g->text, "%s\n%s | +49 30 %07u\n",
             first_names[rng_below(r, NELEM(first_names))],
             words[60 + rng_below(r, 100)], (unsigned)rng_below(r, 10000000));
    }
}

/* ---- headers
 * ------------------------------------------------------------------ */

static void
put_dkim(struct gen *g, struct cfr_buf *b, struct rng *r, const char *domain,
         int64_t secs)
{
    putf(g, b,
         "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s;\n"
         "\ts=s%u; t=%" PRId64 "; bh=",
         domain, (unsigned)(2020 + hash_str(domain) % 6), secs);
    put_random_b64(g, b, r, 43);
    puts_b(g, b,
           "=;\n\th=From:To:Subject:Date:Message-ID:MIME-Version:"
           "Content-Type;\n\tb=");
    for (int line = 0; line < 5; line++) {
        put_random_b64(g, b, r, line == 0 ? 66 : 70);
        puts_b(g, b, line == 4 ? "==\n" : "\n\t ");
    }
}

/*
 * The recipient's trace headers: what its MX and LMTP add on top. Returns
 * nothing; relay is the host that handed the message to the MX.
 */
static void
put_trace(struct gen *g, struct cfr_buf *b, struct rng *r, const struct user *u,
          const char *return_path, const char *relay, int64_t secs)
{
    const char *dom = g->domains[u->domain];
    int tz = domain_tz(dom);
    char date[64], qid[32], lmtp[32];
    fmt_date(date, sizeof(date), secs, tz);
    rand_token(r, qid, 13);
    rand_token(r, lmtp, 22);
    putf(g, b, "Return-Path: <%s>\n", return_path);
    putf(g, b, "Delivered-To: %s\n", u->addr);
    putf(g, b,
         "Received: from mx1.%s (mx1.%s [10.20.0.11])\n"
         "\tby imap%u.%s with LMTP\n\tid %s\n",
         dom, dom, (unsigned)(1 + hash_str(u->local) % 3), dom, lmtp);
    putf(g, b, "\t(envelope-from <%s>)\n\tfor <%s>; %s\n", return_path, u->addr,
         date);
    unsigned score = (unsigned)rng_below(r, 40);
    putf(g, b,
         "X-Spam-Checker-Version: SpamAssassin 3.4.6 (2021-04-09) on mx1.%s\n"
         "X-Spam-Level: %.*s\n",
         dom, (int)(score / 10), "*****");
    putf(g, b,
         "X-Spam-Status: No, score=%s%u.%u required=5.0 tests=DKIM_SIGNED,\n"
         "\tDKIM_VALID,DKIM_VALID_AU,HTML_MESSAGE,SPF_HELO_NONE,SPF_PASS\n"
         "\tautolearn=ham autolearn_force=no version=3.4.6\n",
         score < 5 ? "-" : "", score / 10, score % 10);
    putf(g, b,
         "Received: from %s (%s [198.51.100.%u])\n"
         "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
         "\n\t key-exchange X25519 server-signature RSA-PSS (2048 bits))\n"
         "\t(No client certificate requested)\n"
         "\tby mx1.%s (Postfix) with ESMTPS id %s\n\tfor <%s>; %s\n",
         relay, relay, (unsigned)(1 + rng_below(r, 254)), dom, qid, u->addr,
         date);
}

/* Submission hops inside the sender's own network (0..2 of them). */
static void
put_sender_hops(struct gen *g, struct cfr_buf *b, struct rng *r,
                const char *sender_dom, const char *sender_addr, int64_t secs,
                unsigned hops)
{
    char date[64], qid[32];
    for (unsigned h = 0; h < hops; h++) {
        fmt_date(date, sizeof(date), secs - 1 - (int64_t)h, 0);
        rand_token(r, qid, 13);
        if (h == 0) {
            putf(g, b,
                 "Received: from mail-out1.%s (mail-out1.%s [10.1.%u.%u])\n"
                 "\tby smtp.%s (Postfix) with ESMTP id %s;\n\t%s\n",
                 sender_dom, sender_dom, (unsigned)rng_below(r, 255),
                 (unsigned)rng_below(r, 255), sender_dom, qid, date);
        } else {
            putf(g, b,
                 "Received: from [192.168.%u.%u] (dyn-%u.isp.example "
                 "[203.0.113.%u])\n\t(Authenticated sender: %s)\n"
                 "\tby mail-out1.%s (Postfix) with ESMTPSA id %s;\n\t%s\n",
                 (unsigned)rng_below(r, 255), (unsigned)rng_below(r, 255),
                 (unsigned)rng_below(r, 65535), (unsigned)rng_below(r, 255),
                 sender_addr, sender_dom, qid, date);
        }
    }
}

struct party {
    const char *display;
    const char *addr;
    const char *domain;
};

/*
 * From: down to MIME-Version, and the body. For list posts the list headers
 * go between Message-ID and MIME-Version.
 */
static void
put_core(struct gen *g, struct cfr_buf *b, struct rng *r,
         const struct party *from, const struct party *to,
         const struct party *cc, const char *subject, const char *msgid,
         int64_t secs, const struct list *list)
{
    char date[64];
    fmt_date(date, sizeof(date), secs, domain_tz(from->domain));
    puts_b(g, b, "From: ");
    put_mailbox(g, b, r, from->display, from->addr);
    puts_b(g, b, "\nTo: ");
    put_mailbox(g, b, r, to->display, to->addr);
    puts_b(g, b, "\n");
    if (cc != NULL) {
        puts_b(g, b, "Cc: ");
        put_mailbox(g, b, r, cc->display, cc->addr);
        puts_b(g, b, "\n");
    }
    puts_b(g, b, "Subject: ");
    put_hdr_text(g, b, r, subject);
    putf(g, b, "\nDate: %s\nMessage-ID: <%s>\n", date, msgid);
    if (strstr(subject, "Re: ") != NULL) {
        char ref[48];
        rand_hex(r, ref, 24);
        putf(g, b, "In-Reply-To: <%s@%s>\nReferences: <%s@%s>\n", ref,
             to->domain, ref, to->domain);
    }
    if (list != NULL) {
        putf(g, b,
             "List-Id: %s discussion <%s.%s>\n"
             "List-Unsubscribe: <https://%s/mailman/options/%s>,\n"
             " <mailto:%s-request@%s?subject=unsubscribe>\n"
             "List-Archive: <https://%s/archives/%s/>\n"
             "List-Post: <mailto:%s@%s>\n"
             "List-Help: <mailto:%s-request@%s?subject=help>\n"
             "Precedence: list\n",
             list->name, list->name, GEN_LIST_DOMAIN, GEN_LIST_DOMAIN,
             list->name, list->name, GEN_LIST_DOMAIN, GEN_LIST_DOMAIN,
             list->name, list->name, GEN_LIST_DOMAIN, list->name,
             GEN_LIST_DOMAIN);
    }
    if (rng_chance(r, 0.6)) {
        putf(g, b, "User-Agent: %s\n", mailers[rng_below(r, NELEM(mailers))]);
    }
    puts_b(g, b, "MIME-Version: 1.0\n");
}

static void
pick_contact(struct gen *g, struct rng *r, struct party *p)
{
    const struct contact *c = &g->contacts[rng_below(r, GEN_NCONTACTS)];
    p->display = c->display;
    p->addr = c->addr;
    p->domain = c->domain;
}

static void
user_party(struct gen *g, const struct user *u, struct party *p)
{
    p->display = u->display;
    p->addr = u->addr;
    p->domain = g->domains[u->domain];
}

static size_t
pick_atts(struct gen *g, struct rng *r, double p, size_t max_size, size_t *atts)
{
    if (!rng_chance(r, p)) {
        return 0;
    }
    size_t n = rng_chance(r, 0.7) ? 1 : rng_chance(r, 0.65) ? 2 : 3;
    for (size_t i = 0; i < n; i++) {
        atts[i] = pick_attachment(g, r, max_size);
    }
    return n;
}

/*
 * A personal message for u into b: incoming (with trace headers) or
 * authored by u (Sent/Drafts: what the MUA saved, no trace).
 */
static void
build_personal(struct gen *g, struct rng *r, const struct user *u,
               bool authored, int64_t secs, struct cfr_buf *b)
{
    struct party me, other, ccp;
    user_party(g, u, &me);
    if (!authored && rng_chance(r, 0.15) && g->nusers > 1) {
        /* A colleague on the same host. */
        const struct user *v = &g->users[rng_below(r, g->nusers)];
        user_party(g, v, &other);
    } else {
        pick_contact(g, r, &other);
    }
    const struct party *from = authored ? &me : &other;
    const struct party *to = authored ? &other : &me;
    const struct party *cc = NULL;
    if (rng_chance(r, 0.2)) {
        pick_contact(g, r, &ccp);
        cc = &ccp;
    }
    size_t atts[3];
    size_t natt = pick_atts(g, r, 0.10, GEN_ATT_MAX, atts);
    char subject[256], s2[240], msgid[128], tok[40];
    gen_subject(r, s2, sizeof(s2));
    bool reply = rng_chance(r, 0.3);
    strf(subject, sizeof(subject), "%s%s",
         natt > 0 && rng_chance(r, 0.4) ? "Fwd: "
         : reply                        ? "Re: "
                                        : "",
         s2);
    rand_hex(r, tok, 32);
    strf(msgid, sizeof(msgid), "%.16s.%.16s@%s", tok, tok + 16, from->domain);
    make_text(g, r, reply, other.display, secs);

    cfr_buf_reset(b);
    if (!authored) {
        char relay[160];
        strf(relay, sizeof(relay), "smtp.%s", from->domain);
        put_trace(g, b, r, u, from->addr, relay, secs);
        put_sender_hops(g, b, r, from->domain, from->addr, secs,
                        (unsigned)rng_below(r, 3));
        if (rng_chance(r, 0.8)) {
            put_dkim(g, b, r, from->domain, secs - 2);
        }
    }
    put_core(g, b, r, from, to, cc, subject, msgid, secs - (authored ? 0 : 2),
             NULL);
    put_body(g, b, r, rng_chance(r, 0.4), atts, natt);
    if (natt > 0) {
        g->with_att++;
    }
}

/* ---- files
 * -------------------------------------------------------------------- */

static int
write_file(struct gen *g, const char *path, const void *p, size_t n,
           int64_t t_us)
{
    int rc = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "create %s", path);
        goto out;
    }
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "write %s", path);
            goto out;
        }
        q += w;
        n -= (size_t)w;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "close %s", path);
        goto out;
    }
    fd = -1;
    struct timespec ts[2];
    ts[0].tv_sec = (time_t)(t_us / GEN_US);
    ts[0].tv_nsec = (long)(t_us % GEN_US) * 1000;
    ts[1] = ts[0];
    if (utimensat(AT_FDCWD, path, ts, 0) != 0) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "utimensat %s", path);
        goto out;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static int
set_mtime(struct gen *g, const char *path, int64_t t_us)
{
    struct timespec ts[2];
    ts[0].tv_sec = (time_t)(t_us / GEN_US);
    ts[0].tv_nsec = (long)(t_us % GEN_US) * 1000;
    ts[1] = ts[0];
    if (utimensat(AT_FDCWD, path, ts, 0) != 0) {
        return CFR_ERR_ERRNO(&g->err, CFR_EIO, "utimensat %s", path);
    }
    return 0;
}

static int
make_dir(struct gen *g, const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        return CFR_ERR_ERRNO(&g->err, CFR_EIO, "mkdir %s", path);
    }
    return 0;
}

/* Flags in a :2, suffix, in ASCII order: D F P R S T, then keywords a-z. */
struct flags {
    bool d, f, p, r, s, t, kw[3];
};

static void
flags_str(const struct flags *fl, char *out)
{
    size_t n = 0;
    if (fl->d) {
        out[n++] = 'D';
    }
    if (fl->f) {
        out[n++] = 'F';
    }
    if (fl->p) {
        out[n++] = 'P';
    }
    if (fl->r) {
        out[n++] = 'R';
    }
    if (fl->s) {
        out[n++] = 'S';
    }
    if (fl->t) {
        out[n++] = 'T';
    }
    for (int k = 0; k < 3; k++) {
        if (fl->kw[k]) {
            out[n++] = (char)('a' + k);
        }
    }
    out[n] = '\0';
}

static void
flags_parse(const char *s, struct flags *fl)
{
    memset(fl, 0, sizeof(*fl));
    for (; *s; s++) {
        switch (*s) {
        case 'D':
            fl->d = true;
            break;
        case 'F':
            fl->f = true;
            break;
        case 'P':
            fl->p = true;
            break;
        case 'R':
            fl->r = true;
            break;
        case 'S':
            fl->s = true;
            break;
        case 'T':
            fl->t = true;
            break;
        default:
            if (*s >= 'a' && *s <= 'c') {
                fl->kw[*s - 'a'] = true;
            }
            break;
        }
    }
}

/*
 * Where a message lands: false for new/ (not yet seen by any IMAP client),
 * else true and its flags. age is how long before the end of the timeline
 * it arrived.
 */
static bool
choose_flags(struct gen *g, struct rng *r, const struct folder *f,
             int64_t age_us, struct flags *fl)
{
    memset(fl, 0, sizeof(*fl));
    switch (f->kind) {
    case F_INBOX:
        if (g->evolving || (age_us < 3 * GEN_DAY_US && rng_chance(r, 0.6))) {
            return false;
        }
        fl->s = rng_chance(r, age_us < 7 * GEN_DAY_US ? 0.6 : 0.84);
        if (fl->s) {
            fl->r = rng_chance(r, 0.18);
            fl->kw[0] = rng_chance(r, 0.04);
            fl->p = rng_chance(r, 0.005);
        }
        fl->f = rng_chance(r, 0.05);
        fl->t = rng_chance(r, 0.01);
        fl->kw[1] = rng_chance(r, 0.02);
        fl->kw[2] = rng_chance(r, 0.03);
        return true;
    case F_LIST:
        if (g->evolving || f->unopened ||
            (age_us < 30 * GEN_DAY_US && rng_chance(r, 0.6))) {
            return false;
        }
        fl->s = rng_chance(r, 0.55);
        fl->f = rng_chance(r, 0.01);
        return true;
    case F_ARCHIVE:
        fl->s = rng_chance(r, 0.98);
        fl->r = rng_chance(r, 0.2);
        fl->f = rng_chance(r, 0.03);
        return true;
    case F_TRASH:
        fl->s = rng_chance(r, 0.9);
        fl->t = rng_chance(r, 0.05);
        return true;
    case F_SENT:
        fl->s = true;
        return true;
    case F_DRAFTS:
        fl->d = true;
        fl->s = true;
        return true;
    }
    return true;
}

static size_t
count_lf(const uint8_t *p, size_t n)
{
    size_t c = 0;
    const uint8_t *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

static int
add_entry(struct gen *g, struct folder *f, uint32_t uid, const char *base)
{
    int rc =
        grow(g, (void **)&f->ents, &f->ents_cap, f->nents, sizeof(*f->ents));
    if (rc != 0) {
        return rc;
    }
    char *d = xstrdup(g, base);
    if (d == NULL) {
        return g->rc;
    }
    f->ents[f->nents].uid = uid;
    f->ents[f->nents].base = d;
    f->nents++;
    f->dirty = true;
    return 0;
}

/* Delivers b into folder f at t_us (invariants 2 and 3). */
static int
deliver(struct gen *g, struct rng *r, struct user *u, struct folder *f,
        int64_t t_us, const struct cfr_buf *b)
{
    int rc = 0;
    char base[256], path[GEN_PATH_MAX], fl[16];
    struct flags flags;
    bool cur = choose_flags(g, r, f, g->now_us - t_us, &flags);
    flags_str(&flags, fl);
    strf(base, sizeof(base), "%" PRId64 ".M%06uP%u.imap%u,S=%zu,W=%zu",
         t_us / GEN_US, (unsigned)(t_us % GEN_US),
         (unsigned)(1000 + rng_below(r, 98000)),
         (unsigned)(1 + hash_str(u->local) % 3), b->len,
         b->len + count_lf(b->data, b->len));
    int k =
        cur ? snprintf(path, sizeof(path), "%s/cur/%s:2,%s", f->path, base, fl)
            : snprintf(path, sizeof(path), "%s/new/%s", f->path, base);
    if (k < 0 || (size_t)k >= sizeof(path)) {
        rc = CFR_ERR(&g->err, CFR_ELIMIT, "path too long: %s", f->path);
        goto out;
    }
    if ((rc = write_file(g, path, b->data, b->len, t_us)) != 0) {
        goto out;
    }
    if ((rc = add_entry(g, f, f->next_uid, base)) != 0) {
        goto out;
    }
    f->next_uid++;
    f->last_us = t_us;
    g->bytes += b->len;
    g->messages++;
out:
    return rc;
}

static struct folder *
find_folder(struct user *u, enum fkind kind, int list)
{
    for (size_t i = 0; i < u->nfolders; i++) {
        if (u->folders[i].kind == kind &&
            (kind != F_LIST || u->folders[i].list == list)) {
            return &u->folders[i];
        }
    }
    return NULL;
}

/* Takes the next strictly later delivery time (invariant 2). */
static int64_t
next_time(struct gen *g, int64_t t_us)
{
    if (t_us <= g->last_us) {
        t_us = g->last_us + 1;
    }
    g->last_us = t_us;
    return t_us;
}

static int
event_personal(struct gen *g, struct rng *r, struct user *u, int64_t t_us)
{
    bool authored = rng_chance(r, 0.18);
    enum fkind kind = F_INBOX;
    if (authored) {
        kind = rng_chance(r, 0.9) || g->evolving ? F_SENT : F_DRAFTS;
    } else if (!g->evolving) {
        if (year_of(t_us / GEN_US) == g->archive_year && rng_chance(r, 0.45)) {
            kind = F_ARCHIVE;
        } else if (rng_chance(r, 0.07)) {
            kind = F_TRASH;
        }
    }
    struct folder *f = find_folder(u, kind, -1);
    if (f == NULL) {
        f = &u->folders[0];
    }
    build_personal(g, r, u, authored, t_us / GEN_US, &g->msg);
    if (g->rc != 0) {
        return g->rc;
    }
    return deliver(g, r, u, f, t_us, &g->msg);
}

/*
 * One post to list l: the shared part is built once; each member gets it
 * behind its own trace headers, a moment later than the previous one.
 */
static int
event_list(struct gen *g, struct rng *r, size_t l, int64_t t_us)
{
    int rc = 0;
    const struct list *list = &g->lists[l];
    struct party from, to;
    pick_contact(g, r, &from);
    char laddr[128], subject[300], s2[240], msgid[128], tok[40];
    strf(laddr, sizeof(laddr), "%s@%s", list->name, GEN_LIST_DOMAIN);
    to.display = list->name;
    to.addr = laddr;
    to.domain = GEN_LIST_DOMAIN;
    gen_subject(r, s2, sizeof(s2));
    bool reply = rng_chance(r, 0.5);
    strf(subject, sizeof(subject), "%s[%s] %s", reply ? "Re: " : "", list->name,
         s2);
    rand_hex(r, tok, 32);
    strf(msgid, sizeof(msgid), "%.20s.%.12s@%s", tok, tok + 20, from.domain);
    size_t atts[3];
    size_t natt = pick_atts(g, r, 0.03, GEN_LIST_ATT_MAX, atts);
    make_text(g, r, reply, from.display, t_us / GEN_US);

    struct cfr_buf *s = &g->shared;
    cfr_buf_reset(s);
    char date[64], qid[32];
    fmt_date(date, sizeof(date), t_us / GEN_US - 1, 0);
    rand_token(r, qid, 13);
    putf(g, s,
         "Received: from smtp.%s (smtp.%s [192.0.2.%u])\n"
         "\tby %s (Postfix) with ESMTPS id %s\n\tfor <%s>; %s\n",
         from.domain, from.domain, (unsigned)rng_below(r, 255), GEN_LIST_DOMAIN,
         qid, laddr, date);
    put_dkim(g, s, r, from.domain, t_us / GEN_US - 3);
    put_core(g, s, r, &from, &to, NULL, subject, msgid, t_us / GEN_US - 3,
             list);
    put_body(g, s, r, rng_chance(r, 0.2), atts, natt);
    if (g->rc != 0) {
        rc = g->rc;
        goto out;
    }
    int64_t t = t_us;
    for (size_t m = 0; m < list->nmembers; m++) {
        struct user *u = &g->users[list->members[m]];
        struct folder *f = find_folder(u, F_LIST, (int)l);
        if (f == NULL) {
            continue;
        }
        char vrp[256];
        strf(vrp, sizeof(vrp), "%s-bounces+%s=%s@%s", list->name, u->local,
             g->domains[u->domain], GEN_LIST_DOMAIN);
        t = next_time(g, t + (int64_t)rng_below(r, 400000));
        cfr_buf_reset(&g->msg);
        put_trace(g, &g->msg, r, u, vrp, GEN_LIST_DOMAIN, t / GEN_US);
        put(g, &g->msg, s->data, s->len);
        if (g->rc != 0) {
            rc = g->rc;
            goto out;
        }
        if ((rc = deliver(g, r, u, f, t, &g->msg)) != 0) {
            goto out;
        }
        g->list_copies++;
        if (natt > 0) {
            g->with_att++;
        }
    }
out:
    return rc;
}

static size_t
pick_user(struct gen *g, struct rng *r)
{
    double x = rng_unit(r) * g->cum_weight[g->nusers - 1];
    size_t lo = 0, hi = g->nusers - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->cum_weight[mid] <= x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/*
 * The delivery stream over (t0, t1]: personal messages at per_user each
 * (mean, spread by user weight) and per_list posts per list. Stops early
 * when --size is reached.
 */
static int
run_events(struct gen *g, struct rng *r, int64_t t0, int64_t t1,
           double per_user, double per_list)
{
    int rc = 0;
    double n_personal = per_user * (double)g->nusers;
    double n_lists = per_list * (double)g->nlists;
    double total = n_personal + n_lists;
    if (total <= 0 || g->nusers == 0) {
        goto out;
    }
    double gap = (double)(t1 - t0) / total;
    int64_t t = t0;
    for (;;) {
        t += 1 + (int64_t)rng_exp(r, gap);
        if (t > t1) {
            break;
        }
        if (g->event_cap != 0 && g->bytes >= g->event_cap) {
            break;
        }
        t = next_time(g, t);
        if (rng_unit(r) * total < n_lists) {
            rc = event_list(g, r, rng_below(r, g->nlists), t);
            t = g->last_us;
        } else {
            rc = event_personal(g, r, &g->users[pick_user(g, r)], t);
        }
        if (rc != 0) {
            goto out;
        }
    }
out:
    return rc;
}

/* ---- folder metadata
 * ------------------------------------------------------------ */

static int
write_text_file(struct gen *g, const char *path, const struct cfr_buf *b,
                int64_t t_us)
{
    char tmp[GEN_PATH_MAX];
    int rc = 0;
    strf(tmp, sizeof(tmp), "%s.gen-tmp", path);
    (void)unlink(tmp);
    if ((rc = write_file(g, tmp, b->data, b->len, t_us)) != 0) {
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "rename %s", tmp);
        goto out;
    }
out:
    return rc;
}

/*
 * Writes f's dovecot-uidlist (when generating, or when evolve changed it)
 * and dovecot-keywords (when generating), and stamps cur/new/tmp with the
 * newest delivery so directory times are deterministic too.
 */
static int
write_folder_meta(struct gen *g, struct folder *f)
{
    int rc = 0;
    char path[GEN_PATH_MAX];
    struct cfr_buf b;
    cfr_buf_init(&b, GEN_MSG_MAX);
    int64_t stamp = f->last_us ? f->last_us : (int64_t)f->uidvalidity * GEN_US;
    if (!g->evolving || f->dirty) {
        putf(g, &b, "3 V%u N%u G%s\n", f->uidvalidity, f->next_uid, f->guid);
        for (size_t i = 0; i < f->nents; i++) {
            putf(g, &b, "%u :%s\n", f->ents[i].uid, f->ents[i].base);
        }
        strf(path, sizeof(path), "%s/dovecot-uidlist", f->path);
        if ((rc = g->rc) != 0 ||
            (rc = write_text_file(g, path, &b, stamp)) != 0) {
            goto out;
        }
    }
    if (!g->evolving) {
        cfr_buf_reset(&b);
        puts_b(g, &b, "0 $Forwarded\n1 $NotJunk\n2 $label1\n");
        strf(path, sizeof(path), "%s/dovecot-keywords", f->path);
        if ((rc = g->rc) != 0 ||
            (rc = write_text_file(g, path, &b,
                                  (int64_t)f->uidvalidity * GEN_US)) != 0) {
            goto out;
        }
    }
    static const char *const sub[] = {"cur", "new", "tmp"};
    for (size_t i = 0; i < NELEM(sub); i++) {
        strf(path, sizeof(path), "%s/%s", f->path, sub[i]);
        if ((rc = set_mtime(g, path, stamp)) != 0) {
            goto out;
        }
    }
out:
    cfr_buf_fini(&b);
    return rc;
}

static int
write_user_meta(struct gen *g, struct user *u)
{
    int rc = 0;
    char path[GEN_PATH_MAX];
    struct cfr_buf b;
    cfr_buf_init(&b, 1u << 20);
    int64_t newest = 0;
    for (size_t i = 0; i < u->nfolders; i++) {
        if ((rc = write_folder_meta(g, &u->folders[i])) != 0) {
            goto out;
        }
        if (u->folders[i].last_us > newest) {
            newest = u->folders[i].last_us;
        }
        if (i > 0) {
            putf(g, &b, "%s\n", u->folders[i].name);
        }
    }
    if (newest == 0) {
        newest = (int64_t)u->folders[0].uidvalidity * GEN_US;
    }
    strf(path, sizeof(path), "%s/Maildir/subscriptions", u->home);
    if ((rc = g->rc) != 0 ||
        (!g->evolving && (rc = write_text_file(g, path, &b, newest)) != 0)) {
        goto out;
    }
    for (size_t i = 1; i < u->nfolders; i++) {
        if ((rc = set_mtime(g, u->folders[i].path, newest)) != 0) {
            goto out;
        }
    }
    strf(path, sizeof(path), "%s/Maildir", u->home);
    if ((rc = set_mtime(g, path, newest)) != 0 ||
        (rc = set_mtime(g, u->home, newest)) != 0) {
        goto out;
    }
out:
    cfr_buf_fini(&b);
    return rc;
}

/* ---- setup (fresh corpus)
 * -------------------------------------------------------- */

static int
add_folder(struct gen *g, struct user *u, const char *name, enum fkind kind,
           int list, struct rng *r, bool create)
{
    int rc = 0;
    char path[GEN_PATH_MAX];
    size_t cap = u->nfolders; /* folders grow one at a time */
    struct folder *nf =
        cfr_realloc(u->folders, (cap + 1) * sizeof(*u->folders));
    if (nf == NULL) {
        rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    u->folders = nf;
    struct folder *f = &u->folders[u->nfolders];
    memset(f, 0, sizeof(*f));
    if (name[0] == '\0') {
        strf(path, sizeof(path), "%s/Maildir", u->home);
    } else {
        strf(path, sizeof(path), "%s/Maildir/.%s", u->home, name);
    }
    f->path = xstrdup(g, path);
    f->name = xstrdup(g, name);
    if (f->path == NULL || f->name == NULL) {
        cfr_free(f->path);
        cfr_free(f->name);
        rc = g->rc;
        goto out;
    }
    f->kind = kind;
    f->list = list;
    f->next_uid = 1;
    f->uidvalidity =
        (uint32_t)(g->now_us / GEN_US - (int64_t)g->o.days * 86400 -
                   (int64_t)rng_below(r, 400 * 86400));
    rand_hex(r, f->guid, 32);
    f->unopened = kind == F_LIST && rng_chance(r, 0.25);
    u->nfolders++;
    if (!create) {
        goto out;
    }
    static const char *const sub[] = {"cur", "new", "tmp"};
    if ((rc = make_dir(g, path)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < NELEM(sub); i++) {
        char p2[GEN_PATH_MAX];
        strf(p2, sizeof(p2), "%s/%s", path, sub[i]);
        if ((rc = make_dir(g, p2)) != 0) {
            goto out;
        }
    }
    if (name[0] != '\0') {
        char p2[GEN_PATH_MAX];
        strf(p2, sizeof(p2), "%s/maildirfolder", path);
        rc = write_file(g, p2, "", 0, (int64_t)f->uidvalidity * GEN_US);
    }
out:
    return rc;
}

/* An ASCII address local part from a display name ("Jürgen" -> "juergen"). */
static void
ascii_local(const char *in, char *out, size_t size)
{
    static const struct {
        const char *from, *to;
    } map[] = {{"ü", "ue"}, {"ö", "oe"}, {"ä", "ae"}, {"é", "e"}, {"è", "e"},
               {"ç", "c"},  {"ë", "e"},  {"ï", "i"},  {"í", "i"}, {"á", "a"},
               {"ó", "o"},  {"ø", "o"},  {"å", "a"},  {"ł", "l"}, {"Ł", "l"},
               {"ś", "s"},  {"ñ", "n"},  {"ã", "a"},  {"Z", "z"}};
    size_t n = 0;
    while (*in && n + 3 < size) {
        bool done = false;
        for (size_t i = 0; i < NELEM(map) && !done; i++) {
            size_t fl = strlen(map[i].from);
            if (strncmp(in, map[i].from, fl) == 0) {
                for (const char *t = map[i].to; *t && n + 1 < size; t++) {
                    out[n++] = *t;
                }
                in += fl;
                done = true;
            }
        }
        if (done) {
            continue;
        }
        unsigned char c = (unsigned char)*in++;
        if (c >= 'A' && c <= 'Z') {
            out[n++] = (char)(c - 'A' + 'a');
        } else if ((c >= 'a' && c <= 'z') || c == '.' || c == '-') {
            out[n++] = (char)c;
        } else if (c == ' ') {
            out[n++] = '.';
        }
    }
    out[n] = '\0';
}

static int
setup(struct gen *g)
{
    int rc = 0;
    struct rng r;
    rng_seed(&r, g->o.seed, S_SETUP, 0);
    char path[GEN_PATH_MAX];

    g->ndomains = g->o.domains;
    g->domains = cfr_calloc(g->ndomains, sizeof(*g->domains));
    g->nusers = g->o.domains * g->o.users;
    g->users = cfr_calloc(g->nusers, sizeof(*g->users));
    g->cum_weight = cfr_calloc(g->nusers ? g->nusers : 1, sizeof(double));
    if (g->domains == NULL || g->users == NULL || g->cum_weight == NULL) {
        rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = make_dir(g, g->o.out)) != 0) {
        goto out;
    }
    for (size_t d = 0; d < g->ndomains; d++) {
        char name[128];
        size_t stem = d % NELEM(domain_stems);
        size_t round = d / NELEM(domain_stems);
        if (round == 0) {
            strf(name, sizeof(name), "%s%s", domain_stems[stem],
                 tlds[rng_below(&r, NELEM(tlds))]);
        } else {
            strf(name, sizeof(name), "%s%zu%s", domain_stems[stem], round + 1,
                 tlds[rng_below(&r, NELEM(tlds))]);
        }
        if ((g->domains[d] = xstrdup(g, name)) == NULL) {
            rc = g->rc;
            goto out;
        }
        strf(path, sizeof(path), "%s/%s", g->o.out, name);
        if ((rc = make_dir(g, path)) != 0) {
            goto out;
        }
    }
    double cum = 0;
    for (size_t i = 0; i < g->nusers; i++) {
        struct user *u = &g->users[i];
        u->domain = i / g->o.users;
        char disp[128], local[128];
        for (unsigned attempt = 0;; attempt++) {
            strf(disp, sizeof(disp), "%s %s",
                 first_names[rng_below(&r, NELEM(first_names))],
                 last_names[rng_below(&r, NELEM(last_names))]);
            ascii_local(disp, local, sizeof(local) - 8);
            if (attempt > 3) {
                size_t l = strlen(local);
                strf(local + l, 8, "%u", attempt);
            }
            bool dup = false;
            for (size_t j = u->domain * g->o.users; j < i && !dup; j++) {
                dup = strcmp(g->users[j].local, local) == 0;
            }
            if (!dup) {
                break;
            }
        }
        char addr[300];
        strf(addr, sizeof(addr), "%s@%s", local, g->domains[u->domain]);
        strf(path, sizeof(path), "%s/%s/%s", g->o.out, g->domains[u->domain],
             local);
        u->local = xstrdup(g, local);
        u->display = xstrdup(g, disp);
        u->addr = xstrdup(g, addr);
        u->home = xstrdup(g, path);
        if (g->rc != 0) {
            rc = g->rc;
            goto out;
        }
        u->weight = rng_lognormal(&r, 1.0, 0.6);
        cum += u->weight;
        g->cum_weight[i] = cum;
        u->has_mbox = i == 0 || rng_chance(&r, 0.12);
        if ((rc = make_dir(g, u->home)) != 0) {
            goto out;
        }
        char archive[32];
        strf(archive, sizeof(archive), "Archive.%d", g->archive_year);
        if ((rc = add_folder(g, u, "", F_INBOX, -1, &r, true)) != 0 ||
            (rc = add_folder(g, u, "Sent", F_SENT, -1, &r, true)) != 0 ||
            (rc = add_folder(g, u, "Drafts", F_DRAFTS, -1, &r, true)) != 0 ||
            (rc = add_folder(g, u, "Trash", F_TRASH, -1, &r, true)) != 0 ||
            (rc = add_folder(g, u, archive, F_ARCHIVE, -1, &r, true)) != 0) {
            goto out;
        }
    }
    /* Lists: members are a random subset of all users on the host. */
    g->nlists = g->o.list_members > 0 && g->nusers > 0 ? g->o.lists : 0;
    for (size_t l = 0; l < g->nlists; l++) {
        struct list *list = &g->lists[l];
        struct rng lr;
        rng_seed(&lr, g->o.seed, S_LIST, l);
        list->name = xstrdup(g, list_names[l]);
        size_t m =
            g->o.list_members < g->nusers ? g->o.list_members : g->nusers;
        size_t *perm = cfr_calloc(g->nusers, sizeof(size_t));
        list->members = cfr_calloc(m ? m : 1, sizeof(size_t));
        if (perm == NULL || list->members == NULL || list->name == NULL) {
            cfr_free(perm);
            rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < g->nusers; i++) {
            perm[i] = i;
        }
        for (size_t i = 0; i < m; i++) {
            size_t j = i + rng_below(&lr, g->nusers - i);
            size_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        /* Members in user order, so each post reaches mailboxes in order. */
        for (size_t i = 0; i < m; i++) {
            size_t best = i;
            for (size_t j = i + 1; j < m; j++) {
                if (perm[j] < perm[best]) {
                    best = j;
                }
            }
            size_t t = perm[i];
            perm[i] = perm[best];
            perm[best] = t;
            list->members[i] = perm[i];
        }
        list->nmembers = m;
        cfr_free(perm);
        char fname[64];
        strf(fname, sizeof(fname), "Lists.%s", list->name);
        for (size_t i = 0; i < m; i++) {
            struct user *u = &g->users[list->members[i]];
            if ((rc = add_folder(g, u, fname, F_LIST, (int)l, &r, true)) != 0) {
                goto out;
            }
        }
    }
out:
    return rc;
}

static void
make_contacts(struct gen *g)
{
    struct rng r;
    rng_seed(&r, g->o.seed, S_CONTACTS, 0);
    for (size_t i = 0; i < GEN_NCONTACTS; i++) {
        struct contact *c = &g->contacts[i];
        char local[96];
        strf(c->display, sizeof(c->display), "%s %s",
             first_names[rng_below(&r, NELEM(first_names))],
             last_names[rng_below(&r, NELEM(last_names))]);
        ascii_local(c->display, local, sizeof(local));
        c->domain = ext_domains[rng_below(&r, NELEM(ext_domains))];
        strf(c->addr, sizeof(c->addr), "%s@%s", local, c->domain);
    }
}

/*
 * An mboxrd archive of older mail: "From " separator lines, and body lines
 * matching ^>*From  get one more '>' so they cannot be taken for one.
 */
static int
write_mbox(struct gen *g, struct user *u, int64_t t0_us)
{
    int rc = 0;
    struct rng r;
    rng_seed(&r, g->o.seed, S_MBOX, (uint64_t)(u - g->users));
    char path[GEN_PATH_MAX];
    strf(path, sizeof(path), "%s/mail", u->home);
    if ((rc = make_dir(g, path)) != 0) {
        goto out;
    }
    struct cfr_buf box;
    cfr_buf_init(&box, (size_t)1 << 34);
    size_t n = 10 + rng_poisson(&r, 30);
    int64_t t = t0_us - 400 * GEN_DAY_US;
    for (size_t i = 0; i < n && g->rc == 0; i++) {
        /* Under --size, an archive keeps at least a few messages. */
        if (i >= 3 && g->o.size != 0 && g->bytes + box.len >= g->o.size) {
            break;
        }
        t += 1 + (int64_t)rng_exp(&r, (double)(380 * GEN_DAY_US) / (double)n);
        build_personal(g, &r, u, false, t / GEN_US, &g->msg);
        char when[64];
        fmt_ctime(when, sizeof(when), t / GEN_US);
        /* The envelope sender is the Return-Path, the first line. */
        const char *rp = (const char *)g->msg.data + strlen("Return-Path: <");
        const char *end = memchr(rp, '>', g->msg.len);
        putf(g, &box, "From %.*s %s\n", (int)(end ? end - rp : 0), rp, when);
        const uint8_t *p = g->msg.data;
        size_t len = g->msg.len;
        size_t pos = 0;
        while (pos < len) {
            const uint8_t *nl = memchr(p + pos, '\n', len - pos);
            size_t ll = nl ? (size_t)(nl - (p + pos)) + 1 : len - pos;
            size_t k = pos;
            while (k < pos + ll && p[k] == '>') {
                k++;
            }
            if (pos + ll - k >= 5 && memcmp(p + k, "From ", 5) == 0) {
                puts_b(g, &box, ">");
            }
            put(g, &box, p + pos, ll);
            pos += ll;
        }
        puts_b(g, &box, "\n");
        g->mbox_messages++;
        g->messages++;
    }
    if ((rc = g->rc) != 0) {
        goto done;
    }
    strf(path, sizeof(path), "%s/mail/old-archive.mbox", u->home);
    if ((rc = write_file(g, path, box.data, box.len, t)) != 0) {
        goto done;
    }
    g->bytes += box.len;
    strf(path, sizeof(path), "%s/mail", u->home);
    rc = set_mtime(g, path, t);
done:
    cfr_buf_fini(&box);
out:
    return rc;
}

static int
generate(struct gen *g)
{
    int rc = 0;
    DIR *d = opendir(g->o.out);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                closedir(d);
                rc = CFR_ERR(&g->err, CFR_EEXIST,
                             "%s is not empty (use --evolve to change it)",
                             g->o.out);
                goto out;
            }
        }
        closedir(d);
    }
    g->now_us = g->o.now * GEN_US;
    g->archive_year = year_of(g->o.now) - 1;
    make_contacts(g);
    if ((rc = setup(g)) != 0) {
        goto out;
    }
    int64_t t0 = g->now_us - (int64_t)g->o.days * GEN_DAY_US;
    /*
     * A quarter of deliveries are list copies: posts per list follow from
     * the members each post reaches.
     */
    double per_user = g->o.messages_per_user;
    double list_share = g->nlists > 0 ? 0.25 : 0.0;
    double per_list = 0;
    if (g->nlists > 0) {
        size_t m = g->lists[0].nmembers;
        per_list = per_user * list_share * (double)g->nusers /
                   ((double)m * (double)g->nlists);
    }
    struct rng r;
    rng_seed(&r, g->o.seed, S_EVENTS, 0);
    g->last_us = t0;
    /* Leave a twentieth of --size to the mbox archives written last. */
    g->event_cap = g->o.size - g->o.size / 20;
    if ((rc = run_events(g, &r, t0, g->now_us - 60 * GEN_US,
                         per_user * (1 - list_share), per_list)) != 0) {
        goto out;
    }
    /* Older mail in mbox archives, after the Maildirs got their share. */
    for (size_t i = 0; i < g->nusers; i++) {
        if (g->users[i].has_mbox && (rc = write_mbox(g, &g->users[i], t0))) {
            goto out;
        }
    }
    for (size_t i = 0; i < g->nusers; i++) {
        if ((rc = write_user_meta(g, &g->users[i])) != 0) {
            goto out;
        }
    }
out:
    return rc;
}

/* ---- evolve ----------------------------------------------------------------
 */

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in dir (skipping dot entries unless dots), owned strings. */
static int
list_dir(struct gen *g, const char *dir, bool dots, char ***names_r,
         size_t *n_r)
{
    int rc = 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "opendir %s", dir);
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (de->d_name[0] == '.' && !dots) {
            continue;
        }
        if ((rc = grow(g, (void **)&names, &cap, n, sizeof(*names))) != 0) {
            goto out;
        }
        if ((names[n] = xstrdup(g, de->d_name)) == NULL) {
            rc = g->rc;
            goto out;
        }
        n++;
    }
    if (n > 1) {
        qsort(names, n, sizeof(*names), cmp_str);
    }
out:
    if (d != NULL) {
        closedir(d);
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            cfr_free(names[i]);
        }
        cfr_free(names);
        names = NULL;
        n = 0;
    }
    *names_r = names;
    *n_r = n;
    return rc;
}

static void
free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cfr_free(names[i]);
    }
    cfr_free(names);
}

static bool
is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* "<secs>.M<usecs>..." -> microseconds; 0 when the name is not ours. */
static int64_t
name_time(const char *name)
{
    char *end;
    errno = 0;
    long long secs = strtoll(name, &end, 10);
    if (errno != 0 || end[0] != '.' || end[1] != 'M') {
        return 0;
    }
    long long us = strtoll(end + 2, &end, 10);
    if (*end != 'P' || us < 0 || us >= GEN_US) {
        return 0;
    }
    return (int64_t)secs * GEN_US + us;
}

/* Reads a folder's uidlist and messages back into f (evolve). */
static int
load_folder(struct gen *g, struct folder *f)
{
    int rc = 0;
    char path[GEN_PATH_MAX];
    FILE *fp = NULL;
    char **names = NULL;
    size_t n = 0;
    char line[1024];
    strf(path, sizeof(path), "%s/dovecot-uidlist", f->path);
    if ((fp = fopen(path, "r")) == NULL) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "open %s", path);
        goto out;
    }
    unsigned v, nx;
    char guid[64];
    if (fgets(line, sizeof(line), fp) == NULL ||
        sscanf(line, "3 V%u N%u G%32s", &v, &nx, guid) != 3) {
        rc = CFR_ERR(&g->err, CFR_ECORRUPT, "%s: bad header", path);
        goto out;
    }
    f->uidvalidity = v;
    f->next_uid = nx;
    strf(f->guid, sizeof(f->guid), "%s", guid);
    while (fgets(line, sizeof(line), fp) != NULL) {
        char *colon = strstr(line, " :");
        char *end;
        unsigned long uid = strtoul(line, &end, 10);
        if (colon == NULL || end != colon) {
            rc = CFR_ERR(&g->err, CFR_ECORRUPT, "%s: bad line", path);
            goto out;
        }
        line[strcspn(line, "\n")] = '\0';
        if ((rc = add_entry(g, f, (uint32_t)uid, colon + 2)) != 0) {
            goto out;
        }
    }
    static const char *const sub[] = {"cur", "new"};
    for (int s = 0; s < 2; s++) {
        strf(path, sizeof(path), "%s/%s", f->path, sub[s]);
        if ((rc = list_dir(g, path, false, &names, &n)) != 0) {
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if ((rc = grow(g, (void **)&f->files, &f->files_cap, f->nfiles,
                           sizeof(*f->files))) != 0) {
                goto out;
            }
            int64_t t = name_time(names[i]);
            if (t > g->last_us) {
                g->last_us = t;
            }
            if (t > f->last_us) {
                f->last_us = t;
            }
            f->files[f->nfiles].name = names[i];
            f->files[f->nfiles].in_new = s == 1;
            names[i] = NULL;
            f->nfiles++;
        }
        free_names(names, n);
        names = NULL;
        n = 0;
    }
out:
    free_names(names, n);
    if (fp != NULL) {
        fclose(fp);
    }
    return rc;
}

static int
scan_tree(struct gen *g)
{
    int rc = 0;
    char dpath[GEN_PATH_MAX], mpath[GEN_PATH_MAX];
    char **doms = NULL, **users = NULL, **fold = NULL;
    size_t nd = 0, nu = 0, nf = 0;
    struct rng r;
    rng_seed(&r, g->o.seed, S_SETUP, 1);
    if ((rc = list_dir(g, g->o.out, false, &doms, &nd)) != 0) {
        goto out;
    }
    for (size_t d = 0; d < nd; d++) {
        strf(dpath, sizeof(dpath), "%s/%s", g->o.out, doms[d]);
        if (!is_dir(dpath)) {
            continue;
        }
        if ((rc = grow(g, (void **)&g->domains, &g->domains_cap, g->ndomains,
                       sizeof(*g->domains))) != 0) {
            goto out;
        }
        size_t dom = g->ndomains++;
        g->domains[dom] = doms[d];
        doms[d] = NULL;
        free_names(users, nu);
        users = NULL;
        nu = 0;
        if ((rc = list_dir(g, dpath, false, &users, &nu)) != 0) {
            goto out;
        }
        for (size_t ui = 0; ui < nu; ui++) {
            char home[GEN_PATH_MAX];
            strf(home, sizeof(home), "%s/%s", dpath, users[ui]);
            strf(mpath, sizeof(mpath), "%s/Maildir", home);
            if (!is_dir(mpath)) {
                continue;
            }
            size_t cap = g->nusers;
            struct user *nu2 =
                cfr_realloc(g->users, (cap + 1) * sizeof(*g->users));
            if (nu2 == NULL) {
                rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
                goto out;
            }
            g->users = nu2;
            struct user *u = &g->users[g->nusers++];
            memset(u, 0, sizeof(*u));
            u->domain = dom;
            u->local = xstrdup(g, users[ui]);
            u->home = xstrdup(g, home);
            char disp[128], addr[300];
            strf(disp, sizeof(disp), "%s", users[ui]);
            bool up = true;
            for (char *c = disp; *c; c++) {
                if (*c == '.') {
                    *c = ' ';
                    up = true;
                } else if (up && *c >= 'a' && *c <= 'z') {
                    *c = (char)(*c - 'a' + 'A');
                    up = false;
                } else {
                    up = false;
                }
            }
            strf(addr, sizeof(addr), "%s@%s", users[ui], g->domains[dom]);
            u->display = xstrdup(g, disp);
            u->addr = xstrdup(g, addr);
            u->weight = 1.0;
            if (g->rc != 0) {
                rc = g->rc;
                goto out;
            }
            if ((rc = add_folder(g, u, "", F_INBOX, -1, &r, false)) != 0 ||
                (rc = load_folder(g, &u->folders[0])) != 0) {
                goto out;
            }
            free_names(fold, nf);
            fold = NULL;
            nf = 0;
            if ((rc = list_dir(g, mpath, true, &fold, &nf)) != 0) {
                goto out;
            }
            for (size_t fi = 0; fi < nf; fi++) {
                char fp2[GEN_PATH_MAX];
                strf(fp2, sizeof(fp2), "%s/%s/maildirfolder", mpath, fold[fi]);
                if (fold[fi][0] != '.' || access(fp2, F_OK) != 0) {
                    continue;
                }
                const char *name = fold[fi] + 1;
                enum fkind kind = F_ARCHIVE;
                int list = -1;
                if (strcmp(name, "Sent") == 0) {
                    kind = F_SENT;
                } else if (strcmp(name, "Drafts") == 0) {
                    kind = F_DRAFTS;
                } else if (strcmp(name, "Trash") == 0) {
                    kind = F_TRASH;
                } else if (strncmp(name, "Lists.", 6) == 0) {
                    kind = F_LIST;
                    size_t l;
                    for (l = 0; l < g->nlists; l++) {
                        if (strcmp(g->lists[l].name, name + 6) == 0) {
                            break;
                        }
                    }
                    if (l == g->nlists) {
                        if (l == GEN_MAX_LISTS) {
                            continue;
                        }
                        g->lists[l].name = xstrdup(g, name + 6);
                        g->nlists++;
                    }
                    struct list *li = &g->lists[l];
                    size_t *nm = cfr_realloc(li->members, (li->nmembers + 1) *
                                                              sizeof(size_t));
                    if (nm == NULL) {
                        rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
                        goto out;
                    }
                    li->members = nm;
                    li->members[li->nmembers++] = g->nusers - 1;
                    list = (int)l;
                }
                if ((rc = add_folder(g, u, name, kind, list, &r, false)) != 0 ||
                    (rc = load_folder(g, &u->folders[u->nfolders - 1])) != 0) {
                    goto out;
                }
            }
        }
    }
    if (g->nusers == 0) {
        rc =
            CFR_ERR(&g->err, CFR_ENOTFOUND, "%s: no mailboxes found", g->o.out);
        goto out;
    }
    g->cum_weight = cfr_calloc(g->nusers, sizeof(double));
    if (g->cum_weight == NULL) {
        rc = CFR_ERR(&g->err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < g->nusers; i++) {
        g->cum_weight[i] = (double)(i + 1);
    }
out:
    free_names(doms, nd);
    free_names(users, nu);
    free_names(fold, nf);
    return rc;
}

/* The uidlist base of a file name: everything before ":2,". */
static void
base_of(const char *name, char *out, size_t size)
{
    const char *c = strstr(name, ":2,");
    size_t n = c ? (size_t)(c - name) : strlen(name);
    strf(out, size, "%.*s", (int)n, name);
}

static void
drop_entry(struct folder *f, const char *base)
{
    for (size_t i = 0; i < f->nents; i++) {
        if (strcmp(f->ents[i].base, base) == 0) {
            cfr_free(f->ents[i].base);
            memmove(&f->ents[i], &f->ents[i + 1],
                    (f->nents - i - 1) * sizeof(*f->ents));
            f->nents--;
            f->dirty = true;
            return;
        }
    }
}

static void
drop_file(struct folder *f, size_t i)
{
    cfr_free(f->files[i].name);
    memmove(&f->files[i], &f->files[i + 1],
            (f->nfiles - i - 1) * sizeof(*f->files));
    f->nfiles--;
}

/* Renames file i of f to cur/<base>:2,<flags>. */
static int
set_file_flags(struct gen *g, struct folder *f, size_t i,
               const struct flags *fl)
{
    int rc = 0;
    char base[256], flag[16], from[GEN_PATH_MAX], to[GEN_PATH_MAX], name[300];
    base_of(f->files[i].name, base, sizeof(base));
    flags_str(fl, flag);
    strf(name, sizeof(name), "%s:2,%s", base, flag);
    strf(from, sizeof(from), "%s/%s/%s", f->path,
         f->files[i].in_new ? "new" : "cur", f->files[i].name);
    strf(to, sizeof(to), "%s/cur/%s", f->path, name);
    if (strcmp(from, to) == 0) {
        goto out;
    }
    if (rename(from, to) != 0) {
        rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "rename %s", from);
        goto out;
    }
    char *d = xstrdup(g, name);
    if (d == NULL) {
        rc = g->rc;
        goto out;
    }
    cfr_free(f->files[i].name);
    f->files[i].name = d;
    f->files[i].in_new = false;
out:
    return rc;
}

/* Finds a random file in f matching in_new (-1: any). SIZE_MAX if none. */
static size_t
random_file(struct rng *r, const struct folder *f, int in_new)
{
    if (f->nfiles == 0) {
        return SIZE_MAX;
    }
    for (int tries = 0; tries < 8; tries++) {
        size_t i = rng_below(r, f->nfiles);
        if (in_new < 0 || f->files[i].in_new == (in_new == 1)) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* Reading, flagging and deleting: what users did in the window. */
static int
evolve_changes(struct gen *g, struct rng *r, struct user *u, double hours)
{
    int rc = 0;
    char base[256], from[GEN_PATH_MAX], to[GEN_PATH_MAX];
    struct folder *trash = find_folder(u, F_TRASH, -1);
    for (size_t fi = 0; fi < u->nfolders; fi++) {
        struct folder *f = &u->folders[fi];
        if (f->kind != F_INBOX && f->kind != F_LIST) {
            continue;
        }
        double p_read = f->kind == F_INBOX ? fmin(0.9, 0.12 * hours)
                                           : fmin(0.5, 0.03 * hours);
        for (size_t i = 0; i < f->nfiles; i++) {
            if (f->files[i].in_new && rng_chance(r, p_read)) {
                struct flags fl = {0};
                fl.s = rng_chance(r, 0.75);
                if ((rc = set_file_flags(g, f, i, &fl)) != 0) {
                    goto out;
                }
                g->moved++;
            }
        }
        if (f->kind != F_INBOX) {
            continue;
        }
        uint64_t k = rng_poisson(r, 0.4 * hours);
        for (uint64_t j = 0; j < k; j++) {
            size_t i = random_file(r, f, 0);
            if (i == SIZE_MAX) {
                break;
            }
            const char *c = strstr(f->files[i].name, ":2,");
            struct flags fl;
            flags_parse(c ? c + 3 : "", &fl);
            if (!fl.s) {
                fl.s = true;
            } else if (rng_chance(r, 0.5)) {
                fl.r = true;
            } else if (rng_chance(r, 0.6)) {
                fl.f = !fl.f;
            } else {
                fl.kw[0] = true;
            }
            if ((rc = set_file_flags(g, f, i, &fl)) != 0) {
                goto out;
            }
            g->renamed++;
        }
        k = rng_poisson(r, 0.2 * hours);
        for (uint64_t j = 0; j < k; j++) {
            size_t i = random_file(r, f, 0);
            if (i == SIZE_MAX) {
                break;
            }
            base_of(f->files[i].name, base, sizeof(base));
            strf(from, sizeof(from), "%s/cur/%s", f->path, f->files[i].name);
            if (trash != NULL && rng_chance(r, 0.6)) {
                /*
                 * A move is a copy under a new name (Dovecot's default,
                 * maildir_copy_preserve_filename=no) and Trash's next uid;
                 * the name's time is the move's, and so is the mtime.
                 */
                const char *rest = strchr(strchr(base, 'P'), '.');
                int64_t tm = next_time(
                    g, g->last_us + 1 + (int64_t)rng_below(r, 30 * GEN_US));
                char nbase[300];
                strf(nbase, sizeof(nbase), "%" PRId64 ".M%06uP%u%s",
                     tm / GEN_US, (unsigned)(tm % GEN_US),
                     (unsigned)(1000 + rng_below(r, 98000)), rest);
                strf(to, sizeof(to), "%s/cur/%s:2,S", trash->path, nbase);
                if (rename(from, to) != 0) {
                    rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "rename %s", from);
                    goto out;
                }
                if ((rc = set_mtime(g, to, tm)) != 0 ||
                    (rc = add_entry(g, trash, trash->next_uid, nbase)) != 0) {
                    goto out;
                }
                trash->next_uid++;
                trash->last_us = tm;
            } else if (unlink(from) != 0) {
                rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "unlink %s", from);
                goto out;
            }
            drop_entry(f, base);
            drop_file(f, i);
            g->deleted++;
        }
    }
    /* Trash empties itself of its oldest messages now and then. */
    if (trash != NULL) {
        uint64_t k = rng_poisson(r, 0.1 * hours);
        for (uint64_t j = 0; j < k && trash->nfiles > 0; j++) {
            base_of(trash->files[0].name, base, sizeof(base));
            strf(from, sizeof(from), "%s/%s/%s", trash->path,
                 trash->files[0].in_new ? "new" : "cur", trash->files[0].name);
            if (unlink(from) != 0) {
                rc = CFR_ERR_ERRNO(&g->err, CFR_EIO, "unlink %s", from);
                goto out;
            }
            drop_entry(trash, base);
            drop_file(trash, 0);
            g->deleted++;
        }
    }
out:
    return rc;
}

static int
evolve(struct gen *g)
{
    int rc = 0;
    g->evolving = true;
    make_contacts(g);
    if ((rc = scan_tree(g)) != 0) {
        goto out;
    }
    int64_t t0 = g->last_us;
    int64_t t1 = t0 + (int64_t)(g->o.evolve_hours * (double)GEN_HOUR_US);
    g->now_us = t1;
    g->archive_year = year_of(t1 / GEN_US) - 1;
    struct rng r;
    /* The window's start makes each step of a series differ. */
    rng_seed(&r, g->o.seed, S_EVOLVE, (uint64_t)t0);
    for (size_t i = 0; i < g->nusers; i++) {
        if ((rc = evolve_changes(g, &r, &g->users[i], g->o.evolve_hours)) !=
            0) {
            goto out;
        }
    }
    double per_user = g->o.arrivals_per_day * g->o.evolve_hours / 24.0;
    double per_list = g->o.posts_per_day * g->o.evolve_hours / 24.0;
    if ((rc = run_events(g, &r, t0, t1, per_user, per_list)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < g->nusers; i++) {
        if ((rc = write_user_meta(g, &g->users[i])) != 0) {
            goto out;
        }
    }
out:
    return rc;
}

/* ---- main -------------------------------------------------------------------
 */

static void
free_gen(struct gen *g)
{
    for (size_t i = 0; i < g->nusers; i++) {
        struct user *u = &g->users[i];
        for (size_t f = 0; f < u->nfolders; f++) {
            struct folder *fo = &u->folders[f];
            for (size_t e = 0; e < fo->nents; e++) {
                cfr_free(fo->ents[e].base);
            }
            for (size_t e = 0; e < fo->nfiles; e++) {
                cfr_free(fo->files[e].name);
            }
            cfr_free(fo->ents);
            cfr_free(fo->files);
            cfr_free(fo->path);
            cfr_free(fo->name);
        }
        cfr_free(u->folders);
        cfr_free(u->local);
        cfr_free(u->display);
        cfr_free(u->addr);
        cfr_free(u->home);
    }
    cfr_free(g->users);
    for (size_t d = 0; d < g->ndomains; d++) {
        cfr_free(g->domains[d]);
    }
    cfr_free(g->domains);
    for (size_t l = 0; l < g->nlists; l++) {
        cfr_free(g->lists[l].name);
        cfr_free(g->lists[l].members);
    }
    cfr_free(g->pool);
    cfr_free(g->cum_weight);
    cfr_buf_fini(&g->msg);
    cfr_buf_fini(&g->shared);
    cfr_buf_fini(&g->att);
    cfr_buf_fini(&g->text);
}

static int
parse_u64(const char *s, uint64_t *v, bool suffix)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || end == s) {
        return -1;
    }
    uint64_t mul = 1;
    if (suffix && *end != '\0') {
        switch (*end) {
        case 'K':
        case 'k':
            mul = UINT64_C(1) << 10;
            break;
        case 'M':
        case 'm':
            mul = UINT64_C(1) << 20;
            break;
        case 'G':
        case 'g':
            mul = UINT64_C(1) << 30;
            break;
        default:
            return -1;
        }
        end++;
    }
    if (*end != '\0' || x > UINT64_MAX / mul) {
        return -1;
    }
    *v = x * mul;
    return 0;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: gen_corpus [--seed N] [--domains N] [--users N]\n"
            "                  [--messages-per-user N] [--size BYTES[KMG]]\n"
            "                  [--lists N] [--list-members N] [--now EPOCH]\n"
            "                  [--days N] [--quiet] OUTDIR\n"
            "       gen_corpus --evolve HOURS [--seed N] "
            "[--arrivals-per-day N]\n"
            "                  [--posts-per-day N] [--quiet] OUTDIR\n"
            "--users is per domain; --size stops once that many bytes\n"
            "are written; --evolve applies HOURS of change to OUTDIR.\n");
}

int
main(int argc, char **argv)
{
    struct gen *g = cfr_calloc(1, sizeof(*g));
    if (g == NULL) {
        fprintf(stderr, "gen_corpus: out of memory\n");
        return 1;
    }
    struct opts *o = &g->o;
    o->seed = 1;
    o->domains = 2;
    o->users = 10;
    o->messages_per_user = 200;
    o->lists = 4;
    o->list_members = 50;
    o->now = GEN_DEFAULT_NOW;
    o->days = 540;
    o->arrivals_per_day = 30;
    o->posts_per_day = 6;
    int status = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v = 0;
        bool has_val = i + 1 < argc;
        const char *val = has_val ? argv[i + 1] : "";
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (a[0] != '-') {
            o->out = a;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            status = 0;
            goto out;
        }
        if (!has_val || parse_u64(val, &v, strcmp(a, "--size") == 0) != 0) {
            fprintf(stderr, "gen_corpus: %s needs a number\n", a);
            usage();
            goto out;
        }
        i++;
        if (strcmp(a, "--seed") == 0) {
            o->seed = v;
        } else if (strcmp(a, "--domains") == 0 && v >= 1 && v <= 10000) {
            o->domains = (size_t)v;
        } else if (strcmp(a, "--users") == 0 && v >= 1 && v <= 100000) {
            o->users = (size_t)v;
        } else if (strcmp(a, "--messages-per-user") == 0 && v <= 10000000) {
            o->messages_per_user = (double)v;
        } else if (strcmp(a, "--size") == 0) {
            o->size = v;
        } else if (strcmp(a, "--lists") == 0 && v <= GEN_MAX_LISTS) {
            o->lists = (size_t)v;
        } else if (strcmp(a, "--list-members") == 0) {
            o->list_members = (size_t)v;
        } else if (strcmp(a, "--now") == 0 && v > 86400 * 4000 &&
                   v < INT64_C(1) << 40) {
            o->now = (int64_t)v;
        } else if (strcmp(a, "--days") == 0 && v >= 1 && v <= 20000) {
            o->days = (unsigned)v;
        } else if (strcmp(a, "--evolve") == 0 && v >= 1 && v <= 24 * 365) {
            o->evolve_hours = (double)v;
        } else if (strcmp(a, "--arrivals-per-day") == 0 && v <= 100000) {
            o->arrivals_per_day = (double)v;
        } else if (strcmp(a, "--posts-per-day") == 0 && v <= 100000) {
            o->posts_per_day = (double)v;
        } else {
            fprintf(stderr, "gen_corpus: bad option or value: %s %s\n", a, val);
            usage();
            goto out;
        }
    }
    if (o->out == NULL) {
        usage();
        goto out;
    }
    if (strlen(o->out) > 1024) {
        fprintf(stderr, "gen_corpus: OUTDIR path too long\n");
        goto out;
    }
    cfr_buf_init(&g->msg, GEN_MSG_MAX);
    cfr_buf_init(&g->shared, GEN_MSG_MAX);
    cfr_buf_init(&g->att, GEN_SCRATCH_MAX);
    cfr_buf_init(&g->text, GEN_SCRATCH_MAX);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = o->evolve_hours > 0 ? evolve(g) : generate(g);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0) {
        fprintf(stderr, "gen_corpus: %s (%s)\n", g->err.msg, cfr_code_name(rc));
        status = 1;
        goto out;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (!o->quiet) {
        printf("gen_corpus: mailboxes=%zu lists=%zu messages=%" PRIu64
               " list_copies=%" PRIu64 " mbox_messages=%" PRIu64
               " with_attachments=%" PRIu64 " pool=%zu bytes=%" PRIu64
               " moved=%" PRIu64 " renamed=%" PRIu64 " deleted=%" PRIu64
               " seconds=%.2f MB/s=%.1f\n",
               g->nusers, g->nlists, g->messages, g->list_copies,
               g->mbox_messages, g->with_att, g->npool, g->bytes, g->moved,
               g->renamed, g->deleted, secs,
               secs > 0 ? (double)g->bytes / 1e6 / secs : 0.0);
    }
    status = 0;
out:
    free_gen(g);
    cfr_free(g);
    return status;
}
