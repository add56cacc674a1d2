/*
 * Rate limiting by "paid-until" time.
 *
 * A limiter of @speed units per second keeps the time until which all the
 * work charged to it is paid for: charging n units moves that time
 * n / speed seconds on, counting from now if the limiter was idle (idle
 * time earns no credit).  Work may start only once everything charged
 * before it is paid for, so a request of any size goes through, and the one
 * after it waits exactly as long as the first one's size demands: the rate
 * holds at any request size, from one byte per second up.
 *
 * Sequential users (a job loop) ask ratelimit_delay() before each piece of
 * work: a 0 answer starts the piece, and ratelimit_account() charges it
 * once it is done, counting from its start (the time the piece took is
 * not idle time).  Parallel users (several copy tasks) charge before they
 * start, through ratelimit_calculate_delay(), so that tasks started
 * together are spaced out instead of all passing at once.
 *
 * All times are in nanoseconds on a monotonic clock the caller chooses
 * (the functions take "now" so that tests can drive them).
 */
#ifndef UTIL_RATELIMIT_H
#define UTIL_RATELIMIT_H

#include "util/osdep.h"

typedef struct RateLimit {
    uint64_t speed;             /* units per second; 0: no limit */
    int64_t paid_until;         /* all charged work is paid for by then */
} RateLimit;

/*
 * ratelimit_set_speed:
 * @speed: units per second, 0 for no limit
 *
 * Change the limit.  Work charged at the old speed is forgiven, so a job
 * that was sleeping off a slow limit may go on at once at the new one.
 */
void ratelimit_set_speed(RateLimit *limit, uint64_t speed);

/*
 * ratelimit_delay:
 * Returns the nanoseconds from @now until new work may start.  When that
 * is 0, the work starts at @now: time the limiter was idle before is not
 * credited.
 */
int64_t ratelimit_delay(RateLimit *limit, int64_t now);

/* Charge @n units for the work started at the last 0 ratelimit_delay(). */
void ratelimit_account(RateLimit *limit, uint64_t n);

/*
 * ratelimit_charge:
 * Charge @n units for work that started at @now without asking (it could
 * not wait): work that asks later waits until this is paid for too.
 */
void ratelimit_charge(RateLimit *limit, uint64_t n, int64_t now);

/*
 * ratelimit_calculate_delay:
 * @n: units the caller is about to dispatch
 * @now: the current time
 *
 * Returns 0 and charges @n if the caller may start now, else the
 * nanoseconds until it may (nothing is charged then: ask again after
 * waiting).
 */
int64_t ratelimit_calculate_delay(RateLimit *limit, uint64_t n, int64_t now);

/* The monotonic clock the daemon uses for rate limits and job sleeps. */
int64_t clock_now_ns(void);

#endif /* UTIL_RATELIMIT_H */
