"""Weight decay by name: only matrices of linear maps and embeddings decay; SSM dynamics, skips, biases,
norms and per-channel tables never do, whatever their rank (Mamba-1's A_log is (d_inner, 16))."""

import torch

from tests.tiny import tiny_student
from thinkfast.training.config import OptimConfig
from thinkfast.training.schedule import build_optimizer, weight_decay_applies


def _groups(named, **kw):
    opt = build_optimizer(named, OptimConfig(weight_decay=0.1), **kw)
    ids = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    return ids


def test_decay_only_on_matrices_of_linear_maps():
    model = tiny_student(["mamba1", "attention", "discrete_mamba2", "mamba2"], mamba1={"learnable_gqa_expansion": True},
                         attention_bias=True)
    assert model.model.layers[0].mixer.A_log.ndim == 2
    decayed = {n for n, p in model.named_parameters() if weight_decay_applies(n, p)}
    never = ("A_log", "D", "dt_bias", "a_bias", "z_bias", "norm_weight", ".bias", "norm.weight", "layernorm.weight",
             "conv1d.weight")
    for name, _ in model.named_parameters():
        if any(name.endswith(s) for s in never):
            assert name not in decayed, name
    expected = {n for n, _ in model.named_parameters() if n.endswith("_proj.weight") or n.endswith("proj.weight")}
    expected |= {"model.embed_tokens.weight"} | ({"lm_head.weight"} if model.lm_head is not None else set())
    assert decayed == expected, sorted(decayed ^ expected)
    assert "model.layers.0.mixer.x_expand.proj.weight" in decayed and "model.layers.0.mixer.dt_proj.weight" in decayed


def test_optimizer_groups_follow_names_under_wrappers():
    model = tiny_student(["mamba1", "discrete_mamba2"])
    named = [("module." + n, p) for n, p in model.named_parameters()]  # as DDP names them
    groups = _groups(named)
    m1, m2 = model.model.layers[0].mixer, model.model.layers[1].mixer
    for p in (m1.A_log, m1.D, m1.dt_bias, m2.a_bias, m2.z_bias, m2.D, m2.conv1d.weight, model.model.norm.weight,
              model.model.layers[0].input_layernorm.weight):
        assert groups[id(p)] == 0.0
    for p in (m1.in_proj.weight, m2.in_proj.weight, m2.out_proj.weight, model.model.layers[1].mlp.up_proj.weight):
        assert groups[id(p)] == 0.1
    stage1 = _groups(named, no_decay=lambda n: ".mixer.in_proj." in n)
    assert stage1[id(m2.in_proj.weight)] == 0.0 and stage1[id(m2.out_proj.weight)] == 0.1


def test_frozen_parameters_stay_out_of_the_optimizer():
    model = tiny_student(["discrete_mamba2"])
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[0].mixer.a_bias.requires_grad_(True)
    opt = build_optimizer(model.named_parameters(), OptimConfig())
    assert [p for g in opt.param_groups for p in g["params"]] == [model.model.layers[0].mixer.a_bias]
