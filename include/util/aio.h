/*
 * Asynchronous file I/O for coroutines.
 *
 * Two engines with one shape: io_uring (the default: many requests in
 * flight, one system call per main-loop iteration for all submissions)
 * and a thread pool (the fallback where io_uring is unavailable, and the
 * place for system calls io_uring cannot do).  Each call suspends the
 * calling coroutine until the kernel is done and returns the syscall's
 * result: bytes transferred or 0 on success, -errno on failure.
 */
#ifndef UTIL_AIO_H
#define UTIL_AIO_H

#include "util/osdep.h"
#include "util/error.h"

#include <sys/uio.h>

typedef enum AioOp {
    AIO_OP_READ,        /* @len bytes at @offset into @buf */
    AIO_OP_WRITE,
    AIO_OP_PREADV,      /* preadv(2): @iovcnt elements of @iov at @offset */
    AIO_OP_PWRITEV,
    AIO_OP_FSYNC,
    AIO_OP_FDATASYNC,
    AIO_OP_FALLOCATE,   /* @offset, @len, @mode */
    AIO_OP_POLL,        /* wait until @fd has one of the poll(2) events
                         * in @mode; returns the events seen */
    AIO_OP_READV,       /* readv(2) from a stream (socket, pipe) into
                         * @iov: waits until at least one byte or the end
                         * of the stream is there (io_uring only) */
} AioOp;

typedef struct AioRequest {
    AioOp op;
    int fd;
    void *buf;
    size_t len;
    off_t offset;
    int mode;           /* fallocate mode */
    struct iovec *iov;  /* AIO_OP_PREADV, AIO_OP_PWRITEV, AIO_OP_READV */
    int iovcnt;         /* at most IOV_MAX */
} AioRequest;

/* True if io_uring works on this kernel; sets up the shared ring. */
bool uring_available(Error **errp);
ssize_t coroutine_fn uring_co_submit(const AioRequest *req);

/* Run a request with a blocking system call on a worker thread. */
ssize_t coroutine_fn thread_pool_co_submit_request(const AioRequest *req);

/*
 * Run a request on io_uring where it works, else on the thread pool: for
 * callers with no engine setting of their own.
 */
ssize_t coroutine_fn aio_co_submit(const AioRequest *req);

/* Run @func(@opaque) on a worker thread; return its result. */
typedef int ThreadPoolFunc(void *opaque);
int coroutine_fn thread_pool_co_submit(ThreadPoolFunc *func, void *opaque);

#endif /* UTIL_AIO_H */
