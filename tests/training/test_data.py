"""Chat-template labels, the shift, packing with document resets, the resumable loader."""

import pytest
import torch

from _training_util import make_records, make_teacher, make_tokenizer
from thinkfast.convert import convert
from thinkfast.errors import ThinkfastError
from thinkfast.training.config import DataConfig
from thinkfast.training.data import IGNORE, load_documents, tokenize_messages
from thinkfast.training.losses import token_loss_sum
from thinkfast.training.packing import PackedLoader, build_row, collate
from thinkfast.training.tasks import batch_seq

torch.set_num_threads(1)
CONV = [
    {"role": "system", "content": "w1 w2"},
    {"role": "user", "content": "what is w3 plus w4"},
    {"role": "assistant", "content": "w5 w6 w7"},
]


def test_kd_mask_is_exactly_the_response_after_the_shift():
    tok = make_tokenizer()
    doc = tokenize_messages(tok, CONV)
    words = tok.convert_ids_to_tokens(doc.input_ids)
    row = build_row([doc], 32, tok.pad_token_id)
    trained = [i for i, t in enumerate(row["targets"].tolist()) if t != IGNORE]
    # positions that predict a response token: from the token before "w5" up to the one before EOS
    first = words.index("w5") - 1
    eos = len(words) - 1 - words[::-1].index("<|im_end|>")
    assert words[first] == "assistant" and words[eos] == "<|im_end|>"
    assert trained == list(range(first, eos))  # first response token in, the position after EOS out
    assert tok.convert_ids_to_tokens(row["targets"][trained].tolist()) == ["w5", "w6", "w7", "<|im_end|>"]


def test_train_on_all_labels_every_token_but_nothing_across_documents():
    tok = make_tokenizer()
    a, b = tokenize_messages(tok, CONV, "all"), tokenize_messages(tok, CONV[:2] + [{"role": "assistant", "content": "w9"}], "all")
    row = build_row([a, b], 64, tok.pad_token_id)
    n = len(a.input_ids)
    t = row["targets"]
    assert t[n - 1] == IGNORE  # last token of doc a does not predict doc b's first token
    assert torch.equal(t[: n - 1], torch.tensor(a.input_ids[1:]))
    assert row["position_ids"][n] == 0 and row["valid"].sum() == n + len(b.input_ids)


def test_multi_turn_labels_every_assistant_turn_only():
    tok = make_tokenizer()
    conv = CONV + [{"role": "user", "content": "w8"}, {"role": "assistant", "content": "w9 w10"}]
    doc = tokenize_messages(tok, conv)
    labelled = tok.convert_ids_to_tokens([t for t in doc.labels if t != IGNORE])
    assert labelled == ["w5", "w6", "w7", "<|im_end|>", "w9", "w10", "<|im_end|>"]


@pytest.mark.parametrize("target", ["hybrid", "llamba"])
def test_packed_rows_give_the_same_per_document_losses(target):
    tok = make_tokenizer()
    teacher_hf = make_teacher(len(tok))
    student = convert(teacher_hf, target=target, **({"keep_attention": 1} if target == "hybrid" else {})).eval()
    teacher = convert(teacher_hf, target="attention").eval()
    cfg = DataConfig(path="x", system_prompt="w1")
    docs = load_documents(cfg, tok, make_records(3, seed=5))
    L = sum(len(d.input_ids) for d in docs) + 3
    packed = collate([build_row(docs, L, tok.pad_token_id)])
    alone = [collate([build_row([d], L, tok.pad_token_id)]) for d in docs]

    def per_doc(batch, spans):
        with torch.no_grad():
            hs = student.hidden_states(batch["input_ids"], batch_seq(batch))
            ht = teacher.hidden_states(batch["input_ids"], batch_seq(batch))
        out = []
        for row, (s, e) in spans:
            t = torch.full_like(batch["targets"], IGNORE)
            t[row, s:e] = batch["targets"][row, s:e]
            total, _, _ = token_loss_sum(hs, student.head_weight(), t, {"reverse_kl": 1.0, "ce": 1.0}, ht, teacher.head_weight())
            out.append(float(total.detach()))
        return out

    starts = [0]
    for d in docs:
        starts.append(starts[-1] + len(d.input_ids))
    got = per_doc(packed, [(0, (starts[i], starts[i + 1])) for i in range(len(docs))])
    want = [per_doc(b, [(0, (0, len(d.input_ids)))])[0] for b, d in zip(alone, docs)]
    assert min(want) > 1e-3
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)


