/*
 * verify.c - the scheduled recovery test (verify.h).
 *
 * Invariants:
 *  1. Each replica is read through a fetcher that knows only that replica:
 *     a chunk one vault lost is that vault's failure, never hidden by
 *     failover to another.
 *  2. A failure never stops the run: it is recorded (report.h) with the
 *     replica, mailbox, folder, message name and Message-ID it concerns,
 *     and the next file, snapshot and replica are still tried. Only a
 *     replica that stops answering is given up, once, for the rest of
 *     the run (every later call would wait out the timeout).
 *  3. Scratch space is private (mkdtemp, 0700) and every file goes through
 *     restore's safe writer, so a hostile manifest cannot write outside it;
 *     it is removed without following symlinks.
 *  4. The same sample everywhere: samples are ranked by a hash of the seed
 *     and the name, not by listing order.
 *  5. Nothing secret is printed: reports hold names, Message-IDs, sizes,
 *     object IDs and hashes of plaintext, as the restore's own output does.
 */
#define _GNU_SOURCE /* mkdtemp, openat, fdopendir */

#include "verify.h"

#include <dirent.h>   /* fdopendir: scratch removal, live folders */
#include <errno.h>    /* ENOENT */
#include <fcntl.h>    /* openat, O_NOFOLLOW */
#include <inttypes.h> /* PRIu64 */
#include <limits.h>   /* NAME_MAX */
#include <pthread.h>  /* workers */
#include <stdio.h>    /* printf */
#include <stdlib.h>   /* getenv, mkdtemp, qsort, strtoull */
#include <string.h>   /* memcmp */
#include <sys/stat.h> /* fstatat */
#include <time.h>     /* clock_gettime */
#include <unistd.h>   /* read, close, unlinkat */

#include "buf.h"      /* cfr_hex_encode */
#include "dovecot.h"  /* restore_doveadm_list */
#include "env.h"      /* cfr_opener, cfr_env_open */
#include "id.h"       /* cfr_id_plain */
#include "log.h"      /* cfr_log_quote */
#include "manifest.h" /* restore_manifest */
#include "mem.h"      /* cfr_malloc */
#include "prng.h"     /* cfr_splitmix64: the clock seed's mixing */
#include "restore.h"  /* restore_path_of, restore_file_*, restore_list */
#include "session.h"  /* restore_session, exit codes */

#define ID_LEN            32
#define KIND_SEALED       1 /* Coffer__V1__ObjectKind: an envelope */
#define WINDOW_MS_DEFAULT (30 * INT64_C(86400000))

/* ---- small helpers --------------------------------------------------------
 */

static double
mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t
restore_verify_rank(uint64_t seed, const void *name, size_t len)
{
    /* A cryptographic hash makes the rank independent of how names look
     * (no clustering of similar Maildir names), and portable. */
    uint8_t h[ID_LEN];
    uint8_t *p = cfr_malloc(len + 8);
    uint64_t r = 0;
    if (p == NULL) {
        /* Still deterministic: rank by the seed mixed with the length. */
        uint64_t x = seed ^ len;
        return cfr_splitmix64(&x);
    }
    cfr_put_le64(p, seed);
    if (len > 0) {
        memcpy(p + 8, name, len);
    }
    cfr_id_plain(p, len + 8, h);
    cfr_free(p);
    for (int i = 0; i < 8; i++) {
        r = (r << 8) | h[i];
    }
    return r;
}

int
restore_verify_live_path(const char *pattern, const char *mailbox, char *out,
                         size_t out_size, struct cfr_err *err)
{
    const char *at = strrchr(mailbox, '@');
    size_t n = 0;
    if (strchr(mailbox, '/') != NULL || strstr(mailbox, "..") != NULL) {
        return CFR_ERR(err, CFR_EINVAL,
                       "--live: mailbox name unusable in a path");
    }
    if (out_size == 0) {
        return CFR_ERR(err, CFR_ELIMIT, "--live: no room");
    }
    for (const char *p = pattern; *p != '\0'; p++) {
        const char *s = p;
        size_t k = 1;
        if (*p == '%') {
            switch (p[1]) {
            case 'm':
                s = mailbox;
                k = strlen(mailbox);
                break;
            case 'u':
                s = mailbox;
                k = at != NULL ? (size_t)(at - mailbox) : strlen(mailbox);
                break;
            case 'd':
                s = at != NULL ? at + 1 : "";
                k = strlen(s);
                break;
            case '%':
                s = "%";
                k = 1;
                break;
            default:
                return CFR_ERR(err, CFR_EINVAL,
                               "--live: unknown escape in the pattern (use "
                               "%%m, %%u, %%d or %%%%)");
            }
            p++;
        }
        if (k >= out_size - n) {
            return CFR_ERR(err, CFR_ELIMIT, "--live: path too long");
        }
        memcpy(out + n, s, k);
        n += k;
    }
    out[n] = '\0';
    if (n == 0) {
        return CFR_ERR(err, CFR_EINVAL, "--live: empty path");
    }
    return 0;
}

static unsigned
flag_of_letter(char c)
{
    switch (c) {
    case 'R':
        return VERIFY_FLAG_ANSWERED;
    case 'T':
        return VERIFY_FLAG_DELETED;
    case 'D':
        return VERIFY_FLAG_DRAFT;
    case 'F':
        return VERIFY_FLAG_FLAGGED;
    case 'S':
        return VERIFY_FLAG_SEEN;
    default:
        return 0;
    }
}

unsigned
restore_verify_info_flags(const uint8_t *info, size_t len)
{
    unsigned f = 0;
    size_t i = 0;
    /* ":2," then the letters; a suffix of another form carries none. */
    if (len < 3 || info[0] != ':' || info[1] != '2' || info[2] != ',') {
        return 0;
    }
    for (i = 3; i < len && info[i] != ','; i++) {
        f |= flag_of_letter((char)info[i]);
    }
    return f;
}

unsigned
restore_verify_imap_flags(const char *flags)
{
    static const struct {
        const char *name;
        unsigned bit;
    } map[] = {{"\\Answered", VERIFY_FLAG_ANSWERED},
               {"\\Deleted", VERIFY_FLAG_DELETED},
               {"\\Draft", VERIFY_FLAG_DRAFT},
               {"\\Flagged", VERIFY_FLAG_FLAGGED},
               {"\\Seen", VERIFY_FLAG_SEEN}};
    unsigned f = 0;
    const char *p = flags;
    while (*p != '\0') {
        size_t n;
        while (*p == ' ') {
            p++;
        }
        n = strcspn(p, " ");
        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
            if (n == strlen(map[i].name) &&
                strncasecmp(p, map[i].name, n) == 0) {
                f |= map[i].bit;
            }
        }
        p += n;
    }
    return f;
}

int
restore_verify_hash_fd(int fd, uint8_t out[32], uint64_t *size_r,
                       struct cfr_err *err)
{
    struct cfr_buf list;
    uint8_t *block = cfr_malloc(VERIFY_HASH_BLOCK);
    uint64_t total = 0;
    int rc = 0;

    *size_r = 0;
    cfr_buf_init(&list, SIZE_MAX);
    if (block == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
    }
    for (;;) {
        size_t have = 0;
        uint8_t h[ID_LEN];
        while (have < VERIFY_HASH_BLOCK) {
            ssize_t k = read(fd, block + have, VERIFY_HASH_BLOCK - have);
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k < 0) {
                rc = CFR_ERR_ERRNO(err, CFR_EIO, "verify: read failed");
                goto out;
            }
            if (k == 0) {
                break;
            }
            have += (size_t)k;
        }
        if (have == 0 && total > 0) {
            break;
        }
        cfr_id_plain(block, have, h);
        if ((rc = cfr_buf_append(&list, h, ID_LEN, err)) != 0) {
            goto out;
        }
        total += have;
        if (have < VERIFY_HASH_BLOCK) {
            break;
        }
    }
    cfr_id_plain(list.data, list.len, out);
    *size_r = total;
out:
    cfr_free(block);
    cfr_buf_fini(&list);
    return rc;
}

/* rm -r below dir_fd/name, never following a symlink. Best effort. */
static void
rm_tree_at(int dir_fd, const char *name, int depth)
{
    int fd;
    DIR *d;
    struct dirent *de;
    if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT) {
        return;
    }
    if (depth > 64 ||
        (fd = openat(dir_fd, name,
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        return;
    }
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            rm_tree_at(dirfd(d), de->d_name, depth + 1);
        }
    }
    closedir(d);
    (void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

/* "INBOX" for the root folder, else the Maildir++ name without its dot. */
static const char *
folder_display(const char *folder)
{
    return folder[0] == '\0' ? "INBOX" : folder + 1;
}

/* A byte string as a C string, bytes that would garble a report made '?'. */
static char *
dup_printable(const uint8_t *p, size_t n)
{
    char *s = cfr_malloc(n + 1);
    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        s[i] = p[i] < 0x20 || p[i] == 0x7f ? '?' : (char)p[i];
    }
    s[n] = '\0';
    return s;
}

/* ---- option parsing -------------------------------------------------------
 */

static int
parse_u64(const char *opt, const char *v, uint64_t *out)
{
    char *end = NULL;
    unsigned long long x;
    errno = 0;
    if (v[0] < '0' || v[0] > '9') {
        goto bad;
    }
    x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') {
        goto bad;
    }
    *out = (uint64_t)x;
    return 0;
bad:
    fprintf(stderr, "coffer-restore verify: %s: not a number: \"%s\"\n", opt,
            v);
    return -1;
}

