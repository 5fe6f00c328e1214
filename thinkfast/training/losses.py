"""Token-level distillation / SFT losses, chunked over positions, fp32 (SPEC 3.2).

Inputs are hidden states and LM-head weights, not logits: a chunk of `chunk_tokens`
positions is projected to the vocabulary, its loss and its gradient w.r.t. the student
logits are computed in closed form, and the logits are dropped before the next chunk.
So (positions x vocab) never exists whole, in the forward or the backward pass.

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

from thinkfast.training.data import IGNORE

TERMS = ("reverse_kl", "forward_kl", "ce")


def _chunk_terms(s: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor, weights, temperature: float, need_grad: bool):
    """s, t: (c, V) fp32 logits; y: (c,).  Returns per-term sums (3,) and d(weighted sum)/ds (c, V) or None."""
    w_rkl, w_fkl, w_ce = weights
    sums = torch.zeros(3, dtype=torch.float32, device=s.device)
    grad = torch.zeros_like(s) if need_grad else None
    if w_rkl or w_fkl:
        logp = torch.log_softmax(s / temperature, dim=-1)
        logq = torch.log_softmax(t / temperature, dim=-1)
        p = logp.exp()
        if w_rkl:
            diff = logp - logq
            rkl = (p * diff).sum(-1)  # (c,)
            sums[0] = rkl.sum()
            if need_grad:
                grad += (w_rkl / temperature) * p * (diff - rkl[:, None])
        if w_fkl:
            q = logq.exp()
            sums[1] = (q * (logq - logp)).sum()
            if need_grad:
                grad += (w_fkl / temperature) * (p - q)
    if w_ce:
        logp1 = torch.log_softmax(s, dim=-1)
        sums[2] = -logp1.gather(-1, y[:, None]).sum()
        if need_grad:
            g = logp1.exp()
            g[torch.arange(len(y), device=y.device), y] -= 1.0
            grad += w_ce * g
    return sums, grad


class ChunkedTokenLoss(torch.autograd.Function):
    """Weighted sum over positions of the token losses; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens):
        # h_s (N, d) student final hidden; w_s (V, d) student head; h_t (N, d_t) / w_t (V, d_t) teacher or None
        with torch.autocast(h_s.device.type, enabled=False):  # fp32 logits even inside a bf16 autocast region
            return ChunkedTokenLoss._forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens)

    @staticmethod
    def _forward(ctx, h_s, w_s, h_t, w_t, targets, weights, temperature, chunk_tokens):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need = need_h or need_w
        w32 = w_s.float()
        wt32 = w_t.float() if w_t is not None else None
        sums = torch.zeros(3, dtype=torch.float32, device=h_s.device)
        grad_h = torch.zeros(h_s.shape, dtype=torch.float32, device=h_s.device) if need_h else None
        grad_w = torch.zeros(w_s.shape, dtype=torch.float32, device=w_s.device) if need_w else None
        for start in range(0, h_s.shape[0], chunk_tokens):
            sl = slice(start, start + chunk_tokens)
            hs = h_s[sl].float()
            s = hs @ w32.T  # (c, V)
            t = h_t[sl].float() @ wt32.T if h_t is not None else None
            part, g = _chunk_terms(s, t, targets[sl], weights, temperature, need)
            sums += part
            if need_h:
                grad_h[sl] = g @ w32
            if need_w:
                grad_w += g.T @ hs
            del s, t, g
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
        return gh, gw, None, None, None, None, None, None


def token_loss_sum(
    student_hidden: torch.Tensor,  # (b, L, d)
    student_head: torch.Tensor,  # (V, d)
    targets: torch.Tensor,  # (b, L) already shifted; IGNORE where untrained
    weights: dict[str, float],
    teacher_hidden: torch.Tensor | None = None,  # (b, L, d_t)
    teacher_head: torch.Tensor | None = None,  # (V, d_t)
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
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
    total, sums = ChunkedTokenLoss.apply(h_s, student_head, h_t, w_t, y, w, float(temperature), int(chunk_tokens))
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
