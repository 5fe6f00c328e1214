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
import json
from pathlib import Path

import torch

from thinkfast.device import resolve_dtype
from thinkfast.errors import ThinkfastError
from thinkfast.storage import model_dir_complete
from thinkfast.training.config import DataConfig, TrainConfig
from thinkfast.training.data import load_documents
from thinkfast.training.distributed import DistInfo, setup_device
from thinkfast.training.fidelity import FidelityLog, fidelity
from thinkfast.training.metrics import PhaseTimes
from thinkfast.training.packing import PackedLoader
from thinkfast.training.tasks import MohawkLayerTask, TokenLossTask
from thinkfast.training.trainer import TrainResult, train

def _teacher_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    return resolve_dtype(cfg.teacher_dtype, device)


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


def teacher_stack(hf_teacher, dtype: torch.dtype, device: torch.device, compile_glue: bool = False):
    """The teacher as an all-attention ThinkfastForCausalLM: exact logits, handles packed rows.
    `compile_glue`: training's `compile: true` applies to the teacher's forward as to the student's."""
    from thinkfast.convert import convert

    return freeze_teacher(convert(hf_teacher, target="attention").to(device=device, dtype=dtype), compile_glue)


def freeze_teacher(stack, compile_glue: bool = False):
    """Eval mode, no gradients, and the decoder blocks' glue compiled when training's `compile` is on."""
    stack.eval().compile_glue(compile_glue)
    for p in stack.parameters():
        p.requires_grad_(False)
    return stack


def build_student(cfg: TrainConfig, hf_teacher=None):
    from thinkfast.convert import convert

    s = cfg.student
    if s.path:  # a saved student, or a plain HF model to train through our stack
        from thinkfast.loading import load_model

        return load_model(s.path, dtype=torch.float32, device="cpu", tokenizer=False)[0]
    return convert(hf_teacher, s.spec(), seed=cfg.seed)  # a mohawk + hybrid request stopped in TrainConfig.validate


def _prepare(cfg: TrainConfig):
    device, info = setup_device(cfg.device)
    torch.manual_seed(cfg.seed)
    return device, info


def _finish_student(student, cfg: TrainConfig):
    student.activation_checkpointing = cfg.activation_checkpointing
    student.compile_glue(cfg.compile)
    student.cast_ssm_params_fp32()
    return student.train()


def heldout_batches(cfg: TrainConfig, tokenizer) -> list[dict] | None:
    """The held-out rows fidelity is measured on: the first `heldout_rows` rows, in file order."""
    if cfg.heldout is None:
        return None
    from thinkfast.training.packing import build_row, collate, plan_rows

    docs = load_documents(cfg.heldout, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    plan = plan_rows([len(d.input_ids) for d in docs], list(range(len(docs))), cfg.heldout.seq_len, cfg.heldout.packing)
    rows = [build_row([docs[i] for i in row], cfg.heldout.seq_len, pad) for row in plan[: cfg.heldout_rows]]
    step = max(1, cfg.micro_batch_size)
    return [collate(rows[i : i + step]) for i in range(0, len(rows), step)]


def _measure(fid: FidelityLog, key: str, student, teacher, heldout, device, layers=None) -> None:
    if heldout is None or fid.has(key):
        return
    student.to(device)
    point = fidelity(student, teacher, heldout)
    if layers:
        from thinkfast.training.align import layer_errors

        point["layer_errors"] = {str(i): e for i, e in layer_errors(student, teacher, heldout, layers).items()}
    fid.record(key, point)
    extra = f", mean layer error {sum(point['layer_errors'].values()) / len(layers):.3f}" if layers else ""
    print(f"[thinkfast] {key}: KL to teacher {point['kl_to_teacher']:.3f} nats/token, top-1 agreement "
          f"{point['top1_agreement']:.1%}{extra}", flush=True)


def _align_data(cfg: TrainConfig) -> DataConfig:
    """Alignment reads the training data, every real token (it has no labels), at its own row length."""
    return dataclasses.replace(cfg.data, seq_len=cfg.align.seq_len or cfg.data.seq_len, train_on="all")


def _align_stage(cfg: TrainConfig, student, teacher, tokenizer, info, device, resume, on_step, fid, heldout, clock):
    """Stage 1 of hybrid distillation (align.py), in <output_dir>/align; returns the aligned student."""
    from thinkfast.models import ThinkfastForCausalLM
    from thinkfast.training.align import MixerAlignTask

    a = cfg.align
    align_dir = Path(cfg.output_dir) / "align"
    selection_file = align_dir / "selection.json"
    keep = a.select_attention or (cfg.student.keep_attention if cfg.student.attention_layers == "auto" else 0)
    final = align_dir / "final"
    if model_dir_complete(final) and (not keep or selection_file.is_file()):  # finished earlier
        student = ThinkfastForCausalLM.from_pretrained(str(final), dtype=torch.float32)
        if keep:  # selection.json is written before the model it describes: finish a save a kill cut short
            chosen = [i for i in json.loads(selection_file.read_text())["chosen"]
                      if student.config.layer_mixers[i] != "attention"]
            if chosen:
                _save_selected(student, teacher, chosen, final, tokenizer, info)
        return student
    layers = [i for i, m in enumerate(student.config.layer_mixers) if m != "attention"]
    if model_dir_complete(final):  # killed between alignment and selection: redo the selection only
        student = ThinkfastForCausalLM.from_pretrained(str(final), dtype=torch.float32)
    else:
        with clock("measure"):
            _measure(fid, "init", student, teacher, heldout, device, layers)
        student = _finish_student(student, cfg)
        task = MixerAlignTask(student, teacher, layers, tokenizer)
        micro, accum = a.micro_batch_size or cfg.micro_batch_size, a.grad_accum or cfg.grad_accum
        stage_cfg = dataclasses.replace(cfg, output_dir=str(align_dir), micro_batch_size=micro, grad_accum=accum,
                                        optim=dataclasses.replace(cfg.optim, warmup=a.warmup, lr=a.lr))
        loader = make_loader(_align_data(cfg), stage_cfg, tokenizer, info)
        with clock("align"):
            train(task, loader, stage_cfg, align_dir, a.max_steps, a.lr, info, device, resume, on_step)
        student = task.module.student
    student.to(device)
    if keep:
        with clock("selection"):
            chosen = _select_layers(cfg, student, teacher, tokenizer, info, device, keep, final, selection_file)
        layers = [i for i in layers if i not in chosen]
    with clock("measure"):
        _measure(fid, "aligned", student, teacher, heldout, device, layers)
    return student


def _save_selected(student, teacher, chosen: list[int], final: Path, tokenizer, info) -> None:
    """The chosen layers back to the teacher's attention, in place; the result replaces <align>/final."""
    from thinkfast import storage
    from thinkfast.training.align import use_teacher_attention

    use_teacher_attention(student, teacher, chosen)
    if info.main:
        with storage.atomic_dir(final) as tmp:
            student.save_pretrained(str(tmp), safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))


