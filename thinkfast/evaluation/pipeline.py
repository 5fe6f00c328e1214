"""sample -> grade -> score -> plot -> report, per model, on files under `cfg.out_dir`.

Layout: out_dir/<model>/samples.shardNNN-of-MMM.jsonl (sampling, resumable), out_dir/<model>/samples.jsonl
(merged + graded), out_dir/scores.json, out_dir/<metric>.png, out_dir/report.md, out_dir/verdicts.sqlite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from thinkfast import storage
from thinkfast.config import to_dict
from thinkfast.errors import ThinkfastError
from thinkfast.evaluation import budget, parallel, store, uncertainty
from thinkfast.evaluation.config import EvalConfig, ModelSpec
from thinkfast.evaluation.datasets import ProblemSet, load_problems
from thinkfast.evaluation.grading import Grader, cluster_many, extract_answer
from thinkfast.evaluation.loading import LoadedModel, load_model_for_eval
from thinkfast.evaluation.metrics import ProblemSamples, all_metrics
from thinkfast.evaluation.plots import Curve, plot_scaling
from thinkfast.evaluation.prm import aggregate
from thinkfast.evaluation.prompts import load_template, render_prompt
from thinkfast.evaluation.report import METRIC_NAMES, write_report
from thinkfast.evaluation.synthetic import synthetic_problems

STEPS = ("sample", "grade", "score", "plot", "report")


def _progress(cfg: EvalConfig, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not cfg.progress)


def model_dir(cfg: EvalConfig, spec: ModelSpec) -> Path:
    return Path(cfg.out_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name)


def load_problem_set(cfg: EvalConfig) -> ProblemSet:
    d = cfg.dataset
    if d.name == "synthetic":
        result = synthetic_problems(d.synthetic_n, d.synthetic_steps, d.synthetic_max_operand, d.synthetic_seed)
        result.problems = result.problems[: d.limit] if d.limit else result.problems
    else:
        result = load_problems(d.name, d.data_dir, d.split, d.limit, d.on_error)
    if result.skipped:
        print(f"dataset {result.name}: skipped {len(result.skipped)} bad rows (first: {result.skipped[0]})")
    return result


def _batches(todo: list[tuple[int, list[int]]], per_batch: int) -> list[list[tuple[int, list[int]]]]:
    """Consecutive problems needing the same sample indices, at most `per_batch` per batch."""
    out: list[list[tuple[int, list[int]]]] = []
    for item in todo:
        if out and len(out[-1]) < per_batch and out[-1][-1][1] == item[1]:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def problem_key(problem_id: str) -> int:
    """A stable 62-bit identity of a problem, for its samples' seeds."""
    return int.from_bytes(hashlib.blake2b(str(problem_id).encode("utf-8"), digest_size=8).digest(), "big") >> 2


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def sample_model(cfg: EvalConfig, spec: ModelSpec, problems: ProblemSet, loaded: LoadedModel | None = None) -> int:
    """Sample the missing (problem, sample) rows of the selected shards; returns rows written.

    Sample j of a problem is seeded by (sampling.seed, problem id, j) when the sampler supports it (our
    engine does): a sample redone after a kill, or sampled with another `problems_per_batch`, is the same
    sample.  Other samplers get one seed per call (sampling.seed + first problem x n + first sample)."""
    template = load_template(cfg.prompt)
    shards = list(cfg.shards if cfg.shards is not None else range(cfg.num_shards))
    with contextlib.ExitStack() as held:  # every selected store locked before the model loads
        stores = {shard: held.enter_context(store.SampleStore(store.shard_path(model_dir(cfg, spec), shard, cfg.num_shards)))
                  for shard in shards}
        todos = {}
        for shard in shards:
            start, end = store.shard_range(len(problems.problems), cfg.num_shards, shard)
            todos[shard] = [(pi, missing) for pi in range(start, end)
                            if (missing := [j for j in range(cfg.n_samples)
                                            if (problems.problems[pi].id, j) not in stores[shard].done])]
        if not any(todos.values()):
            return 0  # everything sampled already: the model is not even loaded
        loaded = loaded or load_model_for_eval(spec)
        if cfg.use_chat_template and loaded.tokenizer is None:
            raise ThinkfastError(f"model {spec.name!r} has no tokenizer to apply a chat template; set use_chat_template: false")
        by_identity = _accepts(loaded.sampler.sample, "keys") and _accepts(loaded.sampler.sample, "sample_ids")
        prompts = {pi: render_prompt(loaded.tokenizer, template, problems.problems[pi].question, cfg.use_chat_template)
                   for todo in todos.values() for pi, _ in todo}
        check = getattr(loaded.sampler, "check", None)
        if callable(check):  # refuse now, naming the problem, rather than cut samples silently
            order = sorted(prompts)
            try:
                check([prompts[pi] for pi in order], cfg.sampling,
                      [f"problem {problems.problems[pi].id} (index {pi})" for pi in order])
            except ThinkfastError as err:
                raise ThinkfastError(f"model {spec.name!r}: {err}") from None
        return sum(_sample_shard(cfg, spec, problems, loaded, stores[shard], todos[shard], prompts, shard, by_identity)
                   for shard in shards if todos[shard])


