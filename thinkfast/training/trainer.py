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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from thinkfast import faults
from thinkfast.errors import ThinkfastError
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.config import TrainConfig
from thinkfast.training.distributed import DistInfo, all_reduce_sum, full_state, load_full_state, wrap
from thinkfast.training.loop import Chassis, Finished, autocast_for, folder_lock, open_checkpoint
from thinkfast.training.loop import no_sync as _no_sync
from thinkfast.training.schedule import build_optimizer, build_scheduler


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # global token-mean loss per step run here
    steps: list[int] = field(default_factory=list)
    final_dir: Path | None = None
    tokens_per_s: float = 0.0
    peak_memory_gb: float = 0.0


def _h2d(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # from pinned memory the copy is asynchronous: no wait for the GPU
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, non_blocking=True)


def _to(batch: dict, device) -> dict:
    return {k: _h2d(v, device) for k, v in batch.items()}


class NonFiniteLoss(ThinkfastError):
    def __init__(self, loss: float):
        super().__init__(f"non-finite loss ({loss})")
        self.loss = loss


class UpdateGuard:
    """Keeps a non-finite loss from reaching the weights without waiting for the GPU.

    With a fused AdamW the check stays on the device: from the first step whose loss is not finite on,
    `found_inf` makes the optimizer skip every update (weights, moments and step count untouched) and the
    flag is reported in the step's metrics, which the trainer reads a step later and stops on.  Other
    optimizers (FSDP's DTensor parameters use the foreach one) check on the host before the update."""

    def __init__(self, optimizer, device: torch.device):
        self.on_device = all(group.get("fused") for group in optimizer.param_groups)
        self.skipped = torch.zeros((), dtype=torch.float32, device=device)

    def step(self, optimizer, loss_sum: torch.Tensor) -> torch.Tensor:
        if self.on_device:
            self.skipped = torch.maximum(self.skipped, (~torch.isfinite(loss_sum)).float())
            optimizer.found_inf = self.skipped
        elif not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLoss(float(loss_sum))
        optimizer.step()
        return self.skipped


def _check_positions(task, micro: list[dict], step: int, cfg: TrainConfig, info: DistInfo, device) -> None:
    """A step with no trained position anywhere would report loss 0 and learn nothing: refuse it."""
    count = float(sum(task.count(b) for b in micro))
    if info.enabled:  # one small all-reduce: a rank may hold none while others do
        count = float(all_reduce_sum(torch.tensor([count], device=device), info).item())
    if count == 0:
        raise ThinkfastError(
            f"step {step} has no trained positions (every response in its rows was cut off by "
            f"data.seq_len={cfg.data.seq_len}, or its examples have no assistant turn): it would report loss "
            "0 and learn nothing. Raise data.seq_len or remove those examples"
        )


def train_step(task, model, micro: list[dict], optimizer, scheduler, params, cfg: TrainConfig, info: DistInfo,
               device: torch.device, autocast, guard: UpdateGuard) -> torch.Tensor:
    """One optimizer step over the micro-batches of a global step: forward, backward, clip, update.

    The trainer's loop and `thinkfast bench train` both call this.  Nothing here waits for the GPU (on one
    process): the result is the step's metrics, on the device, summed over processes (fp64):
        [loss_sum, *term_sums, tokens, positions, grad_norm, skipped]
    loss = loss_sum / max(positions, 1); skipped = 1 where the guard suppressed the update."""
    count = float(sum(task.count(b) for b in micro))  # the batches are still on the host
    tokens = float(sum(int(b["valid"].sum()) for b in micro))
    if info.enabled:
        n_global = all_reduce_sum(torch.tensor([count], dtype=torch.float64, device=device), info)[0]
        scale = (info.world_size / n_global.clamp_min(1.0)).float()
    else:
        n_global = count
        scale = info.world_size / max(count, 1.0)
    loss_sum = torch.zeros((), device=device)
    term_sums = None
    for i, batch in enumerate(micro):
        batch = _to(batch, device)
        teacher_out = task.teacher_outputs(batch)
        with _no_sync(model, i == len(micro) - 1), autocast():
            part, terms = model(batch, teacher_out)
        # DDP/FSDP average gradients over processes: scale by world so the result is sum / n_global
        (part * scale).backward()
        loss_sum += part.detach().float()
        term_sums = terms.detach().float() if term_sums is None else term_sums + terms.detach().float()
    host = torch.tensor([tokens, n_global if not info.enabled else 0.0], dtype=torch.float64)
    stats = torch.cat([loss_sum[None].double(), term_sums.double(), _h2d(host, device)])
    stats = all_reduce_sum(stats, info)
    if info.enabled:
        stats[-1] = n_global
    grad_norm = (
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        if cfg.optim.grad_clip > 0
        else torch.zeros((), device=device)
    )
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    skipped = guard.step(optimizer, stats[0])
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tail = torch.stack([grad_norm.detach().to(device=device, dtype=torch.float64), skipped.double()])
    return torch.cat([stats, tail])


