#
# QAPI schema model for blockd: resolves names, checks the definitions and
# their documentation, and offers the C naming helpers the generators share.
#

import re

from qapi_parser import QAPIError, parse_file

C_KEYWORDS = set('''
auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed
sizeof static struct switch typedef union unsigned void volatile while
_Bool _Complex _Imaginary bool true false asm typeof errno unix
'''.split())


def c_name(name, protect=True):
    """C identifier for a schema name: '-' and '.' become '_'."""
    name = re.sub(r'[^A-Za-z0-9_]', '_', name)
    if protect and name in C_KEYWORDS:
        return 'q_' + name
    return name


def camel_to_upper(name):
    """BlockdevDriver -> BLOCKDEV_DRIVER, QMPCapability -> QMP_CAPABILITY."""
    out = ''
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            prev = name[i - 1]
            nxt = name[i + 1] if i + 1 < len(name) else ''
            if prev.islower() or prev.isdigit() or \
                    (prev.isupper() and nxt.islower()):
                out += '_'
        out += ch
    return c_name(out, False).upper()


class Type:
    meta = None
    builtin = False
    implicit = False

    def __init__(self, name, info=None, doc=None):
        self.name = name
        self.info = info
        self.doc = doc
        self.features = []

    def c_name(self):
        return c_name(self.name, False)

    def c_type(self):
        """Type of a variable or member holding this type."""
        return self.c_name() + ' *'

    def c_param_type(self):
        return self.c_type()

    def is_scalar(self):
        """Scalars are stored by value and need has_ flags when optional."""
        return False

    def json_type(self):
        raise NotImplementedError

    def qtype(self):
        return {'string': 'QTYPE_QSTRING', 'int': 'QTYPE_QNUM',
                'number': 'QTYPE_QNUM', 'boolean': 'QTYPE_QBOOL',
                'null': 'QTYPE_QNULL', 'object': 'QTYPE_QDICT',
                'array': 'QTYPE_QLIST'}[self.json_type()]

    def list_name(self):
        return self.c_name() + 'List'


class BuiltinType(Type):
    meta = 'builtin'
    builtin = True

    def __init__(self, name, ctype, json_type, visit):
        Type.__init__(self, name)
        self._ctype = ctype
        self._json = json_type
        self.visit = visit

    def c_type(self):
        return self._ctype

    def c_param_type(self):
        if self.name == 'str':
            return 'const char *'
        return self._ctype

    def is_scalar(self):
        return self.name not in ('str', 'any', 'null')

    def json_type(self):
        return self._json

    def list_name(self):
        return self.name + 'List'


BUILTINS = [
    ('str', 'char *', 'string', 'str'),
    ('number', 'double', 'number', 'number'),
    ('int', 'int64_t', 'int', 'int'),
    ('int8', 'int8_t', 'int', 'int8'),
    ('int16', 'int16_t', 'int', 'int16'),
    ('int32', 'int32_t', 'int', 'int32'),
    ('int64', 'int64_t', 'int', 'int64'),
    ('uint8', 'uint8_t', 'int', 'uint8'),
    ('uint16', 'uint16_t', 'int', 'uint16'),
    ('uint32', 'uint32_t', 'int', 'uint32'),
    ('uint64', 'uint64_t', 'int', 'uint64'),
    ('size', 'uint64_t', 'int', 'size'),
    ('bool', 'bool', 'boolean', 'bool'),
    ('any', 'json_object *', 'value', 'any'),
    ('null', 'json_object *', 'null', 'null'),
]


class EnumType(Type):
    meta = 'enum'

    def __init__(self, name, info, doc, values, prefix):
        Type.__init__(self, name, info, doc)
        self.values = values
        self.prefix = prefix

    def c_type(self):
        return self.c_name()

    def c_param_type(self):
        return self.c_name()

    def is_scalar(self):
        return True

    def json_type(self):
        return 'string'

    def c_value(self, value):
        prefix = self.prefix or camel_to_upper(self.name)
        return prefix + '_' + c_name(value, False).upper()

    def c_max(self):
        return (self.prefix or camel_to_upper(self.name)) + '__MAX'


class ListType(Type):
    meta = 'array'

    def __init__(self, element):
        Type.__init__(self, '[' + element.name + ']')
        self.element = element

    def c_name(self):
        return self.element.list_name()

    def json_type(self):
        return 'array'


class Member:
    def __init__(self, name, typ, optional, info):
        self.name = name
        self.type = typ
        self.optional = optional
        self.info = info
        self.features = []

    def c_name(self):
        return c_name(self.name)

    def needs_has(self):
        return self.optional and self.type.is_scalar()


class ObjectType(Type):
    """A struct or a flat union (variants is not None)."""
    meta = 'object'

    def __init__(self, name, info, doc, implicit=False):
        Type.__init__(self, name, info, doc)
        self.implicit = implicit
        self.base = None
        self.local_members = []
        self.tag = None                 # discriminator Member (unions)
        self.variants = None            # [(case, ObjectType)] or None

    def json_type(self):
        return 'object'

    def all_members(self):
        base = self.base.all_members() if self.base else []
        return base + self.local_members

    def is_empty(self):
        return not self.all_members() and not self.variants


