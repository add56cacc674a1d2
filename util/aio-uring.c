/*
 * The io_uring engine.
 *
 * One ring serves the whole daemon.  A request takes a submission entry,
 * records the waiting coroutine in the entry's user data and yields.
 * Entries are not submitted one by one: the ring's GSource submits
 * everything queued once per main-loop iteration, in its prepare step,
 * so a burst of requests costs one io_uring_enter().  The main loop polls
 * the ring's own fd, which is readable while completions are waiting (no
 * eventfd to read and reset); the dispatch step reaps them all and
 * re-enters each waiting coroutine.
 *
 * When the submission queue is full, requesters wait in a CoQueue until
 * completions make room, so there is no limit on requests in flight
 * beyond memory.
 *
 * Polling: while file I/O is in flight, the prepare step may spin for a
 * short while on the completion queue (a plain memory read) before the
 * loop goes to sleep in poll().  Catching a completion there saves the
 * poll() system call, a context switch and the wake-up latency that come
 * with a sleep; but every spin costs CPU time whether it catches
 * anything or not, so it only pays when completions arrive within about
 * what a sleep costs.  Hence the spin adapts to the time the loop waits
 * for a completion (spin plus sleep): after a wait of at most
 * URING_POLL_MAX_NS it doubles (from 4 us up to that limit), after a
 * longer wait it drops to zero.  With many requests in flight
 * completions come close together and the loop spins; at queue depth 1
 * on a device slower than the limit it sleeps, as QEMU's main loop does.
 * (A limit of 128 us made the daemon spin through the whole device
 * latency at queue depth 1: 1.4 times the CPU time of QEMU's daemon.)
 * Waits for sockets (AIO_OP_POLL, AIO_OP_READV) do not count as in
 * flight, so an idle daemon with idle clients never spins.
 */
#include "util/aio.h"
#include "util/coroutine.h"

#include <liburing.h>

enum {
    URING_ENTRIES = 256,
    URING_POLL_START_NS = 4000,
    /* About the CPU time a sleep and a wake-up cost; see above. */
    URING_POLL_MAX_NS = 16000,
};

typedef struct UringSource {
    GSource source;
    struct io_uring ring;
    gpointer ring_tag;
    unsigned queued;        /* entries prepared but not yet submitted */
    unsigned io_in_flight;  /* requests other than socket waits */
    int64_t poll_ns;        /* current spin budget, adaptive; 0 = off */
    int64_t wait_start_ns;  /* when the loop began the wait that ended in
                             * a sleep, or 0 */
    CoQueue sq_waiters;     /* coroutines waiting for a free entry */
} UringSource;

typedef struct UringWaiter {
    Coroutine *co;
    int result;
    bool counts_as_io;      /* included in io_in_flight */
} UringWaiter;

static UringSource *uring;
static bool uring_failed;
static char *uring_failure;

static void uring_flush(UringSource *us)
{
    if (us->queued) {
        int ret = io_uring_submit(&us->ring);

        if (ret >= 0) {
            us->queued -= MIN((unsigned)ret, us->queued);
        }
    }
}

static int64_t now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}

/*
 * Spin on the completion queue while I/O is in flight; see above.
 * @start_ns: when the wait began (now).
 */
static bool uring_spin(UringSource *us, int64_t start_ns)
{
    int64_t deadline = start_ns + us->poll_ns;

    do {
        if (io_uring_cq_ready(&us->ring)) {
            return true;
        }
    } while (now_ns() < deadline);
    return false;
}

/*
 * After a wait that spinning did not end: had we spun a little longer,
 * would we have caught the completion that woke us?  Then spin longer
 * next time.  If the whole wait took longer than the spin limit, stop
 * spinning until waits get short again.
 */
static void uring_adapt_poll(UringSource *us)
{
    int64_t waited;

    if (!us->wait_start_ns) {
        return;
    }
    waited = now_ns() - us->wait_start_ns;
    us->wait_start_ns = 0;
    if (waited > URING_POLL_MAX_NS) {
        us->poll_ns = 0;
    } else if (waited > us->poll_ns) {
        us->poll_ns = us->poll_ns ? MIN(us->poll_ns * 2, URING_POLL_MAX_NS)
                                  : URING_POLL_START_NS;
    }
}

static gboolean uring_prepare(GSource *source, gint *timeout)
{
    UringSource *us = (UringSource *)source;
    int64_t start_ns;

    uring_flush(us);
    *timeout = -1;
    if (io_uring_cq_ready(&us->ring) > 0) {
        return TRUE;
    }
    if (!us->io_in_flight) {
        return FALSE;
    }
    start_ns = now_ns();
    if (us->poll_ns && uring_spin(us, start_ns)) {
        return TRUE;
    }
    us->wait_start_ns = start_ns;
    return FALSE;
}

