"""The speed benchmark's bookkeeping on CPU: roofline numbers, integration, headline and report files."""

import torch

from thinkfast.benchmarks import roofline
from thinkfast.benchmarks.report import write_markdown, write_plots
from thinkfast.benchmarks.shapes import model_config
from thinkfast.benchmarks.speed import headline, integrate_decode_seconds


def test_roofline_matches_spec_example():
    """SPEC §5: Llama-3B 256+4096 at B=512 is bounded near 12k tok/s, the 6/28 hybrid near 37k (3.35 TB/s)."""
    from thinkfast.models import ThinkfastForCausalLM

    bounds = {}
    for name in ("llama-3b", "hybrid-3b"):
        with torch.device("meta"):
            model = ThinkfastForCausalLM(model_config(name)).to(torch.bfloat16)
        numbers = roofline.model_numbers(model)
        bounds[name] = roofline.generation_bound_tokens_per_s(numbers, 512, 256, 4096, 3.35e12, 1e18)
    assert 10e3 < bounds["llama-3b"] < 14e3
    assert 30e3 < bounds["hybrid-3b"] < 45e3  # SPEC rounds to ~37k; shapes here give ~42k at 3.35 TB/s


def test_integration_of_linear_step_time():
    # step time 1 ms + 1 us per context token: exact sum over steps at contexts 11..19
    contexts, secs = [11, 19], [1e-3 + 11e-6, 1e-3 + 19e-6]
    expect = sum(1e-3 + c * 1e-6 for c in range(11, 20))
    assert abs(integrate_decode_seconds(contexts, secs, 10, 10) - expect) < 1e-12


def test_report_files(tmp_path):
    point = dict(model="hybrid-3b", protocol="B", batch=256, prompt=256, gen=4096, bound_tokens_per_s=30000.0,
                 oom=False, tokens_per_s=22000.0, fraction_of_bound=22 / 30, latency_ms_per_step=11.6, method="sampled")
    teacher = dict(point, model="llama-3b", tokens_per_s=8000.0, fraction_of_bound=0.8)
    oom = dict(point, model="llama-3b", batch=512, oom=True, reason="planner: 140 slots fit", tokens_per_s=None)
    results = {"gpu": "fake", "date": "today", "command": "thinkfast bench speed --out x", "torch": "x",
               "measured_copy_bandwidth_bytes_per_s": 3e12, "measured_bf16_matmul_flops": 7e14,
               "models": {"hybrid-3b": {}, "llama-3b": {}}, "points": [point, teacher, oom], "full": [],
               "peer": [{"size": "3b", "batch": 256, "ok": False, "error": "boom"}]}
    results["headline"] = headline(results)
    assert abs(results["headline"]["hybrid-3b_B256_vs_llama-3b_best"] - 2.75) < 1e-9
    assert results["headline"]["llama-3b_B512_256+4096_fits"] is False
    write_markdown(results, tmp_path)
    write_plots(results, tmp_path)
    text = (tmp_path / "speed.md").read_text()
    assert "OOM" in text and "22,000" in text
    assert (tmp_path / "speed.png").stat().st_size > 1000
