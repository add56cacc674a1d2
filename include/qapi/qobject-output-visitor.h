/*
 * Output visitor: C object -> JSON (json-c tree).
 */
#ifndef QAPI_QOBJECT_OUTPUT_VISITOR_H
#define QAPI_QOBJECT_OUTPUT_VISITOR_H

#include "qapi/visitor.h"

/*
 * The tree is handed over by visit_complete(v, result), where @result is
 * the same json_object ** passed here; the caller then owns it.
 */
Visitor *qobject_output_visitor_new(json_object **result);

#endif /* QAPI_QOBJECT_OUTPUT_VISITOR_H */
