"""A process pool with a hard per-task time-out: a worker that overruns is killed and replaced.

Signal-based time-outs only work in a main thread and cannot stop C code (sympy can hang in either);
killing the process always works. Default start method "fork": workers inherit the imported grader
and need no `if __name__ == "__main__"` guard in user scripts; pass context="spawn" where fork is unsafe.
Workers die with their parent (`thinkfast.procs.die_with_parent`): a `kill -9` of the grading process
leaves no worker blocked on its pipe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None  # exception text if the task raised or its worker died
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out


def _worker_loop(conn, parent_end, parent_pid: int) -> None:
    from thinkfast.procs import die_with_parent

    die_with_parent(parent_pid)
    if parent_end is not None:
        parent_end.close()  # the parent's end, inherited by fork: without it we would never see EOF
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, fn, arg = message
        try:
            conn.send((index, fn(arg), None))
        except Exception as err:  # report, keep serving
            conn.send((index, None, f"{type(err).__name__}: {err}"))


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        inherited = self.conn if ctx.get_start_method() == "fork" else None
        self.process = ctx.Process(target=_worker_loop, args=(child, inherited, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class TimeoutPool:
    """`map(fn, items)` over worker processes; each call of `fn` gets `timeout` seconds."""

    def __init__(self, workers: int = 2, timeout: float = 10.0, context: str = "fork"):
        self.size = max(1, workers)
        self.timeout = timeout
        self.ctx = mp.get_context(context)
        self.workers: list[_Worker] = []
        self.restarts = 0  # workers killed for overrunning or dying

    def __enter__(self) -> "TimeoutPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.kill()
        self.workers = []

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], on_done: Callable[[], None] | None = None) -> list[Outcome]:
        """Outcomes in input order. `fn` must be picklable (a module-level function or a builtin)."""
        items = list(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = deque(range(len(items)))
        while len(self.workers) < min(self.size, len(items)):
            self.workers.append(_Worker(self.ctx))

        def finish(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            if on_done:
                on_done()

        while pending or any(w.task is not None for w in self.workers):
            for worker in self.workers:
                if worker.task is None and pending:
                    worker.task = pending.popleft()
                    worker.deadline = time.monotonic() + self.timeout
                    worker.conn.send((worker.task, fn, items[worker.task]))
            busy = [w for w in self.workers if w.task is not None]
            remaining = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy], timeout=remaining)
            for worker in busy:
                if worker.conn in ready:
                    try:
                        index, value, error = worker.conn.recv()
                        finish(index, Outcome(value=value, error=error))
                        worker.task = None
                        continue
                    except (EOFError, OSError):
                        finish(worker.task, Outcome(error="worker process died"))
                elif time.monotonic() >= worker.deadline:
                    finish(worker.task, Outcome(timed_out=True))
                else:
                    continue
                self._replace(worker)
        return outcomes  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.restarts += 1
        self.workers[self.workers.index(worker)] = _Worker(self.ctx)
