"""MOHAWK stage-1 and stage-2 losses (SPEC 3.2), each layer fed the TEACHER's layer input.

Stage 1: || M_student - A_teacher ||_F per (row, head), where M is the student's materialised
         mixer matrix (SPEC 1.5, without the D skip) and A the teacher's softmax attention matrix
         of the same layer, both restricted to same-document causal pairs of real tokens.
Stage 2: || block_student(h) - block_teacher(h) ||_2 per real token, h the teacher's layer input.
Both return (sum, count) so the caller can average over every process and micro-batch.
Inputs are detached teacher states, so layers get independent gradients (no error propagation).
"""

from __future__ import annotations

import math

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.models.sequence import SequenceInfo
from thinkfast.ops.reference import discrete_mamba2_mixer_matrix, repeat_kv


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
def attention_matrix(attn_mixer, x: torch.Tensor, seq: SequenceInfo, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention probabilities (b, H, L, L) of an AttentionMixer on its (normed) input x."""
    q, k, _ = attn_mixer._qkv(x.to(attn_mixer.q_proj.weight.dtype), seq.position_ids)  # (b, H, L, hd), (b, Hkv, L, hd)
    k = repeat_kv(k, q.shape[1] // k.shape[1])
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)  # rows with no real key (padding) -> 0


def stage1_loss_sum(student_layer, teacher_layer, h_in: torch.Tensor, seq: SequenceInfo, valid: torch.Tensor):
    """Frobenius distance summed over (row, head); -> (sum, count)."""
    mixer = student_layer.mixer
    if not hasattr(mixer, "mixer_inputs"):
        raise ThinkfastError(
            f"MOHAWK stage 1 needs a mixer with a materialised matrix (discrete_mamba2); layer has {type(mixer).__name__}"
        )
    mask = pair_mask(seq, valid)
    _, g, B, C, _ = mixer.mixer_inputs(student_layer.input_layernorm(h_in), seq)
    with torch.autocast(h_in.device.type, enabled=False):  # the matrices in fp32
        M = discrete_mamba2_mixer_matrix(g.float(), B.float(), C.float())  # (b, h, L, L)
        A = attention_matrix(teacher_layer.mixer, teacher_layer.input_layernorm(h_in.float()).float(), seq, mask)
    if M.shape != A.shape:
        raise ThinkfastError(
            f"stage 1 compares per-head matrices: student has {M.shape[1]} heads, teacher {A.shape[1]}; "
            "use n_v_heads = the teacher's attention heads"
        )
    diff = (M - A) * mask[:, None]
    norms = diff.pow(2).sum((-1, -2)).clamp_min(1e-20).sqrt()  # (b, h)
    return norms.sum(), norms.numel()


def stage2_loss_sum(student_layer, h_in: torch.Tensor, h_out: torch.Tensor, seq: SequenceInfo, valid: torch.Tensor):
    """L2 distance of block outputs summed over real tokens; -> (sum, count)."""
    out = student_layer(h_in, seq)
    dist = (out.float() - h_out.float()).pow(2).sum(-1).clamp_min(1e-20).sqrt()  # (b, L)
    return (dist * valid).sum(), int(valid.sum())
