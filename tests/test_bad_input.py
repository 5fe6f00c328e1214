"""Bad input gets one clear line: `thinkfast <command>: error: <message>` on stderr, exit status 2, and no
traceback -- for every case of issue 12 (and the neighbouring ones found while fixing them)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.evaluation.tiny import save_tiny
from thinkfast.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama teacher (byte tokenizer with a chat template) whose positions end at 96."""
    from tests.evaluation.tiny import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("model") / "tiny"
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64, layers=2)
    model.config.max_position_embeddings = 96
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


PROGRESS = re.compile(r"\|.*\d+/\d+ \[")


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must fail with exit status 2 and exactly one `thinkfast CMD: error: ...` line."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines()  # (progress bars and the engine's log are not messages)
             if line.strip() and not line.startswith("thinkfast.engine:") and not PROGRESS.search(line)]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    prefix = f"thinkfast {argv[0]}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def _write(path: Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


# ------------------------------------------------------------------ training data rows
def _distill_yaml(tmp_path, teacher: str, data: str, **extra) -> str:
    cfg = {"recipe": "distill", "teacher": teacher, "student": {"keep_attention": 1},
           "data": {"path": data, "seq_len": 64}, "max_steps": 1, "output_dir": str(tmp_path / "out"),
           "progress": False, "device": "cpu", **extra}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([{"question": "q", "answer": "a"}, [1, 2]],
     "{data}:2 is a JSON list, not an object: each line must be one record like "
     '{{"question": ..., "answer": ...}} or {{"messages": [...]}}'),
    ([{"question": "q", "answer": "a"}, "42"],
     "{data}:2 is a JSON number, not an object: each line must be one record like "
     '{{"question": ..., "answer": ...}} or {{"messages": [...]}}'),
    ([{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}],
     "data '{data}' record 1: message 1 has no `role` (fields: ['content'])"),
    ([{"messages": [{"role": "user", "content": None}]}],
     "data '{data}' record 1: message 1 (user): `content` is null, not text"),
    ([{"messages": "hello"}],
     "data '{data}' record 1: `messages` must be a non-empty list of {{role, content}} objects, got string"),
    ([{"question": "q", "answer": "a"}, {"question": "what", "answer": None}],
     "data '{data}' record 2: field 'answer' (response) is null, not text"),
    ([{"question": ["a", "b"], "answer": "a"}],
     "data '{data}' record 1: field 'question' (prompt) is a list, not text"),
    (["{not json"], None),
])
def test_bad_training_rows(model_dir, tmp_path, capsys, rows, message):
    data = _write(tmp_path / "data.jsonl", rows)
    got = one_line_error(capsys, ["distill", _distill_yaml(tmp_path, model_dir, data)])
    if message is None:
        assert got.startswith(f"{data}:1 is not valid JSON: ")
    else:
        assert got == message.format(data=data)
    assert not (tmp_path / "out" / "final").exists()


def test_step_with_no_trained_position_is_refused(model_dir, tmp_path, capsys, monkeypatch):
    """A step whose rows hold no trained position used to report loss 0.000 (as if converged) and go on."""
    monkeypatch.setattr("thinkfast.training.tasks.TokenLossTask.count", lambda self, batch: 0)
    data = _write(tmp_path / "data.jsonl", [{"question": "1+1", "answer": "2"}] * 4)
    got = one_line_error(capsys, ["distill", _distill_yaml(tmp_path, model_dir, data)])
    assert got == ("step 1 has no trained positions (every response in its rows was cut off by data.seq_len=64, or "
                   "its examples have no assistant turn): it would report loss 0 and learn nothing. Raise "
                   "data.seq_len or remove those examples")


def test_documents_without_a_trained_token_are_left_out():
    from tests.evaluation.tiny import tiny_tokenizer
    from thinkfast.training.config import DataConfig
    from thinkfast.training.data import load_documents
    from thinkfast.training.packing import PackedLoader

    docs = load_documents(DataConfig(path="x"), tiny_tokenizer(), [{"question": "x" * 40, "answer": "yes"},
                                                                   {"question": "a", "answer": "b"}])
    with pytest.warns(UserWarning, match="left out"):
        loader = PackedLoader(docs, 16, 1, 1, True, False, 0, 0)
    assert len(loader.docs) == 1
    for _ in range(3):  # every step trains something
        assert int((loader.next_step()[0]["targets"] != -100).sum()) > 0


