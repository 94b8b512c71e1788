/*
 * pipeline.c - the agent's data path on one core, timed: read -> chunk
 * (with MIME hints) -> chunk ID -> dedup -> zstd -> seal (and verify).
 *
 *   pipeline [--no-verify] [--no-dedup] [--no-hints] [--stages]
 *            [--level N] [--passes N] DIR
 *
 * Walks DIR (every regular file, directories in sorted order), reads each
 * file whole, asks mime.h where the bodies start and end (for Maildir
 * messages, and for each message of an mbox), chunks with the default
 * parameters and a keyed gear table, computes each chunk's keyed ID, and
 * seals only chunks whose ID this run has not seen (as the agent does; the
 * vault already has the others). --no-dedup seals every chunk, so the cost
 * of compressing all bytes can be compared with `zstd -3` over all bytes.
 * --no-verify turns off the verify-after-seal step: benchmarks only, the
 * figure with verification on is the one that counts.
 *
 * Prints one line of key=value fields (bench/run-pipeline.sh parses it):
 * input bytes, unique and stored bytes, wall and CPU time, MB/s per core of
 * CPU, and with --stages the CPU time spent in each stage (the clock reads
 * cost a little, so the headline figures are taken without it).
 *
 * Invariants:
 *  1. Single-threaded: CPU seconds (CLOCK_PROCESS_CPUTIME_ID) are one
 *     core's seconds, so input MB per CPU second is MB/s per core.
 *  2. Every byte of every file goes through the chunker, and every chunk's
 *     ID is computed, whether or not it is then sealed.
 *  3. The file list is built before the clock starts, and the same list is
 *     used by every pass; the timed region covers reading the files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"    /* struct cfr_buf: sealed envelopes */
#include "chunk.h"  /* the chunker */
#include "env.h"    /* sealing sessions */
#include "err.h"    /* struct cfr_err */
#include "id.h"     /* CFR_ID_LEN */
#include "keys.h"   /* keyring, gear table, chunk IDs */
#include "log.h"    /* quiet the verify-off warning */
#include "mem.h"    /* cfr_malloc */
#include "mime.h"   /* MIME cut hints */
#include "secret.h" /* cfr_crypto_init */

#define PL_PATH_MAX  4096
#define PL_FILE_MAX  ((size_t)1 << 30) /* larger files are not benchmarked */
#define PL_HINTS_MAX CFR_CHUNK_HINTS_MAX

struct opts {
    bool verify, dedup, hints, stages;
    int level;
    unsigned passes;
    const char *dir;
};

/* A set of chunk IDs: open addressing over the IDs' first 8 bytes. */
struct idset {
    uint8_t (*ids)[CFR_ID_LEN];
    uint32_t *slots; /* index + 1 into ids, 0 = empty */
    size_t n, cap_ids, nslots;
};

struct stats {
    uint64_t files, bytes_in, chunks, unique_chunks, unique_bytes, stored;
    uint64_t hints;
    double t_read, t_mime, t_chunk, t_id, t_seal; /* CPU seconds */
};

struct files {
    char **paths;
    size_t n, cap;
};

static double
now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
push_path(struct files *f, const char *path, struct cfr_err *err)
{
    if (f->n == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 1024;
        size_t bytes;
        if (!cfr_mul_ok(ncap, sizeof(*f->paths), &bytes)) {
            return CFR_ERR(err, CFR_ELIMIT, "too many files");
        }
        char **p = cfr_realloc(f->paths, bytes);
        if (p == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "out of memory");
        }
        f->paths = p;
        f->cap = ncap;
    }
    if ((f->paths[f->n] = cfr_strdup(path)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    f->n++;
    return 0;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects every regular file under dir, each directory sorted. */
static int
collect(const char *dir, struct files *f, struct cfr_err *err)
{
    int rc = 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "opendir %s", dir);
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **p = cfr_realloc(names, cap * sizeof(*names));
            if (p == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
                goto out;
            }
            names = p;
        }
        if ((names[n] = cfr_strdup(de->d_name)) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
            goto out;
        }
        n++;
    }
    if (n > 1) {
        qsort(names, n, sizeof(*names), cmp_name);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PL_PATH_MAX];
        int k = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (k < 0 || (size_t)k >= sizeof(path)) {
            rc = CFR_ERR(err, CFR_ELIMIT, "path too long under %s", dir);
            goto out;
        }
        struct stat st;
        if (lstat(path, &st) != 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "lstat %s", path);
            goto out;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = collect(path, f, err);
        } else if (S_ISREG(st.st_mode) && (size_t)st.st_size <= PL_FILE_MAX) {
            rc = push_path(f, path, err);
        }
    }
out:
    if (d != NULL) {
        closedir(d);
    }
    for (size_t i = 0; i < n; i++) {
        cfr_free(names[i]);
    }
    cfr_free(names);
    return rc;
}

