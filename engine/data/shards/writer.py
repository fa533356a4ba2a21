"""Writing shards: the options of `shard`, the tar writer with its DALI index, one bucket's
shards (the task the external shuffle runs per bucket, see engine.data.shards.external) and the
manifest document.

A bucket task reads its spilled events back, sorts them by key, gives each its split from the plan
and its split-wide index, and writes per split the bucket's blocks of `events_per_member` events
into tars named `b<bucket>-<n>.tar` (renamed `<split>-<n>.tar` in order when all buckets are done)
plus the bucket's slice of the split's event identity.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.data.canonical import schema
from engine.data.shards import encoding
from engine.data.shards.manifest import IDENTITY_COLUMNS, MEMBER_EXT, SHARD_FORMAT, SHARD_FORMAT_VERSION, SPLITS
from engine.data.shards.plan import assign_splits, sort_order
from engine.data.shards.spill import Part, read_bucket
from engine.errors import InputError

IDENTITY_SCHEMA = pa.schema([(name, pa.int64()) for name in ("index", *IDENTITY_COLUMNS)])


@dataclass
class ShardOptions:
    """Options of `write_shards`; validated on construction.

    `memory_gb` bounds the memory of each process (beyond the interpreter's own); it sets the
    number of buckets, and so where blocks and shards end, never which events go where.
    `max_bucket_events` caps the mean events per bucket on top of that (for tests).
    """
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    balance: bool = False
    seed: int = 0
    shard_size_mb: float = 128.0
    events_per_member: int = 4096
    codec: str = encoding.DEFAULT_CODEC
    memory_gb: float = 2.0
    max_bucket_events: int | None = None

    def __post_init__(self):
        if self.codec not in encoding.CODECS:
            raise ValueError(f"codec must be one of {', '.join(encoding.CODECS)}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split must be three fractions >= 0 summing to 1, got {self.split}")
        if self.shard_size_mb <= 0 or not 1 <= self.events_per_member <= 65535:
            raise ValueError("shard_size_mb must be > 0 and events_per_member in 1..65535")
        if not self.memory_gb > 0 or (self.max_bucket_events is not None and self.max_bucket_events < 1):
            raise ValueError(f"memory_gb must be > 0 (got {self.memory_gb}) and max_bucket_events >= 1")


class ShardWriter:
    """Writes blocks into tar shards `<prefix>-NNNNN.tar` of about `max_bytes`, a DALI index each."""

    def __init__(self, folder: Path, prefix: str, n_classes: int, max_bytes: int):
        self.folder, self.prefix, self.n_classes, self.max_bytes = folder, prefix, n_classes, max_bytes
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
        stem = f"{self.prefix}-{len(self.shards):05d}"
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


@dataclass(frozen=True)
class BucketJob:
    """One bucket's share of the plan: where its events were spilled, the class rank of its first
    event of each class (C,), its events per split (3,) and their first split-wide index (3,)."""
    bucket: int
    parts: tuple[Part, ...]
    class_start: tuple[int, ...]
    split_counts: tuple[int, ...]
    split_start: tuple[int, ...]


@dataclass(frozen=True)
class BucketContext:
    """What every bucket task shares: the staging folder, the kind, the class cuts of the plan
    (C, 4), the options and the inputs' names (for errors)."""
    folder: str
    kind: str
    n_classes: int
    cuts: tuple[tuple[int, ...], ...]
    opts: ShardOptions
    sources: str


def write_bucket(job: BucketJob, ctx: BucketContext) -> list[dict]:
    """Write one bucket's shards and identity slice in every split (see the module docstring).
    Returns per split {"events", "eta_clipped", "shards": manifest entries, "identity": file or None}."""
    table = read_bucket(list(job.parts))
    order = sort_order(*(table.column(c).to_numpy() for c in ("_key", "_file", "_row")))
    codes = assign_splits(table.column("label").to_numpy()[order], np.asarray(job.class_start),
                          np.asarray(ctx.cuts))                       # of the events in key order
    parts = []
    for s, split in enumerate(SPLITS):
        rows = order[codes == s]
        if len(rows) != job.split_counts[s]:
            raise RuntimeError(f"bucket {job.bucket}: {len(rows)} {split} events, planned "
                               f"{job.split_counts[s]}")
        parts.append(_write_split_part(table, rows, Path(ctx.folder) / split, job, job.split_start[s], ctx))
    return parts


def _write_split_part(table: pa.Table, rows: np.ndarray, folder: Path, job: BucketJob, first: int,
                      ctx: BucketContext) -> dict:
    prefix = f"b{job.bucket:05d}"
    writer = ShardWriter(folder, prefix, ctx.n_classes, int(ctx.opts.shard_size_mb * 2 ** 20))
    to_block = encoding.block_from_events_table if ctx.kind == "events" else encoding.block_from_fatjets_table
    clipped, size = 0, ctx.opts.events_per_member
    part = table.take(pa.array(rows))      # one take in key order, then zero-copy slices per block
    for start in range(0, len(rows), size):
        try:
            with np.errstate(over="ignore"):              # an overflow is refused as a BlockError
                block = to_block(part.slice(start, size))
        except encoding.BlockError as exc:
            raise InputError(ctx.sources, str(exc)) from None
        clipped += block.clipped
        writer.add(encoding.encode(block, first_index=first + start, codec=ctx.opts.codec),
                   block.columns["labels"])
    writer.close()
    identity = None
    if len(rows):
        identity = f"{prefix}.identity.arrow"
        index = pa.array(np.arange(first, first + len(rows), dtype=np.int64))
        ids = pa.Table.from_arrays([index, *part.select(list(IDENTITY_COLUMNS)).columns],
                                   schema=IDENTITY_SCHEMA)
        with pa.ipc.new_file(folder / identity, IDENTITY_SCHEMA) as sink:
            sink.write_table(ids)
    return {"events": int(len(rows)), "eta_clipped": clipped, "shards": writer.shards, "identity": identity}


def build_manifest(kind: str, class_names: list[str], provenance: list[dict], splits: dict[str, dict],
                   opts: ShardOptions, buckets: int) -> dict:
    """The manifest document (JSON-able)."""
    events = sum(s["events"] for s in splits.values())
    total = sum(s["bytes"] for s in splits.values())
    return {"format": SHARD_FORMAT, "format_version": SHARD_FORMAT_VERSION,
            "block_format_version": encoding.FORMAT_VERSION, "schema_version": schema.SCHEMA_VERSION,
            "kind": kind, "class_names": class_names, "member_ext": MEMBER_EXT,
            "options": {"split": list(opts.split), "balance": opts.balance, "seed": opts.seed,
                        "shard_size_mb": opts.shard_size_mb,
                        "events_per_member": opts.events_per_member, "codec": opts.codec,
                        "memory_gb": opts.memory_gb},
            "codec": {"compression": opts.codec, "precision": encoding.PRECISION},
            "buckets": buckets,
            "events": events, "bytes": total, "bytes_per_event": total / events if events else None,
            "splits": splits, "inputs": provenance}
