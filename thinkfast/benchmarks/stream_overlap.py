"""Can a decode step overlap its attention (bandwidth-bound) with its GEMMs (flop-bound) on two streams?

    python -m thinkfast.benchmarks.stream_overlap --out DIR [--shape 3b] [--points 256x2300 128x2300 256x600]
        [--mlp-layers 5] [--attention-programs N] [--gemm-sm-carveout M]

The roofline bound of a decode step (`roofline.py`) lets the weights' flops and the KV reads overlap; the
engine runs a step's kernels one after another, so it can reach only the serial bound.  Splitting the batch in
two and running one half's attention beside the other half's MLPs (two CUDA streams) would close the gap if
the GPU ran the two at once.  This measures it at a shape's real sizes: per point (half batch x context) the
decode attention of one attention layer alone (A), `mlp-layers` MLP layers of the same rows alone (G), and both
issued on two streams (C), each as a captured CUDA graph, `triton.testing.do_bench` median.  C close to A + G
means the kernels, each of which fills the GPU, ran one after the other anyway.  Writes overlap.json / .md.

Partitioning the GPU between the two: `--attention-programs N` runs the attention on N persistent programs
(`decode_attention_triton(max_programs=N)`), so it holds only about N multiprocessors; `--gemm-sm-carveout M`
asks cuBLAS to leave M multiprocessors free (torch's experimental SM carveout, set while the MLP graphs are
captured).  G and A are timed with the same settings, so each row says what the restriction cost alone too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

from thinkfast.benchmarks.shapes import TEACHERS
from thinkfast.errors import ThinkfastError


def _graphed(fn):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


class _carveout:
    """Context: cuBLAS leaves `sms` multiprocessors free (torch's experimental SM carveout), restored on exit."""

    def __init__(self, sms: int | None):
        self.sms = sms

    def __enter__(self):
        if self.sms:
            self.prev = torch._C._get_sm_carveout_experimental()
            torch._C._set_sm_carveout_experimental(self.sms)

    def __exit__(self, *exc):
        if self.sms:
            torch._C._set_sm_carveout_experimental(self.prev)


def measure_point(shape: dict, half: int, context: int, mlp_layers: int, attention_programs: int | None = None,
                  gemm_sm_carveout: int | None = None) -> dict:
    from triton.testing import do_bench

    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    dev, bf16 = "cuda", torch.bfloat16
    heads, kv_heads, hd = shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]
    d, ff = shape["hidden_size"], shape["intermediate_size"]
    k_cache = torch.randn(half, kv_heads, context + 64, hd, device=dev, dtype=bf16)  # (slots, Hkv, T, hd)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(half, heads, hd, device=dev, dtype=bf16)  # (b, H, hd)
    slots = torch.arange(half, device=dev)
    lengths = torch.full((half,), context, device=dev, dtype=torch.int32)
    x = torch.randn(half, d, device=dev, dtype=bf16)  # (b, d)
    w_gate_up = torch.randn(2 * ff, d, device=dev, dtype=bf16) * d**-0.5
    w_down = torch.randn(d, ff, device=dev, dtype=bf16) * ff**-0.5

    def attention():
        decode_attention_triton(q, k_cache, v_cache, slots, lengths, max_programs=attention_programs)

    def mlps():
        h = x
        for _ in range(mlp_layers):
            gate, up = (h @ w_gate_up.T).chunk(2, dim=-1)  # (b, ff) each
            h = (torch.nn.functional.silu(gate) * up) @ w_down.T  # (b, d)

    side_a, side_b = torch.cuda.Stream(), torch.cuda.Stream()

    def both():
        main = torch.cuda.current_stream()
        side_a.wait_stream(main)
        side_b.wait_stream(main)
        with torch.cuda.stream(side_a):
            attention()
        with torch.cuda.stream(side_b):
            mlps()
        main.wait_stream(side_a)
        main.wait_stream(side_b)

    with _carveout(gemm_sm_carveout):  # cuBLAS picks its SM count when the graph is captured
        replays = [_graphed(fn) for fn in (attention, mlps, both)]
    a_ms, g_ms, c_ms = (do_bench(replay, warmup=50, rep=300) for replay in replays)
    kv_bytes = 2 * half * context * kv_heads * hd * 2
    return {"half_batch": half, "context": context, "mlp_layers": mlp_layers, "attention_programs": attention_programs,
            "gemm_sm_carveout": gemm_sm_carveout, "attention_ms": a_ms, "mlps_ms": g_ms,
            "both_ms": c_ms, "attention_tb_s": kv_bytes / (a_ms * 1e-3) / 1e12, "of_sum": c_ms / (a_ms + g_ms),
            "of_max": c_ms / max(a_ms, g_ms)}


def markdown(result: dict) -> str:
    lines = [f"# Two-stream overlap of decode attention and MLP GEMMs — {result['device']}, {result['date']}", "",
             f"Command: `{result['command']}`; shape {result['shape']}. Each row: one attention layer's decode "
             f"attention for `half` rows at `context` (A), {result['mlp_layers']} "
             "MLP layers for the same rows (G), and both on two streams (C), CUDA graphs, do_bench median. "
             "Attention programs: the persistent-grid cap (— = one program per item); carveout: multiprocessors "
             "cuBLAS was asked to leave free.", "",
             "| half batch | context | attention programs | GEMM carveout | A ms | KV TB/s | G ms | C ms | C / (A + G) "
             "| C / max |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in result["points"]:
        progs, carve = p.get("attention_programs"), p.get("gemm_sm_carveout")
        lines.append(f"| {p['half_batch']} | {p['context']} | {progs or '—'} | {carve or '—'} | "
                     f"{p['attention_ms']:.3f} | {p['attention_tb_s']:.2f} | "
                     f"{p['mlps_ms']:.3f} | {p['both_ms']:.3f} | {p['of_sum']:.2f} | {p['of_max']:.2f} |")
    return "\n".join(lines) + "\n"


def _point(text: str) -> tuple[int, int]:
    try:
        half, context = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"points look like 256x2300 (half batch x context), got {text!r}") from err
    return half, context


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="3b", choices=sorted(TEACHERS))
    ap.add_argument("--points", nargs="+", type=_point, default=[(256, 2300), (128, 2300), (256, 600)])
    ap.add_argument("--mlp-layers", type=int, default=5)
    ap.add_argument("--attention-programs", type=int, nargs="+", default=[None],
                    help="persistent-grid caps for the attention to try (each point is run at each)")
    ap.add_argument("--gemm-sm-carveout", type=int, nargs="+", default=[None],
                    help="multiprocessors cuBLAS leaves free, to try (each point is run at each)")
    a = ap.parse_args(argv)
    for value in a.attention_programs + a.gemm_sm_carveout:
        if value is not None and value < 1:
            ap.error(f"--attention-programs / --gemm-sm-carveout take counts >= 1, got {value}")
    if not torch.cuda.is_available():
        raise ThinkfastError("stream_overlap times CUDA streams and graphs: run it on a machine with a GPU")
    result = {"command": "python -m thinkfast.benchmarks.stream_overlap " + " ".join(argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": a.shape, "mlp_layers": a.mlp_layers,
              "points": [measure_point(TEACHERS[a.shape], half, ctx, a.mlp_layers, progs, carve)
                         for half, ctx in a.points for progs in a.attention_programs for carve in a.gemm_sm_carveout]}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overlap.json").write_text(json.dumps(result, indent=1))
    (out / "overlap.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
