/*
 * Coroutine socket I/O on the main loop: co_readv() and co_sendv_full().
 *
 * co_readv() reads either with a plain readv() (try_now) or through
 * io_uring, which waits for the data itself; both must behave the same:
 * at least one byte, scattered over the iovecs in order, 0 at the end of
 * the stream.
 *
 * timeout_add_seconds() never fires before its period is over, whatever
 * the phase of the second it was started in.
 */
#undef NDEBUG
#include "util/aio.h"
#include "util/coroutine.h"
#include "util/main-loop.h"

#include <sys/socket.h>

typedef struct ReadCase {
    int fd;
    bool try_now;
    char head[4];
    char tail[64];
    ssize_t got;
} ReadCase;

static void coroutine_fn read_entry(void *opaque)
{
    ReadCase *rc = opaque;
    struct iovec iov[2] = {
        { .iov_base = rc->head, .iov_len = sizeof(rc->head) },
        { .iov_base = rc->tail, .iov_len = sizeof(rc->tail) },
    };

    rc->got = co_readv(rc->fd, iov, 2, rc->try_now);
}

static void socket_pair(int fds[2])
{
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
    fd_set_nonblocking(fds[0]);
}

/* The reader starts first and must wait until the peer writes. */
static void test_read_waits(gconstpointer try_now)
{
    ReadCase rc = { .try_now = GPOINTER_TO_INT(try_now), .got = -1 };
    int fds[2];

    socket_pair(fds);
    rc.fd = fds[0];
    coroutine_enter(coroutine_create(read_entry, &rc));
    /* Nothing to read yet: the coroutine is waiting. */
    for (int i = 0; i < 5; i++) {
        main_loop_wait(false);
    }
    g_assert_cmpint(rc.got, ==, -1);
    g_assert_cmpint(write(fds[1], "headtail", 8), ==, 8);
    while (rc.got == -1) {
        main_loop_wait(true);
    }
    g_assert_cmpint(rc.got, ==, 8);
    g_assert(memcmp(rc.head, "head", 4) == 0);
    g_assert(memcmp(rc.tail, "tail", 4) == 0);

    /* End of stream reads as 0, however the read is done. */
    close(fds[1]);
    rc.got = -1;
    co_run_sync(read_entry, &rc);
    g_assert_cmpint(rc.got, ==, 0);
    close(fds[0]);
}

/* Data already waiting is read at once, whichever way. */
static void test_read_ready(gconstpointer try_now)
{
    ReadCase rc = { .try_now = GPOINTER_TO_INT(try_now), .got = -1 };
    int fds[2];

    socket_pair(fds);
    rc.fd = fds[0];
    g_assert_cmpint(write(fds[1], "abc", 3), ==, 3);
    co_run_sync(read_entry, &rc);
    g_assert_cmpint(rc.got, ==, 3);
    g_assert(memcmp(rc.head, "abc", 3) == 0);
    close(fds[1]);
    close(fds[0]);
}

/* shutdown() ends a waiting read: how NBD clients are kicked. */
static void test_read_shutdown(void)
{
    ReadCase rc = { .got = -1 };
    int fds[2];

    socket_pair(fds);
    rc.fd = fds[0];
    coroutine_enter(coroutine_create(read_entry, &rc));
    main_loop_wait(false);
    g_assert_cmpint(rc.got, ==, -1);
    shutdown(fds[0], SHUT_RDWR);
    while (rc.got == -1) {
        main_loop_wait(true);
    }
    g_assert_cmpint(rc.got, ==, 0);
    close(fds[1]);
    close(fds[0]);
}

typedef struct TimerCase {
    gint64 started;
    gint64 fired;
} TimerCase;

static gboolean timer_fired(gpointer opaque)
{
    TimerCase *tc = opaque;

    tc->fired = g_get_monotonic_time();
    return G_SOURCE_REMOVE;
}

/*
 * One-second timers started a fifth of a second apart: GLib's whole-second
 * rounding would let at least one of them fire early (a reconnect-delay of
 * 1 s once gave up after 0.77 s).
 */
static void test_timeout_not_early(void)
{
    enum { PHASES = 5 };
    TimerCase tc[PHASES] = { 0 };
    int pending = PHASES;

    for (int i = 0; i < PHASES; i++) {
        tc[i].started = g_get_monotonic_time();
        timeout_add_seconds(1, timer_fired, &tc[i]);
        g_usleep(G_USEC_PER_SEC / PHASES);
    }
    while (pending > 0) {
        main_loop_wait(true);
        pending = 0;
        for (int i = 0; i < PHASES; i++) {
            pending += tc[i].fired == 0;
        }
    }
    for (int i = 0; i < PHASES; i++) {
        g_assert_cmpint(tc[i].fired - tc[i].started, >=, G_USEC_PER_SEC);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!uring_available(NULL)) {
        g_test_message("io_uring unavailable: only the readv() path runs");
    }
    g_test_add_data_func("/main-loop/co-readv/waits/uring",
                         GINT_TO_POINTER(false), test_read_waits);
    g_test_add_data_func("/main-loop/co-readv/waits/try-now",
                         GINT_TO_POINTER(true), test_read_waits);
    g_test_add_data_func("/main-loop/co-readv/ready/uring",
                         GINT_TO_POINTER(false), test_read_ready);
    g_test_add_data_func("/main-loop/co-readv/ready/try-now",
                         GINT_TO_POINTER(true), test_read_ready);
    g_test_add_func("/main-loop/co-readv/shutdown", test_read_shutdown);
    g_test_add_func("/main-loop/timeout-seconds/not-early",
                    test_timeout_not_early);
    return g_test_run();
}
