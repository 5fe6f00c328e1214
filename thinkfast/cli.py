"""The `thinkfast` command line.

Each pipeline stage owns a small `cli.py`-style module exposing
`register(subparsers)`, which adds its sub-command(s) and sets `func` on the
parser.  This file only lists those modules, so adding a command never means
editing another stage's code.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from thinkfast.errors import ThinkfastError

# Modules whose `register(subparsers)` adds sub-commands, in help order.
COMMAND_MODULES: list[str] = [
    "thinkfast.commands.run",
    "thinkfast.commands.convert",
    "thinkfast.commands.summary",
    "thinkfast.commands.evaluate",
    "thinkfast.commands.bench_kernels",
    "thinkfast.commands.generate",
    "thinkfast.commands.bench_speed",
    "thinkfast.commands.bench_mohawk",
    "thinkfast.commands.bench_grading",
    "thinkfast.commands.bench_train",
    "thinkfast.commands.train",
    "thinkfast.commands.grpo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinkfast",
        description="Distil a Transformer into a fast hybrid / Mamba reasoner and scale test-time compute.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


# "-1,5" or "-3": a value, not an option (argparse only knows plain negative numbers)
_NEGATIVE_VALUE = re.compile(r"^-\d[\d,\s-]*$")


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--attention-layers -1,5` -> `--attention-layers=-1,5`, so argparse does not take the value for an option."""
    out: list[str] = []
    for token in argv:
        if out and _NEGATIVE_VALUE.match(token) and out[-1].startswith("--") and "=" not in out[-1] and out[-1] != "--":
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if extra and isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value overrides given after an option (`run CFG --students a x=1`)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except ThinkfastError as err:
        print(f"thinkfast {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        # a path given on the command line (or in a config) that cannot be used: bad input, not a bug
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"thinkfast {args.command}: error: {err.strerror or _one_line(err)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return int(result or 0)
