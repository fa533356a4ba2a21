"""Array jobs on a real Slurm (tests/slurm.py): a slice comes from the array element's environment,
an `sbatch --array=0-3` of configs/batch/generate.sbatch gives the events of one local run byte for
byte, and an element cancelled and resubmitted alone completes the dataset with the same bytes;
likewise for `convert` (`sbatch --array=1-3 --wrap ...`), one input per element. The batch scripts
in configs/batch/ are checked without Slurm."""
from __future__ import annotations

import argparse

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.__main__ import main
from engine.data.canonical import parquet_io
from engine.data.tasks import TaskSlice
from engine.data.tasks.spec import array_slice
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ["generate", "--process", "dy", "--events", "12", "--task-events", "3", "--seed", "11",
            "--no-progress"]


def _array(task: int, count: int, first: int = 0, step: int | None = None) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
           "SLURM_ARRAY_TASK_COUNT": str(count)}
    return env if step is None else {**env, "SLURM_ARRAY_TASK_STEP": str(step)}


def test_the_slice_comes_from_the_array_elements_environment():
    assert array_slice({}) == TaskSlice()
    assert array_slice(_array(2, 4)) == TaskSlice(2, 4)
    assert array_slice(_array(4, 4, first=1)) == TaskSlice(3, 4)           # --array=1-4
    assert array_slice(_array(6, 4, step=2)) == TaskSlice(3, 4)            # --array=0-6:2
    assert array_slice(_array(10, 3, first=10, step=5)) == TaskSlice(0, 3)
    assert array_slice({**_array(7, 3, first=1, step=3), "SLURM_ARRAY_TASK_MAX": "7"}) == TaskSlice(2, 3)
    assert array_slice({**_array(3, 1, first=3), "SLURM_ARRAY_TASK_MAX": "3"}) == TaskSlice()   # --array=3


@pytest.mark.parametrize("env, needle", [
    ({**_array(0, 2), "SLURM_ARRAY_TASK_ID": "x"}, "SLURM_ARRAY_TASK_ID: expected a whole number, got 'x'"),
    ({**_array(0, 2), "SLURM_ARRAY_TASK_COUNT": ""}, "SLURM_ARRAY_TASK_COUNT: expected a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT: is not set, but SLURM_ARRAY_TASK_ID is"),
    (_array(5, 3), "SLURM_ARRAY_TASK_ID: 5 is not element 0..2 of an array 0..2 in steps of 1"),
    (_array(3, 3, step=2), "SLURM_ARRAY_TASK_ID: 3 is not element 0..2 of an array 0..4 in steps of 2"),
    (_array(0, 3, first=1), "SLURM_ARRAY_TASK_ID: 0 is not element"),
    ({**_array(7, 2, first=3), "SLURM_ARRAY_TASK_MAX": "7"}, "SLURM_ARRAY_TASK_ID: the array is a list of 2"),
    ({**_array(1, 2), "SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_ID: 1 is not element 0..1"),
])
def test_a_bad_array_environment_is_one_line_naming_the_variable(env, needle, tmp_path, monkeypatch, capsys):
    with pytest.raises(InputError):
        array_slice(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*GENERATE, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {needle}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_explicit_slice_options_win_over_the_environment(tmp_path, monkeypatch, capsys):
    for name, value in {**_array(0, 2), "SLURM_ARRAY_TASK_ID": "x"}.items():
        monkeypatch.setenv(name, value)
    assert main([*GENERATE, "--out", str(tmp_path), "--task-index", "1", "--num-tasks", "4"]) == 0
    assert "1 task(s) run" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "dy").glob("part-*")) == ["part-000001.parquet"]


def test_a_slice_from_the_environment_is_said_on_stderr(capsys):
    from engine.data.tasks.spec import task_slice
    args = argparse.Namespace(task_index=None, num_tasks=None)
    assert task_slice(args, _array(1, 4)) == TaskSlice(1, 4)
    assert "slice 1 of 4 from the Slurm array element's environment" in capsys.readouterr().err
    assert task_slice(args, {}) == TaskSlice() and capsys.readouterr().err == ""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _job_env(cluster) -> dict[str, str]:
    return {**cluster.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ENGINE_PYTHON": sys.executable}


def _logs(folder: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-600:]}" for p in sorted(folder.glob("*.out")))


