"""Kernel tests: on a machine without CUDA the Triton kernels run through the Triton
interpreter on CPU tensors (small sizes; tests/conftest.py sets TRITON_INTERPRET); with
CUDA they run compiled on the GPU.
"""

import sys

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

try:
    if "thinkfast.ops.triton.selective_scan" in sys.modules and DEVICE == "cpu":
        raise ImportError("kernel modules were imported before TRITON_INTERPRET was set")
    import triton  # noqa: F401

    from thinkfast.ops.triton._interpreter import vectorise_interpreter_scan

    if DEVICE == "cpu":
        vectorise_interpreter_scan()
    HAVE_TRITON = True
except ImportError:  # pragma: no cover
    HAVE_TRITON = False


# the gpu / triton skips live in tests/conftest.py (they apply to every folder)


@pytest.fixture
def device():
    return DEVICE
