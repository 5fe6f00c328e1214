"""`thinkfast bench kernels` parses, shares the `bench` group, and writes JSON + Markdown."""

import argparse
import json

import pytest
import torch

from thinkfast.cli import build_parser
from thinkfast.commands.bench_group import get_bench_subparsers


def test_bench_group_is_created_once_and_shared():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    first = get_bench_subparsers(sub)
    first.add_parser("kernels")
    second = get_bench_subparsers(sub)
    assert second is first
    second.add_parser("speed")
    assert set(sub.choices["bench"]._thinkfast_bench_subparsers.choices) == {"kernels", "speed"}


def test_cli_parses_bench_kernels():
    args = build_parser().parse_args(["bench", "kernels", "--out", "x", "--shapes", "3b", "--batches", "256"])
    assert args.shapes == "3b" and args.batches == "256" and callable(args.func)


@pytest.mark.triton
def test_bench_kernels_smoke(tmp_path):
    from thinkfast.cli import main

    rc = main(["bench", "kernels", "--out", str(tmp_path), "--shapes", "tiny", "--batches", "2", "--lengths", "5",
               "--scan-batch", "1", "--no-compare", "--no-ssd", "--allow-cpu"])
    assert rc == 0
    result = json.loads((tmp_path / "kernels.json").read_text())
    kernels = {r["kernel"] for r in result["rows"]}
    assert {"mamba1_step", "mamba1_fused_step", "conv_step", "ssd_step", "scan_fwd", "scan_fwd_bwd", "conv_fwd", "conv_fwd_bwd"} <= kernels
    assert all(r["ms"] > 0 and r["bytes"] > 0 for r in result["rows"])
    assert "| mamba1_step | tiny | 2 |" in (tmp_path / "kernels.md").read_text()


def test_scan_configs_parse_with_and_without_a_solver():
    from thinkfast.commands.bench_kernels import _configs
    from thinkfast.errors import ThinkfastError

    assert _configs("seq:4x1x256, tile:8x2,16x4x64") == [("seq", 4, 1, 256), ("tile", 8, 2, None),
                                                        (None, 16, 4, 64)]
    with pytest.raises(ThinkfastError, match="seq:4x1x256"):
        _configs("fast:16x1")
    with pytest.raises(ThinkfastError, match="write seq:4x2x128"):  # the seq solver's sub-tile is fixed
        _configs("seq:16x2x128")
    with pytest.raises(ThinkfastError, match="got '16'"):
        _configs("16")


def test_scan_launches_are_labelled_in_order_and_averaged():
    from thinkfast.benchmarks.kernels import label_scan_launches

    one_call = [("_ss_fwd_seq_kernel", 1.0), ("_ss_fwd_combine_kernel", 0.1), ("_ss_fwd_seq_kernel", 2.0),
                ("_ss_bwd_local_seq_kernel", 1.5), ("_ss_bwd_combine_kernel", 0.2), ("_ss_bwd_seq_kernel", 4.0),
                ("reduce_kernel", 0.05)]
    second = [(n, ms * 3) for n, ms in one_call]
    got = label_scan_launches(one_call + second)
    assert got == {"F1": 2.0, "F2": 0.2, "F3": 4.0, "B1": 3.0, "B2": 0.4, "B3": 8.0, "other": 0.1}
    with pytest.raises(ValueError, match="expected 6 scan launches per call"):
        label_scan_launches(one_call[:4])


def test_timed_fwd_bwd_returns_gradients_without_accumulating_them():
    from thinkfast.benchmarks.kernels import fwd_bwd_fn

    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    c = torch.randn(3)  # no gradient asked: not an input of the backward
    calls = []

    def op(x, w, c, scale=2.0):
        calls.append(1)
        return (x * w + c) * scale

    fn = fwd_bwd_fn(op, torch.ones(5, 3), x, w, c, scale=2.0)
    fn()
    gx, gw = fn()
    assert len(calls) == 2
    torch.testing.assert_close(gx, 2 * w.detach().expand(5, 3))
    torch.testing.assert_close(gw, 2 * x.detach().sum(0))
    assert x.grad is None and w.grad is None  # a model layer's backward hands gradients on, it does not add them


def test_packed_reset_marks_two_to_four_documents_per_row():
    from thinkfast.benchmarks.kernels import packed_reset

    reset = packed_reset(6, 64, "cpu")
    assert reset.shape == (6, 64) and reset.dtype == torch.bool and reset[:, 0].all()
    starts = reset.sum(1)
    assert ((starts >= 2) & (starts <= 4)).all() and len(set(starts.tolist())) > 1  # 1-3 cuts, not always the same
    assert not reset[:, 1:8].any() and not reset[:, -8:].any()  # cuts in the middle three quarters
    assert torch.equal(reset, packed_reset(6, 64, "cpu"))  # seeded: the same rows every run


def test_training_comparison_times_the_packed_scan_too():
    from thinkfast.benchmarks.kernels import bench_training_comparison

    calls = []

    def timer(fn):  # runs each timed function once; "1 ms" each
        calls.append(fn())
        return 1.0

    c = bench_training_comparison(torch.device("cpu"), timer, batch=1, length=8, dtype=torch.float32, shape_name="tiny")
    assert c["scan_packed_fwd_bwd_ms"] == 1.0 and c["scan_fwd_bwd_ms"] == 1.0 and c["matmul_fwd_bwd_ms"] == 1.0
    assert len(calls) == 4  # projections, scan fwd+bwd, scan fwd, packed scan fwd+bwd
    packed_grads = calls[3]
    assert all(torch.isfinite(g).all() for g in packed_grads)
