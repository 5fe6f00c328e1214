"""End-to-end decode speed under the papers' protocols (docs/design.md §5), against the roofline and a peer.

    thinkfast bench speed --out DIR [--protocol full|quick|issue11|qwen|issue16] [--models ...] [--no-peer]

Protocols (greedy, ignore_eos, prefill excluded from every timing):
  A  prompt 512 + generate 512, batch 1 ... 512          (Thinking Slow, Fast)
  B  prompt 256 + decode 4096, batch 8 ... 512           (M1)
  C  prompt 256, batch 128, generation length 1k ... 16k (M1's length sweep)
  G  prompt 200, generate 256 / 2048, batch 256 / 512    (GSM8K-like, Qwen2.5 shapes)
Protocol sets (--protocol): full (A, B, C, every Llama shape), quick (fewer points), issue11
(Llama-1B shape, 512+512 at batch 256: our engine end to end vs every HF generate route, a few
minutes), qwen (protocol G on Qwen2.5-0.5B/1.5B shapes and their hybrids), issue16 (issue 16's
targets in one run: protocol G on the Qwen shapes, protocol B at batch 256 / 512 on the 3B shape).
A protocol may name its own `models`: it then runs on those of the set's models only.
How a point is timed ("sampled"): the engine prefills one prompt, forks it into every slot,
and for several context lengths along the generation sets the slots' lengths there and times
its own captured decode step (warm-up, then a few replays).  Decode time of the whole
generation is the integral of that step time over the context (piecewise linear between the
checkpoints, where the real cost is linear).  Headline points are also run "full": the
engine's `generate` end to end, decode windows timed by the engine itself, with nvidia-smi's SM
clock and active limits (power cap, thermal) sampled meanwhile (`gpu_clocks`).  Every point that
does not fit records why (memory planner, or the real allocation's OOM) instead of crashing.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import platform
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from thinkfast.benchmarks import gpu_clocks, roofline
from thinkfast.benchmarks.shapes import build_model, describe
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE

log = logging.getLogger("thinkfast.bench")

# A protocol set: which models, which (prompt, generation lengths, batches) per protocol, which points
# also run end to end ("full"), and the HF peer runs (every route of thinkfast.benchmarks.peer).
FULL = {
    "description": "every model, protocols A, B, C, peers at 512+512 batch 256",
    "models": ["llama-1b", "hybrid-1b", "pure-1b", "llama-3b", "hybrid-3b", "pure-3b"],
    "protocols": {
        "A": {"prompt": 512, "gens": [512], "batches": [1, 16, 64, 256, 512], "title": "prompt 512 + gen 512"},
        "B": {"prompt": 256, "gens": [4096], "batches": [8, 64, 256, 512], "title": "prompt 256 + decode 4096"},
        "C": {"prompt": 256, "gens": [1024, 2048, 4096, 8192, 16384], "batches": [128], "title": "prompt 256, batch 128"},
    },
    "checkpoints": 5, "steps": 6,
    "full_runs": [("hybrid-3b", "A", 256, 512), ("llama-3b", "A", 256, 512), ("hybrid-3b", "B", 256, 4096)],
    "peer": [{"size": "1b", "batch": 256, "prompt": 512, "gen": 512}, {"size": "3b", "batch": 256, "prompt": 512, "gen": 512}],
}
QUICK = {
    "description": "fewer models and points (a few minutes)",
    "models": ["llama-1b", "hybrid-1b", "llama-3b", "hybrid-3b", "pure-3b"],
    "protocols": {
        "A": {"prompt": 512, "gens": [512], "batches": [1, 64, 256], "title": "prompt 512 + gen 512"},
        "B": {"prompt": 256, "gens": [4096], "batches": [64, 256, 512], "title": "prompt 256 + decode 4096"},
        "C": {"prompt": 256, "gens": [1024, 4096, 16384], "batches": [128], "title": "prompt 256, batch 128"},
    },
    "checkpoints": 3, "steps": 4,
    "full_runs": [("hybrid-3b", "A", 256, 512)],
    "peer": [{"size": "1b", "batch": 256, "prompt": 512, "gen": 512}],
}
# issue 11's check: our engine (teacher and hybrid, end to end) and every HF route, same shape and point
ISSUE11 = {
    "description": "Llama-3.2-1B shape, 512+512, batch 256: our engine end to end vs every HF generate route",
    "models": ["llama-1b", "hybrid-1b"],
    "protocols": {"A": {"prompt": 512, "gens": [512], "batches": [], "title": "prompt 512 + gen 512"}},
    "checkpoints": 3, "steps": 4,
    "full_runs": [("llama-1b", "A", 256, 512), ("hybrid-1b", "A", 256, 512)],
    "peer": [{"size": "1b", "batch": 256, "prompt": 512, "gen": 512}],
}
# issue 16: Qwen2.5 shapes under a GSM8K-like load (prompt ~200 tokens, short and long answers)
QWEN = {
    "description": "Qwen2.5-0.5B/1.5B shapes and their quarter-attention hybrids (6/24, 7/28), GSM8K-like: "
                   "prompt 200, gen 256 and 2048",
    "models": ["qwen-0.5b", "hybrid-qwen-0.5b", "qwen-1.5b", "hybrid-qwen-1.5b"],
    "protocols": {"G": {"prompt": 200, "gens": [256, 2048], "batches": [256, 512], "title": "GSM8K-like: prompt 200"}},
    "checkpoints": 5, "steps": 6,
    "full_runs": [("qwen-1.5b", "G", 256, 2048), ("hybrid-qwen-1.5b", "G", 256, 2048)],
    "peer": [],
}
# issue 16's targets in one run: every Qwen point of protocol G, and the 3B hybrid (with its teacher, for the
# ratio) at 256 + 4096, batch 256 and 512; the headline points run end to end as well.  The 3B shapes go
# first: Llama-3B's 256 slots at 4,352 tokens (128 GB of KV) take nearly all of an H200.
_QWEN_MODELS = QWEN["models"]
ISSUE16 = {
    "description": "issue 16's check: protocol G on the Qwen2.5 shapes and hybrids, protocol B (256 + 4096, "
                   "batch 256 / 512) on the Llama-3.2-3B shape and its hybrid",
    "models": ["llama-3b", "hybrid-3b"] + _QWEN_MODELS,
    "protocols": {
        "G": {**QWEN["protocols"]["G"], "models": _QWEN_MODELS},
        "B": {"prompt": 256, "gens": [4096], "batches": [256, 512], "title": "prompt 256 + decode 4096",
              "models": ["llama-3b", "hybrid-3b"]},
    },
    "checkpoints": 5, "steps": 6,
    "full_runs": QWEN["full_runs"] + [("hybrid-3b", "B", 256, 4096), ("hybrid-3b", "B", 512, 4096)],
    "peer": [],
}
PROTOCOL_SETS = {"full": FULL, "quick": QUICK, "issue11": ISSUE11, "qwen": QWEN, "issue16": ISSUE16}


def runs_protocol(protocol: dict, model_name: str) -> bool:
    """A protocol runs on every model of its set unless it names its own `models`."""
    return model_name in protocol.get("models", [model_name])


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


class SampledTimer:
    """One engine per (model, protocol); times its decode step at chosen context lengths.

    Works on any device (CUDA graphs on CUDA, eager steps elsewhere); the thinkfast run pipeline
    uses it for its cheap "sampled" throughput method.
    """

    def __init__(self, model, capacity: int, max_batch: int, prompt: int, seed: int = 0,
                 ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE, sampler=None):
        """`sampler`: SamplingParams whose temperature and filters each timed step samples with (greedy if None)."""
        from thinkfast.inference.engine import Engine, _Request
        from thinkfast.inference.params import timing_params
        from thinkfast.inference.sampling import SamplerMode

        # one short prompt is prefilled: a small prefill workspace leaves the memory to decode slots
        self.engine = Engine(model, None, max_batch=max_batch, max_len=capacity, progress=False,
                             prefill_tokens=max(prompt, 1024), ssm_state_dtype=ssm_state_dtype)
        params = timing_params(sampler, capacity - prompt + 1)
        self.mode = SamplerMode.from_params(params)
        self.prompt = prompt
        vocab = model.config.vocab_size
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(min(10, vocab - 1), min(1000, vocab), (prompt,), generator=gen).tolist()
        free = list(range(self.engine.num_slots))[::-1]
        queue = deque([_Request(0, ids, list(range(self.engine.num_slots)))])
        self.engine._admit(queue, free, params, self.mode, 0)  # prefill once, fork into every slot
        _sync(self.engine.device)

    def step_seconds(self, batch: int, context: int, steps: int) -> float:
        e = self.engine
        slots = list(range(batch))
        if e.use_graphs:
            e.graphs.get(batch if batch in e.buckets else min(b for b in e.buckets if b >= batch), self.mode)
        e.state.lengths[:batch] = context
        e.n_gen[:batch] = 1
        e._run_window(slots, self.mode, 2)
        e.state.lengths[:batch] = context
        e.n_gen[:batch] = 1
        _sync(e.device)
        start = time.perf_counter()
        e._run_window(slots, self.mode, steps)
        _sync(e.device)
        return (time.perf_counter() - start) / steps

    def tokens_per_s(self, batch: int, prompt: int, gen: int, checkpoints: int = 3, steps: int = 4) -> dict:
        """Sampled decode throughput of `batch` sequences generating `gen` tokens after `prompt`."""
        use = contexts_for(_checkpoints(prompt, gen, checkpoints, steps), prompt, gen, steps)
        secs = [self.step_seconds(batch, c, steps) for c in use]
        decode_s = integrate_decode_seconds(use, secs, prompt, gen)
        return {"tokens_per_s": batch * (gen - 1) / decode_s, "decode_s": decode_s, "contexts": use,
                "step_seconds": secs}


def integrate_decode_seconds(contexts, seconds, prompt: int, gen: int) -> float:
    """Decode steps i = 1 .. gen-1 run at context prompt + i (cache length before the step)."""
    steps = np.arange(1, gen) + prompt
    return float(np.interp(steps, contexts, seconds).sum())


def _checkpoints(prompt: int, gen: int, k: int, steps: int) -> list[int]:
    hi = prompt + gen - 1 - (steps + 3)
    return sorted({int(c) for c in np.linspace(prompt + 1, max(prompt + 1, hi), k)})


def contexts_for(contexts: list[int], prompt: int, gen: int, steps: int) -> list[int]:
    """The checkpoints inside a generation of `gen` tokens, plus one near its end if the rest stop early."""
    last = prompt + gen - 1 - steps - 3
    use = [c for c in contexts if c <= prompt + gen - 1] or contexts[:1]
    if use[-1] < last and len(use) < len(contexts):
        use.append(min(last, contexts[-1]))
    return use


def _state_dtype(numbers: dict) -> str:
    """The engine's ssm_state_dtype for a measurement: the one its roofline numbers were computed with."""
    return numbers["ssm_state_dtype"] or DEFAULT_SSM_STATE_DTYPE


