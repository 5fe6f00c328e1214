"""thinkfast.storage: atomic files and folders, the crash-safe JSONL reader, folder locks, temp cleanup --
each checked against a real SIGKILL (a forked child killing itself at a fault point)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from thinkfast import storage
from thinkfast.errors import ThinkfastError


def killed_at(fault: str, fn) -> None:
    """Run `fn` in a forked child that SIGKILLs itself at `fault`; fail unless it did."""
    pid = os.fork()
    if pid == 0:
        os.environ["THINKFAST_FAULT"] = fault
        try:
            fn()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{fault} was not reached"


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "s.jsonl"
    storage.append_jsonl(path, [{"a": 1}, {"a": 2}])
    killed_at("append:s.jsonl", lambda: storage.append_jsonl(path, [{"a": 3, "text": "x" * 50}, {"a": 4}]))
    assert not path.read_bytes().endswith(b"\n")  # the kill tore the append
    assert storage.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    storage.read_jsonl(path, repair=True)
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    storage.append_jsonl(path, [{"a": 3}])
    assert storage.read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_corruption_before_the_last_line_and_non_objects_raise(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{broken\n{"a": 3}\n')
    with pytest.raises(ThinkfastError, match=r"s.jsonl line 2 is corrupt"):
        storage.read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ThinkfastError, match=r"line 2 is not a JSON object \(it is a list\)"):
        storage.read_jsonl(path)


def test_atomic_file_keeps_the_old_content_through_an_error_and_a_kill(tmp_path):
    path = tmp_path / "config.yaml"
    storage.atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with storage.atomic_file(path) as fh:
            fh.write("half")
            raise RuntimeError
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    killed_at("atomic-file:config.yaml", lambda: storage.atomic_write_text(path, "new\n"))
    assert path.read_text() == "old\n"
    leftovers = [p.name for p in tmp_path.iterdir() if storage.is_temp_name(p.name)]
    assert len(leftovers) == 1 and leftovers[0].startswith("config.yaml.tmp")
    assert [p.name for p in storage.remove_temp_files(tmp_path)] == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "final"

    def save(text):
        with storage.atomic_dir(final) as tmp:
            (tmp / "config.json").write_text("{}")
            (tmp / "model.safetensors").write_text(text)

    killed_at("atomic-dir:final", lambda: save("v1"))
    assert not final.exists() and not storage.model_dir_complete(final)
    storage.remove_temp_files(tmp_path)
    save("v1")
    assert storage.model_dir_complete(final) and (final / "model.safetensors").read_text() == "v1"
    killed_at("atomic-dir:final", lambda: save("v2"))
    assert (final / "model.safetensors").read_text() == "v1"  # the old one stays until the new one is whole
    save("v2")
    assert (final / "model.safetensors").read_text() == "v2"
    storage.remove_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_torn_model_folder_is_not_complete(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert not storage.model_dir_complete(tmp_path)


def test_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            storage.FolderLock(tmp_path / "run", "run folder X").acquire()
            os.write(w, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    os.read(r, 1)
    lock = storage.FolderLock(tmp_path / "run", "run folder X")
    with pytest.raises(ThinkfastError, match=rf"run folder X is in use by another thinkfast process \(pid {pid} on "):
        lock.acquire()
    holder = json.loads((tmp_path / "run" / storage.LOCK_NAME).read_text())
    assert holder["pid"] == pid and holder["host"] and holder["started"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (tmp_path / "run" / storage.LOCK_NAME).exists()  # a killed holder leaves its file, not its lock
    with lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_kd_file_keeps_only_whole_prompts(tmp_path):
    """A kill inside an append can leave some of a prompt's rows: those rows go, the prompt is redone."""
    from thinkfast.training.generate_data import completed_prompts

    path = tmp_path / "kd.jsonl"
    rows = [{"source_index": 0, "sample_index": 0, "prompt_rows": 2}, {"source_index": 0, "sample_index": 1, "prompt_rows": 2},
            {"source_index": 1, "sample_index": 0, "prompt_rows": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"source_index": 1, "sam')
    assert completed_prompts(path) == {0}
    assert storage.read_jsonl(path) == rows[:2]
