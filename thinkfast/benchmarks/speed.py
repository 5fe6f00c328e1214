"""End-to-end decode speed under the papers' protocols (SPEC §5), against the roofline and a peer.

    thinkfast bench speed --out DIR [--quick] [--models hybrid-3b llama-3b ...] [--no-peer]

Protocols (greedy, ignore_eos, prefill excluded from every timing):
  A  prompt 512 + generate 512, batch 1 ... 512          (Thinking Slow, Fast)
  B  prompt 256 + decode 4096, batch 8 ... 512           (M1)
  C  prompt 256, batch 128, generation length 1k ... 16k (M1's length sweep)
How a point is timed ("sampled"): the engine prefills one prompt, forks it into every slot,
and for several context lengths along the generation sets the slots' lengths there and times
its own captured decode step (warm-up, then a few replays).  Decode time of the whole
generation is the integral of that step time over the context (piecewise linear between the
checkpoints, where the real cost is linear).  Headline points are also run "full": the
engine's `generate` end to end, decode windows timed by the engine itself.  Every point that
does not fit records why (memory planner, or the real allocation's OOM) instead of crashing.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from thinkfast.benchmarks import roofline
from thinkfast.benchmarks.shapes import MODELS, build_model, describe

log = logging.getLogger("thinkfast.bench")

FULL = {
    "models": list(MODELS),
    "A": {"prompt": 512, "gen": 512, "batches": [1, 16, 64, 256, 512]},
    "B": {"prompt": 256, "gen": 4096, "batches": [8, 64, 256, 512]},
    "C": {"prompt": 256, "batch": 128, "gens": [1024, 2048, 4096, 8192, 16384]},
    "checkpoints": 5, "steps": 6,
    "full_runs": [("hybrid-3b", "A", 256), ("llama-3b", "A", 256), ("hybrid-3b", "B", 256)],
    "peer": [("1b", 256), ("3b", 256)],
}
QUICK = {
    "models": ["llama-1b", "hybrid-1b", "llama-3b", "hybrid-3b", "pure-3b"],
    "A": {"prompt": 512, "gen": 512, "batches": [1, 64, 256]},
    "B": {"prompt": 256, "gen": 4096, "batches": [64, 256, 512]},
    "C": {"prompt": 256, "batch": 128, "gens": [1024, 4096, 16384]},
    "checkpoints": 3, "steps": 4,
    "full_runs": [("hybrid-3b", "A", 256)],
    "peer": [("1b", 256)],
}


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cleanup() -> None:
    gc.collect()
    torch.cuda.empty_cache()


class SampledTimer:
    """One engine per (model, protocol); times its decode step at chosen context lengths."""

    def __init__(self, model, capacity: int, max_batch: int, prompt: int):
        from thinkfast.inference.engine import Engine, _Request
        from thinkfast.inference.params import SamplingParams
        from thinkfast.inference.sampling import SamplerMode

        # one short prompt is prefilled: a small prefill workspace leaves the memory to decode slots
        self.engine = Engine(model, None, max_batch=max_batch, max_len=capacity, progress=False,
                             prefill_tokens=max(prompt, 1024))
        self.mode = SamplerMode(all_greedy=True)
        self.prompt = prompt
        ids = torch.randint(10, 1000, (prompt,)).tolist()
        free = list(range(self.engine.num_slots))[::-1]
        params = SamplingParams(temperature=0, max_new_tokens=capacity - prompt + 1, ignore_eos=True)
        queue = deque([_Request(0, ids, list(range(self.engine.num_slots)))])
        self.engine._admit(queue, free, params, self.mode, 0)  # prefill once, fork into every slot
        torch.cuda.synchronize()

    def step_seconds(self, batch: int, context: int, steps: int) -> float:
        e = self.engine
        slots = list(range(batch))
        e.graphs.get(batch if batch in e.buckets else min(b for b in e.buckets if b >= batch), self.mode)
        e.state.lengths[:batch] = context
        e.n_gen[:batch] = 1
        e._run_window(slots, self.mode, 2)
        e.state.lengths[:batch] = context
        e.n_gen[:batch] = 1
        torch.cuda.synchronize()
        start = time.perf_counter()
        e._run_window(slots, self.mode, steps)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def integrate_decode_seconds(contexts, seconds, prompt: int, gen: int) -> float:
    """Decode steps i = 1 .. gen-1 run at context prompt + i (cache length before the step)."""
    steps = np.arange(1, gen) + prompt
    return float(np.interp(steps, contexts, seconds).sum())


def _checkpoints(prompt: int, gen: int, k: int, steps: int) -> list[int]:
    hi = prompt + gen - 1 - (steps + 3)
    return sorted({int(c) for c in np.linspace(prompt + 1, max(prompt + 1, hi), k)})


def _point_base(name, protocol, batch, prompt, gen, numbers, hw):
    bound = roofline.generation_bound_tokens_per_s(numbers, batch, prompt, gen - 1, hw["bandwidth"], hw["flops"])
    return {"model": name, "protocol": protocol, "batch": batch, "prompt": prompt, "gen": gen,
            "bound_tokens_per_s": bound,
            "state_bytes": batch * (numbers["recurrent_state_bytes"] + (prompt + gen) * numbers["kv_bytes_per_token"]),
            "weight_bytes": numbers["weight_bytes"]}


def _verify_oom(model, batch: int, capacity: int) -> str:
    """Try the real allocation of `batch` slots: 'oom' if the device refuses it."""
    try:
        state = model.allocate_state(batch, capacity, dtype=torch.bfloat16, device="cuda")
        del state
        _cleanup()
        return "state alone allocates; state + workspace exceed the planner's budget"
    except Exception as err:  # noqa: BLE001
        if _is_oom(err):
            _cleanup()
            return "oom: allocating the decode state alone fails"
        raise


def sweep(model, name, numbers, hw, protocol, prompt, gens, batches, cfg) -> list[dict]:
    """Sampled timing of one model over batch sizes (protocols A, B) or lengths (C)."""
    points = []
    capacity = prompt + max(gens)
    torch.cuda.reset_peak_memory_stats()
    timer = None
    try:
        timer = SampledTimer(model, capacity, max(batches), prompt)
        plan = timer.engine.plan
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        plan = None
        _cleanup()
    contexts = _checkpoints(prompt, max(gens), cfg["checkpoints"] + (2 if protocol == "C" else 0), cfg["steps"])
    for batch in batches:
        for gen in gens:
            point = _point_base(name, protocol, batch, prompt, gen, numbers, hw)
            if timer is None or batch > timer.engine.num_slots:
                fit = plan.fit if plan is not None else 0
                point.update(oom=True, reason=f"planner: {fit} slots of {capacity} tokens fit")
                points.append(point)
                continue
            try:
                use = [c for c in contexts if c <= prompt + gen - 1] or contexts[:1]
                if use[-1] < prompt + gen - 1 - cfg["steps"] - 3 and len(use) < len(contexts):
                    use.append(min(prompt + gen - 1 - cfg["steps"] - 3, contexts[-1]))
                secs = [timer.step_seconds(batch, c, cfg["steps"]) for c in use]
                decode_s = integrate_decode_seconds(use, secs, prompt, gen)
                tps = batch * (gen - 1) / decode_s
                point.update(oom=False, method="sampled", contexts=use, step_seconds=secs, decode_s=decode_s,
                             tokens_per_s=tps, latency_ms_per_step=1000 * decode_s / (gen - 1),
                             fraction_of_bound=tps / point["bound_tokens_per_s"],
                             engine_slots=timer.engine.num_slots,
                             engine_peak_bytes=torch.cuda.max_memory_allocated())
            except Exception as err:  # noqa: BLE001
                if not _is_oom(err):
                    raise
                point.update(oom=True, reason=f"oom while decoding: {str(err)[:200]}")
                _cleanup()
            points.append(point)
            log.info("%s %s B=%d G=%d: %s", name, protocol, batch, gen,
                     "OOM" if point["oom"] else f"{point['tokens_per_s']:.0f} tok/s ({point['fraction_of_bound']:.0%} of bound)")
    slots = timer.engine.num_slots if timer is not None else 0
    del timer
    _cleanup()
    for point in points:  # confirm "does not fit" by the real allocation where the planner refused
        if point["oom"] and point.get("reason", "").startswith("planner") and point["batch"] > slots:
            point["verified"] = _verify_oom(model, point["batch"], point["prompt"] + point["gen"])
    return points


def full_run(model, name, numbers, hw, protocol, prompt, gen, batch) -> dict:
    from thinkfast.inference.engine import Engine
    from thinkfast.inference.params import SamplingParams

    point = _point_base(name, protocol, batch, prompt, gen, numbers, hw)
    torch.cuda.reset_peak_memory_stats()
    try:
        engine = Engine(model, None, max_batch=batch, max_len=prompt + gen, progress=False,
                        prefill_tokens=8 * prompt)
        if engine.num_slots < batch:
            point.update(oom=True, reason=f"planner: {engine.plan.fit} slots fit")
            return point
        distinct = min(8, batch)
        prompts = [torch.randint(10, 1000, (prompt,)).tolist() for _ in range(distinct)]
        params = SamplingParams(temperature=0, max_new_tokens=gen, ignore_eos=True)
        start = time.perf_counter()
        engine.generate(prompts, params, n=batch // distinct)
        wall = time.perf_counter() - start
        stats = engine.last_stats
        tps = stats["decode_tokens"] / stats["decode_s"]
        point.update(oom=False, method="full", tokens_per_s=tps, decode_s=stats["decode_s"], wall_s=wall,
                     latency_ms_per_step=1000 * stats["decode_s"] / stats["decode_steps"],
                     fraction_of_bound=tps / point["bound_tokens_per_s"], engine_stats=stats,
                     engine_peak_bytes=torch.cuda.max_memory_allocated())
        del engine
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        point.update(oom=True, reason=f"oom: {str(err)[:200]}")
    _cleanup()
    return point


def run_peer(size: str, batch: int, prompt: int, gen: int, timeout: int) -> dict:
    record = {"peer": "transformers.generate(static cache, torch.compile)", "size": size, "batch": batch,
              "prompt": prompt, "gen": gen}
    args = json.dumps({"size": size, "batch": batch, "prompt": prompt, "gen": gen})
    try:
        proc = subprocess.run([sys.executable, "-m", "thinkfast.benchmarks.peer", args], capture_output=True,
                              text=True, timeout=timeout)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("PEER_RESULT ")]
        if lines:
            record.update(json.loads(lines[-1][len("PEER_RESULT "):]))
        else:
            record.update(ok=False, error=f"exit {proc.returncode}: {proc.stderr[-800:]}")
    except subprocess.TimeoutExpired:
        record.update(ok=False, error=f"timed out after {timeout}s")
    return record


def headline(results: dict) -> dict:
    pts = [p for p in results["points"] + results["full"] if not p["oom"]]

    def best(model, protocol, batch=None):
        cands = [p for p in pts if p["model"] == model and p["protocol"] == protocol and (batch is None or p["batch"] == batch)]
        cands.sort(key=lambda p: (p.get("method") == "full", p["tokens_per_s"]), reverse=True)
        return cands[0] if cands else None

    out = {}
    for b in (256, 512):
        p = best("hybrid-3b", "B", b)
        out[f"hybrid-3b_B{b}_fraction_of_bound"] = p and p["fraction_of_bound"]
    top_teacher = max((p["tokens_per_s"] for p in pts if p["model"] == "llama-3b" and p["protocol"] == "B"), default=None)
    for b in (256, 512):
        p = best("hybrid-3b", "B", b)
        out[f"hybrid-3b_B{b}_vs_llama-3b_best"] = (p["tokens_per_s"] / top_teacher) if p and top_teacher else None
    for peer in results["peer"]:
        if peer.get("ok"):
            p = best(f"hybrid-{peer['size']}", "A", peer["batch"])
            out[f"hybrid-{peer['size']}_A_B{peer['batch']}_vs_hf_peer"] = p and p["tokens_per_s"] / peer["tokens_per_s"]
    t512 = [p for p in results["points"] if p["model"] == "llama-3b" and p["protocol"] == "B" and p["batch"] == 512]
    h512 = [p for p in results["points"] if p["model"] == "hybrid-3b" and p["protocol"] == "B" and p["batch"] == 512]
    out["llama-3b_B512_256+4096_fits"] = (not t512[0]["oom"]) if t512 else None
    out["hybrid-3b_B512_256+4096_fits"] = (not h512[0]["oom"]) if h512 else None
    return out


def run_speed(out_dir: str, quick: bool = False, models: list[str] | None = None, peer: bool = True,
              peer_timeout: int = 180) -> dict:
    if not torch.cuda.is_available():
        from thinkfast.errors import ThinkfastError

        raise ThinkfastError("the speed benchmark needs a CUDA GPU")
    cfg = QUICK if quick else FULL
    models = models or cfg["models"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    hw = {"bandwidth": roofline.measure_copy_bandwidth(), "flops": roofline.measure_matmul_flops()}
    _cleanup()
    results = {
        "command": "thinkfast bench speed " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "speed"] else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "gpu": props.name,
        "gpu_memory_bytes": props.total_memory, "torch": torch.__version__, "python": platform.python_version(),
        "measured_copy_bandwidth_bytes_per_s": hw["bandwidth"], "measured_bf16_matmul_flops": hw["flops"],
        "quick": quick, "config": {k: v for k, v in cfg.items()}, "models": {}, "points": [], "full": [], "peer": [],
    }
    try:
        import transformers

        results["transformers"] = transformers.__version__
    except ImportError:
        pass
    for name in models:
        log.info("building %s", name)
        model = build_model(name)
        numbers = roofline.model_numbers(model)
        results["models"][name] = {**numbers, "description": describe(name)}
        for protocol in ("A", "B", "C"):
            p = cfg[protocol]
            if protocol == "C":
                pts = sweep(model, name, numbers, hw, "C", p["prompt"], p["gens"], [p["batch"]], cfg)
                pts = _retry_shorter(model, name, numbers, hw, p, cfg, pts)
            else:
                pts = sweep(model, name, numbers, hw, protocol, p["prompt"], [p["gen"]], p["batches"], cfg)
            results["points"].extend(pts)
        for run_model, protocol, batch in cfg["full_runs"]:
            if run_model == name:
                p = cfg[protocol]
                results["full"].append(full_run(model, name, numbers, hw, protocol, p["prompt"], p["gen"], batch))
        del model
        _cleanup()
        _write(results, out)  # partial results survive a later failure
    if peer:
        for size, batch in cfg["peer"]:
            log.info("peer: HF generate, %s, batch %d", size, batch)
            results["peer"].append(run_peer(size, batch, cfg["A"]["prompt"], cfg["A"]["gen"], peer_timeout))
    results["headline"] = headline(results)
    results["elapsed_s"] = time.perf_counter() - started
    _write(results, out)
    return results


def _retry_shorter(model, name, numbers, hw, p, cfg, pts):
    """Length sweep: if the longest generation does not fit at this batch, time the ones that do."""
    ok = [x for x in pts if not x["oom"]]
    if ok or len(p["gens"]) == 1:
        return pts
    fitting = []
    for gen in sorted(p["gens"]):
        from thinkfast.inference.planner import plan_slots

        if plan_slots(model, p["prompt"] + gen, torch.bfloat16, torch.device("cuda"), p["batch"]).fit >= p["batch"]:
            fitting.append(gen)
    if not fitting:
        return pts
    short = sweep(model, name, numbers, hw, "C", p["prompt"], fitting, [p["batch"]], cfg)
    by_gen = {x["gen"]: x for x in short}
    return [by_gen.get(x["gen"], x) for x in pts]


def _write(results: dict, out: Path) -> None:
    from thinkfast.benchmarks.report import write_markdown, write_plots

    (out / "speed.json").write_text(json.dumps(results, indent=1, default=str))
    try:
        write_plots(results, out)
    except Exception as err:  # noqa: BLE001  (a plotting problem must not lose the numbers)
        log.warning("plots failed: %s", err)
    write_markdown(results, out)