def _sample_shard(cfg, spec, problems, loaded, sample_store, todo, prompts, shard, by_identity) -> int:
    bar = _progress(cfg, sum(len(m) for _, m in todo), f"sample {spec.name} shard {shard}", "sample")
    params_dict = to_dict(cfg.sampling)
    written, started = 0, time.perf_counter()
    for batch in _batches(todo, cfg.problems_per_batch):
        first_pi, missing = batch[0][0], batch[0][1]
        batch_prompts = [prompts[pi] for pi, _ in batch]
        t0 = time.perf_counter()
        if by_identity:
            seed = cfg.sampling.seed
            keys = [problem_key(problems.problems[pi].id) for pi, _ in batch]
            completions = loaded.sampler.sample(batch_prompts, len(missing), cfg.sampling, keys=keys, sample_ids=missing)
        else:
            seed = None if cfg.sampling.seed is None else cfg.sampling.seed + first_pi * cfg.n_samples + missing[0]
            completions = loaded.sampler.sample(batch_prompts, len(missing), dataclasses.replace(cfg.sampling, seed=seed))
        per_sample = (time.perf_counter() - t0) / (len(batch) * len(missing))
        rows = []
        for (pi, _), comps in zip(batch, completions):
            if len(comps) != len(missing):
                raise ThinkfastError(f"sampler returned {len(comps)} samples for a prompt, expected {len(missing)}")
            problem = problems.problems[pi]
            for j, comp in zip(missing, comps):
                rows.append(store.make_row(
                    problem_id=problem.id, problem_index=pi, sample_index=j, model=spec.name, params=params_dict,
                    seed=seed, text=comp.text, num_tokens=len(comp.token_ids), finish_reason=comp.finish_reason,
                    seconds=per_sample, gold=problem.gold,
                ))
        written += sample_store.append(rows)
        bar.update(len(rows))
    bar.close()
    from thinkfast.inference.engine import describe_stats

    totals = getattr(loaded.sampler, "totals", None)
    engine_line = f" ({describe_stats(totals)})" if totals else ""
    print(f"[thinkfast] {spec.name}: {written} samples in {time.perf_counter() - started:.1f} s{engine_line}", flush=True)
    return written


