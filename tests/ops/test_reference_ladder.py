"""The references checked against each other (fp64): resets == documents run separately,
decode steps == the sequence form, chunked == sequential.  Then the kernels' decode
steps against the kernels' sequence form, so the two paths the engine mixes agree."""

import pytest
import torch

from _ops_util import DEVICE, assert_close
from thinkfast.ops import dispatch
from thinkfast.ops.reference import (
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
    selective_state_update_ref,
    ssd_chunked_ref,
    ssd_sequential_ref,
    ssd_step_ref,
)

F64 = torch.float64


def scan_inputs(b=2, l=24, d=8, groups=2, n=4, seed=0, dtype=F64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64).to(device, dtype)  # noqa: E731
    return dict(x=r(b, l, d), dt=r(b, l, d), A=-torch.exp(r(d, n)), B=r(b, l, groups, n), C=r(b, l, groups, n),
                D=r(d), z=r(b, l, d), dt_bias=r(d))


def test_scan_resets_equal_separate_documents():
    inp = scan_inputs(b=1)
    cut = 10
    reset = torch.zeros(1, 24, dtype=torch.bool)
    reset[0, cut] = True
    h0 = torch.randn(1, 8, 4, dtype=F64)
    y, h = selective_scan_ref(**inp, initial_state=h0, reset=reset, return_final_state=True)
    first = {k: (v[:, :cut] if v.dim() >= 3 else v) for k, v in inp.items()}
    second = {k: (v[:, cut:] if v.dim() >= 3 else v) for k, v in inp.items()}
    y1 = selective_scan_ref(**first, initial_state=h0)
    y2, h2 = selective_scan_ref(**second, return_final_state=True)
    assert_close("y", y, torch.cat([y1, y2], 1), 1e-12)
    assert_close("final", h, h2, 1e-12)


def test_scan_decode_steps_equal_sequence():
    inp = scan_inputs(b=2)
    y, h = selective_scan_ref(**inp, return_final_state=True)
    state = torch.zeros(2, 8, 4, dtype=F64)
    ys = [selective_state_update_ref(state, inp["x"][:, t], inp["dt"][:, t], inp["A"], inp["B"][:, t],
                                     inp["C"][:, t], inp["D"], inp["z"][:, t], inp["dt_bias"])
          for t in range(24)]
    assert_close("y", torch.stack(ys, 1), y, 1e-12)
    assert_close("state", state, h, 1e-12)


def ssd_inputs(b=2, l=23, h=2, n=4, p=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    return r(b, l, h, p), torch.nn.functional.logsigmoid(r(b, l, h) + 1), r(b, l, h, n), r(b, l, h, n)


@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_ssd_chunked_equals_sequential_with_resets_and_state(chunk):
    x, g, B, C = ssd_inputs()
    reset = torch.zeros(2, 23, dtype=torch.bool)
    reset[0, 5] = reset[1, 0] = reset[1, 17] = True
    h0 = torch.randn(2, 2, 4, 3, dtype=F64)
    y1, s1 = ssd_sequential_ref(x, g, B, C, h0, reset, True)
    y2, s2 = ssd_chunked_ref(x, g, B, C, h0, reset, True, chunk_size=chunk)
    assert_close("y", y2, y1, 1e-10)
    assert_close("state", s2, s1, 1e-10)


def test_ssd_steps_equal_sequence_and_resets_equal_documents():
    x, g, B, C = ssd_inputs()
    y, S = ssd_sequential_ref(x, g, B, C, return_final_state=True)
    state = torch.zeros(2, 2, 4, 3, dtype=F64)
    ys = [ssd_step_ref(state, x[:, t], g[:, t], B[:, t], C[:, t]) for t in range(23)]
    assert_close("y", torch.stack(ys, 1), y, 1e-12)
    assert_close("state", state, S, 1e-12)
    reset = torch.zeros(2, 23, dtype=torch.bool)
    reset[:, 9] = True
    yr = ssd_sequential_ref(x, g, B, C, reset=reset)
    y_tail = ssd_sequential_ref(x[:, 9:], g[:, 9:], B[:, 9:], C[:, 9:])
    assert_close("y after reset", yr[:, 9:], y_tail, 1e-12)


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
