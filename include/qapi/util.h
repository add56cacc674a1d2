/*
 * QAPI runtime basics shared by generated and hand-written code: the JSON
 * value kinds (QType) used to pick an alternate's branch, and enum lookup
 * helpers.  JSON values are json-c objects; note that json-c represents
 * the JSON null as a NULL json_object pointer.
 */
#ifndef QAPI_UTIL_H
#define QAPI_UTIL_H

#include "util/osdep.h"
#include "util/error.h"
#include <assert.h>
#include <json-c/json.h>

typedef enum QType {
    QTYPE_NONE,
    QTYPE_QNULL,
    QTYPE_QNUM,
    QTYPE_QSTRING,
    QTYPE_QDICT,
    QTYPE_QLIST,
    QTYPE_QBOOL,
    QTYPE__MAX,
} QType;

/* g_autoptr(json_object) drops a reference at the end of the scope. */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)

/* The QType of a json-c value (NULL is the JSON null). */
QType qtype_of_json(json_object *obj);

/*
 * qapi_enum_parse:
 * @lookup: the generated FOO_lookup table
 * @max: FOO__MAX
 * @str: the string to look up (may be NULL)
 *
 * Returns the enum value whose name is @str, or -1 if there is none.
 */
int qapi_enum_parse(const char *const lookup[], int max, const char *str);

/* The name of enum value @val, or NULL if out of range. */
const char *qapi_enum_lookup(const char *const lookup[], int max, int val);

/*
 * Parse a boolean the way QEMU's command line does: "on", "yes", "true",
 * "y" are true; "off", "no", "false", "n" are false.  Returns false (and
 * leaves *obj alone) for anything else.
 */
bool qapi_bool_parse_str(const char *str, bool *obj);

/*
 * Parse a byte size with an optional binary suffix (B, k, M, G, T, P, E,
 * case-insensitive); a decimal fraction is allowed with a suffix other than
 * B ("1.5G").  Returns false on any syntax error or overflow.
 */
bool qapi_size_parse_str(const char *str, uint64_t *obj);

/*
 * Serialize @obj as QEMU does on the wire: ", " and ": " separators,
 * non-ASCII and control characters escaped as \uXXXX.  With @pretty,
 * nested values are indented by four spaces per level.  @obj may be NULL
 * (the JSON null).
 */
GString *qapi_json_to_gstring(json_object *obj, bool pretty);

/* Deepest nesting of JSON accepted from outside */
#define QAPI_JSON_MAX_DEPTH 1024

/*
 * Parse @str, which must hold exactly one JSON object (as the argument of
 * a command-line option).  Returns a new reference, or NULL with @errp set
 * ("JSON parse error, ..." for syntax errors).
 */
json_object *qapi_parse_json_object(const char *str, Error **errp);

#endif /* QAPI_UTIL_H */
