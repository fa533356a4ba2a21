"""Benchmark of the event-image renderers: CPU twin, the 2017 matplotlib renderer, and the GPU.

    python -m benchmarks.render [--quick] --out FILE.json

Records (JSON list of {"name", "value", "unit", "params"}):
  cpu_images_per_s_per_core   224 x 224 x 3 uint8 channels-last, madrazo2017, one thread (CPU time)
  cpu_images_per_s            the same with every core (wall clock)
  matplotlib_images_per_s     a re-implementation of the 2017 renderer: one matplotlib figure per
                              event, Ellipse patches of width log_1.1(pt) px, linewidth 4 at 56 dpi,
                              saved as JPEG to memory (the anchor: about 80 images/s)
  gpu_copy_bytes_per_s        (with a GPU) a 1 GiB device-to-device copy: bytes read + written per s
  gpu_images_per_s, gpu_fraction_of_copy_bandwidth   (with a GPU) bf16 and uint8, batch 256 and
                              1024: the kernel's bytes written per second over the copy's bytes read
                              + written per second, measured in the same run (the copy's traffic is
                              what the memory sustains; the kernel only writes, so 1.0 is its ceiling)
Events are seeded and realistic: one lepton, 4-6 jets of 30-300 GeV (20% b-tagged), MET.
A correctness check runs first (threads agree; GPU equals the CPU twin), then warm-up, then timing.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.render import render_events
from kernels import cpu
from kernels.presets import preset

COLOURS = {1: (0, 0, 1), 2: (0, 128 / 255, 0), 3: (1, 125 / 255, 125 / 255), 4: (1, 0, 0), 5: (0, 0, 0)}


def make_events(n: int, seed: int = 0, cap: int = 16) -> dict[str, np.ndarray]:
    """Seeded events: one lepton (e or mu), 4-6 jets (30-300 GeV, 20% b), MET; padded layout."""
    rng = np.random.default_rng(seed)
    types = np.zeros((n, cap), np.int8)
    feats = np.zeros((n, cap, 6), np.float32)
    njets = rng.integers(4, 7, n)
    counts = (njets + 2).astype(np.int32)
    slot = np.arange(cap)[None, :]
    types[:, 0] = rng.choice([1, 2], n)
    is_jet = (slot >= 1) & (slot <= njets[:, None])
    types[is_jet] = np.where(rng.random(is_jet.sum()) < 0.2, 4, 3)
    types[np.arange(n), njets + 1] = 5
    real = slot < counts[:, None]
    feats[..., 0] = np.where(is_jet, rng.uniform(30, 300, (n, cap)), rng.uniform(20, 150, (n, cap)))
    feats[..., 1] = np.where(types == 5, 0, rng.uniform(-2.4, 2.4, (n, cap)))
    feats[..., 2] = rng.uniform(-np.pi, np.pi, (n, cap))
    feats[..., 5] = np.where(types <= 2, rng.choice([-1.0, 1.0], (n, cap)), 0)
    feats[~real] = 0
    types[~real] = 0
    return {"types": types, "features": feats, "counts": counts}


def record(name: str, value: float, unit: str, **params) -> dict:
    return {"name": name, "value": value, "unit": unit, "params": params}


def best_rate(fn, items: int, repeats: int, clock=time.perf_counter) -> float:
    """Items per second of the fastest of `repeats` runs (after one warm-up run)."""
    fn()
    best = min(_timed(fn, clock) for _ in range(repeats))
    return items / best


def _timed(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


def cpu_records(n: int, repeats: int) -> list[dict]:
    cfg, batch = preset("madrazo2017"), make_events(n, seed=1)
    params = cfg.param_table()
    out = np.empty((n, 224, 224, 3), np.uint8)

    def run(threads):
        return lambda: cpu.render_events(batch["types"], batch["features"], batch["counts"], params, out,
                                         channels_last=True, threads=threads)
    check = out.copy()
    run(1)()
    check[:] = out
    run(cpu.default_threads())()
    assert np.array_equal(check, out), "CPU twin differs between one and all threads"
    assert (out < 255).any(axis=(1, 2, 3)).all(), "an event image came out blank"
    params_ = {"size_px": 224, "channels": 3, "dtype": "uint8", "layout": "channels_last", "batch": n}
    # one thread: CPU time of the process, so that other work on a shared machine does not count
    per_core = best_rate(run(1), n, repeats, clock=time.process_time)
    return [record("cpu_images_per_s_per_core", per_core, "images/s", threads=1, clock="process_time", **params_),
            record("cpu_images_per_s", best_rate(run(cpu.default_threads()), n, repeats), "images/s",
                   threads=cpu.default_threads(), **params_)]


def matplotlib_image(types, feats, count) -> bytes:
    """The 2017 renderer: one figure per event, unfilled ellipses of width log_1.1(pt) px, JPEG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse
    fig = plt.figure(figsize=(4, 4), dpi=56)                       # 224 x 224 px
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-3, 3)
    ax.set_ylim(-math.pi, math.pi)
    ax.axis("off")
    for k in range(count):
        t, (pt, eta, phi) = int(types[k]), feats[k, :3]
        width_px = math.log(pt) / math.log(1.1)                  # negative below 1 GeV, as in 2017
        ax.add_artist(Ellipse((0.0 if t == 5 else eta, phi), width_px * 6 / 224, width_px * 2 * math.pi / 224,
                              fill=False, linewidth=4, color=COLOURS[t]))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=56)
    plt.close(fig)
    return buffer.getvalue()


