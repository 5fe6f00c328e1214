"""The engine's `ssm_state_dtype` option: the pool holds the Mamba layers' recurrent state in fp32 or bf16,
and decoding with a bf16 state stays close to decoding with an fp32 one (CPU, reference path)."""

import pytest
import torch

from tests.inference.conftest import tiny_model
from tests.tiny import tiny_student
from thinkfast.errors import ThinkfastError
from thinkfast.inference.engine import Engine
from thinkfast.inference.params import SamplingParams

PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42], [9, 9, 3, 14, 15]]
STEPS = 32


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_pool_holds_the_asked_dtype(name, dtype):
    model = tiny_model("all_kinds")  # attention, mamba1, discrete_mamba2, mamba2
    engine = Engine(model, max_batch=2, max_len=16, progress=False, ssm_state_dtype=name)
    assert engine.ssm_state_dtype == dtype
    for layer in engine.state.layers:
        for key, tensor in layer.items():
            assert tensor.dtype == (dtype if key == "ssm" else engine.dtype), key
    # the planner sized the pool with the same bytes the pool has
    assert engine.plan.recurrent_bytes_per_slot == engine.state.bytes_per_slot()["recurrent"]


def test_bf16_state_halves_the_ssm_bytes_only():
    model = tiny_model("all_kinds")
    wide = model.allocate_state(1, 16, dtype=torch.float32)
    narrow = model.allocate_state(1, 16, dtype=torch.float32, ssm_dtype=torch.bfloat16)
    ssm = sum(layer["ssm"][0].numel() for layer in wide.layers if "ssm" in layer)
    assert wide.bytes_per_slot()["recurrent"] - narrow.bytes_per_slot()["recurrent"] == 2 * ssm
    assert wide.bytes_per_slot()["kv"] == narrow.bytes_per_slot()["kv"]


@pytest.mark.parametrize("bad", ["fp16", "float32", torch.float16])
def test_unknown_state_dtype_is_refused(bad):
    with pytest.raises(ThinkfastError, match="ssm_state_dtype must be one of"):
        Engine(tiny_model("hybrid"), max_batch=1, max_len=8, progress=False, ssm_state_dtype=bad)


# Tolerance of the logits of a bf16-state decode against the fp32-state one, relative to their norm.
# Each step stores the state rounded to nearest: a relative error of at most 2^-9 per element.  Past
# roundings decay with the state (|exp(dt A)| < 1) but, with decays near 1 (Llamba's start in
# [0.905, 0.999]), they add up like a random walk: after T = 8 + 32 stores about sqrt(T) * 2^-9 = 1.2e-2
# of the state's norm, and the logits inherit that relative error at most.  Measured on these models:
# 4e-5 (mamba1 hybrid), 2e-4 (mamba2 hybrid), 1.1e-2 (pure discrete Mamba-2).
LOGITS_REL_TOL = 2e-2


@pytest.mark.parametrize("mixers", [["mamba1", "attention", "mamba1", "mamba1"], ["discrete_mamba2"] * 3,
                                    ["attention", "mamba2", "mamba2"]])
def test_bf16_state_decode_stays_close_to_fp32(mixers):
    model = tiny_student(mixers)
    ids = torch.randint(0, 96, (3, 8 + STEPS))  # prompt of 8, then 32 teacher-forced steps
    slots = torch.tensor([2, 0, 1])
    wide = model.allocate_state(3, 48)
    narrow = model.allocate_state(3, 48, ssm_dtype=torch.bfloat16)
    a, b = model.prefill(ids[:, :8], wide, slots), model.prefill(ids[:, :8], narrow, slots)
    worst = ((a - b).norm() / a.norm()).item()
    for t in range(8, 8 + STEPS):
        a, b = model.step(ids[:, t], wide, slots), model.step(ids[:, t], narrow, slots)  # (3, vocab)
        worst = max(worst, ((a - b).norm() / a.norm()).item())
    assert worst <= LOGITS_REL_TOL, f"relative logits error {worst:.2e}"


