"""Models by name: image CNNs, the jet-image CVN and set models on object lists.

    model = create_model("set_transformer", num_classes=3, dim=64)
    logits = model(*model_args(model.input_kind, batch))     # (B, num_classes)

Every model answers one of three input kinds (`model_input(name)` tells the trainer which, so it
knows whether to render images), and every kind has one forward signature:

  "image"         model(images)                      images (B, C, H, W) float
  "objects"       model(types, features, counts)     (B,N) int8, (B,N,6) float32, (B,) int32
  "constituents"  model(constituents, counts, fatjet) (B,M,5) float32, (B,) int32, (B,4) float32

`INPUT_KEYS[kind]` names the batch-dict keys (those of `engine.data.objects.pad_events` /
`pad_fatjets`, plus "images") in argument order; `model_args` picks them out of a batch dict.

Registered models: small_cnn, cvn, the timm architectures of `cnn.TIMM_MODELS`, ffn, deepsets,
set_transformer, particlenet, part. `list_models` also names `gbt` (scikit-learn trees, trained by
`engine.train`, not created here: `create_model("gbt")` says so). Each has `.input_kind`, `.spec`
(name, num_classes, options: enough to rebuild it) and `.head` (the top layers, ending in the logits
Linear) used by `transfer`.
Models know nothing of files or loaders: weights are loaded by `engine.models.transfer`.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.errors import InputError
from engine.models import cnn, cvn, particle, sets  # noqa: F401  (importing registers the models)
from engine.models.registry import NOT_TORCH, check_options, get_entry, register_model, registered_names

INPUT_KEYS = {
    "image": ("images",),
    "objects": ("types", "features", "counts"),
    "constituents": ("constituents", "counts", "fatjet"),
}

__all__ = ["INPUT_KEYS", "create_model", "list_models", "model_args", "model_input",
           "optimise_for_speed", "register_model"]


def list_models() -> list[str]:
    """Names of every model the engine trains, sorted: the registered torch models and `gbt`."""
    return sorted([*registered_names(), *NOT_TORCH])


def model_input(name: str, **options) -> str:
    """Input kind of model `name` built with `options`: 'image', 'objects' or 'constituents'.

    Set models take `inputs="objects"` (default) or `inputs="constituents"`; the trainer chooses the
    one the shards hold where the config sets none.
    """
    entry = get_entry(name)
    check_options(entry, options)
    return options.get("inputs", entry.inputs[0])


def create_model(name: str, num_classes: int, **options) -> nn.Module:
    """Build model `name` with randomly initialised weights and a (B, num_classes) logits output.

    Unknown names and options raise InputError naming them (known names / options listed).
    """
    entry = get_entry(name)
    check_options(entry, options)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError("model.num_classes", f"a classifier needs at least 2 classes, got {num_classes!r}")
    model = entry.factory(num_classes, **options)
    model.input_kind = options.get("inputs", entry.inputs[0])
    model.spec = {"name": name, "num_classes": num_classes, "options": dict(options)}
    return model


def model_args(kind: str, batch: dict) -> tuple[torch.Tensor, ...]:
    """The forward arguments of a model of input `kind`, picked from a batch dict by INPUT_KEYS."""
    return tuple(batch[key] for key in INPUT_KEYS[kind])


def optimise_for_speed(model: nn.Module, channels_last: bool = True, compile_model: bool = False) -> nn.Module:
    """Channels-last memory format for image models (faster convolutions on tensor cores) and
    optionally `torch.compile`. Returns the model to use (compiled or the same object)."""
    if channels_last and model.input_kind == "image":
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile_model else model
