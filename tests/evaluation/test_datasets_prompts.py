"""Dataset loading (layouts, errors, skips), the synthetic generator, prompts and chat templates."""

import json
import os

import pytest

from thinkfast.errors import ThinkfastError
from thinkfast.evaluation.datasets import load_jsonl, load_problems
from thinkfast.evaluation.grading import is_equivalent
from thinkfast.evaluation.prompts import GSM8K_SYSTEM, M1_SUFFIX, MATH_SYSTEM, load_template, render_prompt
from thinkfast.evaluation.synthetic import synthetic_problems
from tests.evaluation.tiny import tiny_tokenizer

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")  # beside the checkout


def _write(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def test_layouts_and_golds(tmp_path):
    gsm = _write(tmp_path / "gsm8k_test.jsonl", [{"question": "Q?", "answer": "work <<2*3=6>>\n#### 1,234"}])
    amc = _write(tmp_path / "amc23_test.jsonl", [{"id": 0, "problem": "P", "answer": 27.0}, {"id": 1, "problem": "P", "answer": 2.5}])
    math = _write(tmp_path / "math500_test.jsonl", [{"problem": "P", "solution": "s", "answer": "\\text{Evelyn}"}])
    assert load_jsonl(gsm).problems[0].gold == "1234"
    assert [p.gold for p in load_problems(str(amc)).problems] == ["27", "2.5"]
    p = load_problems("math500", data_dir=tmp_path).problems[0]
    assert (p.id, p.question, p.gold, p.source) == ("math500-0", "P", "\\text{Evelyn}", "math500")


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared data folder not present")
def test_shared_files_by_name(monkeypatch):
    monkeypatch.setenv("THINKFAST_DATA", SHARED)
    sizes = {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40}
    for name, size in sizes.items():
        ps = load_problems(name)
        assert len(ps) == size and not ps.skipped and all(p.gold for p in ps.problems)
    assert load_problems("gsm8k").problems[0].gold == "18"
    assert is_equivalent(load_problems("amc23").problems[0].gold, "27")


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ThinkfastError, match="unknown dataset 'gsm9k'"):
        load_problems("gsm9k")
    with pytest.raises(ThinkfastError, match="is empty"):
        load_jsonl(_write(tmp_path / "math500_empty.jsonl", []))
    with pytest.raises(ThinkfastError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")
    bad_json = _write(tmp_path / "math500_a.jsonl", [{"problem": "P", "answer": "1"}, "{not json"])
    with pytest.raises(ThinkfastError, match="line 2: not valid JSON"):
        load_jsonl(bad_json)
    no_gold = _write(tmp_path / "math500_b.jsonl", [{"problem": "P", "answer": None}])
    with pytest.raises(ThinkfastError, match="line 1: missing gold"):
        load_jsonl(no_gold)
    gsm_no_hash = _write(tmp_path / "gsm8k_c.jsonl", [{"question": "Q", "answer": "no marker 5"}])
    with pytest.raises(ThinkfastError, match="missing gold.*####"):
        load_jsonl(gsm_no_hash)
    no_question = _write(tmp_path / "aime24_d.jsonl", [{"id": 1, "answer": "3"}])
    with pytest.raises(ThinkfastError, match="no question"):
        load_jsonl(no_question)


def test_skip_mode_counts_bad_rows(tmp_path):
    rows = [{"problem": "A", "answer": "1"}, "[1, 2]", {"problem": "B", "answer": ""}, {"problem": "C", "answer": "3"}]
    ps = load_jsonl(_write(tmp_path / "math500_s.jsonl", rows), on_error="skip")
    assert [p.question for p in ps.problems] == ["A", "C"]
    assert len(ps.skipped) == 2 and ps.skipped[0].startswith("line 2") and "missing gold" in ps.skipped[1]
    only_bad = _write(tmp_path / "math500_t.jsonl", [{"problem": "B", "answer": ""}])
    with pytest.raises(ThinkfastError, match="no usable problems"):
        load_jsonl(only_bad, on_error="skip")


def test_synthetic_is_deterministic_and_exact():
    a = synthetic_problems(20, steps=4, max_operand=30, seed=7)
    assert a.problems == synthetic_problems(20, steps=4, max_operand=30, seed=7).problems
    assert a.problems != synthetic_problems(20, steps=4, max_operand=30, seed=8).problems
    for p in a.problems:
        assert int(p.gold) >= 0 and p.question.count("Then ") == 4
    harder = synthetic_problems(20, steps=8, max_operand=30, seed=7)
    assert all(p.question.count("Then ") == 8 for p in harder.problems)
    with pytest.raises(ThinkfastError):
        synthetic_problems(0)


def _replay(question: str) -> int:
    """Recompute a synthetic answer by reading the sentences (independent of the generator's state)."""
    import re

    value = int(re.match(r"\w+ has (\d+)", question).group(1))
    for s in question.split("Then ")[1:]:
        nums = [int(x) for x in re.findall(r"\d+", s)]
        if "more" in s:
            value += nums[0]
        elif "gives away" in s:
            value -= nums[0]
        elif "times as large" in s:
            value *= nums[0]
        elif "equal piles" in s:
            assert value % nums[0] == 0
            value //= nums[0]
        elif "packs" in s:
            value += nums[0] * nums[1]
    return value


def test_synthetic_answers_are_right():
    for p in synthetic_problems(30, steps=5, max_operand=12, seed=3).problems:
        assert _replay(p.question) == int(p.gold)


def test_prompts_through_chat_template(tmp_path):
    tok = tiny_tokenizer()
    q = "What is $\\frac{1}{2}+{x}$?"
    text = render_prompt(tok, load_template("math"), q)
    assert text == f"<|system|>{MATH_SYSTEM}<|end|><|user|>{q}<|end|><|assistant|>"
    assert "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct." in MATH_SYSTEM
    assert render_prompt(tok, load_template("gsm8k"), q).startswith(f"<|system|>{GSM8K_SYSTEM}<|end|>")
    assert render_prompt(tok, load_template("m1"), q) == f"<|user|>{q} {M1_SUFFIX}<|end|><|assistant|>"
    user = tmp_path / "t.yaml"
    user.write_text("system: Be brief.\nuser: 'Problem: {question} Answer in \\boxed{}.'\n")
    assert render_prompt(tok, load_template(user), q) == f"<|system|>Be brief.<|end|><|user|>Problem: {q} Answer in \\boxed{{}}.<|end|><|assistant|>"
    (tmp_path / "bad.yaml").write_text("user: no placeholder\n")
    with pytest.raises(ThinkfastError, match="question"):
        load_template(tmp_path / "bad.yaml")
    with pytest.raises(ThinkfastError, match="neither"):
        load_template("llama")
    tok.chat_template = None
    with pytest.raises(ThinkfastError, match="no chat template"):
        render_prompt(tok, load_template("m1"), q)
    assert render_prompt(tok, load_template("m1"), q, use_chat_template=False) == f"{q} {M1_SUFFIX}\n\n"
