/*
 * test_files.c - see test_files.h.
 */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "test_files.h"

const char *
vec_path(const char *name)
{
    static char paths[4][4096];
    static unsigned next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", COFFER_VECTORS_DIR, name);
    return path;
}

void
read_file(const char *path, struct cfr_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("cannot open %s", path);
    }
    cfr_buf_init(b, 64u << 20);
    uint8_t tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        assert_int_equal(cfr_buf_append(b, tmp, n, NULL), 0);
    }
    fclose(f);
}

void
write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

void
vec_field(const char *file, const char *name, char *out, size_t out_size)
{
    FILE *f = fopen(vec_path(file), "r");
    assert_non_null(f);
    char line[1024];
    size_t nlen = strlen(name);
    bool found = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, name, nlen) == 0 && line[nlen] == ' ') {
            size_t vlen = strcspn(line + nlen + 1, "\n");
            assert_true(vlen < out_size);
            memcpy(out, line + nlen + 1, vlen);
            out[vlen] = '\0';
            found = true;
            break;
        }
    }
    fclose(f);
    if (!found) {
        fail_msg("vector field %s missing from %s", name, file);
    }
}

void
assert_hex(const uint8_t *p, size_t n, const char *hex)
{
    char got[256];
    assert_true(2 * n + 1 <= sizeof(got));
    cfr_hex_encode(p, n, got);
    assert_string_equal(got, hex);
}
