"""Time budgets, the Pareto front and the chart/report writers."""

import pytest

from thinkfast.errors import ThinkfastError
from thinkfast.evaluation import budget
from thinkfast.evaluation.plots import Curve, pareto_front, plot_scaling
from thinkfast.evaluation.report import write_report


def test_time_budgets():
    rows = [{"num_tokens": 100, "seconds": 0.5}, {"num_tokens": 300, "seconds": 1.5}]
    assert budget.model_seconds_per_sample(rows, 400.0) == (pytest.approx(0.5), "throughput")  # 200 tok / 400 tok/s
    assert budget.model_seconds_per_sample(rows, None) == (pytest.approx(1.0), "wall")
    assert budget.seconds_for_k([1, 8], 0.5) == {1: 0.5, 8: 4.0}
    with pytest.raises(ThinkfastError):
        budget.seconds_per_sample_from_rows([{"num_tokens": 1, "seconds": None}])
    with pytest.raises(ThinkfastError):
        budget.seconds_per_sample_from_throughput(10, 0)


def test_pareto_front():
    points = [(1.0, 0.2), (2.0, 0.5), (2.0, 0.4), (3.0, 0.45), (4.0, 0.7), (0.5, 0.1), (4.0, 0.7)]
    front = pareto_front(points)
    assert [points[i] for i in front] == [(0.5, 0.1), (1.0, 0.2), (2.0, 0.5), (4.0, 0.7), (4.0, 0.7)]


def test_plot_and_report(tmp_path):
    curves = [Curve("slow", [1, 2, 4], [0.3, 0.4, 0.5], [0.0, 0.02, 0.01], [1, 2, 4]),
              Curve("fast", [1, 2, 4], [0.2, 0.35, 0.45], [0.0, 0.01, 0.01], [0.25, 0.5, 1.0])]
    png = plot_scaling(curves, "maj@k", tmp_path / "maj.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    scores = {
        m: {"problems": 3, "samples_per_problem": 4, "mean_tokens": 10.0, "seconds_per_sample": 0.1,
            "time_method": "wall", "seconds": {"1": 0.1, "2": 0.2},
            "metrics": {"maj": {"1": {"mean": 0.25, "std": 0.0, "exact": True}, "2": {"mean": 0.5, "std": 0.1, "exact": True}}}}
        for m in ("a", "b")
    }
    text = open(write_report(scores, {"maj": png}, tmp_path / "report.md")).read()
    assert "| a | 25.0 ± 0.0 (0.1s) | 50.0 ± 10.0 (0.2s) |" in text and "![maj@k](maj.png)" in text


def test_report_says_how_each_model_was_timed(tmp_path):
    rows = [{"num_tokens": 100, "seconds": 0.5}]
    measured = {"method": "throughput", "measured_by": "full", "batch": 128, "candidates": [64, 128, 256],
                "prompt_tokens": 151, "new_tokens": 2048, "new_tokens_from": "sampling.max_new_tokens"}
    timings = {
        "measured": budget.timing_record("throughput", measured, 64, rows),
        "given": budget.timing_record("throughput", None, 64, rows),
        "wall": budget.timing_record("wall", {"method": "wall", "batch": 256, "batch_from": "best batch"}, 256, rows),
    }
    assert timings["wall"]["mean_new_tokens"] == 100
    scores = {m: {"problems": 1, "samples_per_problem": 1, "mean_tokens": 100.0, "seconds_per_sample": 0.1,
                  "time_method": t["method"], "timing": t, "seconds": {"1": 0.1}, "metrics": {}}
              for m, t in timings.items()}
    text = open(write_report(scores, {}, tmp_path / "report.md")).read()
    assert ("- measured: throughput: k × mean tokens ÷ full-run decode tok/s at batch 128 (best of 64, 128, 256), "
            "prompt 151 + gen 2048 tokens (gen: sampling.max_new_tokens)") in text
    assert "- given: throughput: k × mean tokens ÷ the tok/s given in the config" in text
    assert "- wall: wall: measured sampling time per sample at batch 256 (best batch)" in text
