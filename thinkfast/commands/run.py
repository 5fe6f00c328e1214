"""`thinkfast run [CONFIG]`: the main job — distil, measure speed, scale test-time compute, report."""

from __future__ import annotations

from pathlib import Path

from thinkfast.config import shipped_config

CPU_DEFAULT, GPU_DEFAULT = "run_cpu_default", "run_gpu_default"


def default_config() -> str:
    """run_gpu_default (Qwen2.5-Coder-0.5B teacher, ~30 min on one H100/H200) where CUDA is present, else
    run_cpu_default (SmolLM2-135M teacher, ~12 min on 2 CPU cores)."""
    import torch

    return GPU_DEFAULT if torch.cuda.is_available() else CPU_DEFAULT


def resolve_config(name: str) -> Path:
    return shipped_config(name, prefix="run_")


def register(subparsers) -> None:
    from thinkfast.pipeline import STAGES

    p = subparsers.add_parser(
        "run",
        help="the main job: teacher -> hybrid + pure students -> distil -> speed -> test-time scaling -> report",
        description="Each stage caches its output under out_dir/stages; a rerun skips finished stages and a killed "
        "run resumes where it stopped.",
    )
    p.add_argument("config", nargs="?", default=None,
                   help=f"YAML file or shipped config name (default: {GPU_DEFAULT} with CUDA, else {CPU_DEFAULT})")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. out_dir=runs/x n_samples=16")
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and every later one")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.add_argument("--students", metavar="NAME[,NAME]",
                   help="run only these of the config's students (a change of config: a new out_dir, or --from)")
    p.set_defaults(func=run)


def select_students(cfg, names: str) -> list:
    from thinkfast.errors import ThinkfastError

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [s.name for s in cfg.students]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ThinkfastError(f"--students {names}: the config's students are {known}")
    return [s for s in cfg.students if s.name in wanted]


def run(args) -> int:
    from thinkfast.config import load_config
    from thinkfast.pipeline import RunConfig, run_pipeline

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():  # `thinkfast run out_dir=x`
        config, overrides = None, [config, *overrides]
    config = config or default_config()
    cfg = load_config(RunConfig, resolve_config(config), overrides=overrides)
    if args.students:
        cfg.students = select_students(cfg, args.students)
    run_pipeline(cfg, from_stage=args.from_stage, until=args.until)
    return 0