def _select_layers(cfg: TrainConfig, student, teacher, tokenizer, info, device, keep: int, final: Path,
                   selection_file: Path) -> list[int]:
    """Greedy choice of the `keep` layers that go back to the teacher's attention (align.py), made in place
    on `student`; selection.json is written first, then <align>/final (a rerun finishes a save a kill cut)."""
    from thinkfast import storage
    from thinkfast.convert.layout import spread_attention_layers
    from thinkfast.training.align import select_attention_layers

    a = cfg.align
    sel_cfg = dataclasses.replace(cfg, micro_batch_size=a.selection_rows, grad_accum=1, seed=cfg.seed + 1)
    rows = make_loader(_align_data(cfg), sel_cfg, tokenizer, info).next_step()
    step = max(1, cfg.micro_batch_size)
    batches = [{k: v[i : i + step].to(device) for k, v in rows[0].items()} for i in range(0, a.selection_rows, step)]
    even = spread_attention_layers(len(student.config.layer_mixers), keep)
    result = select_attention_layers(student, teacher, batches, keep, even=even)
    if info.main:
        storage.atomic_write_json(selection_file, result)
    _save_selected(student, teacher, result["chosen"], final, tokenizer, info)
    print(f"[thinkfast] attention layers chosen by measurement: {result['chosen']} (KL {result['kl_chosen']:.3f}; "
          f"evenly spread {result['even']}: {result['kl_even']:.3f})", flush=True)
    return list(result["chosen"])


def run_distill(cfg: TrainConfig, resume: bool = False, on_step=None) -> TrainResult:
    """align (optional) -> end to end on the training data -> on-policy (optional), one folder each:
    <output_dir>/align, then <output_dir> itself, or <output_dir>/offline and <output_dir> with on-policy.
    Where the time went is in <output_dir>/timings.json, the student's fidelity in fidelity.json."""
    device, info = _prepare(cfg)
    tokenizer = load_recipe_tokenizer(cfg)
    loader = make_loader(cfg.data, cfg, tokenizer, info)  # data errors surface before models load
    heldout = heldout_batches(cfg, tokenizer)
    clock = PhaseTimes(cfg.output_dir, enabled=info.main)
    with clock("load"):
        hf_teacher = load_hf_teacher(cfg, device)
        student = build_student(cfg, hf_teacher)
        teacher = teacher_stack(hf_teacher, _teacher_dtype(cfg, device), device, cfg.compile)
        del hf_teacher
    fid = FidelityLog(cfg.output_dir, enabled=info.main)
    if cfg.align.max_steps:
        student = _align_stage(cfg, student, teacher, tokenizer, info, device, resume, on_step, fid, heldout, clock)
    else:
        with clock("measure"):
            _measure(fid, "init", student, teacher, heldout, device)
    onpolicy = cfg.onpolicy.max_steps > 0
    offline_dir = Path(cfg.output_dir) / "offline" if onpolicy else Path(cfg.output_dir)
    if onpolicy and model_dir_complete(offline_dir / "final"):  # the offline steps finished earlier
        from thinkfast.models import ThinkfastForCausalLM

        student = ThinkfastForCausalLM.from_pretrained(str(offline_dir / "final"), dtype=torch.float32)
    else:
        task = _end_to_end_task(student, cfg, teacher, tokenizer)
        offline_cfg = dataclasses.replace(cfg, output_dir=str(offline_dir))
        with clock("end_to_end"):
            result = train(task, loader, offline_cfg, offline_dir, cfg.max_steps, cfg.optim.lr, info, device, resume,
                           on_step)
        student = task.module.student
    if not onpolicy:
        with clock("measure"):
            _measure(fid, "final", student, teacher, heldout, device)
        return result
    with clock("measure"):
        _measure(fid, "offline", student, teacher, heldout, device)
    return _onpolicy_stage(cfg, student, teacher, tokenizer, loader, info, device, resume, on_step, fid, heldout,
                           clock)


