"""Discrete Mamba-2 (simple gated linear attention) on GPU through flash-linear-attention.

Same function as `ssd_chunked_ref` / `ssd_sequential_ref`:
    S_t = exp(g_t) S_{t-1} + B_t x_t^T,  y_t = C_t^T S_t
is fla's `chunk_simple_gla` with q = C, k = B, v = x, g = g and scale = 1 (fla's
default scale is 1/sqrt(d_state), which is not ours).

Resets: a reset before token t clears the state, which is exactly a sequence boundary.
With resets present the batch is flattened to one packed row of b*l tokens and cut at
every row start and every reset, and fla's varlen path (`cu_seqlens`) runs all the
documents at once.  Documents that open a row (no reset at t = 0) start from that row's
`initial_state`, the others from zero; each row's final state is that of its last
document.  This handles any reset pattern at the price of one host sync (nonzero) to
build `cu_seqlens`.  fla is imported lazily: only this CUDA path needs it.
"""

from __future__ import annotations

import torch


def _fla_chunk():
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_simple_gla


def ssd_fla(x, g, B, C, initial_state=None, reset=None, return_final_state=False, chunk_size=64, chunk_fn=None):
    """x (b, l, h, p), g (b, l, h), B/C (b, l, h, n); returns y (b, l, h, p) [, final (b, h, n, p) fp32].

    `chunk_fn` replaces fla's `chunk_simple_gla` (tests inject a reference with its signature).
    `chunk_size` is accepted for interface parity; fla picks its own chunking.
    """
    fn = chunk_fn or _fla_chunk()
    b, l, h, p = x.shape
    gf = g.float()
    h0 = initial_state.float() if initial_state is not None else None
    if reset is None or not bool(reset.any()):
        y, ht = fn(C, B, x, g=gf, scale=1.0, initial_state=h0, output_final_state=return_final_state)
        return (y, ht.float()) if return_final_state else y
    starts = reset.clone()
    starts[:, 0] = True
    flat_starts = starts.reshape(-1).nonzero().squeeze(1)  # (n_docs,) positions in the packed row
    n_docs = flat_starts.numel()
    cu = torch.cat([flat_starts, flat_starts.new_tensor([b * l])])
    row_starts = torch.arange(b, device=x.device) * l
    first_doc = torch.searchsorted(flat_starts, row_starts)  # document opening each row
    last_doc = torch.searchsorted(flat_starts, row_starts + l) - 1  # document closing each row
    seg_h0 = None
    if h0 is not None:
        keep = (~reset[:, 0]).to(h0.dtype)[:, None, None, None]
        seg_h0 = h0.new_zeros(n_docs, *h0.shape[1:]).index_add(0, first_doc, h0 * keep)
    packed = [t.reshape(1, b * l, *t.shape[2:]) for t in (C, B, x)]
    y, ht = fn(*packed, g=gf.reshape(1, b * l, h), scale=1.0, initial_state=seg_h0,
               output_final_state=return_final_state, cu_seqlens=cu)
    y = y.reshape(b, l, h, p)
    return (y, ht[last_doc].float()) if return_final_state else y
