"""Attention over packed training rows through torch's flex_attention.

A packed row holds several documents; a token attends to the earlier tokens of its own document only.
The reference (`reference.attention.attention_ref`) gives SDPA a dense (b, l, l) mask: the kernel then
visits every causal block of the row, those between documents included, and the key/value heads are
first copied once per query group.  Here one block mask per forward (built once, kept in the caller's
`block_masks` dict, shared by every attention layer) lets flex_attention skip the blocks where no query
sees any key, and it reads the grouped key/value heads in place (`enable_gqa`).  The arithmetic is the
reference's: softmax(q k^T / sqrt(d)) v over the same (query, key) pairs.

The compiled kernel is specialised to the (batch, length) it first sees: training rows all have one
shape, so the dispatch uses this only where the caller passes `block_masks` (training); engine prefill
and evaluation, whose shapes vary, keep SDPA.  A run compiles it once per (rows, length, grad mode) it meets:
training's student and teacher, the held-out evaluation's batches, a few in all, within torch.compile's
recompile limit (8).  On CPU tensors (the tests) flex_attention runs uncompiled.
"""

from __future__ import annotations

import functools
import warnings

import torch


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """flex_attention with grouped-query heads and compiled block masks (torch >= 2.5); on CPU tensors
    forward only (torch has no CPU backward for it)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return q.is_cuda or not needs_grad


def document_block_mask(doc_ids: torch.Tensor):  # doc_ids (b, l) long
    """Causal within each document: query i sees key j when j <= i and both are in one document."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, l = doc_ids.shape

    def same_document_causal(batch, head, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (doc_ids[batch, q_idx] == doc_ids[batch, kv_idx])

    return create_block_mask(same_document_causal, b, None, l, l, device=doc_ids.device, _compile=doc_ids.is_cuda)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def packed_attention(
    q: torch.Tensor,  # (b, H, l, d)
    k: torch.Tensor,  # (b, Hkv, l, d)
    v: torch.Tensor,  # (b, Hkv, l, d)
    doc_ids: torch.Tensor,  # (b, l)
    block_masks: dict,
) -> torch.Tensor:  # (b, H, l, d)
    """Document-causal attention; the block mask is built on the first call for these doc_ids and kept
    in `block_masks` (one dict per SequenceInfo, so per forward) for the layers that follow."""
    from torch.nn.attention.flex_attention import flex_attention

    mask = block_masks.get("document")
    if mask is None:
        mask = block_masks["document"] = document_block_mask(doc_ids)
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=mask, enable_gqa=gqa)
    with warnings.catch_warnings():  # on CPU (tests) the unfused implementation is the point
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, block_mask=mask, enable_gqa=gqa)
