/*
 * Unit tests for the streaming JSON parser (util/json-parser.c).
 *
 * Every case feeds its input three ways (all at once, byte by byte, and
 * in chunks of seven bytes) and compares what the streamer emits, as a
 * transcript with one line per value ("= <json>") or error ("! <msg>"),
 * with the expected one.  The expected messages are those of
 * qemu-storage-daemon 7.2 for the same input.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/error.h"
#include "util/json-parser.h"
#include "qapi/util.h"

#define MiB (1024 * 1024)

typedef struct Transcript {
    GString *text;
    unsigned values;
    unsigned errors;
} Transcript;

static void record(void *opaque, json_object *value, Error *err)
{
    Transcript *t = opaque;

    if (err) {
        g_string_append_printf(t->text, "! %s\n", error_get_pretty(err));
        error_free(err);
        t->errors++;
    } else {
        g_autoptr(GString) json = qapi_json_to_gstring(value, false);

        g_string_append_printf(t->text, "= %s\n", json->str);
        json_object_put(value);
        t->values++;
    }
}

/* Feed @len bytes of @in in pieces of @chunk bytes (0: all at once) */
static char *run(const char *in, size_t len, size_t chunk, bool flush)
{
    Transcript t = { .text = g_string_new("") };
    JsonStreamer *s = json_streamer_new(record, &t);
    size_t pos = 0;

    if (!chunk) {
        chunk = len;
    }
    while (pos < len) {
        size_t n = MIN(chunk, len - pos);

        json_streamer_feed(s, in + pos, n);
        pos += n;
    }
    if (flush) {
        json_streamer_flush(s);
    }
    json_streamer_free(s);
    return g_string_free(t.text, false);
}

static void check_len(const char *in, size_t len, const char *expected)
{
    g_autofree char *whole = run(in, len, 0, false);
    g_autofree char *bytes = run(in, len, 1, false);
    g_autofree char *chunks = run(in, len, 7, false);

    g_assert_cmpstr(whole, ==, expected);
    g_assert_cmpstr(bytes, ==, expected);
    g_assert_cmpstr(chunks, ==, expected);
}

static void check(const char *in, const char *expected)
{
    check_len(in, strlen(in), expected);
}

/*
 * A single value, written back by qapi_json_to_gstring().  A newline
 * is appended: a number or keyword is complete only when something
 * follows it.
 */
static void check_value(const char *in, const char *json)
{
    g_autofree char *line = g_strdup_printf("%s\n", in);
    g_autofree char *expected = g_strdup_printf("= %s\n", json);

    check(line, expected);
}

/* A single error for input that ends with a newline */
static void check_error(const char *in, const char *msg)
{
    g_autofree char *line = g_strdup_printf("%s\n", in);
    g_autofree char *expected = g_strdup_printf("! %s\n", msg);

    check(line, expected);
}

/* The one-shot parser: @json on success, else @msg */
static void check_string(const char *in, const char *json, const char *msg)
{
    Error *err = NULL;
    json_object *obj = json_parse_string(in, &err);

    if (msg) {
        g_assert_nonnull(err);
        g_assert_null(obj);
        g_assert_cmpstr(error_get_pretty(err), ==, msg);
        error_free(err);
    } else {
        g_autoptr(GString) text = NULL;

        g_assert_null(err);
        text = qapi_json_to_gstring(obj, false);
        g_assert_cmpstr(text->str, ==, json);
        json_object_put(obj);
    }
}

/* --- valid values --- */

static void test_literals(void)
{
    check_value("true", "true");
    check_value("false ", "false");
    check_value("null\n", "null");
    check_value("\"\"", "\"\"");
    check_value("[]", "[]");
    check_value("{}", "{}");
    check_value(" \t\r\n[ \t\r\n1 \t\r\n, 2 ]", "[1, 2]");
    check("1 2\n3", "= 1\n= 2\n");
    check("1", "");
    check("truefalse ", "! JSON parse error, invalid keyword 'truefalse'\n");
    check("[1]{}\"a\"'b'", "= [1]\n= {}\n= \"a\"\n= \"b\"\n");
}