def _point_base(name, protocol, batch, prompt, gen, numbers, hw):
    bound = roofline.generation_bound_tokens_per_s(numbers, batch, prompt, gen - 1, hw["bandwidth"], hw["flops"])
    serial = roofline.generation_bound_tokens_per_s(numbers, batch, prompt, gen - 1, hw["bandwidth"], hw["flops"],
                                                    serial=True)
    return {"model": name, "ssm_state_dtype": numbers["ssm_state_dtype"], "protocol": protocol, "batch": batch,
            "prompt": prompt, "gen": gen, "bound_tokens_per_s": bound, "serial_bound_tokens_per_s": serial,
            "state_bytes": batch * (numbers["recurrent_state_bytes"] + (prompt + gen) * numbers["kv_bytes_per_token"]),
            "weight_bytes": numbers["weight_bytes"]}


def _fractions(point: dict, tokens_per_s: float) -> dict:
    return {"fraction_of_bound": tokens_per_s / point["bound_tokens_per_s"],
            "fraction_of_serial_bound": tokens_per_s / point["serial_bound_tokens_per_s"]}


def _verify_oom(model, batch: int, capacity: int, ssm_state_dtype: str) -> str:
    """Try the real allocation of `batch` slots: 'oom' if the device refuses it."""
    from thinkfast.inference.params import resolve_ssm_state_dtype

    try:
        state = model.allocate_state(batch, capacity, dtype=torch.bfloat16, device=_device_of(model),
                                     ssm_dtype=resolve_ssm_state_dtype(ssm_state_dtype))
        del state
        _cleanup()
        return "state alone allocates; state + workspace exceed the planner's budget"
    except Exception as err:  # noqa: BLE001
        if _is_oom(err):
            _cleanup()
            return "oom: allocating the decode state alone fails"
        raise


