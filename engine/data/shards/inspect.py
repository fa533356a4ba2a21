"""Summarise a shard folder by reading every event through the loader, checked against the manifest.

`inspect_shards(path)` returns a JSON-able dict: per split the events per class read and listed in
the manifest, the shards skipped as unreadable (with the reason), and `problems`, a list of
one-line problems, each starting with the file or folder it concerns (empty when everything
agrees). What was read is compared with the manifest's split totals, so a skipped shard, an
event read twice or a count the data does not have is always a problem.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engine.data import remote, shards
from engine.data.loader import LoaderConfig, make_loader


def inspect_shards(path: str | Path, batch_size: int = 65_536) -> dict:
    """Read `path` (a shard root or one split folder) fully; see module docstring."""
    path = remote.location(path)
    root, split = shards.locate_split(path)
    manifest = shards.load_manifest(root)
    names = list(manifest["splits"]) if root == path else [split]
    report = {"path": str(root), "kind": manifest["kind"], "class_names": manifest["class_names"],
              "events_manifest": manifest["events"], "bytes": manifest["bytes"],
              "bytes_per_event": manifest["bytes"] / manifest["events"] if manifest["events"] else None,
              "splits": {}, "problems": []}
    for name in names:
        split = _inspect_split(root, name, manifest, batch_size)
        report["splits"][name] = split
        report["problems"] += split.pop("problems")
    report["ok"] = not report["problems"]
    return report


def _inspect_split(root: Path | remote.URL, name: str, manifest: dict, batch_size: int) -> dict:
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
    problems = [f"{s['path']}: {s['reason']} (shard skipped, {s['events']} events not read)"
                for s in summary["shards_skipped"]]
    folder = root / name
    if len(index) != entry["events"]:
        problems.append(f"{folder}: read {len(index)} events, the manifest says {entry['events']}")
    if per_class.tolist() != entry["events_per_class"]:
        problems.append(f"{folder}: events per class read {per_class.tolist()}, "
                        f"the manifest says {entry['events_per_class']}")
    if len(np.unique(index)) != len(index):
        problems.append(f"{folder}: some events were read more than once")
    return {"events_manifest": entry["events"], "events_read": int(len(index)),
            "events_per_class_manifest": entry["events_per_class"],
            "events_per_class_read": per_class.tolist(), "shards": summary["shards"],
            "shards_skipped": summary["shards_skipped"], "bytes": entry["bytes"],
            "problems": problems}


def format_inspection(report: dict) -> str:
    """A short human-readable text of an `inspect_shards` report (the problems only counted: the
    command prints each on stderr)."""
    lines = [f"{report['path']}: {report['kind']} shards, classes {', '.join(report['class_names'])}",
             f"  {report['events_manifest']} events in the manifest, {report['bytes']} bytes "
             f"({report['bytes_per_event'] or 0:.1f} bytes/event)"]
    for name, split in report["splits"].items():
        per_class = ", ".join(f"{c} {n}" for c, n in zip(report["class_names"],
                                                         split["events_per_class_read"]))
        lines.append(f"  {name:5s} read {split['events_read']} / {split['events_manifest']} events "
                     f"in {split['shards']} shards ({per_class})")
    n = len(report["problems"])
    lines.append(f"  NOT OK: {n} problem{'s' * (n != 1)} (one line each on stderr)" if n
                 else "  ok: everything matches the manifest")
    return "\n".join(lines)
