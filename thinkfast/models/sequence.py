"""How the tokens of a (batch, length) input relate to each other.

One description serves training (packed documents), HF-style padded batches and
engine prefill (left-padded prompts):
  * position_ids restart at 0 at every document start;
  * `reset` marks document starts: recurrent state and conv windows are cleared there;
  * `doc_ids` numbers the documents of a row, so attention is block-diagonal causal.
When every row is one document starting at position 0, reset/doc_ids are None and
the mixers take their plain causal path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SequenceInfo:
    position_ids: torch.Tensor  # (b, l) long
    reset: torch.Tensor | None = None  # (b, l) bool, True at document starts (col 0 included)
    doc_ids: torch.Tensor | None = None  # (b, l) long
    valid_lengths: torch.Tensor | None = None  # (b,) real tokens per row when left-padded
    # training rows, whose (b, l) never changes: attention may run a kernel compiled for that shape and keeps
    # its block mask here, built once per forward (`ops.dispatch.attention`); None elsewhere (shapes vary)
    block_masks: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        batch: int,
        length: int,
        device: torch.device,
        position_ids: torch.Tensor | None = None,  # (b, l)
        attention_mask: torch.Tensor | None = None,  # (b, l) 1 = real token, 0 = padding
    ) -> "SequenceInfo":
        reset = torch.zeros(batch, length, dtype=torch.bool, device=device)
        reset[:, 0] = True
        valid_lengths = None
        if attention_mask is not None:
            mask = attention_mask.to(device=device, dtype=torch.bool)
            rising = mask[:, 1:] & ~mask[:, :-1]  # a real run starts after padding
            reset[:, 1:] |= rising
            if position_ids is None:
                position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
            valid_lengths = mask.long().sum(-1)
        if position_ids is None:
            position_ids = torch.arange(length, device=device).expand(batch, length)
        else:
            position_ids = position_ids.to(device)
            reset[:, 1:] |= position_ids[:, 1:] == 0
        if not bool(reset[:, 1:].any()):
            return cls(position_ids=position_ids, valid_lengths=valid_lengths)
        return cls(position_ids=position_ids, reset=reset, doc_ids=reset.long().cumsum(-1), valid_lengths=valid_lengths)

    @property
    def packed(self) -> bool:
        return self.reset is not None
