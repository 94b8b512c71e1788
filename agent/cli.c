/*
 * cli.c - exit codes, lock, passphrase files, mass-deletion rule, progress
 * line and run summary for coffer-agent (cli.h).
 *
 * Invariants:
 *  1. Passphrases are read straight into sodium_malloc memory (secret.h)
 *     and never copied elsewhere, printed or logged; a file others could
 *     read is refused before a byte of it is read.
 *  2. The lock is an flock on an open descriptor: it dies with the
 *     process, so a crashed or killed run never blocks the next one, and
 *     there is no stale-lock heuristic to get wrong.
 *  3. The summary keeps nothing per mailbox: each one is printed as it
 *     finishes and folded into the totals, so a host with 100,000
 *     mailboxes costs the same memory as one with ten.
 *  4. Every JSON string goes through cfr_json_fput: mailbox names
 *     and vault messages come from outside and may hold any byte.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>    /* open */
#include <inttypes.h> /* PRIu64 */
#include <stdio.h>
#include <string.h>
#include <sys/file.h> /* flock */
#include <sys/stat.h> /* fstat */
#include <time.h>     /* gmtime_r */
#include <unistd.h>   /* read, write, close, getpid */

#include "buf.h"    /* cfr_hex_encode */
#include "json.h"   /* cfr_json_fput */
#include "secret.h" /* passphrases in guarded memory */

const char *
agent_cli_exit_name(int code)
{
    switch (code) {
    case AGENT_EXIT_OK:
        return "ok";
    case AGENT_EXIT_FAILED:
        return "failed";
    case AGENT_EXIT_USAGE:
        return "usage";
    case AGENT_EXIT_CONFIG:
        return "config";
    case AGENT_EXIT_LOCKED:
        return "locked";
    case AGENT_EXIT_PARTIAL:
        return "partial";
    case AGENT_EXIT_FILE_ERRORS:
        return "file-errors";
    case AGENT_EXIT_MASS_DELETION:
        return "mass-deletion";
    default:
        return "unknown";
    }
}

/* ---- lock --------------------------------------------------------------- */

int
agent_cli_lock(const char *path, int *fd_r, long *holder_r, struct cfr_err *err)
{
    char pid[32];
    int fd, n;

    *fd_r = -1;
    *holder_r = 0;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "lock file %s: cannot open", path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            ssize_t got = pread(fd, pid, sizeof(pid) - 1, 0);
            long v = 0;
            for (ssize_t i = 0;
                 i < got && pid[i] >= '0' && pid[i] <= '9' && v < 100000000;
                 i++) {
                v = v * 10 + (pid[i] - '0');
            }
            *holder_r = v;
            close(fd);
            return CFR_ERR(err, CFR_EEXIST,
                           "another coffer-agent is running (lock %s held by "
                           "pid %ld)",
                           path, v);
        }
        close(fd);
        errno = e;
        return CFR_ERR_ERRNO(err, CFR_EIO, "lock file %s: cannot lock", path);
    }
    /* The pid is a courtesy for the message above; the flock decides. */
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* Harmless: the lock is held all the same. */
        cfr_err_clear(err);
    }
    *fd_r = fd;
    return 0;
}

void
agent_cli_unlock(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

/* ---- passphrase files --------------------------------------------------- */

int
agent_cli_pass_read(const char *path, const char *what,
                    struct cfr_secret **pass_r, size_t *len_r,
                    struct cfr_err *err)
{
    struct cfr_secret *s = NULL;
    struct stat st;
    size_t got = 0;
    uint8_t *p;
    int fd, rc = 0;

    *pass_r = NULL;
    *len_r = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        return CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                             "%s %s: cannot open", what, path);
    }
    if (fstat(fd, &st) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "%s %s: cannot stat", what, path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s %s: not a regular file", what, path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "%s %s: mode %03o lets others read it; chmod 600", what,
                     path, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if (st.st_size <= 0 || st.st_size > AGENT_CLI_PASS_MAX + 2) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s %s: empty or longer than %d bytes",
                     what, path, AGENT_CLI_PASS_MAX);
        goto out;
    }
    if ((s = cfr_secret_new((size_t)st.st_size + 1, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    p = cfr_secret_rw(s);
    while (got < (size_t)st.st_size + 1) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size + 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "%s %s: cannot read", what, path);
            goto out;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    if (got > 0 && p[got - 1] == '\n') {
        got--;
        if (got > 0 && p[got - 1] == '\r') {
            got--;
        }
    }
    if (got == 0 || got > AGENT_CLI_PASS_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s %s: empty or longer than %d bytes",
                     what, path, AGENT_CLI_PASS_MAX);
        goto out;
    }
    cfr_secret_ro(s);
    *pass_r = s;
    *len_r = got;
    s = NULL;
out:
    cfr_secret_free(s);
    close(fd);
    return rc;
}

