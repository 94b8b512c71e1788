/*
 * log.c - structured log lines.
 *
 * Invariants:
 *  1. A line is formatted into a fixed stack buffer and written with one
 *     write(2), so concurrent lines never interleave mid-line.
 *  2. Formatting is skipped entirely below the level.
 *  3. Newlines inside a message cannot forge a second log line: any control
 *     byte in the formatted fields is replaced before writing.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static _Atomic int log_level = CFR_LOG_INFO;
static cfr_log_sink_fn *log_sink;
static void *log_sink_ctx;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void
cfr_log_set_level(enum cfr_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum cfr_log_level
cfr_log_get_level(void)
{
    return (enum cfr_log_level)atomic_load(&log_level);
}

bool
cfr_log_enabled(enum cfr_log_level level)
{
    return (int)level >= atomic_load(&log_level) && level < CFR_LOG_OFF;
}

void
cfr_log_set_sink(cfr_log_sink_fn *sink, void *ctx)
{
    log_sink = sink;
    log_sink_ctx = ctx;
}

int
cfr_log_level_parse(const char *name, enum cfr_log_level *level_r)
{
    static const struct {
        const char *name;
        enum cfr_log_level level;
    } names[] = {{"debug", CFR_LOG_DEBUG}, {"info", CFR_LOG_INFO},
                 {"warn", CFR_LOG_WARN},   {"warning", CFR_LOG_WARN},
                 {"error", CFR_LOG_ERROR}, {"off", CFR_LOG_OFF}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *level_r = names[i].level;
            return 0;
        }
    }
    return CFR_EINVAL;
}

static void
write_line(enum cfr_log_level level, char *line, size_t len)
{
    if (log_sink != NULL) {
        log_sink(log_sink_ctx, level, line, len);
        return;
    }
    line[len] = '\n';
    size_t off = 0;
    while (off < len + 1) {
        ssize_t n = write(STDERR_FILENO, line + off, len + 1 - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* Nowhere left to report a logging failure. */
        }
        off += (size_t)n;
    }
}

void
cfr_log(enum cfr_log_level level, const char *event, const char *fmt, ...)
{
    if (!cfr_log_enabled(level)) {
        return;
    }
    char line[LOG_LINE_MAX + 1];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(
        line, LOG_LINE_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
        tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level], event);
    if (n < 0) {
        return;
    }
    size_t head = (size_t)n < LOG_LINE_MAX ? (size_t)n : LOG_LINE_MAX - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + head, LOG_LINE_MAX - head, fmt, ap);
    va_end(ap);
    size_t len = head;
    if (m > 0) {
        len += (size_t)m < LOG_LINE_MAX - head ? (size_t)m
                                               : LOG_LINE_MAX - head - 1;
    }
    for (size_t i = head; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f) {
            line[i] = '?';
        }
    }
    write_line(level, line, len);
}

void
cfr_log_err(enum cfr_log_level level, const char *event,
            const struct cfr_err *err)
{
    char quoted[CFR_ERR_MSG_MAX * 4 + 3];
    cfr_log(level, event, "code=%s msg=%s at=%s:%d", cfr_code_name(err->code),
            cfr_log_quote(err->msg, quoted, sizeof(quoted)),
            err->file != NULL ? err->file : "?", err->line);
}

static bool
is_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("._:/@+-", c) != NULL;
}

const char *
cfr_log_quote(const char *value, char *out, size_t out_size)
{
    if (out_size == 0) {
        return out;
    }
    if (value == NULL) {
        value = "";
    }
    bool plain = value[0] != '\0';
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (!is_plain(*p)) {
            plain = false;
            break;
        }
    }
    size_t len = strlen(value);
    if (plain && len < out_size) {
        memcpy(out, value, len + 1);
        return out;
    }
    /* Reserve room for the closing quote, "..." and the NUL. */
    if (out_size < 6) {
        out[0] = '\0';
        return out;
    }
    size_t limit = out_size - 5;
    size_t o = 0;
    out[o++] = '"';
    const unsigned char *p = (const unsigned char *)value;
    for (; *p; p++) {
        char esc[5];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p == '\n') {
            esc[0] = '\\';
            esc[1] = 'n';
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", *p);
            n = 4;
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (o + n > limit) {
            break;
        }
        memcpy(out + o, esc, n);
        o += n;
    }
    if (*p != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}
