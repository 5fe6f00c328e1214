"""The `thinkfast bench ...` command group, shared by every benchmark command module."""

from __future__ import annotations


def get_bench_subparsers(subparsers):
    """Create the `bench` parser once (cached on `subparsers`) and return its sub-parsers."""
    cached = getattr(subparsers, "_thinkfast_bench_subparsers", None)
    if cached is None:
        bench = subparsers.add_parser("bench", help="speed benchmarks")
        cached = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
        bench.set_defaults(func=lambda args: bench.print_help())
        subparsers._thinkfast_bench_subparsers = cached
    return cached
