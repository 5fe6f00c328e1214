"""PyTorch chunked SSD (`thinkfast.ops.ssd_chunked`) vs `ssd_sequential_ref`: output, final state and the
gradients w.r.t. x, g, B, C and the initial state, with resets inside chunks, at chunk boundaries, at t = 0
and at the last token, and lengths that are not a multiple of the chunk.  The reference runs in fp64 on the
same (rounded) inputs."""

import pytest
import torch

from _ops_util import TOL, assert_close
from thinkfast.ops.reference import ssd_sequential_ref
from thinkfast.ops.ssd_chunked import ssd_chunked

NAMES = ["x", "g", "B", "C", "initial_state"]
RESETS = ["none", "in_chunk", "chunk_start", "row_ends"]


def reset_pattern(kind: str, b: int, l: int, Q: int) -> torch.Tensor | None:
    """(b, l) bool.  in_chunk: two resets in one chunk, none on a chunk start; chunk_start: on multiples of
    Q; row_ends: at t = 0 (cancels the initial state) and at the last token."""
    if kind == "none":
        return None
    r = torch.zeros(b, l, dtype=torch.bool)
    if kind == "in_chunk":
        positions = [Q + 1, Q + 2, 2 * Q - 1] if Q > 2 else [1]
    elif kind == "chunk_start":
        positions = list(range(Q, l, Q))
    else:
        positions = [0, l - 1]
    positions = [t for t in positions if t < l]
    r[0, positions] = True
    r[-1, [t for t in positions if t % 2 == 0]] = True  # the other row differs
    return r


def make_inputs(b, l, h, n, p, dtype, h0, seed=0):
    """The training path's dtypes: x, B, C in `dtype`, g and the initial state fp32 (fp64 for fp64)."""
    gen = torch.Generator().manual_seed(seed)
    state = torch.float64 if dtype == torch.float64 else torch.float32
    return {
        "x": torch.randn(b, l, h, p, generator=gen).to(dtype),
        "g": torch.nn.functional.logsigmoid(torch.randn(b, l, h, generator=gen) + 2).to(state),
        "B": (torch.randn(b, l, h, n, generator=gen) / n ** 0.5).to(dtype),
        "C": (torch.randn(b, l, h, n, generator=gen) / n ** 0.5).to(dtype),
        "initial_state": torch.randn(b, h, n, p, generator=gen).to(state) if h0 else None,
    }


def run(fn, inputs, reset, gy, gh, **kwargs):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    y, ht = fn(*leaves.values(), reset, True, **kwargs)
    loss = (y.double() * gy).sum() + (ht.double() * gh).sum()
    present = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    return y, ht, dict(zip(present, grads))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk,length", [(4, 37), (4, 32), (16, 37), (16, 5)])
@pytest.mark.parametrize("resets", RESETS)
@pytest.mark.parametrize("h0", [False, True])
def test_chunked_matches_sequential(dtype, chunk, length, resets, h0):
    b, h, n, p = 2, 3, 4, 5
    inputs = make_inputs(b, length, h, n, p, dtype, h0)
    reset = reset_pattern(resets, b, length, chunk)
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(b, length, h, p, generator=gen, dtype=torch.float64)
    gh = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    y, ht, grads = run(ssd_chunked, inputs, reset, gy, gh, chunk_size=chunk)
    ref_inputs = {k: (v.double() if v is not None else None) for k, v in inputs.items()}
    yr, hr, grads_r = run(ssd_sequential_ref, ref_inputs, reset, gy, gh)
    tol = TOL[dtype]
    assert y.dtype == dtype and ht.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close("y", y, yr, tol)
    assert_close("final_state", ht, hr, tol)
    assert grads.keys() == grads_r.keys()
    for name in grads:
        assert grads[name].dtype == inputs[name].dtype
        assert_close(f"d{name}", grads[name], grads_r[name], tol)
    if reset is not None:  # g at a reset token is unused: exactly zero gradient, as in the reference
        assert torch.all(grads["g"][reset] == 0)


def test_y_only_and_realistic_chunk():
    """Without the final state, at the default chunk (64) over three chunks, random resets."""
    b, l, h, n, p = 2, 150, 2, 8, 6
    inputs = make_inputs(b, l, h, n, p, torch.float32, h0=True, seed=3)
    reset = torch.rand(b, l, generator=torch.Generator().manual_seed(4)) < 0.03
    leaves = [v.clone().requires_grad_(True) for v in inputs.values()]
    y = ssd_chunked(*leaves, reset)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad((y * gy).sum(), leaves)
    ref_leaves = [v.double().requires_grad_(True) for v in inputs.values()]
    yr = ssd_sequential_ref(*ref_leaves, reset)
    grads_r = torch.autograd.grad((yr * gy.double()).sum(), ref_leaves)
    assert_close("y", y, yr, TOL[torch.float32])
    for name, a, r in zip(NAMES, grads, grads_r):
        assert_close(f"d{name}", a, r, TOL[torch.float32])


def test_ignores_autocast():
    """The dtype choices hold under the trainer's autocast (no bf16 rounding of fp32 inputs)."""
    inputs = make_inputs(2, 21, 2, 4, 5, torch.float32, h0=True)
    reset = reset_pattern("in_chunk", 2, 21, 8)
    y, ht = ssd_chunked(*inputs.values(), reset, True, chunk_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, hta = ssd_chunked(*inputs.values(), reset, True, chunk_size=8)
    assert ya.dtype == torch.float32 and torch.equal(y, ya) and torch.equal(ht, hta)


@pytest.mark.gpu
def test_chunked_gpu_bf16_llama1b_heads():
    """On CUDA at the Llama-1B pure student's heads (32 x 64, d_state 64), bf16 as in training."""
    b, l, h, n, p = 2, 1000, 32, 64, 64
    inputs = {k: (v.cuda() if v is not None else None)
              for k, v in make_inputs(b, l, h, n, p, torch.bfloat16, h0=True).items()}
    reset = reset_pattern("in_chunk", b, l, 64).cuda()
    gy = torch.randn(b, l, h, p, device="cuda", dtype=torch.float64)
    gh = torch.randn(b, h, n, p, device="cuda", dtype=torch.float64)
    y, ht, grads = run(ssd_chunked, inputs, reset, gy, gh)
    ref_inputs = {k: v.double() for k, v in inputs.items()}
    yr, hr, grads_r = run(ssd_sequential_ref, ref_inputs, reset, gy, gh)
    assert_close("y", y, yr, TOL[torch.bfloat16])
    assert_close("final_state", ht, hr, TOL[torch.bfloat16])
    for name in grads:
        assert_close(f"d{name}", grads[name], grads_r[name], TOL[torch.bfloat16])
