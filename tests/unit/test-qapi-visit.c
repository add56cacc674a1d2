/*
 * Unit tests for the QAPI visitors (util/qapi-*.c) on the generated types
 * of the real schema, and for qmp_dispatch() envelope checks.
 *
 * Input cases compare the error message with QEMU's text; round trips
 * compare the output visitor's JSON with the input.  Run under ASan to
 * check that qapi_free_*() releases partial objects completely.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/error.h"
#include "util/keyval.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qapi/qmp-dispatch.h"
#include "qapi/qapi-visit.h"

static json_object *parse(const char *text)
{
    json_object *obj = json_tokener_parse(text);

    g_assert_nonnull(obj);
    return obj;
}

static Visitor *json_visitor(const char *text)
{
    json_object *obj = parse(text);
    Visitor *v = qobject_input_visitor_new(obj);

    json_object_put(obj);
    return v;
}

static Visitor *keyval_visitor(const char *params)
{
    json_object *obj = keyval_parse(params, NULL, NULL, &error_abort);
    Visitor *v = qobject_input_visitor_new_keyval(obj);

    json_object_put(obj);
    return v;
}

static char *to_json(json_object *obj)
{
    GString *s = qapi_json_to_gstring(obj, false);

    return g_string_free(s, false);
}

/* Visit BlockdevOptions from JSON @text and expect error @msg */
static void blockdev_err(Visitor *v, const char *msg)
{
    BlockdevOptions *opts = NULL;
    Error *err = NULL;

    g_assert_false(visit_type_BlockdevOptions(v, NULL, &opts, &err));
    g_assert_null(opts);
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    error_free(err);
    visit_free(v);
}

static void test_input_struct(void)
{
    g_autoptr(Visitor) v = json_visitor(
        "{\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0},"
        " \"package\": \"p\"}");
    g_autoptr(VersionInfo) info = NULL;

    g_assert_true(visit_type_VersionInfo(v, NULL, &info, &error_abort));
    g_assert_cmpint(info->qemu->major, ==, 7);
    g_assert_cmpint(info->qemu->minor, ==, 2);
    g_assert_cmpstr(info->package, ==, "p");
}

static void test_input_optional(void)
{
    g_autoptr(Visitor) v = json_visitor(
        "{\"driver\": \"file\", \"filename\": \"f\", \"aio\": \"native\","
         " \"cache\": {\"direct\": true}}");
    g_autoptr(BlockdevOptions) opts = NULL;

    g_assert_true(visit_type_BlockdevOptions(v, NULL, &opts, &error_abort));
    g_assert_cmpint(opts->driver, ==, BLOCKDEV_DRIVER_FILE);
    g_assert_null(opts->node_name);
    g_assert_false(opts->has_read_only);
    g_assert_nonnull(opts->cache);
    g_assert_true(opts->cache->has_direct && opts->cache->direct);
    g_assert_false(opts->cache->has_no_flush);
    g_assert_cmpstr(opts->u.file.filename, ==, "f");
    g_assert_true(opts->u.file.has_aio);
    g_assert_cmpint(opts->u.file.aio, ==, BLOCKDEV_AIO_OPTIONS_NATIVE);
    g_assert_false(opts->u.file.has_locking);
    g_assert_null(opts->u.file.pr_manager);
}

static void test_input_union_alternate(void)
{
    g_autoptr(Visitor) v = json_visitor(
        "{\"driver\": \"raw\", \"node-name\": \"r\", \"offset\": 512,"
        " \"file\": {\"driver\": \"null-co\", \"size\": 4096}}");
    g_autoptr(Visitor) v2 = json_visitor(
        "{\"driver\": \"raw\", \"file\": \"proto\"}");
    g_autoptr(BlockdevOptions) opts = NULL;
    g_autoptr(BlockdevOptions) opts2 = NULL;
    BlockdevRef *ref;

    g_assert_true(visit_type_BlockdevOptions(v, NULL, &opts, &error_abort));
    g_assert_cmpint(opts->driver, ==, BLOCKDEV_DRIVER_RAW);
    g_assert_true(opts->u.raw.has_offset);
    g_assert_cmpint(opts->u.raw.offset, ==, 512);
    ref = opts->u.raw.file;
    g_assert_cmpint(ref->type, ==, QTYPE_QDICT);
    g_assert_cmpint(ref->u.definition.driver, ==, BLOCKDEV_DRIVER_NULL_CO);
    g_assert_cmpint(ref->u.definition.u.null_co.size, ==, 4096);

    g_assert_true(visit_type_BlockdevOptions(v2, NULL, &opts2,
                                             &error_abort));
    g_assert_cmpint(opts2->u.raw.file->type, ==, QTYPE_QSTRING);
    g_assert_cmpstr(opts2->u.raw.file->u.reference, ==, "proto");
}

