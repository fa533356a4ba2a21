"""The model registry: every model the engine can train, created by name.

A model module registers a factory with `@register_model(inputs=...)`; the factory takes
`num_classes` and keyword options and returns an `nn.Module`. `create_model` checks the name
and the options before building anything, so a typo in a config names the bad key.
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Callable

from torch import nn

from engine.errors import InputError

INPUT_KINDS = ("image", "objects", "constituents")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its factory and the input kinds it accepts (the first is the default)."""

    name: str
    factory: Callable[..., nn.Module]
    inputs: tuple[str, ...]

    def options(self) -> list[str]:
        """Keyword options the factory accepts (besides num_classes)."""
        params = inspect.signature(self.factory).parameters
        return [p for p in params if p != "num_classes"]

    def option_types(self) -> dict[str, object]:
        """Type hints of the options, for checking values from a config."""
        return typing.get_type_hints(self.factory)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, inputs: tuple[str, ...] = ("image",)):
    """Decorator registering `factory(num_classes, **options) -> nn.Module` under `name`.

    `inputs` lists the input kinds the model accepts; a model accepting more than one kind
    must take an `inputs` option choosing among them.
    """
    for kind in inputs:
        if kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {kind!r}; expected one of {INPUT_KINDS}")

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        if len(inputs) > 1 and "inputs" not in inspect.signature(factory).parameters:
            raise ValueError(f"model {key!r} accepts {inputs} but has no `inputs` option")
        _REGISTRY[key] = ModelEntry(key, factory, tuple(inputs))
        return factory

    return wrap


NOT_TORCH = {"gbt": "scikit-learn gradient-boosted trees: train them with `python -m engine.train model.name=gbt`"}
"""Models the engine trains that are not `nn.Module`s (listed by `list_models`, not created here)."""


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; InputError listing the known names if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in NOT_TORCH:
            raise InputError("model.name", f"{name!r} is not a torch model ({NOT_TORCH[name]})") from None
        known = ", ".join(sorted([*_REGISTRY, *NOT_TORCH]))
        raise InputError("model.name", f"unknown model {name!r}; known models: {known}") from None


def registered_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def check_options(entry: ModelEntry, options: dict) -> None:
    """InputError naming the first option the model does not take (with the closest one it takes),
    a value of the wrong type, or an invalid input kind; keys read as in the YAML (`model.options.dim`)."""
    allowed = entry.options()
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean `model.options.{close[0]}`?" if close else ""
            raise InputError(f"model.options.{key}", f"model {entry.name!r} has no option {key!r}{hint} "
                             f"(its options: {', '.join(allowed) or 'none'})")
    hints = entry.option_types()
    for key, value in options.items():
        if key in hints and not _matches(value, hints[key]):
            raise InputError(f"model.options.{key}", f"expected {_describe(hints[key])}, got {value!r}")
    kind = options.get("inputs", entry.inputs[0])
    if kind not in entry.inputs:
        raise InputError("model.options.inputs", f"model {entry.name!r} takes inputs "
                         f"{' or '.join(entry.inputs)}, not {kind!r}")


def _matches(value: object, hint: object) -> bool:
    """Whether a config value fits a factory's type hint (int, float, str, bool, tuple[int, ...], unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: object) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
