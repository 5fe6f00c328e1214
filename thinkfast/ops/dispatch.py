"""One entry point per op: the model calls these, never a backend directly.

Each function has the signature of its reference in `thinkfast.ops.reference`, plus an
optional keyword `backend` (and `attention` a `block_masks` dict: which callers may use its
compiled kernel).  Backend choice, first rule that applies:

1. `THINKFAST_FORCE_REFERENCE=1`: the reference, always (debug a kernel against its
   ground truth without touching code).
2. `backend=` argument, else the `THINKFAST_KERNELS` environment variable:
   - "reference": the reference;
   - "triton": the kernel, on CUDA tensors, or on CPU tensors under `TRITON_INTERPRET=1`
     (how CI runs the kernels); an unsupported shape/dtype, or a CPU tensor while the
     kernels are compiled, is a ValueError, not a silent fallback, so a test that forces
     kernels really tests them (and never reaches a launch that Triton would reject);
   - "auto" (default): the kernel when every tensor is on CUDA, triton (and for `ssd`
     flash-linear-attention) imports, and the shape/dtype is supported; else the reference.
fp64 inputs always take the reference under "auto" (the kernels compute in fp32).
"""

from __future__ import annotations

import functools
import os

import torch

from thinkfast.ops import reference as ref

_CHOICES = ("auto", "reference", "triton")


def use_reference() -> bool:
    return os.environ.get("THINKFAST_FORCE_REFERENCE", "0") not in ("", "0", "false", "False")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401

        import thinkfast.ops.triton.selective_scan  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def fla_available() -> bool:
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception:
        return False
    return True


def _requested(backend: str | None) -> str:
    choice = backend if backend is not None else os.environ.get("THINKFAST_KERNELS", "auto")
    if choice not in _CHOICES:
        raise ValueError(f"backend must be one of {_CHOICES}, got {choice!r}")
    return choice


def _check_kernel_devices(tensors, name: str) -> None:
    """Compiled Triton kernels read CUDA memory only; CPU tensors are for the interpreter (TRITON_INTERPRET=1).
    Refuse here, with the reason, rather than let Triton fail inside the launch."""
    from thinkfast.ops.triton._common import interpreting

    if interpreting():
        return
    on_cpu = sorted({str(t.device) for t in tensors if not t.is_cuda})
    if on_cpu:
        raise ValueError(
            f"{name}: backend 'triton' was forced but got tensors on {', '.join(on_cpu)}; the compiled kernels "
            "need CUDA tensors (CPU tensors run only under TRITON_INTERPRET=1, set before triton is imported). "
            "Move the inputs to CUDA or use backend 'auto' / 'reference'.")


def _pick(backend: str | None, tensors, supported, name: str, needs_fla: bool = False) -> bool:
    """True to run the kernel.  `supported` is a thunk: shape/dtype check of the kernel."""
    if use_reference():
        return False
    choice = _requested(backend)
    if choice == "reference":
        return False
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"{name}: backend 'triton' requested but triton cannot be imported")
        if needs_fla and not fla_available():
            raise RuntimeError(f"{name}: flash-linear-attention is needed for this kernel and cannot be imported")
        if not supported():
            raise ValueError(f"{name}: the kernel does not support these shapes/dtypes")
        _check_kernel_devices(present, name)
        return True
    if not present or not all(t.is_cuda for t in present):
        return False
    if any(t.dtype == torch.float64 for t in present):
        return False
    if not triton_available() or (needs_fla and not fla_available()):
        return False
    return bool(supported())


def selective_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=True, initial_state=None, reset=None,
                   return_final_state=False, *, backend: str | None = None):
    def ok():
        from thinkfast.ops.triton.selective_scan import supported

        return supported(x, A, B)

    if _pick(backend, (x, dt, A, B, C, D, z, dt_bias, initial_state, reset), ok, "selective_scan"):
        from thinkfast.ops.triton.selective_scan import selective_scan as kernel

        return kernel(x, dt, A, B, C, D, z, dt_bias, softplus, initial_state, reset, return_final_state)
    return ref.selective_scan_ref(x, dt, A, B, C, D, z, dt_bias, softplus, initial_state, reset, return_final_state)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=True, state_indices=None,
                           *, backend: str | None = None):
    def ok():
        from thinkfast.ops.triton.state_update import mamba1_supported

        return mamba1_supported(state, x, A, B)

    if _pick(backend, (state, x, dt, A, B, C, D, z, dt_bias, state_indices), ok, "selective_state_update"):
        from thinkfast.ops.triton.state_update import selective_state_update as kernel

        return kernel(state, x, dt, A, B, C, D, z, dt_bias, softplus, state_indices)
    return ref.selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, softplus, state_indices)


