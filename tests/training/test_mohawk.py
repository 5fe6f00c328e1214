"""MOHAWK stages 1-2: the chunked stage-1 path equals the all-at-once one, each stage trains exactly what
docs/training.md says (and nothing else moves, weight decay included), stage-2 layers are independent."""

import pytest
import torch

from conftest import tiny_config
from tests.tiny import tiny_llama, tiny_qwen2
from thinkfast.config import load_config
from thinkfast.convert import convert
from thinkfast.models import ThinkfastForCausalLM
from thinkfast.models.sequence import SequenceInfo
from thinkfast.training.config import TrainConfig
from thinkfast.training.mohawk import stage2_loss_sum, teacher_layer_io
from thinkfast.training.recipes import run
from thinkfast.training.tasks import MohawkLayerTask

torch.set_num_threads(1)


def _packed_batch(b=2, L=24):
    """Two rows: the first packs two documents, the second ends in padding (valid False)."""
    ids = torch.randint(0, 96, (b, L))
    positions = torch.stack([torch.cat([torch.arange(10), torch.arange(L - 10)]), torch.arange(L)])
    valid = torch.ones(b, L, dtype=torch.bool)
    valid[1, -5:] = False
    return {"input_ids": ids, "position_ids": positions, "valid": valid}


def _pair(seed=0, family="llama"):
    torch.manual_seed(seed)
    hf = tiny_llama(layers=3, heads=4, kv=2) if family == "llama" else tiny_qwen2(layers=3)
    student, teacher = convert(hf, "llamba"), convert(hf, "attention")
    with torch.no_grad():  # move the student off its initialisation so every path is exercised
        for layer in student.model.layers:
            layer.mixer.conv1d.weight.add_(0.1 * torch.randn_like(layer.mixer.conv1d.weight))
            layer.mixer.a_bias.normal_(0, 1.0)
    return student, teacher


