"""The stages of `thinkfast run`.  Each takes (cfg, paths, results so far) and returns a JSON-able
result that the runner caches; each is itself resumable where its work is long (training
checkpoints, the sample store, the KD data file)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from thinkfast import storage
from thinkfast.config import from_dict
from thinkfast.device import dtype_name, resolve_device, resolve_dtype
from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, engine_max_len
from thinkfast.pipeline.config import RunConfig


class RunPaths:
    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir)
        self.stages = self.root / "stages"
        self.data = self.root / "data"
        self.students = self.root / "students"
        self.eval = self.root / "eval"
        self.report = self.root / "report"

    def student(self, name: str) -> Path:
        return self.students / name

    def rel(self, path: str | Path) -> str:
        """Stage results store paths relative to the run directory, so a run can be moved."""
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def abs(self, rel: str) -> Path:
        return self.root / rel


def _device(cfg: RunConfig) -> torch.device:
    return resolve_device(cfg.device)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _model_facts(model) -> dict:
    """Layers, parameters and decode-state bytes per sequence at 4096 tokens; the recurrent (conv + SSM) bytes
    once per SSM state dtype the engine offers."""
    from thinkfast.device import DTYPES
    from thinkfast.inference.params import SSM_STATE_DTYPES

    info = model.summary()
    per_dtype = {name: model.allocate_state(1, 4096, dtype=torch.bfloat16, device="meta",
                                            ssm_dtype=DTYPES[name]).bytes_per_slot() for name in SSM_STATE_DTYPES}
    return {**info, "kv_bytes_4096": per_dtype["fp32"]["kv"], "recurrent_bytes": per_dtype["fp32"]["recurrent"],
            "recurrent_bytes_by_state_dtype": {name: state["recurrent"] for name, state in per_dtype.items()}}


def _final_facts(directory: Path) -> dict:
    """Layers, parameters and state sizes of a saved student, from its config alone (meta tensors):
    training can change the layout (attention_layers: auto)."""
    from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

    with torch.device("meta"):
        model = ThinkfastForCausalLM(ThinkfastConfig.from_pretrained(str(directory)))
    return _model_facts(model)


# --------------------------------------------------------------------------- convert
def stage_convert(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher

    teacher, tokenizer = load_teacher(cfg.teacher)
    models = {"teacher": {"path": cfg.teacher, **_model_facts(convert(teacher, "attention"))}}
    for s in cfg.students:
        out = paths.student(s.name) / "init"
        if not (out / "config.json").is_file():
            student = convert(teacher, s.spec(), seed=cfg.seed)
            tmp = out.with_name("init.partial")
            student.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(out)
        from thinkfast.models import ThinkfastForCausalLM

        models[s.name] = {"path": paths.rel(out), **_model_facts(ThinkfastForCausalLM.from_pretrained(out))}
        print(f"  {s.name}: {models[s.name]['layers']}, {models[s.name]['parameters'] / 1e6:.1f} M parameters")
    return {"models": models}


# --------------------------------------------------------------------------- kd data
def _kd_prompts(cfg: RunConfig, path: Path, heldout_path: Path) -> tuple[int, int]:
    """Write the KD prompt files: synthetic + GSM8K-train problems, and the next GSM8K-train
    problems as held-out prompts (never trained on).  -> (training prompts, held-out prompts)."""
    from thinkfast.evaluation.datasets import load_problems
    from thinkfast.evaluation.synthetic import synthetic_problems

    k = cfg.kd_data
    rows = [{"question": p.question, "answer": p.gold}
            for p in synthetic_problems(k.synthetic_problems, k.synthetic_steps, seed=cfg.seed + 1000).problems
            ] if k.synthetic_problems else []
    held = []
    if k.gsm8k_problems or k.heldout_problems:
        try:
            gsm = load_problems("gsm8k", cfg.data_dir, "train", k.gsm8k_problems + k.heldout_problems).problems
            rows += [{"question": p.question, "answer": p.gold} for p in gsm[: k.gsm8k_problems]]
            held = [{"question": p.question, "answer": p.gold} for p in gsm[k.gsm8k_problems :]]
        except ThinkfastError as err:
            print(f"  note: no GSM8K train problems for the KD data ({err}); using synthetic problems only")
    if k.heldout_problems and not held:  # no GSM8K: hold out synthetic problems of another seed
        held = [{"question": p.question, "answer": p.gold}
                for p in synthetic_problems(k.heldout_problems, k.synthetic_steps, seed=cfg.seed + 2000).problems]
    storage.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    storage.atomic_write_text(heldout_path, "".join(json.dumps(r) + "\n" for r in held))
    return len(rows), len(held)


def kd_prompt_data(cfg: RunConfig, prompts: Path):
    """How KD prompts become chat messages: the evaluation's prompt style, so the student learns
    the teacher's answers to the questions exactly as they will be asked."""
    from thinkfast.evaluation.prompts import load_template
    from thinkfast.training.config import DataConfig

    template = load_template(cfg.kd_data.prompt or (cfg.eval_sets[0].prompt if cfg.eval_sets else "plain"))
    user = template.user.replace("{", "{{").replace("}", "}}").replace("{{question}}", "{prompt}")
    return DataConfig(path=str(prompts), system_prompt=template.system, prompt_template=user)


