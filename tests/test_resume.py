"""Exact resume: a run interrupted anywhere and started again ends bit-identical to an uninterrupted
one (weights, validation metrics, log.csv but its timing columns), for every kind of model, in one
process and in two; a finished run started again changes nothing; checkpoints are complete or
invisible."""
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import engine.training.trainer as trainer
from engine.config import to_dict
from engine.errors import InputError
from engine.models import INPUT_KEYS
from engine.training.config import load_config
from tests.events import reset_accelerate, synthetic_shards

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "images_per_s")
# 210 training events in batches of 32: 7 batches (steps) per epoch, 14 in all; checkpoints at
# steps 3, 6, 9, 12 mid-epoch and 7, 14 at the ends of the epochs; log rows every 2 steps.
MODELS = {
    "set_transformer": ["model.name=set_transformer", "model.options={dim: 16, heads: 2, layers: 1, "
                        "ff_dim: 16, dropout: 0.3}"],
    "small_cnn": ["model.name=small_cnn", "model.options={widths: [4, 8], dropout: 0.3}",
                  "render.size_px=32", "render.augment=true"],
    "deepsets": ["model.name=deepsets", "model.options={phi_sizes: [16, 16], f_sizes: [16]}"],
    "ffn": ["model.name=ffn", "model.options={hidden: 32, depth: 2, dropout: 0.3}"],
}
COMMON = ["data.signal=ttbar", "train.batch_size=32", "train.epochs=2", "train.log_every_steps=2",
          "train.checkpoint_every_steps=3", "train.seed=5", "train.lr=0.003"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("resume_data"), 100, seed=2, events_per_member=32)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def straight(shards, tmp_path_factory):
    """The uninterrupted run of a model (made once per module)."""
    done = {}

    def get(model: str) -> Path:
        if model not in done:
            out = tmp_path_factory.mktemp(f"straight_{model}")
            trainer.train(config(shards, out, model))
            reset_accelerate()
            done[model] = out
        return done[model]
    return get


def config(shards, out, model, *extra):
    return load_config(None, [f"data.shards={shards}", f"output_dir={out}", *COMMON, *MODELS[model], *extra])


def log_rows(folder: Path) -> list[dict]:
    with (folder / "log.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def assert_same_run(expected: Path, got: Path) -> None:
    a, b = load_file(expected / "model.safetensors"), load_file(got / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    run_a, run_b = (json.loads((f / "run.json").read_text()) for f in (expected, got))
    assert run_a["val"] and run_a["val"] == run_b["val"]
    assert (run_a["steps"], run_a["epochs"], run_a["images_seen"]) == \
           (run_b["steps"], run_b["epochs"], run_b["images_seen"])
    assert log_rows(expected) == log_rows(got)


def interrupt_at_checkpoint(monkeypatch, step: int, mid_epoch: bool):
    """Make the run stop (KeyboardInterrupt) right after saving the checkpoint of `step`."""
    real = trainer.save_checkpoint

    def save_then_stop(accelerator, output_dir, state, cfg):
        folder = real(accelerator, output_dir, state, cfg)
        if state.step == step and (state.batch > 0) == mid_epoch:
            raise KeyboardInterrupt
        return folder
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_stop)


def interrupted_then_resumed(shards, out, model, monkeypatch, interrupt, *extra) -> Path:
    """Run with `interrupt` applied until it stops, then again to the end; returns `out`."""
    reset_accelerate()
    interrupt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config(shards, out, model, *extra))
    monkeypatch.undo()
    assert not (out / "run.json").exists()
    reset_accelerate()
    trainer.train(config(shards, out, model, *extra))
    return out


def at_checkpoint(step: int, mid_epoch: bool):
    return lambda monkeypatch: interrupt_at_checkpoint(monkeypatch, step, mid_epoch)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("step, mid_epoch", [(9, True), (7, False)], ids=["mid_epoch", "end_of_epoch"])
def test_interrupted_run_resumes_exactly(shards, straight, tmp_path, monkeypatch, model, step, mid_epoch):
    out = interrupted_then_resumed(shards, tmp_path, model, monkeypatch, at_checkpoint(step, mid_epoch))
    assert_same_run(straight(model), out)


def test_interrupted_mid_window_before_any_checkpoint(shards, straight, tmp_path, monkeypatch):
    """Killed after its first log row (step 2) and before its first checkpoint (step 3): the rerun
    starts again and log.csv ends without the killed run's rows."""
    real = trainer.Trainer._log_window

    def log_then_stop(self):
        result = real(self)
        if self.state.step == 2:
            raise KeyboardInterrupt
        return result
    out = interrupted_then_resumed(shards, tmp_path, "set_transformer", monkeypatch,
                                   lambda mp: mp.setattr(trainer.Trainer, "_log_window", log_then_stop))
    assert_same_run(straight("set_transformer"), out)


