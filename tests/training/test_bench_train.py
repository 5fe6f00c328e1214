"""`thinkfast bench train`: FLOP counting against a hand computation, and the command's output on a CPU."""

import json

import pytest
import torch

from thinkfast.benchmarks import train as bench
from thinkfast.benchmarks.train_flops import causal_pairs, model_matmul_weights, step_flops

torch.set_num_threads(1)

# The "tiny" shape (Qwen2-style, tied head): hidden 64, MLP 96, 3 layers, 4 heads x 16, 2 kv heads, vocab 96.
#   attention layer:  q 64*64 + k 64*32 + v 64*32 + o 64*64                    = 12288
#   MLP:              3 * 64*96                                                 = 18432
#   Mamba-1 layer:    in_proj 64*(z 64 + x 32 + B 32 + C 64 + dt 4) + dt_proj 4*64 + out_proj 64*64
#                   = 12544 + 256 + 4096                                        = 16896
#   discrete Mamba-2: in_proj 64*(xBC 64+2*4*16 + z 64 + a 4) = 16640, + out_proj 4096 = 20736
#   head (tied):      96*64                                                     = 6144
ATTN, MLP, M1, DM2_IN, DM2, HEAD = 12288, 18432, 16896, 16640, 20736, 6144
N_HYBRID = 2 * (M1 + MLP) + (ATTN + MLP) + HEAD  # layer 1 is attention
N_TEACHER = 3 * (ATTN + MLP) + HEAD
N_PURE = 3 * (DM2 + MLP) + HEAD
DOCS = [[10, 22], [32]]  # two rows of 32 tokens: 64 tokens
T = 64
P = 10 * 11 // 2 + 22 * 23 // 2 + 32 * 33 // 2  # causal same-document (query, key) pairs = 836
D_ATTN = 64
A1 = 4 * D_ATTN * P  # one attention layer's score FLOPs, forward


@pytest.fixture(scope="module")
def models():
    shape = bench.SHAPES["tiny"]
    return {k: bench.build_models(shape, k, "cpu") for k in ("teacher", "hybrid", "pure")}


def test_matmul_weight_counts(models):
    assert P == 836
    assert model_matmul_weights(models["hybrid"]) == N_HYBRID == 107520
    assert model_matmul_weights(models["teacher"]) == N_TEACHER == 98304
    assert model_matmul_weights(models["pure"]) == N_PURE == 123648
    assert causal_pairs(DOCS) == P


def test_step_flops_by_hand(models):
    h, t, pure = models["hybrid"], models["teacher"], models["pure"]
    teacher_fwd = 2 * N_TEACHER * T + 3 * A1  # 3 attention layers, forward only
    sft = step_flops("sft", h, None, DOCS)
    assert sft["student"] == 6 * N_HYBRID * T + 3 * A1 and sft["teacher"] == 0 and sft["tokens"] == T
    assert sft["total"] == 41_929_728
    distill = step_flops("distill", h, t, DOCS)
    assert distill["total"] == 6 * N_HYBRID * T + 3 * A1 + teacher_fwd == 55_154_688
    assert step_flops("mohawk3", pure, t, DOCS)["total"] == 6 * N_PURE * T + teacher_fwd
    body = 2 * (N_TEACHER - HEAD) * T + 3 * A1  # stages 1-2 run the teacher's layers, not its head
    m2 = step_flops("mohawk2", pure, t, DOCS)
    assert (m2["student"], m2["teacher"]) == (6 * 3 * (DM2 + MLP) * T, body)
    m1 = step_flops("mohawk1", pure, t, DOCS)
    # per trained layer: in_proj forward + weight gradient, C.B^T (4 heads x d_state 16) x 3; the teacher's q, k
    # projections and Q.K^T for its attention matrix
    assert m1["student"] == 3 * (4 * DM2_IN * T + 3 * 2 * 4 * 16 * P)
    assert m1["teacher"] == body + 3 * (2 * (64 * 64 + 64 * 32) * T + 2 * D_ATTN * P)


def test_rows_are_packed_documents_filling_every_row():
    batch, lengths = bench.make_rows(96, 3, 64, seed=1)
    assert batch["input_ids"].shape == (3, 64) and bool(batch["valid"].all())
    for row, docs in enumerate(lengths):
        assert sum(docs) == 64 and 2 <= len(docs) <= 4
        starts = (batch["position_ids"][row] == 0).nonzero().flatten().tolist()
        assert len(starts) == len(docs)
    # every position but each document's last has a target
    assert int((batch["targets"] != -100).sum()) == 3 * 64 - sum(len(d) for d in lengths)


