"""The decode step through the fused kernels (fused Mamba-1 step, add+RMSNorm, silu*up) equals one
full forward, like the reference path (on CPU the kernels run under the Triton interpreter)."""

import pytest
import torch

from tests.tiny import tiny_student

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("mixers", [["mamba1", "attention", "mamba1"], ["mamba1", "discrete_mamba2"]])
def test_fused_kernel_steps_equal_full_forward(mixers, monkeypatch):
    pytest.importorskip("triton")
    model = tiny_student(mixers).to(DEVICE)
    ids = torch.randint(0, 96, (3, 14), device=DEVICE)
    with torch.no_grad():
        full = model(ids).logits
    state = model.allocate_state(num_slots=5, max_len=32)
    slots = torch.tensor([4, 0, 2], device=DEVICE)
    model.prefill(ids[:, :6], state, slots)
    monkeypatch.setenv("THINKFAST_KERNELS", "triton")
    for t in range(6, 14):
        logits = model.step(ids[:, t], state, slots)
        assert (logits - full[:, t]).abs().max() <= 1e-4, f"step {t}"
