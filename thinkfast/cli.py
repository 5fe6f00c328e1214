"""The `thinkfast` command line.

Each pipeline stage owns a small `cli.py`-style module exposing
`register(subparsers)`, which adds its sub-command(s) and sets `func` on the
parser.  This file only lists those modules, so adding a command never means
editing another stage's code.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except ThinkfastError as err:
        print(f"thinkfast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return int(result or 0)
