"""Canonical Parquet -> WebDataset shards per split, with a manifest and DALI index files.

The folder is written into the hidden folder .<out>.tmp-<pid>-<host>-<random> and renamed into
place at the end; readers refuse such a folder, and the next run removes those of killed runs.

Labels: the manifest's `class_names` is the sorted union of the inputs' class names; each event's
label is re-derived from its `process`. Events are shuffled globally (seeded) before writing, so
every shard mixes all classes. Splits are stratified per class; `balance` first downsamples
every class with events to the smallest one.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data.canonical import parquet_io, schema
from engine.data.shards import encoding
from engine.data.shards.manifest import (IDENTITY, IDENTITY_COLUMNS, MANIFEST, MEMBER_EXT, SHARD_FORMAT,
                                         SHARD_FORMAT_VERSION, SPLITS)
from engine.errors import InputError
from engine.files import TMP_MARK, make_folder, private_folder, remove_stale


@dataclass
class ShardOptions:
    """Options of `write_shards`; validated on construction."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    balance: bool = False
    seed: int = 0
    shard_size_mb: float = 128.0
    events_per_member: int = 4096
    codec: str = encoding.DEFAULT_CODEC

    def __post_init__(self):
        if self.codec not in encoding.CODECS:
            raise ValueError(f"codec must be one of {', '.join(encoding.CODECS)}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split must be three fractions >= 0 summing to 1, got {self.split}")
        if self.shard_size_mb <= 0 or not 1 <= self.events_per_member <= 65535:
            raise ValueError("shard_size_mb must be > 0 and events_per_member in 1..65535")


@dataclass
class Inputs:
    """All input events in memory, labels remapped to the union `class_names`."""
    kind: str
    class_names: list[str]
    table: pa.Table
    provenance: list[dict] = field(default_factory=list)


def read_inputs(paths: list[str | Path]) -> Inputs:
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
    tables, provenance = [], []
    for path, pf, meta in opened:
        table = pf.read().replace_schema_metadata(None)
        parquet_io.check_finite(table, path)          # NaN would be stored as eta = phi = 0
        tables.append(_relabel(table, class_names, path))
        provenance.append({"file": path.name, "path": str(path), "rows": table.num_rows, "engine": meta})
    table = pa.concat_tables(tables) if tables else None
    return Inputs(kind, class_names, table, provenance)


def _relabel(table: pa.Table, class_names: list[str], source: Path) -> pa.Table:
    labels = pc.index_in(table.column("process"), value_set=pa.array(class_names))
    if labels.null_count:
        raise InputError(source, "some events have a process missing from the class names")
    index = table.schema.get_field_index("label")
    return table.set_column(index, table.schema.field(index), labels.cast(pa.int32()))


