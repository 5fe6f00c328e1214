"""stream_overlap: its report and its refusals (the timings themselves need a GPU)."""

import pytest
import torch

from thinkfast.benchmarks import stream_overlap
from thinkfast.errors import ThinkfastError


def test_markdown_reports_each_point_against_sum_and_max():
    point = {"half_batch": 256, "context": 2300, "mlp_layers": 5, "attention_ms": 0.6, "mlps_ms": 0.4,
             "both_ms": 0.95, "attention_tb_s": 3.9, "of_sum": 0.95, "of_max": 0.95 / 0.6}
    text = stream_overlap.markdown({"device": "GPU", "date": "today", "command": "cmd", "shape": "3b",
                                    "mlp_layers": 5, "points": [point]})
    assert "| 256 | 2300 | — | — | 0.600 | 3.90 | 0.400 | 0.950 | 0.95 | 1.58 |" in text
    point.update(attention_programs=66, gemm_sm_carveout=66)
    text = stream_overlap.markdown({"device": "GPU", "date": "today", "command": "cmd", "shape": "3b",
                                    "mlp_layers": 5, "points": [point]})
    assert "| 256 | 2300 | 66 | 66 | 0.600 |" in text


def test_points_are_parsed_and_bad_ones_named():
    assert stream_overlap._point("128x600") == (128, 600)
    with pytest.raises(SystemExit):
        stream_overlap.main(["--out", "x", "--points", "128-600"])
    with pytest.raises(SystemExit):  # a cap of 0 programs / multiprocessors is refused before any GPU work
        stream_overlap.main(["--out", "x", "--attention-programs", "0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_without_a_gpu(tmp_path):
    with pytest.raises(ThinkfastError, match="GPU"):
        stream_overlap.main(["--out", str(tmp_path)])