int
agent_cli_pass_generate(const char *path, struct cfr_secret **pass_r,
                        size_t *len_r, struct cfr_err *err)
{
    struct cfr_secret *s = NULL, *raw = NULL;
    const size_t hex_len = 2 * AGENT_CLI_PASS_GEN;
    uint8_t *p;
    int fd = -1, rc = 0;

    *pass_r = NULL;
    *len_r = 0;
    if ((s = cfr_secret_new(hex_len + 2, err)) == NULL ||
        (raw = cfr_secret_new(AGENT_CLI_PASS_GEN, err)) == NULL) {
        rc = err != NULL ? err->code : CFR_ENOMEM;
        goto out;
    }
    p = cfr_secret_rw(s);
    cfr_crypto_random(cfr_secret_rw(raw), AGENT_CLI_PASS_GEN);
    cfr_hex_encode(cfr_secret_ro(raw), AGENT_CLI_PASS_GEN, (char *)p);
    p[hex_len] = '\n';
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, errno == EEXIST ? CFR_EEXIST : CFR_EIO,
                           "passphrase_file %s: cannot create", path);
        goto out;
    }
    if (write(fd, p, hex_len + 1) != (ssize_t)(hex_len + 1) || fsync(fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "passphrase_file %s: cannot write",
                           path);
        close(fd);
        fd = -1;
        unlink(path);
        goto out;
    }
    p[hex_len] = '\0';
    cfr_secret_ro(s);
    *pass_r = s;
    *len_r = hex_len;
    s = NULL;
out:
    if (fd >= 0) {
        close(fd);
    }
    cfr_secret_free(raw);
    cfr_secret_free(s);
    return rc;
}

/* ---- mass-deletion rule ------------------------------------------------- */

bool
agent_cli_mass_deletion(uint64_t deleted, uint64_t kept, unsigned percent,
                        uint64_t min_files)
{
    if (deleted == 0 || deleted < min_files || percent == 0) {
        return false;
    }
    /* deleted / (deleted + kept) > percent / 100, without division. */
    unsigned __int128 lhs = (unsigned __int128)deleted * 100;
    unsigned __int128 rhs =
        ((unsigned __int128)deleted + (unsigned __int128)kept) * percent;
    return lhs > rhs;
}

/* ---- totals and exit code ----------------------------------------------- */

static uint64_t
file_errors(const struct agent_backup_stats *s)
{
    return s->file_errors + s->scan_errors;
}

void
agent_cli_totals_add(struct agent_cli_totals *t,
                     const struct agent_cli_mailbox *m)
{
    const struct agent_backup_stats *s = m->stats;
    t->mailboxes++;
    if (m->skipped) {
        t->skipped++;
        t->failed++;
        return;
    }
    if (m->rc != 0) {
        t->failed++;
    } else {
        t->committed++;
    }
    if (s == NULL) {
        return;
    }
    if (m->rc == 0 && s->mass_deletion) {
        t->mass_deletion++;
    }
    if (m->rc == 0 && file_errors(s) > 0) {
        t->with_errors++;
    }
    t->scanned += s->scanned;
    t->files_read += s->files_read;
    t->bytes_read += s->bytes_read;
    t->file_errors += s->file_errors;
    t->scan_errors += s->scan_errors;
    t->chunks_new += s->chunks_sealed;
    t->bytes_sent += s->bytes_sealed;
    t->deleted += s->deleted;
}

void
agent_cli_totals_vaults(struct agent_cli_totals *t,
                        const struct agent_uplink_report *r, size_t n)
{
    t->vaults = n;
    t->vaults_ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].state == AGENT_UPLINK_OK) {
            t->vaults_ok++;
        }
    }
}

int
agent_cli_exit_code(const struct agent_cli_totals *t)
{
    if (t->failed > 0 || t->uplink_failed) {
        return AGENT_EXIT_FAILED;
    }
    if (t->mass_deletion > 0) {
        return AGENT_EXIT_MASS_DELETION;
    }
    if (t->with_errors > 0) {
        return AGENT_EXIT_FILE_ERRORS;
    }
    if (t->vaults_ok < t->vaults) {
        return AGENT_EXIT_PARTIAL;
    }
    return AGENT_EXIT_OK;
}

