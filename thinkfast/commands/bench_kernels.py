"""`thinkfast bench kernels`: time the Triton kernels at the papers' 1B/3B shapes (needs a CUDA GPU)."""

from __future__ import annotations

import argparse

from thinkfast.commands.bench_group import get_bench_subparsers, parse_ints, parse_shapes
from thinkfast.errors import ThinkfastError


def _configs(text: str) -> list[tuple[str | None, int, int, int | None]]:
    """'seq:4x1x256,tile:8x2' -> [(solver or None, sub-tile, warps, chunk length or None)]."""
    from thinkfast.ops.triton.selective_scan import SEQ_SUB_TILE

    out = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        solver, _, dims = item.rpartition(":")
        try:
            if solver not in ("", "seq", "tile"):
                raise ValueError(item)
            parts = [int(v) for v in dims.lower().split("x")]
            if len(parts) not in (2, 3):
                raise ValueError(item)
            out.append((solver or None, parts[0], parts[1], parts[2] if len(parts) == 3 else None))
        except ValueError as err:
            raise ThinkfastError(f"--scan-configs items look like 16x4, 16x4x128 or seq:4x1x256 ([solver:]sub-tile "
                                 f"x warps [x chunk length]), got {item!r}") from err
        if solver == "seq" and parts[0] != SEQ_SUB_TILE:
            raise ThinkfastError(f"--scan-configs: the seq solver's sub-tile is always {SEQ_SUB_TILE}, got {item!r}; "
                                 f"write seq:{SEQ_SUB_TILE}x{parts[1]}" + (f"x{parts[2]}" if len(parts) == 3 else ""))
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
    p.add_argument("--scan-configs", default="seq:4x1x128,seq:4x2x256,seq:4x1x512,tile:8x2x64",
                   help="extra scan configs timed in the 3B comparison: [seq: or tile:]sub-tile x num_warps "
                        "[x chunk length (time steps per program)]; '' for none")
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
