/*
 * Input visitor: json-c tree -> C object.
 *
 * The visitor keeps a stack of the containers being visited.  A dict
 * frame remembers which of its keys have not been visited yet, so that
 * visit_check_struct() can reject unexpected members; a list frame
 * remembers the index of the current element.  Error messages name a
 * member by its path from the root, built from the stack: dict members
 * are joined with '.', list elements appear as "[N]".
 *
 * Two modes: plain (QMP) where scalars must carry the right JSON type,
 * and keyval (command line) where every scalar is a string converted
 * according to the schema type.  The texts of the error messages are the
 * ones QEMU uses, since management software and tests compare them.
 *
 * json-c represents the JSON null as a NULL pointer, so "is there a
 * value" and "what is the value" are kept apart (qiv_get()).
 */
#include "util/osdep.h"
#include "util/error.h"
#include "util/keyval.h"
#include "qapi/visitor-impl.h"
#include "qapi/qobject-input-visitor.h"

#include <math.h>

typedef struct InputFrame {
    json_object *obj;           /* the dict or array being visited */
    char *name;                 /* its name in the parent frame, or NULL */
    GHashTable *unvisited;      /* dict: keys not visited yet */
    size_t index;               /* array: current element */
} InputFrame;

typedef struct InputVisitor {
    Visitor visitor;
    json_object *root;          /* reference held */
    bool keyval;
    GPtrArray *stack;           /* InputFrame *, innermost last */
} InputVisitor;

static InputVisitor *to_qiv(Visitor *v)
{
    return container_of(v, InputVisitor, visitor);
}

static InputFrame *qiv_top(InputVisitor *qiv)
{
    if (!qiv->stack->len) {
        return NULL;
    }
    return g_ptr_array_index(qiv->stack, qiv->stack->len - 1);
}

static bool frame_is_list(InputFrame *frame)
{
    return json_object_is_type(frame->obj, json_type_array);
}

static void append_component(GString *s, InputFrame *parent,
                             const char *name)
{
    if (frame_is_list(parent)) {
        g_string_append_printf(s, "[%zu]", parent->index);
    } else if (name) {
        if (s->len) {
            g_string_append_c(s, '.');
        }
        g_string_append(s, name);
    }
}

static char *qiv_full_name(Visitor *v, const char *name)
{
    InputVisitor *qiv = to_qiv(v);
    GString *s = g_string_new("");
    guint i;

    for (i = 1; i < qiv->stack->len; i++) {
        InputFrame *frame = g_ptr_array_index(qiv->stack, i);

        append_component(s, g_ptr_array_index(qiv->stack, i - 1),
                         frame->name);
    }
    if (qiv->stack->len) {
        append_component(s, qiv_top(qiv), name);
    } else if (name) {
        g_string_append(s, name);
    }
    if (!s->len) {
        g_string_append(s, "null");
    }
    return g_string_free(s, false);
}

static void qiv_type_error(InputVisitor *qiv, const char *name,
                           const char *expected, Error **errp)
{
    g_autofree char *full = qiv_full_name(&qiv->visitor, name);

    error_setg(errp, "Invalid parameter type for '%s', expected: %s", full,
               expected);
}

static void qiv_value_error(InputVisitor *qiv, const char *name,
                            const char *expected, Error **errp)
{
    g_autofree char *full = qiv_full_name(&qiv->visitor, name);

    error_setg(errp, "Parameter '%s' expects %s", full, expected);
}

/*
 * Find the value for member @name of the current container (or the root).
 * With @consume the member counts as visited.  Returns false, with an
 * error, if there is no such member.
 */
static bool qiv_get(InputVisitor *qiv, const char *name, bool consume,
                    json_object **out, Error **errp)
{
    InputFrame *top = qiv_top(qiv);

    if (!top) {
        *out = qiv->root;
        return true;
    }
    if (frame_is_list(top)) {
        assert(top->index < json_object_array_length(top->obj));
        *out = json_object_array_get_idx(top->obj, top->index);
        return true;
    }
    assert(name);
    if (!json_object_object_get_ex(top->obj, name, out)) {
        g_autofree char *full = qiv_full_name(&qiv->visitor, name);

        error_setg(errp, "Parameter '%s' is missing", full);
        return false;
    }
    if (consume) {
        g_hash_table_remove(top->unvisited, name);
    }
    return true;
}

