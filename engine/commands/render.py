"""`python -m engine render`: draw the first N events (or jets) of Parquet files or shards as images.

`--input` is Parquet (a file or a folder) or shards (the root, read from `--split`, or one split
folder), read in stored order (no shuffle).

Writes one file per event, in order (000000.png or 000000.npy), and contact_sheet.png: one row per
class, each tile on eta/phi axes and titled with its event's (run, lumi, event), with a legend of
the object types' colours. PNG is for looking: RGB presets as drawn, the 5-channel preset in false
colour, jet images scaled to their brightest pixel. NPY holds the exact float32 (C, H, W) values
the training loop would see. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from engine.data import objects
from engine.data.canonical.parquet_io import iter_batches, list_parquet, open_parquet
from engine.data.shards import is_shard_path, locate_split
from engine.errors import InputError
from engine.files import atomic_path, sweep_temporaries
from engine.render import render_events, render_jets
from kernels.presets import PRESETS, RenderConfig, preset

SHEET_MAX = 64
IDENTITY = ("run", "lumi", "event")
FALSE_COLOURS = np.array([(0, 0, 255), (0, 160, 0), (255, 125, 125), (255, 0, 0), (255, 255, 255)], np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="Parquet file, folder of Parquet files, or a shard "
                        "folder (made by `shard`) or one of its split folders")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="the split to draw from when --input is a shard root (default: train)")
    parser.add_argument("--n", type=int, default=16, help="number of events to draw (of each class with --per-class)")
    parser.add_argument("--per-class", action="store_true",
                        help="draw the first N events of each class (equal rows on the contact sheet)")
    parser.add_argument("--preset", default="madrazo2017", choices=sorted(PRESETS), help="how to draw")
    parser.add_argument("--format", default="png", choices=("png", "npy"),
                        help="png to look at, npy for the exact float32 values")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--augment", action="store_true", help="random phi rotation and eta flip per event")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to draw")
    parser.add_argument("--out", required=True, help="output folder")


def _pick(keys: list, quota: dict, n: int) -> np.ndarray:
    """Indices of the events (class `keys[i]`, or None for all alike) still under `n` of their key;
    counts them into `quota`."""
    picked = []
    for i, key in enumerate(keys):
        if quota.get(key, 0) < n:
            quota[key] = quota.get(key, 0) + 1
            picked.append(i)
    return np.array(picked, np.int64)


def read_first(path: str, n: int, kind: str, per_class: bool = False) -> pa.Table:
    """The first `n` rows (of each process with `per_class`) of the Parquet file(s) at `path`, in
    order, with process, run, lumi, event."""
    columns = (objects.EVENT_COLUMNS if kind == "events" else objects.FATJET_COLUMNS) + ["process", *IDENTITY]
    tables, quota = [], {}
    for file in list_parquet(path):
        _, meta = open_parquet(file)
        if meta.get("kind") != kind:
            raise InputError(file, f"holds {meta.get('kind')}, this preset draws {kind}")
        wanted = meta.get("class_names") if per_class else [None]
        for batch in iter_batches(file, columns):
            if all(quota.get(c, 0) >= n for c in wanted):
                break
            table = pa.Table.from_batches([batch])
            keys = table.column("process").to_pylist() if per_class else [None] * table.num_rows
            tables.append(table.take(pa.array(_pick(keys, quota, n))))
        if not per_class and quota.get(None, 0) >= n:
            break
    if not sum(quota.values()):
        raise InputError(path, "no events to draw")
    return pa.concat_tables(tables)


def first_padded(path: str, n: int, kind: str, split: str | None,
                 per_class: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """The first `n` events (of each class with `per_class`) of Parquet files or a shard split as
    padded arrays (objects.py layout), with their run, lumi, event where known."""
    if is_shard_path(path):
        return _first_from_shards(path, n, kind, split, per_class)
    table = read_first(path, n, kind, per_class)
    padded = objects.pad_events(table) if kind == "events" else objects.pad_fatjets(table)
    padded.update({c: table.column(c).to_numpy() for c in IDENTITY})
    # files label their events by their own class lists: name classes by process, in order of appearance
    processes = table.column("process").to_pylist()
    class_names = list(dict.fromkeys(processes))
    padded["labels"] = np.array([class_names.index(p) for p in processes], np.int64)
    return padded, class_names


def _first_from_shards(path: str, n: int, kind: str, split: str | None, per_class: bool):
    from engine.data.loader import LoaderConfig, make_loader
    from engine.data.shards import load_manifest, read_identity
    root, split = locate_split(path, split, default="train")
    manifest = load_manifest(root)
    if manifest["kind"] != kind:
        raise InputError(path, f"holds {manifest['kind']}, this preset draws {kind}")
    counts = manifest["splits"][split]["events_per_class"]
    want = dict(enumerate(counts)) if per_class else {None: sum(counts)}
    loader = make_loader(root, LoaderConfig(batch_size=1024 if per_class else n, shuffle=False), split=split)
    parts, quota = [], {}
    for batch in loader:
        labels = batch["labels"].numpy()
        picked = _pick(labels.tolist() if per_class else [None] * len(labels), quota, n)
        parts.append({k: v.numpy()[picked] for k, v in batch.items() if v.ndim and len(v) == len(labels)})
        if all(quota.get(c, 0) >= min(n, have) for c, have in want.items()):
            break
    if not sum(quota.values()):
        raise InputError(path, f"split {split} has no events to draw")
    padded = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ids = read_identity(root, split)
    if ids is None:
        print(f"warning: {root / split}: the shards carry no event identity (written before splits had "
              "identity.parquet); the contact sheet shows none", file=sys.stderr)
    else:
        padded.update({c: ids[c][padded["index"]] for c in IDENTITY})
    return padded, manifest["class_names"]


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
    with atomic_path(path, sweep=False) as tmp:      # the folder was swept once (run)
        if fmt == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, image)
        else:
            Image.fromarray(to_rgb(image)).save(tmp, format="PNG")


def legend_entries(cfg: RenderConfig) -> list[tuple[str, tuple[float, float, float]]]:
    """(object types, RGB colour in 0..1) as drawn by an event preset; types drawn alike share one."""
    entries: dict[tuple[float, ...], list[str]] = {}
    for name, label in (("electron", "electron"), ("muon", "muon"), ("jet", "jet"), ("bjet", "b-jet"),
                        ("met", "MET (at $\\eta$ = 0)")):
        style = getattr(cfg, name)
        if style.max_count == 0:
            continue
        rgb = FALSE_COLOURS[style.channel] if style.channel >= 0 else np.asarray(style.colour, np.float32)
        entries.setdefault(tuple(float(c) / 255.0 for c in rgb), []).append(label)
    return [(", ".join(labels), colour) for colour, labels in entries.items()]


def sheet_layout(labels: np.ndarray, limit: int = SHEET_MAX) -> list[tuple[int, list[int]]]:
    """(class, indices of its first events, in order) per class present: every class gets a row,
    the rows the same number of tiles (at most), `limit` tiles in all at most."""
    classes = np.unique(labels)
    per_row = max(1, limit // max(len(classes), 1))
    return [(int(c), np.flatnonzero(labels == c)[:per_row].tolist()) for c in classes]


def contact_sheet(path: Path, images: np.ndarray, padded: dict, class_names: list[str], cfg: RenderConfig,
                  title: str) -> None:
    """One row per class of the first SHEET_MAX images on eta/phi axes, each titled (run, lumi, event),
    with a legend of the object colours; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    layout = sheet_layout(padded["labels"])
    cols = max(len(idx) for _, idx in layout)
    entries = legend_entries(cfg) if cfg.kind == "event" else []
    ncol = min(len(entries), max(2, cols))
    legend_in = 0.3 * math.ceil(len(entries) / ncol) + 0.1 if entries else 0.0
    height = 1.3 + 1.95 * len(layout) + legend_in
    fig, axes = plt.subplots(len(layout), cols, figsize=(1.2 + 1.75 * max(cols, 2), height), squeeze=False)
    span = cfg.eta_max if cfg.kind == "event" else cfg.jet_range
    extent = (-span, span, -np.pi, np.pi) if cfg.kind == "event" else (-span, span, -span, span)
    for row, (label, idx) in enumerate(layout):
        for col, ax in enumerate(axes[row]):
            if col >= len(idx):
                ax.axis("off")
                continue
            bottom = all(col >= len(later) for _, later in layout[row + 1:])
            _tile(ax, images[idx[col]], extent, padded, idx[col], cfg.kind, bottom)
            if col == 0:
                name = class_names[label] if 0 <= label < len(class_names) else str(label)
                ax.set_ylabel(f"{name}\n" + ("$\\phi$ [rad]" if cfg.kind == "event" else "$\\Delta\\phi'$"),
                              fontsize=8)
            else:
                ax.tick_params(labelleft=False)
    if entries:
        handles = [Patch(facecolor=c, edgecolor="black", label=t) for t, c in entries]
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle("\n".join(textwrap.wrap(title, width=max(40, 30 * cols))), fontsize=9)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _tile(ax, image: np.ndarray, extent, padded: dict, k: int, kind: str, bottom: bool) -> None:
    ax.imshow(to_rgb(image), extent=extent, origin="upper", aspect="auto", interpolation="antialiased")
    ident = "(" + ", ".join(str(int(padded[c][k])) for c in IDENTITY) + ")" if "run" in padded else f"#{k}"
    ax.set_title(ident, fontsize=6.5)
    ax.tick_params(labelsize=6, length=2)
    if bottom:
        ax.set_xlabel("$\\eta$" if kind == "event" else "$\\Delta\\eta'$", fontsize=8)


