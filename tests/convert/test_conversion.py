"""Each transferred weight lands where docs/design.md §2 says, new parameters are initialised as specified,
save -> load is lossless, and bad requests fail before any work."""

import math

import pytest
import torch

from tests.tiny import tiny_llama, tiny_qwen2
from thinkfast.convert import convert, plan_layer_mixers, spread_attention_layers
from thinkfast.errors import ThinkfastError
from thinkfast.models import ThinkfastForCausalLM


def _rows(fused, sizes, index):
    start = sum(sizes[:index])
    return fused[start : start + sizes[index]]


def _check_shared(student, teacher):
    s, t = student.model, teacher.model
    assert torch.equal(s.embed_tokens.weight, t.embed_tokens.weight)
    assert torch.equal(s.norm.weight, t.norm.weight)
    assert torch.equal(student.head_weight(), teacher.lm_head.weight)
    for sl, tl in zip(s.layers, t.layers):
        assert torch.equal(sl.input_layernorm.weight, tl.input_layernorm.weight)
        assert torch.equal(sl.post_attention_layernorm.weight, tl.post_attention_layernorm.weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            assert torch.equal(getattr(sl.mlp, name).weight, getattr(tl.mlp, name).weight)


def test_hybrid_mamba1_transfer_tensor_by_tensor():
    teacher = tiny_llama(layers=4)
    with torch.no_grad():  # distinct norm weights so a swapped copy would show
        for layer in teacher.model.layers:
            layer.input_layernorm.weight.normal_()
            layer.post_attention_layernorm.weight.normal_()
    student = convert(teacher, "hybrid", attention_layers=[1, 3])
    assert student.config.layer_mixers == ["mamba1", "attention", "mamba1", "attention"]
    _check_shared(student, teacher)
    cfg = student.config
    for i, (sl, tl) in enumerate(zip(student.model.layers, teacher.model.layers)):
        attn = tl.self_attn
        if i in (1, 3):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                assert torch.equal(getattr(sl.mixer, name).weight, getattr(attn, name).weight)
            continue
        m = sl.mixer
        W, sizes = m.in_proj.weight, m.split_sizes  # [z | x | B | C | dt]
        assert sizes == [cfg.d_inner, cfg.d_xb, cfg.d_xb, cfg.d_inner, math.ceil(cfg.hidden_size / 16)]
        assert torch.equal(_rows(W, sizes, 1), attn.v_proj.weight)  # x <- V
        assert torch.equal(_rows(W, sizes, 2), attn.k_proj.weight)  # B <- K
        assert torch.equal(_rows(W, sizes, 3), attn.q_proj.weight)  # C <- Q (no RoPE, no scale)
        assert torch.equal(m.out_proj.weight, attn.o_proj.weight)
        # new parameters as docs/design.md §2 initialises them
        assert torch.allclose(m.A_log, torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(cfg.d_inner, 16))
        assert torch.equal(m.D, torch.ones(cfg.d_inner))
        dt = torch.nn.functional.softplus(m.dt_bias)
        assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
        bound = m.dt_rank**-0.5
        assert m.dt_proj.weight.abs().max() <= bound
        for name in ("A_log", "D", "dt_bias"):
            assert getattr(m, name).dtype == torch.float32


def test_head_wise_gqa_expansion():
    """Query head h must read kv head h // (n_heads / n_kv), not a 16-wide chunk interleave."""
    teacher = tiny_llama(heads=4, kv=2, hidden=128)  # head_dim 32: two 16-channel groups per head
    student = convert(teacher, "hybrid", keep_attention=1)
    m = student.model.layers[0].mixer
    x = torch.arange(m.d_xb, dtype=torch.float32)[None]
    expanded = m.x_expand(x)[0].view(4, 32)
    for head in range(4):
        kv = head // 2
        assert torch.equal(expanded[head], torch.arange(kv * 32, kv * 32 + 32, dtype=torch.float32))


def test_learnable_expansion_initialised_to_repeat():
    teacher = tiny_llama()
    fixed = convert(teacher, "hybrid", keep_attention=1)
    learn = convert(teacher, "hybrid", keep_attention=1, learnable_gqa_expansion=True)
    x = torch.randn(3, fixed.config.d_xb)
    m_fixed, m_learn = fixed.model.layers[0].mixer, learn.model.layers[0].mixer
    assert m_learn.x_expand.proj is not None
    assert torch.equal(m_learn.x_expand(x), m_fixed.x_expand(x))
    assert torch.equal(m_learn.B_expand(x), m_fixed.B_expand(x))


def test_llamba_transfer_tensor_by_tensor():
    teacher = tiny_llama(heads=4, kv=2)
    student = convert(teacher, "llamba")
    _check_shared(student, teacher)
    h, kv, hd = 4, 2, 16
    for sl, tl in zip(student.model.layers, teacher.model.layers):
        m, attn = sl.mixer, tl.self_attn
        W = m.in_proj.weight
        x_rows, B_rows, C_rows = W[: h * hd], W[h * hd : 2 * h * hd], W[2 * h * hd : 3 * h * hd]
        for head in range(h):
            src = slice((head // (h // kv)) * hd, (head // (h // kv) + 1) * hd)
            assert torch.equal(x_rows[head * hd : (head + 1) * hd], attn.v_proj.weight[src])
            assert torch.equal(B_rows[head * hd : (head + 1) * hd], attn.k_proj.weight[src])
        assert torch.equal(C_rows, attn.q_proj.weight)
        assert torch.equal(m.out_proj.weight, attn.o_proj.weight)
        assert torch.equal(m.z_bias, torch.zeros_like(m.z_bias)) and torch.equal(m.D, torch.ones_like(m.D))


def test_qwen2_biases_go_to_in_proj():
    teacher = tiny_qwen2()
    student = convert(teacher, "hybrid", keep_attention=1)
    m, attn = student.model.layers[0].mixer, teacher.model.layers[0].self_attn
    b, sizes = m.in_proj.bias, m.split_sizes
    assert torch.equal(_rows(b, sizes, 1), attn.v_proj.bias)
    assert torch.equal(_rows(b, sizes, 2), torch.zeros(sizes[2]))  # the k bias is left out (see transfer.py)
    assert torch.equal(_rows(b, sizes, 3), attn.q_proj.bias)
    assert torch.equal(_rows(b, sizes, 0), torch.zeros(sizes[0]))


@pytest.mark.parametrize("target,kwargs", [("hybrid", {}), ("llamba", {}), ("hybrid", {"mixer": "mamba2"})])
def test_save_load_identical_logits(tmp_path, target, kwargs):
    student = convert(tiny_llama(), target, **kwargs)
    student.save_pretrained(tmp_path)
    loaded = ThinkfastForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 96, (2, 30))
    with torch.no_grad():
        assert torch.equal(student(ids).logits, loaded(ids).logits)
    assert loaded.config.layer_mixers == student.config.layer_mixers


@pytest.mark.parametrize("kwargs", [{"keep_attention": 0}, {"attention_layers": []}])
def test_a_hybrid_may_keep_no_attention(kwargs):
    """MambaInLlama's 0%-attention point: every layer a Mamba-1 mixer, converted and decoding like any hybrid."""
    student = convert(tiny_llama(layers=4), "hybrid", **kwargs)
    assert student.config.layer_mixers == ["mamba1"] * 4
    ids = torch.randint(0, student.config.vocab_size, (2, 7))
    state = student.allocate_state(2, 16)
    assert state.bytes_per_slot()["kv"] == 0
    logits = student.prefill(ids[:, :6], state, torch.tensor([0, 1]))
    step = student.step(ids[:, 6], state, torch.tensor([0, 1]))
    full = student(ids).logits
    torch.testing.assert_close(logits, full[:, 5], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step, full[:, 6], rtol=1e-4, atol=1e-4)


def test_spread_attention_layers():
    assert spread_attention_layers(16, 4) == [3, 7, 11, 15]
    assert spread_attention_layers(28, 6) == [4, 8, 13, 18, 22, 27]
    assert plan_layer_mixers(8, "hybrid").count("attention") == 2  # a quarter by default


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"target": "hybrid", "attention_layers": [0, 9]}, "out of range"),
        ({"target": "hybrid", "attention_layers": [-1]}, "out of range"),
        ({"target": "hybrid", "attention_layers": [1, 1]}, "repeats"),
        ({"target": "hybrid", "attention_layers": [0, 1, 2, 3]}, "fewer than all"),
        ({"target": "hybrid", "keep_attention": 4}, r"between 0 \(every layer Mamba\) and 3"),
        ({"target": "hybrid", "keep_attention": -1}, r"between 0 \(every layer Mamba\) and 3"),
        ({"target": "hybrid", "keep_attention": 1, "attention_layers": [1]}, "not both"),
        ({"target": "llamba", "keep_attention": 1}, "keeps no attention"),
        ({"target": "hybrid", "mixer": "mamba3"}, "unknown hybrid mixer"),
        ({"target": "transformer"}, "unknown conversion target"),
    ],
)
def test_bad_requests_fail_before_work(kwargs, message):
    with pytest.raises(ThinkfastError, match=message):
        convert(tiny_llama(layers=4), **kwargs)


def test_head_shapes_that_cannot_map():
    teacher = tiny_llama(heads=4, kv=2, hidden=40)  # head_dim 10: not a multiple of d_state 16
    with pytest.raises(ThinkfastError, match="d_state=16.*head_dim=10"):
        convert(teacher, "hybrid", keep_attention=1)
