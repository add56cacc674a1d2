/*
 * Authorization objects: authz-simple and authz-list.
 *
 * An authz object decides whether an identity, such as the distinguished
 * name of a TLS client certificate or a PSK user name, may use a service.
 * Users refer to it by id and look it up at every check, as QEMU does: an
 * object added or replaced later takes effect for the next client.
 */
#ifndef AUTHZ_AUTHZ_H
#define AUTHZ_AUTHZ_H

#include "qom/object.h"

#define TYPE_QAUTHZ "authz"

typedef struct QAuthZ QAuthZ;

struct QAuthZ {
    Object parent;
    bool (*is_allowed)(QAuthZ *authz, const char *identity);
};

/*
 * Whether the authz object @authz_id lets @identity in.  False with @errp
 * set when it does not, or when there is no such object.
 */
bool qauthz_is_allowed_by_id(const char *authz_id, const char *identity,
                             Error **errp);

#endif /* AUTHZ_AUTHZ_H */