static int
idset_grow(struct idset *s, struct cfr_err *err)
{
    size_t nslots = s->nslots ? s->nslots * 2 : (size_t)1 << 16;
    uint32_t *slots = cfr_calloc(nslots, sizeof(*slots));
    if (slots == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < s->n; i++) {
        size_t h = (size_t)cfr_get_le64(s->ids[i]) & (nslots - 1);
        while (slots[h] != 0) {
            h = (h + 1) & (nslots - 1);
        }
        slots[h] = (uint32_t)(i + 1);
    }
    cfr_free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    return 0;
}

/* Adds id; *added_r tells whether it was new. */
static int
idset_add(struct idset *s, const uint8_t id[CFR_ID_LEN], bool *added_r,
          struct cfr_err *err)
{
    int rc = 0;
    if (2 * (s->n + 1) > s->nslots && (rc = idset_grow(s, err)) != 0) {
        return rc;
    }
    /* Chunk IDs are keyed hashes: their bytes are already uniform. */
    size_t h = (size_t)cfr_get_le64(id) & (s->nslots - 1);
    while (s->slots[h] != 0) {
        if (memcmp(s->ids[s->slots[h] - 1], id, CFR_ID_LEN) == 0) {
            *added_r = false;
            return 0;
        }
        h = (h + 1) & (s->nslots - 1);
    }
    if (s->n == s->cap_ids) {
        size_t ncap = s->cap_ids ? s->cap_ids * 2 : 4096;
        if (ncap > UINT32_MAX - 1) {
            return CFR_ERR(err, CFR_ELIMIT, "too many chunks");
        }
        void *p = cfr_realloc(s->ids, ncap * CFR_ID_LEN);
        if (p == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "out of memory");
        }
        s->ids = p;
        s->cap_ids = ncap;
    }
    memcpy(s->ids[s->n], id, CFR_ID_LEN);
    s->slots[h] = (uint32_t)(s->n + 1);
    s->n++;
    *added_r = true;
    return 0;
}

static void
idset_fini(struct idset *s)
{
    cfr_free(s->ids);
    cfr_free(s->slots);
    memset(s, 0, sizeof(*s));
}

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/*
 * Hints for one file: a Maildir message gets its MIME cuts; an mbox gets,
 * for each message, its start and its MIME cuts, so a message stored both
 * in a Maildir and an archive shares its bodies' chunks.
 */
static size_t
file_hints(const char *path, const uint8_t *p, size_t len, uint64_t *hints)
{
    if (strstr(path, "/cur/") != NULL || strstr(path, "/new/") != NULL) {
        return cfr_mime_cuts(p, len, hints, PL_HINTS_MAX);
    }
    if (!ends_with(path, ".mbox")) {
        return 0;
    }
    size_t n = 0;
    size_t pos = 0;
    while (pos < len && n < PL_HINTS_MAX) {
        /* This message runs from pos to the next "\n\nFrom " (or the end). */
        size_t end = len;
        const uint8_t *q = p + pos;
        while ((q = memchr(q, '\n', (size_t)(p + len - q))) != NULL) {
            size_t i = (size_t)(q - p);
            if (i + 7 <= len && q[1] == '\n' &&
                memcmp(q + 2, "From ", 5) == 0) {
                end = i + 2;
                break;
            }
            q++;
        }
        /* The message proper begins after its "From " line. */
        const uint8_t *nl = memchr(p + pos, '\n', end - pos);
        size_t start = nl ? (size_t)(nl - p) + 1 : end;
        if (start > pos && start < len && (n == 0 || hints[n - 1] < start)) {
            hints[n++] = start;
        }
        if (start < end && n < PL_HINTS_MAX) {
            size_t k = cfr_mime_cuts(p + start, end - start, hints + n,
                                     PL_HINTS_MAX - n);
            for (size_t j = 0; j < k; j++) {
                hints[n + j] += start;
            }
            n += k;
        }
        if (end < len && n < PL_HINTS_MAX && (n == 0 || hints[n - 1] < end)) {
            hints[n++] = end;
        }
        pos = end;
    }
    return n;
}

struct pipe {
    struct opts o;
    struct cfr_keyring *full, *agent;
    struct cfr_chunker *ch;
    struct cfr_chunk_params params;
    struct cfr_session *sess;
    struct idset seen;
    uint8_t *fbuf;
    size_t fcap;
    uint64_t *hints;
    uint64_t *ends;
    size_t ends_cap;
    struct cfr_buf env;
};

