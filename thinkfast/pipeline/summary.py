"""The run's headline numbers in one JSON (`report/summary.json`): per model its accuracy, speed and
closeness to the teacher, and how often a student wins at a fixed time budget.

    students[student]                 its training stages: per stage `seconds` (of its steps), `tokens`,
                                      `peak_memory_gb`, and `kl_to_teacher` / `top1_agreement` on the held-out
                                      teacher text right after the stage (for MOHAWK: after stages 1, 2 and 3)
    pareto_fraction[metric][student]  fraction of `n` log-spaced time budgets, from the teacher's k=1 time to
                                      its largest-k time, at which the student's best point within the budget
                                      is at least the teacher's best point within it
    ratios[student]                   the student's pass@1, pass@K and maj@K (largest K) over the teacher's

Every accuracy figure has its 95% interval beside it (`pass@1_ci95`, `ratios_ci95`, `pareto_fraction_ci95`:
[lo, hi], or null for a run scored before the intervals existed): a bootstrap over problems, paired for the
ratios and the budget wins (thinkfast/evaluation/uncertainty.py); `ci95_method` says so in words.
"""

from __future__ import annotations

import datetime as dt
import math
import sys

import numpy as np

from thinkfast.evaluation import uncertainty


def log_budgets(low: float, high: float, n: int) -> list[float]:
    if n == 1 or high <= low:
        return [high]
    return [low * (high / low) ** (i / (n - 1)) for i in range(n)]


def _budgets(teacher: dict, n: int) -> list[float]:
    times = sorted(teacher["seconds"].values())
    return log_budgets(times[0], times[-1], n)


