"""The `Sampler` protocol the evaluation pipeline samples through, and a plain `transformers` fallback.

The fast engine (thinkfast.inference) implements the same protocol; anything with this `sample`
method plugs into `pipeline.sample_model`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from thinkfast.inference.params import Completion, SamplingParams


@runtime_checkable
class Sampler(Protocol):
    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """n completions per prompt: result[i][j] is sample j of prompts[i] (prompt_index=i, sample_index=j)."""
        ...


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFGenerateSampler:
    """Batched `model.generate` with left padding. Each generate call is seeded with
    `params.seed + call index`, so a run is reproducible for a fixed batch layout."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.device = torch.device(device)
        self.calls = 0
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        finally:
            tok.padding_side = side
        if params.seed is not None:
            torch.manual_seed(params.seed + self.calls)
        self.calls += 1
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id)
        if params.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
            if params.min_p > 0:
                kwargs["min_p"] = params.min_p
        if params.ignore_eos:
            kwargs["eos_token_id"] = None
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=tok)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)  # (B, prompt_len + new)
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        eos_cfg = self.model.generation_config.eos_token_id
        eos_cfg = tok.eos_token_id if eos_cfg is None else eos_cfg
        eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg])
        results = []
        for row in new_tokens:
            ids, reason = [], "length"
            for t in row:
                ids.append(t)
                if not params.ignore_eos and t in eos:
                    reason = "eos"
                    break
            text = tok.decode(ids, skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, params.stop)
            if stopped:
                reason = "stop"
            results.append(Completion(prompt_index=0, sample_index=0, token_ids=ids, text=text, finish_reason=reason))
        return results

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        flat = [(i, j) for i in range(len(prompts)) for j in range(n)]  # (prompt, sample) per row
        out: list[list[Completion]] = [[None] * n for _ in prompts]  # type: ignore[list-item]
        for start in range(0, len(flat), self.batch_size):
            chunk = flat[start : start + self.batch_size]
            for (i, j), comp in zip(chunk, self._generate([prompts[i] for i, _ in chunk], params)):
                comp.prompt_index, comp.sample_index = i, j
                out[i][j] = comp
        return out
