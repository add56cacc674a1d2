#
# QAPI schema parser for blockd.
#
# The schema language is a JSON subset with single-quoted strings and '#'
# comments.  A block of lines enclosed by '##' lines is a documentation
# comment and attaches to the definition that follows it.  This module turns
# the files into a list of (definition dict, Doc, source info) tuples;
# schema.py gives them meaning.
#

import os
import re


class QAPIError(Exception):
    def __init__(self, info, msg):
        Exception.__init__(self)
        self.info = info
        self.msg = msg

    def __str__(self):
        if self.info:
            return '%s:%d: %s' % (self.info[0], self.info[1], self.msg)
        return self.msg


class Doc:
    """One '##' documentation block."""

    def __init__(self, info, symbol):
        self.info = info
        self.symbol = symbol
        self.body = []
        self.args = {}          # member name -> text
        self.features = {}      # feature name -> text
        self.sections = {}      # 'Since', 'Returns', 'Errors', ... -> text

    def text(self):
        return '\n'.join(self.body).strip()


SECTION_RE = re.compile(r'^(Since|Returns|Errors|Example|Examples|Note|Notes|'
                        r'TODO|Features):\s*(.*)$')
ARG_RE = re.compile(r'^@([A-Za-z0-9_.-]+):\s*(.*)$')


def parse_doc(info, lines):
    if not lines or not lines[0].startswith('@') or \
            not lines[0].rstrip().endswith(':'):
        raise QAPIError(info, "doc comment must start with '@NAME:'")
    symbol = lines[0].strip()[1:-1]
    doc = Doc(info, symbol)
    current = None              # (dict, key) receiving continuation lines
    in_features = False
    for line in lines[1:]:
        stripped = line.strip()
        m = SECTION_RE.match(stripped)
        if m:
            name = m.group(1)
            if name == 'Features':
                in_features = True
                current = None
                continue
            in_features = False
            doc.sections[name] = m.group(2)
            current = (doc.sections, name)
            continue
        m = ARG_RE.match(stripped)
        if m and line.startswith('@'):
            target = doc.features if in_features else doc.args
            if m.group(1) in target:
                raise QAPIError(info, "'@%s' documented twice" % m.group(1))
            target[m.group(1)] = m.group(2)
            current = (target, m.group(1))
            continue
        if stripped == '':
            if current and current[0] is not doc.sections:
                current = None
            elif current:
                current[0][current[1]] += '\n'
            else:
                doc.body.append('')
            continue
        if current:
            sep = ' ' if current[0][current[1]] else ''
            current[0][current[1]] += sep + stripped
        else:
            doc.body.append(stripped)
    return doc


class Lexer:
    def __init__(self, fname, text):
        self.fname = fname
        self.text = text
        self.pos = 0
        self.line = 1
        self.pending_doc = None
        self.tok = None
        self.val = None
        self.tok_line = 1

    def info(self):
        return (self.fname, self.tok_line)

    def read_doc(self):
        lines = []
        start = self.line
        while True:
            end = self.text.find('\n', self.pos)
            if end < 0:
                raise QAPIError((self.fname, start),
                                'unterminated doc comment')
            raw = self.text[self.pos:end]
            self.pos = end + 1
            self.line += 1
            if raw.strip() == '##':
                break
            if not raw.startswith('#'):
                raise QAPIError((self.fname, self.line - 1),
                                "doc comment line must start with '#'")
            lines.append(raw[2:] if raw.startswith('# ') else raw[1:])
        if self.pending_doc is not None:
            raise QAPIError((self.fname, start),
                            'doc comment not followed by a definition')
        self.pending_doc = parse_doc((self.fname, start), lines)

    def next(self):
        while True:
            if self.pos >= len(self.text):
                self.tok = None
                return
            c = self.text[self.pos]
            if c == '\n':
                self.line += 1
                self.pos += 1
            elif c in ' \t\r':
                self.pos += 1
            elif c == '#':
                end = self.text.find('\n', self.pos)
                end = len(self.text) if end < 0 else end
                at_bol = self.pos == 0 or self.text[self.pos - 1] == '\n'
                if at_bol and self.text[self.pos:end].strip() == '##':
                    self.pos = end + 1
                    self.line += 1
                    self.read_doc()
                else:
                    self.pos = end
            else:
                break
        self.tok_line = self.line
        if c in '{}[]:,':
            self.tok = c
            self.pos += 1
        elif c == "'":
            end = self.text.find("'", self.pos + 1)
            nl = self.text.find('\n', self.pos + 1)
            if end < 0 or (0 <= nl < end):
                raise QAPIError(self.info(), 'unterminated string')
            self.tok = 'STR'
            self.val = self.text[self.pos + 1:end]
            if '\\' in self.val:
                raise QAPIError(self.info(), 'backslash not supported')
            self.pos = end + 1
        elif self.text.startswith('true', self.pos):
            self.tok, self.val = 'BOOL', True
            self.pos += 4
        elif self.text.startswith('false', self.pos):
            self.tok, self.val = 'BOOL', False
            self.pos += 5
        else:
            raise QAPIError(self.info(), "stray '%s'" % c)

    def expect(self, tok):
        if self.tok != tok:
            raise QAPIError(self.info(), "expected '%s'" % tok)
        self.next()

    def value(self):
        if self.tok == '{':
            self.next()
            obj = {}
            if self.tok == '}':
                self.next()
                return obj
            while True:
                if self.tok != 'STR':
                    raise QAPIError(self.info(), 'expected string key')
                key = self.val
                if key in obj:
                    raise QAPIError(self.info(), "duplicate key '%s'" % key)
                self.next()
                self.expect(':')
                obj[key] = self.value()
                if self.tok == '}':
                    self.next()
                    return obj
                self.expect(',')
        if self.tok == '[':
            self.next()
            arr = []
            if self.tok == ']':
                self.next()
                return arr
            while True:
                arr.append(self.value())
                if self.tok == ']':
                    self.next()
                    return arr
                self.expect(',')
        if self.tok in ('STR', 'BOOL'):
            val = self.val
            self.next()
            return val
        raise QAPIError(self.info(), 'expected value')


def parse_file(fname, seen=None):
    """Return [(expr, doc, info)] for fname and the files it includes."""
    if seen is None:
        seen = set()
    fname = os.path.normpath(fname)
    if fname in seen:
        return []
    seen.add(fname)
    with open(fname, encoding='utf-8') as f:
        lex = Lexer(fname, f.read())
    exprs = []
    lex.next()
    while lex.tok is not None:
        info = lex.info()
        doc = lex.pending_doc
        lex.pending_doc = None
        expr = lex.value()
        if not isinstance(expr, dict):
            raise QAPIError(info, 'top-level value must be an object')
        if 'include' in expr:
            if doc is not None:
                raise QAPIError(info, 'include must not have a doc comment')
            path = os.path.join(os.path.dirname(fname), expr['include'])
            exprs.extend(parse_file(path, seen))
        elif 'pragma' in expr:
            pass
        else:
            exprs.append((expr, doc, info))
    if lex.pending_doc is not None:
        raise QAPIError(lex.pending_doc.info,
                        'doc comment not followed by a definition')
    return exprs
