"""Test-time scaling metrics: unbiased pass@k; maj@k, BoN@k, weighted BoN@k over subsets of size k.

Subset metrics are estimated over `trials` random subsets drawn without replacement (mean ± std of
the dataset score over trials), or computed exactly over all C(n, k) subsets when that is small.
Ties between winning answers get fractional credit (the expectation of a random tie-break), so
both paths are deterministic given the seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from thinkfast.errors import ThinkfastError

Rule = Literal["maj", "bon", "wbon"]
RULES: tuple[Rule, ...] = ("maj", "bon", "wbon")


@dataclass
class ProblemSamples:
    """One problem's n samples."""

    correct: np.ndarray  # (n,) bool: the sample's answer matches the gold
    cluster: np.ndarray  # (n,) int: equivalence-cluster id of the answer, -1 when no answer
    score: np.ndarray | None = None  # (n,) float PRM scores (needed by bon / wbon)

    @property
    def n(self) -> int:
        return len(self.correct)

    def cluster_correct(self) -> np.ndarray:
        """(C,) bool: a cluster is correct when its first member is (members are equivalent)."""
        num = int(self.cluster.max()) + 1 if (self.cluster >= 0).any() else 0
        out = np.zeros(num, dtype=bool)
        for c in range(num):  # ids may have gaps: an unused id is an empty, never-winning cluster
            members = np.flatnonzero(self.cluster == c)
            out[c] = bool(self.correct[members[0]]) if len(members) else False
        return out


@dataclass
class MetricResult:
    mean: float
    std: float  # std of the dataset score over random subset draws (0 for pass@k)
    exact: bool  # computed over all subsets (or in closed form)
    # (problems,) each problem's own value, whose mean is `mean`: what a bootstrap over problems resamples
    per_problem: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k) as the stable product 1 - prod_{i=n-c+1..n} (1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ThinkfastError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def coverage(problems: Sequence[ProblemSamples], k: int) -> MetricResult:
    """Mean unbiased pass@k over problems."""
    values = np.array([pass_at_k(p.n, int(p.correct.sum()), k) for p in problems])
    return MetricResult(float(np.mean(values)), 0.0, True, values)


def subset_scores(mask: np.ndarray, problem: ProblemSamples, rule: Rule) -> np.ndarray:
    """Score in [0, 1] of each subset. mask: (S, n) bool, k True per row -> (S,) float."""
    m = mask.astype(float)  # (S, n)
    if rule == "bon":
        if problem.score is None:
            raise ThinkfastError("BoN needs PRM scores; configure a PRM or drop 'bon' from the metrics")
        s = np.where(mask, problem.score[None, :], -np.inf)  # (S, n)
        winners = s == s.max(axis=1, keepdims=True)  # (S, n)
        return (winners & problem.correct[None, :]).sum(1) / winners.sum(1)
    valid = problem.cluster >= 0
    cc = problem.cluster_correct()  # (C,)
    if len(cc) == 0:
        return np.zeros(len(mask))
    onehot = np.zeros((problem.n, len(cc)))  # (n, C)
    onehot[np.flatnonzero(valid), problem.cluster[valid]] = 1.0
    votes = m @ onehot  # (S, C) members of each cluster in the subset
    if rule == "maj":
        weight = votes
    elif rule == "wbon":
        if problem.score is None:
            raise ThinkfastError("weighted BoN needs PRM scores; configure a PRM or drop 'wbon' from the metrics")
        weight = m @ (onehot * problem.score[:, None])  # (S, C) PRM-score sum per cluster
    else:
        raise ThinkfastError(f"unknown rule {rule!r}; use one of {RULES}")
    weight = np.where(votes > 0, weight, -np.inf)
    best = weight.max(axis=1, keepdims=True)  # (S, 1)
    winners = (weight == best) & (votes > 0)  # (S, C)
    n_win = winners.sum(1)
    credit = (winners & cc[None, :]).sum(1)
    return np.where(n_win > 0, credit / np.maximum(n_win, 1), 0.0)


def _all_subsets(n: int, k: int) -> np.ndarray:
    combos = np.array(list(itertools.combinations(range(n), k)))  # (C(n,k), k)
    mask = np.zeros((len(combos), n), dtype=bool)
    mask[np.arange(len(combos))[:, None], combos] = True
    return mask


def _random_subsets(rng: np.random.Generator, n: int, k: int, trials: int) -> np.ndarray:
    order = np.argsort(rng.random((trials, n)), axis=1)[:, :k]  # uniform k-subsets, no replacement
    mask = np.zeros((trials, n), dtype=bool)
    mask[np.arange(trials)[:, None], order] = True
    return mask


def subset_metric(
    problems: Sequence[ProblemSamples],
    k: int,
    rule: Rule,
    trials: int = 100,
    seed: int = 0,
    exact_limit: int = 2000,
    force_random: bool = False,
) -> MetricResult:
    """maj@k / BoN@k / weighted BoN@k averaged over problems.

    Exact (all C(n, k) subsets) when every problem has C(n, k) <= exact_limit and not `force_random`;
    then std is the exact std of the dataset mean under one random draw per problem.
    Otherwise `trials` random draws: mean and std of the dataset score over the trials."""
    if not problems:
        raise ThinkfastError("no problems to score")
    if any(k > p.n or k < 1 for p in problems):
        raise ThinkfastError(f"k={k} is outside 1..n for some problem (fewest samples: {min(p.n for p in problems)})")
    if not force_random and all(math.comb(p.n, k) <= exact_limit for p in problems):
        means, variances = [], []
        for p in problems:
            s = subset_scores(_all_subsets(p.n, k), p, rule)
            means.append(s.mean())
            variances.append(s.var())
        return MetricResult(float(np.mean(means)), float(math.sqrt(sum(variances)) / len(problems)), True,
                            np.array(means))
    rng = np.random.default_rng([seed, k, RULES.index(rule)])
    draws = np.stack([subset_scores(_random_subsets(rng, p.n, k, trials), p, rule) for p in problems])  # (P, trials)
    per_trial = draws.mean(0)  # (trials,) dataset score of each draw
    return MetricResult(float(per_trial.mean()), float(per_trial.std()), False, draws.mean(1))


def all_metrics(
    problems: Sequence[ProblemSamples],
    ks: Sequence[int],
    rules: Sequence[str] = ("pass", "maj", "bon", "wbon"),
    trials: int = 100,
    seed: int = 0,
    exact_limit: int = 2000,
) -> dict[str, dict[int, MetricResult]]:
    """{metric: {k: result}} for every k <= the smallest n; bon/wbon skipped when scores are missing."""
    n_min = min(p.n for p in problems)
    has_scores = all(p.score is not None for p in problems)
    out: dict[str, dict[int, MetricResult]] = {}
    for rule in rules:
        if rule in ("bon", "wbon") and not has_scores:
            continue
        out[rule] = {}
        for k in ks:
            if k > n_min:
                continue
            if rule == "pass":
                out[rule][k] = coverage(problems, k)
            else:
                out[rule][k] = subset_metric(problems, k, rule, trials, seed, exact_limit)  # type: ignore[arg-type]
    return out
