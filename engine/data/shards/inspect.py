"""Summarise a shard folder by reading every event through the loader, checked against the manifest.

`inspect_shards(path)` returns a JSON-able dict: per split the events per class read and listed in
the manifest, the shards skipped as unreadable (with the reason), and `problems`, a list of
one-line problems, each starting with the file or folder it concerns (empty when everything
agrees). What was read is compared with the manifest's split totals, so a skipped shard, an
event read twice or a count the data does not have is always a problem. Fat-jet splits also get
their soft-drop mass distribution and parton label counts.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engine.data import remote, shards
from engine.data.canonical.summary import parton_counts
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
    seen, truth = [], {"msoftdrop": [], "parton": []}
    for batch in loader:
        per_class += np.bincount(batch["labels"].numpy(), minlength=n_classes)
        seen.append(batch["index"].numpy())
        for key, values in truth.items():
            if key in batch:
                values.append(batch[key].numpy())
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
    out = {"events_manifest": entry["events"], "events_read": int(len(index)),
           "events_per_class_manifest": entry["events_per_class"],
           "events_per_class_read": per_class.tolist(), "shards": summary["shards"],
           "shards_skipped": summary["shards_skipped"], "bytes": entry["bytes"],
           "problems": problems}
    if manifest["kind"] == "fatjets":
        out.update(_jet_truth(*(np.concatenate(v) if v else np.zeros(0) for v in truth.values())))
    return out


def _jet_truth(msoftdrop: np.ndarray, parton: np.ndarray) -> dict:
    """The fat jets' soft-drop mass (count, mean, quartiles; NaN = not recorded) and parton counts."""
    recorded = msoftdrop[~np.isnan(msoftdrop)]
    stats = {"n": int(len(recorded)), "not_recorded": int(len(msoftdrop) - len(recorded))}
    if len(recorded):
        q1, median, q3 = np.percentile(recorded, [25, 50, 75])
        stats.update(mean=float(recorded.mean()), q1=float(q1), median=float(median), q3=float(q3))
    pids, counts = np.unique(parton.astype(np.int64), return_counts=True)
    return {"msoftdrop": stats, "partons": {str(p): int(n) for p, n in zip(pids, counts)}}


def _truth_lines(split: dict) -> list[str]:
    sd = split["msoftdrop"]
    text = (f"mean {sd['mean']:.1f}, quartiles {sd['q1']:.1f} / {sd['median']:.1f} / {sd['q3']:.1f} GeV"
            if sd["n"] else "none recorded")
    if sd["n"] and sd["not_recorded"]:
        text += f"; {sd['not_recorded']} jets without (version-1 inputs)"
    return [f"        msoftdrop {text}", f"        parton    {parton_counts(split['partons'])}"]


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
        if "msoftdrop" in split:
            lines += _truth_lines(split)
    n = len(report["problems"])
    lines.append(f"  NOT OK: {n} problem{'s' * (n != 1)} (one line each on stderr)" if n
                 else "  ok: everything matches the manifest")
    return "\n".join(lines)
