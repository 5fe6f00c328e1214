"""Two gloo processes (DDP and FSDP2) take the same steps as one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _training_util import tiny_config

HERE = Path(__file__).parent
# fp32 on CPU: the only difference is the order of the cross-process gradient sum
TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg: dict, tmp_path: Path, name: str, nproc: int, resume: bool = False, fault: str | None = None,
            expect_ok: bool = True) -> list[float] | None:
    cfg_path, out = tmp_path / f"{name}.json", tmp_path / f"{name}.losses.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    env.pop("THINKFAST_FAULT", None)
    if fault:
        env["THINKFAST_FAULT"] = fault
    if nproc == 1:
        cmd = [sys.executable, str(HERE / "dist_worker.py"), str(cfg_path), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}",
               "--master_addr=127.0.0.1", str(HERE / "dist_worker.py"), str(cfg_path), str(out)]
    cmd += ["--resume"] if resume else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if not expect_ok:
        assert proc.returncode != 0
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


# device cpu: this is the gloo path; on a GPU box `auto` would start NCCL ranks on GPUs that may not exist
COMMON = {"max_steps": 5, "grad_accum": 2, "data.seq_len": 32, "save_every": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def single(tiny_setup, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    return _launch(tiny_config(tiny_setup, tmp, micro_batch_size=2, **COMMON), tmp, "one", 1)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(tiny_setup, tmp_path, strategy, single):
    two = tiny_config(tiny_setup, tmp_path / "two", micro_batch_size=1, distributed=strategy, **COMMON)
    double = _launch(two, tmp_path, "two", 2)
    assert len(single) == len(double) == 5
    assert single[-1] < single[0]  # training moved, so matching trajectories mean matching updates
    for a, b in zip(single, double):
        assert abs(a - b) <= TOLERANCE * max(1.0, abs(a)), (single, double)


def test_mohawk_stages_1_2_two_processes_match_one_process(tiny_setup, tmp_path):
    """distributed=fsdp: stage 1's chunked loss (a custom autograd function over the layer's parameters)
    runs under DDP, stage 2 under FSDP2.  The stage-2 losses depend on the stage-1 result, so matching
    them checks both stages."""
    over = dict(recipe="mohawk", student={"target": "llamba"}, **{**COMMON, "data.train_on": "all"},
                stages=[{"stage": 1, "max_steps": 3, "lr": 3e-3, "matrix_chunk": 3}, {"stage": 2, "max_steps": 2}])
    one = _launch(tiny_config(tiny_setup, tmp_path / "one", micro_batch_size=2, **over), tmp_path, "one", 1)
    two = _launch(tiny_config(tiny_setup, tmp_path / "two", micro_batch_size=1, distributed="fsdp", **over),
                  tmp_path, "two", 2)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert abs(a - b) <= TOLERANCE * max(1.0, abs(a)), (one, two)


def _final_weights(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted((output_dir / "final").glob("*.safetensors"))
    assert files
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def test_two_process_kill_resume_and_one_process_load(tiny_setup, tmp_path):
    """FSDP2 on 2 gloo processes, checkpoint every 2 steps, both ranks killed after step 5 (last checkpoint:
    step 4).  Resumed on 2 processes: the uninterrupted run's losses.  The same checkpoint resumed on ONE
    process (same global batch): the same losses to 1e-4 and the same final weights."""
    import shutil

    over = {**COMMON, "max_steps": 6, "save_every": 2, "optim.schedule": "cosine", "optim.warmup": 1}
    full = _launch(tiny_config(tiny_setup, tmp_path / "full", micro_batch_size=1, distributed="fsdp", **over),
                   tmp_path, "full", 2)
    killed = tiny_config(tiny_setup, tmp_path / "killed", micro_batch_size=1, distributed="fsdp", **over)
    _launch(killed, tmp_path, "killed", 2, fault="train-step:5", expect_ok=False)
    shutil.copytree(tmp_path / "killed", tmp_path / "one")  # the 2-process checkpoint, for the 1-process resume
    resumed = _launch(killed, tmp_path, "resumed", 2, resume=True)
    assert len(full) == 6 and len(resumed) == 2  # steps 5 and 6, redone from the step-4 checkpoint
    for a, b in zip(full[4:], resumed):
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (full, resumed)
    one_cfg = tiny_config(tiny_setup, tmp_path / "one", micro_batch_size=2, **over)
    one = _launch(one_cfg, tmp_path, "one", 1, resume=True)
    for a, b in zip(full[4:], one):
        assert abs(a - b) <= TOLERANCE * max(1.0, abs(a)), (full, one)
    ref, got = _final_weights(tmp_path / "full" / "run"), _final_weights(tmp_path / "one" / "run")
    assert ref.keys() == got.keys()
    diff = max((ref[k].float() - got[k].float()).abs().max().item() for k in ref)
    assert diff <= TOLERANCE, diff
