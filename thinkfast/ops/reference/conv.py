"""Causal depthwise conv1d over a sequence (with document resets) and its one-step update."""

from __future__ import annotations

from thinkfast.ops.reference._precision import state_dtype, up

import torch
import torch.nn.functional as F


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return y
    if activation == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {activation!r}; expected None or 'silu'")


def causal_conv1d_ref(
    x: torch.Tensor,  # (b, l, c)
    weight: torch.Tensor,  # (c, k)
    bias: torch.Tensor | None = None,  # (c,)
    activation: str | None = None,
    reset: torch.Tensor | None = None,  # (b, l) bool, True at document starts
    initial_state: torch.Tensor | None = None,  # (b, c, k-1): the inputs before x[:, 0]
    return_final_state: bool = False,
):
    """y[t] = act(bias + sum_i weight[:, i] * x[t - (k-1) + i]), inputs from an earlier
    document (before a reset) read as zero.  Computed in fp32, returned in x's dtype.

    The final state is the last k-1 inputs of the window that the next token would
    see (zeros where they belong to an earlier document), shape (b, c, k-1).
    """
    b, l, c = x.shape
    k = weight.shape[1]
    xf = up(x)
    if initial_state is None:
        history = xf.new_zeros(b, k - 1, c)
    else:
        history = up(initial_state).transpose(1, 2)  # (b, k-1, c)
    padded = torch.cat([history, xf], dim=1)  # (b, l+k-1, c); position t of x is index t+k-1
    # doc index of every padded position: history belongs to "document 0" of x unless x[0] resets
    if reset is None:
        doc = torch.zeros(b, l + k - 1, dtype=torch.long, device=x.device)
    else:
        doc_x = torch.cumsum(reset.long(), dim=1)  # (b, l)
        doc = torch.cat([doc_x.new_zeros(b, k - 1), doc_x], dim=1)
    y = torch.zeros(b, l, c, dtype=state_dtype(x), device=x.device)
    for i in range(k):  # tap i reads the input k-1-i steps back
        src = padded[:, i : i + l]  # (b, l, c): input at t - shift
        same_doc = (doc[:, i : i + l] == doc[:, k - 1 :]).unsqueeze(-1)  # (b, l, 1)
        y = y + up(weight[:, i]) * src * same_doc
    if bias is not None:
        y = y + up(bias)
    y = _activate(y, activation).to(x.dtype)
    if not return_final_state:
        return y
    last_doc = doc[:, -1:]  # (b, 1)
    tail = padded[:, -(k - 1) :] * (doc[:, -(k - 1) :] == last_doc).unsqueeze(-1)  # (b, k-1, c)
    return y, tail.transpose(1, 2).contiguous()  # (b, c, k-1)


def causal_conv1d_update_ref(
    x: torch.Tensor,  # (b, c): the new input
    conv_state: torch.Tensor,  # (pool, c, k-1): previous inputs, oldest first; updated in place
    weight: torch.Tensor,  # (c, k)
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    state_indices: torch.Tensor | None = None,  # (b,) rows of conv_state to use; default 0..b-1
) -> torch.Tensor:
    """One decode step: returns act(conv) for the new token (b, c) and rolls the state."""
    b = x.shape[0]
    rows = torch.arange(b, device=x.device) if state_indices is None else state_indices
    window = torch.cat([up(conv_state[rows]), up(x).unsqueeze(-1)], dim=-1)  # (b, c, k)
    y = (window * up(weight)).sum(-1)  # (b, c)
    if bias is not None:
        y = y + up(bias)
    conv_state[rows] = window[:, :, 1:].to(conv_state.dtype)
    return _activate(y, activation).to(x.dtype)