/* ---- formatting helpers ------------------------------------------------- */

const char *
agent_cli_bytes(uint64_t v, char *out, size_t n)
{
    static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
                                        "TiB", "PiB", "EiB"};
    if (v < 1024) {
        snprintf(out, n, "%" PRIu64 " B", v);
        return out;
    }
    double d = (double)v;
    size_t u = 0;
    while (d >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        d /= 1024.0;
        u++;
    }
    snprintf(out, n, "%.1f %s", d, units[u]);
    return out;
}

static void
elapsed_text(int64_t ms, char *out, size_t n)
{
    if (ms < 0) {
        ms = 0;
    }
    int64_t s = ms / 1000;
    if (s < 60) {
        snprintf(out, n, "%lld.%llds", (long long)s,
                 (long long)((ms % 1000) / 100));
    } else if (s < 3600) {
        snprintf(out, n, "%lldm%02llds", (long long)(s / 60),
                 (long long)(s % 60));
    } else {
        snprintf(out, n, "%lldh%02lldm", (long long)(s / 3600),
                 (long long)((s / 60) % 60));
    }
}

static void
iso_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(out, n, "?");
    }
}

/* ---- text summary ------------------------------------------------------- */

void
agent_cli_text_mailbox(FILE *f, const struct agent_cli_mailbox *m,
                       const struct agent_cli_run *run)
{
    const struct agent_backup_stats *s = m->stats;
    char b1[32], b2[32], el[32];

    if (m->skipped) {
        fprintf(f, "  %s: SKIPPED (%s)\n", m->name, m->error);
        return;
    }
    elapsed_text(m->elapsed_ms, el, sizeof(el));
    if (m->rc != 0) {
        fprintf(f, "  %s: FAILED, no snapshot (%s)\n", m->name, m->error);
    }
    if (s == NULL) {
        return;
    }
    fprintf(f,
            "  %s%s %" PRIu64 " files scanned, %" PRIu64 " read (%s), %" PRIu64
            " new chunks (%s sent), %" PRIu64 " deleted, %" PRIu64
            " in snapshot, %s\n",
            m->rc == 0 ? m->name : "", m->rc == 0 ? ":" : "    ", s->scanned,
            s->files_read, agent_cli_bytes(s->bytes_read, b1, sizeof(b1)),
            s->chunks_sealed, agent_cli_bytes(s->bytes_sealed, b2, sizeof(b2)),
            s->deleted, s->entries, el);
    if (file_errors(s) > 0) {
        fprintf(f,
                "    %" PRIu64 " files not read: %" PRIu64 " vanished, %" PRIu64
                " permission, %" PRIu64 " I/O, %" PRIu64 " too large, %" PRIu64
                " other; %" PRIu64
                " scan errors (kept from the last snapshot)\n",
                s->file_errors, s->err_vanished, s->err_permission, s->err_io,
                s->err_too_large, s->err_other, s->scan_errors);
    }
    if (m->rc == 0 && s->mass_deletion) {
        fprintf(f,
                "    MASS DELETION: %" PRIu64 " of %" PRIu64
                " files vanished since the last run (more than %u%%). The "
                "snapshot is marked and the vaults hold the previous one "
                "until an admin releases it.\n",
                s->deleted, s->deleted + s->entries,
                run->mass_deletion_percent);
    }
}

