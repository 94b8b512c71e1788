/*
 * report.c - turns a verify run into operator signals (report.h): the
 * JSON report, the Prometheus textfile, the state file with coverage,
 * notifications on failure and recovery, and the --schedule loop.
 *
 * Invariants (beyond report.h's):
 *  1. Every file goes out through atomic_write: readers (node_exporter,
 *     the next run, a monitoring script) see the old or the new file,
 *     never a torn one, also after a crash or a full disk.
 *  2. Strings from the run (mailbox names, Message-IDs, server text in
 *     details) are escaped for each output: JSON through core/json, label
 *     values per the Prometheus text format, libconfig strings here.
 *  3. The schedule loop's signal handler only sets a flag and writes one
 *     byte to a pipe (both async-signal-safe); everything else happens in
 *     the loop.
 */
#include "report.h"

#include <errno.h>    /* errno */
#include <fcntl.h>    /* open */
#include <inttypes.h> /* PRIu64, PRId64 */
#include <limits.h>   /* PATH_MAX */
#include <math.h>     /* isfinite */
#include <poll.h>     /* poll: the schedule's wait */
#include <signal.h>   /* sigaction */
#include <stdarg.h>   /* va_list */
#include <stdlib.h>   /* qsort, mkstemp */
#include <string.h>   /* strlen, memcpy */
#include <sys/file.h> /* flock: the state lock */
#include <sys/stat.h> /* stat, fchmod */
#include <time.h>     /* clock_gettime */
#include <unistd.h>   /* fsync, close, pipe, write */

#include "buf.h"     /* cfr_hex_encode */
#include "cfg.h"     /* the state file is libconfig */
#include "clock.h"   /* cfr_clock_format */
#include "json.h"    /* cfr_json_fput */
#include "log.h"     /* cfr_log */
#include "mem.h"     /* cfr_malloc */
#include "notify.h"  /* cfr_notify_* */
#include "prng.h"    /* cfr_splitmix64: schedule jitter */
#include "secret.h"  /* the SMTP password */
#include "session.h" /* RESTORE_EXIT_* */

#define LOG_EV "restore.verify"

static const char *const kind_names[RESTORE_VERIFY_KIND_COUNT] = {
    [RESTORE_VERIFY_UNREACHABLE] = "unreachable",
    [RESTORE_VERIFY_CHUNK_MISSING] = "chunk_missing",
    [RESTORE_VERIFY_CHUNK_CORRUPT] = "chunk_corrupt",
    [RESTORE_VERIFY_CONTENT] = "content",
    [RESTORE_VERIFY_MESSAGE_MISSING] = "message_missing",
    [RESTORE_VERIFY_MESSAGE_EXTRA] = "message_extra",
    [RESTORE_VERIFY_METADATA] = "metadata",
    [RESTORE_VERIFY_DOVECOT] = "dovecot",
    [RESTORE_VERIFY_LIVE] = "live",
    [RESTORE_VERIFY_SNAPSHOT] = "snapshot",
    [RESTORE_VERIFY_IO] = "io",
    [RESTORE_VERIFY_OTHER] = "other",
};

const char *
restore_verify_kind_name(enum restore_verify_kind kind)
{
    if ((int)kind < 0 || kind >= RESTORE_VERIFY_KIND_COUNT) {
        return "other";
    }
    return kind_names[kind];
}

/* ---- the result ------------------------------------------------------- */

void
restore_verify_result_init(struct restore_verify_result *r)
{
    memset(r, 0, sizeof(*r));
    r->ok = true;
    r->coverage_ratio = 1.0;
}

static void
failure_fini(struct restore_verify_failure *f)
{
    cfr_free(f->mailbox);
    cfr_free(f->folder);
    cfr_free(f->message);
    cfr_free(f->message_id);
    cfr_free(f->detail);
}

void
restore_verify_result_fini(struct restore_verify_result *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n_replicas; i++) {
        struct restore_verify_replica *rp = &r->replicas[i];
        for (size_t j = 0; j < rp->n_mailboxes; j++) {
            cfr_free(rp->mailboxes[j].name);
        }
        cfr_free(rp->mailboxes);
        cfr_free(rp->address);
    }
    cfr_free(r->replicas);
    for (size_t i = 0; i < r->n_failures; i++) {
        failure_fini(&r->failures[i]);
    }
    cfr_free(r->failures);
    cfr_free(r->tenant);
    cfr_free(r->notify_error);
    memset(r, 0, sizeof(*r));
}

/* Grows *arr (elements of size sz) to hold one more; zeroes the new one. */
static int
grow(void **arr, size_t *n, size_t *cap, size_t sz, struct cfr_err *err)
{
    if (*n == *cap) {
        size_t ncap = *cap == 0 ? 8 : *cap * 2, bytes;
        if (!cfr_mul_ok(ncap, sz, &bytes)) {
            return CFR_ERR(err, CFR_ENOMEM, "verify report: too large");
        }
        void *p = cfr_realloc(*arr, bytes);
        if (p == NULL) {
            return CFR_ERR(err, CFR_ENOMEM, "verify report: out of memory");
        }
        *arr = p;
        *cap = ncap;
    }
    memset((char *)*arr + *n * sz, 0, sz);
    return 0;
}

static int
dup_opt(const char *s, char **out, struct cfr_err *err)
{
    *out = NULL;
    if (s == NULL) {
        return 0;
    }
    if ((*out = cfr_strdup(s)) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "verify report: out of memory");
    }
    return 0;
}

int
restore_verify_add_replica(struct restore_verify_result *r, const char *address,
                           size_t *idx_r, struct cfr_err *err)
{
    int rc = grow((void **)&r->replicas, &r->n_replicas, &r->cap_replicas,
                  sizeof(*r->replicas), err);
    if (rc != 0) {
        return rc;
    }
    struct restore_verify_replica *rp = &r->replicas[r->n_replicas];
    if ((rc = dup_opt(address != NULL ? address : "?", &rp->address, err)) !=
        0) {
        return rc;
    }
    rp->reachable = true;
    if (idx_r != NULL) {
        *idx_r = r->n_replicas;
    }
    r->n_replicas++;
    return 0;
}

