"""`thinkfast grpo CONFIG [key=value ...] [--resume]`: GRPO on verifiable math rewards (docs/rl.md)."""

from __future__ import annotations

from thinkfast.config import load_config


def _grpo(args) -> int:
    from thinkfast.commands.train import resolve_config_path
    from thinkfast.rl.config import GRPOConfig
    from thinkfast.rl.run import run_grpo

    cfg = load_config(GRPOConfig, resolve_config_path(args.config), args.overrides)
    from thinkfast.storage import rank_zero_lock

    with rank_zero_lock(cfg.output_dir, f"GRPO folder {cfg.output_dir}"):  # before any model loads
        result = run_grpo(cfg, resume=args.resume)
    if result.final_dir is not None and result.metrics:
        last = result.metrics[-1]
        print(f"saved {result.final_dir}  (last step: reward {last['reward_mean']:.3f}, accuracy {last['accuracy']:.3f})")
    return 0


def register(subparsers) -> None:
    text = "GRPO: rollouts from the engine, grader rewards, clipped policy-ratio updates"
    p = subparsers.add_parser("grpo", help=text, description=text)
    p.add_argument("config", help="YAML file, or the name of a shipped config (e.g. grpo_tiny_cpu)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. policy=runs/student rollout.max_new_tokens=2048")
    p.add_argument("--resume", action="store_true", help="continue from output_dir's checkpoint")
    p.set_defaults(func=_grpo)
