"""Summaries of canonical Parquet files: events per class, object multiplicities, pt ranges.

Streams row groups and reads only the columns it needs, so it works on files of any size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.canonical import parquet_io

EVENT_COLLECTIONS = ("electrons", "muons", "jets")


@dataclass
class _Stat:
    """Running count / sum / min / max of a stream of numbers."""

    n: int = 0
    total: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf

    def add(self, values: np.ndarray) -> None:
        if values.size:
            self.n += values.size
            self.total += float(values.sum(dtype=np.float64))
            self.lo = min(self.lo, float(values.min()))
            self.hi = max(self.hi, float(values.max()))

    def as_dict(self) -> dict:
        if not self.n:
            return {"n": 0}
        return {"n": self.n, "mean": self.total / self.n, "min": self.lo, "max": self.hi}


@dataclass
class _ClassSummary:
    events: int = 0
    stats: dict[str, _Stat] = field(default_factory=dict)
    partons: dict[int, int] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray) -> None:
        self.stats.setdefault(name, _Stat()).add(values)

    def count_partons(self, values: np.ndarray) -> None:
        for pid, n in zip(*np.unique(values, return_counts=True)):
            self.partons[int(pid)] = self.partons.get(int(pid), 0) + int(n)

    def as_dict(self) -> dict:
        out = {"events": self.events, **{k: s.as_dict() for k, s in sorted(self.stats.items())}}
        if self.partons:
            out["partons"] = {str(pid): n for pid, n in sorted(self.partons.items())}
        return out


def summarize(path: str | Path) -> dict:
    """JSON-able summary of a Parquet file or a folder of them."""
    files = parquet_io.list_parquet(path)
    kinds, per_class, provenance = set(), {}, []
    for file in files:
        pf, meta = parquet_io.open_parquet(file)
        kinds.add(meta["kind"])
        provenance.append({"file": str(file), "events": pf.metadata.num_rows,
                           "class_names": meta["class_names"],
                           "tool": meta.get("provenance", {}).get("tool")})
        add = _add_events if meta["kind"] == "events" else _add_fatjets
        for batch in pf.iter_batches(columns=_columns(meta["kind"])):
            add(batch, per_class)
    return {
        "path": str(path), "kind": sorted(kinds)[0] if len(kinds) == 1 else sorted(kinds),
        "files": provenance, "events": sum(c.events for c in per_class.values()),
        "classes": {name: c.as_dict() for name, c in sorted(per_class.items())},
    }


def _columns(kind: str) -> list[str]:
    if kind == "events":
        return ["process", "met_pt", *EVENT_COLLECTIONS]
    return ["process", "fatjet", "constituents"]


def _split_by_process(batch: pa.RecordBatch, per_class: dict) -> list[tuple[_ClassSummary, pa.RecordBatch]]:
    process = batch.column("process")
    out = []
    for name in pc.unique(process).to_pylist():
        part = batch.filter(pc.equal(process, name))
        summary = per_class.setdefault(name, _ClassSummary())
        summary.events += part.num_rows
        out.append((summary, part))
    return out


def _add_events(batch: pa.RecordBatch, per_class: dict) -> None:
    for summary, part in _split_by_process(batch, per_class):
        summary.add("met_pt", part.column("met_pt").to_numpy())
        for name in EVENT_COLLECTIONS:
            column = part.column(name)
            summary.add(f"n_{name}", pc.list_value_length(column).to_numpy())
            summary.add(f"{name}_pt", pc.list_flatten(column).field("pt").to_numpy())


def _add_fatjets(batch: pa.RecordBatch, per_class: dict) -> None:
    for summary, part in _split_by_process(batch, per_class):
        fat = part.column("fatjet")
        for key in ("pt", "eta", "mass"):
            summary.add(f"fatjet_{key}", fat.field(key).to_numpy())
        msoftdrop = fat.field("msoftdrop").to_numpy()
        summary.add("fatjet_msoftdrop", msoftdrop[~np.isnan(msoftdrop)])    # NaN: not recorded
        summary.count_partons(fat.field("parton").to_numpy())
        summary.add("n_constituents", pc.list_value_length(part.column("constituents")).to_numpy())


def format_summary(summary: dict) -> str:
    """Human-readable table of `summarize` output."""
    lines = [f"{summary['path']}: {summary['events']} {summary['kind']} in {len(summary['files'])} file(s)"]
    for name, cls in summary["classes"].items():
        lines.append(f"  {name}: {cls['events']} events")
        for key, stat in cls.items():
            if key == "fatjet_msoftdrop" and not stat.get("n"):
                lines.append(f"    {key:<18} not recorded (files of schema version 1)")
            if key in ("events", "partons") or not stat.get("n"):
                continue
            lines.append(f"    {key:<18} mean {stat['mean']:9.2f}   min {stat['min']:9.2f}   max {stat['max']:9.2f}")
        if "partons" in cls:
            lines.append(f"    {'parton':<18} " + parton_counts(cls["partons"]))
    return "\n".join(lines)


def parton_counts(partons: dict[str, int]) -> str:
    """'25: 30, 0: 2 (none)' from {"|PDG id|": jets}, the most frequent first."""
    items = sorted(partons.items(), key=lambda kv: (-kv[1], int(kv[0])))
    return ", ".join(f"{pid}: {n}" + (" (none)" if pid == "0" else "") for pid, n in items)