static void test_input_errors(void)
{
    blockdev_err(json_visitor("{\"driver\": \"file\"}"),
                 "Parameter 'filename' is missing");
    blockdev_err(json_visitor("{}"), "Parameter 'driver' is missing");
    blockdev_err(json_visitor("{\"driver\": \"null-co\", \"zz\": 1}"),
                 "Parameter 'zz' is unexpected");
    blockdev_err(json_visitor("{\"driver\": \"null-co\", \"size\": \"1\"}"),
                 "Invalid parameter type for 'size', expected: integer");
    blockdev_err(json_visitor("{\"driver\": \"null-co\", \"size\": 1.5}"),
                 "Invalid parameter type for 'size', expected: integer");
    blockdev_err(json_visitor("{\"driver\": \"nope\"}"),
                 "Parameter 'driver' does not accept value 'nope'");
    blockdev_err(json_visitor("{\"driver\": 1}"),
                 "Invalid parameter type for 'driver', expected: string");
    blockdev_err(json_visitor("{\"driver\": \"null-co\","
                              " \"cache\": {\"direct\": 1}}"),
                 "Invalid parameter type for 'cache.direct', "
                 "expected: boolean");
    blockdev_err(json_visitor("{\"driver\": \"null-co\", \"cache\": []}"),
                 "Invalid parameter type for 'cache', expected: object");
    blockdev_err(json_visitor("{\"driver\": \"raw\", \"file\": 3}"),
                 "Invalid parameter type for 'file', expected: BlockdevRef");
    blockdev_err(json_visitor("{\"driver\": \"raw\", \"file\": "
                              "{\"driver\": \"null-co\", \"zz\": 1}}"),
                 "Parameter 'file.zz' is unexpected");
    blockdev_err(json_visitor("{\"driver\": \"raw\", \"file\": "
                              "{\"driver\": \"file\"}}"),
                 "Parameter 'file.filename' is missing");
    blockdev_err(json_visitor("{\"driver\": \"raw\", \"file\": "
                              "{\"driver\": \"raw\", \"file\": "
                              "{\"driver\": \"null-co\", \"size\": true}}}"),
                 "Invalid parameter type for 'file.file.size', "
                 "expected: integer");
    blockdev_err(json_visitor("[]"),
                 "Invalid parameter type for 'null', expected: object");
}

static void export_err(const char *text, const char *msg)
{
    g_autoptr(Visitor) v = json_visitor(text);
    BlockExportOptions *opts = NULL;
    Error *err = NULL;

    g_assert_false(visit_type_BlockExportOptions(v, NULL, &opts, &err));
    g_assert_null(opts);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    error_free(err);
}

