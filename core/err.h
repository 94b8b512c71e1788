/*
 * err.h - error codes and the caller-owned error record.
 *
 * Every fallible function in libcoffer returns 0 on success or a negative
 * enum cfr_code, and fills a caller-owned struct cfr_err with the detail: the
 * code, the errno seen (if any), a message and the file:line that raised it.
 * The codes are part of the program's interface (exit codes and JSON reports
 * derive from them) and are never renumbered; retired codes stay reserved.
 *
 * Thread safety: a struct cfr_err belongs to one thread at a time.
 */
#ifndef CFR_ERR_H
#define CFR_ERR_H

#include <stddef.h> /* size_t */

enum cfr_code {
    CFR_OK = 0,
    CFR_EINVAL = -1,   /* a caller passed something invalid */
    CFR_EIO = -2,      /* the operating system refused or failed */
    CFR_ENOMEM = -3,   /* allocation failed */
    CFR_ECORRUPT = -4, /* stored or received bytes fail a check */
    CFR_EAUTH = -5,    /* authentication failed (wrong key, bad tag) */
    CFR_ELIMIT = -6,   /* a size or rate limit was exceeded */
    CFR_ENOTFOUND = -7,
    CFR_EEXIST = -8,
    CFR_EVERSION = -9,   /* a format version this build does not know */
    CFR_EDENIED = -10,   /* authorization refused */
    CFR_ECONFIG = -11,   /* configuration is invalid */
    CFR_EUNAVAIL = -12,  /* a peer could not be reached */
    CFR_EINTERNAL = -13, /* a bug: an invariant did not hold */
};

#define CFR_ERR_MSG_MAX 256

struct cfr_err {
    int code;      /* enum cfr_code, 0 when no error was recorded */
    int sys_errno; /* errno at the failure, 0 when not a system error */
    const char *file;
    int line;
    char msg[CFR_ERR_MSG_MAX];
};

/* Clears an error record; a NULL err is ignored. */
void cfr_err_clear(struct cfr_err *err);

/*
 * Records an error and returns its code, so callers can write
 * `return CFR_ERR(err, CFR_ECORRUPT, "chunk %s: bad tag", hex);`.
 * A NULL err is allowed: the code is still returned.
 */
int cfr_err_set(struct cfr_err *err, int code, int sys_errno, const char *file,
                int line, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define CFR_ERR(err, code, ...)                                                \
    cfr_err_set((err), (code), 0, __FILE__, __LINE__, __VA_ARGS__)
/* As CFR_ERR, appending strerror(errno) and keeping errno in the record. */
#define CFR_ERR_ERRNO(err, code, ...)                                          \
    cfr_err_set((err), (code), errno, __FILE__, __LINE__, __VA_ARGS__)

/* A short stable name for a code ("corrupt", "auth", ...). */
const char *cfr_code_name(int code);

/*
 * Bugs stop the program even in release builds; hostile input never reaches
 * these, it gets an error instead.
 */
void cfr_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));
#define CFR_ASSERT(x)                                                          \
    do {                                                                       \
        if (!(x)) {                                                            \
            cfr_assert_fail(#x, __FILE__, __LINE__);                           \
        }                                                                      \
    } while (0)

#endif /* CFR_ERR_H */
