"""Sampling filters against a brute-force reading of their definitions, and the sampler's statistics."""

import math

import pytest
import torch

from thinkfast.inference.params import SamplingParams
from thinkfast.inference.sampling import SamplerMode, filter_logits, gumbel_noise, sample_next


def brute_force_keep(logits_row, temperature, top_k, top_p, min_p):
    """Kept token ids, from the definitions: temperature, then top-k, then top-p, then min-p."""
    x = [v / temperature for v in logits_row]
    order = sorted(range(len(x)), key=lambda i: -x[i])
    keep = order[: top_k] if top_k > 0 else list(order)
    z = sum(math.exp(x[i]) for i in keep)
    if top_p < 1.0:
        kept, mass = [], 0.0
        for i in keep:
            if mass >= top_p:
                break
            kept.append(i)
            mass += math.exp(x[i]) / z
        keep = kept
    if min_p > 0:
        best = max(x[i] for i in keep)
        keep = [i for i in keep if math.exp(x[i] - best) >= min_p]
    return set(keep)


def test_filters_match_brute_force():
    g = torch.Generator().manual_seed(0)
    b, V = 24, 40
    logits = torch.randn(b, V, generator=g, dtype=torch.float64).float() * 3
    temperature = torch.rand(b, generator=g) * 1.5 + 0.3
    top_k = torch.randint(0, 12, (b,), generator=g)
    top_p = torch.where(torch.rand(b, generator=g) < 0.3, torch.ones(b), torch.rand(b, generator=g) * 0.9 + 0.05)
    min_p = torch.where(torch.rand(b, generator=g) < 0.3, torch.zeros(b), torch.rand(b, generator=g) * 0.3)
    out = filter_logits(logits, temperature, top_k, top_p, min_p)
    for r in range(b):
        expect = brute_force_keep(logits[r].tolist(), float(temperature[r]), int(top_k[r]), float(top_p[r]), float(min_p[r]))
        got = set(torch.nonzero(torch.isfinite(out[r])).flatten().tolist())
        assert got == expect, f"row {r}"
        kept = sorted(expect)
        torch.testing.assert_close(out[r, kept], logits[r, kept] / temperature[r])


@pytest.mark.parametrize("which", ["top_k", "top_p", "min_p"])
def test_each_filter_alone(which):
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    one = torch.ones(1)
    kwargs = {"top_k": None, "top_p": None, "min_p": None}
    kwargs[which] = {"top_k": torch.tensor([2]), "top_p": torch.tensor([0.8]), "min_p": torch.tensor([0.2])}[which]
    out = filter_logits(logits, one, **kwargs)
    expect = brute_force_keep(logits[0].tolist(), 1.0, 2 if which == "top_k" else 0,
                              0.8 if which == "top_p" else 1.0, 0.2 if which == "min_p" else 0.0)
    assert set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist()) == expect
    assert 1 < len(expect) < 6


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([1.5, 1.0, 0.2, -0.5, -2.0, 0.7])
    params = SamplingParams(temperature=0.8, top_k=4, top_p=0.95)
    mode = SamplerMode.from_params(params)
    n = 20000
    tokens = sample_next(
        logits.expand(n, -1), mode, torch.full((n,), 0.8), torch.full((n,), 4), torch.full((n,), 0.95),
        torch.zeros(n), torch.arange(n), torch.zeros(n, dtype=torch.long),
    )
    probs = filter_logits(logits[None], torch.tensor([0.8]), torch.tensor([4]), torch.tensor([0.95]), None).softmax(-1)[0]
    freq = torch.bincount(tokens, minlength=6).float() / n
    assert freq[probs == 0].sum() == 0
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_gumbel_noise_is_counter_based():
    seeds = torch.tensor([1, 2, 1])
    counters = torch.tensor([0, 0, 5])
    g = gumbel_noise(seeds, counters, 1000)
    assert torch.equal(g[0], gumbel_noise(torch.tensor([1]), torch.tensor([0]), 1000)[0])  # no batch dependence
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[0], g[2])
    u = torch.exp(-torch.exp(-g))  # back to uniforms
    assert 0.45 < float(u.mean()) < 0.55 and float(u.min()) > 0 and float(u.max()) < 1


def test_greedy_rows_take_the_argmax_and_seed_reproduces():
    logits = torch.randn(6, 30)
    mode = SamplerMode(all_greedy=False)
    temps = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    args = (torch.zeros(6, dtype=torch.long), torch.ones(6), torch.zeros(6))
    a = sample_next(logits, mode, temps, *args, torch.arange(6), torch.full((6,), 3))
    b = sample_next(logits, mode, temps, *args, torch.arange(6), torch.full((6,), 3))
    assert torch.equal(a, b)
    assert a[0] == logits[0].argmax() and a[2] == logits[2].argmax()
    assert torch.equal(sample_next(logits, SamplerMode(), temps, *args, torch.arange(6), torch.zeros(6)), logits.argmax(-1))
