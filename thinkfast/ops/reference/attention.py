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
    k = k_cache[slots]  # (b, Hkv, T, d)
    v = v_cache[slots]
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    T = k.shape[2]
    mask = torch.arange(T, device=q.device)[None, :] < context_lengths[:, None]  # (b, T)
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask[:, None, None])
    return out[:, :, 0]  # (b, H, d)
