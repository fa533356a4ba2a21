"""The CUDA sources compile without a GPU: nvcc to cubin, NVRTC (CuPy's compiler) to PTX with
every kernel the launcher names, and the shared header as plain C++ with warnings as errors."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from kernels import gpu

HERE = gpu.HERE


@pytest.mark.parametrize("name", ["event_image.cu", "jet_image.cu"])
def test_nvcc_compiles(tmp_path, name):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH")
    cmd = [nvcc, "-arch=sm_90", "-cubin", "-std=c++17", "-fmad=false", "-Werror", "all-warnings",
           "-o", str(tmp_path / "k.cubin"), str(HERE / name)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.cubin").stat().st_size > 10_000


def test_nvrtc_compiles_the_module():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    try:
        prog = nvrtc.createProgram(gpu.source(), "render.cu", [], [])
    except Exception as exc:            # no libnvrtc on this machine
        pytest.skip(f"NVRTC unavailable: {exc}")
    names = [gpu._event_name(dt, c) for dt in gpu.DTYPES.values() for c in gpu.EVENT_CHANNELS]
    names += [gpu._jet_name(dt) for dt in gpu.DTYPES.values()]
    for name in names:
        nvrtc.addNameExpression(prog, name)
    try:
        nvrtc.compileProgram(prog, [*gpu.NVRTC_OPTIONS, "--gpu-architecture=compute_90"])
    except Exception:
        pytest.fail(nvrtc.getProgramLog(prog))
    assert all(nvrtc.getLoweredName(prog, n).startswith("_Z") for n in names)
    assert b".entry" in nvrtc.getPTX(prog)


def test_header_is_plain_cpp(tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not on PATH")
    cmd = [gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fopenmp", "-fsyntax-only", str(HERE / "cpu_twin.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
