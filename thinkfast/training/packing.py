"""Documents -> fixed-length rows, and the deterministic, resumable batch loader.

A row of length L holds whole documents back to back (packing) or one document
(no packing), then padding.  Per row:
    input_ids    (L,) long
    position_ids (L,) long   restart at 0 at each document (and for the padding run),
                             which the model turns into block-diagonal attention and
                             SSM/conv state resets (models/sequence.py)
    targets      (L,) long   targets[t] = label of token t+1 OF THE SAME DOCUMENT: the
                             shift is done here, once; the last token of a document,
                             padding and untrained tokens get -100
    valid        (L,) bool   real tokens (False on padding)
"""

from __future__ import annotations

import random
import warnings

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.training.data import IGNORE, Document


def shifted_targets(labels: list[int]) -> list[int]:
    """Position t predicts token t+1: targets = labels[1:] + [IGNORE] (nothing after the last token)."""
    return list(labels[1:]) + [IGNORE]


def plan_rows(lengths: list[int], order: list[int], seq_len: int, packing: bool) -> list[list[int]]:
    """Greedy: documents in `order` fill a row until the next does not fit (long ones are truncated)."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for idx in order:
        n = min(lengths[idx], seq_len)
        if current and (not packing or used + n > seq_len):
            rows.append(current)
            current, used = [], 0
        current.append(idx)
        used += n
    if current:
        rows.append(current)
    return rows


def build_row(docs: list[Document], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    ids: list[int] = []
    pos: list[int] = []
    tgt: list[int] = []
    for doc in docs:
        n = min(len(doc.input_ids), seq_len - len(ids))
        ids += doc.input_ids[:n]
        pos += range(n)
        tgt += shifted_targets(doc.labels[:n])
    real = len(ids)
    pad = seq_len - real
    ids += [pad_id] * pad
    pos += range(pad)
    tgt += [IGNORE] * pad
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "position_ids": torch.tensor(pos, dtype=torch.long),
        "targets": torch.tensor(tgt, dtype=torch.long),
        "valid": torch.arange(seq_len) < real,
    }


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # each (b, L)


def trains_within(doc: Document, seq_len: int) -> bool:
    """Whether the document has a trained target inside its first `seq_len` tokens (targets are shifted:
    position t predicts label t+1)."""
    return any(lab != IGNORE for lab in doc.labels[1:seq_len])


def check_lengths(docs: list[Document], seq_len: int, packing: bool) -> None:
    """Without packing every prompt must leave room for at least one trained token; with packing
    (long documents are truncated) at least some must, and a warning counts those that do not (the
    loader drops them: rows of them alone would be steps with nothing to train)."""
    if packing:
        lost = sum(d.prompt_length + 1 > seq_len for d in docs)
        if lost == len(docs):
            raise ThinkfastError(
                f"data.seq_len={seq_len} is shorter than every prompt + 1 response token, so nothing would be "
                f"trained: raise data.seq_len (the shortest prompt has {min(d.prompt_length for d in docs)} tokens)"
            )
        if lost:
            warnings.warn(f"{lost} of {len(docs)} documents have prompts of seq_len={seq_len} tokens or more and "
                          "would train on nothing (truncated): they are left out", stacklevel=2)
        return
    longest = max(d.prompt_length for d in docs)
    if longest + 1 > seq_len:
        raise ThinkfastError(
            f"data.seq_len={seq_len} is shorter than the longest prompt ({longest} tokens) + 1 response token, "
            f"and packing is off, so that example would train on nothing: raise data.seq_len to at least "
            f"{longest + 1} (or filter long prompts)"
        )


class PackedLoader:
    """Yields, per optimizer step, this rank's `grad_accum` micro-batches of `micro_batch_size` rows.

    The row stream is epoch after epoch, each epoch packed from a permutation drawn from
    (seed, epoch) alone, so a position (epoch, offset) fully determines what comes next.
    Global step g takes rows [g*G, (g+1)*G) of the epoch, G = micro * accum * world; row
    `m*world*micro + rank*micro + i` of that window goes to micro-batch m, rank `rank`.
    An epoch's tail shorter than G is skipped.
    """

    def __init__(
        self,
        docs: list[Document],
        seq_len: int,
        micro_batch_size: int = 1,
        grad_accum: int = 1,
        packing: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        pad_id: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not docs:
            raise ThinkfastError("no documents to train on")
        check_lengths(docs, seq_len, packing)
        docs = [d for d in docs if trains_within(d, seq_len)]  # untrainable documents only make empty steps
        if not docs:
            raise ThinkfastError(f"no document has a trained token within data.seq_len={seq_len}")
        self.docs, self.seq_len, self.packing, self.shuffle = docs, seq_len, packing, shuffle
        self.micro, self.accum, self.rank, self.world = micro_batch_size, grad_accum, rank, world_size
        self.seed, self.pad_id = seed, pad_id
        self.lengths = [len(d.input_ids) for d in docs]
        self.epoch, self.offset = 0, 0
        self._rows: tuple[int, list[list[int]]] | None = None
        if len(self.epoch_rows(0)) < self.global_rows:
            raise ThinkfastError(
                f"the data packs into {len(self.epoch_rows(0))} rows of {seq_len} tokens, fewer than one global "
                f"batch ({self.global_rows} rows = micro_batch_size x grad_accum x processes): add data or "
                "shrink the batch"
            )

    @property
    def global_rows(self) -> int:
        return self.micro * self.accum * self.world

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        if self._rows is None or self._rows[0] != epoch:
            order = list(range(len(self.docs)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._rows = (epoch, plan_rows(self.lengths, order, self.seq_len, self.packing))
        return self._rows[1]

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        rows = self.epoch_rows(self.epoch)
        if self.offset + self.global_rows > len(rows):
            self.epoch, self.offset = self.epoch + 1, 0
            rows = self.epoch_rows(self.epoch)
        window = rows[self.offset : self.offset + self.global_rows]
        self.offset += self.global_rows
        batches = []
        for m in range(self.accum):
            start = m * self.world * self.micro + self.rank * self.micro
            picked = window[start : start + self.micro]
            batches.append(collate([build_row([self.docs[i] for i in row], self.seq_len, self.pad_id) for row in picked]))
        return batches

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
