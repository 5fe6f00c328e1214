"""Sample j of a problem is seeded by (seed, problem id, j): the same samples whatever `problems_per_batch`,
however the shards are cut, and when a killed run redoes part of a batch."""

from pathlib import Path

from thinkfast.config import load_config
from thinkfast.evaluation import pipeline, store
from thinkfast.evaluation.config import EvalConfig
from tests.evaluation.tiny import save_tiny


def _texts(out: Path) -> dict:
    rows = [r for path in sorted((out / "tiny").glob("samples.shard*.jsonl")) for r in store.read_rows(path)]
    return {(r["problem_id"], r["sample_index"]): r["text"] for r in rows}


def test_samples_do_not_depend_on_batching_sharding_or_resume(tmp_path):
    model = save_tiny(tmp_path / "tiny", seed=3)

    def sample(out, **over):
        cfg = load_config(EvalConfig, {
            "models": [{"name": "tiny", "path": model, "batch_size": 6}],
            "dataset": {"name": "synthetic", "synthetic_n": 4, "synthetic_steps": 1}, "n_samples": 3, "k_list": [1, 3],
            "prompt": "plain", "sampling": {"temperature": 1.0, "max_new_tokens": 6, "seed": 7},
            "out_dir": str(out), "progress": False, **over})
        pipeline.run(cfg, ["sample"])
        return _texts(out)

    one = sample(tmp_path / "a", problems_per_batch=1)
    assert len(one) == 12 and len(set(one.values())) > 6  # real, different samples
    assert sample(tmp_path / "b", problems_per_batch=4) == one
    assert sample(tmp_path / "c", problems_per_batch=2, num_shards=3) == one
    # a run killed inside an append: the last rows lost, the last kept row torn
    shard = tmp_path / "b" / "tiny" / "samples.shard000-of-001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    assert sample(tmp_path / "b", problems_per_batch=4) == one