static void test_input_lists(void)
{
    g_autoptr(Visitor) v = json_visitor(
        "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
        " \"bitmaps\": [\"b0\", {\"node\": \"x\", \"name\": \"b1\"}]}");
    g_autoptr(BlockExportOptions) opts = NULL;
    BlockDirtyBitmapOrStrList *l;

    g_assert_true(visit_type_BlockExportOptions(v, NULL, &opts,
                                                &error_abort));
    l = opts->u.nbd.bitmaps;
    g_assert_nonnull(l);
    g_assert_cmpint(l->value->type, ==, QTYPE_QSTRING);
    g_assert_cmpstr(l->value->u.local, ==, "b0");
    l = l->next;
    g_assert_cmpint(l->value->type, ==, QTYPE_QDICT);
    g_assert_cmpstr(l->value->u.external.node, ==, "x");
    g_assert_cmpstr(l->value->u.external.name, ==, "b1");
    g_assert_null(l->next);

    export_err("{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
               " \"bitmaps\": [\"a\", {\"node\": \"x\"}]}",
               "Parameter 'bitmaps[1].name' is missing");
    export_err("{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
               " \"bitmaps\": [3]}",
               "Invalid parameter type for 'bitmaps[0]', "
               "expected: BlockDirtyBitmapOrStr");
    export_err("{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
               " \"bitmaps\": {}}",
               "Invalid parameter type for 'bitmaps', expected: array");
    export_err("{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
               " \"bitmaps\": [{\"node\": \"x\", \"name\": \"y\","
               " \"zz\": 1}]}",
               "Parameter 'bitmaps[0].zz' is unexpected");
}

