"""Token-loss terms of one chunk of positions, from full-vocabulary logits (the reference of
`triton/token_loss.py`; `training/losses.py` calls it through `dispatch.token_loss_chunk`).

Per position, with p = softmax(s / T) (student), q = softmax(t / T) (teacher):
    reverse_kl = sum_v p (log p - log q)        d/ds = p (log p - log q - KL) / T
    forward_kl = sum_v q (log q - log p)        d/ds = (p - q) / T
    ce         = -log softmax(s)[y]             d/ds = softmax(s) - onehot(y)   (no temperature)
"""

from __future__ import annotations

import torch


def token_loss_chunk_ref(s: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor, weights, temperature: float,
                         need_grad: bool):
    """s, t: (c, V) fp32 logits; y: (c,).  Returns per-term sums (3,) and d(weighted sum)/ds (c, V) fp32 or None."""
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
