"""`thinkfast run` end to end on a tiny teacher: report written from measured numbers, cached stages
reused, a run killed inside a stage finishes on restart without redoing finished stages."""

import json
import shutil

import pytest
import torch

from tests.evaluation.tiny import save_tiny
from thinkfast.config import load_config, to_dict
from thinkfast.errors import ThinkfastError
from thinkfast.pipeline import STAGES, RunConfig, run_pipeline
from thinkfast.pipeline import runner, stages


def _config(teacher: str, out_dir) -> RunConfig:
    return load_config(RunConfig, {
        "teacher": teacher,
        "out_dir": str(out_dir),
        "students": [
            {"name": "hybrid", "target": "hybrid", "keep_attention": 1, "recipe": "distill",
             "train": {"max_steps": 3, "save_every": 1, "data": {"seq_len": 192}, "optim": {"lr": 1e-3, "warmup": 0}}},
            {"name": "pure", "target": "llamba", "recipe": "mohawk",
             "train": {"data": {"seq_len": 192}, "save_every": 1,
                       "stages": [{"stage": 1, "max_steps": 1}, {"stage": 2, "max_steps": 1}, {"stage": 3, "max_steps": 2}]}},
        ],
        "kd_data": {"synthetic_problems": 4, "gsm8k_problems": 0, "max_new_tokens": 12, "batch_size": 8,
                    "keep_truncated": True},
        "speed": {"batches": [2, 4], "method": "full"},
        "eval_sets": [{"dataset": {"name": "synthetic", "synthetic_n": 3, "synthetic_steps": 1}, "prompt": "plain"}],
        "n_samples": 2, "k_list": [1, 2],
        "sampling": {"temperature": 0.8, "max_new_tokens": 6, "seed": 0},
        "eval_batch_size": 8, "grading_workers": 1,
    })


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("teacher") / "tiny", hidden=64, layers=2)


