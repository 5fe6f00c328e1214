"""`thinkfast convert`: teacher -> hybrid / pure student, saved in HF layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thinkfast.errors import ThinkfastError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices like 3,8,13, got {text!r}") from err


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a teacher into a hybrid or pure Mamba student")
    p.add_argument("--teacher", required=True, help="hub name, local HF dir, .gguf file, or 'smollm2-135m'")
    p.add_argument("--to", dest="target", choices=["hybrid", "llamba", "attention"], default="hybrid")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--attention-layers", type=_int_list, help="layers kept as attention, e.g. 3,8,13,18,23,27")
    group.add_argument("--keep-attention", type=int,
                       help="number of attention layers, spread evenly (default: a quarter; 0: every layer Mamba)")
    p.add_argument("--mixer", choices=["mamba1", "mamba2"], default="mamba1", help="Mamba mixer of a hybrid")
    p.add_argument("--learnable-gqa-expansion", action="store_true", help="M1's learnable d_xb->d_inner maps")
    p.add_argument("--out", required=True, help="output directory (config.json + model.safetensors + tokenizer)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from thinkfast.convert import StudentSpec, student_config_from_teacher, transfer_weights
    from thinkfast.teachers import load_teacher, load_tokenizer
    from thinkfast.teachers.loading import load_config

    from thinkfast.config import check_local_model_path

    check_local_model_path(args.teacher, "teacher")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ThinkfastError(f"output directory {out} is not empty; choose a new --out")
    spec = StudentSpec(target=args.target, attention_layers=args.attention_layers, keep_attention=args.keep_attention,
                       mixer=args.mixer, learnable_gqa_expansion=args.learnable_gqa_expansion)
    # the student config is built once, from the teacher's config, before any weights load
    config = student_config_from_teacher(load_config(args.teacher), spec)
    teacher, _ = load_teacher(args.teacher, dtype=torch.float32, tokenizer=False)
    student = transfer_weights(teacher, config, seed=args.seed)
    from thinkfast.storage import atomic_dir

    summary = {"teacher": args.teacher, "target": args.target, **student.summary()}
    with atomic_dir(out) as tmp:  # a kill leaves no half-written student (which a rerun would refuse)
        student.save_pretrained(tmp)
        try:  # the tokenizer (with its chat template) travels with the student when the teacher has one
            load_tokenizer(args.teacher).save_pretrained(tmp)
        except (OSError, ValueError) as err:
            print(f"note: teacher {args.teacher} has no loadable tokenizer ({type(err).__name__}); saved weights only",
                  file=sys.stderr)
        (tmp / "thinkfast_conversion.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0