def mamba1_fused_step(z, x, B, C, dt, conv_state, conv_weight, conv_bias, state, A_log, D, dt_bias, head_dim,
                      activation="silu", softplus=True, state_indices=None, *, backend: str | None = None):
    """Mamba-1 decode step from the raw in_proj slices: conv + GQA expansion + state update, one launch."""
    def ok():
        from thinkfast.ops.triton.mamba1_decode import fused_supported

        return fused_supported(x, B, C, state, A_log, conv_state, head_dim)

    if _pick(backend, (z, x, B, C, dt, conv_state, conv_weight, conv_bias, state, A_log, D, dt_bias, state_indices),
             ok, "mamba1_fused_step"):
        from thinkfast.ops.triton.mamba1_decode import mamba1_fused_step as kernel

        return kernel(z, x, B, C, dt, conv_state, conv_weight, conv_bias, state, A_log, D, dt_bias, head_dim,
                      activation, softplus, state_indices)
    return ref.mamba1_fused_step_ref(z, x, B, C, dt, conv_state, conv_weight, conv_bias, state, A_log, D, dt_bias,
                                     head_dim, activation, softplus, state_indices)


def add_rms_norm(h, delta, weight, eps, *, backend: str | None = None):
    """Decode glue: (h + delta, RMSNorm(h + delta)) in one launch (delta may be None)."""
    def ok():
        return h.dim() == 2 and h.dtype in (torch.float32, torch.bfloat16, torch.float16)

    if _pick(backend, (h, delta, weight), ok, "add_rms_norm"):
        from thinkfast.ops.triton.decode_fused import add_rms_norm as kernel

        return kernel(h, delta, weight, eps)
    return ref.add_rms_norm_ref(h, delta, weight, eps)


def silu_mul(g, u, *, backend: str | None = None):
    def ok():
        return g.shape == u.shape and g.dtype == u.dtype and g.dtype in (torch.float32, torch.bfloat16, torch.float16)

    if _pick(backend, (g, u), ok, "silu_mul"):
        from thinkfast.ops.triton.decode_fused import silu_mul as kernel

        return kernel(g, u)
    return ref.silu_mul_ref(g, u)


def rope_kv_write(q, k, v, positions, inv_freq, k_cache, v_cache, slots, *, backend: str | None = None):
    """Decode glue of an attention layer in one launch: RoPE on q and the new k, k and v written into the caches."""
    def ok():
        hd = q.shape[-1]
        return (q.dim() == 3 and hd % 2 == 0 and (hd // 2) & (hd // 2 - 1) == 0 and q.dtype == k_cache.dtype
                and q.dtype in (torch.float32, torch.bfloat16, torch.float16))

    if _pick(backend, (q, k, v, positions, inv_freq, k_cache, v_cache, slots), ok, "rope_kv_write"):
        from thinkfast.ops.triton.decode_fused import rope_kv_write as kernel

        return kernel(q, k, v, positions, inv_freq, k_cache, v_cache, slots)
    return ref.rope_kv_write_ref(q, k, v, positions, inv_freq, k_cache, v_cache, slots)


def causal_conv1d(x, weight, bias=None, activation=None, reset=None, initial_state=None, return_final_state=False,
                  *, backend: str | None = None):
    def ok():
        return x.dtype in (torch.float32, torch.bfloat16, torch.float16) and weight.shape[1] >= 2

    if _pick(backend, (x, weight, bias, reset, initial_state), ok, "causal_conv1d"):
        from thinkfast.ops.triton.conv import causal_conv1d as kernel

        return kernel(x, weight, bias, activation, reset, initial_state, return_final_state)
    return ref.causal_conv1d_ref(x, weight, bias, activation, reset, initial_state, return_final_state)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, state_indices=None,
                         *, backend: str | None = None):
    def ok():
        return x.dtype in (torch.float32, torch.bfloat16, torch.float16) and weight.shape[1] >= 2

    if _pick(backend, (x, conv_state, weight, bias, state_indices), ok, "causal_conv1d_update"):
        from thinkfast.ops.triton.conv import causal_conv1d_update as kernel

        return kernel(x, conv_state, weight, bias, activation, state_indices)
    return ref.causal_conv1d_update_ref(x, conv_state, weight, bias, activation, state_indices)


