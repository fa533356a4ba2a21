"""Training under a real Slurm (tests/slurm.py) with configs/batch/train.sbatch: srun starts
`accelerate launch` with two CPU processes (gloo), which read the shards and see every training
event once per epoch; a job cancelled with scancel (SIGTERM, then SIGKILL) and submitted again
resumes from its last complete checkpoint and ends bit-identical to the uninterrupted job."""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.events import synthetic_shards
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "configs" / "batch" / "train.sbatch"
# 210 training events, 2 processes, batches of 32: 4 steps per epoch, 64 in all; checkpoints every
# 3 steps and at each epoch's end, log rows every 2 steps and at each validation
TRAIN = ["model.name=ffn", "model.options={hidden: 32, depth: 2, dropout: 0.3}", "data.signal=ttbar",
         "train.batch_size=32", "train.epochs=16", "train.log_every_steps=2", "train.checkpoint_every_steps=3",
         "train.seed=5", "train.lr=0.003", "train.record_events=true"]
TIMING = ("seconds", "images_per_s")

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("slurm_train"), 100, seed=2, events_per_member=32)


def _submit(cluster, shards: Path, out: Path, logs: Path) -> str:
    env = {**cluster.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "ENGINE_PYTHON": sys.executable, "ENGINE_PROCS_PER_NODE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    return cluster.submit("--cpus-per-task=2", f"--output={logs}", f"--chdir={ROOT}", str(SCRIPT), *TRAIN,
                          f"data.shards={shards}", f"output_dir={out}", env=env)


def _log_rows(out: Path) -> list[dict]:
    if not (out / "log.csv").exists():
        return []
    with (out / "log.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _cancel_at_rows(cluster, job: str, out: Path, rows: int, seconds: float = 180.0) -> None:
    """scancel `job` as soon as its log.csv holds `rows` rows (a point in the run's progress)."""
    end = time.monotonic() + seconds
    while len(_log_rows(out)) < rows:
        assert time.monotonic() < end and cluster.states(job)[""] in ("PENDING", "RUNNING"), cluster.states(job)
        time.sleep(0.02)
    cluster.cancel(job)


def test_a_job_cancelled_and_submitted_again_ends_as_the_uninterrupted_job(slurm_cluster, shards, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    log_straight, log_resumed = tmp_path / "straight.out", tmp_path / "resumed.out"
    job = _submit(slurm_cluster, shards, straight, log_straight)
    assert slurm_cluster.wait(job, 300) == {"": "COMPLETED"}, log_straight.read_text(errors="replace")[-3000:]
    text = log_straight.read_text(errors="replace")
    assert "1 node(s) x 2 process(es)" in text and "4 batches x 2 process(es) per epoch" in text

    n_train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["events"]
    for epoch in range(16):                       # every training event once per epoch, over both ranks
        seen = np.concatenate([np.load(p) for p in sorted((straight / "events_seen").glob(f"epoch{epoch:03d}_*"))])
        assert len(np.unique(seen)) == n_train and len(seen) <= n_train + 1, epoch
    assert json.loads((straight / "run.json").read_text())["world_size"] == 2

    job = _submit(slurm_cluster, shards, resumed, log_resumed)
    _cancel_at_rows(slurm_cluster, job, resumed, rows=4)      # after the checkpoint of step 3
    assert slurm_cluster.wait(job, 120) == {"": "CANCELLED"}
    assert not (resumed / "run.json").exists()                # cancelled before the end
    kept = sorted(p.name for p in (resumed / "checkpoints").iterdir() if (p / "trainer_state.json").is_file())
    assert kept and kept[-1] < "step_0000064", kept

    job = _submit(slurm_cluster, shards, resumed, log_resumed)
    assert slurm_cluster.wait(job, 300) == {"": "COMPLETED"}, log_resumed.read_text(errors="replace")[-3000:]
    assert f"resuming from {resumed / 'checkpoints'}" in log_resumed.read_text(errors="replace")
    names = [sorted(p.name for p in (f / "checkpoints").iterdir()) for f in (straight, resumed)]
    assert names[0] == names[1] == ["step_0000063", "step_0000064"]     # nothing partial left over
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log_rows(straight) == _log_rows(resumed)
    runs = [json.loads((folder / "run.json").read_text()) for folder in (straight, resumed)]
    assert runs[0]["val"] == runs[1]["val"] and runs[0]["steps"] == runs[1]["steps"] == 64
