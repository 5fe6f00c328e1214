"""Process reward models: per-step scores of a solution and their aggregation.

RLHFlow format: the solution is split into steps on blank lines; the conversation is
[user: question + " " + step 1, assistant: "+", user: step 2, assistant: "+", ...] through the
PRM's chat template; a step's score is P("+") / (P("+") + P("-")) at the position of its "+" reply.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol, Sequence

import torch

from thinkfast.errors import ThinkfastError

Aggregation = Literal["last", "min", "prod", "mean"]


class ProcessRewardModel(Protocol):
    def score_steps(self, questions: Sequence[str], solutions: Sequence[str]) -> list[list[float]]:
        """Per solution, one score in [0, 1] per step."""
        ...


def split_steps(solution: str) -> list[str]:
    steps = [s.strip() for s in solution.split("\n\n")]
    return [s for s in steps if s] or [solution.strip() or "(empty)"]


def aggregate(step_scores: Sequence[float], how: Aggregation = "last") -> float:
    if not step_scores:
        raise ThinkfastError("no step scores to aggregate")
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ThinkfastError(f"unknown PRM aggregation {how!r}; use last, min, prod or mean")


class RLHFlowPRM:
    """A causal-LM PRM scored in batches of `batch_size` conversations (right padded, one forward each)."""

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int = 8, device: str | torch.device = "cpu",
        good_token: str = "+", bad_token: str = "-", max_steps: int | None = None,
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.device = torch.device(device)
        self.max_steps = max_steps
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in (good_token, bad_token)]
        if any(len(i) != 1 for i in ids):
            raise ThinkfastError(f"PRM tokens {good_token!r}/{bad_token!r} must each be one token, got {ids}")
        self.good_id, self.bad_id = ids[0][0], ids[1][0]
        if not getattr(tokenizer, "chat_template", None):
            raise ThinkfastError("the PRM tokenizer needs a chat template (RLHFlow PRMs are chat models)")

    def _encode(self, question: str, solution: str) -> tuple[list[int], list[int]]:
        """Token ids of the whole conversation and the position of each step's "+" token."""
        steps = split_steps(solution)
        if self.max_steps:
            steps = steps[: self.max_steps]
        messages: list[dict[str, str]] = []
        positions = []
        for i, step in enumerate(steps):
            messages.append({"role": "user", "content": f"{question} {step}" if i == 0 else step})
            prefix = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            positions.append(len(self.tokenizer.encode(prefix, add_special_tokens=False)))
            messages.append({"role": "assistant", "content": "+"})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if any(p >= len(ids) or ids[p] != self.good_id for p in positions):
            raise ThinkfastError("could not locate the '+' step markers in the PRM conversation; check its chat template")
        return ids, positions

    @torch.no_grad()
    def score_steps(self, questions: Sequence[str], solutions: Sequence[str]) -> list[list[float]]:
        if len(questions) != len(solutions):
            raise ThinkfastError("score_steps needs one question per solution")
        encoded = [self._encode(q, s) for q, s in zip(questions, solutions)]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[list[float]] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            length = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), length), pad, dtype=torch.long)  # (B, T), right padded
            mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for b, (ids, _) in enumerate(chunk):
                input_ids[b, : len(ids)] = torch.tensor(ids)
                mask[b, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            pair = logits[..., [self.good_id, self.bad_id]].float().softmax(-1)[..., 0]  # (B, T) P(+ | +,-)
            for b, (_, positions) in enumerate(chunk):
                # the logits predicting the marker token sit one position before it
                out.append(pair[b, [p - 1 for p in positions]].tolist())
        return out

    def score(self, questions: Sequence[str], solutions: Sequence[str], how: Aggregation = "last") -> list[float]:
        return [aggregate(s, how) for s in self.score_steps(questions, solutions)]