static void test_nesting(void)
{
    check_value("{\"a\": [1, {\"b\": null, \"c\": [true, false]}], "
                "\"d\": {}}",
                "{\"a\": [1, {\"b\": null, \"c\": [true, false]}], "
                "\"d\": {}}");
    check_value("[[[[]]], [[]], []]", "[[[[]]], [[]], []]");
    check_value("{\"a\": {\"a\": {\"a\": 1}}}",
                "{\"a\": {\"a\": {\"a\": 1}}}");
    /* Member order is kept */
    check_value("{\"z\": 1, \"a\": 2, \"m\": 3}",
                "{\"z\": 1, \"a\": 2, \"m\": 3}");
}

static void test_numbers_int(void)
{
    check_value("0", "0");
    check_value("-0", "0");
    check_value("42", "42");
    check_value("-42", "-42");
    check_value("9223372036854775807", "9223372036854775807");
    check_value("-9223372036854775808", "-9223372036854775808");
    /* Beyond int64: uint64 while it fits, as in QEMU */
    check_value("9223372036854775808", "9223372036854775808");
    check_value("18446744073709551615", "18446744073709551615");
}

static void test_numbers_double(void)
{
    json_object *obj;
    Error *err = NULL;

    check_value("1.5", "1.5");
    check_value("-0.25", "-0.25");
    check_value("1e2", "100");
    check_value("1E+2", "100");
    check_value("25e-2", "0.25");
    check_value("-2.5E1", "-25");
    /* Integers beyond 64 bits become doubles */
    check_value("18446744073709551616", "1.8446744073709552e+19");
    check_value("-9223372036854775809", "-9.2233720368547758e+18");

    obj = json_parse_string("1.0", &err);
    g_assert_null(err);
    g_assert_true(json_object_is_type(obj, json_type_double));
    g_assert_cmpfloat(json_object_get_double(obj), ==, 1.0);
    json_object_put(obj);
    obj = json_parse_string("12", &err);
    g_assert_true(json_object_is_type(obj, json_type_int));
    json_object_put(obj);
}

/* --- strings --- */

static void test_strings_escapes(void)
{
    check_value("\"a\\\"b\\\\c\\/d\\'e\"", "\"a\\\"b\\\\c/d'e\"");
    check_value("\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\"");
    check_value("\"\\u0041\\u00e9\\u20AC\"", "\"A\\u00e9\\u20ac\"");
    check_value("\"\\u0001\\u007f\"", "\"\\u0001\\u007f\"");
}

static void test_strings_single_quoted(void)
{
    check_value("'abc'", "\"abc\"");
    check_value("'a\"b'", "\"a\\\"b\"");
    check_value("'it\\'s'", "\"it's\"");
    check_value("\"it's\"", "\"it's\"");
    check_value("{'a': 'b'}", "{\"a\": \"b\"}");
    /* Two strings, not an escaped quote */
    check("'a''b'", "= \"a\"\n= \"b\"\n");
}

static void test_strings_surrogates(void)
{
    check_value("\"\\ud83d\\ude00\"", "\"\\ud83d\\ude00\"");
    check_value("\"\\uD800\\uDC00\"", "\"\\ud800\\udc00\"");
    check_value("\"\\udbff\\udffd\"", "\"\\udbff\\udffd\"");
    check_error("\"\\ud800\"",
                "JSON parse error, \\ud800 is not a valid Unicode character");
    check_error("\"\\udc00\"",
                "JSON parse error, \\udc00 is not a valid Unicode character");
    check_error("\"\\ud800\\u0041\"",
                "JSON parse error, \\ud800 is not a valid Unicode character");
    check_error("\"\\ud800x\"",
                "JSON parse error, \\ud800 is not a valid Unicode character");
    check_error("\"\\ud800\\ud800\"",
                "JSON parse error, \\ud800 is not a valid Unicode character");
    /* Noncharacters, and the whole pair is quoted */
    check_error("\"\\uDBFF\\uDFFF\"", "JSON parse error, \\uDBFF\\uDFFF "
                "is not a valid Unicode character");
    check_error("\"\\uffff\"",
                "JSON parse error, \\uffff is not a valid Unicode character");
    check_error("\"\\ufdd0\"",
                "JSON parse error, \\ufdd0 is not a valid Unicode character");
}