def _curve(score: dict, metric: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The model's k that have both a time and a value of `metric`: the k, their mean values, their seconds."""
    ks = [k for k in score["seconds"] if k in score["metrics"].get(metric, {})]
    return (ks, np.array([score["metrics"][metric][k]["mean"] for k in ks], dtype=float),
            np.array([score["seconds"][k] for k in ks], dtype=float))


def budget_wins(teacher: np.ndarray, teacher_seconds: np.ndarray, student: np.ndarray, student_seconds: np.ndarray,
                budgets: list[float]) -> np.ndarray:
    """Fraction of `budgets` at which the student's best value within the budget is at least the teacher's
    (a student with no k within a budget loses it; a teacher with none there, wins it for the student).
    teacher, student: (..., K) the value at each of the model's k, leading axes for bootstrap resamples;
    *_seconds: (K,) the time of each k, fixed."""
    def best(values, seconds, budget):  # -inf where no k fits
        return np.where(seconds <= budget * (1 + 1e-9), values, -np.inf).max(-1, initial=-np.inf)

    wins = []
    for budget in budgets:
        t, s = best(teacher, teacher_seconds, budget), best(student, student_seconds, budget)
        wins.append((s > -np.inf) & (s >= t - 1e-12))
    return np.mean(wins, axis=0)


def pareto_fraction(scores: dict, metric: str, student: str, n: int = 20) -> float | None:
    teacher = scores.get("teacher")
    if teacher is None or student not in scores:
        return None
    _, t_values, t_seconds = _curve(teacher, metric)
    _, s_values, s_seconds = _curve(scores[student], metric)
    return float(budget_wins(t_values, t_seconds, s_values, s_seconds, _budgets(teacher, n)))


def _per_problem(score: dict, metric: str, ks: list[str]) -> tuple[list, np.ndarray] | None:
    """(problem ids, (problems, len(ks)) values) of a figure, or None where the score keeps none (older runs)."""
    kept = score.get("per_problem") or {}
    values = (kept.get("values") or {}).get(metric) or {}
    if not kept or any(k not in values for k in ks):
        return None
    return kept["problem_ids"], np.array([values[k] for k in ks], dtype=float).reshape(len(ks), -1).T


def _paired(teacher: dict, student: dict, metric: str, teacher_ks: list[str], student_ks: list[str]):
    """Both models' per-problem values on the same problems, or None (missing, or other problems)."""
    t, s = _per_problem(teacher, metric, teacher_ks), _per_problem(student, metric, student_ks)
    if t is None or s is None or list(t[0]) != list(s[0]):
        return None
    return t[1], s[1]


def pareto_fraction_ci(scores: dict, metric: str, student: str, n: int = 20) -> list[float] | None:
    """Paired 95% interval of `pareto_fraction`: both curves recomputed on each resample, the times fixed."""
    teacher = scores.get("teacher")
    if teacher is None or student not in scores:
        return None
    t_ks, _, t_seconds = _curve(teacher, metric)
    s_ks, _, s_seconds = _curve(scores[student], metric)
    pair = _paired(teacher, scores[student], metric, t_ks, s_ks)
    if pair is None:
        return None
    budgets = _budgets(teacher, n)
    return uncertainty.as_json(uncertainty.interval(
        lambda t, s: budget_wins(t, t_seconds, s, s_seconds, budgets), *pair))


def _largest_k(score: dict, metric: str) -> str:
    return max(score["metrics"][metric], key=int)


def _headline(score: dict) -> list[tuple[str, str]]:
    """(metric, k) of the headline figures: pass@1, pass@K and maj@K at the largest k."""
    found = [("pass", "1"), ("pass", _largest_k(score, "pass"))] if score["metrics"].get("pass") else []
    return found + ([("maj", _largest_k(score, "maj"))] if score["metrics"].get("maj") else [])


def ratios(teacher: dict, student: dict) -> tuple[dict, dict]:
    """The student's headline figures over the teacher's, and their paired 95% intervals."""
    values, intervals = {}, {}
    for metric, k in _headline(teacher):
        t, s = teacher["metrics"][metric].get(k), student["metrics"].get(metric, {}).get(k)
        if t is None or s is None:
            continue
        values[f"{metric}@{k}"] = s["mean"] / t["mean"] if t["mean"] > 0 else None
        pair = _paired(teacher, student, metric, [k], [k])
        intervals[f"{metric}@{k}"] = None if pair is None else uncertainty.as_json(uncertainty.ratio_interval(
            pair[1][:, 0], pair[0][:, 0]))
    return values, intervals


STAGE_KEYS = ("name", "steps", "seconds", "tokens", "peak_memory_gb", "kl_to_teacher", "top1_agreement")


def _training(info: dict) -> dict:
    """A student's training stages (MOHAWK: stage1-1, stage2-2, stage3-3): `seconds` of its steps, `tokens`,
    `peak_memory_gb` (CUDA; null elsewhere) and the held-out KL / top-1 agreement measured right after it
    (null without held-out data); `init`: the same measured on the converted student."""
    init = ((info.get("fidelity") or {}).get("init")) or {}
    return {"recipe": info.get("recipe"),
            "init": {key: init.get(key) for key in ("kl_to_teacher", "top1_agreement")},
            "stages": [{key: stage.get(key) for key in STAGE_KEYS} for stage in info.get("stages", [])]}


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
        "students": {name: _training(info) for name, info in distill.items()},
        "eval_sets": {},
    }
    # served name -> (student, its SSM state dtype while served): `hybrid`, `hybrid-bf16-state`, ...
    student_of = {name: (student, dtype) for name, student, dtype in cfg.served_students()}
    for set_name, info in results.get("eval", {}).items():
        if "scores" not in info:
            continue
        scores = info["scores"]
        models = {}
        for name, score in scores.items():
            row = {}
            for metric in ("pass", "maj"):
                if metric in score["metrics"]:
                    for k in ("1", _largest_k(score, metric)):  # each figure with its 95% interval beside it
                        entry = score["metrics"][metric].get(k) or {}
                        row[f"{metric}@{k}"] = entry.get("mean")
                        row[f"{metric}@{k}_ci95"] = entry.get("ci95")
            sp = speed.get(name) or {}
            student, state_dtype = student_of.get(name, (name, None))  # the same weights, served with this state
            sp = (sp.get("evals") or {}).get(set_name) or sp  # this eval set's own lengths and best batch
            points = fidelity_points(distill.get(student) or {})
            fid = points[-1][1] if points else {}  # the last measurement: "final", or MOHAWK's last stage
            row.update(mean_tokens=score.get("mean_tokens"), tokens_per_s=sp.get("decode_tokens_per_s"),
                       best_batch=sp.get("best_batch", sp.get("batch_size")),
                       kl_to_teacher=0.0 if name == "teacher" else fid.get("kl_to_teacher"),
                       top1_agreement=1.0 if name == "teacher" else fid.get("top1_agreement"))
            if state_dtype is not None:
                row.update(student=student, ssm_state_dtype=state_dtype)
            models[name] = row
        students = [name for name in scores if name != "teacher"]
        fractions = {metric: {name: pareto_fraction(scores, metric, name, n_budgets) for name in students}
                     for metric in ("pass", "maj")}
        fraction_cis = {metric: {name: pareto_fraction_ci(scores, metric, name, n_budgets) for name in students}
                        for metric in ("pass", "maj")}
        paired = {name: ratios(scores["teacher"], scores[name]) for name in students if "teacher" in scores}
        summary["eval_sets"][set_name] = {
            "models": models, "pareto_fraction": fractions, "pareto_fraction_ci95": fraction_cis,
            "ratios": {name: r for name, (r, _) in paired.items()},
            "ratios_ci95": {name: ci for name, (_, ci) in paired.items()},
            "ci95_method": uncertainty.describe(next(iter(scores.values())).get("problems")),
        }
    return summary


