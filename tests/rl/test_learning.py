"""End to end on CPU: a tiny hybrid learns a verifiable task through engine rollouts and the math
grader; a killed run resumed from its checkpoint repeats the uninterrupted run's later steps."""

import time

import pytest
import torch

from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.rl.config import GRPOConfig, RewardConfig
from thinkfast.rl.loop import grpo_train
from thinkfast.rl.reward import MathReward
from thinkfast.training.metrics import read_metrics
from tiny import PREFIX, char_tokenizer, digit_sum_task, exact_reward, tiny_policy

TIMINGS = ("rollout_s", "reward_s", "old_logprob_s", "train_s", "update_s", "rollout_frac", "gen_tokens_per_s", "step_s")
# measured, not computed: the peak GPU memory of a resumed process legitimately differs (no earlier steps' caches)
NOT_REPRODUCIBLE = TIMINGS + ("peak_memory_gb",)


def _cfg(tmp_path, **over):
    base = {
        "policy": "in-test", "batch_prompts": 25, "mini_batch_prompts": 25, "max_steps": 200, "seed": 0,
        "rollout": {"group_size": 16, "max_new_tokens": 2, "temperature": 1.0},
        "reward": {"response_prefix": PREFIX},
        "loss": {"entropy_coef": 0.05},
        "optim": {"lr": 3e-3},
        "micro_batch_tokens": 16, "micro_batch_rows": 64,  # one rollout per row, 64 rows per forward (CPU scan)
        "output_dir": str(tmp_path / "run"), "save_every": 0, "progress": False,
    }
    return load_config(GRPOConfig, base, [f"{k}={v}" for k, v in over.items()])


class _Stop(Exception):
    pass


def test_tiny_hybrid_learns_digit_sums(tmp_path):
    """Chance: the first sampled token must be the right digit (1 of 23) and the second no digit."""
    tok = char_tokenizer()
    prompts, golds = digit_sum_task()  # 25 prompts "a+b=\boxed{", a, b in 0..4
    cfg = _cfg(tmp_path)
    rewards = []
    reward = MathReward(RewardConfig(response_prefix=PREFIX))

    def on_step(step, row):
        rewards.append(row["reward_mean"])
        if len(rewards) >= 5 and sum(rewards[-5:]) / 5 >= 0.8:
            raise _Stop

    start = time.perf_counter()
    try:
        grpo_train(cfg, tiny_policy(len(tok)), tok, prompts, golds, reward_fn=reward, on_step=on_step)
    except _Stop:
        pass
    finally:
        reward.close()
    elapsed = time.perf_counter() - start
    first = sum(rewards[:5]) / 5
    last = sum(rewards[-5:]) / 5
    print(f"steps {len(rewards)}, reward {first:.3f} -> {last:.3f}, {elapsed:.1f} s")
    assert first < 0.15, rewards[:5]  # near chance at the start
    assert last >= 0.8, f"reward only reached {last:.3f} in {len(rewards)} steps"


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    tok = char_tokenizer()
    prompts, golds = digit_sum_task()
    over = {"max_steps": 6, "batch_prompts": 10, "mini_batch_prompts": 5, "rollout.group_size": 4, "ppo_epochs": 2}
    straight = grpo_train(_cfg(tmp_path / "a", **over), tiny_policy(len(tok)), tok, prompts, golds, reward_fn=exact_reward)

    cfg = _cfg(tmp_path / "b", save_every=3, **over)

    def kill(step, row):
        if step == 4:
            raise _Stop  # dies after step 4, whose work is lost: the checkpoint is from step 3

    with pytest.raises(_Stop):
        grpo_train(cfg, tiny_policy(len(tok)), tok, prompts, golds, reward_fn=exact_reward, on_step=kill)
    with pytest.raises(ThinkfastError, match="--resume"):
        grpo_train(cfg, tiny_policy(len(tok)), tok, prompts, golds, reward_fn=exact_reward)
    resumed = grpo_train(cfg, tiny_policy(len(tok)), tok, prompts, golds, reward_fn=exact_reward, resume=True)
    assert [m["step"] for m in resumed.metrics] == [4, 5, 6]
    for a, b in zip(straight.metrics[3:], resumed.metrics):
        for key, value in a.items():
            if key not in NOT_REPRODUCIBLE:
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert straight.metrics[-1]["loss"] != straight.metrics[-2]["loss"]  # metrics move, so equality means something
    logged = read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6]  # the lost step 4 is not duplicated
    from thinkfast.models import ThinkfastForCausalLM

    wa = ThinkfastForCausalLM.from_pretrained(str(tmp_path / "a" / "run" / "final")).state_dict()
    wb = ThinkfastForCausalLM.from_pretrained(str(tmp_path / "b" / "run" / "final")).state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0)
