"""Summarise a shard folder by reading every event through the loader, checked against the manifest.

`inspect_shards(path)` returns a JSON-able dict: per split the events per class read and listed in
the manifest, the shards skipped as unreadable (with the reason), and `problems`, a list of
one-line mismatches (empty when everything agrees).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engine.data import shards
from engine.data.loader import LoaderConfig, make_loader


def inspect_shards(path: str | Path, batch_size: int = 65_536) -> dict:
    """Read `path` (a shard root or one split folder) fully; see module docstring."""
    root, split = shards.locate_split(path)
    manifest = shards.load_manifest(root)
    names = list(manifest["splits"]) if (Path(path) / shards.MANIFEST).is_file() else [split]
    report = {"path": str(root), "kind": manifest["kind"], "class_names": manifest["class_names"],
              "events_manifest": manifest["events"], "bytes": manifest["bytes"],
              "bytes_per_event": manifest["bytes_per_event"], "splits": {}, "problems": []}
    for name in names:
        split = _inspect_split(root, name, manifest, batch_size)
        report["splits"][name] = split
        report["problems"] += [f"{name}: {p}" for p in split.pop("problems")]
    report["ok"] = not report["problems"]
    return report


def _inspect_split(root: Path, name: str, manifest: dict, batch_size: int) -> dict:
    cfg = LoaderConfig(batch_size=batch_size, shuffle=False, skip_bad=True)
    with warnings.catch_warnings():                      # skipped shards are reported below
        warnings.simplefilter("ignore")
        loader = make_loader(root, cfg, split=name)
    n_classes = len(manifest["class_names"])
    per_class = np.zeros(n_classes, np.int64)
    seen = []
    for batch in loader:
        per_class += np.bincount(batch["labels"].numpy(), minlength=n_classes)
        seen.append(batch["index"].numpy())
    summary = loader.summary()
    entry = manifest["splits"][name]
    index = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    problems = [f"shard {s['name']} unreadable ({s['reason']}), {s['events']} events lost"
                for s in summary["shards_skipped"]]
    expected = np.sum([s["events_per_class"] for s in entry["shards"]
                       if s["name"] not in {k["name"] for k in summary["shards_skipped"]}],
                      axis=0, dtype=np.int64) if entry["shards"] else np.zeros(n_classes, np.int64)
    if not np.array_equal(per_class, np.broadcast_to(expected, per_class.shape)):
        problems.append(f"events per class read {per_class.tolist()}, manifest {list(expected)}")
    if len(np.unique(index)) != len(index):
        problems.append("some events were read more than once")
    return {"events_manifest": entry["events"], "events_read": int(len(index)),
            "events_per_class_manifest": entry["events_per_class"],
            "events_per_class_read": per_class.tolist(), "shards": summary["shards"],
            "shards_skipped": summary["shards_skipped"], "bytes": entry["bytes"],
            "problems": problems}


def format_inspection(report: dict) -> str:
    """A short human-readable text of an `inspect_shards` report."""
    lines = [f"{report['path']}: {report['kind']} shards, classes {', '.join(report['class_names'])}",
             f"  {report['events_manifest']} events in the manifest, {report['bytes']} bytes "
             f"({report['bytes_per_event'] or 0:.1f} bytes/event)"]
    for name, split in report["splits"].items():
        per_class = ", ".join(f"{c} {n}" for c, n in zip(report["class_names"],
                                                         split["events_per_class_read"]))
        lines.append(f"  {name:5s} read {split['events_read']} / {split['events_manifest']} events "
                     f"in {split['shards']} shards ({per_class})")
    lines += [f"  problem: {p}" for p in report["problems"]] or ["  ok: everything matches the manifest"]
    return "\n".join(lines)
