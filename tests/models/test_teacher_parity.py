"""An all-attention student must reproduce its teacher exactly (docs/design.md §1.1)."""

import pytest
import torch

from tests.tiny import tiny_llama, tiny_qwen2
from thinkfast.convert import convert
from thinkfast.errors import ThinkfastError


def _max_err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("tie", [False, True])
def test_llama3_rope_scaling_matches_teacher(tie):
    teacher = tiny_llama(tie=tie)
    student = convert(teacher, "attention")
    ids = torch.randint(0, 96, (2, 120))  # longer than original_max_position_embeddings=16
    with torch.no_grad():
        assert _max_err(student(ids).logits, teacher(ids).logits) <= 1e-4


def test_dropping_rope_scaling_would_be_caught():
    """The defect of the public hybrid code (ignoring Llama-3 scaling) changes the logits measurably."""
    teacher = tiny_llama()
    student = convert(teacher, "attention")
    student.config.rope_scaling_config = None
    for layer in student.model.layers:
        layer.mixer._inv_freq.clear()
    ids = torch.randint(0, 96, (1, 120))
    with torch.no_grad():
        assert _max_err(student(ids).logits, teacher(ids).logits) > 1e-3


def test_qwen2_with_biases_matches_teacher():
    teacher = tiny_qwen2()
    student = convert(teacher, "attention")
    assert student.model.layers[0].mixer.q_proj.bias is not None
    assert student.model.layers[0].mixer.o_proj.bias is None
    ids = torch.randint(0, 96, (2, 64))
    with torch.no_grad():
        assert _max_err(student(ids).logits, teacher(ids).logits) <= 1e-4


def test_mistral_gqa_matches_teacher():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, sliding_window=None, max_position_embeddings=512,
    )
    teacher = MistralForCausalLM(cfg).eval()
    student = convert(teacher, "attention")
    ids = torch.randint(0, 96, (2, 40))
    with torch.no_grad():
        assert _max_err(student(ids).logits, teacher(ids).logits) <= 1e-4


def test_padded_batch_matches_teacher_on_real_tokens():
    teacher = tiny_llama()
    student = convert(teacher, "attention")
    ids = torch.randint(0, 96, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding
    with torch.no_grad():
        s = student(ids, attention_mask=mask).logits
        t = teacher(ids, attention_mask=mask).logits
    assert _max_err(s[0], t[0]) <= 1e-4
    assert _max_err(s[1, 7:], t[1, 7:]) <= 1e-4


def test_unsupported_family_lists_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    teacher = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ThinkfastError, match="not supported.*llama.*qwen2.*mistral"):
        convert(teacher, "attention")


def test_sliding_window_teacher_rejected():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8, max_position_embeddings=512,
    )
    with pytest.raises(ThinkfastError, match="sliding-window"):
        convert(MistralForCausalLM(cfg), "attention")
