"""Verifiable math reward: the evaluation grader decides correctness (extraction + equivalence cascade, docs/design.md §6).

    reward = correct_weight * [extracted answer equivalent to gold] + format_weight * [a complete \\boxed{...}]

Grading runs through `evaluation.grading.Grader`: cheap verdicts in process, the symbolic cascade
in worker processes with hard time-outs (a time-out scores 0), verdicts cached.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.evaluation.grading import Grader, extract_answer, last_boxed
from thinkfast.rl.config import RewardConfig


@dataclass
class Score:
    reward: float
    correct: bool
    formatted: bool


class MathReward:
    def __init__(self, cfg: RewardConfig | None = None, grader: Grader | None = None):
        self.cfg = cfg or RewardConfig()
        self.grader = grader or Grader(timeout=self.cfg.timeout, workers=self.cfg.workers, cache_path=self.cfg.cache)

    def __call__(self, golds: list[str], responses: list[str]) -> list[Score]:
        texts = [self.cfg.response_prefix + r for r in responses]
        answers = [extract_answer(t) for t in texts]
        verdicts = self.grader.equivalent_many(list(zip(golds, answers)), desc="reward")
        out = []
        for text, ok in zip(texts, verdicts):
            formatted = last_boxed(text) is not None
            out.append(Score(self.cfg.correct * ok + self.cfg.format * formatted, bool(ok), formatted))
        return out

    def close(self) -> None:
        self.grader.close()