int
restore_verify_parse(int argc, char **argv, struct restore_verify_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->older = VERIFY_OLDER_DEFAULT;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x = 0;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--keep") == 0) {
            o->keep = true;
            continue;
        }
        if (strcmp(a, "--schedule") == 0) {
            o->schedule = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr,
                    "coffer-restore verify: unknown or incomplete option "
                    "\"%s\"\n",
                    a);
            return -1;
        }
        i++;
        if (strcmp(a, "--mailbox") == 0) {
            if (o->n_mailboxes == VERIFY_MAILBOXES_MAX || v[0] == '\0' ||
                strlen(v) > CFR_SNAP_MAILBOX_MAX) {
                fprintf(stderr,
                        "coffer-restore verify: --mailbox: 1..%d bytes, at "
                        "most %d times\n",
                        CFR_SNAP_MAILBOX_MAX, VERIFY_MAILBOXES_MAX);
                return -1;
            }
            o->mailboxes[o->n_mailboxes++] = v;
        } else if (strcmp(a, "--replica") == 0) {
            if (o->n_replicas == RESTORE_FETCH_VAULTS_MAX || v[0] == '\0' ||
                strchr(v, ':') == NULL) {
                fprintf(stderr,
                        "coffer-restore verify: --replica: HOST:PORT, at "
                        "most %d times\n",
                        RESTORE_FETCH_VAULTS_MAX);
                return -1;
            }
            o->replicas[o->n_replicas++] = v;
        } else if (strcmp(a, "--sample-mailboxes") == 0) {
            if (parse_u64(a, v, &o->sample_mailboxes) != 0) {
                return -1;
            }
        } else if (strcmp(a, "--sample-messages") == 0) {
            if (parse_u64(a, v, &o->sample_messages) != 0) {
                return -1;
            }
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_u64(a, v, &o->seed) != 0) {
                return -1;
            }
            o->seed_set = true;
        } else if (strcmp(a, "--older") == 0) {
            if (parse_u64(a, v, &x) != 0 || x > 100000) {
                return -1;
            }
            o->older = (unsigned)x;
        } else if (strcmp(a, "--live") == 0) {
            o->live = v;
        } else if (strcmp(a, "--scratch") == 0) {
            o->scratch = v;
        } else if (strcmp(a, "--report") == 0) {
            o->report = v;
        } else if (strcmp(a, "--metrics") == 0) {
            o->metrics = v;
        } else if (strcmp(a, "--state") == 0) {
            o->state = v;
        } else {
            fprintf(stderr, "coffer-restore verify: unknown option \"%s\"\n",
                    a);
            return -1;
        }
        if (v[0] == '\0') {
            fprintf(stderr, "coffer-restore verify: %s: empty value\n", a);
            return -1;
        }
    }
    if (o->live != NULL) {
        char tmp[RESTORE_PATH_MAX];
        struct cfr_err e;
        cfr_err_clear(&e);
        if (restore_verify_live_path(o->live, "user@example.org", tmp,
                                     sizeof(tmp), &e) != 0) {
            fprintf(stderr, "coffer-restore verify: %s\n", e.msg);
            return -1;
        }
    }
    return 0;
}

/* ---- the run ---------------------------------------------------------------
 */

/* One replica: its fetcher and what it lists. */
struct rep {
    const char *addr;
    size_t ri; /* index in the result */
    struct restore_fetcher *f;
    struct restore_snapshot *snaps; /* newest first */
    size_t n_snaps;
    bool dead; /* unreachable: skipped from then on */
};

/* One snapshot to verify on every replica. */
struct job {
    const char *mailbox;       /* borrowed from a header or the options */
    bool newest;               /* each replica's newest of the mailbox */
    uint8_t header_id[ID_LEN]; /* when not newest */
};

/* A restored file's hash, for the comparison across replicas. */
struct seen {
    uint8_t *key; /* owned */
    size_t key_len;
    uint8_t hash[ID_LEN];
    size_t rep; /* the replica that gave it first */
};

/* One header's files (the first replica to restore it fills it). */
struct seen_set {
    uint8_t header_id[ID_LEN];
    struct seen *v;
    size_t n, cap;
    size_t n_sorted; /* v[0..n_sorted) is sorted by key */
};

/* A restored message, as Dovecot must show it. */
struct expect {
    char *folder; /* Maildir++ folder ("" or ".Sent"), owned */
    char *base;   /* file name without the ":2," part, owned */
    char *msgid;  /* owned */
    uint64_t size;
    unsigned flags;
    uint8_t hash[ID_LEN]; /* of the restored file, read back from scratch */
    uint32_t uid;         /* Dovecot's, once matched */
    bool matched;
    bool failed; /* Dovecot's view already disagreed */
};

/* A live file of the current folder, by base name. */
struct live_name {
    char *base; /* owned */
    char *rel;  /* "cur/<name>", owned */
};

struct run {
    struct restore_session *s;
    const struct restore_verify_opts *o;
    struct restore_verify_result *res;
    uint64_t seed;
    struct rep reps[RESTORE_FETCH_VAULTS_MAX];
    size_t n_reps;
    bool dovecot_missing_told;
};

/* What one snapshot on one replica is doing. */
struct snapctx {
    struct run *r;
    struct rep *rep;
    const char *mailbox;
    uint8_t header_id[ID_LEN];
    size_t mi; /* mailbox index in the replica's result */
    struct seen_set *seen;
    int root_fd;
    char root[RESTORE_PATH_MAX];
    char folder[NAME_MAX + 2]; /* last folder laid out */
    bool any_folder;
    char **folders; /* every folder laid out, for restore_dovecot_finish */
    size_t n_folders;
    /*
     * Workers write files in parallel, as a restore does (so the time
     * measured is a restore's). mu guards everything below that a worker
     * touches, the counters, and the result (report.h is not
     * thread-safe); fail() takes it, so it is never held while calling
     * fail().
     */
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_space;
    struct pick *q; /* ring of files to do, q_cap long */
    size_t q_cap, q_head, q_n;
    bool q_done;      /* the walk queued its last file */
    bool unreachable; /* a worker lost the replica: stop */
    /* Dovecot and live */
    struct expect *ex;
    size_t n_ex, cap_ex;
    char live_root[RESTORE_PATH_MAX];
    bool live_ok;
    char live_folder[NAME_MAX + 2];
    bool live_loaded;
    struct live_name *live;
    size_t n_live;
    /* counters */
    uint64_t files, messages_total, messages_checked, messages_live, bytes;
};

/* A copied manifest entry (samples and the work queue). */
struct pick {
    uint64_t rank;
    struct cfr_snap_entry e;
    uint8_t *mem; /* owns everything e points to */
};

/* One worker thread and its fetch window. */
struct worker {
    struct snapctx *c;
    pthread_t tid;
    bool started;
    struct cfr_opener *op;
    struct cfr_buf plain;
    struct restore_file *wf;
    const uint8_t *ids;
    size_t n, next;
    struct {
        uint8_t id[ID_LEN];
        uint8_t *data;
        size_t len;
    } stash[VERIFY_BATCH];
    size_t n_stash, stash_bytes;
    bool open_failed;
    char bad_chunk[2 * ID_LEN + 1];
};

