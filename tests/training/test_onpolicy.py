"""On-policy distillation: the student's own answers, stored per round, trained on with the teacher's loss.

It must (a) answer the training prompts (each prompt once per pass, deterministic order), (b) train on the
answer tokens only, (c) store a round before training on it so a killed run resumes on the same rows with
the same losses, (d) lower the student's KL to the teacher on its own answers, (e) refuse configs it cannot run."""

import json

import pytest
import torch

from _training_util import tiny_config
from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError
from thinkfast.training.config import OnPolicyConfig, TrainConfig
from thinkfast.training.data import IGNORE, Document
from thinkfast.training.onpolicy import OnPolicyLoader, answer_documents, unique_prompts
from thinkfast.training.recipes import run

torch.set_num_threads(1)


def _docs(n: int) -> list[Document]:
    return [Document([1, 2 + i % 5, 3, 10, 11], [IGNORE, IGNORE, IGNORE, 10, 11]) for i in range(n)]


def test_prompts_are_the_untrained_prefixes_once_each():
    prompts = unique_prompts(_docs(12))
    assert prompts == [[1, 2 + i, 3] for i in range(5)]
    with pytest.raises(ThinkfastError, match="no training record has a prompt"):
        unique_prompts([Document([1, 2, 3], [1, 2, 3])])


def test_answers_are_trained_and_prompts_are_not():
    (doc,) = answer_documents([[5, 6]], [[7, 8, 9]])
    assert doc.input_ids == [5, 6, 7, 8, 9] and doc.labels == [IGNORE, IGNORE, 7, 8, 9]
    assert answer_documents([[5, 6]], [[]]) == []  # an empty answer trains nothing


class _Recorder:
    """A fake student: answers prompt p with tokens that depend on p and the round's seed."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt_ids, params, keys):
        self.calls.append(list(keys))
        return [[100 + k, 200 + (params.seed % 7), 300] for k in keys]


def _loader(tmp_path, gen, per=6, **over):
    cfg = OnPolicyConfig(max_steps=10, prompts_per_round=per, **over)
    prompts = [[1, 2, 3 + i] for i in range(10)]
    return OnPolicyLoader(prompts, cfg, gen, seq_len=12, micro_batch_size=1, grad_accum=2, pad_id=0, seed=3,
                          folder=tmp_path)


def test_rounds_cover_every_prompt_before_repeating_one(tmp_path):
    loader = _loader(tmp_path, _Recorder(), per=4)
    picked = loader.round_prompts(0) + loader.round_prompts(1) + loader.round_prompts(2)[:2]
    assert sorted(picked) == list(range(10))  # one pass over the 10 prompts
    assert loader.round_prompts(1) == _loader(tmp_path, _Recorder(), per=4).round_prompts(1)


def test_a_resumed_loader_reads_the_stored_round_and_repeats_the_rows(tmp_path):
    gen = _Recorder()
    loader = _loader(tmp_path, gen)
    steps = [loader.next_step() for _ in range(5)]
    state = loader.state_dict()
    later = [loader.next_step() for _ in range(3)]
    rounds = len(gen.calls)
    assert rounds >= 2 and (tmp_path / "rounds" / "r00000.json").is_file()
    stored = json.loads((tmp_path / "rounds" / "r00000.json").read_text())
    assert stored["prompts"] == gen.calls[0]

    gen2 = _Recorder()
    again = _loader(tmp_path, gen2)
    again.load_state_dict(state)
    for want in later:
        got = again.next_step()
        assert all(torch.equal(g[k], w[k]) for g, w in zip(got, want) for k in w)
    assert len(gen2.calls) <= 1  # only a round never stored before is generated
    for step in steps:  # every trained target is an answer token, never a prompt token
        for batch in step:
            trained = batch["targets"][batch["targets"] != IGNORE]
            assert trained.numel() > 0 and bool((trained >= 100).all())


def test_a_round_too_small_for_one_step_is_refused(tmp_path):
    loader = _loader(tmp_path, _Recorder(), per=1)
    with pytest.raises(ThinkfastError, match="raise onpolicy.prompts_per_round"):
        loader.next_step()


def _cfg(tiny_setup, tmp_path, **over):
    base = {
        "student": {"keep_attention": 1},
        "heldout": {"path": tiny_setup["data"], "seq_len": 48, "packing": False},
        "heldout_rows": 8,
        "max_steps": 2,
        "optim": {"lr": 3e-3, "warmup": 0, "schedule": "constant"},
        "onpolicy": {"max_steps": 12, "prompts_per_round": 16, "temperature": 1.0, "max_new_tokens": 12},
        "save_every": 4,
    }
    base.update(over)
    return load_config(TrainConfig, tiny_config(tiny_setup, tmp_path, **base))


def test_onpolicy_stage_trains_on_its_answers_and_lowers_their_kl(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path)
    result = run(cfg)
    out = tmp_path / "run"
    assert (out / "offline" / "final" / "config.json").is_file() and result.final_dir == out / "final"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    rounds = sorted((out / "rounds").glob("r*.json"))
    assert rounds and all(json.loads(p.read_text())["answers"] for p in rounds)
    timings = json.loads((out / "timings.json").read_text())
    assert {"load", "end_to_end", "onpolicy", "measure"} <= set(timings)
    fid = json.loads((out / "fidelity.json").read_text())
    assert {"init", "offline", "final"} <= set(fid)
    # the loss is the KL on the student's own answers: the first quarter vs the last quarter of the steps
    first = sum(r["loss"] for r in rows[:3]) / 3
    last = sum(r["loss"] for r in rows[-3:]) / 3
    assert last < 0.8 * first, (first, last)


def test_onpolicy_resumes_after_a_kill(tiny_setup, tmp_path):
    full = run(_cfg(tiny_setup, tmp_path / "a"))

    class Kill(Exception):
        pass

    seen = []

    def killer(step, loss):
        seen.append(step)
        if len(seen) == 2 + 7:  # 2 offline steps, then on-policy step 7 (after the step-4 checkpoint)
            raise Kill

    with pytest.raises(Kill):
        run(_cfg(tiny_setup, tmp_path / "b"), on_step=killer)
    run(_cfg(tiny_setup, tmp_path / "b"), resume=True)
    a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert b == pytest.approx(a, rel=1e-5)
    assert full.final_dir is not None


def test_onpolicy_needs_the_distill_recipe_and_prompts(tiny_setup, tmp_path):
    with pytest.raises(ThinkfastError, match="data.train_on must be 'response'"):
        _cfg(tiny_setup, tmp_path, data={"path": tiny_setup["data"], "seq_len": 48, "train_on": "all"})
    with pytest.raises(ThinkfastError, match="onpolicy.temperature must be > 0"):
        _cfg(tiny_setup, tmp_path, onpolicy={"max_steps": 2, "temperature": 0})
