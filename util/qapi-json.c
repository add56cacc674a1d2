/*
 * JSON text <-> json-c values, the way QMP puts them on the wire.
 *
 * json-c's own serializer uses different spacing from QEMU; QMP clients
 * do not care, but transcripts and humans compare better when blockd
 * writes exactly what qemu-storage-daemon writes: ", " between members,
 * ": " after keys, and everything that is not printable ASCII escaped as
 * \uXXXX (UTF-16 surrogate pairs above U+FFFF; invalid UTF-8 becomes
 * U+FFFD, except C0 80, which is how util/json-parser.c stores U+0000,
 * and comes back out as \u0000).  Numbers: integers in decimal, doubles
 * with "%.17g".
 *
 * Parsing is util/json-parser.c's; qapi_parse_json_object() only adds
 * the check that the value is an object.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/util.h"
#include "util/json-parser.h"

static void append_indent(GString *out, bool pretty, int level)
{
    if (pretty) {
        g_string_append_c(out, '\n');
        for (int i = 0; i < level; i++) {
            g_string_append(out, "    ");
        }
    }
}

static void append_string(GString *out, const char *str, size_t len)
{
    const char *p = str;
    const char *end = str + len;

    g_string_append_c(out, '"');
    while (p < end) {
        unsigned char c = *p;

        switch (c) {
        case '"':
            g_string_append(out, "\\\"");
            break;
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\b':
            g_string_append(out, "\\b");
            break;
        case '\f':
            g_string_append(out, "\\f");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                g_string_append_c(out, c);
            } else if (c < 0x80) {
                g_string_append_printf(out, "\\u%04x", c);
            } else if (c == 0xc0 && p + 1 < end &&
                       (unsigned char)p[1] == 0x80) {
                g_string_append(out, "\\u0000");
                p += 2;
                continue;
            } else {
                gunichar u = g_utf8_get_char_validated(p, end - p);

                if (u == (gunichar)-1 || u == (gunichar)-2) {
                    g_string_append(out, "\\ufffd");
                    p++;
                    continue;
                }
                if (u >= 0x10000) {
                    u -= 0x10000;
                    g_string_append_printf(out, "\\u%04x\\u%04x",
                                           0xd800 | (u >> 10),
                                           0xdc00 | (u & 0x3ff));
                } else {
                    g_string_append_printf(out, "\\u%04x", u);
                }
                p = g_utf8_next_char(p);
                continue;
            }
        }
        p++;
    }
    g_string_append_c(out, '"');
}

static void append_value(GString *out, json_object *obj, bool pretty,
                         int level)
{
    size_t i, n;
    bool first = true;

    switch (qtype_of_json(obj)) {
    case QTYPE_QNULL:
        g_string_append(out, "null");
        break;
    case QTYPE_QBOOL:
        g_string_append(out, json_object_get_boolean(obj) ? "true" : "false");
        break;
    case QTYPE_QNUM:
        if (json_object_is_type(obj, json_type_double)) {
            g_string_append_printf(out, "%.17g",
                                   json_object_get_double(obj));
        } else if (json_object_get_int64(obj) == INT64_MAX) {
            g_string_append_printf(out, "%" PRIu64,
                                   json_object_get_uint64(obj));
        } else {
            g_string_append_printf(out, "%" PRId64,
                                   json_object_get_int64(obj));
        }
        break;
    case QTYPE_QSTRING:
        append_string(out, json_object_get_string(obj),
                      json_object_get_string_len(obj));
        break;
    case QTYPE_QDICT:
        g_string_append_c(out, '{');
        json_object_object_foreach(obj, key, val) {
            g_string_append(out, first ? "" : ",");
            if (!pretty && !first) {
                g_string_append_c(out, ' ');
            }
            first = false;
            append_indent(out, pretty, level + 1);
            append_string(out, key, strlen(key));
            g_string_append(out, ": ");
            append_value(out, val, pretty, level + 1);
        }
        if (!first) {
            append_indent(out, pretty, level);
        }
        g_string_append_c(out, '}');
        break;
    case QTYPE_QLIST:
        g_string_append_c(out, '[');
        n = json_object_array_length(obj);
        for (i = 0; i < n; i++) {
            g_string_append(out, i ? (pretty ? "," : ", ") : "");
            append_indent(out, pretty, level + 1);
            append_value(out, json_object_array_get_idx(obj, i), pretty,
                         level + 1);
        }
        if (n) {
            append_indent(out, pretty, level);
        }
        g_string_append_c(out, ']');
        break;
    default:
        g_assert_not_reached();
    }
}

GString *qapi_json_to_gstring(json_object *obj, bool pretty)
{
    GString *out = g_string_new("");

    append_value(out, obj, pretty, 0);
    return out;
}

json_object *qapi_parse_json_object(const char *str, Error **errp)
{
    Error *err = NULL;
    json_object *obj = json_parse_string(str, &err);

    if (err) {
        error_propagate(errp, err);
        return NULL;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        error_setg(errp, "Expected a JSON object");
        return NULL;
    }
    return obj;
}