static void test_input_integers(void)
{
    g_autoptr(Visitor) v = json_visitor(
        "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\"},"
        " \"max-connections\": 4294967296}");
    g_autoptr(Visitor) v2 = json_visitor(
        "{\"driver\": \"null-co\", \"latency-ns\": 18446744073709551615}");
    g_autoptr(Visitor) v3 = json_visitor(
        "{\"driver\": \"null-co\", \"size\": 9223372036854775808}");
    NbdServerOptions *nbd = NULL;
    g_autoptr(BlockdevOptions) opts = NULL;
    BlockdevOptions *opts3 = NULL;
    Error *err = NULL;

    g_assert_false(visit_type_NbdServerOptions(v, NULL, &nbd, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Parameter 'max-connections' expects uint32_t");
    error_free(err);
    err = NULL;

    g_assert_true(visit_type_BlockdevOptions(v2, NULL, &opts, &error_abort));
    g_assert_cmpuint(opts->u.null_co.latency_ns, ==, UINT64_MAX);

    g_assert_false(visit_type_BlockdevOptions(v3, NULL, &opts3, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Invalid parameter type for 'size', expected: integer");
    error_free(err);
}

static void test_keyval_mode(void)
{
    g_autoptr(Visitor) v = keyval_visitor(
        "driver=raw,file.driver=null-co,file.size=0x1000,"
        "file.latency-ns=-1,file.read-zeroes=on,read-only=yes,offset=010,"
        "cache.direct=off");
    g_autoptr(BlockdevOptions) opts = NULL;
    BlockdevOptions *inner;

    g_assert_true(visit_type_BlockdevOptions(v, NULL, &opts, &error_abort));
    g_assert_true(opts->has_read_only && opts->read_only);
    g_assert_cmpint(opts->u.raw.offset, ==, 8);
    g_assert_true(opts->cache->has_direct && !opts->cache->direct);
    inner = &opts->u.raw.file->u.definition;
    g_assert_cmpint(inner->u.null_co.size, ==, 4096);
    g_assert_cmpuint(inner->u.null_co.latency_ns, ==, UINT64_MAX);
    g_assert_true(inner->u.null_co.read_zeroes);

    blockdev_err(keyval_visitor("driver=null-co,size=x"),
                 "Parameter 'size' expects integer");
    blockdev_err(keyval_visitor("driver=null-co,size=1k"),
                 "Parameter 'size' expects integer");
    blockdev_err(keyval_visitor("driver=null-co,size="),
                 "Parameter 'size' expects integer");
    blockdev_err(keyval_visitor("driver=null-co,read-zeroes=maybe"),
                 "Parameter 'read-zeroes' expects 'on' or 'off'");
    blockdev_err(keyval_visitor("driver=null-co,cache.direct=1"),
                 "Parameter 'cache.direct' expects 'on' or 'off'");
    blockdev_err(keyval_visitor("driver=null-co,cache=on"),
                 "Invalid parameter type for 'cache', expected: object");
    blockdev_err(keyval_visitor("driver=raw,file.driver=null-co,"
                                "file.zz=1"),
                 "Parameter 'file.zz' is unexpected");
    blockdev_err(keyval_visitor("driver=null-co,size.a=1"),
                 "Invalid parameter type for 'size', expected: string");
    blockdev_err(keyval_visitor("driver=nope"),
                 "Parameter 'driver' does not accept value 'nope'");
    blockdev_err(keyval_visitor("driver=null-co,a=1,a=2"),
                 "Parameter 'a' is unexpected");
}

static void test_keyval_mode_lists(void)
{
    g_autoptr(Visitor) v = keyval_visitor(
        "type=nbd,id=e,node-name=n,bitmaps.0=a,bitmaps.1.node=x,"
        "bitmaps.1.name=b");
    g_autoptr(BlockExportOptions) opts = NULL;
    g_autoptr(Visitor) v2 = keyval_visitor(
        "addr.type=unix,addr.path=/s,max-connections=-1");
    NbdServerOptions *nbd = NULL;
    Error *err = NULL;

    g_assert_true(visit_type_BlockExportOptions(v, NULL, &opts,
                                                &error_abort));
    g_assert_cmpstr(opts->u.nbd.bitmaps->value->u.local, ==, "a");
    g_assert_cmpstr(opts->u.nbd.bitmaps->next->value->u.external.name, ==,
                    "b");

    g_assert_false(visit_type_NbdServerOptions(v2, NULL, &nbd, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Parameter 'max-connections' expects uint32_t");
    error_free(err);
}

static void test_size_parse(void)
{
    static const struct {
        const char *str;
        bool ok;
        uint64_t value;
    } cases[] = {
        { "0", true, 0 },
        { "512", true, 512 },
        { "1k", true, 1024 },
        { "1K", true, 1024 },
        { "2M", true, 2 << 20 },
        { "1G", true, UINT64_C(1) << 30 },
        { "1.5G", true, UINT64_C(3) << 29 },
        { "1T", true, UINT64_C(1) << 40 },
        { "15E", true, UINT64_C(15) << 60 },
        { "16E", false, 0 },
        { "4B", true, 4 },
        { "0x10", true, 16 },
        { "1.5", false, 0 },
        { "1.5B", false, 0 },
        { "-1", false, 0 },
        { "", false, 0 },
        { "1x", false, 0 },
        { "1kk", false, 0 },
        { "18446744073709551615", true, UINT64_MAX },
        { "18446744073709551616", false, 0 },
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        uint64_t val = 0;

        g_assert_cmpint(qapi_size_parse_str(cases[i].str, &val), ==,
                        cases[i].ok);
        if (cases[i].ok) {
            g_assert_cmpuint(val, ==, cases[i].value);
        }
    }
}

static void test_keyval_size_type(void)
{
    json_object *obj = parse("{\"s\": \"64k\", \"t\": \"x\"}");
    g_autoptr(Visitor) v = qobject_input_visitor_new_keyval(obj);
    uint64_t s;
    Error *err = NULL;

    json_object_put(obj);
    g_assert_true(visit_start_struct(v, NULL, NULL, 0, &error_abort));
    g_assert_true(visit_type_size(v, "s", &s, &error_abort));
    g_assert_cmpuint(s, ==, 65536);
    g_assert_false(visit_type_size(v, "t", &s, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Parameter 't' expects size");
    error_free(err);
    g_assert_true(visit_check_struct(v, &error_abort));
    visit_end_struct(v, NULL);
}

/* Visit @text as @type in, then out, and compare the JSON */
#define ROUND_TRIP(type, text)                                          \
    do {                                                                \
        g_autoptr(Visitor) in = json_visitor(text);                     \
        g_autoptr(type) obj = NULL;                                     \
        json_object *out = NULL;                                        \
        Visitor *ov;                                                    \
        g_autofree char *result = NULL;                                 \
                                                                        \
        g_assert_true(visit_type_##type(in, NULL, &obj, &error_abort)); \
        ov = qobject_output_visitor_new(&out);                          \
        g_assert_true(visit_type_##type(ov, NULL, &obj, &error_abort)); \
        visit_complete(ov, &out);                                       \
        visit_free(ov);                                                 \
        result = to_json(out);                                          \
        json_object_put(out);                                           \
        g_assert_cmpstr(result, ==, text);                              \
    } while (0)

static void test_output_round_trip(void)
{
    ROUND_TRIP(BlockdevOptions,
               "{\"driver\": \"raw\", \"node-name\": \"r\", \"cache\": "
               "{\"direct\": true}, \"file\": {\"driver\": \"file\", "
               "\"filename\": \"a,b\", \"aio\": \"io_uring\"}, "
               "\"size\": 4096}");
    ROUND_TRIP(BlockdevOptions,
               "{\"driver\": \"null-co\", \"latency-ns\": "
               "18446744073709551615}");
    ROUND_TRIP(BlockExportOptions,
               "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\", "
               "\"bitmaps\": [\"a\", {\"node\": \"x\", \"name\": \"b\"}]}");
    ROUND_TRIP(SocketAddressLegacy,
               "{\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}");
    ROUND_TRIP(BlockDeviceInfo,
               "{\"file\": \"f\", \"ro\": false, \"drv\": \"raw\", "
               "\"backing_file_depth\": 0, \"encrypted\": false, "
               "\"detect_zeroes\": \"unmap\", \"bps\": 1, \"bps_rd\": 2, "
               "\"bps_wr\": 3, \"iops\": 4, \"iops_rd\": 5, \"iops_wr\": 6, "
               "\"image\": {\"filename\": \"f\", \"format\": \"raw\", "
               "\"virtual-size\": 1024}, "
               "\"cache\": {\"writeback\": true, \"direct\": false, "
               "\"no-flush\": false}, \"write_threshold\": 0, "
               "\"dirty-bitmaps\": [{\"count\": 0, \"granularity\": 65536, "
               "\"recording\": true, \"busy\": false, "
               "\"persistent\": false}]}");
}

static void test_dealloc_partial(void)
{
    /* Failures deep inside lists, unions and alternates free everything */
    static const char *const bad[] = {
        "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
        " \"name\": \"x\", \"bitmaps\": [\"a\", {\"node\": \"x\","
        " \"name\": \"b\"}, {\"node\": \"y\"}]}",
        "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
        " \"description\": \"d\", \"bitmaps\": [\"a\", 7]}",
        "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
        " \"iothread\": \"t\", \"zz\": 1}",
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(Visitor) v = json_visitor(bad[i]);
        BlockExportOptions *opts = NULL;
        Error *err = NULL;

        g_assert_false(visit_type_BlockExportOptions(v, NULL, &opts, &err));
        g_assert_null(opts);
        error_free(err);
    }
    qapi_free_BlockExportOptions(NULL);
    qapi_free_strList(NULL);
}

static void test_option_parse(void)
{
    bool keyval;
    Error *err = NULL;
    json_object *obj;

    obj = qmp_option_parse("{\"driver\": \"null-co\"}", "driver", &keyval,
                           &error_abort);
    g_assert_false(keyval);
    json_object_put(obj);
    obj = qmp_option_parse("null-co,size=1", "driver", &keyval,
                           &error_abort);
    g_assert_true(keyval);
    json_object_put(obj);
    g_assert_null(qmp_option_parse("{", NULL, &keyval, &err));
    g_assert_true(g_str_has_prefix(error_get_pretty(err),
                                   "JSON parse error"));
    error_free(err);
    err = NULL;
    g_assert_null(qmp_option_parse("help", "driver", &keyval, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Help is not available for this option");
    error_free(err);
}

/* A marshaller that echoes its arguments, or fails on {"fail": true} */
static void marshal_echo(json_object *args, json_object **ret, Error **errp)
{
    json_object *fail;

    if (json_object_object_get_ex(args, "fail", &fail)) {
        error_setg(errp, "failed as asked");
        return;
    }
    *ret = json_object_get(args);
}

static void marshal_void(json_object *args, json_object **ret, Error **errp)
{
}

static void dispatch_check(QmpCommandList *cmds, const char *req,
                           const char *expected)
{
    json_object *request = json_tokener_parse(req);
    json_object *resp = qmp_dispatch(cmds, request, false);
    g_autofree char *text = to_json(resp);

    g_assert_cmpstr(text, ==, expected);
    json_object_put(request);
    json_object_put(resp);
}

static void test_dispatch(void)
{
    QmpCommandList cmds;

    qmp_command_list_init(&cmds);
    qmp_register_command(&cmds, "echo", marshal_echo, QCO_NO_OPTIONS);
    qmp_register_command(&cmds, "void", marshal_void, QCO_NO_OPTIONS);
    g_assert_nonnull(qmp_find_command(&cmds, "echo"));
    g_assert_null(qmp_find_command(&cmds, "nope"));

    dispatch_check(&cmds, "{\"execute\": \"void\"}", "{\"return\": {}}");
    dispatch_check(&cmds, "{\"execute\": \"echo\", \"arguments\": "
                   "{\"a\": [1]}, \"id\": {\"x\": null}}",
                   "{\"return\": {\"a\": [1]}, \"id\": {\"x\": null}}");
    dispatch_check(&cmds, "{\"execute\": \"echo\", \"id\": null, "
                   "\"arguments\": {\"fail\": true}}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"failed as asked\"}, \"id\": null}");
    dispatch_check(&cmds, "[1]", "{\"error\": {\"class\": \"GenericError\","
                   " \"desc\": \"QMP input must be a JSON object\"}}");
    dispatch_check(&cmds, "{\"id\": 1}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"QMP input lacks member 'execute'\"}, \"id\": 1}");
    dispatch_check(&cmds, "{\"execute\": true}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"QMP input member 'execute' must be a string\"}}");
    dispatch_check(&cmds, "{\"execute\": \"void\", \"arguments\": 1}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"QMP input member 'arguments' must be an object\"}}");
    dispatch_check(&cmds, "{\"execute\": \"void\", \"foo\": 1}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"QMP input member 'foo' is unexpected\"}}");
    dispatch_check(&cmds, "{\"exec-oob\": \"void\"}",
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                   "\"QMP input member 'exec-oob' is unexpected\"}}");
    dispatch_check(&cmds, "{\"execute\": \"nope\", \"id\": \"a\"}",
                   "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                   "\"The command nope has not been found\"}, "
                   "\"id\": \"a\"}");
    qmp_command_list_destroy(&cmds);
}

static void test_json_format(void)
{
    json_object *obj = parse("{\"s\": \"a\\\"\\\\\\n\\u0001\\u00e9"
                             "\\ud83d\\ude00\", \"l\": [], \"d\": {},"
                             " \"n\": -5, \"b\": true, \"z\": null}");
    g_autofree char *text = to_json(obj);

    g_assert_cmpstr(text, ==,
                    "{\"s\": \"a\\\"\\\\\\n\\u0001\\u00e9\\ud83d\\ude00\", "
                    "\"l\": [], \"d\": {}, \"n\": -5, \"b\": true, "
                    "\"z\": null}");
    json_object_put(obj);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/input/struct", test_input_struct);
    g_test_add_func("/qapi/input/optional", test_input_optional);
    g_test_add_func("/qapi/input/union-alternate",
                    test_input_union_alternate);
    g_test_add_func("/qapi/input/errors", test_input_errors);
    g_test_add_func("/qapi/input/lists", test_input_lists);
    g_test_add_func("/qapi/input/integers", test_input_integers);
    g_test_add_func("/qapi/input/keyval", test_keyval_mode);
    g_test_add_func("/qapi/input/keyval-lists", test_keyval_mode_lists);
    g_test_add_func("/qapi/input/keyval-size", test_keyval_size_type);
    g_test_add_func("/qapi/size-parse", test_size_parse);
    g_test_add_func("/qapi/option-parse", test_option_parse);
    g_test_add_func("/qapi/output/round-trip", test_output_round_trip);
    g_test_add_func("/qapi/dealloc/partial", test_dealloc_partial);
    g_test_add_func("/qapi/dispatch/envelope", test_dispatch);
    g_test_add_func("/qapi/json/format", test_json_format);
    return g_test_run();
}
