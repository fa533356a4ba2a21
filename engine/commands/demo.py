"""`python -m engine demo`: the main job end to end on a built-in default, on CPU or GPU.

Each step is one of the engine's own commands, printed before it runs, so the demo doubles as a
worked example: generate ttbar / W+jets / Drell-Yan with Pythia 8, inspect, shard, draw a contact
sheet, train a set transformer, a small CNN on event images drawn on the fly, and the
gradient-boosted-tree baseline, evaluate all three on the same test events, and print a table.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import InputError

CLASSES = ("ttbar", "wjets", "dy")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = {"set_transformer": "ci-tiny.yaml", "small_cnn": "demo-cnn.yaml", "gbt": None}


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    parser.add_argument("--events", type=int, default=3400, help="accepted events per class")
    parser.add_argument("--workers", type=int, default=2, help="generator processes per class")
    parser.add_argument("--seed", type=int, default=1)


def data_steps(out: Path, events: int, workers: int, seed: int) -> list[list[str]]:
    """Generate, inspect, shard and draw, as `python -m engine` argument lists."""
    parquet = out / "parquet"
    plan = [["generate", "--process", name, "--events", str(events), "--out", str(parquet),
             "--seed", str(seed + i), "--workers", str(workers)] for i, name in enumerate(CLASSES)]
    return plan + [
        ["inspect", str(parquet)],
        ["shard", "--input", str(parquet), "--out", str(out / "shards"), "--seed", str(seed)],
        ["inspect", str(out / "shards")],
        ["render", "--input", str(parquet / "ttbar.parquet"), "--n", "16", "--preset", "madrazo2017",
         "--format", "png", "--out", str(out / "images")],
    ]


def train_command(model: str, out: Path, seed: int) -> list[str]:
    """`python -m engine.train` for one of the demo's models (a fresh process per model)."""
    shards, run_dir = out / "shards", out / "models" / model
    config = MODELS[model]
    cmd = ["-m", "engine.train"] + (["--config", str(CONFIGS / config)] if config else ["model.name=gbt"])
    return cmd + [f"data.shards={shards}", f"output_dir={run_dir}", "data.signal=ttbar", f"train.seed={seed}"]


def _run_engine(argv: list[str]) -> None:
    from engine.__main__ import main
    print(f"\n$ python -m engine {shlex.join(argv)}", flush=True)
    if main(argv):
        raise SystemExit(2)


def _run_python(argv: list[str]) -> None:
    print(f"\n$ python {shlex.join(argv)}", flush=True)
    if subprocess.run([sys.executable, *argv]).returncode:
        raise SystemExit(2)


def results_table(out: Path) -> str:
    rows = ["| model | test accuracy | ttbar vs rest (50/50) | ttbar AUC | training s |", "|---|---|---|---|---|"]
    for model in MODELS:
        m = json.loads((out / "eval" / model / "metrics.json").read_text())
        rows.append(f"| {model} | {m['accuracy']:.4f} | {m['signal_vs_background_efficiency']:.4f} | "
                    f"{m['roc_auc_one_vs_rest']['ttbar']:.4f} | {m['train_seconds'] or 0:.0f} |")
    return "\n".join(rows)


def run(args) -> int:
    if args.events <= 0 or args.workers <= 0:
        raise InputError("--events/--workers", "must be positive")
    out = Path(args.out)
    start = time.perf_counter()
    for argv in data_steps(out, args.events, args.workers, args.seed):
        _run_engine(argv)
    for model in MODELS:
        _run_python(train_command(model, out, args.seed))
    for model in MODELS:
        _run_engine(["evaluate", "--checkpoint", str(out / "models" / model), "--shards", str(out / "shards"),
                     "--out", str(out / "eval" / model), "--signal", "ttbar"])
    table = results_table(out)
    (out / "results.md").write_text(table + "\n")
    print(f"\n{table}\n\ndemo finished in {time.perf_counter() - start:.0f} s. Results in {out}/: "
          f"eval/*/metrics.json and plots, models/, images/contact_sheet.png, results.md")
    return 0