/* Keyval mode: the string for scalar @name */
static const char *qiv_get_keyval(InputVisitor *qiv, const char *name,
                                  Error **errp)
{
    json_object *obj;

    if (!qiv_get(qiv, name, true, &obj, errp)) {
        return NULL;
    }
    if (!json_object_is_type(obj, json_type_string)) {
        qiv_type_error(qiv, name, "string", errp);
        return NULL;
    }
    return json_object_get_string(obj);
}

static void qiv_push(InputVisitor *qiv, const char *name, json_object *obj)
{
    InputFrame *frame = g_new0(InputFrame, 1);

    frame->obj = obj;
    frame->name = g_strdup(name);
    if (json_object_is_type(obj, json_type_object)) {
        frame->unvisited = g_hash_table_new(g_str_hash, g_str_equal);
        json_object_object_foreach(obj, key, val) {
            (void)val;
            g_hash_table_add(frame->unvisited, key);
        }
    }
    g_ptr_array_add(qiv->stack, frame);
}

static void frame_free(gpointer p)
{
    InputFrame *frame = p;

    if (frame->unvisited) {
        g_hash_table_destroy(frame->unvisited);
    }
    g_free(frame->name);
    g_free(frame);
}

static void qiv_pop(InputVisitor *qiv)
{
    assert(qiv->stack->len);
    g_ptr_array_remove_index(qiv->stack, qiv->stack->len - 1);
}

/*
 * Fetch member @name, which must be of JSON type @type (called @type_name
 * in the error message).
 */
static bool qiv_get_typed(InputVisitor *qiv, const char *name,
                          json_type type, const char *type_name,
                          json_object **value, Error **errp)
{
    if (!qiv_get(qiv, name, true, value, errp)) {
        return false;
    }
    if (!json_object_is_type(*value, type)) {
        qiv_type_error(qiv, name, type_name, errp);
        return false;
    }
    return true;
}

static bool qiv_start_struct(Visitor *v, const char *name, void **obj,
                             size_t size, Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    if (obj) {
        *obj = NULL;
    }
    if (!qiv_get_typed(qiv, name, json_type_object, "object", &value,
                       errp)) {
        return false;
    }
    qiv_push(qiv, name, value);
    if (obj) {
        *obj = g_malloc0(size);
    }
    return true;
}

static bool qiv_check_struct(Visitor *v, Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    InputFrame *top = qiv_top(qiv);

    assert(top && top->unvisited);
    if (!g_hash_table_size(top->unvisited)) {
        return true;
    }
    /* Report the first unexpected key in input order */
    json_object_object_foreach(top->obj, key, val) {
        (void)val;
        if (g_hash_table_contains(top->unvisited, key)) {
            g_autofree char *full = qiv_full_name(v, key);

            error_setg(errp, "Parameter '%s' is unexpected", full);
            return false;
        }
    }
    g_assert_not_reached();
}

static void qiv_end_struct(Visitor *v, void **obj)
{
    qiv_pop(to_qiv(v));
}

static bool qiv_start_list(Visitor *v, const char *name, GenericList **list,
                           size_t size, Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    if (list) {
        *list = NULL;
    }
    if (!qiv_get_typed(qiv, name, json_type_array, "array", &value,
                       errp)) {
        return false;
    }
    qiv_push(qiv, name, value);
    if (list && json_object_array_length(value)) {
        *list = g_malloc0(size);
    }
    return true;
}

static GenericList *qiv_next_list(Visitor *v, GenericList *tail,
                                  size_t size)
{
    InputFrame *top = qiv_top(to_qiv(v));

    assert(top && frame_is_list(top));
    top->index++;
    if (top->index >= json_object_array_length(top->obj)) {
        return NULL;
    }
    tail->next = g_malloc0(size);
    return tail->next;
}

static void qiv_end_list(Visitor *v, void **obj)
{
    qiv_pop(to_qiv(v));
}

