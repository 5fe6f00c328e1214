"""`thinkfast eval STEP`: sample, grade, score, plot, report, or all of them."""

from __future__ import annotations

import argparse
import os

from thinkfast.config import load_config, save_config, to_dict
from thinkfast.errors import ThinkfastError

STEPS = ("sample", "grade", "score", "plot", "report", "all")


def register(subparsers) -> None:
    from thinkfast.inference.params import SSM_STATE_DTYPES

    p = subparsers.add_parser(
        "eval",
        help="test-time scaling evaluation: sample -> grade -> score -> plot -> report",
        description="Sample N solutions per problem, grade them, compute pass@k / maj@k / BoN@k / weighted BoN@k, "
        "map k to seconds, plot accuracy vs time with the Pareto front, and write a Markdown report.",
    )
    p.add_argument("step", choices=STEPS, help="which step to run ('all' runs them in order)")
    p.add_argument("--config", "-c", help="YAML file for EvalConfig (see thinkfast/evaluation/config.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set n_samples=32 --set sampling.temperature=0.8")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="model to evaluate (local HF dir); repeat for several; replaces the config's models")
    p.add_argument("--dataset", help="gsm8k | math500 | aime24 | amc23 | synthetic | path.jsonl")
    p.add_argument("--out", help="output folder (default: the config's out_dir)")
    p.add_argument("--ssm-state-dtype", choices=list(SSM_STATE_DTYPES), default=None,
                   help="engine models' Mamba recurrent state (fp32 | bf16) for every model; replaces each "
                        "model's `ssm_state_dtype` (for a side-by-side comparison list the model twice in the config)")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="sample with N local processes, one engine per GPU (under torchrun leave it out: "
                   "every rank samples its share)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from thinkfast.evaluation import parallel
    from thinkfast.evaluation.config import EvalConfig
    from thinkfast.evaluation.pipeline import STEPS as PIPELINE_STEPS
    from thinkfast.evaluation.pipeline import run as run_pipeline

    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset.name={args.dataset}")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.gpus is not None:
        overrides.append(f"gpus={args.gpus}")
    cfg = load_config(EvalConfig, args.config, overrides)
    if args.model or args.ssm_state_dtype:
        models = ([{"name": os.path.basename(os.path.normpath(m)) or m, "path": m} for m in args.model] if args.model
                  else to_dict(cfg)["models"])
        if args.ssm_state_dtype:
            models = [{**m, "ssm_state_dtype": args.ssm_state_dtype} for m in models]
        cfg = load_config(EvalConfig, {**to_dict(cfg), "models": models})
    if not cfg.models and args.step in ("sample", "grade", "score", "all"):
        raise ThinkfastError("no models: pass --model PATH or list `models:` in the config")
    os.makedirs(cfg.out_dir, exist_ok=True)
    ranks = parallel.from_env()
    if ranks.rank == 0:
        save_config(cfg, os.path.join(cfg.out_dir, f"config.{args.step}.yaml"))
    steps = PIPELINE_STEPS if args.step == "all" else (args.step,)
    try:
        result = run_pipeline(cfg, steps)
    finally:
        if ranks.enabled:
            parallel.finish_torchrun()
    if "report" in result:
        print(f"report: {result['report']}")
    elif "plots" in result:
        print("plots: " + ", ".join(result["plots"].values()))
    return 0
