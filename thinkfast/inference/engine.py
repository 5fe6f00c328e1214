"""The generation engine: continuous batching over a preallocated pool of decode slots.

    engine = Engine(model, tokenizer, max_len=4096)
    results = engine.generate(prompts, SamplingParams(temperature=0.7), n=8)   # [prompt][sample] -> Completion

How a request flows:
  1. admission — waiting prompts take free slots; a batch of them is prefilled once
     (left-padded) into one slot each, then `copy_slots` forks each prompt's state into
     the slots of its other samples; the first token of every sample is drawn from the
     prefill logits with its own seed;
  2. decode windows — every active slot advances by up to `sync_every` tokens with no
     host synchronisation: the step (model step + sampling + bookkeeping on device
     tables) is one CUDA graph per batch bucket, padded with a scratch slot;
  3. host check — the window's new tokens come back in one small copy; EOS, stop
     strings and token budgets are judged on the host; finished slots are freed and
     refilled from the queue at the next admission.
A window never runs a sequence past its token budget (its length is the smallest
remaining budget), so a slot's cache never overflows, and sequences finished by EOS
inside a window only cost the rest of that window.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.inference.graphs import DecodeGraphs, bucket_sizes, pick_bucket
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, Completion, SamplingParams, resolve_ssm_state_dtype
from thinkfast.inference.planner import plan_slots
from thinkfast.inference.sampling import SamplerMode, sample_next, sequence_seed
from thinkfast.inference.stopping import StopRules

log = logging.getLogger("thinkfast.engine")


@dataclass
class _Request:
    index: int
    ids: list[int]
    pending: list[int]  # sample indices not yet admitted
    key: int = 0  # stable identity of the prompt for its samples' seeds (default: its index)
    sample_ids: list[int] | None = None  # identity of each sample for its seed (default: its index)


@dataclass
class _Sequence:
    request: _Request
    sample_index: int
    slot: int
    budget: int
    rules: StopRules
    generated: int = 1  # tokens produced on the device (the first comes from prefill)
    checked: int = 0  # tokens already judged by the stop rules
    tokens: list[int] = field(default_factory=list)  # tokens copied back to the host


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def encode_prompts(tokenizer, prompts) -> list[list[int]]:
    """Token ids of prompts given as strings (BOS added where the tokenizer adds one) or as id lists."""
    if all(isinstance(p, (list, tuple)) for p in prompts):
        return [[int(t) for t in p] for p in prompts]
    if tokenizer is None:
        raise ThinkfastError("string prompts need a tokenizer; pass token id lists or give the engine one")
    tok = tokenizer
    bos = getattr(tok, "bos_token_id", None)
    adds_bos = bos is not None and tok("x", add_special_tokens=True).input_ids[:1] == [bos]
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise ThinkfastError("prompts must be all strings or all lists of token ids")
        ids = tok(p, add_special_tokens=False).input_ids
        if adds_bos and (not ids or ids[0] != bos):  # text from a chat template usually has it already
            ids = [bos] + ids
        out.append(ids)
    return out


def check_request(prompt_lengths: list[int], max_new_tokens: int, max_len: int, max_positions: int | None = None,
                  labels: list[str] | None = None, strict: bool = False) -> None:
    """Raise a ThinkfastError naming the first prompt an engine cannot serve: empty, longer than max_len,
    or one whose generation would run past the model's positions (max_position_embeddings: the output
    would be garbage).  With `strict`, also one whose max_new_tokens would be cut short by max_len
    (without it the engine cuts such samples at max_len and reports them as `length`)."""
    for i, n in enumerate(prompt_lengths):
        name = labels[i] if labels is not None else f"prompt {i}"
        if n == 0:
            raise ThinkfastError(f"{name} is empty")
        if max_positions and n > max_positions:
            raise ThinkfastError(f"{name} has {n} tokens, more than the model's {max_positions} positions "
                                 "(max_position_embeddings): shorten it")
        if n > max_len:
            raise ThinkfastError(f"{name} has {n} tokens, more than the engine's max_len={max_len}")
        wanted = n + max_new_tokens - 1  # cache positions the longest sample would use
        used = min(wanted, max_len)
        if max_positions and used > max_positions:
            raise ThinkfastError(
                f"{name} has {n} tokens; with max_new_tokens={max_new_tokens} it would run to position {used}, "
                f"past the model's {max_positions} positions (max_position_embeddings): lower max_new_tokens to "
                f"{max_positions - n + 1} or less"
            )
        if strict and wanted > max_len:
            raise ThinkfastError(
                f"{name} has {n} tokens, so max_new_tokens={max_new_tokens} needs max_len >= {wanted}, but the "
                f"engine's max_len is {max_len}: its samples would be cut short; raise max_len"
            )


class Engine:
    def __init__(
        self,
        model,
        tokenizer=None,
        max_batch: int | None = None,
        max_len: int = 4096,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        cuda_graphs: bool = True,
        sync_every: int = 16,
        prefill_tokens: int = 8192,
        progress: bool = True,
        ssm_state_dtype: str | torch.dtype = DEFAULT_SSM_STATE_DTYPE,  # "fp32" | "bf16"
    ):
        first = next(model.parameters())
        self.device = torch.device(device) if device is not None else first.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype or model.model.embed_tokens.weight.dtype
        self.ssm_state_dtype = resolve_ssm_state_dtype(ssm_state_dtype)  # Mamba layers' recurrent state in the pool
        model = model.to(self.device)
        if model.model.embed_tokens.weight.dtype != self.dtype:
            model = model.to(self.dtype)
            model.cast_ssm_params_fp32()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self.sync_every = max(1, int(sync_every))
        self.prefill_tokens = int(prefill_tokens)
        self.progress = progress
        self.capacity = max(self.max_len, self.sync_every)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        if any(m.decode_stacked is not None for m in self.model._decode_stackers()):
            # copies left pointed to by an engine driven outside `generate` (the benchmarks call its decode windows
            # directly) would count against this plan (0.9 GB of q/k/v at Llama-3B); a live engine keeps its own
            self.model.use_decode_projections(None)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the planner reads the device's free memory
        self.plan = plan_slots(self.model, self.capacity, self.dtype, self.device, max_batch, self.prefill_tokens,
                               ssm_dtype=self.ssm_state_dtype)
        if self.plan.slots < 1:
            raise ThinkfastError(f"no decode slot fits in memory: {self.plan.reason}. Lower max_len or free memory.")
        # decode's one q/k/v GEMM per attention layer and one gate/up GEMM per MLP read stacked copies of the
        # weights (refilled at every generate: they may have been trained since). Made only where they cost no
        # slot: at Llama-3B, 256 + 4096 tokens, q/k/v alone (0.9 GB) would take the 256th slot the teacher needs.
        plan = self.plan
        spare = (plan.fit - plan.slots) * (plan.state_bytes_per_slot + plan.decode_workspace_per_row)
        fits = self.model.decode_projection_bytes() <= spare
        self.stacked_copies = self.model.stack_decode_projections() if fits else None
        # the decode body points the model at them; between calls the model holds no reference, so dropping the
        # engine frees them (RL releases its rollout engine between phases)
        self.model.use_decode_projections(None)
        self.num_slots = self.plan.slots
        self.scratch = self.num_slots  # padding rows of a bucket all write here
        rows = self.num_slots + 1
        dev = self.device
        self.state = self.model.allocate_state(rows, self.capacity, dtype=self.dtype, device=dev,
                                               ssm_dtype=self.ssm_state_dtype)
        self.last_tok = torch.zeros(rows, dtype=torch.long, device=dev)
        self.n_gen = torch.zeros(rows, dtype=torch.long, device=dev)
        self.out = torch.zeros(rows, self.capacity + 1, dtype=torch.int32, device=dev)
        self.temperature = torch.zeros(rows, dtype=torch.float32, device=dev)
        self.top_k = torch.zeros(rows, dtype=torch.long, device=dev)
        self.top_p = torch.ones(rows, dtype=torch.float32, device=dev)
        self.min_p = torch.zeros(rows, dtype=torch.float32, device=dev)
        self.seeds = torch.zeros(rows, dtype=torch.long, device=dev)
        self.buckets = bucket_sizes(self.num_slots)
        self.use_graphs = bool(cuda_graphs) and dev.type == "cuda"
        self.graphs = DecodeGraphs(dev, self._decode_body, self._reset_scratch, self.scratch) if self.use_graphs else None
        self.eos_ids = _eos_ids(self.model, tokenizer)
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        self.last_stats: dict = {}
        log.info(
            "engine: %d slots x %d tokens, %s (SSM state %s) on %s, cuda graphs %s, q/k/v and gate/up %s",
            self.num_slots, self.capacity, self.dtype, self.ssm_state_dtype, dev, "on" if self.use_graphs else "off",
            "stacked" if self.stacked_copies is not None else "separate (no memory to spare for the stacked copies)",
        )

    # ------------------------------------------------------------------ device step
    def _reset_scratch(self) -> None:
        self.state.lengths[self.scratch] = 0
        self.n_gen[self.scratch] = 0

    def _decode_body(self, slots: torch.Tensor, mode: SamplerMode) -> None:
        """One token for every row of `slots`: everything on device, nothing read back."""
        tok = self.last_tok[slots]
        self.model.use_decode_projections(self.stacked_copies)  # its own copies (another engine may share the model)
        logits = self.model.step(tok, self.state, slots)
        pos = self.n_gen[slots]
        nxt = sample_next(
            logits, mode, self.temperature[slots], self.top_k[slots], self.top_p[slots], self.min_p[slots],
            self.seeds[slots], pos,
        )
        self.out[slots, pos] = nxt.to(torch.int32)
        self.n_gen[slots] = pos + 1
        self.last_tok[slots] = nxt

    def _run_window(self, slots: list[int], mode: SamplerMode, steps: int) -> None:
        bucket = pick_bucket(self.buckets, len(slots))
        padded = torch.tensor(slots + [self.scratch] * (bucket - len(slots)), dtype=torch.long)
        if self.use_graphs:
            graph, static_slots = self.graphs.get(bucket, mode)
            self._reset_scratch()
            static_slots.copy_(padded)
            for _ in range(steps):
                graph.replay()
        else:
            self._reset_scratch()
            padded = padded.to(self.device)
            for _ in range(steps):
                self._decode_body(padded, mode)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ host side
    def encode(self, prompts) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts)

    def _admit(self, queue: deque, free: list[int], params: SamplingParams, mode: SamplerMode, base_seed: int):
        groups = []  # (request, sample indices, slots)
        longest = 0
        while queue and free:
            req = queue[0]
            longest_if = max(longest, len(req.ids))
            if groups and (len(groups) + 1) * longest_if > self.prefill_tokens:
                break
            longest = longest_if
            take = req.pending[: len(free)]
            req.pending = req.pending[len(take) :]
            if not req.pending:
                queue.popleft()
            groups.append((req, take, [free.pop() for _ in take]))
        if not groups:
            return []
        dev = self.device
        ids = torch.full((len(groups), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(groups), longest, dtype=torch.long)
        for row, (req, _, _) in enumerate(groups):
            ids[row, longest - len(req.ids) :] = torch.tensor(req.ids)
            mask[row, longest - len(req.ids) :] = 1
        ragged = bool((mask == 0).any())
        first_slots = torch.tensor([slots[0] for _, _, slots in groups], device=dev)
        logits = self.model.prefill(
            ids.to(dev), self.state, first_slots, attention_mask=mask.to(dev) if ragged else None
        )
        src = [slots[0] for _, _, slots in groups for _ in slots[1:]]
        dst = [s for _, _, slots in groups for s in slots[1:]]
        if dst:
            self.state.copy_slots(torch.tensor(src, device=dev), torch.tensor(dst, device=dev), upto=longest)
        all_slots = [s for _, _, slots in groups for s in slots]
        rows = torch.tensor([row for row, (_, _, slots) in enumerate(groups) for _ in slots], device=dev)
        seeds = [sequence_seed(base_seed, req.key, req.sample_ids[i] if req.sample_ids else i)
                 for req, take, _ in groups for i in take]
        slot_t = torch.tensor(all_slots, device=dev)
        self.temperature[slot_t] = float(params.temperature)
        self.top_k[slot_t] = int(params.top_k)
        self.top_p[slot_t] = float(params.top_p)
        self.min_p[slot_t] = float(params.min_p)
        self.seeds[slot_t] = torch.tensor(seeds, dtype=torch.long, device=dev)
        first = sample_next(
            logits[rows], mode, self.temperature[slot_t], self.top_k[slot_t], self.top_p[slot_t],
            self.min_p[slot_t], self.seeds[slot_t], torch.zeros_like(slot_t),
        )
        self.out[slot_t, 0] = first.to(torch.int32)
        self.n_gen[slot_t] = 1
        self.last_tok[slot_t] = first
        admitted = []
        for req, take, slots in groups:
            budget = min(params.max_new_tokens, self.max_len - len(req.ids) + 1)
            for sample_index, slot in zip(take, slots):
                rules = StopRules(self.eos_ids, params.stop, params.ignore_eos, budget, self.tokenizer)
                admitted.append(_Sequence(req, sample_index, slot, budget, rules))
        return admitted

    def _fetch(self, seqs: list[_Sequence]) -> None:
        """Copy every sequence's tokens generated since the last fetch to the host (one sync)."""
        counts = [s.generated - len(s.tokens) for s in seqs]
        width = max(counts, default=0)
        if width == 0:
            return
        starts = torch.tensor([len(s.tokens) for s in seqs])
        cols = (starts[:, None] + torch.arange(width)[None, :]).clamp(max=self.out.shape[1] - 1)
        slot_t = torch.tensor([s.slot for s in seqs])
        values = self.out[slot_t.to(self.device)[:, None], cols.to(self.device)].cpu().tolist()
        for seq, count, row in zip(seqs, counts, values):
            seq.tokens.extend(row[:count])

    def check_prompts(self, prompt_ids: list[list[int]], params: SamplingParams, labels: list[str] | None = None,
                      strict: bool = False) -> None:
        """See `check_request`."""
        check_request([len(ids) for ids in prompt_ids], params.max_new_tokens, self.max_len, self.max_positions,
                      labels, strict)

    @torch.no_grad()
    def generate(
        self, prompts, params: SamplingParams | None = None, n: int = 1, progress: bool | None = None,
        keys: list[int] | None = None, sample_ids: list[int] | None = None,
    ) -> list[list[Completion]]:
        """Sample `n` completions for every prompt (strings as-is, or token id lists).

        `keys` (optional) gives each prompt a stable integer identity: sample j of prompt i is seeded by
        (params.seed, keys[i], j) instead of (params.seed, i, j), so a prompt's samples do not depend on
        which other prompts share the call (resumed or re-batched work repeats exactly).  `sample_ids`
        (optional, n of them) does the same for the samples: result[i][j] is seeded by sample_ids[j]."""
        params = params or SamplingParams()
        params.validate()
        if n < 1:
            raise ThinkfastError(f"n must be >= 1, got {n}")
        prompt_ids = self.encode(list(prompts))
        if keys is not None and len(keys) != len(prompt_ids):
            raise ThinkfastError(f"{len(keys)} keys for {len(prompt_ids)} prompts")
        if sample_ids is not None and len(sample_ids) != n:
            raise ThinkfastError(f"{len(sample_ids)} sample_ids for n={n}")
        self.check_prompts(prompt_ids, params)
        if self.stacked_copies is not None:  # refilled in place: the weights may have been trained since the last call
            self.stacked_copies = self.model.stack_decode_projections(self.stacked_copies)
        mode = SamplerMode.from_params(params)
        base_seed = params.seed if params.seed is not None else random.getrandbits(62)
        queue = deque(_Request(i, ids, list(range(n)), i if keys is None else int(keys[i]),
                               None if sample_ids is None else [int(j) for j in sample_ids])
                      for i, ids in enumerate(prompt_ids))
        free = list(range(self.num_slots))[::-1]
        active: dict[int, _Sequence] = {}
        results: list[list[Completion | None]] = [[None] * n for _ in prompt_ids]
        stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "decode_tokens": 0, "windows": 0,
                 "max_active": 0, "graph_capture_s": 0.0}
        capture_before = self.graphs.capture_seconds if self.graphs else 0.0
        show = self.progress if progress is None else progress
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompt_ids) * n, desc="generate", unit="seq", disable=not show)
        try:
            self._serve(queue, free, active, results, params, mode, base_seed, stats, bar)
        finally:
            bar.close()
            self.model.use_decode_projections(None)  # the model keeps no reference to this engine's copies
        stats["graph_capture_s"] = (self.graphs.capture_seconds - capture_before) if self.graphs else 0.0
        stats["decode_tokens_per_s"] = stats["decode_tokens"] / stats["decode_s"] if stats["decode_s"] > 0 else None
        self.last_stats = stats
        return results  # type: ignore[return-value]

    def _serve(self, queue: deque, free: list[int], active: dict, results: list, params: SamplingParams,
               mode: SamplerMode, base_seed: int, stats: dict, bar) -> None:
        """Admit, decode and retire until every request is done (generate's loop)."""
        while queue or active:
            if queue and free:
                t0 = time.perf_counter()
                for seq in self._admit(queue, free, params, mode, base_seed):
                    active[seq.slot] = seq
                self._sync()
                stats["prefill_s"] += time.perf_counter() - t0
            seqs = list(active.values())
            stats["max_active"] = max(stats["max_active"], len(seqs))
            steps = min(self.sync_every, min(s.budget - s.generated for s in seqs))
            if steps > 0:
                slots = [s.slot for s in seqs]
                if self.use_graphs:  # capture (once per bucket) outside the timed region
                    self.graphs.get(pick_bucket(self.buckets, len(slots)), mode)
                t0 = time.perf_counter()
                self._run_window(slots, mode, steps)
                for s in seqs:
                    s.generated += steps
                self._fetch(seqs)
                stats["decode_s"] += time.perf_counter() - t0
                stats["decode_steps"] += steps
                stats["decode_tokens"] += steps * len(seqs)
                stats["windows"] += 1
            else:
                self._fetch(seqs)
            for seq in seqs:
                verdict = seq.rules.check(seq.tokens, seq.checked)
                seq.checked = len(seq.tokens)
                if verdict.reason is None:
                    continue
                token_ids = seq.tokens[: verdict.keep]
                results[seq.request.index][seq.sample_index] = Completion(
                    prompt_index=seq.request.index,
                    sample_index=seq.sample_index,
                    token_ids=token_ids,
                    text=seq.rules.final_text(token_ids, verdict),
                    finish_reason=verdict.reason,
                )
                del active[seq.slot]
                free.append(seq.slot)
                bar.update(1)


def describe_stats(stats: dict) -> str:
    """Where generate calls' time went (Engine.last_stats, or their sums), in one line."""
    tokens, decode_s = stats.get("decode_tokens", 0), stats.get("decode_s", 0.0)
    rate = tokens / decode_s if decode_s > 0 else 0.0
    return (f"{tokens:,} decode tokens at {rate:,.0f} tok/s; decode {decode_s:.1f} s in {stats.get('windows', 0)} "
            f"windows, prefill {stats.get('prefill_s', 0.0):.1f} s, graph capture {stats.get('graph_capture_s', 0.0):.1f} s")
