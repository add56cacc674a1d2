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
 * Yield the calling coroutine until @fd is ready for @cond (G_IO_IN or
 * G_IO_OUT).  Returns the conditions seen, which may include G_IO_HUP or
 * G_IO_ERR.  The fd must be non-blocking.
 */
GIOCondition coroutine_fn co_wait_fd(int fd, GIOCondition cond);

/*
 * Read or write exactly @len bytes on a non-blocking socket or pipe,
 * yielding while it is not ready.  Return 0 on success, -errno on error,
 * and -EPIPE for end of file before @len bytes (read side).
 * co_writev_full() consumes @iov in place (it advances the entries).
 */
int coroutine_fn co_read_full(int fd, void *buf, size_t len);
int coroutine_fn co_write_full(int fd, const void *buf, size_t len);
int coroutine_fn co_writev_full(int fd, struct iovec *iov, int iovcnt);

/* Helpers for file descriptors. */
void fd_set_nonblocking(int fd);

#endif /* UTIL_MAIN_LOOP_H */
