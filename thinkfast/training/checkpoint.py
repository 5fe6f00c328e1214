"""Atomic training checkpoints: written to a temporary file, then renamed over the old one.

A run killed at any moment leaves either the previous checkpoint or the new one, never a
half-written file.  Contents: model, optimizer, scheduler, step, data position, RNG states.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def atomic_save(obj, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


def restore_rng(output_dir: str | os.PathLike, rank: int) -> None:
    """Put back this rank's RNG state saved with the last checkpoint, if there is one."""
    path = rng_path(output_dir, rank)
    if path.is_file():
        set_rng_state(torch.load(path, weights_only=False))


def checkpoint_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoint" / "latest.pt"


def rng_path(output_dir: str | os.PathLike, rank: int) -> Path:
    return Path(output_dir) / "checkpoint" / f"rng_rank{rank}.pt"


def load_checkpoint(output_dir: str | os.PathLike) -> dict | None:
    path = checkpoint_path(output_dir)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
