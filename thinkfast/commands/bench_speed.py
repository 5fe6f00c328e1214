"""`thinkfast bench speed`: end-to-end decode throughput vs roofline and the HF peer (needs a GPU)."""

from __future__ import annotations

import logging

from thinkfast.commands.bench_group import get_bench_subparsers


def register(subparsers) -> None:
    p = get_bench_subparsers(subparsers).add_parser(
        "speed", help="decode throughput of teachers, hybrids and pure students at real shapes (GPU)")
    p.add_argument("--out", required=True, help="directory for speed.json, speed.png and speed.md")
    p.add_argument("--quick", action="store_true", help="fewer models and points (a few minutes)")
    p.add_argument("--models", nargs="+", default=None,
                   help="subset of: llama-1b hybrid-1b pure-1b llama-3b hybrid-3b pure-3b")
    p.add_argument("--no-peer", action="store_true", help="skip the HF transformers generate peer")
    p.add_argument("--peer-timeout", type=int, default=180, help="seconds allowed per peer run")
    p.set_defaults(func=run)


def run(args) -> int:
    from thinkfast.benchmarks.shapes import MODELS
    from thinkfast.benchmarks.speed import run_speed
    from thinkfast.errors import ThinkfastError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    bad = [m for m in args.models or [] if m not in MODELS]
    if bad:
        raise ThinkfastError(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    results = run_speed(args.out, quick=args.quick, models=args.models, peer=not args.no_peer,
                        peer_timeout=args.peer_timeout)
    print(f"wrote {args.out}/speed.json, speed.png, speed.md in {results['elapsed_s']:.0f}s")
    for key, value in results["headline"].items():
        print(f"  {key}: {value}")
    return 0
