"""`shard` as an external shuffle: canonical Parquet -> shards per split in bounded memory.

1. Pass 1, a read task per slice of the inputs (engine.data.shards.inputs), streams it row group
   by row group and scatters every event into a bucket of its seeded key, into the task's own
   spill files (engine.data.shards.spill), counting events per (class, bucket).
2. The split plan follows from the counts alone (engine.data.shards.plan).
3. One independent task per bucket sorts the bucket by key and writes its shards and identity
   slice per split (engine.data.shards.writer.write_bucket).
4. The buckets' shards are named `<split>-NNNNN.tar` in bucket order, their identity slices joined
   into each split's identity.parquet, and manifest.json written.

Both passes run on the engine's task executor (engine.data.tasks). The number of buckets follows
from the inputs' size and `memory_gb` only, so the output is the same bytes whoever runs the
tasks. Everything is written into the hidden folder .<out>.tmp-<pid>-<host>-<random> (the spilled
events in its `spill/`, removed first) and renamed into place at the end; readers refuse such a
folder, and the next run removes those of killed runs.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.data.canonical import schema
from engine.data.shards.inputs import InputSet, open_inputs
from engine.data.shards.manifest import IDENTITY, MANIFEST, SPLITS
from engine.data.shards.plan import SplitPlan, bucket_bits, plan_splits
from engine.data.shards.spill import Part, scatter_slice
from engine.data.shards.writer import (IDENTITY_SCHEMA, BucketContext, BucketJob, ShardOptions,
                                       build_manifest, write_bucket)
from engine.data.tasks import ExecutorSpec, Task, TaskFailures, run_tasks
from engine.errors import InputError
from engine.files import TMP_MARK, make_folder, private_folder, remove_stale

MEMORY_SHARES = 4
"""A bucket decoded, and the events pass 1 holds before spilling, are each 1/MEMORY_SHARES of
`memory_gb`: a bucket task holds its bucket about twice at its peak (read back, then joined)."""


def write_shards(paths: list[str | Path], out: str | Path, opts: ShardOptions,
                 executor: ExecutorSpec | None = None, progress: bool | None = False) -> dict:
    """Parquet files/folders `paths` -> shard folder `out` (atomically). Returns the manifest.

    The read and bucket tasks run on `executor` (default: in this process); Dask workers must see
    the folder of `out` at the same path. `progress`: bars over the tasks (None: on a terminal)."""
    out = Path(out)
    prefix = f".{out.name}{TMP_MARK}"
    make_folder(out.parent, "the folder of the shards")
    remove_stale(out.parent, prefix)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not an empty folder")
    inputs = open_inputs(paths)
    if inputs.rows == 0:
        raise InputError(", ".join(map(str, paths)), "inputs hold no events")
    share = opts.memory_gb * 2 ** 30 / MEMORY_SHARES
    bits = bucket_bits(inputs.rows, inputs.arrow_bytes, share, opts.max_bucket_events)
    with private_folder(out.parent, prefix) as tmp:
        executor = executor or ExecutorSpec()
        counts, parts = _scatter(inputs, tmp / "spill", bits, opts.seed, int(share), executor, progress)
        splits = _write_buckets(tmp, inputs, plan_splits(counts, opts.split, opts.balance), parts, opts,
                                executor, progress)
        shutil.rmtree(tmp / "spill")
        manifest = build_manifest(inputs.kind, inputs.class_names, inputs.provenance, splits, opts, 1 << bits)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=schema._json_default))
        try:
            os.replace(tmp, out)
        except OSError as exc:
            raise InputError(out, f"cannot be put in place ({exc.strerror}): did another run write it "
                                  "meanwhile?") from None
    return manifest


def _scatter(inputs: InputSet, folder: Path, bits: int, seed: int, budget_bytes: int,
             executor: ExecutorSpec, progress: bool | None) -> tuple[np.ndarray, list[list[Part]]]:
    """Pass 1 on `executor`, a read task per input slice: events per (class, bucket), and each
    bucket's spill parts in input order."""
    folder.mkdir()
    tasks = [Task(f"read-{i:05d}", scatter_slice, (piece, inputs.class_names, str(folder), bits, seed,
                                                    budget_bytes), events=piece.rows)
             for i, piece in enumerate(inputs.slices)]
    counts = np.zeros((len(inputs.class_names), 1 << bits), np.int64)
    parts: list[list[Part]] = [[] for _ in range(1 << bits)]
    for task_counts, task_parts in _run(tasks, executor, progress, "shard: read"):
        counts += np.asarray(task_counts, np.int64)
        for b, found in task_parts.items():
            parts[b] += found
    return counts, parts


