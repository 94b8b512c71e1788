/*
 * err.c - the error record.
 *
 * Invariants:
 *  1. A recorded message is always NUL-terminated and truncated, never
 *     overflowing CFR_ERR_MSG_MAX.
 *  2. cfr_err_set never allocates, so it is safe on out-of-memory paths.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
cfr_err_clear(struct cfr_err *err)
{
    if (err == NULL) {
        return;
    }
    memset(err, 0, sizeof(*err));
}

int
cfr_err_set(struct cfr_err *err, int code, int sys_errno, const char *file,
            int line, const char *fmt, ...)
{
    if (err == NULL) {
        return code;
    }
    err->code = code;
    err->sys_errno = sys_errno;
    err->file = file;
    err->line = line;

    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        err->msg[0] = '\0';
        n = 0;
    }
    if (sys_errno != 0 && (size_t)n < sizeof(err->msg)) {
        char sysbuf[128];
        const char *s = strerror_r(sys_errno, sysbuf, sizeof(sysbuf)) == 0
                            ? sysbuf
                            : "unknown error";
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", s);
    }
    return code;
}

const char *
cfr_code_name(int code)
{
    switch (code) {
    case CFR_OK:
        return "ok";
    case CFR_EINVAL:
        return "invalid";
    case CFR_EIO:
        return "io";
    case CFR_ENOMEM:
        return "nomem";
    case CFR_ECORRUPT:
        return "corrupt";
    case CFR_EAUTH:
        return "auth";
    case CFR_ELIMIT:
        return "limit";
    case CFR_ENOTFOUND:
        return "notfound";
    case CFR_EEXIST:
        return "exists";
    case CFR_EVERSION:
        return "version";
    case CFR_EDENIED:
        return "denied";
    case CFR_ECONFIG:
        return "config";
    case CFR_EUNAVAIL:
        return "unavailable";
    case CFR_EINTERNAL:
        return "internal";
    default:
        return "unknown";
    }
}

void
cfr_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "coffer: assertion failed: %s at %s:%d\n", expr, file,
            line);
    abort();
}
