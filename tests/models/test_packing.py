"""Packed documents (position resets) must equal the documents run separately (docs/design.md §3.1)."""

import pytest
import torch

from tests.tiny import tiny_student


@pytest.mark.parametrize(
    "mixers",
    [["attention", "mamba1"], ["discrete_mamba2", "discrete_mamba2"], ["mamba2", "attention"], ["mamba1"] * 2],
)
def test_packed_equals_separate(mixers):
    model = tiny_student(mixers)
    docs = [torch.randint(0, 96, (n,)) for n in (5, 2, 9, 4)]
    packed = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        out = model(packed, position_ids=positions).logits[0]
        start = 0
        for d in docs:
            alone = model(d[None]).logits[0]
            assert (out[start : start + len(d)] - alone).abs().max() <= 1e-4
            start += len(d)


def test_without_resets_documents_leak():
    """Sanity check that the test above can fail: without position resets the outputs differ."""
    model = tiny_student(["mamba1", "attention"])
    a, b = torch.randint(0, 96, (6,)), torch.randint(0, 96, (6,))
    with torch.no_grad():
        joined = model(torch.cat([a, b])[None]).logits[0, 6:]
        alone = model(b[None]).logits[0]
    assert (joined - alone).abs().max() > 1e-3
