/*
 * keyval: the KEY=VALUE,... syntax of command-line options.
 *
 * "driver=raw,file.driver=file,file.filename=a,,b" parses to the JSON
 * object {"driver": "raw", "file": {"driver": "file", "filename": "a,b"}}:
 *
 *  - elements are separated by ','; a ',' inside a value is written ",,";
 *  - a key is a sequence of fragments separated by '.', which build nested
 *    objects; a fragment is a name (a letter, then letters, digits, '-' and
 *    '_', at most 127 characters) or, except for the first one, a decimal
 *    number;
 *  - objects whose keys are all numbers become arrays; the numbers must be
 *    0 .. N-1 ("bitmaps.0=a,bitmaps.1=b" -> "bitmaps": ["a", "b"]);
 *  - if the first element has no '=', it is the value of @implied_key;
 *  - "help" or "?" as an element requests help;
 *  - a key given twice keeps the last value.
 *
 * Every leaf is a string; the keyval-mode input visitor converts it to the
 * schema type (see qobject_input_visitor_new_keyval()).
 */
#ifndef UTIL_KEYVAL_H
#define UTIL_KEYVAL_H

#include "util/osdep.h"
#include "util/error.h"
#include <json-c/json.h>

/*
 * keyval_parse:
 * @params: the option argument
 * @implied_key: key for a first element without '=', or NULL
 * @p_help: where to record a help request, or NULL to treat "help" as an
 *          ordinary (and therefore invalid) element
 *
 * Returns a new json-c object, or NULL with @errp set.  Error messages are
 * QEMU's: "Invalid parameter 'a..b'", "Expected '=' after parameter 'foo'",
 * "Parameter 'k' is too long", "Parameters 'a.*' used inconsistently",
 * "Parameter 'a.1' missing".
 */
json_object *keyval_parse(const char *params, const char *implied_key,
                          bool *p_help, Error **errp);

/* Whether an option argument is JSON (it starts with '{') */
bool qobject_is_json_opt(const char *arg);

#endif /* UTIL_KEYVAL_H */
