"""Discrete Mamba-2 sequence op (SSD) as batched matmuls in plain PyTorch; autograd gives the backward.

Same function as `ssd_sequential_ref` (per head: S_t = exp(g_t) S_{t-1} + B_t x_t^T, y_t = C_t^T S_t,
resets clear the state, optional initial / final state), in the state-space-duality form.  The
sequence is cut into chunks of Q tokens and every chunk is handled at once:

1. G = cumulative sum of g inside each chunk; the decay from token s to token t of the same chunk is
   L[t, s] = exp(G_t - G_s) for s <= t (an exponent <= 0: a sum of log-decays) and 0 above the diagonal.
2. intra-chunk output:  y_t += sum_s (C_t . B_s) L[t, s] x_s           -> (C B^T o L) X, two matmuls;
3. chunk-local end state: S_c = sum_s exp(G_end - G_s) B_s x_s^T       -> one matmul;
4. states entering each chunk, H_c = sum_{c' < c} (decay of chunks c'+1..c-1) S_c' (+ the decayed
   initial state): one (chunks+1) x (chunks+1) matmul over all chunks at once (mamba_ssm's
   `ssd_minimal`), so nothing loops over time in Python;
5. inter-chunk output:  y_t += exp(G_t) C_t^T H_c                       -> one matmul.

Resets are a document mask, not a -inf decay (G_t - G_s of two -inf's would be NaN): within a chunk,
doc_t counts the resets up to t, and a pair (t, s) interacts only if doc_t == doc_s; token t sees the
incoming state only if doc_t == 0; token s reaches the chunk end only if doc_s == doc_end; the chunk
passes its incoming state on only if it holds no reset.  g at reset tokens is unused, so it is zeroed
(its gradient is exactly zero, as in the reference, whose decay there is exp(-inf)).

Precision: the cumulative sums, decays, states and the sum of the two outputs are fp32 (fp64 for fp64
inputs).  Matmul operands stay in the inputs' dtype: bf16 in training, with fp32 accumulation inside
the matmul and a bf16 result, as fla's chunked kernel does.  Autocast is off inside, so these choices
hold whatever the caller's autocast state.

Chunk size: the caller's `chunk_size` (the mixer's `chunk_size`, 64 by default).  Per token and head
the work is 2Q(n + p) for steps 2, 4n p for steps 3 + 5 and about 2 l n p / Q^2 for step 4, which is
smallest near Q = (2 l n p / (n + p))^(1/3): 51-64 at n = p = 64 and l = 2048-4096, 64 at
n = p = 128, l = 2048.  Memory of the (Q x Q) tensors grows with Q, so 64 (docs/kernels.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thinkfast.ops.reference._precision import state_dtype
from thinkfast.ops.reference.mixer_matrix import segment_sum


def ssd_chunked(
    x: torch.Tensor,  # (b, l, h, p)
    g: torch.Tensor,  # (b, l, h) log decay (<= 0)
    B: torch.Tensor,  # (b, l, h, n)
    C: torch.Tensor,  # (b, l, h, n)
    initial_state: torch.Tensor | None = None,  # (b, h, n, p)
    reset: torch.Tensor | None = None,  # (b, l) bool, True where a document starts
    return_final_state: bool = False,
    chunk_size: int = 64,
):
    """y (b, l, h, p) in x's dtype [, final state (b, h, n, p) fp32 (fp64 for fp64 inputs)]."""
    with torch.autocast(x.device.type, enabled=False):
        return _ssd_chunked(x, g, B, C, initial_state, reset, return_final_state, chunk_size)


def _ssd_chunked(x, g, B, C, initial_state, reset, return_final_state, Q):
    b, l, h, p = x.shape
    n = B.shape[-1]
    nc = -(-l // Q)  # chunks; the last one is padded with tokens of decay 1 and zero input
    pad = nc * Q - l
    sd = state_dtype(x)  # decays, states, output sum
    md = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else sd  # matmul operands

    def chunks(t):  # (b, l, h, d) -> (b, h, nc, Q, d), zero-padded
        t = F.pad(t.to(md), (0, 0, 0, 0, 0, pad)) if pad else t.to(md)  # F.pad copies even when pad == 0
        return t.view(b, nc, Q, h, -1).permute(0, 3, 1, 2, 4).contiguous()

    xc, Bc, Cc = chunks(x), chunks(B), chunks(C)  # (b, h, nc, Q, p), (b, h, nc, Q, n) x2
    gf = g.to(sd) if reset is None else g.to(sd).masked_fill(reset[:, :, None], 0.0)  # (b, l, h)
    G = F.pad(gf, (0, 0, 0, pad)).view(b, nc, Q, h).permute(0, 3, 1, 2).cumsum(-1)  # (b, h, nc, Q)

    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()  # (Q, Q) [t, s]: s <= t
    if reset is None:
        pair = causal  # (Q, Q)
        sees_start = reaches_end = passes = None
    else:
        doc = F.pad(reset, (0, pad)).view(b, 1, nc, Q).cumsum(-1)  # (b, 1, nc, Q) resets up to t
        pair = causal & (doc[..., :, None] == doc[..., None, :])  # (b, 1, nc, Q, Q)
        sees_start = doc == 0  # (b, 1, nc, Q)
        reaches_end = doc == doc[..., -1:]  # (b, 1, nc, Q)
        passes = sees_start[..., -1]  # (b, 1, nc)

    # 2. intra-chunk
    L = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~pair, float("-inf")))  # (b, h, nc, Q, Q)
    scores = (Cc @ Bc.transpose(-1, -2)) * L  # (b, h, nc, Q, Q) in sd
    y = (scores.to(md) @ xc).to(sd)  # (b, h, nc, Q, p)

    # 3. chunk-local end states
    to_end = torch.exp(G[..., -1:] - G)  # (b, h, nc, Q)
    if reaches_end is not None:
        to_end = to_end * reaches_end
    S_local = (Bc * to_end[..., None]).to(md).transpose(-1, -2) @ xc  # (b, h, nc, n, p)

    # 4. states entering every chunk (and the final one) in one matmul over chunks
    log_pass = G[..., -1]  # (b, h, nc) log decay across each chunk
    if passes is not None:
        log_pass = log_pass.masked_fill(~passes, float("-inf"))
    h0 = initial_state.to(sd) if initial_state is not None else x.new_zeros(b, h, n, p, dtype=sd)
    S = torch.cat([h0[:, :, None], S_local.to(sd)], dim=2).view(b, h, nc + 1, n * p)  # (b, h, nc+1, n*p)
    T = torch.exp(segment_sum(F.pad(log_pass, (1, 0))))  # (b, h, nc+1, nc+1) [into, from]
    H = (T @ S).view(b, h, nc + 1, n, p)  # (b, h, nc+1, n, p) state entering chunk c; [nc]: final

    # 5. inter-chunk
    from_start = torch.exp(G)  # (b, h, nc, Q)
    if sees_start is not None:
        from_start = from_start * sees_start
    y = y + ((Cc * from_start[..., None]).to(md) @ H[:, :, :nc].to(md)).to(sd)  # (b, h, nc, Q, p)

    y = y.permute(0, 2, 3, 1, 4).reshape(b, nc * Q, h, p)[:, :l].to(x.dtype)  # (b, l, h, p)
    return (y, H[:, :, nc]) if return_final_state else y
