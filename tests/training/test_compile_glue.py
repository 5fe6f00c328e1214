"""`compile: true`: the decoder blocks' norm / residual / MLP glue and the attention mixers' RoPE through
torch.compile give the eager forward and gradients (the mixers' kernels stay eager)."""

import pytest
import torch

torch.set_num_threads(1)


def _student(mlp_bias: bool):
    from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

    torch.manual_seed(0)
    cfg = ThinkfastConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, mlp_bias=mlp_bias,
                          layer_mixers=["mamba1", "attention", "discrete_mamba2"])
    return ThinkfastForCausalLM(cfg).float().train()


def test_compiled_glue_matches_eager(mlp_bias=False):  # (one inductor compile on a CPU is ~40 s)
    pytest.importorskip("torch._inductor")
    from thinkfast.models.sequence import SequenceInfo

    model = _student(mlp_bias)
    ids = torch.randint(0, 64, (2, 12))
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None].expand(2, 12)  # two documents per row
    seq = SequenceInfo.build(2, 12, ids.device, position_ids=pos)
    results = []
    for compiled in (False, True):
        model.compile_glue(compiled)
        model.zero_grad(set_to_none=True)
        h = model.hidden_states(ids, seq)
        (h.pow(2).mean() + model.logits(h).logsumexp(-1).mean()).backward()
        results.append((h.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (h_e, g_e), (h_c, g_c) = results
    torch.testing.assert_close(h_c, h_e, rtol=1e-5, atol=1e-5)
    assert g_e.keys() == g_c.keys()
    for name in g_e:
        torch.testing.assert_close(g_c[name], g_e[name], rtol=1e-4, atol=1e-5, msg=name)


def test_compile_flag_reaches_the_student():
    from thinkfast.training.config import TrainConfig
    from thinkfast.training.recipes import _finish_student

    model = _finish_student(_student(False), TrainConfig(compile=True))
    assert all(layer.compiled_glue for layer in model.model.layers)
    assert model.model.layers[1].mixer.compiled_glue  # the attention layer's RoPE
    assert not any(layer.compiled_glue for layer in _finish_student(_student(False), TrainConfig()).model.layers)


def test_compile_flag_reaches_the_teacher():
    """The teacher's forward (no gradients) goes through the same compiled glue when training's `compile` is on."""
    from thinkfast.training.recipes import freeze_teacher

    teacher = freeze_teacher(_student(False), compile_glue=True)
    assert all(layer.compiled_glue for layer in teacher.model.layers)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not any(layer.compiled_glue for layer in freeze_teacher(_student(False)).model.layers)
