"""Generation as tasks: the same parts, byte for byte, from one process, a local pool, a Dask
LocalCluster, a real `dask scheduler` with two `dask worker` processes on loopback, and array-job
slices; resume keeps complete parts; failed tasks are named and the others stay valid."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.__main__ import main
from engine.data.canonical import parquet_io, parts
from engine.data.canonical.selection import load_selection
from engine.data.generation import runner
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.generate import GenerateJob, task_seeds
from engine.data.tasks import ClusterConfig, ExecutorSpec, TaskSlice
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EVENTS, TASK_EVENTS, SEED = 12, 4, 11          # three tasks of dy


def _job(events: int = EVENTS, seed: int = SEED) -> GenerateJob:
    return GenerateJob("dy", events, 7000.0, seed, load_selection("madrazo2017"), DetectorConfig(), TASK_EVENTS)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    summary = runner.generate(_job(), out, progress=False)
    assert summary["complete"] and summary["tasks_run"] == 3 and summary["accepted"] == EVENTS
    return _files(out / "dy")


def test_the_dataset_lists_every_part_with_its_seed_and_events(reference, tmp_path):
    (tmp_path / "dy").mkdir()
    for name, data in reference.items():
        (tmp_path / "dy" / name).write_bytes(data)
    doc = parts.read_document(tmp_path / "dy")
    assert doc["complete"] and doc["tasks"] == 3 and doc["events"] == EVENTS
    assert [p["name"] for p in doc["parts"]] == [parts.part_name(i) for i in range(3)]
    assert [p["accepted"] for p in doc["parts"]] == [4, 4, 4] and doc["settings"]["seed"] == SEED
    assert [p["pythia_seed"] for p in doc["parts"]] == [task_seeds(SEED, i)[0] for i in range(3)]
    assert doc["accepted"] == EVENTS and doc["generated"] >= EVENTS and doc["cross_section_pb"] > 0
    table = pq.read_table(tmp_path / "dy")
    assert sorted(set(table.column("lumi").to_pylist())) == [1, 2, 3]      # lumi = task + 1
    assert len(parquet_io.list_parquet(tmp_path)) == 3


def test_local_pool_and_dask_local_cluster_give_the_same_bytes(reference, tmp_path):
    runner.generate(_job(), tmp_path / "pool", ExecutorSpec(workers=2), progress=False)
    assert _files(tmp_path / "pool" / "dy") == reference
    dask = ExecutorSpec(kind="dask", cluster=ClusterConfig(type="local", workers=2))
    runner.generate(_job(), tmp_path / "dask", dask, progress=False)
    assert _files(tmp_path / "dask" / "dy") == reference


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_scheduler(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on loopback, stopped at the end."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
              "--no-dashboard", "--local-directory", str(tmp_path / "workers")]
    procs += [subprocess.Popen(worker + ["--name", f"w{i}"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        _wait_for_workers(address, 2)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout="5s") as client:
                client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_a_real_dask_scheduler_and_workers_give_the_same_bytes(reference, tmp_path, dask_scheduler, capsys):
    code = main(["generate", "--process", "dy", "--events", str(EVENTS), "--task-events", str(TASK_EVENTS),
                 "--seed", str(SEED), "--out", str(tmp_path / "out"), "--executor", "dask",
                 "--scheduler", dask_scheduler, "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert _files(tmp_path / "out" / "dy") == reference


def test_array_slices_together_equal_one_run(reference, tmp_path, capsys):
    out = tmp_path / "array"
    for index in (2, 0, 1):                     # any order; the last one lists the parts
        summary = runner.generate(_job(), out, tasks=TaskSlice(index, 3), progress=False)
        assert summary["tasks_run"] == 1
        assert summary["complete"] == (index == 1)
        if index != 1:
            with pytest.raises(InputError, match="unfinished dataset"):
                parquet_io.list_parquet(out)
    assert _files(out / "dy") == reference
    code = main(["generate", "--process", "dy", "--events", "5", "--out", str(tmp_path / "x"),
                 "--task-index", "3", "--num-tasks", "3"])
    assert code == 2 and "--task-index: must be in 0..2" in capsys.readouterr().err


def test_a_rerun_skips_complete_parts_and_redoes_broken_ones(reference, tmp_path):
    out = tmp_path / "resume"
    runner.generate(_job(), out, progress=False)
    folder = out / "dy"
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*")}
    again = runner.generate(_job(), out, progress=False)
    assert again["tasks_run"] == 0 and again["tasks_skipped"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*")} == mtimes
    broken = folder / parts.part_name(1)
    broken.write_bytes(broken.read_bytes()[:-100])          # truncated: regenerated, not read
    (folder / parts.part_name(2)).unlink()
    fixed = runner.generate(_job(), out, progress=False)
    assert fixed["tasks_run"] == 2 and _files(folder) == reference
    more = runner.generate(_job(events=EVENTS + 2), out, progress=False)   # one more task
    assert more["tasks_run"] == 1 and more["accepted"] == EVENTS + 2
    assert (folder / parts.part_name(0)).stat().st_mtime_ns == mtimes[parts.part_name(0)]


def test_parts_of_other_settings_are_never_mixed_in(reference, tmp_path, capsys):
    out = tmp_path / "mixed"
    runner.generate(_job(), out, progress=False)
    code = main(["generate", "--process", "dy", "--events", str(EVENTS), "--task-events", str(TASK_EVENTS),
                 "--seed", str(SEED + 1), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {out / 'dy'}: holds a dataset generated with other settings " \
                                f"(seed {SEED} -> {SEED + 1}): use another --out"
    (out / "dy" / parts.DATASET).unlink()                   # the parts alone still tell
    code = main(["generate", "--process", "dy", "--events", str(EVENTS), "--task-events", str(TASK_EVENTS),
                 "--seed", str(SEED + 1), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "part-000000.parquet: was generated with other settings (seed" in err
    code = main(["generate", "--process", "dy", "--events", "4", "--task-events", str(TASK_EVENTS),
                 "--seed", str(SEED), "--out", str(out)])
    assert code == 2 and "beyond this run's 1 task(s)" in capsys.readouterr().err


def _fail_task_one(job, task, *rest):
    if task == 1:
        raise RuntimeError("the worker's disk is full")
    return _real_run_task(job, task, *rest)


_real_run_task = runner.run_task


def test_a_failing_task_is_retried_then_named_and_the_others_stay(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fail"
    monkeypatch.setattr(runner, "run_task", _fail_task_one)
    code = main(["generate", "--process", "dy", "--events", str(EVENTS), "--task-events", str(TASK_EVENTS),
                 "--seed", str(SEED), "--out", str(out), "--retries", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "1 of 3 task(s) failed" in err and "dy-000001: RuntimeError: the worker's disk is full" in err
    assert "after 2 attempts" in err and "rerun the same command" in err
    assert sorted(p.name for p in (out / "dy").glob("part-*")) == [parts.part_name(0), parts.part_name(2)]
    with pytest.raises(InputError, match="unfinished dataset: 2 of 3 parts"):
        parquet_io.list_parquet(out)
    monkeypatch.setattr(runner, "run_task", _real_run_task)
    again = runner.generate(_job(), out, progress=False)
    assert again["tasks_run"] == 1 and _files(out / "dy") == reference


def test_bad_executor_options_are_one_line(tmp_path, capsys):
    (tmp_path / "cluster.yaml").write_text("type: kubernetes\n")
    cases = [(["--executor", "dask"], "needs exactly one of --scheduler"),
             (["--scheduler", "tcp://127.0.0.1:1"], "only go with --executor dask"),
             (["--executor", "dask", "--cluster", str(tmp_path / "cluster.yaml")],
              f"{tmp_path / 'cluster.yaml'}: cluster.type: must be one of local, slurm, htcondor"),
             (["--executor", "dask", "--cluster", str(tmp_path / "none.yaml")], "no such config file"),
             (["--task-index", "0"], "give both or neither"), (["--retries", "-1"], "--retries")]
    for extra, needle in cases:
        code = main(["generate", "--process", "dy", "--events", "2", "--out", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and len(err.splitlines()) == 1, (extra, err)
    assert not (tmp_path / "out").exists()
