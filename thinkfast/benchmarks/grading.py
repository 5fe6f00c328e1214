"""Grading throughput: pairs/s through `Grader.equivalent_many` (in-process fast path + worker pool).

The workload imitates grading sampled answers: every MATH-500 gold against itself re-typeset (a right
answer), against the golds of the next `wrong` problems (wrong answers of every type: numbers, fractions,
roots, tuples, intervals, matrices, text, equations), and every GSM8K gold against itself, a neighbour and
a unit-word answer. All pairs are distinct, and each run starts with an empty verdict cache.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from thinkfast.errors import ThinkfastError


def _retypeset(answer: str) -> str:
    """The same answer as a model might write it: \\dfrac, spaces, \\left( \\right)."""
    out = answer.replace("\\frac", "\\dfrac")
    if "\\!" not in out and not out.replace(",", "").isdigit():  # keep thousands separators intact
        out = out.replace(",", ", ")
    if out.startswith("(") and out.endswith(")"):
        out = "\\left" + out[:-1] + "\\right)"
    return out if out != answer else f" {answer} "


def build_pairs(data_dir: str | os.PathLike, wrong: int = 6) -> list[tuple[str, str]]:
    data = Path(data_dir)
    math_file, gsm_file = data / "math500_test.jsonl", data / "gsm8k_test.jsonl"
    for f in (math_file, gsm_file):
        if not f.exists():
            raise ThinkfastError(f"grading benchmark needs {f} (public data folder)")
    golds = [json.loads(line)["answer"] for line in math_file.open() if line.strip()]
    pairs: list[tuple[str, str]] = []
    for i, gold in enumerate(golds):
        pairs.append((gold, _retypeset(gold)))
        pairs += [(gold, golds[(i + k) % len(golds)]) for k in range(1, wrong + 1) if k % len(golds)]
    for line in gsm_file.open():
        if line.strip():
            gold = json.loads(line)["answer"].split("####")[-1].strip().replace(",", "")
            pairs += [(gold, gold), (gold, str(int(float(gold)) + 1)), (gold, f"{gold} dollars")]
    return list(dict.fromkeys(pairs))


def run_grading_bench(data_dir: str | os.PathLike, workers: int = 2, timeout: float = 10.0) -> dict:
    from thinkfast.evaluation.grading import Grader, fast_verdict

    pairs = build_pairs(data_dir)
    in_process = sum(fast_verdict(g, a) is not None for g, a in pairs)
    start = time.perf_counter()
    with Grader(timeout=timeout, workers=workers) as grader:
        verdicts = grader.equivalent_many(pairs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        grader.equivalent_many(pairs)  # second pass: in-memory verdict cache
        warm = time.perf_counter() - start
        timeouts = grader.timeouts
    return {
        "pairs": len(pairs), "equal": sum(verdicts), "decided_in_process": in_process,
        "workers": workers, "cpus": os.cpu_count(), "seconds": round(cold, 3),
        "pairs_per_s": round(len(pairs) / cold, 1), "cached_pairs_per_s": round(len(pairs) / warm, 1),
        "timeouts": timeouts,
    }