def _loader(docs, **kw):
    base = dict(seq_len=48, micro_batch_size=2, grad_accum=2, seed=3)
    base.update(kw)
    return PackedLoader(docs, **base)


def test_loader_is_deterministic_and_resumes_from_its_position():
    tok = make_tokenizer()
    docs = load_documents(DataConfig(path="x"), tok, make_records(40))
    a = _loader(docs)
    seq_a = [a.next_step() for _ in range(12)]  # crosses epoch boundaries
    b = _loader(docs)
    for _ in range(5):
        b.next_step()
    state = b.state_dict()
    c = _loader(docs)
    c.load_state_dict(state)
    for want, got in zip(seq_a[5:], [c.next_step() for _ in range(7)]):
        for x, y in zip(want, got):
            assert all(torch.equal(x[k], y[k]) for k in x)
    assert a.epoch > 0
    d = _loader(docs, seed=4)
    assert not torch.equal(d.next_step()[0]["input_ids"], seq_a[0][0]["input_ids"])


def test_ranks_split_the_global_batch_of_one_process():
    tok = make_tokenizer()
    docs = load_documents(DataConfig(path="x"), tok, make_records(40))
    single = _loader(docs, micro_batch_size=2, grad_accum=1).next_step()[0]["input_ids"]
    parts = [_loader(docs, micro_batch_size=1, grad_accum=1, rank=r, world_size=2).next_step()[0]["input_ids"] for r in range(2)]
    assert torch.equal(torch.cat(parts), single)


def test_seq_len_below_longest_prompt_without_packing_fails():
    tok = make_tokenizer()
    docs = load_documents(DataConfig(path="x"), tok, make_records(8, min_len=20, max_len=20))
    with pytest.raises(ThinkfastError, match="shorter than the longest prompt"):
        PackedLoader(docs, seq_len=16, packing=False)
    with pytest.raises(ThinkfastError, match="shorter than every prompt"):
        PackedLoader(docs, seq_len=16, packing=True)
    short = load_documents(DataConfig(path="x"), tok, make_records(8, min_len=2, max_len=2))
    with pytest.warns(UserWarning, match="8 of 16 documents"):
        PackedLoader(docs + short, seq_len=16, packing=True)  # packing truncates the long ones


def test_empty_dataset_fails(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ThinkfastError, match="no usable examples"):
        load_documents(DataConfig(path=str(empty)), make_tokenizer())


def test_real_smollm2_template_stops_labels_at_im_end():
    from thinkfast.teachers.loading import load_tokenizer

    try:
        tok = load_tokenizer("smollm2-135m")
    except Exception as err:  # not cached and no network
        pytest.skip(f"SmolLM2 tokenizer unavailable: {err}")
    doc = tokenize_messages(tok, CONV)
    row = build_row([doc], len(doc.input_ids), tok.pad_token_id)
    trained = [i for i, t in enumerate(row["targets"].tolist()) if t != IGNORE]
    text = tok.decode(row["targets"][trained].tolist())
    assert text == "w5 w6 w7<|im_end|>"
    assert tok.decode(doc.input_ids[trained[0]:trained[0] + 1]).strip() in ("", "assistant")  # "assistant\n"
    assert tok.decode(doc.input_ids[trained[-1] + 1:]) == "<|im_end|>\n"
