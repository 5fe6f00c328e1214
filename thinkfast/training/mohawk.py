"""MOHAWK stage-1 and stage-2 losses (docs/design.md §3.2), each layer fed the TEACHER's layer input.

Stage 1: || M_student - A_teacher ||_F per (row, head), where M is the student's materialised
         mixer matrix (docs/design.md §1.5, without the D skip) and A the teacher's softmax attention matrix
         of the same layer, both restricted to same-document causal pairs of real tokens.
Stage 2: || block_student(h) - block_teacher(h) ||_2 per real token, h the teacher's layer input.
Both return (sum, count) so the caller can average over every process and micro-batch.
Inputs are detached teacher states, so layers get independent gradients (no error propagation).
Stage 1 materialises (row, head, L, L) matrices; `Stage1Loss` bounds that memory to a chunk of
(row, head) pairs in forward and backward, whatever the number of layers.
"""

from __future__ import annotations

import math

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.models.sequence import SequenceInfo
from thinkfast.ops.reference import discrete_mamba2_mixer_matrix, repeat_kv

# stage 1: (row, head) L x L matrices built at a time; ~10 fp32 L x L tensors each are alive in the
# backward, so 32 pairs at L = 2048 take ~5 GiB whatever the batch, heads or layers
DEFAULT_MATRIX_CHUNK = 32


def pair_mask(seq: SequenceInfo, valid: torch.Tensor) -> torch.Tensor:
    """(b, L, L) bool: i attends j (j <= i, same document, both real tokens)."""
    b, L = valid.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    mask = causal[None] & valid[:, :, None] & valid[:, None, :]
    if seq.doc_ids is not None:
        mask &= seq.doc_ids[:, :, None] == seq.doc_ids[:, None, :]
    return mask


