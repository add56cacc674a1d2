/*
 * Output visitor: C object -> json-c tree.
 *
 * A stack of the containers under construction; every value visited is
 * added to the innermost one (under its name for a dict, appended for a
 * list), or becomes the root when the stack is empty.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/visitor-impl.h"
#include "qapi/qobject-output-visitor.h"

typedef struct OutputVisitor {
    Visitor visitor;
    json_object *root;          /* owned until visit_complete() */
    bool has_root;
    GPtrArray *stack;           /* json_object * (borrowed), innermost last */
    json_object **result;
} OutputVisitor;

static OutputVisitor *to_qov(Visitor *v)
{
    return container_of(v, OutputVisitor, visitor);
}

/* Add @value (reference stolen) to the current container */
static void qov_add(OutputVisitor *qov, const char *name, json_object *value)
{
    json_object *top;

    if (!qov->stack->len) {
        assert(!qov->has_root);
        qov->root = value;
        qov->has_root = true;
        return;
    }
    top = g_ptr_array_index(qov->stack, qov->stack->len - 1);
    if (json_object_is_type(top, json_type_array)) {
        json_object_array_add(top, value);
    } else {
        assert(name);
        json_object_object_add(top, name, value);
    }
}

static bool qov_start_struct(Visitor *v, const char *name, void **obj,
                             size_t size, Error **errp)
{
    OutputVisitor *qov = to_qov(v);
    json_object *dict = json_object_new_object();

    qov_add(qov, name, dict);
    g_ptr_array_add(qov->stack, dict);
    return true;
}

static void qov_end(Visitor *v, void **obj)
{
    OutputVisitor *qov = to_qov(v);

    assert(qov->stack->len);
    g_ptr_array_remove_index(qov->stack, qov->stack->len - 1);
}

static bool qov_start_list(Visitor *v, const char *name, GenericList **list,
                           size_t size, Error **errp)
{
    OutputVisitor *qov = to_qov(v);
    json_object *array = json_object_new_array();

    qov_add(qov, name, array);
    g_ptr_array_add(qov->stack, array);
    return true;
}

static GenericList *qov_next_list(Visitor *v, GenericList *tail, size_t size)
{
    return tail->next;
}

static bool qov_type_int64(Visitor *v, const char *name, int64_t *obj,
                           Error **errp)
{
    qov_add(to_qov(v), name, json_object_new_int64(*obj));
    return true;
}

static bool qov_type_uint64(Visitor *v, const char *name, uint64_t *obj,
                            Error **errp)
{
    qov_add(to_qov(v), name, json_object_new_uint64(*obj));
    return true;
}

static bool qov_type_bool(Visitor *v, const char *name, bool *obj,
                          Error **errp)
{
    qov_add(to_qov(v), name, json_object_new_boolean(*obj));
    return true;
}

static bool qov_type_str(Visitor *v, const char *name, char **obj,
                         Error **errp)
{
    qov_add(to_qov(v), name, json_object_new_string(*obj ? *obj : ""));
    /* visit_type_enum() hands us a temporary string it frees itself */
    return true;
}

static bool qov_type_number(Visitor *v, const char *name, double *obj,
                            Error **errp)
{
    qov_add(to_qov(v), name, json_object_new_double(*obj));
    return true;
}

static bool qov_type_any(Visitor *v, const char *name, json_object **obj,
                         Error **errp)
{
    qov_add(to_qov(v), name, json_object_get(*obj));
    return true;
}

static bool qov_type_null(Visitor *v, const char *name, json_object **obj,
                          Error **errp)
{
    qov_add(to_qov(v), name, NULL);
    return true;
}

static void qov_complete(Visitor *v, void *opaque)
{
    OutputVisitor *qov = to_qov(v);

    assert(opaque == qov->result && !qov->stack->len && qov->has_root);
    *qov->result = qov->root;
    qov->root = NULL;
    qov->has_root = false;
}

static void qov_free(Visitor *v)
{
    OutputVisitor *qov = to_qov(v);

    json_object_put(qov->root);
    g_ptr_array_free(qov->stack, true);
    g_free(qov);
}

Visitor *qobject_output_visitor_new(json_object **result)
{
    OutputVisitor *qov = g_new0(OutputVisitor, 1);

    qov->visitor = (Visitor) {
        .type = VISITOR_OUTPUT,
        .start_struct = qov_start_struct,
        .end_struct = qov_end,
        .start_list = qov_start_list,
        .next_list = qov_next_list,
        .end_list = qov_end,
        .type_int64 = qov_type_int64,
        .type_uint64 = qov_type_uint64,
        .type_bool = qov_type_bool,
        .type_str = qov_type_str,
        .type_number = qov_type_number,
        .type_any = qov_type_any,
        .type_null = qov_type_null,
        .complete = qov_complete,
        .free = qov_free,
    };
    qov->stack = g_ptr_array_new();
    qov->result = result;
    *result = NULL;
    return &qov->visitor;
}
