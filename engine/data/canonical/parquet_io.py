"""Writing and reading canonical Parquet files.

Writers never leave a half-written file: `ParquetSink` writes to a hidden temporary name in the
target folder and renames it into place only when closed without error; a temporary left by a
killed writer is removed by the next writer of the same target. Readers never see hidden files
or anything inside hidden folders (writers stage their work there).

Every page carries a CRC-32 (Parquet page checksums) and the `engine` metadata document its own
CRC-32 with the row counts, so a flipped byte in a page, in the metadata document or in the row
counts is an InputError naming the file, never a wrong number. Files written before checksums
existed still read (their pages are then not verified).
"""
from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.data.canonical import parts, schema
from engine.errors import InputError
from engine.files import atomic_path

CHECK_KEY = b"engine_check"
"""File metadata key: JSON {"engine_crc32": CRC-32 of the `engine` document, "row_groups": [rows...]}."""
READ_ERRORS = (OSError, pa.ArrowException, ValueError, EOFError)


class ParquetSink:
    """Streams canonical tables into one Parquet file, atomically.

    Use as a context manager; `write(table)` appends row groups of `ROW_GROUP_ROWS` events.
    """

    def __init__(self, path: str | Path, kind: str, class_names: list[str], provenance: dict,
                 pileup: bool = False):
        self.path = Path(path)
        metadata = schema.make_metadata(kind, class_names, provenance)
        self.schema = schema.schema_for(kind, pileup=pileup).with_metadata(metadata)
        self.rows = 0
        self._row_groups: list[int] = []
        self._ctx = atomic_path(self.path)
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ParquetSink":
        tmp = self._ctx.__enter__()
        try:
            # Dictionary encoding only pays for the repeated process name; on the float columns it
            # doubles the write time and grows the file.
            self._writer = pq.ParquetWriter(tmp, self.schema, compression="zstd", use_dictionary=["process"],
                                            write_page_checksum=True)
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:            # pyarrow would add an empty row group
            return
        self._writer.write_table(table.replace_schema_metadata(self.schema.metadata),
                                 row_group_size=schema.ROW_GROUP_ROWS)
        full, rest = divmod(table.num_rows, schema.ROW_GROUP_ROWS)
        self._row_groups += [schema.ROW_GROUP_ROWS] * full + ([rest] if rest else [])
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._writer.add_key_value_metadata({CHECK_KEY: _check_document(
                    self.schema.metadata[schema.METADATA_KEY], self._row_groups)})
        finally:
            self._writer.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def _check_document(engine_doc: bytes, row_groups: list[int]) -> bytes:
    return json.dumps({"engine_crc32": zlib.crc32(engine_doc), "row_groups": row_groups}).encode()


def write_table(path: str | Path, table: pa.Table, kind: str, class_names: list[str],
                provenance: dict) -> None:
    """Write one canonical table to `path` atomically."""
    with ParquetSink(path, kind, class_names, provenance) as sink:
        sink.write(table)


def list_parquet(path: str | Path) -> list[Path]:
    """The Parquet files at `path`: the file itself, or the *.parquet files under a folder, sorted.

    Hidden files and everything inside hidden folders (temporaries, a writer's staging) are skipped.
    A folder of parts (engine.data.canonical.parts) counts only when its dataset is complete.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _visible_files(path, "*.parquet")
        for folder in sorted({p.parent for p in files + _visible_files(path, parts.DATASET)}):
            parts.check_listing(folder, [p for p in files if p.parent == folder])
        if files:
            return files
        raise InputError(path, "folder holds no .parquet files")
    raise InputError(path, "no such file or folder")


def _visible_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern)
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class CheckedParquetFile(pq.ParquetFile):
    """A ParquetFile that verifies page checksums and reports any read failure as an InputError.

    `open_parquet` sets `upgrade` so that rows of an older schema version read in the current
    layout (engine.data.canonical.schema.upgrade); `schema_arrow` stays the file's own."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.upgrade = lambda data: data
        with _read_errors(self.path, "not a readable Parquet file"):
            super().__init__(self.path, page_checksum_verification=True)

    def read(self, *args, **kwargs) -> pa.Table:
        with _read_errors(self.path):
            return self.upgrade(super().read(*args, **kwargs))

    def read_row_group(self, *args, **kwargs) -> pa.Table:
        with _read_errors(self.path):
            return self.upgrade(super().read_row_group(*args, **kwargs))

    def read_row_groups(self, *args, **kwargs) -> pa.Table:
        with _read_errors(self.path):
            return self.upgrade(super().read_row_groups(*args, **kwargs))

    def iter_batches(self, *args, **kwargs) -> Iterator[pa.RecordBatch]:
        with _read_errors(self.path):
            for batch in super().iter_batches(*args, **kwargs):
                yield self.upgrade(batch)


