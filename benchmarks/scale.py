"""Scale-out figures: the Dask executor against the local pool, generation against bare Pythia, and
`shard`'s peak memory and speed as the number of events grows.

    python -m benchmarks.scale [--quick] --out FILE.json [--shard-sizes 1000000,10000000,30000000]

Records:
  generate_executor_events_per_s  accepted events/s of one generation run (params: executor, workers)
  generate_dask_overhead          1 - dask rate / local pool rate, same workers (target <= 0.05)
  generate_overhead_over_pythia   time of a generation task / time of Pythia alone making the same
                                  events with the same seed, minus 1 (target <= 0.15)
  shard_peak_rss, shard_events_per_s, shard_events_per_s_per_core   (benchmarks.scale_shard)
  shard_peak_rss_growth           peak RSS at the largest size / at the smallest, minus 1 (target <= 0.2)
Every generation run is checked first: the parts of each executor are byte-identical.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record, write_results
from engine.data.canonical.selection import load_selection
from engine.data.generation import runner
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.generate import GenerateJob, make_worker_pythia, run_task, task_seeds
from engine.data.generation.processes import PROCESSES, get_process
from engine.data.tasks import ExecutorSpec

PROCESS = "dy"
FULL = {"events": 1600, "task_events": 200, "pythia_events": 400, "shard_sizes": "1000000,10000000,30000000"}
QUICK = {"events": 80, "task_events": 20, "pythia_events": 60, "shard_sizes": "20000,60000"}


def _job(events: int, task_events: int, seed: int = 1, process: str = PROCESS) -> GenerateJob:
    return GenerateJob(process, events, PROCESSES[process].ecm_gev, seed, load_selection("madrazo2017"),
                       DetectorConfig(), task_events)


def _parts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def measure_executors(events: int, task_events: int, workdir: Path) -> list[dict]:
    """Local pool and Dask (a LocalCluster started beforehand, as a running cluster is) with 1 and 2
    workers on the same job; their parts must be identical."""
    from distributed import LocalCluster

    records, rates, reference = [], {}, None
    for workers in (1, 2):
        for executor in ("local", "dask"):
            out = workdir / f"{executor}-{workers}"
            if executor == "local":
                summary = runner.generate(_job(events, task_events), out, ExecutorSpec(workers=workers),
                                          progress=False)
            else:
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster:
                    spec = ExecutorSpec(kind="dask", scheduler=cluster.scheduler_address)
                    summary = runner.generate(_job(events, task_events), out, spec, progress=False)
            parts = _parts(out / PROCESS)
            reference = reference or parts
            if parts != reference:
                raise SystemExit(f"{executor} with {workers} worker(s) wrote other parts than the first run")
            rates[executor, workers] = summary["rate_per_s"]
            records.append(record("generate_executor_events_per_s", summary["rate_per_s"], "events/s",
                                  process=PROCESS, executor=executor, workers=workers, events=events,
                                  task_events=task_events, tasks=summary["tasks"]))
        overhead = 1.0 - rates["dask", workers] / rates["local", workers]
        records.append(record("generate_dask_overhead", overhead, "fraction", process=PROCESS, workers=workers,
                              events=events, task_events=task_events))
    return records


def measure_pythia_overhead(process: str, events: int, workdir: Path) -> list[dict]:
    """One task in this process (Pythia, detector, FastJet, Parquet) against Pythia alone making the
    same number of events from the same seed (both with Pythia's initialisation)."""
    job = _job(events, events, process=process)
    start = time.perf_counter()
    counts = run_task(job, 0, events, workdir / "part.parquet", job.settings())
    full = time.perf_counter() - start
    generated = counts["generated"]
    start = time.perf_counter()
    pythia = make_worker_pythia(get_process(process), job.ecm_gev, task_seeds(job.seed, 0)[0])
    made = 0
    while made < generated:
        made += len(pythia.nextBatch(min(200, generated - made)))
    bare = time.perf_counter() - start
    return [record("generate_overhead_over_pythia", full / bare - 1.0, "fraction", process=process,
                   accepted=events, generated=generated, task_seconds=round(full, 2),
                   pythia_seconds=round(bare, 2))]


def peak_growth(shard: list[dict]) -> list[dict]:
    """Peak RSS at the largest size over the smallest, minus 1 (one shard process: per core too)."""
    peaks = sorted((r["params"]["events"], r["value"]) for r in shard if r["name"] == "shard_peak_rss")
    rates = [r for r in shard if r["name"] == "shard_events_per_s"]
    memory_gb = shard[0]["params"]["memory_gb"]
    out = [record("shard_events_per_s_per_core", r["value"] / r["params"]["workers"], "events/s",
                  **r["params"]) for r in rates]
    if len(peaks) > 1:
        out.append(record("shard_peak_rss_growth", peaks[-1][1] / peaks[0][1] - 1.0, "fraction",
                          memory_gb=memory_gb, events_from=peaks[0][0], events_to=peaks[-1][0],
                          peak_mib_from=round(peaks[0][1]), peak_mib_to=round(peaks[-1][1])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    parser.add_argument("--shard-sizes", default=None, help="events of the shard runs, comma-separated")
    parser.add_argument("--memory-gb", default="0.5,2", help="shard --memory-gb values, comma-separated")
    parser.add_argument("--only", choices=("generate", "shard"), default=None)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        runner.generate(_job(2, 2, seed=5), Path(tmp) / "warmup", progress=False)   # imports, banners
        if args.only in (None, "generate"):
            records += measure_executors(sizes["events"], sizes["task_events"], Path(tmp) / "executors")
            for process in ("ttbar", "dy"):
                records += measure_pythia_overhead(process, sizes["pythia_events"], Path(tmp))
        if args.only in (None, "shard"):
            from benchmarks.scale_shard import measure_shard
            shard_sizes = [int(n) for n in (args.shard_sizes or sizes["shard_sizes"]).split(",")]
            for memory_gb in (float(m) for m in args.memory_gb.split(",")):
                shard = measure_shard(shard_sizes, memory_gb, Path(tmp))
                records += shard + peak_growth(shard)
    write_results(args.out, records)
    for r in records:
        print(f"{r['name']:<34} {r['value']:>14.4g} {r['unit']:<9} "
              f"{', '.join(f'{k}={v}' for k, v in r['params'].items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
