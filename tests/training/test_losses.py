"""Chunked token losses against brute-force formulas (values and gradients)."""

import pytest
import torch

from thinkfast.training.losses import token_loss_sum

torch.set_num_threads(1)

# where the Triton kernel runs: compiled on CUDA, through the interpreter on CPU (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _brute(h_s, w_s, h_t, w_t, targets, weights, T):
    """Straight from the definitions, with full (positions x vocab) logits and autograd."""
    mask = targets != -100
    s = (h_s @ w_s.T)[mask].double()
    t = (h_t @ w_t.T)[mask].double()
    y = targets[mask]
    p_s, p_t = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    terms = {
        "reverse_kl": (p_s * (p_s.log() - p_t.log())).sum(-1),
        "forward_kl": (p_t * (p_t.log() - p_s.log())).sum(-1),
        "ce": -torch.log(torch.softmax(s, -1)[torch.arange(len(y)), y]),
    }
    return sum(w * terms[k].sum() for k, w in weights.items()), terms


@pytest.mark.parametrize(
    "weights,T,chunk",
    [
        ({"reverse_kl": 1.0}, 1.0, 3),
        ({"forward_kl": 1.0}, 1.0, 1000),
        ({"ce": 1.0}, 1.0, 2),
        ({"reverse_kl": 0.7, "forward_kl": 0.2, "ce": 0.5}, 2.0, 4),
        ({"reverse_kl": 1.0}, 0.5, 5),
    ],
)
def test_chunked_loss_matches_brute_force(weights, T, chunk):
    torch.manual_seed(0)
    b, L, d, dt, V = 2, 7, 6, 5, 11
    h_s = torch.randn(b, L, d, requires_grad=True)
    w_s = torch.randn(V, d, requires_grad=True)
    h_t, w_t = torch.randn(b, L, dt), torch.randn(V, dt)
    targets = torch.randint(0, V, (b, L))
    targets[0, :3] = -100
    targets[1, -1] = -100
    total, n, sums = token_loss_sum(h_s, w_s, targets, weights, h_t, w_t, temperature=T, chunk_tokens=chunk)
    assert n == int((targets != -100).sum())
    gh, gw = torch.autograd.grad(total, (h_s, w_s))
    h2, w2 = h_s.detach().double().requires_grad_(), w_s.detach().double().requires_grad_()
    ref, terms = _brute(h2, w2, h_t.double(), w_t.double(), targets, weights, T)
    rh, rw = torch.autograd.grad(ref, (h2, w2))
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)
    for k in weights:
        torch.testing.assert_close(sums[k].double(), terms[k].sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh.double(), rh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw.double(), rw, rtol=1e-4, atol=1e-5)


def test_loss_ignores_masked_positions_entirely():
    torch.manual_seed(1)
    h_s, w_s = torch.randn(1, 5, 4, requires_grad=True), torch.randn(9, 4)
    h_t, w_t = torch.randn(1, 5, 4), torch.randn(9, 4)
    targets = torch.tensor([[-100, 3, -100, 2, -100]])
    total, n, _ = token_loss_sum(h_s, w_s, targets, {"reverse_kl": 1.0}, h_t, w_t)
    (g,) = torch.autograd.grad(total, h_s)
    assert n == 2
    assert torch.all(g[0, [0, 2, 4]] == 0) and torch.all(g[0, [1, 3]].abs().sum(-1) > 0)


def test_identical_student_and_teacher_give_zero_kl():
    torch.manual_seed(2)
    h, w = torch.randn(1, 6, 4), torch.randn(9, 4)
    total, _, _ = token_loss_sum(h, w, torch.zeros(1, 6, dtype=torch.long), {"reverse_kl": 1.0, "forward_kl": 1.0}, h, w)
    assert abs(float(total)) < 1e-5


