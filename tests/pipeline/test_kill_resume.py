"""Kill the tiny pipeline with SIGKILL -- at stage boundaries, inside training, during the final save, during
a checkpoint write, during the KD file append, during a sample-store append -- then rerun it: the rerun
must finish with exactly the results of a run never interrupted, leave no temporary or lock file, no
checkpoint, and no process of the killed run alive.

Every run happens in a child forked from a clean fork server (one thread, its own process group); `THINKFAST_FAULT` makes the child
SIGKILL itself at a named point (thinkfast/faults.py), so nothing of it runs afterwards -- no `finally`,
no cleanup -- exactly as an out-of-memory kill or a lost machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.evaluation.tiny import save_tiny
from thinkfast.config import load_config, to_dict
from thinkfast.pipeline import RunConfig, run_pipeline
from thinkfast.procs import alive
from thinkfast.storage import is_temp_name

CHILD_TIMEOUT_S = 180
# measured, not computed: they differ between any two runs
TIMING_KEYS = {"seconds", "tokens_per_s", "decode_tokens_per_s", "step_time_s", "seconds_per_sample", "time_method",
               "peak_memory_gb", "timings", "distill_wall_seconds"}  # timings: wall seconds per distill phase


def _config(teacher: str, out_dir) -> dict:
    return {
        "teacher": teacher,
        "out_dir": str(out_dir),
        "device": "cpu",  # bit-identical results need the same kernels in every run
        "students": [
            {"name": "hybrid", "target": "hybrid", "keep_attention": 1, "recipe": "distill",
             "train": {"max_steps": 3, "save_every": 2, "progress": False, "data": {"seq_len": 160},
                       "optim": {"lr": 1e-3, "warmup": 0}}},
            {"name": "pure", "target": "llamba", "recipe": "mohawk",
             "train": {"save_every": 1, "progress": False, "data": {"seq_len": 160},
                       "stages": [{"stage": 1, "max_steps": 1}, {"stage": 2, "max_steps": 1}, {"stage": 3, "max_steps": 2}]}},
        ],
        "kd_data": {"synthetic_problems": 6, "gsm8k_problems": 0, "max_new_tokens": 10, "batch_size": 8,
                    "keep_truncated": True},
        "speed": {"batches": [2], "method": "sampled", "prompt_tokens": 4, "new_tokens": 4},
        "eval_sets": [{"dataset": {"name": "synthetic", "synthetic_n": 3, "synthetic_steps": 1}, "prompt": "plain"}],
        "n_samples": 3, "k_list": [1, 3],
        "sampling": {"temperature": 0.8, "max_new_tokens": 6, "seed": 0},
        "eval_batch_size": 4, "grading_workers": 1,
    }


def _child(cfg: dict, fault: str | None) -> None:
    """The pipeline run of `run_child`, in its own process group; exit 0 on success, 1 on an error."""
    code = 1
    try:
        os.setpgid(0, 0)
        torch.set_num_threads(1)
        if fault:
            os.environ["THINKFAST_FAULT"] = fault
        else:
            os.environ.pop("THINKFAST_FAULT", None)
        run_pipeline(load_config(RunConfig, cfg))
        code = 0
    except BaseException:  # noqa: BLE001 - report, then leave without pytest's machinery
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


_FORK_SERVER = multiprocessing.get_context("forkserver")
# the server imports these once; every child is forked with them loaded (a fresh import of torch is seconds)
_FORK_SERVER.set_forkserver_preload(["torch", "thinkfast.pipeline", __name__])


def run_child(cfg: dict, fault: str | None = None) -> tuple[int, int]:
    """Run the pipeline in a child process; returns (wait status, child pid = its process group).

    The child is forked from multiprocessing's fork server, a clean process, not from pytest's: where CUDA
    is present, an earlier backward in this process has started autograd's device threads, and a child
    forked from it cannot run a backward ("Unable to handle autograd's threading in combination with
    fork-based multiprocessing")."""
    proc = _FORK_SERVER.Process(target=_child, args=(cfg, fault))
    proc.start()
    proc.join(CHILD_TIMEOUT_S)
    if proc.exitcode is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
        pytest.fail(f"pipeline child still running after {CHILD_TIMEOUT_S} s")
    # as os.waitpid's status: the signal number when killed by one, else the exit code << 8
    status = -proc.exitcode if proc.exitcode < 0 else proc.exitcode << 8
    return status, proc.pid


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def assert_no_orphans(pgid: int) -> None:
    deadline = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(pgid) == [], "processes of the killed run are still alive"


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _rows(path: Path) -> list:
    return [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def snapshot(root: Path) -> dict:
    """Everything a run computed, without what it measured (times, speeds)."""
    from safetensors.torch import load_file

    snap: dict = {"kd": (root / "data" / "kd.jsonl").read_text()}
    for marker in sorted((root / "stages").glob("*.json")):
        if marker.stem not in ("timings", "speed"):
            snap[f"stage:{marker.stem}"] = _strip(json.loads(marker.read_text()))
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.name == "model.safetensors":
            snap[rel] = load_file(str(path))
        elif path.name in ("metrics.jsonl", "samples.jsonl"):
            snap[rel] = _rows(path)
        elif path.name == "scores.json":
            snap[rel] = _strip(json.loads(path.read_text()))
    return snap


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            assert sorted(got[key]) == sorted(value), key
            for name, tensor in value.items():
                assert torch.equal(got[key][name], tensor), f"{key}: {name} differs"
        else:
            assert got[key] == value, key


def assert_clean(root: Path) -> None:
    leftovers = [str(p.relative_to(root)) for p in root.rglob("*")
                 if is_temp_name(p.name) or p.name.endswith(".lock") or p.name == "checkpoint"]
    assert leftovers == [], f"left behind: {leftovers}"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("teacher") / "tiny", hidden=64, layers=2)


@pytest.fixture(scope="module")
def reference_dir(teacher_dir, tmp_path_factory):
    """The uninterrupted run, in this process (one thread, as in the children): it also imports everything
    the pipeline uses, so the forked children start warm."""
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pipeline(load_config(RunConfig, _config(teacher_dir, out)))
    finally:
        torch.set_num_threads(threads)
    assert_clean(out)
    return out


@pytest.fixture(scope="module")
def reference(reference_dir):
    return snapshot(reference_dir)


def _torn(path: Path) -> bool:
    return path.is_file() and not path.read_bytes().endswith(b"\n")


def _glob(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


# fault point -> what the kill must have left behind (proof that it hit where we meant)
SCENARIOS = {
    "append:kd.jsonl": lambda r: _torn(r / "data" / "kd.jsonl"),
    "train-step:3": lambda r: (r / "students/hybrid/train/checkpoint/latest.pt").is_file()
    and not (r / "students/hybrid/train/final").exists(),
    "atomic-dir:final": lambda r: bool(_glob(r, "students/hybrid/train/final.tmp*"))
    and not (r / "students/hybrid/train/final").exists(),
    "atomic-dir:final@2": lambda r: bool(_glob(r, "students/pure/train/stage1-1/final.tmp*")),
    "append:samples.shard000-of-001.jsonl": lambda r: _torn(r / "eval/synthetic-1step/teacher/samples.shard000-of-001.jsonl"),
    "atomic-file:eval.json": lambda r: bool(_glob(r, "stages/eval.json.tmp*")),
}


@pytest.mark.parametrize("fault", list(SCENARIOS))
def test_killed_run_resumes_to_the_uninterrupted_result(fault, teacher_dir, reference, tmp_path):
    out = tmp_path / "run"
    status, pgid = run_child(_config(teacher_dir, out), fault)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{fault} was never reached"
    assert_no_orphans(pgid)
    assert SCENARIOS[fault](out), f"the kill at {fault} did not leave what it should"
    status, pgid = run_child(_config(teacher_dir, out))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert_no_orphans(pgid)
    assert_clean(out)
    assert_same(snapshot(out), reference)


def test_many_kills_in_one_run(teacher_dir, reference, tmp_path):
    """Killed again and again in the same folder, each time a little further on."""
    out = tmp_path / "run"
    for fault in ("stage-start:convert", "stage-end:kd_data", "atomic-file:latest.pt", "train-step:2",
                  "atomic-dir:final", "stage-start:speed", "append:samples.shard000-of-001.jsonl@2",
                  "atomic-file:report.md"):
        status, pgid = run_child(_config(teacher_dir, out), fault)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{fault} was never reached"
        assert_no_orphans(pgid)
    status, _ = run_child(_config(teacher_dir, out))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert_clean(out)
    assert_same(snapshot(out), reference)


def test_final_folder_torn_by_an_older_version_is_retrained(teacher_dir, reference_dir, reference, tmp_path):
    """The bug report: final/config.json written, weights not (killed inside save_pretrained). That run
    used to skip distillation on rerun and crash in the speed stage; now the folder does not count as done."""
    out = tmp_path / "run"
    shutil.copytree(reference_dir, out)
    for stage in ("distill", "sft", "speed", "eval", "report"):
        (out / "stages" / f"{stage}.json").unlink(missing_ok=True)
    (out / "students/hybrid/train/final/model.safetensors").unlink()
    status, _ = run_child(_config(teacher_dir, out))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert_clean(out)
    assert_same(snapshot(out), reference)


def test_failed_first_run_does_not_lock_its_folder(teacher_dir, tmp_path):
    """A first run that fails before any stage finishes leaves nothing cached: the fixed config runs."""
    from thinkfast.errors import ThinkfastError

    out = tmp_path / "run"
    bad = load_config(RunConfig, {**_config(str(tmp_path / "no-teacher"), out)})
    with pytest.raises(ThinkfastError, match="no such directory"):
        run_pipeline(bad, until="convert")
    good = load_config(RunConfig, _config(teacher_dir, out))
    run_pipeline(good, until="convert")
    assert (out / "stages" / "convert.json").is_file()
    changed = load_config(RunConfig, {**to_dict(good), "n_samples": 2, "k_list": [1, 2]})
    with pytest.raises(ThinkfastError, match="different config"):  # now something is cached: refused
        run_pipeline(changed, until="convert")
    shutil.rmtree(out)
