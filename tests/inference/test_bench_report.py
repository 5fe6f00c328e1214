"""The speed benchmark's bookkeeping on CPU: roofline numbers, integration, headline and report files."""

import torch

from thinkfast.benchmarks import roofline
from thinkfast.benchmarks.report import write_markdown, write_plots
from thinkfast.benchmarks.shapes import MODELS, model_config, teacher_of
from thinkfast.benchmarks.speed import PROTOCOL_SETS, headline, integrate_decode_seconds, ratios, runs_protocol


def test_roofline_matches_spec_example():
    """Roofline (docs/design.md §5): Llama-3B 256+4096 at B=512 is bounded near 12k tok/s, the 6/28 hybrid near 37k (3.35 TB/s)."""
    from thinkfast.models import ThinkfastForCausalLM

    bounds = {}
    for name in ("llama-3b", "hybrid-3b"):
        with torch.device("meta"):
            model = ThinkfastForCausalLM(model_config(name)).to(torch.bfloat16)
        numbers = roofline.model_numbers(model)
        bounds[name] = roofline.generation_bound_tokens_per_s(numbers, 512, 256, 4096, 3.35e12, 1e18)
    assert 10e3 < bounds["llama-3b"] < 14e3
    assert 30e3 < bounds["hybrid-3b"] < 45e3  # the papers round to ~37k; shapes here give ~42k at 3.35 TB/s


def test_serial_bound_adds_the_parts_the_roofline_overlaps():
    numbers = dict(params=1e9, weight_bytes=2e9, kv_bytes_per_token=1e5, recurrent_state_bytes=1e6)
    bw, flops = 4e12, 8e14
    parts = roofline.step_parts_seconds(numbers, 256, 1000, bw, flops)
    # matmuls: 2 * 1e9 * 256 flops (0.64 ms) outlast the weights' bytes (0.5 ms); kv 25.6 GB; state 512 MB
    assert parts["matmuls"] == 2 * 1e9 * 256 / flops
    assert parts["kv"] == 256 * 1000 * 1e5 / bw and parts["state"] == 2 * 256 * 1e6 / bw
    roof = roofline.step_bound_seconds(numbers, 256, 1000, bw, flops)
    assert roof == (2e9 + 256 * 1000 * 1e5 + 2 * 256 * 1e6) / bw < sum(parts.values())  # bytes-bound roofline
    serial = roofline.generation_bound_tokens_per_s(numbers, 256, 999, 1, bw, flops, serial=True)  # mean context 1000
    assert serial == 256 / sum(parts.values())
    # one part alone (weights, flops below their bytes): the two bounds agree
    weights_only = dict(numbers, kv_bytes_per_token=0, recurrent_state_bytes=0)
    assert roofline.generation_bound_tokens_per_s(weights_only, 8, 10, 5, bw, flops, serial=True) == \
        roofline.generation_bound_tokens_per_s(weights_only, 8, 10, 5, bw, flops)


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
               "peer": [{"size": "3b", "batch": 256, "prompt": 512, "gen": 512, "route": "default", "ok": False,
                         "error": "boom", "is_peer": False}]}
    results["headline"] = headline(results)
    assert abs(results["headline"]["hybrid-3b_B256_vs_llama-3b_best"] - 2.75) < 1e-9
    assert results["headline"]["llama-3b_B512_256+4096_fits"] is False
    write_markdown(results, tmp_path)
    write_plots(results, tmp_path)
    text = (tmp_path / "speed.md").read_text()
    assert "OOM" in text and "22,000" in text
    assert (tmp_path / "speed.png").stat().st_size > 1000


def test_qwen_shapes():
    from thinkfast.models import ThinkfastForCausalLM

    # hybrids keep a quarter of the layers as attention: 6/24 and 7/28
    for size, hidden, layers, attn, params in (("0.5b", 896, 24, [3, 7, 11, 15, 19, 23], 494e6),
                                               ("1.5b", 1536, 28, [3, 7, 11, 15, 19, 23, 27], 1544e6)):
        teacher, hybrid = model_config(f"qwen-{size}"), model_config(f"hybrid-qwen-{size}")
        assert teacher.hidden_size == hidden and teacher.num_hidden_layers == layers and teacher.vocab_size == 151936
        assert teacher.attention_bias and teacher.tie_word_embeddings and teacher.num_key_value_heads == 2
        assert [i for i, m in enumerate(hybrid.layer_mixers) if m == "attention"] == attn
        assert teacher_of(f"hybrid-qwen-{size}") == f"qwen-{size}"
        with torch.device("meta"):
            model = ThinkfastForCausalLM(teacher)
        assert abs(sum(p.numel() for p in model.parameters()) - params) / params < 0.02  # Qwen2.5's published sizes


def test_protocol_sets_are_consistent():
    for name, cfg in PROTOCOL_SETS.items():
        assert set(cfg["models"]) <= set(MODELS), name
        for proto in cfg["protocols"].values():
            assert set(proto.get("models", [])) <= set(cfg["models"]), name
        for model, protocol, batch, gen in cfg["full_runs"]:
            assert model in cfg["models"] and gen in cfg["protocols"][protocol]["gens"], name
            assert runs_protocol(cfg["protocols"][protocol], model), (name, model, protocol)
    issue11 = PROTOCOL_SETS["issue11"]
    assert issue11["peer"] == [{"size": "1b", "batch": 256, "prompt": 512, "gen": 512}]
    assert {m for m, *_ in issue11["full_runs"]} == {"llama-1b", "hybrid-1b"}
    g = PROTOCOL_SETS["qwen"]["protocols"]["G"]
    assert (g["prompt"], g["gens"], g["batches"]) == (200, [256, 2048], [256, 512])
    issue16 = PROTOCOL_SETS["issue16"]["protocols"]  # issue 16's targets: every Qwen point, the 3B hybrid at 256+4096
    assert {k: issue16["G"][k] for k in ("prompt", "gens", "batches")} == {k: g[k] for k in ("prompt", "gens", "batches")}
    assert (issue16["B"]["prompt"], issue16["B"]["gens"], issue16["B"]["batches"]) == (256, [4096], [256, 512])
    assert not runs_protocol(issue16["B"], "qwen-0.5b") and not runs_protocol(issue16["G"], "hybrid-3b")


