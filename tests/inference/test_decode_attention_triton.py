"""The Triton decode-attention kernel against the reference, run by the Triton interpreter on CPU."""


import pytest
import torch

triton = pytest.importorskip("triton")

from thinkfast.ops.reference import decode_attention_ref  # noqa: E402

pytestmark = pytest.mark.triton

# compiled on CUDA, the Triton interpreter on CPU (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(seed, b, H, n_kv, T, d, slots_total, dtype=torch.float32):
    # drawn on the device: the GPU case's caches are 2 x 300M values, seconds of CPU randn
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(b, H, d, generator=g, device=DEVICE).to(dtype)
    k = torch.randn(slots_total, n_kv, T, d, generator=g, device=DEVICE).to(dtype)
    v = torch.randn(slots_total, n_kv, T, d, generator=g, device=DEVICE).to(dtype)
    slots = torch.randperm(slots_total, generator=g, device=DEVICE)[:b]
    lengths = torch.randint(1, T + 1, (b,), generator=g, device=DEVICE)
    return q, k, v, slots, lengths


@pytest.mark.parametrize(
    "b,H,n_kv,T,d,splits",
    [
        (3, 4, 2, 37, 16, 1),  # GQA group 2, ragged lengths, one split
        (4, 6, 2, 100, 32, 3),  # group 3 (Llama-3B-like), split-K
        (2, 4, 4, 70, 24, 4),  # MHA, head dim not a power of two
        (5, 8, 1, 129, 16, 2),  # MQA
    ],
)
def test_matches_reference_ragged_gqa(b, H, n_kv, T, d, splits):
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(b * 7 + T, b, H, n_kv, T, d, slots_total=b + 3)
    lengths[0] = 1  # a sequence of a single token
    lengths[-1] = T  # and one filling the cache
    ref = decode_attention_ref(q, k, v, slots, lengths)
    out = decode_attention_triton(q, k, v, slots, lengths, num_splits=splits, block_n=16)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("splits", [1, 3])  # one split stores the output itself; three go through the merge
def test_positions_with_length_offset(splits):
    """Decode passes the new token's positions (int64) and offset 1 instead of launching `positions + 1`."""
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(3, 4, 6, 2, 40, 16, slots_total=6)
    ref = decode_attention_ref(q, k, v, slots, lengths)
    out = decode_attention_triton(q, k, v, slots.to(torch.int32), (lengths - 1).to(torch.int64), num_splits=splits,
                                  block_n=16, length_offset=1)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("max_programs", [1, 5, 100])  # fewer programs than items (1, 5) and more (100: plain grid)
def test_persistent_grid_matches_reference(splits, max_programs):
    """max_programs: the (sequence, kv head, split) items walked by a capped number of programs give the same
    output as one program per item (the stream-overlap experiment leaves the other multiprocessors free)."""
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(11, 4, 6, 2, 50, 16, slots_total=6)
    ref = decode_attention_ref(q, k, v, slots, lengths)
    out = decode_attention_triton(q, k, v, slots, lengths, num_splits=splits, block_n=16, max_programs=max_programs)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_persistent_grid_needs_a_program():
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(1, 2, 4, 2, 20, 16, slots_total=2)
    with pytest.raises(ValueError, match="max_programs"):
        decode_attention_triton(q, k, v, slots, lengths, max_programs=0)


def test_reads_only_the_context():
    """Garbage (NaN) past each sequence's length must not leak into the output."""
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(1, 3, 4, 2, 48, 16, slots_total=4)
    lengths = torch.tensor([5, 17, 33], device=DEVICE)
    ref = decode_attention_ref(q, k, v, slots, lengths)
    for i, s in enumerate(slots.tolist()):
        k[s, :, int(lengths[i]) :] = float("nan")
        v[s, :, int(lengths[i]) :] = float("nan")
    out = decode_attention_triton(q, k, v, slots, lengths, num_splits=3, block_n=16)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("b,T", [(6, 2100), (64, 4352)])  # two code paths: 6 splits merged / one split
def test_bf16_long_context_default_splits(b, T):
    """Llama-3.2-3B attention (24 query heads, 8 kv heads of 128) at protocol B's context, default splits."""
    from thinkfast.ops.triton.decode_attention import decode_attention_triton

    q, k, v, slots, lengths = _case(5, b, 24, 8, T, 128, slots_total=b + 3, dtype=torch.bfloat16)
    ref = decode_attention_ref(q.float(), k.float(), v.float(), slots, lengths)
    out = decode_attention_triton(q, k, v, slots, lengths)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)

