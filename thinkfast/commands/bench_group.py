"""The `thinkfast bench` command group, shared by every module that adds a benchmark.

    def register(subparsers):
        bench = get_bench_subparsers(subparsers)
        p = bench.add_parser("kernels", help=...)

The first caller creates `bench`; later callers get the same sub-command table, so
`thinkfast bench kernels` and `thinkfast bench speed` can live in separate modules.
"""

from __future__ import annotations

import argparse

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
