"""One entry point per op: the model calls these, never a backend directly.

Each function has the signature of its reference in `thinkfast.ops.reference`.
GPU kernels are chosen on CUDA tensors when available; everything else runs the
reference.  Set THINKFAST_FORCE_REFERENCE=1 to force the references everywhere
(for debugging a kernel against its ground truth).
"""

from __future__ import annotations

import os

from thinkfast.ops import reference as ref


def use_reference() -> bool:
    return os.environ.get("THINKFAST_FORCE_REFERENCE", "0") not in ("", "0", "false", "False")


def selective_scan(*args, **kwargs):
    return ref.selective_scan_ref(*args, **kwargs)


def selective_state_update(*args, **kwargs):
    return ref.selective_state_update_ref(*args, **kwargs)


def causal_conv1d(*args, **kwargs):
    return ref.causal_conv1d_ref(*args, **kwargs)


def causal_conv1d_update(*args, **kwargs):
    return ref.causal_conv1d_update_ref(*args, **kwargs)


def ssd(*args, chunk_size: int = 64, **kwargs):
    return ref.ssd_chunked_ref(*args, chunk_size=chunk_size, **kwargs)


def ssd_step(*args, **kwargs):
    return ref.ssd_step_ref(*args, **kwargs)


def attention(*args, **kwargs):
    return ref.attention_ref(*args, **kwargs)


def decode_attention(q, k_cache, v_cache, slots, context_lengths):
    if q.is_cuda and not use_reference():
        from thinkfast.ops.triton.decode_attention import decode_attention_triton

        return decode_attention_triton(q, k_cache, v_cache, slots, context_lengths)
    return ref.decode_attention_ref(q, k_cache, v_cache, slots, context_lengths)
