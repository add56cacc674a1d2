#
# qapi-commands.h/.c: the handler prototypes the rest of blockd implements,
# the marshallers that turn a QMP "arguments" object into a handler call
# and its return value into JSON, and qmp_init_marshal().
#

from common import Output, header_open, header_close
from gen_visit import visit_call


def handler_params(cmd):
    if cmd.arg_type is None:
        return []
    if cmd.boxed:
        return [('%s *' % cmd.arg_type.c_name(), 'arg', 'arg')]
    params = []
    for m in cmd.arg_type.all_members():
        if m.needs_has():
            params.append(('bool ', 'has_' + m.c_name(),
                           'arg.has_' + m.c_name()))
        ptype = m.type.c_param_type()
        if not ptype.endswith('*'):
            ptype += ' '
        params.append((ptype, m.c_name(), 'arg.' + m.c_name()))
    return params


def ret_ctype(cmd):
    if cmd.ret_type is None:
        return 'void'
    return cmd.ret_type.c_type().rstrip()


def prototype(cmd):
    params = ''.join('%s%s, ' % (t, n) for t, n, _ in handler_params(cmd))
    rtype = ret_ctype(cmd)
    sep = '' if rtype.endswith('*') else ' '
    return '%s%sqmp_%s(%sError **errp)' % (rtype, sep, cmd.c_name(), params)


def gen_marshal(cmd, c):
    cn = cmd.c_name()
    c.add('static void qmp_marshal_%s(json_object *args, json_object **ret,\n'
          '                             Error **errp)\n{\n' % cn)
    c.add('    Error *err = NULL;\n    bool ok = false;\n    Visitor *v;\n')
    at = cmd.arg_type
    if cmd.boxed:
        c.add('    %s *arg = NULL;\n' % at.c_name())
    elif at is not None:
        c.add('    %s arg = { 0 };\n' % at.c_name())
    if cmd.ret_type is not None:
        init = ' = NULL' if ret_ctype(cmd).endswith('*') else ''
        if cmd.ret_type.is_scalar():
            init = ' = 0'
        c.add('    %s retval%s;\n' % (ret_ctype(cmd), init))
    c.add('\n    v = qobject_input_visitor_new(args);\n')
    if cmd.boxed:
        c.add('    ok = visit_type_%s(v, NULL, &arg, errp);\n' % at.c_name())
    else:
        members = ('visit_type_%s_members(v, &arg, errp) &&\n            '
                   % at.c_name()) if at is not None else ''
        c.add('    if (visit_start_struct(v, NULL, NULL, 0, errp)) {\n'
              '        ok = %svisit_check_struct(v, errp);\n'
              '        visit_end_struct(v, NULL);\n    }\n' % members)
    c.add('    visit_free(v);\n    if (ok) {\n')
    args = ''.join('%s, ' % a for _, _, a in handler_params(cmd))
    if cmd.ret_type is None:
        c.add('        qmp_%s(%s&err);\n' % (cn, args))
        c.add('        error_propagate(errp, err);\n')
    else:
        c.add('        retval = qmp_%s(%s&err);\n' % (cn, args))
        c.add('''        if (err) {
            error_propagate(errp, err);
        } else {
            v = qobject_output_visitor_new(ret);
            %s;
            visit_complete(v, ret);
            visit_free(v);
        }
        v = qapi_dealloc_visitor_new();
        %s;
        visit_free(v);
''' % (visit_call(cmd.ret_type, '"unused"', '&retval')
       .replace('errp)', '&error_abort)'),
       visit_call(cmd.ret_type, '"unused"', '&retval')
       .replace('errp)', 'NULL)')))
    c.add('    }\n')
    if cmd.boxed:
        c.add('    qapi_free_%s(arg);\n' % at.c_name())
    elif at is not None and at.all_members():
        c.add('''    v = qapi_dealloc_visitor_new();
    visit_start_struct(v, NULL, NULL, 0, NULL);
    visit_type_%s_members(v, &arg, NULL);
    visit_end_struct(v, NULL);
    visit_free(v);
''' % at.c_name())
    c.add('}\n\n')


def generate(schema, outdir):
    h = Output('qapi-commands.h', 'Schema-defined QMP commands')
    c = Output('qapi-commands.c', 'Schema-defined QMP command marshallers')
    header_open(h, 'qapi-commands.h',
                ['util/error.h', 'qapi/qapi-types.h', 'qapi/qmp-dispatch.h'])
    c.add('\n#include "util/osdep.h"\n#include "util/error.h"\n'
          '#include "qapi/dealloc-visitor.h"\n'
          '#include "qapi/qobject-input-visitor.h"\n'
          '#include "qapi/qobject-output-visitor.h"\n'
          '#include "qapi/qapi-visit.h"\n#include "qapi/qapi-commands.h"\n\n')
    h.add('/* Command handlers, implemented outside the generated code */\n')
    for cmd in schema.commands:
        h.add('%s;\n' % prototype(cmd))
        gen_marshal(cmd, c)
    h.add('\n/* Register every schema command in @cmds */\n'
          'void qmp_init_marshal(QmpCommandList *cmds);\n\n')
    c.add('void qmp_init_marshal(QmpCommandList *cmds)\n{\n')
    for cmd in schema.commands:
        flags = []
        for key, flag in (('allow-oob', 'QCO_ALLOW_OOB'),
                          ('allow-preconfig', 'QCO_ALLOW_PRECONFIG'),
                          ('coroutine', 'QCO_COROUTINE')):
            if cmd.flags.get(key):
                flags.append(flag)
        c.add('    qmp_register_command(cmds, "%s", qmp_marshal_%s, %s);\n'
              % (cmd.name, cmd.c_name(),
                 ' | '.join(flags) if flags else 'QCO_NO_OPTIONS'))
    c.add('}\n')
    header_close(h, 'qapi-commands.h')
    h.write(outdir)
    c.write(outdir)
