"""Crash-safe files and folders: every file the toolkit writes goes through here.

    atomic_file(path)      write a temporary sibling, fsync, rename over `path` (a kill leaves the
                           old file or the new one, never half of one)
    atomic_dir(path)       the same for a folder (a saved model): it appears whole or not at all, so
                           "the folder exists" is the done marker, written last
    read_jsonl(path)       the one JSONL reader of every append-only store (samples, KD data,
                           metrics): a torn last line (a killed append) is dropped, and cut off
                           with `repair=True`; a bad line elsewhere is corruption and raises
    append_jsonl(path, rows)  one write + fsync per call
    FolderLock(path)       an exclusive lock file per store / run folder; a second process is
                           refused at once with the holder's pid, host, start time and command
    remove_temp_files(dir) orphans a killed writer left behind (`*.tmp<pid>`)

Temporary names end in `.tmp<pid>` (files and folders alike), so they can be found and removed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from thinkfast import faults
from thinkfast.errors import ThinkfastError

_TEMP_RE = re.compile(r"\.(tmp|partial|old)\d*$")
_PID_RE = re.compile(r"\.(?:tmp|old)(\d+)$")


def temp_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.{kind}{os.getpid()}")


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_RE.search(name))


def remove_stale_siblings(path: str | os.PathLike) -> None:
    """Remove `<name>.tmp<pid>` / `<name>.old<pid>` left next to `path` by writers that are dead (safe without a
    lock: a live writer's pid is alive; a reused pid only makes us leave a leftover in place)."""
    from thinkfast.procs import alive

    path = Path(path)
    if not path.parent.is_dir():
        return
    for entry in path.parent.glob(f"{glob_escape(path.name)}.*"):
        match = _PID_RE.search(entry.name)
        if match and entry.name[: match.start()] == path.name:
            pid = int(match.group(1))
            if pid != os.getpid() and not alive(pid):
                _remove(entry)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ------------------------------------------------------------------ atomic files and folders
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """`with atomic_file(p) as fh: fh.write(...)`: `p` is replaced only once the block finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = temp_sibling(path)
    binary = "b" in mode
    try:
        with open(tmp, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        faults.point("atomic-file", path.name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, default=str))


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_dir(final) as tmp: model.save_pretrained(tmp)`: `final` appears, complete, only
    when the block finished (an older `final` is replaced).  A kill inside the block leaves a
    `final.tmp<pid>` folder that `remove_temp_files` clears, and no `final`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = temp_sibling(path)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        faults.point("atomic-dir", path.name)
        if path.exists():
            old = temp_sibling(path, "old")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(path.parent)


def remove_temp_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporary files / folders a killed writer left in `folder` (call it while holding
    the folder's lock, or when nothing else can be writing there).  Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    entries = folder.rglob("*") if recursive else folder.iterdir()
    for entry in sorted(entries, key=lambda p: len(p.parts)):
        if is_temp_name(entry.name) and (entry.exists() or entry.is_symlink()):
            _remove(entry)
            removed.append(entry)
    return removed


def model_dir_complete(path: str | os.PathLike) -> bool:
    """A saved model folder is usable: its config and its weights are there (a folder written by
    `atomic_dir` always is; one torn by a kill in an older version may hold only the config)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    return any((path / name).is_file() for name in
               ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"))


# ------------------------------------------------------------------ JSONL stores
def read_jsonl(path: str | os.PathLike, repair: bool = False, objects: bool = True) -> list:
    """Every row of an append-only JSONL file.

    A bad *last* line (a write torn by a kill: no trailing newline, or not JSON) is dropped, and with
    `repair=True` cut off the file so the next append starts on a clean line.  A bad line anywhere
    else is corruption and raises a ThinkfastError naming the file and line.  With `objects`, every
    row must be a JSON object."""
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ThinkfastError(f"{path} is a directory, not a JSONL file")
    data = path.read_bytes()
    rows: list = []
    offset = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        complete = i < len(lines) - 1  # followed by a newline
        is_last = not complete or (i == len(lines) - 2 and lines[-1] == b"")
        if raw.strip():
            try:
                if not complete:
                    raise ValueError("no trailing newline")
                row = json.loads(raw)
            except ValueError as err:
                if not is_last:
                    raise ThinkfastError(
                        f"{path} line {i + 1} is corrupt ({err}); delete the file or that line") from None
                if repair:
                    with open(path, "r+b") as fh:
                        fh.truncate(offset)
                        fh.flush()
                        os.fsync(fh.fileno())
                break
            if objects and not isinstance(row, dict):
                raise ThinkfastError(f"{path} line {i + 1} is not a JSON object (it is a {type(row).__name__})")
            rows.append(row)
        offset += len(raw) + 1
    return rows


def append_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Append rows in one write, then flush and fsync.  Returns how many were written."""
    path = Path(path)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not payload:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode("utf-8")
    with open(path, "ab") as fh:
        if faults.armed("append", path.name):  # tests: a kill halfway through this write
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            faults.kill_now()
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return payload.count("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Atomically replace `path` with `rows`."""
    with atomic_file(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ locks
LOCK_NAME = ".thinkfast.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

_HELD: dict[str, list] = {}  # lock file -> [fd, depth]: a process may re-enter its own lock


def lock_path_for(target: str | os.PathLike) -> Path:
    """A folder's lock is `<folder>/.thinkfast.lock`; a file store's is `<file>.lock`."""
    target = Path(target)
    if target.suffix in (".jsonl", ".json", ".sqlite"):
        return target.with_name(target.name + ".lock")
    return target / LOCK_NAME


def _holder_text(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode("utf-8") or "{}")
    except ValueError:
        info = {}
    if not info:
        return "another process (it has not written its details yet)"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
            + (f": {info['command']}" if info.get("command") else ""))


class FolderLock:
    """An exclusive, non-blocking lock on a store or run folder, released when the holder exits
    (even by SIGKILL: it is an flock on an open file).  `what` names the folder in the refusal."""

    def __init__(self, target: str | os.PathLike, what: str | None = None, wait: bool = False):
        """`wait=True` waits for the holder instead of refusing (for shared caches, not for run folders)."""
        self.target = Path(target)
        self.path = lock_path_for(self.target)
        self.what = what or str(self.target)
        self.key = os.path.realpath(self.path)  # one key per file, however it is spelled
        self.wait = wait
        self.acquired = False

    def acquire(self) -> "FolderLock":
        if self.acquired:
            return self
        held = _HELD.get(self.key)
        if held is not None:
            held[1] += 1
            self.acquired = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        if not self.wait:
                            raise
                        print(f"[thinkfast] waiting for {self.what} ({_holder_text(os.pread(fd, 4096, 0))})",
                              file=sys.stderr, flush=True)
                        fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                holder = _holder_text(os.pread(fd, 4096, 0))
                os.close(fd)
                raise ThinkfastError(
                    f"{self.what} is in use by another thinkfast process ({holder}); wait for it to finish "
                    f"or stop it, or choose another folder"
                ) from None
            try:  # the last holder may have removed the file between our open and our lock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[self.key] = [fd, 1]
        self.acquired = True
        return self

    def release(self) -> None:
        if not self.acquired:
            return
        self.acquired = False
        held = _HELD.get(self.key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self.key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # still holding the lock: nobody can be between open and lock on it
        os.close(held[0])

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def locked(target: str | os.PathLike, what: str | None = None) -> FolderLock:
    """`with locked(folder): ...` — see FolderLock."""
    return FolderLock(target, what)


def rank_zero_lock(target: str | os.PathLike, what: str | None = None):
    """The folder's lock in the first process of a torchrun job (or a lone process); nothing elsewhere.
    Commands take it before loading any model, so a second command on the folder is refused at once."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return FolderLock(target, what)
