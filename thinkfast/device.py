"""The one device / dtype vocabulary, and the only place that decides what "auto" means.

Devices: "auto" (or None) -> CUDA when present, else the CPU; anything else ("cpu", "cuda", "cuda:1",
or a torch.device) is taken as given.

Dtypes: "auto" (or None) -> bf16 on a CUDA device, fp32 elsewhere; "fp32" / "float32" and
"bf16" / "bfloat16" (both spellings accepted: configs use the short ones, `thinkfast generate` and
evaluation model specs the long ones), "fp16" / "float16"; a torch.dtype is taken as given.

(`loss.matmul_dtype` has an "auto" of its own — bf16 inside a bf16 autocast region — and stays in
thinkfast/training/losses.py.)
"""

from __future__ import annotations

import torch

from thinkfast.errors import ThinkfastError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto"/None -> cuda if available else cpu; "cpu", "cuda", "cuda:1", torch.device -> that device."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """"auto"/None -> bf16 when `device` is CUDA, else fp32; the short and long names -> their dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ThinkfastError(f"unknown dtype {name!r} (use auto, {', '.join(DTYPES)})") from None


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16" (the long spelling, as evaluation model specs take it)."""
    return str(dtype).replace("torch.", "")
