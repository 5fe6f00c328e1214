"""decode_gemm: the decode step's GEMM list, the split-K route's arithmetic and the report (timings need a GPU)."""

import pytest
import torch
import torch.nn.functional as F

from thinkfast.benchmarks import decode_gemm
from thinkfast.benchmarks.shapes import model_config


@pytest.mark.parametrize("name", ["hybrid-3b", "qwen-0.5b", "hybrid-qwen-1.5b"])
def test_gemm_list_is_the_models_linears_with_the_engines_stacking(name):
    cfg = model_config(name)
    gemms = {g["name"]: g for g in decode_gemm.decode_gemms(name)}
    n_attn = sum(m == "attention" for m in cfg.layer_mixers)
    n_mamba = len(cfg.layer_mixers) - n_attn
    hd = cfg.head_dim
    assert gemms["qkv"]["calls"] == n_attn
    assert gemms["qkv"]["n"] == (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd
    assert gemms["qkv"]["bias"] == bool(cfg.attention_bias)
    assert gemms["gate_up"] == {"name": "gate_up", "k": cfg.hidden_size, "n": 2 * cfg.intermediate_size,
                                "bias": False, "calls": cfg.num_hidden_layers}
    assert gemms["down_proj"]["calls"] == cfg.num_hidden_layers
    assert gemms["lm_head"]["n"] == cfg.vocab_size and gemms["lm_head"]["calls"] == 1
    assert ("in_proj" in gemms) == (n_mamba > 0)
    if n_mamba:
        assert gemms["in_proj"]["calls"] == gemms["dt_proj"]["calls"] == gemms["out_proj"]["calls"] == n_mamba
    # every weight element of the stack appears once per step (stacking regroups, never drops or doubles)
    with torch.device("meta"):
        from thinkfast.models import ThinkfastForCausalLM

        model = ThinkfastForCausalLM(cfg)
    linear_elems = sum(m.in_features * m.out_features for p, m in model.named_modules()
                       if isinstance(m, torch.nn.Linear) and not p.endswith("lm_head"))
    listed = sum(g["k"] * g["n"] * g["calls"] for g in gemms.values() if g["name"] != "lm_head")
    assert listed == linear_elems


@pytest.mark.parametrize("s", [2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
def test_splitk_route_equals_linear(s, with_bias):
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 64, generator=gen), torch.randn(24, 64, generator=gen)
    b = torch.randn(24, generator=gen) if with_bias else None
    torch.testing.assert_close(decode_gemm.splitk_linear(x, w, b, s), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    parts = decode_gemm.splitk_mm(x, w, s)
    assert parts.shape == (s, 5, 24) and parts.dtype == torch.float32
    torch.testing.assert_close(parts.sum(0), x @ w.T, rtol=1e-5, atol=1e-5)


def test_splitk_route_skips_a_k_it_cannot_cut():
    assert decode_gemm.route_fn("splitk4", 56) is None  # 56 is not a multiple of 8 * 4
    assert decode_gemm.route_fn("splitk2", 64) is not None
    with pytest.raises(ValueError, match="unknown route"):
        decode_gemm.route_fn("cutlass", 64)


def test_rows_and_report_on_cpu():
    gemm = {"name": "out_proj", "k": 64, "n": 32, "bias": True, "calls": 3}
    row = decode_gemm.bench_gemm(gemm, 4, ["cublas", "splitk2", "splitk2-mm"], torch.device("cpu"), torch.float32,
                                 peak_flops=1e12, bandwidth=1e11)
    assert set(row["routes"]) == {"cublas", "splitk2", "splitk2-mm"}
    assert row["floor_ms"] == max(row["flop_ms"], row["byte_ms"]) > 0
    route, ms = decode_gemm.best_full_route(row)
    assert route in ("cublas", "splitk2") and ms == row["routes"][route]["ms"]
    result = {"device": "cpu", "date": "today", "torch": "x", "copy_bytes_per_s": 1e11, "matmul_flops": 1e12,
              "batches": [4], "routes": ["cublas", "splitk2", "splitk2-mm"], "models": {"m": [gemm]}, "rows": [row]}
    result["step"] = decode_gemm.step_summary(result, {(64, 32, True, 4): row})
    assert result["step"][0]["cublas_ms"] == pytest.approx(3 * row["routes"]["cublas"]["ms"])
    text = decode_gemm.markdown(result)
    assert "| m | 4 |" in text and "| out_proj | 64 | 32 | 4 |" in text
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        decode_gemm.plot(result, Path(tmp) / "g.png")
        assert (Path(tmp) / "g.png").stat().st_size > 1000
