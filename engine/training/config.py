"""The training configuration: one YAML file, loaded into validated dataclasses.

    output_dir: runs/NAME
    data:   {shards, train_fraction, signal}
    loader: the LoaderConfig of engine.data.loader (backend torch | dali, workers, ...)
    model:  {name, options, init_weights, new_head, unfreeze_fraction, channels_last, compile}
    render: {preset, size_px, dtype, augment}
    train:  {epochs, max_steps, batch_size, optimizer, lr, ..., seed, mixed_precision}

Unknown keys and wrong types fail before any work, naming the key (engine.config.from_dict);
values are checked in each section's `__post_init__`. `check_inputs(cfg)` then checks the config
against the shards (signal class, the model's input kind, the preset's image kind), still before
any work, and lets a model that reads several input kinds read the one the shards hold.
`train.batch_size` is the per-process batch and `train.seed` the seed: the loader is built with
both (`loader.batch_size` / `loader.seed` may only repeat them).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional

from engine.config import FieldError, apply_overrides, check_fraction, from_dict, load_yaml, suggest
from engine.data.loader import LoaderConfig
from engine.errors import InputError
from kernels.presets import PRESETS, preset


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
            raise FieldError("shards", "must name a shard folder")
        if not 0.0 < self.train_fraction <= 1.0:
            raise FieldError("train_fraction", f"must lie in (0, 1], got {self.train_fraction}")


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

    def __post_init__(self):
        check_fraction(self, "unfreeze_fraction")


@dataclass
class RenderSection:
    preset: str = "madrazo2017"
    size_px: Optional[int] = None
    """Image size; None keeps the preset's."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    augment: bool = True
    """Random phi rotation and eta flip per event (training only)."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise FieldError("preset", f"unknown preset {self.preset!r}{suggest(self.preset, PRESETS)}")
        if self.size_px is not None and self.size_px < 1:
            raise FieldError("size_px", f"must be at least 1 (or null for the preset's), got {self.size_px}")


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
                raise FieldError(name, f"must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise FieldError("lr", f"must be positive, got {self.lr}")


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
            raise FieldError("render.dtype", f"{self.render.dtype} needs train.mixed_precision bf16 or fp16 "
                                             "(the model's weights are float32)")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Config file (or the defaults) with `section.key=value` overrides applied."""
    data = load_yaml(path) if path else {}
    copies = _loader_copies_of_train(data)
    data = apply_overrides(data, list(overrides))
    cfg = from_dict(TrainConfig, data)
    keys = (item.partition("=")[0] for item in overrides)
    set_by_override = {key.removeprefix("loader.") for key in keys if key.startswith("loader.")}
    _check_loader_repeats_train(data.get("loader") or {}, cfg, copies - set_by_override)
    return cfg


def _loader_copies_of_train(data: dict) -> set[str]:
    """Loader keys of a file that only repeat its own train values (a resolved config.yaml has them),
    so that such a file still loads with a `train.batch_size=...` override."""
    loader, train = data.get("loader"), data.get("train")
    if not isinstance(loader, dict) or not isinstance(train, dict):
        return set()
    return {name for name in ("batch_size", "seed") if name in loader and loader[name] == train.get(name)}


def _check_loader_repeats_train(loader: dict, cfg: TrainConfig, copies: set[str]) -> None:
    """`loader.batch_size` and `loader.seed` come from `train`: set in the YAML, they must agree."""
    for name in ("batch_size", "seed"):
        train_value = getattr(cfg.train, name)
        if name in loader and name not in copies and loader[name] != train_value:
            raise InputError(f"loader.{name}", f"{loader[name]!r} disagrees with train.{name} {train_value!r} "
                                               f"(the loader takes it from train.{name}; set that instead)")


def check_paths(cfg: TrainConfig) -> None:
    """Fail early on a shard folder that is not there, or that is one split of a shard folder
    (training reads the train and val splits of the root)."""
    from engine.data.remote import location
    from engine.data.shards import locate_split
    root, split = locate_split(cfg.data.shards)
    if root != location(cfg.data.shards):
        raise InputError("data.shards", f"{cfg.data.shards} is the '{split}' split of {root}: give the shard "
                                        "root (training reads its train and val splits)")


