/*
 * Unit tests for the keyval parser (util/keyval.c).
 *
 * Each case parses an option string and compares the resulting tree with
 * the expected JSON text, or the error with QEMU's message.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/error.h"
#include "util/keyval.h"
#include "qapi/util.h"

/* Parse @params and check the result serializes to @expected */
static void check_ok(const char *params, const char *implied,
                     const char *expected)
{
    Error *err = NULL;
    json_object *obj = keyval_parse(params, implied, NULL, &err);
    g_autoptr(GString) text = NULL;

    g_assert_null(err);
    g_assert_nonnull(obj);
    text = qapi_json_to_gstring(obj, false);
    g_assert_cmpstr(text->str, ==, expected);
    json_object_put(obj);
}

static void check_err(const char *params, const char *implied,
                      const char *msg)
{
    Error *err = NULL;
    json_object *obj = keyval_parse(params, implied, NULL, &err);

    g_assert_null(obj);
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    g_assert_cmpint(error_get_class(err), ==, ERROR_CLASS_GENERIC_ERROR);
    error_free(err);
}

static void test_keyval_flat(void)
{
    check_ok("", NULL, "{}");
    check_ok("driver=file,node-name=x,filename=p", NULL,
             "{\"driver\": \"file\", \"node-name\": \"x\", "
             "\"filename\": \"p\"}");
    check_ok("a=1,", NULL, "{\"a\": \"1\"}");
    check_ok("a=", NULL, "{\"a\": \"\"}");
    check_ok("A_b-c=x", NULL, "{\"A_b-c\": \"x\"}");
    /* The last of several values wins */
    check_ok("a=1,a=2", NULL, "{\"a\": \"2\"}");
}

static void test_keyval_dotted(void)
{
    check_ok("driver=raw,file.driver=file,file.filename=a", NULL,
             "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"a\"}}");
    check_ok("a.b.c=1,a.b.d=2,a.e=3", NULL,
             "{\"a\": {\"b\": {\"c\": \"1\", \"d\": \"2\"}, \"e\": \"3\"}}");
}

static void test_keyval_escape(void)
{
    check_ok("filename=a,,b,x=y", NULL,
             "{\"filename\": \"a,b\", \"x\": \"y\"}");
    check_ok("f=,,,,", NULL, "{\"f\": \",,\"}");
    check_ok("f=a=b", NULL, "{\"f\": \"a=b\"}");
}

static void test_keyval_implied(void)
{
    check_ok("nbd,id=e", "type", "{\"type\": \"nbd\", \"id\": \"e\"}");
    check_ok("m0", "chardev", "{\"chardev\": \"m0\"}");
    check_ok("a,,b,c=d", "k", "{\"k\": \"a,b\", \"c\": \"d\"}");
    check_ok("/tmp/x.y", "path", "{\"path\": \"/tmp/x.y\"}");
    /* Only the first element can be implied */
    check_err("a=1,foo", "k", "Expected '=' after parameter 'foo'");
    check_err(",driver=null-co", "driver", "Invalid parameter ''");
}

static void test_keyval_lists(void)
{
    check_ok("bitmaps.0=a,bitmaps.1=b", NULL,
             "{\"bitmaps\": [\"a\", \"b\"]}");
    check_ok("l.1=b,l.0=a", NULL, "{\"l\": [\"a\", \"b\"]}");
    check_ok("l.0.node=n,l.0.name=b,l.1=c", NULL,
             "{\"l\": [{\"node\": \"n\", \"name\": \"b\"}, \"c\"]}");
    check_ok("a.b.0.0=x", NULL, "{\"a\": {\"b\": [[\"x\"]]}}");
    check_err("a.0=1,a.2=x", NULL, "Parameter 'a.1' missing");
    check_err("a.01=1", NULL, "Parameter 'a.0' missing");
    check_err("a.0=1,a.x=2", NULL, "Parameters 'a.*' used inconsistently");
}

static void test_keyval_help(void)
{
    bool help = false;
    Error *err = NULL;
    json_object *obj;

    obj = keyval_parse("help", "driver", &help, &err);
    g_assert_nonnull(obj);
    g_assert_true(help);
    json_object_put(obj);

    help = false;
    obj = keyval_parse("driver=x,?", NULL, &help, &err);
    g_assert_nonnull(obj);
    g_assert_true(help);
    json_object_put(obj);

    /* Without p_help, "help" is an ordinary element */
    check_err("help", NULL, "Expected '=' after parameter 'help'");
}

static void test_keyval_errors(void)
{
    g_autofree char *longkey = g_strnfill(128, 'a');
    g_autofree char *longopt = g_strdup_printf("%s=1", longkey);
    g_autofree char *longmsg = g_strdup_printf("Parameter '%s' is too long",
                                               longkey);
    g_autofree char *okkey = g_strnfill(127, 'a');
    g_autofree char *okopt = g_strdup_printf("%s=1", okkey);
    g_autofree char *okjson = g_strdup_printf("{\"%s\": \"1\"}", okkey);

    check_err("a..b=1", NULL, "Invalid parameter 'a..b'");
    check_err(".a=1", NULL, "Invalid parameter '.a'");
    check_err("a.=1", NULL, "Invalid parameter 'a.'");
    check_err("=x", NULL, "Invalid parameter ''");
    check_err("-a=1", NULL, "Invalid parameter '-a'");
    check_err("a+b=1", NULL, "Invalid parameter 'a+b'");
    check_err("1=x", NULL, "Invalid parameter '1'");
    check_err(",a=1", NULL, "Invalid parameter ''");
    check_err("driver=null-co,foo", NULL,
              "Expected '=' after parameter 'foo'");
    check_err("a=1,a.b=2", NULL, "Parameters 'a.*' used inconsistently");
    check_err("a.b=1,a=2", NULL, "Parameters 'a.*' used inconsistently");
    check_err("x.a.b=1,x.a=2", NULL,
              "Parameters 'x.a.*' used inconsistently");
    check_err(longopt, NULL, longmsg);
    check_ok(okopt, NULL, okjson);
}

static void test_keyval_is_json(void)
{
    g_assert_true(qobject_is_json_opt("{\"driver\": \"file\"}"));
    g_assert_false(qobject_is_json_opt("driver=file"));
    g_assert_false(qobject_is_json_opt(" {"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/keyval/parse/flat", test_keyval_flat);
    g_test_add_func("/keyval/parse/dotted", test_keyval_dotted);
    g_test_add_func("/keyval/parse/escape", test_keyval_escape);
    g_test_add_func("/keyval/parse/implied", test_keyval_implied);
    g_test_add_func("/keyval/parse/lists", test_keyval_lists);
    g_test_add_func("/keyval/parse/help", test_keyval_help);
    g_test_add_func("/keyval/parse/errors", test_keyval_errors);
    g_test_add_func("/keyval/is-json", test_keyval_is_json);
    return g_test_run();
}
