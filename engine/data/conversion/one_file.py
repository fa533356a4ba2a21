"""Convert one input file into canonical event Parquet (`convert_file`), the unit of work of
`engine.data.conversion.convert`.

Inputs are local files or URLs (`root://`, `s3://`, `https://`: engine.data.conversion.locations),
read the same way: only the needed branches, in chunks.

Formats: `nanoaod` (CMS NanoAOD-style ROOT, tree `Events`), `delphes` (ROOT, tree `Delphes`),
`json` (the 2017 study's JSON); `auto` looks at the file's first bytes and, for ROOT, its trees.
The readers (engine.data.conversion.readers_root / readers_json) yield awkward event records in
chunks of `step_size` events; each chunk goes through the selection, `events_table`, a finiteness
check, and a `ParquetSink`, so memory is bounded by the chunk size and a failed file leaves nothing.
The output is the same whatever `step_size`.

Selection: object identification and isolation (the objects' `good` flag, see the readers), then
`engine.data.canonical.selection.apply_selection`; with the `none` selection every event and object
is kept.

Provenance in each file: converter, format, input name and size, tree, branches read, b-tag
branch and working point, identification used, selection, `events_read` (events in the input).
The number of accepted events is the file's row count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from engine.config import to_dict
from engine.data.canonical.parquet_io import ParquetSink, check_finite
from engine.data.canonical.schema import ValueRangeError, events_table
from engine.data.canonical.selection import PRESETS, SelectionConfig, event_mask
from engine.data.conversion import locations
from engine.data.conversion.jagged import keep_objects, record_parts
from engine.data.conversion.locations import Source, input_name, location
from engine.data.conversion.readers_json import JsonReader
from engine.data.conversion.readers_root import (DELPHES_TREE, NANOAOD_TREE, DelphesReader, NanoAODReader,
                                                 RootReader, open_tree, tree_names)
from engine.errors import InputError

FORMATS = ("auto", "nanoaod", "delphes", "json")
READERS = {"nanoaod": NanoAODReader, "delphes": DelphesReader, "json": JsonReader}
DEFAULT_STEP_SIZE = 100_000
CONVERTER = "engine convert"


@dataclass(frozen=True)
class ConvertJob:
    """One input file (a local path or a URL) and everything needed to convert it (picklable, for
    worker processes)."""

    source: Source
    out: Path
    label: str
    fmt: str = "auto"
    selection: SelectionConfig = field(default_factory=lambda: PRESETS["madrazo2017"])
    step_size: int = DEFAULT_STEP_SIZE


@dataclass(frozen=True)
class ConvertResult:
    source: Source
    out: Path
    fmt: str
    events_read: int
    events_accepted: int
    seconds: float


def detect_format(path: str | Source) -> str:
    """'nanoaod', 'delphes' or 'json' from the file's first bytes and, for ROOT, its trees."""
    path = location(path)
    head = locations.head(path, 64)
    if head.startswith(b"root"):
        root, _ = open_tree(path)
        try:
            trees = tree_names(root, path)
        finally:
            root.file.close()
        for tree, fmt in ((NANOAOD_TREE, "nanoaod"), (DELPHES_TREE, "delphes")):
            if tree in trees:
                return fmt
        raise InputError(path, f"no '{NANOAOD_TREE}' (NanoAOD) or '{DELPHES_TREE}' tree "
                               f"(trees in the file: {', '.join(trees) or 'none'})")
    if head.lstrip().startswith(b"{"):
        return "json"
    raise InputError(path, "empty file" if not head else "neither a ROOT file nor JSON")


def open_reader(path: str | Source, fmt: str = "auto", step_size: int = DEFAULT_STEP_SIZE):
    """The reader for `path`: checks the file, its tree and branches; reads no event data yet."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}", f"unknown format (known: {', '.join(FORMATS)})")
    if fmt == "auto":
        fmt = detect_format(path)
    return READERS[fmt](path, step_size)


def known_events(reader) -> int:
    """Events in the input if known without reading them (ROOT trees), else 0 (JSON is parsed whole)."""
    return reader.num_events if isinstance(reader, RootReader) else 0


def select(events: ak.Array, cfg: SelectionConfig) -> ak.Array:
    """Keep objects that pass identification/isolation (`good`) and the object windows of `cfg`,
    then the events that pass its count cuts. `none` keeps everything.

    The windows are those of engine.data.canonical.selection.select_objects, applied on flat numpy
    arrays in one pass per collection (tests check both give the same events).
    """
    if cfg.name == "none":
        return events
    windows = {"electrons": (cfg.lepton_pt_min_gev, cfg.lepton_abs_eta_max),
               "muons": (cfg.lepton_pt_min_gev, cfg.lepton_abs_eta_max),
               "jets": (cfg.jet_pt_min_gev, cfg.jet_abs_eta_max)}
    for name, (pt_min, abs_eta_max) in windows.items():
        offsets, fields = record_parts(events[name])
        keep = fields.pop("good") & (fields["pt"] > pt_min) & (np.abs(fields["eta"]) < abs_eta_max)
        events = ak.with_field(events, keep_objects(offsets, fields, keep), name)
    return events[event_mask(events, cfg)]


def convert_file(job: ConvertJob) -> ConvertResult:
    """Convert one input to `job.out` atomically; InputError for a bad input (nothing written)."""
    start = time.perf_counter()
    reader = open_reader(job.source, job.fmt, job.step_size)
    read = 0
    try:
        with ParquetSink(job.out, "events", [job.label], _provenance(job, reader)) as sink:
            for events in reader.chunks():
                read += len(events)
                try:
                    table = events_table(select(events, job.selection), job.label, [job.label])
                except ValueRangeError as exc:
                    raise InputError(job.source, str(exc)) from None
                check_finite(table, job.source)
                sink.write(table)
    finally:
        reader.close()
    return ConvertResult(job.source, job.out, reader.format, read, sink.rows,
                         time.perf_counter() - start)


def _provenance(job: ConvertJob, reader) -> dict:
    return {"converter": CONVERTER, "format": reader.format, "input": input_name(job.source),
            "input_bytes": locations.size(job.source), **reader.provenance(),
            "selection": to_dict(job.selection), "events_read": reader.num_events}