def _load_prm(cfg: EvalConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinkfast.evaluation.prm import RLHFlowPRM

    tok = AutoTokenizer.from_pretrained(cfg.prm.path)
    model = AutoModelForCausalLM.from_pretrained(cfg.prm.path)
    return RLHFlowPRM(model, tok, cfg.prm.batch_size, cfg.prm.device)


def _sampled_shard_count(mdir: Path, num_shards: int) -> int:
    """`num_shards`, unless the samples were cut otherwise (several processes pick their own count) and
    only that one layout exists: `eval grade` after a torchrun / --gpus sample needs no --set."""
    found = parallel.existing_shard_counts(mdir)
    if num_shards in found or len(found) != 1:
        return num_shards
    return found.pop()


def grade_model(cfg: EvalConfig, spec: ModelSpec, problems: ProblemSet, grader: Grader, prm=None) -> list[dict]:
    """Merge shards (checking duplicates and missing rows), extract, grade, cluster, PRM-score."""
    mdir = model_dir(cfg, spec)
    num_shards = _sampled_shard_count(mdir, cfg.num_shards)
    paths = [store.shard_path(mdir, s, num_shards) for s in range(num_shards)]
    expected = [(p.id, j) for p in problems.problems for j in range(cfg.n_samples)]
    rows = store.merge_shards([p for p in paths if p.exists()], expected)
    gold_of = {p.id: p.gold for p in problems.problems}
    question_of = {p.id: p.question for p in problems.problems}
    rows = [r for r in rows if r["problem_id"] in gold_of]  # a --set dataset.limit=... run ignores extras
    for row in rows:
        row["answer"] = extract_answer(row["text"])
        row["gold"] = gold_of[row["problem_id"]]
    verdicts = grader.equivalent_many([(r["gold"], r["answer"]) for r in rows], desc=f"grade {spec.name}")
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for row, verdict in zip(rows, verdicts):
        row["verdict"] = verdict
        by_problem[row["problem_id"]].append(row)
    groups = list(by_problem.values())
    clusters = cluster_many([[r["answer"] for r in g] for g in groups], grader.equivalent_many)
    for group, ids in zip(groups, clusters):
        for row, cid in zip(group, ids):
            row["cluster"] = cid
    if prm is not None:
        bar = _progress(cfg, len(rows), f"PRM {spec.name}", "sample")
        for start in range(0, len(rows), cfg.prm.batch_size):
            chunk = rows[start : start + cfg.prm.batch_size]
            steps = prm.score_steps([question_of[r["problem_id"]] for r in chunk], [r["text"] for r in chunk])
            for row, s in zip(chunk, steps):
                row["prm_scores"], row["prm_score"] = s, aggregate(s, cfg.prm.aggregation)
            bar.update(len(chunk))
        bar.close()
    store.write_rows(mdir / "samples.jsonl", rows)
    return rows


def score_model(cfg: EvalConfig, spec: ModelSpec, skipped: int = 0) -> dict:
    rows = store.read_rows(model_dir(cfg, spec) / "samples.jsonl")
    if not rows or any(r.get("verdict") is None for r in rows):
        raise ThinkfastError(f"{spec.name}: no graded samples in {model_dir(cfg, spec)}; run `thinkfast eval grade` first")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["problem_id"]].append(r)
    problems = []
    for group in groups.values():
        scores = [r.get("prm_score") for r in group]
        problems.append(ProblemSamples(
            correct=np.array([bool(r["verdict"]) for r in group]),
            cluster=np.array([-1 if r["cluster"] is None else int(r["cluster"]) for r in group]),
            score=None if any(s is None for s in scores) else np.array(scores, dtype=float),
        ))
    results = all_metrics(problems, cfg.k_list, cfg.metrics, cfg.trials, cfg.metric_seed, cfg.exact_limit)
    sps, method = budget.model_seconds_per_sample(rows, spec.tokens_per_second)
    return {
        "problems": len(problems),
        "samples_per_problem": min(p.n for p in problems),
        "mean_tokens": budget.mean_tokens(rows),
        "seconds_per_sample": sps,
        "time_method": method,
        "timing": budget.timing_record(method, spec.timing, spec.batch_size, rows),
        "skipped": skipped,
        "seconds": {str(k): v for k, v in budget.seconds_for_k(cfg.k_list, sps).items()},
        "metrics": {m: {str(k): _metric_entry(r) for k, r in per_k.items()} for m, per_k in results.items()},
        # each problem's value of every figure, in `problem_ids` order: what the paired intervals resample
        "per_problem": {"problem_ids": list(groups),
                        "values": {m: {str(k): r.per_problem.tolist() for k, r in per_k.items()}
                                   for m, per_k in results.items()}},
    }


