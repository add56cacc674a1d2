/*
 * Unit tests for the object registry (qom/object.c) and the authz
 * objects (authz/): rule order, exact and glob matching, default
 * policies, look-up errors, and object-del while a user holds a
 * reference.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/error.h"
#include "authz/authz.h"
#include "qapi/qmp-option.h"

static void add(const char *options)
{
    g_autoptr(ObjectOptions) opts =
        qmp_option_parse_ObjectOptions(options, "qom-type", &error_abort);

    g_assert_true(object_add(opts, &error_abort));
}

static bool allowed(const char *id, const char *identity)
{
    Error *err = NULL;
    bool ok = qauthz_is_allowed_by_id(id, identity, &err);

    g_assert_true(ok == (err == NULL));
    error_free(err);
    return ok;
}

static void test_simple(void)
{
    add("authz-simple,id=a,identity=C=GB,,CN=alice");
    g_assert_true(allowed("a", "C=GB,CN=alice"));
    g_assert_false(allowed("a", "C=GB,CN=alice2"));
    g_assert_false(allowed("a", "c=gb,cn=alice"));
    object_del("a", &error_abort);
}

static void test_list(void)
{
    add("{'qom-type': 'authz-list', 'id': 'l',"
        " 'rules': [ { 'match': 'CN=mallory', 'policy': 'deny' },"
        "            { 'match': 'CN=*', 'policy': 'allow', 'format': 'glob' },"
        "            { 'match': 'CN=eve', 'policy': 'allow' } ] }");
    /* First match decides: the deny before the wider glob wins. */
    g_assert_false(allowed("l", "CN=mallory"));
    g_assert_true(allowed("l", "CN=alice"));
    g_assert_true(allowed("l", "CN=eve"));
    /* A glob '*' also matches ',' and '/'. */
    g_assert_true(allowed("l", "CN=a,O=b/c"));
    /* No rule matches: the default policy is deny. */
    g_assert_false(allowed("l", "O=x"));
    object_del("l", &error_abort);

    add("authz-list,id=l,policy=allow,rules.0.match=O=x,"
        "rules.0.policy=deny,rules.0.format=exact");
    g_assert_false(allowed("l", "O=x"));
    g_assert_true(allowed("l", "O=xy"));
    object_del("l", &error_abort);
}

static void test_lookup_errors(void)
{
    Error *err = NULL;

    g_assert_false(qauthz_is_allowed_by_id("none", "x", &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "No authorization object with id 'none'");
    error_free(err);
    err = NULL;

    g_assert_false(object_del("none", &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "object 'none' not found");
    error_free(err);
}

static void test_del_while_referenced(void)
{
    g_autoptr(ObjectOptions) opts =
        qmp_option_parse_ObjectOptions("authz-simple,id=s,identity=x",
                                       "qom-type", &error_abort);
    Error *err = NULL;
    Object *obj;

    g_assert_true(object_add(opts, &error_abort));
    g_assert_false(object_add(opts, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "attempt to add duplicate property 's' to object "
                    "(type 'container')");
    error_free(err);

    /* A user keeps the object; object-del frees the id at once. */
    obj = object_ref(object_find("s"));
    g_assert_true(object_del("s", &error_abort));
    g_assert_null(object_find("s"));
    g_assert_cmpstr(obj->id, ==, "s");
    g_assert_true(container_of(obj, QAuthZ, parent)->is_allowed(
                      container_of(obj, QAuthZ, parent), "x"));
    g_assert_true(object_add(opts, &error_abort));
    g_assert_true(object_find("s") != obj);
    object_unref(obj);
    object_del_all();
    g_assert_null(object_find("s"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/authz/simple", test_simple);
    g_test_add_func("/authz/list", test_list);
    g_test_add_func("/authz/lookup-errors", test_lookup_errors);
    g_test_add_func("/authz/del-while-referenced", test_del_while_referenced);
    return g_test_run();
}
