"""kill -9 of a grading process takes its worker processes with it (they used to block forever on a pipe)."""

import os
import signal
import threading
import time

from thinkfast.evaluation.grading.pool import TimeoutPool
from thinkfast.procs import alive


def test_workers_die_with_a_killed_parent():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the grading process: two workers busy for a minute
        try:
            os.close(r)
            pool = TimeoutPool(workers=2, timeout=120)

            def report():
                while len(pool.workers) < 2:
                    time.sleep(0.01)
                os.write(w, (",".join(str(x.process.pid) for x in pool.workers) + "\n").encode())

            threading.Thread(target=report, daemon=True).start()
            pool.map(time.sleep, [60, 60])
        finally:
            os._exit(0)
    os.close(w)
    workers = [int(p) for p in os.read(r, 100).decode().split(",")]
    assert all(alive(p) for p in workers)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in workers if alive(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert left == [], "grading workers outlived their killed parent"
