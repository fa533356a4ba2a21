"""The model registry (engine/models/registry.py): registration, look-up by name, and the checks of
a config's options (names, types, input kinds), on throw-away models registered for the test."""
from __future__ import annotations

import pytest
from torch import nn

from engine.errors import InputError
from engine.models import registry


@pytest.fixture
def scratch(monkeypatch):
    """An empty registry for the test; the real one is restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    return registry


def tiny(num_classes: int, width: int = 4, rate: float = 0.5, sizes: tuple[int, ...] = (2,),
         cap: int | None = None, label: str = "x", flag: bool = False) -> nn.Module:
    return nn.Linear(width, num_classes)


def test_register_and_look_up(scratch):
    scratch.register_model("tiny")(tiny)
    entry = scratch.get_entry("tiny")
    assert entry.factory is tiny and entry.inputs == ("image",) and entry.name == "tiny"
    assert entry.options() == ["width", "rate", "sizes", "cap", "label", "flag"]
    assert scratch.registered_names() == ["tiny"]


def test_the_factory_name_is_the_default_and_the_decorator_returns_the_factory(scratch):
    assert scratch.register_model(inputs=("objects",))(tiny) is tiny
    assert scratch.get_entry("tiny").inputs == ("objects",)


def test_registration_mistakes_are_refused(scratch):
    scratch.register_model("tiny")(tiny)
    with pytest.raises(ValueError, match="registered twice"):
        scratch.register_model("tiny")(tiny)
    with pytest.raises(ValueError, match="unknown input kind 'pixels'"):
        scratch.register_model("other", inputs=("pixels",))
    with pytest.raises(ValueError, match="has no `inputs` option"):
        scratch.register_model("multi", inputs=("objects", "constituents"))(tiny)
    assert scratch.registered_names() == ["tiny"]


def test_unknown_names_list_the_known_ones(scratch):
    scratch.register_model("tiny")(tiny)
    with pytest.raises(InputError, match=r"model.name: unknown model 'tinny'; known models: gbt, tiny"):
        scratch.get_entry("tinny")
    with pytest.raises(InputError, match="'gbt' is not a torch model"):
        scratch.get_entry("gbt")


@pytest.mark.parametrize("options", [
    {}, {"width": 8}, {"rate": 1}, {"rate": 0.1}, {"sizes": [3, 4]}, {"sizes": (5,)}, {"cap": None},
    {"cap": 16}, {"label": "y"}, {"flag": True},
])
def test_options_of_the_right_type_pass(scratch, options):
    scratch.register_model("tiny")(tiny)
    scratch.check_options(scratch.get_entry("tiny"), options)


@pytest.mark.parametrize("options, message", [
    ({"widht": 8}, r"model.options.widht: .*did you mean `model.options.width`"),
    ({"zzz": 1}, r"model.options.zzz: model 'tiny' has no option 'zzz' \(its options: width, rate"),
    ({"width": 8.0}, "model.options.width: expected int, got 8.0"),
    ({"width": True}, "model.options.width: expected int, got True"),
    ({"rate": "0.5"}, "model.options.rate: expected float"),
    ({"rate": False}, "model.options.rate: expected float"),
    ({"sizes": [1, "2"]}, "model.options.sizes: expected a list of int"),
    ({"sizes": 3}, "model.options.sizes: expected a list of int"),
    ({"cap": 2.5}, "model.options.cap: expected int or null"),
    ({"label": 3}, "model.options.label: expected str"),
])
def test_wrong_options_name_the_key(scratch, options, message):
    scratch.register_model("tiny")(tiny)
    with pytest.raises(InputError, match=message):
        scratch.check_options(scratch.get_entry("tiny"), options)


def test_input_kinds_are_checked(scratch):
    def multi(num_classes: int, inputs: str = "objects") -> nn.Module:
        return nn.Identity()
    scratch.register_model("multi", inputs=("objects", "constituents"))(multi)
    entry = scratch.get_entry("multi")
    scratch.check_options(entry, {"inputs": "constituents"})
    with pytest.raises(InputError, match="model.options.inputs: model 'multi' takes inputs objects or "
                                         "constituents, not 'image'"):
        scratch.check_options(entry, {"inputs": "image"})


def test_a_model_without_options_says_none(scratch):
    def bare(num_classes: int) -> nn.Module:
        return nn.Identity()
    scratch.register_model("bare")(bare)
    with pytest.raises(InputError, match=r"its options: none"):
        scratch.check_options(scratch.get_entry("bare"), {"width": 2})


def test_the_real_registry_is_untouched_and_complete():
    from engine import models
    names = registry.registered_names()
    assert {"small_cnn", "cvn", "ffn", "deepsets", "set_transformer", "particlenet", "part"} <= set(names)
    assert models.list_models() == sorted([*names, "gbt"])
    for name in names:
        entry = registry.get_entry(name)
        assert entry.inputs and set(entry.inputs) <= set(registry.INPUT_KINDS)
        assert len(entry.inputs) == 1 or "inputs" in entry.options()
