"""A two-point sweep: grid expansion, tied overrides, training, evaluation, the summary table."""
import csv
import sys

import pytest

from engine.errors import InputError
from engine.sweep import load_sweep, points, run_sweep
from tests.events import synthetic_shards


def test_grid_and_tied_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("data: {shards: x}\n")
    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text("base: base.yaml\noutput_root: out\nfixed: {train.epochs: 2}\n"
                     "grid: {model.name: [a, b], train.optimizer: [adam, sgd]}\n"
                     "tied: {train.optimizer: {adam: {train.lr: 0.001}, sgd: {train.lr: 0.1}}}\n")
    cfg, base = load_sweep(sweep)
    grid = points(cfg)
    assert [p.name for p in grid] == ["a-adam", "a-sgd", "b-adam", "b-sgd"]
    assert grid[1].overrides == {"train.epochs": 2, "model.name": "a", "train.optimizer": "sgd",
                                 "train.lr": 0.1, "output_dir": "out/a-sgd"}
    sweep.write_text("base: missing.yaml\n")
    with pytest.raises(InputError, match="base config"):
        load_sweep(sweep)


def test_sweep_trains_and_collects_metrics(tmp_path):
    synthetic_shards(tmp_path, 100, seed=4, events_per_member=64)
    (tmp_path / "base.yaml").write_text(f"data: {{shards: {tmp_path / 'shards'}, signal: ttbar}}\n"
                                        "train: {epochs: 1, batch_size: 64}\n")
    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text(f"base: base.yaml\noutput_root: {tmp_path / 'runs'}\n"
                     "grid: {model.name: [deepsets, ffn]}\n")
    table = run_sweep(sweep, launcher=sys.executable)
    rows = list(csv.DictReader(table.open()))
    assert [r["run"] for r in rows] == ["deepsets", "ffn"]
    assert all(r["status"] == "ok" and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert (tmp_path / "runs" / "ffn" / "test" / "metrics.json").is_file()


def test_sweep_table_is_written_atomically(tmp_path, monkeypatch):
    """A sweep whose points are all evaluated already only rewrites sweep.csv, through a temporary."""
    import json

    import engine.sweep as sweep_module
    (tmp_path / "base.yaml").write_text("data: {shards: x}\n")
    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text(f"base: base.yaml\noutput_root: {tmp_path / 'runs'}\ngrid: {{model.name: [a, b]}}\n")
    for name in ("a", "b"):
        (tmp_path / "runs" / name / "test").mkdir(parents=True)
        (tmp_path / "runs" / name / "test" / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    seen = []
    real = sweep_module.atomic_path

    def spy(path):
        seen.append(path)
        return real(path)
    monkeypatch.setattr(sweep_module, "atomic_path", spy)
    table = run_sweep(sweep)
    assert seen == [table] and [r["accuracy"] for r in csv.DictReader(table.open())] == ["0.5", "0.5"]
    assert sorted(p.name for p in table.parent.iterdir()) == ["a", "b", "sweep.csv"]