def sweep(model, name, numbers, hw, protocol, prompt, gens, batches, cfg) -> list[dict]:
    """Sampled timing of one model over batch sizes and generation lengths."""
    points = []
    if not batches or not gens:
        return points
    capacity = prompt + max(gens)
    _reset_peak()
    timer = None
    try:
        timer = SampledTimer(model, capacity, max(batches), prompt, ssm_state_dtype=_state_dtype(numbers))
        plan = timer.engine.plan
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        plan = None
        _cleanup()
    contexts = _checkpoints(prompt, max(gens), cfg["checkpoints"] + (2 if len(gens) > 1 else 0), cfg["steps"])
    for batch in batches:
        for gen in gens:
            point = _point_base(name, protocol, batch, prompt, gen, numbers, hw)
            if timer is None or batch > timer.engine.num_slots:
                fit = plan.fit if plan is not None else 0
                point.update(oom=True, reason=f"planner: {fit} slots of {capacity} tokens fit")
                points.append(point)
                continue
            try:
                use = contexts_for(contexts, prompt, gen, cfg["steps"])
                secs = [timer.step_seconds(batch, c, cfg["steps"]) for c in use]
                decode_s = integrate_decode_seconds(use, secs, prompt, gen)
                tps = batch * (gen - 1) / decode_s
                point.update(oom=False, method="sampled", contexts=use, step_seconds=secs, decode_s=decode_s,
                             tokens_per_s=tps, latency_ms_per_step=1000 * decode_s / (gen - 1),
                             **_fractions(point, tps), engine_slots=timer.engine.num_slots,
                             engine_peak_bytes=_peak())
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
            point["verified"] = _verify_oom(model, point["batch"], point["prompt"] + point["gen"], _state_dtype(numbers))
    return points