@torch.no_grad()
def teacher_layer_io(teacher, input_ids: torch.Tensor, seq: SequenceInfo) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every block of an all-attention ThinkfastForCausalLM, each (b, L, d)."""
    h = teacher.model.embed_tokens(input_ids)
    io = []
    for layer in teacher.model.layers:
        out = layer(h, seq)
        io.append((h, out))
        h = out
    return io


@torch.no_grad()
def teacher_qk(attn_mixer, x: torch.Tensor, seq: SequenceInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Roped q and k (kv heads repeated), each (b, H, L, hd) in fp32, of an AttentionMixer on its normed input."""
    q, k, _ = attn_mixer._qkv(x.to(attn_mixer.q_proj.weight.dtype), seq.position_ids)  # (b, H, L, hd), (b, Hkv, L, hd)
    return q.float(), repeat_kv(k, q.shape[1] // k.shape[1]).float()


@torch.no_grad()
def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention (..., L, L) from q, k (..., L, hd) under a bool mask broadcastable to it."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)  # rows with no real key (padding) -> 0


@torch.no_grad()
def attention_matrix(attn_mixer, x: torch.Tensor, seq: SequenceInfo, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention probabilities (b, H, L, L) of an AttentionMixer on its (normed) input x."""
    q, k = teacher_qk(attn_mixer, x, seq)
    return attention_probs(q, k, mask[:, None])


def _check_mixer(mixer) -> None:
    if not hasattr(mixer, "mixer_inputs"):
        raise ThinkfastError(
            f"MOHAWK stage 1 needs a mixer with a materialised matrix (discrete_mamba2); layer has {type(mixer).__name__}"
        )


def _student_gbc(student_layer, h_in: torch.Tensor, seq: SequenceInfo):
    """The student's log decay g (b, L, h) and B, C (b, L, h, n): all its mixer matrix depends on."""
    _, g, B, C, _ = student_layer.mixer.mixer_inputs(student_layer.input_layernorm(h_in), seq)
    return g, B, C


def _teacher_qk_of(teacher_layer, h_in: torch.Tensor, seq: SequenceInfo):
    with torch.autocast(h_in.device.type, enabled=False):
        return teacher_qk(teacher_layer.mixer, teacher_layer.input_layernorm(h_in.float()).float(), seq)


def _check_heads(g: torch.Tensor, q: torch.Tensor) -> None:
    if g.shape[-1] != q.shape[1]:
        raise ThinkfastError(
            f"stage 1 compares per-head matrices: student has {g.shape[-1]} heads, teacher {q.shape[1]}; "
            "use n_v_heads = the teacher's attention heads"
        )


def stage1_loss_sum(student_layer, teacher_layer, h_in: torch.Tensor, seq: SequenceInfo, valid: torch.Tensor,
                    chunk: int = 0):
    """Frobenius distance summed over (row, head); -> (sum, count).

    chunk = 0: every (row, head) matrix of the layer in one autograd graph (~5 fp32 (b, h, L, L) tensors
    saved for the backward).  chunk > 0: `Stage1Loss`, at most `chunk` (row, head) matrices alive at a
    time in the forward and in the backward; same loss and gradients.
    """
    _check_mixer(student_layer.mixer)
    if chunk > 0:
        loss = Stage1Loss.loss(student_layer, teacher_layer, h_in, seq, valid, chunk)
        return loss, h_in.shape[0] * student_layer.mixer.n_v
    mask = pair_mask(seq, valid)
    g, B, C = _student_gbc(student_layer, h_in, seq)
    q, k = _teacher_qk_of(teacher_layer, h_in, seq)
    _check_heads(g, q)
    with torch.autocast(h_in.device.type, enabled=False):  # the matrices in fp32
        M = discrete_mamba2_mixer_matrix(g.float(), B.float(), C.float())  # (b, h, L, L)
        A = attention_probs(q, k, mask[:, None])
    diff = (M - A) * mask[:, None]
    norms = diff.pow(2).sum((-1, -2)).clamp_min(1e-20).sqrt()  # (b, h)
    return norms.sum(), norms.numel()


def _pair_norms(g, B, C, q, k, mask, heads: int, start: int, end: int) -> torch.Tensor:
    """Frobenius norms of (M - A) for flattened (row, head) pairs [start, end); g (P, L), B/C/q/k (P, L, n)."""
    rows = torch.arange(start, end, device=g.device) // heads
    m = mask.index_select(0, rows)  # (c, L, L)
    M = discrete_mamba2_mixer_matrix(g[start:end, :, None], B[start:end, :, None], C[start:end, :, None])[:, 0]
    A = attention_probs(q[start:end], k[start:end], m)
    return ((M - A) * m).pow(2).sum((-1, -2)).clamp_min(1e-20).sqrt()


def _flat_pairs(g, B, C):
    """(b, L, h), (b, L, h, n) -> one fp32 entry per (row, head) pair: (b*h, L), (b*h, L, n)."""
    b, L, h = g.shape
    g = g.float().permute(0, 2, 1).reshape(b * h, L)
    B = B.float().permute(0, 2, 1, 3).reshape(b * h, L, -1)
    C = C.float().permute(0, 2, 1, 3).reshape(b * h, L, -1)
    return g, B, C


class Stage1Loss(torch.autograd.Function):
    """One layer's stage-1 loss with memory bounded by `chunk` (row, head) matrices.

    Forward: the loss without any graph.  Backward: recompute the student's (g, B, C) with their graph,
    then per chunk rebuild M and A, backpropagate into (g, B, C), free the chunk; finally one backward
    from (g, B, C) into the layer's parameters.  The parameters are explicit inputs, so DDP's hooks and
    the trainer's single `.backward()` see an ordinary graph (no trainer changes, no retained L x L).
    """

    @staticmethod
    def loss(student_layer, teacher_layer, h_in, seq, valid, chunk: int) -> torch.Tensor:
        params = [p for p in student_layer.parameters() if p.requires_grad]
        ctx_args = (student_layer, teacher_layer, seq, valid, chunk)
        return Stage1Loss.apply(ctx_args, h_in.detach(), *params)

    @staticmethod
    def _run(args, h_in, grad_scale=None, params=()):
        """grad_scale None: the loss (no graph).  Else: gradients of grad_scale * loss w.r.t. params."""
        student_layer, teacher_layer, seq, valid, chunk = args
        mask = pair_mask(seq, valid)
        q, k = _teacher_qk_of(teacher_layer, h_in, seq)
        g, B, C = _student_gbc(student_layer, h_in, seq)
        _check_heads(g, q)
        b, L, heads = g.shape
        q, k = q.reshape(b * heads, L, -1), k.reshape(b * heads, L, -1)
        chunks = [(s, min(s + chunk, b * heads)) for s in range(0, b * heads, chunk)]
        with torch.autocast(h_in.device.type, enabled=False):
            if grad_scale is None:
                flat = _flat_pairs(g, B, C)
                return sum(_pair_norms(*flat, q, k, mask, heads, s, e).sum() for s, e in chunks)
            # detached leaves: each chunk's graph (its L x L tensors) is freed by its own backward
            leaves = [t.detach().requires_grad_() for t in _flat_pairs(g.detach(), B.detach(), C.detach())]
            for s, e in chunks:
                (_pair_norms(*leaves, q, k, mask, heads, s, e).sum() * grad_scale).backward()
        grad_g = leaves[0].grad.view(b, heads, L).permute(0, 2, 1)
        grad_B, grad_C = (t.grad.view(b, heads, L, -1).permute(0, 2, 1, 3) for t in leaves[1:])
        return torch.autograd.grad((g, B, C), params, (grad_g, grad_B, grad_C), allow_unused=True)

    @staticmethod
    def forward(ctx, args, h_in, *params):
        device = h_in.device.type
        ctx.args = args
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(h_in)
        ctx.params = params
        with torch.no_grad():
            return Stage1Loss._run(args, h_in)

    @staticmethod
    def backward(ctx, grad_out):
        (h_in,) = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            grads = Stage1Loss._run(ctx.args, h_in, grad_scale=grad_out, params=ctx.params)
        return (None, None, *grads)


def stage2_loss_sum(student_layer, h_in: torch.Tensor, h_out: torch.Tensor, seq: SequenceInfo, valid: torch.Tensor):
    """L2 distance of block outputs summed over real tokens; -> (sum, count)."""
    out = student_layer(h_in, seq)
    dist = (out.float() - h_out.float()).pow(2).sum(-1).clamp_min(1e-20).sqrt()  # (b, L)
    return (dist * valid).sum(), int(valid.sum())
