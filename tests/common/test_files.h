/*
 * test_files.h - file and test-vector helpers shared by the cmocka unit
 * tests. Each one fails the running test (cmocka) instead of returning an
 * error: a missing vector file is a broken test, not a case to handle.
 */
#ifndef COFFER_TEST_FILES_H
#define COFFER_TEST_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h" /* struct cfr_buf */

/* COFFER_VECTORS_DIR/name; the result stays valid for the next 3 calls. */
const char *vec_path(const char *name);

/* Reads a whole file (at most 64 MiB) into b, which this initialises. */
void read_file(const char *path, struct cfr_buf *b);

void write_file(const char *path, const uint8_t *p, size_t n);

/* Looks up "name value..." in a vectors text file; value is the rest of
 * the line. */
void vec_field(const char *file, const char *name, char *out, size_t out_size);

/* Fails unless p[0..n) is hex (lower case). */
void assert_hex(const uint8_t *p, size_t n, const char *hex);

#endif
