"""95% intervals by bootstrap over problems: per model, and paired (student ÷ teacher, time-budget wins)."""

import time

import numpy as np
import pytest

from thinkfast.evaluation import uncertainty
from thinkfast.evaluation.metrics import ProblemSamples, all_metrics
from thinkfast.pipeline.config import RunConfig
from thinkfast.pipeline.summary import budget_wins, pareto_fraction, pareto_fraction_ci, ratios, run_summary

KS = [1, 2, 4, 8]


def _problems(seed: int, count: int, rate: float, n: int = 8) -> list[ProblemSamples]:
    """Problems of varying difficulty around `rate`; wrong answers spread over 3 clusters."""
    rng = np.random.default_rng(seed)
    out = []
    for p in rng.beta(4 * rate, 4 * (1 - rate), size=count):
        correct = rng.random(n) < p
        out.append(ProblemSamples(correct=correct, cluster=np.where(correct, 0, rng.integers(1, 4, size=n))))
    return out


def _score(problems: list[ProblemSamples], seconds_per_sample: float) -> dict:
    """A model's entry of scores.json, as the eval's score step writes it."""
    from thinkfast.evaluation.pipeline import _metric_entry

    results = all_metrics(problems, KS, ["pass", "maj"])
    return {
        "problems": len(problems),
        "seconds": {str(k): k * seconds_per_sample for k in KS},
        "metrics": {m: {str(k): _metric_entry(r) for k, r in per_k.items()} for m, per_k in results.items()},
        "per_problem": {"problem_ids": [f"p{i}" for i in range(len(problems))],
                        "values": {m: {str(k): r.per_problem.tolist() for k, r in per_k.items()}
                                   for m, per_k in results.items()}},
    }


def test_interval_contains_the_point_estimate():
    results = all_metrics(_problems(0, 100, 0.3), KS, ["pass", "maj"])
    for per_k in results.values():
        for r in per_k.values():
            assert r.per_problem.mean() == pytest.approx(r.mean, abs=1e-12)
            lo, hi = uncertainty.mean_interval(r.per_problem)
            assert lo < r.mean < hi


def test_interval_narrows_with_more_problems():
    widths = []
    for count in (50, 200, 800):
        values = all_metrics(_problems(1, count, 0.3), [1], ["pass"])["pass"][1].per_problem
        lo, hi = uncertainty.mean_interval(values)
        widths.append(hi - lo)
    assert widths[0] > 1.5 * widths[1] > 1.5 * 1.5 * widths[2]  # about 1/sqrt(problems): 2x per 4x problems


def test_a_model_against_itself_is_exactly_one():
    score = _score(_problems(2, 60, 0.3), 1.0)
    values, intervals = ratios(score, score)
    assert set(values) == set(intervals) == {"pass@1", "pass@8", "maj@8"}
    assert all(v == 1.0 for v in values.values()) and all(ci == [1.0, 1.0] for ci in intervals.values())
    scores = {"teacher": score, "twin": score}
    assert pareto_fraction(scores, "pass", "twin") == 1.0 and pareto_fraction_ci(scores, "pass", "twin") == [1.0, 1.0]


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(3).random((80, 3))
    first, again = uncertainty.mean_interval(values), uncertainty.mean_interval(values)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, uncertainty.mean_interval(values, seed=1))


def test_a_clear_difference_gives_disjoint_intervals():
    strong, weak = _score(_problems(4, 50, 0.9), 1.0), _score(_problems(5, 50, 0.1), 1.0)
    (s_lo, s_hi), (w_lo, w_hi) = strong["metrics"]["pass"]["1"]["ci95"], weak["metrics"]["pass"]["1"]["ci95"]
    assert w_lo <= weak["metrics"]["pass"]["1"]["mean"] <= w_hi < s_lo <= strong["metrics"]["pass"]["1"]["mean"] <= s_hi
    # paired: different problems under the same ids here, but the ratio is still far below 1
    values, intervals = ratios(strong, weak)
    lo, hi = intervals["pass@1"]
    assert lo <= values["pass@1"] <= hi < 0.5