# ------------------------------------------------------------------ model paths
@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "./no-such-model", "--prompt", "hi"], "model ./no-such-model: no such directory"),
    (["generate", "--model", "{tmp}/nope/model", "--prompt", "hi"], "model {tmp}/nope/model: no such directory"),
    (["generate", "--model", "~/no-such-thinkfast-model", "--prompt", "hi"],
     "model ~/no-such-thinkfast-model: no such directory"),
    (["convert", "--teacher", "{tmp}/missing", "--out", "{tmp}/s"], "teacher {tmp}/missing: no such directory"),
    (["generate", "--model", "runs/students/hybrid", "--prompt", "hi"], "model runs/students/hybrid: no such directory"),
    (["gen-data", "--teacher", "./missing", "--prompts", "p.jsonl", "--out", "o.jsonl"],
     "teacher ./missing: no such directory"),
])
def test_missing_local_model_path_is_not_a_hub_id(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert one_line_error(capsys, argv) == message.format(tmp=tmp_path)


def test_missing_student_path_in_a_training_config(tmp_path, capsys, model_dir):
    data = _write(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    path = _distill_yaml(tmp_path, model_dir, data, student={"path": str(tmp_path / "runs" / "x")})
    (tmp_path / "runs").mkdir()
    assert one_line_error(capsys, ["distill", path]) == f"student.path {tmp_path / 'runs' / 'x'}: no such directory"


# ------------------------------------------------------------------ generate
@pytest.mark.parametrize("content, message", [
    (None, "prompts file {path} does not exist"),
    ("", 'prompts file {path} holds no prompts (one per line, or JSONL with a "prompt" field)'),
    ("\n  \n", 'prompts file {path} holds no prompts (one per line, or JSONL with a "prompt" field)'),
    ('{"text": "hello"}\n', '{path}:1 has no "prompt" field (fields: [\'text\'])'),
    ('hello\n{"prompt": 3}\n', '{path}:2: "prompt" must be a non-empty string'),
    ('{"prompt": "a"\n', "{path}:1 looks like JSON but is not valid JSON (Expecting ',' delimiter)"),
])
def test_generate_prompts_file(model_dir, tmp_path, capsys, content, message):
    path = tmp_path / "prompts.jsonl"
    if content is not None:
        path.write_text(content)
    got = one_line_error(capsys, ["generate", "--model", model_dir, "--prompts-file", str(path)])
    assert got == message.format(path=path)


def _tokens(model_dir: str, text: str) -> int:
    from transformers import AutoTokenizer

    from thinkfast.inference.engine import encode_prompts

    return len(encode_prompts(AutoTokenizer.from_pretrained(model_dir), [text])[0])


def test_generate_past_the_models_positions(model_dir, capsys):
    long = "x" * 120  # past the model's 96 positions
    n = _tokens(model_dir, long)
    assert one_line_error(capsys, ["generate", "--model", model_dir, "--prompt", long, "--max-batch", "1"]) == (
        f"prompt 0 has {n} tokens, more than the model's 96 positions (max_position_embeddings): shorten it")
    n = _tokens(model_dir, "x" * 80)
    assert one_line_error(capsys, ["generate", "--model", model_dir, "--prompt", "x" * 80, "--max-new-tokens", "40"]) == (
        f"prompt 0 has {n} tokens; with max_new_tokens=40 it would run to position {n + 39}, past the model's 96 "
        f"positions (max_position_embeddings): lower max_new_tokens to {96 - n + 1} or less")
    n = _tokens(model_dir, "abc")
    assert one_line_error(capsys, ["generate", "--model", model_dir, "--prompt", "abc", "--max-len", "8",
                                   "--max-new-tokens", "10"]) == (
        f"prompt 0 has {n} tokens, so max_new_tokens=10 needs max_len >= {n + 9}, but the engine's max_len is 8: its "
        "samples would be cut short; raise max_len")
    assert one_line_error(capsys, ["generate", "--model", model_dir, "--prompt", "a", "--n", "0"]) == "--n must be >= 1, got 0"


def test_generate_sizes_the_pool_to_the_request(model_dir, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="thinkfast.engine")
    assert main(["generate", "--model", model_dir, "--prompt", "ab", "--n", "3", "--max-new-tokens", "2",
                 "--temperature", "0"]) == 0
    assert "memory plan: 3 decode slots" in caplog.text  # one prompt x 3 samples, not 64 slots
    assert len(capsys.readouterr().out.splitlines()) == 3


# ------------------------------------------------------------------ evaluation
def _eval_yaml(tmp_path, model_dir, **over) -> str:
    cfg = {"models": [{"name": "tiny", "path": model_dir, "batch_size": 4}],
           "dataset": {"name": "synthetic", "synthetic_n": 3, "synthetic_steps": 1},
           "n_samples": 2, "k_list": [1, 2], "prompt": "plain", "sampling": {"max_new_tokens": 4, "seed": 0},
           "out_dir": str(tmp_path / "eval"), "progress": False, "grading_workers": 1, **over}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_eval_k_above_n_samples_is_refused(model_dir, tmp_path, capsys):
    got = one_line_error(capsys, ["eval", "score", "--config", _eval_yaml(tmp_path, model_dir),
                                  "--set", "k_list=[1,4,8]"])
    assert got == ("k_list has [4, 8] above n_samples=2: every k needs that many samples per problem; raise "
                   "n_samples or drop those k")


def test_eval_max_len_below_prompt_plus_new_tokens_names_the_problem(tmp_path, capsys):
    """It used to cut those samples silently and record them as `length`."""
    model_dir = save_tiny(tmp_path / "model")  # 2048 positions
    cfg = _eval_yaml(tmp_path, model_dir, models=[{"name": "tiny", "path": model_dir, "max_len": 400}],
                     sampling={"max_new_tokens": 300, "seed": 0})
    got = one_line_error(capsys, ["eval", "sample", "--config", cfg])
    assert re.fullmatch(
        r"model 'tiny': problem \S+ \(index \d+\) has \d+ tokens, so max_new_tokens=300 needs max_len >= \d+, "
        r"but the engine's max_len is 400: its samples would be cut short; raise max_len", got), got
    assert not any(p.stat().st_size for p in (tmp_path / "eval").rglob("*.jsonl"))  # refused before sampling


# ------------------------------------------------------------------ command line and configs
def test_negative_layer_list_reaches_convert(tmp_path, capsys, model_dir):
    got = one_line_error(capsys, ["convert", "--teacher", model_dir, "--attention-layers", "-1,1",
                                  "--out", str(tmp_path / "s")])
    assert got == ("attention layer index(es) [-1] out of range: the teacher has layers 0..1 (counted from 0; "
                   "negative indices are not accepted)")


def test_run_students_can_be_changed_and_selected(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr("thinkfast.pipeline.run_pipeline", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    assert main(["run", "run_tiny_cpu", "--students", "hybrid", "students.0.train.max_steps=2",
                 "students.pure.train.save_every=1", "out_dir=/tmp/x"]) == 0
    cfg = seen["cfg"]
    assert [s.name for s in cfg.students] == ["hybrid"] and cfg.students[0].train["max_steps"] == 2
    assert one_line_error(capsys, ["run", "run_tiny_cpu", "students.tiny.train.max_steps=2"]) == (
        "override 'students.tiny.train.max_steps=2': students has no entry named 'tiny' (names: ['hybrid', 'pure']); "
        "or use an index such as students.0")
    assert one_line_error(capsys, ["run", "run_tiny_cpu", "students.7.recipe=distill"]) == (
        "override 'students.7.recipe=distill': students has 2 entries, no index 7")
    assert one_line_error(capsys, ["run", "run_tiny_cpu", "--students", "big"]) == (
        "--students big: the config's students are ['hybrid', 'pure']")


def test_shipped_tiny_configs_find_their_data_through_thinkfast_data(tmp_path, monkeypatch):
    from thinkfast.commands.train import load_train_config
    from thinkfast.training.data import read_records

    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "gsm8k_train.jsonl", [{"question": "q", "answer": "a #### 1"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("THINKFAST_DATA", str(tmp_path / "data"))
    for name in ("tiny_distill_cpu", "tiny_mohawk_cpu", "tiny_sft_cpu"):
        recipe = name.split("_")[1]
        cfg = load_train_config(recipe, name, [f"student.path={tmp_path}"] if recipe == "sft" else [])
        assert read_records(cfg.data.path) == [{"question": "q", "answer": "a #### 1"}]
    monkeypatch.setenv("THINKFAST_DATA", str(tmp_path / "empty"))
    from thinkfast.config import data_search_dirs

    if not any((d / "gsm8k_train.jsonl").exists() for d in data_search_dirs()):
        from thinkfast.errors import ThinkfastError

        with pytest.raises(ThinkfastError, match="does not exist"):
            read_records("gsm8k_train.jsonl")


def test_env_is_untouched():
    assert "THINKFAST_FAULT" not in os.environ
