"""The inputs of `shard`: canonical Parquet files, checked and streamed one row group at a time.

`open_inputs` opens every file first (so a foreign or mixed input is refused before anything is
written), checks that they share one kind, and takes the sorted union of their class names.
`iter_tables` then yields row group after row group, labels re-derived from `process` in the
union and floats checked to be finite. Memory is one row group, whatever the number of events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from engine.data.canonical import parquet_io, schema
from engine.errors import InputError

ARROW_BYTES_PER_PARQUET_BYTE = 1.25
"""Decoded Arrow bytes per uncompressed Parquet byte (about 1.1 on canonical events), with margin."""


@dataclass
class InputSet:
    """The opened inputs: kind, union `class_names`, one provenance record per file."""
    kind: str
    class_names: list[str]
    files: list[Path]
    provenance: list[dict]
    rows: int
    arrow_bytes: int                   # estimated size of all events decoded, from the footers
    _opened: list = field(default_factory=list, repr=False)

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
    return InputSet(kind, class_names, files, provenance, sum(p["rows"] for p in provenance),
                    int(unpacked * ARROW_BYTES_PER_PARQUET_BYTE), opened)


def iter_tables(inputs: InputSet) -> Iterator[tuple[int, int, pa.Table]]:
    """(file ordinal, row of the first event in its file, table) per row group of every input,
    labels relabelled into `inputs.class_names`, without schema metadata."""
    for ordinal, (path, pf, _) in enumerate(inputs._opened):
        first = 0
        for group in range(pf.metadata.num_row_groups):   # iter_batches keeps what it read
            table = pf.read_row_group(group).replace_schema_metadata(None)
            parquet_io.check_finite(table, path)          # NaN would be stored as eta = phi = 0
            yield ordinal, first, _relabel(table, inputs.class_names, path)
            first += table.num_rows


def read_inputs(paths: list[str | Path]) -> Inputs:
    """All events of `paths` in one table, read and checked as `shard` reads them."""
    inputs = open_inputs(paths)
    tables = [table for _, _, table in iter_tables(inputs)]
    return Inputs(inputs.kind, inputs.class_names, pa.concat_tables(tables) if tables else None,
                  inputs.provenance)


def _relabel(table: pa.Table, class_names: list[str], source: Path) -> pa.Table:
    labels = pc.index_in(table.column("process"), value_set=pa.array(class_names))
    if labels.null_count:
        raise InputError(source, "some events have a process missing from the class names")
    index = table.schema.get_field_index("label")
    return table.set_column(index, table.schema.field(index), labels.cast(pa.int32()))