static int
read_file(struct pipe *pl, const char *path, size_t *len_r, struct cfr_err *err)
{
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "open %s", path);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fstat %s", path);
        goto out;
    }
    size_t want = (size_t)st.st_size;
    if (want > PL_FILE_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "%s: too large", path);
        goto out;
    }
    if (want + 1 > pl->fcap) {
        size_t ncap = want + 1 > 2 * pl->fcap ? want + 1 : 2 * pl->fcap;
        uint8_t *p = cfr_realloc(pl->fbuf, ncap);
        if (p == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
            goto out;
        }
        pl->fbuf = p;
        pl->fcap = ncap;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, pl->fbuf + got, want - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "read %s", path);
            goto out;
        }
        if (r == 0) {
            break; /* the file shrank: take what is there */
        }
        got += (size_t)r;
    }
    *len_r = got;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* With --stages, charges the CPU time since *t to *acc. */
static void
mark(const struct pipe *pl, double *t, double *acc)
{
    if (pl->o.stages) {
        double t2 = now(CLOCK_THREAD_CPUTIME_ID);
        *acc += t2 - *t;
        *t = t2;
    }
}

/* One file through every stage (invariant 2). */
static int
process(struct pipe *pl, const char *path, struct stats *st,
        struct cfr_err *err)
{
    int rc = 0;
    size_t len = 0;
    double t = pl->o.stages ? now(CLOCK_THREAD_CPUTIME_ID) : 0;
    if ((rc = read_file(pl, path, &len, err)) != 0) {
        goto out;
    }
    mark(pl, &t, &st->t_read);
    const uint8_t *p = pl->fbuf;
    st->files++;
    st->bytes_in += len;
    size_t nh = pl->o.hints ? file_hints(path, p, len, pl->hints) : 0;
    st->hints += nh;
    mark(pl, &t, &st->t_mime);
    size_t need = cfr_chunk_count_max(&pl->params, len, nh);
    if (need > pl->ends_cap) {
        size_t bytes;
        if (!cfr_mul_ok(need, sizeof(*pl->ends), &bytes)) {
            rc = CFR_ERR(err, CFR_ELIMIT, "%s: too many chunks", path);
            goto out;
        }
        uint64_t *e = cfr_realloc(pl->ends, bytes);
        if (e == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
            goto out;
        }
        pl->ends = e;
        pl->ends_cap = need;
    }
    size_t n = 0;
    if ((rc = cfr_chunker_split(pl->ch, p, len, pl->hints, nh, pl->ends,
                                pl->ends_cap, &n, err)) != 0) {
        goto out;
    }
    mark(pl, &t, &st->t_chunk);
    uint64_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *c = p + start;
        size_t clen = (size_t)(pl->ends[i] - start);
        start = pl->ends[i];
        uint8_t id[CFR_ID_LEN];
        cfr_keyring_chunk_id(pl->agent, c, clen, id);
        bool added = true;
        if ((rc = idset_add(&pl->seen, id, &added, err)) != 0) {
            goto out;
        }
        st->chunks++;
        mark(pl, &t, &st->t_id);
        if (!added && pl->o.dedup) {
            continue;
        }
        if (added) {
            st->unique_chunks++;
            st->unique_bytes += clen;
        }
        if ((rc = cfr_env_seal(pl->sess, CFR_ENV_CHUNK, id, c, clen, &pl->env,
                               err)) != 0) {
            goto out;
        }
        st->stored += pl->env.len;
        mark(pl, &t, &st->t_seal);
    }
out:
    return rc;
}

static void
usage(void)
{
    fprintf(stderr, "usage: pipeline [--no-verify] [--no-dedup] [--no-hints]"
                    " [--stages] [--level N] [--passes N] DIR\n");
}

static int
setup(struct pipe *pl, struct cfr_err *err)
{
    int rc = 0;
    uint64_t gear[CFR_CHUNK_GEAR_LEN];
    if ((rc = cfr_crypto_init(err)) != 0) {
        goto out;
    }
    /* The agent holds the write-only view: that is what it seals with. */
    if ((pl->full = cfr_keyring_generate(0, err)) == NULL ||
        (pl->agent = cfr_keyring_agent_view(pl->full, err)) == NULL) {
        rc = err->code ? err->code : CFR_EINTERNAL;
        goto out;
    }
    cfr_keyring_gear_table(pl->agent, gear);
    cfr_chunk_params_default(&pl->params);
    if ((pl->ch = cfr_chunker_new(gear, &pl->params, err)) == NULL) {
        rc = err->code ? err->code : CFR_EINTERNAL;
        goto out;
    }
    pl->hints = cfr_calloc(PL_HINTS_MAX, sizeof(*pl->hints));
    if (pl->hints == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "out of memory");
        goto out;
    }
    cfr_buf_init(&pl->env, CFR_ENV_PLAIN_MAX + ((size_t)1 << 20));
out:
    cfr_wipe(gear, sizeof(gear));
    return rc;
}

