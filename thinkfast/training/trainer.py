"""The one training loop every recipe uses.

A recipe hands over a `Task`:
    task.module                       nn.Module to train; module(batch, teacher_out) -> (loss_sum, term_sums)
    task.count(batch) -> int          positions the loss averages over (known before the forward)
    task.teacher_outputs(batch)       frozen teacher's outputs for the batch (no grad), or None
    task.block_types                  module classes FSDP shards one by one
    task.save_final(dir, state_dict)  write the trained model in HF layout
Losses are sums; each step divides by the positions of the WHOLE global batch (all micro-batches,
all processes), so one process with batch G and k processes with G/k each take the same step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from thinkfast import faults, storage
from thinkfast.config import save_config
from thinkfast.errors import ThinkfastError
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.config import TrainConfig
from thinkfast.training.distributed import DistInfo, all_reduce_sum, barrier, full_state, load_full_state, wrap
from thinkfast.training.metrics import MetricsLog
from thinkfast.training.schedule import build_optimizer, build_scheduler


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # global token-mean loss per step run here
    steps: list[int] = field(default_factory=list)
    final_dir: Path | None = None
    tokens_per_s: float = 0.0
    peak_memory_gb: float = 0.0


def autocast_for(cfg_dtype: str, device: torch.device):
    use_bf16 = cfg_dtype == "bf16" or (cfg_dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _no_sync(module, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if not last and isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(
    task,
    loader,
    cfg: TrainConfig,
    output_dir: str | Path,
    max_steps: int,
    lr: float,
    info: DistInfo,
    device: torch.device,
    resume: bool = False,
    on_step=None,  # callback(step, loss) after each optimizer step (tests use it to interrupt)
) -> TrainResult:
    output_dir = Path(output_dir)
    lock = storage.FolderLock(output_dir, f"training folder {output_dir}") if info.main else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_locked(task, loader, cfg, output_dir, max_steps, lr, info, device, resume, on_step)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(task, loader, cfg: TrainConfig, output_dir: Path, max_steps: int, lr: float, info: DistInfo,
                  device: torch.device, resume: bool, on_step) -> TrainResult:
    if info.main:
        ckpt.clean(output_dir)  # temporary files of a killed save (we hold the folder's lock)
    barrier(info)
    found = ckpt.load_checkpoint(output_dir)
    final = output_dir / "final"
    if found is None and storage.model_dir_complete(final):
        if not resume:
            raise ThinkfastError(
                f"{output_dir} already holds a finished model ({final}): choose another output_dir, or pass "
                "--resume to accept it as it is"
            )
        return TrainResult(final_dir=final)
    if found is not None and not resume:
        raise ThinkfastError(
            f"{output_dir} already holds a checkpoint (step {found['step']}): pass --resume to continue it, "
            "or choose another output_dir"
        )
    module = task.module.to(device)
    model = wrap(module, info, cfg.distributed, device, task.block_types)
    optimizer = build_optimizer(model.parameters(), cfg.optim, lr)
    scheduler = build_scheduler(optimizer, max_steps, cfg.optim)
    start = 0
    if found is not None:
        load_full_state(model, optimizer, found["model"], found["optimizer"], info)
        scheduler.load_state_dict(found["scheduler"])
        loader.load_state_dict(found["loader"])
        ckpt.restore_rng(found, output_dir, info.rank)
        start = int(found["step"])
    if info.main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
    log = MetricsLog(output_dir, enabled=info.main, resume_step=start if found is not None else None)
    autocast = autocast_for(cfg.dtype, device)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult()
    bar = tqdm(total=max_steps, initial=start, disable=not (cfg.progress and info.main), dynamic_ncols=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total_tokens, total_time = 0, 0.0
    model.train()

    def save(step: int) -> None:
        model_state, optim_state = full_state(model, optimizer, info)
        state = {
            "step": step,
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": scheduler.state_dict(),
            "loader": loader.state_dict(),
            "world_size": info.world_size,
        }
        ckpt.save_checkpoint(output_dir, state, info)
        barrier(info)

    for step in range(start, max_steps):
        t0 = time.perf_counter()
        micro = loader.next_step()
        counts = torch.tensor([float(sum(task.count(b) for b in micro))], device=device)
        n_global = float(all_reduce_sum(counts, info).item())
        if n_global == 0:
            raise ThinkfastError(
                f"step {step + 1} has no trained positions (every response in its rows was cut off by "
                f"data.seq_len={cfg.data.seq_len}, or its examples have no assistant turn): it would report loss "
                "0 and learn nothing. Raise data.seq_len or remove those examples"
            )
        denom = max(n_global, 1.0)
        loss_sum = torch.zeros((), device=device)
        term_sums = None
        tokens = 0
        for i, batch in enumerate(micro):
            batch = _to(batch, device)
            tokens += int(batch["valid"].sum())
            teacher_out = task.teacher_outputs(batch)
            with _no_sync(model, i == len(micro) - 1), autocast():
                part, terms = model(batch, teacher_out)
            # DDP/FSDP average gradients over processes: scale by world so the result is sum / n_global
            (part * (info.world_size / denom)).backward()
            loss_sum += part.detach().float()
            term_sums = terms.detach().float() if term_sums is None else term_sums + terms.detach().float()
        stats = all_reduce_sum(torch.cat([loss_sum[None], term_sums, torch.tensor([float(tokens)], device=device)]), info)
        loss = float(stats[0]) / denom
        if not torch.isfinite(stats[0]):
            raise ThinkfastError(
                f"non-finite loss ({loss}) at step {step + 1}: training stopped before the update, and the last "
                f"checkpoint in {output_dir} is intact. Lower optim.lr, raise optim.warmup, check the data, or "
                "train with dtype=fp32"
            )
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip) if cfg.optim.grad_clip > 0 else torch.tensor(0.0)
        )
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        step_tokens = int(stats[-1])
        total_tokens += step_tokens
        total_time += dt
        result.losses.append(loss)
        result.steps.append(step + 1)
        row = {
            "step": step + 1,
            "loss": loss,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "positions": n_global,
            "tokens": step_tokens,
            "tokens_per_s": step_tokens / dt,
            "step_time_s": dt,
        }
        for name, value in zip(task.term_names, stats[1:-1].tolist()):
            row[name] = value / denom
        if device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        if (step + 1) % cfg.log_every == 0 or step + 1 == max_steps:
            log.log(row)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{step_tokens / dt:,.0f}")
        bar.update(1)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < max_steps:
            save(step + 1)
        if on_step is not None:
            on_step(step + 1, loss)
        faults.point("train-step", str(step + 1))
    bar.close()
    log.close()
    if start < max_steps:
        save(max_steps)
    result.tokens_per_s = total_tokens / total_time if total_time else 0.0
    if device.type == "cuda":
        result.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 2**30
    model_state, _ = full_state(model, optimizer, info) if info.enabled else (module.state_dict(), None)
    if info.main:
        with storage.atomic_dir(final) as tmp:  # final/ appears whole or not at all: it is the done marker
            task.save_final(tmp, model_state)
        if not cfg.keep_checkpoint:
            ckpt.discard(output_dir)
        result.final_dir = final
    barrier(info)
    return result
