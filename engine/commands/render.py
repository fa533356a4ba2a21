"""`python -m engine render`: draw the first N events (or jets) of Parquet files or shards as images.

Shards are read through the loader in their stored order (no shuffle), from `--split` (train).

Writes one file per event, in order (000000.png or 000000.npy), and contact_sheet.png: a grid of
the first images with each event's class under it. PNG is for looking: RGB presets as drawn,
the 5-channel preset in false colour, jet images scaled to their brightest pixel. NPY holds the
exact float32 (C, H, W) values the training loop would see. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from engine.data import objects
from engine.data.parquet_io import atomic_path, iter_batches, list_parquet, open_parquet
from engine.errors import InputError
from engine.render import render_events, render_jets
from kernels.presets import PRESETS, RenderConfig, preset

GAP_PX = 2
"""Grey gap between the tiles of the contact sheet (the event images have white backgrounds)."""
SHEET_MAX = 64
LABEL_PX = 14
FALSE_COLOURS = np.array([(0, 0, 255), (0, 160, 0), (255, 125, 125), (255, 0, 0), (255, 255, 255)], np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True,
                        help="Parquet file, folder of Parquet files, or a shard folder (made by `shard`)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"),
                        help="the split to draw from when --input is a shard folder")
    parser.add_argument("--n", type=int, default=16, help="number of events to draw (default 16)")
    parser.add_argument("--preset", default="madrazo2017", choices=sorted(PRESETS))
    parser.add_argument("--format", default="png", choices=("png", "npy"))
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--augment", action="store_true", help="random phi rotation and eta flip per event")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", required=True, help="output folder")


def read_first(path: str, n: int, kind: str) -> tuple[pa.Table, list[str]]:
    """The first `n` rows of the Parquet file(s) at `path`, in order, and the class names."""
    columns = objects.EVENT_COLUMNS if kind == "events" else objects.FATJET_COLUMNS
    tables, rows, class_names = [], 0, None
    for file in list_parquet(path):
        _, meta = open_parquet(file)
        if meta.get("kind") != kind:
            raise InputError(file, f"holds {meta.get('kind')}, this preset draws {kind}")
        class_names = class_names or list(meta.get("class_names", []))
        for batch in iter_batches(file, columns):
            tables.append(pa.Table.from_batches([batch]).slice(0, n - rows))
            rows += tables[-1].num_rows
            if rows >= n:
                return pa.concat_tables(tables), class_names
    if rows == 0:
        raise InputError(path, "no events to draw")
    return pa.concat_tables(tables), class_names


def first_padded(path: str, n: int, kind: str, split: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The first `n` events of Parquet files or a shard folder as padded arrays (objects.py layout)."""
    root = Path(path)
    if (root / "manifest.json").is_file():
        from engine.data.loader import LoaderConfig, make_loader
        from engine.data.shards import load_manifest
        manifest = load_manifest(root)
        if manifest["kind"] != kind:
            raise InputError(path, f"holds {manifest['kind']}, this preset draws {kind}")
        loader = make_loader(root, LoaderConfig(batch_size=n, shuffle=False), split=split)
        batch = next(iter(loader), None)
        if batch is None:
            raise InputError(path, f"split {split} has no events to draw")
        return {k: v.numpy() for k, v in batch.items()}, manifest["class_names"]
    table, class_names = read_first(path, n, kind)
    padded = objects.pad_events(table) if kind == "events" else objects.pad_fatjets(table)
    return padded, class_names


def draw(padded: dict[str, np.ndarray], cfg: RenderConfig, args) -> tuple[torch.Tensor, int]:
    """(B, C, H, W) float32 images and the number of skipped objects."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but no CUDA device is available")
    if cfg.kind == "event":
        batch = {k: torch.from_numpy(padded[k]).to(device) for k in ("types", "features", "counts")}
        result = render_events(batch, cfg, seed=args.seed, augment=args.augment)
    else:
        batch = {k: torch.from_numpy(padded[k]).to(device) for k in ("constituents", "counts", "fatjet")}
        result = render_jets(batch, cfg)
    return result.images.cpu(), int(result.skipped)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float image -> (H, W, 3) uint8 for viewing."""
    if image.shape[0] == 3:
        rgb = image.transpose(1, 2, 0)
    elif image.shape[0] == 5:
        rgb = np.einsum("chw,ck->hwk", image, FALSE_COLOURS / 255.0)
    else:
        peak = float(image.max())
        rgb = np.repeat(np.sqrt(image[0] / peak if peak > 0 else image[0])[..., None], 3, axis=2)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: Path, image: np.ndarray, fmt: str) -> None:
    from PIL import Image
    with atomic_path(path) as tmp:
        if fmt == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, image)
        else:
            Image.fromarray(to_rgb(image)).save(tmp, format="PNG")


def contact_sheet(path: Path, images: np.ndarray, captions: list[str]) -> None:
    """A grid of the first SHEET_MAX images with a caption under each, written atomically."""
    from PIL import Image, ImageDraw
    count = min(len(images), SHEET_MAX)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    side = min(images.shape[-1], 224)
    cell_w, cell_h = side + GAP_PX, side + LABEL_PX + GAP_PX
    sheet = Image.new("RGB", (cols * cell_w + GAP_PX, rows * cell_h + GAP_PX), (150, 150, 150))
    pen = ImageDraw.Draw(sheet)
    for k in range(count):
        x, y = GAP_PX + (k % cols) * cell_w, GAP_PX + (k // cols) * cell_h
        tile = Image.fromarray(to_rgb(images[k])).resize((side, side))
        sheet.paste(tile, (x, y))
        pen.rectangle((x, y + side, x + side - 1, y + side + LABEL_PX - 1), fill="white")
        pen.text((x + 3, y + side + 1), captions[k], fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def run(args) -> int:
    if args.n < 1:
        raise InputError("--n", f"must be at least 1, got {args.n}")
    try:
        cfg = preset(args.preset, args.size)
    except ValueError as exc:
        raise InputError("--size", str(exc)) from None
    padded, class_names = first_padded(args.input, args.n, "fatjets" if cfg.kind == "jet" else "events",
                                       args.split)
    images, skipped = draw(padded, cfg, args)
    labels = padded["labels"]
    images = images.numpy()
    out = Path(args.out)
    for k, image in enumerate(images):
        write_image(out / f"{k:06d}.{args.format}", image, args.format)
    captions = [class_names[i] if 0 <= i < len(class_names) else str(i) for i in labels]
    contact_sheet(out / "contact_sheet.png", images, [f"{k}: {c}" for k, c in enumerate(captions)])
    print(f"{len(images)} {cfg.kind} images ({cfg.name}, {cfg.size_px} px) -> {out}"
          + (f"; {skipped} objects skipped (NaN/inf or over the cap)" if skipped else ""))
    return 0
