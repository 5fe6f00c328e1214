"""Data-parallel sampling: one engine per GPU, problems sharded across processes, one resumable store.

Two ways in, same layout on disk:
  - under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set, one or several nodes): each process samples its
    own shards on GPU LOCAL_RANK, then every process meets at a barrier (a gloo group with a long
    timeout: ranks finish at different times, and sampling needs no GPU collective), and rank 0
    alone merges, grades and scores;
  - `gpus: N` (`thinkfast eval sample --gpus N`, the pipeline's `eval_gpus`): the process spawns N local
    workers itself and waits for them; no process group at all.

Shards: with W processes the problems are cut into max(num_shards, W) problem-range shards and
process r samples shards r, r+W, r+2W, ...  Each shard is its own JSONL file with its own lock, so
processes never write the same file; a killed process's shard resumes (the store skips rows already
written, and a sample is seeded by (seed, problem id, sample index), so a redo is the same text).
Resume with the same shard count: a run started on 8 processes keeps 8 shard files, and a rerun with
a different count is refused with the count to use (`--set num_shards=8` works with any process count).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from thinkfast.errors import ThinkfastError

_SHARD_FILE = re.compile(r"samples\.shard(\d{3})-of-(\d{3})\.jsonl$")
TIMEOUT_ENV = "THINKFAST_DIST_TIMEOUT_S"  # how long the barrier waits for the slowest rank (default 7 days)


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> Ranks:
    """This process's place in a torchrun job (world 1 when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def shard_count(num_shards: int, world: int) -> int:
    return max(int(num_shards), int(world))


def shards_of(num_shards: int, rank: int, world: int) -> list[int]:
    """Shards process `rank` of `world` samples: r, r+W, ... (every shard exactly once over the ranks)."""
    return list(range(rank, num_shards, world))


def existing_shard_counts(model_dir: str | os.PathLike) -> set[int]:
    """The `-of-NNN` counts of the shard files already in a model's folder."""
    found = set()
    for path in Path(model_dir).glob("samples.shard*-of-*.jsonl"):
        m = _SHARD_FILE.search(path.name)
        if m:
            found.add(int(m.group(2)))
    return found


def check_shard_count(cfg, num_shards: int) -> None:
    """Refuse to start a second shard layout next to an earlier one (its rows would be ignored)."""
    from thinkfast.evaluation.pipeline import model_dir

    for spec in cfg.models:
        other = existing_shard_counts(model_dir(cfg, spec)) - {num_shards}
        if other:
            raise ThinkfastError(
                f"model {spec.name!r}: {model_dir(cfg, spec)} holds samples cut into {sorted(other)} shards, but this "
                f"run would cut them into {num_shards}; resume with --set num_shards={min(other)} (any process count "
                "up to that works) or use another output folder")


def rank_config(cfg, ranks: Ranks):
    """`cfg` for one process: the shared shard count, this rank's shards, its own GPU."""
    num_shards = shard_count(cfg.num_shards, ranks.world)
    if cfg.shards is not None:
        raise ThinkfastError("`shards` picks shards by hand; it cannot be combined with several processes (gpus / torchrun)")
    models = [dataclasses.replace(m, device=local_device(m.device, ranks.local_rank)) for m in cfg.models]
    return dataclasses.replace(cfg, models=models, num_shards=num_shards,
                               shards=shards_of(num_shards, ranks.rank, ranks.world),
                               progress=cfg.progress and ranks.rank == 0, gpus=1)


def local_device(device: str, local_rank: int) -> str:
    """`cuda` / `cuda:i` / `auto` (with a GPU) -> this process's GPU; `cpu` stays (the CPU tests)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda"):
        return device
    if local_rank >= torch.cuda.device_count():
        raise ThinkfastError(f"process {local_rank} of this node has no GPU: {torch.cuda.device_count()} visible")
    torch.cuda.set_device(local_rank)  # before the engine allocates anything
    return f"cuda:{local_rank}"


def _sample_all(cfg, problems) -> dict[str, int]:
    from thinkfast.evaluation.pipeline import sample_model

    return {spec.name: sample_model(cfg, spec, problems) for spec in cfg.models}


# --------------------------------------------------------------------------- torchrun
def _barrier_group():
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 7 * 24 * 3600)))
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timeout)
        return None
    return dist.new_group(backend="gloo", timeout=timeout)


def sample_torchrun(cfg, problems, ranks: Ranks):
    """Sample this rank's shards, then wait for every rank.  Returns (rows written here, the config the
    merge must use: the shared shard count, every shard)."""
    import torch.distributed as dist

    group = _barrier_group()  # joined first: a rank that fails below still lets torchrun stop the others
    num_shards = shard_count(cfg.num_shards, ranks.world)
    check_shard_count(cfg, num_shards)
    written = _sample_all(rank_config(cfg, ranks), problems)
    dist.barrier(group=group)
    return written, dataclasses.replace(cfg, num_shards=num_shards, shards=None, gpus=1)


def finish_torchrun() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- local workers
def _worker(index: int, cfg, problems, world: int, parent: int, results) -> None:
    from thinkfast.procs import die_with_parent

    die_with_parent(parent)
    results[index] = _sample_all(rank_config(cfg, Ranks(index, world, index)), problems)


def sample_local(cfg, problems, gpus: int):
    """Spawn `gpus` workers (worker i on GPU i) and wait for all of them; the parent loads no model."""
    import torch.multiprocessing as mp

    num_shards = shard_count(cfg.num_shards, gpus)
    check_shard_count(cfg, num_shards)
    if any(str(m.device).startswith("cuda") or m.device == "auto" for m in cfg.models):
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < gpus:
            raise ThinkfastError(f"gpus={gpus} but only {torch.cuda.device_count()} GPUs are visible")
    with mp.Manager() as manager:
        results = manager.dict()
        try:
            mp.start_processes(_worker, args=(cfg, problems, gpus, os.getpid(), results), nprocs=gpus,
                               join=True, start_method="spawn")
        except mp.ProcessRaisedException as err:
            last = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            raise ThinkfastError(f"a sampling worker failed: {last}; rerun to resume (finished rows are kept)") from None
        except mp.ProcessExitedException as err:
            raise ThinkfastError(f"a sampling worker died ({err}); rerun to resume (finished rows are kept)") from None
        written: dict[str, int] = {}
        for part in results.values():
            for name, n in part.items():
                written[name] = written.get(name, 0) + n
    return written, dataclasses.replace(cfg, num_shards=num_shards, shards=None, gpus=1)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
