"""The hybrid alignment stage: each mixer learns its layer's attention output from teacher inputs.

It must (a) train exactly the mixers of the replaced layers, (b) see only teacher inputs (a layer's loss
does not move when another student layer changes), (c) lower the converted hybrid's KL to its teacher by a
large factor, (d) resume after a kill, (e) choose attention layers by measurement when asked."""

import json

import pytest
import torch

from _training_util import tiny_config
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.models.sequence import SequenceInfo
from thinkfast.training.align import MixerAlignTask, layer_errors, select_attention_layers, teacher_mixer_io
from thinkfast.training.config import TrainConfig
from thinkfast.training.recipes import run

torch.set_num_threads(1)


def _cfg(tiny_setup, tmp_path, **over):
    base = {
        "student": {"keep_attention": 1},
        "align": {"max_steps": 60, "lr": 1e-2, "warmup": 0.0},
        "heldout": {"path": tiny_setup["data"], "seq_len": 48, "packing": False},
        "heldout_rows": 8,
        "max_steps": 1,
        "optim": {"lr": 1e-4, "warmup": 0, "schedule": "constant"},
    }
    base.update(over)
    return load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, **base))


def _pair(tiny_setup):
    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher
    from thinkfast.training.recipes import teacher_stack

    hf, _ = load_teacher(tiny_setup["teacher"], tokenizer=False)
    return convert(hf, "hybrid", keep_attention=1), teacher_stack(hf, torch.float32, torch.device("cpu"))


def _batch(vocab: int, b: int = 2, length: int = 16) -> dict:
    ids = torch.randint(0, vocab, (b, length))
    pos = torch.arange(length).repeat(b, 1)
    pos[0, 9:] = torch.arange(length - 9)  # two documents in row 0
    return {"input_ids": ids, "position_ids": pos, "valid": torch.ones(b, length, dtype=torch.bool),
            "targets": ids.roll(-1, 1)}


def test_teacher_io_matches_a_plain_forward(tiny_setup):
    student, teacher = _pair(tiny_setup)
    batch = _batch(teacher.config.vocab_size)
    seq = SequenceInfo.build(2, 16, torch.device("cpu"), position_ids=batch["position_ids"])
    io = teacher_mixer_io(teacher, batch["input_ids"], seq, [0, 2])
    _, inputs = teacher.hidden_states(batch["input_ids"], seq, output_layer_inputs=True)
    layer = teacher.model.layers[2]
    torch.testing.assert_close(io[2][0], layer.input_layernorm(inputs[2]))
    torch.testing.assert_close(io[2][1], layer.mixer(layer.input_layernorm(inputs[2]), seq))


def test_trains_only_the_replaced_mixers(tiny_setup):
    student, teacher = _pair(tiny_setup)
    layers = [i for i, m in enumerate(student.config.layer_mixers) if m != "attention"]
    task = MixerAlignTask(student, teacher, layers)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    expected = {n for n, _ in student.named_parameters() if any(n.startswith(f"model.layers.{i}.mixer.") for i in layers)}
    assert trainable == expected and trainable
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    batch = _batch(teacher.config.vocab_size)
    loss, _ = task.module(batch, task.teacher_outputs(batch))
    loss.backward()
    with torch.no_grad():
        for p in student.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= expected


def test_a_layer_loss_sees_teacher_inputs_only(tiny_setup):
    student, teacher = _pair(tiny_setup)
    layers = [i for i, m in enumerate(student.config.layer_mixers) if m != "attention"]
    batch = _batch(teacher.config.vocab_size)
    before = layer_errors(student, teacher, [batch], layers)
    with torch.no_grad():  # wreck every other student layer: layer `last` must not notice
        last = layers[-1]
        for i, layer in enumerate(student.model.layers):
            if i != last:
                for p in layer.parameters():
                    p.add_(torch.randn_like(p))
    after = layer_errors(student, teacher, [batch], layers)
    assert after[last] == pytest.approx(before[last], rel=1e-6)
    assert any(after[i] != pytest.approx(before[i], rel=1e-3) for i in layers if i != last)


