"""Per-slot decode state for a whole model: KV for attention layers, conv + SSM state for Mamba layers.

The engine allocates one InferenceState for a pool of slots; a request owns a slot
from prefill to its last token.  Tensors are indexed by slot in their first dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InferenceState:
    layers: list[dict[str, torch.Tensor]]  # per layer: name -> (slots, ...) tensor
    lengths: torch.Tensor  # (slots,) long: tokens already in each slot's context
    max_len: int  # attention cache capacity per slot (tokens)

    @property
    def num_slots(self) -> int:
        return self.lengths.shape[0]

    def copy_slots(self, src: torch.Tensor, dst: torch.Tensor, upto: int | None = None) -> None:
        """Fork: slot dst[i] becomes a copy of slot src[i] (prompt prefilled once, sampled N times).

        `upto`: copy only the first `upto` cached positions of the KV tensors (enough when no
        source slot holds more tokens); the rest of a slot's KV is never read before it is written.
        """
        for layer in self.layers:
            for name, tensor in layer.items():
                if upto is not None and name in ("k", "v"):
                    tensor[dst, :, :upto] = tensor[src, :, :upto]
                else:
                    tensor[dst] = tensor[src]
        self.lengths[dst] = self.lengths[src]

    def clear_slots(self, slots: torch.Tensor) -> None:
        for layer in self.layers:
            for tensor in layer.values():
                tensor[slots] = 0
        self.lengths[slots] = 0

    def bytes_per_slot(self) -> dict[str, int]:
        """Decode-state bytes per sequence, split into KV (attention) and recurrent (Mamba) state."""
        kv = recurrent = 0
        for layer in self.layers:
            for name, tensor in layer.items():
                nbytes = tensor[0].numel() * tensor.element_size()
                if name in ("k", "v"):
                    kv += nbytes
                else:
                    recurrent += nbytes
        return {"kv": kv, "recurrent": recurrent}
