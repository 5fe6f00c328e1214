"""Offline fixtures for the GRPO tests: a character tokenizer, a tiny hybrid, the digit-sum task."""

from __future__ import annotations

import torch

from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

CHARS = list("0123456789+=\\boxed{}")
SPECIALS = ["<pad>", "</s>", "<unk>"]
PREFIX = "\\boxed{"  # the prompt opens the box; the policy writes the digits (and may close it)


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # no merges: one token per character
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_policy(vocab_size: int, mixers=("mamba1", "attention"), hidden: int = 32, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = ThinkfastConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=len(mixers),
        num_attention_heads=2, num_key_value_heads=1, layer_mixers=list(mixers), max_position_embeddings=256,
        eos_token_id=1, pad_token_id=0, mamba2={"chunk_size": 8}, discrete_mamba2={"chunk_size": 8},
    )
    return ThinkfastForCausalLM(cfg).to(dtype).eval()


def digit_sum_task(max_digit: int = 4, max_sum: int = 9):
    """Prompts "a+b=\\boxed{" with gold a+b, for digits a, b <= max_digit with a + b <= max_sum."""
    prompts, golds = [], []
    for a in range(max_digit + 1):
        for b in range(max_digit + 1):
            if a + b <= max_sum:
                prompts.append(f"{a}+{b}={PREFIX}")
                golds.append(str(a + b))
    return prompts, golds


def exact_reward(golds, responses):
    """A grader-free reward for unit tests: 1 when the response starts with the gold digits then stops/closes."""
    from thinkfast.rl.reward import Score

    out = []
    for g, r in zip(golds, responses):
        ok = r == g or r.startswith(g + "}")
        out.append(Score(float(ok), ok, "}" in r))
    return out