def test_resume_with_loader_workers(shards, tmp_path, monkeypatch):
    """Two DataLoader worker processes (persistent across epochs in the uninterrupted run, new in
    the resumed one): the same weights and log."""
    extra = ("loader.workers=2",)
    trainer.train(config(shards, tmp_path / "straight", "set_transformer", *extra))
    out = interrupted_then_resumed(shards, tmp_path / "stopped", "set_transformer", monkeypatch,
                                   at_checkpoint(9, True), *extra)
    assert_same_run(tmp_path / "straight", out)


def test_checkpoints_on_and_between_log_steps_resume_exactly(shards, tmp_path, monkeypatch):
    """Log every 3 steps, checkpoint every 2: the checkpoint of step 6 closes a log window, the one
    of step 10 holds a window of one batch (windows start again with each epoch of 7 steps)."""
    extra = ("train.log_every_steps=3", "train.checkpoint_every_steps=2")
    trainer.train(config(shards, tmp_path / "straight", "ffn", *extra))
    for step in (6, 10):
        out = interrupted_then_resumed(shards, tmp_path / f"stop{step}", "ffn", monkeypatch,
                                       at_checkpoint(step, True), *extra)
        assert_same_run(tmp_path / "straight", out)


@pytest.mark.parametrize("step, mid_epoch", [(6, True), (4, False)], ids=["mid_epoch", "end_of_epoch"])
def test_gradient_accumulation_resumes_exactly(shards, tmp_path, monkeypatch, step, mid_epoch):
    """Two batches per step, 7 batches per epoch: the last step of an epoch takes its last batch
    alone, so every epoch has 4 steps and no gradient is left pending at an epoch's checkpoint."""
    extra = ("train.grad_accum_steps=2",)
    trainer.train(config(shards, tmp_path / "straight", "ffn", *extra))
    assert json.loads((tmp_path / "straight" / "run.json").read_text())["steps"] == 8
    out = interrupted_then_resumed(shards, tmp_path / "stopped", "ffn", monkeypatch,
                                   at_checkpoint(step, mid_epoch), *extra)
    assert_same_run(tmp_path / "straight", out)


def test_interrupted_after_the_last_checkpoint_exports_the_kept_metrics(shards, straight, tmp_path,
                                                                        monkeypatch):
    """Stopped after the final checkpoint, before the model was written: the rerun trains no
    more and writes the model and run.json with the validation metrics of the checkpoint."""
    out = interrupted_then_resumed(shards, tmp_path, "deepsets", monkeypatch, at_checkpoint(14, False))
    assert_same_run(straight("deepsets"), out)


def test_finished_run_started_again_changes_nothing(shards, straight, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(straight("deepsets"), out)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    metrics = trainer.train(config(shards, out, "deepsets"))
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert metrics == json.loads((out / "run.json").read_text())["val"]


def test_finished_gbt_run_started_again_changes_nothing(shards, tmp_path):
    from engine.training.gbt import train_gbt
    cfg = load_config(None, [f"data.shards={shards}", f"output_dir={tmp_path}", "data.signal=ttbar",
                             "model.name=gbt", "model.options={max_iter: 5}"])
    metrics = train_gbt(cfg)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert train_gbt(cfg) == metrics
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()} == before


def test_checkpoints_hold_the_resolved_config(shards, straight):
    out = straight("deepsets")
    folders = sorted((out / "checkpoints").iterdir())
    assert [f.name for f in folders] == ["step_0000012", "step_0000014"]       # the last two kept
    expected = yaml.safe_dump(to_dict(config(shards, out, "deepsets")), sort_keys=False)
    for folder in folders:
        assert (folder / "config.yaml").read_text() == expected
        assert (folder / "trainer_state.json").is_file()


def test_incomplete_checkpoints_are_ignored_and_removed(shards, straight, tmp_path, monkeypatch):
    interrupt_at_checkpoint(monkeypatch, 9, mid_epoch=True)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config(shards, tmp_path, "deepsets"))
    monkeypatch.undo()
    reset_accelerate()
    checkpoints = tmp_path / "checkpoints"
    newest = checkpoints / "step_0000009"
    shutil.copytree(newest, checkpoints / ".step_0000012.partial")          # killed while saving
    shutil.copytree(newest, checkpoints / "step_0000011", ignore=shutil.ignore_patterns("trainer_*"))
    (checkpoints / "step_0000011" / "model.safetensors").write_bytes(b"cut short")
    trainer.train(config(shards, tmp_path, "deepsets"))
    assert_same_run(straight("deepsets"), tmp_path)
    assert sorted(f.name for f in checkpoints.iterdir()) == ["step_0000012", "step_0000014"]


@pytest.mark.parametrize("text, problem", [("{\"epoch\": 1, ", "unreadable trainer state"),
                                           ("[1, 2]", "not a trainer state"),
                                           ("{\"epoch\": 1, \"batch\": 0, \"step\": 7, \"lr\": 1}",
                                            "not a trainer state")])
