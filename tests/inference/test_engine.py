"""Engine behaviour on tiny random models (CPU, no graphs: the same code path as on GPU otherwise)."""

import pytest
import torch

from tests.inference.conftest import VOCAB, tiny_model
from thinkfast.inference.engine import Engine
from thinkfast.inference.params import SamplingParams

PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42], [9, 9, 3, 14, 15]]


def greedy_by_full_forward(model, prompt, steps):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("mix", ["attention", "hybrid", "pure", "all_kinds"])
def test_greedy_equals_repeated_full_forwards(mix):
    model = tiny_model(mix)
    steps = 9
    # 3 slots for 4 ragged prompts: continuous batching refills a slot mid-run
    engine = Engine(model, max_batch=3, max_len=24, sync_every=4, progress=False)
    results = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=steps, ignore_eos=True))
    for i, prompt in enumerate(PROMPTS):
        done = results[i][0]
        assert done.finish_reason == "length"
        assert done.token_ids == greedy_by_full_forward(model, prompt, steps), f"prompt {i}"


def test_fork_matches_separate_prefill():
    """A prompt prefilled once and copied into N slots continues exactly like N separate prefills."""
    model = tiny_model("all_kinds")
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    other = torch.tensor([[0, 0, 0, 7, 7, 2, 2, 8]])  # ragged neighbour in the separate batch
    mask = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
    state = model.allocate_state(8, 32, dtype=torch.float32)
    first = model.prefill(prompt, state, torch.tensor([0]))
    state.copy_slots(torch.tensor([0, 0, 0]), torch.tensor([1, 2, 3]), upto=8)
    separate = model.prefill(torch.cat([prompt, other]), state, torch.tensor([4, 5]), attention_mask=mask)
    torch.testing.assert_close(first[0], separate[0], atol=1e-5, rtol=1e-5)
    tokens = torch.tensor([11, 11, 11, 11])
    forked = model.step(tokens, state, torch.tensor([0, 1, 2, 3]))
    alone = model.step(tokens[:1], state, torch.tensor([4]))
    for row in range(4):
        torch.testing.assert_close(forked[row], alone[0], atol=1e-5, rtol=1e-5)
    # and two more steps stay together
    nxt = torch.tensor([12, 12])
    a = model.step(nxt, state, torch.tensor([1, 2]))
    b = model.step(nxt, state, torch.tensor([4, 0]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_n_samples_fork_in_engine_matches_first_token_distribution():
    """Engine with n samples: every sample's first token comes from the prompt's prefill logits."""
    model = tiny_model("hybrid")
    engine = Engine(model, max_batch=8, max_len=16, progress=False)
    params = SamplingParams(temperature=1.0, max_new_tokens=1, seed=3)
    res = engine.generate([PROMPTS[1]], params, n=8)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[1]])).logits[0, -1]
    # with the same seeds, sampling directly from the full-forward logits gives the same first tokens
    from thinkfast.inference.sampling import SamplerMode, sample_next, sequence_seed

    seeds = torch.tensor([sequence_seed(3, 0, j) for j in range(8)])
    expect = sample_next(
        logits.expand(8, -1), SamplerMode.from_params(params), torch.ones(8), torch.zeros(8, dtype=torch.long),
        torch.ones(8), torch.zeros(8), seeds, torch.zeros(8, dtype=torch.long),
    )
    assert [r.token_ids[0] for r in res[0]] == expect.tolist()
    assert [r.sample_index for r in res[0]] == list(range(8))


def test_continuous_batching_returns_every_request_once():
    model = tiny_model("hybrid")
    prompts = [[i + 1, (3 * i) % VOCAB + 1, 2] for i in range(7)]
    engine = Engine(model, max_batch=4, max_len=40, sync_every=3, progress=False)
    # varied lengths via EOS: token 0..9 are EOS so sequences end at different times
    engine.eos_ids = set(range(10))
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
    res = engine.generate(prompts, params, n=3)
    assert len(res) == 7
    seen = set()
    for i, row in enumerate(res):
        assert len(row) == 3
        for j, c in enumerate(row):
            assert c is not None and (c.prompt_index, c.sample_index) == (i, j)
            seen.add((i, j))
            assert 1 <= len(c.token_ids) <= 12
            if c.finish_reason == "eos":
                assert c.token_ids[-1] < 10 and all(t >= 10 for t in c.token_ids[:-1])
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == 12
    assert len(seen) == 21
    assert engine.last_stats["max_active"] <= 4
    # the same requests with room for all at once give the same samples (seeded per sequence)
    wide = Engine(model, max_batch=32, max_len=40, sync_every=5, progress=False)
    wide.eos_ids = set(range(10))
    res_wide = wide.generate(prompts, params, n=3)
    assert [[c.token_ids for c in row] for row in res] == [[c.token_ids for c in row] for row in res_wide]


