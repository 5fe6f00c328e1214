"""Build a student from a teacher and transfer weights as docs/design.md §2 describes.

Everything except the token mixers is copied (embeddings, every RMSNorm, every MLP, the
LM head).  Kept attention layers copy q/k/v/o unchanged.  Mamba mixers are initialised
from the same layer's attention: x <- V, B <- K, C <- Q (no RoPE, no 1/sqrt(d) scale),
out_proj <- O, and a biased teacher's (Qwen2) v/k/q biases go to the matching in_proj bias rows;
their other parameters keep the initialisation their constructors give.
"""

from __future__ import annotations

import torch

from thinkfast.convert.spec import StudentSpec
from thinkfast.errors import ThinkfastError
from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM
from thinkfast.teachers.families import student_config_kwargs


def student_config_from_teacher(teacher_config, spec: StudentSpec | str | None = None, **fields) -> ThinkfastConfig:
    """The student's ThinkfastConfig for `spec` (a StudentSpec, or a target name and/or its field keywords)."""
    spec = StudentSpec.of(spec, **fields)
    kwargs = student_config_kwargs(teacher_config)
    kwargs["layer_mixers"] = spec.layer_mixers(kwargs["num_hidden_layers"])
    kwargs["mamba1"] = {"learnable_gqa_expansion": spec.learnable_gqa_expansion}
    heads, head_dim = kwargs["num_attention_heads"], kwargs["head_dim"]
    # a pure student keeps the teacher's head geometry so Q/K/V map head for head
    kwargs["discrete_mamba2"] = {
        "n_v_heads": heads, "n_qk_heads": heads, "head_dim": head_dim, "d_state": head_dim,
        # a teacher with q/k/v biases (Qwen2) needs bias rows for x, B, C
        "in_proj_bias": bool(kwargs["attention_bias"]),
    }
    return ThinkfastConfig(**kwargs)


