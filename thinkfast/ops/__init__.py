"""Numerics behind the mixers.

`thinkfast.ops.reference` holds plain-PyTorch ground truth (runs anywhere, used
on CPU and by every test); `thinkfast.ops.dispatch` picks a GPU kernel when one
exists for the device and falls back to the reference otherwise.
"""