def test_per_sequence_stops(char_tokenizer):
    model = tiny_model("all_kinds")
    engine = Engine(model, char_tokenizer, max_batch=4, max_len=40, sync_every=4, progress=False)
    greedy = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)
    free = engine.generate(PROMPTS, greedy)
    base = [r[0].token_ids for r in free]
    # EOS: make prompt 0's 5th greedy token the EOS id
    eos = base[0][4]
    engine.eos_ids = {eos}
    res = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=12))
    first = base[0].index(eos)
    assert res[0][0].finish_reason == "eos" and res[0][0].token_ids == base[0][: first + 1]
    for i in range(1, 4):  # the other sequences stop at their own first EOS, or run to the limit
        if eos in base[i]:
            k = base[i].index(eos)
            assert res[i][0].finish_reason == "eos" and res[i][0].token_ids == base[i][: k + 1]
        else:
            assert res[i][0].finish_reason == "length" and res[i][0].token_ids == base[i]
    engine.eos_ids = set()
    # stop string: the text of prompt 1's tokens 6..7
    text1 = char_tokenizer.decode(base[1])
    stop = text1[6:8]
    at = text1.find(stop)
    res = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=12, stop=[stop]))
    assert res[1][0].finish_reason == "stop"
    assert res[1][0].text == text1[:at]
    assert res[1][0].token_ids == base[1][: at + len(stop)]
    # max tokens differ from the 12 of the free run only by the cut
    res = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True))
    assert all(r[0].token_ids == b[:5] and r[0].finish_reason == "length" for r, b in zip(res, base))
    assert res[2][0].text == char_tokenizer.decode(base[2][:5])


def test_seeded_sampling_is_reproducible_and_batch_independent():
    model = tiny_model("hybrid")
    engine = Engine(model, max_batch=6, max_len=32, sync_every=4, progress=False)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=123, ignore_eos=True)
    a = engine.generate(PROMPTS, params, n=2)
    b = engine.generate(PROMPTS, params, n=2)
    assert [[c.token_ids for c in r] for r in a] == [[c.token_ids for c in r] for r in b]
    alone = engine.generate(PROMPTS[:1], params, n=2)  # prompt 0 without the others in the batch
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in a[0]]
    assert a[0][0].token_ids != a[0][1].token_ids  # the two samples are different streams
    other = engine.generate(PROMPTS, SamplingParams(**{**params.__dict__, "seed": 124}), n=2)
    assert [[c.token_ids for c in r] for r in other] != [[c.token_ids for c in r] for r in a]


def test_engine_sampler_protocol_with_string_prompts(char_tokenizer):
    from thinkfast.inference.api import EngineSampler

    model = tiny_model("pure")
    sampler = EngineSampler(Engine(model, char_tokenizer, max_batch=4, max_len=32, progress=False))
    out = sampler.sample(["abc", "hello"], 2, SamplingParams(temperature=0.7, max_new_tokens=6, seed=1))
    assert [len(r) for r in out] == [2, 2]
    assert all(c.text == char_tokenizer.decode(c.token_ids) for r in out for c in r)


def test_prompt_longer_than_max_len_is_an_error():
    from thinkfast.errors import ThinkfastError

    engine = Engine(tiny_model("attention"), max_batch=2, max_len=4, progress=False)
    with pytest.raises(ThinkfastError, match="max_len"):
        engine.generate([[1, 2, 3, 4, 5]], SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize("slots", [1, 3, 64, 65, 100, 512, 513, 1024, 2048])
def test_decode_buckets_bound_the_padding(slots):
    """Every active count gets a bucket; above 64 rows a bucket pads by at most 1.5x (midpoints between powers of
    two), below it the powers of two (the step there is launch-bound, padding is free)."""
    from thinkfast.inference.graphs import bucket_sizes, pick_bucket

    sizes = bucket_sizes(slots)
    assert sizes == sorted(set(sizes)) and sizes[-1] == slots and sizes[0] == 1
    for active in range(1, slots + 1):
        bucket = pick_bucket(sizes, active)
        assert active <= bucket <= slots
        if active > 64:
            assert bucket <= 1.5 * active + 1


def test_stacked_projections_follow_training_between_generate_calls():
    """The engine stacks q/k/v for decode; weights changed in place after it started (a training step) are
    what the next generate decodes with."""
    model = tiny_model("all_kinds")
    engine = Engine(model, max_batch=4, max_len=24, sync_every=4, progress=False)
    assert engine.stacked_copies is not None
    assert all(m.decode_stacked is None for m in model._decode_stackers())  # referenced only while decoding
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True)
    before = [r[0].token_ids for r in engine.generate(PROMPTS, params)]
    with torch.no_grad():
        for m in model._decode_stackers():
            for p in m.parameters():
                p.mul_(-3.0)  # large enough to change greedy choices
    after = [r[0].token_ids for r in engine.generate(PROMPTS, params)]
    assert after != before
    assert all(m.decode_stacked is None for m in model._decode_stackers())  # nothing kept past the call
    for i, prompt in enumerate(PROMPTS):
        assert after[i] == greedy_by_full_forward(model, prompt, 8), f"prompt {i}"


def test_no_stacked_projections_when_they_would_cost_a_slot(monkeypatch):
    import thinkfast.inference.engine as engine_module

    real = engine_module.plan_slots

    model = tiny_model("attention")
    first = Engine(model, max_batch=3, max_len=24, sync_every=4, progress=False)
    model.use_decode_projections(first.stacked_copies)  # what driving its decode windows directly leaves behind
    seen = []

    def tight(*args, **kwargs):  # memory for exactly the slots asked for, nothing spare
        seen.append([m.decode_stacked for m in model._decode_stackers()])
        plan = real(*args, **kwargs)
        plan.fit = plan.slots
        return plan

    monkeypatch.setattr(engine_module, "plan_slots", tight)
    engine = Engine(model, max_batch=3, max_len=24, sync_every=4, progress=False)
    assert seen == [[None] * len(seen[0])]  # the earlier copies were dropped before planning
    assert engine.stacked_copies is None and all(m.decode_stacked is None for m in model._decode_stackers())
    params = SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True)
    for e in (engine, first, engine):  # both engines live on one model: each decodes with its own choice
        assert e.generate(PROMPTS, params)[1][0].token_ids == greedy_by_full_forward(model, PROMPTS[1], 5)
    assert first.stacked_copies is not None
