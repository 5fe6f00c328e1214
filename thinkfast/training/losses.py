"""Token-level distillation / SFT losses, chunked over positions, fp32 softmax (docs/design.md §3.2).

Inputs are hidden states and LM-head weights, not logits: a chunk of `chunk_tokens`
positions is projected to the vocabulary, its loss and its gradient w.r.t. the student
logits are computed in closed form, and the logits are dropped before the next chunk.
So (positions x vocab) never exists whole, in the forward or the backward pass.

The four LM-head matmuls per chunk (student and teacher logits, d/dh and d/dW) run in
`matmul_dtype`: fp32, or bf16 inputs with fp32 accumulation and fp32 logits (on CUDA, the
default inside bf16 autocast: fp32 matmuls run without tensor cores, and at a 152k vocabulary
they were most of a distillation step).  The softmax / KL / CE arithmetic is fp32 either way,
fused into one kernel per chunk on CUDA (`dispatch.token_loss_chunk`).

Per position, with p = softmax(s / T) (student), q = softmax(t / T) (teacher):
    reverse_kl = sum_v p (log p - log q)        d/ds = p (log p - log q - KL) / T
    forward_kl = sum_v q (log q - log p)        d/ds = (p - q) / T
    ce         = -log softmax(s)[y]             d/ds = softmax(s) - onehot(y)   (no temperature)
No T^2 factor is applied.  Losses are returned as SUMS over the given positions; the caller
divides by the (global) number of positions, which makes the result a token mean over all
processes and micro-batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thinkfast.ops import dispatch
from thinkfast.ops.reference.token_loss import token_loss_chunk_ref
from thinkfast.training.data import IGNORE

TERMS = ("reverse_kl", "forward_kl", "ce")


_chunk_terms = token_loss_chunk_ref  # the per-chunk math (reference); kept under its old name

_MM_OUT_DTYPE: dict[str, bool] = {}  # device type -> torch.mm(..., out_dtype=float32) works for low-precision inputs


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as fp32: fp32 inputs as they are; bf16 inputs accumulate in fp32 and, where PyTorch offers
    `out_dtype` (CUDA), come out in fp32 without a bf16 rounding of the result."""
    if a.dtype == torch.float32:
        return a @ b
    kind = a.device.type
    if _MM_OUT_DTYPE.get(kind, True):
        try:
            out = torch.mm(a, b, out_dtype=torch.float32)
            _MM_OUT_DTYPE[kind] = True
            return out
        except (RuntimeError, TypeError, NotImplementedError):
            _MM_OUT_DTYPE[kind] = False
    return (a @ b).float()


_ADDMM_INPLACE: dict[str, bool] = {}  # device type -> addmm(acc, a, b, out_dtype=fp32, out=acc) accumulates correctly


def _inplace_addmm_ok(acc: torch.Tensor, a: torch.Tensor) -> bool:
    """Probe once per device type, on small tensors, that the fp32-output addmm accumulates into its input."""
    kind = acc.device.type
    if kind not in _ADDMM_INPLACE:
        try:
            x = torch.randn(24, 40, device=acc.device).to(a.dtype)
            y = torch.randn(40, 16, device=acc.device).to(a.dtype)
            base = torch.randn(24, 16, device=acc.device)
            want = base + torch.mm(x, y, out_dtype=torch.float32)
            got = base.clone()
            torch.addmm(got, x, y, out_dtype=torch.float32, out=got)
            _ADDMM_INPLACE[kind] = bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4))
        except (RuntimeError, TypeError, NotImplementedError):
            _ADDMM_INPLACE[kind] = False
    return _ADDMM_INPLACE[kind]


def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b (acc fp32).  Low-precision inputs: one GEMM with beta = 1 where PyTorch allows it (no
    temporary (V, d) product and no separate add pass)."""
    if a.dtype != torch.float32 and _inplace_addmm_ok(acc, a):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc += _mm_f32(a, b)


def resolve_matmul_dtype(name: str, device_type: str) -> torch.dtype:
    """`loss.matmul_dtype` -> dtype.  auto: bf16 inside a bf16 autocast region (the CUDA default), else fp32."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise ValueError(f"matmul_dtype must be auto, fp32 or bf16, got {name!r}")
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


