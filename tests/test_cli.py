"""The command line: convert a local teacher directory, and bad input exits with a named problem."""

import json

import torch

from tests.tiny import tiny_llama
from thinkfast.cli import main
from thinkfast.models import ThinkfastForCausalLM


def _teacher_dir(tmp_path):
    path = tmp_path / "teacher"
    tiny_llama(layers=4).save_pretrained(path)
    return path


def test_convert_command_writes_loadable_student(tmp_path):
    teacher = _teacher_dir(tmp_path)
    out = tmp_path / "student"
    code = main(["convert", "--teacher", str(teacher), "--to", "hybrid", "--attention-layers", "1,3", "--out", str(out)])
    assert code == 0
    info = json.loads((out / "thinkfast_conversion.json").read_text())
    assert info["attention_layers"] == [1, 3]
    model = ThinkfastForCausalLM.from_pretrained(out)
    assert model.config.layer_mixers == ["mamba1", "attention", "mamba1", "attention"]
    assert torch.isfinite(model(torch.randint(0, 96, (1, 8))).logits).all()


def test_convert_bad_layer_index_is_reported(tmp_path, capsys):
    teacher = _teacher_dir(tmp_path)
    code = main(["convert", "--teacher", str(teacher), "--attention-layers", "2,7", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "out of range" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # failed before any work


def test_convert_missing_teacher_is_reported(tmp_path, capsys):
    code = main(["convert", "--teacher", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "s")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
