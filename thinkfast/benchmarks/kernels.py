"""Kernel benchmarks: time every kernel at the papers' 1B/3B shapes and report achieved memory
bandwidth against the device's measured copy bandwidth.

Timing: `triton.testing.do_bench` median (ms).  "bytes" is the op's memory-traffic floor
(every input read once, every output written once, see docs/kernels.md), so
GB/s = bytes / time and "frac_copy" = that over the measured device-to-device copy
bandwidth (read + write bytes of a large copy).

Also the issue's training comparison: Mamba-1 scan forward+backward at the 3B shape,
batch 4, length 4096, against the layer's in_proj and out_proj matmuls forward+backward.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    d_inner: int  # Mamba-1: n_heads * head_dim
    groups: int  # B/C groups (d_inner / 16)
    d_xb: int  # n_kv * head_dim: the conv runs on x only, d_xb wide
    ssd_heads: int  # discrete Mamba-2 (Llamba-style) heads, head dim, d_state
    ssd_head_dim: int
    ssd_state: int
    head_dim: int  # the attention head dim the hybrid's Mamba-1 heads keep (x, B per kv head: d_xb / head_dim)


SHAPES = {
    # Llama-3.2-1B: 32 heads x 64, 8 kv heads.  Llamba-1B-style SSD heads assumed 32 x 64, d_state 64.
    "1b": Shape("1b", 2048, 2048, 128, 512, 32, 64, 64, 64),
    # Llama-3.2-3B: 24 heads x 128, 8 kv heads.  Llamba-3B: 32 heads x 96, d_state 64 (docs/design.md §1.4).
    "3b": Shape("3b", 3072, 3072, 192, 1024, 32, 96, 64, 128),
    # smoke-test size (runs under TRITON_INTERPRET on CPU)
    "tiny": Shape("tiny", 32, 32, 2, 16, 2, 16, 16, 16),
}
D_STATE = 16
CONV_K = 4


def kernel_timer(device):
    """ms per call: `do_bench` median on a GPU (warm-up, L2 flushed before each call); median of 3 on a CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=25, rep=100, return_mode="median"))

    import time

    def cpu_time(fn):  # smoke tests only: one warm-up, median of 3 (ms)
        fn()
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return sorted(ts)[1]

    return cpu_time


