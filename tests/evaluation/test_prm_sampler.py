"""RLHFlow-style PRM and the HF generate sampler on a tiny random Llama."""

import pytest
import torch

from thinkfast.errors import ThinkfastError
from thinkfast.evaluation.prm import RLHFlowPRM, aggregate, split_steps
from thinkfast.evaluation.sampler import HFGenerateSampler, Sampler
from thinkfast.inference.params import SamplingParams
from tests.evaluation.tiny import tiny_llama, tiny_tokenizer

QUESTIONS = ["What is 2+3?", "Compute 7*6."]
SOLUTIONS = ["2+3 is\n\n5.\n\nThe answer is 5", "7*6 = 42\n\n\n\nso \\boxed{42}"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_split_and_aggregate():
    assert split_steps("a\n\nb\n\n\n\nc ") == ["a", "b", "c"]
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8 and aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.36) and aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ThinkfastError):
        aggregate(scores, "max")


def test_prm_scores_match_per_step_prefix_forward(tok):
    model = tiny_llama(tok, seed=3)
    prm = RLHFlowPRM(model, tok, batch_size=4)
    batched = prm.score_steps(QUESTIONS, SOLUTIONS)
    assert [len(s) for s in batched] == [3, 2]
    # reference: one forward per step on the conversation prefix ending with the generation prompt
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    for q, sol, got in zip(QUESTIONS, SOLUTIONS, batched):
        messages = []
        for i, step in enumerate(split_steps(sol)):
            messages.append({"role": "user", "content": f"{q} {step}" if i == 0 else step})
            prefix = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = torch.tensor([tok.encode(prefix, add_special_tokens=False)])
            with torch.no_grad():
                last = model(input_ids=ids).logits[0, -1]
            expected = torch.softmax(last[[plus, minus]], -1)[0].item()
            assert got[i] == pytest.approx(expected, abs=1e-5)
            messages.append({"role": "assistant", "content": "+"})
    one_by_one = RLHFlowPRM(model, tok, batch_size=1).score_steps(QUESTIONS, SOLUTIONS)
    for a, b in zip(batched, one_by_one):
        assert a == pytest.approx(b, abs=1e-5)


def test_prm_reflects_the_model(tok):
    model = tiny_llama(tok, seed=4)
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    with torch.no_grad():
        model.lm_head.weight[plus] = model.lm_head.weight[minus]
    scores = RLHFlowPRM(model, tok).score(QUESTIONS, SOLUTIONS, "min")
    assert scores == pytest.approx([0.5, 0.5], abs=1e-6)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():  # a head that always prefers '+' by 2 nats (and, for a second check, '-')
        head.weight.zero_()
        head.bias.zero_()
        head.bias[plus] = 2.0
    model.lm_head = head
    p_good = 1 / (1 + torch.exp(torch.tensor(-2.0))).item()
    steps = RLHFlowPRM(model, tok).score_steps(QUESTIONS, SOLUTIONS)
    assert all(s == pytest.approx(p_good, abs=1e-6) for row in steps for s in row)
    with torch.no_grad():
        head.bias[plus], head.bias[minus] = 0.0, 2.0
    got = RLHFlowPRM(model, tok).score(QUESTIONS, SOLUTIONS, "prod")
    assert got == pytest.approx([(1 - p_good) ** 3, (1 - p_good) ** 2], rel=1e-5)


def test_hf_sampler_shapes_seeds_and_padding(tok):
    model = tiny_llama(tok, seed=5)
    sampler = HFGenerateSampler(model, tok, batch_size=3)
    assert isinstance(sampler, Sampler)
    prompts = ["short", "a much longer prompt here"]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=11)
    out = sampler.sample(prompts, 4, params)
    assert [len(o) for o in out] == [4, 4]
    for i, row in enumerate(out):
        for j, c in enumerate(row):
            assert (c.prompt_index, c.sample_index) == (i, j)
            assert 1 <= len(c.token_ids) <= 6 and c.finish_reason in ("eos", "length", "stop")
    again = HFGenerateSampler(model, tok, batch_size=3).sample(prompts, 4, params)
    assert [[c.text for c in r] for r in out] == [[c.text for c in r] for r in again]  # seeded
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    alone = HFGenerateSampler(model, tok, batch_size=1).sample(["short"], 1, greedy)[0][0]
    padded = HFGenerateSampler(model, tok, batch_size=4).sample(["short", "a much longer prompt here"], 1, greedy)[0][0]
    assert alone.token_ids == padded.token_ids  # left padding does not change the result