DATASET_OF_INPUT = {"objects": "events", "constituents": "fatjets"}
"""The shard kind each non-image input kind is read from."""
IMAGE_OF_DATASET = {"events": "event", "fatjets": "jet"}
"""The preset kind (kernels.presets.RenderConfig.kind) that draws each shard kind."""


def check_inputs(cfg: TrainConfig) -> dict:
    """Everything that needs the shards, checked before any work: the shard folder, `data.signal`
    among its classes, the model (name, options) reading this kind of shards, and for image models
    a preset drawing this kind of image. A model that reads several input kinds and whose config
    sets no `model.options.inputs` reads the kind these shards hold: when that is not its default,
    it is written into `cfg.model.options` (so the run's config.yaml rebuilds the same model).
    Returns the manifest; InputErrors name the YAML key."""
    from engine.data.shards import load_manifest
    check_paths(cfg)
    manifest = load_manifest(cfg.data.shards)
    names, kind = manifest["class_names"], manifest["kind"]
    if cfg.data.signal is not None and cfg.data.signal not in names:
        raise InputError("data.signal", f"{cfg.data.signal!r} is not among the classes of {cfg.data.shards}"
                                        f"{suggest(cfg.data.signal, names)}")
    _choose_inputs(cfg.model, kind)
    input_kind = model_input_kind(cfg.model, kind)
    if input_kind == "image":
        _check_preset(cfg.render, kind, cfg.data.shards)
    elif DATASET_OF_INPUT[input_kind] != kind:
        raise _wrong_kind(cfg.model, input_kind, kind, cfg.data.shards)
    return manifest


def _choose_inputs(model: ModelConfig, dataset_kind: str) -> None:
    """Set `model.options.inputs` to the input kind read from `dataset_kind` shards, for a model
    that takes several kinds, has none configured, and whose default is another kind."""
    if model.name == "gbt" or "inputs" in model.options:
        return
    from engine.models.registry import get_entry
    accepted = get_entry(model.name).inputs
    wanted = next((k for k in accepted if DATASET_OF_INPUT.get(k) == dataset_kind), None)
    if len(accepted) > 1 and wanted is not None and wanted != accepted[0]:
        model.options = {**model.options, "inputs": wanted}


def model_input_kind(model: ModelConfig, dataset_kind: str = "events") -> str:
    """'image', 'objects' or 'constituents' for the configured model (name and options checked);
    `gbt` reads the padded objects of event shards and the constituents of fat-jet shards."""
    if model.name != "gbt":
        from engine.models import model_input
        return model_input(model.name, **model.options)
    from sklearn.ensemble import HistGradientBoostingClassifier
    known = HistGradientBoostingClassifier().get_params()
    for key in model.options:
        if key not in known or key == "random_state":
            raise InputError(f"model.options.{key}", "not an option of gbt (HistGradientBoostingClassifier; the "
                                                     f"seed is train.seed){suggest(key, known, 'model.options')}")
    return "constituents" if dataset_kind == "fatjets" else "objects"


def _check_preset(render: RenderSection, kind: str, shards: str) -> None:
    wanted = IMAGE_OF_DATASET[kind]
    if preset(render.preset).kind != wanted:
        fitting = [name for name in PRESETS if preset(name).kind == wanted]
        raise InputError("render.preset", f"{render.preset!r} draws {preset(render.preset).kind} images, but "
                                          f"{shards} holds {kind} (presets for {kind}: {', '.join(fitting)})")


def _wrong_kind(model: ModelConfig, input_kind: str, kind: str, shards: str) -> InputError:
    from engine.models.registry import get_entry
    takes = () if model.name == "gbt" else get_entry(model.name).inputs
    other = next((k for k, d in DATASET_OF_INPUT.items() if d == kind and k in takes), None)
    hint = f"; set model.options.inputs: {other}" if other else ""
    key = "model.options.inputs" if "inputs" in model.options else "model.name"
    return InputError(key, f"{model.name} reads {input_kind} (from {DATASET_OF_INPUT[input_kind]} shards), "
                           f"but {shards} holds {kind}{hint}")
