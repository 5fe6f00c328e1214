"""Decode-step kernels vs references: Mamba-1 `selective_state_update` and discrete Mamba-2 `ssd_step`,
with and without state slot indices (pool rows not named must stay untouched)."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close
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


def check_mamba1(b, d, groups, n, dtype, pool, use_idx, device, tol):
    inputs = mamba1_inputs(b, d, groups, n, dtype, device)
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(pool, d, n, generator=gen).to(device)
    idx = torch.randperm(pool, generator=gen)[:b].to(device) if use_idx else None
    s_k, s_r = state.clone(), state.clone()
    y_k = dispatch.selective_state_update(s_k, **inputs, state_indices=idx, backend="triton")
    y_r = selective_state_update_ref(s_r, **inputs, state_indices=idx)
    assert y_k.dtype == dtype
    assert_close("y", y_k, y_r, tol)
    assert_close("state", s_k, s_r, 1e-5)
    untouched = torch.ones(pool, dtype=torch.bool, device=device)
    untouched[idx if idx is not None else torch.arange(b, device=device)] = False
    assert torch.equal(s_k[untouched], state[untouched]), "rows outside state_indices changed"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d,groups,n", [(64, 4, 16), (48, 3, 16), (32, 4, 8)])
@pytest.mark.parametrize("use_idx", [False, True])
def test_mamba1_step_matches_reference(dtype, d, groups, n, use_idx):
    check_mamba1(3, d, groups, n, dtype, 6, use_idx, DEVICE, TOL[dtype])


def check_ssd_step(b, h, n, p, dtype, pool, use_idx, device, tol):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, h, p, generator=gen).to(device, dtype)
    g = (-torch.rand(b, h, generator=gen) * 2).to(device, torch.float32)
    B = torch.randn(b, h, n, generator=gen).to(device, dtype)
    C = torch.randn(b, h, n, generator=gen).to(device, dtype)
    state = torch.randn(pool, h, n, p, generator=gen).to(device)
    idx = torch.randperm(pool, generator=gen)[:b].to(device) if use_idx else None
    s_k, s_r = state.clone(), state.clone()
    y_k = dispatch.ssd_step(s_k, x, g, B, C, state_indices=idx, backend="triton")
    y_r = ssd_step_ref(s_r, x, g, B, C, state_indices=idx)
    assert y_k.dtype == dtype
    assert_close("y", y_k, y_r, tol)
    assert_close("state", s_k, s_r, 1e-5)
    untouched = torch.ones(pool, dtype=torch.bool, device=device)
    untouched[idx if idx is not None else torch.arange(b, device=device)] = False
    assert torch.equal(s_k[untouched], state[untouched]), "rows outside state_indices changed"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("h,n,p", [(2, 16, 24), (3, 8, 16)])
@pytest.mark.parametrize("use_idx", [False, True])
def test_ssd_step_matches_reference(dtype, h, n, p, use_idx):
    check_ssd_step(3, h, n, p, dtype, 5, use_idx, DEVICE, TOL[dtype])


# Batch is the launch grid, not a kernel argument, and 1B / 3B differ only in d and groups (16 channels per
# group in both): every case runs one compiled binary.  Two cases cover both sizes and both the batch-1
# latency and batch-256 throughput grids (was 4); the SSD step has one shape, so one case (was 2).
@pytest.mark.gpu
@pytest.mark.parametrize("shape,batch", [("1b", 1), ("3b", 256)])
def test_mamba1_step_gpu_spec_shapes(shape, batch):
    d, groups = {"1b": (2048, 128), "3b": (3072, 192)}[shape]
    check_mamba1(batch, d, groups, 16, torch.bfloat16, 2 * batch, True, "cuda", 1.5e-2)


@pytest.mark.gpu
def test_ssd_step_gpu_llamba_shape():
    check_ssd_step(256, 32, 64, 96, torch.bfloat16, 512, True, "cuda", 1.5e-2)