def matplotlib_records(n: int) -> list[dict]:
    batch = make_events(n, seed=2)
    first = matplotlib_image(batch["types"][0], batch["features"][0], batch["counts"][0])
    assert first[:2] == b"\xff\xd8", "matplotlib did not produce a JPEG"

    def run():
        for b in range(n):
            matplotlib_image(batch["types"][b], batch["features"][b], batch["counts"][b])
    return [record("matplotlib_images_per_s", best_rate(run, n, 1), "images/s", size_px=224, format="jpeg",
                   batch=n)]


def gpu_time(fn, iters: int) -> float:
    """Seconds per call, timed with CUDA events after a warm-up."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / iters


def copy_rate() -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (freed on return)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / gpu_time(lambda: dst.copy_(src), 20)


def gpu_records(batches: tuple[int, ...], iters: int) -> list[dict]:
    cfg = preset("madrazo2017")
    copy_bytes_per_s = copy_rate()
    records = [record("gpu_copy_bytes_per_s", copy_bytes_per_s, "bytes/s", bytes=1 << 30,
                      counted="read + written", device=torch.cuda.get_device_name())]
    for dtype in (torch.bfloat16, torch.uint8):
        for n in batches:
            host = make_events(n, seed=3)
            batch = {k: torch.from_numpy(v).cuda() for k, v in host.items()}
            out = torch.empty((n, 3, 224, 224), dtype=dtype, device="cuda").contiguous(
                memory_format=torch.channels_last)
            got = render_events(batch, cfg, out=out, augment=True, seed=4).images
            want = render_events(host, cfg, dtype=dtype, augment=True, seed=4).images
            assert torch.equal(got.cpu(), want), f"GPU differs from the CPU twin ({dtype}, batch {n})"
            seconds = gpu_time(lambda b=batch, o=out: render_events(b, cfg, out=o, augment=True, seed=4), iters)
            written = out.numel() * out.element_size() / seconds
            params = {"dtype": str(dtype).replace("torch.", ""), "batch": n, "size_px": 224,
                      "layout": "channels_last", "device": torch.cuda.get_device_name()}
            records += [record("gpu_images_per_s", n / seconds, "images/s", **params),
                        record("gpu_fraction_of_copy_bandwidth", written / copy_bytes_per_s, "ratio", **params)]
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", required=True, help="JSON file for the records")
    args = parser.parse_args(argv)
    records = cpu_records(400 if args.quick else 4000, 2 if args.quick else 3)
    records += matplotlib_records(10 if args.quick else 100)
    if torch.cuda.is_available():
        records += gpu_records((256,) if args.quick else (256, 1024), 10 if args.quick else 50)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    for r in records:
        extra = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k in ("dtype", "batch", "threads"))
        print(f"{r['name']:34s} {r['value']:>14.4g} {r['unit']:10s} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