def _loss_and_grads(task, batch):
    task.module.zero_grad(set_to_none=True)
    loss, _ = task.module(batch, task.teacher_outputs(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in task.module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk,family", [(1, "llama"), (3, "llama"), (64, "llama"), (3, "qwen2")])
def test_stage1_chunked_equals_all_at_once(chunk, family):
    student, teacher = _pair(family=family)
    batch = _packed_batch()
    per_layer = 5 if family == "qwen2" else 4  # in_proj weight (and bias), conv weight and bias, a_bias
    ref = MohawkLayerTask(student, teacher, 1, [0, 1, 2], matrix_chunk=0)
    loss_ref, grads_ref = _loss_and_grads(ref, batch)
    chunked = MohawkLayerTask(student, teacher, 1, [0, 1, 2], matrix_chunk=chunk)
    loss_c, grads_c = _loss_and_grads(chunked, batch)
    assert torch.allclose(loss_c, loss_ref, rtol=1e-6, atol=0)
    assert grads_c.keys() == grads_ref.keys() and len(grads_ref) == 3 * per_layer
    for name, g in grads_ref.items():
        assert torch.allclose(grads_c[name], g, rtol=1e-5, atol=1e-7 * g.abs().max().item()), name


def test_stage1_chunked_path_keeps_no_layer_matrices_for_the_backward():
    """Between forward and backward the chunked path keeps only each layer's input (b, L, d), never a
    (row, head, L, L) matrix; the all-at-once path keeps several per layer."""
    student, teacher = _pair()
    b, L = 2, 40
    batch = {"input_ids": torch.randint(0, 96, (b, L)), "position_ids": torch.arange(L).expand(b, L),
             "valid": torch.ones(b, L, dtype=torch.bool)}

    def saved_sizes(chunk):
        task = MohawkLayerTask(student, teacher, 1, [0, 1, 2], matrix_chunk=chunk)
        teacher_out, sizes = task.teacher_outputs(batch), []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss, _ = task.module(batch, teacher_out)
        loss.backward()
        return sizes

    assert saved_sizes(2) == [b * L * 64] * 3
    assert sum(n >= b * 4 * L * L for n in saved_sizes(0)) >= 3 * 3


def _stage_run(tiny_setup, tmp_path, stage):
    over = {"data.train_on": "all", "data.seq_len": 32, "optim.weight_decay": 0.1}
    cfg = load_config(TrainConfig, tiny_config(
        tiny_setup, tmp_path, recipe="mohawk", student={"target": "llamba"},
        stages=[{"stage": stage, "max_steps": 1, "lr": 1e-2, "layers": [1]}], **over))
    from thinkfast.teachers.loading import load_teacher

    hf, _ = load_teacher(tiny_setup["teacher"], tokenizer=False)
    initial = convert(hf, "llamba", seed=0)  # the recipe's student (seed 0)
    before = {n: p.detach().clone() for n, p in initial.named_parameters()}
    (result,) = run(cfg)
    after = dict(ThinkfastForCausalLM.from_pretrained(str(result.final_dir)).named_parameters())
    return before, after, initial.model.layers[1].mixer


def _changed(before, after, name, rows=None):
    a, b = before[name], after[name]
    if rows is not None:
        a, b = a[rows], b[rows]
    return not torch.equal(a, b)


def test_stage1_trains_only_b_c_decay_of_its_layers(tiny_setup, tmp_path):
    before, after, m = _stage_run(tiny_setup, tmp_path, 1)
    prefix = "model.layers.1.mixer."
    x, bc = slice(0, m.d_inner), slice(m.d_inner, m.conv_dim)
    z, a = slice(m.conv_dim, m.conv_dim + m.d_inner), slice(m.conv_dim + m.d_inner, None)
    w = prefix + "in_proj.weight"
    assert _changed(before, after, w, bc) and _changed(before, after, w, a)
    assert not _changed(before, after, w, x) and not _changed(before, after, w, z)  # no gradient, and no decay
    for name in ("conv1d.weight", "conv1d.bias"):
        assert _changed(before, after, prefix + name, bc) and not _changed(before, after, prefix + name, x)
    moved = {n for n in before if _changed(before, after, n)}
    assert moved == {prefix + p for p in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "a_bias")}, moved


def test_stage2_trains_the_whole_block_and_nothing_else(tiny_setup, tmp_path):
    before, after, _ = _stage_run(tiny_setup, tmp_path, 2)
    moved = {n for n in before if _changed(before, after, n)}
    block = {n for n in before if n.startswith("model.layers.1.")}
    assert moved == block, sorted(moved ^ block)


def test_stage2_layer_loss_sees_teacher_inputs_only():
    student, teacher = _pair()
    batch = _packed_batch()
    seq = SequenceInfo.build(2, 24, "cpu", position_ids=batch["position_ids"])
    io = teacher_layer_io(teacher, batch["input_ids"], seq)

    def layer_loss(i):
        with torch.no_grad():
            return stage2_loss_sum(student.model.layers[i], *io[i], seq, batch["valid"])[0]

    before = layer_loss(2)
    with torch.no_grad():
        for p in list(student.model.layers[0].parameters()) + list(student.model.layers[1].parameters()):
            p.add_(torch.randn_like(p))
    assert torch.equal(layer_loss(2), before)
    with torch.no_grad():
        student.model.layers[2].mlp.down_proj.weight.mul_(2.0)
    assert not torch.equal(layer_loss(2), before)


def test_stage2_checkpointed_equals_plain():
    student, teacher = _pair()
    batch = _packed_batch()
    task = MohawkLayerTask(student, teacher, 2, [0, 2])
    loss_plain, grads_plain = _loss_and_grads(task, batch)
    student.activation_checkpointing = True
    loss_ckpt, grads_ckpt = _loss_and_grads(task, batch)
    assert torch.equal(loss_plain, loss_ckpt)
    for name, g in grads_plain.items():
        assert torch.allclose(grads_ckpt[name], g, rtol=1e-5, atol=1e-7), name


def test_bench_mohawk_runs_on_cpu_at_toy_size(tmp_path):
    import json

    from thinkfast.cli import main

    args = ["bench", "mohawk", "--out", str(tmp_path), "--shapes", "tiny", "--batch", "2", "--length", "16",
            "--steps", "1", "--chunks", "0,3", "--allow-cpu"]
    assert main(args) == 0
    rows = json.loads((tmp_path / "mohawk.json").read_text())["rows"]
    assert [(r["stage"], r["matrix_chunk"]) for r in rows] == [(1, 0), (1, 3), (2, None)] and all(r["ok"] for r in rows)
    assert rows[0]["loss_first"] == pytest.approx(rows[1]["loss_first"], rel=1e-6)  # same weights, same loss
    assert "| tiny | 2 |" in (tmp_path / "mohawk.md").read_text()