static int
fail(struct snapctx *c, enum restore_verify_kind kind, const char *folder,
     const char *message, const char *msgid, const char *detail)
{
    struct cfr_err e;
    char q[96];
    cfr_err_clear(&e);
    pthread_mutex_lock(&c->mu);
    (void)restore_verify_add_failure(c->r->res, kind, c->rep->ri, c->mailbox,
                                     folder != NULL ? folder_display(folder)
                                                    : NULL,
                                     message, msgid, &e, "%s", detail);
    if (!c->r->o->json) { /* as they come: a long run shows progress */
        fprintf(stderr,
                "coffer-restore verify: FAIL %s replica %s mailbox %s%s%s%s%s: "
                "%s\n",
                restore_verify_kind_name(kind), c->rep->addr,
                cfr_log_quote(c->mailbox, q, sizeof(q)),
                folder != NULL ? " folder " : "",
                folder != NULL ? folder_display(folder) : "",
                message != NULL ? " message " : "",
                message != NULL ? message : "", detail);
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* ---- fetching one file ----------------------------------------------------
 */

static void
stash_clear(struct worker *c)
{
    for (size_t i = 0; i < c->n_stash; i++) {
        cfr_free(c->stash[i].data);
    }
    c->n_stash = 0;
    c->stash_bytes = 0;
}

static int
drain(struct worker *c, struct cfr_err *err)
{
    bool moved = true;
    int rc = 0;
    while (moved && c->next < c->n && rc == 0) {
        moved = false;
        for (size_t i = 0; i < c->n_stash; i++) {
            if (memcmp(c->stash[i].id, c->ids + c->next * ID_LEN, ID_LEN) ==
                0) {
                rc = restore_file_write(c->wf, c->stash[i].data,
                                        c->stash[i].len, err);
                c->next++;
                c->stash_bytes -= c->stash[i].len;
                cfr_free(c->stash[i].data);
                c->stash[i] = c->stash[--c->n_stash];
                moved = true;
                break;
            }
        }
    }
    return rc;
}

static int
chunk_cb(void *ctx, const uint8_t *id, int kind, const uint8_t *data,
         size_t len, struct cfr_err *err)
{
    struct worker *c = ctx;
    int rc;
    if (kind != KIND_SEALED ||
        cfr_env_open(c->op, CFR_ENV_CHUNK, id, data, len, CFR_ENV_PLAIN_MAX,
                     &c->plain, err) != 0) {
        c->open_failed = true;
        cfr_hex_encode(id, ID_LEN, c->bad_chunk);
        return CFR_ERR(err, CFR_ECORRUPT,
                       "chunk %.16s does not open (tag, type or hash wrong)",
                       c->bad_chunk);
    }
    if (c->next < c->n && memcmp(id, c->ids + c->next * ID_LEN, ID_LEN) == 0) {
        if ((rc = restore_file_write(c->wf, c->plain.data, c->plain.len,
                                     err)) != 0) {
            return rc;
        }
        c->next++;
        return drain(c, err);
    }
    if (c->n_stash == VERIFY_BATCH ||
        c->stash_bytes + c->plain.len > VERIFY_STASH_MAX) {
        return CFR_ERR(err, CFR_ELIMIT, "vault sends chunks far out of order");
    }
    c->stash[c->n_stash].data = cfr_malloc(c->plain.len + 1);
    if (c->stash[c->n_stash].data == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
    }
    memcpy(c->stash[c->n_stash].id, id, ID_LEN);
    if (c->plain.len > 0) {
        memcpy(c->stash[c->n_stash].data, c->plain.data, c->plain.len);
    }
    c->stash[c->n_stash].len = c->plain.len;
    c->stash_bytes += c->plain.len;
    c->n_stash++;
    return 0;
}

/* At most VERIFY_BATCH IDs from `from`, none twice (fetch.h asks that). */
static size_t
window_end(const uint8_t *ids, size_t from, size_t n)
{
    size_t end = from;
    while (end < n && end - from < VERIFY_BATCH) {
        for (size_t k = from; k < end; k++) {
            if (memcmp(ids + k * ID_LEN, ids + end * ID_LEN, ID_LEN) == 0) {
                return end;
            }
        }
        end++;
    }
    return end;
}

/* cur/ new/ tmp/ of folder, once per folder; mu held. */
static int
layout(struct snapctx *c, const char *folder, struct cfr_err *err)
{
    static const char *const subs[] = {"cur", "new", "tmp"};
    if (c->any_folder && strcmp(c->folder, folder) == 0) {
        return 0;
    }
    for (size_t i = 0; i < 3; i++) {
        char p[NAME_MAX + 8];
        int fd = -1, rc;
        int k = folder[0] != '\0'
                    ? snprintf(p, sizeof(p), "%s/%s", folder, subs[i])
                    : snprintf(p, sizeof(p), "%s", subs[i]);
        if (k < 0 || (size_t)k >= sizeof(p)) {
            return CFR_ERR(err, CFR_EINVAL, "folder name too long");
        }
        rc = restore_open_dir(c->root_fd, p, (size_t)k, &fd, err);
        if (fd >= 0) {
            close(fd);
        }
        if (rc != 0) {
            return rc;
        }
    }
    snprintf(c->folder, sizeof(c->folder), "%s", folder);
    c->any_folder = true;
    /* A sample comes in key order too, so each folder comes once. */
    {
        char **v = cfr_realloc(c->folders, (c->n_folders + 1) * sizeof(*v));
        if (v == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
        }
        c->folders = v;
        if ((v[c->n_folders] = cfr_strdup(folder)) == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
        }
        c->n_folders++;
    }
    return 0;
}

/* ---- comparisons ------------------------------------------------------------
 */

static int
seen_cmp_key(const uint8_t *k, size_t n, const struct seen *s)
{
    size_t m = n < s->key_len ? n : s->key_len;
    int d = m > 0 ? memcmp(k, s->key, m) : 0;
    if (d != 0) {
        return d;
    }
    return n < s->key_len ? -1 : n > s->key_len ? 1 : 0;
}

static struct seen *
seen_find(struct seen_set *ss, const uint8_t *k, size_t n)
{
    size_t lo = 0, hi = ss->n_sorted;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = seen_cmp_key(k, n, &ss->v[mid]);
        if (d == 0) {
            return &ss->v[mid];
        }
        if (d < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

static int
seen_sort_cmp(const void *a, const void *b)
{
    const struct seen *x = a, *y = b;
    return seen_cmp_key(x->key, x->key_len, y);
}

/* Compares with an earlier replica, or remembers for later ones. */
static void
cross_check(struct snapctx *c, const struct cfr_snap_entry *e,
            const uint8_t hash[ID_LEN], const char *folder, const char *base,
            const char *msgid)
{
    struct seen_set *ss = c->seen;
    struct seen *s;
    const char *other = NULL;

    pthread_mutex_lock(&c->mu);
    s = seen_find(ss, e->key, e->key_len);
    if (s != NULL) {
        if (memcmp(s->hash, hash, ID_LEN) != 0) {
            other = c->r->reps[s->rep].addr;
        }
        goto out;
    }
    /* New here (the replicas before lacked it): appended, and sorted in
     * with the rest once this replica is done (seen_settle). */
    if (ss->n == ss->cap || ss->v == NULL) {
        size_t cap = ss->cap == 0 ? 64 : 2 * ss->cap;
        struct seen *v = cfr_realloc(ss->v, cap * sizeof(*v));
        if (v == NULL) {
            goto out; /* only the comparison is lost */
        }
        ss->v = v;
        ss->cap = cap;
    }
    s = &ss->v[ss->n];
    if ((s->key = cfr_malloc(e->key_len)) == NULL) {
        goto out;
    }
    memcpy(s->key, e->key, e->key_len);
    s->key_len = e->key_len;
    memcpy(s->hash, hash, ID_LEN);
    s->rep = (size_t)(c->rep - c->r->reps);
    ss->n++;
out:
    pthread_mutex_unlock(&c->mu);
    if (other != NULL) {
        char d[160];
        snprintf(d, sizeof(d),
                 "restored bytes differ from those replica %s gave for the "
                 "same snapshot",
                 other);
        fail(c, RESTORE_VERIFY_CONTENT, folder, base, msgid, d);
    }
}

/* After a replica's pass: every entry findable by the next replicas. */
static void
seen_settle(struct seen_set *ss)
{
    if (ss != NULL && ss->n > ss->n_sorted) {
        qsort(ss->v, ss->n, sizeof(*ss->v), seen_sort_cmp);
    }
    if (ss != NULL) {
        ss->n_sorted = ss->n;
    }
}

static void
live_free(struct snapctx *c)
{
    for (size_t i = 0; i < c->n_live; i++) {
        cfr_free(c->live[i].base);
        cfr_free(c->live[i].rel);
    }
    cfr_free(c->live);
    c->live = NULL;
    c->n_live = 0;
    c->live_loaded = false;
}

static int
live_cmp(const void *a, const void *b)
{
    const struct live_name *x = a, *y = b;
    return strcmp(x->base, y->base);
}

/* Names of the live folder's cur/ and new/, sorted by base name. */
static void
live_load(struct snapctx *c, const char *folder)
{
    size_t cap = 0;
    live_free(c);
    snprintf(c->live_folder, sizeof(c->live_folder), "%s", folder);
    c->live_loaded = true;
    for (int sub = 0; sub < 2; sub++) {
        char p[RESTORE_PATH_MAX + NAME_MAX + 16];
        DIR *d;
        struct dirent *de;
        snprintf(p, sizeof(p), "%s/%s%s%s", c->live_root, folder,
                 folder[0] != '\0' ? "/" : "", sub == 0 ? "cur" : "new");
        if ((d = opendir(p)) == NULL) {
            continue;
        }
        while ((de = readdir(d)) != NULL) {
            struct live_name *ln;
            size_t bl;
            if (de->d_name[0] == '.') {
                continue;
            }
            if (c->n_live == cap) {
                size_t nc = cap == 0 ? 256 : 2 * cap;
                struct live_name *v = cfr_realloc(c->live, nc * sizeof(*v));
                if (v == NULL) {
                    break;
                }
                c->live = v;
                cap = nc;
            }
            ln = &c->live[c->n_live];
            bl = strcspn(de->d_name, ":");
            ln->base = cfr_malloc(bl + 1);
            ln->rel = cfr_malloc(strlen(de->d_name) + 5);
            if (ln->base == NULL || ln->rel == NULL) {
                cfr_free(ln->base);
                cfr_free(ln->rel);
                break;
            }
            memcpy(ln->base, de->d_name, bl);
            ln->base[bl] = '\0';
            snprintf(ln->rel, strlen(de->d_name) + 5, "%s/%s",
                     sub == 0 ? "cur" : "new", de->d_name);
            c->n_live++;
        }
        closedir(d);
    }
    if (c->n_live > 1) {
        qsort(c->live, c->n_live, sizeof(*c->live), live_cmp);
    }
}

/* Compares an unchanged live message with the restored bytes. */
static void
live_check(struct snapctx *c, const struct cfr_snap_entry *e,
           const uint8_t hash[ID_LEN], const char *folder, const char *base,
           const char *msgid)
{
    struct live_name key = {.base = (char *)base, .rel = NULL};
    struct live_name *ln;
    char p[2 * RESTORE_PATH_MAX];
    struct stat st;
    uint8_t h[ID_LEN];
    uint64_t got = 0;
    struct cfr_err e2;
    int fd;

    if (!c->live_ok) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (!c->live_loaded || strcmp(c->live_folder, folder) != 0) {
        live_load(c, folder);
    }
    ln = c->n_live > 0
             ? bsearch(&key, c->live, c->n_live, sizeof(*c->live), live_cmp)
             : NULL;
    if (ln != NULL) {
        snprintf(p, sizeof(p), "%s/%s%s%s", c->live_root, folder,
                 folder[0] != '\0' ? "/" : "", ln->rel);
    }
    pthread_mutex_unlock(&c->mu);
    if (ln == NULL) {
        return; /* gone from the live store since: nothing to compare */
    }
    if ((fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        return;
    }
    /* Changed since the backup (size or mtime): not comparable. */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size != e->size ||
        (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec !=
            e->mtime_ns) {
        close(fd);
        return;
    }
    cfr_err_clear(&e2);
    if (restore_verify_hash_fd(fd, h, &got, &e2) != 0) {
        close(fd);
        return;
    }
    close(fd);
    pthread_mutex_lock(&c->mu);
    c->messages_live++;
    pthread_mutex_unlock(&c->mu);
    if (got != e->size || memcmp(h, hash, ID_LEN) != 0) {
        fail(c, RESTORE_VERIFY_LIVE, folder, base, msgid,
             "the live message, unchanged since the backup by size and "
             "mtime, holds other bytes than the restored one");
    }
}

/* ---- one file ---------------------------------------------------------- */

/* Fetches, opens and writes e's chunks; 0 or the error, *kind_r its kind. */
static int
fetch_file(struct worker *c, const struct cfr_snap_entry *e,
           enum restore_verify_kind *kind_r, struct cfr_err *err)
{
    int rc = 0;
    for (size_t from = 0; from < e->n_chunks && rc == 0;) {
        size_t end = window_end(e->chunk_ids, from, e->n_chunks);
        c->ids = e->chunk_ids + from * ID_LEN;
        c->n = end - from;
        c->next = 0;
        c->open_failed = false;
        rc = restore_fetcher_get(c->c->rep->f, c->ids, c->n, chunk_cb, c, err);
        stash_clear(c);
        if (rc == 0 && c->next != c->n) {
            rc = CFR_ERR(err, CFR_EINTERNAL, "%zu of %zu chunks written",
                         c->next, c->n);
        }
        if (rc != 0) {
            *kind_r =
                c->open_failed        ? RESTORE_VERIFY_CHUNK_CORRUPT
                : rc == CFR_ENOTFOUND ? RESTORE_VERIFY_CHUNK_MISSING
                : rc == CFR_ECORRUPT  ? RESTORE_VERIFY_CHUNK_CORRUPT
                : rc == CFR_EIO       ? RESTORE_VERIFY_IO
                : rc == CFR_ENOMEM || rc == CFR_EINTERNAL || rc == CFR_ELIMIT
                    ? RESTORE_VERIFY_OTHER
                    : RESTORE_VERIFY_UNREACHABLE;
        }
        from = end;
    }
    return rc;
}

static int
expect_add(struct snapctx *c, const char *folder, const char *base,
           const char *msgid, const struct cfr_snap_entry *e,
           const uint8_t hash[ID_LEN])
{
    struct expect *x;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    if (c->n_ex == c->cap_ex) {
        size_t cap = c->cap_ex == 0 ? 64 : 2 * c->cap_ex;
        struct expect *v = cfr_realloc(c->ex, cap * sizeof(*v));
        if (v == NULL) {
            rc = CFR_ENOMEM;
            goto out;
        }
        c->ex = v;
        c->cap_ex = cap;
    }
    x = &c->ex[c->n_ex];
    memset(x, 0, sizeof(*x));
    x->folder = cfr_strdup(folder);
    x->base = cfr_strdup(base);
    x->msgid = cfr_strdup(msgid);
    if (x->folder == NULL || x->base == NULL || x->msgid == NULL) {
        cfr_free(x->folder);
        cfr_free(x->base);
        cfr_free(x->msgid);
        rc = CFR_ENOMEM;
        goto out;
    }
    x->size = e->size;
    x->flags = restore_verify_info_flags(e->info, e->info_len);
    memcpy(x->hash, hash, ID_LEN);
    c->n_ex++;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/*
 * Restores one file into scratch and checks it. Returns 0 to go on (its
 * failures recorded), or -1 when the replica stopped answering.
 */
static int
do_file(struct worker *w, const struct cfr_snap_entry *e)
{
    struct snapctx *c = w->c;
    char path[RESTORE_PATH_MAX];
    char folder[NAME_MAX + 2] = "";
    char *base = NULL, *msgid = NULL;
    const char *shown;
    size_t flen = 0;
    enum restore_verify_kind kind = RESTORE_VERIFY_OTHER;
    struct cfr_err err;
    uint8_t hash[ID_LEN];
    uint64_t got = 0;
    bool is_msg = e->kind == CFR_SNAP_MAILDIR_MESSAGE;
    int rc, fd;

    cfr_err_clear(&err);
    if (restore_path_of(e, path, sizeof(path), &flen, &err) != 0) {
        fail(c, RESTORE_VERIFY_SNAPSHOT, NULL, NULL, NULL, err.msg);
        return 0;
    }
    memcpy(folder, e->key, flen);
    folder[flen] = '\0';
    /* The message name without the folder and ":2," part; other files by
     * their path in the folder. */
    base = is_msg ? dup_printable(e->key + flen + 1, e->key_len - flen - 1)
                  : dup_printable(e->key + flen + 2, e->key_len > flen + 2
                                                         ? e->key_len - flen - 2
                                                         : 0);
    msgid = dup_printable(e->message_id, e->message_id_len);
    if (base == NULL || msgid == NULL) {
        fail(c, RESTORE_VERIFY_OTHER, folder, NULL, NULL, "out of memory");
        goto out;
    }
    shown = base;
    pthread_mutex_lock(&c->mu);
    if (is_msg) {
        c->messages_checked++;
    }
    rc = layout(c, folder, &err);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0 || (rc = restore_file_begin(c->root_fd, path, e->mode, &w->wf,
                                            &err)) != 0) {
        fail(c,
             rc == CFR_EDENIED || rc == CFR_EINVAL ? RESTORE_VERIFY_SNAPSHOT
                                                   : RESTORE_VERIFY_IO,
             folder, shown, msgid, err.msg);
        goto out;
    }
    if (fetch_file(w, e, &kind, &err) != 0) {
        restore_file_abort(w->wf);
        w->wf = NULL;
        if (kind == RESTORE_VERIFY_CHUNK_MISSING) {
            /* A vault lists a chunk whose bytes fail its own checksum as
             * missing, so that a reader asks elsewhere. */
            char d[CFR_ERR_MSG_MAX + 96];
            snprintf(d, sizeof(d),
                     "absent from this replica or failing its checksum: %s",
                     err.msg);
            fail(c, kind, folder, shown, msgid, d);
        } else {
            fail(c, kind, folder, shown, msgid, err.msg);
        }
        if (kind == RESTORE_VERIFY_UNREACHABLE) {
            cfr_free(base);
            cfr_free(msgid);
            return -1;
        }
        goto out;
    }
    rc = restore_file_commit(w->wf, e->size, e->mtime_ns, &err);
    w->wf = NULL;
    if (rc != 0) {
        fail(c,
             rc == CFR_ECORRUPT ? RESTORE_VERIFY_CONTENT
             : rc == CFR_EEXIST ? RESTORE_VERIFY_SNAPSHOT
                                : RESTORE_VERIFY_IO,
             folder, shown, msgid, err.msg);
        goto out;
    }
    /* Hash what is on the scratch disk, not what was meant to be. */
    if ((fd = openat(c->root_fd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) <
            0 ||
        restore_verify_hash_fd(fd, hash, &got, &err) != 0) {
        if (fd >= 0) {
            close(fd);
        } else {
            CFR_ERR_ERRNO(&err, CFR_EIO, "cannot read the restored file");
        }
        fail(c, RESTORE_VERIFY_IO, folder, shown, msgid, err.msg);
        goto out;
    }
    close(fd);
    if (got != e->size) {
        char d[128];
        snprintf(d, sizeof(d),
                 "%" PRIu64 " bytes on disk, the manifest says %" PRIu64, got,
                 e->size);
        fail(c, RESTORE_VERIFY_CONTENT, folder, shown, msgid, d);
        goto out;
    }
    pthread_mutex_lock(&c->mu);
    c->files++;
    c->bytes += e->size;
    pthread_mutex_unlock(&c->mu);
    cross_check(c, e, hash, folder, shown, msgid);
    if (is_msg) {
        if (expect_add(c, folder, base, msgid, e, hash) != 0) {
            fail(c, RESTORE_VERIFY_OTHER, folder, shown, msgid,
                 "out of memory");
        }
        live_check(c, e, hash, folder, base, msgid);
    }
out:
    cfr_free(base);
    cfr_free(msgid);
    return 0;
}

/* ---- Dovecot ----------------------------------------------------------- */

static int
expect_cmp(const void *a, const void *b)
{
    const struct expect *x = a, *y = b;
    int d = strcmp(x->folder, y->folder);
    return d != 0 ? d : strcmp(x->base, y->base);
}

static int
dove_cb(void *ctx, const struct restore_doveadm_msg *m)
{
    struct snapctx *c = ctx;
    char folder[RESTORE_DOVEADM_MAILBOX_MAX + 2];
    struct expect key, *x = NULL;
    unsigned flags;
    char d[256];

    if (strcmp(m->mailbox, "INBOX") == 0) {
        folder[0] = '\0';
    } else {
        snprintf(folder, sizeof(folder), ".%s", m->mailbox);
    }
    /* Dovecot's Maildir GUID is the file's base name unless the uidlist
     * gave it another; then Message-ID and size find it. */
    key.folder = folder;
    key.base = (char *)m->guid;
    if (c->n_ex > 0) {
        x = bsearch(&key, c->ex, c->n_ex, sizeof(*c->ex), expect_cmp);
    }
    if (x != NULL && x->matched) {
        snprintf(d, sizeof(d), "Dovecot shows the message twice (UID %u)",
                 (unsigned)m->uid);
        fail(c, RESTORE_VERIFY_DOVECOT, folder, x->base, x->msgid, d);
        return 0;
    }
    if (x == NULL) {
        for (size_t i = 0; i < c->n_ex; i++) {
            struct expect *y = &c->ex[i];
            if (!y->matched && strcmp(y->folder, folder) == 0 &&
                y->size == m->size && strcmp(y->msgid, m->message_id) == 0) {
                x = y;
                break;
            }
        }
    }
    if (x == NULL) {
        snprintf(d, sizeof(d),
                 "Dovecot shows a message (UID %u, %" PRIu64
                 " bytes) that the snapshot does not hold",
                 (unsigned)m->uid, m->size);
        fail(c, RESTORE_VERIFY_MESSAGE_EXTRA, folder, m->guid, m->message_id,
             d);
        return 0;
    }
    x->matched = true;
    x->uid = m->uid;
    flags = restore_verify_imap_flags(m->flags);
    if (x->size != m->size || strcmp(x->msgid, m->message_id) != 0 ||
        /* \Recent and keywords are Dovecot's own; the letters must agree */
        flags != x->flags) {
        snprintf(d, sizeof(d),
                 "Dovecot shows size %" PRIu64
                 ", flags \"%.80s\", Message-ID %.60s; the snapshot has "
                 "size %" PRIu64 ", flag bits %u",
                 m->size, m->flags, m->message_id, x->size, x->flags);
        fail(c, RESTORE_VERIFY_METADATA, folder, x->base, x->msgid, d);
        x->failed = true;
        return 0; /* one failure per message: the text would repeat it */
    }
    /* The bytes an IMAP client would get, as Dovecot read them, against
     * the manifest's size and what was written to scratch. */
    if (!m->have_text) {
        fail(c, RESTORE_VERIFY_DOVECOT, folder, x->base, x->msgid,
             "Dovecot gave no message text");
    } else if (m->text_size != x->size) {
        snprintf(d, sizeof(d),
                 "Dovecot reads %" PRIu64 " bytes of text (UID %u); the "
                 "snapshot has %" PRIu64,
                 m->text_size, (unsigned)m->uid, x->size);
        fail(c, RESTORE_VERIFY_DOVECOT, folder, x->base, x->msgid, d);
    } else if (memcmp(m->text_hash, x->hash, ID_LEN) != 0) {
        char hd[17], hx[17];
        cfr_hex_encode(m->text_hash, 8, hd);
        cfr_hex_encode(x->hash, 8, hx);
        snprintf(d, sizeof(d),
                 "Dovecot reads other bytes than were restored (UID %u, "
                 "content hash %s..., restored %s...)",
                 (unsigned)m->uid, hd, hx);
        fail(c, RESTORE_VERIFY_DOVECOT, folder, x->base, x->msgid, d);
    }
    return 0;
}

/*
 * The message a doveadm error is about: Dovecot names it "Mailbox <name>:
 * UID=<n>:" when reading one message failed (e.g. its text is shorter than
 * the ",S=" size in its name). NULL when the error names none we know.
 */
static struct expect *
dovecot_error_message(struct snapctx *c, const char *msg)
{
    const char *p = strstr(msg, "Mailbox ");
    const char *q;
    char folder[RESTORE_DOVEADM_MAILBOX_MAX + 2];
    unsigned long uid;
    char *end;
    size_t n;

    if (p == NULL || (q = strstr(p, ": UID=")) == NULL) {
        return NULL;
    }
    p += strlen("Mailbox ");
    n = (size_t)(q - p);
    if (n == 5 && memcmp(p, "INBOX", 5) == 0) {
        folder[0] = '\0';
    } else if (n + 2 <= sizeof(folder)) {
        folder[0] = '.';
        memcpy(folder + 1, p, n);
        folder[n + 1] = '\0';
    } else {
        return NULL;
    }
    errno = 0;
    uid = strtoul(q + strlen(": UID="), &end, 10);
    if (errno != 0 || end == q + strlen(": UID=") || uid == 0 ||
        uid > UINT32_MAX) {
        return NULL;
    }
    for (size_t i = 0; i < c->n_ex; i++) {
        if (c->ex[i].matched && c->ex[i].uid == uid &&
            strcmp(c->ex[i].folder, folder) == 0) {
            return &c->ex[i];
        }
    }
    return NULL;
}

static void
dovecot_check(struct snapctx *c)
{
    struct cfr_err err;
    int rc;
    /* As a restore leaves it: Dovecot's files made to agree with the
     * messages present (a sample lacks most of them), stale indexes gone. */
    for (size_t i = 0; i < c->n_folders; i++) {
        cfr_err_clear(&err);
        if (restore_dovecot_finish(c->root_fd, c->folders[i], &err) != 0) {
            fail(c, RESTORE_VERIFY_DOVECOT, c->folders[i], NULL, NULL, err.msg);
        }
    }
    if (c->n_ex == 0) {
        return;
    }
    qsort(c->ex, c->n_ex, sizeof(*c->ex), expect_cmp);
    cfr_err_clear(&err);
    rc = restore_doveadm_list_ex(c->root, RESTORE_DOVEADM_TEXT, dove_cb, c,
                                 &err);
    if (rc == CFR_EUNAVAIL) {
        if (!c->r->dovecot_missing_told) {
            fprintf(stderr, "coffer-restore verify: doveadm not found: the "
                            "Dovecot comparison is skipped\n");
            c->r->dovecot_missing_told = true;
        }
        return;
    }
    if (rc != 0) {
        struct expect *x = dovecot_error_message(c, err.msg);
        if (x == NULL) {
            fail(c, RESTORE_VERIFY_DOVECOT, NULL, NULL, NULL, err.msg);
        } else if (!x->failed) {
            /* Dovecot could not read that message's text. */
            fail(c, RESTORE_VERIFY_DOVECOT, x->folder, x->base, x->msgid,
                 err.msg);
        }
        /* else: the same fault, already reported for that message */
        return;
    }
    for (size_t i = 0; i < c->n_ex; i++) {
        if (!c->ex[i].matched) {
            fail(c, RESTORE_VERIFY_MESSAGE_MISSING, c->ex[i].folder,
                 c->ex[i].base, c->ex[i].msgid,
                 "restored, but Dovecot does not show it");
        }
    }
}

/* ---- message samples -------------------------------------------------------
 */

static void
pick_free(struct pick *p)
{
    cfr_free(p->mem);
    p->mem = NULL;
}

static int
pick_copy(struct pick *p, const struct cfr_snap_entry *e, uint64_t rank)
{
    size_t ids = e->n_chunks * ID_LEN;
    size_t n = e->key_len + e->info_len + e->message_id_len + ids + 1;
    uint8_t *m = cfr_malloc(n);
    if (m == NULL) {
        return CFR_ENOMEM;
    }
    p->rank = rank;
    p->mem = m;
    p->e = *e;
    memcpy(m, e->key, e->key_len);
    p->e.key = m;
    m += e->key_len;
    if (e->info_len > 0) {
        memcpy(m, e->info, e->info_len);
    }
    p->e.info = m;
    m += e->info_len;
    if (e->message_id_len > 0) {
        memcpy(m, e->message_id, e->message_id_len);
    }
    p->e.message_id = m;
    m += e->message_id_len;
    if (ids > 0) {
        memcpy(m, e->chunk_ids, ids);
    }
    p->e.chunk_ids = m;
    return 0;
}

/* Max-heap by rank: the root is the first to give way. */
static void
heap_down(struct pick *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].rank > h[m].rank) {
            m = l;
        }
        if (r < n && h[r].rank > h[m].rank) {
            m = r;
        }
        if (m == i) {
            return;
        }
        struct pick t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void
heap_up(struct pick *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].rank < h[i].rank) {
        struct pick t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static int
pick_key_cmp(const void *a, const void *b)
{
    const struct pick *x = a, *y = b;
    size_t m = x->e.key_len < y->e.key_len ? x->e.key_len : y->e.key_len;
    int d = memcmp(x->e.key, y->e.key, m);
    if (d != 0) {
        return d;
    }
    return x->e.key_len < y->e.key_len ? -1 : x->e.key_len > y->e.key_len;
}

/* ---- one snapshot on one replica ----------------------------------------- */

static const struct restore_snapshot *
find_snap(const struct run *r, const struct rep *rp, const struct job *j)
{
    uint8_t mid[ID_LEN];
    if (j->newest) {
        cfr_keyring_name_id(r->s->kr, j->mailbox, strlen(j->mailbox), mid);
    }
    for (size_t i = 0; i < rp->n_snaps; i++) {
        const struct restore_snapshot *s = &rp->snaps[i];
        /* newest first: the mailbox's first record is its newest, whether
         * it opens or not (one that does not is reported, never skipped) */
        if (j->newest ? memcmp(s->mailbox_id, mid, ID_LEN) == 0
                      : memcmp(s->header_id, j->header_id, ID_LEN) == 0) {
            return s;
        }
    }
    return NULL;
}

static struct seen_set *
seen_for(struct seen_set **sets, size_t *n, const uint8_t hid[ID_LEN])
{
    struct seen_set *v;
    for (size_t i = 0; i < *n; i++) {
        if (memcmp((*sets)[i].header_id, hid, ID_LEN) == 0) {
            return &(*sets)[i];
        }
    }
    if ((v = cfr_realloc(*sets, (*n + 1) * sizeof(*v))) == NULL) {
        return NULL;
    }
    *sets = v;
    memset(&v[*n], 0, sizeof(v[*n]));
    memcpy(v[*n].header_id, hid, ID_LEN);
    return &v[(*n)++];
}

static void
seen_sets_free(struct seen_set *sets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sets[i].n; k++) {
            cfr_free(sets[i].v[k].key);
        }
        cfr_free(sets[i].v);
    }
    cfr_free(sets);
}

static void
snapctx_free(struct snapctx *c)
{
    for (size_t i = 0; i < c->n_ex; i++) {
        cfr_free(c->ex[i].folder);
        cfr_free(c->ex[i].base);
        cfr_free(c->ex[i].msgid);
    }
    cfr_free(c->ex);
    for (size_t i = 0; i < c->n_folders; i++) {
        cfr_free(c->folders[i]);
    }
    cfr_free(c->folders);
    live_free(c);
    for (size_t i = 0; i < c->q_n; i++) {
        pick_free(&c->q[(c->q_head + i) % c->q_cap]);
    }
    cfr_free(c->q);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv_job);
    pthread_cond_destroy(&c->cv_space);
    if (c->root_fd >= 0) {
        close(c->root_fd);
    }
    cfr_free(c);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct snapctx *c = w->c;
    for (;;) {
        struct pick p;
        int rc;
        pthread_mutex_lock(&c->mu);
        while (c->q_n == 0 && !c->q_done && !c->unreachable) {
            pthread_cond_wait(&c->cv_job, &c->mu);
        }
        if (c->unreachable || c->q_n == 0) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        p = c->q[c->q_head];
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_n--;
        pthread_cond_signal(&c->cv_space);
        pthread_mutex_unlock(&c->mu);
        rc = do_file(w, &p.e);
        pick_free(&p);
        if (rc != 0) {
            /* The replica went away: every other file would wait out the
             * call timeout; this replica is given up (reported once). */
            pthread_mutex_lock(&c->mu);
            c->unreachable = true;
            pthread_cond_broadcast(&c->cv_job);
            pthread_cond_broadcast(&c->cv_space);
            pthread_mutex_unlock(&c->mu);
            break;
        }
    }
    return NULL;
}

/* Queues p (taken), waiting for room. -1 when the workers stopped. */
static int
push(struct snapctx *c, struct pick *p)
{
    pthread_mutex_lock(&c->mu);
    while (c->q_n == c->q_cap && !c->unreachable) {
        pthread_cond_wait(&c->cv_space, &c->mu);
    }
    if (c->unreachable) {
        pthread_mutex_unlock(&c->mu);
        pick_free(p);
        return -1;
    }
    c->q[(c->q_head + c->q_n) % c->q_cap] = *p;
    c->q_n++;
    p->mem = NULL;
    pthread_cond_signal(&c->cv_job);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void
workers_stop(struct snapctx *c, struct worker *ws, size_t nw)
{
    pthread_mutex_lock(&c->mu);
    c->q_done = true;
    pthread_cond_broadcast(&c->cv_job);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < nw; i++) {
        if (ws[i].started) {
            pthread_join(ws[i].tid, NULL);
        }
        stash_clear(&ws[i]);
        restore_file_abort(ws[i].wf);
        cfr_opener_free(ws[i].op);
        cfr_buf_fini(&ws[i].plain);
    }
    cfr_free(ws);
}

/* Starts nw workers; NULL (after recording why) when none could. */
static struct worker *
workers_start(struct snapctx *c, size_t nw)
{
    struct worker *ws = cfr_calloc(nw, sizeof(*ws));
    struct cfr_err err;
    size_t started = 0;
    cfr_err_clear(&err);
    if (ws == NULL || (c->q = cfr_calloc(2 * nw, sizeof(*c->q))) == NULL) {
        cfr_free(ws);
        fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL, "out of memory");
        return NULL;
    }
    c->q_cap = 2 * nw;
    for (size_t i = 0; i < nw; i++) {
        ws[i].c = c;
        cfr_buf_init(&ws[i].plain, CFR_ENV_PLAIN_MAX);
        if ((ws[i].op = cfr_opener_new(c->r->s->kr, &err)) == NULL ||
            pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            break;
        }
        ws[i].started = true;
        started++;
    }
    if (started == 0) {
        workers_stop(c, ws, nw);
        fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL,
             "cannot start a worker thread");
        return NULL;
    }
    return ws;
}

