"""`run_speed` end to end on CPU with tiny models standing in for the real shapes: the protocol
loop, sampled and full points, the peer records, ratios, headline and the output files."""

import json

import pytest
import torch

from thinkfast.benchmarks import speed
from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM


def _tiny(name: str, device: str = "cpu", dtype=None):
    mixers = ["attention", "attention"] if name.startswith("llama") else ["mamba1", "attention"]
    config = ThinkfastConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, layer_mixers=mixers)
    torch.manual_seed(0)
    return ThinkfastForCausalLM(config).eval()


@pytest.mark.parametrize("batches", [[2, 4], []])  # [] = issue11's shape: full runs only
def test_run_speed_on_cpu(tmp_path, monkeypatch, batches):
    tiny_set = {
        "description": "tiny CPU stand-in", "models": ["llama-1b", "hybrid-1b"],
        "protocols": {"A": {"prompt": 8, "gens": [8], "batches": batches}},
        "checkpoints": 2, "steps": 2,
        "full_runs": [("llama-1b", "A", 4, 8), ("hybrid-1b", "A", 4, 8)],
        "peer": [{"size": "1b", "batch": 4, "prompt": 8, "gen": 8}],
    }
    monkeypatch.setitem(speed.PROTOCOL_SETS, "tiny", tiny_set)
    monkeypatch.setattr(speed, "build_model", _tiny)
    monkeypatch.setattr(speed, "_hardware", lambda device: ({"gpu": "cpu-test", "gpu_memory_bytes": 0},
                                                            {"bandwidth": 1e10, "flops": 1e11}))
    seen = {}

    def fake_peer(size, batch, prompt, gen, timeout, routes=None, device="cuda"):
        seen["args"] = (size, batch, prompt, gen, device)
        return [{"ok": True, "peer": "hf", "route": r, "size": size, "batch": batch, "prompt": prompt, "gen": gen,
                 "tokens_per_s": t, "compile_s": 1.0, "is_peer": r == "plain"}
                for r, t in (("compile_config", 5.0), ("default", 6.0), ("plain", 7.0))]

    monkeypatch.setattr(speed, "run_peer", fake_peer)
    results = speed.run_speed(str(tmp_path), protocol="tiny", device="cpu")
    assert seen["args"] == ("1b", 4, 8, 8, "cpu")
    assert {(p["model"], p["batch"]) for p in results["points"]} == {(m, b) for m in ("llama-1b", "hybrid-1b") for b in batches}
    assert all(not p["oom"] and p["tokens_per_s"] > 0 for p in results["points"] + results["full"])
    assert {r["method"] for r in results["ratios"]} == ({"sampled", "full"} if batches else {"full"})
    assert results["headline"]["hf_peer_1b_route"] == "plain"
    assert "hybrid-1b_A_B4_vs_hf_peer" in results["headline"] and "llama-1b_A_B4_vs_hf_peer" in results["headline"]
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["protocol_set"] == "tiny" and len(saved["peer"]) == 3
    assert {"speed.md", "speed.png", "speed_roofline.png"} <= {p.name for p in tmp_path.iterdir()}


def _tiny_of_kind(name: str, device: str = "cpu", dtype=None):
    """A tiny stand-in of the benchmark model's kind: all attention for a teacher, a Mamba-1 hybrid otherwise."""
    from thinkfast.benchmarks.shapes import MODELS

    return _tiny("llama" if MODELS[name][1] == "teacher" else "hybrid")


