"""Conv with an initial state and a reset (reference), and the kernels' decode steps against the
kernels' sequence form, so the two paths the engine mixes agree.  (The rest of the reference
ladder is tests/reference/test_reference_ladder.py.)"""

import pytest
import torch

from _ops_util import DEVICE, assert_close
from thinkfast.ops import dispatch
from thinkfast.ops.reference import causal_conv1d_ref, causal_conv1d_update_ref

F64 = torch.float64


def scan_inputs(b=2, l=24, d=8, groups=2, n=4, seed=0, dtype=F64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64).to(device, dtype)  # noqa: E731
    return dict(x=r(b, l, d), dt=r(b, l, d), A=-torch.exp(r(d, n)), B=r(b, l, groups, n), C=r(b, l, groups, n),
                D=r(d), z=r(b, l, d), dt_bias=r(d))


def test_conv_update_steps_equal_sequence_and_resets_equal_documents():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 15, 6, generator=gen, dtype=F64)
    w = torch.randn(6, 4, generator=gen, dtype=F64)
    bias = torch.randn(6, generator=gen, dtype=F64)
    init = torch.randn(2, 6, 3, generator=gen, dtype=F64)
    y, fin = causal_conv1d_ref(x, w, bias, "silu", initial_state=init, return_final_state=True)
    state = init.clone()
    ys = [causal_conv1d_update_ref(x[:, t], state, w, bias, "silu") for t in range(15)]
    assert_close("y", torch.stack(ys, 1), y, 1e-12)
    assert_close("state", state, fin, 1e-12)
    reset = torch.zeros(2, 15, dtype=torch.bool)
    reset[:, 6] = True
    yr, fr = causal_conv1d_ref(x, w, bias, "silu", reset=reset, initial_state=init, return_final_state=True)
    y_tail, f_tail = causal_conv1d_ref(x[:, 6:], w, bias, "silu", return_final_state=True)
    assert_close("y after reset", yr[:, 6:], y_tail, 1e-12)
    assert_close("y before reset", yr[:, :6], y[:, :6], 1e-12)
    assert_close("final after reset", fr, f_tail, 1e-12)


@pytest.mark.triton
def test_kernel_decode_steps_equal_kernel_scan():
    inp = scan_inputs(b=2, l=12, d=16, groups=1, n=16, dtype=torch.float32, device=DEVICE)
    y, h = dispatch.selective_scan(**inp, return_final_state=True, backend="triton")
    state = torch.zeros(2, 16, 16, device=DEVICE)
    ys = [dispatch.selective_state_update(state, inp["x"][:, t], inp["dt"][:, t], inp["A"], inp["B"][:, t],
                                          inp["C"][:, t], inp["D"], inp["z"][:, t], inp["dt_bias"],
                                          backend="triton")
          for t in range(12)]
    assert_close("y", torch.stack(ys, 1), y, 1e-5)
    assert_close("state", state, h, 1e-5)
