/*
 * Coroutines, CoQueue and CoMutex.
 */
#undef NDEBUG
#include "util/coroutine.h"
#include "util/main-loop.h"

static void coroutine_fn record_and_yield(void *opaque)
{
    GString *trace = opaque;

    g_string_append(trace, "a");
    coroutine_yield();
    g_string_append(trace, "c");
}

static void test_yield_enter(void)
{
    g_autoptr(GString) trace = g_string_new(NULL);
    Coroutine *co = coroutine_create(record_and_yield, trace);

    g_assert_false(in_coroutine());
    coroutine_enter(co);
    g_string_append(trace, "b");
    coroutine_enter(co);
    g_assert_cmpstr(trace->str, ==, "abc");
}

static void coroutine_fn nested_inner(void *opaque)
{
    Coroutine **self = opaque;

    *self = coroutine_self();
}

static void coroutine_fn nested_outer(void *opaque)
{
    Coroutine **inner_self = opaque;
    Coroutine *me = coroutine_self();

    coroutine_enter(coroutine_create(nested_inner, inner_self));
    /* Control came back to us, not to the main stack. */
    g_assert(coroutine_self() == me);
    g_assert(*inner_self != NULL && *inner_self != me);
}

static void test_nested(void)
{
    Coroutine *inner_self = NULL;

    coroutine_enter(coroutine_create(nested_outer, &inner_self));
    g_assert_nonnull(inner_self);
}

/* Many coroutines: exercises the pool and fresh stacks alike. */
static void coroutine_fn count_up(void *opaque)
{
    int *counter = opaque;

    (*counter)++;
}

/*
 * Regression test: a finished coroutine goes back to the pool and must be
 * reusable after it had been entered from another coroutine.
 */
static void coroutine_fn enter_child(void *opaque)
{
    int *counter = opaque;

    coroutine_enter(coroutine_create(count_up, counter));
}

static void test_pool_reuse(void)
{
    int counter = 0;

    for (int i = 0; i < 3; i++) {
        coroutine_enter(coroutine_create(enter_child, &counter));
        co_run_sync(count_up, &counter);
    }
    g_assert_cmpint(counter, ==, 6);
}

static void test_many(void)
{
    int counter = 0;

    for (int i = 0; i < 10000; i++) {
        coroutine_enter(coroutine_create(count_up, &counter));
    }
    g_assert_cmpint(counter, ==, 10000);
}

typedef struct MutexTest {
    CoMutex mutex;
    GString *trace;
    int holders;
} MutexTest;

typedef struct MutexUser {
    MutexTest *test;
    char name;
    bool done;
} MutexUser;

static void coroutine_fn mutex_user(void *opaque)
{
    MutexUser *user = opaque;
    MutexTest *test = user->test;

    co_mutex_lock(&test->mutex);
    g_assert_cmpint(++test->holders, ==, 1);
    g_string_append_c(test->trace, user->name);
    /* Hold the lock across a trip through the main loop. */
    coroutine_wake(coroutine_self());
    coroutine_yield();
    g_assert_cmpint(--test->holders, ==, 0);
    co_mutex_unlock(&test->mutex);
    user->done = true;
}

static void test_mutex_fifo(void)
{
    MutexTest test = { .trace = g_string_new(NULL) };
    MutexUser users[4];

    co_mutex_init(&test.mutex);
    for (int i = 0; i < 4; i++) {
        users[i] = (MutexUser) { .test = &test, .name = 'a' + i };
        coroutine_enter(coroutine_create(mutex_user, &users[i]));
    }
    for (int i = 0; i < 4; i++) {
        while (!users[i].done) {
            main_loop_wait(true);
        }
    }
    g_assert_cmpstr(test.trace->str, ==, "abcd");
    g_string_free(test.trace, TRUE);
}

static void coroutine_fn sync_entry(void *opaque)
{
    int *value = opaque;

    coroutine_wake(coroutine_self());
    coroutine_yield();
    *value = 42;
}

static void test_run_sync(void)
{
    int value = 0;

    co_run_sync(sync_entry, &value);
    g_assert_cmpint(value, ==, 42);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/coroutine/yield-enter", test_yield_enter);
    g_test_add_func("/coroutine/nested", test_nested);
    g_test_add_func("/coroutine/many", test_many);
    g_test_add_func("/coroutine/pool-reuse", test_pool_reuse);
    g_test_add_func("/coroutine/mutex/fifo", test_mutex_fifo);
    g_test_add_func("/coroutine/run-sync", test_run_sync);
    return g_test_run();
}