def test_qwen_protocol_through_the_command_compares_ssm_state_dtypes(tmp_path, monkeypatch, capsys):
    """`thinkfast bench speed --protocol qwen --ssm-state-dtype fp32 bf16` at tiny sizes: teachers run once,
    hybrids once per state dtype; every figure has its bound; the report has the ratios, the speed-ups and the
    fraction-of-bound plot."""
    import functools

    from thinkfast.cli import main

    qwen = {**speed.PROTOCOL_SETS["qwen"], "checkpoints": 2, "steps": 2,
            "protocols": {"G": {"prompt": 6, "gens": [4, 8], "batches": [2, 4], "title": "GSM8K-like, tiny"}},
            "full_runs": [("qwen-1.5b", "G", 2, 8), ("hybrid-qwen-1.5b", "G", 2, 8)]}
    monkeypatch.setitem(speed.PROTOCOL_SETS, "qwen", qwen)
    monkeypatch.setattr(speed, "build_model", _tiny_of_kind)
    monkeypatch.setattr(speed, "_hardware", lambda device: ({"gpu": "cpu-test", "gpu_memory_bytes": 0},
                                                            {"bandwidth": 1e10, "flops": 1e11}))
    monkeypatch.setattr(speed, "run_speed", functools.partial(speed.run_speed, device="cpu"))
    assert main(["bench", "speed", "--protocol", "qwen", "--no-peer", "--ssm-state-dtype", "fp32", "bf16",
                 "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["ssm_state_dtypes"] == ["fp32", "bf16"]
    runs = {(p["model"], p["ssm_state_dtype"]) for p in saved["points"]}
    assert runs == {("qwen-0.5b", None), ("qwen-1.5b", None)} | {
        (f"hybrid-qwen-{s}", d) for s in ("0.5b", "1.5b") for d in ("fp32", "bf16")}
    assert len(saved["points"]) == 6 * 4 and len(saved["full"]) == 3
    for p in saved["points"] + saved["full"]:
        assert not p["oom"] and p["bound_tokens_per_s"] > 0 and p["fraction_of_bound"] == pytest.approx(
            p["tokens_per_s"] / p["bound_tokens_per_s"])
        assert p["serial_bound_tokens_per_s"] <= p["bound_tokens_per_s"] * (1 + 1e-9)
        assert p["fraction_of_serial_bound"] == pytest.approx(p["tokens_per_s"] / p["serial_bound_tokens_per_s"])
    # hybrid / teacher beside the bound ratio, for both state dtypes; bf16 vs fp32 at every hybrid point
    assert {(r["student"], r["ssm_state_dtype"]) for r in saved["ratios"]} == runs - {("qwen-0.5b", None),
                                                                                       ("qwen-1.5b", None)}
    speedups = saved["ssm_state_speedups"]
    assert len(speedups) == 2 * 4 + 1 and all(r["versus"] == "fp32" and r["ssm_state_dtype"] == "bf16" for r in speedups)
    assert all(r["bound_ratio"] > 1 for r in speedups)  # half the state bytes: a higher bound
    text = (tmp_path / "speed.md").read_text()
    assert "| hybrid-qwen-0.5b, bf16 state | G |" in text and "speed-up" in text and "](speed_roofline.png)" in text
    assert {"speed.md", "speed.png", "speed_roofline.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "bf16 SSM state vs fp32" in capsys.readouterr().out


def test_a_protocol_runs_only_on_the_models_it_names(tmp_path, monkeypatch):
    """issue16-style set: protocol G on one pair of models, protocol B on another, full runs of each."""
    two_sets = {
        "description": "tiny CPU stand-in", "models": ["llama-1b", "hybrid-1b", "llama-3b"],
        "protocols": {"G": {"prompt": 6, "gens": [4], "batches": [2], "models": ["llama-1b", "hybrid-1b"]},
                      "B": {"prompt": 8, "gens": [6], "batches": [2], "models": ["llama-3b"]}},
        "checkpoints": 2, "steps": 2,
        "full_runs": [("hybrid-1b", "G", 2, 4), ("llama-3b", "B", 2, 6)],
        "peer": [],
    }
    monkeypatch.setitem(speed.PROTOCOL_SETS, "two", two_sets)
    monkeypatch.setattr(speed, "build_model", _tiny)
    monkeypatch.setattr(speed, "_hardware", lambda device: ({"gpu": "cpu-test", "gpu_memory_bytes": 0},
                                                            {"bandwidth": 1e10, "flops": 1e11}))
    results = speed.run_speed(str(tmp_path), protocol="two", device="cpu", peer=False)
    assert sorted((p["model"], p["protocol"]) for p in results["points"]) == [
        ("hybrid-1b", "G"), ("llama-1b", "G"), ("llama-3b", "B")]
    assert sorted((p["model"], p["protocol"], p["method"]) for p in results["full"]) == [
        ("hybrid-1b", "G", "full"), ("llama-3b", "B", "full")]