def test_cli_offers_every_protocol_set():
    from thinkfast.cli import build_parser

    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    speed_parser = bench._thinkfast_bench_subparsers.choices["speed"]
    protocol = next(a for a in speed_parser._actions if a.dest == "protocol")
    assert set(protocol.choices) == set(PROTOCOL_SETS)


def test_qwen_report_ratios_and_roofline_plot(tmp_path):
    points = []
    for size in ("qwen-0.5b", "qwen-1.5b"):
        for batch in (256, 512):
            for gen in (256, 2048):
                for model, tps, bound in ((size, 10000.0, 20000.0), (f"hybrid-{size}", 25000.0, 40000.0)):
                    points.append(dict(model=model, protocol="G", batch=batch, prompt=200, gen=gen, oom=False,
                                       method="sampled", tokens_per_s=tps, bound_tokens_per_s=bound,
                                       fraction_of_bound=tps / bound, latency_ms_per_step=1.0))
    peer = [{"size": "1b", "batch": 256, "prompt": 512, "gen": 512, "route": r, "ok": True, "tokens_per_s": t,
             "end_to_end_tokens_per_s": t / 2, "compile_s": 20.0, "compiled": True, "is_peer": r == "default",
             "recompiled_in_timed_call": False} for r, t in (("compile_config", 7000.0), ("default", 7500.0))]
    clocks = {"samples": 8, "busy_samples": 8, "sm_mhz_mean": 1927.5, "sm_mhz_min": 1770.0, "sm_mhz_max": 1980.0,
              "mem_mhz": 3201.0, "power_w_max": 696.6, "limits": {"sw_power_cap": 0.99}}
    full = [dict(model="hybrid-1b", protocol="A", batch=256, prompt=512, gen=512, oom=False, method="full",
                 tokens_per_s=90000.0, bound_tokens_per_s=150000.0, fraction_of_bound=0.6, gpu_clocks=clocks)]
    results = {"gpu": "fake", "date": "today", "command": "thinkfast bench speed --protocol qwen --out x", "torch": "x",
               "protocol_set": "qwen", "config": PROTOCOL_SETS["qwen"],
               "measured_copy_bandwidth_bytes_per_s": 4e12, "measured_bf16_matmul_flops": 8e14,
               "models": {m: {} for m in PROTOCOL_SETS["qwen"]["models"] + ["hybrid-1b"]}, "points": points,
               "full": full, "peer": peer}
    rows = ratios(results)
    assert len(rows) == 8 and all(abs(r["ratio"] - 2.5) < 1e-9 and abs(r["bound_ratio"] - 2.0) < 1e-9 for r in rows)
    results["ratios"] = rows
    results["headline"] = headline(results)
    assert results["headline"]["hf_peer_1b_route"] == "default"
    assert abs(results["headline"]["hybrid-1b_A_B256_vs_hf_peer"] - 12.0) < 1e-9
    write_plots(results, tmp_path)  # first, as speed._write does: the report links the plots that exist
    write_markdown(results, tmp_path)
    text = (tmp_path / "speed.md").read_text()
    assert "| qwen-1.5b | hybrid-qwen-1.5b | G | 512 | 200+2048 |" in text and "2.50× | 2.00×" in text
    assert "**default** (the peer)" in text and "speed_roofline.png" in text
    assert "| full | SM 1928 MHz (min 1770), sw_power_cap 99% |" in text  # the full run's clock beside it
    assert (tmp_path / "speed.png").stat().st_size > 1000 and (tmp_path / "speed_roofline.png").stat().st_size > 1000


def test_decode_profile_markdown_gives_both_bounds():
    from thinkfast.benchmarks.profile_decode import markdown

    point = dict(model="hybrid-3b", batch=256, context=2304, graph_ms=7.68, kernel_ms=7.61, launches_per_step=272,
                 bound_ms=5.58, bytes_ms=5.58, flops_ms=2.22, fraction_of_bound=5.58 / 7.68,
                 parts_ms={"matmuls": 2.2, "kv": 3.4, "state": 0.5}, serial_bound_ms=6.1,
                 kernels=[dict(name="_decode_attn_split_kernel", ms_per_step=3.37, calls_per_step=6)])
    result = dict(gpu="H200", date="2026-12-02", torch="2.11", bandwidth=4.24e12, flops=7.94e14, points=[point])
    text = markdown(result)
    assert "roofline bound 5.580 ms" in text and "-> 73% of bound" in text
    assert "serial bound 6.100 ms (matmuls 2.200, kv 3.400, state 0.500) -> 79%" in text
    assert "`_decode_attn_split_kernel` | 3.370 | 6 |" in text
    old = {k: v for k, v in point.items() if k not in ("parts_ms", "serial_bound_ms")}  # a profile.json from before
    assert "serial bound" not in markdown(dict(result, points=[old]))
