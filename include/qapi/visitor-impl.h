/*
 * The Visitor vtable, for visitor implementations only.  visit_*() in
 * util/qapi-visit-core.c check the protocol and forward here; the
 * fixed-width integer types are handled in the core on top of type_int64
 * and type_uint64.
 */
#ifndef QAPI_VISITOR_IMPL_H
#define QAPI_VISITOR_IMPL_H

#include "qapi/visitor.h"

struct Visitor {
    VisitorType type;

    bool (*start_struct)(Visitor *v, const char *name, void **obj,
                         size_t size, Error **errp);
    bool (*check_struct)(Visitor *v, Error **errp);
    void (*end_struct)(Visitor *v, void **obj);
    bool (*start_list)(Visitor *v, const char *name, GenericList **list,
                       size_t size, Error **errp);
    GenericList *(*next_list)(Visitor *v, GenericList *tail, size_t size);
    bool (*check_list)(Visitor *v, Error **errp);
    void (*end_list)(Visitor *v, void **list);
    /* Optional; without it the core does nothing for alternates */
    bool (*start_alternate)(Visitor *v, const char *name,
                            GenericAlternate **obj, size_t size,
                            Error **errp);
    void (*end_alternate)(Visitor *v, void **obj);
    /* Optional; without it *present is kept */
    bool (*optional)(Visitor *v, const char *name, bool *present);
    /* Optional: full path of member @name for error messages */
    char *(*full_name)(Visitor *v, const char *name);

    bool (*type_int64)(Visitor *v, const char *name, int64_t *obj,
                       Error **errp);
    bool (*type_uint64)(Visitor *v, const char *name, uint64_t *obj,
                        Error **errp);
    bool (*type_size)(Visitor *v, const char *name, uint64_t *obj,
                      Error **errp);
    bool (*type_bool)(Visitor *v, const char *name, bool *obj, Error **errp);
    bool (*type_str)(Visitor *v, const char *name, char **obj, Error **errp);
    bool (*type_number)(Visitor *v, const char *name, double *obj,
                        Error **errp);
    bool (*type_any)(Visitor *v, const char *name, json_object **obj,
                     Error **errp);
    bool (*type_null)(Visitor *v, const char *name, json_object **obj,
                      Error **errp);

    void (*complete)(Visitor *v, void *opaque);
    void (*free)(Visitor *v);
};

#endif /* QAPI_VISITOR_IMPL_H */
