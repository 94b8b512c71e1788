/*
 * select.c - the --at time expressions and the choice of one snapshot
 * (select.h).
 *
 * Invariants:
 *  1. A time is parsed whole or refused: no trailing bytes, no field out
 *     of its range (month 13, 31 April, 25:00), no value that does not
 *     fit between the epoch and the end of year 9999; every sum is
 *     checked before it is made, so no input can overflow.
 *  2. The snapshot chosen is exactly the one the rule names; when it does
 *     not open the call fails, and no other snapshot is tried instead.
 */
#include "select.h"

#include <stdio.h>  /* snprintf */
#include <string.h> /* strlen, strcmp, memcmp */

#include "browse.h"  /* restore_safe_text */
#include "buf.h"     /* cfr_hex_encode */
#include "mem.h"     /* cfr_free */
#include "session.h" /* restore_iso_time */

#define ID_LEN 32
/* 9999-12-31T23:59:59.999Z: beyond it ISO dates need five digits. */
#define AT_MAX_MS INT64_C(253402300799999)
#define MS_SEC    INT64_C(1000)
#define MS_MIN    (INT64_C(60) * MS_SEC)
#define MS_HOUR   (INT64_C(60) * MS_MIN)
#define MS_DAY    (INT64_C(24) * MS_HOUR)

#define AT_FORMS                                                               \
    "accepted: 2026-11-20T10:30:00Z (also with .123, without seconds, or "     \
    "with a space for T), 2026-11-20 (end of that day, UTC), @SECONDS, "       \
    "now, or Nm/Nh/Nd/Nw [ago]"

/* Input and names in messages: terminal-safe, as ls prints them. */
static const char *
quoted(const char *s, char *out, size_t out_size)
{
    return restore_safe_text((const uint8_t *)s, strlen(s), out, out_size);
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Exactly n digits at *p into *v; advances *p. */
static bool
digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit((*p)[i])) {
            return false;
        }
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int y, int m, int d)
{
    int64_t yy = (int64_t)y - (m <= 2);
    int64_t era = yy / 400; /* yy >= 1969 here: no negative division */
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/*
 * A calendar time. Each form names a span (a day, a minute, a second, a
 * millisecond) and means its last millisecond: "at 10:30" includes a
 * snapshot received at 10:30:27, as "at 2026-11-20" includes the whole day.
 */
static bool
parse_date(const char *s, int64_t *ms_r)
{
    const char *p = s;
    int y, mo, d, h = 23, mi = 59, sec = 59, frac = 999;
    int64_t ms;

    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) ||
        *p++ != '-' || !digits(&p, 2, &d)) {
        return false;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) {
        return false;
    }
    if (*p == 'T' || *p == ' ') {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi)) {
            return false;
        }
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec)) {
                return false;
            }
            if (*p == '.') {
                /* 1..9 digits; milliseconds kept, the rest cut off. */
                int n = 0, v = 0;
                p++;
                while (is_digit(*p) && n < 9) {
                    if (n < 3) {
                        v = v * 10 + (*p - '0');
                    }
                    n++;
                    p++;
                }
                if (n == 0) {
                    return false;
                }
                for (int i = n; i < 3; i++) {
                    v *= 10;
                }
                /* fewer than 3 digits still name a span: ".5" is
                 * .500 to .599 */
                if (n < 3) {
                    int span = n == 1 ? 99 : 9;
                    v += span;
                }
                frac = v;
            }
        }
        if (h > 23 || mi > 59 || sec > 59) {
            return false;
        }
        if (*p == 'Z') {
            p++;
        }
    }
    if (*p != '\0') {
        return false;
    }
    ms = days_from_civil(y, mo, d) * MS_DAY + h * MS_HOUR + mi * MS_MIN +
         sec * MS_SEC + frac;
    if (ms < 0 || ms > AT_MAX_MS) {
        return false;
    }
    *ms_r = ms;
    return true;
}

/* 1..15 digits into *v (far below INT64_MAX / MS_DAY); advances *p. */
static bool
number(const char **p, int64_t *v)
{
    int64_t x = 0;
    int n = 0;
    while (is_digit(**p)) {
        if (++n > 15) {
            return false;
        }
        x = x * 10 + (**p - '0');
        (*p)++;
    }
    *v = x;
    return n > 0;
}

int
restore_parse_at(const char *s, int64_t now_ms, int64_t *ms_r,
                 struct cfr_err *err)
{
    char q[96];
    const char *p;
    int64_t v, unit, ms;