static gboolean uring_check(GSource *source)
{
    UringSource *us = (UringSource *)source;

    uring_adapt_poll(us);
    return io_uring_cq_ready(&us->ring) > 0 ||
           g_source_query_unix_fd(source, us->ring_tag) & G_IO_IN;
}

static gboolean uring_dispatch(GSource *source, GSourceFunc cb, gpointer data)
{
    UringSource *us = (UringSource *)source;
    struct io_uring_cqe *cqe;

    (void)cb;
    (void)data;
    while (io_uring_peek_cqe(&us->ring, &cqe) == 0) {
        UringWaiter *waiter = io_uring_cqe_get_data(cqe);

        waiter->result = cqe->res;
        io_uring_cqe_seen(&us->ring, cqe);
        if (waiter->counts_as_io) {
            us->io_in_flight--;
        }
        coroutine_enter(waiter->co);
        co_queue_next(&us->sq_waiters);
    }
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs uring_source_funcs = {
    .prepare = uring_prepare,
    .check = uring_check,
    .dispatch = uring_dispatch,
};

bool uring_available(Error **errp)
{
    GSource *source;
    UringSource *us;
    int ret;

    if (uring) {
        return true;
    }
    if (uring_failed) {
        error_setg(errp, "%s", uring_failure);
        return false;
    }
    source = g_source_new(&uring_source_funcs, sizeof(UringSource));
    us = (UringSource *)source;
    ret = io_uring_queue_init(URING_ENTRIES, &us->ring, 0);
    if (ret < 0) {
        uring_failed = true;
        uring_failure = g_strdup_printf("io_uring is not available: %s",
                                        g_strerror(-ret));
        g_source_unref(source);
        error_setg(errp, "%s", uring_failure);
        return false;
    }
    us->ring_tag = g_source_add_unix_fd(source, us->ring.ring_fd, G_IO_IN);
    co_queue_init(&us->sq_waiters);
    g_source_set_name(source, "io_uring");
    /* Same priority as bottom halves, so its prepare step always runs. */
    g_source_set_priority(source, G_PRIORITY_HIGH);
    g_source_set_can_recurse(source, TRUE);
    g_source_attach(source, NULL);
    uring = us;
    return true;
}

static void uring_prep(struct io_uring_sqe *sqe, const AioRequest *req)
{
    switch (req->op) {
    case AIO_OP_READ:
        io_uring_prep_read(sqe, req->fd, req->buf, req->len, req->offset);
        break;
    case AIO_OP_WRITE:
        io_uring_prep_write(sqe, req->fd, req->buf, req->len, req->offset);
        break;
    case AIO_OP_PREADV:
        io_uring_prep_readv(sqe, req->fd, req->iov, req->iovcnt, req->offset);
        break;
    case AIO_OP_PWRITEV:
        io_uring_prep_writev(sqe, req->fd, req->iov, req->iovcnt,
                             req->offset);
        break;
    case AIO_OP_FSYNC:
        io_uring_prep_fsync(sqe, req->fd, 0);
        break;
    case AIO_OP_FDATASYNC:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    case AIO_OP_FALLOCATE:
        io_uring_prep_fallocate(sqe, req->fd, req->mode, req->offset,
                                req->len);
        break;
    case AIO_OP_POLL:
        io_uring_prep_poll_add(sqe, req->fd, req->mode);
        break;
    case AIO_OP_READV:
        /* Streams have no position: sockets refuse any offset but 0. */
        io_uring_prep_readv(sqe, req->fd, req->iov, req->iovcnt, 0);
        break;
    }
}

ssize_t coroutine_fn uring_co_submit(const AioRequest *req)
{
    UringWaiter waiter = {
        .co = coroutine_self(),
        /* Waiting for a peer is not I/O that completes soon. */
        .counts_as_io = req->op != AIO_OP_POLL && req->op != AIO_OP_READV,
    };
    struct io_uring_sqe *sqe;

    g_assert(uring && waiter.co);
    while (!(sqe = io_uring_get_sqe(&uring->ring))) {
        uring_flush(uring);
        co_queue_wait(&uring->sq_waiters);
    }
    uring_prep(sqe, req);
    io_uring_sqe_set_data(sqe, &waiter);
    uring->queued++;
    uring->io_in_flight += waiter.counts_as_io;
    /* The next main-loop iteration submits it, in uring_prepare(). */
    coroutine_yield();
    return waiter.result;
}

ssize_t coroutine_fn aio_co_submit(const AioRequest *req)
{
    return uring_available(NULL) ? uring_co_submit(req)
                                 : thread_pool_co_submit_request(req);
}
