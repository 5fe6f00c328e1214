"""Batch grading: cheap in-process verdicts, cache, then the full cascade in a time-out pool."""

from __future__ import annotations

import os
from typing import Sequence

from thinkfast.evaluation.grading.cache import VerdictCache
from thinkfast.evaluation.grading.equivalence import fast_verdict, is_equivalent_pair
from thinkfast.evaluation.grading.pool import TimeoutPool


class Grader:
    """`equivalent_many([(gold, answer), ...]) -> [bool, ...]`. Time-outs count as not equivalent
    (and are not cached, so a rerun with a longer `timeout` retries them); see `self.timeouts`."""

    def __init__(
        self,
        timeout: float = 10.0,
        workers: int = 2,
        cache_path: str | os.PathLike | None = None,
        progress: bool = False,
        context: str = "fork",
    ):
        self.cache = VerdictCache(cache_path)
        self.pool = TimeoutPool(workers=workers, timeout=timeout, context=context)
        self.progress = progress
        self.timeouts = 0
        self.errors = 0

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()
        self.cache.close()

    def equivalent_many(self, pairs: Sequence[tuple[str, str | None]], desc: str = "grading") -> list[bool]:
        verdicts: dict[tuple[str, str | None], bool] = {}
        todo: list[tuple[str, str]] = []
        for pair in dict.fromkeys(pairs):  # unique, in order
            gold, answer = pair
            verdict = fast_verdict(gold, answer)
            if verdict is None:
                verdict = self.cache.get(gold, answer)  # type: ignore[arg-type]
            if verdict is None:
                todo.append(pair)  # type: ignore[arg-type]
            else:
                verdicts[pair] = verdict
        if todo:
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=desc, unit="pair")
            outcomes = self.pool.map(is_equivalent_pair, todo, on_done=bar.update if bar else None)
            if bar:
                bar.close()
            fresh = []
            for pair, outcome in zip(todo, outcomes):
                verdicts[pair] = bool(outcome.value) if outcome.ok else False
                self.timeouts += outcome.timed_out
                self.errors += outcome.error is not None
                if outcome.ok:
                    fresh.append((pair[0], pair[1], bool(outcome.value)))
            self.cache.put_many(fresh)
        return [verdicts[p] for p in pairs]

    def equivalent(self, gold: str, answer: str | None) -> bool:
        return self.equivalent_many([(gold, answer)])[0]
