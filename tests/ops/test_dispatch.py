"""Backend selection in `thinkfast.ops.dispatch`."""

import pytest
import torch

import thinkfast.ops.triton.conv as conv_kernels
from thinkfast.ops import dispatch


def conv_args(dtype=torch.float32):
    return torch.randn(1, 5, 4, dtype=dtype), torch.randn(4, 3, dtype=dtype)


def spy(monkeypatch):
    calls = []
    real_ref = dispatch.ref.causal_conv1d_ref
    real_kernel = conv_kernels.causal_conv1d

    def ref(*a, **k):
        calls.append("reference")
        return real_ref(*a, **k)

    def kernel(*a, **k):
        calls.append("triton")
        return real_kernel(*a, **k)

    monkeypatch.setattr(dispatch.ref, "causal_conv1d_ref", ref)
    monkeypatch.setattr(conv_kernels, "causal_conv1d", kernel)
    return calls


def test_cpu_tensors_take_the_reference_by_default(monkeypatch):  # on a CUDA machine too
    monkeypatch.delenv("THINKFAST_KERNELS", raising=False)
    calls = spy(monkeypatch)
    dispatch.causal_conv1d(*conv_args())
    assert calls == ["reference"]


@pytest.mark.triton
def test_env_var_forces_kernels_and_force_reference_wins(monkeypatch):
    calls = spy(monkeypatch)
    monkeypatch.setenv("THINKFAST_KERNELS", "triton")
    x, w = conv_args()
    x = x.to("cuda" if torch.cuda.is_available() else "cpu")
    w = w.to(x.device)
    dispatch.causal_conv1d(x, w)
    assert calls == ["triton"]
    monkeypatch.setenv("THINKFAST_FORCE_REFERENCE", "1")
    dispatch.causal_conv1d(x, w)
    dispatch.causal_conv1d(x, w, backend="triton")
    assert calls == ["triton", "reference", "reference"]


@pytest.mark.triton
def test_forced_kernel_refuses_cpu_tensors_when_compiled(monkeypatch):
    """Compiled kernels read CUDA memory only: forcing one on CPU tensors outside the interpreter is a clear
    ValueError before any launch (Triton itself would fail inside it: "cpu tensor?")."""
    # import the kernel modules first: triton decides interpreted vs compiled when a kernel is decorated
    import thinkfast.ops.triton.token_loss  # noqa: F401

    assert dispatch.triton_available()  # imports the scan module

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # what dispatch sees on a CUDA machine
    calls = spy(monkeypatch)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        dispatch.causal_conv1d(*conv_args(), backend="triton")
    s, y = torch.randn(2, 33), torch.randint(0, 33, (2,))
    with pytest.raises(ValueError, match="need CUDA tensors"):
        dispatch.token_loss_chunk(s, s, y, (1.0, 0.0, 0.0), 1.0, True, backend="triton")
    assert calls == []


def test_explicit_reference_backend_and_bad_name(monkeypatch):
    monkeypatch.delenv("THINKFAST_FORCE_REFERENCE", raising=False)
    calls = spy(monkeypatch)
    dispatch.causal_conv1d(*conv_args(), backend="reference")
    assert calls == ["reference"]
    with pytest.raises(ValueError):
        dispatch.causal_conv1d(*conv_args(), backend="cuda-please")


def test_fp64_takes_the_reference_under_auto(monkeypatch):
    monkeypatch.delenv("THINKFAST_KERNELS", raising=False)
    calls = spy(monkeypatch)
    x, w = conv_args(torch.float64)
    if torch.cuda.is_available():
        x, w = x.cuda(), w.cuda()
    dispatch.causal_conv1d(x, w)
    assert calls == ["reference"]


@pytest.mark.triton
def test_forced_kernel_refuses_unsupported_shapes():
    d, n, groups = 16, 5, 1  # d_state 5 is not a power of two
    x = torch.randn(1, 4, d)
    with pytest.raises(ValueError):
        dispatch.selective_scan(x, x, -torch.ones(d, n), torch.randn(1, 4, groups, n), torch.randn(1, 4, groups, n),
                                backend="triton")
