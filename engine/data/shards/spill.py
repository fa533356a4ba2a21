"""Pass 1 of `shard`: scatter the input events into buckets of their key, on disk.

`scatter_slice` is one read task: a slice of an input file (engine.data.shards.inputs) through a
`Spill`. Each incoming table gets its key columns (`_key`, `_file`, `_row`, see engine.data.shards.plan),
is sorted by bucket and kept in memory until `budget_bytes` are held; then the held events are
written as one Arrow IPC file (`<prefix>-NNNNN.arrow`), bucket after bucket, one or more record batches
per bucket. `Spill.parts[b]` lists where bucket b's batches lie, so `read_bucket` reads back one
bucket (memory-mapped) without touching the others. The `process` column is not carried: labels
already are the union's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.data.shards.inputs import Slice, read_slice
from engine.data.shards.plan import buckets_of, event_keys

KEY_COLUMNS = ("_key", "_file", "_row")
COMBINE_BYTES = 16 * 2 ** 20
"""A bucket's slices of one spill file are joined into one record batch below this size."""

Part = tuple[str, int, int]
"""(spill file, first record batch, number of record batches) of one bucket in one spill file."""


class Spill:
    """Scatters tables into `2 ** bits` buckets under `folder`; counts events per (class, bucket)."""

    def __init__(self, folder: Path, prefix: str, bits: int, n_classes: int, seed: int, budget_bytes: int):
        self.folder, self.prefix, self.bits, self.seed = folder, prefix, bits, seed
        self.budget_bytes = budget_bytes
        self.n_buckets = 1 << bits
        self.parts: list[list[Part]] = [[] for _ in range(self.n_buckets)]
        self.counts = np.zeros((n_classes, self.n_buckets), np.int64)
        self.files = 0
        self._held: list[tuple[pa.Table, np.ndarray]] = []    # (table sorted by bucket, bounds (B+1,))
        self._held_bytes = 0

    def add(self, ordinal: int, first_row: int, table: pa.Table) -> None:
        """Scatter `table` (the events of input file `ordinal` from row `first_row` on)."""
        labels = table.column("label").to_numpy()
        keys = event_keys(self.seed, labels, *(table.column(c).to_numpy() for c in ("run", "lumi", "event")))
        buckets = buckets_of(keys, self.bits)
        n = table.num_rows
        self.counts += np.bincount(labels * self.n_buckets + buckets,
                                   minlength=self.counts.size).reshape(self.counts.shape)
        table = table.drop_columns(["process"])
        for name, values in zip(KEY_COLUMNS, (keys, np.full(n, ordinal, np.int32),
                                              np.arange(first_row, first_row + n, dtype=np.int64))):
            table = table.append_column(name, pa.array(values))
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(self.n_buckets + 1))
        held = table if self.n_buckets == 1 else table.take(pa.array(order))   # one bucket: in order
        self._held.append((held, bounds))
        self._held_bytes += held.nbytes
        if self._held_bytes >= self.budget_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the held events into the next spill file."""
        if not self._held:
            return
        path = self.folder / f"{self.prefix}-{self.files:05d}.arrow"
        sizes = np.stack([np.diff(bounds) for _, bounds in self._held])       # (held tables, B)
        with pa.ipc.new_file(path, self._held[0][0].schema) as writer:
            written = 0
            for b in np.flatnonzero(sizes.sum(axis=0)):
                slices = [table.slice(bounds[b], bounds[b + 1] - bounds[b])
                          for (table, bounds), size in zip(self._held, sizes[:, b]) if size]
                table = pa.concat_tables(slices)
                if table.nbytes < COMBINE_BYTES:          # many small slices: one batch
                    table = table.combine_chunks()
                batches = table.to_batches()
                for batch in batches:
                    writer.write_batch(batch)
                self.parts[b].append((str(path), written, len(batches)))
                written += len(batches)
        self.files += 1
        self._held, self._held_bytes = [], 0


def scatter_slice(piece: Slice, class_names: list[str], folder: str, bits: int, seed: int,
                  budget_bytes: int) -> tuple[list[list[int]], dict[int, list[Part]]]:
    """One read task: the events of `piece` into spill files under `folder`. Returns the events
    per (class, bucket) and the parts of every bucket that got events."""
    prefix = f"f{piece.ordinal:05d}-g{piece.first_group:06d}"
    spill = Spill(Path(folder), prefix, bits, len(class_names), seed, budget_bytes)
    for first_row, table in read_slice(piece, class_names):
        spill.add(piece.ordinal, first_row, table)
    spill.flush()
    return spill.counts.tolist(), {b: parts for b, parts in enumerate(spill.parts) if parts}


def read_bucket(parts: list[Part]) -> pa.Table:
    """The events of one bucket from its spill parts, in one contiguous table (in memory)."""
    batches = []
    for path, first, count in parts:         # the batches keep their memory map open
        reader = pa.ipc.open_file(pa.memory_map(path))
        batches += [reader.get_batch(i) for i in range(first, first + count)]
    return pa.Table.from_batches(batches).combine_chunks()
