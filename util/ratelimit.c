/*
 * Rate limiting in time slices; see include/util/ratelimit.h for the
 * model.  A slice starts lazily, at the first request after the previous
 * one ended, so an idle limiter accumulates no credit.
 */
#include "util/ratelimit.h"

void ratelimit_set_speed(RateLimit *limit, uint64_t speed, int64_t slice_ns)
{
    g_assert(slice_ns > 0);
    limit->slice_ns = slice_ns;
    if (speed == 0) {
        limit->slice_quota = 0;
        return;
    }
    /* speed * slice_ns / 1e9 without overflow for any speed. */
    limit->slice_quota = MAX((uint64_t)((double)speed * slice_ns / 1e9), 1);
}

int64_t ratelimit_calculate_delay(RateLimit *limit, uint64_t n, int64_t now)
{
    if (limit->slice_quota == 0) {
        return 0;
    }
    if (now >= limit->slice_end) {
        limit->slice_end = now + limit->slice_ns;
        limit->dispatched = 0;
    }
    if (limit->dispatched < limit->slice_quota) {
        limit->dispatched += n;
        return 0;
    }
    return limit->slice_end - now;
}

int64_t clock_now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}