# devices where a step's metrics are read one step late, so the host never waits for the GPU
# (tests add "cpu" to exercise that path; on a CPU everything is synchronous anyway)
LAGGED_METRICS_DEVICES = ("cuda",)


class _InFlight:
    """A step's metrics on their way to the host: the copy is queued behind the step, and reading them
    waits for that step only, so the GPU runs the next step meanwhile."""

    def __init__(self, step: int, values: torch.Tensor, lr: float):
        self.step, self.lr = step, lr
        self.event = None
        if values.is_cuda:
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.event = torch.cuda.Event(enable_timing=True)  # also the step's completion time on the GPU
            self.event.record()
        else:
            self.host = values

    def values(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


def optimizer_for(model, cfg: TrainConfig, info: DistInfo, lr: float, max_steps: int, no_decay=None, lr_scale=None):
    """The optimizer and schedule every recipe trains with (`thinkfast bench train` builds the same).

    Fused AdamW: one kernel per step, and it can skip a non-finite update on the device (UpdateGuard);
    FSDP's DTensor parameters keep the foreach implementation."""
    optimizer = build_optimizer(model.named_parameters(), cfg.optim, lr, no_decay=no_decay, lr_scale=lr_scale,
                                fused=not (info.enabled and cfg.distributed == "fsdp"))
    return optimizer, build_scheduler(optimizer, max_steps, cfg.optim)


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
    with folder_lock(output_dir, "training folder", info):
        return _train_locked(task, loader, cfg, output_dir, max_steps, lr, info, device, resume, on_step)


def _train_locked(task, loader, cfg: TrainConfig, output_dir: Path, max_steps: int, lr: float, info: DistInfo,
                  device: torch.device, resume: bool, on_step) -> TrainResult:
    try:
        found = open_checkpoint(output_dir, resume, info, finished="model")
    except Finished as done:
        return TrainResult(final_dir=done.final)
    module = task.module.to(device)
    model = wrap(module, info, cfg.distributed, device, task.block_types)
    optimizer, scheduler = optimizer_for(model, cfg, info, lr, max_steps, no_decay=getattr(task, "no_decay", None),
                                         lr_scale=getattr(task, "lr_scale", None))
    if found is not None:
        load_full_state(model, optimizer, found["model"], found["optimizer"], info)
        scheduler.load_state_dict(found["scheduler"])
        loader.load_state_dict(found["loader"])
        ckpt.restore_rng(found, output_dir, info.rank)

    def state() -> dict:
        model_state, optim_state = full_state(model, optimizer, info)
        return {"model": model_state, "optimizer": optim_state, "scheduler": scheduler.state_dict(),
                "loader": loader.state_dict(), "world_size": info.world_size}

    chassis = Chassis(cfg, output_dir, info, found, max_steps, state)
    try:
        start = chassis.start
        autocast = autocast_for(cfg.dtype, device)
        params = [p for p in model.parameters() if p.requires_grad]
        result = TrainResult()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        total_tokens, total_time = 0, 0.0
        model.train()

        guard = UpdateGuard(optimizer, device)
        pending: _InFlight | None = None  # the step whose metrics are still on the device
        last_done = time.perf_counter()
        last_event = None  # CUDA: the GPU-side completion of the previous step (or the end of a checkpoint write)

        def finish(flight: _InFlight) -> None:
            """Read a finished step's metrics (waiting for that step only), check them, log them.  A step's time
            is from the previous step's completion to its own: on CUDA measured on the GPU (event to event), so
            that it is right whichever of the GPU and the launching CPU bounds the step, also for a step whose
            metrics are read at once (the last one, one before a save) rather than one step late."""
            nonlocal last_done, last_event, total_tokens, total_time
            values = flight.values()
            now = time.perf_counter()
            dt = now - last_done if last_event is None else last_event.elapsed_time(flight.event) / 1000
            last_done, last_event = now, flight.event
            loss_sum, terms, (step_tokens, n_global, grad_norm, skipped) = values[0], values[1:-4], values[-4:]
            denom = max(n_global, 1.0)
            loss = loss_sum / denom
            if skipped or not math.isfinite(loss_sum):
                raise ThinkfastError(
                    f"non-finite loss ({loss}) at step {flight.step}: training stopped before the update, and the last "
                    f"checkpoint in {output_dir} is intact. Lower optim.lr, raise optim.warmup, check the data, or "
                    "train with dtype=fp32"
                )
            step_tokens = int(step_tokens)
            total_tokens += step_tokens
            total_time += dt
            result.losses.append(loss)
            result.steps.append(flight.step)
            row = {
                "step": flight.step,
                "loss": loss,
                "lr": flight.lr,
                "grad_norm": grad_norm,
                "positions": n_global,
                "tokens": step_tokens,
                "tokens_per_s": step_tokens / dt,
                "step_time_s": dt,
            }
            for name, value in zip(task.term_names, terms):
                row[name] = value / denom
            if device.type == "cuda":
                row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            chassis.record(flight.step, row, loss=f"{loss:.4f}", tok_s=f"{step_tokens / dt:,.0f}")
            if on_step is not None:
                on_step(flight.step, loss)

        for step in range(start, max_steps):
            micro = loader.next_step()
            _check_positions(task, micro, step + 1, cfg, info, device)
            try:
                values = train_step(task, model, micro, optimizer, scheduler, params, cfg, info, device, autocast, guard)
            except NonFiniteLoss as err:  # host-side guard (no fused optimizer)
                if pending is not None:
                    finish(pending)
                raise ThinkfastError(
                    f"non-finite loss ({err.loss}) at step {step + 1}: training stopped before the update, and the last "
                    f"checkpoint in {output_dir} is intact. Lower optim.lr, raise optim.warmup, check the data, or "
                    "train with dtype=fp32"
                ) from None
            flight = _InFlight(step + 1, values, scheduler.get_last_lr()[0])
            if pending is not None:  # the previous step: done by now or soon, while this one runs
                finish(pending)
            pending = flight
            saving = chassis.due(step + 1)
            # on a GPU, a step's metrics are read while the next step runs; elsewhere (and before a save, at the
            # end, or for a callback that may stop the run) at once
            if device.type not in LAGGED_METRICS_DEVICES or saving or step + 1 == max_steps or on_step is not None:
                finish(pending)
                pending = None
            if saving:
                chassis.save(step + 1)
                last_done = time.perf_counter()  # the next step's time excludes the checkpoint write, as before
                if last_event is not None:
                    last_event = torch.cuda.Event(enable_timing=True)
                    last_event.record()
            faults.point("train-step", str(step + 1))
        chassis.close()
    finally:
        chassis.stop.restore()  # also when a step raised
    result.tokens_per_s = total_tokens / total_time if total_time else 0.0
    if device.type == "cuda":
        result.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 2**30
    model_state, _ = full_state(model, optimizer, info) if info.enabled else (module.state_dict(), None)
    final = chassis.write_final(lambda tmp: task.save_final(tmp, model_state))
    if final is not None:
        result.final_dir = final
    return result
