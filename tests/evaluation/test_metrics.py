"""pass@k vs the combinatorial formula; maj@k / BoN@k / weighted BoN@k vs brute-force subset enumeration."""

import itertools
import math
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest

from thinkfast.errors import ThinkfastError
from thinkfast.evaluation.metrics import ProblemSamples, all_metrics, pass_at_k, subset_metric


def test_pass_at_k_matches_combinatorial_formula_exhaustively():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n():
    exact = 1 - Fraction(math.comb(1000 - 3, 500), math.comb(1000, 500))
    assert pass_at_k(1000, 3, 500) == pytest.approx(float(exact), rel=1e-12)
    with pytest.raises(ThinkfastError):
        pass_at_k(4, 5, 1)


def _brute(problem: ProblemSamples, k: int, rule: str) -> float:
    """Independent reference: enumerate all subsets; random tie-breaks counted as fractional credit."""
    totals = []
    for subset in itertools.combinations(range(problem.n), k):
        if rule == "bon":
            best = max(problem.score[i] for i in subset)
            tied = [i for i in subset if problem.score[i] == best]
            totals.append(sum(problem.correct[i] for i in tied) / len(tied))
            continue
        weight, first = defaultdict(float), {}
        for i in subset:
            c = int(problem.cluster[i])
            if c < 0:
                continue
            weight[c] += 1.0 if rule == "maj" else problem.score[i]
        for i in range(problem.n):  # a cluster's correctness = its first member's
            first.setdefault(int(problem.cluster[i]), bool(problem.correct[i]))
        if not weight:
            totals.append(0.0)
            continue
        best = max(weight.values())
        tied = [c for c, w in weight.items() if w == best]
        totals.append(sum(first[c] for c in tied) / len(tied))
    return sum(totals) / len(totals)


def _random_problems(seed: int, count: int = 6, n: int = 7) -> list[ProblemSamples]:
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        cluster = rng.integers(-1, 3, size=n)  # -1 = no answer, 3 clusters
        good = rng.integers(0, 3)
        correct = cluster == good
        score = rng.choice([0.1, 0.3, 0.5, 0.9], size=n)  # repeated values exercise ties
        problems.append(ProblemSamples(correct=correct, cluster=cluster, score=score))
    return problems


@pytest.mark.parametrize("rule", ["maj", "bon", "wbon"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subset_metrics_match_brute_force(rule, seed):
    problems = _random_problems(seed)
    for k in range(1, 8):
        expected = np.mean([_brute(p, k, rule) for p in problems])
        exact = subset_metric(problems, k, rule)
        assert exact.exact
        assert exact.mean == pytest.approx(expected, abs=1e-12), (rule, k)
        sampled = subset_metric(problems, k, rule, trials=3000, seed=seed, force_random=True)
        assert not sampled.exact
        # random subsets converge to the enumeration; the std is the spread of one draw's dataset score
        assert sampled.mean == pytest.approx(expected, abs=4 * sampled.std / math.sqrt(3000) + 1e-9), (rule, k)
        assert sampled.std == pytest.approx(exact.std, rel=0.15, abs=1e-9)


def test_subsets_are_random_not_first_k():
    # the first 2 samples agree on a correct answer, the other 6 agree on a wrong one
    cluster = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    problem = ProblemSamples(correct=cluster == 0, cluster=cluster, score=np.ones(8))
    result = subset_metric([problem], 2, "maj", trials=500, seed=0, force_random=True)
    # P(both correct) = 1/28; a tie (1 and 1) gives 1/2 credit: 12/28 * 1/2 -> 7/28 = 0.25
    assert result.mean == pytest.approx(7 / 28, abs=0.05)
    assert subset_metric([problem], 2, "maj").mean == pytest.approx(7 / 28, abs=1e-12)


def test_all_metrics_skips_large_k_and_missing_scores():
    problems = [ProblemSamples(correct=np.array([True, False, False]), cluster=np.array([0, 1, 1]))]
    out = all_metrics(problems, [1, 2, 4])
    assert set(out) == {"pass", "maj"}
    assert set(out["pass"]) == {1, 2}
    assert out["pass"][1].mean == pytest.approx(1 / 3)
    assert out["maj"][2].mean == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)  # {0,1} tie, {0,2} tie, {1,2} wrong
    with pytest.raises(ThinkfastError, match="PRM"):
        subset_metric(problems, 1, "wbon")