def full_run(model, name, numbers, hw, protocol, prompt, gen, batch) -> dict:
    from thinkfast.inference.engine import Engine
    from thinkfast.inference.params import SamplingParams

    point = _point_base(name, protocol, batch, prompt, gen, numbers, hw)
    _reset_peak()
    try:
        engine = Engine(model, None, max_batch=batch, max_len=prompt + gen, progress=False,
                        prefill_tokens=8 * prompt, ssm_state_dtype=_state_dtype(numbers))
        if engine.num_slots < batch:
            point.update(oom=True, reason=f"planner: {engine.plan.fit} slots fit")
            return point
        distinct = min(8, batch)
        vocab = model.config.vocab_size
        prompts = [torch.randint(min(10, vocab - 1), min(1000, vocab), (prompt,)).tolist() for _ in range(distinct)]
        params = SamplingParams(temperature=0, max_new_tokens=gen, ignore_eos=True)
        device = next(model.parameters()).device
        with gpu_clocks.ClockLog(device.index or 0) if device.type == "cuda" else contextlib.nullcontext() as clocks:
            start = time.perf_counter()
            engine.generate(prompts, params, n=batch // distinct)
            wall = time.perf_counter() - start
        stats = engine.last_stats
        tps = stats["decode_tokens"] / stats["decode_s"]
        point.update(oom=False, method="full", tokens_per_s=tps, decode_s=stats["decode_s"], wall_s=wall,
                     latency_ms_per_step=1000 * stats["decode_s"] / stats["decode_steps"],
                     **_fractions(point, tps), engine_stats=stats,
                     engine_peak_bytes=_peak(), gpu_clocks=clocks.summary if clocks is not None else None)
        log.info("%s %s B=%d G=%d full run: %.0f tok/s", name, protocol, batch, gen, tps)
        del engine
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        point.update(oom=True, reason=f"oom: {str(err)[:200]}")
    _cleanup()
    return point


def _peer_lines(text: str | bytes | None) -> list[dict]:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return [json.loads(line[len("PEER_RESULT "):]) for line in (text or "").splitlines()
            if line.startswith("PEER_RESULT ")]


def run_peer(size, batch: int, prompt: int, gen: int, timeout: int, routes=None, device: str = "cuda",
             dtype: str = "bfloat16", compile_backend: str | None = None) -> list[dict]:
    """Every HF route in a subprocess (one model build for all); a route that kills or hangs the
    process is recorded as failed and the routes after it run again in a fresh process.
    `timeout` is seconds per route.  Returns one record per route; the fastest working one is
    marked `is_peer` (it is "the peer")."""
    from thinkfast.benchmarks.peer import PEER_NAME, ROUTES

    todo = list(routes or ROUTES)
    label = size if isinstance(size, str) else "custom"
    records: list[dict] = []
    while todo:
        args = json.dumps({"size": size, "batch": batch, "prompt": prompt, "gen": gen, "routes": todo,
                           "device": device, "dtype": dtype, "compile_backend": compile_backend})
        limit = 60 + timeout * len(todo)
        try:
            proc = subprocess.run([sys.executable, "-m", "thinkfast.benchmarks.peer", args], capture_output=True,
                                  text=True, timeout=limit)
            got, failure = _peer_lines(proc.stdout), f"exit {proc.returncode}: {proc.stderr[-800:]}"
        except subprocess.TimeoutExpired as err:
            got, failure = _peer_lines(err.stdout), f"timed out after {limit}s"
        done = {r["route"] for r in got}
        records += got
        todo = [r for r in todo if r not in done]
        if todo:  # the first missing route is the one that failed; the rest get a fresh process
            records.append({"ok": False, "peer": PEER_NAME, "route": todo[0], "size": label, "batch": batch,
                            "prompt": prompt, "gen": gen, "error": failure})
            todo = todo[1:]
    for r in records:
        r.setdefault("size", label)
        r["is_peer"] = False
    ok = [r for r in records if r.get("ok")]
    if ok:
        max(ok, key=lambda r: r["tokens_per_s"])["is_peer"] = True
    return records


def the_peer(results: dict, size: str, batch: int, prompt: int, gen: int) -> dict | None:
    for r in results.get("peer", []):
        if r.get("is_peer") and (r["size"], r["batch"], r["prompt"], r["gen"]) == (size, batch, prompt, gen):
            return r
    return None


def _ok_points(results: dict) -> list[dict]:
    return [p for p in results["points"] + results["full"] if not p["oom"]]


def _best(pts, model, protocol=None, batch=None, gen=None):
    cands = [p for p in pts if p["model"] == model and (protocol is None or p["protocol"] == protocol)
             and (batch is None or p["batch"] == batch) and (gen is None or p["gen"] == gen)]
    cands.sort(key=lambda p: (p.get("method") == "full", p["tokens_per_s"]), reverse=True)
    return cands[0] if cands else None


def ratios(results: dict) -> list[dict]:
    """At every point where a student and the teacher of its shape were both measured: the
    throughput ratio beside the ratio of their roofline bounds (what the bytes alone predict)."""
    from thinkfast.benchmarks.shapes import MODELS, teacher_of

    pts = _ok_points(results)
    rows = []
    for p in pts:
        if p["model"] not in MODELS or MODELS[p["model"]][1] == "teacher":
            continue
        teacher = teacher_of(p["model"])
        t = next((q for q in pts if q["model"] == teacher and q.get("method") == p.get("method")
                  and (q["protocol"], q["batch"], q["prompt"], q["gen"]) == (p["protocol"], p["batch"], p["prompt"], p["gen"])),
                 None)
        if t is None:
            continue
        rows.append({"shape": MODELS[p["model"]][0], "student": p["model"], "teacher": teacher,
                     "ssm_state_dtype": p.get("ssm_state_dtype"), "protocol": p["protocol"], "batch": p["batch"], "prompt": p["prompt"], "gen": p["gen"],
                     "method": p.get("method"), "teacher_tokens_per_s": t["tokens_per_s"],
                     "student_tokens_per_s": p["tokens_per_s"], "ratio": p["tokens_per_s"] / t["tokens_per_s"],
                     "bound_ratio": p["bound_tokens_per_s"] / t["bound_tokens_per_s"],
                     "teacher_fraction_of_bound": t["fraction_of_bound"],
                     "student_fraction_of_bound": p["fraction_of_bound"]})
    return rows


def state_dtype_speedups(results: dict) -> list[dict]:
    """Wherever a model was measured with more than one SSM state dtype at the same point (same method):
    each one's throughput over the first dtype's, beside the ratio of their roofline bounds."""
    first = results.get("ssm_state_dtypes", [DEFAULT_SSM_STATE_DTYPE])[0]
    pts = _ok_points(results)
    rows = []
    for p in pts:
        if p.get("ssm_state_dtype") in (None, first):
            continue
        base = next((q for q in pts if q.get("ssm_state_dtype") == first and
                     (q["model"], q.get("method"), q["protocol"], q["batch"], q["prompt"], q["gen"]) ==
                     (p["model"], p.get("method"), p["protocol"], p["batch"], p["prompt"], p["gen"])), None)
        if base is None:
            continue
        rows.append({"model": p["model"], "ssm_state_dtype": p["ssm_state_dtype"], "versus": first,
                     "protocol": p["protocol"], "batch": p["batch"], "prompt": p["prompt"], "gen": p["gen"],
                     "method": p.get("method"), "base_tokens_per_s": base["tokens_per_s"],
                     "tokens_per_s": p["tokens_per_s"], "speedup": p["tokens_per_s"] / base["tokens_per_s"],
                     "bound_ratio": p["bound_tokens_per_s"] / base["bound_tokens_per_s"],
                     "base_fraction_of_bound": base["fraction_of_bound"], "fraction_of_bound": p["fraction_of_bound"]})
    return rows


def headline(results: dict) -> dict:
    """Figures of the run's first SSM state dtype (the others are compared in `ssm_state_speedups`)."""
    first = results.get("ssm_state_dtypes", [DEFAULT_SSM_STATE_DTYPE])[0]
    pts = [p for p in _ok_points(results) if p.get("ssm_state_dtype") in (None, first)]
    out = {}
    for p in pts:  # protocol G (the Qwen shapes): every model's fraction of its bound, full runs first
        if p["protocol"] == "G" and p is _best(pts, p["model"], "G", p["batch"], p["gen"]):
            out[f"{p['model']}_G_B{p['batch']}_{p['prompt']}+{p['gen']}_fraction_of_bound"] = p["fraction_of_bound"]
    for b in (256, 512):
        p = _best(pts, "hybrid-3b", "B", b)
        out[f"hybrid-3b_B{b}_fraction_of_bound"] = p and p["fraction_of_bound"]
    top_teacher = max((p["tokens_per_s"] for p in pts if p["model"] == "llama-3b" and p["protocol"] == "B"), default=None)
    for b in (256, 512):
        p = _best(pts, "hybrid-3b", "B", b)
        out[f"hybrid-3b_B{b}_vs_llama-3b_best"] = (p["tokens_per_s"] / top_teacher) if p and top_teacher else None
    from thinkfast.benchmarks.shapes import MODELS

    for peer in results.get("peer", []):
        if not peer.get("is_peer"):
            continue
        out[f"hf_peer_{peer['size']}_B{peer['batch']}_{peer['prompt']}+{peer['gen']}_tokens_per_s"] = peer["tokens_per_s"]
        out[f"hf_peer_{peer['size']}_route"] = peer["route"]
        for model, (size, _) in MODELS.items():
            if size != peer["size"]:
                continue
            cands = [p for p in pts if p["model"] == model and (p["batch"], p["prompt"], p["gen"]) ==
                     (peer["batch"], peer["prompt"], peer["gen"])]
            p = _best(cands, model)
            if p:
                out[f"{model}_{p['protocol']}_B{peer['batch']}_vs_hf_peer"] = p["tokens_per_s"] / peer["tokens_per_s"]
    t512 = [p for p in results["points"] if p["model"] == "llama-3b" and p["protocol"] == "B" and p["batch"] == 512]
    h512 = [p for p in results["points"] if p["model"] == "hybrid-3b" and p["protocol"] == "B" and p["batch"] == 512]
    out["llama-3b_B512_256+4096_fits"] = (not t512[0]["oom"]) if t512 else None
    out["hybrid-3b_B512_256+4096_fits"] = (not h512[0]["oom"]) if h512 else None
    return {k: v for k, v in out.items() if v is not None}


def _hardware(device: str) -> tuple[dict, dict]:
    """(device facts, measured copy bandwidth and matmul rate) for the roofline."""
    props = torch.cuda.get_device_properties(0)
    hw = {"bandwidth": roofline.measure_copy_bandwidth(), "flops": roofline.measure_matmul_flops()}
    return {"gpu": props.name, "gpu_memory_bytes": props.total_memory}, hw


def run_speed(out_dir: str, quick: bool = False, models: list[str] | None = None, peer: bool = True,
              peer_timeout: int = 180, protocol: str | None = None, device: str = "cuda",
              ssm_state_dtypes: list[str] | None = None) -> dict:
    """`ssm_state_dtypes`: every model with Mamba layers is measured once per state dtype (e.g. ["fp32", "bf16"]:
    one run compares them); all-attention models once.  `device` other than cuda only for the CPU smoke test
    (with `build_model`/`_hardware` replaced)."""
    state_dtypes = list(dict.fromkeys(ssm_state_dtypes or [DEFAULT_SSM_STATE_DTYPE]))
    if device == "cuda" and not torch.cuda.is_available():
        from thinkfast.errors import ThinkfastError

        raise ThinkfastError("the speed benchmark needs a CUDA GPU")
    name = protocol or ("quick" if quick else "full")
    cfg = PROTOCOL_SETS[name]
    models = models or cfg["models"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    facts, hw = _hardware(device)
    _cleanup()  # give the probes' buffers back, or the planner sees less free memory
    results = {
        "command": "thinkfast bench speed " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "speed"] else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), **facts, "torch": torch.__version__, "python": platform.python_version(),
        "measured_copy_bandwidth_bytes_per_s": hw["bandwidth"], "measured_bf16_matmul_flops": hw["flops"],
        "protocol_set": name, "quick": name == "quick", "config": cfg, "ssm_state_dtypes": state_dtypes,
        "models": {}, "points": [], "full": [], "peer": [],
    }
    try:
        import transformers

        results["transformers"] = transformers.__version__
    except ImportError:
        pass
    for model_name in models:
        log.info("building %s", model_name)
        model = build_model(model_name, device=device)
        for state_dtype in state_dtypes:
            numbers = roofline.model_numbers(model, state_dtype)
            if numbers["ssm_state_dtype"] is None and state_dtype != state_dtypes[0]:
                continue  # no Mamba layers: the state dtype changes nothing
            results["models"].setdefault(model_name, {**numbers, "description": describe(model_name)})
            for proto, p in cfg["protocols"].items():
                if not runs_protocol(p, model_name):
                    continue
                pts = sweep(model, model_name, numbers, hw, proto, p["prompt"], p["gens"], p["batches"], cfg)
                if len(p["gens"]) > 1 and len(p["batches"]) == 1:
                    pts = _retry_shorter(model, model_name, numbers, hw, proto, p, cfg, pts)
                results["points"].extend(pts)
            for run_model, proto, batch, gen in cfg["full_runs"]:
                if run_model == model_name:
                    prompt = cfg["protocols"][proto]["prompt"]
                    results["full"].append(full_run(model, model_name, numbers, hw, proto, prompt, gen, batch))
        del model
        _cleanup()
        _write(results, out)  # partial results survive a later failure
    if peer:
        for spec in cfg["peer"]:
            log.info("peer: HF generate, %s, batch %d, %d+%d, every route", spec["size"], spec["batch"],
                     spec["prompt"], spec["gen"])
            records = run_peer(spec["size"], spec["batch"], spec["prompt"], spec["gen"], peer_timeout,
                               spec.get("routes"), device=device)
            for r in records:
                log.info("  route %s: %s", r["route"],
                         f"{r['tokens_per_s']:.0f} tok/s (compile {r['compile_s']:.0f}s)" if r.get("ok") else r.get("error"))
            results["peer"].extend(records)
            _write(results, out)
    results["ratios"] = ratios(results)
    results["ssm_state_speedups"] = state_dtype_speedups(results)
    results["headline"] = headline(results)
    results["elapsed_s"] = time.perf_counter() - started
    _write(results, out)
    return results