def test_corrupt_trainer_state_is_an_error_naming_the_file(shards, tmp_path, monkeypatch, text, problem):
    interrupt_at_checkpoint(monkeypatch, 7, mid_epoch=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config(shards, tmp_path, "deepsets"))
    monkeypatch.undo()
    reset_accelerate()
    path = tmp_path / "checkpoints" / "step_0000007" / "trainer_state.json"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        trainer.train(config(shards, tmp_path, "deepsets"))
    assert err.value.source == str(path)
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("name, cut", [("model.safetensors", True), ("optimizer.bin", True),
                                       ("random_states_0.pkl", True), ("random_states_0.pkl", False)])
def test_corrupt_checkpoint_file_is_an_error_naming_the_folder(shards, tmp_path, monkeypatch, name, cut):
    """A file of a complete checkpoint cut short or missing (Accelerate alone would skip the RNG
    states silently and resume inexactly)."""
    interrupt_at_checkpoint(monkeypatch, 7, mid_epoch=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config(shards, tmp_path, "deepsets"))
    monkeypatch.undo()
    reset_accelerate()
    folder = tmp_path / "checkpoints" / "step_0000007"
    data = (folder / name).read_bytes()
    (folder / name).unlink()
    if cut:
        (folder / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match="cannot load the checkpoint") as err:
        trainer.train(config(shards, tmp_path, "deepsets"))
    assert err.value.source == str(folder)


def test_corrupt_trainer_state_on_the_command_line(shards, tmp_path, monkeypatch):
    interrupt_at_checkpoint(monkeypatch, 7, mid_epoch=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config(shards, tmp_path, "deepsets"))
    path = tmp_path / "checkpoints" / "step_0000007" / "trainer_state.json"
    path.write_bytes(b"\x00\xff")
    res = subprocess.run([sys.executable, "-m", "engine.train", *cli_args(shards, tmp_path, "deepsets")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"error: {path}: unreadable trainer state" in res.stderr


def test_train_rows_log_the_windows_accuracy(shards, tmp_path):
    """With SGD at lr 1e-30 the weights stay as they were, so each logged train accuracy is the
    model's accuracy on that window's batches, which the test recomputes from the loader."""
    cfg = config(shards, tmp_path, "deepsets", "train.optimizer=sgd", "train.lr=1e-30", "train.momentum=0",
                 "train.weight_decay=0", "train.epochs=1", "train.log_every_steps=3")
    trainer.train(cfg)
    model, _ = trainer.build_model(cfg, 3)
    from engine.training.weights import load_checkpoint
    load_checkpoint(model, tmp_path / "model.safetensors")
    loader, _ = trainer.make_loaders(cfg, 0, 1)
    right = []
    with torch.no_grad():
        for batch in loader:
            logits = model(*(batch[k] for k in INPUT_KEYS["objects"]))
            right.append(((logits.argmax(-1) == batch["labels"]).sum().item(), len(batch["labels"])))
    windows = [right[0:3], right[3:6], right[6:7]]
    expected = [f"{sum(r for r, _ in w) / sum(n for _, n in w):.6g}" for w in windows]
    rows = [r for r in log_rows(tmp_path) if r["split"] == "train"]
    assert [r["accuracy"] for r in rows] == expected
    assert [r["step"] for r in rows] == ["3", "6", "7"]


def cli_args(shards, out, model, *extra):
    return [f"data.shards={shards}", f"output_dir={out}", *COMMON, *MODELS[model], *extra]


def killed_at_rows(cmd, out: Path, targets: list[int], env) -> None:
    """Start `cmd` once per target and SIGKILL its process group as soon as its log.csv holds
    `target` rows (a point in the run's progress, not in wall time, which a busy machine stretches
    or a fast one compresses); then run it to the end."""
    for target in targets:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "log.csv").exists() and len(log_rows(out)) >= target:
                break
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "run.json").exists()      # killed before the end
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_killed_at_random_points_resumes_exactly(shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "engine.train"]
    longer = "train.epochs=8"             # 56 steps, 36 log rows: every kill lands well before the end
    subprocess.run([*cmd, *cli_args(shards, tmp_path / "straight", "set_transformer", longer)], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=300)
    targets = sorted(random.Random(11).sample(range(2, 20), 2))
    out = tmp_path / "killed"
    killed_at_rows([*cmd, *cli_args(shards, out, "set_transformer", longer)], out, targets, env)
    assert_same_run(tmp_path / "straight", out)


@pytest.mark.slow
def test_two_processes_killed_and_resumed_match_uninterrupted(shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}   # gloo on the CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "engine.train"]
    longer = "train.epochs=8"             # 4 steps per epoch and process, 32 in all
    subprocess.run([*cmd, *cli_args(shards, tmp_path / "straight", "ffn", longer)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=300)
    out = tmp_path / "killed"
    killed_at_rows([*cmd, *cli_args(shards, out, "ffn", longer)], out, [6], env)
    assert_same_run(tmp_path / "straight", out)
