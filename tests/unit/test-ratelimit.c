/*
 * Unit tests for the rate limiter (util/ratelimit.c).
 *
 * Time is simulated: a job loop (charge after each chunk) and a pool of
 * parallel copy tasks (charge before each chunk) run against the limiter
 * for ten simulated seconds, and the bytes they started must match the
 * limit within 5 %, for speeds from 1 MiB/s up and chunks up to 1 MiB.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/ratelimit.h"

#define MiB (1024 * 1024ULL)
#define MS (1000 * 1000LL)
#define SECOND (1000 * MS)
#define RUN_NS (10 * SECOND)

static const uint64_t speeds[] = { 1 * MiB, 3 * MiB, 10 * MiB, 64 * MiB,
                                   1024 * MiB };
static const uint64_t chunks[] = { 64 * 1024, 256 * 1024, 1 * MiB };

static void assert_within_5_percent(uint64_t bytes, uint64_t speed)
{
    double expected = (double)speed * RUN_NS / SECOND;

    if (bytes < expected * 0.95 || bytes > expected * 1.05) {
        g_error("%" PRIu64 " bytes in 10 s at %" PRIu64 " B/s: %.1f %% off",
                bytes, speed, (bytes / expected - 1) * 100);
    }
}

/*
 * A job loop: sleep as long as the limiter says, copy a chunk (taking
 * @copy_ns), charge it.  Returns the bytes whose copy started in the run.
 */
static uint64_t run_job_loop(uint64_t speed, uint64_t chunk, int64_t copy_ns)
{
    RateLimit rl = { 0 };
    uint64_t started = 0;
    int64_t t = 0;

    ratelimit_set_speed(&rl, speed);
    while (t < RUN_NS) {
        int64_t delay = ratelimit_delay(&rl, t);

        if (delay) {
            t += delay;
            continue;
        }
        started += chunk;
        t += copy_ns;
        ratelimit_account(&rl, chunk);
    }
    return started;
}

static void test_job_loop(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(speeds); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(chunks); j++) {
            /* Copies faster than the limit, so the limiter decides. */
            int64_t copy_ns = chunks[j] * SECOND / speeds[i] / 4;

            assert_within_5_percent(run_job_loop(speeds[i], chunks[j],
                                                 copy_ns), speeds[i]);
        }
    }
}

/*
 * @workers parallel tasks, each asking ratelimit_calculate_delay() before
 * a chunk that takes @copy_ns.  Returns the bytes started in the run.
 */
static uint64_t run_parallel(uint64_t speed, uint64_t chunk, int workers,
                             int64_t copy_ns)
{
    RateLimit rl = { 0 };
    g_autofree int64_t *ready = g_new0(int64_t, workers);
    uint64_t started = 0;

    ratelimit_set_speed(&rl, speed);
    for (;;) {
        int w = 0;
        int64_t delay;

        /* The worker that is ready first acts next. */
        for (int i = 1; i < workers; i++) {
            if (ready[i] < ready[w]) {
                w = i;
            }
        }
        if (ready[w] >= RUN_NS) {
            return started;
        }
        delay = ratelimit_calculate_delay(&rl, chunk, ready[w]);
        if (delay) {
            ready[w] += delay;
        } else {
            started += chunk;
            ready[w] += copy_ns;
        }
    }
}

static void test_parallel_tasks(void)
{
    const int workers = 64;

    for (size_t i = 0; i < G_N_ELEMENTS(speeds); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(chunks); j++) {
            /* Together the tasks could copy four times the limit. */
            int64_t copy_ns = chunks[j] * SECOND / speeds[i] * workers / 4;

            assert_within_5_percent(run_parallel(speeds[i], chunks[j],
                                                 workers, copy_ns),
                                    speeds[i]);
        }
    }
}

