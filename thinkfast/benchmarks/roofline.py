"""Roofline bounds for decoding (docs/design.md §5) and the two device numbers they need, measured in the run."""

from __future__ import annotations

import time

import torch

from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, resolve_ssm_state_dtype


def measure_copy_bandwidth(device="cuda", nbytes: int = 2 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting read + write."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    del src, dst
    return 2 * nbytes / seconds


def measure_matmul_flops(device="cuda", n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def model_numbers(model, ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE) -> dict:
    """Parameters, weight bytes, per-slot decode bytes split by mixer kind, for a model served with its Mamba
    layers' recurrent state in `ssm_state_dtype` ("fp32" | "bf16"; recorded as None for an all-attention model).
    The benchmark's engines take the state dtype from here, so a bound and its measurement cannot disagree."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied head counted once
    state = model.allocate_state(1, 1, dtype=torch.bfloat16, device="meta",
                                 ssm_dtype=resolve_ssm_state_dtype(ssm_state_dtype))
    recurrent = sum(t[0].numel() * t.element_size() for layer in state.layers for n, t in layer.items() if n not in ("k", "v"))
    n_attn = cfg.count("attention")
    kv_per_token = n_attn * 2 * cfg.num_key_value_heads * cfg.head_dim * 2
    # the embedding lookup reads B rows, the head reads the whole table: count the table once
    return {"params": params, "weight_bytes": weight_bytes, "kv_bytes_per_token": kv_per_token,
            "recurrent_state_bytes": recurrent, "attention_layers": n_attn,
            "ssm_state_dtype": ssm_state_dtype if n_attn < cfg.num_hidden_layers else None}


def step_bound_seconds(numbers: dict, batch: int, context: float, bandwidth: float, flops: float) -> float:
    """The roofline bound of one decode step: all its bytes at copy bandwidth or all its matmul flops at the
    matmul rate, whichever takes longer (as if the flop-bound matmuls overlapped the byte-bound cache reads)."""
    bytes_ = numbers["weight_bytes"] + batch * context * numbers["kv_bytes_per_token"] + 2 * batch * numbers["recurrent_state_bytes"]
    return max(bytes_ / bandwidth, 2 * numbers["params"] * batch / flops)


def step_parts_seconds(numbers: dict, batch: int, context: float, bandwidth: float, flops: float) -> dict:
    """One decode step's parts, each at its own limit: "matmuls" (every weight read once, or their flops if that
    takes longer), "kv" (the attention layers' cache reads), "state" (the recurrent state read and written).
    Their sum is the serial bound: a step's kernels run one after another, so the matmuls' flops cannot hide
    the attention's KV reads; it is what a perfect kernel for each part would add up to."""
    return {"matmuls": max(numbers["weight_bytes"] / bandwidth, 2 * numbers["params"] * batch / flops),
            "kv": batch * context * numbers["kv_bytes_per_token"] / bandwidth,
            "state": 2 * batch * numbers["recurrent_state_bytes"] / bandwidth}


def generation_bound_tokens_per_s(numbers, batch, prompt, steps, bandwidth, flops, serial: bool = False) -> float:
    """Bound on decode throughput for `steps` decode steps after a prompt of `prompt` tokens: the roofline
    bound, or with `serial` the sum of the step's parts (`step_parts_seconds`), never above it."""
    # a step at context L (new token included) costs linearly in L: integrate exactly by the mean context
    mean_context = prompt + (steps + 1) / 2
    if serial:
        per_step = sum(step_parts_seconds(numbers, batch, mean_context, bandwidth, flops).values())
    else:
        per_step = step_bound_seconds(numbers, batch, mean_context, bandwidth, flops)
    return batch / per_step
