"""Plain-text records (FineMath, MOHAWK stages 1-2) start with the teacher's BOS exactly when its tokenizer
uses one: it adds BOS when encoding (Llama-3) or its chat template writes `bos_token`; never otherwise."""

import pytest

from conftest import make_tokenizer
from thinkfast.training.config import DataConfig
from thinkfast.training.data import load_documents, text_bos_id

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|> {{ m['role'] }} <|end_header_id|> {{ m['content'] }} "
    "<|eot_id|> {% endfor %}"
)
TEXT = [{"text": "w1 w2 w3"}, {"text": "w4 w5"}]


def _word_tokenizer(bos: str | None, adds_bos: bool, template: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(10)] + ["user", "assistant"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if adds_bos:  # what Llama-3's tokenizer.json does
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  eos_token="<|end_of_text|>", bos_token=bos)
    tok.chat_template = template
    return tok


def _ids(tok):
    return [d.input_ids for d in load_documents(DataConfig(path="unused", format="text", train_on="all"), tok, TEXT)]


@pytest.mark.parametrize("adds_bos,template", [(True, LLAMA3_TEMPLATE), (False, LLAMA3_TEMPLATE),
                                               (True, "{% for m in messages %}{{ m['content'] }}{% endfor %}")])
def test_llama3_style_tokenizer_gets_bos_first(adds_bos, template):
    tok = _word_tokenizer("<|begin_of_text|>", adds_bos, template)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert text_bos_id(tok) == bos
    first, second = _ids(tok)
    assert first == [bos, *tok("w1 w2 w3", add_special_tokens=False)["input_ids"], eos]
    assert second[0] == bos and second.count(bos) == 1


def test_no_bos_when_the_tokenizer_has_none_qwen2_style():
    tok = _word_tokenizer(None, False, "{% for m in messages %}<|start_header_id|> {{ m['content'] }}{% endfor %}")
    assert tok.bos_token_id is None and text_bos_id(tok) is None
    assert _ids(tok)[0] == [*tok("w1 w2 w3", add_special_tokens=False)["input_ids"], tok.eos_token_id]


def test_no_bos_when_defined_but_never_used():
    """ChatML tokenizers name <|im_start|> as BOS but neither add nor template it as such."""
    tok = make_tokenizer()
    assert tok.bos_token_id is not None and text_bos_id(tok) is None
    (doc,) = load_documents(DataConfig(path="unused", format="text", train_on="all"), tok, [{"text": "w1 w2"}])
    assert tok.convert_ids_to_tokens(doc.input_ids) == ["w1", "w2", "<|im_end|>"]