static void test_unlimited(void)
{
    RateLimit rl = { 0 };

    ratelimit_set_speed(&rl, 0);
    ratelimit_account(&rl, UINT64_MAX);
    g_assert_cmpint(ratelimit_delay(&rl, 5), ==, 0);
    g_assert_cmpint(ratelimit_calculate_delay(&rl, 1 << 30, 5), ==, 0);
}

static void test_exact_delay(void)
{
    RateLimit rl = { 0 };
    int64_t now = 7 * SECOND;

    ratelimit_set_speed(&rl, 1 * MiB);
    g_assert_cmpint(ratelimit_delay(&rl, now), ==, 0);
    /* Charges add up, counting from the start the limiter granted. */
    ratelimit_account(&rl, MiB / 2);
    ratelimit_account(&rl, MiB / 2);
    g_assert_cmpint(ratelimit_delay(&rl, now), ==, SECOND);
    g_assert_cmpint(ratelimit_delay(&rl, now + 400 * MS), ==, 600 * MS);
    /* Refused: nothing is charged. */
    g_assert_cmpint(ratelimit_calculate_delay(&rl, MiB, now), ==, SECOND);
    g_assert_cmpint(ratelimit_delay(&rl, now), ==, SECOND);
    /* Idle time earns no credit. */
    g_assert_cmpint(ratelimit_calculate_delay(&rl, MiB, now + 5 * SECOND),
                    ==, 0);
    g_assert_cmpint(ratelimit_delay(&rl, now + 5 * SECOND), ==, SECOND);
}

/* Work that could not wait is charged all the same, idle or not. */
static void test_charge_without_asking(void)
{
    RateLimit rl = { 0 };
    int64_t now = 7 * SECOND;

    ratelimit_set_speed(&rl, 1 * MiB);
    ratelimit_charge(&rl, MiB, now);
    g_assert_cmpint(ratelimit_delay(&rl, now), ==, SECOND);
    /* In debt already: the debt grows. */
    ratelimit_charge(&rl, MiB, now + 500 * MS);
    g_assert_cmpint(ratelimit_delay(&rl, now + 500 * MS), ==, 1500 * MS);
    /* After idle time: counted from then, not from the old debt's end. */
    ratelimit_charge(&rl, MiB / 2, now + 10 * SECOND);
    g_assert_cmpint(ratelimit_delay(&rl, now + 10 * SECOND), ==, 500 * MS);
}

static void test_speed_change_forgives(void)
{
    RateLimit rl = { 0 };

    ratelimit_set_speed(&rl, 1024);
    g_assert_cmpint(ratelimit_delay(&rl, 0), ==, 0);
    ratelimit_account(&rl, MiB);
    g_assert_cmpint(ratelimit_delay(&rl, 0), ==, 1024 * SECOND);
    ratelimit_set_speed(&rl, 1024 * MiB);
    g_assert_cmpint(ratelimit_delay(&rl, 0), ==, 0);
}

static void test_huge_charge(void)
{
    RateLimit rl = { 0 };

    ratelimit_set_speed(&rl, 1);
    g_assert_cmpint(ratelimit_delay(&rl, SECOND), ==, 0);
    ratelimit_account(&rl, UINT64_MAX);
    g_assert_cmpint(ratelimit_delay(&rl, SECOND), ==, INT64_MAX - SECOND);
    ratelimit_account(&rl, UINT64_MAX);
    g_assert_cmpint(ratelimit_delay(&rl, SECOND), ==, INT64_MAX - SECOND);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ratelimit/unlimited", test_unlimited);
    g_test_add_func("/ratelimit/exact-delay", test_exact_delay);
    g_test_add_func("/ratelimit/charge", test_charge_without_asking);
    g_test_add_func("/ratelimit/speed-change", test_speed_change_forgives);
    g_test_add_func("/ratelimit/huge-charge", test_huge_charge);
    g_test_add_func("/ratelimit/job-loop", test_job_loop);
    g_test_add_func("/ratelimit/parallel-tasks", test_parallel_tasks);
    return g_test_run();
}