@contextmanager
def _read_errors(path: Path, what: str = "corrupt Parquet data") -> Iterator[None]:
    try:
        yield
    except READ_ERRORS as exc:
        raise InputError(path, f"{what} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def open_parquet(path: str | Path) -> tuple[CheckedParquetFile, dict]:
    """Open a canonical Parquet file; returns the file and its `engine` metadata document.

    Checks the metadata document (and, in files that have it, its CRC-32 and the row counts of
    every row group) and that the columns have the canonical types of the file's kind.
    """
    pf = CheckedParquetFile(path)
    raw = pf.schema_arrow.metadata or {}
    try:
        meta = schema.parse_metadata(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError(path, "corrupt engine metadata (not valid JSON)") from None
    if meta is None:
        raise InputError(path, "Parquet file has no engine metadata (not written by this engine)")
    if not isinstance(meta, dict) or meta.get("schema_version") not in schema.READ_VERSIONS:
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        raise InputError(path, f"schema version {version} (this engine reads versions "
                               f"{', '.join(map(str, schema.READ_VERSIONS))})")
    footer = pf.metadata.metadata or {}
    if CHECK_KEY in footer:
        _verify_check(pf, footer[CHECK_KEY],
                      [raw[schema.METADATA_KEY], footer.get(schema.METADATA_KEY)], path)
    _verify_schema(pf, meta, path)
    pf.upgrade = lambda data: schema.upgrade(data, meta["kind"], meta["schema_version"])
    return pf, meta


def _verify_check(pf: pq.ParquetFile, check_doc: bytes, engine_docs: list[bytes | None],
                  path: str | Path) -> None:
    """Both copies of the `engine` document (Parquet's and Arrow's) and the row counts match."""
    try:
        check = json.loads(check_doc)
        crc, row_groups = int(check["engine_crc32"]), [int(n) for n in check["row_groups"]]
    except (ValueError, TypeError, KeyError):
        raise InputError(path, "corrupt engine metadata check") from None
    if any(doc is None or zlib.crc32(doc) != crc for doc in engine_docs):
        raise InputError(path, "corrupt engine metadata (CRC-32 mismatch)")
    found = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    if found != row_groups or pf.metadata.num_rows != sum(row_groups):
        raise InputError(path, f"corrupt Parquet footer: row groups hold {found} rows, "
                               f"{sum(row_groups)} written")


def _verify_schema(pf: pq.ParquetFile, meta: dict, path: str | Path) -> None:
    kind = meta.get("kind")
    if kind not in schema.KINDS:
        raise InputError(path, f"unknown kind {kind!r} in the engine metadata")
    if not isinstance(meta.get("class_names"), list):
        raise InputError(path, "engine metadata has no list of class names")
    if not schema.accepts(kind, meta["schema_version"], pf.schema_arrow.remove_metadata()):
        raise InputError(path, f"columns do not have the canonical types of '{kind}' files "
                               f"(corrupt footer or foreign file)")


def iter_batches(path: str | Path, columns: list[str] | None = None,
                 batch_rows: int = schema.ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
    """Stream record batches of only `columns` from one canonical file."""
    pf, _ = open_parquet(path)
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns)


def read(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole of one canonical file (or only `columns`), pages verified."""
    pf, _ = open_parquet(path)
    return pf.read(columns=columns)


def check_finite(table: pa.Table, source: str | Path) -> None:
    """Raise InputError naming the first column holding NaN or infinite values (in the columns of
    schema.MAY_BE_NAN, where NaN means "not recorded", only infinite ones)."""
    for name, column in _float_leaves(table):
        values = column.to_numpy(zero_copy_only=False)
        bad = np.isinf(values) if name in schema.MAY_BE_NAN else ~np.isfinite(values)
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
