"""`thinkfast bench grading`: answer-grading throughput (pairs/s) on the local public math sets (CPU)."""

from __future__ import annotations

import json
import os

from thinkfast.commands.bench_group import get_bench_subparsers


def register(subparsers) -> None:
    p = get_bench_subparsers(subparsers).add_parser(
        "grading", help="pairs/s of the answer grader (fast path + worker pool) on MATH-500 and GSM8K answers")
    p.add_argument("--data", default=os.environ.get("THINKFAST_DATA"),
                   help="folder with math500_test.jsonl and gsm8k_test.jsonl (default $THINKFAST_DATA)")
    p.add_argument("--workers", type=int, default=2, help="grader worker processes (default 2, as in eval)")
    p.set_defaults(func=run)


def run(args) -> int:
    from thinkfast.benchmarks.grading import run_grading_bench
    from thinkfast.errors import ThinkfastError

    if not args.data:
        raise ThinkfastError("pass --data DIR or set THINKFAST_DATA")
    print(json.dumps(run_grading_bench(args.data, workers=args.workers), indent=1))
    return 0
