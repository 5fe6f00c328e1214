"""The run's headline numbers in one JSON (`report/summary.json`): per model its accuracy, speed and
closeness to the teacher, and how often a student wins at a fixed time budget.

    pareto_fraction[metric][student]  fraction of `n` log-spaced time budgets, from the teacher's k=1 time to
                                      its largest-k time, at which the student's best point within the budget
                                      is at least the teacher's best point within it
"""

from __future__ import annotations

import datetime as dt
import math
import sys


def best_within(score: dict, metric: str, budget: float) -> float | None:
    """Best mean value of `metric` over the model's k whose time fits in `budget` seconds (None: none fits)."""
    values = [score["metrics"][metric][k]["mean"] for k, s in score["seconds"].items()
              if s <= budget * (1 + 1e-9) and k in score["metrics"].get(metric, {})]
    return max(values) if values else None


def log_budgets(low: float, high: float, n: int) -> list[float]:
    if n == 1 or high <= low:
        return [high]
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


def pareto_fraction(scores: dict, metric: str, student: str, n: int = 20) -> float | None:
    teacher = scores.get("teacher")
    if teacher is None or student not in scores:
        return None
    times = sorted(teacher["seconds"].values())
    wins = 0
    budgets = log_budgets(times[0], times[-1], n)
    for budget in budgets:
        t, s = best_within(teacher, metric, budget), best_within(scores[student], metric, budget)
        wins += s is not None and (t is None or s >= t - 1e-12)
    return wins / len(budgets)


def _largest_k(score: dict, metric: str) -> str:
    return max(score["metrics"][metric], key=int)


def run_summary(cfg, results: dict, n_budgets: int = 20) -> dict:
    speed = results.get("speed", {})
    distill = results.get("distill", {})
    device = next((v.get("device") for v in speed.values() if isinstance(v, dict) and v.get("device")), None)
    summary = {
        "teacher": cfg.teacher,
        "command": "thinkfast " + " ".join(sys.argv[1:]),  # of the process that wrote the report
        "gpu": device,
        "date": dt.date.today().isoformat(),
        "distill_seconds": sum(st.get("seconds") or 0.0 for info in distill.values() for st in info.get("stages", [])),
        "distill_tokens": sum(st.get("tokens") or 0 for info in distill.values() for st in info.get("stages", [])),
        # the distill stage's wall time: loading, measurements, layer selection, generation rounds and checkpoints
        # included (`distill_seconds` counts training steps only); per phase in each student's timings
        "distill_wall_seconds": sum(sum((info.get("timings") or {}).values()) for info in distill.values()) or None,
        "eval_sets": {},
    }
    for set_name, info in results.get("eval", {}).items():
        if "scores" not in info:
            continue
        scores = info["scores"]
        models = {}
        for name, score in scores.items():
            row = {}
            for metric in ("pass", "maj"):
                if metric in score["metrics"]:
                    row[f"{metric}@1"] = score["metrics"][metric]["1"]["mean"] if "1" in score["metrics"][metric] else None
                    k = _largest_k(score, metric)
                    row[f"{metric}@{k}"] = score["metrics"][metric][k]["mean"]
            sp = speed.get(name) or {}
            sp = (sp.get("evals") or {}).get(set_name) or sp  # this eval set's own lengths and best batch
            points = [v for v in ((distill.get(name) or {}).get("fidelity") or {}).values() if isinstance(v, dict)]
            fid = points[-1] if points else {}  # the last measurement: "final", or MOHAWK's last stage
            row.update(mean_tokens=score.get("mean_tokens"), tokens_per_s=sp.get("decode_tokens_per_s"),
                       best_batch=sp.get("best_batch", sp.get("batch_size")),
                       kl_to_teacher=0.0 if name == "teacher" else fid.get("kl_to_teacher"),
                       top1_agreement=1.0 if name == "teacher" else fid.get("top1_agreement"))
            models[name] = row
        fractions = {metric: {name: pareto_fraction(scores, metric, name, n_budgets) for name in scores if name != "teacher"}
                     for metric in ("pass", "maj")}
        summary["eval_sets"][set_name] = {"models": models, "pareto_fraction": fractions}
    return summary


def _pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def fidelity_section(results: dict) -> list[str]:
    """Distillation quality table: KL / top-1 agreement at conversion, after alignment and at the end."""
    rows = []
    for name, info in (results.get("distill") or {}).items():
        fid = info.get("fidelity") or {}
        points = [(key, fid[key]) for key in fid if isinstance(fid[key], dict) and "kl_to_teacher" in fid[key]]
        for key, point in points:
            errors = point.get("layer_errors")
            mean_err = f"{sum(errors.values()) / len(errors):.3f}" if errors else "—"
            rows.append(f"| {name} | {key} | {point['kl_to_teacher']:.3f} | {_pct(point['top1_agreement'])} | {mean_err} |")
        sel = info.get("attention_selection")
        if sel:
            rows.append(f"| {name} | attention layers chosen {sel['chosen']} (KL {sel['kl_chosen']:.3f}) vs evenly "
                        f"spread {sel['even']} (KL {sel['kl_even']:.3f}), measured after alignment | | | |")
    if not rows:
        return []
    return ["", "## Distillation quality (held-out teacher text)", "",
            "Reverse KL(student ‖ teacher) in nats per token and top-1 next-token agreement on the teacher's answers "
            "to held-out problems; `layer error` is the mean relative L2 error of the Mamba mixers against the "
            "attention they replace, on teacher inputs.", "",
            "| model | point | KL to teacher | top-1 agreement | layer error |", "|---|---|---:|---:|---:|", *rows]


def pareto_section(summary: dict) -> list[str]:
    lines = []
    for set_name, data in summary["eval_sets"].items():
        for metric, per_student in data["pareto_fraction"].items():
            for student, fraction in per_student.items():
                if fraction is not None:
                    lines.append(f"- {set_name}, {metric}@k: `{student}` is at least the teacher at {fraction:.0%} of 20 "
                                 "log-spaced time budgets (teacher's k=1 time to its largest-k time)")
    return ["", "## Who wins at a fixed time budget", "", *lines] if lines else []