class AlternateType(Type):
    meta = 'alternate'

    def __init__(self, name, info, doc):
        Type.__init__(self, name, info, doc)
        self.variants = []              # [Member]

    def json_type(self):
        return 'value'


class Command:
    def __init__(self, name, info, doc):
        self.name = name
        self.info = info
        self.doc = doc
        self.arg_type = None
        self.ret_type = None
        self.boxed = False
        self.flags = {}
        self.features = []

    def c_name(self):
        return c_name(self.name, False)


class Event(Command):
    pass


class Schema:
    def __init__(self, fname):
        self.types = {}
        self.order = []                 # user-defined types in schema order
        self.commands = []
        self.events = []
        self.lists = {}
        for name, ctype, jtype, visit in BUILTINS:
            self.types[name] = BuiltinType(name, ctype, jtype, visit)
        exprs = parse_file(fname)
        pending = []
        for expr, doc, info in exprs:
            pending.append(self._declare(expr, doc, info))
        # Structs first: union discriminators look into their bases.
        for prio, item in sorted(pending, key=lambda p: p[0]):
            item()
        self._check_docs()

    # --- declaration pass: create named entities ---
    def _define(self, typ):
        if typ.name in self.types:
            raise QAPIError(typ.info, "'%s' is already defined" % typ.name)
        self.types[typ.name] = typ
        self.order.append(typ)
        return typ

    def _declare(self, expr, doc, info):
        meta = None
        for key in ('enum', 'struct', 'union', 'alternate', 'command',
                    'event'):
            if key in expr:
                meta = key
        if meta is None:
            raise QAPIError(info, 'unknown definition kind')
        name = expr[meta]
        if doc is None:
            raise QAPIError(info, "definition '%s' lacks documentation"
                            % name)
        if doc.symbol != name:
            raise QAPIError(info, "doc comment is for '%s', not '%s'"
                            % (doc.symbol, name))
        allowed = {
            'enum': {'data', 'prefix'},
            'struct': {'data', 'base'},
            'union': {'data', 'base', 'discriminator'},
            'alternate': {'data'},
            'command': {'data', 'returns', 'boxed', 'allow-preconfig',
                        'allow-oob', 'coroutine', 'success-response'},
            'event': {'data', 'boxed'},
        }[meta] | {meta, 'features', 'if'}
        for key in expr:
            if key not in allowed:
                raise QAPIError(info, "'%s' has unknown key '%s'"
                                % (name, key))
        if meta == 'enum':
            values = [v['name'] if isinstance(v, dict) else v
                      for v in expr['data']]
            typ = self._define(EnumType(name, info, doc, values,
                                        expr.get('prefix')))
            typ.features = self._features(expr)
            return (0, lambda: None)
        if meta in ('struct', 'union'):
            typ = self._define(ObjectType(name, info, doc))
            typ.features = self._features(expr)
            return (0 if meta == 'struct' else 1,
                    lambda: self._resolve_object(typ, expr, meta))
        if meta == 'alternate':
            typ = self._define(AlternateType(name, info, doc))
            typ.features = self._features(expr)
            return (2, lambda: self._resolve_alternate(typ, expr))
        cls = Command if meta == 'command' else Event
        ent = cls(name, info, doc)
        ent.features = self._features(expr)
        (self.commands if meta == 'command' else self.events).append(ent)
        return (2, lambda: self._resolve_command(ent, expr, meta))

    def _features(self, expr):
        return [f['name'] if isinstance(f, dict) else f
                for f in expr.get('features', [])]

    # --- resolution pass ---
    def lookup(self, ref, info):
        if isinstance(ref, list):
            if len(ref) != 1:
                raise QAPIError(info, 'array type must have one element')
            elem = self.lookup(ref[0], info)
            lname = elem.list_name()
            if lname not in self.lists:
                self.lists[lname] = ListType(elem)
            return self.lists[lname]
        if ref not in self.types:
            raise QAPIError(info, "unknown type '%s'" % ref)
        return self.types[ref]

    def _members(self, data, info):
        members = []
        for key, val in data.items():
            feats = []
            if isinstance(val, dict):
                feats = [f['name'] if isinstance(f, dict) else f
                         for f in val.get('features', [])]
                val = val['type']
            opt = key.startswith('*')
            name = key[1:] if opt else key
            m = Member(name, self.lookup(val, info), opt, info)
            m.features = feats
            members.append(m)
        return members

    def _implicit(self, name, data, info, doc):
        typ = ObjectType(name, info, doc, implicit=True)
        typ.local_members = self._members(data, info)
        self.types[name] = typ
        self.order.append(typ)
        return typ

    def _resolve_object(self, typ, expr, meta):
        info = typ.info
        base = expr.get('base')
        if isinstance(base, dict):
            typ.base = self._implicit('q_obj_%s-base' % typ.name, base,
                                      info, typ.doc)
        elif base is not None:
            typ.base = self.lookup(base, info)
            if not isinstance(typ.base, ObjectType) or typ.base.variants:
                raise QAPIError(info, "base of '%s' must be a struct"
                                % typ.name)
        if meta == 'struct':
            typ.local_members = self._members(expr.get('data', {}), info)
            self._check_clash(typ)
            return
        if typ.base is None or 'discriminator' not in expr:
            raise QAPIError(info, "union '%s' needs 'base' and "
                            "'discriminator'" % typ.name)
        tag = [m for m in typ.base.all_members()
               if m.name == expr['discriminator']]
        if not tag or not isinstance(tag[0].type, EnumType) or \
                tag[0].optional:
            raise QAPIError(info, "discriminator of '%s' must be a "
                            "mandatory enum member of the base" % typ.name)
        typ.tag = tag[0]
        typ.variants = []
        for case, vname in expr['data'].items():
            if case not in typ.tag.type.values:
                raise QAPIError(info, "'%s' is not a value of '%s'"
                                % (case, typ.tag.type.name))
            vtype = self.lookup(vname, info)
            if not isinstance(vtype, ObjectType) or vtype.variants:
                raise QAPIError(info, "branch '%s' must be a struct" % case)
            typ.variants.append((case, vtype))

    def _check_clash(self, typ):
        seen = set()
        for m in typ.all_members():
            if m.c_name() in seen:
                raise QAPIError(typ.info, "member '%s' clashes" % m.name)
            seen.add(m.c_name())

    def _resolve_alternate(self, typ, expr):
        seen = set()
        for name, ref in expr['data'].items():
            m = Member(name, self.lookup(ref, typ.info), False, typ.info)
            if isinstance(m.type, ListType) or m.type.name == 'any':
                raise QAPIError(typ.info, 'unsupported alternate branch')
            qt = m.type.qtype()
            if qt in seen:
                raise QAPIError(typ.info, "alternate '%s' branches are "
                                "ambiguous" % typ.name)
            seen.add(qt)
            typ.variants.append(m)

    def _resolve_command(self, ent, expr, meta):
        info = ent.info
        data = expr.get('data')
        ent.boxed = expr.get('boxed', False)
        if isinstance(data, dict):
            if ent.boxed:
                raise QAPIError(info, "'boxed' needs a named type")
            ent.arg_type = self._implicit('q_obj_%s-arg' % ent.name, data,
                                          info, ent.doc)
        elif data is not None:
            ent.arg_type = self.lookup(data, info)
            if not isinstance(ent.arg_type, ObjectType):
                raise QAPIError(info, "'data' must be an object type")
            if ent.arg_type.variants and not ent.boxed:
                raise QAPIError(info, "union arguments need 'boxed'")
        if 'returns' in expr:
            ent.ret_type = self.lookup(expr['returns'], info)
        for key in ('allow-preconfig', 'allow-oob', 'coroutine',
                    'success-response'):
            if key in expr:
                ent.flags[key] = expr[key]

    # --- documentation checks (style rule 14) ---
    def _check_docs(self):
        def need(doc, names, what):
            for n in names:
                if n not in doc.args:
                    raise QAPIError(doc.info, "%s '%s' lacks documentation "
                                    "in '%s'" % (what, n, doc.symbol))

        for ent in self.order + self.commands + self.events:
            doc = ent.doc
            if getattr(ent, 'implicit', False):
                continue
            if 'Since' not in doc.sections:
                raise QAPIError(doc.info, "'%s' lacks a 'Since:' section"
                                % doc.symbol)
            if not doc.text():
                raise QAPIError(doc.info, "'%s' lacks a description"
                                % doc.symbol)
            documented = []
            if isinstance(ent, EnumType):
                documented = ent.values
                need(doc, documented, 'value')
            elif isinstance(ent, ObjectType):
                local = ent.local_members
                if ent.base is not None and ent.base.implicit:
                    local = ent.base.local_members + local
                documented = [m.name for m in local]
                need(doc, documented, 'member')
            elif isinstance(ent, AlternateType):
                documented = [m.name for m in ent.variants]
                need(doc, documented, 'branch')
            elif isinstance(ent, Command):
                if ent.arg_type is not None and ent.arg_type.implicit:
                    documented = [m.name
                                  for m in ent.arg_type.local_members]
                    need(doc, documented, 'argument')
            for n in doc.args:
                if n not in documented:
                    raise QAPIError(doc.info, "'%s' documents unknown "
                                    "member '%s'" % (doc.symbol, n))
            feats = list(ent.features)
            for m in getattr(ent, 'local_members', []):
                feats += m.features
            for f in feats:
                if f not in doc.features:
                    raise QAPIError(doc.info, "feature '%s' lacks "
                                    "documentation in '%s'"
                                    % (f, doc.symbol))

    def object_types(self):
        return [t for t in self.order if isinstance(t, ObjectType)]

    def all_lists(self):
        """Every list type: builtin element lists plus the ones in use."""
        for name, _, _, _ in BUILTINS:
            self.lookup([name], None)
        for t in self.order:
            if not t.implicit:
                self.lookup([t.name], None)
        return sorted(self.lists.values(), key=lambda l: l.c_name())
