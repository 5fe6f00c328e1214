"""JSONL sampling store: one row per (problem, sample), crash-safe appends, resume, shard merge.

Row keys (see `make_row`): problem_id, problem_index, sample_index, model, params, seed, text,
num_tokens, finish_reason, seconds, gold, answer, verdict, cluster, prm_scores, prm_score.
Appends are flushed and fsync'ed per batch; a run killed mid-write leaves at most one truncated last
line, which `read_rows` drops (and `SampleStore` truncates away) so the rerun redoes only that batch.
A store is locked while open: two processes never append to the same file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from thinkfast import storage
from thinkfast.errors import ThinkfastError

Key = tuple[str, int]  # (problem_id, sample_index)


def make_row(**fields: Any) -> dict[str, Any]:
    row = {
        "problem_id": None, "problem_index": None, "sample_index": None, "model": None, "params": {},
        "seed": None, "text": "", "num_tokens": 0, "finish_reason": None, "seconds": None, "gold": None,
        "answer": None, "verdict": None, "cluster": None, "prm_scores": None, "prm_score": None,
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"unknown row fields {sorted(unknown)}")
    row.update(fields)
    return row


def row_key(row: dict) -> Key:
    return (str(row["problem_id"]), int(row["sample_index"]))


def read_rows(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """All rows of a JSONL store. A bad *last* line (a killed write) is dropped (and cut off if `repair`);
    a bad line elsewhere is corruption and raises.  (`thinkfast.storage.read_jsonl`, shared by every store.)"""
    return storage.read_jsonl(path, repair=repair)


class SampleStore:
    """Append-only JSONL file of sample rows with the set of (problem, sample) keys already done.

    Opening a store locks it (`<file>.lock`): a second process sampling into the same store is refused
    at once, naming the first; `close()` (or leaving a `with` block) releases it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = storage.FolderLock(self.path, f"sample store {self.path}").acquire()
        try:
            self.rows = read_rows(self.path, repair=True)
        except BaseException:
            self.lock.release()
            raise
        self.done: set[Key] = {row_key(r) for r in self.rows}

    def __enter__(self) -> "SampleStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.lock.release()

    def append(self, rows: Iterable[dict]) -> int:
        """Write new rows (keys already present are skipped); flush + fsync before returning. Returns rows written."""
        fresh = []
        for row in rows:
            key = row_key(row)
            if key in self.done:
                continue
            self.done.add(key)
            fresh.append(row)
        if not fresh:
            return 0
        storage.append_jsonl(self.path, fresh)
        self.rows.extend(fresh)
        return len(fresh)


def write_rows(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Atomically replace `path` with `rows` (temp file + fsync + rename)."""
    storage.write_jsonl(path, rows)


def shard_range(num_problems: int, num_shards: int, shard_index: int) -> tuple[int, int]:
    """[start, end) problem indices of one shard; contiguous, sizes differ by at most one."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ThinkfastError(f"shard {shard_index} of {num_shards} is invalid; need 0 <= shard < num_shards")
    base, extra = divmod(num_problems, num_shards)
    start = shard_index * base + min(shard_index, extra)
    return start, start + base + (1 if shard_index < extra else 0)


def shard_path(model_dir: str | os.PathLike, shard_index: int, num_shards: int) -> Path:
    return Path(model_dir) / f"samples.shard{shard_index:03d}-of-{num_shards:03d}.jsonl"


def merge_shards(
    paths: list[Path], expected: Iterable[Key] | None = None, out: str | os.PathLike | None = None
) -> list[dict]:
    """Concatenate shard files, checking duplicate keys and (if `expected` given) missing keys; sorted rows."""
    rows: list[dict] = []
    seen: dict[Key, Path] = {}
    duplicates: list[str] = []
    for path in paths:
        for row in read_rows(path):
            key = row_key(row)
            if key in seen:
                duplicates.append(f"{key} in {seen[key].name} and {path.name}")
                continue
            seen[key] = path
            rows.append(row)
    if duplicates:
        raise ThinkfastError(f"{len(duplicates)} duplicate (problem, sample) rows, e.g. {duplicates[:3]}; shards overlap")
    if expected is not None:
        missing = [k for k in expected if k not in seen]
        if missing:
            raise ThinkfastError(
                f"{len(missing)} (problem, sample) rows are missing, e.g. {missing[:3]}; rerun `thinkfast eval sample` to finish"
            )
    rows.sort(key=lambda r: (int(r["problem_index"]), int(r["sample_index"])))
    if out is not None:
        write_rows(out, rows)
    return rows
