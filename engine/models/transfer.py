"""Transfer learning on tensors: applying a state_dict, layer freezing, optimizers.

Files are read and written by `engine.training.weights`; these functions take the tensors.
- `apply_checkpoint_state(model, state, path, new_head)`: a state_dict of this project. It must
  fit the model exactly, except that with `new_head=True` the final logits layer is left freshly
  initialised (another class count, or another channel's classes).
- `apply_imagenet_state(model, state, path)`: timm ImageNet weights of the same architecture
  into a `TimmNet` body; its 1000-class classifier is dropped and the first convolution adapted
  to the model's input channels (timm's `adapt_input_conv`).
- `freeze(model, unfreeze_fraction)`: train only the last fraction of parameterised layers
  (plus the head), as in the Durham poster (0, 0.2, 0.7, 1).
`path` (the file the tensors came from) only names the input in errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import InputError
from engine.models.cnn import TimmNet

PREFIXES = ("module.", "_orig_mod.")     # added by DistributedDataParallel and torch.compile
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def strip_prefixes(state: dict) -> dict:
    """The state_dict with DistributedDataParallel's and torch.compile's key prefixes removed."""
    return {_strip(k): v for k, v in state.items()}


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the final Linear in `model.head` (the layer giving the logits)."""
    linears = [name for name, m in model.head.named_modules() if isinstance(m, nn.Linear)]
    prefix = "head." + linears[-1] if linears[-1] else "head"
    return {f"{prefix}.{k}" for k in ("weight", "bias")}


