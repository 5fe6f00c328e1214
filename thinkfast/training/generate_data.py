"""Sequence-level KD data: the teacher answers prompts, each answer becomes a chat example.

`generate_completions` is the only place that produces tokens: our batched engine, with the
teacher converted to our stack.  Output rows: {"messages": [..prompt.., assistant], "source_index",
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
from thinkfast.training.data import read_records, record_to_messages


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[list[dict]], params: SamplingParams, n: int = 1,
                         batch_size: int = 16) -> list[Completion]:
    """Chat prompts -> n completions each, sampled by our engine (continuous batching, the
    prompt prefilled once per n samples, CUDA graphs on GPU).  `model` is a ThinkfastForCausalLM:
    a teacher runs converted to our stack (identical logits)."""
    from thinkfast.inference.engine import Engine

    params.validate()
    ids = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
           for p in prompts]
    engine = Engine(model, tokenizer, max_batch=batch_size, max_len=max(map(len, ids)) + params.max_new_tokens,
                    cuda_graphs=torch.cuda.is_available(), progress=False)
    results = engine.generate(ids, params, n=n)
    return [c for per_prompt in results for c in per_prompt]


def generate_kd_data(teacher_spec: str, prompts_path: str, out_path: str, params: SamplingParams, data: DataConfig,
                     n: int = 1, batch_size: int = 16, limit: int | None = None, keep_truncated: bool = False,
                     device: str = "auto", dtype: str = "auto") -> int:
    """Write teacher answers to `out_path` (JSONL); returns how many rows were added."""
    from thinkfast.inference.api import load_for_generation

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
    model, tokenizer = load_for_generation(teacher_spec, dtype=torch_dtype, device=str(dev))
    out.parent.mkdir(parents=True, exist_ok=True)
    added = 0
    step = max(1, batch_size // n) * 32  # prompts per flush (each flush builds an engine: few, large ones)
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
