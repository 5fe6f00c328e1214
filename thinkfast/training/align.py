"""Mixer alignment ("attention transfer"): every Mamba mixer learns to reproduce the output of the
attention it replaces, fed the teacher's own (normed) input of that layer.

    loss_i = sum_t ||mixer_i(x_t) - attn_i(x_t)||^2 / sum_t ||attn_i(x_t)||^2     x = norm1_i(h_teacher_i)

summed over the aligned layers; only mixer parameters train; no LM head, no MLP, no error
propagation between layers (each layer sees teacher inputs), so all layers learn at once from one
teacher pass.  This is MOHAWK stage 2 restricted to the mixer, MambaInLlama's layer-wise stage and
LoLCATs' attention transfer.  A freshly converted mixer is ~1.0 (SmolLM2) to ~30 (Qwen2.5) in this
relative error; a few hundred steps bring it far below, and end-to-end distillation starts from
there instead of from 10-20 nats/token.

Also here: `layer_errors` (the per-layer relative error, reported before and after) and
`select_attention_layers` (which layers to keep as attention, chosen by measurement).
"""

from __future__ import annotations

import torch
from torch import nn

from thinkfast.models.model import DecoderLayer
from thinkfast.models.sequence import SequenceInfo
from thinkfast.training.tasks import _save_student, batch_seq


@torch.no_grad()
def teacher_mixer_io(teacher, input_ids: torch.Tensor, seq: SequenceInfo, layers: list[int]) -> dict:
    """layer -> (x, a): the teacher's normed input of that layer and its attention output, each (b, L, d).

    `teacher` is an all-attention ThinkfastForCausalLM; the pass stops after the last requested layer.
    """
    wanted = set(layers)
    h = teacher.model.embed_tokens(input_ids)  # (b, L, d)
    io = {}
    for i, layer in enumerate(teacher.model.layers[: max(layers) + 1]):
        x = layer.input_layernorm(h)
        a = layer.mixer(x, seq)
        if i in wanted:
            io[i] = (x, a)
        h = h + a
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return io


def align_loss_parts(mixer: nn.Module, x: torch.Tensor, a: torch.Tensor, seq: SequenceInfo, valid: torch.Tensor):
    """-> (squared error, squared target norm), each summed over real tokens (fp32 scalars)."""
    if not torch.is_autocast_enabled(x.device.type):  # a bf16 teacher feeding an fp32 student
        x = x.to(mixer.out_proj.weight.dtype)
    out = mixer(x, seq)  # (b, L, d)
    w = valid.to(torch.float32)[..., None]  # (b, L, 1)
    err = ((out.float() - a.float()).pow(2) * w).sum()
    ref = (a.float().pow(2) * w).sum()
    return err, ref


class MixerAlignModule(nn.Module):
    def __init__(self, student, layers: list[int]):
        super().__init__()
        self.student = student
        self.layers = list(layers)

    def forward(self, batch: dict, teacher_out: dict):
        seq, valid = batch_seq(batch), batch["valid"]
        parts = []
        for i in self.layers:
            x, a = teacher_out["io"][i]
            err, ref = align_loss_parts(self.student.model.layers[i].mixer, x, a, seq, valid)
            parts.append(err / ref.clamp_min(1e-12))
        rel = torch.stack(parts)  # (n_layers,) relative squared error of each layer on this micro-batch
        return rel.sum(), rel.detach()


