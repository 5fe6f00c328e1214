"""The fused temperature sampler (one pass over the logits) against the PyTorch Gumbel-max reference it
replaces in `sample_next`: the same token for every row, greedy rows included, ties to the lower index."""

import pytest
import torch

from _ops_util import DEVICE
from thinkfast.ops import dispatch
from thinkfast.ops.reference import gumbel_argmax_ref
from thinkfast.ops.reference.sampling import key_gumbel_noise, row_keys

pytestmark = pytest.mark.triton


def _inputs(b, V, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, V, generator=gen)).to(dtype)
    temperature = torch.tensor([0.0, 0.6, 1.0, 2.0, 0.3, 1.3][:b] + [0.7] * max(0, b - 6))
    keys = row_keys(torch.randint(0, 2**62, (b,), generator=gen), torch.randint(0, 500, (b,), generator=gen))
    return logits.to(DEVICE), temperature.to(DEVICE), keys.to(DEVICE)


def _assert_same_tokens(got, want, logits, temperature, keys):
    """Equal tokens; a row may differ only where two scores tie to float32 rounding (the kernel's `log` is
    not bit-identical to torch's everywhere)."""
    assert got.dtype == torch.int64 and got.shape == want.shape
    differ = (got != want).nonzero().flatten().tolist()
    if not differ:
        return
    x = logits.float() / torch.where(temperature > 0, temperature, 1.0).float()[:, None]
    score = x + key_gumbel_noise(keys, logits.shape[-1])
    for r in differ:
        a, b = score[r, got[r]].item(), score[r, want[r]].item()
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"row {r}: token {got[r]} (score {a}) vs {want[r]} ({b})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V", [1000, 4096, 5003])  # one block, exactly one, two with a ragged tail
def test_fused_sampler_matches_the_reference(dtype, V):
    logits, temperature, keys = _inputs(6, V, dtype)
    got = dispatch.gumbel_argmax(logits, temperature, keys, backend="triton")
    want = gumbel_argmax_ref(logits, temperature, keys)
    _assert_same_tokens(got, want, logits, temperature, keys)
    assert got[0] == logits[0].argmax()  # temperature 0: greedy


def test_ties_masked_entries_and_strided_rows():
    V = 5000
    logits = torch.zeros(3, V)
    logits[1, :4500] = float("-inf")  # only the tail (second block) can win
    logits[2, 100] = logits[2, 4200] = 5.0  # a greedy tie across blocks: the lower index
    wide = torch.full((3, V + 7), -1.0)
    wide[:, :V] = logits
    rows = wide.to(DEVICE)[:, :V]  # row stride V + 7
    temperature = torch.tensor([0.0, 1.0, 0.0], device=DEVICE)
    keys = row_keys(torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0])).to(DEVICE)
    got = dispatch.gumbel_argmax(rows, temperature, keys, backend="triton")
    assert got.tolist() == [0, got[1].item(), 100]
    assert got[1] >= 4500
    assert torch.equal(got, gumbel_argmax_ref(rows, temperature, keys))


def test_sample_next_uses_it_for_temperature_only_requests(monkeypatch):
    """The engine's sampler routes temperature-only requests through the fused op (filters keep the old path)."""
    from thinkfast.inference import sampling

    calls = []
    real = dispatch.gumbel_argmax
    monkeypatch.setattr(dispatch, "gumbel_argmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    logits, temperature, _ = _inputs(4, 300, torch.float32)
    seeds, counters = torch.arange(4, device=DEVICE), torch.zeros(4, dtype=torch.long, device=DEVICE)
    ones, zeros = torch.ones(4, device=DEVICE), torch.zeros(4, device=DEVICE)
    k0 = torch.zeros(4, dtype=torch.long, device=DEVICE)
    plain = sampling.sample_next(logits, sampling.SamplerMode(all_greedy=False), temperature, k0, ones, zeros,
                                 seeds, counters)
    assert calls == [1]
    filtered = sampling.sample_next(logits, sampling.SamplerMode(all_greedy=False, top_p=True), temperature, k0,
                                    ones, zeros, seeds, counters)
    assert calls == [1]  # top-p on: the sorting path
    assert torch.equal(plain, filtered)  # top_p = 1 filters nothing: same draws either way


@pytest.mark.gpu
def test_fused_sampler_at_qwen_vocab_on_gpu():
    """Qwen2.5's vocabulary at decode batch 512, bf16 logits."""
    logits, temperature, keys = _inputs(512, 151936, torch.bfloat16, seed=3)
    got = dispatch.gumbel_argmax(logits, temperature, keys, backend="triton")
    _assert_same_tokens(got, gumbel_argmax_ref(logits, temperature, keys), logits, temperature, keys)
