"""Loader throughput and bytes per event on disk.

    python -m benchmarks.loader [--shards DIR] --out FILE.json [--quick]

DIR is a shard root (the train split is timed) or one split folder; without --shards a synthetic
ttbar / W+jets / Drell-Yan set is written to a temporary folder first. Records:
  loader_events_per_s   params {backend, workers, batch_size}: events per second into padded
                        batches over whole epochs (worker start-up included), consumer does nothing
  shard_bytes_per_event params {class}: bytes on disk per event; per class, the class's events
                        re-encoded alone in blocks of the same size (tar headers included);
                        "mean" is the mean over classes, "all" the manifest's total / events
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.data import shards
from engine.data.generation import synthetic
from engine.data.loader import LoaderConfig, make_loader
from engine.data.shards import encoding

EVENTS_PER_CLASS = {"full": 400_000, "quick": 40_000}
SECONDS = {"full": 3.0, "quick": 0.5}


def build_synthetic(folder: Path, per_class: int) -> Path:
    synthetic.write_synthetic(folder / "parquet", "events", per_class, seed=0)
    shards.write_shards([folder / "parquet"], folder / "shards", shards.ShardOptions(seed=0))
    return folder / "shards"


def check_correctness(root: Path, split: str) -> None:
    """One unshuffled pass: every event exactly once, values equal to a direct decode."""
    loader = make_loader(root, LoaderConfig(batch_size=4096, shuffle=False), split=split)
    index = np.concatenate([b["index"].numpy() for b in loader])
    assert np.array_equal(np.sort(index), np.arange(loader.data.events_readable)), "lost events"
    shard = loader.data.shards[0]
    with open(shard.path, "rb") as f:
        f.seek(int(shard.offsets[0]))
        ref = encoding.decode_padded(f.read(int(shard.sizes[0])), loader.cap)
    batch = next(iter(loader))
    rows = len(ref["labels"])
    key = "features" if loader.kind == "events" else "constituents"
    assert np.array_equal(batch[key].numpy()[:rows], ref[key][:rows]), "values differ"


def time_loader(root: Path, split: str, cfg: LoaderConfig, seconds: float) -> float:
    loader = make_loader(root, cfg, split=split)
    for _ in loader:                                      # warm-up: one epoch (page cache, imports)
        pass
    events, start, epoch = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        epoch += 1
        loader.set_epoch(epoch)
        for batch in loader:
            events += len(batch["labels"])
    return events / (time.perf_counter() - start)


def bytes_by_class(root: Path, split: str) -> dict[str, float]:
    manifest = shards.load_manifest(root)
    data = shards.open_split(root, split)
    blocks = []
    for s in data.shards:
        raw = s.path.read_bytes()
        blocks += [encoding.decode(raw[o:o + n]) for o, n in zip(s.offsets, s.sizes)]
    per_member = manifest["options"]["events_per_member"]
    codec = manifest["options"].get("codec", encoding.DEFAULT_CODEC)
    out = {}
    for label, name in enumerate(manifest["class_names"]):
        size, events = 0, 0
        for block in blocks:
            rows = np.flatnonzero(block.columns["labels"] == label)
            for a in range(0, len(rows), per_member):
                part = encoding.take(block, rows[a:a + per_member])
                size += -(-len(encoding.encode(part, codec=codec)) // 512) * 512 + 512
                events += part.n_events
        if events:
            out[name] = size / events
    out["mean"] = float(np.mean(list(out.values())))
    out["all"] = manifest["bytes"] / manifest["events"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, help="shard root or split folder (default: synthetic)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    size = "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        given = args.shards or build_synthetic(Path(tmp), EVENTS_PER_CLASS[size])
        root, split = shards.locate_split(given)
        check_correctness(root, split)
        records = []
        for backend, workers in (("torch", 0), ("torch", 1), ("torch", 2), ("dali", 0)):
            cfg = LoaderConfig(backend=backend, workers=workers, batch_size=args.batch_size)
            rate = time_loader(root, split, cfg, SECONDS[size])
            records.append({"name": "loader_events_per_s", "value": round(rate), "unit": "events/s",
                            "params": {"backend": backend, "workers": workers,
                                       "batch_size": args.batch_size}})
        for name, value in bytes_by_class(root, split).items():
            records.append({"name": "shard_bytes_per_event", "value": round(value, 1),
                            "unit": "bytes/event", "params": {"class": name}})
    args.out.write_text(json.dumps(records, indent=1))
    for r in records:
        print(f"{r['name']:24s} {json.dumps(r['params']):60s} {r['value']:>12} {r['unit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
