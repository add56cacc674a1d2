#
# qapi-introspect.h/.c: the answer of query-qmp-schema as one JSON text
# (a list of SchemaInfo objects), parsed once at run time.  Type names are
# the real schema names, except that every integer type is reported as
# "int" like QEMU does; commands without arguments or return value refer
# to the empty object type "q_empty".
#

import json

from common import Output
from schema import (AlternateType, BuiltinType, EnumType, ListType,
                    ObjectType)

INT_TYPES = {'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
             'uint64', 'size'}


class Introspector:
    def __init__(self, schema):
        self.schema = schema
        self.entries = []
        self.seen = set()

    def name(self, typ):
        if typ is None:
            self.need_empty = True
            return 'q_empty'
        if isinstance(typ, BuiltinType) and typ.name in INT_TYPES:
            typ = self.schema.types['int']
        self.use(typ)
        if isinstance(typ, ListType):
            return '[%s]' % self.name(typ.element)
        return typ.name

    def use(self, typ):
        key = typ.name
        if key in self.seen:
            return
        self.seen.add(key)
        ent = {'name': None}
        if isinstance(typ, BuiltinType):
            ent = {'name': typ.name, 'meta-type': 'builtin',
                   'json-type': typ.json_type()}
        elif isinstance(typ, EnumType):
            ent = {'name': typ.name, 'meta-type': 'enum',
                   'values': typ.values,
                   'members': [{'name': v} for v in typ.values]}
        elif isinstance(typ, ListType):
            ent = {'name': '[%s]' % self.name(typ.element),
                   'meta-type': 'array',
                   'element-type': self.name(typ.element)}
        elif isinstance(typ, ObjectType):
            ent = {'name': typ.name, 'meta-type': 'object', 'members': []}
            self.entries.append(ent)
            for m in typ.all_members():
                mem = {'name': m.name, 'type': self.name(m.type)}
                if m.optional:
                    mem['default'] = None
                if m.features:
                    mem['features'] = m.features
                ent['members'].append(mem)
            if typ.variants:
                ent['tag'] = typ.tag.name
                ent['variants'] = [{'case': case, 'type': self.name(v)}
                                   for case, v in typ.variants]
            if typ.features:
                ent['features'] = typ.features
            return
        elif isinstance(typ, AlternateType):
            ent = {'name': typ.name, 'meta-type': 'alternate',
                   'members': []}
            self.entries.append(ent)
            ent['members'] = [{'type': self.name(m.type)}
                              for m in typ.variants]
            return
        if getattr(typ, 'features', None):
            ent['features'] = typ.features
        self.entries.append(ent)

    def run(self):
        self.need_empty = False
        head = []
        for cmd in self.schema.commands:
            ent = {'name': cmd.name, 'meta-type': 'command',
                   'arg-type': self.name(cmd.arg_type),
                   'ret-type': self.name(cmd.ret_type)}
            if cmd.flags.get('allow-oob'):
                ent['allow-oob'] = True
            if cmd.features:
                ent['features'] = cmd.features
            head.append(ent)
        for ev in self.schema.events:
            ent = {'name': ev.name, 'meta-type': 'event',
                   'arg-type': self.name(ev.arg_type)}
            if ev.features:
                ent['features'] = ev.features
            head.append(ent)
        tail = self.entries
        if self.need_empty:
            tail = [{'name': 'q_empty', 'meta-type': 'object',
                     'members': []}] + tail
        return head + tail


def generate(schema, outdir):
    entries = Introspector(schema).run()
    h = Output('qapi-introspect.h', 'QAPI introspection data')
    h.add('\n#ifndef QAPI_QAPI_INTROSPECT_H\n#define QAPI_QAPI_INTROSPECT_H\n'
          '\n/* JSON text of the query-qmp-schema return value */\n'
          'extern const char qmp_schema_json[];\n\n'
          '#endif /* QAPI_QAPI_INTROSPECT_H */\n')
    c = Output('qapi-introspect.c', 'QAPI introspection data')
    c.add('\n#include "qapi/qapi-introspect.h"\n\n'
          'const char qmp_schema_json[] =\n    "["\n')
    for i, ent in enumerate(entries):
        text = json.dumps(ent, separators=(', ', ': '))
        text = text.replace('\\', '\\\\').replace('"', '\\"')
        sep = ', ' if i + 1 < len(entries) else ''
        c.add('    "%s%s"\n' % (text, sep))
    c.add('    "]";\n')
    h.write(outdir)
    c.write(outdir)