static void test_strings_bad_unicode_escape(void)
{
    /* The quoted text stops at the end of the token */
    check_error("\"\\u\"",
                "JSON parse error, \\u\" is not a valid Unicode character");
    check_error("\"\\u12\"",
                "JSON parse error, \\u12\" is not a valid Unicode character");
    check_error("\"\\u12g4\"",
                "JSON parse error, \\u12g4 is not a valid Unicode character");
    check_error("\"\\u+041\"",
                "JSON parse error, \\u+041 is not a valid Unicode character");
}

static void test_strings_utf8(void)
{
    check_value("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
                "\"\\u00e9\\u20ac\\ud83d\\ude00\"");
    check_value("\"\x7f\"", "\"\\u007f\"");
    /* Bad UTF-8: truncated, overlong, surrogate, too big, noncharacter */
    check_error("\"\xc3\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xc3(\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\x80\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xc1\xbf\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xe0\x80\x80\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xed\xa0\x80\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xf4\x90\x80\x80\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xef\xbf\xbf\"",
                "JSON parse error, invalid UTF-8 sequence in string");
    check_error("\"\xf8\x88\x80\x80\x80\"",
                "JSON parse error, invalid UTF-8 sequence in string");
}

static void test_strings_nul(void)
{
    json_object *obj;
    Error *err = NULL;

    /* U+0000 is stored as C0 80 and written back as \u0000 */
    check_value("\"a\\u0000b\"", "\"a\\u0000b\"");
    check_value("\"a\xc0\x80" "b\"", "\"a\\u0000b\"");
    check_value("{\"\\u0000\": 1}", "{\"\\u0000\": 1}");
    obj = json_parse_string("\"\\u0000\"", &err);
    g_assert_null(err);
    g_assert_cmpint(json_object_get_string_len(obj), ==, 2);
    g_assert_cmpmem(json_object_get_string(obj), 2, "\xc0\x80", 2);
    json_object_put(obj);
}

/* --- errors --- */

static void test_errors_syntax(void)
{
    check_error("{\"execute\": }", "JSON parse error, expecting value");
    check_error("{\"a\": 1,}", "JSON parse error, expecting value");
    check_error("[1,]", "JSON parse error, expecting value");
    check_error("[,]", "JSON parse error, expecting value");
    check_error("{,}", "JSON parse error, expecting value");
    check_error("{:1}", "JSON parse error, expecting value");
    check_error("{\"a\"::1}", "JSON parse error, expecting value");
    check_error("[1,,2]", "JSON parse error, expecting value");
    check_error("{]", "JSON parse error, expecting value");
    check_error("[}", "JSON parse error, expecting value");
    check_error("}", "JSON parse error, expecting value");
    check_error("]", "JSON parse error, expecting value");
    check_error(":", "JSON parse error, expecting value");
    check_error(",", "JSON parse error, expecting value");
    check_error("[1 2]", "JSON parse error, expected separator in list");
    check_error("[1}", "JSON parse error, expected separator in list");
    check_error("[\"a\": 1]", "JSON parse error, expected separator in list");
    check_error("{\"a\": 1 \"b\": 2}",
                "JSON parse error, expected separator in dict");
    check_error("{\"a\": 1]", "JSON parse error, expected separator in dict");
    check_error("{\"a\"}", "JSON parse error, missing : in object pair");
    check_error("{\"a\" nope}", "JSON parse error, missing : in object pair");
    check_error("{1: 2}", "JSON parse error, key is not a string in object");
    check_error("{true: 1}",
                "JSON parse error, key is not a string in object");
    check_error("{[1, 2]: 3}",
                "JSON parse error, key is not a string in object");
    check_error("{nope: 1}", "JSON parse error, invalid keyword 'nope'");
    check_error("{\"execute\": nope}",
                "JSON parse error, invalid keyword 'nope'");
    check_error("nul", "JSON parse error, invalid keyword 'nul'");
    check_error("[true1]", "JSON parse error, expected separator in list");
    check_error("\"\\x\"",
                "JSON parse error, invalid escape sequence in string");
    check_error("\"\\U0041\"",
                "JSON parse error, invalid escape sequence in string");
    check_error("\"\\\x7f\"",
                "JSON parse error, invalid escape sequence in string");
}