def plan_splits(labels: np.ndarray, n_classes: int, opts: ShardOptions) -> dict[str, np.ndarray]:
    """Row indices (into `labels`) of each split, in the order they are written.

    Per class: seeded permutation, optional downsampling to the smallest class with events,
    then the first fraction to train, the next to val, the rest to test; each split is then
    shuffled globally. Same labels + options -> same plan.
    """
    rng = np.random.default_rng(opts.seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    if opts.balance:
        smallest = min((len(rows) for rows in per_class if len(rows)), default=0)
        per_class = [rows[:smallest] for rows in per_class]
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for rows in per_class:
        n_train = int(round(opts.split[0] * len(rows)))
        n_val = min(int(round(opts.split[1] * len(rows))), len(rows) - n_train)
        for name, chunk in zip(SPLITS, np.split(rows, [n_train, n_train + n_val])):
            parts[name].append(chunk)
    return {name: rng.permutation(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
            for name, chunks in parts.items()}


class ShardWriter:
    """Writes one split's blocks into tar shards of about `max_bytes`, with a DALI index each."""

    def __init__(self, folder: Path, split: str, n_classes: int, max_bytes: int):
        self.folder, self.split, self.n_classes, self.max_bytes = folder, split, n_classes, max_bytes
        self.shards: list[dict] = []
        self._tar = self._file = None

    def add(self, data: bytes, labels: np.ndarray) -> None:
        if self._tar is None or (self._tar.offset + len(data) > self.max_bytes and self._index):
            self._open()
        name = f"{len(self._index):06d}.{MEMBER_EXT}"
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        offset = self._tar.offset + tarfile.BLOCKSIZE
        self._tar.addfile(info, io.BytesIO(data))
        self._index.append((offset, len(data), name))
        shard = self.shards[-1]
        shard["members"].append(int(len(labels)))
        shard["events"] += int(len(labels))
        shard["events_per_class"] = (np.asarray(shard["events_per_class"]) +
                                     np.bincount(labels, minlength=self.n_classes)).tolist()

    def _open(self) -> None:
        self.close()
        stem = f"{self.split}-{len(self.shards):05d}"
        self._file = open(self.folder / f"{stem}.tar", "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._index: list[tuple[int, int, str]] = []
        self.shards.append({"name": f"{stem}.tar", "index": f"{stem}.idx", "events": 0,
                            "events_per_class": [0] * self.n_classes, "members": [], "bytes": 0})

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.close()
        shard = self.shards[-1]
        shard["bytes"] = (self.folder / shard["name"]).stat().st_size
        (self.folder / shard["index"]).write_text(format_index(self._index))
        self._tar = None


def format_index(entries: list[tuple[int, int, str]]) -> str:
    """DALI wds2idx index text: 'v1.2 N' then one 'blk OFFSET SIZE NAME' line per sample."""
    lines = [f"v1.2 {len(entries)}"] + [f"{MEMBER_EXT} {o} {s} {n}" for o, s, n in entries]
    return "\n".join(lines) + "\n"


def write_split(inputs: Inputs, rows: np.ndarray, folder: Path, name: str, opts: ShardOptions) -> dict:
    """Encode `rows` of the inputs in blocks into folder/name; returns the split's manifest entry."""
    folder.mkdir()
    writer = ShardWriter(folder, name, len(inputs.class_names), int(opts.shard_size_mb * 2 ** 20))
    to_block = (encoding.block_from_events_table if inputs.kind == "events"
                else encoding.block_from_fatjets_table)
    clipped = 0
    for start in range(0, len(rows), opts.events_per_member):
        chunk = inputs.table.take(pa.array(rows[start:start + opts.events_per_member]))
        try:
            block = to_block(chunk)
        except encoding.BlockError as exc:
            sources = ", ".join(item["path"] for item in inputs.provenance)
            raise InputError(sources, str(exc)) from None
        clipped += block.clipped
        writer.add(encoding.encode(block, first_index=start, codec=opts.codec),
                   block.columns["labels"])
    writer.close()
    identity = write_identity(inputs.table, rows, folder)
    per_class = np.sum([s["events_per_class"] for s in writer.shards], axis=0, dtype=np.int64)
    return {"events": int(len(rows)), "bytes": int(sum(s["bytes"] for s in writer.shards)),
            "events_per_class": (per_class if writer.shards else np.zeros(
                len(inputs.class_names), np.int64)).tolist(),
            "eta_clipped": clipped, "shards": writer.shards, "identity": identity}


def write_identity(table: pa.Table, rows: np.ndarray, folder: Path) -> str:
    """folder/identity.parquet: index, run, lumi, event (int64) of the split's events, sorted by
    index (the split-wide index every loader batch carries). Returns the file name."""
    import pyarrow.parquet as pq
    ids = table.select(list(IDENTITY_COLUMNS)).take(pa.array(rows, pa.int64()))
    ids = ids.add_column(0, "index", pa.array(np.arange(len(rows), dtype=np.int64)))
    pq.write_table(ids, folder / IDENTITY, compression="zstd")
    return IDENTITY


def build_manifest(inputs: Inputs, splits: dict[str, dict], opts: ShardOptions) -> dict:
    """The manifest document (JSON-able)."""
    events = sum(s["events"] for s in splits.values())
    total = sum(s["bytes"] for s in splits.values())
    return {"format": SHARD_FORMAT, "format_version": SHARD_FORMAT_VERSION,
            "block_format_version": encoding.FORMAT_VERSION, "schema_version": schema.SCHEMA_VERSION,
            "kind": inputs.kind, "class_names": inputs.class_names, "member_ext": MEMBER_EXT,
            "options": {"split": list(opts.split), "balance": opts.balance, "seed": opts.seed,
                        "shard_size_mb": opts.shard_size_mb,
                        "events_per_member": opts.events_per_member, "codec": opts.codec},
            "codec": {"compression": opts.codec, "precision": encoding.PRECISION},
            "events": events, "bytes": total, "bytes_per_event": total / events if events else None,
            "splits": splits, "inputs": inputs.provenance}


def write_shards(paths: list[str | Path], out: str | Path, opts: ShardOptions) -> dict:
    """Parquet files/folders `paths` -> shard folder `out` (atomically). Returns the manifest."""
    out = Path(out)
    prefix = f".{out.name}{TMP_MARK}"
    make_folder(out.parent, "the folder of the shards")
    remove_stale(out.parent, prefix)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not an empty folder")
    inputs = read_inputs(paths)
    if inputs.table is None or inputs.table.num_rows == 0:
        raise InputError(", ".join(map(str, paths)), "inputs hold no events")
    labels = inputs.table.column("label").to_numpy()
    plan = plan_splits(labels, len(inputs.class_names), opts)
    with private_folder(out.parent, prefix) as tmp:
        splits = {name: write_split(inputs, rows, tmp / name, name, opts) for name, rows in plan.items()}
        manifest = build_manifest(inputs, splits, opts)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=schema._json_default))
        try:
            os.replace(tmp, out)
        except OSError as exc:
            raise InputError(out, f"cannot be put in place ({exc.strerror}): did another run write it "
                                  "meanwhile?") from None
    return manifest
