"""Records -> chat messages -> (input_ids, labels) with the tokenizer's chat template.

A record is either `{"messages": [{"role", "content"}, ...]}` or a problem/solution pair
(GSM8K `question`/`answer`, MATH `problem`/`solution`, or `prompt`/`response`), or plain `text`.
Labels are the token ids on trained tokens and -100 elsewhere, NOT shifted: the shift
to "position t predicts t+1" happens once, per document, in `packing.py`.
With `train_on='response'` an assistant turn is labelled from its first token up to and
including the end-of-turn (EOS) token; anything the template adds after it (a newline) is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from thinkfast.config import find_data_path
from thinkfast.errors import ThinkfastError
from thinkfast.training.config import DataConfig

PROMPT_FIELDS = ("question", "problem", "prompt", "instruction")
RESPONSE_FIELDS = ("answer", "solution", "response", "output", "generated_solution")
IGNORE = -100


@dataclass
class Document:
    input_ids: list[int]
    labels: list[int]  # same length; IGNORE on untrained tokens (unshifted)

    @property
    def prompt_length(self) -> int:
        """Tokens before the first trained one (the whole document if none is trained)."""
        for i, lab in enumerate(self.labels):
            if lab != IGNORE:
                return i
        return len(self.labels)


# ------------------------------------------------------------------ reading
def read_records(path: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """JSONL file, directory of JSONL files, or `hf:name[:config]` through `datasets`."""
    if path.startswith("hf:"):
        try:
            import datasets
        except ImportError as err:
            raise ThinkfastError("reading hf:<dataset> needs the `datasets` package: pip install datasets") from err
        name, _, config = path[3:].partition(":")
        ds = datasets.load_dataset(name, config or None, split=split)
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        return [dict(row) for row in ds]
    p = find_data_path(path)  # relative paths: the working directory, then $THINKFAST_DATA, ../shared/data
    if p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise ThinkfastError(f"data folder {p} holds no .jsonl file")
    else:
        files = [p]
    records: list[dict] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ThinkfastError(f"{f}:{lineno} is not valid JSON: {err}") from None
                if not isinstance(record, dict):
                    raise ThinkfastError(
                        f"{f}:{lineno} is a JSON {_kind(record)}, not an object: each line must be one record "
                        "like {\"question\": ..., \"answer\": ...} or {\"messages\": [...]}"
                    )
                records.append(record)
                if limit is not None and len(records) >= limit:
                    return records
    return records


def _kind(value) -> str:
    if value is None:
        return "null"
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number", dict: "object"}.get(
        type(value), type(value).__name__)


def _text(record: dict, key: str, what: str) -> str:
    """The text of a prompt / response field: a string (or a number); null, lists and objects are refused
    rather than trained on as their Python repr ("None")."""
    value = record[key]
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return str(value)
    raise ThinkfastError(f"field {key!r} ({what}) is {_kind(value) if value is None else 'a ' + _kind(value)}, not text")


def _messages(record: dict) -> list[dict]:
    raw = record["messages"]
    if not isinstance(raw, list) or not raw:
        raise ThinkfastError(f"`messages` must be a non-empty list of {{role, content}} objects, got {_kind(raw)}")
    out = []
    for k, m in enumerate(raw, 1):
        if not isinstance(m, dict):
            raise ThinkfastError(f"message {k} is a {_kind(m)}, not a {{role, content}} object")
        for key in ("role", "content"):
            if key not in m:
                raise ThinkfastError(f"message {k} has no `{key}` (fields: {sorted(m)})")
        if not isinstance(m["role"], str) or not m["role"]:
            raise ThinkfastError(f"message {k}: `role` must be a string such as user or assistant, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ThinkfastError(f"message {k} ({m['role']}): `content` is {_kind(m['content'])}, not text")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _pick(record: dict, explicit: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    if explicit:
        if explicit not in record:
            raise ThinkfastError(f"record has no field {explicit!r} ({what}); fields are {sorted(record)}")
        return explicit
    return next((c for c in candidates if c in record), None)


def record_to_messages(record: dict, cfg: DataConfig, with_response: bool = True) -> list[dict]:
    """One record -> chat messages; `with_response=False` gives the prompt only (for generation)."""
    if cfg.format in ("auto", "messages") and "messages" in record:
        messages = _messages(record)
        if not with_response:
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
        return messages
    if cfg.format == "messages":
        raise ThinkfastError(f"data.format is 'messages' but a record has no `messages` field (fields: {sorted(record)})")
    prompt_key = _pick(record, cfg.prompt_field, PROMPT_FIELDS, "prompt")
    response_key = _pick(record, cfg.response_field, RESPONSE_FIELDS, "response")
    if prompt_key is None or (with_response and response_key is None):
        raise ThinkfastError(
            f"cannot read a record with fields {sorted(record)}: expected `messages`, or a prompt field "
            f"{list(PROMPT_FIELDS)} and a response field {list(RESPONSE_FIELDS)} (or set data.prompt_field / "
            "data.response_field)"
        )
    messages = []
    if cfg.system_prompt:
        messages.append({"role": "system", "content": cfg.system_prompt})
    messages.append({"role": "user", "content": cfg.prompt_template.format(prompt=_text(record, prompt_key, "prompt"))})
    if with_response:
        messages.append({"role": "assistant", "content": _text(record, response_key, "response")})
    return messages


# ------------------------------------------------------------------ tokenising
def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ThinkfastError("the tokenizer has no chat template; use a tokenizer (teacher) that ships one")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            ids.add(tid)
    return ids


def tokenize_messages(tokenizer, messages: list[dict], train_on: str = "response") -> Document:
    """Chat template -> Document; assistant spans found by rendering each turn's prefix."""
    ids = _render(tokenizer, messages, add_generation_prompt=False)
    if train_on == "all":
        return Document(ids, list(ids))
    labels = [IGNORE] * len(ids)
    stops = end_of_turn_ids(tokenizer)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if ids[: len(upto)] != upto or start > len(upto):
            raise ThinkfastError(
                "the chat template does not render earlier turns as a prefix of the conversation, so the "
                "assistant tokens cannot be located; use data.train_on=all or a template without that behaviour"
            )
        end = len(upto)
        for j in range(start, len(upto)):  # stop after the end-of-turn token
            if upto[j] in stops:
                end = j + 1
                break
        labels[start:end] = ids[start:end]
    return Document(ids, labels)


