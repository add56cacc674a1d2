/*
 * The main loop: GLib's default context, with bottom halves and
 * coroutine-friendly waits on file descriptors.
 *
 * Bottom halves are kept in our own FIFO drained by a single GSource at
 * high priority, rather than one idle source each: waking a coroutine is
 * one of the hottest operations in the daemon and must not create and
 * destroy a GSource every time.
 */
#include "util/main-loop.h"
#include "util/aio.h"
#include "util/coroutine.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef struct BottomHalf {
    void (*cb)(void *opaque);
    void *opaque;
} BottomHalf;

typedef struct BhSource {
    GSource source;
    GQueue pending;     /* BottomHalf *, in scheduling order */
} BhSource;

static BhSource *bh_source;

static gboolean bh_prepare(GSource *source, gint *timeout)
{
    *timeout = -1;
    return !g_queue_is_empty(&((BhSource *)source)->pending);
}

static gboolean bh_check(GSource *source)
{
    return !g_queue_is_empty(&((BhSource *)source)->pending);
}

/*
 * Runs only what was scheduled before it started; later ones wait for the
 * next iteration so a self-rescheduling BH cannot starve the loop.  The
 * source may recurse (a BH may iterate the loop to wait for something), so
 * items are taken off the queue one at a time.
 */
static gboolean bh_dispatch(GSource *source, GSourceFunc cb, gpointer data)
{
    BhSource *bhs = (BhSource *)source;
    guint batch = g_queue_get_length(&bhs->pending);

    (void)cb;
    (void)data;
    while (batch-- > 0) {
        BottomHalf *bh = g_queue_pop_head(&bhs->pending);

        if (!bh) {
            break;
        }
        bh->cb(bh->opaque);
        g_free(bh);
    }
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs bh_source_funcs = {
    .prepare = bh_prepare,
    .check = bh_check,
    .dispatch = bh_dispatch,
};

static BhSource *bh_source_get(void)
{
    if (!bh_source) {
        GSource *source = g_source_new(&bh_source_funcs, sizeof(BhSource));

        bh_source = (BhSource *)source;
        g_queue_init(&bh_source->pending);
        g_source_set_priority(source, G_PRIORITY_HIGH);
        g_source_set_can_recurse(source, TRUE);
        g_source_set_name(source, "bottom-halves");
        g_source_attach(source, NULL);
    }
    return bh_source;
}

void bh_schedule(void (*cb)(void *opaque), void *opaque)
{
    BottomHalf *bh = g_new(BottomHalf, 1);

    bh->cb = cb;
    bh->opaque = opaque;
    g_queue_push_tail(&bh_source_get()->pending, bh);
}

guint timeout_add_seconds(unsigned seconds, GSourceFunc cb, void *opaque)
{
    if (seconds > G_MAXUINT / 1000) {
        /* Past 49 days a second's rounding no longer matters. */
        return g_timeout_add_seconds(seconds, cb, opaque);
    }
    return g_timeout_add(seconds * 1000, cb, opaque);
}

bool main_loop_wait(bool blocking)
{
    bh_source_get();
    return g_main_context_iteration(NULL, blocking);
}

typedef struct FdWait {
    Coroutine *co;
    GIOCondition seen;
} FdWait;

static gboolean co_wait_fd_ready(gint fd, GIOCondition cond, gpointer opaque)
{
    FdWait *wait = opaque;

    (void)fd;
    wait->seen = cond;
    coroutine_enter(wait->co);
    return G_SOURCE_REMOVE;
}

/*
 * Waiting through io_uring (a one-shot poll request) costs nothing beyond
 * the submission that is batched with other I/O anyway.  A GLib fd source
 * instead would be created and destroyed for every wait, and GLib wakes
 * its own poll() each time the set of polled fds changes: two extra
 * system calls and a spurious loop iteration per wait, which showed up as
 * a 10% loss on small NBD requests.
 */
GIOCondition coroutine_fn co_wait_fd(int fd, GIOCondition cond)
{
    FdWait wait = { .co = coroutine_self() };

    g_assert(wait.co);
    if (uring_available(NULL)) {
        /* GLib's G_IO_* values are the poll(2) bits on Linux. */
        AioRequest req = {
            .op = AIO_OP_POLL, .fd = fd, .mode = cond | G_IO_HUP | G_IO_ERR,
        };
        ssize_t ret = uring_co_submit(&req);

        return ret < 0 ? G_IO_ERR : (GIOCondition)ret;
    }
    g_unix_fd_add(fd, cond | G_IO_HUP | G_IO_ERR, co_wait_fd_ready, &wait);
    coroutine_yield();
    return wait.seen;
}

ssize_t coroutine_fn co_readv(int fd, struct iovec *iov, int iovcnt,
                              bool try_now)
{
    bool use_uring = uring_available(NULL);

    for (;;) {
        ssize_t n;

        if (use_uring && !try_now) {
            AioRequest req = {
                .op = AIO_OP_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt,
            };

            n = uring_co_submit(&req);
            if (n == -EAGAIN) {
                /* Older kernels do not wait on O_NONBLOCK files. */
                co_wait_fd(fd, G_IO_IN);
            } else if (n != -EINTR) {
                return n;
            }
            continue;
        }
        n = readv(fd, iov, iovcnt);
        if (n >= 0) {
            return n;
        }
        if (errno == EAGAIN) {
            if (use_uring) {
                try_now = false;
            } else {
                co_wait_fd(fd, G_IO_IN);
            }
        } else if (errno != EINTR) {
            return -errno;
        }
    }
}

int coroutine_fn co_sendv_full(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = iovcnt };
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EAGAIN) {
                co_wait_fd(fd, G_IO_OUT);
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        /* Skip what was sent; @iov is consumed in place. */
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

void fd_set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}
