/*
 * User-creatable objects: --object, object-add and object-del.
 *
 * Objects are named things that other parts of the daemon refer to by
 * id, such as TLS credentials (crypto/) and authorization rules (authz/).
 * Each kind (ObjectType) is an ObjectClass that registers itself from a
 * constructor.  The registry maps ids to objects and holds one reference
 * on each; users that keep an object (a running NBD server keeps its
 * credentials) take their own.  object-del removes the id at once, as in
 * QEMU, and the object is freed when its last user lets it go.
 *
 * Main loop only.
 */
#ifndef QOM_OBJECT_H
#define QOM_OBJECT_H

#include "util/osdep.h"
#include "util/error.h"
#include "qapi/qapi-types.h"

typedef struct Object Object;
typedef struct ObjectClass ObjectClass;

struct ObjectClass {
    ObjectType type;
    /* What the kind is, for users that accept several: "tls-creds" ... */
    const char *abstract_type;
    /*
     * Build an object from @opts (already checked for a well-formed id);
     * returns it with the Object part zeroed, or NULL with @errp set.
     */
    Object *(*create)(ObjectOptions *opts, Error **errp);
    void (*free)(Object *obj);
};

struct Object {
    const ObjectClass *klass;
    char *id;
    unsigned refcount;
};

void object_class_register(const ObjectClass *klass);

/* object-add: create an object and register it under its id. */
bool object_add(ObjectOptions *opts, Error **errp);

/* object-del: unregister @id, dropping the registry's reference. */
bool object_del(const char *id, Error **errp);

/* Unregister every object (daemon shutdown). */
void object_del_all(void);

/* The registered object @id, or NULL; no reference is taken. */
Object *object_find(const char *id);

/* Whether @obj's class is a kind of @abstract_type. */
bool object_is_a(Object *obj, const char *abstract_type);

Object *object_ref(Object *obj);
void object_unref(Object *obj);

#endif /* QOM_OBJECT_H */