static void test_errors_duplicate_key(void)
{
    check_error("{\"a\": 1, \"a\": 2}", "JSON parse error, duplicate key");
    check_error("{\"execute\": \"query-version\", \"id\": 1, \"id\": 2}",
                "JSON parse error, duplicate key");
    /* Reported after the member's value, before what follows */
    check_error("{\"a\": 1, \"a\": 2 \"b\"}",
                "JSON parse error, duplicate key");
    check_error("{\"a\": 1, \"a\": [1 2]}",
                "JSON parse error, expected separator in list");
    check_error("{\"a\": 1, \"a\"}",
                "JSON parse error, missing : in object pair");
    /* Same key in different objects is fine */
    check_value("{\"a\": {\"a\": 1}, \"b\": {\"a\": 2}}",
                "{\"a\": {\"a\": 1}, \"b\": {\"a\": 2}}");
}

static void test_errors_lexical(void)
{
    check_error("@", "JSON parse error, stray '@'");
    check_error("@@@", "JSON parse error, stray '@'");
    check_error("+1", "JSON parse error, stray '+'");
    check_error(".5", "JSON parse error, stray '.'");
    check_error("NULL", "JSON parse error, stray 'N'");
    check_error("%d", "JSON parse error, stray '%'");
    check_error("1.x", "JSON parse error, stray '1.x'");
    check_error("01", "JSON parse error, stray '01'");
    check_error("-x", "JSON parse error, stray '-x'");
    check_error("1ex", "JSON parse error, stray '1ex'");
    check_error("1e+x", "JSON parse error, stray '1e+x'");
    check_error("\xff", "JSON parse error, stray '\xff'");
    check_error("\"a\x01" "b\"", "JSON parse error, stray '\"a\x01'");
    check_error("\"\\\x01\"", "JSON parse error, stray '\"\\\x01'");
    check_error("\"a\tb\"", "JSON parse error, stray '\"a\t'");
    /* The newline that ends the line is part of the bad token */
    check("\"abc\n", "! JSON parse error, stray '\"abc\n'\n");
    check("1.\n", "! JSON parse error, stray '1.\n'\n");
    check("-\n", "! JSON parse error, stray '-\n'\n");
    /* The message stops at a NUL */
    check_len("\"a\0b\"\n", 6, "! JSON parse error, stray '\"a'\n");
    /* Control characters and bytes FE, FF each count */
    check("\x01\x01\n", "! JSON parse error, stray '\x01'\n"
          "! JSON parse error, stray '\x01'\n");
    check("\xfe\xff\n", "! JSON parse error, stray '\xfe'\n"
          "! JSON parse error, stray '\xff'\n");
}

