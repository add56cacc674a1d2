/*
 * The thread-pool engine: blocking system calls on worker threads.
 *
 * A worker runs the function, puts the finished job on a queue and kicks
 * an eventfd; the main loop reaps finished jobs and re-enters their
 * coroutines.  Workers never touch coroutines or any other main-loop
 * state.
 */
#include "util/aio.h"
#include "util/coroutine.h"

#include <glib-unix.h>
#include <sys/eventfd.h>

enum {
    THREAD_POOL_MAX_THREADS = 64,
};

typedef struct ThreadPoolJob {
    ThreadPoolFunc *func;
    void *opaque;
    int result;
    Coroutine *co;
} ThreadPoolJob;

typedef struct ThreadPool {
    GThreadPool *threads;
    GAsyncQueue *done;
    int efd;
} ThreadPool;

static ThreadPool *pool;

static void thread_pool_worker(gpointer data, gpointer user_data)
{
    ThreadPoolJob *job = data;
    uint64_t one = 1;

    (void)user_data;
    job->result = job->func(job->opaque);
    g_async_queue_push(pool->done, job);
    if (write(pool->efd, &one, sizeof(one)) < 0) {
        g_warning("thread pool eventfd write failed");
    }
}

static gboolean thread_pool_reap(gint fd, GIOCondition cond, gpointer data)
{
    ThreadPoolJob *job;
    uint64_t counter;

    (void)cond;
    (void)data;
    if (read(fd, &counter, sizeof(counter)) < 0 && errno != EAGAIN) {
        g_warning("thread pool eventfd read failed");
    }
    while ((job = g_async_queue_try_pop(pool->done))) {
        coroutine_enter(job->co);
    }
    return G_SOURCE_CONTINUE;
}

static ThreadPool *thread_pool_get(void)
{
    if (!pool) {
        pool = g_new0(ThreadPool, 1);
        pool->threads = g_thread_pool_new(thread_pool_worker, NULL,
                                          THREAD_POOL_MAX_THREADS, FALSE,
                                          NULL);
        pool->done = g_async_queue_new();
        pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        GSource *source = g_unix_fd_source_new(pool->efd, G_IO_IN);

        g_source_set_callback(source, G_SOURCE_FUNC(thread_pool_reap), NULL,
                              NULL);
        g_source_set_can_recurse(source, TRUE);
        g_source_attach(source, NULL);
        g_source_unref(source);
    }
    return pool;
}

int coroutine_fn thread_pool_co_submit(ThreadPoolFunc *func, void *opaque)
{
    ThreadPoolJob job = {
        .func = func,
        .opaque = opaque,
        .co = coroutine_self(),
    };

    g_assert(job.co);
    g_thread_pool_push(thread_pool_get()->threads, &job, NULL);
    coroutine_yield();
    return job.result;
}

static int aio_request_run(void *opaque)
{
    const AioRequest *req = opaque;
    ssize_t ret;

    switch (req->op) {
    case AIO_OP_READ:
        ret = pread(req->fd, req->buf, req->len, req->offset);
        break;
    case AIO_OP_WRITE:
        ret = pwrite(req->fd, req->buf, req->len, req->offset);
        break;
    case AIO_OP_PREADV:
        ret = preadv(req->fd, req->iov, req->iovcnt, req->offset);
        break;
    case AIO_OP_PWRITEV:
        ret = pwritev(req->fd, req->iov, req->iovcnt, req->offset);
        break;
    case AIO_OP_FSYNC:
        ret = fsync(req->fd);
        break;
    case AIO_OP_FDATASYNC:
        ret = fdatasync(req->fd);
        break;
    case AIO_OP_FALLOCATE:
        ret = fallocate(req->fd, req->mode, req->offset, req->len);
        break;
    case AIO_OP_POLL:
    case AIO_OP_READV:
        /* Waiting belongs on the main loop: see co_wait_fd(), co_readv(). */
    default:
        g_assert_not_reached();
    }
    /* Transfers are capped below 2 GiB by the block layer, so int fits. */
    return ret < 0 ? -errno : (int)ret;
}

ssize_t coroutine_fn thread_pool_co_submit_request(const AioRequest *req)
{
    return thread_pool_co_submit(aio_request_run, (void *)req);
}
