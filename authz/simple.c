/*
 * authz-simple: exactly one identity is allowed.
 */
#include "authz/authz.h"

typedef struct QAuthZSimple {
    QAuthZ parent;
    char *identity;
} QAuthZSimple;

static bool authz_simple_is_allowed(QAuthZ *authz, const char *identity)
{
    QAuthZSimple *simple = container_of(authz, QAuthZSimple, parent);

    return !strcmp(simple->identity, identity);
}

static Object *authz_simple_create(ObjectOptions *opts, Error **errp)
{
    QAuthZSimple *simple = g_new0(QAuthZSimple, 1);

    simple->parent.is_allowed = authz_simple_is_allowed;
    simple->identity = g_strdup(opts->u.authz_simple.identity);
    return &simple->parent.parent;
}

static void authz_simple_free(Object *obj)
{
    QAuthZSimple *simple = container_of(obj, QAuthZSimple, parent.parent);

    g_free(simple->identity);
    g_free(simple);
}

static const ObjectClass authz_simple_class = {
    .type = OBJECT_TYPE_AUTHZ_SIMPLE,
    .abstract_type = TYPE_QAUTHZ,
    .create = authz_simple_create,
    .free = authz_simple_free,
};

static void __attribute__((constructor)) authz_simple_register(void)
{
    object_class_register(&authz_simple_class);
}
