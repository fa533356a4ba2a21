"""From a loader batch to a model's forward arguments, on the training device.

Image models get their images drawn here, on the fly: on a GPU by the CUDA kernels straight into a
reused device buffer, otherwise by the CPU twin. Set models and `ffn` take the padded objects as
they are. Augmentation (phi rotation, eta flip) is seeded by (seed, epoch, step), so a resumed
run draws the same images as an uninterrupted one.
"""
from __future__ import annotations

import torch

from engine.models import INPUT_KEYS
from engine.render import render_events, render_jets
from engine.training.config import RenderSection
from kernels.presets import preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def augmentation_seed(seed: int, epoch: int, step: int) -> int:
    """A distinct, reproducible 31-bit seed for every (seed, epoch, step)."""
    return (seed * 1_000_003 + epoch * 65_537 + step) % (2**31 - 1)


class ModelInputs:
    """Callable: (batch, epoch, step, train) -> (forward args tuple, labels (B,) int64)."""

    def __init__(self, input_kind: str, dataset_kind: str, render: RenderSection, device: torch.device,
                 seed: int, channels_last: bool = True):
        self.input_kind = input_kind
        self.dataset_kind = dataset_kind
        self.render = render
        self.device = device
        self.seed = seed
        self.channels_last = channels_last and input_kind == "image" and dataset_kind == "events"
        self.cfg = preset(render.preset, render.size_px) if input_kind == "image" else None
        if self.cfg is not None and self.cfg.kind != ("event" if dataset_kind == "events" else "jet"):
            from engine.errors import InputError
            raise InputError("render.preset", f"'{render.preset}' draws {self.cfg.kind} images, "
                                              f"but the shards hold {dataset_kind}")
        self._out: torch.Tensor | None = None

    def __call__(self, batch: dict, epoch: int, step: int, train: bool) -> tuple[tuple, torch.Tensor]:
        on_device = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()
                     if isinstance(v, torch.Tensor)}
        labels = on_device["labels"]
        if self.input_kind != "image":
            return tuple(on_device[k] for k in INPUT_KEYS[self.input_kind]), labels
        return (self._images(on_device, epoch, step, train),), labels

    def _images(self, batch: dict, epoch: int, step: int, train: bool) -> torch.Tensor:
        n = batch["labels"].shape[0]
        dtype = DTYPES[self.render.dtype]
        # On a GPU the batch buffer is reused: the stream orders the next batch's writes after this
        # batch's reads. On the CPU the model may still hold the previous batch (autograd), so the
        # renderer allocates a fresh tensor (cheap) instead.
        out = self._out if self._out is not None and self._out.shape[0] == n else None
        if self.dataset_kind == "events":
            rendered = render_events(batch, self.cfg, out, dtype=dtype, channels_last=self.channels_last,
                                     seed=augmentation_seed(self.seed, epoch, step),
                                     augment=train and self.render.augment)
        else:
            rendered = render_jets(batch, self.cfg, out, dtype=dtype)
        if rendered.images.is_cuda:
            self._out = rendered.images
        return rendered.images
