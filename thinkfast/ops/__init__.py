"""Numerics behind the mixers.

`thinkfast.ops.reference` holds plain-PyTorch ground truth (runs anywhere, used
on CPU and by every test); `thinkfast.ops.dispatch` picks a GPU kernel when one
exists for the device and falls back to the reference otherwise.  `thinkfast.ops.ssd_chunked`
is the discrete Mamba-2 sequence op as batched matmuls in plain PyTorch: the backward of the
GPU path where fla refuses its own (`triton/ssd_fla.py`).
"""
