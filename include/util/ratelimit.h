/*
 * Rate limiting in time slices.
 *
 * Time is cut into slices (100 ms for block jobs).  Each slice has a
 * quota of units (bytes) that may be dispatched in it: speed * slice
 * length, at least one.  A request is let through as long as the slice's
 * quota is not used up, so the last request of a slice may overshoot it;
 * then the caller waits until the slice ends and a new one begins.  Over
 * many slices the rate converges on the limit, and a request larger than
 * a whole quota still proceeds (alone in its slice) instead of blocking
 * for ever.
 *
 * All times are in nanoseconds on a monotonic clock the caller chooses
 * (the functions take "now" so that tests can drive them).
 */
#ifndef UTIL_RATELIMIT_H
#define UTIL_RATELIMIT_H

#include "util/osdep.h"

#define RATELIMIT_SLICE_NS  (100 * 1000 * 1000LL)

typedef struct RateLimit {
    uint64_t slice_quota;       /* units per slice; 0: no limit */
    int64_t slice_ns;           /* length of a slice */
    int64_t slice_end;          /* end of the current slice */
    uint64_t dispatched;        /* units dispatched in the current slice */
} RateLimit;

/*
 * ratelimit_set_speed:
 * @speed: units per second, 0 for no limit
 * @slice_ns: length of a slice
 *
 * Change the limit; the current slice keeps what it has dispatched.
 */
void ratelimit_set_speed(RateLimit *limit, uint64_t speed, int64_t slice_ns);

/*
 * ratelimit_calculate_delay:
 * @n: units the caller is about to dispatch (0 just asks)
 * @now: the current time
 *
 * Returns 0 and accounts @n if the caller may go ahead now, else the
 * number of nanoseconds until the current slice ends (nothing is
 * accounted then: ask again after waiting).
 */
int64_t ratelimit_calculate_delay(RateLimit *limit, uint64_t n, int64_t now);

/* The monotonic clock the daemon uses for rate limits and job sleeps. */
int64_t clock_now_ns(void);

#endif /* UTIL_RATELIMIT_H */