class MixerAlignTask:
    """Trainable: the mixers of `layers` (every parameter of each); frozen: everything else."""

    block_types = (DecoderLayer,)

    def __init__(self, student, teacher, layers: list[int], tokenizer=None):
        self.teacher, self.layers, self.tokenizer = teacher, list(layers), tokenizer
        self.term_names = tuple(f"layer{i}" for i in self.layers)
        for p in student.parameters():
            p.requires_grad_(False)
        for i in self.layers:
            for p in student.model.layers[i].mixer.parameters():
                p.requires_grad_(True)
        self.module = MixerAlignModule(student, self.layers)

    def count(self, batch: dict) -> int:  # one relative error per layer per micro-batch
        return len(self.layers)

    @torch.no_grad()
    def teacher_outputs(self, batch: dict):
        return {"io": teacher_mixer_io(self.teacher, batch["input_ids"], batch_seq(batch), self.layers)}

    def save_final(self, directory, state_dict: dict) -> None:
        _save_student(self.module.student, directory, state_dict, self.tokenizer)


@torch.no_grad()
def layer_errors(student, teacher, batches: list[dict], layers: list[int]) -> dict[int, float]:
    """layer -> relative L2 error sqrt(sum ||m(x)-a||^2 / sum ||a||^2) of its mixer on teacher inputs."""
    err = {i: 0.0 for i in layers}
    ref = {i: 0.0 for i in layers}
    device = student.head_weight().device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        io = teacher_mixer_io(teacher, batch["input_ids"], batch_seq(batch), layers)
        for i in layers:
            e, r = align_loss_parts(student.model.layers[i].mixer, *io[i], batch_seq(batch), batch["valid"])
            err[i] += float(e)
            ref[i] += float(r)
    return {i: (err[i] / max(ref[i], 1e-12)) ** 0.5 for i in layers}


def use_teacher_attention(student, teacher, layers: list[int]) -> None:
    """Turn student layers back into the teacher's attention (weights copied, fp32), in place."""
    import copy

    mixers = list(student.config.layer_mixers)
    for i in layers:
        attn = copy.deepcopy(teacher.model.layers[i].mixer).to(device=student.head_weight().device,
                                                                dtype=student.head_weight().dtype)
        for p in attn.parameters():
            p.requires_grad_(False)
        student.model.layers[i].mixer = attn
        student.model.layers[i].mixer_type = "attention"
        mixers[i] = "attention"
    student.config.layer_mixers = mixers


@torch.no_grad()
def _kl(student, teacher, batches: list[dict]) -> float:
    from thinkfast.training.fidelity import fidelity

    return fidelity(student, teacher, batches)["kl_to_teacher"]


@torch.no_grad()
def select_attention_layers(student, teacher, batches: list[dict], keep: int, even: list[int] | None = None) -> dict:
    """Greedy choice of `keep` layers to give back to attention, by measured reverse KL.

    The student has aligned Mamba mixers in every candidate layer. Round r tries each remaining
    layer as attention (with the r-1 already chosen) and keeps the one whose model is closest to the
    teacher. Costs keep x layers forward passes over `batches`; no gradient. Returns the choice, the
    KL after each round and, for comparison, the KL with `even` (the evenly spread layers) instead.
    """
    candidates = [i for i, m in enumerate(student.config.layer_mixers) if m != "attention"]
    originals = {i: student.model.layers[i].mixer for i in candidates}

    def kl_with(attention: list[int]) -> float:
        for i in attention:  # borrow the teacher's module for the measurement, then put the mixer back
            student.model.layers[i].mixer = teacher.model.layers[i].mixer
        try:
            return _kl(student, teacher, batches)
        finally:
            for i in attention:
                student.model.layers[i].mixer = originals[i]

    chosen: list[int] = []
    rounds = []
    base = kl_with([])
    for _ in range(keep):
        scores = {i: kl_with(chosen + [i]) for i in candidates if i not in chosen}
        best = min(scores, key=scores.get)
        chosen.append(best)
        rounds.append({"layer": best, "kl": scores[best], "scores": {str(k): v for k, v in scores.items()}})
    result = {"chosen": sorted(chosen), "kl_all_mamba": base, "rounds": rounds}
    if even is not None:
        result["even"] = sorted(even)
        result["kl_even"] = kl_with(list(even))
        result["kl_chosen"] = rounds[-1]["kl"] if rounds else base
    return result