static void test_errors_one_shot(void)
{
    check_string("{\"a\": [1, 2]}", "{\"a\": [1, 2]}", NULL);
    check_string("  {} \n", "{}", NULL);
    check_string("{bad", NULL, "JSON parse error, invalid keyword 'bad'");
    check_string("{", NULL, "JSON parse error, premature EOI");
    check_string("{\"a\"", NULL, "JSON parse error, premature EOI");
    check_string("{\"a\": [1, 2,", NULL, "JSON parse error, premature EOI");
    check_string("{\"a\": [1}", NULL,
                 "JSON parse error, expected separator in list");
    check_string("{\"a\": \"b", NULL, "JSON parse error, stray '\"b'");
    check_string("{\"a\": -}", NULL, "JSON parse error, stray '-}'");
    check_string("{\"a\": -", NULL, "JSON parse error, stray '-'");
    check_string("{\"a\": 1,}", NULL, "JSON parse error, expecting value");
    check_string("{\"a\": 1, \"a\": 2}", NULL,
                 "JSON parse error, duplicate key");
    check_string("{} {}", NULL, "Expecting at most one JSON value");
    check_string("{} x", NULL, "Expecting at most one JSON value");
    check_string("{}]", NULL, "Expecting at most one JSON value");
    check_string("{}@", NULL, "Expecting at most one JSON value");
    check_string("{@} {}", NULL, "JSON parse error, stray '@'");
    check_string("", NULL, "Expecting a JSON value");
    check_string("  ", NULL, "Expecting a JSON value");
    /* A number or keyword at the very end is complete */
    check_string("12", "12", NULL);
    check_string("true", "true", NULL);
    check_string("'it\\'s'", "\"it's\"", NULL);
}

/* --- resynchronisation --- */

static void test_resync_syntax(void)
{
    /* The rest of the value is consumed; one error per value */
    check("{\"a\": [1}\n] [2]",
          "! JSON parse error, expected separator in list\n= [2]\n");
    check("{\"a\": 1]} {}",
          "! JSON parse error, expected separator in dict\n"
          "! JSON parse error, expecting value\n= {}\n");
    check("{\"a\": 1}} 5 ", "= {\"a\": 1}\n"
          "! JSON parse error, expecting value\n= 5\n");
    check("[[1]]] 5 ", "= [[1]]\n! JSON parse error, expecting value\n= 5\n");
    /* An unclosed value swallows what follows */
    check("[{]\n{\"a\": 1}\n", "");
}

static void test_resync_lexical(void)
{
    /* Skip to a structural or control character (not tab) */
    check("@ {\"a\": 1}", "! JSON parse error, stray '@'\n= {\"a\": 1}\n");
    check("@\"x\" [1]", "! JSON parse error, stray '@'\n= [1]\n");
    check("@ 1\n2 ", "! JSON parse error, stray '@'\n= 2\n");
    check("@\t1\n2 ", "! JSON parse error, stray '@'\n= 2\n");
    check("@\r1\n", "! JSON parse error, stray '@'\n= 1\n");
    check("@\x7f[4]", "! JSON parse error, stray '@'\n= [4]\n");
    check("@\x01[6]", "! JSON parse error, stray '@'\n"
          "! JSON parse error, stray '\x01'\n= [6]\n");
    check("@a,[9]", "! JSON parse error, stray '@'\n"
          "! JSON parse error, expecting value\n= [9]\n");
    /* A lexical error drops the value around it */
    check("{\"execute\": @}\n", "! JSON parse error, stray '@'\n"
          "! JSON parse error, expecting value\n");
    check("[1 @]\n[2]", "! JSON parse error, stray '@'\n"
          "! JSON parse error, expecting value\n= [2]\n");
    check("\"\xfe\"}\n", "! JSON parse error, stray '\"\xfe'\n"
          "! JSON parse error, expecting value\n");
}

