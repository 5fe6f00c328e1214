"""StudentSpec: one validated home for what a conversion builds, shared by the CLI, the pipeline and training."""

import pytest

from thinkfast.config import from_dict
from thinkfast.convert import StudentSpec
from thinkfast.errors import ThinkfastError
from thinkfast.pipeline.config import StudentRun
from thinkfast.training.config import StudentConfig, TrainConfig


def test_spec_is_validated_when_built():
    with pytest.raises(ThinkfastError, match="unknown conversion target"):
        StudentSpec("transformer")
    with pytest.raises(ThinkfastError, match="not both"):
        StudentSpec(attention_layers=[1], keep_attention=1)
    StudentSpec(attention_layers="auto", keep_attention=2)  # auto: alignment picks keep_attention layers


def test_yaml_keys_stay_flat_and_carry_the_whole_spec():
    run = from_dict(StudentRun, {"name": "h", "target": "hybrid", "keep_attention": 2, "learnable_gqa_expansion": True})
    assert run.spec() == StudentSpec("hybrid", keep_attention=2, learnable_gqa_expansion=True)
    student = from_dict(StudentConfig, {"path": None, "mixer": "mamba2", "learnable_gqa_expansion": True})
    assert student.spec() == StudentSpec(mixer="mamba2", learnable_gqa_expansion=True)
    with pytest.raises(ThinkfastError, match="mixer"):
        from_dict(StudentConfig, {"mixer": "mamba3"})


def test_mohawk_with_a_hybrid_target_names_the_fix():
    with pytest.raises(ThinkfastError, match="student.target: llamba"):
        from_dict(TrainConfig, {"recipe": "mohawk", "teacher": "t", "data": {"path": "d"}, "stages": [{"stage": 1}]})
    from_dict(TrainConfig, {"recipe": "mohawk", "teacher": "t", "data": {"path": "d"}, "stages": [{"stage": 1}],
                            "student": {"target": "llamba"}})
