"""Decode-step glue kernels (fused residual add + RMSNorm, silu * up) vs the eager PyTorch they replace."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close
from thinkfast.ops import dispatch
from thinkfast.ops.reference import add_rms_norm_ref, silu_mul_ref

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
