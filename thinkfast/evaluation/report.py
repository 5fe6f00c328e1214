"""Markdown report: per metric a table (models x k, mean ± std, seconds) and the charts."""

from __future__ import annotations

import os
from pathlib import Path

from thinkfast.evaluation import uncertainty
from thinkfast.evaluation.budget import describe_timing

METRIC_NAMES = {"pass": "coverage (pass@k)", "maj": "maj@k", "bon": "BoN@k", "wbon": "weighted BoN@k"}


def _table(scores: dict, metric: str) -> list[str]:
    ks = sorted({int(k) for m in scores.values() for k in m["metrics"].get(metric, {})})
    lines = ["| model | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for model, data in scores.items():
        cells = []
        for k in ks:
            r = data["metrics"].get(metric, {}).get(str(k))
            sec = data["seconds"].get(str(k))
            cells.append("" if r is None else
                         f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}{uncertainty.text(r.get('ci95'))} ({sec:.3g}s)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_report(scores: dict, plots: dict[str, str], path: str | os.PathLike, title: str = "Test-time scaling") -> str:
    """`scores`: {model: {"metrics": {metric: {k: {mean, std, exact}}}, "seconds": {k: s}, ...}}."""
    path = Path(path)
    lines = [f"# {title}", ""]
    lines.append("| model | problems | samples/problem | mean tokens | s/sample | time method | skipped rows |")
    lines.append("|---|---|---|---|---|---|---|")
    for model, d in scores.items():
        lines.append(
            f"| {model} | {d['problems']} | {d['samples_per_problem']} | {d['mean_tokens']:.1f} | "
            f"{d['seconds_per_sample']:.4g} | {d['time_method']} | {d.get('skipped', 0)} |"
        )
    lines += ["", "Time per sample, by model (method, batch, lengths):", ""]
    lines += [f"- {model}: {describe_timing(d.get('timing') or {'method': d['time_method']})}" for model, d in scores.items()]
    lines.append("")
    lines.append("Values are % (mean ± std over random size-k subsets; exact enumeration when small); "
                 "seconds = time of k samples.")
    if any("ci95" in r for d in scores.values() for per_k in d["metrics"].values() for r in per_k.values()):
        lines += ["", uncertainty.legend(next(iter(scores.values()))["problems"])]
    for metric in ("pass", "maj", "bon", "wbon"):
        if not any(metric in d["metrics"] for d in scores.values()):
            continue
        lines += ["", f"## {METRIC_NAMES[metric]}", ""]
        lines += _table(scores, metric)
        if metric in plots:
            rel = os.path.relpath(plots[metric], path.parent)
            lines += ["", f"![{METRIC_NAMES[metric]}]({rel})"]
    from thinkfast.storage import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return str(path)
