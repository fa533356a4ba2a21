"""The datasets the end-to-end pipelines read, each prepared from the same events, with its cost.

    events (Parquet) -> event shards (engine.data.shards)             on-the-fly pipeline
    event shards -> engine renderer -> PNG files + labels.npy          image-file pipeline (PIL)
                                    -> JPEG/PNG in WebDataset tars     DALI pipeline

Images are drawn by the engine's renderer (CPU twin, uint8 RGB, channels-last), so the image
pipelines read exactly the pictures the on-the-fly pipeline draws. Preparation is timed per stage:
reading + rendering once, then encoding + writing each image format.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.data import shards
from engine.data.generation import synthetic
from engine.data.loader import LoaderConfig, make_loader
from engine.render import render_events
from kernels.presets import RenderConfig

PROCESSES = ("ttbar", "wjets", "dy")
TAR_SAMPLES = 1000          # images per WebDataset tar


@dataclass
class ImageSet:
    """Pre-rendered images of the train split at one size."""
    size_px: int
    png_dir: Path
    labels: np.ndarray                       # (E,) int64, image i = png_dir/{i:07d}.png
    tars: list[Path]
    tar_format: str                          # "jpg" or "png" members in the tars
    seconds: dict[str, float] = field(default_factory=dict)   # render, png, tar
    bytes: dict[str, int] = field(default_factory=dict)       # png, png_allocated, tar

    @property
    def files(self) -> list[Path]:
        return [self.png_dir / f"{i:07d}.png" for i in range(len(self.labels))]


def make_events(folder: Path, per_class: int, synthetic_events: bool, seed: int = 1) -> Path:
    """Parquet events of ttbar / W+jets / Drell-Yan in folder/parquet: Pythia 8 (`python -m engine
    generate`, all cores) or, with `synthetic_events`, engine.data.generation.synthetic (seconds)."""
    out = folder / "parquet"
    if synthetic_events:
        synthetic.write_synthetic(out, "events", per_class, seed=seed)
        return out
    import os
    for process in PROCESSES:
        cmd = [sys.executable, "-m", "engine", "generate", "--process", process, "--events", str(per_class),
               "--out", str(out), "--seed", str(seed), "--workers", str(os.cpu_count() or 1), "--no-progress"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def write_event_shards(parquet: Path, out: Path) -> tuple[Path, float]:
    """Shard the events (timed: read Parquet, encode, write tars + manifest); returns (root, seconds)."""
    start = time.perf_counter()
    shards.write_shards([parquet], out, shards.ShardOptions(seed=0))
    return out, time.perf_counter() - start


def split_bytes(root: Path, split: str = "train") -> tuple[int, int]:
    """(bytes of the split's tars + indices, events in the split)."""
    data = shards.open_split(root, split)
    size = sum(s.path.stat().st_size + s.path.with_suffix(".idx").stat().st_size for s in data.shards)
    return size, data.events_readable


def train_events(root: Path, chunk: int = 1024):
    """The train split in stored order: padded batches (numpy dicts) of up to `chunk` events."""
    loader = make_loader(root, LoaderConfig(batch_size=chunk, shuffle=False), split="train")
    for batch in loader:
        yield {k: v.numpy() for k, v in batch.items()}


def render_uint8(batch: dict, cfg: RenderConfig) -> np.ndarray:
    """(B, H, W, 3) uint8 images of a padded batch (the engine's CPU twin, all cores)."""
    out = torch.empty((len(batch["counts"]), 3, cfg.size_px, cfg.size_px), dtype=torch.uint8)
    out = out.contiguous(memory_format=torch.channels_last)
    images = render_events(batch, cfg, out, dtype=torch.uint8, channels_last=True).images
    return images.permute(0, 2, 3, 1).numpy()


def encode_image(image: np.ndarray, fmt: str, jpeg_quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class TarWriter:
    """WebDataset tars of (image, class) samples with DALI index files ('v1.2 N', then per sample
    'EXT OFFSET SIZE NAME' for each component)."""

    def __init__(self, folder: Path, fmt: str, per_tar: int = TAR_SAMPLES):
        self.folder, self.fmt, self.per_tar = folder, fmt, per_tar
        self.paths: list[Path] = []
        self._tar, self._index = None, []

    def add(self, key: str, image: bytes, label: int) -> None:
        if self._tar is None or len(self._index) >= self.per_tar:
            self._open()
        parts = []
        for ext, payload in ((self.fmt, image), ("cls", np.int32(label).tobytes())):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            parts.append(f"{ext} {self._tar.offset + tarfile.BLOCKSIZE} {len(payload)} {info.name}")
            self._tar.addfile(info, io.BytesIO(payload))
        self._index.append(" ".join(parts))

    def _open(self) -> None:
        self.close()
        self.paths.append(self.folder / f"images-{len(self.paths):05d}.tar")
        self._tar = tarfile.open(self.paths[-1], "w", format=tarfile.USTAR_FORMAT)

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self.paths[-1].with_suffix(".idx").write_text(
            "\n".join([f"v1.2 {len(self._index)}"] + self._index) + "\n")
        self._tar, self._index = None, []


def prepare_images(root: Path, cfg: RenderConfig, folder: Path, tar_format: str = "jpg") -> ImageSet:
    """Render the train split once and write it as PNG files and as WebDataset tars (timed apart)."""
    png_dir, tar_dir = folder / "png", folder / "wds"
    png_dir.mkdir(parents=True)
    tar_dir.mkdir(parents=True)
    writer = TarWriter(tar_dir, tar_format)
    seconds = {"render": 0.0, "png": 0.0, "tar": 0.0}
    labels: list[int] = []
    i = 0
    tic = time.perf_counter()
    for batch in train_events(root):
        images = render_uint8(batch, cfg)
        seconds["render"] += time.perf_counter() - tic
        tic = time.perf_counter()
        for k, image in enumerate(images):
            (png_dir / f"{i + k:07d}.png").write_bytes(encode_image(image, "png"))
        labels += batch["labels"].tolist()
        seconds["png"] += time.perf_counter() - tic
        tic = time.perf_counter()
        for k, (image, label) in enumerate(zip(images, batch["labels"])):
            writer.add(f"{i + k:07d}", encode_image(image, tar_format), int(label))
        i += len(images)
        seconds["tar"] += time.perf_counter() - tic
        tic = time.perf_counter()
    writer.close()
    labels = np.asarray(labels, np.int64)
    np.save(folder / "labels.npy", labels)
    files = [png_dir / f"{k:07d}.png" for k in range(len(labels))]
    sizes = {"png": sum(f.stat().st_size for f in files),
             "png_allocated": sum(f.stat().st_blocks * 512 for f in files),
             "tar": sum(p.stat().st_size + p.with_suffix(".idx").stat().st_size for p in writer.paths)}
    return ImageSet(cfg.size_px, png_dir, labels, writer.paths, tar_format, seconds, sizes)


def check_images(root: Path, cfg: RenderConfig, images: ImageSet, n: int = 8) -> None:
    """The files hold the renderer's pictures: PNG exactly, JPEG within a small mean error; the
    float render the on-the-fly pipeline feeds the model is the uint8 picture / 255 (+- 1 step)."""
    batch = next(train_events(root, chunk=n))
    want = render_uint8(batch, cfg)
    for k in range(len(want)):
        got = np.asarray(Image.open(images.files[k]).convert("RGB"))
        assert np.array_equal(got, want[k]), f"PNG {images.files[k]} differs from the render"
        assert images.labels[k] == batch["labels"][k], "labels out of order"
    with tarfile.open(images.tars[0]) as tar:
        member = tar.extractfile(f"{0:07d}.{images.tar_format}").read()
    decoded = np.asarray(Image.open(io.BytesIO(member)).convert("RGB")).astype(np.float32)
    error = np.abs(decoded - want[0]).mean()
    assert error < 8.0, f"tar image 0 differs from the render by {error:.1f} grey levels on average"
    floats = render_events(batch, cfg, dtype=torch.float32, channels_last=True).images
    steps = (floats.permute(0, 2, 3, 1).numpy() * 255.0 - want.astype(np.float32))
    assert np.abs(steps).max() <= 1.0, "float and uint8 renders disagree"
