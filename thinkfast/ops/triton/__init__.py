"""Triton kernels behind `thinkfast.ops.dispatch` (one kernel family per module).

Importing this package needs `triton`; dispatch imports it lazily and falls back
to the references when it is missing.  Under `TRITON_INTERPRET=1` (set before
triton is imported) the same kernels run on CPU tensors, which is how CI tests them.
"""
