"""`thinkfast distill|mohawk|sft|gen-data` from config files, with overrides and clear errors."""

import json

import pytest
import yaml

from _training_util import make_records, tiny_config, write_jsonl
from thinkfast.cli import main
from thinkfast.commands.train import load_train_config, resolve_config_path
from thinkfast.config import load_config
from thinkfast.training.config import TrainConfig


def _yaml(tmp_path, cfg) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_distill_then_sft_from_yaml_with_overrides(tiny_setup, tmp_path, capsys):
    path = _yaml(tmp_path, tiny_config(tiny_setup, tmp_path, max_steps=50))
    assert main(["distill", path, "max_steps=2", "optim.lr=1e-3", "keep_checkpoint=true"]) == 0
    assert "saved" in capsys.readouterr().out
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads(rows[-1])["lr"] == pytest.approx(1e-3)
    assert main(["distill", path, "max_steps=2"]) == 2  # existing checkpoint without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["distill", path, "max_steps=3", "--resume"]) == 0  # extends the kept checkpoint
    assert not (tmp_path / "run" / "checkpoint").exists()  # discarded once final/ is saved (keep_checkpoint off)
    assert main(["distill", path, "max_steps=3"]) == 2  # a finished run is not overwritten
    assert "already holds a finished model" in capsys.readouterr().err
    sft = _yaml(tmp_path, tiny_config(tiny_setup, tmp_path / "s", recipe="sft", teacher=None, max_steps=1,
                                      student={"path": str(tmp_path / "run" / "final")}, loss={"reverse_kl": 0, "ce": 1}))
    assert main(["sft", sft]) == 0


def test_mohawk_command(tiny_setup, tmp_path):
    cfg = tiny_config(tiny_setup, tmp_path, recipe="mohawk", student={"target": "llamba"},
                      stages=[{"stage": 1, "max_steps": 1}, {"stage": 3, "max_steps": 1}], **{"data.seq_len": 32})
    assert main(["mohawk", _yaml(tmp_path, cfg)]) == 0


@pytest.mark.parametrize(
    "args,match",
    [
        (["teacher=null"], "needs a teacher"),
        (["loss.jsd=1"], "unknown key"),
        (["data.packing=false", "data.seq_len=4"], "longest prompt"),
    ],
)
def test_bad_config_errors_from_the_command_line(tiny_setup, tmp_path, capsys, args, match):
    path = _yaml(tmp_path, tiny_config(tiny_setup, tmp_path))
    assert main(["distill", path, *args]) == 2
    assert match in capsys.readouterr().err


def test_wrong_recipe_for_command(tiny_setup, tmp_path, capsys):
    path = _yaml(tmp_path, tiny_config(tiny_setup, tmp_path))
    assert main(["sft", path]) == 2
    assert "thinkfast distill" in capsys.readouterr().err


def test_shipped_configs_load_and_validate():
    for name in ["distill_hybrid_1b", "distill_hybrid_3b", "mohawk_llamba_1b", "mohawk_llamba_3b", "sft_math_1b",
                 "sft_reasoning_3b", "tiny_distill_cpu", "tiny_mohawk_cpu", "tiny_sft_cpu", "gpu_smollm2_hybrid_gsm8k"]:
        cfg = load_config(TrainConfig, resolve_config_path(name))
        assert load_train_config(cfg.recipe, name, []).recipe == cfg.recipe
    hybrid = load_config(TrainConfig, resolve_config_path("distill_hybrid_1b"))
    assert hybrid.optim.betas == (0.9, 0.95) and hybrid.optim.weight_decay == 0.1 and hybrid.loss.reverse_kl == 1.0
    assert hybrid.data.seq_len == 8192 and hybrid.optim.lr == 2e-5
    llamba = load_config(TrainConfig, resolve_config_path("mohawk_llamba_1b"))
    assert [s.stage for s in llamba.stages] == [1, 2, 3] and llamba.optim.schedule == "wsd"


def test_gen_data_writes_chat_examples_and_resumes(tiny_setup, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", make_records(5, seed=9))
    out = tmp_path / "kd.jsonl"
    args = ["gen-data", "--teacher", tiny_setup["teacher"], "--prompts", prompts, "--out", str(out),
            "--max-new-tokens", "6", "--keep-truncated", "--batch-size", "2", "--limit", "3"]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["source_index"] for r in rows] == [0, 1, 2]
    assert rows[0]["messages"][-1]["role"] == "assistant" and rows[0]["gold_answer"]
    assert main(args[:-1] + ["5"]) == 0  # only the two new prompts are generated
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["source_index"] for r in rows) == [0, 1, 2, 3, 4]
    # the generated file trains directly
    cfg = tiny_config(tiny_setup, tmp_path / "t", max_steps=1, micro_batch_size=1, **{"data.path": str(out)})
    assert main(["distill", _yaml(tmp_path, cfg)]) == 0
