"""Memory planner: how many decode slots fit next to the weights and the working memory.

    slots = (free memory - margin - prefill workspace) // (state bytes per slot + decode workspace per row)

Free memory on a GPU is the driver's free memory plus what torch's caching allocator holds unused.

State bytes come from the model's own `allocate_state` (built on the meta device, so
nothing is allocated to ask).  The workspace terms are deliberately generous estimates of
the activations of one decode row (logits and the sampler's fp32 copies dominate) and of
one prefill chunk through the reference kernels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger("thinkfast.engine")

DEFAULT_SLOT_CAP = 1024  # without max_batch: more rows rarely add throughput and cost host time
CPU_SLOT_CAP = 64  # on a CPU, without max_batch
CPU_MEMORY_FRACTION = 0.7  # of the host's available memory the decode state may take


def _cgroup_room() -> int | None:
    """Bytes left under this container's memory limit (cgroup v2), or None without one."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = open("/sys/fs/cgroup/memory.current").read().strip()
    except OSError:
        return None
    if not limit.isdigit() or not used.isdigit():
        return None  # "max": no limit
    return max(0, int(limit) - int(used))


def host_available_bytes() -> int | None:
    """Memory the host can still give this process (MemAvailable, and the container's limit), or None."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return avail if room is None else min(avail, room)


@dataclass
class MemoryPlan:
    slots: int  # decode slots the engine allocates
    fit: int  # slots that would fit in memory (before any cap)
    state_bytes_per_slot: int
    kv_bytes_per_slot: int
    recurrent_bytes_per_slot: int
    decode_workspace_per_row: int
    prefill_workspace: int
    free_bytes: int | None  # device memory free at planning time (None on CPU)
    capacity: int  # tokens per slot (max_len plus the engine's slack)
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def state_bytes(model, capacity: int, dtype: torch.dtype, ssm_dtype: torch.dtype = torch.float32) -> dict[str, int]:
    state = model.allocate_state(1, capacity, dtype=dtype, device="meta", ssm_dtype=ssm_dtype)
    return state.bytes_per_slot()


def decode_workspace_per_row(config, sampling_sort: bool = True) -> int:
    vocab = config.vocab_size
    logits = vocab * (2 + 4 * (6 if sampling_sort else 2) + (8 if sampling_sort else 0))
    m1 = config.d_inner * config.mamba1["d_state"] * 4 * 6 if "mamba1" in config.layer_mixers else 0
    dense = 4 * (8 * config.hidden_size + 3 * config.intermediate_size + 4 * config.d_inner)
    return logits + m1 + dense


def prefill_workspace(config, prefill_tokens: int) -> int:
    per_token = 4 * (12 * config.hidden_size + 4 * config.intermediate_size + 6 * config.d_inner)
    if "mamba1" in config.layer_mixers:  # the reference scan materialises (l, d_inner, n) fp32 tensors
        per_token += config.d_inner * config.mamba1["d_state"] * 4 * 4
    return prefill_tokens * per_token + 4 * config.vocab_size * 64


def plan_slots(
    model,
    capacity: int,
    dtype: torch.dtype,
    device: torch.device,
    max_batch: int | None = None,
    prefill_tokens: int = 8192,
    margin_fraction: float = 0.06,
    margin_bytes: int = 1 << 30,
    ssm_dtype: torch.dtype = torch.float32,
) -> MemoryPlan:
    sizes = state_bytes(model, capacity, dtype, ssm_dtype)
    per_slot = sizes["kv"] + sizes["recurrent"]
    per_row = decode_workspace_per_row(model.config)
    prefill_ws = prefill_workspace(model.config, prefill_tokens)
    free = None
    if device.type == "cuda":
        driver_free, total = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator holds but no tensor uses (e.g. a model built in fp32, then cast to bf16)
        # are free to us: on a failed cudaMalloc the allocator releases them and retries
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        free = driver_free + cached
        usable = free - prefill_ws - margin_bytes - int(margin_fraction * total)
        fit = max(0, usable // (per_slot + per_row))
        slots = min(fit, max_batch) if max_batch else min(fit, DEFAULT_SLOT_CAP)
        cached_note = f", {cached / 2**30:.1f} of it cached by torch" if cached >= 1 << 30 else ""
        reason = (
            f"{fit} slots fit in {free / 2**30:.1f} GiB free{cached_note} "
            f"({per_slot / 2**20:.1f} MiB state + {per_row / 2**20:.1f} MiB workspace per slot, "
            f"{prefill_ws / 2**30:.1f} GiB prefill workspace); "
            + (f"capped by max_batch={max_batch}" if max_batch else f"capped at {DEFAULT_SLOT_CAP}")
        )
    else:
        # host memory: size the pool to what is available, so a long request fails here with a message
        # instead of the process being killed for memory half-way through allocating it
        avail = host_available_bytes()
        cap = max_batch or CPU_SLOT_CAP
        if avail is None:
            fit = cap
            reason = f"{cap} slots on {device.type} ({'max_batch' if max_batch else 'default'}; available memory unknown)"
        else:
            usable = int(avail * CPU_MEMORY_FRACTION) - prefill_ws
            fit = max(0, usable // (per_slot + per_row))
            reason = (
                f"{fit} slots fit in {avail / 2**30:.1f} GiB available host memory "
                f"({per_slot / 2**20:.1f} MiB state + {per_row / 2**20:.1f} MiB workspace per slot of {capacity} tokens); "
                + (f"capped by max_batch={max_batch}" if max_batch else f"capped at {CPU_SLOT_CAP}")
            )
        slots = min(fit, cap)
    plan = MemoryPlan(
        slots=int(slots),
        fit=int(fit),
        state_bytes_per_slot=int(per_slot),
        kv_bytes_per_slot=int(sizes["kv"]),
        recurrent_bytes_per_slot=int(sizes["recurrent"]),
        decode_workspace_per_row=int(per_row),
        prefill_workspace=int(prefill_ws),
        free_bytes=None if free is None else int(free),
        capacity=int(capacity),
        reason=reason,
    )
    log.info("memory plan: %d decode slots — %s", plan.slots, reason)
    return plan
