"""End to end: two tiny random Llamas on synthetic problems through `thinkfast eval all`; scripted
samplers check the numbers, resume after a crash, and shard merging."""

import json

import numpy as np
import pytest
import yaml

from thinkfast.cli import main
from thinkfast.errors import ThinkfastError
from thinkfast.evaluation import pipeline, store
from thinkfast.evaluation.config import EvalConfig, ModelSpec
from thinkfast.evaluation.loading import LoadedModel
from thinkfast.evaluation.metrics import pass_at_k
from thinkfast.config import load_config
from thinkfast.inference.params import Completion
from tests.evaluation.tiny import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"


def test_cli_end_to_end_two_tiny_models(tmp_path):
    a = save_tiny(tmp_path / "tiny-a", seed=1)
    b = save_tiny(tmp_path / "tiny-b", seed=2, hidden=48)
    out = tmp_path / "out"
    cfg = {
        "models": [{"name": "tiny-a", "path": a, "batch_size": 8}, {"name": "tiny-b", "path": b, "tokens_per_second": 50.0}],
        "dataset": {"name": "synthetic", "synthetic_n": 3, "synthetic_steps": 2},
        "n_samples": 4, "k_list": [1, 2, 4], "prompt": "gsm8k",
        "sampling": {"temperature": 1.0, "max_new_tokens": 8, "seed": 0},
        "out_dir": str(out), "num_shards": 2, "problems_per_batch": 2, "grading_workers": 1,
        "trials": 20, "progress": False, "prm": {"path": a, "batch_size": 4},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["eval", "all", "--config", str(tmp_path / "eval.yaml")]) == 0

    for name in ("tiny-a", "tiny-b"):
        rows = store.read_rows(out / name / "samples.jsonl")
        keys = [store.row_key(r) for r in rows]
        assert len(keys) == len(set(keys)) == 3 * 4
        for r in rows:
            assert r["model"] == name and r["verdict"] in (True, False) and 0 <= r["prm_score"] <= 1
            assert 1 <= r["num_tokens"] <= 8 and r["params"]["temperature"] == 1.0 and r["seconds"] > 0
        assert len(list((out / name).glob("samples.shard*-of-002.jsonl"))) == 2
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"tiny-a", "tiny-b"}
    assert set(scores["tiny-a"]["metrics"]) == {"pass", "maj", "bon", "wbon"}
    assert scores["tiny-a"]["time_method"] == "wall" and scores["tiny-b"]["time_method"] == "throughput"
    tb = scores["tiny-b"]
    assert tb["seconds"]["4"] == pytest.approx(4 * tb["mean_tokens"] / 50.0)
    for metric in ("pass", "maj", "bon", "wbon"):
        assert (out / f"{metric}.png").read_bytes()[:8] == PNG
    for score in scores.values():  # every figure with its interval over problems, and the per-problem values
        kept = score["per_problem"]
        assert len(kept["problem_ids"]) == score["problems"] == 3
        for metric, per_k in score["metrics"].items():
            for k, entry in per_k.items():
                assert np.mean(kept["values"][metric][k]) == pytest.approx(entry["mean"], abs=1e-12)
                assert entry["ci95"][0] <= entry["mean"] + 1e-12 and entry["mean"] <= entry["ci95"][1] + 1e-12
    report = (out / "report.md").read_text()
    assert "](pass.png)" in report and "tiny-a" in report and "tiny-b" in report
    assert "bootstrap over the 3 problems" in report


# ---- scripted samplers (imported by the pipeline through the model hook) ----

CALLS: list[int] = []  # prompts per sampler call
FAIL_AFTER: list[int | None] = [None]  # raise after this many calls (simulated kill)


