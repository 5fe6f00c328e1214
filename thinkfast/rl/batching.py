"""Rollouts -> packed training rows, and the module that scores them.

A rollout (prompt + response) is a training `Document` whose labels are the response tokens
(-100 on the prompt), so `training/packing.py` does the shift per document and restarts the
positions at each one (block-diagonal attention, SSM/conv resets).  A micro-batch is `rows` rows
(default one, unpadded) of up to `row_tokens` tokens each: its target positions, in row-major
order, are the response tokens of its rollouts, in order, which is how per-token tensors (old log-probs, advantages,
weights) line up with the model's output without any index bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from thinkfast.models.sequence import SequenceInfo
from thinkfast.rl.objective import token_logprobs
from thinkfast.training.data import IGNORE, Document
from thinkfast.training.packing import build_row, plan_rows


@dataclass
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]
    group: int  # index of its prompt within this process's batch
    reward: float = 0.0
    correct: bool = False
    formatted: bool = False
    finish_reason: str = ""
    advantage: float = 0.0
    old_logp: torch.Tensor | None = None  # (response tokens,) fp32, on CPU
    ref_logp: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    def document(self) -> Document:
        return Document(self.prompt_ids + self.response_ids, [IGNORE] * len(self.prompt_ids) + list(self.response_ids))


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (rows, L)
    position_ids: torch.Tensor  # (rows, L)
    targets: torch.Tensor  # (rows, L) shifted, IGNORE off the responses
    rollouts: list[int]  # indices (into the list given to `pack`) of its rollouts, row by row, in order

    def to(self, device) -> "MicroBatch":
        return MicroBatch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device), self.rollouts)


def pack(rollouts: list[Rollout], row_tokens: int, pad_id: int = 0, rows: int = 1) -> list[MicroBatch]:
    """Rollouts (in the given order) -> micro-batches of `rows` rows, each row at most
    max(row_tokens, longest rollout) tokens; rows of a micro-batch are right-padded to the longest
    (padding is its own masked run).  rows=1 (GPU default): one unpadded row per micro-batch."""
    if not rollouts:
        return []
    lengths = [r.length for r in rollouts]
    budget = max(row_tokens, max(lengths))  # never truncate a rollout
    planned = plan_rows(lengths, list(range(len(rollouts))), budget, packing=True)
    out = []
    for first in range(0, len(planned), rows):
        group = planned[first : first + rows]
        width = max(sum(lengths[i] for i in row) for row in group)
        built = [build_row([rollouts[i].document() for i in row], width, pad_id) for row in group]
        out.append(MicroBatch(
            torch.stack([b["input_ids"] for b in built]), torch.stack([b["position_ids"] for b in built]),
            torch.stack([b["targets"] for b in built]), [i for row in group for i in row],
        ))
    return out


def dummy_micro_batch(pad_id: int = 0) -> MicroBatch:
    """A two-token row with one trained position: lets a process with no data still run the
    forward/backward its DDP peers wait for (its loss weight is zero)."""
    return MicroBatch(torch.tensor([[pad_id, pad_id]]), torch.tensor([[0, 1]]), torch.tensor([[pad_id, IGNORE]]), [])


def per_token(rollouts: list[Rollout], batch: MicroBatch, attr: str) -> torch.Tensor:
    """Concatenate a per-token attribute (old_logp / ref_logp) of the row's rollouts, in row order."""
    return torch.cat([getattr(rollouts[i], attr) for i in batch.rollouts]) if batch.rollouts else torch.zeros(1)


class PolicyScorer(nn.Module):
    """forward(input_ids, position_ids, targets) -> (log-prob, entropy) at every trained position,
    of softmax(logits / T) with T the rollout temperature, so the ratio compares the distributions
    the tokens were actually sampled from (top-k / top-p truncation is not modelled).

    The one module DDP wraps: the policy's parameters are its parameters, unchanged (the engine
    keeps reading the same tensors)."""

    def __init__(self, model, chunk_tokens: int = 1024, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.temperature = temperature if temperature > 0 else 1.0  # the sampling distribution (greedy: T=1)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor):
        b, l = input_ids.shape
        seq = SequenceInfo.build(b, l, input_ids.device, position_ids=position_ids)
        hidden = self.model.hidden_states(input_ids, seq)
        mask = targets != IGNORE
        return token_logprobs(hidden[mask], self.model.head_weight(), targets[mask], self.chunk_tokens, self.temperature)
