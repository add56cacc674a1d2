/*
 * QAPI runtime helpers: enum lookup, QType of a json-c value, and the
 * string-to-scalar conversions of the command line (keyval) syntax.
 */
#include "util/osdep.h"
#include "qapi/util.h"

#include <math.h>

QType qtype_of_json(json_object *obj)
{
    if (!obj) {
        return QTYPE_QNULL;
    }
    switch (json_object_get_type(obj)) {
    case json_type_null:
        return QTYPE_QNULL;
    case json_type_boolean:
        return QTYPE_QBOOL;
    case json_type_double:
    case json_type_int:
        return QTYPE_QNUM;
    case json_type_object:
        return QTYPE_QDICT;
    case json_type_array:
        return QTYPE_QLIST;
    case json_type_string:
        return QTYPE_QSTRING;
    }
    return QTYPE_NONE;
}

int qapi_enum_parse(const char *const lookup[], int max, const char *str)
{
    int i;

    if (!str) {
        return -1;
    }
    for (i = 0; i < max; i++) {
        if (!strcmp(lookup[i], str)) {
            return i;
        }
    }
    return -1;
}

const char *qapi_enum_lookup(const char *const lookup[], int max, int val)
{
    if (val < 0 || val >= max) {
        return NULL;
    }
    return lookup[val];
}

bool qapi_bool_parse_str(const char *str, bool *obj)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcmp(str, yes[i])) {
            *obj = true;
            return true;
        }
        if (!strcmp(str, no[i])) {
            *obj = false;
            return true;
        }
    }
    return false;
}

/* Shift for a size suffix, or -1 if @c is not one */
static int size_suffix_shift(char c)
{
    switch (g_ascii_toupper(c)) {
    case 'B':
        return 0;
    case 'K':
        return 10;
    case 'M':
        return 20;
    case 'G':
        return 30;
    case 'T':
        return 40;
    case 'P':
        return 50;
    case 'E':
        return 60;
    default:
        return -1;
    }
}

bool qapi_size_parse_str(const char *str, uint64_t *obj)
{
    const char *p = str;
    const char *endp;
    uint64_t whole;
    double fraction = 0;
    int shift = 0;
    bool hex;
    char *end;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p == '-' || !*p) {
        return false;
    }
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    errno = 0;
    whole = g_ascii_strtoull(p, &end, hex ? 16 : 10);
    if (errno || end == p || (hex && end == p + 2)) {
        return false;
    }
    endp = end;
    if (*endp == '.') {
        if (hex) {
            return false;
        }
        /* Parse "0.<digits>" to get the fraction exactly as written */
        g_autofree char *frac = g_strconcat("0", endp, NULL);
        fraction = g_ascii_strtod(frac, &end);
        if (end == frac + 1) {
            return false;
        }
        endp += end - frac - 1;
    }
    if (*endp) {
        shift = size_suffix_shift(*endp);
        if (shift < 0 || endp[1]) {
            return false;
        }
        if (shift == 0 && fraction != 0) {
            return false;
        }
    } else if (fraction != 0) {
        /* A fraction needs a scaling suffix */
        return false;
    }
    if (shift && whole > (UINT64_MAX >> shift)) {
        return false;
    }
    whole <<= shift;
    if (fraction != 0) {
        double extra = floor(fraction * (double)(UINT64_C(1) << shift));

        if ((double)whole + extra >= 18446744073709551616.0) {
            return false;
        }
        whole += (uint64_t)extra;
    }
    *obj = whole;
    return true;
}