int
restore_verify_add_mailbox(struct restore_verify_result *r, size_t ri,
                           const char *name,
                           const uint8_t snapshot_id[CFR_ID_LEN],
                           int64_t received_ms, size_t *idx_r,
                           struct cfr_err *err)
{
    if (ri >= r->n_replicas || name == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "verify report: bad replica index");
    }
    struct restore_verify_replica *rp = &r->replicas[ri];
    int rc = grow((void **)&rp->mailboxes, &rp->n_mailboxes, &rp->cap_mailboxes,
                  sizeof(*rp->mailboxes), err);
    if (rc != 0) {
        return rc;
    }
    struct restore_verify_mailbox *mb = &rp->mailboxes[rp->n_mailboxes];
    if ((rc = dup_opt(name, &mb->name, err)) != 0) {
        return rc;
    }
    if (snapshot_id != NULL) {
        cfr_hex_encode(snapshot_id, CFR_ID_LEN, mb->snapshot_hex);
    }
    mb->received_ms = received_ms;
    if (idx_r != NULL) {
        *idx_r = rp->n_mailboxes;
    }
    rp->n_mailboxes++;
    return 0;
}

int
restore_verify_add_failure(struct restore_verify_result *r,
                           enum restore_verify_kind kind, size_t ri,
                           const char *mailbox, const char *folder,
                           const char *message, const char *message_id,
                           struct cfr_err *err, const char *fmt, ...)
{
    char detail[1024] = "";
    int rc;

    if ((int)kind < 0 || kind >= RESTORE_VERIFY_KIND_COUNT) {
        kind = RESTORE_VERIFY_OTHER;
    }
    if (ri != RESTORE_VERIFY_NO_REPLICA && ri >= r->n_replicas) {
        ri = RESTORE_VERIFY_NO_REPLICA;
    }
    /* Counted first, so an allocation failure below loses no count. */
    r->ok = false;
    r->n_failures_total++;
    if (ri != RESTORE_VERIFY_NO_REPLICA) {
        struct restore_verify_replica *rp = &r->replicas[ri];
        rp->n_failures++;
        rp->failures_by_kind[kind]++;
        if (kind == RESTORE_VERIFY_UNREACHABLE) {
            rp->reachable = false;
        }
        if (mailbox != NULL) {
            /* The newest entry of that name: the one being checked. */
            for (size_t j = rp->n_mailboxes; j-- > 0;) {
                if (strcmp(rp->mailboxes[j].name, mailbox) == 0) {
                    rp->mailboxes[j].n_failures++;
                    break;
                }
            }
        }
    }
    if (r->n_failures >= RESTORE_VERIFY_FAILURES_KEPT) {
        r->failures_dropped++;
        return 0;
    }
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
    }
    if ((rc = grow((void **)&r->failures, &r->n_failures, &r->cap_failures,
                   sizeof(*r->failures), err)) != 0) {
        r->failures_dropped++;
        return rc;
    }
    struct restore_verify_failure *f = &r->failures[r->n_failures];
    f->kind = kind;
    f->replica = ri;
    if ((rc = dup_opt(mailbox, &f->mailbox, err)) != 0 ||
        (rc = dup_opt(folder, &f->folder, err)) != 0 ||
        (rc = dup_opt(message, &f->message, err)) != 0 ||
        (rc = dup_opt(message_id, &f->message_id, err)) != 0 ||
        (rc = dup_opt(detail, &f->detail, err)) != 0) {
        failure_fini(f);
        r->failures_dropped++;
        return rc;
    }
    r->n_failures++;
    return 0;
}

void
restore_verify_result_finish(struct restore_verify_result *r, int64_t now_ms)
{
    if (r->finished_ms == 0) {
        r->finished_ms = now_ms;
    }
    if (r->n_replicas == 0 || r->n_failures_total > 0) {
        r->ok = false;
    }
    for (size_t i = 0; i < r->n_replicas; i++) {
        struct restore_verify_replica *rp = &r->replicas[i];
        uint64_t msgs = 0, bytes = 0;
        double secs = 0;
        for (size_t j = 0; j < rp->n_mailboxes; j++) {
            msgs += rp->mailboxes[j].messages_checked;
            bytes += rp->mailboxes[j].bytes;
            secs += rp->mailboxes[j].seconds;
        }
        rp->messages_checked = msgs;
        rp->bytes = bytes;
        if (!(rp->seconds > 0) || !isfinite(rp->seconds)) {
            rp->seconds = isfinite(secs) && secs > 0 ? secs : 0;
        }
    }
}

int
restore_report_exit_code(const struct restore_verify_result *r)
{
    return r->ok ? RESTORE_EXIT_OK : RESTORE_EXIT_VERIFY;
}

static double
throughput(uint64_t bytes, double secs)
{
    return secs > 0 && isfinite(secs) ? (double)bytes / secs : 0.0;
}

/* ---- JSON report ------------------------------------------------------ */

static void
json_time(FILE *f, const char *key, int64_t ms)
{
    char when[40];
    fprintf(f, "\"%s_ms\":%" PRId64 ",\"%s\":", key, ms, key);
    if (ms > 0) {
        cfr_json_fput(f, cfr_clock_format(ms, when, (int)sizeof(when)));
    } else {
        fputs("null", f);
    }
}

static void
json_num(FILE *f, double v)
{
    fprintf(f, "%.3f", isfinite(v) ? v : 0.0);
}

static void
json_mailbox(FILE *f, const struct restore_verify_mailbox *mb)
{
    fputs("{\"name\":", f);
    cfr_json_fput(f, mb->name);
    fputs(",\"snapshot\":", f);
    cfr_json_fput(f, mb->snapshot_hex[0] != '\0' ? mb->snapshot_hex : NULL);
    fputc(',', f);
    json_time(f, "received", mb->received_ms);
    fprintf(f,
            ",\"messages_total\":%" PRIu64 ",\"messages_checked\":%" PRIu64
            ",\"messages_live\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"seconds\":",
            mb->messages_total, mb->messages_checked, mb->messages_live,
            mb->bytes);
    json_num(f, mb->seconds);
    fprintf(f, ",\"failures\":%" PRIu64 ",\"ok\":%s}", mb->n_failures,
            mb->n_failures == 0 ? "true" : "false");
}

