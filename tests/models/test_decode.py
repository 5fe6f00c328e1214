"""Prefill + token-by-token steps must equal one full forward, for every mixer kind."""

import pytest
import torch

from tests.tiny import tiny_student

MIXES = {
    "hybrid_mamba1": ["mamba1", "attention", "mamba1", "mamba1"],
    "pure_llamba": ["discrete_mamba2"] * 3,
    "hybrid_mamba2": ["attention", "mamba2", "mamba2"],
    "mixed_all": ["attention", "mamba1", "discrete_mamba2", "mamba2"],
    "learnable_gqa": ["mamba1", "attention"],
}


def _model(name):
    extra = {"mamba1": {"learnable_gqa_expansion": True}} if name == "learnable_gqa" else {}
    return tiny_student(MIXES[name], **extra)


@pytest.mark.parametrize("stacked", [False, True], ids=["qkv_separate", "qkv_stacked"])
@pytest.mark.parametrize("name", sorted(MIXES))
def test_prefill_then_steps_equals_full_forward(name, stacked):
    model = _model(name)
    if stacked:  # the Engine's decode: one GEMM over the stacked q/k/v (and gate/up) weights
        model.stack_decode_projections()
    ids = torch.randint(0, 96, (3, 21))
    with torch.no_grad():
        full = model(ids).logits  # (3, 21, V)
    state = model.allocate_state(num_slots=5, max_len=32)
    slots = torch.tensor([4, 0, 2])
    logits = model.prefill(ids[:, :9], state, slots)
    assert (logits - full[:, 8]).abs().max() <= 1e-4
    for t in range(9, 21):
        logits = model.step(ids[:, t], state, slots)
        assert (logits - full[:, t]).abs().max() <= 1e-4, f"step {t}"
    assert state.lengths[slots].tolist() == [21, 21, 21]


@pytest.mark.parametrize("name", ["hybrid_mamba1", "pure_llamba", "mixed_all"])
def test_ragged_left_padded_prefill(name):
    model = _model(name)
    lengths = [3, 11, 7]  # shorter than the conv window too
    seqs = [torch.randint(0, 96, (n + 6,)) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = seqs[i][:n]
        mask[i, width - n :] = 1
    state = model.allocate_state(3, 32)
    slots = torch.arange(3)
    first = model.prefill(ids, state, slots, attention_mask=mask)
    for i, n in enumerate(lengths):
        with torch.no_grad():
            ref = model(seqs[i][None]).logits[0]
        assert (first[i] - ref[n - 1]).abs().max() <= 1e-4
    # continue each sequence by steps
    for k in range(6):
        tokens = torch.stack([seqs[i][n + k] for i, n in enumerate(lengths)])
        logits = model.step(tokens, state, slots)
        for i, n in enumerate(lengths):
            with torch.no_grad():
                ref = model(seqs[i][None]).logits[0, n + k]
            assert (logits[i] - ref).abs().max() <= 1e-4


def test_forked_slots_continue_identically():
    model = _model("mixed_all")
    ids = torch.randint(0, 96, (1, 10))
    state = model.allocate_state(4, 16)
    first = model.prefill(ids, state, torch.tensor([0]))
    state.copy_slots(torch.tensor([0, 0, 0]), torch.tensor([1, 2, 3]))
    nxt = first.argmax(-1).repeat(4)
    logits = model.step(nxt, state, torch.arange(4))
    assert (logits - logits[0]).abs().max() <= 1e-5  # rows differ only by GEMM blocking


def test_decode_state_bytes_by_kind():
    model = tiny_student(["attention", "mamba1"])
    state = model.allocate_state(2, 100)
    sizes = state.bytes_per_slot()
    cfg = model.config
    assert sizes["kv"] == 2 * 100 * cfg.num_key_value_heads * cfg.head_dim * 4
    assert sizes["recurrent"] == cfg.d_xb * 3 * 4 + cfg.d_inner * 16 * 4


def test_stacked_projections_follow_weight_updates():
    """The stacked copy is refilled in place (captured CUDA graphs keep its address) and follows training."""
    model = _model("mixed_all")
    copies = model.stack_decode_projections()
    mixer = model.model.layers[0].mixer
    buffer = mixer.decode_stacked[0]
    with torch.no_grad():
        for p in (mixer.q_proj.weight, mixer.k_proj.weight, mixer.v_proj.weight):
            p.add_(0.05 * torch.randn_like(p))  # what an optimizer step does: in place
    ids = torch.randint(0, 96, (2, 10))

    def last_step_logits():
        state = model.allocate_state(num_slots=2, max_len=16)
        slots = torch.arange(2)
        model.prefill(ids[:, :9], state, slots)
        return model.step(ids[:, 9], state, slots)

    with torch.no_grad():
        full = model(ids).logits[:, 9]
    assert (last_step_logits() - full).abs().max() > 1e-3  # stale copy: decode no longer matches the weights
    model.stack_decode_projections(copies)  # refilled in place
    assert mixer.decode_stacked[0].data_ptr() == buffer.data_ptr()
    assert (last_step_logits() - full).abs().max() <= 1e-4
