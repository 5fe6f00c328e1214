"""Decode-step glue kernels (fused residual add + RMSNorm, silu * up) vs the eager PyTorch they replace."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close
from thinkfast.ops import dispatch
from thinkfast.ops.reference import add_rms_norm_ref, rope_kv_write_ref, silu_mul_ref

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 96])
@pytest.mark.parametrize("with_delta", [False, True])
def test_add_rms_norm(dtype, d, with_delta):
    h = torch.randn(5, d).to(DEVICE, dtype)
    delta = torch.randn(5, d).to(DEVICE, dtype) if with_delta else None
    w = (1 + 0.1 * torch.randn(d)).to(DEVICE, dtype)
    h_k, y_k = dispatch.add_rms_norm(h, delta, w, 1e-5, backend="triton")
    h_r, y_r = add_rms_norm_ref(h, delta, w, 1e-5)
    assert_close("h", h_k, h_r, TOL[dtype])  # (the CPU interpreter truncates to bf16, a GPU rounds)
    assert y_k.dtype == y_r.dtype
    assert_close("y", y_k, y_r, TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("d,ffn", [(3072, 8192)])
def test_glue_gpu_spec_shapes(d, ffn):
    """Llama-3.2-3B widths at decode batch 256, bf16.  (The 1B width, 2048, was a second compile of the same
    row kernel with no masked lanes, which the small power-of-two widths above already cover; 3072 has them.)"""
    h, delta = torch.randn(256, d).to(DEVICE, torch.bfloat16), torch.randn(256, d).to(DEVICE, torch.bfloat16)
    w = (1 + 0.1 * torch.randn(d)).to(DEVICE, torch.bfloat16)
    h_k, y_k = dispatch.add_rms_norm(h, delta, w, 1e-5, backend="triton")
    h_r, y_r = add_rms_norm_ref(h, delta, w, 1e-5)
    assert_close("h", h_k, h_r, TOL[torch.bfloat16])
    assert_close("y", y_k, y_r, TOL[torch.bfloat16])
    g, u = torch.randn(256, ffn).to(DEVICE, torch.bfloat16), torch.randn(256, ffn).to(DEVICE, torch.bfloat16)
    assert_close("silu_mul", dispatch.silu_mul(g, u, backend="triton"), silu_mul_ref(g, u), TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul(dtype):
    g, u = torch.randn(3, 4100).to(DEVICE, dtype), torch.randn(3, 4100).to(DEVICE, dtype)
    assert_close("y", dispatch.silu_mul(g, u, backend="triton"), silu_mul_ref(g, u), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_on_halves_of_one_gemm_output(dtype):
    """Decode's stacked gate/up GEMM: gate and up are column halves (row stride 2 I) read without a copy."""
    gate_up = torch.randn(5, 2 * 2100).to(DEVICE, dtype)  # (b, 2 I)
    g, u = gate_up[:, :2100], gate_up[:, 2100:]
    assert_close("y", dispatch.silu_mul(g, u, backend="triton"), silu_mul_ref(g, u), TOL[dtype])
    x3 = torch.randn(2, 3, 70).to(DEVICE, dtype)  # any other shape still works (flattened to rows)
    y3 = dispatch.silu_mul(x3, x3 + 1, backend="triton")
    assert y3.shape == x3.shape
    assert_close("y3", y3, silu_mul_ref(x3, x3 + 1), TOL[dtype])


