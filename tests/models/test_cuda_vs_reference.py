"""On CUDA, a model running the kernels (Triton scan/conv/decode, fla SSD) matches the same model on the
PyTorch references, forward and backward, within bf16 tolerances.  Skipped without a GPU."""

import pytest
import torch

from tests.tiny import tiny_student

pytestmark = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _run(model, ids, positions):
    model.zero_grad(set_to_none=True)
    logits = model(ids, position_ids=positions).logits
    (logits.float().pow(2).mean()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach().float(), grads


@pytest.mark.parametrize("mixers", [["mamba1", "attention", "mamba1"], ["discrete_mamba2", "attention"]])
def test_kernels_match_references_forward_and_backward(monkeypatch, mixers):
    torch.manual_seed(0)
    model = tiny_student(mixers, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    model = model.cuda().to(torch.bfloat16).cast_ssm_params_fp32().train()
    docs = [300, 212]  # two packed documents: resets inside the row
    ids = torch.randint(0, 96, (2, sum(docs)), device="cuda")
    positions = torch.cat([torch.arange(n) for n in docs])[None].expand(2, -1).cuda()
    logits_k, grads_k = _run(model, ids, positions)
    monkeypatch.setenv("THINKFAST_FORCE_REFERENCE", "1")
    logits_r, grads_r = _run(model, ids, positions)
    assert _rel(logits_k, logits_r) < 2e-2
    worst = max(_rel(grads_k[n], grads_r[n]) for n in grads_r)
    assert worst < 5e-2, f"worst gradient relative error {worst:.3e}"


def test_training_rows_through_flex_attention_match_the_reference(monkeypatch):
    """Training rows (`batch_seq`: a SequenceInfo with `block_masks`) attend through flex_attention; hidden
    states and gradients equal the reference's (SDPA with a dense document mask) within bf16 tolerances."""
    from thinkfast.training.tasks import batch_seq

    torch.manual_seed(0)
    model = tiny_student(["attention", "mamba1", "attention"], hidden_size=256, intermediate_size=512,
                         num_attention_heads=4, num_key_value_heads=2)
    model = model.cuda().to(torch.bfloat16).cast_ssm_params_fp32().train()
    docs = [300, 212, 500]  # three packed documents, lengths off the 128-token blocks
    ids = torch.randint(0, 96, (2, sum(docs)), device="cuda")
    positions = torch.cat([torch.arange(n) for n in docs])[None].expand(2, -1).cuda()
    probe = torch.randn(2, sum(docs), 256, device="cuda")

    def run():
        model.zero_grad(set_to_none=True)
        seq = batch_seq({"input_ids": ids, "position_ids": positions})
        hidden = model.hidden_states(ids, seq)  # (b, l, d)
        (hidden.float() * probe).sum().backward()  # a fixed random direction: the final norm's output has ~constant norm
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        return hidden.detach().float(), grads, "document" in seq.block_masks

    hidden_k, grads_k, used_flex = run()
    assert used_flex, "the kernel run should build the document block mask"
    monkeypatch.setenv("THINKFAST_FORCE_REFERENCE", "1")
    hidden_r, grads_r, used_flex = run()
    assert not used_flex
    assert _rel(hidden_k, hidden_r) < 2e-2
    worst = max(_rel(grads_k[n], grads_r[n]) for n in grads_r)
    assert worst < 5e-2, f"worst gradient relative error {worst:.3e}"
