"""SIGTERM (what `timeout`, SLURM and Kubernetes send before a kill) stops a training run after the step in
flight with a checkpoint of that step: the rerun resumes there and repeats the uninterrupted run's losses,
no step lost or repeated.  A second SIGTERM kills at once; the handler is gone once training ends."""

import os
import signal

import pytest
import torch

from conftest import tiny_config
from thinkfast.cli import main
from thinkfast.config import load_config
from thinkfast.errors import Stopped
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.config import TrainConfig
from thinkfast.training.loop import StopSignal
from thinkfast.training.recipes import run

torch.set_num_threads(1)


def _sigterm_at(step):
    def on_step(s, loss):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


def _cfg(tiny_setup, tmp_path, name):
    return load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, max_steps=6, save_every=0,
                                                output_dir=str(tmp_path / name), **{"data.seq_len": 32}))


def test_sigterm_checkpoints_the_step_and_the_rerun_repeats_the_uninterrupted_run(tiny_setup, tmp_path):
    whole = run(_cfg(tiny_setup, tmp_path, "whole"))
    cfg = _cfg(tiny_setup, tmp_path, "stopped")
    # the signal arrives while step 3's metrics are read, i.e. once step 3 is done: step 4 is the one in flight
    with pytest.raises(Stopped, match="after step 4 of 6"):
        run(cfg, on_step=_sigterm_at(3))
    assert ckpt.load_checkpoint(tmp_path / "stopped")["step"] == 4  # save_every 0: only the stop wrote one
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed with the run
    rest = run(cfg, resume=True)
    assert rest.steps == [5, 6]
    assert rest.losses == pytest.approx(whole.losses[4:], rel=1e-6, abs=1e-7)


def test_sigterm_during_the_last_step_keeps_it_and_the_rerun_writes_the_final_model(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path, "last")
    with pytest.raises(Stopped, match="step 6 of 6|last step"):
        run(cfg, on_step=_sigterm_at(5))
    assert ckpt.load_checkpoint(tmp_path / "last")["step"] == 6
    assert not (tmp_path / "last" / "final").exists()
    result = run(cfg, resume=True)
    assert result.steps == [] and (tmp_path / "last" / "final" / "config.json").is_file()


def test_a_second_sigterm_kills_at_once():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        stop = StopSignal(enabled=True)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and seen == []  # the first one only asks
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # the second reaches the previous handler (the default one kills)
        assert signal.getsignal(signal.SIGTERM) is not stop._handle
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_cli_says_how_to_resume_and_exits_143(tiny_setup, tmp_path, capsys, monkeypatch):
    import yaml

    import thinkfast.training.recipes as recipes

    def stopped(*args, **kwargs):
        raise Stopped("stopped by SIGTERM after step 3 of 6; its checkpoint is in run/: rerun the same command "
                      "to resume")

    monkeypatch.setattr(recipes, "run", stopped)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_setup, tmp_path)))
    code = main(["distill", str(path)])
    err = capsys.readouterr().err
    assert code == 143, err
    assert err.strip().splitlines()[-1].endswith("rerun the same command to resume")