def copy_bandwidth(device, nbytes: int = 1 << 30, timer=None) -> float:
    """Device-to-device copy: (read + write bytes) / median time, GB/s."""
    timer = timer or kernel_timer(device)
    n = nbytes // 4
    src = torch.empty(n, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _row(kernel, shape, batch, length, ms, nbytes, copy_gbs, **extra):
    gbs = nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")
    return dict(kernel=kernel, shape=shape, batch=batch, length=length, ms=round(ms, 5), bytes=int(nbytes),
                gb_s=round(gbs, 1), frac_copy=round(gbs / copy_gbs, 3) if copy_gbs else None, **extra)


def fused_step_bytes(b: int, d_inner: int, d_xb: int, n: int, k: int, elem: int) -> int:
    """The fused Mamba-1 decode step's traffic floor: fp32 state read + written, conv window (k - 1 columns)
    read + written, x and B (d_xb) and z, C, dt (d_inner) read, y written, in `elem`-byte activations."""
    return 2 * b * d_inner * n * 4 + 2 * b * d_xb * (k - 1) * elem + (2 * d_xb + 4 * d_inner) * b * elem


def _fused_step_row(shape: Shape, b: int, state, dt, z, idx, device, timer, copy_gbs, dtype) -> dict:
    """The fused Mamba-1 step the hybrids decode with (conv step + kv-head expansion + state update in one
    launch): traffic = state read + written (fp32), conv window read + written, z, x, B, C, dt read, y written."""
    from thinkfast.ops.triton.mamba1_decode import mamba1_fused_step

    d, n, c = shape.d_inner, D_STATE, shape.d_xb
    es = torch.tensor([], dtype=dtype).element_size()
    x, Bx = (torch.randn(b, c, device=device, dtype=dtype) for _ in range(2))
    C = torch.randn(b, d, device=device, dtype=dtype)
    cst = torch.randn(b, c, CONV_K - 1, device=device, dtype=dtype)
    w, cb = torch.randn(c, CONV_K, device=device, dtype=dtype), torch.randn(c, device=device, dtype=dtype)
    A_log = torch.randn(d, n, device=device)
    Dp, bias = torch.ones(d, device=device), torch.zeros(d, device=device)
    ms = timer(lambda: mamba1_fused_step(z, x, Bx, C, dt, cst, w, cb, state, A_log, Dp, bias, shape.head_dim,
                                         "silu", True, idx))
    nbytes = fused_step_bytes(b, d, c, n, CONV_K, es)
    return _row("mamba1_fused_step", shape.name, b, 1, ms, nbytes, copy_gbs, state_bytes=2 * state.numel() * 4)


def bench_decode(shape: Shape, batches, device, timer, copy_gbs, dtype=torch.bfloat16):
    from thinkfast.ops.triton.conv import causal_conv1d_update
    from thinkfast.ops.triton.state_update import selective_state_update, ssd_step

    rows = []
    d, G, n = shape.d_inner, shape.groups, D_STATE
    es = torch.tensor([], dtype=dtype).element_size()
    for b in batches:
        # Mamba-1 step: state (b, d, 16) fp32 read + written; x, dt, z read and y written (b, d);
        # B, C (b, G, 16) read
        state = torch.randn(b, d, n, device=device)
        x, dt, z = (torch.randn(b, d, device=device, dtype=dtype) for _ in range(3))
        B, C = (torch.randn(b, G, n, device=device, dtype=dtype) for _ in range(2))
        A = -torch.rand(d, n, device=device)
        Dp, bias = torch.ones(d, device=device), torch.zeros(d, device=device)
        idx = torch.arange(b, device=device)
        ms = timer(lambda: selective_state_update(state, x, dt, A, B, C, Dp, z, bias, True, idx))
        nbytes = 2 * state.numel() * 4 + 4 * b * d * es + 2 * b * G * n * es
        rows.append(_row("mamba1_step", shape.name, b, 1, ms, nbytes, copy_gbs, state_bytes=2 * state.numel() * 4))
        rows.append(_fused_step_row(shape, b, state, dt, z, idx, device, timer, copy_gbs, dtype))
        del state
        # conv step: rolling state (b, d_xb, 3) in the activation dtype
        c = shape.d_xb
        cst = torch.randn(b, c, CONV_K - 1, device=device, dtype=dtype)
        xc = torch.randn(b, c, device=device, dtype=dtype)
        w = torch.randn(c, CONV_K, device=device, dtype=dtype)
        cb = torch.randn(c, device=device, dtype=dtype)
        ms = timer(lambda: causal_conv1d_update(xc, cst, w, cb, "silu", idx))
        rows.append(_row("conv_step", shape.name, b, 1, ms, 2 * cst.numel() * es + 2 * b * c * es, copy_gbs))
        # discrete Mamba-2 step: state (b, h, n, p) fp32
        h, p, ns = shape.ssd_heads, shape.ssd_head_dim, shape.ssd_state
        S = torch.randn(b, h, ns, p, device=device)
        xs = torch.randn(b, h, p, device=device, dtype=dtype)
        g = -torch.rand(b, h, device=device)
        Bs, Cs = (torch.randn(b, h, ns, device=device, dtype=dtype) for _ in range(2))
        ms = timer(lambda: ssd_step(S, xs, g, Bs, Cs, idx))
        rows.append(_row("ssd_step", shape.name, b, 1, ms, 2 * S.numel() * 4 + 2 * b * h * p * es, copy_gbs))
        del S
    return rows


def packed_reset(b: int, l: int, device, seed: int = 0) -> torch.Tensor:
    """(b, l) bool document starts of packed training rows, as `bench train` packs them: each row 2-4 documents
    (1-3 cuts in the middle three quarters), column 0 a start."""
    rng = random.Random(seed)
    reset = torch.zeros(b, l, dtype=torch.bool)
    reset[:, 0] = True
    for row in range(b):
        for cut in rng.sample(range(l // 8, l - l // 8), rng.randint(1, 3)):
            reset[row, cut] = True
    return reset.to(device)


def _scan_inputs(b, l, shape: Shape, device, dtype, requires_grad, packed: bool = False):
    """The 3B / 1B layer's scan arguments; `packed`: with the document resets of packed training rows."""
    d, G, n = shape.d_inner, shape.groups, D_STATE
    t = dict(
        x=torch.randn(b, l, d, device=device, dtype=dtype),
        dt=torch.randn(b, l, d, device=device, dtype=dtype) * 0.5,
        A=-torch.exp(torch.randn(d, n, device=device) * 0.5),
        B=torch.randn(b, l, G, n, device=device, dtype=dtype),
        C=torch.randn(b, l, G, n, device=device, dtype=dtype),
        D=torch.ones(d, device=device),
        z=torch.randn(b, l, d, device=device, dtype=dtype),
        dt_bias=torch.full((d,), -4.0, device=device),
    )
    if requires_grad:
        for v in t.values():
            v.requires_grad_(True)
    if packed:
        t["reset"] = packed_reset(b, l, device)
    return t


def fwd_bwd_fn(op, grad_out, *args, **kwargs):
    """One forward + backward of `op(*args, **kwargs)` as a model layer runs it: the gradients of the inputs
    that require them are returned (`torch.autograd.grad`), not accumulated into leaf `.grad`s, whose
    accumulation adds (from the second call on) would be timed with the op."""
    inputs = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.requires_grad]

    def fn():
        return torch.autograd.grad(op(*args, **kwargs), inputs, grad_out)

    return fn


def bench_sequence(shape: Shape, lengths, batch, device, timer, copy_gbs, dtype=torch.bfloat16, with_ssd=True):
    from thinkfast.ops.triton.conv import causal_conv1d
    from thinkfast.ops.triton.selective_scan import selective_scan

    rows = []
    d, G, n = shape.d_inner, shape.groups, D_STATE
    es = torch.tensor([], dtype=dtype).element_size()
    for l in lengths:
        tok = batch * l
        io_fwd = (4 * tok * d + 2 * tok * G * n) * es  # read x, dt, z, B, C; write y
        io_bwd = (7 * tok * d + 4 * tok * G * n) * es  # read x, dt, z, B, C, dy; write dx, ddt, dz, dB, dC
        with torch.no_grad():
            t = _scan_inputs(batch, l, shape, device, dtype, False)
            ms = timer(lambda: selective_scan(**t))
        rows.append(_row("scan_fwd", shape.name, batch, l, ms, io_fwd, copy_gbs))
        t = _scan_inputs(batch, l, shape, device, dtype, True)
        gy = torch.randn(batch, l, d, device=device, dtype=dtype)
        ms = timer(fwd_bwd_fn(selective_scan, gy, **t))
        rows.append(_row("scan_fwd_bwd", shape.name, batch, l, ms, io_fwd + io_bwd, copy_gbs))
        del t, gy
        # conv over x (d_xb channels), SiLU, with resets
        c = shape.d_xb
        xc = torch.randn(batch, l, c, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(c, CONV_K, device=device, dtype=dtype, requires_grad=True)
        cb = torch.randn(c, device=device, dtype=dtype, requires_grad=True)
        rs = torch.rand(batch, l, device=device) < 1e-3
        with torch.no_grad():
            ms = timer(lambda: causal_conv1d(xc, w, cb, "silu", rs))
        rows.append(_row("conv_fwd", shape.name, batch, l, ms, 2 * tok * c * es, copy_gbs))
        gyc = torch.randn(batch, l, c, device=device, dtype=dtype)
        ms = timer(fwd_bwd_fn(causal_conv1d, gyc, xc, w, cb, "silu", rs))
        rows.append(_row("conv_fwd_bwd", shape.name, batch, l, ms, 5 * tok * c * es, copy_gbs))
        del xc, gyc
        if with_ssd:
            rows.extend(_bench_ssd(shape, batch, l, device, timer, copy_gbs, dtype))
    return rows


def _bench_ssd(shape, batch, l, device, timer, copy_gbs, dtype):
    if device.type != "cuda":
        return []
    try:
        from thinkfast.ops.triton.ssd_fla import ssd_fla
    except Exception:  # pragma: no cover
        return []
    h, p, ns = shape.ssd_heads, shape.ssd_head_dim, shape.ssd_state
    x = torch.randn(batch, l, h, p, device=device, dtype=dtype, requires_grad=True)
    g = torch.nn.functional.logsigmoid(torch.randn(batch, l, h, device=device) + 3).requires_grad_(True)
    B = torch.randn(batch, l, h, ns, device=device, dtype=dtype, requires_grad=True)
    C = torch.randn(batch, l, h, ns, device=device, dtype=dtype, requires_grad=True)
    gy = torch.randn_like(x)
    es = x.element_size()
    tok = batch * l
    try:
        with torch.no_grad():
            ms = timer(lambda: ssd_fla(x, g, B, C))
        fwd = _row("ssd_fla_fwd", shape.name, batch, l, ms, (2 * tok * h * p + 2 * tok * h * ns) * es, copy_gbs)
        ms = timer(fwd_bwd_fn(ssd_fla, gy, x, g, B, C))
        both = _row("ssd_fla_fwd_bwd", shape.name, batch, l, ms, (5 * tok * h * p + 4 * tok * h * ns) * es, copy_gbs)
        return [fwd, both]
    except Exception as err:  # fla missing or failing: recorded, not fatal
        return [dict(kernel="ssd_fla", shape=shape.name, batch=batch, length=l, error=repr(err)[:300])]


def time_projections(shape, tokens: int, device, dtype, timer) -> tuple[float, int]:
    """ms for a Mamba-1 layer's in_proj + out_proj matmuls, forward and both backward products, on `tokens`
    rows (what the selective scan is compared with), and their FLOPs."""
    dm, d, dxb = shape.d_model, shape.d_inner, shape.d_xb
    proj_out = d + dxb + dxb + d + math.ceil(dm / 16)  # z | x | B | C | dt_low
    X = torch.randn(tokens, dm, device=device, dtype=dtype)
    W_in = torch.randn(proj_out, dm, device=device, dtype=dtype)
    Y = torch.randn(tokens, d, device=device, dtype=dtype)
    W_out = torch.randn(dm, d, device=device, dtype=dtype)
    dO_in = torch.randn(tokens, proj_out, device=device, dtype=dtype)
    dO_out = torch.randn(tokens, dm, device=device, dtype=dtype)

    def matmuls():
        X @ W_in.t(), dO_in @ W_in, dO_in.t() @ X  # in_proj: forward, d input, d weight
        Y @ W_out.t(), dO_out @ W_out, dO_out.t() @ Y  # out_proj

    return timer(matmuls), 3 * 2 * tokens * (dm * proj_out + d * dm)


SCAN_LAUNCHES = ("F1", "F2", "F3", "B1", "B2", "B3")  # selective_scan's launches, in order (docs/kernels.md)


def label_scan_launches(kernels) -> dict:
    """Mean ms per scan launch from the device kernels of `reps` forward + backward calls, in launch order.

    `kernels`: (name, ms) pairs.  The scan's own kernels (names starting `_ss_`) come six per call when the
    sequence has more than one chunk (F1 local states, F2 combine, F3 outputs, B1 local adjoints, B2 combine,
    B3 gradients); everything else (the dA/dD partial sums, copies) is summed as "other" per call."""
    scan = [(n, ms) for n, ms in kernels if n.startswith("_ss_")]
    if not scan or len(scan) % len(SCAN_LAUNCHES):
        raise ValueError(f"expected {len(SCAN_LAUNCHES)} scan launches per call, got {len(scan)} kernels: "
                         f"{sorted({n for n, _ in scan})}")
    reps = len(scan) // len(SCAN_LAUNCHES)
    out = {label: 0.0 for label in SCAN_LAUNCHES}
    for i, (_, ms) in enumerate(scan):
        out[SCAN_LAUNCHES[i % len(SCAN_LAUNCHES)]] += ms / reps
    out["other"] = sum(ms for n, ms in kernels if not n.startswith("_ss_")) / reps
    return {k: round(v, 4) for k, v in out.items()}


def profile_scan_launches(fn, reps: int = 3) -> dict:
    """`label_scan_launches` of `reps` calls of fn (one scan forward + backward), measured with torch.profiler."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    kernels = [(e.name, e.device_time_total / 1e3) for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    return label_scan_launches(kernels)


def bench_training_comparison(device, timer, batch=4, length=4096, dtype=torch.bfloat16, scan_configs=(),
                              shape_name="3b"):
    """3B layer: scan fwd+bwd vs in_proj + out_proj matmuls fwd+bwd (the 3B hybrid's Mamba-1 dimensions).

    `scan_configs`: extra (solver or None, sub-tile, num_warps, chunk length or None) to time (the default
    config is always timed)."""
    from thinkfast.ops.triton.selective_scan import selective_scan

    shape = SHAPES[shape_name]
    dm, d = shape.d_model, shape.d_inner
    proj_out = d + shape.d_xb + shape.d_xb + d + math.ceil(dm / 16)  # z | x | B | C | dt_low
    mm_ms, flops = time_projections(shape, batch * length, device, dtype, timer)
    t = _scan_inputs(batch, length, shape, device, dtype, True)
    gy = torch.randn(batch, length, d, device=device, dtype=dtype)
    fwd_bwd = fwd_bwd_fn(selective_scan, gy, **t)
    scan_ms = timer(fwd_bwd)
    launches = None
    if device.type == "cuda":
        try:
            launches = profile_scan_launches(fwd_bwd)
        except Exception as err:  # a profiler quirk must not lose the timings above: recorded, not fatal
            launches = {"error": repr(err)[:300]}
    with torch.no_grad():
        scan_fwd_ms = timer(lambda: selective_scan(**t))
    # training rows are packed documents: the same scan with their resets (another code path in every launch)
    tp = _scan_inputs(batch, length, shape, device, dtype, True, packed=True)
    packed_ms = timer(fwd_bwd_fn(selective_scan, gy, **tp))
    del tp
    sweep = []
    for solver, chunk, warps, clen in scan_configs:
        kw = dict(solver=solver, chunk_size=chunk, chunk_len=clen, num_warps=warps)

        fb = fwd_bwd_fn(selective_scan, gy, **t, **kw)

        def fw(kw=kw):
            with torch.no_grad():
                selective_scan(**t, **kw)
        row = dict(solver=solver or "default", chunk=chunk, num_warps=warps, chunk_len=clen)
        try:
            sweep.append(dict(row, scan_fwd_ms=round(timer(fw), 4), scan_fwd_bwd_ms=round(timer(fb), 4)))
        except Exception as err:  # e.g. out of registers / shared memory: recorded, not fatal
            sweep.append(dict(row, error=repr(err)[:300]))
    return dict(batch=batch, length=length, shape=shape_name, in_proj=f"{dm}->{proj_out}", out_proj=f"{d}->{dm}",
                scan_config_sweep=sweep,
                matmul_fwd_bwd_ms=round(mm_ms, 4), matmul_tflops=round(flops / (mm_ms * 1e-3) / 1e12, 1),
                scan_fwd_ms=round(scan_fwd_ms, 4), scan_fwd_bwd_ms=round(scan_ms, 4), scan_launches_ms=launches,
                scan_over_matmul=round(scan_ms / mm_ms, 3), scan_packed_fwd_bwd_ms=round(packed_ms, 4),
                target_met=scan_ms < mm_ms)


def run(out_dir, shapes=("1b", "3b"), batches=(1, 8, 32, 64, 128, 256, 512),
        lengths=(512, 1024, 2048, 4096, 8192), scan_batch=4, device=None, with_ssd=True, compare=True,
        scan_configs=()):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timer = kernel_timer(device)
    copy_gbs = copy_bandwidth(device, (1 << 30) if device.type == "cuda" else (1 << 22), timer)
    rows = []
    for name in shapes:
        shape = SHAPES[name]
        rows += bench_decode(shape, batches, device, timer, copy_gbs)
        rows += bench_sequence(shape, lengths, scan_batch, device, timer, copy_gbs, with_ssd=with_ssd)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    comparison = bench_training_comparison(device, timer, scan_configs=scan_configs) if compare else None
    import triton

    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
        copy_bandwidth_gb_s=round(copy_gbs, 1), rows=rows, training_comparison=comparison,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(result, indent=1))
    (out / "kernels.md").write_text(markdown(result))
    return result


def markdown(result) -> str:
    lines = [f"# Kernel benchmarks ({result['device']}, {result['date']})", "",
             f"torch {result['torch']}, triton {result['triton']}, CUDA {result['cuda']}; "
             f"measured copy bandwidth {result['copy_bandwidth_gb_s']} GB/s (read+write). "
             "Times: do_bench median. GB/s counts the op's traffic floor.", "",
             "| kernel | shape | batch | length | ms | MB | GB/s | of copy bw |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['kernel']} | {r['shape']} | {r['batch']} | {r['length']} | error: {r['error']} | | | |")
            continue
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['batch']} | {r['length']} | {r['ms']:.4f} | "
                     f"{r['bytes'] / 1e6:.1f} | {r['gb_s']} | {r['frac_copy']:.0%} |")
    c = result.get("training_comparison")
    if c:
        lines += ["", f"## Scan vs projections ({c['shape']} layer, training step)", "",
                  f"batch {c['batch']}, length {c['length']}: scan fwd {c.get('scan_fwd_ms')} ms, "
                  f"fwd+bwd {c['scan_fwd_bwd_ms']} ms vs "
                  f"in_proj ({c['in_proj']}) + out_proj ({c['out_proj']}) matmuls fwd+bwd {c['matmul_fwd_bwd_ms']} ms "
                  f"({c['matmul_tflops']} TFLOP/s): ratio {c['scan_over_matmul']}, "
                  f"target (< 1) {'met' if c['target_met'] else 'MISSED'}."]
        if c.get("scan_packed_fwd_bwd_ms") is not None:
            lines += ["", f"With the resets of packed training rows (2-4 documents per row): fwd+bwd "
                          f"{c['scan_packed_fwd_bwd_ms']} ms, {c['scan_packed_fwd_bwd_ms'] / c['matmul_fwd_bwd_ms']:.3f}x "
                          "the matmuls."]
        if c.get("scan_launches_ms"):
            lines += ["", "Default config, ms per launch (torch.profiler, mean of 3 calls): "
                      + ", ".join(f"{k} {v}" for k, v in c["scan_launches_ms"].items()) + "."]
        for sw in c.get("scan_config_sweep", []):
            clen = sw.get("chunk_len") or "default"
            head = (f"- scan solver {sw.get('solver', 'default')}, sub-tile {sw['chunk']}, {sw['num_warps']} warps, "
                    f"chunk length {clen}: ")
            if "error" in sw:
                lines.append(head + f"error {sw['error']}")
            else:
                lines.append(head + f"fwd {sw['scan_fwd_ms']} ms, fwd+bwd {sw['scan_fwd_bwd_ms']} ms")
    for kernel, what in (("mamba1_step", "state-update kernel"), ("mamba1_fused_step", "fused step the hybrids run")):
        decode = [r for r in result["rows"] if r.get("kernel") == kernel and r.get("shape") == "3b"
                  and r.get("batch", 0) >= 256 and "frac_copy" in r]
        if decode:
            worst = min(r["frac_copy"] for r in decode)
            lines += ["", f"Decode-step target, {what} (3B, batch >= 256, >= 70% of copy bandwidth): worst "
                          f"{worst:.0%} -> {'met' if worst >= 0.7 else 'MISSED'}."]
    return "\n".join(lines) + "\n"
