"""`python -m engine demo`: the main job end to end on a built-in default, on CPU or GPU.

Each step is one of the engine's own commands, printed before it runs, so the demo doubles as a
worked example: generate ttbar / W+jets / Drell-Yan with Pythia 8, inspect, shard, draw a contact
sheet, train a set transformer, a small CNN on event images drawn on the fly, and the
gradient-boosted-tree baseline, evaluate all three on the same test events, and print a table.

Re-running into the same `--out` resumes: `--out/demo.json` records the demo's settings, every
step whose output is complete (and came from those settings) is skipped, an interrupted training
run resumes from its last checkpoint, and inspect / evaluate run again. A used `--out` with other
settings, no demo.json, or outputs out of order is refused before anything is touched.
"""
from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError
from engine.files import atomic_path

CLASSES = ("ttbar", "wjets", "dy")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = {"set_transformer": "ci-tiny.yaml", "small_cnn": "demo-cnn.yaml", "gbt": None}
SETTINGS = "demo.json"
SHEET_PER_CLASS = 6


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes "
                        "(a used one resumes if it holds a demo with the same settings)")
    parser.add_argument("--events", type=int, default=3400, help="accepted events per class")
    parser.add_argument("--workers", type=int, default=2, help="generator processes per class")
    parser.add_argument("--seed", type=int, default=1, help="seed of generation, sharding and training")
    parser.add_argument("--pileup", type=float, default=0.0, metavar="MU",
                        help="overlay Poisson(MU) pileup interactions on the generated events (default 0)")


@dataclass
class Step:
    """One command of the demo; `done` is None for steps that always run (inspect, evaluate)."""

    argv: list[str]
    python: bool = False
    """True: `python ARGV` in a fresh process (training); False: `python -m engine ARGV`."""
    done: bool | None = None


