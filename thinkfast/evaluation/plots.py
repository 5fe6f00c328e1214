"""Scaling charts: a metric vs k and vs seconds for several models, with the Pareto front over all."""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402


@dataclass
class Curve:
    model: str
    ks: list[int]
    mean: list[float]
    std: list[float]
    seconds: list[float]  # time of k samples, same order as ks


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (seconds, score) no other point beats (<= time and >= score, one strictly),
    sorted by time."""
    front = []
    for i, (t, s) in enumerate(points):
        dominated = any(
            (t2 <= t and s2 >= s) and (t2 < t or s2 > s) for j, (t2, s2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_scaling(curves: list[Curve], metric: str, path: str | os.PathLike, title: str = "") -> str:
    """Two panels (vs k, vs seconds, both log-x); the Pareto front over all models drawn on the time panel."""
    fig, (ax_k, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    points: list[tuple[float, float]] = []
    for curve in curves:
        line = ax_k.errorbar(curve.ks, curve.mean, yerr=curve.std, marker="o", capsize=3, label=curve.model)
        color = line[0].get_color()
        ax_t.errorbar(curve.seconds, curve.mean, yerr=curve.std, marker="o", capsize=3, color=color, label=curve.model)
        points.extend(zip(curve.seconds, curve.mean))
    front = pareto_front(points)
    if front:
        ax_t.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                  color="black", linestyle="--", linewidth=1.2, label="Pareto front")
        ax_t.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=90,
                     facecolors="none", edgecolors="black", zorder=5)
    for ax, xlabel in ((ax_k, "k (samples per problem)"), (ax_t, "seconds per problem")):
        ax.set_xscale("log", base=2 if ax is ax_k else 10)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or metric)
    fig.tight_layout()
    from thinkfast.storage import atomic_file

    with atomic_file(path, "wb") as fh:  # a kill never leaves a truncated PNG
        fig.savefig(fh, dpi=110, format="png")
    plt.close(fig)
    return str(path)
