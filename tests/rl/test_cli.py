"""`thinkfast grpo` end to end from a saved tiny policy, config checks, and the GPU run's report."""

import json

import pytest

from thinkfast.cli import main
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.rl.config import GRPOConfig
from thinkfast.training.metrics import read_metrics
from tiny import char_tokenizer, digit_sum_task, tiny_policy


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo_cli")
    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the prompt text as-is
    tiny_policy(len(tok)).save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    prompts, golds = digit_sum_task()
    with open(root / "problems.jsonl", "w") as fh:
        for p, g in zip(prompts, golds):
            fh.write(json.dumps({"question": p, "answer": g}) + "\n")
    return root


def test_cli_runs_and_resumes(saved, tmp_path):
    args = ["grpo", "grpo_tiny_cpu", f"policy={saved / 'policy'}", f"data.path={saved / 'problems.jsonl'}",
            "data.prompt_style=plain", "data.limit=null", "rollout.max_new_tokens=3", "micro_batch_tokens=64",
            "reward.response_prefix=\\boxed{", f"output_dir={tmp_path / 'run'}", "max_steps=2", "progress=false", "keep_checkpoint=true"]
    assert main(args) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward_mean", "accuracy", "response_length", "entropy", "clip_frac", "rollout_s", "update_s"):
        assert key in rows[0]
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert main(args) == 2  # a checkpoint exists: refuses without --resume
    assert main(args[:-3] + ["max_steps=3", "progress=false", "--resume"]) == 0
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize("over, message", [
    (["batch_prompts=10", "mini_batch_prompts=4"], "multiple of mini_batch_prompts"),
    (["rollout.group_size=1"], "group_size must be >= 2"),
    (["loss.aggregation=sum"], "aggregation"),
    (["distributed=fsdp"], "DDP only"),
])
def test_bad_configs_fail_early(over, message):
    with pytest.raises(ThinkfastError, match=message):
        load_config(GRPOConfig, "thinkfast/configs/grpo_m1.yaml", over)


def test_shipped_configs_load():
    m1 = load_config(GRPOConfig, "thinkfast/configs/grpo_m1.yaml")
    assert (m1.batch_prompts, m1.rollout.group_size, m1.mini_batch_prompts, m1.optim.lr) == (128, 8, 64, 1e-6)
    assert m1.loss.kl_coef == 0.0 and m1.loss.entropy_coef > 0
    partial = load_config(GRPOConfig, {"optim": {"lr": 2e-6}})
    assert partial.optim.schedule == "constant" and partial.optim.warmup == 0  # RL defaults survive a partial override
    load_config(GRPOConfig, "thinkfast/configs/grpo_smollm2_hybrid_gsm8k.yaml")
    load_config(GRPOConfig, "thinkfast/configs/grpo_tiny_cpu.yaml")


def test_gpu_run_report(tmp_path):
    from scripts.rl_gpu_run import plot, summarise

    cfg = load_config(GRPOConfig, "thinkfast/configs/grpo_smollm2_hybrid_gsm8k.yaml")
    metrics = [{"step": i + 1, "reward_mean": 0.1 * i, "accuracy": 0.1 * i, "response_length": 100.0,
                "rollout_s": 30.0 if i == 0 else 3.0, "update_s": 1.0, "reward_s": 0.1, "step_s": 4.0,
                "gen_tokens_per_s": 1000.0} for i in range(6)]
    plot(metrics, tmp_path / "reward.png", "test")
    assert (tmp_path / "reward.png").stat().st_size > 1000
    s = summarise(metrics, ["--policy", "p", "--out", "o"], cfg)
    assert s["rollout_over_update"] == pytest.approx(3.0)  # step 1 (graph capture) excluded
    assert s["reward_last_steps"] > s["reward_first_steps"]
