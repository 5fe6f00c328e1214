"""The kernels' softplus and sigmoid (`thinkfast.ops.triton._common`) against float64 PyTorch over fp32's range.

Compiled (GPU) they run on the SFU approximations (libdevice fast_log2f / fast_dividef); through the interpreter the
same formulas run on tl.log2 and `/`, so the series / log2 split of softplus is checked on CPU too."""

import math

import pytest
import torch
import triton
import triton.language as tl

from _ops_util import DEVICE
from thinkfast.ops.triton._common import sigmoid, softplus

pytestmark = pytest.mark.triton


@triton.jit
def _apply_kernel(x_ptr, softplus_ptr, sigmoid_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(softplus_ptr + offs, softplus(x), mask=mask)
    tl.store(sigmoid_ptr + offs, sigmoid(x), mask=mask)


def _inputs() -> torch.Tensor:
    boundary = math.log(16.0)  # |v| where softplus switches from the series to log2(1 + e)
    parts = [
        torch.linspace(-100.0, 100.0, 2001),
        torch.linspace(-8.0, 8.0, 4001),
        torch.linspace(boundary - 1e-3, boundary + 1e-3, 201),
        -torch.linspace(boundary - 1e-3, boundary + 1e-3, 201),
        torch.tensor([0.0, 1e-7, -1e-7, 1e-3, -1e-3, 20.0, -20.0, 88.0, -88.0, 1e4, -1e4]),
    ]
    return torch.cat(parts).float()


def _check(name, x, got, want, rel, abs_floor=1e-36):
    """|got - want| <= (rel + |x| 1e-7) |want|: exp(-|x|) carries the fp32 rounding of x log2(e) (relative
    2^-24 |x log2 e|, times ln 2), as any fp32 exp does, on top of `rel`."""
    err = (got.double() - want).abs()
    bound = (rel + x.double().abs() * 1e-7) * want.abs() + abs_floor
    worst = int((err - bound).argmax())
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    assert (err <= bound).all(), f"{name}: error {err[worst]:.3e} > {bound[worst]:.3e} at x = {x[worst]:.6g}"


def test_softplus_and_sigmoid_match_float64():
    x = _inputs()
    xd = x.to(DEVICE)
    sp = torch.empty_like(xd)
    sg = torch.empty_like(xd)
    _apply_kernel[(triton.cdiv(x.numel(), 256),)](xd, sp, sg, x.numel(), BLOCK=256)
    want_sp = torch.nn.functional.softplus(x.double())
    want_sg = torch.sigmoid(x.double())
    _check("softplus", x, sp.cpu(), want_sp, rel=4e-6)
    _check("sigmoid", x, sg.cpu(), want_sg, rel=2e-6)


def test_softplus_series_and_log_agree_at_the_switch():
    """Both branches of log1p(e) at e = 1/16: the series must not jump where the kernel switches branches."""
    e = 1.0 / 16.0
    series = e * (1.0 + e * (-0.5 + e * (1 / 3 + e * (-0.25 + e * 0.2))))
    assert abs(series - math.log1p(e)) < 2e-7 * math.log1p(e)
