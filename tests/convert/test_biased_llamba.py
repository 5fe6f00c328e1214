"""A pure (Llamba) student from a teacher with q/k/v biases (Qwen2): the bias rows land where the weights
do, the converted mixer is gated linear attention with the teacher's BIASED Q/K/V, and the student saves,
loads and decodes like any other.  Also: RoPE types we do not compute are refused before weights load."""

import json

import pytest
import torch

from tests.tiny import tiny_llama, tiny_qwen2
from thinkfast.cli import main
from thinkfast.convert import convert
from thinkfast.errors import ThinkfastError
from thinkfast.models import ThinkfastForCausalLM
from thinkfast.models.sequence import SequenceInfo
from thinkfast.ops.reference import discrete_mamba2_mixer_matrix

H, KV, HD = 4, 2, 16  # tiny_qwen2: 4 heads, 2 kv heads, hidden 64


def _heads(t, n):  # (b, L, n*hd) -> (b, L, n, hd)
    return t.view(*t.shape[:-1], n, HD)


def _repeat(t):  # (b, L, KV, hd) -> (b, L, H, hd): query head h reads kv head h // (H / KV)
    return t.repeat_interleave(H // KV, dim=-2)


def test_bias_rows_follow_the_weights():
    teacher = tiny_qwen2()
    student = convert(teacher, "llamba")
    assert student.config.discrete_mamba2["in_proj_bias"] is True
    for sl, tl in zip(student.model.layers, teacher.model.layers):
        m, attn = sl.mixer, tl.self_attn
        bias = m.in_proj.bias
        x_b, B_b, C_b = (bias[i * H * HD : (i + 1) * H * HD].view(H, HD) for i in range(3))
        for head in range(H):
            kv = head // (H // KV)
            assert torch.equal(x_b[head], attn.v_proj.bias.view(KV, HD)[kv])
            assert torch.equal(B_b[head], attn.k_proj.bias.view(KV, HD)[kv])
        assert torch.equal(C_b.flatten(), attn.q_proj.bias)
        assert torch.equal(bias[3 * H * HD :], torch.zeros(m.d_inner + m.n_v))  # z and a rows


def test_converted_mixer_is_gated_linear_attention_with_biased_qkv():
    teacher = tiny_qwen2(layers=2)
    student = convert(teacher, "llamba")
    b, L = 2, 12
    seq = SequenceInfo.build(b, L, "cpu")
    for sl, tl in zip(student.model.layers, teacher.model.layers):
        m, attn = sl.mixer, tl.self_attn
        u = torch.randn(b, L, 64)
        q = _heads(attn.q_proj(u), H)  # with the teacher's biases, no RoPE, no 1/sqrt(d)
        k = _repeat(_heads(attn.k_proj(u), KV))
        v = _repeat(_heads(attn.v_proj(u), KV))
        with torch.no_grad():
            x, g, B, C, z = m.mixer_inputs(u, seq)
            M = discrete_mamba2_mixer_matrix(g, B, C)  # (b, h, L, L)
            out = m(u, seq)
        cum = g.float().cumsum(1).transpose(1, 2)  # (b, h, L): sum of log decays up to i
        decay = torch.exp(cum[..., :, None] - cum[..., None, :]).tril()  # exp(sum_{k=j+1..i} g_k), j <= i
        expected = torch.einsum("bihn,bjhn->bhij", q, k) * decay
        assert (M - expected).abs().max() <= 1e-4 * expected.abs().max()
        assert torch.allclose(x, v, atol=1e-6)
        y = torch.einsum("bhij,bjhp->bihp", expected, v) + m.D[:, None] * v
        gated = y.flatten(-2) * torch.nn.functional.silu(u @ m.in_proj.weight[m.conv_dim : m.conv_dim + m.d_inner].T + m.z_bias)
        ref = gated @ attn.o_proj.weight.T
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_biased_student_round_trip_and_decode(tmp_path):
    student = convert(tiny_qwen2(), "llamba")
    student.save_pretrained(tmp_path)
    loaded = ThinkfastForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.model.layers[0].mixer.in_proj.bias is not None
    assert torch.equal(loaded.model.layers[1].mixer.in_proj.bias, student.model.layers[1].mixer.in_proj.bias)
    ids = torch.randint(0, 96, (2, 17))
    with torch.no_grad():
        full = student(ids).logits
        assert torch.equal(loaded(ids).logits, full)
    state = loaded.allocate_state(num_slots=3, max_len=32)
    slots = torch.tensor([2, 0])
    logits = loaded.prefill(ids[:, :6], state, slots)
    assert (logits - full[:, 5]).abs().max() <= 1e-4
    for t in range(6, 17):
        logits = loaded.step(ids[:, t], state, slots)
        assert (logits - full[:, t]).abs().max() <= 1e-4, t


def test_unbiased_teacher_gives_no_bias():
    student = convert(tiny_llama(), "llamba")
    assert student.config.discrete_mamba2["in_proj_bias"] is False
    assert all(layer.mixer.in_proj.bias is None for layer in student.model.layers)


def test_convert_command_qwen2_to_llamba(tmp_path):
    teacher = tiny_qwen2()
    teacher.save_pretrained(tmp_path / "qwen2")
    out = tmp_path / "llamba"
    assert main(["convert", "--teacher", str(tmp_path / "qwen2"), "--to", "llamba", "--out", str(out)]) == 0
    info = json.loads((out / "thinkfast_conversion.json").read_text())
    assert info["target"] == "llamba"
    model = ThinkfastForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 96, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, convert(teacher, "llamba")(ids).logits)


UNSUPPORTED_ROPE = [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8, "original_max_position_embeddings": 128},
]


@pytest.mark.parametrize("rope", UNSUPPORTED_ROPE, ids=lambda r: r["rope_type"])
def test_unsupported_rope_refused_before_weights_load(tmp_path, rope, capsys):
    from transformers import LlamaConfig

    from thinkfast.teachers.loading import load_teacher

    message = rf"RoPE type '{rope['rope_type']}'.*supported RoPE types are \['default', 'linear', 'llama3'\]"
    with pytest.raises(ThinkfastError, match=message):
        convert(tiny_llama(rope_scaling=rope), "llamba")
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, rope_scaling=rope)
    cfg.save_pretrained(tmp_path / "t")  # a config and no weights: loading weights would fail differently
    with pytest.raises(ThinkfastError, match=message):
        load_teacher(str(tmp_path / "t"))
    assert main(["convert", "--teacher", str(tmp_path / "t"), "--to", "llamba", "--out", str(tmp_path / "s")]) == 2
    assert "supported RoPE types" in capsys.readouterr().err
