"""Decode-step kernels vs references: Mamba-1 `selective_state_update` and discrete Mamba-2 `ssd_step`,
with and without state slot indices (pool rows not named must stay untouched), with an fp32 and a
bf16 state pool (the engine's `ssm_state_dtype`)."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close, assert_rounded_from
from thinkfast.ops import dispatch
from thinkfast.ops.reference import selective_state_update_ref, ssd_step_ref

pytestmark = pytest.mark.triton


def mamba1_inputs(b, d, groups, n, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, dt=dtype, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device=device, dtype=dt)

    return dict(x=rnd(b, d), dt=rnd(b, d, scale=0.5), A=-torch.exp(rnd(d, n, dt=torch.float32, scale=0.5)),
                B=rnd(b, groups, n), C=rnd(b, groups, n), D=rnd(d, dt=torch.float32), z=rnd(b, d),
                dt_bias=rnd(d, dt=torch.float32, scale=0.5, shift=-2.0))


def check_state(got, want32, magnitude):
    """fp32 state: equal to the reference's; bf16 state: the reference's fp32 update, rounded (y is compared
    separately: it comes from the unrounded fp32 state on both sides).  `magnitude`: the same update of
    |state| with |x| and |B|, i.e. |decay * s| + |dt * B * x| per element, the scale of fp32 differences."""
    if got.dtype == torch.float32:
        assert_close("state", got, want32, 1e-5)
    else:
        assert_rounded_from("state", got, want32, magnitude)


def check_mamba1(b, d, groups, n, dtype, pool, use_idx, device, tol, state_dtype=torch.float32):
    inputs = mamba1_inputs(b, d, groups, n, dtype, device)
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(pool, d, n, generator=gen).to(device, state_dtype)
    idx = torch.randperm(pool, generator=gen)[:b].to(device) if use_idx else None
    s_k, s_r = state.clone(), state.float()  # the reference steps an fp32 copy: the exact update
    y_k = dispatch.selective_state_update(s_k, **inputs, state_indices=idx, backend="triton")
    y_r = selective_state_update_ref(s_r, **inputs, state_indices=idx)
    s_abs = state.float().abs()
    selective_state_update_ref(s_abs, **{**inputs, "x": inputs["x"].abs(), "B": inputs["B"].abs()}, state_indices=idx)
    assert y_k.dtype == dtype and s_k.dtype == state_dtype
    assert_close("y", y_k, y_r, tol)
    check_state(s_k, s_r, s_abs)
    untouched = torch.ones(pool, dtype=torch.bool, device=device)
    untouched[idx if idx is not None else torch.arange(b, device=device)] = False
    assert torch.equal(s_k[untouched], state[untouched]), "rows outside state_indices changed"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d,groups,n", [(64, 4, 16), (48, 3, 16), (32, 4, 8)])
@pytest.mark.parametrize("use_idx", [False, True])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_mamba1_step_matches_reference(dtype, d, groups, n, use_idx, state_dtype):
    check_mamba1(3, d, groups, n, dtype, 6, use_idx, DEVICE, TOL[dtype], state_dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_kv,hd,rep,n", [(2, 32, 3, 16), (1, 16, 4, 8)])
def test_mamba1_step_reads_gqa_x_and_b_by_index(dtype, n_kv, hd, rep, n):
    """rep > 1: x (b, n_kv*hd) and B over x's channels, read by index, equal the step on the expanded
    tensors (query head h takes kv head h // rep); A_log given with a_is_log equals A = -exp(A_log)."""
    from thinkfast.ops.reference.mamba1_step import repeat_heads
    from thinkfast.ops.triton.state_update import selective_state_update

    b, d_xb = 3, n_kv * hd
    d = d_xb * rep
    gen = torch.Generator().manual_seed(3)
    x, Bx = (torch.randn(b, d_xb, generator=gen).to(DEVICE, dtype) for _ in range(2))
    rest = mamba1_inputs(b, d, d // n, n, dtype, DEVICE)
    A_log = torch.randn(d, n, generator=gen).to(DEVICE) * 0.5
    state = torch.randn(4, d, n, generator=gen).to(DEVICE)
    idx = torch.tensor([2, 0, 3], device=DEVICE)
    s_k, s_r = state.clone(), state.clone()
    y_k = selective_state_update(s_k, x, rest["dt"], A_log, Bx.view(b, d_xb // n, n), rest["C"], rest["D"], rest["z"],
                                 rest["dt_bias"], True, idx, head_dim=hd, rep=rep, a_is_log=True)
    y_r = selective_state_update_ref(s_r, repeat_heads(x, hd, rep), rest["dt"], -torch.exp(A_log),
                                     repeat_heads(Bx, hd, rep).view(b, d // n, n), rest["C"], rest["D"], rest["z"],
                                     rest["dt_bias"], True, idx)
    assert_close("y", y_k, y_r, TOL[dtype])
    assert_close("state", s_k, s_r, 1e-5)


def test_mamba1_step_rep_needs_matching_x():
    from thinkfast.ops.triton.state_update import selective_state_update

    inp = mamba1_inputs(2, 32, 2, 16, torch.float32, DEVICE)
    with pytest.raises(ValueError, match="rep=3"):
        selective_state_update(torch.zeros(2, 32, 16, device=DEVICE), **inp, rep=3, head_dim=8)


def check_ssd_step(b, h, n, p, dtype, pool, use_idx, device, tol, state_dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, h, p, generator=gen).to(device, dtype)
    g = (-torch.rand(b, h, generator=gen) * 2).to(device, torch.float32)
    B = torch.randn(b, h, n, generator=gen).to(device, dtype)
    C = torch.randn(b, h, n, generator=gen).to(device, dtype)
    state = torch.randn(pool, h, n, p, generator=gen).to(device, state_dtype)
    idx = torch.randperm(pool, generator=gen)[:b].to(device) if use_idx else None
    s_k, s_r = state.clone(), state.float()
    y_k = dispatch.ssd_step(s_k, x, g, B, C, state_indices=idx, backend="triton")
    y_r = ssd_step_ref(s_r, x, g, B, C, state_indices=idx)
    s_abs = state.float().abs()
    ssd_step_ref(s_abs, x.abs(), g, B.abs(), C, state_indices=idx)
    assert y_k.dtype == dtype and s_k.dtype == state_dtype
    assert_close("y", y_k, y_r, tol)
    check_state(s_k, s_r, s_abs)
    untouched = torch.ones(pool, dtype=torch.bool, device=device)
    untouched[idx if idx is not None else torch.arange(b, device=device)] = False
    assert torch.equal(s_k[untouched], state[untouched]), "rows outside state_indices changed"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("h,n,p", [(2, 16, 24), (3, 8, 16)])
@pytest.mark.parametrize("use_idx", [False, True])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_ssd_step_matches_reference(dtype, h, n, p, use_idx, state_dtype):
    check_ssd_step(3, h, n, p, dtype, 5, use_idx, DEVICE, TOL[dtype], state_dtype)


def test_bf16_state_step_is_the_fp32_step_rounded():
    """What a bf16 state pool means: load -> fp32, one fp32 step, store rounded; y from the unrounded state."""
    inputs = mamba1_inputs(3, 32, 2, 16, torch.float32, "cpu")
    state = torch.randn(4, 32, 16).to(torch.bfloat16)  # (pool, d, n)
    idx = torch.tensor([3, 0, 2])
    wide = state.float()
    y16 = selective_state_update_ref(state, **inputs, state_indices=idx)
    y32 = selective_state_update_ref(wide, **inputs, state_indices=idx)
    assert torch.equal(y16, y32) and torch.equal(state, wide.to(torch.bfloat16))
    x, g, B, C = torch.randn(3, 2, 8), -torch.rand(3, 2), torch.randn(3, 2, 16), torch.randn(3, 2, 16)
    state = torch.randn(4, 2, 16, 8).to(torch.bfloat16)  # (pool, h, n, p)
    wide = state.float()
    assert torch.equal(ssd_step_ref(state, x, g, B, C, idx), ssd_step_ref(wide, x, g, B, C, idx))
    assert torch.equal(state, wide.to(torch.bfloat16))


# Batch is the launch grid, not a kernel argument, and 1B / 3B differ only in d and groups (16 channels per
# group in both): every case runs one compiled binary.  Two cases cover both sizes and both the batch-1
# latency and batch-256 throughput grids (was 4); the SSD step has one shape, so one case (was 2).
@pytest.mark.gpu
@pytest.mark.parametrize("shape,batch", [("1b", 1), ("3b", 256)])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_mamba1_step_gpu_spec_shapes(shape, batch, state_dtype):
    d, groups = {"1b": (2048, 128), "3b": (3072, 192)}[shape]
    check_mamba1(batch, d, groups, 16, torch.bfloat16, 2 * batch, True, "cuda", 1.5e-2, state_dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_ssd_step_gpu_llamba_shape(state_dtype):
    check_ssd_step(256, 32, 64, 96, torch.bfloat16, 512, True, "cuda", 1.5e-2, state_dtype)