    if (s == NULL || s[0] == '\0') {
        return CFR_ERR(err, CFR_EINVAL, "--at: empty time; " AT_FORMS);
    }
    if (strcmp(s, "now") == 0) {
        if (now_ms < 0 || now_ms > AT_MAX_MS) {
            return CFR_ERR(err, CFR_EINVAL, "--at: the clock is out of range");
        }
        *ms_r = now_ms;
        return 0;
    }
    if (s[0] == '@') {
        p = s + 1;
        /* seconds: 12 digits reach past year 9999, checked below */
        if (!number(&p, &v) || *p != '\0' || v > AT_MAX_MS / MS_SEC) {
            return CFR_ERR(err, CFR_EINVAL,
                           "--at %s: not seconds since the epoch between 0 "
                           "and year 9999; " AT_FORMS,
                           quoted(s, q, sizeof(q)));
        }
        *ms_r = v * MS_SEC + 999; /* that whole second */
        return 0;
    }
    if (is_digit(s[0]) && strlen(s) >= 10 && s[4] == '-') {
        if (!parse_date(s, &ms)) {
            return CFR_ERR(err, CFR_EINVAL,
                           "--at %s: not a valid UTC date and time; " AT_FORMS,
                           quoted(s, q, sizeof(q)));
        }
        *ms_r = ms;
        return 0;
    }
    p = s;
    if (!number(&p, &v)) {
        return CFR_ERR(err, CFR_EINVAL, "--at %s: not a time; " AT_FORMS,
                       quoted(s, q, sizeof(q)));
    }
    switch (*p) {
    case 'm':
        unit = MS_MIN;
        break;
    case 'h':
        unit = MS_HOUR;
        break;
    case 'd':
        unit = MS_DAY;
        break;
    case 'w':
        unit = 7 * MS_DAY;
        break;
    default:
        return CFR_ERR(err, CFR_EINVAL,
                       "--at %s: a relative time needs a unit m, h, d or w; "
                       "" AT_FORMS,
                       quoted(s, q, sizeof(q)));
    }
    p++;
    if (strcmp(p, "") != 0 && strcmp(p, " ago") != 0) {
        return CFR_ERR(err, CFR_EINVAL, "--at %s: not a time; " AT_FORMS,
                       quoted(s, q, sizeof(q)));
    }
    /* v < 10^15 and unit <= 6.1e8: v * unit could still overflow, so
     * compare by division first. */
    if (now_ms < 0 || now_ms > AT_MAX_MS || v > now_ms / unit) {
        return CFR_ERR(err, CFR_EINVAL,
                       "--at %s: reaches before 1970-01-01; " AT_FORMS,
                       quoted(s, q, sizeof(q)));
    }
    *ms_r = now_ms - v * unit;
    return 0;
}

/* ---- picking ------------------------------------------------------------ */

static enum restore_failure
list_failure(int rc)
{
    return rc == CFR_ENOMEM                           ? RESTORE_F_OTHER
           : rc == CFR_ECORRUPT || rc == CFR_EVERSION ? RESTORE_F_VERIFY
                                                      : RESTORE_F_VAULT;
}

/* hex: 8..64 hex digits, any case. */
static bool
hex_prefix_ok(const char *hex)
{
    size_t n = strlen(hex);
    if (n < 8 || n > 2 * ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = hex[i];
        if (!is_digit(c) && !(c >= 'a' && c <= 'f') &&
            !(c >= 'A' && c <= 'F')) {
            return false;
        }
    }
    return true;
}

static bool
hex_prefix_match(const char *prefix, const uint8_t id[ID_LEN])
{
    char hex[2 * ID_LEN + 1];
    cfr_hex_encode(id, ID_LEN, hex);
    for (size_t i = 0; prefix[i] != '\0'; i++) {
        char c = prefix[i];
        if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != hex[i]) {
            return false;
        }
    }
    return true;
}

/* No snapshot of the mailbox: a wrong key, or none was ever made. */
static int
none_found(struct restore_fetcher *f, const struct cfr_keyring *kr,
           const char *mailbox, enum restore_failure *kind, struct cfr_err *err)
{
    struct restore_snapshot *all = NULL;
    size_t n_all = 0, n_bad = 0;
    char q[128];

    /* A wrong key names the mailbox by another ID, so nothing matches. */
    if (restore_list(f, kr, NULL, &all, &n_all, NULL) == 0) {
        for (size_t i = 0; i < n_all; i++) {
            n_bad += all[i].open_rc != 0;
        }
    }
    cfr_free(all);
    if (n_all > 0 && n_bad == n_all) {
        *kind = RESTORE_F_VERIFY;
        return CFR_ERR(err, CFR_EAUTH,
                       "none of the tenant's %zu snapshots opens with this "
                       "key: wrong key file?",
                       n_all);
    }
    *kind = RESTORE_F_NOTFOUND;
    return CFR_ERR(err, CFR_ENOTFOUND, "no snapshot of mailbox %s",
                   quoted(mailbox, q, sizeof(q)));
}