def test_loss_stays_fp32_inside_bf16_autocast():
    torch.manual_seed(3)
    h_s, w_s = torch.randn(1, 8, 16), torch.randn(50, 16) * 3
    h_t, w_t = torch.randn(1, 8, 16), torch.randn(50, 16) * 3
    targets = torch.randint(0, 50, (1, 8))
    ref, _, _ = token_loss_sum(h_s, w_s, targets, {"reverse_kl": 1.0}, h_t, w_t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _, _ = token_loss_sum(h_s, w_s, targets, {"reverse_kl": 1.0}, h_t, w_t)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights,T", [({"reverse_kl": 1.0}, 1.0), ({"forward_kl": 1.0, "ce": 0.5}, 2.0), ({"ce": 1.0}, 1.0)])
def test_bf16_head_matmuls_match_fp32_within_bf16_rounding(weights, T):
    """loss.matmul_dtype=bf16: the four LM-head matmuls take bf16 inputs (fp32 softmax and accumulation)."""
    torch.manual_seed(3)
    b, L, d, V = 2, 9, 32, 50
    h_s = torch.randn(b, L, d, requires_grad=True)
    w_s = (0.3 * torch.randn(V, d)).requires_grad_()
    h_t, w_t = torch.randn(b, L, d).bfloat16(), (0.3 * torch.randn(V, d)).bfloat16()  # a bf16 teacher, as on CUDA
    targets = torch.randint(0, V, (b, L))
    targets[0, :2] = -100
    out = {}
    for mm in ("fp32", "bf16"):
        total, _, sums = token_loss_sum(h_s, w_s, targets, weights, h_t, w_t, temperature=T, chunk_tokens=4,
                                        matmul_dtype=mm)
        out[mm] = (total, *torch.autograd.grad(total, (h_s, w_s)))
    for ref, got in zip(out["fp32"], out["bf16"]):
        err = ((got.double() - ref.double()).norm() / ref.double().norm()).item()
        assert err < 2e-2, err  # bf16 inputs: ~3 significant digits


def test_auto_matmul_dtype_follows_autocast():
    from thinkfast.training.losses import resolve_matmul_dtype

    assert resolve_matmul_dtype("auto", "cpu") == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resolve_matmul_dtype("auto", "cpu") == torch.bfloat16
    assert resolve_matmul_dtype("fp32", "cpu") == torch.float32


@pytest.mark.triton
def test_loss_through_the_fused_kernel_matches_the_reference(monkeypatch):
    """The Triton chunk kernel forced (compiled on CUDA, the interpreter on CPU): same loss and gradients.
    The tensors live where the kernel runs: a compiled kernel cannot read CPU tensors."""
    torch.manual_seed(4)
    h_s, w_s = torch.randn(1, 7, 8).to(DEVICE).requires_grad_(), torch.randn(13, 8).to(DEVICE).requires_grad_()
    h_t, w_t = torch.randn(1, 7, 8).to(DEVICE), torch.randn(13, 8).to(DEVICE)
    targets = torch.randint(0, 13, (1, 7)).to(DEVICE)
    weights = {"reverse_kl": 0.6, "forward_kl": 0.3, "ce": 0.2}
    res = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("THINKFAST_KERNELS", backend)
        total, _, _ = token_loss_sum(h_s, w_s, targets, weights, h_t, w_t, temperature=1.5, chunk_tokens=3)
        res[backend] = (total, *torch.autograd.grad(total, (h_s, w_s)))
    for a, b in zip(res["reference"], res["triton"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_bf16_head_matmuls_on_cuda_use_fp32_outputs():
    """On CUDA the bf16 path keeps fp32 logits (mm out_dtype) and accumulates d/dW in one GEMM (addmm beta=1)."""
    from thinkfast.training import losses

    torch.manual_seed(5)
    h_s = torch.randn(2, 300, 256, device="cuda", requires_grad=True)
    w_s = (0.05 * torch.randn(32000, 256, device="cuda")).requires_grad_()
    h_t = torch.randn(2, 300, 256, device="cuda").bfloat16()
    w_t = (0.05 * torch.randn(32000, 256, device="cuda")).bfloat16()
    targets = torch.randint(0, 32000, (2, 300), device="cuda")
    out = {}
    for mm in ("fp32", "bf16"):
        total, _, _ = token_loss_sum(h_s, w_s, targets, {"reverse_kl": 1.0, "ce": 0.1}, h_t, w_t, chunk_tokens=128,
                                     matmul_dtype=mm)
        out[mm] = (total, *torch.autograd.grad(total, (h_s, w_s)))
    assert losses._MM_OUT_DTYPE.get("cuda") is True
    assert losses._ADDMM_INPLACE.get("cuda") is True
    for ref, got in zip(out["fp32"], out["bf16"]):
        assert ((got.double() - ref.double()).norm() / ref.double().norm()).item() < 1e-2
