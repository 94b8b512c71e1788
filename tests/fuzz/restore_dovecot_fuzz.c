/*
 * restore_dovecot_fuzz.c - the dovecot-uidlist parser and rewriter
 * (restore/dovecot.h) under hostile bytes.
 *
 * The input is a uidlist; the files present are derived from it: every
 * line's text after its first ':' (so many names match a record) plus two
 * fixed names, with mtimes from the line number. Any outcome but a crash,
 * a leak or a sanitizer report is fine; when the rewrite succeeds its
 * output must parse again, and rewriting that must change nothing (the
 * fix-up is idempotent, which restore_dovecot_finish relies on).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "dovecot.h"
#include "err.h"
#include "mem.h"

#define FILES_MAX    64
#define NAME_MAX_LEN 255

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char names[FILES_MAX][NAME_MAX_LEN + 1];
    struct restore_dovecot_file files[FILES_MAX];
    size_t n = 0;
    struct cfr_buf out, again;
    struct cfr_err err;

    memcpy(names[n], "fixed.A", 8);
    files[n].name = names[n];
    files[n].mtime_ns = 5;
    n++;
    memcpy(names[n], "fixed.B:2,S", 12);
    files[n].name = names[n];
    files[n].mtime_ns = 5;
    n++;
    for (size_t i = 0, line = 0; i < size && n < FILES_MAX; line++) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t end = nl != NULL ? (size_t)(nl - data) : size;
        const uint8_t *c = memchr(data + i, ':', end - i);

        if (c != NULL) {
            size_t len = end - (size_t)(c + 1 - data);

            if (len > 0 && len <= NAME_MAX_LEN &&
                memchr(c + 1, '\0', len) == NULL) {
                memcpy(names[n], c + 1, len);
                names[n][len] = '\0';
                files[n].name = names[n];
                files[n].mtime_ns = (int64_t)(line % 3);
                n++;
            }
        }
        i = end + 1;
    }
    cfr_buf_init(&out, 4 * RESTORE_DOVECOT_UIDLIST_MAX);
    cfr_buf_init(&again, 4 * RESTORE_DOVECOT_UIDLIST_MAX);
    if (restore_dovecot_rewrite(data, size, files, n, &out, &err) == 0) {
        if (restore_dovecot_rewrite(out.data, out.len, files, n, &again,
                                    &err) != 0 ||
            again.len != out.len ||
            memcmp(again.data, out.data, out.len) != 0) {
            __builtin_trap();
        }
    }
    cfr_buf_fini(&out);
    cfr_buf_fini(&again);
    return 0;
}
