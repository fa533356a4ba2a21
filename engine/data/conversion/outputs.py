"""What a convert run finds in its output folder, and the record it writes there last.

An existing output is *done* for a job when it opens cleanly (`open_parquet`: metadata, checksums
of the metadata and row counts, column types) and was written with the job's settings: converter,
input's file name and byte size (for a URL, the size its server gives), format, label and
selection (`SETTINGS`; not the step size or the executor, which do not change the output). A done
output is skipped; a missing one is written; one that does not open is *damaged* (a writer of
this engine never leaves one) and is written again; one written with other settings is refused,
naming the first differing setting, and never overwritten.

The record, `RECORD_NAME`, lists every input of the job list in order, with its output, format and
events read and accepted, taken from the outputs themselves, so it is the same whichever run (or
array-job slice) wrote each output.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.config import to_dict
from engine.data.canonical.parquet_io import open_parquet
from engine.data.conversion.locations import input_name
from engine.data.conversion.one_file import CONVERTER, ConvertJob, ConvertResult
from engine.errors import InputError
from engine.files import atomic_path

RECORD_NAME = "convert.json"
SETTINGS = ("converter", "input", "input_bytes", "format", "label", "selection")


@dataclass(frozen=True)
class Existing:
    """An output as found: `state` is 'missing', 'done', 'damaged' or 'other' (other settings);
    `detail` says why (damaged, other); a done output carries the figures of its record entry."""

    state: str
    detail: str = ""
    fmt: str = ""
    events_read: int = 0
    events_accepted: int = 0


MISSING = Existing("missing")


def expected_settings(job: ConvertJob, fmt: str, input_bytes: int) -> dict:
    """The settings an output of `job` records, for an input of format `fmt` and `input_bytes`."""
    return {"converter": CONVERTER, "input": input_name(job.source), "input_bytes": input_bytes, "format": fmt,
            "label": job.label, "selection": json.loads(json.dumps(to_dict(job.selection)))}


def examine(job: ConvertJob, expected: dict) -> Existing:
    """The state of `job.out` against the `expected_settings` (InputError if it is a folder)."""
    if job.out.is_dir():
        raise InputError(job.out, "is a folder: cannot be replaced by the converted file")
    if not job.out.exists():
        return MISSING
    try:
        pf, meta = open_parquet(job.out)
    except InputError as exc:
        return Existing("damaged", exc.problem)
    provenance = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    difference = first_difference(_written_settings(meta, provenance), expected)
    if difference:
        return Existing("other", difference)
    return Existing("done", fmt=expected["format"], events_read=int(provenance.get("events_read", 0)),
                    events_accepted=pf.metadata.num_rows)


def _written_settings(meta: dict, provenance: dict) -> dict:
    names = meta.get("class_names") or []
    return {**{key: provenance.get(key) for key in SETTINGS},
            "label": names[0] if len(names) == 1 else ", ".join(map(str, names)) or None}


def first_difference(written: dict, expected: dict) -> str | None:
    """'KEY OLD -> NEW' for the first setting (in `SETTINGS` order) that differs, else None."""
    for key in SETTINGS:
        old, new = written.get(key), expected[key]
        if key == "selection" and isinstance(old, dict) and old.get("name") == new["name"]:
            field = next((f for f in new if old.get(f) != new[f]), None)
            if field is not None:
                return f"selection.{field} {_shown(old.get(field))} -> {_shown(new[field])}"
        elif old != new:
            if key == "selection":
                old, new = old.get("name") if isinstance(old, dict) else old, new["name"]
            return f"{key} {_shown(old)} -> {_shown(new)}"
    return None


def _shown(value) -> str:
    return "none" if value is None else str(value)


def other_settings_error(job: ConvertJob, difference: str) -> InputError:
    return InputError(job.out, f"written with other settings ({difference}): use another --out or remove it")


def record_entry(job: ConvertJob, result: ConvertResult | Existing) -> dict:
    """The record's entry for `job`, from its conversion now or its done output."""
    return {"input": str(job.source), "output": job.out.name, "format": result.fmt,
            "events_read": result.events_read, "events_accepted": result.events_accepted}


def write_record(path: Path, converted: list[dict], failed: list[dict]) -> None:
    """The record, atomically: `converted` entries (`record_entry`) and `failed` {input, problem}."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"converted": converted, "failed": failed}, indent=2) + "\n")
