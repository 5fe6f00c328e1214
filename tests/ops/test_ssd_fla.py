"""Discrete Mamba-2 GPU path (fla `chunk_simple_gla` wrapper).

On CPU the wrapper's own logic (argument mapping, scale = 1, varlen packing at resets,
initial/final state routing, gradients into initial_state, the PyTorch-backward fallback) is
checked by injecting the sequential reference as the chunk function; on CUDA the real fla
kernel is compared with the reference.
"""

import pytest
import torch

from _ops_util import TOL, assert_close, random_resets
from thinkfast.ops import dispatch
from thinkfast.ops.reference import ssd_sequential_ref
from thinkfast.ops.triton.ssd_fla import ssd_fla


def fake_chunk_simple_gla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False,
                          cu_seqlens=None):
    """fla's contract, computed by the reference: q = C, k = B, v = x; varlen via cu_seqlens (batch 1)."""
    assert scale == 1.0, "the wrapper must pass scale = 1"
    if cu_seqlens is None:
        y, ht = ssd_sequential_ref(v, g, k, q, initial_state, return_final_state=True)
        return y, (ht if output_final_state else None)
    assert q.shape[0] == 1
    ys, hts = [], []
    bounds = cu_seqlens.tolist()
    for i in range(len(bounds) - 1):
        s, e = bounds[i], bounds[i + 1]
        h0 = initial_state[i:i + 1] if initial_state is not None else None
        y, ht = ssd_sequential_ref(v[:, s:e], g[:, s:e], k[:, s:e], q[:, s:e], h0, return_final_state=True)
        ys.append(y)
        hts.append(ht)
    return torch.cat(ys, 1), (torch.cat(hts, 0) if output_final_state else None)


def inputs(b, l, h, n, p, h0, resets, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen).to(device, dtype)
    g = torch.nn.functional.logsigmoid(torch.randn(b, l, h, generator=gen) + 2).to(device)
    B = (torch.randn(b, l, h, n, generator=gen) / n ** 0.5).to(device, dtype)
    C = (torch.randn(b, l, h, n, generator=gen) / n ** 0.5).to(device, dtype)
    init = torch.randn(b, h, n, p, generator=gen).to(device) if h0 else None
    reset = random_resets(b, l, 0.1, gen, device) if resets else None
    return x, g, B, C, init, reset


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("resets", [False, True])
def test_wrapper_logic_with_reference_chunk_fn(h0, resets):
    x, g, B, C, init, reset = inputs(3, 20, 2, 4, 5, h0, resets)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    y, ht = ssd_fla(*leaves[:4], leaves[4], reset, True, chunk_fn=fake_chunk_simple_gla)
    ref_leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    yr, hr = ssd_sequential_ref(*ref_leaves[:4], ref_leaves[4], reset, True)
    assert_close("y", y, yr, 1e-5)
    assert_close("final_state", ht, hr, 1e-5)
    gy = torch.randn_like(y)
    gk = torch.autograd.grad((y * gy).sum() + ht.sum(), [t for t in leaves if t is not None])
    gr = torch.autograd.grad((yr * gy).sum() + hr.sum(), [t for t in ref_leaves if t is not None])
    for name, a, r in zip(["dx", "dg", "dB", "dC", "dinit"], gk, gr):
        assert_close(name, a, r, 1e-5)


# GPU cost: every case is new fla kernel specializations (and, without tests/conftest.py pinning fla's
# autotuner, a ~1 min search each: the tuning key holds the dtypes of the tensors present).  The wrapper's
# h0 / reset routing is checked above on CPU; here fla itself at the Llamba shape: bf16 (training) through
# the packed varlen path and the plain one, fp32 through varlen (was 6 cases).
@pytest.mark.gpu
@pytest.mark.parametrize("dtype,h0,resets", [(torch.bfloat16, True, True), (torch.bfloat16, True, False),
                                             (torch.float32, True, True)])
