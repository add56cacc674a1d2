#
# qapi-events.h/.c: one qapi_event_send_NAME() per schema event.  Each
# builds the "data" member with the output visitor and hands it to
# qapi_event_emit() (monitor/), which adds the timestamp and broadcasts.
#

from common import Output, header_open, header_close
from schema import c_name


def params(ev):
    if ev.arg_type is None:
        return []
    if ev.boxed:
        return [('%s *' % ev.arg_type.c_name(), 'arg')]
    out = []
    for m in ev.arg_type.all_members():
        if m.needs_has():
            out.append(('bool ', 'has_' + m.c_name()))
        ptype = m.type.c_param_type()
        out.append((ptype if ptype.endswith('*') else ptype + ' ',
                    m.c_name()))
    return out


def prototype(ev):
    ps = ', '.join('%s%s' % p for p in params(ev)) or 'void'
    return 'void qapi_event_send_%s(%s)' % (c_name(ev.name.lower(), False),
                                            ps)


def generate(schema, outdir):
    h = Output('qapi-events.h', 'Schema-defined QAPI events')
    c = Output('qapi-events.c', 'Schema-defined QAPI events')
    header_open(h, 'qapi-events.h', ['qapi/qapi-types.h'])
    c.add('\n#include "util/osdep.h"\n#include "util/error.h"\n'
          '#include "qapi/qmp-event.h"\n'
          '#include "qapi/qobject-output-visitor.h"\n'
          '#include "qapi/qapi-visit.h"\n#include "qapi/qapi-events.h"\n\n')
    for ev in schema.events:
        h.add('%s;\n' % prototype(ev))
        c.add('%s\n{\n    json_object *data = NULL;\n' % prototype(ev))
        at = ev.arg_type
        if at is not None:
            if ev.boxed:
                c.add('    %s *param = arg;\n' % at.c_name())
            else:
                c.add('    %s param_obj = {\n' % at.c_name())
                for m in at.all_members():
                    if m.needs_has():
                        c.add('        .has_%s = has_%s,\n'
                              % (m.c_name(), m.c_name()))
                    cast = ''
                    if m.type.c_param_type() != m.type.c_type():
                        cast = '(%s)' % m.type.c_type().rstrip()
                    c.add('        .%s = %s%s,\n' % (m.c_name(), cast,
                                                     m.c_name()))
                c.add('    };\n    %s *param = &param_obj;\n' % at.c_name())
            c.add('''    Visitor *v = qobject_output_visitor_new(&data);

    visit_start_struct(v, "%s", NULL, 0, &error_abort);
    visit_type_%s_members(v, param, &error_abort);
    visit_check_struct(v, &error_abort);
    visit_end_struct(v, NULL);
    visit_complete(v, &data);
    visit_free(v);
''' % (ev.name, at.c_name()))
        c.add('    qapi_event_emit("%s", data);\n}\n\n' % ev.name)
    h.add('\n')
    header_close(h, 'qapi-events.h')
    h.write(outdir)
    c.write(outdir)
