"""Checkpoint hygiene: one atomic file holds the model, optimizer and every rank's RNG state (so they always
come from the same step); temporary files of a killed save are removed when the run resumes; the checkpoint
is dropped once final/ is committed (a finished run keeps no optimizer state unless keep_checkpoint)."""

import pytest
import torch

from conftest import tiny_config
from thinkfast.config import load_config
from thinkfast.storage import is_temp_name, model_dir_complete
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.config import TrainConfig
from thinkfast.training.recipes import run

torch.set_num_threads(1)


class Killed(Exception):
    pass


def _kill_at(step):
    def on_step(s, loss):
        if s == step:
            raise Killed

    return on_step


def test_one_file_orphans_cleaned_checkpoint_dropped(tiny_setup, tmp_path):
    cfg = load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, max_steps=4, save_every=2, **{"data.seq_len": 32}))
    out = tmp_path / "run"
    with pytest.raises(Killed):
        run(cfg, on_step=_kill_at(3))
    files = sorted(p.name for p in (out / "checkpoint").iterdir())
    assert files == ["latest.pt"]  # no separate RNG file that could come from another step
    state = ckpt.load_checkpoint(out)
    assert state["step"] == 2 and len(state["rng"]) == 1 and "torch" in state["rng"][0]
    # what a kill inside a save leaves behind
    (out / "checkpoint" / "latest.pt.tmp4242").write_bytes(b"half a checkpoint")
    (out / "final.tmp4242").mkdir()
    (out / "final.tmp4242" / "config.json").write_text("{}")
    result = run(cfg, resume=True)
    assert result.steps == [3, 4] and model_dir_complete(out / "final")
    assert not (out / "checkpoint").exists()
    assert not [p for p in out.rglob("*") if is_temp_name(p.name) or p.name.endswith(".lock")]


def test_keep_checkpoint_keeps_it_for_extending_the_run(tiny_setup, tmp_path):
    cfg = load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, max_steps=2, keep_checkpoint=True,
                                               **{"data.seq_len": 32}))
    run(cfg)
    assert ckpt.load_checkpoint(tmp_path / "run")["step"] == 2
