"""Turn k samples into seconds: M1's throughput method or the measured wall time of the sampling run."""

from __future__ import annotations

from typing import Sequence

from thinkfast.errors import ThinkfastError


def seconds_per_sample_from_throughput(tokens_per_sample: float, tokens_per_second: float) -> float:
    """M1: one sample costs (tokens per sample) / (throughput at the best batch size)."""
    if tokens_per_second <= 0:
        raise ThinkfastError(f"throughput must be > 0 tokens/s, got {tokens_per_second}")
    return tokens_per_sample / tokens_per_second


def seconds_per_sample_from_rows(rows: Sequence[dict]) -> float:
    """Measured: total generation wall time of the run (the `seconds` each row carries) / rows."""
    times = [r.get("seconds") for r in rows]
    if not rows or any(t is None for t in times):
        raise ThinkfastError("rows carry no measured `seconds`; give the model's tokens_per_second instead")
    return float(sum(times)) / len(rows)  # type: ignore[arg-type]


def mean_tokens(rows: Sequence[dict]) -> float:
    return sum(int(r["num_tokens"]) for r in rows) / max(1, len(rows))


def seconds_for_k(ks: Sequence[int], seconds_per_sample: float) -> dict[int, float]:
    """Time of k samples of one problem = k x seconds per sample."""
    return {int(k): k * seconds_per_sample for k in ks}


def model_seconds_per_sample(rows: Sequence[dict], tokens_per_second: float | None) -> tuple[float, str]:
    """(seconds per sample, method): throughput if given, else the measured wall time."""
    if tokens_per_second:
        return seconds_per_sample_from_throughput(mean_tokens(rows), tokens_per_second), "throughput"
    return seconds_per_sample_from_rows(rows), "wall"
