#
# qapi-visit.h/.c: visit_type_FOO() for every type.  The same functions
# serve the input (JSON or keyval -> C), output (C -> JSON) and dealloc
# visitors; see include/qapi/visitor.h for the protocol.
#

from common import Output, header_open, header_close
from schema import AlternateType, BuiltinType, EnumType, ObjectType, c_name


def visit_call(typ, name_expr, ptr_expr):
    """Expression visiting one value; ptr_expr points to its storage."""
    if isinstance(typ, BuiltinType):
        return 'visit_type_%s(v, %s, %s, errp)' % (typ.visit, name_expr,
                                                   ptr_expr)
    return 'visit_type_%s(v, %s, %s, errp)' % (typ.c_name(), name_expr,
                                               ptr_expr)


def gen_members_body(members, prefix):
    out = ''
    for m in members:
        name = '"%s"' % m.name
        field = '%s%s' % (prefix, m.c_name())
        call = visit_call(m.type, name, '&' + field)
        if not m.optional:
            out += '    if (!%s) {\n        return false;\n    }\n' % call
        elif m.needs_has():
            out += ('    if (visit_optional(v, %s, &%shas_%s)) {\n'
                    '        if (!%s) {\n            return false;\n'
                    '        }\n    }\n' % (name, prefix, m.c_name(), call))
        else:
            out += ('    {\n        bool has = %s != NULL;\n\n'
                    '        if (visit_optional(v, %s, &has) && !%s) {\n'
                    '            return false;\n        }\n    }\n'
                    % (field, name, call))
    return out


def gen_object(typ, h, c):
    cn = typ.c_name()
    h.add('bool visit_type_%s_members(Visitor *v, %s *obj, Error **errp);\n'
          % (cn, cn))
    c.add('bool visit_type_%s_members(Visitor *v, %s *obj, Error **errp)\n{\n'
          % (cn, cn))
    c.add(gen_members_body(typ.all_members(), 'obj->'))
    if typ.variants:
        c.add('    switch (obj->%s) {\n' % typ.tag.c_name())
        for case, vtype in typ.variants:
            c.add('    case %s:\n'
                  '        return visit_type_%s_members(v, &obj->u.%s, errp);\n'
                  % (typ.tag.type.c_value(case), vtype.c_name(),
                     c_name(case)))
        c.add('    default:\n        break;\n    }\n')
    c.add('    return true;\n}\n\n')
    if typ.implicit:
        return
    gen_struct_visit(cn, h, c)


def gen_struct_visit(cn, h, c):
    h.add('bool visit_type_%s(Visitor *v, const char *name, %s **obj,\n'
          '    Error **errp);\n\n' % (cn, cn))
    c.add('''bool visit_type_%(c)s(Visitor *v, const char *name, %(c)s **obj,
    Error **errp)
{
    bool ok;

    if (!visit_start_struct(v, name, (void **)obj, sizeof(%(c)s), errp)) {
        return false;
    }
    if (!*obj) {
        /* Only the dealloc visitor sees an absent struct */
        visit_end_struct(v, (void **)obj);
        return true;
    }
    ok = visit_type_%(c)s_members(v, *obj, errp) &&
        visit_check_struct(v, errp);
    visit_end_struct(v, (void **)obj);
    if (!ok && visit_is_input(v)) {
        qapi_free_%(c)s(*obj);
        *obj = NULL;
    }
    return ok;
}

''' % {'c': cn})


def gen_enum(typ, h, c):
    cn = typ.c_name()
    h.add('bool visit_type_%s(Visitor *v, const char *name, %s *obj,\n'
          '    Error **errp);\n\n' % (cn, cn))
    c.add('''bool visit_type_%(c)s(Visitor *v, const char *name, %(c)s *obj,
    Error **errp)
{
    int value = *obj;
    bool ok = visit_type_enum(v, name, &value, %(c)s_lookup, %(max)s, errp);

    *obj = value;
    return ok;
}

''' % {'c': cn, 'max': typ.c_max()})


def gen_alternate(typ, h, c):
    cn = typ.c_name()
    h.add('bool visit_type_%s(Visitor *v, const char *name, %s **obj,\n'
          '    Error **errp);\n\n' % (cn, cn))
    c.add('''bool visit_type_%(c)s(Visitor *v, const char *name, %(c)s **obj,
    Error **errp)
{
    bool ok;

    if (!visit_start_alternate(v, name, (GenericAlternate **)obj,
                               sizeof(%(c)s), errp)) {
        return false;
    }
    if (!*obj) {
        /* Only the dealloc visitor sees an absent alternate */
        visit_end_alternate(v, (void **)obj);
        return true;
    }
    switch ((*obj)->type) {
''' % {'c': cn})
    for m in typ.variants:
        c.add('    case %s:\n' % m.type.qtype())
        if isinstance(m.type, ObjectType):
            c.add('''        ok = visit_start_struct(v, name, NULL, 0, errp);
        if (ok) {
            ok = visit_type_%s_members(v, &(*obj)->u.%s, errp) &&
                visit_check_struct(v, errp);
            visit_end_struct(v, NULL);
        }
        break;
''' % (m.type.c_name(), m.c_name()))
        else:
            c.add('        ok = %s;\n        break;\n'
                  % visit_call(m.type, 'name', '&(*obj)->u.' + m.c_name()))
    c.add('''    default:
        visit_type_alternate_mismatch(v, name, "%(c)s", errp);
        ok = false;
        break;
    }
    visit_end_alternate(v, (void **)obj);
    if (!ok && visit_is_input(v)) {
        qapi_free_%(c)s(*obj);
        *obj = NULL;
    }
    return ok;
}

''' % {'c': cn})


def gen_list(typ, h, c):
    cn = typ.c_name()
    h.add('bool visit_type_%s(Visitor *v, const char *name, %s **obj,\n'
          '    Error **errp);\n\n' % (cn, cn))
    elem = typ.element
    call = visit_call(elem, 'NULL', '&tail->value')
    c.add('''bool visit_type_%(c)s(Visitor *v, const char *name, %(c)s **obj,
    Error **errp)
{
    bool ok = true;
    %(c)s *tail;
    size_t size = sizeof(**obj);

    if (!visit_start_list(v, name, (GenericList **)obj, size, errp)) {
        return false;
    }
    for (tail = *obj; tail;
         tail = (%(c)s *)visit_next_list(v, (GenericList *)tail, size)) {
        if (!%(call)s) {
            ok = false;
            break;
        }
    }
    ok = ok && visit_check_list(v, errp);
    visit_end_list(v, (void **)obj);
    if (!ok && visit_is_input(v)) {
        qapi_free_%(c)s(*obj);
        *obj = NULL;
    }
    return ok;
}

''' % {'c': cn, 'call': call})


def generate(schema, outdir):
    h = Output('qapi-visit.h', 'Schema-defined QAPI visitors')
    c = Output('qapi-visit.c', 'Schema-defined QAPI visitors')
    header_open(h, 'qapi-visit.h', ['qapi/visitor.h', 'qapi/qapi-types.h'])
    c.add('\n#include "util/osdep.h"\n#include "util/error.h"\n'
          '#include "qapi/qapi-visit.h"\n\n')
    for t in schema.order:
        if isinstance(t, EnumType):
            gen_enum(t, h, c)
        elif isinstance(t, ObjectType):
            gen_object(t, h, c)
        elif isinstance(t, AlternateType):
            gen_alternate(t, h, c)
    for l in schema.all_lists():
        gen_list(l, h, c)
    header_close(h, 'qapi-visit.h')
    h.write(outdir)
    c.write(outdir)
