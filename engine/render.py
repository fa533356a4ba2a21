"""Draw event and jet images on whichever device the batch lives on.

`render_events` / `render_jets` take the padded arrays of engine.data.objects (numpy arrays or
torch tensors). CUDA tensors go to the CuPy kernels (kernels.gpu) on the current stream; anything
else goes to the CPU twin (kernels.cpu), which draws the same images bit for bit.

Output: a (B, C, H, W) tensor (`channels_last=True` gives the channels-last memory format) in
float32, bfloat16, float16 or uint8 (value * 255 rounded half up); preallocate `out` to reuse a
buffer. `skipped` counts objects that were not drawn because they were bad: NaN/inf kinematics,
an unknown type code, more than the kernel's per-event cap (64 objects, 256 constituents).
Counts above N are clamped to N; events with no objects are blank; eta beyond the canvas is
clipped by the canvas; phi wraps around.

Augmentation (`augment=True`, events only): per event, a phi rotation uniform in [-pi, pi) and an
eta flip with p = 0.5, drawn from a hash of (seed, index_offset + row), so a batch renders the
same on any device and with any number of threads.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from kernels import cpu
from kernels.presets import RenderConfig


class Rendered(NamedTuple):
    images: torch.Tensor
    """(B, C, H, W) images."""
    skipped: torch.Tensor
    """0-d int64 on the images' device (reading it on a GPU waits for the kernel)."""


def _is_cuda(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_cuda


def _allocate(out, batch: int, cfg: RenderConfig, dtype: torch.dtype, channels_last: bool,
              device: torch.device) -> torch.Tensor:
    if out is not None:
        return out
    out = torch.empty((batch, cfg.channels, cfg.size_px, cfg.size_px), dtype=dtype, device=device)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _host(value, dtype) -> np.ndarray:
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.ascontiguousarray(array, dtype=dtype)


def _draw_on_cpu(out: torch.Tensor, draw) -> Rendered:
    """Run the twin, `draw(view, channels_last) -> skipped`, on a numpy view it can write
    (float32/uint8); bfloat16/float16 outputs are drawn in float32 and then converted by torch,
    which rounds to nearest even."""
    if out.device.type != "cpu":
        raise ValueError(f"out is on {out.device} but the inputs are on the CPU")
    channels_last = not out.is_contiguous() and out.is_contiguous(memory_format=torch.channels_last)
    if not (out.is_contiguous() or channels_last):
        raise ValueError("out must be contiguous (NCHW) or channels_last")
    stage = None if out.dtype in (torch.float32, torch.uint8) else torch.empty_like(out, dtype=torch.float32)
    target = out if stage is None else stage
    view = target.permute(0, 2, 3, 1) if channels_last else target
    n = draw(view.numpy(), channels_last)
    if stage is not None:
        out.copy_(stage)
    return Rendered(out, torch.tensor(n, dtype=torch.int64))


def render_events(batch: dict, cfg: RenderConfig, out: torch.Tensor | None = None, *, seed: int = 0,
                  augment: bool = False, index_offset: int = 0, dtype: torch.dtype = torch.float32,
                  channels_last: bool = False, threads: int | None = None) -> Rendered:
    """Event images of `batch` = {types (B, N) int8, features (B, N, 6) float32, counts (B,) int32}."""
    if cfg.kind != "event":
        raise ValueError(f"config {cfg.name!r} draws {cfg.kind} images, not event images")
    types, features, counts = batch["types"], batch["features"], batch["counts"]
    params = cfg.param_table()
    if _is_cuda(types):
        from kernels import gpu
        out = _allocate(out, types.shape[0], cfg, dtype, channels_last, types.device)
        skipped = torch.zeros(1, dtype=torch.int64, device=types.device)
        gpu.render_events(types, features, counts, params, out, skipped, seed=seed,
                          index_offset=index_offset, augment=augment)
        return Rendered(out, skipped[0])
    types, features, counts = _host(types, np.int8), _host(features, np.float32), _host(counts, np.int32)
    out = _allocate(out, types.shape[0], cfg, dtype, channels_last, torch.device("cpu"))
    return _draw_on_cpu(out, lambda view, layout: cpu.render_events(
        types, features, counts, params, view, seed=seed, index_offset=index_offset, augment=augment,
        channels_last=layout, threads=threads))


def render_jets(batch: dict, cfg: RenderConfig, out: torch.Tensor | None = None, *,
                dtype: torch.dtype = torch.float32, threads: int | None = None) -> Rendered:
    """Jet images of `batch` = {constituents (B, M, 5) float32, counts (B,) int32, fatjet (B, 4) float32}."""
    if cfg.kind != "jet":
        raise ValueError(f"config {cfg.name!r} draws {cfg.kind} images, not jet images")
    cons, counts, fatjet = batch["constituents"], batch["counts"], batch["fatjet"]
    params = cfg.param_table()
    if _is_cuda(cons):
        from kernels import gpu
        out = _allocate(out, cons.shape[0], cfg, dtype, False, cons.device)
        skipped = torch.zeros(1, dtype=torch.int64, device=cons.device)
        gpu.render_jets(cons, counts, fatjet, params, out, skipped)
        return Rendered(out, skipped[0])
    cons, counts, fatjet = _host(cons, np.float32), _host(counts, np.int32), _host(fatjet, np.float32)
    out = _allocate(out, cons.shape[0], cfg, dtype, False, torch.device("cpu"))
    return _draw_on_cpu(out, lambda view, _: cpu.render_jets(cons, counts, fatjet, params, view,
                                                             threads=threads))
