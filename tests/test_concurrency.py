"""Two processes on one folder: while a run / eval sample / training / gen-data works in a folder (or store),
a second one on it is refused at once, with a message naming the holder (pid, host, start time, command);
when the first dies -- even by SIGKILL -- its lock goes with it."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest
import torch
import yaml

from tests.evaluation.tiny import save_tiny
from thinkfast.cli import main
from thinkfast.storage import FolderLock


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny", hidden=64, layers=2)


def start_blocked(patch, argv: list[str]) -> int:
    """Fork a child that runs `thinkfast argv` after `patch(block)` replaced some step of it with `block`,
    which blocks for good, holding whatever locks the command took by then.  Returns once it is there."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            torch.set_num_threads(1)

            def block(*args, **kwargs):
                os.write(ready_w, b"ready\n")
                while True:
                    time.sleep(60)

            patch(block)
            main(argv)
        finally:
            os._exit(1)
    os.close(ready_w)
    if not os.read(ready_r, 16):
        os.waitpid(pid, 0)
        pytest.fail("the first process died before reaching the blocked step")
    os.close(ready_r)
    return pid


def _patch(owner, name):
    return lambda block: setattr(owner, name, block)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def refused(capsys, argv: list[str], what: str, holder: int) -> None:
    t0 = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("thinkfast ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    pattern = (rf"thinkfast {argv[0]}: error: {re.escape(what)} is in use by another thinkfast process \(pid {holder} "
               rf"on {re.escape(socket.gethostname())}, started \d{{4}}-\d\d-\d\dT[\d:]+[+-][\d:]+: .+\); wait for it "
               r"to finish or stop it, or choose another folder")
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert elapsed < 10, f"refused only after {elapsed:.1f} s"


def _run_yaml(tmp_path, teacher: str) -> str:
    cfg = {"teacher": teacher, "out_dir": str(tmp_path / "run"), "device": "cpu",
           "students": [{"name": "hybrid", "target": "hybrid", "keep_attention": 1,
                         "train": {"max_steps": 1, "data": {"seq_len": 160}, "progress": False}}],
           "kd_data": {"synthetic_problems": 2, "gsm8k_problems": 0, "max_new_tokens": 4, "keep_truncated": True},
           "eval_sets": [{"dataset": {"name": "synthetic", "synthetic_n": 2, "synthetic_steps": 1}, "prompt": "plain"}],
           "n_samples": 2, "k_list": [1, 2], "sampling": {"max_new_tokens": 4, "seed": 0}, "grading_workers": 1}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_second_run_on_one_folder_is_refused(model_dir, tmp_path, capsys):
    from thinkfast.pipeline import runner

    cfg = _run_yaml(tmp_path, model_dir)
    first = start_blocked(lambda block: runner.STAGE_FUNCTIONS.__setitem__("kd_data", block), ["run", cfg])
    try:
        refused(capsys, ["run", cfg], f"run folder {tmp_path / 'run'}", first)
        assert not (tmp_path / "run" / "stages" / "kd_data.json").exists()
    finally:
        stop(first)
    assert main(["run", cfg, "--until", "convert"]) == 0  # the lock died with its holder


def test_second_eval_sample_on_one_store_is_refused(model_dir, tmp_path, capsys):
    cfg = {"models": [{"name": "tiny", "path": model_dir, "batch_size": 4}],
           "dataset": {"name": "synthetic", "synthetic_n": 2, "synthetic_steps": 1}, "n_samples": 2, "k_list": [1, 2],
           "prompt": "plain", "sampling": {"max_new_tokens": 3, "seed": 0}, "out_dir": str(tmp_path / "eval"),
           "progress": False}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["eval", "sample", "--config", str(path)]
    from thinkfast.inference.api import EngineSampler

    first = start_blocked(_patch(EngineSampler, "sample"), argv)
    store = tmp_path / "eval" / "tiny" / "samples.shard000-of-001.jsonl"
    try:
        refused(capsys, argv, f"sample store {store}", first)
    finally:
        stop(first)
    assert main(argv) == 0
    from thinkfast.evaluation.store import read_rows

    rows = read_rows(store)
    keys = [(r["problem_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4  # no duplicate rows


def test_second_training_on_one_folder_is_refused(model_dir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n' * 4)
    cfg = {"recipe": "distill", "teacher": model_dir, "student": {"keep_attention": 1},
           "data": {"path": str(data), "seq_len": 64}, "max_steps": 1, "output_dir": str(tmp_path / "out"),
           "progress": False, "device": "cpu"}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from thinkfast.training import trainer

    first = start_blocked(_patch(trainer, "_train_locked"), ["distill", str(path)])
    try:
        refused(capsys, ["distill", str(path)], f"training folder {tmp_path / 'out'}", first)
    finally:
        stop(first)
    assert main(["distill", str(path)]) == 0


def test_second_gen_data_on_one_file_is_refused(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "1+1"}\n')
    out = tmp_path / "kd.jsonl"
    argv = ["gen-data", "--teacher", model_dir, "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "3",
            "--device", "cpu", "--keep-truncated"]
    import thinkfast.inference.api as api

    first = start_blocked(_patch(api, "load_for_generation"), argv)
    try:
        refused(capsys, argv, f"KD data file {out}", first)
    finally:
        stop(first)
    assert main(argv) == 0 and out.read_text().count("\n") == 1


def test_a_lock_is_reentrant_in_its_process_and_removed_on_release(tmp_path):
    with FolderLock(tmp_path / "x") as outer:
        with FolderLock(tmp_path / "x"):
            assert outer.path.is_file()
        assert outer.path.is_file()  # still held by the outer block
    assert not outer.path.exists()
