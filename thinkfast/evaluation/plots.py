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


def _save(fig, path: str | os.PathLike) -> str:
    """Lay out, write as PNG through a temporary file (a kill never leaves a truncated PNG), close."""
    from thinkfast.storage import atomic_file

    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, dpi=110, format="png")
    plt.close(fig)
    return str(path)


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
    return _save(fig, path)


def plot_fidelity(series: dict[str, list[tuple[str, float, float]]], path: str | os.PathLike, title: str = "") -> str:
    """Distillation quality by training point: for each student a list of (point, KL to teacher, top-1 agreement),
    e.g. ("init", 18.6, 0.006), ("align", 0.16, 0.92), ...  Two panels: reverse KL on a log axis, top-1 in percent;
    each student's points in training order along x (students with different stages share the axis by position)."""
    fig, (ax_kl, ax_top) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, points) in enumerate(series.items()):
        xs = list(range(len(points)))
        ax_kl.plot(xs, [kl for _, kl, _ in points], marker="o", label=name)
        ax_top.plot(xs, [100 * top for _, _, top in points], marker="o", label=name)
        dy = 4 + 20 * i  # each student's labels at their own height, so equal points do not overprint
        for x, (label, kl, top) in zip(xs, points):
            ax_kl.annotate(f"{label} {kl:.3g}", (x, kl), textcoords="offset points", xytext=(4, dy), fontsize=7)
            ax_top.annotate(f"{label} {100 * top:.1f}%", (x, 100 * top), textcoords="offset points", xytext=(4, dy),
                            fontsize=7)
    ax_kl.set_yscale("log")
    ax_kl.set_ylabel("reverse KL to teacher (nats/token, held out)")
    ax_top.set_ylabel("top-1 agreement with teacher (%)")
    ax_top.set_ylim(-5, 110)
    for ax in (ax_kl, ax_top):
        ax.set_xlabel("training point (conversion, then after each stage)")
        ax.set_xticks([])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "distillation quality by stage")
    return _save(fig, path)
