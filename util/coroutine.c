/*
 * Coroutines on ucontext stacks, switched with _setjmp/_longjmp.
 *
 * makecontext() is the only portable way to start running on a new stack,
 * but swapcontext() saves and restores the signal mask with a system call
 * on every switch.  So ucontext is used exactly once per coroutine: the
 * trampoline records a jmp_buf on the new stack and jumps straight back to
 * the creator.  Every later switch is a plain _longjmp, which costs a few
 * nanoseconds.
 *
 * A coroutine whose entry function returns is not freed but parked in a
 * small pool; its trampoline loops and runs the next entry it is given.
 * The pool is a stack linked through the coroutines themselves, so that
 * taking one and giving it back allocate nothing: every NBD request
 * does both.
 * Stacks are mmap()ed with a guard page below them so that an overflow
 * faults instead of corrupting memory.
 *
 * Under AddressSanitizer each switch is announced with the fiber API so
 * that ASan tracks which stack is live.
 */
#include "util/coroutine.h"
#include "util/main-loop.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define CO_ASAN 1
#endif

enum {
    COROUTINE_STACK_SIZE = 1 << 20,
    COROUTINE_POOL_MAX = 256,
};

typedef enum CoroutineAction {
    COROUTINE_YIELD = 1,
    COROUTINE_TERMINATE = 2,
    COROUTINE_ENTER = 3,
} CoroutineAction;

struct Coroutine {
    CoroutineEntry *entry;
    void *opaque;
    Coroutine *caller;          /* who entered us; NULL while not running */
    bool wake_scheduled;        /* a coroutine_wake() is pending */
    jmp_buf env;
    void *stack;                /* mapping including the guard page */
    size_t stack_size;
    Coroutine *pool_next;       /* the next one in the pool */
#ifdef CO_ASAN
    void *asan_fake_stack;      /* saved while switched out */
    const void *asan_bottom;    /* usable stack, for ASan */
    size_t asan_size;
#endif
};

/* The thread's own stack, represented as a coroutine to switch back to. */
static __thread Coroutine leader;
static __thread Coroutine *current;
static __thread Coroutine *pool;
static __thread unsigned pool_size;
/* Used only while a new coroutine's trampoline starts. */
static __thread jmp_buf *creator_env;
static __thread Coroutine *creator;
static __thread Coroutine *starting;

/*
 * ASan must be told about every switch: which stack becomes live, and
 * whether the one left behind will come back (a finished coroutine does
 * not, so its fake stack is dropped).
 */
static void asan_start_switch(Coroutine *from, Coroutine *to,
                              bool from_finished)
{
#ifdef CO_ASAN
    __sanitizer_start_switch_fiber(from_finished ? NULL
                                                 : &from->asan_fake_stack,
                                   to->asan_bottom, to->asan_size);
#else
    (void)from;
    (void)to;
    (void)from_finished;
#endif
}

static void asan_finish_switch(Coroutine *now)
{
#ifdef CO_ASAN
    __sanitizer_finish_switch_fiber(now->asan_fake_stack, NULL, NULL);
#else
    (void)now;
#endif
}

/*
 * First code on a new stack: ASan learns the bounds of the stack we came
 * from, which is how the thread's own stack gets known.
 */
static void asan_first_entry(Coroutine *from)
{
#ifdef CO_ASAN
    const void *bottom;
    size_t size;

    __sanitizer_finish_switch_fiber(NULL, &bottom, &size);
    if (from == &leader && !leader.asan_bottom) {
        leader.asan_bottom = bottom;
        leader.asan_size = size;
    }
#else
    (void)from;
#endif
}

static CoroutineAction coroutine_switch(Coroutine *from, Coroutine *to,
                                        CoroutineAction action)
{
    int ret;

    current = to;
    asan_start_switch(from, to, action == COROUTINE_TERMINATE);
    ret = _setjmp(from->env);
    if (ret == 0) {
        _longjmp(to->env, action);
    }
    asan_finish_switch(from);
    return ret;
}

static void coroutine_trampoline(void)
{
    Coroutine *self = starting;
    Coroutine *parent = creator;

    asan_first_entry(parent);
    /* Record where to resume us, then go back to coroutine_new(). */
    asan_start_switch(self, parent, false);
    if (_setjmp(self->env) == 0) {
        _longjmp(*creator_env, 1);
    }
    asan_finish_switch(self);

    for (;;) {
        self->entry(self->opaque);
        self->entry = NULL;
#ifdef CO_ASAN
        self->asan_fake_stack = NULL;
#endif
        coroutine_switch(self, self->caller, COROUTINE_TERMINATE);
    }
}

