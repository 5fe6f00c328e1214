"""End-to-end tiny runs: distillation and MOHAWK lower their losses, resume is exact, SFT needs no teacher."""

import json

import pytest
import torch

from _training_util import tiny_config
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.training.config import TrainConfig
from thinkfast.training.metrics import read_metrics
from thinkfast.training.recipes import run

torch.set_num_threads(1)


def _cfg(tiny_setup, tmp_path, **over):
    return load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, **over))


def test_distill_halves_reverse_kl_and_saves_hf_model(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path, max_steps=25, **{"data.seq_len": 48})
    result = run(cfg)
    first, last = result.losses[0], min(result.losses[-3:])
    assert last < 0.5 * first, (first, result.losses)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(result.final_dir))
    assert model.config.layer_mixers.count("attention") == 1
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 26)) and all(r["tokens_per_s"] > 0 for r in rows)


@pytest.mark.parametrize("stage", [1, 2])
def test_mohawk_stage_halves_its_loss(tiny_setup, tmp_path, stage):
    cfg = _cfg(
        tiny_setup, tmp_path, recipe="mohawk", student={"target": "llamba"},
        stages=[{"stage": stage, "max_steps": 30, "lr": 2e-2 if stage == 1 else 5e-3}],
        **{"data.train_on": "all", "data.seq_len": 32},
    )
    (result,) = run(cfg)
    assert min(result.losses[-3:]) < 0.5 * result.losses[0], result.losses


def test_mohawk_runs_stages_in_order_and_skips_finished_ones(tiny_setup, tmp_path):
    stages = [{"stage": 1, "max_steps": 2, "layers": [0]}, {"stage": 2, "max_steps": 2, "layers": [1]},
              {"stage": 3, "max_steps": 2}]
    cfg = _cfg(tiny_setup, tmp_path, recipe="mohawk", student={"target": "llamba"}, stages=stages,
               loss={"reverse_kl": 0.0, "forward_kl": 1.0}, **{"data.seq_len": 32})
    results = run(cfg)
    assert len(results) == 3 and all((tmp_path / "run" / f"stage{i}-{i}" / "final" / "config.json").is_file() for i in (1, 2, 3))
    assert run(cfg, resume=True) == []  # everything done: nothing re-run


def test_kill_and_resume_gives_identical_losses(tiny_setup, tmp_path):
    over = dict(max_steps=9, save_every=3, grad_accum=2, **{"optim.schedule": "cosine", "optim.warmup": 2,
                "optim.weight_decay": 0.1, "data.seq_len": 32})
    full = run(_cfg(tiny_setup, tmp_path / "a", **over)).losses

    class Killed(Exception):
        pass

    def kill(step, loss):
        if step == 7:  # dies after step 7; the last checkpoint is step 6
            raise Killed

    cfg = _cfg(tiny_setup, tmp_path / "b", **over)
    with pytest.raises(Killed):
        run(cfg, on_step=kill)
    with pytest.raises(ThinkfastError, match="--resume"):
        run(cfg)
    resumed = run(cfg, resume=True)
    assert resumed.steps == [7, 8, 9]
    assert resumed.losses == full[6:]  # bit-identical on CPU
    logged = [r["loss"] for r in read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")]
    assert logged == full


def test_sft_never_loads_the_teacher(tiny_setup, tmp_path, monkeypatch):
    first = run(_cfg(tiny_setup, tmp_path / "d", max_steps=1))
    import thinkfast.teachers.loading as loading

    def boom(*a, **k):
        raise AssertionError("teacher loaded during SFT")

    monkeypatch.setattr(loading, "load_teacher", boom)
    cfg = _cfg(tiny_setup, tmp_path, recipe="sft", teacher=None, student={"path": str(first.final_dir)},
               loss={"reverse_kl": 0.0, "ce": 1.0}, max_steps=20)
    result = run(cfg)
    head, tail = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert tail < head - 0.1, result.losses  # random words: CE can fall to about log(40) = 3.7


def test_non_finite_loss_stops_with_a_clear_message(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path, max_steps=3, **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
    with pytest.raises(ThinkfastError, match="non-finite loss"):
        run(cfg)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"teacher": None}, "needs a teacher"),
        ({"loss": {"reverse_kl": 0.0}}, "no term with a non-zero weight"),
        ({"loss": {"kl_div": 1.0}}, "unknown key"),
        ({"recipe": "sft", "teacher": None}, "student.path"),
        ({"recipe": "mohawk"}, "stages"),
        ({"data.path": ""}, "data.path is empty"),
        ({"optim.schedule": "linear"}, "schedule"),
    ],
)
def test_bad_configs_fail_before_training(tiny_setup, tmp_path, over, match):
    with pytest.raises(ThinkfastError, match=match):
        _cfg(tiny_setup, tmp_path, **over)


def test_bad_data_fails_before_models_load(tiny_setup, tmp_path, monkeypatch):
    import thinkfast.training.recipes as recipes

    monkeypatch.setattr(recipes, "load_hf_teacher", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(ThinkfastError, match="no usable examples"):
        run(_cfg(tiny_setup, tmp_path, **{"data.path": str(empty)}))
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"question": " ".join(["w1"] * 60), "answer": "w2"}) + "\n")
    with pytest.raises(ThinkfastError, match="longest prompt"):
        run(_cfg(tiny_setup, tmp_path, **{"data.path": str(long), "data.packing": False, "micro_batch_size": 1}))
