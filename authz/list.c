/*
 * authz-list: rules tried in order; the first whose match string matches
 * the identity decides, and the list's policy applies when none does.
 * A glob rule is a shell wildcard pattern (fnmatch(3) without flags, so
 * '*' also matches ',' and '/' in a distinguished name).
 */
#include "authz/authz.h"
#include "qapi/qapi-visit.h"

#include <fnmatch.h>

typedef struct QAuthZList {
    QAuthZ parent;
    QAuthZListPolicy policy;
    QAuthZListRuleList *rules;
} QAuthZList;

static bool authz_rule_matches(const QAuthZListRule *rule,
                               const char *identity)
{
    QAuthZListFormat format = rule->has_format ? rule->format
                                               : QAUTHZ_LIST_FORMAT_EXACT;

    if (format == QAUTHZ_LIST_FORMAT_GLOB) {
        return fnmatch(rule->match, identity, 0) == 0;
    }
    return !strcmp(rule->match, identity);
}

static bool authz_list_is_allowed(QAuthZ *authz, const char *identity)
{
    QAuthZList *list = container_of(authz, QAuthZList, parent);

    for (QAuthZListRuleList *r = list->rules; r; r = r->next) {
        if (authz_rule_matches(r->value, identity)) {
            return r->value->policy == QAUTHZ_LIST_POLICY_ALLOW;
        }
    }
    return list->policy == QAUTHZ_LIST_POLICY_ALLOW;
}

static Object *authz_list_create(ObjectOptions *opts, Error **errp)
{
    AuthZListProperties *props = &opts->u.authz_list;
    QAuthZList *list = g_new0(QAuthZList, 1);

    list->parent.is_allowed = authz_list_is_allowed;
    list->policy = props->has_policy ? props->policy
                                     : QAUTHZ_LIST_POLICY_DENY;
    /* Take the rules over; the options are freed by the caller. */
    list->rules = g_steal_pointer(&props->rules);
    return &list->parent.parent;
}

static void authz_list_free(Object *obj)
{
    QAuthZList *list = container_of(obj, QAuthZList, parent.parent);

    qapi_free_QAuthZListRuleList(list->rules);
    g_free(list);
}

static const ObjectClass authz_list_class = {
    .type = OBJECT_TYPE_AUTHZ_LIST,
    .abstract_type = TYPE_QAUTHZ,
    .create = authz_list_create,
    .free = authz_list_free,
};

static void __attribute__((constructor)) authz_list_register(void)
{
    object_class_register(&authz_list_class);
}
