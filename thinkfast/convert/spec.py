"""StudentSpec: what student a conversion builds, in one dataclass validated at construction.

The same fields (flat, as YAML keys) are part of the pipeline's `StudentRun` and the training
`StudentConfig`, and the `convert` CLI builds one from its flags; `convert(teacher, spec, seed)` and
`student_config_from_teacher(config, spec)` take it.  Checks that need the teacher's layer count run in
`layer_mixers` (thinkfast/convert/layout.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from thinkfast.convert.layout import check_request, plan_layer_mixers

Target = Literal["hybrid", "llamba", "attention"]
Mixer = Literal["mamba1", "mamba2"]


@dataclass
class StudentSpec:
    """hybrid: Mamba mixers (`mixer`) with some attention layers kept; llamba: every layer discrete
    Mamba-2 (the mohawk recipe's student); attention: the teacher's own stack.

    attention_layers: explicit indices, or "auto": every layer starts as a Mamba mixer and the distill
    recipe's alignment stage puts back the `keep_attention` layers whose attention lowers the KL to the
    teacher most (training/align.py); None: `keep_attention` layers (default a quarter) spread evenly.
    learnable_gqa_expansion: M1's learnable d_xb -> d_inner maps in Mamba-1 mixers.
    """

    target: Target = "hybrid"
    attention_layers: list[int] | Literal["auto"] | None = None
    keep_attention: int | None = None
    mixer: Mixer = "mamba1"
    learnable_gqa_expansion: bool = False

    def __post_init__(self) -> None:
        check_request(self.target, self.attention_layers, self.keep_attention, self.mixer)

    def spec(self) -> StudentSpec:
        """The plain spec (a StudentRun / StudentConfig carries more fields)."""
        return StudentSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StudentSpec)})

    def layer_mixers(self, num_layers: int) -> list[str]:
        return plan_layer_mixers(num_layers, self.target, self.attention_layers, self.keep_attention, self.mixer)

    @classmethod
    def of(cls, spec: StudentSpec | str | None = None, **fields) -> StudentSpec:
        """A spec from a StudentSpec, or from a target name and/or field keywords (the keyword form of
        `convert(teacher, "hybrid", keep_attention=1)`)."""
        if isinstance(spec, StudentSpec):
            return dataclasses.replace(spec.spec(), **fields)
        if spec is not None:
            fields["target"] = spec
        return cls(**fields)
