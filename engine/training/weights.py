"""Weight files: reading and writing the local files whose tensors `engine.models.transfer` applies.

Weights come only from local files; nothing is ever downloaded.
- `load_checkpoint(model, path, new_head)`: a state_dict written by this project (torch.save of
  `model.state_dict()`, optionally wrapped as {"model": ...} or {"state_dict": ...}; a
  `.safetensors` file; or a directory holding model.safetensors / pytorch_model.bin, as
  Accelerate's `save_state` writes). It must fit the model exactly, except that with
  `new_head=True` the final logits layer is left freshly initialised.
- `load_imagenet(model, path)`: a timm ImageNet weight file of the same architecture into a
  `TimmNet` body (its classifier dropped, the first convolution adapted to the input channels).
- `save_weights(model, path)`: safetensors, atomically, with the model's spec as metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engine.files import atomic_path
from engine.errors import InputError
from engine.models.transfer import (apply_checkpoint_state, apply_imagenet_state, apply_initial_state,
                                    require_timm, strip_prefixes)

CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
SPEC_KEY = "engine_model"       # safetensors metadata: the model's spec as JSON


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise InputError(path, f"no weights in this directory (looked for {', '.join(CHECKPOINT_NAMES)})")
    if not path.is_file():
        raise InputError(path, "weight file not found")
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a local weight file (or checkpoint directory) -> (state_dict on CPU, metadata)."""
    path = _resolve(path)
    metadata: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input problem
        raise InputError(path, f"cannot read weights: {err}") from None
    if isinstance(state, dict):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state_dict (expected a mapping of parameter names to tensors)")
    return strip_prefixes(state), metadata


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write `model.state_dict()` as safetensors, atomically, with the model's spec as metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in strip_prefixes(model.state_dict()).items()}
    metadata = {SPEC_KEY: json.dumps(getattr(model, "spec", {}))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def _written_for(metadata: dict[str, str]) -> str:
    """The model name a file of this project was written for ("" when unknown)."""
    return json.loads(metadata.get(SPEC_KEY, "{}") or "{}").get("name", "")


def load_checkpoint(model: nn.Module, path: str | Path, new_head: bool = False) -> dict:
    """Load a checkpoint of this project into `model`, in place.

    new_head=True keeps the model's own (fresh) final logits layer, so a model pretrained with
    one set of classes starts another. Returns {"loaded": n tensors, "new_head": [keys kept fresh]}.
    InputError when the file is missing or written for another architecture or class count.
    """
    state, metadata = read_weights(path)
    return apply_checkpoint_state(model, state, path, new_head, _written_for(metadata))


def load_imagenet(model: nn.Module, path: str | Path) -> dict:
    """Load a local timm ImageNet weight file into the body of a timm model, in place.
    Returns {"loaded": n}."""
    require_timm(model, path)
    state, _ = read_weights(path)
    return apply_imagenet_state(model, state, path)


def load_initial_weights(model: nn.Module, path: str | Path, new_head: bool = False) -> dict:
    """A checkpoint or an ImageNet file (told apart by the tensor names) into `model`, in place."""
    state, metadata = read_weights(path)
    return apply_initial_state(model, state, path, new_head, _written_for(metadata))
