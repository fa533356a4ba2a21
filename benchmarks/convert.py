"""Conversion speed and peak memory: a NanoAOD-style ROOT file of 1,000,000 events -> Parquet.

    python -m benchmarks.convert [--quick] [--events N] [--workdir DIR] --out FILE.json

The input (tests/rootfiles.py, pt-sorted collections, uproot's default ZLIB level 1 compression
unless --compression; inflated with ISA-L when python-isal is installed) is written once and cached
in --workdir. Then: a correctness check on a small file (every event kept with --selection none,
values and pt order preserved), a warm-up conversion (imports, page cache), and for each selection
one timed conversion in a fresh subprocess, `python -m engine convert FILE --workers 1`, exactly as
a user runs it (interpreter start-up and imports included). Records, per selection:
  convert_events_per_s_per_core  events read / wall seconds of that subprocess
  convert_events_per_cpu_s       events read / CPU seconds (user + system) of that subprocess
  convert_peak_rss_mb            peak resident memory of that subprocess (os.wait4 rusage)
Targets: >= 500,000 events/s per core; peak memory < 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import uproot

from engine.data.canonical.parquet_io import open_parquet
from engine.data.conversion.readers_root import use_fast_zlib
from tests import rootfiles as rf

REPO = Path(__file__).resolve().parents[1]

EVENTS = 1_000_000
QUICK_EVENTS = 200_000
SEED = 2024
STEP_SIZE = 100_000
SELECTIONS = ("madrazo2017", "none")
COMPRESSIONS = {"zlib": lambda: uproot.ZLIB(1), "lzma": lambda: uproot.LZMA(9)}


def input_file(workdir: Path, events: int, compression: str) -> Path:
    """The cached NanoAOD-style input, written (atomically) on first use."""
    path = workdir / f"nanoaod_{events}_seed{SEED}_{compression}.root"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        start = time.perf_counter()
        rf.write_root(tmp, "Events", rf.nanoaod_chunks(events, SEED, pt_sorted=True),
                      compression=COMPRESSIONS[compression]())
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    return path


def run_convert(source: Path, out_dir: Path, selection: str) -> dict:
    """One `python -m engine convert` subprocess: wall and CPU seconds, peak RSS, output path."""
    cmd = [sys.executable, "-m", "engine", "convert", str(source), "--out", str(out_dir),
           "--label", "ttbar", "--selection", selection, "--workers", "1",
           "--step-size", str(STEP_SIZE)]
    log = out_dir.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"convert failed:\n{log.read_text()}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "out": out_dir / f"{source.stem}.parquet"}


def check(workdir: Path) -> None:
    """Correctness first: a small file converted with `none` keeps every event and pt order."""
    branches = rf.nanoaod_branches(2_000, SEED)
    source = rf.write_root(workdir / "check.root", "Events", [branches])
    result = run_convert(source, workdir / "check_out", "none")
    rows = ak.from_arrow(pq.read_table(result["out"]))
    assert len(rows) == 2_000, len(rows)
    np.testing.assert_array_equal(rows.event, branches["event"].astype(np.int64))
    for name, raw in (("jets", "Jet"), ("muons", "Muon"), ("electrons", "Electron")):
        assert ak.all(rows[name].pt[:, 1:] <= rows[name].pt[:, :-1]), name
        assert np.isclose(float(ak.sum(rows[name].pt)), float(ak.sum(branches[raw].pt)), rtol=1e-6), name


def measure(source: Path, events: int, workdir: Path, selection: str, compression: str) -> list[dict]:
    load = os.getloadavg()[0]  # other work on the machine inflates the wall time
    result = run_convert(source, workdir / f"out_{selection}", selection)
    _, meta = open_parquet(result["out"])
    assert meta["provenance"]["events_read"] == events
    accepted = pq.ParquetFile(result["out"]).metadata.num_rows
    params = {"format": "nanoaod", "events": events, "selection": selection, "step_size": STEP_SIZE,
              "compression": compression, "zlib_library": use_fast_zlib(),
              "input_mb": round(source.stat().st_size / 1e6, 1),
              "accepted": accepted, "wall_s": round(result["wall_s"], 3), "cpu_s": round(result["cpu_s"], 3),
              "cpus": os.cpu_count(), "load_avg_1min": round(load, 2)}
    return [
        {"name": "convert_events_per_s_per_core", "value": events / result["wall_s"], "unit": "events/s",
         "params": params},
        {"name": "convert_events_per_cpu_s", "value": events / result["cpu_s"], "unit": "events/s",
         "params": params},
        {"name": "convert_peak_rss_mb", "value": result["peak_rss_mb"], "unit": "MB", "params": params},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--events", type=int, help=f"events in the input (default {EVENTS:,})")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "engine-bench-convert",
                        help="where the input is cached")
    parser.add_argument("--compression", choices=list(COMPRESSIONS), default="zlib")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    source = input_file(args.workdir, events, args.compression)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        check(Path(tmp))
        run_convert(source, Path(tmp) / "warmup", SELECTIONS[0])
        records = [r for sel in SELECTIONS for r in measure(source, events, Path(tmp), sel, args.compression)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=2))
    print(f"{'selection':<12} {'events':>10} {'accepted':>9} {'events/s':>10} {'events/cpu-s':>12} "
          f"{'peak RSS MB':>11}")
    for i in range(0, len(records), 3):
        p = records[i]["params"]
        print(f"{p['selection']:<12} {p['events']:>10,} {p['accepted']:>9,} {records[i]['value']:>10,.0f} "
              f"{records[i + 1]['value']:>12,.0f} {records[i + 2]['value']:>11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
