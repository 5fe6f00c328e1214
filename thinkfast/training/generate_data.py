"""Sequence-level KD data: the teacher answers prompts, each answer becomes a chat example.

`generate_completions` is the only place that produces tokens; it speaks the engine's
`SamplingParams` / `Completion` types, so the batched engine can replace HF `generate` here
without touching the rest.  Output rows: {"messages": [..prompt.., assistant], "source_index",
"sample_index", "finish_reason", plus the source record's gold fields}; a re-run appends only
the prompts not done yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import Completion, SamplingParams
from thinkfast.training.config import DataConfig
from thinkfast.training.data import end_of_turn_ids, read_records, record_to_messages


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[list[dict]], params: SamplingParams, n: int = 1,
                         batch_size: int = 16) -> list[Completion]:
    """Chat prompts -> n completions each (HF generate, left-padded batches)."""
    params.validate()
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    jobs = [(i, j) for i in range(len(texts)) for j in range(n)]
    stops = sorted(end_of_turn_ids(tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    out: list[Completion] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            enc = tokenizer([texts[i] for i, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            if params.seed is not None:
                torch.manual_seed(params.seed + start)
            kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=pad_id, do_sample=not params.greedy)
            if not params.greedy:
                kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
                if params.min_p:
                    kwargs["min_p"] = params.min_p
            if not params.ignore_eos:
                kwargs["eos_token_id"] = stops
            gen = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1] :]
            for (i, j), row in zip(chunk, gen.tolist()):
                ids, reason = [], "length"
                for t in row:
                    ids.append(t)
                    if t in stops and not params.ignore_eos:
                        reason = "eos"
                        break
                text = tokenizer.decode(ids, skip_special_tokens=True)
                for s in params.stop:
                    if s in text:
                        text, reason = text[: text.index(s)], "stop"
                        break
                out.append(Completion(i, j, ids, text, reason))
    finally:
        tokenizer.padding_side = side
    return out


def generate_kd_data(teacher_spec: str, prompts_path: str, out_path: str, params: SamplingParams, data: DataConfig,
                     n: int = 1, batch_size: int = 16, limit: int | None = None, keep_truncated: bool = False,
                     device: str = "auto", dtype: str = "auto") -> int:
    """Write teacher answers to `out_path` (JSONL); returns how many rows were added."""
    from thinkfast.teachers.loading import load_teacher

    records = read_records(prompts_path, limit=limit)
    if not records:
        raise ThinkfastError(f"prompt file {prompts_path} holds no records")
    out = Path(out_path)
    done = set()
    if out.is_file():
        done = {json.loads(line)["source_index"] for line in out.read_text().splitlines() if line.strip()}
    todo = [i for i in range(len(records)) if i not in done]
    if not todo:
        return 0
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    torch_dtype = torch.bfloat16 if (dtype == "bf16" or (dtype == "auto" and dev.type == "cuda")) else torch.float32
    model, tokenizer = load_teacher(teacher_spec, dtype=torch_dtype, device=dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    added = 0
    step = max(1, batch_size // n) * 8  # prompts per flush
    for start in range(0, len(todo), step):
        idx = todo[start : start + step]
        prompts = [record_to_messages(records[i], data, with_response=False) for i in idx]
        comps = generate_completions(model, tokenizer, prompts, params, n=n, batch_size=batch_size)
        with open(out, "a") as fh:
            for c in comps:
                if c.finish_reason == "length" and not keep_truncated:
                    continue
                src = records[idx[c.prompt_index]]
                row = {"messages": prompts[c.prompt_index] + [{"role": "assistant", "content": c.text}],
                       "source_index": idx[c.prompt_index], "sample_index": c.sample_index,
                       "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids)}
                for key in ("answer", "solution"):
                    if key in src:
                        row["gold_" + key] = src[key]
                fh.write(json.dumps(row) + "\n")
                added += 1
    return added