def _retry_shorter(model, name, numbers, hw, protocol, p, cfg, pts):
    """Length sweep: if the longest generation does not fit at this batch, time the ones that do."""
    ok = [x for x in pts if not x["oom"]]
    if ok or len(p["gens"]) == 1:
        return pts
    from thinkfast.inference.params import resolve_ssm_state_dtype
    from thinkfast.inference.planner import plan_slots

    batch = p["batches"][0]
    ssm_dtype = resolve_ssm_state_dtype(_state_dtype(numbers))
    fitting = [gen for gen in sorted(p["gens"])
               if plan_slots(model, p["prompt"] + gen, torch.bfloat16, _device_of(model), batch,
                             ssm_dtype=ssm_dtype).fit >= batch]
    if not fitting:
        return pts
    short = sweep(model, name, numbers, hw, protocol, p["prompt"], fitting, [batch], cfg)
    by_gen = {x["gen"]: x for x in short}
    return [by_gen.get(x["gen"], x) for x in pts]


def _write(results: dict, out: Path) -> None:
    from thinkfast.benchmarks.report import write_markdown, write_plots

    results["ratios"] = ratios(results)
    results["ssm_state_speedups"] = state_dtype_speedups(results)
    (out / "speed.json").write_text(json.dumps(results, indent=1, default=str))
    try:
        write_plots(results, out)
    except Exception as err:  # noqa: BLE001  (a plotting problem must not lose the numbers)
        log.warning("plots failed: %s", err)
    write_markdown(results, out)