def _rope_inputs(dtype, b=4, heads=6, n_kv=2, hd=16, max_len=40, positions=None):
    from thinkfast.models.rope import rope_inv_freq

    q = torch.randn(b, heads, hd).to(DEVICE, dtype)
    kv = torch.randn(b, 2 * n_kv, hd).to(DEVICE, dtype)  # k and v as views of one projection output
    k, v = kv[:, :n_kv], kv[:, n_kv:]
    pos = torch.tensor(positions or [0, 5, 17, 39][:b], device=DEVICE)
    slots = torch.tensor([3, 0, 2, 5][:b], device=DEVICE)
    caches = [torch.randn(6, n_kv, max_len, hd).to(DEVICE, dtype) for _ in range(2)]
    return q, k, v, pos, rope_inv_freq(hd, 10000.0, None, device=DEVICE), caches, slots


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", [[0, 5, 17, 39], [31000, 5, 120000, 39]])
def test_rope_kv_write_equals_the_eager_glue(dtype, positions):
    """The fused kernel: same rotated q, same cache contents (rotated k and v at [slot, :, position], nothing
    else touched) as the eager RoPE + index writes, with the eager bf16 rounding points; also at positions
    whose angles are 1e5 radians (the kernel reduces them before its cos / sin)."""
    max_len = max(positions) + 1
    q, k, v, pos, inv_freq, (kc, vc), slots = _rope_inputs(dtype, positions=positions, max_len=max_len)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    out = dispatch.rope_kv_write(q, k, v, pos, inv_freq, kc, vc, slots, backend="triton")
    ref = rope_kv_write_ref(q, k, v, pos, inv_freq, kc_ref, vc_ref, slots)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close("q", out, ref, TOL[dtype])
    assert_close("k cache", kc, kc_ref, TOL[dtype])
    assert torch.equal(vc, vc_ref)  # v is copied, not computed
    assert not torch.equal(kc_ref[slots, :, pos], k)  # the reference did rotate k (position 0 aside)


def test_rope_kv_write_reference_is_the_models_rope():
    """At position p the reference rotates exactly as the full forward's RoPE does at p."""
    from thinkfast.models.rope import apply_rope, rope_cos_sin

    q, k, v, pos, inv_freq, (kc, vc), slots = _rope_inputs(torch.float32)
    out = rope_kv_write_ref(q, k, v, pos, inv_freq, kc, vc, slots)
    cos, sin = rope_cos_sin(inv_freq, pos[:, None], torch.float32)
    assert torch.equal(out, apply_rope(q[:, :, None], cos, sin)[:, :, 0])
    assert torch.equal(kc[slots, :, pos], apply_rope(k[:, :, None], cos, sin)[:, :, 0])
    assert torch.equal(vc[slots, :, pos], v)


@pytest.mark.gpu
@pytest.mark.parametrize("hd,heads,n_kv", [(64, 14, 2), (128, 24, 8)])
def test_rope_kv_write_gpu_real_shapes(hd, heads, n_kv):
    """Qwen2.5-0.5B and Llama-3B head layouts at batch 256, positions up to 8191 (large angles: the kernel's
    cos / sin must be the precise ones), bf16: equal to the eager glue up to a rare last-bit rounding flip."""
    from thinkfast.models.rope import rope_inv_freq

    b, max_len = 256, 8192
    inv_freq = rope_inv_freq(hd, 1000000.0, None, device=DEVICE)
    q = torch.randn(b, heads, hd, device=DEVICE, dtype=torch.bfloat16)
    kv = torch.randn(b, 2 * n_kv, hd, device=DEVICE, dtype=torch.bfloat16)
    k, v = kv[:, :n_kv], kv[:, n_kv:]
    pos = torch.randint(0, max_len, (b,), device=DEVICE)
    slots = torch.randperm(b, device=DEVICE)
    kc = torch.zeros(b, n_kv, max_len, hd, device=DEVICE, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    out = dispatch.rope_kv_write(q, k, v, pos, inv_freq, kc, vc, slots, backend="triton")
    ref = rope_kv_write_ref(q, k, v, pos, inv_freq, kc_ref, vc_ref, slots)
    written, written_ref = kc[slots, :, pos], kc_ref[slots, :, pos]  # (b, n_kv, hd): the rest of the cache is 0
    assert (out != ref).float().mean() < 1e-3 and (written != written_ref).float().mean() < 1e-3
    assert torch.equal(kc.count_nonzero(), kc_ref.count_nonzero())
    assert_close("q", out, ref, TOL[torch.bfloat16])
    assert torch.equal(vc, vc_ref)