static void test_resync_requests(void)
{
    /* A QMP-like stream: bad lines between good ones */
    check("{\"execute\": \"a\"}\n"
          "{\"execute\": }\n"
          "{\"execute\": \"b\",}\n"
          "}\n"
          "{\"execute\": \"c\", \"id\": 1, \"id\": 2}\n"
          "{\"execute\": nope}\n"
          "{\"execute\": \"d\"}{\"execute\": \"e\"}\n",
          "= {\"execute\": \"a\"}\n"
          "! JSON parse error, expecting value\n"
          "! JSON parse error, expecting value\n"
          "! JSON parse error, expecting value\n"
          "! JSON parse error, duplicate key\n"
          "! JSON parse error, invalid keyword 'nope'\n"
          "= {\"execute\": \"d\"}\n"
          "= {\"execute\": \"e\"}\n");
}

/* --- limits --- */

static void test_limit_depth(void)
{
    GString *in = g_string_new("");
    g_autofree char *out = NULL;
    g_autofree char *expected = NULL;

    /* 1024 levels are fine */
    for (int i = 0; i < JSON_MAX_DEPTH; i++) {
        g_string_append_c(in, i % 2 ? '[' : '{');
        if (!(i % 2)) {
            g_string_append(in, "\"k\":");
        }
    }
    g_string_append(in, "1");
    for (int i = JSON_MAX_DEPTH - 1; i >= 0; i--) {
        g_string_append_c(in, i % 2 ? ']' : '}');
    }
    out = run(in->str, in->len, 0, false);
    g_assert_true(g_str_has_prefix(out, "= {\"k\": [{\"k\": [{"));
    /* Output has a space after each colon */
    g_assert_cmpint(strlen(out), ==, 3 + in->len + JSON_MAX_DEPTH / 2);
    g_clear_pointer(&out, g_free);

    /* 1025 are not; the rest of the line is skipped */
    g_string_truncate(in, 0);
    for (int i = 0; i < 2000; i++) {
        g_string_append_c(in, '[');
    }
    g_string_append(in, "]]]\n[1]");
    expected = g_strdup("! JSON nesting depth limit exceeded\n= [1]\n");
    check_len(in->str, in->len, expected);
    g_string_free(in, true);
}

static void test_limit_token_size(void)
{
    size_t len = JSON_MAX_TOKEN_SIZE + 16;
    g_autofree char *in = g_malloc(len + 16);
    g_autofree char *out = NULL;

    /* A string over the limit, then more on the same line */
    in[0] = '"';
    memset(in + 1, 'a', len - 1);
    memcpy(in + len, "\" [1]\n[2]", 9);
    out = run(in, len + 9, 64 * 1024, false);
    g_assert_cmpstr(out, ==, "! JSON token size limit exceeded\n= [2]\n");
    g_clear_pointer(&out, g_free);

    /* A string of exactly the limit is fine */
    in[0] = '"';
    memset(in + 1, 'b', JSON_MAX_TOKEN_SIZE - 2);
    in[JSON_MAX_TOKEN_SIZE - 1] = '"';
    out = run(in, JSON_MAX_TOKEN_SIZE, 0, false);
    g_assert_cmpint(strlen(out), ==, JSON_MAX_TOKEN_SIZE + 3);
    g_assert_true(g_str_has_prefix(out, "= \"bbb"));
    g_clear_pointer(&out, g_free);

    /* A long number or keyword */
    memset(in, '1', len);
    memcpy(in + len, "\n2 ", 3);
    out = run(in, len + 3, 1 * MiB, false);
    g_assert_cmpstr(out, ==, "! JSON token size limit exceeded\n= 2\n");
}

static void test_limit_value_size(void)
{
    /* Strings of almost 1 MiB in one array: 17 are too many */
    size_t str_len = 1 * MiB - 3;
    GString *in = g_string_new("[");
    g_autofree char *out = NULL;

    for (int i = 0; i < 17; i++) {
        g_string_append_c(in, '"');
        for (size_t j = 0; j < str_len; j++) {
            g_string_append_c(in, 'x');
        }
        g_string_append(in, "\",");
    }
    g_string_append(in, "1]\n{}");
    out = run(in->str, in->len, 4096, false);
    g_assert_cmpstr(out, ==, "! JSON token size limit exceeded\n= {}\n");
    g_string_free(in, true);
}

