"""The CUDA kernels themselves, run on the CPU: event_image.cu and jet_image.cu compiled by g++
against tests/native/cuda_host.h (threads for CUDA threads, a barrier for __syncthreads, statics
for shared memory), launched as kernels.gpu launches them, against the CPU twin, bit for bit, in
every dtype and layout; with AddressSanitizer on bad input and ThreadSanitizer on the block's
synchronisation. This covers what the twin cannot: the kernels' indexing, stores and barriers.
The same comparison on a real GPU is tests/test_render_gpu.py."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.render import render_events, render_jets
from kernels.gpu import BLOCK
from kernels.presets import ObjectStyle, RenderConfig, preset
from tests.reference_render import jets, make_events

NATIVE = Path(__file__).parent / "native"
FLAGS = ["-std=c++17", "-pthread", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Werror",
         "-Wno-unknown-pragmas"]
BUILDS = {"plain": ["-O2"], "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
          "tsan": ["-O1", "-g", "-fsanitize=thread"]}
DTYPES = {torch.float32: (0, np.float32), torch.bfloat16: (1, np.uint16), torch.float16: (2, np.float16),
          torch.uint8: (3, np.uint8)}


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """Builds of kernel_host.cpp by name; a sanitizer build the toolchain lacks is None."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not on PATH")
    folder = tmp_path_factory.mktemp("kernel_host")
    built = {}
    for name, flags in BUILDS.items():
        exe = folder / name
        result = subprocess.run([compiler, *FLAGS, *flags, "-o", str(exe), str(NATIVE / "kernel_host.cpp")],
                                capture_output=True, text=True)
        if result.returncode != 0 and name == "plain":
            pytest.fail(f"kernel_host does not build:\n{result.stderr}")
        built[name] = exe if result.returncode == 0 else None
    return built


