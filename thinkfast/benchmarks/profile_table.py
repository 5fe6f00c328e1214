"""Kernel tables from a torch.profiler run, shared by `profile_decode` and `bench train --profile`.

`kernel_table` turns `prof.key_averages()` into rows `{name, ms_per_step, calls_per_step, share}` sorted by
self time on the device that ran the step (CUDA kernels on a GPU, aten ops and ranges on a CPU);
`categories` groups the rows by what they do (matmul, attention, scan, ...); `markdown_rows` renders the top
rows as a markdown table.
"""

from __future__ import annotations

import re

# first match wins; patterns are searched in the lower-cased kernel / op name
CATEGORIES = (
    ("loss", r"token_loss|cross_entropy|nll_loss|log_softmax|logsumexp|kl_div"),
    ("optimizer", r"adam|optimizer|multi_tensor|foreach|clip_grad|lpnorm"),
    ("attention", r"flash|fmha|attention|attn|sdpa"),
    ("scan/ssd", r"selective_scan|_ss_(fwd|bwd)|ssd|chunk_|mamba|_conv_(fwd|bwd)|causal_conv|state_passing"),
    ("matmul", r"gemm|cublas|cutlass|nvjet|xmma|wgmma|s1688|s16816|sm90_|sm80_|^aten::(mm|addmm|bmm|baddbmm|matmul"
               r"|linear|_scaled_mm|einsum)$|matmul"),
    ("copies", r"copy|memcpy|memset|^aten::(cat|clone|contiguous|to|_to_copy|index|index_select|gather|scatter"
               r"|embedding|embedding_dense_backward|stack|pad|constant_pad_nd|slice_scatter)$|cat_|index|gather"
               r"|scatter|embedding"),
    ("elementwise/norm", r"elementwise|vectorized|reduce|norm|silu|gelu|softplus|sigmoid|exp|^aten::|triton_|"
                         r"unrolled|fill|mul|add|sum|mean|softmax|where|cumsum"),
)
CATEGORY_NAMES = tuple(name for name, _ in CATEGORIES) + ("other",)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in CATEGORIES)


def category(name: str) -> str:
    low = name.lower()
    for cat, pattern in _COMPILED:
        if pattern.search(low):
            return cat
    return "other"


def _self_us(evt, cuda: bool) -> float:
    names = ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)
    for name in names:
        if hasattr(evt, name):
            return float(getattr(evt, name))
    return 0.0


def kernel_table(events, steps: int, cuda: bool = True, exclude: tuple[str, ...] = (), name_chars: int = 140) -> list[dict]:
    """Rows per kernel (cuda) or CPU op, by self time per step, largest first; `share` is of their sum."""
    rows = []
    for evt in events:
        if exclude and evt.key.startswith(exclude):
            continue
        on_device = "CUDA" in str(getattr(evt, "device_type", "")) if cuda else "CPU" in str(getattr(evt, "device_type", "CPU"))
        t = _self_us(evt, cuda)
        if t > 0 and on_device:
            rows.append({"name": evt.key[:name_chars], "ms_per_step": t / steps / 1000, "calls_per_step": evt.count / steps})
    rows.sort(key=lambda k: -k["ms_per_step"])
    total = sum(k["ms_per_step"] for k in rows)
    for k in rows:
        k["share"] = k["ms_per_step"] / total if total > 0 else 0.0
    return rows


# the aten ops that launch "copies" kernels: dtype casts, materialised views, concatenations
COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::cat", "aten::index",
            "aten::repeat_interleave", "aten::expand_copy")


def copy_sources(events, steps: int, top: int = 15) -> list[dict]:
    """Where the copies come from: per (copy op, input shapes), calls and the device (or, on a CPU, host) time of
    what it launched, per step; `events` from `key_averages(group_by_input_shape=True)` of a profile recorded
    with `record_shapes=True`.  A weight's shape points at autocast casts, an activation's at a layout copy."""
    rows = []
    for evt in events:
        if evt.key not in COPY_OPS:
            continue
        us = float(getattr(evt, "device_time_total", 0.0) or getattr(evt, "cpu_time_total", 0.0))
        rows.append({"op": evt.key, "input_shapes": str(getattr(evt, "input_shapes", ""))[:120],
                     "calls_per_step": evt.count / steps, "ms_per_step": us / steps / 1000})
    rows.sort(key=lambda r: (-r["ms_per_step"], -r["calls_per_step"]))
    return rows[:top]


def copy_markdown(rows: list[dict]) -> list[str]:
    lines = ["| copy op | input shapes | calls/step | ms/step |", "|---|---|---:|---:|"]
    lines += [f"| `{r['op']}` | `{r['input_shapes']}` | {r['calls_per_step']:.0f} | {r['ms_per_step']:.3f} |" for r in rows]
    return lines


def categories(rows: list[dict]) -> dict:
    """{category: {ms_per_step, calls_per_step, share}} over every row (shares sum to 1), in CATEGORY_NAMES order."""
    out = {name: {"ms_per_step": 0.0, "calls_per_step": 0.0, "share": 0.0} for name in CATEGORY_NAMES}
    for k in rows:
        c = out[category(k["name"])]
        c["ms_per_step"] += k["ms_per_step"]
        c["calls_per_step"] += k["calls_per_step"]
        c["share"] += k.get("share", 0.0)
    return out


def markdown_rows(rows: list[dict], top: int, label: str = "kernel", name_chars: int = 90) -> list[str]:
    """A markdown table of the first `top` rows (with a share column when the rows have one)."""
    share = bool(rows) and "share" in rows[0]
    lines = [f"| {label} | ms/step | calls/step |" + (" share |" if share else ""),
             "|---|---:|---:|" + ("---:|" if share else "")]
    for k in rows[:top]:
        lines.append(f"| `{k['name'][:name_chars]}` | {k['ms_per_step']:.3f} | {k['calls_per_step']:.0f} |"
                     + (f" {k['share']:.1%} |" if share else ""))
    return lines


def category_markdown(cats: dict) -> list[str]:
    lines = ["| category | ms/step | calls/step | share |", "|---|---:|---:|---:|"]
    for name, c in cats.items():
        if c["ms_per_step"] > 0:
            lines.append(f"| {name} | {c['ms_per_step']:.3f} | {c['calls_per_step']:.0f} | {c['share']:.1%} |")
    return lines
