"""Fused token-loss kernel (reverse/forward KL, CE: values and the gradient w.r.t. the student logits) vs the
reference it replaces in `training/losses.py`."""

import pytest
import torch

from _ops_util import DEVICE, assert_close
from thinkfast.ops import dispatch
from thinkfast.ops.reference import token_loss_chunk_ref
from thinkfast.ops.triton.token_loss import token_loss_chunk

pytestmark = pytest.mark.triton

CASES = [
    ((1.0, 0.0, 0.0), 1.0),
    ((0.0, 1.0, 0.0), 1.0),
    ((0.0, 0.0, 1.0), 1.0),
    ((0.7, 0.2, 0.5), 2.0),
    ((1.0, 0.0, 0.3), 0.5),
]


def _logits(c, V, scale=4.0):
    s = (scale * torch.randn(c, V)).to(DEVICE)
    t = (scale * torch.randn(c, V)).to(DEVICE)
    y = torch.randint(0, V, (c,)).to(DEVICE)
    return s, t, y


@pytest.mark.parametrize("weights,T", CASES)
@pytest.mark.parametrize("V,block", [(37, 16), (64, 64), (200, 32)])
def test_kernel_matches_reference(weights, T, V, block):
    torch.manual_seed(0)
    s, t, y = _logits(5, V)
    t_in = t if (weights[0] or weights[1]) else None
    sums_k, g_k = token_loss_chunk(s, t_in, y, weights, T, True, block=block)
    # against the reference in fp64: both fp32 versions round differently where log p - log q is large
    sums_r, g_r = token_loss_chunk_ref(s.double(), t_in.double() if t_in is not None else None, y, weights, T, True)
    torch.testing.assert_close(sums_k.double(), sums_r.double(), rtol=1e-5, atol=1e-5)
    assert_close("grad", g_k, g_r, 2e-5)


def test_kernel_without_gradient_and_in_bf16():
    torch.manual_seed(1)
    s, t, y = _logits(4, 50)
    sums, g = token_loss_chunk(s, t, y, (1.0, 0.0, 0.0), 1.0, False, block=16)
    assert g is None
    torch.testing.assert_close(sums, token_loss_chunk_ref(s, t, y, (1.0, 0.0, 0.0), 1.0, False)[0], rtol=1e-5, atol=1e-5)
    _, g16 = token_loss_chunk(s, t, y, (1.0, 0.0, 0.5), 1.0, True, grad_dtype=torch.bfloat16, block=16)
    _, g_r = token_loss_chunk_ref(s, t, y, (1.0, 0.0, 0.5), 1.0, True)
    assert g16.dtype == torch.bfloat16
    torch.testing.assert_close(g16.float(), g_r, rtol=1e-2, atol=1e-3)


def test_identical_logits_give_zero_kl_and_zero_kl_gradient():
    s, _, y = _logits(3, 40)
    sums, g = token_loss_chunk(s, s.clone(), y, (1.0, 1.0, 0.0), 1.0, True, block=16)
    assert sums[:2].abs().max() < 1e-6 and g.abs().max() < 1e-6


def test_dispatch_routes_to_kernel_or_reference():
    s, t, y = _logits(2, 33)
    a = dispatch.token_loss_chunk(s, t, y, (1.0, 0.0, 0.0), 1.0, True, backend="triton")
    b = dispatch.token_loss_chunk(s, t, y, (1.0, 0.0, 0.0), 1.0, True, backend="reference")
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_kernel_at_real_vocab():
    """Qwen's 152k vocabulary: 4096-wide blocks, 38 of them per row.  Every weight case is a compilation of its
    own and the small cases above run them all; here the three that between them take every branch: reverse KL
    alone (no CE), CE alone (no teacher, T = 1: one softmax), every term at T != 1 (a separate CE softmax)
    (was all 5)."""
    torch.manual_seed(0)
    s, t, y = _logits(64, 151936, scale=6.0)
    for weights, T in [CASES[0], CASES[2], CASES[3]]:
        t_in = t if (weights[0] or weights[1]) else None
        sums_k, g_k = token_loss_chunk(s, t_in, y, weights, T, True)
        sums_r, g_r = token_loss_chunk_ref(s, t_in, y, weights, T, True)
        torch.testing.assert_close(sums_k, sums_r, rtol=1e-4, atol=1e-4)
        assert_close("grad", g_k, g_r, 2e-5)
