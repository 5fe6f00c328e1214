"""Engine limits: the CPU planner sizes the pool to the host's memory, requests past the model's positions are
refused with the prompt named, and seeds follow stable (prompt key, sample id) identities."""

import pytest
import torch

from tests.inference.conftest import tiny_model
from thinkfast.errors import ThinkfastError
from thinkfast.inference import planner
from thinkfast.inference.engine import Engine, check_request
from thinkfast.inference.params import SamplingParams


def test_cpu_plan_follows_available_memory(monkeypatch):
    model = tiny_model("attention")
    monkeypatch.setattr(planner, "host_available_bytes", lambda: 64 << 30)
    assert Engine(model, max_len=64, progress=False).num_slots == planner.CPU_SLOT_CAP
    plan = planner.plan_slots(model, 4096, model.dtype, model.device, 1)
    room = 3.5 * (plan.state_bytes_per_slot + plan.decode_workspace_per_row) + plan.prefill_workspace
    monkeypatch.setattr(planner, "host_available_bytes", lambda: int(room / planner.CPU_MEMORY_FRACTION))
    assert Engine(model, max_len=4096, progress=False).num_slots == 3
    monkeypatch.setattr(planner, "host_available_bytes", lambda: 1024)
    with pytest.raises(ThinkfastError, match="no decode slot fits in memory"):
        Engine(model, max_len=4096, progress=False)


def test_gpu_plan_counts_memory_torch_caches_but_does_not_use(monkeypatch):
    """A model built in fp32 and cast to bf16 leaves GBs in torch's cache: the plan must count them as free."""
    model = tiny_model("attention")
    gib = 1 << 30
    plan = planner.plan_slots(model, 4096, model.dtype, model.device, 1)
    per_slot = plan.state_bytes_per_slot + plan.decode_workspace_per_row
    total = 100 * gib
    # driver-free memory: room for exactly 10 slots after the margins
    driver_free = 10 * per_slot + plan.prefill_workspace + gib + int(0.06 * total) + per_slot // 2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (driver_free, total))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 5 * gib)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * gib)  # nothing cached
    assert planner.plan_slots(model, 4096, model.dtype, cuda).fit == 10
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * gib + 3 * per_slot)
    plan = planner.plan_slots(model, 4096, model.dtype, cuda)
    assert plan.fit == 13 and plan.free_bytes == driver_free + 3 * per_slot


@pytest.mark.parametrize("lengths, new, max_len, positions, strict, message", [
    ([3, 0], 4, 16, None, False, "prompt 1 is empty"),
    ([20], 4, 16, None, False, "prompt 0 has 20 tokens, more than the engine's max_len=16"),
    ([10], 4, 100, 12, False, "prompt 0 has 10 tokens; with max_new_tokens=4 it would run to position 13, past the "
                              "model's 12 positions (max_position_embeddings): lower max_new_tokens to 3 or less"),
    ([10], 10, 16, None, True, "prompt 0 has 10 tokens, so max_new_tokens=10 needs max_len >= 19, but the engine's "
                               "max_len is 16: its samples would be cut short; raise max_len"),
])
def test_check_request_messages(lengths, new, max_len, positions, strict, message):
    with pytest.raises(ThinkfastError) as err:
        check_request(lengths, new, max_len, positions, strict=strict)
    assert str(err.value) == message


def test_engine_refuses_decoding_past_the_models_positions():
    model = tiny_model("hybrid")
    model.config.max_position_embeddings = 12
    engine = Engine(model, max_batch=2, max_len=64, progress=False)
    with pytest.raises(ThinkfastError, match="past the model's 12 positions"):
        engine.generate([[1, 2, 3]], SamplingParams(max_new_tokens=20))
    assert engine.generate([[1, 2, 3]], SamplingParams(max_new_tokens=10))[0][0].token_ids  # 12 positions: fits


def test_seeds_follow_keys_and_sample_ids_not_the_batch():
    engine = Engine(tiny_model("hybrid"), max_batch=8, max_len=32, progress=False)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=5, ignore_eos=True)
    both = engine.generate([[1, 2, 3], [4, 5]], params, n=3, keys=[101, 202], sample_ids=[4, 5, 6])
    alone = engine.generate([[4, 5]], params, n=1, keys=[202], sample_ids=[5])  # another batch, another position
    assert alone[0][0].token_ids == both[1][1].token_ids
    assert both[1][0].token_ids != both[1][1].token_ids
