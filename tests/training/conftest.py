"""Tiny offline fixtures: a word-level chat tokenizer, a random Llama teacher, a small chat dataset
(helpers in _training_util.py)."""

from __future__ import annotations

import pytest

from _training_util import make_records, make_teacher, make_tokenizer, tiny_config, write_jsonl  # noqa: F401


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory):
    """A saved teacher directory (with tokenizer) and a JSONL dataset; returns paths."""
    root = tmp_path_factory.mktemp("tiny")
    tok = make_tokenizer()
    teacher = make_teacher(len(tok))
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    data = write_jsonl(root / "data.jsonl", make_records(64))
    return {"teacher": str(root / "teacher"), "data": data, "root": root}
