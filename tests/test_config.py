from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from engine.config import apply_overrides, from_dict, to_dict
from engine.errors import InputError


@dataclass
class Inner:
    lr: float = 1e-3
    name: Literal["adam", "sgd"] = "adam"


@dataclass
class Outer:
    epochs: int = 1
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    resume: Optional[str] = None


def test_nested_dataclass_from_dict():
    cfg = from_dict(Outer, {"epochs": 3, "inner": {"lr": 1, "name": "sgd"}, "tags": ["a"]})
    assert cfg.epochs == 3 and cfg.inner.lr == 1.0 and cfg.inner.name == "sgd" and cfg.tags == ["a"]
    assert to_dict(cfg)["inner"] == {"lr": 1.0, "name": "sgd"}


@pytest.mark.parametrize("data, message", [
    ({"epoch": 3}, "epoch: unknown key"),
    ({"inner": {"learning_rate": 1}}, "inner.learning_rate: unknown key"),
    ({"epochs": "3"}, "epochs: expected int"),
    ({"epochs": True}, "epochs: expected int"),
    ({"inner": {"name": "adamw"}}, "inner.name: must be one of"),
    ({"tags": "a"}, "tags: expected a list"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(InputError, match=message):
        from_dict(Outer, data)


def test_yaml_exponent_without_dot_is_a_float():
    import yaml
    cfg = from_dict(Inner, yaml.safe_load("lr: 1e-3"))
    assert cfg.lr == 0.001
    with pytest.raises(InputError, match="inner.lr: expected float"):
        from_dict(Outer, {"inner": {"lr": "fast"}})


def test_overrides():
    data = apply_overrides({}, ["inner.lr=0.5", "epochs=2", "resume=null"])
    assert data == {"inner": {"lr": 0.5}, "epochs": 2, "resume": None}
    with pytest.raises(InputError):
        apply_overrides({}, ["epochs"])


def test_half_precision_images_need_mixed_precision():
    from engine.training.config import load_config
    with pytest.raises(InputError, match="render.dtype bfloat16 needs train.mixed_precision"):
        load_config(None, ["render.dtype=bfloat16", "train.mixed_precision=no"])
    assert load_config(None, ["render.dtype=bfloat16", "train.mixed_precision=bf16"]).render.dtype == "bfloat16"


def test_yaml_no_is_the_word_no_where_a_choice_is_expected():
    from engine.training.config import load_config
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(InputError, match="must be one of no, bf16, fp16, got True"):
        load_config(None, ["train.mixed_precision=yes"])
