"""Data-parallel sampling on CPU: 2 torchrun ranks (gloo barrier) and 2 spawned local workers sample the
same texts as one process; a rank killed mid-shard (halfway through an append) resumes with no duplicate
and no missing row; rank 0 alone merges, grades and scores."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.evaluation import parallel, pipeline, store
from thinkfast.evaluation.config import EvalConfig
from tests.evaluation.tiny import save_tiny

ROOT = Path(__file__).parents[2]
N_PROBLEMS, N_SAMPLES = 6, 2


def _cfg_dict(model: str, out: Path) -> dict:
    return {"models": [{"name": "tiny", "path": model, "batch_size": 4}],
            "dataset": {"name": "synthetic", "synthetic_n": N_PROBLEMS, "synthetic_steps": 1},
            "n_samples": N_SAMPLES, "k_list": [1, 2], "metrics": ["pass", "maj"], "prompt": "plain",
            "use_chat_template": False, "sampling": {"temperature": 1.0, "max_new_tokens": 6, "seed": 5},
            "out_dir": str(out), "problems_per_batch": 1, "grading_workers": 1, "progress": False}


def _texts(out: Path, pattern: str = "samples.shard*.jsonl") -> dict:
    rows = [r for p in sorted((out / "tiny").glob(pattern)) for r in store.read_rows(p)]
    keys = [store.row_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return {(r["problem_id"], r["sample_index"]): r["text"] for r in rows}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("par")
    model = save_tiny(tmp / "model", seed=4)
    pipeline.run(load_config(EvalConfig, _cfg_dict(model, tmp / "one")), ["sample"])
    one = _texts(tmp / "one")
    assert len(one) == N_PROBLEMS * N_SAMPLES and len(set(one.values())) > N_PROBLEMS
    return model, one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cfg_path: Path, step: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("THINKFAST_FAULT", None)
    if fault:
        env["THINKFAST_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--master_addr=127.0.0.1", "-m", "thinkfast", "eval", step, "--config", str(cfg_path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_torchrun_rank_killed_mid_shard_resumes_to_the_one_process_texts(setup, tmp_path):
    model, one = setup
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(_cfg_dict(model, tmp_path / "out")))
    # rank 1 dies halfway through its second append (shard 1 of 2): a torn line, a batch lost
    killed = _torchrun(cfg_path, "sample", fault="append:samples.shard001-of-002.jsonl@2")
    assert killed.returncode != 0
    shard1 = store.shard_path(tmp_path / "out" / "tiny", 1, 2)
    assert N_SAMPLES <= len(store.read_rows(shard1)) < 2 * N_SAMPLES  # the first batch and part of the second
    assert not (tmp_path / "out" / "tiny" / "samples.jsonl").exists()  # nobody merged a partial run
    done = _torchrun(cfg_path, "all")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out" / "tiny").glob("samples.shard*")) == [
        "samples.shard000-of-002.jsonl", "samples.shard001-of-002.jsonl"]
    assert _texts(tmp_path / "out") == one  # no duplicates, no missing rows, the same samples
    merged = _texts(tmp_path / "out", "samples.jsonl")  # rank 0 merged and graded after the barrier
    assert merged == one
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["tiny"]["problems"] == N_PROBLEMS


def test_local_workers_killed_and_resumed_match_one_process(setup, tmp_path, monkeypatch):
    model, one = setup
    cfg = load_config(EvalConfig, {**_cfg_dict(model, tmp_path / "out"), "gpus": 2})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("THINKFAST_FAULT", "append:samples.shard000-of-002.jsonl@2")  # worker 0 dies mid-append
    with pytest.raises(ThinkfastError, match="rerun to resume"):
        pipeline.run(cfg, ["sample"])
    monkeypatch.delenv("THINKFAST_FAULT")
    kept = len(_texts(tmp_path / "out"))
    assert 0 < kept < N_PROBLEMS * N_SAMPLES
    out = pipeline.run(cfg, ["sample"])
    assert out["sampled"]["tiny"] == N_PROBLEMS * N_SAMPLES - kept  # only the missing rows were sampled
    assert _texts(tmp_path / "out") == one
    # `eval grade` without --gpus finds the 2-shard layout by itself
    rows = pipeline.grade_model(load_config(EvalConfig, _cfg_dict(model, tmp_path / "out")), cfg.models[0],
                                pipeline.load_problem_set(cfg), pipeline.Grader(workers=1))
    assert len(rows) == N_PROBLEMS * N_SAMPLES


def test_shards_of_cover_each_shard_once_and_other_layouts_are_refused(tmp_path):
    for shards, world in [(2, 2), (8, 3), (5, 5), (7, 2)]:
        got = sorted(s for r in range(world) for s in parallel.shards_of(shards, r, world))
        assert got == list(range(shards))
    assert parallel.shard_count(1, 4) == 4 and parallel.shard_count(8, 2) == 8
    cfg = load_config(EvalConfig, {"models": [{"name": "tiny", "path": "x"}], "out_dir": str(tmp_path)})
    (tmp_path / "tiny").mkdir()
    store.shard_path(tmp_path / "tiny", 0, 4).write_text("")
    parallel.check_shard_count(cfg, 4)
    with pytest.raises(ThinkfastError, match="num_shards=4"):
        parallel.check_shard_count(cfg, 2)


def test_pipeline_eval_stage_uses_every_visible_gpu(monkeypatch):
    import torch

    from thinkfast.pipeline import stages
    from thinkfast.pipeline.config import RunConfig

    cfg = RunConfig()
    assert stages._eval_gpus(cfg, torch.device("cpu")) == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert stages._eval_gpus(cfg, torch.device("cuda")) == 4
    cfg.eval_gpus = 2
    assert stages._eval_gpus(cfg, torch.device("cuda")) == 2
