"""MOHAWK stages 1 and 2 at the papers' shapes: peak GPU memory and tokens/s of one training step.

Random weights: a Llama-3.2-1B/3B-shaped teacher (all attention, bf16, as `teacher_dtype: auto`) and
its converted-shape pure student (discrete Mamba-2 with the teacher's heads, head_dim = d_state =
head_dim, fp32 master weights, bf16 autocast), every layer trained, the shipped micro-batch (8 rows of
2048 tokens), activation checkpointing as the shipped configs set it.  One step = teacher layer
inputs/outputs + the task's loss + backward + clip + AdamW step, exactly as `training.trainer` does it.

    thinkfast bench mohawk --out DIR [--shapes 1b,3b] [--stages 1,2] [--steps 3] [--chunks 32]
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

import torch

from thinkfast.benchmarks.shapes import COMMON, TEACHERS
from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

SHAPES = {
    **TEACHERS,
    # smoke test on CPU: the same code path at toy size
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=128),
}


def _configs(shape: str) -> tuple[ThinkfastConfig, ThinkfastConfig]:
    base = {**COMMON, **SHAPES[shape]}
    if shape == "tiny":
        base["vocab_size"] = 96
    layers, heads, hd = base["num_hidden_layers"], base["num_attention_heads"], base["head_dim"]
    teacher = ThinkfastConfig(**base, layer_mixers=["attention"] * layers)
    pure = {"n_v_heads": heads, "n_qk_heads": heads, "head_dim": hd, "d_state": hd}  # what `convert` builds
    student = ThinkfastConfig(**base, layer_mixers=["discrete_mamba2"] * layers, discrete_mamba2=pure)
    return teacher, student


def _build(config: ThinkfastConfig, device, dtype) -> ThinkfastForCausalLM:
    with torch.device(device):
        model = ThinkfastForCausalLM(config)
    return model.to(dtype).cast_ssm_params_fp32()


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def run_one(shape: str, stage: int, steps: int, batch: int, length: int, chunk: int, device: torch.device,
            layers: list[int] | None = None) -> dict:
    """Time `steps` steps (after one warm-up step) of MOHAWK `stage` at `shape`; -> a result row."""
    from thinkfast.training.config import OptimConfig
    from thinkfast.training.schedule import build_optimizer
    from thinkfast.training.tasks import MohawkLayerTask
    from thinkfast.training.trainer import autocast_for

    t_cfg, s_cfg = _configs(shape)
    row = {"shape": shape, "stage": stage, "batch": batch, "length": length, "matrix_chunk": chunk if stage == 1 else None,
           "layers": s_cfg.num_hidden_layers if layers is None else len(layers), "heads": s_cfg.num_attention_heads,
           "head_dim": s_cfg.head_dim}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    teacher = student = task = optimizer = None
    torch.manual_seed(0)  # the same random teacher and student for every row of a shape
    try:
        teacher = _build(t_cfg, device, torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = _build(s_cfg, device, torch.float32).train()
        student.activation_checkpointing = True
        layers = list(range(s_cfg.num_hidden_layers)) if layers is None else layers
        task = MohawkLayerTask(student, teacher, stage, layers, matrix_chunk=chunk)
        module = task.module
        optimizer = build_optimizer(module.named_parameters(), OptimConfig(lr=1e-5), no_decay=task.no_decay)
        params = [p for p in module.parameters() if p.requires_grad]
        row["trainable_params"] = sum(p.numel() for p in params)
        row["model_gib"] = _peak_gib(device)
        autocast = autocast_for("auto", device)
        gen = torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(0, s_cfg.vocab_size, (batch, length), generator=gen).to(device)
        batch_dict = {"input_ids": ids, "position_ids": torch.arange(length, device=device).expand(batch, length),
                      "valid": torch.ones(batch, length, dtype=torch.bool, device=device)}
        count = task.count(batch_dict)
        times, losses = [], []
        for step in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            teacher_out = task.teacher_outputs(batch_dict)
            with autocast():
                loss, _ = module(batch_dict, teacher_out)
            (loss / count).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del teacher_out
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:  # the first step compiles kernels and allocates the optimizer state
                times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()) / count)
        step_s = statistics.median(times)
        row.update(ok=True, step_s=round(step_s, 4), tokens_per_s=round(batch * length / step_s, 1),
                   peak_gib=round(_peak_gib(device), 2), loss_first=losses[0], loss_last=losses[-1])
    except torch.cuda.OutOfMemoryError as err:
        row.update(ok=False, error="out of memory", peak_gib=round(_peak_gib(device), 2), detail=str(err)[:300])
    finally:
        del teacher, student, task, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# MOHAWK stages 1-2 at real shapes ({meta['device']}, {meta['date']})", "",
             f"Command: `{meta['command']}` (torch {meta['torch']}, stage-2 SSD scan: {meta['ssd_backend']})", "",
             "| shape | stage | rows x tokens | layers | matrix_chunk | trainable params | peak GiB | step s | tokens/s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        chunk = "-" if r["matrix_chunk"] is None else r["matrix_chunk"]
        if r.get("ok"):
            lines.append(f"| {r['shape']} | {r['stage']} | {r['batch']} x {r['length']} | {r['layers']} | {chunk} | "
                         f"{r['trainable_params'] / 1e6:,.0f}M | {r['peak_gib']} | {r['step_s']} | {r['tokens_per_s']:,.0f} |")
        else:
            lines.append(f"| {r['shape']} | {r['stage']} | {r['batch']} x {r['length']} | {r['layers']} | {chunk} | - | "
                         f"{r['error']} (peak {r['peak_gib']}) | - | - |")
    return "\n".join(lines) + "\n"


def run(out: str | Path, shapes=("1b", "3b"), stages=(1, 2), steps: int = 3, batch: int = 8, length: int = 2048,
        chunks=(32,), device: str | None = None, command: str = "") -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    from thinkfast.ops import dispatch

    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "command": command,
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "ssd_backend": "fla" if dev.type == "cuda" and dispatch.fla_available() else "reference"}
    rows = []
    for shape in shapes:
        for stage in stages:
            for chunk in (chunks if stage == 1 else (None,)):
                row = run_one(shape, stage, steps, batch, length, chunk or 0, dev)
                rows.append(row)
                print(json.dumps(row), flush=True)
                (out / "mohawk.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "mohawk.md").write_text(_markdown(rows, meta))
    return rows