def run_host(exe, args, folder: Path, inputs: dict) -> str:
    paths = []
    for name, array in inputs.items():
        path = folder / f"{name}.bin"
        np.ascontiguousarray(array).tofile(path)
        paths.append(str(path))
    result = subprocess.run([str(exe), *map(str, args), *paths, str(folder / "out.bin")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Sanitizer" not in result.stderr, result.stderr
    return result.stdout


def read_out(folder: Path, dtype: torch.dtype, shape) -> torch.Tensor:
    raw = np.fromfile(folder / "out.bin", DTYPES[dtype][1]).reshape(shape)
    if dtype == torch.bfloat16:
        return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(raw)


def emulate_events(exe, folder, batch, cfg, dtype=torch.float32, channels_last=False, augment=False,
                   seed=0, index_offset=0, grid=None, block=BLOCK):
    """(images as NCHW, skipped) from the event kernel launched like kernels.gpu.render_events."""
    types, features, counts = batch["types"], batch["features"], batch["counts"]
    B, N, F = features.shape
    C, S = cfg.channels, cfg.size_px
    args = ["event", DTYPES[dtype][0], C, int(channels_last), grid or B, block, B, N, F, seed, index_offset,
            int(augment)]
    out = run_host(exe, args, folder, {"types": types, "counts": counts, "features": features,
                                       "params": cfg.param_table()})
    images = read_out(folder, dtype, (B, S, S, C) if channels_last else (B, C, S, S))
    return (images.permute(0, 3, 1, 2) if channels_last else images), int(out)


def emulate_jets(exe, folder, batch, cfg, dtype=torch.float32, grid=None, block=BLOCK):
    cons, counts, fatjet = batch["constituents"], batch["counts"], batch["fatjet"]
    B, M, F = cons.shape
    args = ["jet", DTYPES[dtype][0], grid or B, block, B, M, F]
    out = run_host(exe, args, folder, {"constituents": cons, "counts": counts, "fatjet": fatjet,
                                       "params": cfg.param_table()})
    return read_out(folder, dtype, (B, 1, cfg.size_px, cfg.size_px)), int(out)


def bad_events():
    """Events with every kind of bad input: NaN/inf kinematics, eta far off the canvas, a count
    above the slots, a negative count, no objects, an unknown type code, more objects than the
    kernel's per-event cap (64)."""
    batch = make_events(10, seed=21, cap=80)
    types, feats, counts = batch["types"], batch["features"], batch["counts"]
    feats[0, 0, 0] = np.nan
    feats[0, 1, 2] = np.inf
    feats[1, 0, 1], feats[1, 1, 1] = 40.0, -1e30
    counts[2] = 500
    counts[3] = -7
    counts[4] = 0
    types[5, 0] = 9
    types[6, :] = 3
    feats[6, :, 0] = np.linspace(20, 400, 80)
    feats[6, :, 1] = np.linspace(-2.5, 2.5, 80)
    counts[6] = 80
    return batch


def twin_bits(images: torch.Tensor) -> torch.Tensor:
    return images.view(torch.int16) if images.dtype == torch.bfloat16 else images


@pytest.mark.parametrize("name", ["madrazo2017", "ochoa2023", "channels"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_event_kernel_matches_twin(host, tmp_path, name, dtype, channels_last):
    cfg, batch = preset(name, 40), make_events(12, seed=11)
    batch["features"][3, 0, 0] = np.nan                         # one skipped object
    want = render_events(batch, cfg, dtype=dtype, augment=True, seed=5, index_offset=100)
    got, skipped = emulate_events(host["plain"], tmp_path, batch, cfg, dtype, channels_last, augment=True,
                                  seed=5, index_offset=100)
    assert torch.equal(twin_bits(got), twin_bits(want.images))
    assert skipped == int(want.skipped) == 1


def test_event_kernel_one_channel_and_other_block_sizes(host, tmp_path):
    one = ObjectStyle(channel=0)
    cfg = RenderConfig(size_px=36, channels=1, background=(0.0,), electron=one, muon=one, jet=one, bjet=one,
                       met=one)
    batch = make_events(6, seed=3)
    want = render_events(batch, cfg, dtype=torch.float16).images
    for block in (1, 33):                                       # other strides of the pixel loop
        got, _ = emulate_events(host["plain"], tmp_path, batch, cfg, torch.float16, block=block)
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_jet_kernel_matches_twin(host, tmp_path, dtype):
    cfg, batch = preset("jet", 32), jets(8, 300)
    batch["counts"][2] = 0
    batch["counts"][3] = 40
    batch["constituents"][4, 5, 1] = np.nan                     # one skipped constituent
    batch["constituents"][5, 6, 0] = np.float32(1e-40)          # subnormal pt: 0 under -ftz=true
    want = render_jets(batch, cfg, dtype=dtype)
    got, skipped = emulate_jets(host["plain"], tmp_path, batch, cfg, dtype)
    assert torch.equal(twin_bits(got), twin_bits(want.images))
    assert skipped == int(want.skipped) == 6 * (300 - 256) + 1   # over the 256 cap, and the NaN


def test_bad_input_stays_in_bounds_under_address_sanitizer(host, tmp_path):
    if host["asan"] is None:
        pytest.skip("g++ has no AddressSanitizer here")
    cfg, batch = preset("madrazo2017", 48), bad_events()
    want = render_events(batch, cfg, augment=True, seed=9)
    got, skipped = emulate_events(host["asan"], tmp_path, batch, cfg, augment=True, seed=9, grid=13, block=64)
    assert torch.equal(got, want.images)
    assert skipped == int(want.skipped) > 0
    jet_cfg, jet_batch = preset("jet", 25), jets(4, 300)
    jet_batch["counts"][1], jet_batch["fatjet"][2, 1] = 1000, np.nan
    got, skipped = emulate_jets(host["asan"], tmp_path, jet_batch, jet_cfg, grid=6, block=64)
    assert torch.equal(got, render_jets(jet_batch, jet_cfg).images)


def test_block_synchronisation_is_race_free_under_thread_sanitizer(host, tmp_path):
    if host["tsan"] is None:
        pytest.skip("g++ has no ThreadSanitizer here")
    cfg, batch = preset("channels", 24), make_events(4, seed=8)
    got, _ = emulate_events(host["tsan"], tmp_path, batch, cfg, torch.uint8, channels_last=True, block=16)
    assert torch.equal(got, render_events(batch, cfg, dtype=torch.uint8).images)
    jet_cfg, jet_batch = preset("jet", 25), jets(3, 60)
    got, _ = emulate_jets(host["tsan"], tmp_path, jet_batch, jet_cfg, block=16)
    assert torch.equal(got, render_jets(jet_batch, jet_cfg).images)


@pytest.mark.parametrize("mode", ["f16", "bf16"])
def test_kernel_half_conversions_round_like_torch(host, tmp_path, mode):
    rng = np.random.default_rng(4)
    values = np.concatenate([
        np.float32([0, -0.0, 1, 0.5, 65504, 65519.99, 65520, 1e6, -1e6, np.inf, -np.inf, 2.0**-24, 2.0**-25,
                    1.5 * 2.0**-25, 2.0**-14, 2.0**-14 * (1 - 2.0**-11), 3 * 2.0**-25]),
        np.exp(rng.uniform(-20, 12, 20000)).astype(np.float32) * rng.choice([-1, 1], 20000).astype(np.float32),
        rng.uniform(0, 1, 20000).astype(np.float32),
    ])
    path = tmp_path / "in.bin"
    values.tofile(path)
    result = subprocess.run([str(host["plain"]), mode, str(path), str(tmp_path / "out.bin")], capture_output=True)
    assert result.returncode == 0, result.stderr
    got = np.fromfile(tmp_path / "out.bin", np.uint16)
    dtype = torch.float16 if mode == "f16" else torch.bfloat16
    want = torch.from_numpy(values).to(dtype).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got, want)
