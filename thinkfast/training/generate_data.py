"""Sequence-level KD data: the teacher answers prompts, each answer becomes a chat example.

`generate_completions` is the only place that produces tokens: our batched engine, with the
teacher converted to our stack.  Output rows: {"messages": [..prompt.., assistant], "source_index",
"sample_index", "finish_reason", "prompt_rows" (how many rows that prompt has), plus the source
record's gold fields}; a re-run appends only the prompts not done yet.

The file is a crash-safe store (`thinkfast.storage`): locked while written, appended and fsync'ed per
batch; a kill mid-append leaves a torn last line, which the next run cuts off together with the rows of
any prompt whose rows are incomplete, and redoes those prompts.  Sample j of source record i is seeded by
(seed, i, j), so a prompt redone after a kill gets the answers the uninterrupted run would have written.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch

from thinkfast import storage
from thinkfast.device import resolve_device, resolve_dtype
from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import Completion, SamplingParams, engine_max_len
from thinkfast.training.config import DataConfig
from thinkfast.training.data import read_records, record_to_messages


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[list[dict]], params: SamplingParams, n: int = 1,
                         batch_size: int = 16, keys: list[int] | None = None) -> list[Completion]:
    """Chat prompts -> n completions each, sampled by our engine (continuous batching, the
    prompt prefilled once per n samples, CUDA graphs on GPU).  `model` is a ThinkfastForCausalLM:
    a teacher runs converted to our stack (identical logits).  `keys`: a stable identity per prompt
    for its samples' seeds (see Engine.generate)."""
    from thinkfast.inference.engine import Engine, describe_stats

    params.validate()
    ids = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
           for p in prompts]
    engine = Engine(model, tokenizer, max_batch=min(batch_size, len(ids) * n),
                    max_len=engine_max_len(params.max_new_tokens, map(len, ids)),
                    cuda_graphs=torch.cuda.is_available(), progress=False)
    if keys is not None:  # name prompts by their record, not their place in this batch
        engine.check_prompts(ids, params, [f"prompt of record {k + 1}" for k in keys])
    results = engine.generate(ids, params, n=n, keys=keys)
    print(f"[thinkfast] generated {len(ids) * n} answers: {describe_stats(engine.last_stats)}", flush=True)
    return [c for per_prompt in results for c in per_prompt]


def generate_kd_data(teacher_spec: str, prompts_path: str, out_path: str, params: SamplingParams, data: DataConfig,
                     n: int = 1, batch_size: int = 16, limit: int | None = None, keep_truncated: bool = False,
                     device: str = "auto", dtype: str = "auto") -> int:
    """Write teacher answers to `out_path` (JSONL); returns how many rows were added."""
    records = read_records(prompts_path, limit=limit)
    if not records:
        raise ThinkfastError(f"prompt file {prompts_path} holds no records")
    out = Path(out_path)
    with storage.FolderLock(out, f"KD data file {out}"):
        return _generate_locked(teacher_spec, records, out, params, data, n, batch_size, keep_truncated, device, dtype)


def completed_prompts(out: Path) -> set[int]:
    """Source indices whose rows are all in the KD file; cuts off a torn last line and the rows of prompts
    a kill left incomplete (call it holding the file's lock)."""
    rows = storage.read_jsonl(out, repair=True)
    counts = Counter(r.get("source_index") for r in rows)
    whole = {s for s, c in counts.items() if all(r.get("prompt_rows", c) == c for r in rows if r.get("source_index") == s)}
    if len(whole) < len(counts):
        storage.write_jsonl(out, [r for r in rows if r.get("source_index") in whole])
    return whole


def _generate_locked(teacher_spec, records, out: Path, params, data, n, batch_size, keep_truncated, device, dtype) -> int:
    from thinkfast.inference.api import load_for_generation

    done = completed_prompts(out)
    todo = [i for i in range(len(records)) if i not in done]
    if not todo:
        return 0
    prompts_of = {}
    for i in todo:  # every record is checked before the teacher is loaded
        try:
            prompts_of[i] = record_to_messages(records[i], data, with_response=False)
        except ThinkfastError as err:
            raise ThinkfastError(f"prompt file record {i + 1}: {err}") from None
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    start = time.perf_counter()
    model, tokenizer = load_for_generation(teacher_spec, dtype=torch_dtype, device=str(dev))
    print(f"[thinkfast] teacher loaded in {time.perf_counter() - start:.1f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    added = 0
    step = max(1, batch_size // n) * 32  # prompts per flush (each flush builds an engine: few, large ones)
    for start in range(0, len(todo), step):
        idx = todo[start : start + step]
        prompts = [prompts_of[i] for i in idx]
        comps = generate_completions(model, tokenizer, prompts, params, n=n, batch_size=batch_size, keys=idx)
        kept = [c for c in comps if c.finish_reason != "length" or keep_truncated]
        per_prompt = Counter(c.prompt_index for c in kept)
        rows = []
        for c in kept:
            src = records[idx[c.prompt_index]]
            row = {"messages": prompts[c.prompt_index] + [{"role": "assistant", "content": c.text}],
                   "source_index": idx[c.prompt_index], "sample_index": c.sample_index,
                   "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids),
                   "prompt_rows": per_prompt[c.prompt_index]}
            for key in ("answer", "solution"):
                if key in src:
                    row["gold_" + key] = src[key]
            rows.append(row)
        added += storage.append_jsonl(out, rows)
    return added
