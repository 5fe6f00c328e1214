"""Flash-decoding attention for one new token per sequence over a slot-indexed KV pool.

Work items: (sequence, kv head, split), one per program (a 1-D grid, sequence fastest) unless
`max_programs` caps the grid.  Each program loads the query heads that share its kv
head (GQA group, padded to 16 rows for `tl.dot`), walks only its share of the first
`context_lengths[b]` cached positions in blocks of BLOCK_N, and keeps an online softmax in
fp32.  Splits divide each sequence's *own* context length, so short and long sequences of
one batch are balanced and nothing beyond a sequence's length is read.  A second kernel
merges the splits by their log-sum-exp.  The split count depends only on the batch shape
and the cache capacity, never on the lengths, so the launch is CUDA-graph safe.  With one split
(large batches) the split kernel normalises and stores the output itself: no merge launch.

`context_lengths + length_offset` tokens are attended to: decode passes the new token's positions
(any integer dtype) with offset 1, so no per-layer `positions + 1` or int32 cast is launched.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["n_items", "batch"])
def _decode_attn_split_kernel(
    Q, K, V, SLOTS, LENS, O_PART, LSE_PART, OUT,
    stride_qb, stride_qh,
    stride_ks, stride_kh, stride_kt,
    stride_vs, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_os,
    stride_lb, stride_lh,
    stride_outb, stride_outh,
    sm_scale, batch, n_items,
    LEN_OFFSET: tl.constexpr,  # added to LENS: decode passes positions, the context is positions + 1
    DIRECT: tl.constexpr,  # one split: write the normalised output (OUT's dtype) instead of the parts
    GROUP: tl.constexpr,  # query heads per kv head
    HEAD_DIM: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    N_KV: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr,  # fp32 inputs: exact products (tl.dot would use tf32 on a GPU)
):
    # work items (sequence b, kv head, split), b fastest; a grid of n_items programs takes one each, a smaller
    # (persistent) grid walks every num_programs-th item
    for item in range(tl.program_id(0), n_items, tl.num_programs(0)):
        b = item % batch
        kvh = (item // batch) % N_KV
        split = item // (batch * N_KV)
        slot = tl.load(SLOTS + b).to(tl.int64)
        length = tl.load(LENS + b).to(tl.int32) + LEN_OFFSET

        # this split's range of positions: blocks of BLOCK_N shared out over NUM_SPLITS
        n_blocks = tl.cdiv(length, BLOCK_N)
        blocks_per_split = tl.cdiv(n_blocks, NUM_SPLITS)
        start = split * blocks_per_split * BLOCK_N
        end = tl.minimum(start + blocks_per_split * BLOCK_N, length)

        offs_g = tl.arange(0, BLOCK_G)
        offs_d = tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        g_mask = offs_g < GROUP
        d_mask = offs_d < HEAD_DIM
        heads = kvh * GROUP + offs_g

        q = tl.load(
            Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
            mask=g_mask[:, None] & d_mask[None, :],
            other=0.0,
        )

        k_base = K + slot * stride_ks + kvh * stride_kh
        v_base = V + slot * stride_vs + kvh * stride_vh

        m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)

        for pos in range(start, end, BLOCK_N):
            cols = pos + offs_n
            n_mask = cols < end
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale  # (BLOCK_G, BLOCK_N) fp32
            else:
                s = tl.dot(q, tl.trans(k)) * sm_scale
            s = tl.where(n_mask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # rows that have seen nothing yet keep m = -inf: guard the exp against (-inf) - (-inf)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new

        has = l_i > 0.0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        if DIRECT:
            o_ptr = OUT + b * stride_outb + heads[:, None] * stride_outh + offs_d[None, :]
            tl.store(o_ptr, out.to(OUT.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
        else:
            lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
            o_ptr = O_PART + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + offs_d[None, :]
            tl.store(o_ptr, out, mask=g_mask[:, None] & d_mask[None, :])
            tl.store(LSE_PART + b * stride_lb + heads * stride_lh + split, lse, mask=g_mask)


@triton.jit
def _decode_attn_merge_kernel(
    O_PART, LSE_PART, OUT,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < NUM_SPLITS
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(LSE_PART + b * stride_lb + h * stride_lh + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse - m)  # empty splits weigh 0
    w = w / tl.maximum(tl.sum(w, axis=0), 1e-30)
    part = tl.load(
        O_PART + b * stride_pb + h * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :],
        mask=s_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    out = tl.sum(part * w[:, None], axis=0)
    tl.store(OUT + b * stride_ob + h * stride_oh + offs_d, out.to(OUT.dtype.element_ty), mask=d_mask)


_SM_COUNT: dict[int, int] = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def default_launch(head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_N, num_warps, num_stages) of the walk: 64 keys per block for head dims up to 64, else 32;
    2 warps; 4 stages of K/V loads in flight (2 above head dim 128, where 4 would outgrow the shared
    memory of smaller GPUs).  H200 sweep, 2026-12-02 (`tune_decode_attention`, batches 256 / 512,
    contexts 328 / 1224 / 2248, and 4296 for Llama-3B): within 1% of the best setting everywhere at the
    Qwen2.5-1.5B layout (4 warps and 2 stages took up to 1.22x the best time), within 3.3% at Llama-3.2-3B
    (was 6%); at Qwen2.5-0.5B 0.945 of the best on average, with single noisy points down to 0.78 (was 0.86)
    (docs/results/decode_profile_h200/tune_decode_2026-12-02/)."""
    block_n = 64 if triton.next_power_of_2(head_dim) <= 64 else 32
    return block_n, 2, 4 if head_dim <= 128 else 2


