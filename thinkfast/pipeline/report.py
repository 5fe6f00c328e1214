"""The run report: Markdown + PNGs + JSON, every number taken from the stage results."""

from __future__ import annotations

import datetime as dt
import json
import shutil

from thinkfast.evaluation import uncertainty
from thinkfast.evaluation.budget import describe_timing
from thinkfast.evaluation.plots import plot_fidelity
from thinkfast.pipeline.config import RunConfig
from thinkfast.pipeline.summary import fidelity_section, fidelity_series, pareto_section, ratio_section, run_summary
from thinkfast.storage import atomic_write_text

METRIC_TITLES = {"pass": "coverage (pass@k)", "maj": "accuracy (majority vote, maj@k)"}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _within_budget(score: dict, metric: str, budget: float) -> tuple[float, int] | None:
    """Best metric value reachable within `budget` seconds per problem, and the k that reaches it."""
    best = None
    for k, seconds in score["seconds"].items():
        value = score["metrics"].get(metric, {}).get(k, {}).get("mean")
        if value is not None and seconds <= budget * (1 + 1e-9) and (best is None or value > best[0]):
            best = (value, int(k))
    return best


def budget_table(scores: dict, metric: str) -> tuple[list[str], list[dict]]:
    """Rows at the teacher's time for each k: what every model reaches in that time."""
    names = list(scores)
    reference = scores.get("teacher") or scores[names[0]]
    rows = []
    for k, budget in sorted(reference["seconds"].items(), key=lambda kv: kv[1]):
        row = {"budget_s": budget, "teacher_k": int(k)}
        for name in names:
            row[name] = _within_budget(scores[name], metric, budget)
        reached = {n: v[0] for n, v in ((n, row[n]) for n in names) if v is not None}
        row["best"] = max(reached, key=reached.get) if reached else None
        rows.append(row)
    return names, rows