void
agent_cli_text_end(FILE *f, const struct agent_cli_run *run,
                   const struct agent_uplink_report *vaults, size_t n_vaults,
                   const struct agent_cli_totals *t, int64_t elapsed_ms)
{
    char b1[32], b2[32], el[32];
    int code = agent_cli_exit_code(t);

    fprintf(f, "vaults (quorum %u of %zu):\n", run->quorum, n_vaults);
    for (size_t i = 0; i < n_vaults; i++) {
        const struct agent_uplink_report *r = &vaults[i];
        fprintf(f,
                "  %s: %s, %" PRIu64 " objects sent (%s), %" PRIu64
                " acknowledged, %" PRIu64 " already there, %" PRIu64
                " snapshots committed",
                r->name, agent_uplink_state_name((int)r->state),
                r->objects_sent, agent_cli_bytes(r->bytes_sent, b1, sizeof(b1)),
                r->objects_acked, r->objects_present, r->commits);
        if (r->state != AGENT_UPLINK_OK) {
            fprintf(f, " (%s)", r->message[0] != '\0' ? r->message : "-");
        }
        fputc('\n', f);
    }
    elapsed_text(elapsed_ms, el, sizeof(el));
    fprintf(f,
            "total: %" PRIu64 " mailboxes, %" PRIu64 " committed, %" PRIu64
            " failed; %" PRIu64 " files scanned, %" PRIu64
            " read (%s), %s sent, %" PRIu64 " deleted, %" PRIu64
            " file errors; %s\n",
            t->mailboxes, t->committed, t->failed, t->scanned, t->files_read,
            agent_cli_bytes(t->bytes_read, b1, sizeof(b1)),
            agent_cli_bytes(t->bytes_sent, b2, sizeof(b2)), t->deleted,
            t->file_errors + t->scan_errors, el);
    fprintf(f, "result: %d %s\n", code, agent_cli_exit_name(code));
}

/* ---- JSON --------------------------------------------------------------- */

static void
json_u64(FILE *f, const char *key, uint64_t v, bool comma)
{
    fprintf(f, "\"%s\":%" PRIu64 "%s", key, v, comma ? "," : "");
}

void
agent_cli_json_begin(FILE *f, const struct agent_cli_run *run)
{
    char when[32];
    iso_time(run->started_ms, when, sizeof(when));
    fputs("{\"command\":\"backup\",\"tenant\":", f);
    cfr_json_fput(f, run->tenant);
    fputs(",\"host\":", f);
    cfr_json_fput(f, run->host);
    fprintf(f, ",\"started\":\"%s\",\"started_ms\":%lld,\"mailboxes\":[", when,
            (long long)run->started_ms);
}

void
agent_cli_json_mailbox(FILE *f, const struct agent_cli_mailbox *m, bool first)
{
    const struct agent_backup_stats *s = m->stats;
    const char *status = m->skipped ? "skipped" : m->rc == 0 ? "ok" : "failed";

    fputs(first ? "\n{\"name\":" : ",\n{\"name\":", f);
    cfr_json_fput(f, m->name);
    fprintf(f, ",\"status\":\"%s\",\"error\":", status);
    if (m->rc != 0 || m->skipped) {
        cfr_json_fput(f, m->error != NULL ? m->error : "");
    } else {
        fputs("null", f);
    }
    fprintf(f, ",\"elapsed_ms\":%lld", (long long)m->elapsed_ms);
    if (s == NULL) {
        fputs(",\"mass_deletion\":false,\"snapshot\":null}", f);
        return;
    }
    fprintf(f, ",\"mass_deletion\":%s",
            m->rc == 0 && s->mass_deletion ? "true" : "false");
    fputs(",\"snapshot\":", f);
    if (m->rc == 0 && s->committed) {
        char hex[2 * CFR_ID_LEN + 1];
        fprintf(f, "\"%s\"", cfr_hex_encode(s->header_id, CFR_ID_LEN, hex));
    } else {
        fputs("null", f);
    }
    fputs(",\"files\":{", f);
    json_u64(f, "scanned", s->scanned, true);
    json_u64(f, "new", s->verdicts[0], true);
    json_u64(f, "changed", s->verdicts[1], true);
    json_u64(f, "unchanged", s->verdicts[2], true);
    json_u64(f, "renamed", s->verdicts[3], true);
    json_u64(f, "read", s->files_read, true);
    json_u64(f, "deleted", s->deleted, true);
    json_u64(f, "in_snapshot", s->entries, false);
    fputs("},\"bytes\":{", f);
    json_u64(f, "read", s->bytes_read, true);
    json_u64(f, "sent", s->bytes_sealed, true);
    json_u64(f, "in_snapshot", s->total_bytes, false);
    fputs("},\"chunks\":{", f);
    json_u64(f, "cut", s->chunks, true);
    json_u64(f, "new", s->chunks_sealed, true);
    json_u64(f, "present", s->chunks_present, true);
    json_u64(f, "repeated", s->chunks_dup, false);
    fputs("},\"errors\":{", f);
    json_u64(f, "files", s->file_errors, true);
    json_u64(f, "vanished", s->err_vanished, true);
    json_u64(f, "permission", s->err_permission, true);
    json_u64(f, "io", s->err_io, true);
    json_u64(f, "too_large", s->err_too_large, true);
    json_u64(f, "other", s->err_other, true);
    json_u64(f, "scan", s->scan_errors, false);
    fputs("}}", f);
}

