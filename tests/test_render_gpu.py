"""GPU renderers against the CPU twin: every dtype and layout, jets, stream ordering, memcheck.
All tests need a CUDA GPU (marked `gpu`, skipped without one)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.render import render_events, render_jets
from kernels.presets import preset
from tests.reference_render import jets, make_events

pytestmark = pytest.mark.gpu

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.uint8)


def on_gpu(batch):
    return {k: torch.from_numpy(v).cuda() for k, v in batch.items()}


@pytest.mark.parametrize("name", ["madrazo2017", "ochoa2023", "channels"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_event_kernel_matches_twin(name, dtype, channels_last):
    cfg, batch = preset(name, 96), make_events(64, seed=11)
    batch["features"][3, 0, 0] = np.nan                         # one skipped object
    want = render_events(batch, cfg, dtype=dtype, augment=True, seed=5, index_offset=100)
    got = render_events(on_gpu(batch), cfg, dtype=dtype, channels_last=channels_last, augment=True,
                        seed=5, index_offset=100)
    assert got.images.is_contiguous(memory_format=torch.channels_last) == channels_last or cfg.channels == 1
    assert torch.equal(got.images.cpu(), want.images)
    assert int(got.skipped) == int(want.skipped) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_jet_kernel_matches_twin(dtype):
    cfg, batch = preset("jet", 64), jets(16, 40)
    batch["counts"][2] = 0
    batch["constituents"][5, 6, 0] = np.float32(1e-40)          # subnormal pt: both sides flush it
    want = render_jets(batch, cfg, dtype=dtype)
    got = render_jets(on_gpu(batch), cfg, dtype=dtype)
    assert torch.equal(got.images.cpu(), want.images)


def test_writes_into_a_preallocated_tensor_without_copy():
    cfg, batch = preset("madrazo2017"), make_events(8)
    out = torch.full((8, 3, 224, 224), 7, dtype=torch.bfloat16, device="cuda")
    got = render_events(on_gpu(batch), cfg, out=out)
    assert got.images.data_ptr() == out.data_ptr() and (out <= 1).all()


def test_launch_follows_torch_current_stream():
    cfg, batch = preset("madrazo2017", 128), make_events(256, seed=12)
    want = render_events(batch, cfg, dtype=torch.bfloat16).images
    source = on_gpu(batch)
    render_events(source, cfg, dtype=torch.bfloat16)            # the parameter table's one-time upload
    stream = torch.cuda.Stream()
    features = torch.zeros_like(source["features"])
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)                          # the inputs arrive late on this stream
        big = torch.randn(4096, 4096, device="cuda")
        features.copy_(source["features"] + (big @ big).sum() * 0)
        got = render_events({**source, "features": features}, cfg, dtype=torch.bfloat16).images
        result = got.clone()
    torch.cuda.synchronize()
    assert torch.equal(result.cpu(), want)


@pytest.mark.parametrize("check", ["memcheck", "racecheck"])
def test_compute_sanitizer_is_clean(tmp_path, check):
    """memcheck: no out-of-bounds access on bad input; racecheck: the block's shared memory is
    synchronised (both kernels, every image dtype that takes another store path)."""
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        pytest.skip("compute-sanitizer not on PATH")
    script = (
        "import torch, numpy as np\n"
        "from engine.render import render_events, render_jets\n"
        "from kernels.presets import preset\n"
        "from tests.reference_render import make_events, jets\n"
        "b = make_events(16); b['features'][0, 0, 1] = 1e9; b['counts'][1] = 999\n"
        "g = {k: torch.from_numpy(v).cuda() for k, v in b.items()}\n"
        "for dt in (torch.bfloat16, torch.uint8):\n"
        "    render_events(g, preset('madrazo2017', 64), dtype=dt, channels_last=True, augment=True)\n"
        "    render_events(g, preset('channels', 64), dtype=dt)\n"
        "j = {k: torch.from_numpy(v).cuda() for k, v in jets(4, 300).items()}\n"
        "render_jets(j, preset('jet', 32))\n"
        "torch.cuda.synchronize()\n")
    result = subprocess.run([tool, "--tool", check, "--error-exitcode", "9", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in result.stdout