def choose_num_splits(batch: int, kv_heads: int, capacity: int, device: torch.device, block_n: int) -> int:
    """Enough programs to fill the GPU about twice, never more splits than blocks of the cache."""
    programs = batch * kv_heads
    target = 2 * _num_sms(device)
    if programs >= target:
        return 1
    splits = math.ceil(target / programs)
    max_splits = max(1, math.ceil(capacity / (4 * block_n)))  # each split gets >= ~4 blocks when full
    return int(max(1, min(splits, max_splits, 64)))


def decode_attention_triton(
    q: torch.Tensor,  # (b, H, d)
    k_cache: torch.Tensor,  # (slots, Hkv, T, d)
    v_cache: torch.Tensor,  # (slots, Hkv, T, d)
    slots: torch.Tensor,  # (b,)
    context_lengths: torch.Tensor,  # (b,) tokens to attend to (new token included), minus length_offset
    num_splits: int | None = None,
    block_n: int | None = None,
    length_offset: int = 0,
    num_warps: int | None = None,
    num_stages: int | None = None,
    max_programs: int | None = None,
) -> torch.Tensor:
    """`max_programs`: run the (sequence, kv head, split) items on at most that many persistent programs
    (each walks every P-th item) instead of one program per item, so the attention leaves the rest of the
    GPU's multiprocessors to work on another stream (the overlap experiment of `benchmarks/stream_overlap`)."""
    b, H, d = q.shape
    n_kv, T = k_cache.shape[1], k_cache.shape[2]
    if H % n_kv:
        raise ValueError(f"{H} query heads are not a multiple of {n_kv} kv heads")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("decode_attention_triton needs a contiguous head dim in the KV cache")
    group = H // n_kv
    q = q.contiguous()
    block_d = triton.next_power_of_2(d)
    block_g = max(16, triton.next_power_of_2(group))
    default_n, default_warps, default_stages = default_launch(d)
    block_n = block_n or default_n
    num_warps = num_warps or default_warps
    num_stages = num_stages or default_stages
    if num_splits is None:
        num_splits = choose_num_splits(b, n_kv, T, q.device, block_n)
    direct = num_splits == 1
    out = torch.empty(b, H, d, dtype=q.dtype, device=q.device)
    if direct:  # one split writes `out` itself: the part buffers are never touched, `out` stands in for them
        o_part = lse_part = out
    else:
        o_part = torch.empty(b, H, num_splits, d, dtype=torch.float32, device=q.device)
        lse_part = torch.empty(b, H, num_splits, dtype=torch.float32, device=q.device)
    n_items = b * n_kv * num_splits
    if max_programs is not None and max_programs < 1:
        raise ValueError(f"max_programs must be >= 1, got {max_programs}")
    grid = (min(n_items, max_programs or n_items),)
    _decode_attn_split_kernel[grid](
        q, k_cache, v_cache, slots, context_lengths, o_part, lse_part, out,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(1),
        1.0 / math.sqrt(d), b, n_items,
        LEN_OFFSET=int(length_offset), DIRECT=direct,
        GROUP=group, HEAD_DIM=d, NUM_SPLITS=num_splits, N_KV=n_kv,
        BLOCK_G=block_g, BLOCK_D=block_d, BLOCK_N=block_n, IEEE=q.dtype == torch.float32,
        num_warps=num_warps, num_stages=num_stages,
    )
    if direct:
        return out
    _decode_attn_merge_kernel[(b, H)](
        o_part, lse_part, out,
        o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse_part.stride(0), lse_part.stride(1),
        out.stride(0), out.stride(1),
        HEAD_DIM=d, NUM_SPLITS=num_splits,
        BLOCK_S=max(2, triton.next_power_of_2(num_splits)), BLOCK_D=block_d,
        num_warps=1,
    )
    return out
