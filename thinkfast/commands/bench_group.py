"""The `thinkfast bench` command group, shared by every module that adds a benchmark.

    def register(subparsers):
        bench = get_bench_subparsers(subparsers)
        p = bench.add_parser("kernels", help=...)

The first caller creates `bench`; later callers get the same sub-command table, so
`thinkfast bench kernels` and `thinkfast bench speed` can live in separate modules.
"""

from __future__ import annotations

import argparse

from thinkfast.errors import ThinkfastError


def parse_ints(text: str) -> list[int]:
    """`--batches 256,512` -> [256, 512], or one line naming the bad value."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ThinkfastError(f"expected comma-separated integers, got {text!r}") from err


def parse_shapes(text: str, known) -> list[str]:
    """`--shapes 1b,3b` -> ["1b", "3b"], each checked against the benchmark's `known` shapes."""
    shapes = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in shapes if s not in known]
    if bad:
        raise ThinkfastError(f"unknown shape(s) {bad}; choose from {sorted(known)}")
    return shapes

_ATTR = "_thinkfast_bench_subparsers"


def get_bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    parser = subparsers.choices.get("bench")
    if parser is None:
        parser = subparsers.add_parser("bench", help="benchmarks: kernels, generation speed, grading",
                                       description="Benchmarks.  Pick one: thinkfast bench KIND --help")
        sub = parser.add_subparsers(dest="bench_command", metavar="KIND")
        setattr(parser, _ATTR, sub)

        def _help(args, _parser=parser):
            _parser.print_help()
            return 0

        parser.set_defaults(func=_help)
    return getattr(parser, _ATTR)
