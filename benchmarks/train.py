"""Every model on the same generated 7 TeV ttbar / W+jets / Drell-Yan test events.

    python -m benchmarks.train [--quick] [--shards DIR] [--models a,b] --out FILE.json

Without --shards, events are generated first (`python -m engine generate`, madrazo2017
selection) and sharded 70/15/15. Each model trains in its own process with the same seed and
batch size, then is evaluated on the test split. Records per model: test_accuracy,
ttbar_vs_background_efficiency (50/50, as the 2017 study), ttbar_auc, train_seconds and
train_events_per_s (images/s for image models), with params naming the model and device.
Correctness first: the GBT baseline must beat chance on the test split before anything is timed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("ttbar", "wjets", "dy")
# model -> training overrides (on top of the defaults below); image models draw 64 px images on
# the CPU (224 px ResNet50 only where a GPU is present).
MODELS = {
    "gbt": [],
    "ffn": ["train.epochs=10", "train.lr=1.0e-3"],
    "deepsets": ["train.epochs=10", "train.lr=2.0e-3"],
    "set_transformer": ["train.epochs=10", "train.lr=2.0e-3"],
    "small_cnn": ["train.epochs=6", "render.size_px=64", "train.lr=2.0e-3"],
    "resnet50": ["train.epochs=6", "render.size_px=224", "render.dtype=bfloat16",
                 "train.mixed_precision=bf16", "train.lr=3.0e-4"],
}
GPU_ONLY = {"resnet50"}
DEFAULTS = ["train.batch_size=128", "train.optimizer=adamw", "train.weight_decay=1.0e-4",
            "train.warmup_steps=20", "train.seed=7", "data.signal=ttbar", "train.log_every_steps=20"]


def engine(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "engine", *args], check=True, cwd=ROOT)


def make_shards(work: Path, events: int) -> Path:
    for i, name in enumerate(CLASSES):
        engine("generate", "--process", name, "--events", str(events), "--out", str(work / "parquet"),
               "--seed", str(100 + i), "--workers", "2", "--no-progress")
    engine("shard", "--input", str(work / "parquet"), "--out", str(work / "shards"), "--seed", "7")
    return work / "shards"


def train_and_evaluate(model: str, shards: Path, work: Path, quick: bool) -> dict:
    out = work / "models" / model
    overrides = [*DEFAULTS, *MODELS[model], f"model.name={model}", f"data.shards={shards}",
                 f"output_dir={out}"]
    if quick:
        overrides.append("train.epochs=2")
    subprocess.run([sys.executable, "-m", "engine.train", *overrides], check=True, cwd=ROOT)
    engine("evaluate", "--checkpoint", str(out), "--shards", str(shards), "--out", str(out / "test"),
           "--signal", "ttbar")
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    return {"metrics": metrics, "run": run}


def records(model: str, result: dict, device: str, events_per_class: int) -> list[dict]:
    m, run = result["metrics"], result["run"]
    params = {"model": model, "device": device, "test_events": m["events"],
              "events_per_class_generated": events_per_class}
    seconds = run.get("train_seconds") or 0.0
    rate = run.get("events_per_s") or (run.get("events", 0) / seconds if seconds else 0.0)
    return [
        {"name": "test_accuracy", "value": m["accuracy"], "unit": "fraction", "params": params},
        {"name": "ttbar_vs_background_efficiency", "value": m["signal_vs_background_efficiency"],
         "unit": "fraction", "params": params},
        {"name": "ttbar_auc", "value": m["roc_auc_one_vs_rest"]["ttbar"], "unit": "AUC", "params": params},
        {"name": "train_seconds", "value": seconds, "unit": "s", "params": params},
        {"name": "train_events_per_s", "value": rate, "unit": "events/s", "params": params},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="few events, 2 epochs, CPU models only")
    parser.add_argument("--shards", help="an existing shard folder (skips generation)")
    parser.add_argument("--events", type=int, help="accepted events per class to generate")
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--work", help="folder for events and models (default: a temporary one)")
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    events = args.events or (300 if args.quick else 5000)
    wanted = args.models.split(",") if args.models else list(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        shards = Path(args.shards) if args.shards else make_shards(work, events)
        out, table = [], []
        for model in wanted:
            if model in GPU_ONLY and not torch.cuda.is_available():
                table.append(f"{model:<16} skipped: needs a GPU (224 px ResNet50 on 2 CPU cores takes hours)")
                continue
            result = train_and_evaluate(model, shards, work, args.quick)
            if model == "gbt" and result["metrics"]["accuracy"] < 0.5:
                raise SystemExit(f"correctness check failed: gbt accuracy {result['metrics']['accuracy']:.3f}")
            recs = records(model, result, device, events)
            out += recs
            v = {r["name"]: r["value"] for r in recs}
            table.append(f"{model:<16} acc {v['test_accuracy']:.4f}  "
                         f"ttbar/bkg {v['ttbar_vs_background_efficiency']:.4f}  AUC {v['ttbar_auc']:.4f}  "
                         f"{v['train_seconds']:7.1f} s  {v['train_events_per_s']:9.0f} ev/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
