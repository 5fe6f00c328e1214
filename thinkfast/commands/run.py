"""`thinkfast run`: the main job.

For now the main job is the side-by-side summary of the embedded teacher and its
converted hybrid and pure students (`thinkfast summary`); the full pipeline
(distil -> speed -> test-time scaling -> report) replaces it as it lands.
"""

from __future__ import annotations

from thinkfast.commands import summary


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="the main job on the embedded default (currently: the conversion summary)")
    summary.add_arguments(p)
    p.set_defaults(func=summary.run)
