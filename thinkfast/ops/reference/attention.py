"""Attention references: block-diagonal causal attention and single-token decode over a KV pool."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(b, kv_heads, l, d) -> (b, kv_heads * n_rep, l, d); query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, kvh, l, d = x.shape
    return x[:, :, None].expand(b, kvh, n_rep, l, d).reshape(b, kvh * n_rep, l, d)


def attention_ref(
    q: torch.Tensor,  # (b, H, l, d)
    k: torch.Tensor,  # (b, Hkv, l, d)
    v: torch.Tensor,  # (b, Hkv, l, d)
    doc_ids: torch.Tensor | None = None,  # (b, l): attend only within a document
) -> torch.Tensor:
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    if doc_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    l = q.shape[2]
    causal = torch.ones(l, l, dtype=torch.bool, device=q.device).tril()
    mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal  # (b, l, l)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])


def decode_attention_ref(
    q: torch.Tensor,  # (b, H, d): the new token's queries
    k_cache: torch.Tensor,  # (slots, Hkv, T, d)
    v_cache: torch.Tensor,  # (slots, Hkv, T, d)
    slots: torch.Tensor,  # (b,) which pool rows
    context_lengths: torch.Tensor,  # (b,) tokens to attend to (new token included)
) -> torch.Tensor:
    if q.device.type == "cpu":  # the CPU decode path: read only up to the longest live context
        longest = int(context_lengths.max())
        k_cache, v_cache = k_cache[:, :, :longest], v_cache[:, :, :longest]
    k = k_cache[slots]  # (b, Hkv, T, d)
    v = v_cache[slots]
    b, kv_heads, T, d = k.shape
    qg = q.view(b, kv_heads, q.shape[1] // kv_heads, d)  # query heads grouped by the kv head they read
    scores = torch.einsum("bgrd,bgtd->bgrt", qg.float(), k.float()) * d**-0.5
    live = torch.arange(T, device=q.device)[None, :] < context_lengths[:, None]  # (b, T)
    scores = scores.masked_fill(~live[:, None, None, :], float("-inf"))
    out = torch.einsum("bgrt,bgtd->bgrd", scores.softmax(-1), v.float())
    return out.reshape(b, q.shape[1], d).to(q.dtype)  # (b, H, d)