/* Walks the manifest, restoring everything or the sample. */
static void
walk(struct snapctx *c, const struct restore_snapshot *s)
{
    struct worker *ws = NULL;
    size_t nw = c->r->s->cfg.parallelism > 0 ? c->r->s->cfg.parallelism
                                             : RESTORE_WORKERS_DEFAULT;
    struct run *r = c->r;
    struct restore_manifest *m = NULL;
    struct cfr_snap_entry e;
    struct cfr_err err;
    struct pick *heap = NULL;
    size_t k = 0, n_heap = 0;
    int rc;

    cfr_err_clear(&err);
    if (nw > RESTORE_WORKERS_MAX) {
        nw = RESTORE_WORKERS_MAX;
    }
    if ((ws = workers_start(c, nw)) == NULL) {
        return;
    }
    if (r->o->sample_messages > 0) {
        k = r->o->sample_messages > 1000000 ? 1000000
                                            : (size_t)r->o->sample_messages;
        if ((heap = cfr_calloc(k, sizeof(*heap))) == NULL) {
            fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL, "out of memory");
            goto out;
        }
    }
    if (restore_manifest_open(c->rep->f, r->s->kr, &s->h, &m, &err) != 0) {
        fail(c, RESTORE_VERIFY_SNAPSHOT, NULL, NULL, NULL, err.msg);
        goto out;
    }
    for (;;) {
        rc = restore_manifest_next(m, &e, &err);
        if (rc == 0) {
            break;
        }
        if (rc < 0) {
            bool damaged = restore_manifest_damaged(m, rc);
            char d[CFR_ERR_MSG_MAX + 32];
            snprintf(d, sizeof(d), "manifest: %s", err.msg);
            fail(c,
                 damaged ? RESTORE_VERIFY_SNAPSHOT : RESTORE_VERIFY_UNREACHABLE,
                 NULL, NULL, NULL, d);
            if (!damaged && rc != CFR_ENOMEM) {
                pthread_mutex_lock(&c->mu);
                c->unreachable = true;
                pthread_mutex_unlock(&c->mu);
            }
            goto out;
        }
        if (e.kind == CFR_SNAP_MAILDIR_MESSAGE) {
            c->messages_total++;
        }
        if (heap == NULL) {
            struct pick p;
            if (pick_copy(&p, &e, 0) != 0) {
                fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL,
                     "out of memory");
                goto out;
            }
            if (push(c, &p) != 0) {
                goto out;
            }
            continue;
        }
        if (e.kind != CFR_SNAP_MAILDIR_MESSAGE) {
            continue;
        }
        {
            uint64_t rank = restore_verify_rank(r->seed, e.key, e.key_len);
            if (n_heap < k) {
                if (pick_copy(&heap[n_heap], &e, rank) != 0) {
                    fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL,
                         "out of memory");
                    goto out;
                }
                heap_up(heap, n_heap++);
            } else if (rank < heap[0].rank) {
                struct pick p;
                if (pick_copy(&p, &e, rank) != 0) {
                    fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL,
                         "out of memory");
                    goto out;
                }
                pick_free(&heap[0]);
                heap[0] = p;
                heap_down(heap, n_heap, 0);
            }
        }
    }
    if (heap != NULL) {
        /* Manifest order: folders laid out once, the live folder read once. */
        qsort(heap, n_heap, sizeof(*heap), pick_key_cmp);
        for (size_t i = 0; i < n_heap; i++) {
            if (push(c, &heap[i]) != 0) {
                goto out;
            }
        }
    }
