/*
 * The main loop: GLib's default GMainContext, plus the helpers the rest of
 * blockd needs on top of it.  There is one thread; nothing on it blocks.
 */
#ifndef UTIL_MAIN_LOOP_H
#define UTIL_MAIN_LOOP_H

#include "util/osdep.h"

#include <sys/uio.h>

/* One iteration of the main loop; returns true if any source dispatched. */
bool main_loop_wait(bool blocking);

/* Run @cb(@opaque) once, soon, from the main loop (a "bottom half"). */
void bh_schedule(void (*cb)(void *opaque), void *opaque);

/*
 * g_timeout_add(), for a period given in seconds that must not end early.
 * (g_timeout_add_seconds() may fire up to a second early: GLib rounds its
 * deadlines to shared whole-second ticks.)  Returns the source id.
 */
guint timeout_add_seconds(unsigned seconds, GSourceFunc cb, void *opaque);

/*
 * Yield the calling coroutine until @fd is ready for @cond (G_IO_IN or
 * G_IO_OUT).  Returns the conditions seen, which may include G_IO_HUP or
 * G_IO_ERR.  The fd must be non-blocking.
 */
GIOCondition coroutine_fn co_wait_fd(int fd, GIOCondition cond);

/*
 * Read from the non-blocking stream @fd into @iov, yielding until at least
 * one byte, or the end of the stream, is there.  Returns the number of
 * bytes read, 0 at the end of the stream, or -errno.
 *
 * @try_now: the caller expects data to be waiting already (say, its last
 * read filled the whole buffer), so a plain readv() is tried first.
 * Otherwise the read goes to io_uring, which waits for the data and reads
 * it in one step, batched with the other submissions: no readv() that
 * fails with EAGAIN and no separate wait.
 */
ssize_t coroutine_fn co_readv(int fd, struct iovec *iov, int iovcnt,
                              bool try_now);

/*
 * Send all of @iov on a non-blocking socket, yielding while it is full.
 * Returns 0 or -errno (-EPIPE when the peer has gone; never SIGPIPE).
 * @iov is consumed in place (its entries are advanced).
 */
int coroutine_fn co_sendv_full(int fd, struct iovec *iov, int iovcnt);

/* Helpers for file descriptors. */
void fd_set_nonblocking(int fd);

#endif /* UTIL_MAIN_LOOP_H */
