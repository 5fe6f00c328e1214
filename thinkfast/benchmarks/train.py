"""`thinkfast bench train`: tokens/s, model-FLOPs utilisation and peak memory of each recipe's step.

    thinkfast bench train --out DIR [--quick] [--shapes qwen-0.5b,llama-1b,llama-3b]
                          [--recipes distill,sft,mohawk1,mohawk2,mohawk3]

Models: random weights at the teachers' real shapes (`SHAPES`), students from the same config path as
`convert` (`student_config_from_teacher`): the hybrid keeps the listed attention layers (Mamba-1
elsewhere), the MOHAWK student is the pure discrete-Mamba-2 one.  Data: random tokens in packed rows of
`seq_len`, each row a few documents (position restarts, so document-aware attention and state resets
run as in training), every position but each document's last trained.  The step is the trainer's own
`train_step` on the recipe's own task (`TokenLossTask` / `MohawkLayerTask`), module, loss, optimizer
(`optimizer_for`), autocast and teacher dtype, one process, one GPU.

Timing: `warmup` steps (Triton/fla compilation), a sync, then `steps` steps between two CUDA events
(nothing in the step waits for the GPU), so tokens/s is the steady-state throughput.  Peak memory is
`torch.cuda.max_memory_allocated` over those steps with only the models that step needs alive.  MFU:
`train_flops.py` (FLOP convention) over the bf16 matmul rate measured here (8192³ matmuls, CUDA events).
A step that runs out of memory is retried with half the rows per micro-batch and twice the accumulation
(same tokens per step) and the record says so.

Also one kernel record: the Mamba-1 selective scan forward + backward at the 3B layer shape (batch 4 x
4096) against that layer's in_proj + out_proj matmuls forward + backward (the issue's comparison).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import logging
import math
import platform
import random
import sys
import time
from pathlib import Path

import torch

from thinkfast.benchmarks import train_flops

log = logging.getLogger("thinkfast.bench")

# in the order they run: SFT before the teacher is built, so its peak memory is its own
RECIPES = ("sft", "distill", "mohawk1", "mohawk2", "mohawk3")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


@dataclasses.dataclass(frozen=True)
class TrainShape:
    family: str  # HF model_type of the teacher: qwen2 | llama
    hf: dict  # the teacher's HF config fields
    attention_layers: tuple[int, ...]  # kept by the hybrid
    micro_batch: int = 8  # rows per forward (the step has `rows` rows: grad_accum = rows / micro_batch)
    scan_shape: str = "3b"  # kernels.SHAPES entry of the selective-scan record


SHAPES = {
    # Qwen2.5-0.5B(-Instruct / -Coder): q/k/v biases, tied head; hybrid keeps 6 of 24 layers (spread)
    "qwen-0.5b": TrainShape("qwen2", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                          num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                          tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                          max_position_embeddings=32768),
                            (3, 7, 11, 15, 19, 23)),
    "llama-1b": TrainShape("llama", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                         head_dim=64, tie_word_embeddings=True, rope_theta=500000.0,
                                         rope_scaling=LLAMA3_ROPE, rms_norm_eps=1e-5, max_position_embeddings=131072),
                           (3, 7, 11, 15)),
    "llama-3b": TrainShape("llama", dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                                         num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                                         head_dim=128, tie_word_embeddings=True, rope_theta=500000.0,
                                         rope_scaling=LLAMA3_ROPE, rms_norm_eps=1e-5, max_position_embeddings=131072),
                           (3, 8, 13, 18, 23, 27), micro_batch=4),
    # CI size: runs on a CPU in seconds
    "tiny": TrainShape("qwen2", dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                     rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512),
                       (1,), micro_batch=2, scan_shape="tiny"),
}
ALIASES = {"0.5b": "qwen-0.5b", "1b": "llama-1b", "3b": "llama-3b"}

FULL = {"warmup": 2, "steps": 5, "rows": 8, "seq_len": 2048, "time_budget_s": None}
QUICK = {"warmup": 1, "steps": 2, "rows": 8, "seq_len": 2048, "time_budget_s": 150.0}
PROFILE_STEPS = 2  # `--profile`: steps under torch.profiler after the timed ones


def resolve_shapes(names: list[str]) -> list[str]:
    from thinkfast.errors import ThinkfastError

    out = [ALIASES.get(n, n) for n in names]
    bad = [n for n in out if n not in SHAPES]
    if bad:
        raise ThinkfastError(f"unknown shape(s) {bad}; choose from {list(SHAPES)} (aliases {list(ALIASES)})")
    return out


def resolve_recipes(names: list[str]) -> list[str]:
    from thinkfast.errors import ThinkfastError

    bad = [n for n in names if n not in RECIPES]
    if bad:
        raise ThinkfastError(f"unknown recipe(s) {bad}; choose from {list(RECIPES)}")
    return [r for r in RECIPES if r in names]  # the order the models are built in


# --------------------------------------------------------------------------- models and data
def hf_config(shape: TrainShape):
    from transformers import LlamaConfig, Qwen2Config

    return (Qwen2Config if shape.family == "qwen2" else LlamaConfig)(**shape.hf)


def build_models(shape: TrainShape, kind: str, device: torch.device, dtype: torch.dtype | None = None):
    """kind: teacher (all attention) | hybrid | pure; random weights, built on the device."""
    from thinkfast.convert import StudentSpec, student_config_from_teacher
    from thinkfast.models import ThinkfastForCausalLM

    target = {"teacher": "attention", "hybrid": "hybrid", "pure": "llamba"}[kind]
    layers = list(shape.attention_layers) if kind == "hybrid" else None
    config = student_config_from_teacher(hf_config(shape), StudentSpec(target, attention_layers=layers))
    torch.manual_seed(0)
    with torch.device(device):
        model = ThinkfastForCausalLM(config)
    return model.to(dtype) if dtype is not None else model.float()


def make_rows(vocab: int, rows: int, seq_len: int, seed: int = 0) -> tuple[dict, list[list[int]]]:
    """Packed rows of random documents (2-4 per row, lengths random, each row filled exactly)."""
    from thinkfast.training.data import Document
    from thinkfast.training.packing import build_row, collate

    rng = random.Random(seed)
    built, lengths = [], []
    for _ in range(rows):
        docs = []
        cuts = sorted(rng.sample(range(seq_len // 8, seq_len - seq_len // 8), rng.randint(1, 3))) if seq_len >= 16 else []
        bounds = [0, *cuts, seq_len]
        row_lengths = [b - a for a, b in zip(bounds, bounds[1:]) if b > a]
        for n in row_lengths:
            ids = [rng.randrange(vocab) for _ in range(n)]
            docs.append(Document(input_ids=ids, labels=list(ids)))
        built.append(build_row(docs, seq_len, pad_id=0))
        lengths.append(row_lengths)
    return collate(built), lengths


def split_micro(batch: dict, micro: int) -> list[dict]:
    rows = batch["input_ids"].shape[0]
    return [{k: v[i : i + micro].contiguous() for k, v in batch.items()} for i in range(0, rows, micro)]


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_region(fn, device: torch.device, reps: int) -> float:
    """Seconds per call of `fn` (already warm), CUDA events on a GPU, perf_counter elsewhere."""
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def measure_matmul_flops(device: torch.device) -> dict:
    """The matmul rate MFU is quoted against: bf16 8192³ on a GPU (fp32 256³ on a CPU, for the smoke test)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (256, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(time_region(lambda: a @ b, device, 20 if device.type == "cuda" else 3) for _ in range(3))
    del a, b
    return {"matmul_flops": 2 * n**3 / best, "matmul_n": n, "matmul_dtype": str(dtype).replace("torch.", "")}


def scan_record(shape_name: str, device: torch.device, batch: int, length: int) -> dict:
    """Mamba-1 selective scan fwd+bwd vs the layer's in_proj + out_proj matmuls fwd+bwd (bench kernels'
    comparison and timer: `do_bench` medians with the L2 flushed between calls on a GPU; through
    `dispatch.selective_scan` as the model calls it)."""
    from thinkfast.benchmarks.kernels import SHAPES as KSHAPES
    from thinkfast.benchmarks.kernels import _scan_inputs, fwd_bwd_fn, kernel_timer, time_projections
    from thinkfast.ops import dispatch

    shape = KSHAPES[shape_name]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dm, d = shape.d_model, shape.d_inner
    proj_out = 2 * d + 2 * shape.d_xb + math.ceil(dm / 16)  # z | x | B | C | dt_low
    timer = kernel_timer(device)
    proj_ms, _ = time_projections(shape, batch * length, device, dtype, timer)
    t = _scan_inputs(batch, length, shape, device, dtype, True)
    gy = torch.randn(batch, length, d, device=device, dtype=dtype)
    fwd_bwd = fwd_bwd_fn(dispatch.selective_scan, gy, **t)
    packed = _scan_inputs(batch, length, shape, device, dtype, True, packed=True)  # training rows: with resets
    packed_fwd_bwd = fwd_bwd_fn(dispatch.selective_scan, gy, **packed)

    def fwd():
        with torch.no_grad():
            dispatch.selective_scan(**t)

    fwd_bwd_ms = timer(fwd_bwd)
    fwd_ms = timer(fwd)
    packed_ms = timer(packed_fwd_bwd)
    return {"kernel": "selective_scan", "shape": shape_name, "batch": batch, "length": length,
            "dtype": str(dtype).replace("torch.", ""), "fwd_ms": round(fwd_ms, 4), "fwd_bwd_ms": round(fwd_bwd_ms, 4),
            "projections_ms": round(proj_ms, 4), "scan_over_projections": round(fwd_bwd_ms / proj_ms, 3),
            "packed_fwd_bwd_ms": round(packed_ms, 4), "packed_over_projections": round(packed_ms / proj_ms, 3),
            "in_proj": f"{dm}->{proj_out}", "out_proj": f"{d}->{dm}"}


# --------------------------------------------------------------------------- one recipe step
def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_task(recipe: str, student, teacher, loss):
    """The recipe's task as recipes.py builds it (`loss`: the config's LossConfig; MOHAWK stage 3 and SFT
    get the shipped configs' forward KL and CE through `train_config`)."""
    from thinkfast.training.tasks import MohawkLayerTask, TokenLossTask

    if recipe in ("distill", "sft"):
        return TokenLossTask(student, loss, teacher if recipe == "distill" else None)
    if recipe == "mohawk3":
        for p in student.parameters():  # as run_mohawk: stage 3 trains everything
            p.requires_grad_(True)
        return TokenLossTask(student, loss, teacher)
    stage = int(recipe[-1])
    layers = [i for i, m in enumerate(student.config.layer_mixers) if m != "attention"]
    return MohawkLayerTask(student, teacher, stage, layers)


def _attempt(recipe, student, teacher, micros, cfg, device, warmup: int, steps: int, profile_steps: int = 0) -> dict:
    """Build the recipe's task and optimizer, run `warmup` steps, time `steps`, then (profile_steps > 0)
    profile that many more; everything it allocates dies with this frame."""
    from thinkfast.training.distributed import DistInfo
    from thinkfast.training.trainer import UpdateGuard, autocast_for, optimizer_for, train_step

    info = DistInfo()
    task = make_task(recipe, student, teacher, cfg.loss)
    module = task.module.to(device)
    module.train()
    optimizer, scheduler = optimizer_for(module, cfg, info, cfg.optim.lr, max_steps=10_000)
    params = [p for p in module.parameters() if p.requires_grad]
    autocast = autocast_for(cfg.dtype, device)
    guard = UpdateGuard(optimizer, device)
    holder = {}

    def step():
        holder["values"] = train_step(task, module, micros, optimizer, scheduler, params, cfg, info, device, autocast,
                                      guard)

    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    sec = time_region(step, device, steps)
    values = holder["values"].tolist()  # [loss_sum, *terms, tokens, positions, grad_norm, skipped]
    got = {"seconds": sec, "warmup_s": warm_s, "loss": values[0] / max(values[-3], 1.0),
           "skipped_update": bool(values[-1]), "fused_adamw": guard.on_device,
           "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
           "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None}
    if profile_steps > 0:
        try:
            got["profile"] = profile_steps_of(step, device, profile_steps)
        except Exception as err:  # noqa: BLE001  (the timed numbers stand without the profile, even on OOM)
            got["profile"] = {"error": repr(err)[:300]}
    return got


def profile_steps_of(step, device: torch.device, steps: int, top: int = 25) -> dict:
    """torch.profiler over `steps` more calls of `step` (already warm): the top kernels (CUDA) or ops (CPU) by
    self time, and every kernel's time grouped by category (`profile_table.CATEGORIES`); shares are of the
    summed self time, `busy_ms_per_step` that sum (on a GPU: step time minus the device's idle gaps)."""
    from torch.profiler import ProfilerActivity, profile

    from thinkfast.benchmarks.profile_table import categories, copy_sources, kernel_table

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    events = prof.key_averages()
    rows = kernel_table(events, steps, cuda=cuda)
    aten_ops = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    return {"steps": steps, "activity": "cuda" if cuda else "cpu", "wall_ms_per_step": round(wall_ms, 3),
            "busy_ms_per_step": sum(k["ms_per_step"] for k in rows), "kernels_total": len(rows),
            "aten_ops_per_step": aten_ops, "categories": categories(rows), "top": rows[:top],
            "copy_sources": copy_sources(prof.key_averages(group_by_input_shape=True), steps)}


def bench_step(recipe: str, shape_name: str, student, teacher, batch: dict, doc_lengths, micro: int,
               device: torch.device, warmup: int, steps: int, peak_flops: float, cfg, profile_steps: int = 0) -> dict:
    """One record: the recipe's step at this shape (halving the micro-batch on out-of-memory)."""
    flops = train_flops.step_flops(recipe, student, teacher, doc_lengths)
    rows, seq_len = batch["input_ids"].shape
    record = {"recipe": recipe, "shape": shape_name, "rows": rows, "seq_len": seq_len,
              "tokens_per_step": flops["tokens"], "documents": sum(len(r) for r in doc_lengths),
              "flops_per_step": flops["total"],
              "flops_per_token": {"student": flops["student"] / flops["tokens"],
                                  "teacher": flops["teacher"] / flops["tokens"]},
              "student_matmul_params": train_flops.model_matmul_weights(student),
              "teacher_matmul_params": train_flops.model_matmul_weights(teacher) if teacher is not None else 0}
    while True:
        try:
            got = _attempt(recipe, student, teacher, split_micro(batch, micro), cfg, device, warmup, steps,
                           profile_steps)
            break
        except Exception as err:  # noqa: BLE001
            if not _is_oom(err):
                raise
            record.setdefault("oom_at_micro_batch", []).append(micro)
            message = str(err)[:200]
        for p in student.parameters():  # the failed attempt's gradients
            p.grad = None
        _cleanup(device)
        if micro == 1:
            record.update(oom=True, error=f"out of memory at 1 row per micro-batch: {message}")
            return record
        log.warning("%s %s: out of memory at %d rows per micro-batch; retrying with %d", recipe, shape_name, micro,
                    micro // 2)
        micro //= 2
    sec = got.pop("seconds")
    record.update(micro_batch_size=micro, grad_accum=-(-rows // micro), step_ms=round(sec * 1e3, 2),
                  tokens_per_s=flops["tokens"] / sec, mfu=flops["total"] / sec / peak_flops, oom=False, **got)
    _cleanup(device)
    return record


def train_config(recipe: str, overrides: list[str] | None = None):
    """The TrainConfig a recipe's step runs with (defaults, as the recipes), plus `key=value` overrides
    (`compile=true`, `loss.chunk_tokens=2048`, `optim.grad_clip=0`, ...)."""
    from thinkfast.config import load_config
    from thinkfast.training.config import TrainConfig

    base = {"recipe": "mohawk" if recipe.startswith("mohawk") else recipe, "teacher": "random", "data": {"path": "random"},
            "student": {"path": "random"} if recipe == "sft" else {"target": "llamba"} if recipe.startswith("mohawk") else {},
            "stages": [{"stage": int(recipe[-1])}] if recipe.startswith("mohawk") else [], "progress": False}
    if recipe in ("sft", "mohawk3"):
        base["loss"] = {"reverse_kl": 0.0, **({"ce": 1.0} if recipe == "sft" else {"forward_kl": 1.0})}
    return load_config(TrainConfig, base, list(overrides or []))


# --------------------------------------------------------------------------- the run
def run_train_bench(out_dir: str, shapes: list[str], recipes: list[str], quick: bool = False,
                    warmup: int | None = None, steps: int | None = None, rows: int | None = None,
                    seq_len: int | None = None, time_budget_s: float | None = None, scan: bool = True,
                    overrides: list[str] | None = None, device: str | None = None, command: str | None = None,
                    profile: bool = False) -> dict:
    cfg = dict(QUICK if quick else FULL)
    for key, value in dict(warmup=warmup, steps=steps, rows=rows, seq_len=seq_len, time_budget_s=time_budget_s).items():
        if value is not None:
            cfg[key] = value
    overrides = list(overrides or [])
    for recipe in recipes:  # a bad override fails before anything is built
        train_config(recipe, overrides)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    peak = measure_matmul_flops(device)
    results = {
        "command": command or "thinkfast bench train " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "train"] else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
        "torch": torch.__version__, "python": platform.python_version(),
        "measured_matmul_flops": peak["matmul_flops"], "matmul_probe": peak,
        "quick": quick, "config": {**cfg, "shapes": shapes, "recipes": recipes, "overrides": overrides,
                                   "profile_steps": PROFILE_STEPS if profile else 0},
        "mfu_convention": "6*N_student + 2*N_teacher per token (N: every matmul weight, LM head included, embedding "
                          "lookup excluded) + document-aware causal attention scores; see thinkfast/benchmarks/train_flops.py",
        "records": [],
    }
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError:
        pass
    results["backends"] = _backends(device)
    _write(results, out)

    def over_budget() -> bool:
        return cfg["time_budget_s"] is not None and time.perf_counter() - started > cfg["time_budget_s"]

    if scan:
        scan_shape = SHAPES[shapes[0]].scan_shape if all(SHAPES[s].scan_shape == "tiny" for s in shapes) else "3b"
        batch, length = (4, 4096) if scan_shape != "tiny" else (1, 32)
        try:
            results["records"].append(scan_record(scan_shape, device, batch, length))
        except Exception as err:  # noqa: BLE001  (a kernel problem must not lose the training numbers)
            results["records"].append({"kernel": "selective_scan", "shape": scan_shape, "error": repr(err)[:300]})
        _cleanup(device)
        _write(results, out)

    # the hybrid recipes at every shape first (the issue's headline), then the MOHAWK stages; models are
    # built per (phase, shape) and freed after it, so each step's peak memory holds only what it needs
    phases = [("hybrid", [r for r in recipes if r in ("sft", "distill")]),
              ("pure", [r for r in recipes if r.startswith("mohawk")])]
    rows_by_shape = {}
    for kind, group in phases:
        for shape_name in shapes if group else []:
            shape = SHAPES[shape_name]
            tdtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # recipes' teacher_dtype "auto"
            if shape_name not in rows_by_shape:
                rows_by_shape[shape_name] = make_rows(shape.hf["vocab_size"], cfg["rows"], cfg["seq_len"])
            batch, doc_lengths = rows_by_shape[shape_name]
            micro = min(shape.micro_batch, cfg["rows"])
            teacher = student = None
            for recipe in group:
                if over_budget():
                    results["records"].append({"recipe": recipe, "shape": shape_name, "skipped": "time budget"})
                    continue
                log.info("%s %s", shape_name, recipe)
                t0 = time.perf_counter()
                try:
                    if student is None:
                        student = _student(shape, kind, device, train_config(recipe, overrides))
                    if recipe != "sft" and teacher is None:
                        teacher = _teacher(shape, device, tdtype, train_config(recipe, overrides))
                    rmicro = 1 if recipe == "mohawk1" else micro  # stage 1 holds (heads, L, L) matrices per layer
                    record = bench_step(recipe, shape_name, student, teacher if recipe != "sft" else None, batch,
                                        doc_lengths, rmicro, device, cfg["warmup"], cfg["steps"], peak["matmul_flops"],
                                        train_config(recipe, overrides), PROFILE_STEPS if profile else 0)
                except Exception as err:  # noqa: BLE001  (recorded: one failing recipe must not lose the others)
                    log.exception("%s %s failed", shape_name, recipe)
                    record = {"recipe": recipe, "shape": shape_name, "oom": _is_oom(err), "error": repr(err)[:500]}
                record["wall_s"] = round(time.perf_counter() - t0, 1)
                results["records"].append(record)
                if "tokens_per_s" in record:
                    log.info("%s %s: %.0f tokens/s, MFU %.1f%%, peak %.1f GB", shape_name, recipe, record["tokens_per_s"],
                             100 * record["mfu"], record["peak_memory_gb"] or 0.0)
                _write(results, out)
            teacher = student = None
            _cleanup(device)
    results["elapsed_s"] = time.perf_counter() - started
    _write(results, out)
    return results


def _backends(device: torch.device) -> dict:
    """Which kernels the steps run: Triton (scan, conv, loss), fla (discrete Mamba-2) and its backward."""
    from thinkfast.ops import dispatch

    out = {"triton": dispatch.triton_available(), "fla": dispatch.fla_available(),
           "forced_reference": dispatch.use_reference()}
    if out["triton"]:
        from thinkfast.ops.triton.selective_scan import resolve_solver

        out["scan_solver"] = resolve_solver()  # the Mamba-1 scan's in-chunk solver (docs/kernels.md)
    if device.type == "cuda" and out["fla"]:
        try:
            from thinkfast.ops.triton.ssd_fla import fla_backward_ok

            out["fla_backward"] = fla_backward_ok(device)  # False: fla forward + the PyTorch chunked-SSD backward run
        except Exception as err:  # noqa: BLE001
            out["fla_backward"] = repr(err)[:200]
    return out


def _student(shape: TrainShape, kind: str, device: torch.device, cfg):
    """As recipes.py: fp32 master weights, then `_finish_student` (activation checkpointing, fp32 SSM params)."""
    from thinkfast.training.recipes import _finish_student

    return _finish_student(build_models(shape, kind, device), cfg)


def _teacher(shape: TrainShape, device: torch.device, dtype: torch.dtype, cfg):
    """As recipes.teacher_stack: all-attention stack in the teacher dtype, eval, frozen, glue compiled with
    `compile: true`."""
    from thinkfast.training.recipes import freeze_teacher

    return freeze_teacher(build_models(shape, "teacher", device, dtype), cfg.compile)


# --------------------------------------------------------------------------- output
def _fmt(x, spec=",.0f"):
    return "—" if x is None else format(x, spec)


def markdown(results: dict) -> str:
    lines = [
        f"# Training throughput — {results['device']}, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"torch {results['torch']}, triton {results.get('triton', '—')}; measured {results['matmul_probe']['matmul_dtype']} "
        f"matmul rate {results['measured_matmul_flops'] / 1e12:.3g} TFLOP/s (the MFU denominator). "
        f"Rows of {results['config']['seq_len']} packed tokens, {results['config']['rows']} per step; "
        f"MFU counts {results['mfu_convention']}.  Kernels: {results.get('backends', {})}; overrides "
        f"{results['config'].get('overrides') or 'none'}.",
        "",
        "| shape | recipe | tokens/s | MFU | step ms | peak GB | micro x accum | GFLOP/token (student + teacher) | note |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results["records"]:
        if "kernel" in r:
            continue
        if "tokens_per_s" not in r:
            note = r.get("skipped") or r.get("error", "")[:100]
            lines.append(f"| {r['shape']} | {r['recipe']} | — | — | — | — | — | — | {note} |")
            continue
        fpt = r["flops_per_token"]
        note = f"OOM retries at micro {r['oom_retries']}" if r.get("oom_retries") else ""
        lines.append(
            f"| {r['shape']} | {r['recipe']} | {_fmt(r['tokens_per_s'])} | {r['mfu']:.1%} | {r['step_ms']:.0f} | "
            f"{_fmt(r['peak_memory_gb'], '.1f')} | {r['micro_batch_size']} x {r['grad_accum']} | "
            f"{fpt['student'] / 1e9:.3g} + {fpt['teacher'] / 1e9:.3g} | {note} |")
    for r in results["records"]:
        if r.get("kernel") == "selective_scan":
            lines += ["", "## Mamba-1 selective scan vs the layer's projections", ""]
            if "error" in r:
                lines.append(f"{r['shape']}: error {r['error']}")
            else:
                lines.append(
                    f"{r['shape']} layer, batch {r['batch']} x {r['length']}, {r['dtype']}: scan fwd {r['fwd_ms']} ms, "
                    f"fwd+bwd {r['fwd_bwd_ms']} ms vs in_proj ({r['in_proj']}) + out_proj ({r['out_proj']}) fwd+bwd "
                    f"{r['projections_ms']} ms: {r['scan_over_projections']}x."
                    + (f" With the resets of packed training rows: fwd+bwd {r['packed_fwd_bwd_ms']} ms, "
                       f"{r['packed_over_projections']}x." if "packed_fwd_bwd_ms" in r else ""))
    for r in results["records"]:
        if "profile" in r:
            lines += ["", *profile_markdown(r)]
    return "\n".join(lines) + "\n"


def profile_markdown(r: dict, top: int = 15) -> list[str]:
    """A record's `--profile` section: time by category, then the top kernels (ops on a CPU)."""
    from thinkfast.benchmarks.profile_table import category_markdown, copy_markdown, markdown_rows

    p = r["profile"]
    lines = [f"## Profile: {r['shape']} {r['recipe']}", ""]
    if "error" in p:
        return lines + [f"profiling failed: {p['error']}"]
    unit = "kernels" if p["activity"] == "cuda" else "CPU ops"
    lines += [f"{p['steps']} profiled steps; timed step {r['step_ms']:.1f} ms, profiled {p['wall_ms_per_step']:.1f} ms "
              f"(wall, profiler overhead included); {unit} busy {p['busy_ms_per_step']:.1f} ms per step "
              f"({p['kernels_total']} distinct {unit}). Shares are of the busy time.", "",
              *category_markdown(p["categories"]), "", *markdown_rows(p["top"], top, label=unit[:-1])]
    if p.get("copy_sources"):  # absent in profiles recorded before they were collected
        lines += ["", f"The host issued {p['aten_ops_per_step']:,.0f} aten ops per step (nested ones included). "
                  "Copies by op and input shapes (time of what each launched):", "", *copy_markdown(p["copy_sources"])]
    return lines


def _write(results: dict, out: Path) -> None:
    (out / "bench_train.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "bench_train.md").write_text(markdown(results))