int
restore_pick_snapshot(struct restore_fetcher *f, const struct cfr_keyring *kr,
                      const struct restore_pick *p,
                      struct restore_snapshot *out,
                      enum restore_failure *failure_r, struct cfr_err *err)
{
    struct restore_snapshot *v = NULL;
    enum restore_failure kind = RESTORE_F_NONE;
    const struct restore_snapshot *chosen = NULL;
    char hex[2 * ID_LEN + 1], when[32], q[128];
    size_t n = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (p == NULL || p->mailbox == NULL || p->mailbox[0] == '\0') {
        kind = RESTORE_F_OTHER;
        rc = CFR_ERR(err, CFR_EINVAL, "select: a mailbox is needed");
        goto out;
    }
    if (p->snapshot_hex != NULL) {
        if (!hex_prefix_ok(p->snapshot_hex)) {
            kind = RESTORE_F_OTHER;
            rc = CFR_ERR(err, CFR_EINVAL,
                         "--snapshot %s: 8 to 64 hex digits of a snapshot ID",
                         quoted(p->snapshot_hex, q, sizeof(q)));
            goto out;
        }
        if (p->at_ms != RESTORE_AT_NEWEST) {
            kind = RESTORE_F_OTHER;
            rc = CFR_ERR(err, CFR_EINVAL,
                         "--snapshot and --at exclude each other");
            goto out;
        }
    }
    if ((rc = restore_list(f, kr, p->mailbox, &v, &n, err)) != 0) {
        kind = list_failure(rc);
        goto out;
    }
    if (n == 0) {
        rc = none_found(f, kr, p->mailbox, &kind, err);
        goto out;
    }
    if (p->snapshot_hex != NULL) {
        size_t hits = 0;
        for (size_t i = 0; i < n; i++) {
            if (hex_prefix_match(p->snapshot_hex, v[i].header_id)) {
                hits++;
                chosen = &v[i];
            }
        }
        if (hits == 0) {
            kind = RESTORE_F_NOTFOUND;
            rc = CFR_ERR(err, CFR_ENOTFOUND,
                         "no snapshot %s of mailbox %s (see snapshots)",
                         quoted(p->snapshot_hex, hex, sizeof(hex)),
                         quoted(p->mailbox, q, sizeof(q)));
            goto out;
        }
        if (hits > 1) {
            kind = RESTORE_F_OTHER;
            rc = CFR_ERR(err, CFR_EINVAL,
                         "--snapshot %s names %zu snapshots: give more digits",
                         quoted(p->snapshot_hex, hex, sizeof(hex)), hits);
            goto out;
        }
    } else {
        /* v is newest first: the first at or before at_ms. */
        for (size_t i = 0; i < n && chosen == NULL; i++) {
            if (v[i].received_ms <= p->at_ms) {
                chosen = &v[i];
            }
        }
        if (chosen == NULL) {
            kind = RESTORE_F_NOTFOUND;
            rc = CFR_ERR(err, CFR_ENOTFOUND,
                         "no snapshot of mailbox %s at or before %s: the "
                         "oldest was received %s",
                         quoted(p->mailbox, q, sizeof(q)),
                         restore_iso_time(p->at_ms, hex),
                         restore_iso_time(v[n - 1].received_ms, when));
            goto out;
        }
    }
    *out = *chosen;
    if (chosen->open_rc != 0) {
        kind = RESTORE_F_VERIFY;
        rc = CFR_ERR(err, chosen->open_rc,
                     "snapshot %s (received %s) does not open (%s): wrong "
                     "key, or damaged or forged by the vault; no other one "
                     "is used in its place",
                     cfr_hex_encode(chosen->header_id, ID_LEN, hex),
                     restore_iso_time(chosen->received_ms, when),
                     cfr_code_name(chosen->open_rc));
        goto out;
    }
    rc = 0;
out:
    if (failure_r != NULL) {
        *failure_r = rc == 0 ? RESTORE_F_NONE : kind;
    }
    cfr_free(v);
    return rc;
}