def _pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def fidelity_points(info: dict) -> list[tuple[str, dict]]:
    """A student's held-out fidelity measurements in training order: (point name, its record), e.g. init, align,
    final (hybrid) or init, stage1-1, stage2-2, stage3-3 (MOHAWK)."""
    fid = info.get("fidelity") or {}
    return [(key, fid[key]) for key in fid if isinstance(fid[key], dict) and "kl_to_teacher" in fid[key]]


def fidelity_series(results: dict) -> dict[str, list[tuple[str, float, float]]]:
    """{student: [(point, KL, top-1), ...]} for `plots.plot_fidelity`; students without measurements left out."""
    out = {name: [(key, p["kl_to_teacher"], p["top1_agreement"]) for key, p in fidelity_points(info)]
           for name, info in (results.get("distill") or {}).items()}
    return {name: points for name, points in out.items() if points}


def fidelity_section(results: dict) -> list[str]:
    """Distillation quality table: KL / top-1 agreement at conversion, after alignment and at the end."""
    rows = []
    for name, info in (results.get("distill") or {}).items():
        for key, point in fidelity_points(info):
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


def ratio_section(summary: dict) -> list[str]:
    lines = []
    for set_name, data in summary["eval_sets"].items():
        for student, values in data.get("ratios", {}).items():
            cis = data.get("ratios_ci95", {}).get(student, {})
            figures = [f"{key} {value:.2f}{uncertainty.text(cis.get(key), 1, 2)}"
                       for key, value in values.items() if value is not None]
            if figures:
                lines.append(f"- {set_name}: `{student}` ÷ teacher: " + ", ".join(figures))
    return ["", "## Students against the teacher", "",
            "Ratio of each student's figure to the teacher's, with its paired 95% interval (the same resampled "
            "problems for both).", "", *lines] if lines else []


def pareto_section(summary: dict) -> list[str]:
    lines = []
    for set_name, data in summary["eval_sets"].items():
        for metric, per_student in data["pareto_fraction"].items():
            for student, fraction in per_student.items():
                if fraction is not None:
                    ci = uncertainty.text(data.get("pareto_fraction_ci95", {}).get(metric, {}).get(student), 100, 0)
                    lines.append(f"- {set_name}, {metric}@k: `{student}` is at least the teacher at {fraction:.0%}{ci} "
                                 "of 20 log-spaced time budgets (teacher's k=1 time to its largest-k time)")
    return ["", "## Who wins at a fixed time budget", "", "In brackets: the paired 95% interval (both curves recomputed "
            "on the same resampled problems, the time per sample fixed).", "", *lines] if lines else []