@pytest.mark.parametrize("keep", [1, 0])  # 0: every layer Mamba (MambaInLlama's 0%-attention student)
def test_alignment_cuts_the_kl_by_a_large_factor(tiny_setup, tmp_path, keep):
    cfg = _cfg(tiny_setup, tmp_path, student={"keep_attention": keep})
    run(cfg)
    fid = json.loads((tmp_path / "run" / "fidelity.json").read_text())
    init, aligned = fid["init"], fid["aligned"]
    # a random 4-layer teacher: 0.107 -> 0.035 nats/token (3x); the real SmolLM2 teacher's factor is in the
    # CPU run's report (docs/results/run_cpu_default_report.md)
    assert aligned["kl_to_teacher"] < init["kl_to_teacher"] / 2.5, (init["kl_to_teacher"], aligned["kl_to_teacher"])
    assert aligned["top1_agreement"] > init["top1_agreement"]
    errors_before = init["layer_errors"]
    errors_after = aligned["layer_errors"]
    assert set(errors_before) == set(errors_after)
    assert sum(errors_after.values()) < 0.6 * sum(errors_before.values())
    assert all(errors_after[k] < errors_before[k] for k in errors_after)
    assert "final" in fid
    assert (tmp_path / "run" / "align" / "final" / "config.json").is_file()


def test_alignment_resumes_after_a_kill(tiny_setup, tmp_path):
    over = {"align": {"max_steps": 8, "lr": 1e-2, "warmup": 0.0}, "save_every": 3}
    full = run(_cfg(tiny_setup, tmp_path / "a", **over))

    class Kill(Exception):
        pass

    def killer(step, loss):
        if step == 5:
            raise Kill

    with pytest.raises(Kill):
        run(_cfg(tiny_setup, tmp_path / "b", **over), on_step=killer)
    resumed = run(_cfg(tiny_setup, tmp_path / "b", **over), resume=True)
    a = [json.loads(line)["loss"] for line in (tmp_path / "a" / "run" / "align" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line)["loss"] for line in (tmp_path / "b" / "run" / "align" / "metrics.jsonl").read_text().splitlines()]
    assert b == a  # the killed run's rows (1-5) plus the resumed ones (4-8 re-run from the step-3 checkpoint)
    assert resumed.losses == pytest.approx(full.losses)


def test_auto_attention_layers_are_chosen_by_measurement(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path, student={"attention_layers": "auto", "keep_attention": 1},
               align={"max_steps": 10, "lr": 1e-2, "warmup": 0.0, "selection_rows": 4})
    result = run(cfg)
    selection = json.loads((tmp_path / "run" / "align" / "selection.json").read_text())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(result.final_dir))
    chosen = [i for i, m in enumerate(model.config.layer_mixers) if m == "attention"]
    assert chosen == selection["chosen"] and len(chosen) == 1
    first = selection["rounds"][0]
    assert first["kl"] == min(first["scores"].values())  # the greedy round kept the best-scoring layer
    assert selection["kl_chosen"] <= selection["kl_even"] + 1e-9  # the even layer was a candidate too


def test_greedy_selection_restores_attention_exactly(tiny_setup):
    """With every layer as the teacher's attention the student IS the teacher: KL 0."""
    from thinkfast.convert import convert
    from thinkfast.teachers import load_teacher
    from thinkfast.training.recipes import teacher_stack

    hf, _ = load_teacher(tiny_setup["teacher"], tokenizer=False)
    student = convert(hf, "hybrid", attention_layers="auto")
    teacher = teacher_stack(hf, torch.float32, torch.device("cpu"))
    n = len(student.config.layer_mixers)
    out = select_attention_layers(student, teacher, [_batch(teacher.config.vocab_size)], keep=n)
    assert sorted(out["chosen"]) == list(range(n)) and out["rounds"][-1]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert all(m != "attention" for m in student.config.layer_mixers)  # measuring leaves the student as it was


def test_auto_needs_alignment_and_a_count(tiny_setup, tmp_path):
    with pytest.raises(ThinkfastError, match="attention_layers=auto"):
        _cfg(tiny_setup, tmp_path, student={"attention_layers": "auto", "keep_attention": 1}, align={"max_steps": 0})
    with pytest.raises(ThinkfastError, match="align only applies"):
        load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, recipe="mohawk", student={"target": "llamba"},
                                             stages=[{"stage": 3, "max_steps": 1}], align={"max_steps": 2}))
