"""Packed-row attention through flex_attention vs `attention_ref` (SDPA with a dense document mask):
output (CPU and GPU) and q/k/v gradients (GPU: torch has no CPU backward for flex_attention), grouped and
plain heads, lengths off the 128-token block grid."""

import pytest
import torch

from _ops_util import DEVICE, TOL, assert_close
from thinkfast.models.sequence import SequenceInfo
from thinkfast.ops import dispatch
from thinkfast.ops.reference import attention_ref
from thinkfast.training.tasks import batch_seq

pytestmark = pytest.mark.triton


def packed_doc_ids(b: int, l: int, gen: torch.Generator, device) -> torch.Tensor:  # (b, l)
    """Row 0 one document, the others 2-4 documents of random lengths (as packed training rows)."""
    position_ids = torch.zeros(b, l, dtype=torch.long)
    for row in range(b):
        n_docs = 1 if row == 0 else int(torch.randint(2, 5, (1,), generator=gen))
        cuts = sorted(torch.randperm(l - 1, generator=gen)[: n_docs - 1].add(1).tolist())
        for start, end in zip([0, *cuts], [*cuts, l]):
            position_ids[row, start:end] = torch.arange(end - start)
    seq = SequenceInfo.build(b, l, device, position_ids=position_ids.to(device))
    return seq.doc_ids if seq.doc_ids is not None else torch.zeros(b, l, dtype=torch.long, device=device)


def check(b, heads, kv_heads, l, d, dtype, device, tol, seed=0):
    gen = torch.Generator().manual_seed(seed)
    doc_ids = packed_doc_ids(b, l, gen, device)
    base = [torch.randn(b, h, l, d, generator=gen).to(device=device, dtype=dtype) for h in (heads, kv_heads, kv_heads)]
    dy = torch.randn(b, heads, l, d, generator=gen).to(device=device, dtype=dtype)
    grad = device != "cpu"
    results = []
    for run in ("flex", "ref"):
        q, k, v = (t.detach().clone().requires_grad_(grad) for t in base)
        if run == "flex":
            masks = {}
            y = dispatch.attention(q, k, v, doc_ids=doc_ids, block_masks=masks, backend="triton")
            assert "document" in masks, "the block mask is kept for the layers that follow"
        else:  # the reference in fp32: the bf16 case compares against exact-ish arithmetic
            q32, k32, v32 = (t.float() for t in (q, k, v))
            y = attention_ref(q32, k32, v32, doc_ids=doc_ids)
        if grad:
            y.backward(dy.to(y.dtype))
        results.append((y.detach(), [t.grad for t in (q, k, v)]))
    (y, grads), (y_ref, grads_ref) = results
    assert_close("out", y.float(), y_ref, tol)
    for name, g, g_ref in zip("qkv", grads, grads_ref) if grad else ():
        assert_close(f"d{name}", g.float(), g_ref.float(), tol)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (2, 2)])
@pytest.mark.parametrize("l", [200, 128])
def test_flex_packed_matches_reference(heads, kv_heads, l):
    check(3, heads, kv_heads, l, 16, torch.float32, DEVICE, TOL[torch.float32] * 10)


@pytest.mark.gpu
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (2, 2)])
def test_flex_packed_gradients_gpu(heads, kv_heads):
    check(3, heads, kv_heads, 200, 16, torch.float32, "cuda", TOL[torch.float32] * 10)


def test_block_mask_built_once_per_forward(monkeypatch):
    """Every layer of one forward shares the mask its first layer built."""
    from thinkfast.ops import flex_attention

    built = []
    real = flex_attention.document_block_mask
    monkeypatch.setattr(flex_attention, "document_block_mask", lambda ids: built.append(1) or real(ids))
    gen = torch.Generator().manual_seed(0)
    doc_ids = packed_doc_ids(2, 64, gen, DEVICE)
    q, k, v = (torch.randn(2, 2, 64, 8, generator=gen).to(DEVICE) for _ in range(3))
    masks = {}
    for _ in range(3):
        dispatch.attention(q, k, v, doc_ids=doc_ids, block_masks=masks, backend="triton")
    assert len(built) == 1


def test_callers_without_block_masks_keep_the_reference(monkeypatch):
    """Engine prefill and evaluation (shapes vary) pass no block_masks: no compiled flex kernel for them."""
    from thinkfast.ops import flex_attention

    monkeypatch.setattr(flex_attention, "packed_attention", lambda *a: pytest.fail("flex used without block_masks"))
    gen = torch.Generator().manual_seed(0)
    doc_ids = packed_doc_ids(2, 32, gen, DEVICE)
    q, k, v = (torch.randn(2, 2, 32, 8, generator=gen).to(DEVICE) for _ in range(3))
    y = dispatch.attention(q, k, v, doc_ids=doc_ids, backend="triton")
    assert_close("out", y, attention_ref(q, k, v, doc_ids=doc_ids), 1e-6)


def test_cpu_backward_is_refused_clearly():
    """Forcing the kernel where flex_attention has no backward (CPU) is an error that says so, not a crash inside."""
    gen = torch.Generator().manual_seed(0)
    doc_ids = packed_doc_ids(2, 32, gen, "cpu")
    q, k, v = (torch.randn(2, 2, 32, 8, generator=gen, requires_grad=True) for _ in range(3))
    with pytest.raises(ValueError, match="attention: the kernel does not support"):
        dispatch.attention(q, k, v, doc_ids=doc_ids, block_masks={}, backend="triton")
    y = dispatch.attention(q, k, v, doc_ids=doc_ids, block_masks={})  # auto: the reference, which has one
    assert y.requires_grad


def test_training_rows_offer_a_block_mask_cache():
    batch = {"input_ids": torch.zeros(2, 8, dtype=torch.long),
             "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], list(range(8))])}
    seq = batch_seq(batch)
    assert seq.packed and seq.block_masks == {}
    assert SequenceInfo.build(2, 8, "cpu", position_ids=batch["position_ids"]).block_masks is None


@pytest.mark.gpu
def test_flex_packed_gpu_qwen_shape():
    """Qwen2.5-0.5B's attention (14 query heads over 2 key/value heads, head dim 64), 2048-token rows, bf16."""
    check(4, 14, 2, 2048, 64, torch.bfloat16, "cuda", TOL[torch.bfloat16])
