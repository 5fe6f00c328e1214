"""The stages of `thinkfast run`.  Each takes (cfg, paths, results so far) and returns a JSON-able
result that the runner caches; each is itself resumable where its work is long (training
checkpoints, the sample store, the KD data file)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from thinkfast import storage
from thinkfast.config import from_dict
from thinkfast.errors import ThinkfastError
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
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _model_facts(model) -> dict:
    info = model.summary()
    state = model.allocate_state(1, 4096, dtype=torch.bfloat16, device="meta").bytes_per_slot()
    return {**info, "kv_bytes_4096": state["kv"], "recurrent_bytes": state["recurrent"]}


# --------------------------------------------------------------------------- convert
def stage_convert(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher

    teacher, tokenizer = load_teacher(cfg.teacher)
    models = {"teacher": {"path": cfg.teacher, **_model_facts(convert(teacher, "attention"))}}
    for s in cfg.students:
        out = paths.student(s.name) / "init"
        if not (out / "config.json").is_file():
            student = convert(teacher, s.target, s.attention_layers, s.keep_attention, s.mixer, seed=cfg.seed)
            tmp = out.with_name("init.partial")
            student.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(out)
        from thinkfast.models import ThinkfastForCausalLM

        models[s.name] = {"path": paths.rel(out), **_model_facts(ThinkfastForCausalLM.from_pretrained(out))}
        print(f"  {s.name}: {models[s.name]['layers']}, {models[s.name]['parameters'] / 1e6:.1f} M parameters")
    return {"models": models}


# --------------------------------------------------------------------------- kd data
def _kd_prompts(cfg: RunConfig, path: Path) -> int:
    from thinkfast.evaluation.datasets import load_problems
    from thinkfast.evaluation.synthetic import synthetic_problems

    k = cfg.kd_data
    rows = [{"question": p.question, "answer": p.gold}
            for p in synthetic_problems(k.synthetic_problems, k.synthetic_steps, seed=cfg.seed + 1000).problems]
    if k.gsm8k_problems:
        try:
            gsm = load_problems("gsm8k", cfg.data_dir, "train", k.gsm8k_problems)
            rows += [{"question": p.question, "answer": p.gold} for p in gsm.problems]
        except ThinkfastError as err:
            print(f"  note: no GSM8K train problems for the KD data ({err}); using synthetic problems only")
    storage.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def stage_kd_data(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.inference.params import SamplingParams
    from thinkfast.training.config import DataConfig
    from thinkfast.training.generate_data import generate_kd_data

    paths.data.mkdir(parents=True, exist_ok=True)
    prompts, kd = paths.data / "prompts.jsonl", paths.data / "kd.jsonl"
    n_prompts = _kd_prompts(cfg, prompts)
    t0 = time.time()
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.kd_data.max_new_tokens, seed=cfg.seed)
    generate_kd_data(cfg.teacher, str(prompts), str(kd), params, DataConfig(path=str(prompts)),
                     batch_size=cfg.kd_data.batch_size, keep_truncated=cfg.kd_data.keep_truncated,
                     device=str(_device(cfg)))
    rows = storage.read_jsonl(kd)
    if not rows:
        raise ThinkfastError(
            "the teacher finished no answer within kd_data.max_new_tokens: raise it, or set kd_data.keep_truncated"
        )
    return {"prompts": n_prompts, "examples": len(rows), "path": paths.rel(kd), "seconds": time.time() - t0}


# --------------------------------------------------------------------------- training
def _train_config(cfg: RunConfig, recipe: str, student_path: str, output_dir: Path, overrides: dict, data_path: str):
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
    return from_dict(TrainConfig, _deep_merge(base, overrides), where=f"students.{output_dir.parent.name}.train")


def _final_dir(recipe: str, output_dir: Path, train_cfg) -> Path:
    if recipe == "mohawk":
        last = len(train_cfg.stages)
        return output_dir / f"stage{last}-{train_cfg.stages[-1].stage}" / "final"
    return output_dir / "final"


def _train_one(cfg: RunConfig, paths: RunPaths, recipe: str, student_path: Path, output_dir: Path, overrides: dict,
               data_path: Path) -> dict:
    from thinkfast.training.checkpoint import has_checkpoint
    from thinkfast.training.metrics import read_metrics
    from thinkfast.training.recipes import run as run_recipe

    train_cfg = _train_config(cfg, recipe, str(student_path), output_dir, overrides, str(data_path))
    final = _final_dir(recipe, output_dir, train_cfg)
    if not storage.model_dir_complete(final):
        dirs = [output_dir] if recipe != "mohawk" else sorted(output_dir.glob("stage*"))
        resume = any(has_checkpoint(d) for d in dirs)
        run_recipe(train_cfg, resume=resume)
    metrics_files = [output_dir / "metrics.jsonl"] if recipe != "mohawk" else sorted(output_dir.glob("stage*/metrics.jsonl"))
    stages = []
    for path in metrics_files:
        rows = read_metrics(path) if path.is_file() else []
        if rows:
            speeds = sorted(r["tokens_per_s"] for r in rows if r.get("tokens_per_s"))
            stages.append({
                "name": path.parent.name, "steps": rows[-1]["step"], "loss_first": rows[0]["loss"],
                "loss_last": rows[-1]["loss"], "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
            })
    return {"recipe": recipe, "path": paths.rel(final), "stages": stages}


def stage_distill(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    kd = paths.abs(results["kd_data"]["path"])
    out = {}
    for s in cfg.students:
        print(f"  distilling {s.name} ({s.recipe}) ...", flush=True)
        init = paths.abs(results["convert"]["models"][s.name]["path"])
        out[s.name] = _train_one(cfg, paths, s.recipe, init, paths.student(s.name) / "train", s.train, kd)
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


def final_model_paths(cfg: RunConfig, paths: RunPaths, results: dict) -> dict[str, str]:
    """name -> what to load: the teacher spec, then each student's last trained weights."""
    found = {"teacher": cfg.teacher}
    for s in cfg.students:
        done = results.get("sft", {}).get(s.name) or results["distill"][s.name]
        found[s.name] = str(paths.abs(done["path"]))
    return found


