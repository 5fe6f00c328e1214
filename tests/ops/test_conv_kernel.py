"""Triton causal depthwise conv vs `causal_conv1d_ref`: forward, final state, gradients; and the update step."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close, random_resets
from thinkfast.ops import dispatch
from thinkfast.ops.reference import causal_conv1d_ref, causal_conv1d_update_ref

pytestmark = pytest.mark.triton


def run(fn, x, w, bias, act, reset, init, gy, gf):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, bias, init)]
    y, f = fn(leaves[0], leaves[1], leaves[2], act, reset=reset, initial_state=leaves[3], return_final_state=True)
    loss = (y.float() * gy).sum() + (f * gf).sum()
    present = [t for t in leaves if t is not None]
    return y, f, torch.autograd.grad(loss, present)


def check_conv(b, l, c, k, dtype, act, use_bias, h0, resets, device, tol):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, l, c, generator=gen).to(device, dtype)
    w = torch.randn(c, k, generator=gen).to(device, dtype)
    bias = torch.randn(c, generator=gen).to(device, dtype) if use_bias else None
    init = torch.randn(b, c, k - 1, generator=gen).to(device, dtype) if h0 else None
    reset = random_resets(b, l, 0.1, gen, device) if resets else None
    gy = torch.randn(b, l, c, generator=gen).to(device)
    gf = torch.randn(b, c, k - 1, generator=gen).to(device)

    def kernel(*a, **kw):
        return dispatch.causal_conv1d(*a, **kw, backend="triton")

    yk, fk, gk = run(kernel, x, w, bias, act, reset, init, gy, gf)
    yr, fr, gr = run(causal_conv1d_ref, x, w, bias, act, reset, init, gy, gf)
    assert yk.dtype == dtype
    assert_close("y", yk, yr, tol)
    assert_close("final_state", fk, fr, tol)
    names = ["dx", "dweight"] + (["dbias"] if use_bias else []) + (["dinitial_state"] if h0 else [])
    for name, a, r in zip(names, gk, gr):
        assert_close(name, a, r, tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("l", [3, 45])
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("resets", [False, True])
def test_conv_matches_reference(dtype, l, act, h0, resets):
    check_conv(2, l, 40, 4, dtype, act, True, h0, resets, DEVICE, TOL[dtype])


@pytest.mark.parametrize("k", [2, 3])
def test_conv_other_widths_without_bias(k):
    check_conv(2, 17, 20, k, torch.float32, "silu", False, True, True, DEVICE, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_idx", [False, True])
@pytest.mark.parametrize("act", [None, "silu"])
def test_conv_update_matches_reference(dtype, use_idx, act):
    check_update(3, 40, 4, dtype, use_idx, act, DEVICE, TOL[dtype])


def check_update(b, c, k, dtype, use_idx, act, device, tol, pool=7):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(b, c, generator=gen).to(device, dtype)
    w = torch.randn(c, k, generator=gen).to(device, dtype)
    bias = torch.randn(c, generator=gen).to(device, dtype)
    state = torch.randn(pool, c, k - 1, generator=gen).to(device, dtype)
    idx = torch.randperm(pool, generator=gen)[:b].to(device) if use_idx else None
    s_k, s_r = state.clone(), state.clone()
    y_k = dispatch.causal_conv1d_update(x, s_k, w, bias, act, state_indices=idx, backend="triton")
    y_r = causal_conv1d_update_ref(x, s_r, w, bias, act, state_indices=idx)
    assert_close("y", y_k, y_r, tol)
    assert torch.equal(s_k, s_r), "rolled conv state differs"


# GPU cost is one compilation per dtype (1B and 3B widths share it); the vectorised reference is cheap.
# One case per dtype: bf16 at 3B, fp32 at 1B (was 4).
@pytest.mark.gpu
@pytest.mark.parametrize("shape,dtype", [("3b", torch.bfloat16), ("1b", torch.float32)])
def test_conv_gpu_spec_shapes(shape, dtype):
    c = {"1b": 512, "3b": 1024}[shape]  # conv runs on x only, d_xb wide
    check_conv(2, 2000, c, 4, dtype, "silu", True, True, True, "cuda", TOL[dtype] * 5)


@pytest.mark.gpu
def test_conv_update_gpu():
    # batch is the grid, not a kernel argument: batch 256 runs the same binary batch 1 would (was [1, 256])
    check_update(256, 3072, 4, torch.bfloat16, True, "silu", "cuda", 1.5e-2, pool=512)
