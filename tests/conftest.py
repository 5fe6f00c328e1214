"""Shared test set-up.

Triton kernels run compiled on a CUDA machine and through the Triton interpreter on CPU
(small sizes), which is how CI tests them.  TRITON_INTERPRET must be set before any
kernel module is imported (triton decides at decoration time), hence here, first.

The GPU tier is exactly the tests marked `gpu` (`pytest -m gpu tests`): those that need CUDA,
every kernel at real shapes.  They are skipped without CUDA here, so a test that needs CUDA
carries the marker and no skipif of its own; every other test runs on both kinds of machine.
"""

import importlib.util
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# per-test bound for the GPU tier (`pytest -m gpu tests`): a hang guard, far above any test's cost
GPU_TEST_TIMEOUT_S = 300


def pytest_collection_modifyitems(config, items):
    """`gpu` tests (anywhere under tests/) are skipped without CUDA and bounded in time with it; `triton`
    tests are skipped without triton.  (Every test is bounded by pyproject's pytest-timeout setting.)
    A CUDA skipif outside the tier is refused, so the tier stays exactly the tests marked `gpu`."""
    try:
        import triton  # noqa: F401

        have_triton = True
    except ImportError:  # pragma: no cover
        have_triton = False
    for item in items:
        for mark in item.iter_markers("skipif"):
            if "cuda" in str(mark.kwargs.get("reason", "")).lower() and "gpu" not in item.keywords:
                raise pytest.UsageError(f"{item.nodeid}: a test that needs CUDA is marked `gpu` (the GPU tier), "
                                        "not skipped by a skipif of its own")
        if "gpu" in item.keywords:
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
            elif item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(GPU_TEST_TIMEOUT_S))
        if "triton" in item.keywords and not have_triton:
            item.add_marker(pytest.mark.skip(reason="needs triton"))


def _config_cost(config) -> tuple:
    """Smallest footprint first: fewest pipeline stages, 4 warps, smallest tiles."""
    tiles = 1
    for value in config.kwargs.values():
        if isinstance(value, int) and not isinstance(value, bool):
            tiles *= value
    return config.num_stages, abs(config.num_warps - 4), tiles


def pin_fla_autotune() -> int:
    """Give every autotuned flash-linear-attention kernel a single config; returns how many were pinned.

    fla autotunes its chunk kernels (48 configs for `chunk_fwd_kernel_h`) for every new tuning key, and the
    key holds the dtype of each tensor argument present, so bf16 vs fp32, with vs without an initial state,
    a final state or `cu_seqlens` each start a new search: about a minute of compiling per key (48 configs
    took 38 s to compile for sm_90 on a 2-core CPU), which the GPU tier paid over and over.  Tests check
    values, not speed, and every config computes the same function; the pinned one is the smallest (fewest
    stages, 4 warps, smallest tiles), so it fits wherever the larger ones of the search do.  Only on CUDA;
    THINKFAST_TEST_AUTOTUNE=1 keeps fla's own search."""
    if importlib.util.find_spec("fla") is None:
        return 0
    try:
        import fla.ops.simple_gla  # noqa: F401  (the kernels behind dispatch.ssd)
        from triton.runtime.autotuner import Autotuner, Heuristics
    except Exception:  # an fla that does not import is reported by the tests that use it
        return 0
    pinned = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "fla" or name.startswith("fla.")):
            continue
        for obj in list(vars(module).values()):
            while isinstance(obj, Heuristics):
                obj = obj.fn
            if isinstance(obj, Autotuner) and len(obj.configs) > 1:
                obj.configs = [min(obj.configs, key=_config_cost)]
                pinned += 1
    return pinned


@pytest.fixture(scope="session", autouse=True)
def _fla_single_config():
    if torch.cuda.is_available() and os.environ.get("THINKFAST_TEST_AUTOTUNE", "0") in ("", "0"):
        pin_fla_autotune()
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