def data_steps(out: Path, events: int, workers: int, seed: int, pileup: float = 0.0) -> dict[str, list]:
    """Generate (one argument list per class), inspect, shard and draw, as `python -m engine`
    argument lists by step name."""
    parquet = out / "parquet"
    with_pileup = ["--pileup", repr(float(pileup))] if pileup else []
    return {
        "generate": [["generate", "--process", name, "--events", str(events), "--out", str(parquet),
                      "--seed", str(seed + i), "--workers", str(workers),
                      "--task-events", str(-(-events // workers)), *with_pileup]
                     for i, name in enumerate(CLASSES)],
        "inspect_parquet": ["inspect", str(parquet)],
        "shard": ["shard", "--input", str(parquet), "--out", str(out / "shards"), "--seed", str(seed)],
        "inspect_shards": ["inspect", str(out / "shards")],
        "render": ["render", "--input", str(out / "shards"), "--split", "train", "--n", str(SHEET_PER_CLASS),
                   "--per-class", "--preset", "madrazo2017", "--format", "png", "--out", str(out / "images")],
    }


def train_command(model: str, out: Path, seed: int) -> list[str]:
    """`python -m engine.train` for one of the demo's models (a fresh process per model)."""
    shards, run_dir = out / "shards", out / "models" / model
    config = MODELS[model]
    cmd = ["-m", "engine.train"] + (["--config", str(CONFIGS / config)] if config else ["model.name=gbt"])
    return cmd + [f"data.shards={shards}", f"output_dir={run_dir}", "data.signal=ttbar", f"train.seed={seed}"]


def evaluate_command(model: str, out: Path) -> list[str]:
    return ["evaluate", "--checkpoint", str(out / "models" / model), "--shards", str(out / "shards"),
            "--out", str(out / "eval" / model), "--signal", "ttbar"]


def read_settings(out: Path, settings: dict) -> bool:
    """Whether `out` is new (False) or a demo with the same settings to resume (True); InputError
    for anything else, before anything is written."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    try:
        used = json.loads((out / SETTINGS).read_text())
    except FileNotFoundError:
        raise InputError(out, f"is not empty and holds no {SETTINGS} (not a folder this demo made): "
                              "choose another --out") from None
    except (OSError, ValueError) as exc:
        raise InputError(out / SETTINGS, f"unreadable ({exc.__class__.__name__}): choose another --out") from None
    if used != settings:
        flags = " ".join(f"--{k} {v}" for k, v in used.items()) if isinstance(used, dict) else str(used)
        raise InputError(out, f"holds a demo run with other settings ({flags}): pass those to resume it, "
                              "or choose another --out")
    return True


def _generated(out: Path, index: int, settings: dict) -> bool:
    from engine.data.canonical.parts import read_document
    name, folder = CLASSES[index], out / "parquet" / CLASSES[index]
    doc = read_document(folder) if folder.is_dir() else None
    if doc is None or not doc["complete"]:
        return False                      # not started, or interrupted: generate resumes it
    if (doc.get("process"), doc["settings"].get("seed"), doc.get("events")) != (
            name, settings["seed"] + index, settings["events"]):
        raise InputError(folder, "was not generated with this demo's settings: choose another --out")
    return True


def _sharded(out: Path, settings: dict) -> bool:
    from engine.data.shards import MANIFEST, load_manifest
    if not (out / "shards" / MANIFEST).is_file():
        return False
    manifest = load_manifest(out / "shards")
    classes = {Path(item.get("path", "")).parent.name for item in manifest.get("inputs", [])}
    if manifest["options"]["seed"] != settings["seed"] or classes != set(CLASSES):
        raise InputError(out / "shards", "were not made by this demo's settings: choose another --out")
    return True


def _trained(out: Path, model: str, settings: dict) -> bool:
    from engine.training.config import load_config
    folder = out / "models" / model
    if not (folder / "run.json").is_file():
        return False                      # not started, or interrupted: engine.train resumes it
    cfg = load_config(folder / "config.yaml")
    if Path(cfg.data.shards) != out / "shards" or cfg.train.seed != settings["seed"]:
        raise InputError(folder, "was not trained by this demo's settings: choose another --out")
    return True


def plan(out: Path, settings: dict) -> list[Step]:
    """Every step of the demo, each marked done where its complete output is already in `out`.
    InputError where an output is there but one it was made from is not (changed by hand)."""
    data = data_steps(out, settings["events"], settings["workers"], settings["seed"], settings.get("pileup", 0.0))
    gen = [Step(argv, done=_generated(out, i, settings)) for i, argv in enumerate(data["generate"])]
    shard = Step(data["shard"], done=_sharded(out, settings))
    render = Step(data["render"], done=(out / "images" / "contact_sheet.png").is_file())
    trains = [Step(train_command(m, out, settings["seed"]), python=True, done=_trained(out, m, settings))
              for m in MODELS]
    _check_order(out, [(shard, gen), (render, [shard]), *((t, [shard]) for t in trains)])
    return [*gen, Step(data["inspect_parquet"]), shard, Step(data["inspect_shards"]), render, *trains,
            *(Step(evaluate_command(m, out)) for m in MODELS)]


def _check_order(out: Path, needs: list[tuple[Step, list[Step]]]) -> None:
    for step, inputs in needs:
        missing = [s for s in inputs if not s.done]
        if step.done and missing:
            raise InputError(out, f"`{shlex.join(step.argv)}` is complete but its input from "
                                  f"`{shlex.join(missing[0].argv)}` is not: the folder was changed by hand; "
                                  "choose another --out")


def _run(step: Step) -> None:
    if step.python:
        print(f"\n$ python {shlex.join(step.argv)}", flush=True)
        failed = subprocess.run([sys.executable, *step.argv]).returncode
    else:
        from engine.__main__ import main
        print(f"\n$ python -m engine {shlex.join(step.argv)}", flush=True)
        failed = main(step.argv)
    if failed:
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
    if not (math.isfinite(args.pileup) and args.pileup >= 0):
        raise InputError("--pileup", f"must be a mean number of interactions >= 0, got {args.pileup:g}")
    out = Path(args.out)
    settings = {"events": args.events, "workers": args.workers, "seed": args.seed}
    if args.pileup:
        settings["pileup"] = args.pileup          # a demo without pileup keeps the settings it always had
    resuming = read_settings(out, settings)
    steps = plan(out, settings)               # every check, before anything is written
    if resuming:
        print(f"resuming the demo in {out}: {sum(bool(s.done) for s in steps)} steps already complete")
    else:
        with atomic_path(out / SETTINGS) as tmp:
            tmp.write_text(json.dumps(settings, indent=1) + "\n")
    start = time.perf_counter()
    for step in steps:
        if step.done:
            print(f"\n(done) python {'' if step.python else '-m engine '}{shlex.join(step.argv)}")
        else:
            _run(step)
    table = results_table(out)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(table + "\n")
    print(f"\n{table}\n\ndemo finished in {time.perf_counter() - start:.0f} s. Results in {out}/: "
          f"eval/*/metrics.json and plots, models/, images/contact_sheet.png, results.md")
    return 0