def _models_section(cfg: RunConfig, results: dict) -> list[str]:
    speed = results.get("speed", {})
    teacher_tps = (speed.get("teacher") or {}).get("decode_tokens_per_s")
    lines = [
        "## Models", "",
        "| model | layers | parameters | decode state / sequence at 4096 tokens (KV + SSM/conv) | decode tok/s | vs teacher |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name, facts in results["convert"]["models"].items():
        trained = (results.get("sft") or {}).get(name) or (results.get("distill") or {}).get(name) or {}
        facts = trained.get("model", facts)  # the layout after training (attention_layers: auto changes it)
        layers = ", ".join(f"{n} {kind}" for kind, n in facts["layers"].items())
        served = [(name, None)] if name == "teacher" else [(n, d) for n, student, d in cfg.served_students()
                                                             if student == name]
        for served_name, state_dtype in served:
            recurrent = (facts.get("recurrent_bytes_by_state_dtype") or {}).get(state_dtype, facts["recurrent_bytes"])
            tps = (speed.get(served_name) or {}).get("decode_tokens_per_s")
            ratio = f"{tps / teacher_tps:.2f}×" if tps and teacher_tps else "—"
            label = served_name if len(served) == 1 else f"{served_name} ({state_dtype} SSM state)"
            lines.append(f"| {label} | {layers} | {facts['parameters'] / 1e6:.1f} M | "
                         f"{_mib(facts['kv_bytes_4096'])} + {_mib(recurrent)} | {f'{tps:,.0f}' if tps else '—'} | {ratio} |")
    lines += _throughput_table(speed)
    return lines


def _throughput_table(speed: dict) -> list[str]:
    """Where every time budget comes from: each model at its best batch, at each eval set's lengths."""
    rows = [(name, ename, info) for name, s in speed.items() for ename, info in (s.get("evals") or {}).items()]
    if not rows:
        return []
    any_speed = next(iter(speed.values()))
    temps = {info.get("temperature") for _, _, info in rows if "skipped" not in info}
    temp = temps.pop() if len(temps) == 1 else None
    sampler = ("greedy" if temp == 0 else f"sampling at T = {temp:g} as the eval does") if temp is not None else "greedy"
    lines = ["", f"Decode throughput for the time budgets (our engine, {sampler}, prefill excluded, "
                 f"{any_speed.get('dtype')} on {any_speed.get('device')}): each model at its best feasible batch, "
                 "at each eval set's own prompt and generation lengths. The decode tok/s column above is the "
                 "first eval set's.", "",
             "| model | eval set | method | prompt + gen tokens | tok/s by batch | best batch | tok/s |",
             "|---|---|---|---|---|---:|---:|"]
    for name, ename, info in rows:
        if "skipped" in info:
            lines.append(f"| {name} | {ename} | — | — | skipped: {info['skipped'][:80]} | — | — |")
            continue
        sweep = ", ".join(f"{s['batch']}: {s['tokens_per_s']:,.0f}" if s.get("fits") else f"{s['batch']}: does not fit"
                          for s in info["sweep"])
        lines.append(f"| {name} | {ename} | {info['method']} | {info['prompt_tokens']} + {info['new_tokens']} | {sweep} | "
                     f"{info['batch_size']} | {info['decode_tokens_per_s']:,.0f} |")
    first = next((info for _, _, info in rows if "skipped" not in info), None)
    if first:
        lines += ["", f"Prompt length: {first.get('prompt_tokens_from')}; generation length: "
                      f"{first.get('new_tokens_from')}."]
    return lines


def _training_section(results: dict) -> list[str]:
    lines = ["", "## Distillation", "", "| model | stage | steps | loss first → last | tokens/s |", "|---|---|---:|---|---:|"]
    for stage_name in ("distill", "sft"):
        for name, info in (results.get(stage_name) or {}).items():
            for st in info["stages"]:
                tps = f"{st['tokens_per_s']:,.0f}" if st["tokens_per_s"] else "—"
                lines.append(f"| {name} | {info['recipe']} {st['name']} | {st['steps']} | "
                             f"{st['loss_first']:.3f} → {st['loss_last']:.3f} | {tps} |")
    return lines


def _figure(entry: dict) -> str:
    """A figure in percent with its 95% interval, e.g. `11.0% [9.1–13.0]`."""
    return f"{100 * entry['mean']:.1f}%{uncertainty.text(entry.get('ci95'))}"


def _fmt(value: tuple[float, int] | None, score: dict, metric: str) -> str:
    return "—" if value is None else f"{_figure(score['metrics'][metric][str(value[1])])} (k={value[1]})"


def _eval_section(name: str, info: dict, paths) -> tuple[list[str], dict]:
    if "skipped" in info:
        return ["", f"## {name}", "", f"Skipped: {info['skipped']}"], {}
    scores = info["scores"]
    lines = ["", f"## {name}: test-time scaling", "", "Time per sample, by model (method, batch, lengths):", ""]
    lines += [f"- {model}: {describe_timing(s.get('timing') or {'method': s.get('time_method')})}"
              for model, s in scores.items()]
    lines += ["", uncertainty.legend(next(iter(scores.values())).get("problems")), ""]
    figures = {}
    for metric, title in METRIC_TITLES.items():
        ks = list(next(iter(scores.values()))["seconds"])
        lines += [f"### {title}", "", "| model | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for model, s in scores.items():
            cells = [f"{_figure(s['metrics'][metric][k])} ({s['seconds'][k]:.3g}s)" for k in ks]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        plot = info.get("plots", {}).get(metric)
        if plot:
            target = paths.report / f"{name}-{metric}.png"
            shutil.copyfile(paths.abs(plot), target)
            lines += ["", f"![{title} on {name}]({target.name})"]
        names, rows = budget_table(scores, metric)
        lines += ["", f"Under a fixed time budget per problem ({title}; budgets = the teacher's time for k samples):", "",
                  "| budget (s) | " + " | ".join(names) + " | best |", "|---:|" + "---|" * (len(names) + 1)]
        for row in rows:
            lines.append(f"| {row['budget_s']:.3g} | " + " | ".join(_fmt(row[n], scores[n], metric) for n in names) + f" | {row['best'] or '—'} |")
        figures[metric] = rows
        lines.append("")
    return lines, figures


HOW_TO_READ = """## How to read this report

Each chart has two panels. Left: coverage (pass@k: some sample is right) or accuracy (majority vote)
against k, the number of samples per problem. Right: the same points against the time those k samples
cost, seconds per problem, from each model's measured decode throughput (M1's method:
k × mean tokens per sample ÷ tokens/s) or the measured sampling wall time. The dashed line is the Pareto
front over all models: for each time budget, the best result any model reaches. A student whose points lie
on the front beats the teacher at that budget, because its speed buys it more samples than the teacher can
afford; where the teacher's points form the front, the student's extra samples do not make up for its
lower per-sample quality (expected when distillation was short).
"""


def write_run_report(cfg: RunConfig, paths, results: dict) -> dict:
    paths.report.mkdir(parents=True, exist_ok=True)
    lines = [
        "# thinkfast run report", "",
        f"Teacher `{cfg.teacher}`; students: " + ", ".join(f"`{s.name}` ({s.target}, {s.recipe})" for s in cfg.students)
        + f". Written {dt.datetime.now().isoformat(timespec='seconds')}; run directory `{paths.root}`.",
        "",
    ]
    summary = run_summary(cfg, results)
    lines += _models_section(cfg, results)
    lines += _training_section(results)
    lines += fidelity_section(results)
    series = fidelity_series(results)
    if series:
        plot_fidelity(series, paths.report / "fidelity.png", "held-out fidelity to the teacher by stage")
        lines += ["", "![Distillation quality by stage](fidelity.png)"]
    budget_figures = {}
    for name, info in results.get("eval", {}).items():
        section, figures = _eval_section(name, info, paths)
        lines += section
        budget_figures[name] = figures
    lines += ratio_section(summary)
    lines += pareto_section(summary)
    lines += ["", HOW_TO_READ]
    atomic_write_text(paths.report / "summary.json", json.dumps(summary, indent=1, default=str))
    everything = {"config_out_dir": str(paths.root), "stages": results, "budget_tables": budget_figures}
    atomic_write_text(paths.report / "report.json", json.dumps(everything, indent=1, default=str))
    atomic_write_text(paths.report / "report.md", "\n".join(lines) + "\n")
    print(f"  report: {paths.report / 'report.md'}")
    return {"report": paths.rel(paths.report / "report.md"), "json": paths.rel(paths.report / "report.json")}