def test_bench_train_command_writes_json_and_markdown(tmp_path):
    from thinkfast.cli import main

    rc = main(["bench", "train", "--out", str(tmp_path), "--shapes", "tiny", "--rows", "2", "--seq-len", "32",
               "--warmup", "1", "--steps", "1"])
    assert rc == 0
    result = json.loads((tmp_path / "bench_train.json").read_text())
    steps = [r for r in result["records"] if "recipe" in r]
    assert [r["recipe"] for r in steps] == ["sft", "distill", "mohawk1", "mohawk2", "mohawk3"]
    for r in steps:
        assert r["shape"] == "tiny" and r["tokens_per_s"] > 0 and 0 < r["mfu"] and "peak_memory_gb" in r
        assert r["tokens_per_step"] == 64 and not r["skipped_update"] and r["loss"] == r["loss"]  # finite
    assert result["backends"]["scan_solver"] in ("seq", "tile")  # which scan produced the figures
    (scan,) = [r for r in result["records"] if r.get("kernel") == "selective_scan"]
    assert scan["shape"] == "tiny" and scan["fwd_bwd_ms"] > 0 and scan["projections_ms"] > 0
    assert scan["packed_fwd_bwd_ms"] > 0 and scan["packed_over_projections"] > 0  # training rows carry resets
    md = (tmp_path / "bench_train.md").read_text()
    assert "| tiny | distill |" in md and "selective scan" in md


def test_unknown_shape_or_recipe_is_refused():
    from thinkfast.errors import ThinkfastError

    with pytest.raises(ThinkfastError, match="unknown shape"):
        bench.resolve_shapes(["7b"])
    with pytest.raises(ThinkfastError, match="unknown recipe"):
        bench.resolve_recipes(["grpo"])
    assert bench.resolve_shapes(["3b", "0.5b"]) == ["llama-3b", "qwen-0.5b"]


def test_time_budget_skips_recipes_not_started(tmp_path):
    result = bench.run_train_bench(str(tmp_path), ["tiny"], ["sft", "distill"], rows=2, seq_len=32, warmup=0,
                                   steps=1, time_budget_s=0.0, scan=False)
    assert [(r["recipe"], r.get("skipped")) for r in result["records"]] == [("sft", "time budget"), ("distill", "time budget")]
    assert "time budget" in (tmp_path / "bench_train.md").read_text()


def test_profile_adds_kernel_tables_whose_categories_sum_to_one(tmp_path):
    from thinkfast.benchmarks.profile_table import CATEGORY_NAMES
    from thinkfast.cli import main

    rc = main(["bench", "train", "--out", str(tmp_path), "--shapes", "tiny", "--recipes", "distill,mohawk2",
               "--rows", "2", "--seq-len", "32", "--warmup", "1", "--steps", "1", "--no-scan", "--profile"])
    assert rc == 0
    result = json.loads((tmp_path / "bench_train.json").read_text())
    assert result["config"]["profile_steps"] == 2
    md = (tmp_path / "bench_train.md").read_text()
    for r in result["records"]:
        p = r["profile"]
        # `--shapes tiny` runs where the benchmark runs: on the GPU of a CUDA machine
        assert p["activity"] == ("cuda" if torch.cuda.is_available() else "cpu")
        assert p["steps"] == 2 and p["busy_ms_per_step"] > 0
        assert list(p["categories"]) == list(CATEGORY_NAMES)
        assert sum(c["share"] for c in p["categories"].values()) == pytest.approx(1.0, abs=1e-6)
        assert p["categories"]["matmul"]["ms_per_step"] > 0 and p["categories"]["optimizer"]["ms_per_step"] > 0
        top = p["top"]
        assert top and all(set(k) == {"name", "ms_per_step", "calls_per_step", "share"} for k in top)
        assert [k["ms_per_step"] for k in top] == sorted((k["ms_per_step"] for k in top), reverse=True)
        assert f"## Profile: tiny {r['recipe']}" in md
        # where copies come from: op and input shapes, e.g. the autocast casts of the fp32 weights
        assert p["aten_ops_per_step"] > 0 and p["copy_sources"]
        assert all(c["op"].startswith("aten::") and c["calls_per_step"] > 0 for c in p["copy_sources"])
        assert "[" in p["copy_sources"][0]["input_shapes"]
    assert "| matmul |" in md and "| copy op | input shapes |" in md


def test_kernel_categories():
    from thinkfast.benchmarks.profile_table import category

    assert category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert category("nvjet_tst_128x256_64x4_1x2_h_bz_coopB_NNT") == "matmul"
    assert category("aten::addmm") == "matmul"
    assert category("pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel") == "attention"
    assert category("_ss_bwd_local_kernel") == "scan/ssd" and category("chunk_fwd_kernel_o") == "scan/ssd"
    assert category("_token_loss_kernel") == "loss"
    assert category("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>") == "optimizer"
    assert category("_add_rms_norm_kernel") == "elementwise/norm"
    assert category("Memcpy DtoD (Device -> Device)") == "copies"