/* A new session and an empty ID set: each pass is a first backup. */
static int
start_pass(struct pipe *pl, struct cfr_err *err)
{
    cfr_session_free(pl->sess);
    idset_fini(&pl->seen);
    if ((pl->sess = cfr_session_new(pl->agent, pl->o.level, err)) == NULL) {
        return err->code ? err->code : CFR_EINTERNAL;
    }
    cfr_session_set_verify(pl->sess, pl->o.verify);
    return 0;
}

int
main(int argc, char **argv)
{
    struct pipe pl;
    struct files files = {0};
    struct cfr_err err;
    int status = 2;
    memset(&pl, 0, sizeof(pl));
    cfr_err_clear(&err);
    pl.o.verify = true;
    pl.o.dedup = true;
    pl.o.hints = true;
    pl.o.level = 3;
    pl.o.passes = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-verify") == 0) {
            pl.o.verify = false;
        } else if (strcmp(argv[i], "--no-dedup") == 0) {
            pl.o.dedup = false;
        } else if (strcmp(argv[i], "--no-hints") == 0) {
            pl.o.hints = false;
        } else if (strcmp(argv[i], "--stages") == 0) {
            pl.o.stages = true;
        } else if ((strcmp(argv[i], "--level") == 0 ||
                    strcmp(argv[i], "--passes") == 0) &&
                   i + 1 < argc) {
            char *end;
            errno = 0;
            long v = strtol(argv[i + 1], &end, 10);
            if (errno != 0 || *end != '\0' || v < -7 || v > 22 ||
                (argv[i][2] == 'p' && v < 1)) {
                usage();
                goto out;
            }
            if (argv[i][2] == 'l') {
                pl.o.level = (int)v;
            } else {
                pl.o.passes = (unsigned)v;
            }
            i++;
        } else if (argv[i][0] != '-' && pl.o.dir == NULL) {
            pl.o.dir = argv[i];
        } else {
            usage();
            goto out;
        }
    }
    if (pl.o.dir == NULL) {
        usage();
        goto out;
    }
    /* The verify-off warning would land inside the timed region. */
    cfr_log_set_level(CFR_LOG_ERROR);
    status = 1;
    if (setup(&pl, &err) != 0 || collect(pl.o.dir, &files, &err) != 0) {
        fprintf(stderr, "pipeline: %s (%s)\n", err.msg,
                cfr_code_name(err.code));
        goto out;
    }
    for (unsigned pass = 0; pass < pl.o.passes; pass++) {
        struct stats st;
        memset(&st, 0, sizeof(st));
        if (start_pass(&pl, &err) != 0) {
            fprintf(stderr, "pipeline: %s\n", err.msg);
            goto out;
        }
        double w0 = now(CLOCK_MONOTONIC);
        double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        for (size_t i = 0; i < files.n; i++) {
            if (process(&pl, files.paths[i], &st, &err) != 0) {
                fprintf(stderr, "pipeline: %s (%s)\n", err.msg,
                        cfr_code_name(err.code));
                goto out;
            }
        }
        double wall = now(CLOCK_MONOTONIC) - w0;
        double cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        printf("pipeline: pass=%u verify=%d dedup=%d hints=%d level=%d "
               "files=%" PRIu64 " bytes_in=%" PRIu64 " chunks=%" PRIu64
               " unique_chunks=%" PRIu64 " unique_bytes=%" PRIu64
               " stored_bytes=%" PRIu64 " hints=%" PRIu64
               " dedup_ratio=%.3f wall_s=%.3f cpu_s=%.3f mbps_core=%.1f"
               " read_s=%.3f mime_s=%.3f chunk_s=%.3f id_s=%.3f"
               " seal_s=%.3f\n",
               pass + 1, pl.o.verify, pl.o.dedup, pl.o.hints, pl.o.level,
               st.files, st.bytes_in, st.chunks, st.unique_chunks,
               st.unique_bytes, st.stored, st.hints,
               st.unique_bytes ? (double)st.bytes_in / (double)st.unique_bytes
                               : 0.0,
               wall, cpu, cpu > 0 ? (double)st.bytes_in / 1e6 / cpu : 0.0,
               st.t_read, st.t_mime, st.t_chunk, st.t_id, st.t_seal);
        fflush(stdout);
    }
    status = 0;
out:
    for (size_t i = 0; i < files.n; i++) {
        cfr_free(files.paths[i]);
    }
    cfr_free(files.paths);
    cfr_session_free(pl.sess);
    idset_fini(&pl.seen);
    cfr_chunker_free(pl.ch);
    cfr_keyring_free(pl.agent);
    cfr_keyring_free(pl.full);
    cfr_free(pl.fbuf);
    cfr_free(pl.hints);
    cfr_free(pl.ends);
    cfr_buf_fini(&pl.env);
    return status;
}
