/*
 * User-creatable objects: the class table and the id registry.
 * See include/qom/object.h.
 *
 * Error messages and their order follow QEMU 7.2: a malformed id is
 * refused first, then the object is built (which may fail on its own
 * properties or files), and only then is a duplicate id detected.
 */
#include "qom/object.h"
#include "util/id.h"
#include "qapi/qapi-commands.h"

static const ObjectClass *object_classes[OBJECT_TYPE__MAX];

/* id -> Object; the table's value holds one reference. */
static GHashTable *object_table;

void object_class_register(const ObjectClass *klass)
{
    g_assert(klass->type < OBJECT_TYPE__MAX);
    g_assert(!object_classes[klass->type]);
    object_classes[klass->type] = klass;
}

static GHashTable *object_get_table(void)
{
    if (!object_table) {
        object_table = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                             (GDestroyNotify)object_unref);
    }
    return object_table;
}

Object *object_ref(Object *obj)
{
    obj->refcount++;
    return obj;
}

void object_unref(Object *obj)
{
    g_assert(obj->refcount > 0);
    if (--obj->refcount > 0) {
        return;
    }
    g_free(obj->id);
    obj->klass->free(obj);
}

Object *object_find(const char *id)
{
    return g_hash_table_lookup(object_get_table(), id);
}

bool object_is_a(Object *obj, const char *abstract_type)
{
    return !strcmp(obj->klass->abstract_type, abstract_type);
}

bool object_add(ObjectOptions *opts, Error **errp)
{
    const ObjectClass *klass = object_classes[opts->qom_type];
    Object *obj;

    if (!id_wellformed(opts->id)) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    if (!klass) {
        error_setg(errp, "invalid object type: %s",
                   ObjectType_str(opts->qom_type));
        return false;
    }
    obj = klass->create(opts, errp);
    if (!obj) {
        return false;
    }
    obj->klass = klass;
    obj->id = g_strdup(opts->id);
    obj->refcount = 1;
    if (object_find(opts->id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object "
                   "(type 'container')", opts->id);
        object_unref(obj);
        return false;
    }
    g_hash_table_insert(object_get_table(), obj->id, obj);
    return true;
}

bool object_del(const char *id, Error **errp)
{
    if (!g_hash_table_remove(object_get_table(), id)) {
        error_setg(errp, "object '%s' not found", id);
        return false;
    }
    return true;
}

void object_del_all(void)
{
    g_hash_table_remove_all(object_get_table());
}

void qmp_object_add(ObjectOptions *arg, Error **errp)
{
    object_add(arg, errp);
}

void qmp_object_del(const char *id, Error **errp)
{
    object_del(id, errp);
}