def ssd(x, g, B, C, initial_state=None, reset=None, return_final_state=False, chunk_size: int = 64,
        *, backend: str | None = None):
    def ok():
        return x.dtype in (torch.float32, torch.bfloat16, torch.float16) and x.is_cuda

    if _pick(backend, (x, g, B, C, initial_state, reset), ok, "ssd", needs_fla=True):
        from thinkfast.ops.triton.ssd_fla import ssd_fla

        return ssd_fla(x, g, B, C, initial_state, reset, return_final_state, chunk_size)
    return ref.ssd_chunked_ref(x, g, B, C, initial_state, reset, return_final_state, chunk_size=chunk_size)


def ssd_step(state, x, g, B, C, state_indices=None, *, backend: str | None = None):
    def ok():
        from thinkfast.ops.triton.state_update import ssd_step_supported

        return ssd_step_supported(state, x, B)

    if _pick(backend, (state, x, g, B, C, state_indices), ok, "ssd_step"):
        from thinkfast.ops.triton.state_update import ssd_step as kernel

        return kernel(state, x, g, B, C, state_indices)
    return ref.ssd_step_ref(state, x, g, B, C, state_indices)


def token_loss_chunk(s, t, y, weights, temperature, need_grad, grad_dtype=torch.float32, *,
                     backend: str | None = None):
    """Token-loss terms of a chunk of positions from fp32 logits: (sums (3,), d(weighted sum)/ds in grad_dtype
    or None).  The kernel reads each logit row twice; the reference makes ~30 passes."""
    def ok():
        from thinkfast.ops.triton.token_loss import supported

        return supported(s, t)

    if _pick(backend, (s, t, y), ok, "token_loss_chunk"):
        from thinkfast.ops.triton.token_loss import token_loss_chunk as kernel

        return kernel(s, t, y, weights, temperature, need_grad, grad_dtype)
    sums, grad = ref.token_loss_chunk_ref(s, t, y, weights, temperature, need_grad)
    return sums, (grad.to(grad_dtype) if grad is not None else None)


def gumbel_argmax(logits, temperature, keys, *, backend: str | None = None):
    """Temperature sampling (no top-k / top-p / min-p): argmax(logits / T + Gumbel noise of `keys`) per row."""
    def ok():
        from thinkfast.ops.triton.sampling import supported

        return supported(logits)

    if _pick(backend, (logits, temperature, keys), ok, "gumbel_argmax"):
        from thinkfast.ops.triton.sampling import gumbel_argmax as kernel

        return kernel(logits, temperature, keys)
    return ref.gumbel_argmax_ref(logits, temperature, keys)


def attention(q, k, v, doc_ids=None, block_masks: dict | None = None, *, backend: str | None = None):
    """Causal attention, within documents where `doc_ids` (b, l) is given.

    Packed training rows (`doc_ids` and `block_masks`, a dict the caller keeps for one forward) take
    flex_attention with a block mask that skips other documents' blocks (`ops/flex_attention.py`); everything
    else, and any caller without `block_masks` (its shapes vary: a compiled kernel would recompile), takes the
    reference: SDPA with a dense mask."""
    def ok():
        from thinkfast.ops.flex_attention import supported

        return supported(q, k, v)

    if doc_ids is not None and block_masks is not None and _pick(backend, (q, k, v, doc_ids), ok, "attention"):
        from thinkfast.ops.flex_attention import packed_attention

        return packed_attention(q, k, v, doc_ids, block_masks)
    return ref.attention_ref(q, k, v, doc_ids)


def decode_attention(q, k_cache, v_cache, slots, context_lengths, length_offset: int = 0):
    """Each row's query over its slot's first `context_lengths + length_offset` cached positions."""
    if q.is_cuda and not use_reference():
        from thinkfast.ops.triton.decode_attention import decode_attention_triton

        return decode_attention_triton(q, k_cache, v_cache, slots, context_lengths, length_offset=length_offset)
    return ref.decode_attention_ref(q, k_cache, v_cache, slots, context_lengths + length_offset)
