"""YAML configuration loaded into nested, validated dataclasses.

`from_dict(cls, data)` builds a dataclass from a mapping: unknown keys and wrong types are
`InputError`s that name the dotted key (`detector.jet_resolution`), before any work starts; an
unknown key suggests the nearest known one ("did you mean `train.epochs`?").
Validation of values lives in each dataclass's `__post_init__`: it raises `FieldError(field, problem)`
(or a ValueError whose message starts with the field's name), and `from_dict` turns that into an
InputError naming the full dotted key (`model.unfreeze_fraction: must be in [0, 1], got 1.5`).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine.errors import InputError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class FieldError(ValueError):
    """A bad value found by a dataclass's `__post_init__`: `field` is its (dotted) key relative to
    that dataclass (`lr`, or `render.dtype` for a check across sections), `problem` the rest."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from `path`; a missing or malformed file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "the top level must be a mapping of keys to values")
    return data


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`, checking keys and types recursively."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(where or cls.__name__, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise _unknown_key(_key(where, unknown[0]), fields, where)
    kwargs = {name: _coerce(hints[name], value, _key(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise InputError(_key(where, exc.field), exc.problem) from None
    except (ValueError, TypeError) as exc:
        raise _value_error(str(exc), fields, where, cls.__name__) from None


def _unknown_key(key: str, known, where: str) -> InputError:
    """InputError for unknown `key` (full dotted name) suggesting the closest of `known` (names
    inside section `where`: `did you mean `train.epochs`?`), or listing them all when none is close."""
    return InputError(key, f"unknown key{suggest(key.rsplit('.', 1)[-1], known, where)}")


def suggest(name: str, known, where: str = "") -> str:
    """`; did you mean `where.closest`?` for the entry of `known` closest to `name` (difflib), or
    ` (known: a, b, c)` when none is close."""
    known = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f"; did you mean `{_key(where, close[0])}`?"
    return f" (known: {', '.join(known) or 'none'})"


def _value_error(message: str, fields, where: str, section: str) -> InputError:
    """A plain ValueError from `__post_init__`: a message starting with a field's name (`lr must
    be > 0`, or `train.lr must be > 0` in section train) names that field's full key; any other
    message is put under the section's name."""
    for prefix in ([f"{where}.", ""] if where else [""]):
        head, _, rest = message.removeprefix(prefix).partition(" ")
        if message.startswith(prefix) and head.rstrip(":") in fields and rest:
            return InputError(_key(where, head.rstrip(":")), rest)
    return InputError(where or section, message)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts and lists (for YAML/JSON provenance)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML) onto a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(item, "an override must look like section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(key, f"'{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(key, f"expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(key, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is typing.Literal:
        if isinstance(value, bool):   # YAML 1.1 reads no/off/false and yes/on/true as booleans
            value = next((w for w in (("yes", "on", "true") if value else ("no", "off", "false"))
                          if w in args), value)
        if isinstance(value, bool) or value not in args:
            raise InputError(key, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)   # YAML 1.1 reads `1e-3` (no dot) as a string
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise InputError(key, f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value
    return value


def check_fraction(obj, *names) -> None:
    """For __post_init__: each named field of `obj` lies in [0, 1] (FieldError naming it otherwise)."""
    for name in names:
        if not 0.0 <= getattr(obj, name) <= 1.0:
            raise FieldError(name, f"must be in [0, 1], got {getattr(obj, name)}")


def check_positive(obj, *names) -> None:
    """For __post_init__: each named field of `obj` is > 0."""
    for name in names:
        if not getattr(obj, name) > 0:
            raise FieldError(name, f"must be > 0, got {getattr(obj, name)}")


def check_non_negative(obj, *names) -> None:
    """For __post_init__: each named field of `obj` is >= 0."""
    for name in names:
        if not getattr(obj, name) >= 0:
            raise FieldError(name, f"must be >= 0, got {getattr(obj, name)}")
