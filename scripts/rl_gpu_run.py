"""The issue-8 GPU figure run, one command:

    python scripts/rl_gpu_run.py --policy /path/to/distilled-hybrid --out /path/to/results [--steps 40]

GRPO of a distilled SmolLM2 hybrid on GSM8K-train prompts (config `grpo_smollm2_hybrid_gsm8k`), then
<out>/run/metrics.jsonl (per step), <out>/reward.png (reward / accuracy curve and the rollout vs
update seconds per step) and <out>/summary.json (GPU, date, command, the time split, first/last rewards).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch


def plot(metrics: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, [m["reward_mean"] for m in metrics], label="reward (mean)")
    a.plot(steps, [m["accuracy"] for m in metrics], label="accuracy")
    a.set_xlabel("GRPO step")
    a.legend()
    a.set_title(title)
    b.plot(steps, [m["rollout_s"] for m in metrics], label="rollout (engine)")
    b.plot(steps, [m["update_s"] for m in metrics], label="update (old log-probs + PPO)")
    b.plot(steps, [m["reward_s"] for m in metrics], label="grading")
    b.set_xlabel("GRPO step")
    b.set_ylabel("seconds")
    b.legend()
    b.set_title("time per step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(metrics: list[dict], argv: list[str], cfg) -> dict:
    steady = metrics[1:] or metrics  # step 1 includes graph capture
    rollout = sum(m["rollout_s"] for m in steady)
    update = sum(m["update_s"] for m in steady)
    k = max(1, min(5, len(metrics) // 2))
    return {
        "date": datetime.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "command": "python scripts/rl_gpu_run.py " + " ".join(shlex.quote(a) for a in argv),
        "steps": len(metrics),
        "batch_prompts": cfg.batch_prompts, "group_size": cfg.rollout.group_size,
        "max_new_tokens": cfg.rollout.max_new_tokens, "rollout_dtype": cfg.rollout.dtype,
        "reward_first_steps": statistics.mean(m["reward_mean"] for m in metrics[:k]),
        "reward_last_steps": statistics.mean(m["reward_mean"] for m in metrics[-k:]),
        "accuracy_first_steps": statistics.mean(m["accuracy"] for m in metrics[:k]),
        "accuracy_last_steps": statistics.mean(m["accuracy"] for m in metrics[-k:]),
        "response_length_mean": statistics.mean(m["response_length"] for m in metrics),
        "rollout_s_total": rollout, "update_s_total": update,
        "reward_s_total": sum(m["reward_s"] for m in steady),
        "rollout_share": rollout / (rollout + update) if rollout + update else None,
        "rollout_over_update": rollout / update if update else None,
        "step_s_median": statistics.median(m["step_s"] for m in steady),
        "gen_tokens_per_s_median": statistics.median(m["gen_tokens_per_s"] for m in steady),
        "peak_memory_gb": max((m.get("peak_memory_gb", 0.0) for m in metrics), default=0.0),
        "note": "totals exclude step 1 (CUDA-graph capture); update = old log-probs + PPO mini-batches",
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the distilled hybrid (a thinkfast student directory with its tokenizer)")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--data", default="../shared/data/gsm8k_train.jsonl", help="GSM8K train JSONL")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides of grpo_smollm2_hybrid_gsm8k")
    args = ap.parse_args(argv)

    from thinkfast.commands.train import resolve_config_path
    from thinkfast.config import load_config
    from thinkfast.rl.config import GRPOConfig
    from thinkfast.rl.run import run_grpo
    from thinkfast.training.metrics import read_metrics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"policy={args.policy}", f"data.path={args.data}", f"output_dir={out / 'run'}",
                 f"max_steps={args.steps}", *args.overrides]
    cfg = load_config(GRPOConfig, resolve_config_path("grpo_smollm2_hybrid_gsm8k"), overrides)
    run_grpo(cfg, resume=(out / "run" / "checkpoint" / "latest.pt").is_file())
    metrics = read_metrics(out / "run" / "metrics.jsonl")
    plot(metrics, out / "reward.png", f"GRPO, {Path(args.policy).name} on GSM8K train")
    summary = summarise(metrics, argv, cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
