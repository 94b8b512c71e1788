/*
 * cfg.h - configuration files, read with libconfig.
 *
 * Coffer's daemons and tools read libconfig files (a well-kept Debian
 * parser; we write no parser of our own). This module adds what an operator
 * needs on top: every value is type- and range-checked, unknown settings are
 * refused (a typo must not silently fall back to a default), and each error
 * names the file, the line and the setting, e.g.
 *
 *   /etc/coffer/vault.conf:12: retention_window: "30x" is not a duration
 *
 * Paths use libconfig's syntax: "vault.listen", "peers.[0].region".
 * A NULL default makes a setting required.
 *
 * Thread safety: a loaded struct cfr_cfg is read-only and may be shared;
 * strings returned point into it and live until cfr_cfg_free.
 */
#ifndef CFR_CFG_H
#define CFR_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

struct cfr_cfg;

/* Returns owned, or NULL with CFR_ECONFIG (syntax) or CFR_EIO (open). */
struct cfr_cfg *cfr_cfg_load_file(const char *path, struct cfr_err *err);
/* As above from text; errors name "<string>" as the file. */
struct cfr_cfg *cfr_cfg_load_string(const char *text, struct cfr_err *err);
void cfr_cfg_free(struct cfr_cfg *cfg);

bool cfr_cfg_has(const struct cfr_cfg *cfg, const char *path);

/* *out borrows from cfg (or is def). Empty strings are refused. */
int cfr_cfg_string(const struct cfr_cfg *cfg, const char *path, const char *def,
                   const char **out, struct cfr_err *err);
int cfr_cfg_int(const struct cfr_cfg *cfg, const char *path, const int64_t *def,
                int64_t min, int64_t max, int64_t *out, struct cfr_err *err);
int cfr_cfg_bool(const struct cfr_cfg *cfg, const char *path, const bool *def,
                 bool *out, struct cfr_err *err);
/* A duration as a string ("30d", "1h30m", "250ms") or whole seconds. */
int cfr_cfg_duration_ms(const struct cfr_cfg *cfg, const char *path,
                        const char *def, int64_t min_ms, int64_t max_ms,
                        int64_t *out, struct cfr_err *err);
/* A size as a string ("64M", "1G", "4096") or an integer of bytes. */
int cfr_cfg_size(const struct cfr_cfg *cfg, const char *path, const char *def,
                 uint64_t min, uint64_t max, uint64_t *out,
                 struct cfr_err *err);

/*
 * Number of elements of a list or array at path (0 when absent); CFR_ECONFIG
 * if path is a scalar or group.
 */
int cfr_cfg_count(const struct cfr_cfg *cfg, const char *path, size_t *n_r,
                  struct cfr_err *err);
/* Element i of a list or array of strings; borrows from cfg. */
int cfr_cfg_string_at(const struct cfr_cfg *cfg, const char *path, size_t i,
                      const char **out, struct cfr_err *err);

/*
 * Refuses any member of the group at path ("" = the top level) whose name is
 * not in allowed (NULL-terminated). Absent groups pass.
 */
int cfr_cfg_check_keys(const struct cfr_cfg *cfg, const char *path,
                       const char *const *allowed, struct cfr_err *err);

/*
 * Records a CFR_ECONFIG error about the setting at path, located like the
 * module's own errors ("file:line: path: <message>"; without the line when
 * the setting is absent). For checks the caller makes on values it read.
 */
int cfr_cfg_fail(const struct cfr_cfg *cfg, const char *path,
                 struct cfr_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Reads the whole file a setting names (a PEM certificate chain or private
 * key; at most CFR_CFG_FILE_MAX bytes) as NUL-terminated text. Returns
 * owned text, or NULL with a CFR_ECONFIG error naming the setting and the
 * path (missing, unreadable, empty or too large). Free it with
 * cfr_cfg_free_file, which wipes it first: it may hold a private key.
 */
#define CFR_CFG_FILE_MAX ((size_t)1 << 20)
char *cfr_cfg_read_file(const char *path, const char *setting,
                        struct cfr_err *err);
/* Wipes and frees text from cfr_cfg_read_file; accepts NULL. */
void cfr_cfg_free_file(char *text);

/* Standalone parsers, shared with command-line flags. Return CFR_EINVAL. */
int cfr_parse_duration_ms(const char *s, int64_t *out);
int cfr_parse_size(const char *s, uint64_t *out);

#endif /* CFR_CFG_H */