class ScriptedSampler:
    """Sample j of a prompt answers the gold when j < the problem's number in its question, else 999."""

    def sample(self, prompts, n, params):
        if FAIL_AFTER[0] is not None and len(CALLS) >= FAIL_AFTER[0]:
            raise RuntimeError("simulated kill")
        CALLS.append(len(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            gold, good = prompt.split("|")[1:3]
            row = []
            for j in range(n):
                text = f"so \\boxed{{{gold}}}" if (params.seed + j) % 4 < int(good) else "The final answer is 999"
                row.append(Completion(i, j, [1] * (j + 1), text, "eos"))
            out.append(row)
        return out


def scripted_hook(spec):
    return LoadedModel(spec.name, ScriptedSampler(), None)


def _jsonl_problems(path, count=6):
    with open(path, "w") as fh:
        for i in range(count):
            fh.write(json.dumps({"problem": f"|{i + 10}|{i % 4}|", "answer": float(i + 10)}) + "\n")
    return str(path)


def _cfg(tmp_path, **extra) -> EvalConfig:
    data = {
        "models": [{"name": "scripted", "hook": "tests.evaluation.test_pipeline:scripted_hook"}],
        "dataset": {"name": _jsonl_problems(tmp_path / "amc23_x.jsonl")},
        "n_samples": 4, "k_list": [1, 2, 4], "prompt": "plain", "use_chat_template": False,
        "sampling": {"seed": 0, "temperature": 1.0}, "out_dir": str(tmp_path / "out"),
        "grading_workers": 1, "progress": False, "metrics": ["pass", "maj"],
    }
    data.update(extra)
    return load_config(EvalConfig, data)


def test_scripted_scores_match_formula(tmp_path):
    CALLS.clear()
    FAIL_AFTER[0] = None
    cfg = _cfg(tmp_path)
    result = pipeline.run(cfg, ["sample", "grade", "score"])
    rows = store.read_rows(tmp_path / "out" / "scripted" / "samples.jsonl")
    correct = {}
    for r in rows:
        correct.setdefault(r["problem_index"], []).append(r["verdict"])
    counts = [sum(v) for _, v in sorted(correct.items())]
    assert counts == [i % 4 for i in range(6)]  # AMC float golds (10.0) graded equal to "10"
    scores = result["scores"]["scripted"]["metrics"]
    for k in (1, 2, 4):
        expected = np.mean([pass_at_k(4, c, k) for c in counts])
        assert scores["pass"][str(k)]["mean"] == pytest.approx(expected)
    # maj@4: the gold wins with 3 of 4 votes, ties at 2-2 give half credit
    assert scores["maj"]["4"]["mean"] == pytest.approx((0 + 0 + 0.5 + 1 + 0 + 0) / 6)


def test_killed_sampling_resumes_without_duplicates(tmp_path):
    CALLS.clear()
    FAIL_AFTER[0] = 2  # two batches land, the third call dies
    cfg = _cfg(tmp_path, problems_per_batch=1, num_shards=2)
    problems = pipeline.load_problem_set(cfg)
    spec = cfg.models[0]
    with pytest.raises(RuntimeError, match="simulated kill"):
        pipeline.sample_model(cfg, spec, problems)
    shard0 = store.shard_path(pipeline.model_dir(cfg, spec), 0, 2)
    assert len(store.read_rows(shard0)) == 2 * 4
    with open(shard0, "a") as fh:  # a write cut off by the kill
        fh.write('{"problem_id": "amc23-2", "sample_ind')
    with pytest.raises(ThinkfastError, match="missing"):  # grading refuses an incomplete run
        pipeline.run(cfg, ["grade"])
    FAIL_AFTER[0] = None
    CALLS.clear()
    written = pipeline.sample_model(cfg, spec, problems)
    assert written == (6 - 2) * 4 and sum(CALLS) == 4  # only the 4 unfinished problems were sampled
    assert pipeline.sample_model(cfg, spec, problems) == 0  # a third run has nothing to do
    rows = pipeline.grade_model(cfg, spec, problems, pipeline.Grader(workers=1))
    keys = [store.row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 4


def test_merge_reports_duplicates_and_missing(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    rows = [store.make_row(problem_id="p", problem_index=0, sample_index=j) for j in range(3)]
    store.write_rows(a, rows[:2])
    store.write_rows(b, rows[1:])
    with pytest.raises(ThinkfastError, match="1 duplicate"):
        store.merge_shards([a, b])
    store.write_rows(b, rows[2:])
    with pytest.raises(ThinkfastError, match="1 .*missing"):
        store.merge_shards([a, b], expected=[("p", 0), ("p", 1), ("p", 2), ("p", 3)])
    assert len(store.merge_shards([a, b], expected=[("p", j) for j in range(3)], out=tmp_path / "m.jsonl")) == 3
    with open(a, "a") as fh:
        fh.write("not json\n")
        fh.write(json.dumps(rows[0]) + "\n")
    with pytest.raises(ThinkfastError, match="corrupt"):
        store.read_rows(a)


def test_config_errors():
    with pytest.raises(ThinkfastError, match="path.*hook"):
        load_config(EvalConfig, {"models": [{"name": "x"}]})
    with pytest.raises(ThinkfastError, match="unknown key"):
        load_config(EvalConfig, {"n_sample": 3})
    with pytest.raises(ThinkfastError, match="unique"):
        load_config(EvalConfig, {"models": [{"name": "x", "path": "a"}, {"name": "x", "path": "b"}]})
    assert isinstance(ModelSpec(name="m", path="p"), ModelSpec)