static void test_limit_token_count(void)
{
    GString *in = g_string_new("[");
    g_autofree char *out = NULL;
    Transcript t = { .text = g_string_new("") };
    JsonStreamer *s;

    /* '[' + 2 per element + ']': a few tokens too many */
    for (int i = 0; i < JSON_MAX_TOKENS / 2; i++) {
        g_string_append(in, "1,");
    }
    g_string_append(in, "1]\n[]");
    out = run(in->str, in->len, 0, false);
    g_assert_cmpstr(out, ==, "! JSON token count limit exceeded\n= []\n");

    /* Exactly the limit is fine: '[' + 2 per element + "[]" + ']' */
    g_string_truncate(in, 1 + 2 * (JSON_MAX_TOKENS / 2 - 2));
    g_string_append(in, "[]]");
    s = json_streamer_new(record, &t);
    json_streamer_feed(s, in->str, in->len);
    json_streamer_free(s);
    g_assert_cmpint(t.values, ==, 1);
    g_assert_cmpint(t.errors, ==, 0);
    g_string_free(t.text, true);
    g_string_free(in, true);
}

static void test_limit_endless(void)
{
    /*
     * An endless string: the error comes as soon as the limit is passed,
     * and later input up to a newline is dropped whatever it holds.
     */
    static const char prefix[] = "{\"execute\": \"x\", \"id\": \"";
    Transcript t = { .text = g_string_new("") };
    JsonStreamer *s = json_streamer_new(record, &t);
    g_autofree char *chunk = g_malloc(1 * MiB);
    size_t fed = 0;

    json_streamer_feed(s, prefix, strlen(prefix));
    memset(chunk, 'a', 1 * MiB);
    while (!t.errors) {
        json_streamer_feed(s, chunk, 1 * MiB);
        fed += 1 * MiB;
        g_assert_cmpint(fed, <=, JSON_MAX_VALUE_SIZE + 1 * MiB);
    }
    g_assert_cmpstr(t.text->str, ==, "! JSON token size limit exceeded\n");
    memset(chunk, '{', 1 * MiB);
    for (int i = 0; i < 20; i++) {
        json_streamer_feed(s, chunk, 1 * MiB);
    }
    g_assert_cmpint(t.errors + t.values, ==, 1);
    json_streamer_feed(s, "\n{}", 3);
    g_assert_cmpstr(t.text->str, ==,
                    "! JSON token size limit exceeded\n= {}\n");
    json_streamer_free(s);
    g_string_free(t.text, true);
}

/* --- splitting and throughput --- */

static void test_split_mixed(void)
{
    /* One long input covering everything, fed in every chunk size */
    static const char in[] =
        "{\"execute\": \"query-version\", \"id\": [1, -2.5e3, true, null]}"
        " 'x\\'y' \"\\ud83d\\ude00\\u0000\xc3\xa9\" 18446744073709551616\n"
        "{\"a\": 1,} @@ {\"b\" 1} ] [1 2] \x01 {\"c\": {\"c\": 1, \"c\": 2}}"
        " nope \"\\u12\" 1.x [\"ok\"] 0 -0 1e5 ";
    g_autofree char *whole = run(in, sizeof(in) - 1, 0, true);

    for (size_t chunk = 1; chunk < sizeof(in); chunk++) {
        g_autofree char *split = run(in, sizeof(in) - 1, chunk, true);

        g_assert_cmpstr(split, ==, whole);
    }
    g_assert_cmpstr(whole, ==,
        "= {\"execute\": \"query-version\", \"id\": [1, -2500, true, null]}\n"
        "= \"x'y\"\n"
        "= \"\\ud83d\\ude00\\u0000\\u00e9\"\n"
        "= 1.8446744073709552e+19\n"
        "! JSON parse error, expecting value\n"
        "! JSON parse error, stray '@'\n"
        "! JSON parse error, missing : in object pair\n"
        "! JSON parse error, expecting value\n"
        "! JSON parse error, expected separator in list\n"
        "! JSON parse error, stray '\x01'\n"
        "! JSON parse error, duplicate key\n"
        "! JSON parse error, invalid keyword 'nope'\n"
        "! JSON parse error, \\u12\" is not a valid Unicode character\n"
        "! JSON parse error, stray '1.x'\n"
        "= [\"ok\"]\n"
        "= 0\n"
        "= 0\n"
        "= 100000\n");
}

