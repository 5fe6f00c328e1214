"""Per-step metrics: a JSONL log (always), TensorBoard (when installed), a tqdm bar."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from thinkfast import storage


class MetricsLog:
    def __init__(self, output_dir: str | Path, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():  # drop rows the resumed run will redo
            rows = storage.read_jsonl(self.path)  # a row torn by the kill is dropped
            storage.write_jsonl(self.path, [r for r in rows if r.get("step", 0) <= resume_step])
        elif resume_step is None and self.path.is_file():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        storage.append_jsonl(self.path, [clean])
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    return storage.read_jsonl(path)


class PhaseTimes:
    """Wall seconds of a recipe's phases (loading, measurements, each stage) in `<dir>/timings.json`.

    `with times("align"): ...` adds the block's seconds to that phase; a resumed run adds to what the
    killed one recorded, so the file says where the whole run's time went (e.g. steps vs everything else)."""

    def __init__(self, output_dir: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(output_dir) / "timings.json", enabled
        self.seconds: dict[str, float] = {}
        if enabled and self.path.is_file():
            self.seconds = {k: float(v) for k, v in json.loads(self.path.read_text()).items()}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            if self.enabled:
                storage.atomic_write_json(self.path, {k: round(v, 3) for k, v in self.seconds.items()})