static Coroutine *coroutine_new(void)
{
    Coroutine *co = g_new0(Coroutine, 1);
    Coroutine *self = current ? current : &leader;
    size_t page = getpagesize();
    ucontext_t uc;
    jmp_buf old_env;

    co->stack_size = COROUTINE_STACK_SIZE + page;
    co->stack = mmap(NULL, co->stack_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (co->stack == MAP_FAILED) {
        g_error("cannot allocate a coroutine stack: %s", g_strerror(errno));
    }
    mprotect(co->stack, page, PROT_NONE);
#ifdef CO_ASAN
    co->asan_bottom = (char *)co->stack + page;
    co->asan_size = COROUTINE_STACK_SIZE;
#endif

    getcontext(&uc);
    uc.uc_link = NULL;
    uc.uc_stack.ss_sp = (char *)co->stack + page;
    uc.uc_stack.ss_size = COROUTINE_STACK_SIZE;
    makecontext(&uc, coroutine_trampoline, 0);

    /*
     * setcontext() rather than swapcontext(): we come back by _longjmp to
     * old_env, so there is no context to save (and ASan warns about
     * swapcontext).
     */
    creator_env = &old_env;
    creator = self;
    starting = co;
    asan_start_switch(self, co, false);
    if (_setjmp(old_env) == 0) {
        setcontext(&uc);
    }
    asan_finish_switch(self);
    starting = NULL;
    creator = NULL;
    creator_env = NULL;
    return co;
}

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque)
{
    Coroutine *co;

    if (pool) {
        co = pool;
        pool = co->pool_next;
        pool_size--;
    } else {
        co = coroutine_new();
    }
    co->entry = entry;
    co->opaque = opaque;
    return co;
}

static void coroutine_delete(Coroutine *co)
{
    if (pool_size < COROUTINE_POOL_MAX) {
        co->pool_next = pool;
        pool = co;
        pool_size++;
        return;
    }
    munmap(co->stack, co->stack_size);
    g_free(co);
}

void coroutine_enter(Coroutine *co)
{
    Coroutine *self = current ? current : &leader;
    CoroutineAction ret;

    g_assert(co->caller == NULL);
    g_assert(co->entry != NULL);
    co->caller = self;
    ret = coroutine_switch(self, co, COROUTINE_ENTER);
    if (ret == COROUTINE_TERMINATE) {
        co->caller = NULL;
        coroutine_delete(co);
    }
}

void coroutine_fn coroutine_yield(void)
{
    Coroutine *self = current;
    Coroutine *to;

    g_assert(self && self != &leader);
    to = self->caller;
    self->caller = NULL;
    coroutine_switch(self, to, COROUTINE_YIELD);
}

Coroutine *coroutine_self(void)
{
    return current == &leader ? NULL : current;
}

bool in_coroutine(void)
{
    return coroutine_self() != NULL;
}

static void coroutine_wake_bh(void *opaque)
{
    Coroutine *co = opaque;

    co->wake_scheduled = false;
    coroutine_enter(co);
}

void coroutine_wake(Coroutine *co)
{
    g_assert(!co->wake_scheduled);
    co->wake_scheduled = true;
    bh_schedule(coroutine_wake_bh, co);
}

typedef struct SyncRun {
    CoroutineEntry *entry;
    void *opaque;
    bool done;
} SyncRun;

static void coroutine_fn co_run_sync_entry(void *opaque)
{
    SyncRun *run = opaque;

    run->entry(run->opaque);
    run->done = true;
}

void co_run_sync(CoroutineEntry *entry, void *opaque)
{
    SyncRun run = { .entry = entry, .opaque = opaque };

    if (in_coroutine()) {
        entry(opaque);
        return;
    }
    coroutine_enter(coroutine_create(co_run_sync_entry, &run));
    while (!run.done) {
        main_loop_wait(true);
    }
}

void co_queue_init(CoQueue *queue)
{
    g_queue_init(&queue->waiters);
}

void coroutine_fn co_queue_wait(CoQueue *queue)
{
    g_queue_push_tail(&queue->waiters, coroutine_self());
    coroutine_yield();
}

bool co_queue_next(CoQueue *queue)
{
    Coroutine *co = g_queue_pop_head(&queue->waiters);

    if (!co) {
        return false;
    }
    coroutine_wake(co);
    return true;
}

void co_queue_restart_all(CoQueue *queue)
{
    while (co_queue_next(queue)) {
        /* wake them all */
    }
}

void co_mutex_init(CoMutex *mutex)
{
    mutex->locked = false;
    co_queue_init(&mutex->waiters);
}

/*
 * The mutex is handed over directly from the unlocker to the first waiter,
 * so waiters get it in FIFO order and nobody can overtake them while their
 * wake-up is pending.
 */
void coroutine_fn co_mutex_lock(CoMutex *mutex)
{
    if (mutex->locked) {
        co_queue_wait(&mutex->waiters);
        g_assert(mutex->locked);
        return;
    }
    mutex->locked = true;
}

void co_mutex_unlock(CoMutex *mutex)
{
    g_assert(mutex->locked);
    if (!co_queue_next(&mutex->waiters)) {
        mutex->locked = false;
    }
}
