/*
 * clock.h - wall and monotonic time that tests can move.
 *
 * Code that makes decisions on time (retention windows, leases, lockouts,
 * audit expiry, TOTP) reads it through a struct cfr_clock instead of calling
 * time(2), so a test can jump 30 days in a line. Three kinds:
 *   - system: the real clock;
 *   - offset: the real clock plus a fixed offset (the vault's test-only
 *     option, which it logs loudly);
 *   - manual: stands still until cfr_clock_advance moves it.
 *
 * Times are signed milliseconds since the Unix epoch (wall) or since an
 * arbitrary origin (monotonic). Thread safety: all functions are safe to call
 * concurrently; advancing a manual clock is atomic.
 */
#ifndef CFR_CLOCK_H
#define CFR_CLOCK_H

#include <stdint.h>

struct cfr_clock;

#define CFR_MS_PER_SEC  INT64_C(1000)
#define CFR_MS_PER_HOUR (INT64_C(3600) * CFR_MS_PER_SEC)
#define CFR_MS_PER_DAY  (INT64_C(24) * CFR_MS_PER_HOUR)

/* The shared real clock; never freed. */
struct cfr_clock *cfr_clock_system(void);
/* Returns owned; NULL on allocation failure. */
struct cfr_clock *cfr_clock_offset_new(int64_t offset_ms);
/* Returns owned; starts at start_ms wall time. */
struct cfr_clock *cfr_clock_manual_new(int64_t start_ms);
/* Accepts NULL and the system clock (ignored). */
void cfr_clock_free(struct cfr_clock *clock);

int64_t cfr_clock_now_ms(const struct cfr_clock *clock);
int64_t cfr_clock_mono_ms(const struct cfr_clock *clock);

/* Moves a manual or offset clock forward (or back, with a negative delta). */
void cfr_clock_advance(struct cfr_clock *clock, int64_t delta_ms);

/* Formats wall time as RFC 3339 UTC ("2026-11-23T08:30:00Z") into out. */
const char *cfr_clock_format(int64_t ms, char *out, int out_size);

#endif /* CFR_CLOCK_H */
