"""Real (small) training runs on CPU: learning, 2-process launch, freezing, config errors (resume:
tests/test_resume.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.errors import InputError
from engine.training.config import load_config
from engine.training.logs import read_log
from tests.events import reset_accelerate, synthetic_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("train_data"), 300, seed=0, events_per_member=128)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def config(shards, out, *overrides):
    return load_config(None, [f"data.shards={shards}", f"output_dir={out}", "data.signal=ttbar",
                              "train.batch_size=64", "train.log_every_steps=3", *overrides])


def run_train(cfg):
    from engine.train import train
    return train(cfg)


def test_set_model_learns(shards, tmp_path):
    metrics = run_train(config(shards, tmp_path, "model.name=set_transformer", "train.epochs=4",
                               "train.lr=0.003"))
    rows = read_log(tmp_path / "log.csv")
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert metrics["accuracy"] > 0.6          # chance is 1/3
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["class_names"] == ["dy", "ttbar", "wjets"] and run["input_kind"] == "objects"
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.yaml").is_file()


def test_image_model_trains_on_rendered_events(shards, tmp_path):
    run_train(config(shards, tmp_path, "model.name=small_cnn", "render.size_px=32", "train.epochs=2"))
    rows = read_log(tmp_path / "log.csv")
    assert [r for r in rows if r["split"] == "val"] and np.isfinite([r["loss"] for r in rows]).all()
    assert json.loads((tmp_path / "run.json").read_text())["input_kind"] == "image"


def test_frozen_layers_stay_unchanged(shards, tmp_path):
    run_train(config(shards, tmp_path / "base", "model.name=deepsets", "train.epochs=1"))
    reset_accelerate()
    run_train(config(shards, tmp_path / "tuned", "model.name=deepsets", "train.epochs=1",
                     f"model.init_weights={tmp_path / 'base' / 'model.safetensors'}",
                     "model.unfreeze_fraction=0", "data.train_fraction=0.5"))
    base = load_file(tmp_path / "base" / "model.safetensors")
    tuned = load_file(tmp_path / "tuned" / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith("head.") for k in changed)


def test_train_fraction_is_a_fixed_subset_of_events(shards, tmp_path):
    run_train(config(shards, tmp_path, "model.name=deepsets", "train.epochs=2", "data.train_fraction=0.1",
                     "train.record_events=true"))
    n_train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["events"]
    k = round(0.1 * n_train)
    epochs = [np.load(tmp_path / "events_seen" / f"epoch{e:03d}_rank000.npy") for e in (0, 1)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(k))         # the same k events, each once
    assert not np.array_equal(epochs[0], epochs[1])             # in a new order each epoch


def test_two_processes_see_every_training_event_once(shards, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "engine.train", f"data.shards={shards}", f"output_dir={out}", "model.name=deepsets",
           "train.epochs=1", "train.batch_size=32", "train.record_events=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}   # gloo on the CPU
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, timeout=300)
    seen = [np.load(p) for p in sorted((out / "events_seen").glob("epoch000_rank*.npy"))]
    assert len(seen) == 2 and len(seen[0]) == len(seen[1])      # equal batch counts per rank
    manifest = json.loads((shards / "manifest.json").read_text())
    n_train = manifest["splits"]["train"]["events"]
    everything = np.concatenate(seen)
    unique = np.unique(everything)
    assert len(unique) == n_train and unique.min() == 0 and unique.max() == n_train - 1
    assert len(everything) - n_train <= 1    # at most the documented one-event padding
    val = json.loads((out / "run.json").read_text())["val"]
    assert val["events"] == manifest["splits"]["val"]["events"]   # each validation event counted once


def test_nan_loss_stops_with_a_clear_message(shards, tmp_path):
    with pytest.raises(InputError, match="loss is (nan|inf)"):
        run_train(config(shards, tmp_path, "model.name=ffn", "train.optimizer=sgd", "train.lr=1e30",
                         "train.log_every_steps=1", "train.epochs=1"))


@pytest.mark.parametrize("text, message", [
    ("train:\n  epoch: 3\n", "train.epoch: unknown key"),
    ("train:\n  epochs: three\n", "train.epochs: expected int"),
    ("model:\n  name: resnet51\n", "model.name"),
])
def test_config_errors_fail_before_work(shards, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\ndata:\n  shards: {shards}\n" + text)
    res = subprocess.run([sys.executable, "-m", "engine.train", "--config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_missing_shards_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "engine.train", f"data.shards={tmp_path / 'nope'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no such shard folder" in res.stderr
