"""Convert the files physicists have into canonical event Parquet: one output file per input.

Formats: `nanoaod` (CMS NanoAOD-style ROOT, tree `Events`), `delphes` (ROOT, tree `Delphes`),
`json` (the 2017 study's JSON); `auto` looks at the file's first bytes and, for ROOT, its trees.
The readers (engine.data.conversion.readers_root / readers_json) yield awkward event records in
chunks of `step_size` events; each chunk goes through the selection, `events_table`, a finiteness
check, and a `ParquetSink`, so memory is bounded by the chunk size and a failed file leaves nothing.

Selection: object identification and isolation (the objects' `good` flag, see the readers), then
`engine.data.canonical.selection.apply_selection`; with the `none` selection every event and object
is kept.

Many inputs: every input is opened and checked first (existence, format, tree, branches,
truncation), then converted, in `workers` processes. A bad input stops the run with an
InputError, unless `skip_bad`: then it is reported and the others are converted. Outputs are
identical whatever `workers` and `step_size`.

All or nothing: `convert_all` converts into a hidden staging folder inside the output folder
(invisible to every reader) and moves the outputs into place only when the run succeeded, then
writes `RECORD_NAME` last: which inputs were converted (output, events read and accepted) and
which failed and why. A failed run leaves the output folder as it was; the staging folder of a
killed run is removed by the next run into the same folder.

Provenance in each file: converter, format, input name and size, tree, branches read, b-tag
branch and working point, identification used, selection, `events_read` (events in the input).
The number of accepted events is the file's row count.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import awkward as ak
import numpy as np

from engine.config import to_dict
from engine.data.canonical.parquet_io import ParquetSink, check_finite
from engine.data.canonical.schema import ValueRangeError, events_table
from engine.data.canonical.selection import PRESETS, SelectionConfig, event_mask
from engine.data.conversion.jagged import keep_objects, record_parts
from engine.data.conversion.readers_json import JsonReader
from engine.data.conversion.readers_root import (DELPHES_TREE, NANOAOD_TREE, DelphesReader, NanoAODReader,
                                                 open_tree, tree_names)
from engine.errors import InputError
from engine.files import TMP_MARK, atomic_path, private_folder, remove_stale, writable_folder

FORMATS = ("auto", "nanoaod", "delphes", "json")
READERS = {"nanoaod": NanoAODReader, "delphes": DelphesReader, "json": JsonReader}
DEFAULT_STEP_SIZE = 100_000
RECORD_NAME = "convert.json"
STAGING_PREFIX = ".convert-"


@dataclass(frozen=True)
class ConvertJob:
    """One input file and everything needed to convert it (picklable, for worker processes)."""

    source: Path
    out: Path
    label: str
    fmt: str = "auto"
    selection: SelectionConfig = field(default_factory=lambda: PRESETS["madrazo2017"])
    step_size: int = DEFAULT_STEP_SIZE


@dataclass(frozen=True)
class ConvertResult:
    source: Path
    out: Path
    fmt: str
    events_read: int
    events_accepted: int
    seconds: float


@dataclass(frozen=True)
class Failure:
    """A bad input, as plain strings (InputError itself does not survive pickling)."""

    source: str
    problem: str

    def error(self) -> InputError:
        return InputError(self.source, self.problem)


def detect_format(path: str | Path) -> str:
    """'nanoaod', 'delphes' or 'json' from the file's first bytes and, for ROOT, its trees."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is a folder, not a file" if path.is_dir() else "no such file")
    with open(path, "rb") as f:
        head = f.read(64)
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


