"""Helpers for the kernel tests."""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

TOL = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float64: 1e-10}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = rel_err(got, want)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def random_resets(b: int, l: int, p: float, gen: torch.Generator, device=DEVICE) -> torch.Tensor:
    r = torch.rand(b, l, generator=gen) < p
    r[0, l // 2] = True  # at least one reset in the middle
    if b > 1:
        r[1, 0] = True  # and one at t = 0 (which must also cancel the initial state)
    return r.to(device)


def assert_rounded_from(name: str, got: torch.Tensor, want: torch.Tensor, magnitude: torch.Tensor | None = None) -> None:
    """`got` (a bf16 state) is the fp32 `want` rounded to bf16: within one bf16 spacing of it, element by element,
    plus the fp32 difference between kernel and reference.  A GPU rounds to nearest (half a spacing); the Triton
    interpreter truncates (under one spacing); the spacing at x is at most eps_bf16 * |x| = 2^-7 |x|.

    `magnitude` (want's shape) is the sum of the absolute terms that produced each element, e.g.
    |decay * s| + |dt * B * x| for a state update: the kernel's fp32 arithmetic (FMA, exp) differs from the
    reference's by a few fp32 ulps of those terms, not of their sum, which cancellation can make tiny (on an
    H200, batch 256 x 3072 x 16 elements held sums 60x closer to 0 than their terms).  1e-5 of it covers that
    difference; without `magnitude`, |want| stands in for it."""
    assert got.dtype == torch.bfloat16 and got.shape == want.shape, f"{name}: {got.dtype} {tuple(got.shape)}"
    scale = want.float().abs() if magnitude is None else magnitude.float()
    err = (got.float() - want.float()).abs()
    bound = torch.finfo(torch.bfloat16).eps * want.float().abs() + 1e-5 * scale + 1e-30
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{name}: {worst:.2f} bf16 spacings from the fp32 update"