def test_budget_wins_vectorised_matches_the_definition():
    teacher, t_sec = np.array([0.2, 0.4, 0.6]), np.array([1.0, 2.0, 4.0])
    student, s_sec = np.array([0.15, 0.3, 0.45, 0.5]), np.array([0.5, 1.0, 2.0, 4.0])
    budgets = [0.5, 1.0, 2.0, 3.0, 4.0]
    # 0.5: the teacher has nothing within it, the student wins; 1.0: 0.3 >= 0.2; 2.0 and 3.0: 0.45 >= 0.4;
    # 4.0: 0.5 < 0.6, the teacher wins
    assert budget_wins(teacher, t_sec, student, s_sec, budgets) == pytest.approx(4 / 5)
    both = budget_wins(np.stack([teacher, teacher + 0.2]), t_sec, np.stack([student, student]), s_sec, budgets)
    assert both.tolist() == pytest.approx([4 / 5, 1 / 5])  # resamples on a leading axis, each on its own


def test_summary_carries_the_intervals_next_to_every_figure():
    teacher, student = _score(_problems(6, 80, 0.4), 1.0), _score(_problems(7, 80, 0.3), 0.5)

    cfg = RunConfig(teacher="t")
    results = {"eval": {"set": {"scores": {"teacher": teacher, "hybrid": student}}}}
    data = run_summary(cfg, results)["eval_sets"]["set"]
    row = data["models"]["hybrid"]
    for key in ("pass@1", "pass@8", "maj@1", "maj@8"):
        lo, hi = row[f"{key}_ci95"]
        assert lo <= row[key] <= hi
    for key, value in data["ratios"]["hybrid"].items():
        lo, hi = data["ratios_ci95"]["hybrid"][key]
        assert lo <= value <= hi
    for metric in ("pass", "maj"):
        lo, hi = data["pareto_fraction_ci95"][metric]["hybrid"]
        assert 0 <= lo <= data["pareto_fraction"][metric]["hybrid"] <= hi <= 1
    assert "80 problems" in data["ci95_method"]
    # a run scored before the intervals existed: every interval null, every figure as before
    for score in (teacher, student):
        del score["per_problem"]
        for per_k in score["metrics"].values():
            for entry in per_k.values():
                del entry["ci95"]
    old = run_summary(cfg, results)["eval_sets"]["set"]
    assert old["models"]["hybrid"]["pass@1"] == row["pass@1"] and old["models"]["hybrid"]["pass@1_ci95"] is None
    assert old["ratios"] == data["ratios"] and old["ratios_ci95"]["hybrid"]["pass@1"] is None
    assert old["pareto_fraction"] == data["pareto_fraction"] and old["pareto_fraction_ci95"]["pass"]["hybrid"] is None


def test_2000_resamples_of_200_problems_by_64_samples_are_fast():
    rng = np.random.default_rng(8)
    correct = rng.random((200, 64)) < rng.random((200, 1))
    problems = [ProblemSamples(correct=c, cluster=np.where(c, 0, 1)) for c in correct]
    values = np.stack([r.per_problem for r in all_metrics(problems, [1, 2, 4, 8, 16, 32, 64], ["pass"])["pass"].values()], 1)
    start = time.perf_counter()
    uncertainty.mean_interval(values)
    uncertainty.interval(lambda t, s: budget_wins(t, np.arange(1, 8.0), s, np.arange(1, 8.0) / 2, list(range(1, 8))),
                         values, values[::-1])
    assert time.perf_counter() - start < 5  # about 0.1 s on a shared 2-core CPU


def test_an_undefined_ratio_is_nan_without_a_warning():
    """A teacher that solved none of the resampled problems makes the ratio inf / nan: NaN, and no numpy warning
    in the user's console."""
    import warnings

    from thinkfast.evaluation.uncertainty import ratio_interval

    student, teacher = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounds = ratio_interval(student, teacher)
    assert np.isnan(bounds).all()
