/*
 * Unit tests for Error objects (util/error.c): the NULL-errp contract of
 * error_prepend() and error_append_hint(), and ERRP_GUARD() redirecting
 * NULL and &error_fatal so that a function can decorate its own error.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/error.h"

/* Fails with "inner", then adds a prefix and a hint, as callers do. */
static bool fail_decorated(Error **errp)
{
    ERRP_GUARD();

    error_setg(errp, "inner");
    error_prepend(errp, "outer: ");
    error_append_hint(errp, "a hint\n");
    g_assert_nonnull(*errp);    /* ERRP_GUARD makes *errp inspectable */
    return false;
}

static void test_decorate_null_errp(void)
{
    /* errp NULL means "ignore the error": nothing to decorate. */
    error_prepend(NULL, "prefix: ");
    error_append_hint(NULL, "hint\n");
}

static void test_decorate_unset_error(void)
{
    Error *err = NULL;

    error_prepend(&err, "prefix: ");
    error_append_hint(&err, "hint\n");
    g_assert_null(err);
}

static void test_decorate_set_error(void)
{
    Error *err = NULL;

    g_assert_false(fail_decorated(&err));
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, "outer: inner");
    g_assert_cmpstr(error_get_hint(err), ==, "a hint\n");
    g_assert_cmpint(error_get_class(err), ==, ERROR_CLASS_GENERIC_ERROR);
    error_free(err);
}

static void test_guard_null_errp(void)
{
    g_assert_false(fail_decorated(NULL));
}

static void test_guard_error_fatal(void)
{
    if (g_test_subprocess()) {
        fail_decorated(&error_fatal);
        return;                 /* not reached: error_fatal exits */
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("blockd: outer: inner\na hint\n");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/error/decorate/null-errp", test_decorate_null_errp);
    g_test_add_func("/error/decorate/unset", test_decorate_unset_error);
    g_test_add_func("/error/decorate/set", test_decorate_set_error);
    g_test_add_func("/error/guard/null-errp", test_guard_null_errp);
    g_test_add_func("/error/guard/error-fatal", test_guard_error_fatal);
    return g_test_run();
}
