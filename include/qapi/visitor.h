/*
 * The Visitor interface: one walk over a QAPI type serves three purposes.
 *
 * Generated visit_type_FOO() functions describe the shape of FOO by calling
 * the functions below, member by member.  What happens to the data depends
 * on the visitor:
 *
 *  - an input visitor (qobject-input-visitor.h) fills a fresh C object from
 *    a JSON tree, and fails with a QMP-compatible error on a missing,
 *    unexpected or mistyped member; in keyval mode every scalar arrives as
 *    a string (command line) and is converted according to the schema type;
 *  - an output visitor (qobject-output-visitor.h) builds a JSON tree from a
 *    C object;
 *  - the dealloc visitor (dealloc-visitor.h) frees a C object, including a
 *    partially built one; qapi_free_FOO() uses it.
 *
 * Protocol for a struct: visit_start_struct(), member visits, then
 * visit_check_struct() (input: reject members nobody asked for), then
 * always visit_end_struct().  A list: visit_start_list(), visit the
 * element, visit_next_list() until it returns NULL, visit_check_list(),
 * visit_end_list().  An alternate: visit_start_alternate() allocates the
 * object and fills in its 'type'; the caller visits the matching branch and
 * calls visit_end_alternate().  Optional members are guarded by
 * visit_optional().
 *
 * @name is the member name inside a struct, NULL for list elements and the
 * top level.  Errors name members by their full path ("file.cache.direct",
 * "bitmaps[0].name").  Every function returning bool returns false exactly
 * when it set an error.
 */
#ifndef QAPI_VISITOR_H
#define QAPI_VISITOR_H

#include "util/osdep.h"
#include "util/error.h"
#include "qapi/util.h"

typedef struct Visitor Visitor;

typedef enum VisitorType {
    VISITOR_INPUT = 1,
    VISITOR_OUTPUT = 2,
    VISITOR_DEALLOC = 4,
} VisitorType;

/* Layout every generated FooList starts with */
typedef struct GenericList {
    struct GenericList *next;
    char padding[];
} GenericList;

/* Layout every generated alternate starts with */
typedef struct GenericAlternate {
    QType type;
    char padding[];
} GenericAlternate;

/*
 * Start visiting a struct.  Input: if @obj is not NULL, *obj is set to a
 * zeroed allocation of @size bytes (NULL on failure).  @obj NULL visits the
 * members of an object without allocating (command arguments, alternate
 * branches).
 */
bool visit_start_struct(Visitor *v, const char *name, void **obj,
                        size_t size, Error **errp);
/* Input: fail if the current object has members nobody visited. */
bool visit_check_struct(Visitor *v, Error **errp);
/* Must follow every successful visit_start_struct(); @obj as there. */
void visit_end_struct(Visitor *v, void **obj);

/*
 * Start visiting a list.  Input: *list becomes the first node (zeroed,
 * @size bytes) or NULL for an empty list.
 */
bool visit_start_list(Visitor *v, const char *name, GenericList **list,
                      size_t size, Error **errp);
/* Advance past @tail; returns the next node or NULL at the end. */
GenericList *visit_next_list(Visitor *v, GenericList *tail, size_t size);
bool visit_check_list(Visitor *v, Error **errp);
void visit_end_list(Visitor *v, void **list);

/*
 * Start visiting an alternate.  Input: allocates *obj (@size bytes) and
 * sets (*obj)->type from the JSON value's kind; fails if the value is
 * missing.
 */
bool visit_start_alternate(Visitor *v, const char *name,
                           GenericAlternate **obj, size_t size,
                           Error **errp);
void visit_end_alternate(Visitor *v, void **obj);
/* Set the error for a value that matches no branch of alternate @type. */
void visit_type_alternate_mismatch(Visitor *v, const char *name,
                                   const char *type, Error **errp);

/*
 * Optional member @name: input sets *present to whether it exists; the
 * other visitors keep *present.  Returns *present.
 */
bool visit_optional(Visitor *v, const char *name, bool *present);

bool visit_type_enum(Visitor *v, const char *name, int *obj,
                     const char *const lookup[], int max, Error **errp);

bool visit_type_int(Visitor *v, const char *name, int64_t *obj,
                    Error **errp);
bool visit_type_int8(Visitor *v, const char *name, int8_t *obj,
                     Error **errp);
bool visit_type_int16(Visitor *v, const char *name, int16_t *obj,
                      Error **errp);
bool visit_type_int32(Visitor *v, const char *name, int32_t *obj,
                      Error **errp);
bool visit_type_int64(Visitor *v, const char *name, int64_t *obj,
                      Error **errp);
bool visit_type_uint8(Visitor *v, const char *name, uint8_t *obj,
                      Error **errp);
bool visit_type_uint16(Visitor *v, const char *name, uint16_t *obj,
                       Error **errp);
bool visit_type_uint32(Visitor *v, const char *name, uint32_t *obj,
                       Error **errp);
bool visit_type_uint64(Visitor *v, const char *name, uint64_t *obj,
                       Error **errp);
bool visit_type_size(Visitor *v, const char *name, uint64_t *obj,
                     Error **errp);
bool visit_type_bool(Visitor *v, const char *name, bool *obj, Error **errp);
/* Input: *obj is a new string; output: NULL is emitted as "". */
bool visit_type_str(Visitor *v, const char *name, char **obj, Error **errp);
bool visit_type_number(Visitor *v, const char *name, double *obj,
                       Error **errp);
/* Any JSON value; input takes a new reference, output adds one. */
bool visit_type_any(Visitor *v, const char *name, json_object **obj,
                    Error **errp);
/* The JSON null; *obj is always NULL. */
bool visit_type_null(Visitor *v, const char *name, json_object **obj,
                     Error **errp);

/*
 * Output visitor only: hand the result to @opaque (a json_object ** for
 * the qobject output visitor).  Call once, after the top-level visit.
 */
void visit_complete(Visitor *v, void *opaque);
void visit_free(Visitor *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Visitor, visit_free)

VisitorType visit_get_type(Visitor *v);
static inline bool visit_is_input(Visitor *v)
{
    return visit_get_type(v) == VISITOR_INPUT;
}
static inline bool visit_is_dealloc(Visitor *v)
{
    return visit_get_type(v) == VISITOR_DEALLOC;
}

#endif /* QAPI_VISITOR_H */
