"""Every model family on the same generated 13 TeV H->bb and QCD jets: the jet-image study on the CPU.

    python -m benchmarks.train_jets [--quick] [--work DIR] [--models a,b] [--threads N] --out FILE.json

Jets are generated (`python -m engine generate --process hbb` / `qcd`, seeded, 13 TeV, large-R
jets pT > 300 GeV) and sharded 70/15/15 into WORK (a rerun reuses what is complete). Each model
trains in its own process (`python -m engine.train`, `--threads` torch threads) on the same
training jets (the first half of the training split) with the same seed and batch size, then is
evaluated on the same test jets. Image models draw 40 px jet images on the fly (the `jet`
preset); the set and particle-cloud models read the constituents (the input kind follows from
the shards); gbt reads jet substructure (tau21, tau32, D2, ...). Records per model: hbb_auc,
rejection at eps_S = 0.5 and 0.3 (1/eps_B on the hbb-vs-QCD ROC), test_accuracy, train_seconds
and train_events_per_s (for gbt the fit; its feature_seconds is the time taken to compute the
training jets' features). Correctness first: gbt runs first and must separate the classes
(AUC > 0.6) before anything else is timed. The records file is rewritten after every model, so
an interrupted run keeps what it measured; a rerun reuses every finished training.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, print_table, record, write_results

SEEDS = {"hbb": 7, "qcd": 8}
PARTICLENET_LITE = ["model.options.blocks=[[7, [32, 32, 32]], [7, [64, 64, 64]]]", "model.options.fc_dim=128"]
# model -> training overrides on top of DEFAULTS: epochs sized so that the whole run fits in about
# 25 minutes on 2 busy CPU cores (one torch thread per run, half of the training split: 7,000 jets).
# particlenet is ParticleNet-Lite (k = 7, EdgeConv (32,32,32), (64,64,64), FC 128); particlenet and
# part read the 64 hardest constituents of each jet, set_transformer and part are scaled down.
MODELS = {
    "gbt": [],
    "ffn": ["train.epochs=12", "train.lr=1.0e-3"],
    "deepsets": ["train.epochs=12", "train.lr=1.0e-3"],
    "set_transformer": ["train.epochs=6", "train.lr=1.0e-3", "model.options.dim=32",
                        "model.options.layers=2", "model.options.ff_dim=64"],
    "particlenet": ["train.epochs=6", "train.lr=2.0e-3", *PARTICLENET_LITE, "model.options.max_particles=64"],
    "part": ["train.epochs=3", "train.lr=1.0e-3", "model.options.dim=32", "model.options.layers=3",
             "model.options.ff_dim=128", "model.options.pair_dims=[16, 16]", "model.options.max_particles=64"],
    "small_cnn": ["train.epochs=6", "train.lr=2.0e-3", "model.options.in_chans=1"],
    "cvn": ["train.epochs=6", "train.lr=1.0e-3"],
}
IMAGE_MODELS = {"small_cnn", "cvn"}
DEFAULTS = ["data.train_fraction=0.5", "train.batch_size=128", "train.optimizer=adamw", "train.weight_decay=1.0e-4",
            "train.warmup_steps=20", "train.seed=7", "data.signal=hbb", "train.log_every_steps=20",
            "train.eval_every_epochs=1000", "render.preset=jet", "render.size_px=40", "render.augment=false"]
QUICK = ["train.epochs=1", "train.max_steps=3"]


def engine(*args: str, threads: int | None = None) -> None:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    subprocess.run([sys.executable, "-m", "engine", *args], check=True, cwd=ROOT, env=env)


def make_shards(work: Path, jets: int, task_jets: int) -> Path:
    """hbb and qcd jets (seeded; complete parts of an earlier run are kept) sharded 70/15/15."""
    for process, seed in SEEDS.items():
        engine("generate", "--process", process, "--events", str(jets), "--seed", str(seed),
               "--task-events", str(task_jets), "--out", str(work / "parquet"), "--workers", "2", "--no-progress")
    shards = work / "shards"
    if not (shards / "manifest.json").is_file():
        engine("shard", "--input", str(work / "parquet"), "--out", str(shards), "--seed", "7")
    return shards


def train_and_evaluate(model: str, shards: Path, work: Path, quick: bool, threads: int) -> dict:
    out = work / "models" / model
    overrides = [*DEFAULTS, *MODELS[model], f"model.name={model}", f"data.shards={shards}", f"output_dir={out}"]
    engine("train", *overrides, *(QUICK if quick else []), threads=threads)
    engine("evaluate", "--checkpoint", str(out), "--shards", str(shards), "--out", str(out / "test"),
           "--signal", "hbb", threads=threads)
    return {"metrics": json.loads((out / "test" / "metrics.json").read_text()),
            "run": json.loads((out / "run.json").read_text()),
            "config": (out / "config.yaml").read_text()}


def records(model: str, result: dict, params: dict) -> list[dict]:
    m, run = result["metrics"], result["run"]
    trained = run.get("events") or round(run.get("images_seen", 0) / max(run.get("epochs") or 1, 1))
    params = {"model": model, **params, "train_events": trained,
              "test_events": m["events"], "epochs": run.get("epochs"), "overrides": " ".join(MODELS[model])}
    if model in IMAGE_MODELS:
        params["image_px"] = 40
    seconds = run.get("train_seconds") or 0.0
    rate = run.get("events_per_s") or (run.get("events", 0) / seconds if seconds else 0.0)
    out = [record("hbb_auc", m["roc_auc_one_vs_rest"]["hbb"], "AUC", **params)]
    for eps in ("0.5", "0.3"):
        value = m["background_rejection_at_signal_efficiency"][eps]
        bound = value is None                  # no background jet passes: the rejection exceeds their number
        out.append(record(f"rejection_at_eps_s_{eps}", m["background_events"] if bound else value, "1/eps_B",
                          **params, **({"lower_bound": True} if bound else {})))
    out += [record("test_accuracy", m["accuracy"], "fraction", **params),
            record("train_seconds", seconds, "s", **params),
            record("train_events_per_s", rate, "events/s", **params)]
    if "feature_seconds" in run:             # gbt: reading the training jets into substructure features
        out.append(record("feature_seconds", run["feature_seconds"], "s", **params))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="records file (JSON)")
    parser.add_argument("--work", default="runs/bench_jets", help="folder for jets, shards and models")
    parser.add_argument("--quick", action="store_true", help="300 jets per class, 3 steps per model")
    parser.add_argument("--jets", type=int, help="jets per class to generate (default 10000)")
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    args = parser.parse_args(argv)
    wanted = args.models.split(",") if args.models else list(MODELS)
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    jets = args.jets or (300 if args.quick else 10_000)
    work = Path(args.work).resolve()              # the subprocesses run in the repository root
    tic = time.perf_counter()
    shards = make_shards(work, jets, task_jets=min(jets, 2500))
    params = {"device": "cpu", "threads": args.threads, "jets_per_class_generated": jets, "seed": 7}
    out: list[dict] = []
    for model in sorted(wanted, key=lambda m: m != "gbt"):          # gbt first: the correctness check
        result = train_and_evaluate(model, shards, work, args.quick, args.threads)
        auc = result["metrics"]["roc_auc_one_vs_rest"]["hbb"]
        if model == "gbt" and not args.quick and auc < 0.6:
            raise SystemExit(f"correctness check failed: gbt hbb AUC {auc:.3f} on the test jets")
        out += records(model, result, params)
        write_results(args.out, out)
    print_table(out, drop=("device", "overrides", "jets_per_class_generated", "seed", "threads"))
    print(f"total {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
