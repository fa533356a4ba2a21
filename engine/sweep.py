"""Grids of training runs: `python -m engine sweep configs/NAME.sweep.yaml`.

A sweep file names a base training config, fixed overrides, a grid (every combination is one run)
and tied overrides (values that follow another key, e.g. the learning rate of each optimizer):

    base: durham2020.yaml            # relative to the sweep file
    output_root: runs/durham2020
    fixed: {train.epochs: 50}
    grid:  {model.name: [vgg16, resnet50], train.optimizer: [adam, rmsprop]}
    tied:  {train.optimizer: {adam: {train.lr: 1.0e-3}, rmsprop: {train.lr: 1.0e-4}}}

Each run trains in its own process (`python -m engine.train`, or the `--launcher` given, e.g.
"accelerate launch"), then is evaluated on the test split; sweep.csv collects the metrics.
A run whose output folder already holds metrics is not run again. sweep.csv has per run the
accuracy, the signal-vs-background efficiency, the signal's AUC, the background rejection at
signal efficiency 0.5 and 0.3, and the training time.
"""
from __future__ import annotations

import csv
import itertools
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.config import from_dict, load_yaml
from engine.errors import InputError
from engine.files import atomic_path


@dataclass
class SweepConfig:
    base: str = ""
    output_root: str = "runs/sweep"
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    tied: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.base:
            raise ValueError("base must name a training config")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{key} must be a non-empty list")


@dataclass
class Point:
    name: str
    overrides: dict


def load_sweep(path: str | Path) -> tuple[SweepConfig, Path]:
    cfg = from_dict(SweepConfig, load_yaml(path), "sweep")
    base = Path(path).parent / cfg.base
    if not base.is_file():
        raise InputError(path, f"base config {base} not found")
    return cfg, base


def points(cfg: SweepConfig) -> list[Point]:
    """Every grid combination with its fixed and tied overrides, named by its values."""
    keys = list(cfg.grid)
    out = []
    for values in itertools.product(*(cfg.grid[k] for k in keys)):
        chosen = dict(zip(keys, values))
        overrides = {**cfg.fixed, **chosen}
        for key, table in cfg.tied.items():
            overrides.update(table.get(str(overrides.get(key)), {}))
        name = "-".join(_slug(v) for v in values) or "run"
        overrides["output_dir"] = str(Path(cfg.output_root) / name)
        out.append(Point(name, overrides))
    return out


def _slug(value) -> str:
    text = "none" if value is None else Path(str(value)).parent.name if "/" in str(value) else str(value)
    return text.replace(" ", "")


def run_point(point: Point, base: Path, shards_split: str, launcher: str) -> dict:
    """Train (unless done) and evaluate one point; returns its metrics."""
    out = Path(point.overrides["output_dir"])
    metrics_path = out / "test" / "metrics.json"
    if not metrics_path.is_file():
        args = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in point.overrides.items()]
        cmd = shlex.split(launcher) + ["-m", "engine.train", "--config", str(base), *args]
        print("$ " + shlex.join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            return {"status": "failed"}
        shards = yaml.safe_load((out / "config.yaml").read_text())["data"]["shards"]
        from engine.evaluate import evaluate
        evaluate(out, shards, out / "test", split=shards_split)
    return json.loads(metrics_path.read_text())


def signal_figures(metrics: dict) -> dict:
    """The signal class's one-vs-rest AUC and background rejection 1/eps_B at eps_S = 0.5 and 0.3."""
    signal = metrics.get("signal")
    rejection = metrics.get("background_rejection_at_signal_efficiency") or {}
    return {"signal_auc": (metrics.get("roc_auc_one_vs_rest") or {}).get(signal),
            "rejection_at_0.5": rejection.get("0.5"), "rejection_at_0.3": rejection.get("0.3")}


def run_sweep(path: str | Path, launcher: str = sys.executable, dry_run: bool = False) -> Path:
    cfg, base = load_sweep(path)
    grid = points(cfg)
    if dry_run:
        for p in grid:
            print(p.name, p.overrides)
        return Path(cfg.output_root)
    rows = []
    for p in grid:
        m = run_point(p, base, "test", launcher)
        rows.append({"run": p.name, **{k: v for k, v in p.overrides.items() if k != "output_dir"},
                     "accuracy": m.get("accuracy"), "signal_vs_background": m.get("signal_vs_background_efficiency"),
                     **signal_figures(m), "train_seconds": m.get("train_seconds"), "status": m.get("status", "ok")})
    table = Path(cfg.output_root) / "sweep.csv"
    with atomic_path(table) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return table
