"""`optim.teacher_lr_scale`: the parameters copied from the teacher train at a fraction of the lr the new Mamba
mixers take (end-to-end stages of the distill recipe); everything else about the optimizer is unchanged."""

import pytest
import torch

from _training_util import tiny_config
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.training.config import OptimConfig, TrainConfig
from thinkfast.training.recipes import run
from thinkfast.training.schedule import build_optimizer

torch.set_num_threads(1)


def test_groups_take_the_scaled_lr_and_keep_their_decay():
    model = torch.nn.ModuleDict({"new": torch.nn.Linear(3, 3), "old": torch.nn.Linear(3, 3)})
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-3, weight_decay=0.1),
                          lr_scale=lambda n: 0.1 if n.startswith("old") else 1.0)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model["new"].weight)]["lr"] == pytest.approx(1e-3)
    assert by_param[id(model["old"].weight)]["lr"] == pytest.approx(1e-4)
    assert by_param[id(model["old"].weight)]["weight_decay"] == 0.1 and by_param[id(model["old"].bias)]["weight_decay"] == 0.0
    plain = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-3))
    assert len(plain.param_groups) == 2 and all(g["lr"] == 1e-3 for g in plain.param_groups)


def test_teacher_parameters_barely_move_when_scaled_down(tiny_setup, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, max_steps=3,
                                               optim={"lr": 1e-2, "warmup": 0, "schedule": "constant",
                                                      "weight_decay": 0.0, "teacher_lr_scale": 1e-6}))
    result = run(cfg)
    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher

    hf, _ = load_teacher(tiny_setup["teacher"], tokenizer=False)
    start = convert(hf, cfg.student.spec(), seed=cfg.seed).state_dict()
    end = AutoModelForCausalLM.from_pretrained(str(result.final_dir)).state_dict()
    mixer_keys = [k for k in end if ".mixer." in k and "in_proj" in k]  # the Mamba mixers (new parameters)
    assert mixer_keys
    mixer_moved = max((end[k] - start[k]).abs().max().item() for k in mixer_keys)
    mlp_moved = max((end[k] - start[k]).abs().max().item() for k in end if ".mlp." in k)
    assert mixer_moved > 1e-3, mixer_moved  # Adam steps of lr 1e-2
    assert mlp_moved < 1e-6, mlp_moved  # ... of lr 1e-8


def test_scale_must_be_positive(tiny_setup, tmp_path):
    with pytest.raises(ThinkfastError, match="teacher_lr_scale must be > 0"):
        load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, optim={"lr": 1e-3, "teacher_lr_scale": 0}))
