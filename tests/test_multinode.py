"""Multi-node training as the README gives it: `accelerate launch --num_machines 2 --machine_rank R
--main_process_ip ... --main_process_port ...`, two "machines" (two launchers) on loopback over
shards on shared storage (one folder). It trains exactly as one machine with the same two processes:
bit-identical weights, and every training event seen once."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.events import synthetic_shards

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["-m", "engine.train", "model.name=deepsets", "train.epochs=1", "train.batch_size=32",
         "train.record_events=true", "data.signal=ttbar"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(machines: int, rank: int, port: int, shards: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
            *TRAIN, f"data.shards={shards}", f"output_dir={out}"]


@pytest.mark.slow
def test_two_machines_train_as_one_machine_with_two_processes(tmp_path):
    shards = synthetic_shards(tmp_path / "shards", 200, seed=3, events_per_member=64)
    subprocess.run(_launch(1, 0, _port(), shards, tmp_path / "one"), check=True, cwd=ROOT, env=ENV,
                   capture_output=True, timeout=300)
    port = _port()
    nodes = [subprocess.Popen(_launch(2, rank, port, shards, tmp_path / "two"), cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err.decode()[-2000:]
    one, two = (load_file(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    seen = [np.load(p) for p in sorted((tmp_path / "two" / "events_seen").glob("epoch000_rank*.npy"))]
    n_train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["events"]
    assert len(seen) == 2 and len(np.unique(np.concatenate(seen))) == n_train
    val = [json.loads((tmp_path / run / "run.json").read_text())["val"] for run in ("one", "two")]
    assert val[0] == val[1]
