"""Fused Mamba-1 decode step (conv + GQA expansion by index + state update) vs its reference,
which is the unfused path: conv update, head-wise repeat of x and B, selective_state_update."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close, assert_rounded_from
from thinkfast.ops import dispatch
from thinkfast.ops.reference import mamba1_fused_step_ref

pytestmark = pytest.mark.triton


def _inputs(b, n_kv, hd, rep, n, k, dtype, pool, seed=0, state_dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, dt=dtype, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device=DEVICE, dtype=dt)

    d_xb, d_inner = n_kv * hd, n_kv * hd * rep
    width = 2 * d_inner + 2 * d_xb
    u = rnd(b, width)  # one in_proj-like buffer: the inputs are strided views of it, as in the model
    z, x, B, C = torch.split(u, [d_inner, d_xb, d_xb, d_inner], dim=-1)
    return dict(
        z=z, x=x, B=B, C=C, dt=rnd(b, d_inner, scale=0.5),
        conv_state=rnd(pool, d_xb, k - 1), conv_weight=rnd(d_xb, k, scale=0.5), conv_bias=rnd(d_xb, scale=0.1),
        state=rnd(pool, d_inner, n, dt=state_dtype), A_log=rnd(d_inner, n, dt=torch.float32, scale=0.5),
        D=rnd(d_inner, dt=torch.float32), dt_bias=rnd(d_inner, dt=torch.float32, scale=0.5, shift=-2.0),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_kv,hd,rep,n,k", [(2, 32, 3, 16, 4), (2, 16, 4, 16, 4), (1, 64, 1, 8, 2), (3, 32, 2, 16, 3)])
@pytest.mark.parametrize("use_idx", [False, True])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("launches", [1, 2])
def test_fused_step_matches_reference(dtype, n_kv, hd, rep, n, k, use_idx, state_dtype, launches, monkeypatch):
    """launches 1: the fused kernel; 2: conv step, then the state kernel reading x and B by index."""
    monkeypatch.setenv("THINKFAST_MAMBA1_STEP_LAUNCHES", str(launches))
    b, pool = 3, 6
    inp = _inputs(b, n_kv, hd, rep, n, k, dtype, pool, state_dtype=state_dtype)
    idx = torch.tensor([4, 0, 2], device=DEVICE) if use_idx else None
    k_in = {**inp, "state": inp["state"].clone(), "conv_state": inp["conv_state"].clone()}
    # the reference steps an fp32 copy of the state: the exact update that a bf16 pool stores rounded
    r_in = {**inp, "state": inp["state"].float(), "conv_state": inp["conv_state"].clone()}
    y_k = dispatch.mamba1_fused_step(**k_in, head_dim=hd, state_indices=idx, backend="triton")
    y_r = mamba1_fused_step_ref(**r_in, head_dim=hd, state_indices=idx)
    assert y_k.dtype == dtype and y_k.shape == (b, n_kv * hd * rep) and k_in["state"].dtype == state_dtype
    assert_close("y", y_k, y_r, TOL[dtype])
    _check_state(k_in["state"], r_in["state"], dtype)
    assert torch.equal(k_in["conv_state"], r_in["conv_state"]), "conv state rolled differently"
    rows = idx if idx is not None else torch.arange(b, device=DEVICE)
    untouched = torch.ones(pool, dtype=torch.bool, device=DEVICE)
    untouched[rows] = False
    assert torch.equal(k_in["state"][untouched], inp["state"][untouched])
    assert torch.equal(k_in["conv_state"][untouched], inp["conv_state"][untouched])


def _check_state(got, want32, x_dtype):
    """bf16 x: the conv output is rounded to bf16 on both sides, but a different fp32 summation order can
    flip that rounding for a few channels (1 ulp of x), which the state then carries (1e-3 of its norm).
    A bf16 state is the fp32 update rounded: element by element with fp32 x; with bf16 x, add the
    rounding's relative error (at most eps_bf16 = 2^-7 per element, so of the norm too) to the 1e-3."""
    if got.dtype == torch.float32:
        assert_close("state", got, want32, 1e-5 if x_dtype == torch.float32 else 1e-3)
    elif x_dtype == torch.float32:
        assert_rounded_from("state", got, want32)
    else:
        assert_close("state", got, want32, 1e-3 + torch.finfo(torch.bfloat16).eps)


# 1B and 3B are two compilations (head dim and expansion are constexpr); batch is only the grid, so the
# two cases pair each size with one batch: 1B at batch 1, 3B at batch 256 (was 4 cases, same 2 compiles).
@pytest.mark.gpu
@pytest.mark.parametrize("shape,batch", [("1b", 1), ("3b", 256)])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("launches", [1, 2])
def test_fused_step_gpu_spec_shapes(shape, batch, state_dtype, launches, monkeypatch):
    """The hybrids' Mamba-1 layers: 8 kv heads of 64 (1B) / 128 (3B), expanded 4x / 3x to d_inner 2048 / 3072."""
    monkeypatch.setenv("THINKFAST_MAMBA1_STEP_LAUNCHES", str(launches))
    n_kv, hd, rep = {"1b": (8, 64, 4), "3b": (8, 128, 3)}[shape]
    inp = _inputs(batch, n_kv, hd, rep, 16, 4, torch.bfloat16, 2 * batch, state_dtype=state_dtype)
    idx = torch.randperm(2 * batch, device=DEVICE)[:batch]
    k_in = {**inp, "state": inp["state"].clone(), "conv_state": inp["conv_state"].clone()}
    r_in = {**inp, "state": inp["state"].float(), "conv_state": inp["conv_state"].clone()}
    y_k = dispatch.mamba1_fused_step(**k_in, head_dim=hd, state_indices=idx, backend="triton")
    y_r = mamba1_fused_step_ref(**r_in, head_dim=hd, state_indices=idx)
    assert_close("y", y_k, y_r, TOL[torch.bfloat16])
    _check_state(k_in["state"], r_in["state"], torch.bfloat16)
    assert torch.equal(k_in["conv_state"], r_in["conv_state"]), "conv state rolled differently"


@pytest.mark.parametrize("block_j", [8, 16])
def test_fused_step_partial_blocks(block_j):
    """Head dims not a multiple of the block: masked channels must neither read nor write."""
    inp = _inputs(2, 2, 48, 2, 16, 4, torch.float32, 2)
    k_in = {**inp, "state": inp["state"].clone(), "conv_state": inp["conv_state"].clone()}
    from thinkfast.ops.triton.mamba1_decode import mamba1_fused_step

    y_k = mamba1_fused_step(**k_in, head_dim=48, block_j=block_j * 2 if block_j == 16 else 32)
    y_r = mamba1_fused_step_ref(**inp, head_dim=48)
    assert_close("y", y_k, y_r, TOL[torch.float32])
    assert_close("state", k_in["state"], inp["state"], 1e-5)


def test_step_launches_env_is_checked(monkeypatch):
    from thinkfast.ops.triton.mamba1_decode import step_launches

    monkeypatch.setenv("THINKFAST_MAMBA1_STEP_LAUNCHES", "3")
    with pytest.raises(ValueError, match="THINKFAST_MAMBA1_STEP_LAUNCHES"):
        step_launches()
    monkeypatch.setenv("THINKFAST_MAMBA1_STEP_LAUNCHES", "2")
    assert step_launches() == 2
