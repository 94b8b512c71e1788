/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * Every buffer that grows from outside input declares the most it may ever
 * hold (curl's dynbuf rule), so a hostile peer gets CFR_ELIMIT, not an
 * out-of-memory kill. The struct is public so callers can embed it; treat
 * its fields as read-only outside buf.c.
 *
 * Thread safety: none; one owner at a time.
 */
#ifndef CFR_BUF_H
#define CFR_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

struct cfr_buf {
    uint8_t *data;
    size_t len;
    size_t alloc;
    size_t cap; /* the most len may reach */
};

void cfr_buf_init(struct cfr_buf *b, size_t cap);
/* Frees the storage; the buffer is empty and reusable afterwards. */
void cfr_buf_fini(struct cfr_buf *b);
void cfr_buf_reset(struct cfr_buf *b); /* len = 0, storage kept */

/* Makes room for extra more bytes. CFR_ELIMIT past the cap, CFR_ENOMEM. */
int cfr_buf_reserve(struct cfr_buf *b, size_t extra, struct cfr_err *err);
int cfr_buf_append(struct cfr_buf *b, const void *p, size_t n,
                   struct cfr_err *err);
int cfr_buf_append_u8(struct cfr_buf *b, uint8_t v, struct cfr_err *err);
int cfr_buf_append_le32(struct cfr_buf *b, uint32_t v, struct cfr_err *err);
int cfr_buf_append_le64(struct cfr_buf *b, uint64_t v, struct cfr_err *err);

/* Takes the storage out of the buffer; the caller frees it with cfr_free. */
uint8_t *cfr_buf_steal(struct cfr_buf *b, size_t *len_r);

/* Little-endian helpers for fixed-layout formats. */
static inline void
cfr_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t
cfr_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline void
cfr_put_le64(uint8_t *p, uint64_t v)
{
    cfr_put_le32(p, (uint32_t)v);
    cfr_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t
cfr_get_le64(const uint8_t *p)
{
    return (uint64_t)cfr_get_le32(p) | (uint64_t)cfr_get_le32(p + 4) << 32;
}

/*
 * Hex encoding: out needs 2 * n + 1 bytes. cfr_hex_decode returns 0, or
 * CFR_EINVAL when hex is not exactly 2 * n hex digits.
 */
char *cfr_hex_encode(const uint8_t *p, size_t n, char *out);
int cfr_hex_decode(const char *hex, uint8_t *out, size_t n);

#endif /* CFR_BUF_H */
