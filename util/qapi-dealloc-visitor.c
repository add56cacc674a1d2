/*
 * Dealloc visitor: frees what the generated code walks over.
 *
 * Strings and JSON values are freed as they are visited; a struct or
 * alternate is freed at its end (after its members); a list node is freed
 * when the walk moves past it.  Absent (NULL) objects are skipped, which
 * makes it safe on the partial results of a failed input visit.
 */
#include "util/osdep.h"
#include "qapi/visitor-impl.h"
#include "qapi/dealloc-visitor.h"

static bool qdv_start_struct(Visitor *v, const char *name, void **obj,
                             size_t size, Error **errp)
{
    return true;
}

static void qdv_end_struct(Visitor *v, void **obj)
{
    if (obj) {
        g_free(*obj);
        *obj = NULL;
    }
}

static bool qdv_start_list(Visitor *v, const char *name, GenericList **list,
                           size_t size, Error **errp)
{
    return true;
}

static GenericList *qdv_next_list(Visitor *v, GenericList *tail, size_t size)
{
    GenericList *next = tail->next;

    g_free(tail);
    return next;
}

static void qdv_end_list(Visitor *v, void **list)
{
    /* Every node was freed by qdv_next_list() */
    if (list) {
        *list = NULL;
    }
}

static bool qdv_start_alternate(Visitor *v, const char *name,
                                GenericAlternate **obj, size_t size,
                                Error **errp)
{
    return true;
}

static bool qdv_type_int64(Visitor *v, const char *name, int64_t *obj,
                           Error **errp)
{
    return true;
}

static bool qdv_type_uint64(Visitor *v, const char *name, uint64_t *obj,
                            Error **errp)
{
    return true;
}

static bool qdv_type_bool(Visitor *v, const char *name, bool *obj,
                          Error **errp)
{
    return true;
}

static bool qdv_type_str(Visitor *v, const char *name, char **obj,
                         Error **errp)
{
    g_free(*obj);
    *obj = NULL;
    return true;
}

static bool qdv_type_number(Visitor *v, const char *name, double *obj,
                            Error **errp)
{
    return true;
}

static bool qdv_type_any(Visitor *v, const char *name, json_object **obj,
                         Error **errp)
{
    json_object_put(*obj);
    *obj = NULL;
    return true;
}

static void qdv_free(Visitor *v)
{
    g_free(v);
}

Visitor *qapi_dealloc_visitor_new(void)
{
    Visitor *v = g_new0(Visitor, 1);

    *v = (Visitor) {
        .type = VISITOR_DEALLOC,
        .start_struct = qdv_start_struct,
        .end_struct = qdv_end_struct,
        .start_list = qdv_start_list,
        .next_list = qdv_next_list,
        .end_list = qdv_end_list,
        .start_alternate = qdv_start_alternate,
        .end_alternate = qdv_end_struct,
        .type_int64 = qdv_type_int64,
        .type_uint64 = qdv_type_uint64,
        .type_bool = qdv_type_bool,
        .type_str = qdv_type_str,
        .type_number = qdv_type_number,
        .type_any = qdv_type_any,
        .type_null = qdv_type_any,
        .free = qdv_free,
    };
    return v;
}
