"""Recipes: config -> student, teacher, data, task -> trainer.

    distill  hybrid student (converted from the teacher, or student.path), every parameter trainable,
             token loss (reverse KL by default) against the frozen teacher
    mohawk   pure (or any) student; stages run in order, each in <output_dir>/stage<k>-<n>/:
             1 mixer matrix vs attention matrix, 2 block output, 3 end-to-end logits (all trainable)
    sft      CE on labelled tokens; the teacher is never loaded
Everything that can be checked (config, data, lengths) is checked before a model is built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.storage import model_dir_complete
from thinkfast.training.config import DataConfig, TrainConfig
from thinkfast.training.data import load_documents
from thinkfast.training.distributed import DistInfo, setup_device
from thinkfast.training.packing import PackedLoader
from thinkfast.training.tasks import MohawkLayerTask, TokenLossTask
from thinkfast.training.trainer import TrainResult, train

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _teacher_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.teacher_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[cfg.teacher_dtype]


def load_recipe_tokenizer(cfg: TrainConfig):
    from thinkfast.teachers.loading import load_tokenizer

    spec = cfg.tokenizer or (cfg.student.path if cfg.recipe == "sft" else cfg.teacher) or cfg.student.path
    try:
        return load_tokenizer(spec)
    except ThinkfastError:
        raise
    except Exception as err:
        raise ThinkfastError(f"could not load a tokenizer from {spec!r}: {err}. Set `tokenizer:` to one") from err


def make_loader(data: DataConfig, cfg: TrainConfig, tokenizer, info: DistInfo) -> PackedLoader:
    docs = load_documents(data, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return PackedLoader(
        docs, data.seq_len, cfg.micro_batch_size, cfg.grad_accum, data.packing, data.shuffle, cfg.seed, pad,
        info.rank, info.world_size,
    )


def load_hf_teacher(cfg: TrainConfig, device: torch.device):
    from thinkfast.teachers.loading import load_teacher

    model, _ = load_teacher(cfg.teacher, dtype=torch.float32, device="cpu", tokenizer=False)
    return model


def teacher_stack(hf_teacher, dtype: torch.dtype, device: torch.device):
    """The teacher as an all-attention ThinkfastForCausalLM: exact logits, handles packed rows."""
    from thinkfast.convert import convert

    stack = convert(hf_teacher, target="attention").to(device=device, dtype=dtype).eval()
    for p in stack.parameters():
        p.requires_grad_(False)
    return stack


def build_student(cfg: TrainConfig, hf_teacher=None):
    from thinkfast.convert import convert
    from thinkfast.models import ThinkfastForCausalLM

    s = cfg.student
    if s.path:
        from transformers import AutoConfig

        if AutoConfig.from_pretrained(s.path).model_type == "thinkfast":
            return ThinkfastForCausalLM.from_pretrained(s.path, dtype=torch.float32)
        from thinkfast.teachers.loading import load_teacher

        hf, _ = load_teacher(s.path, tokenizer=False)  # a plain HF model: train it through our stack
        return convert(hf, target="attention")
    target = "llamba" if cfg.recipe == "mohawk" and s.target == "hybrid" and s.attention_layers is None and s.keep_attention is None else s.target
    return convert(hf_teacher, target=target, attention_layers=s.attention_layers, keep_attention=s.keep_attention,
                   mixer=s.mixer, seed=cfg.seed)


def _prepare(cfg: TrainConfig):
    device, info = setup_device(cfg.device)
    torch.manual_seed(cfg.seed)
    return device, info


def _finish_student(student, cfg: TrainConfig):
    student.activation_checkpointing = cfg.activation_checkpointing
    student.cast_ssm_params_fp32()
    return student.train()


def run_distill(cfg: TrainConfig, resume: bool = False, on_step=None) -> TrainResult:
    device, info = _prepare(cfg)
    tokenizer = load_recipe_tokenizer(cfg)
    loader = make_loader(cfg.data, cfg, tokenizer, info)  # data errors surface before models load
    hf_teacher = load_hf_teacher(cfg, device)
    student = _finish_student(build_student(cfg, hf_teacher), cfg)
    teacher = teacher_stack(hf_teacher, _teacher_dtype(cfg, device), device)
    del hf_teacher
    task = TokenLossTask(student, cfg.loss, teacher, tokenizer)
    return train(task, loader, cfg, cfg.output_dir, cfg.max_steps, cfg.optim.lr, info, device, resume, on_step)


def run_sft(cfg: TrainConfig, resume: bool = False, on_step=None) -> TrainResult:
    if set(cfg.loss.terms()) != {"ce"}:
        raise ThinkfastError(
            f"sft trains on cross-entropy only (the teacher is never loaded); got loss terms {sorted(cfg.loss.terms())}: "
            "set loss.reverse_kl=0 loss.ce=1"
        )
    device, info = _prepare(cfg)
    tokenizer = load_recipe_tokenizer(cfg)
    loader = make_loader(cfg.data, cfg, tokenizer, info)
    student = _finish_student(build_student(cfg), cfg)
    task = TokenLossTask(student, cfg.loss, None, tokenizer)
    return train(task, loader, cfg, cfg.output_dir, cfg.max_steps, cfg.optim.lr, info, device, resume, on_step)


def run_mohawk(cfg: TrainConfig, resume: bool = False, on_step=None) -> list[TrainResult]:
    from thinkfast.models import ThinkfastForCausalLM

    device, info = _prepare(cfg)
    tokenizer = load_recipe_tokenizer(cfg)
    loaders = [make_loader(st.data or cfg.data, cfg, tokenizer, info) for st in cfg.stages]
    hf_teacher = load_hf_teacher(cfg, device)
    student = build_student(cfg, hf_teacher)
    teacher = teacher_stack(hf_teacher, _teacher_dtype(cfg, device), device)
    del hf_teacher
    results = []
    for index, (stage, loader) in enumerate(zip(cfg.stages, loaders)):
        stage_dir = Path(cfg.output_dir) / f"stage{index + 1}-{stage.stage}"
        if model_dir_complete(stage_dir / "final"):  # finished earlier: continue from its result
            student = ThinkfastForCausalLM.from_pretrained(str(stage_dir / "final"), dtype=torch.float32)
            continue
        student = _finish_student(student, cfg)
        if stage.stage in (1, 2):
            layers = stage.layers if stage.layers is not None else [
                i for i, m in enumerate(student.config.layer_mixers) if m != "attention"
            ]
            task = MohawkLayerTask(student, teacher, stage.stage, layers, tokenizer)
        else:
            for p in student.parameters():
                p.requires_grad_(True)
            task = TokenLossTask(student, stage.loss or cfg.loss, teacher, tokenizer)
        stage_cfg = dataclasses.replace(cfg, output_dir=str(stage_dir))
        lr = stage.lr or cfg.optim.lr
        results.append(train(task, loader, stage_cfg, stage_dir, stage.max_steps, lr, info, device, resume, on_step))
        student = task.module.student.cpu() if device.type == "cpu" else task.module.student
    return results


RUNNERS = {"distill": run_distill, "mohawk": run_mohawk, "sft": run_sft}


def run(cfg: TrainConfig, resume: bool = False, on_step=None):
    return RUNNERS[cfg.recipe](cfg, resume=resume, on_step=on_step)