static bool qiv_start_alternate(Visitor *v, const char *name,
                                GenericAlternate **obj, size_t size,
                                Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    *obj = NULL;
    if (!qiv_get(qiv, name, false, &value, errp)) {
        return false;
    }
    *obj = g_malloc0(size);
    (*obj)->type = qtype_of_json(value);
    return true;
}

static bool qiv_optional(Visitor *v, const char *name, bool *present)
{
    InputFrame *top = qiv_top(to_qiv(v));
    json_object *value;

    if (!top || frame_is_list(top)) {
        *present = true;
        return true;
    }
    *present = json_object_object_get_ex(top->obj, name, &value);
    return *present;
}

/* A json-c integer that is above INT64_MAX (stored as uint64) */
static bool json_is_big_uint(json_object *obj)
{
    return json_object_get_int64(obj) == INT64_MAX &&
        json_object_get_uint64(obj) > (uint64_t)INT64_MAX;
}

static bool qiv_type_int64(Visitor *v, const char *name, int64_t *obj,
                           Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    if (qiv->keyval) {
        const char *str = qiv_get_keyval(qiv, name, errp);
        char *end;

        if (!str) {
            return false;
        }
        errno = 0;
        *obj = strtoll(str, &end, 0);
        if (errno || end == str || *end) {
            qiv_value_error(qiv, name, "integer", errp);
            return false;
        }
        return true;
    }
    if (!qiv_get(qiv, name, true, &value, errp)) {
        return false;
    }
    if (!json_object_is_type(value, json_type_int) ||
        json_is_big_uint(value)) {
        qiv_type_error(qiv, name, "integer", errp);
        return false;
    }
    *obj = json_object_get_int64(value);
    return true;
}

static bool qiv_type_uint64(Visitor *v, const char *name, uint64_t *obj,
                            Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;
    int64_t signed_value;

    if (qiv->keyval) {
        const char *str = qiv_get_keyval(qiv, name, errp);
        char *end;

        if (!str) {
            return false;
        }
        /* Like QEMU, "-1" is accepted and wraps around */
        errno = 0;
        *obj = strtoull(str, &end, 0);
        if (errno || end == str || *end) {
            qiv_value_error(qiv, name, "integer", errp);
            return false;
        }
        return true;
    }
    if (!qiv_get_typed(qiv, name, json_type_int, "integer", &value,
                       errp)) {
        return false;
    }
    /* Negative numbers are accepted for compatibility, as QEMU does */
    signed_value = json_object_get_int64(value);
    if (signed_value < 0) {
        *obj = signed_value;
    } else {
        *obj = json_object_get_uint64(value);
    }
    return true;
}

static bool qiv_type_size(Visitor *v, const char *name, uint64_t *obj,
                          Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    const char *str;

    if (!qiv->keyval) {
        return qiv_type_uint64(v, name, obj, errp);
    }
    str = qiv_get_keyval(qiv, name, errp);
    if (!str) {
        return false;
    }
    if (!qapi_size_parse_str(str, obj)) {
        qiv_value_error(qiv, name, "size", errp);
        return false;
    }
    return true;
}

static bool qiv_type_bool(Visitor *v, const char *name, bool *obj,
                          Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    if (qiv->keyval) {
        const char *str = qiv_get_keyval(qiv, name, errp);

        if (!str) {
            return false;
        }
        if (!qapi_bool_parse_str(str, obj)) {
            qiv_value_error(qiv, name, "'on' or 'off'", errp);
            return false;
        }
        return true;
    }
    if (!qiv_get_typed(qiv, name, json_type_boolean, "boolean", &value,
                       errp)) {
        return false;
    }
    *obj = json_object_get_boolean(value);
    return true;
}

static bool qiv_type_str(Visitor *v, const char *name, char **obj,
                         Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    *obj = NULL;
    if (!qiv_get_typed(qiv, name, json_type_string, "string", &value,
                       errp)) {
        return false;
    }
    *obj = g_strdup(json_object_get_string(value));
    return true;
}

