import pytest
import torch

from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

# tiny models: one OpenMP thread is far faster than two fighting over a busy 2-core box
torch.set_num_threads(1)

VOCAB = 61

MIXES = {
    "attention": ["attention", "attention"],
    "hybrid": ["mamba1", "attention", "mamba1"],
    "pure": ["discrete_mamba2", "discrete_mamba2"],
    "all_kinds": ["attention", "mamba1", "discrete_mamba2", "mamba2"],
}


def tiny_model(mix: str, seed: int = 0) -> ThinkfastForCausalLM:
    torch.manual_seed(seed)
    layers = MIXES[mix]
    config = ThinkfastConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=len(layers),
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_mixers=layers,
        discrete_mamba2={"chunk_size": 8, "n_qk_heads": 2},
        mamba2={"chunk_size": 8},
        eos_token_id=None,
    )
    model = ThinkfastForCausalLM(config).eval()
    with torch.no_grad():  # sharper logits than the default init, so greedy choices are well separated
        model.model.embed_tokens.weight.mul_(20)
    return model


class CharTokenizer:
    """Token t <-> the letter chr(97 + t % 26) (ids >= 52 are 'special' and decode to nothing)."""

    bos_token_id = None
    eos_token_id = None
    pad_token_id = 0

    class _Enc:
        def __init__(self, ids):
            self.input_ids = ids

    def __call__(self, text, add_special_tokens=True):
        return self._Enc([ord(c) - 97 for c in text])

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + t % 26) for t in ids if not (skip_special_tokens and t >= 52))


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()