static void
json_replica(FILE *f, const struct restore_verify_replica *rp)
{
    bool first = true;
    fputs("{\"address\":", f);
    cfr_json_fput(f, rp->address);
    fprintf(f,
            ",\"reachable\":%s,\"ok\":%s,\"messages_checked\":%" PRIu64
            ",\"bytes\":%" PRIu64 ",\"seconds\":",
            rp->reachable ? "true" : "false",
            rp->reachable && rp->n_failures == 0 ? "true" : "false",
            rp->messages_checked, rp->bytes);
    json_num(f, rp->seconds);
    fputs(",\"throughput_bytes_per_second\":", f);
    json_num(f, throughput(rp->bytes, rp->seconds));
    fprintf(f, ",\"failures\":%" PRIu64 ",\"failures_by_kind\":{",
            rp->n_failures);
    for (int k = 0; k < RESTORE_VERIFY_KIND_COUNT; k++) {
        if (rp->failures_by_kind[k] > 0) {
            fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", kind_names[k],
                    rp->failures_by_kind[k]);
            first = false;
        }
    }
    fputs("},\"mailboxes\":[", f);
    for (size_t j = 0; j < rp->n_mailboxes; j++) {
        if (j > 0) {
            fputc(',', f);
        }
        json_mailbox(f, &rp->mailboxes[j]);
    }
    fputs("]}", f);
}

static void
json_failure(FILE *f, const struct restore_verify_result *r,
             const struct restore_verify_failure *fl)
{
    fputs("{\"kind\":", f);
    cfr_json_fput(f, restore_verify_kind_name(fl->kind));
    fputs(",\"replica\":", f);
    cfr_json_fput(f, fl->replica < r->n_replicas
                         ? r->replicas[fl->replica].address
                         : NULL);
    fputs(",\"mailbox\":", f);
    cfr_json_fput(f, fl->mailbox);
    fputs(",\"folder\":", f);
    cfr_json_fput(f, fl->folder);
    fputs(",\"message\":", f);
    cfr_json_fput(f, fl->message);
    fputs(",\"message_id\":", f);
    cfr_json_fput(f, fl->message_id);
    fputs(",\"detail\":", f);
    cfr_json_fput(f, fl->detail);
    fputc('}', f);
}

int
restore_report_json(FILE *f, const struct restore_verify_result *r)
{
    double secs = r->finished_ms > r->started_ms
                      ? (double)(r->finished_ms - r->started_ms) / 1000.0
                      : 0.0;
    fputs("{\"report\":\"coffer.verify\",\"version\":1,\"tenant\":", f);
    cfr_json_fput(f, r->tenant);
    fprintf(f, ",\"ok\":%s,", r->ok ? "true" : "false");
    json_time(f, "started", r->started_ms);
    fputc(',', f);
    json_time(f, "finished", r->finished_ms);
    fputs(",\"duration_seconds\":", f);
    json_num(f, secs);
    /* A string: a 64-bit seed does not survive a JSON double. */
    fprintf(f,
            ",\"seed\":\"%" PRIu64 "\",\"sample\":{\"mailboxes\":%" PRIu64
            ",\"messages\":%" PRIu64 "},\"mailboxes_available\":%" PRIu64
            ",\"replicas\":[",
            r->seed, r->sample_mailboxes, r->sample_messages,
            r->mailboxes_available);
    for (size_t i = 0; i < r->n_replicas; i++) {
        if (i > 0) {
            fputc(',', f);
        }
        json_replica(f, &r->replicas[i]);
    }
    fprintf(f,
            "],\"failures_total\":%" PRIu64 ",\"failures_dropped\":%" PRIu64
            ",\"failures\":[",
            r->n_failures_total, r->failures_dropped);
    for (size_t i = 0; i < r->n_failures; i++) {
        if (i > 0) {
            fputc(',', f);
        }
        json_failure(f, r, &r->failures[i]);
    }
    fputs("],\"coverage\":{\"ratio\":", f);
    json_num(f, r->coverage_ratio);
    fprintf(f, ",\"retained\":%" PRIu64 ",\"covered\":%" PRIu64 "},",
            r->snapshots_retained, r->snapshots_covered);
    json_time(f, "last_success", r->last_success_ms);
    fputs(",\"notify\":{\"event\":", f);
    cfr_json_fput(f, r->notified ? r->notify_event : NULL);
    fputs(",\"error\":", f);
    cfr_json_fput(f, r->notify_error);
    fputs("}}\n", f);
    return ferror(f) ? CFR_EIO : 0;
}

/* ---- atomic files ----------------------------------------------------- */

typedef int write_fn(FILE *f, const void *ctx);

/*
 * Writes path through fn into a temp file ".<name>.tmp.XXXXXX" in the
 * same directory (never matching *.prom or *.json), fsyncs it, renames it
 * over path and fsyncs the directory.
 */
static int
atomic_write(const char *path, write_fn *fn, const void *ctx, mode_t mode,
             struct cfr_err *err)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    size_t dlen = slash != NULL ? (size_t)(slash - path) : 0;
    FILE *f = NULL;
    int fd = -1, rc = 0, n;

    if (*base == '\0') {
        return CFR_ERR(err, CFR_EINVAL, "\"%s\" names no file", path);
    }
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (dlen == 0) {
        snprintf(dir, sizeof(dir), "/");
    } else if (dlen < sizeof(dir)) {
        memcpy(dir, path, dlen);
        dir[dlen] = '\0';
    } else {
        return CFR_ERR(err, CFR_EINVAL, "path too long");
    }
    n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.XXXXXX", dir, base);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        return CFR_ERR(err, CFR_EINVAL, "path too long: \"%s\"", path);
    }
    if ((fd = mkstemp(tmp)) < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "cannot create a file in \"%s\"",
                             dir);
    }
    if (fchmod(fd, mode) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "chmod \"%s\"", tmp);
        goto fail;
    }
    if ((f = fdopen(fd, "w")) == NULL) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fdopen \"%s\"", tmp);
        goto fail;
    }
    fd = -1;
    if (fn(f, ctx) != 0 || fflush(f) != 0 || ferror(f)) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "writing \"%s\"", tmp);
        goto fail;
    }
    if (fsync(fileno(f)) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fsync \"%s\"", tmp);
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "closing \"%s\"", tmp);
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "rename to \"%s\"", path);
        goto fail;
    }
    /* The rename itself survives a crash only once the directory is synced;
       a failure here leaves a complete file, so it is not an error. */
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    return 0;
fail:
    if (f != NULL) {
        fclose(f);
    }
    if (fd >= 0) {
        close(fd);
    }
    (void)unlink(tmp);
    return rc;
}

