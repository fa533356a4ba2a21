"""`shard` at scale: peak memory and throughput of `python -m engine shard` per number of events.

    python -m benchmarks.scale_shard --sizes 1000000 3000000 --memory-gb 2 --out FILE.json [--workdir DIR]

For each size, synthetic ttbar / W+jets / Drell-Yan events (a third each, unique run/lumi/event)
are written as canonical Parquet in chunks (not timed), then `python -m engine shard` runs in a
child process. Correctness first: the manifest holds every event, the splits are stratified. Records:
  shard_peak_rss       MiB, the child's peak resident memory (ru_maxrss from os.wait4)
  shard_events_per_s   events / the child's wall time (interpreter start included)
params {events, memory_gb, buckets, workers}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.data.canonical import parquet_io, schema
from engine.data.generation import synthetic

CHUNK = 200_000
CLASSES = sorted(synthetic.EVENT_PROCESSES)


def write_inputs(folder: Path, events: int) -> Path:
    """One canonical Parquet file per class, `events` in all, written CHUNK events at a time."""
    for c, process in enumerate(CLASSES):
        n = events // len(CLASSES) + (c < events % len(CLASSES))
        provenance = {"generator": "synthetic", "benchmark": "scale_shard"}
        with parquet_io.ParquetSink(folder / f"{process}.parquet", "events", CLASSES, provenance) as sink:
            for i, start in enumerate(range(0, n, CHUNK)):
                size = min(CHUNK, n - start)
                table = schema.events_table(synthetic.synthetic_events(process, size, seed=i), process, CLASSES)
                index = table.schema.get_field_index("event")        # unique within the class
                event = pa.array(np.arange(start, start + size) + 1)
                sink.write(table.set_column(index, table.schema.field(index), event))
    return folder


MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=sys.stderr)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""
"""Runs the measured command as the child of a small, fresh Python: a child forked from a large
process (a test runner) starts with the parent's resident pages, and ru_maxrss would count them."""


def run_shard(inputs: Path, out: Path, memory_gb: float, workers: int) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB, over the shard process and its workers) of one
    `python -m engine shard` child."""
    args = [sys.executable, "-m", "engine", "shard", "--input", str(inputs), "--out", str(out),
            "--memory-gb", str(memory_gb), "--workers", str(workers)]
    with open(out.parent / "shard.stderr", "w+") as err:
        done = subprocess.run([sys.executable, "-c", MEASURE, *args], stdout=subprocess.PIPE, stderr=err,
                              text=True)
        seconds, code, rss_kib = json.loads(done.stdout) if done.returncode == 0 else (0, done.returncode, 0)
        if code:
            err.seek(0)
            raise RuntimeError(f"shard failed ({code}): {err.read()[-500:]}")
    return seconds, rss_kib


def check(out: Path, events: int) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["events"] == events, "lost events"
    train = manifest["splits"]["train"]["events_per_class"]
    per_class = [events // 3 + (c < events % 3) for c in range(3)]
    assert train == [int(round(0.7 * n)) for n in per_class], "splits not stratified"
    return manifest


def measure_shard(sizes: list[int], memory_gb: float, workdir: Path, workers: int = 1) -> list[dict]:
    """Records (see the module docstring) for each number of events in `sizes`."""
    records = []
    for events in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"scale-shard-{events}-", dir=workdir))
        try:
            inputs = write_inputs(folder / "parquet", events)
            seconds, rss_kib = run_shard(inputs, folder / "shards", memory_gb, workers)
            manifest = check(folder / "shards", events)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        params = {"events": events, "memory_gb": memory_gb, "buckets": manifest["buckets"], "workers": workers}
        records += [{"name": "shard_peak_rss", "value": rss_kib / 1024, "unit": "MiB", "params": params},
                    {"name": "shard_events_per_s", "value": events / seconds, "unit": "events/s",
                     "params": params}]
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--memory-gb", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    records = measure_shard(args.sizes, args.memory_gb, args.workdir, args.workers)
    args.out.write_text(json.dumps(records, indent=1))
    for r in records:
        print(f"{r['name']:20s} {r['value']:>14,.1f} {r['unit']:9s} {r['params']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
