"""Scale-out figures on one 2-GPU box (issue 17), one command, about 6-8 minutes on 2 x H200:

    python scripts/multi_gpu_bench.py --out bench_scale            # GPU box, 2 GPUs
    python scripts/multi_gpu_bench.py --out /tmp/s --tiny          # CPU smoke test (gloo, tiny shapes)

(a) hybrid distillation, Qwen2.5-0.5B shapes (vocab 151,936, 24 layers, 6 kept as attention), random
    weights, GSM8K train text: 1 GPU (micro 2 x accum 2) vs 2 GPUs under torchrun (micro 1 x accum 2 x 2,
    the same global batch): tokens/s from the trainer's own metrics.jsonl (median step after warm-up),
    and the max abs difference of the per-step losses;
(b) GSM8K sampling, a random-weight model at the same shape (`--sample-model DIR` to sample a real one),
    fixed-length samples (ignore_eos): `thinkfast eval sample` on 1 GPU vs `torchrun --nproc-per-node 2`,
    samples/s from the command's wall time (model load included, the same for both);
(c) kill/resume on 2 GPUs: the distillation killed after a step past its checkpoint (THINKFAST_FAULT) and
    rerun with --resume; the sampling with rank 1 killed mid-append and rerun.  Counts duplicate and
    missing training steps (metrics.jsonl) and (problem, sample) rows (the shard files).

Writes <out>/summary.json: distill_speedup, sample_speedup, loss_max_abs_diff, resume_duplicates,
resume_missing, and the raw figures, gpu, date, command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)
TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def byte_tokenizer():
    """A byte-level tokenizer with a chat template, built offline (random-weight models need no real one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def make_teacher(path: Path, shape: dict) -> str:
    """A random-weight Qwen2 model at `shape` + the byte tokenizer, as a local HF folder."""
    if (path / "config.json").is_file():
        return str(path)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = Qwen2ForCausalLM(Qwen2Config(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], nproc: int, log: Path, fault: str | None = None, timeout: int = 600) -> tuple[int, float]:
    """Run `python -m thinkfast ARGS` on 1 process or under torchrun; (exit code, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("THINKFAST_FAULT", None)
    if fault:
        env["THINKFAST_FAULT"] = fault
    if nproc == 1:
        cmd = [sys.executable, "-m", "thinkfast", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "-m", "thinkfast", *args]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT).returncode
    return rc, time.perf_counter() - t0


def read_jsonl(path: Path) -> list[dict]:
    from thinkfast.storage import read_jsonl as read

    return read(path) if path.is_file() else []


# --------------------------------------------------------------------------- (a) + (c) distillation
def distill_config(out: Path, teacher: str, data: str, a: argparse.Namespace, nproc: int) -> Path:
    import yaml

    cfg = {
        "recipe": "distill", "teacher": teacher, "student": {"target": "hybrid", "keep_attention": 1 if a.tiny else 6, "mixer": "mamba1"},
        "data": {"path": data, "seq_len": a.seq_len, "packing": True, "train_on": "all"},
        "loss": {"reverse_kl": 1.0, "forward_kl": 0.0, "ce": 0.0},
        "optim": {"lr": 1e-4, "warmup": 0, "schedule": "constant", "weight_decay": 0.0},
        "max_steps": a.steps, "micro_batch_size": a.global_rows // (2 * nproc), "grad_accum": 2,
        "distributed": "ddp", "save_every": a.save_every, "output_dir": str(out / "run"), "progress": False,
        "device": a.device, "seed": 0,
    }
    if a.tiny:
        cfg["dtype"] = "fp32"
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def distill_metrics(out: Path) -> list[dict]:
    return read_jsonl(out / "run" / "metrics.jsonl")


def bench_distill(work: Path, teacher: str, data: str, a) -> dict:
    res = {}
    for n in (1, 2):
        out = work / f"distill_{n}gpu"
        rc, wall = launch(["distill", str(distill_config(out, teacher, data, a, n))], n, work / f"distill_{n}gpu.log")
        if rc:
            raise SystemExit(f"distill on {n} process(es) failed; see {work}/distill_{n}gpu.log")
        rows = distill_metrics(out)
        steady = [r["tokens_per_s"] for r in rows[a.warmup:]] or [r["tokens_per_s"] for r in rows]
        res[n] = {"tokens_per_s": statistics.median(steady), "losses": [r["loss"] for r in rows], "wall_s": wall}
    diff = max(abs(x - y) for x, y in zip(res[1]["losses"], res[2]["losses"]))
    # (c): 2 processes killed after the step past the first checkpoint, then resumed
    out = work / "distill_resume"
    cfg = distill_config(out, teacher, data, a, 2)
    rc, _ = launch(["distill", str(cfg)], 2, work / "distill_kill.log", fault=f"train-step:{a.save_every + 1}")
    killed_ok = rc != 0
    rc, _ = launch(["distill", str(cfg), "--resume"], 2, work / "distill_resume.log")
    steps = Counter(r["step"] for r in distill_metrics(out))
    losses = {r["step"]: r["loss"] for r in distill_metrics(out)}
    return {
        "tokens_per_s_1": res[1]["tokens_per_s"], "tokens_per_s_2": res[2]["tokens_per_s"],
        "speedup": res[2]["tokens_per_s"] / res[1]["tokens_per_s"], "loss_max_abs_diff": diff,
        "losses_1": res[1]["losses"], "losses_2": res[2]["losses"],
        "resume": {"killed": killed_ok, "rc": rc, "duplicates": sum(c - 1 for c in steps.values() if c > 1),
                   "missing": sum(1 for s in range(1, a.steps + 1) if s not in steps),
                   "loss_max_abs_diff_vs_uninterrupted": max(
                       (abs(losses[s] - res[2]["losses"][s - 1]) for s in losses if s <= len(res[2]["losses"])),
                       default=None)},
    }


# --------------------------------------------------------------------------- (b) + (c) sampling
def eval_args(out: Path, model: str, a) -> list[str]:
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "models": [{"name": "bench", "path": model, "device": a.device, "dtype": "float32" if a.tiny else "bfloat16",
                    "batch_size": a.problems_per_batch * a.samples, "max_len": a.new_tokens + 1024}],
        "dataset": {"name": "gsm8k", "data_dir": a.data_dir, "limit": a.problems},
        "n_samples": a.samples, "k_list": [1], "prompt": "gsm8k", "use_chat_template": False,
        "sampling": {"max_new_tokens": a.new_tokens, "ignore_eos": True, "temperature": 1.0, "seed": 0},
        "out_dir": str(out), "problems_per_batch": a.problems_per_batch, "progress": False,
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["eval", "sample", "--config", str(path)]


def sample_rows(out: Path) -> list[dict]:
    return [r for d in out.iterdir() if d.is_dir() for p in sorted(d.glob("samples.shard*.jsonl")) for r in read_jsonl(p)]


def bench_sample(work: Path, model: str, a) -> dict:
    res = {}
    for n in (1, 2):
        out = work / f"sample_{n}gpu"
        rc, wall = launch(eval_args(out, model, a), n, work / f"sample_{n}gpu.log")
        if rc:
            raise SystemExit(f"sampling on {n} process(es) failed; see {work}/sample_{n}gpu.log")
        res[n] = {"samples": len(sample_rows(out)), "wall_s": wall, "samples_per_s": len(sample_rows(out)) / wall}
    out = work / "sample_resume"
    rc, _ = launch(eval_args(out, model, a), 2, work / "sample_kill.log", fault="append:samples.shard001-of-002.jsonl@2")
    killed_ok = rc != 0
    rc, _ = launch(eval_args(out, model, a), 2, work / "sample_resume.log")
    rows = sample_rows(out)
    keys = Counter((r["problem_id"], r["sample_index"]) for r in rows)
    ref = {(r["problem_id"], r["sample_index"]): r["text"] for r in sample_rows(work / "sample_2gpu")}
    return {
        "samples_per_s_1": res[1]["samples_per_s"], "samples_per_s_2": res[2]["samples_per_s"],
        "speedup": res[2]["samples_per_s"] / res[1]["samples_per_s"], "runs": res,
        "resume": {"killed": killed_ok, "rc": rc, "duplicates": sum(c - 1 for c in keys.values() if c > 1),
                   "missing": sum(1 for k in ref if k not in keys),
                   "texts_differing_from_uninterrupted": sum(1 for r in rows if ref.get((r["problem_id"], r["sample_index"])) != r["text"])},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (gloo): a smoke test of this script")
    p.add_argument("--data-dir", default=os.environ.get("THINKFAST_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--sample-model", help="model folder to sample (default: random weights at the bench shape)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: distill,sample")
    a = p.parse_args(argv)
    big = not a.tiny
    a.device = "cuda" if big else "cpu"
    a.seq_len, a.global_rows, a.steps, a.save_every, a.warmup = (2048, 8, 12, 6, 3) if big else (64, 4, 4, 2, 1)
    a.problems, a.samples, a.new_tokens, a.problems_per_batch = (64, 8, 256, 8) if big else (4, 2, 4, 1)
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    teacher = make_teacher(work / "teacher", QWEN_05B if big else TINY)
    data = str(Path(a.data_dir) / "gsm8k_train.jsonl")
    skip = set(filter(None, a.skip.split(",")))
    t0 = time.perf_counter()
    distill = None if "distill" in skip else bench_distill(work, teacher, data, a)
    sample = None if "sample" in skip else bench_sample(work, a.sample_model or teacher, a)
    resumes = [part["resume"] for part in (distill, sample) if part]
    summary = {
        "distill_speedup": distill and distill["speedup"],
        "sample_speedup": sample and sample["speedup"],
        "loss_max_abs_diff": distill and distill["loss_max_abs_diff"],
        "resume_duplicates": sum(r["duplicates"] for r in resumes),
        "resume_missing": sum(r["missing"] for r in resumes),
        "distill": distill, "sample": sample,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "gpus_visible": torch.cuda.device_count(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": time.perf_counter() - t0,
        "note": "tiny CPU smoke test: figures mean nothing" if a.tiny else None,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("distill", "sample")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