@pytest.mark.slurm
def test_an_array_of_generate_gives_one_runs_bytes_and_a_cancelled_element_reruns_alone(
        slurm_cluster, tmp_path, capsys):
    assert main([*GENERATE, "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    out, logs = tmp_path / "array", tmp_path / "logs"
    logs.mkdir()
    script = [str(ROOT / "configs" / "batch" / "generate.sbatch"), *GENERATE[1:], "--out", str(out)]
    common = [f"--output={logs}/%A_%a.out", f"--chdir={ROOT}"]
    job = slurm_cluster.submit("--array=0-3", *common, *script, env=_job_env(slurm_cluster))
    slurm_cluster.cancel(f"{job}_3")             # pending (2 CPUs: elements 0 and 1 run first)
    _cancel_when_running(slurm_cluster, job, "0")
    states = slurm_cluster.wait(job)
    # a pending element cancelled leaves no record of its own; a running one ends CANCELLED
    assert states.pop("3", "CANCELLED") == "CANCELLED", _logs(logs)
    assert states.pop("0") in ("CANCELLED", "COMPLETED") and states == {"1": "COMPLETED", "2": "COMPLETED"}
    with pytest.raises(InputError, match="unfinished dataset: [23] of 4 parts"):
        parquet_io.list_parquet(out)
    again = slurm_cluster.submit("--array=3", *common, *script, env=_job_env(slurm_cluster))
    assert slurm_cluster.wait(again) == {"3": "COMPLETED"}, _logs(logs)
    assert _files(out / "dy") == _files(tmp_path / "local" / "dy")      # no temporary left either
    # an array of one element is the whole task list: it runs what the cancelled elements left
    assert "4 of 4 parts" in (logs / f"{again}_3.out").read_text()


def _cancel_when_running(cluster, job: str, element: str, seconds: float = 60.0) -> None:
    """scancel one element of `job` as soon as it runs (SIGTERM, then SIGKILL: mid-start or mid-task)."""
    end = time.monotonic() + seconds
    while cluster.states(job).get(element, "PENDING") == "PENDING" and time.monotonic() < end:
        time.sleep(0.05)
    cluster.cancel(f"{job}_{element}")


@pytest.mark.slurm
def test_an_array_of_convert_converts_one_input_per_element(slurm_cluster, tmp_path, capsys):
    from tests.rootfiles import nanoaod_branches, write_root

    inputs = [write_root(tmp_path / f"in{i}.root", "Events", [nanoaod_branches(200, seed=i)]) for i in range(3)]
    argv = ["convert", *map(str, inputs), "--label", "ttbar"]
    assert main([*argv, "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    logs = tmp_path / "logs"
    logs.mkdir()
    command = " ".join([sys.executable, "-m", "engine", *argv, "--out", str(tmp_path / "array")])
    job = slurm_cluster.submit("--array=1-3", f"--output={logs}/%A_%a.out", f"--chdir={ROOT}", "--wrap", command,
                               env=_job_env(slurm_cluster))
    assert set(slurm_cluster.wait(job).values()) == {"COMPLETED"}, _logs(logs)
    local, array = _files(tmp_path / "local"), _files(tmp_path / "array")
    assert array.keys() == local.keys() and {"convert.json", "in0.parquet"} <= set(array)
    assert all(array[name] == local[name] for name in array if name != "convert.json")
    record = json.loads(array["convert.json"])
    assert record == json.loads(local["convert.json"])
    assert all(f"(slice {i - 1} of 3)" in (logs / f"{job}_{i}.out").read_text() for i in (1, 2, 3))


def test_the_batch_scripts_parse_and_take_the_slice_as_documented():
    scripts = sorted((ROOT / "configs" / "batch").glob("*.sbatch"))
    assert [p.name for p in scripts] == ["generate.sbatch", "train.sbatch"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "#SBATCH --job-name=engine-" in script.read_text()
    condor = (ROOT / "configs" / "batch" / "generate.sub").read_text()
    assert "--task-index $(Process) --num-tasks $(N)" in condor and "\nqueue $(N)\n" in condor


def test_slurm_is_skipped_with_the_reason_where_it_cannot_run(monkeypatch):
    from tests import slurm
    monkeypatch.setattr(slurm.os, "geteuid", lambda: 1000)
    assert slurm.skip_reason().startswith("needs root")
    monkeypatch.setattr(slurm.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm.skip_reason() == f"needs {', '.join(slurm.BINARIES)} (apt-get install slurm-wlm munge)"