@pytest.fixture(scope="module")
def finished(teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "main"
    cfg = _config(teacher_dir, out)
    return cfg, run_pipeline(cfg)


def _counting(monkeypatch, fail_in: str | None = None):
    calls = []
    for name, fn in list(stages.STAGE_FUNCTIONS.items()):
        def wrapped(cfg, paths, results, _fn=fn, _name=name):
            calls.append(_name)
            out = _fn(cfg, paths, results)
            if _name == fail_in:
                raise KeyboardInterrupt(f"killed in {_name}")  # after the work, before the marker
            return out
        monkeypatch.setitem(runner.STAGE_FUNCTIONS, name, wrapped)
    return calls


def test_report_holds_the_measured_numbers(finished):
    cfg, results = finished
    root = stages.RunPaths(cfg.out_dir)
    report = json.loads(root.abs(results["report"]["json"]).read_text())
    speed = results["speed"]
    assert set(speed) == {"teacher", "hybrid", "pure"}
    md = root.abs(results["report"]["report"]).read_text()
    for name, info in speed.items():
        assert info["decode_tokens_per_s"] > 0
        assert f"{info['decode_tokens_per_s']:,.0f}" in md  # the table shows what the speed stage measured
        measured = info["evals"]["synthetic-1step"]
        assert [x["batch"] for x in measured["sweep"]] == [2, 4] and measured["new_tokens"] == 6  # max_new_tokens
        assert measured["batch_size"] in (2, 4) and measured["prompt_tokens"] > 4  # the set's own mean prompt
    scores = results["eval"]["synthetic-1step"]["scores"]
    assert report["stages"]["eval"]["synthetic-1step"]["scores"] == json.loads(json.dumps(scores))
    # M1's time method: seconds of k samples = k x tokens per sample / tok/s at the model's best batch
    for name, s in scores.items():
        measured = speed[name]["evals"]["synthetic-1step"]
        expect = s["mean_tokens"] / measured["decode_tokens_per_s"]
        assert s["seconds"]["2"] == pytest.approx(2 * expect, rel=1e-6)
        assert s["timing"]["batch"] == measured["batch_size"] and s["timing"]["method"] == "throughput"
        line = f"- {name}: throughput: k × mean tokens ÷ full-run decode tok/s at batch {measured['batch_size']} (best of 2, 4)"
        assert line in md  # the report says each model's time method, batch and lengths
    assert "![" in md and "| teacher |" in md
    assert "hybrid" in results["distill"] and results["distill"]["hybrid"]["stages"][0]["steps"] == 3
    assert len(results["distill"]["pure"]["stages"]) == 3


def test_summary_gives_every_figure_its_interval(finished):
    cfg, results = finished
    root = stages.RunPaths(cfg.out_dir)
    data = json.loads((root.report / "summary.json").read_text())["eval_sets"]["synthetic-1step"]
    for name, row in data["models"].items():
        for key in ("pass@1", "pass@2", "maj@1", "maj@2"):
            lo, hi = row[f"{key}_ci95"]
            assert lo <= row[key] + 1e-12 and row[key] <= hi + 1e-12, (name, key)
    for student in ("hybrid", "pure"):
        assert set(data["ratios_ci95"][student]) == set(data["ratios"][student]) == {"pass@1", "pass@2", "maj@2"}
        for metric in ("pass", "maj"):
            assert student in data["pareto_fraction"][metric] and student in data["pareto_fraction_ci95"][metric]
    md = root.abs(results["report"]["report"]).read_text()
    assert "bootstrap over the 3 problems" in md


def test_summary_gives_each_mohawk_stage_its_cost_and_fidelity(finished):
    """summary.json is the MOHAWK record the issue asks for: per stage seconds, tokens, peak memory (null off
    CUDA) and the held-out KL / top-1 agreement measured after that stage (fidelity.json's point)."""
    cfg, results = finished
    root = stages.RunPaths(cfg.out_dir)
    summary = json.loads((root.report / "summary.json").read_text())
    assert {"gpu", "date", "command"} <= set(summary)
    pure = summary["students"]["pure"]
    fidelity = results["distill"]["pure"]["fidelity"]
    assert pure["recipe"] == "mohawk" and [s["name"] for s in pure["stages"]] == ["stage1-1", "stage2-2", "stage3-3"]
    assert [s["steps"] for s in pure["stages"]] == [1, 1, 2]
    on_cuda = torch.cuda.is_available()  # the run's device is "auto"
    for stage in pure["stages"]:
        assert stage["seconds"] > 0 and stage["tokens"] > 0
        assert stage["peak_memory_gb"] > 0 if on_cuda else stage["peak_memory_gb"] is None
        assert stage["kl_to_teacher"] == fidelity[stage["name"]]["kl_to_teacher"] >= 0
        assert 0 <= stage["top1_agreement"] == fidelity[stage["name"]]["top1_agreement"] <= 1
    assert pure["init"]["kl_to_teacher"] == fidelity["init"]["kl_to_teacher"]
    assert summary["distill_seconds"] >= sum(s["seconds"] for s in pure["stages"])
    # the per-model block's figures are those after the last stage
    last = pure["stages"][-1]
    row = summary["eval_sets"]["synthetic-1step"]["models"]["pure"]
    assert (row["kl_to_teacher"], row["top1_agreement"]) == (last["kl_to_teacher"], last["top1_agreement"])
    hybrid = summary["students"]["hybrid"]["stages"]
    assert [s["name"] for s in hybrid] == ["train"] and hybrid[0]["kl_to_teacher"] == \
        results["distill"]["hybrid"]["fidelity"]["final"]["kl_to_teacher"]


def test_report_charts_each_students_fidelity_by_stage(finished):
    """The report draws the held-out KL / top-1 of every student at each training point (fidelity.png)."""
    from thinkfast.pipeline.summary import fidelity_series

    cfg, results = finished
    root = stages.RunPaths(cfg.out_dir)
    series = fidelity_series(results)
    assert [p[0] for p in series["pure"]] == ["init", "stage1-1", "stage2-2", "stage3-3"]
    assert series["hybrid"][0][0] == "init" and series["hybrid"][-1][0] == "final"
    assert (root.report / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Distillation quality by stage](fidelity.png)" in (root.report / "report.md").read_text()


def test_rerun_reuses_every_stage(finished, monkeypatch):
    cfg, _ = finished
    calls = _counting(monkeypatch)
    run_pipeline(cfg)
    assert calls == []


def test_from_stage_redoes_that_stage_and_later(finished, monkeypatch):
    cfg, _ = finished
    calls = _counting(monkeypatch)
    run_pipeline(cfg, from_stage="speed")
    assert calls == ["speed", "eval", "report"]


def test_changed_config_needs_from_or_new_dir(finished):
    cfg, _ = finished
    changed = load_config(RunConfig, {**to_dict(cfg), "k_list": [1]})
    with pytest.raises(ThinkfastError, match="different config"):
        run_pipeline(changed)


@pytest.mark.parametrize("stage", ["distill", "eval"])
def test_killed_stage_finishes_on_restart(finished, tmp_path, monkeypatch, stage):
    cfg, _ = finished
    # a copy of the finished run, rolled back to just before `stage`, then killed inside it
    out = tmp_path / "main"
    shutil.copytree(cfg.out_dir, out)
    base = load_config(RunConfig, {**to_dict(cfg), "out_dir": str(out)})
    for later in STAGES[STAGES.index(stage):]:
        (out / "stages" / f"{later}.json").unlink()
    for path in runner._outputs_of(stage, stages.RunPaths(out), base):
        shutil.rmtree(path, ignore_errors=True)
    calls = _counting(monkeypatch, fail_in=stage)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(base)
    assert calls == [stage]  # earlier stages came from the cache
    calls.clear()
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    results = run_pipeline(base)
    assert calls == list(STAGES[STAGES.index(stage):])
    assert (out / "report" / "report.md").is_file() and results["speed"]["teacher"]["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("name,recipes", [("run_cpu_default", {"distill"}), ("run_tiny_cpu", {"distill", "mohawk"}),
                                          ("run_gpu_1b", {"distill", "mohawk"}), ("run_gpu_3b", {"distill", "mohawk"}),
                                          ("run_gpu_mohawk_qwen05", {"mohawk"})])
