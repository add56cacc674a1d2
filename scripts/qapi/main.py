#!/usr/bin/env python3
#
# blockd QAPI code generator.
#
# Usage: main.py -o OUTDIR SCHEMA.json
#
# Reads the schema (and everything it includes), checks it, including that
# every definition and member is documented, and writes qapi-types.[ch],
# qapi-visit.[ch], qapi-commands.[ch], qapi-events.[ch] and
# qapi-introspect.[ch] into OUTDIR.  Exits with status 1 and a
# "file:line: message" diagnostic on any schema error.
#

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gen_commands  # noqa: E402
import gen_events  # noqa: E402
import gen_introspect  # noqa: E402
import gen_types  # noqa: E402
import gen_visit  # noqa: E402
from qapi_parser import QAPIError  # noqa: E402
from schema import Schema  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description='blockd QAPI generator')
    ap.add_argument('-o', '--output-dir', default='.')
    ap.add_argument('schema')
    args = ap.parse_args()
    try:
        schema = Schema(args.schema)
    except QAPIError as err:
        print('%s: %s' % (sys.argv[0], err), file=sys.stderr)
        return 1
    os.makedirs(args.output_dir, exist_ok=True)
    for gen in (gen_types, gen_visit, gen_commands, gen_events,
                gen_introspect):
        gen.generate(schema, args.output_dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
