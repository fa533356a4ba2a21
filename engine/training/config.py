"""The training configuration: one YAML file, loaded into validated dataclasses.

    output_dir: runs/NAME
    data:   {shards, train_fraction, signal}
    loader: the LoaderConfig of engine.data.loader (backend torch | dali, workers, ...)
    model:  {name, options, init_weights, new_head, unfreeze_fraction, channels_last, compile}
    render: {preset, size_px, dtype, augment}
    train:  {epochs, max_steps, batch_size, optimizer, lr, ..., seed, mixed_precision}

Unknown keys and wrong types fail before any work, naming the key (engine.config.from_dict).
`train.batch_size` is the per-process batch; it is what the loader is built with.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional

from engine.config import apply_overrides, from_dict, load_yaml
from engine.data.loader import LoaderConfig
from engine.errors import InputError


@dataclass
class DataConfig:
    shards: str = ""
    """Folder made by `python -m engine shard` (with train/, val/, test/ and manifest.json)."""
    train_fraction: float = 1.0
    """Train on this fraction of the training events: a fixed subset (the first events of the
    globally shuffled split), the same in every epoch (fine-tuning on a small sample)."""
    signal: Optional[str] = None
    """Class treated as signal in the signal-vs-background figure (default: the first class)."""

    def __post_init__(self):
        if not self.shards:
            raise ValueError("data.shards must name a shard folder")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError("data.train_fraction must lie in (0, 1]")


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    """A registered model (engine.models.list_models()) or `gbt` (gradient-boosted trees)."""
    options: dict = field(default_factory=dict)
    """Keyword options of the model's factory (e.g. dim, heads for set_transformer)."""
    init_weights: Optional[str] = None
    """Local checkpoint or ImageNet weight file to start from (never downloaded)."""
    new_head: bool = False
    """Replace the classifier head when init_weights has another number of classes."""
    unfreeze_fraction: float = 1.0
    """Fraction of layers (from the output side) that train; the head always trains."""
    channels_last: bool = True
    compile: bool = False


@dataclass
class RenderSection:
    preset: str = "madrazo2017"
    size_px: Optional[int] = None
    """Image size; None keeps the preset's."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    augment: bool = True
    """Random phi rotation and eta flip per event (training only)."""


@dataclass
class TrainSection:
    epochs: int = 1
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = 256
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: Optional[float] = None
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    grad_accum_steps: int = 1
    max_grad_norm: float = 0.0
    """Clip gradients to this norm (0: no clipping)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every_steps: int = 20
    checkpoint_every_steps: int = 200
    eval_every_epochs: int = 1
    record_events: bool = False
    """Write the split index of every training event seen, per rank and epoch (for checks)."""

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every_steps", "checkpoint_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1")
        if not self.lr > 0:
            raise ValueError("train.lr must be positive")


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    data: DataConfig = field(default_factory=lambda: DataConfig(shards="runs/demo/shards"))
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderSection = field(default_factory=RenderSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self):
        self.loader = replace(self.loader, batch_size=self.train.batch_size, seed=self.train.seed)
        if self.render.dtype != "float32" and self.train.mixed_precision == "no":
            raise ValueError(f"render.dtype {self.render.dtype} needs train.mixed_precision bf16 or fp16 "
                             "(the model's weights are float32)")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Config file (or the defaults) with `section.key=value` overrides applied."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, list(overrides))
    return from_dict(TrainConfig, data)


def check_paths(cfg: TrainConfig) -> None:
    """Fail early on a shard folder that is not there."""
    if not (Path(cfg.data.shards) / "manifest.json").is_file():
        raise InputError(cfg.data.shards, "no manifest.json: not a shard folder (run `python -m engine shard`)")
