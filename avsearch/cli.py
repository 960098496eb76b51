"""The ``avsearch`` command line (DESIGN.md "Command line").

Exit codes: 0 success, 2 bad input (a one-line message, no traceback), 1 anything else.
``AVSEARCH_DEBUG=1`` shows the traceback of a bad-input error too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from avsearch.errors import AvsearchInputError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one ``--help`` away)."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_space_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--space", required=required, metavar="NAME", help="a registered search space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a space option, e.g. --set d=128 --set conv_kernels=3,4,5 (repeatable)")


def _space_from_args(name: str, sets: list[str]):
    from avsearch.spaces import get_space, parse_sets
    return get_space(name, **parse_sets(sets))


# ---------------------------------------------------------------- commands
def cmd_spaces(args: argparse.Namespace) -> int:
    from avsearch.spaces import list_spaces
    spaces = list_spaces()
    width = max(map(len, spaces), default=0)
    for name, summary in spaces.items():
        print(f"{name:<{width}}  {summary}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from avsearch.spaces import space_options
    space = _space_from_args(args.name, args.sets)
    info = space.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"space {space.name}: {info['combinations']:,} architectures "
          f"({len(info['cells'])} cells)")
    print("options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in info["config"].items()))
    name_w = max(len(c["name"]) for c in info["cells"])
    print(f"\n{'cell':<{name_w}}  kind  width  candidates")
    for c in info["cells"]:
        print(f"{c['name']:<{name_w}}  {c['kind']:<4}  {c['width']:>5}  {', '.join(c['candidates'])}")
    for preset, choices in info["presets"].items():
        print(f"\npreset {preset}: " + ", ".join(f"{k}={v}" for k, v in choices.items()))
    print("\nset options with --set KEY=VALUE:")
    for key, opt in space_options(args.name).items():
        print(f"  {key:<13} {opt.help}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from avsearch.arch import Architecture
    from avsearch.draw import render
    if (args.arch is None) == (args.space is None):
        raise AvsearchInputError("draw takes either an .arch file or --space NAME (not both)")
    if args.arch is not None:
        if args.sets:
            raise AvsearchInputError("--set applies to --space; an .arch file carries its options")
        arch = Architecture.load(args.arch)
        dot = arch.build_space().to_dot(arch.choices, arch.probabilities)
        output = Path(args.output) if args.output else Path(args.arch).with_suffix(".svg")
    else:
        space = _space_from_args(args.space, args.sets)
        dot = space.to_dot()
        output = Path(args.output) if args.output else Path(f"{space.name}.svg")
    render(dot, output)
    print(f"wrote {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from avsearch import __version__
    parser = _Parser(prog="avsearch", description="Neural architecture search for video hashing.")
    parser.add_argument("--version", action="version", version=f"avsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("space", help="describe a search space: cells, candidates, presets, count")
    p.add_argument("name", help="space name (see 'avsearch spaces')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a space option (repeatable)")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("draw", help="draw a space or an architecture (SVG/PNG/PDF/DOT)",
                       description="Draw every cell of a space with its candidates (--space), or "
                                   "the ops an .arch file chose, with softmax(α) as edge weights "
                                   "when it has them. The format follows -o's extension.")
    p.add_argument("arch", nargs="?", help="an .arch file")
    _add_space_options(p, required=False)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file: .svg (default), .png, .pdf or .dot (needs no Graphviz)")
    p.set_defaults(func=cmd_draw)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AvsearchInputError as err:
        if os.environ.get("AVSEARCH_DEBUG"):
            raise
        print(f"avsearch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