# --------------------------------------------------------------------------- speed
def stage_speed(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.inference.api import load_for_generation
    from thinkfast.inference.engine import Engine
    from thinkfast.inference.params import SamplingParams

    device = _device(cfg)
    dtype = torch.bfloat16 if (cfg.speed.dtype == "auto" and device.type == "cuda") or cfg.speed.dtype == "bf16" else torch.float32
    sp = cfg.speed
    gen = torch.Generator().manual_seed(cfg.seed)
    out = {}
    for name, path in final_model_paths(cfg, paths, results).items():
        model, tokenizer = load_for_generation(path, dtype=dtype, device=str(device))
        vocab = model.config.vocab_size
        prompts = torch.randint(0, vocab, (sp.batch_size, sp.prompt_tokens), generator=gen).tolist()
        engine = Engine(model, tokenizer, max_batch=sp.batch_size, max_len=sp.prompt_tokens + sp.new_tokens, progress=False)
        params = SamplingParams(temperature=0.0, max_new_tokens=sp.new_tokens, ignore_eos=True)
        engine.generate(prompts[:2], SamplingParams(temperature=0.0, max_new_tokens=4, ignore_eos=True))  # warm-up
        engine.generate(prompts, params)
        stats = dict(engine.last_stats)
        out[name] = {
            "decode_tokens_per_s": stats.get("decode_tokens_per_s"),
            "batch_size": sp.batch_size,
            "prompt_tokens": sp.prompt_tokens,
            "new_tokens": sp.new_tokens,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""),
        }
        print(f"  {name}: {out[name]['decode_tokens_per_s']:.0f} tok/s decode at batch {sp.batch_size}")
        del model, engine
    return out


# --------------------------------------------------------------------------- eval
def eval_config(cfg: RunConfig, paths: RunPaths, results: dict, eval_set, out_dir: Path):
    from thinkfast.evaluation.config import EvalConfig, ModelSpec

    device = _device(cfg)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    models = []
    for name, path in final_model_paths(cfg, paths, results).items():
        tps = results["speed"][name]["decode_tokens_per_s"] if cfg.time_method == "throughput" else None
        models.append(ModelSpec(name=name, path=path, tokens_per_second=tps, batch_size=cfg.eval_batch_size,
                                max_len=cfg.sampling.max_new_tokens + 1024,  # prompt headroom
                                device=str(device), dtype=dtype))
    dataset = copy.deepcopy(eval_set.dataset)
    if dataset.data_dir is None:
        dataset.data_dir = cfg.data_dir
    return EvalConfig(
        models=models, dataset=dataset, n_samples=cfg.n_samples, k_list=list(cfg.k_list), prompt=eval_set.prompt,
        sampling=copy.deepcopy(cfg.sampling), out_dir=str(out_dir), problems_per_batch=64,
        grading_workers=cfg.grading_workers, metrics=["pass", "maj"],
    )


def stage_eval(cfg: RunConfig, paths: RunPaths, results: dict) -> dict:
    from thinkfast.evaluation.pipeline import run as run_eval

    out = {}
    for eval_set in cfg.eval_sets:
        name = eval_set.dataset.name if eval_set.dataset.name != "synthetic" else f"synthetic-{eval_set.dataset.synthetic_steps}step"
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
