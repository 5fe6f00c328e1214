"""`thinkfast bench mohawk`: peak memory and tokens/s of MOHAWK stages 1-2 at the 1B/3B shapes (CUDA GPU)."""

from __future__ import annotations

import argparse
import sys

from thinkfast.commands.bench_group import get_bench_subparsers, parse_ints, parse_shapes
from thinkfast.errors import ThinkfastError


def register(subparsers) -> None:
    bench = get_bench_subparsers(subparsers)
    p = bench.add_parser(
        "mohawk",
        help="MOHAWK stages 1-2 at the Llama-3.2-1B/3B shapes: peak GPU memory and tokens/s per step",
        description="Random weights, every layer trained, the shipped 8 x 2048 micro-batch. "
                    "Writes DIR/mohawk.json and DIR/mohawk.md.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--shapes", default="1b,3b", help="comma list of: 1b, 3b (tiny: smoke test)")
    p.add_argument("--stages", default="1,2", help="comma list of MOHAWK stages (1, 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--batch", type=int, default=8, help="rows per step (the shipped micro_batch_size)")
    p.add_argument("--length", type=int, default=2048, help="tokens per row (the shipped seq_len)")
    p.add_argument("--chunks", default="32", help="stage-1 matrix_chunk values to measure (0: a layer in one graph)")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import torch

    from thinkfast.benchmarks.mohawk import SHAPES, run

    shapes = parse_shapes(args.shapes, SHAPES)
    stages = parse_ints(args.stages)
    if not stages or any(s not in (1, 2) for s in stages):
        raise ThinkfastError(f"--stages takes 1 and/or 2, got {args.stages!r}")
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise ThinkfastError("the MOHAWK benchmark measures GPU memory: it needs a CUDA GPU")
    rows = run(args.out, shapes=shapes, stages=stages, steps=args.steps, batch=args.batch, length=args.length,
               chunks=parse_ints(args.chunks), command="thinkfast " + " ".join(sys.argv[1:]))
    print(open(f"{args.out}/mohawk.md").read())
    return 0 if all(r.get("ok") for r in rows) else 1
