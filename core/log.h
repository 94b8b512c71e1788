/*
 * log.h - structured logging: a stable event name plus key=value fields.
 *
 *   cfr_log(CFR_LOG_WARN, "vault.gc", "tenant=%s swept=%zu", t, n);
 *
 * prints one line to the sink (stderr by default, which journald captures):
 *
 *   2026-11-23T08:30:00.123Z WARN vault.gc tenant=acme swept=12
 *
 * Event names are part of the interface (alerts match on them) and do not
 * change. Values that may contain spaces or come from outside go through
 * cfr_log_quote(). No key, passphrase or plaintext is ever passed here:
 * struct cfr_key has no printable form, and a test greps logs for key bytes.
 *
 * Thread safety: cfr_log may be called from any thread; each line is written
 * with a single write(2). Set the level and sink before starting threads.
 */
#ifndef CFR_LOG_H
#define CFR_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h" /* struct cfr_err, for cfr_log_err */

enum cfr_log_level {
    CFR_LOG_DEBUG = 0,
    CFR_LOG_INFO = 1,
    CFR_LOG_WARN = 2,
    CFR_LOG_ERROR = 3,
    CFR_LOG_OFF = 4,
};

/* Receives each formatted line, without the trailing newline. */
typedef void cfr_log_sink_fn(void *ctx, enum cfr_log_level level,
                             const char *line, size_t len);

void cfr_log_set_level(enum cfr_log_level level);
enum cfr_log_level cfr_log_get_level(void);
bool cfr_log_enabled(enum cfr_log_level level);

/* Replaces the sink; NULL restores stderr. */
void cfr_log_set_sink(cfr_log_sink_fn *sink, void *ctx);

/* Parses "debug", "info", "warn", "error", "off". Returns 0 or CFR_EINVAL. */
int cfr_log_level_parse(const char *name, enum cfr_log_level *level_r);

void cfr_log(enum cfr_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs an error record as `code=... msg=... at=file:line` under event. */
void cfr_log_err(enum cfr_log_level level, const char *event,
                 const struct cfr_err *err);

/*
 * Writes value into out as a log-safe token: unchanged if it holds only
 * [A-Za-z0-9._:/@+-], otherwise double-quoted with ", \ and control bytes
 * escaped (\n, \xNN). Always NUL-terminates; truncates with "..." when out is
 * too small. Returns out, so it can sit inside a cfr_log argument list.
 */
const char *cfr_log_quote(const char *value, char *out, size_t out_size);

#endif /* CFR_LOG_H */
