"""Injected kills for the crash tests.

    THINKFAST_FAULT=<point>[:<detail>][@<n>]

makes this process SIGKILL itself the n-th time (default 1st) it reaches the named point, exactly
as an out-of-memory kill or a lost machine would: no `finally`, no cleanup.  `detail` is matched
with shell wildcards.  Points: `stage-start:<stage>`, `stage-end:<stage>` (work done, marker not
written), `train-step:<step>`, `atomic-file:<name>` / `atomic-dir:<name>` (contents written, not yet
renamed into place), `append:<file name>` (half of an append written).  Unset, every check is one
dictionary lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys

ENV = "THINKFAST_FAULT"
_hits: dict[str, int] = {}


def armed(point: str, detail: str = "") -> bool:
    """True when the configured fault is `point:detail` and this is the hit it waits for."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    target, _, count = spec.partition("@")
    name, _, pattern = target.partition(":")
    if name != point or (pattern and not fnmatch.fnmatchcase(str(detail), pattern)):
        return False
    _hits[spec] = _hits.get(spec, 0) + 1
    return _hits[spec] == int(count or 1)


def kill_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - we are about to die anyway
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def point(name: str, detail: str = "") -> None:
    if armed(name, detail):
        kill_now()
