"""On-policy distillation: the student writes the rows it is trained on.

Offline distillation trains the student on the teacher's answers. At test time the student reads its
own tokens instead, and a small per-token error compounds over a ~200-token answer: it drifts into
states no teacher answer showed it. Here, each round, the student answers `prompts_per_round` prompts
of the training data with the generation engine at its current weights, and the ordinary token loss
(reverse KL to the teacher over the whole vocabulary, by default) is taken at every generated position:
the teacher corrects the student where the student actually goes (GKD, Agarwal et al. 2024; the
"on-policy distillation" of Qwen3 and of Thinking Machines' note, with the full-vocabulary loss).

A round is stored (`<dir>/rounds/r<k>.json`, the prompts' indices and the generated token ids) before it
is trained on, so a killed run resumes on the same rows: the loader's state is (round, offset). A
round's rows are packed like any training data (packing.py) and give `len(rows) // rows per step`
steps; the leftover rows of a round are dropped.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from thinkfast import storage
from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import SamplingParams, engine_max_len
from thinkfast.training.config import OnPolicyConfig
from thinkfast.training.data import IGNORE, Document
from thinkfast.training.packing import build_row, collate, plan_rows


def unique_prompts(docs: list[Document]) -> list[list[int]]:
    """The prompt part (tokens before the first trained one) of each document, first occurrence only."""
    seen: set[tuple[int, ...]] = set()
    prompts = []
    for doc in docs:
        prompt = tuple(doc.input_ids[: doc.prompt_length])
        if prompt and doc.prompt_length < len(doc.input_ids) and prompt not in seen:
            seen.add(prompt)
            prompts.append(list(prompt))
    if not prompts:
        raise ThinkfastError("onpolicy needs prompts to answer, and no training record has a prompt before its "
                             "response: give problem/solution or chat records")
    return prompts


def answer_documents(prompts: list[list[int]], answers: list[list[int]]) -> list[Document]:
    """prompt + the student's answer; trained on the answer's tokens (its end-of-turn token included)."""
    return [Document(p + a, [IGNORE] * len(p) + list(a)) for p, a in zip(prompts, answers) if a]


class OnPolicyLoader:
    """The trainer's loader (next_step / state_dict / load_state_dict) over rounds of the student's answers.

    `generate(prompt_ids, params, keys) -> token id lists` answers with the student's current weights
    (`engine_generate`; tests pass their own)."""

    def __init__(self, prompts: list[list[int]], cfg: OnPolicyConfig, generate, seq_len: int, micro_batch_size: int,
                 grad_accum: int, pad_id: int, seed: int, folder: str | Path, is_main: bool = True):
        self.prompts, self.cfg, self.generate = prompts, cfg, generate
        self.seq_len, self.micro, self.accum, self.pad_id, self.seed = seq_len, micro_batch_size, grad_accum, pad_id, seed
        self.folder, self.is_main = Path(folder) / "rounds", is_main
        self.round, self.offset = 0, 0
        self._loaded: tuple[int, list[Document], list[list[int]]] | None = None

    # ------------------------------------------------------------------ which prompts a round answers
    def round_prompts(self, k: int) -> list[int]:
        """Prompt indices of round k: epochs of a seeded permutation, read `prompts_per_round` at a time."""
        per, n = self.cfg.prompts_per_round, len(self.prompts)
        picked = []
        start = k * per
        while len(picked) < per:
            epoch, at = divmod(start + len(picked), n)
            order = list(range(n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            picked += order[at : at + per - len(picked)]
        return picked

    def _path(self, k: int) -> Path:
        return self.folder / f"r{k:05d}.json"

    def _round(self, k: int) -> tuple[list[Document], list[list[int]]]:
        if self._loaded is not None and self._loaded[0] == k:
            return self._loaded[1], self._loaded[2]
        path = self._path(k)
        if path.is_file():  # written before it was trained on: a resumed run reads the same answers
            stored = json.loads(path.read_text())
            indices, answers = stored["prompts"], stored["answers"]
        else:
            indices = self.round_prompts(k)
            params = SamplingParams(temperature=self.cfg.temperature, max_new_tokens=self.cfg.max_new_tokens,
                                    seed=self.seed * 7919 + k)
            start = time.perf_counter()
            answers = self.generate([self.prompts[i] for i in indices], params, indices)
            seconds = time.perf_counter() - start
            if self.is_main:
                mean = sum(len(a) for a in answers) / max(len(answers), 1)
                storage.atomic_write_json(path, {"round": k, "prompts": indices, "answers": answers,
                                                 "mean_tokens": mean, "seconds": seconds}, indent=None)
                print(f"[thinkfast] on-policy round {k}: {len(answers)} answers, {mean:.0f} tokens on average, "
                      f"generated in {seconds:.1f} s", flush=True)
        docs = answer_documents([self.prompts[i] for i in indices], answers)
        order = list(range(len(docs)))
        random.Random(self.seed * 1_000_003 + k).shuffle(order)
        rows = plan_rows([len(d.input_ids) for d in docs], order, self.seq_len, packing=True)
        if len(rows) < self.global_rows:
            raise ThinkfastError(
                f"onpolicy round {k} packs into {len(rows)} rows of {self.seq_len} tokens, fewer than one step "
                f"({self.global_rows} rows): raise onpolicy.prompts_per_round"
            )
        self._loaded = (k, docs, rows)
        return docs, rows

    @property
    def global_rows(self) -> int:
        return self.micro * self.accum

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        docs, rows = self._round(self.round)
        if self.offset + self.global_rows > len(rows):
            self.round, self.offset = self.round + 1, 0
            docs, rows = self._round(self.round)
        window = rows[self.offset : self.offset + self.global_rows]
        self.offset += self.global_rows
        return [collate([build_row([docs[i] for i in row], self.seq_len, self.pad_id)
                         for row in window[m * self.micro : (m + 1) * self.micro]]) for m in range(self.accum)]

    def state_dict(self) -> dict:
        return {"round": self.round, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.offset = int(state["round"]), int(state["offset"])


def engine_generate(student, tokenizer, cfg: OnPolicyConfig, prompts: list[list[int]]):
    """generate(prompt_ids, params, keys) -> answers, on the student's current weights through the engine
    (rl/rollouts.py: a bf16 mirror refreshed in place before every round on a GPU, the student itself on a
    CPU). The engine and its state pool are built once, at the first round, and kept."""
    from thinkfast.inference.engine import describe_stats
    from thinkfast.rl.config import RolloutConfig
    from thinkfast.rl.rollouts import RolloutEngine

    device = next(student.parameters()).device
    slots = min(cfg.max_batch or cfg.prompts_per_round, cfg.prompts_per_round)
    rollout = RolloutConfig(dtype="bf16" if device.type == "cuda" else "policy", max_new_tokens=cfg.max_new_tokens,
                            cuda_graphs=device.type == "cuda")
    max_len = engine_max_len(cfg.max_new_tokens, (len(p) for p in prompts))
    engine = RolloutEngine(student, tokenizer, rollout, max_len=max_len, max_batch=slots)

    def generate(prompt_ids: list[list[int]], params: SamplingParams, keys: list[int]) -> list[list[int]]:
        answers = [c[0].token_ids for c in engine.generate(prompt_ids, params, n=1, keys=keys)]
        print(f"[thinkfast] on-policy engine: {describe_stats(engine.get().last_stats)}", flush=True)
        return answers

    return generate