def open_reader(path: str | Path, fmt: str = "auto", step_size: int = DEFAULT_STEP_SIZE):
    """The reader for `path`: checks the file, its tree and branches; reads no event data yet."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}", f"unknown format (known: {', '.join(FORMATS)})")
    if fmt == "auto":
        fmt = detect_format(path)
    return READERS[fmt](path, step_size)


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
    return {"converter": "engine convert", "format": reader.format, "input": job.source.name,
            "input_bytes": job.source.stat().st_size, **reader.provenance(),
            "selection": to_dict(job.selection), "events_read": reader.num_events}


def plan_jobs(inputs: list[str | Path], out_dir: str | Path, label: str, fmt: str = "auto",
              selection: SelectionConfig | None = None,
              step_size: int = DEFAULT_STEP_SIZE) -> list[ConvertJob]:
    """One job per input, writing `out_dir/<input stem>.parquet`; two inputs may not share a stem."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}", f"unknown format (known: {', '.join(FORMATS)})")
    if not label or label != label.strip():
        raise InputError("--label", "must be a non-empty name without surrounding spaces")
    if step_size < 1:
        raise InputError("--step-size", "must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    selection = PRESETS["madrazo2017"] if selection is None else selection
    jobs, seen = [], {}
    written = {(out_dir / RECORD_NAME).resolve()}
    for source in map(Path, inputs):
        out = out_dir / f"{source.stem}.parquet"
        written.add(out.resolve())
        if source.resolve() in written:
            raise InputError(source, f"is an input, and this run would overwrite it in {out_dir}")
        if out in seen:
            raise InputError(source, f"would write the same output as {seen[out]} ({out}); rename one")
        seen[out] = source
        jobs.append(ConvertJob(source, out, label, fmt, selection, step_size))
    return jobs


def _attempt(job: ConvertJob, check_only: bool = False) -> ConvertResult | Failure | None:
    try:
        if check_only:
            open_reader(job.source, job.fmt, job.step_size).close()
            return None
        return convert_file(job)
    except InputError as exc:
        return Failure(exc.source, exc.problem)


def iter_convert(jobs: list[ConvertJob], workers: int = 1,
                 skip_bad: bool = False) -> Iterator[ConvertResult | Failure]:
    """Check every input, then convert the good ones; yield results in input order.

    Without `skip_bad` the first bad input raises InputError (checks run before any conversion,
    so most bad inputs stop the run before anything is written); with it, failures are yielded.
    """
    if workers < 1:
        raise InputError("--workers", "must be at least 1")
    good = []
    for job in jobs:
        failure = _attempt(job, check_only=True)
        if failure is None:
            good.append(job)
        elif skip_bad:
            yield failure
        else:
            raise failure.error()
    for outcome in _run(good, workers):
        if isinstance(outcome, Failure) and not skip_bad:
            raise outcome.error()
        yield outcome


def _run(jobs: list[ConvertJob], workers: int) -> Iterator[ConvertResult | Failure]:
    if workers == 1 or len(jobs) <= 1:
        yield from map(_attempt, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_attempt, job) for job in jobs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def convert_all(jobs: list[ConvertJob], out_dir: str | Path, workers: int = 1, skip_bad: bool = False,
                on_result: Callable[[ConvertResult], None] | None = None
                ) -> tuple[list[ConvertResult], list[Failure]]:
    """Convert `jobs` (from `plan_jobs(..., out_dir, ...)`) all or nothing; see the module docstring.

    Returns the results (with their final paths) and the failures. Without `skip_bad` a bad input
    raises InputError and leaves `out_dir` as it was; with it, nothing is written if nothing converted.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    writable_folder(out_dir)
    done: list[ConvertResult] = []
    failures: list[Failure] = []
    for job in jobs:  # temporaries a killed writer left beside the outputs
        if job.out.is_dir():
            raise InputError(job.out, "is a folder: cannot be replaced by the converted file")
        remove_stale(out_dir, f".{job.out.name}{TMP_MARK}")
    with _staging(out_dir, created) as staging:
        staged = [replace(job, out=staging / job.out.name) for job in jobs]
        for outcome in iter_convert(staged, workers=workers, skip_bad=skip_bad):
            if isinstance(outcome, Failure):
                failures.append(outcome)
                continue
            outcome = replace(outcome, out=out_dir / outcome.out.name)
            done.append(outcome)
            if on_result is not None:
                on_result(outcome)
        if done:
            for result in done:
                os.replace(staging / result.out.name, result.out)
            _write_record(out_dir / RECORD_NAME, done, failures)
    return done, failures


@contextmanager
def _staging(out_dir: Path, created: bool) -> Iterator[Path]:
    """A hidden folder for this run's outputs, removed at the end whatever happens (and `out_dir`
    too if this run `created` it and left nothing in it)."""
    try:
        with private_folder(out_dir, STAGING_PREFIX) as folder:
            yield folder
    finally:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _write_record(path: Path, done: list[ConvertResult], failures: list[Failure]) -> None:
    record = {
        "converted": [{"input": str(r.source), "output": r.out.name, "format": r.fmt,
                       "events_read": r.events_read, "events_accepted": r.events_accepted} for r in done],
        "failed": [{"input": f.source, "problem": f.problem} for f in failures],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
