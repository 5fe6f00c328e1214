"""Per-step metrics: a JSONL log (always), TensorBoard (when installed), a tqdm bar."""

from __future__ import annotations

import math
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