def test_shipped_run_configs_load(name, recipes):
    from thinkfast.commands.run import resolve_config

    cfg = load_config(RunConfig, resolve_config(name))
    assert {s.recipe for s in cfg.students} == recipes and cfg.eval_sets


def test_bad_stage_and_config_name_are_named():
    from thinkfast.commands.run import resolve_config

    with pytest.raises(ThinkfastError, match="not a stage"):
        run_pipeline(load_config(RunConfig, {"eval_sets": [{"dataset": {"name": "synthetic"}}]}), from_stage="train")
    with pytest.raises(ThinkfastError, match="shipped configs"):
        resolve_config("run_gpu_70b")


def test_overrides_without_a_config_apply_to_the_default(monkeypatch):
    from thinkfast.cli import main
    from thinkfast.commands import run as run_command

    seen = {}
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the CPU default, on any machine
    monkeypatch.setattr("thinkfast.pipeline.run_pipeline", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    assert main(["run", "out_dir=runs/elsewhere", "n_samples=16"]) == 0
    assert seen["cfg"].out_dir == "runs/elsewhere" and seen["cfg"].n_samples == 16
    assert run_command.default_config() == "run_cpu_default" and seen["cfg"].teacher == "smollm2-135m"


def test_the_default_config_follows_the_machine(monkeypatch):
    from thinkfast.commands import run as run_command

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert run_command.default_config() == "run_gpu_default"
    cfg = load_config(RunConfig, run_command.resolve_config("run_gpu_default"))
    assert cfg.teacher == "qwen2.5-coder-0.5b" and cfg.students[0].attention_layers == "auto"
    assert cfg.eval_sets[0].dataset.limit == 200 and cfg.n_samples == 64 and cfg.sampling.max_new_tokens == 512


def test_budgets_come_from_each_models_best_batch(finished, tmp_path, monkeypatch):
    """Throughput sweep faked so batch 128 is fastest for the hybrid and 64 for the others: the
    seconds of every k come from that model's own best batch, and the report says which."""
    from thinkfast.evaluation.pipeline import run as run_eval
    from thinkfast.pipeline import throughput

    cfg, _ = finished
    out = tmp_path / "main"
    shutil.copytree(cfg.out_dir, out)
    base = load_config(RunConfig, {**to_dict(cfg), "out_dir": str(out), "speed": {"batches": [64, 128]}})
    paths = stages.RunPaths(out)
    results = {name: json.loads((out / "stages" / f"{name}.json").read_text())
               for name in ("convert", "kd_data", "distill", "sft")}
    fake = {"hybrid": {64: 100.0, 128: 300.0}, "teacher": {64: 200.0, 128: 150.0}, "pure": {64: 50.0, 128: 40.0}}
    seen = []

    def measure(session, batch):
        mixers = set(session.model.config.layer_mixers)
        name = "hybrid" if "mamba1" in mixers else "pure" if "discrete_mamba2" in mixers else "teacher"
        seen.append((name, batch, session.prompt_tokens, session.new_tokens))
        return fake[name][batch]

    monkeypatch.setattr(throughput, "measure_batch", measure)
    results["speed"] = stages.stage_speed(base, paths, results)
    assert {(n, b) for n, b, _, _ in seen} == {(n, b) for n in fake for b in (64, 128)}
    assert {g for *_, g in seen} == {base.sampling.max_new_tokens}
    best = {"hybrid": (128, 300.0), "teacher": (64, 200.0), "pure": (64, 50.0)}
    eval_set = base.eval_sets[0]
    ecfg = stages.eval_config(base, paths, results, eval_set, out / "eval" / "synthetic-1step")
    for spec in ecfg.models:
        assert (spec.timing["batch"], spec.tokens_per_second) == best[spec.name]
    scores = run_eval(ecfg, ["score"])["scores"]
    for name, s in scores.items():
        assert s["seconds"]["2"] == pytest.approx(2 * s["mean_tokens"] / best[name][1], rel=1e-9)
        assert s["timing"]["batch"] == best[name][0]
    # wall time: sampled at the best batch, no throughput used
    wall = load_config(RunConfig, {**to_dict(base), "time_method": "wall"})
    ecfg = stages.eval_config(wall, paths, results, eval_set, out / "eval" / "wall")
    assert {s.name: (s.batch_size, s.tokens_per_second, s.timing["method"]) for s in ecfg.models} == {
        n: (b, None, "wall") for n, (b, _) in best.items()}


def test_report_links_each_metric_to_its_own_chart(finished):
    cfg, results = finished
    md = stages.RunPaths(cfg.out_dir).abs(results["report"]["report"]).read_text()
    assert "![coverage (pass@k) on synthetic-1step](synthetic-1step-pass.png)" in md
    assert "![accuracy (majority vote, maj@k) on synthetic-1step](synthetic-1step-maj.png)" in md


def test_sweep_drops_batches_the_planner_refuses_and_the_sampled_method_runs_on_cpu(monkeypatch):
    from tests.inference.test_bench_speed_smoke import _tiny
    from thinkfast.pipeline import throughput

    model = _tiny("hybrid-1b")
    monkeypatch.setattr(throughput.Session, "slots", property(lambda self: 2))  # as if only 2 slots fit
    out = throughput.best_batch(model, None, [4, 2], 8, 8, "sampled", checkpoints=2, steps=2)
    assert out["batch_size"] == 2 and out["decode_tokens_per_s"] > 0 and out["method"] == "sampled"
    assert [s["batch"] for s in out["sweep"]] == [2, 4] and out["sweep"][1]["fits"] is False
    assert "memory planner" in out["sweep"][1]["reason"]
    with pytest.raises(ThinkfastError, match="no candidate batch"):
        throughput.best_batch(model, None, [4, 8], 8, 8, "sampled", checkpoints=2, steps=2)


@pytest.mark.parametrize("method", ["full", "sampled"])
def test_the_time_budgets_price_the_evaluations_sampler(monkeypatch, method):
    """Throughput is timed with the eval's temperature and filters (the sampler is part of a decode step), greedy
    only when none is given."""
    from tests.inference.test_bench_speed_smoke import _tiny
    from thinkfast.inference.engine import Engine
    from thinkfast.inference.params import SamplingParams
    from thinkfast.pipeline import throughput

    modes = []
    real = Engine._run_window
    monkeypatch.setattr(Engine, "_run_window", lambda self, slots, mode, steps: modes.append(mode) or
                        real(self, slots, mode, steps))
    model = _tiny("hybrid-1b")
    eval_sampling = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=512, seed=7)
    out = throughput.best_batch(model, None, [2], 8, 8, method, checkpoints=2, steps=2, sampler=eval_sampling)
    assert out["temperature"] == 0.6 and out["decode_tokens_per_s"] > 0
    assert modes and all(not m.all_greedy and m.top_p for m in modes)
    modes.clear()
    greedy = throughput.best_batch(model, None, [2], 8, 8, method, checkpoints=2, steps=2)
    assert greedy["temperature"] == 0.0 and modes and all(m.all_greedy for m in modes)


