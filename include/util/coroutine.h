/*
 * Coroutines: cooperative user-space threads on the main loop.
 *
 * All block I/O runs in coroutines.  A coroutine runs until it calls
 * coroutine_yield(); somebody must later re-enter it with coroutine_enter()
 * (directly) or coroutine_wake() (from the main loop, safe from any
 * callback).  Everything here is for the main thread only.
 */
#ifndef UTIL_COROUTINE_H
#define UTIL_COROUTINE_H

#include "util/osdep.h"

typedef struct Coroutine Coroutine;
typedef void coroutine_fn CoroutineEntry(void *opaque);

/* Create a coroutine that will run @entry(@opaque) when first entered. */
Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);

/*
 * Switch to @co until it yields or terminates.  A terminated coroutine is
 * freed automatically.  Must not be called on a coroutine that is already
 * running (an ancestor of the caller).
 */
void coroutine_enter(Coroutine *co);

/* Enter @co from the main loop at its next iteration. */
void coroutine_wake(Coroutine *co);

/* Suspend the calling coroutine; control returns to whoever entered it. */
void coroutine_fn coroutine_yield(void);

/* The running coroutine, or NULL outside coroutine context. */
Coroutine *coroutine_self(void);
bool in_coroutine(void);

/*
 * Run @entry(@opaque) in a new coroutine and iterate the main loop until it
 * has finished.  For start-up, shutdown and other synchronous callers; in
 * coroutine context it simply calls @entry.
 */
void co_run_sync(CoroutineEntry *entry, void *opaque);

/*
 * CoQueue: a list of coroutines waiting for something.  Waiters are woken
 * in FIFO order through coroutine_wake().
 */
typedef struct CoQueue {
    GQueue waiters;
} CoQueue;

void co_queue_init(CoQueue *queue);
void coroutine_fn co_queue_wait(CoQueue *queue);
/* Wake the first waiter; returns false if there was none. */
bool co_queue_next(CoQueue *queue);
void co_queue_restart_all(CoQueue *queue);

/* CoMutex: a mutex between coroutines (never blocks the thread). */
typedef struct CoMutex {
    bool locked;
    CoQueue waiters;
} CoMutex;

void co_mutex_init(CoMutex *mutex);
void coroutine_fn co_mutex_lock(CoMutex *mutex);
void co_mutex_unlock(CoMutex *mutex);

#endif /* UTIL_COROUTINE_H */
