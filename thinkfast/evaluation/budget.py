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


def timing_record(method: str, timing: dict | None, batch_size: int | None, rows: Sequence[dict]) -> dict:
    """How a model's seconds were obtained, for the report: the method, the batch and the lengths."""
    out = dict(timing or {})
    out["method"] = method
    if method == "wall":
        out.setdefault("batch", batch_size)
        out["mean_new_tokens"] = mean_tokens(rows)
    elif not timing:
        out["source"] = "tokens_per_second given in the config"
    return out


def describe_timing(timing: dict | None) -> str:
    """One line for a report: time method, batch and lengths."""
    t = timing or {}
    if t.get("method") == "throughput":
        if t.get("batch") is None:
            return "throughput: k × mean tokens ÷ the tok/s given in the config (batch and lengths not recorded)"
        cands = t.get("candidates")
        of = f" (best of {', '.join(map(str, cands))})" if cands else ""
        src = [s for s in (t.get("prompt_tokens_from") and f"prompt: {t['prompt_tokens_from']}",
                           t.get("new_tokens_from") and f"gen: {t['new_tokens_from']}") if s]
        return (f"throughput: k × mean tokens ÷ {t.get('measured_by', 'measured')}-run decode tok/s at batch "
                f"{t['batch']}{of}, prompt {t.get('prompt_tokens')} + gen {t.get('new_tokens')} tokens"
                + (f" ({'; '.join(src)})" if src else ""))
    if t.get("method") == "wall":
        batch = t.get("batch")
        where = f" ({t['batch_from']})" if t.get("batch_from") else ""
        note = f"; {t['note']}" if t.get("note") else ""
        mean = f", mean {t['mean_new_tokens']:.0f} generated tokens" if t.get("mean_new_tokens") is not None else ""
        return (f"wall: measured sampling time per sample at batch {batch}{where}, the evaluation's own prompts"
                f"{mean}{note}")
    return "unknown"
