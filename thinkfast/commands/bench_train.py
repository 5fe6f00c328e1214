"""`thinkfast bench train`: tokens/s, MFU and peak memory of each training recipe's step (GPU; `--shapes tiny` on a CPU)."""

from __future__ import annotations

import logging

from thinkfast.commands.bench_group import get_bench_subparsers


def register(subparsers) -> None:
    p = get_bench_subparsers(subparsers).add_parser(
        "train", help="training step throughput (tokens/s, MFU, peak memory) of every recipe at real shapes",
        description="Writes DIR/bench_train.json and DIR/bench_train.md.  Random weights and tokens; the step is "
                    "the trainer's train_step.  See docs/training.md, 'Training throughput'.")
    p.add_argument("--out", required=True, help="directory for bench_train.json and bench_train.md")
    p.add_argument("--quick", action="store_true",
                   help="1 warm-up + 2 timed steps per recipe and a 150 s budget (recipes not started by then are "
                        "recorded as skipped)")
    p.add_argument("--shapes", default="qwen-0.5b,llama-1b,llama-3b",
                   help="comma list of: qwen-0.5b (0.5b), llama-1b (1b), llama-3b (3b), tiny (CPU smoke test)")
    p.add_argument("--recipes", default="sft,distill,mohawk1,mohawk2,mohawk3", help="comma list of recipes")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (compilation)")
    p.add_argument("--steps", type=int, default=None, help="timed steps")
    p.add_argument("--rows", type=int, default=None, help="rows per step (default 8)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per row (default 2048)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; recipes not started by then are skipped")
    p.add_argument("--profile", action="store_true",
                   help="after each recipe's timed steps, run torch.profiler over 2 more and add the top kernels and "
                        "the time by category (matmul, attention, scan/ssd, loss, optimizer, ...) to each record")
    p.add_argument("--no-scan", action="store_true", help="skip the selective-scan vs projections record")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training-config override for every step, e.g. compile=true, loss.matmul_dtype=fp32 "
                        "(repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from thinkfast.benchmarks.train import resolve_recipes, resolve_shapes, run_train_bench
    from thinkfast.errors import ThinkfastError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shapes = resolve_shapes([s.strip() for s in args.shapes.split(",") if s.strip()])
    recipes = resolve_recipes([r.strip() for r in args.recipes.split(",") if r.strip()])
    if not torch.cuda.is_available() and any(s != "tiny" for s in shapes):
        raise ThinkfastError("the training benchmark needs a CUDA GPU at real shapes; use --shapes tiny on a CPU")
    results = run_train_bench(args.out, shapes, recipes, quick=args.quick, warmup=args.warmup, steps=args.steps,
                              rows=args.rows, seq_len=args.seq_len, time_budget_s=args.time_budget,
                              scan=not args.no_scan, overrides=args.overrides,
                              profile=args.profile)
    print(open(f"{args.out}/bench_train.md").read())
    print(f"wrote {args.out}/bench_train.json and bench_train.md in {results['elapsed_s']:.0f}s")
    failed = [f"{r['shape']} {r.get('recipe', r.get('kernel'))}" for r in results["records"] if r.get("error") and not r.get("oom")]
    if failed:
        print(f"failed (see the records' error fields): {', '.join(failed)}")
    return 1 if failed else 0