def _write_buckets(folder: Path, inputs: InputSet, plan: SplitPlan, parts: list[list[Part]],
                   opts: ShardOptions, executor: ExecutorSpec, progress: bool | None) -> dict[str, dict]:
    """Phase 2 on `executor`, a task per bucket; the splits' manifest entries."""
    for split in SPLITS:
        (folder / split).mkdir()
    context = BucketContext(str(folder), inputs.kind, len(inputs.class_names),
                            tuple(map(tuple, plan.cuts.tolist())), opts, inputs.sources)
    tasks = [Task(f"bucket-{job.bucket:05d}", write_bucket, (job, context), events=sum(job.split_counts))
             for job in _jobs(parts, plan)]
    written = _run(tasks, executor, progress, "shard: write")
    return {split: _join_split(folder / split, split, [parts[s] for parts in written], len(inputs.class_names))
            for s, split in enumerate(SPLITS)}


def _jobs(parts: list[list[Part]], plan: SplitPlan) -> list[BucketJob]:
    """A job per bucket that holds events of some split, in bucket order."""
    return [BucketJob(b, tuple(parts[b]), tuple(plan.class_start[:, b].tolist()),
                      tuple(plan.split_counts[:, b].tolist()), tuple(plan.split_start[:, b].tolist()))
            for b in np.flatnonzero(plan.split_counts.sum(axis=0)).tolist()]


def _run(tasks: list[Task], executor: ExecutorSpec, progress: bool | None, desc: str) -> list:
    """run_tasks; the first task that failed on bad input is that input's one-line error."""
    try:
        return run_tasks(tasks, executor, progress=progress, desc=desc, hint="nothing was written")
    except TaskFailures as exc:
        bad = next((f for f in exc.failed if f.bad_input), None)
        if bad is None:
            raise
        raise InputError(bad.source, bad.problem) from None


def _join_split(folder: Path, split: str, parts: list[dict], n_classes: int) -> dict:
    """Name the buckets' shards `<split>-NNNNN` in bucket order, join their identity slices into
    identity.parquet (sorted by index, one slice in memory at a time); the split's manifest entry."""
    shards = []
    for part in parts:
        for entry in part["shards"]:
            stem = f"{split}-{len(shards):05d}"
            for key, suffix in (("name", ".tar"), ("index", ".idx")):
                os.replace(folder / entry[key], folder / f"{stem}{suffix}")
            shards.append({**entry, "name": f"{stem}.tar", "index": f"{stem}.idx"})
    with pq.ParquetWriter(folder / IDENTITY, IDENTITY_SCHEMA, compression="zstd") as identity:
        for name in (part["identity"] for part in parts if part["identity"]):
            identity.write_table(pa.ipc.open_file(pa.memory_map(str(folder / name))).read_all())
            (folder / name).unlink()
    per_class = np.zeros(n_classes, np.int64)
    for entry in shards:
        per_class += entry["events_per_class"]
    return {"events": int(sum(p["events"] for p in parts)), "bytes": int(sum(s["bytes"] for s in shards)),
            "events_per_class": per_class.tolist(), "eta_clipped": int(sum(p["eta_clipped"] for p in parts)),
            "shards": shards, "identity": IDENTITY}
