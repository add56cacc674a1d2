/*
 * Visitor core: the entry points generated code calls.
 *
 * Each visit_*() forwards to the visitor's vtable (include/qapi/
 * visitor-impl.h).  The core adds what is the same for every visitor:
 * fixed-width integers are visited as 64-bit values and range-checked
 * here, and enums travel as strings (the input side maps the string back
 * to its value, with QEMU's error message for unknown values).
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/visitor-impl.h"

VisitorType visit_get_type(Visitor *v)
{
    return v->type;
}

void visit_free(Visitor *v)
{
    if (v) {
        v->free(v);
    }
}

void visit_complete(Visitor *v, void *opaque)
{
    assert(v->type == VISITOR_OUTPUT);
    v->complete(v, opaque);
}

bool visit_start_struct(Visitor *v, const char *name, void **obj,
                        size_t size, Error **errp)
{
    bool ok = v->start_struct(v, name, obj, size, errp);

    if (obj && v->type == VISITOR_INPUT) {
        assert(ok == !!*obj);
    }
    return ok;
}

bool visit_check_struct(Visitor *v, Error **errp)
{
    return v->check_struct ? v->check_struct(v, errp) : true;
}

void visit_end_struct(Visitor *v, void **obj)
{
    v->end_struct(v, obj);
}

bool visit_start_list(Visitor *v, const char *name, GenericList **list,
                      size_t size, Error **errp)
{
    assert(!list || size >= sizeof(GenericList));
    return v->start_list(v, name, list, size, errp);
}

GenericList *visit_next_list(Visitor *v, GenericList *tail, size_t size)
{
    assert(tail && size >= sizeof(GenericList));
    return v->next_list(v, tail, size);
}

bool visit_check_list(Visitor *v, Error **errp)
{
    return v->check_list ? v->check_list(v, errp) : true;
}

void visit_end_list(Visitor *v, void **list)
{
    v->end_list(v, list);
}

bool visit_start_alternate(Visitor *v, const char *name,
                           GenericAlternate **obj, size_t size,
                           Error **errp)
{
    assert(obj && size >= sizeof(GenericAlternate));
    if (v->start_alternate) {
        return v->start_alternate(v, name, obj, size, errp);
    }
    return true;
}

void visit_end_alternate(Visitor *v, void **obj)
{
    if (v->end_alternate) {
        v->end_alternate(v, obj);
    }
}

void visit_type_alternate_mismatch(Visitor *v, const char *name,
                                   const char *type, Error **errp)
{
    g_autofree char *full = NULL;

    /* QEMU names the member without its path here; list elements get one */
    if (!name && v->full_name) {
        full = v->full_name(v, NULL);
    }
    error_setg(errp, "Invalid parameter type for '%s', expected: %s",
               name ? name : full ? full : "null", type);
}

bool visit_optional(Visitor *v, const char *name, bool *present)
{
    if (v->optional) {
        return v->optional(v, name, present);
    }
    return *present;
}

bool visit_type_int64(Visitor *v, const char *name, int64_t *obj,
                      Error **errp)
{
    return v->type_int64(v, name, obj, errp);
}

bool visit_type_int(Visitor *v, const char *name, int64_t *obj,
                    Error **errp)
{
    return v->type_int64(v, name, obj, errp);
}

bool visit_type_uint64(Visitor *v, const char *name, uint64_t *obj,
                       Error **errp)
{
    return v->type_uint64(v, name, obj, errp);
}

static bool visit_signed(Visitor *v, const char *name, int64_t *value,
                         int64_t min, int64_t max, const char *type,
                         Error **errp)
{
    if (!v->type_int64(v, name, value, errp)) {
        return false;
    }
    if (*value < min || *value > max) {
        error_setg(errp, "Parameter '%s' expects %s", name ? name : "null",
                   type);
        return false;
    }
    return true;
}

static bool visit_unsigned(Visitor *v, const char *name, uint64_t *value,
                           uint64_t max, const char *type, Error **errp)
{
    if (!v->type_uint64(v, name, value, errp)) {
        return false;
    }
    if (*value > max) {
        error_setg(errp, "Parameter '%s' expects %s", name ? name : "null",
                   type);
        return false;
    }
    return true;
}

#define VISIT_SIGNED(bits)                                              \
bool visit_type_int##bits(Visitor *v, const char *name,                 \
                          int##bits##_t *obj, Error **errp)             \
{                                                                       \
    int64_t value = *obj;                                               \
                                                                        \
    if (!visit_signed(v, name, &value, INT##bits##_MIN,                 \
                      INT##bits##_MAX, "int" #bits "_t", errp)) {       \
        return false;                                                   \
    }                                                                   \
    *obj = value;                                                       \
    return true;                                                        \
}

#define VISIT_UNSIGNED(bits)                                            \
bool visit_type_uint##bits(Visitor *v, const char *name,                \
                           uint##bits##_t *obj, Error **errp)           \
{                                                                       \
    uint64_t value = *obj;                                              \
                                                                        \
    if (!visit_unsigned(v, name, &value, UINT##bits##_MAX,              \
                        "uint" #bits "_t", errp)) {                     \
        return false;                                                   \
    }                                                                   \
    *obj = value;                                                       \
    return true;                                                        \
}

VISIT_SIGNED(8)
VISIT_SIGNED(16)
VISIT_SIGNED(32)
VISIT_UNSIGNED(8)
VISIT_UNSIGNED(16)
VISIT_UNSIGNED(32)

bool visit_type_size(Visitor *v, const char *name, uint64_t *obj,
                     Error **errp)
{
    if (v->type_size) {
        return v->type_size(v, name, obj, errp);
    }
    return v->type_uint64(v, name, obj, errp);
}

bool visit_type_bool(Visitor *v, const char *name, bool *obj, Error **errp)
{
    return v->type_bool(v, name, obj, errp);
}

bool visit_type_str(Visitor *v, const char *name, char **obj, Error **errp)
{
    bool ok;

    assert(obj);
    ok = v->type_str(v, name, obj, errp);
    if (v->type == VISITOR_INPUT) {
        assert(ok != !*obj);
    }
    return ok;
}

bool visit_type_number(Visitor *v, const char *name, double *obj,
                       Error **errp)
{
    return v->type_number(v, name, obj, errp);
}

bool visit_type_any(Visitor *v, const char *name, json_object **obj,
                    Error **errp)
{
    return v->type_any(v, name, obj, errp);
}

bool visit_type_null(Visitor *v, const char *name, json_object **obj,
                     Error **errp)
{
    return v->type_null(v, name, obj, errp);
}

bool visit_type_enum(Visitor *v, const char *name, int *obj,
                     const char *const lookup[], int max, Error **errp)
{
    g_autofree char *str = NULL;
    int value;

    switch (v->type) {
    case VISITOR_INPUT:
        if (!v->type_str(v, name, &str, errp)) {
            return false;
        }
        value = qapi_enum_parse(lookup, max, str);
        if (value < 0) {
            error_setg(errp, "Parameter '%s' does not accept value '%s'",
                       name ? name : "null", str);
            return false;
        }
        *obj = value;
        return true;
    case VISITOR_OUTPUT:
        if (*obj < 0 || *obj >= max) {
            error_setg(errp, "Parameter '%s' does not accept value '%d'",
                       name ? name : "null", *obj);
            return false;
        }
        str = g_strdup(lookup[*obj]);
        return v->type_str(v, name, &str, errp);
    case VISITOR_DEALLOC:
        return true;
    }
    g_assert_not_reached();
}