def text_bos_id(tokenizer) -> int | None:
    """The BOS id to start a plain-text document with, or None.

    Only when the tokenizer defines a BOS that its own usage puts there: it adds it when encoding
    (Llama-3's post-processor) or its chat template writes `bos_token`.  A teacher trained that way
    leans on BOS as an attention sink (Llama-3).  Qwen2 defines no BOS; a tokenizer that defines one but
    neither adds nor templates it (ChatML-style `<|im_start|>` as BOS) does not get it prepended.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    if "bos_token" in (getattr(tokenizer, "chat_template", None) or ""):
        return bos
    plain = tokenizer("0", add_special_tokens=False)["input_ids"]
    special = tokenizer("0", add_special_tokens=True)["input_ids"]
    return bos if list(special[:1]) == [bos] and list(special[1:]) == list(plain) else None


def tokenize_record(tokenizer, record: dict, cfg: DataConfig) -> Document:
    """Plain `text` records (pretraining-style data such as FineMath) are trained on every token,
    with the teacher's BOS first when its tokenizer uses one (`text_bos_id`)."""
    if cfg.format in ("auto", "text") and "text" in record and "messages" not in record:
        ids = list(tokenizer(_text(record, "text", "text"), add_special_tokens=False)["input_ids"])
        bos = text_bos_id(tokenizer)
        if bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return Document(ids, list(ids))
    return tokenize_messages(tokenizer, record_to_messages(record, cfg), cfg.train_on)


def load_documents(cfg: DataConfig, tokenizer, records: Iterable[dict] | None = None) -> list[Document]:
    if records is None:
        records = read_records(cfg.path, cfg.split, cfg.max_examples)
    docs = []
    for i, record in enumerate(records):
        try:
            docs.append(tokenize_record(tokenizer, record, cfg))
        except ThinkfastError as err:
            raise ThinkfastError(f"data {cfg.path!r} record {i + 1}: {err}") from None
    if cfg.max_examples is not None:
        docs = docs[: cfg.max_examples]
    docs = [d for d in docs if len(d.input_ids) >= 2]
    if not docs:
        raise ThinkfastError(f"data {cfg.path!r} holds no usable examples (empty file, or every record is empty)")
    if not any(lab != IGNORE for d in docs for lab in d.labels):
        raise ThinkfastError(f"data {cfg.path!r} has no trained tokens: no assistant turns (or set data.train_on=all)")
    return docs