def test_fla_gpu_matches_reference(dtype, h0, resets):
    pytest.importorskip("fla")
    # Llamba-3B heads: 32 heads of dim 96, d_state 64
    x, g, B, C, init, reset = inputs(2, 1000, 32, 64, 96, h0, resets, device="cuda", dtype=dtype)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    y, ht = dispatch.ssd(*leaves[:4], leaves[4], reset, True, backend="triton")
    ref_leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    yr, hr = dispatch.ssd(*ref_leaves[:4], ref_leaves[4], reset, True, backend="reference")
    tol = 3e-2 if dtype == torch.bfloat16 else 2e-3  # fla uses tf32/bf16 tensor cores inside
    assert_close("y", y, yr, tol)
    assert_close("final_state", ht, hr, tol)
    gy = torch.randn_like(y)
    gk = torch.autograd.grad((y.float() * gy.float()).sum() + ht.sum(), [t for t in leaves if t is not None])
    gr = torch.autograd.grad((yr.float() * gy.float()).sum() + hr.sum(), [t for t in ref_leaves if t is not None])
    for name, a, r in zip(["dx", "dg", "dB", "dC", "dinit"], gk, gr):
        assert_close(name, a, r, tol * 2)


@pytest.mark.parametrize("h0,resets", [(False, False), (True, True)])
def test_fla_forward_torch_backward_fallback(monkeypatch, h0, resets):
    """Where fla's backward is refused (Hopper + Triton 3.4..3.7.0), the forward still runs
    through the chunk function without autograd and the gradients come from recomputing the
    PyTorch chunked SSD (at the caller's chunk size) under autograd."""
    from thinkfast.ops import ssd_chunked as chunked_mod

    monkeypatch.setenv("THINKFAST_SSD_BWD", "torch")
    calls, chunk_sizes = [], []
    original = chunked_mod.ssd_chunked

    def recording_chunk_fn(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return fake_chunk_simple_gla(*args, **kwargs)

    def recording_ssd_chunked(*args, **kwargs):
        chunk_sizes.append(args[7])
        return original(*args, **kwargs)

    monkeypatch.setattr(chunked_mod, "ssd_chunked", recording_ssd_chunked)
    x, g, B, C, init, reset = inputs(2, 19, 2, 4, 5, h0, resets)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    y, ht = ssd_fla(*leaves[:4], leaves[4], reset, True, chunk_size=8, chunk_fn=recording_chunk_fn)
    assert calls == [False], "the fla forward must run once, outside autograd"
    ref_leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, g, B, C, init)]
    yr, hr = ssd_sequential_ref(*ref_leaves[:4], ref_leaves[4], reset, True)
    assert_close("y", y, yr, 1e-5)
    assert_close("final_state", ht, hr, 1e-5)
    gy = torch.randn_like(y)
    gk = torch.autograd.grad((y * gy).sum() + ht.sum(), [t for t in leaves if t is not None])
    assert chunk_sizes == [8], "the backward recomputes the PyTorch chunked SSD once, at the caller's chunk size"
    gr = torch.autograd.grad((yr * gy).sum() + hr.sum(), [t for t in ref_leaves if t is not None],
                             retain_graph=True)
    for name, a, r in zip(["dx", "dg", "dB", "dC", "dinit"], gk, gr):
        assert_close(name, a, r, 1e-5)
    # only y used: no gradient through the final state
    y2 = ssd_fla(*leaves[:4], leaves[4], reset, False, chunk_fn=recording_chunk_fn)
    gk2 = torch.autograd.grad((y2 * gy).sum(), leaves[0])
    gr2 = torch.autograd.grad((yr * gy).sum(), ref_leaves[0])
    assert_close("dx (y only)", gk2[0], gr2[0], 1e-5)
    # inference: no autograd Function, fla forward only
    calls.clear()
    with torch.no_grad():
        ssd_fla(x, g, B, C, init, reset, False, chunk_fn=recording_chunk_fn)
    assert calls == [False]


def test_fla_backward_prediction(monkeypatch):
    from thinkfast.ops.triton import ssd_fla as mod

    assert mod._version_tuple("3.6.0") == (3, 6, 0) and mod._version_tuple("3.7.1+git123") == (3, 7, 1)
    monkeypatch.setenv("THINKFAST_SSD_BWD", "fla")
    assert mod.fla_backward_ok(torch.device("cuda", 0))
    monkeypatch.setenv("THINKFAST_SSD_BWD", "auto")
    assert mod.fla_backward_ok(torch.device("cpu"))
