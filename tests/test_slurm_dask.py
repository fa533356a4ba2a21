"""dask-jobqueue on a real Slurm (tests/slurm.py): `--executor dask --cluster slurm.yaml` starts its
Dask workers as Slurm jobs, `generate` and `shard` there give the bytes of the local executor, and
the jobs are gone from the queue at the end, also when the run fails, no worker ever starts, or the
batch system refuses the workers' jobs."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from engine.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ["generate", "--process", "dy", "--events", "12", "--task-events", "3", "--seed", "11",
            "--no-progress"]

pytestmark = pytest.mark.slurm


def cluster_file(folder: Path, workers: int = 2, **extra) -> Path:
    """configs/cluster/slurm.yaml with the test cluster's partition and small jobs; the scheduler
    and the workers on loopback, the workers' environment set by the job script's prologue."""
    spec = yaml.safe_load((ROOT / "configs" / "cluster" / "slurm.yaml").read_text())
    spec["workers"] = workers
    spec["options"].update(queue="debug", memory="1GB", walltime="00:10:00", interface="lo",
                           log_directory=str(folder / "worker-logs"), local_directory=str(folder / "worker-space"),
                           job_script_prologue=[f"export PYTHONPATH={ROOT}", "export OMP_NUM_THREADS=1"],
                           job_extra_directives=[], scheduler_options={"dashboard_address": ":0"})
    spec["options"].update(extra.pop("options", {}))
    spec.update(extra)
    path = folder / "slurm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_generate_and_shard_on_dask_workers_in_slurm_jobs_give_the_local_bytes(slurm_cluster, tmp_path,
                                                                                 monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    assert main([*GENERATE, "--out", str(tmp_path / "local")]) == 0
    shard = ["shard", "--split", "0.5,0.25,0.25", "--events-per-member", "4"]
    assert main([*shard, "--input", str(tmp_path / "local" / "dy"), "--out", str(tmp_path / "local-shards")]) == 0
    dask = ["--executor", "dask", "--cluster", str(cluster_file(tmp_path))]
    code, err = _run([*GENERATE, "--out", str(tmp_path / "slurm"), *dask], capsys)
    assert code == 0, err
    assert slurm_cluster.queue() == [] or _wait_empty(slurm_cluster)
    logs = sorted((tmp_path / "worker-logs").glob("*.err"))
    assert len(logs) == 2 and all("Registered to" in p.read_text() for p in logs)     # two Slurm jobs
    assert _files(tmp_path / "slurm" / "dy") == _files(tmp_path / "local" / "dy")
    code, err = _run([*shard, "--input", str(tmp_path / "local" / "dy"), "--out", str(tmp_path / "shards"),
                      *dask], capsys)
    assert code == 0, err
    assert _wait_empty(slurm_cluster)
    assert _files(tmp_path / "shards") == _files(tmp_path / "local-shards")


def _wait_empty(cluster) -> bool:
    cluster.wait_for_empty_queue(60)
    return True


def test_a_failed_run_releases_its_workers(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out = tmp_path / "out"
    (out / "dy" / "part-000002.parquet").mkdir(parents=True)      # task 2 cannot write its part
    code, err = _run([*GENERATE, "--out", str(out), "--executor", "dask", "--cluster",
                      str(cluster_file(tmp_path, workers=1))], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "part-000002.parquet" in err and "is a folder" in err
    assert sorted(p.name for p in (out / "dy").glob("part-*.parquet") if p.is_file()) == \
        ["part-000000.parquet", "part-000001.parquet", "part-000003.parquet"]
    assert _wait_empty(slurm_cluster)


def test_no_worker_within_the_start_timeout_is_one_line_and_cancels_the_jobs(slurm_cluster, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    never = cluster_file(tmp_path, start_timeout_s=4, options={"job_extra_directives": ["--begin=now+1hour"]})
    code, err = _run([*GENERATE, "--out", str(tmp_path / "out"), "--executor", "dask", "--cluster",
                      str(never)], capsys)
    assert code == 2 and err.strip() == (f"error: {never}: no Dask worker started within 4 s "
                                         "(start_timeout_s): check squeue and the workers' job logs; the "
                                         "cluster's jobs were cancelled"), err
    assert _wait_empty(slurm_cluster)
    assert not list((tmp_path / "out").rglob("part-*"))


def test_a_worker_job_the_batch_system_refuses_is_one_line_at_once(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    refused = cluster_file(tmp_path, start_timeout_s=600, options={"queue": "nosuch"})
    start = time.monotonic()
    code, err = _run([*GENERATE, "--out", str(tmp_path / "out"), "--executor", "dask", "--cluster",
                      str(refused)], capsys)
    assert code == 2 and err.strip() == (f"error: {refused}: the batch system refused the worker jobs: "
                                         "sbatch: error: invalid partition specified: nosuch"), err
    assert time.monotonic() - start < 60 and _wait_empty(slurm_cluster)
