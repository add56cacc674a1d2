/*
 * Authorization objects: the check by id.  See include/authz/authz.h.
 */
#include "authz/authz.h"

bool qauthz_is_allowed_by_id(const char *authz_id, const char *identity,
                             Error **errp)
{
    Object *obj = object_find(authz_id);
    QAuthZ *authz;

    if (!obj) {
        error_setg(errp, "No authorization object with id '%s'", authz_id);
        return false;
    }
    if (!object_is_a(obj, TYPE_QAUTHZ)) {
        error_setg(errp, "Object with id '%s' is not an authorization "
                   "object", authz_id);
        return false;
    }
    authz = container_of(obj, QAuthZ, parent);
    if (!authz->is_allowed(authz, identity)) {
        error_setg(errp, "identity '%s' is denied by '%s'", identity,
                   authz_id);
        return false;
    }
    return true;
}
