"""Shared test set-up.

Triton kernels run compiled on a CUDA machine and through the Triton interpreter on CPU
(small sizes), which is how CI tests them.  TRITON_INTERPRET must be set before any
kernel module is imported (triton decides at decoration time), hence here, first.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