static int
json_writer(FILE *f, const void *ctx)
{
    return restore_report_json(f, ctx);
}

int
restore_report_json_file(const char *path,
                         const struct restore_verify_result *r,
                         struct cfr_err *err)
{
    return atomic_write(path, json_writer, r, 0640, err);
}

/* ---- Prometheus textfile ---------------------------------------------- */

/*
 * A label value: the text format escapes \, " and newline; other control
 * bytes and non-ASCII become '?' so a hostile name can neither break the
 * line nor produce invalid UTF-8.
 */
static void
prom_label(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '\\') {
            fputs("\\\\", f);
        } else if (*p == '"') {
            fputs("\\\"", f);
        } else if (*p == '\n') {
            fputs("\\n", f);
        } else if (*p < 0x20 || *p >= 0x7f) {
            fputc('?', f);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void
prom_head(FILE *f, const char *name, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* name{tenant="..",replica=".."(,kind="..")} */
static void
prom_name(FILE *f, const struct restore_verify_result *r, const char *name,
          const char *replica, const char *kind)
{
    bool any = false;
    fputs(name, f);
    if (r->tenant != NULL) {
        fputs("{tenant=", f);
        prom_label(f, r->tenant);
        any = true;
    }
    if (replica != NULL) {
        fputs(any ? ",replica=" : "{replica=", f);
        prom_label(f, replica);
        any = true;
    }
    if (kind != NULL) {
        fputs(any ? ",kind=" : "{kind=", f);
        prom_label(f, kind);
        any = true;
    }
    fputs(any ? "} " : " ", f);
}

static void
prom_value(FILE *f, double v)
{
    /* %.17g round-trips; integers print without a fraction. */
    fprintf(f, "%.17g\n", isfinite(v) ? v : 0.0);
}

static int
metrics_writer(FILE *f, const void *ctx)
{
    const struct restore_verify_result *r = ctx;

    prom_head(f, "coffer_verify_last_run_timestamp_seconds",
              "Unix time the last verify run finished.");
    prom_name(f, r, "coffer_verify_last_run_timestamp_seconds", NULL, NULL);
    prom_value(f, (double)r->finished_ms / 1000.0);

    prom_head(f, "coffer_verify_last_success_timestamp_seconds",
              "Unix time of the last verify run that passed (0: never).");
    prom_name(f, r, "coffer_verify_last_success_timestamp_seconds", NULL, NULL);
    prom_value(f, (double)r->last_success_ms / 1000.0);

    prom_head(f, "coffer_verify_ok",
              "1 when the last verify run passed (per replica: that "
              "replica passed).");
    prom_name(f, r, "coffer_verify_ok", NULL, NULL);
    prom_value(f, r->ok ? 1 : 0);
    for (size_t i = 0; i < r->n_replicas; i++) {
        const struct restore_verify_replica *rp = &r->replicas[i];
        prom_name(f, r, "coffer_verify_ok", rp->address, NULL);
        prom_value(f, rp->reachable && rp->n_failures == 0 ? 1 : 0);
    }

    prom_head(f, "coffer_verify_reachable",
              "1 when the replica answered during the last verify run.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        prom_name(f, r, "coffer_verify_reachable", r->replicas[i].address,
                  NULL);
        prom_value(f, r->replicas[i].reachable ? 1 : 0);
    }

    prom_head(f, "coffer_verify_messages_total",
              "Messages restored and compared in the last verify run.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        prom_name(f, r, "coffer_verify_messages_total", r->replicas[i].address,
                  NULL);
        prom_value(f, (double)r->replicas[i].messages_checked);
    }

    prom_head(f, "coffer_verify_failures_total",
              "Failures found in the last verify run, by kind.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        for (int k = 0; k < RESTORE_VERIFY_KIND_COUNT; k++) {
            prom_name(f, r, "coffer_verify_failures_total",
                      r->replicas[i].address, kind_names[k]);
            prom_value(f, (double)r->replicas[i].failures_by_kind[k]);
        }
    }

    prom_head(f, "coffer_verify_failures",
              "Every failure of the last verify run, run-wide ones included.");
    prom_name(f, r, "coffer_verify_failures", NULL, NULL);
    prom_value(f, (double)r->n_failures_total);

    prom_head(f, "coffer_verify_bytes",
              "Bytes restored and checked in the last verify run.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        prom_name(f, r, "coffer_verify_bytes", r->replicas[i].address, NULL);
        prom_value(f, (double)r->replicas[i].bytes);
    }

    prom_head(f, "coffer_verify_duration_seconds",
              "Wall time of the last verify run per replica.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        prom_name(f, r, "coffer_verify_duration_seconds",
                  r->replicas[i].address, NULL);
        prom_value(f, r->replicas[i].seconds);
    }

    prom_head(f, "coffer_verify_throughput_bytes_per_second",
              "Restore throughput of the last verify run per replica.");
    for (size_t i = 0; i < r->n_replicas; i++) {
        const struct restore_verify_replica *rp = &r->replicas[i];
        prom_name(f, r, "coffer_verify_throughput_bytes_per_second",
                  rp->address, NULL);
        prom_value(f, throughput(rp->bytes, rp->seconds));
    }

    prom_head(f, "coffer_verify_coverage_ratio",
              "Share of retained snapshots verified within the coverage "
              "window.");
    prom_name(f, r, "coffer_verify_coverage_ratio", NULL, NULL);
    prom_value(f, r->coverage_ratio);

    prom_head(f, "coffer_verify_notify_failed",
              "1 when a verify notification could not be delivered.");
    prom_name(f, r, "coffer_verify_notify_failed", NULL, NULL);
    prom_value(f, r->notify_error != NULL ? 1 : 0);
    return ferror(f) ? CFR_EIO : 0;
}

int
restore_report_metrics(const char *path, const struct restore_verify_result *r,
                       struct cfr_err *err)
{
    /* node_exporter usually runs as another user: world-readable. */
    return atomic_write(path, metrics_writer, r, 0644, err);
}

/* ---- state ------------------------------------------------------------ */

static bool
hex_ok(const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return i == 2 * CFR_ID_LEN;
}

static int
snap_cmp(const void *a, const void *b)
{
    return strcmp(((const struct restore_report_snap *)a)->hex,
                  ((const struct restore_report_snap *)b)->hex);
}

