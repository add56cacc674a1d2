/*
 * Typed parsers for command-line options that take a QAPI type, in JSON
 * ("{...}") or keyval ("k=v,...") form; both go through the same
 * generated visitor as the corresponding QMP command.
 */
#ifndef QAPI_QMP_OPTION_H
#define QAPI_QMP_OPTION_H

#include "qapi/qobject-input-visitor.h"
#include "qapi/qapi-visit.h"

/*
 * QMP_OPTION_PARSER(T) defines
 *   T *qmp_option_parse_T(const char *arg, const char *implied_key,
 *                         Error **errp);
 * which returns a new T (free with qapi_free_T()) or NULL with @errp set.
 */
#define QMP_OPTION_PARSER(T)                                            \
static inline T *qmp_option_parse_##T(const char *arg,               \
                                      const char *implied_key,          \
                                      Error **errp)                     \
{                                                                       \
    g_autoptr(Visitor) v = qmp_option_visitor_new(arg, implied_key,  \
                                                  errp);                \
    T *obj = NULL;                                                      \
                                                                        \
    if (v) {                                                            \
        visit_type_##T(v, NULL, &obj, errp);                            \
    }                                                                   \
    return obj;                                                         \
}

QMP_OPTION_PARSER(BlockdevOptions)
QMP_OPTION_PARSER(BlockExportOptions)
QMP_OPTION_PARSER(NbdServerOptions)
QMP_OPTION_PARSER(MonitorOptions)
QMP_OPTION_PARSER(ObjectOptions)

#endif /* QAPI_QMP_OPTION_H */
