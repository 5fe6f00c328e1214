"""Helpers of the training tests: a word-level chat tokenizer, a random Llama teacher, a small chat dataset.

A module of its own (not conftest.py): `from conftest import ...` picks whichever conftest was imported last
when pytest is given several test directories (`pytest tests/training tests/ops`)."""

from __future__ import annotations

import json
import random

import torch

WORDS = [f"w{i}" for i in range(40)] + ["system", "user", "assistant", "what", "is", "plus", "equals"]
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tok.chat_template = TEMPLATE
    return tok


def make_teacher(vocab_size: int, layers: int = 4, hidden: int = 32, heads: int = 2, kv: int = 1, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharper teacher distributions make the distillation signal clear
        model.lm_head.weight.mul_(8.0)
    return model


def make_records(n: int, seed: int = 0, min_len: int = 3, max_len: int = 12) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS[:40]) for _ in range(rng.randint(min_len, max_len)))
        a = " ".join(rng.choice(WORDS[:40]) for _ in range(rng.randint(min_len, max_len)))
        rows.append({"question": q, "answer": a})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def tiny_config(tiny_setup, tmp_path, **over) -> dict:
    cfg = {
        "recipe": "distill",
        "teacher": tiny_setup["teacher"],
        "student": {"keep_attention": 1},
        "data": {"path": tiny_setup["data"], "seq_len": 48, "system_prompt": "w1 w2"},
        "optim": {"lr": 3e-3, "warmup": 0, "schedule": "constant", "weight_decay": 0.0},
        "output_dir": str(tmp_path / "run"),
        "max_steps": 6,
        "micro_batch_size": 2,
        "save_every": 0,
        "progress": False,
    }
    for key, value in over.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg
