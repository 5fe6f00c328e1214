"""The training-loop chassis shared by the trainer (`training/trainer.py`) and GRPO (`rl/loop.py`).

What every loop does around its steps, in one place: the folder lock, the checkpoint guard (an existing
checkpoint or finished model is refused without resume), loading the checkpoint to resume from, the
config copy, the metrics log and progress bar, periodic and final checkpoints, the final model
written whole or not at all, and a stop on request: SIGTERM (what `timeout`, SLURM and Kubernetes send
before they kill) makes a single-process loop write a checkpoint after the step in flight and exit
(`Stopped`), so a preempted run loses no step.  The steps themselves stay with each loop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Callable

import torch

from thinkfast import storage
from thinkfast.config import save_config
from thinkfast.device import resolve_dtype
from thinkfast.errors import Stopped, ThinkfastError
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.distributed import DistInfo, barrier
from thinkfast.training.metrics import MetricsLog


def autocast_for(cfg_dtype: str, device: torch.device):
    if resolve_dtype(cfg_dtype, device) == torch.bfloat16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def no_sync(module, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if not last and isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


@contextlib.contextmanager
def folder_lock(output_dir: Path, what: str, info: DistInfo):
    """One run per folder: the main process holds `output_dir`'s lock for the whole run."""
    lock = storage.FolderLock(output_dir, f"{what} {output_dir}") if info.main else None
    if lock is not None:
        lock.acquire()
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


class Finished(Exception):
    """The folder already holds a finished model and resume accepts it as it is."""

    def __init__(self, final: Path):
        super().__init__(str(final))
        self.final = final


def open_checkpoint(output_dir: Path, resume: bool, info: DistInfo, finished: str = "model") -> dict | None:
    """The checkpoint guard: the checkpoint to resume from (None: a fresh start).

    Cleans a killed save's temporary files; refuses an existing checkpoint or finished model unless
    `resume`; raises `Finished` when resume meets a finished model and no checkpoint."""
    if info.main:
        ckpt.clean(output_dir)  # temporary files of a killed save (we hold the folder's lock)
    barrier(info)
    found = ckpt.load_checkpoint(output_dir)
    final = output_dir / "final"
    if found is None and storage.model_dir_complete(final):
        if not resume:
            raise ThinkfastError(
                f"{output_dir} already holds a finished {finished} ({final}): choose another output_dir, or pass "
                "--resume to accept it as it is"
            )
        raise Finished(final)
    if found is not None and not resume:
        raise ThinkfastError(
            f"{output_dir} already holds a checkpoint (step {found['step']}): pass --resume to continue it, "
            "or choose another output_dir"
        )
    return found


class StopSignal:
    """SIGTERM sets `requested` instead of killing; a second SIGTERM kills as before (the previous handler
    runs). Installed only in the main thread of a single process: under torchrun every rank would have to
    agree on the step to stop at, which would cost a collective per step."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # asked twice: stop waiting for the checkpoint
            self.restore()
            signal.raise_signal(signum)
            return
        self.requested = True
        print("\n[thinkfast] SIGTERM: stopping after the current step's checkpoint (send it again to kill now)",
              flush=True)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class Chassis:
    """Config copy, metrics log, progress bar and checkpoints of one run from `start` to `max_steps`.

    `state()` returns the checkpoint dict of the current step (without "step"); it is called on every
    process (it may gather sharded state)."""

    def __init__(self, cfg, output_dir: Path, info: DistInfo, found: dict | None, max_steps: int,
                 state: Callable[[], dict], desc: str | None = None):
        self.cfg, self.output_dir, self.info, self.max_steps, self._state = cfg, output_dir, info, max_steps, state
        self.start = int(found["step"]) if found is not None else 0
        if info.main:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, output_dir / "config.yaml")
        self.log = MetricsLog(output_dir, enabled=info.main, resume_step=self.start if found is not None else None)
        from tqdm.auto import tqdm

        extra = {"desc": desc} if desc else {}
        self.bar = tqdm(total=max_steps, initial=self.start, disable=not (cfg.progress and info.main),
                        dynamic_ncols=True, **extra)
        self.stop = StopSignal(enabled=not info.enabled)

    def record(self, step: int, row: dict, **postfix) -> None:
        """Log a finished step's metrics (every log_every steps and the last) and advance the bar."""
        if step % self.cfg.log_every == 0 or step == self.max_steps:
            self.log.log(row)
        self.bar.set_postfix(**postfix)
        self.bar.update(1)

    def due(self, step: int) -> bool:
        """Whether a checkpoint is written after `step`: periodic ones, and one when a stop was requested
        (the last step's is written by close())."""
        periodic = bool(self.cfg.save_every) and step % self.cfg.save_every == 0
        return (periodic or self.stop.requested) and step < self.max_steps

    def save(self, step: int) -> None:
        """Checkpoint `step`; then, if a stop was requested, end the run here (`Stopped`)."""
        ckpt.save_checkpoint(self.output_dir, {"step": step, **self._state()}, self.info)
        barrier(self.info)
        if self.stop.requested:
            self.bar.close()
            self.log.close()
            self.stop.restore()
            raise Stopped(f"stopped by SIGTERM after step {step} of {self.max_steps}; its checkpoint is in "
                          f"{self.output_dir}: rerun the same command to resume")

    def close(self) -> None:
        """End of the steps: close the bar and the log, and checkpoint the last step if any ran here."""
        self.bar.close()
        self.log.close()
        if self.start < self.max_steps:
            self.save(self.max_steps)
        self.stop.restore()
        if self.stop.requested:  # the request came during the last step: its checkpoint is written
            raise Stopped(f"stopped by SIGTERM after the last step ({self.max_steps}); rerun the same command "
                          "to write the final model")

    def write_final(self, write: Callable[[Path], None]) -> Path | None:
        """The main process writes final/ (whole or not at all: it is the done marker) and drops the
        checkpoint unless keep_checkpoint; every process waits.  -> final/ on the main process."""
        final = None
        if self.info.main:
            final = self.output_dir / "final"
            with storage.atomic_dir(final) as tmp:
                write(tmp)
            if not self.cfg.keep_checkpoint:
                ckpt.discard(self.output_dir)
        barrier(self.info)
        return final