static void test_perf_huge_line(void)
{
    /* 64 MiB on one line: a 15 MiB string, then an endless one */
    size_t len = 64 * MiB;
    g_autofree char *in = g_malloc(len);
    Transcript t = { .text = g_string_new("") };
    JsonStreamer *s = json_streamer_new(record, &t);
    gint64 start;
    double secs, rate;

    memset(in, 'a', len);
    memcpy(in, "{\"id\": \"", 8);
    memcpy(in + 15 * MiB, "\"} \"", 4);
    start = g_get_monotonic_time();
    for (size_t pos = 0; pos < len; pos += 64 * 1024) {
        json_streamer_feed(s, in + pos, 64 * 1024);
    }
    secs = (g_get_monotonic_time() - start) / 1e6;
    rate = len / MiB / MAX(secs, 1e-6);
    g_test_message("64 MiB line parsed at %.0f MiB/s", rate);
    g_assert_cmpint(t.values, ==, 1);
    g_assert_cmpint(t.errors, ==, 1);
    if (g_test_perf()) {
        g_assert_cmpfloat(rate, >, 50);
    }
    json_streamer_free(s);
    g_string_free(t.text, true);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/json-parser/values/literals", test_literals);
    g_test_add_func("/json-parser/values/nesting", test_nesting);
    g_test_add_func("/json-parser/numbers/int64", test_numbers_int);
    g_test_add_func("/json-parser/numbers/double", test_numbers_double);
    g_test_add_func("/json-parser/strings/escapes", test_strings_escapes);
    g_test_add_func("/json-parser/strings/single-quoted",
                    test_strings_single_quoted);
    g_test_add_func("/json-parser/strings/surrogates",
                    test_strings_surrogates);
    g_test_add_func("/json-parser/strings/bad-unicode-escape",
                    test_strings_bad_unicode_escape);
    g_test_add_func("/json-parser/strings/utf8", test_strings_utf8);
    g_test_add_func("/json-parser/strings/nul", test_strings_nul);
    g_test_add_func("/json-parser/errors/syntax", test_errors_syntax);
    g_test_add_func("/json-parser/errors/duplicate-key",
                    test_errors_duplicate_key);
    g_test_add_func("/json-parser/errors/lexical", test_errors_lexical);
    g_test_add_func("/json-parser/errors/one-shot", test_errors_one_shot);
    g_test_add_func("/json-parser/resync/syntax", test_resync_syntax);
    g_test_add_func("/json-parser/resync/lexical", test_resync_lexical);
    g_test_add_func("/json-parser/resync/requests", test_resync_requests);
    g_test_add_func("/json-parser/limits/depth", test_limit_depth);
    g_test_add_func("/json-parser/limits/token-size", test_limit_token_size);
    g_test_add_func("/json-parser/limits/value-size", test_limit_value_size);
    g_test_add_func("/json-parser/limits/token-count",
                    test_limit_token_count);
    g_test_add_func("/json-parser/limits/endless", test_limit_endless);
    g_test_add_func("/json-parser/stream/split", test_split_mixed);
    g_test_add_func("/json-parser/stream/huge-line", test_perf_huge_line);
    return g_test_run();
}
