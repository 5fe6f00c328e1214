"""The decode step's GEMMs at the benchmark shapes: time per call of each route against its floors.

    python -m thinkfast.benchmarks.decode_gemm --out DIR [--models hybrid-3b qwen-0.5b ...]
                                               [--batches 256 512] [--routes cublas cublaslt splitk2 ...]

At decode batch sizes (M = 256 or 512 rows) a GEMM's output is a few hundred tiles at most, and a
narrow output (N = hidden size) is fewer tiles than the GPU has multiprocessors: cuBLAS then runs a
long K loop on a fraction of the GPU.  This benchmark says, for every distinct GEMM of a model's
decode step (the stacked q/k/v and gate/up the engine runs, the Mamba projections, the LM head), how
far each route is from max(flop floor, byte floor) and what the step would save with the best route.

Routes:
  cublas     `F.linear`, torch's default BLAS (what the engine runs)
  cublaslt   the same call with `torch.backends.cuda.preferred_blas_library("cublaslt")`
  splitk<S>  K cut into S slices, one batched GEMM writing S fp32 partials, summed (and the bias
             added) by one reduction; `splitk<S>-mm` times the batched GEMM alone, the floor for a
             design whose next kernel (the residual add + RMSNorm) would read the partials itself
  inductor   torch.compile(mode="max-autotune-no-cudagraphs"): Triton templates against ATen, best kept

Timing: one CUDA graph of R calls on R distinct weight copies (more bytes than L2 holds, so every
weight comes from HBM as in a real step, and the gaps between launches are a graph's), replayed;
ms per call = median replay / R.  On a CPU (tests) a plain median of 3 calls.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger("thinkfast.bench")

ROUTES = ("cublas", "cublaslt", "splitk2", "splitk2-mm", "splitk4", "splitk4-mm", "inductor")
# stacked at decode by the engine (models/attention.py, models/layers.py): one GEMM for each group
STACKED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


def decode_gemms(model_name: str) -> list[dict]:
    """Every distinct GEMM of one decode step of `model_name`: name, k (in), n (out), bias, calls per step.

    Read off the model built on the meta device, with q/k/v and gate/up merged the way the engine stacks
    them, plus the LM head (tied to the embedding: hidden -> vocab)."""
    from thinkfast.benchmarks.shapes import model_config
    from thinkfast.models import ThinkfastForCausalLM

    config = model_config(model_name)
    with torch.device("meta"):
        model = ThinkfastForCausalLM(config)
    per_layer: dict[tuple, dict] = {}
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or path.endswith("lm_head"):
            continue
        layer = path.split(".layers.")[1].split(".")[0] if ".layers." in path else path
        leaf = path.rsplit(".", 1)[-1]
        name = STACKED.get(leaf, leaf)
        key = (layer, name)
        entry = per_layer.setdefault(key, {"name": name, "k": mod.in_features, "n": 0, "bias": mod.bias is not None})
        entry["n"] += mod.out_features
    counts = collections.Counter((e["name"], e["k"], e["n"], e["bias"]) for e in per_layer.values())
    gemms = [{"name": n, "k": k, "n": out, "bias": b, "calls": c} for (n, k, out, b), c in counts.items()]
    gemms.append({"name": "lm_head", "k": config.hidden_size, "n": config.vocab_size, "bias": False, "calls": 1})
    return gemms


def _splitk_parts(x, w, s: int):
    """x (m, k), w (n, k) -> the K slices as batched operands: (s, m, k/s) and (s, k/s, n) views."""
    m, k = x.shape
    n = w.shape[0]
    xs = x.view(m, s, k // s).transpose(0, 1)  # (s, m, k/s)
    ws = w.view(n, s, k // s).permute(1, 2, 0)  # (s, k/s, n)
    return xs, ws


def splitk_mm(x, w, s: int) -> torch.Tensor:
    """The S fp32 partial products (s, m, n) of x @ w.T."""
    xs, ws = _splitk_parts(x, w, s)
    if x.is_cuda:
        return torch.bmm(xs, ws, out_dtype=torch.float32)
    return torch.bmm(xs.float(), ws.float())  # CPU: no bf16 -> fp32 bmm kernel


def splitk_linear(x, w, bias, s: int) -> torch.Tensor:
    """x @ w.T (+ bias) through S K-slices summed in fp32; same function as F.linear up to rounding."""
    y = splitk_mm(x, w, s).sum(0)  # (m, n) fp32
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def route_fn(route: str, k: int):
    """(fn(x, w, b) or None where the route does not apply to this K, a context manager factory)."""
    if route in ("cublas", "cublaslt"):
        return (lambda x, w, b: F.linear(x, w, b))
    if route.startswith("splitk"):
        s = int(route[len("splitk"):].split("-")[0])
        if k % (8 * s):
            return None
        if route.endswith("-mm"):
            return lambda x, w, b, s=s: splitk_mm(x, w, s)
        return lambda x, w, b, s=s: splitk_linear(x, w, b, s)
    if route == "inductor":
        # one compiled function per GEMM: dynamo keys its cache on the code object, and after 8 shapes of one
        # lambda it stops compiling and runs eager (what the 2026-12-02 run's last three 3B GEMMs measured)
        torch._dynamo.reset()
        return torch.compile(lambda x, w, b: F.linear(x, w, b), mode="max-autotune-no-cudagraphs", dynamic=False)
    raise ValueError(f"unknown route {route!r}; choose from {', '.join(ROUTES)}")


class _blas:
    """Context: torch's preferred BLAS library set to `lib` (restored on exit)."""

    def __init__(self, lib: str | None):
        self.lib = lib

    def __enter__(self):
        if self.lib:
            self.prev = torch.backends.cuda.preferred_blas_library()
            torch.backends.cuda.preferred_blas_library(self.lib)

    def __exit__(self, *exc):
        if self.lib:
            torch.backends.cuda.preferred_blas_library(self.prev)