/* Sorts by ID and merges duplicates, keeping the later verification. */
static void
snaps_normalise(struct restore_report_state *st)
{
    size_t w = 0;
    if (st->n_snaps == 0) {
        return;
    }
    qsort(st->snaps, st->n_snaps, sizeof(*st->snaps), snap_cmp);
    for (size_t i = 1; i < st->n_snaps; i++) {
        if (strcmp(st->snaps[i].hex, st->snaps[w].hex) == 0) {
            if (st->snaps[i].verified_ms > st->snaps[w].verified_ms) {
                st->snaps[w].verified_ms = st->snaps[i].verified_ms;
            }
        } else {
            st->snaps[++w] = st->snaps[i];
        }
    }
    st->n_snaps = w + 1;
}

static struct restore_report_snap *
snap_find(const struct restore_report_state *st, const char *hex)
{
    struct restore_report_snap key;
    if (st->n_snaps == 0 || strlen(hex) >= sizeof(key.hex)) {
        return NULL;
    }
    snprintf(key.hex, sizeof(key.hex), "%s", hex);
    return bsearch(&key, st->snaps, st->n_snaps, sizeof(*st->snaps), snap_cmp);
}

static int
snap_add(struct restore_report_state *st, const char *hex, int64_t ms,
         struct cfr_err *err)
{
    int rc = grow((void **)&st->snaps, &st->n_snaps, &st->cap_snaps,
                  sizeof(*st->snaps), err);
    if (rc != 0) {
        return rc;
    }
    snprintf(st->snaps[st->n_snaps].hex, sizeof(st->snaps[0].hex), "%s", hex);
    st->snaps[st->n_snaps].verified_ms = ms;
    st->n_snaps++;
    return 0;
}

static const char *const state_keys[] = {
    "version",         "runs",  "have_last", "last_ok", "last_run_ms",
    "last_success_ms", "snaps", NULL};
static const char *const snap_keys[] = {"id", "verified_ms", NULL};

static int
state_read(const struct cfr_cfg *cfg, struct restore_report_state *st,
           struct cfr_err *err)
{
    const int64_t zero = 0;
    const bool no = false;
    int64_t v;
    size_t n = 0;
    int rc;

    if ((rc = cfr_cfg_check_keys(cfg, "", state_keys, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "version", NULL, 1, 1, &v, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "runs", &zero, 0, INT64_MAX, &v, err)) != 0) {
        return rc;
    }
    st->runs = (uint64_t)v;
    if ((rc = cfr_cfg_bool(cfg, "have_last", &no, &st->have_last, err)) != 0 ||
        (rc = cfr_cfg_bool(cfg, "last_ok", &no, &st->last_ok, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "last_run_ms", &zero, 0, INT64_MAX,
                          &st->last_run_ms, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "last_success_ms", &zero, 0, INT64_MAX,
                          &st->last_success_ms, err)) != 0 ||
        (rc = cfr_cfg_count(cfg, "snaps", &n, err)) != 0) {
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        char p[64];
        const char *hex;
        int64_t ms;
        snprintf(p, sizeof(p), "snaps.[%zu]", i);
        if ((rc = cfr_cfg_check_keys(cfg, p, snap_keys, err)) != 0) {
            return rc;
        }
        snprintf(p, sizeof(p), "snaps.[%zu].id", i);
        if ((rc = cfr_cfg_string(cfg, p, NULL, &hex, err)) != 0) {
            return rc;
        }
        if (!hex_ok(hex)) {
            return cfr_cfg_fail(cfg, p, err, "not a snapshot ID");
        }
        snprintf(p, sizeof(p), "snaps.[%zu].verified_ms", i);
        if ((rc = cfr_cfg_int(cfg, p, NULL, 0, INT64_MAX, &ms, err)) != 0) {
            return rc;
        }
        if ((rc = snap_add(st, hex, ms, err)) != 0) {
            return rc;
        }
    }
    snaps_normalise(st);
    return 0;
}

int
restore_report_state_load(const char *path, struct restore_report_state *st_r,
                          struct cfr_err *err)
{
    struct stat sb;
    struct cfr_cfg *cfg;
    int rc;

    memset(st_r, 0, sizeof(*st_r));
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) {
            return 0; /* the first run */
        }
        return CFR_ERR_ERRNO(err, CFR_EIO, "verify state \"%s\"", path);
    }
    if ((cfg = cfr_cfg_load_file(path, err)) == NULL) {
        rc = err != NULL && err->code == CFR_EIO ? CFR_EIO : CFR_ECORRUPT;
        if (err != NULL) {
            err->code = rc;
        }
        return rc;
    }
    rc = state_read(cfg, st_r, err);
    cfr_cfg_free(cfg);
    if (rc != 0) {
        restore_report_state_fini(st_r);
        if (rc != CFR_ENOMEM) {
            rc = CFR_ECORRUPT;
            if (err != NULL) {
                err->code = rc;
            }
        }
    }
    return rc;
}

static int
state_writer(FILE *f, const void *ctx)
{
    const struct restore_report_state *st = ctx;
    fprintf(f,
            "# coffer-restore verify state: written by coffer-restore on "
            "every run.\n"
            "# Removing it forgets coverage; every snapshot is then due.\n"
            "version = 1;\nruns = %" PRIu64 "L;\nhave_last = %s;\n"
            "last_ok = %s;\nlast_run_ms = %" PRId64 "L;\n"
            "last_success_ms = %" PRId64 "L;\nsnaps = (",
            st->runs, st->have_last ? "true" : "false",
            st->last_ok ? "true" : "false", st->last_run_ms,
            st->last_success_ms);
    for (size_t i = 0; i < st->n_snaps; i++) {
        /* IDs are checked hex: no quoting needed. */
        fprintf(f, "%s\n  { id = \"%s\"; verified_ms = %" PRId64 "L; }",
                i > 0 ? "," : "", st->snaps[i].hex, st->snaps[i].verified_ms);
    }
    fputs("\n);\n", f);
    return ferror(f) ? CFR_EIO : 0;
}