out:
    if (ws != NULL) {
        workers_stop(c, ws, nw);
    }
    seen_settle(c->seen);
    if (c->unreachable) {
        c->rep->dead = true;
    } else if (ws != NULL) {
        dovecot_check(c);
    }
    for (size_t i = 0; i < n_heap; i++) {
        pick_free(&heap[i]);
    }
    cfr_free(heap);
    restore_manifest_free(m);
}

static void
verify_snapshot(struct run *r, struct rep *rp, const struct job *j,
                struct seen_set **sets, size_t *n_sets)
{
    const struct restore_snapshot *s = find_snap(r, rp, j);
    struct restore_verify_mailbox *mb;
    struct snapctx *c;
    struct cfr_err err;
    const char *tmp;
    double t0 = mono_s();
    size_t mi = 0;
    char hex[2 * ID_LEN + 1];

    cfr_err_clear(&err);
    if ((c = cfr_calloc(1, sizeof(*c))) == NULL) {
        return;
    }
    c->r = r;
    c->rep = rp;
    c->mailbox = j->mailbox;
    c->root_fd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv_job, NULL);
    pthread_cond_init(&c->cv_space, NULL);
    if (restore_verify_add_mailbox(
            r->res, rp->ri, j->mailbox, s != NULL ? s->header_id : NULL,
            s != NULL ? s->received_ms : 0, &mi, &err) != 0) {
        snapctx_free(c);
        return;
    }
    c->mi = mi;
    if (s == NULL) {
        if (j->newest) {
            fail(c, RESTORE_VERIFY_SNAPSHOT, NULL, NULL, NULL,
                 "this replica holds no snapshot of the mailbox");
        } else {
            char d[128];
            snprintf(d, sizeof(d), "this replica lacks snapshot %s",
                     cfr_hex_encode(j->header_id, ID_LEN, hex));
            fail(c, RESTORE_VERIFY_SNAPSHOT, NULL, NULL, NULL, d);
        }
        goto out;
    }
    memcpy(c->header_id, s->header_id, ID_LEN);
    if (s->open_rc != 0) {
        char d[160];
        snprintf(d, sizeof(d),
                 "snapshot %.16s does not open (%s): damaged, forged or "
                 "another key",
                 cfr_hex_encode(s->header_id, ID_LEN, hex),
                 cfr_code_name(s->open_rc));
        fail(c, RESTORE_VERIFY_SNAPSHOT, NULL, NULL, NULL, d);
        goto out;
    }
    if ((c->seen = seen_for(sets, n_sets, s->header_id)) == NULL) {
        fail(c, RESTORE_VERIFY_OTHER, NULL, NULL, NULL, "out of memory");
        goto out;
    }
    tmp = r->o->scratch;
    if (tmp == NULL) {
        const char *t = getenv("TMPDIR");
        tmp = t != NULL && t[0] != '\0' ? t : "/tmp";
    }
    if ((size_t)snprintf(c->root, sizeof(c->root), "%s/coffer-verify.XXXXXX",
                         tmp) >= sizeof(c->root) ||
        mkdtemp(c->root) == NULL ||
        (c->root_fd = open(c->root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                        O_CLOEXEC)) < 0) {
        CFR_ERR_ERRNO(&err, CFR_EIO, "scratch directory in %s", tmp);
        c->root[0] = '\0';
        fail(c, RESTORE_VERIFY_IO, NULL, NULL, NULL, err.msg);
        goto out;
    }
    if (layout(c, "", &err) != 0) {
        fail(c, RESTORE_VERIFY_IO, NULL, NULL, NULL, err.msg);
        goto out;
    }
    if (r->o->live != NULL) {
        struct stat st;
        if (restore_verify_live_path(r->o->live, j->mailbox, c->live_root,
                                     sizeof(c->live_root), &err) != 0) {
            fail(c, RESTORE_VERIFY_LIVE, NULL, NULL, NULL, err.msg);
        } else if (stat(c->live_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
            char d[RESTORE_PATH_MAX + 64];
            snprintf(d, sizeof(d), "live store %s is not a directory",
                     c->live_root);
            fail(c, RESTORE_VERIFY_LIVE, NULL, NULL, NULL, d);
        } else {
            c->live_ok = true;
        }
    }
    walk(c, s);
out:
    mb = &r->res->replicas[rp->ri].mailboxes[mi];
    mb->messages_total = c->messages_total;
    mb->messages_checked = c->messages_checked;
    mb->messages_live = c->messages_live;
    mb->bytes = c->bytes;
    mb->seconds = mono_s() - t0;
    if (c->root[0] != '\0') {
        if (r->o->keep) {
            if (!r->o->json) {
                printf("kept %s\n", c->root);
            }
        } else {
            char *slash = strrchr(c->root, '/');
            int pfd;
            *slash = '\0';
            pfd = open(c->root[0] != '\0' ? c->root : "/",
                       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (pfd >= 0) {
                rm_tree_at(pfd, slash + 1, 0);
                close(pfd);
            }
        }
    }
    snapctx_free(c);
}

/* ---- the run --------------------------------------------------------------
 */

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct ranked {
    uint64_t rank;
    const char *name;
};

static int
ranked_cmp(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank < y->rank ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

/* Connects to every replica and lists its snapshots. */
static void
reach_replicas(struct run *r)
{
    const struct restore_config *cfg = &r->s->cfg;
    const char *const *addrs =
        r->o->n_replicas > 0 ? r->o->replicas : cfg->vaults;
    size_t n = r->o->n_replicas > 0 ? r->o->n_replicas : cfg->n_vaults;

    for (size_t i = 0; i < n && i < RESTORE_FETCH_VAULTS_MAX; i++) {
        struct rep *rp = &r->reps[r->n_reps];
        struct restore_fetch_opts fo;
        struct cfr_err err;
        int rc;

        cfr_err_clear(&err);
        memset(rp, 0, sizeof(*rp));
        rp->addr = addrs[i];
        if (restore_verify_add_replica(r->res, rp->addr, &rp->ri, &err) != 0) {
            continue;
        }
        r->n_reps++;
        memset(&fo, 0, sizeof(fo));
        fo.targets = &addrs[i];
        fo.n_targets = 1;
        fo.target_name = cfg->tls_server_name;
        fo.ca_pem = r->s->ca;
        fo.cert_pem = r->s->cert;
        fo.key_pem = r->s->key;
        fo.timeout_ms = cfg->timeout_ms;
        if ((rc = restore_fetcher_new(&fo, &rp->f, &err)) != 0 ||
            (rc = restore_list(rp->f, r->s->kr, NULL, &rp->snaps, &rp->n_snaps,
                               &err)) != 0) {
            (void)restore_verify_add_failure(
                r->res,
                rc == CFR_ECORRUPT || rc == CFR_EVERSION
                    ? RESTORE_VERIFY_SNAPSHOT
                    : RESTORE_VERIFY_UNREACHABLE,
                rp->ri, NULL, NULL, NULL, NULL, &err, "%s", err.msg);
            fprintf(stderr, "coffer-restore verify: replica %s: %s\n", rp->addr,
                    err.msg);
            rp->dead = true;
            continue;
        }
        for (size_t k = 0; k < rp->n_snaps; k++) {
            const struct restore_snapshot *s = &rp->snaps[k];
            char hex[2 * ID_LEN + 1];
            if (s->open_rc != 0) {
                (void)restore_verify_add_failure(
                    r->res, RESTORE_VERIFY_SNAPSHOT, rp->ri, NULL, NULL, NULL,
                    NULL, &err, "snapshot %s does not open (%s)",
                    cfr_hex_encode(s->header_id, ID_LEN, hex),
                    cfr_code_name(s->open_rc));
            }
        }
    }
}

/* Every mailbox name any replica holds, sorted, unique (borrowed). */
static const char **
all_mailboxes(struct run *r, size_t *n_r)
{
    const char **v;
    size_t n = 0, total = 0, u = 0;
    for (size_t i = 0; i < r->n_reps; i++) {
        total += r->reps[i].n_snaps;
    }
    if ((v = cfr_calloc(total + 1, sizeof(*v))) == NULL) {
        *n_r = 0;
        return NULL;
    }
    for (size_t i = 0; i < r->n_reps; i++) {
        for (size_t k = 0; k < r->reps[i].n_snaps; k++) {
            if (r->reps[i].snaps[k].open_rc == 0) {
                v[n++] = r->reps[i].snaps[k].h.mailbox;
            }
        }
    }
    qsort(v, n, sizeof(*v), str_cmp);
    for (size_t i = 0; i < n; i++) {
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0) {
            v[u++] = v[i];
        }
    }
    *n_r = u;
    return v;
}

/* Whether hid is some replica's newest snapshot of its mailbox. */
static bool
is_newest(const struct run *r, const struct restore_snapshot *s)
{
    for (size_t i = 0; i < r->n_reps; i++) {
        for (size_t k = 0; k < r->reps[i].n_snaps; k++) {
            const struct restore_snapshot *t = &r->reps[i].snaps[k];
            if (memcmp(t->mailbox_id, s->mailbox_id, ID_LEN) == 0) {
                if (memcmp(t->header_id, s->header_id, ID_LEN) == 0) {
                    return true;
                }
                break; /* the newest of that mailbox on this replica */
            }
        }
    }
    return false;
}

/*
 * Coverage: every retained snapshot's hex into *hex_r (owned), and the
 * older snapshots to verify this run appended to jobs.
 */
static int
coverage_jobs(struct run *r, const struct restore_report_state *st,
              const char **sel, size_t n_sel, struct job *jobs, size_t *n_jobs,
              size_t max_jobs, char (**hex_r)[2 * ID_LEN + 1], size_t *n_hex_r)
{
    char(*hex)[2 * ID_LEN + 1] = NULL;
    const struct restore_snapshot **cand = NULL;
    const char **ptrs = NULL;
    size_t *order = NULL;
    size_t total = 0, n = 0, nc = 0;
    int64_t window = r->o->window_ms > 0 ? r->o->window_ms : WINDOW_MS_DEFAULT;
    int64_t now = wall_ms();
    unsigned taken = 0;

    for (size_t i = 0; i < r->n_reps; i++) {
        total += r->reps[i].n_snaps;
    }
    hex = cfr_calloc(total + 1, sizeof(*hex));
    cand = cfr_calloc(total + 1, sizeof(const struct restore_snapshot *));
    ptrs = cfr_calloc(total + 1, sizeof(*ptrs));
    order = cfr_calloc(total + 1, sizeof(*order));
    if (hex == NULL || cand == NULL || ptrs == NULL || order == NULL) {
        cfr_free(hex);
        cfr_free(cand);
        cfr_free(ptrs);
        cfr_free(order);
        return CFR_ENOMEM;
    }
    for (size_t i = 0; i < r->n_reps; i++) {
        for (size_t k = 0; k < r->reps[i].n_snaps; k++) {
            const struct restore_snapshot *s = &r->reps[i].snaps[k];
            char h[2 * ID_LEN + 1];
            bool dup = false;
            cfr_hex_encode(s->header_id, ID_LEN, h);
            for (size_t q = 0; q < n && !dup; q++) {
                dup = strcmp(hex[q], h) == 0;
            }
            if (dup) {
                continue;
            }
            memcpy(hex[n++], h, sizeof(h));
            if (s->open_rc != 0 || is_newest(r, s)) {
                continue;
            }
            /* With --mailbox, only those mailboxes' history. */
            if (r->o->n_mailboxes > 0) {
                bool in = false;
                for (size_t q = 0; q < n_sel && !in; q++) {
                    in = strcmp(sel[q], s->h.mailbox) == 0;
                }
                if (!in) {
                    continue;
                }
            }
            cand[nc] = s;
            ptrs[nc] = hex[n - 1];
            nc++;
        }
    }
    if (nc > 0) {
        restore_report_state_pick(st, ptrs, nc, order);
    }
    for (size_t i = 0; i < nc && taken < r->o->older && *n_jobs < max_jobs;
         i++) {
        const struct restore_snapshot *s = cand[order[i]];
        int64_t when = restore_report_state_verified_ms(st, ptrs[order[i]]);
        if (when != 0 && now - when < window) {
            continue;
        }
        jobs[*n_jobs].mailbox = s->h.mailbox;
        jobs[*n_jobs].newest = false;
        memcpy(jobs[*n_jobs].header_id, s->header_id, ID_LEN);
        (*n_jobs)++;
        taken++;
    }
    cfr_free(cand);
    cfr_free(ptrs);
    cfr_free(order);
    *hex_r = hex;
    *n_hex_r = n;
    return 0;
}

int
restore_verify_run(struct restore_session *s,
                   const struct restore_verify_opts *o,
                   struct restore_verify_result *res, struct cfr_err *err)
{
    struct run r;
    struct restore_report_state st;
    const char **names = NULL, **sel = NULL;
    struct ranked *rk = NULL;
    struct job *jobs = NULL;
    char(*hex)[2 * ID_LEN + 1] = NULL;
    const char **hexp = NULL;
    size_t n_names = 0, n_sel = 0, n_jobs = 0, n_hex = 0, max_jobs;
    uint64_t unreachable = 0;
    bool prev_failed = false;
    int code = RESTORE_EXIT_OK, rc;
    int lock_fd = -1;

    memset(&r, 0, sizeof(r));
    memset(&st, 0, sizeof(st));
    r.s = s;
    r.o = o;
    r.res = res;
    if (o->seed_set) {
        r.seed = o->seed;
    } else {
        struct timespec ts;
        uint64_t x;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
            ((uint64_t)getpid() << 32);
        /* Short enough to type back in with --seed. */
        r.seed = cfr_splitmix64(&x) % 1000000000000u;
    }
    res->seed = r.seed;
    res->sample_mailboxes = o->sample_mailboxes;
    res->sample_messages = o->sample_messages;
    res->started_ms = wall_ms();
    if (s->cfg.tenant != NULL && res->tenant == NULL) {
        res->tenant = cfr_strdup(s->cfg.tenant);
    }
    /* Held from load to save: a run that started meanwhile waits, then
     * sees this one's coverage (report.h). */
    if (o->state != NULL &&
        restore_report_state_lock(o->state, &lock_fd, err) != 0) {
        return RESTORE_EXIT_CONFIG;
    }
    if (o->state != NULL &&
        (rc = restore_report_state_load(o->state, &st, err)) != 0) {
        restore_report_state_unlock(lock_fd);
        return rc == CFR_ENOMEM ? RESTORE_EXIT_OTHER : RESTORE_EXIT_CONFIG;
    }
    prev_failed = restore_report_state_prev_failed(&st);
    fprintf(o->json ? stderr : stdout,
            "verify: seed %" PRIu64
            " (rerun the same sample with --seed %" PRIu64 ")\n",
            r.seed, r.seed);

    reach_replicas(&r);
    names = all_mailboxes(&r, &n_names);
    res->mailboxes_available = n_names;

    /* Which mailboxes. */
    sel = cfr_calloc(n_names + o->n_mailboxes + 1, sizeof(*sel));
    rk = cfr_calloc(n_names + 1, sizeof(*rk));
    if (sel == NULL || rk == NULL || (names == NULL && n_names > 0)) {
        code = RESTORE_EXIT_OTHER;
        CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
        goto out;
    }
    if (o->n_mailboxes > 0) {
        for (size_t i = 0; i < o->n_mailboxes; i++) {
            bool found = false;
            for (size_t k = 0; k < n_names && !found; k++) {
                found = strcmp(names[k], o->mailboxes[i]) == 0;
            }
            if (found) {
                sel[n_sel++] = o->mailboxes[i];
                continue;
            }
            (void)restore_verify_add_failure(
                res, RESTORE_VERIFY_SNAPSHOT, RESTORE_VERIFY_NO_REPLICA,
                o->mailboxes[i], NULL, NULL, NULL, NULL,
                "no replica holds a readable snapshot of this mailbox");
        }
    } else {
        for (size_t i = 0; i < n_names; i++) {
            rk[i].name = names[i];
            rk[i].rank =
                o->sample_mailboxes > 0
                    ? restore_verify_rank(r.seed, names[i], strlen(names[i]))
                    : 0;
        }
        if (o->sample_mailboxes > 0 && o->sample_mailboxes < n_names) {
            qsort(rk, n_names, sizeof(*rk), ranked_cmp);
            n_sel = (size_t)o->sample_mailboxes;
        } else {
            n_sel = n_names;
        }
        for (size_t i = 0; i < n_sel; i++) {
            sel[i] = rk[i].name;
        }
        qsort(sel, n_sel, sizeof(*sel), str_cmp);
    }

    /* Newest of each, then older ones for coverage. */
    max_jobs = n_sel + o->older;
    if ((jobs = cfr_calloc(max_jobs + 1, sizeof(*jobs))) == NULL) {
        code = RESTORE_EXIT_OTHER;
        CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_sel; i++) {
        jobs[n_jobs].mailbox = sel[i];
        jobs[n_jobs].newest = true;
        n_jobs++;
    }
    if (o->state != NULL && coverage_jobs(&r, &st, sel, n_sel, jobs, &n_jobs,
                                          max_jobs, &hex, &n_hex) != 0) {
        code = RESTORE_EXIT_OTHER;
        CFR_ERR(err, CFR_ENOMEM, "verify: out of memory");
        goto out;
    }

    /* Job by job, so one snapshot's hashes are held at a time. */
    for (size_t i = 0; i < n_jobs; i++) {
        struct seen_set *sets = NULL;
        size_t n_sets = 0;
        if (restore_report_schedule_stopping()) {
            /* --schedule was told to stop: what is done is reported. */
            (void)restore_verify_add_failure(
                res, RESTORE_VERIFY_OTHER, RESTORE_VERIFY_NO_REPLICA, NULL,
                NULL, NULL, NULL, NULL,
                "stopped by a signal after %zu of %zu snapshots", i, n_jobs);
            break;
        }
        for (size_t k = 0; k < r.n_reps; k++) {
            if (!r.reps[k].dead) {
                verify_snapshot(&r, &r.reps[k], &jobs[i], &sets, &n_sets);
            }
        }
        seen_sets_free(sets, n_sets);
    }

    restore_verify_result_finish(res, wall_ms());
    if (o->state != NULL) {
        int64_t window = o->window_ms > 0 ? o->window_ms : WINDOW_MS_DEFAULT;
        bool all_listed = true;
        for (size_t k = 0; k < r.n_reps; k++) {
            all_listed = all_listed && !r.reps[k].dead;
        }
        if ((hexp = cfr_calloc(n_hex + 1, sizeof(*hexp))) != NULL) {
            for (size_t k = 0; k < n_hex; k++) {
                hexp[k] = hex[k];
            }
        }
        /* Retained = what the replicas list; when one could not be listed,
         * drop nothing (a replica down is no reason to forget history). */
        if (restore_report_state_record(
                &st, res, all_listed && hexp != NULL ? hexp : NULL, n_hex,
                window, err) != 0) {
            fprintf(stderr, "coffer-restore verify: state %s: %s\n", o->state,
                    err->msg);
        }
    }
    {
        struct cfr_err ne;
        cfr_err_clear(&ne);
        if (restore_report_notify(&s->cfg.notify, prev_failed, res, &ne) != 0) {
            fprintf(stderr, "coffer-restore verify: notification: %s\n",
                    ne.msg);
        }
    }
    if (o->state != NULL &&
        restore_report_state_save(o->state, &st, err) != 0) {
        fprintf(stderr, "coffer-restore verify: state %s: %s\n", o->state,
                err->msg);
    }
    for (size_t k = 0; k < res->n_replicas; k++) {
        unreachable +=
            res->replicas[k].failures_by_kind[RESTORE_VERIFY_UNREACHABLE];
    }
    /* 4 only when nothing but reachability failed (or nothing to ask). */
    if (res->n_failures_total == 0 && res->n_replicas > 0) {
        code = RESTORE_EXIT_OK;
    } else if (res->n_replicas == 0 || unreachable == res->n_failures_total) {
        code = RESTORE_EXIT_VAULT;
    } else {
        code = RESTORE_EXIT_VERIFY;
    }
out:
    for (size_t k = 0; k < r.n_reps; k++) {
        restore_fetcher_free(r.reps[k].f);
        cfr_free(r.reps[k].snaps);
    }
    restore_report_state_fini(&st);
    restore_report_state_unlock(lock_fd);
    cfr_free(names);
    cfr_free(sel);
    cfr_free(rk);
    cfr_free(jobs);
    cfr_free(hex);
    cfr_free(hexp);
    return code;
}

/* ---- the command ------------------------------------------------------------
 */

static void
print_summary(const struct restore_verify_result *res)
{
    for (size_t i = 0; i < res->n_replicas; i++) {
        const struct restore_verify_replica *rp = &res->replicas[i];
        printf("replica %s: %s\n", rp->address,
               !rp->reachable        ? "UNREACHABLE"
               : rp->n_failures == 0 ? "ok"
                                     : "FAILED");
        for (size_t k = 0; k < rp->n_mailboxes; k++) {
            const struct restore_verify_mailbox *m = &rp->mailboxes[k];
            char q[96];
            double mbs =
                m->seconds > 0 ? (double)m->bytes / 1e6 / m->seconds : 0.0;
            printf("  %-32s %.16s %6" PRIu64 "/%-6" PRIu64 " msgs %10" PRIu64
                   " bytes %7.2f s %8.2f MB/s%s%s\n",
                   cfr_log_quote(m->name, q, sizeof(q)),
                   m->snapshot_hex[0] != '\0' ? m->snapshot_hex : "-",
                   m->messages_checked, m->messages_total, m->bytes, m->seconds,
                   mbs, m->n_failures > 0 ? "  FAILED" : "",
                   m->messages_live > 0 ? "  (live compared)" : "");
        }
    }
    for (size_t i = 0; i < res->n_failures; i++) {
        const struct restore_verify_failure *f = &res->failures[i];
        printf("FAIL %s replica %s mailbox %s folder %s message %s <%s>: %s\n",
               restore_verify_kind_name(f->kind),
               f->replica < res->n_replicas ? res->replicas[f->replica].address
                                            : "-",
               f->mailbox != NULL ? f->mailbox : "-",
               f->folder != NULL ? f->folder : "-",
               f->message != NULL ? f->message : "-",
               f->message_id != NULL ? f->message_id : "",
               f->detail != NULL ? f->detail : "");
    }
    if (res->failures_dropped > 0) {
        printf("(%" PRIu64 " more failures not listed)\n",
               res->failures_dropped);
    }
    printf("verify: %s, %" PRIu64 " failure(s), seed %" PRIu64 "\n",
           res->ok ? "ok" : "FAILED", res->n_failures_total, res->seed);
}

/* Command-line values first, then the configuration's verify group. */
static void
merge_settings(struct restore_verify_opts *m,
               const struct restore_verify_opts *o,
               const struct restore_config *cfg)
{
    const struct restore_verify_settings *v = &cfg->verify;
    struct stat st;
    *m = *o;
    if (m->scratch == NULL && v->scratch_dir != NULL &&
        stat(v->scratch_dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        m->scratch = v->scratch_dir; /* else $TMPDIR */
    }
    if (m->report == NULL) {
        m->report = v->report_path;
    }
    if (m->metrics == NULL) {
        m->metrics = v->metrics_path;
    }
    if (m->state == NULL) {
        m->state = v->state_path;
    }
    if (m->sample_mailboxes == 0 && o->n_mailboxes == 0) {
        m->sample_mailboxes = v->sample_mailboxes;
    }
    if (m->sample_messages == 0) {
        m->sample_messages = v->sample_messages;
    }
    if (m->live == NULL) {
        m->live = v->live_store;
    }
    if (m->window_ms == 0) {
        m->window_ms = v->coverage_window_ms;
    }
}

static int
verify_once(const char *config_path, const struct restore_verify_opts *o)
{
    struct restore_session s = {.config_path = config_path};
    struct restore_verify_opts m;
    struct restore_verify_result res;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    restore_verify_result_init(&res);
    code = restore_session_open(&s, &err);
    /* No vault answered the session's own probe: verify still runs, so
     * that every replica is reported unreachable in the report. */
    if (code == RESTORE_EXIT_VAULT && s.kr != NULL) {
        cfr_err_clear(&err);
        code = RESTORE_EXIT_OK;
    }
    if (code != RESTORE_EXIT_OK) {
        restore_session_report(code, o->json, &err);
        goto out;
    }
    merge_settings(&m, o, &s.cfg);
    code = restore_verify_run(&s, &m, &res, &err);
    if (code == RESTORE_EXIT_OTHER || code == RESTORE_EXIT_CONFIG) {
        restore_session_report(code, m.json, &err);
        goto out;
    }
    if (m.json) {
        (void)restore_report_json(stdout, &res);
    } else {
        print_summary(&res);
    }
    if (m.report != NULL &&
        restore_report_json_file(m.report, &res, &err) != 0) {
        fprintf(stderr, "coffer-restore verify: report %s: %s\n", m.report,
                err.msg);
    }
    if (m.metrics != NULL &&
        restore_report_metrics(m.metrics, &res, &err) != 0) {
        fprintf(stderr, "coffer-restore verify: metrics %s: %s\n", m.metrics,
                err.msg);
    }
out:
    fflush(stdout);
    restore_verify_result_fini(&res);
    restore_session_fini(&s);
    return code;
}

struct sched_ctx {
    const char *config_path;
    const struct restore_verify_opts *o;
};

static int
sched_run(void *ctx)
{
    const struct sched_ctx *sc = ctx;
    return verify_once(sc->config_path, sc->o);
}

int
restore_cmd_verify(const char *config_path, int argc, char **argv)
{
    struct restore_verify_opts o;
    struct restore_config cfg;
    struct sched_ctx sc;
    struct cfr_err err;
    int rc;

    if (restore_verify_parse(argc, argv, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    if (!o.schedule) {
        return verify_once(config_path, &o);
    }
    /* The interval from the configuration, read once; each run reads it
     * again with everything else (a changed key file is picked up). */
    cfr_err_clear(&err);
    if (restore_config_load(config_path != NULL ? config_path
                                                : RESTORE_CONFIG_DEFAULT,
                            &cfg, &err) != 0) {
        fprintf(stderr, "coffer-restore: %s\n", err.msg);
        return RESTORE_EXIT_CONFIG;
    }
    sc.config_path = config_path;
    sc.o = &o;
    rc = restore_report_schedule_loop(
        cfg.verify.schedule_ms, cfg.verify.jitter_ms, sched_run, &sc, &err);
    restore_config_fini(&cfg);
    if (rc != 0) {
        fprintf(stderr, "coffer-restore verify --schedule: %s\n", err.msg);
        return RESTORE_EXIT_CONFIG;
    }
    return RESTORE_EXIT_OK;
}
