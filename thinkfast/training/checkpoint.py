"""Atomic training checkpoints: one file, written to a temporary name, then renamed over the old one.

A run killed at any moment leaves either the previous checkpoint or the new one, never a
half-written file.  Contents: model, optimizer, scheduler, step, data position and the RNG states
of every rank (gathered to rank 0), all in that one file, so they always come from the same step.
Once the trained model is committed to `final/` the checkpoint is removed (`discard`): it is only
the way back into an unfinished run, and keeping full optimizer states of every finished run and
stage is what made small runs write gigabytes.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from thinkfast import storage


def atomic_save(obj, path: str | os.PathLike) -> None:
    with storage.atomic_file(path, "wb") as fh:
        torch.save(obj, fh)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(info) -> list[dict] | None:
    """Every rank's RNG state, on rank 0 (None elsewhere)."""
    mine = rng_state()
    if not getattr(info, "enabled", False):
        return [mine]
    import torch.distributed as dist

    out = [None] * info.world_size if info.main else None
    dist.gather_object(mine, out, dst=0)
    return out


def save_checkpoint(output_dir: str | os.PathLike, state: dict, info) -> None:
    """Write `state` plus every rank's RNG state as one atomic file (rank 0 writes; all ranks call)."""
    rngs = gather_rng_states(info)
    if info.main:
        atomic_save({**state, "rng": rngs}, checkpoint_path(output_dir))
        for old in Path(output_dir, "checkpoint").glob("rng_rank*.pt"):  # the old two-file layout
            old.unlink(missing_ok=True)


def restore_rng(found: dict, output_dir: str | os.PathLike, rank: int) -> None:
    """Put back this rank's RNG state saved with the checkpoint `found`."""
    states = found.get("rng")
    if states is not None:
        if rank < len(states) and states[rank] is not None:
            set_rng_state(states[rank])
        return
    path = rng_path(output_dir, rank)  # checkpoints written before the RNG moved into the file
    if path.is_file():
        set_rng_state(torch.load(path, weights_only=False))


def checkpoint_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoint" / "latest.pt"


def rng_path(output_dir: str | os.PathLike, rank: int) -> Path:
    return Path(output_dir) / "checkpoint" / f"rng_rank{rank}.pt"


def has_checkpoint(output_dir: str | os.PathLike) -> bool:
    return checkpoint_path(output_dir).is_file()


def clean(output_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed save left behind (temporary checkpoint files, half-written `final.tmp*`).
    Call it only while holding the output folder's lock."""
    return storage.remove_temp_files(Path(output_dir) / "checkpoint") + storage.remove_temp_files(output_dir)


def discard(output_dir: str | os.PathLike) -> None:
    """The run is finished and `final/` committed: its checkpoint is no longer needed."""
    shutil.rmtree(Path(output_dir) / "checkpoint", ignore_errors=True)


def load_checkpoint(output_dir: str | os.PathLike) -> dict | None:
    path = checkpoint_path(output_dir)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
