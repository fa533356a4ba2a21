"""The batch system's overhead: a 4-element `sbatch --array` of `generate` against the same work run
locally, each from its command's start (or the submission) to a complete dataset.

    python -m benchmarks.slurm [--quick] --out FILE.json [--rounds R]

Starts its own one-node Slurm on loopback (tests/slurm.py: needs root, slurm-wlm and munge; CPUs =
this machine's cores, so as many array elements run at once as local workers). Records:
  slurm_array_seconds       submission to every element ended, the dataset complete (params: round)
  local_generate_seconds    `python -m engine generate` with --workers 1 and 2, start to end
  slurm_array_overhead      array seconds / local seconds (2 workers) - 1, per round
  slurm_empty_array_seconds submission to the end of a 4-element array of `true`: the scheduler alone
Correctness first: the array's folder (parts and _dataset.json) is byte for byte the local one.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, print_table, record, write_results

PROCESS, SEED, ELEMENTS = "dy", 3, 4
FULL = {"task_events": 400, "rounds": 2}
QUICK = {"task_events": 20, "rounds": 1}


def _argv(task_events: int, out: Path) -> list[str]:
    return ["--process", PROCESS, "--events", str(task_events * ELEMENTS), "--task-events", str(task_events),
            "--seed", str(SEED), "--out", str(out)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def time_local(task_events: int, workers: int, out: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine", "generate", *_argv(task_events, out), "--no-progress",
                    "--workers", str(workers)], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def time_array(cluster, task_events: int, out: Path, logs: Path) -> float:
    env = {**cluster.env, "ENGINE_PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    job = cluster.submit(f"--array=0-{ELEMENTS - 1}", f"--output={logs}/%A_%a.out", f"--chdir={ROOT}",
                         str(ROOT / "configs" / "batch" / "generate.sbatch"), *_argv(task_events, out), env=env)
    states = cluster.wait(job, 600)
    seconds = time.perf_counter() - start
    if set(states.values()) != {"COMPLETED"}:
        raise SystemExit(f"array job {job} ended {states}; logs in {logs}")
    return seconds


def time_empty_array(cluster, logs: Path) -> float:
    start = time.perf_counter()
    job = cluster.submit(f"--array=0-{ELEMENTS - 1}", f"--output={logs}/empty-%A_%a.out", "--wrap", "true")
    cluster.wait(job, 120)
    return time.perf_counter() - start


def measure(cluster, task_events: int, rounds: int, workdir: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    params = {"process": PROCESS, "tasks": ELEMENTS, "task_events": task_events, "cpus": cluster.cpus}
    time_local(2, 1, workdir / "warmup", env)                 # imports and Pythia's files in the page cache
    records = []
    for r in range(rounds):
        local = {w: time_local(task_events, w, workdir / f"local-{r}-{w}", env) for w in (1, 2)}
        logs = workdir / f"logs-{r}"
        logs.mkdir()
        array = time_array(cluster, task_events, workdir / f"array-{r}", logs)
        if _files(workdir / f"array-{r}" / PROCESS) != _files(workdir / f"local-{r}-2" / PROCESS):
            raise SystemExit("the array's dataset differs from the local run's")
        records.append(record("slurm_array_seconds", array, "s", round=r, **params))
        records += [record("local_generate_seconds", s, "s", workers=w, round=r, **params) for w, s in local.items()]
        records.append(record("slurm_array_overhead", array / local[2] - 1.0, "fraction", round=r, **params))
        records.append(record("slurm_empty_array_seconds", time_empty_array(cluster, logs), "s", round=r,
                              tasks=ELEMENTS, cpus=cluster.cpus))
    return records


def main(argv: list[str] | None = None) -> int:
    from tests.slurm import SlurmCluster, skip_reason

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny tasks, one round (under a minute)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of local and array runs")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    reason = skip_reason()
    if reason:
        raise SystemExit(f"cannot start Slurm here: {reason}")
    with tempfile.TemporaryDirectory(prefix="engine-slurm-") as daemons, tempfile.TemporaryDirectory() as tmp:
        cluster = SlurmCluster(Path(daemons)).start()
        try:
            records = measure(cluster, sizes["task_events"], args.rounds or sizes["rounds"], Path(tmp))
        finally:
            cluster.stop()
    write_results(args.out, records)
    print_table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
