#
# qapi-types.h/.c: C types for every schema type, enum lookup tables and
# the qapi_free_*() functions (which run the dealloc visitor).
#

from common import Output, header_open, header_close, c_string
from schema import AlternateType, EnumType, ObjectType, c_name


def gen_enum(typ, h, c):
    h.add('typedef enum %s {\n' % typ.c_name())
    for v in typ.values:
        h.add('    %s,\n' % typ.c_value(v))
    h.add('    %s,\n} %s;\n\n' % (typ.c_max(), typ.c_name()))
    h.add('extern const char *const %s_lookup[];\n' % typ.c_name())
    h.add('const char *%s_str(%s e);\n\n' % (typ.c_name(), typ.c_name()))
    c.add('const char *const %s_lookup[] = {\n' % typ.c_name())
    for v in typ.values:
        c.add('    [%s] = %s,\n' % (typ.c_value(v), c_string(v)))
    c.add('    [%s] = NULL,\n};\n\n' % typ.c_max())
    c.add('const char *%s_str(%s e)\n{\n'
          '    return qapi_enum_lookup(%s_lookup, %s, e);\n}\n\n'
          % (typ.c_name(), typ.c_name(), typ.c_name(), typ.c_max()))


def member_decls(members):
    out = ''
    for m in members:
        if m.needs_has():
            out += '    bool has_%s;\n' % m.c_name()
        out += '    %s%s;\n' % (fmt_type(m.type.c_type()), m.c_name())
    return out


def fmt_type(ctype):
    return ctype if ctype.endswith('*') else ctype + ' '


def struct_body(typ):
    if isinstance(typ, AlternateType):
        out = '    QType type;\n    union {\n'
        for m in typ.variants:
            if isinstance(m.type, ObjectType):
                out += '        %s %s;\n' % (m.type.c_name(), m.c_name())
            else:
                out += '        %s%s;\n' % (fmt_type(m.type.c_type()),
                                            m.c_name())
        return out + '    } u;\n'
    members = typ.all_members()
    out = member_decls(members)
    if typ.variants:
        out += '    union { /* tag is %s */\n' % typ.tag.c_name()
        for case, vtype in typ.variants:
            out += '        %s %s;\n' % (vtype.c_name(), c_name(case))
        out += '    } u;\n'
    if not members and not typ.variants:
        out += '    /* empty: C needs a member */\n    char qapi_dummy;\n'
    return out


def by_value_deps(typ):
    if isinstance(typ, AlternateType):
        return [m.type for m in typ.variants
                if isinstance(m.type, ObjectType)]
    if isinstance(typ, ObjectType) and typ.variants:
        return [v for _, v in typ.variants]
    return []


def generate(schema, outdir):
    h = Output('qapi-types.h', 'Schema-defined QAPI types')
    c = Output('qapi-types.c', 'Schema-defined QAPI types')
    header_open(h, 'qapi-types.h', ['qapi/util.h'])
    c.add('\n#include "util/osdep.h"\n#include "qapi/dealloc-visitor.h"\n'
          '#include "qapi/qapi-types.h"\n#include "qapi/qapi-visit.h"\n\n')

    lists = schema.all_lists()
    compound = [t for t in schema.order
                if isinstance(t, (ObjectType, AlternateType))]
    h.add('/* Forward declarations */\n')
    for t in compound:
        h.add('typedef struct %s %s;\n' % (t.c_name(), t.c_name()))
    for l in lists:
        h.add('typedef struct %s %s;\n' % (l.c_name(), l.c_name()))
    h.add('\n')
    for t in schema.order:
        if isinstance(t, EnumType):
            gen_enum(t, h, c)

    done = set()

    def emit(t):
        if t.name in done:
            return
        done.add(t.name)
        for dep in by_value_deps(t):
            emit(dep)
        h.add('struct %s {\n%s};\n\n' % (t.c_name(), struct_body(t)))
        base = getattr(t, 'base', None)
        if base is not None and not base.implicit and not t.variants:
            # The base's members come first, in order: a pointer upcast.
            h.add('static inline %s *qapi_%s_base(const %s *obj)\n'
                  '{\n    return (%s *)obj;\n}\n\n'
                  % (base.c_name(), t.c_name(), t.c_name(), base.c_name()))
        if not t.implicit:
            h.add('void qapi_free_%s(%s *obj);\n'
                  'G_DEFINE_AUTOPTR_CLEANUP_FUNC(%s, qapi_free_%s)\n\n'
                  % ((t.c_name(),) * 4))
            c.add('void qapi_free_%s(%s *obj)\n{\n'
                  '    Visitor *v;\n\n'
                  '    if (!obj) {\n        return;\n    }\n'
                  '    v = qapi_dealloc_visitor_new();\n'
                  '    visit_type_%s(v, NULL, &obj, NULL);\n'
                  '    visit_free(v);\n}\n\n' % ((t.c_name(),) * 3))

    for t in compound:
        emit(t)
    for l in lists:
        elem = l.element
        h.add('struct %s {\n    %s *next;\n    %s%s;\n};\n\n'
              % (l.c_name(), l.c_name(), fmt_type(elem.c_type()), 'value'))
        h.add('void qapi_free_%s(%s *obj);\n'
              'G_DEFINE_AUTOPTR_CLEANUP_FUNC(%s, qapi_free_%s)\n\n'
              % ((l.c_name(),) * 4))
        c.add('void qapi_free_%s(%s *obj)\n{\n'
              '    Visitor *v;\n\n'
              '    if (!obj) {\n        return;\n    }\n'
              '    v = qapi_dealloc_visitor_new();\n'
              '    visit_type_%s(v, NULL, &obj, NULL);\n'
              '    visit_free(v);\n}\n\n' % ((l.c_name(),) * 3))
    header_close(h, 'qapi-types.h')
    h.write(outdir)
    c.write(outdir)
