/*
 * Dealloc visitor: frees a QAPI object (also a partially built one, as
 * left by a failed input visit).  Use qapi_free_FOO() rather than this.
 */
#ifndef QAPI_DEALLOC_VISITOR_H
#define QAPI_DEALLOC_VISITOR_H

#include "qapi/visitor.h"

Visitor *qapi_dealloc_visitor_new(void);

#endif /* QAPI_DEALLOC_VISITOR_H */
