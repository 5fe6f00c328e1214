"""`thinkfast distill|mohawk|sft CONFIG [key=value ...] [--resume]` and `thinkfast gen-data`."""

from __future__ import annotations

from thinkfast.config import load_config, shipped_config
from thinkfast.errors import ThinkfastError


def resolve_config_path(name: str) -> str:
    return str(shipped_config(name))


def load_train_config(recipe: str, path: str, overrides: list[str]):
    from thinkfast.training.config import TrainConfig

    cfg = load_config(TrainConfig, resolve_config_path(path), overrides)
    if cfg.recipe != recipe:
        raise ThinkfastError(f"config {path} is a {cfg.recipe!r} recipe; run it with `thinkfast {cfg.recipe}` (or set recipe={recipe})")
    return cfg


def _train(args) -> int:
    from thinkfast.training.recipes import run

    from thinkfast.storage import rank_zero_lock

    cfg = load_train_config(args.command, args.config, args.overrides)
    cfg.check_paths()
    with rank_zero_lock(cfg.output_dir, f"training folder {cfg.output_dir}"):  # before any model loads
        result = run(cfg, resume=args.resume)
    results = result if isinstance(result, list) else [result]
    for r in results:
        if r.final_dir is not None:
            last = f"{r.losses[-1]:.4f}" if r.losses else "n/a"
            print(f"saved {r.final_dir}  (last loss {last}, {r.tokens_per_s:,.0f} tokens/s)")
    return 0


def _gen_data(args) -> int:
    from thinkfast.inference.params import SamplingParams
    from thinkfast.training.config import DataConfig
    from thinkfast.training.generate_data import generate_kd_data

    from thinkfast.config import check_local_model_path

    check_local_model_path(args.teacher, "teacher")
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    params.validate()
    data = DataConfig(path=args.prompts, system_prompt=args.system_prompt, prompt_template=args.prompt_template)
    data.validate()
    added = generate_kd_data(args.teacher, args.prompts, args.out, params, data, n=args.n, batch_size=args.batch_size,
                             limit=args.limit, keep_truncated=args.keep_truncated, device=args.device, dtype=args.dtype)
    print(f"wrote {added} examples to {args.out}")
    return 0


def register(subparsers) -> None:
    helps = {
        "distill": "distil a hybrid student end to end (reverse KL against the frozen teacher)",
        "mohawk": "MOHAWK stages 1-3 for a pure Mamba-2 (Llamba) student",
        "sft": "supervised fine-tuning (cross-entropy on assistant tokens; no teacher)",
    }
    for name, text in helps.items():
        p = subparsers.add_parser(name, help=text, description=text)
        p.add_argument("config", help="YAML file, or the name of a shipped config (e.g. tiny_distill_cpu)")
        p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=1e-5 max_steps=200")
        p.add_argument("--resume", action="store_true", help="continue from output_dir's checkpoint")
        p.set_defaults(func=_train)
    g = subparsers.add_parser("gen-data", help="teacher-generated (sequence-level KD) training data from prompts")
    g.add_argument("--teacher", required=True, help="hub name, model directory, .gguf file or smollm2-135m")
    g.add_argument("--prompts", required=True, help="JSONL of prompts (question/problem/prompt fields, or messages)")
    g.add_argument("--out", required=True, help="output JSONL (appended to; prompts already in it are skipped)")
    g.add_argument("--n", type=int, default=1, help="samples per prompt")
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    g.add_argument("--system-prompt", default=None)
    g.add_argument("--prompt-template", default="{prompt}")
    g.add_argument("--keep-truncated", action="store_true", help="keep answers cut by max-new-tokens")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    g.set_defaults(func=_gen_data)
