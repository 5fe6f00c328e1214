from dataclasses import dataclass, field

import pytest

from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError


@dataclass
class _Optim:
    betas: tuple[float, float] = (0.9, 0.95)
    lr: float = 1e-5


@dataclass
class _Cfg:
    name: str = "x"
    steps: int = 3
    optim: _Optim = field(default_factory=_Optim)
    layers: list[int] | None = None


def test_load_nested_with_overrides():
    cfg = load_config(_Cfg, {"steps": 4, "optim": {"lr": "2e-5"}}, ["optim.betas=[0.8,0.9]", "layers=[1,2]"])
    assert cfg.steps == 4 and cfg.optim.lr == 2e-5 and cfg.optim.betas == (0.8, 0.9) and cfg.layers == [1, 2]


def test_unknown_key_named_in_error():
    with pytest.raises(ThinkfastError, match="unknown key.*stepz"):
        load_config(_Cfg, {"stepz": 4})


def test_wrong_type_named_in_error():
    with pytest.raises(ThinkfastError, match="steps.*integer"):
        load_config(_Cfg, {"steps": "many"})