def run(args) -> int:
    if args.n < 1:
        raise InputError("--n", f"must be at least 1, got {args.n}")
    try:
        cfg = preset(args.preset, args.size)
    except ValueError as exc:
        raise InputError("--size", str(exc)) from None
    padded, class_names = first_padded(args.input, args.n, "fatjets" if cfg.kind == "jet" else "events",
                                       args.split, args.per_class)
    images, skipped = draw(padded, cfg, args)
    images = images.numpy()
    out = Path(args.out)
    sweep_temporaries(out)
    for k, image in enumerate(images):
        write_image(out / f"{k:06d}.{args.format}", image, args.format)
    source = f"{args.input}" + (f" ({args.split})" if args.split else "")
    noun = "events" if cfg.kind == "event" else "jets"
    first = f"{args.n} {noun} of each class" if args.per_class else f"{len(images)} {noun}"
    contact_sheet(out / "contact_sheet.png", images, padded, class_names, cfg,
                  f"{cfg.name}, {cfg.size_px} px: the first {first} of {source}; one row per class, "
                  + ("each tile titled (run, lumi, event)" if "run" in padded else "tiles numbered in drawing order"))
    print(f"{len(images)} {cfg.kind} images ({cfg.name}, {cfg.size_px} px) and contact_sheet.png -> {out}"
          + (f"; {skipped} objects skipped (NaN/inf or over the cap)" if skipped else ""))
    return 0
