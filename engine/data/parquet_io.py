"""Writing and reading canonical Parquet files.

Writers never leave a half-written file: `ParquetSink` writes to a hidden temporary name in the
target folder and renames it into place only when closed without error. Readers read only the
columns they are asked for, row group by row group.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.data import schema as sch
from engine.errors import InputError


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` on success, delete it on error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


class ParquetSink:
    """Streams canonical tables into one Parquet file, atomically.

    Use as a context manager; `write(table)` appends row groups of `ROW_GROUP_ROWS` events.
    """

    def __init__(self, path: str | Path, kind: str, class_names: list[str], provenance: dict):
        self.path = Path(path)
        self.schema = sch.schema_for(kind).with_metadata(sch.make_metadata(kind, class_names, provenance))
        self.rows = 0
        self._ctx = atomic_path(self.path)
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ParquetSink":
        tmp = self._ctx.__enter__()
        # Dictionary encoding only pays for the repeated process name; on the float columns it
        # doubles the write time and grows the file.
        self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd", use_dictionary=["process"])
        return self

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.replace_schema_metadata(self.schema.metadata),
                                 row_group_size=sch.ROW_GROUP_ROWS)
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._writer.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def write_table(path: str | Path, table: pa.Table, kind: str, class_names: list[str],
                provenance: dict) -> None:
    """Write one canonical table to `path` atomically."""
    with ParquetSink(path, kind, class_names, provenance) as sink:
        sink.write(table)


def list_parquet(path: str | Path) -> list[Path]:
    """The Parquet files at `path`: the file itself, or the *.parquet files under a folder, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if files:
            return files
        raise InputError(path, "folder holds no .parquet files")
    raise InputError(path, "no such file or folder")


def open_parquet(path: str | Path) -> tuple[pq.ParquetFile, dict]:
    """Open a canonical Parquet file; returns the file and its `engine` metadata document."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"not a readable Parquet file ({exc.__class__.__name__})") from None
    meta = sch.parse_metadata(pf.schema_arrow.metadata)
    if meta is None:
        raise InputError(path, "Parquet file has no engine metadata (not written by this engine)")
    if meta.get("schema_version") != sch.SCHEMA_VERSION:
        raise InputError(path, f"schema version {meta.get('schema_version')} "
                               f"(this engine reads version {sch.SCHEMA_VERSION})")
    return pf, meta


def iter_batches(path: str | Path, columns: list[str] | None = None,
                 batch_rows: int = sch.ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
    """Stream record batches of only `columns` from one canonical file."""
    pf, _ = open_parquet(path)
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns)


def check_finite(table: pa.Table, source: str | Path) -> None:
    """Raise InputError naming the first column holding NaN or infinite values."""
    for name, column in _float_leaves(table):
        values = column.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputError(source, f"{int(bad.sum())} NaN or infinite value(s) in '{name}'")


def _float_leaves(table: pa.Table) -> Iterator[tuple[str, pa.Array]]:
    for field in table.schema:
        yield from _leaves(field.name, pa.concat_arrays(table.column(field.name).chunks)
                           if table.column(field.name).num_chunks else pa.array([], field.type))


def _leaves(name: str, array: pa.Array) -> Iterator[tuple[str, pa.Array]]:
    typ = array.type
    if pa.types.is_floating(typ):
        yield name, array
    elif pa.types.is_list(typ):
        yield from _leaves(name, pc.list_flatten(array))
    elif pa.types.is_struct(typ):
        for i in range(typ.num_fields):
            yield from _leaves(f"{name}.{typ.field(i).name}", array.field(i))
