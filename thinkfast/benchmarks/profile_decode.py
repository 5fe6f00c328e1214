"""Where the decode step's time goes: torch.profiler over a model's step at real shapes (GPU).

    python -m thinkfast.benchmarks.profile_decode --out DIR [--models hybrid-3b pure-3b]
        [--batches 256 512] [--prompt 256] [--gen 4096] [--steps 3]

For each model one engine (max batch = the largest batch, capacity prompt + gen) prefills one
prompt and forks it into every slot; the slots' lengths are set to the protocol's mean
context (prompt + gen / 2), where the step costs what the whole generation costs on average.
Then, per batch:
  * `graph_ms`: the captured CUDA-graph step (model step + sampling + bookkeeping), mean of
    20 replays (CUDA events);
  * a profile of `steps` eager steps with CUDA activities: every kernel's time per step
    (`kernels` table), and the GPU time under each part of the layer stack (`parts`: the
    mixers' step by kind, MLP, norms, embedding, head, sampling), found by wrapping those
    modules in `record_function` ranges — NOTE: on torch 2.11 these range totals came out wrong
    (larger than the step), so profile.md leaves them out; read the kernel table).  Eager kernel durations equal the graph's; the
    difference `graph_ms - sum(kernels)` is the launch gaps the graph still has.
Writes profile.json and profile.md (top kernels per point).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import time
from pathlib import Path

import torch

from thinkfast.benchmarks import roofline
from thinkfast.benchmarks.profile_table import kernel_table, markdown_rows
from thinkfast.benchmarks.shapes import build_model

PARTS = ("embed", "attention", "mamba1", "discrete_mamba2", "mamba2", "mlp", "head", "sample")


def _wrap(obj, attr: str, label: str) -> None:
    fn = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)

    setattr(obj, attr, wrapped)


def instrument(model) -> None:
    """record_function ranges around the parts of the decode step (instance attributes only); the
    norms and residual adds are left in "other" (they are dispatch calls, not modules, after fusion)."""
    m = model.model
    _wrap(m.embed_tokens, "forward", "part:embed")
    for layer in m.layers:
        _wrap(layer.mixer, "step", f"part:{layer.mixer_type}")
        _wrap(layer.mlp, "step" if hasattr(layer.mlp, "step") else "forward", "part:mlp")
    _wrap(model, "logits", "part:head")


def _graph_ms(engine, slots, mode, context: int, reps: int = 20) -> float:
    from thinkfast.inference.graphs import pick_bucket

    batch = len(slots)
    graph, static_slots = engine.graphs.get(pick_bucket(engine.buckets, batch), mode)
    engine.state.lengths[:batch] = context
    engine.n_gen[:batch] = 1
    static_slots.copy_(torch.tensor(slots, dtype=torch.long))
    for _ in range(3):
        graph.replay()
    engine.state.lengths[:batch] = context
    engine.n_gen[:batch] = 1
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def _total_time_us(evt) -> float:
    for name in ("device_time_total", "cuda_time_total"):
        if hasattr(evt, name):
            return float(getattr(evt, name))
    return 0.0


def profile_point(engine, mode, batch: int, context: int, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    dev = engine.device
    slots = torch.arange(batch, device=dev)
    graph_ms = _graph_ms(engine, list(range(batch)), mode, context)
    engine.state.lengths[:batch] = context
    engine.n_gen[:batch] = 1
    body = engine._decode_body

    def sampled_body(s, m):
        with torch.profiler.record_function("part:sample"):
            return body(s, m)

    for _ in range(2):  # warm-up outside the profile
        body(slots, mode)
    engine.state.lengths[:batch] = context
    engine.n_gen[:batch] = 1
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            body(slots, mode)
        torch.cuda.synchronize()
    events = prof.key_averages()
    parts = {evt.key[5:]: _total_time_us(evt) / steps / 1000 for evt in events if evt.key.startswith("part:")}
    kernels = kernel_table(events, steps, cuda=True, exclude=("part:",))
    kernel_ms = sum(k["ms_per_step"] for k in kernels)
    body_ms = parts.pop("sample", kernel_ms)
    parts["other (norms, residual adds, sampling, bookkeeping)"] = body_ms - sum(parts.values())
    # the sampling range is the whole body: sampling itself = body - the model's parts
    return {"batch": batch, "context": context, "graph_ms": graph_ms, "kernel_ms": kernel_ms,
            "launches_per_step": sum(k["calls_per_step"] for k in kernels), "parts_ms": parts, "kernels": kernels}


def run(models, batches, prompt, gen, steps, out: Path) -> dict:
    from thinkfast.benchmarks.speed import SampledTimer

    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    hw = {"bandwidth": roofline.measure_copy_bandwidth(), "flops": roofline.measure_matmul_flops()}
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "gpu": props.name,
              "torch": torch.__version__, "bandwidth": hw["bandwidth"], "flops": hw["flops"], "points": []}
    context = prompt + gen // 2
    for name in models:
        model = build_model(name)
        numbers = roofline.model_numbers(model)
        t0 = time.perf_counter()
        timer = SampledTimer(model, prompt + gen, max(batches), prompt)
        engine = timer.engine
        instrument(engine.model)
        for batch in batches:
            if batch > engine.num_slots:
                result["points"].append({"model": name, "batch": batch, "error": "does not fit"})
                continue
            point = profile_point(engine, timer.mode, batch, context, steps)
            bound_ms = 1000 * roofline.step_bound_seconds(numbers, batch, context, hw["bandwidth"], hw["flops"])
            parts = roofline.step_parts_seconds(numbers, batch, context, hw["bandwidth"], hw["flops"])
            point.update(model=name, bound_ms=bound_ms, fraction_of_bound=bound_ms / point["graph_ms"],
                         parts_ms={k: 1000 * v for k, v in parts.items()},
                         serial_bound_ms=1000 * sum(parts.values()),
                         bytes_ms=1000 * (numbers["weight_bytes"] + batch * context * numbers["kv_bytes_per_token"]
                                          + 2 * batch * numbers["recurrent_state_bytes"]) / hw["bandwidth"],
                         flops_ms=1000 * 2 * numbers["params"] * batch / hw["flops"])
            result["points"].append(point)
            print(f"{name} B={batch} ctx={context}: graph {point['graph_ms']:.2f} ms, kernels {point['kernel_ms']:.2f} ms, "
                  f"bound {bound_ms:.2f} ms ({point['fraction_of_bound']:.0%})", flush=True)
        print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)
        del timer, engine, model
        torch.cuda.empty_cache()
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    (out / "profile.md").write_text(markdown(result))
    return result


def markdown(result: dict, top: int = 18) -> str:
    lines = [f"# Decode-step profile — {result['gpu']}, {result['date']}", "",
             f"torch {result['torch']}; copy bandwidth {result['bandwidth'] / 1e12:.2f} TB/s, "
             f"bf16 matmul {result['flops'] / 1e12:.0f} TFLOP/s.", ""]
    for p in result["points"]:
        if "error" in p:
            lines += [f"## {p['model']} B={p['batch']}: {p['error']}", ""]
            continue
        lines += [f"## {p['model']}, batch {p['batch']}, context {p['context']}", "",
                  f"graph step {p['graph_ms']:.3f} ms; sum of kernels {p['kernel_ms']:.3f} ms "
                  f"({p['launches_per_step']:.0f} launches); roofline bound {p['bound_ms']:.3f} ms "
                  f"(bytes {p['bytes_ms']:.3f} ms, flops {p['flops_ms']:.3f} ms) -> {p['fraction_of_bound']:.0%} of bound"
                  + (f"; serial bound {p['serial_bound_ms']:.3f} ms ("
                     + ", ".join(f"{k} {v:.3f}" for k, v in p["parts_ms"].items())
                     + f") -> {p['serial_bound_ms'] / p['graph_ms']:.0%}" if "serial_bound_ms" in p else ""), "",
                  *markdown_rows(p["kernels"], top), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="+", default=["hybrid-3b", "pure-3b"])
    ap.add_argument("--batches", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        run(a.models, a.batches, a.prompt, a.gen, a.steps, Path(a.out))


if __name__ == "__main__":
    main()