def test_each_ssm_state_dtype_serves_the_same_student_side_by_side(finished, tmp_path, monkeypatch):
    """ssm_state_dtypes [fp32, bf16]: every student is timed and evaluated twice from the same weights, the
    second time as `<name>-bf16-state` with a bf16 state in each engine; the summary gives both the student's
    fidelity and says which state each row was served with."""
    from thinkfast.inference.engine import Engine

    cfg, _ = finished
    out = tmp_path / "main"
    shutil.copytree(cfg.out_dir, out)
    both = load_config(RunConfig, {**to_dict(cfg), "out_dir": str(out), "ssm_state_dtypes": ["fp32", "bf16"]})
    engines = []
    init = Engine.__init__

    def recording(self, model, *args, **kwargs):
        init(self, model, *args, **kwargs)
        engines.append((model.config.layer_mixers, self.ssm_state_dtype))

    monkeypatch.setattr(Engine, "__init__", recording)
    results = run_pipeline(both, from_stage="speed")
    served = {"teacher", "hybrid", "hybrid-bf16-state", "pure", "pure-bf16-state"}
    assert set(results["speed"]) == served
    assert results["speed"]["hybrid-bf16-state"]["ssm_state_dtype"] == "bf16"
    assert results["speed"]["hybrid"]["ssm_state_dtype"] == "fp32" and results["speed"]["teacher"]["ssm_state_dtype"] is None
    assert {str(dtype) for mixers, dtype in engines if set(mixers) != {"attention"}} == {"torch.float32", "torch.bfloat16"}
    scores = results["eval"]["synthetic-1step"]["scores"]
    assert set(scores) == served
    summary = json.loads((out / "report" / "summary.json").read_text())
    rows = summary["eval_sets"]["synthetic-1step"]["models"]
    assert rows["hybrid-bf16-state"]["student"] == "hybrid" and rows["hybrid-bf16-state"]["ssm_state_dtype"] == "bf16"
    assert rows["hybrid-bf16-state"]["kl_to_teacher"] == rows["hybrid"]["kl_to_teacher"] is not None
    assert set(summary["eval_sets"]["synthetic-1step"]["pareto_fraction"]["pass"]) == served - {"teacher"}
    md = (out / "report" / "report.md").read_text()
    assert "| hybrid-bf16-state (bf16 SSM state) |" in md and "| hybrid (fp32 SSM state) |" in md
    with pytest.raises(ThinkfastError, match="ssm_state_dtypes"):
        load_config(RunConfig, {**to_dict(cfg), "ssm_state_dtypes": ["fp16"]}).validate()
    clash = to_dict(cfg)
    clash["students"][1]["name"] = "hybrid-bf16-state"
    with pytest.raises(ThinkfastError, match="'hybrid-bf16-state' is also the name"):
        load_config(RunConfig, {**clash, "ssm_state_dtypes": ["fp32", "bf16"]}).validate()


def test_time_left_estimate_follows_the_machine_and_ignores_convert():
    """Before a run has its own timings the estimate is the shipped default run's on that kind of machine; a slow
    `convert` (a one-off download and dequantisation) does not scale it, a minute of later stages does."""
    rest = list(STAGES[1:])
    gpu = runner._DEFAULT_WEIGHTS["cuda"]
    assert runner._eta({"convert": 300.0}, rest, {}, "cuda") == pytest.approx(sum(gpu[s] for s in rest))
    cpu = runner._DEFAULT_WEIGHTS["cpu"]
    later = list(STAGES[2:])
    twice = runner._eta({"convert": 5.0, "kd_data": 2 * cpu["kd_data"]}, later, {}, "cpu")
    assert twice == pytest.approx(2 * sum(cpu[s] for s in later))  # this machine runs at half the pace
    assert runner._eta({}, later, {s: 1.0 for s in later}, "cpu") == len(later)  # last run's own timings win
