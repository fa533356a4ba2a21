"""CUDA launchers: event_image.cu and jet_image.cu in one CuPy RawModule, on PyTorch's stream.

Kernels write straight into a preallocated torch tensor (no copy): pointers are passed as 64-bit
integers, so bfloat16 needs no CuPy dtype. Launches go on `torch.cuda.current_stream()`, wrapped
as a CuPy external stream, so they are ordered with the surrounding PyTorch work.

Arguments (all on the same CUDA device, C-contiguous, exact dtypes; checked, never copied):
  types (B, N) int8, features (B, N, F>=3) float32, counts (B,) int32, params (RC_P_SIZE,) float32;
  constituents (B, M, F>=3) float32, fatjet (B, 4) float32;
  out (B, C, H, W) float32 | bfloat16 | float16 | uint8, contiguous (NCHW) or channels_last;
  skipped (1,) int64, incremented by the number of skipped objects.
The module is compiled by NVRTC with --fmad=false, as the CPU twin is built without contraction, and
with -ftz=true (CuPy always adds it), as the CPU twin flushes subnormals too.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from engine.contracts import FATJET_WIDTH, KERNEL_MIN_FEATURES

HERE = Path(__file__).parent
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.uint8: 3}
EVENT_CHANNELS = (1, 3, 5)
BLOCK = 256
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false", "-ftz=true")   # CuPy adds -ftz=true anyway: said here

_module = None


def source() -> str:
    """The module source: the shared header, then the .cu files (their #include lines removed,
    so CuPy's compile cache, keyed on this text, sees every edit)."""
    parts = [(HERE / "render_common.h").read_text()]
    for name in ("event_image.cu", "jet_image.cu"):
        parts.append(re.sub(r'#include "render_common.h"\n', "", (HERE / name).read_text()))
    return "\n".join(parts)


def _event_name(dt: int, channels: int) -> str:
    return f"rc_event_kernel<{dt}, {channels}>"


def _jet_name(dt: int) -> str:
    return f"rc_jet_kernel<{dt}>"


def module():
    """The compiled RawModule (NVRTC, cached by CuPy)."""
    global _module
    if _module is None:
        import cupy
        names = [_event_name(dt, c) for dt in DTYPES.values() for c in EVENT_CHANNELS]
        names += [_jet_name(dt) for dt in DTYPES.values()]
        _module = cupy.RawModule(code=source(), options=NVRTC_OPTIONS, name_expressions=names)
    return _module


def _check(name: str, tensor: torch.Tensor, dtype: torch.dtype, ndim: int, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype or tensor.dim() != ndim:
        got = (getattr(tensor, "dtype", type(tensor).__name__), tuple(getattr(tensor, "shape", ())))
        raise TypeError(f"{name} must be a {ndim}-d {dtype} tensor, got {got}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, expected {device}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _check_out(out: torch.Tensor, batch: int, channels: int, side: int) -> tuple[int, int]:
    """Returns (dtype code, channels_last flag)."""
    if not isinstance(out, torch.Tensor) or out.dtype not in DTYPES or not out.is_cuda:
        raise TypeError(f"out must be a CUDA tensor of {', '.join(map(str, DTYPES))}")
    if tuple(out.shape) != (batch, channels, side, side):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(batch, channels, side, side)}")
    if out.is_contiguous():
        return DTYPES[out.dtype], 0
    if out.is_contiguous(memory_format=torch.channels_last):
        return DTYPES[out.dtype], 1
    raise ValueError("out must be contiguous (NCHW) or channels_last")


_kernels: dict[tuple[str, int], object] = {}


def _kernel(name: str, device: torch.device):
    """The module's kernel `name` loaded on `device` (looked up once per device)."""
    key = (name, device.index)
    if key not in _kernels:
        import cupy
        with cupy.cuda.Device(device.index):
            _kernels[key] = module().get_function(name)
    return _kernels[key]


def _torch_stream(device: torch.device):
    """PyTorch's current stream on `device` as a CuPy stream (the CUDA stream protocol where torch
    has it; CuPy's older ExternalStream otherwise)."""
    import cupy
    stream = torch.cuda.current_stream(device)
    if hasattr(stream, "__cuda_stream__") and hasattr(cupy.cuda.Stream, "from_external"):
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, device.index)


def _launch(name: str, batch: int, args: tuple, device: torch.device) -> None:
    import cupy
    if batch == 0:
        return
    with cupy.cuda.Device(device.index):
        with _torch_stream(device):
            _kernel(name, device)((batch,), (BLOCK,), args)


_params_cache: dict[tuple[bytes, int], torch.Tensor] = {}


def _device_params(params: np.ndarray, device: torch.device) -> torch.Tensor:
    """The parameter table on `device`, uploaded once per (table, device)."""
    key = (params.tobytes(), device.index)
    if key not in _params_cache:
        table = torch.from_numpy(np.ascontiguousarray(params, np.float32)).to(device)
        torch.cuda.current_stream(device).synchronize()   # once per table: usable from any stream after
        _params_cache[key] = table
    return _params_cache[key]


def _u64(value: int) -> np.uint64:
    return np.uint64(int(value) & (2**64 - 1))


def render_events(types, features, counts, params: np.ndarray, out, skipped, *, seed: int = 0,
                  index_offset: int = 0, augment: bool = False) -> None:
    """Launch the event kernel for B events into `out` (asynchronous, on the current stream).

    `params` is the host table of RenderConfig.param_table(); `skipped` (1,) int64 on the device
    is incremented by the number of skipped objects."""
    device = out.device
    batch, slots = types.shape
    for name, tensor, dtype, ndim in (("types", types, torch.int8, 2), ("features", features, torch.float32, 3),
                                      ("counts", counts, torch.int32, 1), ("skipped", skipped, torch.int64, 1)):
        _check(name, tensor, dtype, ndim, device)
    if (features.shape[:2] != (batch, slots) or features.shape[2] < KERNEL_MIN_FEATURES
            or counts.shape[0] != batch):
        raise ValueError(f"features {tuple(features.shape)} / counts {tuple(counts.shape)} do not match types")
    side, channels = int(params[0]), int(params[2])
    if channels not in EVENT_CHANNELS:
        raise ValueError(f"event kernels are built for {EVENT_CHANNELS} channels, not {channels}")
    dt, channels_last = _check_out(out, batch, channels, side)
    table = _device_params(params, device)
    args = (_u64(types.data_ptr()), _u64(features.data_ptr()), _u64(counts.data_ptr()), np.int32(batch),
            np.int32(slots), np.int32(features.shape[2]), _u64(table.data_ptr()), _u64(seed),
            np.int64(index_offset), np.int32(bool(augment)), _u64(out.data_ptr()), np.int32(channels_last),
            _u64(skipped.data_ptr()))
    _launch(_event_name(dt, channels), batch, args, device)


def render_jets(constituents, counts, fatjet, params: np.ndarray, out, skipped) -> None:
    """Launch the jet kernel for B jets into `out` (B, 1, S, S) (asynchronous, current stream)."""
    device = out.device
    batch, slots, width = constituents.shape
    for name, tensor, dtype, ndim in (("constituents", constituents, torch.float32, 3),
                                      ("counts", counts, torch.int32, 1), ("fatjet", fatjet, torch.float32, 2),
                                      ("skipped", skipped, torch.int64, 1)):
        _check(name, tensor, dtype, ndim, device)
    if width < KERNEL_MIN_FEATURES or counts.shape[0] != batch or tuple(fatjet.shape) != (batch, FATJET_WIDTH):
        raise ValueError("constituents, counts and fatjet disagree in shape")
    dt, _ = _check_out(out, batch, 1, int(params[0]))
    table = _device_params(params, device)
    args = (_u64(constituents.data_ptr()), _u64(counts.data_ptr()), _u64(fatjet.data_ptr()), np.int32(batch),
            np.int32(slots), np.int32(width), _u64(table.data_ptr()), _u64(out.data_ptr()),
            _u64(skipped.data_ptr()))
    _launch(_jet_name(dt), batch, args, device)
