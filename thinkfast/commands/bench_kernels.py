"""`thinkfast bench kernels`: time the Triton kernels at the papers' 1B/3B shapes (needs a CUDA GPU)."""

from __future__ import annotations

import argparse

from thinkfast.commands.bench_group import get_bench_subparsers, parse_ints, parse_shapes
from thinkfast.errors import ThinkfastError


def _configs(text: str) -> list[tuple[int, int, int | None]]:
    out = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            parts = [int(v) for v in item.lower().split("x")]
            if len(parts) not in (2, 3):
                raise ValueError(item)
            out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
        except ValueError as err:
            raise ThinkfastError(f"--scan-configs items look like 16x4 or 16x4x128 (sub-tile x warps [x chunk "
                                 f"length]), got {item!r}") from err
    return out


def register(subparsers) -> None:
    bench = get_bench_subparsers(subparsers)
    p = bench.add_parser(
        "kernels",
        help="time the scan / decode-step / conv / SSD kernels and report bandwidth vs device copy",
        description="Writes DIR/kernels.json and DIR/kernels.md.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--shapes", default="1b,3b", help="comma list of: 1b, 3b (tiny: smoke test)")
    p.add_argument("--batches", default="1,8,32,64,128,256,512", help="decode-step batch sizes")
    p.add_argument("--lengths", default="512,1024,2048,4096,8192", help="sequence lengths (scan, conv, ssd)")
    p.add_argument("--scan-batch", type=int, default=4, help="batch for the sequence kernels")
    p.add_argument("--no-ssd", action="store_true", help="skip the fla SSD timings")
    p.add_argument("--no-compare", action="store_true", help="skip scan vs in/out_proj matmul comparison")
    p.add_argument("--scan-configs", default="8x4x64,16x4x64,16x4x256,16x8x128,32x8x128",
                   help="extra scan configs timed in the 3B comparison: sub-tile x num_warps [x chunk length "
                        "(time steps per program)]; '' for none")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args) -> int:
    import torch

    from thinkfast.benchmarks.kernels import SHAPES, run

    shapes = parse_shapes(args.shapes, SHAPES)
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise ThinkfastError("kernel benchmarks need a CUDA GPU")
    result = run(args.out, shapes=shapes, batches=parse_ints(args.batches), lengths=parse_ints(args.lengths),
                 scan_batch=args.scan_batch, with_ssd=not args.no_ssd, compare=not args.no_compare,
                 scan_configs=_configs(args.scan_configs))
    print(open(f"{args.out}/kernels.md").read())
    return 0 if result else 1