def _end_to_end_task(student, cfg: TrainConfig, teacher, tokenizer) -> TokenLossTask:
    student = _finish_student(student, cfg)
    for p in student.parameters():  # end to end: every parameter trains
        p.requires_grad_(True)
    task = TokenLossTask(student, cfg.loss, teacher, tokenizer)
    if cfg.optim.teacher_lr_scale != 1.0:
        task.lr_scale = teacher_params_lr_scale(student, cfg.optim.teacher_lr_scale)
    return task


def teacher_params_lr_scale(student, factor: float):
    """name -> lr multiplier: 1 for the Mamba mixers (new), `factor` for everything copied from the teacher.
    Names are those of the task's module (`student.model.layers.<i>.mixer...`)."""
    mixers = tuple(f"student.model.layers.{i}.mixer." for i, kind in enumerate(student.config.layer_mixers)
                   if kind != "attention")
    return lambda name: 1.0 if name.startswith(mixers) else factor


def _onpolicy_stage(cfg: TrainConfig, student, teacher, tokenizer, loader, info, device, resume, on_step, fid,
                    heldout, clock) -> TrainResult:
    """End to end on the student's own answers to the training prompts (onpolicy.py), in <output_dir>."""
    from thinkfast.training.onpolicy import OnPolicyLoader, engine_generate, unique_prompts

    op = cfg.onpolicy
    if info.enabled:
        raise ThinkfastError("onpolicy runs on one process for now (each round is generated by one engine): "
                             "run it without torchrun, or set onpolicy.max_steps=0")
    task = _end_to_end_task(student, cfg, teacher, tokenizer)
    task.module.student.to(device)
    prompts = unique_prompts(loader.docs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    generate = engine_generate(task.module.student, tokenizer, op, prompts)
    op_loader = OnPolicyLoader(prompts, op, generate, cfg.data.seq_len, cfg.micro_batch_size, cfg.grad_accum, pad,
                               cfg.seed, cfg.output_dir, info.main)
    optim = dataclasses.replace(cfg.optim, lr=op.lr or cfg.optim.lr,
                                warmup=cfg.optim.warmup if op.warmup is None else op.warmup)
    op_cfg = dataclasses.replace(cfg, optim=optim)
    with clock("onpolicy"):
        result = train(task, op_loader, op_cfg, cfg.output_dir, op.max_steps, optim.lr, info, device, resume, on_step)
    with clock("measure"):
        _measure(fid, "final", task.module.student, teacher, heldout, device)
    return result


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
    teacher = teacher_stack(hf_teacher, _teacher_dtype(cfg, device), device, cfg.compile)
    del hf_teacher
    heldout = heldout_batches(cfg, tokenizer)
    fid = FidelityLog(cfg.output_dir, enabled=info.main)
    _measure(fid, "init", student, teacher, heldout, device)
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
            task = MohawkLayerTask(student, teacher, stage.stage, layers, tokenizer, matrix_chunk=stage.matrix_chunk)
        else:
            for p in student.parameters():
                p.requires_grad_(True)
            task = TokenLossTask(student, stage.loss or cfg.loss, teacher, tokenizer)
        stage_cfg = dataclasses.replace(cfg, output_dir=str(stage_dir), **_stage_distributed(stage.stage, cfg))
        lr = stage.lr or cfg.optim.lr
        results.append(train(task, loader, stage_cfg, stage_dir, stage.max_steps, lr, info, device, resume, on_step))
        student = task.module.student.cpu() if device.type == "cpu" else task.module.student
        _measure(fid, stage_dir.name, student, teacher, heldout, device)
    return results


def _stage_distributed(stage: int, cfg: TrainConfig) -> dict:
    """Stage 1 reads the mixers' parameters outside the blocks' forward, which FSDP does not gather: it
    always runs replicated (DDP); it trains only in_proj/conv/decay, so the optimizer state is small."""
    return {"distributed": "ddp"} if stage == 1 and cfg.distributed == "fsdp" else {}


RUNNERS = {"distill": run_distill, "mohawk": run_mohawk, "sft": run_sft}


def run(cfg: TrainConfig, resume: bool = False, on_step=None):
    return RUNNERS[cfg.recipe](cfg, resume=resume, on_step=on_step)
