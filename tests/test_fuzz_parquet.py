"""Corrupt canonical Parquet files in many seeded ways; every read either delivers every event
exactly once (the same table, the same summary, the same `inspect` output) or stops with an
InputError: one line naming the file, exit code 2 from the CLI.

Corruptions: bit flips (anywhere, and in the footer), truncations, deleted and inserted byte
ranges, overwritten ranges (random bytes, zeros). Each case corrupts one file of a three-file
folder and reads it through every path the later steps use: `parquet_io.read`, the summary of
`inspect`, the shard step's `read_inputs`, and `python -m engine inspect` in-process.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.__main__ import main
from engine.data.canonical import parquet_io, schema
from engine.data.canonical.summary import summarize
from engine.data.generation.synthetic import write_synthetic
from engine.data.shards import read_inputs
from engine.errors import InputError
from tests.rootfiles import corrupt

CASES = {"events": 300, "fatjets": 120}
"""Corruptions per kind (seeded)."""


def _outcome(read, target: Path):
    """('ok', value) or ('error', message); anything but an InputError naming `target` fails."""
    try:
        return "ok", read()
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and str(target) in message, message
        return "error", message


def _readers(folder: Path, target: Path) -> dict:
    return {
        "read": lambda: parquet_io.read(target),
        "summary": lambda: summarize(folder),
        "shard_inputs": lambda: read_inputs([folder]).table,
    }


def _cli_inspect(folder: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", str(folder)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_corrupt_parquet_is_exact_or_one_line_exit_2(tmp_path, capsys, kind):
    folder = tmp_path / "data"
    files = write_synthetic(folder, kind, 30, seed=11)
    target = files[0]
    original = target.read_bytes()
    reference = {name: read() for name, read in _readers(folder, target).items()}
    ref_cli = _cli_inspect(folder, capsys)
    assert ref_cli[0] == 0
    rng = np.random.default_rng({"events": 1, "fatjets": 2}[kind])
    outcomes = {"ok": 0, "error": 0}
    failures = []
    for case in range(CASES[kind]):
        description, data = corrupt(original, rng)
        target.write_bytes(data)
        for name, read in _readers(folder, target).items():
            result, value = _outcome(read, target)
            outcomes[result] += 1
            if result == "ok" and not _same(value, reference[name]):
                failures.append(f"case {case} ({description}): {name} delivered different events")
        code, out, err = _cli_inspect(folder, capsys)
        lines = err.strip().splitlines()
        if code == 0 and out != ref_cli[1]:
            failures.append(f"case {case} ({description}): inspect printed a different summary")
        elif code != 0 and not (code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {target}")):
            failures.append(f"case {case} ({description}): inspect exit {code}, stderr {err!r}")
    target.write_bytes(original)
    assert not failures, "\n".join(failures[:20])
    assert outcomes["error"] > CASES[kind], outcomes  # most corruptions are caught, not harmless


def _same(value, reference) -> bool:
    if isinstance(value, pa.Table):
        return value.equals(reference)
    return value == reference


# ------------------------------------------------------------------ handmade foreign and old files

@pytest.fixture()
def events_file(tmp_path) -> Path:
    return write_synthetic(tmp_path / "src", "events", 20, seed=5)[0]


def test_file_without_checksums_still_reads(events_file, tmp_path):
    """A file written before page checksums and the metadata check existed reads as before."""
    table = pq.read_table(events_file)
    meta = {schema.METADATA_KEY: table.schema.metadata[schema.METADATA_KEY]}
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata(meta), old, compression="zstd")
    assert parquet_io.CHECK_KEY not in pq.ParquetFile(old).metadata.metadata
    assert parquet_io.read(old).equals(parquet_io.read(events_file))


@pytest.mark.parametrize("change", ["wrong_type", "wrong_kind", "no_class_names", "bad_json", "crc"])
def test_foreign_or_edited_metadata_is_one_line(events_file, tmp_path, change):
    table = pq.read_table(events_file)
    raw = dict(table.schema.metadata)
    raw[parquet_io.CHECK_KEY] = pq.ParquetFile(events_file).metadata.metadata[parquet_io.CHECK_KEY]
    if change == "wrong_type":
        index = table.schema.get_field_index("met_pt")
        table = table.set_column(index, pa.field("met_pt", pa.float64(), nullable=False),
                                 table.column("met_pt").cast(pa.float64()))
    elif change == "wrong_kind":
        raw[schema.METADATA_KEY] = raw[schema.METADATA_KEY].replace(b'"kind": "events"', b'"kind": "fatjets"')
        raw.pop(parquet_io.CHECK_KEY)
    elif change == "no_class_names":
        raw[schema.METADATA_KEY] = raw[schema.METADATA_KEY].replace(b'"class_names"', b'"classes"')
        raw.pop(parquet_io.CHECK_KEY)
    elif change == "bad_json":
        raw[schema.METADATA_KEY] = raw[schema.METADATA_KEY][:-3]
        raw.pop(parquet_io.CHECK_KEY)
    else:
        raw[schema.METADATA_KEY] = raw[schema.METADATA_KEY].replace(b'"seed": 5', b'"seed": 6')
    path = tmp_path / f"{change}.parquet"
    pq.write_table(table.replace_schema_metadata(raw), path)
    with pytest.raises(InputError) as info:
        parquet_io.read(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_hidden_files_and_folders_are_never_listed(events_file, tmp_path):
    folder = events_file.parent
    visible = sorted(folder.glob("*.parquet"))
    (folder / ".ttbar-parts-1-ab").mkdir()
    shutil.copy(events_file, folder / ".ttbar-parts-1-ab" / "part-0.parquet")
    shutil.copy(events_file, folder / ".ttbar.parquet.tmp-1-ab")
    (folder / "sub").mkdir()
    shutil.copy(events_file, folder / "sub" / "more.parquet")
    assert parquet_io.list_parquet(folder) == sorted(visible + [folder / "sub" / "more.parquet"])
    hidden_only = tmp_path / "hidden_only"
    (hidden_only / ".staging").mkdir(parents=True)
    shutil.copy(events_file, hidden_only / ".staging" / "x.parquet")
    with pytest.raises(InputError, match="no .parquet files"):
        parquet_io.list_parquet(hidden_only)
