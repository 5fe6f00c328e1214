"""Packed rollouts score like separate ones; the engine samples from the live policy weights."""

import pytest
import torch

from thinkfast.inference.engine import Engine
from thinkfast.inference.params import SamplingParams
from thinkfast.rl.batching import PolicyScorer, Rollout, pack
from thinkfast.rl.config import RolloutConfig
from thinkfast.rl.rollouts import RolloutEngine
from tiny import char_tokenizer, tiny_policy


def _rollouts(vocab, shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Rollout(torch.randint(3, vocab, (p,), generator=g).tolist(), torch.randint(3, vocab, (r,), generator=g).tolist(), i)
            for i, (p, r) in enumerate(shapes)]


@pytest.mark.parametrize("rows", [1, 3])
def test_packed_logprobs_equal_unpacked(rows):
    model = tiny_policy(23, mixers=("mamba1", "attention", "mamba2")).train()
    scorer = PolicyScorer(model, chunk_tokens=7, temperature=0.7)
    rollouts = _rollouts(23, [(5, 4), (3, 9), (6, 1), (4, 5), (2, 7), (8, 3)])
    packed = pack(rollouts, row_tokens=20, rows=rows)
    assert any(len(mb.rollouts) > 1 for mb in packed)  # really packed
    got = {}
    with torch.no_grad():
        for mb in packed:
            logp, ent = scorer(mb.input_ids, mb.position_ids, mb.targets)
            for i, part in zip(mb.rollouts, logp.split([len(rollouts[i].response_ids) for i in mb.rollouts])):
                got[i] = part
        for i, r in enumerate(rollouts):
            ids = torch.tensor([r.prompt_ids + r.response_ids])
            logits = model(ids).logits[0, len(r.prompt_ids) - 1 : -1] / 0.7
            ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r.response_ids)[:, None])[:, 0]
            torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)


def test_pack_never_truncates_and_keeps_order():
    rollouts = _rollouts(23, [(5, 40), (3, 2), (2, 2)])
    packed = pack(rollouts, row_tokens=8)
    assert [i for mb in packed for i in mb.rollouts] == [0, 1, 2]
    assert packed[0].input_ids.shape[1] == 45  # a rollout longer than the row budget gets its own row
    n_targets = sum(int((mb.targets != -100).sum()) for mb in packed)
    assert n_targets == sum(len(r.response_ids) for r in rollouts)


def _sample(engine_or_rollouts, prompts, seed=3):
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=seed)
    out = engine_or_rollouts.generate(prompts, params, n=4) if isinstance(engine_or_rollouts, RolloutEngine) else \
        engine_or_rollouts.generate(prompts, params, n=4, progress=False)
    return [[c.token_ids for c in group] for group in out]


@pytest.mark.parametrize("dtype", ["policy", "bf16"])
def test_rollouts_follow_in_place_updates(dtype):
    """After an optimizer step the SAME engine (same state pool) samples what a fresh engine on the
    updated weights samples: the engine reads the policy's own tensors (or a mirror refreshed in place)."""
    tok = char_tokenizer()
    policy = tiny_policy(len(tok))
    prompts = ["1+2=\\boxed{", "3+4=\\boxed{"]
    roll = RolloutEngine(policy, tok, RolloutConfig(dtype=dtype, max_new_tokens=6), max_len=24, max_batch=8)
    before = _sample(roll, prompts)
    engine = roll.engine
    pointers = [p.data_ptr() for p in roll.model.parameters()]
    opt = torch.optim.AdamW(policy.parameters(), lr=0.5)
    policy(torch.tensor([[4, 5, 6, 7]])).logits.sum().backward()
    opt.step()
    after = _sample(roll, prompts)
    assert roll.engine is engine and roll.builds == 1  # state pool reused, not rebuilt
    assert [p.data_ptr() for p in roll.model.parameters()] == pointers  # updated in place
    fresh_model = roll.model if dtype == "policy" else roll.mirror
    fresh = _sample(Engine(fresh_model, tok, max_batch=8, max_len=24, progress=False), prompts)
    assert after == fresh
    assert after != before  # the update changed what is sampled (so the check above can fail)
    if dtype == "bf16":
        for m, p in zip(roll.mirror.parameters(), policy.parameters()):
            assert torch.equal(m, p.to(m.dtype))


def test_release_between_phases_rebuilds():
    tok = char_tokenizer()
    roll = RolloutEngine(tiny_policy(len(tok)), tok, RolloutConfig(release_between_phases=True), max_len=24, max_batch=8)
    a = _sample(roll, ["1+1=\\boxed{"])
    assert roll.engine is None
    b = _sample(roll, ["1+1=\\boxed{"])
    assert roll.builds == 2 and a == b


@pytest.mark.gpu  # captured decode graphs need CUDA
def test_cuda_graphs_see_in_place_updates():
    tok = char_tokenizer()
    policy = tiny_policy(len(tok)).cuda()
    roll = RolloutEngine(policy, tok, RolloutConfig(max_new_tokens=6), max_len=24, max_batch=8)
    _sample(roll, ["1+2=\\boxed{"])
    opt = torch.optim.AdamW(policy.parameters(), lr=0.5)
    policy(torch.tensor([[4, 5, 6, 7]], device="cuda")).logits.sum().backward()
    opt.step()
    after = _sample(roll, ["1+2=\\boxed{"])  # replays graphs captured before the update
    fresh = _sample(Engine(policy, tok, max_batch=8, max_len=24, progress=False), ["1+2=\\boxed{"])
    assert after == fresh
