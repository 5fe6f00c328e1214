"""What each recipe trains: the modules the trainer wraps, and their teacher-side inputs.

    TokenLossTask   distill (reverse KL etc.), MOHAWK stage 3, sft (CE; no teacher)
    MohawkLayerTask MOHAWK stages 1 and 2: per-layer losses on the teacher's layer inputs
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from thinkfast.models.model import DecoderLayer
from thinkfast.models.sequence import SequenceInfo
from thinkfast.training.config import LossConfig
from thinkfast.training.losses import TERMS, token_loss_sum
from thinkfast.training.mohawk import DEFAULT_MATRIX_CHUNK, stage1_loss_sum, stage2_loss_sum, teacher_layer_io


def batch_seq(batch: dict) -> SequenceInfo:
    ids = batch["input_ids"]
    seq = SequenceInfo.build(ids.shape[0], ids.shape[1], ids.device, position_ids=batch["position_ids"])
    seq.block_masks = {}  # every training row has one shape: attention may use its compiled packed kernel
    return seq


def _save_student(student, directory: Path, state_dict: dict, tokenizer) -> None:
    state = {k[len("student.") :]: v for k, v in state_dict.items() if k.startswith("student.")}
    student.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))


class TokenLossModule(nn.Module):
    def __init__(self, student, loss: LossConfig):
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, batch: dict, teacher_out: dict | None):
        hidden = self.student.hidden_states(batch["input_ids"], batch_seq(batch))  # (b, L, d)
        total, _, sums = token_loss_sum(
            hidden,
            self.student.head_weight(),
            batch["targets"],
            self.loss.terms(),
            teacher_hidden=teacher_out["hidden"] if teacher_out else None,
            teacher_head=teacher_out["head"] if teacher_out else None,
            temperature=self.loss.temperature,
            chunk_tokens=self.loss.chunk_tokens,
            matmul_dtype=self.loss.matmul_dtype,
        )
        return total, torch.stack([sums.get(t, torch.zeros((), device=total.device)) for t in TERMS])


class TokenLossTask:
    term_names = TERMS
    block_types = (DecoderLayer,)

    def __init__(self, student, loss: LossConfig, teacher=None, tokenizer=None):
        """teacher: an all-attention ThinkfastForCausalLM (frozen) or None (CE only)."""
        needs_teacher = bool({"reverse_kl", "forward_kl"} & set(loss.terms()))
        if needs_teacher and teacher is None:
            raise ValueError("KL losses need a teacher")
        self.module = TokenLossModule(student, loss)
        self.teacher = teacher if needs_teacher else None
        self.tokenizer = tokenizer

    def count(self, batch: dict) -> int:
        return int((batch["targets"] != -100).sum())

    @torch.no_grad()
    def teacher_outputs(self, batch: dict):
        if self.teacher is None:
            return None
        hidden = self.teacher.hidden_states(batch["input_ids"], batch_seq(batch))
        return {"hidden": hidden, "head": self.teacher.head_weight()}

    def save_final(self, directory: Path, state_dict: dict) -> None:
        _save_student(self.module.student, directory, state_dict, self.tokenizer)


class MohawkLayerModule(nn.Module):
    def __init__(self, student, stage: int, layers: list[int], teacher_layers: list,
                 matrix_chunk: int = DEFAULT_MATRIX_CHUNK):
        super().__init__()
        self.student = student
        self.stage, self.layers = stage, list(layers)
        self.matrix_chunk = matrix_chunk  # stage 1: (row, head) matrices alive at a time (0: the whole layer)
        self._teacher_layers = tuple(teacher_layers)  # a tuple: not registered, never wrapped or trained

    def forward(self, batch: dict, teacher_out: dict):
        seq, valid = batch_seq(batch), batch["valid"]
        io = teacher_out["io"]
        total = torch.zeros((), device=valid.device)
        for i in self.layers:
            s_layer = self.student.model.layers[i]
            h_in, h_out = io[i]
            if self.stage == 1:
                part, _ = stage1_loss_sum(s_layer, self._teacher_layers[i], h_in, seq, valid, self.matrix_chunk)
            elif self.student.activation_checkpointing and torch.is_grad_enabled():
                # layers are independent: only one block's activations are alive in the backward
                part = checkpoint(lambda *a: stage2_loss_sum(*a)[0], s_layer, h_in, h_out, seq, valid, use_reentrant=False)
            else:
                part, _ = stage2_loss_sum(s_layer, h_in, h_out, seq, valid)
            total = total + part
        return total, total.detach()[None]


class MohawkLayerTask:
    """Stages 1-2. Trainable: stage 1 the mixer's in_proj/conv/decay; stage 2 the whole block."""

    term_names = ("layer_loss",)
    block_types = (DecoderLayer,)

    def __init__(self, student, teacher, stage: int, layers: list[int], tokenizer=None,
                 matrix_chunk: int = DEFAULT_MATRIX_CHUNK):
        self.teacher, self.stage, self.layers, self.tokenizer = teacher, stage, list(layers), tokenizer
        for p in student.parameters():
            p.requires_grad_(False)
        for i in self.layers:
            layer = student.model.layers[i]
            trainable = layer.mixer if stage == 1 else layer
            for p in trainable.parameters():
                p.requires_grad_(True)
            if stage == 1:  # the matrix does not depend on the output path: keep it out of the optimizer
                for name in ("out_proj", "D", "z_bias"):
                    for p in getattr(layer.mixer, name).parameters() if isinstance(getattr(layer.mixer, name), nn.Module) else [getattr(layer.mixer, name)]:
                        p.requires_grad_(False)
        self.module = MohawkLayerModule(student, stage, self.layers, list(teacher.model.layers), matrix_chunk)

    def no_decay(self, name: str) -> bool:
        """Stage 1 reaches only in_proj's B, C and a rows: its x and z rows get exactly zero gradient, which
        leaves them unchanged under Adam, but decoupled weight decay would still shrink them."""
        return self.stage == 1 and ".mixer.in_proj." in name

    def count(self, batch: dict) -> int:
        if self.stage == 1:  # one Frobenius norm per (row, head, layer)
            heads = self.teacher.config.num_attention_heads
            return batch["input_ids"].shape[0] * heads * len(self.layers)
        return int(batch["valid"].sum()) * len(self.layers)

    @torch.no_grad()
    def teacher_outputs(self, batch: dict):
        return {"io": teacher_layer_io(self.teacher, batch["input_ids"], batch_seq(batch))}

    def save_final(self, directory: Path, state_dict: dict) -> None:
        _save_student(self.module.student, directory, state_dict, self.tokenizer)
