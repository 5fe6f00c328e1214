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

Backward.  fla 0.6.0 refuses its own backward (`chunk_bwd_dqkwg` raises "Triton >= 3.4.0
and < 3.7.1 on Hopper GPUs produces incorrect results") on Hopper with those Triton
versions unless tilelang is installed; its forward is fine.  `fla_backward_ok()` predicts
that condition (THINKFAST_SSD_BWD=fla|torch overrides it).  Where fla's backward is
usable, autograd goes through fla as before.  Where it is not and a gradient is needed,
`_FlaForwardTorchBackward` runs fla's forward without autograd and, in the backward,
recomputes the op with the PyTorch chunked SSD (`thinkfast.ops.ssd_chunked`: batched
matmuls over all chunks, on the unpacked (b, l) layout with the reset mask) under autograd
and differentiates that: gradients of the same function.  Recomputing rather than keeping
that graph from the forward keeps the memory of a layer's SSD at its inputs, as with fla's
own backward (docs/kernels.md has both costs).  Inference (no gradient) always uses fla's
forward only.
"""

from __future__ import annotations

import functools
import os

import torch


def _fla_chunk():
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_simple_gla


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out + [0] * (3 - len(out)))


@functools.lru_cache(maxsize=None)
def _fla_backward_ok_on(device_index: int) -> bool:
    import triton

    major, _minor = torch.cuda.get_device_capability(device_index)
    hopper = major == 9 or "NVIDIA H" in torch.cuda.get_device_name(device_index)
    v = _version_tuple(triton.__version__)
    if not (hopper and (3, 4, 0) <= v < (3, 7, 1)):
        return True
    try:  # fla dispatches the gated backward to tilelang when it is installed
        import tilelang  # noqa: F401
    except Exception:
        return False
    return True


def fla_backward_ok(device: torch.device) -> bool:
    """Whether fla's `chunk_simple_gla` backward runs on `device` (see the module docstring)."""
    mode = os.environ.get("THINKFAST_SSD_BWD", "auto")
    if mode not in ("auto", "fla", "torch"):
        raise ValueError(f"THINKFAST_SSD_BWD must be auto, fla or torch, got {mode!r}")
    if mode != "auto":
        return mode == "fla"
    if device.type != "cuda":
        return True
    return _fla_backward_ok_on(device.index if device.index is not None else torch.cuda.current_device())


class _FlaForwardTorchBackward(torch.autograd.Function):
    """fla forward (no autograd graph); backward by recomputing and differentiating the PyTorch chunked SSD."""

    @staticmethod
    def forward(ctx, x, g, B, C, initial_state, reset, fn, chunk_size):
        with torch.no_grad():
            y, ht = _ssd_fla_forward(x, g, B, C, initial_state, reset, True, fn)
        ctx.save_for_backward(x, g, B, C, initial_state, reset)
        ctx.chunk_size = chunk_size
        return y, ht

    @staticmethod
    def backward(ctx, dy, dht):
        from thinkfast.ops.ssd_chunked import ssd_chunked

        x, g, B, C, h0, reset = ctx.saved_tensors
        leaves = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip((x, g, B, C, h0), ctx.needs_input_grad[:5])]
        with torch.enable_grad():
            y, ht = ssd_chunked(*leaves[:4], leaves[4], reset, True, ctx.chunk_size)
            outs, grads_out = [], []
            if dy is not None:
                outs.append(y)
                grads_out.append(dy.to(y.dtype))
            if dht is not None:
                outs.append(ht)
                grads_out.append(dht.to(ht.dtype))
            want = [t for t in leaves if t is not None and t.requires_grad]
            got = torch.autograd.grad(outs, want, grads_out, allow_unused=True) if outs and want else []
        it = iter(got)
        res = []
        for t in leaves:
            if t is not None and t.requires_grad:
                gr = next(it)
                res.append(gr.to(t.dtype) if gr is not None else None)
            else:
                res.append(None)
        return (*res, None, None, None)


def ssd_fla(x, g, B, C, initial_state=None, reset=None, return_final_state=False, chunk_size=64, chunk_fn=None):
    """x (b, l, h, p), g (b, l, h), B/C (b, l, h, n); returns y (b, l, h, p) [, final (b, h, n, p) fp32].

    `chunk_fn` replaces fla's `chunk_simple_gla` (tests inject a reference with its signature).
    fla picks its own chunking; `chunk_size` is the PyTorch chunked SSD's, where that one runs the backward.
    """
    fn = chunk_fn or _fla_chunk()
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, g, B, C, initial_state))
    if needs_grad and not fla_backward_ok(x.device):
        y, ht = _FlaForwardTorchBackward.apply(x, g, B, C, initial_state, reset, fn, chunk_size)
        return (y, ht) if return_final_state else y
    return _ssd_fla_forward(x, g, B, C, initial_state, reset, return_final_state, fn)


def _ssd_fla_forward(x, g, B, C, initial_state, reset, return_final_state, fn):
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
