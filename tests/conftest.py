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

# per-test bound for the GPU tier (`pytest -m gpu tests`): kernels at real shapes, compile included
GPU_TEST_TIMEOUT_S = 300


def pytest_collection_modifyitems(config, items):
    """`gpu` tests (anywhere under tests/) are skipped without CUDA and bounded in time with it; `triton`
    tests are skipped without triton.  (Every test is bounded by pyproject's pytest-timeout setting.)"""
    try:
        import triton  # noqa: F401

        have_triton = True
    except ImportError:  # pragma: no cover
        have_triton = False
    for item in items:
        if "gpu" in item.keywords:
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
            elif item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(GPU_TEST_TIMEOUT_S))
        if "triton" in item.keywords and not have_triton:
            item.add_marker(pytest.mark.skip(reason="needs triton"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
