"""engine.data.tasks: results in task order on every executor, retries, failures named, a killed
worker, slices that cover the tasks once, and the cluster specs in configs/cluster/."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from engine.config import from_dict, load_yaml
from engine.data.tasks import (ClusterConfig, ExecutorSpec, Task, TaskFailures, TaskSlice, add_executor_arguments,
                               executor_spec, run_tasks)
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def square(x: int) -> int:
    return x * x


def bad_input(name: str) -> None:
    raise InputError(name, "is not a ROOT file")


def fails_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("a transient failure")
    return "ok"


def kills_its_worker(_: int) -> None:
    os._exit(3)


SPECS = [ExecutorSpec(), ExecutorSpec(workers=2),
         ExecutorSpec(kind="dask", cluster=ClusterConfig(type="local", workers=2))]


@pytest.mark.parametrize("spec", SPECS, ids=["here", "pool", "dask"])
def test_results_in_task_order_and_a_transient_failure_retried(spec, tmp_path):
    tasks = [Task(f"t{i}", square, (i,), events=i) for i in range(7)]
    tasks.append(Task("flaky", fails_once, (str(tmp_path / "marker"),)))
    assert run_tasks(tasks, spec, progress=False) == [i * i for i in range(7)] + ["ok"]


@pytest.mark.parametrize("spec", SPECS, ids=["here", "pool", "dask"])
def test_failures_are_named_after_the_others_completed(spec, tmp_path):
    tasks = [Task("good", square, (3,)), Task("input-7", bad_input, ("in7.root",)),
             Task("flaky", fails_once, (str(tmp_path / "m"),))]
    with pytest.raises(TaskFailures) as err:
        run_tasks(tasks, ExecutorSpec(**{**spec.__dict__, "retries": 0}), progress=False)
    assert str(err.value).startswith("2 of 3 task(s) failed: input-7: in7.root: is not a ROOT file; "
                                     "flaky: RuntimeError: a transient failure")
    outcomes = run_tasks(tasks, spec, progress=False, keep_failures=True)
    assert outcomes[0] == 9 and outcomes[2] == "ok" and outcomes[1].bad_input


def test_the_same_bad_input_in_every_task_is_the_runs_own_error():
    with pytest.raises(InputError) as err:
        run_tasks([Task(f"t{i}", bad_input, ("--ecm",)) for i in range(3)], ExecutorSpec(), progress=False)
    assert not isinstance(err.value, TaskFailures) and str(err.value) == "--ecm: is not a ROOT file"


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS[1:], ids=["pool", "dask"])
def test_a_task_that_kills_its_worker_fails_alone(spec):
    tasks = [Task(f"t{i}", square, (i,)) for i in range(4)] + [Task("killer", kills_its_worker, (0,))]
    outcomes = run_tasks(tasks, ExecutorSpec(**{**spec.__dict__, "retries": 1}), progress=False,
                         keep_failures=True)
    assert outcomes[:4] == [0, 1, 4, 9]
    assert outcomes[4].name == "killer" and not outcomes[4].bad_input and "after 2 attempts" in outcomes[4].problem


def test_slices_cover_every_task_once():
    for n in (0, 1, 5, 17):
        for count in (1, 2, 3, 8):
            covered = [i for index in range(count) for i in TaskSlice(index, count).select(n)]
            assert covered == list(range(n))
    for index, count in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(InputError):
            TaskSlice(index, count)


def _spec(*argv: str) -> ExecutorSpec:
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    return executor_spec(parser.parse_args(list(argv)))


def test_the_cluster_specs_in_configs_load_and_reach_dask_jobqueue():
    files = (ROOT / "configs" / "cluster").glob("*.yaml")
    specs = {p.stem: _spec("--executor", "dask", "--cluster", str(p)) for p in files}
    assert set(specs) == {"local", "slurm", "htcondor"}
    assert specs["local"].cluster == ClusterConfig(type="local", workers=2, threads_per_worker=1)
    import dask_jobqueue
    for name, cls in (("slurm", dask_jobqueue.SLURMCluster), ("htcondor", dask_jobqueue.HTCondorCluster)):
        config = specs[name].cluster
        with cls(**config.options) as cluster:     # starts a scheduler; submits nothing before scale()
            script = cluster.job_script()
        assert ("#SBATCH" if name == "slurm" else "RequestCpus") in script
        assert "distributed.cli.dask_worker" in script and "--nthreads 1" in script


def test_bad_cluster_files_are_one_line(tmp_path):
    cases = {"workers: 0\n": "cluster.workers: must be at least 1, got 0",
             "type: slurm\noptions: [1]\n": "cluster.options: expected a mapping",
             "nodes: 3\n": "cluster.nodes: unknown key"}
    for text, needle in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(InputError) as err:
            _spec("--executor", "dask", "--cluster", str(path))
        assert err.value.source == str(path) and needle in err.value.problem, str(err.value)
    assert from_dict(ClusterConfig, load_yaml(ROOT / "configs" / "cluster" / "slurm.yaml")).workers == 20
