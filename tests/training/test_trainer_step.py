"""train_step / trainer mechanics: the on-device non-finite guard and the lagged (sync-free) metrics path."""

import pytest
import torch

from _training_util import tiny_config
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.training import trainer
from thinkfast.training.config import TrainConfig
from thinkfast.training.metrics import read_metrics
from thinkfast.training.recipes import run
from thinkfast.training.schedule import build_optimizer
from thinkfast.training.config import OptimConfig

torch.set_num_threads(1)


def _cfg(tiny_setup, tmp_path, **over):
    return load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, **over))


def test_guard_skips_the_update_from_the_first_non_finite_loss_on():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = build_optimizer([w], OptimConfig(lr=0.1, weight_decay=0.1), fused=True)
    guard = trainer.UpdateGuard(opt, torch.device("cpu"))
    assert guard.on_device
    w.grad = torch.ones_like(w)
    assert guard.step(opt, torch.tensor(1.0)).item() == 0.0
    after_good = w.detach().clone()
    state = {k: v.clone() for k, v in opt.state[w].items()}
    for loss in (float("nan"), 2.0):  # a non-finite step, then a finite one: both skipped (sticky)
        w.grad = torch.ones_like(w)
        assert guard.step(opt, torch.tensor(loss)).item() == 1.0
        assert torch.equal(w.detach(), after_good)
        assert all(torch.equal(opt.state[w][k], v) for k, v in state.items())


def test_guard_checks_on_the_host_without_a_fused_optimizer():
    w = torch.nn.Parameter(torch.randn(3))
    opt = build_optimizer([w], OptimConfig(lr=0.1))
    guard = trainer.UpdateGuard(opt, torch.device("cpu"))
    w.grad = torch.ones_like(w)
    before = w.detach().clone()
    with pytest.raises(trainer.NonFiniteLoss):
        guard.step(opt, torch.tensor(float("inf")))
    assert torch.equal(w.detach(), before)


def test_lagged_metrics_give_the_same_run(tiny_setup, tmp_path, monkeypatch):
    """The GPU path reads step k's metrics after queueing step k+1; forced on the CPU it must log the same."""
    over = dict(max_steps=5, grad_accum=2, **{"data.seq_len": 32, "optim.schedule": "cosine", "optim.warmup": 1})
    plain = run(_cfg(tiny_setup, tmp_path / "a", **over))
    monkeypatch.setattr(trainer, "LAGGED_METRICS_DEVICES", ("cuda", "cpu"))
    lagged = run(_cfg(tiny_setup, tmp_path / "b", **over))
    assert lagged.steps == plain.steps == [1, 2, 3, 4, 5]
    assert lagged.losses == plain.losses
    rows_a, rows_b = (read_metrics(tmp_path / d / "run" / "metrics.jsonl") for d in "ab")
    keep = ("step", "loss", "lr", "grad_norm", "positions", "tokens", "reverse_kl")
    assert [{k: r[k] for k in keep} for r in rows_a] == [{k: r[k] for k in keep} for r in rows_b]


def test_lagged_metrics_still_stop_on_a_non_finite_loss(tiny_setup, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "LAGGED_METRICS_DEVICES", ("cuda", "cpu"))
    cfg = _cfg(tiny_setup, tmp_path, max_steps=6, **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
    with pytest.raises(ThinkfastError, match=r"non-finite loss \(.*\) at step 2:"):
        run(cfg)


@pytest.mark.gpu
def test_step_times_on_cuda_come_from_the_gpu_and_hold_for_the_last_step(tiny_setup, tmp_path):
    """On CUDA a step's time is completion to completion on the GPU: every row has one, the times add up to
    about the run's wall time, and the last step (read at once, not one step late) is not a fraction of the
    others (it was: the tail of the GPU work only)."""
    import time

    over = dict(max_steps=8, save_every=4, device="cuda", **{"data.seq_len": 32})
    start = time.perf_counter()
    run(_cfg(tiny_setup, tmp_path, **over))
    wall = time.perf_counter() - start
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    times = [r["step_time_s"] for r in rows]
    assert len(times) == 8 and all(t > 0 for t in times) and sum(times) < wall
    typical = sorted(times[1:-1])[len(times[1:-1]) // 2]
    assert times[-1] > typical / 4 and times[3] > typical / 4  # the last step and the one before a save
