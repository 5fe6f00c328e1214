"""How far a converted student's Mamba mixers are from the attention they replace, at conversion.

    python scripts/mixer_scale_probe.py CONFIG.yaml

CONFIG is a training config (`thinkfast mohawk` / `thinkfast distill` YAML) with `teacher`, `student` and
`heldout` set.  On the held-out rows, fed the teacher's own normed layer inputs, it prints per converted
layer: the relative L2 error of the mixer output against the attention output, their cosine, the
least-squares output scale alpha = <m, a> / <m, m>; then the student's held-out KL / top-1 as converted,
with each mixer's output scaled by its alpha (error = 1 - cos^2 <= 1), and with every mixer zeroed.
docs/training.md ("MOHAWK from the Qwen teacher on one GPU") has what it showed for SmolLM2 -> Llamba.
"""

import sys

import torch

from thinkfast.config import load_config
from thinkfast.training import recipes
from thinkfast.training.align import teacher_mixer_io
from thinkfast.training.config import TrainConfig
from thinkfast.training.fidelity import fidelity
from thinkfast.training.tasks import batch_seq


def _fmt(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def main(path: str, fit_batches: int = 2) -> None:
    torch.manual_seed(0)
    cfg = load_config(TrainConfig, path)
    tokenizer = recipes.load_recipe_tokenizer(cfg)
    device = torch.device("cpu")
    hf_teacher = recipes.load_hf_teacher(cfg, device)
    student = recipes.build_student(cfg, hf_teacher)
    teacher = recipes.teacher_stack(hf_teacher, torch.float32, device)
    heldout = recipes.heldout_batches(cfg, tokenizer)
    if not heldout:
        sys.exit(f"{path}: set heldout.path (held-out teacher text) to measure on")
    print("as converted", _fmt(fidelity(student, teacher, heldout)))
    layers = [i for i, kind in enumerate(student.config.layer_mixers) if kind != "attention"]
    ma, mm, aa = (torch.zeros(len(layers), dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        for batch in heldout[:fit_batches]:
            seq = batch_seq(batch)
            io = teacher_mixer_io(teacher, batch["input_ids"], seq, layers)
            w = batch["valid"].to(torch.float64)[..., None]  # (b, L, 1)
            for j, i in enumerate(layers):
                x, a = io[i]  # (b, L, d) each
                m = student.model.layers[i].mixer(x, seq)
                ma[j] += (m.double() * a.double() * w).sum()
                mm[j] += (m.double() ** 2 * w).sum()
                aa[j] += (a.double() ** 2 * w).sum()
    alpha, cos = ma / mm, ma / (mm * aa).sqrt()
    for j, i in enumerate(layers):
        print(f"layer {i:3d}: relative error {float((mm[j] - 2 * ma[j] + aa[j]) / aa[j]):.4g}, cosine {float(cos[j]):+.3f}, "
              f"alpha {float(alpha[j]):.3g}, error after scaling {float(1 - cos[j] ** 2):.3f}")
    with torch.no_grad():
        for j, i in enumerate(layers):
            student.model.layers[i].mixer.out_proj.weight.mul_(float(alpha[j]))
        print("each mixer scaled by its alpha", _fmt(fidelity(student, teacher, heldout)))
        for i in layers:
            student.model.layers[i].mixer.out_proj.weight.zero_()
        print("every mixer zeroed", _fmt(fidelity(student, teacher, heldout)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