def _metric_entry(result) -> dict:
    """A figure as scores.json keeps it: mean ± std over subset draws, and its 95% interval over problems."""
    return {"mean": result.mean, "std": result.std, "exact": result.exact,
            "ci95": uncertainty.as_json(uncertainty.mean_interval(result.per_problem))}


def plot_scores(cfg: EvalConfig, scores: dict) -> dict[str, str]:
    paths = {}
    metrics = sorted({m for d in scores.values() for m in d["metrics"]}, key=["pass", "maj", "bon", "wbon"].index)
    for metric in metrics:
        curves = []
        for model, d in scores.items():
            per_k = d["metrics"].get(metric, {})
            ks = sorted(int(k) for k in per_k)
            if ks:
                curves.append(Curve(model, ks, [per_k[str(k)]["mean"] for k in ks], [per_k[str(k)]["std"] for k in ks],
                                    [d["seconds"][str(k)] for k in ks]))
        paths[metric] = plot_scaling(curves, METRIC_NAMES[metric], Path(cfg.out_dir) / f"{metric}.png",
                                     f"{METRIC_NAMES[metric]} on {cfg.dataset.name}")
    return paths


def _read_scores(cfg: EvalConfig) -> dict:
    path = Path(cfg.out_dir) / "scores.json"
    if not path.is_file():
        raise ThinkfastError(f"{path} does not exist; run `thinkfast eval score` first")
    return json.loads(path.read_text())


def run(cfg: EvalConfig, steps: list[str] | tuple[str, ...] = STEPS) -> dict:
    """Run the given steps in pipeline order for every model in `cfg.models`; returns what they produced."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ThinkfastError(f"unknown step(s) {sorted(unknown)}; use {list(STEPS)} or all")
    if not cfg.models and ({"sample", "grade", "score"} & set(steps)):
        raise ThinkfastError("no models configured; add `models:` to the config or pass --model")
    out: dict = {}
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    problems = load_problem_set(cfg) if {"sample", "grade", "score"} & set(steps) else None
    ranks = parallel.from_env()
    if "sample" in steps:  # each shard store locks itself: shards may be sampled by parallel processes
        if ranks.enabled:  # torchrun: this rank's shards, a barrier, then rank 0 alone goes on
            out["sampled"], cfg = parallel.sample_torchrun(cfg, problems, ranks)
        elif cfg.gpus > 1:
            out["sampled"], cfg = parallel.sample_local(cfg, problems, cfg.gpus)
        else:
            out["sampled"] = {spec.name: sample_model(cfg, spec, problems) for spec in cfg.models}
    if ranks.rank != 0:
        return out
    if set(steps) - {"sample"}:
        with storage.FolderLock(cfg.out_dir, f"evaluation folder {cfg.out_dir}"):
            _after_sampling(cfg, steps, problems, out)
    return out


def _after_sampling(cfg: EvalConfig, steps, problems, out: dict) -> None:
    if "grade" in steps:
        prm = _load_prm(cfg) if cfg.prm.path else None
        with Grader(cfg.grading_timeout, cfg.grading_workers, Path(cfg.out_dir) / "verdicts.sqlite", cfg.progress) as grader:
            for spec in cfg.models:
                grade_model(cfg, spec, problems, grader, prm)
            out["grading_timeouts"] = grader.timeouts
    if "score" in steps:
        scores = {spec.name: score_model(cfg, spec, len(problems.skipped)) for spec in cfg.models}
        storage.atomic_write_json(Path(cfg.out_dir) / "scores.json", scores)
        out["scores"] = scores
    if "plot" in steps:
        out["plots"] = plot_scores(cfg, out.get("scores") or _read_scores(cfg))
    if "report" in steps:
        scores = out.get("scores") or _read_scores(cfg)
        plots = out.get("plots") or {m: str(Path(cfg.out_dir) / f"{m}.png") for m in ("pass", "maj", "bon", "wbon")
                                     if (Path(cfg.out_dir) / f"{m}.png").exists()}
        out["report"] = write_report(scores, plots, Path(cfg.out_dir) / "report.md",
                                     f"Test-time scaling on {cfg.dataset.name}")
