"""Generation speed per core: accepted events (or large-radius jets) per second, one worker.

    python -m benchmarks.generate [--quick] --out FILE.json

For every process: a small correctness run first (right row count, selection held), a warm-up,
then one timed single-worker run of a fixed size (Pythia initialisation included, as a user
sees it). Records: generate_events_per_s_per_core, generate_acceptance.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import awkward as ak
import pyarrow.parquet as pq

from engine.data.canonical.selection import load_selection
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.generate import GenerateJob
from engine.data.generation.runner import generate
from engine.data.generation.processes import PROCESSES

EVENTS = 200
QUICK_EVENTS = 40
SELECTION = "madrazo2017"


def _job(process: str, events: int, seed: int) -> GenerateJob:
    return GenerateJob(process, events, PROCESSES[process].ecm_gev, seed,
                       load_selection(SELECTION), DetectorConfig())


def _check(process: str, folder: Path) -> None:
    """Correctness first: the right number of rows, and the selection holds on each."""
    summary = generate(_job(process, 5, seed=99), folder, progress=False)
    rows = ak.from_arrow(pq.read_table(summary["path"]))
    assert len(rows) == 5, f"{process}: {len(rows)} rows, expected 5"
    if PROCESSES[process].kind == "fatjets":
        assert ak.all(rows.fatjet.pt > 300), process
    else:
        assert ak.all(ak.num(rows.electrons) + ak.num(rows.muons) == 1), process
        assert ak.all(rows.jets.pt > 30), process


def measure(process: str, events: int, folder: Path) -> list[dict]:
    _check(process, folder / "check")
    summary = generate(_job(process, events, seed=1), folder / "timed", progress=False)
    params = {"process": process, "ecm": PROCESSES[process].ecm_gev, "selection": SELECTION,
              "events": events}
    return [
        {"name": "generate_events_per_s_per_core", "value": summary["rate_per_s"],
         "unit": "events/s", "params": params},
        {"name": "generate_acceptance", "value": summary["acceptance"], "unit": "fraction",
         "params": {**params, "generated": summary["generated"],
                    "generated_per_s": summary["generated_per_s"],
                    "cross_section_pb": summary["cross_section_pb"]}},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events per process")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    parser.add_argument("--process", action="append", choices=list(PROCESSES),
                        help="only these processes (repeatable; default all)")
    args = parser.parse_args(argv)
    events = QUICK_EVENTS if args.quick else EVENTS
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(_job("dy", 2, seed=5), Path(tmp) / "warmup", progress=False)  # imports, banners
        for process in args.process or list(PROCESSES):
            records += measure(process, events, Path(tmp) / process)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=2))
    print(f"{'process':<11} {'ecm':>6} {'events':>6} {'accepted/s':>10} {'generated/s':>11} "
          f"{'acceptance':>10} {'sigma (pb)':>11}")
    for rate, acc in zip(records[::2], records[1::2]):
        p = rate["params"]
        print(f"{p['process']:<11} {p['ecm']:>6.0f} {p['events']:>6} {rate['value']:>10.1f} "
              f"{acc['params']['generated_per_s']:>11.1f} {acc['value']:>10.3f} "
              f"{acc['params']['cross_section_pb']:>11.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