int
restore_report_state_lock(const char *path, int *fd_r, struct cfr_err *err)
{
    char lp[PATH_MAX];
    int fd, w;

    *fd_r = -1;
    w = snprintf(lp, sizeof(lp), "%s.lock", path);
    if (w < 0 || (size_t)w >= sizeof(lp)) {
        return CFR_ERR(err, CFR_ELIMIT, "state lock: path too long");
    }
    fd = open(lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "state lock %s", lp);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) {
            close(fd);
            return CFR_ERR_ERRNO(err, CFR_EIO, "state lock %s", lp);
        }
        fprintf(stderr,
                "coffer-restore verify: another verify run holds %s; "
                "waiting for it to finish\n",
                lp);
        fflush(stderr);
        while (flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                close(fd);
                return CFR_ERR_ERRNO(err, CFR_EIO, "state lock %s", lp);
            }
            if (restore_report_schedule_stopping()) {
                close(fd);
                return CFR_ERR(err, CFR_EUNAVAIL,
                               "stopped while waiting for the state lock");
            }
        }
    }
    *fd_r = fd;
    return 0;
}

void
restore_report_state_unlock(int fd)
{
    if (fd >= 0) {
        (void)flock(fd, LOCK_UN);
        close(fd);
    }
}

int
restore_report_state_save(const char *path,
                          const struct restore_report_state *st,
                          struct cfr_err *err)
{
    for (size_t i = 0; i < st->n_snaps; i++) {
        if (!hex_ok(st->snaps[i].hex)) {
            return CFR_ERR(err, CFR_EINTERNAL, "verify state: bad ID");
        }
    }
    return atomic_write(path, state_writer, st, 0600, err);
}

void
restore_report_state_fini(struct restore_report_state *st)
{
    if (st == NULL) {
        return;
    }
    cfr_free(st->snaps);
    memset(st, 0, sizeof(*st));
}

int64_t
restore_report_state_verified_ms(const struct restore_report_state *st,
                                 const char *hex)
{
    const struct restore_report_snap *s = snap_find(st, hex);
    return s != NULL ? s->verified_ms : 0;
}

bool
restore_report_state_prev_failed(const struct restore_report_state *st)
{
    return st->have_last && !st->last_ok;
}

struct pick {
    int64_t ms;
    size_t i;
};

static int
pick_cmp(const void *a, const void *b)
{
    const struct pick *x = a, *y = b;
    if (x->ms != y->ms) {
        return x->ms < y->ms ? -1 : 1;
    }
    return x->i < y->i ? -1 : x->i > y->i ? 1 : 0;
}

void
restore_report_state_pick(const struct restore_report_state *st,
                          const char *const *hex, size_t n, size_t *order_r)
{
    struct pick *p = n > 0 ? cfr_calloc(n, sizeof(*p)) : NULL;
    if (p == NULL) {
        /* Without memory the plain order is still a valid permutation. */
        for (size_t i = 0; i < n; i++) {
            order_r[i] = i;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        p[i].ms = restore_report_state_verified_ms(st, hex[i]);
        p[i].i = i;
    }
    qsort(p, n, sizeof(*p), pick_cmp);
    for (size_t i = 0; i < n; i++) {
        order_r[i] = p[i].i;
    }
    cfr_free(p);
}

/* True when every replica checked snapshot hex without a failure. */
static bool
verified_everywhere(const struct restore_verify_result *r, const char *hex)
{
    for (size_t i = 0; i < r->n_replicas; i++) {
        const struct restore_verify_replica *rp = &r->replicas[i];
        bool seen = false;
        if (!rp->reachable) {
            return false;
        }
        for (size_t j = 0; j < rp->n_mailboxes; j++) {
            const struct restore_verify_mailbox *mb = &rp->mailboxes[j];
            if (strcmp(mb->snapshot_hex, hex) == 0) {
                if (mb->n_failures > 0) {
                    return false;
                }
                seen = true;
            }
        }
        if (!seen) {
            return false;
        }
    }
    return r->n_replicas > 0;
}

static bool
in_list(const char *const *list, size_t n, const char *hex)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], hex) == 0) {
            return true;
        }
    }
    return false;
}

int
restore_report_state_record(struct restore_report_state *st,
                            struct restore_verify_result *r,
                            const char *const *retained, size_t n_retained,
                            int64_t window_ms, struct cfr_err *err)
{
    int64_t now = r->finished_ms;
    uint64_t covered = 0;
    size_t n_new = 0;
    int rc;

    /* Newly verified snapshots: replica 0 lists every candidate. */
    if (r->n_replicas > 0) {
        const struct restore_verify_replica *rp = &r->replicas[0];
        for (size_t j = 0; j < rp->n_mailboxes; j++) {
            const char *hex = rp->mailboxes[j].snapshot_hex;
            if (!hex_ok(hex) || !verified_everywhere(r, hex)) {
                continue;
            }
            struct restore_report_snap *s = snap_find(st, hex);
            if (s != NULL) {
                if (now > s->verified_ms) {
                    s->verified_ms = now;
                }
            } else {
                if ((rc = snap_add(st, hex, now, err)) != 0) {
                    return rc;
                }
                n_new++;
            }
        }
    }
    if (n_new > 0) {
        snaps_normalise(st);
    }
    /* Forget snapshots retention has dropped: they need no coverage. */
    if (retained != NULL) {
        size_t w = 0;
        for (size_t i = 0; i < st->n_snaps; i++) {
            if (in_list(retained, n_retained, st->snaps[i].hex)) {
                st->snaps[w++] = st->snaps[i];
            }
        }
        st->n_snaps = w;
    }
    st->runs++;
    st->have_last = true;
    st->last_ok = r->ok;
    st->last_run_ms = now;
    if (r->ok) {
        st->last_success_ms = now;
    }
    r->last_success_ms = st->last_success_ms;

    /* Without a retained list, what the state knows is the set. */
    r->snapshots_retained = retained != NULL ? n_retained : st->n_snaps;
    for (size_t i = 0; i < r->snapshots_retained; i++) {
        int64_t ms = retained != NULL
                         ? restore_report_state_verified_ms(st, retained[i])
                         : st->snaps[i].verified_ms;
        if (ms > 0 && now - ms <= window_ms) {
            covered++;
        }
    }
    r->snapshots_covered = covered;
    r->coverage_ratio = r->snapshots_retained > 0
                            ? (double)covered / (double)r->snapshots_retained
                            : 1.0;
    return 0;
}

/* ---- notifications ---------------------------------------------------- */

/* Copies s into out (size n), cut at a UTF-8 character boundary. */
static void
copy_cut(char *out, size_t n, const char *s)
{
    size_t len = strlen(s);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80) {
            len--;
        }
    }
    memcpy(out, s, len);
    out[len] = '\0';
}

