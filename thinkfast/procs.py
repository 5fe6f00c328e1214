"""Child processes that die with their parent.

A worker blocked on a pipe never sees EOF when its parent is killed if some process (itself, or a
sibling forked later) still holds the other end, so a `kill -9` of the parent used to leave workers
waiting forever.  `die_with_parent` fixes that from inside the child, first thing:
  - on Linux, prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills the child when the parent exits;
  - everywhere, a daemon thread that polls the parent pid and exits the child when it changes
    (the parent died and the child was re-parented).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, poll_seconds: float = 0.5) -> None:
    """Call in a child process with the pid of the process that started it."""
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="thinkfast-parent-watch", daemon=True).start()


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
