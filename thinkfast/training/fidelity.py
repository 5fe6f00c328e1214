"""How close a student is to its teacher, on held-out teacher text.

    kl_to_teacher    reverse KL(p_student || p_teacher), nats per token (the distillation objective)
    forward_kl       KL(p_teacher || p_student), nats per token
    top1_agreement   fraction of positions where both models' most likely next token is the same

Measured on the positions a training row would train (its `targets` != -100), in fp32 chunks
so (positions x vocab) never exists whole.  One number per model, comparable across students,
stages and runs with the same held-out file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thinkfast.training.tasks import batch_seq


@torch.no_grad()
def fidelity(student, teacher, batches: list[dict], chunk_tokens: int = 1024) -> dict:
    """-> {"kl_to_teacher", "forward_kl", "top1_agreement", "tokens"} over every target position."""
    was_training = student.training
    student.eval()
    device = student.head_weight().device
    totals = torch.zeros(3, dtype=torch.float64)  # reverse KL, forward KL, agreements
    n = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        seq = batch_seq(batch)
        keep = batch["targets"] != -100  # (b, L)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            h_s = student.hidden_states(batch["input_ids"], seq)[keep]  # (N, d)
            h_t = teacher.hidden_states(batch["input_ids"], seq)[keep]
        w_s, w_t = student.head_weight().float(), teacher.head_weight().float()
        for start in range(0, h_s.shape[0], chunk_tokens):
            logp = torch.log_softmax(h_s[start : start + chunk_tokens].float() @ w_s.T, dim=-1)  # (c, V)
            logq = torch.log_softmax(h_t[start : start + chunk_tokens].float() @ w_t.T, dim=-1)
            totals[0] += float((logp.exp() * (logp - logq)).sum())
            totals[1] += float((logq.exp() * (logq - logp)).sum())
            totals[2] += float((logp.argmax(-1) == logq.argmax(-1)).sum())
        n += int(keep.sum())
    student.train(was_training)
    n = max(n, 1)
    return {"kl_to_teacher": totals[0].item() / n, "forward_kl": totals[1].item() / n,
            "top1_agreement": totals[2].item() / n, "tokens": n}


class FidelityLog:
    """`<dir>/fidelity.json`: the measurements of one training run, written as they are made.

    A resumed run keeps what an earlier process measured (the "init" point is never re-measured
    on a half-trained model).
    """

    def __init__(self, directory: str | Path, enabled: bool = True):
        self.path = Path(directory) / "fidelity.json"
        self.enabled = enabled
        self.data: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def has(self, key: str) -> bool:
        return key in self.data

    def record(self, key: str, value) -> None:
        self.data[key] = value
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
