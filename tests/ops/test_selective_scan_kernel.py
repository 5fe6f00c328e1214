"""Triton Mamba-1 selective scan vs `selective_scan_ref`: forward, final state and every gradient."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close, random_resets
from thinkfast.ops import dispatch
from thinkfast.ops.reference import selective_scan_ref

pytestmark = pytest.mark.triton

NAMES = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state"]


def make_inputs(b, l, d, groups, n, dtype, h0, resets, seed=0, device=DEVICE):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device=device, dtype=dt)

    inputs = {
        "x": rnd(b, l, d),
        "dt": rnd(b, l, d, scale=0.5),
        "A": -torch.exp(rnd(d, n, scale=0.5, dt=torch.float32)),
        "B": rnd(b, l, groups, n),
        "C": rnd(b, l, groups, n),
        "D": rnd(d, dt=torch.float32),
        "z": rnd(b, l, d),
        "dt_bias": rnd(d, scale=0.5, shift=-2.0, dt=torch.float32),
        "initial_state": rnd(b, d, n, dt=torch.float32) if h0 else None,
    }
    reset = random_resets(b, l, 0.05, gen, device) if resets else None
    return inputs, reset


def run_both(inputs, reset, dtype, backend_kwargs=None, seed=1):
    """Returns ((y, hT), grads) for kernel and reference given the same upstream gradients."""
    results = []
    for fn in ("kernel", "ref"):
        leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
        if fn == "kernel" and backend_kwargs:
            from thinkfast.ops.triton.selective_scan import selective_scan as kernel

            y, hT = kernel(**leaves, reset=reset, return_final_state=True, **backend_kwargs)
        elif fn == "kernel":
            y, hT = dispatch.selective_scan(**leaves, reset=reset, return_final_state=True, backend="triton")
        else:
            y, hT = selective_scan_ref(**leaves, reset=reset, return_final_state=True)
        gen = torch.Generator().manual_seed(seed)
        gy = torch.randn(y.shape, generator=gen).to(y.device, y.dtype)
        gh = torch.randn(hT.shape, generator=gen).to(hT.device)
        loss = (y.float() * gy.float()).sum() + (hT * gh).sum()
        present = [k for k in NAMES if leaves[k] is not None]
        grads = torch.autograd.grad(loss, [leaves[k] for k in present])
        results.append(((y, hT), dict(zip(present, grads))))
    return results


def check(inputs, reset, dtype, tol=None, **kernel_kwargs):
    tol = tol or TOL[dtype]
    (k_out, k_grads), (r_out, r_grads) = run_both(inputs, reset, dtype, kernel_kwargs)
    assert k_out[0].dtype == dtype
    assert_close("y", k_out[0], r_out[0], tol)
    assert_close("final_state", k_out[1], r_out[1], tol)
    assert set(k_grads) == set(r_grads)
    for name in r_grads:
        assert_close(f"d{name}", k_grads[name], r_grads[name], tol)


SOLVERS = ["seq", "tile"]


def sub_tile(solver: str, size: int) -> int:
    """The sub-tile a test asks for: the seq solver has one (4), the tile solver takes any power of two."""
    from thinkfast.ops.triton.selective_scan import SEQ_SUB_TILE

    return SEQ_SUB_TILE if solver == "seq" else size


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d,groups", [(32, 2), (16, 4)])
@pytest.mark.parametrize("l", [21, 48])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("resets", [False, True])
def test_scan_matches_reference(solver, dtype, d, groups, l, h0, resets):
    # l = 21: default chunk length (at this tiny size one sub-tile per chunk: 2 chunks of 16 for tile, 6 of 4 for
    # seq), the last chunk and sub-tile partial; l = 48: 4 chunks of 3 sub-tiles each (chunk-parallel combine
    # forward and backward)
    kw = dict(chunk_size=sub_tile(solver, 16)) if l == 21 else dict(chunk_size=4, chunk_len=12)
    inputs, reset = make_inputs(2, l, d, groups, 16, dtype, h0, resets)
    check(inputs, reset, dtype, solver=solver, **kw)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("chunk_size,chunk_len", [(32, 32), (4, 4), (8, 24)])
def test_scan_chunkings(solver, chunk_size, chunk_len):
    """One chunk (no combine), one sub-tile per chunk, and chunks longer than what is left (29 steps: the last
    sub-tile is partial)."""
    inputs, reset = make_inputs(2, 29, 32, 2, 16, torch.float32, True, True, seed=5)
    check(inputs, reset, torch.float32, chunk_size=sub_tile(solver, chunk_size), chunk_len=chunk_len, solver=solver)


def test_seq_solver_sub_tile_is_fixed():
    inputs, _ = make_inputs(1, 8, 16, 1, 16, torch.float32, False, False)
    from thinkfast.ops.triton.selective_scan import selective_scan as kernel

    with pytest.raises(ValueError, match="seq scan solver's sub-tile is 4"):
        kernel(**inputs, solver="seq", chunk_size=8)


def test_scan_solver_is_validated():
    inputs, _ = make_inputs(1, 8, 16, 1, 16, torch.float32, False, False)
    from thinkfast.ops.triton.selective_scan import selective_scan as kernel

    with pytest.raises(ValueError, match="scan solver must be one of"):
        kernel(**inputs, solver="fast")


def test_scan_without_optional_inputs_and_without_softplus():
    inputs, _ = make_inputs(1, 19, 16, 1, 8, torch.float32, False, False)
    inputs.update(D=None, z=None, dt_bias=None)
    inputs["dt"] = inputs["dt"].abs()  # raw step sizes must be positive without softplus
    y_k = dispatch.selective_scan(**inputs, softplus=False, backend="triton")
    y_r = selective_scan_ref(**inputs, softplus=False)
    assert_close("y", y_k, y_r, TOL[torch.float32])
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    g_k = torch.autograd.grad(dispatch.selective_scan(**leaves, softplus=False, backend="triton").sum(),
                              [leaves["x"], leaves["dt"], leaves["A"]])
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    g_r = torch.autograd.grad(selective_scan_ref(**leaves, softplus=False).sum(),
                              [leaves["x"], leaves["dt"], leaves["A"]])
    for name, a, b in zip(("dx", "ddt", "dA"), g_k, g_r):
        assert_close(name, a, b, TOL[torch.float32])


def test_scan_strided_views_and_small_chunks():
    """Inputs that are column slices of one projection (as the model produces) and chunk 4."""
    b, l, d, groups, n = 2, 13, 16, 1, 16
    gen = torch.Generator().manual_seed(3)
    proj = torch.randn(b, l, 3 * d + 2 * groups * n, generator=gen).to(DEVICE)
    x, dt, z = proj[..., :d], proj[..., d:2 * d] * 0.5, proj[..., 2 * d:3 * d]
    B = proj[..., 3 * d:3 * d + groups * n].unflatten(-1, (groups, n))
    C = proj[..., 3 * d + groups * n:].unflatten(-1, (groups, n))
    A = -torch.rand(d, n, generator=gen).to(DEVICE) - 0.5
    from thinkfast.ops.triton.selective_scan import selective_scan as kernel

    y_k = kernel(x, dt, A, B, C, None, z, None, chunk_size=4)
    y_r = selective_scan_ref(x, dt, A, B, C, None, z, None)
    assert_close("y", y_k, y_r, TOL[torch.float32])


def test_scan_reference_path_is_taken_when_forced(monkeypatch):
    inputs, _ = make_inputs(1, 8, 16, 1, 16, torch.float32, False, False)
    monkeypatch.setenv("THINKFAST_FORCE_REFERENCE", "1")
    # backend="triton" would raise on an unsupported shape; the force flag wins before that
    bad = dict(inputs, A=inputs["A"][:, :5].contiguous(), B=inputs["B"][..., :5], C=inputs["C"][..., :5])
    y = dispatch.selective_scan(**bad, backend="triton")
    assert y.shape == inputs["x"].shape


# ---- GPU: the papers' shapes (1B: d_inner 2048, 128 groups; 3B: 3072, 192 groups) ----

# GPU cost is compilation: each (dtype, h0, resets) is a new specialization of the scan's six kernel
# binaries (~4 s to compile for sm_90, measured on a 2-core CPU), while 1B and 3B share one (16 channels x
# 16 states per group in both); the L = 1000 reference is ~40k small launches (~1 s, estimated).  So one
# case per dtype: bf16 (training) at 3B with initial state and resets, fp32 at 1B without; every other
# flag combination is a small case above (was 8 cases, 4 specializations).
@pytest.mark.gpu
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape,dtype,h0,resets", [("3b", torch.bfloat16, True, True),
                                                   ("1b", torch.float32, False, False)])
def test_scan_gpu_spec_shapes(solver, shape, dtype, h0, resets):
    d, groups = {"1b": (2048, 128), "3b": (3072, 192)}[shape]
    inputs, reset = make_inputs(2, 1000, d, groups, 16, dtype, h0, resets, device="cuda")
    check(inputs, reset, dtype, tol=2e-2 if dtype == torch.bfloat16 else 1e-4, solver=solver)


def test_b3_register_cap_applies_only_where_the_option_exists(monkeypatch):
    from thinkfast.ops.triton import selective_scan as scan

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("THINKFAST_SCAN_B3_MAXNREG", raising=False)
    monkeypatch.setattr(scan.torch.version, "hip", None)
    cuda = torch.device("cuda", 0)
    assert scan._b3_max_registers(torch.device("cpu")) is None
    assert scan._b3_max_registers(cuda) == scan.SEQ_B3_MAX_REGISTERS
    monkeypatch.setenv("THINKFAST_SCAN_B3_MAXNREG", "152")
    assert scan._b3_max_registers(cuda) == 152
    monkeypatch.setenv("THINKFAST_SCAN_B3_MAXNREG", "0")  # 0: no cap
    assert scan._b3_max_registers(cuda) is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert scan._b3_max_registers(cuda) is None
