"""Sweep of the decode-attention kernel's tile and launch settings at the engine's decode shapes.

    python -m thinkfast.benchmarks.tune_decode_attention --out DIR

Times (do_bench median) `decode_attention_triton` over (BLOCK_N, num_warps, num_stages) and, with
`--splits`, the split count (default: the kernel's rule, `choose_num_splits`) with every sequence at one
context length, for the GQA shapes of Qwen2.5-0.5B / 1.5B and Llama-3.2-1B / 3B.
Bandwidth counts the traffic floor: each sequence's K and V up to its length, once, plus q and the
output; `of_copy` divides it by the measured copy bandwidth.  Writes tune_decode_attention.json and
a Markdown table of the best setting per point next to the default's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from triton.testing import do_bench

from thinkfast.benchmarks.roofline import measure_copy_bandwidth

# query heads, kv heads, head dim (the shapes of benchmarks/shapes.py)
SHAPES = {"qwen-0.5b": (14, 2, 64), "qwen-1.5b": (12, 2, 128), "llama-1b": (32, 8, 64), "llama-3b": (24, 8, 128)}
DEFAULT = dict(block_n=None, num_warps=None, num_stages=None, num_splits=None)  # the kernel's own choice


def main() -> None:
    from thinkfast.ops.triton.decode_attention import choose_num_splits, decode_attention_triton, default_launch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--contexts", nargs="+", type=int, default=[328, 2248])
    ap.add_argument("--block-n", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--warps", nargs="+", type=int, default=[2, 4, 8])
    ap.add_argument("--stages", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--splits", nargs="+", type=int, default=[0],
                    help="split counts to sweep; 0 = the kernel's rule (choose_num_splits)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    bw = measure_copy_bandwidth(dev)
    records = []
    for shape in a.shapes:
        H, n_kv, hd = SHAPES[shape]
        for b, ctx in itertools.product(a.batches, a.contexts):
            cap = ctx + 64
            k = torch.randn(b + 1, n_kv, cap, hd, device=dev, dtype=torch.bfloat16)
            v = torch.randn_like(k)
            q = torch.randn(b, H, hd, device=dev, dtype=torch.bfloat16)
            slots = torch.arange(b, device=dev)
            pos = torch.full((b,), ctx - 1, device=dev, dtype=torch.long)
            nbytes = 2 * b * n_kv * ctx * hd * 2 + 2 * b * H * hd * 2

            def run(**cfg):
                return decode_attention_triton(q, k, v, slots, pos, length_offset=1, **cfg)

            ref = run(**DEFAULT)
            configs = [DEFAULT] + [dict(block_n=n, num_warps=w, num_stages=s, num_splits=sp or None)
                                   for n, w, s, sp in itertools.product(a.block_n, a.warps, a.stages, a.splits)]
            for cfg in configs:
                try:
                    got = run(**cfg)
                    err = float((got.float() - ref.float()).abs().max())
                    ms = float(do_bench(lambda: run(**cfg), warmup=10, rep=50, return_mode="median"))
                except Exception as e:  # a tile that does not fit shared memory: recorded, not fatal
                    records.append(dict(shape=shape, batch=b, context=ctx, **cfg, error=str(e).splitlines()[0][:200]))
                    continue
                block_n, warps, stages = (cfg[key] or default for key, default in
                                          zip(("block_n", "num_warps", "num_stages"), default_launch(hd)))
                splits = cfg["num_splits"] or choose_num_splits(b, n_kv, cap, dev, block_n)
                resolved = dict(block_n=block_n, num_warps=warps, num_stages=stages, num_splits=splits)
                records.append(dict(shape=shape, batch=b, context=ctx, **resolved, ms=ms,
                                    max_abs_diff=err, of_copy=nbytes / (ms * 1e-3) / bw, default=cfg is DEFAULT))
            del k, v
            torch.cuda.empty_cache()
            point = [r for r in records if r["shape"] == shape and r["batch"] == b and r["context"] == ctx and "ms" in r]
            best = min(point, key=lambda r: r["ms"])
            print(f"{shape} b{b} ctx{ctx}: default {point[0]['ms'] * 1e3:.1f} us ({point[0]['of_copy']:.0%}), best "
                  f"{best['ms'] * 1e3:.1f} us ({best['of_copy']:.0%}) at n{best['block_n']} w{best['num_warps']} "
                  f"s{best['num_stages']} splits {best['num_splits']}", flush=True)
    (out / "tune_decode_attention.json").write_text(json.dumps({"copy_bandwidth": bw, "records": records}, indent=1))
    lines = ["| shape | batch | context | default us | of copy | splits | best us | of copy | block_n | warps | stages "
             "| splits |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, group in itertools.groupby([r for r in records if "ms" in r],
                                        key=lambda r: (r["shape"], r["batch"], r["context"])):
        group = list(group)
        d, best = group[0], min(group, key=lambda r: r["ms"])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {d['ms'] * 1e3:.1f} | {d['of_copy']:.0%} | {d['num_splits']} | "
                     f"{best['ms'] * 1e3:.1f} | {best['of_copy']:.0%} | {best['block_n']} | {best['num_warps']} | "
                     f"{best['num_stages']} | {best['num_splits']} |")
    (out / "tune_decode_attention.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