static void
describe_failure(const struct restore_verify_result *r,
                 const struct restore_verify_failure *f, char *out, size_t n)
{
    char tmp[2 * CFR_NOTIFY_VALUE_MAX];
    snprintf(tmp, sizeof(tmp),
             "%s replica=%s mailbox=%s folder=%s "
             "message=%s message_id=%s: %s",
             restore_verify_kind_name(f->kind),
             f->replica < r->n_replicas ? r->replicas[f->replica].address : "-",
             f->mailbox != NULL ? f->mailbox : "-",
             f->folder != NULL ? f->folder : "-",
             f->message != NULL ? f->message : "-",
             f->message_id != NULL ? f->message_id : "-",
             f->detail != NULL ? f->detail : "");
    copy_cut(out, n, tmp);
}

#define NOTIFY_FIELDS (8 + RESTORE_REPORT_NOTIFY_FAILURES)
#define NOTIFY_VALUE  (CFR_NOTIFY_VALUE_MAX + 1)

struct notify_text {
    char result[16], replicas[NOTIFY_VALUE], failures[32], seed[32];
    char started[40], last_success[40], dropped[32];
    char fail[RESTORE_REPORT_NOTIFY_FAILURES][NOTIFY_VALUE];
    char keys[RESTORE_REPORT_NOTIFY_FAILURES][16];
    struct cfr_notify_field fields[NOTIFY_FIELDS];
    size_t n;
};

static void
add_field(struct notify_text *t, const char *k, const char *v)
{
    if (t->n < NOTIFY_FIELDS) {
        t->fields[t->n].key = k;
        t->fields[t->n].value = v;
        t->n++;
    }
}

static void
build_fields(const struct restore_verify_result *r, struct notify_text *t)
{
    size_t off = 0;

    snprintf(t->result, sizeof(t->result), "%s", r->ok ? "passed" : "failed");
    add_field(t, "result", t->result);
    t->replicas[0] = '\0';
    for (size_t i = 0; i < r->n_replicas && off < sizeof(t->replicas); i++) {
        const struct restore_verify_replica *rp = &r->replicas[i];
        char one[300];
        int k;
        if (!rp->reachable) {
            snprintf(one, sizeof(one), "%s unreachable", rp->address);
        } else if (rp->n_failures > 0) {
            snprintf(one, sizeof(one), "%s %" PRIu64 " failures", rp->address,
                     rp->n_failures);
        } else {
            snprintf(one, sizeof(one), "%s ok", rp->address);
        }
        k = snprintf(t->replicas + off, sizeof(t->replicas) - off, "%s%s",
                     i > 0 ? "; " : "", one);
        if (k < 0) {
            break;
        }
        off += (size_t)k;
    }
    if (off >= sizeof(t->replicas)) {
        /* Cut at a character boundary and mark the cut. */
        size_t cut = sizeof(t->replicas) - 4;
        while (cut > 0 && ((unsigned char)t->replicas[cut] & 0xc0) == 0x80) {
            cut--;
        }
        memcpy(t->replicas + cut, "...", 4);
    }
    add_field(t, "replicas", t->replicas);
    snprintf(t->failures, sizeof(t->failures), "%" PRIu64, r->n_failures_total);
    add_field(t, "failures", t->failures);
    for (size_t i = 0; i < r->n_failures && i < RESTORE_REPORT_NOTIFY_FAILURES;
         i++) {
        snprintf(t->keys[i], sizeof(t->keys[i]), "failure.%zu", i + 1);
        describe_failure(r, &r->failures[i], t->fail[i], sizeof(t->fail[i]));
        add_field(t, t->keys[i], t->fail[i]);
    }
    if (r->n_failures_total > RESTORE_REPORT_NOTIFY_FAILURES) {
        snprintf(t->dropped, sizeof(t->dropped), "%" PRIu64,
                 r->n_failures_total - RESTORE_REPORT_NOTIFY_FAILURES);
        add_field(t, "failures_not_named", t->dropped);
    }
    snprintf(t->seed, sizeof(t->seed), "%" PRIu64, r->seed);
    add_field(t, "seed", t->seed);
    if (r->started_ms > 0) {
        cfr_clock_format(r->started_ms, t->started, (int)sizeof(t->started));
        add_field(t, "started", t->started);
    }
    if (r->last_success_ms > 0) {
        cfr_clock_format(r->last_success_ms, t->last_success,
                         (int)sizeof(t->last_success));
        add_field(t, "last_success", t->last_success);
    }
}

static int
notify_fail(struct restore_verify_result *r, int rc, struct cfr_err *err)
{
    const char *msg =
        err != NULL && err->msg[0] != '\0' ? err->msg : cfr_code_name(rc);
    cfr_free(r->notify_error);
    r->notify_error = cfr_strdup(msg);
    cfr_log(CFR_LOG_ERROR, LOG_EV ".notify_failed", "event=%s",
            r->notify_event != NULL ? r->notify_event : "-");
    if (err != NULL) {
        cfr_log_err(CFR_LOG_ERROR, LOG_EV ".notify_failed", err);
    }
    return rc;
}

int
restore_report_notify(const struct restore_notify_settings *ns,
                      bool prev_failed, struct restore_verify_result *r,
                      struct cfr_err *err)
{
    struct cfr_notify_opts o = {0};
    struct cfr_notify *n = NULL;
    struct cfr_secret *pw = NULL;
    struct notify_text *t = NULL;
    size_t pw_len = 0, targets;
    int64_t per_target, wait_ms, delay = CFR_NOTIFY_DEFAULT_RETRY_DELAY_MS;
    int rc = 0;