def _examples(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _check_keys(target: dict, state: dict, path, model_name: str, written_for: str) -> None:
    missing, unexpected = target.keys() - state.keys(), state.keys() - target.keys()
    if missing or unexpected:
        origin = f" (written for model {written_for!r})" if written_for else ""
        raise InputError(path, f"weights{origin} do not fit model {model_name!r}, another architecture: "
                               f"{len(missing)} tensors missing ({_examples(missing)}), "
                               f"{len(unexpected)} unexpected ({_examples(unexpected)})")


def _shape_mismatches(target: dict, state: dict) -> dict[str, tuple]:
    return {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in target.items()
            if tuple(state[k].shape) != tuple(v.shape)}


def apply_checkpoint_state(model: nn.Module, state: dict, path, new_head: bool = False,
                           written_for: str = "") -> dict:
    """Load a state_dict of this project into `model`, in place.

    new_head=True keeps the model's own (fresh) final logits layer, so a model pretrained with
    one set of classes starts another. Returns {"loaded": n tensors, "new_head": [keys kept fresh]}.
    InputError naming `path` when the tensors belong to another architecture (`written_for`, the
    model name the file records, if any) or class count.
    """
    target = model.state_dict()
    name = getattr(model, "spec", {}).get("name", type(model).__name__)
    _check_keys(target, state, path, name, written_for)
    head = classifier_keys(model)
    mismatched = _shape_mismatches(target, state)
    body_mismatch = {k: v for k, v in mismatched.items() if k not in head}
    if body_mismatch:
        key, (theirs, ours) = next(iter(sorted(body_mismatch.items())))
        raise InputError(path, f"weights do not fit model {name!r}, another architecture or input: "
                               f"{key} has shape {theirs} in the file but {ours} in the model "
                               f"({len(body_mismatch)} tensors differ)")
    if mismatched and not new_head:
        weight = next(k for k in head if k.endswith("weight"))
        raise InputError(path, f"checkpoint has {state[weight].shape[0]} classes but the model has "
                               f"{target[weight].shape[0]}; set new_head to replace the classifier head")
    fresh = sorted(head) if new_head else []
    state = {k: (target[k] if k in fresh else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return {"loaded": len(state) - len(fresh), "new_head": fresh}


def require_timm(model: nn.Module, path) -> None:
    """ImageNet weights fit the timm models only: anything else is an InputError naming `path`."""
    if not isinstance(model, TimmNet):
        raise InputError(path, f"ImageNet weights apply to the timm models only, not {type(model).__name__}")


def apply_imagenet_state(model: nn.Module, state: dict, path) -> dict:
    """Load timm ImageNet weights into the body of a timm model, in place.

    The file's classifier (and, with the Durham head, VGG's dropped MLP) is ignored; a first
    convolution for 3 channels is adapted to the model's channel count. Returns {"loaded": n}.
    """
    from timm.models import adapt_input_conv

    require_timm(model, path)
    body = model.body
    target = body.state_dict()
    cfg = body.pretrained_cfg
    drop = [cfg.get("classifier") or "", "pre_logits"]
    state = {k: v for k, v in state.items()
             if k in target or not any(k.startswith(p + ".") for p in drop if p)}
    conv = f"{cfg.get('first_conv')}.weight"
    if conv in state and conv in target and state[conv].shape[1] != target[conv].shape[1]:
        state[conv] = adapt_input_conv(target[conv].shape[1], state[conv])
    _check_keys(target, state, path, model.arch, "")
    mismatched = _shape_mismatches(target, state)
    if mismatched:
        key, (theirs, ours) = next(iter(sorted(mismatched.items())))
        raise InputError(path, f"not ImageNet weights of {model.arch!r}: {key} has shape {theirs} "
                               f"in the file but {ours} in the model")
    body.load_state_dict(state, strict=True)
    return {"loaded": len(state)}


def apply_initial_state(model: nn.Module, state: dict, path, new_head: bool = False,
                        written_for: str = "") -> dict:
    """Checkpoint or ImageNet weights, told apart by the names inside: a checkpoint of a timm model
    names its tensors `body.*`, a timm ImageNet file does not."""
    if isinstance(model, TimmNet) and not any(k.startswith("body.") for k in state):
        return apply_imagenet_state(model, state, path)
    return apply_checkpoint_state(model, state, path, new_head, written_for)


@dataclass
class FreezeReport:
    """What `freeze` did: layer counts (head excluded) and parameter counts (head included)."""

    layers: int
    unfrozen_layers: int
    trainable_params: int
    frozen_params: int

    @property
    def unfrozen_fraction(self) -> float:
        return self.unfrozen_layers / self.layers if self.layers else 1.0


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, in registration order (input side first)."""
    return [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def _set_trainable(layer: nn.Module, trainable: bool) -> None:
    for p in layer.parameters(recurse=False):
        p.requires_grad_(trainable)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        # A frozen BatchNorm keeps its running statistics too: momentum 0 stops their update
        # even in train mode (restored when the layer is unfrozen).
        if not trainable and not hasattr(layer, "_trainable_momentum"):
            layer._trainable_momentum = layer.momentum
            layer.momentum = 0.0
        elif trainable and hasattr(layer, "_trainable_momentum"):
            layer.momentum = layer.__dict__.pop("_trainable_momentum")


def freeze(model: nn.Module, unfreeze_fraction: float, train_head: bool = True) -> FreezeReport:
    """Freeze all but the last `unfreeze_fraction` of the parameterised layers, in place.

    Layers are counted in registration order, `model.head` excluded; round(fraction x layers)
    of the last ones stay trainable. With train_head (default) the head always trains, so
    fraction 0 trains the head alone, as the Durham poster's "0 % unfrozen" did.
    """
    if not 0.0 <= unfreeze_fraction <= 1.0:
        raise InputError("model.unfreeze_fraction", f"must lie in [0, 1], got {unfreeze_fraction}")
    head_ids = {id(m) for m in model.head.modules()}
    layers = [m for _, m in parameterised_layers(model) if id(m) not in head_ids]
    n_unfrozen = round(unfreeze_fraction * len(layers))
    for i, layer in enumerate(layers):
        _set_trainable(layer, i >= len(layers) - n_unfrozen)
    for layer in model.head.modules():
        _set_trainable(layer, train_head)
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return FreezeReport(len(layers), n_unfrozen, trainable, sum(p.numel() for p in params) - trainable)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0,
                   momentum: float | None = None) -> torch.optim.Optimizer:
    """Optimizer by name over the trainable ones of `params` (parameters or parameter groups).

    adam / adamw: betas (0.9, 0.999) (adamw decouples weight decay); rmsprop: alpha 0.9 and
    eps 1e-7 as Keras (the Durham poster), momentum default 0; sgd: momentum default 0.9, Nesterov off.
    """
    if name not in OPTIMIZERS:
        raise InputError("train.optimizer", f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise InputError("train.lr", f"learning rate must be positive, got {lr}")
    params = list(params)
    if params and isinstance(params[0], torch.Tensor):
        params = [p for p in params if p.requires_grad]
    if not params:
        raise InputError("train.optimizer", "no trainable parameters (is everything frozen?)")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=weight_decay,
                                   momentum=0.0 if momentum is None else momentum)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay,
                           momentum=0.9 if momentum is None else momentum)
