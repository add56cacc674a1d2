/*
 * Unit tests for trace control (trace/control.c): the glob matcher,
 * checked against a naive recursive model on every pattern and name over
 * a small alphabet, and the event table behind --trace and QMP, with a
 * group of test events registered as the generated code registers its.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "trace/control.h"

/* The model: QEMU's glob, by its definition. */
static bool model_match(const char *pattern, const char *name)
{
    if (*pattern == '\0') {
        return *name == '\0';
    }
    if (*pattern == '*') {
        return model_match(pattern + 1, name) ||
               (*name && model_match(pattern, name + 1));
    }
    return *name && (*pattern == '?' || *pattern == *name) &&
           model_match(pattern + 1, name + 1);
}

static void test_pattern_examples(void)
{
    static const struct {
        const char *pattern, *name;
        bool match;
    } cases[] = {
        { "nbd_*", "nbd_co_receive_one", true },
        { "nbd_*", "nbd_", true },
        { "nbd_*", "nbd", false },
        { "*_done", "bdrv_co_pread_done", true },
        { "*_done", "bdrv_co_pread", false },
        { "bdrv_co_p????", "bdrv_co_pread", true },
        { "bdrv_co_p????", "bdrv_co_pwrite", false },
        { "*", "", true },
        { "", "", true },
        { "", "a", false },
        { "a*b*c", "aXbYbZc", true },
        { "a*b*c", "aXbYbZ", false },
        { "**a", "a", true },
        { "?", "", false },
        { "NBD_*", "nbd_co_send_simple", false },   /* case-sensitive */
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_cmpint(trace_pattern_match(cases[i].pattern, cases[i].name),
                        ==, cases[i].match);
    }
}

/* Every string of length < @max over "ab*?" (for patterns) or "ab". */
static GPtrArray *all_strings(const char *alphabet, int max)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    size_t base = strlen(alphabet);

    g_ptr_array_add(out, g_strdup(""));
    for (guint i = 0; i < out->len; i++) {
        const char *s = out->pdata[i];

        if ((int)strlen(s) + 1 >= max) {
            continue;
        }
        for (size_t c = 0; c < base; c++) {
            g_ptr_array_add(out, g_strdup_printf("%s%c", s, alphabet[c]));
        }
    }
    return out;
}

static void test_pattern_model(void)
{
    g_autoptr(GPtrArray) patterns = all_strings("ab*?", 6);
    g_autoptr(GPtrArray) names = all_strings("ab", 7);

    for (guint p = 0; p < patterns->len; p++) {
        for (guint n = 0; n < names->len; n++) {
            const char *pattern = patterns->pdata[p];
            const char *name = names->pdata[n];

            if (trace_pattern_match(pattern, name) !=
                model_match(pattern, name)) {
                g_error("pattern '%s' name '%s': matcher says %d", pattern,
                        name, !model_match(pattern, name));
            }
        }
    }
}

static void test_is_pattern(void)
{
    g_assert_true(trace_is_pattern("nbd_*"));
    g_assert_true(trace_is_pattern("nbd_co_receive_on?"));
    g_assert_false(trace_is_pattern("nbd_co_receive_one"));
}

static TraceEvent test_alpha = { .name = "test_alpha" };
static TraceEvent test_beta = { .name = "test_beta" };
static TraceEvent test_gamma = { .name = "test_gamma" };
static TraceEvent *const test_events[] = {
    &test_alpha, &test_beta, &test_gamma, NULL,
};
static TraceEventGroup test_group = { .events = test_events };

static void test_table(void)
{
    TraceEvent *ev;

    g_assert_true(trace_event_find("test_beta") == &test_beta);
    g_assert_null(trace_event_find("test_"));
    /* The real events are registered too. */
    g_assert_nonnull(trace_event_find("nbd_co_receive_one"));

    ev = trace_event_next("test_*", NULL);
    g_assert_true(ev == &test_alpha);
    ev = trace_event_next("test_*", ev);
    g_assert_true(ev == &test_beta);
    ev = trace_event_next("test_*", ev);
    g_assert_true(ev == &test_gamma);
    g_assert_null(trace_event_next("test_*", ev));

    g_assert_cmpuint(trace_enable_events("test_?????", true), ==, 2);
    g_assert_true(trace_event_enabled(&test_alpha));
    g_assert_false(trace_event_enabled(&test_beta));
    g_assert_true(trace_event_enabled(&test_gamma));
    g_assert_cmpuint(trace_enable_events("test_*", false), ==, 3);
    g_assert_false(trace_event_enabled(&test_alpha));
    g_assert_cmpuint(trace_enable_events("test_delta", true), ==, 0);
}

static void test_opt_parse(void)
{
    Error *err = NULL;

    g_assert_true(trace_opt_parse("test_b*", &error_abort));
    g_assert_true(trace_event_enabled(&test_beta));
    g_assert_true(trace_opt_parse("enable=test_gamma", &error_abort));
    g_assert_true(trace_event_enabled(&test_gamma));
    trace_enable_events("test_*", false);

    g_assert_false(trace_opt_parse("test_alpha,foo=bar", &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Invalid parameter 'foo'");
    g_clear_pointer(&err, error_free);
    g_assert_false(trace_event_enabled(&test_alpha));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    trace_register_group(&test_group);
    g_test_add_func("/trace/pattern/examples", test_pattern_examples);
    g_test_add_func("/trace/pattern/model", test_pattern_model);
    g_test_add_func("/trace/pattern/is-pattern", test_is_pattern);
    g_test_add_func("/trace/table", test_table);
    g_test_add_func("/trace/opt-parse", test_opt_parse);
    return g_test_run();
}