    r->notified = false;
    r->notify_event = NULL;
    if (!r->ok) {
        r->notify_event = "verify.failed";
    } else if (prev_failed) {
        r->notify_event = "verify.recovered";
    } else {
        return 0; /* success after success: silence */
    }
    targets = ns->n_webhooks + (ns->n_mail_to > 0 ? 1 : 0);
    if (targets == 0) {
        cfr_log(CFR_LOG_INFO, LOG_EV ".notify_skipped",
                "event=%s reason=no_targets", r->notify_event);
        return 0;
    }
    if (ns->n_mail_to > 0 && ns->smtp_password_file != NULL) {
        if ((rc = restore_config_smtp_password(ns, &pw, &pw_len, err)) != 0) {
            return notify_fail(r, rc, err);
        }
        o.smtp_password = (const char *)cfr_secret_ro(pw);
    }
    o.smtp_url = ns->smtp_url;
    o.smtp_from = ns->smtp_from;
    o.smtp_user = ns->smtp_user;
    o.ca_file = ns->ca_file;
    o.source = ns->source;
    o.subject_prefix = "[coffer] ";
    o.timeout_ms = ns->timeout_ms > 0 ? (long)ns->timeout_ms : 10000;
    o.retries = ns->retries;
    o.retry_delay_ms = delay;
    o.queue_max = 64;
    n = cfr_notify_new(&o, NULL, err);
    cfr_secret_free(pw); /* the notifier keeps its own copy */
    if (n == NULL) {
        return notify_fail(
            r, err != NULL && err->code != 0 ? err->code : CFR_EINVAL, err);
    }
    if ((t = cfr_calloc(1, sizeof(*t))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "notify: out of memory");
        goto out;
    }
    build_fields(r, t);
    for (size_t i = 0; i < ns->n_webhooks && rc == 0; i++) {
        struct cfr_notify_event ev = {
            .event = r->notify_event,
            .tenant = r->tenant,
            .fields = t->fields,
            .n_fields = t->n,
            .webhook_url = ns->webhooks[i],
            .only_own_targets = true,
        };
        rc = cfr_notify_post(n, &ev, err);
    }
    if (rc == 0 && ns->n_mail_to > 0) {
        struct cfr_notify_event ev = {
            .event = r->notify_event,
            .tenant = r->tenant,
            .fields = t->fields,
            .n_fields = t->n,
            .mail_to = ns->mail_to,
            .n_mail_to = ns->n_mail_to,
            .only_own_targets = true,
        };
        rc = cfr_notify_post(n, &ev, err);
    }
    if (rc != 0) {
        goto out;
    }
    r->notified = true;
    /* The notifier's own bound (notify.h invariant 2), for every target in
       turn, plus a second of slack. */
    per_target = 0;
    for (unsigned a = 0; a <= ns->retries; a++) {
        per_target += o.timeout_ms + (a > 0 ? delay : 0);
        if (a > 0) {
            delay *= 2;
        }
    }
    wait_ms = per_target * (int64_t)targets + 1000;
    rc = cfr_notify_flush(n, wait_ms, err);
    if (rc == 0) {
        cfr_log(CFR_LOG_INFO, LOG_EV ".notified", "event=%s targets=%zu",
                r->notify_event, targets);
    }
out:
    cfr_notify_free(n, 0);
    cfr_free(t);
    if (rc != 0) {
        return notify_fail(r, rc, err);
    }
    return 0;
}

/* ---- --schedule ------------------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t wake_fd = -1;

void
restore_report_schedule_stop(void)
{
    int saved = errno;
    stop_flag = 1;
    if (wake_fd >= 0) {
        (void)!write(wake_fd, "x", 1);
    }
    errno = saved;
}

bool
restore_report_schedule_stopping(void)
{
    return stop_flag != 0;
}

static void
on_signal(int sig)
{
    (void)sig;
    restore_report_schedule_stop();
}

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until mono_ms() >= until or a stop; true when stopping. */
static bool
wait_until(int rfd, int64_t until)
{
    while (!stop_flag) {
        int64_t left = until - mono_ms();
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        char drain[16];
        if (left <= 0) {
            return false;
        }
        /* poll takes an int; cap the wait and loop for longer ones. */
        if (poll(&p, 1, left > 60000 ? 60000 : (int)left) > 0) {
            while (read(rfd, drain, sizeof(drain)) > 0) {
            }
        }
    }
    return true;
}

int
restore_report_schedule_loop(int64_t interval_ms, int64_t jitter_ms,
                             restore_report_run_fn *run, void *ctx,
                             struct cfr_err *err)
{
    struct sigaction sa, old_term, old_int;
    int fds[2];
    uint64_t rng = (uint64_t)mono_ms() ^ ((uint64_t)getpid() << 32);
    uint64_t runs = 0;

    if (interval_ms < 1000 || jitter_ms < 0 || run == NULL) {
        return CFR_ERR(err, CFR_EINVAL,
                       "schedule: interval must be at least 1s and jitter "
                       "not negative");
    }
    if (pipe(fds) != 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "schedule: pipe");
    }
    for (int i = 0; i < 2; i++) {
        /* Non-blocking: the handler must never block on a full pipe. */
        (void)fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        (void)fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    stop_flag = 0;
    wake_fd = fds[1];
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, &old_term) != 0) {
        wake_fd = -1;
        close(fds[0]);
        close(fds[1]);
        return CFR_ERR_ERRNO(err, CFR_EIO, "schedule: sigaction");
    }
    if (sigaction(SIGINT, &sa, &old_int) != 0) {
        (void)sigaction(SIGTERM, &old_term, NULL);
        wake_fd = -1;
        close(fds[0]);
        close(fds[1]);
        return CFR_ERR_ERRNO(err, CFR_EIO, "schedule: sigaction");
    }
    cfr_log(CFR_LOG_INFO, LOG_EV ".schedule_start",
            "interval_ms=%" PRId64 " jitter_ms=%" PRId64, interval_ms,
            jitter_ms);
    while (!stop_flag) {
        int64_t start = mono_ms(), next;
        runs++;
        cfr_log(CFR_LOG_INFO, LOG_EV ".schedule_run", "run=%" PRIu64, runs);
        int code = run(ctx);
        cfr_log(code == RESTORE_EXIT_OK ? CFR_LOG_INFO : CFR_LOG_WARN,
                LOG_EV ".schedule_done",
                "run=%" PRIu64 " exit=%d seconds=%" PRId64, runs, code,
                (mono_ms() - start) / 1000);
        next = start + interval_ms;
        if (jitter_ms > 0) {
            next += (int64_t)(cfr_splitmix64(&rng) % (uint64_t)jitter_ms);
        }
        if (wait_until(fds[0], next)) {
            break;
        }
    }
    cfr_log(CFR_LOG_INFO, LOG_EV ".schedule_stop", "runs=%" PRIu64, runs);
    (void)sigaction(SIGTERM, &old_term, NULL);
    (void)sigaction(SIGINT, &old_int, NULL);
    wake_fd = -1;
    close(fds[0]);
    close(fds[1]);
    return 0;
}
