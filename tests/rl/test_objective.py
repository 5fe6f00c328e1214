"""Advantages, aggregation and the clipped objective against hand-computed values; its gradient
against finite differences through a tiny hybrid in fp64."""

import math

import pytest
import torch

from thinkfast.rl.batching import PolicyScorer, Rollout, pack, per_token
from thinkfast.rl.objective import aggregation_weights, clipped_objective, group_advantages
from tiny import tiny_policy


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    adv = group_advantages(rewards, eps=1e-6)
    s = 0.5 / math.sqrt(1 / 3)  # mean 0.5, unbiased std sqrt(1/3)
    expected = torch.tensor([[s, -s, -s, s], [0, 0, 0, 0], [-0.5, -0.5, -0.5, 1.5], [0, 0, 0, 0]])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)
    assert (adv[1] == 0).all() and (adv[3] == 0).all()  # all-equal groups: exactly zero, no float noise


def test_aggregation_weights_by_hand():
    torch.testing.assert_close(aggregation_weights([1, 3], "token_mean", 4, 2), torch.full((4,), 0.25))
    torch.testing.assert_close(aggregation_weights([1, 3], "seq_mean", 4, 2), torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6]))
    # totals are global: two processes each holding half the mini-batch
    torch.testing.assert_close(aggregation_weights([2], "token_mean", 8, 4), torch.full((2,), 0.125))


def _case():
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.5], dtype=torch.float64)
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=torch.float64)
    logp = old + ratio.log()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    return logp, old, adv


def test_clipped_objective_by_hand():
    logp, old, adv = _case()
    w = torch.full((4,), 0.25, dtype=torch.float64)
    loss, stats = clipped_objective(logp, old, adv, w, 0.2, 0.2)
    # per token min(r A, clip(r) A): 1.2 (clipped), 0.5, -1.1, -0.8 (clipped)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 1.1 - 0.8) / 4)
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    ent = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    loss_e, stats_e = clipped_objective(logp, old, adv, w, 0.2, 0.2, ent, 0.1)
    assert loss_e.item() == pytest.approx(0.05 - 0.1 * 2.5)
    assert stats_e["entropy"].item() == pytest.approx(2.5)
    # asymmetric clip: eps_high 0.6 lets ratio 1.5 through for A > 0
    loss_h, _ = clipped_objective(logp, old, adv, w, 0.2, 0.6)
    assert loss_h.item() == pytest.approx(-(1.5 + 0.5 - 1.1 - 0.8) / 4)
    # k3 KL to a reference twice as likely on every token: 2 - log 2 - 1 per token
    loss_k, stats_k = clipped_objective(logp, old, adv, w, 0.2, 0.2, ref_logp=logp + math.log(2), kl_coef=0.5)
    assert stats_k["kl"].item() == pytest.approx(1 - math.log(2))
    assert loss_k.item() == pytest.approx(0.05 + 0.5 * (1 - math.log(2)))
    # zero advantages: only the entropy term moves the loss
    zero, _ = clipped_objective(logp, old, torch.zeros(4, dtype=torch.float64), w, 0.2, 0.2, ent, 0.1)
    assert zero.item() == pytest.approx(-0.25)


def test_clipped_gradient_by_hand():
    """d loss / d logp: r A w where unclipped, 0 where the clip is active."""
    logp, old, adv = _case()
    logp = logp.clone().requires_grad_(True)
    loss, _ = clipped_objective(logp, old, adv, torch.full((4,), 0.25, dtype=torch.float64), 0.2, 0.2)
    loss.backward()
    expected = torch.tensor([0.0, -0.5 * 0.25, 1.1 * 0.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected)


def _rollouts(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (p, r) in enumerate([(5, 4), (3, 7), (6, 2), (4, 5)]):
        prompt = torch.randint(3, vocab, (p,), generator=g).tolist()
        resp = torch.randint(3, vocab, (r,), generator=g).tolist()
        out.append(Rollout(prompt, resp, group=i // 2, advantage=float(torch.randn((), generator=g))))
    return out


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = tiny_policy(23, mixers=("mamba1", "attention"), dtype=torch.float64).train()
    scorer = PolicyScorer(model, chunk_tokens=5, temperature=0.8)
    rollouts = _rollouts(23)
    (mb,) = pack(rollouts, row_tokens=1000)
    with torch.no_grad():
        logp0, _ = scorer(mb.input_ids, mb.position_ids, mb.targets)
    g = torch.Generator().manual_seed(1)
    for r, part in zip(rollouts, logp0.split([len(r.response_ids) for r in rollouts])):
        r.old_logp = part + 0.4 * torch.randn(part.shape, generator=g, dtype=torch.float64)  # some ratios far outside the clip
    lengths = [len(r.response_ids) for r in rollouts]
    adv = torch.repeat_interleave(torch.tensor([r.advantage for r in rollouts], dtype=torch.float64), torch.tensor(lengths))
    old = per_token(rollouts, mb, "old_logp")
    w = aggregation_weights(lengths, "seq_mean", sum(lengths), len(lengths), dtype=torch.float64)

    def loss_fn():
        logp, ent = scorer(mb.input_ids, mb.position_ids, mb.targets)
        loss, stats = clipped_objective(logp, old, adv, w, 0.2, 0.2, ent, 0.05)
        return loss, stats

    loss, stats = loss_fn()
    assert 0 < stats["clip_frac"].item() < 1  # both branches are exercised
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction)).item()
    h = 1e-4  # the model keeps a few fp32 casts (norms, A_log): central differences at 1e-4 agree to ~1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
        plus = loss_fn()[0].item()
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
        minus = loss_fn()[0].item()
        for p, d in zip(params, direction):
            p.add_(h * d)
    numeric = (plus - minus) / (2 * h)
    assert abs(analytic) > 1e-4
    assert numeric == pytest.approx(analytic, rel=1e-4)
