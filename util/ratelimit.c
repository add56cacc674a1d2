/*
 * Rate limiting by paid-until time; see include/util/ratelimit.h for the
 * model and why it replaced fixed slices (a slice let a whole request
 * through and then forgot its overshoot, so 1 MiB requests in 100 ms
 * slices could not go slower than 10 MiB/s).
 */
#include "util/ratelimit.h"

#define NS_PER_SECOND 1000000000ULL

void ratelimit_set_speed(RateLimit *limit, uint64_t speed)
{
    limit->speed = speed;
    limit->paid_until = 0;
}

void ratelimit_account(RateLimit *limit, uint64_t n)
{
    unsigned __int128 cost_ns;

    if (limit->speed == 0) {
        return;
    }
    /* Round up, so that many small charges never add up to less. */
    cost_ns = ((unsigned __int128)n * NS_PER_SECOND + limit->speed - 1) /
              limit->speed;
    if (cost_ns > (unsigned __int128)(INT64_MAX - limit->paid_until)) {
        limit->paid_until = INT64_MAX;
    } else {
        limit->paid_until += (int64_t)cost_ns;
    }
}

int64_t ratelimit_delay(RateLimit *limit, int64_t now)
{
    if (limit->speed == 0) {
        return 0;
    }
    if (limit->paid_until <= now) {
        limit->paid_until = now;
        return 0;
    }
    return limit->paid_until - now;
}

void ratelimit_charge(RateLimit *limit, uint64_t n, int64_t now)
{
    ratelimit_delay(limit, now);        /* idle time earns no credit */
    ratelimit_account(limit, n);
}

int64_t ratelimit_calculate_delay(RateLimit *limit, uint64_t n, int64_t now)
{
    int64_t delay = ratelimit_delay(limit, now);

    if (delay == 0) {
        ratelimit_account(limit, n);
    }
    return delay;
}

int64_t clock_now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}