class ChunkedTokenLoss(torch.autograd.Function):
    """Weighted sum over positions of the token losses; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens, mm_dtype=torch.float32):
        # h_s (N, d) student final hidden; w_s (V, d) student head; h_t (N, d_t) / w_t (V, d_t) teacher or None
        with torch.autocast(h_s.device.type, enabled=False):  # fp32 logits even inside a bf16 autocast region
            return ChunkedTokenLoss._forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens,
                                             mm_dtype)

    @staticmethod
    def _forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens, mm_dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need = need_h or need_w
        w_mm = w_s.to(mm_dtype)  # once per call: the head in the matmul dtype (a no-op when it already is)
        wt_mm = w_t.to(mm_dtype) if w_t is not None else None
        sums = torch.zeros(3, dtype=torch.float32, device=h_s.device)
        grad_h = torch.zeros(h_s.shape, dtype=torch.float32, device=h_s.device) if need_h else None
        grad_w = torch.zeros(w_s.shape, dtype=torch.float32, device=w_s.device) if need_w else None
        for start in range(0, h_s.shape[0], chunk_tokens):
            sl = slice(start, start + chunk_tokens)
            hs = h_s[sl].to(mm_dtype)
            s = _mm_f32(hs, w_mm.T)  # (c, V) fp32
            t = _mm_f32(h_t[sl].to(mm_dtype), wt_mm.T) if h_t is not None else None
            part, g = dispatch.token_loss_chunk(s, t, targets[sl], weights, temperature, need, grad_dtype=mm_dtype)
            del s, t
            sums += part
            if need_h:
                grad_h[sl] = _mm_f32(g, w_mm)
            if need_w:
                _accumulate_mm(grad_w, g.T, hs)
            del g
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has = (need_h, need_w)
        ctx.dtypes = (h_s.dtype, w_s.dtype)
        total = (sums * torch.tensor(weights, dtype=torch.float32, device=sums.device)).sum()
        ctx.mark_non_differentiable(sums)
        return total, sums

    @staticmethod
    def backward(ctx, grad_total, grad_sums):
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.has
        gh = saved.pop(0) * grad_total if need_h else None
        gw = saved.pop(0) * grad_total if need_w else None
        gh = gh.to(ctx.dtypes[0]) if gh is not None else None
        gw = gw.to(ctx.dtypes[1]) if gw is not None else None
        return gh, gw, None, None, None, None, None, None, None


def token_loss_sum(
    student_hidden: torch.Tensor,  # (b, L, d)
    student_head: torch.Tensor,  # (V, d)
    targets: torch.Tensor,  # (b, L) already shifted; IGNORE where untrained
    weights: dict[str, float],
    teacher_hidden: torch.Tensor | None = None,  # (b, L, d_t)
    teacher_head: torch.Tensor | None = None,  # (V, d_t)
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    matmul_dtype: str = "fp32",  # fp32 | bf16 | auto (bf16 inside bf16 autocast): the LM-head matmuls' inputs
):
    """-> (weighted loss sum, number of positions, per-term sums {name: tensor})."""
    w = tuple(float(weights.get(name, 0.0)) for name in TERMS)
    if (w[0] or w[1]) and teacher_hidden is None:
        raise ValueError("KL terms need the teacher's hidden states and head")
    mask = targets != IGNORE  # (b, L): positions predicting a trained token
    h_s = student_hidden[mask]  # (N, d)
    y = targets[mask]
    h_t = teacher_hidden[mask] if teacher_hidden is not None and (w[0] or w[1]) else None
    w_t = teacher_head if h_t is not None else None
    mm_dtype = resolve_matmul_dtype(matmul_dtype, student_hidden.device.type)
    total, sums = ChunkedTokenLoss.apply(h_s, student_head, h_t, w_t, y, w, float(temperature), int(chunk_tokens),
                                         mm_dtype)
    return total, int(mask.sum()), {name: sums[i] for i, name in enumerate(TERMS) if w[i]}


def reference_token_losses(logits_s, logits_t, targets, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Unchunked per-position losses straight from full logits (b, L, V); for tests and debugging."""
    mask = targets != IGNORE
    s, y = logits_s[mask].float(), targets[mask]
    out = {"ce": F.cross_entropy(s, y, reduction="none")}
    if logits_t is not None:
        t = logits_t[mask].float()
        logp, logq = torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1)
        out["reverse_kl"] = (logp.exp() * (logp - logq)).sum(-1)
        out["forward_kl"] = (logq.exp() * (logq - logp)).sum(-1)
    return out
