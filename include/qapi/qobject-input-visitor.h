/*
 * Input visitor: JSON (json-c tree) -> C object.
 */
#ifndef QAPI_QOBJECT_INPUT_VISITOR_H
#define QAPI_QOBJECT_INPUT_VISITOR_H

#include "qapi/visitor.h"

/*
 * A visitor for JSON input as it arrives over QMP: scalars must have the
 * JSON type of their schema type.  Takes a reference to @obj.
 */
Visitor *qobject_input_visitor_new(json_object *obj);

/*
 * A visitor for the tree built by keyval_parse(): every scalar is a string
 * that is converted according to the schema type ("on"/"off" for bool,
 * size suffixes for size, decimal/hex/octal for integers).  Takes a
 * reference to @obj.
 */
Visitor *qobject_input_visitor_new_keyval(json_object *obj);

/*
 * qmp_option_parse:
 * @arg: a command-line option argument
 * @implied_key: key of a first element given without "key=" (or NULL)
 * @keyval_mode: set to whether @arg was keyval rather than JSON
 *
 * Parse the argument of an option like --blockdev, which accepts both
 * JSON ("{...}") and keyval ("driver=file,filename=x").  Returns a new
 * json-c object (always a JSON object) or NULL with @errp set.  Help
 * requests ("help", "?") fail with "Help is not available for this
 * option".  Feed the result to qobject_input_visitor_new_keyval() when
 * *keyval_mode, else to qobject_input_visitor_new().
 */
json_object *qmp_option_parse(const char *arg, const char *implied_key,
                              bool *keyval_mode, Error **errp);

/*
 * Parse @arg like qmp_option_parse() and return a visitor for it, or
 * NULL with @errp set.
 */
Visitor *qmp_option_visitor_new(const char *arg, const char *implied_key,
                                Error **errp);

#endif /* QAPI_QOBJECT_INPUT_VISITOR_H */
