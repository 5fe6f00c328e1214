"""The issue-3 GPU figure run, one command:

    python scripts/train_gpu_run.py --teacher /path/to/smollm2-hf-dir --out /path/to/results

1. the teacher answers GSM8K-train problems greedily (sequence-level KD data, `gen-data`);
2. a hybrid with a quarter of the teacher's layers as attention is distilled on it (reverse KL,
   bf16 autocast, config `gpu_smollm2_hybrid_gsm8k`);
3. <out>/summary.json (GPU, date, command, tokens/s, peak memory, scan backend) and <out>/loss.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch


def scan_backend() -> str:
    from thinkfast.ops import dispatch

    available = getattr(dispatch, "triton_available", None)
    return "triton" if callable(available) and available() and torch.cuda.is_available() else "reference"


def plot_loss(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reverse KL (token mean)")
    ax.set_yscale("log")
    ax.set_title("SmolLM2-135M -> hybrid (8/30 attention), GSM8K KD data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher: HF directory, .gguf file, or smollm2-135m")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--data", default="../shared/data/gsm8k_train.jsonl", help="GSM8K train JSONL")
    ap.add_argument("--problems", type=int, default=2048, help="GSM8K problems the teacher answers")
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--keep-truncated", action="store_true", help="keep answers cut by --max-new-tokens")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides of the distill config")
    args = ap.parse_args(argv)

    from thinkfast.commands.train import load_train_config
    from thinkfast.inference.params import SamplingParams
    from thinkfast.training.config import DataConfig
    from thinkfast.training.generate_data import generate_kd_data
    from thinkfast.training.metrics import read_metrics
    from thinkfast.training.recipes import run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kd = out / "gsm8k_kd.jsonl"
    prompt = DataConfig(path=args.data, prompt_template="Solve step by step. {prompt}")
    t0 = datetime.datetime.now()
    added = generate_kd_data(args.teacher, args.data, str(kd), SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens),
                             prompt, batch_size=256, limit=args.problems,
                             keep_truncated=args.keep_truncated)
    gen_s = (datetime.datetime.now() - t0).total_seconds()
    backend = scan_backend()
    overrides = [f"teacher={args.teacher}", f"data.path={kd}", f"output_dir={out / 'run'}", f"max_steps={args.steps}",
                 "progress=true", "data.prompt_template=Solve step by step. {prompt}"]
    if backend == "reference":  # the sequential reference scan: keep rows short
        overrides += ["data.seq_len=512", "micro_batch_size=4"]
    overrides += args.overrides
    cfg = load_train_config("distill", "gpu_smollm2_hybrid_gsm8k", overrides)
    result = run(cfg, resume=(out / "run" / "checkpoint" / "latest.pt").is_file())
    metrics = read_metrics(out / "run" / "metrics.jsonl")
    steady = [m["tokens_per_s"] for m in metrics[5:]] or [m["tokens_per_s"] for m in metrics]
    plot_loss(metrics, out / "loss.png")
    summary = {
        "date": datetime.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "command": "python scripts/train_gpu_run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "scan_backend": backend,
        "kd_examples_added": added,
        "gen_data_seconds": gen_s,
        "seq_len": cfg.data.seq_len,
        "micro_batch_size": cfg.micro_batch_size,
        "steps": len(metrics),
        "tokens_per_s_median": statistics.median(steady),
        "peak_memory_gb": max((m.get("peak_memory_gb", 0.0) for m in metrics), default=0.0),
        "loss_first": metrics[0]["loss"],
        "loss_last": metrics[-1]["loss"],
        "final_model": str(result.final_dir),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
