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


def assert_rounded_from(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """`got` (a bf16 state) is the fp32 `want` rounded to bf16: within one bf16 spacing of it, element by element.
    A GPU rounds to nearest (half a spacing); the Triton interpreter truncates (under one spacing); the spacing
    at x is at most eps_bf16 * |x| = 2^-7 |x|; 1e-5 |x| covers the fp32 difference between kernel and reference."""
    assert got.dtype == torch.bfloat16 and got.shape == want.shape, f"{name}: {got.dtype} {tuple(got.shape)}"
    err = (got.float() - want.float()).abs()
    bound = (torch.finfo(torch.bfloat16).eps + 1e-5) * want.float().abs() + 1e-30
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{name}: {worst:.2f} bf16 spacings from the fp32 update"
