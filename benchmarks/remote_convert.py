"""Conversion rate from root:// (an XRootD server on loopback) against the same file on local disk.

    python -m benchmarks.remote_convert --out FILE.json [--quick] [--events N] [--workdir DIR]

`convert_rate(workdir, events)` is the measurement (benchmarks/remote.py may call it beside the
loader's): the NanoAOD-style input of benchmarks/convert.py (cached in `workdir`) is served by an
xrootd server on 127.0.0.1 (tests/servers.py). Correctness first: a small file converted from
root:// gives the bytes of its conversion from local disk. Then one warm-up conversion from
each source, and `python -m engine convert FILE --workers 1` subprocesses, exactly as a user
runs them, convert the file from local disk and from root:// in turn, for `rounds` rounds; the
best round of each source counts (a shared machine's noise hits both alike). Records:
  remote_convert_events_per_s  params {source: local | root, events, selection, ...}: events
                               read / wall seconds of the subprocess (start-up and imports included)
  remote_convert_over_local    params {source: root}: the root:// rate over the local one
Without the xrootd binary both are skips with the reason.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, record, skip, write_results
from benchmarks.convert import EVENTS, QUICK_EVENTS, STEP_SIZE, input_file
from tests import rootfiles as rf

REPO = Path(__file__).resolve().parents[1]
NAMES = ("remote_convert_events_per_s", "remote_convert_over_local")


def timed_convert(source: str, out_dir: Path, selection: str) -> float:
    """Wall seconds of one `python -m engine convert` subprocess of `source` (a path or a URL)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "engine", "convert", source, "--out", str(out_dir), "--label", "ttbar",
           "--selection", selection, "--workers", "1", "--step-size", str(STEP_SIZE)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"convert {source} failed:\n{proc.stderr}")
    return wall


def check_same_bytes(server, workdir: Path) -> None:
    """A small file converted from root:// gives the bytes of its local conversion."""
    from tests.servers import world_readable
    source = rf.write_root(workdir / "check.root", "Events", [rf.nanoaod_branches(2_000, seed=7)])
    world_readable(workdir)
    timed_convert(str(source), workdir / "check_local", "none")
    timed_convert(server.url(source), workdir / "check_root", "none")
    local, far = (workdir / d / "check.parquet" for d in ("check_local", "check_root"))
    assert local.read_bytes() == far.read_bytes(), "root:// conversion differs from the local one"


def convert_rate(workdir: Path, events: int = QUICK_EVENTS, selection: str = "madrazo2017",
                 rounds: int = 2) -> tuple[list[dict], list[dict]]:
    """(records, skips): conversion events/s of `events` NanoAOD events from root://127.0.0.1
    and from local disk, and their ratio (see the module docstring)."""
    if shutil.which("xrootd") is None:
        reason = "no xrootd binary (apt-get install xrootd-server)"
        return [], [skip(name, reason, source="root") for name in NAMES]
    from tests import servers
    source = input_file(workdir, events, "zlib")
    servers.world_readable(workdir)
    server = servers.XRootD(workdir)
    try:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            check_same_bytes(server, Path(tmp))
            paths = {"local": str(source), "root": server.url(source)}
            best = dict.fromkeys(paths, float("inf"))
            for name, path in paths.items():             # warm-up: page cache, imports, the server
                timed_convert(path, Path(tmp) / f"out_{name}", selection)
            for _ in range(rounds):
                for name, path in paths.items():
                    best[name] = min(best[name], timed_convert(path, Path(tmp) / f"out_{name}", selection))
    finally:
        server.stop()
    params = {"events": events, "selection": selection, "step_size": STEP_SIZE, "workers": 1,
              "input_mb": round(source.stat().st_size / 1e6, 1), "cpus": os.cpu_count(),
              "load_avg_1min": round(os.getloadavg()[0], 2)}
    records = [record(NAMES[0], round(events / wall), "events/s", source=name, **params, wall_s=round(wall, 3))
               for name, wall in best.items()]
    records.append(record(NAMES[1], round(best["local"] / best["root"], 3), "ratio", source="root"))
    return records, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the records")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--events", type=int, help=f"events in the input (default {EVENTS:,})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "engine-bench-remote-convert",
                        help="where the input is cached")
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    records, skips = convert_rate(args.workdir, events, rounds=args.rounds)
    write_results(args.out, records, skips)
    print_table(records, skips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
