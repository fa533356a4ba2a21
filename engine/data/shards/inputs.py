"""The inputs of `shard`: canonical Parquet files, checked and streamed one row group at a time.

`open_inputs` opens every file first (so a foreign or mixed input is refused before anything is
written), checks that they share one kind, and takes the sorted union of their class names.
The files are read in slices of row groups (one read task each); `read_slice` yields row group
after row group, labels re-derived from `process` in the union and floats checked to be finite.
Memory is one row group, whatever the number of events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.canonical import parquet_io, schema
from engine.errors import InputError

GROUPS_PER_SLICE = 16
"""Row groups per read task (about a million events in the engine's files)."""
ARROW_BYTES_PER_PARQUET_BYTE = 1.25
"""Decoded Arrow bytes per uncompressed Parquet byte (about 1.1 on canonical events), with margin."""


@dataclass(frozen=True)
class Slice:
    """Row groups [first_group, end_group) of input file `ordinal`, from row `first_row` on."""
    ordinal: int
    path: str
    first_group: int
    end_group: int
    first_row: int
    rows: int


@dataclass
class InputSet:
    """The opened inputs: kind, union `class_names`, one provenance record per file, and the
    slices of at most GROUPS_PER_SLICE row groups they are read in."""
    kind: str
    class_names: list[str]
    files: list[Path]
    provenance: list[dict]
    slices: list[Slice]
    arrow_bytes: int                   # estimated size of all events decoded, from the footers

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.provenance)

    @property
    def sources(self) -> str:
        return ", ".join(str(f) for f in self.files)


@dataclass
class Inputs:
    """All input events in memory, labels remapped to the union `class_names`."""
    kind: str
    class_names: list[str]
    table: pa.Table
    provenance: list[dict] = field(default_factory=list)


def open_inputs(paths: list[str | Path]) -> InputSet:
    """Open every canonical Parquet file under `paths`; InputError on missing/foreign/mixed input."""
    files = [f for p in paths for f in parquet_io.list_parquet(p)]
    opened = [(f, *parquet_io.open_parquet(f)) for f in files]
    kinds = {meta.get("kind") for _, _, meta in opened}
    if len(kinds) != 1:
        raise InputError(", ".join(map(str, paths)), f"inputs mix kinds {sorted(map(str, kinds))}")
    kind = kinds.pop()
    if kind not in schema.KINDS:
        raise InputError(files[0], f"unknown kind {kind!r}")
    class_names = sorted({c for _, _, meta in opened for c in meta.get("class_names", [])})
    provenance = [{"file": path.name, "path": str(path), "rows": pf.metadata.num_rows, "engine": meta}
                  for path, pf, meta in opened]
    unpacked = sum(pf.metadata.row_group(i).total_byte_size
                   for _, pf, _ in opened for i in range(pf.metadata.num_row_groups))
    slices = [piece for ordinal, (path, pf, _) in enumerate(opened) for piece in _slices(ordinal, path, pf)]
    return InputSet(kind, class_names, files, provenance, slices, int(unpacked * ARROW_BYTES_PER_PARQUET_BYTE))


def _slices(ordinal: int, path: Path, pf) -> list[Slice]:
    rows = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
    return [Slice(ordinal, str(path), g, min(g + GROUPS_PER_SLICE, len(rows)), int(starts[g]),
                  int(starts[min(g + GROUPS_PER_SLICE, len(rows))] - starts[g]))
            for g in range(0, len(rows), GROUPS_PER_SLICE)]


def read_slice(piece: Slice, class_names: list[str]) -> Iterator[tuple[int, pa.Table]]:
    """(row of the first event in its file, table) per row group of `piece`, labels relabelled
    into `class_names`, without schema metadata."""
    pf, meta = parquet_io.open_parquet(piece.path)
    columns = schema.schema_for(meta["kind"]).names               # the columns shards carry
    row = piece.first_row
    for group in range(piece.first_group, piece.end_group):   # iter_batches keeps what it read
        table = pf.read_row_group(group, columns=columns).replace_schema_metadata(None)
        parquet_io.check_finite(table, piece.path)            # NaN would be stored as eta = phi = 0
        yield row, _relabel(table, class_names, piece.path)
        row += table.num_rows


def read_inputs(paths: list[str | Path]) -> Inputs:
    """All events of `paths` in one table, read and checked as `shard` reads them."""
    inputs = open_inputs(paths)
    tables = [table for piece in inputs.slices for _, table in read_slice(piece, inputs.class_names)]
    return Inputs(inputs.kind, inputs.class_names, pa.concat_tables(tables) if tables else None,
                  inputs.provenance)


def _relabel(table: pa.Table, class_names: list[str], source: Path) -> pa.Table:
    labels = pc.index_in(table.column("process"), value_set=pa.array(class_names))
    if labels.null_count:
        raise InputError(source, "some events have a process missing from the class names")
    index = table.schema.get_field_index("label")
    return table.set_column(index, table.schema.field(index), labels.cast(pa.int32()))