def time_route(fn, x, weights, bias, blas: str | None, replays: int = 5) -> float:
    """ms per call of fn(x, w, bias), one call per weight copy, in one CUDA graph (CPU: median of 3)."""
    if x.device.type != "cuda":
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(x, weights[0], bias)
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[1]
    with _blas(blas):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for w in weights[:2]:  # warm-up: compile, autotune, cuBLAS workspace
                fn(x, w, bias)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for w in weights:
                fn(x, w, bias)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(weights))
    return sorted(times)[len(times) // 2]


def bench_gemm(gemm: dict, m: int, routes, device, dtype, peak_flops: float, bandwidth: float,
               min_bytes: int = 256 << 20) -> dict:
    k, n = gemm["k"], gemm["n"]
    wbytes = n * k * torch.tensor([], dtype=dtype).element_size()
    copies = 1 if device.type != "cuda" else min(512, max(2, -(-min_bytes // wbytes)))
    gen = torch.Generator(device=device).manual_seed(0)
    weights = [torch.randn(n, k, device=device, dtype=dtype, generator=gen) * k ** -0.5 for _ in range(copies)]
    bias = torch.randn(n, device=device, dtype=dtype, generator=gen) if gemm["bias"] else None
    x = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
    elem = weights[0].element_size()
    flop_ms = 2 * m * n * k / peak_flops * 1e3
    byte_ms = (n * k + m * k + m * n) * elem / bandwidth * 1e3
    row = {**gemm, "m": m, "flop_ms": flop_ms, "byte_ms": byte_ms, "floor_ms": max(flop_ms, byte_ms), "routes": {}}
    for route in routes:
        fn = route_fn(route, k)
        if fn is None:
            continue
        try:
            ms = time_route(fn, x, weights, bias, "cublaslt" if route == "cublaslt" else None)
        except Exception as e:  # a route that cannot run here is recorded, not fatal
            log.warning("%s m=%d %s: %s", gemm["name"], m, route, e)
            row["routes"][route] = {"error": str(e).splitlines()[0][:200]}
            continue
        row["routes"][route] = {"ms": ms, "of_floor": row["floor_ms"] / ms}
    del weights
    return row


def best_full_route(row: dict) -> tuple[str, float]:
    """The fastest route that computes the whole GEMM (not the `-mm` partial-only timings)."""
    done = {r: v["ms"] for r, v in row["routes"].items() if "ms" in v and not r.endswith("-mm")}
    route = min(done, key=done.get)
    return route, done[route]


def run(out_dir, models=("qwen-0.5b", "hybrid-qwen-0.5b", "qwen-1.5b", "hybrid-qwen-1.5b", "hybrid-3b"),
        batches=(256, 512), routes=ROUTES, device=None, dtype=torch.bfloat16) -> dict:
    from thinkfast.benchmarks import roofline

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        bandwidth, peak = roofline.measure_copy_bandwidth(device), roofline.measure_matmul_flops(device)
    else:
        bandwidth, peak = 50e9, 1e12  # placeholders for CPU smoke runs
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "copy_bytes_per_s": bandwidth, "matmul_flops": peak,
              "batches": list(batches), "routes": list(routes), "models": {}, "rows": []}
    seen: dict[tuple, dict] = {}
    for name in models:
        gemms = decode_gemms(name)
        result["models"][name] = gemms
        for g in gemms:
            for m in batches:
                key = (g["k"], g["n"], g["bias"], m)
                if key not in seen:
                    seen[key] = bench_gemm(g, m, routes, device, dtype, peak, bandwidth)
                    r = seen[key]
                    log.info("%s k=%d n=%d m=%d floor %.4f ms: %s", g["name"], g["k"], g["n"], m, r["floor_ms"],
                             ", ".join(f"{k} {v.get('ms', float('nan')):.4f}" for k, v in r["routes"].items()))
                    result["rows"].append(r)
                    _write(out_dir, result)  # a killed run keeps every row it timed
    result["step"] = step_summary(result, seen)
    _write(out_dir, result)
    plot(result, Path(out_dir) / "decode_gemm.png")
    (Path(out_dir) / "decode_gemm.md").write_text(markdown(result))
    return result


def plot(result: dict, path) -> None:
    """Per model and batch: the step's GEMM time with cuBLAS and with the best route per GEMM, beside its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["step"]
    labels = [f"{s['model']}\nM={s['m']}" for s in steps]
    x = range(len(steps))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(steps)), 4.0))
    width = 0.27
    for i, (key, name) in enumerate((("floor_ms", "floor: max(flops, bytes)"), ("cublas_ms", "cuBLAS (what runs)"),
                                     ("best_ms", "best route per GEMM"))):
        ax.bar([v + (i - 1) * width for v in x], [s[key] for s in steps], width, label=name)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("GEMM ms per decode step")
    ax.set_title(f"Decode-step GEMMs, {result['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(out_dir, result: dict) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "decode_gemm.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / "decode_gemm.json")


def step_summary(result: dict, seen: dict) -> list[dict]:
    """Per model and batch: the step's GEMM time with cuBLAS, with each GEMM's best route, and the floor."""
    rows = []
    for name, gemms in result["models"].items():
        for m in result["batches"]:
            tot = {"cublas": 0.0, "best": 0.0, "floor": 0.0}
            for g in gemms:
                r = seen[(g["k"], g["n"], g["bias"], m)]
                tot["cublas"] += g["calls"] * r["routes"].get("cublas", {}).get("ms", float("nan"))
                tot["best"] += g["calls"] * best_full_route(r)[1]
                tot["floor"] += g["calls"] * r["floor_ms"]
            rows.append({"model": name, "m": m, **{f"{k}_ms": v for k, v in tot.items()}})
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Decode-step GEMMs — {result['device']}, {result['date']}", "",
             f"torch {result['torch']}; copy bandwidth {result['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 matmul "
             f"{result['matmul_flops'] / 1e12:.0f} TFLOP/s. ms per call (fraction of max(flop, byte) floor).", "",
             "## Per model: the step's GEMMs", "", "| model | M | cuBLAS ms | best route per GEMM ms | floor ms |",
             "|---|---:|---:|---:|---:|"]
    for s in result["step"]:
        lines.append(f"| {s['model']} | {s['m']} | {s['cublas_ms']:.3f} | {s['best_ms']:.3f} | {s['floor_ms']:.3f} |")
    routes = result["routes"]
    lines += ["", "## Per GEMM", "", "| GEMM | K | N | M | floor | " + " | ".join(routes) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(routes)]
    for r in result["rows"]:
        cells = []
        for route in routes:
            v = r["routes"].get(route)
            cells.append("—" if v is None else ("error" if "ms" not in v else f"{v['ms']:.4f} ({v['of_floor']:.0%})"))
        lines.append(f"| {r['name']} | {r['k']} | {r['n']} | {r['m']} | {r['floor_ms']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=["qwen-0.5b", "hybrid-qwen-0.5b", "qwen-1.5b", "hybrid-qwen-1.5b",
                                                   "hybrid-3b"])
    p.add_argument("--batches", nargs="+", type=int, default=[256, 512])
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(args.out, args.models, args.batches, args.routes)


if __name__ == "__main__":
    main()
