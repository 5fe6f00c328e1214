"""The reference numerics agree with each other: sequential == chunked == matrix == steps, resets == separate docs."""

import pytest
import torch

from thinkfast.ops.reference import (
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    discrete_mamba2_mixer_matrix,
    selective_scan_ref,
    selective_state_update_ref,
    ssd_chunked_ref,
    ssd_sequential_ref,
    ssd_step_ref,
)

F64 = torch.float64


def _docs(reset_row):
    l = reset_row.shape[0]
    starts = [0] + [t for t in range(1, l) if reset_row[t]] + [l]
    return list(zip(starts[:-1], starts[1:]))


def _ssd_inputs(b=2, l=29, h=3, p=5, n=4):
    return (
        torch.randn(b, l, h, p, dtype=F64),
        -torch.rand(b, l, h, dtype=F64) * 0.5,
        torch.randn(b, l, h, n, dtype=F64),
        torch.randn(b, l, h, n, dtype=F64),
    )


@pytest.mark.parametrize("chunk", [1, 4, 8, 64])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_reset", [False, True])
def test_ssd_chunked_equals_sequential(chunk, with_state, with_reset):
    x, g, B, C = _ssd_inputs()
    s0 = torch.randn(2, 3, 4, 5, dtype=F64) if with_state else None
    reset = (torch.rand(2, 29) < 0.15) if with_reset else None
    y1, S1 = ssd_sequential_ref(x, g, B, C, s0, reset, return_final_state=True)
    y2, S2 = ssd_chunked_ref(x, g, B, C, s0, reset, return_final_state=True, chunk_size=chunk)
    assert torch.allclose(y1, y2, atol=1e-10) and torch.allclose(S1, S2, atol=1e-10)


def test_mixer_matrix_applied_to_x_equals_recurrence():
    x, g, B, C = _ssd_inputs()
    D = torch.randn(3, dtype=F64)
    M = discrete_mamba2_mixer_matrix(g, B, C, D)  # (b, h, l, l)
    y_matrix = torch.einsum("bhij,bjhp->bihp", M, x)
    y_rec = ssd_sequential_ref(x, g, B, C) + D[:, None] * x
    assert torch.allclose(y_matrix, y_rec, atol=1e-10)
    assert torch.all(M.triu(1) == 0)


def test_ssd_steps_equal_sequence():
    x, g, B, C = _ssd_inputs()
    y, S = ssd_sequential_ref(x, g, B, C, return_final_state=True)
    state = torch.zeros(4, 3, 4, 5, dtype=F64)
    slots = torch.tensor([3, 1])
    for t in range(x.shape[1]):
        yt = ssd_step_ref(state, x[:, t], g[:, t], B[:, t], C[:, t], state_indices=slots)
        assert torch.allclose(yt, y[:, t], atol=1e-10)
    assert torch.allclose(state[slots], S, atol=1e-10)


def _scan_inputs(b=2, l=23, d=32, groups=2, n=16):
    return dict(
        x=torch.randn(b, l, d, dtype=F64),
        dt=torch.randn(b, l, d, dtype=F64),
        A=-torch.rand(d, n, dtype=F64) * 2,
        B=torch.randn(b, l, groups, n, dtype=F64),
        C=torch.randn(b, l, groups, n, dtype=F64),
        D=torch.randn(d, dtype=F64),
        z=torch.randn(b, l, d, dtype=F64),
        dt_bias=torch.randn(d, dtype=F64),
    )


def test_selective_scan_resets_equal_separate_documents():
    kw = _scan_inputs()
    reset = torch.rand(2, 23) < 0.2
    y = selective_scan_ref(**kw, reset=reset)
    for row in range(2):
        for s, e in _docs(reset[row]):
            part = {k: (v[row : row + 1, s:e] if v.dim() >= 3 and v.shape[0] == 2 else v) for k, v in kw.items()}
            assert torch.allclose(selective_scan_ref(**part), y[row : row + 1, s:e], atol=1e-10)


def test_selective_scan_state_carries_across_calls():
    kw = _scan_inputs()
    y_all, h_all = selective_scan_ref(**kw, return_final_state=True)
    first = {k: (v[:, :10] if v.dim() >= 3 and v.shape[0] == 2 else v) for k, v in kw.items()}
    second = {k: (v[:, 10:] if v.dim() >= 3 and v.shape[0] == 2 else v) for k, v in kw.items()}
    y1, h1 = selective_scan_ref(**first, return_final_state=True)
    y2, h2 = selective_scan_ref(**second, initial_state=h1, return_final_state=True)
    assert torch.allclose(torch.cat([y1, y2], 1), y_all, atol=1e-10) and torch.allclose(h2, h_all, atol=1e-10)


def test_selective_state_update_equals_scan():
    kw = _scan_inputs()
    y = selective_scan_ref(**kw)
    state = torch.zeros(3, 32, 16, dtype=F64)
    slots = torch.tensor([2, 0])
    for t in range(23):
        yt = selective_state_update_ref(
            state, kw["x"][:, t], kw["dt"][:, t], kw["A"], kw["B"][:, t], kw["C"][:, t], kw["D"], kw["z"][:, t],
            kw["dt_bias"], state_indices=slots,
        )
        assert torch.allclose(yt, y[:, t], atol=1e-10)


@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_resets_state_and_steps(activation):
    x = torch.randn(2, 17, 6, dtype=F64)
    w, bias = torch.randn(6, 4, dtype=F64), torch.randn(6, dtype=F64)
    reset = torch.rand(2, 17) < 0.25
    y, final = causal_conv1d_ref(x, w, bias, activation, reset=reset, return_final_state=True)
    for row in range(2):
        for s, e in _docs(reset[row]):
            alone, alone_final = causal_conv1d_ref(x[row : row + 1, s:e], w, bias, activation, return_final_state=True)
            assert torch.allclose(alone, y[row : row + 1, s:e], atol=1e-12)
        assert torch.allclose(alone_final, final[row : row + 1], atol=1e-12)  # last document's window
    # steps from a zero state reproduce the reset-free sequence
    state = torch.zeros(2, 6, 3, dtype=F64)
    y_plain = causal_conv1d_ref(x, w, bias, activation)
    for t in range(17):
        assert torch.allclose(causal_conv1d_update_ref(x[:, t], state, w, bias, activation), y_plain[:, t], atol=1e-12)
