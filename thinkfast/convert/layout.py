"""Which layers keep attention, and which mixer replaces it elsewhere."""

from __future__ import annotations

from thinkfast.errors import ThinkfastError

TARGETS = ("hybrid", "llamba", "attention")
HYBRID_MIXERS = ("mamba1", "mamba2")


def spread_attention_layers(num_layers: int, keep: int) -> list[int]:
    """`keep` layer indices spread evenly, the last layer always kept.

    16 layers, keep 4 -> [3, 7, 11, 15]; 28 layers, keep 6 -> [4, 8, 13, 18, 22, 27]
    (M1-3B used [3, 8, 13, 18, 23, 27]: pass an explicit list to reproduce it).
    """
    return [round((i + 1) * num_layers / keep) - 1 for i in range(keep)]


def check_request(
    target: str,
    attention_layers: list[int] | str | None = None,  # indices, or "auto" (all Mamba; chosen after alignment)
    keep_attention: int | None = None,
    mixer: str = "mamba1",
) -> None:
    """The checks that need no teacher (StudentSpec runs them when it is built)."""
    if target not in TARGETS:
        raise ThinkfastError(f"unknown conversion target {target!r}; choose one of {list(TARGETS)}")
    if target == "attention":
        return
    if target == "llamba":
        if attention_layers or keep_attention:
            raise ThinkfastError("--to llamba makes a pure Mamba-2 student: it keeps no attention layers")
        return
    if mixer not in HYBRID_MIXERS:
        raise ThinkfastError(f"unknown hybrid mixer {mixer!r}; choose one of {list(HYBRID_MIXERS)}")
    if attention_layers != "auto" and attention_layers is not None and keep_attention is not None:
        raise ThinkfastError("give either --attention-layers or --keep-attention, not both")


def plan_layer_mixers(
    num_layers: int,
    target: str,
    attention_layers: list[int] | str | None = None,  # indices, or "auto" (all Mamba; chosen after alignment)
    keep_attention: int | None = None,
    mixer: str = "mamba1",
) -> list[str]:
    """Validate the request against the layer count and return the per-layer mixer list; raises before
    any work is done."""
    check_request(target, attention_layers, keep_attention, mixer)
    if target == "attention":
        return ["attention"] * num_layers
    if target == "llamba":
        return ["discrete_mamba2"] * num_layers
    if attention_layers == "auto":
        # every layer starts as a Mamba mixer; the distill recipe's alignment stage measures which
        # `keep_attention` layers go back to attention (training/align.py: select_attention_layers)
        return [mixer] * num_layers
    if attention_layers is None:
        keep = keep_attention if keep_attention is not None else max(1, round(num_layers / 4))
        if not 0 <= keep < num_layers:
            raise ThinkfastError(
                f"--keep-attention must be between 0 (every layer Mamba) and {num_layers - 1} for a "
                f"{num_layers}-layer hybrid (got {keep}); use --to attention to keep every layer"
            )
        attention_layers = spread_attention_layers(num_layers, keep) if keep else []
    bad = [i for i in attention_layers if not 0 <= i < num_layers]
    if bad:
        raise ThinkfastError(f"attention layer index(es) {bad} out of range: the teacher has layers 0..{num_layers - 1}"
                             + (" (counted from 0; negative indices are not accepted)" if min(bad) < 0 else ""))
    if len(set(attention_layers)) != len(attention_layers):
        raise ThinkfastError(f"attention layer list {attention_layers} repeats an index")
    if len(attention_layers) >= num_layers:  # none is allowed: MambaInLlama's 0%-attention student, all Mamba
        raise ThinkfastError(
            f"a hybrid keeps fewer than all of the {num_layers} layers as attention (got {len(attention_layers)}); "
            "use --to attention to keep every layer"
        )
    keep_set = set(attention_layers)
    return ["attention" if i in keep_set else mixer for i in range(num_layers)]
