"""Command line of :mod:`cda_lite.bench` (see its docstring): one argparse subcommand per entry of
``SUBCOMMANDS``; prints one JSON object with ``--json``. User errors (a bad file or value) are one line on
stderr and exit status 2 (:mod:`cda_lite._cli`; ``--debug`` shows the traceback)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from cda_lite._cli import Parser, entry_point
from cda_lite.bench import SUBCOMMANDS


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The argument parser; with ``only`` (a subcommand name) only that subcommand's module is
    imported, so one broken or heavy subcommand cannot slow down or break the others."""
    parser = Parser(prog="python -m cda_lite.bench",
                                     description="Benchmark commands of cda_lite (each prints one JSON object with --json).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    modules = {}
    for name, path in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(path)
        doc = (module.__doc__ or name).strip()
        p = sub.add_parser(name, help=doc.split("\n")[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")
        modules[name] = module
    return parser, modules


@entry_point("python -m cda_lite.bench")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, modules = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    module = modules[args.command]
    result = _jsonable(module.run(args))
    if args.json:
        print(json.dumps(result))
    elif hasattr(module, "format"):
        print(module.format(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