@pytest.mark.parametrize("mix", ["hybrid", "pure", "all_kinds"])
def test_greedy_tokens_agree_over_32_steps(mix):
    model = tiny_model(mix)
    params = SamplingParams(temperature=0, max_new_tokens=STEPS, ignore_eos=True)
    tokens = {}
    for name in ("fp32", "bf16"):
        engine = Engine(model, max_batch=4, max_len=48, progress=False, ssm_state_dtype=name)
        tokens[name] = [row[0].token_ids for row in engine.generate(PROMPTS, params)]
    assert tokens["bf16"] == tokens["fp32"]


# ------------------------------------------------------------------ where users set it
@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    """A tiny Mamba-1 hybrid student with a tokenizer, saved as a student directory."""
    from tests.evaluation.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("student") / "hybrid"
    tiny_student(["mamba1", "attention"], vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def engines(monkeypatch):
    """Every Engine built while the test runs."""
    built = []
    init = Engine.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Engine, "__init__", record)
    return built


def test_generate_command_takes_the_option(hybrid_dir, tmp_path, engines):
    from thinkfast.cli import main

    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", hybrid_dir, "--prompt", "ab", "--max-new-tokens", "3", "--temperature", "0",
                 "--device", "cpu", "--ssm-state-dtype", "bf16", "--out", str(out)]) == 0
    assert [e.ssm_state_dtype for e in engines] == [torch.bfloat16] and out.read_text().count("\n") == 1


def test_eval_model_spec_is_the_one_home(hybrid_dir, tmp_path, engines):
    import yaml

    from thinkfast.cli import main
    from thinkfast.config import load_config
    from thinkfast.evaluation.config import EvalConfig
    from thinkfast.evaluation.loading import load_model_for_eval

    with pytest.raises(ThinkfastError, match="model 'm': ssm_state_dtype must be one of"):
        load_config(EvalConfig, {"models": [{"name": "m", "path": hybrid_dir, "ssm_state_dtype": "fp16"}]})
    cfg = load_config(EvalConfig, {"models": [{"name": "m", "path": hybrid_dir, "ssm_state_dtype": "bf16"}]})
    assert cfg.models[0].ssm_state_dtype == "bf16"
    load_model_for_eval(cfg.models[0])
    assert engines[-1].ssm_state_dtype == torch.bfloat16
    # `thinkfast eval --ssm-state-dtype` sets it on every model (the saved config shows what ran)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"models": [{"name": "a", "path": hybrid_dir},
                                                                   {"name": "b", "path": hybrid_dir}]}))
    main(["eval", "plot", "--config", str(tmp_path / "eval.yaml"), "--ssm-state-dtype", "bf16", "--out",
          str(tmp_path / "out")])
    saved = yaml.safe_load((tmp_path / "out" / "config.plot.yaml").read_text())
    assert [m["ssm_state_dtype"] for m in saved["models"]] == ["bf16", "bf16"]


def test_greedy_agreement_compares_each_state_dtype_with_the_first():
    from thinkfast.benchmarks.state_agreement import compare, greedy_agreement

    # compare: prefix and divergence arithmetic on hand-made completions
    out = compare([[1, 2, 3, 4], [5, 6], [7]], [[1, 2, 9, 9], [5, 6], [8]])
    assert out["identical"] == pytest.approx(1 / 3) and out["first_divergence"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert out["prefix_fraction"] == pytest.approx((2 / 4 + 1.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        compare([[1]], [])
    # the same weights served with the same state dtype twice agree exactly; bf16 is measured against fp32
    model = tiny_student(["attention", "mamba1", "mamba1"])
    same = greedy_agreement(model, None, PROMPTS, ["fp32", "fp32"], max_new_tokens=12)
    assert same["versus"]["fp32"]["identical"] == 1.0 and same["versus"]["fp32"]["first_divergence"] is None
    mixed = greedy_agreement(model, None, PROMPTS, ["fp32", "bf16"], max_new_tokens=12, control_batch=2)
    assert mixed["reference"] == "fp32" and 0.0 <= mixed["versus"]["bf16"]["prefix_fraction"] <= 1.0
    assert mixed["versus"]["fp32@batch2"]["identical"] == 1.0  # fp32 weights: the batch size changes nothing
    assert mixed["versus"]["bf16"]["prompts"] == len(PROMPTS) and mixed["versus"]["bf16"]["mean_tokens"] == 12
