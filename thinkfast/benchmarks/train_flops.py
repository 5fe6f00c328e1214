"""Model FLOPs of one training step of each recipe, for `thinkfast bench train`'s MFU.

Convention (docs/training.md, "Training throughput"):
  * N = every matmul weight of a model: each nn.Linear's weight and the LM head (a tied head counts the
    embedding matrix once, as the head); the embedding lookup, norms, biases, convolutions and the SSM
    recurrences are not counted.
  * A token costs 2·N FLOPs forward and 6·N forward + backward (the backward is the input gradient and
    the weight gradient, 2·N each).  The head is counted on every token, trained or not.
  * Attention scores are counted document-aware and causal: a query at position i of a document attends
    to i + 1 keys, and each (query, key) pair costs 2·d_attn for Q·Kᵀ and 2·d_attn for P·V, d_attn =
    heads × head_dim.  So a row's forward costs 4·d_attn·Σ_docs n(n+1)/2 per attention layer (about
    2·L·d_attn per token for one document of L tokens), and 3× that with the backward.
  * MFU = (student FLOPs + teacher FLOPs) per step / step time / the measured bf16 matmul rate.

Per recipe, per step (T tokens, P = Σ over rows and documents of n(n+1)/2):
  distill, mohawk3  6·N_s·T + 3·A_s  +  2·N_t·T + A_t          (A = attention-score FLOPs forward)
  sft               6·N_s·T + 3·A_s
  mohawk2           Σ_trained layers 6·N_layer·T (+ 3·A of trained attention layers)  +  2·(N_t − head)·T + A_t
  mohawk1           Σ_trained layers [4·N_in_proj·T + 3·2·h·n·P  +  2·(N_q + N_k)·T + 2·d_attn·P]
                    +  2·(N_t − head)·T + A_t
                    (stage 1: the input is the detached teacher state, so in_proj has a forward and a weight
                    gradient only; C·Bᵀ of the student's h heads × d_state n over the causal pairs, forward
                    and backward; the teacher's Q, K projections and Q·Kᵀ for its attention matrix)
"""

from __future__ import annotations

from torch import nn


def matmul_weights(module: nn.Module) -> int:
    """Weights of every nn.Linear in `module`."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def model_matmul_weights(model) -> int:
    """N of a ThinkfastForCausalLM: every Linear plus the LM head (tied: the embedding matrix, once)."""
    head = model.head_weight().numel() if model.lm_head is None else 0  # an untied head is a Linear already
    return matmul_weights(model) + head


def head_weights(model) -> int:
    return model.head_weight().numel()


def causal_pairs(doc_lengths: list[list[int]]) -> int:
    """(query, key) pairs of document-aware causal attention over rows of documents."""
    return sum(n * (n + 1) // 2 for row in doc_lengths for n in row)


def attention_forward_flops(config, pairs: int, layers: list[int] | None = None) -> int:
    """Q·Kᵀ and P·V of the attention layers (all, or those of `layers`) over `pairs` (query, key) pairs."""
    d_attn = config.num_attention_heads * config.head_dim
    idx = range(config.num_hidden_layers) if layers is None else layers
    n_attn = sum(config.layer_mixers[i] == "attention" for i in idx)
    return 4 * d_attn * pairs * n_attn


def step_flops(recipe: str, student, teacher, doc_lengths: list[list[int]], layers: list[int] | None = None) -> dict:
    """FLOPs of one step over the rows described by `doc_lengths` (documents per row).

    `layers`: the layers MOHAWK stages 1-2 train (default: every non-attention layer).  Returns
    {"student", "teacher", "total", "tokens", "pairs"} (FLOPs per step)."""
    tokens = sum(sum(row) for row in doc_lengths)
    pairs = causal_pairs(doc_lengths)
    scfg = student.config
    if layers is None:
        layers = [i for i, m in enumerate(scfg.layer_mixers) if m != "attention"]
    teacher_fwd = 0
    if teacher is not None:
        tcfg = teacher.config
        t_body = model_matmul_weights(teacher) - head_weights(teacher)
        t_attn = attention_forward_flops(tcfg, pairs)
    if recipe in ("distill", "mohawk3", "sft"):
        student_flops = 6 * model_matmul_weights(student) * tokens + 3 * attention_forward_flops(scfg, pairs)
        if recipe != "sft":
            teacher_fwd = 2 * model_matmul_weights(teacher) * tokens + t_attn
    elif recipe == "mohawk2":
        blocks = sum(matmul_weights(student.model.layers[i]) for i in layers)
        student_flops = 6 * blocks * tokens + 3 * attention_forward_flops(scfg, pairs, layers)
        teacher_fwd = 2 * t_body * tokens + t_attn
    elif recipe == "mohawk1":
        student_flops = 0
        for i in layers:
            mixer = student.model.layers[i].mixer
            t_mixer = teacher.model.layers[i].mixer
            student_flops += 4 * mixer.in_proj.weight.numel() * tokens + 3 * 2 * mixer.n_v * mixer.d_state * pairs
            teacher_fwd += 2 * (t_mixer.q_proj.weight.numel() + t_mixer.k_proj.weight.numel()) * tokens
            teacher_fwd += 2 * teacher.config.num_attention_heads * teacher.config.head_dim * pairs
        teacher_fwd += 2 * t_body * tokens + t_attn
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    return {"student": student_flops, "teacher": teacher_fwd, "total": student_flops + teacher_fwd,
            "tokens": tokens, "pairs": pairs}
