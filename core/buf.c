/*
 * buf.c - capped growable buffers and hex.
 *
 * Invariants:
 *  1. len <= alloc and len <= cap at all times.
 *  2. Growth doubles (bounded by cap), so appends are amortised O(1).
 */
#include "buf.h"

#include <string.h>

#include "mem.h" /* cfr_realloc */

void
cfr_buf_init(struct cfr_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void
cfr_buf_fini(struct cfr_buf *b)
{
    cfr_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void
cfr_buf_reset(struct cfr_buf *b)
{
    b->len = 0;
}

int
cfr_buf_reserve(struct cfr_buf *b, size_t extra, struct cfr_err *err)
{
    if (extra > b->cap || b->len > b->cap - extra) {
        return CFR_ERR(err, CFR_ELIMIT,
                       "buffer limit of %zu bytes exceeded (%zu + %zu)", b->cap,
                       b->len, extra);
    }
    size_t need = b->len + extra;
    if (need <= b->alloc) {
        return 0;
    }
    size_t grow = b->alloc < 256 ? 256 : b->alloc;
    size_t next = b->alloc + grow < b->alloc ? need : b->alloc + grow;
    if (next < need) {
        next = need;
    }
    if (next > b->cap) {
        next = b->cap;
    }
    uint8_t *p = cfr_realloc(b->data, next);
    if (p == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory growing buffer to %zu",
                       next);
    }
    b->data = p;
    b->alloc = next;
    return 0;
}

int
cfr_buf_append(struct cfr_buf *b, const void *p, size_t n, struct cfr_err *err)
{
    int rc = cfr_buf_reserve(b, n, err);
    if (rc != 0) {
        return rc;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return 0;
}

int
cfr_buf_append_u8(struct cfr_buf *b, uint8_t v, struct cfr_err *err)
{
    return cfr_buf_append(b, &v, 1, err);
}

int
cfr_buf_append_le32(struct cfr_buf *b, uint32_t v, struct cfr_err *err)
{
    uint8_t p[4];
    cfr_put_le32(p, v);
    return cfr_buf_append(b, p, sizeof(p), err);
}

int
cfr_buf_append_le64(struct cfr_buf *b, uint64_t v, struct cfr_err *err)
{
    uint8_t p[8];
    cfr_put_le64(p, v);
    return cfr_buf_append(b, p, sizeof(p), err);
}

uint8_t *
cfr_buf_steal(struct cfr_buf *b, size_t *len_r)
{
    uint8_t *p = b->data;
    *len_r = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return p;
}

char *
cfr_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
cfr_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n) {
        return CFR_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return CFR_EINVAL;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