void
agent_cli_json_end(FILE *f, const struct agent_cli_run *run,
                   const struct agent_uplink_report *vaults, size_t n_vaults,
                   const struct agent_cli_totals *t, int64_t elapsed_ms)
{
    int code = agent_cli_exit_code(t);
    fprintf(f, "\n],\"quorum\":%u,\"vaults\":[", run->quorum);
    for (size_t i = 0; i < n_vaults; i++) {
        const struct agent_uplink_report *r = &vaults[i];
        fputs(i == 0 ? "\n{\"name\":" : ",\n{\"name\":", f);
        cfr_json_fput(f, r->name);
        fprintf(f, ",\"state\":\"%s\",\"status\":%d,\"message\":",
                agent_uplink_state_name((int)r->state), r->status);
        cfr_json_fput(f, r->message);
        fputc(',', f);
        json_u64(f, "objects_sent", r->objects_sent, true);
        json_u64(f, "bytes_sent", r->bytes_sent, true);
        json_u64(f, "objects_acked", r->objects_acked, true);
        json_u64(f, "bytes_acked", r->bytes_acked, true);
        json_u64(f, "objects_present", r->objects_present, true);
        json_u64(f, "objects_unacked", r->objects_unacked, true);
        json_u64(f, "commits", r->commits, false);
        fputc('}', f);
    }
    fputs("\n],\"totals\":{", f);
    json_u64(f, "mailboxes", t->mailboxes, true);
    json_u64(f, "committed", t->committed, true);
    json_u64(f, "failed", t->failed, true);
    json_u64(f, "skipped", t->skipped, true);
    json_u64(f, "mass_deletion", t->mass_deletion, true);
    json_u64(f, "scanned", t->scanned, true);
    json_u64(f, "files_read", t->files_read, true);
    json_u64(f, "bytes_read", t->bytes_read, true);
    json_u64(f, "chunks_new", t->chunks_new, true);
    json_u64(f, "bytes_sent", t->bytes_sent, true);
    json_u64(f, "deleted", t->deleted, true);
    json_u64(f, "file_errors", t->file_errors + t->scan_errors, true);
    json_u64(f, "vaults", t->vaults, true);
    json_u64(f, "vaults_ok", t->vaults_ok, false);
    fprintf(f, "},\"elapsed_ms\":%lld,\"exit_code\":%d,\"result\":\"%s\"}\n",
            (long long)elapsed_ms, code, agent_cli_exit_name(code));
}

/* ---- progress ----------------------------------------------------------- */

const char *
agent_cli_progress_line(const struct agent_cli_progress *p, size_t width,
                        char *out, size_t n)
{
    char which[32], b[32], rate[32], el[32], tail[160];
    const char *name = p->mailbox != NULL ? p->mailbox : "";
    size_t name_len = strlen(name), room;
    uint64_t per_s =
        p->elapsed_ms > 0 ? p->bytes_sent * 1000 / (uint64_t)p->elapsed_ms : 0;

    if (n == 0) {
        return out;
    }
    if (p->total > 0) {
        snprintf(which, sizeof(which), "[%zu/%zu]", p->index, p->total);
    } else {
        snprintf(which, sizeof(which), "[%zu]", p->index);
    }
    elapsed_text(p->elapsed_ms, el, sizeof(el));
    agent_cli_bytes(per_s, rate, sizeof(rate));
    snprintf(tail, sizeof(tail),
             " %" PRIu64 " chunks checked, %" PRIu64 " sent (%s, %s/s) %s",
             p->ids_checked, p->objects_sent,
             agent_cli_bytes(p->bytes_sent, b, sizeof(b)), rate, el);
    if (width < 20) {
        width = 20;
    }
    if (width > n) {
        width = n;
    }
    /* The counters matter more than the whole name: shorten the name. */
    room = width - 1;
    size_t fixed = strlen(which) + 1 + strlen(tail);
    size_t avail = fixed < room ? room - fixed : 0;
    if (name_len <= avail) {
        snprintf(out, n, "%s %s%s", which, name, tail);
    } else if (avail > 3) {
        snprintf(out, n, "%s %.*s...%s", which, (int)(avail - 3), name, tail);
    } else {
        snprintf(out, n, "%s%s", which, tail);
    }
    if (strlen(out) > room) {
        out[room] = '\0';
    }
    return out;
}
