"""The CPU twin: cpu_twin.cpp compiled on first use with g++ and loaded with ctypes.

The library is built with `g++ -O3 -march=native -fopenmp -ffp-contract=off` into a cache folder
(`$COLLIDER_ENGINE_CACHE` or `~/.cache/collider-engine/kernels`), under a name keyed by the hash of
the sources, the flags and the CPU, so an edit or another machine triggers a rebuild. The build
writes a temporary file and renames it into place, so concurrent first uses are safe.

Arrays are numpy and must already have the exact dtypes and be C-contiguous (this module never
copies silently): types (B, N) int8, features (B, N, F>=3) float32, counts (B,) int32; images
out (B, C, H, W) or, channels-last, (B, H, W, C), float32 or uint8.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from engine.contracts import FATJET_WIDTH, KERNEL_MIN_FEATURES

HERE = Path(__file__).parent
SOURCES = (HERE / "render_common.h", HERE / "cpu_twin.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17",
         "-ffp-contract=off", "-fno-math-errno"]
OUT_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.uint8): 3}

_lib: ctypes.CDLL | None = None
_P, _I64, _I32, _U64 = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_ulonglong


class CompilerMissing(RuntimeError):
    """No C++ compiler to build the CPU twin."""


def cache_dir() -> Path:
    root = os.environ.get("COLLIDER_ENGINE_CACHE") or Path.home() / ".cache" / "collider-engine"
    return Path(root) / "kernels"


def _cpu_signature() -> bytes:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return b""
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return flags.encode()


def library_path() -> Path:
    digest = hashlib.sha256()
    for src in SOURCES:
        digest.update(src.read_bytes())
    digest.update(" ".join(FLAGS).encode() + _cpu_signature())
    return cache_dir() / f"cpu_twin-{digest.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compile the twin into `path` atomically (temporary file + rename)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise CompilerMissing("the CPU renderer needs a C++ compiler with OpenMP (g++); none found on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cpu_twin-", suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        cmd = [compiler, *FLAGS, "-o", tmp, str(HERE / "cpu_twin.cpp")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise CompilerMissing(f"building the CPU renderer failed:\n{' '.join(cmd)}\n{result.stderr}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library() -> ctypes.CDLL:
    """The loaded twin, built first if needed."""
    global _lib
    if _lib is None:
        path = library_path()
        if not path.exists():
            build(path)
        lib = ctypes.CDLL(str(path))
        lib.rc_render_events.restype = _I64
        lib.rc_render_events.argtypes = [_P, _P, _P, _I64, _I32, _I32, _P, _U64, _I64, _I32, _P, _I32, _I32, _I32]
        lib.rc_render_jets.restype = _I64
        lib.rc_render_jets.argtypes = [_P, _P, _P, _I64, _I32, _I32, _P, _P, _I32, _I32]
        lib.rc_augment.restype = None
        lib.rc_augment.argtypes = [_U64, _I64, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(_I32)]
        _lib = lib
    return _lib


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _check(name: str, array: np.ndarray, dtype, ndim: int) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype) or array.ndim != ndim:
        got = getattr(array, "dtype", type(array).__name__), getattr(array, "shape", None)
        raise TypeError(f"{name} must be a {ndim}-d {np.dtype(dtype)} numpy array, got {got}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _check_out(out: np.ndarray, batch: int, params: np.ndarray, channels_last: bool) -> int:
    if not isinstance(out, np.ndarray) or out.dtype not in OUT_DTYPES or not out.flags.c_contiguous:
        raise TypeError("out must be a C-contiguous float32 or uint8 numpy array")
    side, channels = int(params[0]), int(params[2])
    shape = (batch, side, side, channels) if channels_last else (batch, channels, side, side)
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the config needs {shape}")
    return OUT_DTYPES[out.dtype]


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def render_events(types, features, counts, params, out, *, seed: int = 0, index_offset: int = 0,
                  augment: bool = False, channels_last: bool = False, threads: int | None = None) -> int:
    """Draw B events into `out`; returns the number of skipped objects (NaN/inf, bad type, over cap)."""
    _check("types", types, np.int8, 2)
    _check("features", features, np.float32, 3)
    _check("counts", counts, np.int32, 1)
    _check("params", params, np.float32, 1)
    batch, slots = types.shape
    if (features.shape[:2] != (batch, slots) or features.shape[2] < KERNEL_MIN_FEATURES
            or counts.shape != (batch,)):
        raise ValueError(f"features {features.shape} / counts {counts.shape} do not match types {types.shape}")
    dtype = _check_out(out, batch, params, channels_last)
    return int(library().rc_render_events(
        _ptr(types), _ptr(features), _ptr(counts), batch, slots, features.shape[2], _ptr(params),
        int(seed) & (2**64 - 1), int(index_offset), int(augment), _ptr(out), dtype, int(channels_last),
        threads or default_threads()))


def render_jets(constituents, counts, fatjet, params, out, *, threads: int | None = None) -> int:
    """Draw B jet images into `out` (B, 1, S, S); returns the number of skipped constituents."""
    _check("constituents", constituents, np.float32, 3)
    _check("counts", counts, np.int32, 1)
    _check("fatjet", fatjet, np.float32, 2)
    _check("params", params, np.float32, 1)
    batch, slots, width = constituents.shape
    if width < KERNEL_MIN_FEATURES or counts.shape != (batch,) or fatjet.shape != (batch, FATJET_WIDTH):
        raise ValueError(f"constituents {constituents.shape}, counts {counts.shape}, fatjet {fatjet.shape} disagree")
    dtype = _check_out(out, batch, params, False)
    return int(library().rc_render_jets(_ptr(constituents), _ptr(counts), _ptr(fatjet), batch, slots, width,
                                        _ptr(params), _ptr(out), dtype, threads or default_threads()))


def augment_params(seed: int, indices) -> tuple[np.ndarray, np.ndarray]:
    """The (phi rotation [rad] float32, eta flip bool) drawn for each event index under `seed`."""
    lib = library()
    indices = np.asarray(indices, np.int64).ravel()
    delta, flip = np.zeros(len(indices), np.float32), np.zeros(len(indices), bool)
    d, f = ctypes.c_float(), _I32()
    for k, index in enumerate(indices):
        lib.rc_augment(int(seed) & (2**64 - 1), int(index), ctypes.byref(d), ctypes.byref(f))
        delta[k], flip[k] = d.value, bool(f.value)
    return delta, flip