def _teacher_layers(teacher):
    inner = getattr(teacher, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise ThinkfastError(f"teacher {type(teacher).__name__} has no .model.layers: not a Llama-family causal LM")
    return inner


def _repeat_heads(weight: torch.Tensor, n_kv: int, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows of a kv projection (n_kv*hd, ...) repeated head-wise to (n_heads*hd, ...)."""
    rep = n_heads // n_kv
    w = weight.reshape(n_kv, 1, head_dim, *weight.shape[1:])
    return w.expand(n_kv, rep, head_dim, *weight.shape[1:]).reshape(n_heads * head_dim, *weight.shape[1:])


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise ThinkfastError(f"shape mismatch in weight transfer: student {tuple(dst.shape)} vs teacher {tuple(src.shape)}")
    dst.copy_(src.to(dst.dtype))


def _fill_rows(dst: torch.Tensor, pieces: dict[int, torch.Tensor | None], sizes: list[int]) -> None:
    """Copy pieces into row blocks of a fused projection; piece index -> rows of block `index`."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    for index, src in pieces.items():
        if src is not None:
            _copy(dst[offsets[index] : offsets[index] + sizes[index]], src)


def _transfer_mixer(student_mixer, kind: str, attn, cfg: ThinkfastConfig) -> None:
    q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
    bias = lambda lin: lin.bias if lin.bias is not None else None  # noqa: E731
    if kind == "attention":
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            dst, src = getattr(student_mixer, name), getattr(attn, name)
            _copy(dst.weight, src.weight)
            if dst.bias is not None:
                _copy(dst.bias, src.bias)
        return
    if kind in ("mamba1", "mamba2"):
        # [z | x <- V | B <- K | C <- Q | dt]
        sizes = student_mixer.split_sizes
        _fill_rows(student_mixer.in_proj.weight, {1: v.weight, 2: k.weight, 3: q.weight}, sizes)
        if student_mixer.in_proj.bias is not None:
            # The k bias is left out (B bias = 0). In the teacher it passes through RoPE and acts as a
            # position-dependent term of each score that softmax normalises; in a recurrence with no
            # RoPE and no softmax it becomes one constant key shared by every token and summed over the
            # whole history. Copying Qwen2.5's large k biases makes a converted mixer's output far too
            # large: relative error 22 at layer 0 of Qwen2.5-Coder-0.5B vs 1.0 without it (3-5 -> ~1.3
            # at other layers; held-out reverse KL of the 6/24 hybrid 15.9 -> 13.0 nats/token).
            student_mixer.in_proj.bias.zero_()
            _fill_rows(student_mixer.in_proj.bias, {1: bias(v), 3: bias(q)}, sizes)
    elif kind == "discrete_mamba2":
        # [x <- V (heads repeated) | B <- K (heads repeated) | C <- Q | z | a]
        h, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        m = student_mixer
        if not (m.n_v == m.n_qk == h and m.head_dim == hd and m.d_state == hd):
            raise ThinkfastError(
                "a pure student initialised from attention needs n_v_heads = n_qk_heads = the teacher's "
                f"{h} heads and head_dim = d_state = {hd}; got n_v={m.n_v}, n_qk={m.n_qk}, head_dim={m.head_dim}, "
                f"d_state={m.d_state}"
            )
        sizes = [h * hd, h * hd, h * hd, m.d_inner, m.n_v]
        pieces = {0: _repeat_heads(v.weight, kv, h, hd), 1: _repeat_heads(k.weight, kv, h, hd), 2: q.weight}
        _fill_rows(m.in_proj.weight, pieces, sizes)
        biased = any(lin.bias is not None for lin in (q, k, v))
        if biased and m.in_proj.bias is None:
            raise ThinkfastError(
                "the teacher has q/k/v biases but the student's in_proj has none: set discrete_mamba2.in_proj_bias=true"
            )
        if m.in_proj.bias is not None:  # same head mapping as the weights; z and a rows stay 0
            m.in_proj.bias.zero_()
            bias_pieces = {
                0: None if v.bias is None else _repeat_heads(v.bias, kv, h, hd),
                1: None if k.bias is None else _repeat_heads(k.bias, kv, h, hd),
                2: bias(q),
            }
            _fill_rows(m.in_proj.bias, bias_pieces, sizes)
    else:
        raise ThinkfastError(f"no weight transfer defined for mixer {kind!r}")
    _copy(student_mixer.out_proj.weight, o.weight)


def convert(teacher, spec: StudentSpec | str | None = None, seed: int = 0, **fields) -> ThinkfastForCausalLM:
    """Teacher (HF Llama / Qwen2 / Mistral causal LM) -> ThinkfastForCausalLM in fp32.

    `spec` is a StudentSpec; a target name and/or StudentSpec field keywords also work
    (`convert(teacher, "hybrid", keep_attention=1)`).
    """
    return transfer_weights(teacher, student_config_from_teacher(teacher.config, spec, **fields), seed)


@torch.no_grad()
def transfer_weights(teacher, config: ThinkfastConfig, seed: int = 0) -> ThinkfastForCausalLM:
    """Build the student of `config` (from `student_config_from_teacher`) and copy the teacher's weights in."""
    teacher_inner = _teacher_layers(teacher)
    torch.manual_seed(seed)  # new parameters (A_log aside) get reproducible random init
    student = ThinkfastForCausalLM(config).float()
    s_inner = student.model
    _copy(s_inner.embed_tokens.weight, teacher_inner.embed_tokens.weight)
    _copy(s_inner.norm.weight, teacher_inner.norm.weight)
    if student.lm_head is not None:
        _copy(student.lm_head.weight, teacher.lm_head.weight)
    for s_layer, t_layer, kind in zip(s_inner.layers, teacher_inner.layers, config.layer_mixers):
        _copy(s_layer.input_layernorm.weight, t_layer.input_layernorm.weight)
        _copy(s_layer.post_attention_layernorm.weight, t_layer.post_attention_layernorm.weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            dst, src = getattr(s_layer.mlp, name), getattr(t_layer.mlp, name)
            _copy(dst.weight, src.weight)
            if dst.bias is not None:
                _copy(dst.bias, src.bias)
        _transfer_mixer(s_layer.mixer, kind, t_layer.self_attn, config)
    return student.eval()