static bool qiv_type_number(Visitor *v, const char *name, double *obj,
                            Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    if (qiv->keyval) {
        const char *str = qiv_get_keyval(qiv, name, errp);
        char *end;
        double d;

        if (!str) {
            return false;
        }
        errno = 0;
        d = strtod(str, &end);
        if (errno || end == str || *end || !isfinite(d)) {
            qiv_value_error(qiv, name, "number", errp);
            return false;
        }
        *obj = d;
        return true;
    }
    if (!qiv_get(qiv, name, true, &value, errp)) {
        return false;
    }
    if (!json_object_is_type(value, json_type_double) &&
        !json_object_is_type(value, json_type_int)) {
        qiv_type_error(qiv, name, "number", errp);
        return false;
    }
    *obj = json_object_get_double(value);
    return true;
}

static bool qiv_type_any(Visitor *v, const char *name, json_object **obj,
                         Error **errp)
{
    json_object *value;

    *obj = NULL;
    if (!qiv_get(to_qiv(v), name, true, &value, errp)) {
        return false;
    }
    *obj = json_object_get(value);
    return true;
}

static bool qiv_type_null(Visitor *v, const char *name, json_object **obj,
                          Error **errp)
{
    InputVisitor *qiv = to_qiv(v);
    json_object *value;

    *obj = NULL;
    if (!qiv_get(qiv, name, true, &value, errp)) {
        return false;
    }
    if (qiv->keyval && json_object_is_type(value, json_type_string) &&
        !*json_object_get_string(value)) {
        return true;
    }
    if (value) {
        qiv_type_error(qiv, name, "null", errp);
        return false;
    }
    return true;
}

static void qiv_free(Visitor *v)
{
    InputVisitor *qiv = to_qiv(v);

    g_ptr_array_free(qiv->stack, true);
    json_object_put(qiv->root);
    g_free(qiv);
}

static Visitor *input_visitor_new(json_object *obj, bool keyval)
{
    InputVisitor *qiv = g_new0(InputVisitor, 1);

    qiv->visitor = (Visitor) {
        .type = VISITOR_INPUT,
        .start_struct = qiv_start_struct,
        .check_struct = qiv_check_struct,
        .end_struct = qiv_end_struct,
        .start_list = qiv_start_list,
        .next_list = qiv_next_list,
        .end_list = qiv_end_list,
        .start_alternate = qiv_start_alternate,
        .optional = qiv_optional,
        .full_name = qiv_full_name,
        .type_int64 = qiv_type_int64,
        .type_uint64 = qiv_type_uint64,
        .type_size = qiv_type_size,
        .type_bool = qiv_type_bool,
        .type_str = qiv_type_str,
        .type_number = qiv_type_number,
        .type_any = qiv_type_any,
        .type_null = qiv_type_null,
        .free = qiv_free,
    };
    qiv->root = json_object_get(obj);
    qiv->keyval = keyval;
    qiv->stack = g_ptr_array_new_with_free_func(frame_free);
    return &qiv->visitor;
}

Visitor *qobject_input_visitor_new(json_object *obj)
{
    return input_visitor_new(obj, false);
}

Visitor *qobject_input_visitor_new_keyval(json_object *obj)
{
    return input_visitor_new(obj, true);
}

json_object *qmp_option_parse(const char *arg, const char *implied_key,
                              bool *keyval_mode, Error **errp)
{
    json_object *obj;
    bool help = false;

    if (qobject_is_json_opt(arg)) {
        obj = qapi_parse_json_object(arg, errp);
        *keyval_mode = false;
        return obj;
    }
    obj = keyval_parse(arg, implied_key, &help, errp);
    if (!obj) {
        return NULL;
    }
    if (help) {
        json_object_put(obj);
        error_setg(errp, "Help is not available for this option");
        return NULL;
    }
    *keyval_mode = true;
    return obj;
}

Visitor *qmp_option_visitor_new(const char *arg, const char *implied_key,
                                Error **errp)
{
    bool keyval;
    json_object *obj = qmp_option_parse(arg, implied_key, &keyval, errp);
    Visitor *v;

    if (!obj) {
        return NULL;
    }
    v = input_visitor_new(obj, keyval);
    json_object_put(obj);
    return v;
}