def stage_kd_data(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.inference.params import SamplingParams
    from thinkfast.training.generate_data import generate_kd_data

    k = cfg.kd_data
    paths.data.mkdir(parents=True, exist_ok=True)
    prompts, kd = paths.data / "prompts.jsonl", paths.data / "kd.jsonl"
    held_prompts, heldout = paths.data / "heldout_prompts.jsonl", paths.data / "heldout.jsonl"
    n_prompts, n_held = _kd_prompts(cfg, prompts, held_prompts)
    t0 = time.time()
    params = SamplingParams(temperature=k.temperature, max_new_tokens=k.max_new_tokens, seed=cfg.seed)
    for source, target, n in ((prompts, kd, k.samples_per_problem), (held_prompts, heldout, 1)):
        if source.stat().st_size == 0:
            continue
        generate_kd_data(cfg.teacher, str(source), str(target), params, kd_prompt_data(cfg, source), n=n,
                         batch_size=k.batch_size, keep_truncated=k.keep_truncated, device=str(_device(cfg)))
    rows = storage.read_jsonl(kd) if kd.is_file() else []
    if not rows:
        raise ThinkfastError(
            "the teacher finished no answer within kd_data.max_new_tokens: raise it, or set kd_data.keep_truncated"
        )
    held_rows = len(storage.read_jsonl(heldout)) if heldout.is_file() else 0
    out = {"prompts": n_prompts, "examples": len(rows), "path": paths.rel(kd), "seconds": time.time() - t0,
           "mean_tokens": sum(r.get("num_tokens", 0) for r in rows) / len(rows)}
    if held_rows:
        out.update(heldout_prompts=n_held, heldout_examples=held_rows, heldout_path=paths.rel(heldout))
    return out


# --------------------------------------------------------------------------- training
def _train_config(cfg: RunConfig, recipe: str, student_path: str, output_dir: Path, overrides: dict, data_path: str,
                  heldout_path: str | None = None):
    from thinkfast.training.config import TrainConfig

    base = {
        "recipe": recipe,
        "teacher": cfg.teacher if recipe != "sft" else None,
        "tokenizer": student_path if recipe == "sft" else None,
        "student": {"path": student_path},
        "data": {"path": data_path, "seq_len": 256},
        "output_dir": str(output_dir),
        "seed": cfg.seed,
        "device": cfg.device,
        "save_every": 10,
    }
    if recipe == "sft":
        base["loss"] = {"reverse_kl": 0.0, "ce": 1.0}
    elif heldout_path is not None:  # KL / top-1 agreement to the teacher, before and after training
        base["heldout"] = {"path": heldout_path, "seq_len": 512, "packing": True}
    return from_dict(TrainConfig, _deep_merge(base, overrides), where=f"students.{output_dir.parent.name}.train")


def _final_dir(recipe: str, output_dir: Path, train_cfg) -> Path:
    if recipe == "mohawk":
        last = len(train_cfg.stages)
        return output_dir / f"stage{last}-{train_cfg.stages[-1].stage}" / "final"
    return output_dir / "final"


def _train_one(cfg: RunConfig, paths: RunPaths, recipe: str, student_path: Path, output_dir: Path, overrides: dict,
               data_path: Path, heldout_path: Path | None = None) -> dict:
    from thinkfast.training.checkpoint import has_checkpoint
    from thinkfast.training.metrics import read_metrics
    from thinkfast.training.recipes import run as run_recipe

    train_cfg = _train_config(cfg, recipe, str(student_path), output_dir, overrides, str(data_path),
                              str(heldout_path) if heldout_path is not None else None)
    final = _final_dir(recipe, output_dir, train_cfg)
    if not storage.model_dir_complete(final):
        dirs = ([output_dir, output_dir / "align", output_dir / "offline"] if recipe != "mohawk"
                else sorted(output_dir.glob("stage*")))
        resume = any(has_checkpoint(d) for d in dirs)
        run_recipe(train_cfg, resume=resume)
    # each metrics file, with the fidelity.json point measured right after its steps
    metrics_files = ([(output_dir / "align" / "metrics.jsonl", "aligned"),
                      (output_dir / "offline" / "metrics.jsonl", "offline"), (output_dir / "metrics.jsonl", "final")]
                     if recipe != "mohawk"
                     else [(path, path.parent.name) for path in sorted(output_dir.glob("stage*/metrics.jsonl"))])
    fidelity = (json.loads((output_dir / "fidelity.json").read_text())
                if (output_dir / "fidelity.json").is_file() else None)
    stages = []
    for path, point in metrics_files:
        rows = read_metrics(path) if path.is_file() else []
        if rows:
            speeds = sorted(r["tokens_per_s"] for r in rows if r.get("tokens_per_s"))
            peaks = [r["peak_memory_gb"] for r in rows if r.get("peak_memory_gb") is not None]  # CUDA only
            measured = (fidelity or {}).get(point) or {}
            stages.append({
                "name": path.parent.name, "steps": rows[-1]["step"], "loss_first": rows[0]["loss"],
                "loss_last": rows[-1]["loss"], "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
                "tokens": sum(r.get("tokens", 0) for r in rows), "seconds": sum(r.get("step_time_s", 0.0) for r in rows),
                "peak_memory_gb": max(peaks) if peaks else None,
                "kl_to_teacher": measured.get("kl_to_teacher"), "top1_agreement": measured.get("top1_agreement"),
            })
    out = {"recipe": recipe, "path": paths.rel(final), "stages": stages, "model": _final_facts(final)}
    if (output_dir / "timings.json").is_file():  # where the stage's wall time went (steps vs the rest)
        out["timings"] = json.loads((output_dir / "timings.json").read_text())
    if fidelity is not None:
        out["fidelity"] = fidelity
    if (output_dir / "align" / "selection.json").is_file():
        out["attention_selection"] = json.loads((output_dir / "align" / "selection.json").read_text())
    return out


def stage_distill(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    kd = paths.abs(results["kd_data"]["path"])
    out = {}
    for s in cfg.students:
        print(f"  distilling {s.name} ({s.recipe}) ...", flush=True)
        init = paths.abs(results["convert"]["models"][s.name]["path"])
        held = results["kd_data"].get("heldout_path")
        overrides = s.train
        if s.attention_layers == "auto":  # the recipe chooses the attention layers after alignment
            overrides = _deep_merge({"student": {"attention_layers": "auto", "keep_attention": s.keep_attention}}, s.train)
        out[s.name] = _train_one(cfg, paths, s.recipe, init, paths.student(s.name) / "train", overrides, kd,
                                 paths.abs(held) if held else None)
    return out


def stage_sft(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    kd = paths.abs(results["kd_data"]["path"])
    out = {}
    for s in cfg.students:
        if s.sft is None:
            continue
        print(f"  SFT of {s.name} ...", flush=True)
        start = paths.abs(results["distill"][s.name]["path"])
        data = s.sft.get("data", {}).get("path", kd)
        out[s.name] = _train_one(cfg, paths, "sft", start, paths.student(s.name) / "sft", s.sft, Path(data))
    return out


@dataclass(frozen=True)
class Served:
    """One model as the speed and eval stages serve it."""

    path: str  # what to load: the teacher spec, or a student's last trained weights
    student: str | None = None  # the student it is (None: the teacher)
    ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE  # its Mamba layers' recurrent state in the engine


def served_models(cfg: RunConfig, paths: RunPaths, results: dict) -> dict[str, Served]:
    """name -> how to serve it: the teacher, then each student once per `ssm_state_dtypes` entry."""
    found = {"teacher": Served(cfg.teacher)}
    for name, student, state_dtype in cfg.served_students():
        done = results.get("sft", {}).get(student) or results["distill"][student]
        found[name] = Served(str(paths.abs(done["path"])), student, state_dtype)
    return found


# --------------------------------------------------------------------------- speed
def eval_set_name(eval_set) -> str:
    """The key of an eval set in the stage results (and its output folder's stem)."""
    d = eval_set.dataset
    return d.name if d.name != "synthetic" else f"synthetic-{d.synthetic_steps}step"


def _eval_dataset(cfg: RunConfig, eval_set):
    dataset = copy.deepcopy(eval_set.dataset)
    if dataset.data_dir is None:
        dataset.data_dir = cfg.data_dir
    return dataset


def stage_speed(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    """Each model's decode throughput at its best feasible batch, at each eval set's own lengths
    (thinkfast/pipeline/throughput.py says how); the eval stage prices samples with it."""
    from thinkfast.inference.api import load_for_generation
    from thinkfast.pipeline import throughput

    device = _device(cfg)
    dtype = resolve_dtype(cfg.speed.dtype, device)
    sp = cfg.speed
    new_tokens = sp.new_tokens or cfg.sampling.max_new_tokens
    out = {}
    for name, served in served_models(cfg, paths, results).items():
        model, tokenizer = load_for_generation(served.path, dtype=dtype, device=str(device))
        per_eval, done = {}, {}
        for eval_set in cfg.eval_sets:
            ename = eval_set_name(eval_set)
            try:
                lengths = throughput.prompt_lengths(tokenizer, _eval_dataset(cfg, eval_set), eval_set.prompt)
            except ThinkfastError as err:
                per_eval[ename] = {"skipped": str(err)}
                continue
            prompt_tokens = sp.prompt_tokens or throughput.mean_length(lengths)
            key = (prompt_tokens, new_tokens)
            if key not in done:
                print(f"  {name} on {ename}: prompt {prompt_tokens} + {new_tokens} tokens, batches {sp.batches} "
                      f"({sp.method})", flush=True)
                done[key] = throughput.best_batch(model, tokenizer, sp.batches, prompt_tokens, new_tokens, sp.method,
                                                  cfg.seed, sp.checkpoints, sp.steps, sampler=cfg.sampling,
                                                  ssm_state_dtype=served.ssm_state_dtype)
            per_eval[ename] = {
                **done[key],
                "prompt_tokens_from": "speed.prompt_tokens" if sp.prompt_tokens else
                f"mean of the set's {len(lengths)} prompts (chat template applied)",
                "new_tokens_from": "speed.new_tokens" if sp.new_tokens else "sampling.max_new_tokens",
                "max_prompt_tokens": max(lengths),
            }
        measured = [v for v in per_eval.values() if "decode_tokens_per_s" in v]
        first = measured[0] if measured else {}
        out[name] = {
            "decode_tokens_per_s": first.get("decode_tokens_per_s"),  # the first eval set's (models table)
            "batch_size": first.get("batch_size"),
            "prompt_tokens": first.get("prompt_tokens"),
            "new_tokens": first.get("new_tokens"),
            "method": sp.method,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""),
            "student": served.student,
            "ssm_state_dtype": served.ssm_state_dtype if served.student else None,
            "evals": per_eval,
        }
        for ename, info in per_eval.items():
            if "decode_tokens_per_s" in info:
                print(f"  {name} / {ename}: {info['decode_tokens_per_s']:.0f} tok/s decode at its best batch "
                      f"{info['batch_size']} ({info['prompt_tokens']}+{info['new_tokens']} tokens)")
        del model
    return out


# --------------------------------------------------------------------------- eval
def eval_config(cfg: RunConfig, paths: RunPaths, results: dict, eval_set, out_dir: Path):
    """The eval of one set.  Time per sample (the report says which, for every model):
    throughput — M1's k × tokens ÷ the tok/s the speed stage measured at the model's best batch at
    this set's lengths; wall — the measured sampling time, sampling at that best batch."""
    from thinkfast.evaluation.config import EvalConfig, ModelSpec

    device = _device(cfg)
    dtype = dtype_name(resolve_dtype("auto", device))
    ename = eval_set_name(eval_set)
    models = []
    for name, served in served_models(cfg, paths, results).items():
        info = ((results.get("speed") or {}).get(name) or {}).get("evals", {}).get(ename) or {}
        measured = info if info.get("decode_tokens_per_s") else None
        max_len = engine_max_len(cfg.sampling.max_new_tokens)  # prompts not read yet: PROMPT_HEADROOM for them
        if cfg.time_method == "throughput" and measured:
            tps, batch = measured["decode_tokens_per_s"], cfg.eval_batch_size
            timing = {"method": "throughput", "measured_by": measured["method"], "batch": measured["batch_size"],
                      "prompt_tokens": measured["prompt_tokens"], "new_tokens": measured["new_tokens"],
                      "prompt_tokens_from": measured.get("prompt_tokens_from"),
                      "new_tokens_from": measured.get("new_tokens_from"),
                      "candidates": [s["batch"] for s in measured["sweep"]]}
        else:
            tps = None
            batch = measured["batch_size"] if measured else cfg.eval_batch_size
            if measured:  # sized for this set's longest prompt, so the best batch fits as it did when measured
                max_len = max(measured.get("max_prompt_tokens", 1024), measured["prompt_tokens"]) + cfg.sampling.max_new_tokens
            timing = {"method": "wall", "batch": batch,
                      "batch_from": "best batch of the speed stage" if measured else "eval_batch_size",
                      "note": None if cfg.time_method == "wall" else f"no throughput measured for {ename}"}
        models.append(ModelSpec(name=name, path=served.path, tokens_per_second=tps, batch_size=batch, max_len=max_len,
                                ssm_state_dtype=served.ssm_state_dtype, device=str(device), dtype=dtype, timing=timing))
    return EvalConfig(
        models=models, dataset=_eval_dataset(cfg, eval_set), n_samples=cfg.n_samples, k_list=list(cfg.k_list),
        prompt=eval_set.prompt, sampling=copy.deepcopy(cfg.sampling), out_dir=str(out_dir), problems_per_batch=64,
        grading_workers=cfg.grading_workers, metrics=["pass", "maj"], gpus=_eval_gpus(cfg, device),
    )


def _eval_gpus(cfg: RunConfig, device: torch.device) -> int:
    """Local sampling processes of the eval stage: `eval_gpus`, or every visible GPU on CUDA."""
    if cfg.eval_gpus > 0:
        return cfg.eval_gpus
    return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1


def stage_eval(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.evaluation.pipeline import run as run_eval

    out = {}
    for eval_set in cfg.eval_sets:
        name = eval_set_name(eval_set)
        out_dir = paths.eval / Path(name).stem
        ecfg = eval_config(cfg, paths, results, eval_set, out_dir)
        try:
            produced = run_eval(ecfg)
        except ThinkfastError as err:
            if eval_set.dataset.name == "synthetic":
                raise
            print(f"  note: skipping eval set {name}: {err}")
            out[name] = {"skipped": str(err)}
            continue
        plots = {metric: paths.rel(p) for metric, p in produced.get("plots", {}).items()}
        out[name] = {"out_dir": paths.rel(out_dir), "scores": produced["scores"], "plots": plots}
    return out


# --------------------------------------------------------------------------- report
def stage_report(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.pipeline.report import write_run_report

    return write_run_report(cfg, paths, results)


STAGE_FUNCTIONS = {
    "convert": stage_convert,
    "kd_data": stage_kd_data,
    "distill": stage_distill,
    "sft": stage_sft,
    "speed": stage_speed,
    "eval": stage_eval,
    "report": stage_report,
}
