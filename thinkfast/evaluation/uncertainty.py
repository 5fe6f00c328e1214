"""95% confidence intervals of the accuracy figures: a bootstrap over problems.

The figures are means over problems of a per-problem value (the unbiased pass@k of the problem's n samples,
the expected maj@k of a random k-subset of them, ...).  A resample draws the P problems again with
replacement, each problem with all its samples, and recomputes the figure from the problems drawn; the
interval is the 2.5th to 97.5th percentile of the figure over `RESAMPLES` resamples (a fixed seed: the
same data give the same interval).  It measures how much the figure would move on another set of P
problems like these; the sampling noise of the n samples of each problem is inside it too, as far as it
shows in the per-problem values.

Paired: a statistic of several models (a student's ratio to the teacher, the fraction of time budgets
it wins) is computed on the same resampled problems for all of them, so the problems they share, hard or
easy, do not count as a difference between them.  A student compared with itself gets exactly [1, 1].
"""

from __future__ import annotations

from typing import Callable

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def resample_counts(problems: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, problems) float: how often each problem is drawn in each resample (rows sum to `problems`)."""
    draws = np.random.default_rng(seed).integers(0, problems, size=(resamples, problems))
    flat = draws + problems * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * problems).reshape(resamples, problems).astype(float)


def interval(statistic: Callable[..., np.ndarray], *per_problem: np.ndarray, resamples: int = RESAMPLES,
             seed: int = SEED) -> np.ndarray:
    """(2, ...) lower and upper bound of `statistic` over bootstrap resamples of the problems.

    per_problem: one array per model, problems on axis 0, the same problems in the same order for every
    model (paired).  statistic: takes each model's resampled means, shape (resamples, ...), and returns
    the figure for every resample, shape (resamples, ...).  A bound is NaN where the statistic is
    undefined (not finite) on some resample."""
    problems = len(per_problem[0])
    if any(len(v) != problems for v in per_problem):
        raise ValueError("paired per-problem values need the same problems for every model")
    counts = resample_counts(problems, resamples, seed)
    means = [(counts @ v.reshape(problems, -1)).reshape(resamples, *v.shape[1:]) / problems for v in per_problem]
    q = (1 - LEVEL) / 2
    # an undefined figure (a ratio to a teacher that solved nothing: inf / nan) must not warn: it becomes NaN below
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = np.asarray(statistic(*means), dtype=float)
        bounds = np.percentile(samples, [100 * q, 100 * (1 - q)], axis=0)
    return np.where(np.isfinite(samples).all(0), bounds, np.nan)


def mean_interval(per_problem: np.ndarray, **kw) -> np.ndarray:
    """(2, ...) interval of the mean over problems of one model's values."""
    return interval(lambda m: m, per_problem, **kw)


def ratio_interval(student: np.ndarray, teacher: np.ndarray, **kw) -> np.ndarray:
    """(2, ...) paired interval of mean(student) / mean(teacher)."""
    return interval(lambda s, t: s / t, student, teacher, **kw)


def as_json(bounds) -> list[float] | None:
    """[lo, hi] for JSON, or None when there is no interval (or it is undefined)."""
    if bounds is None or not np.isfinite(bounds).all():
        return None
    return [float(bounds[0]), float(bounds[1])]


def text(bounds, scale: float = 100.0, digits: int = 1) -> str:
    """' [lo–hi]' for a table cell (percent by default); '' when there is no interval."""
    if bounds is None:
        return ""
    lo, hi = bounds
    return f" [{scale * lo:.{digits}f}–{scale * hi:.{digits}f}]"


def describe(problems: int | None = None) -> str:
    """What the intervals are, in words (summary.json's `ci95_method`)."""
    over = f"the {problems} problems" if problems else "problems"
    return (f"{LEVEL:.0%} confidence interval, bootstrap over {over} ({RESAMPLES} resamples with replacement, "
            "each problem with all its samples)")


def legend(problems: int | None = None) -> str:
    """The one line a report prints to say what its brackets are."""
    return f"[lo–hi]: {describe(problems)}."
